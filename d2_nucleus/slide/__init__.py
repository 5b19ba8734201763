# -*- coding: utf-8 -*-
"""
Whole-slide and large-image segmentation (tools/segment_slides.py, tools/segment_cluster.py).
Names are imported on first use (PEP 562): the tools' flags (:mod:`.options`) load no model code.
"""
from ..utils.lazy import lazy_attributes

_LAZY = {
    ".tiling": ("SlideGeometry", "Tile", "TileGrid", "batch_tiles", "read_tile", "slide_geometry"),
    ".tissue": ("detect_tissue", "load_tissue_mask", "slide_thumbnail"),
    ".stitching": ("NucleusRecord", "SeamStitcher", "crop_iou", "tile_records"),
    ".work": ("WorkFolder",),
    ".inputs": ("SLIDE_EXTENSIONS", "file_sha256", "list_slides", "slide_stem"),
    ".outputs": ("SlideOutputs", "check_slide_outputs"),
    ".pipeline": ("segment_slide",),
    ".runner": ("SLIDE_ERRORS", "run_one_slide", "segment_slides"),
}
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
