# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Training CRATE on ImageNet subsets: 224-px images, mixed precision, several GPUs, TPUs
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/crate-edu/crate_edu/blob/main/notebooks/06_train_imagenet_subsets.ipynb)
#
# Notebook 05 trained CRATE on 32-px images. The published CRATE models were trained on ImageNet at
# 224 px, where one image is 196 tokens and a run needs many GPU-hours. This notebook is about what
# changes at that scale and how to pay for it: the two standard ImageNet subsets (Imagenette, and
# ImageNet-100 read from an ImageNet folder you already have), the 224-px recipe, mixed precision
# (why bf16 needs no loss scaling and fp16 does — checked number by number), **measured** images per
# second on this machine, and the exact commands that launch the same code on several GPUs or a
# Colab TPU.
#
# **Data.** With Imagenette on disk (or downloadable) the training cells run on it; set `DATASET =
# "imagenet-100"` and `DATA_DIR` to your ImageNet folder for ImageNet-100. Without them (an offline
# machine, CI) the notebook says so in one line and trains on scikit-learn's `digits`, upsampled to
# 64 px and cut into 16-px patches as a 224-px image is, in a small configuration.
#
# ## What you will learn
#
# - Imagenette and ImageNet-100: what they are, where the files go, and how ImageNet-100 is cut out
#   of a full ImageNet tree (checked on a miniature tree built here).
# - The 224-px recipes (`imagenette`, `imagenet`) and their cost: tokens and FLOPs per image,
#   counted by formula and checked against PyTorch's counter, per epoch and per run.
# - Mixed precision: the number formats (range and resolution, checked), why fp16 needs loss scaling
#   and bf16 does not (a gradient that vanishes in fp16 and survives in bf16), and what autocast
#   changes in a CRATE forward pass.
# - Throughput: images per second for training and inference measured here
#   (`crate_edu.evaluation.train_throughput`, `inference_throughput`), turned into epoch and run
#   times; and where the GPU estimates come from.
# - How to run the same training on several GPUs (`accelerate launch`, `torchrun`) and on a Colab
#   TPU, with the global batch kept fixed.
#
# ## Run time
#
# Measured on 2026-12-03 on 2 CPU cores shared with other jobs, by `benchmarks/notebooks.py`
# (kernel start included; recorded in `benchmarks/results/notebooks_quick.json` and
# `notebooks_full.json`): wall time, and the kernel's CPU time in brackets, which other jobs
# on the machine disturb less. Other jobs kept up to about one core busy during these runs (the
# JSON files record how busy, per notebook), so an idle machine is faster.
#
# | | quick mode (`CRATE_EDU_QUICK=1`) | full mode |
# |---|---|---|
# | CPU (2 cores), offline (`digits` at 64 px) | 18 s (CPU 18 s) | 2.9 min (CPU 1.9 min) |
# | CPU, Imagenette present | about the same (1,024 images at 64 px) | days: the notebook warns |
# | GPU | not measured (no GPU in this session) | with Imagenette: estimated 10–30 min from FLOP counts (§4), not measured |
#
# The committed outputs come from a quick-mode run on a CPU without Imagenette or ImageNet (the
# `digits` fallback); §7 says what they show.

# %%
# On Google Colab, install crate_edu first (elsewhere this cell does nothing).
import subprocess
import sys

REPOSITORY = "https://github.com/crate-edu/crate_edu"  # the same as crate_edu.REPOSITORY
if "google.colab" in sys.modules:
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, f"crate-edu @ git+{REPOSITORY}"], check=True)

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

import crate_edu
from crate_edu.data import DatasetUnavailableError, build_dataset, dataset_info, imagenet100_classes
from crate_edu.device import setup_device
from crate_edu.evaluation import (
    confusion_matrix,
    forward_flops,
    inference_throughput,
    per_class_accuracy,
    predict,
    train_throughput,
)
from crate_edu.notebook import (
    QUICK,
    check,
    check_close,
    choose,
    estimate_run_seconds,
    format_duration,
    read_launch_command,
    warn_if_long_on_cpu,
)
from crate_edu.plotting import plot_confusion_matrix, plot_per_class_accuracy, plot_throughput
from crate_edu.train import RECIPES, LiveCurves, build_datasets, build_model, load_checkpoint, quiet, train

