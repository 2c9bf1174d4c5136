"""The frozen base model of the trainers: diffusers folders, single-file configs, family checks, clear errors."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

pytest.importorskip("diffusers")

from likeness.models.errors import LikenessError  # noqa: E402
from likeness.models.training import base as base_mod  # noqa: E402
from likeness.models.training.base import (  # noqa: E402
    UNET_CONFIGS,
    default_tokenizer_dir,
    family_of_unet,
    load_base,
    require_packages,
    write_pipeline_config,
)
from likeness.models.training.smoke import tiny_unet, tiny_vae  # noqa: E402


def test_missing_packages_and_paths_are_explained(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "transformers" else real(n, *a))
    with pytest.raises(
        LikenessError, match=r"needs the Python package\(s\) \['transformers'\]: pip install transformers"
    ):
        require_packages("diffusers", "transformers")
    monkeypatch.setattr(importlib.util, "find_spec", real)
    monkeypatch.setattr(base_mod, "require_packages", lambda *names: None)
    with pytest.raises(LikenessError, match="does not exist"):
        load_base(tmp_path / "nope", "sd15")
    (tmp_path / "folder").mkdir()
    with pytest.raises(LikenessError, match="no model_index.json"):
        load_base(tmp_path / "folder", "sd15")
    (tmp_path / "m.safetensors").write_bytes(b"x")
    monkeypatch.setattr(base_mod, "default_tokenizer_dir", lambda: None)
    with pytest.raises(LikenessError, match="needs the CLIP BPE vocabulary"):
        load_base(tmp_path / "m.safetensors", "sd15")


def test_family_detection():
    assert family_of_unet(tiny_unet("sd15")) == "sd15"
    assert family_of_unet(tiny_unet("sdxl")) == "sdxl"


def test_single_file_config_folder(tmp_path):
    vocab = tmp_path / "vocab"
    vocab.mkdir()
    (vocab / "vocab.json").write_text("{}")
    (vocab / "merges.txt").write_text("#version: 0.2\n")
    for family in ("sd15", "sdxl"):
        folder = tmp_path / family
        write_pipeline_config(folder, family, vocab)
        unet = json.loads((folder / "unet" / "config.json").read_text())
        assert unet["cross_attention_dim"] == UNET_CONFIGS[family]["cross_attention_dim"]
        assert json.loads((folder / "tokenizer" / "tokenizer_config.json").read_text())["model_max_length"] == 77
        assert (folder / "text_encoder_2").is_dir() == (family == "sdxl")
    assert json.loads((tmp_path / "sdxl" / "tokenizer_2" / "special_tokens_map.json").read_text())["pad_token"] == "!"
    assert json.loads((tmp_path / "sdxl" / "vae" / "config.json").read_text())["scaling_factor"] == 0.13025


def test_default_tokenizer_dir_follows_comfyui_path(tmp_path, monkeypatch):
    tok = tmp_path / "comfy" / "sd1_tokenizer"
    tok.mkdir(parents=True)
    (tok / "vocab.json").write_text("{}")
    (tok / "merges.txt").write_text("")
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    assert default_tokenizer_dir() == tok


def _tiny_pipeline(folder):
    """A diffusers SD1.5-layout folder with tiny random parts and a 4-token BPE vocabulary."""
    from diffusers import DDPMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tiny_unet("sd15").save_pretrained(folder / "unet")
    tiny_vae().save_pretrained(folder / "vae")
    cfg = CLIPTextConfig(vocab_size=8, hidden_size=768, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77)  # fmt: skip
    CLIPTextModel(cfg).save_pretrained(folder / "text_encoder")
    tok = folder / "tokenizer"
    tok.mkdir()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "p": 3, "e": 4, "r": 5, "s": 6, "o": 7}
    (tok / "vocab.json").write_text(json.dumps(vocab))
    (tok / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(tok / "vocab.json"), str(tok / "merges.txt")).save_pretrained(tok)
    DDPMScheduler.from_config(base_mod.SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))


def test_diffusers_folder_loads_frozen_and_the_trainer_refuses_non_sd15_widths(tmp_path):
    pytest.importorskip("transformers")
    from likeness.models.training.wplus import sites_of

    _tiny_pipeline(tmp_path / "pipe")
    models = load_base(tmp_path / "pipe", "sd15")
    assert models.family == "sd15" and not any(p.requires_grad for p in models.unet.parameters())
    out = models.text(["a person", ""])
    assert out.context.shape == (2, 77, 768) and out.pooled is None
    assert models.scheduler.config.beta_schedule == "scaled_linear"
    with pytest.raises(LikenessError, match="this trainer needs SDXL"):
        load_base(tmp_path / "pipe", "sdxl")
    with pytest.raises(LikenessError, match="not SD1.5's"):
        sites_of(models.unet)  # the real trainer needs SD1.5's widths (320/640/1280)
    with pytest.raises(LikenessError, match="lacks the pipeline part"):
        import shutil

        shutil.rmtree(tmp_path / "pipe" / "vae")
        load_base(tmp_path / "pipe", "sd15")
    assert torch.is_tensor(out.context)
