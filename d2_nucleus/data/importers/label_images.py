# -*- coding: utf-8 -*-
"""
Instance label images (the Cellpose / StarDist convention, and ``tools/predict.py --labels-dir``):
one single-channel PNG or TIFF per image, 8, 16 or 32 bit (integer, or float holding whole
numbers), 0 = background, every other value one nucleus. Pairings::

    DIR/images/X.tif + DIR/masks/X.tif       (INPUT = DIR, or the files in DIR/masks; also labels/)
    DIR/X.png + DIR/X_masks.png              (INPUT = DIR: its *_masks.* files, or those files)

The image is found by the label file's name without ``_masks``: under ``--images`` when given,
else in the sibling ``images/`` folder of a ``masks/`` or ``labels/`` folder, else beside the
label file. A label image must have its image's size (checked: one-line error otherwise). A
label whose pixels are not connected stays one nucleus. Resolution: the label or image TIFF's
resolution tags, else ``--mpp``.
"""
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..raw import RawDataError, is_ignored_entry, natural_key
from ..resample import check_mpp
from .source import ImageFinder, Nucleus, SourceImage, expand_inputs, tiff_mpp

__all__ = ["SUFFIXES", "MASK_SUFFIX", "read_label_image", "label_crops", "scan"]

SUFFIXES = (".png", ".tif", ".tiff")
MASK_SUFFIX = "_masks"
_MASK_DIRS = ("masks", "labels")


def read_label_image(path: str) -> np.ndarray:
    """The labels of a label image as int64 (H, W); RawDataError naming the file when unusable."""
    import cv2

    try:
        if path.lower().endswith((".tif", ".tiff")):
            import tifffile

            arr = tifffile.imread(path, key=0)
        else:
            with open(path, "rb") as f:
                data = f.read()
            arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    except Exception as e:  # tifffile and OpenCV raise many kinds for corrupt files
        raise RawDataError(path, f"cannot be read as a label image ({' '.join(str(e).split())})") from None
    if arr is None:
        raise RawDataError(path, "cannot be decoded as an image (empty, corrupt or truncated file)")
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise RawDataError(path, f"a label image must have one channel, this one has shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise RawDataError(path, "float label image holds values that are not whole numbers")
    elif arr.dtype.kind not in "ui":
        raise RawDataError(path, f"unsupported label image type {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise RawDataError(path, "label image holds negative values")
    return arr.astype(np.int64)


def label_crops(labels: np.ndarray) -> Tuple[List[int], List[Tuple[np.ndarray, int, int]]]:
    """(label values, their crops (bool mask, x0, y0)) of every non-zero label, in increasing value."""
    from scipy import ndimage

    values, inverse = np.unique(labels, return_inverse=True)
    dense = inverse.reshape(labels.shape).astype(np.int32)
    if values[0] != 0:
        dense += 1  # no background: index 0 is a label
        values = np.concatenate([[0], values])
    out_values, crops = [], []
    for k, sl in enumerate(ndimage.find_objects(dense), start=1):
        if sl is None:
            continue
        out_values.append(int(values[k]))
        crops.append((dense[sl] == k, int(sl[1].start), int(sl[0].start)))
    return out_values, crops


def _label_files(inputs: Sequence[str]) -> List[str]:
    files = []
    for path in inputs:
        if os.path.isdir(path):
            sub = next((os.path.join(path, d) for d in _MASK_DIRS if os.path.isdir(os.path.join(path, d))), None)
            if sub is not None:
                files.extend(expand_inputs([sub], SUFFIXES, "label images"))
                continue
            found = sorted(
                (os.path.join(path, n) for n in os.listdir(path)
                 if not is_ignored_entry(n) and os.path.splitext(n)[0].endswith(MASK_SUFFIX)
                 and n.lower().endswith(SUFFIXES)),
                key=lambda p: natural_key(os.path.basename(p)),
            )
            if not found:
                raise RawDataError(path, f"folder holds neither masks/ (or labels/) nor *{MASK_SUFFIX}.png/.tif label images")
            files.extend(found)
        else:
            files.extend(expand_inputs([path], SUFFIXES, "label images"))
    return files


def _loader(label_file: str):
    def load():
        labels = read_label_image(label_file)
        values, crops = label_crops(labels)
        return [Nucleus(f"label {v}", crop=c) for v, c in zip(values, crops)], labels.shape

    return load


def scan(inputs: Sequence[str], images: Optional[str] = None) -> List[SourceImage]:
    """One :class:`SourceImage` per label image of ``inputs`` (module docstring: pairings)."""
    files = _label_files(inputs)
    finders: Dict[Optional[str], ImageFinder] = {}
    sources = []
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem.endswith(MASK_SUFFIX) and len(stem) > len(MASK_SUFFIX):
            stem = stem[: -len(MASK_SUFFIX)]
        folder = os.path.dirname(os.path.abspath(path))
        search = images
        if search is None and os.path.basename(folder) in _MASK_DIRS:
            sibling = os.path.join(os.path.dirname(folder), "images")
            search = sibling if os.path.isdir(sibling) else None
        if search not in finders:
            finders[search] = ImageFinder(search, exclude=files)
        image = finders[search].find(stem, path)
        mpp, mpp_from = None, ""
        if path.lower().endswith((".tif", ".tiff")):
            raw = tiff_mpp(path)
            try:
                mpp = check_mpp(raw, "resolution tags") if raw is not None else None
                mpp_from = "TIFF tags of the label image" if mpp else ""
            except ValueError:
                mpp = None
        sources.append(SourceImage(stem, image, path, _loader(path), mpp=mpp, mpp_from=mpp_from))
    return sources
