# -*- coding: utf-8 -*-
"""
QuPath GeoJSON (File > Export objects as GeoJSON, QuPath 0.2-0.6) and this project's own
(``tools/predict.py --geojson-dir``, ``tools/segment_slides.py``): a FeatureCollection, a single
Feature, or a bare list of Features (QuPath's export without "FeatureCollection")::

    {"type": "Feature", "id": "...", "geometry": {"type": "Polygon", "coordinates": [[[x, y], ...]]},
     "properties": {"objectType": "annotation" | "detection" | "cell",
                    "classification": {"name": "Tumor", "color": [r, g, b]}, "isLocked": false}}

One nucleus a Feature: Polygon or MultiPolygon (holes kept), in level-0 pixels of the image
``<stem>.*`` (or exactly ``<stem>``: ``X.svs.geojson`` -> ``X.svs``) beside the file or under
``--images``. QuPath cells (``objectType`` "cell") give their ``nucleusGeometry`` when they have
one. Points, lines and empty geometries are skipped and counted; so are tiles and the root
object. The class name is ``classification.name`` (QuPath 0.5+ derived classes,
``classification.names``, are joined with ": "); None when unclassified. GeoJSON carries no
resolution: the image's metadata or ``--mpp`` gives it.
"""
import os
from typing import List, Optional, Sequence

import numpy as np

from ..raw import RawDataError
from .source import IMAGE_EXTENSIONS, ImageFinder, Nucleus, SourceImage, expand_inputs, read_json

__all__ = ["SUFFIXES", "class_name", "geojson_features", "scan", "parse"]

SUFFIXES = (".geojson", ".json")
_AREAS = ("Polygon", "MultiPolygon")
_SKIPPED_OBJECTS = ("tile", "rootobject", "root")


def class_name(properties) -> Optional[str]:
    """A feature's QuPath class name from its ``properties`` (None: unclassified)."""
    cls = properties.get("classification") if isinstance(properties, dict) else None
    if isinstance(cls, str):
        return cls or None
    if not isinstance(cls, dict):
        return None
    if isinstance(cls.get("names"), list) and cls["names"]:
        return ": ".join(str(n) for n in cls["names"])
    name = cls.get("name")
    return str(name) if name not in (None, "") else None


def _ring(coords, path: str, where: str) -> np.ndarray:
    try:
        xy = np.asarray(coords, dtype=np.float64)
    except (TypeError, ValueError):
        raise RawDataError(path, f"{where}: coordinates are not lists of [x, y] numbers") from None
    if xy.ndim != 2 or xy.shape[1] < 2 or not np.isfinite(xy[:, :2]).all():
        raise RawDataError(path, f"{where}: coordinates are not lists of finite [x, y] numbers")
    return xy[:, :2]


def _polygon(rings, path: str, where: str):
    from shapely.geometry import Polygon

    if not isinstance(rings, list) or not rings:
        raise RawDataError(path, f"{where}: a Polygon needs a list of rings")
    shell, *holes = [_ring(r, path, where) for r in rings]
    if len(shell) < 3:
        return None
    return Polygon(shell, [h for h in holes if len(h) >= 3])


def _geometry(geometry, path: str, where: str):
    """A shapely Polygon / MultiPolygon, or (None, geometry type) for what is not an area."""
    from shapely.geometry import MultiPolygon

    if not isinstance(geometry, dict) or "type" not in geometry:
        raise RawDataError(path, f"{where}: geometry is not a GeoJSON geometry object")
    gtype = geometry["type"]
    if gtype == "GeometryCollection":
        parts = [_geometry(g, path, where)[0] for g in geometry.get("geometries") or []]
        polys = [q for p in parts if p is not None for q in (p.geoms if isinstance(p, MultiPolygon) else [p])]
        return (MultiPolygon(polys) if polys else None), gtype
    if gtype not in _AREAS:
        return None, gtype
    coords = geometry.get("coordinates")
    if gtype == "Polygon":
        return _polygon(coords, path, where), gtype
    if not isinstance(coords, list):
        raise RawDataError(path, f"{where}: a MultiPolygon needs a list of polygons")
    polys = [p for p in (_polygon(c, path, where) for c in coords) if p is not None]
    return (MultiPolygon(polys) if polys else None), gtype


def geojson_features(data, path: str) -> List[dict]:
    """The Features of a loaded GeoJSON file (a FeatureCollection, a Feature, a geometry or a list), or RawDataError."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        if data.get("type") == "FeatureCollection":
            if not isinstance(data.get("features"), list):
                raise RawDataError(path, "FeatureCollection without a list of features")
            return data["features"]
        if data.get("type") == "Feature" or data.get("type") in _AREAS:
            return [data]
    raise RawDataError(path, "not GeoJSON objects (expected a FeatureCollection, a Feature or a list of Features)")


def parse(path: str):
    """
    Returns:
        (nuclei, skipped (reason, message) pairs)

    Raises:
        RawDataError: unreadable, empty or malformed file (one line naming it).
    """
    features = geojson_features(read_json(path), path)
    nuclei, skipped = [], []
    for i, feature in enumerate(features):
        if not isinstance(feature, dict):
            raise RawDataError(path, f"feature {i} is not an object")
        where = f"feature {i}" + (f" (id {feature['id']})" if feature.get("id") not in (None, "") else "")
        if feature.get("type") in _AREAS:  # a bare geometry
            feature = {"type": "Feature", "geometry": feature, "properties": {}}
        properties = feature.get("properties") or {}
        if not isinstance(properties, dict):
            raise RawDataError(path, f"{where}: properties is not an object")
        object_type = str(properties.get("objectType") or properties.get("object_type") or "").lower()
        if object_type in _SKIPPED_OBJECTS:
            skipped.append((f"{object_type} object", f"{path}: {where} is a QuPath {object_type}, skipped"))
            continue
        geometry = feature.get("geometry")
        if object_type == "cell" and feature.get("nucleusGeometry"):
            geometry = feature["nucleusGeometry"]
        if geometry is None:
            skipped.append(("no geometry", f"{path}: {where} has no geometry, skipped"))
            continue
        geom, gtype = _geometry(geometry, path, where)
        if geom is None:
            reason = "degenerate outline" if gtype in _AREAS + ("GeometryCollection",) else f"{gtype} (not an area)"
            skipped.append((reason, f"{path}: {where} is a {gtype} without area, skipped"))
            continue
        nuclei.append(Nucleus(where, geometry=geom, class_name=class_name(properties)))
    if not nuclei and not skipped:
        raise RawDataError(path, "holds no features")
    return nuclei, skipped


def scan(inputs: Sequence[str], images: Optional[str] = None) -> List[SourceImage]:
    """One :class:`SourceImage` per GeoJSON file of ``inputs`` (files or folders of ``*.geojson``, ``*.json``)."""
    files = expand_inputs(inputs, SUFFIXES, "GeoJSON files")
    finder = ImageFinder(images, exclude=files)
    sources = []
    for path in files:
        nuclei, skipped = parse(path)
        stem = os.path.splitext(os.path.basename(path))[0]
        image = finder.find(stem, path)
        image_id = os.path.splitext(stem)[0] if stem.lower().endswith(IMAGE_EXTENSIONS) else stem
        sources.append(SourceImage(image_id, image, path, (lambda n=nuclei: (n, None)), skipped=skipped))
    return sources

