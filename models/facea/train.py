"""FaceA-Net's attribute-driven fine-tuning step (Eq. 2), against a plain denoiser callable.

Each step draws ``batch_size`` samples for the global task (face mask, ``T_face``) and
``batch_size`` for ONE local task picked at random for the step (its part mask, ``T_v``), runs
them through the denoiser in one batch, and adds the two epsilon losses:

    L_A = E||eps - eps_theta(z_t, t, s, T_face, m_face)||^2 + E||eps - eps_theta(z_t, t, s, T_v, m_v)||^2

Samples draw their reference photo uniformly (with replacement), their timestep uniformly from
the 1000 DDPM steps, and fresh Gaussian noise, all from the step's generator.

Inpainting models (9 input channels) get the mask and the masked-image latent as extra channels
(``c_concat = [mask, masked latent]``, ComfyUI's order). Other SD1.5 models get no extra
channels: they see the noised latent everywhere, as ComfyUI's sampler does with a latent noise
mask (it re-noises the unmasked area to the current sigma), and only the loss is masked.

Loss region: ``"mask"`` (default) = mean inside the task mask grown by ``loss_dilate`` latent
pixels; ``"latent"`` = mean over the whole latent (the paper does not say which it used).

Trainable: the UNet LoRA (learning rate 1.2e-4) and the [feat] vectors (2e-3), AdamW, batch 4,
600 steps by default (the paper trains 1000 and recommends 600 in practice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch

from ..errors import LikenessError
from ..finetune import SD15_SCHEDULE, VPSchedule, add_noise, eps_from_denoised, masked_mse, sample_sigmas
from .feat import FeatVectors
from .tasks import LOCAL_TASKS, TASKS, dilate_latent_mask

__all__ = ["FaceARecipe", "TaskLatents", "make_optimizer", "facea_step_fn", "LOSS_REGIONS"]

LOSS_REGIONS = ("mask", "latent")
Denoiser = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class FaceARecipe:
    """Hyper-parameters of one fine-tuning run (defaults: the paper's, or ours where it is silent).

    Attributes:
        steps: optimisation steps (paper: 1000 in experiments, 600 recommended).
        batch_size: samples per task per step (paper: 4).
        lora_lr, feat_lr: AdamW learning rates of the LoRA and of the [feat] vectors.
        weight_decay: AdamW weight decay of the LoRA (the vectors get none) [ours: 1e-2, AdamW's default].
        global_task: train the face task (off for an attribute transplant).
        local_tasks: local tasks one is drawn from per step (empty: global task only).
        loss_region: ``"mask"`` or ``"latent"``.
        loss_dilate: latent pixels the loss mask is grown by [ours: 1 = 8 image pixels].
        grad_clip: global gradient-norm clip [ours: 1.0]; None disables.
        rank: LoRA rank (paper: 48); alpha = rank (scale 1, diffusers' LoRA training convention).
    """

    steps: int = 600
    batch_size: int = 4
    lora_lr: float = 1.2e-4
    feat_lr: float = 2e-3
    weight_decay: float = 1e-2
    global_task: bool = True
    local_tasks: tuple[str, ...] = LOCAL_TASKS
    loss_region: str = "mask"
    loss_dilate: int = 1
    grad_clip: float | None = 1.0
    rank: int = 48

    def __post_init__(self) -> None:
        bad = [t for t in self.local_tasks if t not in LOCAL_TASKS]
        if bad:
            raise LikenessError(f"unknown local task(s) {bad}; choose from {list(LOCAL_TASKS)}")
        if not self.global_task and not self.local_tasks:
            raise LikenessError("nothing to train: the global task is off and no local task is selected")
        if self.loss_region not in LOSS_REGIONS:
            raise LikenessError(f"loss region must be one of {LOSS_REGIONS}, got {self.loss_region!r}")
        if self.steps < 1 or self.batch_size < 1 or self.rank < 1:
            raise LikenessError(
                f"steps, batch size and rank must be >= 1 (got {self.steps}, {self.batch_size}, {self.rank})"
            )
        if not (self.lora_lr >= 0 and self.feat_lr >= 0):
            raise LikenessError(f"learning rates must be >= 0, got {self.lora_lr}, {self.feat_lr}")

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks this recipe trains, in :data:`TASKS` order."""
        return tuple(t for t in TASKS if (t == "face" and self.global_task) or t in self.local_tasks)

    def as_dict(self) -> dict:
        return asdict(self) | {"local_tasks": list(self.local_tasks)}


@dataclass
class TaskLatents:
    """Latents of every reference photo, prepared by the caller (who owns the VAE).

    Attributes:
        x0: ``[N, C, h, w]`` clean latents (in the model's latent space, i.e. VAE output x scale).
        masks: ``{task: [N, 1, h, w]}`` binary latent-resolution task masks (the mask channel).
        masked: ``{task: [N, C, h, w]}`` latents of the masked images (inpainting models only).
    """

    x0: torch.Tensor
    masks: dict[str, torch.Tensor]
    masked: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, _, h, w = self.x0.shape
        for task, m in self.masks.items():
            if tuple(m.shape) != (n, 1, h, w):
                raise LikenessError(
                    f"task {task!r}: mask {tuple(m.shape)} does not match latents {tuple(self.x0.shape)}"
                )
        for task, z in self.masked.items():
            if tuple(z.shape) != tuple(self.x0.shape):
                raise LikenessError(f"task {task!r}: masked latents {tuple(z.shape)} != {tuple(self.x0.shape)}")

    @property
    def count(self) -> int:
        return int(self.x0.shape[0])


def make_optimizer(
    lora_params: Iterable[torch.nn.Parameter], feat: FeatVectors, recipe: FaceARecipe
) -> torch.optim.AdamW:
    """AdamW with two named groups: ``lora`` and ``feat``, each with its own learning rate."""
    groups = [
        {"params": list(lora_params), "lr": recipe.lora_lr, "weight_decay": recipe.weight_decay, "name": "lora"},
        {"params": list(feat.parameters()), "lr": recipe.feat_lr, "weight_decay": 0.0, "name": "feat"},
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise LikenessError("nothing to optimise: no LoRA parameters and no [feat] vectors")
    return torch.optim.AdamW(groups)


def _gather(stack: Mapping[str, torch.Tensor], tasks: Sequence[str], idx: torch.Tensor) -> torch.Tensor:
    return torch.stack([stack[t][int(i)] for t, i in zip(tasks, idx, strict=True)])


def facea_step_fn(
    denoiser: Denoiser,
    data: TaskLatents,
    feat: FeatVectors,
    recipe: FaceARecipe,
    *,
    inpaint: bool,
    schedule: VPSchedule = SD15_SCHEDULE,
) -> Callable[[int, torch.Generator], dict[str, torch.Tensor]]:
    """The ``step_fn`` for :func:`models.finetune.train_loop`.

    Args:
        denoiser: ``denoiser(x_t, sigma, c_crossattn=[B,L,D], c_concat=[B,1+C,h,w] | absent) -> x0_hat``.
        data: latents and masks of the reference photos (on the training device).
        feat: the [feat] vectors (same device).
        recipe: tasks, batch size, loss region.
        inpaint: pass ``c_concat`` (9-channel inpainting UNet) or not.

    Returns:
        ``step_fn(step, gen) -> {"loss", "global", "local"}`` (parts absent when their task is off).
    """
    missing = [t for t in recipe.tasks if t not in data.masks or (inpaint and t not in data.masked)]
    if missing:
        raise LikenessError(f"no latents prepared for task(s) {missing}")
    b, n = recipe.batch_size, data.count

    def step(index: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        groups: list[tuple[str, str]] = []
        if recipe.global_task:
            groups.append(("global", "face"))
        if recipe.local_tasks:
            pick = int(torch.randint(len(recipe.local_tasks), (1,), generator=gen))
            groups.append(("local", recipe.local_tasks[pick]))
        tasks = [task for _, task in groups for _ in range(b)]
        idx = torch.randint(n, (len(tasks),), generator=gen)
        sigmas = sample_sigmas(len(tasks), gen, schedule).to(data.x0.device)
        noise = torch.randn((len(tasks), *data.x0.shape[1:]), generator=gen).to(data.x0)
        x0 = data.x0[idx.to(data.x0.device)]
        masks = _gather(data.masks, tasks, idx)
        x_t = add_noise(x0, noise, sigmas)
        cond = {"c_crossattn": feat.contexts(tasks)}
        if inpaint:
            cond["c_concat"] = torch.cat([masks, _gather(data.masked, tasks, idx)], dim=1)
        eps = eps_from_denoised(x_t, denoiser(x_t, sigmas, **cond), sigmas)
        loss_masks = dilate_latent_mask(masks, recipe.loss_dilate) if recipe.loss_region == "mask" else None
        out: dict[str, torch.Tensor] = {}
        for k, (part, _) in enumerate(groups):
            sl = slice(k * b, (k + 1) * b)
            out[part] = masked_mse(eps[sl], noise[sl], None if loss_masks is None else loss_masks[sl])
        out["loss"] = sum(out.values())
        return out

    return step
