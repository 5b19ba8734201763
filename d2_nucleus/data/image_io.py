# -*- coding: utf-8 -*-
"""
The one image reader of d2_nucleus: training and evaluation (:class:`NucleusDatasetMapper`) and
prediction (:mod:`d2_nucleus.engine`) decode every image file through :func:`read_image`, so the
same file reaches the model as the same array in ``--eval-only`` and in ``tools/predict.py``.

It is Detectron2's ``detection_utils.read_image`` (EXIF orientation, ``cfg.INPUT.FORMAT``) with
these differences:

* grey, palette, alpha and 16-bit images (grey and RGB) become 8-bit, 3-channel images with a
  warning (16-bit grey is scaled by 255 / 65535, not clipped as Pillow's ``convert("RGB")`` would;
  16-bit RGB keeps each value's high byte, as Pillow decodes it);
* Pillow's decompression-bomb guard (an error beyond ~179 M pixels) is replaced by a limit that
  is checked on the file's header, before anything is decoded (a 1.2 MB PNG can claim
  20,000 x 20,000 pixels): :data:`MAX_IMAGE_PIXELS` for the per-image path (training, evaluation,
  ``tools/predict.py``), whose memory grows with the image, and a caller's ``max_pixels`` (the
  slide reader's plain images: :data:`MAX_SLIDE_IMAGE_PIXELS`). Any image is also refused when
  decoding it would need more memory than the machine has available (:func:`check_decode_size`,
  which the slide reader calls for TIFFs it cannot memory-map);
* every failure is a :class:`BadImageError` whose message starts with the file name.
"""
import contextlib
import threading
import warnings

import numpy as np
from PIL import Image

from detectron2.data import detection_utils

__all__ = ["BadImageError", "MAX_IMAGE_PIXELS", "MAX_SLIDE_IMAGE_PIXELS", "check_decode_size", "read_image"]

#: Largest image (width x height) of the per-image path (training, evaluation, tools/predict.py):
#: 12,288 x 12,288 (151 M pixels). Measured with the CPU recipe (bench/bench_image_memory.py,
#: BENCHMARKS.md): the peak is the model's activations, bounded by INPUT.MAX_SIZE_TEST (images beyond
#: 3,200 px are downscaled to 4,000 px for the model): 6.5-6.9 GB for every size from 10 M to 151 M
#: pixels, while decoding alone grows by ~12.6 bytes a pixel (a 20,000 x 20,000 image: ~5 GB more).
#: Larger images go through tools/segment_slides.py, tile by tile at native resolution.
MAX_IMAGE_PIXELS = 12288 * 12288
#: Largest plain image (PNG, JPEG, ...) the slide reader decodes whole (2**30 pixels, 3 GiB as RGB):
#: the tiles are cut from it in memory. Tiled or pyramidal TIFFs and slides are read by region.
MAX_SLIDE_IMAGE_PIXELS = 1 << 30
#: Bytes per pixel :func:`read_image` needs at its peak (Pillow's 4-byte RGBX buffer and the 3-byte
#: array, and their copies; measured 8.5 on a 6,144 x 6,144 PNG, 11.0 on 8,192 x 8,192, 12.6 on
#: 12,288 x 12,288: bench/bench_image_memory.py).
DECODE_BYTES_PER_PIXEL = 13

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


def _available_memory() -> int:
    """Bytes of memory available to new allocations (Linux's MemAvailable), or 0 if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def check_decode_size(path: str, width: int, height: int, max_pixels: int = 0,
                      bytes_per_pixel: int = DECODE_BYTES_PER_PIXEL) -> None:
    """
    Refuse, before decoding, an image of ``width`` x ``height`` (from its header) that is larger
    than ``max_pixels`` (0: :data:`MAX_IMAGE_PIXELS`) or whose decoding would need more memory than
    the machine has available (a decompression bomb would otherwise meet the OOM killer, which
    names nothing). Raises :class:`BadImageError` naming the file and its size.
    """
    limit = max_pixels or MAX_IMAGE_PIXELS
    pixels = int(width) * int(height)
    if pixels > limit:
        hint = ("segment it tile by tile with tools/segment_slides.py" if limit == MAX_IMAGE_PIXELS
                else "convert it to a tiled pyramidal TIFF (e.g. vips tiffsave --tile --pyramid)")
        raise BadImageError(
            f"{path}: image is {width}x{height} ({pixels:,} pixels), more than the {limit:,} this path "
            f"decodes at once; {hint}"
        )
    need = pixels * bytes_per_pixel
    available = _available_memory()
    if available and need > available:
        raise BadImageError(
            f"{path}: image is {width}x{height} ({pixels:,} pixels); decoding it needs "
            f"~{need / 2**30:.1f} GiB, more than the {available / 2**30:.1f} GiB of memory available"
        )


def read_image(path: str, format: str = "BGR", max_pixels: int = 0) -> np.ndarray:
    """
    Read an image as an H x W x 3 uint8 array in ``format`` ("BGR" or "RGB"), as
    ``detectron2.data.detection_utils.read_image`` does, converting grey, palette, alpha and
    16-bit images to 8-bit colour with a warning (see the module docstring).

    Args:
        max_pixels: the largest width x height decoded (0: :data:`MAX_IMAGE_PIXELS`, the
            per-image path's limit); checked on the header, before decoding.

    Raises:
        BadImageError: the file is missing, not a readable image, larger than ``max_pixels``, or
            larger than the memory available can decode (the message names it and its size).
    """
    try:
        with open(path, "rb") as f:
            with _without_pillow_limit():
                im = Image.open(f)
            width, height = im.size
            mode = im.mode
            deep = mode.startswith("I") or mode == "F"  # deep grey: a float64 copy too
            check_decode_size(path, width, height, max_pixels, DECODE_BYTES_PER_PIXEL * (2 if deep else 1))
            rawmode = im.tile[0].args if im.tile else None
            rawmode = rawmode[0] if isinstance(rawmode, tuple) else rawmode
            if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float grey
                grey = np.asarray(im, dtype=np.float64)
                image = None
            else:
                if mode != "RGB":
                    what = {"RGBA": "alpha channel dropped", "LA": "grey + alpha: alpha dropped", "L": "grey"}
                    warnings.warn(f"{path}: {mode} image converted to RGB ({what.get(mode, 'converted')})")
                if isinstance(rawmode, str) and ";16" in rawmode:  # 16 bits per channel, decoded to 8
                    warnings.warn(f"{path}: 16-bit {mode} image converted to 8 bits per channel (value / 256)")
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
