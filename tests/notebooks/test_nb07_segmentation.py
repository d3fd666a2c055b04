"""Tests behind the checks of notebooks/07_emergent_segmentation: the notebook's inline code,
restated on other sizes and seeds than the notebook's, against the package.

Covered in tests/unit/evaluation/test_segmentation.py: the ViT's maps from its queries and keys,
DINO's form of the mass threshold, the score by hand, the PCA sign convention, the cut on planted
regions. This file adds: the [CLS] row of CRATE's softmax(W^T W / sqrt p) and its normalisation,
the notebook's inline mass threshold and its two properties, the inline pixel IoU, the inline mIoU,
the share of attention on the digit (and its chance level), the fixed-mask baseline on
cluttered-digits, PCA against the covariance eigendecomposition on model features, the border sign
rule, and the generalised eigen-equation of the cut on model features.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import crate_edu
from crate_edu.data import ClutteredDigits, normalize_uint8
from crate_edu.evaluation import segmentation as seg

FRACTION = 0.6
F64 = torch.float64


@pytest.fixture(scope="module")
def data():
    test = ClutteredDigits("test", samples_per_digit=1, seed=3)  # 359 images
    return test, normalize_uint8(test.images, test.mean, test.std)


@pytest.fixture(scope="module")
def crate():
    torch.manual_seed(7)
    return crate_edu.create_model("crate_nano_cifar", depth=3, dim=64, heads=2).eval()


def test_cls_row_inline_equals_package(data, crate):
    _, x = data
    xb = x[:9]
    W = seg.layer_traces(crate, xb)[1].proj  # penultimate of 3 layers
    p = W.shape[-1]
    A_cls = torch.softmax(W[:, :, :1] @ W.transpose(-1, -2) / p**0.5, dim=-1)[:, :, 0]
    inline = A_cls[:, :, 1:].reshape(9, -1, 8, 8)
    maps = seg.cls_attention_maps(crate, xb)
    torch.testing.assert_close(inline, maps, rtol=0, atol=1e-6)
    torch.testing.assert_close(inline.sum((-1, -2)) + A_cls[:, :, 0], torch.ones(9, 2), rtol=0, atol=1e-6)


def test_inline_mass_threshold_and_its_properties(data, crate):
    _, x = data
    maps = seg.cls_attention_maps(crate, x[:20], 0)
    a = maps.flatten(-2).double()
    vals, order = a.sort(dim=-1, descending=True, stable=True)
    keep_sorted = (vals.cumsum(-1) - vals) < FRACTION * a.sum(-1, keepdim=True)
    inline = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted).reshape(maps.shape)
    assert torch.equal(inline, seg.mass_threshold_masks(maps, FRACTION))
    kept = (a * inline.flatten(-2)).sum(-1) / a.sum(-1)
    smallest = torch.where(inline.flatten(-2), a, torch.inf).min(-1).values
    assert bool((kept >= FRACTION - 1e-12).all())
    assert bool(((kept - smallest / a.sum(-1)) < FRACTION).all())


def test_inline_pixel_iou_and_miou(data, crate):
    test, x = data
    maps = seg.cls_attention_maps(crate, x)
    keep = seg.mass_threshold_masks(maps, FRACTION)
    up = keep.repeat_interleave(4, -2).repeat_interleave(4, -1)
    inline = (up & test.masks[:, None]).sum((-1, -2)) / (up | test.masks[:, None]).sum((-1, -2))
    ious = seg.head_ious(maps, test.masks, FRACTION)
    torch.testing.assert_close(inline.float(), ious, rtol=0, atol=1e-6)
    per_class = torch.stack([ious[test.labels == c].mean(0).max() for c in range(10)])
    assert seg.segmentation_score(ious, test.labels).miou == pytest.approx(float(per_class.mean()), abs=1e-6)


def test_inline_share_of_attention_on_the_digit(data, crate):
    test, x = data
    maps = seg.cls_attention_maps(crate, x[:50], all_layers=True)  # (L, B, h, 8, 8)
    cover = F.avg_pool2d(test.masks[:50, None].float(), 4)
    inline = (maps[1] * cover).sum((-1, -2)) / maps[1].sum((-1, -2))
    share = seg.mass_on_mask(maps, test.masks[:50])
    torch.testing.assert_close(inline.mean(0), share.mean(1)[1], rtol=0, atol=1e-5)
    uniform = seg.mass_on_mask(torch.ones(50, 1, 8, 8), test.masks[:50])[:, 0]
    torch.testing.assert_close(uniform, test.masks[:50].float().mean((1, 2)), rtol=0, atol=1e-6)  # chance


def test_fixed_mask_baseline_on_cluttered_digits(data):
    test, _ = data
    held = ClutteredDigits("train", samples_per_digit=1)
    pix = seg.fixed_mask_baseline(held.masks, test.masks)["test_iou"]
    pat = seg.fixed_mask_baseline(seg.masks_to_patches(held.masks, 4), seg.masks_to_patches(test.masks, 4))
    # benchmarks/results/cluttered_digits.json, full splits: 0.4395 per pixel, 0.5446 per patch
    assert abs(pix - 0.44) < 0.03 and abs(pat["test_iou"] - 0.54) < 0.03


def test_pca_against_covariance_and_sign_rule(data, crate):
    _, x = data
    feats = seg.head_projections(crate, x[:64], 2)
    rows = feats.reshape(-1, feats.shape[-1]).double()
    evals, evecs = torch.linalg.eigh(torch.cov(rows.T))
    top3 = evecs[:, -3:].flip(-1).T
    pc = seg.pca(rows, 3)
    torch.testing.assert_close(
        (pc.components * top3).sum(-1).abs(), torch.ones(3, dtype=F64), rtol=0, atol=1e-8
    )
    torch.testing.assert_close(pc.explained, evals.flip(0)[:3] / evals.sum(), rtol=0, atol=1e-10)
    maps = seg.pca_maps(feats, (8, 8))
    assert float(maps.scores[:, 0][:, seg.border_mask((8, 8))].mean()) < 0
    assert torch.equal(seg.pca_maps(-feats, (8, 8)).foreground, maps.foreground)


def test_cut_eigen_equation_on_model_features(data, crate):
    _, x = data
    feats = seg.head_projections(crate, x[:6])
    cut = seg.ncut_foreground(feats, (8, 8))
    f = F.normalize(feats.double(), dim=-1)
    A = torch.where(f @ f.transpose(1, 2) > 0.2, 1.0, 1e-5).double()
    Dg = torch.diag_embed(A.sum(-1))
    xv = cut.eigvec.flatten(1).double()[..., None]
    torch.testing.assert_close(
        (Dg - A) @ xv, cut.eigval.double()[:, None, None] * (Dg @ xv), rtol=0, atol=1e-4
    )
