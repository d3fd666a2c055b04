"""The run configuration of :func:`crate_edu.train.train` and its checks.

A :class:`TrainConfig` is plain data (numbers, strings, a dict of model overrides), so that it can be
written as JSON next to the run and stored inside the checkpoint; ``--resume`` rebuilds the run from it.
Every check raises :class:`ConfigError` with one line that says what was wrong and what is valid;
the command line prints that line and exits non-zero.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any

from crate_edu.device import PRECISIONS
from crate_edu.errors import ConfigError

__all__ = [
    "DATA_ON_DEVICE",
    "DECAY_MASKS",
    "NORMALIZATIONS",
    "OPTIMIZERS",
    "RESUMABLE_OVERRIDES",
    "SMOOTHING_STYLES",
    "TrainConfig",
    "check_config",
    "choice_error",
    "classifier_models",
    "finite_number",
    "TOKENIZERS",
    "image_size_of",
    "is_language_model",
    "language_models",
    "min_lr_ratio_of",
    "model_kwargs",
    "tokenizer_vocab_size",
]

#: Optimisers by name: ``lion`` (lion-pytorch, the official ImageNet recipe), ``adamw`` (the official
#: fine-tuning recipe) and ``sgd`` (with momentum).
OPTIMIZERS: tuple[str, ...] = ("lion", "adamw", "sgd")
#: Input normalisations: the dataset's own statistics, or ImageNet's.
NORMALIZATIONS: tuple[str, ...] = ("dataset", "imagenet")
#: Where the training data lives: ``auto`` keeps small in-memory image datasets on a CUDA device and
#: augments them there (:mod:`crate_edu.data.loader`), ``yes`` insists (any device, CPU included),
#: ``no`` always uses a ``DataLoader``.
DATA_ON_DEVICE: tuple[str, ...] = ("auto", "yes", "no")
#: Which parameters weight decay applies to: ``all`` (the official CRATE scripts), or ``kernels``:
#: only the weight matrices of Linear and Conv layers (big_vision's default mask ``.*/kernel$``,
#: used by the official CRATE-α recipes), not the ISTA dictionaries, tokens, LayerNorms or biases;
#: or ``matrices``: every parameter of two or more dimensions, embeddings and dictionaries included,
#: not biases or LayerNorms (nanoGPT's grouping, used by the official CRATE-LM).
DECAY_MASKS: tuple[str, ...] = ("all", "kernels", "matrices")
#: Forms of label smoothing ε over K classes: ``torch`` (the true class 1 − ε + ε/K, every other
#: ε/K: ``F.cross_entropy(label_smoothing=ε)``) or ``big_vision`` (the true class 1 − ε, every
#: other ε/K, so the targets add up to 1 − ε/K: the official CRATE-α fine-tuning's one-hot
#: ``on=0.9, off=0.1/1000``).
SMOOTHING_STYLES: tuple[str, ...] = ("torch", "big_vision")
#: Tokenizers of a language-model run (:func:`crate_edu.text.get_tokenizer`): ``char`` (a fixed
#: vocabulary of printable ASCII characters), ``byte`` (UTF-8 bytes) and ``gpt2`` (GPT-2's byte-level
#: BPE, the published CRATE-LM's; the optional extra ``language``).
TOKENIZERS: tuple[str, ...] = ("char", "byte", "gpt2")
#: Fields that may differ when a run is resumed (they do not change the computation, except
#: ``epochs``, which stretches the schedule and is allowed with a warning).
RESUMABLE_OVERRIDES: tuple[str, ...] = (
    "data_dir",
    "download",
    "num_workers",
    "threads",
    "progress",
    "grad_accum",  # the same steps, in more or fewer passes (e.g. resuming on fewer GPUs)
    "compile",  # the same arithmetic, compiled or not
    "epochs",
)


def choice_error(value: str, valid: list[str] | tuple[str, ...], what: str) -> ConfigError:
    """The one-line error for an unknown name: close matches, then every valid choice."""
    close = difflib.get_close_matches(str(value), list(valid), n=3)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return ConfigError(f"unknown {what} {value!r}{hint}; choose one of: {', '.join(valid)}")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Recipes (:mod:`crate_edu.train.recipes`) fill it in.

    Attributes:
        model: a classifier or language-model name of ``crate_edu.list_models()``.
        dataset: a name of ``crate_edu.data.list_datasets()``, or for a language model a corpus of
            ``crate_edu.text.list_corpora()``.
        epochs: number of passes over the train split (the schedule spans all of them).
        batch_size: GLOBAL batch size, summed over all processes (as in the official ``main.py``);
            with N processes each one sees ``batch_size / N`` images a step.
        grad_accum: gradient accumulation: each optimiser step adds up the gradients of this many
            forward passes of ``batch_size / grad_accum`` images, so one GPU can reproduce the
            official 2,048-image batch that eight GPUs hold at once.
        optimizer: one of :data:`OPTIMIZERS`.
        lr: peak learning rate, reached after the warm-up. It is used as given: not scaled with the
            batch size (the official scripts do not scale it either).
        weight_decay: decoupled weight decay (AdamW, Lion) or L2 penalty (SGD), on every parameter as
            in the official scripts.
        momentum: SGD momentum (ignored by the others).
        betas: Adam/Lion betas; None for the optimiser's defaults ((0.9, 0.999) AdamW, (0.9, 0.99) Lion).
        warmup_epochs: linear warm-up length in epochs (may be fractional); the learning rate then
            follows a cosine from ``lr`` to ``lr * min_lr_ratio``, updated every step.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        min_lr: final learning rate in absolute terms (the official CRATE-α ``min_lr``); when set,
            it replaces ``min_lr_ratio`` (which must then be left at 0).
        decay_mask: one of :data:`DECAY_MASKS`: which parameters ``weight_decay`` applies to.
        label_smoothing: label smoothing of the training cross-entropy (0 for none).
        smoothing_style: one of :data:`SMOOTHING_STYLES`: how ``label_smoothing`` forms the targets.
        mixup_alpha, cutmix_alpha: mix the images and labels of each training batch with the
            batch in reverse order (:mod:`crate_edu.train.mixing`): mixup with λ ~ Beta(a, a),
            CutMix with λ ~ Beta(a, a) (then recomputed from the pasted box's area); 0 turns each
            off. With both on, each step picks mixup with probability ``mix_switch_prob``.
        mix_switch_prob: probability of mixup rather than CutMix when both are on.
        randaugment_magnitude: the RandAugment magnitude of the policies that have one (None: the
            policy's own, 14 of 30 for ``randaugment``, 9 of 10 for ``imagenet-randaugment``).
        resample_pretrained: when ``pretrained`` weights were made for another image size or
            patch size, resample their position embeddings (and resize their patch embedding) to
            the run's, as the official CRATE-α fine-tuning does; False refuses such weights.
        grad_clip: clip the global gradient norm to this value; None for no clipping.
        image_size: side of the images in pixels; None for the dataset's default size.
        augment: a training augmentation policy of ``crate_edu.data`` (``none``, ``cifar``,
            ``shift``, ``randaugment``, ``imagenet``); None for the dataset's default.
        normalize: input normalisation: None or ``'dataset'`` for the dataset's own mean/std,
            ``'imagenet'`` for ImageNet's (what the official ``finetune.py`` uses for every dataset,
            and what ImageNet-pretrained weights expect).
        compile: ``torch.compile`` the model with this backend (``'inductor'``; None: eager).
        model_overrides: extra ``create_model`` options (``depth``, ``dim``, ``heads``,
            ``patch_size``, ``pool``, ``dropout``, ...).
        pretrained: initial weights: an official checkpoint file (read with ``load_official``), a
            checkpoint of this trainer, or the key of published weights (downloaded). The classifier
            head is replaced when the number of classes differs.
        precision: one of :data:`crate_edu.device.PRECISIONS`.
        seed: seeds Python, NumPy and torch; the order of the training images is a function of
            (seed, epoch) alone.
        data_dir: root folder of the datasets (None: ``crate_edu.data.default_data_dir()``).
        download: download a missing dataset where its source allows it.
        num_workers: data-loading processes per training process (None: 0 on CPU, else up to 8).
        threads: CPU threads of torch in each process (None: torch's default). The small models
            run their small matrix products no faster on several threads, and on a busy machine
            ``1`` can be several times faster than the default.
        eval_batch_size: batch size of the evaluation (None: ``batch_size``).
        limit_train, limit_test: use a fixed random subset of this many images (for smoke tests and
            quick experiments; the subset does not depend on ``seed``).
        recipe: name of the recipe the defaults came from (informational).
        progress: show a progress bar (None: only when stderr is a terminal).
        tokenizer: one of :data:`TOKENIZERS`: how a language model's corpus becomes token ids (the
            model's vocabulary is set to the tokenizer's). Ignored by classifiers.
        data_on_device: one of :data:`DATA_ON_DEVICE`. With the data on the device, the uint8 images
            of an in-memory dataset (CIFAR, digits, cluttered-digits; policies ``none``, ``cifar``,
            ``shift`` at the stored size) are copied to the training device once and every batch is
            cut, augmented and normalised there (:class:`crate_edu.data.loader.DeviceImageLoader`):
            the same images in the same steps as the ``DataLoader``, but crops and flips drawn from
            a generator seeded by (seed, epoch, process), not from the global one. ``auto``: on for
            CUDA when the datasets allow it and fit in a quarter of the GPU's memory; ``yes``: on for
            any device, an error if the datasets do not allow it. Not changeable on ``--resume``
            (the two paths draw different crops and flips).
    """

    model: str = "crate_nano_cifar"
    dataset: str = "digits"
    epochs: int = 10
    batch_size: int = 128
    grad_accum: int = 1
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    betas: tuple[float, float] | None = None
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    min_lr: float | None = None
    decay_mask: str = "all"
    label_smoothing: float = 0.0
    smoothing_style: str = "torch"
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_switch_prob: float = 0.5
    randaugment_magnitude: float | None = None
    resample_pretrained: bool = False
    grad_clip: float | None = None
    image_size: int | None = None
    augment: str | None = None
    normalize: str | None = None
    compile: str | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    precision: str = "auto"
    seed: int = 0
    data_dir: str | None = None
    download: bool = False
    num_workers: int | None = None
    threads: int | None = None
    eval_batch_size: int | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    recipe: str | None = None
    progress: bool | None = None
    data_on_device: str = "auto"
    tokenizer: str = "char"

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-friendly plain values."""
        d = dataclasses.asdict(self)
        if d["betas"] is not None:
            d["betas"] = list(d["betas"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys (from a newer version) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if kw.get("betas") is not None:
            kw["betas"] = tuple(kw["betas"])
        if "model_overrides" in kw:
            kw["model_overrides"] = dict(kw["model_overrides"])
        return cls(**kw)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (``None`` values are kept: use it to reset a field)."""
        return dataclasses.replace(self, **changes)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite_number(name: str, value: Any, hint: str = "") -> None:
    """Raise ConfigError unless ``value`` is a finite int or float (NaN and ±inf are refused: an
    infinite learning rate trains nothing and fills the metrics with NaN)."""
    flag = name.replace("_", "-")
    if not _is_number(value):
        raise ConfigError(f"{flag} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        extra = f"; {hint}" if hint else ""
        raise ConfigError(f"{flag} must be a finite number, got {value!r}{extra}")


def classifier_models() -> list[str]:
    """The image classifiers the trainer accepts (the MAE models, the CRATE-α-CLIPA image–text
    models and the language models are excluded)."""
    from crate_edu.models import list_models

    language = set(language_models())
    return [m for m in list_models() if "_mae" not in m and "_clipa" not in m and m not in language]


def language_models() -> list[str]:
    """The causal language models the trainer accepts (next-token prediction on a text corpus)."""
    from crate_edu.models import list_models, model_spec

    return [m for m in list_models() if model_spec(m).task == "language"]


def is_language_model(cfg: TrainConfig) -> bool:
    """Whether ``cfg`` trains a language model (on a text corpus) rather than a classifier."""
    return cfg.model in language_models()


def check_config(cfg: TrainConfig) -> TrainConfig:
    """Check every field that can be checked without loading data; return ``cfg``.

    Names first, then counts, then the other numbers, then the model's options.

    Raises:
        ConfigError: the first bad value, with the valid choices.
    """
    from crate_edu.models import model_config

    _check_names(cfg)
    _check_counts(cfg)
    _check_numbers(cfg)
    try:
        model_config(cfg.model, **model_kwargs(cfg))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model {cfg.model!r}: {e}") from None
    return cfg


def _check_names(cfg: TrainConfig) -> None:
    """Model, dataset, optimiser, precision, augmentation, normalisation, data placement, compiler."""
    from crate_edu.data import POLICIES

    if cfg.model in language_models():
        _check_language_names(cfg)
    else:
        _check_classifier_names(cfg)
    if cfg.optimizer not in OPTIMIZERS:
        raise choice_error(cfg.optimizer, OPTIMIZERS, "optimizer")
    if cfg.precision not in PRECISIONS:
        raise choice_error(cfg.precision, PRECISIONS, "precision")
    if cfg.augment is not None and cfg.augment not in POLICIES:
        raise choice_error(cfg.augment, POLICIES, "augmentation policy")
    if cfg.normalize is not None and cfg.normalize not in NORMALIZATIONS:
        raise choice_error(cfg.normalize, NORMALIZATIONS, "normalisation")
    if cfg.decay_mask not in DECAY_MASKS:
        raise choice_error(cfg.decay_mask, DECAY_MASKS, "weight-decay mask")
    if cfg.smoothing_style not in SMOOTHING_STYLES:
        raise choice_error(cfg.smoothing_style, SMOOTHING_STYLES, "label-smoothing style")
    if cfg.data_on_device not in DATA_ON_DEVICE:
        raise choice_error(cfg.data_on_device, DATA_ON_DEVICE, "data-on-device setting")
    if cfg.compile is not None and not (isinstance(cfg.compile, str) and cfg.compile):
        raise ConfigError(
            f"compile must name a torch.compile backend such as 'inductor', got {cfg.compile!r}"
        )


def _check_classifier_names(cfg: TrainConfig) -> None:
    """An image classifier on an image dataset."""
    from crate_edu.data import list_datasets
    from crate_edu.models import list_models

    models = classifier_models() + language_models()
    if cfg.model not in models:
        if cfg.model in list_models():
            raise ConfigError(
                f"model {cfg.model!r} is "
                + ("an image–text model" if "_clipa" in cfg.model else "a masked autoencoder")
                + "; the trainer trains classifiers and language models. "
                f"Choose one of: {', '.join(models)}"
            )
        raise choice_error(cfg.model, models, "model")
    if cfg.dataset not in list_datasets():
        raise choice_error(cfg.dataset, list_datasets(), "dataset")


#: Fields of a classification run that mean nothing to a language model, with their defaults.
_IMAGE_ONLY = {
    "image_size": None,
    "augment": None,
    "normalize": None,
    "mixup_alpha": 0.0,
    "cutmix_alpha": 0.0,
    "randaugment_magnitude": None,
    "resample_pretrained": False,
    "pretrained": None,
}


def _check_language_names(cfg: TrainConfig) -> None:
    """A language model on a text corpus, with a known tokenizer and no image options."""
    from crate_edu.text import list_corpora

    if cfg.dataset not in list_corpora():
        raise ConfigError(
            f"{cfg.model} is a language model and trains on a text corpus, not {cfg.dataset!r}; "
            f"choose --dataset from: {', '.join(list_corpora())}"
        )
    if cfg.tokenizer not in TOKENIZERS:
        raise choice_error(cfg.tokenizer, TOKENIZERS, "tokenizer")
    vocab, needed = cfg.model_overrides.get("vocab_size"), tokenizer_vocab_size(cfg.tokenizer)
    if vocab is not None and (not isinstance(vocab, int) or vocab < needed):
        raise ConfigError(
            f"vocab_size {vocab!r} is smaller than the {cfg.tokenizer} tokenizer's {needed} ids; "
            "leave it out (the model takes the tokenizer's) or make it larger"
        )
    for name, default in _IMAGE_ONLY.items():
        if getattr(cfg, name) != default:
            raise ConfigError(
                f"{name.replace('_', '-')} is an image option and {cfg.model} is a language model; "
                "leave it out"
            )


def _positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")


def _check_counts(cfg: TrainConfig) -> None:
    """Epochs, batch sizes, gradient accumulation, subset sizes, image size, threads, workers."""
    _positive_int("epochs", cfg.epochs)
    _positive_int("batch_size", cfg.batch_size)
    _positive_int("grad_accum", cfg.grad_accum)
    if cfg.batch_size % cfg.grad_accum:
        raise ConfigError(
            f"batch-size {cfg.batch_size} must be a multiple of grad-accum {cfg.grad_accum} (each of the "
            f"{cfg.grad_accum} forward passes takes batch-size / grad-accum images)"
        )
    for name in ("eval_batch_size", "limit_train", "limit_test", "image_size", "threads"):
        _positive_int(name, getattr(cfg, name), allow_none=True)
    if cfg.num_workers is not None and (not isinstance(cfg.num_workers, int) or cfg.num_workers < 0):
        raise ConfigError(f"num-workers must be 0 or more, got {cfg.num_workers!r}")


def _check_numbers(cfg: TrainConfig) -> None:
    """Learning rate and schedule, weight decay, momentum, betas, smoothing, mixing, clipping, seed."""
    names = ("lr", "weight_decay", "momentum", "warmup_epochs", "min_lr_ratio", "label_smoothing")
    for name in (*names, "mixup_alpha", "cutmix_alpha", "mix_switch_prob"):
        finite_number(name, getattr(cfg, name))
    for name in ("min_lr", "randaugment_magnitude"):
        if getattr(cfg, name) is not None:
            finite_number(name, getattr(cfg, name))
    if cfg.grad_clip is not None:
        finite_number("grad_clip", cfg.grad_clip, "0 on the command line (None in Python): no clipping")
    if not cfg.lr > 0:
        raise ConfigError(f"lr must be positive, got {cfg.lr!r}")
    if not cfg.weight_decay >= 0:
        raise ConfigError(f"weight-decay must be 0 or more, got {cfg.weight_decay!r}")
    if not 0 <= cfg.momentum < 1:
        raise ConfigError(f"momentum must be in [0, 1) (SGD's usual value: 0.9), got {cfg.momentum!r}")
    if not 0 <= cfg.label_smoothing < 1:
        raise ConfigError(f"label-smoothing must be in [0, 1), got {cfg.label_smoothing!r}")
    if cfg.grad_clip is not None and not cfg.grad_clip > 0:
        raise ConfigError(f"grad-clip must be positive (or left out for no clipping), got {cfg.grad_clip!r}")
    if not 0 <= cfg.warmup_epochs <= cfg.epochs:
        raise ConfigError(
            f"warmup-epochs must be between 0 and epochs ({cfg.epochs}), got {cfg.warmup_epochs!r}"
        )
    if not 0 <= cfg.min_lr_ratio <= 1:
        raise ConfigError(f"min-lr-ratio must be in [0, 1], got {cfg.min_lr_ratio!r}")
    if cfg.min_lr is not None and not (0 <= cfg.min_lr <= cfg.lr and cfg.min_lr_ratio == 0):
        raise ConfigError(f"min-lr must be in [0, lr = {cfg.lr:g}] and min-lr-ratio 0, got {cfg.min_lr!r}")
    if not (cfg.mixup_alpha >= 0 and cfg.cutmix_alpha >= 0 and 0 <= cfg.mix_switch_prob <= 1):
        raise ConfigError(
            f"mixup-alpha and cutmix-alpha must be 0 (off) or positive and mix-switch-prob in [0, 1], got "
            f"{cfg.mixup_alpha!r}, {cfg.cutmix_alpha!r}, {cfg.mix_switch_prob!r}"
        )
    m = cfg.randaugment_magnitude
    if m is not None and not 0 <= m <= (10 if cfg.augment == "imagenet-randaugment" else 30):
        raise ConfigError(
            f"randaugment-magnitude must be in [0, 10] for imagenet-randaugment (timm's scale) and [0, 30] "
            f"for randaugment (torchvision's), got {m!r}"
        )
    if not isinstance(cfg.resample_pretrained, bool):
        raise ConfigError(f"resample-pretrained must be True or False, got {cfg.resample_pretrained!r}")
    if cfg.betas is not None and not (
        isinstance(cfg.betas, (tuple, list))
        and len(cfg.betas) == 2
        and all(_is_number(b) and 0 <= b < 1 for b in cfg.betas)
    ):
        raise ConfigError(f"betas must be two numbers in [0, 1), got {cfg.betas!r}")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"seed must be an integer from 0 to 2**32 - 1 (NumPy's range), got {cfg.seed!r}")