DATASET = "imagenette"  # or "imagenet-100" (then set DATA_DIR to the folder holding train/ and val/)
DATA_DIR = None  # None: ~/.cache/crate_edu/data (or $CRATE_EDU_DATA)
if QUICK:
    torch.set_num_threads(1)  # small runs: one thread is steadier on a busy machine
print(f"quick mode: {QUICK}")

# %% [markdown]
# ## 0. Is the data here?


# %%
def available(name: str) -> bool:
    """Whether dataset ``name`` can be loaded here (downloading Imagenette outside quick mode)."""
    try:
        build_dataset(name, "test", data_dir=DATA_DIR, download=not QUICK)
        return True
    except DatasetUnavailableError as e:
        print(
            f"{name} is not available here ({str(e).split(':')[0]}); "
            "using the offline `digits` at 64 px instead"
        )
        return False


DATA = DATASET if available(DATASET) else "digits"

# %% [markdown]
# ## 1. The datasets
#
# **Imagenette** (fast.ai) is ten easy-to-tell-apart ImageNet classes — tench, English springer,
# cassette player, chain saw, church, French horn, garbage truck, gas pump, golf ball, parachute —
# 9,469 training and 3,925 validation images; `crate-edu fetch imagenette` downloads the 160-px
# version (about 100 MB) into `DATA_DIR/imagenette2-160/{train,val}/<wnid>/`. It is a sanity
# check: well under an hour on one GPU says whether a large-image pipeline works before ImageNet's days.
#
# **ImageNet-100** is the 100-class subset introduced with contrastive multiview coding (Tian et
# al. 2019), about 1,300 training and 50 validation images per class (about 130,000 and 5,000).
# It cannot be downloaded: it is *read out of* a full ImageNet tree `DIR/{train,val}/<wnid>/*.JPEG`
# that you already have, keeping the 100 class folders of the standard list
# (`crate_edu.data.imagenet100_classes()`, shipped with the package), with label $k$ = the $k$-th
# WordNet id in sorted order. A tree holding only those 100 folders works as well.
#
# We check the reader on a miniature ImageNet: a temporary tree with all 100 class folders plus
# three others, one tiny JPEG each.

# %%
wnids = imagenet100_classes()
print(f"{len(wnids)} classes, first {wnids[:3]}, last {wnids[-1]}")
mini = Path(tempfile.mkdtemp(prefix="mini_imagenet_"))
extra = ["n00000001", "n09999998", "n09999999"]  # classes that are not in the subset
for split in ("train", "val"):
    for w in wnids + extra:
        (mini / split / w).mkdir(parents=True)
        Image.new("RGB", (40, 30), (len(w) * 7 % 255, 90, 160)).save(mini / split / w / f"{w}_1.JPEG")
sub = build_dataset("imagenet-100", "train", data_dir=mini)
x0, y0 = sub[0]
print(
    f"imagenet-100 from the miniature tree: {len(sub)} images, classes {len(sub.classes)}, "
    f"an item: {tuple(x0.shape)} float, label {y0}"
)

# %%
check("the list holds 100 distinct WordNet ids, sorted", len(set(wnids)) == 100 and wnids == sorted(wnids))
check(
    "the reader keeps exactly the 100 listed folders and skips the others",
    sub.classes == wnids and len(sub) == 100 and not any(e in sub.classes for e in extra),
)
check(
    "label k is the k-th listed id",
    all(sub.samples[k][1] == sub.class_to_idx[w] == k for k, w in enumerate(wnids)),
)
check("every image is resized and cropped to 224 px", tuple(x0.shape) == (3, 224, 224))

# %% [markdown]
# ## 2. The 224-px recipes and what they cost
#
# The `imagenet` recipe is the published pre-training (Lion, lr 2.4e-4, weight decay 0.5, batch
# 2,048, 150 epochs, RandomResizedCrop + flip, label smoothing 0.1, mixed precision); `imagenette`
# is our small-data version of it for one GPU (AdamW, as in DeiT; 160 px). Both use CRATE-T
# (`crate_tiny`: 384 wide, 12 layers, 6 heads, patch 16).

