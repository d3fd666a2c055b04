# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
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
# # 03 · ISTA: sparse coding, one proximal step at a time
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/crate-edu/crate_edu/blob/main/notebooks/03_ista_sparse_coding.ipynb)
#
# A CRATE layer has two halves. The first (MSSA, notebook 02) *compresses* the tokens towards a
# few subspaces. The second, which takes the place of a transformer's MLP, *sparsifies* them: it
# takes **one step of ISTA**, the iterative shrinkage-thresholding algorithm, on a non-negative
# LASSO problem. This notebook derives that step from scratch, checks every line of it against
# the `crate_edu` code, and then asks what a single step can and cannot do — and why CRATE-α
# changed the block to an overcomplete dictionary with a residual connection.
#
# ## What you will learn
#
# - The non-negative LASSO problem behind the ISTA block (eqs. 16–17 of arXiv 2306.01129), what
#   the ½ in front of the fit term does, and why the codes are constrained to be non-negative.
# - Its proximal operator, the **non-negative soft threshold** ReLU(v − ηλ), derived and checked
#   against brute-force minimisation.
# - ISTA as proximal gradient descent; the step-size conditions (monotone descent for
#   η < 2/‖D‖₂², the classical η ≤ 1/‖D‖₂²) and what happens when they are broken.
# - The CRATE ISTA block: one step warm-started at the input, with η = λ = 0.1; the official
#   three-matmul arithmetic, the two-matmul form, and the fast path that folds the step into one.
# - One step versus running ISTA to convergence: sparsity and reconstruction error, and how they
#   move with λ and η (with sliders).
# - Complete versus overcomplete dictionaries on real image patches, CRATE-α's two-step block, and
#   a measurement of why its residual connection keeps the input signal alive through depth.
#
# ## Run time
#
# Measured on 2026-12-03 on 2 CPU cores shared with other jobs, by `benchmarks/notebooks.py`
# (kernel start included; recorded in `benchmarks/results/notebooks_quick.json` and
# `notebooks_full.json`): wall time, and the kernel's CPU time in brackets, which other jobs
# on the machine disturb less. Other jobs kept up to about one core busy during these runs (the
# JSON files record how busy, per notebook), so an idle machine is faster.
#
# | | quick mode (`CRATE_EDU_QUICK=1`) | full mode |
# |---|---|---|
# | CPU (2 cores) | 11 s (CPU 11 s) | 52 s (CPU 46 s) |
# | GPU | not used: everything here runs on the CPU, so a GPU changes nothing | same |
#
# Quick mode uses fewer tokens, iterations, grid points and layers; the conclusions do not change.

# %%
# On Google Colab, install crate_edu first (elsewhere this cell does nothing).
import subprocess
import sys

REPOSITORY = "https://github.com/crate-edu/crate_edu"  # the same as crate_edu.REPOSITORY
if "google.colab" in sys.modules:
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, f"crate-edu @ git+{REPOSITORY}"], check=True)

# %% [markdown]
# ## 0. Setup and notation
#
# The paper writes N tokens as the columns of a matrix X ∈ ℝ^{d×N} and a dictionary of m atoms as
# D ∈ ℝ^{d×m}, so that X ≈ DZ with codes Z ∈ ℝ^{m×N}. `crate_edu` stores **tokens as rows**, like
# every model tensor `(B, N, d)`: signals `X` have shape `(N, d)`, codes `Z` have shape `(N, m)`,
# and the paper's $DZ$ becomes `Z @ D.T`. The Markdown below uses the paper's column form; the code
# uses rows. Everything exact is computed in float64.

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import crate_edu.coding_rate as cr
from crate_edu.models import ISTA, OvercompleteISTA, PreNorm, fast
from crate_edu.notebook import QUICK, check, check_close, choose

F64 = torch.float64
torch.set_num_threads(1)  # every tensor here is tiny: one thread beats the cost of a thread pool
print("quick mode:", QUICK)


def nonzeros_per_token(Z):
    """Average number of non-zero code entries per token."""
    return (Z != 0).to(F64).sum(-1).mean().item()


# %% [markdown]
# ## 1. A sparse-coding problem with a known answer
#
# To judge a sparse coder we need data whose sparse code we know. Draw a dictionary $D^\star$ of
# m = d = 32 random unit-norm atoms, give every token k = 3 active atoms with positive weights
# in [0.5, 1.5], and add a little noise:
#
# $$X = D^\star A^\star + 0.01\,G, \qquad A^\star \ge 0,\ \ \|a^\star_i\|_0 = 3 .$$
#
# The dictionary is square ("complete"), as in CRATE, so that the CRATE warm start Z = X makes
# sense (it needs codes of the same width as the signal).

# %%
d, m, k = 32, 32, 3
N = choose(quick=300, full=1000)
g = torch.Generator().manual_seed(0)
D_true = torch.randn(d, m, generator=g, dtype=F64)
D_true = D_true / D_true.norm(dim=0, keepdim=True)  # (d, m) unit-norm atoms
A_true = torch.zeros(N, m, dtype=F64)  # (N, m) codes, tokens as rows
support = torch.rand(N, m, generator=g).argsort(-1)[:, :k]  # k random atoms per token
A_true.scatter_(1, support, 0.5 + torch.rand(N, k, generator=g, dtype=F64))
X = A_true @ D_true.T + 0.01 * torch.randn(N, d, generator=g, dtype=F64)  # (N, d)
print(f"X: {tuple(X.shape)}, D*: {tuple(D_true.shape)}, A*: {tuple(A_true.shape)}")
print(f"fraction of non-zeros in A*: {cr.fraction_nonzero(A_true).item():.3f} (= k/m = {k / m:.3f})")
print(f"noise / signal: {(X - A_true @ D_true.T).norm().item() / X.norm().item():.3f}")

# %% [markdown]
# ## 2. The non-negative LASSO problem (eqs. 16–17)
#
# The ISTA block asks for codes Z that are **sparse** and **reconstruct** the signal through the
# dictionary:
#
# $$\min_{Z \ge 0}\; F(Z) = \underbrace{\lambda \|Z\|_1}_{g(Z)}
#     \;+\; \underbrace{\tfrac12 \|X - DZ\|_F^2}_{f(Z)} .$$
#
# **The ½.** The paper writes the fit term as $\|X - DZ\|_F^2$, without the ½. The two are the
# same problem with λ rescaled:
# $\lambda\|Z\|_1 + \|X - DZ\|_F^2 = 2\,\big(\tfrac{\lambda}{2}\|Z\|_1 + \tfrac12\|X-DZ\|_F^2\big)$,
# so the paper's problem with penalty λ has the minimisers of the ½-problem with penalty λ/2. The
# ½ is the convention under which the update that CRATE actually runs,
# $\mathrm{ReLU}(Z + \eta D^\top(X - DZ) - \eta\lambda)$, is *exactly* a proximal-gradient step of
# size η with penalty λ. Read without the ½, the same update is a step of size η/2 on the paper's
# objective with penalty 2λ. `crate_edu.coding_rate.lasso_objective` uses the ½ convention.
#
# **The non-negativity.** Z ≥ 0 is a modelling choice with two consequences. It makes the
# proximal operator a shifted ReLU (section 3), so the block looks like, and can replace, an MLP
# with a ReLU. And it makes the codes parts-based, as in non-negative matrix factorisation: a
# token is a *sum* of atoms, never a difference. The price: with d atoms in ℝ^d, non-negative codes
# can only reach the cone spanned by the atoms, a small part of space (section 8).
#
# The smooth part has gradient $\nabla f(Z) = -D^\top (X - DZ)$ (rows: $-(X - ZD^\top)D$).
# Check: the objective in the package equals the formula, and the gradient equals autograd.

