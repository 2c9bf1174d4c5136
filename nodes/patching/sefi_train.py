"""SeFi-IDE learning on ComfyUI's SD1.5: the training prompt as a function of V*'s slot, and the UNet.

* :func:`slot_encoder`: "a photo of the face of V*" through the CLIP's text transformer with any
  vectors in V*'s slot, differentiably (ComfyUI's own CLIP layers add residuals in place, which
  autograd cannot differentiate, so the same modules are run out of place; a comfyui-tier test
  checks equality with ComfyUI's encoding, CLIP Set Last Layer included);
* :func:`trainable_text_encoder`: the CLIP's weights as ordinary tensors for the duration;
* :func:`training_denoiser`: the UNet of the shared :func:`~.facea.training_unet` block as a plain
  ``denoiser(x_t, sigma, ctx_k, ctx_v, capture)``: values from the value context in every
  cross-attention, and at the loss sites an attn2 replace that reports the learned and reference
  attention probabilities to the capture and attends with the learned ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

from ...models.errors import LikenessError
from ...models.sefi.attention import AttentionCapture, SiteKey, attend
from ...models.sefi.prompt import replace_spans
from ...models.sefi.train import SeFiDenoiser, SlotEncoder
from .facea import TrainingUNet
from .sefi_text import SeFiTokenizer, sd_clip_model, sd_tokenizer, word_embedding, word_ids
from .sites import attn2_modules
from .training import ordinary_module

__all__ = ["slot_encoder", "trainable_text_encoder", "training_denoiser"]


def _text_model_forward(clip, embeds: torch.Tensor) -> torch.Tensor:
    """ComfyUI's CLIP text transformer on input embeddings, differentiable; ``[S, L, D] -> [S, L, C]``.

    ComfyUI's own ``CLIPLayer.forward`` adds its residuals in place, which autograd cannot
    differentiate, so the same modules are run here with out-of-place residuals, the causal mask,
    and the output ComfyUI's SD1 text encoder returns: the final layer norm of the last layer, or
    of the layer chosen by CLIP Set Last Layer. A test checks equality with ComfyUI's encoding.
    """
    from comfy.ldm.modules.attention import optimized_attention_for_device
    from comfy.ops import cast_to

    sd = sd_clip_model(clip)
    text = sd.transformer.text_model
    layers = text.encoder.layers
    hidden = clip.layer_idx is not None and abs(clip.layer_idx) <= len(layers)
    last = (len(layers) + clip.layer_idx if clip.layer_idx < 0 else clip.layer_idx) + 1 if hidden else len(layers)
    x = embeds + cast_to(text.embeddings.position_embedding.weight, dtype=embeds.dtype, device=embeds.device)
    causal = torch.full((x.shape[1], x.shape[1]), -torch.finfo(x.dtype).max, dtype=x.dtype, device=x.device).triu(1)
    attention = optimized_attention_for_device(x.device, mask=True, small_input=True)
    for layer in layers[:last]:
        x = x + layer.self_attn(layer.layer_norm1(x), causal, attention)
        x = x + layer.mlp(layer.layer_norm2(x))
    return text.final_layer_norm(x) if not hidden or sd.layer_norm_hidden_state else x


def slot_encoder(clip, template: str, init_word: str) -> tuple[SlotEncoder, torch.Tensor]:
    """The training prompt as a differentiable function of V*'s slot, and the init word's embedding.

    Args:
        clip: an SD1.x ComfyUI CLIP (its own V* wrappers, if any, are not involved).
        template: the training prompt with ``{}`` for V* (``"a photo of the face of {}"``).
        init_word: a one-token word (``"person"``); ``template.format(init_word)`` is the reference prompt.

    Returns:
        ``(encode, init_embedding [D])`` where ``encode(slots [S, D]) -> [S, L, C]`` runs the CLIP's
        text transformer with each row in the slot (call it with grad enabled, outside inference mode).
    """
    init_embedding = word_embedding(clip, init_word)
    plain = clip.tokenizer.inner if isinstance(clip.tokenizer, SeFiTokenizer) else clip.tokenizer
    _, key = sd_tokenizer(plain)
    marker = init_embedding.clone()
    sections, found = replace_spans(
        plain.tokenize_with_weights(template.format(init_word))[key], word_ids(clip, init_word), marker
    )
    if found != 1 or template.count("{}") != 1 or len(sections) != 1:
        raise LikenessError(
            f"The training prompt {template!r} must hold V*'s slot '{{}}' once and fit 77 tokens, and the init word "
            f"{init_word!r} must not appear in it otherwise (found {found} time(s))."
        )
    ids = [0 if e[0] is marker else int(e[0]) for e in sections[0]]
    slot = [e[0] is marker for e in sections[0]].index(True)
    table = sd_clip_model(clip).transformer.get_input_embeddings()

    def encode(slots: torch.Tensor) -> torch.Tensor:
        clip.load_model()
        device = table.weight.device
        with torch.no_grad():
            words = table(torch.tensor([ids], device=device), out_dtype=torch.float32)
        rows = slots.to(device, torch.float32)[:, None, :]
        embeds = torch.cat(
            [words[:, :slot].expand(len(slots), -1, -1), rows, words[:, slot + 1 :].expand(len(slots), -1, -1)], 1
        )
        return _text_model_forward(clip, embeds)

    return encode, init_embedding


@contextmanager
def trainable_text_encoder(clip) -> Iterator[None]:
    """Inside the block the CLIP's text transformer can pass gradients to input embeddings.

    The CLIP is loaded, and its weights (inference tensors when a ComfyUI loader node made them)
    are ordinary copies until the block ends; the originals are put back, also on errors.
    """
    clip.load_model()
    with ordinary_module(sd_clip_model(clip)):
        yield


class _ValueContext:
    """Learning: every cross-attention takes its values from the value tokens' encoding."""

    def __init__(self, value_context: torch.Tensor):
        self.value_context = value_context

    def __call__(self, n, context, value, extra_options):
        v = self.value_context.to(context.device, context.dtype)
        return n, context, v.expand(context.shape[0], -1, -1)


