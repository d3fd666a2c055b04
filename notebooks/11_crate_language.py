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
# # 11 · CRATE for language: a causal white-box language model and its neurons
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/crate-edu/crate_edu/blob/main/notebooks/11_crate_language.ipynb)
#
# Nothing in CRATE's derivation was about images: a layer compresses a set of tokens against
# subspaces (MSSA) and then sparsifies them against a dictionary (ISTA). The CRATE journal paper
# (Yu et al., "White-Box Transformers via Sparse Rate Reduction: Compression Is All There Is?",
# arXiv 2311.13110) carries the construction over to text, with CRATE-GPT and CRATE-BERT. CRATE-LM
# ("Improving Neuron-level Interpretability with White-box Language Models", arXiv 2410.16443)
# trains a causal CRATE with an overcomplete sparse-coding block on the Pile and reads its sparse
# codes as **neurons**: it reports that they are more interpretable than GPT-2's MLP neurons, by
# an LLM-simulated explanation score.
#
# This notebook builds the causal model from the same compression step as notebook 02 and checks
# every piece against the derivation, trains it and a GPT baseline of the same widths on text that
# ships with Python, and then looks inside both: how each layer compresses and sparsifies, what
# makes single neurons fire, and how interpretable the neurons are by a score we can compute
# offline.
#
# ## What you will learn
#
# - What changes from images to text: characters as tokens, learned positions, the causal mask,
#   and the objective, next-token cross-entropy in bits per character.
# - Causal MSSA derived as one gradient step on the compression term of each token's *prefix*,
#   checked against autograd, and the model's `CausalMSSA` block checked against the derivation
#   (with the output map tied to the subspaces) to float32 precision; causality and the fast path,
#   checked.
# - CRATE-LM's overcomplete sparse-coding block as two ISTA steps on a LASSO, decoded by the same
#   dictionary, and what its step size does to the objective.
# - How a small CRATE-LM compares with a GPT of the same widths and budget: validation bits per
#   character, samples, compression and sparsity layer by layer.
# - Neurons: how sparse they are, their top-activating contexts (a figure and a browser), and an
#   offline interpretability score, CRATE against GPT, beside the published claim.
#
# ## Run time
#
# Measured on 2026-12-03 on 2 CPU cores by `benchmarks/notebooks.py` (kernel start included;
# recorded in `benchmarks/results/notebooks_quick.json` and `notebooks_full.json`; other jobs kept
# about one core busy during both runs): wall time, and the kernel's CPU time in brackets.
#
# | | quick mode (`CRATE_EDU_QUICK=1`) | full mode |
# |---|---|---|
# | CPU (2 cores) | 14 s (CPU 14 s) | 21 s (CPU 18 s) |
# | GPU | not measured (no GPU in this session); the models are tiny and nothing here is long, so expect little gain | same |
#
# Quick mode trains two tiny models for a few seconds each to show the loop, then uses the
# shipped models on a few validation windows; full mode uses the shipped models on all of them for
# bits per character and on more of them for the measurements (set `CRATE_EDU_TRAIN_LM=1` to retrain both with the full recipes instead of the tiny run: a few
# minutes each on a CPU). §8 loads the published 12-layer CRATE-LM only if it is already on disk.

# %%
# On Google Colab, install crate_edu first (elsewhere this cell does nothing).
import subprocess
import sys

REPOSITORY = "https://github.com/crate-edu/crate_edu"  # the same as crate_edu.REPOSITORY
if "google.colab" in sys.modules:
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, f"crate-edu @ git+{REPOSITORY}"], check=True)

# %%
import math
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

import crate_edu
from crate_edu import coding_rate as cr
from crate_edu.models import CausalMSSA, TiedOvercompleteISTA, set_reference
from crate_edu.notebook import QUICK, check, check_close, choose
from crate_edu.text import CharTokenizer, build_text_dataset, corpus_info, load_corpus

torch.set_num_threads(1)  # small matrices: one thread is the fastest, and results do not depend on it
F64 = torch.float64
print(f"quick mode: {QUICK}")

# %% [markdown]
# **Convention** (as in notebooks 01–04): tokens are rows, a sequence of $T$ tokens of width $d$
# has shape `(B, T, d)`, and the paper's $U_k^\top z$ is `z @ U[k]`.
#
# ## 1. From images to text: what changes
#
# Four things change when CRATE reads text instead of images.
#
# **Tokens.** An image was cut into patches; text is cut into tokens. The smallest choice is one
# token per character: `crate_edu.text.CharTokenizer` has a fixed vocabulary (tab, newline, the
# printable ASCII characters and one id for anything else). The published CRATE-LM reads GPT-2's
# byte-level BPE tokens instead (§8). The text is the Python language reference that CPython
# ships for `help()` (the standard library's `pydoc_data.topics`), so it is on every machine that
# runs this notebook; the first 90 % trains, the last 10 % validates.

# %%
tok = CharTokenizer()
info = corpus_info("python-docs")
text = load_corpus("python-docs")
print(f"{info.name}: {len(text):,} characters from {info.source}")
print(f"character vocabulary: {tok.vocab_size} ids")
sample = text[1000:1060]
print(repr(sample))
print(tok.encode(sample)[:20], "...")
check("decode(encode(text)) = text for ASCII text", tok.decode(tok.encode(sample)) == sample)

# %% [markdown]
# **Positions.** A patch had a place in a grid; a token has a place in a line. CRATE-LM adds a
# learned position embedding to each token's embedding, as GPT-2 does:
# $z_t^0 = W_{\mathrm{te}}[x_t] + W_{\mathrm{pe}}[t]$.
#
# **The objective.** A classifier predicted one label per image. A language model predicts every
# next token: from the window $x_0 \dots x_{T-1}$ it outputs at each position $t$ a distribution
# over the vocabulary for $x_{t+1}$, and is trained on the mean cross-entropy over all positions.
# In base 2 it is the number of **bits per character** the model would need to encode the text
# (`crate_edu.text.TextWindows` gives the pairs `x`, `y` with `y` the window shifted by one):
#
# $$\mathcal L = -\frac{1}{T}\sum_{t=0}^{T-1}\log_2 p_\theta(x_{t+1}\mid x_0,\dots,x_t).$$
#
# Two baselines set the scale: a model that knows nothing pays $\log_2 V$ bits per character, and
# one that knows only how often each character occurs (the training split's frequencies) pays the
# cross-entropy of those frequencies on the validation split.

