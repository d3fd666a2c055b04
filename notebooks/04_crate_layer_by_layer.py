# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · CRATE layer by layer: assemble it, count it, and measure what each layer does
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/crate-edu/crate_edu/blob/main/notebooks/04_crate_layer_by_layer.ipynb)
#
# Notebooks 02 and 03 derived the two halves of a CRATE layer: MSSA, an approximate gradient step
# that lowers the compression term $R^c$, and ISTA, one proximal step that sparsifies. Here we put
# them together into a layer and a whole network, compare its size with a ViT of the same width,
# and then ask the empirical question the derivation cannot answer: **does a CRATE network, once
# built and trained, actually compress and sparsify its tokens layer after layer?** We measure it
# exactly as the papers do (their layer-wise figure), at random initialisation and after training,
# and then take the measurement apart to see which step of each layer does what.
#
# ## What you will learn
#
# - How a CRATE layer is assembled from the blocks, `[PreNorm(MSSA), PreNorm(ISTA)]`, with the
#   residual around MSSA only; the same layer written with raw tensor operations, checked equal.
# - How the full model chains patch embedding, L layers and a head, and how
#   `forward_intermediates` exposes every intermediate (checked link by link).
# - Where CRATE saves parameters against a ViT of the same width: one projection instead of three,
#   d² instead of 8d² — with a per-component count that adds up to the published totals.
# - The papers' layer-wise measurement ($R^c$ of each layer's MSSA input projections, and the
#   fraction of non-zeros of each ISTA output), its exact recipe and its range, recomputed by hand.
# - What the measurement shows on a small CRATE trained on digits, at initialisation vs after
#   training (and on the official CRATE-S if you have its weights) — and a decomposition of each
#   layer's change into the MSSA step, the ISTA step and the change of subspaces, which tests the
#   critique that MSSA with the skip connection can raise $R^c$.
#
# ## Run time
#
# The model is the `digits-quick` recipe's CRATE (128 wide, 4 heads, 16 patches of 8×8 px) on
# scikit-learn's digits, which ship with scikit-learn (no download).
#
# Measured on 2026-12-03 on 2 CPU cores shared with other jobs, by `benchmarks/notebooks.py`
# (kernel start included; recorded in `benchmarks/results/notebooks_quick.json` and
# `notebooks_full.json`): wall time, and the kernel's CPU time in brackets, which other jobs
# on the machine disturb less. Other jobs kept up to about one core busy during these runs (the
# JSON files record how busy, per notebook), so an idle machine is faster.
#
# | | quick mode (`CRATE_EDU_QUICK=1`) | full mode |
# |---|---|---|
# | CPU (2 cores) | 14 s (CPU 14 s) | 75 s (CPU 56 s) |
# | GPU | not measured (no GPU in this session); training would use one through Accelerate, but the model is tiny, so expect about the CPU times | same |
#
# Quick mode trains the recipe's 4-layer model for 4 epochs; full mode trains an 8-layer model for
# 20 epochs, which fits the digits better, so that the layer-wise curves have more points. The
# optional CRATE-S part (§7) adds under a minute on a CPU when the weights are present.

# %%
# On Google Colab, install crate_edu first (elsewhere this cell does nothing).
import subprocess
import sys

REPOSITORY = "https://github.com/crate-edu/crate_edu"  # the same as crate_edu.REPOSITORY
if "google.colab" in sys.modules:
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, f"crate-edu @ git+{REPOSITORY}"], check=True)

# %%
import copy
import math
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from einops import rearrange

import crate_edu
from crate_edu import coding_rate as cr
from crate_edu.data import build_dataset, dataset_info
from crate_edu.evaluation import layerwise_measurements, parameters_by_component, parameters_by_formula
from crate_edu.models import ISTA, MSSA, CRATELayer, PreNorm
from crate_edu.notebook import QUICK, check, check_close, choose
from crate_edu.train import RECIPES, build_model, load_checkpoint, train

torch.set_num_threads(1)  # small matrices: one thread is the fastest, and results do not depend on it
F64 = torch.float64  # for the checks where exact equality is the point
EPOCHS = choose(quick=4, full=20)  # training epochs of the digits model
DEPTH = choose(quick=4, full=8)  # its number of layers L
N_MEASURE = 256  # fixed batch of test digits for every measurement
print(f"quick mode: {QUICK}; digits model: {DEPTH} layers trained for {EPOCHS} epochs")

# %% [markdown]
# **Convention** (as in notebooks 01–03): tokens are **rows**. The paper's $Z^\ell \in \mathbb{R}^{d\times N}$
# is a tensor of shape `(B, N, d)` here (a batch of B images, N tokens each), and the paper's
# $U_k^\top Z$ ($p\times N$) is `(B, K, N, p)` with one slice per head. Rates are in **nats**.
#
# ## 1. One CRATE layer from its two blocks
#
# A CRATE layer first compresses, then sparsifies (official `model/crate.py`):
#
# $$
# Z^{\ell+1/2} = Z^\ell + \mathrm{MSSA}\big(\mathrm{LN}(Z^\ell)\,\big|\,U^\ell_{[K]}\big),
# \qquad
# Z^{\ell+1} = \mathrm{ISTA}\big(\mathrm{LN}(Z^{\ell+1/2})\,\big|\,D^\ell\big),
# $$
#
# with MSSA as in eqs. 10–12 and ISTA as in eqs. 16–17:
#
# $$
# \mathrm{MSSA}(X) = W_{\text{out}}
#   \begin{bmatrix}\mathrm{SSA}(X|U_1)\\ \vdots \\ \mathrm{SSA}(X|U_K)\end{bmatrix} + b_{\text{out}},
# \quad
# \mathrm{SSA}(X|U_k) = (U_k^\top X)\,
#   \mathrm{softmax}\!\Big(\tfrac{(U_k^\top X)^\top (U_k^\top X)}{\sqrt p}\Big),
# \qquad
# \mathrm{ISTA}(Y|D) = \mathrm{ReLU}\big(Y + \eta D^\top (Y - D Y) - \eta\lambda\mathbf 1\big).
# $$
#
# Four departures from the derivation, all from the official code: the learned
# output map $W_{\text{out}}, b_{\text{out}}$ (`to_out`) replaces $\gamma[U_1\cdots U_K]$; the
# residual coefficient is 1 instead of $1-\kappa\gamma$ and a $1/\sqrt p$ temperature is added
# (notebook 02 measures each); and a **LayerNorm** precedes each block ("pre-norm"). Note also what
# is *not* there: **no residual around ISTA** — its ReLU output *replaces* the stream, so every
# layer's output is non-negative. (CRATE-α puts a residual there; notebook 03 §10.)
#
# In the package the layer is `CRATELayer`, an `nn.ModuleList` of `PreNorm(MSSA)` and `PreNorm(ISTA)`
# (the official attribute layout, so official weights load by name). First we assemble it ourselves
# from the blocks and check it against the package's layer.

# %%
d, K, p, N = 128, 4, 32, 17  # the digits model's width: 4 heads of 32; 16 patches + [CLS]
torch.manual_seed(0)
layer = CRATELayer(d, K, p).double().eval()
# move the LayerNorm affine parameters and the to_out bias off their defaults, so the checks see them
with torch.no_grad():
    for name, prm in layer.named_parameters():
        if "norm" in name or name.endswith("bias"):
            prm.add_(0.1 * torch.randn_like(prm))
