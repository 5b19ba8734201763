# -*- coding: utf-8 -*-
"""
Exact seams: which tile owns a nucleus, and the duplicate check across neighbouring tiles.

Ownership rule: a nucleus found in tile T belongs to T when the centre of its mask's bounding box
lies in T's core (:mod:`.tiling`): cores partition the slide, so a nucleus that two tiles see
alike is kept exactly once, and, being at most ``overlap`` px across, it is seen whole by its
owner (never cut). Two tiles may place the centre of a nucleus on the seam on different sides of
it (their predictions differ slightly near tile edges); to lose none, a centre up to
``SEAM_TOLERANCE`` px outside the core still counts, and the duplicates this can make are
removed by :class:`SeamStitcher`: of two nuclei of neighbouring tiles with mask IoU above
``DUPLICATE_IOU``, the one of the later tile (row-major) is dropped.

Per-tile results are stored as :class:`NucleusRecord` s: score, box and the box-local mask
(``h`` x ``w`` at working px, top-left pixel (x0, y0) of the working image) as a compressed COCO
RLE string. They are small, JSON-serialisable (a done record holds them as
``[score, x0, y0, w, h, counts]`` lists) and enough to rebuild everything else.
"""
from typing import Dict, Iterator, List, NamedTuple, Sequence, Tuple

import numpy as np

from ..utils.rle import to_box_mask
from ..utils import rle as rle_util
from .tiling import Tile, TileGrid

__all__ = ["NucleusRecord", "tile_records", "record_mask", "crop_iou", "SeamStitcher"]


class NucleusRecord(NamedTuple):
    """One nucleus a tile owns, in working pixels (a JSON list in the tile's done record)."""

    score: float
    x0: int  # top-left pixel of its box in the working image
    y0: int
    w: int
    h: int
    counts: str  # the box-local mask as compressed COCO RLE counts

    @classmethod
    def from_json(cls, values: Sequence) -> "NucleusRecord":
        return cls(*values)


def tile_records(instances, tile: Tile, grid: TileGrid, score_thresh: float,
                 tolerance: int) -> Tuple[List[NucleusRecord], int, List[int]]:
    """
    The nuclei ``tile`` owns, from the model's output on it.

    Args:
        instances: Detectron2 Instances on the tile (``pred_rles`` at the tile's size, ``scores``).
        score_thresh: keep detections scoring at least this.
        tolerance: ``SEAM_TOLERANCE`` (px a centre may lie outside the core at an inner seam).

    Returns:
        (records sorted by position, number of kept nuclei touching an inner tile edge, i.e.
        cut because they are larger than the overlap, the index in ``instances`` of each record).
    """
    rx0, ry0, rx1, ry1 = tile.region
    cx0, cy0, cx1, cy1 = tile.core
    # at the slide's edges the core is unbounded (nothing lies beyond)
    lo_x = cx0 - tolerance if cx0 > 0 else -np.inf
    lo_y = cy0 - tolerance if cy0 > 0 else -np.inf
    hi_x = cx1 + tolerance if cx1 < grid.width else np.inf
    hi_y = cy1 + tolerance if cy1 < grid.height else np.inf
    records, cut, index = [], 0, []
    scores = instances.scores.tolist()
    for i, (rle, score) in enumerate(zip(instances.pred_rles, scores)):
        if score < score_thresh:
            continue
        crop = to_box_mask(rle)
        if crop is None:
            continue
        mask, x0, y0 = crop
        h, w = mask.shape
        gx, gy = rx0 + x0, ry0 + y0  # working coordinates
        centre_x, centre_y = gx + w / 2.0, gy + h / 2.0
        if not (lo_x <= centre_x < hi_x and lo_y <= centre_y < hi_y):
            continue
        if (gx == rx0 and rx0 > 0) or (gy == ry0 and ry0 > 0) or (
            gx + w == rx1 and rx1 < grid.width) or (gy + h == ry1 and ry1 < grid.height):
            cut += 1
        counts = rle_util.encode(mask)["counts"]
        records.append(NucleusRecord(float(score), int(gx), int(gy), int(w), int(h), counts.decode("ascii")))
        index.append(i)
    order = sorted(range(len(records)), key=lambda k: (records[k].y0, records[k].x0, -records[k].score))
    return [records[k] for k in order], cut, [index[k] for k in order]