# %%
lam = 0.1
Z = torch.rand(N, m, generator=g, dtype=F64)  # any feasible codes, Z ≥ 0
F_inline = lam * Z.abs().sum() + 0.5 * (X - Z @ D_true.T).pow(2).sum()
F_package = cr.lasso_objective(Z, X, D_true, lam)
check_close("lasso_objective = λ‖Z‖₁ + ½‖X − DZ‖²", F_package, F_inline, atol=1e-10)

Zg = Z.clone().requires_grad_(True)
(0.5 * (X - Zg @ D_true.T).pow(2).sum()).backward()
grad_closed = -(X - Z @ D_true.T) @ D_true  # −D^T (X − D Z), rows form
check_close("∇f(Z) = −D^T(X − DZ) vs autograd", grad_closed, Zg.grad, atol=1e-10)

# %% [markdown]
# And the ½ bookkeeping: one proximal-gradient step on the paper's objective (no ½) with step
# η/2 and penalty 2λ is the same update as `ista_step` with (η, λ); with step η/2 and penalty λ it
# is not.

# %%
eta = 0.1
grad_paper = -2 * (X - Z @ D_true.T) @ D_true  # gradient of ‖X − DZ‖² (no ½)
step_paper = F.relu(Z - (eta / 2) * grad_paper - (eta / 2) * (2 * lam))  # step η/2, penalty 2λ
check_close(
    "paper objective, step η/2, penalty 2λ == ista_step(η, λ)",
    step_paper,
    cr.ista_step(Z, X, D_true, eta, lam),
    atol=1e-12,
)
step_wrong = F.relu(Z - (eta / 2) * grad_paper - (eta / 2) * lam)
gap = (step_wrong - cr.ista_step(Z, X, D_true, eta, lam)).abs().max().item()
check("…and with penalty λ it differs", gap > 1e-3, f"max |difference| = {gap:.3f}")

# %% [markdown]
# ## 3. The proximal operator: a non-negative soft threshold
#
# Proximal gradient methods handle the non-smooth part g through its **proximal operator**
#
# $$\operatorname{prox}_{t}(V) = \arg\min_{Z \ge 0}\; t\|Z\|_1 + \tfrac12\|Z - V\|_F^2 .$$
#
# The objective is a sum over entries, so it splits into one-dimensional problems
# $\min_{z \ge 0}\, t z + \tfrac12 (z - v)^2$ (for z ≥ 0, |z| = z). On z > 0 the derivative is
# $t + z - v$, zero at z = v − t; that point is feasible only if v > t. Otherwise the derivative is
# positive on all of z > 0 and the minimum sits at the boundary z = 0. Together:
#
# $$\operatorname{prox}_{t}(v) = \max(v - t,\, 0) = \mathrm{ReLU}(v - t).$$
#
# Without the constraint the answer would be the two-sided soft threshold
# $\operatorname{sign}(v)\max(|v| - t, 0)$; the constraint cuts off its negative branch.
# Check: brute-force minimisation of the 1-D objective on a fine grid gives the same map.

# %%
t = 0.3
v = torch.linspace(-1.5, 1.5, 61, dtype=F64)  # points where we evaluate the prox
z_grid = torch.linspace(0.0, 2.0, 20_001, dtype=F64)  # candidate minimisers, spacing 1e-4
objective_1d = t * z_grid[None, :] + 0.5 * (z_grid[None, :] - v[:, None]) ** 2  # (61, 20001)
prox_brute = z_grid[objective_1d.argmin(dim=1)]  # (61,)
check_close("ReLU(v − t) vs grid minimisation", cr.soft_threshold_nonneg(v, t), prox_brute, atol=1e-4)
check_close(
    "soft_threshold_nonneg(v, t) == ReLU(v − t)", cr.soft_threshold_nonneg(v, t), F.relu(v - t), atol=1e-15
)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
ax = axes[0]
ax.plot(v, v, ":", color="gray", label="identity (no penalty)")
ax.plot(v, torch.sign(v) * F.relu(v.abs() - t), "--", label="two-sided soft threshold (Z free)")
ax.plot(v, cr.soft_threshold_nonneg(v, t), lw=2.5, label="ReLU(v − t)  (Z ≥ 0)")
ax.plot(v[::4], prox_brute[::4], "k.", ms=7, label="grid minimiser")
ax.set(title=f"Proximal maps of t‖z‖₁, t = {t}", xlabel="input v", ylabel="prox(v)")
ax.legend(fontsize=8)
ax = axes[1]
for v0 in (-0.5, 0.2, 0.8, 1.3):
    h1d = t * z_grid + 0.5 * (z_grid - v0) ** 2
    (line,) = ax.plot(z_grid, h1d, label=f"v = {v0}")
    z_star = max(v0 - t, 0.0)
    ax.plot([z_star], [t * z_star + 0.5 * (z_star - v0) ** 2], "o", color=line.get_color())
ax.set(title="1-D objective t z + ½(z − v)², z ≥ 0; dots: ReLU(v − t)", xlabel="z", ylabel="objective")
ax.set_xlim(0, 1.6)
ax.set_ylim(0, 1.2)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. ISTA: proximal gradient descent, and its step size
#
# A proximal-gradient step takes a gradient step on the smooth part f and then applies the prox
# of the non-smooth part g with the same step size η:
#
# $$Z^{+} = \operatorname{prox}_{\eta\lambda}\!\big(Z - \eta\nabla f(Z)\big)
#        = \mathrm{ReLU}\!\big(Z + \eta D^\top (X - DZ) - \eta\lambda\mathbf 1\big).$$
#
# This is the update of eqs. 16–17; repeating it is ISTA. First the update written inline,
# checked against `crate_edu`:

# %%
eta, lam = 0.1, 0.1
Z0 = torch.rand(N, m, generator=g, dtype=F64)
Z1_inline = F.relu(Z0 + eta * (X - Z0 @ D_true.T) @ D_true - eta * lam)  # rows form of the update
check_close("inline ISTA step == cr.ista_step", Z1_inline, cr.ista_step(Z0, X, D_true, eta, lam), atol=1e-12)

# %% [markdown]
# **Step size.** The gradient of f is Lipschitz with constant $L = \|D^\top D\|_2 = \|D\|_2^2$
# (the largest squared singular value of D), so
# $f(Y) \le f(Z) + \langle \nabla f(Z), Y - Z\rangle + \tfrac L2\|Y - Z\|^2$. The prox step means
# $(Z - \eta\nabla f(Z) - Z^+)/\eta$ is a subgradient of g at $Z^+$, and convexity of g gives
# $g(Z^+) \le g(Z) + \langle \nabla f(Z), Z - Z^+\rangle - \tfrac1\eta\|Z^+ - Z\|^2$. Adding the two:
#
# $$F(Z^+) \;\le\; F(Z) - \Big(\frac1\eta - \frac L2\Big)\,\|Z^+ - Z\|_F^2 .$$
#
# - For **η < 2/L** every step from a feasible Z decreases F (monotone descent).
# - For **η ≤ 1/L** — the classical ISTA condition; `max_step_size(D)` returns 1/‖D‖₂² — the
#   decrease is at least $\tfrac1{2\eta}\|Z^+-Z\|^2$ and the error has the bound
#   $F(Z_t) - F^\star \le \|Z_0 - Z^\star\|_F^2 / (2\eta t)$ (Beck & Teboulle, 2009).
# - Beyond 2/L nothing is guaranteed.
#
# Checks on our problem, starting from Z₀ = 0: `max_step_size` is 1/σ_max(D)²; at η = 1/L the
# objective falls at every step by at least the guaranteed amount; and the 1/t bound holds.

