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
    """13,500 x 13,500 is beyond Pillow's decompression-bomb error (2 x 89.5 M pixels)."""
    side = 13_500
    assert side * side > 2 * Image.MAX_IMAGE_PIXELS
    path = str(tmp_path / "big.png")
    grey = np.zeros((side, side), np.uint8)
    grey[-1, -1] = 200
    cv2.imwrite(path, grey)
    del grey
    limit = Image.MAX_IMAGE_PIXELS
    image = read_image(path, "BGR")
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
