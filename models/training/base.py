"""The frozen base model of a training run: diffusers UNet, VAE, text encoder(s) and noise schedule.

Two sources, never a download:

* a local **diffusers folder** (``model_index.json`` with ``unet/``, ``vae/``, ``text_encoder/``,
  ``tokenizer/``, ``scheduler/``; SDXL also ``text_encoder_2/``, ``tokenizer_2/``), loaded with
  ``from_pretrained(..., local_files_only=True)``, as the official training scripts do;
* a **single file** (``.safetensors`` / ``.ckpt`` in the original LDM layout, e.g. a ComfyUI
  checkpoint). diffusers converts it with ``from_single_file``; the configs it would fetch from the
  Hub are written locally from the published SD1.5 / SDXL-base configs below, and the CLIP BPE
  vocabulary (not stored in checkpoints) is read from ``tokenizer_dir``: any folder with
  ``vocab.json`` + ``merges.txt``, by default ComfyUI's ``comfy/sd1_tokenizer``.

Both need ``diffusers`` and ``transformers`` (CLIP text encoders). Families: ``sd15`` (context 768,
CLIP-L last hidden state) and ``sdxl`` (context 2048 = CLIP-L and OpenCLIP-bigG penultimate hidden
states, pooled bigG projection, size/crop time ids).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import LikenessError

__all__ = [
    "FAMILIES",
    "CONTEXT_DIMS",
    "TextConditioning",
    "ClipTextEncoders",
    "BaseModels",
    "load_base",
    "family_of_unet",
    "default_tokenizer_dir",
    "require_packages",
]

logger = logging.getLogger(__name__)

FAMILIES = ("sd15", "sdxl")
CONTEXT_DIMS = {"sd15": 768, "sdxl": 2048}
_DOWN = {"sd15": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], "sdxl": ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * 2}
_UP = {"sd15": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "sdxl": ["CrossAttnUpBlock2D"] * 2 + ["UpBlock2D"]}
#: Published diffusers UNet configs of runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-xl-base-1.0.
UNET_CONFIGS: dict[str, dict[str, Any]] = {
    "sd15": dict(
        block_out_channels=[320, 640, 1280, 1280], attention_head_dim=8, cross_attention_dim=768, sample_size=64
    ),
    "sdxl": dict(
        block_out_channels=[320, 640, 1280],
        attention_head_dim=[5, 10, 20],
        cross_attention_dim=2048,
        sample_size=128,
        transformer_layers_per_block=[1, 2, 10],
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        addition_embed_type_num_heads=64,
        projection_class_embeddings_input_dim=2816,
    ),
}
_CLIP_L = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_attention_heads=12,
    num_hidden_layers=12,
    projection_dim=768,
    hidden_act="quick_gelu",
)
_CLIP_BIGG = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_attention_heads=20,
    num_hidden_layers=32,
    projection_dim=1280,
    hidden_act="gelu",
)
#: DDPM schedule of both families (scaled linear 0.00085..0.012, 1000 steps, epsilon prediction).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


def require_packages(*names: str) -> None:
    """Raise a clear error when a package the base model needs is missing."""
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise LikenessError(
            f"Training on a real base model needs the Python package(s) {missing}: pip install {' '.join(missing)} "
            "(the --smoke runs need only diffusers and accelerate)."
        )


@dataclass
class TextConditioning:
    """Text-encoder output for a batch: ``context`` ``[B, 77, C]`` and (SDXL) ``pooled`` ``[B, 1280]``."""

    context: torch.Tensor
    pooled: torch.Tensor | None = None


class ClipTextEncoders(nn.Module):
    """CLIP tokenizer(s) + text model(s) (transformers), frozen.

    SD1.5: the last hidden state of CLIP-L (``text_encoder(ids)[0]``, as the W+ adapter trains).
    SDXL: ``hidden_states[-2]`` of CLIP-L and of OpenCLIP-bigG concatenated (768 + 1280 = 2048) and the
    bigG ``text_embeds`` as pooled output (as PSTF/InstantID train).
    """

    def __init__(self, tokenizers: list[Any], encoders: list[nn.Module]) -> None:
        super().__init__()
        self.tokenizers = tokenizers
        self.encoders = nn.ModuleList(encoders)

    def forward(self, prompts: list[str]) -> TextConditioning:
        device = next(self.encoders.parameters()).device
        outs, pooled = [], None
        for tok, enc in zip(self.tokenizers, self.encoders, strict=True):
            length = int(enc.config.max_position_embeddings)  # 77; some tokenizer folders lack model_max_length
            ids = tok(prompts, max_length=length, padding="max_length", truncation=True, return_tensors="pt").input_ids
            ids = ids.to(device)
            if len(self.encoders) == 1:
                outs.append(enc(ids)[0])
            else:
                res = enc(ids, output_hidden_states=True)
                outs.append(res.hidden_states[-2])
                if hasattr(res, "text_embeds"):
                    pooled = res.text_embeds
        return TextConditioning(torch.cat(outs, dim=-1), pooled)


@dataclass
class BaseModels:
    """The frozen parts of a run.

    Attributes:
        family: ``"sd15"`` or ``"sdxl"``.
        unet: diffusers ``UNet2DConditionModel``.
        vae: diffusers ``AutoencoderKL``.
        text: callable ``prompts -> TextConditioning``.
        scheduler: diffusers ``DDPMScheduler`` (the training noise schedule).
        source: where it came from (for fingerprints and messages).
    """

    family: str
    unet: nn.Module
    vae: nn.Module
    text: nn.Module
    scheduler: Any
    source: str


def family_of_unet(unet: nn.Module, source: str = "the UNet") -> str:
    """``"sd15"`` or ``"sdxl"`` from a diffusers UNet's config (context width, added embeddings).

    Raises:
        LikenessError: another architecture.
    """
    cfg = unet.config
    ctx = int(cfg.cross_attention_dim if isinstance(cfg.cross_attention_dim, int) else cfg.cross_attention_dim[0])
    if ctx == 768 and cfg.addition_embed_type is None:
        return "sd15"
    if ctx == 2048 and cfg.addition_embed_type == "text_time":
        return "sdxl"
    raise LikenessError(
        f"{source} has context width {ctx} and added embedding {cfg.addition_embed_type!r}: neither SD1.5 (768, "
        "none) nor SDXL (2048, text_time). The W+ adapter trains on SD1.5, PSTF on SDXL."
    )


def default_tokenizer_dir() -> Path | None:
    """ComfyUI's ``comfy/sd1_tokenizer`` next to this pack (``custom_nodes/<pack>``) or under ``$COMFYUI_PATH``."""
    pack = Path(__file__).resolve().parents[2]
    candidates = [pack.parent.parent / "comfy" / "sd1_tokenizer"]
    if os.environ.get("COMFYUI_PATH"):
        candidates.insert(0, Path(os.environ["COMFYUI_PATH"]) / "comfy" / "sd1_tokenizer")
    return next((c for c in candidates if (c / "vocab.json").is_file() and (c / "merges.txt").is_file()), None)


