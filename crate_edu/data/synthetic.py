"""Offline datasets built from images that ship inside installed packages: no download, ever.

``digits``
    scikit-learn's ``load_digits``: 1,797 handwritten digits, 8×8 pixels, integer intensities
    0..16, 10 classes (about 180 per class). Scaled to [0, 1], upsampled to 32×32 (bilinear), and
    repeated over 3 channels. Bilinear rather than nearest: nearest turns every source pixel into a
    constant 4×4 block, which for a patch-4 model means each patch is one flat colour (the task
    silently becomes "8×8 pixels in disguise") and the pictures look like mosaics; bilinear gives
    smooth strokes with structure inside each patch, and a soft alpha for compositing the
    cluttered variant. Split: a fixed stratified 80/20 split (1,438 train, 359 test), drawn per
    class with ``numpy.random.RandomState(0)`` (whose stream numpy guarantees never to change), so
    it is the same on every machine and independent of any training seed.

``cluttered-digits``
    The same digits composited onto textured backgrounds, with a ground-truth foreground mask, so
    that attention maps can be scored as segmentation. Each image (default 32×32) is built as:

    1. background: a random S×S crop of one of twelve scikit-image sample images (brick, grass,
       gravel, coffee, chelsea, astronaut, rocket, ...), each used at full, 1/2 and 1/4 size, grey
       ones tinted with a random colour; its contrast scaled by ``texture_contrast`` about its mean;
    2. ``fragments`` distractors: a 4×4-pixel window of another digit, drawn at digit scale anywhere
       (partly outside the image is allowed), each in a colour contrasting with the background;
    3. the digit, on top: its 8×8 glyph resampled bilinearly into a box of side ``scale`` × S (aspect
       jittered ±15 %) placed fully inside the image, in a random colour whose luma differs from the
       mean background under it by at least ``min_contrast`` (lightened or darkened as needed).

    The mask is ``alpha >= 0.5``: the pixels where the digit contributes at least half the colour
    (its size at the default is measured in ``benchmarks/results/cluttered_digits.json``). All
    randomness comes from one ``numpy.random.Generator(PCG64)`` seeded by ``(seed, split)`` and is
    drawn before any pixel is composited, so a seed always gives the same images; the train split
    uses the 1,438 train digits, the test split the 359 test digits (``samples_per_digit``
    composites of each, default 32: 46,016 / 11,488 images). Compositing runs in chunks of
    :data:`GENERATION_CHUNK` images, so that the float buffers stay in cache.

    Difficulty: ``clutter`` in [0, 1] (default 0.5) sets all four knobs (see
    :func:`clutter_settings`); each may also be set on its own. The default was tuned together with
    the ``cluttered-digits`` recipe; the trials, the controls (plain digits, digit-less images, a
    fixed-mask baseline) and their figures are in ``benchmarks/README.md`` ("How the cluttered-digits
    defaults were chosen"), measured by ``benchmarks/cluttered_digits.py``
    (``benchmarks/results/cluttered_digits.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

#: Share of each class that goes to the test split of ``digits``.
DIGITS_TEST_FRACTION = 0.2
#: Per-channel mean/std of the ``digits`` train split at 32×32 (bilinear), on the [0, 1] scale.
#: All three channels are equal (grey digits). Checked by ``tests/unit/data/test_datasets.py``.
DIGITS_MEAN: tuple[float, float, float] = (0.3057, 0.3057, 0.3057)
DIGITS_STD: tuple[float, float, float] = (0.3241, 0.3241, 0.3241)


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images float32 ``(1797, 8, 8)`` in [0, 1], labels int64 ``(1797,)``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)  # 0..16 -> [0, 1]
    return images, d.target.astype(np.int64)


def digits_split_indices(split: str) -> np.ndarray:
    """Indices into ``load_digits()`` of the fixed stratified split (``'train'`` or ``'test'``), sorted."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    _, labels = _digits_arrays()
    rs = np.random.RandomState(0)
    test: list[np.ndarray] = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        n_test = int(round(DIGITS_TEST_FRACTION * len(idx)))
        test.append(rs.permutation(idx)[:n_test])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(is_test if split == "test" else ~is_test)


