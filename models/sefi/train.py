"""Learning SeFi ID tokens from one photo: ε-loss + λ · face-wise attention loss.

Written against two plain callables so it runs on ComfyUI's SD1.5 and on a tiny
test model alike:

* ``encode(slots [S, D]) -> [S, L, C]``: the training prompt "a photo of the face of V*"
  through the frozen text encoder with each row of ``slots`` in V*'s slot
  (differentiable with respect to ``slots``);
* ``denoiser(x_t, sigma, context_k, context_v, capture) -> denoised x0``: the frozen UNet
  (k-diffusion EPS convention ``x_t = x0 + sigma * eps``) with keys from ``context_k`` and
  values from ``context_v`` at every cross-attention, reporting the attention maps of the
  loss sites to ``capture`` when it is not None.

Each step draws a timestep ``t`` uniformly from 0..999, uses stage ``floor(t * 5 / 1000)``'s
(key, value) pair, noises the photo's latent to ``sigma(t)``, and minimises
``mean((eps_pred - eps)^2) + λ * L_attn`` where ``L_attn`` compares the learned prompt's
attention with that of the reference prompt (the same prompt with the init word
"person" in the slot). With λ = 0 the attention term is not computed at all.
The ten vectors are free parameters initialised from the init word's embedding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from ..errors import LikenessError
from ..finetune.denoise import SD15_SCHEDULE, add_noise, eps_from_denoised, masked_mse, sample_timesteps
from ..finetune.loop import StepReport, train_loop
from .attention import SD15_LOSS_SITES, AttentionCapture, SiteKey
from .stages import NUM_STAGES, NUM_TIMESTEPS, stage_of_timestep
from .tokens import IdTokens

__all__ = ["TRAINING_PROMPT", "SeFiTrainConfig", "SlotEncoder", "SeFiDenoiser", "learn_id_tokens"]

TRAINING_PROMPT = "a photo of the face of {}"
"""The training prompt; ``{}`` is V*'s slot (the reference prompt has the init word there)."""

SlotEncoder = Callable[[torch.Tensor], torch.Tensor]
"""``encode(slots [S, D]) -> contexts [S, L, C]`` (differentiable)."""

SeFiDenoiser = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, "AttentionCapture | None"], torch.Tensor
]
"""``denoiser(x_t [1,4,h,w], sigma [1], context_k [1,L,C], context_v [1,L,C], capture) -> x0 [1,4,h,w]``."""


@dataclass(frozen=True)
class SeFiTrainConfig:
    """Training settings (defaults: paper's λ and step count, our choices elsewhere; see README).

    Attributes:
        steps: optimisation steps (600).
        learning_rate: AdamW learning rate for the free vectors (5e-3).
        attention_weight: λ of the face-wise attention loss (0.003; 0 disables it).
        weight_decay: AdamW weight decay (0: decay would shrink the embeddings towards zero).
        seed: seeds timesteps and noise.
        sites: cross-attention sites of the attention loss (SD1.5's 16x16 layers).
        grad_clip: max gradient norm, or None.
    """

    steps: int = 600
    learning_rate: float = 5e-3
    attention_weight: float = 0.003
    weight_decay: float = 0.0
    seed: int = 0
    sites: tuple[SiteKey, ...] = SD15_LOSS_SITES
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise LikenessError(f"steps must be at least 1, got {self.steps}")
        if not self.learning_rate > 0:
            raise LikenessError(f"learning rate must be positive, got {self.learning_rate}")
        if self.attention_weight < 0:
            raise LikenessError(f"attention loss weight must be >= 0, got {self.attention_weight}")

    def info(self) -> dict:
        """JSON-ready record of the settings."""
        out = asdict(self)
        out["sites"] = [list(s) for s in self.sites]
        return out


