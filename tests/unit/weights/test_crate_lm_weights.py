"""The published CRATE-LM checkpoint: its registry entry, and loading files in its format.

The published file (``JackBAI/CRATE-GPT-12L-Pile-600000steps``, 983 MB) is the official train.py's
raw ``torch.save`` dict: ``model`` (keys likely prefixed ``_orig_mod.`` by ``torch.compile``),
``optimizer``, ``model_args``, ``iter_num``, ``best_val_loss``, ``config``. Here a file in that
format is written from the official tiny CRATE-LM of ``official_crate_lm_tiny_fixture.pt`` (with a
real AdamW state), and must load through ``load_official`` to the official logits. Nothing is
downloaded.
"""

from __future__ import annotations

import json
import pathlib

import pytest
import torch

import crate_edu
from crate_edu.models import CRATELanguageModel
from crate_edu.weights import CheckpointError, OfficialWeights
from crate_edu.weights import official as W
from crate_edu.weights import structure as S
from tests.support.paths import FIXTURES
from tests.unit.models.lm_fixture import official_state_dict, sizes
from tests.unit.weights.test_official import FakeHub

TOL = 1e-4


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURES / "official_crate_lm_tiny_fixture.pt", weights_only=True)


def train_py_checkpoint(case: dict, prefix: str = "_orig_mod.") -> dict:
    """What the official train.py saves (train.py:286-295), for the fixture's model."""
    cfg = case["config"]
    model = CRATELanguageModel(**sizes(cfg))
    model.load_state_dict(official_state_dict(case))
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)
    model(case["idx"]).sum().backward()
    optimizer.step()  # a real AdamW state: step counts, two moments per parameter
    model.load_state_dict(official_state_dict(case))  # the fixture's weights again
    state = model.state_dict()  # wte and lm_head: one tensor under two names, as torch.save keeps it
    return {
        "model": {prefix + k: v for k, v in state.items()},
        "optimizer": optimizer.state_dict(),
        "model_args": dict(cfg, bias=False),
        "iter_num": 600000,
        "best_val_loss": torch.tensor(2.87),
        "config": {"dataset": "pile", "learning_rate": 6e-4, "compile": True, "dtype": "bfloat16"},
    }


TINY = dict(dim=16, depth=2, heads=2)  # what the file's tensors cannot say by themselves


@pytest.mark.parametrize("prefix", ["_orig_mod.", ""])
def test_a_train_py_checkpoint_loads_to_the_official_logits(tmp_path, fixture, prefix):
    case = fixture["crate_overcomplete"]
    path = tmp_path / "ckpt-crate-2l-overparam-600000.pt"
    torch.save(train_py_checkpoint(case, prefix), path)
    model = crate_edu.load_official("crate_lm_12l", path, **TINY)
    assert (model.config.vocab_size, model.config.block_size) == (50, 16)  # read from wte and wpe
    assert not model.training and model.transformer.wte.weight is model.lm_head.weight
    with torch.no_grad():
        delta = (model(case["idx"]) - case["logits"]).abs().max().item()
    assert delta <= TOL, delta


def test_the_registry_entry(monkeypatch, tmp_path):
    entry = W.get_official("crate_lm_12l_pile")
    assert (entry.model, entry.source, entry.sha256, entry.top1) == ("crate_lm_12l", "hf", None, None)
    assert (entry.repo_id, entry.filename) == (
        "JackBAI/CRATE-GPT-12L-Pile-600000steps",
        "ckpt-crate-12l-overparam-600000.pt",
    )
    assert entry.url == (
        "https://huggingface.co/JackBAI/CRATE-GPT-12L-Pile-600000steps/blob/main/ckpt-crate-12l-overparam-600000.pt"
    )
    assert W.get_official("crate_lm_12l") is entry  # the preset's one entry
    assert "983 MB" in entry.notes and "optimizer" in entry.notes and "_orig_mod." in entry.notes
    monkeypatch.setenv("CRATE_EDU_CACHE", str(tmp_path))
    assert W.cache_path("crate_lm_12l_pile") == tmp_path / "crate_lm_12l_pile.pt"