# %%
for name in ("imagenette", "imagenet"):
    r = RECIPES[name]
    print(
        f"{name}: {r.model}, {r.image_size} px, {r.epochs} epochs, batch {r.batch_size}, {r.optimizer} "
        f"lr {r.lr:g} wd {r.weight_decay:g}, warm-up {r.warmup_epochs:g}, smoothing {r.label_smoothing}, "
        f"augment {r.augment}"
    )

# %% [markdown]
# A 224-px image cut into 16-px patches is $14\times14 = 196$ tokens (+ [CLS]); at 160 px, 100.
# With notebook 05's formula (2 FLOPs per multiply-add of every matrix product), a training step
# costs about 3× the forward pass (the backward pass runs two products per forward one). We check
# the formula against PyTorch's FLOP counter at both sizes (every row of the last layer, as the
# formula counts: `prune_last_layer = False`), then multiply out the cost of a run.

# %%
sizes = {}
for size in (160, 224):
    m = crate_edu.create_model("crate_tiny", image_size=size, num_classes=10).eval()
    m.prune_last_layer = False  # every row of the last layer, as the formula counts
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        m(torch.randn(1, 3, size, size))
    sizes[size] = (m.config.num_patches, forward_flops(m), counter.get_total_flops())
    print(
        f"crate_tiny at {size} px: {sizes[size][0]} patches, forward {sizes[size][1] / 1e9:.3f} GFLOPs "
        f"(counted {sizes[size][2] / 1e9:.3f})"
    )
cifar_flops = forward_flops(crate_edu.create_model("crate_tiny_cifar"))

# %%
check(
    "forward_flops = FlopCounterMode for crate_tiny at 160 and 224 px",
    all(f == c for _, f, c in sizes.values()),
)
check("tokens: (160/16)^2 = 100 and (224/16)^2 = 196", sizes[160][0] == 100 and sizes[224][0] == 196)
check(
    "a 224-px image costs 3.6x a 32-px CIFAR image at the same width",
    3.5 < sizes[224][1] / cifar_flops < 3.7,
    f"{sizes[224][1] / cifar_flops:.2f}x",
)

# %%
runs = {  # (train images, epochs, image size)
    "Imagenette, 100 epochs at 160 px": (9_469, 100, 160),
    "ImageNet-100, 150 epochs at 224 px": (130_000, 150, 224),
    "ImageNet-1K, 150 epochs at 224 px": (1_281_167, 150, 224),
}
H100_BF16 = 989e12  # dense bf16 peak of an H100 SXM (NVIDIA datasheet), FLOP/s
for label, (n, ep, size) in runs.items():
    pflop = 3 * sizes[size][1] * n * ep / 1e15
    print(
        f"{label:36s} {pflop:9.1f} PFLOP  -> at 30 % of one H100's bf16 peak: "
        f"{format_duration(pflop * 1e15 / (0.3 * H100_BF16))}"
    )

# %% [markdown]
# These are compute-bound lower bounds at an assumed 30 % of the peak (small models reach less; a
# 6M-parameter model at batch 256 is far from saturating an H100, and JPEG decoding on the CPU often
# becomes the limit). The published ImageNet-1K run (last row) was spread over several GPUs with a
# global batch of 2,048.
#
# ## 3. Mixed precision: bf16 and fp16
#
# A float has a sign, an exponent (range) and a mantissa (resolution). float32: 8 exponent bits, 23
# mantissa bits. **bf16** keeps float32's 8 exponent bits and keeps 7 mantissa bits: the same range
# (about $10^{-38}$ to $3\times10^{38}$), and a resolution (eps, the gap above 1) of $2^{-7}$, so
# rounding errs by at most $2^{-8} \approx 0.4\%$. **fp16** has 5 exponent bits and 10 mantissa
# bits: finer resolution ($2^{-10}$) but a range of only $6\times10^{-8}$ (smallest subnormal) to
# 65,504. Matrix products run in the 16-bit format (2–16× faster on
# tensor cores, half the memory traffic) while autocast keeps reductions such as softmax and the
# loss, and the optimiser's master weights, in float32.
#
# The catch is fp16's range: small gradients **underflow to zero**. The fix is loss scaling
# (`GradScaler`): multiply the loss by $S$ (e.g. $2^{16}$) so every gradient is $S$ times larger,
# then divide by $S$ in float32 before the update — and skip the step if anything overflowed. bf16
# needs none of this, which is why `precision="auto"` picks bf16 wherever the hardware has it
# (Ampere-or-newer GPUs, TPUs) and fp16 + scaler only on older GPUs.

