"""The only place that patches ComfyUI's UNet (``transformer_options``, ``ModelPatcher``, ``comfy.ldm``).

* :mod:`.sites`: the cross-attention sites of a loaded UNet and the shared helpers of every attn2 replace.
* :mod:`.wplus`: the W+ adapter's residual cross-attention as one attn2 replace per site.
* :mod:`.pstf`: InstantID / PSTF-AttControl triplet attention on SDXL, one attn2 replace per site.
* :mod:`.sefi`, :mod:`.sefi_text`, :mod:`.sefi_train`: SeFi ID tokens (per-stage key/value contexts for the
  prompt word V*; the CLIP side; learning).
* :mod:`.training`: helpers shared by the test-time training patches.

Every function returns a patched clone; the input MODEL and any patch already on it are never mutated.
"""

from .pstf import LoadedPSTF, PSTFIdentity, PSTFPatch, apply_pstf
from .sites import SiteKey, discover_attn2_sites
from .wplus import LoadedWPlusAdapter, WPlusPatch, WPlusSiteReplace, apply_wplus_adapter

__all__ = [
    "SiteKey",
    "discover_attn2_sites",
    "LoadedWPlusAdapter",
    "WPlusPatch",
    "WPlusSiteReplace",
    "apply_wplus_adapter",
    "LoadedPSTF",
    "PSTFIdentity",
    "PSTFPatch",
    "apply_pstf",
]
