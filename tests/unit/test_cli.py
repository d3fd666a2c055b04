"""Tests of the ``crate-edu`` command line: bad input is one line and exit status 2; the commands work."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crate_edu.cli import main
from crate_edu.train import RECIPES, load_checkpoint, read_jsonl

TINY = ["--depth", "1", "--dim", "32", "--heads", "2", "--patch-size", "8", "--threads", "1"]
QUICK = ["--limit-train", "64", "--limit-test", "32", "--batch-size", "32", "--epochs", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def _on_the_cpu(monkeypatch):
    """These tests compare CPU float results: a GPU, where there is one, is left out."""
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``crate-edu ARGS`` run in this process."""
    try:
        code = main(args)
    except SystemExit as e:  # argparse errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.fixture
def finished_run(tmp_path_factory) -> Path:
    """A one-epoch run folder of a tiny CRATE on 64 digits."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--out", str(out), *TINY, *QUICK]) == 0
    return out


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["train", "--model", "crate_huge"],
            ("unknown model 'crate_huge'", "choose one of: crate_alpha_b16"),
        ),
        (["train", "--model", "crate_mae_base"], "masked autoencoder"),
        (["train", "--dataset", "mnist"], "unknown dataset 'mnist'; choose one of: cifar10"),
        (["train", "--recipe", "imagenet1k"], ("did you mean imagenet", "choose one of: digits-quick")),
        (["train", "--optimizer", "adam"], "choose one of: lion, adamw, sgd"),
        (["train", "--precision", "fp16"], "fp16 needs a GPU"),
        (["train", "--precision", "fp8"], "unknown precision 'fp8'; choose one of: auto, no, fp16, bf16"),
        (["train", "--augment", "mixup"], "unknown augmentation policy 'mixup'"),
        (
            ["train", "--normalize", "cifar"],
            "unknown normalisation 'cifar'; choose one of: dataset, imagenet",
        ),
        (["train", "--epochs", "-2"], "epochs must be a positive integer, got -2"),
        (["train", "--epochs", "0"], "epochs must be a positive integer, got 0"),
        (["train", "--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
        (["train", "--batch-size", "0"], "batch-size must be a positive integer, got 0"),
        (["train", "--batch-size", "-8"], "batch-size must be a positive integer, got -8"),
        (["train", "--batch-size", "2000"], "larger than the train split (1438 images of digits)"),
        (["train", "--lr", "-1"], "lr must be positive"),
        (["train", "--patch-size", "5"], "model 'crate_nano_cifar'"),
        (["train", "--recipe", "finetune"], "pass --pretrained PATH"),
        (["train", "--pretrained", "nowhere.pth"], "no such file, and not the key of published weights"),
        (["train", "--resume"], "--resume needs the run folder"),
        (["eval", "nowhere.pt"], "no checkpoint at nowhere.pt"),
        (["fetch", "mnist"], "unknown name(s) 'mnist'; datasets: cifar10"),
        (["fetch", "imagenet"], "cannot be fetched automatically"),
        (["list", "everything"], "invalid choice: 'everything'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], expected: str | tuple[str, ...], capsys, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written into the repository
    code, _, err = run_main(args, capsys)
    assert_one_line_error(code, err, *([expected] if isinstance(expected, str) else expected))
    assert not (tmp_path / "runs").exists()


def test_missing_dataset_is_one_line(tmp_path: Path, capsys) -> None:
    args = [
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        str(tmp_path),
        "--no-download",
        "--out",
        str(tmp_path / "r"),
    ]
    code, _, err = run_main(args, capsys)
    assert_one_line_error(code, err, "dataset 'cifar10' not found")
    assert "crate-edu fetch cifar10" in err and "--data-dir" in err


def test_run_folder_errors(finished_run: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_main(["train", "--out", str(finished_run), *TINY, *QUICK], capsys)
    assert_one_line_error(code, err, "already holds a run")
    code, _, err = run_main(["train", "--out", str(finished_run), "--resume", "--lr", "0.5"], capsys)
    assert_one_line_error(code, err, "cannot change lr when resuming")
    code, _, err = run_main(["train", "--out", str(tmp_path / "empty"), "--resume"], capsys)
    assert_one_line_error(code, err, "no checkpoint at")
    code, _, err = run_main(["eval", str(finished_run), "--dataset", "cifar100"], capsys)
    assert_one_line_error(code, err, "predicts 10 classes but cifar100 has 100")
    text = tmp_path / "weights.pt"
    shutil.copy(finished_run / "config.json", text)
    code, _, err = run_main(["eval", str(text)], capsys)
    assert_one_line_error(code, err, "is a text file", "not a PyTorch checkpoint")
    import torch

    not_ours = tmp_path / "state_dict.pt"
    torch.save(load_checkpoint(finished_run)["model"], not_ours)
    code, _, err = run_main(["eval", str(not_ours)], capsys)
    assert_one_line_error(code, err, "is not a crate-edu checkpoint", "--model NAME and --dataset NAME")


def test_console_script_and_module_report_errors_without_traceback(tmp_path: Path) -> None:
    commands = [[sys.executable, "-m", "crate_edu"]]
    if shutil.which("crate-edu"):
        commands.append([shutil.which("crate-edu")])
    for cmd in commands:
        proc = subprocess.run([*cmd, "train", "--epochs", "-1"], capture_output=True, text=True, cwd=tmp_path)
        assert_one_line_error(proc.returncode, proc.stderr, "epochs must be a positive integer, got -1")
        assert not (tmp_path / "runs").exists()


def test_genuine_bugs_still_raise(monkeypatch, tmp_path) -> None:
    import crate_edu.train

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(crate_edu.train, "train", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", "--out", str(tmp_path / "r")])


def test_ctrl_c_exits_130_with_the_resume_command(monkeypatch, tmp_path, capsys) -> None:
    import crate_edu.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(crate_edu.train, "train", interrupted)
    code, _, err = run_main(["train", "--out", str(tmp_path / "r")], capsys)
    assert code == 130
    assert (
        err.strip()
        == f"crate-edu train: interrupted (continue with: crate-edu train --out {tmp_path / 'r'} --resume)"
    )


def test_train_without_arguments_runs_digits_quick(tmp_path: Path, monkeypatch, capsys) -> None:
    # The real recipe with one epoch instead of fifteen, to keep the test fast.
    monkeypatch.setitem(RECIPES, "digits-quick", dataclasses.replace(RECIPES["digits-quick"], epochs=1))
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_main(["train"], capsys)
    assert code == 0
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("digits-quick-")
    assert f"run folder: {Path('runs') / folder.name}" in out
    (record,) = read_jsonl(folder / "metrics.jsonl")
    assert record["epoch"] == 1 and record["test_acc"] > 0.2  # one epoch of digits-quick
    assert load_checkpoint(folder)["config"]["recipe"] == "digits-quick"


def test_eval_reports_the_logged_metrics(finished_run: Path, capsys) -> None:
    code, out, _ = run_main(["eval", str(finished_run / "checkpoint.pt"), "--json", "--limit", "32"], capsys)
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    (record,) = read_jsonl(finished_run / "metrics.jsonl")
    assert result["n"] == 32
    # --limit 32 picks the same fixed subset as the run's --limit-test 32
    assert result["acc"] == pytest.approx(record["test_acc"], abs=1e-9)
    assert result["loss"] == pytest.approx(record["test_loss"], rel=1e-5)
    code, out, _ = run_main(["eval", str(finished_run)], capsys)
    assert code == 0 and out.startswith("digits test: acc ")


def test_export_writes_weights_that_rebuild_the_model(finished_run: Path, tmp_path: Path, capsys) -> None:
    import torch

    from crate_edu.weights.tutorial import load_weights

    out = tmp_path / "w.safetensors"
    code, text, _ = run_main(
        ["export", str(finished_run), str(out), "--command", "crate-edu train ..."], capsys
    )
    assert code == 0 and text.strip() == f"wrote {out}"
    model, info = load_weights(out)
    ckpt = load_checkpoint(finished_run)
    assert info.metadata["command"] == "crate-edu train ..."
    assert info.metadata["final_metrics"]["test_acc"] == ckpt["history"][-1]["test_acc"]
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, ckpt["model"][name], rtol=0, atol=0)
    code, _, err = run_main(["export", str(finished_run), str(tmp_path / "w.pt")], capsys)
    assert_one_line_error(code, err, "must end in .safetensors")
    code, _, err = run_main(["export", str(tmp_path / "nothing"), str(out)], capsys)
    assert_one_line_error(code, err, "no checkpoint at")


def test_resume_from_the_command_line_extends_a_run(finished_run: Path, capsys) -> None:
    with pytest.warns(UserWarning, match="stretched"):
        code, out, _ = run_main(["train", "--out", str(finished_run), "--resume", "--epochs", "2"], capsys)
    assert code == 0
    assert [r["epoch"] for r in read_jsonl(finished_run / "metrics.jsonl")] == [1, 2]
    assert "done: test_acc" in out


def test_fetch_and_list(capsys) -> None:
    code, out, _ = run_main(["fetch", "digits"], capsys)
    assert code == 0 and out.startswith("digits: ")
    code, out, _ = run_main(["list", "recipes"], capsys)
    assert code == 0 and all(name in out for name in RECIPES)
    for what in ("models", "datasets", "weights"):
        code, out, _ = run_main(["list", what], capsys)
        assert code == 0 and out.strip()


def test_finetune_recipe_from_an_official_checkpoint(tmp_path: Path, capsys) -> None:
    """--pretrained reads an official-format file (module. prefix, 5-class head), replaces the head."""
    import torch

    fixture = torch.load(
        Path(__file__).resolve().parents[1] / "fixtures" / "official_crate_tiny_fixture.pt", weights_only=True
    )
    state = dict(fixture["state_dict"])
    state["mlp_head.1.weight"] = torch.randn(5, 64)  # a head for 5 classes: must be replaced for 10
    state["mlp_head.1.bias"] = torch.zeros(5)
    official = tmp_path / "CRATE_fixture.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, official)

    shape = ["--depth", "2", "--dim", "64", "--heads", "4", "--patch-size", "8", "--threads", "1"]
    args = ["train", "--recipe", "finetune", "--pretrained", str(official), "--model", "crate_nano_cifar"]
    args += [*shape, "--dataset", "digits", "--image-size", "32", *QUICK, "--out", str(tmp_path / "ft")]
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    ckpt = load_checkpoint(tmp_path / "ft")
    assert ckpt["config"]["optimizer"] == "adamw" and ckpt["config"]["lr"] == 5e-5
    assert ckpt["model"]["mlp_head.1.weight"].shape == (10, 64)
    # one epoch at lr 5e-5 barely moves the body: it started from the official weights
    delta = (ckpt["model"]["pos_embedding"] - state["pos_embedding"]).abs().max()
    assert delta < 1e-2

    wrong = [*args[:-1], str(tmp_path / "ft2")]
    wrong[wrong.index("--image-size") + 1] = "64"
    code, _, err = run_main(wrong, capsys)
    assert_one_line_error(code, err, "weights are for 32 px images", "--image-size 32")


# --------------------------------------------------------------------------------------------
# crate-edu eval --zero-shot: a tiny CRATE-α-CLIPA in the official key layout, a fake ImageNet val.
# --------------------------------------------------------------------------------------------

VOCAB = Path(__file__).resolve().parents[1] / "fixtures" / "bert_uncased_vocab_small.txt"
TINY_CLIPA = "crate_alpha_clipa_test_tiny"
TINY_CLIPA_SIZES = dict(
    image_size=28, patch_size=14, vision_width=16, vision_depth=1, vision_heads=2, context_length=32,
    vocab_size=330, text_width=16, text_depth=1, text_heads=2, embed_dim=8,
)  # fmt: skip
#: Two of the 80 templates keep the 1000 class embeddings quick (80 x 1000 prompts take a minute here).
TWO_TEMPLATES = ["a bad photo of a {}.", "a photo of many {}."]


@pytest.fixture(scope="module")
def zero_shot_files(tmp_path_factory) -> dict:
    """tiny.pth (a plain state dict, official key names) and DIR/val/<wnid>/*.JPEG whose classes are
    chosen from the model's own ranking: two images in their top-1 class, one in a class ranked 2nd
    to 5th, one ranked 501st or lower, so the expected result is top-1 2/4 and top-5 3/4."""
    import numpy as np
    import torch
    from PIL import Image

    from crate_edu.evaluation import (
        class_embeddings,
        imagenet_classnames,
        imagenet_wnids,
        zero_shot_logits,
        zero_shot_transform,
    )
    from crate_edu.models.crate_alpha_clipa import CRATEAlphaCLIPA
    from crate_edu.text import CLIPATokenizer

    root = tmp_path_factory.mktemp("zero_shot")
    torch.manual_seed(0)
    model = CRATEAlphaCLIPA(**TINY_CLIPA_SIZES).eval()
    torch.save(model.state_dict(), root / "tiny.pth")
    W = class_embeddings(model.encode_text, CLIPATokenizer(VOCAB), imagenet_classnames(), TWO_TEMPLATES)
    colours = [(230, 30, 30), (30, 200, 40), (40, 40, 220), (128, 128, 128)]  # different enough features
    wanted_ranks = [range(1), range(1), range(1, 5), range(500, 1000)]
    taken: set[str] = set()
    for k, ranks in enumerate(wanted_ranks):
        source = root / f"img_{k}.JPEG"
        noise = np.random.default_rng(k).integers(-20, 21, (20, 28, 3))
        Image.fromarray(np.clip(np.array(colours[k]) + noise, 0, 255).astype(np.uint8)).save(source)
        with Image.open(source) as image, torch.no_grad():
            x = zero_shot_transform(28)(image.convert("RGB"))[None]  # (1, 3, 28, 28)
            order = zero_shot_logits(model.encode_image(x), W)[0].argsort(descending=True)
        free = [w for w in (imagenet_wnids()[int(order[r])] for r in ranks) if w not in taken]
        assert free, "two images rank one class first: change the colours"
        taken.add(free[0])
        target = root / "val" / free[0] / f"ILSVRC2012_val_0000000{k}.JPEG"  # ImageNet's val layout
        target.parent.mkdir(parents=True)
        source.rename(target)
    return {"root": root, "weights": root / "tiny.pth", "model": model}


@pytest.fixture
def tiny_clipa_preset(monkeypatch):
    """Register the tiny model as a preset for this test only."""
    from crate_edu.models import registry
    from crate_edu.models.crate_alpha_clipa import CRATEAlphaCLIPA, CRATEAlphaCLIPAConfig

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_model(TINY_CLIPA, CRATEAlphaCLIPA, CRATEAlphaCLIPAConfig(**TINY_CLIPA_SIZES), "tiny")


@pytest.fixture
def two_templates(monkeypatch):
    from crate_edu.evaluation import zero_shot

    monkeypatch.setattr(zero_shot, "imagenet_templates", lambda: list(TWO_TEMPLATES))


def zero_shot_args(files: dict, *extra: str) -> list[str]:
    return ["eval", str(files["weights"]), "--zero-shot", "--data-dir", str(files["root"]), *extra]


def test_zero_shot_eval_of_a_tiny_clipa_on_a_fake_imagenet_val(
    zero_shot_files, tiny_clipa_preset, two_templates, monkeypatch, capsys
) -> None:
    code, out, err = run_main(zero_shot_args(zero_shot_files, "--vocab", str(VOCAB), "--no-progress"), capsys)
    assert code == 0, err
    assert out == (
        f"imagenet test, zero-shot ({TINY_CLIPA}, 1000 classes × 2 templates): "
        "top-1 0.5000 (2/4), top-5 0.7500 (3/4)\n"
    )
    # the vocabulary from the hub (faked: the hub's cache layout), JSON, a subset, the model named
    import huggingface_hub

    def fake_download(repo_id, filename, cache_dir=None, **kw):
        assert (repo_id, filename) == ("bert-base-uncased", "vocab.txt")
        return str(VOCAB)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    code, out, err = run_main(zero_shot_args(zero_shot_files, "--vocab-from-hub", "--json"), capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["top1"] == 0.5 and result["top5"] == 0.75 and result["n"] == 4
    assert result["model"] == TINY_CLIPA and (result["classes"], result["templates"]) == (1000, 2)
    assert result["zero_shot"] is True and result["data"] == "imagenet test"
    assert (result["device"], result["precision"]) == ("cpu", "no")
    assert "zero-shot" in err or "class embeddings" in err  # the progress bars, on stderr
    code, out, err = run_main(
        zero_shot_args(
            zero_shot_files, "--vocab", str(VOCAB), "--json", "--limit", "2", "--model", TINY_CLIPA
        ),
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["n"] == 2


def _write_state_dict(path: Path, model) -> Path:
    import torch

    torch.save(model.state_dict(), path)
    return path


def test_zero_shot_bad_input_is_one_line(zero_shot_files, tiny_clipa_preset, tmp_path, monkeypatch, capsys):
    from crate_edu.models import create_model
    from crate_edu.models.crate_alpha_clipa import CRATEAlphaCLIPA

    files, vocab = zero_shot_files, ["--vocab", str(VOCAB)]
    cases = [
        (zero_shot_args(files), "--zero-shot needs the text tokenizer's vocabulary: pass --vocab"),
        (zero_shot_args(files, "--vocab", str(tmp_path / "vocab.txt")), "no vocabulary file at"),
        (zero_shot_args(files, "--vocab", str(files["weights"])), "is not UTF-8 text"),
        (
            ["eval", str(files["weights"]), "--zero-shot", "--data-dir", str(tmp_path / "none"), *vocab],
            "imagenet",
        ),
        (zero_shot_args(files, *vocab, "--dataset", "cifar10"), "choose --dataset imagenet or imagenet-100"),
        (["eval", str(files["weights"]), *vocab], "are for --zero-shot; add --zero-shot"),
        (["eval", str(tmp_path / "no.pth"), "--zero-shot", "--data-dir", str(files["root"]), *vocab],
         "no weights file at"),
    ]  # fmt: skip
    classifier = _write_state_dict(tmp_path / "alpha.pth", create_model("crate_alpha_nano_cifar"))
    cases.append(
        (
            ["eval", str(classifier), "--zero-shot", "--data-dir", str(files["root"]), *vocab],
            "is not CRATE-α-CLIPA weights (its keys are those of a crate_alpha model); --zero-shot needs",
        )
    )
    (tmp_path / "page.pth").write_text("<html>not weights</html>")
    page = tmp_path / "page.pth"
    cases.append((["eval", str(page), "--zero-shot", "--data-dir", str(files["root"]), *vocab], "page.pth"))
    wider = _write_state_dict(
        tmp_path / "wider.pth", CRATEAlphaCLIPA(**{**TINY_CLIPA_SIZES, "vision_width": 32})
    )
    cases.append(
        (
            ["eval", str(wider), "--zero-shot", "--data-dir", str(files["root"]), *vocab],
            "is a CRATE-α-CLIPA state dict that fits none of the presets",
        )
    )
    cases.append(
        (
            zero_shot_args(files, *vocab, "--model", "crate_alpha_clipa_l14"),
            "does not fit model 'crate_alpha_clipa_l14'",
        )
    )
    for args, expected in cases:
        code, _, err = run_main(args, capsys)
        assert_one_line_error(code, err, expected)

    # class folders that are not ImageNet-1K wnids
    from tests.support.fake_datasets import write_image_folder

    not_imagenet = tmp_path / "pets"
    write_image_folder(not_imagenet / "val", ["cats", "n01440764"])
    code, _, err = run_main(
        ["eval", str(files["weights"]), "--zero-shot", "--data-dir", str(not_imagenet), *vocab], capsys
    )
    assert_one_line_error(code, err, "1 class folder(s) are not ImageNet-1K classes (first: cats)")

    # a vocabulary larger than the text tower's embedding (registered in tiny_clipa_preset's copy)
    from crate_edu.models import registry

    small = CRATEAlphaCLIPA(**{**TINY_CLIPA_SIZES, "vocab_size": 200})
    registry.register_model("crate_alpha_clipa_test_small_vocab", CRATEAlphaCLIPA, small.config, "tiny")
    small_file = _write_state_dict(tmp_path / "small_vocab.pth", small)
    code, _, err = run_main(
        ["eval", str(small_file), "--zero-shot", "--data-dir", str(files["root"]), *vocab], capsys
    )
    assert_one_line_error(code, err, "the vocabulary has 330 tokens but crate_alpha_clipa_test_small_vocab's")

    # the clip extra not installed
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    code, _, err = run_main(zero_shot_args(files, *vocab), capsys)
    assert_one_line_error(code, err, "needs the 'tokenizers' package", 'pip install "crate-edu[clip]"')


def test_official_recipe_options_are_flags():
    """The in21k/in1k recipes' options (mixing, smoothing form, decay mask, min lr, RandAugment
    magnitude, resampling of pretrained embeddings) each override the recipe from the command line."""
    from crate_edu.cli import build_parser, train_settings

    argv = ["train", "--recipe", "in1k-finetune", "--mixup-alpha", "0", "--cutmix-alpha", "0.5"]
    argv += ["--mix-switch-prob", "0.25", "--min-lr", "1e-7", "--decay-mask", "all"]
    argv += ["--smoothing-style", "torch", "--randaugment-magnitude", "5", "--no-resample-pretrained"]
    recipe, overrides, _ = train_settings(vars(build_parser().parse_args(argv)))
    cfg = recipe.config(**overrides)
    assert (cfg.mixup_alpha, cfg.cutmix_alpha, cfg.mix_switch_prob) == (0.0, 0.5, 0.25)
    assert (cfg.min_lr, cfg.decay_mask, cfg.smoothing_style) == (1e-7, "all", "torch")
    assert (cfg.randaugment_magnitude, cfg.resample_pretrained) == (5.0, False)
    recipe, overrides, _ = train_settings(
        vars(build_parser().parse_args(["train", "--recipe", "in1k-finetune"]))
    )
    default = recipe.config(**overrides)
    assert (
        default.resample_pretrained
        and default.decay_mask == "kernels"
        and default.smoothing_style == "big_vision"
    )
