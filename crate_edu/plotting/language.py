"""Figures for the language models: the layer-wise figure for text, neurons and their contexts.

Each function takes numbers computed by :mod:`crate_edu.evaluation.layerwise` and
:mod:`crate_edu.evaluation.neurons` and returns the figure (or the widget):

- :func:`plot_layerwise_language`: compression R^c and the non-zero fraction of the codes per layer,
  one curve per model (the CRATE paper's layer-wise figure, for CRATE-LM against the GPT baseline);
- :func:`plot_neuron_contexts`: the top contexts of a few neurons, each character shaded by the
  neuron's activation there (the static view of the neuron browser);
- :func:`contexts_html` and :func:`neuron_browser`: the same contexts as HTML, and an ipywidgets
  browser with a layer and a neuron slider;
- :func:`plot_interpretability`: the offline interpretability score per layer, model against model.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from crate_edu.evaluation.neurons import NeuronActivations, NeuronContext, NeuronScores, top_contexts

__all__ = [
    "display_text",
    "plot_layerwise_language",
    "plot_neuron_contexts",
    "contexts_html",
    "neuron_browser",
    "plot_interpretability",
]

#: How a character that prints as nothing is shown in a context.
_VISIBLE = {"\n": "↵", "\t": "→", "\r": "␍"}
#: The shading of an activation: an orange of this RGB, its opacity the activation / the maximum.
_SHADE = (1.0, 0.55, 0.0)


def display_text(text: str) -> str:
    """``text`` with newlines, tabs and carriage returns made visible (↵, →, ␍)."""
    return "".join(_VISIBLE.get(c, c) for c in text)


def _layers_axis(ax, layers: Sequence[int], label: str) -> None:
    ax.set_xticks(list(layers))
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)


def plot_layerwise_language(
    measurements: Mapping[str, Any], *, title: str = "Compression and sparsity, layer by layer (text)"
) -> Figure:
    """Two panels: R^c of the attention projections per layer (mean ± std over the windows) and the
    fraction of non-zero code entries per layer, one curve per model. Layers are numbered from 1, as
    in the CRATE paper's figure and notebook 04.

    Args:
        measurements: model name -> :class:`~crate_edu.evaluation.layerwise.LayerwiseMeasurements`
            (from ``layerwise_measurements(model, token_ids)``).
        title: the figure title.
    """
    if not measurements:
        raise ValueError("nothing to plot: pass at least one model's layer-wise measurements")
    fig, (ax_c, ax_s) = plt.subplots(1, 2, figsize=(10, 3.6))
    depth = 0
    for i, (name, m) in enumerate(measurements.items()):
        x = np.arange(1, len(m.compression_mean) + 1)
        depth = max(depth, len(x))
        mean, std = np.asarray(m.compression_mean), np.asarray(m.compression_std)
        ax_c.plot(x, mean, marker="o", color=f"C{i}", label=name)
        ax_c.fill_between(x, mean - std, mean + std, color=f"C{i}", alpha=0.2)
        if m.nonzero_mean:
            nz, nz_std = np.asarray(m.nonzero_mean), np.asarray(m.nonzero_std)
            ax_s.plot(x[: len(nz)], nz, marker="s", color=f"C{i}", label=name)
            ax_s.fill_between(x[: len(nz)], nz - nz_std, nz + nz_std, color=f"C{i}", alpha=0.2)
    ax_c.set_ylabel(r"$R^c$ of $U_k^\top\,\mathrm{LN}(Z^\ell)$ (nats)")
    ax_c.set_title("compression (lower: more compressed)")
    ax_s.set_ylabel("fraction of non-zero code entries")
    ax_s.set_ylim(0, 1.02)
    ax_s.set_title("sparsity of the codes (lower: sparser)")
    for ax in (ax_c, ax_s):
        _layers_axis(ax, range(1, depth + 1), "layer ℓ (1 = first)")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _check_contexts(contexts: Sequence[NeuronContext], label: str) -> None:
    if any(not c.token_texts for c in contexts):
        raise ValueError(
            f"the contexts of {label} have no text: pass decode= (the tokenizer) to top_contexts"
        )


def plot_neuron_contexts(
    contexts: Mapping[str, Sequence[NeuronContext]],
    *,
    title: str = "Top-activating contexts (shade: the neuron's activation on each character)",
    char_width: float = 0.105,
    row_height: float = 0.24,
) -> Figure:
    """The top contexts of a few neurons, one line per context, each token shaded by the neuron's
    activation there (opacity = activation / the neuron's largest shown), the top position boxed and
    all lines aligned on it.

    Args:
        contexts: a label (e.g. ``"layer 2, neuron 17"``) -> that neuron's contexts, from
            :func:`~crate_edu.evaluation.neurons.top_contexts` with ``decode``.
        title: the figure title.
        char_width, row_height: inches per character and per line.
    """
    if not contexts:
        raise ValueError("nothing to plot: pass at least one neuron's contexts")
    rows: list[tuple[str, Any]] = []  # ("head", label) or ("line", (context, max activation))
    left = right = 0  # characters before / from the aligned position
    for label, ctxs in contexts.items():
        _check_contexts(ctxs, label)
        rows.append(("head", label if ctxs else f"{label}: never active on the sample"))
        top = max((c.activation for c in ctxs), default=0.0)
        for c in ctxs:
            pieces = [display_text(t) for t in c.token_texts]
            before = sum(len(p) for p in pieces[: c.center])
            left = max(left, before)
            right = max(right, sum(len(p) for p in pieces) - before)
            rows.append(("line", (c, pieces, before, top)))
    width = left + right + 8  # + the activation column
    fig = plt.figure(figsize=(max(4.0, width * char_width + 0.4), len(rows) * row_height + 0.7))
    ax = fig.add_axes((0.01, 0.01, 0.98, 1 - 0.5 / fig.get_figheight()))
    ax.set_xlim(0, width)
    ax.set_ylim(len(rows), 0)
    ax.axis("off")
    for r, (kind, item) in enumerate(rows):
        if kind == "head":
            ax.text(0, r + 0.6, item, fontsize=9, fontweight="bold", va="center")
            continue
        c, pieces, before, top = item
        x = left - before
        for j, (piece, a) in enumerate(zip(pieces, c.activations, strict=True)):
            alpha = float(np.clip(a / top, 0, 1)) if top > 0 else 0.0
            if alpha > 0:
                ax.add_patch(Rectangle((x, r + 0.1), len(piece), 0.8, color=_SHADE, alpha=alpha, lw=0))
            if j == c.center:
                ax.add_patch(Rectangle((x, r + 0.1), len(piece), 0.8, fill=False, ec="k", lw=0.8))
            for ch in piece:
                ax.text(x + 0.5, r + 0.55, ch, fontsize=8, family="monospace", ha="center", va="center")
                x += 1
        ax.text(width - 7, r + 0.55, f"{c.activation:.3g}", fontsize=7, color="0.3", va="center")
    fig.suptitle(title, fontsize=10)
    return fig


def contexts_html(contexts: Sequence[NeuronContext], *, title: str | None = None) -> str:
    """The contexts as HTML: one line each, each token's background shaded by the activation
    (opacity = activation / the largest shown), the top position outlined; text escaped."""
    _check_contexts(contexts, title or "the neuron")
    top = max((c.activation for c in contexts), default=0.0)
    r, g, b = (int(255 * v) for v in _SHADE)
    lines = [f"<div><b>{html.escape(title)}</b></div>"] if title else []
    if not contexts:
        lines.append("<div><i>never active on the sample</i></div>")
    for c in contexts:
        spans = []
        for j, (text, a) in enumerate(zip(c.token_texts, c.activations, strict=True)):
            alpha = float(np.clip(a / top, 0, 1)) if top > 0 else 0.0
            style = f"background: rgba({r}, {g}, {b}, {alpha:.2f})"
            if j == c.center:
                style += "; outline: 1px solid black"
            spans.append(f'<span style="{style}" title="{a:.3g}">{html.escape(display_text(text))}</span>')
        lines.append(
            f'<div style="font-family: monospace; white-space: pre">{"".join(spans)}'
            f'  <span style="color: gray">{c.activation:.3g}</span></div>'
        )
    return "\n".join(lines)


def _neuron_header(acts: NeuronActivations, layer: int, neuron: int, scores: NeuronScores | None) -> str:
    frac = float(acts.nonzero_fraction[acts.index(layer)][neuron])
    head = f"layer {layer}, neuron {neuron}: non-zero at {frac:.1%} of {acts.n_positions} positions"
    if scores is not None and np.isfinite(scores.score[neuron]):
        f = scores.features[scores.best_feature[neuron]]
        head += (
            f"; score (adjusted η²) {scores.score[neuron]:.2f} by {f!r}, top-{scores.k} selectivity "
            f"{scores.selectivity[neuron]:.2f} for {scores.top_value[neuron]!r} "
            f"(chance {scores.selectivity_chance[neuron]:.2f})"
        )
    return head


def neuron_browser(
    acts: NeuronActivations,
    decode: Callable[[list[int]], str] | Any,
    *,
    scores: Sequence[NeuronScores] | None = None,
    k: int = 8,
    width: int = 24,
    layer: int | None = None,
    neuron: int = 0,
):
    """An ipywidgets browser of the neurons: a layer slider, a neuron slider and the neuron's top
    contexts as shaded HTML (:func:`contexts_html`). With ``scores`` (from
    :func:`~crate_edu.evaluation.neurons.interpretability_scores`), the header gives each neuron's
    offline score, and an "order" menu can rank the neurons by it (slider = rank).

    Returns:
        an ``ipywidgets.VBox``; its ``children`` are the controls and the ``HTML`` output.

    Raises:
        ImportError: ipywidgets is not installed (one line: ``pip install "crate-edu[notebooks]"``).
    """
    try:
        import ipywidgets as widgets
    except ImportError:
        raise ImportError(
            'the neuron browser needs ipywidgets: pip install "crate-edu[notebooks]" (or pip install '
            "ipywidgets); plot_neuron_contexts draws the same contexts as a static figure"
        ) from None
    by_layer = {s.layer: s for s in scores} if scores is not None else {}
    layer = acts.layers[0] if layer is None else layer
    acts.index(layer)  # a one-line error for a layer not collected
    layer_slider = widgets.SelectionSlider(options=list(acts.layers), value=layer, description="layer")
    neuron_slider = widgets.IntSlider(value=neuron, min=0, max=acts.width(layer) - 1, description="neuron")
    orders = ["neuron index", "score (best first)"] if scores is not None else ["neuron index"]
    order = widgets.Dropdown(options=orders, value=orders[0], description="order")
    out = widgets.HTML()

    def chosen() -> tuple[int, int]:
        lay, i = layer_slider.value, neuron_slider.value
        s = by_layer.get(lay)
        if order.value != "neuron index" and s is not None:
            ranked = np.argsort(-np.nan_to_num(s.score, nan=-np.inf), kind="stable")
            i = int(ranked[i])
        return lay, i

    def refresh(_change: Any = None) -> None:
        neuron_slider.max = acts.width(layer_slider.value) - 1  # first: this may clamp the neuron
        lay, i = chosen()
        ctxs = top_contexts(acts, lay, i, k=k, width=width, decode=decode)
        out.value = contexts_html(ctxs, title=_neuron_header(acts, lay, i, by_layer.get(lay)))

    for w in (layer_slider, neuron_slider, order):
        w.observe(refresh, names="value")
    refresh()
    return widgets.VBox([widgets.HBox([layer_slider, neuron_slider, order]), out])


def plot_interpretability(
    comparison: Any,
    *,
    title: str = "Offline interpretability score (adjusted η² of a text feature; not the paper's LLM score)",
) -> Figure:
    """Three panels per layer, one colour per model: the distribution of the score over the live
    neurons (box plots), the mean top-k selectivity beside its chance level (dashed), and the
    fraction of dead neurons. Layers are the model's indices (0 = first), as in
    :func:`~crate_edu.evaluation.neurons.top_contexts` and the comparison's table.

    Args:
        comparison: an :class:`~crate_edu.evaluation.neurons.InterpretabilityComparison`
            (``compare_interpretability(crate_acts, gpt_acts, tokenizer)``).
        title: the figure title.
    """
    names = list(comparison.names)
    if not names:
        raise ValueError("nothing to plot: the comparison holds no model")
    fig, (ax_box, ax_sel, ax_dead) = plt.subplots(1, 3, figsize=(14, 3.8))
    n = len(names)
    step = 0.8 / n
    layers: set[int] = set()
    dead_max = 0.0
    for i, name in enumerate(names):
        layer_scores = comparison.scores[name]
        rows = comparison.summary[name]
        x = np.array([s.layer for s in layer_scores], dtype=float)
        layers.update(s.layer for s in layer_scores)
        dead_max = max([dead_max, *(100 * r["dead_fraction"] for r in rows)])
        offset = (i - (n - 1) / 2) * step
        data = [s.score[np.isfinite(s.score)] for s in layer_scores]
        box = ax_box.boxplot(
            [d if d.size else [np.nan] for d in data],
            positions=x + offset,
            widths=step * 0.9,
            patch_artist=True,
            showfliers=False,
            manage_ticks=False,
        )
        for patch in box["boxes"]:
            patch.set(facecolor=f"C{i}", alpha=0.5)
        ax_box.plot([], [], color=f"C{i}", lw=6, alpha=0.5, label=name)
        ax_sel.plot(x, [r["selectivity_mean"] for r in rows], marker="o", color=f"C{i}", label=name)
        ax_sel.plot(x, [r["selectivity_chance_mean"] for r in rows], ls="--", color=f"C{i}", alpha=0.7)
        ax_dead.bar(
            x + offset, [100 * r["dead_fraction"] for r in rows], width=step, color=f"C{i}", label=name
        )
    ax_box.set_ylabel("score: best adjusted η² per neuron")
    ax_box.set_title("score of the live neurons")
    ax_sel.set_ylabel("top-k selectivity (dashed: chance)")
    ax_sel.set_ylim(0, 1.02)
    ax_sel.set_title("selectivity of the top activations")
    ax_dead.set_ylabel("dead neurons (%)")
    ax_dead.set_ylim(0, max(5.0, 1.15 * dead_max))
    ax_dead.set_title("never active on the sample")
    for ax in (ax_box, ax_sel, ax_dead):
        _layers_axis(ax, sorted(layers), "layer (0 = first)")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