# %%
train_windows = build_text_dataset("python-docs", "train", stride=128)  # side by side, as the recipes
val = build_text_dataset("python-docs", "val")
x0, y0 = val[0]
print(
    f"windows of {val.block_size} characters: {len(train_windows):,} for training, "
    f"{len(val):,} for validation"
)
check("y is x shifted by one", bool((x0[1:] == y0[:-1]).all()))

cut = int(0.9 * len(text))
counts = np.bincount(tok.encode(text[:cut]), minlength=tok.vocab_size) + 1.0  # add-one smoothing
freq = counts / counts.sum()
val_ids = np.array(tok.encode(text[cut:]))
unigram_bits = float(-np.log2(freq[val_ids]).mean())
uniform_bits = math.log2(tok.vocab_size)
print(
    f"uniform over {tok.vocab_size} ids: {uniform_bits:.2f} bits/char; "
    f"character frequencies: {unigram_bits:.2f} bits/char"
)

# %% [markdown]
# **The causal mask.** An image classifier let every patch look at every other. A language model
# must not let position $t$ see the token it is asked to predict, nor any after it: the output at
# $t$ may depend on $x_0 \dots x_t$ only. Attention enforces this by a mask, $-\infty$ added to the
# similarity of $t$ with every $s > t$ before the softmax, so that those weights are exactly zero.
# Everything in §2 follows from asking what the compression step should be under this rule.

# %%
T_show = 6
future = torch.ones(T_show, T_show, dtype=torch.bool).triu(1)  # s > t: not visible from t
scores = torch.randn(T_show, T_show, generator=torch.Generator().manual_seed(0))
A = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
print("which tokens s each position t sees (1 = visible):")
print((~future).int().numpy())
check(
    "masked weights are exactly 0 and each row sums to 1",
    bool((A[future] == 0).all()) and torch.allclose(A.sum(-1), torch.ones(T_show)),
)

# %% [markdown]
# ## 2. Causal MSSA, from the same compression step
#
# For images, MSSA is one gradient step on the compression term of all $N$ tokens (notebook 02):
# $Z \leftarrow Z - \kappa\nabla_Z R^c(Z; U_{[K]})$ with
#
# $$R^c(Z; U_{[K]}) = \sum_{k=1}^K \frac12\log\det\Big(I + \gamma\,(U_k^\top Z)^\top(U_k^\top Z)\Big),
#   \qquad \gamma = \frac{p}{N\varepsilon^2}.$$
#
# Under the causal rule, token $t$ may only use $Z_{\le t} = (z_0, \dots, z_t)$. The natural causal
# step compresses each token against **its own prefix**, and moves only that token:
#
# $$z_t \leftarrow z_t - \kappa\,\nabla_{z_t} R^c(Z_{\le t}; U_{[K]}),
#   \qquad \gamma_t = \frac{p}{(t+1)\varepsilon^2}. \tag{C1}$$
#
# The prefix has $t+1$ tokens, so its $\gamma_t$ shrinks along the sequence. The same three
# approximations that turn the gradient into MSSA for images (a first-order Neumann series,
# $\sum_k U_kU_k^\top \approx I$, and the Gram matrix replaced by a softmax "membership") give,
# on each prefix,
#
# $$z_t \leftarrow (1-\kappa\gamma_t)\,z_t + \kappa\gamma_t\,\mathrm{MSSA}(Z_{\le t})_t, \qquad
#   \mathrm{MSSA}(Z_{\le t})_t = \gamma_t\sum_{k=1}^K U_k \sum_{s\le t} A_k[t,s]\;U_k^\top z_s,
#   \tag{C2}$$
#
# $$A_k[t,s] = \frac{\exp(\tau\, z_t^\top U_k U_k^\top z_s)}
#   {\sum_{s'\le t}\exp(\tau\, z_t^\top U_k U_k^\top z_{s'})}
#   \quad (s \le t), \qquad A_k[t, s] = 0 \quad (s > t).$$
#
# The softmax over $s \le t$ *is* the causal mask: one masked $T\times T$ product computes (C2) for
# every prefix at once. `crate_edu.coding_rate` has both: `causal_grad_compression_rate` (C1's
# gradient, prefix by prefix) and `causal_mssa_step` (C2). We check them on random tokens and
# orthonormal subspaces, first the gradient against autograd, then the step against notebook 02's
# `mssa_step` run on every prefix:

# %%
d, K, p, T = 16, 4, 4, 32
eps, kappa = 0.5, 0.1
gen = torch.Generator().manual_seed(0)
U = cr.random_complete_split(d, K, p, generator=gen, dtype=F64)  # (K, d, p), sum_k U_k U_k^T = I
Z = torch.randn(T, d, generator=gen, dtype=F64) / math.sqrt(d)  # (T, d) tokens of norm about 1

grad_causal = cr.causal_grad_compression_rate(Z, U, eps)  # row t: grad of R^c(Z_<=t) in z_t
by_autograd = []
for t in range(T):
    z_t = Z[t].clone().requires_grad_(True)
    cr.compression_rate(torch.cat([Z[:t], z_t[None]]), U, eps).backward()
    by_autograd.append(z_t.grad)
check_close(
    "(C1): closed-form causal gradient = autograd, every prefix",
    grad_causal,
    torch.stack(by_autograd),
    atol=1e-12,
)

step = cr.causal_mssa_step(Z, U, eps, kappa)  # (C2) for all positions at once, masked
prefix_by_prefix = torch.stack([cr.mssa_step(Z[: t + 1], U, eps, kappa)[t] for t in range(T)])
check_close("(C2): causal_mssa_step = mssa_step on each prefix, last row", step, prefix_by_prefix, atol=1e-12)

