"""crate_edu.evaluation.zero_shot: the official class-embedding arithmetic, logits, predictions, data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crate_edu.evaluation import (
    class_embeddings,
    evaluate_zero_shot,
    imagenet_classnames,
    imagenet_label_map,
    imagenet_templates,
    imagenet_wnids,
    zero_shot_logits,
    zero_shot_predict,
    zero_shot_transform,
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


def test_the_wnids_are_imagenet_1k_in_label_order() -> None:
    from crate_edu.data import dataset_info, imagenet100_classes

    wnids = imagenet_wnids()
    assert len(wnids) == len(set(wnids)) == 1000 and wnids == sorted(wnids)  # ImageFolder's order
    assert all(len(w) == 9 and w[0] == "n" and w[1:].isdigit() for w in wnids)
    names = dict(zip(wnids, imagenet_classnames(), strict=True))
    assert names["n01440764"] == "tench" and names["n15075141"] == "toilet paper"
    assert set(imagenet100_classes()) <= set(wnids)
    # Imagenette's ten classes, by their wnids, carry the names Imagenette gives them
    imagenette = {
        "n01440764": "tench", "n02102040": "English Springer Spaniel", "n02979186": "cassette player",
        "n03000684": "chainsaw", "n03028079": "church", "n03394916": "French horn",
        "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
        "n03888257": "parachute",
    }  # fmt: skip
    assert {w: names[w] for w in imagenette} == imagenette
    assert [n.lower().replace(" ", "") for n in dataset_info("imagenette").classes] == [
        n.lower().replace(" ", "").replace("springerspaniel", "springer") for n in imagenette.values()
    ]


def test_label_map_places_each_folder_among_the_1000() -> None:
    assert torch.equal(imagenet_label_map(imagenet_wnids()), torch.arange(1000))
    got = imagenet_label_map(["n01443537", "n01440764", "n15075141"])
    assert got.dtype == torch.int64 and got.tolist() == [1, 0, 999]
    with pytest.raises(
        ValueError, match=r"2 class folder\(s\) are not ImageNet-1K classes \(first: cats, n0\)"
    ):
        imagenet_label_map(["n01440764", "cats", "n0"])


def test_the_transform_is_the_official_resize_crop_and_normalisation() -> None:
    """Resize(224) on the shorter side (PIL bilinear), centre crop, [0, 1], ImageNet mean and std,
    computed here by hand with PIL and numpy."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    for h, w in [(300, 500), (500, 300), (224, 224), (100, 150)]:
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        short = min(h, w)
        size = (224, int(224 * w / short)) if h <= w else (int(224 * h / short), 224)  # (H', W')
        resized = np.asarray(image.resize((size[1], size[0]), Image.BILINEAR), dtype=np.float64)
        top, left = round((size[0] - 224) / 2), round((size[1] - 224) / 2)
        crop = resized[top : top + 224, left : left + 224] / 255.0  # (224, 224, 3)
        want = torch.from_numpy(((crop - mean) / std).transpose(2, 0, 1)).float()
        got = zero_shot_transform(224)(image)
        assert got.shape == (3, 224, 224) and got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert zero_shot_transform(28)(image).shape == (3, 28, 28)


def test_evaluate_zero_shot_counts_what_zero_shot_predict_finds() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    model, W, images, labels = _toy_problem()
    wrong = (labels + 1) % 3
    loader = DataLoader(TensorDataset(images, wrong), batch_size=3)
    got = evaluate_zero_shot(model, loader, W, topk=(1, 2, 3), progress=False)
    want = zero_shot_predict(model, (images, wrong), W, progress=False, topk=(1, 2, 3)).topk_accuracy
    assert got == {"top1": want[1], "top2": pytest.approx(want[2]), "top3": want[3], "n": 7}
    assert got["top1"] == 0.0 and got["top3"] == 1.0 and 0.0 < got["top2"] < 1.0
    # label_map: the loader's labels are folder indices; map[k] is the column of folder k
    order = torch.tensor([2, 0, 1])  # folder k holds class order[k]
    folders = torch.argsort(order)[labels]  # the folder index of each image
    loader = DataLoader(TensorDataset(images, folders), batch_size=4)
    unmapped = evaluate_zero_shot(model, loader, W, topk=(1,), progress=False)
    assert unmapped == {"top1": 0.0, "n": 7}  # no class sits in the folder of its own index
    mapped = evaluate_zero_shot(model, loader, W, label_map=order, topk=(1,), progress=False)
    assert mapped == {"top1": 1.0, "n": 7}
    bf16 = evaluate_zero_shot(model, loader, W, label_map=order, topk=(1,), precision="bf16", progress=False)
    assert bf16["n"] == 7
    with pytest.raises(ValueError, match=r"topk values must be in 1..3"):
        evaluate_zero_shot(model, loader, W, progress=False)  # 5 > 3 classes
    with pytest.raises(ValueError, match="the loader is empty"):
        evaluate_zero_shot(model, [], W, topk=(1,), progress=False)
