"""Official checkpoints: loading in every official format, errors, the registry and the download path.

The fixtures in ``tests/fixtures/`` were produced by the official CRATE, CRATE-α and CRATE-MAE code
(random weights, a fixed input and the official outputs). Each fixture state dict is written here in
the formats the official code bases save (``{'state_dict'}`` with the DataParallel ``module.``
prefix, plain, the MAE codebase's ``{'model', 'args'}``, safetensors) and loaded through
``load_official``; the outputs must equal the official ones to 1e-4 (float32; measured ~3e-7 for
the classifiers, ~2e-6 for the MAE prediction). Every official preset is checked key by key and
shape by shape against ``official_state_dict_shapes.json`` on the meta device (no memory). Network
access is never attempted: ``huggingface_hub.hf_hub_download`` and ``gdown`` are replaced by fakes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import crate_edu
from crate_edu.weights import CheckpointError, OfficialWeights, WeightsUnavailableError, sha256sum
from crate_edu.weights import official as W
from crate_edu.weights import structure as S

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
TOL = 1e-4

# official_state_dict_shapes.json key -> crate_edu model name
OFFICIAL_NAMES = {
    "crate/CRATE_tiny": "crate_tiny",
    "crate/CRATE_small": "crate_small",
    "crate/CRATE_base": "crate_base",
    "crate/CRATE_large": "crate_large",
    "crate_mae/mae_crate_tiny": "crate_mae_tiny",
    "crate_mae/mae_crate_small": "crate_mae_small",
    "crate_mae/mae_crate_base": "crate_mae_base",
    "crate_mae/mae_crate_large": "crate_mae_large",
    "crate_alpha/CRATE_base": "crate_alpha_b16",
    "crate_alpha/CRATE_large": "crate_alpha_l14",
}


# ----------------------------------------------------------------------------------------- helpers
def _fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"official_{name}_fixture.pt", weights_only=True)


@pytest.fixture(scope="module")
def crate_fx() -> dict:
    return _fixture("crate_tiny")


@pytest.fixture(scope="module")
def alpha_fx() -> dict:
    return _fixture("crate_alpha_tiny")


@pytest.fixture(scope="module")
def mae_fx() -> dict:
    return _fixture("crate_mae_tiny")


@pytest.fixture(scope="module")
def official_shapes() -> dict[str, dict[str, list[int]]]:
    return json.loads((FIXTURES / "official_state_dict_shapes.json").read_text())


def crate_arch(cfg: dict) -> dict:
    """Architecture overrides for the official CRATE fixture config (num_classes, image and patch
    size are left out on purpose: ``load_official`` must infer them from the weights)."""
    return dict(
        dim=cfg["dim"],
        depth=cfg["depth"],
        heads=cfg["heads"],
        dim_head=cfg["dim_head"],
        pool=cfg.get("pool", "cls"),
        eta=cfg["ista_step"],
        lambd=cfg["ista_lambda"],
    )


def alpha_arch(cfg: dict) -> dict:
    return {**crate_arch(cfg), "overcomplete_ratio": cfg["overcomplete_ratio"]}


def mae_arch(cfg: dict) -> dict:
    assert cfg["decoder_embed_dim"] == cfg["embed_dim"] and cfg["norm_layer_eps"] == 1e-6
    return dict(
        dim=cfg["embed_dim"],
        depth=cfg["depth"],
        heads=cfg["num_heads"],
        decoder_depth=cfg["decoder_depth"],
        decoder_heads=cfg["decoder_num_heads"],
        lambd=cfg["encoder_ista_lambda"],
        mask_ratio=cfg["mask_ratio"],
    )


def write(path: Path, state_dict: dict, fmt: str) -> Path:
    """Save ``state_dict`` the way the official code bases (and common tools) do."""
    sd = {k: v.clone() for k, v in state_dict.items()}
    if fmt == "plain":
        torch.save(sd, path)
    elif fmt == "state_dict+module":  # official CRATE training script under DataParallel
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3, "arch": "x"}, path)
    elif fmt == "state_dict":
        torch.save({"state_dict": sd, "best_acc1": torch.tensor(12.5)}, path)
    elif fmt == "model":  # MAE codebase
        torch.save({"model": sd, "epoch": 7}, path)
    elif fmt == "model+args":  # MAE codebase's misc.save_model also stores the argparse Namespace
        torch.save({"model": sd, "epoch": 7, "args": argparse.Namespace(lr=1.5e-4, model="mae")}, path)
    elif fmt == "module":
        torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    elif fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:  # pragma: no cover
        raise ValueError(fmt)
    return path


def _suffix(fmt: str) -> str:
    return ".safetensors" if fmt == "safetensors" else ".pth"


# ---------------------------------------------------------------- equality with the official code
@pytest.mark.parametrize("fmt", ["state_dict+module", "state_dict", "plain", "safetensors"])
def test_crate_fixture_loads_and_matches_official_logits(tmp_path, crate_fx, fmt):
    path = write(tmp_path / f"crate{_suffix(fmt)}", crate_fx["state_dict"], fmt)
    model = crate_edu.load_official("crate_tiny", path, **crate_arch(crate_fx["config"]))
    assert not model.training
    cfg = crate_fx["config"]  # inferred from the weights: 10-class head, 17 = (32/8)² + 1 positions
    assert (model.config.num_classes, model.config.image_size, model.config.patch_size) == (
        cfg["num_classes"],
        cfg["image_size"],
        cfg["patch_size"],
    )
    with torch.no_grad():
        logits = model(crate_fx["input"])
    diff = (logits - crate_fx["logits"]).abs().max().item()
    assert diff <= TOL, f"max abs diff {diff:.3g}"


@pytest.mark.parametrize("fmt", ["plain", "module", "safetensors"])
def test_crate_alpha_fixture_loads_and_matches_official_logits(tmp_path, alpha_fx, fmt):
    path = write(tmp_path / f"alpha{_suffix(fmt)}", alpha_fx["state_dict"], fmt)
    model = crate_edu.load_official("crate_alpha_b16", path, **alpha_arch(alpha_fx["config"]))
    assert not model.training
    assert (model.config.num_classes, model.config.image_size, model.config.patch_size) == (10, 32, 8)
    with torch.no_grad():
        logits = model(alpha_fx["input"])
    diff = (logits - alpha_fx["logits"]).abs().max().item()
    assert diff <= TOL, f"max abs diff {diff:.3g}"


@pytest.mark.parametrize("fmt", ["model", "model+args", "plain", "safetensors"])
def test_crate_mae_fixture_loads_and_matches_official_outputs(tmp_path, mae_fx, fmt):
    path = write(tmp_path / f"mae{_suffix(fmt)}", mae_fx["state_dict"], fmt)
    model = crate_edu.load_official("crate_mae_base", path, **mae_arch(mae_fx["config"]))
    assert not model.training
    assert (model.config.image_size, model.config.patch_size) == (32, 8)
    with torch.no_grad():
        loss, pred, mask = model(mae_fx["input"], mask_ratio=0.75, noise=mae_fx["masking_noise"])
    assert torch.equal(mask, mae_fx["mask"])
    assert abs(loss.item() - mae_fx["loss"].item()) <= TOL
    diff = (pred - mae_fx["pred"]).abs().max().item()
    assert diff <= TOL, f"max abs diff {diff:.3g}"


def test_real_size_crate_tiny_file_loads(tmp_path, official_shapes):
    """A file with exactly the official CRATE-T keys and shapes loads into the preset unchanged."""
    shapes = official_shapes["crate/CRATE_tiny"]
    torch.manual_seed(0)
    sd = {k: torch.randn(s) for k, s in shapes.items()}
    path = write(tmp_path / "CRATE_tiny.pth", sd, "state_dict+module")
    model = crate_edu.load_official("crate_tiny", path)
    got = model.state_dict()
    assert list(got) == list(shapes)
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    assert model.config.num_classes == 1000 and model.config.image_size == 224


# -------------------------------------------------------------- every official preset, structurally
@pytest.mark.parametrize("official", list(OFFICIAL_NAMES))
def test_every_preset_matches_official_keys_and_shapes(official_shapes, official):
    """Built on the meta device: every key (in order) and shape equals the official state dict's."""
    name = OFFICIAL_NAMES[official]
    shapes = official_shapes[official]
    with torch.device("meta"):
        model = crate_edu.create_model(name)
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    report = S.compare_structure(S.expected_shapes(name), shapes)
    assert report.ok, report.describe()
    assert got == shapes and list(got) == list(shapes)
    assert S.infer_overrides(name, shapes) == {}  # the official files need no overrides
    assert S.detect_family(shapes) == official.split("/")[0]


