"""The official CRATE-LM / GPT fixture (``tests/fixtures/make_crate_lm_fixtures.py``) read for our models."""

from __future__ import annotations


def sizes(config: dict) -> dict:
    """Our config fields for the official ``CRATEConfig`` / ``GPTConfig`` of a fixture."""
    return dict(
        vocab_size=config["vocab_size"],
        block_size=config["block_size"],
        dim=config["n_embd"],
        depth=config["n_layer"],
        heads=config["n_head"],
    )


def official_state_dict(case: dict) -> dict:
    """The fixture's state dict without crate.py's causal-mask buffers ``attn.bias`` (not parameters:
    our model builds the mask when it needs it)."""
    return {k: v for k, v in case["state_dict"].items() if not k.endswith(".attn.bias")}
