"""CRATE, CRATE-α, CRATE-α-CLIPA, CRATE-MAE, CRATE-LM, ToST, a ViT and a GPT baseline, their blocks,
and a timm-style registry.

One file per model, read top to bottom next to its paper: ``crate.py`` (patch embedding, MSSA,
ISTA, the layer, CRATE), ``crate_alpha.py``, ``crate_alpha_clipa.py`` (the image–text model),
``crate_mae.py``, ``vit.py``, ``tost.py`` (ToST's linear-time TSSA, its causal form, the ToST
classifier), and for language ``crate_lm.py`` (the causal CRATE language model) and ``gpt.py``
(its GPT baseline). ``base.py`` holds the shell they share (checks, the classifier
interface, the layer stack), ``language.py`` the language models' (token checks, generation);
``fast.py`` the fast path (attention kernels, folded ISTA, the pruned last layer); ``registry.py``
the presets.
"""

from crate_edu.models import fast
from crate_edu.models.aot import AoT, AoTConfig, AoTLayer, snr_by_layer, token_snr
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
from crate_edu.models.crate_lm import (
    ATTENTION_KINDS,
    ISTA_KINDS,
    CausalMSSA,
    CRATELanguageModel,
    CRATELMBlock,
    CRATELMConfig,
    TiedOvercompleteISTA,
)
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
from crate_edu.models.gpt import GPT, GPTMLP, CausalSelfAttention, GPTBlock, GPTConfig
from crate_edu.models.language import LanguageModel, LMConfig, LMLayerTrace, check_tokens
from crate_edu.models.redunet import LayerRates, ReduLayer, ReduNet, build_redunet
from crate_edu.models.registry import (
    TASKS,
    ModelSpec,
    create_model,
    list_models,
    model_config,
    model_spec,
    register_model,
)
from crate_edu.models.tost import (
    TSSA,
    CausalTSSA,
    ToST,
    ToSTConfig,
    causal_tssa_update,
    tssa_update,
    variational_compression_rate,
    weighted_compression_rate,
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
    "CRATELanguageModel",
    "CRATELMConfig",
    "GPT",
    "GPTConfig",
    "ToST",
    "ToSTConfig",
    "LanguageModel",
    "LMConfig",
    # ReduNet: built forward from data, not trained (no preset)
    "ReduNet",
    "AoT",
    "AoTConfig",
    "AoTLayer",
    "snr_by_layer",
    "token_snr",
    "ReduLayer",
    "LayerRates",
    "build_redunet",
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
    "CausalMSSA",
    "TiedOvercompleteISTA",
    "CRATELMBlock",
    "ISTA_KINDS",
    "ATTENTION_KINDS",
    "TSSA",
    "CausalTSSA",
    # ToST's derivation: the variational compression term and TSSA's update
    "variational_compression_rate",
    "weighted_compression_rate",
    "tssa_update",
    "causal_tssa_update",
    "CausalSelfAttention",
    "GPTMLP",
    "GPTBlock",
    "LMLayerTrace",
    "check_tokens",
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
    "TASKS",
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
