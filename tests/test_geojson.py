# -*- coding: utf-8 -*-
"""
GeoJSON geometry (d2_nucleus/export/geojson.py): polygons follow pixel edges, so each one's area is
its mask's pixel count, rasterising it by pixel centres gives the mask back, and it is valid
(shapely), on random masks with holes and diagonal contacts and on model predictions.
"""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import shapely
from shapely.geometry import shape

from d2_nucleus.export.geojson import mask_to_geometry, rles_to_geojson

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rasterise(geometry, height, width, x0=0, y0=0):
    """The pixels whose centres are inside ``geometry`` (the module's documented convention)."""
    ys, xs = np.mgrid[y0:y0 + height, x0:x0 + width]
    return shapely.contains_xy(shape(geometry), xs + 0.5, ys + 0.5)


def _check(mask, geometry, x0=0, y0=0):
    g = shape(geometry)
    assert g.is_valid, shapely.is_valid_reason(g)
    assert g.area == mask.sum()
    np.testing.assert_array_equal(_rasterise(geometry, *mask.shape, x0, y0), mask.astype(bool))
    polygons = geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    for rings in polygons:
        for i, ring in enumerate(rings):
            assert ring[0] == ring[-1] and len(ring) >= 5
            assert shapely.is_ccw(shapely.LinearRing(ring)) == (i == 0)  # RFC 7946 right-hand rule
            steps = np.diff(np.asarray(ring), axis=0)
            assert ((steps != 0).sum(axis=1) == 1).all()  # pixel edges only: no diagonal steps
            assert (np.asarray(ring) == np.round(ring)).all()  # pixel corners


@pytest.mark.parametrize("seed", range(6))
def test_random_masks_area_validity_and_pixels(seed):
    rng = np.random.default_rng(seed)
    for _ in range(300):
        h, w = rng.integers(1, 16, 2)
        mask = rng.random((h, w)) < rng.uniform(0.2, 0.95)  # holes, diagonal contacts, several parts
        if not mask.any():
            continue
        x0, y0 = (int(v) for v in rng.integers(0, 50, 2))
        _check(mask, mask_to_geometry(mask, x0, y0), x0, y0)


def test_shapes_with_holes_and_diagonal_contacts():
    ring = np.ones((7, 7), bool)
    ring[2:5, 2:5] = False  # one hole
    g = mask_to_geometry(ring)
    assert g["type"] == "Polygon" and len(g["coordinates"]) == 2
    _check(ring, g)
    assert shape(g).area == 40 and shape(g).exterior.length == 28

    diagonal = np.array([[1, 0], [0, 1]], bool)  # two pixels meeting at a corner: two polygons
    g = mask_to_geometry(diagonal)
    assert g["type"] == "MultiPolygon" and len(g["coordinates"]) == 2
    _check(diagonal, g)

    # a ring closed only through a diagonal contact: the hole touches the exterior at one corner
    u = np.array([[1, 1, 1, 0], [1, 0, 1, 0], [1, 1, 0, 1], [0, 0, 1, 1]], bool)
    g = mask_to_geometry(u)
    _check(u, g)

    checkerboard = (np.indices((9, 9)).sum(axis=0) % 2).astype(bool)
    g = mask_to_geometry(checkerboard)
    assert g["type"] == "MultiPolygon" and len(g["coordinates"]) == checkerboard.sum()
    _check(checkerboard, g)

    one = mask_to_geometry(np.ones((1, 1), np.uint8), 3, 4)
    assert one["type"] == "Polygon" and len(one["coordinates"]) == 1
    ring = one["coordinates"][0]
    start = ring.index([3, 4])
    assert ring[start:-1] + ring[:start] == [[3, 4], [4, 4], [4, 5], [3, 5]]  # the pixel's corners, in order
    line = np.ones((1, 6), np.uint8)  # one pixel wide: area 6, not 0
    _check(line, mask_to_geometry(line))
    with pytest.raises(ValueError, match="empty"):
        mask_to_geometry(np.zeros((3, 3), np.uint8))


def test_scale_maps_pixel_corners_to_level0():
    mask = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1]], bool)
    g = mask_to_geometry(mask, 10, 20, scale=4.0)
    s = shape(g)
    assert s.is_valid and s.area == mask.sum() * 16
    assert s.bounds == (40.0, 80.0, 52.0, 92.0)
    odd = shape(mask_to_geometry(mask, 10, 20, scale=1.37))
    assert odd.is_valid and odd.area == pytest.approx(mask.sum() * 1.37**2, rel=1e-3)


def _check_detections(rles):
    """rles_to_geojson of detections: one feature each, area == pixel count, valid, same pixels."""
    rles = [dict(r, counts=r["counts"].decode() if isinstance(r["counts"], bytes) else r["counts"]) for r in rles]
    masks = [mask_util.decode(r).astype(bool) for r in rles]
    collection = json.loads(json.dumps(rles_to_geojson(rles, np.ones(len(rles)))))
    kept = [m for m in masks if m.any()]
    assert len(collection["features"]) == len(kept)
    invalid = 0
    for feature, m in zip(collection["features"], kept):
        g = shape(feature["geometry"])
        invalid += not g.is_valid
        assert g.area == m.sum()
        np.testing.assert_array_equal(_rasterise(feature["geometry"], *m.shape), m)
    assert invalid == 0
    return collection


