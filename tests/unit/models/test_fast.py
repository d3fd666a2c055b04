"""crate_edu.models.fast: each fast kernel equals the reference arithmetic (forward and gradients)."""

import pytest
import torch
import torch.nn.functional as F

import crate_edu
from crate_edu.models import (
    ISTA,
    MSSA,
    CRATEAlphaLayer,
    CRATELayer,
    ViTLayer,
    fast,
    set_attention_kernel,
    set_reference,
    shared_qkv_attention,
)
from tests.unit.models.twins import ATOL, twins


# ------------------------------------------------------------------------------ MSSA's attention
def _reference_attention(w, scale):
    return torch.softmax(w @ w.transpose(-1, -2) * scale, dim=-1) @ w


@pytest.mark.parametrize(
    "block_matrices", [None, 1, 4], ids=["one block", "blocks of 1", "blocks of 4 (uneven)"]
)
@pytest.mark.parametrize("tokens", [5, 65, 197])
def test_shared_qkv_attention_equals_reference_and_sdpa(tokens, block_matrices, monkeypatch):
    # Input laid out as MSSA makes it: a head-split view of (B, N, h·p), not contiguous.
    if block_matrices is not None:
        monkeypatch.setattr(fast, "_BLOCK_BYTES", block_matrices * tokens * tokens * 4)
    torch.manual_seed(tokens)
    B, h, p = 2, 3, 16
    x = torch.randn(B, tokens, h * p)
    w = x.view(B, tokens, h, p).transpose(1, 2)
    assert not w.is_contiguous()
    g = torch.randn(B, h, tokens, p)
    outs, grads = [], []
    for fn in (
        lambda w: shared_qkv_attention(w, p**-0.5),
        lambda w: _reference_attention(w, p**-0.5),
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
    if block_matrices is not None:
        monkeypatch.setattr(fast, "_BLOCK_BYTES", block_matrices * 9 * 9 * 4)
    x = torch.randn(2, 9, 3 * 4)
    w = x.view(2, 9, 3, 4).transpose(1, 2)
    with torch.no_grad():
        evaluated = shared_qkv_attention(w, 0.5)
    trained = shared_qkv_attention(w.clone().requires_grad_(True), 0.5)
    torch.testing.assert_close(evaluated, trained.detach(), atol=0, rtol=0)
    torch.testing.assert_close(evaluated, _reference_attention(w, 0.5), atol=ATOL, rtol=1e-5)


def test_shared_qkv_attention_gradient_is_exact(monkeypatch):
    # float64 finite differences against the written-out backward, over several blocks
    for per_block, expected in [
        (2, (False, [(0, slice(0, 2)), (0, slice(2, 3)), (1, slice(0, 2)), (1, slice(2, 3))])),
        (4, (True, [(0, slice(0, 4)), (0, slice(4, 6))])),
    ]:
        monkeypatch.setattr(fast, "_BLOCK_BYTES", per_block * 7 * 7 * 8)
        assert fast._blocks(2, 3, 7, 8) == expected
        x = torch.randn(2, 7, 12, dtype=torch.float64)
        for w in (x.view(2, 7, 3, 4).transpose(1, 2), x.view(2, 3, 7, 4)):  # head-split view, contiguous
            w = w.detach().requires_grad_(True)
            assert torch.autograd.gradcheck(lambda w: shared_qkv_attention(w, 0.5), (w,))


def test_shared_qkv_attention_rejects_wrong_shape():
    with pytest.raises(ValueError, match="B, heads, N, dim_head"):
        shared_qkv_attention(torch.randn(3, 5, 8), 0.5)


def test_attention_kernel_choice():
    w = torch.randn(1, 2, 5, 4)
    assert fast._resolve_kernel("auto", w, 0.0) == "shared_qkv"  # eager float32 CPU
    assert fast._resolve_kernel("auto", w, 0.1) == "sdpa"  # attention dropout
    assert fast._resolve_kernel("auto", w.half(), 0.0) == "sdpa"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast._resolve_kernel("auto", w, 0.0) == "sdpa"
    assert fast._resolve_kernel("sdpa", w, 0.0) == "sdpa"
    with pytest.raises(ValueError, match="unknown attention kernel 'flash'"):
        MSSA(32, 4, 8, kernel="flash")
    with pytest.raises(ValueError, match="no attention dropout"):
        MSSA(32, 4, 8, dropout=0.1, kernel="shared_qkv")
    layer = CRATELayer(32, 4, 8, dropout=0.1)
    with pytest.raises(ValueError, match="no attention dropout"):
        set_attention_kernel(layer, "shared_qkv")
    assert set_attention_kernel(layer, "sdpa").mssa.kernel == "sdpa"


def test_subspace_attention_uses_the_chosen_kernel(monkeypatch):
    calls = []
    monkeypatch.setattr(fast, "shared_qkv_attention", lambda w, s: calls.append("shared_qkv") or w)
    w = torch.randn(1, 2, 5, 4)
    fast.subspace_attention(w, 0.5)  # 'auto' on eager float32 CPU
    fast.subspace_attention(w, 0.5, kernel="sdpa")
    assert calls == ["shared_qkv"]


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


# ------------------------------------------------------------------------------------ ISTA's step
def _ista(D, eta=0.1, lambd=0.1, reference=False):
    """An ISTA block with dictionary D."""
    block = ISTA(D.shape[0], eta=eta, lambd=lambd, reference=reference).to(D.dtype)
    with torch.no_grad():
        block.weight.copy_(D)
    return block


def test_folded_matrix_gradient_is_exact():
    # The hand-written gradient of A(D) = η (D^T − D^T D) against finite differences (float64)
    # and against autograd through the formula.
    D = ISTA(6, eta=0.1).double().weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda D: fast.folded_ista_matrix(D, 0.1), (D,))
    G = torch.randn(6, 6, dtype=torch.float64)
    (fast.folded_ista_matrix(D, 0.1) * G).sum().backward()
    D2 = D.detach().clone().requires_grad_(True)
    A = fast.folded_ista_matrix(D2.detach(), 0.1)
    torch.testing.assert_close(A, 0.1 * D2.t() - 0.1 * D2.t() @ D2, atol=1e-15, rtol=0)
    ((0.1 * D2.t() - 0.1 * D2.t() @ D2) * G).sum().backward()
    torch.testing.assert_close(D.grad, D2.grad, atol=1e-12, rtol=0)


