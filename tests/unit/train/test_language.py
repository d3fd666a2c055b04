"""Language models on the one training loop: the objective, the recipes, checks, resume, export."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from crate_edu.train import RECIPES, ConfigError, check_config, export_run, load_checkpoint, train
from crate_edu.train.language import NextToken, evaluate_language_model, next_token_loss
from crate_edu.train.loop import OneDevice
from crate_edu.weights import load_weights

TINY = {"depth": 1, "dim": 32, "heads": 2, "block_size": 32}


def _tiny(name: str = "text-quick", **changes):
    """A run of ``name`` that takes a second: one small layer, 32-character windows, few of them."""
    settings = dict(
        model_overrides=TINY, limit_train=64, limit_test=16, epochs=2, batch_size=16, progress=False
    )
    return RECIPES[name].config(**{**settings, **changes})


# -- the recipes -------------------------------------------------------------------------------------


def test_text_recipes_give_both_models_the_same_budget():
    crate, gpt = RECIPES["text-quick"], RECIPES["text-quick-gpt"]
    assert (crate.model, gpt.model) == ("crate_lm_char", "gpt_lm_char")
    differ = {"name", "doc", "summary", "model"}
    for f in dataclasses.fields(crate):
        if f.name not in differ:
            assert getattr(crate, f.name) == getattr(gpt, f.name), f.name
    for r in (crate, gpt):
        cfg = check_config(r.config())
        assert (cfg.dataset, cfg.tokenizer, cfg.decay_mask) == ("python-docs", "char", "matrices")


def test_language_configs_are_checked_in_one_line():
    with pytest.raises(ConfigError, match="language model and trains on a text corpus.*python-docs"):
        check_config(RECIPES["text-quick"].config(dataset="digits"))
    with pytest.raises(ConfigError, match="unknown tokenizer 'chars'.*did you mean char"):
        check_config(RECIPES["text-quick"].config(tokenizer="chars"))
    with pytest.raises(ConfigError, match="augment is an image option.*leave it out"):
        check_config(RECIPES["text-quick"].config(augment="shift"))
    with pytest.raises(ConfigError, match="unknown dataset 'python-docs'"):
        check_config(RECIPES["digits-quick"].config(dataset="python-docs"))  # a classifier on text
    with pytest.raises(ConfigError, match="model 'crate_lm_char'"):
        check_config(RECIPES["text-quick"].config(model_overrides={"block_size": 0}))


# -- the objective -----------------------------------------------------------------------------------


class _Bigram(torch.nn.Module):
    """A language model whose logits depend on the current token only: easy to check by hand."""

    def __init__(self, vocab: int = 5):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0)))

    def forward(self, idx):
        return self.table[idx]  # (B, T, V)


def test_next_token_loss_is_the_mean_cross_entropy_of_every_position():
    model = _Bigram()
    x = torch.tensor([[0, 1, 2, 3], [4, 3, 2, 1]])
    y = torch.tensor([[1, 2, 3, 4], [3, 2, 1, 0]])
    logits = model(x)
    manual = -torch.stack(
        [F.log_softmax(logits[b, t], -1)[y[b, t]] for b in range(2) for t in range(4)]
    ).mean()
    torch.testing.assert_close(next_token_loss(logits, y), manual)
    loss, hits = NextToken(RECIPES["text-quick"].config(), "no").loss(model, (x, y))
    torch.testing.assert_close(loss, manual)
    assert hits.shape == (8,) and hits.dtype == torch.bool


def test_evaluation_reports_bits_as_nats_over_ln2():
    model = _Bigram()
    x = torch.randint(0, 5, (6, 4), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 5, (6, 4), generator=torch.Generator().manual_seed(2))
    loader = [(x[:4], y[:4]), (x[4:], y[4:])]
    ev = evaluate_language_model(model, loader, OneDevice(torch.device("cpu")))
    torch.testing.assert_close(torch.tensor(ev["loss"]), next_token_loss(model(x), y).detach())
    assert ev["bits"] == pytest.approx(ev["loss"] / math.log(2)) and ev["n"] == 24
    assert ev["acc"] == pytest.approx((model(x).argmax(-1) == y).float().mean().item())


# -- end to end: train, resume, export, generate -----------------------------------------------------


@pytest.mark.parametrize("name", ["text-quick", "text-quick-gpt"])
def test_a_language_run_trains_resumes_and_exports(name, tmp_path):
    full = train(_tiny(name), tmp_path / "full")
    assert [h["epoch"] for h in full.history] == [1, 2]
    for h in full.history:
        assert h["test_bits"] == pytest.approx(h["test_loss"] / math.log(2))
        assert 0 < h["test_bits"] < math.log2(98)  # better than uniform over the 98 characters
    lines = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [line["test_bits"] for line in lines] == [h["test_bits"] for h in full.history]

    # stopped after epoch 1 and resumed: the same numbers as the run that never stopped
    def stop(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_tiny(name), tmp_path / "cut", on_epoch_end=stop)
    resumed = train(None, tmp_path / "cut", resume=True)
    for a, b in zip(full.history, resumed.history, strict=True):
        assert a["test_loss"] == b["test_loss"] and a["train_loss"] == b["train_loss"]
    assert load_checkpoint(tmp_path / "cut")["config"]["tokenizer"] == "char"

    path = export_run(tmp_path / "full", tmp_path / "lm.safetensors")
    model, info = load_weights(path)
    assert info.model_name == RECIPES[name].model and model.config.block_size == 32
    out = model.generate(torch.tensor([[1, 2, 3]]), 5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 8) and out.dtype == torch.long


def test_eval_command_scores_a_language_run_in_bits(tmp_path, capsys):
    from crate_edu.cli import main

    train(_tiny(epochs=1), tmp_path / "run")
    assert main(["eval", str(tmp_path / "run"), "--limit", "8"]) == 0
    out = capsys.readouterr().out
    assert "python-docs val (char tokens):" in out and "bits per token" in out
    path = export_run(tmp_path / "run", tmp_path / "lm.safetensors")
    assert main(["eval", str(path), "--limit", "8", "--json"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["bits"] == pytest.approx(line["loss"] / math.log(2)) and line["n"] == 8 * 32


def test_generate_command_samples_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    from crate_edu.cli import main

    train(_tiny(epochs=1), tmp_path / "run")
    capsys.readouterr()
    args = ["generate", str(tmp_path / "run"), "--prompt", "def ", "--tokens", "12", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.startswith("def ") and len(first.rstrip("\n")) >= 4
    assert main(args) == 0 and capsys.readouterr().out == first  # the same seed, the same text
    assert main([*args, "--samples", "2"]) == 0 and capsys.readouterr().out.count("--- sample") == 2
    for bad, expected in (
        (["--tokens", "0"], "--tokens must be at least 1"),
        (["--temperature", "0"], "--temperature must be positive"),
        (["--top-k", "-1"], "--top-k must be at least 0"),
        (["--prompt", ""], "--prompt is empty"),
    ):
        assert main([*args, *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err
    assert main(["generate", str(tmp_path / "nowhere")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_list_and_fetch_know_the_text_corpora(capsys):
    from crate_edu.cli import main
    from crate_edu.text import list_corpora

    assert main(["list", "corpora"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_corpora()
    assert "465,126 chars" in lines[0] or "chars  offline" in lines[0]
    assert main(["fetch", "pile"]) == 2  # token files are made by the user, not downloaded
    err = capsys.readouterr().err.strip()
    assert "corpus 'pile' is not downloaded by crate-edu" in err and "\n" not in err
    assert main(["fetch", "shakespeare"]) == 2
    assert "text corpora: tiny-shakespeare" in capsys.readouterr().err


def test_matrix_decay_keeps_tssa_temperatures_out():
    from crate_edu.models import create_model
    from crate_edu.train.optim import matrix_decay_groups

    model = create_model("crate_lm_char", attention="tssa", depth=1, dim=32, heads=2, block_size=16)
    decayed, kept = matrix_decay_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    kept_names = {names[id(p)] for p in kept["params"]}
    assert any(n.endswith("attn.temp") for n in kept_names) and any(
        n.endswith("denom_bias") for n in kept_names
    )
    assert all(p.dim() >= 2 for p in decayed["params"]) and kept["weight_decay"] == 0.0
    assert "transformer.h.0.ista.weight" in {names[id(p)] for p in decayed["params"]}
