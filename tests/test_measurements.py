# -*- coding: utf-8 -*-
"""Per-nucleus measurements against scikit-image (regionprops, rgb2hed), units, summaries, outputs."""
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely.geometry
from PIL import Image
from skimage.color import combine_stains, rgb2hed
from skimage.draw import ellipse
from skimage.measure import regionprops

from d2_nucleus.export.geojson import rles_to_geojson
from d2_nucleus.measurements import BoxMasks, macenko_stain_matrix, measure_nuclei, separate_stains
from d2_nucleus.measurements.figure import write_distributions
from d2_nucleus.measurements.outputs import MeasurementWriter
from d2_nucleus.measurements.qupath import qupath_measurements
from d2_nucleus.measurements.stain import RUIFROK_JOHNSTON, stain_conversion
from d2_nucleus.measurements.summary import read_summary_columns, summarize
from d2_nucleus.utils import rle as rle_util

TOL = 1e-6  # every measurement, the perimeter included, matches regionprops to ~1e-13


def _random_mask(rng, kind):
    if kind == "pixel":
        return np.ones((1, 1), bool)
    if kind == "hline":
        return np.ones((1, int(rng.integers(2, 12))), bool)
    if kind == "vline":
        return np.ones((int(rng.integers(2, 12)), 1), bool)
    if kind == "diagonal":
        return np.eye(int(rng.integers(2, 9)), dtype=bool)
    if kind == "noise":  # several parts, holes
        h, w = rng.integers(2, 25, 2)
        return rng.random((h, w)) < 0.6
    if kind == "square":
        n = int(rng.integers(2, 8))
        return np.ones((n, n), bool)
    # an ellipse, rotated, with holes
    h, w = rng.integers(5, 30, 2)
    m = np.zeros((h, w), bool)
    rr, cc = ellipse(h / 2 - 0.5, w / 2 - 0.5, h / 2, w / 2, shape=(h, w), rotation=rng.uniform(-np.pi, np.pi))
    m[rr, cc] = True
    for _ in range(int(rng.integers(0, 3))):
        y, x = rng.integers(0, h), rng.integers(0, w)
        m[max(0, y - 1) : y + 2, max(0, x - 1) : x + 1] = False
    if not m.any():
        m[h // 2, w // 2] = True
    return m


KINDS = ("pixel", "hline", "vline", "diagonal", "noise", "square", "ellipse", "ellipse", "ellipse")


def _scene(seed=0, cells=12, cell=30):
    """
    Nuclei in a grid of cells without gaps (neighbours may touch), the first row / column /
    last row / column pushed against the image border; returns masks, offsets, label map, image.
    """
    rng = np.random.default_rng(seed)
    size = cells * cell
    labels = np.zeros((size, size), np.int32)
    masks, x0, y0 = [], [], []
    for gy in range(cells):
        for gx in range(cells):
            m = _random_mask(rng, KINDS[int(rng.integers(len(KINDS)))])
            h, w = m.shape
            # against the cell's far edge for the last row / column (the image border)
            y = gy * cell + (cell - h if gy == cells - 1 else (0 if gy == 0 else int(rng.integers(0, cell - h + 1))))
            x = gx * cell + (cell - w if gx == cells - 1 else (0 if gx == 0 else int(rng.integers(0, cell - w + 1))))
            labels[y : y + h, x : x + w][m] = len(masks) + 1
            # the box need not be tight: pad some masks with empty margins
            if rng.random() < 0.3:
                m = np.pad(m, ((1, 2), (0, 1)))
                y -= 1  # (at the border the box starts outside the image)
            masks.append(m)
            x0.append(x)
            y0.append(y)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    image[rng.random((size, size)) < 0.02] = 0  # log(0): clipped to 1e-6 as in scikit-image
    return masks, np.array(x0), np.array(y0), labels, image


def _reference(labels, image):
    hed = rgb2hed(image)
    ref = {}
    for p, q in zip(regionprops(labels, intensity_image=hed), regionprops(labels, intensity_image=image)):
        r = {
            "area_px": p.area,
            "centroid_y": p.centroid[0],
            "centroid_x": p.centroid[1],
            "bbox_y0": p.bbox[0],
            "bbox_x0": p.bbox[1],
            "bbox_y1": p.bbox[2],
            "bbox_x1": p.bbox[3],
            "perimeter_px": p.perimeter,
            "solidity": p.solidity,
            "eccentricity": p.eccentricity,
            "major_axis_length_px": p.axis_major_length,
            "minor_axis_length_px": p.axis_minor_length,
            "orientation": p.orientation,
            "equivalent_diameter_px": p.equivalent_diameter_area,
            "circularity": 4 * np.pi * p.area / p.perimeter**2 if p.perimeter > 0 else np.nan,
            "hematoxylin_od_mean": p.intensity_mean[0],
            "hematoxylin_od_std": p.intensity_std[0],
            "eosin_od_mean": p.intensity_mean[1],
            "eosin_od_std": p.intensity_std[1],
            "red_mean": q.intensity_mean[0],
            "green_mean": q.intensity_mean[1],
            "blue_mean": q.intensity_mean[2],
        }
        ref[p.label - 1] = r
    return ref


@pytest.mark.parametrize("budget", [None, 3000])  # 3000: many small stacks
def test_equals_regionprops(budget):
    masks, x0, y0, labels, image = _scene()
    got = measure_nuclei(BoxMasks(masks, x0, y0), image, budget=budget)
    ref = _reference(labels, image)
    assert len(ref) == len(masks)
    assert (got["area_px"] == 1).any() and (got["bbox_x0"] == 0).any() and (got["bbox_y1"] == labels.shape[0]).any()
    for name in ref[0]:
        expected = np.array([ref[i][name] for i in range(len(masks))], dtype=np.float64)
        np.testing.assert_allclose(got[name], expected, rtol=0, atol=TOL, equal_nan=True, err_msg=name)


def test_from_rles_and_box_mask():
    masks, x0, y0, labels, image = _scene(seed=1, cells=6)
    rles = [rle_util.encode(labels == k) for k in range(1, len(masks) + 1)]
    boxes = BoxMasks.from_rles(rles)
    for k, (m, x, y) in enumerate(zip(boxes.masks, boxes.x0, boxes.y0)):
        ys, xs = np.nonzero(labels == k + 1)
        assert (x, y) == (xs.min(), ys.min())
        assert m.shape == (ys.max() - y + 1, xs.max() - x + 1)
        assert m.sum() == len(ys) and m[ys - y, xs - x].all()
    a = measure_nuclei(boxes, image)
    b = measure_nuclei(BoxMasks(masks, x0, y0), image)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-9, err_msg=name)
    assert rle_util.to_box_mask(rle_util.encode(np.zeros((5, 5), np.uint8))) is None