# %%
L_D = 1.0 / cr.max_step_size(D_true).item()
sigma_max = torch.linalg.svdvals(D_true)[0].item()
check_close("max_step_size(D) = 1/σ_max(D)²", 1.0 / L_D, 1.0 / sigma_max**2, atol=1e-12)
print(f"L = ‖D*‖₂² = {L_D:.3f},  1/L = {1 / L_D:.3f}")

steps_star = choose(quick=1500, full=4000)
Z_star, hist_star = cr.ista_solve(X, D_true, 1.0 / L_D, lam, steps=steps_star, return_history=True)
F_star = hist_star[-1].item()
grad_star = (X - Z_star @ D_true.T) @ D_true  # −∇f at the solution
kkt = torch.where(Z_star > 0, (grad_star - lam).abs(), F.relu(grad_star - lam)).max().item()
check(
    "Z* is optimal (KKT: D^T(X − DZ*) = λ where Z* > 0, ≤ λ where Z* = 0)",
    kkt < 1e-6,
    "worst violation < 1e-6",
)
print(f"F* = {F_star:.4f}")

T = 200
for c in (1.0, 1.9):  # η = c / L
    Zt, ok_decrease = torch.zeros(N, m, dtype=F64), True
    for _ in range(T):
        Zn = cr.ista_step(Zt, X, D_true, c / L_D, lam)
        guaranteed = (L_D / c - L_D / 2) * (Zn - Zt).pow(2).sum()  # (1/η − L/2)‖Z⁺ − Z‖²
        drop = cr.lasso_objective(Zt, X, D_true, lam) - cr.lasso_objective(Zn, X, D_true, lam)
        ok_decrease &= bool(drop >= guaranteed - 1e-9)
        Zt = Zn
    check(f"η = {c}/L: each step lowers F by ≥ (1/η − L/2)‖Z⁺ − Z‖²", ok_decrease, f"{T} steps")

_, hist = cr.ista_solve(X, D_true, 1.0 / L_D, lam, steps=T, return_history=True)
ts = torch.arange(1, T + 1, dtype=F64)
bound = Z_star.pow(2).sum() / (2 * (1.0 / L_D) * ts)  # ‖Z0 − Z*‖² / (2ηt) with Z0 = 0
within_bound = bool((hist[1:] - F_star <= bound).all())
check("η = 1/L: F(Z_t) − F* ≤ ‖Z₀ − Z*‖²/(2ηt) for t = 1…200", within_bound)

# %% [markdown]
# Now break the condition. On this problem ISTA still converges at η = 2.5/L — the ReLU cuts off
# the coordinates that would overshoot, which the worst-case analysis does not count on — but at
# η = 3/L it makes progress for a few steps, then the iterates overshoot back and forth with
# growing amplitude (the objective climbs in a two-step rhythm) and diverge.

# %%
factors = (0.5, 1.0, 2.0, 2.5, 3.0)
T_div = choose(quick=120, full=200)
histories, distances = {}, {}
for c in factors:
    Zt, F_list, dist = torch.zeros(N, m, dtype=F64), [], []
    for _ in range(T_div + 1):
        F_list.append(cr.lasso_objective(Zt, X, D_true, lam).item())
        dist.append(((Zt - Z_star).norm() / Z_star.norm()).item())
        Zt = cr.ista_step(Zt, X, D_true, c / L_D, lam)
    histories[c], distances[c] = torch.tensor(F_list, dtype=F64), torch.tensor(dist, dtype=F64)

for c in factors:
    Fh = histories[c]
    monotone = bool((Fh[1:] <= Fh[:-1] + 1e-9).all())
    gap_end = Fh[-1].item() - F_star
    # round-off-proof text: "converged" below 1e-9, "diverged" above 1e6
    gap_txt = "< 1e-9" if gap_end < 1e-9 else "> 1e6 (diverged)" if gap_end > 1e6 else f"= {gap_end:.3e}"
    print(f"η = {c:3.1f}/L: F(Z_0) = {Fh[0]:7.1f}, F(Z_{T_div}) − F* {gap_txt}, monotone: {monotone}")
check(
    "η ≤ 2.5/L converges here; η = 3/L diverges",
    all(histories[c][-1] - F_star < 1e-3 for c in factors[:4]) and histories[3.0][-1] > histories[3.0][0],
)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for c in factors:
    gap_c = (histories[c] - F_star).clamp_min(1e-12)
    axes[0].semilogy(gap_c, label=f"η = {c}/L")
    axes[1].semilogy(distances[c], label=f"η = {c}/L")
axes[0].set(
    title="ISTA objective gap vs step size",
    xlabel="iteration t",
    ylabel="F(Z_t) − F*  (squared signal units)",
    ylim=(1e-10, 1e6),
)
axes[1].set(
    title="Distance to the solution",
    xlabel="iteration t",
    ylabel="‖Z_t − Z*‖ / ‖Z*‖  (relative)",
    ylim=(1e-8, 1e4),
)
for ax in axes:
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. The CRATE ISTA block: one step, warm-started at the input
#
# In a CRATE layer the signal is the normalised stream $x = \mathrm{LN}(Z^{\ell+1/2})$, the
# dictionary D is a learned d × d matrix (parameter `weight`, Kaiming-uniform initialisation),
# η = λ = 0.1 (λ = 0.5 in the CRATE-MAE encoder), and the block takes **a single ISTA step,
# warm-started at Z = x**:
#
# $$\mathrm{ISTA}(x \mid D) = \mathrm{ReLU}\big(x + \eta D^\top (x - Dx) - \eta\lambda\mathbf 1\big).$$
#
# Its output *replaces* the stream: there is no residual around it (official `model/crate.py`). Two remarks:
#
# - The warm start x is usually **not feasible** (LayerNorm outputs are half negative). The descent
#   guarantee of section 4 only starts from the first iterate; the first step is as much a
#   projection onto Z ≥ 0 as it is descent.
# - The official code computes the three products $Dx$, $D^\top(Dx)$ and $D^\top x$ for every
#   token: the reference path, `ISTA(..., reference=True)`. Since $D^\top x - D^\top D x = D^\top (x - Dx)$,
#   two suffice (`fast.ista_two_matmuls`). And the step before the ReLU is *affine* in x, so it
#   folds into one matrix, $x + \eta D^\top(x - Dx) = (I + \eta D^\top - \eta D^\top D)\,x$: one
#   product per token, plus $O(d^3)$ once per batch to form the matrix (`fast.ista_folded`).
#   The fast path (the default, `crate_edu.models.fast.ista_step`) folds whenever the batch has at
#   least $2d$ tokens.
#
# Checks: the block equals `ista_step(x, x, D)` (the warm start), equals the inline formula, and
# the three forms agree (float64: to 1e-12; float32: to 1e-5).

# %%
torch.manual_seed(0)
x = torch.randn(N, d, generator=g, dtype=F64)  # stand-in for LN(Z^{ℓ+½}), tokens as rows
block = ISTA(d, eta=0.1, lambd=0.1).double()  # fast path (here: folded, one matmul per token)
D_blk = block.weight.detach()
with torch.no_grad():
    out = block(x)
check_close(
    "ISTA block == ista_step(x, x, D)  (warm start Z = X)",
    out,
    cr.ista_step(x, x, D_blk, 0.1, 0.1),
    atol=1e-12,
)
inline = F.relu(x + 0.1 * (x - x @ D_blk.T) @ D_blk - 0.1 * 0.1)  # ReLU(x + η D^T(x − Dx) − ηλ)
check_close("ISTA block == ReLU(x + ηD^T(x − Dx) − ηλ)", out, inline, atol=1e-12)

