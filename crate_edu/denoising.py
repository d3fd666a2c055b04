"""Compression as denoising: the Bayes denoiser of a mixture of low-rank Gaussians, and MSSA beside it.

Papers: Yu et al., "White-Box Transformers via Sparse Rate Reduction: Compression Is All There
Is?", arXiv 2311.13110 (the journal version of CRATE: the compression step read as a denoising
step); Pai et al., CRATE-MAE, arXiv 2404.02446 (the same reading, "structured denoising and
diffusion", used to build the decoder); Wang et al., "Attention-Only Transformers via Unrolled
Subspace Denoising", arXiv 2506.03790 (AoT: the token model of Definition 1, and the network that
unrolls the denoiser, :mod:`crate_edu.models.aot`).

Like :mod:`crate_edu.coding_rate` this module is the **derivation**: everything is computed
exactly, in closed form, so that each approximation the papers make can be checked and measured.
The same conventions: **tokens are rows** (``X`` of shape ``(..., N, d)``), a family of K
subspaces is ``U`` of shape ``(K, d, p)``, and the paper's ``U_k^T x`` is ``x @ U[k]``.

The model (the papers' "mixture of low-rank Gaussians")::

    k ~ uniform{1 … K},   a ~ N(0, I_p),   z = U_k a           (the clean token, on subspace k)
    x = z + σ n,          n ~ N(0, I_d)                          (the observed, noisy token)

so x given k is Gaussian with covariance Σ_k = U_k U_k^T + σ² I_d, and the noisy density is
p_σ(x) = (1/K) Σ_k N(x; 0, Σ_k).

The chain this module checks, link by link (tests/unit/test_denoising.py):

1. **Tweedie** (exact, any U): E[z | x] = x + σ² ∇ log p_σ(x). With the posterior memberships
   π_k(x) = softmax_k(log N(x; 0, Σ_k)) and the per-component posterior mean U_k U_k^T Σ_k^{-1} x:
   E[z | x] = Σ_k π_k(x) U_k U_k^T Σ_k^{-1} x  and  ∇ log p_σ(x) = −Σ_k π_k(x) Σ_k^{-1} x.
2. **Orthonormal columns, equal p** (exact under these assumptions, whether or not the subspaces
   overlap): Σ_k^{-1} = σ^{-2}(I − U_k U_k^T/(1 + σ²)) and every log det Σ_k is the same, so

       π_k(x) = softmax_k(‖U_k^T x‖² / (2σ²(1 + σ²)))
       E[z | x] = (1/(1 + σ²)) Σ_k U_k (π_k(x) U_k^T x).

   This is one MSSA layer on **one token**: K heads, head k's query, key and value all
   w_k = U_k^T x, output map [U_1 … U_K]. With a single token the softmax over tokens of
   eq. 11 (arXiv 2306.01129) is the number 1 and decides nothing; the membership instead is a
   softmax **across the heads** of each head's self-similarity ⟨w_k, w_k⟩, at the temperature
   τ_σ = 1/(2σ²(1 + σ²)) (:func:`membership_temperature`, :func:`subspace_denoiser`).
3. **Many tokens** (an approximation): MSSA as CRATE computes it has no softmax across heads;
   each head's softmax runs over the **tokens**, softmax_j(τ ⟨w_{k,i}, w_{k,j}⟩), and every head
   outputs a convex combination of its tokens' coordinates. The membership enters through how
   that combination looks: in a token's own subspace its self-similarity ‖a_i‖² ≈ p dominates
   (the head returns ≈ U_k^T x_i, the projection), in a foreign subspace its similarities are all
   small (the head spreads over all tokens and returns their mean, ≈ 0 for zero-mean data and
   many tokens). So CRATE's MSSA approximates the **hard**-membership projection
   U_{k(i)} U_{k(i)}^T x_i, the small-σ limit of 2. (:func:`token_mssa_denoiser`). What it
   needs: orthogonal subspaces (a foreign head sees only noise), small σ (the posterior
   membership is nearly one-hot and foreign similarities ~ σ√p stay small), many tokens (the
   foreign heads' means vanish like 1/√N) but not too many (the own head still picks the token
   itself: p/2 ≫ log N at τ = 1, for a ~ N(0, I_p)); τ = 1 (eq. 11's) is the best temperature
   for the own head; the official 1/√p needs √p/2 ≫ log N. :func:`approximation_curve` measures
   where each requirement fails.

A **score step** of size κ, x + κσ² ∇ log p_σ(x) = (1 − κ) x + κ E[z | x] (:func:`score_step`),
has the shape of CRATE's attention step (1 − κγ) Z + κγ MSSA(Z) (``coding_rate.mssa_step``): a
shrunk residual plus a multiple of the attention output. :func:`mssa_score_step` is the score
step with E[z | x] replaced by the MSSA forms of 2. or 3.

Map of the module:

================================  ================================================================
the model                         :func:`sample_mixture`, :func:`overlapping_subspaces`
AoT's token model (Def. 1 of      :func:`sample_subspace_noise_tokens` (signal on the token's own
arXiv 2506.03790)                 subspace, noise of variance δ² on each of the others)
log N(x; 0, Σ_k), π_k(x)          :func:`component_log_likelihoods`, :func:`posterior_membership`
log p_σ(x)                        :func:`log_density`
E[z | x] (Tweedie, exact)         :func:`posterior_mean`
∇ log p_σ(x) (exact)              :func:`score`
x + κσ² ∇ log p_σ(x)              :func:`score_step`
link 2: membership over heads     :func:`membership_temperature`, :func:`subspace_membership`,
                                  :func:`subspace_denoiser`
link 3: membership over tokens    :func:`token_mssa_denoiser` (``coding_rate.mssa`` without γ)
the step with either form         :func:`mssa_score_step`
where it breaks, measured         :func:`denoiser_error`, :func:`approximation_curve`
================================  ================================================================
"""