def upsample_digits(images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear upsampling of grey digits ``(N, 8, 8)`` in [0, 1] to float32 ``(N, size, size)`` in [0, 1]."""
    x = torch.as_tensor(images, dtype=torch.float32)[:, None]  # (N, 1, 8, 8)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)  # (N, 1, size, size)
    return x[:, 0].clamp_(0.0, 1.0)


def digits_arrays(split: str, image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``digits`` split as uint8 images ``(N, 3, S, S)`` (grey, repeated over RGB) and labels ``(N,)``."""
    images, labels = _digits_arrays()
    idx = digits_split_indices(split)
    grey = upsample_digits(images[idx], image_size)  # (N, S, S) in [0, 1]
    rgb = (grey * 255.0).round_().to(torch.uint8)[:, None].expand(-1, 3, -1, -1).contiguous()
    return rgb, torch.from_numpy(labels[idx])


# --------------------------------------------------------------------------------------------------
# cluttered-digits

#: scikit-image sample images used as backgrounds (all ship inside the package). Grey ones are tinted.
TEXTURE_SOURCES: tuple[str, ...] = (
    "brick", "grass", "gravel", "coffee", "chelsea", "astronaut", "rocket",
    "immunohistochemistry", "hubble_deep_field", "camera", "moon", "coins",
)  # fmt: skip
#: Each source is also used shrunk by these factors, so crops range from fine texture to whole objects.
TEXTURE_SCALES: tuple[int, ...] = (1, 2, 4)

#: Per-channel mean/std of the default ``cluttered-digits`` train split (seed 0, 32 px), [0, 1] scale.
#: Checked by ``tests/unit/data/test_datasets.py``; other settings keep these (normalisation need
#: not be exact).
CLUTTERED_MEAN: tuple[float, float, float] = (0.4194, 0.3815, 0.3602)
CLUTTERED_STD: tuple[float, float, float] = (0.2229, 0.1955, 0.1977)


@lru_cache(maxsize=1)
def _texture_bank() -> tuple[tuple[torch.Tensor, ...], tuple[bool, ...]]:
    """The background sources as float32 ``(3, H, W)`` in [0, 1] at every scale, and whether each is grey."""
    import skimage.data

    images, grey = [], []
    for name in TEXTURE_SOURCES:
        a = np.asarray(getattr(skimage.data, name)())
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        t = torch.from_numpy(np.ascontiguousarray(a[..., :3])).permute(2, 0, 1).float() / 255.0  # (3, H, W)
        is_grey = bool((t[0] - t[1]).abs().max() < 1e-6 and (t[1] - t[2]).abs().max() < 1e-6)
        for f in TEXTURE_SCALES:
            images.append(F.avg_pool2d(t[None], f)[0] if f > 1 else t)
            grey.append(is_grey)
    return tuple(images), tuple(grey)


def _luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma of ``(..., 3)`` colours in [0, 1] -> ``(...)``."""
    return rgb @ torch.tensor([0.299, 0.587, 0.114])


def _contrasting_colours(
    background_luma: torch.Tensor, min_contrast: float, base: torch.Tensor, coin: torch.Tensor
) -> torch.Tensor:
    """Colours ``(N, 3)`` whose luma differs from ``background_luma`` ``(N,)`` by >= ``min_contrast``.

    Each random colour of ``base`` ``(N, 3)`` is lightened towards white or darkened towards black,
    whichever side has room (``coin`` ``(N,)``, bool, picks when both do), just enough to reach the
    required luma difference.
    """
    L0 = _luminance(base)
    up_ok = background_luma + min_contrast <= 1.0
    down_ok = background_luma - min_contrast >= 0.0
    go_up = up_ok & (~down_ok | coin)
    # lighten: c + t (1 - c) has luma L0 + t (1 - L0); darken: c (1 - t) has luma L0 (1 - t)
    t_up = ((background_luma + min_contrast - L0) / (1.0 - L0).clamp_min(1e-6)).clamp(0.0, 1.0)
    t_down = (1.0 - (background_luma - min_contrast) / L0.clamp_min(1e-6)).clamp(0.0, 1.0)
    lighter = base + t_up[:, None] * (1.0 - base)
    darker = base * (1.0 - t_down[:, None])
    return torch.where(go_up[:, None], lighter, darker)


def _draw_colours(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The random draws of :func:`_contrasting_colours`: colours ``(n, 3)`` and coins ``(n,)``."""
    base = torch.from_numpy(rng.uniform(0.0, 1.0, size=(n, 3))).float()
    coin = torch.from_numpy(rng.uniform(size=n) < 0.5)
    return base, coin


def _draw_boxes(
    rng: np.random.Generator, n: int, scale: tuple[float, float], inside: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random glyph boxes: half-widths ``fx, fy`` and centres ``cx, cy`` ``(n,)`` (normalised units).

    The side is uniform in ``scale`` (a fraction of the image side), the aspect ratio jittered by
    ±15 %, the centre uniform: anywhere if not ``inside``, else so that the whole box stays in.
    """
    f = torch.from_numpy(rng.uniform(scale[0], scale[1], size=n)).float()
    aspect = torch.from_numpy(rng.uniform(0.85, 1.15, size=n)).float().sqrt()
    fx, fy = (f * aspect).clamp(max=0.98), (f / aspect).clamp(max=0.98)
    c = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(n, 2))).float()
    if inside:
        return fx, fy, c[:, 0] * (1 - fx), c[:, 1] * (1 - fy)
    return fx, fy, c[:, 0], c[:, 1]


def _bilinear_weights(size: int, f: torch.Tensor, c: torch.Tensor, n_in: int = 8) -> torch.Tensor:
    """Bilinear resampling matrices ``(M, size, n_in)`` of a box of half-width ``f`` centred at ``c``.

    Output pixel ``i`` has normalised centre ``u = (2 i + 1) / size - 1`` (align_corners=False), which
    falls at glyph pixel coordinate ``p = ((u - c) / f + 1) n_in / 2 - 1/2``; its weight on glyph pixel
    ``j`` is the hat function ``max(0, 1 - |p - j|)``, zero outside the glyph (zero padding).
    """
    u = (2 * torch.arange(size, dtype=torch.float32) + 1) / size - 1  # (S,)
    p = ((u[None, :] - c[:, None]) / f[:, None] + 1) * n_in / 2 - 0.5  # (M, S)
    j = torch.arange(n_in, dtype=torch.float32)
    return (1 - (p[:, :, None] - j).abs()).clamp_min(0)  # (M, S, n_in)


def _render(
    glyphs: torch.Tensor, size: int, fx: torch.Tensor, fy: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor
) -> torch.Tensor:
    """Place 8×8 grey glyphs ``(M, 8, 8)`` into ``(M, size, size)`` alpha maps (bilinear).

    The glyph box spans ``2 fx`` by ``2 fy`` in normalised image coordinates ([-1, 1] across the image)
    and is centred at ``(cx, cy)``; every argument is ``(M,)``. Axis-aligned placement is separable:
    ``alpha = W_y G W_x^T`` (what ``grid_sample`` would compute, at a fraction of the cost).
    """
    Wy = _bilinear_weights(size, fy, cy)  # (M, S, 8)
    Wx = _bilinear_weights(size, fx, cx)  # (M, S, 8)
    return Wy @ glyphs @ Wx.transpose(1, 2)  # (M, S, S)


#: Images composited at a time by :func:`generate_cluttered` (keeps the float buffers in cache; the
#: images do not depend on it, since every random number is drawn beforehand).
GENERATION_CHUNK = 512


def generate_cluttered(
    digits: np.ndarray,
    size: int,
    rng: np.random.Generator,
    *,
    scale: tuple[float, float],
    texture_contrast: float,
    fragments: int,
    min_contrast: float,
    fragment_pool: np.ndarray | None = None,
    draw_digit: bool = True,
    return_attributes: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, CompositeAttributes]:
    """Composite digits onto textured backgrounds.

    Args:
        digits: grey digits ``(N, 8, 8)`` in [0, 1], one per output image.
        size: output side ``S`` in pixels.
        rng: the random stream (everything random is drawn from it first, in a fixed order).
        scale: range of the digit's side as a fraction of ``S``.
        texture_contrast: 0 = a flat background of the crop's mean colour, 1 = the crop as is.
        fragments: number of distractor pieces per image: a random 4×4-pixel quarter-window of
            another digit, drawn at the digit's scale, at a random place, under the digit.
        min_contrast: least luma difference between the digit's colour and the mean background
            under it (and between each fragment and the crop's mean).
        fragment_pool: digits ``(P, 8, 8)`` the fragments are cut from (default: ``digits``).
        draw_digit: False leaves step 3's compositing out: the same backgrounds and fragments (every
            random draw is still made, so the stream and the masks are unchanged) without the digit.
            For checking that the background alone says nothing about the label.
        return_attributes: also return the :class:`CompositeAttributes` of each image (its digit's
            colour and box, its background), read from the same draws: the images are unchanged.

    Returns:
        images uint8 ``(N, 3, S, S)`` and masks bool ``(N, S, S)``: True where the digit's alpha is at
        least 0.5, i.e. where the digit contributes at least half of the pixel's colour; with
        ``return_attributes``, a third item, the :class:`CompositeAttributes`.
    """
    n, S = digits.shape[0], int(size)
    bank, grey = _texture_bank()
    usable = [i for i, b in enumerate(bank) if min(b.shape[1:]) >= S]
    if not usable:
        raise ValueError(f"image_size {S} is larger than every background source; use image_size <= 512")
    pool = digits if fragment_pool is None else fragment_pool
    draws = _draw(rng, n, fragments, len(pool), np.asarray(usable), grey, scale)  # every random number

    images = torch.empty((n, 3, S, S), dtype=torch.uint8)
    masks = torch.empty((n, S, S), dtype=torch.bool)
    colours = torch.empty((n, 3))
    for a in range(0, n, GENERATION_CHUNK):
        b = min(n, a + GENERATION_CHUNK)
        img, mean_colour = _backgrounds(bank, draws, a, b, S, texture_contrast)  # 1. (k, 3, S, S)
        if fragments > 0:  # 2. distractors: quarter-windows of other digits, under the digit
            img = _add_fragments(img, mean_colour, pool, draws, a, b, fragments, min_contrast)
        img, mask, colours[a:b] = _add_digit(img, digits[a:b], draws, a, b, min_contrast, draw_digit)  # 3.
        images[a:b] = (img.clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)
        masks[a:b] = mask
    if not return_attributes:
        return images, masks
    fx, fy, cx, cy = draws.digit_box
    attributes = CompositeAttributes(
        colour=colours,
        centre=torch.stack([cx, cy], dim=1),
        half_size=torch.stack([fx, fy], dim=1),
        background=torch.from_numpy(np.asarray(draws.src) // len(TEXTURE_SCALES)).long(),
        background_scale=torch.tensor(TEXTURE_SCALES)[
            torch.from_numpy(np.asarray(draws.src) % len(TEXTURE_SCALES))
        ],
        tinted=draws.is_grey.clone(),
    )
    return images, masks, attributes


@dataclass
class CompositeAttributes:
    """What :func:`generate_cluttered` drew for each of its N images (for captions and analyses).

    Attributes:
        colour: float32 ``(N, 3)`` in [0, 1]: the digit's colour as composited (after the contrast
            adjustment), whether or not the digit was drawn.
        centre: float32 ``(N, 2)``: the digit box's centre ``(x, y)`` in normalised image
            coordinates, [-1, 1] left to right and top to bottom.
        half_size: float32 ``(N, 2)``: the box's half-width and half-height in the same units (the
            centre lies within ``±(1 - half_size)``, so the whole box is inside the image).
        background: int64 ``(N,)``: the index of the background's source in :data:`TEXTURE_SOURCES`.
        background_scale: int64 ``(N,)``: the factor in :data:`TEXTURE_SCALES` it was shrunk by.
        tinted: bool ``(N,)``: a grey source, tinted with a random colour.
    """

    colour: torch.Tensor
    centre: torch.Tensor
    half_size: torch.Tensor
    background: torch.Tensor
    background_scale: torch.Tensor
    tinted: torch.Tensor


@dataclass
class _Draws:
    """Every random number of :func:`generate_cluttered`, drawn first and in a fixed order."""

    src: np.ndarray  # (n,) background source of each image
    u: np.ndarray  # (n, 2) where the crop sits in its source
    tint: torch.Tensor  # (n, 3) colour of grey sources
    is_grey: torch.Tensor  # (n,)
    digit_box: tuple  # (half-width, half-height, centre x, centre y) of each digit's box
    digit_colour: tuple  # the two colour draws of each digit
    piece_idx: np.ndarray | None = None  # (n F,) the digit each fragment is cut from
    corner: torch.Tensor | None = None  # (n F, 2) top-left of its 4×4 window
    piece_box: tuple | None = None
    piece_colour: tuple | None = None


def _draw(rng, n: int, fragments: int, pool_size: int, usable: np.ndarray, grey, scale) -> _Draws:
    """Backgrounds, then fragments, then digits: the order that keeps a seed's images fixed."""
    src = rng.choice(usable, size=n)
    u = rng.uniform(size=(n, 2))
    tint = torch.from_numpy(rng.uniform(0.35, 1.0, size=(n, 3))).float()
    m = n * fragments
    pieces = {}
    if fragments > 0:
        pieces["piece_idx"] = rng.integers(0, pool_size, size=m)
        pieces["corner"] = torch.from_numpy(rng.integers(0, 5, size=(m, 2)))
        pieces["piece_box"] = _draw_boxes(rng, m, scale, inside=False)  # partly outside is allowed
        pieces["piece_colour"] = _draw_colours(rng, m)
    digit_box = _draw_boxes(rng, n, scale, inside=True)  # the whole glyph box stays in the image
    digit_colour = _draw_colours(rng, n)
    is_grey = torch.tensor([grey[s] for s in src])
    return _Draws(src, u, tint, is_grey, digit_box, digit_colour, **pieces)


