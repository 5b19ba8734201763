# -*- coding: utf-8 -*-
"""
A prepared dataset's COCO annotation file checked before a run writes anything (tools/train_net.py,
its ``--eval-only``, tools/freeze_group_norm.py: :func:`.datasets.prepare_nucleus_datasets`) and
again before each load (:func:`.datasets.register_nucleus_datasets`' loaders), for the main data
root and every ``NUCLEUS.EXTRA_DATA_ROOTS`` entry alike.

A file that is not JSON, lacks a key Detectron2's ``load_coco_json`` or the mapper needs, or names
an image that is missing or lies outside its image folder (``../../etc/passwd``, an absolute path)
is one :class:`~.raw.RawDataError` line naming the file and the entry, instead of a traceback
naming no file minutes into a run, or a file read from outside the dataset.
"""
import json
import math
import os
from typing import Dict, Tuple

from .raw import RawDataError

__all__ = ["check_coco_file", "image_path_inside"]

_checked: Dict[Tuple, bool] = {}  # (file, size, mtime, image root) -> checked: a file is checked once a process


def image_path_inside(image_root: str, file_name: str) -> str:
    """
    ``image_root/file_name`` if it lies inside ``image_root`` (as written: sub-folders are fine, an
    absolute path or ``..`` out of the folder is not; a symlink inside the folder is trusted like
    any file there). Raises ValueError otherwise.
    """
    if not isinstance(file_name, str) or not file_name or os.path.isabs(file_name):
        raise ValueError(f"file_name {file_name!r} must be a path relative to the image folder")
    root = os.path.normpath(image_root)
    path = os.path.normpath(os.path.join(root, file_name))
    if os.path.commonpath([root, path]) != root or path == root:
        raise ValueError(f"file_name {file_name!r} lies outside the image folder {image_root}")
    return path


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(json_file: str, image_root: str) -> None:
    def bad(problem):
        return RawDataError(json_file, problem)

    try:
        with open(json_file, "rb") as f:
            coco = json.loads(f.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise bad(f"not valid JSON ({' '.join(str(e).split())})") from None
    if not isinstance(coco, dict):
        raise bad(f"expected a COCO object with images, annotations and categories, got a {type(coco).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise bad(f"no '{key}' list (a COCO instances file has images, annotations and categories)")
    categories = set()
    for i, c in enumerate(coco["categories"]):
        if not isinstance(c, dict) or not _is_int(c.get("id")) or not isinstance(c.get("name"), str):
            raise bad(f"categories[{i}] needs an integer 'id' and a 'name'")
        categories.add(c["id"])
    images = set()
    for i, img in enumerate(coco["images"]):
        where = f"images[{i}]"
        if not isinstance(img, dict):
            raise bad(f"{where} is not an object")
        for key in ("id", "height", "width"):
            if not _is_int(img.get(key)) or (key != "id" and img[key] <= 0):
                raise bad(f"{where} needs an integer '{key}'" + (" > 0" if key != "id" else "") + f", has {img.get(key)!r}")
        if img["id"] in images:
            raise bad(f"{where}: image id {img['id']} is given twice")
        images.add(img["id"])
        try:
            path = image_path_inside(image_root, img.get("file_name"))
        except ValueError as e:
            raise bad(f"{where}: {e}") from None
        if not os.path.isfile(path):
            raise bad(f"{where}: image file {path} not found")
    for i, a in enumerate(coco["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(a, dict):
            raise bad(f"{where} is not an object")
        if a.get("image_id") not in images:
            raise bad(f"{where}: image_id {a.get('image_id')!r} is not an image of the file")
        if a.get("category_id") not in categories:
            raise bad(f"{where}: category_id {a.get('category_id')!r} is not a category of the file")
        box = a.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)):
            raise bad(f"{where}: bbox must be 4 finite numbers [x, y, w, h], has {box!r}")
        if not isinstance(a.get("segmentation"), (list, dict)):
            raise bad(f"{where}: segmentation must be polygons (a list) or an RLE (an object), has "
                      f"{type(a.get('segmentation')).__name__}")


def check_coco_file(json_file: str, image_root: str) -> None:
    """
    Check a COCO instances file of the prepared layout against its image folder: JSON; ``images``,
    ``annotations`` and ``categories`` lists; every image an object with an integer ``id`` (unique),
    ``height`` and ``width`` > 0 and a ``file_name`` inside ``image_root`` that exists; every
    annotation with an ``image_id`` and ``category_id`` of the file, a ``bbox`` of 4 finite numbers
    and a ``segmentation``. A file is checked once per process (while unchanged).

    Raises:
        FileNotFoundError: the file or the folder is missing.
        RawDataError: the first problem, one line naming the file and the entry.
    """
    st = os.stat(json_file)  # FileNotFoundError names the file
    key = (os.path.abspath(json_file), st.st_size, st.st_mtime_ns, os.path.abspath(image_root))
    if key not in _checked:
        _check(json_file, image_root)
        _checked[key] = True
