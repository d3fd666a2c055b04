"""Named training recipes: presets of :class:`~crate_edu.train.config.TrainConfig` defaults.

``RECIPES[name]`` is a :class:`Recipe`; ``recipe.config(**overrides)`` gives the run configuration,
and on the command line every flag overrides the recipe (``crate-edu train --recipe imagenet
--epochs 90``). Each recipe's ``doc`` says where its values come from and what it is expected to
reach; ``crate-edu list recipes`` prints one line per recipe (its ``summary``) and ``crate-edu show
recipe NAME`` the whole of it.

Facts about the official scripts (Ma-Lab-Berkeley/CRATE) that the recipes rely on:

* ``main.py`` (ImageNet): Lion from lion-pytorch or AdamW; ``LabelSmoothingCrossEntropy(0.1)``;
  fp16 autocast with a ``GradScaler``; ``RandomResizedCrop(224)`` + flip for training, resize 256 +
  centre crop 224 for evaluation; the learning rate is used as given (no scaling with the batch
  size; ``--batch-size`` is the total over all GPUs). A module-level ``grad_clip_norm = 1.0`` is
  defined but never applied: the official run does not clip gradients. Its scheduler is a
  ``LambdaLR`` stepped once per epoch with 20 warm-up "steps" (so 20 warm-up epochs); the paper
  (arXiv 2306.01129, appendix) reports the recipe used for the published numbers: Lion, lr 2.4e-4,
  weight decay 0.5, batch 2,048, 150 epochs, 5 warm-up epochs then cosine decay, label smoothing 0.1.
  Here the schedule is the paper's, updated every step.
* ``finetune.py``: AdamW (betas 0.9/0.999, weight decay 0.01), plain cross-entropy (no smoothing),
  ``CosineAnnealingLR`` over the epochs with no warm-up, AMP, ``RandomResizedCrop(224)`` + flip +
  ``RandAugment(2, 14)`` (train) and a square resize to 224 (test), ImageNet mean/std; the
  classifier head is replaced by a new ``LayerNorm + Linear`` for the target classes. The README's
  table: CIFAR-10/100 lr 5e-5, 200 epochs, batch 256; Pets and Flowers lr 1e-4, 400 epochs; the
  paper uses lr 5e-5, weight decay 0.01, batch 512.

Facts about the official CRATE-α scripts (UCSC-VLAA/CRATE-alpha, JAX / big_vision; every value with
its file and line in docs/notes/crate_alpha_official_code.md §3.0-3.2) for ``in21k-pretrain`` and
``in1k-finetune``:

* ``optim/build_optax.py``: global-norm clipping, then Adam (optax defaults: eps 1e-8), then
  weight decay added to the update and multiplied by lr · schedule (AdamW's decoupled decay) on the
  ``.*/kernel$`` parameters only; a linear warm-up from 0, then cosine to ``min_lr``;
* ``lr = base_lr · batch // 256``: 5e-5 (pre-training) and 1e-5 (fine-tuning) per 256 images,
  8e-4 and 1.6e-4 at the batch of 4,096;
* mixup / CutMix on the device against the batch in reverse order (``main.py:210-223``);
* the fine-tuning loads the pre-trained model except the head, resamples the position embeddings
  and resizes the patch embedding (``models/crate.py:321-344, 399-403``; ``models/common.py:605``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from crate_edu.train.config import TrainConfig, choice_error


@dataclass(frozen=True)
class Recipe:
    """A named preset of training defaults; every field may be overridden.

    Attributes:
        name: the name used by ``--recipe``.
        doc: what the recipe is for, where each value comes from, and what it reaches.
        model, dataset, epochs, batch_size, optimizer, lr, weight_decay, warmup_epochs,
        label_smoothing, grad_clip, image_size, augment, normalize, model_overrides, betas, min_lr_ratio,
        threads, min_lr, decay_mask, smoothing_style, mixup_alpha, cutmix_alpha, mix_switch_prob,
        randaugment_magnitude, resample_pretrained, tokenizer: the
        :class:`~crate_edu.train.config.TrainConfig` fields this recipe sets.
        needs_pretrained: the recipe only makes sense from pretrained weights (``--pretrained``).
        summary: one line for ``crate-edu list recipes`` (default: the doc's first sentence).
    """

    name: str
    doc: str
    model: str
    dataset: str
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    image_size: int | None = None
    augment: str | None = None
    normalize: str | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    betas: tuple[float, float] | None = None
    min_lr_ratio: float = 0.0
    threads: int | None = None
    min_lr: float | None = None
    decay_mask: str = "all"
    smoothing_style: str = "torch"
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_switch_prob: float = 0.5
    randaugment_magnitude: float | None = None
    resample_pretrained: bool = False
    tokenizer: str = "char"
    needs_pretrained: bool = False
    summary: str = ""

    def __post_init__(self) -> None:
        if not self.summary:  # default: the doc's first sentence
            object.__setattr__(self, "summary", " ".join(self.doc.split()).split(". ")[0].rstrip("."))

    def config(self, **overrides: Any) -> TrainConfig:
        """The :class:`TrainConfig` of this recipe with ``overrides`` applied.

        ``model_overrides`` given here are merged into the recipe's (a key set to None removes it).
        """
        base = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("name", "doc", "needs_pretrained", "summary")
        }
        base["model_overrides"] = dict(self.model_overrides)
        extra = overrides.pop("model_overrides", None) or {}
        for k, v in extra.items():
            if v is None:
                base["model_overrides"].pop(k, None)
            else:
                base["model_overrides"][k] = v
        # A different model starts from its own preset: the recipe's shape overrides no longer apply.
        if "model" in overrides and overrides["model"] != self.model:
            base["model_overrides"] = dict(extra)
        base.update(overrides)
        base["recipe"] = self.name
        return TrainConfig(**base)


_RECIPES: list[Recipe] = [
    Recipe(
        name="digits-quick",
        summary="small CRATE on the offline digits, on a laptop CPU (results: the README's recipe table)",
        doc=(
            "A small CRATE on scikit-learn's digits (offline), on a laptop CPU in a few minutes. "
            "crate_nano_cifar (dim 128, 4 heads) shortened to 4 layers and patch 8 (16 tokens of "
            "8x8 px, each 2x2 source pixels), so a step costs little; AdamW at 2e-3 with a 1-epoch "
            "warm-up and cosine decay, label smoothing 0.1, small random shifts (no flips: a flipped "
            "2 is not a 2), one CPU thread (this model's small matrix products gain nothing from "
            "more, and on a busy machine extra threads make each step several times slower). Measured "
            "by benchmarks/digits_quick.py: test accuracy and wall time over three seeds in "
            "benchmarks/results/digits_quick.json and the README's recipe table."
        ),
        model="crate_nano_cifar",
        dataset="digits",
        epochs=15,
        batch_size=64,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.05,
        warmup_epochs=1,
        label_smoothing=0.1,
        grad_clip=1.0,
        augment="shift",
        model_overrides={"depth": 4, "patch_size": 8},
        threads=1,
    ),
    Recipe(
        name="cluttered-digits",
        summary="CRATE on digits in clutter, with masks, for the segmentation notebooks (CPU)",
        doc=(
            "CRATE on cluttered-digits (digits at random scale, position and colour on textured "
            "backgrounds with distractor fragments, with foreground masks), trained well enough "
            "that its attention maps can be scored as segmentation in the notebooks. "
            "crate_nano_cifar (dim 128, 4 heads) with 4 layers and patch 4 (64 tokens: the digit "
            "must be found among background patches, so the tokens stay small), batch 64, AdamW "
            "1.5e-3 wd 0.05, 1 warm-up epoch, cosine, label smoothing 0.1, clipping 1.0, no "
            "augmentation, one CPU thread, 6 epochs over the default 32 composites per digit "
            "(4,314 steps, each composite seen 6 times). Tuned together with the data defaults on "
            "2 shared CPU cores: more distinct composites beat augmentation, random shifts hurt, and "
            "a digit box of 70-90 % of the side beat 60-88 %; lr 7.5e-4 / 3e-3, no label smoothing, "
            "mean pooling, 8 heads, depth 3 or 6, batch 32 and a shorter warm-up did not beat this. "
            "Measured by benchmarks/cluttered_digits.py: test accuracy after every epoch and the "
            "training time in benchmarks/results/cluttered_digits.json and the README's recipe "
            "table, also for vit_nano_cifar under the same recipe (the same width, depth 4, heads "
            "and patch, with a 4x MLP: 0.81 M parameters against 0.22 M; on the command line: "
            "--model vit_nano_cifar --depth 4; a new --model alone drops the recipe's depth)."
        ),
        model="crate_nano_cifar",
        dataset="cluttered-digits",
        epochs=6,
        batch_size=64,
        optimizer="adamw",
        lr=1.5e-3,
        weight_decay=0.05,
        warmup_epochs=1,
        label_smoothing=0.1,
        grad_clip=1.0,
        augment="none",
        model_overrides={"depth": 4},
        threads=1,
    ),
    Recipe(
        name="cifar10-scratch",
        summary="CIFAR-10 from scratch on one GPU, CRATE-T widths with patch 4 (expected ~85 %)",
        doc=(
            "CIFAR-10 from scratch on ONE GPU, aiming at accuracy per GPU-minute. crate_tiny_cifar (CRATE-T "
            "widths: dim 384, 12 layers, 6 heads; patch 4 = 64 tokens), 100 epochs, batch 512, AdamW lr 1e-3"
            " wd 0.05, 5 warm-up epochs then cosine, label smoothing 0.1, gradient clipping 1.0, random-crop"
            " + flip augmentation, bf16. Figures relied on: small patches are what makes transformers work "
            "on 32 px images (kentaroy47/vision-transformers-cifar10: ViT patch 4 80 % vs patch 8 30 % at "
            "200 epochs, 88 % with patch 4 at 500 epochs; SHI-Labs/Compact-Transformers: ViT-Lite-7/4, 3.7M "
            "params, 91.38 % in 200 epochs); a 6.3M-param ViT with patch 4 reaches about 91 % in 200 epochs "
            "with AutoAugment and label smoothing (omihub777/ViT-CIFAR); on ImageNet-1K, CRATE-T trails "
            "ViT-S, a ViT of the same width and depth (384 wide, 12 layers; 6.1 M against 22 M parameters), "
            "by 5.7 points: 66.7 vs 72.4 % (arXiv 2306.01129; CRATE-T against ViT-T's 71.5 % compares a "
            "384-wide model with a 192-wide one). Our judgement: at half those epochs, crop + flip with "
            "label smoothing is the cheaper point on the accuracy/time curve (stronger augmentation pays "
            "back over longer schedules), so expect about 85 % test accuracy (plausible range 82-88 %); NOT "
            "measured in this repository (no GPU here). Estimated cost on one A100/H100: 5-10 minutes (5.4M "
            "parameters x 65 tokens: about 2 GFLOP per training image, 10 PFLOP for 100 x 50,000 images, "
            "plus data loading). For more accuracy, double the epochs and try --augment randaugment."
        ),
        model="crate_tiny_cifar",
        dataset="cifar10",
        epochs=100,
        batch_size=512,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.05,
        warmup_epochs=5,
        label_smoothing=0.1,
        grad_clip=1.0,
        augment="cifar",
    ),
    Recipe(
        name="imagenette",
        summary="Imagenette at 160 px from scratch, a sub-ImageNet sanity run for one GPU",
        doc=(
            "Imagenette (10 easy ImageNet classes, 9,469 train images) at 160 px from scratch: "
            "crate_tiny (official CRATE-T widths, patch 16: 10x10 tokens), 100 epochs, batch 256, "
            "AdamW lr 5e-4 wd 0.05, 5 warm-up epochs, label smoothing 0.1, gradient clipping 1.0, "
            "the official main.py augmentation (RandomResizedCrop + flip). The optimiser settings "
            "are the DeiT ones (AdamW, wd 0.05, 5 warm-up epochs, smoothing 0.1, lr 5e-4 per 512 "
            "images) with a doubled lr for the small dataset. Our choice, not measured: a "
            "sub-ImageNet sanity run for one GPU or Colab."
        ),
        model="crate_tiny",
        dataset="imagenette",
        epochs=100,
        batch_size=256,
        optimizer="adamw",
        lr=5e-4,
        weight_decay=0.05,
        warmup_epochs=5,
        label_smoothing=0.1,
        grad_clip=1.0,
        image_size=160,
        augment="imagenet",
    ),
    Recipe(
        name="imagenet",
        summary="ImageNet-1K pre-training as published (Lion, batch 2,048, 150 epochs)",
        doc=(
            "ImageNet-1K pre-training as published (arXiv 2306.01129, appendix; official main.py): "
            "Lion, lr 2.4e-4 (used as given, not scaled with the batch), weight decay 0.5, batch "
            "2,048 (total over all GPUs), 150 epochs, 5 warm-up epochs then cosine decay, label "
            "smoothing 0.1, 224 px, RandomResizedCrop + flip, no gradient clipping (main.py defines "
            "grad_clip_norm = 1.0 but never applies it), mixed precision. Published top-1: CRATE-T "
            "66.7, S 69.2, B 70.8, L 71.3. The README's example for CRATE_tiny differs (batch 512, "
            "200 epochs, lr 2e-4, weight decay 0.04). With fewer GPUs than the batch needs, keep the "
            "batch and add --grad-accum (e.g. 8 on one GPU: 256 images per pass)."
        ),
        model="crate_tiny",
        dataset="imagenet",
        epochs=150,
        batch_size=2048,
        optimizer="lion",
        lr=2.4e-4,
        weight_decay=0.5,
        warmup_epochs=5,
        label_smoothing=0.1,
        grad_clip=None,
        image_size=224,
        augment="imagenet",
    ),
    Recipe(
        name="finetune",
        summary="fine-tune ImageNet weights as the official finetune.py (needs --pretrained)",
        doc=(
            "Fine-tuning ImageNet-pretrained CRATE as in the official finetune.py and the paper: "
            "AdamW lr 5e-5, betas (0.9, 0.999), weight decay 0.01, batch 512 (paper; the README "
            "table uses 256), 200 epochs (README, CIFAR-10/100; Pets and Flowers: lr 1e-4, 400 "
            "epochs), cosine decay without warm-up, plain cross-entropy, 224 px, RandomResizedCrop + "
            "flip + RandAugment(2, 14), ImageNet mean/std for every dataset (what the pretrained "
            "weights expect), mixed precision. Needs --pretrained (an official checkpoint "
            "such as CRATE_small.pth, or a checkpoint of this trainer); the classifier head is "
            "replaced for the new classes. Published (CRATE-T/S/B/L): CIFAR-10 95.5/96.0/96.8/97.2, "
            "CIFAR-100 78.9/81.0/82.7/83.6, Flowers 84.6/87.1/88.7/88.3, Pets 81.4/84.9/85.3/87.4."
        ),
        model="crate_small",
        dataset="cifar10",
        epochs=200,
        batch_size=512,
        optimizer="adamw",
        lr=5e-5,
        weight_decay=0.01,
        betas=(0.9, 0.999),
        warmup_epochs=0,
        label_smoothing=0.0,
        grad_clip=None,
        image_size=224,
        augment="randaugment",
        normalize="imagenet",
        needs_pretrained=True,
    ),
    Recipe(
        name="in21k-pretrain",
        summary="CRATE-α-B/16 ImageNet-21K pre-training as the official code (Adam, batch 4,096, 91 epochs)",
        doc=(
            "CRATE-α ImageNet-21K pre-training as the official code runs it (UCSC-VLAA/CRATE-alpha "
            "configs/crate/classification/pre_training_in21k.py, launched for B/16 by "
            "scripts/in1k/pre_training_in21k.sh:13; file:line of every value in "
            "docs/notes/crate_alpha_official_code.md §3.0-3.1): crate_alpha_b16 with a 19,167-way head "
            "(dataset imagenet21k: the Winter 2021 release, whose class count that head has; :33), 91 "
            "epochs (:32), batch 4,096 (:26), Adam b1 0.9 b2 0.95 eps 1e-8 (:95-96) with decoupled weight "
            "decay 0.1 (:107) on the Linear and Conv kernels only, not on the ISTA dictionaries D and D1, "
            "the class token, the position embeddings, LayerNorms or biases (optim/build_optax.py), lr 8e-4 "
            "= 5e-5 x 4,096 / 256 (:25, :106), 10 warm-up epochs then cosine to min_lr 1e-6 (:108-110), "
            "gradient clipping 1.0 (:94), no label smoothing (:34, :59), 224 px inception crop (8-100 % of "
            "the area, aspect 3/4-4/3, bilinear) + flip (:55-62), mixup Beta(0.8, 0.8) or CutMix Beta(1, 1) "
            "with probability 1/2 each, against the batch in reverse order (:77-82; main.py:210-223, "
            "transforms/mixup.py), ImageNet mean/std, evaluation resize 256 + centre crop 224 (:63), bf16 "
            "mixed precision on GPU (--precision auto). Expected: no accuracy is published for the "
            "pre-training; fine-tuned on ImageNet-1K (--recipe in1k-finetune) the published CRATE-α-B/16 "
            "reaches 81.2 % top-1 and L/14 (--model crate_alpha_l14) 83.9 % (the official README's table, "
            "docs/notes §4.1); NOT measured here (no ImageNet-21K or GPU cluster on these machines). "
            "Differs from the official JAX run: Adam's first moment in float32 (officially bfloat16), "
            "torchvision's crop and resize instead of TensorFlow's, the warm-up's first step at lr / steps "
            "(officially 0), each process mixes its share of the batch and each micro-batch of --grad-accum "
            "its own (officially each device its own), a test split of 10 images per class held out from "
            "the release (officially a private validation split). With another batch, scale --lr with it "
            "(the official rule: 5e-5 x batch / 256); with fewer GPUs keep the batch and add --grad-accum."
        ),
        model="crate_alpha_b16",
        dataset="imagenet21k",
        epochs=91,
        batch_size=4096,
        optimizer="adamw",
        lr=8e-4,
        betas=(0.9, 0.95),
        weight_decay=0.1,
        decay_mask="kernels",
        warmup_epochs=10,
        min_lr=1e-6,
        label_smoothing=0.0,
        grad_clip=1.0,
        image_size=224,
        augment="imagenet",
        normalize="imagenet",
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
        mix_switch_prob=0.5,
    ),
    Recipe(
        name="in1k-finetune",
        summary="CRATE-α-B/16 ImageNet-1K fine-tuning from in21k (needs --pretrained; 81.2 % published)",
        doc=(
            "CRATE-α ImageNet-1K fine-tuning of ImageNet-21K weights as the official code runs it "
            "(UCSC-VLAA/CRATE-alpha configs/crate/classification/fine_tuning_in1k.py, launched for B/16 by "
            "scripts/in1k/fine_tuning_in1k.sh:15; file:line in docs/notes/crate_alpha_official_code.md "
            "§3.0, §3.2): crate_alpha_b16 from --pretrained (a checkpoint.pt of --recipe in21k-pretrain, or "
            "the published weights crate_alpha_b16_in21k, crate-edu show weights crate_alpha_b16_in21k) "
            "with the 19,167-way head replaced by a fresh 1,000-way one (dont_load, :121), the position "
            "embeddings resampled and the patch embedding resized when the image or patch size differs "
            "(models/crate.py:321-344, models/common.py:605-607), 91 epochs (:34), batch 4,096 (:28), "
            "Adam b1 0.9 b2 0.95 eps 1e-8, weight decay 0.1 on the kernels only (:99-101, :112), lr 1.6e-4 "
            "= 1e-5 x 4,096 / 256 (:27, :111), 10 warm-up epochs then cosine to 1e-6 (:113-115), clipping "
            "1.0, 224 px inception crop + flip + RandAugment(2, 9) as timm draws it (magnitude N(9, 0.5), "
            "each op with probability 1/2; :57-66, transforms/autoaugment.py:776-836), label smoothing in "
            "big_vision's form: the true class 0.9, every other 0.1 / 1000 (:62; not torch's "
            "label_smoothing=0.1, which gives the true class 0.9001), mixup / CutMix as in21k-pretrain "
            "(:81-86), evaluation resize 256 + centre crop 224 (:67), bf16 mixed precision on GPU. "
            "Expected: 81.2 % top-1 for B/16 and 83.9 % for L/14 (--model crate_alpha_l14 from "
            "crate_alpha_l14_in21k), the official README's table (docs/notes §4.1); NOT measured here. "
            "Differs from the official JAX run as in21k-pretrain does (float32 Adam moment, torchvision "
            "instead of TensorFlow resizing, warm-up start, mixing per process and micro-batch), and its "
            "RandAugment operations are torchvision's (PIL's definitions, as timm's) where the official "
            "ones are TensorFlow ports."
        ),
        model="crate_alpha_b16",
        dataset="imagenet",
        epochs=91,
        batch_size=4096,
        optimizer="adamw",
        lr=1.6e-4,
        betas=(0.9, 0.95),
        weight_decay=0.1,
        decay_mask="kernels",
        warmup_epochs=10,
        min_lr=1e-6,
        label_smoothing=0.1,
        smoothing_style="big_vision",
        grad_clip=1.0,
        image_size=224,
        augment="imagenet-randaugment",
        randaugment_magnitude=9,
        normalize="imagenet",
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
        mix_switch_prob=0.5,
        resample_pretrained=True,
        needs_pretrained=True,
    ),
]

_TEXT_QUICK_DOC = (
    "A small causal {what} on the Python documentation text that ships with the standard library "
    "(offline; crate_edu.text corpus python-docs), character by character, on a laptop CPU in "
    "minutes. {model}: {shape}. Windows of 128 characters side by side (3,270 for training, the first"
    " 90 % of the text; 363 for validation, the last 10 %), 3 epochs of 102 steps of batch 32, AdamW "
    "at 2e-3 with betas (0.9, 0.95) and weight decay 0.1 on the matrices (nanoGPT's and the official "
    "CRATE-LM's grouping), half an epoch of warm-up, cosine decay to a tenth, clipping 1.0, one CPU "
    "thread. {pair} Measured by benchmarks/language_quick.py: validation bits per character, time and"
    " samples over three seeds for both recipes in benchmarks/results/language_quick.json and the "
    "README's recipe table."
)
_TEXT_QUICK = dict(
    dataset="python-docs",
    tokenizer="char",
    epochs=3,
    batch_size=32,
    optimizer="adamw",
    lr=2e-3,
    betas=(0.9, 0.95),
    weight_decay=0.1,
    decay_mask="matrices",
    warmup_epochs=0.5,
    min_lr_ratio=0.1,
    grad_clip=1.0,
    threads=1,
)

_RECIPES += [
    Recipe(
        name="text-quick",
        summary="small causal CRATE language model on offline Python documentation text, CPU minutes",
        doc=_TEXT_QUICK_DOC.format(
            what="CRATE language model",
            model="crate_lm_char",
            shape="4 layers of causal MSSA and CRATE-LM's overcomplete ISTA block (dim 128, 4 heads, "
            "512 dictionary atoms)",
            pair="text-quick-gpt trains the GPT baseline of the same widths on the same budget.",
        ),
        model="crate_lm_char",
        **_TEXT_QUICK,
    ),
    Recipe(
        name="text-quick-gpt",
        summary="the GPT baseline of text-quick: same widths, data and budget",
        doc=_TEXT_QUICK_DOC.format(
            what="GPT (the baseline of text-quick)",
            model="gpt_lm_char",
            shape="4 layers of causal attention and a ReLU MLP (dim 128, 4 heads, 512 hidden units)",
            pair="The same data, budget and optimiser as text-quick, for a like-for-like comparison.",
        ),
        model="gpt_lm_char",
        **_TEXT_QUICK,
    ),
]

#: Every recipe by name.
RECIPES: dict[str, Recipe] = {r.name: r for r in _RECIPES}
#: The recipe that ``crate-edu train`` runs when given no arguments.
DEFAULT_RECIPE = "digits-quick"


def list_recipes() -> list[str]:
    """Recipe names, in the order of :data:`RECIPES`."""
    return list(RECIPES)


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        ConfigError: unknown name (the message lists the valid ones).
    """
    if name not in RECIPES:
        raise choice_error(name, list_recipes(), "recipe")
    return RECIPES[name]
