"""crate_edu.weights.tutorial: self-describing safetensors weights and the tutorial's shipped files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import crate_edu
from crate_edu.weights import (
    TUTORIAL_CHECKPOINTS,
    WeightsFileError,
    load_tutorial_model,
    load_weights,
    read_weights_info,
    save_weights,
    sha256sum,
    tutorial_checkpoint,
)
from crate_edu.weights import tutorial as checkpoints

TINY = {"depth": 1, "dim": 32, "heads": 2, "num_classes": 10}


def _tiny(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return crate_edu.create_model("crate_nano_cifar", **TINY).eval()


def test_save_then_load_rebuilds_the_same_model(tmp_path):
    model = _tiny()
    path = save_weights(
        model, tmp_path / "w" / "m.safetensors", model_name="crate_nano_cifar", overrides=TINY,
        metadata={"test_acc": 0.5, "command": "x"},
    )  # fmt: skip
    loaded, info = load_weights(path)
    assert info.model_name == "crate_nano_cifar" and info.overrides == TINY
    assert info.metadata == {"test_acc": 0.5, "command": "x"}
    assert not loaded.training
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert [p.name for p in tmp_path.joinpath("w").iterdir()] == ["m.safetensors"]  # no temp file left


def test_save_strips_compile_and_ddp_prefixes(tmp_path):
    model = _tiny()
    wrapped = torch.nn.Module()
    wrapped._orig_mod = model  # the attribute torch.compile uses: keys start with "_orig_mod."
    path = save_weights(wrapped, tmp_path / "m.safetensors", model_name="crate_nano_cifar", overrides=TINY)
    loaded, _ = load_weights(path)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_save_refuses_an_unknown_model_name(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'crate_nope'"):
        save_weights(_tiny(), tmp_path / "m.safetensors", model_name="crate_nope")


def test_files_that_are_not_crate_edu_weights_get_a_clear_error(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ValueError, match="not a crate_edu weights file.*load_official"):
        read_weights_info(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="is not a safetensors file"):
        load_weights(junk)
    with pytest.raises(FileNotFoundError, match="no weights file"):
        load_weights(tmp_path / "missing.safetensors")


def test_weights_that_do_not_fit_the_described_model_are_refused(tmp_path):
    path = save_weights(
        _tiny(), tmp_path / "m.safetensors", model_name="crate_nano_cifar", overrides={**TINY, "depth": 2}
    )
    with pytest.raises(ValueError, match="do not fit crate_nano_cifar"):
        load_weights(path)


# --------------------------------------------------------------------------------------------------
# Finding the tutorial's files: package data, or the cache folder of the user's own copies.
# --------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_user_folders(tmp_path, monkeypatch):
    """Neither the older variable nor a cache folder of the machine's user takes part."""
    monkeypatch.delenv("CRATE_EDU_CHECKPOINTS", raising=False)
    monkeypatch.setenv("CRATE_EDU_CACHE", str(tmp_path / "empty-cache"))


@pytest.fixture(params=["CRATE_EDU_CACHE", "CRATE_EDU_CHECKPOINTS"])
def own_copy(tmp_path, monkeypatch, request):
    """A cache folder holding a tiny model under a shipped file's name (pinned), named by the
    cache variable or by its older name."""
    name = "cluttered-digits-crate"
    folder = tmp_path / "own"
    path = save_weights(
        _tiny(), folder / TUTORIAL_CHECKPOINTS[name].filename, model_name="crate_nano_cifar", overrides=TINY
    )
    monkeypatch.setitem(
        TUTORIAL_CHECKPOINTS, name, dataclasses.replace(TUTORIAL_CHECKPOINTS[name], sha256=sha256sum(path))
    )
    monkeypatch.setenv(request.param, str(folder))
    return name, path


def test_own_copy_in_the_cache_folder_comes_first(own_copy):
    name, path = own_copy
    assert tutorial_checkpoint(name) == path
    model, info = load_tutorial_model(name)
    assert info.path == path and model.config.depth == 1