def _backgrounds(bank, d: _Draws, a: int, b: int, S: int, texture_contrast: float):
    """Images a..b-1's backgrounds: a random S×S crop of a random source (grey ones tinted), its
    contrast scaled about its mean colour. Returns the images (k, 3, S, S) and the means (k, 3, 1, 1)."""
    bg = torch.empty((b - a, 3, S, S))
    for i in range(a, b):
        s = bank[d.src[i]]
        y0 = int(d.u[i, 0] * (s.shape[1] - S + 1))
        x0 = int(d.u[i, 1] * (s.shape[2] - S + 1))
        bg[i - a] = s[:, y0 : y0 + S, x0 : x0 + S]
    bg = torch.where(d.is_grey[a:b, None, None, None], bg * d.tint[a:b, :, None, None], bg)
    mean_colour = bg.mean((2, 3), keepdim=True)  # (k, 3, 1, 1)
    return mean_colour + texture_contrast * (bg - mean_colour), mean_colour


def _add_fragments(img, mean_colour, pool, d: _Draws, a: int, b: int, fragments: int, min_contrast: float):
    """Composite ``fragments`` quarter-windows of other digits onto images a..b-1."""
    k, S = b - a, img.shape[-1]
    fa, fb = a * fragments, b * fragments
    pieces = torch.from_numpy(pool[d.piece_idx[fa:fb]]).float()  # (k F, 8, 8)
    offset = torch.arange(8)[None, :] - d.corner[fa:fb, :, None]  # (k F, 2, 8)
    inside_window = (offset >= 0) & (offset < 4)
    window = (inside_window[:, 0, :, None] & inside_window[:, 1, None, :]).float()  # (k F, 8, 8)
    alpha_f = _render(pieces * window, S, *(t[fa:fb] for t in d.piece_box)).view(k, fragments, S, S)
    base_luma = _luminance(mean_colour.view(k, 3)).repeat_interleave(fragments)
    col_f = _contrasting_colours(
        base_luma, min_contrast, d.piece_colour[0][fa:fb], d.piece_colour[1][fa:fb]
    ).view(k, fragments, 3)
    for j in range(fragments):
        alpha_j = alpha_f[:, j, None]  # (k, 1, S, S)
        img = img * (1 - alpha_j) + col_f[:, j, :, None, None] * alpha_j
    return img


