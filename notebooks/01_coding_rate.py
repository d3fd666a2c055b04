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
# # 01 · The coding rate: how many ε-balls does your data need?
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/crate-edu/crate_edu/blob/main/notebooks/01_coding_rate.ipynb)
#
# CRATE is built by unrolling the optimisation of one objective, the **sparse rate reduction**
# (eq. 1 of Yu et al., *White-Box Transformers via Sparse Rate Reduction*, arXiv 2306.01129).
# Every term of that objective is a *coding rate*. This notebook builds the coding rate from a
# picture (count the ε-balls that cover the data), computes it on the data CRATE is designed for
# (tokens on a union of low-dimensional subspaces), and takes the objective apart term by term.
#
# ## What you will learn
#
# - Why ½ logdet(I + d/(Nε²) Z Zᵀ) is (the log of) the number of ε-balls that cover a Gaussian
#   cloud, checked on a 2-D picture.
# - The coding rate R (eq. 7) computed three ways (inline, d×d Gram, N×N Gram), all equal.
# - The compression term R^c (eq. 8) and the rate reduction ΔR = R − R^c: with the true
#   subspaces, random ones, a single subspace, overlapping ones — and when ΔR is (and is not) ≥ 0.
# - How R, R^c and ΔR respond to the distortion ε (with the small-ε law R ≈ (rank/2)·log(1/ε²)),
#   to the number of subspaces K and to noise; an interactive control for ε and K.
# - Why the sparse rate reduction asks for compression, expansion (incoherence) and sparsity at
#   once, with a numerical demonstration of each term.
#
# ## Run time
#
# Everything here is a few hundred log-determinants of matrices no larger than 240×240.
#
# Measured on 2026-12-03 on 2 CPU cores shared with other jobs, by `benchmarks/notebooks.py`
# (kernel start included; recorded in `benchmarks/results/notebooks_quick.json` and
# `notebooks_full.json`): wall time, and the kernel's CPU time in brackets, which other jobs
# on the machine disturb less. Other jobs kept up to about one core busy during these runs (the
# JSON files record how busy, per notebook), so an idle machine is faster.
#
# | | quick mode (`CRATE_EDU_QUICK=1`) | full mode |
# |---|---|---|
# | CPU (2 cores) | 5 s (CPU 5 s) | 5 s (CPU 5 s) |
# | GPU | not used: everything here runs on the CPU, so a GPU changes nothing | same |
#
# Quick mode only averages over fewer random seeds (3 instead of 10) and uses a coarser ε grid.

# %%
# On Google Colab, install crate_edu first (elsewhere this cell does nothing).
import subprocess
import sys

REPOSITORY = "https://github.com/crate-edu/crate_edu"  # the same as crate_edu.REPOSITORY
if "google.colab" in sys.modules:
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, f"crate-edu @ git+{REPOSITORY}"], check=True)

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import torch
from ipywidgets import FloatLogSlider, IntSlider, interact
from matplotlib.patches import Circle, Ellipse

from crate_edu import coding_rate as cr
from crate_edu.notebook import QUICK, check, check_close, choose

torch.set_num_threads(1)  # the matrices here are tiny: one thread is the fastest
F64 = torch.float64  # exactness is the point of this notebook: float64 throughout
SEEDS = choose(quick=3, full=10)  # random seeds averaged over in the sweeps
print(f"quick mode: {QUICK}, seeds per sweep: {SEEDS}")

# %% [markdown]
# **Convention.** The paper writes N tokens of width d as the columns of Z ∈ ℝ^{d×N}. The package
# (and the model code) stores them as **rows**, a tensor of shape `(N, d)` — the transpose. So the
# paper's Z Zᵀ (d×d) is `Z.T @ Z` in code, the paper's ZᵀZ (N×N) is `Z @ Z.T`, and the paper's
# U_kᵀZ (p×N) is `Z @ U[k]` of shape `(N, p)`. The K subspace bases are one tensor `U` of shape
# `(K, d, p)`. All rates are in **nats** (natural logarithm); divide by ln 2 for bits.
#
# ## 1. Lossy coding and the ε-ball picture
#
# To store real vectors with finitely many bits we must accept an error. Allow each token z to be
# reproduced up to a squared error ε²; model the error as Gaussian, ẑ = z + w with
# w ~ 𝒩(0, (ε²/d) I), so that 𝔼‖w‖² = ε². Approximate the data itself by a Gaussian with the same
# second moment, Σ = (1/N) Z Zᵀ (paper layout). Then ẑ ~ 𝒩(0, Σ + (ε²/d) I).
#
# A Gaussian vector x ~ 𝒩(0, M) in ℝ^d almost always lands near the ellipsoid
# {x : xᵀ M⁻¹ x ≤ d} (since 𝔼[xᵀM⁻¹x] = d). So the reproduced tokens fill the ellipsoid
# E = {x : xᵀ(Σ + ε²/d I)⁻¹x ≤ d}, while the error alone fills the ball B_ε = {w : ‖w‖ ≤ ε}. The
# number of codewords we need — the number of ε-balls that tile E — is about the volume ratio.
# The volume of {x : xᵀM⁻¹x ≤ r²} is (unit-ball volume)·r^d·√det M, so
#
# $$
# \#\text{balls} \approx \frac{\mathrm{vol}(E)}{\mathrm{vol}(B_\varepsilon)}
# = \frac{\sqrt{\det(\Sigma + \tfrac{\varepsilon^2}{d} I)}}{\sqrt{\det(\tfrac{\varepsilon^2}{d} I)}}
# = \sqrt{\det\!\Big(I + \frac{d}{\varepsilon^2}\Sigma\Big)},
# \qquad
# \log \#\text{balls} \approx \frac12 \log\det\!\Big(I + \frac{d}{N\varepsilon^2} Z Z^\top\Big).
# $$
#
# That log is the **coding rate** R(Z; ε): the nats needed per token to say which ε-ball it falls
# in. (The full coding *length* of Ma et al. (2007) adds the cost of the codebook; CRATE uses the
# per-token rate only.) Note the ellipsoid is the data ellipsoid *enlarged by the ε-ball*: a
# direction in which the data vary much less than ε/√d adds almost nothing to the count.
#
# Here is the picture in d = 2, with ε-sized cells laid out on a hexagonal lattice whose cells
# have the area of one ε-disc, so the number of lattice points inside E estimates the area ratio.

