"""Contrastive image–text training of a small CRATE-α-CLIPA with the CLIPA recipe, on one device,
through the one training loop.

The objective (:class:`ContrastiveCaptions`: CLIP's symmetric InfoNCE,
:func:`crate_edu.train.objectives.contrastive_loss`, scored by zero-shot accuracy on held-out
prompts) plugs into :func:`crate_edu.train.loop.run_epochs` as the MAE pre-training does (one
device, float32, :class:`~crate_edu.train.loop.OneDevice`). The data are the captioned digits
(:class:`crate_edu.data.CaptionedDigits`): each image with a caption drawn anew every epoch from
the training templates, the held-out digit–colour combinations left out::

    from crate_edu.train import CLIPTrainConfig, pretrain_clip, pretrain_clip_quick
    run = pretrain_clip(CLIPTrainConfig(), "runs/clipa-digits")   # about 5 min of CPU, one thread
    run.model, run.history          # the trained CRATEAlphaCLIPA, one dict per epoch
    run = pretrain_clip_quick()     # a tiny version in well under a minute

**The CLIPA trick** (Li, Wang & Xie, "An inverse scaling law for CLIP training", 2023; used by
CRATE-α-CLIPA, ``docs/notes/crate_alpha_official_code.md`` §3.3–3.4). Phase 1 trains at a reduced
image size (16 px: 4 × 4 + 1 = 17 tokens instead of 65) and with shorter text (8 tokens: captions
truncated, as CLIPA's truncation); phase 2 fine-tunes the same weights at full size (32 px, 16
tokens) with a fresh optimiser, a lower learning rate and its own warm-up, as CLIPA's fine-tuning
is a new run initialised from the first. Between the phases:

- the image tower's ``positional_embedding`` (N₁ + 1, W) is resized to (N₂ + 1, W) by linear
  interpolation over the **flattened token axis, [CLS] included** (:func:`resize_positional_embedding`),
  exactly as the official ``merge_params`` does with ``jax.image.resize(..., 'bilinear')``;
- the text tower's positions grow from C₁ to C₂ rows (:func:`extend_text_positions`);
- everything else is copied unchanged (no parameter depends on the number of tokens).

Per epoch it atomically rewrites ``metrics.jsonl`` (one line per epoch: phase, image size,
context, train loss, zero-shot accuracies on the test split with the held-out prompts, the
temperature, learning rate, time) and ``checkpoint.pt`` (model, optimiser, schedule, phase,
history, configuration); the checkpoint at the end of the low-resolution phase is also kept, as
``checkpoint_low_res.pt`` (:func:`load_clip_run` reads it as the 16-px model). The order and
the captions of epoch ``e`` come from one generator seeded by ``(seed, e)``, so ``resume=True``
continues an interrupted run, in either phase or between them, exactly as if it had not stopped.

**Hyperparameters.** Official CLIPA (§3.3–3.4): Adam b1 0.9, b2 0.95, eps 1e-8, decoupled weight
decay 0.2 on the Dense and Conv kernels only (not on the ISTA dictionaries, positions, embeddings,
LayerNorms, biases or the temperature), gradient clipping 1.0, cosine to 0 after a linear warm-up
(1,600 steps pre-training, 800 fine-tuning), lr 1.024e-3 then 5.12e-5, batch 32,768. Kept here:
the optimiser, betas, weight decay and its mask, clipping, cosine-to-zero, the peak lr (1e-3).
Changed for one CPU thread: batch 128, warm-up 100 and 20 steps (12 % of each phase's 830 and 166
steps, against 2 % and 5 % officially), fine-tuning lr 2.5e-4 (÷4 instead of ÷20: phase 2 is one
epoch, too short to move at 5 % of the peak), and the text
tower and temperature are trained from scratch (officially both are loaded from a pre-trained
text model and frozen; there is no pre-trained text model for these captions). The temperature
starts at 1/0.07 as CLIP's and the logit scale is capped at 100.

**Data.** Clutter 0 (the digit on a flat background in the mean colour of a crop of the named
picture, no fragments), 16 composites per digit. On the cluttered default (0.5) the same schedule
barely learns the digits: 11.9 % zero-shot after its 6 epochs on the first 2,000 test images (a
linear probe on its features: 17.5 %), while it learns colours; clutter 0.25 reached 27.4 % and
clutter 0 75.5 % after 2 epochs at 16 px (seed 0; these trial runs are not recorded elsewhere).
The digit is one attribute of four in a caption, and the easiest ones (colour, background) are
learned first; on textured backgrounds the digit needs far more steps than a CPU run has.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crate_edu.data.captions import (
    DIGIT_WORDS,
    HELD_OUT_TEMPLATES,
    TRAIN_TEMPLATES,
    CaptionedDigits,
    CaptionTokenizer,
    pair_classes,
)
from crate_edu.data.loader import epoch_generator
from crate_edu.errors import TrainingDivergedError
from crate_edu.evaluation.batches import iter_batches
from crate_edu.evaluation.zero_shot import class_embeddings, zero_shot_logits
from crate_edu.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from crate_edu.train.loop import OneDevice, restore_state, run_epochs, start_run_folder
from crate_edu.train.objectives import EpochStats, Run, contrastive_loss
from crate_edu.train.optim import kernel_decay_groups, lr_schedule

__all__ = [
    "LOW_RES_CHECKPOINT",
    "CLIPRunResult",
    "CLIPTrainConfig",
    "CaptionBatches",
    "ContrastiveCaptions",
    "build_clip_model",
    "clip_image_features",
    "extend_text_positions",
    "load_clip_run",
    "pretrain_clip",
    "pretrain_clip_quick",
    "quick_clip_config",
    "resize_images",
    "resize_positional_embedding",
    "upsize_clip_model",
    "zero_shot_scores",
]

#: The logit scale exp(t) is capped here (CLIP's cap), so the temperature cannot run away.
MAX_LOGIT_SCALE = 100.0
#: The run folder's copy of the checkpoint at the end of the low-resolution phase (the model the
#: full-size phase starts from, before the positions are resized).
LOW_RES_CHECKPOINT = "checkpoint_low_res.pt"


@dataclass
class CLIPTrainConfig:
    """Settings of a two-phase CLIPA run (defaults: the shipped ``cluttered-digits-crate-alpha-clipa``).

    Attributes:
        model: registry name of a CRATE-α-CLIPA preset (its ``image_size`` and ``context_length``
            are the full size of phase 2); ``model_overrides`` go to ``create_model``.
        samples_per_digit, data_seed, clutter: the :class:`~crate_edu.data.CaptionedDigits` splits
            (default 16 composites per digit, 21,245 training and 5,744 test images, and clutter 0:
            flat backgrounds in the crop's mean colour, no fragments; see the module docstring).
        train_limit: use only the first training images (None: all); ``eval_limit``: the first
            test images scored after each epoch (None: all 11,488).
        low_res_epochs: epochs of phase 1 (0: no low-resolution phase, the full-size baseline).
        low_res_image_size, low_res_context: phase 1's image side and text length.
        full_res_epochs: epochs of phase 2, at the model's own size (at least 1).
        batch_size: image–caption pairs per step (every other pair of the batch is a negative).
        lr, warmup_steps: phase 1's peak learning rate and linear warm-up (then cosine to 0).
        finetune_lr, finetune_warmup_steps: the same for phase 2 (a fresh schedule).
        weight_decay, betas, eps: AdamW, decay on the kernels only
            (:func:`crate_edu.train.optim.kernel_decay_groups`).
        grad_clip: max gradient norm (None: no clipping).
        seed: initialisation, shuffling and the captions' templates.
        threads: ``torch.set_num_threads`` during the run (None: leave as is).
        device: where the run trains.
    """

    model: str = "crate_alpha_clipa_digits"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    samples_per_digit: int = 16
    data_seed: int = 0
    clutter: float = 0.0
    train_limit: int | None = None
    eval_limit: int | None = 2000
    low_res_epochs: int = 5
    low_res_image_size: int = 16
    low_res_context: int = 8
    full_res_epochs: int = 1
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 100
    finetune_lr: float = 2.5e-4
    finetune_warmup_steps: int = 20
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    seed: int = 0
    threads: int | None = 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        counts = {"full_res_epochs": 1, "batch_size": 1, "samples_per_digit": 1, "low_res_epochs": 0}
        counts.update({"warmup_steps": 0, "finetune_warmup_steps": 0})
        for name, least in counts.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        for name in ("lr", "finetune_lr"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not (isinstance(self.weight_decay, int | float) and 0 <= self.weight_decay < math.inf):
            raise ValueError(f"weight_decay must be >= 0 (official CLIPA: 0.2), got {self.weight_decay!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(
                f"betas must be two numbers in [0, 1) (official CLIPA: (0.9, 0.95)), got {self.betas}"
            )
        for name in ("train_limit", "eval_limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None (all), got {value!r}")
        full = self.full_model_config()  # an unknown model or override fails here, in one line
        if not hasattr(full, "context_length"):
            raise ValueError(
                f"{self.model!r} is not an image–text model; choose crate_alpha_clipa_digits (or "
                "another crate_alpha_clipa_* preset)"
            )
        if self.low_res_epochs:
            self.phase_model_config(0)  # the low resolution must fit the patch, the context >= 2
            if self.low_res_image_size > full.image_size or self.low_res_context > full.context_length:
                raise ValueError(
                    f"the low-resolution phase must not be larger than the model: image "
                    f"{self.low_res_image_size} vs {full.image_size}, context {self.low_res_context} vs "
                    f"{full.context_length}; lower low_res_image_size / low_res_context"
                )

    def full_model_config(self):
        """The model's config at full size (phase 2)."""
        from crate_edu.models import model_config

        return model_config(self.model, **self.model_overrides)

    def phase_model_config(self, phase: int):
        """The model's config in ``phase`` (0: low resolution and short text; 1: full size)."""
        full = self.full_model_config()
        if phase == 1:
            return full
        if self.low_res_context < 2:
            raise ValueError(
                f"low_res_context must be >= 2 (the start token and a word), got {self.low_res_context}"
            )
        try:
            return replace(full, image_size=self.low_res_image_size, context_length=self.low_res_context)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"low_res_image_size {self.low_res_image_size}: {exc}") from None

    @property
    def phases(self) -> list[int]:
        """The phases this run has: ``[0, 1]``, or ``[1]`` without a low-resolution phase."""
        return [0, 1] if self.low_res_epochs else [1]

    def epochs_of(self, phase: int) -> int:
        return self.low_res_epochs if phase == 0 else self.full_res_epochs

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain JSON values (what the checkpoint and ``config.json`` store)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CLIPTrainConfig:
        return cls(**{**d, "betas": tuple(d["betas"])})


