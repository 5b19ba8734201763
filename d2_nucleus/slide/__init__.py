# -*- coding: utf-8 -*-
"""Whole-slide and large-image segmentation (tools/segment_slides.py)."""
from .config import add_slide_config, model_mpp
from .readers import SlideError, SlideSource, choose_level, open_slide
from .tiling import SlideGeometry, Tile, TileGrid, batch_tiles, read_tile, slide_geometry
from .tissue import detect_tissue, load_tissue_mask, slide_thumbnail
from .stitching import SeamStitcher, crop_iou, tile_records
from .work import WorkFolder
from .pipeline import SlideOutputs, list_slides, segment_slide, segment_slides