def test_units_scale_with_mpp_and_origin():
    masks, x0, y0, _, image = _scene(seed=2, cells=4)
    boxes = BoxMasks(masks, x0, y0)
    px = measure_nuclei(boxes, image)
    for mpp in (0.25, 0.5, 2.0):
        um = measure_nuclei(boxes, image, mpp=mpp)
        np.testing.assert_allclose(um["area_um2"], px["area_px"] * mpp**2)
        for name in ("perimeter", "major_axis_length", "minor_axis_length", "equivalent_diameter"):
            np.testing.assert_allclose(um[f"{name}_um"], px[f"{name}_px"] * mpp)
        np.testing.assert_allclose(um["centroid_x_um"], px["centroid_x"] * mpp)
        for name in ("circularity", "solidity", "eccentricity", "orientation", "hematoxylin_od_mean"):
            np.testing.assert_array_equal(um[name], px[name])
    assert np.isnan(px["area_um2"]).all() and np.isnan(px["perimeter_um"]).all()
    shifted = measure_nuclei(boxes, image, origin=(1000, 2000))
    np.testing.assert_allclose(shifted["centroid_x"], px["centroid_x"] + 1000)
    np.testing.assert_array_equal(shifted["bbox_y1"], px["bbox_y1"] + 2000)


def test_empty_masks_and_errors():
    image = np.full((10, 10, 3), 128, np.uint8)
    boxes = BoxMasks([np.zeros((0, 0)), np.ones((2, 2)), np.zeros((3, 3))], [0, 4, 1], [0, 4, 1])
    got = measure_nuclei(boxes, image)
    assert got["area_px"].tolist() == [0, 4, 0]
    assert np.isnan(got["perimeter_px"][[0, 2]]).all() and np.isnan(got["red_mean"][[0, 2]]).all()
    assert got["bbox_x0"].tolist() == [-1, 4, -1] and got["red_mean"][1] == 128
    with pytest.raises(ValueError, match="outside"):
        measure_nuclei(BoxMasks([np.ones((3, 3))], [8], [0]), image)
    with pytest.raises(ValueError, match="masks for"):
        BoxMasks([np.ones((3, 3))], [8, 1], [0])
    assert measure_nuclei(BoxMasks([], [], []), image)["area_px"].shape == (0,)


