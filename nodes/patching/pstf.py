"""InstantID / PSTF-AttControl patch of ComfyUI's SDXL UNet: one attn2 replace per site (70; middle ("middle", 0, i)).

The text attention is computed as ComfyUI would (or by a replace already on the key, wrapped, never
mutated); the identity and W+ streams are added by :func:`models.pstf.attention.triplet_attention` with the
layer's own query. ID and W+ tokens live in the patch and each batch chunk gets the cond tokens or
``Resampler(zeros)`` following ``cond_or_uncond``. ``hold_background`` (PSTF's masked variant, in one batch):
outside the face mask every attention output (attn2 here, attn1 via an ``attn1_output_patch``) of a sweep row
is the chunk's strength-0 row's, so background and pose stay while the face changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import comfy.model_patcher
import torch

from ...models.attention.schedule import rows_per_chunk, tokens_for_chunks
from ...models.attention.sites import AttnSite
from ...models.errors import LikenessError
from ...models.pstf.attention import triplet_attention
from ...models.pstf.model import PSTFAdapter
from .sites import (
    StepGate,
    WrappingReplace,
    adapter_patcher,
    existing_attn2_replaces,
    matching_sites,
    step_window,
    token_mask,
)

__all__ = ["LoadedPSTF", "PSTFIdentity", "PSTFPatch", "PSTFSiteReplace", "HoldBackgroundPatch", "apply_pstf"]

logger = logging.getLogger(__name__)

MASK_MODES = ("confine", "hold_background")


@dataclass
class LoadedPSTF:
    """What ``Likeness Load InstantID / PSTF`` outputs: the weights and the ComfyUI patcher that moves them."""

    adapter: PSTFAdapter
    patcher: comfy.model_patcher.ModelPatcher
    name: str

    @classmethod
    def wrap(cls, adapter: PSTFAdapter, name: str) -> LoadedPSTF:
        return cls(adapter, adapter_patcher(adapter), name)


@dataclass(frozen=True)
class PSTFIdentity:
    """The identity tokens of one Apply node, for the IdentityNet ControlNet step.

    Attributes:
        cond: ``[Bi, 16, 2048]`` ``Resampler_id(embedding)`` (Bi = 1 or one per latent), CPU; None = no face.
        uncond: ``[1, 16, 2048]`` ``Resampler_id(zeros)``, CPU; None = no face.
        info: what the tokens came from (for the node's info output).
    """

    cond: torch.Tensor | None
    uncond: torch.Tensor | None
    info: str = ""


@dataclass
class PSTFPatch:
    """Everything one Apply node shares between its site replaces (and the attn1 hold patch).

    Attributes:
        loaded: the adapter and its patcher.
        id_tokens: ``(cond [Bi,16,ctx], uncond [1,16,ctx])``.
        wplus_tokens: ``(cond [Bw,16,ctx], uncond [1,16,ctx])`` or None (InstantID / no W+ input).
        weight_id: identity scale (``ip_adapter_scale``).
        weight_wplus: W+ scale (``style_adapter_scale``).
        gate: the step window (sigma based), decided once per UNet call.
        mask: ``[Bm,H,W]`` image-space mask, or None.
        mask_mode: ``"confine"`` (streams act inside the mask only) or ``"hold_background"``.
        reference_row: hold_background's reference row inside each chunk (the strength-0 sweep point).
    """

    loaded: LoadedPSTF
    id_tokens: tuple[torch.Tensor, torch.Tensor]
    wplus_tokens: tuple[torch.Tensor, torch.Tensor] | None
    weight_id: float
    weight_wplus: float
    gate: StepGate
    mask: torch.Tensor | None = None
    mask_mode: str = "confine"
    reference_row: int = 0
    _kv: dict = field(default_factory=dict)

    @property
    def adapter(self) -> PSTFAdapter:
        return self.loaded.adapter

    @property
    def holds_background(self) -> bool:
        return self.mask is not None and self.mask_mode == "hold_background"

    @property
    def acts(self) -> bool:
        """False when both streams are off: the patch then returns the text attention untouched."""
        return self.weight_id != 0 or (self.wplus_tokens is not None and self.weight_wplus != 0)

    def _projected(self, site: AttnSite, stream: str, device, dtype) -> tuple[torch.Tensor, ...]:
        """``(k_cond, v_cond, k_uncond, v_uncond)`` of one stream at one site, computed once per device/dtype."""
        key = (site.index, stream, device, dtype)
        if key not in self._kv:
            cond, uncond = self.id_tokens if stream == "ip" else self.wplus_tokens
            layer = self.adapter.layer(site)
            with torch.no_grad():
                k_c, v_c = layer.project(cond.to(device, dtype), stream)
                k_u, v_u = layer.project(uncond.to(device, dtype), stream)
            self._kv[key] = (k_c, v_c, k_u, v_u)
        return self._kv[key]

    def streams(self, site: AttnSite, extra_options: dict, q: torch.Tensor) -> list:
        """``(k, v, scale)`` per active stream, tokens chosen per chunk from ``cond_or_uncond``."""
        chunks, batch = extra_options["cond_or_uncond"], q.shape[0]
        rows = rows_per_chunk(batch, chunks)
        scale_mask = None
        if self.mask is not None and self.mask_mode == "confine":
            scale_mask = token_mask(self.mask, extra_options, batch, q.shape[1], q.device, "Apply InstantID/PSTF")
        out = []
        named = [("ip", self.weight_id, "identity")]
        if self.wplus_tokens is not None:
            named.append(("style", self.weight_wplus, "W+"))
        for stream, weight, what in named:
            if weight == 0:
                continue
            k_c, v_c, k_u, v_u = self._projected(site, stream, q.device, q.dtype)
            if k_c.shape[0] not in (1, rows):
                raise LikenessError(
                    f"Apply InstantID/PSTF: the {what} input holds {k_c.shape[0]} entries but the latent batch is "
                    f"{rows}. Use one, or a latent batch of {k_c.shape[0]} (one image per entry, e.g. a sweep)."
                )
            k = tokens_for_chunks(k_c, k_u, chunks, batch)
            v = tokens_for_chunks(v_c, v_u, chunks, batch)
            scale = weight if scale_mask is None else (weight * scale_mask).to(q.dtype)
            out.append((k, v, scale))
        return out

    def hold_rows(self, out: torch.Tensor, extra_options: dict) -> torch.Tensor:
        """Outside the mask, every row of a chunk takes the chunk's reference row's output."""
        chunks, batch = extra_options["cond_or_uncond"], out.shape[0]
        rows = rows_per_chunk(batch, chunks)
        if self.reference_row >= rows:
            raise LikenessError(
                f"Apply InstantID/PSTF (hold_background): the reference row is {self.reference_row} but the latent "
                f"batch is {rows}. Feed the sweep's batch (Attribute Sweep's batch_size) to the latent."
            )
        grid = token_mask(self.mask, extra_options, batch, out.shape[1], out.device, "Apply InstantID/PSTF")
        ref = torch.arange(batch, device=out.device) // rows * rows + self.reference_row
        grid = grid.to(out.dtype)
        return grid * out + (1 - grid) * out[ref]

    def models(self) -> list:
        return [self.loaded.patcher]


class PSTFSiteReplace(WrappingReplace):
    """The attn2 replace at one site; wraps a replace already there (IPAdapter and others), never mutates it."""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        out, attention = self.text_attention(q, k, v, extra_options)
        patch = self.patch
        if patch.acts and patch.gate.active(extra_options):
            streams = patch.streams(self.site, extra_options, q)
            out = triplet_attention(out, q, streams, extra_options["n_heads"], attention_fn=attention)
        if patch.holds_background:
            out = patch.hold_rows(out, extra_options)
        return out


class HoldBackgroundPatch:
    """``attn1_output_patch`` of hold_background: self-attention outputs outside the mask from the reference row."""

    def __init__(self, patch: PSTFPatch):
        self.patch = patch

    def __call__(self, n: torch.Tensor, extra_options: dict) -> torch.Tensor:
        return self.patch.hold_rows(n, extra_options)

    def to(self, device_or_dtype):
        return self

    def models(self) -> list:
        return []  # the weights it needs are none; the masks are small CPU tensors moved per call


def _check_options(loaded: LoadedPSTF, has_wplus: bool, has_mask: bool, mask_mode: str) -> None:
    if mask_mode not in MASK_MODES:
        raise LikenessError(f"Unknown mask mode {mask_mode!r}; choose one of {list(MASK_MODES)}.")
    if mask_mode == "hold_background" and not has_mask:
        raise LikenessError(
            "hold_background needs the face mask (attn_mask): outside it every image of the sweep takes the "
            "strength-0 image's attention. Connect Likeness Face Mask, or use mask_mode 'confine'."
        )
    if has_wplus and not loaded.adapter.has_style:
        raise LikenessError(
            f"{loaded.name} is InstantID (identity stream only): it has no W+ stream for the W+ input. Attribute "
            "control needs PSTF-AttControl weights (models/pstf); disconnect the W+ input to use InstantID alone."
        )


def apply_pstf(
    model: comfy.model_patcher.ModelPatcher,
    loaded: LoadedPSTF,
    embeddings: torch.Tensor,
    weight_id: float,
    start_at: float,
    end_at: float,
    *,
    wplus: torch.Tensor | None = None,
    weight_wplus: float = 0.6,
    mask: torch.Tensor | None = None,
    mask_mode: str = "confine",
    reference_row: int = 0,
) -> tuple[comfy.model_patcher.ModelPatcher, PSTFPatch, PSTFIdentity]:
    """Return a patched clone of an SDXL ``model``, the patch, and the identity tokens for IdentityNet.

    Args:
        model: an SDXL MODEL (not modified).
        loaded: the InstantID / PSTF adapter.
        embeddings: antelopev2 embeddings ``[Bi, 512]`` (not normalised); Bi = 1 or one per latent.
        weight_id: identity scale (InstantID default 0.8; PSTF 1.0).
        start_at: fraction of the steps before the streams act.
        end_at: fraction of the steps after which they stop.
        wplus: absolute W+ ``[Bw, 18, 512]`` (PSTF files only); Bw = 1 or one per latent (a sweep).
        weight_wplus: W+ scale (PSTF default 0.6).
        mask: ``[H, W]`` or ``[Bm, H, W]`` in image space, or None.
        mask_mode: ``"confine"`` or ``"hold_background"`` (needs ``mask``).
        reference_row: hold_background's strength-0 row of the sweep.

    Raises:
        LikenessError: not an SDXL MODEL (SD1.5 is pointed to the W+ adapter nodes), W+ given to
            an InstantID file, hold_background without a mask, an unknown mask mode.
    """
    adapter = loaded.adapter
    expected = matching_sites(
        model,
        adapter.sites,
        adapter.check_context_dim,
        what=adapter.kind,
        family="SDXL",
        fits="SDXL base models and their fine-tunes (not SSD-1B, Vega or other distilled layouts)",
    )
    _check_options(loaded, wplus is not None, mask is not None, mask_mode)
    with torch.no_grad():
        id_tokens = (adapter.id_tokens(embeddings).cpu(), adapter.uncond_id_tokens(1).cpu())
        w_tokens = None if wplus is None else (adapter.wplus_tokens(wplus).cpu(), adapter.uncond_wplus_tokens(1).cpu())
    patch = PSTFPatch(
        loaded=loaded,
        id_tokens=id_tokens,
        wplus_tokens=w_tokens,
        weight_id=float(weight_id),
        weight_wplus=float(weight_wplus),
        gate=StepGate(step_window(model, start_at, end_at, "Apply InstantID/PSTF")),
        mask=None if mask is None else (mask[None] if mask.ndim == 2 else mask).detach().float().cpu(),
        mask_mode=mask_mode,
        reference_row=int(reference_row),
    )
    patched = model.clone()
    existing = existing_attn2_replaces(patched)
    for key, site in expected.items():
        previous = existing.get(key, existing.get(key[:2]))
        patched.set_model_attn2_replace(PSTFSiteReplace(patch, site, key, previous), *key)
    if patch.holds_background:
        patched.set_model_attn1_output_patch(HoldBackgroundPatch(patch))
    identity = PSTFIdentity(id_tokens[0], id_tokens[1], f"{adapter.kind} ({loaded.name}), {embeddings.shape[0]} id(s)")
    w_note = "off" if wplus is None else f"{weight_wplus:.2f} x {wplus.shape[0]}"
    logger.info(
        "%s: patched %d sites (identity %.2f, W+ %s, mask %s)",
        adapter.kind,
        len(expected),
        weight_id,
        w_note,
        mask_mode if mask is not None else "none",
    )  # noqa: E501
    return patched, patch, identity