gram_step = cr.causal_mssa_step(Z, U, eps, kappa, membership="gram")  # before the softmax swap
neumann = torch.stack(
    [Z[t] - kappa * cr.grad_compression_rate_neumann(Z[: t + 1], U, eps)[t] for t in range(T)]
)
check_close(
    "with the Gram for the softmax, (C2) is the Neumann step of (C1) exactly", gram_step, neumann, atol=1e-12
)

# %% [markdown]
# How good is the approximation? As notebook 02 did for images, compare the direction of the step
# with the descent direction $-\nabla_{z_t}R^c(Z_{\le t})$, now position by position (cosine of the
# two $d$-vectors, +1 = steepest descent).

# %%
descent = -grad_causal  # (T, d)
cos_t = F.cosine_similarity(step - Z, descent, dim=-1)  # (T,)
gamma_t = cr.prefix_gamma(T, p, eps, dtype=F64)  # (T,)
show = [0, 1, 2, 3, 5, 8, 15, 31]
print("position t:          ", " ".join(f"{t:>6d}" for t in show))
print("kappa * gamma_t:     ", " ".join(f"{kappa * gamma_t[t].item():6.2f}" for t in show))
print("cos(step, -grad R^c):", " ".join(f"{cos_t[t].item():+6.2f}" for t in show))
# at t = 0 the prefix is z_0 alone: A = [1] and MSSA = gamma_0 z_0, so the step adds
# kappa gamma_0 (gamma_0 - 1) z_0 to z_0
check_close(
    "t = 0: step - z_0 = kappa gamma_0 (gamma_0 - 1) z_0",
    step[0] - Z[0],
    kappa * gamma_t[0] * (gamma_t[0] - 1) * Z[0],
    atol=1e-12,
)

# %%
first_descending = int(torch.nonzero(cos_t > 0)[0])
display(
    Markdown(
        f"The causal step points downhill on $R^c(Z_{{\\le t}})$ from position {first_descending} on "
        f"(cosine {cos_t[first_descending:].min():+.2f} to {cos_t[first_descending:].max():+.2f}), and "
        f"uphill before it (cosine {cos_t[0]:+.2f} at $t = 0$). The reason is $\\gamma_t$: at $t = 0$ the "
        f"softmax has one token to average, so MSSA returns $\\gamma_0 z_0$ and the step multiplies $z_0$ "
        f"by $1 + \\kappa\\gamma_0(\\gamma_0 - 1)$, which *grows* it whenever $\\gamma_0 > 1$ (here "
        f"$\\gamma_0 = {gamma_t[0]:.0f}$), where the exact gradient would shrink it. The first-order "
        "Neumann series is only accurate for small $\\gamma_t$, and short prefixes have large ones: the "
        "causal derivation is at its worst at the start of a sequence. The trained model sidesteps this "
        "(next cell): it has no $\\gamma_t$ at all."
    )
)

# %% [markdown]
# ### The model's block against the derivation
#
# `crate_edu.models.CausalMSSA` computes what the official CRATE-LM code computes
# (`CausalSelfAttention` in `crate_overcomplete.py`, tested against it on fixtures to 1e-4):
#
# $$\mathrm{CausalMSSA}(Z)_t =
#   W_{\mathrm{proj}}\Big[\textstyle\sum_{s\le t} A_k[t,s]\,U_k^\top z_s\Big]_{k=1}^K
#   + b_{\mathrm{proj}}, \qquad \tau = 1/\sqrt p,$$
#
# with `c_attn` $=[U_1 \cdots U_K]^\top$ used as query, key and value alike. It departs from (C2)
# in three ways, as CRATE does for images: the output map $W_{\mathrm{proj}}$ is learned instead
# of $\gamma_t[U_1\cdots U_K]$ (so there is no $\gamma_t$, for any position), the temperature is
# $1/\sqrt p$, and the residual coefficient is 1. Tie the block's output map to the subspaces
# (`c_proj` $= [U_1\cdots U_K]$, bias 0) and it must equal the derived causal MSSA at
# $\tau = 1/\sqrt p$ divided by $\gamma_t$, row by row. The block runs in float32 on the official
# arithmetic (`reference=True`), the derivation in float64:

# %%
block = CausalMSSA(d, K, reference=True)  # float32, the official arithmetic written out
with torch.no_grad():
    block.c_attn.weight.copy_(U.transpose(1, 2).reshape(K * p, d))  # rows: U_1^T; ...; U_K^T
    block.c_proj.weight.copy_(U.permute(1, 0, 2).reshape(d, K * p))  # [U_1 ... U_K]
    block.c_proj.bias.zero_()
    out_block = block(Z.float()[None])[0].double()  # (T, d)
derived = cr.causal_mssa(Z, U, eps, tau=p**-0.5) / gamma_t[:, None]  # (T, d), no gamma_t
check_close(
    "CausalMSSA with c_proj = [U_1 ... U_K] = causal_mssa(tau = 1/sqrt(p)) / gamma_t",
    out_block,
    derived,
    atol=1e-6,
)

# %% [markdown]
# **Causality**, on a whole model. Change every token after position $t$ and nothing the model
# outputs at positions $\le t$ may move. We check it on a fresh `crate_lm_char` model (the
# character-level preset of the shipped one), with its default **fast path** (PyTorch's causal
# attention kernel; notebook 02 explains the fast path) and with the **reference path** (the
# official arithmetic), and check the two paths against each other:

# %%
torch.manual_seed(0)
fresh = crate_edu.create_model("crate_lm_char").eval()
reference = crate_edu.create_model("crate_lm_char").eval()
reference.load_state_dict(fresh.state_dict())
set_reference(reference)
idx = torch.randint(0, tok.vocab_size, (2, 64))
t_cut = 40
changed = idx.clone()
changed[:, t_cut + 1 :] = torch.randint(0, tok.vocab_size, (2, 64 - t_cut - 1))
with torch.no_grad():
    for name, model in (("fast", fresh), ("reference", reference)):
        before, after = model(idx), model(changed)
        check_close(
            f"{name} path: logits at t <= {t_cut} unchanged by tokens after it",
            after[:, : t_cut + 1],
            before[:, : t_cut + 1],
            atol=1e-6,
        )
        moved = (after[:, t_cut + 1 :] - before[:, t_cut + 1 :]).abs().max().item()
        check(f"{name} path: logits after t = {t_cut} do change", moved > 1e-3)
    check_close("fast path = reference path (logits)", fresh(idx), reference(idx), atol=1e-5)