# %%
for dt in (torch.float32, torch.bfloat16, torch.float16):
    fi = torch.finfo(dt)
    print(f"{str(dt):15s} max {fi.max:9.3e}  smallest normal {fi.tiny:9.3e}  resolution (eps) {fi.eps:9.3e}")
g = torch.tensor(1e-8)  # a small gradient, as deep layers can see
S = 2.0**16
print(
    f"gradient 1e-8 stored in fp16: {g.half().item():.1e}; in bf16: {g.bfloat16().item():.3e}; "
    f"scaled by 2^16 in fp16, then unscaled in fp32: {(g * S).half().float().item() / S:.3e}"
)

# %%
check(
    "bf16 has float32's range",
    torch.finfo(torch.bfloat16).max > 3e38
    and torch.finfo(torch.bfloat16).tiny == torch.finfo(torch.float32).tiny,
)
check(
    "fp16 overflows above 65,504",
    torch.isinf(torch.tensor(70_000.0).half()).item() and torch.finfo(torch.float16).max == 65504,
)
check(
    "a 1e-8 gradient underflows to 0 in fp16 but not in bf16",
    g.half().item() == 0.0 and g.bfloat16().item() != 0.0,
)
check_close(
    "with loss scaling 2^16 it survives fp16 (to within fp16's resolution)",
    (g * S).half().float() / S,
    g,
    atol=1e-8 * 2**-10,
)
x = torch.rand(10_000) + 0.5
check(
    "bf16 rounding: relative error at most 2^-8 (half of its eps 2^-7)",
    ((x.bfloat16().float() - x).abs() / x).max().item() <= 2**-8 and torch.finfo(torch.bfloat16).eps == 2**-7,
)

# %% [markdown]
# What autocast does to a CRATE forward pass: we run CRATE-T at 224 px on two images in float32 and
# under bf16 autocast (which works on a CPU too; on a GPU it is also faster) and compare the
# logits. The difference is of the order of bf16's resolution — far below what changes a
# prediction of a trained model, which is why training in bf16 reaches the same accuracy. (The exact
# difference depends on the CPU's bf16 kernels, so the tests compare only the check below.)

# %%
# NBVAL_IGNORE_OUTPUT
torch.manual_seed(0)
m224 = crate_edu.create_model("crate_tiny", num_classes=10).eval()
x224 = torch.randn(2, 3, 224, 224)
with torch.no_grad():
    logits32 = m224(x224)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits16 = m224(x224)
rel = ((logits16.float() - logits32).norm() / logits32.norm()).item()
print(f"autocast output dtype {logits16.dtype}; relative difference of the logits vs float32: {rel:.1e}")

# %%
check("under autocast the products run in bf16", logits16.dtype == torch.bfloat16)
check("bf16 autocast changes CRATE-T's logits by less than 5 % (relative norm)", rel < 0.05)

# %% [markdown]
# ## 4. Throughput, measured here
#
# `setup_device()` says what this machine has; `train_throughput` times training steps (forward,
# backward, AdamW) of CRATE-T on random 224-px images, `inference_throughput` forward passes, in
# images per second. No data loading is included: this is the model's cost, the most a run can
# reach. In quick mode: a batch of 2, one timed step after one untimed (with one CPU thread); on a
# CPU in full mode a batch of 8, on a GPU 64. The numbers vary from run to run.

