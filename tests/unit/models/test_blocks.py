"""The fast path of every block equals its derivation-literal twin (forward and gradients)."""

import pytest
import torch
import torch.nn.functional as F

from crate_edu.models.blocks import (
    ISTA,
    MSSA,
    CRATEAlphaLayer,
    CRATEDecoderLayer,
    CRATELayer,
    OvercompleteISTA,
    Transformer,
    set_attention_kernel,
    set_literal,
    shared_qkv_attention,
)
from crate_edu.models.vit import ViTLayer

ATOL = 1e-5  # float32, equal computations in a different order


def _twins(make, seed=0):
    torch.manual_seed(seed)
    fast = make(False)
    literal = make(True)
    literal.load_state_dict(fast.state_dict())
    return fast, literal


def _assert_same_forward_and_grads(fast, literal, x, atol=ATOL):
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    y1, y2 = fast(x1), literal(x2)
    torch.testing.assert_close(y1, y2, atol=atol, rtol=1e-5)
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=atol, rtol=1e-5)
    for (n1, p1), (_, p2) in zip(fast.named_parameters(), literal.named_parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, atol=atol, rtol=1e-5, msg=f"gradient of {n1}")


@pytest.mark.parametrize("kernel", ["auto", "sdpa", "shared_qkv"])
@pytest.mark.parametrize("heads,dim_head", [(4, 16), (6, 8), (1, 32)])
def test_mssa_fast_equals_literal(heads, dim_head, kernel):
    fast, literal = _twins(lambda lit: MSSA(32, heads, dim_head, literal=lit, kernel=kernel))
    _assert_same_forward_and_grads(fast, literal, torch.randn(3, 17, 32))


def _literal_attention(w, scale):
    return torch.softmax(w @ w.transpose(-1, -2) * scale, dim=-1) @ w


