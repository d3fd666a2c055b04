"""crate_edu.plotting.segmentation: the attention, mask, IoU, PCA and normalised-cut pictures draw."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import crate_edu  # noqa: E402
from crate_edu.evaluation import segmentation as seg  # noqa: E402
from crate_edu.plotting import segmentation as pseg  # noqa: E402


def test_plots_draw_and_return_figures():
    torch.manual_seed(0)
    m = crate_edu.create_model(
        "crate_nano_cifar", dim=32, depth=3, heads=4, image_size=16, patch_size=4
    ).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    shown = (torch.rand(2, 3, 16, 16) * 255).to(torch.uint8)
    gt = torch.zeros(2, 16, 16, dtype=torch.bool)
    gt[:, 4:12, 6:10] = True
    maps = seg.cls_attention_maps(m, x)
    keep = seg.mass_threshold_masks(maps)
    ious = seg.head_ious(maps, gt)
    feats = seg.head_projections(m, x)
    figs = [
        pseg.plot_head_maps(shown, maps),
        pseg.plot_head_masks(shown, keep, gt, ious),
        pseg.plot_iou_grid({"CRATE": torch.rand(3, 4), "ViT": torch.rand(3, 4)}, baseline=0.44),
        pseg.plot_fraction_sweep([0.3, 0.6, 0.9], {"CRATE": [0.2, 0.3, 0.25]}, baseline=0.44),
        pseg.plot_pca_maps(shown, seg.pca_maps(feats, (4, 4)), gt),
        pseg.plot_ncut(shown, seg.ncut_foreground(feats, (4, 4)), gt),
    ]
    for fig in figs:
        assert isinstance(fig, matplotlib.figure.Figure)
        assert fig._suptitle is not None or fig.axes[0].get_title()
        plt.close(fig)
    out = pseg.mask_overlay(pseg.to_display(shown)[0], gt[0].numpy(), gt[0].numpy())
    assert out.shape == (16, 16, 3) and out.max() <= 1.0
    with pytest.raises(ValueError, match="images must be"):
        pseg.to_display(torch.zeros(3, 16, 16))
