"""Impact-Pack ``SEGS`` in and out, so the refine node interoperates with other detailer nodes."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .paste import check_inside
from .regions import CropRegion, check_bbox, check_image_size

__all__ = ["SEG", "to_segs", "from_seg"]

#: Impact-Pack's segment record (same field names and order, ``control_net_wrapper`` defaults to None).
SEG = namedtuple(
    "SEG",
    ["cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label", "control_net_wrapper"],
    defaults=[None],
)


def _region_mask_np(mask: Any, region: CropRegion, image_hw: tuple[int, int]) -> np.ndarray:
    arr = mask.detach().cpu().float().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask, np.float32)
    arr = np.squeeze(arr, axis=0) if arr.ndim == 3 and arr.shape[0] == 1 else arr
    if arr.shape == image_hw:
        arr = arr[region.y0 : region.y1, region.x0 : region.x1]
    elif arr.shape != (region.height, region.width):
        raise ValueError(
            f"segment mask {arr.shape} matches neither the image {image_hw} nor the crop region "
            f"{(region.height, region.width)}"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


def to_segs(
    image_size: Sequence[int],
    regions: Sequence[CropRegion],
    masks: Sequence[Any],
    bboxes: Sequence[Sequence[float]],
    labels: Sequence[str],
    confidences: Sequence[float],
    cropped_images: Sequence[torch.Tensor | None] | None = None,
) -> tuple[tuple[int, int], list[SEG]]:
    """Impact-Pack ``SEGS``: ``((H, W), [SEG, ...])``.

    Args:
        image_size: ``(height, width)``.
        regions: one :class:`CropRegion` per segment -> ``crop_region = [x0, y0, x1, y1]``.
        masks: per segment an image-space ``[H,W]`` or region-space ``[h,w]`` mask
            (tensor or array) -> ``cropped_mask`` float32 numpy ``[h,w]`` of the region.
        bboxes: ``(x1, y1, x2, y2)`` per segment -> ``bbox`` list.
        labels, confidences: per segment.
        cropped_images: optional ``[1,h,w,C]`` tensors (or None) per segment.
    """
    hw = check_image_size(image_size)
    n = len(regions)
    lengths = {"masks": len(masks), "bboxes": len(bboxes), "labels": len(labels), "confidences": len(confidences)}
    if cropped_images is not None:
        lengths["cropped_images"] = len(cropped_images)
    bad = {k: v for k, v in lengths.items() if v != n}
    if bad:
        raise ValueError(f"to_segs got {n} regions but {bad}; give one entry per segment")
    segs = []
    for i, region in enumerate(regions):
        check_inside(region, *hw)
        segs.append(
            SEG(
                cropped_image=None if cropped_images is None else cropped_images[i],
                cropped_mask=_region_mask_np(masks[i], region, hw),
                confidence=float(confidences[i]),
                crop_region=region.as_list(),
                bbox=[float(v) for v in check_bbox(bboxes[i])],
                label=str(labels[i]),
                control_net_wrapper=None,
            )
        )
    return hw, segs


def from_seg(seg: Any, image_size: Sequence[int]) -> tuple[CropRegion, torch.Tensor]:
    """A :class:`CropRegion` (scale 1) and the image-space ``[H,W]`` mask of an Impact ``SEG``."""
    height, width = check_image_size(image_size)
    x0, y0, x1, y1 = (int(v) for v in seg.crop_region)
    region = CropRegion(x0, y0, x1, y1, work_w=x1 - x0, work_h=y1 - y0, scale=1.0, bbox=check_bbox(seg.bbox))
    check_inside(region, height, width)
    cm = torch.as_tensor(np.asarray(seg.cropped_mask, dtype=np.float32))
    if tuple(cm.shape) != (region.height, region.width):
        raise InputError(
            f"A SEG's cropped_mask {tuple(cm.shape)} does not match its crop_region {region.as_list()}: the SEGS "
            "input is inconsistent (check the node that made it)."
        )
    mask = torch.zeros(height, width, dtype=torch.float32)
    mask[y0:y1, x0:x1] = cm
    return region, mask
