"""Encoders (SSAMBA, its MambaOut ablation, SSAST), their presets and registry, and model files."""

from .base import EncoderConfig, SpectrogramEncoder
from .registry import create_model, get_config, list_models, model_from_config
from .official import convert_official
from .loading import load_model
from .serialization import save_model
from .ssamba import SSAMBA, MambaOut, MambaOutConfig, SSAMBAConfig
from .ssast import SSAST, SSASTConfig

__all__ = [
    "EncoderConfig",
    "MambaOut",
    "MambaOutConfig",
    "SSAMBA",
    "SSAMBAConfig",
    "SSAST",
    "SSASTConfig",
    "SpectrogramEncoder",
    "convert_official",
    "create_model",
    "get_config",
    "list_models",
    "load_model",
    "model_from_config",
    "save_model",
]
