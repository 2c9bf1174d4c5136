"""Say what a file is when it is given where an InstantID / PSTF-AttControl file is expected.

People put many similar files into ``models/instantid``: IP-Adapter FaceID,
CLIP-image IP-Adapters, the IdentityNet ControlNet, the SD1.5 W+ adapter. Each
gets a message naming it and the node that loads it, instead of a list of
missing keys. Identification uses keys and shapes only, never file names.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import CheckpointError

__all__ = ["refuse_other_files", "describe_other_file"]

_FAMILIES = {768: "SD1.5", 1024: "SD2.x", 2048: "SDXL"}
_CONTROLNET = (
    "controlnet_cond_embedding.",
    "controlnet_down_blocks.",
    "control_model.",
    "input_hint_block.",
    "zero_convs.",
)


def _has(flat: Mapping[str, torch.Tensor], *prefixes: str) -> bool:
    return any(k.startswith(prefixes) for k in flat)


def _ip_width(flat: Mapping[str, torch.Tensor]) -> int | None:
    for key, value in flat.items():
        if key.startswith("ip_adapter.") and key.endswith("to_k_ip.weight"):
            return int(value.shape[-1])
    return None


def describe_other_file(flat: Mapping[str, torch.Tensor], context_dim: int = 2048) -> str | None:
    """What the file is and what to do with it, or None when it may be InstantID / PSTF (for ``context_dim``)."""
    if _has(flat, "w_proj.", "wplus_adapter."):
        return (
            "an SD1.5 W+ adapter (csxmli2016/w-plus-adapter), not InstantID/PSTF. Load it with Likeness Load W+ "
            "Adapter from models/wplus and use it with an SD1.5 model"
        )
    if _has(flat, *_CONTROLNET):
        return (
            "a ControlNet (for InstantID: the IdentityNet, ControlNetModel/diffusion_pytorch_model.safetensors), not "
            "the ip-adapter file. Put it in models/controlnet and load it with ComfyUI's Load ControlNet Model"
        )
    if _has(flat, "model.diffusion_model.", "first_stage_model.") or (
        "conv_in.weight" in flat and _has(flat, "down_blocks.")
    ):
        return "a Stable Diffusion checkpoint or UNet, not an adapter. Load it with Load Checkpoint"
    if any(k.startswith("ip_adapter.") and "lora" in k for k in flat) or _has(
        flat, "image_proj.proj.0.", "image_proj.perceiver_resampler."
    ):
        return (
            "an IP-Adapter FaceID file (h94/IP-Adapter-FaceID: LoRA and/or MLP face projection), not InstantID. It "
            "needs an IPAdapter node pack; for InstantID use ip-adapter.bin from InstantX/InstantID"
        )
    if "image_proj.proj.weight" in flat:
        return (
            "an IP-Adapter with a CLIP image encoder (4-token linear projection), not InstantID. It needs an "
            "IPAdapter node pack"
        )
    proj_in = flat.get("image_proj.proj_in.weight")
    if proj_in is not None and int(proj_in.shape[-1]) != 512:
        return (
            f"an IP-Adapter Plus (Resampler on CLIP image features of width {int(proj_in.shape[-1])}), not "
            "InstantID (whose Resampler takes the 512-d antelopev2 face embedding). It needs an IPAdapter node pack"
        )
    width = _ip_width(flat)
    if width is not None and width != context_dim:
        family = f"{_FAMILIES[width]} " if width in _FAMILIES else ""
        return (
            f"an IP-Adapter-style file for {family}(context width {width}); InstantID and PSTF-AttControl exist for "
            f"SDXL only (context width {context_dim})"
        )
    return None


def refuse_other_files(flat: Mapping[str, torch.Tensor], source: str, context_dim: int = 2048) -> None:
    """Raise :class:`CheckpointError` naming the file's kind when it is not InstantID / PSTF."""
    if not flat:
        raise CheckpointError(f"{source} holds no tensors: it is not an InstantID/PSTF file.")
    other = describe_other_file(flat, context_dim)
    if other is not None:
        raise CheckpointError(f"{source} is {other}.")
