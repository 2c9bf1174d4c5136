"""W+ adapter (csxmli2016/w-plus-adapter, CVPR 2024) for SD1.5: mapping network, weights, attention, hosts.

* :mod:`.model`: :class:`WProjModel` (W+ -> 4 tokens), :class:`WPlusAdapter`, the official loader.
* :mod:`.sites`: the explicit table checkpoint index -> diffusers module -> ComfyUI key.
* :mod:`.attention`: the residual cross-attention every host adds.
* :mod:`.processor`: per-site weights and the diffusers attention processor.
* :mod:`.diffusers_unet`: install / remove the processors on a diffusers UNet.
"""

from .attention import residual_wplus_attention
from .model import (
    WPlusAdapter,
    WProjModel,
    build_wplus_adapter_checkpoint,
    load_wplus_adapter,
    wplus_adapter_shapes,
)
from .processor import WPlusAttnProcessor, WPlusSiteLayer
from .sites import SD15_CONTEXT_DIM, SD15_WPLUS_SITES, WPlusSite

__all__ = [
    "WProjModel",
    "WPlusAdapter",
    "WPlusSiteLayer",
    "WPlusAttnProcessor",
    "WPlusSite",
    "SD15_WPLUS_SITES",
    "SD15_CONTEXT_DIM",
    "wplus_adapter_shapes",
    "load_wplus_adapter",
    "build_wplus_adapter_checkpoint",
    "residual_wplus_attention",
]
