# -*- coding: utf-8 -*-
"""
Many nuclei as box-local binary masks, and their grouping into padded stacks.

Every measurement is computed on (k, H, W) boolean stacks of box-local masks of similar size
(each mask at offset (1, 1), with at least one row/column of zeros around it), so numpy
evaluates one expression for thousands of nuclei at a time instead of one region at a time as
``skimage.measure.regionprops`` does, and memory is bounded by the stack budget, never by the
image size. No full-image mask is ever built.
"""
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..utils import rle as rle_util

__all__ = ["BoxMasks", "MaskStack", "iter_stacks"]

# Padded pixels per stack (bool: 1 byte each; the shape pass keeps ~10 temporaries of this size,
# the colour pass 3 x 8 bytes per mask pixel): ~2 MB a stack, ~50 MB of temporaries at most.
_STACK_PIXELS = 2 * 1024 * 1024
# Stack heights/widths are rounded up to a multiple of this (fewer, fuller groups).
_ROUND = 8


@dataclass
class BoxMasks:
    """
    N nuclei as box-local masks: ``masks[i]`` is a 2-D array (nonzero = nucleus) whose
    top-left pixel is at column ``x0[i]``, row ``y0[i]`` of the image. The box need not be
    tight; a mask may have holes or several parts, and may be empty.
    """

    masks: List[np.ndarray]
    x0: np.ndarray  # (N,) int64
    y0: np.ndarray  # (N,) int64

    def __post_init__(self):
        self.x0 = np.asarray(self.x0, dtype=np.int64).reshape(-1)
        self.y0 = np.asarray(self.y0, dtype=np.int64).reshape(-1)
        if not (len(self.masks) == len(self.x0) == len(self.y0)):
            raise ValueError(f"{len(self.masks)} masks for {len(self.x0)} x0 and {len(self.y0)} y0 offsets")
        for i, m in enumerate(self.masks):
            if np.ndim(m) != 2:
                raise ValueError(f"mask {i} is not 2-D (shape {np.shape(m)})")

    def __len__(self) -> int:
        return len(self.masks)

    @classmethod
    def from_rles(cls, rles: Sequence[dict]) -> "BoxMasks":
        """Box-local masks of COCO RLEs (decoded into their boxes only; empty RLEs: 0 x 0)."""
        masks, x0, y0 = [], [], []
        for rle in rles:
            crop = rle_util.to_box_mask(rle)
            if crop is None:
                crop = (np.zeros((0, 0), np.uint8), 0, 0)
            masks.append(crop[0])
            x0.append(crop[1])
            y0.append(crop[2])
        return cls(masks, np.array(x0, np.int64), np.array(y0, np.int64))


@dataclass
class MaskStack:
    """k box-local masks of one padded size: ``stack[j, 1 + r, 1 + c]`` is pixel (x0 + c, y0 + r)."""

    index: np.ndarray  # (k,) position of each mask in the BoxMasks
    stack: np.ndarray  # (k, H, W) bool, zero border of at least one pixel
    x0: np.ndarray  # (k,) image column of local column 0 (stack column 1)
    y0: np.ndarray  # (k,) image row of local row 0 (stack row 1)


def _shapes(masks: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    shapes = np.array([m.shape for m in masks], dtype=np.int64).reshape(-1, 2)
    return shapes[:, 0], shapes[:, 1]


def iter_stacks(boxes: BoxMasks, budget: Optional[int] = None) -> Iterator[MaskStack]:
    """
    Group the masks by padded size (height + 2 and width + 2, rounded up to a multiple of 8)
    and yield them as stacks of at most ``budget`` padded pixels (at least one mask a stack).
    """
    budget = budget or _STACK_PIXELS
    n = len(boxes)
    if n == 0:
        return
    h, w = _shapes(boxes.masks)
    hp = -(-(h + 2) // _ROUND) * _ROUND
    wp = -(-(w + 2) // _ROUND) * _ROUND
    keys, inverse = np.unique(np.stack([hp, wp], axis=1), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(keys) + 1))
    for g, (gh, gw) in enumerate(keys.tolist()):
        members = order[bounds[g] : bounds[g + 1]]
        per_stack = max(1, budget // (gh * gw))
        for start in range(0, len(members), per_stack):
            idx = members[start : start + per_stack]
            stack = np.zeros((len(idx), gh, gw), dtype=bool)
            for j, i in enumerate(idx.tolist()):
                m = boxes.masks[i]
                stack[j, 1 : 1 + m.shape[0], 1 : 1 + m.shape[1]] = m
            yield MaskStack(idx, stack, boxes.x0[idx], boxes.y0[idx])
