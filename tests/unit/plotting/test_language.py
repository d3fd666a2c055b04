"""crate_edu.plotting.language: the layer-wise figure for text, contexts, the browser and the scores draw."""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from crate_edu.evaluation.layerwise import layerwise_measurements  # noqa: E402
from crate_edu.evaluation.neurons import (  # noqa: E402
    NeuronActivations,
    collect_activations,
    compare_interpretability,
    interpretability_scores,
    top_contexts,
)
from crate_edu.models import create_model  # noqa: E402
from crate_edu.plotting.language import (  # noqa: E402
    contexts_html,
    display_text,
    neuron_browser,
    plot_interpretability,
    plot_layerwise_language,
    plot_neuron_contexts,
)
from crate_edu.text import CharTokenizer  # noqa: E402

TOK = CharTokenizer()
TEXT = "Hello <world> & 42 cats\n\tsat on 7 mats; the end.\n" * 8


@pytest.fixture(scope="module")
def runs():
    torch.manual_seed(0)
    kw = dict(dim=16, depth=2, heads=2, block_size=32)
    crate, gpt = create_model("crate_lm_char", **kw), create_model("gpt_lm_char", **kw)
    tokens = TOK.encode_tensor(TEXT)
    return {
        "acts": {
            "CRATE": collect_activations(crate, tokens, seq_len=32),
            "GPT": collect_activations(gpt, tokens, seq_len=32),
        },
        "layerwise": {
            "CRATE": layerwise_measurements(crate, tokens[:96].reshape(3, 32)),
            "GPT": layerwise_measurements(gpt, tokens[:96].reshape(3, 32)),
        },
    }


def test_display_text_shows_invisible_characters():
    assert display_text("a\nb\tc") == "a↵b→c"


def test_plot_layerwise_language(runs):
    fig = plot_layerwise_language(runs["layerwise"])
    ax_c, ax_s = fig.axes
    assert len(ax_c.get_lines()) == 2 and len(ax_s.get_lines()) == 2
    assert np.allclose(ax_c.get_lines()[0].get_ydata(), runs["layerwise"]["CRATE"].compression_mean)
    assert np.allclose(ax_s.get_lines()[1].get_ydata(), runs["layerwise"]["GPT"].nonzero_mean)
    assert list(ax_c.get_lines()[0].get_xdata()) == [1, 2]  # numbered from 1, as notebook 04
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_layerwise_language({})
    plt.close("all")


def test_plot_neuron_contexts_shades_each_character(runs):
    acts = runs["acts"]["CRATE"]
    ctxs = {f"layer 1, neuron {n}": top_contexts(acts, 1, n, k=3, width=6, decode=TOK) for n in (0, 1)}
    fig = plot_neuron_contexts(ctxs)
    ax = fig.axes[0]
    lines = sum(len(c) for c in ctxs.values())
    boxed = [p for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill()]
    assert len(boxed) == lines  # one outlined top position per context line
    shaded = [p for p in ax.patches if p.get_fill()]
    n_positive = sum(a > 0 for cs in ctxs.values() for c in cs for a in c.activations)
    assert len(shaded) == n_positive
    assert max(p.get_alpha() for p in shaded) == pytest.approx(1.0)  # the top activation is fully shaded
    texts = [t.get_text() for t in ax.texts]
    assert texts[0] == "layer 1, neuron 0"
    drawn = "".join(texts)
    for c in ctxs["layer 1, neuron 1"]:  # each line: its characters (newlines as ↵), then the activation
        assert display_text(c.text) + f"{c.activation:.3g}" in drawn
    chars = sum(len(display_text(c.text)) for cs in ctxs.values() for c in cs)
    assert len(texts) == len(ctxs) + chars + lines  # headings, characters, activation column
    with pytest.raises(ValueError, match="decode"):
        plot_neuron_contexts({"x": top_contexts(acts, 1, 0, k=2)})
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_neuron_contexts({})
    plt.close("all")


def _one_neuron(values: list[float], text: str) -> NeuronActivations:
    v = torch.tensor(values)[:, None]
    return NeuronActivations((0,), [v], TOK.encode_tensor(text), len(text), [(v != 0).float().mean(0)])


def test_contexts_html_escapes_and_shades():
    acts = _one_neuron([0.0, 2.0, 1.0, 0.0], "<a&\n")
    html = contexts_html(top_contexts(acts, 0, 0, k=2, width=3, decode=TOK), title="n <0>")
    assert "&lt;" in html and "&amp;" in html and "↵" in html and "<a&" not in html
    assert "n &lt;0&gt;" in html
    assert html.count("rgba(255, 140, 0, 1.00)") == 2 and html.count("rgba(255, 140, 0, 0.50)") == 2
    assert html.count("outline") == 2
    dead = _one_neuron([0.0] * 4, "abcd")
    assert "never active" in contexts_html(top_contexts(dead, 0, 0, decode=TOK))


def test_neuron_browser_builds_and_follows_its_sliders(runs):
    acts = runs["acts"]["GPT"]
    scores = interpretability_scores(acts, TOK, k=5)
    browser = neuron_browser(acts, TOK, scores=scores, k=3, width=4)
    (layer, neuron, order), out = browser.children[0].children, browser.children[1]
    assert "layer 0, neuron 0" in out.value and "outline" in out.value
    neuron.value = 7
    assert "layer 0, neuron 7:" in out.value
    layer.value = 1
    assert "layer 1, neuron 7:" in out.value and neuron.max == 63
    order.value = "score (best first)"
    neuron.value = 0
    best = int(np.nanargmax(scores[1].score))
    assert f"layer 1, neuron {best}:" in out.value and "adjusted η²" in out.value
    with pytest.raises(ValueError, match="not collected"):
        neuron_browser(acts, TOK, layer=5)


def test_plot_interpretability(runs):
    cmp = compare_interpretability(runs["acts"]["CRATE"], runs["acts"]["GPT"], TOK, k=5)
    fig = plot_interpretability(cmp)
    ax_box, ax_sel, ax_dead = fig.axes
    assert len(ax_dead.patches) == 2 * 2  # 2 models x 2 layers
    assert np.allclose(
        ax_sel.get_lines()[0].get_ydata(), [r["selectivity_mean"] for r in cmp.summary["CRATE"]]
    )
    assert [t.get_text() for t in ax_box.get_legend().get_texts()] == ["CRATE", "GPT"]
    assert list(ax_sel.get_xticks()) == [0, 1] and ax_sel.get_xlabel() == "layer (0 = first)"  # model indices
    plt.close("all")


def test_neuron_browser_without_ipywidgets_says_how_to_install(runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets now raises ImportError
    with pytest.raises(ImportError, match=r"pip install \"crate-edu\[notebooks\]\""):
        neuron_browser(runs["acts"]["GPT"], TOK)
