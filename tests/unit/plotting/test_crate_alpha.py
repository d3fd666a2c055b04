"""crate_edu.plotting.crate_alpha: the ablation's three panels and the scaling plot draw."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from crate_edu.experiments.crate_alpha_ablation import AblationRun, summarize  # noqa: E402
from crate_edu.plotting.crate_alpha import plot_ablation, plot_scaling  # noqa: E402


def test_plot_ablation_draws_three_panels():
    runs = [
        AblationRun(v, s, {}, 10, 0.5 + 0.1 * i, 0.6, [0.3, 0.2], [10.0, 20.0], 64 * (i + 1), [0.5, 0.5], 2.0)
        for i, v in enumerate(["CRATE block", "+ overcomplete"])
        for s in (0, 1)
    ]
    dicts = [r.to_dict() for r in runs]
    fig = plot_ablation(summarize(dicts), dicts, title="t")
    accuracy, sparsity, active = fig.axes
    assert len(accuracy.patches) == 2 and accuracy.get_ylabel() == "test accuracy (%)"
    assert len(sparsity.lines) == 2 * 2  # trained and initial curve per variant
    assert len(active.patches) == 2 * 2  # code width and non-zeros per variant
    assert fig._suptitle.get_text() == "t"
    plt.close(fig)


def test_plot_scaling_one_line_per_width():
    def row(model, patch, gmacs, top1):
        return {"model": model, "patch_size": patch, "gmacs_224": gmacs, "top1": top1}

    alpha = [
        row("CRATE-α-B/32", 32, 4.0, 76.5),
        row("CRATE-α-B/16", 16, 16.0, 81.2),
        row("CRATE-α-L/14", 14, 60.0, 83.9),
    ]
    fig = plot_scaling(alpha, [row("CRATE-T/16", 16, 1.2, 66.7)])
    ax = fig.axes[0]
    assert len(ax.lines) == 3 and ax.get_xscale() == "log"  # B, L and the CRATE line
    plt.close(fig)
