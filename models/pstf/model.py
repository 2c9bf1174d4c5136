"""InstantID / PSTF-AttControl adapter for SDXL: the Resamplers, the per-site weights and the one loader.

* :class:`PSTFAdapter` holds ``image_proj`` (identity Resampler, antelopev2 512-d
  embedding -> 16 tokens), optionally ``image_style_proj`` (W+ Resampler, W+
  flattened to 9216 -> 16 tokens) and one :class:`~.processor.PSTFSiteLayer`
  per SDXL attn2 site. Its state dict has the official keys.
* :func:`load_pstf_adapter` reads either file kind: PSTF's ``pytorch_model.bin``
  ``{image_proj, image_style_proj, ip_adapter}`` or InstantID's ``ip-adapter.bin``
  ``{image_proj, ip_adapter}`` (``.bin``/``.pt`` via the safe loader or
  ``.safetensors`` with flattened keys; fp32/fp16/bf16), and says what a wrong
  file is (:mod:`.identify`).
* CFG: the unconditional tokens of each stream are ``Resampler(zeros)``, as the
  official pipelines do (InstantID and PSTF feed zeros to each Resampler for the CFG uncond half).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..attention.sites import AttnSite
from ..errors import CheckpointError
from ..files.checkpoints import common_float_dtype, flatten, load_file, validate_shapes
from .identify import refuse_other_files
from .processor import PSTFSiteLayer
from .resampler import Resampler
from .sites import SDXL_CONTEXT_DIM, SDXL_SITES

__all__ = [
    "PSTFAdapter",
    "ID_EMBED_DIM",
    "WPLUS_EMBED_DIM",
    "RESAMPLER_CONFIG",
    "pstf_checkpoint_shapes",
    "load_pstf_adapter",
    "build_pstf_checkpoint",
]

logger = logging.getLogger(__name__)

ID_EMBED_DIM = 512
"""antelopev2 (glintr100) ArcFace embedding width: the identity Resampler's input."""
WPLUS_EMBED_DIM = 18 * 512
"""Absolute e4e W+ [18, 512] flattened to one token: the W+ Resampler's input."""
RESAMPLER_CONFIG = {"dim": 1280, "depth": 4, "dim_head": 64, "heads": 20, "num_queries": 16, "ff_mult": 4}
"""InstantID's / PSTF's Resampler hyper-parameters (both streams); ``output_dim`` = the UNet context width."""