def load_base(
    path: str | Path, family: str, *, tokenizer_dir: str | Path | None = None, dtype: torch.dtype = torch.float32
) -> BaseModels:
    """Load the frozen base model (see the module docstring for the two sources).

    Args:
        path: a diffusers folder or a single checkpoint file.
        family: the family the trainer needs (``"sd15"`` for the W+ adapter, ``"sdxl"`` for PSTF).
        tokenizer_dir: single files only: folder with the CLIP ``vocab.json`` and ``merges.txt``.
        dtype: dtype of the frozen weights.

    Returns:
        :class:`BaseModels` on the CPU, ``requires_grad`` off everywhere.

    Raises:
        LikenessError: missing path/packages/vocabulary, or a base model of another family.
    """
    require_packages("diffusers", "transformers")
    path = Path(path)
    if path.is_dir():
        models = _from_folder(path, dtype)
    elif path.is_file():
        models = _from_single_file(path, family, tokenizer_dir, dtype)
    else:
        raise LikenessError(f"--base {str(path)!r} does not exist. Give a diffusers folder or a checkpoint file.")
    found = family_of_unet(models.unet, str(path))
    if found != family:
        raise LikenessError(f"--base {path} is an {found.upper()} model but this trainer needs {family.upper()}.")
    for part in (models.unet, models.vae, models.text):
        part.requires_grad_(False).eval()
    return models


