# -*- coding: utf-8 -*-
"""
Per-nucleus measurements in the slide pipeline (d2_nucleus/slide/measure.py): the slide table and
GeoJSON hold the values a plain-image run (tools/predict.py --measurements, MeasurementWriter)
gives for the same nuclei, in level-0 px and um also when tiles are resampled; summary and figure.
"""
import json
import os

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from detectron2.structures import Boxes, Instances

from d2_nucleus.data.synthetic_slide import write_synthetic_slide
from d2_nucleus.measurements import COLOUR_COLUMNS, SHAPE_COLUMNS, BoxMasks, measure_nuclei
from d2_nucleus.measurements.outputs import MeasurementWriter
from d2_nucleus.slide import segment_slide
from d2_nucleus.utils import rle as rle_util
from test_slide import LabelSegmenter, _cfg, _labels_to_rgb

MEASURED = [c for c in SHAPE_COLUMNS + COLOUR_COLUMNS]


def _by_box(columns):
    """Row index of each nucleus keyed by its level-0 box."""
    keys = zip(columns["bbox_x0"], columns["bbox_y0"], columns["bbox_x1"], columns["bbox_y1"])
    return {tuple(int(v) for v in k): i for i, k in enumerate(keys)}


@pytest.fixture(scope="module")
def label_slide(tmp_path_factory):
    from test_slide import _label_slide

    path = str(tmp_path_factory.mktemp("slides") / "labels.svs")
    return path, _label_slide(path)


def test_slide_measurements_equal_plain_image_run(label_slide, tmp_path):
    """No resampling (slide at the model's resolution): every column equals the per-image predictor's."""
    path, labels = label_slide
    summary = segment_slide(LabelSegmenter(), _cfg(), path, str(tmp_path / "slide"), progress=False)
    assert summary["resampled"] is False and summary["stain"] == "ruifrok"
    table = pq.read_table(str(tmp_path / "slide" / "labels.parquet")).to_pydict()
    table = {k: np.asarray(v) for k, v in table.items()}

    # the plain-image run: the same nuclei (the stand-in model is perfect) on the whole image
    ids = [i for i in np.unique(labels) if i]
    rles = [rle_util.encode(labels == i) for i in ids]
    plain = MeasurementWriter(str(tmp_path / "plain"), mpp=0.252).write(
        "labels", _labels_to_rgb(labels), rles, [0.9] * len(ids))
    expected = plain["columns"]

    assert len(table["id"]) == len(ids) == summary["nuclei"]
    slide_rows, plain_rows = _by_box(table), _by_box(expected)
    assert slide_rows.keys() == plain_rows.keys()
    order = [slide_rows[k] for k in plain_rows]
    for name in MEASURED:
        np.testing.assert_allclose(table[name][order], expected[name], rtol=1e-9, atol=1e-9, err_msg=name)
    # the label colours differ per nucleus: the colour columns come from each nucleus' own pixels
    assert len(np.unique(table["blue_mean"])) > 200

    # GeoJSON: the same values under QuPath's names, feature i = table row i
    with open(tmp_path / "slide" / "labels.geojson") as f:
        features = json.load(f)["features"]
    for k, j in plain_rows.items():
        got = features[slide_rows[k]]["properties"]["measurements"]
        assert got.pop("Detection score") == pytest.approx(0.9)
        want = plain["qupath"][j]
        assert got.keys() == want.keys() and "Area µm^2" in got and "Hematoxylin OD mean" in got
        for name in want:
            assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-9), name

    # per-slide summary (density per mm^2 of tissue, median and IQR) and figure
    stats = summary["measurements"]
    area = table["area_um2"]
    assert stats["area_um2"]["median"] == pytest.approx(np.median(area))
    assert stats["area_um2"]["iqr"] == pytest.approx(np.subtract(*np.percentile(area, [75, 25])))
    assert stats["circularity"]["n"] == len(area) and "hematoxylin_od_mean" in stats
    assert summary["nuclei_per_mm2_tissue"] == pytest.approx(len(area) / summary["tissue_mm2"])
    with open(tmp_path / "slide" / "labels.summary.json") as f:
        assert json.load(f)["measurements"] == json.loads(json.dumps(stats))
    figure = cv2.imread(str(tmp_path / "slide" / "labels.measurements.png"))
    assert figure is not None and figure.shape[0] > 300


def test_no_measurements_and_resume_across_settings(label_slide, tmp_path):
    path, _ = label_slide
    out = str(tmp_path / "out")
    summary = segment_slide(LabelSegmenter(), _cfg("SLIDE.MEASUREMENTS.ENABLED", "False"), path, out, progress=False)
    assert summary["measurements"] is None and summary["stain"] is None
    names = pq.read_schema(os.path.join(out, "labels.parquet")).names
    assert "perimeter_px" not in names and "hematoxylin_od_mean" not in names and "area_um2" in names
    assert not os.path.exists(os.path.join(out, "labels.measurements.png"))
    with open(os.path.join(out, "labels.geojson")) as f:
        assert set(json.load(f)["features"][0]["properties"]["measurements"]) == {"Detection score"}

    # a run interrupted without measurements is not resumed with them (the records lack them)
    out2 = str(tmp_path / "out2")
    with pytest.raises(KeyboardInterrupt):
        segment_slide(LabelSegmenter(fail_after=2), _cfg("SLIDE.MEASUREMENTS.ENABLED", "False"), path, out2,
                      progress=False)
    summary = segment_slide(LabelSegmenter(), _cfg(), path, out2, progress=False)
    assert summary["resumed_tiles"] == 0 and "perimeter_um" in pq.read_schema(os.path.join(out2, "labels.parquet")).names


