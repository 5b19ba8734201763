# -*- coding: utf-8 -*-
"""
The per-image outputs of a prediction run: overlay (``<stem>.png``), QuPath GeoJSON
(``<stem>.geojson``), label map (``<stem>.png`` / ``<stem>.tif``) and, on request, per-nucleus
measurements (:mod:`d2_nucleus.measurements`), each written atomically, of
the detections scoring at least a threshold and having a non-empty mask.
"""
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..utils import rle as rle_util
from ..utils.file_io import check_writable
from ..utils.label_map import rles_to_label_map
from .geojson import rles_to_geojson, write_geojson
from .label_maps import label_map_path, write_label_map
from .overlay import draw_overlay, write_overlay

__all__ = ["LABEL_FORMATS", "export_selection", "image_output_files", "image_output_paths", "write_image_outputs"]

LABEL_FORMATS = ("png", "tiff")


def image_output_paths(stems: Dict[int, str], vis_dir: Optional[str] = None, geojson_dir: Optional[str] = None,
                       labels_dir: Optional[str] = None, label_format: str = "png",
                       overwrite: bool = False, check: bool = True) -> Dict[int, Dict[str, Optional[str]]]:
    """
    The overlay, GeoJSON and label-map path of each image, checked at once (unless not
    ``check``: the caller checks :func:`image_output_files`): every folder creatable and
    writable, no file there unless ``overwrite``, no output name shared by two images.

    Args:
        stems: image id -> file name without extension.
        vis_dir, geojson_dir, labels_dir: the output folders (None: no such output).

    Returns:
        per image id: {"vis", "geojson", "labels"} paths (labels without extension) or None.
    """
    if label_format not in LABEL_FORMATS:
        raise ValueError(f"label format must be 'png' or 'tiff', got {label_format!r}")
    names = list(stems.values())
    if len(set(names)) != len(names):
        dup = sorted({s for s in names if names.count(s) > 1})
        raise ValueError(f"input images share file names {dup}; per-image outputs would collide")
    paths = {}
    for image_id, stem in stems.items():
        paths[image_id] = {
            "vis": os.path.join(vis_dir, stem + ".png") if vis_dir else None,
            "geojson": os.path.join(geojson_dir, stem + ".geojson") if geojson_dir else None,
            "labels": os.path.join(labels_dir, stem) if labels_dir else None,
        }
    if check:
        for path in image_output_files(paths):
            check_writable(path, overwrite=overwrite)
    return paths


def image_output_files(paths: Dict[int, Dict[str, Optional[str]]]) -> List[str]:
    """Every file the outputs of :func:`image_output_paths` may be written to (a label map: .png or .tif)."""
    files = []
    for per_image in paths.values():
        for key, path in per_image.items():
            if path is not None:
                files += [path + ".png", path + ".tif"] if key == "labels" else [path]
    return files


def export_selection(rles: Sequence[Dict], scores: Sequence[float], height: int, width: int,
                     score_thresh: float = 0.5, min_visible: float = 0.0) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """
    The detections that are exported (and evaluated by AJI / PQ): scoring >= ``score_thresh``,
    with a non-empty mask and, with ``min_visible`` > 0, at least that fraction of it left free by
    the higher-scoring ones.

    Returns:
        their indices (ascending), and with ``min_visible`` > 0 their label map (1..K in the
        order of the indices; else None).
    """
    keep = [i for i, s in enumerate(scores) if s >= score_thresh]
    # Drop empty masks: they have no outline and no label.
    keep = np.array([i for i in keep if rle_util.rle_counts(rles[i])[1::2].sum() > 0], np.int64)
    if min_visible <= 0 or not len(keep):
        return keep, None
    kept_scores = [float(scores[i]) for i in keep]
    painted = rles_to_label_map([rles[i] for i in keep], height, width, scores=kept_scores, min_visible=min_visible)
    labels = np.unique(painted)
    survivors = labels[labels > 0] - 1  # ascending: the detections' order
    # The survivors' map, renumbered 1..len(survivors). The dropped detections were never
    # painted, so painting the survivors again would give the same pixels.
    relabel = np.zeros(len(keep) + 1, np.int32)
    relabel[survivors + 1] = np.arange(1, len(survivors) + 1)
    return keep[survivors], relabel[painted]


