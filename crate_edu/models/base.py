"""The shell every model shares: configuration checks, the classifier interface, the layer stack.

- input and configuration checks that fail with a one-line message saying what to change
  (``check_geometry``, ``check_images``, ...);
- :class:`Block`, the base of the blocks and layers with a ``reference`` switch, and
  :func:`set_reference`, which switches a whole model to the reference arithmetic (the three
  levels, derivation / reference / fast, are described in :mod:`crate_edu.models.fast`);
- :class:`PreNorm` (the official ``norm`` / ``fn`` wrapper), :class:`Transformer` (the stack under
  the official name ``layers``), :class:`LayerTrace` and :class:`AttentionParts` (what a layer and
  an attention block computed, for analysis without hooks);
- :class:`ClassifierConfig` and :class:`ImageClassifier`, shared by CRATE, CRATE-α and the ViT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from crate_edu.models import fast
from crate_edu.renamed import check_renamed

__all__ = [
    "pair",
    "check_positive_int",
    "check_float",
    "check_geometry",
    "check_model_sizes",
    "check_ista",
    "check_flag",
    "check_images",
    "check_renamed",
    "Block",
    "set_reference",
    "AttentionParts",
    "LayerTrace",
    "PreNorm",
    "Transformer",
    "ClassifierConfig",
    "ImageClassifier",
]


def pair(t: int | tuple[int, int]) -> tuple[int, int]:
    return tuple(t) if isinstance(t, (tuple, list)) else (t, t)  # type: ignore[return-value]


def _divisors(n: int) -> list[int]:
    return [k for k in range(2, n) if n % k == 0]


def check_positive_int(name: str, value: object, *, allow_none: bool = False, minimum: int = 1) -> None:
    """Raise a one-line ``ValueError`` (``TypeError`` for a non-integer) unless ``value`` is an int
    of at least ``minimum`` (None allowed with ``allow_none``)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
        raise ValueError(f"{name} must be {what}, got {value}")


