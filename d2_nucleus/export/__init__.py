# -*- coding: utf-8 -*-
"""Writers for predictions: answer.json/zip, QuPath GeoJSON, label maps and overlays."""
from .answer import ANSWER_NAME, instances_to_coco_json, write_answer
from ..utils.file_io import OutputExistsError, atomic_write, check_writable
from .geojson import mask_to_polygon, rle_to_box_mask, rles_to_geojson, write_geojson
from .label_maps import label_map_path, write_label_map
from .overlay import draw_overlay, write_overlay
