"""crate_edu.evaluation.segmentation: attention maps, mass-threshold masks, IoU scores, PCA and
normalised-cut foregrounds, each against an independent restatement."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import crate_edu
from crate_edu.evaluation import segmentation as seg


def _model(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return crate_edu.create_model(name, dim=32, depth=3, heads=4, image_size=16, patch_size=4, **kw).eval()


def _images(b: int = 5, seed: int = 1, size: int = 16) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# attention maps and projections
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [None, 0, -1])
def test_crate_cls_maps_are_softmax_of_projections(layer):
    m, x = _model("crate_nano_cifar"), _images()
    maps = seg.cls_attention_maps(m, x, layer)
    idx = 1 if layer is None else layer % 3  # penultimate of 3 layers is index 1
    traces = seg.layer_traces(m, x)
    w = traces[idx].proj  # (B, h, N + 1, p) = U_k^T LN(Z)
    logits = w[:, :, :1] @ w.transpose(-1, -2) * w.shape[-1] ** -0.5  # (B, h, 1, N + 1)
    expected = torch.softmax(logits, -1)[:, :, 0, 1:].reshape(5, 4, 4, 4)
    assert maps.shape == (5, 4, 4, 4)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)
    assert float(maps.sum((-1, -2)).max()) < 1.0  # the [CLS] token keeps some mass for itself


def test_vit_cls_maps_from_queries_and_keys():
    m, x = _model("vit_nano_cifar", seed=3), _images(seed=4)
    maps = seg.cls_attention_maps(m, x, 2)
    traces = seg.layer_traces(m, x)
    layer = m.transformer.layers[2][0]
    q, k, _ = layer.fn.to_qkv(layer.norm(traces[1].z_out)).chunk(3, -1)  # input of layer 2 = output of 1
    q, k = (t.unflatten(-1, (4, 8)).transpose(1, 2) for t in (q, k))  # (B, h, N + 1, p)
    expected = torch.softmax(q[:, :, :1] @ k.transpose(-1, -2) / 8**0.5, -1)[:, :, 0, 1:]
    torch.testing.assert_close(maps, expected.reshape(5, 4, 4, 4), rtol=1e-5, atol=1e-6)


def test_all_layers_and_batching_agree():
    m, x = _model("crate_nano_cifar", seed=5), _images(7, seed=6)
    every = seg.cls_attention_maps(m, x, all_layers=True, batch_size=3)
    assert every.shape == (3, 7, 4, 4, 4)
    for layer in range(3):
        torch.testing.assert_close(every[layer], seg.cls_attention_maps(m, x, layer), rtol=1e-5, atol=1e-7)
    feats = seg.head_projections(m, x, 0, batch_size=2)
    proj = seg.layer_traces(m, x)[0].proj[:, :, 1:]  # (B, h, N, p)
    assert feats.shape == (7, 16, 32)
    torch.testing.assert_close(feats[:, 5, 8:16], proj[:, 1, 5], rtol=1e-5, atol=1e-6)  # patch 5, head 1


def test_crate_mae_encoder_is_adapted():
    torch.manual_seed(0)
    m = crate_edu.create_model(
        "crate_mae_nano_cifar", dim=32, depth=2, heads=2, decoder_depth=1, decoder_heads=2, image_size=16
    ).eval()
    traces = seg.layer_traces(m, _images(2))
    assert len(traces) == 2 and traces[0].attn.shape == (2, 2, 17, 17)
    assert seg.cls_attention_maps(m, _images(2)).shape == (2, 2, 4, 4)


def test_bad_inputs_say_what_to_do():
    m = _model("crate_nano_cifar")
    with pytest.raises(ValueError, match=r"layer must be an int in \[-3, 2\]"):
        seg.cls_attention_maps(m, _images(), 3)
    with pytest.raises(TypeError, match="forward_intermediates|config"):
        seg.cls_attention_maps(torch.nn.Linear(2, 2), _images())
    with pytest.raises(ValueError, match="fraction must be in"):
        seg.mass_threshold_masks(torch.rand(2, 4, 4), 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        seg.mass_threshold_masks(-torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match="mask sizes differ"):
        seg.iou(torch.ones(4, 4, dtype=torch.bool), torch.ones(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="resolution"):
        seg.head_ious(torch.rand(2, 3, 4, 4), torch.ones(2, 16, 16, dtype=torch.bool), resolution="token")


# ---------------------------------------------------------------------------------------------
# masks and IoU
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9, 1.0])
def test_mass_threshold_is_the_smallest_top_set(fraction):
    g = torch.Generator().manual_seed(int(fraction * 10))
    maps = torch.rand(6, 3, 5, 7, generator=g) ** 3
    keep = seg.mass_threshold_masks(maps, fraction)
    flat, kept = maps.flatten(-2).double(), keep.flatten(-2)
    total = flat.sum(-1)
    kept_mass = (flat * kept).sum(-1)
    smallest_kept = torch.where(kept, flat, torch.full_like(flat, float("inf"))).min(-1).values
    assert bool((kept_mass >= fraction * total - 1e-12).all())  # holds the fraction ...
    assert bool((kept_mass - smallest_kept < fraction * total).all())  # ... and no patch can go
    largest_dropped = torch.where(kept, torch.full_like(flat, -1.0), flat).max(-1).values
    assert bool((largest_dropped <= smallest_kept).all())  # it is a top set
    # DINO's formulation: ascending sort, cumulative share > 1 - fraction
    vals, idx = torch.sort(flat, -1)
    share = torch.cumsum(vals, -1) / total[..., None]
    dino = torch.zeros_like(kept).scatter(-1, idx, share > 1 - fraction + 1e-12)
    assert torch.equal(dino, kept)


def test_mass_threshold_hand_example_and_ties():
    a = torch.tensor([[0.5, 0.25], [0.125, 0.125]])  # total 1.0, exact in binary
    assert seg.mass_threshold_masks(a, 0.5).tolist() == [[True, False], [False, False]]
    assert seg.mass_threshold_masks(a, 0.6).tolist() == [[True, True], [False, False]]
    assert seg.mass_threshold_masks(a, 0.8).tolist() == [[True, True], [True, False]]  # tie: first wins
    assert seg.mass_threshold_masks(torch.zeros(2, 2), 0.6).sum() == 0


def test_iou_values():
    p = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    t = torch.tensor([[0, 1, 1], [0, 0, 0]], dtype=torch.bool)
    assert float(seg.iou(p, t)) == pytest.approx(1 / 3)
    assert float(seg.iou(p, p)) == 1.0
    empty = torch.zeros(2, 3, dtype=torch.bool)
    assert float(seg.iou(empty, empty)) == 1.0 and float(seg.iou(empty, t)) == 0.0
    assert seg.iou(torch.stack([p, t, empty]), t).tolist() == pytest.approx([1 / 3, 1.0, 0.0])


def test_upsample_and_patch_reduction():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 3, 4, 5, generator=g)
    up = seg.upsample_maps(maps, (16, 20))
    torch.testing.assert_close(up, maps.repeat_interleave(4, -2).repeat_interleave(4, -1))
    m = seg.upsample_maps(maps > 0.5, (8, 10))
    assert m.dtype == torch.bool and torch.equal(seg.masks_to_patches(m, 2, 1.0), maps > 0.5)
    one = torch.zeros(8, 8, dtype=torch.bool)
    one[:2, :2] = True  # all of patch (0, 0) of side 2, a quarter of the 4×4 patch (0, 0)
    assert seg.masks_to_patches(one, 2)[0, 0] and seg.masks_to_patches(one, 4, 0.25)[0, 0]
    assert not seg.masks_to_patches(one, 4, 0.26)[0, 0]


def test_head_ious_pixel_equals_patch_on_aligned_truth():
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(4, 3, 4, 4, generator=g)
    gt_patches = torch.rand(4, 4, 4, generator=g) > 0.6
    gt = seg.upsample_maps(gt_patches, 16)
    pix = seg.head_ious(maps, gt, 0.6, resolution="pixel")
    pat = seg.head_ious(maps, gt, 0.6, resolution="patch")
    torch.testing.assert_close(pix, pat)
    expected = seg.iou(seg.mass_threshold_masks(maps, 0.6)[2, 1], gt_patches[2])
    assert float(pat[2, 1]) == pytest.approx(float(expected))
    assert seg.head_ious(torch.stack([maps, maps]), gt).shape == (2, 4, 3)  # leading (layer) dims


def test_mass_on_mask():
    gt = torch.zeros(1, 8, 8, dtype=torch.bool)
    gt[0, :4, :4] = True  # patch (0, 0) of a 2x2 grid fully, nothing else
    gt[0, 4:6, 4:8] = True  # half of patch (1, 1)
    maps = torch.tensor([[[[0.5, 0.1], [0.2, 0.2]], [[1.0, 1.0], [1.0, 1.0]]]])  # (1, 2, 2, 2)
    share = seg.mass_on_mask(maps, gt)
    assert share[0].tolist() == pytest.approx([0.5 + 0.1, (1 + 0.5) / 4])
    assert float(share[0, 1]) == pytest.approx(float(gt.float().mean()))  # uniform map: the area
    with pytest.raises(ValueError, match="multiples"):
        seg.mass_on_mask(maps, torch.zeros(1, 7, 7, dtype=torch.bool))


def test_mass_on_mask_with_control():
    quadrants = [(slice(0, 4), slice(0, 4)), (slice(0, 4), slice(4, 8)), (slice(4, 8), slice(0, 4))]
    gt = torch.zeros(3, 8, 8, dtype=torch.bool)  # image i: its object in quadrant i
    for i, (rows, cols) in enumerate(quadrants):
        gt[i, rows, cols] = True
    follows = F.avg_pool2d(gt[:, None].float(), 4)  # (3, 1, 2, 2): each map on its own object
    habit = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).expand(3, 1, 2, 2)  # the same map on every image
    maps = torch.stack([torch.cat([follows, habit], 1)] * 2)  # (L=2, B=3, h=2, 2, 2)
    own, control = seg.mass_on_mask_with_control(maps, gt)
    assert own.shape == control.shape == (2, 2)
    assert own[:, 0].tolist() == [1.0, 1.0] and control[:, 0].tolist() == [0.0, 0.0]  # follows the object
    torch.testing.assert_close(own[:, 1], control[:, 1], rtol=0, atol=0)  # a positional habit
    shifted = torch.cat([maps[:, -1:], maps[:, :-1]], 1)  # image i with the map of image i - 1
    torch.testing.assert_close(control, seg.mass_on_mask(shifted, gt).mean(1), rtol=0, atol=0)
    torch.testing.assert_close(own, seg.mass_on_mask(maps, gt).mean(1), rtol=0, atol=0)
    with pytest.raises(ValueError, match="B >= 2"):
        seg.mass_on_mask_with_control(maps[:, :1], gt[:1])


# ---------------------------------------------------------------------------------------------
# scores
# ---------------------------------------------------------------------------------------------


def test_segmentation_score_by_hand():
    ious = torch.tensor(
        [  # head 0   1     2
            [0.9, 0.1, 0.5],  # class 0
            [0.7, 0.3, 0.5],  # class 0
            [0.1, 0.8, 0.5],  # class 1
            [0.2, 0.6, 0.5],  # class 1
            [0.3, 0.2, 0.4],  # class 1
        ]
    )
    labels = torch.tensor([0, 0, 1, 1, 1])
    s = seg.segmentation_score(ious, labels)
    assert s.per_head.tolist() == pytest.approx([0.44, 0.4, 0.48])
    assert s.best_head == 2 and s.best_head_iou == pytest.approx(0.48)
    assert s.class_heads.tolist() == [0, 1]
    assert s.class_iou.tolist() == pytest.approx([0.8, 1.6 / 3])
    assert s.miou == pytest.approx((0.8 + 1.6 / 3) / 2)
    assert s.oracle_iou == pytest.approx((0.9 + 0.7 + 0.8 + 0.6 + 0.4) / 5)
    assert s.selected_on == "eval"
    # heads chosen elsewhere: selection says head 1 overall and for class 0, head 0 for class 1
    sel = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.2, 0.0]])
    t = seg.segmentation_score(ious, labels, select_ious=sel, select_labels=torch.tensor([0, 1]))
    assert t.best_head == 1 and t.best_head_iou == pytest.approx(0.4)
    assert t.class_heads.tolist() == [1, 0] and t.miou == pytest.approx((0.2 + 0.2) / 2)
    assert t.selected_on == "separate" and t.as_dict()["miou"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="class 2 has no image"):
        seg.segmentation_score(ious, labels, num_classes=3)
    with pytest.raises(ValueError, match="together"):
        seg.segmentation_score(ious, labels, select_ious=sel)


def test_fixed_mask_baseline_small():
    train = torch.zeros(4, 4, 4, dtype=torch.bool)
    train[:, 1:3, 1:3] = True
    train[0, 0, 0] = True  # rare pixel: 25 % frequency
    test = torch.zeros(2, 4, 4, dtype=torch.bool)
    test[0, 1:3, 1:3] = True
    test[1, 1:3, 1:4] = True
    out = seg.fixed_mask_baseline(train, test)
    assert out["mask"].sum() == 4 and out["threshold"] > 0.25
    assert out["test_iou"] == pytest.approx((1.0 + 4 / 6) / 2)


# ---------------------------------------------------------------------------------------------
# PCA and normalised cut
# ---------------------------------------------------------------------------------------------


def test_pca_matches_covariance_eigenvectors():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(6, 6, generator=g, dtype=torch.float64)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64) @ mix
    res = seg.pca(x, 3)
    cov = torch.cov(x.T)
    evals, evecs = torch.linalg.eigh(cov)
    top = evecs[:, -3:].flip(-1).T  # (3, D) by decreasing eigenvalue
    signs = torch.sign((res.components * top).sum(-1))
    torch.testing.assert_close(res.components, top * signs[:, None], rtol=0, atol=1e-9)
    torch.testing.assert_close(res.explained, evals.flip(0)[:3] / evals.sum(), rtol=0, atol=1e-12)
    torch.testing.assert_close(res.scores, res.transform(x), rtol=0, atol=1e-12)
    big = res.components.abs().argmax(1)
    assert bool((res.components[torch.arange(3), big] > 0).all())  # the sign convention
    torch.testing.assert_close(seg.pca(-x, 3).components, res.components)  # ... makes it sign-free


def _two_region_features(seed: int, B: int = 3, D: int = 12):
    """Patch features on a 6×6 grid: a 2×3 block inside (the 'object') vs the rest, plus noise."""
    g = torch.Generator().manual_seed(seed)
    fg = torch.zeros(B, 6, 6, dtype=torch.bool)
    for b in range(B):
        r, c = 1 + b % 2, 1 + b
        fg[b, r : r + 2, c : c + 3] = True
    a, bg = torch.randn(D, generator=g), torch.randn(D, generator=g)
    feats = torch.where(fg.flatten(1)[..., None], a, bg) + 0.1 * torch.randn(B, 36, D, generator=g)
    return feats, fg


def test_pca_maps_find_the_inner_region_whatever_the_sign():
    feats, fg = _two_region_features(0)
    for f in (feats, -feats, 3 * feats + 1):
        maps = seg.pca_maps(f, (6, 6))
        assert torch.equal(maps.foreground, fg)
        assert maps.scores.shape == (3, 3, 6, 6) and maps.rgb.shape == (3, 6, 6, 3)
        assert float(maps.rgb.min()) >= 0 and float(maps.rgb.max()) <= 1
    assert float(maps.explained[0]) > 0.8
    each = seg.pca_maps(-feats, (6, 6), per_image=True)
    assert torch.equal(each.foreground, fg) and each.explained.shape == (3, 3) and each.flipped.shape == (3,)
    one = seg.pca_maps(feats[1:2], (6, 6))
    torch.testing.assert_close(each.scores[1:2].abs(), one.scores.abs())
    with pytest.raises(ValueError, match="N = 6x6"):
        seg.pca_maps(feats[:, :30], (6, 6))


def test_ncut_solves_the_generalised_eigenproblem_and_splits_regions():
    feats, fg = _two_region_features(1)
    cut = seg.ncut_foreground(feats, (6, 6), tau=0.2)
    assert torch.equal(cut.foreground, fg)
    assert torch.equal(seg.ncut_foreground(5 * feats, (6, 6)).foreground, fg)  # cosine: scale-free
    # (D - A) x = λ D x for the returned x, λ
    f = F.normalize(feats.double(), dim=-1)
    cos = f @ f.transpose(1, 2)
    A = torch.where(cos > 0.2, 1.0, 1e-5).double()
    Dg = torch.diag_embed(A.sum(-1))
    x = cut.eigvec.flatten(1).double()
    lhs = ((Dg - A) @ x[..., None])[..., 0]
    rhs = cut.eigval.double()[:, None] * (Dg @ x[..., None])[..., 0]
    torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-4 * float(x.abs().max()))
    assert bool((cut.eigval >= -1e-6).all()) and bool((cut.eigval <= 2 + 1e-6).all())


def test_fixed_grid_helpers():
    b = seg.border_mask((4, 5))
    assert b.sum() == 4 * 5 - 2 * 3 and not b[1:3, 1:4].any()
    m = _model("crate_nano_cifar")
    assert seg.patch_grid(m) == (4, 4) and seg.penultimate_layer(m) == 1