class PSTFAdapter(nn.Module):
    """A loaded InstantID or PSTF-AttControl adapter.

    Args:
        style: build the W+ stream (``image_style_proj`` + ``to_k_style``/``to_v_style``);
            False = InstantID (identity only).
        cross_attention_dim: token width = the UNet context width (2048 for SDXL).
        sites: the explicit site table (default: the 70 SDXL sites).
        resampler: Resampler hyper-parameters (default :data:`RESAMPLER_CONFIG`).

    Attributes:
        image_proj: identity :class:`~.resampler.Resampler` (embedding 512 -> ``[B,16,ctx]``).
        image_style_proj: W+ Resampler (9216 -> ``[B,16,ctx]``) or None.
        ip_adapter: ``nn.ModuleDict`` ``{str(index): PSTFSiteLayer}``.
        sites: the site table in checkpoint order.
        source: the file it was loaded from, if any.
    """

    def __init__(
        self,
        style: bool = True,
        cross_attention_dim: int = SDXL_CONTEXT_DIM,
        sites: Sequence[AttnSite] = SDXL_SITES,
        resampler: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        config = dict(RESAMPLER_CONFIG if resampler is None else resampler)
        self.cross_attention_dim = int(cross_attention_dim)
        self.sites: tuple[AttnSite, ...] = tuple(sites)
        self.source: str | None = None
        self.image_proj = Resampler(**config, embedding_dim=ID_EMBED_DIM, output_dim=cross_attention_dim)
        self.image_style_proj = (
            Resampler(**config, embedding_dim=WPLUS_EMBED_DIM, output_dim=cross_attention_dim) if style else None
        )
        self.ip_adapter = nn.ModuleDict(
            {str(s.index): PSTFSiteLayer(s.hidden_size, cross_attention_dim, style=style) for s in self.sites}
        )

    @property
    def has_style(self) -> bool:
        """True for PSTF (identity + W+ streams), False for InstantID (identity only)."""
        return self.image_style_proj is not None

    @property
    def kind(self) -> str:
        """``"PSTF-AttControl"`` or ``"InstantID"``."""
        return "PSTF-AttControl" if self.has_style else "InstantID"

    @property
    def dtype(self) -> torch.dtype:
        return self.image_proj.latents.dtype

    @property
    def device(self) -> torch.device:
        return self.image_proj.latents.device

    def layer(self, site: AttnSite | int) -> PSTFSiteLayer:
        """The :class:`~.processor.PSTFSiteLayer` of a site (or of a checkpoint index)."""
        index = site.index if isinstance(site, AttnSite) else int(site)
        return self.ip_adapter[str(index)]

    def site_for_comfy_key(self, key: tuple[str, int, int]) -> AttnSite:
        """The site registered under a ComfyUI attn2 key ``(block, number, index)``."""
        for site in self.sites:
            if site.comfy_key == tuple(key):
                return site
        raise KeyError(f"no {self.kind} site at ComfyUI key {key}")

    def id_tokens(self, embedding: torch.Tensor) -> torch.Tensor:
        """Identity tokens ``Resampler_id(e)``.

        Args:
            embedding: antelopev2 embeddings ``[B, 512]`` or ``[B, 1, 512]`` (not normalised), any float dtype.

        Returns:
            ``[B, 16, ctx]`` in the adapter's dtype and device.
        """
        if embedding.ndim == 1:
            embedding = embedding[None]
        if embedding.ndim == 2:
            embedding = embedding[:, None]
        return self.image_proj(embedding.to(device=self.device, dtype=self.dtype))

    def wplus_tokens(self, wplus: torch.Tensor) -> torch.Tensor:
        """W+ tokens ``Resampler_w(flatten(W))`` from absolute W+ ``[B, 18, 512]`` (or ``[18, 512]``)."""
        if self.image_style_proj is None:
            raise CheckpointError(
                f"{self.source or 'This adapter'} is InstantID (identity stream only): it has no W+ stream. "
                "Attribute control needs PSTF-AttControl weights (image_style_proj + to_k_style/to_v_style)."
            )
        if wplus.ndim == 2:
            wplus = wplus[None]
        if wplus.ndim != 3 or wplus.shape[1] * wplus.shape[2] != WPLUS_EMBED_DIM:
            raise ValueError(f"W+ must be [B, 18, 512], got shape {tuple(wplus.shape)}")
        flat = wplus.reshape(wplus.shape[0], 1, WPLUS_EMBED_DIM)
        return self.image_style_proj(flat.to(device=self.device, dtype=self.dtype))

    def uncond_id_tokens(self, batch: int = 1) -> torch.Tensor:
        """CFG unconditional identity tokens ``Resampler_id(zeros[batch, 1, 512])``."""
        return self.id_tokens(torch.zeros(batch, 1, ID_EMBED_DIM))

    def uncond_wplus_tokens(self, batch: int = 1) -> torch.Tensor:
        """CFG unconditional W+ tokens ``Resampler_w(zeros[batch, 1, 9216])``."""
        return self.wplus_tokens(torch.zeros(batch, 18, 512))

    def check_context_dim(self, context_dim: int, model_name: str = "the MODEL") -> None:
        """Raise :class:`CheckpointError` if the host UNet's context width is not the adapter's (2048 = SDXL)."""
        if int(context_dim) != self.cross_attention_dim:
            hint = (
                " For SD1.5 models use the W+ adapter nodes (Likeness Load W+ Adapter / Apply W+ Adapter)."
                if int(context_dim) == 768
                else ""
            )
            raise CheckpointError(
                f"{self.kind}{_from(self.source)} is for SDXL (context width {self.cross_attention_dim}) but "
                f"{model_name} has context width {context_dim}: load an SDXL checkpoint.{hint}"
            )


def _from(source: str | None) -> str:
    return f" ({source})" if source else ""


def pstf_checkpoint_shapes(
    style: bool = True,
    cross_attention_dim: int = SDXL_CONTEXT_DIM,
    sites: Sequence[AttnSite] = SDXL_SITES,
    resampler: Mapping[str, int] | None = None,
) -> dict[str, tuple[int, ...]]:
    """Expected ``{key: shape}`` of a file (flattened), in the official key order.

    With the defaults: the official SDXL files, PSTF 382 keys, InstantID (``style=False``) 191.
    The other arguments describe a reduced layout (tests, a trainer's small UNet).
    """
    with torch.device("meta"):
        model = PSTFAdapter(style, cross_attention_dim, sites, resampler)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _normalise_layout(flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept accelerate's training-state prefixes (``image_proj_model.``, ``adapter_modules.``) too."""
    renames = {"image_proj_model.": "image_proj.", "adapter_modules.": "ip_adapter."}
    if not any(k.startswith(tuple(renames)) for k in flat):
        return flat
    out = {}
    for key, value in flat.items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        out[key] = value
    return out


def load_pstf_adapter(
    path: str | Path,
    *,
    cross_attention_dim: int = SDXL_CONTEXT_DIM,
    sites: Sequence[AttnSite] = SDXL_SITES,
    resampler: Mapping[str, int] | None = None,
) -> PSTFAdapter:
    """Load a PSTF-AttControl ``pytorch_model.bin`` or an InstantID ``ip-adapter.bin`` (strictly).

    Args:
        path: the file (``.bin``/``.pt``/``.pth`` torch pickle read with ``weights_only=True``,
            or ``.safetensors`` with ``image_proj.``/``image_style_proj.``/``ip_adapter.`` keys).
        cross_attention_dim: expected token width (2048 = SDXL, the official files).
        sites: expected site table (default: the 70 SDXL sites).
        resampler: expected Resampler hyper-parameters (default :data:`RESAMPLER_CONFIG`).

    Returns:
        A :class:`PSTFAdapter` on the CPU in eval mode, in the file's dtype (mixed files: fp32);
        ``has_style`` tells PSTF from InstantID.

    Raises:
        MissingModelError: the file does not exist.
        CheckpointError: unreadable or truncated file; another kind of file (SD1.5 W+ adapter,
            IP-Adapter FaceID or CLIP-image IP-Adapter, a ControlNet, a diffusion checkpoint, ...),
            named in the message; wrong keys or shapes; non-float or non-finite weights.
    """
    source = str(path)
    obj = load_file(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{source} holds a {type(obj).__name__}, not an InstantID/PSTF state dict "
            "({'image_proj': ..., 'ip_adapter': ...}). Use ip-adapter.bin from InstantX/InstantID."
        )
    flat = _normalise_layout(flatten(obj))
    refuse_other_files(flat, source, cross_attention_dim)
    style = any(k.startswith("image_style_proj.") or ".to_k_style." in k for k in flat)
    what = "PSTF-AttControl (SDXL)" if style else "InstantID ip-adapter (SDXL)"
    expected = pstf_checkpoint_shapes(style, cross_attention_dim, sites, resampler)
    validate_shapes(flat, expected, what=what, source=source)
    dtype = common_float_dtype(flat, source, what=what)
    with torch.device("meta"):  # no throw-away random init of 0.4-0.9 G weights
        adapter = PSTFAdapter(style, cross_attention_dim, sites, resampler)
    adapter.load_state_dict({k: v.to(dtype) for k, v in flat.items()}, strict=True, assign=True)
    adapter.source = source
    adapter.eval()
    logger.info("%s: loaded %s (%d sites, %s)", adapter.kind, source, len(adapter.sites), dtype)
    return adapter


def build_pstf_checkpoint(
    seed: int,
    style: bool = True,
    dtype: torch.dtype = torch.float32,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> dict:
    """A random checkpoint in the official nested layout, for smoke models and tests.

    Linear weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's
    default; the per-site projections start as copies of the UNet's to_k/to_v,
    which have that scale); LayerNorm weight U(0.9, 1.1), bias U(-0.1, 0.1);
    ``latents`` ~ N(0, 1/dim) as at init. Tensors are drawn one by one in
    float32 and cast at once, so peak memory is the output plus one tensor.

    Args:
        seed: generator seed (deterministic per machine).
        style: PSTF layout (``image_style_proj`` + style weights); False = InstantID layout.
        dtype: stored dtype (the official InstantID file is fp32; PSTF trains in fp16).
        shapes: another layout from :func:`pstf_checkpoint_shapes` (default: the official SDXL one).

    Returns:
        ``{"image_proj": OrderedDict, ["image_style_proj": OrderedDict,] "ip_adapter": OrderedDict}``.
    """
    gen = torch.Generator("cpu").manual_seed(int(seed))
    shapes = dict(pstf_checkpoint_shapes(style) if shapes is None else shapes)
    parts: dict[str, OrderedDict] = {}
    for key, shape in shapes.items():
        top, sub = key.split(".", 1)
        value = torch.empty(shape, dtype=torch.float32)
        fan_in = shape[-1]
        if sub.endswith("latents"):
            value.normal_(0.0, 1.0 / math.sqrt(shape[-1]), generator=gen)
        elif len(shape) == 1 and _is_norm(shapes, key):
            centre = 1.0 if sub.endswith("weight") else 0.0
            value.uniform_(centre - 0.1, centre + 0.1, generator=gen)
        else:
            if len(shape) == 1:  # a Linear bias: its weight's fan-in
                fan_in = shapes[key[: -len("bias")] + "weight"][-1]
            bound = 1.0 / math.sqrt(fan_in)
            value.uniform_(-bound, bound, generator=gen)
        parts.setdefault(top, OrderedDict())[sub] = value.to(dtype)
    return parts


def _is_norm(shapes: Mapping[str, tuple[int, ...]], key: str) -> bool:
    """True for a LayerNorm parameter (its weight is 1-D), False for a Linear bias."""
    stem = key.rsplit(".", 1)[0]
    return len(shapes.get(stem + ".weight", ())) == 1
