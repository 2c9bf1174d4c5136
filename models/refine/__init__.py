"""FaceDetailer-style refinement geometry: crop regions, feathered masks, paste-back, colour match, SEGS."""

from .core import (
    SEG,
    CropRegion,
    box_mask,
    crop_image,
    crop_mask,
    crop_region,
    feather_mask,
    from_seg,
    match_color,
    paste_back,
    plan_crop,
    to_segs,
    working_size,
)

__all__ = [
    "SEG",
    "CropRegion",
    "crop_region",
    "working_size",
    "plan_crop",
    "crop_image",
    "crop_mask",
    "box_mask",
    "feather_mask",
    "paste_back",
    "match_color",
    "to_segs",
    "from_seg",
]