def _from_folder(path: Path, dtype: torch.dtype) -> BaseModels:
    if not (path / "model_index.json").is_file():
        raise LikenessError(f"{path} has no model_index.json: it is not a diffusers pipeline folder.")
    sdxl = (path / "text_encoder_2").is_dir()
    parts = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] + (["text_encoder_2", "tokenizer_2"] * sdxl)
    missing = [p for p in parts if not (path / p).is_dir()]
    if missing:
        raise LikenessError(f"{path} lacks the pipeline part(s) {missing}; save the whole pipeline there.")
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    kw = dict(local_files_only=True, torch_dtype=dtype)
    tokenizers = [CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True)]
    encoders = [CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **kw)]
    if sdxl:
        tokenizers.append(CLIPTokenizer.from_pretrained(path, subfolder="tokenizer_2", local_files_only=True))
        encoders.append(CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder_2", **kw))
    return BaseModels(
        "sdxl" if sdxl else "sd15",
        UNet2DConditionModel.from_pretrained(path, subfolder="unet", **kw),
        AutoencoderKL.from_pretrained(path, subfolder="vae", **kw),
        ClipTextEncoders(tokenizers, encoders),
        DDPMScheduler.from_pretrained(path, subfolder="scheduler", local_files_only=True),
        str(path),
    )


def _from_single_file(path: Path, family: str, tokenizer_dir: str | Path | None, dtype: torch.dtype) -> BaseModels:
    from diffusers import DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    vocab = Path(tokenizer_dir) if tokenizer_dir else default_tokenizer_dir()
    if vocab is None or not (vocab / "vocab.json").is_file() or not (vocab / "merges.txt").is_file():
        raise LikenessError(
            f"Loading the single file {path} needs the CLIP BPE vocabulary (vocab.json + merges.txt), which checkpoint "
            f"files do not contain; none found at {vocab}. Pass --tokenizer DIR (e.g. ComfyUI/comfy/sd1_tokenizer) or "
            "use a diffusers folder as --base."
        )
    pipeline = StableDiffusionPipeline if family == "sd15" else StableDiffusionXLPipeline
    with tempfile.TemporaryDirectory(prefix="likeness-config-") as tmp:
        write_pipeline_config(Path(tmp), family, vocab)
        kw = dict(config=tmp, local_files_only=True, torch_dtype=dtype)
        if family == "sd15":
            kw.update(safety_checker=None, requires_safety_checker=False)
        pipe = pipeline.from_single_file(str(path), **kw)
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if family == "sdxl" else [])
    scheduler = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    return BaseModels(family, pipe.unet, pipe.vae, ClipTextEncoders(tokenizers, encoders), scheduler, str(path))


def write_pipeline_config(folder: Path, family: str, vocab: Path) -> None:
    """A weight-free diffusers pipeline folder (configs + tokenizer files) for ``from_single_file(config=...)``."""
    from diffusers import __version__ as diffusers_version

    sdxl = family == "sdxl"
    index = {
        "_class_name": "StableDiffusionXLPipeline" if sdxl else "StableDiffusionPipeline",
        "_diffusers_version": diffusers_version,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
    }
    if sdxl:
        index.update(
            text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
            tokenizer_2=["transformers", "CLIPTokenizer"],
        )
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None])
    _json(folder / "model_index.json", index)
    unet = dict(
        _class_name="UNet2DConditionModel",
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        down_block_types=_DOWN[family],
        up_block_types=_UP[family],
        **UNET_CONFIGS[family],
    )
    _json(folder / "unet" / "config.json", unet)
    vae = dict(
        _class_name="AutoencoderKL",
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=2,
        block_out_channels=[128, 256, 512, 512],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        sample_size=1024 if sdxl else 512,
        scaling_factor=0.13025 if sdxl else 0.18215,
        force_upcast=sdxl,
    )
    _json(folder / "vae" / "config.json", vae)
    _json(
        folder / "scheduler" / "scheduler_config.json", dict(_class_name="EulerDiscreteScheduler", **SCHEDULER_CONFIG)
    )
    _text_config(folder / "text_encoder", "CLIPTextModel", _CLIP_L)
    _tokenizer(folder / "tokenizer", vocab, "<|endoftext|>")
    if sdxl:
        _text_config(folder / "text_encoder_2", "CLIPTextModelWithProjection", _CLIP_BIGG)
        _tokenizer(folder / "tokenizer_2", vocab, "!")


def _json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def _text_config(folder: Path, arch: str, dims: dict[str, Any]) -> None:
    _json(
        folder / "config.json",
        dict(
            architectures=[arch],
            model_type="clip_text_model",
            vocab_size=49408,
            max_position_embeddings=77,
            layer_norm_eps=1e-5,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
            attention_dropout=0.0,
            dropout=0.0,
            initializer_factor=1.0,
            initializer_range=0.02,
            **dims,
        ),
    )


def _tokenizer(folder: Path, vocab: Path, pad: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(vocab / name, folder / name)
    special = dict(bos_token="<|startoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token=pad)
    _json(folder / "special_tokens_map.json", special)
    _json(
        folder / "tokenizer_config.json",
        dict(
            tokenizer_class="CLIPTokenizer", model_max_length=77, do_lower_case=True, add_prefix_space=False, **special
        ),
    )