def learn_id_tokens(
    encode: SlotEncoder,
    denoiser: SeFiDenoiser,
    latent: torch.Tensor,
    init_embedding: torch.Tensor,
    config: SeFiTrainConfig = SeFiTrainConfig(),
    *,
    schedule_sigmas: torch.Tensor | None = None,
    init_word: str = "person",
    start: IdTokens | None = None,
    on_step: Callable[[StepReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[IdTokens, list[StepReport]]:
    """Learn the five (key, value) pairs of one identity.

    Args:
        encode: see :data:`SlotEncoder`.
        denoiser: see :data:`SeFiDenoiser`.
        latent: ``[1, 4, h, w]`` the photo's latent in the model's space (SD1.5: VAE latent x 0.18215).
        init_embedding: ``[D]`` the init word's input embedding.
        config: training settings.
        schedule_sigmas: ``[1000]`` sigma of each training timestep, ascending (default: SD1.5's;
            in ComfyUI pass ``model_sampling.sigmas``).
        init_word: the word of ``init_embedding`` (stored with the result).
        start: vectors to start from (default: all ten = ``init_embedding``).
        on_step: called with each step's report (parts ``eps``, and ``attention`` when λ > 0).
        should_stop: polled every step; True raises ``TrainingInterrupted``.

    Returns:
        ``(learned IdTokens, step reports)``.
    """
    if latent.ndim != 4 or latent.shape[0] != 1:
        raise LikenessError(f"the photo's latent must be [1, C, h, w], got {tuple(latent.shape)}")
    if schedule_sigmas is None:
        schedule_sigmas = SD15_SCHEDULE.sigmas
    if schedule_sigmas.numel() != NUM_TIMESTEPS:
        raise LikenessError(f"the noise schedule must have {NUM_TIMESTEPS} sigmas, got {schedule_sigmas.numel()}")
    init = start if start is not None else IdTokens.initial(init_embedding, init_word)
    keys = [torch.nn.Parameter(init.keys[i].clone().float()) for i in range(NUM_STAGES)]
    values = [torch.nn.Parameter(init.values[i].clone().float()) for i in range(NUM_STAGES)]
    optimizer = torch.optim.AdamW(keys + values, lr=config.learning_rate, weight_decay=config.weight_decay)
    x0 = latent.detach().float()
    sigmas = schedule_sigmas.detach().float().cpu()
    with torch.no_grad():
        reference = encode(init_embedding.detach().float().reshape(1, -1)).detach()

    def step_fn(step: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        t = int(sample_timesteps(1, gen)[0])
        stage = int(stage_of_timestep(t))
        noise = torch.randn(x0.shape, generator=gen, dtype=torch.float32).to(x0.device)
        sigma = sigmas[t].reshape(1).to(x0.device)
        x_t = add_noise(x0, noise, sigma)
        contexts = encode(torch.stack([keys[stage], values[stage]]))
        capture = AttentionCapture(reference, config.sites) if config.attention_weight > 0 else None
        denoised = denoiser(x_t, sigma, contexts[0:1], contexts[1:2], capture)
        eps_loss = masked_mse(eps_from_denoised(x_t, denoised.to(x0.device), sigma), noise)
        parts = {"eps": eps_loss.detach()}
        loss = eps_loss
        if capture is not None:
            attention = capture.loss().to(eps_loss.device)
            loss = eps_loss + config.attention_weight * attention
            parts["attention"] = attention.detach()
        return {"loss": loss, **parts}

    reports = train_loop(
        step_fn,
        optimizer,
        config.steps,
        seed=config.seed,
        on_step=on_step,
        should_stop=should_stop,
        grad_clip=config.grad_clip,
    )
    return _result(init, keys, values, init_word, config, reports), reports


def _result(init: IdTokens, keys, values, init_word: str, config: SeFiTrainConfig, reports) -> IdTokens:
    info = {**dict(init.info), "training": config.info(), "prompt": TRAINING_PROMPT.format("V*")}
    info["final_loss"] = reports[-1].loss if reports else None
    stack = [torch.stack([p.detach() for p in group]).cpu() for group in (keys, values)]
    return IdTokens(stack[0], stack[1], init.init_embedding.detach().float().cpu(), init_word, info)