from __future__ import annotations

import math

import torch

from crate_edu import coding_rate

__all__ = [
    "sample_mixture",
    "overlapping_subspaces",
    "sample_subspace_noise_tokens",
    "component_log_likelihoods",
    "posterior_membership",
    "log_density",
    "posterior_mean",
    "score",
    "score_step",
    "membership_temperature",
    "subspace_membership",
    "subspace_denoiser",
    "token_mssa_denoiser",
    "mssa_score_step",
    "denoiser_error",
    "approximation_curve",
]

FORMS = ("subspace", "tokens")
VARY = ("sigma", "overlap", "tokens")


# ---------------------------------------------------------------------------------------------
# input checks: one line saying what was received and what to do
# ---------------------------------------------------------------------------------------------


def _check(X: torch.Tensor, U: torch.Tensor) -> None:
    if not isinstance(X, torch.Tensor) or X.ndim < 2 or not X.is_floating_point():
        got = f"shape {tuple(X.shape)}, dtype {X.dtype}" if isinstance(X, torch.Tensor) else type(X).__name__
        raise ValueError(
            f"X must be a floating-point tensor of tokens as rows, shape (..., N, d), got {got}; "
            f"for one token use x[None, :]"
        )
    if not isinstance(U, torch.Tensor) or U.ndim != 3:
        got = tuple(U.shape) if isinstance(U, torch.Tensor) else type(U).__name__
        raise ValueError(
            f"U must be K stacked bases of shape (K, d, p), got {got}; for one basis pass U_k[None]"
        )
    if U.shape[1] != X.shape[-1]:
        raise ValueError(
            f"U has ambient dimension d={U.shape[1]} but the tokens have width {X.shape[-1]}; "
            f"U must be (K, d, p) with d = X.shape[-1] (pass U.transpose(-1, -2) if it is (K, p, d))"
        )


def _check_sigma(sigma: float) -> None:
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma is the noise level σ and must be a finite number > 0, got {sigma!r}")