def test_infer_overrides_from_shapes(official_shapes):
    small = dict(official_shapes["crate/CRATE_small"])
    small["mlp_head.1.weight"], small["mlp_head.1.bias"] = [10, 576], [10]  # CIFAR-10 fine-tune
    assert S.infer_overrides("crate_small", small) == {"num_classes": 10}
    small["pos_embedding"] = [1, 65, 576]  # 8 × 8 grid of 8-px patches: 64 px images
    small["to_patch_embedding.1.weight"] = small["to_patch_embedding.1.bias"] = [8 * 8 * 3]
    assert S.infer_overrides("crate_small", small) == {"num_classes": 10, "patch_size": 8, "image_size": 64}
    alpha = dict(official_shapes["crate_alpha/CRATE_large"])
    alpha["pos_embedding"] = [1, 577, 1024]  # L/14 at 336 px
    assert S.infer_overrides("crate_alpha_l14", alpha) == {"image_size": 336}
    # nothing is inferred across families
    assert S.infer_overrides("crate_tiny", official_shapes["crate_alpha/CRATE_base"]) == {}


# ------------------------------------------------------------------------------------ bad files
def test_truncated_file_is_rejected(tmp_path, crate_fx):
    good = write(tmp_path / "good.pth", crate_fx["state_dict"], "state_dict")
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="re-download") as info:
        crate_edu.load_official("crate_tiny", bad)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize(
    "content, expected",
    [
        (bytes(range(256)) * 8, "re-download"),
        (b"", "re-download"),
        (b"<!DOCTYPE html><html><title>Google Drive</title></html>", "HTML page"),
        (b"\x05\x00\x00\x00\x00\x00\x00\x00{broken header", "safetensors"),
    ],
)
def test_not_a_checkpoint_is_rejected(tmp_path, content, expected):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as info:
        crate_edu.load_official("crate_tiny", path)
    assert str(path) in str(info.value)


