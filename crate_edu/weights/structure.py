"""Structure of a state dict: which CRATE family it belongs to, what a model expects, how they differ.

``load_official`` and ``verify_checkpoint`` (``crate_edu.weights.official``) use this module to check
every key and shape of a file before loading it, to infer the ``create_model`` overrides a
fine-tuned file needs (``num_classes``, ``patch_size``, ``image_size``), and to say in one line
what to do when a file does not fit (``check_structure``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from crate_edu.models import create_model, list_models, model_config
from crate_edu.weights.reader import CheckpointError

__all__ = [
    "StructureReport",
    "check_structure",
    "compare_structure",
    "detect_family",
    "expected_shapes",
    "infer_overrides",
]


_FAMILY_TITLES = {
    "crate": "CRATE",
    "crate_alpha": "CRATE-α",
    "crate_alpha_clipa": "CRATE-α-CLIPA",
    "crate_mae": "CRATE-MAE",
    "crate_lm": "CRATE-LM",
    "gpt_lm": "GPT (CRATE-LM's baseline)",
}

# Official presets per family, in the order suggestions are tried.
_FAMILY_PRESETS = {
    "crate": ("crate_tiny", "crate_small", "crate_base", "crate_large"),
    "crate_alpha": ("crate_alpha_b16", "crate_alpha_l14"),
    "crate_alpha_clipa": ("crate_alpha_clipa_l14", "crate_alpha_clipa_h14"),
    "crate_mae": ("crate_mae_tiny", "crate_mae_small", "crate_mae_base", "crate_mae_large"),
    "crate_lm": ("crate_lm_12l", "crate_lm_char"),
    "gpt_lm": ("gpt_lm_12l", "gpt_lm_char"),
}

#: The language-model families: their sizes are read from the file (vocabulary and context) or
#: named in the hint (width, depth).
_LANGUAGE_FAMILIES = ("crate_lm", "gpt_lm")


@dataclass(frozen=True)
class _FamilySpec:
    head: str | None  # classifier weight (num_classes, dim)
    pos: str  # positional embedding (1, N + 1, dim)
    patch: str  # patch embedding weight, from which the patch size follows


_SPECS = {
    "crate": _FamilySpec("mlp_head.1.weight", "pos_embedding", "to_patch_embedding.1.weight"),
    "crate_alpha": _FamilySpec("mlp_head.1.weight", "pos_embedding", "conv1.weight"),
    "crate_mae": _FamilySpec("head.1.weight", "pos_embed", "patch_embed.proj.weight"),  # optional probe
}


def detect_family(keys: Any) -> str | None:
    """The CRATE family a state dict's keys belong to, from signature keys.

    ``conv1.weight`` → ``"crate_alpha"`` (the classifier); ``visual.conv1.weight`` with
    ``token_embedding.weight`` → ``"crate_alpha_clipa"`` (the image–text model);
    ``patch_embed.proj.weight`` with ``decoder_pred.*`` → ``"crate_mae"``;
    ``to_patch_embedding.1.weight`` → ``"crate"``; the language models' ``transformer.wte.weight``
    with ``transformer.h.0.ista.weight`` → ``"crate_lm"`` (CRATE-LM, either ISTA block) or with
    ``transformer.h.0.mlp.c_fc.weight`` → ``"gpt_lm"`` (its GPT baseline); otherwise None.
    """
    keys = set(keys)
    if "transformer.wte.weight" in keys:
        if "transformer.h.0.ista.weight" in keys:
            return "crate_lm"
        if "transformer.h.0.mlp.c_fc.weight" in keys:
            return "gpt_lm"
    if "visual.conv1.weight" in keys and "token_embedding.weight" in keys:
        return "crate_alpha_clipa"
    if "conv1.weight" in keys:
        return "crate_alpha"
    if "patch_embed.proj.weight" in keys and any(k.startswith("decoder_pred.") for k in keys):
        return "crate_mae"
    if "to_patch_embedding.1.weight" in keys:
        return "crate"
    return None


def _patch_size(family: str, shape: tuple[int, ...], channels: int = 3) -> int | None:
    """Patch size from the patch-embedding weight: the conv kernel, or sqrt(patch_dim / C) for CRATE."""
    if family == "crate":
        side = math.isqrt(shape[0] // channels) if shape and shape[0] % channels == 0 else 0
        return side if side * side * channels == shape[0] else None
    return shape[-1] if len(shape) == 4 else None


@lru_cache(maxsize=64)
def _expected_shapes_cached(name: str, overrides: tuple[tuple[str, Any], ...]) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = create_model(name, **dict(overrides))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def expected_shapes(name: str, **overrides: Any) -> dict[str, tuple[int, ...]]:
    """Every state-dict key and shape of ``create_model(name, **overrides)``.

    The model is built on the ``meta`` device, so no memory is spent on weights (CRATE-L costs
    nothing). Results are cached per (name, overrides).
    """
    return dict(_expected_shapes_cached(name, tuple(sorted(overrides.items()))))


@dataclass
class StructureReport:
    """How a state dict differs from what a model expects.

    Attributes:
        missing: keys the model has and the file lacks.
        unexpected: keys the file has and the model lacks.
        mismatched: ``{key: (expected shape, file shape)}`` for keys in both.
        num_expected: number of keys the model has.
    """

    missing: list[str]
    unexpected: list[str]
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]
    num_expected: int

    @property
    def keys_ok(self) -> bool:
        return not self.missing and not self.unexpected

    @property
    def shapes_ok(self) -> bool:
        return not self.mismatched

    @property
    def ok(self) -> bool:
        return self.keys_ok and self.shapes_ok

    def describe(self, limit: int = 5, sep: str = "\n") -> str:
        """Human-readable lines (joined by ``sep``): first ``limit`` missing / unexpected keys and
        shape mismatches."""
        lines = []
        if self.missing:
            lines.append(
                f"missing keys ({len(self.missing)} of {self.num_expected}): {_head(self.missing, limit)}"
            )
        if self.unexpected:
            lines.append(f"unexpected keys ({len(self.unexpected)}): {_head(self.unexpected, limit)}")
        if self.mismatched:
            items = list(self.mismatched.items())
            shown = "; ".join(f"{k}: expected {tuple(e)}, got {tuple(g)}" for k, (e, g) in items[:limit])
            more = f"; ... ({len(items) - limit} more)" if len(items) > limit else ""
            lines.append(f"shape mismatches ({len(items)}): {shown}{more}")
        return sep.join(lines) if lines else "all keys and shapes match"


def _head(keys: list[str], limit: int) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def compare_structure(
    expected: Mapping[str, tuple[int, ...]], state_dict: Mapping[str, Any]
) -> StructureReport:
    """Compare every key and shape of ``state_dict`` (tensors or shapes) with ``expected``."""

    def shape(v: Any) -> tuple[int, ...]:
        return tuple(v.shape) if hasattr(v, "shape") else tuple(v)

    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = {
        k: (tuple(expected[k]), shape(v))
        for k, v in state_dict.items()
        if k in expected and shape(v) != tuple(expected[k])
    }
    return StructureReport(missing, unexpected, mismatched, len(expected))


def infer_overrides(name: str, state_dict: Mapping[str, Any], **base_overrides: Any) -> dict[str, Any]:
    """``create_model`` overrides that make ``name`` fit the file: num_classes, patch_size, image_size.

    Read from the classifier weight (num_classes), the patch-embedding weight (patch size) and the
    positional-embedding length N + 1 (image size = sqrt(N) · patch, when N is a square); for a
    language model, ``vocab_size`` and ``block_size`` from the rows of ``transformer.wte`` and
    ``transformer.wpe``. Only values that differ from the preset (with ``base_overrides``) are
    returned; nothing is inferred when the file belongs to another family.
    """
    expected = expected_shapes(name, **base_overrides)
    family = detect_family(expected)
    if family in _LANGUAGE_FAMILIES and detect_family(state_dict) == family:
        return _infer_language_sizes(expected, state_dict)
    if family not in _SPECS or detect_family(state_dict) != family:  # (CLIPA: nothing to infer)
        return {}
    spec = _SPECS[family]
    channels = getattr(model_config(name, **base_overrides), "channels", 3)

    def shape(key: str) -> tuple[int, ...] | None:
        v = state_dict.get(key)
        return None if v is None else (tuple(v.shape) if hasattr(v, "shape") else tuple(v))

    out: dict[str, Any] = {}
    got = shape(spec.head) if spec.head else None
    if got is not None and len(got) == 2 and (spec.head not in expected or got[0] != expected[spec.head][0]):
        out["num_classes"] = got[0]  # (the CRATE-MAE probe head is optional: absent means 0 classes)
    patch_exp = _patch_size(family, expected[spec.patch], channels) if spec.patch in expected else None
    patch = patch_exp
    if (
        (got := shape(spec.patch)) is not None
        and (p := _patch_size(family, got, channels))
        and p != patch_exp
    ):
        out["patch_size"] = patch = p
    if spec.pos in expected and (got := shape(spec.pos)) is not None and len(got) == 3 and patch:
        grid, grid_exp = math.isqrt(got[1] - 1), math.isqrt(expected[spec.pos][1] - 1)
        if grid * grid == got[1] - 1 and grid > 0 and (grid * patch != grid_exp * (patch_exp or 0)):
            out["image_size"] = grid * patch
    return out


def _infer_language_sizes(
    expected: Mapping[str, tuple[int, ...]], state_dict: Mapping[str, Any]
) -> dict[str, Any]:
    """``vocab_size`` / ``block_size`` of a language-model file where they differ from ``expected``."""
    out: dict[str, Any] = {}
    for key, field in (("transformer.wte.weight", "vocab_size"), ("transformer.wpe.weight", "block_size")):
        v = state_dict.get(key)
        got = None if v is None else (tuple(v.shape) if hasattr(v, "shape") else tuple(v))
        if got is not None and len(got) == 2 and got[1] == expected[key][1] and got[0] != expected[key][0]:
            out[field] = got[0]
    return out


def _fits(name: str, state_dict: Mapping[str, Any]) -> bool:
    try:
        overrides = infer_overrides(name, state_dict)
        return compare_structure(expected_shapes(name, **overrides), state_dict).ok
    except Exception:  # a preset that cannot be built with these overrides does not fit
        return False


def _suggest(family: str | None, state_dict: Mapping[str, Any], exclude: str | None = None) -> str | None:
    """The first official preset of ``family`` that the file fits exactly (after inference)."""
    if family is None:
        return None
    known = set(list_models())
    for preset in _FAMILY_PRESETS[family]:
        if preset != exclude and preset in known and _fits(preset, state_dict):
            return preset
    return None


def _hint(name: str, model_family: str | None, state_dict: Mapping[str, Any], report: StructureReport) -> str:
    """What to do about a structural mismatch."""
    file_family = detect_family(state_dict)
    if file_family is None:
        return (
            "the keys do not look like an official CRATE, CRATE-α, CRATE-α-CLIPA, CRATE-MAE or CRATE-LM "
            f"state dict (first keys: {', '.join(list(state_dict)[:4])}); check that this is the right file"
        )
    title = _FAMILY_TITLES[file_family]
    if file_family != model_family:
        preset = _suggest(file_family, state_dict)
        choice = f"name={preset!r}" if preset else f"one of {list(_FAMILY_PRESETS[file_family])}"
        return f"this looks like a {title} checkpoint; use {choice}"
    preset = _suggest(file_family, state_dict, exclude=name)
    if preset is not None:
        return f"the file's keys and shapes match the {title} preset {preset!r}; use name={preset!r}"
    if report.missing and not report.unexpected and not report.mismatched:
        return (
            "the file lacks parameters: it is incomplete (re-download it) or a partial checkpoint; "
            "pass strict=False to load what is there (missing parameters keep their initial values)"
        )
    return (
        f"the file is a differently configured {title} model{_describe_width_depth(state_dict)}; pass "
        "the matching overrides (dim, depth, heads, ...) to load_official, or use the right name"
    )


def _describe_width_depth(state_dict: Mapping[str, Any]) -> str:
    """`` (width dim=64, depth=2)`` read from the file, to help choose overrides; empty if unclear."""
    wte = state_dict.get("transformer.wte.weight")
    if wte is not None:  # a language model: width from the embedding, depth from transformer.h.{i}
        width = (tuple(wte.shape) if hasattr(wte, "shape") else tuple(wte))[-1]
        layers = {m.group(1) for k in state_dict if (m := re.match(r"transformer\.h\.(\d+)\.", k))}
        return f" (width dim={width}, depth={len(layers)})"
    cls = state_dict.get("cls_token")
    if cls is None:
        return ""
    width = (tuple(cls.shape) if hasattr(cls, "shape") else tuple(cls))[-1]
    layers = {
        m.group(1) for k in state_dict if (m := re.match(r"(?:transformer\.layers|blocks)\.(\d+)\.", k))
    }
    decoder = {m.group(1) for k in state_dict if (m := re.match(r"decoder_blocks\.(\d+)\.", k))}
    text = f" (width dim={width}, depth={len(layers)}"
    return text + (f", decoder_depth={len(decoder)})" if decoder else ")")


def check_structure(
    name: str, state_dict: Mapping[str, Any], path: Path, overrides: Mapping[str, Any], strict: bool
) -> StructureReport:
    """Raise ``CheckpointError`` unless ``state_dict`` fits ``create_model(name, **overrides)``.

    With ``strict=False`` missing and unexpected keys pass (the report lists them); mismatched
    shapes never do. The error names the file ``path``, the differences and what to do.
    """
    try:
        expected = expected_shapes(name, **overrides)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: could not build {name!r} with the overrides {dict(overrides)} "
            f"(inferred from the file or given): {exc}"
        ) from exc
    report = compare_structure(expected, state_dict)
    if report.ok or (not strict and report.shapes_ok):
        return report
    family = detect_family(expected)
    with_ov = f" with overrides {dict(overrides)}" if overrides else ""
    raise CheckpointError(
        f"{path} does not fit model {name!r}{with_ov}: {report.describe(sep='; ')}; "
        f"what to do: {_hint(name, family, state_dict, report)}"
    )
