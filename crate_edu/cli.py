"""The ``crate-edu`` command line (also ``python -m crate_edu``).

Examples::

    crate-edu train                                   # digits-quick on the CPU, into runs/digits-quick-<time>
    crate-edu train --recipe cifar10-scratch --out runs/c10
    crate-edu train --out runs/c10 --resume           # continue an interrupted run
    crate-edu train --recipe finetune --pretrained CRATE_small.pth --dataset cifar100
    accelerate launch -m crate_edu train --recipe imagenet --data-dir /data/imagenet
    torchrun --nproc_per_node 4 -m crate_edu train --recipe cifar10-scratch
    crate-edu eval runs/c10/checkpoint.pt             # test accuracy and loss of a checkpoint
    crate-edu eval CRATE_small.pth --model crate_small --dataset imagenet --data-dir /data/imagenet
    crate-edu eval crate_alpha_CLIPA_L14.pth --zero-shot --data-dir /data/imagenet --vocab vocab.txt
    crate-edu fetch cifar10 crate_alpha_b16_in1k      # datasets and published weights, ahead of time
    crate-edu export runs/c10 c10.safetensors         # weights + how to rebuild the model (--force: replace)
    crate-edu list recipes                            # one line each (--verbose: in full)
    crate-edu show recipe cifar10-scratch             # also: show model|dataset|weights NAME

Bad input (an unknown name, a negative or non-finite number, a batch that does not fit, missing
or damaged data and checkpoints, a file that cannot be written, a run that diverges) is reported
as one line on stderr with exit status 2; an interrupted run exits with 130.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from crate_edu.device import PRECISIONS
from crate_edu.errors import one_line

PROG = "crate-edu"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _UsageError(Exception):
    """Bad command-line input detected by the CLI itself (printed as one line)."""


def _os_error_line(exc: OSError) -> str:
    """One line for an operating-system error that no command turned into a message of its own."""
    from crate_edu.weights.atomic import os_error_fix

    where = f" ({exc.filename})" if exc.filename else ""
    what = exc.strerror or one_line(exc) or type(exc).__name__
    return f"{what}{where}; {os_error_fix(exc)}"


# --------------------------------------------------------------------------------------------
# Parser.
# --------------------------------------------------------------------------------------------

#: ``train`` options that map one-to-one onto TrainConfig fields (flag dest == field name).
_CONFIG_FLAGS = (
    "model",
    "dataset",
    "data_dir",
    "epochs",
    "batch_size",
    "grad_accum",
    "lr",
    "optimizer",
    "weight_decay",
    "momentum",
    "warmup_epochs",
    "min_lr_ratio",
    "min_lr",
    "decay_mask",
    "smoothing_style",
    "mixup_alpha",
    "cutmix_alpha",
    "mix_switch_prob",
    "randaugment_magnitude",
    "resample_pretrained",
    "label_smoothing",
    "grad_clip",
    "image_size",
    "augment",
    "normalize",
    "compile",
    "precision",
    "seed",
    "pretrained",
    "download",
    "num_workers",
    "threads",
    "eval_batch_size",
    "limit_train",
    "limit_test",
    "progress",
    "data_on_device",
    "tokenizer",
)
#: ``train`` options that become ``create_model`` overrides.
_MODEL_FLAGS = ("depth", "dim", "heads", "patch_size", "pool", "dropout", "block_size")


def _finite_float(text: str) -> float:
    """An argparse type: a finite float (``nan``, ``inf`` and overflowing values are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}; give a number such as 0.001") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; give a number such as 0.001")
    return value


def _grad_clip(text: str) -> float | None:
    value = _finite_float(text)
    return None if value == 0 else value


def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (no arguments: the digits-quick recipe on the CPU)",
        description="Train a classifier. A recipe sets the defaults; every flag overrides it. "
        "Run `crate-edu list recipes` for the recipes and their sources.",
        argument_default=argparse.SUPPRESS,  # only the flags the user gives reach the namespace
    )
    _add_run_flags(p.add_argument_group("run"))
    _add_data_flags(p.add_argument_group("data"))
    _add_optimisation_flags(p.add_argument_group("optimisation"))
    _add_model_flags(p.add_argument_group("model"))


def _add_run_flags(g: Any) -> None:
    g.add_argument("--recipe", help="named preset of defaults (default: digits-quick)")
    g.add_argument("--out", help="run folder (default: runs/<recipe>-<date>-<time>)")
    g.add_argument(
        "--resume",
        nargs="?",
        const=True,
        metavar="PATH",
        help="continue the run in --out, or the checkpoint/run folder PATH",
    )
    g.add_argument("--seed", type=int, help="random seed (the data order depends only on seed and epoch)")
    g.add_argument(
        "--pretrained",
        metavar="PATH|KEY",
        help="initial weights: official file, trainer checkpoint, or published key",
    )
    g.add_argument(
        "--resample-pretrained",
        action=argparse.BooleanOptionalAction,
        help="interpolate the position/patch embeddings of --pretrained weights made for another size",
    )
    g.add_argument("--precision", help="auto (default), no, fp16 or bf16")
    g.add_argument(
        "--compile",
        nargs="?",
        const="inductor",
        metavar="BACKEND",
        help="torch.compile the model (default backend: inductor; pays off on GPUs)",
    )
    g.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, help="progress bar (default: on a terminal)"
    )


