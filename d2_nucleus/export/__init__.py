# -*- coding: utf-8 -*-
"""
Writers for predictions: answer.json/zip, QuPath GeoJSON, label maps, overlays, and the
per-image outputs of a prediction run. Names are imported on first use (PEP 562): the GeoJSON,
label-map and overlay writers need neither torch nor Detectron2.
"""
from ..utils.lazy import lazy_attributes

_LAZY = {
    "ANSWER_NAME": ".answer",
    "instances_to_coco_json": ".answer",
    "write_answer": ".answer",
    "OutputExistsError": "..utils.file_io",
    "atomic_write": "..utils.file_io",
    "check_writable": "..utils.file_io",
    "mask_to_polygon": ".geojson",
    "rle_to_box_mask": ".geojson",
    "rles_to_geojson": ".geojson",
    "write_geojson": ".geojson",
    "label_map_path": ".label_maps",
    "write_label_map": ".label_maps",
    "draw_overlay": ".overlay",
    "write_overlay": ".overlay",
    "image_output_paths": ".image_outputs",
    "write_image_outputs": ".image_outputs",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