class DarkSegmenter:
    """Stand-in model for dark nuclei on light glass: connected components of pixels darker than half-way."""

    input_format = "RGB"

    def __call__(self, images):
        outputs = []
        for image in images:
            n, comp = cv2.connectedComponents((image.min(axis=2) < 138).astype(np.uint8), connectivity=4)
            inst = Instances(image.shape[:2])
            inst.pred_rles = [rle_util.encode(comp == i) for i in range(1, n)]
            boxes = rle_util.to_bbox(inst.pred_rles) if n > 1 else np.zeros((0, 4))
            boxes[:, 2:] += boxes[:, :2]
            inst.pred_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
            inst.scores = torch.full((n - 1,), 0.9)
            inst.pred_classes = torch.zeros(n - 1, dtype=torch.int64)
            outputs.append(inst)
        return outputs


def test_resampled_slide_measurements_in_level0_units(tmp_path):
    """
    A slide at 0.125 um/px segmented at the model's 0.25 um/px: shapes are measured on the
    working (resampled) masks and reported in level-0 px and um; they agree with measurements at
    level 0 up to the resampling, and the px and um columns agree exactly.
    """
    rng = np.random.default_rng(3)
    h, w = 1100, 1300
    image = np.full((h, w, 3), 235, np.uint8)
    labels = np.zeros((h, w), np.int32)
    k = 0
    for cy in range(45, h - 45, 80):
        for cx in range(45, w - 45, 80):
            k += 1
            axes = (int(rng.integers(18, 30)), int(rng.integers(12, 22)))
            angle = float(rng.uniform(0, 180))
            cv2.ellipse(labels, (cx, cy), axes, angle, 0, 360, k, -1)
            cv2.ellipse(image, (cx, cy), axes, angle, 0, 360, (90, 40, 150), -1)
    path = str(tmp_path / "fine.svs")
    write_synthetic_slide(path, w, h, [(image, 0, 0)], mpp=0.125, compression="zlib", glass=(235, 235, 235))
    summary = segment_slide(DarkSegmenter(), _cfg("SLIDE.OVERLAP", "64"), path, str(tmp_path / "out"), progress=False)
    assert summary["resampled"] is True and summary["working_mpp"] == pytest.approx(0.25)
    assert summary["nuclei"] == k and summary["nuclei_cut_at_tile_edges"] == 0
    t = {n: np.asarray(v) for n, v in pq.read_table(str(tmp_path / "out" / "fine.parquet")).to_pydict().items()}
    for name in ("perimeter", "major_axis_length", "minor_axis_length", "equivalent_diameter"):
        np.testing.assert_allclose(t[f"{name}_um"], t[f"{name}_px"] * 0.125, rtol=1e-9)
    np.testing.assert_allclose(t["area_um2"], t["area_px"] * 0.125**2, rtol=0.01)

    ref = measure_nuclei(BoxMasks.from_rles([rle_util.encode(labels == i) for i in range(1, k + 1)]), image, mpp=0.125)
    # match by centroid (level-0 px)
    d = np.hypot(t["centroid_x"][:, None] - ref["centroid_x"][None], t["centroid_y"][:, None] - ref["centroid_y"][None])
    j = d.argmin(axis=1)
    assert d[np.arange(k), j].max() < 1.0 and len(set(j.tolist())) == k
    for name, rtol in (("area_um2", 0.08), ("equivalent_diameter_um", 0.04), ("major_axis_length_um", 0.06),
                       ("minor_axis_length_um", 0.08), ("perimeter_um", 0.15)):
        np.testing.assert_allclose(t[name], ref[name][j], rtol=rtol, err_msg=name)
    # (eccentricity and orientation are left out: near-circles make them unstable under resampling;
    # the axis lengths above carry the same information)
    np.testing.assert_allclose(t["hematoxylin_od_mean"], ref["hematoxylin_od_mean"][j], rtol=0.1)

    # Macenko stain vectors, estimated once from the slide's thumbnail, are used and reported
    macenko = segment_slide(DarkSegmenter(), _cfg("SLIDE.OVERLAP", "64", "SLIDE.MEASUREMENTS.STAIN", "macenko"), path,
                            str(tmp_path / "macenko"), progress=False)
    assert macenko["stain"] == "macenko" and np.asarray(macenko["stain_vectors"]).shape == (3, 3)
    od = np.asarray(pq.read_table(str(tmp_path / "macenko" / "fine.parquet"))["hematoxylin_od_mean"])
    assert np.isfinite(od).all() and not np.allclose(od, t["hematoxylin_od_mean"])
