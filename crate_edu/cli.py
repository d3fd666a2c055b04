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
    crate-edu fetch cifar10 crate_alpha_b16_in1k      # datasets and published weights, ahead of time
    crate-edu list recipes

Bad input (an unknown name, a negative number, a batch that does not fit, missing data) is
reported as one line on stderr with exit status 2; an interrupted run exits with 130.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

PROG = "crate-edu"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _UsageError(Exception):
    """Bad command-line input detected by the CLI itself (printed as one line)."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


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
)
#: ``train`` options that become ``create_model`` overrides.
_MODEL_FLAGS = ("depth", "dim", "heads", "patch_size", "pool", "dropout")


def _grad_clip(text: str) -> float | None:
    value = float(text)
    return None if value == 0 else value


def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (no arguments: the digits-quick recipe on the CPU)",
        description="Train a classifier. A recipe sets the defaults; every flag overrides it. "
        "Run `crate-edu list recipes` for the recipes and their sources.",
        argument_default=argparse.SUPPRESS,  # only the flags the user gives reach the namespace
    )
    g = p.add_argument_group("run")
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

    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="dataset name (crate-edu list datasets)")
    g.add_argument("--data-dir", help="root folder of the datasets")
    g.add_argument(
        "--download",
        action=argparse.BooleanOptionalAction,
        help="download a missing dataset where its source allows it (default: on)",
    )
    g.add_argument("--image-size", type=int, help="image side in pixels")
    g.add_argument("--augment", help="train augmentation: none, cifar, shift, randaugment, imagenet")
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

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="global batch size (summed over processes)")
    g.add_argument("--grad-accum", type=int, help="forward passes per optimiser step (default 1)")
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--optimizer", help="lion, adamw or sgd")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--momentum", type=float, help="SGD momentum")
    g.add_argument("--warmup-epochs", type=float)
    g.add_argument("--min-lr-ratio", type=float, help="final lr as a fraction of --lr")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--grad-clip", type=_grad_clip, help="max global gradient norm (0: no clipping)")
    g.add_argument("--threads", type=int, help="CPU threads of torch per process")

    g = p.add_argument_group("model")
    g.add_argument("--model", help="model name (crate-edu list models)")
    g.add_argument("--depth", type=int)
    g.add_argument("--dim", type=int)
    g.add_argument("--heads", type=int)
    g.add_argument("--patch-size", type=int)
    g.add_argument("--pool", help="cls or mean")
    g.add_argument("--dropout", type=float)


def _add_eval(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="test accuracy and loss of a checkpoint",
        description="Evaluate a trainer checkpoint (or official weights with --model) on a dataset split.",
    )
    p.add_argument(
        "checkpoint", help="checkpoint.pt, a run folder, or an official weights file (with --model)"
    )
    p.add_argument("--dataset", help="dataset (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default="test", choices=("test", "train"))
    p.add_argument("--data-dir")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--model", help="model name, for official weights files")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--precision", default="auto")
    p.add_argument("--num-workers", type=int)
    p.add_argument("--limit", type=int, metavar="N", help="evaluate on a fixed random subset of N images")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


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


def _add_list(sub: Any) -> None:
    p = sub.add_parser("list", help="list models, datasets, recipes or published weights")
    p.add_argument("what", choices=("models", "datasets", "recipes", "weights"))


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
    _add_fetch(sub)
    _add_export(sub)
    _add_list(sub)
    return parser


# --------------------------------------------------------------------------------------------
# Commands.
# --------------------------------------------------------------------------------------------


def _is_main_process() -> bool:
    from crate_edu.train.loop import distributed_state

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

    from crate_edu.train.loop import distributed_state

    if distributed_state().num_processes == 1:
        return value
    box = [value]
    broadcast_object_list(box, from_process=0)
    return str(box[0])


def cmd_train(args: argparse.Namespace) -> int:
    """``crate-edu train``."""
    from crate_edu.train import DEFAULT_RECIPE, get_recipe, train

    given = vars(args)
    overrides: dict[str, Any] = {k: given[k] for k in _CONFIG_FLAGS if k in given}
    model_overrides = {k: given[k] for k in _MODEL_FLAGS if k in given}
    # Fields the user typed: on --resume the checkpoint's configuration wins over everything else.
    explicit = list(overrides) + (["model_overrides"] if model_overrides else [])
    overrides.setdefault("download", True)
    if model_overrides:
        overrides["model_overrides"] = model_overrides
    recipe = get_recipe(given.get("recipe", DEFAULT_RECIPE))
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
            print(
                f"done: test_acc {f['test_acc']:.4f}  test_loss {f['test_loss']:.4f} after "
                f"{f['epoch']} epochs ({sum(h['seconds'] for h in result.history):.1f} s of training)"
            )
        print(f"run folder: {result.out_dir}")
        print(f"  metrics:    {result.out_dir / 'metrics.jsonl'}")
        print(f"  checkpoint: {result.checkpoint}")
        print(f"  evaluate:   {PROG} eval {result.checkpoint}")
    return 0


def _load_for_eval(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(model, test dataset, description) for ``crate-edu eval``."""
    import torch

    import crate_edu
    from crate_edu.data import build_dataset, dataset_info
    from crate_edu.train.checkpoint import CHECKPOINT_NAME, is_checkpoint
    from crate_edu.train.config import ConfigError, TrainConfig, check_config, image_size_of, model_kwargs
    from crate_edu.train.loop import _limit

    path = Path(args.checkpoint).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise _UsageError(f"no checkpoint at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        obj = None
    if is_checkpoint(obj):
        cfg = TrainConfig.from_dict(obj["config"])
        if args.model is not None and args.model != cfg.model:
            raise _UsageError(f"{path} holds a {cfg.model!r} model, not {args.model!r}")
        model = crate_edu.create_model(cfg.model, **model_kwargs(cfg))
        model.load_state_dict(obj["model"])
        dataset = args.dataset or cfg.dataset
        image_size = image_size_of(cfg)
        augment, normalize = cfg.augment, cfg.normalize
        data_dir = args.data_dir if args.data_dir is not None else cfg.data_dir
    else:
        if args.model is None or args.dataset is None:
            raise _UsageError(
                f"{path} is not a crate-edu checkpoint; to evaluate official weights pass --model NAME "
                "and --dataset NAME"
            )
        cfg = TrainConfig(model=args.model, dataset=args.dataset)
        check_config(cfg)
        try:
            model = crate_edu.load_official(args.model, path)
        except (ValueError, RuntimeError, OSError) as e:
            raise _UsageError(f"{path}: {_one_line(e)}") from None
        dataset = args.dataset
        image_size = getattr(model.config, "image_size", None)
        augment, data_dir = None, args.data_dir
        normalize = "imagenet"  # the published weights were trained on ImageNet-normalised images
    del obj
    check_config(TrainConfig(model=cfg.model, dataset=dataset, image_size=image_size))
    n_model = getattr(model.config, "num_classes", None)
    n_data = dataset_info(dataset).num_classes
    if n_model is not None and n_model != n_data:
        raise ConfigError(
            f"the model predicts {n_model} classes but {dataset} has {n_data}; choose a matching --dataset"
        )
    if args.split == "train":
        augment = "none"
    ds = build_dataset(
        dataset,
        args.split,
        data_dir=data_dir,
        image_size=image_size,
        augment=augment,
        normalize=normalize,
        download=args.download,
    )
    if args.limit is not None:
        if args.limit < 1:
            raise _UsageError(f"--limit must be a positive integer, got {args.limit}")
        ds = _limit(ds, args.limit)
    return model, ds, f"{dataset} {args.split}"


def cmd_eval(args: argparse.Namespace) -> int:
    """``crate-edu eval``."""
    from crate_edu.train import evaluate

    if args.batch_size < 1:
        raise _UsageError(f"--batch-size must be a positive integer, got {args.batch_size}")
    model, ds, what = _load_for_eval(args)
    result = evaluate(
        model, ds, batch_size=args.batch_size, precision=args.precision, num_workers=args.num_workers
    )
    if _is_main_process():
        if args.json:
            print(json.dumps({"checkpoint": str(args.checkpoint), "data": what, **result}))
        else:
            print(
                f"{what}: acc {result['acc']:.4f} ({round(result['acc'] * result['n'])}/{result['n']}), "
                f"loss {result['loss']:.4f}"
            )
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    """``crate-edu fetch``."""
    import crate_edu
    from crate_edu.data import fetch_dataset, list_datasets
    from crate_edu.weights import get_official

    datasets = list_datasets()
    weights = [w.key for w in crate_edu.list_official()]
    unknown = []
    for name in args.names:
        if name not in datasets and name not in weights:
            try:
                get_official(name)  # a model name with exactly one entry
            except ValueError:
                unknown.append(name)
    if unknown:
        raise _UsageError(
            f"unknown name(s) {', '.join(map(repr, unknown))}; datasets: {', '.join(datasets)}; "
            f"weights: {', '.join(weights)}"
        )
    for name in args.names:
        if name in datasets:
            kw = {"size": args.size} if args.size and name == "imagenette" else {}
            path = fetch_dataset(name, data_dir=args.data_dir, **kw)
            print(f"{name}: {path}")
        else:
            path = crate_edu.download_official(name, cache_dir=args.cache_dir, force=args.force)
            print(f"{name}: {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``crate-edu export``."""
    from crate_edu.checkpoints import export_run

    if not str(args.out).endswith(".safetensors"):
        raise _UsageError(f"the output file must end in .safetensors, got {args.out!r}")
    try:
        path = export_run(args.run, args.out, metadata={"command": args.made_by} if args.made_by else None)
    except (FileNotFoundError, ValueError) as exc:
        raise _UsageError(_one_line(exc)) from None
    print(f"wrote {path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """``crate-edu list``."""
    import crate_edu

    if args.what == "models":
        from crate_edu.models.registry import model_spec

        for name in crate_edu.list_models():
            print(f"{name:24s} {model_spec(name).description}")
    elif args.what == "datasets":
        from crate_edu.data import dataset_info, list_datasets

        for name in list_datasets():
            info = dataset_info(name)
            print(f"{name:18s} {info.num_classes:5d} classes  {info.image_size:4d} px  {info.description}")
    elif args.what == "recipes":
        from crate_edu.train import RECIPES

        for r in RECIPES.values():
            print(
                f"{r.name}: {r.model} on {r.dataset}, {r.epochs} epochs, batch {r.batch_size}, "
                f"{r.optimizer} lr {r.lr:g} wd {r.weight_decay:g}\n    {r.doc}\n"
            )
    else:
        for w in crate_edu.list_official():
            where = w.url or "never published"
            print(f"{w.key:28s} model={w.model}  {where}")
    return 0


_COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "fetch": cmd_fetch,
    "export": cmd_export,
    "list": cmd_list,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``crate-edu``; returns the exit status.

    Bad input is printed as one line on stderr (status 2); genuine bugs still raise.
    """
    from crate_edu.data import DatasetUnavailableError
    from crate_edu.train.config import ConfigError
    from crate_edu.weights import CheckpointError, WeightsUnavailableError

    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (_UsageError, ConfigError, DatasetUnavailableError, WeightsUnavailableError, CheckpointError) as e:
        print(f"{PROG} {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        folder = getattr(args, "run_folder", None)
        hint = f" (continue with: {PROG} train --out {folder} --resume)" if folder not in (None, True) else ""
        print(f"{PROG} {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
