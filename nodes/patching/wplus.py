"""The W+ adapter patch of ComfyUI's UNet.

The W+ adapter is installed as one attn2 *replace* per cross-attention site.
ComfyUI hands the replace the already projected q, k, v; the text attention ``h_t`` is computed exactly as ComfyUI
would (or by a replace already sitting on that key, which we wrap and never
mutate), and the residual W+ branch is added by the shared
:func:`models.wplus_adapter.attention.folded_wplus_attention`. ComfyUI applies
``to_out`` afterwards. Nothing here mutates the input MODEL: callers pass a
clone.

The W+ tokens do not change over the steps, so each site projects them and folds
its ``to_q_wplus`` into the 4 keys once (:meth:`WPlusPatch.folded`): per call the
branch costs two thin matrix products, not a full ``[N, C] x [C, C]`` projection.
The 4-token attention is computed directly (softmax in float32), not by the
attention backend ComfyUI picked for the text attention, which stays untouched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import comfy.model_management
import comfy.model_patcher
import torch

from ...models.attention.schedule import StepWindow, tokens_for_chunks
from ...models.errors import LikenessError
from ...models.wplus_adapter.attention import FoldedWPlus, folded_wplus_attention
from ...models.wplus_adapter.model import WPlusAdapter
from ...models.wplus_adapter.sites import WPlusSite
from .sites import (
    StepGate,
    WrappingReplace,
    adapter_patcher,
    existing_attn2_replaces,
    matching_sites,
    step_window,
    token_mask,
)

__all__ = ["LoadedWPlusAdapter", "WPlusPatch", "WPlusSiteReplace", "apply_wplus_adapter"]

logger = logging.getLogger(__name__)


@dataclass
class LoadedWPlusAdapter:
    """What ``Likeness Load W+ Adapter`` outputs: the weights and the ComfyUI patcher that moves them."""

    adapter: WPlusAdapter
    patcher: comfy.model_patcher.ModelPatcher
    name: str

    @classmethod
    def wrap(cls, adapter: WPlusAdapter, name: str) -> LoadedWPlusAdapter:
        return cls(adapter, adapter_patcher(adapter), name)


@dataclass
class WPlusPatch:
    """Everything one ``Apply W+ Adapter`` shares between its site replaces.

    Attributes:
        loaded: the adapter and its patcher.
        wplus: absolute W+ ``[Bw,18,512]`` (Bw = 1, or one code per latent).
        weight: λ, the residual scale.
        window: the steps in which W+ acts (start 0.2 = the official delay).
        mask: optional ``[Bm,H,W]`` mask in image space (1 = W+ acts there).
        present: optional ``[Bw]`` 0/1 per code: 0 for an absent code (no face, pass-through), whose latent
            is left unconditioned.
    """

    loaded: LoadedWPlusAdapter
    wplus: torch.Tensor
    weight: float
    window: StepWindow = field(default_factory=lambda: StepWindow(0.2, 1.0))
    mask: torch.Tensor | None = None
    present: torch.Tensor | None = None
    _tokens: dict = field(default_factory=dict)
    _gate: StepGate | None = None
    _folded: dict = field(default_factory=dict)

    @property
    def adapter(self) -> WPlusAdapter:
        return self.loaded.adapter

    def active(self, extra_options: dict) -> bool:
        """Whether W+ acts at this call's step; decided once per UNet call, not once per site."""
        if self._gate is None or self._gate.window is not self.window:
            self._gate = StepGate(self.window)
        return self._gate.active(extra_options)

    def _site_tokens(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Cond ``[Bw,4,ctx]`` and uncond ``[1,4,ctx]`` tokens on ``device`` in ``dtype`` (computed once per pair)."""
        key = (device, dtype)
        if key not in self._tokens:
            with torch.no_grad():
                cond = self.adapter.tokens(self.wplus)
                uncond = self.adapter.uncond_tokens(1)
            self._tokens[key] = (cond.to(device, dtype), uncond.to(device, dtype))
        return self._tokens[key]

    @staticmethod
    def _check_rows(codes: int, batch: int, chunks) -> None:
        rows = batch // max(1, len(chunks))
        if codes not in (1, rows):
            raise LikenessError(
                f"The W+ input holds {codes} codes but the latent batch is {rows}. Use a single W+ code, "
                f"or a latent batch of {codes} (one image per code, e.g. for an attribute sweep)."
            )

    def folded(
        self, site: WPlusSite, extra_options: dict, batch: int, device: torch.device, dtype: torch.dtype, heads: int
    ) -> FoldedWPlus:
        """The site's W+ keys/values with ``to_q_wplus`` folded in, one row per batch row (cached).

        W+ tokens are constant over the steps, so each site folds them once per
        (device, dtype, heads) and keeps the cond and uncond sets; the per-call
        arrangement for the chunk order and batch (``cond_or_uncond``) is cached too.
        The cache lives in this patch object, which the MODEL's clones share; a
        new Apply W+ Adapter run makes a new patch (new W+, new cache).
        """
        chunks = tuple(int(c) for c in extra_options["cond_or_uncond"])
        key = (site.index, device, dtype, heads, chunks, batch)
        found = self._folded.get(key)
        if found is None:
            pair_key = (site.index, device, dtype, heads)
            pair = self._folded.get(pair_key)
            if pair is None:
                layer = self.adapter.layer(site)
                cond, uncond = self._site_tokens(device, dtype)
                with torch.no_grad():
                    pair = (layer.fold(cond, heads), layer.fold(uncond, heads))
                self._folded[pair_key] = pair
            cond, uncond = pair
            self._check_rows(cond.batch, batch, chunks)
            found = FoldedWPlus(
                tokens_for_chunks(cond.logits, uncond.logits, chunks, batch),
                tokens_for_chunks(cond.values, uncond.values, chunks, batch),
                heads,
            )
            self._folded[key] = found
        return found

    def scale(self, extra_options: dict, batch: int, tokens: int, ref: torch.Tensor) -> float | torch.Tensor:
        """λ, or ``[B,N or 1,1]`` λ·mask (resized to this block's token grid)·present."""
        factor = None
        if self.present is not None:
            per_code = self.present.to(ref.device, torch.float32)[:, None, None]
            chunks = extra_options["cond_or_uncond"]
            factor = tokens_for_chunks(per_code, per_code, chunks, batch)  # [B,1,1]: 0 where no code
        if self.mask is None:
            return self.weight if factor is None else (self.weight * factor).to(ref.dtype)
        scaled = self.weight * token_mask(self.mask, extra_options, batch, tokens, ref.device, "Apply W+ Adapter")
        return (scaled if factor is None else scaled * factor).to(ref.dtype)

    def models(self) -> list:
        return [self.loaded.patcher]


class WPlusSiteReplace(WrappingReplace):
    """The attn2 replace installed at one site; wraps a replace already there (IPAdapter and others)."""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        h_t, _ = self.text_attention(q, k, v, extra_options)
        if self.patch.weight == 0 or not self.patch.active(extra_options):
            return h_t
        heads = extra_options["n_heads"]
        folded = self.patch.folded(self.site, extra_options, q.shape[0], q.device, q.dtype, heads)
        scale = self.patch.scale(extra_options, q.shape[0], q.shape[1], q)
        return folded_wplus_attention(h_t, folded, scale)


def apply_wplus_adapter(
    model: comfy.model_patcher.ModelPatcher,
    loaded: LoadedWPlusAdapter,
    wplus: torch.Tensor,
    weight: float,
    start_at: float,
    end_at: float,
    mask: torch.Tensor | None = None,
    present: torch.Tensor | None = None,
) -> tuple[comfy.model_patcher.ModelPatcher, WPlusPatch]:
    """Return a patched clone of ``model``; the input MODEL is not modified.

    ``present`` (``[Bw]`` 0/1, optional) leaves the latents of absent codes unconditioned.

    Raises:
        LikenessError: the MODEL is not the architecture the adapter was trained for
            (e.g. SDXL), or its cross-attention sites do not match the adapter's.
    """
    expected = matching_sites(
        model,
        loaded.adapter.sites,
        loaded.adapter.check_context_dim,
        what="the W+ adapter",
        family="SD1.5",
        fits="SD1.5 models (and fine-tunes of SD1.5)",
    )
    window = step_window(model, start_at, end_at, "Apply W+ Adapter")
    patch = WPlusPatch(
        loaded=loaded,
        wplus=wplus.detach().to(torch.float32).cpu(),
        weight=float(weight),
        window=window,
        mask=None if mask is None else (mask[None] if mask.ndim == 2 else mask).detach().float().cpu(),
        present=None if present is None else present.detach().float().cpu(),
    )
    patched = model.clone()
    existing = existing_attn2_replaces(patched)
    for key in expected:
        previous = existing.get(key, existing.get(key[:2]))
        patched.set_model_attn2_replace(WPlusSiteReplace(patch, expected[key], key, previous), *key)
    return patched, patch