reference = ISTA(d, eta=0.1, lambd=0.1, reference=True).double()  # the official arithmetic
reference.load_state_dict(block.state_dict())
with torch.no_grad():
    official = reference(x)  # three matmuls per token
    folded = fast.ista_folded(x, block.weight, block.eta, block.lambd)  # one matmul per token
    two_matmuls = fast.ista_two_matmuls(x, block.weight, block.eta, block.lambd)
    check_close("folded (1 matmul) == official, float64", folded, official, atol=1e-12)
    check_close("two matmuls == official, float64", two_matmuls, official, atol=1e-12)
    block32, reference32 = block.float(), reference.float()
    check_close("fast == reference, float32", block32(x.float()), reference32(x.float()), atol=1e-5)
block = block.double()

# %% [markdown]
# One detail of the fold matters in float32. The matrix $I + \eta D^\top - \eta D^\top D$ has
# entries near 1 on its diagonal, so storing it rounds the small update $\eta(D^\top - D^\top D)$
# at the scale of 1. The package keeps $I$ out: it forms $A = \eta(D^\top - D^\top D)$ and
# computes $x + xA^\top$ in one fused `addmm` (`fast.folded_ista_matrix`). Measured against float64,
# on LayerNorm-like tokens at CRATE-T's width:

# %%
torch.manual_seed(0)
d_t = 384
blk = ISTA(d_t, eta=0.1, lambd=0.0, reference=True)  # the reference path: three matmuls per token
x_t = F.layer_norm(torch.randn(2 * d_t, d_t), (d_t,))  # 2d tokens: the fast path folds
with torch.no_grad():
    exact = blk.double()(x_t.double())
    blk.float()
    D_t = blk.weight
    forms = {
        "reference (3 matmuls)": blk(x_t),
        "folded, I kept apart (package)": fast.ista_folded(x_t, D_t, blk.eta, blk.lambd),
        "folded with I in the matrix": F.relu(x_t @ (torch.eye(d_t) + 0.1 * D_t.T - 0.1 * D_t.T @ D_t).T),
    }
    rel_err = {k: ((v.double() - exact).abs().mean() / exact.abs().mean()).item() for k, v in forms.items()}
ref_err = rel_err["reference (3 matmuls)"]
for form_name, form_err in rel_err.items():
    print(f"{form_name:32s} mean error {form_err / ref_err:.1f}× the reference path's")
check(
    "keeping I apart rounds like the reference path",
    rel_err["folded, I kept apart (package)"] < 1.4 * ref_err,
)
check(
    "I inside the matrix costs more than 1.7× the error",
    rel_err["folded with I in the matrix"] > 1.7 * ref_err,
)

# %% [markdown]
# The difference is small, but a ReLU whose input sits within rounding of zero can flip, and a
# flipped ReLU moves a gradient entry by one token's share: with $I$ in the matrix, a single such
# flip in a 576-wide model once moved a weight gradient by 1 % of its largest entry (which is why
# the package keeps $I$ apart).

# %% [markdown]
# Is the official η = 0.1 a safe step for the official initialisation? `kaiming_uniform_` on a
# d × d weight draws entries from U(−√(6/d), √(6/d)) (variance 2/d), so ‖D‖₂ ≈ 2√2 and
# 1/‖D‖₂² ≈ 0.125 at every width: just above 0.1. At the widths of CRATE-T/S/B/L:

# %%
for width in choose(quick=(384, 768), full=(384, 576, 768, 1024)):
    torch.manual_seed(0)
    eta_max = cr.max_step_size(ISTA(width).weight.detach().double()).item()
    check(f"d = {width}: η = 0.1 ≤ 1/‖D‖₂² at initialisation", eta_max >= 0.1, f"1/‖D‖₂² = {eta_max:.3f}")

# %% [markdown]
# Training is free to grow D, and nothing in the official code keeps η ≤ 1/‖D‖₂² afterwards; with
# a single step per layer, descent on the LASSO objective is not what training optimises anyway.
#
# ## 6. One step versus running ISTA to convergence
#
# How far does one step get? Take the ground-truth problem of section 1 with the true dictionary
# D*, and follow the sparsity (fraction of non-zero codes) and the reconstruction error
# ‖X − DZ‖/‖X‖ along the iterations: from the CRATE warm start Z₀ = X and from Z₀ = 0, with the
# official η = 0.1 and with η = 1/L.


# %%
def code_error(Z):
    """Relative distance to the true codes, ‖Z − A*‖ / ‖A*‖."""
    return ((Z - A_true).norm() / A_true.norm()).item()


step_counts = [0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500] + ([] if QUICK else [1000, 2000])
runs = {
    ("x", 0.1): "Z₀ = X, η = 0.1 (CRATE)",
    ("x", 1 / L_D): "Z₀ = X, η = 1/L",
    ("zeros", 0.1): "Z₀ = 0, η = 0.1",
    ("zeros", 1 / L_D): "Z₀ = 0, η = 1/L",
}
curves = {}
for (init, eta_r), name in runs.items():
    Zt = X.clone() if init == "x" else torch.zeros(N, m, dtype=F64)
    nnz, err, code_err, done = [], [], [], 0
    for s in step_counts:
        Zt = cr.ista_solve(X, D_true, eta_r, lam, steps=s - done, init=Zt)
        done = s
        nnz.append(cr.fraction_nonzero(Zt).item())
        err.append(cr.reconstruction_error(X, Zt, D_true).item())
        code_err.append(code_error(Zt))
    curves[name] = (nnz, err, code_err)

head = f"{'run':26s} {'nnz 1 step':>10s} {'err 1 step':>10s} {'nnz last':>9s} {'err last':>9s}"
print(f"{head} {'‖Z−A*‖/‖A*‖':>12s}")
for name, (nnz, err, code_err) in curves.items():
    print(f"{name:26s} {nnz[1]:10.3f} {err[1]:10.3f} {nnz[-1]:9.3f} {err[-1]:9.3f} {code_err[-1]:12.3f}")
nnz_star, err_star = cr.fraction_nonzero(Z_star).item(), cr.reconstruction_error(X, Z_star, D_true).item()
print(f"{'solution Z*':48s} {nnz_star:9.3f} {err_star:9.3f} {code_error(Z_star):12.3f}")

crate_1 = cr.ista_step(X, X, D_true, 0.1, lam)  # the CRATE block on this problem
nnz_1, err_1 = cr.fraction_nonzero(crate_1).item(), cr.reconstruction_error(X, crate_1, D_true).item()
check(
    "one CRATE step is far from the LASSO solution",
    nnz_1 > 3 * nnz_star and err_1 > 5 * err_star,
    f"non-zeros {nnz_1:.3f} vs {nnz_star:.3f}, error {err_1:.3f} vs {err_star:.3f}",
)
check("the converged codes recover A* to within 15 %", code_error(Z_star) < 0.15)

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
xs = [max(s, 0.5) for s in step_counts]  # put step 0 at 0.5 on the log axis
for name, (nnz, err, code_err) in curves.items():
    style = dict(marker="o", ms=3, lw=2.5 if "CRATE" in name else 1.2)
    axes[0].semilogx(xs, nnz, label=name, **style)
    axes[1].semilogx(xs, err, label=name, **style)
    axes[2].semilogx(xs, code_err, label=name, **style)
axes[0].axhline(k / m, color="k", ls=":", label="A* (k/m)")
for ax in axes:
    ax.axvline(1, color="gray", lw=0.8)