def test_download_and_load_by_key(tmp_path, monkeypatch, fixture):
    """The download path with a fake hub serving a train.py checkpoint of the tiny model."""
    import huggingface_hub

    case = fixture["crate_overcomplete"]
    real = W.OFFICIAL_WEIGHTS["crate_lm_12l_pile"]
    entry = OfficialWeights(
        "test_crate_lm", "crate_lm_12l", "hf", repo_id=real.repo_id, filename=real.filename, overrides=TINY
    )
    monkeypatch.setitem(W.OFFICIAL_WEIGHTS, entry.key, entry)
    hub = FakeHub(state_dict=train_py_checkpoint(case))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub)
    path = crate_edu.download_official(entry.key, cache_dir=tmp_path)  # checked, then moved into place
    assert path == tmp_path / "test_crate_lm.pt" and hub.calls == 1
    monkeypatch.setenv("CRATE_EDU_CACHE", str(tmp_path))
    model = crate_edu.load_official(entry.key)
    with torch.no_grad():
        assert (model(case["idx"]) - case["logits"]).abs().max().item() <= TOL
    report = crate_edu.verify_checkpoint(entry.key, path)
    assert report["ok"] and report["family"] == "crate_lm" and report["num_keys"] == 21  # 2 · 8 + 5


def test_files_that_do_not_fit_are_one_line_errors(tmp_path, fixture):
    case = fixture["crate_overcomplete"]
    path = tmp_path / "ckpt.pt"
    torch.save(train_py_checkpoint(case), path)
    with pytest.raises(
        CheckpointError, match=r"differently configured CRATE-LM model \(width dim=16, depth=2\)"
    ) as info:
        crate_edu.load_official("crate_lm_12l", path)  # the 12-layer preset without overrides
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match=r"looks like a CRATE-LM checkpoint; use .*crate_lm_12l"):
        crate_edu.load_official("crate_small", path)
    gpt = tmp_path / "gpt.pt"
    torch.save({"model": dict(fixture["gpt_nobias"]["state_dict"])}, gpt)
    with pytest.raises(CheckpointError, match=r"looks like a GPT \(CRATE-LM's baseline\) checkpoint"):
        crate_edu.load_official("crate_lm_12l", gpt, **TINY)
    model = crate_edu.load_official("gpt_lm_12l", gpt, **TINY)  # into the right family it loads
    with torch.no_grad():
        assert (model(fixture["gpt_nobias"]["idx"]) - fixture["gpt_nobias"]["logits"]).abs().max() <= TOL


def test_a_checkpoint_with_python_objects_is_refused(tmp_path, fixture):
    path = tmp_path / "ckpt.pt"
    checkpoint = train_py_checkpoint(fixture["crate_overcomplete"])
    checkpoint["config"]["out_dir"] = pathlib.PurePosixPath("out")  # not plain data: refused
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="stores a Python object") as info:
        crate_edu.load_official("crate_lm_12l", path, **TINY)
    assert "\n" not in str(info.value)


def test_published_shapes_fit_and_the_vocabulary_is_read_from_the_file():
    official = json.loads((FIXTURES / "official_crate_lm_state_dict_shapes.json").read_text())["crate_lm/12l"]
    assert S.detect_family(official) == "crate_lm"
    assert S.compare_structure(S.expected_shapes("crate_lm_12l"), official).ok
    assert S.infer_overrides("crate_lm_12l", official) == {}
    unpadded = {**official, "transformer.wte.weight": [50257, 768], "lm_head.weight": [50257, 768]}
    assert S.infer_overrides("crate_lm_12l", unpadded) == {"vocab_size": 50257}  # GPT-2's own 50257
    gpt = json.loads((FIXTURES / "official_crate_lm_state_dict_shapes.json").read_text())["gpt_lm/12l"]
    assert S.detect_family(gpt) == "gpt_lm" and S.compare_structure(S.expected_shapes("gpt_lm_12l"), gpt).ok