# %% [markdown]
# ## 3. The overcomplete sparse-coding block, as ISTA on a LASSO
#
# CRATE's ISTA block (notebook 03) takes one ISTA step on the LASSO, warm-started at the token
# itself, with a square dictionary. CRATE-LM changes it in three ways (official `MLP` of
# `crate_overcomplete.py`): the dictionary $D\in\mathbb R^{d\times 4d}$ is 4× **overcomplete**,
# the code starts from **zero** and takes **two** steps, and the block outputs the code **decoded**
# by the same dictionary, $Dz$, which replaces the token (no residual). For the LASSO
#
# $$\min_{z\ge 0}\;\; \lambda\lVert z\rVert_1 + \tfrac12\lVert v - Dz\rVert_2^2,
#   \qquad v = \mathrm{LN}(z^{\ell+1/2}),$$
#
# one non-negative ISTA step of size η is
# $z \leftarrow \mathrm{ReLU}\big(z + \eta D^\top(v - Dz) - \eta\lambda\big)$
# (`coding_rate.ista_step`), with $\eta = \lambda = 0.1$. The block is that step applied twice from
# $z = 0$, decoded. In row form the block's weight $W$ (`ista.weight`, $4d\times d$) is $D^\top$.
# We check `TiedOvercompleteISTA` (reference path) against `ista_step` applied twice, and watch
# the objective:

# %%
torch.manual_seed(0)
d_ista = 32
ista_block = TiedOvercompleteISTA(d_ista, reference=True).double()  # W (4d, d), official initialisation
v = F.layer_norm(torch.randn(4, 16, d_ista, dtype=F64), (d_ista,))  # (B, T, d) as after LN
D = ista_block.weight.detach().T  # (d, 4d) the dictionary
z = torch.zeros(4, 16, 4 * d_ista, dtype=F64)
objective = [cr.lasso_objective(z, v, D, lam=0.1).sum().item()]
for _ in range(2):
    z = cr.ista_step(z, v, D, eta=0.1, lam=0.1)
    objective.append(cr.lasso_objective(z, v, D, lam=0.1).sum().item())
with torch.no_grad():
    codes, decoded = ista_block.forward_parts(v)
check_close("the block's codes = two ISTA steps from 0", codes, z, atol=1e-12)
check_close("the block's output = D times those codes", decoded, z @ D.T, atol=1e-12)
check("the LASSO objective decreases over the two steps", objective[0] > objective[1] > objective[2])
print("objective at z = 0, after step 1, after step 2:", [round(o, 1) for o in objective])
print(f"non-zero code entries: {(codes > 0).double().mean().item():.0%}")
print(f"eta * ||D||_2^2 = {0.1 * torch.linalg.matrix_norm(D, 2).item() ** 2:.2f}")

# %% [markdown]
# ISTA is guaranteed to decrease the objective at every step when $\eta\lVert D\rVert_2^2 \le 1$
# (`coding_rate.max_step_size`). CRATE-LM fixes η = 0.1 whatever the dictionary, so the guarantee
# does not hold here (the last line above). The first step from zero has a weaker condition: with
# $z_1 = \eta s$, $s = \mathrm{ReLU}(D^\top v - \lambda)$, the objective changes by
# $-\eta\lVert s\rVert^2 + \tfrac12\eta^2\lVert Ds\rVert^2
# \le -\eta\lVert s\rVert^2\big(1 - \tfrac12\eta\lVert D\rVert_2^2\big)$,
# a decrease whenever $\eta\lVert D\rVert_2^2 < 2$ (checked below); the second step decreased it
# here without a guarantee. The block is a fixed, shallow unrolling of ISTA, not a solver: its
# codes are what two steps reach, and training shapes $D$ so that those codes predict text.

# %%
s_code = F.relu(v @ D - 0.1)  # (B, T, 4d): D^T v - lambda, rows form, then ReLU
change = objective[1] - objective[0]
bound = -0.1 * (s_code**2).sum().item() * (1 - 0.5 * 0.1 * torch.linalg.matrix_norm(D, 2).item() ** 2)
check_close(
    "first step: the change of the objective, written out",
    change,
    -0.1 * (s_code**2).sum().item() + 0.5 * 0.01 * ((s_code @ D.T) ** 2).sum().item(),
    atol=1e-9,
)
check("first step: the change is at most the bound", change <= bound, f"{change:.1f} <= {bound:.1f}")

# %% [markdown]
# ## 4. Training CRATE-LM and its GPT baseline
#
# The recipe `text-quick` trains `crate_lm_char` (4 layers, width 128, 4 heads, context 128, a
# dictionary of 512 atoms per layer) on the Python documentation text; `text-quick-gpt` trains
# `gpt_lm_char`, a GPT of the same widths (the official CRATE-LM repository's `gpt.py`: separate
# q, k, v, a ReLU MLP 4× wide), on exactly the same data, steps and optimiser. Both run on the
# training loop of the image models (checkpoints, `--resume`, metrics), with next-token
# cross-entropy as the objective:
#
# ```bash
# crate-edu train --recipe text-quick --out runs/crate-lm
# crate-edu train --recipe text-quick-gpt --out runs/gpt
# ```
#
# The full recipes take a few minutes each on a CPU; the two models they made ship with the
# package (`crate_edu/resources/checkpoints/README.md` has the commands and the metrics). Quick
# mode trains a tiny version of both (2 layers of width 64, on 640 training windows) so you can
# watch the loop run; full mode skips it unless `CRATE_EDU_TRAIN_LM=1` asks for the full recipes.

# %%
# NBVAL_IGNORE_OUTPUT
from crate_edu.train import RECIPES, train  # noqa: E402

