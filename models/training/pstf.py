"""The PSTF-AttControl W+-stream trainer (UnicomAI, IVC 2025) on a diffusers SDXL UNet with InstantID.

* Initialisation (methods.md 4.3): every site's ``to_k_ip``/``to_v_ip``/``to_k_style``/``to_v_style`` start as
  copies of that attn2's ``to_k``/``to_v``; InstantID's ``ip-adapter.bin`` then overwrites the identity
  Resampler (``image_proj``) and ``to_k_ip``/``to_v_ip``; the W+ Resampler (``image_style_proj``) is random.
* Trainable: ``image_style_proj`` and ``to_k_style``/``to_v_style``. Frozen: UNet, IdentityNet
  (InstantID's ControlNet, fed the 5-keypoint image and the 16 identity tokens), ``image_proj``,
  ``to_k_ip``/``to_v_ip``, VAE (fp32, as the official script), text encoders.
* Loss ``MSE(eps_pred, eps)``, gradient norm clipped to 1.0; dropouts and the StyleGAN2-decoded W+
  augmentation of :mod:`.pstf_data`. Trainable weights stay fp32 under mixed precision (the official
  script trains them in fp16).
* Output: ``pytorch_model.bin`` = ``{"image_proj", "image_style_proj", "ip_adapter"}``, the official
  layout that the PSTF loader (:func:`~..pstf.load_pstf_adapter`) and the Likeness nodes read.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..attention.sites import AttnSite
from ..directions.formats import load_directions
from ..errors import CheckpointError, LikenessError
from ..pstf.diffusers_unet import apply_pstf_to_unet
from ..pstf.model import PSTFAdapter, load_pstf_adapter
from ..pstf.sites import SDXL_SITES, SDXL_TRANSFORMERS
from .base import BaseModels, load_base
from .dataset import DatasetItem, load_items, validation_item
from .pstf_data import EDIT_KEYS, PSTFSamples, kps_tensor, render_edit_targets
from .sample import ddim_sample, decode_latents, save_strip
from .state import cpu_state, load_into

__all__ = ["PSTFOptions", "PSTFTrainModule", "PSTFTrainer", "pstf_sites_of", "init_pstf_adapter"]

logger = logging.getLogger(__name__)

_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_STREAMS = ("to_k_ip", "to_v_ip", "to_k_style", "to_v_style")
NEGATIVE_PROMPT = "ugly, deformed, noisy, blurry, low contrast"


@dataclass
class PSTFOptions:
    """What the PSTF trainer needs besides :class:`~.loop.TrainConfig`.

    Attributes:
        data: a dataset prepared with ``--method pstf``.
        base: diffusers SDXL folder or single file (ignored with ``base_models``).
        instantid: InstantID ``ip-adapter.bin`` (identity Resampler + ``to_k_ip``/``to_v_ip``).
        controlnet: InstantID IdentityNet, a diffusers ``ControlNetModel`` folder (ignored with ``controlnet_model``).
        deltas: PreciseControl ``all_delta_w_dict.json`` for the W+ augmentation (None: no augmentation).
        decoder: ``decode(W+) -> RGB`` for the edited targets (the e4e StyleGAN2); needed with ``deltas``.
        kps_analyzer: detector for the decoded faces' keypoints (insightface buffalo_l, det 320), or None.
        resolution: training image side (1024 in the paper).
        edit_prob: probability of the W+ augmentation (0.3).
        tokenizer: single-file bases: CLIP vocab folder.
        resampler: Resampler hyper-parameters (the official ones by default; the smoke run uses tiny ones).
        validation_face / validation_data / validation_prompt / validation_steps / validation_guidance /
            validation_seed: validation images (DDIM, CFG 5.0, IdentityNet 0.8, W+ scale 0.6 as PSTF's demo).
        smoke_sites: accept the tiny smoke UNet (SDXL layout, depth 1, small widths).
    """

    data: Path
    base: str | None = None
    instantid: Path | None = None
    controlnet: Path | None = None
    deltas: Path | None = None
    decoder: Callable[[torch.Tensor], torch.Tensor] | None = None
    kps_analyzer: Any = None
    resolution: int = 1024
    edit_prob: float = 0.3
    tokenizer: Path | None = None
    resampler: dict[str, int] | None = None
    noise_offset: float | None = None
    validation_face: str | None = None
    validation_data: Path | None = None
    validation_prompt: str = "a person"
    validation_steps: int = 30
    validation_guidance: float = 5.0
    validation_seed: int = 889469
    smoke_sites: bool = False


def pstf_sites_of(unet: nn.Module, smoke: bool = False) -> tuple[AttnSite, ...]:
    """The attn2 sites of a diffusers SDXL UNet: :data:`~..pstf.sites.SDXL_SITES` (checked), or with ``smoke``
    those of a reduced SDXL layout (same transformer names, any depth and width).

    Raises:
        LikenessError: not the SDXL layout.
    """
    blocks = {name: block for name, block, _, _ in SDXL_TRANSFORMERS}
    sites = []
    for index, name in enumerate(unet.attn_processors):
        if not name.endswith("attn2.processor"):
            continue
        parent, _, rest = name.partition(".transformer_blocks.")
        attn = unet.get_submodule(name[: -len(".processor")])
        if parent not in blocks:
            raise LikenessError(f"The UNet's cross-attention {name} is not in SDXL's layout; PSTF trains on SDXL.")
        key = (*blocks[parent], int(rest.split(".")[0]))
        sites.append(AttnSite(index, name, key, int(attn.to_q.out_features), int(attn.heads)))
    if not smoke and tuple(sites) != SDXL_SITES:
        raise LikenessError(f"The UNet has {len(sites)} cross-attention sites, not SDXL's 70; PSTF trains on SDXL.")
    return tuple(sites)


def init_pstf_adapter(
    unet: nn.Module, sites: tuple[AttnSite, ...], instantid: Path, resampler: dict[str, int] | None
) -> PSTFAdapter:
    """The official initialisation (module docstring) as an fp32 :class:`PSTFAdapter` on the UNet's device."""
    ctx = int(unet.config.cross_attention_dim)
    adapter = PSTFAdapter(True, ctx, sites, resampler)
    with torch.no_grad():
        for site in sites:
            attn, layer = unet.get_submodule(site.diffusers_name[: -len(".processor")]), adapter.layer(site)
            for name in _STREAMS:
                getattr(layer, name).weight.copy_(getattr(attn, "to_k" if "_k_" in name else "to_v").weight.float())
        ident = load_pstf_adapter(instantid, cross_attention_dim=ctx, sites=sites, resampler=resampler)
        if ident.has_style:
            raise CheckpointError(f"--instantid {instantid} is a PSTF file; give InstantID's ip-adapter.bin.")
        adapter.image_proj.load_state_dict(ident.image_proj.float().state_dict(), strict=True)
        for site in sites:
            for name in ("to_k_ip", "to_v_ip"):
                getattr(adapter.layer(site), name).weight.copy_(getattr(ident.layer(site), name).weight.float())
    return adapter.to(unet.device)


class PSTFTrainModule(nn.Module):
    """UNet + IdentityNet + adapter (processors share the adapter's Linear modules)."""

    def __init__(self, unet: nn.Module, controlnet: nn.Module, adapter: PSTFAdapter) -> None:
        super().__init__()
        self.unet, self.controlnet, self.adapter = unet, controlnet, adapter
        installed = apply_pstf_to_unet(unet, adapter, scale=1.0, scale_style=1.0)
        for index, proc in installed.items():  # train the adapter's own modules, never cast copies
            for name in _STREAMS:
                setattr(proc, name, getattr(adapter.layer(index), name))
        self.processors = installed

    def forward(self, noisy, t, text, pooled, time_ids, embedding, wplus, kps_image, cn_scale: float = 1.0):
        dtype = text.dtype
        id_tokens = self.adapter.id_tokens(embedding).to(dtype)
        w_tokens = self.adapter.wplus_tokens(wplus).to(dtype)
        added = {"text_embeds": pooled.to(dtype), "time_ids": time_ids.to(dtype)}
        down, mid = self.controlnet(
            noisy.to(dtype),
            t,
            encoder_hidden_states=id_tokens,
            controlnet_cond=kps_image.to(dtype),
            conditioning_scale=cn_scale,
            added_cond_kwargs=added,
            return_dict=False,
        )
        ctx = torch.cat([text, id_tokens, w_tokens], dim=1)
        return self.unet(
            noisy.to(dtype),
            t,
            ctx,
            added_cond_kwargs=added,
            down_block_additional_residuals=list(down),
            mid_block_additional_residual=mid,
        ).sample

    def set_scale(self, style: float) -> None:
        for proc in self.processors.values():
            proc.scale_style = style

    def official_state(self) -> dict[str, OrderedDict]:
        parts = ("image_proj", "image_style_proj", "ip_adapter")
        return {name: cpu_state(getattr(self.adapter, name).state_dict()) for name in parts}

    def load_official(self, state: Mapping[str, Any]) -> None:
        load_into(self.adapter.state_dict(), state, "PSTF adapter")


class PSTFTrainer:
    """:class:`~.loop.TrainingTask` of PSTF-AttControl's W+ stream (see the module docstring).

    Args:
        opts: :class:`PSTFOptions`.
        base_models: the frozen SDXL base (smoke models); None loads ``opts.base``.
        controlnet_model: the IdentityNet (smoke); None loads ``opts.controlnet``.
    """

    official_name = "pytorch_model.bin"

    def __init__(
        self, opts: PSTFOptions, base_models: BaseModels | None = None, controlnet_model: nn.Module | None = None
    ):
        if opts.resolution % 64:
            raise LikenessError(f"--resolution must be a multiple of 64, got {opts.resolution}.")
        self.items: list[DatasetItem] = load_items(opts.data, "pstf")
        missing = [
            f
            for f, v in (
                ("--base", base_models or opts.base),
                ("--instantid", opts.instantid),
                ("--controlnet", controlnet_model or opts.controlnet),
            )
            if not v
        ]
        if missing:
            raise LikenessError(
                f"PSTF training needs {', '.join(missing)}: the SDXL base, InstantID's ip-adapter.bin and its "
                "IdentityNet (ControlNetModel folder) from InstantX/InstantID."
            )
        if opts.deltas is not None and opts.decoder is None:
            raise LikenessError("The W+ augmentation (--deltas) renders edited targets with StyleGAN2: pass --e4e.")
        self.opts, self.base, self.controlnet = opts, base_models, controlnet_model
        self.num_items = len(self.items)
        self.deltas = _load_deltas(opts.deltas) if opts.deltas is not None else None
        self.validation_item = validation_item(opts.validation_face, opts.data, opts.validation_data, "pstf")
        self.acc: Any = None

    def fingerprint(self) -> dict[str, Any]:
        o = self.opts
        return {
            "method": "pstf",
            "base": self.base.source if self.base else o.base,
            "items": self.num_items,
            "data": str(Path(o.data).resolve()),
            "resolution": o.resolution,
            "instantid": str(o.instantid),
            "controlnet": str(o.controlnet),
            "deltas": str(o.deltas),
            "edit_prob": o.edit_prob,
            "resampler": o.resampler,
            "noise_offset": o.noise_offset,
        }

    def setup(self, accelerator: Any) -> PSTFTrainModule:
        self.acc = accelerator
        o, device, dtype = self.opts, accelerator.device, _DTYPES[accelerator.mixed_precision]
        if self.base is None:
            self.base = load_base(o.base, "sdxl", tokenizer_dir=o.tokenizer)
        if self.controlnet is None:
            from diffusers import ControlNetModel

            self.controlnet = ControlNetModel.from_pretrained(o.controlnet, local_files_only=True)
        unet = self.base.unet.requires_grad_(False)
        sites = pstf_sites_of(unet, smoke=o.smoke_sites)
        adapter = init_pstf_adapter(unet, sites, o.instantid, o.resampler)  # from the fp32 weights
        unet.to(device, dtype)
        self.controlnet.requires_grad_(False).eval().to(device, dtype)
        self.base.vae.requires_grad_(False).to(device, torch.float32)  # the SDXL VAE overflows in fp16
        self.base.text.requires_grad_(False).to(device, dtype)
        adapter.to(device).requires_grad_(False)
        adapter.image_style_proj.requires_grad_(True)
        for site in sites:
            layer = adapter.layer(site)
            layer.to_k_style.requires_grad_(True)
            layer.to_v_style.requires_grad_(True)
        module = PSTFTrainModule(unet, self.controlnet, adapter)
        logger.info(
            "PSTF: %d sites, %d trainable parameters",
            len(sites),
            sum(p.numel() for p in module.parameters() if p.requires_grad),
        )
        return module

    def param_groups(self, module: PSTFTrainModule, lr: float) -> list[dict[str, Any]]:
        style = [p for name, p in module.adapter.ip_adapter.named_parameters() if "_style" in name]
        return [
            {"name": "image_style_proj", "params": list(module.adapter.image_style_proj.parameters()), "lr": lr},
            {"name": "style_kv", "params": style, "lr": lr},
        ]

    def samples(self) -> PSTFSamples:
        return PSTFSamples(self.items, self.opts.resolution, self.deltas, self.opts.edit_prob)

    def _time_ids(self, original: torch.Tensor) -> torch.Tensor:
        size = self.opts.resolution
        crop_target = original.new_tensor([0, 0, size, size]).expand(original.shape[0], 4)
        return torch.cat([original, crop_target], dim=1).float()

    def step(self, module: nn.Module, batch: dict[str, Any], gen: torch.Generator) -> dict[str, torch.Tensor]:
        base, dtype, o = self.base, _DTYPES[self.acc.mixed_precision], self.opts
        images = batch["image"].clone()
        # StyleGAN2 and the SDXL VAE run in fp32 (the VAE overflows in fp16), outside mixed precision
        with torch.no_grad(), torch.autocast(device_type=self.acc.device.type, enabled=False):
            if o.decoder is not None:
                render_edit_targets(
                    images, batch["kps_image"], batch["wplus"], batch["edit"], o.decoder, o.kps_analyzer
                )
            latents = base.vae.encode(images.float()).latent_dist.sample(generator=gen)
            latents = latents * base.vae.config.scaling_factor
        with torch.no_grad():
            text = base.text(batch["caption"])
        noise = torch.randn(latents.shape, generator=gen, device=gen.device)
        if o.noise_offset:
            noise = noise + o.noise_offset * torch.randn(*latents.shape[:2], 1, 1, generator=gen, device=gen.device)
        t = torch.randint(
            0, base.scheduler.config.num_train_timesteps, (latents.shape[0],), generator=gen, device=gen.device
        )
        noisy = base.scheduler.add_noise(latents, noise, t)
        pred = module(
            noisy,
            t,
            text.context.to(dtype),
            text.pooled,
            self._time_ids(batch["original_size"]),
            batch["embedding"],
            batch["wplus"],
            batch["kps_image"],
        )
        loss = F.mse_loss(pred.float(), noise.float())
        return {"loss": loss, "rec": loss.detach(), "edited": batch["edit"].float().mean()}

    def official_state(self, module: PSTFTrainModule) -> dict[str, Any]:
        return module.official_state()

    def load_official(self, module: PSTFTrainModule, state: Mapping[str, Any]) -> None:
        module.load_official(state)

    def validate(self, module: PSTFTrainModule, step: int, folder: Path) -> Path | None:
        item, o = self.validation_item, self.opts
        if item is None:
            return None
        dev, dtype = self.acc.device, _DTYPES[self.acc.mixed_precision]
        text = self.base.text([o.validation_prompt, NEGATIVE_PROMPT])
        size = o.resolution
        kps = kps_tensor(item.tensors["kps"].numpy() * (size / item.image("aligned.png").width), size)
        emb = torch.stack([item.tensors["embedding"], torch.zeros(512)]).to(dev)
        wplus = torch.stack([item.tensors["wplus"], torch.zeros(18, 512)]).to(dev)
        time_ids = self._time_ids(torch.tensor([[size, size]] * 2)).to(dev)
        module.set_scale(0.6)

        def eps(x: torch.Tensor, t: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            out = module(
                torch.cat([x, x]),
                t.expand(2),
                text.context.to(dtype),
                text.pooled,
                time_ids,
                emb,
                wplus,
                kps[None].expand(2, -1, -1, -1).to(dev),
                cn_scale=0.8,
            )
            return out[:1], out[1:]

        with self.acc.autocast():
            latents = ddim_sample(
                eps,
                (1, 4, size // 8, size // 8),
                self.base.scheduler.config,
                steps=o.validation_steps,
                guidance=o.validation_guidance,
                seed=o.validation_seed,
                device=dev,
            )
        module.set_scale(1.0)
        image = decode_latents(self.base.vae, latents)[0]
        face = np.asarray(item.image("aligned.png").convert("RGB"))
        kps_img = (kps.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        return save_strip([face, kps_img, image], Path(folder) / f"step-{step:06d}.png")


def _load_deltas(path: Path) -> dict[str, Any]:
    directions = load_directions(path).directions
    missing = [k for k in EDIT_KEYS if k not in directions]
    if missing:
        raise LikenessError(
            f"--deltas {path} lacks the PreciseControl key(s) {missing} PSTF edits with; use all_delta_w_dict.json "
            "from rishubhpar/PreciseControl."
        )
    return {k: directions[k] for k in EDIT_KEYS}