@pytest.mark.parametrize("form", ["ista_two_matmuls", "ista_folded"])
def test_ista_forms_equal_the_official_step(form):
    """D^T x − D^T D x (official) = D^T (x − D x) = x (I + η D − η D^T D) − ηλ before the ReLU."""
    torch.manual_seed(6)
    D = ISTA(40).weight.detach().double()
    x = torch.randn(3, 50, 40, dtype=torch.float64)
    step = getattr(fast, form)
    with torch.no_grad():
        torch.testing.assert_close(step(x, D, 0.1, 0.1), _ista(D, reference=True)(x), atol=1e-12, rtol=0)
        x32, D32 = x.float(), D.float()
        torch.testing.assert_close(
            step(x32, D32, 0.1, 0.1), _ista(D32, reference=True)(x32), atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("d", [64, 384])
def test_folded_ista_rounds_like_the_reference_step_in_float32(d):
    """The fold keeps I out of its matrix (x + x A^T): its float32 error against float64 stays
    near the reference step's. Folding I in as well doubles the error (checked here too)."""
    torch.manual_seed(0)
    D = ISTA(d).weight.detach()
    x = F.layer_norm(torch.randn(2 * d, d), (d,))  # 2d tokens, like LN(Z)
    with torch.no_grad():
        exact = _ista(D.double(), lambd=0.0, reference=True)(x.double())

        def err(y):
            return ((y.double() - exact).abs().mean() / exact.abs().mean()).item()

        with_identity = F.relu(x @ (torch.eye(d) + 0.1 * D.t() - 0.1 * D.t() @ D).t())
        reference = err(_ista(D, lambd=0.0, reference=True)(x))
        folded = err(fast.ista_folded(x, D, 0.1, 0.0))
    assert folded < 1.4 * reference, (folded, reference)
    assert err(with_identity) > 1.7 * reference  # what keeping I apart avoids


def test_ista_fast_path_folds_only_when_it_pays(monkeypatch):
    calls = []
    monkeypatch.setattr(fast, "ista_folded", lambda x, *args: calls.append("folded") or x)
    monkeypatch.setattr(fast, "ista_two_matmuls", lambda x, *args: calls.append("two") or x)
    block = ISTA(16)
    block(torch.randn(1, 31, 16))  # 31 tokens < 2d = 32
    block(torch.randn(1, 32, 16))
    assert calls == ["two", "folded"]


# ------------------------------------------------------------------- CRATE-α's sparse coding block
def _official_overcomplete_ista(x, D, D1, eta=0.1, lambd=0.1):
    """The official einsums (``OvercompleteISTA(reference=True)``): (codes A2, out D1 A2)."""
    a1 = F.relu(eta * torch.einsum("pd,...p->...d", D, x) - eta * lambd)
    lasso_grad = torch.einsum("pd,...p->...d", D, torch.einsum("dp,...p->...d", D, a1) - x)
    a2 = F.relu(a1 - eta * lasso_grad - eta * lambd)
    return a2, torch.einsum("dp,...p->...d", D1, a2)


def _codes_and_grads(fn, x, D, D1, g_out, g_codes):
    """fn's (codes, out) and the gradients of x, D, D1 for upstream gradients of out and codes
    (``g_codes=None``: the codes are not used, as in training)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, D, D1) if t is not None]
    x, D = leaves[:2]
    codes, out = fn(x, D, leaves[2] if D1 is not None else D)  # tied: D decodes too
    loss = (out * g_out).sum() + ((codes * g_codes).sum() if g_codes is not None else 0)
    loss.backward()
    return [codes, out] + [t.grad for t in leaves]


@pytest.mark.parametrize("tied", [False, True], ids=["decoupled", "tied D1 = D"])
@pytest.mark.parametrize("codes_used", [False, True], ids=["out only", "codes used too"])
@pytest.mark.parametrize("shape", [(2, 9), (1, 1), (0, 5)], ids=["tokens", "one token", "empty"])
def test_overcomplete_ista_equals_the_official_einsums(tied, codes_used, shape):
    # float64: the same arithmetic to 1e-12; float32: equal within rounding, values and gradients
    torch.manual_seed(sum(shape) + 2 * tied + codes_used)
    d, r = 12, 4
    x = F.layer_norm(torch.randn(*shape, d, dtype=torch.float64), (d,))
    D = torch.nn.init.kaiming_uniform_(torch.empty(d, r * d, dtype=torch.float64))
    D1 = None if tied else torch.nn.init.kaiming_uniform_(torch.empty(d, r * d, dtype=torch.float64))
    g_out = torch.randn(*shape, d, dtype=torch.float64)
    g_codes = torch.randn(*shape, r * d, dtype=torch.float64) if codes_used else None
    for dtype, atol in ((torch.float64, 1e-12), (torch.float32, ATOL)):
        args = [t.to(dtype) if t is not None else None for t in (x, D, D1, g_out, g_codes)]
        ours = _codes_and_grads(lambda *a: fast.overcomplete_ista(*a, 0.1, 0.1), *args)
        official = _codes_and_grads(_official_overcomplete_ista, *args)
        names = ["codes", "out", "grad x", "grad D", "grad D1"][: len(ours)]
        for name, a, b in zip(names, ours, official, strict=True):
            assert a.shape == b.shape, name
            torch.testing.assert_close(a, b, atol=atol, rtol=1e-5, msg=f"{name}, {dtype}")
        assert (ours[0] > 0).float().mean() > 0.1 or ours[0].numel() == 0  # the ReLUs do cut


def test_overcomplete_ista_gradient_is_exact():
    # finite differences (float64) through both outputs, the written-out backward against them
    torch.manual_seed(1)
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    D = (0.5 * torch.randn(6, 24, dtype=torch.float64)).requires_grad_(True)
    D1 = torch.randn(6, 24, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: fast.overcomplete_ista(*a, 0.1, 0.1), (x, D, D1))


def test_overcomplete_ista_skips_unneeded_gradients():
    x, D, D1 = torch.randn(3, 4, 8), torch.randn(8, 32), torch.randn(8, 32, requires_grad=True)
    codes, out = fast.overcomplete_ista(x, D, D1, 0.1, 0.1)
    out.sum().backward()  # only D1 wants a gradient
    torch.testing.assert_close(D1.grad, torch.ones(3 * 4, 8).t() @ codes.reshape(-1, 32))


def test_overcomplete_ista_under_autocast_uses_autograd(monkeypatch):
    # the written-out kernel is for eager float32/64; autocast goes through the plain matmuls
    calls = []
    monkeypatch.setattr(fast, "overcomplete_ista_matmuls", lambda *a: calls.append("matmuls") or a[:2])
    x, D = torch.randn(2, 3, 8), torch.randn(8, 32)
    fast.overcomplete_ista(x, D, D, 0.1, 0.1)
    assert calls == []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast.overcomplete_ista(x, D, D, 0.1, 0.1)
    fast.overcomplete_ista(x.bfloat16(), D.bfloat16(), D.bfloat16(), 0.1, 0.1)
    assert calls == ["matmuls", "matmuls"]


def test_overcomplete_ista_matmuls_equal_the_official_einsums():
    torch.manual_seed(2)
    x, D, D1 = torch.randn(2, 7, 10), torch.randn(10, 40), torch.randn(10, 40)
    for a, b in zip(
        fast.overcomplete_ista_matmuls(x, D, D1, 0.1, 0.1), _official_overcomplete_ista(x, D, D1), strict=True
    ):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-5)


# ------------------------------------------------------------------------- the last layer, pruned
@pytest.mark.parametrize("rows", [1, 4])
@pytest.mark.parametrize(
    "make",
    [
        lambda ref: CRATELayer(32, 4, 8, reference=ref),
        lambda ref: CRATEAlphaLayer(32, 4, 8, reference=ref),
        lambda ref: CRATEAlphaLayer(32, 4, 8, reference=ref, residual=False),
        lambda ref: ViTLayer(32, 4, 8, hidden_dim=64, dropout=0.0, reference=ref),
    ],
    ids=["crate", "crate_alpha", "crate_alpha_no_residual", "vit"],
)
def test_layer_rows_are_the_first_rows_of_the_reference_layer(make, rows):
    """A layer's output at its first rows needs every token as a key and value, only those rows as
    queries: forward and every gradient equal the reference layer's, cut to those rows."""
    fast_layer, reference = twins(make)
    x = torch.randn(2, 11, 32)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y1, y2 = fast._layer_rows(fast_layer, x1, rows), reference(x2)[:, :rows]
    assert y1.shape == (2, rows, 32)
    torch.testing.assert_close(y1, y2, atol=ATOL, rtol=1e-5)
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    assert x1.grad[:, rows:].abs().sum() > 0  # the other tokens matter, as keys and values
    torch.testing.assert_close(x1.grad, x2.grad, atol=ATOL, rtol=1e-5)
    for (n1, p1), (_, p2) in zip(fast_layer.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, atol=ATOL, rtol=1e-5, msg=f"gradient of {n1}")


def _last_block_inputs(model):
    """Shapes of what the last layer's token-wise block (ISTA / MLP) receives, per forward."""
    seen = []
    block = model.transformer.layers[-1][1]
    block.register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape)))
    return seen


