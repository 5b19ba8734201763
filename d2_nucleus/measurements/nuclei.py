# -*- coding: utf-8 -*-
"""
Per-nucleus measurements: the table columns of :mod:`d2_nucleus.export.tables` for many nuclei
given as box-local masks (:class:`.masks.BoxMasks`) and the image under them.
"""
from typing import Dict, Optional, Tuple

import numpy as np

from .convex_hull import convex_area
from .intensity import stack_intensity
from .masks import BoxMasks, iter_stacks
from .shape import stack_geometry, stack_shape
from .stain import stain_conversion

__all__ = ["measure_nuclei", "nucleus_geometry", "SHAPE_COLUMNS", "COLOUR_COLUMNS", "LENGTH_COLUMNS"]

# Columns in pixels that get an _um twin (and area_px -> area_um2), see tables.TABLE_COLUMNS.
LENGTH_COLUMNS = ("perimeter", "major_axis_length", "minor_axis_length", "equivalent_diameter")
SHAPE_COLUMNS = (
    "centroid_x", "centroid_y", "centroid_x_um", "centroid_y_um",
    "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "area_px", "area_um2",
    "perimeter_px", "perimeter_um", "circularity", "solidity", "eccentricity",
    "major_axis_length_px", "major_axis_length_um", "minor_axis_length_px", "minor_axis_length_um",
    "orientation", "equivalent_diameter_px", "equivalent_diameter_um",
)  # fmt: skip
COLOUR_COLUMNS = (
    "hematoxylin_od_mean", "hematoxylin_od_std", "eosin_od_mean", "eosin_od_std",
    "red_mean", "green_mean", "blue_mean",
)  # fmt: skip

# regionprops names of the stack measurements -> table columns (pixels)
_SHAPE_NAMES = {
    "perimeter": "perimeter_px",
    "axis_major_length": "major_axis_length_px",
    "axis_minor_length": "minor_axis_length_px",
    "eccentricity": "eccentricity",
    "orientation": "orientation",
    "equivalent_diameter_area": "equivalent_diameter_px",
}


def _place_geometry(px: Dict[str, np.ndarray], i: np.ndarray, g: Dict[str, np.ndarray], st, ox, oy) -> None:
    """Stack geometry (:func:`.shape.stack_geometry`, local) -> image columns of nuclei ``i``."""
    px["centroid_x"][i] = g["centroid_col"] + st.x0 + ox
    px["centroid_y"][i] = g["centroid_row"] + st.y0 + oy
    nonempty = g["area"] > 0
    for col, name, off in (("x", "col", st.x0 + ox), ("y", "row", st.y0 + oy)):
        for end in ("0", "1"):
            px[f"bbox_{col}{end}"][i] = np.where(nonempty, g[f"bbox_{name}{end}"] + off, -1)


def nucleus_geometry(boxes: BoxMasks, origin: Tuple[float, float] = (0, 0)) -> Dict[str, np.ndarray]:
    """
    ``area_px``, ``centroid_x``, ``centroid_y`` and ``bbox_x0/y0/x1/y1`` (half-open) of every
    nucleus of ``boxes``, in pixels of their image plus ``origin`` (the columns of
    :func:`measure_nuclei`, computed the same way, without the other measurements).
    """
    n = len(boxes)
    px = {"area_px": np.zeros(n, np.int64), "centroid_x": np.full(n, np.nan), "centroid_y": np.full(n, np.nan),
          **{f"bbox_{s}": np.full(n, -1, np.int64) for s in ("x0", "y0", "x1", "y1")}}
    for st in iter_stacks(boxes):
        g = stack_geometry(st.stack)
        px["area_px"][st.index] = g["area"]
        _place_geometry(px, st.index, g, st, *origin)
    return px


def measure_nuclei(
    boxes: BoxMasks,
    image: Optional[np.ndarray] = None,
    mpp: Optional[float] = None,
    rgb_from_stain: Optional[np.ndarray] = None,
    origin: Tuple[float, float] = (0, 0),
    budget: Optional[int] = None,
) -> Dict[str, np.ndarray]:
    """
    Measure every nucleus of ``boxes``.

    Args:
        boxes: the nuclei's box-local masks, offsets in pixels of ``image``.
        image: (H, W, 3) RGB image (uint8, or float in [0, 1]); None: no colour columns.
        mpp: micrometres per pixel; None or 0: the ``_um`` / ``_um2`` columns are NaN.
        rgb_from_stain: 3 x 3 stain matrix (rows: haematoxylin, eosin, residual OD vectors);
            default Ruifrok-Johnston (:data:`.stain.RUIFROK_JOHNSTON`).
        origin: (x, y) added to the centroid and box columns (e.g. a tile's position in a slide).
        budget: padded pixels per stack (memory bound; default :mod:`.masks`'s).

    Returns:
        dict of (N,) arrays: :data:`SHAPE_COLUMNS` and, with an image, :data:`COLOUR_COLUMNS`, in
        the order of ``boxes``. Empty masks: area 0, box -1, NaN elsewhere.
    """
    n = len(boxes)
    px = {
        "area_px": np.zeros(n, np.int64),
        "centroid_x": np.full(n, np.nan),
        "centroid_y": np.full(n, np.nan),
        **{f"bbox_{s}": np.full(n, -1, np.int64) for s in ("x0", "y0", "x1", "y1")},
        **{name: np.full(n, np.nan) for name in _SHAPE_NAMES.values()},
        "area_convex": np.zeros(n, np.int64),
    }
    colour = None
    if image is not None:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be H x W x 3 RGB, got shape {image.shape}")
        conversion = stain_conversion(rgb_from_stain)
        colour = {name: np.full(n, np.nan) for name in COLOUR_COLUMNS}
    ox, oy = origin
    for st in iter_stacks(boxes, budget):
        i = st.index
        shape = stack_shape(st.stack)
        # stack coordinates -> image pixels: stack row 1 is local row 0 at y0
        px["area_px"][i] = shape["area"]
        _place_geometry(px, i, shape, st, ox, oy)
        nonempty = shape["area"] > 0
        for src, dst in _SHAPE_NAMES.items():
            px[dst][i] = np.where(nonempty, shape[src], np.nan)
        px["area_convex"][i] = convex_area(st.stack)
        if colour is not None:
            for name, values in stack_intensity(st.stack, st.x0, st.y0, image, conversion).items():
                colour[name][i] = values
    area = px["area_px"].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        perimeter = px["perimeter_px"]
        safe_perimeter = np.where(perimeter > 0, perimeter, 1)
        px["circularity"] = np.where(perimeter > 0, 4 * np.pi * area / safe_perimeter**2, np.nan)
        px["solidity"] = np.where(area > 0, area / px.pop("area_convex"), np.nan)
    scale = float(mpp) if mpp else np.nan
    px["centroid_x_um"] = px["centroid_x"] * scale
    px["centroid_y_um"] = px["centroid_y"] * scale
    px["area_um2"] = area * scale**2
    for name in LENGTH_COLUMNS:
        px[f"{name}_um"] = px[f"{name}_px"] * scale
    out = {name: px[name] for name in SHAPE_COLUMNS}
    if colour is not None:
        out.update(colour)
    return out
