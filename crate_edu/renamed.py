"""Old module paths and names, each answered with one line that names its new home.

crate_edu 0.2 moved its modules into folders by job (docs/design.md) and renamed the flag for the
official arithmetic from ``literal`` to ``reference``. Code written for 0.1 that imports an old path
gets a ``ModuleNotFoundError`` naming the new one, instead of a bare "No module named ...". The
CHANGELOG lists every move.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Iterable

__all__ = ["MOVED_MODULES", "check_renamed", "install"]

#: Old module -> where its contents live now.
MOVED_MODULES: dict[str, str] = {
    "crate_edu.blocks": (
        "crate_edu.models (MSSA, ISTA and CRATELayer in crate_edu/models/crate.py, the CRATE-α and "
        "CRATE-MAE blocks beside their models, the fast kernels in crate_edu/models/fast.py); "
        "set_literal is now crate_edu.models.set_reference"
    ),
    "crate_edu.models.common": "crate_edu.models.base",
    "crate_edu.models.blocks": "crate_edu.models",
    "crate_edu.analysis": "crate_edu.evaluation (layerwise_measurements)",
    "crate_edu.probe": "crate_edu.evaluation (linear_probe, extract_features, ...)",
    "crate_edu.segmentation": "crate_edu.evaluation (attention maps, masks, PCA maps)",
    "crate_edu.metrics": "crate_edu.evaluation (predict, accuracy, forward_flops, throughput, ...)",
    "crate_edu.mae": "crate_edu.evaluation (reconstruct, evaluate_reconstruction, ...)",
    "crate_edu.alpha_ablation": "crate_edu.experiments (run_ablation, ablation_config, ...)",
    "crate_edu.checkpoints": (
        "crate_edu.weights (save_weights, load_weights, load_tutorial_model, ...); "
        "export_run is in crate_edu.train"
    ),
    "crate_edu.data.device": "crate_edu.data (DeviceImageLoader, EpochSampler, ...)",
}


#: Old public name -> its new one, for names renamed or moved out of a module that still exists.
RENAMED_NAMES: dict[str, str] = {
    "crate_edu.models.set_literal": "crate_edu.models.set_reference",
    "crate_edu.weights.export_run": "crate_edu.train.export_run",
    "crate_edu.notebook.setup_device": "crate_edu.device.setup_device",
    "crate_edu.notebook.detect_device": "crate_edu.device.detect_device",
    "crate_edu.notebook.pick_device": "crate_edu.device.pick_device",
    "crate_edu.notebook.precision_for": "crate_edu.device.precision_for",
}


def renamed_name(module: str, name: str) -> None:
    """For a module's ``__getattr__``: a one-line ``ImportError`` naming the new name of
    ``module.name`` if it was renamed (an ``ImportError``, so that ``from module import name`` shows
    it), else the usual ``AttributeError``."""
    new = RENAMED_NAMES.get(f"{module}.{name}")
    if new is not None:
        raise ImportError(f"{module}.{name} is now {new} (crate_edu 0.2; see the CHANGELOG)")
    raise AttributeError(f"module {module!r} has no attribute {name!r}")


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Answers an import of a moved module with a one-line ``ModuleNotFoundError``."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 - the finder protocol
        new = MOVED_MODULES.get(fullname)
        if new is None:
            return None
        raise ModuleNotFoundError(
            f"{fullname} was moved in crate_edu 0.2: import from {new} (see the CHANGELOG)", name=fullname
        )


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())


def check_renamed(owner: str, names: Iterable[str]) -> None:
    """A one-line ``TypeError`` if ``names`` (arguments or attributes given to ``owner``) hold
    ``literal``, the name of the ``reference`` switch before crate_edu 0.2 (used by the models'
    configs, blocks and ``create_model``)."""
    if "literal" in names:
        raise TypeError(
            f"literal= was renamed reference= in crate_edu 0.2; use reference= with {owner}, "
            "or set_reference(model, True) for a whole model"
        )