# %%
g = torch.Generator().manual_seed(0)
d2, N2, eps2 = 2, 400, 0.12
theta = math.radians(30.0)
rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=F64)
Z2 = torch.randn(N2, d2, generator=g, dtype=F64) * torch.tensor([1.0, 0.3], dtype=F64) @ rot.T  # (N, 2)

Sigma = Z2.T @ Z2 / N2  # (2, 2) second moment, paper's (1/N) Z Z^T
M = Sigma + eps2**2 / d2 * torch.eye(d2, dtype=F64)  # covariance of the reproduced tokens
evals, evecs = torch.linalg.eigh(M)
semi_axes = (d2 * evals).sqrt()  # E = {x : x^T M^{-1} x <= d}: semi-axes sqrt(d * eigenvalue)
area_ratio = (math.pi * semi_axes.prod() / (math.pi * eps2**2)).item()
R2 = cr.coding_rate(Z2, eps2).item()


def hex_lattice_inside(M: torch.Tensor, d: int, cell_area: float) -> torch.Tensor:
    """Points of a hexagonal lattice (cell area ``cell_area``) inside {x : x^T M^{-1} x <= d}."""
    a = math.sqrt(2 * cell_area / math.sqrt(3))  # hexagonal cell area is (√3/2) a²
    reach = math.sqrt(d * torch.linalg.eigvalsh(M).max().item()) + a
    rows = torch.arange(
        -math.ceil(reach / (a * math.sqrt(3) / 2)), math.ceil(reach / (a * math.sqrt(3) / 2)) + 1
    )
    cols = torch.arange(-math.ceil(reach / a) - 1, math.ceil(reach / a) + 2)
    jj, ii = torch.meshgrid(rows, cols, indexing="ij")
    pts = torch.stack([ii * a + (jj % 2) * a / 2, jj * a * math.sqrt(3) / 2], -1).reshape(-1, 2).to(F64)
    inside = (pts @ torch.linalg.inv(M) * pts).sum(-1) <= d
    return pts[inside]


centres = hex_lattice_inside(M, d2, math.pi * eps2**2)
print(f"R(Z; ε={eps2}) = {R2:.3f} nats = {R2 / math.log(2):.2f} bits;  exp(R) = {math.exp(R2):.1f}")
print(f"area(E) / area(ε-disc) = {area_ratio:.1f};  ε-cells counted inside E: {len(centres)}")

# %%
fig, ax = plt.subplots(figsize=(6.2, 5.2))
ax.scatter(Z2[:, 0], Z2[:, 1], s=5, color="0.45", label=f"N = {N2} tokens")
angle = math.degrees(math.atan2(evecs[1, 1], evecs[0, 1]))
ax.add_patch(
    Ellipse(
        (0, 0),
        2 * semi_axes[1],
        2 * semi_axes[0],
        angle=angle,
        fill=False,
        lw=2,
        color="C0",
        label="E: data ellipsoid enlarged by ε",
    )
)
for c in centres:
    ax.add_patch(Circle(c.tolist(), eps2, fill=False, lw=0.6, color="C1", alpha=0.7))
ax.add_patch(
    Circle(
        (0, 0), eps2, fill=False, lw=0.6, color="C1", label=f"ε-discs (ε = {eps2}), {len(centres)} of them"
    )
)
ax.set_aspect("equal")
ax.set_xlim(-3.2, 3.2)
ax.set_ylim(-2.6, 2.6)
ax.set_xlabel("z₁ (data units)")
ax.set_ylabel("z₂ (data units)")
ax.set_title(f"Coding rate as a count of ε-balls: exp(R) = {math.exp(R2):.1f}, counted {len(centres)}")
ax.legend(loc="lower right", fontsize=8)
plt.show()

# %% [markdown]
# **Check.** exp(R) is *exactly* the area ratio vol(E)/vol(B_ε) (an identity, so to round-off),
# and the lattice count agrees with it up to the lattice's boundary effects (within 10 %).

# %%
check_close("exp(R) = area(E) / area(ε-disc)", math.exp(R2), area_ratio, atol=1e-9)
check(
    "ε-cells inside E ≈ exp(R) (within 10 %)",
    abs(len(centres) / math.exp(R2) - 1) < 0.10,
    f"{len(centres)} cells vs exp(R) = {math.exp(R2):.1f}",
)

# %% [markdown]
# ## 2. The coding rate (eq. 7) and its two Gram forms
#
# The paper states the rate with the N×N Gram (its Z is d×N):
#
# $$
# R(Z;\varepsilon) = \frac12 \log\det\Big(I_N + \frac{d}{N\varepsilon^2} Z^\top Z\Big). \tag{7}
# $$
#
# The picture above produced the d×d Gram Z Zᵀ instead. They are the same number, by Sylvester's
# determinant identity det(I_N + c AᵀA) = det(I_d + c A Aᵀ) (the nonzero eigenvalues of AᵀA and
# AAᵀ coincide). The package computes whichever Gram is smaller (`form="auto"`): a d×d
# log-determinant when N ≥ d, an N×N one otherwise — for a ViT layer (N ≈ 197, d ≈ 384–1024) the
# N×N form is the cheap one.
#
# Let us write eq. 7 literally, in the paper's layout, and compare it with the package on the data
# CRATE is designed for: tokens drawn from a union of K orthogonal p-dimensional subspaces of ℝ^d.
# `union_of_subspaces` draws token i of class k as z_i = U_k a_i with a_i ~ 𝒩(0, I_p/p), so
# 𝔼‖z_i‖² = 1 (plus optional noise σ g_i, g_i ~ 𝒩(0, I_d/d)).
#
# **Which ε?** We use ε = 0.5 throughout. That is *our* choice for tokens of unit energy in ℝ^16,
# not a value we could trace to the CRATE paper (arXiv 2306.01129). The official code measures the
# rates of a trained model (`vis_utils/coding_rate.py` in Ma-Lab-Berkeley/CRATE) on tokens
# normalised to unit norm, with `eps = 0.01` standing in the ε² slot, i.e. ε = 0.1. Only the ratio
# of the tokens' scale to ε matters: R(cZ; cε) = R(Z; ε), as eq. 7 shows (Z enters only as
# ZᵀZ/ε²). Doubling every token is the same as halving ε; notebook 02 shows what this does to the
# approximations behind MSSA.

