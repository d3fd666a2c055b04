"""Benchmark: the CRATE-α ablation of the sparse coding block on one small CPU budget (not a test).

Trains each cumulative step of ``crate_edu.models.crate_alpha.ABLATION`` — CRATE's ISTA block →
+ overcomplete dictionary → + decoupled decoder → + residual (= CRATE-α) — inside the same
``crate_alpha_nano_cifar`` shell (dim 128, 4 heads, depth 4, patch 8) with the ``digits-quick``
recipe (scikit-learn digits, offline, one CPU thread), for every seed, and writes test accuracy,
code sparsity (fraction of non-zeros of each layer's codes on 256 test digits, and non-zeros per
token), parameters and wall time to ``benchmarks/results/crate_alpha_ablation.json``. Notebook 09
shows these figures.

    python benchmarks/crate_alpha_ablation.py                      # 8 epochs, seeds 0 1 2
    python benchmarks/crate_alpha_ablation.py --epochs 15 --seeds 0
    python benchmarks/crate_alpha_ablation.py --extras   # the notebook's exercises 2 and 3, added to
                                                         # the JSON under "extras" (same budget)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path

from _machine import machine_info  # benchmarks/ is on sys.path when a script here runs

from crate_edu.experiments import ABLATION, ablation_config, run_ablation, summarize

RESULTS = Path(__file__).resolve().parent / "results" / "crate_alpha_ablation.json"

#: Notebook 09's exercises: (variant name, its switches, shape overrides).
EXTRAS = {
    "CRATE-α at equal MACs (dim 64)": ({}, {"depth": 4, "patch_size": 8, "dim": 64}),
    "tied + residual": ({"decoupled": False}, {"depth": 4, "patch_size": 8}),
}


def run_extras(args: argparse.Namespace) -> None:
    """Train the exercises' variants on the recorded budget and add them to the existing JSON."""
    report = json.loads(args.out.read_text())
    extras = {}
    t0 = time.perf_counter()
    for name, (switches, shape) in EXTRAS.items():
        runs = run_ablation(
            {name: switches},
            seeds=args.seeds,
            epochs=args.epochs,
            limit_train=args.limit_train,
            model_overrides=shape,
        )
        extras[name] = {
            "switches": switches,
            "model_overrides": shape,
            "summary": summarize(runs)[0],
            "runs": [r.to_dict() for r in runs],
        }
    report["extras"] = {
        "command": "python benchmarks/crate_alpha_ablation.py " + shlex.join(sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "total_wall_seconds": round(time.perf_counter() - t0, 1),
        "variants": extras,
    }
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    for name, e in extras.items():
        r = e["summary"]
        print(
            f"{name}: acc {r['test_acc_mean']:.3f} [{r['test_acc_min']:.3f}, {r['test_acc_max']:.3f}], "
            f"{r['params']:,} params"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--limit-train", type=int, default=None, help="train on a subset of this many images")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument("--extras", action="store_true", help="run only the notebook's exercise variants")
    args = parser.parse_args()
    if args.extras:
        run_extras(args)
        return

    info = machine_info()
    t0, c0 = time.perf_counter(), time.process_time()
    runs = run_ablation(seeds=args.seeds, epochs=args.epochs, limit_train=args.limit_train)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = summarize(runs)
    report = {
        "benchmark": "crate_alpha_ablation",
        "command": "python benchmarks/crate_alpha_ablation.py " + shlex.join(sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "measurement": (
            "test_acc: top-1 on the 359 test digits after the last epoch; nonzero: fraction of non-zero "
            "entries of each layer's sparse codes (LayerTrace.codes: the CRATE block's ISTA output, or "
            "CRATE-alpha's A2) on the first 256 test digits, mean over images; active: non-zeros per token"
        ),
        "variants": {name: dict(ov) for name, ov in ABLATION.items()},
        "config": ablation_config(
            "+ residual (CRATE-α)", epochs=args.epochs, seed=args.seeds[0], limit_train=args.limit_train
        ).to_dict(),
        "total_wall_seconds": round(total, 1),
        "total_cpu_seconds": round(cpu, 1),
        "summary": rows,
        "runs": [r.to_dict() for r in runs],
        "machine": info,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    for r in rows:
        print(
            f"{r['variant']:22s} acc {r['test_acc_mean']:.3f} (train {r['train_acc_mean']:.3f}) "
            f"[{r['test_acc_min']:.3f}, {r['test_acc_max']:.3f}]  "
            f"non-zeros {r['nonzero_mean']:.3f} (init {r['nonzero_init_mean']:.3f}), "
            f"{r['active_mean']:.0f} of {r['code_width']} per token, {r['params']:,} params, "
            f"{r['train_seconds_mean']:.0f} s/run"
        )
    print(f"total {total / 60:.1f} min wall, {cpu / 60:.1f} min CPU; written to {args.out}")


if __name__ == "__main__":
    main()