def test_deconvolution_equals_rgb2hed():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rgb[0, :8] = [[0, 0, 0], [255, 255, 255], [1, 0, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [2, 3, 4], [254, 1, 1]]
    np.testing.assert_allclose(separate_stains(rgb), rgb2hed(rgb), rtol=0, atol=1e-12)
    as_float = rgb.astype(np.float64) / 255
    np.testing.assert_allclose(separate_stains(as_float), rgb2hed(as_float), rtol=0, atol=1e-12)
    np.testing.assert_allclose(stain_conversion(), np.linalg.inv(RUIFROK_JOHNSTON))


def test_macenko_recovers_stain_vectors():
    rng = np.random.default_rng(4)
    h = np.array([0.60, 0.75, 0.28])
    e = np.array([0.10, 0.95, 0.30])
    h, e = h / np.linalg.norm(h), e / np.linalg.norm(e)
    r = np.cross(h, e)
    matrix = np.stack([h, e, r / np.linalg.norm(r)])
    amounts = np.zeros((20000, 3))
    amounts[:, :2] = rng.uniform(0.05, 0.5, (len(amounts), 2))
    kind = rng.integers(0, 3, len(amounts))  # pure haematoxylin, pure eosin, or a mixture
    amounts[kind == 0, 1] = 0
    amounts[kind == 1, 0] = 0
    rgb = combine_stains(amounts, matrix)  # float in [0, 1], same OD convention as separate_stains
    est = macenko_stain_matrix(np.clip(rgb, 0, 1))
    for got, want in ((est[0], h), (est[1], e)):
        assert np.degrees(np.arccos(np.clip(got @ want, -1, 1))) < 3
    with pytest.raises(ValueError, match="stained pixels"):
        macenko_stain_matrix(np.full((50, 50, 3), 255, np.uint8))


def test_geojson_with_measurements_is_valid(tmp_path):
    masks, x0, y0, labels, image = _scene(seed=5, cells=4)
    rles = [rle_util.encode(labels == k) for k in range(1, len(masks) + 1)]
    for rle in rles:
        rle["counts"] = rle["counts"].decode()
    columns = measure_nuclei(BoxMasks.from_rles(rles), image, mpp=0.25)
    rows = qupath_measurements(columns, 0.25)
    geo = json.loads(json.dumps(rles_to_geojson(rles, np.ones(len(rles)), measurements=rows), allow_nan=False))
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == len(masks)
    for feature, area, area_px, perimeter in zip(geo["features"], columns["area_um2"], columns["area_px"],
                                                 columns["perimeter_px"]):
        assert feature["type"] == "Feature"
        polygon = shapely.geometry.shape(feature["geometry"])
        assert polygon.is_valid and polygon.area == area_px  # QuPath's own area = the table's (issue 27)
        m = feature["properties"]["measurements"]
        assert m["Area µm^2"] == pytest.approx(area) and m["Detection score"] == 1
        assert {"Perimeter µm", "Solidity", "Hematoxylin OD mean", "Eosin OD std dev"} <= set(m)
        assert ("Circularity" in m) == (perimeter > 0)  # undefined (NaN, left out) for a zero perimeter
    uncalibrated = qupath_measurements(measure_nuclei(BoxMasks.from_rles(rles), image), None)
    assert "Area px^2" in uncalibrated[0] and "Area µm^2" not in uncalibrated[0]


def test_summary_and_figure(tmp_path):
    masks, x0, y0, _, image = _scene(seed=6, cells=5)
    columns = measure_nuclei(BoxMasks(masks, x0, y0), image, mpp=0.5)
    s = summarize(columns, mpp=0.5, image_area_px=image.shape[0] * image.shape[1], extra={"image": "x"})
    assert s["image"] == "x" and s["count"] == 25
    area_mm2 = image.shape[0] * image.shape[1] * 0.25 / 1e6
    assert s["area_mm2"] == pytest.approx(area_mm2) and s["density_per_mm2"] == pytest.approx(25 / area_mm2)
    q1, med, q3 = np.percentile(columns["area_um2"], [25, 50, 75])
    assert s["measurements"]["area_um2"]["median"] == pytest.approx(med)
    assert s["measurements"]["area_um2"]["iqr"] == pytest.approx(q3 - q1)
    json.dumps(s, allow_nan=False)
    assert summarize(columns, tissue_area_mm2=2.0)["density_per_mm2"] == 12.5
    px = summarize(measure_nuclei(BoxMasks(masks, x0, y0), image))
    assert px["density_per_mm2"] is None and "area_um2" not in px["measurements"]
    path = str(tmp_path / "f.png")
    write_distributions(columns, path, title="test")
    assert Image.open(path).size == (1200, 700)


def test_measurement_writer_outputs(tmp_path):
    masks, x0, y0, labels, image = _scene(seed=7, cells=4)
    rles = [rle_util.encode(labels == k) for k in range(1, len(masks) + 1)]
    writer = MeasurementWriter(str(tmp_path / "m"), csv=True, mpp=0.25, stain="macenko")
    writer.check(["img"])
    out = writer.write("img", image, rles, np.linspace(1, 0.5, len(rles)), image_name="img.png")
    assert sorted(os.listdir(tmp_path / "m")) == ["img.csv", "img.parquet", "img.png", "img.summary.json"]
    table = pq.read_table(tmp_path / "m" / "img.parquet")
    assert table.num_rows == len(masks) and table["id"].to_pylist() == list(range(len(masks)))
    for name, values in out["columns"].items():
        np.testing.assert_array_equal(table[name].to_numpy(zero_copy_only=False), values)
    summary = json.load(open(tmp_path / "m" / "img.summary.json"))
    assert summary["count"] == len(masks) and summary["stain"] == "macenko" and len(summary["stain_vectors"]) == 3
    columns, count = read_summary_columns(str(tmp_path / "m" / "img.parquet"))
    assert summarize(columns, mpp=0.25, count=count)["measurements"] == summary["measurements"]
    with pytest.raises(FileExistsError):
        writer.check(["img"])
    with pytest.raises(ValueError, match="stain"):
        MeasurementWriter(str(tmp_path), stain="other")


@pytest.mark.realdata
def test_real_nuclei_equal_regionprops(real_raw):
    """The ground-truth nuclei of one real image, each mask on its own (they may overlap)."""
    from d2_nucleus.data.mask_io import read_mask
    from d2_nucleus.data.raw import scan_train

    entry = scan_train(real_raw).images[0]
    image = np.asarray(Image.open(entry.image_file).convert("RGB"))
    masks = [read_mask(f) for f in entry.mask_files]
    masks = [m for m in masks if not m.is_empty]
    got = measure_nuclei(BoxMasks([m.crop for m in masks], [m.x0 for m in masks], [m.y0 for m in masks]), image)
    hed = rgb2hed(image)
    for i, m in enumerate(masks):
        h, w = m.crop.shape
        window = (slice(m.y0, m.y0 + h), slice(m.x0, m.x0 + w))
        (p,) = regionprops(m.crop.astype(np.uint8), intensity_image=hed[window])
        expected = {
            "area_px": p.area,
            "centroid_x": p.centroid[1] + m.x0,
            "perimeter_px": p.perimeter,
            "solidity": p.solidity,
            "eccentricity": p.eccentricity,
            "major_axis_length_px": p.axis_major_length,
            "minor_axis_length_px": p.axis_minor_length,
            "orientation": p.orientation,
            "hematoxylin_od_mean": p.intensity_mean[0],
            "eosin_od_std": p.intensity_std[1],
        }
        for name, value in expected.items():
            assert abs(got[name][i] - value) <= TOL, (name, i)