@pytest.mark.parametrize(
    "block_matrices", [None, 1, 4], ids=["one block", "blocks of 1", "blocks of 4 (uneven)"]
)
@pytest.mark.parametrize("tokens", [5, 65, 197])
def test_shared_qkv_attention_equals_literal_and_sdpa(tokens, block_matrices, monkeypatch):
    # Input laid out as MSSA makes it: a head-split view of (B, N, h·p), not contiguous.
    import crate_edu.models.blocks as blocks

    if block_matrices is not None:
        monkeypatch.setattr(blocks, "_BLOCK_BYTES", block_matrices * tokens * tokens * 4)
    torch.manual_seed(tokens)
    B, h, p = 2, 3, 16
    x = torch.randn(B, tokens, h * p)
    w = x.view(B, tokens, h, p).transpose(1, 2)
    assert not w.is_contiguous()
    g = torch.randn(B, h, tokens, p)
    outs, grads = [], []
    for fn in (
        lambda w: shared_qkv_attention(w, p**-0.5),
        lambda w: _literal_attention(w, p**-0.5),
        lambda w: F.scaled_dot_product_attention(w, w, w, scale=p**-0.5),
    ):
        wi = w.detach().clone().requires_grad_(True)
        out = fn(wi)
        (out * g).sum().backward()
        outs.append(out)
        grads.append(wi.grad)
    for out, grad in zip(outs[1:], grads[1:], strict=True):
        torch.testing.assert_close(outs[0], out, atol=ATOL, rtol=1e-5)
        torch.testing.assert_close(grads[0], grad, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("block_matrices", [None, 2])
def test_shared_qkv_attention_without_grad_keeps_no_probabilities(block_matrices, monkeypatch):
    # evaluation: one block of scratch instead of every P; the output is the same
    import crate_edu.models.blocks as blocks

    if block_matrices is not None:
        monkeypatch.setattr(blocks, "_BLOCK_BYTES", block_matrices * 9 * 9 * 4)
    x = torch.randn(2, 9, 3 * 4)
    w = x.view(2, 9, 3, 4).transpose(1, 2)
    with torch.no_grad():
        evaluated = shared_qkv_attention(w, 0.5)
    trained = shared_qkv_attention(w.clone().requires_grad_(True), 0.5)
    torch.testing.assert_close(evaluated, trained.detach(), atol=0, rtol=0)
    torch.testing.assert_close(evaluated, _literal_attention(w, 0.5), atol=ATOL, rtol=1e-5)


def test_shared_qkv_attention_gradient_is_exact(monkeypatch):
    # float64 finite differences against the written-out backward, over several blocks
    import crate_edu.models.blocks as blocks

    for per_block, expected in [
        (2, (False, [(0, slice(0, 2)), (0, slice(2, 3)), (1, slice(0, 2)), (1, slice(2, 3))])),
        (4, (True, [(0, slice(0, 4)), (0, slice(4, 6))])),
    ]:
        monkeypatch.setattr(blocks, "_BLOCK_BYTES", per_block * 7 * 7 * 8)
        assert blocks._blocks(2, 3, 7, 8) == expected
        x = torch.randn(2, 7, 12, dtype=torch.float64)
        for w in (x.view(2, 7, 3, 4).transpose(1, 2), x.view(2, 3, 7, 4)):  # head-split view, contiguous
            w = w.detach().requires_grad_(True)
            assert torch.autograd.gradcheck(lambda w: shared_qkv_attention(w, 0.5), (w,))


def test_shared_qkv_attention_rejects_wrong_shape():
    with pytest.raises(ValueError, match="B, heads, N, dim_head"):
        shared_qkv_attention(torch.randn(3, 5, 8), 0.5)


def test_attention_kernel_choice():
    import crate_edu.models.blocks as blocks

    w = torch.randn(1, 2, 5, 4)
    assert blocks._resolve_kernel("auto", w, 0.0) == "shared_qkv"  # eager float32 CPU
    assert blocks._resolve_kernel("auto", w, 0.1) == "sdpa"  # attention dropout
    assert blocks._resolve_kernel("auto", w.half(), 0.0) == "sdpa"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert blocks._resolve_kernel("auto", w, 0.0) == "sdpa"
    assert blocks._resolve_kernel("sdpa", w, 0.0) == "sdpa"
    with pytest.raises(ValueError, match="unknown attention kernel 'flash'"):
        MSSA(32, 4, 8, kernel="flash")
    with pytest.raises(ValueError, match="no attention dropout"):
        MSSA(32, 4, 8, dropout=0.1, kernel="shared_qkv")
    layer = CRATELayer(32, 4, 8, dropout=0.1)
    with pytest.raises(ValueError, match="no attention dropout"):
        set_attention_kernel(layer, "shared_qkv")
    assert set_attention_kernel(layer, "sdpa").mssa.kernel == "sdpa"


def test_mssa_kernels_under_cpu_autocast_agree():
    # 'auto' falls back to scaled_dot_product_attention under bf16 autocast; same result as 'sdpa'
    torch.manual_seed(0)
    block = MSSA(32, 4, 8)
    x = torch.randn(2, 9, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = block(x)
        set_attention_kernel(block, "sdpa")
        sdpa = block(x)
    torch.testing.assert_close(auto, sdpa, atol=0, rtol=0)


def test_mssa_identity_output_when_one_full_head():
    # As officially: with one head of the full width there is nothing to map back.
    assert isinstance(MSSA(32, heads=1, dim_head=32).to_out, torch.nn.Identity)


def test_mssa_attention_maps_are_what_the_output_uses():
    torch.manual_seed(0)
    block = MSSA(32, heads=4, dim_head=8).eval()
    x = torch.randn(2, 10, 32)
    out, attn = block(x, return_attn=True)
    assert attn.shape == (2, 4, 10, 10)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, 10))
    w = block.project(x)  # (B, h, N, p)
    manual = block.to_out((attn @ w).transpose(1, 2).reshape(2, 10, 32))
    torch.testing.assert_close(out, manual)
    torch.testing.assert_close(out, block(x), atol=ATOL, rtol=1e-5)
    # q = k = v: the scores are symmetric, so before the softmax the map is w w^T / sqrt(p)
    scores = w @ w.transpose(-1, -2) / 8**0.5
    torch.testing.assert_close(attn, scores.softmax(-1))


def test_folded_matrix_gradient_is_exact():
    # The hand-written gradient of A(D) = η (D^T − D^T D) against finite differences (float64)
    # and against autograd through the formula.
    block = ISTA(6, eta=0.1).double()
    D = block.weight.detach().clone().requires_grad_(True)
    from crate_edu.models.blocks import _FoldedISTAMatrix

    assert torch.autograd.gradcheck(lambda D: _FoldedISTAMatrix.apply(D, 0.1), (D,))
    G = torch.randn(6, 6, dtype=torch.float64)
    (_FoldedISTAMatrix.apply(D, 0.1) * G).sum().backward()
    D2 = D.detach().clone().requires_grad_(True)
    A = _FoldedISTAMatrix.apply(D2.detach(), 0.1)
    torch.testing.assert_close(A, 0.1 * D2.t() - 0.1 * D2.t() @ D2, atol=1e-15, rtol=0)
    ((0.1 * D2.t() - 0.1 * D2.t() @ D2) * G).sum().backward()
    torch.testing.assert_close(D.grad, D2.grad, atol=1e-12, rtol=0)


@pytest.mark.parametrize("tokens", [9, 120], ids=["two-matmul path", "folded path"])
def test_ista_fast_equals_literal(tokens):
    fast, literal = _twins(lambda lit: ISTA(48, eta=0.1, lambd=0.1, literal=lit))
    _assert_same_forward_and_grads(fast, literal, torch.randn(2, tokens, 48))