def test_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="download_official"):
        crate_edu.load_official("crate_tiny", tmp_path / "nope.pth")


UNPICKLED: list[str] = []


def _record_unpickling() -> str:
    UNPICKLED.append("ran")
    return "payload"


class Payload:
    """An object whose unpickling would run code (``_record_unpickling``)."""

    def __reduce__(self):
        return (_record_unpickling, ())


def test_file_needing_pickle_is_rejected_without_running_code(tmp_path, crate_fx):
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": dict(crate_fx["state_dict"]), "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="not a plain tensor checkpoint") as info:
        crate_edu.load_official("crate_tiny", path, **crate_arch(crate_fx["config"]))
    message = str(info.value)
    assert "_record_unpickling" in message  # names the object it refused
    assert "weights_only=False" in message and "torch.save" in message  # says how to convert
    assert UNPICKLED == []


def test_dict_without_state_dict_is_rejected(tmp_path):
    path = tmp_path / "opt.pth"
    torch.save({"optimizer": {"lr": 0.1}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="no state dict"):
        crate_edu.load_official("crate_tiny", path)


@pytest.mark.parametrize(
    "name, fixture, family_title, suggestion",
    [
        ("crate_alpha_b16", "crate_tiny", "CRATE checkpoint", "crate_tiny"),
        ("crate_tiny", "crate_alpha_tiny", "CRATE-α checkpoint", "crate_alpha_b16"),
        ("crate_small", "crate_mae_tiny", "CRATE-MAE checkpoint", "crate_mae_tiny"),
        ("crate_mae_base", "crate_tiny", "CRATE checkpoint", "crate_tiny"),
    ],
)
def test_wrong_family_names_the_right_one(tmp_path, name, fixture, family_title, suggestion):
    path = write(tmp_path / "w.pth", _fixture(fixture)["state_dict"], "plain")
    with pytest.raises(CheckpointError) as info:
        crate_edu.load_official(name, path)
    message = str(info.value)
    assert f"this looks like a {family_title}" in message
    assert suggestion in message
    assert "missing keys" in message and "unexpected keys" in message


def test_other_preset_of_the_same_family_is_suggested(tmp_path, official_shapes):
    sd = {k: torch.zeros(s) for k, s in official_shapes["crate/CRATE_tiny"].items()}
    path = write(tmp_path / "CRATE_tiny.pth", sd, "state_dict")
    with pytest.raises(CheckpointError, match="use name='crate_tiny'") as info:
        crate_edu.load_official("crate_small", path)
    assert "expected (1, 197, 576), got (1, 197, 384)" in str(info.value)


def test_missing_and_unexpected_keys_are_named_with_counts(tmp_path, crate_fx):
    sd = dict(crate_fx["state_dict"])
    del sd["transformer.layers.1.1.fn.weight"], sd["mlp_head.0.bias"]
    sd["transformer.layers.2.0.fn.qkv.weight"] = torch.zeros(64, 64)
    path = write(tmp_path / "w.pth", sd, "state_dict+module")
    with pytest.raises(CheckpointError) as info:
        crate_edu.load_official("crate_tiny", path, **crate_arch(crate_fx["config"]))
    message = str(info.value)
    assert "missing keys (2 of 28): transformer.layers.1.1.fn.weight, mlp_head.0.bias" in message
    assert "unexpected keys (1): transformer.layers.2.0.fn.qkv.weight" in message
    assert "what to do:" in message and "\n" not in message  # one line


def test_strict_false_loads_partial_file_with_warning(tmp_path, crate_fx):
    sd = dict(crate_fx["state_dict"])
    del sd["mlp_head.1.bias"]
    path = write(tmp_path / "partial.pth", sd, "plain")
    arch = crate_arch(crate_fx["config"])
    with pytest.raises(CheckpointError, match="pass strict=False"):
        crate_edu.load_official("crate_tiny", path, **arch)
    with pytest.warns(UserWarning, match="mlp_head.1.bias"):
        model = crate_edu.load_official("crate_tiny", path, strict=False, **arch)
    assert torch.equal(model.mlp_head[1].weight, sd["mlp_head.1.weight"])


def test_shape_mismatch_names_key_and_both_shapes(tmp_path, crate_fx):
    sd = dict(crate_fx["state_dict"])
    sd["transformer.layers.0.0.fn.qkv.weight"] = torch.zeros(32, 64)
    path = write(tmp_path / "w.pth", sd, "plain")
    with pytest.raises(CheckpointError) as info:
        crate_edu.load_official("crate_tiny", path, **crate_arch(crate_fx["config"]))
    assert "transformer.layers.0.0.fn.qkv.weight: expected (64, 64), got (32, 64)" in str(info.value)
    # strict=False never loads a wrong shape
    with pytest.raises(CheckpointError, match="shape mismatches"):
        crate_edu.load_official("crate_tiny", path, strict=False, **crate_arch(crate_fx["config"]))


def test_differently_configured_file_reports_width_and_depth(tmp_path, crate_fx):
    path = write(tmp_path / "w.pth", crate_fx["state_dict"], "plain")
    with pytest.raises(CheckpointError, match=r"width dim=64, depth=2"):
        crate_edu.load_official("crate_tiny", path)  # no architecture overrides given


def test_unknown_name_lists_choices(tmp_path):
    with pytest.raises(ValueError, match="crate_alpha_b16"):
        crate_edu.load_official("crate_huge", tmp_path / "x.pth")


# ------------------------------------------------------------------------------------- registry
def test_registry_entries(monkeypatch):
    entries = {w.key: w for w in crate_edu.list_official()}
    models = set(crate_edu.list_models())
    small = entries["crate_small_in1k"]
    assert (small.source, small.file_id, small.top1) == ("gdrive", "1hYgDJl4EKHYfKprwhEjmWmWHuxnK6_h8", 69.2)
    assert "#30" in small.notes and small.url.startswith("https://drive.google.com/")
    assert entries["crate_mae_base_in1k"].file_id == "11i5BMwymqOsunq44WD3omN5mS6ZREQPO"
    b16, l14 = entries["crate_alpha_b16_in1k"], entries["crate_alpha_l14_in1k"]
    assert (b16.repo_id, b16.filename, b16.top1) == (
        "UCSC-VLAA/CRATE-alpha",
        "torch/crate_alpha_B16.pth",
        81.2,
    )
    assert (l14.filename, l14.top1) == ("torch/crate_alpha_L14.pth", 83.9)
    for key in ("crate_tiny_in1k", "crate_base_in1k", "crate_large_in1k"):
        assert entries[key].source is None and "never published" in entries[key].notes
    for key, size, top1 in (("crate_alpha_clipa_l14", "L14", 69.8), ("crate_alpha_clipa_h14", "H14", 72.3)):
        clipa = entries[key]
        assert clipa.loadable and clipa.model == key  # the key is also the model's name
        assert (clipa.repo_id, clipa.filename, clipa.top1) == (
            "UCSC-VLAA/CRATE-alpha",
            f"torch/crate_alpha_CLIPA_{size}.pth",
            top1,
        )
    for w in entries.values():
        assert w.model is None or w.model in models
        assert w.sha256 is None or len(w.sha256) == 64
    monkeypatch.setitem(W.OFFICIAL_WEIGHTS, "other", OfficialWeights("other", None, "hf", notes="elsewhere"))
    with pytest.raises(ValueError, match="cannot be loaded"):
        crate_edu.load_official("other", "x.pth")
    assert W.get_official("crate_alpha_b16") is b16  # a model name with one entry resolves
    with pytest.raises(ValueError, match="known keys"):
        W.get_official("nope")


def test_cache_path_is_in_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CRATE_EDU_CACHE", str(tmp_path / "c"))
    assert W.cache_path("crate_small_in1k") == tmp_path / "c" / "crate_small_in1k.pth"
    assert W.cache_path("crate_alpha_b16", cache_dir=tmp_path) == tmp_path / "crate_alpha_b16_in1k.pth"


# ------------------------------------------------------------------------------------- download
class FakeHub:
    """Stands in for ``huggingface_hub.hf_hub_download``: raises, or writes ``state_dict``."""

    def __init__(self, state_dict=None, error: Exception | None = None, outside: Path | None = None):
        self.state_dict, self.error, self.outside, self.calls = state_dict, error, outside, 0

    def __call__(self, repo_id: str, filename: str, *, local_dir, **kwargs) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        root = self.outside if self.outside is not None else Path(local_dir)  # outside: a hub cache
        path = root / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict, path)
        return str(path)


