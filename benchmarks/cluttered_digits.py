"""Benchmark: the ``cluttered-digits`` recipe for CRATE and for a ViT with the same budget (not a test).

Trains the recipe as ``crate-edu train --recipe cluttered-digits`` does, once with its CRATE and
once with a ViT of the same width, depth, heads and patch (``--vit``, default ``vit_nano_cifar``)
under the same epochs, batch, optimiser, schedule, augmentation and seed, and writes the test
accuracy, wall time, epochs, steps and machine to ``benchmarks/results/cluttered_digits.json``.
The ViT's accuracy at the CRATE run's wall time is recorded too (from its per-epoch curve), so the
two can be compared per step and per second. ``--models tost`` trains ToST (``--tost``, default
``tost_nano_cifar``: TSSA blocks with ToST's convolutional stem and class-attention blocks) with the
recipe's depth and patch and the same budget.

``--controls`` also measures whether the clutter means something:

* ``plain-digits``: the same recipe on the plain ``digits`` (grey digit, black background) for the
  same number of steps: how much the clutter costs;
* ``no-digit``: the same recipe on the same composites with the digit left out (same backgrounds,
  fragments and labels; ``ClutteredDigits(draw_digit=False)``): should stay at chance (10 %) if the
  background carries no label information.

Cheap statistics of the data (always computed, a few seconds): the digit's mask area and box, the
per-class mean colour of the background, and a logistic regression on the digit-less images.

    python benchmarks/cluttered_digits.py                      # CRATE and ViT, same recipe
    python benchmarks/cluttered_digits.py --models crate        # the recipe's CRATE only
    python benchmarks/cluttered_digits.py --models --controls   # the two controls only
    python benchmarks/cluttered_digits.py --models vit-same-time  # the ViT for the CRATE run's time
    python benchmarks/cluttered_digits.py --models tost         # ToST (tost_nano_cifar, depth 4), same recipe
    python benchmarks/cluttered_digits.py --epochs 10           # any length (recorded)

Results of runs not repeated are kept in the JSON, each with its own date and machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import machine_info  # benchmarks/ is on sys.path when a script here runs

from crate_edu.data import build_transform, synthetic
from crate_edu.train import RECIPES, build_model, fit, train

RESULTS = Path(__file__).resolve().parent / "results" / "cluttered_digits.json"
RECIPE = "cluttered-digits"


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _record(label: str, cfg, history: list[dict], wall: float, params: int, load0) -> dict:
    """One run's figures: final and best accuracy, time, length, and the per-epoch curve."""
    final = history[-1]
    elapsed, curve = 0.0, []
    for r in history:
        elapsed += r["seconds"]
        curve.append([r["epoch"], r["step"], round(r["test_acc"], 4), round(elapsed, 1)])
    return {
        "label": label,
        "model": cfg.model,
        "model_overrides": dict(cfg.model_overrides),
        "dataset": cfg.dataset,
        "parameters": params,
        "test_acc": round(final["test_acc"], 4),
        "best_test_acc": round(max(r["test_acc"] for r in history), 4),
        "train_acc": round(final["train_acc"], 4),
        "train_loss": round(final["train_loss"], 4),
        "test_loss": round(final["test_loss"], 4),
        "epochs": final["epoch"],
        "steps": final["step"],
        "train_seconds": round(elapsed, 1),  # the epochs' own time: training + evaluation
        "wall_seconds": round(wall, 1),  # everything: model, data generation, epochs
        "threads": cfg.threads,
        "seed": cfg.seed,
        "load_average_1min_at_start": load0,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "curve_epoch_step_acc_seconds": curve,
    }


def run_recipe(label: str, cfg, keep: Path | None = None) -> dict:
    """Train ``cfg`` with ``crate_edu.train.train`` (exactly what the command line does).

    The run folder (checkpoint, metrics) is kept under ``keep/label`` when ``keep`` is given.
    """
    load0 = _load()
    params = sum(p.numel() for p in build_model(cfg).parameters())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run" if keep is None else keep / label
        t0 = time.perf_counter()
        result = train(cfg, out)
        wall = time.perf_counter() - t0
    rec = _record(label, cfg, result.history, wall, params, load0)
    print(
        f"{label}: {cfg.model} test accuracy {rec['test_acc']:.4f} after {rec['epochs']} epochs "
        f"({rec['steps']} steps) in {rec['wall_seconds']:.0f} s",
        flush=True,
    )
    return rec


def run_no_digit(cfg) -> dict:
    """The recipe on the composites without their digit: any accuracy above chance is leakage."""
    load0 = _load()
    S = 32 if cfg.image_size is None else cfg.image_size
    mean, std = synthetic.CLUTTERED_MEAN, synthetic.CLUTTERED_STD
    policy = cfg.augment or "none"
    train_set = synthetic.ClutteredDigits(
        "train", image_size=S, draw_digit=False,
        transform=None if policy == "none" else build_transform(policy, True, S, mean, std, native_size=S),
    )  # fmt: skip
    test_set = synthetic.ClutteredDigits("test", image_size=S, draw_digit=False)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = fit(model, train_set, test_set, cfg, Path(tmp) / "run")
        wall = time.perf_counter() - t0
    rec = _record("no-digit", cfg, result.history, wall, params, load0)
    print(f"no-digit: test accuracy {rec['test_acc']:.4f} (chance 0.1)", flush=True)
    return rec


