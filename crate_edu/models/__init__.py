"""CRATE, CRATE-α, CRATE-MAE and a ViT baseline, with a timm-style registry."""

from crate_edu.models.crate import CRATE, CRATEConfig
from crate_edu.models.crate_alpha import CRATEAlpha, CRATEAlphaConfig
from crate_edu.models.crate_mae import CRATEMAE, CRATEMAEConfig
from crate_edu.models.registry import create_model, list_models, model_config, model_spec, register_model
from crate_edu.models.vit import ViT, ViTConfig

__all__ = [
    "CRATE",
    "CRATEConfig",
    "CRATEAlpha",
    "CRATEAlphaConfig",
    "CRATEMAE",
    "CRATEMAEConfig",
    "ViT",
    "ViTConfig",
    "create_model",
    "list_models",
    "model_config",
    "model_spec",
    "register_model",
]
