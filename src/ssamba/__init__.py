"""ssamba: self-supervised audio Mamba (SSAMBA) and transformer (SSAST) encoders.

>>> import torch, ssamba
>>> frontend = ssamba.LogMelFrontend(ssamba.FrontendConfig(target_length=128))
>>> model = ssamba.create_model("ssamba_tiny", patch_stride=(10, 10), input_tdim=128)
>>> model.forward_features(frontend(torch.randn(1, 16000))).shape
torch.Size([1, 145, 192])
"""

from .frontend import FrontendConfig, LogMelFrontend, kaldi_fbank, load_audio
from .models import create_model, get_config, list_models, load_model, save_model

__version__ = "0.1.0.dev0"

__all__ = [
    "FrontendConfig",
    "LogMelFrontend",
    "create_model",
    "get_config",
    "kaldi_fbank",
    "list_models",
    "load_audio",
    "load_model",
    "save_model",
]
