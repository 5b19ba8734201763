# -*- coding: utf-8 -*-
"""
Reading one-nucleus mask PNGs into a :class:`BinaryMask` (the mask cropped to its tight bounding box).

A nucleus covers ~0.01-0.1% of its 1000x1000 mask, and libpng spends most of its time undoing the
PNG row filters of a megapixel that is almost all zeros (BENCHMARKS.md "Data pipeline"). Masks stored as 8-bit grayscale,
non-interlaced, with the row filters "None" or "Sub" (what the real dataset uses, and what many
writers choose for such images) take a fast path instead: the zlib stream is inflated piece by
piece, the rows that hold foreground are found on the still-filtered bytes (for these filters a
filtered row is all zero exactly when the pixel row is), and only those rows are kept and unfiltered. Every other PNG (colour,
16-bit, palette, interlaced, other filters), and any file the fast path cannot parse, is read by
OpenCV (``cv2.IMREAD_UNCHANGED``), which is also the authority on corrupt files. Both paths give
identical pixels (tests compare them on every mask of the real dataset).
"""
import functools
import struct
import zlib
from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

from .raw import RawDataError

__all__ = ["BinaryMask", "read_mask", "decode_mask", "read_image_size"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_FAST_PIXELS = 1 << 28
_CHUNK_BYTES = 1 << 18

try:  # zlib-ng (optional) inflates the long zero runs of these masks faster than zlib (BENCHMARKS.md)
    from zlib_ng import zlib_ng as _zlib
except ImportError:  # pragma: no cover - depends on the environment
    _zlib = zlib


@dataclass
class BinaryMask:
    """
    A binary mask of an ``height`` x ``width`` image, stored as its tight bounding-box crop.

    ``crop`` is a bool array of shape (h, w) placed at rows ``y0:y0+h``, columns ``x0:x0+w``; an
    empty mask has a (0, 0) crop. ``num_values`` is the number of distinct non-zero values the
    source had (more than 1: not binary; foreground is value > 0 regardless).
    """

    height: int
    width: int
    y0: int
    x0: int
    crop: np.ndarray
    num_values: int = 1

    @property
    def is_empty(self) -> bool:
        return self.crop.size == 0

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.crop))

    @property
    def bbox(self) -> Tuple[int, int, int, int]:
        """Tight XYWH box in pixel units (COCO convention)."""
        h, w = self.crop.shape
        return (self.x0, self.y0, w, h)

    def to_full(self) -> np.ndarray:
        """The (height, width) uint8 mask with values {0, 1}."""
        full = np.zeros((self.height, self.width), np.uint8)
        h, w = self.crop.shape
        full[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = self.crop
        return full

    @classmethod
    def from_array(cls, values: np.ndarray) -> "BinaryMask":
        """From a 2-D array of values (foreground = value > 0)."""
        return _from_values(values, 0, values.shape[0], values.shape[1])


def _from_values(band: np.ndarray, row_offset: int, height: int, width: int) -> BinaryMask:
    """Crop the rows ``band`` (pixel values of image rows row_offset...) to its foreground."""
    fg = band > 0
    rows = np.flatnonzero(fg.any(axis=1))
    if rows.size == 0:
        return BinaryMask(height, width, 0, 0, np.zeros((0, 0), bool), 0)
    cols = np.flatnonzero(fg.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = fg[r0:r1, c0:c1]
    vals = band[r0:r1, c0:c1][crop]
    lo, hi = vals.min(), vals.max()
    num_values = 1 if lo == hi else len(np.unique(vals))
    return BinaryMask(height, width, int(row_offset + r0), int(c0), np.ascontiguousarray(crop), num_values)


@functools.lru_cache(maxsize=8)
def _empty_rows(n: int, stride: int, filter_type: int) -> bytes:
    """The filtered bytes of ``n`` all-zero rows that use one filter type."""
    return (bytes([filter_type]) + bytes(stride - 1)) * n


def _decode_fast(data: bytes) -> Optional[BinaryMask]:
    """The fast path; None when the file is not in the supported subset or does not parse."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    pos, n = 8, len(data)
    header, idat, ended = None, [], False
    while pos + 12 <= n:
        (length,) = struct.unpack_from(">I", data, pos)
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            return None
        body = data[pos + 8 : pos + 8 + length]
        critical = not (ctype[0] & 0x20)
        if critical:
            (crc,) = struct.unpack_from(">I", data, end - 4)
            if zlib.crc32(body, zlib.crc32(ctype)) != crc:
                return None
        if ctype == b"IHDR":
            if header is not None or length != 13:
                return None
            header = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            ended = True
            break
        elif critical or ctype == b"tRNS":
            return None  # PLTE or an unknown critical chunk; tRNS changes IMREAD_UNCHANGED
        pos = end
    if header is None or not ended or not idat:
        return None
    width, height, depth, color, compression, filtering, interlace = header
    if (depth, color, compression, filtering, interlace) != (8, 0, 0, 0, 0):
        return None
    if width == 0 or height == 0 or height * (width + 1) > _MAX_FAST_PIXELS:
        return None
    stride = width + 1
    # Inflate in pieces of whole rows (~256 KiB) and keep only the rows that hold foreground: ~2x
    # faster with zlib than one megapixel buffer, whose fresh pages cost more than the inflating.
    step = max(1, _CHUNK_BYTES // stride) * stride
    inflater = _zlib.decompressobj()
    tail, pending, row, kept = b"".join(idat), b"", 0, []
    try:
        while True:
            out = inflater.decompress(tail, step)
            tail = inflater.unconsumed_tail
            chunk = pending + out if pending else out
            n = len(chunk) // stride
            if n and len(chunk) == n * stride and chunk[0] <= 1 and chunk == _empty_rows(n, stride, chunk[0]):
                row += n  # all rows empty (one memcmp); the common case
            elif n:
                if row + n > height:
                    return None
                rows = np.frombuffer(chunk, np.uint8, n * stride).reshape(n, stride)
                if rows[:, 0].max() > 1:
                    return None  # Up / Average / Paeth rows: leave them to libpng
                # For "None" and "Sub" rows, the filtered row is all zero iff the pixel row is.
                nonzero = np.flatnonzero(rows[:, 1:].any(axis=1))
                if nonzero.size:
                    kept.append((row + int(nonzero[0]), rows[nonzero[0] : nonzero[-1] + 1]))
                row += n
            pending = chunk[n * stride :]
            if inflater.eof or len(out) < step:  # the end, or the input ran out (checked below)
                break
    except _zlib.error:
        return None
    if not inflater.eof or pending or row != height:
        return None
    if not kept:
        return BinaryMask(height, width, 0, 0, np.zeros((0, 0), bool), 0)
    r0 = kept[0][0]
    band_rows = np.zeros((kept[-1][0] + len(kept[-1][1]) - r0, stride), np.uint8)
    for start, rows in kept:
        band_rows[start - r0 : start - r0 + len(rows)] = rows
    band = band_rows[:, 1:]
    sub = band_rows[:, 0] == 1
    if sub.any():
        # Sub: x[i] = f[i] + x[i-1] (mod 256), i.e. a running sum in uint8 arithmetic.
        band[sub] = np.cumsum(band[sub], axis=1, dtype=np.uint8)
    return _from_values(band, r0, height, width)


def _imdecode(data: bytes, path: str) -> np.ndarray:
    arr = None
    if data:
        try:
            arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            arr = None
    if arr is None:
        what = "empty file" if not data else "corrupt, truncated or not a PNG"
        raise RawDataError(path, f"cannot be decoded as an image ({what})")
    return arr


def _decode_opencv(data: bytes, path: str) -> BinaryMask:
    arr = _imdecode(data, path)
    if arr.ndim == 3:
        # Colour mask: foreground where any colour channel is > 0 (alpha is ignored).
        arr = arr[..., : min(arr.shape[2], 3)].max(axis=2)
    return BinaryMask.from_array(arr)


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise RawDataError(path, f"cannot be read ({e.strerror or e})") from None


def decode_mask(data: bytes, path: str = "<bytes>") -> BinaryMask:
    """Decode the bytes of a mask image file (see :func:`read_mask`)."""
    mask = _decode_fast(data)
    return mask if mask is not None else _decode_opencv(data, path)


def read_mask(path: str) -> BinaryMask:
    """
    Read a mask image (foreground = value > 0) as a :class:`BinaryMask`.

    Raises:
        RawDataError: the file cannot be read or decoded.
    """
    return decode_mask(_read_bytes(path), path)


def read_image_size(path: str) -> Tuple[int, int]:
    """
    Decode an image fully (to catch corrupt files) and return its (height, width).

    Raises:
        RawDataError: the file cannot be read or decoded.
    """
    arr = _imdecode(_read_bytes(path), path)
    return int(arr.shape[0]), int(arr.shape[1])