def quick_clip_config(**overrides: Any) -> CLIPTrainConfig:
    """A tiny two-phase run for notebooks' quick mode (well under a minute on one CPU thread):
    2 composites per digit (2,675 training images), a 1-layer image tower 64 wide, 4 epochs
    at 16 px then 1 at 32 px, batch 128; ``overrides`` replace any field."""
    base = dict(
        model_overrides={"vision_width": 64, "vision_depth": 1, "text_depth": 1},
        samples_per_digit=2,
        eval_limit=1000,
        low_res_epochs=4,
        full_res_epochs=1,
        batch_size=128,
        lr=2e-3,
        warmup_steps=5,
        finetune_lr=1e-3,
        finetune_warmup_steps=2,
    )
    return CLIPTrainConfig(**{**base, **overrides})


@dataclass
class CLIPRunResult:
    """What :func:`pretrain_clip` returns: the trained model (full size), one metrics dict per
    epoch, the training time (all phases) and the time of each phase."""

    model: nn.Module
    history: list[dict[str, Any]]
    train_time_s: float
    config: CLIPTrainConfig

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1]

    @property
    def phase_time_s(self) -> dict[str, float]:
        """Training seconds of each phase: ``{"low_res": …, "full_res": …}``."""
        out: dict[str, float] = {}
        before = 0.0
        for h in self.history:
            key = "low_res" if h["phase"] == 0 else "full_res"
            out[key] = out.get(key, 0.0) + h["time_s"] - before
            before = h["time_s"]
        return out


