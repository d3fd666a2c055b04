"""Build crate_edu models that match the official reference fixtures in tests/fixtures/."""

from __future__ import annotations

import torch

import crate_edu
from tests.support.paths import FIXTURES  # noqa: E402

# fixture file, registry preset, how the fixture's config maps to crate_edu overrides
_KINDS = {
    "crate": "official_crate_tiny_fixture.pt",
    "crate_alpha": "official_crate_alpha_tiny_fixture.pt",
    "crate_mae": "official_crate_mae_tiny_fixture.pt",
}


def load_fixture(kind: str) -> dict:
    return torch.load(FIXTURES / _KINDS[kind], weights_only=True)


def fixture_overrides(kind: str, config: dict) -> tuple[str, dict]:
    """(preset name, create_model overrides) reproducing the official module of a fixture."""
    if kind == "crate":
        return "crate_tiny", dict(
            image_size=config["image_size"],
            patch_size=config["patch_size"],
            num_classes=config["num_classes"],
            dim=config["dim"],
            depth=config["depth"],
            heads=config["heads"],
            dim_head=config["dim_head"],
            pool=config["pool"],
            eta=config["ista_step"],
            lambd=config["ista_lambda"],
        )
    if kind == "crate_alpha":
        return "crate_alpha_b16", dict(
            image_size=config["image_size"],
            patch_size=config["patch_size"],
            num_classes=config["num_classes"],
            dim=config["dim"],
            depth=config["depth"],
            heads=config["heads"],
            dim_head=config["dim_head"],
            overcomplete_ratio=config["overcomplete_ratio"],
            eta=config["ista_step"],
            lambd=config["ista_lambda"],
        )
    if kind == "crate_mae":
        assert config["decoder_embed_dim"] == config["embed_dim"]
        return "crate_mae_tiny", dict(
            image_size=config["img_size"],
            patch_size=config["patch_size"],
            dim=config["embed_dim"],
            depth=config["depth"],
            heads=config["num_heads"],
            decoder_depth=config["decoder_depth"],
            decoder_heads=config["decoder_num_heads"],
            lambd=config["encoder_ista_lambda"],
            mask_ratio=config["mask_ratio"],
        )
    raise KeyError(kind)


def fixture_model(kind: str, **extra) -> tuple[torch.nn.Module, dict]:
    """The fixture's official weights in a crate_edu model (eval mode), and the fixture itself."""
    fixture = load_fixture(kind)
    name, overrides = fixture_overrides(kind, fixture["config"])
    model = crate_edu.create_model(name, **overrides, **extra)
    model.load_state_dict(fixture["state_dict"])
    return model.eval(), fixture
