# -*- coding: utf-8 -*-
"""
CRCHistoPhenotypes' point annotations (Sirinukunwattana et al., IEEE TMI 2016): MATLAB files read
with ``scipy.io.loadmat`` (plain arrays, no code), each a K x 2 array ``detection`` of (x, y)
centres, in both layouts of the dataset: one folder per image (``imgN/imgN.bmp``,
``imgN_detection.mat``, ``imgN_<class>.mat``) and the official download's ``Detection/imgN/`` +
``Classification/imgN/``. See :mod:`.points` for the coordinate convention.
"""
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data.importers.source import IMAGE_EXTENSIONS
from .points import (
    BadPointsError,
    PointAnnotations,
    check_inside,
    check_mpp,
    check_not_empty,
    image_size,
)

__all__ = ["CRCHISTO_CLASSES", "CRCHISTO_MPP", "CRCHISTO_OFFSET", "read_crchisto"]

#: CRCHisto's classes, in the order of their class index.
CRCHISTO_CLASSES = ("epithelial", "fibroblast", "inflammatory", "others")
#: Subtracted from CRCHisto's coordinates to get pixel indices (see the module docstring).
CRCHISTO_OFFSET = 1.0
#: CRCHisto's resolution: 20x images downsampled from 40x scans of an Omnyx VL120 (0.275 um/px at
#: 40x; Sirinukunwattana et al., IEEE TMI 2016), i.e. 0.55 um/px.
CRCHISTO_MPP = 0.55


def _read_mat_points(path: str) -> np.ndarray:
    """The K x 2 (x, y) array of a CRCHisto .mat file (MATLAB 1-based), as float64."""
    import scipy.io
    from scipy.io.matlab import MatReadError

    try:
        data = scipy.io.loadmat(path)
    except NotImplementedError:  # MATLAB v7.3 (HDF5) files
        raise BadPointsError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; save it with -v7") from None
    except (OSError, ValueError, TypeError, IndexError, MatReadError) as e:
        raise BadPointsError(f"{path}: not a readable MATLAB file: {' '.join(str(e).split())}") from None
    arrays = {k: v for k, v in data.items() if not k.startswith("__")}
    if "detection" in arrays:
        value = arrays["detection"]
    elif len(arrays) == 1:
        value = next(iter(arrays.values()))
    else:
        raise BadPointsError(f"{path}: no 'detection' variable (variables: {sorted(arrays)})")
    value = np.asarray(value)
    if value.size == 0:
        return np.zeros((0, 2), np.float64)
    if value.ndim != 2 or value.shape[1] != 2 or not np.issubdtype(value.dtype, np.number):
        raise BadPointsError(f"{path}: expected a K x 2 array of (x, y) centres, got {value.dtype} {value.shape}")
    return value.astype(np.float64)


def _pair_within(a: np.ndarray, b: np.ndarray, radius: float):
    from .matching import match_points

    pairs, _, _ = match_points(a, b, radius)
    return pairs


def _crchisto_folders(root: str) -> List[Tuple[str, Optional[str], Optional[str]]]:
    """(name, detection folder, classification folder) of each image under ``root``."""
    entries = {e.lower(): e for e in os.listdir(root)} if os.path.isdir(root) else {}
    if "detection" in entries or "classification" in entries:  # the official download
        found: Dict[str, List[Optional[str]]] = {}
        for slot, key in enumerate(("detection", "classification")):
            if key in entries:
                base = os.path.join(root, entries[key])
                for name in sorted(os.listdir(base)):
                    if os.path.isdir(os.path.join(base, name)) and not name.startswith("."):
                        found.setdefault(name, [None, None])[slot] = os.path.join(base, name)
        return [(n, d, c) for n, (d, c) in sorted(found.items())]
    if not os.path.isdir(root):
        raise BadPointsError(f"{root}: not a folder of CRCHisto images")
    folders = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if os.path.isdir(path) and not name.startswith("."):
            folders.append((name, path, path))
    return folders


