"""Linear probes: how linearly separable are the classes in a frozen network's features?

A probe freezes the network, extracts one feature vector per image, and fits only a linear
classifier (multinomial logistic regression) on the training features; its test accuracy measures
the features, not the classifier::

    from crate_edu.evaluation.probe import extract_features, linear_probe
    Xtr, ytr = extract_features(encoder, train_set, pool="mean")
    Xte, yte = extract_features(encoder, test_set, pool="mean")
    result = linear_probe(Xtr, ytr, Xte, yte)            # result.test_accuracy

The fit is deterministic: features are standardised with the training statistics and the convex,
L2-regularised cross-entropy is minimised by full-batch L-BFGS in float64 from zero weights (no
random state is used at all).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crate_edu.evaluation.batches import iter_batches

__all__ = [
    "extract_features",
    "extract_layer_features",
    "pool_tokens",
    "ProbeResult",
    "linear_probe",
    "probe_layers",
]

_POOLS = ("cls", "mean", "head")


def pool_tokens(tokens: Tensor, pool: str) -> Tensor:
    """(B, N + 1, d) tokens, [CLS] first -> (B, d): the [CLS] token (``'cls'``) or the patch mean."""
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be (B, N + 1, d), got shape {tuple(tokens.shape)}")
    if pool == "cls":
        return tokens[:, 0]
    if pool == "mean":
        return tokens[:, 1:].mean(dim=1)
    raise ValueError(f"unknown pool {pool!r}; choose 'cls' or 'mean'")


@torch.no_grad()
def extract_features(
    model: nn.Module,
    data,
    *,
    pool: str = "mean",
    batch_size: int = 256,
    limit: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Frozen features (N, d) and labels (N,) of a dataset of ``(image, label)``.

    Args:
        model: anything with ``forward_features(images) -> (B, N + 1, d)`` ([CLS] first): a CRATE,
            ViT or CRATE-MAE (whose ``forward_features`` encodes the whole, unmasked image).
        data: a dataset of ``(image, label)`` (images normalised as the model expects).
        pool: ``'cls'`` (the [CLS] token), ``'mean'`` (mean of the patch tokens) or ``'head'``
            (the model's own pooling, ``forward_head(tokens, pre_logits=True)``).
        limit: use only the first ``limit`` items.
    """
    if pool not in _POOLS:
        raise ValueError(f"unknown pool {pool!r}; choose one of {', '.join(_POOLS)}")
    device, was_training = _start(model, data, device)
    feats = []
    try:
        for x in iter_batches(data, batch_size, limit=limit):
            tokens = model.forward_features(x.to(device))
            f = model.forward_head(tokens, pre_logits=True) if pool == "head" else pool_tokens(tokens, pool)
            feats.append(f.float().cpu())
    finally:
        model.train(was_training)
    n = sum(f.shape[0] for f in feats)
    return torch.cat(feats), _labels(data, n)


def _start(
    model: nn.Module, data, device: torch.device | str | None, *, need_intermediates: bool = False
) -> tuple[torch.device, bool]:
    """Check the inputs, put ``model`` in eval mode: ``(device, whether model was training)``."""
    if isinstance(data, Tensor):
        raise TypeError("data must be a dataset of (image, label) pairs: a probe needs the labels")
    if need_intermediates and not hasattr(model, "forward_intermediates"):
        raise TypeError(f"{type(model).__name__} has no forward_intermediates; use a crate_edu model")
    device = next(model.parameters()).device if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    return device, was_training


def _labels(data, n: int) -> Tensor:
    if hasattr(data, "labels") and isinstance(data.labels, Tensor):
        return data.labels[:n].long().clone()
    return torch.tensor([int(data[i][1]) for i in range(n)])