def fake_gdown(monkeypatch, behaviour) -> types.ModuleType:
    module = types.ModuleType("gdown")
    module.download = behaviour
    monkeypatch.setitem(sys.modules, "gdown", module)
    return module


@pytest.fixture
def test_entry(monkeypatch, crate_fx):
    """A registry entry whose published file is the (small) official CRATE fixture."""
    cfg = crate_fx["config"]
    overrides = {**crate_arch(cfg), "num_classes": 10, "image_size": 32, "patch_size": 8}
    entry = OfficialWeights(
        "test_crate_fixture",
        "crate_tiny",
        "hf",
        repo_id="crate-edu/test",
        filename="torch/test_fixture.pth",
        overrides=overrides,
    )
    monkeypatch.setitem(W.OFFICIAL_WEIGHTS, entry.key, entry)
    return entry


def test_download_offline_hf_says_where_to_put_the_file(tmp_path, monkeypatch):
    import huggingface_hub

    hub = FakeHub(error=OSError("offline: cannot reach huggingface.co"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub)
    with pytest.raises(WeightsUnavailableError) as info:
        crate_edu.download_official("crate_alpha_b16_in1k", cache_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "crate_alpha_b16_in1k.pth") in message
    assert "https://huggingface.co/UCSC-VLAA/CRATE-alpha/blob/main/torch/crate_alpha_B16.pth" in message
    assert "crate_edu.load_official('crate_alpha_b16'" in message and "offline" in message
    assert hub.calls == 1 and list(tmp_path.iterdir()) == []  # no partial file left behind


@pytest.mark.parametrize("failure", ["raise", "none", "html"])
def test_download_dead_drive_link(tmp_path, monkeypatch, failure):
    def download(id, output, quiet=False, **kwargs):
        assert id == "1hYgDJl4EKHYfKprwhEjmWmWHuxnK6_h8"
        if failure == "raise":
            raise RuntimeError("Cannot retrieve the public link of the file.")
        if failure == "html":
            Path(output).write_text("<html><body>Quota exceeded</body></html>")
            return output
        return None

    fake_gdown(monkeypatch, download)
    with pytest.raises(WeightsUnavailableError) as info:
        crate_edu.download_official("crate_small_in1k", cache_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "crate_small_in1k.pth") in message
    assert "https://drive.google.com/file/d/1hYgDJl4EKHYfKprwhEjmWmWHuxnK6_h8/view" in message
    assert "issue #30" in message
    assert list(tmp_path.iterdir()) == []


def test_download_never_published(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="never published"):
        crate_edu.download_official("crate_base_in1k", cache_dir=tmp_path)


@pytest.mark.parametrize("outside_hub_cache", [False, True])
def test_download_success_checks_moves_and_caches(
    tmp_path, monkeypatch, crate_fx, test_entry, outside_hub_cache
):
    import huggingface_hub

    cache = tmp_path / "cache"
    hub_cache = tmp_path / "hub" if outside_hub_cache else None
    hub = FakeHub(state_dict={"state_dict": dict(crate_fx["state_dict"])}, outside=hub_cache)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub)
    path = crate_edu.download_official(test_entry.key, cache_dir=cache)
    assert path == cache / "test_crate_fixture.pth" and path.is_file()
    assert sorted(p.name for p in cache.iterdir()) == ["test_crate_fixture.pth"]  # temp folder removed
    if outside_hub_cache:  # the hub's own copy is copied, not moved
        assert (hub_cache / test_entry.filename).is_file()
    assert crate_edu.download_official(test_entry.key, cache_dir=cache) == path
    assert hub.calls == 1  # cached: no second download
    crate_edu.download_official(test_entry.key, cache_dir=cache, force=True)
    assert hub.calls == 2

    monkeypatch.setenv("CRATE_EDU_CACHE", str(cache))
    model = crate_edu.load_official(test_entry.key)  # path=None: from the cache
    with torch.no_grad():
        assert (model(crate_fx["input"]) - crate_fx["logits"]).abs().max().item() <= TOL