def _find_image(name: str, folders: Sequence[Optional[str]]) -> str:
    for folder in folders:
        if folder is None:
            continue
        for ext in IMAGE_EXTENSIONS:
            path = os.path.join(folder, name + ext)
            if os.path.isfile(path):
                return path
    where = " or ".join(f for f in folders if f)
    raise BadPointsError(f"{where}: no image {name}.bmp (or .png/.tif/.jpg) for the annotations of {name}")


def read_crchisto(root: str, mpp: Optional[float] = CRCHISTO_MPP, snap_px: float = 6.0) -> List[PointAnnotations]:
    """
    Read CRCHisto annotations in either layout (see the module docstring).

    Every nucleus of an image is in ``imgN_detection.mat``; ``imgN_<class>.mat`` list the centres
    of the nuclei of that class (a file may be missing or empty). A class point names the
    detection point at its position: they are paired one to one (:func:`.matching.match_points`)
    within ``snap_px`` pixels (17,752 of CRCHisto's 17,801 class points coincide exactly with a
    detection point; within 6 px 46 more are paired, 3 farther ones, up to 9.5 px away, are not); a
    class point left unpaired is added as a nucleus of its own. Detection points without a class get label -1.

    Args:
        root: the dataset folder (one folder per image), or the folder holding ``Detection/``
            and ``Classification/``.
        mpp: the images' resolution (default: the dataset's, 0.55 um/px).
        snap_px: pairing radius of class points to detection points, in pixels.
    """
    mpp = check_mpp(mpp)
    out = []
    folders = _crchisto_folders(root)
    if not folders:
        raise BadPointsError(f"{root}: no CRCHisto image folders (imgN/ or Detection/imgN/) found")
    for name, det_dir, cls_dir in folders:
        image = _find_image(name, [det_dir, cls_dir])
        height, width = image_size(image)
        det_path = os.path.join(det_dir, f"{name}_detection.mat") if det_dir else None
        det = _read_mat_points(det_path) if det_path and os.path.isfile(det_path) else np.zeros((0, 2))
        cls_xy, cls_lab, sources = [], [], [p for p in [det_path] if p and os.path.isfile(p)]
        for k, cls in enumerate(CRCHISTO_CLASSES):
            path = os.path.join(cls_dir, f"{name}_{cls}.mat") if cls_dir else None
            if path and os.path.isfile(path):
                pts = _read_mat_points(path)
                pts = check_inside(pts - CRCHISTO_OFFSET, height, width, path) + CRCHISTO_OFFSET
                cls_xy.append(pts)
                cls_lab.append(np.full(len(pts), k, np.int64))
                sources.append(path)
        if not sources:
            raise BadPointsError(f"{det_dir or cls_dir}: no {name}_detection.mat or {name}_<class>.mat files")
        det = check_inside(det - CRCHISTO_OFFSET, height, width, det_path or "") + CRCHISTO_OFFSET
        check_not_empty(np.concatenate([det, *cls_xy]) if cls_xy else det, image, ", ".join(sources))
        cls_xy = np.concatenate(cls_xy) if cls_xy else np.zeros((0, 2))
        cls_lab = np.concatenate(cls_lab) if cls_lab else np.zeros(0, np.int64)
        labels = np.full(len(det), -1, np.int64)
        pairs = _pair_within(det, cls_xy, snap_px) if len(det) and len(cls_xy) else np.zeros((0, 2), np.int64)
        labels[pairs[:, 0]] = cls_lab[pairs[:, 1]]
        dist = np.linalg.norm(det[pairs[:, 0]] - cls_xy[pairs[:, 1]], axis=1) if len(pairs) else np.zeros(0)
        extra = np.setdiff1d(np.arange(len(cls_xy)), pairs[:, 1])
        xy = np.concatenate([det, cls_xy[extra]]) - CRCHISTO_OFFSET
        labels = np.concatenate([labels, cls_lab[extra]])
        merge = {"snapped": int((dist > 1e-6).sum()), "added": int(len(extra))}
        out.append(PointAnnotations(image, xy, labels, CRCHISTO_CLASSES, mpp, ", ".join(sources), merge))
    return out
