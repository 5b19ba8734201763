# -*- coding: utf-8 -*-
"""
Memory-light replacement of Detectron2's ``detector_postprocess`` for dense instance masks.

Detectron2 pastes every box-local mask (N x M x M) into a full-size boolean image
(``paste_masks_in_image``), so N detections on an H x W image take N * H * W bytes
(1,862 nuclei on 1000 x 1000: 1.9 GB), and COCO-style evaluation then RLE-encodes every one of
those full-size masks. Here each mask is pasted into its own box region only and its COCO RLE is
built straight from that box-local mask: memory and time are O(sum of box areas), and the result
is pixel-for-pixel the one of ``detector_postprocess`` + ``paste_masks_in_image(threshold)`` +
``pycocotools.mask.encode`` (Detectron2's CPU paste: same grid_sample sampling, restricted to the
box's integer extent grown by one pixel).
"""
from typing import Dict, List, Tuple, Union

import numpy as np
import torch
from torch.nn import functional as F

from detectron2.structures import Boxes, Instances, ROIMasks

from ..utils import rle as rle_util

__all__ = ["nucleus_postprocess", "paste_masks_to_rles", "RLEList"]

# Work on at most this many padded box-local pixels at a time (float32: 4 bytes each, plus the
# sampling grid: 8 bytes each), i.e. ~20 MB of temporaries.
_CHUNK_PIXELS = 1024 * 1024


class RLEList(list):
    """
    A list of COCO RLE dicts ``{"size": [h, w], "counts": str}``, one per instance, that can be
    stored in :class:`Instances`: it also accepts what ``Instances.__getitem__`` passes (a bool
    mask, an index tensor or array, a slice or an int).
    """

    def __getitem__(self, item):
        if isinstance(item, (int, np.integer)):
            return list.__getitem__(self, int(item))
        if isinstance(item, slice):
            return RLEList(list.__getitem__(self, item))
        if isinstance(item, torch.Tensor):
            item = item.cpu().numpy()
        item = np.asarray(item)
        if item.dtype == bool:
            if item.shape != (len(self),):
                raise IndexError(f"boolean index of shape {item.shape} for {len(self)} RLEs")
            item = np.flatnonzero(item)
        if item.ndim == 0:
            return list.__getitem__(self, int(item))
        return RLEList(list.__getitem__(self, int(i)) for i in item.reshape(-1))


def _paste_regions(boxes: torch.Tensor, img_h: int, img_w: int) -> torch.Tensor:
    """
    Integer region (x0, y0, x1, y1) of each box into which Detectron2's CPU paste writes:
    the box's integer extent grown by one pixel, clipped to the image (``_do_paste_mask`` with
    ``skip_empty=True`` on one box).
    """
    x0 = torch.clamp(boxes[:, 0].floor() - 1, min=0)
    y0 = torch.clamp(boxes[:, 1].floor() - 1, min=0)
    x1 = torch.clamp(boxes[:, 2].ceil() + 1, max=img_w)
    y1 = torch.clamp(boxes[:, 3].ceil() + 1, max=img_h)
    return torch.stack([x0, y0, x1, y1], dim=1).to(torch.int64)


def _chunks(heights: np.ndarray, widths: np.ndarray, budget: int) -> List[np.ndarray]:
    """Group instances of similar region size so that each padded group has <= budget pixels."""
    order = np.lexsort((widths, heights))
    groups, start = [], 0
    while start < len(order):
        end, max_h, max_w = start, 0, 0
        while end < len(order):
            h, w = max(max_h, heights[order[end]]), max(max_w, widths[order[end]])
            if end > start and (end - start + 1) * h * w > budget:
                break
            max_h, max_w, end = h, w, end + 1
        groups.append(order[start:end])
        start = end
    return groups


def _paste_chunk(masks, boxes, regions, max_h: int, max_w: int, threshold: float) -> torch.Tensor:
    """
    Bilinearly sample k box-local masks onto their (padded) integer regions and binarise.

    The sampling grid is computed exactly as in ``detectron2.layers.mask_ops._do_paste_mask``
    (same float32 operations per pixel), so the values are identical.

    Returns:
        (k, max_h, max_w) bool tensor; pixels outside an instance's own region are False.
    """
    device = masks.device
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)  # each k x 1
    rx0, ry0 = regions[:, 0:1], regions[:, 1:2]
    img_y = (ry0 + torch.arange(max_h, device=device)).to(torch.float32) + 0.5
    img_x = (rx0 + torch.arange(max_w, device=device)).to(torch.float32) + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    k = masks.shape[0]
    gx = img_x[:, None, :].expand(k, max_h, max_w)
    gy = img_y[:, :, None].expand(k, max_h, max_w)
    grid = torch.stack([gx, gy], dim=3)
    if not masks.dtype.is_floating_point:
        masks = masks.float()
    pasted = F.grid_sample(masks[:, None], grid.to(masks.dtype), align_corners=False)[:, 0]
    binary = pasted >= threshold
    heights = (regions[:, 3] - regions[:, 1])[:, None, None]
    widths = (regions[:, 2] - regions[:, 0])[:, None, None]
    inside = (torch.arange(max_h, device=device)[None, :, None] < heights) & (
        torch.arange(max_w, device=device)[None, None, :] < widths
    )
    return binary & inside