@torch.no_grad()
def extract_layer_features(
    model: nn.Module,
    data,
    *,
    pool: str = "mean",
    batch_size: int = 256,
    limit: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[list[Tensor], Tensor]:
    """Pooled outputs of every layer: a list of L tensors (N, d) (layer ℓ's Z^{ℓ+1}) and the labels (N,).

    Uses ``forward_intermediates`` (no hooks): for a CRATE-MAE, of its encoder on the whole,
    unmasked image; for a classifier (CRATE, CRATE-α, ViT), of its layers. ``pool`` is ``'cls'``
    or ``'mean'`` (see :func:`pool_tokens`).
    """
    if pool not in ("cls", "mean"):
        raise ValueError(f"unknown pool {pool!r}; choose 'cls' or 'mean'")
    device, was_training = _start(model, data, device, need_intermediates=True)
    per_layer: list[list[Tensor]] = []
    try:
        for x in iter_batches(data, batch_size, limit=limit):
            x = x.to(device)
            if hasattr(model, "forward_loss"):  # CRATE-MAE: the encoder's layers, nothing masked
                traces = model.forward_intermediates(x, mask_ratio=0.0)[1]["encoder"]
            else:
                traces = model.forward_intermediates(x)[1]
            if not per_layer:
                per_layer = [[] for _ in traces]
            for feats, t in zip(per_layer, traces, strict=True):
                feats.append(pool_tokens(t.z_out, pool).float().cpu())
    finally:
        model.train(was_training)
    layers = [torch.cat(f) for f in per_layer]
    return layers, _labels(data, layers[0].shape[0] if layers else 0)


def probe_layers(
    model: nn.Module,
    train,
    test,
    *,
    pool: str = "mean",
    limit: int | None = None,
    weight_decay: float = 1e-3,
) -> list[float]:
    """Linear-probe test accuracy of every layer's pooled output (train on ``train``, score on ``test``).

    ``limit`` caps both splits. Returns one accuracy (a fraction) per layer, first layer first.
    """
    tr, ytr = extract_layer_features(model, train, pool=pool, limit=limit)
    te, yte = extract_layer_features(model, test, pool=pool, limit=limit)
    return [
        linear_probe(a, ytr, b, yte, weight_decay=weight_decay).test_accuracy
        for a, b in zip(tr, te, strict=True)
    ]


@dataclass
class ProbeResult:
    """A fitted linear probe.

    Attributes:
        train_accuracy, test_accuracy: fractions in [0, 1].
        weight (K, d), bias (K,): the classifier on standardised features.
        mean, std (d,): the training statistics used to standardise.
        weight_decay: the L2 penalty used.
    """

    train_accuracy: float
    test_accuracy: float
    weight: Tensor
    bias: Tensor
    mean: Tensor
    std: Tensor
    weight_decay: float

    def predict(self, features: Tensor) -> Tensor:
        """Class indices (N,) for raw (unstandardised) features (N, d)."""
        z = (features.double() - self.mean) / self.std
        return (z @ self.weight.T + self.bias).argmax(dim=1)


def _check_probe_inputs(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    weight_decay: float,
) -> None:
    for name, f, y in [("train", train_features, train_labels), ("test", test_features, test_labels)]:
        if f.ndim != 2 or y.ndim != 1 or f.shape[0] != y.shape[0]:
            raise ValueError(
                f"{name} features must be (N, d) and labels (N,) with the same N, got "
                f"{tuple(f.shape)} and {tuple(y.shape)}"
            )
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"train and test features differ in width: {train_features.shape[1]} vs {test_features.shape[1]}"
        )
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    weight_decay: float = 1e-3,
    max_iter: int = 200,
    num_classes: int | None = None,
) -> ProbeResult:
    """Fit multinomial logistic regression on frozen features; report train and test accuracy.

    Minimises mean cross-entropy + ``weight_decay`` · ½‖W‖² over standardised features (training
    mean and std) with full-batch L-BFGS in float64, starting from zero: the same inputs always
    give the same result.

    Args:
        train_features, test_features: (N, d) features.
        train_labels, test_labels: (N,) integer labels in 0 … K − 1.
        weight_decay: L2 penalty on the weights (not the bias).
        max_iter: L-BFGS iterations.
        num_classes: K (default: 1 + the largest label seen).
    """
    _check_probe_inputs(train_features, train_labels, test_features, test_labels, weight_decay)
    X = train_features.detach().double().cpu()
    y = train_labels.detach().long().cpu()
    K = int(num_classes) if num_classes is not None else int(max(y.max(), test_labels.max())) + 1
    mean = X.mean(0)
    std = X.std(0).clamp_min(1e-8)
    Z = (X - mean) / std
    W = torch.zeros(K, Z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(K, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [W, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
        history_size=20, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(Z @ W.T + b, y) + 0.5 * weight_decay * (W * W).sum()
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float64 reductions in a fixed order: identical results on every run
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    result = ProbeResult(0.0, 0.0, W.detach(), b.detach(), mean, std, float(weight_decay))
    result.train_accuracy = float((result.predict(train_features.cpu()) == y).double().mean())
    result.test_accuracy = float((result.predict(test_features.cpu()) == test_labels.cpu()).double().mean())
    return result