def test_download_structural_check_rejects_wrong_file(tmp_path, monkeypatch, alpha_fx, test_entry):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", FakeHub(state_dict=dict(alpha_fx["state_dict"])))
    with pytest.raises(CheckpointError, match="CRATE-α checkpoint"):
        crate_edu.download_official(test_entry.key, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing moved into the cache


def test_download_sha256_check(tmp_path, monkeypatch, crate_fx, test_entry):
    import dataclasses

    import huggingface_hub

    sd = dict(crate_fx["state_dict"])
    reference = write(tmp_path / "reference.pth", sd, "plain")
    digest = hashlib.sha256(reference.read_bytes()).hexdigest()
    assert sha256sum(reference) == digest

    def hub(repo_id, filename, *, local_dir, **kwargs):
        out = Path(local_dir) / filename
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(reference.read_bytes())
        return str(out)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub)
    wrong = dataclasses.replace(test_entry, sha256="0" * 64)
    monkeypatch.setitem(W.OFFICIAL_WEIGHTS, test_entry.key, wrong)
    with pytest.raises(CheckpointError, match=f"sha256 {digest} differs"):
        crate_edu.download_official(test_entry.key, cache_dir=tmp_path / "c1")
    assert list((tmp_path / "c1").iterdir()) == []

    right = dataclasses.replace(test_entry, sha256=digest.upper())
    monkeypatch.setitem(W.OFFICIAL_WEIGHTS, test_entry.key, right)
    path = crate_edu.download_official(test_entry.key, cache_dir=tmp_path / "c2")
    report = W.verify_checkpoint(test_entry.key, path)
    assert report["ok"] and report["sha256_ok"] and report["sha256"] == digest


