"""The CRATE-α ablation as code: train each step of ``ABLATION`` on one budget and measure it.

CRATE-α (arXiv 2405.20299) changes CRATE's sparse coding block three times: an overcomplete
dictionary, a decoupled decoding dictionary, a residual connection. ``crate_edu.models.crate_alpha.
ABLATION`` names the cumulative steps as model overrides; this module trains each of them with the
same recipe, seed and budget and measures what the paper's ablation is about:

- ``test_acc``: top-1 accuracy on the test split after the last epoch;
- ``nonzero``: the fraction of non-zero entries of each layer's sparse codes (``LayerTrace.codes``:
  CRATE's ISTA output, or CRATE-α's A2) on a fixed batch of test images (lower = sparser);
- ``active``: non-zeros per token, i.e. ``nonzero`` times the code width (d or r·d): how many
  dictionary atoms a token uses, which stays comparable when the code width changes.

It also counts the multiply-accumulates of a CRATE-α forward pass (``crate_alpha_macs``), for the
accuracy-versus-compute view of the published scaling table (``PUBLISHED_ALPHA``).

Used by ``benchmarks/crate_alpha_ablation.py`` (full budget) and notebook 09 (a mini-run).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import crate_edu
from crate_edu.evaluation.flops import forward_macs
from crate_edu.evaluation.layerwise import layerwise_measurements
from crate_edu.models.crate_alpha import ABLATION, CRATEAlphaConfig

__all__ = [
    "ABLATION",
    "PUBLISHED_ALPHA",
    "PUBLISHED_CRATE",
    "AblationRun",
    "ablation_config",
    "code_sparsity",
    "crate_alpha_macs",
    "published_crate_table",
    "published_scaling_table",
    "run_ablation",
    "summarize",
]

#: CRATE-α top-1 on ImageNet-1K (pre-trained on ImageNet-21K, fine-tuned on ImageNet-1K), as
#: published in arXiv 2405.20299: name -> (preset, patch size, top-1 %).
PUBLISHED_ALPHA: Mapping[str, tuple[str, int, float]] = {
    "B/32": ("crate_alpha_b16", 32, 76.5),
    "B/16": ("crate_alpha_b16", 16, 81.2),
    "B/8": ("crate_alpha_b16", 8, 83.2),
    "L/32": ("crate_alpha_l14", 32, 80.2),
    "L/14": ("crate_alpha_l14", 14, 83.9),
    "L/8": ("crate_alpha_l14", 8, 85.1),
}
#: CRATE top-1 on ImageNet-1K trained from scratch, as published in arXiv 2306.01129: name ->
#: (preset, top-1 %). All patch 16.
PUBLISHED_CRATE: Mapping[str, tuple[str, float]] = {
    "T/16": ("crate_tiny", 66.7),
    "S/16": ("crate_small", 69.2),
    "B/16": ("crate_base", 70.8),
    "L/16": ("crate_large", 71.3),
}


@dataclass
class AblationRun:
    """One trained variant of the ablation (one seed).

    Attributes:
        variant: its name in ``ABLATION``.
        seed: the run's seed (initial weights and data order).
        model_overrides: the ``create_model`` overrides of the run (recipe's and variant's).
        params: number of parameters.
        test_acc: test accuracy after the last epoch (fraction); best_test_acc: best over epochs.
        nonzero: per layer, fraction of non-zero code entries on the measurement batch.
        active: per layer, mean number of non-zero code entries per token.
        code_width: width of the codes (d for the CRATE block, r·d for CRATE-α's).
        nonzero_init: ``nonzero`` of the same model at its initial weights.
        train_seconds: wall time of the training (epochs and evaluations).
        history: per epoch, (epoch, test accuracy).
        train_acc, train_loss: accuracy and loss on the training batches of the last epoch (with
            augmentation and label smoothing): low values mean the variant failed to fit, not to
            generalise.
    """

    variant: str
    seed: int
    model_overrides: dict[str, Any]
    params: int
    test_acc: float
    best_test_acc: float
    nonzero: list[float]
    active: list[float]
    code_width: int
    nonzero_init: list[float]
    train_seconds: float
    history: list[tuple[int, float]] = field(default_factory=list)
    train_acc: float = float("nan")
    train_loss: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ablation_config(
    variant: str,
    *,
    epochs: int,
    seed: int = 0,
    recipe: str = "digits-quick",
    model: str = "crate_alpha_nano_cifar",
    model_overrides: Mapping[str, Any] | None = None,
    switches: Mapping[str, Any] | None = None,
    **train_overrides: Any,
):
    """The :class:`~crate_edu.train.TrainConfig` of one ablation step.

    Args:
        variant: a key of ``ABLATION`` (e.g. ``"+ decoupled"``), or any label when ``switches``
            is given.
        epochs, seed: the budget and the seed.
        recipe: the training recipe (default ``digits-quick``: AdamW, warm-up + cosine, label
            smoothing, shifts, one CPU thread).
        model: a CRATE-α preset.
        model_overrides: shape overrides shared by every variant (the recipe's depth 4 and patch 8
            by default); the variant's switches are applied on top.
        switches: the variant's model overrides, for a variant outside ``ABLATION`` (e.g.
            ``{"decoupled": False}``: CRATE-α with a tied decoder).
        **train_overrides: any other ``TrainConfig`` field (``limit_train``, ``lr``, ...).

    Raises:
        ValueError: unknown variant.
    """
    from crate_edu.train import RECIPES

    if switches is None and variant not in ABLATION:
        raise ValueError(
            f"unknown ablation variant {variant!r}; choose one of: {', '.join(map(repr, ABLATION))}, "
            "or pass its model overrides as switches={...}"
        )
    shape = {"depth": 4, "patch_size": 8} if model_overrides is None else dict(model_overrides)
    overrides = {**shape, **(ABLATION[variant] if switches is None else switches)}
    train_overrides.setdefault("progress", False)
    return RECIPES[recipe].config(
        model=model, model_overrides=overrides, epochs=epochs, seed=seed, **train_overrides
    )


@torch.no_grad()
def code_sparsity(model: nn.Module, images: Tensor) -> tuple[list[float], list[float], int]:
    """Per-layer sparsity of a CRATE-α model's codes on ``images`` (B, C, H, W).

    Returns:
        (nonzero, active, code_width): per layer the fraction of non-zero code entries (mean over
        images, as ``layerwise_measurements``), per layer the mean number of non-zeros per token,
        and the code width.
    """
    was_training = model.training
    model.eval()
    try:
        _, traces = model.forward_intermediates(images)
    finally:
        model.train(was_training)
    if any(t.codes is None for t in traces):
        raise ValueError(f"{type(model).__name__} has no sparse codes; pass a CRATE or CRATE-α model")
    width = traces[0].codes.shape[-1]
    nonzero = layerwise_measurements(model, images).nonzero_mean
    active = [(t.codes != 0).sum(-1).double().mean().item() for t in traces]  # per token, averaged
    return nonzero, active, int(width)


def run_ablation(
    variants: Sequence[str] | Mapping[str, Mapping[str, Any]] | None = None,
    seeds: Sequence[int] = (0,),
    *,
    epochs: int = 8,
    measure_images: Tensor | None = None,
    n_measure: int = 256,
    out_dir: str | Path | None = None,
    verbose: bool = True,
    **config_kwargs: Any,
) -> list[AblationRun]:
    """Train every variant (in ``ABLATION`` order) for every seed on the same budget; measure each.

    Args:
        variants: names of ``ABLATION`` (default: all four), or a mapping of your own variants,
            name -> model overrides (e.g. ``{"tied + residual": {"decoupled": False}}``).
        seeds: one run per seed and variant.
        epochs: training epochs per run.
        measure_images: the fixed batch on which sparsity is measured (default: the first
            ``n_measure`` test images of the dataset, unaugmented).
        out_dir: where run folders go (default: a temporary folder, deleted afterwards).
        verbose: print one line per run.
        **config_kwargs: passed to :func:`ablation_config` (``recipe``, ``model_overrides``,
            ``limit_train``, ...).
    """
    from crate_edu.data import build_dataset

    table = dict(variants) if isinstance(variants, Mapping) else dict(ABLATION)
    names = list(table) if variants is None or isinstance(variants, Mapping) else list(variants)
    for name in names:
        if name not in table:
            raise ValueError(
                f"unknown ablation variant {name!r}; choose one of: {', '.join(map(repr, ABLATION))}"
            )
    runs: list[AblationRun] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(out_dir) if out_dir is not None else Path(tmp)
        for seed in seeds:
            for name in names:
                slug = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
                cfg = ablation_config(name, epochs=epochs, seed=seed, switches=table[name], **config_kwargs)
                if measure_images is None:
                    test = build_dataset(cfg.dataset, "test", image_size=cfg.image_size)
                    measure_images = torch.stack([test[i][0] for i in range(min(n_measure, len(test)))])
                runs.append(_train_and_measure(name, cfg, measure_images, root / f"{slug}_seed{seed}"))
                if verbose:
                    print(_one_line(runs[-1]), flush=True)
    return runs


def _train_and_measure(name: str, cfg, measure_images: Tensor, run_dir: Path) -> AblationRun:
    """Train one variant with ``cfg`` into ``run_dir``; its code sparsity before and after, its accuracy."""
    from accelerate.utils import set_seed

    from crate_edu.train import build_model, load_checkpoint, train

    set_seed(cfg.seed)  # the initial weights that train() will start from
    model = build_model(cfg)
    nonzero_init, _, _ = code_sparsity(model, measure_images)
    t0 = time.perf_counter()
    result = train(cfg, run_dir)
    seconds = time.perf_counter() - t0
    model.load_state_dict(load_checkpoint(result.checkpoint)["model"])
    nonzero, active, width = code_sparsity(model, measure_images)
    return AblationRun(
        variant=name,
        seed=cfg.seed,
        model_overrides=dict(cfg.model_overrides),
        params=sum(p.numel() for p in model.parameters()),
        test_acc=float(result.final["test_acc"]),
        best_test_acc=float(max(h["test_acc"] for h in result.history)),
        nonzero=nonzero,
        active=active,
        code_width=width,
        nonzero_init=nonzero_init,
        train_seconds=round(seconds, 2),
        history=[(int(h["epoch"]), float(h["test_acc"])) for h in result.history],
        train_acc=float(result.final["train_acc"]),
        train_loss=float(result.final["train_loss"]),
    )


def _one_line(run: AblationRun) -> str:
    return (
        f"{run.variant:22s} seed {run.seed}: test acc {run.test_acc:.3f}, non-zeros "
        f"{statistics.fmean(run.nonzero):.3f} "
        f"({statistics.fmean(run.active):.0f} of {run.code_width} per token), "
        f"{run.train_seconds:.0f} s"
    )


def summarize(runs: Sequence[AblationRun | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant (in first-seen order): mean and spread over seeds.

    Each row: ``variant``, ``seeds``, ``params``, ``test_acc_mean``, ``test_acc_min``,
    ``test_acc_max``, ``train_acc_mean``, ``nonzero_mean`` (mean over layers and seeds), ``active_mean``,
    ``code_width``, ``nonzero_init_mean``, ``train_seconds_mean``. Accepts runs or their dicts
    (as stored in the benchmark's JSON).
    """
    by_variant: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        d = r.to_dict() if isinstance(r, AblationRun) else r
        by_variant.setdefault(d["variant"], []).append(d)
    rows = []
    for name, rs in by_variant.items():
        accs = [r["test_acc"] for r in rs]
        rows.append(
            {
                "variant": name,
                "seeds": [r["seed"] for r in rs],
                "params": rs[0]["params"],
                "test_acc_mean": statistics.fmean(accs),
                "test_acc_min": min(accs),
                "test_acc_max": max(accs),
                "train_acc_mean": statistics.fmean(r.get("train_acc", float("nan")) for r in rs),
                "nonzero_mean": statistics.fmean(statistics.fmean(r["nonzero"]) for r in rs),
                "active_mean": statistics.fmean(statistics.fmean(r["active"]) for r in rs),
                "code_width": rs[0]["code_width"],
                "nonzero_init_mean": statistics.fmean(statistics.fmean(r["nonzero_init"]) for r in rs),
                "train_seconds_mean": statistics.fmean(r["train_seconds"] for r in rs),
            }
        )
    return rows