def _add_data_flags(g: Any) -> None:
    g.add_argument(
        "--dataset", help="dataset name (crate-edu list datasets), or a text corpus for a language model"
    )
    g.add_argument("--tokenizer", help="language models: char (default), byte or gpt2")
    g.add_argument("--data-dir", help="root folder of the datasets")
    g.add_argument(
        "--download",
        action=argparse.BooleanOptionalAction,
        help="download a missing dataset where its source allows it (default: on)",
    )
    g.add_argument("--image-size", type=int, help="image side in pixels")
    g.add_argument(
        "--augment",
        help="train augmentation: none, cifar, shift, randaugment, imagenet, imagenet-randaugment",
    )
    g.add_argument(
        "--normalize", help="input statistics: dataset (its own mean/std) or imagenet (for ImageNet weights)"
    )
    g.add_argument("--num-workers", type=int, help="data-loading processes per training process")
    g.add_argument(
        "--data-on-device",
        choices=("auto", "yes", "no"),
        help="keep CIFAR/digits images on the GPU and augment them there (auto: on CUDA when the dataset "
        "and --augment allow it; yes: also on CPU, an error where impossible; no: a DataLoader)",
    )
    g.add_argument("--limit-train", type=int, metavar="N", help="train on a fixed random subset of N images")
    g.add_argument(
        "--limit-test", type=int, metavar="N", help="evaluate on a fixed random subset of N images"
    )


def _add_optimisation_flags(g: Any) -> None:
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="global batch size (summed over processes)")
    g.add_argument("--grad-accum", type=int, help="forward passes per optimiser step (default 1)")
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--optimizer", help="lion, adamw or sgd")
    g.add_argument("--lr", type=_finite_float, help="peak learning rate")
    g.add_argument("--weight-decay", type=_finite_float)
    g.add_argument("--momentum", type=_finite_float, help="SGD momentum")
    g.add_argument("--warmup-epochs", type=_finite_float)
    g.add_argument("--min-lr-ratio", type=_finite_float, help="final lr as a fraction of --lr")
    g.add_argument("--label-smoothing", type=_finite_float)
    g.add_argument("--grad-clip", type=_grad_clip, help="max global gradient norm (0: no clipping)")
    g.add_argument(
        "--min-lr", type=_finite_float, help="final lr in absolute terms (replaces --min-lr-ratio)"
    )
    g.add_argument(
        "--decay-mask",
        help="weight decay on: all (default), kernels (Linear/Conv weights only) or matrices (2-D and up)",
    )
    g.add_argument("--smoothing-style", help="label smoothing form: torch (default) or big_vision")
    g.add_argument(
        "--mixup-alpha", type=_finite_float, help="mixup with the reversed batch, λ ~ Beta(a, a); 0: off"
    )
    g.add_argument(
        "--cutmix-alpha", type=_finite_float, help="CutMix with the reversed batch, λ ~ Beta(a, a); 0: off"
    )
    g.add_argument("--mix-switch-prob", type=_finite_float, help="probability of mixup when both are on")
    g.add_argument(
        "--randaugment-magnitude", type=_finite_float, help="0-30 (randaugment), 0-10 (imagenet-randaugment)"
    )
    g.add_argument("--threads", type=int, help="CPU threads of torch per process")


def _add_model_flags(g: Any) -> None:
    g.add_argument("--model", help="model name (crate-edu list models)")
    g.add_argument("--depth", type=int)
    g.add_argument("--dim", type=int)
    g.add_argument("--heads", type=int)
    g.add_argument("--patch-size", type=int)
    g.add_argument("--pool", help="cls or mean")
    g.add_argument("--dropout", type=_finite_float)
    g.add_argument("--block-size", type=int, help="language models: context length in tokens")


def _add_eval(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="test accuracy and loss of a checkpoint, or zero-shot ImageNet accuracy of an image-text model",
        description="Evaluate a trainer checkpoint (or official weights with --model) on a dataset split; "
        "with --zero-shot, classify ImageNet zero-shot with CRATE-α-CLIPA weights as the official "
        "eval_in1k.py does (1000 class names × 80 prompt templates; top-1 and top-5).",
    )
    p.add_argument(
        "checkpoint",
        help="checkpoint.pt, a run folder, a weights file written by `crate-edu export`, or an official "
        "weights file (with --model; with --zero-shot the CRATE-α-CLIPA preset is read from the file)",
    )
    p.add_argument(
        "--dataset", help="dataset (default: the one the checkpoint was trained on; zero-shot: imagenet)"
    )
    p.add_argument("--split", default="test", choices=("test", "train"))
    p.add_argument("--data-dir")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--model", help="model name, for official weights files")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto (default: bf16 on a GPU) or as named; zero-shot: no (float32, as officially) by default",
    )
    p.add_argument("--num-workers", type=int)
    p.add_argument("--limit", type=int, metavar="N", help="evaluate on a fixed random subset of N images")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    z = p.add_argument_group("zero-shot (image-text models)")
    z.add_argument(
        "--zero-shot",
        action="store_true",
        help="zero-shot ImageNet classification from the class names and the official 80 templates "
        '(needs the clip extra: pip install "crate-edu[clip]")',
    )
    vocab = z.add_mutually_exclusive_group()
    vocab.add_argument(
        "--vocab", metavar="FILE", help="the text tokenizer's vocabulary: BERT uncased vocab.txt"
    )
    vocab.add_argument(
        "--vocab-from-hub",
        action="store_true",
        help="download bert-base-uncased's vocab.txt from the Hugging Face hub (once, into the hub cache)",
    )
    z.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars on stderr"
    )


def _add_generate(sub: Any) -> None:
    p = sub.add_parser(
        "generate",
        help="continue a text prompt with a trained language model",
        description=(
            "Sample text from a language model: a run folder or checkpoint of `crate-edu train "
            "--recipe text-quick`, or a weights file it was exported to (the tokenizer is the run's)."
        ),
    )
    p.add_argument("checkpoint", help="a run folder, its checkpoint.pt, or an exported .safetensors file")
    p.add_argument("--prompt", default="The ", help="the text to continue (default: 'The ')")
    p.add_argument("--tokens", type=int, default=200, help="how many tokens to add (default 200)")
    p.add_argument("--temperature", type=_finite_float, default=0.8, help="softmax temperature (default 0.8)")
    p.add_argument("--top-k", type=int, default=20, help="sample among the k likeliest tokens (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (the same seed, the same text)")
    p.add_argument("--samples", type=int, default=1, help="how many continuations (default 1)")


