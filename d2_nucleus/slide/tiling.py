# -*- coding: utf-8 -*-
"""
Geometry of a tiled run: the pyramid level read, the "working" pixel grid at the model's
resolution, and the grid of overlapping tiles over it.

Tiles partition the working image by their *cores*: core (r, c) is
``[c * stride, (c + 1) * stride) x [r * stride, (r + 1) * stride)`` (the last ones end at the
image edge), ``stride = tile_size - overlap``. A tile is its core grown by half the overlap on each
side (clipped to the image; a tile clipped at the left / top edge is grown on its other side back
to the tile size), so neighbouring tiles share at least ``overlap`` pixels and a nucleus at most
``overlap`` px across whose box centre lies in a core is seen whole by that core's tile.
"""
import math
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..data.slide_readers import SlideSource, choose_level

__all__ = ["SlideGeometry", "slide_geometry", "Tile", "TileGrid", "batch_tiles", "read_tile"]


@dataclass(frozen=True)
class SlideGeometry:
    """
    level: pyramid level read. level_downsample: level-0 px per level px.
    scale: level-0 px per working px. working_mpp: um per working px (x).
    resample: tiles are resized from the level (False: working px = level px).
    width, height: size of the working image.
    """

    level: int
    level_downsample: float
    scale: float
    working_mpp: float
    resample: bool
    width: int
    height: int

    def to_level0(self, xy: np.ndarray) -> np.ndarray:
        """Continuous working coordinates -> continuous level-0 coordinates."""
        return np.asarray(xy, dtype=np.float64) * self.scale


def slide_geometry(source: SlideSource, model_mpp: float, tolerance: float = 0.1) -> SlideGeometry:
    """Level choice (:func:`choose_level`) and the working grid for a model at ``model_mpp``."""
    mpp0 = float(source.mpp[0])
    level_mpps = [mpp0 * d for d in source.level_downsamples]
    level = choose_level(level_mpps, model_mpp, tolerance)
    downsample = source.level_downsamples[level]
    if abs(level_mpps[level] / model_mpp - 1.0) <= tolerance:
        scale, resample = downsample, False
        width, height = source.level_dimensions[level]
    else:
        scale, resample = model_mpp / mpp0, True
        w0, h0 = source.dimensions
        width, height = int(math.ceil(w0 / scale)), int(math.ceil(h0 / scale))
    return SlideGeometry(level, downsample, scale, mpp0 * scale, resample, int(width), int(height))


@dataclass(frozen=True)
class Tile:
    """core / region: (x0, y0, x1, y1) in working px, end exclusive."""

    row: int
    col: int
    core: Tuple[int, int, int, int]
    region: Tuple[int, int, int, int]

    @property
    def name(self) -> str:
        return f"r{self.row:05d}_c{self.col:05d}"


class TileGrid:
    """Overlapping tiles over a ``width`` x ``height`` working image, row-major."""

    def __init__(self, width: int, height: int, tile_size: int, overlap: int):
        if tile_size <= 0 or overlap < 0 or overlap >= tile_size:
            raise ValueError(f"need 0 <= overlap < tile size, got tile size {tile_size}, overlap {overlap}")
        self.width, self.height = int(width), int(height)
        self.tile_size, self.overlap = int(tile_size), int(overlap)
        self.stride = self.tile_size - self.overlap
        self.before = self.overlap // 2  # context on the left / top of a core
        self.after = self.overlap - self.before
        self.cols = max(1, math.ceil(self.width / self.stride))
        self.rows = max(1, math.ceil(self.height / self.stride))

    def __len__(self) -> int:
        return self.rows * self.cols

    def tile(self, row: int, col: int) -> Tile:
        cx0, cy0 = col * self.stride, row * self.stride
        cx1, cy1 = min(cx0 + self.stride, self.width), min(cy0 + self.stride, self.height)
        x0, y0 = max(cx0 - self.before, 0), max(cy0 - self.before, 0)
        x1, y1 = min(cx1 + self.after, self.width), min(cy1 + self.after, self.height)
        # A tile clipped at the image's left / top edge is grown on its other side back to the
        # tile size: every tile but those of the last column / row then has one size, so tiles
        # batch together without padding (batch_tiles).
        if x0 == 0:
            x1 = min(max(x1, self.tile_size), self.width)
        if y0 == 0:
            y1 = min(max(y1, self.tile_size), self.height)
        return Tile(row, col, (cx0, cy0, cx1, cy1), (x0, y0, x1, y1))

    def __iter__(self) -> Iterator[Tile]:
        for row in range(self.rows):
            for col in range(self.cols):
                yield self.tile(row, col)

    def select(self, mask: Optional[np.ndarray], mask_scale: float, geometry: SlideGeometry) -> np.ndarray:
        """
        (rows, cols) bool: tiles whose core holds tissue in ``mask`` (a low-resolution bool mask,
        ``mask_scale`` level-0 px per mask px); all tiles when ``mask`` is None.
        """
        if mask is None:
            return np.ones((self.rows, self.cols), bool)
        # integral image: tissue pixels in any rectangle in O(1)
        integral = cv2.integral(mask.astype(np.uint8))
        mh, mw = mask.shape
        f = geometry.scale / mask_scale  # mask px per working px
        keep = np.zeros((self.rows, self.cols), bool)
        for tile in self:
            x0, y0, x1, y1 = tile.core
            # the core's footprint on the mask, grown by a mask pixel (rounding)
            mx0, my0 = max(int(math.floor(x0 * f)) - 1, 0), max(int(math.floor(y0 * f)) - 1, 0)
            mx1, my1 = min(int(math.ceil(x1 * f)) + 1, mw), min(int(math.ceil(y1 * f)) + 1, mh)
            if mx1 > mx0 and my1 > my0:
                total = integral[my1, mx1] - integral[my0, mx1] - integral[my1, mx0] + integral[my0, mx0]
                keep[tile.row, tile.col] = total > 0
        return keep


