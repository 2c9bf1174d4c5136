"""FaceA-Net on ComfyUI's UNet: check the model, train a LoRA on it, apply a trained identity.

Training (:func:`training_unet`) works on a clone of the input MODEL, loaded on the training
device, and touches the shared UNet only for the duration of the ``with`` block, restoring it
in ``finally`` (also on errors and interruptions):

* the LoRA uses ComfyUI's own adapters: ``comfy.weight_adapter.LoRAAdapter.create_train`` (or
  ``LoRAAdapter.load(...).to_train()`` to continue a saved identity) for the parameters, and
  ``comfy.weight_adapter.bypass.BypassForwardHook`` to run each adapted layer as
  ``f(x) + alpha / rank * up(down(x))``; the result is exported as a ``LORA_MODEL`` dict
  (``diffusion_model.<module>.lora_up.weight`` / ``.lora_down.weight`` / ``.alpha``), which
  ComfyUI's LoraLoader applies as the same weight delta;
* ComfyUI runs nodes under ``torch.inference_mode``, so the UNet weights it loaded are inference
  tensors that autograd refuses to save for backward. Inside the block they are replaced by
  ordinary copies (same values; one extra copy of the UNet in memory while training, like
  TrainLoraNode's deep copy) and the originals are put back afterwards;
* optional gradient checkpointing wraps each input/middle/output block's forward;
* the denoiser calls ``BaseModel.apply_model(x_t, sigma, c_concat=..., c_crossattn=...)`` under
  autocast in the training dtype; other nodes' attention patches are not applied while training.

Applying (:func:`apply_identity`) is ComfyUI's standard LoRA path
(``comfy.sd.load_lora_for_models`` on a clone, exactly what LoraLoader does) plus the ID prompt
extended along the token axis with the identity's prompts and [feat] vectors.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import comfy.lora
import comfy.model_base
import comfy.model_management
import comfy.sd
import torch
import torch.utils.checkpoint
from comfy.weight_adapter import LoRAAdapter
from comfy.weight_adapter.bypass import BypassForwardHook

from ...models.errors import LikenessError
from ...models.facea import LORA_PREFIX, FaceAIdentity, is_lora_target, lora_modules
from .training import ordinary_weights, restore_weights

__all__ = [
    "check_sd15",
    "check_lora_fits",
    "LoRATraining",
    "TrainingUNet",
    "training_unet",
    "apply_identity",
    "extend_conditioning",
]

logger = logging.getLogger(__name__)

TRAINING_DTYPES = ("auto", "fp32", "bf16")


def check_sd15(model, node: str) -> bool:
    """Refuse anything but an SD1.x-family EPS UNet; return whether it is a 9-channel inpainting one.

    Raises:
        LikenessError: SDXL, SD2, SD3, Flux, v-prediction, ... with what to use instead.
    """
    base = model.model
    config = base.model_config
    unet = config.unet_config
    arch = type(config).__name__
    context = unet.get("context_dim")
    in_channels = int(unet.get("in_channels", 4))
    if context != 768 or unet.get("adm_in_channels") or base.model_type != comfy.model_base.ModelType.EPS:
        raise LikenessError(
            f"{node} needs a Stable Diffusion 1.5 model (an SD1.5 inpainting model is best); got {arch} "
            f"(context {context}, {base.model_type.name}). FaceA-Net redraws only the face with SD1.5: make the scene "
            "with any model (SDXL works), then refine the face with an SD1.5 inpainting checkpoint."
        )
    if in_channels == 9:
        return True
    if in_channels != 4:
        raise LikenessError(f"{node}: UNet with {in_channels} input channels is neither SD1.5 (4) nor inpainting (9).")
    return False


class LoRATraining:
    """Trainable LoRA adapters on the selected layers of a UNet (ComfyUI's weight adapters).

    Args:
        unet: ``BaseModel.diffusion_model``.
        targets: key of ``models.facea.LORA_TARGETS``.
        rank: LoRA rank; alpha = ``alpha`` (default rank, i.e. scale 1).
        init: a ``LORA_MODEL`` dict to continue from (its own rank/alpha are kept).
        device: where the adapters live.
    """

    def __init__(
        self, unet: torch.nn.Module, targets: str, rank: int, alpha: float | None = None, *, init=None, device=None
    ):
        self.adapters: dict[str, torch.nn.Module] = {}
        self.modules: dict[str, torch.nn.Module] = {}
        init = dict(init or {})
        wanted = set(lora_modules(init, "LoRA to continue")) if init else None
        for name, module in unet.named_modules():
            weight = getattr(module, "weight", None)
            is_layer = isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and weight is not None
            if wanted is not None:
                if name not in wanted:
                    continue
                alpha_t = init[f"{LORA_PREFIX}{name}.alpha"]
                adapter = LoRAAdapter.load(f"{LORA_PREFIX}{name}", init, float(alpha_t), None).to_train()
            elif is_lora_target(name, targets, is_layer):
                adapter = LoRAAdapter.create_train(weight, rank=rank, alpha=float(alpha or rank))
            else:
                continue
            adapter = adapter.to(device=device or weight.device, dtype=torch.float32).train()
            adapter.alpha.requires_grad_(False)
            self.adapters[name], self.modules[name] = adapter, module
        if wanted is not None and set(self.adapters) != wanted:
            raise LikenessError(
                f"the saved LoRA names {len(wanted - set(self.adapters))} layer(s) this UNet does not have "
                f"(e.g. {sorted(wanted - set(self.adapters))[:2]}); continue training on the model it was trained on."
            )
        if not self.adapters:
            raise LikenessError(f"no UNet layer matches the LoRA targets {targets!r}")
        self.hooks = [BypassForwardHook(self.modules[n], a) for n, a in self.adapters.items()]

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for a in self.adapters.values() for p in (a.lora_up.weight, a.lora_down.weight)]

    def inject(self) -> None:
        self._own = [h.module.__dict__.get("forward") for h in self.hooks]  # instance forwards set by others
        for hook in self.hooks:
            hook.inject()

    def eject(self) -> None:
        """Remove the adapters; each layer gets back exactly the forward it had (BypassForwardHook.eject
        would leave the bound class method behind as an instance attribute)."""
        for hook, own in zip(self.hooks, getattr(self, "_own", [None] * len(self.hooks)), strict=True):
            hook.eject()
            if own is None:
                hook.module.__dict__.pop("forward", None)
            else:
                hook.module.forward = own

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``LORA_MODEL`` dict on the CPU, float32."""
        out = {}
        for name, a in self.adapters.items():
            out[f"{LORA_PREFIX}{name}.lora_up.weight"] = a.lora_up.weight.detach().float().cpu().clone()
            out[f"{LORA_PREFIX}{name}.lora_down.weight"] = a.lora_down.weight.detach().float().cpu().clone()
            out[f"{LORA_PREFIX}{name}.alpha"] = a.alpha.detach().float().cpu().clone()
        return out


@dataclass
class TrainingUNet:
    """What :func:`training_unet` yields."""

    patcher: object
    base: comfy.model_base.BaseModel
    device: torch.device
    autocast: torch.dtype | None

    def denoiser(self, x_t: torch.Tensor, sigma: torch.Tensor, c_crossattn: torch.Tensor, c_concat=None, **kwargs):
        """``x0_hat = BaseModel.apply_model(x_t, sigma, ...)`` (float32), under autocast when set.

        ``kwargs`` go to ``apply_model`` as they are (e.g. ``transformer_options``)."""
        amp = (
            torch.autocast(self.device.type, dtype=self.autocast)
            if self.autocast is not None
            else contextlib.nullcontext()
        )
        with amp:
            return self.base.apply_model(x_t, sigma, c_concat=c_concat, c_crossattn=c_crossattn, **kwargs).float()


def _training_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    if choice not in TRAINING_DTYPES:
        raise LikenessError(f"training dtype must be one of {TRAINING_DTYPES}, got {choice!r}")
    if choice == "auto":
        choice = "bf16" if device.type == "cuda" and comfy.model_management.should_use_bf16(device) else "fp32"
    return torch.bfloat16 if choice == "bf16" else torch.float32


def _checkpoint_blocks(unet: torch.nn.Module) -> list[tuple[torch.nn.Module, object]]:
    """Wrap each input/middle/output block's forward in activation checkpointing; returns what to restore."""
    blocks = [
        *getattr(unet, "input_blocks", []),
        getattr(unet, "middle_block", None),
        *getattr(unet, "output_blocks", []),
    ]
    wrapped = []
    for block in (b for b in blocks if b is not None):
        own = block.__dict__.get("forward")  # an instance-level forward someone else set, kept and restored
        forward = block.forward

        def checkpointed(*args, _forward=forward, **kwargs):
            return torch.utils.checkpoint.checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        block.forward = checkpointed
        wrapped.append((block, own))
    return wrapped


@contextmanager
def training_unet(model, dtype: str = "auto", gradient_checkpointing: bool = False) -> Iterator[TrainingUNet]:
    """A clone of ``model`` loaded for training; the shared UNet is restored on exit (see module doc)."""
    with torch.inference_mode(False):
        patcher = model.clone(disable_dynamic=True)
        device = patcher.load_device
        autocast = _training_dtype(dtype, device)
        patcher.set_model_compute_dtype(autocast)
        if patcher.model_options.get("transformer_options", {}).get("patches_replace") or patcher.model_options.get(
            "transformer_options", {}
        ).get("patches"):
            logger.warning("Likeness training: attention patches on the MODEL are not applied while training")
        comfy.model_management.load_models_gpu([patcher], force_full_load=True)
        unet = patcher.model.diffusion_model
        swapped = ordinary_weights(unet)
        blocks = _checkpoint_blocks(unet) if gradient_checkpointing else []
        try:
            yield TrainingUNet(patcher, patcher.model, device, None if autocast == torch.float32 else autocast)
        finally:
            for block, own in reversed(blocks):
                if own is None:
                    del block.forward  # back to the class's forward
                else:
                    block.forward = own
            restore_weights(swapped)


def extend_conditioning(conditioning: list, extra: torch.Tensor) -> list:
    """``conditioning`` with ``extra`` ``[1, L, D]`` appended along the token axis (ConditioningConcat)."""
    out = []
    for cond, opts in conditioning:
        if cond.shape[-1] != extra.shape[-1]:
            raise LikenessError(
                f"the ID prompt has {cond.shape[-1]}-d tokens but the FaceA identity {extra.shape[-1]}-d ones: encode "
                "the ID prompt with the CLIP of the SD1.5 identity model, not the scene model's."
            )
        add = extra.to(device=cond.device, dtype=cond.dtype).expand(cond.shape[0], -1, -1)
        out.append([torch.cat((cond, add), dim=1), dict(opts)])
    return out


def check_lora_fits(model, lora: dict) -> None:
    """Every LoRA module must exist in the UNet with a weight its up/down factors fit."""
    unet = model.model.diffusion_model
    problems = []
    for name in lora_modules(lora, "FaceA identity"):
        try:
            weight = unet.get_submodule(name).weight
        except AttributeError:
            problems.append(f"{name} (no such layer)")
            continue
        up, down = lora[f"{LORA_PREFIX}{name}.lora_up.weight"], lora[f"{LORA_PREFIX}{name}.lora_down.weight"]
        if weight.shape[0] != up.shape[0] or weight[0].numel() != down.shape[1]:
            problems.append(f"{name} (weight {tuple(weight.shape)}, LoRA {up.shape[0]}x{down.shape[1]})")
    if problems:
        raise LikenessError(
            f"this FaceA identity's LoRA does not fit the MODEL in {len(problems)} layer(s), e.g. {problems[:2]}. "
            "Use a model of the SD1.5 family it was trained on (an identity trained with LoRA targets 'all' on an "
            "inpainting model only fits inpainting models)."
        )


def apply_identity(model, conditioning: list, identity: FaceAIdentity, strength: float, tasks=None):
    """``(MODEL with the identity's LoRA, conditioning + T_face + every T_v)``; inputs are not mutated."""
    check_sd15(model, "Apply FaceA Identity")
    check_lora_fits(model, identity.lora)
    patched = model
    if strength != 0:
        patched, _ = comfy.sd.load_lora_for_models(model, None, identity.lora, strength, 0)
    if tasks is not None and not tasks:
        return patched, conditioning
    return patched, extend_conditioning(conditioning, identity.prompt_context(tasks))