TRAIN_FULL = os.environ.get("CRATE_EDU_TRAIN_LM") == "1" and not QUICK
tiny = dict(epochs=1, limit_train=640, limit_test=32, model_overrides=dict(depth=2, dim=64))
runs_dir = Path(tempfile.mkdtemp(prefix="crate-lm-"))
if QUICK or TRAIN_FULL:
    for recipe in ("text-quick", "text-quick-gpt"):
        start = time.perf_counter()
        cfg = RECIPES[recipe].config(progress=False, **({} if TRAIN_FULL else tiny))
        run = train(cfg, runs_dir / recipe)
        print(
            f"{recipe}: {run.final['test_bits']:.3f} bits/char on the validation windows, "
            f"{time.perf_counter() - start:.0f} s\n"
        )
else:
    print("full mode: using the shipped models (set CRATE_EDU_TRAIN_LM=1 to train both recipes here)")

# %% [markdown]
# The rest of the notebook uses the shipped models, in both modes:

# %%
crate_lm, crate_info = crate_edu.load_tutorial_model("python-docs-crate-lm")
gpt, gpt_info = crate_edu.load_tutorial_model("python-docs-gpt")
models = {"CRATE-LM": crate_lm, "GPT": gpt}
for name, model in models.items():
    cfg = model.config
    print(
        f"{name}: {type(model).__name__}, {model.num_params():,} parameters, {cfg.depth} layers, width "
        f"{cfg.dim}, {cfg.heads} heads, context {cfg.block_size}; "
        + (
            f"a dictionary of {cfg.code_width} atoms"
            if name == "CRATE-LM"
            else f"an MLP of {cfg.mlp_ratio * cfg.dim} units"
        )
        + " per layer"
    )
same = (
    "dataset",
    "tokenizer",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "warmup_epochs",
    "seed",
)
check(
    "both were trained with the same data, budget, optimiser and seed",
    all(crate_info.metadata["train_config"][k] == gpt_info.metadata["train_config"][k] for k in same),
)

# %% [markdown]
# The GPT has more parameters at the same widths: each of its layers has separate query, key and
# value maps ($3d^2$ against CRATE's shared $d^2$) and an MLP with two matrices (against CRATE's
# one dictionary, used to code and to decode).
#
# ## 5. Bits per character and samples
#
# Validation bits per character of both shipped models, computed here on the validation windows
# (quick mode: the first few; full mode: all of them, which reproduces what each file records):

# %%
n_val = choose(32, len(val))
xv = torch.stack([val[i][0] for i in range(n_val)])  # (n, T)
yv = torch.stack([val[i][1] for i in range(n_val)])


@torch.no_grad()
def bits_per_char(model, x, y, batch=32):
    """Mean next-token cross-entropy over every position of the windows, in bits."""
    nats = sum(
        F.cross_entropy(
            model(x[i : i + batch]).flatten(0, 1), y[i : i + batch].flatten(), reduction="sum"
        ).item()
        for i in range(0, len(x), batch)
    )
    return nats / y.numel() / math.log(2)


bits = {name: bits_per_char(model, xv, yv) for name, model in models.items()}
recorded = {"CRATE-LM": crate_info, "GPT": gpt_info}
rows = "\n".join(
    f"| {name} | {bits[name]:.3f} | {recorded[name].metadata['final_metrics']['test_bits']:.3f} |"
    for name in models
)
display(
    Markdown(
        f"""| on {n_val * val.block_size:,} validation characters ({n_val} windows) | bits/char | recorded in the file (all {len(val)} windows) |
|---|---|---|
| uniform over {tok.vocab_size} ids | {uniform_bits:.2f} | |
| character frequencies | {unigram_bits:.2f} | |
{rows}
"""
    )
)
if not QUICK:
    for name in models:
        check_close(
            f"{name}: bits/char = the recorded value",
            bits[name],
            recorded[name].metadata["final_metrics"]["test_bits"],
            atol=1e-4,
        )

# %%
gap = bits["CRATE-LM"] - bits["GPT"]
display(
    Markdown(
        f"With the same budget, CRATE-LM is **{abs(gap):.2f} bits/char {'above' if gap > 0 else 'below'}** "
        f"the GPT baseline ({bits['CRATE-LM']:.2f} against {bits['GPT']:.2f}); both are well below the "
        f"character frequencies ({unigram_bits:.2f}): they predict from the context, not only from how "
        "common each character is. "
        "The CRATE-LM paper's claim is about interpretability (§7), not loss."
    )
)

# %% [markdown]
# **Samples.** `generate` continues a prompt one token at a time from the model's next-token
# distribution, divided by a temperature (below 1: more conservative) and restricted to the `top_k`
# most likely characters, with a seeded generator so the samples are the same on every run:

# %%
prompt = "The for statement"
ids = torch.tensor([tok.encode(prompt)])
for name, model in models.items():
    out = model.generate(ids, 160, temperature=0.8, top_k=10, generator=torch.Generator().manual_seed(0))
    print(f"--- {name} ---")
    print(tok.decode(out[0].tolist()))

# %% [markdown]
# ## 6. Compression and sparsity, layer by layer
#
# The layer-wise figure of the CRATE papers (notebook 04 for images) measures, at every layer
# $\ell$, the compression term $R^c$ of the tokens' subspace
# coordinates $U_k^\top\mathrm{LN}(Z^\ell)$ (the official measurement: unit-normalised per head,
# $\varepsilon^2 = 0.01$, each window one sample) and the fraction of non-zero entries of the
# sparse codes. For the GPT the "subspaces" are its key maps and the "codes" its MLP's ReLU
# units, measured the same way. An untrained CRATE-LM is the reference point.

# %%
from crate_edu.evaluation import layerwise_measurements  # noqa: E402
from crate_edu.plotting import plot_layerwise_language  # noqa: E402

n_layerwise = choose(16, 64)
torch.manual_seed(0)
untrained = crate_edu.create_model("crate_lm_char").eval()
measured = {
    "CRATE-LM": layerwise_measurements(crate_lm, xv[:n_layerwise]),
    "GPT": layerwise_measurements(gpt, xv[:n_layerwise]),
    "CRATE-LM, untrained": layerwise_measurements(untrained, xv[:n_layerwise]),
}
header = "| layer | " + " | ".join(f"{n}: $R^c$ / non-zero" for n in measured) + " |"
lines = [header, "|---" * (len(measured) + 1) + "|"]
for layer in range(crate_lm.config.depth):
    cells = [f"{m.compression_mean[layer]:.1f} / {m.nonzero_mean[layer]:.1%}" for m in measured.values()]
    lines.append(f"| {layer + 1} | " + " | ".join(cells) + " |")