def test_verify_checkpoint_report(tmp_path, crate_fx, test_entry):
    good = write(tmp_path / "good.pth", crate_fx["state_dict"], "state_dict+module")
    report = W.verify_checkpoint(test_entry.key, good)
    assert report["ok"] and report["keys_ok"] and report["shapes_ok"] and report["error"] is None
    assert report["family"] == "crate" and report["num_keys"] == report["num_expected"] == 28
    assert report["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest() and report["sha256_ok"] is None

    sd = dict(crate_fx["state_dict"])
    del sd["cls_token"]
    sd["pos_embedding"] = torch.zeros(1, 5, 64)
    bad = write(tmp_path / "bad.pth", sd, "plain")
    report = W.verify_checkpoint(test_entry.key, bad)
    assert not report["ok"] and not report["keys_ok"] and not report["shapes_ok"]
    assert report["missing"] == ["cls_token"]
    assert report["mismatched"] == {"pos_embedding": [[1, 17, 64], [1, 5, 64]]}

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 100)
    report = W.verify_checkpoint("crate_tiny", junk)
    assert not report["ok"] and "re-download" in report["error"]
    assert not W.verify_checkpoint("crate_tiny", tmp_path / "missing.pth")["ok"]


def test_verify_not_loadable_entry_checks_only_the_hash(tmp_path, monkeypatch):
    entry = OfficialWeights("other", None, "hf", repo_id="x/y", filename="other.pth")
    monkeypatch.setitem(W.OFFICIAL_WEIGHTS, "other", entry)
    path = tmp_path / "other.pth"
    torch.save({"visual": {"w": torch.zeros(2)}, "text": {"w": torch.zeros(2)}}, path)
    report = W.verify_checkpoint("other", path)
    assert report["ok"] and report["model"] is None and report["sha256_ok"] is None
    assert report["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------
# The published ImageNet-21K pre-training checkpoints (torch/in21k_Pretrain/)

#: docs/notes/crate_alpha_official_code.md §4.2: (key, hub file, size listed by the hub in bytes).
IN21K_FILES = [
    ("crate_alpha_b16_in21k", "crate_alpha_B16_IN21K", 345e6),
    ("crate_alpha_b32_in21k", "crate_alpha_B32_in21k.pth", 352e6),
    ("crate_alpha_b8_in21k", "crate_alpha_B8_IN21K", 345e6),
    ("crate_alpha_l14_in21k", "crate_alpha_L14_IN21K", 1.09e9),
    ("crate_alpha_l32_in21k", "crate_alpha_L32_in21k.pth", 1.1e9),
    ("crate_alpha_l8_in21k", "crate_alpha_L8_IN21K", 1.09e9),
]


@pytest.mark.parametrize("key, filename, size", IN21K_FILES)
def test_in21k_entries_predict_the_published_file_sizes(key, filename, size):
    """The 19,167-way classifier layout of each entry (built on the meta device) has the hub's file size."""
    entry = W.get_official(key)
    assert (entry.repo_id, entry.filename) == ("UCSC-VLAA/CRATE-alpha", f"torch/in21k_Pretrain/{filename}")
    assert entry.loadable and entry.overrides["num_classes"] == 19167 and entry.top1 is None
    assert W.cache_path(key).name == f"{key}.pth"  # extension-less hub names are cached as .pth
    shapes = S.expected_shapes(entry.model, **entry.overrides)
    assert shapes["mlp_head.1.weight"] == (19167, shapes["cls_token"][-1])
    patch = entry.overrides["patch_size"]
    assert shapes["conv1.weight"][-2:] == (patch, patch)
    assert shapes["pos_embedding"][1] == (224 // patch) ** 2 + 1
    assert len(shapes) == (104 if "_b" in key else 200)  # the crate_alpha.py classifier's tensors
    nbytes = 4 * sum(math.prod(s) for s in shapes.values())  # float32
    assert abs(nbytes - size) / size < 0.01, (nbytes, size)


def test_in21k_checkpoint_loads_by_name_and_checks_its_structure(tmp_path):
    """An in21k-layout file (tiny widths) loads by key with a 19,167-way head; a 1,000-way one is refused."""
    tiny = dict(dim=32, depth=2, heads=2)
    src = crate_edu.create_model("crate_alpha_b16", num_classes=19167, patch_size=32, **tiny)
    path = tmp_path / "crate_alpha_B32_in21k"  # no extension, as some hub files
    torch.save(src.state_dict(), path)
    model = crate_edu.load_official("crate_alpha_b32_in21k", path, **tiny)
    assert model.config.num_classes == 19167 and model.config.patch_size == 32
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(model(x), src.eval()(x))
    wrong = crate_edu.create_model("crate_alpha_b16", patch_size=32, **tiny).state_dict()  # 1,000 classes
    torch.save(wrong, path)
    with pytest.raises(
        CheckpointError, match="mlp_head.1.weight: expected \\(19167, 32\\), got \\(1000, 32\\)"
    ) as err:
        crate_edu.load_official("crate_alpha_b32_in21k", path, **tiny)
    assert "\n" not in str(err.value)


def test_full_size_in21k_structure_on_the_meta_device():
    """The B/16 key list at full size: a 19,167-way head passes, the ImageNet-1K preset's is named."""
    with torch.device("meta"):
        full = crate_edu.create_model("crate_alpha_b16", num_classes=19167).state_dict()
    assert S.check_structure("crate_alpha_b16", full, Path("B16_IN21K"), {"num_classes": 19167}, True).ok
    assert S.infer_overrides("crate_alpha_b16", full) == {"num_classes": 19167}
    with pytest.raises(CheckpointError, match="shape mismatches \\(2\\): mlp_head.1.weight"):
        S.check_structure("crate_alpha_b16", full, Path("B16_IN21K"), {}, True)
    assert W.get_official("crate_alpha_b16").key == "crate_alpha_b16_in1k"  # the preset's own weights
