# -*- coding: utf-8 -*-
"""d2_nucleus.data.resample: factor, sizes, and instance masks resampled with their areas."""
import numpy as np
import pytest

from d2_nucleus.data.importers.label_images import label_crops
from d2_nucleus.data.rasterize import instance_crops, paint_instances
from d2_nucleus.data.resample import check_mpp, resample_crops, resample_image, scale_factor, target_size
from import_data import synthetic_image


def test_factor_tolerance_and_sizes():
    assert scale_factor(0.25, 0.5) == 0.5 and scale_factor(0.5, 0.25) == 2.0
    assert scale_factor(0.2527, 0.25, tolerance=0.1) == 1.0  # within SLIDE.MPP_TOLERANCE's 10%
    assert scale_factor(0.2527, 0.25) == pytest.approx(1.0108)
    assert target_size(1000, 999, 0.5) == (500, 500) and target_size(7, 9, 1.0) == (7, 9)
    with pytest.raises(ValueError, match="352.778"):
        check_mpp(25400 / 72, "TIFF tags")  # the 72 dpi default of many TIFF writers
    img = np.zeros((100, 60, 3), np.uint8)
    assert resample_image(img, 50, 30).shape == (50, 30, 3) and resample_image(img, 200, 120).shape == (200, 120, 3)


def _resampled_labels(labels, shape):
    values, crops = label_crops(labels)
    out = resample_crops(crops, labels.shape, shape)
    painted = paint_instances(out, *shape)
    boxes = [None if c is None else (c[1], c[2], c[0].shape[1], c[0].shape[0]) for c in out]
    return painted, values, out, instance_crops(painted, boxes)


@pytest.mark.parametrize("factor", [0.5, 0.4, 2.0, 1.37])
def test_instance_areas_scale_by_factor_squared(factor):
    _, labels = synthetic_image(3, 256, 60)
    h, w = round(256 * factor), round(256 * factor)
    painted, values, before, final = _resampled_labels(labels, (h, w))
    src_area = np.bincount(labels.ravel())[values]
    dst_area = np.array([0 if f is None else f[0].sum() for f in final])
    # every nucleus survives and stays distinct; the total area scales by factor^2 within 2%,
    # each nucleus of 100+ px within 15%
    assert (dst_area > 0).all()
    assert dst_area.sum() / (src_area.sum() * (w / 256) * (h / 256)) == pytest.approx(1.0, abs=0.02)
    big = src_area >= 100
    ratio = dst_area[big] / (src_area[big] * (w / 256) * (h / 256))
    assert np.abs(ratio - 1).max() < 0.15 and abs(np.median(ratio) - 1) < 0.05


def test_upsampling_by_two_is_exact_and_back():
    _, labels = synthetic_image(4, 96, 15)
    up, *_ = _resampled_labels(labels, (192, 192))
    np.testing.assert_array_equal(up, np.kron(labels, np.ones((2, 2), np.int32)))
    down, *_ = _resampled_labels(up, (96, 96))
    np.testing.assert_array_equal(down, labels)