def crate_alpha_macs(config: CRATEAlphaConfig) -> dict[str, int]:
    """Multiply-accumulates of one forward pass of a CRATE-α classifier on one image, by part.

    :func:`crate_edu.evaluation.flops.forward_macs` of ``config`` (matrix products only; LayerNorm,
    softmax, ReLU and additions are left out), with N patches and n = N + 1 tokens, d = ``dim``,
    r = ``overcomplete_ratio``, K·p = ``heads * head_dim``:

    - ``embed``: the patch convolution, N · d · C · ph · pw ;
    - ``attention``: per layer the projection U^T (n · d · Kp), the scores and their average
      (2 · n² · Kp) and ``to_out`` (n · Kp · d);
    - ``sparse_coding``: per layer D^T X, D A1, D^T(·) (3 · n · d · r d) and the decoder
      (n · r d · d) for the ``alpha`` block; 2 · n · d² for CRATE's one-step block;
    - ``head``: d · classes.

    Returns:
        dict with ``embed``, ``attention``, ``sparse_coding``, ``head`` and ``total`` (integers).
    """
    return forward_macs(config)


def published_scaling_table() -> list[dict[str, Any]]:
    """The published CRATE-α ImageNet-1K figures with parameters and GMACs computed here (224 px).

    Parameters are counted on a model built on the ``meta`` device (no memory); GMACs from
    :func:`crate_alpha_macs` at 224×224 px for every row (the papers' fine-tuning resolutions may
    differ).
    """
    rows = []
    for name, (preset, patch, top1) in PUBLISHED_ALPHA.items():
        cfg = crate_edu.model_config(preset, patch_size=patch)
        with torch.device("meta"):
            params = crate_edu.create_model(preset, patch_size=patch).num_params()
        rows.append(
            {
                "model": f"CRATE-α-{name}",
                "preset": preset,
                "patch_size": patch,
                "tokens": cfg.num_patches + 1,
                "params_M": params / 1e6,
                "gmacs_224": crate_alpha_macs(cfg)["total"] / 1e9,
                "top1": top1,
            }
        )
    return rows


def published_crate_table() -> list[dict[str, Any]]:
    """The published CRATE ImageNet-1K figures (from scratch) with parameters and GMACs at 224 px.

    CRATE's MACs are those of a CRATE-α config with CRATE's block (``ABLATION["CRATE block"]``):
    the patch embeddings (a Linear on flattened patches, a Conv2d) cost the same.
    """
    rows = []
    for name, (preset, top1) in PUBLISHED_CRATE.items():
        cfg = crate_edu.model_config(preset)
        with torch.device("meta"):
            params = crate_edu.create_model(preset).num_params()
        alpha_cfg = CRATEAlphaConfig(
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            num_classes=cfg.num_classes,
            dim=cfg.dim,
            depth=cfg.depth,
            heads=cfg.heads,
            **ABLATION["CRATE block"],
        )
        rows.append(
            {
                "model": f"CRATE-{name}",
                "preset": preset,
                "patch_size": cfg.patch_size,
                "tokens": cfg.num_patches + 1,
                "params_M": params / 1e6,
                "gmacs_224": crate_alpha_macs(alpha_cfg)["total"] / 1e9,
                "top1": top1,
            }
        )
    return rows
