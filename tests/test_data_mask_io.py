"""d2_nucleus.data.mask_io: the fast PNG mask reader agrees with OpenCV, and bad files fail clearly."""
import struct
import zlib

import cv2
import numpy as np
import pytest

from d2_nucleus.data import mask_io
from d2_nucleus.data.mask_io import BinaryMask, decode_mask, read_image_size, read_mask
from d2_nucleus.data.raw import RawDataError


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(ctype)))


def _filter_row(row: np.ndarray, prev: np.ndarray, ftype: int) -> bytes:
    x = row.astype(np.int32)
    a = np.concatenate(([0], x[:-1]))  # left
    b = prev.astype(np.int32)  # up
    c = np.concatenate(([0], b[:-1]))  # up-left
    if ftype == 0:
        f = x
    elif ftype == 1:
        f = x - a
    elif ftype == 2:
        f = x - b
    elif ftype == 3:
        f = x - (a + b) // 2
    else:
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        f = x - pred
    return bytes([ftype]) + (f % 256).astype(np.uint8).tobytes()


def encode_gray_png(img: np.ndarray, filters=(1,), idat_parts: int = 1) -> bytes:
    """A minimal 8-bit grayscale PNG writer with chosen row filters (cycled over the rows)."""
    h, w = img.shape
    prev = np.zeros(w, np.uint8)
    raw = b""
    for y in range(h):
        raw += _filter_row(img[y], prev, filters[y % len(filters)])
        prev = img[y]
    data = zlib.compress(raw, 9)
    parts = np.array_split(np.frombuffer(data, np.uint8), idat_parts)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
    out += _chunk(b"tEXt", b"Comment\x00test")  # ancillary chunks are skipped
    for p in parts:
        out += _chunk(b"IDAT", p.tobytes())
    return out + _chunk(b"IEND", b"")


def _opencv_truth(data: bytes) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2)
    return (arr > 0).astype(np.uint8)


def _random_mask(rng, h, w, value=255):
    m = np.zeros((h, w), np.uint8)
    cx, cy = rng.integers(0, w), rng.integers(0, h)
    cv2.ellipse(m, (int(cx), int(cy)), (int(rng.integers(1, 9)), int(rng.integers(1, 9))), 0, 0, 360, value, -1)
    return m


@pytest.mark.parametrize("filters", [(0,), (1,), (0, 1), (2,), (3,), (4,), (1, 2, 3, 4, 0)])
@pytest.mark.parametrize("idat_parts", [1, 3])
def test_fast_reader_matches_opencv(filters, idat_parts):
    rng = np.random.default_rng(len(filters) * 10 + filters[0] + idat_parts)
    for _ in range(10):
        m = _random_mask(rng, 37, 53)
        data = encode_gray_png(m, filters, idat_parts)
        got = decode_mask(data)
        assert np.array_equal(got.to_full(), _opencv_truth(data))
        fast = mask_io._decode_fast(data)
        # Only None/Sub rows take the fast path; the rest go to OpenCV.
        assert (fast is not None) == set(filters).issubset({0, 1})


@pytest.mark.parametrize("use_stdlib_zlib", [True, False])
def test_fast_reader_with_either_inflater(monkeypatch, use_stdlib_zlib):
    if use_stdlib_zlib:
        monkeypatch.setattr(mask_io, "_zlib", zlib)
    rng = np.random.default_rng(5)
    m = _random_mask(rng, 100, 120)
    data = encode_gray_png(m, (1,))
    got = mask_io._decode_fast(data)
    assert got is not None and np.array_equal(got.to_full(), (m > 0).astype(np.uint8))


def test_opencv_written_masks(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(20):
        m = _random_mask(rng, 64, 80, value=int(rng.choice([1, 128, 255])))
        path = str(tmp_path / f"m{i}.png")
        cv2.imwrite(path, m)
        got = read_mask(path)
        assert np.array_equal(got.to_full(), (cv2.imread(path, cv2.IMREAD_UNCHANGED) > 0).astype(np.uint8))
        assert got.num_values == 1


def test_binary_mask_geometry():
    m = np.zeros((10, 12), np.uint8)
    m[2:5, 3:9] = 255
    m[4, 9] = 255
    bm = BinaryMask.from_array(m)
    assert bm.bbox == (3, 2, 7, 3)
    assert bm.area == 19
    assert (bm.y0, bm.x0) == (2, 3)
    assert np.array_equal(bm.to_full(), (m > 0).astype(np.uint8))
    # touching every border
    full = np.full((4, 5), 7, np.uint8)
    bm = decode_mask(encode_gray_png(full))
    assert bm.bbox == (0, 0, 5, 4) and bm.area == 20


def test_empty_and_non_binary():
    empty = decode_mask(encode_gray_png(np.zeros((8, 9), np.uint8)))
    assert empty.is_empty and empty.area == 0 and (empty.height, empty.width) == (8, 9)
    m = np.zeros((8, 9), np.uint8)
    m[1:3, 1:4] = 255
    m[5, 5] = 17
    got = decode_mask(encode_gray_png(m))
    assert got.num_values == 2 and got.area == 7


def test_colour_and_16bit_masks(tmp_path):
    m = np.zeros((20, 30, 3), np.uint8)
    m[2:6, 3:9, 1] = 255  # green only
    cv2.imwrite(str(tmp_path / "rgb.png"), m)
    got = read_mask(str(tmp_path / "rgb.png"))
    assert got.area == 24 and got.bbox == (3, 2, 6, 4)
    m16 = np.zeros((20, 30), np.uint16)
    m16[10:12, 0:3] = 65535
    cv2.imwrite(str(tmp_path / "m16.png"), m16)
    got = read_mask(str(tmp_path / "m16.png"))
    assert got.area == 6 and got.bbox == (0, 10, 3, 2)


def test_corrupt_files(tmp_path):
    m = np.zeros((40, 40), np.uint8)
    m[5:20, 5:20] = 255
    good = encode_gray_png(m)
    cases = {
        "truncated.png": good[: len(good) // 2],
        "garbage.png": b"this is not a png at all",
        "empty.png": b"",
        "badcrc.png": good[:-20] + bytes([good[-20] ^ 0xFF]) + good[-19:],
    }
    # flip a byte inside the IDAT body (CRC then fails)
    i = good.index(b"IDAT") + 10
    cases["badidat.png"] = good[:i] + bytes([good[i] ^ 0x55]) + good[i + 1 :]
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(RawDataError) as e:
            read_mask(str(path))
        assert name in str(e.value)
    with pytest.raises(RawDataError, match="cannot be read"):
        read_mask(str(tmp_path / "missing.png"))
    with pytest.raises(RawDataError, match="cannot be decoded"):
        read_image_size(str(tmp_path / "garbage.png"))


def test_read_image_size(tmp_path):
    cv2.imwrite(str(tmp_path / "img.png"), np.zeros((13, 17, 3), np.uint8))
    assert read_image_size(str(tmp_path / "img.png")) == (13, 17)
