"""PSTF-AttControl (UnicomAI, IVC 2025) and its identity stream InstantID, on SDXL: the ComfyUI-free core.

Public API (stable; the training code imports it):

* :class:`Resampler` (:mod:`.resampler`): InstantID's Perceiver Resampler, official parameter names.
* :class:`TripletAttnProcessor`, :class:`PSTFSiteLayer` (:mod:`.processor`): the diffusers processor
  ``to_out(A_text + scale * A_id + scale_style * A_w)`` with ``to_k_ip``/``to_v_ip``/``to_k_style``/``to_v_style``.
* :func:`triplet_attention` (:mod:`.attention`): the maths both hosts share.
* :class:`PSTFAdapter`, :func:`load_pstf_adapter`, :func:`pstf_checkpoint_shapes`, :func:`build_pstf_checkpoint`
  (:mod:`.model`): one loader for PSTF ``pytorch_model.bin`` and InstantID ``ip-adapter.bin``.
* :data:`SDXL_SITES` (:mod:`.sites`): the 70 SDXL attn2 sites (checkpoint index, diffusers name, ComfyUI key).
* :func:`draw_kps` (:mod:`.kps`): the IdentityNet keypoint image, identical to InstantID's.
* :mod:`.diffusers_unet`: install / remove the processors on a diffusers SDXL UNet, build the context.
* :mod:`.preprocess`: PSTF's face preprocessing (largest face, embedding, 106-point alignment).
"""

from .attention import triplet_attention
from .kps import draw_kps
from .model import (
    ID_EMBED_DIM,
    RESAMPLER_CONFIG,
    WPLUS_EMBED_DIM,
    PSTFAdapter,
    build_pstf_checkpoint,
    load_pstf_adapter,
    pstf_checkpoint_shapes,
)
from .processor import PSTFSiteLayer, TripletAttnProcessor
from .resampler import Resampler
from .sites import SDXL_CONTEXT_DIM, SDXL_SITES

__all__ = [
    "Resampler",
    "TripletAttnProcessor",
    "PSTFSiteLayer",
    "triplet_attention",
    "PSTFAdapter",
    "load_pstf_adapter",
    "pstf_checkpoint_shapes",
    "build_pstf_checkpoint",
    "ID_EMBED_DIM",
    "WPLUS_EMBED_DIM",
    "RESAMPLER_CONFIG",
    "SDXL_SITES",
    "SDXL_CONTEXT_DIM",
    "draw_kps",
]
