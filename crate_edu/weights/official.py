"""Official CRATE, CRATE-α and CRATE-MAE checkpoints: read, check, load and download them.

The models in ``crate_edu.models`` use the official parameter names (DESIGN.md §3), so an official
state dict loads with ``model.load_state_dict`` unchanged. This module adds what stands between a
file on disk and that call:

``load_official(name, path)``
    Reads the file without unpickling arbitrary objects (``torch.load(weights_only=True)``, or
    safetensors), unwraps the official containers (``{'state_dict': ...}``, the MAE codebase's
    ``{'model': ...}``, a ``module.`` prefix from ``DataParallel``), infers ``num_classes``,
    ``patch_size`` and ``image_size`` from the tensor shapes (so a fine-tuned CIFAR-10 CRATE-S
    loads), checks every key and shape, and returns the model in ``eval()`` mode.
``verify_checkpoint(name, path)``
    The same structural check, plus the file's sha256, as a report dict (for ``crate-edu fetch``).
``list_official()`` / ``download_official(key)``
    A small registry of where the published weights live (Google Drive, the Hugging Face hub),
    and a download into a cache (``$CRATE_EDU_CACHE`` or ``~/.cache/crate_edu/weights``) that
    checks the file before moving it into place.

Errors say what is wrong and what to do: ``CheckpointError`` (a ``ValueError``) for a file that is
not the expected checkpoint, ``WeightsUnavailableError`` when the weights cannot be downloaded
(offline, dead link, never published); its message gives the URL and the exact cache path to put
a hand-downloaded copy at.

Example::

    import crate_edu
    model = crate_edu.load_official("crate_small", "CRATE_small.pth")   # any local copy
    path = crate_edu.download_official("crate_alpha_b16_in1k")          # needs the internet
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import pickle
import re
import shutil
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "CheckpointError",
    "WeightsUnavailableError",
    "OfficialWeights",
    "OFFICIAL_WEIGHTS",
    "StructureReport",
    "list_official",
    "get_official",
    "default_cache_dir",
    "cache_path",
    "read_checkpoint_file",
    "read_state_dict",
    "detect_family",
    "expected_shapes",
    "compare_structure",
    "infer_overrides",
    "load_official",
    "verify_checkpoint",
    "download_official",
    "sha256sum",
]

PathLike = str | os.PathLike


class CheckpointError(ValueError):
    """A file is not a checkpoint of the requested model (unreadable, wrong keys or shapes)."""


class WeightsUnavailableError(RuntimeError):
    """Published weights cannot be obtained automatically (offline, dead link, never published)."""


# --------------------------------------------------------------------------------------------------
# Where the published weights live (DESIGN.md §3). Checksums are not published upstream: ``sha256``
# stays None until someone records the hash of a verified download (``verify_checkpoint`` prints it).
# --------------------------------------------------------------------------------------------------

_GDRIVE_URL = "https://drive.google.com/file/d/{id}/view"
_HF_URL = "https://huggingface.co/{repo}/blob/main/{filename}"


@dataclass(frozen=True)
class OfficialWeights:
    """One published checkpoint and where it lives.

    Attributes:
        key: registry key, e.g. ``"crate_alpha_b16_in1k"``.
        model: the ``crate_edu`` model name the file loads into, or None when this package has no
            model with the file's structure (e.g. the CRATE-α CLIPA image–text models).
        source: ``"gdrive"``, ``"hf"`` or None (never published).
        file_id: Google Drive file id (``source == "gdrive"``).
        repo_id: Hugging Face hub repository (``source == "hf"``).
        filename: file path inside the hub repository (``source == "hf"``).
        top1: the reported accuracy in percent (see ``metric``), or None.
        metric: what ``top1`` measures.
        sha256: hex digest of the published file; None where nobody has recorded it yet.
        overrides: ``create_model`` overrides the file was trained with (empty for the presets).
        notes: caveats (dead links, what the file contains).
    """

    key: str
    model: str | None
    source: str | None
    file_id: str | None = None
    repo_id: str | None = None
    filename: str | None = None
    top1: float | None = None
    metric: str = ""
    sha256: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def url(self) -> str | None:
        """A page a person can open in a browser to download the file (None if unpublished)."""
        if self.source == "gdrive":
            return _GDRIVE_URL.format(id=self.file_id)
        if self.source == "hf":
            return _HF_URL.format(repo=self.repo_id, filename=self.filename)
        return None

    @property
    def cache_name(self) -> str:
        """The file name used in the cache directory: ``<key>.pth``."""
        suffix = Path(self.filename).suffix if self.filename else ".pth"
        return f"{self.key}{suffix or '.pth'}"

    @property
    def loadable(self) -> bool:
        """Whether ``load_official`` can build a model for this file."""
        return self.model is not None and self.source is not None


_IN1K = "ImageNet-1K top-1 (%)"
_HF_REPO = "UCSC-VLAA/CRATE-alpha"

OFFICIAL_WEIGHTS: dict[str, OfficialWeights] = {
    w.key: w
    for w in [
        OfficialWeights(
            "crate_tiny_in1k",
            "crate_tiny",
            None,
            top1=66.7,
            metric=_IN1K,
            notes="never published by the authors; train it yourself (notebooks/) or use crate_small",
        ),
        OfficialWeights(
            "crate_small_in1k",
            "crate_small",
            "gdrive",
            file_id="1hYgDJl4EKHYfKprwhEjmWmWHuxnK6_h8",
            top1=69.2,
            metric=_IN1K,
            notes="the Drive link is reported dead since April 2025 (official CRATE repo, issue #30); "
            "if you have a copy, load it with crate_edu.load_official('crate_small', path)",
        ),
        OfficialWeights(
            "crate_base_in1k",
            "crate_base",
            None,
            top1=70.8,
            metric=_IN1K,
            notes="never published by the authors",
        ),
        OfficialWeights(
            "crate_large_in1k",
            "crate_large",
            None,
            top1=71.3,
            metric=_IN1K,
            notes="never published by the authors",
        ),
        OfficialWeights(
            "crate_mae_base_in1k",
            "crate_mae_base",
            "gdrive",
            file_id="11i5BMwymqOsunq44WD3omN5mS6ZREQPO",
            metric="masked-autoencoder pre-training (no classification head)",
            notes="CRATE-MAE-Base encoder + decoder; the MAE codebase may wrap it as {'model': ...}",
        ),
        OfficialWeights(
            "crate_alpha_b16_in1k",
            "crate_alpha_b16",
            "hf",
            repo_id=_HF_REPO,
            filename="torch/crate_alpha_B16.pth",
            top1=81.2,
            metric="ImageNet-1K top-1 (%), ImageNet-21K pre-training + ImageNet-1K fine-tuning",
            notes="plain state dict from the official torch_inference code",
        ),
        OfficialWeights(
            "crate_alpha_l14_in1k",
            "crate_alpha_l14",
            "hf",
            repo_id=_HF_REPO,
            filename="torch/crate_alpha_L14.pth",
            top1=83.9,
            metric="ImageNet-1K top-1 (%), ImageNet-21K pre-training + ImageNet-1K fine-tuning",
            notes="plain state dict from the official torch_inference code",
        ),
        OfficialWeights(
            "crate_alpha_clipa_l14",
            None,
            "hf",
            repo_id=_HF_REPO,
            filename="torch/crate_alpha_CLIPA_L14.pth",
            top1=69.8,
            metric="ImageNet-1K zero-shot top-1 (%)",
            notes="CLIPA image-text model: downloadable, but NOT loadable by this package's classifier "
            "(different structure: no classification head, plus a text tower)",
        ),
        OfficialWeights(
            "crate_alpha_clipa_h14",
            None,
            "hf",
            repo_id=_HF_REPO,
            filename="torch/crate_alpha_CLIPA_H14.pth",
            top1=72.3,
            metric="ImageNet-1K zero-shot top-1 (%)",
            notes="CLIPA image-text model: downloadable, but NOT loadable by this package's classifier "
            "(different structure: no classification head, plus a text tower)",
        ),
    ]
}


def list_official() -> list[OfficialWeights]:
    """Every registry entry (published or not), in registry order."""
    return list(OFFICIAL_WEIGHTS.values())


def get_official(key: str) -> OfficialWeights:
    """The registry entry for ``key``; a model name with exactly one entry is accepted too.

    Raises:
        ValueError: unknown key, with the list of known keys.
    """
    if key in OFFICIAL_WEIGHTS:
        return OFFICIAL_WEIGHTS[key]
    matches = [w for w in OFFICIAL_WEIGHTS.values() if w.model == key]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(
        f"no official weights named {key!r}; known keys: {', '.join(OFFICIAL_WEIGHTS)} "
        "(see crate_edu.list_official())"
    )


def default_cache_dir() -> Path:
    """``$CRATE_EDU_CACHE`` if set, else ``~/.cache/crate_edu/weights``."""
    env = os.environ.get("CRATE_EDU_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "crate_edu" / "weights"


def cache_path(key: str, cache_dir: PathLike | None = None) -> Path:
    """Where ``download_official(key)`` keeps the file (and where to put a hand-downloaded copy)."""
    entry = get_official(key)
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / entry.cache_name


def sha256sum(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Reading a file into a state dict, safely.
# --------------------------------------------------------------------------------------------------

# Only argparse.Namespace is added to torch's weights_only allowlist: the MAE codebase stores its
# command-line arguments as ``'args'`` next to ``'model'``, and rebuilding a Namespace only sets
# attributes. Any other Python object in a file is refused.
_EXTRA_SAFE_GLOBALS = [argparse.Namespace]

# Wrapper keys of official and common training checkpoints, in the order they are tried.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")

# Prefixes added by DataParallel / DistributedDataParallel and torch.compile.
_PREFIXES = ("module.", "_orig_mod.")


def _reread_hint(path: Path) -> str:
    return "re-download the file (it may be truncated or corrupt) or check that it is a checkpoint"


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < header_len < path.stat().st_size


def _torch_load(path: Path, map_location: Any, mmap: bool = False) -> Any:
    kw: dict[str, Any] = {"map_location": map_location, "weights_only": True}
    if mmap and zipfile.is_zipfile(path):  # only the zip format can be memory-mapped, not legacy files
        kw["mmap"] = True
    with torch.serialization.safe_globals(_EXTRA_SAFE_GLOBALS):
        return torch.load(path, **kw)


def read_checkpoint_file(
    path: PathLike, map_location: Any = "cpu", *, mmap: bool = False, hint: str | None = None
) -> Any:
    """Read a file written by ``torch.save`` (zip or legacy format) or safetensors, running no code.

    The one reader behind ``load_official``, ``crate-edu eval``, ``--resume``, ``--pretrained`` and
    ``export``: ``torch.load(weights_only=True)`` (plus ``argparse.Namespace``, for the MAE
    codebase's ``'args'``) or ``safetensors``. Every failure is one :class:`CheckpointError` line
    saying what the file is (truncated, HTML, random bytes, a pickle needing code, ...) and what to do.

    Args:
        path: the file.
        map_location: where tensors go (a device string for safetensors).
        mmap: memory-map a zip-format torch file instead of reading it into memory (large files
            read once); legacy-format files cannot be mapped and are read as usual.
        hint: what to do about an unreadable file (default: re-download it).

    Returns:
        What the file holds: for safetensors a dict of tensors, for torch files any plain object.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: anything else that stops the file being read.
    """
    path = Path(path).expanduser()
    todo = hint or _reread_hint(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such file; give the path of a downloaded checkpoint, or fetch a published one "
            "with crate_edu.download_official(key) (keys: crate_edu.list_official())"
        )
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; give the path of the checkpoint file inside it")
    try:
        is_safetensors = _is_safetensors(path)
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read ({_os_error(exc)}); check its permissions") from exc
    if is_safetensors:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        device = str(map_location) if isinstance(map_location, str | torch.device) else "cpu"
        try:
            return load_file(str(path), device=device)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({_first_line(exc)}); {todo}"
            ) from exc
    if head.lstrip()[:1] == b"<":
        raise CheckpointError(
            f"{path} is an HTML page, not a checkpoint (a download link that is dead, private or over "
            "its quota returns one); download the file again from its page in a browser"
        )
    kind = _torch_kind(head)
    if kind is None:
        raise CheckpointError(f"{path} {_not_torch(head)}, not a PyTorch checkpoint; {todo}")
    try:
        return _torch_load(path, map_location, mmap)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found or "Unsupported global" in str(exc):
            culprit = found.group(1) if found else "a Python object"
            raise CheckpointError(
                f"{path} is not a plain tensor checkpoint: it stores a Python object ({culprit}) that "
                "loading would have to execute, and crate_edu loads only tensors "
                "(torch.load(weights_only=True)). If you trust the file, convert it once: "
                "obj = torch.load(path, map_location='cpu', weights_only=False); keep its tensors "
                "(obj['state_dict'] or obj['model'] for a wrapped checkpoint) and "
                "torch.save({k: v for k, v in sd.items() if torch.is_tensor(v)}, 'converted.pth'), "
                "then load 'converted.pth' instead"
            ) from exc
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
        why = detail.group(1).strip() if detail else _first_line(exc)
        raise CheckpointError(f"{path} is a damaged {kind} ({why}); {todo}") from exc
    except EOFError as exc:
        raise CheckpointError(f"{path} is a truncated {kind} (the file ends early); {todo}") from exc
    except (RuntimeError, OSError, ValueError, zipfile.BadZipFile, KeyError, TypeError, AttributeError,
            IndexError, UnicodeDecodeError, struct.error, MemoryError) as exc:  # fmt: skip
        why = "" if isinstance(exc, OSError) else f" ({_first_line(exc).split('. ')[0]})"
        raise CheckpointError(f"{path} is a damaged or truncated {kind}{why}; {todo}") from exc


def _torch_kind(head: bytes) -> str | None:
    """What kind of ``torch.save`` file ``head`` (its first bytes) starts, or None if neither."""
    if head.startswith(b"PK\x03\x04"):
        return "PyTorch checkpoint (zip format)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # a pickle: the legacy format
        return "PyTorch checkpoint (legacy format)"
    return None


def _not_torch(head: bytes) -> str:
    """What a file that is not a torch file looks like, from its first bytes."""
    if not head:
        return "is empty"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        snippet = " ".join(text.split())[:24]
        return f"is a text file (it begins {snippet!r})"
    return f"holds unrecognised bytes (it begins {head[:8].hex(' ')})"


def _os_error(exc: OSError) -> str:
    return exc.strerror or _first_line(exc)


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its class name."""
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split())[:200] if text else type(exc).__name__


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(torch.is_tensor(v) for v in obj.values())


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    """Find the state dict inside a checkpoint object (plain, ``{'state_dict'}``, ``{'model'}``, ...)."""
    seen = obj
    for _ in range(3):  # wrappers are at most a couple of levels deep
        if _is_tensor_dict(seen):
            return dict(seen)
        if not isinstance(seen, Mapping):
            break
        inner = next((seen[k] for k in _WRAPPER_KEYS if isinstance(seen.get(k), Mapping)), None)
        if inner is None:
            break
        seen = inner
    if isinstance(seen, Mapping):
        non_tensor = [k for k, v in seen.items() if not torch.is_tensor(v)][:5]
        raise CheckpointError(
            f"{path} holds a dict with keys {list(seen)[:8]} but no state dict: none of "
            f"{list(_WRAPPER_KEYS)} leads to a dict of tensors (non-tensor entries: {non_tensor}); "
            "save the model's state_dict() (a dict of tensors) and load that file"
        )
    raise CheckpointError(
        f"{path} holds a {type(seen).__name__}, not a state dict; save model.state_dict() and load that"
    )


