"""Every official preset computes what the official code computes, not only the tiny fixtures.

Shapes cannot reveal a wrong head count or λ, so each preset's config is checked against the
official constructors, and its output is compared with an independent functional re-statement of
the official forward pass (docs/design.md), written here on the raw state dict. Depth is cut to one
layer to keep the test fast; the per-layer arithmetic is what is being checked.
"""

import pytest
import torch
import torch.nn.functional as F

import crate_edu

# name: (family, image, patch, dim, depth, heads) as in the official constructors
OFFICIAL = {
    "crate_tiny": ("crate", 224, 16, 384, 12, 6),
    "crate_small": ("crate", 224, 16, 576, 12, 12),
    "crate_base": ("crate", 224, 16, 768, 12, 12),
    "crate_large": ("crate", 224, 16, 1024, 24, 16),
    "crate_alpha_b16": ("alpha", 224, 16, 768, 12, 12),
    "crate_alpha_l14": ("alpha", 224, 14, 1024, 24, 16),
    "crate_mae_tiny": ("mae", 224, 16, 384, 12, 6),
    "crate_mae_small": ("mae", 224, 16, 576, 12, 12),
    "crate_mae_base": ("mae", 224, 16, 768, 12, 12),
    "crate_mae_large": ("mae", 224, 16, 1024, 24, 16),
}


@pytest.mark.parametrize("name", OFFICIAL)
def test_preset_config_is_the_official_one(name):
    family, image, patch, dim, depth, heads = OFFICIAL[name]
    cfg = crate_edu.model_config(name)
    assert (cfg.image_size, cfg.patch_size, cfg.dim, cfg.depth, cfg.heads, cfg.head_dim) == (
        image, patch, dim, depth, heads, dim // heads,
    )  # fmt: skip
    assert (cfg.eta, cfg.lambd) == ((0.1, 0.5) if family == "mae" else (0.1, 0.1))
    if family == "mae":
        assert (cfg.decoder_depth, cfg.decoder_heads, cfg.mask_ratio) == (depth, heads, 0.75)
    else:
        assert (cfg.num_classes, cfg.pool) == (1000, "cls")


# ---------------------------------------------------------------- the official forward, restated
def _ln(x, sd, key, eps):
    return F.layer_norm(x, x.shape[-1:], sd[f"{key}.weight"], sd[f"{key}.bias"], eps)


def _mssa(x, sd, key, heads, bias=True):
    B, N, _ = x.shape
    w = (x @ sd[f"{key}.qkv.weight"].T).view(B, N, heads, -1).transpose(1, 2)  # (B, h, N, p)
    attn = torch.softmax(w @ w.transpose(-1, -2) * w.shape[-1] ** -0.5, dim=-1)
    out = (attn @ w).transpose(1, 2).reshape(B, N, -1)
    out = out @ sd[f"{key}.to_out.0.weight"].T
    return out + sd[f"{key}.to_out.0.bias"] if bias else out


def _crate_layer(x, sd, key, heads, lambd, ln_eps=1e-5):
    x = x + _mssa(_ln(x, sd, f"{key}.0.norm", ln_eps), sd, f"{key}.0.fn", heads)
    z = _ln(x, sd, f"{key}.1.norm", ln_eps)
    D = sd[f"{key}.1.fn.weight"]
    return F.relu(z + 0.1 * (z @ D - z @ D.T @ D) - 0.1 * lambd)  # ReLU(z + η(Dᵀz − DᵀDz) − ηλ)


