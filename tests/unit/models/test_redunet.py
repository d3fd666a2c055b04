"""Tests for crate_edu.models.redunet: ReduNet built forward, against MCR²'s gradient and the official
code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crate_edu import coding_rate as cr
from crate_edu.models import LayerRates, ReduLayer, ReduNet, build_redunet
from tests.support.paths import FIXTURES

F64 = torch.float64
FIXTURE = FIXTURES / "official_redunet_fixture.pt"


def _mixture(seed: int = 0, dtype=F64):
    """Three classes on non-orthogonal 2-D subspaces of R^6 plus noise, unequal sizes, shuffled."""
    g = torch.Generator().manual_seed(seed)
    Z, labels, _ = cr.union_of_subspaces(15, 3, 6, 2, 0.2, g, orthogonal=False, dtype=dtype)
    keep = torch.cat([torch.nonzero(labels == k)[:n, 0] for k, n in enumerate((15, 10, 13))])
    perm = torch.randperm(len(keep), generator=g)
    return Z[keep][perm], labels[keep][perm]


def _unit(Z: torch.Tensor) -> torch.Tensor:
    return Z / Z.norm(dim=1, keepdim=True)


# ---------------------------------------------------------------------------------------------
# one layer: E, C_j, γ_j and the step are MCR²'s gradient
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.05, 0.1, 1.0])
def test_layer_direction_with_true_memberships_is_the_gradient_of_delta_r(eps):
    Z, labels = _mixture()
    Z = _unit(Z)
    layer = ReduLayer(6, 3, eta=0.5, eps=eps).construct(Z, labels)
    Pi = torch.nn.functional.one_hot(labels, 3).to(F64)
    direction = layer.direction(Z, Pi)  # E z − Σ_j γ_j π_j C_j z
    # the module's eps is the official ε²: ΔR(Z, Π; ε = √eps)
    Zr = Z.clone().requires_grad_(True)
    (g_auto,) = torch.autograd.grad(cr.mcr2(Zr, labels, math.sqrt(eps)), Zr)
    assert ((direction - g_auto).norm() / g_auto.norm()).item() < 1e-10
    closed = cr.grad_mcr2(Z, labels, math.sqrt(eps))
    torch.testing.assert_close(direction, closed, rtol=1e-10, atol=1e-12)
    # the operators themselves
    E = cr.expansion_operator(Z, math.sqrt(eps))
    C, gamma = cr.compression_operators(Z, labels, math.sqrt(eps))
    torch.testing.assert_close(layer.E, E, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.C, C, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.gamma, gamma, rtol=0, atol=1e-15)
    # the layer's output: a step of η along the gradient, back to the sphere
    out = layer(Z, Pi)
    torch.testing.assert_close(out, _unit(Z + 0.5 * g_auto), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(len(Z), dtype=F64), rtol=0, atol=1e-12)


def test_a_small_step_along_the_layer_raises_delta_r():
    Z, labels = _mixture(seed=1)
    Z = _unit(Z)
    for eps in (0.1, 0.5):
        layer = ReduLayer(6, 3, eta=0.01, eps=eps).construct(Z, labels)
        Pi = torch.nn.functional.one_hot(labels, 3).to(F64)
        before = cr.mcr2(Z, labels, math.sqrt(eps))
        assert cr.mcr2(Z + 0.01 * layer.direction(Z, Pi), labels, math.sqrt(eps)) > before


def test_estimated_membership_is_the_true_one_on_well_separated_data():
    # three classes on mutually orthogonal lines of R^6, little noise: each C_j shrinks its own class
    g = torch.Generator().manual_seed(2)
    Z, labels, _ = cr.union_of_subspaces(20, 3, 6, 1, 0.02, g, dtype=F64)
    Z = _unit(Z)
    layer = ReduLayer(6, 3, eps=0.1, lmbda=200.0).construct(Z, labels)
    pi_hat = layer.estimated_memberships(Z)  # (m, K)
    assert pi_hat.shape == (60, 3)
    torch.testing.assert_close(pi_hat.sum(1), torch.ones(60, dtype=F64), rtol=0, atol=1e-12)
    assert torch.equal(pi_hat.argmax(1), labels)
    assert pi_hat.max(1).values.min() > 0.99  # confident, so the estimated step is the true one
    Pi = torch.nn.functional.one_hot(labels, 3).to(F64)
    torch.testing.assert_close(layer(Z), layer(Z, Pi), rtol=0, atol=1e-3)
    # the definition: softmax over classes of −λ ‖C_j z‖
    norms = torch.stack([(Z @ layer.C[j].T).norm(dim=1) for j in range(3)], 1)
    torch.testing.assert_close(pi_hat, torch.softmax(-200.0 * norms, 1), rtol=1e-12, atol=1e-15)
    # held-out samples of the same mixture are assigned to their class too
    net = build_redunet(Z, labels, 3, eps=0.1, lmbda=200.0)
    Zt, yt, _ = cr.union_of_subspaces(20, 3, 6, 1, 0.02, torch.Generator().manual_seed(2), dtype=F64)
    assert torch.equal(net.predict(Zt), yt)


# ---------------------------------------------------------------------------------------------
# the network: built forward, ΔR by layer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("membership", ["estimated", "true"])
def test_delta_r_increases_layer_by_layer(membership):
    Z, labels = _mixture(seed=3)
    net = build_redunet(Z, labels, 12, eta=0.5, eps=0.1, lmbda=200.0, membership=membership)
    assert len(net.layers) == 12 and len(net.history) == 13
    dR = [h.delta_r for h in net.history]
    assert all(b > a for a, b in zip(dR[:-1], dR[1:], strict=True)), dR
    assert dR[-1] > dR[0] + 0.1
    # the bookkeeping is the rates of the features the network computes
    feats = net.features(Z, labels if membership == "true" else None)
    assert len(feats) == 13
    for h, F_l in zip(net.history, feats, strict=True):
        torch.testing.assert_close(torch.tensor(h.delta_r, dtype=F64), cr.mcr2(F_l, labels, math.sqrt(0.1)))
        assert h.r - h.r_c == pytest.approx(h.delta_r, abs=1e-12)
    assert net.history[0].membership_accuracy is None
    assert all(0 <= h.membership_accuracy <= 1 for h in net.history[1:])
    out = net.forward_train(Z, labels) if membership == "true" else net(Z)
    torch.testing.assert_close(out, feats[-1], rtol=0, atol=0)


def test_fit_continues_where_it_stopped_and_the_two_forwards_differ_only_in_memberships():
    Z, labels = _mixture(seed=4)
    once = build_redunet(Z, labels, 6, membership="true")
    twice = build_redunet(Z, labels, 2, membership="true").fit(Z, labels, 4, membership="true")
    assert len(twice.layers) == 6 and len(twice.history) == 7
    for a, b in zip(once.layers, twice.layers, strict=True):
        torch.testing.assert_close(a.E, b.E, rtol=0, atol=0)
        torch.testing.assert_close(a.C, b.C, rtol=0, atol=0)
    # forward_train is gradient ascent with the labels; forward estimates them
    Pi = torch.nn.functional.one_hot(labels, 3).to(F64)
    Zl = _unit(Z)
    for layer in once.layers:
        Zl = layer(Zl, Pi)
    torch.testing.assert_close(once.forward_train(Z, labels), Zl, rtol=0, atol=0)
    Ze = _unit(Z)
    for layer in once.layers:
        Ze = _unit(Ze + layer.eta * layer.direction(Ze, layer.estimated_memberships(Ze)))
    torch.testing.assert_close(once(Z), Ze, rtol=0, atol=1e-15)
    # the state dict holds E, C_j and γ_j of every layer and loads into a fresh net
    fresh = ReduNet(6, 3)
    for _ in range(6):
        fresh.layers.append(ReduLayer(6, 3))
    fresh.double().load_state_dict(once.state_dict())
    torch.testing.assert_close(fresh(Z), once(Z), rtol=0, atol=1e-15)
    assert isinstance(once.history[1], LayerRates)


# ---------------------------------------------------------------------------------------------
# the official code, on fixtures made by tests/fixtures/make_redunet_fixtures.py
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["gaussian2d", "gaussian3d", "random8d"])
def test_matches_the_official_vector_redunet(case):
    ref = torch.load(FIXTURE, weights_only=True)[case]
    net = build_redunet(ref["X"], ref["y"], ref["layers"], ref["eta"], ref["eps"], ref["lmbda"])
    # measured max |Δ|: features ≤ 6e-7; operators ≤ 7.7e-6 on entries up to ~9 (random8d's C_j,
    # float32 round-off through the inverses), so those get a relative tolerance as well
    tol = dict(rtol=0, atol=1e-5)
    for ell, layer in enumerate(net.layers):
        torch.testing.assert_close(layer.E, ref["E"][ell], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.C, ref["Cs"][ell], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.gamma, ref["gam"][ell], rtol=0, atol=0)
    feats = net.features(ref["X"])
    torch.testing.assert_close(torch.stack(feats), ref["Z_layers"], **tol)
    torch.testing.assert_close(net(ref["X"]), ref["Z_train"], **tol)
    torch.testing.assert_close(net(ref["X_test"]), ref["Z_test"], **tol)
    # each layer's predicted class, and the official per-layer log (ΔR, R, R^c with those classes)
    for ell, layer in enumerate(net.layers):
        assert torch.equal(layer.estimated_memberships(feats[ell]).argmax(1), ref["yhat"][ell])
        Z_out = feats[ell + 1].double()
        yhat = ref["yhat"][ell]
        R = cr.coding_rate(Z_out, math.sqrt(ref["eps"]))
        Rc = cr.class_compression_rate(Z_out, yhat, math.sqrt(ref["eps"]))
        got = torch.stack([R - Rc, R, Rc])
        torch.testing.assert_close(got, ref["losses"][ell], rtol=0, atol=1e-4)


@pytest.mark.parametrize("case", ["gaussian2d", "gaussian3d"])
def test_redunet_mixture_draws_the_official_data(case):
    ref = torch.load(FIXTURE, weights_only=True)[case]
    rng = np.random.RandomState(ref["seed"])  # as np.random.seed(seed) before the official generator
    X, y = cr.redunet_mixture(ref["dim"], 1, 0.1, 20, rng)
    X_test, _ = cr.redunet_mixture(ref["dim"], 1, 0.1, 20, rng)
    assert X.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(X, ref["X"]) and torch.equal(y, ref["y"]) and torch.equal(X_test, ref["X_test"])


def test_redunet_mixture_configurations():
    for dim, configs in cr.REDUNET_MIXTURE_CENTERS.items():
        for data, centres in configs.items():
            X, y = cr.redunet_mixture(dim, data, 0.0, 3, rng=0)
            assert X.shape == (3 * len(centres), dim) and torch.equal(
                y, torch.arange(len(centres)).repeat_interleave(3)
            )
            # no noise: every sample is its centre on the sphere
            c = torch.tensor(centres, dtype=torch.float64)
            torch.testing.assert_close(X.double(), _unit(c).repeat_interleave(3, 0), rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match=r"dim must be 2 or 3"):
        cr.redunet_mixture(4)
    with pytest.raises(ValueError, match=r"data must be one of \[1, 2, 3\] for dim=3"):
        cr.redunet_mixture(3, 5)
    with pytest.raises(ValueError, match=r"noise .* ≥ 0"):
        cr.redunet_mixture(2, 1, -0.1)
    with pytest.raises(ValueError, match=r"samples .* positive int"):
        cr.redunet_mixture(2, 1, 0.1, 0)


# ---------------------------------------------------------------------------------------------
# bad input: one line naming the problem and the fix
# ---------------------------------------------------------------------------------------------


def test_bad_inputs_raise_one_line_errors():
    Z, labels = _mixture()
    net = build_redunet(Z, labels, 1)
    cases = [
        (lambda: build_redunet(Z[0], labels, 2), r"shape \(m, d\).*reshape"),
        (lambda: build_redunet(Z.long(), labels, 2), r"floating-point.*Z.float\(\)"),
        (lambda: build_redunet(Z, labels.double(), 2), r"integer torch.Tensor.*labels.long\(\)"),
        (lambda: build_redunet(Z, labels.tolist(), 2), r"integer torch.Tensor of shape \(m,\), got list"),
        (lambda: build_redunet(Z, labels[:-1], 2), r"shape \(m,\) = \(38,\).*got shape \(37,\)"),
        (lambda: build_redunet(Z, labels, 0), r"n_layers must be a positive int, got 0"),
        (lambda: build_redunet(Z, labels, 2, eta=0), r"eta must be the step size η > 0"),
        (lambda: build_redunet(Z, labels, 2, eps=-1), r"eps must be the official ε² > 0"),
        (
            lambda: build_redunet(Z, labels, 2, lmbda=float("nan")),
            r"lmbda must be the membership temperature",
        ),
        (lambda: build_redunet(Z, labels, 2, membership="soft"), r"membership must be one of"),
        (lambda: build_redunet(Z, labels, 2, num_classes=4), r"class\(es\) \[3\] have no samples"),
        (lambda: build_redunet(Z, labels, 2, num_classes=2), r"labels must lie in 0\.\.1"),
        (lambda: net(Z[:, :4]), r"width d=4 but this ReduNet was built for d=6"),
        (lambda: net.forward_train(Z, labels + 1), r"labels must lie in 0\.\.2"),
        (lambda: net.layers[0].direction(Z, torch.ones(38, 2)), r"memberships must have shape \(m, K\)"),
        (lambda: ReduNet(6, 3).predict(Z), r"no layers yet.*fit\(Z, labels, n_layers\)"),
        (lambda: ReduLayer(0, 3), r"dim and num_classes must be positive ints"),
        (lambda: build_redunet(Z[:0], labels[:0], 2), r"no samples"),
    ]
    for call, pattern in cases:
        with pytest.raises((ValueError, TypeError), match=pattern) as info:
            call()
        assert "\n" not in str(info.value)