Z = torch.randn(2, N, d, dtype=F64)  # (B, N, d): two "images" of 17 tokens

# Hand-assembled: the two blocks, each behind its own LayerNorm, with the layer's weights
compress = PreNorm(d, MSSA(d, heads=K, dim_head=p, out_bias=True)).double()
sparsify = PreNorm(d, ISTA(d, eta=0.1, lambd=0.1)).double()
compress.load_state_dict(layer[0].state_dict())
sparsify.load_state_dict(layer[1].state_dict())
with torch.no_grad():
    Z_half_hand = Z + compress(Z)  # Z^{ℓ+½} = Z^ℓ + MSSA(LN Z^ℓ)       (B, N, d)
    Z_next_hand = sparsify(Z_half_hand)  # Z^{ℓ+1} = ISTA(LN Z^{ℓ+½})   (B, N, d), no residual
    Z_next_pkg, trace = layer(Z, return_trace=True)

print("official parameter names of one layer:")
for name, prm in layer.named_parameters():
    print(f"  {name:22s} {tuple(prm.shape)}")

# %%
check_close("hand-assembled [PreNorm(MSSA), PreNorm(ISTA)] = CRATELayer", Z_next_hand, Z_next_pkg, atol=1e-12)
check_close("... and its Z^{ℓ+½} = the layer's trace.z_half", Z_half_hand, trace.z_half, atol=1e-12)

# %% [markdown]
# Now the same layer with nothing but tensor operations on the layer's parameters: every weight is
# accounted for. The ISTA line is notebook 03's `ista_step` warm-started at its own input,
# `cr.ista_step(Y, Y, D)`; in rows, "$DY$" is `Y @ D.T`.


# %%
def crate_layer_from_scratch(Z: torch.Tensor, layer: CRATELayer) -> tuple[torch.Tensor, torch.Tensor]:
    """Z^{ℓ+½} and Z^{ℓ+1} of one CRATE layer from its raw parameters; Z is (B, N, d)."""
    ln1, ln2 = layer[0].norm, layer[1].norm
    U_T = layer.mssa.qkv.weight  # (K·p, d): the stacked U_k^T, one shared projection
    W_out, b_out = layer.mssa.to_out[0].weight, layer.mssa.to_out[0].bias  # (d, K·p), (d,)
    D, eta, lam = layer.ista.weight, layer.ista.eta, layer.ista.lambd  # (d, d), 0.1, 0.1
    Kh, ph = layer.mssa.heads, layer.mssa.dim_head
    X = F.layer_norm(Z, Z.shape[-1:], ln1.weight, ln1.bias, ln1.eps)  # LN(Z^ℓ)          (B, N, d)
    W = rearrange(X @ U_T.T, "b n (k p) -> b k n p", k=Kh)  # U_k^T LN(Z^ℓ)              (B, K, N, p)
    A = torch.softmax(W @ W.transpose(-1, -2) / math.sqrt(ph), dim=-1)  # membership     (B, K, N, N)
    ssa = rearrange(A @ W, "b k n p -> b n (k p)")  # [SSA_1; …; SSA_K]                 (B, N, K·p)
    Z_half = Z + ssa @ W_out.T + b_out  # residual coefficient 1                        (B, N, d)
    Y = F.layer_norm(Z_half, Z.shape[-1:], ln2.weight, ln2.bias, ln2.eps)  # LN(Z^{ℓ+½})
    Z_next = torch.relu(Y + eta * (Y - Y @ D.T) @ D - eta * lam)  # ISTA(Y | D), eq. 17  (B, N, d)
    return Z_half, Z_next


with torch.no_grad():
    Z_half_raw, Z_next_raw = crate_layer_from_scratch(Z, layer)
    Y = layer[1].norm(trace.z_half)
    as_residual = trace.z_half + layer.ista(Y)  # what a residual around ISTA would give

# %%
check_close("raw tensor operations: Z^{ℓ+½} = trace.z_half", Z_half_raw, trace.z_half, atol=1e-12)
check_close("raw tensor operations: Z^{ℓ+1} = CRATELayer output", Z_next_raw, Z_next_pkg, atol=1e-12)
check_close(
    "the ISTA block = cr.ista_step(Y, Y, D) of notebook 03",
    layer.ista(Y),
    cr.ista_step(Y, Y, layer.ista.weight.detach(), 0.1, 0.1),
    atol=1e-12,
)
zeros_out = (Z_next_pkg == 0).double().mean().item()
zeros_res = (as_residual == 0).double().mean().item()
check(
    "no residual around ISTA: the layer output is non-negative and has exact zeros",
    bool((Z_next_pkg >= 0).all()) and zeros_out > 0.3,
    f"{zeros_out:.1%} of entries are 0; with a residual it would be {zeros_res:.1%}",
)

# %% [markdown]
# The last line matters for everything below: because the ISTA output *is* the next layer's input,
# the stream of a CRATE network is non-negative and sparse between layers, and "sparsity of the
# ISTA output" is the sparsity of the representation itself. With a residual (as in CRATE-α) the
# stream would have no exact zeros at all, and the sparse codes would have to be measured inside the
# block (`LayerTrace.codes` does that for CRATE-α).
#
# Notice also that about half the entries are zero at random initialisation, before any learning:
# LayerNorm centres every token, so roughly half of $Y$ is negative, and one ISTA step with small
# $\eta$ moves few entries across zero before the ReLU. **The baseline for the sparsity
# measurement is therefore ≈ 50 % non-zeros, not 100 %.**
#
# ## 2. The whole model
#
# `crate_edu.models.CRATE` follows the official model (`model/crate.py` of Ma-Lab-Berkeley/CRATE):
#
# $$
# Z^1 = \big[z_{\text{cls}};\ \mathrm{LN}(\mathrm{Linear}(\mathrm{LN}(\text{patches})))\big] + E_{\text{pos}},
# \qquad Z^{\ell+1} = f^\ell(Z^\ell)\ (\ell = 1,\dots,L),
# \qquad \text{logits} = \mathrm{Linear}(\mathrm{LN}(z^{L+1}_{\text{cls}})).
# $$
#
# We build the model of the `digits-quick` recipe exactly as the trainer will (same seed, so this is
# the network training starts from): `crate_nano_cifar` (128 wide, 4 heads) with patch 8, so a
# 32×32 digit becomes 16 patch tokens plus [CLS].

# %%
cfg = RECIPES["digits-quick"].config(epochs=EPOCHS, model_overrides={"depth": DEPTH}, progress=False)
set_seed(cfg.seed)  # what crate_edu.train.train does before building the model
model_init = build_model(cfg).eval()
mc = model_init.config
print(
    f"model {cfg.model}: dim {mc.dim}, depth {mc.depth}, heads {mc.heads} of p = {mc.head_dim}, "
    f"patch {mc.patch_size} -> {mc.num_patches} patches + [CLS], {model_init.num_params():,} parameters"
)

test_set = build_dataset("digits", "test")  # 359 test digits, (3, 32, 32), normalised by the dataset
images = torch.stack([test_set[i][0] for i in range(N_MEASURE)])  # (256, 3, 32, 32), a fixed batch
targets = torch.tensor([test_set[i][1] for i in range(N_MEASURE)])
info = dataset_info("digits")
print(
    f"measurement batch: {tuple(images.shape)}, pixel mean {images.mean().item():.3f}, "
    f"std {images.std().item():.3f} (normalised with mean {info.mean[0]}, std {info.std[0]})"
)