def record_mask(record: NucleusRecord) -> np.ndarray:
    """The box-local uint8 mask of a record."""
    return rle_util.decode({"size": [int(record.h), int(record.w)], "counts": record.counts.encode("ascii")})


def crop_iou(a: Tuple[np.ndarray, int, int], b: Tuple[np.ndarray, int, int]) -> float:
    """
    IoU of two box-local masks (mask, x0, y0) placed in one frame. Written here because
    pycocotools' iou needs both RLEs at one image size; pasting two small crops into their
    union box is simpler and as fast.
    """
    (ma, ax, ay), (mb, bx, by) = a, b
    x0, y0 = min(ax, bx), min(ay, by)
    x1 = max(ax + ma.shape[1], bx + mb.shape[1])
    y1 = max(ay + ma.shape[0], by + mb.shape[0])
    fa = np.zeros((y1 - y0, x1 - x0), bool)
    fb = np.zeros_like(fa)
    fa[ay - y0 : ay - y0 + ma.shape[0], ax - x0 : ax - x0 + ma.shape[1]] = ma > 0
    fb[by - y0 : by - y0 + mb.shape[0], bx - x0 : bx - x0 + mb.shape[1]] = mb > 0
    union = np.count_nonzero(fa | fb)
    return np.count_nonzero(fa & fb) / union if union else 0.0


class SeamStitcher:
    """
    Feed tiles in row-major order (:meth:`add`); get each tile's nuclei less the duplicates of
    nuclei of already-fed neighbours (left, and the three above). Only nuclei within ``overlap``
    px of their core's edge are remembered, and only for the current and previous tile rows, so
    memory is bounded by two rows of seam nuclei, not the slide.
    """

    def __init__(self, grid: TileGrid, iou_threshold: float = 0.5):
        self.grid = grid
        self.iou_threshold = float(iou_threshold)
        self._seam: Dict[Tuple[int, int], List[Tuple[np.ndarray, int, int]]] = {}
        self.duplicates = 0

    def _near_seam(self, tile: Tile, x0: int, y0: int, w: int, h: int) -> bool:
        cx0, cy0, cx1, cy1 = tile.core
        m = self.grid.overlap
        return x0 < cx0 + m or y0 < cy0 + m or x0 + w > cx1 - m or y0 + h > cy1 - m

    def add(self, tile: Tile, records: Sequence[NucleusRecord]) -> Iterator[Tuple[NucleusRecord, np.ndarray]]:
        """Yield (record, mask) of the tile's nuclei that duplicate no earlier neighbour's."""
        r, c = tile.row, tile.col
        for key in [k for k in self._seam if k[0] < r - 1]:
            del self._seam[key]
        neighbours = [
            crop
            for key in ((r - 1, c - 1), (r - 1, c), (r - 1, c + 1), (r, c - 1))
            for crop in self._seam.get(key, ())
        ]
        seam = self._seam.setdefault((r, c), [])
        for record in records:
            x0, y0, w, h = record.x0, record.y0, record.w, record.h
            mask = record_mask(record)
            if self._near_seam(tile, x0, y0, w, h):
                crop = (mask, x0, y0)
                if any(
                    nx < x0 + w and x0 < nx + nm.shape[1] and ny < y0 + h and y0 < ny + nm.shape[0]
                    and crop_iou(crop, (nm, nx, ny)) > self.iou_threshold
                    for nm, nx, ny in neighbours
                ):
                    self.duplicates += 1
                    continue
                seam.append(crop)
            yield record, mask