# %%
d, K, p, n_per = 16, 4, 4, 50  # the running example: K·p = d, N = 200 tokens
EPS = 0.5  # the distortion ε: our choice for unit-energy tokens (see above)
Z, labels, U = cr.union_of_subspaces(
    n_per, K, d, p, noise=0.0, generator=torch.Generator().manual_seed(0), dtype=F64
)
N = Z.shape[0]
print(
    f"Z: {tuple(Z.shape)} (N, d) tokens as rows; labels: {tuple(labels.shape)}; U: {tuple(U.shape)} (K, d, p)"
)

Zp = Z.T  # (d, N): the paper's layout
R_inline = 0.5 * torch.logdet(torch.eye(N, dtype=F64) + d / (N * EPS**2) * Zp.T @ Zp)  # eq. 7, N×N
R_pkg = cr.coding_rate(Z, EPS)
print(f"R(Z; ε={EPS}) = {R_pkg.item():.4f} nats")

# %%
check_close("eq. 7 inline (N×N, paper layout) = cr.coding_rate", R_pkg, R_inline, atol=1e-10)
check_close(
    "d×d Gram form = N×N Gram form (N > d)",
    cr.coding_rate(Z, EPS, form="d"),
    cr.coding_rate(Z, EPS, form="n"),
    atol=1e-10,
)
Z_few = Z[::20]  # 10 tokens in R^16: now N < d
check_close(
    "d×d Gram form = N×N Gram form (N < d)",
    cr.coding_rate(Z_few, EPS, form="d"),
    cr.coding_rate(Z_few, EPS, form="n"),
    atol=1e-10,
)
print(f"10 tokens: R = {cr.coding_rate(Z_few, EPS).item():.4f} nats (16×16 or 10×10 Gram, the same)")

# %% [markdown]
# ## 3. The compression term R^c (eq. 8) and the rate reduction ΔR
#
# Coding all tokens together with one Gaussian costs R(Z). If we know the tokens live near K
# subspaces with orthonormal bases U_1, …, U_K ∈ ℝ^{d×p}, we can instead code each token's
# coordinates U_kᵀz inside every subspace, with the same distortion, at the rate of a p-dimensional
# code:
#
# $$
# R^c(Z; U_{[K]}) = \sum_{k=1}^K R(U_k^\top Z)
# = \sum_{k=1}^K \frac12 \log\det\Big(I + \frac{p}{N\varepsilon^2}
#   (U_k^\top Z)^\top (U_k^\top Z)\Big). \tag{8}
# $$
#
# The **rate reduction** ΔR(Z; U_[K]) = R(Z) − R^c(Z; U_[K]) is what we save by coding the pieces
# separately: large when the tokens as a whole spread over many directions (large R) but each
# subspace's coordinates are compact (small R^c).

# %%
Rc_inline = sum(
    0.5 * torch.logdet(torch.eye(N, dtype=F64) + p / (N * EPS**2) * (U[k].T @ Zp).T @ (U[k].T @ Zp))
    for k in range(K)
)  # eq. 8 literally: a sum of K per-subspace coding rates (N×N form)
Rc = cr.compression_rate(Z, U, EPS)
dR_true = cr.rate_reduction(Z, U, EPS)
check_close("eq. 8 inline (sum of per-subspace rates) = cr.compression_rate", Rc, Rc_inline, atol=1e-10)
check_close(
    "R^c = Σ_k cr.coding_rate(Z U_k)", Rc, sum(cr.coding_rate(Z @ U[k], EPS) for k in range(K)), atol=1e-10
)
print(f"R = {R_pkg.item():.4f}, R^c(true U) = {Rc.item():.4f}, ΔR(true U) = {dR_true.item():.4f} nats")

# %% [markdown]
# ### Which subspaces? True vs random vs one vs overlapping
#
# ΔR depends on the subspaces we code with. A fair comparison keeps Σ_k U_k U_kᵀ = I (every
# U captures all of the tokens' energy); otherwise a U that misses the data gets a small R^c
# for a bad reason. So we compare the true bases with **random complete splits** of ℝ^d into K
# orthogonal blocks of size p. Three more cases teach the sign of ΔR:
#
# - **one subspace, the whole space** (K = 1, U_1 = I_d): R^c = R, so ΔR = 0 exactly;
# - **two copies of the whole space** (U_1 = U_2 = I_d): R^c = 2R, ΔR = −R < 0;
# - **a complete split that the data straddle**: all tokens on one line v = (u₁ + u₂)/√2 that lies
#   half in U_1 and half in U_2. At ε = 0.5, coding the two halves separately costs more than coding
#   the line (Exercise 3 finds the threshold).
#
# **An upper bound, and when the true U reaches it.** For any complete split, write the d×d Gram
# G = ZᵀZ (code layout) in the basis [U_1 … U_K]: R^c only sees its K diagonal blocks. Keeping
# the diagonal blocks of a symmetric matrix (a "pinching") makes its eigenvalues more even
# (they are majorised by those of G), and Σ_i log(1 + cλ_i) is concave, so it can only grow:
# R^c ≥ ½ Σ_i log(1 + pλ_i/(Nε²)) over the eigenvalues λ_i of G. Hence
#
# $$
# \Delta R \;\le\; \Delta R^\star
#   = \frac12\sum_{i=1}^{d} \log\frac{1 + d\lambda_i/(N\varepsilon^2)}{1 + p\lambda_i/(N\varepsilon^2)}
#   \;\ge 0,
# $$
#
# with equality when G is block-diagonal in the U basis — exactly the ideal case of noiseless
# tokens on orthogonal subspaces coded with the true U (tokens of class k have zero coordinates in
# every other U_j). So in the ideal case the true U is the best complete split, and ΔR ≥ 0.


# %%
def random_split(seed: int) -> torch.Tensor:
    """K mutually orthogonal p-dim subspaces with K·p = d, in a random orientation: (K, d, p)."""
    return cr.random_complete_split(d, K, p, torch.Generator().manual_seed(seed), dtype=F64)


bound = cr.rate_reduction_bound(Z, p, EPS)  # ΔR*: ½ Σ_i log((1 + dλ_i/(Nε²)) / (1 + pλ_i/(Nε²)))
dR_rand = torch.stack([cr.rate_reduction(Z, random_split(100 + s), EPS) for s in range(SEEDS)])
eye = torch.eye(d, dtype=F64)
dR_one = cr.rate_reduction(Z, eye[None], EPS)  # K = 1, U_1 = I_d
dR_two = cr.rate_reduction(Z, torch.stack([eye, eye]), EPS)  # two copies of the whole space
v = (U[0, :, 0] + U[1, :, 0]) / math.sqrt(2)  # a line half in U_1, half in U_2
Z_line = torch.randn(N, 1, generator=torch.Generator().manual_seed(1), dtype=F64) * v  # (N, d) on the line
dR_straddle = cr.rate_reduction(Z_line, U, EPS)

