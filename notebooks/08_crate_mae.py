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
# # 08 · CRATE-MAE: an encoder and a decoder that undo each other, layer by layer
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/crate-edu/crate_edu/blob/main/notebooks/08_crate_mae.ipynb)
#
# A CRATE layer compresses its tokens against learned subspaces (MSSA) and then sparsifies them
# against a learned dictionary (ISTA). If each of those two steps is an (approximate) optimisation
# step, it should be possible to *undo* it: a step of the same kind taken the other way. CRATE-MAE
# (Pai et al., ICLR 2024, arXiv 2404.02446) builds a masked autoencoder on this idea. The encoder is
# CRATE; the decoder has as many layers, and its layer $\ell$ is shaped as the inverse of encoder
# layer $L+1-\ell$: a linear map that turns sparse codes back into a dense signal, then an MSSA step
# with a **minus** sign. The model is trained as a masked autoencoder (MAE): remove 75 % of the
# patches, reconstruct them.
#
# ## What you will learn
#
# - The CRATE-MAE decoder layer, $\tilde Z^{\ell+1/2} = \tilde D\,\mathrm{LN}(\tilde Z^\ell)$,
#   $\tilde Z^{\ell+1} = \tilde Z^{\ell+1/2} - \mathrm{MSSA}(\mathrm{LN}(\tilde Z^{\ell+1/2}))$, written
#   with raw tensor operations and checked equal to the package's; which of its parts mirror which
#   parts of the encoder (shapes checked).
# - Why it inverts: the MSSA step with the opposite sign undoes the compression step up to a
#   second-order error (measured: the error shrinks as $\varepsilon^2$), and a dictionary undoes an
#   ISTA step on a signal that has a sparse code (exactly, in a case we construct).
# - The MAE machinery: patchify/unpatchify (an exact round trip), masking by the argsort of uniform
#   noise (exactly 75 % removed), the mask token put back **before** the encoder, the loss on removed
#   patches only.
# - A small CRATE-MAE pre-trained on `cluttered-digits`: a few seconds of training here (the loss
#   falls), and the shipped checkpoint for the pictures — the four-panel reconstruction figure with
#   correct un-normalisation, the masked-patch loss measured, the encoder's attention maps — and a
#   control showing how much of what they show is about the digit and how much about position.
# - How good the pre-trained encoder's features are: a linear probe against a supervised CRATE of
#   the same size.
#
# ## Run time
#
# Everything runs on `cluttered-digits` (generated from scikit-learn's digits; no download) with the
# checkpoint that ships with the package.
#
# Measured on 2026-12-03 on 2 CPU cores shared with other jobs, by `benchmarks/notebooks.py`
# (kernel start included; recorded in `benchmarks/results/notebooks_quick.json` and
# `notebooks_full.json`): wall time, and the kernel's CPU time in brackets, which other jobs
# on the machine disturb less. Other jobs kept up to about one core busy during these runs (the
# JSON files record how busy, per notebook), so an idle machine is faster.
#
# | | quick mode (`CRATE_EDU_QUICK=1`) | full mode |
# |---|---|---|
# | CPU (2 cores) | 53 s (CPU 52 s) | 4.7 min (CPU 4.7 min) |
# | GPU | not used: the models run on the CPU (`MAETrainConfig.device` is `"cpu"`) | same |
#
# Quick mode uses smaller data splits, trains the demonstration model for 32 steps and fits the
# probes on 1,500 images; full mode uses the whole test split and probes on 10,000 images. Setting
# `RETRAIN = True` below re-creates the shipped CRATE-MAE from scratch instead of loading it (593 s
# of CPU time on one thread, `benchmarks/results/crate_mae.json`; more wall time on a busy machine;
# no GPU needed).

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
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import crate_edu
from crate_edu.data import IMAGENET_MEAN, IMAGENET_STD, build_dataset
from crate_edu.evaluation import (
    cls_attention_maps,
    evaluate_reconstruction,
    mask_noise,
    masked_patch_loss,
    mass_on_mask_with_control,
    probe_layers,
    reconstruct,
)
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
from crate_edu.notebook import QUICK, check, check_close, choose
from crate_edu.plotting import (
    plot_attention_grid,
    plot_mae_loss,
    plot_probe_by_layer,
    plot_reconstruction_panels,
)
from crate_edu.train import MAETrainConfig, pretrain_mae
from crate_edu.weights import WeightsFileError, cache_path, load_tutorial_model

torch.set_num_threads(1)  # tiny models: one thread is fastest, and results do not depend on it
F64 = torch.float64
RETRAIN = False  # True: pre-train the CRATE-MAE from scratch instead of loading the shipped one
SAMPLES = choose(quick=4, full=32)  # cluttered-digits composites per source digit
PROBE_N = choose(quick=1500, full=10000)  # images used to fit (and to score) each linear probe
print(f"quick mode: {QUICK}; retrain: {RETRAIN}")

