"""crate_edu.evaluation.zero_shot: the official class-embedding arithmetic, logits, predictions, data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crate_edu.evaluation import (
    class_embeddings,
    imagenet_classnames,
    imagenet_templates,
    zero_shot_logits,
    zero_shot_predict,
)

WORDS = ["cat", "dog", "bird", "a", "photo", "of", "the", "sketch", "big"]


def toy_tokenize(texts: list[str]) -> torch.Tensor:
    """Word ids (B, 6), padded with 0 (word k has id k + 1)."""
    ids = [[WORDS.index(w) + 1 for w in t.rstrip(".").split()][:6] for t in texts]
    return torch.tensor([row + [0] * (6 - len(row)) for row in ids], dtype=torch.long)


class BagOfWords(nn.Module):
    """Text: a sum of word vectors; image: the pixel mean over space (B, E). E = 3 channels."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.words = nn.Parameter(torch.randn(len(WORDS) + 1, 3, generator=g))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        vec = self.words[tokens]  # (B, L, E)
        return (vec * (tokens > 0)[..., None]).sum(dim=1)  # (B, E)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))  # (B, 3)


def test_class_embeddings_equal_a_direct_per_class_loop() -> None:
    model = BagOfWords()
    classes, templates = ["cat", "dog", "bird"], ["a photo of a {}.", "a sketch of the {}.", "the big {}"]
    got = class_embeddings(model.encode_text, toy_tokenize, classes, templates, batch_size=2, progress=False)
    columns = []
    for name in classes:  # as eval_in1k.py: one class at a time, all its templates in one batch
        with torch.no_grad():
            e = model.encode_text(toy_tokenize([t.format(name) for t in templates]))  # (T, E)
        e = e / (e.norm(dim=-1, keepdim=True) + 1e-8)
        mean = e.mean(dim=0)
        columns.append(mean / mean.norm())
    want = torch.stack(columns, dim=1)  # (E, C)
    assert got.shape == (3, 3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.norm(dim=0), torch.ones(3), rtol=1e-5, atol=1e-6)


def test_class_embeddings_add_eps_per_template_and_not_after_the_mean() -> None:
    # Template "one" embeds to 1e-8 · a (tiny), template "two" to 10 · b, a ⟂ b unit vectors.
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])

    def encode(tokens: torch.Tensor) -> torch.Tensor:
        one = (tokens[:, :1] == 1).double()  # (B, 1)
        return one * 1e-8 * a.double() + (1 - one) * 10.0 * b.double()  # (B, 3)

    def tokenize(texts: list[str]) -> torch.Tensor:
        return torch.tensor([[1 if t.startswith("one") else 2] for t in texts])

    W = class_embeddings(encode, tokenize, ["x"], ["one {}", "two {}"], progress=False)
    # Per template e / (‖e‖ + 1e-8): "one" becomes a / 2, "two" becomes b (to 1e-9), so the column
    # is the direction of a / 2 + b; without the eps it would be that of a + b.
    want = (a / 2 + b) / (a / 2 + b).norm()
    torch.testing.assert_close(W[:, 0], want, rtol=1e-6, atol=1e-6)
    # No eps after the mean, as officially: a class whose prompts all embed to zero is 0 / 0.
    W0 = class_embeddings(lambda t: torch.zeros(len(t), 3), tokenize, ["x"], ["one {}"], progress=False)
    assert torch.isnan(W0).all()


def test_class_embeddings_reject_bad_templates() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        class_embeddings(BagOfWords().encode_text, toy_tokenize, ["cat"], ["a photo"], progress=False)


def test_logits_equal_a_direct_computation() -> None:
    g = torch.Generator().manual_seed(1)
    img, W = torch.randn(5, 4, generator=g), torch.randn(4, 7, generator=g)
    W = W / W.norm(dim=0, keepdim=True)
    want = torch.empty(5, 7)
    for i in range(5):
        for c in range(7):
            want[i, c] = 100.0 * float(img[i] @ W[:, c]) / (float(img[i].norm()) + 1e-8)
    torch.testing.assert_close(zero_shot_logits(img, W), want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(zero_shot_logits(img, W, scale=2.0), want / 50, rtol=1e-5, atol=1e-5)
    assert torch.equal(zero_shot_logits(torch.zeros(1, 4), W), torch.zeros(1, 7))  # 0 / (0 + 1e-8)
    with pytest.raises(ValueError, match=r"\(N, E\)"):
        zero_shot_logits(img, W.T)


def _toy_problem():
    """Images whose mean colour is the word vector of their class: the answer is known."""
    model = BagOfWords()
    classes = ["cat", "dog", "bird"]
    W = class_embeddings(model.encode_text, toy_tokenize, classes, ["{}"], progress=False)  # (3, 3)
    labels = torch.tensor([2, 0, 1, 1, 0, 2, 2])
    g = torch.Generator().manual_seed(3)
    colour = model.words.detach()[labels + 1]  # (7, 3): the class's word vector
    images = colour[:, :, None, None] * (1 + 0.01 * torch.rand(7, 3, 4, 4, generator=g))  # (7, 3, 4, 4)
    return model, W, images, labels


def test_predictions_of_a_toy_model_are_the_known_answer() -> None:
    model, W, images, labels = _toy_problem()
    result = zero_shot_predict(model, (images, labels), W, batch_size=3, progress=False, topk=(1, 2))
    assert torch.equal(result.preds, labels)
    assert torch.equal(result.targets, labels)
    assert result.topk_accuracy == {1: 1.0, 2: 1.0}
    want = 100.0 * (images.mean(dim=(2, 3)) / images.mean(dim=(2, 3)).norm(dim=-1, keepdim=True)) @ W
    torch.testing.assert_close(result.logits, want, rtol=1e-5, atol=1e-4)
    # Wrong labels: top-1 is 0, and top-3 of 3 classes is always right.
    wrong = (labels + 1) % 3
    result = zero_shot_predict(model, (images, wrong), W, batch_size=4, progress=False, topk=(1, 3))
    assert result.topk_accuracy == {1: 0.0, 3: 1.0}


def test_predictions_without_labels_and_a_bad_topk() -> None:
    model, W, images, labels = _toy_problem()
    result = zero_shot_predict(model, images, W, batch_size=5, progress=False)  # default topk (1, 5)
    assert torch.equal(result.preds, labels)
    assert result.targets is None and result.topk_accuracy == {}
    with pytest.raises(ValueError, match="topk"):
        zero_shot_predict(model, (images, labels), W, progress=False)  # 5 > 3 classes, with labels


def test_resources_hold_the_official_names_and_templates() -> None:
    names, templates = imagenet_classnames(), imagenet_templates()
    assert len(names) == 1000 and len(templates) == 80
    assert names[:3] == ["tench", "goldfish", "great white shark"] and names[21] == "kite (bird of prey)"
    assert names[-1] == "toilet paper"
    # OpenAI CLIP's list, kept verbatim: two names occur twice, so 998 are distinct.
    assert len(set(names)) == 998
    assert [i for i, n in enumerate(names) if n in ("missile", "sunglasses")] == [657, 744, 836, 837]
    assert all(n == n.strip() and n for n in names)
    assert len(set(templates)) == 80 and all(t.count("{}") == 1 for t in templates)
    assert templates[0] == "a bad photo of a {}." and templates[-1] == "a tattoo of the {}."
