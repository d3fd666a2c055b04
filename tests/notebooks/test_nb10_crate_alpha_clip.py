"""The numerical claims of notebook 10 (CRATE-α-CLIP), as tests."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

import crate_edu
from crate_edu.data import HELD_OUT_TEMPLATES, CaptionTokenizer
from crate_edu.evaluation import class_embeddings, imagenet_templates, zero_shot_logits, zero_shot_transform
from crate_edu.models import CRATEAlphaCLIPA
from crate_edu.train import contrastive_loss, resize_positional_embedding
from tests.support.paths import FIXTURES

F64 = torch.float64


def infonce_by_hand(u, v, tau):
    """§2: the symmetric InfoNCE, one term at a time."""
    u = [row / (row.norm() + 1e-8) for row in u]
    v = [row / (row.norm() + 1e-8) for row in v]
    n = len(u)
    s = [[tau * float(u[i] @ v[j]) for j in range(n)] for i in range(n)]
    rows = sum(-(s[i][i] - math.log(sum(math.exp(s[i][j]) for j in range(n)))) for i in range(n)) / n
    cols = sum(-(s[j][j] - math.log(sum(math.exp(s[i][j]) for i in range(n)))) for j in range(n)) / n
    return (rows + cols) / 2


def test_infonce_is_the_formula_and_log_n_at_zero_scale():
    torch.manual_seed(1)
    u, v = torch.randn(6, 16, dtype=F64), torch.randn(6, 16, dtype=F64)
    assert abs(contrastive_loss(u, v, 1 / 0.07).item() - infonce_by_hand(u, v, 1 / 0.07)) < 1e-5
    assert abs(contrastive_loss(u, v, 0.0).item() - math.log(6)) < 1e-6


def test_gradient_with_respect_to_the_logits_has_the_closed_form():
    torch.manual_seed(1)
    S = torch.randn(6, 6, dtype=F64).mul(5).requires_grad_()
    t = torch.arange(6)
    ((F.cross_entropy(S, t) + F.cross_entropy(S.T, t)) / 2).backward()
    eye = torch.eye(6, dtype=F64)
    closed = ((S.softmax(1) - eye) + (S.softmax(0) - eye)).detach() / 12
    torch.testing.assert_close(S.grad, closed, atol=1e-12, rtol=0)


def test_exercise_1_perfect_model_loss():
    N, c, tau = 8, 0.3, 1 / 0.07
    u = torch.cat([(1 - c) ** 0.5 * torch.eye(N), torch.full((N, 1), c**0.5)], dim=1)
    gram = u @ u.T
    torch.testing.assert_close(gram, torch.full((N, N), c) + (1 - c) * torch.eye(N), atol=1e-6, rtol=0)
    expected = math.log(1 + (N - 1) * math.exp(-tau * (1 - c)))
    assert abs(contrastive_loss(u, u, tau).item() - expected) < 1e-6


def test_flattened_position_resize_is_half_pixel_linear_interpolation():
    torch.manual_seed(2)
    low = torch.randn(37, 8, dtype=F64)
    full = resize_positional_embedding(low, 257).double()
    centres = (torch.arange(257, dtype=F64) + 0.5) * 37 / 257 - 0.5
    left = centres.floor().clamp(0, 36).long()
    w = (centres - left).clamp(0, 1)[:, None]
    by_hand = (1 - w) * low[left] + w * low[(left + 1).clamp(max=36)]
    torch.testing.assert_close(full, by_hand, atol=5e-5, rtol=0)
    copies = int((full - low[0]).abs().amax(dim=1).lt(1e-6).sum())
    assert copies == 3  # the new [CLS] row and the first two patch rows: the old [CLS] row


def test_class_embeddings_by_hand_on_the_shipped_model():
    model, _ = crate_edu.load_tutorial_model("cluttered-digits-crate-alpha-clipa")
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    tokenize = CaptionTokenizer(model.config.context_length)
    W = class_embeddings(model.encode_text, tokenize, words, HELD_OUT_TEMPLATES, progress=False)
    with torch.no_grad():
        cols = []
        for word in words:
            f = model.encode_text(tokenize([t.format(word) for t in HELD_OUT_TEMPLATES]))
            f = f / (f.norm(dim=-1, keepdim=True) + 1e-8)
            cols.append(f.mean(0) / f.mean(0).norm())
    torch.testing.assert_close(torch.stack(cols, dim=1), W, atol=1e-6, rtol=0)


def test_the_photo_demonstration_runs_with_a_small_model_and_vocabulary():
    """§8 with stand-ins for what is not here: a small random CLIPA instead of L/14 and the test
    vocabulary instead of bert-base-uncased's; the preprocessing and the calls are the notebook's."""
    from PIL import Image

    from crate_edu.text import CLIPATokenizer

    tokenize = CLIPATokenizer(FIXTURES / "bert_uncased_vocab_small.txt")
    torch.manual_seed(0)
    model = CRATEAlphaCLIPA(
        image_size=224, patch_size=56, vision_width=32, vision_depth=1, vision_heads=2,
        vocab_size=tokenize.vocab_size, text_width=32, text_depth=1, text_heads=2, embed_dim=16,
    ).eval()  # fmt: skip
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)) for _ in range(2)]
    batch = torch.stack([zero_shot_transform(224)(p) for p in photos])
    assert batch.shape == (2, 3, 224, 224)
    names = ["cat", "dog", "car"]
    W = class_embeddings(model.encode_text, tokenize, names, imagenet_templates()[:10], progress=False)
    with torch.no_grad():
        probs = zero_shot_logits(model.encode_image(batch), W).softmax(-1)
    assert probs.shape == (2, 3) and torch.allclose(probs.sum(-1), torch.ones(2))
