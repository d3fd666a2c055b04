"""Files on disk: the one safe checkpoint reader, crate_edu's safetensors weights format, atomic writes.

Every file crate_edu reads or writes goes through this module:

``read_checkpoint_file(path)`` / ``read_state_dict(path)``
    Read a ``torch.save`` file (zip or legacy format) or a safetensors file without running code
    from it (``torch.load(weights_only=True)``), then find the state dict inside the official
    containers (``{'state_dict': ...}``, the MAE codebase's ``{'model': ...}``) and strip the
    ``module.`` / ``_orig_mod.`` prefixes. Every failure is one :class:`CheckpointError` line.
``save_weights`` / ``read_weights_info`` / ``read_weights_tensors``
    crate_edu's own weights files: safetensors with the registry name, the ``create_model``
    overrides and a checksum of the tensors in the header (format ``crate_edu.weights/1``).
``atomic_write_bytes(path, write)``
    Writes that never leave a torn file: a temporary file in the same folder, ``fsync``, then
    ``os.replace``. A failure is one :class:`FileWriteError` line naming the file, the cause and the fix.
"""

from __future__ import annotations

import argparse
import errno
import glob
import hashlib
import json
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor, nn

from crate_edu.models import list_models

__all__ = [
    "CHECKSUM_KEY",
    "FORMAT",
    "CheckpointError",
    "FileWriteError",
    "WeightsFileError",
    "WeightsInfo",
    "atomic_write_bytes",
    "first_line",
    "is_weights_file",
    "make_folder",
    "os_error_fix",
    "read_checkpoint_file",
    "read_state_dict",
    "read_weights_info",
    "read_weights_tensors",
    "remove_stale_temp_files",
    "save_weights",
    "sha256sum",
    "write_error",
]

PathLike = str | os.PathLike


class CheckpointError(ValueError):
    """A file is not a checkpoint of the requested model (unreadable, wrong keys or shapes)."""


class WeightsFileError(ValueError):
    """A weights file that cannot be used: not a crate_edu weights file, unreadable, or damaged."""


class FileWriteError(OSError):
    """A file could not be written (disk full, read-only folder, no permission, a path that is a
    folder, ...). ``str(err)`` is one line naming the file, the cause and what to do; the previous
    version of the file, if any, is unchanged (writes are atomic). ``errno`` is the cause's."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its class name."""
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split())[:200] if text else type(exc).__name__


def sha256sum(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Writing a file atomically.
# --------------------------------------------------------------------------------------------------

#: What to do about a failed file-system operation, by cause.
_OS_FIXES = {
    errno.ENOENT: "check the path",
    errno.ENOSPC: "free space on that disk or write somewhere else",
    errno.EDQUOT: "free space within your disk quota or write somewhere else",
    errno.EROFS: "the file system is read-only: write to a folder on a writable disk",
    errno.EACCES: "you may not write there: choose a folder you own or fix its permissions",
    errno.EPERM: "you may not write there: choose a folder you own or fix its permissions",
    errno.EISDIR: "that path is a folder: give a file name",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
    errno.EEXIST: "a part of that path is a file, not a folder: choose another path",
    errno.ENAMETOOLONG: "the path is too long: choose a shorter one",
}


def os_error_fix(exc: OSError) -> str:
    """What to do about an operating-system error, by its cause (one short clause)."""
    return _OS_FIXES.get(exc.errno or -1, "check the path, its permissions and the free space")


def write_error(path: PathLike, exc: OSError, *, previous: bool = True) -> FileWriteError:
    """The one-line :class:`FileWriteError` for a failed write of ``path`` caused by ``exc``."""
    cause = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    kept = f"; the previous {Path(path).name} is unchanged" if previous and Path(path).is_file() else ""
    code = errno.errorcode.get(exc.errno or -1, type(exc).__name__)
    err = FileWriteError(f"could not write {path}: {cause} ({code}); {os_error_fix(exc)}{kept}")
    err.errno = exc.errno
    return err


def make_folder(folder: PathLike) -> list[Path]:
    """Create ``folder`` (and missing parents); returns the folders created, deepest first.

    Raises:
        FileWriteError: it cannot be created (read-only file system, no permission, ...).
    """
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(folder, e, previous=False) from None
    return missing


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entry table, so that a rename inside it survives a power cut (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Temporary files of :func:`atomic_write_bytes`: ``.<name>.tmp-<pid>`` next to the destination.
_TMP_SUFFIX = ".tmp-"


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (POSIX); elsewhere assumed alive (its file is then left)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists but belongs to someone else
        return True
    return True


def remove_stale_temp_files(path: PathLike) -> list[Path]:
    """Delete the temporary files that writers of ``path`` killed mid-write left behind.

    A temporary file ``.<name>.tmp-<pid>`` whose process no longer exists can never be finished;
    one of a live process (another writer at work) is left alone. Returns the files deleted.
    """
    path = Path(path)
    removed = []
    prefix = f".{path.name}{_TMP_SUFFIX}"
    try:
        candidates = list(path.parent.glob(f".{glob.escape(path.name)}{_TMP_SUFFIX}*"))
    except OSError:
        return removed
    for tmp in candidates:
        pid = tmp.name[len(prefix) :]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass  # e.g. removed by someone else meanwhile
    return removed


def atomic_write_bytes(path: PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Write a file atomically: ``write(f)`` fills a temporary file that then replaces ``path``.

    The temporary file is ``.<name>.tmp-<pid>`` in the same folder. If ``write`` raises, ``path``
    keeps its previous content and the temporary file is removed; if the process is killed, the
    next write of ``path`` (by any process) removes the temporary file it left.

    Raises:
        FileWriteError: the file could not be written (disk full, read-only, no permission, ``path``
            is a folder, ...); ``path`` keeps its previous content and the temporary file is removed.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc) from None
    remove_stale_temp_files(path)
    tmp = path.with_name(f".{path.name}{_TMP_SUFFIX}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # e.g. a read-only file system: never hide the error that got us here
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise
    try:
        _fsync_dir(path.parent)
    except OSError:
        pass  # the file is in place; some file systems cannot fsync a folder
    return path


# --------------------------------------------------------------------------------------------------
# Reading a checkpoint file, safely.
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# crate_edu's weights files: safetensors that say how to rebuild the model.
# --------------------------------------------------------------------------------------------------

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
    for key, value in model.state_dict().items():
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
