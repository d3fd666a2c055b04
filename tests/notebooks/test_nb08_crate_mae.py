"""The claims notebook 08 checks, as tests (CRATE-MAE: mirrored decoder, inversion, masking, loss)."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from crate_edu.data import normalize_uint8
from crate_edu.evaluation import mask_noise, masked_patch_loss, reconstruct
from crate_edu.models import (
    ISTA,
    MSSA,
    LinearDictionary,
    PreNorm,
    create_model,
    patchify,
    random_masking,
    unpatchify,
)

F64 = torch.float64


def model():
    torch.manual_seed(0)
    return create_model("crate_mae_nano_cifar", depth=2, decoder_depth=2).eval()


def test_decoder_layers_mirror_encoder_layers():
    m = model()
    L = m.config.depth
    assert len(m.decoder_blocks) == len(m.blocks) == L
    for ell in range(L):
        enc, dec = m.blocks[L - 1 - ell].layers[0], m.decoder_blocks[ell].layers[0]
        assert isinstance(dec[0].fn, LinearDictionary)
        assert dec[0].fn.weight.shape == enc.ista.weight.shape == (m.config.dim, m.config.dim)
        assert [n for n, _ in dec[0].fn.named_parameters()] == ["weight"]  # no bias
        assert [p.shape for p in enc.mssa.parameters()] == [p.shape for p in dec.mssa.parameters()]


def test_decoder_layer_written_out():
    m = model()
    cfg = m.config
    layer = copy.deepcopy(m.decoder_blocks[0].layers[0]).double()
    Z = torch.randn(2, cfg.num_patches + 1, cfg.dim, dtype=F64)
    mssa = layer.mssa
    Z_half = layer[0].norm(Z) @ layer[0].fn.weight.T
    W = (layer[1].norm(Z_half) @ mssa.qkv.weight.T).unflatten(-1, (cfg.heads, cfg.head_dim)).transpose(1, 2)
    A = torch.softmax(W @ W.transpose(-1, -2) / math.sqrt(cfg.head_dim), dim=-1)
    SSA = (A @ W).transpose(1, 2).flatten(2)
    Z_next = Z_half - (SSA @ mssa.to_out[0].weight.T + mssa.to_out[0].bias)
    with torch.no_grad():
        assert torch.allclose(Z_next, layer(Z), atol=1e-12, rtol=0)


def test_minus_mssa_step_inverts_to_second_order():
    torch.manual_seed(1)
    block = PreNorm(128, MSSA(128, 4, 32)).double()
    W0, b0 = block.fn.to_out[0].weight.detach().clone(), block.fn.to_out[0].bias.detach().clone()
    z = torch.randn(2, 65, 128, dtype=F64)
    errors, twice = [], []
    with torch.no_grad():
        for eps in (1e-1, 1e-2, 1e-3):
            block.fn.to_out[0].weight.copy_(eps * W0)
            block.fn.to_out[0].bias.copy_(eps * b0)
            z_half = z + block(z)
            errors.append(float((z_half - block(z_half) - z).norm() / z.norm()))
            twice.append(float((z_half + block(z_half) - z).norm() / z.norm()))  # the same sign twice
    slopes = [math.log10(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(1.9 < s < 2.1 for s in slopes), slopes
    slopes_twice = [math.log10(twice[i] / twice[i + 1]) for i in range(2)]
    assert all(0.9 < s < 1.1 for s in slopes_twice), slopes_twice  # first order: no cancellation


def test_dictionary_undoes_ista_on_sparse_codes():
    torch.manual_seed(2)
    d = 16
    D, _ = torch.linalg.qr(torch.randn(d, d, dtype=F64))
    a = F.relu(torch.randn(8, d, dtype=F64)) * (torch.rand(8, d, dtype=F64) < 0.3)
    x = a @ D.T
    ista, dec = ISTA(d, eta=1.0, lambd=0.0).double(), LinearDictionary(d).double()
    with torch.no_grad():
        ista.weight.copy_(D)
        dec.weight.copy_(D)
        assert torch.allclose(ista(x), a, atol=1e-12)
        assert torch.allclose(dec(ista(x)), x, atol=1e-12)
        z = x.clone()
        for _ in range(300):
            z = F.relu(z + 0.1 * (x - z @ D.T) @ D)
        assert torch.allclose(z, a, atol=1e-10)
        ista.eta = 0.1
        assert not torch.allclose(ista(x), a, atol=1e-3)  # one step at η = 0.1 is not enough


def test_patches_masks_and_mask_tokens():
    m = model()
    x = torch.randn(8, 3, 32, 32)
    p = patchify(x, 4)
    assert torch.equal(unpatchify(p, 4), x)
    assert torch.equal(p[:, 9], x[:, :, 4:8, 4:8].permute(0, 2, 3, 1).flatten(1))
    noise = mask_noise(8, 64, 0)
    kept, mask, _ = random_masking(p, 0.75, noise)
    assert kept.shape[1] == 16 and bool((mask.sum(1) == 48).all())
    assert bool(
        (noise[mask == 0].view(8, 16).max(1).values < noise[mask == 1].view(8, 48).min(1).values).all()
    )
    with torch.no_grad():
        tokens, mask_enc = m.encoder_input(x, 0.75, noise)
        rows = (m.mask_token + m.decoder_pos_embed)[0, 1:][None].expand(8, -1, -1)
    assert tokens.shape == (8, 65, 128)
    assert torch.allclose(tokens[:, 1:][mask_enc == 1], rows[mask_enc == 1], atol=1e-6)
    with torch.no_grad():
        loss, pred, mask_out = m(x, noise=noise)
    assert torch.equal(mask_out, mask_enc)
    assert torch.allclose(masked_patch_loss(pred, p, mask_out), loss, atol=1e-6)


def test_panels_unnormalise_to_the_uint8_pixels():
    m = model()
    raw = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.2, 0.3)
    x = normalize_uint8(raw, mean, std)
    panels = reconstruct(m, x, mean=mean, std=std, seed=0)
    assert torch.allclose(torch.tensor(panels.original), raw.permute(0, 2, 3, 1).float() / 255, atol=1e-6)
    with torch.no_grad():
        own = m(x, noise=mask_noise(3, 64, 0))[0]
    assert abs(panels.loss - float(own)) < 1e-6


def shipped_mae():
    """The shipped checkpoint (package data; its absence is a failure, not a skip)."""
    from crate_edu.weights import load_tutorial_model

    return load_tutorial_model("cluttered-digits-crate-mae")[0]


def test_shipped_mae_reconstructs_attends_and_probes():
    """The notebook's claims about the shipped checkpoint, on a small slice of the test split."""
    from crate_edu.data import ClutteredDigits
    from crate_edu.evaluation import (
        cls_attention_maps,
        evaluate_reconstruction,
        mass_on_mask_with_control,
        probe_layers,
    )
    from crate_edu.train import MAETrainConfig, build_mae_model
    from crate_edu.weights import load_tutorial_model

    model = shipped_mae()
    init = build_mae_model(MAETrainConfig())
    test = ClutteredDigits("test", samples_per_digit=1)  # 359 images
    train = ClutteredDigits("train", samples_per_digit=1)  # 1,438 images
    x = torch.stack([test[i][0] for i in range(128)])
    loss = evaluate_reconstruction(model, test, seed=0, limit=128)
    assert loss < 0.6 * float(x.pow(2).mean())  # well below predicting the mean
    gt = test.masks[:128]
    chance = float(F.avg_pool2d(gt[:, None].float(), 4).mean())
    maps = cls_attention_maps(model, x, all_layers=True)
    own, control = (share.flatten() for share in mass_on_mask_with_control(maps, gt))
    k = int(own.argmin())
    assert float(own[k]) < chance / 4  # a head keeps off the digit ...
    assert abs(float(own[k] - control[k])) < 0.25 * (chance - float(own[k]))  # ... by position alone
    pre = probe_layers(model, train, test, pool="mean", limit=500)
    at_init = probe_layers(init, train, test, pool="mean", limit=500)
    assert max(pre) > max(at_init)
    supervised = load_tutorial_model("cluttered-digits-crate")[0]  # package data: always there
    sup = probe_layers(supervised, train, test, pool="cls", limit=500)
    assert all(a < b for a, b in zip(sup, sup[1:], strict=False)) and sup[-1] > max(pre), (sup, pre)