class _CaptureReplace:
    """Learning: attn2 replace at a loss site; reports both attention maps and attends with the learned one."""

    def __init__(self, capture: AttentionCapture, site: SiteKey, to_k: torch.nn.Module):
        self.capture, self.site, self.to_k = capture, site, to_k

    def __call__(self, q, k, v, extra_options):
        with torch.no_grad():
            k_ref = self.to_k(self.capture.reference_context.to(q.device, q.dtype))
        probs = self.capture.observe(self.site, q, k, k_ref, extra_options["n_heads"])
        return attend(probs, v).to(q.dtype)


def training_denoiser(unet: TrainingUNet, sites: Iterable[SiteKey]) -> SeFiDenoiser:
    """The UNet of a :func:`~.facea.training_unet` block as a :data:`~models.sefi.train.SeFiDenoiser`.

    Attention patches already on the MODEL are not used while learning; weight patches (LoRA)
    are, since they live in the loaded weights.

    Raises:
        LikenessError: a loss site is not in this UNet.
    """
    modules = attn2_modules(unet.patcher)
    missing = sorted(set(map(tuple, sites)) - set(modules))
    if missing:
        raise LikenessError(
            f"The attention-loss sites {missing} are not in this UNet (it has {sorted(modules)}). "
            "SeFi learning needs an SD1.5 UNet."
        )
    device = unet.device

    def denoise(x_t, sigma, context_k, context_v, capture):
        options = {"patches": {"attn2_patch": [_ValueContext(context_v)]}, "cond_or_uncond": [0], "sigmas": sigma}
        if capture is not None:
            options["patches_replace"] = {
                "attn2": {site: _CaptureReplace(capture, site, modules[site].to_k) for site in capture.sites}
            }
        return unet.denoiser(x_t.to(device), sigma.to(device), context_k.to(device), transformer_options=options)

    return denoise
