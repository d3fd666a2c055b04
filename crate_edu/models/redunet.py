"""ReduNet: a network built forward from data, one gradient-ascent step on MCR² per layer.

Paper: Chan, Yu, You, Qi, Wright, Ma, "ReduNet: A White-box Deep Network from the Principle of
Maximizing Rate Reduction", arXiv 2105.10446. Official code: ``Ma-Lab-Berkeley/ReduNet``, the vector
layer ``redunet/layers/vector.py`` (facts with file:line in docs/notes/tost_redunet_official_code.md,
§4). This is CRATE's prequel: the same rate reduction, with the classes given by labels instead of
learned subspaces, and layers *computed* from the data instead of trained.

Read it top to bottom. Samples are rows: Z has shape (m, d), one sample z_i ∈ R^d per row, on the
unit sphere. With m_j samples in class j and ``eps`` the official ε² (the paper's α = d/(m ε²)):

    α    = d / (m · eps)          α_j = d / (m_j · eps)                       # scalars
    E    = α   (I + α   Z^T Z)^{-1}                                           # (d, d) expansion
    C_j  = α_j (I + α_j Z_j^T Z_j)^{-1}                                       # (d, d) compression, class j
    γ_j  = m_j / m                                                            # class weight
    π̂_j(z) = softmax_j(−λ ‖C_j z‖)                                           # estimated membership
    z'   = z + η (E z − Σ_j γ_j π_j(z) C_j z)                                 # gradient step on ΔR
    z⁺   = z' / ‖z'‖                                                          # back to the sphere

A layer's E, C_j and γ_j are computed in closed form from the features that reach it (its input)
and the labels, then the layer is applied and the next layer is built from its output: no
back-propagation anywhere (:meth:`ReduNet.fit`, :func:`build_redunet`).

Why this is gradient ascent: with the true (one-hot) memberships π_j(z_i) = 1[y_i = j],
E z_i − γ_{y_i} C_{y_i} z_i is exactly row i of ∇_Z ΔR(Z, Π; ε) for
ΔR = ½ logdet(I + α Z^T Z) − Σ_j (m_j/2m) logdet(I + α_j Z_j^T Z_j) (:func:`crate_edu.coding_rate.mcr2`,
with ε = √eps), no extra factor: the gradient of the total ΔR, not of a per-sample mean. So
:meth:`ReduNet.forward_train` (true memberships) is projected gradient ascent on ΔR with step η.
At test time the label is unknown and π̂_j(z) stands in for it (:meth:`ReduNet.forward`): a
sample is assigned to the class whose compression operator shrinks it most (C_j shrinks the
directions class j occupies).

Faithful to the official vector layer: the same E, C_j and γ_j (matrix inverses, float32), the
membership estimate with the norm clamped at 1e-8, the normalisation ``z / max(‖z‖, 1e-8)`` of the
inputs and after every layer, and the official defaults of the toy examples (η = 0.5, eps = 0.1,
λ = 200; MNIST uses λ = 500). One official detail is kept as it is: :meth:`ReduNet.fit` applies each
new layer with the *estimated* memberships, as the official ``init`` does (the labels only build
E, C_j and γ_j); ``membership="true"`` applies it with the labels instead. The bookkeeping
(:class:`LayerRates`) measures ΔR with the true labels, where the official log uses the layer's
predicted ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from crate_edu import coding_rate as cr

__all__ = ["LayerRates", "ReduLayer", "ReduNet", "build_redunet", "normalize", "MEMBERSHIPS"]

#: How :meth:`ReduNet.fit` applies a freshly built layer: "estimated" (the official ``init``:
#: π̂_j(z) = softmax(−λ‖C_j z‖)) or "true" (one-hot labels: projected gradient ascent on ΔR).
MEMBERSHIPS = ("estimated", "true")


# ---------------------------------------------------------------------------------------------
# input checks: one line naming the problem and the fix
# ---------------------------------------------------------------------------------------------


def _check_features(Z: Tensor, dim: int | None = None) -> None:
    if not isinstance(Z, Tensor):
        raise TypeError(
            f"Z must be a torch.Tensor of shape (m, d), one sample per row, got {type(Z).__name__}"
        )
    if Z.ndim != 2:
        raise ValueError(
            f"Z must have shape (m, d) with samples as rows, got shape {tuple(Z.shape)}; "
            f"flatten images with Z.reshape(len(Z), -1)"
        )
    if not Z.is_floating_point():
        raise ValueError(f"Z must be a floating-point tensor, got dtype {Z.dtype}; use Z.float()")
    if Z.shape[0] < 1:
        raise ValueError("Z has no samples (shape (0, d)); ReduNet needs at least one sample per class")
    if dim is not None and Z.shape[1] != dim:
        raise ValueError(f"Z has width d={Z.shape[1]} but this ReduNet was built for d={dim}")


def _check_labels(labels: Tensor, m: int, num_classes: int | None) -> None:
    """Type and shape of the labels; their range too unless ``num_classes`` is None."""
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        what = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise TypeError(
            f"labels must be an integer torch.Tensor of shape (m,), got {what}; use labels.long()"
        )
    if labels.ndim != 1 or labels.shape[0] != m:
        raise ValueError(
            f"labels must have shape (m,) = ({m},), one class index per row of Z, "
            f"got shape {tuple(labels.shape)}"
        )
    if num_classes is None:
        return
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(
            f"labels must lie in 0..{num_classes - 1} (num_classes = {num_classes}), got values from "
            f"{int(labels.min())} to {int(labels.max())}; relabel them 0..K-1"
        )


def _check_hyper(eta: float, eps: float, lmbda: float) -> None:
    for name, value, low, hint in (
        ("eta", eta, 0.0, "the step size η > 0 (official 0.5)"),
        ("eps", eps, 0.0, "the official ε² > 0 (official 0.1)"),
        ("lmbda", lmbda, None, "the membership temperature λ ≥ 0 (official 200 for the toys, 500 for MNIST)"),
    ):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value >= 0 if low is None else value > low)
        if not ok:
            raise ValueError(f"{name} must be {hint}, got {value!r}")


def normalize(Z: Tensor) -> Tensor:
    """Each row onto the unit sphere: z / max(‖z‖, 1e-8), as the official ``functional.normalize``."""
    return Z / torch.linalg.vector_norm(Z, dim=1, keepdim=True).clamp_min(1e-8)  # (m, d)


# ---------------------------------------------------------------------------------------------
# one layer
# ---------------------------------------------------------------------------------------------


class ReduLayer(nn.Module):
    """One ReduNet layer: z ← normalize(z + η (E z − Σ_j γ_j π_j(z) C_j z)).

    E, C_j and γ_j are buffers, not parameters: :meth:`construct` computes them from the features
    that reach the layer and their labels, in closed form. An unconstructed layer holds zeros and
    is the identity map up to the normalisation.

    Args:
        dim: feature width d.
        num_classes: K.
        eta: step size η (official 0.5).
        eps: the official ε² (official 0.1); α = d/(m·eps).
        lmbda: temperature λ of the estimated membership (official 200 on the toys).
    """

    def __init__(self, dim: int, num_classes: int, eta: float = 0.5, eps: float = 0.1, lmbda: float = 200.0):
        super().__init__()
        if not (isinstance(dim, int) and dim >= 1 and isinstance(num_classes, int) and num_classes >= 1):
            raise ValueError(
                f"dim and num_classes must be positive ints, got dim={dim!r}, num_classes={num_classes!r}"
            )
        _check_hyper(eta, eps, lmbda)
        self.dim, self.num_classes = dim, num_classes
        self.eta, self.eps, self.lmbda = float(eta), float(eps), float(lmbda)
        self.register_buffer("E", torch.zeros(dim, dim))  # (d, d)
        self.register_buffer("C", torch.zeros(num_classes, dim, dim))  # (K, d, d)
        self.register_buffer("gamma", torch.zeros(num_classes))  # (K,)

    @torch.no_grad()
    def construct(self, Z: Tensor, labels: Tensor) -> ReduLayer:
        """Compute E, C_j and γ_j from this layer's input features Z (m, d) and labels (m,)."""
        _check_features(Z, self.dim)
        _check_labels(labels, Z.shape[0], self.num_classes)
        m, d = Z.shape
        counts = torch.bincount(labels, minlength=self.num_classes)  # (K,) m_j
        if bool((counts == 0).any()):
            empty = [j for j in range(self.num_classes) if counts[j] == 0]
            raise ValueError(
                f"class(es) {empty} have no samples; every class needs at least one to build its C_j "
                f"(drop the class or lower num_classes)"
            )
        eye = torch.eye(d, dtype=Z.dtype, device=Z.device)
        alpha = d / (m * self.eps)
        self.E = alpha * torch.linalg.inv(eye + alpha * Z.T @ Z)  # (d, d)        vector.py:48-54
        C = []
        for j in range(self.num_classes):
            Z_j = Z[labels == j]  # (m_j, d)
            alpha_j = d / (Z_j.shape[0] * self.eps)
            C.append(alpha_j * torch.linalg.inv(eye + alpha_j * Z_j.T @ Z_j))  # (d, d)  vector.py:56-67
        self.C = torch.stack(C)  # (K, d, d)
        self.gamma = (counts.to(Z.dtype) / m).to(Z.device)  # (K,) γ_j = m_j/m       vector.py:42-46
        return self

    def compressions(self, Z: Tensor) -> Tensor:
        """C_j z for every class and sample: (m, d) -> (K, m, d)."""
        return torch.einsum("kde,me->kmd", self.C, Z)  # row i of block j: C_j z_i

    def estimated_memberships(self, Z: Tensor) -> Tensor:
        """π̂_j(z) = softmax over classes of −λ ‖C_j z‖ (vector.py:33-40): (m, d) -> (m, K)."""
        _check_features(Z, self.dim)
        norms = torch.linalg.vector_norm(self.compressions(Z), dim=-1).clamp_min(1e-8)  # (K, m)
        return torch.softmax(-self.lmbda * norms, dim=0).T  # (m, K), rows sum to 1

    def direction(self, Z: Tensor, memberships: Tensor | None = None) -> Tensor:
        """E z − Σ_j γ_j π_j(z) C_j z for every row: (m, d) -> (m, d).

        With the true one-hot memberships and the features the layer was built from, this is
        ∇_Z ΔR(Z, Π; √eps) (:func:`crate_edu.coding_rate.grad_mcr2`). ``memberships`` (m, K):
        one-hot (or soft) Π; None uses :meth:`estimated_memberships`.
        """
        _check_features(Z, self.dim)
        Pi = self.estimated_memberships(Z) if memberships is None else memberships  # (m, K)
        if Pi.shape != (Z.shape[0], self.num_classes):
            raise ValueError(
                f"memberships must have shape (m, K) = {(Z.shape[0], self.num_classes)}, "
                f"got {tuple(Pi.shape)}"
            )
        expand = Z @ self.E.T  # (m, d)          E z_i
        CZ = self.compressions(Z)  # (K, m, d)    C_j z_i
        compress = torch.einsum("k,mk,kmd->md", self.gamma, Pi.to(Z.dtype), CZ)  # Σ_j γ_j π_ij C_j z_i
        return expand - compress  # (m, d)

    def forward(self, Z: Tensor, memberships: Tensor | None = None) -> Tensor:
        """z⁺ = normalize(z + η (E z − Σ_j γ_j π_j(z) C_j z)) (vector.py:23-31): (m, d) -> (m, d)."""
        return normalize(Z + self.eta * self.direction(Z, memberships))

    def extra_repr(self) -> str:
        hyper = f"eta={self.eta}, eps={self.eps}, lmbda={self.lmbda}"
        return f"dim={self.dim}, num_classes={self.num_classes}, {hyper}"