# %% [markdown]
# **Convention** (as in notebooks 01–04): tokens are **rows**, a layer input is `(B, N, d)`, and the
# paper's $D x$ for a column $x$ is `x @ D.T` here.
#
# ## 1. The model: a CRATE encoder and a mirrored decoder
#
# The model taught here has the size of the supervised CRATE shipped beside it
# (`crate_nano_cifar` with 4 layers): width $d = 128$, $K = 4$ heads of $p = 32$, 32×32 images cut
# into 8×8 = 64 patches of 4×4 px, and a decoder of 4 layers of the same width. The encoder layers
# are CRATE layers (notebook 04) with the sparsity penalty $\lambda = 0.5$ that CRATE-MAE uses:
#
# $$
# Z^{\ell+1/2} = Z^\ell + \mathrm{MSSA}\big(\mathrm{LN}(Z^\ell)\,\big|\,U^\ell_{[K]}\big),\qquad
# Z^{\ell+1} = \mathrm{ReLU}\big(X + \eta D_\ell^\top (X - D_\ell X) - \eta\lambda\mathbf 1\big),\quad
# X = \mathrm{LN}(Z^{\ell+1/2}).
# $$
#
# The decoder layer $\ell$ (Pai et al., arXiv 2404.02446; official `model/crate_ae/crate_ae.py`) reverses the order of
# the two steps and the sign of the MSSA step:
#
# $$
# \tilde Z^{\ell+1/2} = \tilde D_\ell\, \mathrm{LN}(\tilde Z^\ell), \qquad
# \tilde Z^{\ell+1} = \tilde Z^{\ell+1/2}
#   - \mathrm{MSSA}\big(\mathrm{LN}(\tilde Z^{\ell+1/2})\,\big|\,\tilde U^\ell_{[K]}\big).
# $$
#
# The encoder ends with a LayerNorm (`norm`); the decoder with a LayerNorm and a linear map to the
# $4\cdot4\cdot3 = 48$ pixel values of each patch (`decoder_pred`). The weights of the decoder are
# **not tied** to the encoder's: what is shared is the *form* of each step (same shapes, opposite
# order and sign). Let us check that form on the model itself.

# %%
torch.manual_seed(0)
mae = create_model("crate_mae_nano_cifar", depth=4, decoder_depth=4)
cfg = mae.config
L = cfg.depth
print(
    f"{type(mae).__name__}: d = {cfg.dim}, {cfg.heads} heads of p = {cfg.head_dim}, "
    f"{cfg.num_patches} patches of {cfg.patch_size}×{cfg.patch_size} px, "
    f"{cfg.depth} encoder + {cfg.decoder_depth} decoder layers, λ = {cfg.lambd}, "
    f"{mae.num_params() / 1e6:.2f} M parameters"
)

check("as many decoder layers as encoder layers", len(mae.decoder_blocks) == len(mae.blocks) == L)
mirrors = []
for ell in range(L):
    enc = mae.blocks[L - 1 - ell].layers[0]  # encoder layer L + 1 − ℓ (0-based: L − 1 − ℓ)
    dec = mae.decoder_blocks[ell].layers[0]
    D, D_tilde = enc.ista.weight, dec[0].fn.weight
    same_mssa = [a.shape for a in enc.mssa.parameters()] == [b.shape for b in dec.mssa.parameters()]
    no_bias = [name for name, _ in dec[0].fn.named_parameters()] == ["weight"]
    mirrors.append(
        isinstance(dec[0].fn, LinearDictionary) and D_tilde.shape == D.shape and same_mssa and no_bias
    )
check(
    "each decoder layer ℓ mirrors encoder layer L+1−ℓ",
    all(mirrors),
    f"a square {cfg.dim}×{cfg.dim} dictionary D̃ without bias, like D; an MSSA with the same "
    f"{cfg.heads} heads of {cfg.head_dim}",
)

# %% [markdown]
# The decoder layer in five lines of tensor code, checked against `CRATEDecoderLayer` (its first
# block is `PreNorm(LinearDictionary)`, its second `PreNorm(MSSA)`, in the official order):

# %%
layer = copy.deepcopy(mae.decoder_blocks[0].layers[0]).double()  # a float64 copy
Z = torch.randn(2, cfg.num_patches + 1, cfg.dim, dtype=F64)  # (B, N, d)
mssa = layer.mssa
Z_half = layer[0].norm(Z) @ layer[0].fn.weight.T  # D̃ LN(Z)                         (B, N, d)
W = (
    (layer[1].norm(Z_half) @ mssa.qkv.weight.T).unflatten(-1, (cfg.heads, cfg.head_dim)).transpose(1, 2)
)  # (B, K, N, p)
A = torch.softmax(W @ W.transpose(-1, -2) / math.sqrt(cfg.head_dim), dim=-1)  # memberships  (B, K, N, N)
SSA = (A @ W).transpose(1, 2).flatten(2)  # heads side by side                            (B, N, K·p)
Z_next = Z_half - (SSA @ mssa.to_out[0].weight.T + mssa.to_out[0].bias)  # minus the MSSA step
with torch.no_grad():
    check_close("decoder layer written out = CRATEDecoderLayer", Z_next, layer(Z), atol=1e-12)

