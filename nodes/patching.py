"""The only module that patches ComfyUI's UNet (``transformer_options``, ``ModelPatcher``).

The W+ adapter is installed as one attn2 *replace* per cross-attention site
(methods.md §3.9, comfyui.md §3): ComfyUI hands the replace the already
projected q, k, v; the text attention ``h_t`` is computed exactly as ComfyUI
would (or by a replace already sitting on that key, which we wrap and never
mutate), and the residual W+ branch is added by the shared
:func:`models.attention_math.residual_wplus_attention`. ComfyUI applies
``to_out`` afterwards. Nothing here mutates the input MODEL: callers pass a
clone.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import comfy.model_management
import comfy.model_patcher
import torch
import torch.nn.functional as F
from comfy.ldm.modules.attention import BasicTransformerBlock, optimized_attention

from ..models.attention_math import residual_wplus_attention
from ..models.errors import LikenessError
from ..models.wplus_adapter import WPlusAdapter, tokens_for_chunks
from ..models.wplus_sites import WPlusSite

__all__ = [
    "LoadedWPlusAdapter",
    "WPlusPatch",
    "WPlusSiteReplace",
    "discover_attn2_sites",
    "apply_wplus_adapter",
    "step_index",
]

logger = logging.getLogger(__name__)

SiteKey = tuple[str, int, int]


@dataclass
class LoadedWPlusAdapter:
    """What ``Likeness Load W+ Adapter`` outputs: the weights and the ComfyUI patcher that moves them."""

    adapter: WPlusAdapter
    patcher: comfy.model_patcher.ModelPatcher
    name: str

    @classmethod
    def wrap(cls, adapter: WPlusAdapter, name: str) -> LoadedWPlusAdapter:
        # ModelPatcher writes bookkeeping attributes (device, ...) onto the module it manages;
        # a plain container keeps them off the adapter, whose ``device`` is a read-only property.
        host = torch.nn.Module()
        host.adapter = adapter
        patcher = comfy.model_patcher.ModelPatcher(
            host,
            load_device=comfy.model_management.get_torch_device(),
            offload_device=comfy.model_management.unet_offload_device(),
        )
        return cls(adapter, patcher, name)


def discover_attn2_sites(model: comfy.model_patcher.ModelPatcher) -> dict[SiteKey, tuple[int, int]]:
    """``{(block, number, index): (context width, inner width)}`` of every cross-attention in the UNet.

    Walks the diffusion model's modules in ComfyUI's own naming
    (``input_blocks.N.1.transformer_blocks.I``, ``middle_block.1...``,
    ``output_blocks.N.1...``); the context width is ``attn2.to_k``'s input,
    the inner width ``attn2.to_q``'s output.
    """
    unet = model.get_model_object("diffusion_model")
    sites: dict[SiteKey, tuple[int, int]] = {}
    for name, module in unet.named_modules():
        if not isinstance(module, BasicTransformerBlock) or getattr(module, "attn2", None) is None:
            continue
        parts = name.split(".")
        if parts[0] == "input_blocks":
            block, number = "input", int(parts[1])
        elif parts[0] == "output_blocks":
            block, number = "output", int(parts[1])
        elif parts[0] == "middle_block":
            block, number = "middle", 0
        else:
            continue
        index = int(parts[parts.index("transformer_blocks") + 1])
        sites[(block, number, index)] = (int(module.attn2.to_k.weight.shape[1]), int(module.attn2.to_q.weight.shape[0]))
    return sites


def step_index(sigma: float, sample_sigmas: torch.Tensor) -> int:
    """Index of the sampling step a sigma belongs to (sub-step sigmas map to their step)."""
    schedule = sample_sigmas.detach().float().cpu()
    return max(0, int((schedule >= sigma * (1.0 - 1e-4)).sum().item()) - 1)


@dataclass
class WPlusPatch:
    """Everything one ``Apply W+ Adapter`` shares between its site replaces.

    Attributes:
        loaded: the adapter and its patcher.
        wplus: absolute W+ ``[Bw,18,512]`` (Bw = 1, or one code per latent).
        weight: λ, the residual scale.
        start_at: W+ is off for steps ``i <= int(start_at * steps)`` when ``start_at > 0``
            (the official "delay": 0.2 with 30 steps leaves steps 0..6 text-only).
        end_at: W+ is off from step ``end_at * steps`` on.
        mask: optional ``[Bm,H,W]`` mask in image space (1 = W+ acts there).
        sigma_window: ``(sigma_start, sigma_end)`` used only when the sampler gives no schedule.
        hits: per-site call counter (tests and diagnostics).
    """

    loaded: LoadedWPlusAdapter
    wplus: torch.Tensor
    weight: float
    start_at: float = 0.2
    end_at: float = 1.0
    mask: torch.Tensor | None = None
    sigma_window: tuple[float, float] = (float("inf"), 0.0)
    hits: Counter = field(default_factory=Counter)
    _tokens: dict = field(default_factory=dict)
    _warned_no_schedule: bool = False
    _last_sigmas: torch.Tensor | None = None
    _last_active: bool = False

    @property
    def adapter(self) -> WPlusAdapter:
        return self.loaded.adapter

    def active(self, extra_options: dict) -> bool:
        """Whether W+ acts at this call's step; decided once per UNet call, not once per site.

        Every site of one UNet call receives the same ``sigmas`` tensor, so the
        decision (and its device-to-host read of the sigma) is reused by identity.
        """
        sigmas = extra_options["sigmas"]
        if sigmas is not self._last_sigmas:
            self._last_active = self._decide(extra_options)
            self._last_sigmas = sigmas
        return self._last_active

    def _decide(self, extra_options: dict) -> bool:
        sigma = float(extra_options["sigmas"].detach().flatten()[0])
        schedule = extra_options.get("sample_sigmas")
        if schedule is None or len(schedule) < 2:
            if not self._warned_no_schedule:
                logger.info("Likeness W+: the sampler gives no sigma schedule; start/end use ComfyUI's sigma percent")
                self._warned_no_schedule = True
            start, end = self.sigma_window
            return end <= sigma <= start
        steps = len(schedule) - 1
        i = step_index(sigma, schedule)
        if self.start_at > 0 and i <= int(self.start_at * steps):
            return False
        return i < self.end_at * steps

    def tokens(self, extra_options: dict, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Per-row W+ tokens ``[B,4,ctx]`` for this call's cond/uncond chunks."""
        key = (device, dtype)
        if key not in self._tokens:
            with torch.no_grad():
                cond = self.adapter.tokens(self.wplus)
                uncond = self.adapter.uncond_tokens(1)
            self._tokens[key] = (cond.to(device, dtype), uncond.to(device, dtype))
        cond, uncond = self._tokens[key]
        chunks = extra_options["cond_or_uncond"]
        rows = batch // max(1, len(chunks))
        if cond.shape[0] not in (1, rows):
            raise LikenessError(
                f"The W+ input holds {cond.shape[0]} codes but the latent batch is {rows}. Use a single W+ code, "
                f"or a latent batch of {cond.shape[0]} (one image per code, e.g. for an attribute sweep)."
            )
        return tokens_for_chunks(cond, uncond, chunks, batch)

    def scale(self, extra_options: dict, batch: int, tokens: int, ref: torch.Tensor) -> float | torch.Tensor:
        """λ, or ``[B,N,1]`` λ·mask resized to this block's token grid."""
        if self.mask is None:
            return self.weight
        _, _, height, width = extra_options["activations_shape"]
        if height * width != tokens:
            raise LikenessError(f"attention has {tokens} tokens but the block grid is {height}x{width}")
        mask = F.interpolate(self.mask[:, None].to(ref.device, torch.float32), size=(height, width), mode="bilinear")
        mask = mask.flatten(1)[..., None]  # [Bm, N, 1]
        n_chunks = max(1, len(extra_options["cond_or_uncond"]))
        rows = batch // n_chunks
        if mask.shape[0] == rows:
            mask = mask.repeat(n_chunks, 1, 1)
        elif mask.shape[0] != 1:
            raise LikenessError(f"The attention mask has {mask.shape[0]} frames but the latent batch is {rows}.")
        return (self.weight * mask).to(ref.dtype)

    def models(self) -> list:
        return [self.loaded.patcher]


