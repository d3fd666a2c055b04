"""Benchmark: how long ``import crate_edu`` takes in a fresh interpreter, against ``import torch``.

``crate_edu/__init__.py`` imports its public API explicitly (so go-to-definition works); this
records what that costs. Each figure is the median wall time of ``--runs`` fresh processes
(``python -c "import X"``), so the interpreter's own start-up is included in both; the difference
is what crate_edu adds to torch. Heavy optional libraries (torchvision, matplotlib, accelerate,
huggingface_hub) must stay out of ``import crate_edu``: the script lists which of them it loaded.

    python benchmarks/import_time.py              # 9 runs each; writes results/import_time.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _machine import machine_info  # benchmarks/ is on sys.path when a script here runs

RESULTS = Path(__file__).resolve().parent / "results" / "import_time.json"
HEAVY = ("torchvision", "matplotlib", "accelerate", "huggingface_hub", "sklearn", "skimage")


def wall_seconds(statement: str) -> float:
    """Wall time of one fresh interpreter running ``statement``."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="fresh processes per statement (default 9)")
    args = parser.parse_args()
    statements = {"python": "pass", "torch": "import torch", "crate_edu": "import crate_edu"}
    samples: dict[str, list[float]] = {name: [] for name in statements}
    for _ in range(args.runs):  # interleaved, so that a busy moment hits every statement alike
        for name, statement in statements.items():
            samples[name].append(wall_seconds(statement))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    probe = f"import sys, crate_edu; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    result = {
        "benchmark": "import_time",
        "runs": args.runs,
        "median_seconds": {k: round(v, 3) for k, v in medians.items()},
        "samples_seconds": {k: [round(x, 3) for x in v] for k, v in samples.items()},
        "crate_edu_over_torch_seconds": round(medians["crate_edu"] - medians["torch"], 3),
        "heavy_libraries_loaded": [m for m in loaded.stdout.strip().split(",") if m],
        "machine": machine_info(),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for name, value in medians.items():
        print(f"{statements[name]!r:22} {value:6.2f} s (median of {args.runs})")
    print(
        f"crate_edu adds {result['crate_edu_over_torch_seconds']:.2f} s to torch; "
        f"heavy libraries loaded: {result['heavy_libraries_loaded'] or 'none'}"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