# %%
mean, std = torch.tensor(info.mean)[:, None, None], torch.tensor(info.std)[:, None, None]
fig, axes = plt.subplots(1, 10, figsize=(11, 1.6))
for ax, img, y in zip(axes, images[:10], targets[:10]):
    ax.imshow((img * std + mean).permute(1, 2, 0).clamp(0, 1))
    for k in range(1, 4):  # the 8×8-px patch grid: 16 tokens
        ax.axhline(8 * k - 0.5, color="C1", lw=0.5)
        ax.axvline(8 * k - 0.5, color="C1", lw=0.5)
    ax.set_title(f"label {y.item()}", fontsize=8)
    ax.axis("off")
fig.suptitle("Test digits (32×32 px, 3 channels) cut into 4×4 patches of 8×8 px = 16 tokens", fontsize=10)
plt.show()

# %% [markdown]
# We run the model by hand — patchify, embed, the L layers, the head — in float64 and compare with
# `model(x)`. Then `forward_intermediates`, which returns a `LayerTrace` per layer (the per-head
# projections `proj` $=U_k^\top\mathrm{LN}(Z^\ell)$, the attention maps, $Z^{\ell+1/2}$ and
# $Z^{\ell+1}$), is checked link by link: `trace[ℓ].z_out` must be the input of layer ℓ+1, and each
# field must be what that layer computes from its input.

# %%
m64 = copy.deepcopy(model_init).double()
x64 = images[:16].double()
layers = m64.transformer.layers
with torch.no_grad():
    P = mc.patch_size
    patches = rearrange(x64, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=P, p2=P)  # (B, 16, 192)
    emb = m64.to_patch_embedding  # [Rearrange, LN, Linear, LN]
    tokens = emb[3](emb[2](emb[1](patches)))  # (B, 16, d)
    cls = m64.cls_token.expand(len(x64), -1, -1)  # (B, 1, d)
    Z1 = torch.cat([cls, tokens], dim=1) + m64.pos_embedding  # Z^1   (B, 17, d)
    Zl = Z1
    for f in layers:
        Zl = f(Zl)  # Z^{ℓ+1} = f^ℓ(Z^ℓ)
    logits_hand = m64.mlp_head(Zl[:, 0])  # LN + Linear on the [CLS] token   (B, 10)
    logits, traces = m64.forward_intermediates(x64)

    z_in, worst = Z1, {"proj": 0.0, "z_half": 0.0, "z_out": 0.0, "attn rows sum to 1": 0.0}
    for f, t in zip(layers, traces):
        X = f[0].norm(z_in)
        worst["proj"] = max(worst["proj"], (t.proj - f.mssa.forward_parts(X).proj).abs().max().item())
        worst["z_half"] = max(worst["z_half"], (t.z_half - (z_in + f.mssa(X))).abs().max().item())
        worst["z_out"] = max(worst["z_out"], (t.z_out - f.ista(f[1].norm(t.z_half))).abs().max().item())
        worst["attn rows sum to 1"] = max(
            worst["attn rows sum to 1"], (t.attn.sum(-1) - 1).abs().max().item()
        )
        z_in = t.z_out  # trace[ℓ].z_out is layer ℓ+1's input
print(f"{len(traces)} traces; proj {tuple(traces[0].proj.shape)} (B, K, N, p), ", end="")
print(f"attn {tuple(traces[0].attn.shape)} (B, K, N, N)")

# %%
check_close(
    "embedding by hand (patchify, LN, Linear, LN, [CLS], positions) = model.embed",
    Z1,
    m64.embed(x64),
    atol=1e-12,
)
check_close("forward by hand = model(x)", logits_hand, m64(x64), atol=1e-12)
check_close("forward_intermediates logits = model(x)", logits, m64(x64), atol=1e-12)
check_close(
    "last trace's z_out = model.forward_features(x)", traces[-1].z_out, m64.forward_features(x64), atol=1e-12
)
for what, diff in worst.items():
    check_close(f"every layer ℓ, fed trace[ℓ-1].z_out: {what}", diff, 0.0, atol=1e-12)

# %% [markdown]
# ## 3. Parameters: CRATE vs a ViT of the same width
#
# A standard (pre-norm) ViT layer is $Z + \mathrm{MHSA}(\mathrm{LN}\,Z)$ followed by
# $Z + \mathrm{MLP}(\mathrm{LN}\,Z)$. Per layer, with width $d$ and $K$ heads of $p = d/K$:
#
# | block | ViT | CRATE |
# |---|---|---|
# | attention input | three projections $W_q, W_k, W_v$: $3d^2$ | one, $q = k = v = U_k^\top z$: $d^2$ |
# | attention output | $W_{\text{out}}, b_{\text{out}}$: $d^2 + d$ | the same `to_out`: $d^2 + d$ |
# | MLP / ISTA | $d\to 4d\to d$ with biases: $8d^2 + 5d$ | one dictionary $D$: $d^2$ |
# | two LayerNorms | $4d$ | $4d$ |
# | **total per layer** | $12d^2 + 10d$ | $3d^2 + 5d$ |
#
# So a CRATE layer has about **a quarter** of a ViT layer's parameters. The patch embedding
# (LN–Linear–LN on $P = 3\cdot16^2$ inputs), [CLS], positions and head are the same in both
# (the package's ViT baseline shares CRATE's embedding and head, so only the layer differs).
# We compare `crate_tiny` (CRATE-T: d = 384, 12 layers, 6 heads) with `vit_small` (ViT-S: d = 384,
# 12 layers, 6 heads), counting each component from the modules *and* from the formulas above
# (`crate_edu.evaluation.parameters_by_component` and `parameters_by_formula`).
# (Models are built on PyTorch's `meta` device: shapes only, no memory, no time.)


# %%
with torch.device("meta"):
    crate_t = crate_edu.create_model("crate_tiny")
    vit_s = crate_edu.create_model("vit_small")
counts = {"CRATE-T": parameters_by_component(crate_t), "ViT-S": parameters_by_component(vit_s)}
totals = {"CRATE-T": crate_t.num_params(), "ViT-S": vit_s.num_params()}
print(f"{'component':22s} {'CRATE-T':>12s} {'ViT-S':>12s}   ratio")
for key in counts["CRATE-T"]:
    a, b = counts["CRATE-T"][key], counts["ViT-S"][key]
    print(f"{key:22s} {a:12,d} {b:12,d}   {a / b:5.3f}")
ratio = totals["CRATE-T"] / totals["ViT-S"]
print(f"{'total':22s} {totals['CRATE-T']:12,d} {totals['ViT-S']:12,d}   {ratio:5.3f}")
qkv_bias = 3 * vit_s.config.dim * vit_s.config.depth  # DeiT-S has a bias on W_qkv, vit_small none
extra_ln = 2 * (3 * vit_s.config.patch_size**2 + vit_s.config.dim)  # CRATE's LN(P) and LN(d) in the embedding
print(
    f"vit_small vs DeiT-S: +{qkv_bias:,d} (W_qkv bias) − {extra_ln:,d} (two LayerNorms) = "
    f"{totals['ViT-S'] + qkv_bias - extra_ln:,d} parameters ({qkv_bias - extra_ln:,d} more)"
)