def _add_digit(img, digits, d: _Draws, a: int, b: int, min_contrast: float, draw_digit: bool):
    """The digit on top of images a..b-1, in a colour that stands out from the background under it.
    Returns the images, the masks (alpha >= 0.5) and the digit colours (k, 3), the last two computed
    even when the digit is not drawn."""
    S = img.shape[-1]
    alpha = _render(torch.from_numpy(digits).float(), S, *(t[a:b] for t in d.digit_box))  # (k, S, S)
    mask = alpha >= 0.5
    under = (img * mask[:, None]).sum((2, 3)) / mask.sum((1, 2)).clamp_min(1)[:, None]  # (k, 3)
    col = _contrasting_colours(
        _luminance(under), min_contrast, d.digit_colour[0][a:b], d.digit_colour[1][a:b]
    )
    if draw_digit:
        img = img * (1 - alpha[:, None]) + col[:, :, None, None] * alpha[:, None]
    return img, mask, col


def clutter_settings(clutter: float) -> dict:
    """The generator settings of a clutter level in [0, 1] (0: flat background, 1: hardest).

    Every setting moves linearly with ``clutter`` (``c``):

    - ``texture_contrast = c`` (0: flat background in the crop's mean colour; 1: the raw crop),
    - ``fragments = floor(3 c)`` distractor pieces of other digits,
    - ``min_contrast = 0.5 - 0.3 c`` (least luma difference digit / background),
    - ``scale = (0.8 - 0.2 c, 0.95 - 0.1 c)``: the digit box side as a fraction of the image side
      (0.7-0.9 at the default 0.5; 0.6-0.85 at 1).
    """
    if not 0.0 <= clutter <= 1.0:
        raise ValueError(f"clutter must lie in [0, 1], got {clutter}")
    return {
        "texture_contrast": float(clutter),
        "fragments": int(3 * clutter + 1e-9),
        "min_contrast": round(0.5 - 0.3 * clutter, 6),
        "scale": (round(0.8 - 0.2 * clutter, 6), round(0.95 - 0.1 * clutter, 6)),
    }