@pytest.mark.parametrize("name", ["crate_nano_cifar", "crate_alpha_nano_cifar", "vit_nano_cifar"])
def test_fast_forward_computes_only_the_cls_row_of_the_last_layer(name):
    """pool='cls': the head reads one row, so the fast path's last layer computes only that row;
    logits and every gradient equal those of the same model computing every row."""
    torch.manual_seed(0)
    pruned = crate_edu.create_model(name, depth=2)
    full = crate_edu.create_model(name, depth=2)
    full.load_state_dict(pruned.state_dict())
    full.prune_last_layer = False
    assert fast.prunes_last_layer(pruned) and not fast.prunes_last_layer(full)
    seen_pruned, seen_full = _last_block_inputs(pruned), _last_block_inputs(full)
    x = torch.randn(4, 3, 32, 32)
    y1, y2 = pruned(x), full(x)
    n = pruned.config.num_patches + 1
    assert seen_pruned == [(4, 1, pruned.config.dim)] and seen_full == [(4, n, full.config.dim)]
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    y1.square().sum().backward()
    y2.square().sum().backward()
    for (n1, p1), p2 in zip(pruned.named_parameters(), full.parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, atol=1e-5, rtol=1e-5, msg=n1)
    # the features API still returns every token
    assert pruned.forward_features(x).shape == (4, n, pruned.config.dim)


def test_last_layer_is_computed_in_full_when_every_row_is_read():
    torch.manual_seed(0)
    mean_pool = crate_edu.create_model("crate_nano_cifar", depth=2, pool="mean")
    reference = set_reference(crate_edu.create_model("crate_nano_cifar", depth=2), True)
    n = mean_pool.config.num_patches + 1
    for model in (mean_pool, reference):
        assert not fast.prunes_last_layer(model)
        seen = _last_block_inputs(model)
        model(torch.randn(2, 3, 32, 32))
        assert seen == [(2, n, model.config.dim)]
