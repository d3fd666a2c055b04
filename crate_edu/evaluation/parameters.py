"""Where a classifier's parameters sit: counted from the modules, and from the formulas.

    from crate_edu.evaluation.parameters import parameters_by_component, parameters_by_formula
    parameters_by_component(model)         # from the modules: embedding, attention, MLP / ISTA, ...
    parameters_by_formula(model.config)    # the same groups from the width, depth, heads and patch

Per layer, with width d, K heads of p dimensions (Kp = K·p) and the ViT's hidden width h::

    attention              CRATE: U^T d·Kp, to_out Kp·d + d;  ViT: W_q, W_k, W_v 3·d·Kp, to_out Kp·d + d
    MLP / ISTA             CRATE: the dictionary D, d²;        ViT: Linear(d, h), Linear(h, d), 2·d·h + h + d
    LayerNorms in layers   two LayerNorms, 4d, in both

The patch embedding (LN(P), Linear(P, d), LN(d) on patches of P = C·ph·pw values), the positions,
[CLS] and the head (LN(d), Linear(d, C')) are the same in both. Notebook 04 (§3) compares CRATE-T
and ViT-S with these counts; the two must agree for every model.
"""

from __future__ import annotations

from torch import nn

from crate_edu.models.base import pair
from crate_edu.models.crate import CRATEConfig
from crate_edu.models.vit import ViTConfig

__all__ = ["COMPONENTS", "parameters_by_component", "parameters_by_formula"]

#: The groups both functions return, in this order.
COMPONENTS: tuple[str, ...] = ("embedding", "attention", "MLP / ISTA", "LayerNorms in layers", "head")


def _numel(module: nn.Module) -> int:
    return sum(t.numel() for t in module.parameters())


def parameters_by_component(model: nn.Module) -> dict[str, int]:
    """A classifier's parameters grouped by :data:`COMPONENTS`, counted from its modules.

    Every layer of ``model.transformer.layers`` is ``[PreNorm(attention), PreNorm(MLP or ISTA)]``:
    each ``PreNorm``'s ``fn`` goes to "attention" or "MLP / ISTA", its ``norm`` to "LayerNorms in
    layers"; ``model.mlp_head`` is the "head"; everything else (patch embedding, positions,
    [CLS]) is the "embedding". Works on the ``meta`` device (shapes only).

    Args:
        model: a CRATE, CRATE-α or ViT classifier of :mod:`crate_edu.models`.

    Returns:
        {component: number of parameters}; the values add up to ``model.num_params()``.
    """
    counts = dict.fromkeys(COMPONENTS, 0)
    for attention, mlp in model.transformer.layers:  # [PreNorm(attention), PreNorm(MLP or ISTA)]
        counts["attention"] += _numel(attention.fn)
        counts["MLP / ISTA"] += _numel(mlp.fn)
        counts["LayerNorms in layers"] += _numel(attention.norm) + _numel(mlp.norm)
    counts["head"] = _numel(model.mlp_head)
    counts["embedding"] = _numel(model) - sum(counts.values())  # patches, positions, [CLS]
    return counts


def parameters_by_formula(model_or_config) -> dict[str, int]:
    """The groups of :func:`parameters_by_component`, from the formulas of the module docstring.

    Args:
        model_or_config: a CRATE or ViT classifier, or its config (``CRATEConfig``, ``ViTConfig``).
            Patch sizes may be one int or a pair (ph, pw).

    Returns:
        {component: number of parameters}, in the order of :data:`COMPONENTS`.

    Raises:
        TypeError: a model family other than CRATE and the ViT (CRATE-α's blocks differ).
    """
    cfg = getattr(model_or_config, "config", model_or_config)
    if not isinstance(cfg, (CRATEConfig, ViTConfig)):
        raise TypeError(
            f"parameters_by_formula knows CRATE and ViT configs, got {type(cfg).__name__}; "
            f"count other models with parameters_by_component(model)"
        )
    d, L, Kp, C = cfg.dim, cfg.depth, cfg.heads * cfg.head_dim, cfg.num_classes
    ph, pw = pair(cfg.patch_size)
    P = cfg.channels * ph * pw  # values per patch
    if isinstance(cfg, ViTConfig):
        h = cfg.hidden_dim
        attention = L * (3 * d * Kp + (Kp * d + d))  # W_q, W_k, W_v, to_out with bias
        mlp = L * ((d * h + h) + (h * d + d))  # Linear(d, h), Linear(h, d)
    else:
        attention = L * (d * Kp + (Kp * d + d))  # one projection U^T, to_out with bias
        mlp = L * d * d  # the dictionary D
    embedding = 2 * P + (P * d + d) + 2 * d  # LN(P), Linear(P, d), LN(d)
    tokens = (cfg.num_patches + 1) * d + d  # positions of the patches and [CLS], the [CLS] token
    return {
        "embedding": embedding + tokens,
        "attention": attention,
        "MLP / ISTA": mlp,
        "LayerNorms in layers": L * 2 * 2 * d,
        "head": 2 * d + d * C + C,  # LN(d), Linear(d, C')
    }
