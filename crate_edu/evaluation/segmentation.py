"""Emergent segmentation: attention maps, mass-threshold masks, IoU scores, PCA and normalised-cut
foregrounds, computed from a model's intermediates (arXiv 2308.16271; DINO's attention maps).

Everything here returns tensors; the pictures are drawn by :mod:`crate_edu.plotting.segmentation`.
Shapes: B images, h heads, L layers, a patch grid of gh × gw = N patches, images of H × W pixels.

The pipeline, for one model and a batch of images::

    maps  = cls_attention_maps(model, x)          # (B, h, gh, gw)  [CLS] -> patch attention, layer L-1
    keep  = mass_threshold_masks(maps, 0.6)       # (B, h, gh, gw)  smallest set holding 60 % of the mass
    ious  = head_ious(maps, gt_masks)             # (B, h)          IoU of each head's mask, per image
    score = segmentation_score(ious, labels)      # best head, per-class best head (mIoU), oracle
    feats = head_projections(model, x)            # (B, N, h·p)     U_k^T LN(Z) of every patch
    pca   = pca_maps(feats, grid)                 # first component thresholded, top 3 as RGB
    cut   = ncut_foreground(feats, grid)          # second eigenvector of the patch affinity

Works for every classifier with ``forward_intermediates`` (CRATE, CRATE-α, the ViT baseline, whose
``proj`` are its keys) and for CRATE-MAE (its encoder, run with no patch masked).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crate_edu.evaluation.batches import iter_batches
from crate_edu.models import LayerTrace

__all__ = [
    "patch_grid",
    "penultimate_layer",
    "layer_traces",
    "cls_attention_maps",
    "head_projections",
    "upsample_maps",
    "mass_threshold_masks",
    "masks_to_patches",
    "iou",
    "head_ious",
    "mass_on_mask",
    "mass_on_mask_with_control",
    "SegmentationScore",
    "segmentation_score",
    "fixed_mask_baseline",
    "PCAResult",
    "pca",
    "PCAMaps",
    "pca_maps",
    "border_mask",
    "NCutResult",
    "ncut_foreground",
]


# ---------------------------------------------------------------------------------------------
# Reading the model
# ---------------------------------------------------------------------------------------------


def _config(model: nn.Module):
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "image_size") or not hasattr(cfg, "patch_size"):
        raise TypeError(
            f"{type(model).__name__} has no config with image_size and patch_size; pass a crate_edu model "
            "(crate_edu.create_model(...), crate_edu.load_official(...) or a tutorial checkpoint)"
        )
    return cfg


def patch_grid(model: nn.Module) -> tuple[int, int]:
    """The patch grid (gh, gw) of a crate_edu model: image size // patch size on each side."""
    cfg = _config(model)
    ih, iw = (cfg.image_size, cfg.image_size) if isinstance(cfg.image_size, int) else cfg.image_size
    ph, pw = (cfg.patch_size, cfg.patch_size) if isinstance(cfg.patch_size, int) else cfg.patch_size
    return ih // ph, iw // pw


def _depth(model: nn.Module) -> int:
    return int(_config(model).depth)


def penultimate_layer(model: nn.Module) -> int:
    """Index (0-based) of the second-to-last layer, the default of every function here (L - 2).

    The CRATE segmentation paper and DINO read their maps from the last block's attention; here
    "layer ℓ" means the attention computed *inside* layer ℓ, and the default is the penultimate
    layer, as the tutorial's issue asks (for a 4-layer model: index 2, the third layer).
    """
    return max(_depth(model) - 2, 0)


def _check_layer(model: nn.Module, layer: int | None) -> int:
    depth = _depth(model)
    if layer is None:
        return penultimate_layer(model)
    if not isinstance(layer, int) or not -depth <= layer < depth:
        raise ValueError(
            f"layer must be an int in [{-depth}, {depth - 1}] for this {depth}-layer model, got {layer!r}"
        )
    return layer % depth


