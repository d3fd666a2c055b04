"""Model registry: ``create_model(name, **overrides)`` and ``list_models()``, timm-style.

Every preset is a family class plus a frozen config; ``create_model`` applies overrides with
``dataclasses.replace`` so a bad value is caught by the config's own checks. The official presets
(``crate_*``, ``crate_alpha_*``, ``crate_alpha_clipa_*``, ``crate_mae_*``) match the published
configurations exactly (docs/design.md); the ``*_cifar`` presets are for 32×32 images (patch 4;
override ``patch_size=2`` for finer tokens). The language models (``crate_lm_*``, ``gpt_lm_*``)
read token ids instead of images; ``ModelSpec.task`` says what each preset does
(:data:`TASKS`), and ``list_models(task="classification")`` lists the image classifiers only.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, fields, replace

from torch import nn

from crate_edu.models.base import check_renamed
from crate_edu.models.crate import CRATE, CRATEConfig
from crate_edu.models.crate_alpha import CRATEAlpha, CRATEAlphaConfig
from crate_edu.models.crate_alpha_clipa import CRATEAlphaCLIPA, CRATEAlphaCLIPAConfig
from crate_edu.models.crate_lm import CRATELanguageModel, CRATELMConfig
from crate_edu.models.crate_mae import CRATEMAE, CRATEMAEConfig
from crate_edu.models.gpt import GPT, GPTConfig
from crate_edu.models.tost import ToST, ToSTConfig
from crate_edu.models.vit import ViT, ViTConfig

__all__ = [
    "TASKS",
    "ModelSpec",
    "create_model",
    "list_models",
    "model_config",
    "model_spec",
    "register_model",
]

#: What a preset does (``ModelSpec.task``): ``classification`` (images -> class logits: CRATE,
#: CRATE-α, ViT), ``masked-autoencoding`` (CRATE-MAE), ``image-text`` (CRATE-α-CLIPA) or
#: ``language`` (token ids -> next-token logits: CRATE-LM and its GPT baseline).
TASKS: tuple[str, ...] = ("classification", "masked-autoencoding", "image-text", "language")


@dataclass(frozen=True)
class ModelSpec:
    """A registered preset: the model class, its config and where the configuration comes from.

    ``task`` is one of :data:`TASKS`: what the model reads and what it is trained for, so that a
    trainer can tell an image classifier from a language model.
    """

    name: str
    cls: type[nn.Module]
    config: object
    description: str
    official: str | None = None  # the official constructor this preset reproduces, if any
    task: str = "classification"


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    cls: type[nn.Module],
    config: object,
    description: str,
    official: str | None = None,
    task: str = "classification",
):
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is already registered")
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    _REGISTRY[name] = ModelSpec(name, cls, config, description, official, task)


def list_models(pattern: str | None = None, task: str | None = None) -> list[str]:
    """Registered names, sorted; ``pattern`` is a shell-style filter such as ``'crate_mae_*'``,
    ``task`` keeps the presets of one task (:data:`TASKS`), e.g. ``task="language"``."""
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    names = sorted(n for n in _REGISTRY if task is None or _REGISTRY[n].task == task)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def model_spec(name: str) -> ModelSpec:
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"unknown model {name!r}; {hint}valid names: {', '.join(list_models())}")
    return _REGISTRY[name]


def model_config(name: str, **overrides):
    """The preset's config with ``overrides`` applied (validated), without building the model."""
    spec = model_spec(name)
    check_renamed(f"create_model('{name}')", overrides)
    valid = [f.name for f in fields(spec.config)]
    unknown = [k for k in overrides if k not in valid]
    if unknown:
        raise TypeError(
            f"{name} has no option(s) {', '.join(map(repr, unknown))}; valid options: {', '.join(valid)}"
        )
    return replace(spec.config, **overrides)


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model, e.g. ``create_model('crate_small', num_classes=10, image_size=32)``.

    Any config field can be overridden (``num_classes``, ``image_size``, ``patch_size``, ``depth``,
    ``pool``, ``dim``, ``heads``, ``dropout``, ``eta``, ``lambd``, ``reference``, ...). Weights are
    randomly initialised as in the official code; for published weights use
    ``crate_edu.load_official``.
    """
    spec = model_spec(name)
    return spec.cls(model_config(name, **overrides))


# ------------------------------------------------------------------------------------- presets
_CRATE = {"tiny": (384, 12, 6), "small": (576, 12, 12), "base": (768, 12, 12), "large": (1024, 24, 16)}
for size, (dim, depth, heads) in _CRATE.items():
    register_model(
        f"crate_{size}",
        CRATE,
        CRATEConfig(image_size=224, patch_size=16, num_classes=1000, dim=dim, depth=depth, heads=heads),
        f"CRATE-{size[0].upper()}/16, 224 px, ImageNet-1K head (official config)",
        official=f"model/crate.py:CRATE_{size}",
    )
    register_model(
        f"crate_mae_{size}",
        CRATEMAE,
        CRATEMAEConfig(
            image_size=224,
            patch_size=16,
            dim=dim,
            depth=depth,
            heads=heads,
            decoder_depth=depth,
            decoder_heads=heads,
        ),
        f"CRATE-MAE-{size[0].upper()}/16 masked autoencoder, 224 px (official config)",
        official=f"model/crate_ae/crate_ae.py:mae_crate_{size}",
        task="masked-autoencoding",
    )

register_model(
    "crate_alpha_b16",
    CRATEAlpha,
    CRATEAlphaConfig(image_size=224, patch_size=16, dim=768, depth=12, heads=12),
    "CRATE-α-B/16, 224 px, ImageNet-1K head (official config)",
    official="torch_inference/model/crate_alpha.py:CRATE_base",
)
register_model(
    "crate_alpha_l14",
    CRATEAlpha,
    CRATEAlphaConfig(image_size=224, patch_size=14, dim=1024, depth=24, heads=16),
    "CRATE-α-L/14, 224 px, ImageNet-1K head (official config)",
    official="torch_inference/model/crate_alpha.py:CRATE_large",
)
# CRATE-α-CLIPA image–text models: vision "L" or "H", both with the text tower "H" (1024 wide,
# 24 layers, 16 heads), context 32, vocabulary 32000, embedding 1024 (get_crate_clipa).
_CLIPA = {"l14": ("L", 1024, 24, 16), "h14": ("H", 1280, 32, 16)}
for size, (vision, width, depth, heads) in _CLIPA.items():
    register_model(
        f"crate_alpha_clipa_{size}",
        CRATEAlphaCLIPA,
        CRATEAlphaCLIPAConfig(
            image_size=224,
            patch_size=14,
            vision_width=width,
            vision_depth=depth,
            vision_heads=heads,
            context_length=32,
            vocab_size=32000,
            text_width=1024,
            text_depth=24,
            text_heads=16,
            embed_dim=1024,
        ),
        f"CRATE-α-CLIPA-{vision}/14 image–text model, 224 px, context 32 (official config)",
        official=f"torch_inference/model/clipa_model.py:get_crate_clipa (vision '{vision}', text 'H')",
        task="image-text",
    )
# The offline CLIPA demonstration (crate_edu.train.clip): a CPU-sized CRATE-α image tower for the
# 32-px captioned digits (3 layers, so that the trained weights stay under 2 MB) and a small text
# tower over their 52-word vocabulary (PAD, START and 50 words: crate_edu.data.caption_vocabulary;
# the data folder sits above models, so the size is written here and a test checks it). Trained
# with the learned temperature, so no fixed scale.
register_model(
    "crate_alpha_clipa_digits",
    CRATEAlphaCLIPA,
    CRATEAlphaCLIPAConfig(
        image_size=32,
        patch_size=4,
        vision_width=96,
        vision_depth=3,
        vision_heads=4,
        context_length=16,
        vocab_size=52,
        text_width=64,
        text_depth=2,
        text_heads=4,
        embed_dim=64,
        fixed_logit_scale=None,
    ),
    "CRATE-α-CLIPA for the 32×32 captioned digits: image tower 96 wide, 3 layers, patch 4; text "
    "tower 64 wide, 2 layers, context 16, 52-word vocabulary",
    task="image-text",
)
register_model(
    "vit_tiny", ViT, ViTConfig(dim=192, depth=12, heads=3), "ViT-T/16 baseline, 224 px (DeiT-T widths)"
)
register_model(
    "vit_small", ViT, ViTConfig(dim=384, depth=12, heads=6), "ViT-S/16 baseline, 224 px (DeiT-S widths)"
)

# 32×32 presets (CIFAR, digits): patch 4 gives 8×8 = 64 tokens.
_SMALL_IMAGES = dict(image_size=32, patch_size=4, num_classes=10)
_CIFAR = {
    "nano": (128, 6, 4),  # CPU-friendly: seconds per epoch on the offline digits
    "tiny": (384, 12, 6),
    "small": (576, 12, 12),
}
for size, (dim, depth, heads) in _CIFAR.items():
    register_model(
        f"crate_{size}_cifar",
        CRATE,
        CRATEConfig(dim=dim, depth=depth, heads=heads, **_SMALL_IMAGES),
        f"CRATE ({dim} wide, {depth} layers, {heads} heads) for 32×32 images, patch 4",
    )
for size in ("nano", "tiny"):
    dim, depth, heads = _CIFAR[size]
    register_model(
        f"crate_alpha_{size}_cifar",
        CRATEAlpha,
        CRATEAlphaConfig(dim=dim, depth=depth, heads=heads, **_SMALL_IMAGES),
        f"CRATE-α ({dim} wide, {depth} layers, {heads} heads) for 32×32 images, patch 4",
    )
_VIT_CIFAR = {"nano": (128, 6, 4), "tiny": (192, 12, 3), "small": (384, 12, 6)}
for size, (dim, depth, heads) in _VIT_CIFAR.items():
    register_model(
        f"vit_{size}_cifar",
        ViT,
        ViTConfig(dim=dim, depth=depth, heads=heads, **_SMALL_IMAGES),
        f"ViT baseline ({dim} wide, {depth} layers, {heads} heads, MLP 4×) for 32×32 images, patch 4",
    )
# ToST (crate_edu.models.tost): the official tost_cab_* presets (tost_vision/tost.py:450-492), and
# a CPU size for 32-px images whose patch-4 stem (two stride-2 stages) is this package's extension.
_TOST = {"tiny_12": (192, 12, 4, 1.0), "small_12": (384, 12, 8, 1.0), "medium_24": (512, 24, 8, 1e-5)}
for size, (dim, depth, heads, eta) in _TOST.items():
    register_model(
        f"tost_{size}_p16",
        ToST,
        ToSTConfig(
            image_size=224, patch_size=16, num_classes=1000, dim=dim, depth=depth, heads=heads, eta=eta
        ),
        f"ToST-{size[0].upper()}/16 ({depth} TSSA blocks), 224 px, ImageNet-1K head (official config)",
        official=f"tost_vision/tost.py:tost_cab_{size}_p16",
    )
register_model(
    "tost_nano_cifar",
    ToST,
    ToSTConfig(dim=128, depth=6, heads=4, **_SMALL_IMAGES),
    "ToST (128 wide, 6 TSSA blocks, 4 heads, 2 class-attention blocks) for 32×32 images, patch 4",
)
register_model(
    "crate_mae_nano_cifar",
    CRATEMAE,
    CRATEMAEConfig(image_size=32, patch_size=4, dim=128, depth=6, heads=4, decoder_depth=6, decoder_heads=4),
    "CRATE-MAE (128 wide, 6 + 6 layers, 4 heads) for 32×32 images, patch 4",
    task="masked-autoencoding",
)

# Language models (crate_edu.models.crate_lm, crate_edu.models.gpt). The 12-layer presets are the
# published CRATE-LM and its GPT baseline (docs/notes/crate_lm_official_code.md): GPT-2's BPE
# vocabulary padded to 50304, context 1024, d = 768, 12 heads; the GPT without biases, as the
# official train.py builds it. The character presets are CPU-sized, for
# crate_edu.text.CharTokenizer's 98 ids (printable ASCII, newline, tab, unknown; override
# vocab_size for another tokenizer).
_LM_12L = dict(vocab_size=50304, block_size=1024, dim=768, depth=12, heads=12)
_LM_CHAR = dict(vocab_size=98, block_size=128, dim=128, depth=4, heads=4)
register_model(
    "crate_lm_12l",
    CRATELanguageModel,
    CRATELMConfig(**_LM_12L),
    "CRATE-LM, 12 layers, 768 wide, context 1024, GPT-2 vocabulary (official config)",
    official="crate_overcomplete.py:CRATE (train.py's 12/12/768)",
    task="language",
)
register_model(
    "gpt_lm_12l",
    GPT,
    GPTConfig(**_LM_12L, bias=False),
    "GPT baseline of CRATE-LM (ReLU MLP), 12 layers, 768 wide, context 1024, GPT-2 vocabulary",
    official="gpt.py:GPT (train.py's 12/12/768, bias=False)",
    task="language",
)
register_model(
    "crate_lm_char",
    CRATELanguageModel,
    CRATELMConfig(**_LM_CHAR),
    "CRATE-LM for characters on a CPU: 4 layers, 128 wide, 4 heads, context 128, 98 ids",
    task="language",
)
register_model(
    "gpt_lm_char",
    GPT,
    GPTConfig(**_LM_CHAR, bias=False),
    "GPT baseline for characters on a CPU: 4 layers, 128 wide, 4 heads, context 128, 98 ids",
    task="language",
)