# %%
for label, model in (("CRATE-T", crate_t), ("ViT-S", vit_s)):
    check(
        f"{label}: every component's count = its formula",
        counts[label] == parameters_by_formula(model.config),
    )
    check(f"{label}: the components add up to num_params()", sum(counts[label].values()) == totals[label])
official = {"crate_tiny": 6.09, "crate_small": 13.12, "crate_base": 22.80, "crate_large": 77.64}
for name, millions in official.items():
    with torch.device("meta"):
        m = crate_edu.create_model(name)
    n = sum(parameters_by_formula(m.config).values())
    check(
        f"{name}: formula total = num_params() = the published {millions:.2f}M",
        n == m.num_params() and round(n / 1e6, 2) == millions,
        f"{n:,d}",
    )

# %%
fig, ax = plt.subplots(figsize=(7.5, 4))
bottom = torch.zeros(2)
for key in counts["CRATE-T"]:
    vals = torch.tensor([counts["CRATE-T"][key], counts["ViT-S"][key]], dtype=torch.float64) / 1e6
    ax.barh(["CRATE-T", "ViT-S"], vals, left=bottom, label=key)
    bottom += vals
for i, label in enumerate(["CRATE-T", "ViT-S"]):
    ax.text(bottom[i].item() + 0.2, i, f"{totals[label] / 1e6:.2f}M", va="center")
ax.set_xlabel("parameters (millions)")
ax.set_xlim(0, 25)
ax.set_title("Same width (d = 384, 12 layers, 6 heads, 224 px, 1000 classes)")
ax.legend(fontsize=8, loc="lower right")
plt.tight_layout()
plt.show()

# %% [markdown]
# CRATE-T has 27.6 % of ViT-S's parameters, not quite a quarter because the embedding and head
# (0.37M + 0.39M) are shared. The attention block has 3.54M vs 7.08M (the shared projection) and ISTA
# 1.77M vs 14.18M (one $d\times d$ dictionary against the $d\to4d\to d$ MLP). The price, on
# ImageNet-1K from scratch: 66.7 % top-1 for CRATE-T against 72.4 % for ViT-S, both 384 wide
# (Yu et al., arXiv 2306.01129, Table 1). The package's `vit_small` has 22.04M parameters, 11,520
# fewer than the 22,050,664 of the paper's ViT-S (DeiT-S; the count of timm's
# `deit_small_patch16_224`): its $W_{qkv}$ has no bias (−13,824, as in the vit-pytorch code the
# official CRATE descends from) and its patch embedding has CRATE's two extra LayerNorms (+2,304).
# The conclusion does not change.
#
# ## 4. The layer-wise measurement
#
# The papers' layer-wise figure plots, for every layer ℓ, how compressed the tokens are in that
# layer's own subspaces and how sparse its output is. The official `vis_utils` code (mirrored by
# `crate_edu.coding_rate.measure_coding_rate`, `measure_nonzero`) measures, for each image:
#
# - **compression**: take the MSSA input projections $W_k = U_k^\top\mathrm{LN}(Z^\ell)$ (the
#   `qkv` output split by head, `trace.proj`), rescale every token's $p$-vector to unit norm,
#   $\bar w_i = w_i / \|w_i\|$, and sum eq. 8's per-head rates with $\tilde\varepsilon = 0.01$ in
#   the $\varepsilon^2$ slot:
#
# $$
# R^c_\ell = \sum_{k=1}^K \frac12\log\det\Big(I_N + \frac{p}{N\tilde\varepsilon}\,\bar W_k^\top \bar W_k\Big),
# \qquad \tilde\varepsilon = 0.01\ (\text{i.e. } \varepsilon = 0.1);
# $$
#
# - **sparsity**: the fraction of non-zero entries of the ISTA output $Z^{\ell+1}$ (all $N\cdot d$
#   entries of the image; lower is sparser).
#
# Each is reported as mean ± std over the batch (unbiased std for $R^c$, population std for
# sparsity, as officially). How this differs from eq. 8 with the ideal $U$: the $U_k$ are rows of a
# learned `qkv`, not orthonormal; the LayerNorm is part of the measured map; and the unit
# normalisation makes the figure blind to the scale of the tokens — so a step that only shrinks
# every token (the $(1-\kappa\gamma)Z$ term that does most of the derived step's work, notebook 02)
# would show no compression at all.
#
# **Its range.** With unit tokens the $N\times N$ Gram $\bar W_k^\top\bar W_k$ has trace $N$ and
# rank at most $m = \min(N, p)$. Since $\sum_i \log(1 + c\lambda_i)$ is concave in the eigenvalues,
# it is largest when the $m$ eigenvalues are equal and smallest when one eigenvalue takes everything:
#
# $$
# \frac K2\log\Big(1 + \frac{p}{\tilde\varepsilon}\Big) \;\le\; R^c_\ell
#   \;\le\; \frac{Km}{2}\log\Big(1 + \frac{p}{m\tilde\varepsilon}\Big),
# $$
#
# the minimum when all tokens of a head point the same way (maximally compressed), the maximum when
# they are spread over $m$ orthogonal directions. We check both ends, then recompute one layer's
# figure by hand from the trace.


