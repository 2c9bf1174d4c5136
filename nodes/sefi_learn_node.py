"""Learn ID Tokens (SeFi): one photo -> five per-stage (key, value) token pairs for a pseudo-word V*."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..models.errors import LikenessError, NoFaceError
from ..models.face.select import select_faces
from ..models.finetune import Provenance, image_sha256, tensors_sha256
from ..models.images import check_image_batch, to_rgb_uint8
from ..models.sefi.identity import SeFiIdentity
from ..models.sefi.photo import CROP_POLICIES, prepare_photo
from ..models.sefi.train import TRAINING_PROMPT, SeFiTrainConfig, learn_id_tokens
from .finetune_common import TrainingProgress, comfy_interruption, loss_curve_tensor, should_stop
from .patching.facea import TRAINING_DTYPES, training_unet
from .patching.sefi_train import slot_encoder, trainable_text_encoder, training_denoiser
from .sockets import FaceAnalyzerType, IdTokensType

logger = logging.getLogger(__name__)


def training_photo(image: torch.Tensor, face_crop: str, analyzer, resolution: int, margin: float):
    """``([res, res, 3] photo, crop box, photo sha256)`` from a one-image IMAGE batch."""
    check_image_batch(image, "Learn ID Tokens (SeFi), input 'image'")
    if image.shape[0] != 1:
        raise LikenessError(
            f"Learn ID Tokens takes exactly one photo; the IMAGE input holds {image.shape[0]} images "
            f"(shape {tuple(image.shape)}). Pick one with an 'Image From Batch' node."
        )
    rgb = torch.from_numpy(to_rgb_uint8(image[0])).float() / 255.0
    bbox = None
    if face_crop == "face":
        if analyzer is None:
            raise LikenessError(
                "face_crop is 'face' but no face analyzer is connected: connect Likeness Face "
                "Analyzer, or set face_crop to 'center' or 'stretch'."
            )
        faces = list(analyzer.detect(to_rgb_uint8(image[0])))
        chosen = select_faces(faces, "largest")
        if not chosen:
            raise NoFaceError(
                f"No face was found in the photo ({rgb.shape[1]}x{rgb.shape[0]} px). Use a clear, frontal photo, "
                "or set face_crop to 'center'."
            )
        if len(faces) > 1:
            logger.info("Likeness SeFi: %d faces in the photo; learning the largest", len(faces))
        bbox = [float(v) for v in chosen[0].bbox]
    photo, box = prepare_photo(rgb, face_crop, resolution, bbox, margin)
    return photo, box, image_sha256(rgb)


def _advanced_inputs() -> list:
    """The rarely changed inputs of Learn ID Tokens (shown under 'advanced')."""
    return [
        io.Float.Input(
            "learning_rate",
            default=5e-3,
            min=1e-5,
            max=1.0,
            step=1e-4,
            advanced=True,
            tooltip="AdamW learning rate of the ten free vectors (our default: 5e-3).",
        ),
        io.Float.Input(
            "attention_weight",
            default=0.003,
            min=0.0,
            max=1.0,
            step=0.0005,
            advanced=True,
            tooltip="λ of the face-wise attention loss (paper: 0.003; 0 turns the term off).",
        ),
        io.Int.Input(
            "resolution",
            default=512,
            min=64,
            max=1024,
            step=64,
            advanced=True,
            tooltip="Training size of the photo in pixels (SD1.5: 512).",
        ),
        io.String.Input(
            "init_word",
            default="person",
            advanced=True,
            tooltip="One-token word the vectors start from and the reference prompt uses ('person').",
        ),
        io.Float.Input(
            "face_margin",
            default=2.0,
            min=1.0,
            max=6.0,
            step=0.1,
            advanced=True,
            tooltip="face crop: side of the square over the face box's longer side.",
        ),
        io.Combo.Input(
            "training_dtype",
            options=list(TRAINING_DTYPES),
            default="auto",
            advanced=True,
            tooltip="UNet compute dtype while learning: auto = bf16 on GPUs that support it, else fp32.",
        ),
    ]


class LikenessLearnIDTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_LearnIDTokens",
            display_name="Likeness Learn ID Tokens (SeFi)",
            category="likeness/sefi",
            description=(
                "SeFi-IDE: learns a pseudo-word V* from ONE photo as five per-stage (key, value) token pairs, with "
                "the face-wise attention loss that keeps V* on the face. SD1.5 only. Slow: 600 steps take minutes on "
                "a GPU and hours on a CPU; the progress bar shows the loss curve. Cancel stops it and writes nothing."
            ),
            search_aliases=["sefi", "textual inversion", "identity token", "one shot identity", "learn face"],
            inputs=[
                io.Model.Input("model", tooltip="An SD1.5 MODEL. Attention patches on it are ignored while learning."),
                io.Clip.Input("clip", tooltip="The SD1.5 CLIP of the same checkpoint (frozen)."),
                io.Vae.Input("vae", tooltip="The VAE that encodes the photo."),
                io.Image.Input("image", tooltip="ONE photo of the person (the face clearly visible)."),
                io.Int.Input("steps", default=600, min=1, max=20000, tooltip="Training steps (paper: ~600)."),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=2**31 - 1,
                    control_after_generate="fixed",  # the frontend adds one to any "seed"
                    tooltip="Seeds the timesteps and noise: same photo, settings and seed give the same tokens.",
                ),
                io.Combo.Input(
                    "face_crop",
                    options=list(CROP_POLICIES),
                    default="face",
                    tooltip="face: a square around the detected face (needs face_analyzer); center: the largest "
                    "centred square; stretch: the whole photo squeezed to a square.",
                ),
                FaceAnalyzerType.Input(
                    "face_analyzer", optional=True, tooltip="From Likeness Face Analyzer; needed for face_crop 'face'."
                ),
                *_advanced_inputs(),
            ],
            outputs=[
                IdTokensType.Output("id_tokens", tooltip="The learned ID tokens: save them, or apply them."),
                io.Image.Output("loss_curve", tooltip="Loss per step (raw and smoothed)."),
                io.Image.Output("training_image", tooltip="The crop the tokens were learned from."),
            ],
        )

    @classmethod
    def execute(
        cls,
        model,
        clip,
        vae,
        image,
        steps,
        seed,
        face_crop,
        face_analyzer=None,
        learning_rate=5e-3,
        attention_weight=0.003,
        resolution=512,
        init_word="person",
        face_margin=2.0,
        training_dtype="auto",
    ) -> io.NodeOutput:
        config = SeFiTrainConfig(
            steps=int(steps),
            learning_rate=float(learning_rate),
            attention_weight=float(attention_weight),
            seed=int(seed),
        )
        word = init_word.strip()
        photo, box, photo_hash = training_photo(image, face_crop, face_analyzer, int(resolution), float(face_margin))
        latent = model.model.process_latent_in(vae.encode(photo[None]).float())
        progress = TrainingProgress(config.steps, label="SeFi ID tokens")
        with training_unet(model, training_dtype) as unet, trainable_text_encoder(clip), torch.enable_grad():
            # an ordinary copy: the buffer was made under ComfyUI's inference mode, and the loss's sigma is
            # sampled from it and saved for backward
            sigmas = model.get_model_object("model_sampling").sigmas.clone()
            denoiser = training_denoiser(unet, config.sites)
            encode, init_embedding = slot_encoder(clip, TRAINING_PROMPT, word)
            with comfy_interruption():
                tokens, reports = learn_id_tokens(
                    encode,
                    denoiser,
                    latent.clone().to(unet.device),  # an ordinary tensor: made outside inference mode
                    init_embedding,
                    config,
                    schedule_sigmas=sigmas,
                    init_word=word,
                    on_step=progress,
                    should_stop=should_stop,
                )
        weights = model.get_model_object("diffusion_model")
        crop = {"policy": face_crop, "box_xywh": list(box), "resolution": int(resolution)}
        dtype = str(next(weights.parameters()).dtype).removeprefix("torch.")
        provenance = Provenance(
            [photo_hash], config.steps, tensors_sha256(weights.state_dict()), extra={"crop": crop, "unet_dtype": dtype}
        )
        losses = [r.loss for r in reports]
        logger.info("Likeness SeFi: learned ID tokens in %d steps, last loss %.4f", len(losses), losses[-1])
        curve = loss_curve_tensor(losses, title="SeFi ID tokens")
        return io.NodeOutput(SeFiIdentity(tokens, provenance), curve, photo[None].float().cpu())


SEFI_LEARN_NODES = [LikenessLearnIDTokens]