display(Markdown(f"On {n_layerwise} validation windows:\n\n" + "\n".join(lines)))
plot_layerwise_language(measured, title="Compression and sparsity, layer by layer (validation text)")
plt.show()

# %%
crate_m, gpt_m, untrained_m = measured.values()
sparser = sum(c < g for c, g in zip(crate_m.nonzero_mean, gpt_m.nonzero_mean, strict=True))


def lo(m):
    return min(m.nonzero_mean)


def hi(m):
    return max(m.nonzero_mean)


display(
    Markdown(
        f"CRATE-LM's codes have {lo(crate_m):.0%}–{hi(crate_m):.0%} of their entries non-zero "
        f"({lo(untrained_m):.0%}–{hi(untrained_m):.0%} untrained), the GPT's ReLU units "
        f"{lo(gpt_m):.0%}–{hi(gpt_m):.0%}: CRATE-LM's codes are the sparser at {sparser} of "
        f"{crate_lm.config.depth} layers. "
        f"$R^c$ of CRATE-LM's projections goes from {crate_m.compression_mean[0]:.1f} at layer 1 to "
        f"{crate_m.compression_mean[-1]:.1f} at layer {crate_lm.config.depth} (GPT: {gpt_m.compression_mean[0]:.1f} to "
        f"{gpt_m.compression_mean[-1]:.1f}). The two numbers measure different subspaces in each model (the learned "
        "$U_k$ of each layer), so compare the shapes of the curves more than their levels."
    )
)

# %% [markdown]
# The trained model's codes are still exactly the two ISTA steps of §3, now on real text, at every
# layer; beside them, each layer's $\eta\lVert D\rVert_2^2$ and its LASSO objective at $z = 0$ and
# after each step (summed over two windows):


# %%
def eta_norm2(block):
    """eta ||D||_2^2 of a CRATE-LM layer's dictionary (eta = 0.1)."""
    return 0.1 * torch.linalg.matrix_norm(block.ista.weight.detach().double(), 2).item() ** 2


steps, steps_0, decreasing = [], [eta_norm2(b) for b in untrained.transformer.h], []
with torch.no_grad():
    _, traces = crate_lm.forward_trace(xv[:2])
    for i, (layer, trace) in enumerate(zip(crate_lm.transformer.h, traces, strict=True)):
        v_l = layer.prenorm_2(trace.z_half).double()  # LN_2(z^{l+1/2})            (2, T, d)
        D_l = layer.ista.weight.double().T  # the dictionary                     (d, 4d)
        z_l = [torch.zeros_like(trace.codes, dtype=F64)]
        for _ in range(2):
            z_l.append(cr.ista_step(z_l[-1], v_l, D_l, eta=0.1, lam=0.1))
        check_close(f"layer {i + 1}: codes = two ISTA steps from 0", trace.codes, z_l[-1], atol=1e-4)
        steps.append(eta_norm2(layer))
        objective_l = [cr.lasso_objective(z, v_l, D_l, lam=0.1).sum().item() for z in z_l]
        decreasing.append(objective_l[0] > objective_l[1] > objective_l[2])
        print(f"  eta ||D||^2 = {steps[-1]:.2f}; objective {' -> '.join(f'{o:,.0f}' for o in objective_l)}")

# %%
display(
    Markdown(
        f"In the trained model $\\eta\\lVert D\\rVert_2^2$ is {min(steps):.2f} to {max(steps):.2f} across the "
        f"layers (untrained: {min(steps_0):.2f} to {max(steps_0):.2f}): "
        f"{'above' if min(steps) > 1 else 'around'} the bound of 1 that guarantees every step a decrease; "
        f"it exceeds 2, the bound under which the first step is sure to decrease it, at "
        f"{sum(x > 2 for x in steps)} of {len(steps)} layers. The objective fell at both steps in "
        f"{sum(decreasing)} of {len(steps)} layers. Nothing in the training objective asks the block "
        "to solve its LASSO well; it asks the decoded codes to help predict the next character."
    )
)


# %% [markdown]
# ## 7. Neurons
#
# A **neuron** is one coordinate of a layer's sparse code: CRATE-LM's $z$ after the second ISTA
# step ($4d$ per layer), and for the GPT one ReLU unit of the MLP (also $4d$), as the CRATE-LM
# paper reads them (`crate_edu.evaluation.collect_activations` keeps every neuron's activation at
# every position of some validation windows). First, how often they fire, and how many never do
# on this sample ("dead"):

# %%
from crate_edu.evaluation import activation_sparsity, collect_activations, top_contexts  # noqa: E402

n_neuron_windows = choose(16, 128)
acts = {name: collect_activations(model, xv[:n_neuron_windows]) for name, model in models.items()}
sparsity = {name: activation_sparsity(a) for name, a in acts.items()}
lines = [
    "| layer | " + " | ".join(f"{n}: zero activations / dead neurons" for n in acts) + " |",
    "|---|---|---|",
]
for layer in range(crate_lm.config.depth):
    cells = [f"{s[layer].zero_fraction:.1%} / {s[layer].dead_fraction:.1%}" for s in sparsity.values()]
    lines.append(f"| {layer} | " + " | ".join(cells) + " |")
display(Markdown(f"On {acts['GPT'].n_positions:,} positions (layers from 0):\n\n" + "\n".join(lines)))

# %% [markdown]
# **What makes a neuron fire.** For each neuron, its top-activating positions and the text around
# them (`top_contexts`, like the official dump's "most positive activation records"). The figure
# shades each character by the neuron's activation there and boxes the top position; it shows,
# for each model, the neuron of layer 1 (the second: layers count from 0 here, as in the official
# neuron dumps) that the interpretability score below ranks first, and one from the middle of the
# ranking.

# %%
from crate_edu.evaluation import compare_interpretability  # noqa: E402
from crate_edu.plotting import plot_interpretability, plot_neuron_contexts  # noqa: E402