def write_image_outputs(
    image_rgb: np.ndarray,
    rles: Sequence[Dict],
    scores: Sequence[float],
    paths: Dict[str, Optional[str]],
    score_thresh: float = 0.5,
    label_format: str = "png",
    overwrite: bool = False,
    measurements=None,
    stem: Optional[str] = None,
    image_name: Optional[str] = None,
    min_visible: float = 0.0,
    types=None,
    model_features: Optional[Dict[str, np.ndarray]] = None,
) -> List[str]:
    """
    Write the outputs of one image (those of ``paths`` that are not None) for the detections
    scoring >= ``score_thresh`` with a non-empty mask (and, with ``min_visible`` > 0, at least that
    fraction of it left free by the higher-scoring ones: ``TEST.LABEL_MAP_MIN_VISIBLE``, as in
    evaluation).

    Args:
        image_rgb: the image (H x W x 3, RGB) the overlay is drawn on.
        rles, scores: the image's detections (COCO RLEs of the image's size).
        measurements: a :class:`d2_nucleus.measurements.outputs.MeasurementWriter`: writes the
            measurement table, summary and figure of the same detections as ``<stem>``, and
            puts their values into the GeoJSON's measurements; ``image_name`` goes into the table.
        types: a nucleus type classifier (:class:`d2_nucleus.types.outputs.TypePredictor`: its
            ``classify(image_rgb, rles, model_features)`` gives the exported nuclei's
            :class:`~d2_nucleus.export.classes.NucleusClasses` and the measurement columns it
            computed), applied to the exported detections with their rows of
            ``model_features`` (``{"box": ..., "context": ...}``, rows in the order of ``rles``):
            the table's ``type`` and ``prob_<type>`` columns and the summary's per-type counts,
            QuPath's classification (the type's name and colour) and ``Probability <type>``
            measurements in the GeoJSON, type-coloured outlines with a legend in the overlay.

    Returns:
        the files written.
    """
    if not any(paths.values()) and measurements is None:
        return []
    height, width = image_rgb.shape[:2]
    keep, label_map = export_selection(rles, scores, height, width, score_thresh, min_visible)
    rles = [rles[i] for i in keep]
    scores = [float(scores[i]) for i in keep]
    if label_map is None and (paths["vis"] or paths["labels"]):
        label_map = rles_to_label_map(rles, height, width, scores=scores)
    classes = measured_columns = None
    if types is not None:
        features = {k: np.asarray(v)[keep] for k, v in (model_features or {}).items()}
        classes, measured_columns = types.classify(image_rgb, rles, features)
    written, qupath = [], None
    if measurements is not None:
        # the classifier's measurements are the table's when made with the same resolution and stain
        reuse = measured_columns is not None and (measurements.stain, measurements.mpp or None) == (types.stain, types.mpp)
        measured = measurements.write(stem, image_rgb, rles, scores, image_name, overwrite,
                                      columns=measured_columns if reuse else None, classes=classes)
        written += measured["written"]
        qupath = measured["qupath"]
    if classes is not None:
        probs = classes.qupath_measurements()
        qupath = [dict(q, **p) for q, p in zip(qupath, probs)] if qupath is not None else probs
    if paths["vis"]:
        colors, legend = (classes.label_colors(), classes.legend()) if classes is not None else (None, None)
        overlay = draw_overlay(image_rgb, label_map, count=len(rles), label_colors=colors, legend=legend)
        write_overlay(overlay, paths["vis"], overwrite=overwrite)
        written.append(paths["vis"])
    if paths["geojson"]:
        collection = rles_to_geojson(rles, scores, measurements=qupath,
                                     classifications=classes.classifications() if classes is not None else None)
        write_geojson(collection, paths["geojson"], overwrite=overwrite)
        written.append(paths["geojson"])
    if paths["labels"]:
        path = label_map_path(paths["labels"], len(rles), label_format)
        write_label_map(label_map, path, overwrite=overwrite)
        written.append(path)
    return written