axes[0].set(
    title="Sparsity along ISTA", xlabel="ISTA steps (0 plotted at 0.5)", ylabel="fraction of non-zero codes"
)
axes[1].set(
    title="Reconstruction error along ISTA",
    xlabel="ISTA steps (0 plotted at 0.5)",
    ylabel="‖X − DZ‖ / ‖X‖  (relative)",
)
axes[2].set(
    title="Distance to the true codes",
    xlabel="ISTA steps (0 plotted at 0.5)",
    ylabel="‖Z − A*‖ / ‖A*‖  (relative)",
)
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# One step at CRATE's η = 0.1 keeps about half of the entries (whatever was positive in x, nudged)
# and reconstructs X no better than the zero code would (relative error ≈ 1); the LASSO solution
# needs tens to hundreds of steps. So the CRATE block is **not a sparse-coding solver**: it is one
# unrolled iteration whose dictionary is *trained*, in the spirit of learned ISTA (LISTA, Gregor &
# LeCun 2010). Depth supplies more iterations — but on a signal that MSSA changes between them,
# so the stack is not ISTA run L times on one problem either.
#
# The converged codes sit about 10 % (relative) from A*: the ℓ₁ penalty shrinks the active
# coefficients, roughly by λ each, the well-known bias of the LASSO.
#
# ## 7. How λ and η shape the code
#
# λ sets the price of a non-zero; η sets how far one step moves. Sweep each, for the CRATE step
# (one step from X) and for ISTA run further.

# %%
lams = torch.logspace(-2.5, 0, choose(quick=8, full=16), dtype=F64).tolist()
steps_conv = choose(quick=600, full=2000)
sweep_lam = {"one CRATE step (Z₀ = X, η = 0.1)": [], "converged (η = 1/L)": []}
l1_conv, fit_conv = [], []
for lam_i in lams:
    Z1 = cr.ista_step(X, X, D_true, 0.1, lam_i)
    Zc = cr.ista_solve(X, D_true, 1 / L_D, lam_i, steps=steps_conv)
    sweep_lam["one CRATE step (Z₀ = X, η = 0.1)"].append(
        (cr.fraction_nonzero(Z1).item(), cr.reconstruction_error(X, Z1, D_true).item())
    )
    sweep_lam["converged (η = 1/L)"].append(
        (cr.fraction_nonzero(Zc).item(), cr.reconstruction_error(X, Zc, D_true).item())
    )
    l1_conv.append(cr.l1_norm(Zc).item())
    fit_conv.append((X - Zc @ D_true.T).norm().item())

etas_over_L = torch.linspace(0.05, 2.5, choose(quick=10, full=25), dtype=F64).tolist()
sweep_eta = {1: [], 10: [], 100: []}
for c in etas_over_L:
    for s in sweep_eta:
        Zs = cr.ista_solve(X, D_true, c / L_D, 0.1, steps=s, init="x")
        sweep_eta[s].append((cr.fraction_nonzero(Zs).item(), cr.reconstruction_error(X, Zs, D_true).item()))

# The LASSO path: as λ grows, ‖Z*‖₁ can only fall and the fit ‖X − DZ*‖ can only grow.
check("converged ‖Z‖₁ is non-increasing in λ", all(b <= a + 1e-6 for a, b in zip(l1_conv, l1_conv[1:])))
check("converged ‖X − DZ‖ is non-decreasing in λ", all(b >= a - 1e-6 for a, b in zip(fit_conv, fit_conv[1:])))

# %%
fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
for name, vals in sweep_lam.items():
    axes[0].semilogx(lams, [v[0] for v in vals], "o-", ms=3, label=name)
    axes[1].semilogx(lams, [v[1] for v in vals], "o-", ms=3, label=name)
for s, vals in sweep_eta.items():
    axes[2].plot(
        etas_over_L, [v[0] for v in vals], "o-", ms=3, label=f"{s} step{'s' if s > 1 else ''} from X"
    )
    axes[3].plot(
        etas_over_L, [v[1] for v in vals], "o-", ms=3, label=f"{s} step{'s' if s > 1 else ''} from X"
    )
axes[0].axhline(k / m, color="k", ls=":", label="A*")
axes[0].set(
    title="Sparsity vs λ", xlabel="λ  (penalty per unit of code)", ylabel="fraction of non-zero codes"
)
axes[1].set(
    title="Reconstruction error vs λ", xlabel="λ  (penalty per unit of code)", ylabel="‖X − DZ‖ / ‖X‖"
)
axes[2].set(
    title="Sparsity vs η  (λ = 0.1)",
    xlabel="η · L  (step in units of 1/‖D‖₂²)",
    ylabel="fraction of non-zero codes",
)
axes[3].set(
    title="Reconstruction error vs η  (λ = 0.1)",
    xlabel="η · L  (step in units of 1/‖D‖₂²)",
    ylabel="‖X − DZ‖ / ‖X‖",
)
for ax in axes:
    ax.legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# At convergence λ trades sparsity against fit (left pair); η does not change the solution, only
# how quickly it is reached, so after 100 steps the curves flatten for every η large enough to
# get there (right pair). A single step is dominated by the warm start: its sparsity comes mostly
# from the ReLU cutting the negative half of x, and λ matters only once ηλ is comparable to the
# entries of x.
#
# ### Try it: sliders for λ and η
#
# `explore` runs ISTA on the ground-truth problem and shows the objective gap and the codes of the
# first 20 tokens next to the truth, after one CRATE step and after `steps` steps. It is called
# once with the defaults so that the static notebook shows a figure; the sliders below redraw it.


# %%
def explore(lam=0.1, eta_over_L=1.0, steps=100):
    eta_e = eta_over_L / L_D
    Zs, hist_e = cr.ista_solve(X, D_true, eta_e, lam, steps=steps, init="x", return_history=True)
    Z_1 = cr.ista_step(X, X, D_true, eta_e, lam)
    _, hist_ref = cr.ista_solve(X, D_true, 1 / L_D, lam, steps=steps_conv, return_history=True)
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8), gridspec_kw=dict(width_ratios=[1.3, 1, 1, 1]))
    axes[0].semilogy((hist_e[1:] - hist_ref[-1]).clamp_min(1e-12))
    axes[0].set(
        title=f"objective gap, η = {eta_over_L:.2f}/L, λ = {lam:.3f}",
        xlabel="iteration t",
        ylabel="F(Z_t) − F*  (squared signal units)",
    )
    vmax = A_true[:20].max().item()
    for ax, (Zshow, name) in zip(
        axes[1:], [(A_true, "true codes A*"), (Z_1, "after 1 step from X"), (Zs, f"after {steps} steps")]
    ):
        ax.imshow(Zshow[:20].T, aspect="auto", cmap="magma", vmin=0, vmax=vmax)
        nz = cr.fraction_nonzero(Zshow).item()
        err_s = cr.reconstruction_error(X, Zshow, D_true).item()
        ax.set(title=f"{name}\nnon-zeros {nz:.2f}, error {err_s:.2f}", xlabel="token", ylabel="atom")
    plt.tight_layout()
    plt.show()


explore()

# %%
# NBVAL_IGNORE_OUTPUT
try:
    from ipywidgets import FloatLogSlider, FloatSlider, IntSlider, interact
except ImportError:
    print("install ipywidgets for the sliders (pip install ipywidgets); the figure above shows the defaults")
else:
    interact(
        explore,
        lam=FloatLogSlider(
            value=0.1, base=10, min=-3, max=0.5, step=0.1, description="λ", continuous_update=False
        ),
        eta_over_L=FloatSlider(
            value=1.0, min=0.05, max=3.2, step=0.05, description="η · L", continuous_update=False
        ),
        steps=IntSlider(value=100, min=1, max=1000, step=1, description="steps", continuous_update=False),
    )

