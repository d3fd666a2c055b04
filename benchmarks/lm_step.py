"""The language models' training step: CRATE-LM's fast path against the official arithmetic and
against the GPT baseline, in tokens per second.

A step here is forward + next-token cross-entropy + backward (no optimiser step: it is the same
AdamW update for every path). Paths, on the same weights:

- ``crate_lm fast``: the default: ``scaled_dot_product_attention(is_causal=True)`` for the
  attention (the kernel ``'auto'`` picks for causal attention; the shared-q/k/v kernel is timed
  beside it in the attention block below) and the sparse coding block in four matmuls with a
  written-out backward (``crate_edu.models.fast.tied_overcomplete_ista``);
- ``crate_lm reference``: the official arithmetic (``set_reference``): the masked T × T softmax and
  the ISTA block's five matmuls through autograd;
- ``gpt``: the GPT baseline of the same widths (ReLU MLP, 4d hidden units), on its fast path.

Sizes: the character presets (``crate_lm_char``, ``gpt_lm_char``: 4 layers, d = 128, 98 ids) at
batch 32 × 128 tokens, and the published 12-layer sizes at a short context (batch 1 × 64 tokens;
vocabulary 50304, so the tied head is a large part of that step). Two blocks alone show where the
gain comes from: the ISTA block at d = 768 (the matmul count 5 -> 4) and the causal attention at
the character size (the three kernels).

Timing: one thread (``torch.set_num_threads(1)``, the machine is shared), the paths interleaved:
each of ``--rounds`` rounds times ``--iters`` consecutive steps of every path in turn; the figure
is the median over rounds, the speed-up the median of the per-round ratios (with its range), so a
drift in the machine's speed hits every path alike. A CUDA section (bfloat16 autocast, larger
batches) runs only when a GPU is present.

    python benchmarks/lm_step.py                   # about 3 minutes on one core
    python benchmarks/lm_step.py --rounds 3 --skip-12l

Results are printed and written to ``benchmarks/results/lm_step.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import crate_edu
from crate_edu.models import CausalMSSA, TiedOvercompleteISTA, set_reference

RESULTS = Path(__file__).parent / "results"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def interleaved(
    steps: dict[str, Callable[[], None]], rounds: int, iters: int, device: str
) -> dict[str, list[float]]:
    """Seconds per step of each path, one entry per round; the paths take turns within a round."""
    for step in steps.values():  # warm-up (allocations, kernel choice)
        step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(iters):
                step()
            _sync(device)
            times[name].append((time.perf_counter() - start) / iters)
    return times


def summary(times: dict[str, list[float]], tokens: int) -> dict[str, dict]:
    return {
        name: {
            "ms_per_step": round(statistics.median(t) * 1e3, 2),
            "ms_range": [round(min(t) * 1e3, 2), round(max(t) * 1e3, 2)],
            "tokens_per_s": round(tokens / statistics.median(t)),
        }
        for name, t in times.items()
    }


def ratio(times: dict[str, list[float]], slow: str, fast: str) -> dict:
    per_round = [s / f for s, f in zip(times[slow], times[fast], strict=True)]
    return {
        "median": round(statistics.median(per_round), 2),
        "range": [round(min(per_round), 2), round(max(per_round), 2)],
    }


def model_steps(
    crate_name: str, gpt_name: str, batch: int, tokens: int, device: str, autocast: bool
) -> tuple[dict[str, Callable[[], None]], dict]:
    """A step function per path, and the parameter counts."""
    torch.manual_seed(0)
    fast = crate_edu.create_model(crate_name).to(device)
    reference = set_reference(crate_edu.create_model(crate_name).to(device))
    reference.load_state_dict(fast.state_dict())
    gpt = crate_edu.create_model(gpt_name).to(device)
    vocab = fast.config.vocab_size
    idx = torch.randint(0, vocab, (batch, tokens), device=device)
    targets = torch.randint(0, vocab, (batch, tokens), device=device)

    def make(model: torch.nn.Module) -> Callable[[], None]:
        def step() -> None:
            model.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
                logits = model(idx)
            F.cross_entropy(logits.float().flatten(0, 1), targets.flatten()).backward()

        return step

    steps = {"crate_lm fast": make(fast), "crate_lm reference": make(reference), "gpt": make(gpt)}
    params = {"crate_lm": fast.num_params(), "gpt": gpt.num_params()}
    return steps, params


def block_steps(device: str) -> list[tuple[str, int, dict[str, Callable[[], None]]]]:
    """The ISTA block at d = 768 and the causal attention at the character size, alone."""
    out = []
    torch.manual_seed(0)
    fast, reference = (
        TiedOvercompleteISTA(768).to(device),
        TiedOvercompleteISTA(768, reference=True).to(device),
    )
    reference.load_state_dict(fast.state_dict())
    x = torch.randn(4, 256, 768, device=device, requires_grad=True)

    def run(block: torch.nn.Module, inp: torch.Tensor) -> Callable[[], None]:
        def step() -> None:
            block.zero_grad(set_to_none=True)
            inp.grad = None
            block(inp).square().mean().backward()

        return step

    out.append(
        (
            "ISTA block, d 768, 1024 tokens",
            1024,
            {"fast (4 matmuls)": run(fast, x), "reference (5)": run(reference, x)},
        )
    )
    attn = {}
    for kernel in ("shared_qkv", "sdpa"):
        if device == "cuda" and kernel == "shared_qkv":
            continue
        attn[f"fast {kernel}"] = CausalMSSA(128, 4, kernel=kernel).to(device)
    attn["reference"] = CausalMSSA(128, 4, reference=True).to(device)
    for block in attn.values():
        block.load_state_dict(next(iter(attn.values())).state_dict())
    h = torch.randn(32, 128, 128, device=device, requires_grad=True)
    out.append(("causal MSSA, d 128, 32 x 128 tokens", 32 * 128, {k: run(b, h) for k, b in attn.items()}))
    return out


def section(device: str, rounds: int, iters: int, skip_12l: bool) -> dict:
    autocast = device == "cuda"
    sizes = [("characters", "crate_lm_char", "gpt_lm_char", 32 if device == "cpu" else 256, 128)]
    if not skip_12l:
        sizes.append(
            ("12 layers", "crate_lm_12l", "gpt_lm_12l", *((1, 64) if device == "cpu" else (8, 1024)))
        )
    rows = []
    for label, crate_name, gpt_name, batch, tokens in sizes:
        steps, params = model_steps(crate_name, gpt_name, batch, tokens, device, autocast)
        times = interleaved(steps, rounds, iters if label == "characters" else 1, device)
        row = {
            "size": label,
            "models": [crate_name, gpt_name],
            "parameters": params,
            "batch": batch,
            "context": tokens,
            "paths": summary(times, batch * tokens),
            "speedup_fast_vs_reference": ratio(times, "crate_lm reference", "crate_lm fast"),
            "gpt_vs_crate_lm_fast": ratio(times, "crate_lm fast", "gpt"),
        }
        print(json.dumps(row))
        rows.append(row)
    blocks = []
    for label, tokens, steps in block_steps(device):
        times = interleaved(steps, rounds, iters, device)
        names = list(steps)
        row = {"block": label, "paths": summary(times, tokens), "speedup": ratio(times, names[-1], names[0])}
        print(json.dumps(row))
        blocks.append(row)
    return {"models": rows, "blocks": blocks, "autocast_bf16": autocast}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median over them)")
    parser.add_argument("--iters", type=int, default=2, help="consecutive steps per path and round")
    parser.add_argument("--skip-12l", action="store_true", help="only the character size")
    parser.add_argument("--out", type=Path, default=RESULTS / "lm_step.json")
    args = parser.parse_args(argv)
    from _machine import machine_info  # benchmarks/ is on sys.path when a script here runs

    torch.set_num_threads(1)
    machine = machine_info("cuda" if torch.cuda.is_available() else "cpu")
    machine["torch_threads_used"] = 1
    print(machine)
    started = time.perf_counter()
    result = {"machine": machine, "step": "forward + cross-entropy + backward"}
    result["cpu"] = section("cpu", args.rounds, args.iters, args.skip_12l)
    result["gpu"] = (
        section("cuda", args.rounds, args.iters, args.skip_12l) if torch.cuda.is_available() else None
    )
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)  # atomic: never a torn results file
    print(f"wrote {args.out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
