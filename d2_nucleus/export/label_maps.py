# -*- coding: utf-8 -*-
"""Instance label maps as image files (0 = background, 1..N = instances), e.g. for napari."""
import io
import os

import cv2
import numpy as np
import tifffile

from ..utils.file_io import atomic_write

__all__ = ["label_map_path", "write_label_map"]

_UINT16_MAX = np.iinfo(np.uint16).max


def label_map_path(path_without_ext: str, num_labels: int, fmt: str = "png") -> str:
    """
    The file name for a label map: ``.png`` (16-bit) when asked for and ``num_labels`` fits
    into 16 bits, otherwise ``.tif`` (32-bit).
    """
    if fmt not in ("png", "tiff"):
        raise ValueError(f"label map format must be 'png' or 'tiff', got {fmt!r}")
    return path_without_ext + (".png" if fmt == "png" and num_labels <= _UINT16_MAX else ".tif")


def write_label_map(label_map: np.ndarray, path: str, overwrite: bool = False) -> None:
    """
    Write an (H, W) integer label map atomically: ``.png`` as 16-bit PNG (labels must be
    < 65536), ``.tif``/``.tiff`` as 16-bit or 32-bit TIFF (zlib-compressed), whichever holds the
    largest label.
    """
    ext = os.path.splitext(path)[1].lower()
    max_label = int(label_map.max()) if label_map.size else 0
    if label_map.min(initial=0) < 0:
        raise ValueError("label maps cannot have negative labels")
    dtype = np.uint16 if max_label <= _UINT16_MAX else np.uint32
    if ext == ".png":
        if dtype != np.uint16:
            raise ValueError(f"{path}: {max_label} labels do not fit into a 16-bit PNG; use .tif")
        ok, buffer = cv2.imencode(".png", label_map.astype(np.uint16))
        if not ok:
            raise RuntimeError(f"{path}: PNG encoding failed")
        data = buffer.tobytes()
    elif ext in (".tif", ".tiff"):
        stream = io.BytesIO()
        tifffile.imwrite(stream, label_map.astype(dtype), compression="zlib")
        data = stream.getvalue()
    else:
        raise ValueError(f"{path}: label maps are written as .png or .tif")
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(data)