# --------------------------------------------------------------------------------------------
# Between the phases: the position embeddings at another number of tokens.
# --------------------------------------------------------------------------------------------


def resize_positional_embedding(pos: Tensor, num_tokens: int) -> Tensor:
    """The image tower's positions (N₁ + 1, W) at ``num_tokens`` = N₂ + 1 rows, as CLIPA does it.

    ``jax.image.resize(pos, (1, N₂ + 1, W), 'bilinear')`` on the whole (1, N₁ + 1, W) array
    (official ``merge_params``, common.py:614-621): linear interpolation along the **flattened**
    token axis, [CLS] included, with half-pixel centres. Row ``i`` of the result samples the old
    axis at ``s = (i + ½) (N₁ + 1) / (N₂ + 1) − ½`` (clamped to [0, N₁]) and mixes its two nearest
    rows ``⌊s⌋`` and ``⌊s⌋ + 1`` with weights ``1 − frac(s)`` and ``frac(s)``: what
    ``F.interpolate(mode='linear', align_corners=False)`` computes (for upsampling; downsampling
    would differ: jax antialiases, this does not).

    A 2-D grid resample (timm's ``resample_abs_pos_embed``, the usual ViT fine-tuning) would differ:
    it keeps the [CLS] row as it is, reshapes the N₁ patch rows into their √N₁ × √N₁ grid and
    resizes that image bilinearly to √N₂ × √N₂, so each new patch mixes its 2-D neighbours. The
    flattened resize instead mixes [CLS] into the first patches, treats the row-major grid as one
    line (a patch at the end of a grid row is blended with the first patch of the next row), and
    stretches the [CLS] slot itself. It is what the CRATE-α-CLIPA weights went through, so it is
    reproduced; fine-tuning repairs the difference.

    Args:
        pos: ``(N₁ + 1, W)``, [CLS] first.
        num_tokens: ``N₂ + 1``.

    Returns:
        ``(N₂ + 1, W)``, float32.
    """
    if pos.ndim != 2:
        raise ValueError(f"pos must be (N + 1, W) positions, got shape {tuple(pos.shape)}")
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    line = pos.detach().float().T[None]  # the token axis last, as a 1-D signal   (1, W, N₁ + 1)
    out = F.interpolate(line, size=num_tokens, mode="linear", align_corners=False)  # (1, W, N₂ + 1)
    return out[0].T.contiguous()  # (N₂ + 1, W)


