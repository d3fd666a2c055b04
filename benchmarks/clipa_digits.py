"""Benchmark: the offline CRATE-α-CLIPA on captioned digits, and what the CLIPA trick saves (not a test).

For each seed it trains (or resumes, or with ``--no-train`` only reads) two runs of
:func:`crate_edu.train.pretrain_clip` with the default :class:`~crate_edu.train.CLIPTrainConfig`:

* **two-phase** (CLIPA): ``low_res_epochs`` at 16 px and 8 tokens, then ``full_res_epochs`` at 32 px
  and 16 tokens;
* **full-resolution**: the same number of steps, all at 32 px and 16 tokens (``low_res_epochs=0``,
  ``full_res_epochs`` = the two-phase run's total). ``--baseline-max-epochs K`` stops it after K
  epochs (its cosine schedule is that of the whole run, so its accuracy then is not that of a run
  planned K epochs long); its time for the whole run is then K epochs' measured time per step times
  the steps, and says so.

Measured on the whole test split (11,488 images; the held-out digit–colour combinations are ~10 %
of it), written to ``benchmarks/results/clipa_digits.json``:

* zero-shot accuracy with the held-out prompt templates (:func:`crate_edu.train.zero_shot_scores`):
  10 digits on all images, on the seen and on the held-out combinations, and the 90 digit–colour
  classes on the held-out combinations; chance 1/10 and 1/90;
* a linear probe (:func:`crate_edu.evaluation.linear_probe`) on the same frozen image features
  (``encode_image``), fitted on the first ``--probe-train`` training images' digit labels;
* training wall-clock and CPU time of each phase and of each run;
* at the phase switch (when the run kept ``checkpoint_low_res.pt``): zero-shot digits of the 16-px
  model, of its weights at 32 px with the official flattened position resize before fine-tuning,
  and with a 2-D grid resample instead (a comparison, not what the recipe does).

``--ship`` writes the first seed's two-phase model as the tutorial checkpoint
(``crate_edu/resources/checkpoints/cluttered-digits-crate-alpha-clipa.safetensors``)::

    python benchmarks/clipa_digits.py --seeds 0 --ship             # train, measure, write the file
    python benchmarks/clipa_digits.py --seeds 0 1 2 --baseline-max-epochs 2
    python benchmarks/clipa_digits.py --no-train --runs-dir runs/clipa-digits   # measure existing runs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from _machine import machine_info  # benchmarks/ is on sys.path when a script here runs

from crate_edu.data import CaptionedDigits
from crate_edu.evaluation import linear_probe
from crate_edu.train import (
    LOW_RES_CHECKPOINT,
    CLIPTrainConfig,
    build_clip_model,
    clip_image_features,
    load_clip_run,
    pretrain_clip,
    upsize_clip_model,
    zero_shot_scores,
)
from crate_edu.weights import save_weights

RESULTS = Path(__file__).resolve().parent / "results" / "clipa_digits.json"
SHIPPED = Path("crate_edu/resources/checkpoints/cluttered-digits-crate-alpha-clipa.safetensors")
COMMAND = "python benchmarks/clipa_digits.py --seeds 0 --ship"
#: Test images whose zero-shot accuracy the shipped file records for the test that reloads it.
CHECK_LIMIT = 2000


class _Stop(Exception):
    pass


def folder(runs: Path, seed: int, low: int, full: int) -> Path:
    return runs / f"s{seed}_l{low}_f{full}"


def train_or_load(cfg: CLIPTrainConfig, out: Path, data, train: bool, max_epochs: int | None):
    """The run's model (the phase it reached) and its history; trains (resuming) first if ``train``."""
    if train:
        seen = []

        def log(line: str) -> None:
            print(line, flush=True)
            seen.append(line)
            if max_epochs is not None and len(seen) >= max_epochs:
                raise _Stop

        try:
            pretrain_clip(cfg, out, resume=True, datasets=data, log=log)
        except _Stop:
            pass
    model, state = load_clip_run(out)
    return model, state["history"]


