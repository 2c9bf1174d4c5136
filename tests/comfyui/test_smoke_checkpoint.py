"""The random-weight SD1.5 smoke checkpoint against a real ComfyUI (named by COMFYUI_PATH).

Checks that ``CheckpointLoaderSimple`` detects the reduced smoke checkpoint as
``SD15`` with no missing/unexpected keys, that our key/shape table equals the
state dicts of ComfyUI's own modules, and that CLIPTextEncode -> KSampler
(1 euler step, 64x64 px) -> VAEDecode runs on the CPU, stays finite and hits
every documented attn2 site once per UNet call.
"""

from __future__ import annotations

import logging
import re

import pytest
import torch

from likeness.tools.smoke.sd15_layout import (
    CLIP_PREFIX,
    SCHEDULE_KEYS,
    UNET_PREFIX,
    VAE_PREFIX,
    sd15_attn2_sites,
    sd15_checkpoint_shapes,
    write_sd15_smoke_checkpoint,
)


@pytest.fixture(scope="session")
def comfy_modules(comfy_env):
    """ComfyUI imported in-process on the CPU (tests/comfyui/conftest.py)."""
    import comfy
    import comfy.supported_models  # noqa: F401

    return {"comfy": comfy, "folder_paths": comfy_env.folder_paths, "nodes": comfy_env.nodes}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelno, record.getMessage()))


@pytest.fixture(scope="module")
def smoke(comfy_modules, tmp_path_factory):
    """The reduced smoke checkpoint loaded through CheckpointLoaderSimple, with the log of the load."""
    folder = tmp_path_factory.mktemp("checkpoints")
    write_sd15_smoke_checkpoint(folder / "likeness_smoke_sd15.safetensors", variant="reduced", seed=0)
    comfy_modules["folder_paths"].add_model_folder_path("checkpoints", str(folder), is_default=True)
    records = _Records()
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(records)
    try:
        model, clip, vae = (
            comfy_modules["nodes"].CheckpointLoaderSimple().load_checkpoint("likeness_smoke_sd15.safetensors")
        )
    finally:
        root.removeHandler(records)
        root.setLevel(old_level)
    return {"model": model, "clip": clip, "vae": vae, "log": records.messages}


def test_detected_as_sd15_without_missing_or_unexpected_keys(comfy_modules, smoke):
    config = smoke["model"].model.model_config
    assert type(config) is comfy_modules["comfy"].supported_models.SD15
    assert config.unet_config["channel_mult"] == [1, 2]
    assert config.unet_config["num_res_blocks"] == [1, 1]
    assert config.unet_config["transformer_depth_middle"] == 1
    assert config.unet_config["context_dim"] == 768
    words = ("missing", "unexpected", "VAE keys")
    key_logs = [(level, msg) for level, msg in smoke["log"] if any(w in msg for w in words)]
    assert [msg for level, msg in key_logs if level >= logging.WARNING] == []
    # debug-level notes that every official SD1.5 file produces as well: ComfyUI's CLIP-L has
    # logit_scale/text_projection, keeps no position_ids buffer, and ignores the DDPM schedule buffers
    named = {name for _, msg in key_logs for name in re.findall(r"'([^']+)'", msg)}
    assert named <= {
        "clip_l.logit_scale",
        "clip_l.transformer.text_projection.weight",
        "clip_l.transformer.text_model.embeddings.position_ids",
    }, key_logs
    left_over = {
        name for _, msg in smoke["log"] if msg.startswith("left over keys") for name in re.findall(r"'([^']+)'", msg)
    }
    assert left_over == set(SCHEDULE_KEYS)


def test_key_shapes_equal_comfyui_modules(smoke):
    ours = sd15_checkpoint_shapes("reduced")
    unet = {UNET_PREFIX + k: tuple(v.shape) for k, v in smoke["model"].model.diffusion_model.state_dict().items()}
    vae = {VAE_PREFIX + k: tuple(v.shape) for k, v in smoke["vae"].first_stage_model.state_dict().items()}
    clip = {
        k.replace("clip_l.transformer.text_model.", CLIP_PREFIX): tuple(v.shape)
        for k, v in smoke["clip"].cond_stage_model.state_dict().items()
        if k.startswith("clip_l.transformer.text_model.")
    }
    for theirs, prefix in ((unet, UNET_PREFIX), (vae, VAE_PREFIX), (clip, CLIP_PREFIX)):
        mine = {k: v for k, v in ours.items() if k.startswith(prefix)}
        if prefix == CLIP_PREFIX:
            mine.pop(CLIP_PREFIX + "embeddings.position_ids")  # a buffer ComfyUI's CLIP does not keep
        assert mine == theirs, (prefix, sorted(set(mine) ^ set(theirs))[:5])


def test_one_step_64px_is_finite_and_hits_every_attn2_site(comfy_modules, smoke):
    from comfy.ldm.modules.attention import optimized_attention

    nodes = comfy_modules["nodes"]
    hits: list[tuple[tuple[str, int, int], int]] = []

    def patch(q, k, v, extra_options):
        block, number = extra_options["block"]
        hits.append(((block, number, extra_options["block_index"]), q.shape[-1]))
        return optimized_attention(q, k, v, extra_options["n_heads"])

    model = smoke["model"].clone()
    sites = sd15_attn2_sites("reduced")
    for block, number, index in sites:
        model.set_model_attn2_replace(patch, block, number, index)
    (positive,) = nodes.CLIPTextEncode().encode(smoke["clip"], "a photo of a face")
    (negative,) = nodes.CLIPTextEncode().encode(smoke["clip"], "")
    assert positive[0][0].shape == (1, 77, 768) and torch.isfinite(positive[0][0]).all()
    (latent,) = nodes.EmptyLatentImage().generate(64, 64, 1)
    (out,) = nodes.KSampler().sample(model, 0, 1, 7.0, "euler", "normal", positive, negative, latent)
    (image,) = nodes.VAEDecode().decode(smoke["vae"], out)
    assert out["samples"].shape == (1, 4, 8, 8) and torch.isfinite(out["samples"]).all()
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()
    assert image.std() > 0  # random weights: anything but a constant image
    # one euler step at cfg 7 = one UNet call on a cond+uncond batch: each site once, widths as documented
    assert sorted(k for k, _ in hits) == sorted(sites)
    assert all(width == sites[key] for key, width in hits)