def test_the_older_variable_is_read_before_the_cache_folder(tmp_path, monkeypatch):
    name = "cluttered-digits-crate"
    shipped = checkpoints.shipped_checkpoint_dir() / TUTORIAL_CHECKPOINTS[name].filename
    older, cache = tmp_path / "older", tmp_path / "cache"
    for folder in (older, cache):
        folder.mkdir()
        (folder / shipped.name).write_bytes(shipped.read_bytes())
    monkeypatch.setenv("CRATE_EDU_CHECKPOINTS", str(older))
    monkeypatch.setenv("CRATE_EDU_CACHE", str(cache))
    assert tutorial_checkpoint(name) == older / shipped.name
    monkeypatch.delenv("CRATE_EDU_CHECKPOINTS")
    assert tutorial_checkpoint(name) == cache / shipped.name


def test_a_file_whose_sha256_differs_is_refused_with_the_fix(own_copy):
    name, path = own_copy
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsFileError, match="sha256 differs.*corrupt or from another version.*replace"):
        load_tutorial_model(name)


def test_missing_everywhere_names_the_places_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("CRATE_EDU_CHECKPOINTS", str(tmp_path / "older"))
    monkeypatch.setenv("CRATE_EDU_CACHE", str(tmp_path))
    monkeypatch.setattr(checkpoints, "shipped_checkpoint_dir", lambda: tmp_path / "gone")
    places = f"{tmp_path / 'older'}, {tmp_path}, {tmp_path / 'gone'}"
    with pytest.raises(FileNotFoundError, match=f"looked in {places}.*reinstall.*CRATE_EDU_CACHE"):
        tutorial_checkpoint("cluttered-digits-vit")
    with pytest.raises(
        ValueError, match="no tutorial checkpoint 'nope'; choose one of cluttered-digits-crate"
    ):
        tutorial_checkpoint("nope")


def test_shipped_checkpoints_are_package_data():
    folder = checkpoints.shipped_checkpoint_dir()
    assert folder == Path(checkpoints.__file__).resolve().parents[1] / "resources" / "checkpoints"
    assert sorted(p.name for p in folder.glob("*.safetensors")) == sorted(
        e.filename for e in TUTORIAL_CHECKPOINTS.values()
    )


@pytest.mark.parametrize("name", sorted(TUTORIAL_CHECKPOINTS))
def test_every_shipped_checkpoint_is_package_data_pinned_and_loads(name):
    entry = TUTORIAL_CHECKPOINTS[name]
    path = checkpoints.shipped_checkpoint_dir() / entry.filename
    assert path.is_file(), f"{entry.filename} is not in crate_edu/resources/checkpoints/"
    assert sha256sum(path) == entry.sha256, f"update the sha256 of {name}"
    assert path.stat().st_size < 5 * 2**20  # "a few MB"
    model, info = load_tutorial_model(name)
    assert info.path == path and not model.training
    assert info.metadata.get("command"), "record the command that reproduces it"
    assert name in (path.parent / "README.md").read_text()


def test_the_shipped_clipa_model_scores_what_its_file_records():
    """The offline CRATE-α-CLIPA rebuilds by name and its zero-shot accuracy on a fixed held-out
    set (the first 2,000 test images, prompts never seen in training) is the recorded one."""
    from crate_edu.data import CaptionedDigits
    from crate_edu.train import zero_shot_scores

    model, info = load_tutorial_model("cluttered-digits-crate-alpha-clipa")
    assert info.model_name == "crate_alpha_clipa_digits" and model.config.image_size == 32
    check = info.metadata["check"]
    cfg = info.metadata["train_config"]
    test = CaptionedDigits(
        "test", samples_per_digit=cfg["samples_per_digit"], seed=cfg["data_seed"], clutter=cfg["clutter"]
    )
    scores = zero_shot_scores(model, test, limit=check["limit"])
    assert scores["n"] == check["n"] == 2000 and scores["n_held_out"] == check["n_held_out"]
    for key in ("digit_acc", "digit_acc_seen_pairs", "digit_acc_held_out_pairs", "pair_acc_held_out_pairs"):
        assert scores[key] == pytest.approx(check[key], abs=2e-3), key
