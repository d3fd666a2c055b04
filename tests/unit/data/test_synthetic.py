"""crate_edu.data.synthetic: the attributes the generator returns leave its images unchanged."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from crate_edu.data.synthetic import (
    TEXTURE_SCALES,
    TEXTURE_SOURCES,
    ClutteredDigits,
    clutter_settings,
    generate_cluttered,
)

# sha256 of ClutteredDigits("test", seed=0, samples_per_digit=1)'s images and masks, computed with
# the generator before it returned attributes (the shipped checkpoints were trained on its images).
IMAGES_SHA256 = "fcc4ad9ec7851e7c2df4fd369af090be633de6e30b43b339e7641737c07b2ce3"
MASKS_SHA256 = "f3adc9dd7693ff7b3a69f841a8bdea771e33e7dbf70b6277386e1bf1c737d695"


def test_images_are_those_of_the_generator_before_attributes():
    ds = ClutteredDigits("test", seed=0, samples_per_digit=1)
    assert hashlib.sha256(ds.images.numpy().tobytes()).hexdigest() == IMAGES_SHA256
    assert hashlib.sha256(ds.masks.numpy().tobytes()).hexdigest() == MASKS_SHA256


def test_return_attributes_changes_nothing_else():
    from sklearn.datasets import load_digits

    digits = (load_digits().images[:40] / 16.0).astype(np.float32)
    settings = clutter_settings(0.5)

    def rng():
        return np.random.Generator(np.random.PCG64(7))

    images, masks = generate_cluttered(digits, 32, rng(), **settings)
    images2, masks2, attrs = generate_cluttered(digits, 32, rng(), return_attributes=True, **settings)
    assert torch.equal(images, images2) and torch.equal(masks, masks2)
    assert attrs.colour.shape == (40, 3) and attrs.centre.shape == attrs.half_size.shape == (40, 2)
    assert ((attrs.colour >= 0) & (attrs.colour <= 1)).all()
    assert (attrs.centre.abs() <= 1 - attrs.half_size + 1e-6).all()  # the whole box is inside
    assert attrs.background.max() < len(TEXTURE_SOURCES)
    assert set(attrs.background_scale.tolist()) <= set(TEXTURE_SCALES)
    # the digit is composited in the recorded colour: under its mask, some pixel has that colour
    # (where the glyph's alpha is near 1); for an unrelated colour this almost never holds
    ds = ClutteredDigits("test", samples_per_digit=1)
    x = ds.images.float() / 255  # (N, 3, S, S)

    def nearest(colour):  # (N, 3) -> the smallest max-channel difference under each mask (N,)
        d = (x - colour[:, :, None, None]).abs().amax(1)  # (N, S, S)
        return torch.where(ds.masks, d, torch.full_like(d, 9.0)).flatten(1).min(1).values

    assert (nearest(ds.attributes.colour) < 0.05).float().mean() > 0.9
    assert (nearest(ds.attributes.colour.roll(1, dims=0)) < 0.05).float().mean() < 0.3