def timing(history: list[dict], total_steps: int) -> dict:
    """Wall-clock and CPU seconds of each phase; per step; the whole run's (measured or projected)."""
    out: dict = {"epochs_done": len(history), "steps_done": history[-1]["step"]}
    before_t = before_c = 0.0
    steps_before = 0
    for phase, name in ((0, "low_res"), (1, "full_res")):
        rows = [h for h in history if h["phase"] == phase]
        if not rows:
            continue
        wall = rows[-1]["time_s"] - before_t
        cpu = rows[-1]["cpu_time_s"] - before_c
        steps = rows[-1]["step"] - steps_before
        out[name] = {
            "epochs": len(rows),
            "steps": steps,
            "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "wall_ms_per_step": round(1000 * wall / steps, 1),
            "cpu_ms_per_step": round(1000 * cpu / steps, 1),
        }
        before_t, before_c, steps_before = rows[-1]["time_s"], rows[-1]["cpu_time_s"], rows[-1]["step"]
    out["wall_s"] = round(history[-1]["time_s"], 1)
    out["cpu_s"] = round(history[-1]["cpu_time_s"], 1)
    if out["steps_done"] < total_steps:  # stopped early: the whole run at the measured rate
        last = out["full_res"]
        out["projected_wall_s_for_all_steps"] = round(last["wall_ms_per_step"] * total_steps / 1000, 1)
        out["projected_cpu_s_for_all_steps"] = round(last["cpu_ms_per_step"] * total_steps / 1000, 1)
    return out