def test_untrained_model_predictions(tmp_path):
    """Untrained detections are ragged (holes, fragments, diagonal contacts): the worst case."""
    import torch

    from d2_nucleus.config import get_nucleus_cfg
    from d2_nucleus.data.synthetic import render_nuclei_image
    from d2_nucleus.engine.predictor import NucleusPredictor
    from weights import save_untrained_weights

    opts = [
        "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.FPN.OUT_CHANNELS", "64",
        "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN", "MODEL.DEVICE", "cpu",
        "MODEL.RPN.PRE_NMS_TOPK_TEST", "300", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "60",
        "NUCLEUS.MASK_THRESHOLD", "0.5",
    ]
    config = os.path.join(ROOT, "configs", "Base-Nucleus-RCNN-FPN.yaml")
    cfg = get_nucleus_cfg(config, opts + ["MODEL.WEIGHTS", ""])
    cfg.MODEL.WEIGHTS = save_untrained_weights(cfg, tmp_path / "model.pth", seed=3)
    cfg.freeze()
    image, _ = render_nuclei_image(np.random.default_rng(1), 192, 192, 40)
    with torch.no_grad():
        rles = list(NucleusPredictor(cfg)([image[:, :, ::-1].copy()])[0].pred_rles)
    assert len(rles) >= 20
    collection = _check_detections(rles)
    kinds = [f["geometry"]["type"] for f in collection["features"]]
    holes = sum(len(f["geometry"]["coordinates"]) > 1 for f in collection["features"] if f["geometry"]["type"] == "Polygon")
    print(f"{len(kinds)} untrained detections: {kinds.count('MultiPolygon')} MultiPolygons, {holes} with holes")


def test_trained_model_predictions():
    """A trained checkpoint's detections on a real image ($D2_NUCLEUS_TEST_WEIGHTS: a .pth of
    configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml, and $D2_NUCLEUS_RAW_DATA)."""
    weights = os.environ.get("D2_NUCLEUS_TEST_WEIGHTS")
    raw = os.environ.get("D2_NUCLEUS_RAW_DATA")
    if not weights or not raw:
        pytest.skip("$D2_NUCLEUS_TEST_WEIGHTS and $D2_NUCLEUS_RAW_DATA are not both set")
    import glob

    import torch

    from d2_nucleus.config import get_inference_cfg
    from d2_nucleus.data.image_io import read_image
    from d2_nucleus.engine.predictor import NucleusPredictor

    config = os.path.join(ROOT, "configs", "cpu", "mask_rcnn_R_18_FPN_cpu_gn.yaml")
    cfg = get_inference_cfg(config, ["SOLVER.CPU_BF16", "False"], weights, "cpu")
    cfg.freeze()
    path = sorted(glob.glob(os.path.join(raw, "test", "*", "images", "*.png"))
                  or glob.glob(os.path.join(raw, "**", "*.png"), recursive=True))[0]
    with torch.no_grad():
        rles = list(NucleusPredictor(cfg)([read_image(path)])[0].pred_rles)
    assert len(rles) >= 100
    _check_detections(rles)


def test_geometry_to_mask_inverts_the_tracer():
    from d2_nucleus.export.geojson import geometry_to_mask

    rng = np.random.default_rng(7)
    for _ in range(500):
        h, w = rng.integers(1, 16, 2)
        mask = rng.random((h, w)) < rng.uniform(0.2, 0.95)
        if not mask.any():
            continue
        x0, y0 = (int(v) for v in rng.integers(0, 50, 2))
        ys, xs = np.nonzero(mask)
        back, bx, by = geometry_to_mask(mask_to_geometry(mask, x0, y0))
        assert (bx, by) == (x0 + xs.min(), y0 + ys.min())
        np.testing.assert_array_equal(back, mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1])
    # any polygon (e.g. drawn in QuPath): the pixels whose centres are inside, as shapely says
    triangle = {"type": "Polygon", "coordinates": [[[0.3, 0.2], [9.7, 2.5], [3.1, 8.9], [0.3, 0.2]]]}
    back, bx, by = geometry_to_mask(triangle)
    np.testing.assert_array_equal(back, _rasterise(triangle, *back.shape, bx, by))
    assert back.sum() == _rasterise(triangle, 12, 12).sum()
    assert geometry_to_mask({"type": "Polygon", "coordinates": [[[0.1, 0.1], [0.4, 0.1], [0.4, 0.4], [0.1, 0.1]]]}) is None
    with pytest.raises(ValueError, match="Point"):
        geometry_to_mask({"type": "Point", "coordinates": [1, 2]})
