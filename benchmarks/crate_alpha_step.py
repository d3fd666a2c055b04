"""CRATE-α's training step: the fast path against the official arithmetic, and what limits it.

A training step here is forward + cross-entropy + backward + AdamW step. Three paths run the same
model with the same weights:

- ``reference``: the official arithmetic (``set_reference``): CRATE-α's einsums, MSSA's explicit
  softmax;
- ``fast``: the default: ``crate_edu.models.fast.overcomplete_ista`` for the sparse coding block,
  the shared-q/k/v attention kernel, the last layer computing only the [CLS] row;
- ``fast_matmuls``: the fast path with the sparse coding block as four plain matmuls through
  autograd (what the fast path did before the written-out kernel), to show what that kernel adds.

Timing follows ``benchmarks/train_step.py``: one subprocess per configuration holds one model and
switches it to each path in turn for ``--rounds`` rounds, timing ``--iters`` consecutive steps of a
path per round (median); the speed-up is the median over rounds of the per-round ratio
reference / fast, with its range, so that a drift in the shared machine's speed hits every path
alike. Two figures need no clock: the bytes each path keeps for the backward pass (a
saved-tensors hook on one forward), and the FLOPs (PyTorch's counter). What limits the speed-up
comes from one profiled step per path (``torch.profiler``): the share of the step spent in matrix
products (``mm``, ``addmm``, ``bmm``, ``baddbmm``, the patch convolution), which both paths must do
alike, and the rest.

    python benchmarks/crate_alpha_step.py                   # CRATE-α-L/14 at 224 px, the 32-px presets
    python benchmarks/crate_alpha_step.py --rounds 9 --iters 2

Results are printed and written to ``benchmarks/results/crate_alpha_step_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

# (label, model, overrides, CPU batch)
CONFIGS = [
    ("CRATE-α-L/14 224 px", "crate_alpha_l14", {}, 1),
    ("CRATE-α-T 32/4", "crate_alpha_tiny_cifar", {}, 64),
    ("CRATE-α-nano 32/4", "crate_alpha_nano_cifar", {}, 64),
]
PATHS = ("reference", "fast", "fast_matmuls")
#: operators counted as matrix products in the profile (self time)
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm")
MATMUL_OPS += ("aten::mkldnn_convolution",)


def _child(args: argparse.Namespace) -> None:
    """Measure one configuration in this process; print one JSON line."""
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    import crate_edu
    from crate_edu.models import fast, set_reference

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = crate_edu.create_model(args.model, **json.loads(args.overrides))
    cfg = model.config
    x = torch.randn(args.batch, 3, cfg.image_size, cfg.image_size)
    y = torch.randint(0, cfg.num_classes, (args.batch,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)  # small: the weights barely move
    kernel = fast.overcomplete_ista

    def use(path: str) -> None:
        set_reference(model, path == "reference")
        fast.overcomplete_ista = fast.overcomplete_ista_matmuls if path == "fast_matmuls" else kernel

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for path in PATHS:
        use(path)
        for _ in range(args.warmup):
            step()
    seconds: dict[str, list[float]] = {path: [] for path in PATHS}
    for _ in range(args.rounds):
        for path in PATHS:
            use(path)
            times = []
            for _ in range(args.iters):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            seconds[path].append(statistics.median(times))

    saved, flops, profiled = {}, {}, {}
    for path in PATHS:
        use(path)
        kept: dict[int, int] = {}  # storage -> bytes, each storage once

        def pack(t: torch.Tensor, kept: dict[int, int] = kept) -> torch.Tensor:
            storage = t.untyped_storage()
            kept[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(model(x), y)
        saved[path] = sum(kept.values()) - sum(p.numel() * p.element_size() for p in model.parameters())
        loss.backward()  # frees the graph
        with FlopCounterMode(display=False) as counter:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
        flops[path] = counter.get_total_flops() / args.batch
        step()  # warm again after the counter
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            step()
            wall = time.perf_counter() - t0
        total = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e6
        matmul = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS) / 1e6
        profiled[path] = {"wall_s": wall, "self_cpu_s": total, "matmul_self_cpu_s": matmul}
    use("fast")
    got = {"seconds": seconds, "saved_bytes": saved, "flops_per_image": flops, "profile": profiled}
    print(json.dumps(got))


def _run(args: argparse.Namespace, model: str, overrides: dict, batch: int) -> dict:
    cmd = [
        sys.executable, __file__, "--child", "--model", model, "--overrides", json.dumps(overrides),
        "--batch", str(batch), "--rounds", str(args.rounds), "--iters", str(args.iters),
        "--warmup", str(args.warmup), "--threads", str(args.threads),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed for {model}:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7, help="rounds; each times every path in turn")
    p.add_argument("--iters", type=int, default=2, help="consecutive timed steps per path and round (median)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--only", default=None, help="run only the configurations whose model name contains this")
    p.add_argument("--out", type=Path, default=None)
    # child-process arguments
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args)
        return

    from _machine import machine_info  # benchmarks/ is on sys.path when a script here runs

    machine = machine_info("cpu")
    print(machine)
    rows = []
    for label, model, overrides, batch in CONFIGS:
        if args.only and args.only not in model:
            continue
        got = _run(args, model, overrides, batch)
        seconds = got["seconds"]
        med = {k: statistics.median(v) for k, v in seconds.items()}
        ratios = {
            k: [ref / t for ref, t in zip(seconds["reference"], v, strict=True)]
            for k, v in seconds.items()
            if k != "reference"
        }
        prof = got["profile"]
        share = {k: v["matmul_self_cpu_s"] / v["self_cpu_s"] for k, v in prof.items()}
        row = {
            "config": label, "model": model, "overrides": overrides, "batch": batch,
            "step": "forward + cross-entropy + backward + AdamW step, float32",
            "reference_step_s": med["reference"], "fast_step_s": med["fast"],
            "fast_matmuls_step_s": med["fast_matmuls"],
            "speedup": statistics.median(ratios["fast"]),
            "speedup_range": [min(ratios["fast"]), max(ratios["fast"])],
            "speedup_fast_matmuls": statistics.median(ratios["fast_matmuls"]),
            "speedup_fast_matmuls_range": [min(ratios["fast_matmuls"]), max(ratios["fast_matmuls"])],
            "kernel_over_matmuls": statistics.median(
                [m / f for m, f in zip(seconds["fast_matmuls"], seconds["fast"], strict=True)]
            ),
            "saved_for_backward_mib": {k: v / 2**20 for k, v in got["saved_bytes"].items()},
            "gflop_per_image": {k: v / 1e9 for k, v in got["flops_per_image"].items()},
            "matmul_share": share,
            # if everything but its matrix products took no time, the fast step would take its
            # profiled matrix-product time: the ceiling on any fast path with these products
            "speedup_ceiling": prof["reference"]["self_cpu_s"] / prof["fast"]["matmul_self_cpu_s"],
            "profile": prof, "rounds": args.rounds, "iters": args.iters, "seconds_per_round": seconds,
        }  # fmt: skip
        rows.append(row)
        print(
            f"{label:<22} batch {batch:>3}  reference {med['reference'] * 1e3:8.1f} ms  "
            f"fast {med['fast'] * 1e3:8.1f} ms  {row['speedup']:.3f}x "
            f"({row['speedup_range'][0]:.2f}-{row['speedup_range'][1]:.2f})  "
            f"matmuls-only fast path {row['speedup_fast_matmuls']:.3f}x  "
            f"kept for backward MiB {' / '.join(f'{v:.0f}' for v in row['saved_for_backward_mib'].values())} "
            f"matrix products {share['reference']:.0%} / {share['fast']:.0%} of the step "
            f"(ceiling {row['speedup_ceiling']:.2f}x)"
        )
    out = args.out or RESULTS / "crate_alpha_step_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine, "paths": list(PATHS), "results": rows}, indent=2) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