def extend_text_positions(pos: Tensor, context_length: int) -> Tensor:
    """The text tower's positions (C₁, T) at C₂ ≥ C₁ rows: rows 0 … C₁ − 1 kept, each new row a
    copy of the old last row.

    The text tower pools the last position (C − 1, with no mask), so the new last row, the new
    pooling slot, starts as the slot that was pooled in phase 1; the rows between hold padding or
    the caption's later words, which phase 1 truncated away. (Not an official step: the CRATE-α
    CLIPA configs keep 32 tokens in both phases and load a frozen text tower.)
    """
    C1 = pos.shape[0]
    if context_length < C1:
        raise ValueError(f"context_length {context_length} is shorter than the positions' {C1}")
    extra = pos.detach()[-1:].expand(context_length - C1, -1)  # (C₂ − C₁, T)
    return torch.cat([pos.detach(), extra]).float().contiguous()  # (C₂, T)


def upsize_clip_model(low: nn.Module, full: nn.Module) -> nn.Module:
    """Load a phase-1 model's weights into the full-size ``full`` (in place, returned): the image
    positions resized (:func:`resize_positional_embedding`), the text positions extended
    (:func:`extend_text_positions`), every other tensor copied."""
    state = dict(low.state_dict())
    target = full.state_dict()
    state["visual.positional_embedding"] = resize_positional_embedding(
        state["visual.positional_embedding"], target["visual.positional_embedding"].shape[0]
    )
    state["positional_embedding"] = extend_text_positions(
        state["positional_embedding"], target["positional_embedding"].shape[0]
    )
    full.load_state_dict(state)
    return full


# --------------------------------------------------------------------------------------------
# Images at a phase's size, features, zero-shot scores.
# --------------------------------------------------------------------------------------------


