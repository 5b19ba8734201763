# -*- coding: utf-8 -*-
"""
The one image reader of d2_nucleus: training and evaluation (:class:`NucleusDatasetMapper`) and
prediction (:mod:`d2_nucleus.engine`) decode every image file through :func:`read_image`, so the
same file reaches the model as the same array in ``--eval-only`` and in ``tools/predict.py``.

It is Detectron2's ``detection_utils.read_image`` (EXIF orientation, ``cfg.INPUT.FORMAT``) with
three differences:

* grey, palette, alpha and 16-bit images become 8-bit, 3-channel images with a warning
  (16-bit grey is scaled by 255 / 65535, not clipped as Pillow's ``convert("RGB")`` would);
* Pillow's decompression-bomb guard (an error beyond ~179 M pixels) is replaced by this module's
  own limit, :data:`MAX_IMAGE_PIXELS` (2**30 pixels, e.g. 32,768 x 32,768): large legitimate
  tiles such as 13,500 x 13,500 read; anything larger fails with a one-line error naming the
  file before it is decoded;
* every failure is a :class:`BadImageError` whose message starts with the file name.
"""
import contextlib
import threading
import warnings

import numpy as np
from PIL import Image

from detectron2.data import detection_utils

__all__ = ["BadImageError", "MAX_IMAGE_PIXELS", "read_image"]

#: Largest image (width x height) :func:`read_image` decodes. An RGB image of this size takes
#: 3 GiB; whole-slide images are read tile by tile instead.
MAX_IMAGE_PIXELS = 1 << 30

_PIL_LIMIT_LOCK = threading.Lock()


class BadImageError(ValueError):
    """An input image cannot be read or is not what its description says."""


@contextlib.contextmanager
def _without_pillow_limit():
    """Pillow checks ``Image.MAX_IMAGE_PIXELS`` (module-wide) in ``Image.open``; ours replaces it."""
    with _PIL_LIMIT_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


def read_image(path: str, format: str = "BGR") -> np.ndarray:
    """
    Read an image as an H x W x 3 uint8 array in ``format`` ("BGR" or "RGB"), as
    ``detectron2.data.detection_utils.read_image`` does, converting grey, palette, alpha and
    16-bit images to 8-bit colour with a warning (see the module docstring).

    Raises:
        BadImageError: the file is missing, not a readable image, or larger than
            :data:`MAX_IMAGE_PIXELS` (the message names it).
    """
    try:
        with open(path, "rb") as f:
            with _without_pillow_limit():
                im = Image.open(f)
            width, height = im.size
            if width * height > MAX_IMAGE_PIXELS:
                raise BadImageError(
                    f"{path}: image is {width}x{height} ({width * height:,} pixels), more than the "
                    f"{MAX_IMAGE_PIXELS:,} this reader decodes; cut it into tiles"
                )
            mode = im.mode
            if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float grey
                grey = np.asarray(im, dtype=np.float64)
                image = None
            else:
                if mode != "RGB":
                    what = {"RGBA": "alpha channel dropped", "LA": "grey + alpha: alpha dropped", "L": "grey"}
                    warnings.warn(f"{path}: {mode} image converted to RGB ({what.get(mode, 'converted')})")
                im = detection_utils._apply_exif_orientation(im)  # Pillow issue 3973, as Detectron2
                image = detection_utils.convert_PIL_to_numpy(im, format)
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(f"{path}: cannot read image ({e})") from e
    if image is None:
        peak = 65535.0 if mode.startswith("I;16") else max(float(grey.max()), 1.0)
        warnings.warn(f"{path}: {mode} grey image scaled to 8 bits and converted to 3 channels")
        grey = np.clip(grey / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = np.repeat(grey[:, :, None], 3, axis=2)
        return image[:, :, ::-1].copy() if format == "BGR" else image
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise BadImageError(f"{path}: unsupported image of shape {image.shape}")
    return image
