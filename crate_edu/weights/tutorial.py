"""The tutorial's weights: a weights file loaded as a model, and the small trained models that
ship with the package (a training run becomes a weights file with ``crate_edu.train.export_run``).

A weights file (``crate_edu.weights.files.save_weights``) holds the tensors of a model and, in the
safetensors header, what is needed to rebuild it: the registry name and the ``create_model``
overrides. Loading never runs code from the file (safetensors holds only tensors and strings)::

    from crate_edu.train import export_run
    from crate_edu.weights import load_tutorial_model, load_weights

    export_run("runs/cluttered", "crate.safetensors")     # a crate_edu.train run -> weights file
    model, info = load_weights("crate.safetensors")       # rebuilt with create_model, eval mode
    model, info = load_tutorial_model("cluttered-digits-crate")   # a file shipped with the package

The tutorial's own files (:data:`TUTORIAL_CHECKPOINTS`, a few MB in all) are package data in
``crate_edu/resources/checkpoints/`` (described in the README.md there), so every installation has
them, Colab's included; each is checked against its pinned sha256 before use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crate_edu.models import create_model
from crate_edu.weights.download import cache_dirs
from crate_edu.weights.files import (
    WeightsFileError,
    WeightsInfo,
    read_weights_info,
    read_weights_tensors,
    tied_names,
)
from crate_edu.weights.reader import sha256sum

__all__ = [
    "TUTORIAL_CHECKPOINTS",
    "TutorialCheckpoint",
    "load_tutorial_model",
    "load_weights",
    "rebuild_model",
    "shipped_checkpoint_dir",
    "tutorial_checkpoint",
]

PathLike = str | os.PathLike


@dataclass(frozen=True)
class TutorialCheckpoint:
    """A weights file shipped in ``crate_edu/resources/checkpoints/`` (described in the README.md there)."""

    name: str
    filename: str
    sha256: str
    description: str


#: The files the notebooks load. The sha256 pins the committed file, so a damaged or different file
#: is refused rather than silently used.
TUTORIAL_CHECKPOINTS: dict[str, TutorialCheckpoint] = {
    c.name: c
    for c in [
        TutorialCheckpoint(
            "cluttered-digits-crate",
            "cluttered-digits-crate.safetensors",
            "0d53070984b43286b0b92531b78e37f2d36cce647abbf3297610a47cdc421b43",
            "CRATE (crate_nano_cifar, depth 4) trained by the cluttered-digits recipe",
        ),
        TutorialCheckpoint(
            "cluttered-digits-vit",
            "cluttered-digits-vit.safetensors",
            "9b9dc9874acff855e1597b5fb8d6ab1751b60906ee6ce44da081b6aeef4151a5",
            "ViT (vit_nano_cifar, depth 4) trained by the cluttered-digits recipe, same budget",
        ),
        TutorialCheckpoint(
            "cluttered-digits-crate-mae",
            "cluttered-digits-crate-mae.safetensors",
            "2964fdd6f88e0bf4cee0f67d796d996c2683f61d88f04fd2d9ff13ef3dbfdc82",
            "a small CRATE-MAE pretrained on cluttered-digits",
        ),
        TutorialCheckpoint(
            "cluttered-digits-crate-alpha-clipa",
            "cluttered-digits-crate-alpha-clipa.safetensors",
            "43e41c0b3c12904d7964addffb7ddffd541374e19a1bcacd5a071f6918db88d5",
            "a small CRATE-α-CLIPA trained contrastively on captioned digits with the CLIPA recipe",
        ),
        TutorialCheckpoint(
            "python-docs-crate-lm",
            "python-docs-crate-lm.safetensors",
            "1380e4afc25492d85299339f94cc80d3a4baa54018a9adadbc10d93805f00111",
            "a small causal CRATE language model (crate_lm_char) trained by the text-quick recipe",
        ),
        TutorialCheckpoint(
            "python-docs-gpt",
            "python-docs-gpt.safetensors",
            "83c3163ea726206fdda302f2cc759654649f1481a5c4e816a01db39884c5c822",
            "the GPT baseline (gpt_lm_char) trained by text-quick-gpt, the same budget",
        ),
    ]
}


# --------------------------------------------------------------------------------------------------
# A training run's weights, as a weights file; a weights file, as a model.
# --------------------------------------------------------------------------------------------------


def rebuild_model(model_name: str, overrides: Mapping[str, Any], source: Path) -> nn.Module:
    """``create_model(model_name, **overrides)``, or one :class:`WeightsFileError` line naming
    ``source`` when the file was written by a crate_edu that built the model differently."""
    try:
        return create_model(model_name, **overrides)
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsFileError(
            f"{source}: cannot rebuild {model_name!r} with {dict(overrides)} ({exc}); the file was "
            "written by a different crate_edu version"
        ) from None


def load_weights(path: PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, WeightsInfo]:
    """Rebuild the model a :func:`save_weights` file describes and load its weights (eval mode).

    Returns:
        ``(model, info)``.

    Raises:
        WeightsFileError: not a crate_edu weights file, damaged (the checksum in its header differs),
            or weights that do not fit the model it names.
    """
    info = read_weights_info(path)
    model = rebuild_model(info.model_name, info.overrides, info.path)
    state = read_weights_tensors(info.path, map_location)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in tied_names(model)]  # tied: stored once, under the first name
    if missing or unexpected:
        raise WeightsFileError(
            f"{info.path}: weights do not fit {info.model_name} {info.overrides}: missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    return model.eval(), info


# --------------------------------------------------------------------------------------------------
# The tutorial's shipped files.
# --------------------------------------------------------------------------------------------------


def shipped_checkpoint_dir() -> Path:
    """The folder inside the installed package that holds the tutorial's weights files.

    It is package data, so it is there in every installation: a clone, an editable install, a wheel,
    or ``pip install git+...`` on Colab.
    """
    return Path(__file__).resolve().parents[1] / "resources" / "checkpoints"


def _get(name: str) -> TutorialCheckpoint:
    if name not in TUTORIAL_CHECKPOINTS:
        raise ValueError(f"no tutorial checkpoint {name!r}; choose one of {', '.join(TUTORIAL_CHECKPOINTS)}")
    return TUTORIAL_CHECKPOINTS[name]


def tutorial_checkpoint(name: str) -> Path:
    """The path of a shipped weights file (see :data:`TUTORIAL_CHECKPOINTS`), checked against its sha256.

    Looked for in your own folders first (``crate_edu.weights.download.cache_dirs``: the older
    ``$CRATE_EDU_CHECKPOINTS`` when set, then ``$CRATE_EDU_CACHE`` or ``~/.cache/crate_edu/weights``),
    then in the package (:func:`shipped_checkpoint_dir`).

    Raises:
        FileNotFoundError: in none of these places, naming them.
        WeightsFileError: the file's sha256 differs from the pinned one (corrupt, or another version).
    """
    entry = _get(name)
    places = [*cache_dirs(), shipped_checkpoint_dir()]
    for folder in places:
        path = folder / entry.filename
        if path.is_file():
            if sha256sum(path) != entry.sha256:
                raise WeightsFileError(
                    f"{path}: its sha256 differs from the one pinned for {entry.name!r}, so the file is "
                    "corrupt or from another version; reinstall crate_edu (pip install --force-reinstall) "
                    "or, for a copy in your own folder ($CRATE_EDU_CACHE), replace or delete it"
                )
            return path
    raise FileNotFoundError(
        f"{entry.filename} not found (looked in {', '.join(str(p) for p in places)}); it ships with "
        "crate_edu: reinstall the package (pip install --force-reinstall), or set CRATE_EDU_CACHE "
        "to a folder holding it"
    )


def load_tutorial_model(name: str) -> tuple[nn.Module, WeightsInfo]:
    """Load a shipped model by name (e.g. ``"cluttered-digits-crate"``): ``(model, info)``, eval mode.

    Raises:
        FileNotFoundError: the file is missing.
        WeightsFileError: the file is damaged (its sha256 differs from the pinned one).
    """
    return load_weights(tutorial_checkpoint(name))