def _ref_crate(sd, img, heads, patch):
    B, C, H, W = img.shape
    x = (
        img.view(B, C, H // patch, patch, W // patch, patch)
        .permute(0, 2, 4, 3, 5, 1)
        .reshape(B, -1, patch * patch * C)
    )
    x = (
        _ln(x, sd, "to_patch_embedding.1", 1e-5) @ sd["to_patch_embedding.2.weight"].T
        + sd["to_patch_embedding.2.bias"]
    )
    x = _ln(x, sd, "to_patch_embedding.3", 1e-5)
    x = torch.cat([sd["cls_token"].expand(B, -1, -1), x], 1) + sd["pos_embedding"]
    x = _crate_layer(x, sd, "transformer.layers.0", heads, lambd=0.1)
    return _ln(x[:, 0], sd, "mlp_head.0", 1e-5) @ sd["mlp_head.1.weight"].T + sd["mlp_head.1.bias"]


def _ref_alpha(sd, img, heads, patch):
    B = img.shape[0]
    x = F.conv2d(img, sd["conv1.weight"], sd["conv1.bias"], stride=patch).flatten(2).transpose(1, 2)
    x = torch.cat([sd["cls_token"].expand(B, -1, -1), x], 1) + sd["pos_embedding"]
    key = "transformer.layers.0"
    x = x + _mssa(_ln(x, sd, f"{key}.0.norm", 1e-6), sd, f"{key}.0.fn", heads, bias=False)
    z = _ln(x, sd, f"{key}.1.norm", 1e-6)
    D, D1 = sd[f"{key}.1.fn.D"], sd[f"{key}.1.fn.D1"]
    a1 = F.relu(0.1 * z @ D - 0.01)
    a2 = F.relu(a1 - 0.1 * (a1 @ D.T - z) @ D - 0.01)
    x = x + a2 @ D1.T
    return _ln(x[:, 0], sd, "mlp_head.0", 1e-5) @ sd["mlp_head.1.weight"].T + sd["mlp_head.1.bias"]


def _ref_mae(sd, img, heads, patch, noise):
    B = img.shape[0]
    x = F.conv2d(img, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2)  # (B, L, d)
    L, d = x.shape[1:]
    keep = int(L * 0.25)
    order = noise.argsort(1)
    mask = torch.ones(B, L)
    tokens = sd["mask_token"].expand(B, L, d).clone()
    for b in range(B):  # the visible patches stay, every other position gets the mask token
        tokens[b, order[b, :keep]] = x[b, order[b, :keep]]
        mask[b, order[b, :keep]] = 0
    x = torch.cat([sd["cls_token"].expand(B, -1, -1), tokens], 1) + sd["decoder_pos_embed"]
    x = _crate_layer(x, sd, "blocks.0.layers.0", heads, lambd=0.5)
    x = _ln(x, sd, "norm", 1e-6)
    key = "decoder_blocks.0.layers.0"
    x = _ln(x, sd, f"{key}.0.norm", 1e-5) @ sd[f"{key}.0.fn.weight"].T
    x = x - _mssa(_ln(x, sd, f"{key}.1.norm", 1e-5), sd, f"{key}.1.fn", heads)
    pred = (_ln(x, sd, "decoder_norm", 1e-6) @ sd["decoder_pred.weight"].T + sd["decoder_pred.bias"])[:, 1:]
    C, H, W = img.shape[1:]
    target = img.view(B, C, H // patch, patch, W // patch, patch).permute(0, 2, 4, 3, 5, 1).reshape(B, L, -1)
    loss = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    return loss, pred, mask


@pytest.mark.parametrize("name", OFFICIAL)
def test_preset_output_equals_the_official_forward(name):
    family, image, patch, dim, depth, heads = OFFICIAL[name]
    torch.manual_seed(0)
    model = crate_edu.create_model(name, depth=1, **({"decoder_depth": 1} if family == "mae" else {})).eval()
    with torch.no_grad():  # perturb LayerNorm affines too, so every parameter matters
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    sd = model.state_dict()
    img = torch.randn(2, 3, image, image)
    with torch.no_grad():
        if family == "mae":
            noise = torch.rand(2, (image // patch) ** 2)
            loss, pred, mask = model(img, noise=noise)
            ref_loss, ref_pred, ref_mask = _ref_mae(sd, img, heads, patch, noise)
            assert torch.equal(mask, ref_mask)
            assert (pred - ref_pred).abs().max().item() <= 1e-4
            assert abs(loss.item() - ref_loss.item()) <= 1e-4
        else:
            ref = (_ref_crate if family == "crate" else _ref_alpha)(sd, img, heads, patch)
            assert (model(img) - ref).abs().max().item() <= 1e-4
