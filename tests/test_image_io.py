# -*- coding: utf-8 -*-
"""The one image reader (d2_nucleus.data.image_io): large images, the pixel limit, errors."""
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from detectron2.data import detection_utils

from d2_nucleus.data import image_io
from d2_nucleus.data.image_io import BadImageError, read_image


def test_same_pixels_as_detectron2_for_rgb(tmp_path):
    rng = np.random.default_rng(0)
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, rng.integers(0, 255, (37, 53, 3), dtype=np.uint8))
    for fmt in ("BGR", "RGB"):
        np.testing.assert_array_equal(read_image(path, fmt), detection_utils.read_image(path, format=fmt))


def test_large_legitimate_image_reads(tmp_path):
    """13,500 x 13,500 is beyond Pillow's decompression-bomb error (2 x 89.5 M pixels): the slide
    reader's limit reads it; the per-image path (whose model would see it downscaled to
    INPUT.MAX_SIZE_TEST) refuses it and names tools/segment_slides.py."""
    side = 13_500
    assert side * side > 2 * Image.MAX_IMAGE_PIXELS
    path = str(tmp_path / "big.png")
    grey = np.zeros((side, side), np.uint8)
    grey[-1, -1] = 200
    cv2.imwrite(path, grey)
    del grey
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(BadImageError, match="13500x13500.*segment_slides"):
        read_image(path, "BGR")
    image = read_image(path, "BGR", max_pixels=image_io.MAX_SLIDE_IMAGE_PIXELS)
    assert image.shape == (side, side, 3) and image.dtype == np.uint8
    assert tuple(image[-1, -1]) == (200, 200, 200) and image[0, 0].max() == 0
    assert Image.MAX_IMAGE_PIXELS == limit  # Pillow's own guard is left as it was


def test_beyond_the_limit_one_line_error(tmp_path, monkeypatch):
    path = str(tmp_path / "huge.png")
    cv2.imwrite(path, np.zeros((40, 30, 3), np.uint8))
    monkeypatch.setattr(image_io, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(BadImageError) as e:
        read_image(path)
    msg = str(e.value)
    assert msg.startswith(path) and "30x40" in msg and "\n" not in msg


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    missing = str(tmp_path / "nope.png")
    with pytest.raises(BadImageError, match="nope.png"):
        read_image(missing)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(BadImageError, match="bad.png"):
        read_image(str(bad))
    assert os.path.exists(bad)


def png_bomb(path, width, height) -> str:
    """A valid PNG of width x height black RGB pixels, streamed through zlib (a few MB on disk,
    never the decoded image in memory): a decompression bomb."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)  # filter byte + RGB
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", idat))
        f.write(chunk(b"IEND", b""))
    return str(path)


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    """A 20,000 x 20,000 PNG of ~1 MB (1.2 GB decoded, ~6 GB through the per-image path) is refused
    before decoding: one line naming the file, its size, and where large images go."""
    import resource
    import time

    path = png_bomb(tmp_path / "bomb.png", 20_000, 20_000)
    assert os.path.getsize(path) < 2_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    with pytest.raises(BadImageError) as e:
        read_image(path)
    assert time.perf_counter() - t < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: nothing decoded
    msg = str(e.value)
    assert msg.startswith(path) and "20000x20000" in msg and "segment_slides" in msg and "\n" not in msg
    assert image_io.MAX_IMAGE_PIXELS == 12288 * 12288


def test_memory_check_before_decoding(tmp_path, monkeypatch):
    """Within the pixel limit, an image whose decoding needs more memory than is available is
    refused too (instead of the OOM killer)."""
    path = png_bomb(tmp_path / "wide.png", 4000, 3000)
    monkeypatch.setattr(image_io, "_available_memory", lambda: 100 * 2**20)  # 100 MiB free
    with pytest.raises(BadImageError, match=r"wide\.png.*4000x3000.*GiB, more than the 0\.1 GiB"):
        read_image(path)
    monkeypatch.setattr(image_io, "_available_memory", lambda: 0)  # unknown: no check
    assert read_image(path).shape == (3000, 4000, 3)


def test_slide_reader_refuses_bombs_from_the_header(tmp_path, monkeypatch):
    """The slide reader decodes plain images (and compressed TIFFs it cannot memory-map) whole:
    it checks their size first too."""
    import tifffile

    from d2_nucleus.data.slide_readers import SlideError, open_slide

    monkeypatch.setattr(image_io, "MAX_SLIDE_IMAGE_PIXELS", 5000 * 5000)
    path = png_bomb(tmp_path / "big.png", 6000, 5000)
    with pytest.raises(SlideError, match=r"big\.png.*6000x5000.*tiled pyramidal TIFF"):
        open_slide(path, mpp=0.25)
    tif = str(tmp_path / "big.tif")  # deflate strips: not memory-mappable
    tifffile.imwrite(tif, np.zeros((5000, 6000, 3), np.uint8), photometric="rgb", compression="zlib",
                     rowsperstrip=500)
    with pytest.raises(SlideError, match=r"big\.tif.*6000x5000"):
        open_slide(tif, mpp=0.25)
    ok = png_bomb(tmp_path / "ok.png", 4000, 3000)  # within the limit: read as before
    with open_slide(ok, mpp=0.25) as s:
        assert s.dimensions == (4000, 3000)


def test_16_bit_rgb_is_converted_with_a_warning(tmp_path):
    rgb16 = np.random.default_rng(0).integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    for name in ("rgb16.png", "rgb16.tif"):
        path = str(tmp_path / name)
        if name.endswith(".png"):
            cv2.imwrite(path, rgb16[:, :, ::-1])  # cv2 writes BGR
        else:
            import tifffile

            tifffile.imwrite(path, rgb16, photometric="rgb")
        with pytest.warns(UserWarning, match=r"16-bit RGB image converted to 8 bits"):
            image = read_image(path, "RGB")
        np.testing.assert_array_equal(image, (rgb16 >> 8).astype(np.uint8))
    path8 = str(tmp_path / "rgb8.png")
    cv2.imwrite(path8, (rgb16 >> 8).astype(np.uint8))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(path8)  # 8-bit RGB: no warning
