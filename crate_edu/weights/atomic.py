"""Writing files atomically: a write either completes or leaves the previous file as it was.

``atomic_write_bytes(path, write)`` writes to a temporary file in the same folder, ``fsync``s it and
``os.replace``s it onto the destination; a failure is one :class:`FileWriteError` line naming the file,
the cause and the fix (``os_error_fix``). Training checkpoints, weights files and exports all use it.
"""

from __future__ import annotations

import errno
import glob
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "FileWriteError",
    "atomic_write_bytes",
    "make_folder",
    "os_error_fix",
    "remove_stale_temp_files",
    "write_error",
]

PathLike = str | os.PathLike


class FileWriteError(OSError):
    """A file could not be written (disk full, read-only folder, no permission, a path that is a
    folder, ...). ``str(err)`` is one line naming the file, the cause and what to do; the previous
    version of the file, if any, is unchanged (writes are atomic). ``errno`` is the cause's."""


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
