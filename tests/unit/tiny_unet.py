"""A tiny inpainting "UNet" for FaceA training tests, in ComfyUI's EPS convention (input scaled by
1/sqrt(sigma^2+1), returns the denoised latent). Not collected by pytest (no ``test_`` prefix).

Like a pretrained UNet it is already a reasonable denoiser before fine-tuning: its noise
prediction is the exact MMSE estimate for unit-Gaussian latents, ``sigma / sqrt(1 + sigma^2) *
x_in``, plus a frozen convolution / cross-attention residual with a sigma embedding. Only the
LoRA on the attention projections (and the [feat] vectors feeding the attention) are trainable."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Module):
    """Frozen ``nn.Linear`` + ``alpha / rank * up(down(x))`` with up zero-initialised (delta 0 at start)."""

    def __init__(self, base: nn.Linear, rank: int, gen: torch.Generator):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_down = nn.Parameter(torch.randn(rank, base.in_features, generator=gen) / base.in_features**0.5)
        self.lora_up = nn.Parameter(torch.zeros(base.out_features, rank))
        self.alpha = float(rank)

    def forward(self, x):
        return self.base(x) + (x @ self.lora_down.T @ self.lora_up.T) * (self.alpha / self.lora_down.shape[0])


class TinyUNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 9,
        latent: int = 4,
        width: int = 32,
        context_dim: int = 768,
        rank: int = 4,
        seed: int = 0,
        pointwise: bool = False,
    ):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        k = 1 if pointwise else 3
        self.in_channels = in_channels
        self.conv_in = nn.Conv2d(in_channels, width, k, padding=k // 2)
        self.self_q = LoRALinear(nn.Linear(width, width), rank, gen)
        self.self_k = LoRALinear(nn.Linear(width, width), rank, gen)
        self.self_v = LoRALinear(nn.Linear(width, width), rank, gen)
        self.self_out = LoRALinear(nn.Linear(width, width), rank, gen)
        self.to_q = LoRALinear(nn.Linear(width, width), rank, gen)
        self.to_k = LoRALinear(nn.Linear(context_dim, width), rank, gen)
        self.to_v = LoRALinear(nn.Linear(context_dim, width), rank, gen)
        self.to_out = LoRALinear(nn.Linear(width, width), rank, gen)
        self.conv_out = nn.Conv2d(width, latent, k, padding=k // 2)
        self.time = nn.Linear(1, width)
        with torch.no_grad():
            self.conv_out.bias.zero_()
        for m in (self.conv_in, self.conv_out, self.time):
            m.requires_grad_(False)
        self.latent = latent
        self.pointwise = pointwise
        self.calls: list[dict] = []

    def lora_parameters(self):
        return [p for n, p in self.named_parameters() if "lora_" in n]

    def forward(self, x_t, sigma, c_crossattn, c_concat=None):
        self.calls.append(
            {
                "x_t": x_t.shape,
                "c_concat": None if c_concat is None else c_concat.detach().clone(),
                "c_crossattn": c_crossattn.detach().clone(),
            }
        )
        s = sigma.view(-1, 1, 1, 1)
        x = x_t / (s**2 + 1) ** 0.5
        if c_concat is not None:
            x = torch.cat([x, c_concat], dim=1)
        assert x.shape[1] == self.in_channels, (x.shape, self.in_channels)
        h = F.silu(self.conv_in(x) + self.time(sigma.log().view(-1, 1))[:, :, None, None])
        b, c, hh, ww = h.shape
        tokens = h.flatten(2).transpose(1, 2)
        if not self.pointwise:  # self-attention mixes pixels; the pointwise variant keeps them independent
            sa = F.scaled_dot_product_attention(self.self_q(tokens), self.self_k(tokens), self.self_v(tokens))
            tokens = tokens + self.self_out(sa)
        q, kk, v = self.to_q(tokens), self.to_k(c_crossattn), self.to_v(c_crossattn)
        attn = F.scaled_dot_product_attention(q, kk, v)
        h = (tokens + self.to_out(attn)).transpose(1, 2).reshape(b, c, hh, ww)
        eps = (s / (1 + s**2) ** 0.5) * x[:, : self.latent] + self.conv_out(F.silu(h))
        return x_t - s * eps
