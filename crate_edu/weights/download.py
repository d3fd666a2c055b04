"""Downloading weights: one cache folder, one verified download path.

The cache folder is ``$CRATE_EDU_CACHE``, or ``~/.cache/crate_edu/weights`` when that is unset.
Official weights are downloaded into it (``crate_edu.download_official``), and the tutorial's own
files are looked for in it before the copies shipped with the package. ``$CRATE_EDU_CHECKPOINTS``,
the older name of a folder holding your own copies of the tutorial's files, is still read (before
the cache folder); new set-ups need only ``$CRATE_EDU_CACHE``.

:func:`download_verified` is the one way a file enters the cache: it is fetched into a temporary
folder next to its place, refused if the server sent an HTML page, checked by the caller (keys,
shapes, sha256), and only then moved into place with an atomic rename, so the cache never holds a
partial or unchecked file. Any failure to fetch is one :class:`WeightsUnavailableError` line that
says where to get the file by hand and where to put it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from crate_edu.errors import first_line
from crate_edu.weights.atomic import write_error

__all__ = [
    "CACHE_ENV",
    "LEGACY_CACHE_ENV",
    "WeightsUnavailableError",
    "cache_dirs",
    "default_cache_dir",
    "download_verified",
    "fetch_from_drive",
    "fetch_from_hub",
]

PathLike = str | os.PathLike

#: The environment variable that names the cache folder.
CACHE_ENV = "CRATE_EDU_CACHE"
#: Its older name for a folder of your own copies of the tutorial's files (still read).
LEGACY_CACHE_ENV = "CRATE_EDU_CHECKPOINTS"


class WeightsUnavailableError(RuntimeError):
    """Published weights cannot be obtained automatically (offline, dead link, never published)."""


def default_cache_dir() -> Path:
    """``$CRATE_EDU_CACHE`` if set, else ``~/.cache/crate_edu/weights``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "crate_edu" / "weights"


def cache_dirs() -> list[Path]:
    """The folders where your own copies of weights files are looked for, in order.

    ``$CRATE_EDU_CHECKPOINTS`` when set (the older name, still read), then :func:`default_cache_dir`.
    """
    legacy = os.environ.get(LEGACY_CACHE_ENV)
    return ([Path(legacy).expanduser()] if legacy else []) + [default_cache_dir()]


def fetch_from_hub(repo_id: str, filename: str, workdir: Path, name: str) -> Path:
    """Download ``filename`` of a Hugging Face hub repository into ``workdir`` (as ``name`` if the hub
    hands back a file elsewhere, e.g. a symlink into its own cache); returns the file."""
    from huggingface_hub import hf_hub_download

    got = Path(hf_hub_download(repo_id=repo_id, filename=filename, local_dir=workdir))
    if workdir.resolve() not in got.resolve().parents:
        local = workdir / name
        shutil.copyfile(got, local)
        got = local
    return got


def fetch_from_drive(file_id: str, out: Path) -> Path:
    """Download a Google Drive file to ``out``; returns ``out``."""
    import gdown

    result = gdown.download(id=file_id, output=str(out), quiet=False)
    if result is None or not out.is_file():
        raise RuntimeError("gdown returned no file (the link is dead, private or over its quota)")
    return out


def download_verified(
    target: Path,
    fetch: Callable[[Path], Path],
    verify: Callable[[Path], None],
    unavailable: Callable[[str], WeightsUnavailableError],
) -> Path:
    """Fetch a file, check it, and only then move it to ``target``; returns ``target``.

    Args:
        target: where the file belongs (its folder is created).
        fetch: downloads into the temporary folder it is given; returns the file it wrote there.
        verify: raises (e.g. ``CheckpointError``) if the downloaded file is not the expected one.
        unavailable: the error for a failed fetch, given the reason in a few words.

    Raises:
        WeightsUnavailableError: the fetch failed or the server sent an HTML page.
        FileWriteError: the cache folder cannot be written.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f".{target.stem}-", suffix=".part", dir=target.parent))
    except OSError as exc:  # a file where the cache folder should be, read-only, no permission, ...
        raise write_error(target, exc, previous=False) from None
    try:
        try:
            downloaded = fetch(workdir)
        except Exception as exc:  # offline, dead link, quota, auth: all mean "get it by hand"
            raise unavailable(f"download failed ({type(exc).__name__}: {first_line(exc)})") from exc
        with open(downloaded, "rb") as f:
            if f.read(64).lstrip()[:1] == b"<":
                raise unavailable("the server sent an HTML page instead of the file (dead link?)")
        verify(downloaded)
        os.replace(downloaded, target)  # atomic on one filesystem: no partial file in the cache
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return target
