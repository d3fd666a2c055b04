"""crate_edu: tested reference code for CRATE, the white-box transformer of sparse rate reduction.

The notebooks in ``notebooks/`` import everything they show from here and from the folders'
public faces::

    import crate_edu
    model = crate_edu.create_model("crate_tiny")          # official CRATE-T config, 224 px
    crate_edu.list_models()                               # every registered name
    model = crate_edu.load_official("crate_small", "CRATE_small.pth")  # published weights

The folders, by job (docs/design.md draws the whole design):

- ``coding_rate``: the derivation: R, R^c, ΔR, their gradients, the MSSA and ISTA steps;
- ``denoising``: compression as denoising: the exact score of a mixture of low-rank Gaussians and
  MSSA beside it;
- ``models``: CRATE, CRATE-α, CRATE-MAE and a ViT baseline, one readable file each, with the fast
  kernels apart in ``models/fast.py`` and the registry of named presets;
- ``data``: datasets by name and the offline ones that ship with installed packages;
- ``train``: recipes, configs and the one training loop;
- ``evaluation``: metrics, FLOPs, throughput, probes, segmentation, layer-wise measurements,
  reconstructions;
- ``text``: the CLIPA tokenizer (BERT's uncased WordPiece, 32 ids) for the image–text model;
- ``weights``: official checkpoints, the tutorial checkpoints that ship with the package, and the
  one safe reader of weights files;
- ``device``: which device and precision to use;
- imported on their own: ``notebook`` (the notebooks' conveniences), ``plotting`` and
  ``experiments`` (they pull in matplotlib).
"""

from __future__ import annotations

__version__ = "0.2.0.dev0"

#: Where crate_edu lives. The README, the notebooks' Colab badges and install cells, and
#: pyproject.toml's project URL all name this address (tests/project/test_repository.py checks it).
REPOSITORY = "https://github.com/crate-edu/crate_edu"

from crate_edu import renamed  # noqa: E402  (first: old import paths get a one-line answer)

renamed.install()

from crate_edu import (  # noqa: E402
    coding_rate,
    data,
    denoising,
    device,
    evaluation,
    models,
    text,
    train,
    weights,
)
from crate_edu.models import (  # noqa: E402
    create_model,
    list_models,
    model_config,
    set_reference,
)
from crate_edu.weights import (  # noqa: E402
    CheckpointError,
    WeightsUnavailableError,
    download_official,
    list_official,
    load_official,
    load_tutorial_model,
    load_weights,
    verify_checkpoint,
)

__all__ = [
    "REPOSITORY",
    "CheckpointError",
    "WeightsUnavailableError",
    "__version__",
    "coding_rate",
    "create_model",
    "data",
    "denoising",
    "device",
    "download_official",
    "evaluation",
    "list_models",
    "list_official",
    "load_official",
    "load_tutorial_model",
    "load_weights",
    "model_config",
    "models",
    "set_reference",
    "text",
    "train",
    "verify_checkpoint",
    "weights",
]