# %% [markdown]
# ### Why the minus sign undoes the compression step
#
# Write the encoder's compression step as $z \mapsto z + M(z)$ with $M = \mathrm{MSSA}\circ\mathrm{LN}$.
# The decoder's step with the same $M$ is $y \mapsto y - M(y)$. Composing them,
#
# $$
# \big(z + M(z)\big) - M\big(z + M(z)\big) = z + \big[M(z) - M(z + M(z))\big]
# \approx z - J_M(z)\,M(z),
# $$
#
# and if $M$ is small, of size $\varepsilon$ (an update step: in CRATE's derivation it is scaled by
# the step size $\kappa$), both $M$ and its Jacobian $J_M$ are $O(\varepsilon)$: the decoder step
# undoes the encoder step up to $O(\varepsilon^2)$. We check the order numerically: take one MSSA
# block, scale its output map by $\varepsilon$, and measure the relative error of the round trip.

# %%
torch.manual_seed(1)
block = PreNorm(cfg.dim, MSSA(cfg.dim, cfg.heads, cfg.head_dim)).double()  # M = MSSA ∘ LN
W0, b0 = block.fn.to_out[0].weight.detach().clone(), block.fn.to_out[0].bias.detach().clone()
z = torch.randn(2, cfg.num_patches + 1, cfg.dim, dtype=F64)
eps_values = [1e-1, 1e-2, 1e-3]
errors = []
with torch.no_grad():
    for eps in eps_values:
        block.fn.to_out[0].weight.copy_(eps * W0)
        block.fn.to_out[0].bias.copy_(eps * b0)
        z_half = z + block(z)  # encoder's compression step
        z_back = z_half - block(z_half)  # decoder's step, opposite sign
        errors.append(float((z_back - z).norm() / z.norm()))
        print(
            f"ε = {eps:.0e}: step size ‖M(z)‖/‖z‖ = {float(block(z).norm() / z.norm()):.1e}, "
            f"round-trip error = {errors[-1]:.1e}"
        )
