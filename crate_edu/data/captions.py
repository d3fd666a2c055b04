"""``captioned-digits``: the cluttered digits with captions, for contrastive image–text training.

Each composite of :class:`~crate_edu.data.synthetic.ClutteredDigits` is described by four
attributes read from the generator's own draws (:class:`~crate_edu.data.synthetic.CompositeAttributes`),
never guessed from the pixels:

- the **digit**, as a word (``"seven"``);
- its **colour**, the name of the colour it was composited in (after the contrast adjustment):
  ``white``, ``grey`` or ``black`` when its chroma max − min is below :data:`ACHROMATIC_CHROMA`
  (by its brightest channel), else the hue's sixth of the colour wheel (``red``, ``yellow``,
  ``green``, ``cyan``, ``blue``, ``magenta``): see :func:`colour_names`;
- its **position**, the third of the free range its box centre lies in, across and down:
  ``"top left"`` … ``"centre"`` … ``"bottom right"`` (:func:`position_names`);
- the **background**, the scikit-image picture its crop comes from (``brick``, ``grass``, ``cat``,
  ...: :data:`BACKGROUND_WORDS`).

A caption puts them into one of the :data:`TRAIN_TEMPLATES` (``"a {colour} {digit} on {background}"``,
...). Two things are held out of training, so that the zero-shot test is honest:

- **templates**: the zero-shot prompts (:data:`HELD_OUT_TEMPLATES`, e.g. ``"a photo of the digit {}"``)
  are worded as no training caption is (``tests/unit/data/test_captions.py`` checks that none is a
  training template and that all their words occur in training captions, so they are new sentences,
  not new words);
- **classes**: ten digit–colour combinations (:data:`HELD_OUT_PAIRS`: each digit in one colour, each
  chromatic colour for one or two digits) never occur in the training split, neither as images nor
  as captions. The test split keeps them (``ds.held_out`` marks them), so a model can be asked to
  name a "green two" it has never seen, choosing among all 90 digit–colour combinations.

The words of every template and attribute form a small vocabulary (:func:`caption_vocabulary`);
:class:`CaptionTokenizer` maps a caption to ``[START] w1 w2 … [PAD] …`` ids with a fixed context.
Nothing here needs an optional package::

    from crate_edu.data import CaptionTokenizer, CaptionedDigits
    train = CaptionedDigits("train")           # ds[i] = (image (3, 32, 32), digit label)
    train.captions[0]                          # e.g. 'a photo of a red seven on a brick background'
    tokens = CaptionTokenizer(16)(train.captions[:4])   # LongTensor (4, 16)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from crate_edu.data.synthetic import (
    CLUTTERED_MEAN,
    CLUTTERED_STD,
    DEFAULT_CLUTTER,
    DEFAULT_SAMPLES_PER_DIGIT,
    TEXTURE_SOURCES,
    ClutteredDigits,
    CompositeAttributes,
)

__all__ = [
    "ACHROMATIC_CHROMA",
    "BACKGROUND_WORDS",
    "COLOUR_WORDS",
    "DIGIT_WORDS",
    "HELD_OUT_PAIRS",
    "HELD_OUT_TEMPLATES",
    "PAD_ID",
    "POSITION_WORDS",
    "START_ID",
    "TRAIN_TEMPLATES",
    "CaptionAttributes",
    "CaptionTokenizer",
    "CaptionedDigits",
    "caption_attributes",
    "caption_vocabulary",
    "colour_names",
    "pair_classes",
    "position_names",
    "write_caption",
]

DIGIT_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)  # fmt: skip
#: Chromatic names first, by hue (0°, 60°, …), then the achromatic ones from light to dark.
COLOUR_WORDS: tuple[str, ...] = (
    "red", "yellow", "green", "cyan", "blue", "magenta", "white", "grey", "black",
)  # fmt: skip
#: Row-major 3 × 3: index = 3 · row + column.
POSITION_WORDS: tuple[str, ...] = (
    "top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right",
)  # fmt: skip
#: One word per background source, in the order of :data:`~crate_edu.data.synthetic.TEXTURE_SOURCES`.
BACKGROUND_WORDS: tuple[str, ...] = (
    "brick", "grass", "gravel", "coffee", "cat", "astronaut", "rocket", "cells", "stars", "cameraman",
    "moon", "coins",
)  # fmt: skip
assert len(BACKGROUND_WORDS) == len(TEXTURE_SOURCES)

#: A colour whose max − min channel is below this is named by brightness (white, grey, black).
ACHROMATIC_CHROMA = 0.2

#: The captions of the training split; each names the digit, most with one to three other attributes
#: (the two that name the digit alone make the digit, not only the easier colour and background,
#: tell the images of a batch apart).
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a {colour} {digit} on {background}",
    "the digit {digit} in {colour} at the {position}",
    "a photo of a {colour} {digit} on a {background} background",
    "{digit} written in {colour} over {background}",
    "a picture of the number {digit} at the {position} on {background}",
    "{colour} number {digit} on a {background} background at the {position}",
    "the {digit} at the {position} is {colour}",
    "a {digit} on a picture of {background}",
    "the digit {digit}",
    "a {digit}",
)
#: Zero-shot prompts, one ``{}`` for the class name (a digit word, or "colour digit"); worded as no
#: training caption is, from words that training captions use.
HELD_OUT_TEMPLATES: tuple[str, ...] = (
    "a photo of the digit {}",
    "a picture of a {}",
    "the number {} in a photo",
    "a {} written on a background",
)
#: (digit, colour index) combinations absent from the training split: digit d in colour d mod 6.
HELD_OUT_PAIRS: frozenset[tuple[int, int]] = frozenset((d, d % 6) for d in range(10))

PAD_ID = 0
START_ID = 1
_SPECIAL = ("[PAD]", "[START]")


def colour_names(rgb: Tensor) -> Tensor:
    """Indices into :data:`COLOUR_WORDS` of colours ``(N, 3)`` in [0, 1] -> int64 ``(N,)``.

    Chroma ``c = max − min`` below :data:`ACHROMATIC_CHROMA`: white (max ≥ 0.7), black (max < 0.3)
    or grey. Otherwise the hue (HSV, degrees) picks one sixth of the wheel centred on red (0°),
    yellow (60°), green (120°), cyan (180°), blue (240°), magenta (300°).
    """
    rgb = rgb.float()
    mx, mn = rgb.max(dim=1).values, rgb.min(dim=1).values  # (N,)
    chroma = mx - mn
    r, g, b = rgb.unbind(dim=1)
    safe = chroma.clamp_min(1e-12)
    hue = torch.where(  # HSV hue in sixths of the wheel, [0, 6)
        mx == r, ((g - b) / safe) % 6, torch.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    chromatic = torch.floor(hue + 0.5).long() % 6  # nearest of red, yellow, ... magenta
    grey = torch.where(mx >= 0.7, 6, torch.where(mx < 0.3, 8, 7))
    return torch.where(chroma < ACHROMATIC_CHROMA, grey, chromatic)


def position_names(centre: Tensor, half_size: Tensor) -> Tensor:
    """Indices into :data:`POSITION_WORDS` of box centres ``(N, 2)`` (x, y in [-1, 1]) -> ``(N,)``.

    The centre of a box of half-size ``h`` can lie in ``±(1 − h)``; ``u = centre / (1 − h)`` in
    [-1, 1] is split in thirds at ±1/3, across (left, centre, right) and down (top, middle, bottom).
    """
    u = centre / (1.0 - half_size).clamp_min(1e-6)  # (N, 2) in [-1, 1]
    third = (u > -1 / 3).long() + (u > 1 / 3).long()  # 0, 1, 2                        (N, 2)
    return 3 * third[:, 1] + third[:, 0]  # row-major                                   (N,)


@dataclass
class CaptionAttributes:
    """The four caption attributes of N images, each int64 ``(N,)``: indices into
    :data:`DIGIT_WORDS`, :data:`COLOUR_WORDS`, :data:`POSITION_WORDS`, :data:`BACKGROUND_WORDS`."""

    digit: Tensor
    colour: Tensor
    position: Tensor
    background: Tensor

    def __len__(self) -> int:
        return int(self.digit.shape[0])

    def select(self, index: Tensor) -> CaptionAttributes:
        return CaptionAttributes(
            self.digit[index], self.colour[index], self.position[index], self.background[index]
        )

    def words(self, i: int) -> dict[str, str]:
        """Image ``i``'s attributes as words: ``{"digit", "colour", "position", "background"}``."""
        return {
            "digit": DIGIT_WORDS[int(self.digit[i])],
            "colour": COLOUR_WORDS[int(self.colour[i])],
            "position": POSITION_WORDS[int(self.position[i])],
            "background": BACKGROUND_WORDS[int(self.background[i])],
        }