# ---------------------------------------------------------------------------------------------
# the network, built forward
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerRates:
    """The rates of the features after ``layer`` layers (0: the normalised inputs), true labels.

    ``delta_r = r − r_c`` in nats, computed with ε = √eps (:func:`crate_edu.coding_rate.mcr2`; the
    official ``compute_loss_vec`` with its ``eps``). ``membership_accuracy``: the fraction of the
    layer's input samples whose estimated membership argmax_j π̂_j(z) is their label (None for
    layer 0, which has no C_j).
    """

    layer: int
    delta_r: float
    r: float
    r_c: float
    membership_accuracy: float | None = None


def _rates(Z: Tensor, labels: Tensor, eps: float, num_classes: int) -> tuple[float, float, float]:
    r = cr.coding_rate(Z, math.sqrt(eps)).item()
    r_c = cr.class_compression_rate(Z, labels, math.sqrt(eps), num_classes=num_classes).item()
    return r - r_c, r, r_c


class ReduNet(nn.Module):
    """A stack of :class:`ReduLayer`, each built from the output of the ones before it.

    Use :meth:`fit` (or :func:`build_redunet`) to construct it from data, :meth:`forward` at test
    time (estimated memberships), :meth:`forward_train` with labels (true memberships: projected
    gradient ascent on ΔR) and :attr:`history` for ΔR, R and R^c by layer.

    Args:
        dim: feature width d. num_classes: K. eta, eps, lmbda: as :class:`ReduLayer` (official
        defaults 0.5, 0.1, 200).
    """

    def __init__(self, dim: int, num_classes: int, eta: float = 0.5, eps: float = 0.1, lmbda: float = 200.0):
        super().__init__()
        ReduLayer(dim, num_classes, eta, eps, lmbda)  # checks the arguments once
        self.dim, self.num_classes = dim, num_classes
        self.eta, self.eps, self.lmbda = float(eta), float(eps), float(lmbda)
        self.layers = nn.ModuleList()
        #: :class:`LayerRates` of the training features, one per layer (entry 0: the inputs).
        self.history: list[LayerRates] = []

    @torch.no_grad()
    def fit(self, Z: Tensor, labels: Tensor, n_layers: int, *, membership: str = "estimated") -> ReduNet:
        """Build ``n_layers`` more layers forward from Z (m, d) and labels (m,); returns self.

        Layer ℓ is constructed from the features Z^{ℓ−1} that the layers before it produce, then
        applied to them: Z^ℓ = layer_ℓ(Z^{ℓ−1}). ``membership`` says how: "estimated" (the official
        ``init``) or "true" (the labels). Calling ``fit`` again continues from where it stopped, on
        the same data (the output of the existing layers).
        """
        if membership not in MEMBERSHIPS:
            raise ValueError(f"membership must be one of {MEMBERSHIPS}, got {membership!r}")
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
        _check_features(Z, self.dim)
        _check_labels(labels, Z.shape[0], self.num_classes)
        Pi = nn.functional.one_hot(labels, self.num_classes).to(Z.dtype)  # (m, K) true memberships
        features = self.forward_train(Z, labels) if membership == "true" else self.forward(Z)  # (m, d)
        if not self.history:
            self.history.append(LayerRates(0, *_rates(features, labels, self.eps, self.num_classes)))
        for _ in range(n_layers):
            layer = ReduLayer(self.dim, self.num_classes, self.eta, self.eps, self.lmbda).to(Z.device)
            layer.construct(features, labels)  # E, C_j, γ_j from this layer's input
            estimate = layer.estimated_memberships(features)  # (m, K)
            accuracy = (estimate.argmax(1) == labels).to(Z.dtype).mean().item()
            features = layer(features, Pi if membership == "true" else estimate)  # (m, d)
            self.layers.append(layer)
            rates = _rates(features, labels, self.eps, self.num_classes)
            self.history.append(LayerRates(len(self.layers), *rates, membership_accuracy=accuracy))
        return self

    def forward(self, Z: Tensor) -> Tensor:
        """Test time: normalise, then every layer with the estimated memberships: (m, d) -> (m, d)."""
        _check_features(Z, self.dim)
        Z = normalize(Z)  # preprocess (vector.py:69-70)
        for layer in self.layers:
            Z = layer(Z)  # π̂_j(z) = softmax(−λ‖C_j z‖)
        return Z

    def forward_train(self, Z: Tensor, labels: Tensor) -> Tensor:
        """With labels: normalise, then every layer with the true memberships: (m, d) -> (m, d)."""
        _check_features(Z, self.dim)
        _check_labels(labels, Z.shape[0], self.num_classes)
        Pi = nn.functional.one_hot(labels, self.num_classes).to(Z.dtype)  # (m, K)
        Z = normalize(Z)
        for layer in self.layers:
            Z = layer(Z, Pi)  # projected gradient ascent on ΔR
        return Z

    def features(self, Z: Tensor, labels: Tensor | None = None) -> list[Tensor]:
        """The features after 0, 1, …, L layers (estimated memberships, or the true ones with labels)."""
        _check_features(Z, self.dim)
        if labels is not None:
            _check_labels(labels, Z.shape[0], self.num_classes)
        Pi = None if labels is None else nn.functional.one_hot(labels, self.num_classes).to(Z.dtype)
        out = [normalize(Z)]
        for layer in self.layers:
            out.append(layer(out[-1], Pi))
        return out

    def predict(self, Z: Tensor) -> Tensor:
        """The last layer's estimated class argmax_j π̂_j(z) on the features that reach it: (m,) int64."""
        if not self.layers:
            raise ValueError("this ReduNet has no layers yet; build them with fit(Z, labels, n_layers)")
        Z_in = self.features(Z)[-2]  # the last layer's input
        return self.layers[-1].estimated_memberships(Z_in).argmax(1)


def build_redunet(
    Z: Tensor,
    labels: Tensor,
    n_layers: int,
    eta: float = 0.5,
    eps: float = 0.1,
    lmbda: float = 200.0,
    *,
    num_classes: int | None = None,
    membership: str = "estimated",
) -> ReduNet:
    """Construct a ReduNet of ``n_layers`` layers forward from samples Z (m, d) and labels (m,).

    The official toy examples use ``n_layers=200, eta=0.5, eps=0.1, lmbda=200``. ``num_classes``
    defaults to max label + 1. See :meth:`ReduNet.fit`.
    """
    _check_features(Z)
    _check_labels(labels, Z.shape[0], None)  # type and shape; fit checks the range
    K = max(int(labels.max()) + 1, 1) if num_classes is None else num_classes
    net = ReduNet(Z.shape[1], K, eta, eps, lmbda).to(Z.device)
    return net.fit(Z, labels, n_layers, membership=membership)