def resize_images(images: Tensor, size: int) -> Tensor:
    """Normalised images (B, 3, S, S) at side ``size``: bilinear with antialiasing (CLIPA's
    ``resize``); unchanged when already that size."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@torch.no_grad()
def clip_image_features(
    model: nn.Module, data: Any, *, limit: int | None = None, batch_size: int = 256
) -> Tensor:
    """``model.encode_image`` of the first ``limit`` images of ``data`` at the model's image size:
    float32 ``(N, E)``, not normalised, on the CPU (the frozen features of the linear probe)."""
    size = model.config.image_size
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        feats = [
            model.encode_image(resize_images(x.to(device), size)).float().cpu()
            for x in iter_batches(data, batch_size, limit=limit)
        ]
    finally:
        model.train(was_training)
    return torch.cat(feats)


@torch.no_grad()
def zero_shot_scores(
    model: nn.Module,
    data: CaptionedDigits,
    *,
    templates: tuple[str, ...] = HELD_OUT_TEMPLATES,
    limit: int | None = None,
    features: Tensor | None = None,
) -> dict[str, float]:
    """Zero-shot accuracies of a CLIP model on captioned digits, with prompts it never trained on.

    The class embeddings are built from ``templates`` (default the held-out ones) by
    :func:`crate_edu.evaluation.class_embeddings`; each image is its nearest class.

    Returns:
        ``digit_acc``: 10 digit classes (prompts such as "a photo of the digit seven"), all images;
        ``digit_acc_seen_pairs`` / ``digit_acc_held_out_pairs``: the same on the images whose
        digit–colour combination was / was not in training; ``pair_acc_held_out_pairs``: the 90
        digit–colour classes ("a photo of the digit green two"), on the held-out combinations, whose
        names no training caption held; ``n``, ``n_held_out``: image counts. Chance is 0.1 and 1/90.
    """
    cfg = model.config
    tokenizer = CaptionTokenizer(cfg.context_length)
    was_training = model.training
    model.eval()
    try:
        W_digit = class_embeddings(model.encode_text, tokenizer, DIGIT_WORDS, templates, progress=False)
        W_pair = class_embeddings(model.encode_text, tokenizer, pair_classes(), templates, progress=False)
    finally:
        model.train(was_training)
    if features is None:
        features = clip_image_features(model, data, limit=limit)
    n = features.shape[0]
    digits = data.labels[:n]
    held = data.held_out[:n]
    pairs = data.pair_labels[:n]
    hit = zero_shot_logits(features, W_digit).argmax(-1) == digits  # (n,)
    pair_hit = zero_shot_logits(features[held], W_pair).argmax(-1) == pairs[held]

    def mean(x: Tensor) -> float:
        return float(x.float().mean()) if x.numel() else float("nan")

    return {
        "digit_acc": mean(hit),
        "digit_acc_seen_pairs": mean(hit[~held]),
        "digit_acc_held_out_pairs": mean(hit[held]),
        "pair_acc_held_out_pairs": mean(pair_hit),
        "n": int(n),
        "n_held_out": int(held.sum()),
    }


# --------------------------------------------------------------------------------------------
# The objective and its batches.
# --------------------------------------------------------------------------------------------


class CaptionBatches:
    """The training batches of one epoch: ``(images, tokens)`` on ``device``, at a phase's sizes.

    The first ``n`` items of a permutation of ``data`` in the order of ``(seed, epoch_offset +
    epoch)``, cut into batches of ``batch_size`` (the last may be smaller); each image gets a
    caption from a training template drawn from the same generator (a new wording every epoch),
    tokenized to ``context_length`` (truncated: CLIPA's shorter text) and the images resized to
    ``image_size`` (CLIPA's low resolution). A resumed run draws what an uninterrupted one drew.
    """

    def __init__(
        self,
        data: CaptionedDigits,
        n: int,
        batch_size: int,
        image_size: int,
        context_length: int,
        seed: int,
        device: torch.device,
        epoch_offset: int = 0,
    ) -> None:
        self.data, self.n, self.batch_size = data, n, batch_size
        self.image_size, self.seed, self.device = image_size, seed, device
        self.tokenizer = CaptionTokenizer(context_length)
        self.epoch_offset = epoch_offset
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        g = epoch_generator(self.seed, self.epoch_offset + self.epoch)
        order = torch.randperm(len(self.data), generator=g)[: self.n]  # (n,)
        templates = torch.randint(len(TRAIN_TEMPLATES), (self.n,), generator=g)  # (n,)
        for start in range(0, self.n, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = next(iter_batches(self.data, len(idx), order=idx))  # normalised   (B, 3, S, S)
            captions = [
                self.data.caption(int(i), int(t))
                for i, t in zip(idx, templates[start : start + len(idx)], strict=True)
            ]
            tokens = self.tokenizer(captions)  # (B, C)
            yield resize_images(x, self.image_size).to(self.device), tokens.to(self.device)


class ContrastiveCaptions:
    """The CLIP objective on captioned digits: symmetric InfoNCE with the learned temperature;
    scored by :func:`zero_shot_scores` on the test split (held-out prompts). Its history lines hold
    ``epoch`` (over both phases), ``phase`` (0: low resolution, 1: full size), ``image_size``,
    ``context_length``, ``step``, ``train_loss``, the zero-shot accuracies, ``logit_scale``,
    ``lr`` (after the epoch's last step), ``time_s`` and ``cpu_time_s`` (training steps so far)."""

    def __init__(self, cfg: CLIPTrainConfig, phase: int, epoch_offset: int, step_offset: int) -> None:
        self.cfg, self.phase = cfg, phase
        self.epoch_offset, self.step_offset = epoch_offset, step_offset

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, None]:
        images, tokens = batch  # (B, 3, s, s), (B, C)
        scale = model.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)  # exp(t), capped
        return contrastive_loss(model.encode_image(images), model.encode_text(tokens), scale), None

    def evaluate(self, run: Run, epoch: int) -> dict[str, float]:
        scores = zero_shot_scores(run.model, run.test_data, limit=self.cfg.eval_limit)
        return {k: v for k, v in scores.items() if k not in ("n", "n_held_out")}

    def record(self, run: Run, epoch: int, stats: EpochStats, test: dict[str, float]) -> dict[str, Any]:
        before = run.history[-1] if run.history else {}
        cfg = run.model.config
        return {
            "epoch": self.epoch_offset + epoch + 1,
            "phase": self.phase,
            "image_size": cfg.image_size,
            "context_length": cfg.context_length,
            "step": self.step_offset + run.step,
            "train_loss": stats.loss,
            **test,
            "logit_scale": float(run.model.logit_scale.detach().exp()),
            "lr": run.optimizer.param_groups[0]["lr"],
            "time_s": before.get("time_s", 0.0) + stats.seconds,
            "cpu_time_s": before.get("cpu_time_s", 0.0) + stats.cpu_seconds,
        }

    def checkpoint_extras(self, run: Run) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "train_time_s": run.history[-1]["time_s"],
            "config": self.cfg.to_dict(),
            "model_name": self.cfg.model,
            "model_overrides": dict(self.cfg.model_overrides),
            "model_config": asdict(run.model.config),
        }

    def diverged(self, run: Run, value: float, epoch: int, micro_step: int) -> TrainingDivergedError:
        step = self.step_offset + epoch * run.steps_per_epoch + micro_step + 1
        lr = self.cfg.lr if self.phase == 0 else self.cfg.finetune_lr
        return TrainingDivergedError(
            f"training diverged: the contrastive loss became {value} in phase {self.phase + 1} at step "
            f"{step}; the run stopped and the last checkpoint (if any) holds the last good epoch; start "
            f"again with a lower {'lr' if self.phase == 0 else 'finetune_lr'} (now {lr:g}) or a grad_clip"
        )

    def describe(self, record: dict[str, Any], epochs: int) -> str:
        r = record
        return (
            f"epoch {r['epoch']}/{self.cfg.low_res_epochs + self.cfg.full_res_epochs} "
            f"(phase {r['phase'] + 1}, {r['image_size']} px, "
            f"{r['context_length']} tokens)  step {r['step']}  train loss {r['train_loss']:.4f}  "
            f"zero-shot digits {r['digit_acc']:.3f} (held-out pairs {r['digit_acc_held_out_pairs']:.3f}, "
            f"90-way {r['pair_acc_held_out_pairs']:.3f})  scale {r['logit_scale']:.1f}  ({r['time_s']:.0f} s)"
        )