def _strip_prefixes(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if state_dict and all(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
                changed = True
    return state_dict


def read_state_dict(path: PathLike, map_location: Any = "cpu") -> dict[str, Tensor]:
    """Read a checkpoint file into a plain state dict with the official key names.

    Accepts ``.pth``/``.pt`` files saved by ``torch.save`` (zip or legacy format) holding a state
    dict directly or under ``'state_dict'`` / ``'model'`` (also nested), keys with or without the
    ``module.`` prefix, and ``.safetensors`` files. Nothing but tensors and plain containers is
    unpickled (``weights_only=True``; ``argparse.Namespace`` is also allowed, for the MAE
    codebase's ``'args'`` entry).

    Args:
        path: the file.
        map_location: passed to ``torch.load`` (a device string for safetensors).

    Returns:
        ``{key: tensor}``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, truncated, HTML, needs unpickling of objects, or no state dict.
    """
    path = Path(path).expanduser()
    return _strip_prefixes(_unwrap(read_checkpoint_file(path, map_location), path))


# --------------------------------------------------------------------------------------------------
# Structure: which family a state dict belongs to, what a model expects, and how they differ.
# --------------------------------------------------------------------------------------------------

_FAMILY_TITLES = {"crate": "CRATE", "crate_alpha": "CRATE-α", "crate_mae": "CRATE-MAE"}

# Official presets per family, in the order suggestions are tried.
_FAMILY_PRESETS = {
    "crate": ("crate_tiny", "crate_small", "crate_base", "crate_large"),
    "crate_alpha": ("crate_alpha_b16", "crate_alpha_l14"),
    "crate_mae": ("crate_mae_tiny", "crate_mae_small", "crate_mae_base", "crate_mae_large"),
}


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

    ``conv1.weight`` → ``"crate_alpha"``; ``patch_embed.proj.weight`` with ``decoder_pred.*`` →
    ``"crate_mae"``; ``to_patch_embedding.1.weight`` → ``"crate"``; otherwise None.
    """
    keys = set(keys)
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


def _registry() -> Any:
    from crate_edu.models import registry

    return registry


@lru_cache(maxsize=64)
def _expected_shapes_cached(name: str, overrides: tuple[tuple[str, Any], ...]) -> dict[str, tuple[int, ...]]:
    registry = _registry()
    with torch.device("meta"):
        model = registry.create_model(name, **dict(overrides))
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
    positional-embedding length N + 1 (image size = sqrt(N) · patch, when N is a square). Only values
    that differ from the preset (with ``base_overrides``) are returned; nothing is inferred when the
    file belongs to another family.
    """
    expected = expected_shapes(name, **base_overrides)
    family = detect_family(expected)
    if family is None or detect_family(state_dict) != family:
        return {}
    spec = _SPECS[family]
    channels = getattr(_registry().model_config(name, **base_overrides), "channels", 3)

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
    known = set(_registry().list_models())
    for preset in _FAMILY_PRESETS[family]:
        if preset != exclude and preset in known and _fits(preset, state_dict):
            return preset
    return None


def _hint(name: str, model_family: str | None, state_dict: Mapping[str, Any], report: StructureReport) -> str:
    """What to do about a structural mismatch."""
    file_family = detect_family(state_dict)
    if file_family is None:
        return (
            "the keys do not look like an official CRATE, CRATE-α or CRATE-MAE state dict "
            f"(first keys: {', '.join(list(state_dict)[:4])}); check that this is the right file"
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


def _check(
    name: str, state_dict: Mapping[str, Any], path: Path, overrides: Mapping[str, Any], strict: bool
) -> StructureReport:
    """Raise ``CheckpointError`` unless ``state_dict`` fits ``create_model(name, **overrides)``."""
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


def _resolve(name: str) -> tuple[str, dict[str, Any], OfficialWeights | None]:
    """(model name, base overrides, registry entry) for a model name or an official-weights key."""
    if name in OFFICIAL_WEIGHTS:
        entry = OFFICIAL_WEIGHTS[name]
        if entry.model is None:
            raise ValueError(f"{name!r} cannot be loaded by crate_edu: {entry.notes}")
        return entry.model, dict(entry.overrides), entry
    known = _registry().list_models()
    if name not in known:
        raise ValueError(
            f"unknown model {name!r}; choose one of {', '.join(known)} "
            f"or an official-weights key ({', '.join(OFFICIAL_WEIGHTS)})"
        )
    entries = [w for w in OFFICIAL_WEIGHTS.values() if w.model == name]
    return name, {}, entries[0] if len(entries) == 1 else None


# --------------------------------------------------------------------------------------------------
# Loading and verifying.
# --------------------------------------------------------------------------------------------------


def load_official(
    name: str,
    path: PathLike | None = None,
    *,
    strict: bool = True,
    map_location: Any = "cpu",
    **overrides: Any,
) -> nn.Module:
    """Build ``name`` and load an official checkpoint into it; returns the model in ``eval()`` mode.

    Args:
        name: a model name (``crate_small``, ``crate_alpha_b16``, ``crate_mae_base``, ...; see
            ``crate_edu.list_models()``) or an official-weights key (``crate_edu.list_official()``).
        path: the checkpoint file (``.pth``/``.pt``/``.safetensors``; official wrappers and the
            ``module.`` prefix are handled). None downloads the published file for ``name``
            (``download_official``), which needs the internet.
        strict: require every key to match. With ``strict=False`` missing and unexpected keys are
            reported as a warning; mismatched shapes are always an error.
        map_location: where tensors are loaded; a device string or ``torch.device`` also moves the
            model there.
        **overrides: extra ``create_model`` overrides that cannot be read from the weights (e.g.
            ``pool="mean"``); they win over the inferred ``num_classes``/``patch_size``/``image_size``.

    Returns:
        The model, in eval mode, with the file's weights.

    Raises:
        CheckpointError: the file is unreadable or does not fit (the message names the missing and
            unexpected keys, the mismatched shapes, and what to do).
        WeightsUnavailableError: ``path`` is None and the download is impossible.
    """
    model_name, base, entry = _resolve(name)
    if path is None:
        if entry is None:
            raise ValueError(f"no published weights for {name!r}; pass the path of a checkpoint file")
        path = download_official(entry.key)
    path = Path(path).expanduser()
    state_dict = read_state_dict(path, map_location=map_location)
    inferred = infer_overrides(model_name, state_dict, **{**base, **overrides})
    final = {**base, **inferred, **overrides}
    report = _check(model_name, state_dict, path, final, strict)
    if not report.ok:
        warnings.warn(
            f"{path} loaded into {model_name!r} with strict=False:\n{report.describe()}", stacklevel=2
        )
    model = _registry().create_model(model_name, **final)
    model.load_state_dict(state_dict, strict=strict)
    if isinstance(map_location, str | torch.device):
        model = model.to(map_location)
    return model.eval()


def verify_checkpoint(name: str, path: PathLike) -> dict[str, Any]:
    """Check a file against a model or an official-weights entry, without building the model.

    For a registry key (``crate_edu.list_official()``) the file must have exactly the published
    structure (the preset with the entry's overrides) and, where one is recorded, its sha256. For a
    model name, ``num_classes``/``patch_size``/``image_size`` are inferred as ``load_official`` does.

    Returns:
        A dict: ``name``, ``model``, ``path``, ``ok``, ``error`` (None, or why the file could not be
        read or checked), ``family`` (detected from the keys), ``num_keys``, ``num_expected``,
        ``keys_ok``, ``shapes_ok``, ``missing``, ``unexpected``, ``mismatched`` (key → [expected,
        got]), ``overrides``, ``sha256``, ``sha256_expected``, ``sha256_ok`` (None when no hash is
        recorded).
    """
    path = Path(path).expanduser()
    entry = OFFICIAL_WEIGHTS.get(name)
    model_name = entry.model if entry is not None else _resolve(name)[0]
    report: dict[str, Any] = {
        "name": name,
        "model": model_name,
        "path": str(path),
        "ok": False,
        "error": None,
        "family": None,
        "num_keys": 0,
        "num_expected": 0,
        "keys_ok": False,
        "shapes_ok": False,
        "missing": [],
        "unexpected": [],
        "mismatched": {},
        "overrides": {},
        "sha256": None,
        "sha256_expected": entry.sha256 if entry is not None else None,
        "sha256_ok": None,
    }
    if not path.is_file():
        report["error"] = f"{path}: no such file"
        return report
    report["sha256"] = sha256sum(path)
    if report["sha256_expected"] is not None:
        report["sha256_ok"] = report["sha256"] == report["sha256_expected"].lower()
    if model_name is None:  # downloadable but not loadable (e.g. CLIPA): only the sha256 is checked
        report["ok"] = report["sha256_ok"] is not False
        return report
    try:
        state_dict = read_state_dict(path, map_location="cpu")
    except CheckpointError as exc:
        report["error"] = str(exc)
        return report
    report["family"] = detect_family(state_dict)
    report["num_keys"] = len(state_dict)
    overrides = dict(entry.overrides) if entry is not None else infer_overrides(model_name, state_dict)
    report["overrides"] = overrides
    structure = compare_structure(expected_shapes(model_name, **overrides), state_dict)
    report.update(
        num_expected=structure.num_expected,
        keys_ok=structure.keys_ok,
        shapes_ok=structure.shapes_ok,
        missing=structure.missing,
        unexpected=structure.unexpected,
        mismatched={k: [list(e), list(g)] for k, (e, g) in structure.mismatched.items()},
    )
    if not structure.ok:
        report["error"] = structure.describe(sep="; ")
    report["ok"] = structure.ok and report["sha256_ok"] is not False
    return report


# --------------------------------------------------------------------------------------------------
# Downloading.
# --------------------------------------------------------------------------------------------------


def _unavailable(entry: OfficialWeights, target: Path, reason: str) -> WeightsUnavailableError:
    model = entry.model or "<model>"
    where = (
        f"get the file by hand from {entry.url} and save it as {target}"
        if entry.url
        else "the authors never published this file"
    )
    return WeightsUnavailableError(
        f"could not obtain the official weights {entry.key!r}: {reason}; {where}; any local copy also "
        f"loads directly: crate_edu.load_official({model!r}, '/path/to/file')"
        + (f" (note: {entry.notes})" if entry.notes else "")
    )


def _fetch(entry: OfficialWeights, workdir: Path) -> Path:
    """Download ``entry`` into ``workdir``; returns the downloaded file (inside ``workdir``)."""
    if entry.source == "hf":
        from huggingface_hub import hf_hub_download

        got = Path(hf_hub_download(repo_id=entry.repo_id, filename=entry.filename, local_dir=workdir))
        if workdir.resolve() not in got.resolve().parents:  # e.g. a symlink into the hub cache
            local = workdir / entry.cache_name
            shutil.copyfile(got, local)
            got = local
        return got
    if entry.source == "gdrive":
        import gdown

        out = workdir / entry.cache_name
        result = gdown.download(id=entry.file_id, output=str(out), quiet=False)
        if result is None or not out.is_file():
            raise RuntimeError("gdown returned no file (the link is dead, private or over its quota)")
        return out
    raise RuntimeError(f"unknown source {entry.source!r}")


def _verify_file(entry: OfficialWeights, path: Path, label: str) -> None:
    """Structural check (every key and shape) and sha256 check; raises ``CheckpointError``."""
    if entry.sha256 is not None:
        digest = sha256sum(path)
        if digest != entry.sha256.lower():
            raise CheckpointError(
                f"{label} {path}: sha256 {digest} differs from the recorded {entry.sha256}; the file is "
                f"corrupt or changed upstream; download it again (force=True) or from {entry.url}"
            )
    if entry.model is None:  # not loadable here (e.g. CLIPA): its layout is not ours to check
        return
    state_dict = read_state_dict(path, map_location="cpu")
    _check(entry.model, state_dict, path, dict(entry.overrides), strict=True)


def download_official(key: str, cache_dir: PathLike | None = None, *, force: bool = False) -> Path:
    """Download published weights into the cache and check them; returns the cached file's path.

    The file goes to ``cache_path(key, cache_dir)`` (``$CRATE_EDU_CACHE`` or
    ``~/.cache/crate_edu/weights``, file ``<key>.pth``). It is downloaded into a temporary folder
    next to it, checked (every expected key and shape, and the sha256 where one is recorded), then
    moved into place with an atomic rename, so the cache never holds a partial file. An existing
    cached file is checked and returned unless ``force=True``.

    Args:
        key: an official-weights key (``crate_edu.list_official()``) or a model name with one entry.
        cache_dir: cache folder (default as above).
        force: download again even if the file is cached.

    Raises:
        WeightsUnavailableError: never published, offline, dead link or any other download failure;
            the message gives the URL and the exact path to save a hand-downloaded copy at.
        CheckpointError: the downloaded (or cached) file fails the structural or sha256 check.
    """
    entry = get_official(key)
    target = cache_path(entry.key, cache_dir)
    if entry.source is None:
        raise _unavailable(entry, target, "it was never published")
    if target.is_file() and not force:
        try:
            _verify_file(entry, target, "cached file")
        except CheckpointError as exc:
            raise CheckpointError(
                f"{exc}; delete {target} or call download_official(..., force=True)"
            ) from exc
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f".{entry.key}-", suffix=".part", dir=target.parent))
    except OSError as exc:  # a file where the cache folder should be, read-only, no permission, ...
        from crate_edu.train.checkpoint import write_error

        raise write_error(target, exc, previous=False) from None
    try:
        try:
            downloaded = _fetch(entry, workdir)
        except Exception as exc:  # offline, dead link, quota, auth: all mean "get it by hand"
            raise _unavailable(
                entry, target, f"download failed ({type(exc).__name__}: {_first_line(exc)})"
            ) from exc
        with open(downloaded, "rb") as f:
            if f.read(64).lstrip()[:1] == b"<":
                raise _unavailable(
                    entry, target, "the server sent an HTML page instead of the file (dead link?)"
                )
        _verify_file(entry, downloaded, "downloaded file")
        os.replace(downloaded, target)  # atomic on one filesystem: no partial file in the cache
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return target
