"""crate_edu.evaluation.neurons: activations of tiny language models, contexts, features and the score.

The score is checked on synthetic activations whose answer is known (a digit detector, a
position-in-word counter, noise) and against a direct computation of the correlation ratio.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crate_edu.evaluation import neurons
from crate_edu.evaluation.neurons import (
    CHAR_CLASSES,
    FEATURES,
    NeuronActivations,
    activation_sparsity,
    char_class,
    collect_activations,
    compare_interpretability,
    correlation_ratio,
    interpretability_scores,
    summarize_scores,
    text_features,
    top_contexts,
)
from crate_edu.models import create_model
from crate_edu.text import CharTokenizer, TextWindows

TOK = CharTokenizer()
TEXT = (
    "The 3 cats sat on 12 mats.\nA dog, 7 birds and 450 fish swam by; nobody counted them twice.\n"
    "Call f(x_1) = 2*x + 9 at 10:45, then print('done') 3 times.\n"
) * 6
TEXT = TEXT[: len(TEXT) // 64 * 64]  # whole windows of 64 and of 32 characters


def _acts(columns: list[np.ndarray], text: str = TEXT, seq_len: int = 64) -> NeuronActivations:
    """Synthetic activations (N, m) of one layer over the characters of ``text``."""
    tokens = TOK.encode_tensor(text)
    n = tokens.numel() // seq_len * seq_len
    values = torch.tensor(np.stack([c[:n] for c in columns], axis=1), dtype=torch.float32)  # (N, m)
    return NeuronActivations(
        layers=(0,),
        values=[values],
        tokens=tokens[:n],
        seq_len=seq_len,
        nonzero_fraction=[(values != 0).float().mean(0)],
    )


def _direct_eta2(y: np.ndarray, cats: np.ndarray) -> tuple[float, float]:
    """(raw, adjusted) η², written out category by category."""
    mean = y.mean()
    ss_total = float(((y - mean) ** 2).sum())
    groups = [y[cats == c] for c in np.unique(cats)]
    ss_between = sum(len(g) * (g.mean() - mean) ** 2 for g in groups)
    ss_within = sum(((g - g.mean()) ** 2).sum() for g in groups)
    N, K = len(y), len(groups)
    return ss_between / ss_total, 1 - (ss_within / (N - K)) / (ss_total / (N - 1))


# --- features -----------------------------------------------------------------------------------


def test_char_class_covers_the_classes():
    got = [char_class(c) for c in "aZ7 \t\n,\ufffd"] + [char_class(""), char_class(" the")]
    assert got == [
        "lower", "upper", "digit", "space", "space", "newline", "punctuation", "other", "other", "space",
    ]  # fmt: skip
    assert set(got) == set(CHAR_CLASSES)


def test_text_features_on_a_known_string():
    text = "ab 12\nCd_e."
    f = text_features(TOK.encode_tensor(text), seq_len=len(text), decode=TOK)
    assert f.names == FEATURES
    cls, cls_labels = f.feature("class")
    assert [cls_labels[c] for c in cls] == [
        "lower", "lower", "space", "digit", "digit", "newline", "upper", "lower", "punctuation", "lower",
        "punctuation",
    ]  # fmt: skip
    prev, prev_labels = f.feature("previous class")
    assert [prev_labels[c] for c in prev][:4] == ["start", "lower", "lower", "space"]
    pos, pos_labels = f.feature("position in word")
    # "Cd_e" is one word (letters, digits and _); "." and spaces are outside
    assert [pos_labels[c] for c in pos] == [
        "0", "1", "outside", "0", "1", "outside", "0", "1", "2", "3", "outside",
    ]  # fmt: skip
    tok, tok_labels = f.feature("token")
    assert [tok_labels[c] for c in tok] == ["a", "b", " ", "1", "2", "\\n", "C", "d", "_", "e", "."]
    with pytest.raises(ValueError, match="unknown feature"):
        f.feature("colour")


def test_text_features_cap_the_word_position_and_restart_at_each_window():
    f = text_features(TOK.encode_tensor("abcdefgh"), seq_len=4, decode=TOK)
    pos, labels = f.feature("position in word")
    assert [labels[c] for c in pos] == ["0", "1", "2", "3", "0", "1", "2", "3"]  # a new window at 'e'
    f = text_features(TOK.encode_tensor("abcdefgh"), seq_len=8, decode=TOK)
    pos, labels = f.feature("position in word")
    assert [labels[c] for c in pos] == ["0", "1", "2", "3", "4+", "4+", "4+", "4+"]
    prev, prev_labels = f.feature("previous class")
    assert prev_labels[prev[0]] == "start" and prev_labels[prev[4]] == "lower"


def test_text_features_read_multi_character_tokens():
    pieces = {0: " the", 1: "re", 2: ".", 3: "Hello", 4: "\n"}
    f = text_features(torch.tensor([3, 0, 1, 2, 4, 0]), seq_len=6, decode=lambda ids: pieces[ids[0]])
    pos, labels = f.feature("position in word")
    assert [labels[c] for c in pos] == ["0", "0", "1", "outside", "outside", "0"]  # " the" starts a word
    cls, cls_labels = f.feature("class")
    assert [cls_labels[c] for c in cls] == ["upper", "space", "lower", "punctuation", "newline", "space"]


# --- the correlation ratio ----------------------------------------------------------------------


def test_correlation_ratio_equals_the_direct_computation():
    rng = np.random.default_rng(0)
    cats = rng.integers(0, 7, size=500)
    y = rng.normal(size=(500, 3)) + np.array([0.0, 1.0, 3.0]) * (cats[:, None] % 3)  # growing effects
    raw = correlation_ratio(y, cats, adjusted=False)
    adj = correlation_ratio(y, cats)
    for j in range(3):
        r, a = _direct_eta2(y[:, j], cats)
        assert raw[j] == pytest.approx(r, rel=1e-10) and adj[j] == pytest.approx(a, rel=1e-10)
    assert raw[0] < raw[1] < raw[2] < 1 and adj[2] > 0.5
    both = correlation_ratio(y, np.stack([cats, cats % 3]))  # two features at once: (m, F)
    assert both.shape == (3, 2) and np.array_equal(both[:, 0], adj)
    assert both[2, 1] > both[2, 0]  # the effect is a function of cats % 3: fewer categories, less penalty


def test_correlation_ratio_in_blocks_equals_one_block(monkeypatch):
    rng = np.random.default_rng(1)
    cats = rng.integers(0, 5, size=200)
    y = torch.tensor(rng.normal(size=(200, 9)), dtype=torch.float16)
    whole = correlation_ratio(y, cats)
    monkeypatch.setattr(neurons, "_BLOCK_VALUES", 400)  # 2 columns per block
    assert np.allclose(correlation_ratio(y, cats), whole, rtol=0, atol=1e-12)


def test_correlation_ratio_edge_cases():
    cats = np.array([0, 0, 1, 1])
    assert math.isnan(correlation_ratio(np.ones(4), cats)[0])  # a constant: nothing to explain
    assert math.isnan(correlation_ratio(np.arange(4.0), np.arange(4))[0])  # N <= K: no adjusted value
    assert correlation_ratio(np.arange(4.0), np.arange(4), adjusted=False)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positions"):
        correlation_ratio(np.ones((4, 2)), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="non-negative"):
        correlation_ratio(np.ones(4), np.array([0, -1, 0, 1]))


# --- the score on synthetic neurons -------------------------------------------------------------


def test_the_score_finds_a_digit_detector_a_word_counter_and_noise():
    feats = text_features(TOK.encode_tensor(TEXT), seq_len=64, decode=TOK)
    cls, cls_labels = feats.feature("class")
    pos, pos_labels = feats.feature("position in word")
    digit = (cls == cls_labels.index("digit")).astype(float)  # fires exactly on digits
    in_word = np.where(pos == pos_labels.index("outside"), 0.0, pos + 1.0)  # 1, 2, ... along a word
    noise = np.abs(np.random.default_rng(0).normal(size=digit.size))
    dead = np.zeros(digit.size)
    acts = _acts([digit, in_word, noise, dead])
    (s,) = interpretability_scores(acts, TOK, k=10)
    col = {name: i for i, name in enumerate(s.features)}
    assert s.eta2[0, col["class"]] == pytest.approx(1.0, abs=1e-12)  # η² = 1 for the character class
    assert s.eta2[0, col["token"]] == pytest.approx(1.0, abs=1e-12)  # digits are tokens too
    assert s.eta2[0, col["position in word"]] < 0.5
    assert s.score[0] == pytest.approx(1.0)
    assert s.features[s.best_feature[0]] == "class"  # the tie with "token" goes to fewer categories
    assert s.top_value[0] == "digit" and s.selectivity[0] == 1.0
    assert s.features[s.best_feature[1]] == "position in word" and s.score[1] == pytest.approx(1.0)
    assert s.top_value[1] == "4+" and s.selectivity[1] == 1.0  # the largest activations are deep in words
    assert s.selectivity_chance[1] == pytest.approx((pos == pos_labels.index("4+")).mean())
    assert np.all(np.abs(s.eta2[2]) < 0.03) and abs(s.score[2]) < 0.03  # noise scores about 0
    # over many noise neurons, raw η² of the token feature is about (K - 1)/(N - 1); adjusted, about 0
    many = np.random.default_rng(1).normal(size=(digit.size, 400))
    N, K = digit.size, np.unique(feats.codes[0]).size
    raw = correlation_ratio(many, feats.codes[0], adjusted=False)
    assert raw.mean() == pytest.approx((K - 1) / (N - 1), rel=0.1)
    assert abs(correlation_ratio(many, feats.codes[0]).mean()) < 0.003
    assert s.dead.tolist() == [False, False, False, True]
    assert math.isnan(s.score[3]) and s.best_feature[3] == -1
    assert s.live.tolist() == [True, True, True, False]
    (row,) = summarize_scores([s])
    assert row["neurons"] == 4 and row["live"] == 3 and row["dead_fraction"] == 0.25
    assert row["score_mean"] == pytest.approx(np.mean(s.score[:3]))
    assert sum(row["best_feature_counts"].values()) == 3


def test_selectivity_counts_only_positive_activations():
    feats = text_features(TOK.encode_tensor(TEXT), seq_len=64, decode=TOK)
    cls, labels = feats.feature("class")
    sparse = np.zeros(cls.size)
    upper = np.flatnonzero(cls == labels.index("upper"))
    sparse[upper[:3]] = [3.0, 2.0, 1.0]  # active at three capitals only
    (s,) = interpretability_scores(_acts([sparse]), TOK, k=20)
    assert s.selectivity[0] == 1.0  # 3 of 3 positive top activations, not 3 of 20


# --- activations of tiny real models -------------------------------------------------------------


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    kw = dict(dim=16, depth=2, heads=2, block_size=32)
    return {"CRATE": create_model("crate_lm_char", **kw), "GPT": create_model("gpt_lm_char", **kw)}


@pytest.mark.parametrize("name", ["CRATE", "GPT"])
def test_collect_activations_are_the_traced_codes(models, name):
    model = models[name]
    x = TOK.encode_tensor(TEXT)[: 5 * 32].reshape(5, 32)
    acts = collect_activations(model, x, batch_size=2, dtype=torch.float32)
    with torch.no_grad():
        _, traces = model.eval().forward_trace(x)
    model.train()
    assert acts.layers == (0, 1) and acts.seq_len == 32 and acts.n_windows == 5
    assert torch.equal(acts.tokens, x.reshape(-1))
    for layer in (0, 1):
        codes = traces[layer].codes.reshape(5 * 32, -1)  # (N, 4d)
        assert acts.width(layer) == 64
        assert torch.allclose(acts.layer(layer), codes, atol=1e-6)
        assert torch.allclose(acts.nonzero_fraction[layer], (codes != 0).float().mean(0))
    assert model.training  # mode restored
    half = collect_activations(model, x, batch_size=5, layers=[1])
    assert half.layers == (1,) and half.values[0].dtype == torch.float16
    assert torch.allclose(half.layer(1).float(), acts.layer(1), rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="layer 0 was not collected"):
        half.layer(0)


def test_collect_activations_reads_datasets_and_flat_tokens(models):
    model = models["CRATE"]
    tokens = TOK.encode_tensor(TEXT)
    ds = TextWindows(tokens, block_size=32)
    a = collect_activations(model, ds, max_windows=3, dtype=torch.float32)
    b = collect_activations(model, tokens, seq_len=32, max_windows=3, dtype=torch.float32)
    assert a.n_windows == 3 and torch.equal(a.tokens, b.tokens) and torch.equal(a.values[1], b.values[1])
    with pytest.raises(TypeError, match="integer"):
        collect_activations(model, tokens.float().reshape(-1, 32))
    with pytest.raises(ValueError, match="seq_len"):
        collect_activations(model, tokens)
    with pytest.raises(ValueError, match="layers must be in 0..1"):
        collect_activations(model, tokens, seq_len=32, layers=[2])
    with pytest.raises(TypeError, match="forward_trace"):
        collect_activations(torch.nn.Linear(2, 2), tokens)


def test_sparsity_and_contexts_on_a_model(models):
    acts = collect_activations(models["GPT"], TOK.encode_tensor(TEXT), seq_len=32, dtype=torch.float32)
    sp = activation_sparsity(acts)
    assert [s.layer for s in sp] == [0, 1]
    v = acts.layer(0)
    assert sp[0].zero_fraction == pytest.approx((v == 0).float().mean().item(), abs=1e-6)
    assert sp[0].dead.tolist() == ((v != 0).sum(0) == 0).tolist()
    ctx = top_contexts(acts, 0, 5, k=4, width=3, decode=TOK)
    col = v[:, 5]
    assert [c.activation for c in ctx] == pytest.approx(torch.sort(col, descending=True).values[:4].tolist())
    for c in ctx:
        p = c.window * 32 + c.position
        assert c.activations[c.center] == c.activation and c.token_ids[c.center] == acts.tokens[p]
        assert len(c.token_ids) == len(c.activations) == len(c.token_texts) <= 7
        assert c.text == TOK.decode(c.token_ids)
        lo = p - c.center
        assert lo >= c.window * 32 and lo + len(c.token_ids) <= (c.window + 1) * 32  # inside its window
    assert top_contexts(acts, 0, 5, k=2)[0].token_texts == []
    with pytest.raises(ValueError, match="neuron must be an integer in 0..63"):
        top_contexts(acts, 0, 64)


def test_top_contexts_keep_to_the_window_and_skip_zeros():
    col = np.zeros(len(TEXT))
    col[64] = 2.0  # the first position of window 1
    col[63] = 1.0  # the last of window 0
    ctx = top_contexts(_acts([col]), 0, 0, k=5, width=4, decode=TOK)
    assert [c.activation for c in ctx] == [2.0, 1.0]
    assert (ctx[0].window, ctx[0].position, ctx[0].center, len(ctx[0].token_ids)) == (1, 0, 0, 5)
    assert (ctx[1].window, ctx[1].position, ctx[1].center, len(ctx[1].token_ids)) == (0, 63, 4, 5)


def test_compare_interpretability_scores_both_models(models):
    x = TOK.encode_tensor(TEXT)
    crate = collect_activations(models["CRATE"], x, seq_len=32)
    gpt = collect_activations(models["GPT"], x, seq_len=32)
    cmp = compare_interpretability(crate, gpt, TOK, k=5)
    assert cmp.names == ("CRATE", "GPT") and len(cmp.summary["GPT"]) == 2
    again = compare_interpretability(cmp.scores["CRATE"], gpt, TOK, k=5)
    assert np.array_equal(again.scores["CRATE"][1].score, cmp.scores["CRATE"][1].score, equal_nan=True)
    overall = cmp.overall("CRATE")
    live = np.concatenate([s.score for s in cmp.scores["CRATE"]])
    assert overall["score_mean"] == pytest.approx(np.nanmean(live))
    table = cmp.table().splitlines()
    assert len(table) == 1 + 4 and table[1].startswith("CRATE") and table[-1].startswith("GPT")
    with pytest.raises(ValueError, match="decode"):
        compare_interpretability(crate, gpt)
