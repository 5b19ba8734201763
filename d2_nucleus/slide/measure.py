# -*- coding: utf-8 -*-
"""
Per-nucleus measurements in the slide pipeline (:mod:`d2_nucleus.measurements`).

Each tile measures the nuclei it owns right after the model ran on it, from its box-local masks
and the tile's own pixels (:func:`~d2_nucleus.measurements.measure_nuclei`), so no slide-sized
image or mask is ever built. The measurements are taken at the *working* resolution, the model's
(``SlideGeometry.working_mpp``): the masks exist only there, and the colour is that of the pixels
the model saw. The values are kept, in working pixels, in the tile's done record
(:mod:`.work`): a resumed run writes them back unchanged, so its outputs equal an uninterrupted
run's. At output they are converted like the rest of the slide table (:func:`level0_columns`):
lengths in level-0 px = working px x ``scale`` and in um = working px x ``working_mpp``; the
ratios (circularity, solidity, eccentricity), the orientation and the colour do not change.
Centroid, box and area come from the pipeline's own level-0 columns.
"""
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..measurements.masks import BoxMasks
from ..measurements.nuclei import COLOUR_COLUMNS, LENGTH_COLUMNS, measure_nuclei
from ..measurements.stain import image_stain_matrix
from .stitching import NucleusRecord, record_mask
from .tiling import SlideGeometry, Tile

__all__ = ["TILE_COLUMNS", "slide_stain_matrix", "measure_tile", "level0_columns"]

logger = logging.getLogger(__name__)

# Measurements a done record keeps per nucleus, in working px (centroid, box and area excluded).
TILE_COLUMNS = (
    "perimeter_px", "circularity", "solidity", "eccentricity", "major_axis_length_px",
    "minor_axis_length_px", "orientation", "equivalent_diameter_px",
) + COLOUR_COLUMNS  # fmt: skip


def slide_stain_matrix(thumbnail: np.ndarray, method: str, name: str = "") -> Tuple[str, np.ndarray]:
    """
    The slide's ``rgb_from_stain`` matrix: fixed Ruifrok-Johnston, or Macenko estimated once from
    the slide's thumbnail (falls back to Ruifrok-Johnston, with a warning, when it has too few
    stained pixels). Returns (method used, matrix).
    """
    try:
        return method, image_stain_matrix(thumbnail, method)
    except ValueError as e:
        if method == "ruifrok":
            raise
        logger.warning("%s: %s; using the Ruifrok-Johnston stain vectors", name, e)
        return "ruifrok", image_stain_matrix(thumbnail, "ruifrok")


def measure_tile(records: Sequence[NucleusRecord], tile: Tile, image_rgb: np.ndarray,
                 rgb_from_stain: Optional[np.ndarray]) -> Dict[str, List[float]]:
    """
    :data:`TILE_COLUMNS` of a tile's records (:func:`.stitching.tile_records`), measured on the
    tile's RGB pixels ``image_rgb`` (working resolution), as JSON-ready lists in record order.
    """
    rx0, ry0 = tile.region[:2]
    boxes = BoxMasks([record_mask(r) for r in records], [r.x0 - rx0 for r in records], [r.y0 - ry0 for r in records])
    values = measure_nuclei(boxes, image_rgb, rgb_from_stain=rgb_from_stain, origin=(rx0, ry0))
    return {name: values[name].tolist() for name in TILE_COLUMNS}


def level0_columns(values: Dict[str, Sequence[float]], geometry: SlideGeometry) -> Dict[str, np.ndarray]:
    """Working-px :data:`TILE_COLUMNS` -> table columns (lengths in level-0 px and in um)."""
    out = {}
    for name in TILE_COLUMNS:
        x = np.asarray(values[name], dtype=np.float64)
        base = name[: -len("_px")] if name.endswith("_px") else None
        if base in LENGTH_COLUMNS:
            out[name] = x * geometry.scale
            out[f"{base}_um"] = x * geometry.working_mpp
        else:
            out[name] = x
    return out
