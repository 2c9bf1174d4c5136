"""FaceA-Net's fine-tuning tasks: per reference photo a 512x512 face crop, the face mask and the
left-eye / right-eye / nose / mouth masks, and the task prompts.

Tasks (AAAI 2025, FaceA-Net, attribute-driven fine-tuning):

* global task ``face``: reconstruct the masked face with ``T_face = "a <class> face"``;
* local tasks ``eye_left``, ``eye_right``, ``nose``, ``mouth``: reconstruct the masked part with
  ``T_v = "a <class> left eye"`` etc. "left"/"right" are the viewer's left/right (the same
  convention as :mod:`models.face.masks`: ``eye_left`` is the eye on the left of the picture).

The class word is ``man``, ``woman`` or ``person`` (the paper uses the person's gender; our face
analysers do not estimate it, so the user picks it). Each prompt gets ``count`` learned
[feat] vectors (3 for men, 4 for women in the paper; 4 for ``person``, our choice).

Geometry: the crop is the square of side ``crop_factor x`` the longer face-box side centred on the
box (shifted, never padded, to stay inside the photo; shrunk to the photo's shorter side when the
photo is too small), resized to ``resolution``. Masks are computed on the crop from the face
landmarks (68-point hulls when the analyser gives them, ellipses around the 5 points otherwise),
grown by ``mask_grow`` pixels at 512 (scaled with ``resolution``), binary.

Latent-space conventions follow ComfyUI's inpainting path exactly (``InpaintModelConditioning``
and ``BaseModel.concat_cond``), so training sees what Face Refine later feeds the model: the
masked image has the (rounded) masked pixels set to 0.5 grey before VAE encoding, and the mask
channel is the pixel mask resized bilinearly to the latent size and rounded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import LikenessError
from ..face import Face, face_mask
from ..finetune import image_sha256
from ..refine import CropRegion, crop_image, crop_region

__all__ = [
    "LOCAL_TASKS",
    "TASKS",
    "TASK_WORDS",
    "CLASS_WORDS",
    "FEAT_TOKENS",
    "task_prompt",
    "feat_token_count",
    "ReferenceCrop",
    "face_crop_region",
    "build_reference_crop",
    "masked_image",
    "latent_mask",
    "dilate_latent_mask",
    "training_latent_mask",
    "overlay_masks",
    "MASK_COLOURS",
]

logger = logging.getLogger(__name__)

LOCAL_TASKS = ("eye_left", "eye_right", "nose", "mouth")
TASKS = ("face",) + LOCAL_TASKS
TASK_WORDS = {"face": "face", "eye_left": "left eye", "eye_right": "right eye", "nose": "nose", "mouth": "mouth"}
CLASS_WORDS = ("man", "woman", "person")
#: Default number of [feat] vectors per prompt (paper: 3 for men, 4 for women; ``person``: 4, our choice).
FEAT_TOKENS = {"man": 3, "woman": 4, "person": 4}


def _check_class(class_word: str) -> None:
    if class_word not in CLASS_WORDS:
        raise LikenessError(f"class word must be one of {list(CLASS_WORDS)}, got {class_word!r}")


def task_prompt(class_word: str, task: str) -> str:
    """``"a <class> face"`` / ``"a <class> left eye"`` ... for a task of :data:`TASKS`."""
    _check_class(class_word)
    if task not in TASK_WORDS:
        raise LikenessError(f"unknown FaceA task {task!r}; tasks are {list(TASKS)}")
    return f"a {class_word} {TASK_WORDS[task]}"


def feat_token_count(class_word: str, override: int = 0) -> int:
    """[feat] vectors per prompt: ``override`` when > 0, else :data:`FEAT_TOKENS` of the class word."""
    _check_class(class_word)
    if override < 0 or override > 16:
        raise LikenessError(f"[feat] vectors per prompt must be 0 (automatic) to 16, got {override}")
    return int(override) or FEAT_TOKENS[class_word]


@dataclass(frozen=True)
class ReferenceCrop:
    """One reference photo prepared for fine-tuning.

    Attributes:
        image: ``[R, R, 3]`` float32 in [0, 1], the face crop (ComfyUI IMAGE element layout).
        masks: ``{task: [R, R] float32 in {0, 1}}`` for every task of :data:`TASKS`.
        region: the crop rectangle in the photo's pixels.
        face: the face in crop coordinates.
        photo_index: index of the photo in the input batch.
        photo_sha256: :func:`models.finetune.image_sha256` of the whole input photo.
    """

    image: torch.Tensor
    masks: dict[str, torch.Tensor]
    region: CropRegion
    face: Face
    photo_index: int
    photo_sha256: str


def face_crop_region(face: Face, image_hw: Sequence[int], crop_factor: float = 2.0) -> CropRegion:
    """Square crop around ``face``: side ``crop_factor x`` the longer box side, inside the photo."""
    if not crop_factor > 0:
        raise LikenessError(f"crop_factor must be > 0, got {crop_factor}")
    h, w = int(image_hw[0]), int(image_hw[1])
    box = max(face.width, face.height, 1.0)
    side = min(box * float(crop_factor), h, w)
    return crop_region(face.bbox, (h, w), crop_factor=side / box, square=True)


def build_reference_crop(
    image: torch.Tensor,
    face: Face,
    *,
    index: int = 0,
    resolution: int = 512,
    crop_factor: float = 2.0,
    mask_grow: int = 8,
) -> ReferenceCrop:
    """Crop one photo around ``face`` and compute every task mask.

    Args:
        image: ``[H, W, C]`` float in [0, 1] (C >= 3; extra channels are dropped).
        face: the person's face, in the photo's pixel coordinates.
        index: the photo's index (for messages and provenance).
        resolution: crop size in pixels (a multiple of 8, >= 64).
        crop_factor: crop side / longer face-box side.
        mask_grow: pixels (at 512; scaled with ``resolution``) every mask is grown by.

    Raises:
        LikenessError: bad resolution or image shape, or a task mask that is empty on the crop.
    """
    if resolution < 64 or resolution % 8:
        raise LikenessError(f"training resolution must be a multiple of 8 and >= 64, got {resolution}")
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise LikenessError(f"reference photo {index} must be [H,W,3]; got shape {tuple(image.shape)}")
    rgb = image[..., :3].float()
    region = face_crop_region(face, rgb.shape[:2], crop_factor)
    scale = resolution / region.width
    crop = crop_image(rgb[None], region, size=(resolution, resolution))[0].clamp(0, 1)
    local = face.shifted(-region.x0 * scale, -region.y0 * scale, scale)
    grow = max(0, round(mask_grow * resolution / 512))
    masks = {}
    for task in TASKS:
        m = face_mask(local, resolution, resolution, region=task, grow=grow)
        if float(m.sum()) < 1:
            raise LikenessError(
                f"reference photo {index}: the {TASK_WORDS[task]} mask is empty on the {resolution}px crop "
                f"(face box {[round(float(v)) for v in face.bbox]}). Use a photo where the face is visible and "
                "larger, or a lower crop factor."
            )
        masks[task] = m
    return ReferenceCrop(crop.contiguous(), masks, region, local, index, image_sha256(image))


def masked_image(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ComfyUI's inpainting input: pixels where ``round(mask) == 1`` become 0.5 grey.

    Args:
        image: ``[N, H, W, 3]`` float in [0, 1].
        mask: ``[N, H, W]`` in [0, 1].
    """
    keep = (1.0 - mask.round()).unsqueeze(-1).to(image.dtype)
    return (image - 0.5) * keep + 0.5


