"""crate_edu.weights.download: the one cache folder and the one verified download path."""

from __future__ import annotations

from pathlib import Path

import pytest

from crate_edu.weights import FileWriteError, WeightsUnavailableError
from crate_edu.weights.download import cache_dirs, default_cache_dir, download_verified


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CRATE_EDU_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CRATE_EDU_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "crate_edu" / "weights"


def test_the_older_variable_comes_before_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CRATE_EDU_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CRATE_EDU_CHECKPOINTS", raising=False)
    assert cache_dirs() == [tmp_path / "cache"]
    monkeypatch.setenv("CRATE_EDU_CHECKPOINTS", str(tmp_path / "older"))
    assert cache_dirs() == [tmp_path / "older", tmp_path / "cache"]


def _unavailable(reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(f"could not obtain it: {reason}; save it by hand")


def _fetch_bytes(data: bytes):
    def fetch(workdir: Path) -> Path:
        path = workdir / "file.pth"
        path.write_bytes(data)
        return path

    return fetch


def test_a_checked_file_is_moved_into_place(tmp_path):
    target = tmp_path / "cache" / "w.pth"
    seen = []
    got = download_verified(target, _fetch_bytes(b"PK\x03\x04 weights"), seen.append, _unavailable)
    assert got == target and target.read_bytes() == b"PK\x03\x04 weights"
    assert seen and seen[0].parent != target.parent  # checked in the temporary folder, before the move
    assert sorted(p.name for p in target.parent.iterdir()) == ["w.pth"]  # the temporary folder is gone


def test_a_failed_fetch_is_one_line_and_leaves_nothing(tmp_path):
    def offline(workdir: Path) -> Path:
        (workdir / "partial").write_bytes(b"PK")
        raise OSError("offline: cannot reach the server\nsecond line")

    target = tmp_path / "w.pth"
    with pytest.raises(WeightsUnavailableError) as info:
        download_verified(target, offline, lambda p: None, _unavailable)
    assert str(info.value) == (
        "could not obtain it: download failed (OSError: offline: cannot reach the server); save it by hand"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_html_page_is_refused(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="HTML page instead of the file"):
        download_verified(tmp_path / "w.pth", _fetch_bytes(b"  <html>"), lambda p: None, _unavailable)
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_fails_its_check_never_reaches_the_cache(tmp_path):
    def refuse(path: Path) -> None:
        raise ValueError(f"{path.name}: wrong shapes")

    target = tmp_path / "w.pth"
    target.write_bytes(b"the previous copy")
    with pytest.raises(ValueError, match="wrong shapes"):
        download_verified(target, _fetch_bytes(b"PK\x03\x04 other"), refuse, _unavailable)
    assert target.read_bytes() == b"the previous copy" and list(tmp_path.iterdir()) == [target]


def test_a_cache_folder_that_cannot_be_made_is_a_write_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileWriteError, match="is a file, not a folder"):
        download_verified(tmp_path / "file" / "w.pth", _fetch_bytes(b""), lambda p: None, _unavailable)
