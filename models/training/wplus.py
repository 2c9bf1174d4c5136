"""The W+ adapter trainer (csxmli2016/w-plus-adapter, CVPR 2024), stages 1 and 2, on a diffusers SD1.5 UNet.

* Trainable: stage 1 ``w_proj`` (:class:`~..wplus_adapter.WProjModel`, random init) and the per-site
  ``to_q/k/v_wplus`` of all 16 attn2 layers, **initialised as copies of that layer's** ``to_q``,
  ``to_k``, ``to_v``; stage 2 the same site layers only, starting from the stage-1 file, with ``w_proj``
  loaded from it and frozen. UNet, VAE and text encoder are frozen (the UNet stays fp32 under mixed
  precision, the VAE and text encoder run in the mixed-precision dtype, as the official scripts).
* Loss: stage 1 ``MSE(eps_pred, eps)``; stage 2 ``L_rec + lambda_disen * L_disen + lambda_preserve *
  L_preserve`` (2.0 / 1.0): L_disen = MSE outside the eroded, blurred face mask between the prediction
  and the (detached) prediction with perturbed codes; L_preserve = MSE between the prediction and the
  (detached) prediction at residual scale 0 (methods.md 3.7).
* Output: ``wplus_adapter.bin`` = ``{"w_proj": ..., "wplus_adapter": {"<processor index>.to_k_wplus.weight",
  ...}}``, the official layout that ``Likeness Load W+ Adapter`` reads.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..directions.formats import load_directions
from ..errors import LikenessError
from ..files.checkpoints import load_file
from ..wplus_adapter.model import WProjModel
from ..wplus_adapter.processor import WPlusAttnProcessor
from ..wplus_adapter.sites import SD15_WPLUS_SITES, WPlusSite
from .base import BaseModels, load_base
from .dataset import DatasetItem, load_items, validation_item
from .sample import ddim_sample, decode_latents, save_strip
from .state import cpu_state, load_into
from .wplus_data import DirectionBank, WPlusSamples, perturb_wplus

__all__ = ["WPlusOptions", "WPlusTrainModule", "WPlusTrainer", "install_wplus_processors", "sites_of"]

logger = logging.getLogger(__name__)

NEGATIVE_PROMPT = "monochrome, lowres, bad anatomy, worst quality, low quality"
_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class WPlusOptions:
    """What the W+ trainer needs besides :class:`~.loop.TrainConfig`.

    Attributes:
        stage: 1 (face images) or 2 (in-the-wild images, disentanglement losses).
        data: a dataset prepared with ``--method wplus``.
        base: diffusers SD1.5 folder or single file (ignored when ``base_models`` is given).
        resolution: training image side in px (512 in the paper).
        stage1: stage 2 only: the stage-1 ``wplus_adapter.bin``.
        lambda_disen, lambda_preserve: stage-2 loss weights (2.0, 1.0 as train_wild.sh).
        direction_bank: stage 2: ``att_direction_scale.pth`` (S-Lab NC licence) or None.
        ganspace_pca, ganspace_configs: stage 2: ``ffhq_pca.pt`` + ``ganspace_configs.csv`` or None.
        fullbody: stage 2: full-body photos (SHHQ-like): the official full-body augmentation parameters.
        tokenizer: single-file bases: folder with the CLIP vocab.json + merges.txt.
        validation_face: item id (in ``validation_data`` or ``data``) to render validation images for.
        validation_data: dataset holding ``validation_face`` (default ``data``).
        validation_prompt: prompt (default: stage 1 "a photo of a face", stage 2 "a photo of a person").
        validation_steps, validation_guidance, validation_seed: DDIM steps, CFG scale, noise seed.
        smoke_sites: accept a UNet whose site widths differ from SD1.5's (the tiny smoke UNet).
    """

    stage: int
    data: Path
    base: str | None = None
    resolution: int = 512
    stage1: Path | None = None
    lambda_disen: float = 2.0
    lambda_preserve: float = 1.0
    direction_bank: Path | None = None
    ganspace_pca: Path | None = None
    ganspace_configs: Path | None = None
    fullbody: bool = False
    tokenizer: Path | None = None
    validation_face: str | None = None
    validation_data: Path | None = None
    validation_prompt: str | None = None
    validation_steps: int = 30
    validation_guidance: float = 7.5
    validation_seed: int = 23
    smoke_sites: bool = False


def sites_of(unet: nn.Module, smoke: bool = False) -> list[WPlusSite]:
    """The attn2 sites of a diffusers UNet, checked against the SD1.5 site table.

    Raises:
        LikenessError: the UNet's cross-attention layers are not SD1.5's (names, processor indices,
            and unless ``smoke`` widths).
    """
    table = {s.index: s for s in SD15_WPLUS_SITES}
    found = []
    for index, name in enumerate(unet.attn_processors):
        if name.endswith("attn2.processor"):
            attn = unet.get_submodule(name[: -len(".processor")])
            found.append((index, name, int(attn.to_q.out_features), int(attn.heads)))
    mismatch = [f for f in found if f[0] not in table or table[f[0]].diffusers_name != f[1]]
    wrong_width = [f for f in found if not smoke and f[0] in table and table[f[0]].hidden_size != f[2]]
    if mismatch or len(found) != len(table) or wrong_width:
        raise LikenessError(
            f"The UNet's cross-attention layers are not SD1.5's ({len(found)} attn2 layers, first mismatch "
            f"{(mismatch or wrong_width or found)[0][:3]}); the W+ adapter trains on SD1.5 (16 sites)."
        )
    return [WPlusSite(i, name, table[i].comfy_key, hidden, heads) for i, name, hidden, heads in found]


def install_wplus_processors(unet: nn.Module, sites: list[WPlusSite]) -> dict[int, WPlusAttnProcessor]:
    """Put a :class:`WPlusAttnProcessor` (fp32) on every site, ``to_q/k/v_wplus`` copied from the layer's
    ``to_q/k/v`` (the official initialisation); returns ``{processor index: processor}``."""
    procs = dict(unet.attn_processors)
    installed = {}
    for site in sites:
        attn = unet.get_submodule(site.diffusers_name[: -len(".processor")])
        proc = WPlusAttnProcessor(site.hidden_size, int(attn.to_k.in_features), scale=1.0, num_tokens=4)
        with torch.no_grad():
            for mine, theirs in (("to_q_wplus", "to_q"), ("to_k_wplus", "to_k"), ("to_v_wplus", "to_v")):
                getattr(proc, mine).weight.copy_(getattr(attn, theirs).weight.float())
        procs[site.diffusers_name] = proc.to(attn.to_q.weight.device)
        installed[site.index] = proc
    unet.set_attn_processor(procs)
    return installed


class WPlusTrainModule(nn.Module):
    """UNet + ``w_proj`` + the installed processors; ``forward`` = the UNet with context ``[text | WProj(W)]``."""

    def __init__(self, unet: nn.Module, w_proj: WProjModel, processors: dict[int, WPlusAttnProcessor]) -> None:
        super().__init__()
        self.unet = unet
        self.w_proj = w_proj
        self.indices = sorted(processors)
        self.adapter_modules = nn.ModuleList(processors[i] for i in self.indices)

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, text: torch.Tensor, wplus: torch.Tensor) -> torch.Tensor:
        tokens = self.w_proj(wplus.float()).to(text.dtype)
        return self.unet(noisy, t, torch.cat([text, tokens], dim=1)).sample

    def set_scale(self, scale: float) -> None:
        for proc in self.adapter_modules:
            proc.scale = scale

    def official_state(self) -> dict[str, OrderedDict]:
        adapter = OrderedDict()
        for index, proc in zip(self.indices, self.adapter_modules, strict=True):
            adapter.update({f"{index}.{k}": v for k, v in cpu_state(proc.state_dict()).items()})
        return {"w_proj": cpu_state(self.w_proj.state_dict()), "wplus_adapter": adapter}

    def load_official(self, state: Mapping[str, Any], source: str = "") -> None:
        mine = {f"w_proj.{k}": v for k, v in self.w_proj.state_dict().items()}
        for index, proc in zip(self.indices, self.adapter_modules, strict=True):
            mine.update({f"wplus_adapter.{index}.{k}": v for k, v in proc.state_dict().items()})
        load_into(mine, state, f"UNet's W+ adapter{f' ({source})' if source else ''}")


class WPlusTrainer:
    """:class:`~.loop.TrainingTask` of the W+ adapter (see the module docstring).

    Args:
        opts: :class:`WPlusOptions`.
        base_models: the frozen base (the smoke models); None loads ``opts.base``.
    """

    official_name = "wplus_adapter.bin"

    def __init__(self, opts: WPlusOptions, base_models: BaseModels | None = None) -> None:
        if opts.stage not in (1, 2):
            raise LikenessError(f"--stage must be 1 or 2, got {opts.stage}.")
        if opts.stage == 2 and opts.stage1 is None:
            raise LikenessError("Stage 2 starts from a stage-1 adapter: pass --stage1 .../wplus_adapter.bin.")
        if opts.resolution % 64:
            raise LikenessError(f"--resolution must be a multiple of 64, got {opts.resolution}.")
        self.items: list[DatasetItem] = load_items(opts.data, "wplus")
        if base_models is None and not opts.base:
            raise LikenessError("Give the SD1.5 base model with --base (a diffusers folder or a .safetensors file).")
        self.opts, self.base = opts, base_models
        self.num_items = len(self.items)
        self.bank = _load_bank(opts) if opts.stage == 2 else None
        self.validation_item = validation_item(opts.validation_face, opts.data, opts.validation_data, "wplus")
        self.acc: Any = None

    def fingerprint(self) -> dict[str, Any]:
        o = self.opts
        return {
            "method": "wplus",
            "stage": o.stage,
            "base": self.base.source if self.base else o.base,
            "data": str(Path(o.data).resolve()),
            "items": self.num_items,
            "resolution": o.resolution,
            "stage1": str(o.stage1),
            "lambdas": [o.lambda_disen, o.lambda_preserve],
            "fullbody": o.fullbody,
        }

    def setup(self, accelerator: Any) -> WPlusTrainModule:
        self.acc = accelerator
        if self.base is None:
            self.base = load_base(self.opts.base, "sd15", tokenizer_dir=self.opts.tokenizer)
        device, dtype = accelerator.device, _DTYPES[accelerator.mixed_precision]
        unet = self.base.unet.requires_grad_(False).to(device, torch.float32)
        self.base.vae.requires_grad_(False).to(device, dtype)
        self.base.text.requires_grad_(False).to(device, dtype)
        sites = sites_of(unet, smoke=self.opts.smoke_sites)
        ctx = int(unet.config.cross_attention_dim)
        module = WPlusTrainModule(unet, WProjModel(ctx).to(device), install_wplus_processors(unet, sites))
        if self.opts.stage == 2:
            module.load_official(load_file(self.opts.stage1), str(self.opts.stage1))
            module.w_proj.requires_grad_(False)
        logger.info(
            "W+ adapter stage %d: %d sites, %d trainable parameters",
            self.opts.stage,
            len(sites),
            sum(p.numel() for p in module.parameters() if p.requires_grad),
        )
        return module

    def param_groups(self, module: WPlusTrainModule, lr: float) -> list[dict[str, Any]]:
        groups = [{"name": "wplus_adapter", "params": list(module.adapter_modules.parameters()), "lr": lr}]
        if self.opts.stage == 1:
            groups.insert(0, {"name": "w_proj", "params": list(module.w_proj.parameters()), "lr": lr})
        return groups

    def samples(self) -> WPlusSamples:
        return WPlusSamples(self.items, self.opts.stage, self.opts.resolution, self.opts.fullbody)

    def step(self, module: nn.Module, batch: dict[str, Any], gen: torch.Generator) -> dict[str, torch.Tensor]:
        base, dtype = self.base, _DTYPES[self.acc.mixed_precision]
        with torch.no_grad():
            latents = base.vae.encode(batch["image"].to(dtype)).latent_dist.sample(generator=gen)
            latents = latents.float() * base.vae.config.scaling_factor
            text = base.text(batch["caption"]).context
        noise = torch.randn(latents.shape, generator=gen, device=gen.device)
        t = torch.randint(
            0, base.scheduler.config.num_train_timesteps, (latents.shape[0],), generator=gen, device=gen.device
        )
        noisy = base.scheduler.add_noise(latents, noise, t)
        pred = module(noisy, t, text, batch["wplus"])
        rec = F.mse_loss(pred.float(), noise.float())
        if self.opts.stage == 1:
            return {"loss": rec, "rec": rec}
        inner = self.acc.unwrap_model(module)
        negative = perturb_wplus(batch["wplus"], batch["drop_w"], gen, self.bank)
        with torch.no_grad():
            pred_aug = inner(noisy, t, text, negative)
            inner.set_scale(0.0)
            pred_now = inner(noisy, t, text, negative)
            inner.set_scale(1.0)
        region = 1.0 - F.interpolate(batch["mask"].float(), size=latents.shape[-2:], mode="bilinear")
        disen = F.mse_loss(pred_aug.float() * region, pred.float() * region)
        preserve = F.mse_loss(pred_now.float(), pred.float())
        loss = rec + self.opts.lambda_disen * disen + self.opts.lambda_preserve * preserve
        return {"loss": loss, "rec": rec, "disen": disen, "preserve": preserve}

    def official_state(self, module: WPlusTrainModule) -> dict[str, Any]:
        return module.official_state()

    def load_official(self, module: WPlusTrainModule, state: Mapping[str, Any]) -> None:
        module.load_official(state)

    def validate(self, module: WPlusTrainModule, step: int, folder: Path) -> Path | None:
        item = self.validation_item
        if item is None:
            return None
        base, o = self.base, self.opts
        code = item.tensors["wplus" if o.stage == 1 else "wplus_whitened"][None].to(self.acc.device)
        prompt = o.validation_prompt or ("a photo of a face" if o.stage == 1 else "a photo of a person")
        text = base.text([prompt, NEGATIVE_PROMPT]).context
        codes = torch.cat([code, torch.zeros_like(code)])
        delay = int(0.2 * o.validation_steps) if o.stage == 2 else -1  # the stage-2 "20 % delay" (methods.md 3.4)

        def eps(x: torch.Tensor, t: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            module.set_scale(0.0 if i <= delay else 1.0)
            out = module(torch.cat([x, x]), t.expand(2), text, codes)
            return out[:1], out[1:]

        side = o.resolution // 8
        with self.acc.autocast():
            latents = ddim_sample(
                eps,
                (1, 4, side, side),
                base.scheduler.config,
                steps=o.validation_steps,
                guidance=o.validation_guidance,
                seed=o.validation_seed,
                device=self.acc.device,
            )
        module.set_scale(1.0)
        image = decode_latents(base.vae, latents)[0]
        face = np.asarray(item.image("aligned.png").convert("RGB"))
        return save_strip([face, image], Path(folder) / f"step-{step:06d}.png")


def _load_bank(opts: WPlusOptions) -> DirectionBank | None:
    linear, ganspace = (), ()
    if opts.direction_bank is not None:
        linear = tuple(load_directions(opts.direction_bank).directions.values())
    if (opts.ganspace_pca is None) != (opts.ganspace_configs is None):
        raise LikenessError("--ganspace-pca and --ganspace-configs go together (ffhq_pca.pt + ganspace_configs.csv).")
    if opts.ganspace_pca is not None:
        ganspace = tuple(load_directions(opts.ganspace_pca, configs=opts.ganspace_configs).directions.values())
    if not linear and not ganspace:
        logger.warning(
            "W+ stage 2 without --direction-bank / --ganspace-*: the 35 %% of steps the official script perturbs "
            "W+ along attribute directions use the Gaussian-noise perturbation instead"
        )
        return None
    return DirectionBank(linear, ganspace)
