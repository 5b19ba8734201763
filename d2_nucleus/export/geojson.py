# -*- coding: utf-8 -*-
"""
Detections as GeoJSON that QuPath imports (File > Import objects, or drag and drop):
a FeatureCollection with one Feature per detection, in pixel coordinates of the image.

Geometry convention (what :func:`mask_to_geometry` writes, and what a reader must assume to get
the same pixels back):

* x right, y down; pixel (x, y) is the unit square [x, x + 1] x [y, y + 1] (QuPath's convention:
  pixel corners at integers). Coordinates are integers: polygon vertices are pixel corners.
* Polygons follow pixel EDGES: a pixel belongs to a detection exactly when its centre
  (x + 0.5, y + 0.5) is inside the geometry (even-odd over all rings; no centre is ever on an
  edge). So the polygon's area equals the mask's pixel count, and rasterising it by pixel centres
  gives the mask back, pixel for pixel.
* One ``Polygon`` (exterior ring + one ring per hole) for a mask whose pixels are 4-connected;
  a ``MultiPolygon`` with one such polygon per 4-connected part otherwise (parts touching only at
  a corner are separate polygons that share that corner point). Nothing is dropped.
* Rings are closed (last point = first) and follow RFC 7946's right-hand rule as computed on the
  coordinates (the shoelace sum is positive for exterior rings, negative for holes); vertices are
  only the corners (no collinear points).
* Every geometry is valid in the OGC sense (shapely ``is_valid``): rings are simple; a hole may
  touch its exterior or another hole at a single corner, where the mask's pixels meet diagonally.
"""
import json
import uuid
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..utils.rle import to_box_mask
from ..utils.file_io import atomic_write

__all__ = [
    "mask_to_geometry",
    "geometry_to_mask",
    "detection_feature",
    "rles_to_geojson",
    "write_geojson",
    "write_geojson_features",
]

# QuPath's default colour of the "Nucleus" class (packed RGB, as QuPath writes it).
_NUCLEUS_COLOR = [160, 90, 160]


def _ring(contour: np.ndarray, exterior: bool, bias: np.ndarray) -> List[List[int]]:
    """
    A contour of the 2x-upsampled mask (cv2 pixel indices) as the ring of the original mask's
    pixel corners, oriented by the right-hand rule (open: first point not repeated). Index i of
    the upsampled mask is the left/top half (even i) or right/bottom half (odd i) of original pixel
    i // 2, so the traced pixel's outer side is corner (i + 1) // 2; ``bias`` = 1 + 2 * (x0, y0)
    adds the crop's offset in the same shift. Repeated points, and points between two steps along
    one axis, are dropped: only corners remain.
    """
    # the sign of the shoelace sum: cv2 traces exteriors and holes in opposite senses
    if (cv2.contourArea(contour, oriented=True) > 0) != exterior:
        contour = contour[::-1]
    points = ((contour.reshape(-1, 2) + bias) >> 1).tolist()
    # pure Python: ~2x faster than NumPy on rings of ~60 points (bench/bench_geojson.py)
    ring = [p for p, q in zip(points, points[-1:] + points[:-1]) if p != q]
    xs = [p[0] for p in ring]
    # a corner: the steps into and out of it are along different axes (every step is axis-parallel)
    return [p for p, a, b, c in zip(ring, xs[-1:] + xs[:-1], xs, xs[1:] + xs[:1]) if (a == b) != (b == c)]