def measure(model, train, test, probe_train: int) -> dict:
    """Zero-shot scores and the linear probe on the same frozen features, on the whole test split."""
    t0 = time.perf_counter()
    test_features = clip_image_features(model, test)
    scores = zero_shot_scores(model, test, features=test_features)
    train_features = clip_image_features(model, train, limit=probe_train)
    probe = linear_probe(train_features, train.labels[: len(train_features)], test_features, test.labels)
    pred = probe.predict(test_features)
    hit = pred == test.labels
    held = test.held_out
    return {
        "zero_shot": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in scores.items()},
        "linear_probe": {
            "digit_acc": round(float(hit.float().mean()), 4),
            "digit_acc_seen_pairs": round(float(hit[~held].float().mean()), 4),
            "digit_acc_held_out_pairs": round(float(hit[held].float().mean()), 4),
            "train_acc": round(probe.train_accuracy, 4),
            "train_items": int(len(train_features)),
        },
        "chance": {"digit": 0.1, "pair_90_way": round(1 / 90, 4)},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def switch(run_dir: Path, test, limit: int) -> dict | None:
    """Zero-shot digits on the first ``limit`` test images at the phase switch: the 16-px model at
    the end of phase 1 (``checkpoint_low_res.pt``), the same weights at 32 px with the official
    flattened 1-D position resize before any fine-tuning, and, for comparison only, with a 2-D grid
    resample of the patch positions ([CLS] kept). None when the run kept no low-resolution model."""
    path = run_dir / LOW_RES_CHECKPOINT
    if not path.is_file():
        return None
    low, state = load_clip_run(path)
    cfg = CLIPTrainConfig.from_dict(state["config"])
    flat = upsize_clip_model(low, build_clip_model(cfg, 1)).eval()
    grid = upsize_clip_model(low, build_clip_model(cfg, 1)).eval()
    pos = low.visual.positional_embedding.detach()  # (N₁ + 1, W)
    g1, g2 = int(round((pos.shape[0] - 1) ** 0.5)), int(round((grid.config.num_patches) ** 0.5))
    patches = pos[1:].T.reshape(1, -1, g1, g1)  # (1, W, g₁, g₁)
    up = torch.nn.functional.interpolate(patches, size=(g2, g2), mode="bilinear", align_corners=False)
    with torch.no_grad():
        grid.visual.positional_embedding.copy_(torch.cat([pos[:1], up.reshape(pos.shape[1], -1).T]))

    def digits(model) -> float:
        return round(zero_shot_scores(model, test, limit=limit)["digit_acc"], 4)

    return {
        "test_images": limit,
        "low_res_model_16px": digits(low),
        "flat_1d_resize_32px_before_finetuning": digits(flat),
        "grid_2d_resize_32px_before_finetuning": digits(grid),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/clipa-digits"))
    ap.add_argument("--no-train", action="store_true", help="only measure the run folders that exist")
    ap.add_argument("--skip-baseline", action="store_true", help="no full-resolution run")
    ap.add_argument("--baseline-max-epochs", type=int, default=None)
    ap.add_argument("--probe-train", type=int, default=10000)
    ap.add_argument("--ship", action="store_true", help=f"write the first seed's model to {SHIPPED}")
    ap.add_argument("--no-save-results", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    base = CLIPTrainConfig()
    total_epochs = base.low_res_epochs + base.full_res_epochs
    kw = dict(samples_per_digit=base.samples_per_digit, seed=base.data_seed, clutter=base.clutter)
    train, test = CaptionedDigits("train", **kw), CaptionedDigits("test", **kw)
    record: dict = {
        "machine": machine_info(),
        "invocation": "python benchmarks/clipa_digits.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "command_of_the_shipped_file": COMMAND,
        "config": base.to_dict(),
        "seeds": {},
    }
    for seed in args.seeds:
        two = CLIPTrainConfig(seed=seed)
        full = CLIPTrainConfig(seed=seed, low_res_epochs=0, full_res_epochs=total_epochs)
        entry: dict = {}
        model, history = train_or_load(
            two, folder(args.runs_dir, seed, two.low_res_epochs, two.full_res_epochs), (train, test),
            not args.no_train, None,
        )  # fmt: skip
        total_steps = history[-1]["step"] * total_epochs // history[-1]["epoch"]
        entry["two_phase"] = {
            "timing": timing(history, total_steps),
            **measure(model, train, test, args.probe_train),
        }
        entry["two_phase"]["phase_switch"] = switch(
            folder(args.runs_dir, seed, two.low_res_epochs, two.full_res_epochs), test, CHECK_LIMIT
        )
        entry["two_phase"]["curve"] = [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()} for h in history
        ]
        if seed == args.seeds[0] and args.ship:
            shipped_metrics = entry["two_phase"]
            save_weights(
                model,
                SHIPPED,
                model_name=two.model,
                overrides=two.model_overrides,
                metadata={
                    "command": COMMAND,
                    "train_config": two.to_dict(),
                    "zero_shot": shipped_metrics["zero_shot"],
                    "linear_probe": shipped_metrics["linear_probe"],
                    "timing": shipped_metrics["timing"],
                    # what tests/unit/weights/test_tutorial.py recomputes from the file
                    "check": {
                        "data": f"CaptionedDigits('test', **{kw})",
                        "limit": CHECK_LIMIT,
                        **zero_shot_scores(model, test, limit=CHECK_LIMIT),
                    },
                },
            )
            print(f"wrote {SHIPPED} ({SHIPPED.stat().st_size / 1e6:.2f} MB)")
        baseline_dir = folder(args.runs_dir, seed, 0, total_epochs)
        if not args.skip_baseline and (not args.no_train or baseline_dir.is_dir()):
            model, history = train_or_load(
                full, baseline_dir, (train, test), not args.no_train, args.baseline_max_epochs
            )
            entry["full_res"] = {
                "timing": timing(history, total_steps),
                **measure(model, train, test, args.probe_train),
            }
            entry["full_res"]["curve"] = [
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()} for h in history
            ]
        record["seeds"][str(seed)] = entry
        print(json.dumps({k: v for k, v in entry.items()}, indent=1)[:4000])
    if not args.no_save_results:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