print(f"ΔR* (bound)                     = {bound.item():.4f} nats")
print(f"ΔR, true U                      = {dR_true.item():.4f}")
print(f"ΔR, random complete splits      = {', '.join(f'{x:.4f}' for x in dR_rand.tolist())}")
print(f"ΔR, one subspace U_1 = I        = {dR_one.item():.4f}")
print(f"ΔR, two copies of I             = {dR_two.item():.4f}   (−R = {-R_pkg.item():.4f})")
print(f"ΔR, tokens straddling U_1, U_2  = {dR_straddle.item():.4f}")
print(f"   (their mean energy ‖z‖²: {Z_line.pow(2).sum(1).mean().item():.2f})")

# %%
W_full = Z @ U  # (K, N, p) coordinates in every subspace
R_blocks = sum(cr.coding_rate(W_full[k], EPS * math.sqrt(p / d)) for k in range(K))  # p/(Nε'²) = d/(Nε²)
check_close(
    "ideal case: R splits into per-subspace rates (Gram block-diagonal in U)", R_pkg, R_blocks, atol=1e-10
)
check_close("ideal case: ΔR(true U) = the bound ΔR*", dR_true, bound, atol=1e-10)
check(
    "every random complete split: ΔR ≤ ΔR*",
    bool((dR_rand <= bound + 1e-12).all()),
    f"max {dR_rand.max().item():.4f} ≤ {bound.item():.4f}",
)
check(
    "true U beats every random complete split: ΔR(true) > ΔR(random) > 0",
    bool((dR_true > dR_rand).all() and (dR_rand > 0).all()),
    f"smallest gap {(dR_true - dR_rand).min().item():.4f} nats",
)
check_close("one subspace U_1 = I_d: ΔR = 0", dR_one, 0.0, atol=1e-10)
check_close("two copies of I_d: ΔR = −R", dR_two, -R_pkg, atol=1e-10)
check(
    "a complete split can give ΔR < 0 (tokens straddling two subspaces)",
    dR_straddle.item() < 0,
    f"ΔR = {dR_straddle.item():.4f}",
)

# %% [markdown]
# The advantage of the true U over a random split is real but small here (about 0.09 nats out of
# 7). That is not a bug. Coding rates see the tokens only through their second moments (the Gram
# matrix), and K **balanced** orthogonal subspaces filling ℝ^d (K·p = d) have, on average, an
# *isotropic* second moment — the same as a structureless Gaussian. Only the finite-sample
# fluctuations of the per-subspace spectra make the random split worse. Give the classes
# different energies and the spectrum becomes uneven, so the random split (which mixes the
# blocks) pays much more:

# %%
scale = torch.tensor([2.0, 1.0, 0.5, 0.25], dtype=F64).sqrt()[labels, None]  # class energies 8:4:2:1
Z_uneven = Z * scale / (Z * scale).pow(2).sum(1).mean().sqrt()  # mean token energy back to ≈ 1
gap_even = dR_true - dR_rand
gap_uneven = torch.stack(
    [
        cr.rate_reduction(Z_uneven, U, EPS) - cr.rate_reduction(Z_uneven, random_split(100 + s), EPS)
        for s in range(SEEDS)
    ]
)
print(f"ΔR(true) − ΔR(random), balanced classes:  {', '.join(f'{x:.3f}' for x in gap_even.tolist())} nats")
print(f"ΔR(true) − ΔR(random), energies 8:4:2:1:  {', '.join(f'{x:.3f}' for x in gap_uneven.tolist())} nats")
check(
    "uneven class energies widen the true-vs-random gap",
    bool(gap_uneven.min() > 2 * gap_even.max()),
    f"min {gap_uneven.min().item():.3f} > 2 × {gap_even.max().item():.3f}",
)

# %% [markdown]
# ## 4. How the rates respond to ε, to K and to noise
#
# ### The distortion ε
#
# Each eigenvalue λ_i of the Gram contributes ½ log(1 + dλ_i/(Nε²)), which *falls* as ε grows:
# a coarser code needs fewer balls. So **R is strictly decreasing in ε** (and so is R^c). For
# small ε (ε² ≪ dλ_min/N over the r nonzero eigenvalues), the 1 is negligible and
#
# $$
# R(Z;\varepsilon) \approx \frac{r}{2}\log\frac{1}{\varepsilon^2}
#   + \frac12\sum_{i=1}^{r}\log\frac{d\lambda_i}{N},
# \qquad r = \operatorname{rank} Z :
# $$
#
# every halving of ε costs r·log 2 more nats, one log 2 per dimension the data really occupy.
# In the ideal case each term of ΔR = ΔR* is ½ log((1 + dx)/(1 + px)) with x = λ_i/(Nε²), which
# grows with x; so **ΔR grows as ε shrinks**, towards (r/2)·log(d/p).
#
# ε also decides what counts as a dimension. Add a little noise (σ = 0.1) to tokens on K = 2
# subspaces of dimension 4 in ℝ^16: for ε well above the noise the curve follows slope 8/2 (the
# signal's 8 dimensions); once ε drops below the noise level it bends to slope 16/2.

# %%
eps_grid = torch.logspace(-4, 1, choose(quick=26, full=51), dtype=F64)
R_eps = torch.stack([cr.coding_rate(Z, e) for e in eps_grid.tolist()])
Rc_eps = torch.stack([cr.compression_rate(Z, U, e) for e in eps_grid.tolist()])
dR_eps = R_eps - Rc_eps
dR_limit = 0.5 * d * math.log(d / p)  # rank r = d here

g2 = torch.Generator().manual_seed(2)
Z_k2, _, _ = cr.union_of_subspaces(100, 2, 16, 4, noise=0.0, generator=g2, dtype=F64)  # rank 8
Z_k2_noisy = Z_k2 + 0.1 * torch.randn(Z_k2.shape, generator=g2, dtype=F64) / math.sqrt(16)  # rank 16


