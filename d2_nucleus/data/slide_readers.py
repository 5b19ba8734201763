# -*- coding: utf-8 -*-
"""
Slides and large images read by region (the data layer's reader of whole slides: the slide
pipeline and the annotation importers both read slides through it).

* :class:`OpenSlideSource`: every format OpenSlide reads (Aperio .svs, Hamamatsu .ndpi, MIRAX
  .mrxs, Leica .scn, Philips, Ventana, generic tiled/pyramidal TIFF, ...), read region by region
  from the pyramid;
* :class:`ArraySource`: plain images and TIFFs OpenSlide does not read (stripped, non-pyramidal).
  Uncompressed TIFFs are memory-mapped (``tifffile.memmap``: only the regions read are loaded);
  other files are decoded whole by the project's image reader (their formats do not allow
  reading a region).

:func:`open_slide` picks the reader; :func:`choose_level` the pyramid level for a model
resolution. All regions are RGB uint8; pixels outside the slide (or transparent) are white.
"""
import logging
import os
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "SlideError",
    "SlideSource",
    "OpenSlideSource",
    "ArraySource",
    "open_slide",
    "choose_level",
    "tiff_mpp",
]

logger = logging.getLogger(__name__)


class SlideError(ValueError):
    """A slide cannot be read or lacks what the pipeline needs (the message names the file)."""


class SlideSource:
    """
    A slide: a pyramid of levels, level 0 the finest.

    Attributes:
        path: the file.
        format: "aperio", "generic-tiff", ..., "tiff", "image".
        level_dimensions: (width, height) of each level.
        level_downsamples: level-0 pixels per pixel of each level.
        mpp: (x, y) micrometres per level-0 pixel, or None when the file does not say.
    """

    path: str
    format: str
    level_dimensions: List[Tuple[int, int]]
    level_downsamples: List[float]
    mpp: Optional[Tuple[float, float]]

    @property
    def dimensions(self) -> Tuple[int, int]:
        return self.level_dimensions[0]

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """(height, width, 3) RGB uint8 of ``level`` whose top-left pixel is level-0 pixel (x, y)."""
        raise NotImplementedError

    def thumbnail(self, max_side: int) -> np.ndarray:
        """The whole slide as RGB uint8, its longer side at most ``max_side`` px (aspect kept)."""
        width, height = self.dimensions
        scale = min(1.0, max_side / max(width, height))
        size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
        # read the smallest level at least as large as the thumbnail, then resize
        level = max(
            (i for i, (w, h) in enumerate(self.level_dimensions) if w >= size[0] and h >= size[1]),
            key=lambda i: self.level_downsamples[i],
            default=0,
        )
        w, h = self.level_dimensions[level]
        image = self.read_region(0, 0, level, w, h)
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _rgb(region: np.ndarray) -> np.ndarray:
    """RGB of an RGBA region; transparent pixels (outside the scanned area) become white."""
    rgb = np.ascontiguousarray(region[..., :3])
    if region.shape[-1] == 4:
        rgb[region[..., 3] == 0] = 255
    return rgb


class OpenSlideSource(SlideSource):
    """A slide read through OpenSlide."""

    def __init__(self, path: str):
        import openslide

        self.path = path
        try:
            self._slide = openslide.OpenSlide(path)
        except (openslide.OpenSlideError, OSError) as e:
            raise SlideError(f"{path}: cannot open slide ({e})") from e
        props = self._slide.properties
        self.format = props.get("openslide.vendor", "openslide")
        self.level_dimensions = [tuple(map(int, d)) for d in self._slide.level_dimensions]
        self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
        self.mpp = None
        try:
            mx, my = float(props["openslide.mpp-x"]), float(props["openslide.mpp-y"])
            if mx > 0 and my > 0:
                self.mpp = (mx, my)
        except (KeyError, ValueError):
            pass

    def read_region(self, x, y, level, width, height):
        import openslide

        try:
            region = self._slide.read_region((int(x), int(y)), int(level), (int(width), int(height)))
        except (openslide.OpenSlideError, OSError) as e:
            raise SlideError(f"{self.path}: cannot read region at ({x}, {y}) of level {level} ({e})") from e
        return _rgb(np.asarray(region))

    def close(self):
        self._slide.close()


def tiff_mpp(page) -> Optional[Tuple[float, float]]:
    """Micrometres per pixel from the TIFF resolution tags (unit centimetre or inch)."""
    tags = page.tags
    try:
        unit = int(tags["ResolutionUnit"].value)
        xr, yr = tags["XResolution"].value, tags["YResolution"].value
        xres, yres = xr[0] / xr[1], yr[0] / yr[1]
    except (KeyError, ZeroDivisionError, TypeError, IndexError):
        return None
    per_unit = {2: 25400.0, 3: 10000.0}.get(unit)  # um per inch / per centimetre
    if per_unit is None or xres <= 0 or yres <= 0:
        return None
    return (per_unit / xres, per_unit / yres)


