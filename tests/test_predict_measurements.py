# -*- coding: utf-8 -*-
"""tools/predict.py --measurements: per-image tables, summaries, figures and GeoJSON measurements."""
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from d2_nucleus.utils import rle as rle_util
from test_predict import _ids, predict, raw, weights  # noqa: F401 (fixtures)


def test_predict_measurements(weights, raw, tmp_path, capsys):
    out, meas, geo = tmp_path / "answer.json", tmp_path / "meas", tmp_path / "geo"
    ids = os.path.join(raw, "test_img_ids.json")
    args = ["--input", ids, "--output", out, "--measurements", meas, "--measurements-format", "csv",
            "--mpp", "0.25", "--geojson-dir", geo]
    assert predict(weights, *args) == 0
    answer = json.load(open(out))
    for entry in _ids(raw):
        stem = os.path.splitext(entry["file_name"])[0]
        for suffix in (".parquet", ".csv", ".summary.json", ".png"):
            assert (meas / (stem + suffix)).is_file()
        table = pq.read_table(meas / f"{stem}.parquet").to_pydict()
        dets = [d for d in answer if d["image_id"] == entry["id"] and rle_util.area(d["segmentation"]) > 0]
        assert len(table["id"]) == len(dets) > 0
        # same nuclei, same order as the answer (sorted by score), areas from the RLEs
        assert sorted(table["area_px"]) == sorted(int(rle_util.area(d["segmentation"])) for d in dets)
        np.testing.assert_allclose(table["area_um2"], np.array(table["area_px"]) * 0.0625)
        assert set(table["image"]) == {entry["file_name"]}
        features = json.load(open(geo / f"{stem}.geojson"))["features"]
        assert len(features) == len(table["id"])
        for feature, area, score in zip(features, table["area_um2"], table["score"]):
            m = feature["properties"]["measurements"]
            assert m["Area µm^2"] == pytest.approx(area) and m["Detection score"] == pytest.approx(score)
            assert "Hematoxylin OD mean" in m and "Solidity" in m
        summary = json.load(open(meas / f"{stem}.summary.json"))
        assert summary["count"] == len(dets) and summary["mpp"] == 0.25
        assert summary["density_per_mm2"] == pytest.approx(len(dets) / (entry["height"] * entry["width"] * 0.0625e-6))

    # existing outputs are kept without --overwrite; the config's resolution is used without --mpp
    capsys.readouterr()
    assert predict(weights, "--input", ids, "--output", tmp_path / "a2.json", "--measurements", meas) == 2
    assert "already exists" in capsys.readouterr().err
    assert predict(weights, "--input", ids, "--output", tmp_path / "a3.json", "--measurements", tmp_path / "m2",
                   opts=["MODEL.PIXEL_SIZE_UM", "0.5"]) == 0
    stem = os.path.splitext(_ids(raw)[0]["file_name"])[0]
    table = pq.read_table(tmp_path / "m2" / f"{stem}.parquet")
    np.testing.assert_allclose(table["perimeter_um"].to_numpy(), table["perimeter_px"].to_numpy() * 0.5)
    assert not (tmp_path / "m2" / f"{stem}.csv").exists()


def test_predict_measurements_bad_mpp(weights, raw, tmp_path, capsys):
    ids = os.path.join(raw, "test_img_ids.json")
    rc = predict(weights, "--input", ids, "--output", tmp_path / "a.json", "--measurements", tmp_path / "m",
                 "--mpp", "-1")
    assert rc == 2 and "--mpp must be a finite number >= 0, got -1.0" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "m") and not os.path.exists(tmp_path / "a.json")
