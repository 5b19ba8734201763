# -*- coding: utf-8 -*-
"""
Writers for predictions: answer.json/zip, QuPath GeoJSON, label maps, overlays, and the
per-image outputs of a prediction run (answer.json's COCO results are made by
:mod:`d2_nucleus.evaluation.coco_results`, the evaluator's converter).
"""
from ..utils.lazy import lazy_attributes
from .geojson import geometry_to_mask, mask_to_geometry, rles_to_geojson, write_geojson
from .image_outputs import image_output_paths, write_image_outputs
from .label_maps import label_map_path, write_label_map
from .overlay import draw_overlay, write_overlay

_LAZY = {".answer": ("ANSWER_NAME", "write_answer")}
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