def image_size_of(cfg: TrainConfig) -> int | None:
    """The image side the run uses: ``cfg.image_size``, else the dataset's default size (None for a
    language model)."""
    from crate_edu.data import dataset_info

    if is_language_model(cfg):
        return None
    return int(cfg.image_size) if cfg.image_size is not None else dataset_info(cfg.dataset).image_size


def min_lr_ratio_of(cfg: TrainConfig) -> float:
    """The final learning rate as a fraction of ``lr``: ``min_lr / lr`` when ``min_lr`` is set,
    else ``min_lr_ratio``."""
    return cfg.min_lr / cfg.lr if cfg.min_lr is not None else cfg.min_lr_ratio


def tokenizer_vocab_size(name: str) -> int:
    """The number of token ids of the tokenizer ``name`` (no vocabulary file is read)."""
    from crate_edu.text import GPT2_VOCAB_SIZE, ByteTokenizer, CharTokenizer

    sizes = {"char": CharTokenizer.vocab_size, "byte": ByteTokenizer.vocab_size, "gpt2": GPT2_VOCAB_SIZE}
    if name not in sizes:
        raise choice_error(name, TOKENIZERS, "tokenizer")
    return sizes[name]


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """``create_model`` keyword arguments of a run: its overrides, image size and number of classes
    (for a language model: its overrides and the tokenizer's vocabulary size).

    The model is always built for the run's image size and the dataset's number of classes, so that
    e.g. ``crate_small`` (224 px) trained on CIFAR-10 gets a 10-way head and a position embedding of
    the right length.
    """
    from crate_edu.data import dataset_info

    kw: dict[str, Any] = dict(cfg.model_overrides)
    if is_language_model(cfg):  # the vocabulary is the tokenizer's (or larger: padded, as nanoGPT does)
        kw.setdefault("vocab_size", tokenizer_vocab_size(cfg.tokenizer))
        return kw
    kw["image_size"] = image_size_of(cfg)
    kw["num_classes"] = dataset_info(cfg.dataset).num_classes
    return kw