def paste_masks_to_rles(
    masks: torch.Tensor,
    boxes: Union[Boxes, torch.Tensor],
    image_shape: Tuple[int, int],
    threshold: float = 0.5,
) -> List[Dict]:
    """
    The COCO RLEs of ``paste_masks_in_image(masks, boxes, image_shape, threshold)``, computed
    without full-size masks.

    Args:
        masks: (N, M, M) box-local mask probabilities (any M; e.g. 28 for Mask R-CNN).
        boxes: N boxes (XYXY, image coordinates) into which the masks are pasted.
        image_shape: (height, width) of the image.
        threshold: binarisation threshold in [0, 1] (a pixel is in the mask when >= threshold).

    Returns:
        list of N dicts ``{"size": [height, width], "counts": str}`` (compressed COCO RLE).
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"mask threshold must be in [0, 1], got {threshold}")
    if isinstance(boxes, Boxes):
        boxes = boxes.tensor
    if masks.dim() != 3 or len(masks) != len(boxes):
        raise ValueError(f"need N x M x M masks for N boxes, got {tuple(masks.shape)} for {len(boxes)}")
    img_h, img_w = int(image_shape[0]), int(image_shape[1])
    n = len(masks)
    if n == 0:
        return []
    boxes = boxes.to(device=masks.device, dtype=torch.float32)
    regions = _paste_regions(boxes, img_h, img_w)
    regions_np = regions.cpu().numpy()
    heights = regions_np[:, 3] - regions_np[:, 1]
    widths = regions_np[:, 2] - regions_np[:, 0]

    def parts():
        for idx in _chunks(heights, widths, _CHUNK_PIXELS):
            max_h, max_w = int(heights[idx].max()), int(widths[idx].max())
            sel = torch.as_tensor(idx, device=masks.device)
            binary = _paste_chunk(masks[sel], boxes[sel], regions[sel], max_h, max_w, threshold)
            yield idx, binary.cpu().numpy(), regions_np[idx, :2]

    return rle_util.encode_box_masks_batched(parts(), n, (img_h, img_w))


def nucleus_postprocess(
    results: Instances, output_height: int, output_width: int, mask_threshold: float = 0.5
) -> Instances:
    """
    Resize the raw outputs of an R-CNN to the output resolution, like Detectron2's
    ``detector_postprocess``, but return masks as per-instance COCO RLEs.

    Args:
        results: raw outputs for one image; ``results.image_size`` is the network input size.
            Box-local mask probabilities, if any, are in ``pred_masks`` (N x 1 x M x M tensor
            or :class:`ROIMasks`). Not modified.
        output_height, output_width: the desired output resolution (the image's native size).
        mask_threshold: a pixel belongs to a mask when its pasted probability >= this.

    Returns:
        Instances of size (output_height, output_width) with every field of ``results`` for the
        boxes that are not empty after scaling and clipping; ``pred_masks`` is replaced by
        ``pred_rles``: an :class:`RLEList` of ``{"size": [h, w], "counts": str}``.
    """
    output_height, output_width = int(output_height), int(output_width)
    scale_x = output_width / results.image_size[1]
    scale_y = output_height / results.image_size[0]
    fields = dict(results.get_fields())
    # Under bfloat16 autocast the heads emit bf16 scores; outputs are float32 (numpy, JSON).
    for name, value in fields.items():
        if isinstance(value, torch.Tensor) and value.dtype in (torch.bfloat16, torch.float16):
            fields[name] = value.float()
    box_field = "pred_boxes" if "pred_boxes" in fields else "proposal_boxes"
    if box_field not in fields:
        raise ValueError("Predictions must contain boxes!")
    boxes = Boxes(fields[box_field].tensor.to(torch.float32, copy=True))
    boxes.scale(scale_x, scale_y)
    boxes.clip((output_height, output_width))
    fields[box_field] = boxes
    if "pred_keypoints" in fields:
        keypoints = fields["pred_keypoints"].clone()
        keypoints[:, :, 0] *= scale_x
        keypoints[:, :, 1] *= scale_y
        fields["pred_keypoints"] = keypoints
    masks = fields.pop("pred_masks", None)
    results = Instances((output_height, output_width), **fields)

    keep = boxes.nonempty()
    results = results[keep]
    if masks is not None:
        masks = masks.tensor if isinstance(masks, ROIMasks) else masks[:, 0]
        masks = masks[keep]
        results.pred_rles = RLEList(
            paste_masks_to_rles(masks, results.get(box_field), (output_height, output_width), mask_threshold)
        )
    return results
