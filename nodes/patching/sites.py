"""Cross-attention sites of a ComfyUI UNet and helpers shared by every attn2 replace."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import comfy.model_management
import comfy.model_patcher
import torch
from comfy.ldm.modules.attention import BasicTransformerBlock, optimized_attention

from ...models.attention.schedule import StepWindow, mask_to_token_grid
from ...models.attention.sites import AttnSite
from ...models.errors import LikenessError

__all__ = [
    "SiteKey",
    "attn2_modules",
    "discover_attn2_sites",
    "host_attention",
    "existing_attn2_replaces",
    "adapter_patcher",
    "step_window",
    "StepGate",
    "token_mask",
    "matching_sites",
    "WrappingReplace",
]

SiteKey = tuple[str, int, int]
"""ComfyUI's attn2 key ``(block, number, index inside the SpatialTransformer)``; middle = ``("middle", 0, i)``."""


def discover_attn2_sites(model: comfy.model_patcher.ModelPatcher) -> dict[SiteKey, tuple[int, int]]:
    """``{(block, number, index): (context width, inner width)}`` of every cross-attention in the UNet.

    The context width is ``attn2.to_k``'s input, the inner width ``attn2.to_q``'s output.
    """
    return {
        key: (int(attn.to_k.weight.shape[1]), int(attn.to_q.weight.shape[0]))
        for key, attn in attn2_modules(model).items()
    }


def attn2_modules(model: comfy.model_patcher.ModelPatcher) -> dict[SiteKey, torch.nn.Module]:
    """``{(block, number, index): attn2}``: the cross-attention module of every site (read, never modified).

    Walks the diffusion model's modules in ComfyUI's own naming
    (``input_blocks.N.1.transformer_blocks.I``, ``middle_block.1...``,
    ``output_blocks.N.1...``).
    """
    unet = model.get_model_object("diffusion_model")
    sites: dict[SiteKey, torch.nn.Module] = {}
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
        sites[(block, number, index)] = module.attn2
    return sites


def host_attention(extra_options: dict) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]:
    """``fn(q, k, v, heads)``: ComfyUI's ``optimized_attention`` with this call's precision and options.

    Patches call it so the attention backend the user chose is honoured.
    """

    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
        return optimized_attention(
            q, k, v, heads, attn_precision=extra_options.get("attn_precision"), transformer_options=extra_options
        )

    return attention


def existing_attn2_replaces(model: comfy.model_patcher.ModelPatcher) -> dict:
    """The attn2 replaces already on ``model`` (looked up, never mutated), keyed as ComfyUI stores them."""
    return model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})