slopes = [math.log10(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]
check(
    "the round-trip error falls as ε² (second order)",
    all(1.9 < s < 2.1 for s in slopes),
    f"log-log slopes {', '.join(f'{s:.2f}' for s in slopes)}",
)

# %% [markdown]
# ### Why a dictionary undoes the sparse-coding step
#
# The ISTA step looks for a non-negative sparse code $a$ with $x \approx D a$. If $x$ really has such
# a code, the map back is the dictionary itself: $\tilde D = D$ gives $\tilde D a = x$. One case can be
# checked exactly: an orthogonal $D$ ($D^\top D = I$), step size $\eta = 1$, $\lambda = 0$ and $a \ge 0$.
# Then one ISTA step from the warm start $x$ gives
# $\mathrm{ReLU}(x + D^\top(x - Dx)) = \mathrm{ReLU}(D^\top x) = \mathrm{ReLU}(a) = a$, the code, and
# the decoder's linear map returns $x$. With CRATE's $\eta = 0.1$ one step only moves towards $a$,
# but iterating the same step converges to it.

# %%
torch.manual_seed(2)
d = 16
D_orth, _ = torch.linalg.qr(torch.randn(d, d, dtype=F64))  # orthogonal dictionary
a = F.relu(torch.randn(8, d, dtype=F64)) * (torch.rand(8, d, dtype=F64) < 0.3)  # sparse codes ≥ 0 (rows)
x = a @ D_orth.T  # signals x = D a                                     (8, d)
ista = ISTA(d, eta=1.0, lambd=0.0).double()
decoder_map = LinearDictionary(d).double()
with torch.no_grad():
    ista.weight.copy_(D_orth)
    decoder_map.weight.copy_(D_orth)  # D̃ = D
    check_close("one ISTA step (η = 1, λ = 0, orthogonal D) recovers the sparse code", ista(x), a, atol=1e-12)
    check_close(
        "the decoder's dictionary maps the code back to the signal", decoder_map(ista(x)), x, atol=1e-12
    )
    ista.eta = 0.1  # CRATE's step size: iterate z ← ReLU(z + η Dᵀ(x − D z)) from z = x
    z_it = x.clone()
    for _ in range(300):
        z_it = F.relu(z_it + ista.eta * (x - z_it @ D_orth.T) @ D_orth)
    check_close("with η = 0.1, 300 ISTA iterations reach the same code", z_it, a, atol=1e-10)

# %% [markdown]
# In the trained model nothing forces $\tilde D_\ell = D_{L+1-\ell}$, $\tilde U = U$, or a small
# MSSA step: the decoder *learns* its own maps, and the derivation only dictates their form. That
# is the same departure as in the classifier (learned output maps, unit residual coefficient;
# notebook 04 and the official `model/crate.py`).
#
# ## 2. Patches, masks and the loss
#
# The images are `cluttered-digits`: a digit at random scale, position and colour on a textured
# background with distractor fragments. An image $(3, 32, 32)$ becomes 64 patches of $4\cdot4\cdot3 = 48$
# values (`patchify`, pixels in $(p, q, c)$ order as in the MAE reference), and `unpatchify` puts
# them back — exactly:

# %%
test_set = build_dataset("cluttered-digits", "test", samples_per_digit=SAMPLES)
train_set = build_dataset("cluttered-digits", "train", samples_per_digit=SAMPLES)
MEAN, STD = test_set.mean, test_set.std
x8 = torch.stack([test_set[i][0] for i in range(8)])  # (8, 3, 32, 32), normalised
patches = patchify(x8, cfg.patch_size)
print(f"{len(train_set)} train / {len(test_set)} test images; patches of one batch: {tuple(patches.shape)}")
check_close("unpatchify(patchify(x)) = x", unpatchify(patches, cfg.patch_size), x8, atol=0.0)
check_close(
    "patch 9 = the 4×4 block at row 1, column 1, in (p, q, c) order",
    patches[:, 9],
    x8[:, :, 4:8, 4:8].permute(0, 2, 3, 1).flatten(1),
    atol=0.0,
)

# %% [markdown]
# **Masking.** Each image draws uniform noise, one value per patch; the patches with the
# `int(64 · (1 − 0.75)) = 16` smallest values are kept, the other 48 removed. The mask is 1 on
# removed patches. A fixed seed fixes the noise (`crate_edu.evaluation.mask_noise`), so every figure
# below uses the same masks on every run. Unlike the MAE of He et al., where the encoder sees only the
# visible patches, the official CRATE-MAE puts a learned **mask token** in place of each removed
# patch **before** the encoder, so the encoder sees all 65 tokens ([CLS] + 64).

# %%
noise = mask_noise(8, cfg.num_patches, seed=0)
kept, mask, ids_restore = random_masking(patches, cfg.mask_ratio, noise)
check(
    "exactly 75 % of the patches are removed in every image",
    kept.shape[1] == 16 and bool((mask.sum(1) == 48).all()),
    "16 kept, 48 removed of 64",
)
check(
    "the kept patches are those with the smallest noise",
    bool((noise[mask == 0].view(8, 16).max(1).values < noise[mask == 1].view(8, 48).min(1).values).all()),
)
with torch.no_grad():
    tokens, mask_enc = mae.encoder_input(x8, cfg.mask_ratio, noise)  # (B, N + 1, d) what the encoder sees
    mask_rows = (mae.mask_token + mae.decoder_pos_embed)[0, 1:][None].expand(8, -1, -1)  # (8, 64, d)
check("the encoder sees all 1 + 64 tokens", tuple(tokens.shape) == (8, 65, cfg.dim), str(tuple(tokens.shape)))
check_close(
    "removed patches enter the encoder as mask token + position",
    tokens[:, 1:][mask_enc == 1],
    mask_rows[mask_enc == 1],
    atol=1e-6,
)

# %% [markdown]
# **The loss** is the mean squared error per patch, averaged over the **removed** patches only
# (pixels on the normalised scale, where each channel has mean 0 and variance 1 over the training
# set):
#
# $$
# \mathcal L = \frac{\sum_{i} m_i \,\tfrac{1}{48}\lVert \hat x_i - x_i\rVert^2}{\sum_i m_i},
# \qquad m_i = 1 \text{ if patch } i \text{ was removed.}
# $$
#
# Predicting every pixel as the dataset mean (0) scores about 1; a model that has learned
# nothing about the images scores no better.

# %%
with torch.no_grad():
    loss, pred, mask_out = mae(x8, noise=noise)  # (loss, (B, 64, 48), (B, 64))
per_patch = ((pred - patches) ** 2).mean(-1)  # (B, 64)
loss_by_hand = (per_patch * mask_out).sum() / mask_out.sum()
check_close("loss written out = the model's loss", loss_by_hand, loss, atol=1e-6)
check_close(
    "crate_edu.evaluation.reconstruction.masked_patch_loss = the model's loss",
    masked_patch_loss(pred, patches, mask_out),
    loss,
    atol=1e-6,
)
base8 = float(patches.pow(2).mean())  # predicting 0, the mean, on these 8 images
print(f"these 8 images: untrained model {float(loss):.2f}; predicting the mean {base8:.2f}")

# %% [markdown]
# ## 3. Pre-training for a few seconds
#
# `crate_edu.train.pretrain_mae` runs the trainer's one loop with the masked-patch objective: AdamW
# (betas 0.9, 0.95, weight decay 0.05), linear warm-up then cosine decay, a fresh random mask for
# every image at every step, and per epoch a test loss with fixed masks, a line in `metrics.jsonl`
# and an atomic checkpoint.
# Here it runs on a slice of the training set (256 images in quick mode, a few seconds; 4,096 in
# full mode, see the note below), enough to see the loss fall.

# %% [markdown]
# **Full mode: the next cell is long.** In full mode it took 86 s on 2 CPU cores shared with other
# jobs (2026-12-03; the whole notebook 4.7 min, see the Run time table). For a run of seconds use
# quick mode: restart the kernel, run `%env CRATE_EDU_QUICK=1` before the imports (or start Jupyter
# with `CRATE_EDU_QUICK=1 jupyter lab`), then run all cells.

# %%
# NBVAL_IGNORE_OUTPUT
demo_cfg = MAETrainConfig(
    epochs=4, batch_size=32, train_limit=choose(quick=256, full=4096), test_limit=256, warmup_steps=4, lr=2e-3
)
demo = pretrain_mae(demo_cfg, None, datasets=(train_set, test_set))

# %%
h = demo.history
check(
    "the test masked-patch loss falls during the demonstration run",
    h[-1]["test_loss"] < h[0]["test_loss"] - 0.05,
    f"{h[0]['test_loss']:.2f} after epoch 1 → {h[-1]['test_loss']:.2f} after epoch {len(h)}",
)
plot_mae_loss(h, title=f"CRATE-MAE pre-training, {h[-1]['step']} steps of 32 images")
plt.show()

# %% [markdown]
# ## 4. The shipped CRATE-MAE
#
# Thirty-odd steps are not enough for good reconstructions. The repository ships a CRATE-MAE of
# exactly this size pre-trained on the whole `cluttered-digits` training split (46,016 images, 3
# epochs, 2,157 steps of 64 images, mask ratio 0.75; 593 s of CPU time on one thread, recorded in
# `benchmarks/results/crate_mae.json`; the README.md in `crate_edu/resources/checkpoints/` has the
# command and the numbers). `RETRAIN = True` makes it again from scratch instead.

# %%
# NBVAL_IGNORE_OUTPUT
if RETRAIN:
    model = pretrain_mae(MAETrainConfig(), "runs/crate-mae-cluttered", resume=True).model
    source = "retrained from scratch"
else:
    try:
        model, info = load_tutorial_model("cluttered-digits-crate-mae")
        source = f"shipped checkpoint {info.path.name}"
        print(
            f"{info.path.name}: {info.model_name} {info.overrides}; made by: {info.metadata.get('command')}"
        )
    except (FileNotFoundError, WeightsFileError) as err:  # missing, or damaged (sha256 differs)
        model, source = demo.model, "the demonstration model (the shipped checkpoint is unusable)"
        print(f"shipped CRATE-MAE unusable ({' '.join(str(err).split())}); using the demo model")
model.eval()
PRETRAINED = model is not demo.model  # False: the checks of a fully pre-trained model are skipped
print(f"using: {source}")

# %% [markdown]
# ## 5. Four panels: original, masked input, reconstruction, reconstruction with visible patches
#
# `crate_edu.evaluation.reconstruct` runs the model with the masks of a fixed seed and returns four
# image arrays. The model works on normalised pixels, $x_{\text{norm}} = (x - \mu)/\sigma$ per channel; to
# show a picture the normalisation is undone, $x = x_{\text{norm}}\,\sigma + \mu$, and clipped to
# $[0, 1]$ — without this step the colours are wrong. The last panel pastes the original visible
# patches back, since the loss never asked the model to copy them.

# %%
x_show = torch.stack([test_set[i][0] for i in range(6)])
panels = reconstruct(model, x_show, mean=MEAN, std=STD, seed=0)
raw = test_set.images[:6].permute(0, 2, 3, 1).float() / 255  # the uint8 pixels, (6, 32, 32, 3)
check_close(
    "un-normalised original panel = the dataset's uint8 pixels / 255", panels.original, raw, atol=1e-6
)
visible = torch.tensor(panels.mask == 0).view(6, 8, 1, 8, 1).expand(-1, -1, 4, -1, 4).reshape(6, 32, 32)
check_close(
    "pasted panel = original on the visible patches",
    torch.tensor(panels.pasted)[visible],
    torch.tensor(panels.original)[visible],
    atol=1e-6,
)
with torch.no_grad():
    own_loss = model(x_show, noise=mask_noise(6, cfg.num_patches, 0))[0]
check_close("the panels' loss = the model's own loss on the same masks", panels.loss, own_loss, atol=1e-6)
print(f"masked-patch loss on these 6 images: {panels.loss:.3f}")

# %%
plot_reconstruction_panels(
    panels, title=f"CRATE-MAE on cluttered-digits (75 % of patches removed; {source.split(' (')[0]})"
)
plt.show()

# %% [markdown]
# The reconstructions are blurry — a model of 0.44 M parameters trained for minutes on one CPU core,
# predicting 48 patches from 16 — but they get the background colour and texture scale right, and
# where enough of the digit is visible, its stroke and colour continue into the removed patches.
#
# ## 6. The reconstruction loss on the test split
#
# `evaluate_reconstruction` averages the masked-patch loss over a whole split, batch $k$ using the
# masks of seed $k$, so the number is reproducible. For scale: predicting the per-channel mean
# everywhere scores the pixel variance (≈ 1), and the untrained model of §1 does worse than that.

# %%
test_loss = evaluate_reconstruction(model, test_set, seed=0)
n_base = min(2048, len(test_set))
mean_baseline = float(torch.stack([test_set[i][0] for i in range(n_base)]).pow(2).mean())
untrained_loss = evaluate_reconstruction(mae, test_set, seed=0, limit=n_base)
print(f"test masked-patch loss ({len(test_set)} images, mask ratio 0.75): {test_loss:.3f}")
print(f"on {n_base} of them: predict the mean {mean_baseline:.3f}; untrained model {untrained_loss:.3f}")
if PRETRAINED:
    check(
        "the pre-trained model beats predicting the mean",
        test_loss < mean_baseline,
        f"{test_loss:.3f} < {mean_baseline:.3f}",
    )

# %% [markdown]
# How hard is the task at other mask ratios? The same model, the same images, more or fewer patches
# removed (it was trained at 0.75 only):

# %%
ratios = [0.25, 0.5, 0.75, 0.9]
by_ratio = [evaluate_reconstruction(model, test_set, mask_ratio=r, seed=0, limit=512) for r in ratios]
for r, v in zip(ratios, by_ratio):
    print(f"mask ratio {r:.2f}: masked-patch loss {v:.3f}")
fig, ax = plt.subplots(figsize=(5.5, 3.4))
ax.plot([100 * r for r in ratios], by_ratio, marker="o")
ax.axhline(mean_baseline, color="grey", ls="--", label="predict the mean")
ax.set_xlabel("patches removed (%)")
ax.set_ylabel("masked-patch MSE (normalised pixels²)")
ax.set_title("Loss vs mask ratio (trained at 75 %; 512 test images)")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 7. What the encoder attends to
#
# `forward_intermediates` returns every layer's attention probabilities. Encoding the whole image
# (mask ratio 0, as when the encoder is used for features), the [CLS] token's attention over the 64
# patches of the last encoder layer, one map per head:

# %%
with torch.no_grad():
    _, traces = model.forward_intermediates(x_show[:4], mask_ratio=0.0)
attn = traces["encoder"][-1].attn  # (B, K, 65, 65)
check_close(
    "each attention row is a probability distribution", attn.sum(-1), torch.ones(attn.shape[:-1]), atol=1e-5
)
cls_maps = attn[:, :, 0, 1:].reshape(4, cfg.heads, cfg.grid_size, cfg.grid_size)  # (B, K, 8, 8)
plot_attention_grid(
    panels.original[:4], cls_maps.numpy(), title=f"CRATE-MAE encoder, layer {L}: [CLS] → patch attention"
)
plt.show()

# %% [markdown]
# The MAE loss never asks the [CLS] token for anything (it is dropped before the pixel prediction),
# and no label was ever seen. Yet the maps are far from uniform: most heads look at the border and
# leave a dark region in the middle, where the digit is. Is that a segmentation of *this* digit?
# `cluttered-digits` knows where each digit is (`test_set.masks`), so we can measure: the share of a
# map's mass that falls on the digit, $s = \sum_i a_i c_i / \sum_i a_i$ with $c_i$ the fraction of
# patch $i$ covered by the digit (`crate_edu.evaluation.mass_on_mask`, the score of notebook 07).
# A map that ignores the image scores the digit's area fraction: chance. And a **control**: score
# each image with the map computed on *another* image. A map that follows this digit scores better
# on its own image than on another's; a map that only encodes where digits usually are scores the
# same on both (`crate_edu.evaluation.mass_on_mask_with_control` gives both shares).

# %%
n_att = min(256, len(test_set))
x_att = torch.stack([test_set[i][0] for i in range(n_att)])
gt = test_set.masks[:n_att]  # (B, 32, 32) bool, where the digit is
chance = float(F.avg_pool2d(gt[:, None].float(), cfg.patch_size).mean())
# share of [CLS] attention on the digit, (L, K), with each image's own map and (the control) with
# the map of another image: image i is scored with the map of image i − 1
own, control = mass_on_mask_with_control(cls_attention_maps(model, x_att, all_layers=True), gt)
own0, control0 = mass_on_mask_with_control(cls_attention_maps(mae, x_att, all_layers=True), gt)
print(f"share of [CLS] attention on the digit ({n_att} test images); chance (digit area) = {chance:.2f}")
for i in range(L):
    print(
        f"  layer {i + 1}: own map "
        + " ".join(f"{float(v):.2f}" for v in own[i])
        + " | another image's map "
        + " ".join(f"{float(v):.2f}" for v in control[i])
    )
k = int(own.argmin())  # the head that avoids the digit most
s_own, s_ctl = float(own.flatten()[k]), float(control.flatten()[k])
if PRETRAINED:
    check(
        "pre-trained: some head keeps its attention off the digit (share < chance / 4)",
        s_own < chance / 4,
        f"layer {k // cfg.heads + 1}, head {k % cfg.heads}: {s_own:.3f}",
    )
    check(
        "… but another image's map does as well: that avoidance is positional, not of this digit",
        abs(s_own - s_ctl) < 0.25 * (chance - s_own),
        f"{s_own:.3f} on its own image, {s_ctl:.3f} on another",
    )
gain, gain0 = float((own - control).max()), float((own0 - control0).max())
print(f"largest image-specific gain (own − another's): pre-trained {gain:+.3f}, initialisation {gain0:+.3f}")

# %% [markdown]
# So the striking pictures mostly show a **positional habit** the MAE encoder learned: its [CLS]
# token attends to the border, where the background is, and away from the middle, where digits
# usually sit — the maps would look much the same on any image. The part that follows the
# individual digit (own map minus another image's) is small, no larger than at initialisation.
# Without labels, and with a [CLS]
# token the loss never reads, nothing pushes that token towards the object; compare the supervised
# CRATE of notebook 07, whose [CLS] attention is scored with the same function. The control is the
# lesson: a good-looking attention map is not yet a segmentation.
#
# ## 8. The official CRATE-MAE-Base, if you have its weights
#
# The authors published CRATE-MAE-Base (ImageNet-1K, 224 px, patch 16, 12 + 12 layers of width 768)
# on Google Drive (file id `11i5BMwymqOsunq44WD3omN5mS6ZREQPO`, linked from the official README). Nothing is downloaded
# here; if you have the file, set `CRATE_EDU_CRATE_MAE` to its path (or put it at
# `crate_edu.weights.cache_path("crate_mae_base_in1k")`) and the cell below reconstructs a photo
# shipped with scikit-image with it.

# %%
# NBVAL_IGNORE_OUTPUT
env_path = os.environ.get("CRATE_EDU_CRATE_MAE")
path_b = Path(env_path).expanduser() if env_path else cache_path("crate_mae_base_in1k")
official = None
if path_b.is_file():
    try:
        official = crate_edu.load_official("crate_mae_base", path_b, strict=False)
    except Exception as err:  # a wrong or damaged file: say why in one line, never fail the notebook
        print(f"CRATE-MAE-Base: could not load {path_b}: {' '.join(str(err).split())}")
if official is None:
    print(f"CRATE-MAE-Base weights not found at {path_b}; this part is skipped.")
else:
    import skimage.data

    photo = torch.tensor(skimage.data.chelsea()).permute(2, 0, 1).float()[None] / 255
    photo = F.interpolate(photo, size=(224, 224), mode="bilinear", antialias=True)
    photo = (photo - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )
    p_off = reconstruct(official, photo, mean=IMAGENET_MEAN, std=IMAGENET_STD, seed=0)
    plot_reconstruction_panels(p_off, title="official CRATE-MAE-Base (ImageNet-1K)", scale=2.5)
    plt.show()

# %% [markdown]
# ## 9. Are the encoder's features any good? A linear probe, layer by layer
#
# Freeze a network, take one feature vector per image, and fit only a linear classifier (here a
# multinomial logistic regression, `crate_edu.evaluation.linear_probe`, fitted deterministically by
# L-BFGS on standardised features): its test accuracy measures how linearly the digit classes sit
# in the features. We probe the output of **every layer** (`probe_layers`, through
# `forward_intermediates`) of three encoders of the same size (d = 128, 4 layers, 4 heads, patch 4):
#
# - the pre-trained CRATE-MAE encoder (mean of its patch tokens: the MAE loss never uses the [CLS]
#   output, so that token is not trained for anything);
# - the same encoder at initialisation (what pre-training adds);
# - the supervised CRATE shipped beside it (`cluttered-digits-crate`, trained *with* the labels,
#   ≈ 91 % test accuracy through its own head; its [CLS] token).

# %%
# NBVAL_IGNORE_OUTPUT
curves = {
    "CRATE-MAE, pre-trained (patch mean)": probe_layers(
        model, train_set, test_set, pool="mean", limit=PROBE_N
    ),
    "CRATE-MAE, initialisation (patch mean)": probe_layers(
        mae, train_set, test_set, pool="mean", limit=PROBE_N
    ),
}
try:
    supervised, _ = load_tutorial_model("cluttered-digits-crate")
    curves["supervised CRATE ([CLS])"] = probe_layers(
        supervised, train_set, test_set, pool="cls", limit=PROBE_N
    )
except (FileNotFoundError, WeightsFileError) as err:  # missing, or damaged (sha256 differs)
    print(f"the supervised CRATE checkpoint is unusable ({' '.join(str(err).split())}); no probe")

# %%
n_tr, n_te = min(PROBE_N, len(train_set)), min(PROBE_N, len(test_set))
print(f"linear-probe test accuracy (%), {n_tr} train / {n_te} test images; columns: layers 1–{L}")
for name, accs in curves.items():
    print(f"{name:40s} " + "  ".join(f"{100 * a:5.1f}" for a in accs))
pre, init = curves["CRATE-MAE, pre-trained (patch mean)"], curves["CRATE-MAE, initialisation (patch mean)"]
if PRETRAINED:
    check(
        "pre-training makes the features more linearly separable than at initialisation (best layer)",
        max(pre) > max(init),
        f"{100 * max(pre):.1f} % vs {100 * max(init):.1f} %",
    )
if "supervised CRATE ([CLS])" in curves:
    sup = curves["supervised CRATE ([CLS])"]
    check(
        "supervised CRATE: more separable layer after layer, and beyond the MAE's best layer",
        all(a < b for a, b in zip(sup, sup[1:])) and sup[-1] > max(pre),
        f"{100 * sup[0]:.1f} % → {100 * sup[-1]:.1f} %",
    )
plot_probe_by_layer(curves, title=f"Linear probe per layer, cluttered-digits ({n_tr} training images)")
plt.show()

# %% [markdown]
# Three things to read off. Pre-training helps: the MAE encoder's features separate the digits
# far better than the same network at initialisation. But they stay well below the supervised
# CRATE, and the two curves go opposite ways: the supervised model's classes become more separable
# layer after layer, while the MAE encoder's **early** layers give the best probe and its last
# layer the worst. The last layers already serve the decoder, whose job is to paint
# pixels, most of them background texture that says nothing about the digit. On this dataset a
# reconstruction objective is a poor way to learn the label. With 10,000 training images and the
# whole test split (`benchmarks/crate_mae.py`, recorded in `benchmarks/results/crate_mae.json`):
# 45.2 % at layer 1 and 32.9 % at layer 4 for the pre-trained encoder, 21.4 % at best at
# initialisation, 17.2 % on the pre-trained [CLS] token; the supervised CRATE's [CLS] goes from
# 37.6 % at layer 1 to 91.2 % at layer 4 (its own trained head scores 91.5 %,
# `benchmarks/results/cluttered_digits.json`). This is one small dataset; how CRATE-MAE's features
# fare on ImageNet is a separate question, not answered here.
#
# ## Summary
#
# - CRATE-MAE's decoder layer is a dictionary step $\tilde D\,\mathrm{LN}(\cdot)$ followed by an MSSA
#   step with a minus sign — the two encoder steps in reverse order, the compression one reversed in
#   sign. Written out by hand it equals `CRATEDecoderLayer`; its maps have the encoder's shapes, but
#   its weights are learned, not tied.
# - The minus sign undoes the compression step up to a second-order error (measured slope 2.0 in
#   $\varepsilon$); a dictionary undoes ISTA on a signal with a sparse code (exact for an orthogonal
#   $D$, $\eta = 1$, $\lambda = 0$; by iteration for $\eta = 0.1$).
# - The MAE machinery: exact patchify/unpatchify, exactly 75 % of patches removed by the argsort of
#   fixed noise, the mask token inserted before the encoder, the loss on removed patches only — all
#   checked against the model.
# - The shipped CRATE-MAE reconstructs the background and the visible parts of the digit; its test
#   masked-patch loss is well below the mean predictor's. The four panels need the normalisation
#   undone to show true colours.
# - Its [CLS] attention maps look like figure-ground maps, but a control (scoring each image with
#   another image's map) shows they are mostly positional: attend to the border, avoid the middle
#   where digits usually are. A good-looking attention map is not yet a segmentation.
# - A linear probe on the pre-trained encoder beats the same encoder at initialisation but stays far
#   below a supervised CRATE of the same size, and its best layer is an early one: on cluttered
#   digits, reconstruction is not a good proxy for the label.
#
# ## Exercises
#
# 1. The encoder sees 65 tokens whatever the mask ratio. How many would the original MAE encoder
#    (He et al.) see at mask ratio 0.75, and what does that change for the cost of pre-training?
#
# <details><summary>Solution</summary>
#
# MAE drops the removed patches before the encoder: it sees the 16 visible patches + [CLS] = 17
# tokens, and the mask tokens join only in the (light) decoder. Attention costs grow as $N^2$, so
# the encoder's attention is about $(65/17)^2 \approx 15$ times cheaper and its linear maps about 4
# times cheaper. CRATE-MAE gives this up so that the encoder and decoder run on the same token set,
# which their layer-by-layer mirroring needs.
#
# </details>
#
# 2. In the ε² experiment of §1, replace the round trip by two encoder steps, $z \mapsto z + M(z)$
#    applied twice. How does the distance from $z$ scale with ε, and why?
#
# <details><summary>Solution</summary>
#
# It scales as $\varepsilon$ (slope 1): $z + M(z) + M(z + M(z)) \approx z + 2M(z)$, and $M(z)$ is of
# size ε. Only the opposite sign makes the first-order terms cancel. In code: replace
# `z_half - block(z_half)` by `z_half + block(z_half)`.
#
# </details>
#
# 3. Probe the CRATE-MAE's [CLS] token instead of the patch mean
#    (`probe_layers(model, train_set, test_set, pool="cls", limit=PROBE_N)`). Which is better, and
#    why might that be?
#
# <details><summary>Solution</summary>
#
# The patch mean is better here (see `benchmarks/results/crate_mae.json`). Nothing in the MAE loss
# depends on the [CLS] output (it is dropped before the pixel prediction), so the [CLS] token is
# only shaped indirectly, as a key and value for the other tokens; the patch tokens are what the
# decoder must turn into pixels.
#
# </details>
#
# 4. `reconstruct(..., seed=s)` fixes the mask. Find, among 64 seeds, the mask that gives the
#    highest and the lowest loss on one image, and look at both. What do the easy masks keep?
#
# <details><summary>Solution</summary>
#
# ```python
# img = x_show[:1]
# losses = [reconstruct(model, img, mean=MEAN, std=STD, seed=s).loss for s in range(64)]
# best, worst = min(range(64), key=losses.__getitem__), max(range(64), key=losses.__getitem__)
# plot_reconstruction_panels(reconstruct(model, img, mean=MEAN, std=STD, seed=best)); plt.show()
# ```
#
# The easy masks keep patches on the digit: the background is predictable from any few patches,
# the digit is not, so the loss is dominated by whether its strokes were visible.
#
# </details>