@pytest.mark.parametrize("form", ["step_two_matmuls", "step_folded"])
def test_ista_forms_equal_the_official_step(form):
    """D^T x − D^T D x (official) = D^T (x − D x) = x (I + η D − η D^T D) − ηλ before the ReLU."""
    torch.manual_seed(6)
    block = ISTA(40, eta=0.1, lambd=0.1)
    x = torch.randn(3, 50, 40, dtype=torch.float64)
    block.double()
    torch.testing.assert_close(getattr(block, form)(x), block.step_literal(x), atol=1e-12, rtol=0)
    x32 = x.float()
    block.float()
    torch.testing.assert_close(getattr(block, form)(x32), block.step_literal(x32), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("d", [64, 384])
def test_folded_ista_rounds_like_the_literal_step_in_float32(d):
    """The fold keeps I out of its matrix (x + x A^T): its float32 error against float64 stays
    near the literal step's. Folding I in as well doubles the error (checked here too)."""
    torch.manual_seed(0)
    block = ISTA(d, eta=0.1, lambd=0.0)
    x = F.layer_norm(torch.randn(2 * d, d), (d,))  # 2d tokens, like LN(Z)
    with torch.no_grad():
        exact = block.double().step_literal(x.double())
        block.float()

        def err(y):
            return ((y.double() - exact).abs().mean() / exact.abs().mean()).item()

        D = block.weight
        with_identity = F.relu(x @ (torch.eye(d) + 0.1 * D.t() - 0.1 * D.t() @ D).t())
        literal, folded = err(block.step_literal(x)), err(block.step_folded(x))
    assert folded < 1.4 * literal, (folded, literal)
    assert err(with_identity) > 1.7 * literal  # what keeping I apart avoids


def test_ista_fast_path_folds_only_when_it_pays(monkeypatch):
    block = ISTA(16)
    calls = []
    monkeypatch.setattr(block, "step_folded", lambda x: calls.append("folded") or x)
    monkeypatch.setattr(block, "step_two_matmuls", lambda x: calls.append("two") or x)
    block(torch.randn(1, 31, 16))  # 31 tokens < 2d = 32
    block(torch.randn(1, 32, 16))
    assert calls == ["two", "folded"]


def test_ista_is_one_proximal_step_of_the_formula():
    torch.manual_seed(1)
    block = ISTA(16, eta=0.3, lambd=0.2)
    x = torch.randn(4, 16)
    D = block.weight
    # column-vector form of eq. 17: ReLU(z + η D^T (z − D z) − η λ) with z = x
    expected = F.relu(x.T + 0.3 * D.T @ (x.T - D @ x.T) - 0.3 * 0.2).T
    torch.testing.assert_close(block(x), expected)


def _lasso(z, x, D, lam):
    """λ‖z‖₁ + ½‖x − D z‖², summed over tokens (tokens as rows)."""
    return lam * z.abs().sum() + 0.5 * ((x - z @ D.T) ** 2).sum()


@pytest.mark.parametrize("lam", [0.05, 0.1, 0.5])
def test_ista_step_decreases_lasso_objective_for_small_eta(lam):
    torch.manual_seed(2)
    d = 24
    block = ISTA(d, lambd=lam)
    D = block.weight.detach()
    lipschitz = torch.linalg.matrix_norm(D, ord=2) ** 2  # ‖D‖₂²
    block.eta = float(0.9 / lipschitz)  # η < 1/L guarantees descent
    x = torch.rand(64, d)  # non-negative, so the warm start z = x is feasible
    with torch.no_grad():
        z1 = block(x)
        before, after = _lasso(x, x, D, lam), _lasso(z1, x, D, lam)
    assert (z1 >= 0).all()
    assert after < before, (before.item(), after.item())


def test_overcomplete_ista_fast_equals_literal():
    fast, literal = _twins(lambda lit: OvercompleteISTA(16, overcomplete_ratio=4, literal=lit))
    _assert_same_forward_and_grads(fast, literal, torch.randn(2, 5, 16))


def test_overcomplete_ista_is_two_ista_steps_from_zero():
    torch.manual_seed(3)
    block = OvercompleteISTA(8, overcomplete_ratio=4, eta=0.1, lambd=0.1)
    x = torch.randn(5, 8)
    D, D1 = block.D.detach(), block.D1.detach()
    a = torch.zeros(5, 32)
    for _ in range(2):  # a ← ReLU(a − η D^T (D a − x) − η λ), tokens as rows
        a = F.relu(a - 0.1 * (a @ D.T - x) @ D - 0.01)
    torch.testing.assert_close(block.codes(x), a)
    torch.testing.assert_close(block(x), a @ D1.T)


@pytest.mark.parametrize(
    "make",
    [
        lambda lit: CRATELayer(32, 4, 8, literal=lit),
        lambda lit: CRATEAlphaLayer(32, 4, 8, literal=lit),
        lambda lit: CRATEDecoderLayer(32, 4, 8, literal=lit),
    ],
    ids=["crate", "crate_alpha", "crate_mae_decoder"],
)
def test_layers_fast_equal_literal_and_trace_matches(make):
    fast, literal = _twins(make)
    x = torch.randn(2, 11, 32)
    _assert_same_forward_and_grads(fast, literal, x)
    with torch.no_grad():
        out, trace = fast(x, return_trace=True)
    torch.testing.assert_close(out, fast(x), atol=ATOL, rtol=1e-5)
    assert trace.proj.shape == (2, 4, 11, 8) and trace.attn.shape == (2, 4, 11, 11)
    assert trace.z_half.shape == trace.z_out.shape == (2, 11, 32)
    torch.testing.assert_close(trace.z_out, out)


@pytest.mark.parametrize("rows", [1, 4])
@pytest.mark.parametrize(
    "make",
    [
        lambda lit: CRATELayer(32, 4, 8, literal=lit),
        lambda lit: CRATEAlphaLayer(32, 4, 8, literal=lit),
        lambda lit: ViTLayer(32, 4, 8, hidden_dim=64, dropout=0.0, literal=lit),
    ],
    ids=["crate", "crate_alpha", "vit"],
)
def test_layer_forward_rows_is_the_first_rows_of_the_literal_layer(make, rows):
    """A layer's output at its first rows needs every token as a key and value, only those rows as
    queries: forward and every gradient equal the literal layer's, cut to those rows."""
    fast, literal = _twins(make)
    x = torch.randn(2, 11, 32)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y1, y2 = fast.forward_rows(x1, rows), literal(x2)[:, :rows]
    assert y1.shape == (2, rows, 32)
    torch.testing.assert_close(y1, y2, atol=ATOL, rtol=1e-5)
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    assert x1.grad[:, rows:].abs().sum() > 0  # the other tokens matter, as keys and values
    torch.testing.assert_close(x1.grad, x2.grad, atol=ATOL, rtol=1e-5)
    for (n1, p1), (_, p2) in zip(fast.named_parameters(), literal.named_parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, atol=ATOL, rtol=1e-5, msg=f"gradient of {n1}")


def test_transformer_rows_runs_only_the_last_layer_on_those_rows():
    torch.manual_seed(0)
    stack = Transformer([CRATELayer(32, 4, 8) for _ in range(3)])
    seen = []
    for layer in stack.layers:
        layer[1].register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape)))
    x = torch.randn(2, 11, 32)
    full = stack(x)
    assert seen == [(2, 11, 32)] * 3
    seen.clear()
    torch.testing.assert_close(stack(x, rows=1), full[:, :1], atol=ATOL, rtol=1e-5)
    assert seen == [(2, 11, 32), (2, 11, 32), (2, 1, 32)]  # ISTA of the last layer: one row