def caption_attributes(attributes: CompositeAttributes, labels: Tensor) -> CaptionAttributes:
    """The caption attributes of composites: from their draws and their digit labels ``(N,)``."""
    return CaptionAttributes(
        digit=labels.long().clone(),
        colour=colour_names(attributes.colour),
        position=position_names(attributes.centre, attributes.half_size),
        background=attributes.background.long().clone(),
    )


def write_caption(template: str, words: dict[str, str]) -> str:
    """``template`` with its ``{digit}``, ``{colour}``, ``{position}``, ``{background}`` filled in."""
    return template.format(**words)


def pair_classes() -> list[str]:
    """The 90 digit–colour class names, ``"red zero"``, ``"yellow zero"``, …, class ``9 d + c``
    being digit ``d`` in colour ``c`` (the zero-shot classes of the held-out combinations)."""
    return [f"{c} {d}" for d in DIGIT_WORDS for c in COLOUR_WORDS]


def caption_vocabulary() -> tuple[str, ...]:
    """``[PAD]``, ``[START]``, then every word of the templates and attribute values, sorted."""
    words: set[str] = set()
    for template in TRAIN_TEMPLATES + HELD_OUT_TEMPLATES:
        words.update(w for w in template.split() if not w.startswith("{"))
    for names in (DIGIT_WORDS, COLOUR_WORDS, POSITION_WORDS, BACKGROUND_WORDS):
        for name in names:
            words.update(name.split())
    return _SPECIAL + tuple(sorted(words))