def check_float(name: str, value: object, low: float, high: float, *, high_open: bool = True) -> None:
    """Raise a one-line ``ValueError`` unless ``value`` is a finite number in [low, high) (or
    [low, high] with ``high_open=False``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    v = float(value)
    inside = math.isfinite(v) and low <= v and (v < high if high_open else v <= high)
    if not inside:
        if math.isinf(high):
            raise ValueError(f"{name} must be a finite number >= {low:g}, got {value!r}")
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low:g}, {high:g}{bracket}, got {value!r}")


def check_geometry(image_size, patch_size, dim: int, heads: int, dim_head: int | None, pool: str) -> None:
    """Validate a model configuration; raise ``ValueError`` saying what to change."""
    for name, size in (("image_size", image_size), ("patch_size", patch_size)):
        for side in pair(size):
            check_positive_int(name, side)
    check_positive_int("dim", dim)
    check_positive_int("heads", heads)
    check_positive_int("dim_head", dim_head, allow_none=True)
    (ih, iw), (ph, pw) = pair(image_size), pair(patch_size)
    for side, p in ((ih, ph), (iw, pw)):
        if side % p:
            raise ValueError(
                f"image size {side} is not divisible by patch size {p}; resize the images or choose "
                f"patch_size in {_divisors(side)}"
            )
    if dim_head is None and dim % heads:
        raise ValueError(
            f"dim {dim} is not divisible by heads {heads}; choose heads in {[1, *_divisors(dim), dim]} "
            "or pass dim_head explicitly"
        )
    if pool not in ("cls", "mean"):
        raise ValueError(f"pool must be 'cls' (the [CLS] token) or 'mean' (mean of all tokens), got {pool!r}")


#: The conversion method of each floating dtype (``x.float()``, ``model.double()``, ...).
_CAST = {torch.float32: "float", torch.float64: "double", torch.float16: "half", torch.bfloat16: "bfloat16"}


def check_images(x: Tensor, channels: int, image_size, name: str, like: Tensor | None = None) -> None:
    """Raise a clear error unless ``x`` is a float batch (B, channels, H, W) of the model's size.

    With ``like`` (one of the model's parameters), ``x`` must also be on its device and, outside
    autocast, of its dtype: a float64 batch for a float32 model is a one-line ``TypeError`` that says
    to convert the images (``x.float()``) or the model (``model.double()``). ``B = 0`` is allowed.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} expects a torch.Tensor of images (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        hint = " (a single image? add a batch dimension with x.unsqueeze(0))" if x.ndim == 3 else ""
        raise ValueError(f"{name} expects images of shape (B, C, H, W), got shape {tuple(x.shape)}{hint}")
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name} expects floating-point images, got dtype {x.dtype}; convert with x.float() / 255 "
            "and normalise as the dataset does (crate_edu.data.dataset_info(name).mean / .std)"
        )
    if x.shape[1] != channels:
        fix = (
            "repeat a grayscale channel with x.expand(-1, 3, -1, -1)"
            if x.shape[1] == 1 and channels == 3
            else f"convert the images, or build the model with channels={x.shape[1]}"
        )
        raise ValueError(
            f"{name} expects {channels} channels, got {x.shape[1]} (shape {tuple(x.shape)}); {fix}"
        )
    h, w = pair(image_size)
    if tuple(x.shape[-2:]) != (h, w):
        raise ValueError(
            f"{name} was built for {h}x{w} images, got {x.shape[-2]}x{x.shape[-1]}; resize the images "
            f"(e.g. torchvision.transforms.Resize(({h}, {w}))) or create the model with "
            f"image_size={x.shape[-2] if x.shape[-2] == x.shape[-1] else tuple(x.shape[-2:])}"
        )
    if like is None:
        return
    if x.device != like.device and like.device.type != "meta":
        raise ValueError(
            f"{name} is on {like.device} but the images are on {x.device}; move them with "
            f"x.to('{like.device}') (or the model with model.to('{x.device}'))"
        )
    if x.dtype != like.dtype and not torch.is_autocast_enabled(x.device.type):
        fix = f"x.{_CAST[like.dtype]}()" if like.dtype in _CAST else f"x.to({like.dtype})"
        other = f"model.{_CAST[x.dtype]}()" if x.dtype in _CAST else f"model.to({x.dtype})"
        raise TypeError(
            f"{name} is {str(like.dtype).removeprefix('torch.')} but the images are "
            f"{str(x.dtype).removeprefix('torch.')}; convert the images with {fix} or the model with "
            f"{other}"
        )


def check_model_sizes(cfg: object, names: tuple[str, ...]) -> None:
    """Check that each field ``names`` of ``cfg`` is a positive integer (one-line errors that name
    the field, so that ``depth=0`` fails when the model is configured, not in its first forward)."""
    for name in names:
        check_positive_int(name, getattr(cfg, name))


def check_ista(eta: object, lambd: object) -> None:
    """ISTA's step size η must be a finite positive number and its penalty λ finite and >= 0."""
    check_float("eta", eta, 0.0, math.inf)
    if not float(eta) > 0:  # type: ignore[arg-type]
        raise ValueError(f"eta (the ISTA step size) must be positive, got {eta!r}")
    check_float("lambd", lambd, 0.0, math.inf)


