"""CRATE, CRATE-α, CRATE-α-CLIPA, CRATE-MAE and a ViT baseline, their blocks, and a timm-style
registry.

One file per model, read top to bottom next to its paper: ``crate.py`` (patch embedding, MSSA,
ISTA, the layer, CRATE), ``crate_alpha.py``, ``crate_alpha_clipa.py`` (the image–text model),
``crate_mae.py``, ``vit.py``. ``base.py`` holds the shell they share (checks, the classifier
interface, the layer stack); ``fast.py`` the fast path (attention kernels, folded ISTA, the pruned
last layer); ``registry.py`` the presets.
"""

from crate_edu.models import fast
from crate_edu.models.base import (
    AttentionParts,
    Block,
    ClassifierConfig,
    ImageClassifier,
    LayerTrace,
    PreNorm,
    Transformer,
    set_reference,
)
from crate_edu.models.crate import CRATE, ISTA, MSSA, CRATEConfig, CRATELayer, PatchEmbedding
from crate_edu.models.crate_alpha import (
    ABLATION,
    SPARSE_CODINGS,
    CRATEAlpha,
    CRATEAlphaConfig,
    CRATEAlphaLayer,
    OvercompleteISTA,
    SparseCodes,
)
from crate_edu.models.crate_alpha_clipa import CRATEAlphaCLIPA, CRATEAlphaCLIPAConfig
from crate_edu.models.crate_mae import (
    CRATEMAE,
    CRATEDecoderLayer,
    CRATEMAEConfig,
    LinearDictionary,
    patchify,
    random_masking,
    sincos_pos_embed_2d,
    unpatchify,
)
from crate_edu.models.fast import ATTENTION_KERNELS, set_attention_kernel, shared_qkv_attention
from crate_edu.models.registry import (
    ModelSpec,
    create_model,
    list_models,
    model_config,
    model_spec,
    register_model,
)
from crate_edu.models.vit import Attention, FeedForward, ViT, ViTConfig, ViTLayer
from crate_edu.renamed import renamed_name

__all__ = [
    # models and their configs
    "CRATE",
    "CRATEConfig",
    "CRATEAlpha",
    "CRATEAlphaConfig",
    "CRATEAlphaCLIPA",
    "CRATEAlphaCLIPAConfig",
    "CRATEMAE",
    "CRATEMAEConfig",
    "ViT",
    "ViTConfig",
    "ClassifierConfig",
    "ImageClassifier",
    # blocks and layers
    "PatchEmbedding",
    "MSSA",
    "ISTA",
    "CRATELayer",
    "OvercompleteISTA",
    "CRATEAlphaLayer",
    "SPARSE_CODINGS",
    "ABLATION",
    "LinearDictionary",
    "CRATEDecoderLayer",
    "Attention",
    "FeedForward",
    "ViTLayer",
    "Block",
    "PreNorm",
    "Transformer",
    "LayerTrace",
    "AttentionParts",
    "SparseCodes",
    # CRATE-MAE's patches and masking
    "patchify",
    "unpatchify",
    "random_masking",
    "sincos_pos_embed_2d",
    # the reference and fast paths
    "set_reference",
    "fast",
    "ATTENTION_KERNELS",
    "set_attention_kernel",
    "shared_qkv_attention",
    # the registry
    "ModelSpec",
    "create_model",
    "list_models",
    "model_config",
    "model_spec",
    "register_model",
]


def __getattr__(name: str):
    """Names of crate_edu 0.1 that were renamed answer with their new name (crate_edu.renamed)."""
    renamed_name(__name__, name)