def latent_mask(mask: torch.Tensor, latent_hw: Sequence[int]) -> torch.Tensor:
    """``[N, H, W]`` pixel mask -> ``[N, 1, h, w]`` mask channel (bilinear resize, then round, as ComfyUI)."""
    m = mask.float().reshape(-1, 1, *mask.shape[-2:])
    if tuple(m.shape[-2:]) != tuple(latent_hw):
        m = F.interpolate(m, size=tuple(int(v) for v in latent_hw), mode="bilinear")
    return m.round()


def training_latent_mask(mask: torch.Tensor, latent_hw: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
    """:func:`latent_mask`, except that a part smaller than half a latent pixel does not vanish.

    ComfyUI's rounding drops a mask that covers no latent pixel by half (a far-away eye at a low
    training resolution); such a sample would train on an empty mask. For those samples (and only
    those) the mask channel is every latent pixel the part touches (max-pooled).

    Returns:
        ``([N, 1, h, w] mask, indices of the samples that needed it)``.
    """
    m = latent_mask(mask, latent_hw)
    thin = [i for i in range(m.shape[0]) if float(m[i].sum()) == 0]
    if thin:
        size = tuple(int(v) for v in latent_hw)
        touched = (F.adaptive_max_pool2d(mask.float().reshape(-1, 1, *mask.shape[-2:]), size) > 0).float()
        m[thin] = touched[thin]
    return m, thin


def dilate_latent_mask(mask: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Grow a ``[N, 1, h, w]`` binary latent mask by ``radius`` latent pixels (square), for the loss."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask, kernel_size=2 * radius + 1, stride=1, padding=radius)


#: RGB tint of each task mask in :func:`overlay_masks`.
MASK_COLOURS = {
    "face": (0.2, 0.4, 1.0),
    "eye_left": (1.0, 0.2, 0.2),
    "eye_right": (1.0, 0.6, 0.1),
    "nose": (0.2, 0.9, 0.3),
    "mouth": (0.9, 0.2, 0.9),
}


def overlay_masks(crop: ReferenceCrop, strength: float = 0.45) -> torch.Tensor:
    """The crop ``[R, R, 3]`` with every task mask tinted (face first, parts on top), to check the masks."""
    out = crop.image.clone()
    for task in TASKS:
        m = crop.masks[task][..., None] * strength
        colour = torch.tensor(MASK_COLOURS[task], dtype=out.dtype)
        out = out * (1 - m) + colour * m
    return out.clamp(0, 1)