def _add_fetch(sub: Any) -> None:
    p = sub.add_parser(
        "fetch",
        help="download datasets and published weights ahead of time",
        description="Download datasets (crate-edu list datasets) and published weights (crate-edu list "
        "weights) into their caches, verifying checksums and structure.",
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="dataset names and/or weights keys")
    p.add_argument("--data-dir", help="root folder for datasets")
    p.add_argument("--cache-dir", help="folder for weights")
    p.add_argument("--size", help="imagenette size: 160px, 320px or full")
    p.add_argument("--force", action="store_true", help="download weights again even if cached")


def _add_export(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="write a run's weights to a self-describing safetensors file",
        description="Write the model weights of a training run (its folder or checkpoint.pt) to a "
        "safetensors file that also records the model name, its options and the run's final metrics; "
        "load it with crate_edu.load_weights(PATH).",
    )
    p.add_argument("run", help="a run folder or its checkpoint.pt")
    p.add_argument("out", help="the .safetensors file to write")
    p.add_argument("--command", dest="made_by", help="record the command that produced the run")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists (default: refuse)")


#: What ``list`` and ``show`` know about.
_KINDS = ("models", "datasets", "corpora", "recipes", "weights")


def _add_list(sub: Any) -> None:
    p = sub.add_parser(
        "list",
        help="list models, datasets, recipes or published weights (one line each)",
        description="One line per entry; `crate-edu show KIND NAME` (or --verbose) gives the details.",
    )
    p.add_argument("what", choices=_KINDS)
    p.add_argument("-v", "--verbose", action="store_true", help="the full description of each entry")


def _add_show(sub: Any) -> None:
    p = sub.add_parser(
        "show",
        help="everything about one model, dataset, recipe or published weights",
        description="Print one entry in full, e.g. `crate-edu show recipe cifar10-scratch`.",
    )
    p.add_argument("what", choices=("model", "dataset", "recipe", "weights"))
    p.add_argument("name", help="its name (crate-edu list KIND)")


