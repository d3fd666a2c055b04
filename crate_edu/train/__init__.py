"""Training CRATE (and the ViT baselines): recipes, the one training loop, crash-safe checkpoints.

Quick start (a small CRATE on the offline digits, a few minutes on a laptop CPU)::

    from crate_edu.train import RECIPES, train
    result = train(RECIPES["digits-quick"].config(), "runs/digits")
    result.final["test_acc"]

The same from a shell: ``crate-edu train`` (or ``crate-edu train --recipe cifar10-scratch``,
``accelerate launch -m crate_edu train --recipe imagenet --data-dir /data/imagenet``).

- ``config``, ``recipes``: :class:`TrainConfig`, its checks, and the named presets;
- ``loop``: the loop (:func:`train`, :func:`fit`, :func:`run_epochs`), read top to bottom;
- ``objectives``: what a run minimises and how it is scored (:class:`Classification`), and the
  contrastive image–text loss (:func:`contrastive_loss`);
- ``language``: next-token prediction for the causal language models (:class:`NextToken`), scored
  in bits (:func:`evaluate_language`); ``crate-edu train --recipe text-quick``;
- ``mae``: CRATE-MAE pre-training (:func:`pretrain_mae`), the same loop with :class:`MaskedPatches`;
- ``clip``: contrastive image–text training of a small CRATE-α-CLIPA on captioned digits with the
  CLIPA low-resolution phase (:func:`pretrain_clip`; :func:`pretrain_clip_quick` for a notebook's
  quick mode), the same loop with :class:`ContrastiveCaptions`;
- ``build``, ``optim``: datasets, model, loaders; optimisers and the learning-rate schedule;
- ``checkpoint``: atomic checkpoints and ``metrics.jsonl``; ``live``: curves drawn as a run goes;
- ``export``: a finished run as a weights file (:func:`export_run`).
"""

from crate_edu.data.loader import EpochSampler
from crate_edu.device import PRECISIONS, resolve_precision
from crate_edu.errors import ConfigError, TrainingDivergedError
from crate_edu.train.build import build_datasets, build_model, limit_dataset
from crate_edu.train.checkpoint import (
    CHECKPOINT_NAME,
    METRICS_NAME,
    FileWriteError,
    load_checkpoint,
    read_jsonl,
    save_checkpoint,
)
from crate_edu.train.clip import (
    LOW_RES_CHECKPOINT,
    CaptionBatches,
    CLIPRunResult,
    CLIPTrainConfig,
    ContrastiveCaptions,
    build_clip_model,
    clip_image_features,
    load_clip_run,
    pretrain_clip,
    pretrain_clip_quick,
    quick_clip_config,
    resize_positional_embedding,
    upsize_clip_model,
    zero_shot_scores,
)
from crate_edu.train.config import OPTIMIZERS, TrainConfig, check_config, choice_error, model_kwargs
from crate_edu.train.export import export_run
from crate_edu.train.language import NextToken, evaluate_language, evaluate_language_model, next_token_loss
from crate_edu.train.live import LiveCurves, quiet
from crate_edu.train.loop import OneDevice, RunResult, fit, run_epochs, train
from crate_edu.train.mae import (
    MAERunResult,
    MAETrainConfig,
    MaskedPatches,
    build_mae_model,
    load_mae_run,
    pretrain_mae,
)
from crate_edu.train.objectives import Classification, EpochStats, Objective, Run, contrastive_loss, evaluate
from crate_edu.train.optim import build_optimizer, lr_schedule, warmup_cosine
from crate_edu.train.recipes import DEFAULT_RECIPE, RECIPES, Recipe, get_recipe, list_recipes

__all__ = [
    "CHECKPOINT_NAME",
    "DEFAULT_RECIPE",
    "METRICS_NAME",
    "OPTIMIZERS",
    "PRECISIONS",
    "RECIPES",
    "CLIPRunResult",
    "CLIPTrainConfig",
    "LOW_RES_CHECKPOINT",
    "CaptionBatches",
    "Classification",
    "ConfigError",
    "ContrastiveCaptions",
    "EpochSampler",
    "EpochStats",
    "FileWriteError",
    "LiveCurves",
    "MAERunResult",
    "MAETrainConfig",
    "MaskedPatches",
    "Objective",
    "OneDevice",
    "Recipe",
    "Run",
    "RunResult",
    "TrainConfig",
    "TrainingDivergedError",
    "build_clip_model",
    "build_datasets",
    "build_mae_model",
    "build_model",
    "build_optimizer",
    "check_config",
    "choice_error",
    "clip_image_features",
    "contrastive_loss",
    "evaluate",
    "evaluate_language",
    "evaluate_language_model",
    "next_token_loss",
    "NextToken",
    "export_run",
    "fit",
    "get_recipe",
    "limit_dataset",
    "list_recipes",
    "load_checkpoint",
    "load_clip_run",
    "load_mae_run",
    "lr_schedule",
    "model_kwargs",
    "pretrain_clip",
    "pretrain_clip_quick",
    "pretrain_mae",
    "quick_clip_config",
    "quiet",
    "read_jsonl",
    "resize_positional_embedding",
    "resolve_precision",
    "run_epochs",
    "save_checkpoint",
    "train",
    "upsize_clip_model",
    "warmup_cosine",
    "zero_shot_scores",
]
