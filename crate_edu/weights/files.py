"""crate_edu's weights files: safetensors whose header says how to rebuild the model.

``save_weights`` writes the tensors of a model with its registry name, its ``create_model``
overrides and a checksum of the tensors (format ``crate_edu.weights/1``); ``read_weights_info`` reads
that header back and ``read_weights_tensors`` the tensors, checking the checksum. Nothing is
unpickled: safetensors holds tensors and strings only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from crate_edu.models import list_models
from crate_edu.weights.atomic import atomic_write_bytes

__all__ = [
    "CHECKSUM_KEY",
    "FORMAT",
    "WeightsFileError",
    "WeightsInfo",
    "is_weights_file",
    "read_weights_info",
    "read_weights_tensors",
    "save_weights",
    "tied_names",
]

PathLike = str | os.PathLike


class WeightsFileError(ValueError):
    """A weights file that cannot be used: not a crate_edu weights file, unreadable, or damaged."""


#: Format tag written into every file's header.
FORMAT = "crate_edu.weights/1"

#: Header key of the checksum of a weights file's tensors (files written before it have none).
CHECKSUM_KEY = "tensors_sha256"


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights file says about itself.

    Attributes:
        model_name: the registry name (``crate_edu.list_models()``).
        overrides: ``create_model`` keyword arguments (``depth``, ``num_classes``, ...).
        metadata: anything else recorded (metrics, the command that made it, ...), JSON values.
        path: the file it was read from.
    """

    model_name: str
    overrides: dict[str, Any]
    metadata: dict[str, Any]
    path: Path


def save_weights(
    model: nn.Module,
    path: PathLike,
    *,
    model_name: str,
    overrides: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and how to rebuild it to a safetensors file (atomically).

    Args:
        model: the model (a ``torch.compile`` or DDP wrapper is unwrapped by name).
        path: the file to write (its folder is created).
        model_name: the registry name it was built from.
        overrides: the ``create_model`` overrides it was built with.
        metadata: JSON-serialisable extras (metrics, command, ...).

    Returns:
        The path written.
    """
    from safetensors.torch import save

    if model_name not in list_models():
        raise ValueError(f"unknown model {model_name!r}; choose one of crate_edu.list_models()")
    state = {}
    for key, value in _untied(model.state_dict()).items():
        for prefix in ("_orig_mod.", "module."):
            key = key.removeprefix(prefix)
        state[key] = value.detach().to("cpu").contiguous()
    header = {
        "format": FORMAT,
        "model_name": model_name,
        "overrides": json.dumps(dict(overrides or {}), sort_keys=True),
        "metadata": json.dumps(dict(metadata or {}), sort_keys=True),
    }
    # The checksum covers the tensors' table (names, dtypes, shapes, offsets) and their bytes; adding
    # it to the header changes neither, so it is computed on a first serialisation.
    header[CHECKSUM_KEY] = _tensor_checksum(save(state, metadata=header))
    blob = save(state, metadata=header)
    return atomic_write_bytes(Path(path), lambda f: f.write(blob))


def _untied(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` without the second and later names of one tensor (tied weights, such as a language
    model's embedding and output head): safetensors stores each tensor once, and the model ties the
    names again when it is built."""
    seen: set[tuple[int, tuple[int, ...], tuple[int, ...]]] = set()
    out = {}
    for key, value in state.items():
        ident = (value.data_ptr(), tuple(value.shape), tuple(value.stride()))
        if value.numel() and ident in seen:
            continue
        seen.add(ident)
        out[key] = value
    return out


def tied_names(model: nn.Module) -> set[str]:
    """The state-dict names of ``model`` that repeat an earlier name's tensor (tied weights), which
    :func:`save_weights` stores only under the first name."""
    state = model.state_dict()
    return set(state) - set(_untied(state))


def _split_safetensors(blob: bytes) -> tuple[dict[str, Any], bytes]:
    """(header dict, data bytes) of a safetensors file's contents; ValueError if malformed."""
    if len(blob) < 8:
        raise ValueError("shorter than a safetensors header")
    n = int.from_bytes(blob[:8], "little")
    if not 0 < n <= len(blob) - 8:
        raise ValueError(f"header length {n} does not fit a file of {len(blob)} bytes")
    header = json.loads(blob[8 : 8 + n])
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header, blob[8 + n :]


def _tensor_checksum(blob: bytes) -> str:
    """sha256 over the tensor table of a safetensors file (canonical JSON, ``__metadata__`` left out)
    followed by its data bytes: any change to a tensor's bytes, dtype, shape or place changes it."""
    header, data = _split_safetensors(blob)
    table = {k: v for k, v in header.items() if k != "__metadata__"}
    digest = hashlib.sha256(json.dumps(table, sort_keys=True, separators=(",", ":")).encode())
    digest.update(data)
    return digest.hexdigest()


def _header(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file; WeightsFileError if it is not one."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any parse failure means the same thing here
        raise WeightsFileError(
            f"{path} is not a safetensors file ({' '.join(str(exc).split())[:160]}); crate_edu weights "
            "files are written by crate_edu.weights.save_weights (crate-edu export)"
        ) from None


def is_weights_file(path: PathLike) -> bool:
    """True if ``path`` is a safetensors file written by :func:`save_weights` (its header is read)."""
    try:
        return _header(Path(path)).get("format") == FORMAT
    except (OSError, WeightsFileError):
        return False


def read_weights_info(path: PathLike) -> WeightsInfo:
    """The header of a weights file written by :func:`save_weights` (no tensors are read)."""
    path = Path(path)
    header = _header(path)
    if header.get("format") != FORMAT:
        raise WeightsFileError(
            f"{path} is a safetensors file but not a crate_edu weights file (format "
            f"{header.get('format')!r}, expected {FORMAT!r}); load plain state dicts with "
            "crate_edu.load_official or model.load_state_dict"
        )
    try:
        overrides = json.loads(header.get("overrides", "{}"))
        metadata = json.loads(header.get("metadata", "{}"))
        model_name = header["model_name"]
    except (KeyError, ValueError) as exc:
        raise WeightsFileError(
            f"{path}: its header is damaged ({type(exc).__name__}: {exc}); export the weights again "
            "(crate-edu export RUN FILE --force) or copy the file again"
        ) from None
    if not isinstance(overrides, dict) or not isinstance(metadata, dict):
        raise WeightsFileError(f"{path}: its header is damaged (overrides or metadata not a JSON object)")
    return WeightsInfo(model_name=model_name, overrides=overrides, metadata=metadata, path=path)


def read_weights_tensors(path: PathLike, map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """The tensors of a weights file, after checking them against the checksum in its header.

    Files written before the checksum existed have none and are read unchecked.

    Raises:
        WeightsFileError: the tensors differ from the checksum, or cannot be read at all.
    """
    from safetensors.torch import load

    path = Path(path)
    blob = path.read_bytes()
    header, _ = _split_safetensors(blob)
    expected = header.get("__metadata__", {}).get(CHECKSUM_KEY)
    if expected is not None and _tensor_checksum(blob) != expected:
        raise WeightsFileError(
            f"{path}: the tensor data does not match the checksum in its header, so the file is "
            "damaged (a partial copy or changed bytes); copy it again, or export it again from its run "
            "(crate-edu export RUN FILE --force)"
        )
    try:
        return {k: v.to(map_location) for k, v in load(blob).items()}
    except Exception as exc:  # noqa: BLE001 - a malformed file (no checksum to catch it earlier)
        raise WeightsFileError(
            f"{path}: its tensors cannot be read ({' '.join(str(exc).split())[:160]}); copy the "
            "file again or export it again from its run"
        ) from None