def small_eps_asymptote(Z: torch.Tensor, eps: torch.Tensor, tol: float = 1e-9) -> tuple[torch.Tensor, int]:
    """(r/2) log(1/ε²) + ½ Σ log(dλ_i/N) over the r eigenvalues of the Gram above ``tol``·max."""
    N, d = Z.shape
    lam = torch.linalg.eigvalsh(Z.T @ Z)
    lam = lam[lam > tol * lam.max()]
    r = lam.numel()
    return r / 2 * torch.log(1 / eps**2) + 0.5 * torch.log(d * lam / N).sum(), r


R_clean = torch.stack([cr.coding_rate(Z_k2, e) for e in eps_grid.tolist()])
R_noisy = torch.stack([cr.coding_rate(Z_k2_noisy, e) for e in eps_grid.tolist()])
asym_clean, r_clean = small_eps_asymptote(Z_k2, eps_grid)
asym_noisy, r_noisy = small_eps_asymptote(Z_k2_noisy, eps_grid)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
ax1.semilogx(eps_grid, R_eps, label="R(Z)")
ax1.semilogx(eps_grid, Rc_eps, label="$R^c$(Z; true U)")
ax1.semilogx(eps_grid, dR_eps, label="ΔR = R − $R^c$")
ax1.axhline(dR_limit, ls="--", color="C2", lw=1, label=f"ε → 0 limit of ΔR: (d/2)·log(d/p) = {dR_limit:.2f}")
ax1.axvline(EPS, ls=":", color="0.5", lw=1)
ax1.set_xlabel("distortion ε (data units, log scale)")
ax1.set_ylabel("rate (nats)")
ax1.set_title(f"Rates vs ε: K={K} orthogonal subspaces, p={p}, d={d}, N={N}")
ax1.legend(fontsize=8)
x = torch.log(1 / eps_grid**2)
ax2.plot(x, R_clean, color="C0", label=f"noiseless, rank {r_clean}")
ax2.plot(x, asym_clean, "--", color="C0", lw=1, label=f"asymptote, slope {r_clean}/2")
ax2.plot(x, R_noisy, color="C3", label=f"noise σ = 0.1, rank {r_noisy}")
ax2.plot(x, asym_noisy, "--", color="C3", lw=1, label=f"asymptote, slope {r_noisy}/2")
ax2.set_ylim(-5, R_noisy.max() * 1.05)
ax2.set_xlabel("log(1/ε²) (nats)")
ax2.set_ylabel("R(Z; ε) (nats)")
ax2.set_title("Small ε: R ≈ (rank/2)·log(1/ε²) + const")
ax2.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %%
check(
    "R is strictly decreasing in ε",
    bool((R_eps[1:] < R_eps[:-1]).all()),
    f"{len(eps_grid)} values of ε from 1e-4 to 10",
)
check("R^c is strictly decreasing in ε", bool((Rc_eps[1:] < Rc_eps[:-1]).all()))
check(
    "ideal case: ΔR ≥ 0 and ΔR grows as ε shrinks",
    bool((dR_eps >= 0).all() and (dR_eps[1:] < dR_eps[:-1]).all()),
    f"ΔR from {dR_eps[-1].item():.3f} (ε = 10) to {dR_eps[0].item():.3f} (ε = 1e-4)",
)
check_close("ΔR → (d/2)·log(d/p) as ε → 0 (ε = 1e-4)", dR_eps[0], dR_limit, atol=1e-3)
for name, Rv, asym, r in (
    ("noiseless", R_clean, asym_clean, r_clean),
    ("noisy", R_noisy, asym_noisy, r_noisy),
):
    check_close(f"{name} (rank {r}): R − asymptote at ε = 1e-4", Rv[0], asym[0], atol=1e-3)
    slope = ((Rv[1] - Rv[0]) / (x[1] - x[0])).item()  # between the two smallest ε
    check_close(f"{name}: slope dR/dlog(1/ε²) at small ε = rank/2 = {r / 2}", slope, r / 2, atol=2e-3)

# %% [markdown]
# ### The number of subspaces K
#
# Fix d = 16, p = 2 and N = 240 tokens, and spread them over K = 1, 2, …, 8 orthogonal subspaces.
# More subspaces means the tokens occupy K·p dimensions: R grows (roughly like (Kp/2)·log of the
# per-dimension signal-to-distortion ratio), R^c grows too but far more slowly (each subspace
# holds fewer tokens), so ΔR grows with K.

# %%
Ks = [1, 2, 3, 4, 5, 6, 8]
d_k, p_k, N_k = 16, 2, 240


def rates_vs_K(Ks: list[int], eps: float, seeds: int) -> torch.Tensor:
    """Seed-averaged (R, R^c, ΔR) with the true U for each K: (len(Ks), 3)."""
    out = []
    for K_ in Ks:
        vals = []
        for s in range(seeds):
            Zk, _, Uk = cr.union_of_subspaces(
                N_k // K_, K_, d_k, p_k, generator=torch.Generator().manual_seed(s), dtype=F64
            )
            R_, Rc_ = cr.coding_rate(Zk, eps), cr.compression_rate(Zk, Uk, eps)
            vals.append(torch.stack([R_, Rc_, R_ - Rc_]))
        out.append(torch.stack(vals).mean(0))
    return torch.stack(out)


by_K = rates_vs_K(Ks, EPS, SEEDS)
fig, ax = plt.subplots(figsize=(6.2, 4.2))
for j, name in enumerate(["R(Z)", "$R^c$(Z; true U)", "ΔR = R − $R^c$"]):
    ax.plot(Ks, by_K[:, j], "o-", label=name)
ax.set_xlabel("number of subspaces K (p = 2 each, d = 16)")
ax.set_ylabel(f"rate (nats), mean over {SEEDS} seeds")
ax.set_title(f"Rates vs number of subspaces (N = {N_k}, ε = {EPS})")
ax.legend()
plt.show()
for K_, row in zip(Ks, by_K.tolist()):
    print(f"K = {K_}:  R = {row[0]:6.3f}  R^c = {row[1]:6.3f}  ΔR = {row[2]:6.3f}")

# %%
for j, name in enumerate(["R", "R^c", "ΔR"]):
    check(f"{name} increases with K", bool((by_K[1:, j] > by_K[:-1, j]).all()))
check(
    "R^c grows more slowly than R", bool(((by_K[1:, 1] - by_K[:-1, 1]) < (by_K[1:, 0] - by_K[:-1, 0])).all())
)

