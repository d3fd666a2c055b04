"""Benchmark: the shipped CRATE-MAE checkpoint on ``cluttered-digits`` (not a test).

``--train`` pre-trains a CRATE-MAE with :func:`crate_edu.train.mae.pretrain_mae` and its default
:class:`~crate_edu.train.mae.MAETrainConfig` (``crate_mae_nano_cifar`` with 4 + 4 layers: the
encoder has the width, heads, depth and patch of the supervised ``cluttered-digits-crate``; 3
epochs, batch 64, AdamW 1.5e-3, betas (0.9, 0.95), wd 0.05, 200 warm-up steps then cosine, mask
ratio 0.75, clipping 1.0, seed 0, one CPU thread), then writes the weights with
:func:`crate_edu.weights.save_weights`. Without ``--train`` it evaluates the file at ``--out``.

Measured either way and written to ``benchmarks/results/crate_mae.json`` (and into the weights
file's metadata after ``--train``):

* the masked-patch reconstruction loss on the whole test split (mask ratio 0.75, masks fixed by
  ``crate_edu.evaluation.evaluate_reconstruction(seed=0)``), and for scale the loss of predicting every
  pixel as the dataset mean (normalised scale: the per-pixel variance, about 1);
* linear probes (``crate_edu.evaluation.linear_probe``, deterministic) on frozen features of the first
  10,000 train images (``--probe-train``), scored on the whole test split, for the output of every
  layer: the MAE encoder (mean of the patch tokens, and the [CLS] token), the same encoder at
  initialisation (what pre-training adds), and the supervised ``cluttered-digits-crate`` of the
  same size ([CLS] token, and patch mean) when present.

    python benchmarks/crate_mae.py --train        # pre-train, then write the shipped file (default --out)
    python benchmarks/crate_mae.py                # evaluate the shipped file only
    python benchmarks/crate_mae.py --from-run runs/crate-mae --out x.safetensors      # export a run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import torch
from _machine import machine_info  # benchmarks/ is on sys.path when a script here runs

from crate_edu.data import build_dataset
from crate_edu.evaluation import evaluate_reconstruction, extract_layer_features, linear_probe
from crate_edu.train import MAETrainConfig, build_mae_model, load_mae_run, pretrain_mae
from crate_edu.weights import load_tutorial_model, load_weights, save_weights

RESULTS = Path(__file__).resolve().parent / "results" / "crate_mae.json"
SHIPPED = Path("crate_edu/resources/checkpoints/cluttered-digits-crate-mae.safetensors")
COMMAND = f"python benchmarks/crate_mae.py --train --out {SHIPPED}"


def probe(model, train, test, pool: str, n_train: int | None, n_test: int | None) -> dict:
    """Linear-probe test accuracy on every layer's pooled output (the last layer's = the features)."""
    t0 = time.perf_counter()
    tr, ytr = extract_layer_features(model, train, pool=pool, limit=n_train)
    te, yte = extract_layer_features(model, test, pool=pool, limit=n_test)
    results = [linear_probe(a, ytr, b, yte) for a, b in zip(tr, te, strict=True)]
    return {
        "pool": pool,
        "test_accuracy_by_layer": [round(r.test_accuracy, 4) for r in results],
        "train_accuracy_by_layer": [round(r.train_accuracy, 4) for r in results],
        "test_accuracy_last_layer": round(results[-1].test_accuracy, 4),
        "best_test_accuracy": round(max(r.test_accuracy for r in results), 4),
        "train_items": int(ytr.shape[0]),
        "test_items": int(yte.shape[0]),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def evaluate(model, cfg: MAETrainConfig, limit: int | None, probe_train: int | None) -> dict:
    """Reconstruction loss and linear probes (see the module docstring)."""
    train = build_dataset(cfg.dataset, "train", augment="none")
    test = build_dataset(cfg.dataset, "test", augment="none")
    out: dict = {}
    out["test_masked_patch_loss"] = round(
        evaluate_reconstruction(model, test, mask_ratio=cfg.mask_ratio, seed=cfg.eval_seed, limit=limit), 4
    )
    n = len(test) if limit is None else min(limit, len(test))
    x = torch.stack([test[i][0] for i in range(min(n, 2048))])
    out["mean_prediction_loss"] = round(float((x**2).mean()), 4)  # predict 0 = the dataset mean
    n_train = probe_train if limit is None else min(limit, probe_train or limit)
    probes = {}
    probes["crate_mae_mean"] = probe(model, train, test, "mean", n_train, limit)
    probes["crate_mae_cls"] = probe(model, train, test, "cls", n_train, limit)
    init = build_mae_model(cfg)
    probes["crate_mae_init_mean"] = probe(init, train, test, "mean", n_train, limit)
    try:
        crate, _ = load_tutorial_model("cluttered-digits-crate")
        probes["supervised_crate_cls"] = probe(crate, train, test, "cls", n_train, limit)
        probes["supervised_crate_mean"] = probe(crate, train, test, "mean", n_train, limit)
    except FileNotFoundError as exc:
        print(f"supervised CRATE not available ({exc}); its probe is skipped")
    out["linear_probe"] = probes
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", action="store_true", help="pre-train (default config) before evaluating")
    ap.add_argument("--from-run", type=Path, help="export and evaluate a pretrain_mae run folder")
    ap.add_argument("--out", type=Path, default=SHIPPED)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/crate-mae-cluttered"))
    ap.add_argument("--epochs", type=int, default=None, help="override the epochs (recorded)")
    ap.add_argument("--limit", type=int, default=None, help="evaluate on the first N items only")
    ap.add_argument(
        "--probe-train", type=int, default=10000, help="training images for the linear probes (0: all)"
    )
    ap.add_argument("--no-save-results", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    record: dict = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine_info()}
    if args.train or args.from_run:
        if args.train:
            cfg = MAETrainConfig() if args.epochs is None else MAETrainConfig(epochs=args.epochs)
            run = pretrain_mae(cfg, args.run_dir, resume=True)
            model, history, train_time = run.model, run.history, run.train_time_s
        else:
            model, state = load_mae_run(args.from_run)
            cfg = MAETrainConfig(**{**state["config"], "betas": tuple(state["config"]["betas"])})
            history, train_time = state["history"], float(state["train_time_s"])
        record["config"] = json.loads(json.dumps(cfg.__dict__))
        record["train_seconds"] = round(train_time, 1)
        record["steps"] = history[-1]["step"]
        record["curve"] = [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()} for h in history
        ]
        record.update(evaluate(model, cfg, args.limit, args.probe_train or None))
        save_weights(
            model,
            args.out,
            model_name=cfg.model,
            overrides=cfg.model_overrides,
            metadata={
                "command": COMMAND,
                "dataset": cfg.dataset,
                "train_config": record["config"],
                "train_seconds": record["train_seconds"],
                "steps": record["steps"],
                "test_masked_patch_loss": record["test_masked_patch_loss"],
                "linear_probe_test_accuracy_by_layer": {
                    k: v["test_accuracy_by_layer"] for k, v in record["linear_probe"].items()
                },
            },
        )
        print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    else:
        model, info = load_weights(args.out)
        cfg = MAETrainConfig(
            **{**info.metadata["train_config"], "betas": tuple(info.metadata["train_config"]["betas"])}
        )
        record["config"] = info.metadata["train_config"]
        record["train_seconds"] = info.metadata.get("train_seconds")
        record.update(evaluate(model, cfg, args.limit, args.probe_train or None))
    record["command"] = COMMAND
    record["weights_file"] = str(args.out)
    print(json.dumps({k: v for k, v in record.items() if k != "machine"}, indent=2))
    if not args.no_save_results and args.limit is None:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