@torch.no_grad()
def layer_traces(model: nn.Module, images: Tensor) -> list[LayerTrace]:
    """Run ``model`` on ``images`` (B, C, H, W) and return one :class:`LayerTrace` per layer.

    Classifiers (CRATE, CRATE-α, ViT) return their ``forward_intermediates`` traces. CRATE-MAE is
    adapted: its encoder is run with ``mask_ratio=0`` (every patch visible) and its encoder traces
    are returned. The model is used as it is (call ``model.eval()`` first for deterministic maps).
    """
    if not hasattr(model, "forward_intermediates"):
        raise TypeError(
            f"{type(model).__name__} has no forward_intermediates; use a crate_edu model (CRATE, CRATE-α, "
            "ViT or CRATE-MAE)"
        )
    if hasattr(model, "forward_encoder"):  # CRATE-MAE: encoder traces, nothing masked
        _, traces = model.forward_intermediates(images, mask_ratio=0.0)
        return list(traces["encoder"])
    _, traces = model.forward_intermediates(images)
    return list(traces)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def cls_attention_maps(
    model: nn.Module,
    images: Tensor,
    layer: int | None = None,
    *,
    all_layers: bool = False,
    batch_size: int = 256,
) -> Tensor:
    """[CLS] → patch attention of every head, on the patch grid.

    For head k of layer ℓ the map is row 0 of the attention probabilities without its first entry,

        a_k = softmax( (U_k^T z_cls)^T (U_k^T Z) / √p )[1:]   (CRATE; q_cls^T K for the ViT),

    i.e. how much the [CLS] token takes from each patch. Entries are probabilities: each map sums to
    one minus the [CLS] token's attention to itself.

    Args:
        model: a crate_edu classifier (or CRATE-MAE, see :func:`layer_traces`).
        images: (B, C, H, W), normalised as the model expects.
        layer: 0-based layer index (negative counts from the end); default the penultimate layer.
        all_layers: return every layer's maps, stacked first: (L, B, h, gh, gw).
        batch_size: images per forward pass (only the [CLS] rows are kept between batches).

    Returns:
        float32 (B, h, gh, gw), or (L, B, h, gh, gw) with ``all_layers``, on the CPU.
    """
    gh, gw = patch_grid(model)
    idx = None if all_layers else _check_layer(model, layer)
    dev = _device(model)
    out = []
    for xb in iter_batches(images, batch_size):
        traces = layer_traces(model, xb.to(dev))
        chosen = traces if idx is None else [traces[idx]]
        rows = torch.stack([t.attn[:, :, 0, 1:] for t in chosen])  # (L', b, h, N)
        out.append(rows.float().cpu().unflatten(-1, (gh, gw)))  # (L', b, h, gh, gw)
    maps = torch.cat(out, dim=1)
    return maps if all_layers else maps[0]


@torch.no_grad()
def head_projections(
    model: nn.Module, images: Tensor, layer: int | None = None, *, batch_size: int = 256
) -> Tensor:
    """Per-head projections of every patch token, heads concatenated: (B, N, h·p), [CLS] dropped.

    For CRATE these are the MSSA inputs U_k^T LN(Z^ℓ) (the ``qkv`` output, ``LayerTrace.proj``),
    the features whose compression the layer-wise measurement tracks; for the ViT baseline they are
    the keys. Patches are in row-major grid order, so ``.unflatten(1, (gh, gw))`` puts them back.
    """
    idx = _check_layer(model, layer)
    dev = _device(model)
    out = []
    for xb in iter_batches(images, batch_size):
        proj = layer_traces(model, xb.to(dev))[idx].proj  # (b, h, N + 1, p)
        out.append(proj[:, :, 1:].permute(0, 2, 1, 3).flatten(2).float().cpu())  # (b, N, h·p)
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# Masks and scores
# ---------------------------------------------------------------------------------------------