def test_crate_layer_structure():
    """Z^{ℓ+½} = Z + MSSA(LN Z); Z^{ℓ+1} = ISTA(LN Z^{ℓ+½}) with no residual around ISTA."""
    torch.manual_seed(4)
    layer = CRATELayer(32, 4, 8).eval()
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        _, trace = layer(x, return_trace=True)
        z_half = x + layer.mssa(layer[0].norm(x))
        torch.testing.assert_close(trace.z_half, z_half, atol=ATOL, rtol=1e-5)
        torch.testing.assert_close(trace.z_out, layer.ista(layer[1].norm(z_half)), atol=ATOL, rtol=1e-5)
        torch.testing.assert_close(trace.proj, layer.mssa.project(layer[0].norm(x)))
    assert (trace.z_out >= 0).all()  # the ReLU output replaces the stream


def test_decoder_layer_structure():
    """Z̃^{ℓ+½} = D̃ LN(Z̃); Z̃^{ℓ+1} = Z̃^{ℓ+½} − MSSA(LN Z̃^{ℓ+½})."""
    torch.manual_seed(5)
    layer = CRATEDecoderLayer(32, 4, 8).eval()
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        _, trace = layer(x, return_trace=True)
        z_half = layer[0].norm(x) @ layer[0].fn.weight.T
        torch.testing.assert_close(trace.z_half, z_half)
        torch.testing.assert_close(
            trace.z_out, z_half - layer.mssa(layer[1].norm(z_half)), atol=ATOL, rtol=1e-5
        )


def test_set_literal_switches_every_block():
    layer = CRATEAlphaLayer(16, 2, 8)
    set_literal(layer, True)
    assert layer.mssa.literal and layer.ista.literal
    set_literal(layer, False)
    assert not layer.mssa.literal and not layer.ista.literal
