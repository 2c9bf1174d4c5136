"""W+ adapter (csxmli2016/w-plus-adapter, CVPR 2024): mapping network, weights and loader.

* :class:`WProjModel` maps an absolute e4e W+ code ``[B,18,512]`` to 4 context
  tokens ``[B,4,C]``.
* :class:`WPlusAdapter` holds ``w_proj`` and one :class:`WPlusSiteLayer` per
  attn2 site; its state dict is the official file's layout
  (``w_proj.*`` / ``wplus_adapter.{i}.*``, docs/design.md, 'File formats').
* :func:`load_wplus_adapter` reads and validates an official checkpoint.

The residual attention maths is in :mod:`.attention`; the diffusers
processor in :mod:`.processor` (re-exported here as
:class:`WPlusAttnProcessor`); diffusers UNet helpers in :mod:`.diffusers_unet`.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, a_or_an
from ..files.checkpoints import family_name, flatten, load_file, validate_shapes
from .processor import WPlusAttnProcessor, WPlusSiteLayer
from .sites import SD15_CONTEXT_DIM, SD15_WPLUS_SITES, WPlusSite

__all__ = [
    "WProjModel",
    "WPlusSiteLayer",
    "WPlusAttnProcessor",
    "WPlusAdapter",
    "wplus_adapter_shapes",
    "load_wplus_adapter",
    "build_wplus_adapter_checkpoint",
]

logger = logging.getLogger(__name__)

W_ROWS = 18
W_DIM = 512
_ROW_GROUPS = ((0, 4), (4, 8), (8, 12), (12, 18))


class WProjModel(nn.Module):
    """Mapping network: W+ ``[B,18,512]`` -> 4 tokens ``[B,4,cross_attention_dim]``.

    Rows [0:4], [4:8], [8:12], [12:18] are each flattened (2048, 2048, 2048,
    3072 values) and projected by their own bias-free Linear ``proj_0..proj_3``;
    the 4 results are stacked as tokens and go through one shared
    ``LayerNorm(cross_attention_dim)`` (eps 1e-5). ``WProjModel(0) = norm.bias``
    on every token (the CFG uncond tokens).

    Args:
        cross_attention_dim: token width = UNet context width (768 for SD1.5).
        embeddings_dim: W+ row width (512).
        clip_extra_context_tokens: number of tokens; the row grouping fixes it to 4.
    """

    def __init__(
        self,
        cross_attention_dim: int = SD15_CONTEXT_DIM,
        embeddings_dim: int = W_DIM,
        clip_extra_context_tokens: int = 4,
    ) -> None:
        super().__init__()
        if clip_extra_context_tokens != len(_ROW_GROUPS):
            raise ValueError(
                f"WProjModel makes exactly {len(_ROW_GROUPS)} tokens (row groups 0:4, 4:8, 8:12, 12:18), "
                f"got clip_extra_context_tokens={clip_extra_context_tokens}"
            )
        self.cross_attention_dim = int(cross_attention_dim)
        self.embeddings_dim = int(embeddings_dim)
        self.clip_extra_context_tokens = int(clip_extra_context_tokens)
        self.proj_0 = nn.Linear(embeddings_dim * 4, cross_attention_dim, bias=False)
        self.proj_1 = nn.Linear(embeddings_dim * 4, cross_attention_dim, bias=False)
        self.proj_2 = nn.Linear(embeddings_dim * 4, cross_attention_dim, bias=False)
        self.proj_3 = nn.Linear(embeddings_dim * 6, cross_attention_dim, bias=False)
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, w_plus: torch.Tensor) -> torch.Tensor:
        """Args: ``w_plus`` absolute W+ ``[B,18,embeddings_dim]``. Returns ``[B,4,cross_attention_dim]``."""
        if w_plus.ndim != 3 or w_plus.shape[1] != W_ROWS or w_plus.shape[2] != self.embeddings_dim:
            raise ValueError(f"W+ must be [B, {W_ROWS}, {self.embeddings_dim}], got shape {tuple(w_plus.shape)}")
        batch = w_plus.shape[0]
        projs = (self.proj_0, self.proj_1, self.proj_2, self.proj_3)
        tokens = [
            proj(w_plus[:, a:b, :].reshape(batch, -1)).unsqueeze(1)
            for proj, (a, b) in zip(projs, _ROW_GROUPS, strict=True)
        ]
        return self.norm(torch.cat(tokens, dim=1))


def wplus_adapter_shapes(
    cross_attention_dim: int = SD15_CONTEXT_DIM, sites: Sequence[WPlusSite] = SD15_WPLUS_SITES
) -> dict[str, tuple[int, ...]]:
    """Expected ``{key: shape}`` of an official checkpoint (flattened, 54 keys for SD1.5)."""
    c = cross_attention_dim
    shapes: dict[str, tuple[int, ...]] = {
        "w_proj.proj_0.weight": (c, 4 * W_DIM),
        "w_proj.proj_1.weight": (c, 4 * W_DIM),
        "w_proj.proj_2.weight": (c, 4 * W_DIM),
        "w_proj.proj_3.weight": (c, 6 * W_DIM),
        "w_proj.norm.weight": (c,),
        "w_proj.norm.bias": (c,),
    }
    for site in sites:
        h = site.hidden_size
        shapes[f"wplus_adapter.{site.index}.to_k_wplus.weight"] = (h, c)
        shapes[f"wplus_adapter.{site.index}.to_v_wplus.weight"] = (h, c)
        shapes[f"wplus_adapter.{site.index}.to_q_wplus.weight"] = (h, h)
    return shapes


class WPlusAdapter(nn.Module):
    """A loaded W+ adapter: ``w_proj`` plus per-site ``to_q/k/v_wplus`` layers.

    ``state_dict()`` has the official keys: ``w_proj.*`` and
    ``wplus_adapter.{index}.to_{k,v,q}_wplus.weight``.

    Args:
        cross_attention_dim: context / token width (768 for SD1.5).
        sites: the explicit site table (default: the 16 SD1.5 sites).

    Attributes:
        w_proj: the :class:`WProjModel`.
        wplus_adapter: ``nn.ModuleDict`` ``{str(index): WPlusSiteLayer}``.
        sites: the site table, in checkpoint order.
        source: the file it was loaded from, if any.
    """

    def __init__(self, cross_attention_dim: int = SD15_CONTEXT_DIM, sites: Sequence[WPlusSite] = SD15_WPLUS_SITES):
        super().__init__()
        self.cross_attention_dim = int(cross_attention_dim)
        self.sites: tuple[WPlusSite, ...] = tuple(sites)
        self.source: str | None = None
        self.w_proj = WProjModel(cross_attention_dim)
        self.wplus_adapter = nn.ModuleDict(
            {str(s.index): WPlusSiteLayer(s.hidden_size, cross_attention_dim) for s in self.sites}
        )

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the weights (that of the file after loading)."""
        return self.w_proj.norm.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.w_proj.norm.weight.device

    def layer(self, site: WPlusSite | int) -> WPlusSiteLayer:
        """The :class:`WPlusSiteLayer` of a site (or of a checkpoint index)."""
        index = site.index if isinstance(site, WPlusSite) else int(site)
        return self.wplus_adapter[str(index)]

    def tokens(self, wplus: torch.Tensor) -> torch.Tensor:
        """Cond tokens ``WProj(W)``.

        Args:
            wplus: absolute W+ ``[B,18,512]`` (or ``[18,512]``), any float dtype/device.

        Returns:
            ``[B,4,cross_attention_dim]`` in the adapter's dtype and device.
        """
        if wplus.ndim == 2:
            wplus = wplus.unsqueeze(0)
        return self.w_proj(wplus.to(device=self.device, dtype=self.dtype))

    def uncond_tokens(self, batch: int = 1) -> torch.Tensor:
        """Uncond tokens ``WProj(zeros)`` ``[batch,4,C]`` (the CFG uncond half); equal to ``norm.bias`` per token."""
        zeros = torch.zeros(batch, W_ROWS, self.w_proj.embeddings_dim, device=self.device, dtype=self.dtype)
        return self.w_proj(zeros)

    def check_context_dim(self, context_dim: int, model_name: str = "the MODEL") -> None:
        """Raise :class:`CheckpointError` if the host UNet's context width differs from the adapter's."""
        if int(context_dim) != self.cross_attention_dim:
            mine, theirs = family_name(self.cross_attention_dim), family_name(int(context_dim))
            raise CheckpointError(
                f"The W+ adapter{_from(self.source)} is for {mine} (context width {self.cross_attention_dim}) "
                f"but {model_name} is {theirs} (context width {context_dim}). The W+ adapter exists only for "
                "SD1.5 models: load an SD1.5 checkpoint (or a fine-tune of it)."
            )