# %% [markdown]
# **Full mode: the next cell is long.** In full mode it took 2.0 min on 2 CPU cores shared with
# other jobs (2026-12-03; the whole notebook 2.9 min, see the Run time table). For a run of seconds
# use quick mode: restart the kernel, run `%env CRATE_EDU_QUICK=1` before the imports (or start
# Jupyter with `CRATE_EDU_QUICK=1 jupyter lab`), then run all cells.

# %%
# NBVAL_IGNORE_OUTPUT
dev = setup_device()
model_t = crate_edu.create_model("crate_tiny", num_classes=10)
bs, steps = (2, 1) if QUICK else ((8, 3) if dev.is_cpu else (64, 10))
common = dict(batch_size=bs, steps=steps, device=dev.device)
results = {
    f"train, {'fp32' if dev.precision == 'no' else dev.precision}": train_throughput(
        model_t, precision=dev.precision, **common
    ),
    "inference, fp32": inference_throughput(model_t, precision="no", **common),
    "inference, bf16 autocast": inference_throughput(model_t, precision="bf16", **common),
}
for label, r in results.items():
    print(f"{label:26s} {r.describe()}")
plot_throughput(
    {k: r.images_per_second for k, r in results.items()},
    title=f"CRATE-T at 224 px on this {dev.kind} ({dev.name}), batch {bs}",
)
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
ips = next(iter(results.values())).images_per_second
for label, (n, ep, size) in runs.items():
    per_img = ips * sizes[224][1] / sizes[size][1]  # scale the 224-px speed by the FLOP ratio
    print(
        f"{label:36s} one epoch {format_duration(n / per_img):>9s}, the run "
        f"{format_duration(estimate_run_seconds(n, ep, per_img)):>9s} on this {dev.kind}"
    )
warn_if_long_on_cpu(
    dev, estimate_run_seconds(9_469, 100, ips * sizes[224][1] / sizes[160][1]), what="the imagenette recipe"
)

# %% [markdown]
# **GPU estimates (not measured here: this session had no GPU).** CRATE-T's training step is about
# 3 × 3.62 = 10.9 GFLOP per 224-px image. At the 30 % of an H100's bf16 peak assumed in §2 that is
# about 27,000 images/s; a realistic figure for a 6M-parameter model, limited by kernel launches and
# memory-bound LayerNorm/softmax, is a few thousand images/s, and decoding JPEGs for that many
# images needs most of a 16-core CPU (hence `num_workers`). Estimate Imagenette's 100 epochs at
# 10–30 minutes and ImageNet-1K's 150 epochs at a day or more on one GPU. Measure yours with the
# cell above — it prints the figure for whatever device it finds.
#
# ## 5. Training on an ImageNet subset
#
# The same cells as notebook 05: `train` with live curves, then per-class evaluation. With the data
# and outside quick mode they run the recipe as published (on a CPU it warns first). In quick mode,
# or on the `digits` fallback, the configuration shrinks: CRATE 128 wide, 4 layers, 16-px patches
# on 64-px images (16 tokens), batch 64, a few epochs — the `digits` images are upsampled to 64 px
# so that the patches are 16 px as in the 224-px recipe.

# %%
recipe = RECIPES["imagenette"]
SMALL = dict(
    image_size=64,
    batch_size=64,
    lr=2e-3,
    warmup_epochs=1,
    model_overrides={"dim": 128, "heads": 4, "depth": 4, "patch_size": 16},
    epochs=choose(quick=4, full=15),
    threads=1,
)
if QUICK or DATA == "digits":
    cfg = recipe.config(
        dataset=DATA,
        data_dir=DATA_DIR,
        progress=False,
        **SMALL,
        **({"augment": "shift"} if DATA == "digits" else {}),  # no flips or crops of digits
        **({"limit_train": 1024, "limit_test": 512} if QUICK else {}),
    )
else:
    cfg = recipe.config(
        dataset=DATA,
        data_dir=DATA_DIR,
        progress=False,
        image_size=224 if DATA == "imagenet-100" else recipe.image_size,
    )
info = dataset_info(DATA)
print(
    f"{DATA}: {cfg.model} {cfg.model_overrides}, {cfg.image_size} px, {cfg.epochs} epochs, "
    f"batch {cfg.batch_size}, "
    f"{cfg.optimizer} lr {cfg.lr:g}, precision {dev.precision if cfg.precision == 'auto' else cfg.precision}"
)

