"""What one image's forward pass costs, counted from the shapes: the one FLOP formula of crate_edu.

    from crate_edu.evaluation.flops import forward_flops, forward_macs
    forward_flops(model)        # 2 FLOPs per multiply-add of every matrix product
    forward_macs(model.config)  # multiply-adds by part: embed, attention, sparse_coding or mlp, head, total

:func:`layer_macs` holds the arithmetic of one layer; everything else (``forward_macs``,
``forward_flops``, and :func:`crate_edu.experiments.crate_alpha_macs`) adds up its parts. The
tests check the count against torch's ``FlopCounterMode`` for CRATE, CRATE-α and the ViT.
"""

from __future__ import annotations

from crate_edu.models.base import pair
from crate_edu.models.crate import CRATEConfig
from crate_edu.models.crate_alpha import CRATEAlphaConfig
from crate_edu.models.vit import ViTConfig

__all__ = ["layer_macs", "forward_macs", "forward_flops"]

_COUNTED = (CRATEConfig, CRATEAlphaConfig, ViTConfig)


def layer_macs(config: CRATEConfig | CRATEAlphaConfig | ViTConfig, tokens: int) -> dict[str, int]:
    """Multiply-adds of one layer's matrix products over ``tokens`` tokens (n), by half-layer.

    With width d, K heads of p dimensions (``Kp = heads * head_dim``), per layer:

    - ``attention``: the input projections (CRATE: ``U^T z``, n·d·Kp; ViT: ``W_q, W_k, W_v``,
      3·n·d·Kp), each head's scores and their average of the values (``W W^T`` and ``A W``, or
      ``q k^T`` and ``A v``: 2·n²·Kp), and the output map (n·Kp·d);
    - ``sparse_coding`` (CRATE, CRATE-α): CRATE's ISTA step, ``D z`` and ``D^T (.)`` (2·n·d²);
      CRATE-α's block with codes of width r·d, ``D^T x``, ``D A1``, ``D^T (.)`` and the decoder
      (4·n·d·rd);
    - ``mlp`` (ViT): its two Linear maps through the hidden width h (2·n·d·h).
    """
    n, d, kp = tokens, config.dim, config.heads * config.head_dim
    projections = 3 * d * kp if isinstance(config, ViTConfig) else d * kp  # per token
    attention = n * projections + 2 * n * n * kp + n * kp * d
    if isinstance(config, ViTConfig):
        return {"attention": attention, "mlp": 2 * n * d * config.hidden_dim}
    if isinstance(config, CRATEAlphaConfig) and config.sparse_coding == "alpha":
        return {"attention": attention, "sparse_coding": 4 * n * d * (config.overcomplete_ratio * d)}
    return {"attention": attention, "sparse_coding": 2 * n * d * d}


def forward_macs(model_or_config) -> dict[str, int]:
    """Multiply-adds of one image's forward pass through every matrix product, by part.

    With N patches of P = C·ph·pw values (n = N + 1 tokens with [CLS]), width d, L layers and
    C' classes: ``embed`` N·P·d (the patch Linear or Conv2d), L times each part of
    :func:`layer_macs` (``attention`` and ``sparse_coding``, or ``mlp`` for the ViT), ``head``
    d·C' (the [CLS] or mean token only), and their ``total``. LayerNorm, softmax, ReLU and the
    additions, O(n·d) against the products' O(n·d²), are not counted.

    Raises:
        TypeError: a model family other than CRATE, CRATE-α and the ViT.
    """
    cfg = getattr(model_or_config, "config", model_or_config)
    if not isinstance(cfg, _COUNTED):
        raise TypeError(
            f"forward_flops counts CRATE, CRATE-α and ViT classifiers; got {type(cfg).__name__}. "
            "Count other models with torch.utils.flop_counter.FlopCounterMode"
        )
    ph, pw = pair(cfg.patch_size)
    n_patches, d = cfg.num_patches, cfg.dim
    macs = {"embed": n_patches * (cfg.channels * ph * pw) * d}
    macs.update({part: cfg.depth * m for part, m in layer_macs(cfg, n_patches + 1).items()})
    macs["head"] = d * cfg.num_classes
    macs["total"] = sum(macs.values())
    return macs


def forward_flops(model_or_config) -> int:
    """Floating-point operations of one image's forward pass through the matrix products.

    2 FLOPs per multiply-add of every product (the convention of ``torch.utils.flop_counter``):
    ``2 * forward_macs(model)["total"]``; see :func:`forward_macs` and :func:`layer_macs` for
    what is counted.

    ISTA is counted as the two products of its equation, ``D z`` and ``D^T (.)``: the official
    code (and ``reference=True``) computes ``D^T x - D^T D x`` with three (``d^2`` more per token
    and layer); the fast path runs these two on small batches and, from ``2 d`` tokens on, folds
    them into one ``d x d`` matrix per layer (one product per token, plus ``d^3`` to form the
    matrix). With one head of the full width (``heads == 1`` and ``dim_head == dim``) the output
    map is an identity and costs nothing; the formula still counts it.

    Training costs about 3x this (the backward pass computes two products per forward one).
    This is the full model, every token in every layer; with ``pool='cls'`` the fast path's
    ``forward`` computes only the [CLS] row of the last layer and runs somewhat fewer
    (``ImageClassifier.forward``; count it with ``prune_last_layer = False`` to compare with this
    formula).

    Args:
        model_or_config: a CRATE, CRATE-α or ViT classifier of ``crate_edu`` (or its ``config``).

    Raises:
        TypeError: another model family (CRATE-MAE has other layers).
    """
    return 2 * forward_macs(model_or_config)["total"]
