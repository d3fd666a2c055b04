"""crate_edu: tested reference code for CRATE, the white-box transformer of sparse rate reduction.

The notebooks in ``notebooks/`` import everything they show from here::

    import crate_edu
    model = crate_edu.create_model("crate_tiny")          # official CRATE-T config, 224 px
    crate_edu.list_models()                               # every registered name
    model = crate_edu.load_official("crate_small", "CRATE_small.pth")  # published weights

Submodules: ``coding_rate`` (R, R^c, ΔR and their gradients), ``blocks`` (MSSA, ISTA, ...),
``models`` (CRATE, CRATE-α, CRATE-MAE, ViT and the registry), ``weights`` (official checkpoints).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Where crate_edu lives. The README, the notebooks' Colab badges and install cells, and
#: pyproject.toml's project URL all name this address (tests/project/test_repository.py checks that they agree).
REPOSITORY = "https://github.com/crate-edu/crate_edu"

# Public names resolved lazily, so that ``import crate_edu`` stays cheap and one broken optional
# submodule never hides the others.
_LAZY = {
    "create_model": "crate_edu.models.registry",
    "list_models": "crate_edu.models.registry",
    "model_config": "crate_edu.models.registry",
    "load_official": "crate_edu.weights.official",
    "download_official": "crate_edu.weights.official",
    "list_official": "crate_edu.weights.official",
    "verify_checkpoint": "crate_edu.weights.official",
    "CheckpointError": "crate_edu.weights.official",
    "WeightsUnavailableError": "crate_edu.weights.official",
    "load_weights": "crate_edu.weights.tutorial",
    "load_tutorial_model": "crate_edu.weights.tutorial",
}

__all__ = ["__version__", "REPOSITORY", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'crate_edu' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
