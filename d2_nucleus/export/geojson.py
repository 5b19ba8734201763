# -*- coding: utf-8 -*-
"""
Detections as GeoJSON that QuPath imports (File > Import objects, or drag and drop):
a FeatureCollection with one Polygon Feature per detection, in pixel coordinates of the image
(x right, y down, pixel (x, y) covering [x, x + 1) x [y, y + 1)).
"""
import json
import uuid
from typing import Dict, Iterable, List, Optional, Sequence

import cv2
import numpy as np

from ..utils.rle import to_box_mask
from ..utils.file_io import atomic_write

__all__ = [
    "mask_to_polygon",
    "detection_feature",
    "rles_to_geojson",
    "write_geojson",
    "write_geojson_features",
]

# QuPath's default colour of the "Nucleus" class (packed RGB, as QuPath writes it).
_NUCLEUS_COLOR = [160, 90, 160]


def mask_to_polygon(mask: np.ndarray, x0: int = 0, y0: int = 0) -> List[List[float]]:
    """
    Outer boundary of the largest connected part of a binary mask as a closed ring
    ``[[x, y], ..., [x_first, y_first]]`` through the centres of its boundary pixels
    (``x + 0.5``, ``y + 0.5``), offset by (x0, y0). Parts of one or two pixels' width, whose
    boundary encloses no area, get the outline of their pixels' bounding square instead.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        raise ValueError("empty mask has no polygon")
    contour = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))[:, 0, :]
    if len(contour) >= 3 and cv2.contourArea(contour) > 0:
        ring = (contour + [x0 + 0.5, y0 + 0.5]).tolist()
    else:  # a single pixel or a one-pixel line: outline the pixels themselves
        xa, ya = contour.min(axis=0) + [x0, y0]
        xb, yb = contour.max(axis=0) + [x0 + 1, y0 + 1]
        ring = [[xa, ya], [xb, ya], [xb, yb], [xa, yb]]
    ring = [[float(x), float(y)] for x, y in ring]
    return ring + [ring[0]]


def detection_feature(
    ring: Sequence[Sequence[float]],
    feature_id: str,
    score: Optional[float] = None,
    class_name: str = "Nucleus",
    measurements: Optional[Dict[str, float]] = None,
    color: Optional[Sequence[int]] = None,
) -> Dict:
    """
    One QuPath detection: a Polygon Feature with the closed ``ring`` (pixel coordinates),
    ``properties`` = {"objectType": "detection", "classification": {"name": class_name, "color":
    color (RGB; default QuPath's Nucleus colour)}, "measurements": {"Detection score": score,
    **measurements}}.
    """
    properties = {
        "objectType": "detection",
        "classification": {"name": class_name, "color": [int(v) for v in color] if color is not None else _NUCLEUS_COLOR},
        "isLocked": False,
    }
    values = {} if score is None else {"Detection score": float(score)}
    values.update(measurements or {})
    if values:
        properties["measurements"] = values
    return {
        "type": "Feature",
        "id": feature_id,
        "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]},
        "properties": properties,
    }


def rles_to_geojson(
    rles: Sequence[Dict],
    scores: Optional[Sequence[float]] = None,
    class_name: str = "Nucleus",
    measurements: Optional[Sequence[Dict[str, float]]] = None,
    classifications: Optional[Sequence[Dict]] = None,
) -> Dict:
    """
    A GeoJSON FeatureCollection with one QuPath detection per non-empty mask: Polygon geometry
    (closed ring, pixel coordinates), ``properties`` = {"objectType": "detection",
    "classification": {"name": class_name, ...}, "measurements": {"Detection score": s}}.
    Empty masks are skipped. ``measurements[i]`` (QuPath names -> values, see
    :mod:`d2_nucleus.measurements.qupath`) is added to the i-th detection's measurements;
    ``classifications[i]`` (``{"name", "color"}``, e.g. its nucleus type) replaces its class.
    """
    features = []
    for i, rle in enumerate(rles):
        crop = to_box_mask(rle)
        if crop is None:
            continue
        # deterministic: the same detections give the same file
        feature_id = str(uuid.uuid5(uuid.NAMESPACE_OID, f"d2_nucleus/{i}/{rle['counts']!s}"))
        score = float(scores[i]) if scores is not None else None
        extra = measurements[i] if measurements is not None else None
        cls = classifications[i] if classifications is not None else {"name": class_name, "color": None}
        features.append(detection_feature(mask_to_polygon(*crop), feature_id, score, cls["name"], extra, cls["color"]))
    return {"type": "FeatureCollection", "features": features}


def write_geojson(collection: Dict, path: str, overwrite: bool = False) -> None:
    """Write a FeatureCollection atomically."""
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(json.dumps(collection, separators=(",", ":")).encode("utf-8"))


def write_geojson_features(features: Iterable[Dict], path: str, overwrite: bool = False) -> int:
    """
    Stream Features into a FeatureCollection file, one at a time (memory: one feature), to a
    temporary file renamed into place at the end (all or nothing). Returns the feature count.
    """
    count = 0
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(b'{"type":"FeatureCollection","features":[')
        for feature in features:
            f.write((b"," if count else b"") + json.dumps(feature, separators=(",", ":")).encode("utf-8"))
            count += 1
        f.write(b"]}")
    return count