# %% [markdown]
# ## 8. Real-ish data: complete vs overcomplete dictionaries on digit patches
#
# Synthetic data was generated to be sparse in D*. Real signals are not, and the dictionary is not
# given. Take 4 × 4 patches of the scikit-learn handwritten digits (they ship with the package: no
# download), drop the blank ones, and standardise each patch to zero mean and unit variance — what
# a LayerNorm without affine parameters does to a token. Then code them with
#
# - a **complete** dictionary: d = 16 atoms in ℝ¹⁶ (CRATE's square D), and
# - an **overcomplete** one: 4d = 64 atoms (CRATE-α's D ∈ ℝ^{d×4d}),
#
# both random Gaussian with unit-norm atoms, as a network's dictionaries are before training.
#
# **Why non-negativity makes overcompleteness matter.** With a complete, invertible D, a signal x
# has exactly one code $D^{-1}x$; non-negative codes reach only the cone where $D^{-1}x \ge 0$. For
# a random Gaussian D, flipping the sign of any atom leaves its distribution unchanged, so the 2^d
# sign patterns of $D^{-1}x$ are equally likely: **the cone holds a fraction 2^{-d} of all
# directions** — 1 in 65,536 for d = 16. Check with d = 4 by sampling:

# %%
g_cone = torch.Generator().manual_seed(1)
d_small, trials = 4, 20_000
D_c = torch.randn(trials, d_small, d_small, generator=g_cone, dtype=F64)  # one random dictionary per trial
x_c = torch.randn(trials, d_small, 1, generator=g_cone, dtype=F64)  # one random signal per trial
frac = (torch.linalg.solve(D_c, x_c) >= 0).all(dim=1).to(F64).mean().item()  # is D^{-1}x ≥ 0?
se = math.sqrt(2**-d_small * (1 - 2**-d_small) / trials)  # binomial standard error
check(
    f"P(x in the cone of {d_small} random atoms) ≈ 2^-{d_small} = {2**-d_small:.4f}",
    abs(frac - 2**-d_small) < 4 * se,
    f"measured {frac:.4f}, standard error {se:.4f}",
)

# %% [markdown]
# So a complete non-negative code can only *approximate* almost every signal; more atoms cover
# more directions. Now measure it: converged ISTA (η = 1/L) over a sweep of λ, plotting the
# reconstruction error against the number of active atoms per patch.

# %%
digits = torch.tensor(load_digits().images, dtype=F64)  # (1797, 8, 8), values 0…16
n_img = choose(quick=120, full=400)
patches = digits[:n_img].unfold(1, 4, 2).unfold(2, 4, 2).reshape(-1, 16)  # 9 patches per image
patches = patches[patches.std(dim=1) > 1.0]  # drop (nearly) blank patches
Xp = (patches - patches.mean(1, keepdim=True)) / patches.std(1, keepdim=True, unbiased=False)
print(f"digit patches: {tuple(Xp.shape)} (tokens × pixels), each standardised")

g_dict = torch.Generator().manual_seed(2)
dp = Xp.shape[1]


def unit_columns(M):
    return M / M.norm(dim=0, keepdim=True)


dicts = {
    "complete, d×d": unit_columns(torch.randn(dp, dp, generator=g_dict, dtype=F64)),
    "overcomplete, d×4d": unit_columns(torch.randn(dp, 4 * dp, generator=g_dict, dtype=F64)),
}
lams_p = torch.logspace(-2, 0, choose(quick=4, full=8), dtype=F64).tolist()
steps_p = choose(quick=300, full=1000)
pareto = {}
for name, Dd in dicts.items():
    pts = []
    for lam_i in lams_p:
        Zp_ = cr.ista_solve(Xp, Dd, cr.max_step_size(Dd).item(), lam_i, steps=steps_p)
        pts.append((nonzeros_per_token(Zp_), cr.reconstruction_error(Xp, Zp_, Dd).item()))
    pareto[name] = pts
    for lam_i, (nz, err_i) in zip(lams_p, pts):
        print(f"{name:19s} λ = {lam_i:.3f}: {nz:5.2f} active atoms per patch, error {err_i:.3f}")
check(
    "the overcomplete dictionary reconstructs better at every λ",
    all(o[1] < c[1] for o, c in zip(pareto["overcomplete, d×4d"], pareto["complete, d×d"])),
)

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
for name, pts in pareto.items():
    ax.plot(
        [p[0] for p in pts],
        [p[1] for p in pts],
        "o-" if "overcomplete" in name else "s--",
        label=f"random {name}",
    )
ax.set(
    title="Digit patches (d = 16): converged non-negative ISTA, λ from 0.01 to 1",
    xlabel="active atoms per patch (mean count)",
    ylabel="‖X − DZ‖ / ‖X‖  (relative)",
)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The complete dictionary never gets below an error of about 0.74, whatever λ: lowering the
# penalty stops helping once about 7 of its 16 atoms are active, because most patches lie outside
# its cone. The overcomplete dictionary can trade sparsity for fit all the way down to a few per
# cent. Honest caveat: random atoms are not adapted to digits, so it gets there with *many* active
# atoms (more than d = 16 at small λ), and at equal counts of about 6 active atoms the two
# dictionaries fit about equally badly. A dictionary trained on the patches needs far fewer
# (exercise 4); CRATE-α trains its D.
#
# ## 9. CRATE-α: an overcomplete dictionary, two steps from zero, a separate decoder
#
# CRATE-α (arXiv 2405.20299) rebuilds the sparse-coding block in three ways. With
# $X = \mathrm{LN}(Z^{\ell+1/2})$ (LayerNorm eps 1e-6), D, D₁ ∈ ℝ^{d×4d} and η = λ = 0.1:
#
# $$A_1 = \mathrm{ReLU}(\eta D^\top X - \eta\lambda), \qquad
#   A_2 = \mathrm{ReLU}\big(A_1 - \eta D^\top (D A_1 - X) - \eta\lambda\big), \qquad
#   Z^{\ell+1} = Z^{\ell+1/2} + D_1 A_2 .$$
#
# 1. **Overcomplete**: the codes live in ℝ^{4d}, not in the stream's ℝ^d (section 8's cone).
# 2. **Two ISTA steps from A₀ = 0** instead of one from X (A₁ is exactly the ISTA step from 0;
#    A₀ = 0 is feasible, so both steps are descent steps when η ≤ 1/‖D‖₂²).
# 3. **A decoupled decoder D₁ and a residual**: the codes are mapped back by a second learned
#    dictionary and *added* to the stream.
#
# Checks: the block's codes are two `ista_step`s from zero, its output is D₁A₂, the first step is
# the inline formula, and the fast and reference (official einsum) paths agree.

# %%
torch.manual_seed(0)
oc = OvercompleteISTA(dp, overcomplete_ratio=4, eta=0.1, lambd=0.1).double()
D_oc, D1_oc = oc.D.detach(), oc.D1.detach()
xa = Xp[None, :200]  # (1, N, d): the official einsums expect a batch dimension
with torch.no_grad():
    A2_block, out_block = oc.forward_parts(xa)  # the codes A2 and the output D1 A2