# %% [markdown]
# ### Noise
#
# Add isotropic noise of relative size σ (`noise=σ`, so each token carries energy 1 + σ² on
# average). The noise adds energy in every direction, so R and R^c both rise; ΔR with the true U
# rises a little too (isotropic energy is "expansion"). What noise destroys is the *structure*:
# the advantage of the true subspaces over a random complete split shrinks towards zero, because
# noise fills the off-diagonal blocks of the Gram that made the true U special.

# %%
sigmas = [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]


def rates_vs_noise(sigmas: list[float], eps: float, seeds: int) -> torch.Tensor:
    """Seed-averaged (R, R^c true, ΔR true, ΔR random split) for each σ: (len(sigmas), 4)."""
    out = []
    for sigma in sigmas:
        vals = []
        for s in range(seeds):
            Zn, _, Un = cr.union_of_subspaces(
                n_per, K, d, p, noise=sigma, generator=torch.Generator().manual_seed(s), dtype=F64
            )
            R_, Rc_ = cr.coding_rate(Zn, eps), cr.compression_rate(Zn, Un, eps)
            dR_r = cr.rate_reduction(Zn, random_split(100 + s), eps)
            vals.append(torch.stack([R_, Rc_, R_ - Rc_, dR_r]))
        out.append(torch.stack(vals).mean(0))
    return torch.stack(out)


by_noise = rates_vs_noise(sigmas, EPS, SEEDS)
gap = by_noise[:, 2] - by_noise[:, 3]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
for j, name in enumerate(["R(Z)", "$R^c$(Z; true U)", "ΔR, true U", "ΔR, random complete split"]):
    ax1.plot(sigmas, by_noise[:, j], "o-", label=name)
ax1.set_xlabel("noise-to-signal ratio σ")
ax1.set_ylabel(f"rate (nats), mean over {SEEDS} seeds")
ax1.set_title(f"Rates vs noise (K={K}, p={p}, d={d}, ε={EPS})")
ax1.legend(fontsize=8)
ax2.plot(sigmas, gap, "o-", color="C4")
ax2.set_xlabel("noise-to-signal ratio σ")
ax2.set_ylabel("ΔR(true U) − ΔR(random split) (nats)")
ax2.set_title("Noise erases the advantage of the true subspaces")
plt.tight_layout()
plt.show()
for sigma, row, gp in zip(sigmas, by_noise.tolist(), gap.tolist()):
    print(
        f"σ = {sigma:.1f}:  R = {row[0]:.3f}  R^c = {row[1]:.3f}  ΔR true = {row[2]:.3f}  "
        f"ΔR random = {row[3]:.3f}  gap = {gp:.4f}"
    )

# %%
check(
    "R and R^c increase with noise",
    bool((by_noise[1:, 0] > by_noise[:-1, 0]).all() and (by_noise[1:, 1] > by_noise[:-1, 1]).all()),
)
check(
    "the true-vs-random gap shrinks as noise grows",
    bool((gap[1:] < gap[:-1]).all()),
    f"{gap[0].item():.4f} nats at σ = 0 → {gap[-1].item():.4f} at σ = 1",
)

# %% [markdown]
# ### Try it: ε and K
#
# The function below draws, for K orthogonal subspaces of dimension p = 2 in ℝ^16 (N = 240), the
# three rates at one ε (bars) and along all ε (curves). It is called once with its defaults so
# the figure is part of the static notebook; the next cell attaches sliders to it (run the
# notebook live to use them).


# %%
def plot_rates(eps: float = 0.5, K: int = 4) -> None:
    """R, R^c and ΔR (true U) for K orthogonal 2-dim subspaces in R^16, at ε and along ε."""
    Zk, _, Uk = cr.union_of_subspaces(
        N_k // K, K, d_k, p_k, generator=torch.Generator().manual_seed(0), dtype=F64
    )
    grid = torch.logspace(-2, 1, 31, dtype=F64).tolist()
    curves = torch.tensor(
        [[cr.coding_rate(Zk, e).item(), cr.compression_rate(Zk, Uk, e).item()] for e in grid]
    )
    R_, Rc_ = cr.coding_rate(Zk, eps).item(), cr.compression_rate(Zk, Uk, eps).item()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)  # bars read off the curves
    bars = ax1.bar(["R", "$R^c$", "ΔR"], [R_, Rc_, R_ - Rc_], color=["C0", "C1", "C2"])
    ax1.bar_label(bars, fmt="%.2f")
    ax1.set_ylabel("rate (nats)")
    ax1.set_ylim(0, 1.08 * curves[:, 0].max().item())  # fixed while ε slides
    ax1.set_title(f"K = {K} subspaces (p = 2, d = 16), ε = {eps:.3g}")
    ax2.semilogx(grid, curves[:, 0], label="R")
    ax2.semilogx(grid, curves[:, 1], label="$R^c$")
    ax2.semilogx(grid, curves[:, 0] - curves[:, 1], label="ΔR")
    ax2.axvline(eps, color="0.4", ls=":", label=f"ε = {eps:.3g}")
    ax2.set_xlabel("distortion ε (data units, log scale)")
    ax2.set_title("The same rates along ε")
    ax2.legend(fontsize=8)
    plt.tight_layout()
    plt.show()


plot_rates()

# %%
# NBVAL_IGNORE_OUTPUT
interact(
    plot_rates,
    eps=FloatLogSlider(value=0.5, base=10, min=-2, max=1, step=0.05, description="ε"),
    K=IntSlider(value=4, min=1, max=8, description="K"),
)
# %% [markdown]
# ## 5. The sparse rate reduction objective (eq. 1)
#
# CRATE looks for a representation Z = f(X) of the input tokens X that maximises
#
# $$
# \max_{f}\; \mathbb{E}_Z\Big[\, R(Z) - R^c(Z; U_{[K]}) - \lambda \|Z\|_0 \Big], \qquad Z = f(X). \tag{1}
# $$
#
# Each term pulls in its own direction, and each is needed:
#
# - **compression**, small R^c: inside every subspace the tokens' coordinates should occupy little
#   volume; the representation should line up with the subspaces U_[K];
# - **expansion / incoherence**, large R: the tokens as a whole should fill many directions, so
#   different groups of tokens must sit in *different*, near-orthogonal subspaces. Without it,
#   minimising R^c would simply collapse everything (Z = 0 gives R^c = 0);
# - **sparsity**, small ‖Z‖₀: R and R^c are unchanged by any rotation Q applied to both the tokens
#   and the subspaces (ΔR(ZQ; QᵀU) = ΔR(Z; U)), and, as we saw, they see only second moments. The
#   ℓ0 term breaks that symmetry: it prefers the rotation in which each subspace is a block of
#   coordinate axes, so every token has only p nonzero entries.
#
# The package's `sparse_rate_reduction` normalises the sparsity term per token,
# ‖Z‖ = (1/N) Σ_i ‖z_i‖ (the paper leaves the normalisation open), so that it is O(d) like the
# rates; `norm="l0"` counts nonzeros, `norm="l1"` is the convex relaxation ISTA uses (notebook 03).
#
# We score five representations of N = 200 tokens (mean energy ≈ 1 per token) against the same
# axis-aligned subspaces U_k = coordinates 4k … 4k+3 of ℝ^16, at ε = 0.5 and λ = 0.1:
#
# | | representation | what it tests |
# |---|---|---|
# | A | the union of subspaces, in the axis-aligned basis (class k uses coordinates of block k) | the target |
# | B | the same tokens rotated by a random Q (dense) | sparsity, alignment with U |
# | C | collapsed: every class moved into block 1 | expansion |
# | D | K random, overlapping 4-dim subspaces | incoherence |
# | E | structureless Gaussian tokens | what second moments cannot see |

