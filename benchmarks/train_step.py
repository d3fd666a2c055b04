"""Training-step speed and memory: the fast path against the reference path.

The reference path computes exactly what the official code computes (explicit softmax over the N×N
scores, three-matmul ISTA, float32); the fast path is the default (on CPU the shared-q/k/v
attention kernel, on GPU ``scaled_dot_product_attention``; ISTA folded into one matmul; the last
layer computes only the [CLS] row the head reads). Two more paths undo one part of the fast path
each, to show what it adds: ``fast_all_rows`` computes every row of the last layer, and (on CPU)
``fast_sdpa`` uses ``scaled_dot_product_attention`` instead of the CPU kernel. All run the same
weights at the same configuration.

Timing: one subprocess per configuration holds one model and switches it to each path in turn
for ``--rounds`` rounds, timing ``--iters`` consecutive steps of a path per round (median: a step
in steady state), so that a drift in the machine's speed hits every path alike; the speed-up is
the median over rounds of the per-round ratio reference / fast, with its range. (With
``--compile``, each path has its own compiled copy of the weights.) Peak memory and FLOPs: one
subprocess per (configuration, path), so the peak is that path's alone. A "step" is forward +
backward of the cross-entropy loss (the optimiser update is the same for both paths).

    python benchmarks/train_step.py                      # CPU: the targets of the perf issue
    python benchmarks/train_step.py --suite full         # CRATE-T/S/B 224/16 and the 32×32 presets
    python benchmarks/train_step.py --device cuda --precision bf16 --compile --batch 256

Results are printed and written to ``benchmarks/results/train_step_<device>.json``.
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
SUITES = {
    "targets": [
        ("CRATE-T 224/16", "crate_tiny", {}, 8),
        ("CRATE-T 32/4", "crate_tiny_cifar", {}, 64),
    ],
    "full": [
        ("CRATE-T 224/16", "crate_tiny", {}, 8),
        ("CRATE-S 224/16", "crate_small", {}, 8),
        ("CRATE-B 224/16", "crate_base", {}, 8),
        ("CRATE-T 32/4", "crate_tiny_cifar", {}, 64),
        ("CRATE-S 32/4", "crate_small_cifar", {}, 64),
        ("CRATE-nano 32/4", "crate_nano_cifar", {}, 64),
        ("CRATE-α-T 32/4", "crate_alpha_tiny_cifar", {}, 64),
        ("ViT-T 32/4", "vit_tiny_cifar", {}, 64),
    ],
}

# dense bf16 tensor-core peak, FLOP/s, for model FLOPs utilisation
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "T4": 65e12}


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child(args: argparse.Namespace) -> None:
    """Measure one configuration; print one JSON line.

    ``--path all``: time every path in this one process, in turn for ``--rounds`` rounds, so that a
    drift in the machine's speed hits every path alike. Eager: one model whose blocks are switched
    to each path in turn (the same weights, as in training, where each step finds the weights the
    previous step touched); each round times ``--iters`` consecutive steps of a path (median).
    ``--compile``: one compiled copy of the weights per path. Any other ``--path``: that path alone,
    for its peak memory and FLOPs.
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    import crate_edu
    from crate_edu.models import set_attention_kernel, set_reference

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    paths = args.paths.split(",") if args.path == "all" else [args.path]
    base = crate_edu.create_model(args.model, **json.loads(args.overrides)).to(device)
    models = {}
    for path in paths:
        if args.compile and len(paths) > 1:  # a compiled graph per path: a copy of the weights each
            models[path] = crate_edu.create_model(args.model, **json.loads(args.overrides)).to(device)
            models[path].load_state_dict(base.state_dict())
        else:
            models[path] = base

    def use(path: str) -> None:
        """Switch the path's model to that path (reference; fast; fast computing every row of the
        last layer; fast with SDPA)."""
        set_reference(models[path], path == "reference")
        set_attention_kernel(models[path], "sdpa" if path == "fast_sdpa" else "auto")
        models[path].prune_last_layer = path != "fast_all_rows"

    for path in paths:
        use(path)
    cfg = models[paths[0]].config
    x = torch.randn(args.batch, 3, cfg.image_size, cfg.image_size, device=device)
    y = torch.randint(0, cfg.num_classes, (args.batch,), device=device)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    nets = {k: torch.compile(m) if args.compile else m for k, m in models.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(path):
        models[path].zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(nets[path](x), y)
        loss.backward()

    if args.path == "all":
        for path in paths:
            use(path)
            for _ in range(args.warmup):
                step(path)
        sync()
        seconds: dict[str, list[float]] = {path: [] for path in paths}
        for _ in range(args.rounds):
            for path in paths:
                use(path)
                times = []
                for _ in range(args.iters):
                    t0 = time.perf_counter()
                    step(path)
                    sync()
                    times.append(time.perf_counter() - t0)
                seconds[path].append(statistics.median(times))
        print(json.dumps({"seconds": seconds}))
        return

    (path,) = paths
    flops = None
    if not args.compile:  # FLOPs of forward + backward per image, as PyTorch counts them, at this
        # batch size (the fast ISTA path depends on the number of tokens in the batch)
        with FlopCounterMode(display=False) as counter:
            models[path].zero_grad(set_to_none=True)
            F.cross_entropy(models[path](x), y).backward()
        flops = counter.get_total_flops() / args.batch
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(max(2, args.warmup)):
        step(path)
    sync()
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _peak_rss_mib()
    print(json.dumps({"flops_per_image": flops, "peak_mib": peak}))


def _run(args: argparse.Namespace, model: str, overrides: dict, batch: int, path: str, paths: str) -> dict:
    cmd = [
        sys.executable, __file__, "--child", "--model", model, "--overrides", json.dumps(overrides),
        "--batch", str(batch), "--path", path, "--paths", paths, "--device", args.device,
        "--precision", args.precision, "--rounds", str(args.rounds), "--iters", str(args.iters),
        "--warmup", str(args.warmup), "--threads", str(args.threads),
    ] + (["--compile"] if args.compile else [])  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed for {model} ({path}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", choices=list(SUITES), default="targets")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model (both paths)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: per config, CPU-sized)")
    p.add_argument("--rounds", type=int, default=15, help="rounds; each times every path in turn")
    p.add_argument("--iters", type=int, default=3, help="consecutive timed steps per path and round (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak for MFU (default: by GPU name)")
    p.add_argument("--out", type=Path, default=None)
    # child-process arguments
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--paths", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args)
        return

    from _machine import machine_info  # benchmarks/ is on sys.path when a script here runs

    machine = machine_info(args.device)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    if peak is None and "gpu" in machine:
        peak = next((v for k, v in PEAK_BF16.items() if k in machine["gpu"]), None)
    rows = []
    print(f"{machine}  precision={args.precision} compile={args.compile}")
    print(f"{'config':<16} {'batch':>5} {'reference ms':>12} {'fast ms':>9} {'speed-up':>8} "
          f"{'img/s fast':>10} {'peak MiB ref/fast':>18} {'GFLOP/img ref/fast':>19}")  # fmt: skip
    paths = ("reference", "fast", "fast_all_rows") + (("fast_sdpa",) if args.device == "cpu" else ())
    for label, model, overrides, cpu_batch in SUITES[args.suite]:
        batch = args.batch or cpu_batch
        seconds = _run(args, model, overrides, batch, "all", ",".join(paths))["seconds"]
        single = {path: _run(args, model, overrides, batch, path, path) for path in paths}
        med = {k: statistics.median(v) for k, v in seconds.items()}
        mem = {k: v["peak_mib"] for k, v in single.items()}
        flops = {k: v["flops_per_image"] for k, v in single.items()}
        ratios = {
            k: [ref / t for ref, t in zip(seconds["reference"], v, strict=True)]
            for k, v in seconds.items()
            if k != "reference"
        }
        row = {
            "config": label, "model": model, "overrides": overrides, "batch": batch,
            "device": args.device, "precision": args.precision, "compile": args.compile,
            "reference_step_s": med["reference"], "fast_step_s": med["fast"],
            "speedup": statistics.median(ratios["fast"]),
            "speedup_range": [min(ratios["fast"]), max(ratios["fast"])],
            "speedup_of_medians": med["reference"] / med["fast"],
            "reference_images_per_s": batch / med["reference"], "fast_images_per_s": batch / med["fast"],
            "reference_peak_mib": mem["reference"], "fast_peak_mib": mem["fast"],
            "reference_flops_per_image": flops["reference"], "fast_flops_per_image": flops["fast"],
            "rounds": args.rounds, "iters": args.iters, "seconds_per_round": seconds,
        }  # fmt: skip
        for path in paths[2:]:  # the fast path with one of its parts undone
            row[f"{path}_step_s"] = med[path]
            row[f"speedup_{path}"] = statistics.median(ratios[path])
            row[f"{path}_peak_mib"] = mem[path]
        if peak and flops["reference"]:
            # MFU counts the model's FLOPs as the official computation defines them (reference path)
            row["fast_mfu"] = flops["reference"] * row["fast_images_per_s"] / peak
        rows.append(row)
        gf = [f"{flops[k] / 1e9:.2f}" if flops[k] else "-" for k in ("reference", "fast")]
        print(f"{label:<16} {batch:>5} {med['reference'] * 1e3:>12.1f} {med['fast'] * 1e3:>9.1f} "
              f"{row['speedup']:>7.2f}x {row['fast_images_per_s']:>10.1f} "
              f"{mem['reference']:>8.0f}/{mem['fast']:<9.0f} {gf[0]:>9}/{gf[1]:<9} "
              f"range {min(ratios['fast']):.2f}-{max(ratios['fast']):.2f}"
              + "".join(f"  {path} {med[path] * 1e3:.1f} ms ({row[f'speedup_{path}']:.2f}x)"
                        for path in paths[2:]))  # fmt: skip
    out = args.out or RESULTS / f"train_step_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
