# -*- coding: utf-8 -*-
"""
Reader of the raw nucleus dataset layout users download::

    <raw>/train/<ID>/images/<ID>.png          one H&E image
    <raw>/train/<ID>/masks/<name>.png         one nucleus a file (foreground = value > 0)
    <raw>/test/<file_name>                    test images, no ground truth
    <raw>/test_img_ids.json                   [{"file_name", "id", "height", "width"}, ...]

Only the folder structure is checked here (cheap); pixels are read by :mod:`.mask_io` and
:mod:`.mask2coco`. Hidden entries (names starting with "." such as ``.ipynb_checkpoints/``) and
Jupyter checkpoint copies (``*-checkpoint.png``) are ignored everywhere.
"""
import json
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

__all__ = [
    "RawDataError",
    "RawTrainImage",
    "RawTrainSet",
    "is_ignored_entry",
    "natural_key",
    "scan_train",
    "parse_test_img_ids",
    "read_test_img_ids",
]

_CHECKPOINT_RE = re.compile(r"-checkpoint(\.[^./]*)?$")
_DIGITS_RE = re.compile(r"(\d+)")


class RawDataError(ValueError):
    """Bad raw input. ``str(e)`` is "<path>: <problem>"."""

    def __init__(self, path: str, problem: str):
        # Both parts in args: the exception survives pickling across worker processes.
        super().__init__(path, problem)
        self.path = path
        self.problem = problem

    def __str__(self):
        return f"{self.path}: {self.problem}"


def is_ignored_entry(name: str) -> bool:
    """Hidden entries and Jupyter checkpoint copies, which the real download contains."""
    return name.startswith(".") or bool(_CHECKPOINT_RE.search(name))


def natural_key(name: str):
    """Sort key that orders "mask_2" before "mask_10" (and is plain order for zero-padded names)."""
    return [int(t) if t.isdigit() else t for t in _DIGITS_RE.split(name)]


def _listdir(path: str) -> Tuple[List[str], int]:
    """Visible entries of ``path`` (sorted) and the number of ignored ones."""
    names = os.listdir(path)
    visible = sorted(n for n in names if not is_ignored_entry(n))
    return visible, len(names) - len(visible)


def _is_png(name: str) -> bool:
    return name.lower().endswith(".png")


@dataclass(frozen=True)
class RawTrainImage:
    """One training image of the raw layout."""

    image_id: str  # the folder name <ID>
    image_file: str  # <raw>/train/<ID>/images/<ID>.png
    mask_files: Tuple[str, ...]  # <raw>/train/<ID>/masks/*.png in natural order


@dataclass
class RawTrainSet:
    """The training part of a raw dataset: images sorted by ID, plus what the scan noticed."""

    root: str
    images: List[RawTrainImage]
    warnings: List[str] = field(default_factory=list)
    ignored_entries: int = 0

    @property
    def num_masks(self) -> int:
        return sum(len(r.mask_files) for r in self.images)

    def by_id(self) -> Dict[str, RawTrainImage]:
        return {r.image_id: r for r in self.images}


def scan_train(raw_root: str) -> RawTrainSet:
    """
    List ``<raw_root>/train``: every image folder must hold ``images/<ID>.png`` and ``masks/``.

    Raises:
        RawDataError: naming the folder or file and what is wrong.
    """
    if not os.path.isdir(raw_root):
        raise RawDataError(raw_root, "raw dataset folder does not exist")
    train_dir = os.path.join(raw_root, "train")
    if not os.path.isdir(train_dir):
        raise RawDataError(train_dir, "missing train/ folder (expected train/<ID>/images and train/<ID>/masks)")
    entries, ignored = _listdir(train_dir)
    images, warnings = [], []
    for image_id in entries:
        folder = os.path.join(train_dir, image_id)
        if not os.path.isdir(folder):
            warnings.append(f"{folder}: not an image folder, ignored")
            continue
        img_dir, mask_dir = os.path.join(folder, "images"), os.path.join(folder, "masks")
        if not os.path.isdir(img_dir):
            raise RawDataError(folder, "missing images/ folder")
        if not os.path.isdir(mask_dir):
            raise RawDataError(folder, "missing masks/ folder")
        img_names, n = _listdir(img_dir)
        ignored += n
        image_file = os.path.join(img_dir, image_id + ".png")
        if not os.path.isfile(image_file):
            found = ", ".join(img_names) if img_names else "nothing"
            raise RawDataError(img_dir, f"expected {image_id}.png, found {found}")
        for extra in img_names:
            if extra != image_id + ".png":
                warnings.append(f"{os.path.join(img_dir, extra)}: extra file in images/, ignored")
        mask_names, n = _listdir(mask_dir)
        ignored += n
        masks = []
        for name in sorted(mask_names, key=natural_key):
            path = os.path.join(mask_dir, name)
            if not (_is_png(name) and os.path.isfile(path)):
                warnings.append(f"{path}: not a PNG mask file, ignored")
                continue
            masks.append(path)
        if not masks:
            warnings.append(f"{mask_dir}: no masks, image {image_id} has no annotations")
        images.append(RawTrainImage(image_id, image_file, tuple(masks)))
    if not images:
        raise RawDataError(train_dir, "no training image folders")
    return RawTrainSet(raw_root, images, warnings, ignored)


