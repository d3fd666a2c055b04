"""crate_edu.weights.resize: the position and patch embeddings at another grid, as the official hand-off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from crate_edu.weights.resize import adapt_state_dict, resample_pos_embedding, resize_patch_embedding


def grid_embedding(h: int, w: int, d: int = 3) -> torch.Tensor:
    """(1, 1 + h*w, d): a [CLS] row, then a linear function of the position (u, v) in the unit
    square, sampled corner to corner: linear interpolation reproduces it exactly at any grid."""
    u = torch.linspace(0, 1, h, dtype=torch.float64)[:, None].expand(h, w)  # rows, corner to corner
    v = torch.linspace(0, 1, w, dtype=torch.float64)[None, :].expand(h, w)
    rows = torch.stack([1 + 2 * u - 3 * v, 0.5 * u, -v], dim=-1)[..., :d].reshape(1, h * w, d)
    cls = torch.full((1, 1, d), 7.0, dtype=torch.float64)
    return torch.cat([cls, rows], dim=1)


def test_unchanged_grid_is_the_identity() -> None:
    pos = torch.randn(1, 1 + 16, 8)
    assert resample_pos_embedding(pos, (4, 4)) is pos
    w = torch.randn(8, 3, 4, 4)
    assert resize_patch_embedding(w, (4, 4)) is w


@pytest.mark.parametrize(
    "old, new", [((4, 4), (7, 7)), ((14, 14), (16, 16)), ((6, 6), (3, 3)), ((4, 4), (4, 6))]
)
def test_a_linear_function_on_the_grid_is_resampled_exactly(old, new) -> None:
    pos = grid_embedding(*old)
    out = resample_pos_embedding(pos, new)
    assert out.shape == (1, 1 + new[0] * new[1], 3) and out.dtype == pos.dtype
    assert torch.equal(out[:, 0], pos[:, 0])  # [CLS] kept
    torch.testing.assert_close(out, grid_embedding(*new), rtol=0, atol=1e-6)


def test_equals_scipy_zoom_order_1_as_the_official_resample_posemb() -> None:
    rng = np.random.default_rng(0)
    gs_old, gs_new, d = 7, 10, 5
    pos = torch.from_numpy(rng.standard_normal((1, 1 + gs_old**2, d)).astype(np.float32))
    # models/crate.py:321-344: scipy.ndimage.zoom(grid, (gs_new/gs_old, gs_new/gs_old, 1), order=1)
    grid = pos[0, 1:].numpy().reshape(gs_old, gs_old, d)
    zoomed = ndimage.zoom(grid, (gs_new / gs_old, gs_new / gs_old, 1), order=1).reshape(1, gs_new**2, d)
    out = resample_pos_embedding(pos, (gs_new, gs_new))
    np.testing.assert_allclose(out[:, 1:].numpy(), zoomed, rtol=0, atol=2e-6)


def test_patch_embedding_resize_shapes_and_constants() -> None:
    w = torch.randn(6, 3, 16, 16)
    small = resize_patch_embedding(w, (14, 14))
    assert small.shape == (6, 3, 14, 14)
    const = torch.full((2, 3, 16, 16), 0.25)
    torch.testing.assert_close(resize_patch_embedding(const, (8, 8)), torch.full((2, 3, 8, 8), 0.25))
    torch.testing.assert_close(resize_patch_embedding(const, (32, 32)), torch.full((2, 3, 32, 32), 0.25))


def test_adapt_state_dict_carries_the_rest_and_keeps_the_fresh_head() -> None:
    src = {"pos_embedding": grid_embedding(2, 2).float(), "conv1.weight": torch.randn(4, 3, 8, 8),
           "w": torch.randn(3, 3), "head.weight": torch.randn(9, 3)}  # fmt: skip
    target = {"pos_embedding": torch.zeros(1, 10, 3), "conv1.weight": torch.zeros(4, 3, 4, 4),
              "w": torch.zeros(3, 3), "head.weight": torch.ones(2, 3)}  # fmt: skip
    out = adapt_state_dict(
        src, target, grids=((2, 2), (3, 3)), fresh=["head.weight"], patch_key="conv1.weight"
    )
    assert torch.equal(out["w"], src["w"]) and torch.equal(out["head.weight"], target["head.weight"])
    assert out["pos_embedding"].shape == (1, 10, 3) and out["conv1.weight"].shape == (4, 3, 4, 4)
    with pytest.raises(ValueError, match="^w: the pretrained weights have shape"):
        adapt_state_dict(
            {**src, "w": torch.randn(2, 2)},
            target,
            grids=((2, 2), (3, 3)),
            patch_key="conv1.weight",
            fresh=["head.weight"],
        )
    with pytest.raises(ValueError, match="lack head.weight"):
        adapt_state_dict({k: v for k, v in src.items() if k != "head.weight"}, target, grids=((2, 2), (3, 3)))