A1 = cr.ista_step(torch.zeros(xa.shape[0], 4 * dp, dtype=F64), xa, D_oc, 0.1, 0.1)
A2 = cr.ista_step(A1, xa, D_oc, 0.1, 0.1)
check_close("A1 = ista_step(0) == ReLU(ηD^T X − ηλ)", A1, F.relu(0.1 * xa @ D_oc - 0.1 * 0.1), atol=1e-12)
check_close("OvercompleteISTA's codes == two ista_steps from 0", A2_block, A2, atol=1e-12)
check_close("OvercompleteISTA(x) == D1 A2", out_block, A2 @ D1_oc.T, atol=1e-12)
oc_ref = OvercompleteISTA(dp, overcomplete_ratio=4, reference=True).double()
oc_ref.load_state_dict(oc.state_dict())
with torch.no_grad():
    check_close("fast == reference (official einsums)", oc(xa), oc_ref(xa), atol=1e-12)
eta_max_oc = cr.max_step_size(D_oc).item()
check("η = 0.1 ≤ 1/‖D‖₂² for the initial D (d×4d)", 0.1 <= eta_max_oc, f"1/‖D‖₂² = {eta_max_oc:.3f}")

# %% [markdown]
# Two steps from zero with η = 0.1 are, like CRATE's single step, far from a LASSO solution. On
# the digit patches, with the random unit-norm dictionaries of section 8:

# %%
print(f"{'random dictionary':19s} {'steps':>6s} {'non-zeros/patch':>16s} {'fraction':>9s} {'error':>7s}")
errors = {}
for name in ("complete, d×d", "overcomplete, d×4d"):
    Dd = dicts[name]
    for n_steps in (2, steps_p):
        eta_s = 0.1 if n_steps == 2 else cr.max_step_size(Dd).item()  # CRATE-α's η, or 1/L to converge
        Zs = cr.ista_solve(Xp, Dd, eta_s, 0.1, steps=n_steps)
        errors[name, n_steps] = cr.reconstruction_error(Xp, Zs, Dd).item()
        nz, frac_nz = nonzeros_per_token(Zs), cr.fraction_nonzero(Zs).item()
        print(f"{name:19s} {n_steps:6d} {nz:16.2f} {frac_nz:9.3f} {errors[name, n_steps]:7.3f}")
check(
    "two steps reconstruct worse than convergence, for both dictionaries",
    all(errors[name, 2] > errors[name, steps_p] for name in dicts),
)

# %% [markdown]
# The reconstruction through D after two steps is poor — but CRATE-α never reconstructs through D:
# it decodes with the separate, trained D₁, so the two steps only need to produce codes *from
# which D₁ can make a useful update*. That is the decoupling.
#
# ## 10. Why the residual helps
#
# In CRATE the ISTA output **replaces** the stream: every layer must carry all the information the
# later layers need through a ReLU'd code. At initialisation, with η = 0.1, one step adds to x a
# random correction about a third of its size (measured: ‖ηD^T(x − Dx)‖ ≈ 0.32‖x‖ for d = 64)
# and then cuts about half of every token with the ReLU; the next LayerNorm re-centres what is
# left, and the next ReLU cuts again. In CRATE-α the block only **adds a correction**
# $D_1 A_2$ to a stream that passes through untouched, so nothing is lost by construction.
#
# Measure it: stack L randomly initialised blocks of each kind (only the sparse-coding halves, so
# that we see this block's effect alone) on standardised 8 × 8 digit images (d = 64 tokens), and
# after each layer ask how much of the input can still be read out linearly: fit X ≈ Z^ℓ W + b by
# least squares on 1,200 images and report R² on the other 597.

# %%
images = digits.reshape(-1, 64)
X_img = (images - images.mean(1, keepdim=True)) / images.std(1, keepdim=True, unbiased=False)
X_img = X_img[torch.randperm(X_img.shape[0], generator=torch.Generator().manual_seed(3))]
n_fit = 1200


def readout_r2(X_in, Z_out):
    """R² on held-out tokens of the best affine map from the layer output back to the input."""
    Z1 = torch.cat([Z_out, torch.ones(Z_out.shape[0], 1, dtype=Z_out.dtype)], dim=1)
    W = torch.linalg.lstsq(Z1[:n_fit], X_in[:n_fit], driver="gelsd").solution  # SVD: Z1 may be rank-deficient
    resid = X_in[n_fit:] - Z1[n_fit:] @ W
    return 1.0 - (resid.pow(2).sum() / (X_in[n_fit:] - X_in[:n_fit].mean(0)).pow(2).sum()).item()


depth = choose(quick=8, full=24)
torch.manual_seed(0)
crate_stack = [PreNorm(64, ISTA(64, eta=0.1, lambd=0.1)).double() for _ in range(depth)]
alpha_stack = [PreNorm(64, OvercompleteISTA(64, 4, 0.1, 0.1), eps=1e-6).double() for _ in range(depth)]
r2_crate, r2_alpha, nz_crate, norm_alpha = [1.0], [1.0], [cr.fraction_nonzero(X_img).item()], [1.0]
z_c, z_a = X_img, X_img
with torch.no_grad():
    for layer_c, layer_a in zip(crate_stack, alpha_stack):
        z_c = layer_c(z_c)  # CRATE: Z^{ℓ+1} = ISTA(LN(Z))        (replaces the stream)
        z_a = z_a + layer_a(z_a)  # CRATE-α: Z^{ℓ+1} = Z + D1 A2(LN(Z))   (adds a correction)
        r2_crate.append(readout_r2(X_img, z_c))
        r2_alpha.append(readout_r2(X_img, z_a))
        nz_crate.append(cr.fraction_nonzero(z_c).item())
        norm_alpha.append((z_a.norm() / X_img.norm()).item())
for ell in (1, 2, 4, depth):
    print(
        f"after {ell:2d} layers: R² CRATE {r2_crate[ell]:.3f}, CRATE-α {r2_alpha[ell]:.3f};  "
        f"CRATE non-zeros {nz_crate[ell]:.3f};  CRATE-α ‖Z‖/‖X‖ {norm_alpha[ell]:.3f}"
    )
check(
    f"after {depth} layers the residual stack keeps R² > 0.95, the CRATE stack falls below 0.7",
    r2_alpha[-1] > 0.95 and r2_crate[-1] < 0.7,
)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
layers = list(range(depth + 1))
axes[0].plot(layers, r2_alpha, "o-", label="CRATE-α: Z + D₁A₂(LN(Z))  (residual)")
axes[0].plot(layers, r2_crate, "s-", label="CRATE: ISTA(LN(Z))  (replaces the stream)")
axes[0].set(
    title="How much of the input survives (random init)",
    xlabel="layers ℓ",
    ylabel="held-out R² of linear readout of X",
    ylim=(0, 1.05),
)
axes[0].legend(fontsize=8)
axes[1].plot(layers, nz_crate, "s-", color="C1")
axes[1].set(
    title="CRATE stream after ISTA", xlabel="layers ℓ", ylabel="fraction of non-zero entries", ylim=(0, 1.05)
)
plt.tight_layout()
plt.show()