def check_flag(name: str, value: object) -> None:
    """Raise a one-line ``TypeError`` unless ``value`` is True or False."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


# ------------------------------------------------------------------------------ blocks and layers
class Block(nn.Module):
    """Base of the blocks and layers that take the ``reference`` switch (``reference=True``: the
    official arithmetic, written out; ``False``, the default: :mod:`crate_edu.models.fast`).

    It adds one thing to ``nn.Module``: the switch's name before crate_edu 0.2 is a one-line
    ``TypeError`` naming ``reference`` (:func:`crate_edu.renamed.check_renamed`), as an argument or
    as an attribute (where setting it would otherwise be silently ignored).
    """

    def __new__(cls, *args, **kwargs):
        check_renamed(cls.__name__, kwargs)
        return super().__new__(cls)

    def __setattr__(self, name: str, value) -> None:
        check_renamed(type(self).__name__, (name,))
        super().__setattr__(name, value)


def set_reference(model: nn.Module, reference: bool = True) -> nn.Module:
    """Switch every block of ``model`` to the reference arithmetic (True) or the fast path (False)."""
    for module in model.modules():
        if isinstance(getattr(module, "reference", None), bool):
            module.reference = reference
    return model


class AttentionParts(NamedTuple):
    """What an attention block computed (``forward_parts``), for analysis.

    Attributes:
        proj: (B, h, N, p) per-head projections: U_k^T z for MSSA (its queries = keys = values);
            the keys for the ViT baseline.
        attn: (B, h, N, N) attention probabilities; row i is token i's softmax over tokens.
        out: (B, N, d) the block's output, equal to ``block(x)``.
    """

    proj: Tensor
    attn: Tensor
    out: Tensor


@dataclass
class LayerTrace:
    """What one layer computed, for analysis without hooks.

    Attributes:
        proj: (B, h, N, p) per-head projections U_k^T LN(Z^ℓ) (the ``qkv`` output split by head;
            for the ViT baseline, the keys).
        attn: (B, h, N, N) attention probabilities; row i is token i's softmax over tokens.
        z_half: (B, N, d) Z^{ℓ+½}, the stream after the attention (compression) step.
        z_out: (B, N, d) Z^{ℓ+1}, the layer output (after ISTA / the MLP).
        codes: the sparse codes of the layer's ISTA block: Z^{ℓ+1} itself for CRATE, the
            (B, N, r·d) codes A2 for CRATE-α (its stream is not sparse: the codes are decoded by
            D1 and added back); None where there is no sparse coding (ViT, CRATE-MAE decoder).
    """

    proj: Tensor
    attn: Tensor
    z_half: Tensor
    z_out: Tensor
    codes: Tensor | None = None


class PreNorm(nn.Module):
    """``fn(LayerNorm(x))``: the official pre-norm wrapper (attribute names ``norm`` and ``fn``)."""

    def __init__(self, dim: int, fn: nn.Module, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.fn = fn

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        return self.fn(self.norm(x), **kwargs)


class Transformer(nn.Module):
    """A stack of layers under the official attribute name ``layers``: Z^{ℓ+1} = layer_ℓ(Z^ℓ)."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, d) -> (B, N, d)."""
        for layer in self.layers:
            x = layer(x)
        return x

    def forward_trace(self, x: Tensor) -> tuple[Tensor, list[LayerTrace]]:
        """The output and each layer's :class:`LayerTrace`."""
        traces = []
        for layer in self.layers:
            x, trace = layer.forward_trace(x)
            traces.append(trace)
        return x, traces