def _from(source: str | None) -> str:
    return f" {source}" if source else ""


def load_wplus_adapter(path: str | Path) -> WPlusAdapter:
    """Load an official W+ adapter checkpoint (``wplus_adapter.bin`` / ``wplus_adapter_stage1.bin``).

    Accepts the official nested layout ``{"w_proj": {...}, "wplus_adapter": {...}}``
    (``torch.save``), a flat dict with ``w_proj.``/``wplus_adapter.`` prefixes,
    and ``.safetensors`` with those flattened keys. Weights may be fp32, fp16
    or bf16; the adapter keeps the file's dtype (mixed files become fp32).

    Args:
        path: the checkpoint file.

    Returns:
        A :class:`WPlusAdapter` (SD1.5 sites, context 768) on the CPU, in eval mode.

    Raises:
        MissingModelError: the file does not exist.
        CheckpointError: unreadable file, another architecture (SDXL-width
            adapter, e4e / SD checkpoint, ...), wrong keys or shapes,
            non-float or non-finite weights.
    """
    source = str(path)
    obj = load_file(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{source} holds {a_or_an(type(obj).__name__)}, not a W+ adapter state dict "
            "({'w_proj': ..., 'wplus_adapter': ...}). Use wplus_adapter.bin from csxmli2016/w-plus-adapter release v1."
        )
    flat = flatten(obj)
    _refuse_other_families(flat, source)
    validate_shapes(flat, wplus_adapter_shapes(), what="W+ adapter (SD1.5)", source=source)
    dtype = _common_float_dtype(flat, source)
    with torch.device("meta"):  # no throw-away random init of 38.6M weights
        adapter = WPlusAdapter(SD15_CONTEXT_DIM)
    adapter.load_state_dict({k: v.to(dtype) for k, v in flat.items()}, strict=True, assign=True)
    adapter.source = source
    adapter.eval()
    logger.info("W+ adapter: loaded %s (%d sites, %s)", source, len(adapter.sites), dtype)
    return adapter