class ArraySource(SlideSource):
    """A single-level image: a memory-mapped uncompressed TIFF, or a decoded image file."""

    def __init__(self, path: str):
        self.path = path
        self.mpp = None
        lower = path.lower()
        if lower.endswith((".tif", ".tiff")):
            import tifffile

            from .image_io import MAX_SLIDE_IMAGE_PIXELS, BadImageError, check_decode_size

            self.format = "tiff"
            try:
                with tifffile.TiffFile(path) as tif:
                    page = tif.pages[0]
                    self.mpp = tiff_mpp(page)
                    shape, dtype = page.shape, page.dtype
                try:
                    array = tifffile.memmap(path, mode="r")  # uncompressed, contiguous only
                except ValueError:  # compressed: decoded whole, once its size is checked
                    check_decode_size(path, shape[1], shape[0], MAX_SLIDE_IMAGE_PIXELS)
                    array = tifffile.imread(path, key=0)
            except BadImageError as e:
                raise SlideError(str(e)) from None
            except (OSError, ValueError, tifffile.TiffFileError) as e:
                raise SlideError(f"{path}: cannot read TIFF ({e})") from e
            if dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
                raise SlideError(f"{path}: expected an 8-bit RGB(A) TIFF, got {dtype} of shape {shape}")
            self._array = array
        else:
            from .image_io import MAX_SLIDE_IMAGE_PIXELS, read_image

            self.format = "image"
            try:  # the header is checked before decoding: a decompression bomb is refused, not decoded
                self._array = read_image(path, format="RGB", max_pixels=MAX_SLIDE_IMAGE_PIXELS)
            except ValueError as e:  # BadImageError
                raise SlideError(str(e)) from e
        h, w = self._array.shape[:2]
        self.level_dimensions = [(int(w), int(h))]
        self.level_downsamples = [1.0]

    def read_region(self, x, y, level, width, height):
        if level != 0:
            raise ValueError(f"{self.path} has one level, asked for level {level}")
        out = np.full((int(height), int(width), 3), 255, np.uint8)
        h, w = self._array.shape[:2]
        x0, y0 = max(int(x), 0), max(int(y), 0)
        x1, y1 = min(int(x) + int(width), w), min(int(y) + int(height), h)
        if x1 > x0 and y1 > y0:
            out[y0 - int(y) : y1 - int(y), x0 - int(x) : x1 - int(x)] = _rgb(np.asarray(self._array[y0:y1, x0:x1]))
        return out

    def close(self):
        self._array = None


def open_slide(path: str, mpp: Optional[float] = None) -> SlideSource:
    """
    Open a slide or image for reading by region.

    Args:
        mpp: micrometres per level-0 pixel; overrides the file's metadata (``--mpp``).

    Raises:
        SlideError: missing, unreadable or unsupported file, or no resolution known.
    """
    import openslide

    if not os.path.isfile(path):
        raise SlideError(f"{path}: no such file")
    try:
        vendor = openslide.OpenSlide.detect_format(path)
    except (openslide.OpenSlideError, OSError):
        vendor = None
    if vendor is not None:
        source = OpenSlideSource(path)
    elif path.lower().endswith((".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")):
        source = ArraySource(path)
    else:
        try:  # OpenSlide's own reason (truncated, unsupported variant, ...)
            OpenSlideSource(path).close()
        except SlideError as e:
            raise SlideError(f"{e}; not a slide OpenSlide reads, nor an image (PNG/JPEG/TIFF/BMP)") from e
        raise SlideError(f"{path}: not a slide OpenSlide reads, nor an image (PNG/JPEG/TIFF/BMP)")
    if mpp is not None:
        if mpp <= 0:
            raise SlideError(f"{path}: --mpp must be positive, got {mpp}")
        if source.mpp is not None and abs(source.mpp[0] - mpp) > 1e-6:
            logger.warning("%s: using --mpp %g instead of the file's %g um/px", path, mpp, source.mpp[0])
        source.mpp = (float(mpp), float(mpp))
    if source.mpp is None:
        source.close()
        raise SlideError(f"{path}: the file does not say its resolution (microns per pixel); pass --mpp")
    return source


def choose_level(level_mpps: Sequence[float], model_mpp: float, tolerance: float = 0.1) -> int:
    """
    The pyramid level to read for a model working at ``model_mpp``: the coarsest level whose
    resolution is at most ``model_mpp * (1 + tolerance)`` (fine enough, no upsampling beyond the
    tolerance); level 0 when even level 0 is coarser than that.
    """
    fine_enough = [i for i, m in enumerate(level_mpps) if m <= model_mpp * (1 + tolerance)]
    if not fine_enough:
        return 0
    return max(fine_enough, key=lambda i: level_mpps[i])
