"""The one safe reader of checkpoint files: nothing in a file a user hands us runs as code.

``read_checkpoint_file(path)`` reads a ``torch.save`` file (zip or legacy format) or a safetensors
file with ``torch.load(weights_only=True)`` (or safetensors); ``read_state_dict(path)`` then finds the
state dict inside the official containers (``{'state_dict': ...}``, the MAE codebase's
``{'model': ...}``) and strips the ``module.`` / ``_orig_mod.`` prefixes. Every failure is one
:class:`CheckpointError` line.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from crate_edu.errors import first_line

__all__ = ["CheckpointError", "read_checkpoint_file", "read_state_dict", "sha256sum"]

PathLike = str | os.PathLike


class CheckpointError(ValueError):
    """A file is not a checkpoint of the requested model (unreadable, wrong keys or shapes)."""


def sha256sum(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# Only argparse.Namespace is added to torch's weights_only allowlist: the MAE codebase stores its
# command-line arguments as ``'args'`` next to ``'model'``, and rebuilding a Namespace only sets
# attributes. Any other Python object in a file is refused.
_EXTRA_SAFE_GLOBALS = [argparse.Namespace]

#: What to do about an unreadable file, unless the caller says otherwise.
_REREAD_HINT = "re-download the file (it may be truncated or corrupt) or check that it is a checkpoint"

#: The fix for a file that stores Python objects next to its tensors.
_CONVERT_HINT = (
    "If you trust the file, convert it once: "
    "obj = torch.load(path, map_location='cpu', weights_only=False); keep its tensors "
    "(obj['state_dict'] or obj['model'] for a wrapped checkpoint) and "
    "torch.save({k: v for k, v in sd.items() if torch.is_tensor(v)}, 'converted.pth'), "
    "then load 'converted.pth' instead"
)


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
    todo = hint or _REREAD_HINT
    is_safetensors, head = _peek(path)
    if is_safetensors:
        return _read_safetensors(path, map_location, todo)
    if head.lstrip()[:1] == b"<":
        raise CheckpointError(
            f"{path} is an HTML page, not a checkpoint (a download link that is dead, private or over "
            "its quota returns one); download the file again from its page in a browser"
        )
    kind = _torch_kind(head)
    if kind is None:
        raise CheckpointError(f"{path} {_not_torch(head)}, not a PyTorch checkpoint; {todo}")
    return _read_torch(path, map_location, mmap, kind, todo)


def _peek(path: Path) -> tuple[bool, bytes]:
    """(is it a safetensors file, its first 64 bytes); the one-line errors for a path that is no file."""
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
        why = exc.strerror or first_line(exc)
        raise CheckpointError(f"{path} cannot be read ({why}); check its permissions") from exc
    return is_safetensors, head


def _is_safetensors(path: Path) -> bool:
    """A ``.safetensors`` name, or a file that starts like one (8-byte header length, then ``{``)."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < header_len < path.stat().st_size


def _read_safetensors(path: Path, map_location: Any, todo: str) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    device = str(map_location) if isinstance(map_location, str | torch.device) else "cpu"
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        why = first_line(exc)
        raise CheckpointError(f"{path} is not a readable safetensors file ({why}); {todo}") from exc


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


def _read_torch(path: Path, map_location: Any, mmap: bool, kind: str, todo: str) -> Any:
    """``torch.load(weights_only=True)``, every failure turned into one :class:`CheckpointError` line."""
    kw: dict[str, Any] = {"map_location": map_location, "weights_only": True}
    if mmap and zipfile.is_zipfile(path):  # only the zip format can be memory-mapped, not legacy files
        kw["mmap"] = True
    try:
        with torch.serialization.safe_globals(_EXTRA_SAFE_GLOBALS):
            return torch.load(path, **kw)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found or "Unsupported global" in str(exc):
            culprit = found.group(1) if found else "a Python object"
            raise CheckpointError(
                f"{path} is not a plain tensor checkpoint: it stores a Python object ({culprit}) that "
                "loading would have to execute, and crate_edu loads only tensors "
                f"(torch.load(weights_only=True)). {_CONVERT_HINT}"
            ) from exc
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
        why = detail.group(1).strip() if detail else first_line(exc)
        raise CheckpointError(f"{path} is a damaged {kind} ({why}); {todo}") from exc
    except EOFError as exc:
        raise CheckpointError(f"{path} is a truncated {kind} (the file ends early); {todo}") from exc
    except (RuntimeError, OSError, ValueError, zipfile.BadZipFile, KeyError, TypeError, AttributeError,
            IndexError, UnicodeDecodeError, struct.error, MemoryError) as exc:  # fmt: skip
        why = "" if isinstance(exc, OSError) else f" ({first_line(exc).split('. ')[0]})"
        raise CheckpointError(f"{path} is a damaged or truncated {kind}{why}; {todo}") from exc


# Wrapper keys of official and common training checkpoints, in the order they are tried.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")

# Prefixes added by DataParallel / DistributedDataParallel and torch.compile.
_PREFIXES = ("module.", "_orig_mod.")


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