def _fixed_prior_iou(train_masks: torch.Tensor, test_masks: torch.Tensor) -> dict:
    """Mean test IoU of one fixed mask: the train masks' frequency map thresholded (best on train)."""
    freq = train_masks.mean(0)

    def mean_iou(masks: torch.Tensor, fixed: torch.Tensor) -> float:
        inter = (masks * fixed).sum((1, 2))
        union = ((masks + fixed) > 0).float().sum((1, 2)).clamp_min(1)
        return float((inter / union).mean())

    thresholds = [round(0.05 * i, 2) for i in range(1, 20)]
    best = max(thresholds, key=lambda t: mean_iou(train_masks, (freq >= t).float()))
    return {"threshold": best, "test_iou": round(mean_iou(test_masks, (freq >= best).float()), 4)}


def data_statistics() -> dict:
    """Mask size and position, per-class background colour, and a linear probe on digit-less images."""
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    train_set = synthetic.ClutteredDigits("train")
    gen_seconds = time.perf_counter() - t0
    test_set = synthetic.ClutteredDigits("test")
    bg_train = synthetic.ClutteredDigits("train", draw_digit=False)
    bg_test = synthetic.ClutteredDigits("test", draw_digit=False)
    # the digit-less images are the same pictures away from the digit: faint strokes (alpha < 0.5)
    # reach at most three glyph pixels beyond the mask (a faint pixel beside a weak one), a glyph
    # pixel being at most fx S / 8 wide (box half-width fx <= scale * sqrt(1.15) in [-1, 1] units)
    S = train_set.image_size
    reach = math.ceil(3 * min(0.98, train_set.settings["scale"][1] * math.sqrt(1.15)) * S / 8)
    dilated = torch.nn.functional.max_pool2d(train_set.masks[:, None].float(), 2 * reach + 1, 1, reach)
    far = dilated[:, 0] == 0  # (N, S, S)
    same = (train_set.images == bg_train.images).all(1)  # (N, S, S)
    assert bool(same[far].all()), "digit-less images differ from the composites away from the digit"

    masks = train_set.masks
    area = masks.float().mean((1, 2))
    ys, xs = torch.arange(S).view(1, S, 1), torch.arange(S).view(1, 1, S)
    rows_any, cols_any = masks.any(2), masks.any(1)  # (N, S)
    height = rows_any.sum(1).float() / S
    width = cols_any.sum(1).float() / S
    cy = (masks * ys).sum((1, 2)) / masks.sum((1, 2)) / (S - 1)
    cx = (masks * xs).sum((1, 2)) / masks.sum((1, 2)) / (S - 1)

    # background colour per class (digit-less train images): differences should be sampling noise
    rgb = bg_train.images.float().mean((2, 3)) / 255  # (N, 3)
    labels = bg_train.labels
    class_means = torch.stack([rgb[labels == c].mean(0) for c in range(10)])  # (10, 3)
    class_sem = torch.stack(
        [rgb[labels == c].std(0) / math.sqrt(int((labels == c).sum())) for c in range(10)]
    )
    z = ((class_means - rgb.mean(0)) / class_sem).abs().max().item()

    # a linear probe on 8x8 average-pooled digit-less images (192 features)
    def feats(ds):
        x = torch.nn.functional.avg_pool2d(ds.images.float() / 255, S // 8)
        return x.flatten(1).numpy()

    probe = LogisticRegression(max_iter=2000, C=1.0)
    probe.fit(feats(bg_train), bg_train.labels.numpy())
    probe_acc = float((probe.predict(feats(bg_test)) == bg_test.labels.numpy()).mean())
    # the same probe on the composites with their digit, for scale
    probe_digit = LogisticRegression(max_iter=2000, C=1.0)
    probe_digit.fit(feats(train_set), train_set.labels.numpy())
    probe_digit_acc = float((probe_digit.predict(feats(test_set)) == test_set.labels.numpy()).mean())

    # the best fixed mask (the same for every image): what a segmentation must beat to show that it
    # found the digit rather than its usual place; per pixel, and per 4x4 patch (a token of the
    # patch-4 models, foreground when the mask covers at least a quarter of it)
    prior_pixel = _fixed_prior_iou(train_set.masks.float(), test_set.masks.float())
    patch = 4
    to_tokens = lambda m: (torch.nn.functional.avg_pool2d(m.float()[:, None], patch)[:, 0] >= 0.25).float()  # noqa: E731
    prior_token = _fixed_prior_iou(to_tokens(train_set.masks), to_tokens(test_set.masks))

    def q(t: torch.Tensor) -> list[float]:
        return [round(float(v), 3) for v in torch.quantile(t, torch.tensor([0.05, 0.5, 0.95]))]

    return {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in train_set.settings.items()},
        "train_images": len(train_set),
        "test_images": len(test_set),
        "generation_seconds_train_split": round(gen_seconds, 2),
        "mask_area_fraction_q05_q50_q95": q(area),
        "mask_height_fraction_q05_q50_q95": q(height),
        "mask_width_fraction_q05_q50_q95": q(width),
        "mask_centre_y_q05_q50_q95": q(cy),
        "mask_centre_x_q05_q50_q95": q(cx),
        "fixed_prior_mask_iou_pixels": prior_pixel,
        "fixed_prior_mask_iou_patch4_tokens": prior_token,
        "background_rgb_per_class": [[round(float(v), 4) for v in row] for row in class_means],
        "background_rgb_per_class_max_abs_z": round(z, 2),
        "linear_probe_acc_no_digit": round(probe_acc, 4),
        "linear_probe_acc_with_digit": round(probe_digit_acc, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="*", default=["crate", "vit"], choices=["crate", "vit", "vit-same-time", "tost"]
    )
    parser.add_argument(
        "--vit", default="vit_nano_cifar", help="the ViT preset (gets the recipe's overrides)"
    )
    parser.add_argument(
        "--tost",
        default="tost_nano_cifar",
        help="the ToST preset for --models tost (gets the recipe's overrides)",
    )
    parser.add_argument("--controls", action="store_true", help="also run plain-digits and no-digit")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--threads", type=int, help="override the recipe's CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument(
        "--keep-runs", type=Path, help="keep each run folder (checkpoint, metrics) under this folder"
    )
    args = parser.parse_args()

    recipe = RECIPES[RECIPE]
    overrides: dict = {"seed": args.seed, "progress": False}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.threads is not None:
        overrides["threads"] = args.threads
    crate_cfg = recipe.config(**overrides)
    # a different model drops the recipe's shape overrides: give them back, so only the blocks differ
    vit_cfg = recipe.config(model=args.vit, model_overrides=dict(recipe.model_overrides), **overrides)
    tost_cfg = recipe.config(model=args.tost, model_overrides=dict(recipe.model_overrides), **overrides)

    results = {"recipe": RECIPE, "config": crate_cfg.to_dict(), "data": data_statistics(), "runs": {}}
    print(json.dumps(results["data"], indent=1), flush=True)
    mine: dict = {}  # the runs of this call

    def save() -> dict:
        """Write this call's runs beside those already in the file (earlier calls, or one beside)."""
        old = json.loads(args.out.read_text()) if args.out.exists() else {}
        results["runs"] = {**old.get("runs", {}), **mine}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        return results["runs"]

    if "crate" in args.models:
        mine["crate"] = run_recipe("crate", crate_cfg, args.keep_runs)
        save()
    if "vit" in args.models:
        mine["vit"] = run_recipe("vit", vit_cfg, args.keep_runs)
        runs = save()
        if "crate" in runs:  # the ViT's own curve at the CRATE run's time (its schedule not done)
            budget = runs["crate"]["train_seconds"]
            within = [c for c in mine["vit"]["curve_epoch_step_acc_seconds"] if c[3] <= budget]
            mine["vit"]["at_crate_train_seconds"] = (
                dict(zip(("epoch", "step", "test_acc", "seconds"), within[-1], strict=True))
                if within
                else None
            )
            save()
    if "tost" in args.models:  # TSSA blocks in place of MSSA + ISTA (and ToST's stem and class attention)
        mine["tost"] = run_recipe("tost", tost_cfg, args.keep_runs)
        save()
    if "vit-same-time" in args.models:
        runs = save()
        if "crate" not in runs or "vit" not in runs:
            raise SystemExit(f"vit-same-time needs the crate and vit runs in {args.out}: run them first")
        # as many epochs as fit in the CRATE run's time at the ViT's measured pace, full schedule
        per_epoch = runs["vit"]["train_seconds"] / runs["vit"]["epochs"]
        epochs = max(1, round(runs["crate"]["train_seconds"] / per_epoch))
        mine["vit-same-time"] = run_recipe("vit-same-time", vit_cfg.replace(epochs=epochs))
        save()
    if args.controls:
        n_digits = len(synthetic.digits_split_indices("train"))
        steps = crate_cfg.epochs * (n_digits * synthetic.DEFAULT_SAMPLES_PER_DIGIT // crate_cfg.batch_size)
        plain_epochs = max(1, round(steps / (n_digits // crate_cfg.batch_size)))  # the same steps
        mine["plain-digits"] = run_recipe(
            "plain-digits", crate_cfg.replace(dataset="digits", epochs=plain_epochs)
        )
        save()
        mine["no-digit"] = run_no_digit(crate_cfg)
    save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
