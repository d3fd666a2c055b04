"""Benchmark: the ``text-quick`` recipes (a causal CRATE and its GPT baseline) on this CPU (not a test).

Trains ``text-quick`` (CRATE-LM's architecture, small) and ``text-quick-gpt`` (the GPT baseline of
the same widths, data and budget) exactly as ``crate-edu train --recipe NAME`` does, for each seed,
alternating the two models so that both see the same machine load. For every run it records the
validation loss in bits per character after each epoch, the wall time, and a sample of generated
text (a fixed prompt, temperature 0.8, top-k 20, a seeded generator), and writes them with the
machine details to ``benchmarks/results/language_quick.json``.

    python benchmarks/language_quick.py                        # seed 0, both recipes
    python benchmarks/language_quick.py --seeds 0 1 2          # mean and spread
    python benchmarks/language_quick.py --seeds 0 1 2 --keep-runs /tmp/lm-runs   # keep the run folders
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _machine import machine_info  # benchmarks/ is on sys.path when a script here runs

import crate_edu
from crate_edu.text import get_tokenizer
from crate_edu.train import RECIPES, load_checkpoint, model_kwargs, train

RESULTS = Path(__file__).resolve().parent / "results" / "language_quick.json"
RECIPE_NAMES = ("text-quick", "text-quick-gpt")
PROMPT = "The "
SAMPLE = dict(max_new_tokens=300, temperature=0.8, top_k=20)


def sample_text(model: torch.nn.Module, tokenizer_name: str, seed: int = 0) -> str:
    """The prompt and ``SAMPLE['max_new_tokens']`` characters generated after it."""
    tok = get_tokenizer(tokenizer_name)
    idx = torch.tensor([tok.encode(PROMPT)], dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    out = model.eval().generate(idx, generator=gen, **SAMPLE)
    return tok.decode(out[0].tolist())


def one_run(name: str, seed: int, root: Path, overrides: dict) -> dict:
    cfg = RECIPES[name].config(seed=seed, progress=False, **overrides)
    run_dir = root / f"{name}-seed{seed}"
    t0 = time.perf_counter()
    result = train(cfg, run_dir)
    wall = time.perf_counter() - t0
    model = crate_edu.create_model(cfg.model, **model_kwargs(cfg))
    model.load_state_dict(load_checkpoint(result.checkpoint)["model"])
    final = result.final
    run = {
        "recipe": name,
        "seed": seed,
        "val_bits_per_char": final["test_bits"],
        "val_loss": final["test_loss"],
        "val_acc": final["test_acc"],
        "val_bits_per_epoch": [h["test_bits"] for h in result.history],
        "train_bits_last_epoch": final["train_bits"],
        "steps": final["step"],
        "wall_seconds": round(wall, 2),
        "train_eval_seconds": round(sum(h["seconds"] for h in result.history), 2),
        "sample": sample_text(model, cfg.tokenizer),
    }
    print(
        f"{name} seed {seed}: val {run['val_bits_per_char']:.3f} bits/char, wall {wall:.1f} s\n"
        f"  sample: {run['sample']!r}"
    )
    return run


def summary(runs: list[dict], name: str) -> dict:
    mine = [r for r in runs if r["recipe"] == name]
    bits = [r["val_bits_per_char"] for r in mine]
    walls = [r["wall_seconds"] for r in mine]
    cfg = RECIPES[name].config()
    return {
        "model": cfg.model,
        "model_params": sum(
            p.numel() for p in crate_edu.create_model(cfg.model, **model_kwargs(cfg)).parameters()
        ),
        "val_bits_per_char_mean": statistics.fmean(bits),
        "val_bits_per_char_min": min(bits),
        "val_bits_per_char_max": max(bits),
        "wall_seconds_mean": statistics.fmean(walls),
        "wall_seconds_max": max(walls),
        "seeds": [r["seed"] for r in mine],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, help="override the recipes' epochs")
    parser.add_argument(
        "--keep-runs", type=Path, help="keep the run folders here (default: a temporary folder)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args()

    overrides = {"epochs": args.epochs} if args.epochs is not None else {}
    info = machine_info()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep_runs or Path(tmp)
        for seed in args.seeds:
            for name in RECIPE_NAMES:  # alternate: both models see the same machine load
                runs.append(one_run(name, seed, root, overrides))

    report = {
        "benchmark": "language-quick",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "configs": {name: RECIPES[name].config(**overrides).to_dict() for name in RECIPE_NAMES},
        "sampling": {"prompt": PROMPT, **SAMPLE, "generator_seed": 0},
        "crate": summary(runs, "text-quick"),
        "gpt": summary(runs, "text-quick-gpt"),
        "runs": runs,
        "machine": info,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    for key in ("crate", "gpt"):
        s = report[key]
        print(
            f"{s['model']}: validation {s['val_bits_per_char_mean']:.3f} bits/char "
            f"(range {s['val_bits_per_char_min']:.3f}-{s['val_bits_per_char_max']:.3f}), "
            f"wall {s['wall_seconds_mean']:.1f} s over {len(s['seeds'])} seed(s)"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