comparison = compare_interpretability(acts["CRATE-LM"], acts["GPT"], tok, names=("CRATE-LM", "GPT"))
shown = {}
for name in comparison.names:
    s = comparison.scores[name][1]  # layer 1
    ranked = np.argsort(-np.nan_to_num(s.score, nan=-np.inf), kind="stable")
    for rank in (0, int(s.live.sum()) // 2):
        n = int(ranked[rank])
        best = s.features[s.best_feature[n]]
        label = (
            f"{name}, layer 1, neuron {n} (rank {rank + 1}: score {s.score[n]:.2f}, best feature {best!r})"
        )
        shown[label] = top_contexts(acts[name], 1, n, k=4, width=20, decode=tok)
plot_neuron_contexts(shown)
plt.show()

# %% [markdown]
# The same contexts for any neuron, in a browser (layer and neuron sliders; "order" ranks the
# neurons by their score). It needs a live kernel: on a static page only the figure above shows.

# %%
# NBVAL_IGNORE_OUTPUT
from crate_edu.plotting import neuron_browser  # noqa: E402

neuron_browser(acts["CRATE-LM"], tok, scores=comparison.scores["CRATE-LM"], layer=1)

# %% [markdown]
# ### An offline interpretability score, CRATE-LM against GPT
#
# The CRATE-LM paper scores a neuron with two language models: Mistral-7B writes an explanation of
# the neuron from its top contexts, Llama-2-7B predicts the activations from that explanation, and
# the score is the correlation of predicted and real activations. That cannot run offline, so
# `crate_edu.evaluation.interpretability_scores` computes a **substitute, not the same metric**: how
# much of a neuron's activation is explained by one simple feature of the current position (the
# character itself, its class such as lower-case or punctuation, the previous character's class,
# or the position in a word). Per neuron and feature it is the adjusted correlation ratio
# $\eta^2$ (the share of the activation's variance explained by the feature's category means,
# corrected for chance, about 0 for an unrelated neuron); a neuron's score is its best feature's.
# Beside it, the **selectivity**: the share of a neuron's top 20 activations at which that feature
# takes its most common value, against how common that value is overall (chance).

# %%
print(comparison.table())
plot_interpretability(comparison)
plt.show()

# %%
overall = {name: comparison.overall(name) for name in comparison.names}
c, g = overall["CRATE-LM"], overall["GPT"]
by_layer = [
    (rc["score_mean"], rg["score_mean"])
    for rc, rg in zip(comparison.summary["CRATE-LM"], comparison.summary["GPT"], strict=True)
]
wins = sum(a > b for a, b in by_layer)
verdict = "higher" if c["score_mean"] > g["score_mean"] else "lower"
by_token = {  # the share of the live neurons best explained by the current character itself
    name: sum(r["best_feature_counts"]["token"] for r in rows) / sum(r["live"] for r in rows)
    for name, rows in comparison.summary.items()
}
display(
    Markdown(
        f"""| over all layers (live neurons) | CRATE-LM | GPT |
|---|---|---|
| mean score (adjusted η²) | {c["score_mean"]:.3f} | {g["score_mean"]:.3f} |
| median score | {c["score_median"]:.3f} | {g["score_median"]:.3f} |
| mean top-20 selectivity | {c["selectivity_mean"]:.2f} | {g["selectivity_mean"]:.2f} |
| dead neurons | {c["dead_fraction"]:.1%} | {g["dead_fraction"]:.1%} |

By this offline score CRATE-LM's neurons score **{verdict}** than the GPT's on average
({c["score_mean"]:.3f} against {g["score_mean"]:.3f}), and higher at {wins} of {len(by_layer)} layers.
The published claim (arXiv 2410.16443) is that CRATE-LM's neurons are more interpretable than
GPT-2's MLP neurons, measured with the LLM-simulated explanation score on 12-layer models trained
on the Pile. Ours is a different and much cruder score, on models of 4 layers trained for minutes
on one small text with a character vocabulary, where the current character alone is the best
explanation of most neurons ({by_token["CRATE-LM"]:.0%} of CRATE-LM's live neurons,
{by_token["GPT"]:.0%} of the GPT's). It asks whether a neuron tracks a simple surface feature, not
whether an explanation in words predicts it, so it can neither confirm nor refute the published
claim."""
    )
)

# %% [markdown]
# ## 8. The published CRATE-LM
#
# The CRATE-LM of arXiv 2410.16443 is on the Hugging Face hub, repository
# `JackBAI/CRATE-GPT-12L-Pile-600000steps`, file `ckpt-crate-12l-overparam-600000.pt`: the
# official training script's raw checkpoint (model, AdamW state and configuration; about 983 MB),
# trained for 600,000 steps on the Pile with GPT-2's BPE tokens. `crate_edu.create_model("crate_lm_12l")`
# builds it with the official parameter names. On PyTorch's meta device nothing is allocated, so
# its shapes can be read on any laptop:

# %%
with torch.device("meta"):
    big = crate_edu.create_model("crate_lm_12l")
cfg_big = big.config
print(
    f"crate_lm_12l: {big.num_params():,} unique parameters (the token embedding and the output head "
    f"are one matrix); {cfg_big.depth} layers, width {cfg_big.dim}, {cfg_big.heads} heads, "
    f"{cfg_big.vocab_size:,} token ids, context {cfg_big.block_size}, "
    f"{cfg_big.code_width:,} neurons per layer"
)
for name, param in big.named_parameters():
    if name.startswith(("transformer.wte", "transformer.wpe", "transformer.h.0.", "transformer.ln_f")):
        print(f"  {name:<36} {tuple(param.shape)}")

# %% [markdown]
# Nothing is downloaded here. With internet access, `crate-edu fetch crate_lm_12l_pile` (or
# `crate_edu.download_official("crate_lm_12l_pile")`) puts the file in the weights cache, and the
# GPT-2 tokenizer needs `pip install "crate-edu[language]"` and GPT-2's vocabulary files in the
# Hugging Face cache (`crate_edu.text.download_gpt2_vocab()`, once). When both are there, the next
# cell loads the model (`crate_edu.load_official`: weights only, key and shape checks) and
# continues a prompt; otherwise it says what is missing.

# %%
# NBVAL_IGNORE_OUTPUT
from crate_edu.weights import cache_path  # noqa: E402

path_lm = cache_path("crate_lm_12l_pile")
if not path_lm.is_file():
    print(
        f"the published CRATE-LM is not at {path_lm}: "
        "run `crate-edu fetch crate_lm_12l_pile` on a connected machine"
    )
else:
    try:  # no tokenizer package or vocabulary, or a damaged file: say why in one line
        from crate_edu.text import GPT2Tokenizer

        gpt2_tok = GPT2Tokenizer.from_hub(download=False)
        published = crate_edu.load_official("crate_lm_12l_pile", path_lm).eval()
        ids = torch.tensor([gpt2_tok.encode("The white-box transformer", special=False)])
        out = published.generate(
            ids, 40, temperature=0.8, top_k=40, generator=torch.Generator().manual_seed(0)
        )
        print(gpt2_tok.decode(out[0].tolist()))
    except Exception as err:
        print(f"CRATE-LM 12L: {' '.join(str(err).split())}")

# %% [markdown]
# ## Summary
#
# - Text changes CRATE in four places: tokens are characters (or BPE pieces), positions are
#   learned, the objective is next-token cross-entropy (bits per character), and a causal mask lets
#   each position see only the tokens before it.
# - Causal MSSA is the compression step of CRATE applied to each token's prefix: a gradient step on
#   $R^c(Z_{\le t})$ in $z_t$, with $\gamma_t = p/((t+1)\varepsilon^2)$; the same approximations as
#   for images give a masked softmax attention, checked against the prefix-by-prefix derivation and
#   autograd. The approximation is poor at the first positions, where $\gamma_t$ is large; the
#   model's block, with a learned output map and no $\gamma_t$, equals the derived causal MSSA once
#   its output map is tied to the subspaces, and is causal on both of its paths.
# - CRATE-LM's sparse-coding block is two ISTA steps from zero on an overcomplete dictionary,
#   decoded by the same dictionary; its codes are the neurons.
# - Trained with the same budget, a small CRATE-LM and a GPT baseline both predict the text far
#   better than its character frequencies do; compression and the sparsity of the codes are
#   measured layer by layer for both, the paper's layer-wise figure for text.
# - Reading the codes as neurons: top contexts, a browser, and an offline interpretability score
#   compared between the two models, reported beside (and not in place of) the published
#   LLM-simulated comparison.
#
# ## Exercises
#
# 1. Show that at $t = 0$ the causal step (C2) with $\sum_k U_kU_k^\top = I$ multiplies $z_0$ by
#    $1 + \kappa\gamma_0(\gamma_0 - 1)$, while the exact step (C1) shrinks it. For which ε does
#    (C2) shrink $z_0$ too? Check with `causal_mssa_step`.
#
# <details><summary>Solution</summary>
#
# With one token the softmax is $A_k = [1]$, so
# $\mathrm{MSSA}(Z_{\le 0})_0 = \gamma_0\sum_k U_kU_k^\top z_0 = \gamma_0 z_0$
# and (C2) gives $(1-\kappa\gamma_0)z_0 + \kappa\gamma_0^2 z_0 = \big(1+\kappa\gamma_0(\gamma_0-1)\big)z_0$.
# The exact gradient $\gamma_0\sum_k U_k U_k^\top z_0/(1+\gamma_0\lVert U_k^\top z_0\rVert^2)$ has
# a positive component along $z_0$, so (C1) always shrinks it. (C2) shrinks $z_0$ only when
# $\gamma_0 < 1$, that is $\varepsilon^2 > p$:
#
# ```python
# for eps in (0.5, 1.0, 3.0):  # p = 4: gamma_0 = 16, 4 and 0.44
#     s = cr.causal_mssa_step(Z, U, eps, kappa)
#     print(eps, (s[0].norm() / Z[0].norm()).item())
# ```
#
# </details>
#
# 2. Sample from the shipped CRATE-LM at temperatures 0.5, 1.0 and 1.5 and with `top_k=1`
#    (greedy). What changes?
#
# <details><summary>Solution</summary>
#
# ```python
# for temperature, top_k in ((0.5, None), (1.0, None), (1.5, None), (1.0, 1)):
#     g = torch.Generator().manual_seed(0)
#     out = crate_lm.generate(ids, 120, temperature=temperature, top_k=top_k, generator=g)
#     print(temperature, top_k, repr(tok.decode(out[0].tolist())))
# ```
#
# A low temperature concentrates the distribution on the likeliest characters: the text is made of
# common words and soon repeats itself (greedy decoding repeats a loop). A high one flattens it:
# more varied, more misspelt. `top_k` cuts the unlikely tail whatever the temperature.
#
# </details>
#
# 3. Check causality through gradients instead of outputs: for the `CausalMSSA` block of §2, the
#    gradient of its output at position $t$ with respect to its input at every $s > t$ is zero.
#
# <details><summary>Solution</summary>
#
# ```python
# x = Z.float()[None].clone().requires_grad_(True)  # (1, T, d)
# block(x)[0, 10].sum().backward()
# print(x.grad[0, 11:].abs().max().item(), x.grad[0, :11].abs().max().item())  # 0.0 and > 0
# ```
#
# </details>
#
# 4. CRATE-LM's λ sets how sparse the codes are. Set `lambd = 0` in every layer of the shipped
#    CRATE-LM (`for b in crate_lm.transformer.h: b.ista.lambd = 0.0`), and measure the bits per
#    character and the non-zero fraction of the codes again. What do you expect, and why is the
#    change in bits not zero?
#
# <details><summary>Solution</summary>
#
# ```python
# for b in crate_lm.transformer.h:
#     b.ista.lambd = 0.0
# print(bits_per_char(crate_lm, xv, yv), layerwise_measurements(crate_lm, xv[:16]).nonzero_mean)
# for b in crate_lm.transformer.h:
#     b.ista.lambd = 0.1
# ```
#
# Without the threshold the ReLU alone keeps the codes non-negative, so more entries are non-zero
# (denser codes), and the output of every layer changes. The model was trained with λ = 0.1, so
# the change is not free: the bits per character get slightly worse. The sparsity is part of what
# the model computes, not a measurement after the fact.
#
# </details>