def build_parser() -> argparse.ArgumentParser:
    """The ``crate-edu`` argument parser."""
    parser = _Parser(
        prog=PROG,
        description="CRATE, the white-box transformer: train, evaluate, fetch data and weights.",
        epilog="Run `crate-edu COMMAND --help` for the options of a command.",
    )
    from crate_edu import __version__

    parser.add_argument("--version", action="version", version=f"crate-edu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train(sub)
    _add_eval(sub)
    _add_generate(sub)
    _add_fetch(sub)
    _add_export(sub)
    _add_list(sub)
    _add_show(sub)
    return parser


# --------------------------------------------------------------------------------------------
# Commands.
# --------------------------------------------------------------------------------------------


def _is_main_process() -> bool:
    from crate_edu.device import distributed_state

    return distributed_state().is_main_process


def _fresh_run_dir(label: str) -> Path:
    base = Path("runs") / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, k = base, 2
    while out.exists():
        out, k = base.with_name(f"{base.name}-{k}"), k + 1
    return out


def _broadcast_str(value: str) -> str:
    """``value`` of the main process, on every process (run folders named by the clock)."""
    from accelerate.utils import broadcast_object_list

    from crate_edu.device import distributed_state

    if distributed_state().num_processes == 1:
        return value
    box = [value]
    broadcast_object_list(box, from_process=0)
    return str(box[0])


def train_settings(given: dict[str, Any]) -> tuple[Any, dict[str, Any], list[str]]:
    """What the parsed flags of ``crate-edu train`` (``vars(args)``) ask for: the recipe, the
    :class:`~crate_edu.train.TrainConfig` overrides, and the fields the user typed (on ``--resume``
    the checkpoint's configuration wins over everything else). ``recipe.config(**overrides)`` is the
    run's configuration; :mod:`crate_edu.launch` reads launch commands through this too."""
    from crate_edu.train import DEFAULT_RECIPE, get_recipe

    overrides: dict[str, Any] = {k: given[k] for k in _CONFIG_FLAGS if k in given}
    model_overrides = {k: given[k] for k in _MODEL_FLAGS if k in given}
    explicit = list(overrides) + (["model_overrides"] if model_overrides else [])
    overrides.setdefault("download", True)
    if model_overrides:
        overrides["model_overrides"] = model_overrides
    return get_recipe(given.get("recipe", DEFAULT_RECIPE)), overrides, explicit


def cmd_train(args: argparse.Namespace) -> int:
    """``crate-edu train``."""
    from crate_edu.train import train

    given = vars(args)
    recipe, overrides, explicit = train_settings(given)
    resume = given.get("resume", False)
    cfg = recipe.config(**overrides)
    if recipe.needs_pretrained and not cfg.pretrained and not resume:
        raise _UsageError(
            f"recipe {recipe.name!r} fine-tunes pretrained weights: pass --pretrained PATH (an official "
            "checkpoint such as CRATE_small.pth, or a checkpoint.pt of this trainer)"
        )
    out = given.get("out")
    if resume is True and out is None:
        raise _UsageError("--resume needs the run folder: pass --out DIR, or --resume PATH")
    if out is None and not resume:
        named = "recipe" in given or not ({"model", "dataset"} & given.keys())
        out = _broadcast_str(str(_fresh_run_dir(recipe.name if named else f"{cfg.model}-{cfg.dataset}")))
    args.run_folder = out if out is not None else resume  # for the hint after Ctrl-C
    result = train(cfg, out, resume=resume, explicit=explicit)
    if _is_main_process():
        if result.history:
            f = result.final
            score = f"test_acc {f['test_acc']:.4f}  test_loss {f['test_loss']:.4f}"
            if "test_bits" in f:  # a language model: validation loss in bits per token
                unit = f"bits per {result.config.tokenizer} token"
                score = f"val_loss {f['test_loss']:.4f} ({f['test_bits']:.3f} {unit})"
            print(
                f"done: {score} after {f['epoch']} epochs "
                f"({sum(h['seconds'] for h in result.history):.1f} s of training)"
            )
        print(f"run folder: {result.out_dir}")
        print(f"  metrics:    {result.out_dir / 'metrics.jsonl'}")
        print(f"  checkpoint: {result.checkpoint}")
        print(f"  evaluate:   {PROG} eval {result.checkpoint}")
    return 0


def _from_exported(path: Path, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """Model and data settings of a weights file written by `crate-edu export` (it says which)."""
    from crate_edu.train.config import TrainConfig
    from crate_edu.weights import load_weights

    model, info = load_weights(path)
    saved = info.metadata.get("train_config")
    cfg = TrainConfig.from_dict(saved) if isinstance(saved, dict) else None
    if args.model is not None and args.model != info.model_name:
        raise _UsageError(f"{path} holds a {info.model_name!r} model, not {args.model!r}")
    if args.dataset is None and cfg is None:
        raise _UsageError(f"{path} does not record the dataset it was trained on; pass --dataset NAME")
    return model, dict(
        model_name=info.model_name,
        dataset=args.dataset or cfg.dataset,  # type: ignore[union-attr]
        image_size=getattr(model.config, "image_size", None),
        augment=cfg.augment if cfg is not None else None,
        normalize=cfg.normalize if cfg is not None else None,
        data_dir=args.data_dir if args.data_dir is not None or cfg is None else cfg.data_dir,
        tokenizer=cfg.tokenizer if cfg is not None else "char",
    )


def _from_checkpoint(path: Path, args: argparse.Namespace, obj: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Model and data settings of a checkpoint of `crate-edu train` (its configuration says which)."""
    from crate_edu.models import create_model
    from crate_edu.train.config import TrainConfig, image_size_of, model_kwargs

    cfg = TrainConfig.from_dict(obj["config"])
    if args.model is not None and args.model != cfg.model:
        raise _UsageError(f"{path} holds a {cfg.model!r} model, not {args.model!r}")
    model = create_model(cfg.model, **model_kwargs(cfg))
    model.load_state_dict(obj["model"])
    return model, dict(
        model_name=cfg.model,
        dataset=args.dataset or cfg.dataset,
        image_size=image_size_of(cfg),
        augment=cfg.augment,
        normalize=cfg.normalize,
        data_dir=args.data_dir if args.data_dir is not None else cfg.data_dir,
        tokenizer=cfg.tokenizer,
    )


def _from_official(path: Path, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """Model and data settings of official weights (``--model`` and ``--dataset`` say which)."""
    from crate_edu.train.config import TrainConfig, check_config
    from crate_edu.weights import load_official

    if args.model is None or args.dataset is None:
        raise _UsageError(
            f"{path} is not a crate-edu checkpoint (a plain state dict or other weights); to "
            "evaluate official weights pass --model NAME and --dataset NAME"
        )
    check_config(TrainConfig(model=args.model, dataset=args.dataset, tokenizer="gpt2"))
    try:
        model = load_official(args.model, path)
    except (ValueError, RuntimeError, OSError) as e:
        raise _UsageError(f"{path}: {one_line(e)}") from None
    return model, dict(
        model_name=args.model,
        dataset=args.dataset,
        image_size=getattr(model.config, "image_size", None),
        augment=None,
        normalize="imagenet",  # the published weights were trained on ImageNet-normalised images
        data_dir=args.data_dir,
        tokenizer="gpt2",  # the published language model's (CRATE-LM on the Pile)
    )


def _load_for_eval(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(model, test dataset, description) for ``crate-edu eval``."""
    from crate_edu.data import build_dataset, dataset_info
    from crate_edu.errors import ConfigError
    from crate_edu.models import model_spec
    from crate_edu.train.build import limit_dataset
    from crate_edu.train.checkpoint import CHECKPOINT_NAME, is_checkpoint, read_checkpoint
    from crate_edu.train.config import TrainConfig, check_config
    from crate_edu.weights import is_weights_file

    path = Path(args.checkpoint).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise _UsageError(f"no checkpoint at {path}")
    if is_weights_file(path):
        model, data = _from_exported(path, args)
    else:
        obj = read_checkpoint(path, mmap=True)  # nothing in the file runs; one line if unreadable
        model, data = _from_checkpoint(path, args, obj) if is_checkpoint(obj) else _from_official(path, args)
        del obj
    if model_spec(data["model_name"]).task == "language":
        return model, *_language_eval_data(model, data, args)
    dataset, image_size = data["dataset"], data["image_size"]
    check_config(TrainConfig(model=data["model_name"], dataset=dataset, image_size=image_size))
    n_model = getattr(model.config, "num_classes", None)
    n_data = dataset_info(dataset).num_classes
    if n_model is not None and n_model != n_data:
        raise ConfigError(
            f"the model predicts {n_model} classes but {dataset} has {n_data}; choose a matching --dataset"
        )
    augment = "none" if args.split == "train" else data["augment"]
    ds = build_dataset(
        dataset,
        args.split,
        data_dir=data["data_dir"],
        image_size=image_size,
        augment=augment,
        normalize=data["normalize"],
        download=args.download,
    )
    if args.limit is not None:
        ds = limit_dataset(ds, args.limit)
    return model, ds, f"{dataset} {args.split}"


def _language_eval_data(model: Any, data: dict[str, Any], args: argparse.Namespace) -> tuple[Any, str]:
    """(windows, description) a language model is evaluated on: its corpus's validation text
    (``--split test``, the default) or training text, in windows of its context."""
    from crate_edu.text import build_text_dataset
    from crate_edu.train.build import limit_dataset
    from crate_edu.train.config import TrainConfig, check_config

    dataset, tokenizer = data["dataset"], data["tokenizer"]
    check_config(TrainConfig(model=data["model_name"], dataset=dataset, tokenizer=tokenizer))
    split = "val" if args.split == "test" else "train"
    context = model.config.block_size
    ds = build_text_dataset(
        dataset,
        split,
        tokenizer=tokenizer,
        block_size=context,
        stride=context,
        data_dir=data["data_dir"],
        download=args.download,
    )
    if ds.vocab_size > model.config.vocab_size:
        raise _UsageError(
            f"the {tokenizer} tokenizer has {ds.vocab_size} ids but the model reads {model.config.vocab_size}"
        )
    if args.limit is not None:
        ds = limit_dataset(ds, args.limit)
    return ds, f"{dataset} {split} ({tokenizer} tokens)"


def cmd_eval(args: argparse.Namespace) -> int:
    """``crate-edu eval``."""
    from crate_edu.train import evaluate, evaluate_language
    from crate_edu.train.checkpoint import json_line

    if args.batch_size < 1:
        raise _UsageError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise _UsageError(f"--limit must be a positive integer, got {args.limit}")
    if args.num_workers is not None and args.num_workers < 0:
        raise _UsageError(f"--num-workers must be 0 or more, got {args.num_workers}")
    if args.zero_shot:
        return cmd_eval_zero_shot(args)
    if args.vocab is not None or args.vocab_from_hub:
        raise _UsageError("--vocab and --vocab-from-hub are for --zero-shot; add --zero-shot")
    model, ds, what = _load_for_eval(args)
    language = hasattr(ds, "vocab_size") or hasattr(getattr(ds, "dataset", None), "vocab_size")
    result = (evaluate_language if language else evaluate)(
        model,
        ds,
        batch_size=args.batch_size,
        precision=args.precision or "auto",
        num_workers=args.num_workers,
    )
    if _is_main_process():
        if args.json:
            print(json_line({"checkpoint": str(args.checkpoint), "data": what, **result}))
        elif language:
            print(
                f"{what}: {result['bits']:.4f} bits per token (loss {result['loss']:.4f} nats), next-token "
                f"acc {result['acc']:.4f}, {result['n']} tokens"
            )
        else:
            print(
                f"{what}: acc {result['acc']:.4f} ({round(result['acc'] * result['n'])}/{result['n']}), "
                f"loss {result['loss']:.4f}"
            )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """``crate-edu generate``."""
    import torch

    from crate_edu.models import model_spec
    from crate_edu.text import get_tokenizer
    from crate_edu.train.checkpoint import CHECKPOINT_NAME, is_checkpoint, read_checkpoint
    from crate_edu.weights import is_weights_file

    for flag, value, least in (
        ("--tokens", args.tokens, 1),
        ("--top-k", args.top_k, 0),
        ("--samples", args.samples, 1),
    ):
        if value < least:
            raise _UsageError(f"{flag} must be at least {least}, got {value}")
    if not args.temperature > 0:
        raise _UsageError(
            f"--temperature must be positive (1 samples the model's distribution), got {args.temperature}"
        )
    if not args.prompt:
        raise _UsageError("--prompt is empty; give at least one character to continue")
    path = Path(args.checkpoint).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise _UsageError(f"no checkpoint at {path}")
    args.model, args.dataset, args.data_dir = None, None, None
    if is_weights_file(path):
        model, data = _from_exported(path, args)
    else:
        obj = read_checkpoint(path, mmap=True)
        if not is_checkpoint(obj):
            raise _UsageError(
                f"{path} is not a checkpoint of crate-edu train; give a run folder or exported file"
            )
        model, data = _from_checkpoint(path, args, obj)
    if model_spec(data["model_name"]).task != "language":
        raise _UsageError(
            f"{path} holds {data['model_name']!r}, an image model; generate needs a language model"
        )
    tokenizer = get_tokenizer(data["tokenizer"])
    prompt = torch.tensor([tokenizer.encode(args.prompt)] * args.samples, dtype=torch.long)
    out = model.eval().generate(
        prompt,
        args.tokens,
        temperature=args.temperature,
        top_k=args.top_k or None,
        generator=torch.Generator().manual_seed(args.seed),
    )
    for i, row in enumerate(out.tolist()):
        if args.samples > 1:
            print(f"--- sample {i + 1} ---")
        print(tokenizer.decode(row))
    return 0


#: Datasets whose class folders are ImageNet-1K WordNet ids (zero-shot scores them among all 1000).
_ZERO_SHOT_DATASETS = ("imagenet", "imagenet-100")


def _zero_shot_tokenizer(args: argparse.Namespace) -> Any:
    """The CLIPA tokenizer from ``--vocab`` or ``--vocab-from-hub`` (one line if neither, or if unusable)."""
    from crate_edu.text import CLIPATokenizer

    if args.vocab is None and not args.vocab_from_hub:
        raise _UsageError(
            "--zero-shot needs the text tokenizer's vocabulary: pass --vocab vocab.txt (BERT uncased, the "
            "vocab.txt of bert-base-uncased) or --vocab-from-hub to download it from the Hugging Face hub"
        )
    return CLIPATokenizer.from_hub() if args.vocab_from_hub else CLIPATokenizer(args.vocab)


def _clipa_preset(path: Path, state_dict: dict[str, Any]) -> str:
    """The registered CRATE-α-CLIPA preset whose every key and shape the file has."""
    from crate_edu.models import list_models, model_config
    from crate_edu.models.crate_alpha_clipa import CRATEAlphaCLIPAConfig
    from crate_edu.weights import compare_structure, expected_shapes

    presets = [n for n in list_models() if isinstance(model_config(n), CRATEAlphaCLIPAConfig)]
    for name in presets:
        if compare_structure(expected_shapes(name), state_dict).ok:
            return name
    raise _UsageError(
        f"{path} is a CRATE-α-CLIPA state dict that fits none of the presets {', '.join(presets)} "
        "(another width, depth or vocabulary); pass --model NAME (crate-edu list models)"
    )


def _load_zero_shot_model(args: argparse.Namespace) -> tuple[Any, str]:
    """(image-text model in eval mode, its name) from a weights file, a run, or an official state dict."""
    from crate_edu.models import create_model
    from crate_edu.models.crate_alpha_clipa import CRATEAlphaCLIPA
    from crate_edu.train.checkpoint import CHECKPOINT_NAME, is_checkpoint, read_checkpoint
    from crate_edu.weights import detect_family, is_weights_file, load_weights, read_state_dict
    from crate_edu.weights.structure import check_structure

    path = Path(args.checkpoint).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise _UsageError(f"no weights file at {path}")
    if is_weights_file(path):
        model, info = load_weights(path)
        name = info.model_name
    elif is_checkpoint(obj := read_checkpoint(path, mmap=True)):  # a run of `crate-edu train`
        model, data = _from_checkpoint(path, args, obj)
        name = data["model_name"]
    else:  # an official state dict, e.g. crate_alpha_CLIPA_L14.pth
        del obj
        state_dict = read_state_dict(path)
        family = detect_family(state_dict)
        if family != "crate_alpha_clipa":
            looks = (
                f"its keys are those of a {family} model" if family else "its keys are not a CRATE model's"
            )
            raise _UsageError(
                f"{path} is not CRATE-α-CLIPA weights ({looks}); --zero-shot needs an image-text model "
                "such as crate_alpha_CLIPA_L14.pth (crate-edu list weights)"
            )
        name = args.model or _clipa_preset(path, state_dict)
        check_structure(name, state_dict, path, {}, strict=True)  # one line naming what differs
        model = create_model(name)
        model.load_state_dict(state_dict)
        del state_dict
    if not isinstance(model, CRATEAlphaCLIPA):
        raise _UsageError(
            f"{path} holds a {name!r} model, not an image-text model; --zero-shot needs CRATE-α-CLIPA weights"
        )
    if args.model is not None and args.model != name:
        raise _UsageError(f"{path} holds a {name!r} model, not {args.model!r}")
    return model.eval(), name


def cmd_eval_zero_shot(args: argparse.Namespace) -> int:
    """``crate-edu eval WEIGHTS --zero-shot``: the official ImageNet zero-shot evaluation.

    The cheap checks come first (the vocabulary and the optional packages, then the data folder),
    the weights (2.6 GB for L/14) last. One process, one device.
    """
    import os

    from torch.utils.data import DataLoader

    from crate_edu.device import detect_device, resolve_precision
    from crate_edu.evaluation.zero_shot import (
        class_embeddings,
        evaluate_zero_shot,
        imagenet_classnames,
        imagenet_templates,
        zero_shot_transform,
    )
    from crate_edu.train.build import default_workers, limit_dataset

    dataset = args.dataset or "imagenet"
    if dataset not in _ZERO_SHOT_DATASETS:
        raise _UsageError(
            f"--zero-shot classifies ImageNet-1K classes; choose --dataset "
            f"{' or '.join(_ZERO_SHOT_DATASETS)}, not {dataset!r}"
        )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the loader's workers fork after tokenizing
    tokenizer = _zero_shot_tokenizer(args)
    ds, label_map = _zero_shot_folder(args, dataset)
    model, name = _load_zero_shot_model(args)
    cfg = model.config
    if tokenizer.vocab_size > cfg.vocab_size:
        raise _UsageError(
            f"the vocabulary has {tokenizer.vocab_size} tokens but {name}'s text tower embeds "
            f"{cfg.vocab_size}; use the vocabulary the model was trained with (bert-base-uncased's for "
            "the published weights)"
        )
    ds.transform = zero_shot_transform(cfg.image_size)  # the official preprocessing, at the model's size
    ds = limit_dataset(ds, args.limit)

    choice = detect_device()
    device = choice.device
    precision = resolve_precision(args.precision or "no", device.type)  # the official float32 by default
    model.to(device)
    classnames, templates = imagenet_classnames(), imagenet_templates()

    def encode_text(tokens: Any) -> Any:
        from crate_edu.device import autocast

        with autocast(device, precision):
            return model.encode_text(tokens)

    W = class_embeddings(
        encode_text,
        lambda texts: tokenizer(texts, context_length=cfg.context_length),
        classnames,
        templates,
        batch_size=args.batch_size,
        device=device,
        progress=args.progress,
    )  # (E, 1000)
    workers = default_workers(device.type, 1) if args.num_workers is None else args.num_workers
    loader = DataLoader(
        ds, batch_size=args.batch_size, shuffle=False, num_workers=workers, pin_memory=device.type == "cuda"
    )
    result = evaluate_zero_shot(
        model, loader, W, label_map=label_map, device=device, precision=precision, progress=args.progress
    )
    setting = {"model": name, "classes": len(classnames), "templates": len(templates)}
    _print_zero_shot(
        args, f"{dataset} {args.split}", setting | {"device": device.type, "precision": precision}, result
    )
    return 0


def _zero_shot_folder(args: argparse.Namespace, dataset: str) -> tuple[Any, dict[int, int]]:
    """The ImageNet folder as an ImageFolder, and its labels -> ImageNet-1K labels."""
    from crate_edu.data import build_dataset
    from crate_edu.evaluation.zero_shot import imagenet_label_map

    ds = build_dataset(dataset, args.split, data_dir=args.data_dir, augment="none", normalize="imagenet")
    if not (hasattr(ds, "transform") and hasattr(ds, "classes")):  # an ImageFolder of class folders
        raise TypeError(f"build_dataset({dataset!r}) gave {type(ds).__name__}, not an ImageFolder")
    try:
        return ds, imagenet_label_map(ds.classes)  # the folders' labels -> ImageNet-1K labels
    except ValueError as e:
        raise _UsageError(f"{args.data_dir or 'the data folder'}: {e}") from None


def _print_zero_shot(
    args: argparse.Namespace, what: str, setting: dict[str, Any], result: dict[str, Any]
) -> None:
    """One JSON line (``--json``) or one sentence with top-1 and top-5."""
    from crate_edu.train.checkpoint import json_line

    if args.json:
        print(
            json_line(
                {"checkpoint": str(args.checkpoint), "data": what, "zero_shot": True, **setting, **result}
            )
        )
        return
    n = result["n"]
    print(
        f"{what}, zero-shot ({setting['model']}, {setting['classes']} classes × {setting['templates']} "
        f"templates): top-1 {result['top1']:.4f} ({round(result['top1'] * n)}/{n}), "
        f"top-5 {result['top5']:.4f} ({round(result['top5'] * n)}/{n})"
    )


def cmd_fetch(args: argparse.Namespace) -> int:
    """``crate-edu fetch``."""
    import crate_edu
    from crate_edu.data import fetch_dataset, list_datasets
    from crate_edu.text import corpus_info, fetch_corpus, list_corpora
    from crate_edu.weights.official import get_official

    datasets = list_datasets()
    corpora = [c for c in list_corpora() if corpus_info(c).downloadable]
    weights = [w.key for w in crate_edu.list_official()]
    unknown = []
    for name in args.names:
        if name in list_corpora() and name not in corpora:
            raise _UsageError(
                f"corpus {name!r} is not downloaded by crate-edu: {corpus_info(name).description}"
            )
        if name not in datasets and name not in weights and name not in corpora:
            try:
                get_official(name)  # a model name with exactly one entry
            except ValueError:
                unknown.append(name)
    if unknown:
        raise _UsageError(
            f"unknown name(s) {', '.join(map(repr, unknown))}; datasets: {', '.join(datasets)}; "
            f"text corpora: {', '.join(corpora)}; weights: {', '.join(weights)}"
        )
    for name in args.names:
        if name in corpora:
            print(f"{name}: {fetch_corpus(name, data_dir=args.data_dir)}")
        elif name in datasets:
            kw = {"size": args.size} if args.size and name == "imagenette" else {}
            path = fetch_dataset(name, data_dir=args.data_dir, **kw)
            print(f"{name}: {path}")
        else:
            path = crate_edu.download_official(name, cache_dir=args.cache_dir, force=args.force)
            print(f"{name}: {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``crate-edu export``."""
    from crate_edu.train import export_run

    out = Path(args.out)
    if out.is_dir():
        raise _UsageError(
            f"{out} is a folder; give the path of the file to write, e.g. {out / 'weights.safetensors'}"
        )
    if not str(args.out).endswith(".safetensors"):
        raise _UsageError(f"the output file must end in .safetensors, got {args.out!r}")
    meta = {"command": args.made_by} if args.made_by else None
    try:
        path = export_run(args.run, out, metadata=meta, overwrite=args.force)
    except FileExistsError:  # the API's message names overwrite=True; here the flag is the fix
        raise _UsageError(
            f"{out} already exists; choose another file name, or pass --force to replace it"
        ) from None
    except (FileNotFoundError, ValueError) as exc:
        raise _UsageError(one_line(exc)) from None
    print(f"wrote {path}")
    return 0


def _summary(text: str, width: int = 100) -> str:
    """The first sentence of ``text``, cut at ``width`` characters."""
    first = " ".join(text.split()).split(". ")[0].rstrip(".")
    return first if len(first) <= width else first[: width - 1].rstrip() + "…"


def _recipe_line(r: Any) -> str:
    return (
        f"{r.name:17s} {r.model} on {r.dataset}, {r.epochs} epochs, batch {r.batch_size}, "
        f"{r.optimizer} lr {r.lr:g}: {r.summary}"
    )


def cmd_list(args: argparse.Namespace) -> int:
    """``crate-edu list``: one line per entry (``--verbose``: each entry in full)."""
    import crate_edu

    if args.what == "models":
        from crate_edu.models.registry import model_spec

        for name in crate_edu.list_models():
            print(_model_text(name) if args.verbose else f"{name:24s} {model_spec(name).description}")
    elif args.what == "datasets":
        from crate_edu.data import dataset_info, list_datasets

        for name in list_datasets():
            if args.verbose:
                print(_dataset_text(name))
                continue
            info = dataset_info(name)
            print(f"{name:18s} {info.num_classes:5d} classes  {info.image_size:4d} px  {info.description}")
    elif args.what == "corpora":
        from crate_edu.text import corpus_info, list_corpora

        for name in list_corpora():
            info = corpus_info(name)
            if args.verbose:
                print(
                    f"{name}\n"
                    + _fields(
                        [(k, getattr(info, k)) for k in ("kind", "description", "source", "size", "license")]
                    )
                )
                continue
            size = f"{info.size:,} chars" if info.size else "your token files"
            how = (
                "download on request"
                if info.downloadable
                else ("offline" if info.kind == "text" else "made by you")
            )
            print(f"{name:18s} {size:>16s}  {how}")
    elif args.what == "recipes":
        from crate_edu.train import RECIPES

        for r in RECIPES.values():
            print(_recipe_text(r.name) if args.verbose else _recipe_line(r))
    else:
        for w in crate_edu.list_official():
            where = w.url or "never published"
            print(_weights_text(w.key) if args.verbose else f"{w.key:28s} model={w.model}  {where}")
    return 0


def _fields(pairs: list[tuple[str, Any]]) -> str:
    return "\n".join(f"  {k + ':':18s} {v}" for k, v in pairs if v not in (None, ""))


def _wrap(text: str) -> str:
    import textwrap

    return textwrap.fill(
        " ".join(text.split()),
        width=100,
        initial_indent="  ",
        subsequent_indent="  ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _recipe_text(name: str) -> str:
    import dataclasses

    from crate_edu.train import get_recipe

    r = get_recipe(name)
    skip = ("name", "doc", "summary")
    pairs = [(f.name, getattr(r, f.name)) for f in dataclasses.fields(r) if f.name not in skip]
    pairs = [(k, v) for k, v in pairs if v not in (None, {}, False) or k == "grad_clip"]
    return (
        f"recipe {r.name}: {r.summary}\n{_fields(pairs)}\n{_wrap(r.doc)}\n"
        f"  run it: {PROG} train --recipe {r.name}\n"
    )


def _model_text(name: str) -> str:
    import dataclasses

    import torch

    import crate_edu
    from crate_edu.models.registry import model_spec

    spec = model_spec(name)
    with torch.device("meta"):  # no memory for the weights, even for the large presets
        params = crate_edu.create_model(name).num_params()
    config = ", ".join(f"{f.name}={getattr(spec.config, f.name)!r}" for f in dataclasses.fields(spec.config))
    weights = [w.key for w in crate_edu.list_official() if w.model == name]
    pairs = [
        ("class", f"{spec.cls.__module__}.{spec.cls.__name__}"),
        ("parameters", f"{params:,} ({params / 1e6:.2f} M)"),
        ("official code", spec.official),
        ("published weights", ", ".join(weights)),
    ]
    return (
        f"model {name}: {spec.description}\n{_fields(pairs)}\n  config:\n{_wrap(config)}\n"
        f"  build it: crate_edu.create_model({name!r}, **overrides) (any config field can be overridden)\n"
    )


def _dataset_text(name: str) -> str:
    from crate_edu.data import dataset_info, default_data_dir

    info = dataset_info(name)
    classes = ", ".join(info.classes) if info.classes else "read from the files"
    pairs = [
        ("classes", f"{info.num_classes} ({_summary(classes, 80)})"),
        ("image size", f"{info.image_size} px"),
        ("mean / std", f"{info.mean} / {info.std}"),
        ("augmentation", f"{info.default_augment} (default for training)"),
        ("download", f"{PROG} fetch {name}" if info.downloadable else "no (see below)"),
        ("data folder", f"{default_data_dir()} (or --data-dir; $CRATE_EDU_DATA)"),
    ]
    return f"dataset {name}\n{_fields(pairs)}\n{_wrap(info.description)}\n"


def _weights_text(key: str) -> str:
    from crate_edu.weights.official import cache_path, get_official

    w = get_official(key)
    cached = cache_path(w.key)
    top1 = f"{w.top1} ({w.metric})" if w.top1 is not None else w.metric
    pairs = [
        ("model", w.model or "none in crate_edu (not loadable here)"),
        ("source", w.url or "never published"),
        ("reported", top1),
        ("sha256", w.sha256 or "not recorded"),
        ("overrides", w.overrides or None),
        ("cache file", f"{cached} ({'present' if cached.is_file() else 'not downloaded'})"),
        ("notes", w.notes),
    ]
    how = (
        f"  get it: {PROG} fetch {w.key}; load it: crate_edu.load_official({w.key!r})\n"
        if w.loadable
        else ("  get it: " + f"{PROG} fetch {w.key}\n" if w.source else "")
    )
    return f"weights {w.key}\n{_fields(pairs)}\n{how}"


def cmd_show(args: argparse.Namespace) -> int:
    """``crate-edu show KIND NAME``: one model, dataset, recipe or weights entry in full."""
    import crate_edu
    from crate_edu.data import list_datasets
    from crate_edu.train import list_recipes
    from crate_edu.train.config import choice_error

    known = {
        "model": crate_edu.list_models,
        "dataset": list_datasets,
        "recipe": list_recipes,
        "weights": lambda: [w.key for w in crate_edu.list_official()],
    }[args.what]()
    if args.name not in known:
        raise choice_error(args.name, known, args.what)
    text = {"model": _model_text, "dataset": _dataset_text, "recipe": _recipe_text, "weights": _weights_text}
    print(text[args.what](args.name), end="")
    return 0


_COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "generate": cmd_generate,
    "fetch": cmd_fetch,
    "export": cmd_export,
    "list": cmd_list,
    "show": cmd_show,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``crate-edu``; returns the exit status.

    Bad input is printed as one line on stderr (status 2); genuine bugs still raise.
    """
    from crate_edu.data import DatasetUnavailableError
    from crate_edu.errors import ConfigError, TrainingDivergedError
    from crate_edu.train.checkpoint import FileWriteError
    from crate_edu.weights.official import CheckpointError, WeightsUnavailableError
    from crate_edu.weights.tutorial import WeightsFileError

    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (
        _UsageError,
        ConfigError,
        DatasetUnavailableError,
        WeightsUnavailableError,
        CheckpointError,
        WeightsFileError,
        FileWriteError,
        TrainingDivergedError,
    ) as e:
        print(f"{PROG} {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of our output went away (e.g. `crate-edu list ... | head`)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except OSError as e:  # the file system (a folder given for a file, no permission, ...): not a bug
        print(f"{PROG} {args.command}: error: {_os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        folder = getattr(args, "run_folder", None)
        hint = f" (continue with: {PROG} train --out {folder} --resume)" if folder not in (None, True) else ""
        print(f"{PROG} {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