# %%
# NBVAL_IGNORE_OUTPUT
work = Path(tempfile.mkdtemp(prefix="crate_nb06_"))
live = LiveCurves(total_epochs=cfg.epochs, title=f"CRATE on {DATA} ({cfg.image_size} px)")
with quiet() as log:
    result = train(cfg, work / "run", on_epoch_end=live)
print(log.lines[0])
print(
    f"test accuracy {result.final['test_acc']:.3f} after {cfg.epochs} epochs "
    f"({sum(h['seconds'] for h in result.history):.0f} s)"
)

# %%
model = build_model(cfg)
model.load_state_dict(load_checkpoint(result.checkpoint)["model"])
_, test_set = build_datasets(cfg)
pred = predict(model, test_set, batch_size=128)
cm = confusion_matrix(pred.preds, pred.targets, info.num_classes)
pca = per_class_accuracy(pred.preds, pred.targets, info.num_classes)
check_close(
    "predict() accuracy = the run's last test accuracy", pred.accuracy, result.final["test_acc"], atol=1e-12
)
check(
    "training learned something: the train loss fell and the test accuracy is above twice chance",
    result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    and result.final["test_acc"] > 2 / info.num_classes,
)

# %%
# NBVAL_IGNORE_OUTPUT
classes = list(info.classes) if info.classes and info.num_classes <= 20 else None
plot_per_class_accuracy(
    pca, classes, title=f"CRATE on {DATA}: test accuracy per class (mean {100 * pred.accuracy:.1f} %)"
)
plt.show()
if info.num_classes <= 20:
    plot_confusion_matrix(cm, classes, title=f"CRATE on {DATA}: confusion matrix (% of each true class)")
    plt.show()

# %% [markdown]
# ## 6. The same code on several GPUs and on a TPU
#
# The trainer is written once against Hugging Face Accelerate, so the same `crate-edu train` runs on
# one CPU, one GPU, several GPUs or TPU cores. Two rules make the runs comparable:
#
# - `--batch-size` is the **global** batch, summed over processes: with 4 GPUs and `--batch-size
#   256` each GPU takes 64 images a step, and the run takes the same optimiser steps as on one GPU.
#   If the batch does not fit, keep it and add `--grad-accum K` (K forward passes per step).
# - The data order is a function of `(seed, epoch)` alone, so a run resumed with `--resume` on a
#   different number of GPUs sees the same images in the same order.
#
# **One GPU** (bf16 picked automatically on Ampere or newer):
#
# ```bash
# crate-edu fetch imagenette
# crate-edu train --recipe imagenette --out runs/imagenette
# ```
#
# **Several GPUs on one machine**, with Accelerate (4 GPUs here; `--mixed_precision bf16` can also
# be left to `--precision auto`):
#
# ```bash
# accelerate launch --multi_gpu --num_processes 4 --mixed_precision bf16 \
#     -m crate_edu train --recipe imagenette --out runs/imagenette-4gpu
# ```
#
# or with plain PyTorch:
#
# ```bash
# torchrun --standalone --nproc_per_node 4 -m crate_edu train --recipe imagenette --out runs/imagenette-4gpu
# ```
#
# **ImageNet-100** from your ImageNet folder, 8 GPUs, the 224-px Lion recipe with the published
# batch of 2,048 (256 per GPU):
#
# ```bash
# torchrun --standalone --nproc_per_node 8 -m crate_edu train \
#     --recipe imagenet --dataset imagenet-100 --data-dir /data/imagenet --out runs/in100
# ```
#
# and the same on **one** GPU, keeping the batch of 2,048 as 8 passes of 256:
#
# ```bash
# crate-edu train --recipe imagenet --dataset imagenet-100 --data-dir /data/imagenet \
#     --grad-accum 8 --out runs/in100
# ```
#
# **Colab TPU runtime** (Runtime → Change runtime type → TPU). Colab's TPU images ship `torch_xla`
# (check with `import torch_xla`; otherwise install the `torch_xla[tpu]` wheel matching your torch
# version). One TPU core runs the CLI unchanged — Accelerate finds the XLA device and
# `setup_device()` reports it with bf16:
#
# ```bash
# PJRT_DEVICE=TPU crate-edu train --recipe imagenette --out runs/imagenette-tpu
# ```
#
# For all TPU cores, start one process per core from the notebook with Accelerate's
# `notebook_launcher`; each process builds its own model and data inside `train`:
#
# ```python
# from accelerate import notebook_launcher
# from crate_edu.train import RECIPES, train
# cfg = RECIPES["imagenette"].config(batch_size=256)   # global batch: 32 per core on 8 cores
# notebook_launcher(train, args=(cfg, "runs/imagenette-tpu"), num_processes=8)
# ```
#
# The TPU and multi-GPU commands were not run in this session (CPU only); the multi-process code
# path is tested on the CPU (`torchrun` with two CPU processes, tests/unit/train/test_loop.py). What we can
# check here is that each command line above is accepted by `crate-edu train` and means what we
# say: `crate_edu.notebook.read_launch_command` reads a command line with `crate-edu`'s own parser
# and returns the processes it starts and the configuration each one trains.

