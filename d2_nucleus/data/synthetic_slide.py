# -*- coding: utf-8 -*-
"""
Synthetic whole-slide images for tests and benchmarks: glass with image patches placed on it,
written as a tiled pyramidal TIFF that OpenSlide opens as an Aperio slide (the first
ImageDescription starts with "Aperio Image Library" and carries "|MPP = ..."). Tiles are generated
one at a time, so a 100k x 100k px slide is written in bounded memory.
"""
import math
from typing import Iterator, List, Sequence, Tuple

import cv2
import numpy as np

__all__ = ["GLASS_RGB", "write_synthetic_slide"]

# Background glass as scanners show it: light grey-white, unsaturated.
GLASS_RGB = (242, 242, 240)

Patch = Tuple[np.ndarray, int, int]  # (RGB image, x, y) at level 0


def _tiles(height: int, width: int, patches: Sequence[Patch], downsample: int, tile: int,
           glass: Sequence[int]) -> Iterator[np.ndarray]:
    """Row-major tiles of one level (edge tiles padded with glass)."""
    scaled = []
    for image, x, y in patches:
        if downsample == 1:
            scaled.append((image, x, y))
        else:
            h, w = image.shape[:2]
            x1, y1 = (x + w) // downsample, (y + h) // downsample
            x0, y0 = x // downsample, y // downsample
            if x1 > x0 and y1 > y0:
                scaled.append((cv2.resize(image, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA), x0, y0))
    for ty in range(0, height, tile):
        for tx in range(0, width, tile):
            out = np.empty((tile, tile, 3), np.uint8)
            out[:] = glass
            for image, x, y in scaled:
                h, w = image.shape[:2]
                ax0, ay0 = max(x, tx), max(y, ty)
                ax1, ay1 = min(x + w, tx + tile, width), min(y + h, ty + tile, height)
                if ax1 > ax0 and ay1 > ay0:
                    out[ay0 - ty : ay1 - ty, ax0 - tx : ax1 - tx] = image[ay0 - y : ay1 - y, ax0 - x : ax1 - x]
            yield out


def write_synthetic_slide(
    path: str,
    width: int,
    height: int,
    patches: Sequence[Patch] = (),
    mpp: float = 0.252,
    compression: str = "jpeg",
    tile: int = 256,
    glass: Sequence[int] = GLASS_RGB,
    min_level_side: int = 512,
) -> List[Tuple[int, int]]:
    """
    Write an Aperio-style pyramidal TIFF of ``width`` x ``height`` px of glass with ``patches``
    (RGB uint8 images at level-0 positions; later ones over earlier ones) and levels downsampled
    by 4, 16, ... while the level is larger than ``min_level_side``.

    Args:
        compression: "jpeg" (as scanners do) or "zlib" (lossless: pixels read back exactly).

    Returns:
        the (width, height) of each level.
    """
    import tifffile

    levels = [1]
    while max(width, height) // (levels[-1] * 4) >= min_level_side:
        levels.append(levels[-1] * 4)
    dims = [(int(math.ceil(width / d)), int(math.ceil(height / d))) for d in levels]
    with tifffile.TiffWriter(path, bigtiff=width * height * 3 > 2**31) as tw:
        for d, (w, h) in zip(levels, dims):
            description = (
                f"Aperio Image Library v12.0.0 \n{width}x{height} [0,0 {w}x{h}] ({tile}x{tile}) "
                f"{compression.upper()}/RGB|AppMag = {40 * 0.25 / mpp:.0f}|MPP = {mpp:.4f}"
            )
            tw.write(
                _tiles(h, w, patches, d, tile, glass),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                compression=compression,
                photometric="rgb",
                description=description,
                metadata=None,
            )
    return dims