def upsample_maps(maps: Tensor, size: int | tuple[int, int], mode: str = "nearest") -> Tensor:
    """Resize maps (..., gh, gw) to (..., H, W): ``nearest`` repeats each patch's value over its
    pixels (what the masks are scored with), ``bilinear`` gives the smooth pictures DINO shows."""
    if maps.ndim < 2:
        raise ValueError(f"maps must have shape (..., gh, gw), got {tuple(maps.shape)}")
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")
    size = (size, size) if isinstance(size, int) else tuple(size)
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    dtype = flat.dtype
    kw = {"align_corners": False} if mode == "bilinear" else {}
    up = F.interpolate(flat.float(), size=size, mode=mode, **kw)
    up = up.to(dtype) if dtype == torch.bool else up
    return up.reshape(*lead, *size)


def mass_threshold_masks(maps: Tensor, fraction: float = 0.6) -> Tensor:
    """Keep, in each map, the fewest highest-valued patches that hold ``fraction`` of its mass.

    For a map a ≥ 0 over N patches with total mass S = Σ a_i, sort the values in decreasing order;
    patch i is kept when the mass of the patches *above* it is below ``fraction`` · S. So the kept
    set holds at least ``fraction`` of the mass, and dropping its smallest member would take it
    below (DINO's ``--threshold 0.6``). Ties are broken by position (stable sort), so the result is
    deterministic.

    Args:
        maps: non-negative (..., gh, gw).
        fraction: in (0, 1]; 0.6 as in DINO and the CRATE segmentation paper.

    Returns:
        bool (..., gh, gw).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1] (the share of attention mass to keep), got {fraction}")
    if maps.ndim < 2:
        raise ValueError(f"maps must have shape (..., gh, gw), got {tuple(maps.shape)}")
    if (maps < 0).any():
        raise ValueError("maps must be non-negative (attention probabilities); got negative entries")
    flat = maps.flatten(-2).double()  # (..., N)
    total = flat.sum(-1, keepdim=True)  # an all-zero map keeps nothing
    vals, order = torch.sort(flat, dim=-1, descending=True, stable=True)
    above = torch.cumsum(vals, -1) - vals  # mass strictly before each sorted patch
    keep_sorted = above < fraction * total * (1 - 1e-12)
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return keep.unflatten(-1, maps.shape[-2:])


def masks_to_patches(masks: Tensor, patch_size: int, min_cover: float = 0.25) -> Tensor:
    """Pixel masks (..., H, W) -> patch masks (..., H/P, W/P): a patch is foreground when the mask
    covers at least ``min_cover`` of its pixels (0.25, as in ``benchmarks/cluttered_digits.py``)."""
    H, W = masks.shape[-2:]
    if H % patch_size or W % patch_size:
        raise ValueError(f"mask size {H}x{W} is not divisible by patch_size {patch_size}")
    lead = masks.shape[:-2]
    cover = F.avg_pool2d(masks.reshape(-1, 1, H, W).float(), patch_size)  # (M, 1, H/P, W/P)
    return (cover >= min_cover).reshape(*lead, H // patch_size, W // patch_size)


def iou(pred: Tensor, target: Tensor) -> Tensor:
    """Intersection over union of boolean masks over the last two dims; broadcasts.

    IoU = |pred ∧ target| / |pred ∨ target|, and 1.0 when both are empty (nothing to find, nothing
    found). Returns float32 of the broadcast leading shape.
    """
    if pred.shape[-2:] != target.shape[-2:]:
        raise ValueError(
            f"mask sizes differ: {tuple(pred.shape[-2:])} vs {tuple(target.shape[-2:])}; upsample the "
            "predicted masks (upsample_maps) or reduce the ground truth (masks_to_patches) first"
        )
    p, t = pred.bool(), target.bool()
    inter = (p & t).flatten(-2).sum(-1).float()
    union = (p | t).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def head_ious(maps: Tensor, gt_masks: Tensor, fraction: float = 0.6, *, resolution: str = "pixel") -> Tensor:
    """IoU of each head's mass-threshold mask with each image's ground truth: (..., B, h).

    Args:
        maps: attention maps (..., B, h, gh, gw) (e.g. :func:`cls_attention_maps`, any leading dims).
        gt_masks: bool (B, H, W) ground-truth foreground, H and W multiples of gh and gw.
        fraction: the attention mass kept by :func:`mass_threshold_masks`.
        resolution: ``'pixel'``: the patch mask is repeated over its pixels (nearest upsampling)
            and compared with the pixel mask; ``'patch'``: the ground truth is reduced to the grid by
            :func:`masks_to_patches` (≥ 25 % cover) and compared patch by patch.
    """
    gh, gw = maps.shape[-2:]
    if gt_masks.ndim != 3 or gt_masks.shape[0] != maps.shape[-4]:
        raise ValueError(
            f"gt_masks must be (B, H, W) with B = {maps.shape[-4]} (one mask per image), "
            f"got {tuple(gt_masks.shape)}"
        )
    keep = mass_threshold_masks(maps, fraction)  # (..., B, h, gh, gw)
    H, W = gt_masks.shape[-2:]
    if resolution == "pixel":
        if H % gh or W % gw:
            raise ValueError(f"mask size {H}x{W} is not a multiple of the patch grid {gh}x{gw}")
        return iou(upsample_maps(keep, (H, W)), gt_masks[:, None])
    if resolution == "patch":
        if H % gh or W % gw or H // gh != W // gw:
            raise ValueError(f"mask size {H}x{W} does not split into square patches on a {gh}x{gw} grid")
        return iou(keep, masks_to_patches(gt_masks, H // gh)[:, None])
    raise ValueError(f"resolution must be 'pixel' or 'patch', got {resolution!r}")


def mass_on_mask(maps: Tensor, gt_masks: Tensor) -> Tensor:
    """Share of each map's attention mass that falls on the ground truth: (..., B, h), in [0, 1].

    With c_i the fraction of patch i's pixels inside the true mask, the share is
    Σ_i a_i c_i / Σ_i a_i. It needs no threshold, so it also credits a head that puts most of its
    mass on a few patches of the object (whose 60 % mask is then small and scores a low IoU). A
    uniform map scores the mask's area fraction: that is chance.

    Args:
        maps: non-negative (..., B, h, gh, gw).
        gt_masks: bool (B, H, W), H and W multiples of gh and gw.
    """
    gh, gw = maps.shape[-2:]
    H, W = gt_masks.shape[-2:]
    if gt_masks.ndim != 3 or gt_masks.shape[0] != maps.shape[-4] or H % gh or W % gw:
        raise ValueError(
            f"gt_masks must be (B, H, W) with B = {maps.shape[-4]} and H, W multiples of the {gh}x{gw} "
            f"grid, got {tuple(gt_masks.shape)}"
        )
    cover = F.avg_pool2d(gt_masks[:, None].float(), (H // gh, W // gw))  # (B, 1, gh, gw)
    a = maps.double()
    return ((a * cover).sum((-1, -2)) / a.sum((-1, -2)).clamp_min(1e-300)).float()


def mass_on_mask_with_control(maps: Tensor, gt_masks: Tensor) -> tuple[Tensor, Tensor]:
    """Mean :func:`mass_on_mask` over the images, with each image's own map and with another's.

    The control scores image i with the map of image i − 1. A map that follows the object scores
    higher on its own image than on another's; a map that only encodes where objects usually are
    (a positional habit) scores the same on both.

    Args:
        maps: non-negative (..., B, h, gh, gw), B ≥ 2.
        gt_masks: bool (B, H, W), H and W multiples of gh and gw.

    Returns:
        ``(own, control)``, each (..., h): the mean share on the mask over the B images.
    """
    if maps.ndim < 4 or maps.shape[-4] < 2:
        raise ValueError(f"maps must be (..., B, h, gh, gw) with B >= 2 images, got {tuple(maps.shape)}")
    other = torch.roll(torch.arange(maps.shape[-4], device=maps.device), 1)  # image i -> map of i - 1
    own = mass_on_mask(maps, gt_masks).mean(-2)  # (..., h)
    control = mass_on_mask(maps.index_select(-4, other), gt_masks).mean(-2)  # (..., h)
    return own, control


@dataclass(frozen=True)
class SegmentationScore:
    """Scores of per-image, per-head IoUs (see :func:`segmentation_score`).

    Attributes:
        per_head: (h,) mean IoU of each head over the evaluated images.
        best_head: the single head with the highest mean IoU on the selection images.
        best_head_iou: mean IoU of ``best_head`` over the evaluated images.
        class_heads: (C,) the head chosen for each class (highest mean IoU on that class's
            selection images).
        class_iou: (C,) mean IoU of each class's chosen head over that class's evaluated images.
        miou: mean of ``class_iou`` over the classes (the paper's mIoU, best head per class).
        oracle_iou: mean over images of the best head *for that image* (an upper bound; chosen by
            looking at the answer, so never a fair score on its own).
        selected_on: ``'eval'`` (heads chosen on the evaluated images, as the papers do) or
            ``'separate'`` (chosen on other images: a held-out score).
    """

    per_head: Tensor
    best_head: int
    best_head_iou: float
    class_heads: Tensor
    class_iou: Tensor
    miou: float
    oracle_iou: float
    selected_on: str

    def as_dict(self, digits: int = 4) -> dict:
        """Plain Python numbers (rounded), for JSON and printing."""
        return {
            "per_head": [round(float(v), digits) for v in self.per_head],
            "best_head": self.best_head,
            "best_head_iou": round(self.best_head_iou, digits),
            "class_heads": [int(v) for v in self.class_heads],
            "class_iou": [round(float(v), digits) for v in self.class_iou],
            "miou": round(self.miou, digits),
            "oracle_iou": round(self.oracle_iou, digits),
            "selected_on": self.selected_on,
        }


def _check_ious(ious: Tensor, labels: Tensor, name: str) -> None:
    if ious.ndim != 2:
        raise ValueError(f"{name} must be (B, h): one IoU per image and head, got shape {tuple(ious.shape)}")
    if labels.shape != (ious.shape[0],):
        raise ValueError(
            f"labels must have shape ({ious.shape[0]},), one class per image, got {tuple(labels.shape)}"
        )


def _selection(
    ious: Tensor, labels: Tensor, select_ious: Tensor | None, select_labels: Tensor | None
) -> tuple[Tensor, Tensor, str]:
    """The IoUs and labels the heads are chosen on, and ``'eval'`` or ``'separate'``."""
    if (select_ious is None) != (select_labels is None):
        raise ValueError("pass select_ious and select_labels together (or neither)")
    if select_ious is None:
        return ious, labels, "eval"
    s_labels = torch.as_tensor(select_labels).long()
    _check_ious(select_ious, s_labels, "select_ious")
    if select_ious.shape[1] != ious.shape[1]:
        raise ValueError(f"select_ious has {select_ious.shape[1]} heads, ious {ious.shape[1]}")
    return select_ious, s_labels, "separate"


def segmentation_score(
    ious: Tensor,
    labels: Tensor,
    *,
    select_ious: Tensor | None = None,
    select_labels: Tensor | None = None,
    num_classes: int | None = None,
) -> SegmentationScore:
    """The coarse-segmentation score of arXiv 2308.16271 (and DINO) from per-image, per-head IoUs.

    Every head of the chosen layer gives one mask per image (:func:`head_ious`: the 60 % mass
    threshold). The paper reports, on PASCAL VOC12 val, the mIoU with the best head *per class*:
    for class c, the head whose masks have the highest mean IoU over the images of class c; the
    score is the mean over classes of those per-class IoUs. Here:

    - ``best_head_iou``: one head for all images, the one with the highest mean IoU;
    - ``miou``: one head per class (the paper's protocol), averaged over classes;
    - ``oracle_iou``: the best head per image, averaged (an upper bound, for reference).

    Heads are chosen on ``select_ious``/``select_labels`` when given (e.g. training images: a
    held-out score), else on ``ious`` themselves, as the papers do.

    Args:
        ious: (B, h) IoU of head k's mask on image b.
        labels: (B,) int class of each image (for cluttered-digits, the digit).
        select_ious, select_labels: optional (B', h), (B',) images to choose the heads on.
        num_classes: number of classes C (default ``labels.max() + 1``); a class with no
            evaluated image is an error.
    """
    labels = torch.as_tensor(labels).long()
    _check_ious(ious, labels, "ious")
    s_ious, s_labels, selected_on = _selection(ious, labels, select_ious, select_labels)
    ious, s_ious = ious.double(), s_ious.double()
    C = int(labels.max()) + 1 if num_classes is None else num_classes
    per_head = ious.mean(0)
    best = int(s_ious.mean(0).argmax())
    heads, cls_iou = [], []
    for c in range(C):
        ev, se = labels == c, s_labels == c
        if not ev.any() or not se.any():
            raise ValueError(f"class {c} has no image in the evaluated or selection set; pass num_classes")
        h = int(s_ious[se].mean(0).argmax())
        heads.append(h)
        cls_iou.append(ious[ev, h].mean())
    class_iou = torch.stack(cls_iou)
    return SegmentationScore(
        per_head=per_head.float(),
        best_head=best,
        best_head_iou=float(ious[:, best].mean()),
        class_heads=torch.tensor(heads),
        class_iou=class_iou.float(),
        miou=float(class_iou.mean()),
        oracle_iou=float(ious.max(1).values.mean()),
        selected_on=selected_on,
    )


def fixed_mask_baseline(train_masks: Tensor, test_masks: Tensor, thresholds: Tensor | None = None) -> dict:
    """The best *fixed* mask: the same mask for every image, from the train masks' frequency map.

    The frequency map f(x) = share of train masks covering pixel x is thresholded at the t (from
    ``thresholds``, default 0.05 … 0.95) with the highest mean IoU on the train masks; the result
    is that mask's mean IoU on the test masks. An attention map that beats it has found the object,
    not only where objects usually are. Returns ``{"threshold", "train_iou", "test_iou", "mask"}``.
    """
    if train_masks.ndim != 3 or test_masks.shape[-2:] != train_masks.shape[-2:]:
        raise ValueError(
            f"train_masks and test_masks must be (B, H, W) of one size, got {tuple(train_masks.shape)} "
            f"and {tuple(test_masks.shape)}"
        )
    freq = train_masks.float().mean(0)
    default = torch.arange(1, 20, dtype=torch.float64) * 0.05
    ts = default if thresholds is None else torch.as_tensor(thresholds)
    train_scores = torch.stack([iou(freq >= t, train_masks).mean() for t in ts])
    i = int(train_scores.argmax())
    mask = freq >= ts[i]
    return {
        "threshold": round(float(ts[i]), 4),
        "train_iou": float(train_scores[i]),
        "test_iou": float(iou(mask, test_masks).mean()),
        "mask": mask,
    }


# ---------------------------------------------------------------------------------------------
# PCA of the per-head projections
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PCAResult:
    """Principal components of row vectors X (M, D).

    Attributes:
        components: (k, D) unit-norm directions, by decreasing variance; each one's sign is set so
            that its largest-magnitude entry is positive (deterministic).
        mean: (D,) the mean row, subtracted before projecting.
        explained: (k,) share of the total variance along each component.
        scores: (M, k) coordinates of the rows, (X - mean) @ components.T.
    """

    components: Tensor
    mean: Tensor
    explained: Tensor
    scores: Tensor

    def transform(self, x: Tensor) -> Tensor:
        """Coordinates of new rows (..., D) -> (..., k)."""
        return (x.to(self.mean.dtype) - self.mean) @ self.components.T


def pca(x: Tensor, k: int = 3) -> PCAResult:
    """PCA of rows x (M, D) by an SVD of the centred matrix, in float64.

    With X_c = X - mean = U S V^T, the components are the first k rows of V^T (the eigenvectors of
    the covariance X_c^T X_c / (M - 1) with the largest eigenvalues S²/(M - 1)), and the scores are
    X_c V_k = U_k S_k.
    """
    if x.ndim != 2:
        raise ValueError(f"pca expects rows (M, D), got {tuple(x.shape)}; flatten the leading dims first")
    M, D = x.shape
    if not 1 <= k <= min(M, D):
        raise ValueError(f"k must be in [1, min(M, D) = {min(M, D)}], got {k}")
    xd = x.double()
    mean = xd.mean(0)
    xc = xd - mean
    _, S, Vh = torch.linalg.svd(xc, full_matrices=False)
    comps = Vh[:k]
    idx = comps.abs().argmax(1)
    signs = torch.sign(comps[torch.arange(k), idx])
    comps = comps * signs[:, None]
    var = S**2
    return PCAResult(comps, mean, (var[:k] / var.sum().clamp_min(1e-300)), xc @ comps.T)


def _check_feats(feats: Tensor, grid: tuple[int, int]) -> None:
    n = grid[0] * grid[1]
    if feats.ndim != 3 or feats.shape[1] != n:
        raise ValueError(
            f"feats must be (B, N, D) with N = {grid[0]}x{grid[1]} = {n} patches (head_projections "
            f"of a model with that patch grid), got {tuple(feats.shape)}"
        )


def border_mask(grid: tuple[int, int], width: int = 1) -> Tensor:
    """bool (gh, gw), True on the outer ``width`` rings of patches."""
    gh, gw = grid
    m = torch.ones(gh, gw, dtype=torch.bool)
    m[width : gh - width, width : gw - width] = False
    return m


@dataclass(frozen=True)
class PCAMaps:
    """PCA of patch features drawn on the grid (see :func:`pca_maps`).

    Attributes:
        scores: (B, k, gh, gw) coordinates on the first k components (the first one oriented).
        foreground: bool (B, gh, gw), the first component above ``threshold``.
        rgb: (B, gh, gw, 3) the first three components scaled to [0, 1] (needs k >= 3).
        explained: (k,) share of the variance along each component ((B, k) when fitted per image).
        flipped: bool tensor, whether the first component's sign was flipped by the border rule
            (shape (), or (B,) when fitted per image).
    """

    scores: Tensor
    foreground: Tensor
    rgb: Tensor | None
    explained: Tensor
    flipped: Tensor


def pca_maps(
    feats: Tensor, grid: tuple[int, int], k: int = 3, threshold: float = 0.0, *, per_image: bool = False
) -> PCAMaps:
    """PCA of patch features, foreground and RGB maps: one fit for the whole batch, or one per image.

    1. Fit :func:`pca` on all B·N patch vectors (rows of ``feats``), or with ``per_image`` on each
       image's N patches separately.
    2. Orient the first component so that the border patches (the outer ring of the grid) score
       below the mean: background touches the border, the object is mostly inside. Deterministic,
       and needs no labels.
    3. Foreground = first component > ``threshold`` (0: above the mean of the fitted patches).
    4. RGB = components 1-3, each mapped to [0, 1] by its 1 % and 99 % quantiles over the fitted
       patches.

    Args:
        feats: (B, N, D) patch features (e.g. :func:`head_projections`), N = gh·gw, row-major.
        grid: (gh, gw).
        per_image: fit each image on its own; ``explained`` is then (B, k) and ``flipped`` (B,).
    """
    _check_feats(feats, grid)
    if per_image:
        parts = [pca_maps(f[None], grid, k, threshold) for f in feats]
        rgb = torch.cat([p.rgb for p in parts]) if k >= 3 else None
        return PCAMaps(
            torch.cat([p.scores for p in parts]),
            torch.cat([p.foreground for p in parts]),
            rgb,
            torch.stack([p.explained for p in parts]),
            torch.stack([p.flipped for p in parts]),
        )
    B, N, D = feats.shape
    res = pca(feats.reshape(B * N, D), k)
    scores = res.scores.reshape(B, N, k).permute(0, 2, 1).unflatten(-1, grid)  # (B, k, gh, gw)
    border = border_mask(grid)
    flipped = scores[:, 0][:, border].mean() > 0  # the scores have mean 0 over all fitted patches
    if flipped:
        scores = scores.clone()
        scores[:, 0] = -scores[:, 0]
    rgb = None
    if k >= 3:
        s = scores[:, :3].permute(1, 0, 2, 3).reshape(3, -1)  # (3, B·N)
        lo = torch.quantile(s, 0.01, dim=1)[:, None]
        hi = torch.quantile(s, 0.99, dim=1)[:, None]
        rgb = ((s - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1).reshape(3, B, *grid).permute(1, 2, 3, 0)
        rgb = rgb.float()
    return PCAMaps(scores.float(), scores[:, 0] > threshold, rgb, res.explained.float(), flipped)


# ---------------------------------------------------------------------------------------------
# A MaskCut-style foreground: the normalised cut of the patch affinity
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NCutResult:
    """The normalised-cut bipartition of each image's patches (see :func:`ncut_foreground`).

    Attributes:
        foreground: bool (B, gh, gw).
        eigvec: (B, gh, gw) the second generalised eigenvector x of (D - A) x = λ D x (sign as
            computed; ``foreground`` does not depend on it).
        eigval: (B,) its eigenvalue λ₂ (the relaxed normalised-cut value, in [0, 2]).
    """

    foreground: Tensor
    eigvec: Tensor
    eigval: Tensor


def ncut_foreground(feats: Tensor, grid: tuple[int, int], tau: float = 0.2, eps: float = 1e-5) -> NCutResult:
    """Split each image's patches in two by a normalised cut of their affinity (as MaskCut's first
    step, without its iterations or refinement).

    1. Affinity: cosine similarity of patch features, binarised, A_ij = 1 if cos(f_i, f_j) > tau
       else eps (a dense, connected graph).
    2. With the degrees D = diag(A 1), the relaxed normalised cut is the second smallest solution of
       (D - A) x = λ D x; it is computed as x = D^{-1/2} y, y the second eigenvector of the
       symmetric matrix D^{-1/2} (D - A) D^{-1/2}.
    3. Bipartition: x > mean(x). The foreground is the side holding the patch with the largest
       |x - mean(x)| (the most distinctive patch), unless that side holds at least two of the four
       corner patches, in which case it is the other side.

    Args:
        feats: (B, N, D) patch features, N = gh·gw, row-major.
        grid: (gh, gw).
        tau: affinity threshold on the cosine similarity (MaskCut uses 0.15 on DINO keys).
        eps: affinity of dissimilar pairs.
    """
    _check_feats(feats, grid)
    if not -1.0 <= tau < 1.0:
        raise ValueError(f"tau is a cosine-similarity threshold in [-1, 1), got {tau}")
    f = F.normalize(feats.double(), dim=-1)
    cos = f @ f.transpose(1, 2)  # (B, N, N)
    A = torch.where(cos > tau, torch.ones_like(cos), torch.full_like(cos, eps))
    deg = A.sum(-1)  # (B, N)
    dinv = deg.rsqrt()
    L_sym = torch.eye(A.shape[-1], dtype=A.dtype) - dinv[:, :, None] * A * dinv[:, None, :]
    evals, evecs = torch.linalg.eigh(L_sym)  # ascending
    x = dinv * evecs[:, :, 1]  # (B, N)
    centred = x - x.mean(-1, keepdim=True)
    side = centred > 0
    peak = centred.abs().argmax(-1)  # (B,)
    fg = torch.where(side.gather(1, peak[:, None]), side, ~side)  # the side holding the peak
    gh, gw = grid
    corners = torch.tensor([0, gw - 1, (gh - 1) * gw, gh * gw - 1])
    flip = fg[:, corners].sum(-1) >= 2
    fg = torch.where(flip[:, None], ~fg, fg)
    return NCutResult(fg.unflatten(-1, grid), x.float().unflatten(-1, grid), evals[:, 1].float())
