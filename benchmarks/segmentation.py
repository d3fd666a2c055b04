"""Benchmark: coarse segmentation of ``cluttered-digits`` by CRATE's and a ViT's attention (not a test).

Scores the [CLS] → patch attention maps of every head of every layer against the ground-truth
digit masks of the **full test split** (11,488 images), as the CRATE segmentation paper scores
PASCAL VOC (arXiv 2308.16271; DINO's protocol): each head's map is thresholded to keep 60 % of its
attention mass (``crate_edu.evaluation.segmentation.mass_threshold_masks``), and its IoU with the truth is
computed per image, per pixel (the patch mask repeated over its 4×4 pixels) and per patch (truth
reduced to the 8×8 grid: a patch is foreground when the digit covers ≥ 25 % of it). Scores
(``crate_edu.evaluation.segmentation.segmentation_score``):

* ``best_head_iou``: one head for all images, the one with the highest mean IoU;
* ``miou``: one head per class (digit), the paper's protocol, averaged over the 10 classes;
* ``oracle_iou``: the best head per image (an upper bound);
* ``attention_mass_on_digit``: the share of each head's attention on the digit
  (``mass_on_mask``; no threshold; a uniform map scores the digit's area, about 0.19);

with heads chosen on the test images themselves (``eval``, as the papers do) and, as a held-out
check, on 2,876 training composites (``heldout``). The headline is the **penultimate layer**
(layer 3 of 4), the tutorial's default, chosen before looking; the best layer is reported too.
Also, from the per-head projections of the penultimate layer: the first PCA component thresholded
at 0 (PCA fitted per batch of 1,024 test images, and per image), the normalised-cut foreground;
the fixed-mask baseline (one mask for every image, from the train masks' frequency map); and, as
the control for "learned", the same two architectures at their random initialisation.

    python benchmarks/segmentation.py                       # the shipped tutorial checkpoints
    python benchmarks/segmentation.py --crate runs/crate --vit runs/vit   # run folders or .safetensors
    python benchmarks/segmentation.py --models vit --vit runs/vit   # re-score one, keep the other's

Writes ``benchmarks/results/segmentation.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import crate_edu
from crate_edu.data import normalize_uint8, synthetic
from crate_edu.evaluation import segmentation as seg
from crate_edu.train import export_run
from crate_edu.weights import load_tutorial_model, load_weights

RESULTS = Path(__file__).resolve().parent / "results" / "segmentation.json"


def load(spec: str) -> tuple[torch.nn.Module, dict]:
    """A tutorial checkpoint name, a .safetensors file, or a crate_edu.train run (folder or .pt)."""
    path = Path(spec)
    if not path.exists():
        model, info = load_tutorial_model(spec)
    elif path.suffix == ".safetensors":
        model, info = load_weights(path)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            model, info = load_weights(export_run(path, Path(tmp) / "w.safetensors"))
    where = info.path.name if not path.exists() else str(path)
    desc = {"source": where, "model": info.model_name, "overrides": info.overrides, "metadata": info.metadata}
    return model, desc


def untrained(desc: dict) -> torch.nn.Module:
    """The same architecture at its random initialisation (seed 0): the control for 'learned'."""
    torch.manual_seed(0)
    return crate_edu.create_model(desc["model"], **desc["overrides"]).eval()


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    hits = sum(
        int((model(x[i : i + batch]).argmax(-1) == y[i : i + batch]).sum()) for i in range(0, len(x), batch)
    )
    return hits / len(x)


def score_model(model, test, x_test, sel, x_sel, fraction: float) -> dict:
    t0 = time.perf_counter()
    L = model.config.depth
    maps = seg.cls_attention_maps(model, x_test, all_layers=True)  # (L, B, h, 8, 8)
    maps_sel = seg.cls_attention_maps(model, x_sel, all_layers=True)
    out: dict = {"test_acc": round(accuracy(model, x_test, test.labels), 4)}
    out["parameters"] = sum(p.numel() for p in model.parameters())
    layers = {}
    for res in ("pixel", "patch"):
        ious = seg.head_ious(maps, test.masks, fraction, resolution=res)  # (L, B, h)
        ious_sel = seg.head_ious(maps_sel, sel.masks, fraction, resolution=res)
        for layer in range(L):
            ev = seg.segmentation_score(ious[layer], test.labels, num_classes=10)
            ho = seg.segmentation_score(
                ious[layer],
                test.labels,
                select_ious=ious_sel[layer],
                select_labels=sel.labels,
                num_classes=10,
            )
            layers.setdefault(f"layer_{layer + 1}", {})[res] = {"eval": ev.as_dict(), "heldout": ho.as_dict()}
    share = seg.mass_on_mask(maps, test.masks).mean(1)  # (L, h): mean share of attention on the digit
    for layer in range(L):
        per_head = [round(float(v), 4) for v in share[layer]]
        layers[f"layer_{layer + 1}"]["attention_mass_on_digit"] = {
            "per_head": per_head,
            "best": max(per_head),
        }
    out["layers"] = layers
    pen = seg.penultimate_layer(model)
    sweep = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    out["penultimate_best_head_pixel_iou_by_fraction"] = {
        str(f): round(float(seg.head_ious(maps[pen], test.masks, f).mean(0).max()), 4) for f in sweep
    }
    grid = seg.patch_grid(model)
    methods = {
        "pca": lambda f: seg.pca_maps(f, grid).foreground,
        "pca_per_image": lambda f: seg.pca_maps(f, grid, per_image=True).foreground,
        "ncut": lambda f: seg.ncut_foreground(f, grid).foreground,
    }
    pix_fg: dict[str, list[float]] = {name: [] for name in methods}
    patch_fg: dict[str, list[float]] = {name: [] for name in methods}
    gt_patch = seg.masks_to_patches(test.masks, test.image_size // grid[0])
    for i in range(0, len(x_test), 1024):
        f = seg.head_projections(model, x_test[i : i + 1024], pen)
        for name, method in methods.items():
            fg = method(f)
            pix_fg[name] += seg.iou(seg.upsample_maps(fg, test.image_size), test.masks[i : i + 1024]).tolist()
            patch_fg[name] += seg.iou(fg, gt_patch[i : i + 1024]).tolist()
    out["projection_foreground_penultimate"] = {
        name: {
            "pixel_iou": round(sum(pix_fg[name]) / len(pix_fg[name]), 4),
            "patch_iou": round(sum(patch_fg[name]) / len(patch_fg[name]), 4),
        }
        for name in methods
    }
    best = max(layers, key=lambda k: layers[k]["pixel"]["eval"]["best_head_iou"])
    out["penultimate_layer"] = pen + 1
    out["best_layer_by_best_head_pixel_iou"] = int(best.split("_")[1])
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crate", default="cluttered-digits-crate", help="tutorial name, .safetensors or run")
    ap.add_argument("--vit", default="cluttered-digits-vit", help="tutorial name, .safetensors or run")
    ap.add_argument("--fraction", type=float, default=0.6, help="attention mass kept by each mask")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--models", nargs="+", default=["crate", "vit"], choices=["crate", "vit"])
    ap.add_argument(
        "--no-controls", dest="controls", action="store_false", help="skip the untrained-model controls"
    )
    ap.add_argument(
        "--limit", type=int, default=None, help="score only the first N test images (a smoke run)"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    t0 = time.perf_counter()
    test = synthetic.ClutteredDigits("test")  # 11,488 images
    if args.limit:
        test.images, test.masks, test.labels = (
            test.images[: args.limit],
            test.masks[: args.limit],
            test.labels[: args.limit],
        )
    sel = synthetic.ClutteredDigits("train", samples_per_digit=2)  # 2,876 images to choose heads on
    train_masks = synthetic.ClutteredDigits("train").masks
    x_test = normalize_uint8(test.images, test.mean, test.std)
    x_sel = normalize_uint8(sel.images, sel.mean, sel.std)
    gt_patch = lambda m: seg.masks_to_patches(m, 4)  # noqa: E731
    base_pix = seg.fixed_mask_baseline(train_masks, test.masks)
    base_patch = seg.fixed_mask_baseline(gt_patch(train_masks), gt_patch(test.masks))
    print(f"data ready in {time.perf_counter() - t0:.1f} s", flush=True)

    result = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "protocol": {
            "test_images": len(test),
            "head_selection_images": len(sel),
            "mass_fraction": args.fraction,
            "maps": "[CLS] -> patch attention of each head, softmax row 0 without its [CLS] entry",
            "pixel": "patch masks repeated over their 4x4 pixels vs the 32x32 pixel truth",
            "patch": "truth reduced to the 8x8 grid (foreground when >= 25 % covered)",
            "eval": "heads chosen on the test images (as the papers)",
            "heldout": "heads chosen on 2,876 train composites (samples_per_digit=2)",
            "layers": "1-based; layer_l is the attention computed inside layer l",
        },
        "attention_mass_on_digit_chance": round(float(test.masks.float().mean()), 4),
        "fixed_mask_baseline": {
            "pixel_iou": round(base_pix["test_iou"], 4),
            "patch_iou": round(base_patch["test_iou"], 4),
        },
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "crate_edu": crate_edu.__version__,
        },
        "models": {},
    }
    runs = []
    if args.models != ["crate", "vit"] and args.out.is_file():  # re-score some models, keep the others
        result["models"] = json.loads(args.out.read_text()).get("models", {})
    for label, spec in (("crate", args.crate), ("vit", args.vit)):
        if label not in args.models:
            continue
        model, desc = load(spec)
        runs.append((label, model.eval(), desc))
        if args.controls:
            init = {"source": "random init (seed 0)", "model": desc["model"], "overrides": desc["overrides"]}
            runs.append((f"{label}_init", untrained(desc), init))
    for label, model, desc in runs:
        rec = score_model(model, test, x_test, sel, x_sel, args.fraction)
        rec["checkpoint"] = desc
        result["models"][label] = rec
        pen = rec["layers"][f"layer_{rec['penultimate_layer']}"]["pixel"]
        print(
            f"{label}: test acc {rec['test_acc']:.3f}; penultimate layer, pixel IoU: best head "
            f"{pen['eval']['best_head_iou']:.3f} (held-out {pen['heldout']['best_head_iou']:.3f}), "
            f"mIoU {pen['eval']['miou']:.3f}, oracle {pen['eval']['oracle_iou']:.3f}; "
            f"PCA {rec['projection_foreground_penultimate']['pca']['pixel_iou']:.3f} "
            f"(per image {rec['projection_foreground_penultimate']['pca_per_image']['pixel_iou']:.3f}), "
            f"ncut {rec['projection_foreground_penultimate']['ncut']['pixel_iou']:.3f} "
            f"({rec['seconds']:.0f} s)",
            flush=True,
        )
    print(
        f"fixed-mask baseline: pixel {result['fixed_mask_baseline']['pixel_iou']:.3f}, "
        f"patch {result['fixed_mask_baseline']['patch_iou']:.3f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
