"""The e4e model inside ComfyUI: ModelPatchers that ComfyUI's memory manager loads and offloads.

The encoder and (once a preview asks for it) the StyleGAN2 decoder each sit in a
``comfy.model_patcher.ModelPatcher``; ``comfy.model_management.load_models_gpu`` puts them on the
device, freeing other models as needed, and offloads them when something else needs the memory,
as ComfyUI does for CLIP vision models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import comfy.model_management
import comfy.model_patcher
import comfy.utils
import torch

from ..models.errors import LikenessError
from ..models.inversion.e4e_model import E4EInverter, load_e4e
from ..models.inversion.precision import resolve_precision

__all__ = ["LoadedE4E", "preview_images"]


def _patcher(name: str, module: torch.nn.Module, device_choice: str) -> comfy.model_patcher.ModelPatcher:
    # ModelPatcher writes bookkeeping attributes on the module it manages: a plain container keeps
    # them off the network classes.
    host = torch.nn.Module()
    host.add_module(name, module)
    if device_choice == "cpu":
        load, offload = torch.device("cpu"), torch.device("cpu")
    else:
        load, offload = comfy.model_management.get_torch_device(), comfy.model_management.unet_offload_device()
    return comfy.model_patcher.ModelPatcher(host, load_device=load, offload_device=offload)


@dataclass
class LoadedE4E:
    """What ``Likeness Load e4e`` outputs: the inverter and the patchers that place it.

    Attributes:
        inverter: encoder + latent_avg + the lazily built decoder, in the chosen dtype.
        name: the file name in ``models/e4e``.
        device_choice: ``"auto"`` (ComfyUI's device) or ``"cpu"``.
        precision_note: a sentence for Invert Face's info when the precision was chosen automatically or an
            fp16/bf16 request runs in fp32 (the device would only emulate it), else "".
    """

    inverter: E4EInverter
    name: str
    device_choice: str
    encoder_patcher: comfy.model_patcher.ModelPatcher
    decoder_patcher: comfy.model_patcher.ModelPatcher | None = field(default=None)
    precision_note: str = ""

    @classmethod
    def load(cls, path: Path, name: str, device_choice: str, precision: str) -> LoadedE4E:
        """Read the file; ``precision`` (auto/fp32/fp16/bf16) is resolved for the device the encoder will run on."""
        run_device = torch.device("cpu") if device_choice == "cpu" else comfy.model_management.get_torch_device()
        resolved = resolve_precision(precision, run_device)
        inverter = load_e4e(path).to("cpu", resolved.dtype)
        patcher = _patcher("encoder", inverter.encoder, device_choice)
        return cls(inverter, name, device_choice, patcher, precision_note=resolved.note)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype the encoder runs in."""
        return self.inverter.dtype

    def encoder(self) -> E4EInverter:
        """The inverter with its encoder on the load device (ComfyUI frees memory for it)."""
        _load(self.encoder_patcher, self.name)
        return self.inverter

    def decoder(self) -> E4EInverter:
        """The inverter with its StyleGAN2 decoder built and on the load device."""
        if not self.inverter.has_decoder:
            raise LikenessError(
                f"{self.name} has no StyleGAN2 decoder weights (decoder.*): previews need the full e4e_ffhq_encode.pt."
            )
        if self.decoder_patcher is None:
            self.decoder_patcher = _patcher("decoder", self.inverter.decoder(), self.device_choice)
        _load(self.decoder_patcher, self.name)
        return self.inverter


def _load(patcher: comfy.model_patcher.ModelPatcher, name: str) -> None:
    comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    devices = {p.device for p in patcher.model.parameters()}
    if len(devices) > 1:
        raise LikenessError(
            f"ComfyUI could load only part of {name} onto {patcher.load_device} (low-VRAM mode keeps the rest in "
            "system memory, which these networks cannot run from). Choose device 'cpu' on Likeness Load e4e."
        )


def preview_images(e4e: LoadedE4E, codes: torch.Tensor, size: int) -> torch.Tensor:
    """W+ ``[B,18,512]`` -> IMAGE ``[B,size,size,3]`` through the e4e StyleGAN2 decoder, one code at a time."""
    inverter = e4e.decoder()
    bar = comfy.utils.ProgressBar(codes.shape[0])
    out = []
    with torch.inference_mode():
        for b in range(codes.shape[0]):
            comfy.model_management.throw_exception_if_processing_interrupted()
            img = inverter.decode(codes[b : b + 1], size=size, fast=size <= 256)
            out.append(((img.float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1))
            bar.update(1)
    return torch.cat(out)