def _polygons(mask: np.ndarray, bias: np.ndarray) -> List[List[List[List[int]]]]:
    """[[exterior, hole, ...], ...] of the 8-connected parts of a uint8 {0, 1} mask."""
    up = cv2.resize(mask, (mask.shape[1] * 2, mask.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    # cv2 traces the centres of the boundary pixels of 8-connected parts (holes 4-connected): on the
    # 2x mask those run half an original pixel inside its edges, and no corner is skipped
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    parents = hierarchy[0][:, 3].tolist()
    index, polygons = {}, []
    for i, (contour, parent) in enumerate(zip(contours, parents)):
        if parent < 0:
            index[i] = len(polygons)
            polygons.append([_ring(contour, True, bias)])
    for contour, parent in zip(contours, parents):
        if parent >= 0:
            polygons[index[parent]].append(_ring(contour, False, bias))
    return polygons


def _closed(ring: List[List[int]], scale: float) -> List[List[float]]:
    if scale != 1:
        ring = [[round(x * scale, 2), round(y * scale, 2)] for x, y in ring]
    return ring + ring[:1]


def mask_to_geometry(mask: np.ndarray, x0: int = 0, y0: int = 0, scale: float = 1.0) -> Dict:
    """
    The GeoJSON geometry of a binary mask's pixels, traced along pixel edges (module docstring):
    ``{"type": "Polygon", "coordinates": [exterior, *holes]}``, or a ``"MultiPolygon"`` of one such
    polygon per 4-connected part. Coordinates are pixel corners offset by (x0, y0) (a crop's
    position in its image), then multiplied by ``scale`` (e.g. a pyramid level's downsample, to
    level-0 pixels; rounded to 1/100 pixel when not 1).

    Its area is the mask's pixel count (times scale^2) and it is valid by construction
    (tests/test_geojson.py checks both, and the pixels, with shapely on random masks and on model
    predictions). ~2-3x the time of a plain ``cv2.findContours`` (bench/bench_geojson.py).

    Raises:
        ValueError: the mask is empty.
    """
    m = np.ascontiguousarray(np.asarray(mask) != 0).view(np.uint8)
    if m.ndim != 2 or not m.any():
        raise ValueError("empty mask has no polygon")
    bias = np.array([1 + 2 * int(x0), 1 + 2 * int(y0)], np.int32)
    polygons = _polygons(m, bias)
    # Pixels meeting only at a corner are one 8-connected part to cv2, whose rings then pass that
    # corner twice (a ring touching itself, or an exterior and hole touching at two corners: not
    # valid). Then each 4-connected part is traced alone: parts touching at a corner become
    # separate polygons sharing it, and a part's hole may touch its exterior at one corner (valid).
    if any(sum(map(len, rings)) != len({(x, y) for ring in rings for x, y in ring}) for rings in polygons):
        n, labels = cv2.connectedComponents(m, connectivity=4)
        polygons = [p for k in range(1, n) for p in _polygons((labels == k).view(np.uint8), bias)]
    polygons = [[_closed(ring, scale) for ring in rings] for rings in polygons]
    if len(polygons) == 1:
        return {"type": "Polygon", "coordinates": polygons[0]}
    return {"type": "MultiPolygon", "coordinates": polygons}


def geometry_to_mask(geometry: Dict) -> Optional[Tuple[np.ndarray, int, int]]:
    """
    The inverse of :func:`mask_to_geometry`: the pixels whose centres lie inside a GeoJSON
    Polygon / MultiPolygon (even-odd over all rings; any coordinates, e.g. polygons drawn in
    QuPath), as ``(mask, x0, y0)``: a uint8 {0, 1} mask of the pixels' bounding box whose top-left
    pixel is (x0, y0), as :func:`d2_nucleus.utils.rle.to_box_mask`. None when no pixel centre is
    inside. ``mask_to_geometry(mask, x0, y0)`` of any mask gives that mask back exactly.
    """
    kind = geometry.get("type")
    if kind not in ("Polygon", "MultiPolygon"):
        raise ValueError(f"not a Polygon or MultiPolygon geometry: {kind!r}")
    polygons = geometry["coordinates"] if kind == "MultiPolygon" else [geometry["coordinates"]]
    rings = [np.asarray(r, np.float64).reshape(-1, 2) for rings in polygons for r in rings if len(r)]
    if not rings:
        return None
    xy = np.concatenate(rings)
    x0, y0 = int(np.floor(xy[:, 0].min())), int(np.floor(xy[:, 1].min()))
    width = int(np.ceil(xy[:, 0].max())) - x0
    height = int(np.ceil(xy[:, 1].max())) - y0
    if width <= 0 or height <= 0:
        return None
    # Scan lines through the pixel centres: each edge crossing row r's centre toggles the pixels
    # whose centres lie right of the crossing (a half-open row range per edge counts each vertex once).
    a = np.concatenate(rings) - [x0, y0]
    b = np.concatenate([np.roll(r, -1, axis=0) for r in rings]) - [x0, y0]
    lo, hi = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    first = np.ceil(lo - 0.5).astype(np.int64)  # rows whose centre r + 0.5 is in [lo, hi)
    last = np.ceil(hi - 0.5).astype(np.int64)
    count = np.clip(last - first, 0, None)
    edge = np.repeat(np.arange(len(a)), count)
    rows = np.repeat(first, count) + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    yc = rows + 0.5
    t = (yc - a[edge, 1]) / (b[edge, 1] - a[edge, 1])
    xc = a[edge, 0] + t * (b[edge, 0] - a[edge, 0])
    cols = np.clip(np.ceil(xc - 0.5).astype(np.int64), 0, width)
    toggles = np.zeros((height, width + 1), np.int32)
    np.add.at(toggles, (rows, cols), 1)
    mask = (np.cumsum(toggles, axis=1)[:, :width] & 1).astype(np.uint8)
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    top, left = int(ys.min()), int(xs.min())
    return mask[top:int(ys.max()) + 1, left:int(xs.max()) + 1], x0 + left, y0 + top


def detection_feature(
    geometry: Dict,
    feature_id: str,
    score: Optional[float] = None,
    class_name: str = "Nucleus",
    measurements: Optional[Dict[str, float]] = None,
    color: Optional[Sequence[int]] = None,
) -> Dict:
    """
    One QuPath detection: a Feature with ``geometry`` (:func:`mask_to_geometry`: a Polygon or
    MultiPolygon in pixel coordinates),
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
        "geometry": geometry,
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
    A GeoJSON FeatureCollection with one QuPath detection per non-empty mask: the mask's pixels as
    a Polygon (MultiPolygon for a mask in several parts; :func:`mask_to_geometry`), ``properties`` = {"objectType": "detection",
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
        features.append(detection_feature(mask_to_geometry(*crop), feature_id, score, cls["name"], extra, cls["color"]))
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