def parse_test_img_ids(json_file: str) -> List[Dict]:
    """
    Read a ``test_img_ids.json`` strictly: the one parser of that file (data preparation and
    prediction both call it).

    Returns:
        entries in file order, each {"file_name", "id", "height", "width"}; every file_name is a
        plain, visible file name (no folder part, so it can never point outside the folder it is
        looked up in), ids and names unique, sizes positive.

    Raises:
        RawDataError: missing or malformed file, a bad entry, duplicate ids or names.
    """
    if not os.path.isfile(json_file):
        raise RawDataError(json_file, "missing test image list")
    try:
        with open(json_file, "rb") as f:
            entries = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise RawDataError(json_file, f"not valid JSON ({e})") from None
    if not isinstance(entries, list):
        raise RawDataError(json_file, "expected a list of {file_name, id, height, width}")
    out, ids, names = [], set(), set()
    for i, e in enumerate(entries):
        where = f"entry {i}"
        if not isinstance(e, dict):
            raise RawDataError(json_file, f"{where} is not an object")
        for key in ("file_name", "id", "height", "width"):
            if key not in e:
                raise RawDataError(json_file, f"{where} has no '{key}'")
        name = e["file_name"]
        if (
            not isinstance(name, str)
            or not name
            or os.path.basename(name) != name
            or name in (".", "..")
            or "\\" in name
            or "\0" in name
            or is_ignored_entry(name)
        ):
            raise RawDataError(json_file, f"{where}: file_name must be a plain file name, got {name!r}")
        for key in ("id", "height", "width"):
            v = e[key]
            if isinstance(v, bool) or not isinstance(v, int) or (key != "id" and v <= 0):
                raise RawDataError(json_file, f"{where} ({name}): '{key}' must be a positive integer, got {v!r}")
        if e["id"] in ids:
            raise RawDataError(json_file, f"{where} ({name}): duplicate id {e['id']}")
        if name in names:
            raise RawDataError(json_file, f"{where}: duplicate file_name {name}")
        ids.add(e["id"])
        names.add(name)
        out.append({"file_name": name, "id": e["id"], "height": e["height"], "width": e["width"]})
    if not out:
        raise RawDataError(json_file, "lists no test images")
    return out


def read_test_img_ids(raw_root: str) -> Tuple[List[Dict], List[str]]:
    """
    Read and check ``<raw_root>/test_img_ids.json`` (:func:`parse_test_img_ids`) against
    ``<raw_root>/test/``.

    Returns:
        (entries in file order, each {"file_name", "id", "height", "width"}; warnings)

    Raises:
        RawDataError: missing or malformed file, duplicate ids or names, a listed image absent.
    """
    json_file = os.path.join(raw_root, "test_img_ids.json")
    test_dir = os.path.join(raw_root, "test")
    if not os.path.isfile(json_file):
        raise RawDataError(json_file, "missing test image list")
    if not os.path.isdir(test_dir):
        raise RawDataError(test_dir, "missing test/ folder")
    out = parse_test_img_ids(json_file)
    for e in out:
        path = os.path.join(test_dir, e["file_name"])
        if not os.path.isfile(path):
            raise RawDataError(path, f"listed in {json_file} but absent")
    names = {e["file_name"] for e in out}
    visible, _ = _listdir(test_dir)
    warnings = [
        f"{os.path.join(test_dir, n)}: not listed in {json_file}, ignored"
        for n in visible
        if n not in names
    ]
    return out, warnings