def _refuse_other_families(flat: Mapping[str, torch.Tensor], source: str) -> None:
    """A W+ adapter-shaped file whose context width is not SD1.5's gets a dedicated message."""
    widths = {int(v.shape[-1]) for k, v in flat.items() if k.endswith(("to_k_wplus.weight", "to_v_wplus.weight"))}
    proj = flat.get("w_proj.norm.weight")
    if proj is not None:
        widths.add(int(proj.shape[0]))
    other = sorted(w for w in widths if w != SD15_CONTEXT_DIM)
    if other:
        family = family_name(other[0])
        raise CheckpointError(
            f"{source} is a W+ adapter for {family} (context width {other[0]}), but the W+ adapter runs on "
            f"SD1.5 models only (context width {SD15_CONTEXT_DIM}; no official {family} weights exist). "
            "Use wplus_adapter.bin from csxmli2016/w-plus-adapter release v1 with an SD1.5 MODEL."
        )


def _common_float_dtype(flat: Mapping[str, torch.Tensor], source: str) -> torch.dtype:
    dtypes = set()
    for key, value in flat.items():
        if not value.is_floating_point():
            raise CheckpointError(f"{source}: {key} has dtype {value.dtype}; a W+ adapter has float weights only.")
        lo, hi = torch.aminmax(value) if value.numel() else (value.new_zeros(()), value.new_zeros(()))
        if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):  # aminmax propagates NaN
            raise CheckpointError(
                f"{source}: {key} contains NaN or inf values. The file is damaged: download it again."
            )
        dtypes.add(value.dtype)
    if len(dtypes) == 1:
        return dtypes.pop()
    logger.info("W+ adapter: %s mixes dtypes %s; loading as float32", source, sorted(map(str, dtypes)))
    return torch.float32


def build_wplus_adapter_checkpoint(seed: int, cross_attention_dim: int = SD15_CONTEXT_DIM) -> dict:
    """A random checkpoint in the official nested layout (fp32), for smoke models and tests.

    Init follows the training code where it matters: every Linear gets
    PyTorch's default bound ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (the
    ``to_*_wplus`` copies of SD's ``to_q/k/v`` have the same scale at init);
    LayerNorm affine is drawn near its init, weight ``U(0.9, 1.1)``, bias
    ``U(-0.1, 0.1)``, so the uncond tokens are not trivially zero.

    Args:
        seed: generator seed (deterministic per machine).
        cross_attention_dim: context width; 768 makes a loadable SD1.5 file,
            other widths make files the loader must refuse.

    Returns:
        ``{"w_proj": OrderedDict, "wplus_adapter": OrderedDict}`` of finite tensors.
    """
    gen = torch.Generator("cpu").manual_seed(int(seed))

    def uniform(shape: tuple[int, ...], center: float, half: float) -> torch.Tensor:
        return torch.empty(shape, dtype=torch.float32).uniform_(center - half, center + half, generator=gen)

    parts: dict[str, OrderedDict] = {"w_proj": OrderedDict(), "wplus_adapter": OrderedDict()}
    for key, shape in wplus_adapter_shapes(cross_attention_dim).items():
        top, sub = key.split(".", 1)
        if sub == "norm.weight":
            value = uniform(shape, 1.0, 0.1)
        elif sub == "norm.bias":
            value = uniform(shape, 0.0, 0.1)
        else:
            value = uniform(shape, 0.0, 1.0 / math.sqrt(shape[1]))
        parts[top][sub] = value
    return parts
