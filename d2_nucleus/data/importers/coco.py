# -*- coding: utf-8 -*-
"""
COCO instance JSON (CVAT, Label Studio, Detectron2, pycocotools): ``images`` (``id``,
``file_name``, ``width``, ``height``), ``annotations`` and ``categories``.

* ``segmentation`` as polygons (flat ``[x1, y1, x2, y2, ...]`` lists, the parts of one object
  united; coordinates as in :mod:`..rasterize`), compressed RLE (``counts`` a string) or
  uncompressed RLE (``counts`` a list); an RLE's ``size`` must be its image's.
* ``iscrowd`` 1 annotations are skipped and counted: a crowd region is a group of nuclei nobody
  separated, not one nucleus (Detectron2 would not train on it either).
* Annotations without a segmentation (boxes only) are skipped and counted.
* Every category becomes the one class "nucleus"; the category's name is kept as the nucleus's
  class name, so files with several categories train the one-class detector.
* Images are ``file_name`` under ``--images`` (default: the JSON's folder), which they may not
  leave; their size must be the declared ``width`` x ``height``. COCO has no resolution: the
  image's metadata or ``--mpp`` gives it.
"""
import os
from typing import Dict, List, Optional, Sequence

from ...utils import rle as rle_util
from ..raw import RawDataError
from .source import Nucleus, SourceImage, expand_inputs, read_json

__all__ = ["SUFFIXES", "scan"]

SUFFIXES = (".json",)


def _list(data: dict, key: str, path: str, required: bool = True) -> list:
    value = data.get(key, None if required else [])
    if not isinstance(value, list):
        raise RawDataError(path, f"'{key}' must be a list" if key in data else f"no '{key}' list (not a COCO instance file)")
    return value


def _int(entry: dict, key: str, path: str, where: str, positive: bool = False) -> int:
    v = entry.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or (positive and v <= 0):
        raise RawDataError(path, f"{where}: '{key}' must be a{' positive' if positive else 'n'} integer, got {v!r}")
    return v


def _polygons(seg: list, path: str, where: str):
    import numpy as np
    from shapely.geometry import MultiPolygon, Polygon

    polys = []
    for part in seg:
        try:
            xy = np.asarray(part, dtype=np.float64)
        except (TypeError, ValueError):
            raise RawDataError(path, f"{where}: polygon is not a flat list of numbers") from None
        if xy.ndim != 1 or xy.size % 2 or not np.isfinite(xy).all():
            raise RawDataError(path, f"{where}: polygon must be a flat [x1, y1, x2, y2, ...] list of numbers")
        if xy.size >= 6:
            polys.append(Polygon(xy.reshape(-1, 2)))
    if not polys:
        return None
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def _nucleus(ann: dict, size, names: Dict[int, str], path: str, where: str):
    """A Nucleus, or (reason, message) when the annotation is skipped."""
    cat = ann.get("category_id")
    if cat not in names:
        raise RawDataError(path, f"{where}: category_id {cat!r} is not in 'categories'")
    if ann.get("iscrowd", 0):
        return ("crowd region", f"{path}: {where} is a crowd region (iscrowd 1), skipped")
    seg = ann.get("segmentation")
    if not seg:
        return ("no outline", f"{path}: {where} has no segmentation (box only), skipped")
    if isinstance(seg, list):
        geom = _polygons(seg, path, where)
        if geom is None:
            return ("degenerate outline", f"{path}: {where} has no polygon of 3 or more points, skipped")
        return Nucleus(where, geometry=geom, class_name=names[cat])
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        raise RawDataError(path, f"{where}: segmentation is neither polygons nor an RLE with 'size' and 'counts'")
    if [int(s) for s in seg["size"]] != list(size):
        raise RawDataError(path, f"{where}: RLE size {seg['size']} differs from its image's {list(size)} (height, width)")
    try:
        compressed = rle_util.to_compressed_rle(seg, *size)
        box = rle_util.to_box_mask(compressed)
    except (ValueError, TypeError, OverflowError) as e:
        raise RawDataError(path, f"{where}: malformed RLE ({' '.join(str(e).split())})") from None
    if box is None:
        return ("empty mask", f"{path}: {where} has an empty mask, skipped")
    mask, x0, y0 = box
    return Nucleus(where, crop=(mask.astype(bool), x0, y0), class_name=names[cat])


def _inside(folder: str, file_name: str, path: str, where: str) -> str:
    if not isinstance(file_name, str) or not file_name or os.path.isabs(file_name) or "\0" in file_name:
        raise RawDataError(path, f"{where}: file_name must be a relative path, got {file_name!r}")
    full = os.path.join(folder, file_name)
    root = os.path.realpath(folder)
    if os.path.commonpath([root, os.path.realpath(full)]) != root:
        raise RawDataError(path, f"{where}: file_name {file_name!r} leaves the image folder {folder}")
    if not os.path.isfile(full):
        raise RawDataError(path, f"{where}: image {full} is missing")
    return full


def scan_file(path: str, images: Optional[str] = None) -> List[SourceImage]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise RawDataError(path, "not a COCO instance file (expected an object with 'images' and 'annotations')")
    entries = _list(data, "images", path)
    anns = _list(data, "annotations", path)
    cats = _list(data, "categories", path, required=False)
    names = {}
    for c in cats:
        if not isinstance(c, dict):
            raise RawDataError(path, "a category is not an object")
        names[_int(c, "id", path, "category")] = str(c.get("name")) if c.get("name") not in (None, "") else None
    folder = images if images is not None else os.path.dirname(os.path.abspath(path))
    by_id = {}
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise RawDataError(path, f"image {i} is not an object")
        where = f"image {i}"
        image_id = _int(e, "id", path, where)
        if image_id in by_id:
            raise RawDataError(path, f"{where}: duplicate image id {image_id}")
        size = (_int(e, "height", path, where, True), _int(e, "width", path, where, True))
        by_id[image_id] = (_inside(folder, e.get("file_name"), path, where), size, [], [])
    for j, a in enumerate(anns):
        if not isinstance(a, dict):
            raise RawDataError(path, f"annotation {j} is not an object")
        where = f"annotation {j}" + (f" (id {a['id']})" if "id" in a else "")
        image_id = a.get("image_id")
        if image_id not in by_id:
            raise RawDataError(path, f"{where}: image_id {image_id!r} is not in 'images'")
        file, size, nuclei, skipped = by_id[image_id]
        got = _nucleus(a, size, names, path, where)
        (nuclei if isinstance(got, Nucleus) else skipped).append(got)
    sources = []
    for file, size, nuclei, skipped in by_id.values():
        stem = os.path.splitext(os.path.basename(file))[0]
        sources.append(SourceImage(stem, file, path, (lambda n=nuclei, s=size: (n, s)), skipped=skipped))
    return sources


def scan(inputs: Sequence[str], images: Optional[str] = None) -> List[SourceImage]:
    """The images of every COCO file of ``inputs`` (files, or folders of ``*.json``)."""
    return [s for path in expand_inputs(inputs, SUFFIXES, "COCO JSON files") for s in scan_file(path, images)]