class CaptionTokenizer:
    """Word-level tokenizer of the captions: ``[START] w1 … wk`` then ``[PAD]`` (id 0) to the context.

    Words are split on spaces and lower-cased; a caption longer than the context is truncated
    (the start token is kept). An unknown word raises one line naming it.

    Args:
        context_length: tokens per caption, C (the model's ``context_length``).

    ``tokenizer(texts)`` -> int64 ``(len(texts), C)``; ``tokenizer(texts, context_length=8)`` cuts
    to 8 (CLIPA's shorter text); ``tokenizer.decode(ids)`` -> the words again.
    """

    def __init__(self, context_length: int = 16) -> None:
        self.context_length = _check_context(context_length)
        self.vocab = caption_vocabulary()
        self.ids = {w: i for i, w in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """One caption -> ``[START_ID, id(w1), …]`` (not padded, not truncated)."""
        if not isinstance(text, str):
            raise TypeError(f"a caption must be a str, got {type(text).__name__}")
        out = [START_ID]
        for word in text.lower().split():
            if word not in self.ids or word in _SPECIAL:
                raise ValueError(
                    f"unknown word {word!r} in caption {text!r}; the caption vocabulary has "
                    f"{len(self.vocab) - len(_SPECIAL)} words (crate_edu.data.caption_vocabulary())"
                )
            out.append(self.ids[word])
        return out

    def __call__(self, texts: str | list[str] | tuple[str, ...], context_length: int | None = None) -> Tensor:
        """Captions -> int64 ``(B, C)``: start token, word ids, truncated or padded with 0."""
        C = self.context_length if context_length is None else _check_context(context_length)
        if isinstance(texts, str):
            texts = [texts]
        out = torch.full((len(texts), C), PAD_ID, dtype=torch.int64)
        for row, text in enumerate(texts):
            ids = self.encode(text)[:C]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        return out

    def decode(self, ids: Tensor | list[int]) -> str:
        """Token ids of one caption -> its words (start and padding left out)."""
        return " ".join(self.vocab[int(i)] for i in ids if int(i) not in (PAD_ID, START_ID))


def _check_context(context_length: int) -> int:
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 2:
        raise ValueError(
            f"context_length must be an integer >= 2 (the start token and a word), got {context_length!r}"
        )
    return context_length


class CaptionedDigits(Dataset):
    """The cluttered digits with captions: ``ds[i]`` is ``(image (3, S, S) normalised, digit)``.

    The images are those of :class:`~crate_edu.data.synthetic.ClutteredDigits` with the same
    arguments (the same seed gives the same pixels); the train split leaves out the images of the
    :data:`HELD_OUT_PAIRS` (about a tenth), the test split keeps every image and marks them.

    Attributes:
        images: uint8 ``(N, 3, S, S)``; labels: int64 ``(N,)`` digits; mean, std: normalisation.
        attributes: :class:`CaptionAttributes` of every image.
        held_out: bool ``(N,)``: the image's digit–colour combination is held out of training.
        source_index: int64 ``(N,)``: the image's index in the ``ClutteredDigits`` it was cut from.
        captions: one caption per image, its template drawn from ``(seed, split)``
            (:meth:`caption` writes any template; training draws a new one every epoch).

    Args:
        split: ``'train'`` or ``'test'``.
        image_size, seed, samples_per_digit, clutter: as :class:`ClutteredDigits`.
        keep_held_out: keep the held-out combinations in the train split too (default: only the
            test split has them).
    """

    def __init__(
        self,
        split: str = "train",
        *,
        image_size: int = 32,
        seed: int = 0,
        samples_per_digit: int = DEFAULT_SAMPLES_PER_DIGIT,
        clutter: float = DEFAULT_CLUTTER,
        keep_held_out: bool = False,
    ) -> None:
        base = ClutteredDigits(
            split, image_size=image_size, seed=seed, samples_per_digit=samples_per_digit, clutter=clutter
        )
        attrs = caption_attributes(base.attributes, base.labels)
        held = torch.tensor(
            [(int(d), int(c)) in HELD_OUT_PAIRS for d, c in zip(attrs.digit, attrs.colour, strict=True)],
            dtype=torch.bool,
        )
        keep = torch.ones_like(held) if (split == "test" or keep_held_out) else ~held
        index = torch.nonzero(keep).flatten()
        self.split, self.seed, self.image_size = split, int(seed), int(image_size)
        self.images = base.images[index]  # (N, 3, S, S) uint8
        self.labels = base.labels[index]  # (N,)
        self.attributes = attrs.select(index)
        self.held_out = held[index]
        self.source_index = index
        self.mean, self.std = CLUTTERED_MEAN, CLUTTERED_STD
        self.transform = None  # batches are read straight from self.images (iter_batches)
        self.classes = list(DIGIT_WORDS)
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([self.seed, 2 if split == "train" else 3]))
        )
        self.caption_templates = torch.from_numpy(rng.integers(0, len(TRAIN_TEMPLATES), size=len(index)))
        self.captions = [self.caption(i, int(t)) for i, t in enumerate(self.caption_templates)]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def caption(self, i: int, template: int) -> str:
        """Image ``i`` described with :data:`TRAIN_TEMPLATES` ``[template]``."""
        return write_caption(TRAIN_TEMPLATES[template], self.attributes.words(i))

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    @property
    def pair_labels(self) -> Tensor:
        """int64 ``(N,)``: the digit–colour class ``9 d + c`` of each image (see :func:`pair_classes`)."""
        return self.attributes.digit * len(COLOUR_WORDS) + self.attributes.colour

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from crate_edu.data.transforms import normalize_uint8

        return normalize_uint8(self.images[i], self.mean, self.std), int(self.labels[i])