def _basis(U: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    return U.to(dtype=X.dtype, device=X.device)


# ---------------------------------------------------------------------------------------------
# the model: a mixture of low-rank Gaussians, and AoT's noisy tokens
# ---------------------------------------------------------------------------------------------


def sample_mixture(
    n: int, U: torch.Tensor, sigma: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n tokens of the mixture: k uniform, z = U_k a with a ~ N(0, I_p), x = z + σ n, n ~ N(0, I_d).

    Args:
        n: number of tokens. U: (K, d, p) bases. sigma: noise level σ ≥ 0.
        generator: for reproducibility.

    Returns:
        x (n, d) noisy tokens, z (n, d) clean tokens, labels (n,) int64 components, in U's dtype.
    """
    if sigma < 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma must be a finite number ≥ 0, got {sigma!r}")
    K, d, p = U.shape
    labels = torch.randint(K, (n,), generator=generator)  # (n,)
    a = torch.randn(n, p, generator=generator, dtype=U.dtype)  # (n, p) coefficients
    z = torch.einsum("ndp,np->nd", U[labels], a)  # z_i = U_{k_i} a_i                    (n, d)
    x = z + sigma * torch.randn(n, d, generator=generator, dtype=U.dtype)  # (n, d)
    return x, z, labels


def overlapping_subspaces(
    d: int, K: int, p: int, overlap: float, generator: torch.Generator | None = None, *, dtype=None
) -> torch.Tensor:
    """K p-dim subspaces with orthonormal bases and U_k^T U_l = overlap · I_p for k ≠ l.

    U_k = √o B + √(1 − o) V_k with B, V_1 … V_K mutually orthogonal orthonormal p-column blocks
    (needs (K + 1)·p ≤ d): each U_k has orthonormal columns, every principal angle between two
    subspaces is arccos(o); o = 0 gives orthogonal subspaces, o → 1 the same subspace.

    Returns:
        U (K, d, p).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap is cos of the principal angles, in [0, 1), got {overlap!r}")
    if (K + 1) * p > d:
        raise ValueError(
            f"(K + 1)·p = {(K + 1) * p} directions do not fit in d = {d}; raise d or lower K or p"
        )
    dtype = dtype or torch.get_default_dtype()
    Q, _ = torch.linalg.qr(torch.randn(d, (K + 1) * p, generator=generator, dtype=dtype))  # (d, (K+1)p)
    B, V = Q[:, :p], Q[:, p:].reshape(d, K, p).permute(1, 0, 2)  # (d, p), (K, d, p)
    return math.sqrt(overlap) * B + math.sqrt(1 - overlap) * V  # (K, d, p)


def sample_subspace_noise_tokens(
    n_per: int, U: torch.Tensor, delta: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """AoT's noisy tokens (arXiv 2506.03790, Definition 1): z_i = U_k a_i + Σ_{j≠k} U_j e_{i,j}.

    a_i ~ N(0, I_p) is the signal on the token's own subspace k, e_{i,j} ~ N(0, δ² I_p) the noise
    on every other subspace. Tokens are ordered by subspace.

    Args:
        n_per: tokens per subspace. U: (K, d, p). delta: noise level δ ≥ 0. generator: for
            reproducibility.

    Returns:
        Z (K·n_per, d), labels (K·n_per,) int64.
    """
    if delta < 0 or not math.isfinite(delta):
        raise ValueError(f"delta must be a finite number ≥ 0, got {delta!r}")
    K, d, p = U.shape
    labels = torch.arange(K).repeat_interleave(n_per)  # (N,)
    coeff = delta * torch.randn(K * n_per, K, p, generator=generator, dtype=U.dtype)  # e_{i,j}  (N, K, p)
    own = torch.randn(K * n_per, p, generator=generator, dtype=U.dtype)  # a_i                  (N, p)
    coeff[torch.arange(K * n_per), labels] = own  # own subspace: signal, not noise
    return torch.einsum("kdp,nkp->nd", U, coeff), labels  # Σ_j U_j coeff_{i,j}               (N, d)


# ---------------------------------------------------------------------------------------------
# exact: likelihoods, posterior, density, posterior mean, score (any U)
# ---------------------------------------------------------------------------------------------


def _components(X: torch.Tensor, U: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """log N(x; 0, Σ_k) (..., N, K) and the per-component posterior means U_k M_k^{-1} U_k^T x
    (..., N, K, d), with M_k = U_k^T U_k + σ² I_p (push-through: U_k U_k^T Σ_k^{-1} = U_k M_k^{-1} U_k^T)."""
    _check(X, U)
    _check_sigma(sigma)
    U = _basis(U, X)
    K, d, p = U.shape
    M = U.transpose(-2, -1) @ U + sigma**2 * torch.eye(p, dtype=X.dtype, device=X.device)  # (K, p, p)
    W = torch.einsum("...nd,kdp->...nkp", X, U)  # U_k^T x                                (..., N, K, p)
    S = torch.linalg.solve(M, W.unsqueeze(-1)).squeeze(-1)  # M_k^{-1} U_k^T x              (..., N, K, p)
    quad = ((X * X).sum(-1, keepdim=True) - (W * S).sum(-1)) / sigma**2  # x^T Σ_k^{-1} x   (..., N, K)
    logdet = 2 * (d - p) * math.log(sigma) + torch.linalg.slogdet(M).logabsdet  # log det Σ_k  (K,)
    loglik = -0.5 * (quad + logdet + d * math.log(2 * math.pi))  # (..., N, K)
    means = torch.einsum("kdp,...nkp->...nkd", U, S)  # U_k M_k^{-1} U_k^T x                  (..., N, K, d)
    return loglik, means


def component_log_likelihoods(X: torch.Tensor, U: torch.Tensor, sigma: float) -> torch.Tensor:
    """log N(x; 0, U_k U_k^T + σ² I) for every token and component: (..., N, d) -> (..., N, K).

    Uses x^T Σ_k^{-1} x = (‖x‖² − x^T U_k M_k^{-1} U_k^T x)/σ² (Woodbury) and
    log det Σ_k = 2(d − p) log σ + log det M_k (determinant lemma), M_k = U_k^T U_k + σ² I_p.
    Exact for any U (columns need not be orthonormal).
    """
    return _components(X, U, sigma)[0]


def posterior_membership(X: torch.Tensor, U: torch.Tensor, sigma: float) -> torch.Tensor:
    """P(k | x) = softmax_k log N(x; 0, Σ_k) (equal weights 1/K): (..., N, d) -> (..., N, K)."""
    return torch.softmax(component_log_likelihoods(X, U, sigma), dim=-1)


def log_density(X: torch.Tensor, U: torch.Tensor, sigma: float) -> torch.Tensor:
    """log p_σ(x) = log (1/K) Σ_k N(x; 0, Σ_k) for every token: (..., N, d) -> (..., N)."""
    loglik = component_log_likelihoods(X, U, sigma)  # (..., N, K)
    return torch.logsumexp(loglik, dim=-1) - math.log(loglik.shape[-1])


def posterior_mean(X: torch.Tensor, U: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[z | x] = Σ_k π_k(x) U_k U_k^T Σ_k^{-1} x, the Bayes (MMSE) denoiser, exact for any U.

    Returns:
        (..., N, d).
    """
    loglik, means = _components(X, U, sigma)  # (..., N, K), (..., N, K, d)
    return (torch.softmax(loglik, dim=-1).unsqueeze(-1) * means).sum(-2)  # (..., N, d)


def score(X: torch.Tensor, U: torch.Tensor, sigma: float) -> torch.Tensor:
    """∇_x log p_σ(x) by Tweedie's formula: (E[z | x] − x)/σ² (= −Σ_k π_k Σ_k^{-1} x), exact.

    Returns:
        (..., N, d).
    """
    return (posterior_mean(X, U, sigma) - X) / sigma**2


def score_step(X: torch.Tensor, U: torch.Tensor, sigma: float, kappa: float = 1.0) -> torch.Tensor:
    """x + κσ² ∇ log p_σ(x) = (1 − κ) x + κ E[z | x]: κ = 1 is the Bayes denoiser itself.

    Returns:
        (..., N, d).
    """
    return X + kappa * sigma**2 * score(X, U, sigma)


# ---------------------------------------------------------------------------------------------
# link 2: one token, the membership as a softmax across heads (exact for orthonormal U_k, equal p)
# ---------------------------------------------------------------------------------------------


def membership_temperature(sigma: float) -> float:
    """τ_σ = 1/(2σ²(1 + σ²)): the temperature at which softmax_k(τ_σ ‖U_k^T x‖²) is P(k | x)."""
    _check_sigma(sigma)
    return 1.0 / (2 * sigma**2 * (1 + sigma**2))


def subspace_membership(X: torch.Tensor, U: torch.Tensor, sigma: float) -> torch.Tensor:
    """softmax_k(τ_σ ‖U_k^T x‖²), each head's self-similarity at :func:`membership_temperature`.

    Equals :func:`posterior_membership` when every U_k has orthonormal columns (all U_k have the
    same p by construction); the subspaces may overlap.

    Returns:
        (..., N, K).
    """
    _check(X, U)
    W = torch.einsum("...nd,kdp->...nkp", X, _basis(U, X))  # w_k = U_k^T x                 (..., N, K, p)
    return torch.softmax(membership_temperature(sigma) * (W * W).sum(-1), dim=-1)  # (..., N, K)


def subspace_denoiser(X: torch.Tensor, U: torch.Tensor, sigma: float) -> torch.Tensor:
    """One MSSA layer on each token alone: (1/(1 + σ²)) Σ_k U_k (π_k w_k), w_k = U_k^T x.

    π = :func:`subspace_membership` (softmax across the K heads at τ_σ). Equals
    :func:`posterior_mean` exactly when each U_k has orthonormal columns (link 2 of the module
    docstring); off that assumption it is an approximation (measured in the tests).

    Returns:
        (..., N, d).
    """
    _check(X, U)
    U = _basis(U, X)
    W = torch.einsum("...nd,kdp->...nkp", X, U)  # (..., N, K, p)
    pi = torch.softmax(membership_temperature(sigma) * (W * W).sum(-1), dim=-1)  # (..., N, K)
    return torch.einsum("kdp,...nkp->...nd", U, pi.unsqueeze(-1) * W) / (1 + sigma**2)  # (..., N, d)


# ---------------------------------------------------------------------------------------------
# link 3: many tokens, CRATE's MSSA with the softmax over tokens
# ---------------------------------------------------------------------------------------------


def token_mssa_denoiser(X: torch.Tensor, U: torch.Tensor, sigma: float, tau: float = 1.0) -> torch.Tensor:
    """CRATE's MSSA read as a denoiser: (1/(1 + σ²)) Σ_k U_k softmax_rows(τ W_k W_k^T) W_k.

    W_k = X U_k (N, p); the softmax mixes tokens within each head (eq. 11 of arXiv 2306.01129,
    temperature τ: 1 there, 1/√p in the official code). This is ``coding_rate.mssa`` without its
    step size γ = p/(N ε²), times the same shrinkage 1/(1 + σ²) as the exact denoiser, so that
    the one thing approximated is the membership: per token, the hard projection onto its own
    subspace, found through the other tokens (link 3 of the module docstring), in place of the
    softmax across heads. All tokens of X are denoised together.

    Returns:
        (..., N, d).
    """
    _check(X, U)
    _check_sigma(sigma)
    N, p = X.shape[-2], U.shape[-1]
    gamma = p / N  # coding_rate.mssa's γ = p/(N ε²) at ε = 1, divided out below
    return coding_rate.mssa(X, _basis(U, X), 1.0, tau=tau) / (gamma * (1 + sigma**2))  # (..., N, d)


def _denoise(X: torch.Tensor, U: torch.Tensor, sigma: float, form: str, tau: float) -> torch.Tensor:
    if form == "subspace":
        return subspace_denoiser(X, U, sigma)
    if form == "tokens":
        return token_mssa_denoiser(X, U, sigma, tau)
    raise ValueError(
        f"form must be one of {FORMS} ('subspace': softmax across heads, one token at a time; "
        f"'tokens': CRATE's softmax over tokens), got {form!r}"
    )


def mssa_score_step(
    X: torch.Tensor,
    U: torch.Tensor,
    sigma: float,
    kappa: float = 1.0,
    *,
    form: str = "subspace",
    tau: float = 1.0,
) -> torch.Tensor:
    """The score step with E[z | x] replaced by an MSSA form: (1 − κ) x + κ D(x).

    D = :func:`subspace_denoiser` (``form="subspace"``) or :func:`token_mssa_denoiser`
    (``form="tokens"``, temperature ``tau``). Compare with :func:`score_step`; the shape is that
    of ``coding_rate.mssa_step``, (1 − κγ) Z + κγ MSSA(Z), with κγ in the role of κ.

    Returns:
        (..., N, d).
    """
    return (1 - kappa) * X + kappa * _denoise(X, U, sigma, form, tau)


# ---------------------------------------------------------------------------------------------
# where the approximation breaks, measured
# ---------------------------------------------------------------------------------------------


def denoiser_error(
    X: torch.Tensor, U: torch.Tensor, sigma: float, *, form: str = "tokens", tau: float = 1.0
) -> torch.Tensor:
    """‖D(X) − E[z | X]‖_F / ‖E[z | X]‖_F for an MSSA form D: the relative error of the κ = 1 step.

    (For a step of size κ both the error and the step's move scale by κ, so this is also the
    relative error of :func:`mssa_score_step` against :func:`score_step`'s move.)

    Returns:
        0-dim tensor.
    """
    exact = posterior_mean(X, U, sigma)  # (..., N, d)
    return (_denoise(X, U, sigma, form, tau) - exact).norm() / exact.norm()


def approximation_curve(
    vary: str,
    values: list[float] | tuple[float, ...],
    *,
    form: str = "tokens",
    d: int = 160,
    K: int = 4,
    p: int = 32,
    n: int = 512,
    sigma: float = 0.1,
    overlap: float = 0.0,
    tau: float = 1.0,
    trials: int = 3,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> dict[str, list[float]]:
    """The relative error of an MSSA form against the exact denoiser (:func:`denoiser_error`) as one
    quantity varies: ``vary="sigma"`` (the noise level σ), ``"overlap"`` (cos of the principal
    angles between the subspaces, :func:`overlapping_subspaces`) or ``"tokens"`` (the number of
    tokens n denoised together). The other quantities stay at the keyword values; each point is
    the mean over ``trials`` draws of subspaces and tokens (fixed seeds: the curve is reproducible).

    Returns:
        {"values": the values, "error": mean relative error, "std": its std over the trials}.
    """
    if vary not in VARY:
        raise ValueError(f"vary must be one of {VARY}, got {vary!r}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if not values:
        raise ValueError("values is empty; pass the σ, overlaps or token counts to measure at")
    errors, stds = [], []
    for v in values:
        s, o, m = sigma, overlap, n
        if vary == "sigma":
            s = float(v)
        elif vary == "overlap":
            o = float(v)
        else:
            m = int(v)
        runs = []
        for t in range(trials):
            g = torch.Generator().manual_seed(seed + 1000 * t)
            U = overlapping_subspaces(d, K, p, o, g, dtype=dtype)  # (K, d, p)
            X, _, _ = sample_mixture(m, U, s, g)  # (m, d)
            runs.append(denoiser_error(X, U, s, form=form, tau=tau).item())
        r = torch.tensor(runs, dtype=torch.float64)
        errors.append(r.mean().item())
        stds.append(r.std(correction=0).item())
    return {"values": [float(v) for v in values], "error": errors, "std": stds}
