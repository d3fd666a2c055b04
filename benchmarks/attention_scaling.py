"""Attention cost against the number of tokens N: MSSA, softmax attention and ToST's TSSA.

Three attention blocks of the same width (d = 192, 4 heads of 48, batch 1, float32), each a whole
block from its projection to its output map, forward + backward (the gradient of the output's sum
with respect to the input and every weight):

- ``mssa``: CRATE's MSSA (``crate_edu.models.MSSA``) on its fast path (kernel ``'auto'``: on the
  CPU the shared-q/k/v kernel, whose backward is written out; it keeps the N × N probabilities);
- ``softmax``: the ViT baseline's attention (``crate_edu.models.Attention``): separate q, k, v and
  ``scaled_dot_product_attention`` (on the CPU a flash-style kernel: quadratic time, linear memory);
- ``tssa``: ToST's TSSA (``crate_edu.models.TSSA``): no pairwise similarities, linear in N.

For each N (64 to 16,384 by doubling, TSSA on to 65,536), the median time of the step over a few
repeats (fewer at large N: ``--budget`` seconds per point at most) and the peak memory the step
allocates: on the CPU the running sum of torch.profiler's allocation records (net per operator, so a
temporary freed inside one operator is not seen), on a GPU ``torch.cuda.max_memory_allocated``
above the memory held before the step. Then, per block, the least-squares slope of log time and of
log memory against log N over the points with N ≥ ``--fit-from`` (1024 by default: below it fixed
per-call costs dominate), and the smallest measured N from which TSSA is faster than each other
block at every larger measured N (the crossover).

A point whose predicted memory (two N × N float32 matrices per head for MSSA) exceeds ``--max-gb``
is skipped and recorded as skipped. One thread (``torch.set_num_threads(1)``: the machine is
shared). A CUDA section runs only when a GPU is present (N up to 65,536 for all three).

    python benchmarks/attention_scaling.py                # about 4 minutes on one core
    python benchmarks/attention_scaling.py --max-n 4096 --budget 2

Results are printed and written to ``benchmarks/results/attention_scaling.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from crate_edu.models import MSSA, TSSA, Attention

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info  # noqa: E402

RESULTS = Path(__file__).parent / "results"
DIM, HEADS = 192, 4
BLOCKS = ("mssa", "softmax", "tssa")


def make_block(kind: str, device: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "mssa":
        block = MSSA(DIM, HEADS, DIM // HEADS)
    elif kind == "softmax":
        block = Attention(DIM, HEADS, DIM // HEADS)
    else:
        block = TSSA(DIM, HEADS, qkv_bias=True)
    return block.to(device)


def predicted_gb(kind: str, n: int) -> float:
    """A guess of the step's peak: two N × N float32 matrices per head for MSSA (the scores and the
    probabilities kept for the backward), linear terms for the others."""
    linear = 40 * n * DIM * 4
    quadratic = 2 * HEADS * n * n * 4 if kind == "mssa" else 0
    return (linear + quadratic) / 1e9


def step_fn(block: nn.Module, n: int, device: str):
    x = torch.randn(1, n, DIM, device=device, requires_grad=True)

    def step() -> None:
        block.zero_grad(set_to_none=True)
        x.grad = None
        block(x).sum().backward()

    return step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_step(step, device: str, budget: float) -> tuple[float, int]:
    """Median seconds per step over up to 7 repeats within ``budget`` seconds (at least one)."""
    step()  # warm-up
    times: list[float] = []
    while len(times) < 7 and (not times or sum(times) + times[-1] <= budget):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(times)


def peak_bytes(step, device: str) -> int:
    """Peak memory allocated during one step (see the module docstring)."""
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    records = sorted(
        (e.time_range.start, e.self_cpu_memory_usage) for e in prof.events() if e.self_cpu_memory_usage
    )
    return max(itertools.accumulate((b for _, b in records), initial=0))


def slope(ns: list[int], values: list[float]) -> float | None:
    """Least-squares slope of log(value) against log(N)."""
    if len(ns) < 2:
        return None
    xs, ys = [math.log(n) for n in ns], [math.log(v) for v in values]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def crossover(points: dict[str, dict[int, dict]], other: str) -> int | None:
    """The smallest N measured for both from which TSSA is faster than ``other`` at every larger N."""
    common = sorted(set(points["tssa"]) & set(points[other]))
    faster = [points["tssa"][n]["ms"] < points[other][n]["ms"] for n in common]
    for i, n in enumerate(common):
        if all(faster[i:]):
            return n
    return None


def run(device: str, ns: list[int], tssa_ns: list[int], budget: float, max_gb: float, fit_from: int) -> dict:
    points: dict[str, dict[int, dict]] = {k: {} for k in BLOCKS}
    skipped: dict[str, list[int]] = {k: [] for k in BLOCKS}
    for kind in BLOCKS:
        block = make_block(kind, device)
        for n in tssa_ns if kind == "tssa" else ns:
            if predicted_gb(kind, n) > max_gb:
                skipped[kind].append(n)
                print(
                    f"{device} {kind:8s} N={n:6d}  skipped: about {predicted_gb(kind, n):.1f} GB "
                    f"> --max-gb {max_gb}"
                )
                continue
            step = step_fn(block, n, device)
            seconds, repeats = time_step(step, device, budget)
            mem = peak_bytes(step, device)
            points[kind][n] = {
                "ms": round(seconds * 1e3, 3),
                "repeats": repeats,
                "peak_mb": round(mem / 1e6, 3),
            }
            print(
                f"{device} {kind:8s} N={n:6d}  {seconds * 1e3:10.2f} ms  ({repeats} repeats)  "
                f"peak {mem / 1e6:9.2f} MB"
            )
            del step
    fits = {}
    for kind in BLOCKS:
        fit_ns = [n for n in sorted(points[kind]) if n >= fit_from]
        fits[kind] = {
            "fit_over_n": [fit_ns[0], fit_ns[-1]] if fit_ns else None,
            "time_slope": _round(slope(fit_ns, [points[kind][n]["ms"] for n in fit_ns])),
            "memory_slope": _round(slope(fit_ns, [points[kind][n]["peak_mb"] for n in fit_ns])),
        }
    crossovers = {other: crossover(points, other) for other in ("mssa", "softmax")}
    for kind, fit in fits.items():
        print(
            f"{device} {kind:8s} slope of log time {fit['time_slope']}, of log memory {fit['memory_slope']}"
        )
    print(f"{device} TSSA faster from N = " + ", ".join(f"{n} (vs {k})" for k, n in crossovers.items()))
    return {
        "points": {k: {str(n): v for n, v in p.items()} for k, p in points.items()},
        "skipped": skipped,
        "fits": fits,
        "tssa_faster_from_n": crossovers,
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def doubling(start: int, stop: int) -> list[int]:
    return [start * 2**i for i in range(int(math.log2(stop // start)) + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-n", type=int, default=16384, help="largest N for MSSA and softmax (CPU)")
    parser.add_argument("--tssa-max-n", type=int, default=65536, help="largest N for TSSA (CPU)")
    parser.add_argument("--budget", type=float, default=6.0, help="seconds of repeats per point at most")
    parser.add_argument("--max-gb", type=float, default=10.0, help="skip larger predicted peaks (GB)")
    parser.add_argument("--fit-from", type=int, default=1024, help="fit the slopes over N >= this")
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result: dict = {
        "setup": {"dim": DIM, "heads": HEADS, "dim_head": DIM // HEADS, "batch": 1, "dtype": "float32"},
        "what": "forward + backward of one attention block; median ms per step; peak MB allocated in it",
        "machine": machine_info(),
        "threads": 1,
    }
    if not args.skip_cpu:
        start = time.perf_counter()
        result["cpu"] = run(
            "cpu",
            doubling(64, args.max_n),
            doubling(64, args.tssa_max_n),
            args.budget,
            args.max_gb,
            args.fit_from,
        )
        result["cpu"]["wall_s"] = round(time.perf_counter() - start)
    if torch.cuda.is_available():
        result["gpu_machine"] = machine_info("cuda")
        result["cuda"] = run(
            "cuda", doubling(64, 65536), doubling(64, 262144), args.budget, 60.0, args.fit_from
        )
    out = RESULTS / "attention_scaling.json"
    RESULTS.mkdir(exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