# ------------------------------------------------------------------------------------ classifiers
@dataclass(frozen=True)
class ClassifierConfig:
    """Fields shared by every classifier's config (CRATE, CRATE-α, ViT); validated on creation."""

    image_size: int | tuple[int, int] = 224
    patch_size: int | tuple[int, int] = 16
    num_classes: int = 1000
    dim: int = 384  # token width d
    depth: int = 12  # layers L
    heads: int = 6  # heads (CRATE: subspaces K)
    dim_head: int | None = None  # head dimension p (default dim // heads)
    channels: int = 3
    pool: str = "cls"  # 'cls' or 'mean'
    dropout: float = 0.0
    emb_dropout: float = 0.0
    reference: bool = False  # the official arithmetic, written out, instead of the fast path

    def __new__(cls, *args, **kwargs):
        check_renamed(cls.__name__, kwargs)
        return super().__new__(cls)

    def __post_init__(self):
        check_geometry(self.image_size, self.patch_size, self.dim, self.heads, self.dim_head, self.pool)
        check_model_sizes(self, ("depth", "num_classes", "channels"))
        check_float("dropout", self.dropout, 0.0, 1.0)
        check_float("emb_dropout", self.emb_dropout, 0.0, 1.0)
        check_flag("reference", self.reference)

    @property
    def head_dim(self) -> int:
        return self.dim_head if self.dim_head is not None else self.dim // self.heads

    @property
    def num_patches(self) -> int:
        (ih, iw), (ph, pw) = pair(self.image_size), pair(self.patch_size)
        return (ih // ph) * (iw // pw)


class ImageClassifier(nn.Module):
    """The interface shared by CRATE, CRATE-α and the ViT baseline.

    Subclasses define ``embed`` (images -> tokens with [CLS] first), ``transformer`` (a
    :class:`Transformer`), ``mlp_head`` (LayerNorm, Linear), ``cls_token``, ``pos_embedding`` and
    ``dropout``, and set ``self.config``.

    - ``forward(img)`` -> logits (B, num_classes)
    - ``forward_features(img)`` -> tokens after the last layer (B, N + 1, d)
    - ``forward_head(tokens)`` -> logits, pooling by ``config.pool``
    - ``forward_intermediates(img)`` -> (logits, [LayerTrace per layer]): per-head projections,
      attention maps, Z^{ℓ+½} and Z^{ℓ+1}, with no hooks
    - ``reset_classifier(num_classes)`` replaces the head (fine-tuning)
    """

    config: object
    transformer: Transformer
    mlp_head: nn.Sequential

    #: Whether ``forward`` may compute only the [CLS] row of the last layer, the one row the head
    #: reads (``pool='cls'``, fast path; exact: see :func:`crate_edu.models.fast.forward_cls_logits`).
    #: Set it to False to compute every row, as the official code does.
    prune_last_layer: bool = True

    def embed(self, img: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def init_tokens(self, cfg: ClassifierConfig) -> None:
        """The learned positions, [CLS] token and embedding dropout, initialised as officially."""
        self.pos_embedding = nn.Parameter(torch.randn(1, cfg.num_patches + 1, cfg.dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.dim))
        self.dropout = nn.Dropout(cfg.emb_dropout)

    def add_cls_and_positions(self, x: Tensor) -> Tensor:
        """Patch tokens (B, N, d) -> [CLS; tokens] + pos_embedding, then embedding dropout."""
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, d)
        x = torch.cat((cls, x), dim=1) + self.pos_embedding  # (B, N + 1, d)
        return self.dropout(x)

    def check_input(self, img: Tensor) -> None:
        cfg = self.config
        check_images(img, cfg.channels, cfg.image_size, type(self).__name__, like=self.cls_token)

    def forward(self, img: Tensor) -> Tensor:
        """Images (B, C, H, W) -> logits (B, num_classes)."""
        if fast.prunes_last_layer(self):  # the same logits; the last layer computes the [CLS] row only
            return fast.forward_cls_logits(self, img)
        return self.forward_head(self.forward_features(img))  # (B, num_classes)

    def forward_features(self, img: Tensor) -> Tensor:
        return self.transformer(self.embed(img))  # (B, N + 1, d)

    def pool(self, tokens: Tensor) -> Tensor:
        """(B, N + 1, d) -> (B, d): the [CLS] token, or the mean over all tokens."""
        return tokens.mean(dim=1) if self.config.pool == "mean" else tokens[:, 0]

    def forward_head(self, tokens: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pool(tokens)
        return x if pre_logits else self.mlp_head(x)

    def forward_intermediates(self, img: Tensor) -> tuple[Tensor, list[LayerTrace]]:
        tokens, traces = self.transformer.forward_trace(self.embed(img))
        return self.forward_head(tokens), traces

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final Linear with a freshly initialised one of ``num_classes`` outputs."""
        old = self.mlp_head[-1]
        self.mlp_head[-1] = nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype)
        self.config = replace(self.config, num_classes=num_classes)

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