def adapter_patcher(module: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher that lets ComfyUI's model management move an adapter's weights with the UNet.

    ModelPatcher writes bookkeeping attributes (device, ...) onto the module it manages; a plain
    container keeps them off the adapter (whose ``device`` may be a read-only property).
    """
    host = torch.nn.Module()
    host.adapter = module
    return comfy.model_patcher.ModelPatcher(
        host,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def step_window(model: comfy.model_patcher.ModelPatcher, start_at: float, end_at: float, what: str) -> StepWindow:
    """The :class:`StepWindow` of ``[start_at, end_at)`` with the model's sigmas; ``LikenessError`` when empty."""
    sampling = model.get_model_object("model_sampling")
    try:
        return StepWindow(
            float(start_at),
            float(end_at),
            float(sampling.percent_to_sigma(start_at)),
            float(sampling.percent_to_sigma(end_at)),
        )
    except ValueError as exc:
        raise LikenessError(f"{what}: {exc}. Set start_at below end_at.") from exc


class StepGate:
    """Whether a branch acts at a UNet call's step, decided once per call and reused by all its sites.

    Every site of one UNet call receives the same ``sigmas`` tensor, so the decision (and its
    device-to-host read of the sigma) is cached by the tensor's identity.
    """

    def __init__(self, window: StepWindow):
        self.window = window
        self._last_sigmas: torch.Tensor | None = None
        self._last_active = False

    def active(self, extra_options: dict) -> bool:
        sigmas = extra_options["sigmas"]
        if sigmas is not self._last_sigmas:
            sigma = float(sigmas.detach().flatten()[0])
            self._last_active = self.window.active(sigma, extra_options.get("sample_sigmas"))
            self._last_sigmas = sigmas
        return self._last_active


def token_mask(mask: torch.Tensor, extra_options: dict, batch: int, tokens: int, device, what: str) -> torch.Tensor:
    """An image-space mask ``[Bm,H,W]`` on this block's token grid: ``[B or 1, tokens, 1]`` float32 on ``device``."""
    _, _, height, width = extra_options["activations_shape"]
    if height * width != tokens:
        raise LikenessError(f"{what}: attention has {tokens} tokens but the block grid is {height}x{width}")
    try:
        return mask_to_token_grid(mask.to(device), (height, width), extra_options["cond_or_uncond"], batch)
    except ValueError as exc:
        raise LikenessError(f"{what}: {exc}. Give one mask, or one per latent.") from exc


def matching_sites(
    model: comfy.model_patcher.ModelPatcher,
    sites: Sequence[AttnSite],
    check_context_dim: Callable[[int], None],
    *,
    what: str,
    family: str,
    fits: str,
) -> dict[SiteKey, AttnSite]:
    """The adapter's site per ComfyUI key, after checking the MODEL has exactly the adapter's layout.

    Args:
        model: the MODEL to patch.
        sites: the adapter's explicit site table.
        check_context_dim: the adapter's context-width check (raises with a family-specific message).
        what: the adapter's name for messages (e.g. "the W+ adapter").
        family: the architecture it needs (e.g. "SD1.5").
        fits: which models it fits, for the message.

    Raises:
        LikenessError: no cross-attention, another context width, or another site layout.
    """
    found_sites = discover_attn2_sites(model)
    if not found_sites:
        raise LikenessError(f"This MODEL has no cross-attention layers: {what} needs an {family} UNet.")
    for context_width in sorted({ctx for ctx, _ in found_sites.values()}):
        check_context_dim(context_width)
    expected = {s.comfy_key: s for s in sites}
    found = {key: inner for key, (_, inner) in found_sites.items()}
    wanted = {key: site.hidden_size for key, site in expected.items()}
    if found != wanted:
        differ = sorted(set(found) ^ set(wanted)) or sorted(k for k in found if found[k] != wanted[k])
        raise LikenessError(
            f"This MODEL's cross-attention layout is not {family}'s: it has {len(found)} sites, {what} "
            f"{len(wanted)}; first differences at {differ[:4]}. {what[:1].upper() + what[1:]} fits {fits} only."
        )
    return expected


class WrappingReplace:
    """Base of every Likeness attn2 replace: one site, its patch, and the replace it wraps (never mutated).

    ComfyUI moves patch objects with ``to()`` and loads the models they list in ``models()``; both
    are forwarded to the wrapped replace so an IPAdapter-style patch under ours keeps working.
    """

    def __init__(self, patch, site: AttnSite, key: SiteKey, previous: Callable | None):
        self.patch = patch
        self.site = site
        self.key = key
        self.previous = previous

    def text_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict):
        """``(h_t, attention)``: the wrapped replace's output (or ComfyUI's attention) and the host attention."""
        attention = host_attention(extra_options)
        if self.previous is not None:
            return self.previous(q, k, v, extra_options), attention
        return attention(q, k, v, extra_options["n_heads"]), attention

    def to(self, device_or_dtype):
        if self.previous is not None and hasattr(self.previous, "to"):
            self.previous = self.previous.to(device_or_dtype)
        return self

    def models(self) -> list:
        found = list(self.patch.models())
        if self.previous is not None and hasattr(self.previous, "models"):
            found += list(self.previous.models())
        return found
