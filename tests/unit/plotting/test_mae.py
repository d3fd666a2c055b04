"""crate_edu.plotting.mae: reconstruction panels, loss curves, attention grids and probe plots draw."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from crate_edu.data.transforms import normalize_uint8  # noqa: E402
from crate_edu.evaluation.reconstruction import reconstruct  # noqa: E402
from crate_edu.models import create_model  # noqa: E402
from crate_edu.plotting.mae import (  # noqa: E402
    plot_attention_grid,
    plot_mae_loss,
    plot_probe_accuracies,
    plot_probe_by_layer,
    plot_reconstruction_panels,
)

MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)


def _panels():
    torch.manual_seed(0)
    model = create_model(
        "crate_mae_nano_cifar", dim=32, depth=1, decoder_depth=1, heads=2, decoder_heads=2
    ).eval()
    raw = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return reconstruct(model, normalize_uint8(raw, MEAN, STD), mean=MEAN, std=STD)


def test_plots_return_figures():
    p = _panels()
    fig = plot_reconstruction_panels(p)
    assert len(fig.axes) == 8 and fig.axes[3].get_title().startswith("reconstruction")
    fig2 = plot_mae_loss([{"step": 1, "train_loss": 1.0, "test_loss": 0.9}, {"step": 2, "train_loss": 0.5}])
    assert fig2.axes[0].get_xlabel() == "optimiser step"
    fig3 = plot_attention_grid(p.original, np.random.rand(2, 2, 8, 8))
    assert len(fig3.axes) == 2 * 3 + 1  # + colour bar
    fig4 = plot_probe_accuracies({"a": 0.5, "b": 0.9})
    assert fig4.axes[0].get_xlabel() == "test accuracy (%)"
    with pytest.raises(ValueError):
        plot_mae_loss([])
    plt.close("all")


def test_plot_probe_by_layer():
    fig = plot_probe_by_layer({"a": [0.1, 0.5], "b": [0.2, 0.3, 0.9]})
    ax = fig.axes[0]
    assert len(ax.lines) == 3 and ax.get_ylabel() == "test accuracy (%)"  # two curves + chance
    with pytest.raises(ValueError):
        plot_probe_by_layer({})
    plt.close("all")