class WPlusSiteReplace:
    """The attn2 replace installed at one site; wraps a replace already there (IPAdapter and others)."""

    def __init__(self, patch: WPlusPatch, site: WPlusSite, key: SiteKey, previous: Callable | None):
        self.patch = patch
        self.site = site
        self.key = key
        self.previous = previous

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        self.patch.hits[self.key] += 1
        heads = extra_options["n_heads"]

        def attention(q_, k_, v_, heads_):
            return optimized_attention(
                q_, k_, v_, heads_, attn_precision=extra_options.get("attn_precision"), transformer_options=extra_options
            )

        h_t = self.previous(q, k, v, extra_options) if self.previous is not None else attention(q, k, v, heads)
        if self.patch.weight == 0 or not self.patch.active(extra_options):
            return h_t
        layer = self.patch.adapter.layer(self.site)
        tokens = self.patch.tokens(extra_options, q.shape[0], q.device, q.dtype)
        k_w, v_w = layer.project_tokens(tokens)
        scale = self.patch.scale(extra_options, q.shape[0], q.shape[1], q)
        return residual_wplus_attention(h_t, k_w, v_w, layer.to_q_wplus, heads, scale, attention_fn=attention)

    def to(self, device_or_dtype):
        if self.previous is not None and hasattr(self.previous, "to"):
            self.previous = self.previous.to(device_or_dtype)
        return self

    def models(self) -> list:
        found = list(self.patch.models())
        if self.previous is not None and hasattr(self.previous, "models"):
            found += list(self.previous.models())
        return found


