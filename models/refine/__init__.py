"""FaceDetailer-style refinement geometry: crop regions, paste-back under a feathered mask, colour match, SEGS.

The refine node generates the whole picture first and then re-renders only the face (FaceA-Net's
identity/context decoupling). Everything except the sampling lives here, ComfyUI-free, so the node
only does::

    region = plan_crop(bbox, image.shape[1:3])                     # crop_factor 3, guide 512, max 1024
    crop = crop_image(image, region)                               # [B,h,w,C] at region.work_size
    noise = feather_mask(crop_mask(mask, region), 40)              # latent noise_mask (mask_ops)
    ... VAE encode crop -> sample with noise mask -> VAE decode -> refined [B,h,w,C] ...
    refined = match_color(refined, crop, crop_mask(mask, region))  # optional
    out = paste_back(image, refined, region, mask, feather=10)     # pixels outside mask unchanged
"""

from .color import match_color
from .paste import box_mask, crop_image, crop_mask, paste_back
from .regions import CropRegion, crop_region, plan_crop, working_size
from .segs import SEG, from_seg, to_segs

__all__ = [
    "SEG",
    "CropRegion",
    "crop_region",
    "working_size",
    "plan_crop",
    "crop_image",
    "crop_mask",
    "box_mask",
    "paste_back",
    "match_color",
    "to_segs",
    "from_seg",
]
