# -*- coding: utf-8 -*-
"""
Per-nucleus measurements (size, shape, stain) from box-local masks, as scikit-image's regionprops
defines them, vectorised over many nuclei; per-image summaries and a figure of the distributions.
"""
from .masks import BoxMasks
from .nuclei import COLOUR_COLUMNS, SHAPE_COLUMNS, measure_nuclei, nucleus_geometry
from .stain import RUIFROK_JOHNSTON, STAIN_METHODS, image_stain_matrix, macenko_stain_matrix, separate_stains

__all__ = [
    "BoxMasks",
    "measure_nuclei",
    "nucleus_geometry",
    "SHAPE_COLUMNS",
    "COLOUR_COLUMNS",
    "RUIFROK_JOHNSTON",
    "STAIN_METHODS",
    "image_stain_matrix",
    "macenko_stain_matrix",
    "separate_stains",
]