# %%
def rc_per_image(proj: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    """The official R^c of every image, inline, in float64: proj (B, K, N, p) -> (B,)."""
    W = proj.double()
    W = W / W.norm(dim=-1, keepdim=True)  # each token's per-head vector to unit norm
    n, ph = W.shape[-2], W.shape[-1]
    G = W @ W.transpose(-1, -2)  # (B, K, N, N) Gram of the unit tokens
    R = 0.5 * torch.logdet(torch.eye(n, dtype=F64) + ph / (n * eps) * G)  # (B, K) per-head rates
    return R.sum(-1)  # (B,) summed over heads


lo, hi = cr.measure_coding_rate_range(N, p, K)  # the two ends above, eps = 0.01
g = torch.Generator().manual_seed(1)
direction = torch.randn(1, K, 1, p, generator=g, dtype=F64)  # one direction per head
same_dir = direction * torch.rand(1, K, N, 1, generator=g, dtype=F64)  # (1, K, N, p), N positive multiples
Q = torch.linalg.qr(torch.randn(1, K, p, N, generator=g, dtype=F64))[0]  # (1, K, p, N) orthonormal columns
orthonormal = Q.transpose(-1, -2)  # (1, K, N, p): N orthonormal tokens per head
print(f"N = {N}, p = {p}, K = {K}: R^c ranges over [{lo:.3f}, {hi:.3f}] nats")

# %%
check_close(
    "all tokens in one direction per head: R^c = the minimum", rc_per_image(same_dir), [lo], atol=1e-9
)
check_close("N orthonormal tokens per head: R^c = the maximum", rc_per_image(orthonormal), [hi], atol=1e-9)
rand_proj = torch.randn(8, K, N, p, generator=g, dtype=F64)  # 8 "images" of random tokens
rc_rand = rc_per_image(rand_proj)
check_close(
    "inline formula = cr.measure_coding_rate (mean, std over 8 random images)",
    torch.stack([rc_rand.mean(), rc_rand.std()]),
    torch.stack(cr.measure_coding_rate(rand_proj)),
    atol=1e-9,
)

# %% [markdown]
# For the digits model (N = 17 tokens, K = 4 heads of p = 32) the figure can only lie between
# 16.1 and 178.3 nats. Now the real thing: `layerwise_measurements(model, images)` on the fixed
# batch of 256 test digits, at random initialisation, and layer 2 recomputed by hand from the trace
# (the official recipe above, inline, in float64).

# %%
lm_init = layerwise_measurements(model_init, images)
with torch.no_grad():
    _, traces_init = model_init.forward_intermediates(images)


def check_one_layer_by_hand(lm, traces, ell: int, label: str) -> None:
    """Recompute layer ell's (0-based) two figures from its trace and compare with ``lm``."""
    rc = rc_per_image(traces[ell].proj)  # (B,) official R^c, inline, float64
    nz = (traces[ell].z_out != 0).double().flatten(1).mean(1)  # (B,) fraction of non-zeros per image
    check_close(
        f"{label}, layer {ell + 1}: R^c mean, std by hand = layerwise_measurements",
        torch.tensor([lm.compression_mean[ell], lm.compression_std[ell]]),
        torch.stack([rc.mean(), rc.std()]),
        atol=2e-3,  # the package measures in float32
    )
    check_close(
        f"{label}, layer {ell + 1}: non-zero fraction mean, std by hand = layerwise_measurements",
        torch.tensor([lm.nonzero_mean[ell], lm.nonzero_std[ell]]),
        torch.stack([nz.mean(), nz.std(correction=0)]),
        atol=1e-6,
    )


check_one_layer_by_hand(lm_init, traces_init, 1, "random init")
lo_digits, hi_digits = cr.measure_coding_rate_range(mc.num_patches + 1, mc.head_dim, mc.heads)
check(
    "every image and layer lies inside the range of the measurement",
    all(lo_digits <= r.item() <= hi_digits for t in traces_init for r in rc_per_image(t.proj)),
)
print("random initialisation")
print(f"{'layer':>5s}  {'R^c (nats)':>15s}  {'non-zeros':>15s}")
for ell in range(lm_init.depth):
    print(
        f"{ell + 1:5d}  {lm_init.compression_mean[ell]:7.2f} ± {lm_init.compression_std[ell]:5.2f}  "
        f"{lm_init.nonzero_mean[ell]:7.3f} ± {lm_init.nonzero_std[ell]:5.3f}"
    )

# %% [markdown]
# ## 5. Training on digits, and the same measurement after training
#
# `crate_edu.train` trains the model with the `digits-quick` recipe (AdamW 2e-3, one warm-up
# epoch then cosine, label smoothing 0.1, small random shifts, one CPU thread; see
# `RECIPES["digits-quick"].doc`), here for `EPOCHS` epochs and `DEPTH` layers. With a fixed seed
# the run is deterministic on a given CPU and package version, but another CPU (or any change in
# the order of floating-point operations) can change the last digits of a trained number. So the
# cells that print training-dependent numbers (and the training log, which prints timings) are not
# compared by the tests (`# NBVAL_IGNORE_OUTPUT`); the checks, which print no such numbers, are.

# %%
# NBVAL_IGNORE_OUTPUT
run_dir = Path(tempfile.mkdtemp(prefix="crate_digits_"))
result = train(cfg, run_dir)

# %%
model_trained = build_model(cfg)
model_trained.load_state_dict(load_checkpoint(result.checkpoint)["model"])
model_trained.eval()
with torch.no_grad():
    batch_acc = (model_trained(images).argmax(-1) == targets).double().mean().item()
check("training worked: test accuracy above 80 %", result.final["test_acc"] > 0.8)

# %%
# NBVAL_IGNORE_OUTPUT
print(
    f"after {EPOCHS} epochs: test accuracy {result.final['test_acc']:.3f} on all 359 test digits, "
    f"{batch_acc:.3f} on the 256 measured"
)

# %%
lm_trained = layerwise_measurements(model_trained, images)
with torch.no_grad():
    _, traces_trained = model_trained.forward_intermediates(images)
check_one_layer_by_hand(lm_trained, traces_trained, 1, "trained")
check(
    "every image and layer lies inside the range of the measurement",
    all(lo_digits <= r.item() <= hi_digits for t in traces_trained for r in rc_per_image(t.proj)),
)


# %% [markdown]
# Beside the non-zero fraction we also record a baseline: the fraction of positive entries of the
# ISTA *input* $\mathrm{LN}(Z^{\ell+1/2})$ — the sparsity a bare ReLU of the centred tokens would
# give. Whatever the ISTA step adds beyond that is the dictionary's doing.


# %%
def relu_baseline(model: torch.nn.Module, traces) -> list[float]:
    """Per layer, the fraction of positive entries of LN(Z^{ℓ+½}), the input of ISTA."""
    with torch.no_grad():
        return [
            (f[1].norm(t.z_half) > 0).double().mean().item() for f, t in zip(model.transformer.layers, traces)
        ]


base_init, base_trained = relu_baseline(model_init, traces_init), relu_baseline(model_trained, traces_trained)

# %%
# NBVAL_IGNORE_OUTPUT
print(f"{'':5s}  {'R^c (nats)':^33s}  {'fraction of non-zeros (ReLU-of-LN baseline)':^45s}")
print(f"{'layer':>5s}  {'init':>15s}  {'trained':>15s}  {'init':>21s}  {'trained':>21s}")
for ell in range(DEPTH):
    print(
        f"{ell + 1:5d}  {lm_init.compression_mean[ell]:7.2f} ± {lm_init.compression_std[ell]:5.2f}  "
        f"{lm_trained.compression_mean[ell]:7.2f} ± {lm_trained.compression_std[ell]:5.2f}  "
        f"{lm_init.nonzero_mean[ell]:.3f} ± {lm_init.nonzero_std[ell]:.3f} ({base_init[ell]:.3f})  "
        f"{lm_trained.nonzero_mean[ell]:.3f} ± {lm_trained.nonzero_std[ell]:.3f} ({base_trained[ell]:.3f})"
    )


# %%
def plot_layerwise(
    curves: dict, title: str, rc_max: float | None = None, baselines: dict | None = None
) -> None:
    """The papers' layer-wise figure: R^c and the non-zero fraction vs layer, mean ± std error bars."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, (label, lm) in enumerate(curves.items()):
        layers_idx = range(1, lm.depth + 1)
        ax1.errorbar(
            layers_idx,
            lm.compression_mean,
            yerr=lm.compression_std,
            fmt="o-",
            capsize=3,
            color=f"C{i}",
            label=label,
        )
        ax2.errorbar(
            layers_idx, lm.nonzero_mean, yerr=lm.nonzero_std, fmt="o-", capsize=3, color=f"C{i}", label=label
        )
        if baselines and label in baselines:
            ax2.plot(layers_idx, baselines[label], ":", color=f"C{i}", label=f"{label}: ReLU-of-LN baseline")
    if rc_max is not None:
        ax1.axhline(rc_max, ls="--", color="0.5", lw=1, label=f"largest possible ({rc_max:.1f})")
    ax1.set_xlabel("layer index ℓ")
    ax1.set_ylabel(r"$R^c$ of $U_k^\top \mathrm{LN}(Z^\ell)$ (nats)")
    ax1.set_title(r"Compression: $R^c$ (ε² = 0.01, unit tokens; lower = more compressed)", fontsize=10)
    ax2.set_xlabel("layer index ℓ")
    ax2.set_ylabel(r"fraction of non-zero entries of $Z^{\ell+1}$")
    ax2.set_title("Sparsity of the ISTA output (lower = sparser)", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_xticks(list(range(1, max(lm.depth for lm in curves.values()) + 1)))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    plt.tight_layout()
    plt.show()


plot_layerwise(
    {"random init": lm_init, f"trained ({EPOCHS} epochs)": lm_trained},
    f"CRATE on digits ({DEPTH} layers, d = {mc.dim}, K = {mc.heads}), {N_MEASURE} test images: mean ± std",
    rc_max=hi_digits,
    baselines={"random init": base_init, f"trained ({EPOCHS} epochs)": base_trained},
)

# %% [markdown]
# ## 6. Which step compresses? MSSA, ISTA and the change of subspaces
#
# The figure compares $R^c$ at the *input* of consecutive layers, each measured in **its own**
# subspaces: $R^c_\ell(Z^\ell)$ uses layer ℓ's LayerNorm and $U^\ell$, $R^c_{\ell+1}(Z^{\ell+1})$
# uses layer ℓ+1's. So a change between two points mixes three things, which we can separate
# exactly (a telescoping sum, with $R^c_\ell(\cdot)$ the measurement with layer ℓ's LN and $U^\ell$):
#
# $$
# R^c_{\ell+1}(Z^{\ell+1}) - R^c_\ell(Z^\ell)
# = \underbrace{R^c_\ell(Z^{\ell+1/2}) - R^c_\ell(Z^\ell)}_{\text{MSSA step}}
# + \underbrace{R^c_\ell(Z^{\ell+1}) - R^c_\ell(Z^{\ell+1/2})}_{\text{ISTA step}}
# + \underbrace{R^c_{\ell+1}(Z^{\ell+1}) - R^c_\ell(Z^{\ell+1})}_{\text{new subspaces}}.
# $$
#
# The first term is the direct test of the derivation: **does the MSSA step lower $R^c$ in the
# very subspaces it attends in?** It is also the test of the critique of Hu, Zou & Xu (NeurIPS
# 2024, arXiv 2411.17182), who show that once the approximations are made and the residual
# coefficient is 1, the update CRATE implements need not descend on $R^c$ and can *raise* it;
# notebook 02 §8c saw this for a tied output map on synthetic data. A trained `to_out` is free
# to do otherwise, so we measure.


# %%
def own_subspace_rates(model: torch.nn.Module, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Per layer, per image: R^c in layer ℓ's subspaces (its LN and U) of Z^ℓ, Z^{ℓ+½} and Z^{ℓ+1}."""
    rows = []
    with torch.no_grad():
        _, traces = model.forward_intermediates(images)
        z_in = model.embed(images)  # Z^1
        for f, t in zip(model.transformer.layers, traces):
            rows.append(
                {
                    key: rc_per_image(f.mssa.forward_parts(f[0].norm(z)).proj)
                    for key, z in (("in", z_in), ("half", t.z_half), ("out", t.z_out))
                }
            )
            z_in = t.z_out  # the next layer's input
    return rows


def decompose(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mean (over images) MSSA-step, ISTA-step and new-subspace changes of R^c, per layer."""
    mssa = torch.stack([r["half"] - r["in"] for r in rows]).mean(1)
    ista = torch.stack([r["out"] - r["half"] for r in rows]).mean(1)
    new = torch.stack([rows[i + 1]["in"] - rows[i]["out"] for i in range(len(rows) - 1)]).mean(1)
    lowered = torch.stack([(r["half"] < r["in"]).double().mean() for r in rows])  # share of images
    return {"mssa": mssa, "ista": ista, "new": new, "lowered": lowered}


rows_init, rows_trained = own_subspace_rates(model_init, images), own_subspace_rates(model_trained, images)
dec_init, dec_trained = decompose(rows_init), decompose(rows_trained)

# %%
for label, rows, lm, dec in (
    ("random init", rows_init, lm_init, dec_init),
    ("trained", rows_trained, lm_trained, dec_trained),
):
    check_close(
        f"{label}: R^c_ℓ(Z^ℓ) here = the layer-wise figure, every layer",
        torch.stack([r["in"].mean() for r in rows]),
        lm.compression_mean,
        atol=2e-3,
    )
    curve = torch.tensor(lm.compression_mean, dtype=F64)  # the layer-wise figure's R^c, per layer
    total = curve[1:] - curve[:-1]  # its change between consecutive layers
    check_close(
        f"{label}: MSSA + ISTA + new-subspace terms = the change between consecutive layers",
        dec["mssa"][:-1] + dec["ista"][:-1] + dec["new"],
        total,
        atol=4e-3,
    )

# %%
# NBVAL_IGNORE_OUTPUT
for label, dec in (("random init", dec_init), (f"trained ({EPOCHS} epochs)", dec_trained)):
    print(f"{label}: mean change of R^c (nats) in layer ℓ's own subspaces")
    print(f"  {'layer':>5s} {'MSSA step':>10s} {'ISTA step':>10s} {'new U':>10s}   MSSA lowered R^c in")
    for ell in range(DEPTH):
        new = f"{dec['new'][ell].item():+10.2f}" if ell < DEPTH - 1 else f"{'—':>10s}"
        print(
            f"  {ell + 1:5d} {dec['mssa'][ell].item():+10.2f} {dec['ista'][ell].item():+10.2f} {new}   "
            f"{dec['lowered'][ell].item():6.1%} of the images"
        )

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
w = 0.27
for ax, (label, dec) in zip(
    axes, (("random initialisation", dec_init), (f"trained ({EPOCHS} epochs)", dec_trained))
):
    idx = torch.arange(1, DEPTH + 1, dtype=F64)
    ax.bar(idx - w, dec["mssa"], w, label=r"MSSA step: $R^c_\ell(Z^{\ell+1/2}) - R^c_\ell(Z^\ell)$")
    ax.bar(idx, dec["ista"], w, label=r"ISTA step: $R^c_\ell(Z^{\ell+1}) - R^c_\ell(Z^{\ell+1/2})$")
    ax.bar(
        idx[:-1] + w, dec["new"], w, label=r"new subspaces: $R^c_{\ell+1}(Z^{\ell+1}) - R^c_\ell(Z^{\ell+1})$"
    )
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(idx.tolist())
    ax.set_xlabel("layer index ℓ")
    ax.set_title(label)
    ax.grid(alpha=0.3, axis="y")
axes[0].set_ylabel(r"mean change of $R^c$ (nats; < 0 = compresses)")
axes[1].legend(fontsize=8)
fig.suptitle("Each layer's change of $R^c$, split into its steps (official measurement, 256 test digits)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### What the measurements show, in words
#
# The next cell states the findings from the numbers of *this* run (so they stay true in full mode,
# where the model is deeper and trained longer).


# %%
# NBVAL_IGNORE_OUTPUT
def describe(label: str, lm, dec, base, ceiling: float) -> None:
    rc, nz = lm.compression_mean, lm.nonzero_mean
    print(f"{label}:")
    print(
        f"  R^c at layer 1 -> layer {len(rc)}: {rc[0]:.2f} -> {rc[-1]:.2f} nats "
        f"(max over layers {max(rc):.2f} at layer {rc.index(max(rc)) + 1}; ceiling {ceiling:.2f})"
    )
    n_down = int((dec["mssa"] < 0).sum())
    print(
        f"  the MSSA step lowers R^c in its own subspaces in {n_down} of {len(rc)} layers "
        f"(from {dec['mssa'].max().item():+.2f} to {dec['mssa'].min().item():+.2f} nats); "
        f"the ISTA step raises it in {int((dec['ista'] > 0).sum())} of {len(rc)}"
    )
    print(
        f"  non-zeros at layer 1 -> layer {len(nz)}: {nz[0]:.3f} -> {nz[-1]:.3f} "
        f"(lowest {min(nz):.3f} at layer "
        f"{nz.index(min(nz)) + 1}); largest gap to the ReLU-of-LN baseline "
        f"{max(abs(a - b) for a, b in zip(nz, base)):.3f}"
    )


describe("random init", lm_init, dec_init, base_init, hi_digits)
describe(f"trained ({EPOCHS} epochs)", lm_trained, dec_trained, base_trained, hi_digits)
lower_rc = sum(a < b for a, b in zip(lm_trained.compression_mean, lm_init.compression_mean))
lower_nz = sum(a < b for a, b in zip(lm_trained.nonzero_mean, lm_init.nonzero_mean))
print(f"trained vs init: R^c lower at {lower_rc} of {DEPTH} layers; non-zeros lower at {lower_nz} of {DEPTH}")

# %% [markdown]
# ### Discussion: what the measurements show, and what they do not
#
# The random-initialisation figures above are the same on every run; the trained ones move a little
# with the CPU and the package version (so the tests do not compare them), while the picture does
# not. The text below therefore reads the committed quick run (4 layers, 4 epochs) through the
# summary printed above, without copying its numbers, and says where our one full-mode run
# (8 layers, 20 epochs, seed 0, on the same CPU) differs.
#
# - **Does $R^c$ fall across layers?** At random initialisation, no: it sits high (158–161 nats in
#   the first table of §4, well below the ceiling printed above) and is flat or slightly rising with
#   depth. After training it is lower at *every* layer than at initialisation (the summary's last
#   line), but it does not fall steadily from the first layer: the quick run is flat for three
#   layers and drops at the fourth; the full run even rises a little over the first five layers and
#   then falls fast over the last three, with a spread across images that grows with depth. The
#   papers' figure, for CRATE trained on ImageNet-1K, shows a steadier decrease; a 4- or 8-layer
#   model trained for minutes on 8×8-px digits is another regime, so read the shape, not the
#   agreement.
# - **Does sparsity grow?** The non-zero fraction starts at 0.49 at layer 1, initialised or
#   trained: the ReLU-of-LayerNorm baseline of §1. It falls over the next layers in both. But
#   training makes the deep layers *less* sparse, not more (compare the two non-zero columns of the
#   table above at the last layer; the full run shows the same at layer 8), and after training the
#   non-zero fraction follows the ReLU-of-LN baseline (dotted) closely at every layer (the summary
#   prints the largest gap). So nearly all of the measured sparsity is the ReLU cutting
#   LayerNorm-centred tokens; the single ISTA step, which subtracts only ηλ = 0.01, changes few
#   signs. On this model the "sparser with depth after training" claim is not reproduced
#   (Exercise 5 raises λ).
# - **Does the MSSA step compress, in its own subspaces?** After training, yes, in every layer of both
#   runs, for nearly every image from the second layer on (the last column of the table above), and
#   more the deeper the layer. At initialisation the step is close to neutral. So, measured this
#   way, training turns the MSSA step into a compression step in the subspaces it attends in, as
#   derived. This does not contradict Hu et al.: their argument is about the update as derived and
#   implemented with residual coefficient 1 (notebook 02 §8c reproduced the rise with a tied output
#   map), and the official measurement normalises every token, so it cannot see the growth of token
#   norms that made up most of that rise. A trained `to_out` is free to point the update wherever
#   the loss wants, and here it points downhill on $R^c$.
# - **But the ISTA step undoes part of it.** Measured in the same subspaces, the ISTA step *raises*
#   $R^c$ in every layer of both runs; the next layer's own LayerNorm and $U$ (green bars) then take
#   back part of that again. The papers' layer-to-layer curve is the sum of the three bars, and it
#   hides that each layer compresses and then decompresses: a flat stretch of the curve is not a
#   layer that does nothing.
#
# ## 7. The official CRATE-S, if you have its weights
#
# The same measurement on the published CRATE-S (ImageNet-1K, 69.2 % top-1; d = 576, 12 layers,
# 12 heads of p = 48, 197 tokens at 224 px) needs the official file `CRATE_small.pth`. Its Google
# Drive link (file id `1hYgDJl4EKHYfKprwhEjmWmWHuxnK6_h8`) is reported dead since April 2025
# (official repository, issue #30), so nothing is downloaded here: if you have a copy, point the
# environment variable `CRATE_EDU_CRATE_S` at it, or put it at
# `crate_edu.weights.cache_path("crate_small_in1k")`. `crate_edu.load_official` reads the official
# format (the `state_dict` wrapper, a `module.` prefix) and checks every key and shape.
#
# Without ImageNet on disk we feed 32 random 224×224 crops of the six photos that ship with
# scikit-learn and scikit-image (ImageNet normalisation), so the numbers will not match the
# paper's figure exactly, which used ImageNet validation images; the shape of the curves is what
# to compare. The range of this measurement for CRATE-S is $[50.9, 1329.2]$ nats.

# %%
from crate_edu.data import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from crate_edu.weights import cache_path  # noqa: E402


def photo_crops(n: int = 32, size: int = 224, seed: int = 0) -> torch.Tensor:
    """``n`` random size×size crops of the bundled photos (shorter side resized to 256), normalised."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [*load_sample_images().images, skimage.data.astronaut(), skimage.data.chelsea()]
    photos += [skimage.data.coffee(), skimage.data.rocket()]
    g = torch.Generator().manual_seed(seed)
    crops = []
    for i in range(n):
        img = torch.tensor(photos[i % len(photos)]).permute(2, 0, 1).float()[None] / 255  # (1, 3, H, W)
        s = 256 / min(img.shape[-2:])
        img = F.interpolate(
            img, size=(round(img.shape[-2] * s), round(img.shape[-1] * s)), mode="bilinear", antialias=True
        )
        top = int(torch.randint(0, img.shape[-2] - size + 1, (1,), generator=g))
        left = int(torch.randint(0, img.shape[-1] - size + 1, (1,), generator=g))
        crops.append(img[0, :, top : top + size, left : left + size])
    mean_, std_ = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (torch.stack(crops) - mean_) / std_  # (n, 3, size, size)


env_path = os.environ.get("CRATE_EDU_CRATE_S")
path_s = Path(env_path).expanduser() if env_path else cache_path("crate_small_in1k")
crate_s = None
if path_s.is_file():
    try:
        crate_s = crate_edu.load_official("crate_small", path_s)
    except Exception as err:  # a wrong or damaged file: say why in one line, never fail the notebook
        print(f"CRATE-S: could not load {path_s}: {' '.join(str(err).split())}")

# %%
# NBVAL_IGNORE_OUTPUT
if crate_s is None:
    print(
        f"CRATE-S weights not found at {path_s}; this part is skipped (get CRATE_small.pth from the official "
        "CRATE repository's README and set CRATE_EDU_CRATE_S=/path/to/CRATE_small.pth or copy it there)."
    )
else:
    x_s = photo_crops()
    lm_s = layerwise_measurements(crate_s, x_s)
    dec_s = decompose(own_subspace_rates(crate_s, x_s))
    cfg_s = crate_s.config
    hi_s = cr.measure_coding_rate_range(cfg_s.num_patches + 1, cfg_s.head_dim, cfg_s.heads)[1]
    with torch.no_grad():
        base_s = relu_baseline(crate_s, crate_s.forward_intermediates(x_s)[1])
    plot_layerwise(
        {"CRATE-S, official ImageNet-1K weights": lm_s},
        "Official CRATE-S on 32 crops of bundled photos: mean ± std",
        rc_max=hi_s,
        baselines={"CRATE-S, official ImageNet-1K weights": base_s},
    )
    describe("official CRATE-S", lm_s, dec_s, base_s, hi_s)

# %% [markdown]
# ## Summary
#
# - A CRATE layer is `[PreNorm(MSSA), PreNorm(ISTA)]`:
#   $Z^{\ell+1/2} = Z^\ell + \mathrm{MSSA}(\mathrm{LN}\,Z^\ell)$,
#   $Z^{\ell+1} = \mathrm{ISTA}(\mathrm{LN}\,Z^{\ell+1/2})$ with **no residual around ISTA**. Assembled
#   by hand from the blocks and written with raw tensor operations, it equals `CRATELayer` to
#   round-off (float64); its output is non-negative, and about half of it is exactly zero even at
#   initialisation (LayerNorm centres, ReLU cuts).
# - The model chains an LN–Linear–LN patch embedding, [CLS] and positions, L layers and an LN +
#   Linear head; `forward_intermediates` returns per-layer traces whose `z_out` is the next layer's
#   input, checked link by link.
# - Per layer CRATE has $3d^2 + 5d$ parameters against a ViT's $12d^2 + 10d$: one input projection
#   instead of three and a $d\times d$ dictionary instead of a $d\to4d\to d$ MLP. CRATE-T has 6.09M
#   parameters against 22.04M for the same-width ViT-S; the per-component counts add up exactly, and
#   to the published 6.09/13.12/22.80/77.64M for T/S/B/L.
# - The papers' layer-wise measurement is eq. 8 on unit-normalised per-head projections with
#   $\tilde\varepsilon = 0.01$ in the $\varepsilon^2$ slot, bounded by
#   $\frac K2\log(1+p/\tilde\varepsilon)$ and $\frac{Km}{2}\log(1+p/(m\tilde\varepsilon))$; the
#   sparsity is the fraction of non-zeros of the ISTA output. Both were recomputed by hand.
# - On a CRATE trained on digits: $R^c$ is lower than at initialisation at every layer, but it falls
#   mainly in the deep layers, not steadily; the sparsity is mostly what a ReLU of LayerNorm-centred
#   tokens gives and does not grow with training. Split per step, the trained MSSA step does
#   compress in its own subspaces in every layer (more so deeper), while the ISTA step gives part of
#   it back — a finding the layer-to-layer figure cannot show, and the direct test of the critique
#   that MSSA with the skip connection can raise $R^c$ (it does not, here, once trained).
#
# ## Exercises
#
# 1. Compute the range of the layer-wise $R^c$ for CRATE-S (N = 197 tokens, K = 12 heads of p = 48,
#    $\tilde\varepsilon = 0.01$) and for CRATE-T (K = 6 heads of p = 64).
#
# <details><summary>Solution</summary>
#
# With $m = \min(N, p) = p$ in both: CRATE-S, $[6\log(1 + 4800),\ 12\cdot24\log(1 + 100)] = [50.9, 1329.2]$
# nats; CRATE-T, $[3\log(1 + 6400),\ 6\cdot32\log(101)] = [26.3, 886.1]$ nats.
# `cr.measure_coding_rate_range(197, 48, 12)` and `cr.measure_coding_rate_range(197, 64, 6)` give
# the same. Since p < N, a head can hold at most p directions: its 197 tokens can never all be
# orthogonal, so the maximum is set by p, not by N.
#
# </details>
#
# 2. CRATE-T has 27.6 % of ViT-S's parameters, while a CRATE layer has about 25 % of a ViT layer's.
#    Where does the difference come from, and what does the ratio tend to for very deep models?
#
# <details><summary>Solution</summary>
#
# The embedding (0.37M) and the head (0.39M) are the same in both models, and they weigh more in
# the smaller total. Per layer the ratio is $(3d^2 + 5d)/(12d^2 + 10d) \to 1/4$ for large $d$; for
# $L\to\infty$ the shared parts vanish and the model ratio tends to this per-layer ratio
# (0.2505 at d = 384).
#
# </details>
#
# 3. The measurement rescales every per-head token to unit norm. What would the unnormalised eq. 8
#    say about the shrink term $(1-\kappa\gamma)Z$ of the derived MSSA step (notebook 02), and why is
#    the normalised version the fairer test of a trained CRATE?
#
# <details><summary>Solution</summary>
#
# Unnormalised, any uniform shrink $Z\mapsto cZ$, $c<1$, lowers every eigenvalue of the Gram by $c^2$
# and so lowers $R^c$ (and $R$) — "compression" that carries no structure. The normalised measurement
# is invariant to per-token scaling, so it only sees changes of direction: how concentrated the
# tokens are *within* each subspace. A trained CRATE also applies LayerNorm before every block, so
# the scale of $Z^\ell$ is not what the next block sees anyway.
#
# </details>
#
# 4. Put a residual around ISTA, $Z^{\ell+1} = Z^{\ell+1/2} + \mathrm{ISTA}(\mathrm{LN}\,Z^{\ell+1/2})$.
#    What happens to the sparsity figure, and how does CRATE-α measure sparsity instead?
#
# <details><summary>Solution</summary>
#
# The stream would be dense: §1's counterfactual had no exact zeros at all, so the figure would sit
# at 1.0 and say nothing. CRATE-α, which has this residual, measures the sparse codes $A_2$ inside
# the block (`LayerTrace.codes`, an overcomplete 4d-dimensional code decoded by $D_1$), not the stream.
# `layerwise_measurements` does that automatically for `crate_alpha_*` models.
#
# </details>
#
# 5. Use §6's decomposition on your own run: retrain with `model_overrides={"depth": DEPTH, "lambd": 0.5}`
#    (a five times larger sparsity penalty) and compare the non-zero fractions and the ISTA-step bars.
#    What do you expect, and why is the effect of λ small with one ISTA step?
#
# <details><summary>Solution</summary>
#
# One ISTA step from the warm start Y subtracts only $\eta\lambda = 0.05$ (instead of 0.01) before the
# ReLU, on LayerNorm-scaled entries of order 1; so only entries of $Y + \eta D^\top(Y - DY)$ in
# $(0.01, 0.05]$ are newly zeroed. Expect the non-zero fraction to fall by a few points at most, with
# the ReLU-of-LN baseline still the dominant factor. Measured (quick settings: 4 layers, 4 epochs):
# the non-zero fractions fell by one to three hundredths per layer, and the test accuracy hardly
# moved. (The CRATE-MAE encoder uses λ = 0.5.)
#
# </details>
