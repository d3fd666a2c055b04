"""crate_edu.evaluation.reconstruction: fixed masks, masked-patch loss, un-normalisation, the four
panels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crate_edu.data.transforms import normalize_uint8
from crate_edu.evaluation.reconstruction import (
    evaluate_reconstruction,
    mask_noise,
    mask_patches,
    masked_patch_loss,
    paste_visible,
    prediction_to_patches,
    reconstruct,
    unnormalize,
)
from crate_edu.models import create_model
from crate_edu.models.crate_mae import patchify, unpatchify

MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)


def tiny_mae(**kw):
    torch.manual_seed(0)
    return create_model(
        "crate_mae_nano_cifar", dim=32, depth=1, decoder_depth=1, heads=2, decoder_heads=2, **kw
    ).eval()


def images(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return raw, normalize_uint8(raw, MEAN, STD)


def test_mask_noise_is_fixed_by_the_seed():
    a, b, c = mask_noise(2, 64, 3), mask_noise(2, 64, 3), mask_noise(2, 64, 4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    state = torch.get_rng_state()
    mask_noise(2, 64, 3)
    assert torch.equal(state, torch.get_rng_state())  # the global generator is left alone
    with pytest.raises(ValueError, match="positive"):
        mask_noise(0, 64, 0)


def test_masked_patch_loss_equals_the_models_loss():
    model = tiny_mae()
    _, x = images()
    noise = mask_noise(3, 64, 0)
    with torch.no_grad():
        loss, pred, mask = model(x, noise=noise)
    ours = masked_patch_loss(pred, patchify(x, 4), mask)
    assert torch.allclose(ours, loss, rtol=1e-6, atol=0)
    # only removed patches count: changing the prediction on visible patches changes nothing
    pred2 = pred + 5.0 * (1 - mask).unsqueeze(-1)
    assert torch.allclose(masked_patch_loss(pred2, patchify(x, 4), mask), loss, rtol=1e-6)
    with pytest.raises(ValueError, match="removes no patch"):
        masked_patch_loss(pred, patchify(x, 4), torch.zeros_like(mask))
    with pytest.raises(ValueError, match="match in shape"):
        masked_patch_loss(pred[:, :3], patchify(x, 4), mask)


def test_unnormalize_inverts_the_normalisation():
    raw, x = images()
    back = unnormalize(x, MEAN, STD)
    assert torch.allclose(back, raw.float() / 255, atol=1e-6)
    assert float(unnormalize(x * 10, MEAN, STD).max()) <= 1.0  # clamped to valid pixels
    with pytest.raises(ValueError, match="one value per channel"):
        unnormalize(x, (0.5,), (0.2,))
    with pytest.raises(ValueError, match="B, C, H, W"):
        unnormalize(x[0], MEAN, STD)


def test_paste_and_mask_patches():
    _, x = images(2)
    target = patchify(x, 4)
    pred = torch.randn_like(target)
    mask = (mask_noise(2, 64, 1) > 0.5).float()
    pasted = paste_visible(pred, target, mask)
    keep = mask == 0
    assert torch.equal(pasted[keep], target[keep]) and torch.equal(pasted[~keep], pred[~keep])
    masked = patchify(mask_patches(x, mask, 4, fill=0.25), 4)
    assert torch.all(masked[~keep] == 0.25) and torch.equal(masked[keep], target[keep])


def test_prediction_to_patches_undoes_norm_pix():
    _, x = images(2)
    target = patchify(x, 4)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    standardised = (target - mean) / (var + 1e-6) ** 0.5
    assert torch.allclose(prediction_to_patches(standardised, target, True), target, atol=1e-5)
    assert prediction_to_patches(standardised, target, False) is standardised


def test_reconstruct_panels():
    model = tiny_mae()
    raw, x = images(3)
    p = reconstruct(model, x, mean=MEAN, std=STD, seed=7)
    for arr in (p.original, p.masked, p.reconstruction, p.pasted):
        assert arr.shape == (3, 32, 32, 3) and arr.min() >= 0 and arr.max() <= 1
    assert np.allclose(p.original, raw.permute(0, 2, 3, 1).numpy() / 255, atol=1e-6)
    assert p.mask.shape == (3, 64) and np.allclose(p.mask.sum(1), 48)  # 75 % of 64 patches removed
    with torch.no_grad():
        loss, pred, mask = model(x, noise=mask_noise(3, 64, 7))
    assert abs(p.loss - float(loss)) < 1e-6
    assert np.array_equal(p.mask, mask.numpy())
    assert np.allclose(p.per_image_loss.mean(), float(loss), rtol=1e-5)  # equal masked counts per image
    recon = unnormalize(unpatchify(pred, 4), MEAN, STD).permute(0, 2, 3, 1).numpy()
    assert np.allclose(p.reconstruction, recon, atol=1e-6)
    # visible patches of the pasted panel are the original pixels; removed ones the reconstruction
    vis = np.repeat(np.repeat((p.mask == 0).reshape(3, 8, 8), 4, 1), 4, 2)
    assert np.allclose(p.pasted[vis], p.original[vis], atol=1e-6)
    assert np.allclose(p.pasted[~vis], p.reconstruction[~vis], atol=1e-6)
    assert np.allclose(p.masked[~vis], 0.5)
    again = reconstruct(model, x, mean=MEAN, std=STD, seed=7)
    assert np.array_equal(again.mask, p.mask) and again.loss == p.loss
    other = reconstruct(model, x, mean=MEAN, std=STD, seed=8)
    assert not np.array_equal(other.mask, p.mask)


def test_reconstruct_keeps_training_mode():
    model = tiny_mae().train()
    _, x = images(1)
    reconstruct(model, x, mean=MEAN, std=STD)
    assert model.training


def test_evaluate_reconstruction_weights_batches():
    model = tiny_mae()
    _, x = images(5)
    with torch.no_grad():
        l0 = float(model(x[:3], noise=mask_noise(3, 64, 2))[0])
        l1 = float(model(x[3:], noise=mask_noise(2, 64, 3))[0])
    got = evaluate_reconstruction(model, x, seed=2, batch_size=3)
    assert abs(got - (3 * l0 + 2 * l1) / 5) < 1e-6
    assert abs(evaluate_reconstruction(model, x, seed=2, batch_size=3, limit=3) - l0) < 1e-6
    with pytest.raises(ValueError, match="empty"):
        evaluate_reconstruction(model, x, limit=0)
