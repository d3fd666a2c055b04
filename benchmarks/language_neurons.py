"""Benchmark: the shipped language models' neurons and layers, CRATE-LM against GPT (not a test).

Loads the two tutorial checkpoints (``python-docs-crate-lm`` and ``python-docs-gpt``, trained by
``text-quick`` and ``text-quick-gpt`` with the same budget), reads every neuron (CRATE-LM: the
sparse codes z1 of each layer; GPT: the post-ReLU MLP units) on the validation windows of
``python-docs``, and records per layer and overall:

- activation sparsity (fraction of zero activations) and dead neurons;
- the offline interpretability score of ``crate_edu.evaluation.interpretability_scores`` (the best
  adjusted correlation ratio η² of a simple text feature: the character, its class, the previous
  character's class, the position in the word) and the top-k selectivity. This is an offline
  stand-in for the LLM-simulated explanation score of arXiv 2410.16443, not the same metric;
- the layer-wise compression term R^c of the heads' projections and the codes' sparsity (the
  CRATE paper's layer-wise figure, for text).

It also records the reference point of the same measurements on the untrained models (the
presets with seed 0), since a neuron that follows the current character scores well at random
initialisation too. Results go to ``benchmarks/results/language_neurons.json``.

    python benchmarks/language_neurons.py                  # every validation window (363 × 128)
    python benchmarks/language_neurons.py --windows 64     # fewer windows, faster
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import torch
from _machine import machine_info  # benchmarks/ is on sys.path when a script here runs

import crate_edu
from crate_edu.evaluation import (
    activation_sparsity,
    collect_activations,
    compare_interpretability,
    layerwise_measurements,
)
from crate_edu.text import CharTokenizer, build_text_dataset

RESULTS = Path(__file__).resolve().parent / "results" / "language_neurons.json"
MODELS = {"CRATE": "python-docs-crate-lm", "GPT": "python-docs-gpt"}


def measure(models: dict[str, torch.nn.Module], windows: torch.Tensor, k: int) -> dict:
    tok = CharTokenizer()
    acts = {name: collect_activations(m, windows, batch_size=32) for name, m in models.items()}
    comparison = compare_interpretability(acts["CRATE"], acts["GPT"], tok, names=("CRATE", "GPT"), k=k)
    out = {}
    for name, model in models.items():
        lw = layerwise_measurements(model, windows[:64])
        out[name] = {
            "overall": comparison.overall(name),
            "layers": comparison.summary[name],
            "sparsity": [
                {"layer": s.layer, "zero_fraction": s.zero_fraction, "dead_fraction": s.dead_fraction}
                for s in activation_sparsity(acts[name])
            ],
            "layerwise": {
                "compression_mean": lw.compression_mean,
                "nonzero_mean": lw.nonzero_mean,
            },
        }
    out["table"] = comparison.table()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, help="validation windows to use (default: all 363)")
    parser.add_argument("--k", type=int, default=20, help="top-k of the selectivity")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)

    val = build_text_dataset("python-docs", "val", tokenizer="char", block_size=128, stride=128)
    n = len(val) if args.windows is None else min(args.windows, len(val))
    windows = torch.stack([val[i][0] for i in range(n)])  # (n, 128) token ids
    t0 = time.perf_counter()
    trained = {name: crate_edu.load_tutorial_model(ckpt)[0].eval() for name, ckpt in MODELS.items()}
    torch.manual_seed(0)
    untrained = {
        "CRATE": crate_edu.create_model("crate_lm_char").eval(),
        "GPT": crate_edu.create_model("gpt_lm_char").eval(),
    }
    report = {
        "benchmark": "language-neurons",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "data": {"corpus": "python-docs", "split": "val", "windows": n, "context": 128},
        "k": args.k,
        "trained": measure(trained, windows, args.k),
        "untrained": measure(untrained, windows, args.k),
        "seconds": None,
        "machine": machine_info(),
    }
    report["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for when in ("trained", "untrained"):
        print(f"--- {when} ---")
        print(report[when]["table"])
        for name in ("CRATE", "GPT"):
            o = report[when][name]["overall"]
            print(
                f"{name}: score mean {o['score_mean']:.3f} (median {o['score_median']:.3f}), selectivity "
                f"{o['selectivity_mean']:.2f}, dead {o['dead_fraction']:.1%}"
            )
    print(f"written to {args.out} ({report['seconds']} s)")


if __name__ == "__main__":
    main()