# %%
B_basis = U.permute(1, 0, 2).reshape(d, K * p)  # [U_1 … U_K], (d, d) orthogonal
U_axis = torch.eye(d, dtype=F64).reshape(d, K, p).permute(1, 0, 2)  # U_k = e_{4k}, …, e_{4k+3}: (K, d, p)
block_mask = (torch.arange(d)[None, :] // p) == labels[:, None]  # (N, d): token i may use block labels[i]
Z_coords = Z @ B_basis  # each token's coordinates in the basis of its true subspaces
Z_A = torch.where(block_mask, Z_coords, torch.zeros_like(Z_coords))  # exact zeros off the token's block
gq = torch.Generator().manual_seed(7)
Q_rot, _ = torch.linalg.qr(torch.randn(d, d, generator=gq, dtype=F64))
Z_B = Z_A @ Q_rot.T  # rotated: same tokens, dense
Z_C = torch.zeros_like(Z_A)
for k in range(K):
    Z_C[labels == k, :p] = Z_A[labels == k, k * p : (k + 1) * p]  # every class moved into block 1
Z_D, _, _ = cr.union_of_subspaces(
    n_per, K, d, p, generator=torch.Generator().manual_seed(0), orthogonal=False, dtype=F64
)
Z_E = torch.randn(N, d, generator=gq, dtype=F64) / math.sqrt(d)
reps = {
    "A union, axis-aligned": Z_A,
    "B union, rotated": Z_B,
    "C collapsed": Z_C,
    "D overlapping subspaces": Z_D,
    "E Gaussian": Z_E,
}
LAM = 0.1
table = {}
print(
    f"{'representation':26s} {'R':>7s} {'R^c':>7s} {'ΔR':>7s} {'‖z‖₀':>6s} "
    f"{'eq. 1 (ℓ0)':>11s} {'eq. 1 (ℓ1)':>11s}"
)
for name, Zr in reps.items():
    R_, Rc_ = cr.coding_rate(Zr, EPS).item(), cr.compression_rate(Zr, U_axis, EPS).item()
    l0 = (Zr != 0).sum(-1).double().mean().item()
    obj0 = cr.sparse_rate_reduction(Zr, U_axis, EPS, LAM, norm="l0").item()
    obj1 = cr.sparse_rate_reduction(Zr, U_axis, EPS, LAM, norm="l1").item()
    table[name[0]] = dict(R=R_, Rc=Rc_, dR=R_ - Rc_, l0=l0, obj0=obj0, obj1=obj1)
    print(f"{name:26s} {R_:7.3f} {Rc_:7.3f} {R_ - Rc_:7.3f} {l0:6.2f} {obj0:11.3f} {obj1:11.3f}")

# %%
T = table
check_close("Z_A is Z in the basis [U_1 … U_K] (dropped entries were round-off)", Z_A, Z_coords, atol=1e-12)
check_close(
    "rotation invariance: ΔR(Z Q; Qᵀ-rotated U) = ΔR(Z; U)",
    cr.rate_reduction(Z_B, Q_rot @ U_axis, EPS),
    cr.rate_reduction(Z_A, U_axis, EPS),
    atol=1e-10,
)
check_close(
    "ΔR of the axis-aligned code = ΔR of the original tokens with the true U",
    T["A"]["dR"],
    dR_true,
    atol=1e-10,
)
check_close(
    "eq. 1 with ℓ0 = ΔR − λ·(mean nonzeros per token)",
    T["A"]["obj0"],
    T["A"]["dR"] - LAM * T["A"]["l0"],
    atol=1e-10,
)
check(
    "sparsity: A has p = 4 nonzeros per token, B, D, E have d = 16",
    T["A"]["l0"] == p and all(T[k]["l0"] == d for k in "BDE"),
)
check(
    "compression: the rotated tokens cost more inside the fixed U (R^c(B) > R^c(A), same R)",
    T["B"]["Rc"] > T["A"]["Rc"] and abs(T["B"]["R"] - T["A"]["R"]) < 1e-10,
    f"{T['B']['Rc']:.3f} > {T['A']['Rc']:.3f}",
)
check(
    "expansion: collapsing has the smallest R^c but loses far more R (ΔR(C) < ΔR(A))",
    T["C"]["Rc"] == min(t["Rc"] for t in T.values()) and T["C"]["dR"] < T["A"]["dR"],
    f"R^c {T['C']['Rc']:.3f} < {T['A']['Rc']:.3f}, ΔR {T['C']['dR']:.3f} < {T['A']['dR']:.3f}",
)
check(
    "incoherence: overlapping subspaces have a smaller R than orthogonal ones (R(D) < R(A))",
    T["D"]["R"] < T["A"]["R"],
    f"{T['D']['R']:.3f} < {T['A']['R']:.3f}",
)
check(
    "second moments only: ΔR of Gaussian tokens is within 0.1 nats of the union's",
    abs(T["E"]["dR"] - T["A"]["dR"]) < 0.1,
    f"{T['E']['dR']:.3f} vs {T['A']['dR']:.3f}",
)
check(
    "eq. 1 (ℓ0 and ℓ1) ranks the axis-aligned union first",
    all(T["A"][o] > T[k][o] for k in "BCDE" for o in ("obj0", "obj1")),
)

# %% [markdown]
# Read the table row by row:
#
# - **C (collapsed)** has the smallest R^c of all — if compression were the whole objective it
#   would win — but its R drops from 12.5 to 5.6 nats, so ΔR falls from 7.1 to 2.4. The R term is
#   what keeps groups apart.
# - **D (overlapping subspaces)**: the same number of tokens in subspaces that share directions
#   fill less volume, so R falls (10.7 vs 12.5): R rewards *incoherent* subspaces.
# - **B (rotated)** has exactly the same R as A; measured against the fixed U its coordinates are
#   mixed across the blocks, so R^c rises — slightly, for the reason explained in §3 — and all
#   16 entries of every token are nonzero.
# - **E (Gaussian)** shows the limit of second moments: a cloud with no subspace structure at all
#   scores a ΔR only about 0.02 nats below the union's. Only the sparsity term tells them apart (16 vs 4
#   nonzeros per token), which is one reason eq. 1 needs it.
#
# **Where the official CRATE departs from this picture** (the official `model/crate.py` of
# Ma-Lab-Berkeley/CRATE; notebooks 02–04 go into each): the subspaces U_k are the rows of a learned `qkv` projection that is *not* constrained to
# be orthonormal; the official layer-wise measurement of R^c normalises every per-head token to
# unit norm and puts `eps = 0.01` in the ε² slot (ε = 0.1), see `cr.measure_coding_rate`; and no
# CRATE layer computes R itself — the expansion term only enters through the derivation.

# %% [markdown]
# ## Summary
#
# - The coding rate R(Z; ε) = ½ logdet(I + d/(Nε²) Z Zᵀ) (eq. 7) is the log of the number of
#   ε-balls that cover the Gaussian ellipsoid of the data enlarged by ε: exp(R) equalled the area
#   ratio exactly in 2-D, and a lattice count agreed within 10 %.
# - The d×d and N×N Gram forms give the same number (Sylvester); use the smaller.
# - R^c (eq. 8) is the sum of the rates of each subspace's coordinates (scale p instead of d);
#   ΔR = R − R^c can be negative (overlapping U's, or data straddling a split). In the ideal case
#   (noiseless tokens on orthogonal subspaces, coded with the true U) ΔR attains the upper bound
#   ΔR* ≥ 0 that holds for every complete split, so the true U wins — by a small margin when the
#   subspaces are balanced, because rates only see second moments.
# - R falls strictly as ε grows; for small ε it grows like (rank/2)·log(1/ε²), and ε decides
#   which (noise) directions count. More subspaces raise R faster than R^c; noise raises both and
#   erases the advantage of the true subspaces.
# - Eq. 1 needs all three terms: R^c alone collapses, R rewards incoherent subspaces, and ‖Z‖₀
#   picks the axis-aligned (sparse) representation among the many with the same ΔR.
#
# Next: notebook 02 takes the gradient of R^c and turns one gradient step into multi-head
# subspace self-attention (MSSA).
#
# ## Exercises
#
# 1. Scale the tokens: what is R(αZ; ε) in terms of R(Z; ·)? How fast does it grow for large α?
#
# <details><summary>Solution</summary>
#
# R(αZ; ε) = ½ logdet(I + dα²/(Nε²) ZᵀZ) = R(Z; ε/α): scaling the data by α is the same as
# dividing the distortion by α. For large α it grows like r·log α (r = rank Z), by the small-ε law
# with log(1/ε²) → log(α²/ε²). This is why coding rates are only comparable at a fixed token scale,
# and why the official measurement normalises tokens to unit norm.
#
# </details>
#
# 2. Split ℝ^d into d one-dimensional subspaces (U_k = e_k, p = 1). Write R^c in closed form and
#    compare it with R when the coordinates of Z are uncorrelated.
#
# <details><summary>Solution</summary>
#
# R^c = Σ_j ½ log(1 + ‖Z_{:,j}‖²/(Nε²)), one term per coordinate (column j in code layout).
# With uncorrelated coordinates the Gram is diagonal, R = Σ_j ½ log(1 + d‖Z_{:,j}‖²/(Nε²)), and
# ΔR = Σ_j ½ log((1 + d s_j)/(1 + s_j)) with s_j = ‖Z_{:,j}‖²/(Nε²) — the bound ΔR* with p = 1.
# Check it: `cr.compression_rate(Z, torch.eye(d, dtype=F64)[:, :, None], EPS)` (K = d bases of shape (d, 1)).
#
# </details>
#
# 3. In the straddling example (tokens on the line (u₁ + u₂)/√2, mean energy 1), for which ε is
#    ΔR < 0? Use the population values R = ½ log(1 + d/ε²) and R^c = log(1 + p/(2ε²)).
#
# <details><summary>Solution</summary>
#
# ΔR < 0 ⇔ (1 + p/(2ε²))² > 1 + d/ε² ⇔ p²/(4ε²) > d − p ⇔ ε < p / (2√(d − p)). With d = 16,
# p = 4: ε < 0.577; at ε = 0.5 the population value is ΔR = ½ log 65 − log 9 ≈ −0.11, and the
# −0.160 measured above is the same formula with the sample's mean energy 1.13 in place of 1.
#
# </details>
#
# 4. With the sliders: at a large ε (say 5), all three rates are small. Why, and what is the
#    first-order formula for R when ε is large?
#
# <details><summary>Solution</summary>
#
# When dλ_i/(Nε²) ≪ 1, log(1 + x) ≈ x gives R ≈ (d/(2Nε²))·tr(ZᵀZ) = (d/(2ε²))·(mean ‖z_i‖²):
# the whole cloud fits in a few ε-balls, and R only sees the total energy, not its shape.
# Likewise R^c ≈ (p/(2ε²))·(mean energy inside the U's), so ΔR ≈ ((d − p)/(2ε²))·(mean ‖z‖²) for a
# complete split — positive, but carrying no structural information.
#
# </details>
#
# 5. Show that for a complete split with G block-diagonal in the U basis, ΔR ≥ 0 without the
#    majorisation argument.
#
# <details><summary>Solution</summary>
#
# If G is block-diagonal, its eigenvalues are the union of those of the blocks G_k = U_kᵀ G U_k,
# so R = Σ_k ½ logdet(I + d G_k/(Nε²)) and ΔR = Σ_k Σ_{λ ∈ spec G_k} ½ log((1 + dλ/(Nε²))/(1 + pλ/(Nε²))),
# each term ≥ 0 because d ≥ p. This is the check "ideal case: R splits into per-subspace rates" above.
#
# </details>