# %%
commands = {
    "4 GPUs, accelerate": "accelerate launch --multi_gpu --num_processes 4 --mixed_precision bf16 "
    "-m crate_edu train --recipe imagenette --out runs/imagenette-4gpu",
    "4 GPUs, torchrun": "torchrun --standalone --nproc_per_node 4 "
    "-m crate_edu train --recipe imagenette --out runs/imagenette-4gpu",
    "ImageNet-100, 8 GPUs": "torchrun --standalone --nproc_per_node 8 -m crate_edu train "
    "--recipe imagenet --dataset imagenet-100 --data-dir /data/imagenet --out runs/in100",
    "ImageNet-100, 1 GPU": "crate-edu train --recipe imagenet --dataset imagenet-100 "
    "--data-dir /data/imagenet --grad-accum 8 --out runs/in100",
}
parsed = {}
for label, cmd in commands.items():
    run = read_launch_command(cmd)  # crate-edu's own parser reads the words from `train` on
    parsed[label] = cfg_cmd = run.config
    print(
        f"{label:22s} {cfg_cmd.dataset:13s} global batch {cfg_cmd.batch_size:5d} = "
        f"{run.processes} process(es) x {cfg_cmd.grad_accum} pass(es) x {run.images_per_pass} images"
    )

# %%
check("every command parses as a crate-edu train run", all(c is not None for c in parsed.values()))
check(
    "the ImageNet-100 runs on 8 GPUs and on 1 GPU with grad-accum 8 take the same 256 images per pass",
    parsed["ImageNet-100, 8 GPUs"].batch_size // 8 == parsed["ImageNet-100, 1 GPU"].batch_size // 8 == 256,
)
check(
    "... and the same global batch, the published 2,048",
    parsed["ImageNet-100, 8 GPUs"].batch_size == parsed["ImageNet-100, 1 GPU"].batch_size == 2048,
)
check(
    "ImageNet-100 is 100 classes at 224 px",
    dataset_info("imagenet-100").num_classes == 100 and RECIPES["imagenet"].image_size == 224,
)

