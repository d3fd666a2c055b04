"""Training CRATE (and the ViT baselines): recipes, the Accelerate loop, crash-safe checkpoints.

Quick start (a small CRATE on the offline digits, a few minutes on a laptop CPU)::

    from crate_edu.train import RECIPES, train
    result = train(RECIPES["digits-quick"].config(), "runs/digits")
    result.final["test_acc"]

The same from a shell: ``crate-edu train`` (or ``crate-edu train --recipe cifar10-scratch``,
``accelerate launch -m crate_edu train --recipe imagenet --data-dir /data/imagenet``).
"""

from crate_edu.train.checkpoint import (
    CHECKPOINT_NAME,
    METRICS_NAME,
    FileWriteError,
    load_checkpoint,
    read_jsonl,
    save_checkpoint,
)
from crate_edu.train.config import OPTIMIZERS, PRECISIONS, ConfigError, TrainConfig, check_config
from crate_edu.train.loop import (
    EpochSampler,
    RunResult,
    TrainingDivergedError,
    build_datasets,
    build_model,
    build_optimizer,
    evaluate,
    fit,
    resolve_precision,
    train,
    warmup_cosine,
)
from crate_edu.train.recipes import DEFAULT_RECIPE, RECIPES, Recipe, get_recipe, list_recipes

__all__ = [
    "CHECKPOINT_NAME",
    "DEFAULT_RECIPE",
    "METRICS_NAME",
    "OPTIMIZERS",
    "PRECISIONS",
    "RECIPES",
    "ConfigError",
    "EpochSampler",
    "FileWriteError",
    "Recipe",
    "RunResult",
    "TrainConfig",
    "TrainingDivergedError",
    "build_datasets",
    "build_model",
    "build_optimizer",
    "check_config",
    "evaluate",
    "fit",
    "get_recipe",
    "list_recipes",
    "load_checkpoint",
    "read_jsonl",
    "resolve_precision",
    "save_checkpoint",
    "train",
    "warmup_cosine",
]
