"""Zero-shot classification with a CLIP-style model: each class is the text embedding of its prompts.

    from crate_edu.evaluation.zero_shot import (
        class_embeddings, imagenet_classnames, imagenet_templates, zero_shot_predict)
    W = class_embeddings(model.encode_text, tokenize, imagenet_classnames(), imagenet_templates())  # (E, C)
    result = zero_shot_predict(model, (images, labels), W, batch_size=64)
    result.topk_accuracy[1], result.topk_accuracy[5]                     # top-1 and top-5, fractions
    evaluate_zero_shot(model, loader, W)   # {"top1", "top5", "n"} over a DataLoader, counts only

``tokenize`` is e.g. :class:`crate_edu.text.CLIPATokenizer`; ``crate-edu eval WEIGHTS --zero-shot``
runs the whole official ImageNet evaluation (the images through :func:`zero_shot_transform`).

The arithmetic is the official CRATE-α-CLIPA evaluation's (``torch_inference/eval_in1k.py``, see
``docs/notes/crate_alpha_official_code.md`` §2.3):

1. every class name is put into every template (``"a bad photo of a {}."``) and encoded;
2. each template's embedding is divided by its norm + 1e-8, the embeddings of a class are averaged
   over templates, and the mean is divided by its norm (no 1e-8 there, as officially);
3. an image's features are divided by their norm + 1e-8, and its logits are
   ``100 · image @ W``: scaled cosine similarities to every class; the prediction is the nearest class.

The class names and the 80 templates are the official ones, shipped as data in
``crate_edu/resources/`` with the 1000 WordNet ids of ImageNet-1K in label order (sorted, as
torchvision's ``ImageFolder`` orders the class folders of ``val/``), so that a folder holding some
of the classes is scored against all 1000 (:func:`imagenet_label_map`). The class-name list is
OpenAI CLIP's, kept verbatim: it names two pairs of ImageNet classes alike ("missile" at 657 and
744, "sunglasses" at 836 and 837), so those pairs get identical embeddings and tie, as they do
officially.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from crate_edu.data.base import IMAGENET_MEAN, IMAGENET_STD
from crate_edu.device import autocast
from crate_edu.evaluation.batches import iter_batches
from crate_edu.models.crate_alpha_clipa import normalize

__all__ = [  # in the order the module defines them
    "imagenet_classnames",
    "imagenet_templates",
    "imagenet_wnids",
    "imagenet_label_map",
    "zero_shot_transform",
    "class_embeddings",
    "zero_shot_logits",
    "ZeroShotPredictions",
    "zero_shot_predict",
    "evaluate_zero_shot",
]


# --------------------------------------------------------------------------------------------
# The official class names and prompt templates (data).
# --------------------------------------------------------------------------------------------


def imagenet_classnames() -> list[str]:
    """The 1000 ImageNet class names of the official zero-shot evaluation, in label order.

    OpenAI CLIP's names ("tench", "kite (bird of prey)", ...); label ``k`` of ImageNet (sorted
    WordNet ids) is name ``k``. Two names occur twice (see the module's docstring).
    """
    return list(_read_lines("imagenet_clip_classnames.txt", 1000))


def imagenet_templates() -> list[str]:
    """The 80 prompt templates of the official zero-shot evaluation, ``{}`` standing for the class."""
    return list(_read_lines("imagenet_templates.txt", 80))


def imagenet_wnids() -> list[str]:
    """The 1000 WordNet ids of ImageNet-1K in label order (sorted): label ``k`` is ``wnids[k]``,
    whose class name is ``imagenet_classnames()[k]`` (``n01440764``, tench, is label 0)."""
    return list(_read_lines("imagenet_wnids.txt", 1000))


def imagenet_label_map(wnids: Sequence[str]) -> Tensor:
    """The ImageNet-1K label (int64, ``(K,)``) of each of a dataset's class folders ``wnids``.

    A val folder with all 1000 classes gives ``0 .. 999``; one with some of them (ImageNet-100, a
    partial copy) gives where each sits among the 1000, so its images are scored against every class.

    Raises:
        ValueError: a folder name that is not an ImageNet-1K WordNet id (one line naming it).
    """
    index = {w: k for k, w in enumerate(imagenet_wnids())}
    unknown = [w for w in wnids if w not in index]
    if unknown:
        raise ValueError(
            f"{len(unknown)} class folder(s) are not ImageNet-1K classes (first: {', '.join(unknown[:3])}); "
            "zero-shot ImageNet needs a folder whose subfolders are ImageNet-1K WordNet ids (n01440764, ...)"
        )
    return torch.tensor([index[w] for w in wnids], dtype=torch.int64)


def zero_shot_transform(image_size: int = 224) -> Callable:
    """The official evaluation's preprocessing of a PIL image (``eval_in1k.py:12-17``), written as it is.

    The shorter side resized to ``image_size`` (bilinear, PIL's, antialiased), the centre
    ``image_size`` × ``image_size`` crop, values in [0, 1], then ImageNet's mean and std per channel
    (not OpenAI CLIP's statistics). Returns float32 ``(3, S, S)``.
    """
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(image_size),  # shorter side -> S, bilinear
            transforms.CenterCrop((image_size, image_size)),  # (S, S) from the centre
            transforms.ToTensor(),  # (3, S, S) in [0, 1]
            transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        ]
    )


@cache
def _read_lines(name: str, expected: int) -> tuple[str, ...]:
    text = resources.files("crate_edu").joinpath(f"resources/{name}").read_text(encoding="utf-8")
    lines = tuple(line for line in text.splitlines() if line.strip())
    if len(lines) != expected:
        raise RuntimeError(f"crate_edu/resources/{name} should hold {expected} lines, found {len(lines)}")
    return lines


# --------------------------------------------------------------------------------------------
# Class embeddings and logits.
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def class_embeddings(
    encode_text: Callable[[Tensor], Tensor],
    tokenize: Callable[[list[str]], Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> Tensor:
    """The zero-shot classifier ``W`` (E, C): one unit column per class, from its prompts.

    Column ``c`` is ``mean_t(f_ct / (‖f_ct‖ + 1e-8))`` divided by its norm, where ``f_ct`` is
    ``encode_text(tokenize([templates[t].format(classnames[c])]))``: the official construction.

    Args:
        encode_text: token ids (B, L) -> text features (B, E), e.g. ``model.encode_text`` of a model
            in eval mode.
        tokenize: a list of strings -> token ids (B, L), a LongTensor.
        classnames: the C class names, in label order.
        templates: the T prompt templates, each with one ``{}`` for the class name.
        batch_size: prompts per call of ``encode_text`` (prompts of several classes share a batch).
        device: where the token ids are sent (default: where ``tokenize`` puts them).
        progress: show a progress bar over the batches.

    Returns:
        float32 ``(E, C)`` on the CPU.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not classnames or not templates:
        raise ValueError(
            f"class_embeddings needs at least one class name and one template, got {len(classnames)} "
            f"and {len(templates)}"
        )
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"each template needs exactly one '{{}}' for the class name, got {template!r}")
    prompts = [template.format(name) for name in classnames for template in templates]  # class-major
    features = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="class embeddings", disable=not progress, leave=False, dynamic_ncols=True):
        tokens = tokenize(prompts[start : start + batch_size])  # (B, L)
        if device is not None:
            tokens = tokens.to(device)
        features.append(encode_text(tokens).float().cpu())  # (B, E)
    f = torch.cat(features).view(len(classnames), len(templates), -1)  # (C, T, E)
    f = normalize(f)  # each template's embedding / (norm + 1e-8)                  (C, T, E)
    mean = f.mean(dim=1)  # average over templates                                     (C, E)
    mean = mean / mean.norm(dim=-1, keepdim=True)  # renormalised, no eps (official)  (C, E)
    return mean.T.contiguous()  # (E, C)


def zero_shot_logits(image_features: Tensor, class_embeddings: Tensor, scale: float = 100.0) -> Tensor:
    """``scale · (image / (‖image‖ + 1e-8)) @ W``: logits (N, C) from image features (N, E).

    ``class_embeddings`` is ``W`` (E, C) of :func:`class_embeddings`; ``scale`` is the official
    evaluation's fixed 100 (not the model's learned temperature).
    """
    if (
        image_features.ndim != 2
        or class_embeddings.ndim != 2
        or image_features.shape[1] != class_embeddings.shape[0]
    ):
        raise ValueError(
            f"zero_shot_logits expects image features (N, E) and class embeddings (E, C), got "
            f"{tuple(image_features.shape)} and {tuple(class_embeddings.shape)}"
        )
    img = normalize(image_features)  # / (norm + 1e-8)                               (N, E)
    return scale * img @ class_embeddings.to(img)  # (N, C)


# --------------------------------------------------------------------------------------------
# Classifying images.
# --------------------------------------------------------------------------------------------


@dataclass
class ZeroShotPredictions:
    """Zero-shot outputs over a dataset, on the CPU.

    Attributes:
        logits: float32 ``(N, C)``, ``100 · cos`` to every class.
        preds: int64 ``(N,)``, the nearest class.
        targets: int64 ``(N,)``, the true labels (None when the data has none).
        topk_accuracy: ``{k: fraction of images whose label is among the k highest logits}``
            (empty when there are no labels).
    """

    logits: Tensor
    preds: Tensor
    targets: Tensor | None = None
    topk_accuracy: dict[int, float] = field(default_factory=dict)


@torch.no_grad()
def zero_shot_predict(
    model: nn.Module,
    data,
    class_embeddings: Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = True,
    topk: Sequence[int] = (1, 5),
    scale: float = 100.0,
) -> ZeroShotPredictions:
    """Classify every image of ``data`` as its nearest class embedding.

    Args:
        model: anything with ``encode_image(images (B, 3, H, W)) -> features (B, E)``.
        data: images ``(N, 3, H, W)`` (no labels), an ``(images, labels)`` tuple, a dataset of
            ``(image, label)`` or a DataLoader: whatever :func:`iter_batches` takes.
        class_embeddings: ``W`` (E, C) of :func:`class_embeddings`.
        batch_size: images per forward pass (ignored for a DataLoader).
        device: where to run (default: where the model's parameters are); the model is moved
            there and left there, and its train/eval mode is restored afterwards.
        progress: show a progress bar over the batches.
        topk: the k of the top-k accuracies (each at most C).
        scale: the logit scale (official: 100).

    Returns:
        :class:`ZeroShotPredictions` on the CPU, in the order of ``data``.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    W = class_embeddings.to(device=device, dtype=torch.float32)  # (E, C)
    labelled = not isinstance(data, Tensor)  # a bare tensor of images has no labels
    num_classes = class_embeddings.shape[-1]
    bad = [k for k in topk if not 1 <= k <= num_classes]
    if labelled and bad:
        raise ValueError(
            f"topk values must be in 1..{num_classes} (the number of classes), got {bad}; pass e.g. topk=(1,)"
        )
    try:  # the bar's length in batches; a DataLoader has its own
        total = (
            len(data)
            if isinstance(data, DataLoader)
            else math.ceil(len(data[0] if isinstance(data, tuple) else data) / batch_size)
        )
    except TypeError:
        total = None  # iter_batches says what data it takes
    was_training = model.training
    model.to(device).eval()
    logits, targets = [], []
    try:
        batches = iter_batches(data, batch_size, with_labels=labelled)
        for batch in tqdm(batches, total=total, desc="zero-shot", disable=not progress, leave=False):
            x, y = (batch, None) if isinstance(batch, Tensor) else (batch[0], batch[1])  # (B, 3, H, W), (B,)
            features = model.encode_image(x.to(device)).float()  # (B, E)
            logits.append(zero_shot_logits(features, W, scale).cpu())  # (B, C)
            if y is not None:
                targets.append(torch.as_tensor(y, dtype=torch.int64).cpu())
    finally:
        model.train(was_training)
    if not logits:
        raise ValueError("zero_shot_predict() got no images: the data is empty")
    all_logits = torch.cat(logits)  # (N, C)
    result = ZeroShotPredictions(all_logits, all_logits.argmax(dim=-1))
    if targets:
        result.targets = torch.cat(targets)  # (N,)
    if targets and topk:
        y = result.targets
        top = all_logits.topk(max(topk), dim=-1).indices  # (N, k_max), highest first
        result.topk_accuracy = {k: float((top[:, :k] == y[:, None]).any(dim=-1).float().mean()) for k in topk}
    return result


@torch.no_grad()
def evaluate_zero_shot(
    model: nn.Module,
    loader,
    class_embeddings: Tensor,
    *,
    label_map: Tensor | Sequence[int] | None = None,
    device: torch.device | str | None = None,
    precision: str = "no",
    topk: Sequence[int] = (1, 5),
    progress: bool = True,
    scale: float = 100.0,
) -> dict[str, float]:
    """Top-k zero-shot accuracies over a loader of ``(images, labels)``, counting hits only (the
    official ``eval_in1k.py:61-76``; nothing of size N × C is kept, so 50,000 images cost no memory).

    Args:
        model: anything with ``encode_image(images (B, 3, H, W)) -> features (B, E)``.
        loader: batches ``(images (B, 3, H, W), labels (B,))``, e.g. a DataLoader.
        class_embeddings: ``W`` (E, C) of :func:`class_embeddings`.
        label_map: column of ``W`` for each label of the loader (``(K,)``; e.g.
            :func:`imagenet_label_map` of the dataset's class folders); None: label = column.
        device: where to run (default: where the model's parameters are); the model is moved there
            and its train/eval mode restored afterwards.
        precision: ``'no'`` (float32, as the official evaluation), ``'bf16'`` or ``'fp16'`` for the
            image tower (:func:`crate_edu.device.autocast`); the logits are float32 either way.
        topk: the k of the accuracies (each at most C).
        progress: show a progress bar over the batches.
        scale: the logit scale (official: 100; it does not change the ranking).

    Returns:
        ``{"top1": fraction, "top5": fraction, "n": number of images}`` (one key per k).
    """
    from tqdm.auto import tqdm

    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    W = class_embeddings.to(device=device, dtype=torch.float32)  # (E, C)
    bad = [k for k in topk if not 1 <= k <= W.shape[1]]
    if not topk or bad:
        raise ValueError(f"topk values must be in 1..{W.shape[1]} (the number of classes), got {list(topk)}")
    columns = None if label_map is None else torch.as_tensor(label_map, dtype=torch.int64)
    hits, n = dict.fromkeys(topk, 0), 0
    was_training = model.training
    model.to(device).eval()
    try:
        bar = tqdm(loader, desc="zero-shot", disable=not progress, leave=False, dynamic_ncols=True)
        for images, labels in bar:
            with autocast(device, precision):
                features = model.encode_image(images.to(device, non_blocking=True))  # (B, E)
            logits = zero_shot_logits(features.float(), W, scale)  # 100 · cos to each class  (B, C)
            y = torch.as_tensor(labels, dtype=torch.int64)  # (B,)
            if columns is not None:
                y = columns[y]  # the dataset's labels -> columns of W
            top = logits.topk(max(topk), dim=-1).indices.cpu()  # highest first          (B, k_max)
            for k in topk:
                hits[k] += int((top[:, :k] == y[:, None]).any(dim=-1).sum())
            n += len(y)
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluate_zero_shot() got no images: the loader is empty")
    return {**{f"top{k}": hits[k] / n for k in topk}, "n": n}