def read_tile(source: SlideSource, geometry: SlideGeometry, tile: Tile) -> np.ndarray:
    """The tile's region at the working resolution, RGB uint8 (height, width, 3)."""
    x0, y0, x1, y1 = tile.region
    width, height = x1 - x0, y1 - y0
    if not geometry.resample:
        d = geometry.level_downsample
        return source.read_region(int(round(x0 * d)), int(round(y0 * d)), geometry.level, width, height)
    # Read the level region covering the tile (plus a pixel of margin) and resize it.
    s, d = geometry.scale, geometry.level_downsample
    lx0, ly0 = x0 * s / d, y0 * s / d  # tile origin in level px (continuous)
    ix0, iy0 = int(math.floor(lx0)), int(math.floor(ly0))
    lw = int(math.ceil((x1 * s / d) - ix0)) + 1
    lh = int(math.ceil((y1 * s / d) - iy0)) + 1
    level_img = source.read_region(int(round(ix0 * d)), int(round(iy0 * d)), geometry.level, lw, lh)
    k = d / s  # working px per level px
    # affine map level px -> working px of the tile: u = (lx - lx0) * k
    matrix = np.array([[k, 0, (ix0 - lx0) * k], [0, k, (iy0 - ly0) * k]], dtype=np.float64)
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    if interp == cv2.INTER_AREA:  # warpAffine has no area filter: resize first, then place
        size = (max(1, int(round(lw * k))), max(1, int(round(lh * k))))
        level_img = cv2.resize(level_img, size, interpolation=cv2.INTER_AREA)
        fx, fy = lw * k / size[0], lh * k / size[1]  # rounding of the resized size
        matrix = np.array([[fx, 0, (ix0 - lx0) * k], [0, fy, (iy0 - ly0) * k]], dtype=np.float64)
        interp = cv2.INTER_LINEAR
    return cv2.warpAffine(level_img, matrix, (width, height), flags=interp, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(255, 255, 255))


def batch_tiles(tiles: Sequence[Tile], batch_size: int) -> List[List[Tile]]:
    """
    ``tiles`` in order, in batches of at most ``batch_size`` tiles of one size. The model pads a
    batch to its largest image, so an edge tile (a few px wide) batched with a full tile would cost
    a full tile's compute and, with GroupNorm, its statistics would take in the padding
    (BENCHMARKS.md "Figures behind the code").
    A new batch starts when the size changes, so every tile's result is its result alone.
    """
    batches: List[List[Tile]] = []
    for tile in tiles:
        if batches and len(batches[-1]) < batch_size and _size(batches[-1][0]) == _size(tile):
            batches[-1].append(tile)
        else:
            batches.append([tile])
    return batches


def _size(tile: Tile) -> Tuple[int, int]:
    x0, y0, x1, y1 = tile.region
    return x1 - x0, y1 - y0