def apply_wplus_adapter(
    model: comfy.model_patcher.ModelPatcher,
    loaded: LoadedWPlusAdapter,
    wplus: torch.Tensor,
    weight: float,
    start_at: float,
    end_at: float,
    mask: torch.Tensor | None = None,
) -> tuple[comfy.model_patcher.ModelPatcher, WPlusPatch]:
    """Return a patched clone of ``model``; the input MODEL is not modified.

    Raises:
        LikenessError: the MODEL is not the architecture the adapter was trained for
            (e.g. SDXL), or its cross-attention sites do not match the adapter's.
    """
    sites = discover_attn2_sites(model)
    if not sites:
        raise LikenessError("This MODEL has no cross-attention layers: the W+ adapter needs an SD1.5 UNet.")
    for context_width in sorted({ctx for ctx, _ in sites.values()}):
        loaded.adapter.check_context_dim(context_width)
    expected = {s.comfy_key: s for s in loaded.adapter.sites}
    found = {key: inner for key, (_, inner) in sites.items()}
    wanted = {key: site.hidden_size for key, site in expected.items()}
    if found != wanted:
        differ = sorted(set(found) ^ set(wanted)) or sorted(k for k in found if found[k] != wanted[k])
        raise LikenessError(
            f"This MODEL's cross-attention layout is not SD1.5's: it has {len(found)} sites, the W+ adapter "
            f"{len(wanted)}; first differences at {differ[:4]}. The W+ adapter fits SD1.5 models (and "
            "fine-tunes of SD1.5) only."
        )
    sampling = model.get_model_object("model_sampling")
    patch = WPlusPatch(
        loaded=loaded,
        wplus=wplus.detach().to(torch.float32).cpu(),
        weight=float(weight),
        start_at=float(start_at),
        end_at=float(end_at),
        mask=None if mask is None else (mask[None] if mask.ndim == 2 else mask).detach().float().cpu(),
        sigma_window=(float(sampling.percent_to_sigma(start_at)), float(sampling.percent_to_sigma(end_at))),
    )
    patched = model.clone()
    existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    for key in sites:
        previous = existing.get(key, existing.get(key[:2]))
        patched.set_model_attn2_replace(WPlusSiteReplace(patch, expected[key], key, previous), *key)
    return patched, patch