#: Default clutter level of ``cluttered-digits``.
DEFAULT_CLUTTER = 0.5
#: Default number of composites of each source digit (46,016 train / 11,488 test images).
DEFAULT_SAMPLES_PER_DIGIT = 32


class ClutteredDigits(Dataset):
    """``cluttered-digits``: digits at random scale, position and colour on textured backgrounds.

    ``ds[i]`` is ``(image, label)`` like every dataset here (image float32 ``(3, S, S)``
    normalised); ``ds.masks`` is the bool ``(N, S, S)`` ground-truth foreground, and
    ``ds.get(i, with_mask=True)`` returns ``(image, label, mask)`` with the mask carried through the
    same (geometric) augmentation as the image; ``ds.attributes`` (:class:`CompositeAttributes`)
    says what was drawn for each image (the digit's colour and box, the background), from which
    :mod:`crate_edu.data.captions` writes captions.

    Args:
        split: ``'train'`` or ``'test'``; the source digits are the ``digits`` split of that name.
        image_size: side ``S`` in pixels (default 32).
        seed: the realisation; the stream is seeded from ``(seed, split)``, so a given seed always
            yields the same images and masks.
        samples_per_digit: composites per source digit (default
            :data:`DEFAULT_SAMPLES_PER_DIGIT`, 32: 46,016 train / 11,488 test images).
        clutter: difficulty in [0, 1] (default :data:`DEFAULT_CLUTTER`), see :func:`clutter_settings`;
            ``texture_contrast``, ``fragments``, ``min_contrast``, ``scale`` override single settings.
        draw_digit: False gives the same images without the digit (same backgrounds, fragments,
            labels and masks): a control whose labels cannot be learned from the pixels.
        mean, std: normalisation (default the dataset's).
        transform: a ``crate_edu.data.transforms.build_transform`` pipeline, or None (normalise only).
    """

    def __init__(
        self,
        split: str = "train",
        *,
        image_size: int = 32,
        seed: int = 0,
        samples_per_digit: int = DEFAULT_SAMPLES_PER_DIGIT,
        clutter: float = DEFAULT_CLUTTER,
        texture_contrast: float | None = None,
        fragments: int | None = None,
        min_contrast: float | None = None,
        scale: tuple[float, float] | None = None,
        draw_digit: bool = True,
        mean: tuple[float, float, float] = CLUTTERED_MEAN,
        std: tuple[float, float, float] = CLUTTERED_STD,
        transform=None,
    ) -> None:
        if samples_per_digit < 1:
            raise ValueError(f"samples_per_digit must be >= 1, got {samples_per_digit}")
        settings = clutter_settings(clutter)
        for key, value in [
            ("texture_contrast", texture_contrast),
            ("fragments", fragments),
            ("min_contrast", min_contrast),
            ("scale", scale),
        ]:
            if value is not None:
                settings[key] = value
        self.settings = settings
        self.split, self.seed, self.image_size = split, int(seed), int(image_size)
        all_digits, all_labels = _digits_arrays()
        idx = np.repeat(digits_split_indices(split), samples_per_digit)
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([self.seed, 0 if split == "train" else 1]))
        )
        idx = rng.permutation(idx)  # mix the copies, so a prefix of the dataset covers every digit
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small element-wise ops: one thread is faster, more so on a busy machine
        try:
            images, masks, attributes = generate_cluttered(
                all_digits[idx],
                self.image_size,
                rng,
                fragment_pool=all_digits[digits_split_indices(split)],
                draw_digit=draw_digit,
                return_attributes=True,
                **settings,
            )
        finally:
            torch.set_num_threads(threads)
        self.images = images  # (N, 3, S, S) uint8
        self.masks = masks  # (N, S, S) bool
        self.attributes = attributes  # the digit's colour and box, the background, per image
        self.labels = torch.from_numpy(all_labels[idx])  # (N,) int64
        self.source_index = torch.from_numpy(idx)  # (N,) index into sklearn's load_digits()
        self.mean, self.std = tuple(mean), tuple(std)
        self.transform = transform
        self.classes = list("0123456789")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def targets(self) -> list[int]:
        """Labels as a list of ints."""
        return self.labels.tolist()

    def get(self, i: int, with_mask: bool = False):
        """``(image, label)``, or ``(image, label, mask)`` with ``mask`` bool ``(S', S')`` aligned."""
        from crate_edu.data.transforms import normalize_uint8

        img, mask = self.images[i], self.masks[i]
        if self.transform is None:
            x = normalize_uint8(img, self.mean, self.std)
        elif with_mask:
            from torchvision import tv_tensors

            x, m = self.transform(tv_tensors.Image(img), tv_tensors.Mask(mask.to(torch.uint8)))
            mask = m.as_subclass(torch.Tensor).bool()
        else:
            x = self.transform(img)
        x = x.as_subclass(torch.Tensor)
        return (x, int(self.labels[i]), mask) if with_mask else (x, int(self.labels[i]))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.get(i)
