"""Benchmark: the ``digits-quick`` recipe on this machine's CPU (not a test).

Trains the recipe exactly as ``crate-edu train`` does with no arguments, then prints and writes
the test accuracy, wall time and machine details to ``benchmarks/results/digits_quick.json``.

    python benchmarks/digits_quick.py                 # the recipe as shipped
    python benchmarks/digits_quick.py --threads 2     # any recipe field can be overridden
    python benchmarks/digits_quick.py --seeds 0 1 2   # several seeds: mean and spread
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path

from _machine import machine_info  # benchmarks/ is on sys.path when a script here runs

import crate_edu
from crate_edu.train import RECIPES, model_kwargs, train

RESULTS = Path(__file__).resolve().parent / "results" / "digits_quick.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, help="override the recipe's CPU threads")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args()

    recipe = RECIPES["digits-quick"]
    overrides = {k: v for k, v in (("threads", args.threads), ("epochs", args.epochs)) if v is not None}
    info = machine_info()
    runs = []
    for seed in args.seeds:
        cfg = recipe.config(seed=seed, progress=False, **overrides)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = train(cfg, Path(tmp) / "run")
            wall = time.perf_counter() - t0
        final = result.final
        runs.append(
            {
                "seed": seed,
                "test_acc": final["test_acc"],
                "test_loss": final["test_loss"],
                "best_test_acc": max(h["test_acc"] for h in result.history),
                "wall_seconds": round(wall, 2),
                "train_eval_seconds": round(sum(h["seconds"] for h in result.history), 2),
            }
        )
        print(f"seed {seed}: test_acc {final['test_acc']:.4f}  wall {wall:.1f} s")

    accs = [r["test_acc"] for r in runs]
    walls = [r["wall_seconds"] for r in runs]
    report = {
        "benchmark": "digits-quick",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.to_dict(),
        "model_params": sum(
            p.numel() for p in crate_edu.create_model(cfg.model, **model_kwargs(cfg)).parameters()
        ),
        "test_acc_mean": statistics.fmean(accs),
        "test_acc_min": min(accs),
        "wall_seconds_mean": statistics.fmean(walls),
        "wall_seconds_max": max(walls),
        "runs": runs,
        "machine": info,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"digits-quick: test accuracy {report['test_acc_mean']:.4f} (min {report['test_acc_min']:.4f}), "
        f"wall time {report['wall_seconds_mean']:.1f} s (max {report['wall_seconds_max']:.1f} s) "
        f"over {len(runs)} seed(s) on {info.get('cpu_model', info['processor'])}, {info['cpu_count']} cores"
    )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