# --------------------------------------------------------------------------------------------
# Set-up and the entry point.
# --------------------------------------------------------------------------------------------


def build_clip_model(cfg: CLIPTrainConfig, phase: int = 1) -> nn.Module:
    """The model of ``cfg`` in ``phase`` (0: low resolution), initialised from ``cfg.seed``."""
    from crate_edu.models import CRATEAlphaCLIPA

    torch.manual_seed(cfg.seed)
    model_cfg = cfg.phase_model_config(phase)
    if not hasattr(model_cfg, "context_length"):
        raise ValueError(f"{cfg.model!r} is not an image–text model; choose a crate_alpha_clipa_* preset")
    return CRATEAlphaCLIPA(model_cfg)


def _datasets(cfg: CLIPTrainConfig) -> tuple[CaptionedDigits, CaptionedDigits]:
    size = cfg.full_model_config().image_size
    kw = dict(
        image_size=size, seed=cfg.data_seed, samples_per_digit=cfg.samples_per_digit, clutter=cfg.clutter
    )
    return CaptionedDigits("train", **kw), CaptionedDigits("test", **kw)


def _saved_state(folder: Path, cfg: CLIPTrainConfig, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to continue (None: start afresh); it must come from the same settings."""
    path = folder / CHECKPOINT_NAME
    if not (resume and path.is_file()):
        return None
    state = load_checkpoint(path)
    if state.get("config") != cfg.to_dict():
        raise ValueError(
            f"{path} was written by a run with other settings; resume with the same "
            "CLIPTrainConfig or pick a new out_dir"
        )
    return state


def _run_phase(
    cfg: CLIPTrainConfig,
    phase: int,
    model: nn.Module,
    data: tuple[CaptionedDigits, CaptionedDigits],
    folder: Path | None,
    state: dict[str, Any] | None,
    history: list[dict[str, Any]],
    log: Callable[[str], None] | None,
) -> Run:
    """One phase on the loop: its optimiser and schedule (restored from ``state`` when resuming
    inside it), its batches, then :func:`run_epochs`."""
    device = torch.device(cfg.device)
    train, test = data
    n_train = len(train) if cfg.train_limit is None else min(cfg.train_limit, len(train))
    if n_train == 0:
        raise ValueError("the training set is empty")
    steps_per_epoch = -(-n_train // cfg.batch_size)  # the last batch may be smaller
    epochs = cfg.epochs_of(phase)
    lr, warmup = (cfg.lr, cfg.warmup_steps) if phase == 0 else (cfg.finetune_lr, cfg.finetune_warmup_steps)
    model = model.to(device)
    optimizer = torch.optim.AdamW(
        kernel_decay_groups(model, cfg.weight_decay), lr=lr, betas=cfg.betas, eps=cfg.eps
    )
    scheduler = lr_schedule(optimizer, warmup, epochs * steps_per_epoch)
    start_epoch, saved_history = restore_state(state, model, optimizer, scheduler)
    history = saved_history if state is not None else history
    if folder is not None:
        start_run_folder(folder, json.dumps(cfg.to_dict(), indent=2) + "\n", history)
    epoch_offset = cfg.low_res_epochs if phase == 1 else 0
    step_offset = epoch_offset * steps_per_epoch
    mcfg = model.config
    batches = CaptionBatches(
        train, n_train, cfg.batch_size, mcfg.image_size, mcfg.context_length, cfg.seed, device, epoch_offset
    )
    run = Run(
        model, optimizer, scheduler, OneDevice(device, log), batches, test_data=test, epochs=epochs,
        steps_per_epoch=steps_per_epoch, grad_clip=cfg.grad_clip, out=folder, start_epoch=start_epoch,
        history=history,
    )  # fmt: skip
    run_epochs(run, ContrastiveCaptions(cfg, phase, epoch_offset, step_offset))
    return run


def _keep_low_res(folder: Path | None, state: dict[str, Any] | None) -> None:
    """Copy the checkpoint of the finished low-resolution phase to ``checkpoint_low_res.pt``."""
    if folder is None or (folder / LOW_RES_CHECKPOINT).is_file():
        return
    state = state if state is not None else load_checkpoint(folder / CHECKPOINT_NAME)
    save_checkpoint(state, folder / LOW_RES_CHECKPOINT)


def pretrain_clip(
    cfg: CLIPTrainConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    datasets: tuple[CaptionedDigits, CaptionedDigits] | None = None,
    log: Callable[[str], None] | None = print,
) -> CLIPRunResult:
    """Train a CRATE-α-CLIPA contrastively on captioned digits: the low-resolution phase, then the
    full-size fine-tuning (see the module docstring).

    Args:
        cfg: the run settings (:class:`CLIPTrainConfig`; ``low_res_epochs=0`` trains at full size
            only, the baseline the CLIPA trick is measured against).
        out_dir: run folder for ``checkpoint.pt``, ``metrics.jsonl`` and ``config.json`` (None: keep
            nothing on disk).
        resume: continue from ``out_dir/checkpoint.pt`` if it exists (its configuration must match).
        datasets: ``(train, test)`` :class:`~crate_edu.data.CaptionedDigits` to use instead of
            building them from ``cfg`` (tests, notebooks, benchmarks running several seeds).
        log: called with one line per epoch (None: silent).

    Returns:
        :class:`CLIPRunResult`; ``model`` at full size in eval mode; ``history[e]`` as
        :class:`ContrastiveCaptions` records it.

    Example::

        >>> from crate_edu.train import pretrain_clip, quick_clip_config
        >>> run = pretrain_clip(quick_clip_config(), log=None)     # doctest: +SKIP
        >>> run.final["digit_acc"], run.phase_time_s                # doctest: +SKIP
    """
    threads_before = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        data = datasets if datasets is not None else _datasets(cfg)
        folder = Path(out_dir) if out_dir is not None else None
        state = _saved_state(folder, cfg, resume) if folder is not None else None
        history: list[dict[str, Any]] = []
        model = None
        for phase in cfg.phases:
            saved = state if state is not None and state.get("phase") == phase else None
            done = state is not None and state.get("phase", -1) > phase
            if done:
                continue
            if saved is not None and int(saved["epoch"]) >= cfg.epochs_of(phase) and phase < cfg.phases[-1]:
                # the phase ended in the checkpoint: the next phase starts from its weights
                model = build_clip_model(cfg, phase)
                model.load_state_dict(saved["model"])
                history = [dict(h) for h in saved["history"]]
                _keep_low_res(folder, saved)
                continue
            if saved is not None:  # inside this phase: the weights come from the checkpoint
                model = build_clip_model(cfg, phase)
            elif phase == 1 and 0 in cfg.phases:  # the CLIPA switch: phase 1's weights, full size
                model = upsize_clip_model(model, build_clip_model(cfg, 1))
            else:
                model = build_clip_model(cfg, phase)
            run = _run_phase(cfg, phase, model, data, folder, saved, history, log)
            model, history = run.model, run.history
            if phase == 0:
                _keep_low_res(folder, None)
    finally:
        torch.set_num_threads(threads_before)
    train_time = history[-1]["time_s"] if history else 0.0
    return CLIPRunResult(model=model.eval(), history=history, train_time_s=train_time, config=cfg)


def pretrain_clip_quick(
    out_dir: str | Path | None = None, *, log: Callable[[str], None] | None = print, **overrides: Any
) -> CLIPRunResult:
    """The tiny CLIPA run of notebooks' quick mode: :func:`pretrain_clip` with
    :func:`quick_clip_config` (``overrides`` replace its fields). Well under a minute on one CPU
    thread: 36 s measured, 24 s of it training, on two cores shared by three jobs. It shows the
    mechanics (both phases, the token counts, the loss falling from 4.87 to 4.02 over its 105
    steps), not the learning: its zero-shot digit accuracy stays near chance (0.117), since the
    digits take off after about 300 steps of the full model. The trained result is the shipped
    ``crate_edu.load_tutorial_model("cluttered-digits-crate-alpha-clipa")``.

    Example::

        >>> from crate_edu.train import pretrain_clip_quick
        >>> run = pretrain_clip_quick(log=None)                    # doctest: +SKIP
        >>> [round(h["digit_acc"], 2) for h in run.history]         # doctest: +SKIP
    """
    return pretrain_clip(quick_clip_config(**overrides), out_dir, log=log)


def load_clip_run(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model (at the size of the phase it last trained in) and the checkpoint dict of a
    :func:`pretrain_clip` run folder or its ``checkpoint.pt``."""
    state = load_checkpoint(path)
    if "phase" not in state or "config" not in state or "history" not in state:
        raise ValueError(f"{path} is not a CLIP training checkpoint (written by pretrain_clip)")
    cfg = CLIPTrainConfig.from_dict(state["config"])
    model = build_clip_model(cfg, int(state["phase"]))
    model.load_state_dict(state["model"])
    return model.eval(), state