# %% [markdown]
# The CRATE stack loses the input layer by layer; the residual stack keeps almost all of it. This
# is at initialisation: training can learn dictionaries that preserve what matters, and CRATE does
# train to 70.8 % (B) and 71.3 % (L) ImageNet-1K top-1 from scratch (Yu et al., arXiv 2306.01129,
# Table 1). But every layer must first learn not to destroy its input (and CRATE-L gains only 0.5
# points over CRATE-B). With a residual, an untrained block is a small perturbation of the
# identity — the property that lets ResNets and transformers grow deep.
#
# For context (Yang et al., arXiv 2405.20299, Table 1): CRATE-α, pre-trained on ImageNet-21K and
# fine-tuned on ImageNet-1K, reaches **81.2 %** top-1 at B/16 and **83.9 %** at L/14 (B/32 76.5,
# B/8 83.2, L/32 80.2, L/8 85.1). These numbers come with more data and a different recipe as well as the new block, so
# they do not isolate the block's effect; they show that, with the three changes of section 9, the
# white-box design scales with model size.
#
# **Where the official code departs from the derivation** (official `model/crate.py`), for this block: the LASSO
# objective of the paper has no ½ (section 2: the update is a step on the ½-version); the warm
# start Z = x is infeasible for LayerNorm inputs (section 5); η = 0.1 is fixed and nothing keeps it
# below 1/‖D‖₂² once D is trained; CRATE's ISTA output has no residual; the official code computes
# D^T x − D^T D x with three matmuls; CRATE-α decodes with a separate D₁ instead of D.
#
# ## Summary
#
# - The ISTA block solves — for one step — the non-negative LASSO
#   $\min_{Z\ge0}\lambda\|Z\|_1 + \tfrac12\|X-DZ\|_F^2$; the ½ only rescales λ, and the
#   non-negativity turns the proximal map into ReLU(v − ηλ) (checked against a grid search).
# - ISTA = gradient step on the fit + non-negative soft threshold. It descends monotonically for
#   η < 2/‖D‖₂² with the classical rate at η ≤ 1/‖D‖₂²; here it still converged at 2.5/L and
#   diverged at 3/L.
# - CRATE's block is `ista_step(x, x, D)` with η = λ = 0.1: the official code uses three matmuls,
#   two suffice, and folding the affine step into one matrix needs one per token; at Kaiming
#   initialisation 1/‖D‖₂² ≈ 0.125, so η = 0.1 is (just) a safe step.
# - One step is far from the LASSO solution (≈ 50 % non-zeros vs 9 %, error ≈ 1 vs 0.1 on our
#   ground-truth problem): CRATE relies on a trained D, not on solving the problem.
# - Non-negative codes with a complete dictionary reach only a 2^{-d} sliver of directions: on
#   digit patches a random complete dictionary never gets below ≈ 0.74 relative error, while a
#   random d × 4d one can reach a few per cent (with many active atoms; training D makes them few).
# - CRATE-α's block: two ISTA steps from zero on D ∈ ℝ^{d×4d}, decoded by D₁, added to the stream.
#   The residual keeps the input readable through depth: held-out R² of a linear readout 0.99 vs
#   0.61 for CRATE's replacing block after 8 random layers (full mode also prints it after 24).
#
# ## Exercises
#
# 1. Drop the constraint Z ≥ 0. Derive the proximal operator of t|z| and check it against the grid
#    search of section 3.
#
# <details><summary>Solution</summary>
#
# For z > 0 the minimiser of t z + ½(z − v)² is v − t (valid if v > t); for z < 0 it is v + t
# (valid if v < −t); otherwise 0. Together: sign(v)·max(|v| − t, 0).
#
# ```python
# zg = torch.linspace(-2, 2, 40_001, dtype=torch.float64)
# obj = t * zg.abs()[None] + 0.5 * (zg[None] - v[:, None]) ** 2
# check_close("two-sided soft threshold", torch.sign(v) * F.relu(v.abs() - t), zg[obj.argmin(1)], atol=1e-4)
# ```
# </details>
#
# 2. What does the CRATE block compute when D = I? When D = 0? What does that say about what the
#    dictionary contributes to the single step?
#
# <details><summary>Solution</summary>
#
# With D = I, x − Dx = 0, so ISTA(x) = ReLU(x − ηλ). With D = 0 the correction is zero too: the
# same ReLU(x − ηλ). Everything beyond a shifted ReLU comes from ηD^T(x − Dx), a term of size η
# times the reconstruction residual — small at η = 0.1 unless D is far from both.
# </details>
#
# 3. Add momentum (FISTA): $Y_{t} = Z_t + \frac{t-1}{t+2}(Z_t - Z_{t-1})$,
#    $Z_{t+1} = \mathrm{ista\_step}(Y_t)$. Compare F(Z_t) − F* with ISTA at η = 1/L on the
#    ground-truth problem.
#
# <details><summary>Solution</summary>
#
# ```python
# Z_prev = Z_cur = torch.zeros(N, m, dtype=F64)
# gaps = []
# for t_ in range(1, 201):
#     Y = Z_cur + (t_ - 1) / (t_ + 2) * (Z_cur - Z_prev)
#     Z_prev, Z_cur = Z_cur, cr.ista_step(Y, X, D_true, 1 / L_D, lam)
#     gaps.append(cr.lasso_objective(Z_cur, X, D_true, lam).item() - F_star)
# plt.semilogy(gaps, label="FISTA"); plt.semilogy(histories[1.0] - F_star, label="ISTA"); plt.legend()
# ```
# FISTA's worst-case rate is O(1/t²) instead of O(1/t); we measured a gap of about 3e-3 after
# 20 iterations against 0.4 for ISTA. Its objective need not decrease at every step (momentum
# can overshoot).
# </details>
#
# 4. Learn the dictionary for the digit patches: alternate 30 ISTA steps on Z with a least-squares
#    update of D (then renormalise its columns), for 30 rounds, with d × d and d × 4d atoms. Where do
#    the learned dictionaries land on the figure of section 8?
#
# <details><summary>Solution</summary>
#
# ```python
# for m_atoms in (16, 64):
#     Dl = dicts["complete, d×d" if m_atoms == 16 else "overcomplete, d×4d"].clone()
#     Zl = torch.zeros(Xp.shape[0], m_atoms, dtype=F64)
#     for _ in range(30):
#         Zl = cr.ista_solve(Xp, Dl, cr.max_step_size(Dl).item(), 0.1, steps=30, init=Zl)
#         Dl = torch.linalg.solve(Zl.T @ Zl + 1e-3 * torch.eye(m_atoms, dtype=F64), Zl.T @ Xp).T
#         Dl = Dl / Dl.norm(dim=0, keepdim=True).clamp_min(1e-8)
#     Zl = cr.ista_solve(Xp, Dl, cr.max_step_size(Dl).item(), 0.1, steps=500)
#     print(m_atoms, nonzeros_per_token(Zl), cr.reconstruction_error(Xp, Zl, Dl).item())
# ```
# In quick mode we measured, at λ = 0.1, about 10 active atoms per patch and error 0.19 for the
# learned complete dictionary (random: 0.74) and about 13 active atoms and error 0.07 for the
# learned overcomplete one: learning helps both, most of all the complete one, and the
# overcomplete one stays ahead.
# </details>
#
# 5. Repeat the depth experiment of section 10 with full layers (`crate_edu.models.CRATELayer`
#    and `CRATEAlphaLayer`, which add MSSA in front) on tokens shaped (1, N, 64). Does the MSSA
#    residual rescue CRATE?
#
# <details><summary>Solution</summary>
#
# No: in a CRATE layer the MSSA residual is added *before* ISTA, whose output still replaces the
# stream, so each layer still passes everything through a ReLU'd code. We measured R² ≈ 0.55 for
# the CRATE stack and 0.99 for the CRATE-α stack after 8 layers (MSSA also mixes tokens, which
# costs both stacks a little).
#
# ```python
# from crate_edu.models import CRATEAlphaLayer, CRATELayer
# torch.manual_seed(0)
# zc = za = X_img[None]  # (1, N, 64): one "image" of N tokens
# for _ in range(8):
#     zc = CRATELayer(64, 4, 16).double()(zc)
#     za = CRATEAlphaLayer(64, 4, 16).double()(za)
# print(f"R² CRATE {readout_r2(X_img, zc[0].detach()):.2f}, CRATE-α {readout_r2(X_img, za[0].detach()):.2f}")
# ```
# </details>