# %% [markdown]
# ## 7. Where the committed outputs come from
#
# The outputs stored in this notebook come from a **quick-mode run on a CPU (2 shared cores) with
# neither Imagenette nor ImageNet**: the training cells ran on `digits` at 64 px (a 4-layer CRATE,
# 4 epochs on 1,024 images; §5 prints its test accuracy), and the throughput cells measured CRATE-T
# at 224 px on that CPU with one thread: a few images per second for training and a few tens for
# inference, with or without bf16 autocast (the cells print the figures of each run; they move with
# the other jobs' load, so nbval does not compare them) — which is the point: the `imagenette`
# recipe would take days there, and the notebook warns before it. The run times are in the table
# at the top. No GPU or TPU was available in this session, so the GPU figures in §2 and §4 are
# estimates from FLOP counts, not measurements; with a GPU, the throughput cell prints the real
# figure.
#
# ## Summary
#
# - Imagenette (10 classes, 9,469 images) is downloadable; ImageNet-100 is read out of an ImageNet
#   tree by a fixed list of 100 WordNet ids, label $k$ = the $k$-th id (checked on a miniature tree
#   with extra folders, which are skipped).
# - At 224 px with 16-px patches an image is 196 tokens; CRATE-T's forward pass costs 3.62 GFLOPs
#   (formula = PyTorch's counter), 3.6× a CIFAR image at the same width, and training about 3× that.
# - bf16 has float32's range and rounds to within 0.4 %; fp16 has finer resolution but underflows below
#   $6\times10^{-8}$, so it needs loss scaling — a 1e-8 gradient vanishes in fp16, survives in bf16,
#   and survives fp16 when scaled by $2^{16}$ (checked). Autocast changed CRATE-T's logits by well
#   under 5 %.
# - Measured throughput turns into epoch and run times; on a CPU the 224-px recipes take days, and
#   the notebook warns before starting one.
# - The same `crate-edu train` runs on one GPU, several (`accelerate launch`, `torchrun`; the batch
#   is global) and TPUs (`PJRT_DEVICE=TPU`, or `notebook_launcher` for all cores).
#
# ## Exercises
#
# 1. Compute the forward FLOPs of CRATE-T at 224 px with 8-px patches. Why is attention now a large
#    share of the cost?
#
# <details><summary>Solution</summary>
#
# 784 patches + [CLS] = 785 tokens. Projections: $2\cdot 12\cdot 785\cdot 4\cdot 384^2 \approx
# 11.1$ GFLOPs; attention: $2\cdot 12\cdot 2\cdot 785^2\cdot 384 \approx 11.4$ GFLOPs; embedding
# $2\cdot784\cdot192\cdot384 \approx 0.12$ GFLOPs: about 22.6 in all
# (`forward_flops(create_model("crate_tiny", patch_size=8))`), 6× the patch-16 model. Attention
# grows with $N^2$: at $N = 197$ it was 0.72 of
# 3.62 GFLOPs (20 %), at 785 it is half of the total.
#
# </details>
#
# 2. You have 2 GPUs that each fit 128 images of CRATE-T at 224 px. Write the command that trains the
#    `imagenet` recipe on ImageNet-100 with its published global batch.
#
# <details><summary>Solution</summary>
#
# 2,048 = 2 processes × 8 passes × 128 images:
# `torchrun --standalone --nproc_per_node 2 -m crate_edu train --recipe imagenet --dataset
# imagenet-100 --data-dir /data/imagenet --grad-accum 8`. The learning rate stays 2.4e-4: the
# global batch, and so the optimisation, is unchanged.
#
# </details>
#
# 3. Why does an fp16 run skip optimiser steps now and then, and what does the trainer do with the
#    learning-rate schedule when it happens?
#
# <details><summary>Solution</summary>
#
# The gradient scaler starts with a large scale and doubles it every 2,000 steps without overflow;
# when a scaled gradient overflows to inf or NaN the step is skipped and the scale halved. The
# trainer (`crate_edu.train.loop`) advances the schedule only when the optimiser really stepped
# (`accelerator.optimizer_step_was_skipped`), so the schedule follows the steps actually taken.
# bf16 has no overflow at these magnitudes and never skips.
#
# </details>
#
# 4. Run the throughput cell with `bs = 64` on a GPU, once with `precision="no"` and once with
#    `"bf16"`. What speed-up do you expect, and why may it be smaller for CRATE-T than for CRATE-B?
#
# <details><summary>Solution</summary>
#
# Tensor cores run bf16 products several times faster than float32 ones (TF32 narrows the gap on
# Ampere and later), but expect a training speed-up well below the ratio of the peak FLOP/s (we
# have not measured it; no GPU here). A small model spends a larger share of its time in
# memory-bound operations (LayerNorm, softmax, the ISTA ReLU) and kernel launches,
# which bf16 speeds up much less; CRATE-B's larger matrices (768 wide) are closer to compute-bound.
#
# </details>
