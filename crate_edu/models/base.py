"""Pieces shared by every model: input checks with helpful errors and the classifier interface."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn

from crate_edu.models.blocks import LayerTrace

__all__ = [
    "pair",
    "check_positive_int",
    "check_float",
    "check_geometry",
    "check_model_sizes",
    "check_ista",
    "check_images",
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
    literal: bool = False  # derivation-literal arithmetic instead of the fast path

    def __post_init__(self):
        check_geometry(self.image_size, self.patch_size, self.dim, self.heads, self.dim_head, self.pool)
        check_model_sizes(self, ("depth", "num_classes", "channels"))
        check_float("dropout", self.dropout, 0.0, 1.0)
        check_float("emb_dropout", self.emb_dropout, 0.0, 1.0)
        if not isinstance(self.literal, bool):
            raise TypeError(f"literal must be True or False, got {self.literal!r}")

    @property
    def head_dim(self) -> int:
        return self.dim_head if self.dim_head is not None else self.dim // self.heads

    @property
    def num_patches(self) -> int:
        (ih, iw), (ph, pw) = pair(self.image_size), pair(self.patch_size)
        return (ih // ph) * (iw // pw)


class ImageClassifier(nn.Module):
    """The interface shared by CRATE, CRATE-α and the ViT baseline.

    Subclasses define ``embed`` (images -> tokens with [CLS] first), ``transformer`` (with a
    ``layers`` list), ``mlp_head`` (LayerNorm, Linear), ``cls_token``, ``pos_embedding`` and
    ``dropout``, and set ``self.config``.

    - ``forward(img)`` -> logits (B, num_classes); with ``pool='cls'`` the fast path's last layer
      computes only the [CLS] row (``prune_last_layer``, exact)
    - ``forward_features(img)`` -> tokens after the last layer (B, N + 1, d)
    - ``forward_head(tokens)`` -> logits, pooling by ``config.pool``
    - ``forward_intermediates(img)`` -> (logits, [LayerTrace per layer]): per-head projections,
      attention maps, Z^{ℓ+½} and Z^{ℓ+1}, with no hooks
    - ``reset_classifier(num_classes)`` replaces the head (fine-tuning)
    """

    config: object
    transformer: nn.Module
    mlp_head: nn.Sequential

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

    def forward_features(self, img: Tensor) -> Tensor:
        return self.transformer(self.embed(img))  # (B, N + 1, d)

    def pool(self, tokens: Tensor) -> Tensor:
        """(B, N + 1, d) -> (B, d): the [CLS] token, or the mean over all tokens."""
        return tokens.mean(dim=1) if self.config.pool == "mean" else tokens[:, 0]

    def forward_head(self, tokens: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pool(tokens)
        return x if pre_logits else self.mlp_head(x)

    def forward(self, img: Tensor) -> Tensor:
        """Images (B, C, H, W) -> logits (B, num_classes).

        On the fast path with ``pool='cls'``, the last layer computes only the [CLS] token's
        output, the one row the head reads (``Transformer.forward(x, rows=1)``). This is exact:
        the [CLS] token still attends to every token, and everything after the attention
        (residual, LayerNorm, ISTA or MLP) is token-wise, so the other N rows of the last layer
        would be computed and dropped (and, in training, back-propagated as zeros). The
        derivation-literal path (``set_literal``) and ``prune_last_layer = False`` compute every
        row, as the official code does.
        """
        if self.prunes_last_layer():
            return self.mlp_head(self.transformer(self.embed(img), rows=1)[:, 0])  # (B, num_classes)
        return self.forward_head(self.forward_features(img))  # (B, num_classes)

    #: Whether ``forward`` may compute only the [CLS] row of the last layer (see ``forward``).
    prune_last_layer: bool = True

    def prunes_last_layer(self) -> bool:
        """True when ``forward`` computes only the [CLS] row of the last layer: ``pool='cls'``,
        ``prune_last_layer`` set, and the last layer on the fast path (no block ``literal``)."""
        if not (self.prune_last_layer and self.config.pool == "cls"):
            return False
        last = self.transformer.layers[-1]
        return hasattr(last, "forward_rows") and not any(getattr(m, "literal", False) for m in last.modules())

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
