# -*- coding: utf-8 -*-
"""tools/predict.py: answer.json/zip, GeoJSON, label maps, overlays, TTA and bad input."""
import json
import os
import shutil
import warnings
import zipfile

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import shapely.geometry
import tifffile
import torch
from PIL import Image
from pycocotools.coco import COCO

from detectron2.modeling import build_model

from d2_nucleus.config import get_nucleus_cfg
from d2_nucleus.data.synthetic import render_nuclei_image
from d2_nucleus.data.image_io import BadImageError, read_image
from d2_nucleus.engine.inputs import list_inputs
from d2_nucleus.export import rles_to_geojson, write_label_map
from d2_nucleus.utils.file_io import OutputExistsError, atomic_write, check_writable
from d2_nucleus.modeling import NucleusRCNNWithTTA
from weights import save_untrained_weights
from d2_nucleus.utils.label_map import rles_to_label_map

from tools_cli import load_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "Base-Nucleus-RCNN-FPN.yaml")
# A tiny random model that still emits detections (score threshold 0), kept cheap on CPU.
TINY_OPTS = [
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.FPN.OUT_CHANNELS", "64",
    "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN", "MODEL.DEVICE", "cpu",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "300", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "30",
    "TEST.LABEL_MAP_SCORE_THRESH", "0.0",
]


CLI = load_tool("predict")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    cfg = get_nucleus_cfg(CONFIG, TINY_OPTS + ["MODEL.WEIGHTS", ""])
    return save_untrained_weights(cfg, tmp_path_factory.mktemp("weights") / "model_final.pth")


@pytest.fixture
def raw(synthetic_raw, tmp_path):
    """A private copy of the synthetic raw dataset (tests may break its images)."""
    out = tmp_path / "raw"
    shutil.copytree(synthetic_raw, out)
    return str(out)


def predict(weights, *args, opts=()):
    argv = ["--config-file", CONFIG, "--weights", weights, "--quiet", *args, *TINY_OPTS, *opts]
    return CLI.main([str(a) for a in argv])


def _ids(raw):
    with open(os.path.join(raw, "test_img_ids.json")) as f:
        return json.load(f)


# -------------------------------------------------------------------------------------------------
# answer.json / answer.zip
# -------------------------------------------------------------------------------------------------
def test_answer_format_zip_and_ids(weights, raw, tmp_path):
    out = tmp_path / "sub" / "answer.json"
    assert predict(weights, "--input", os.path.join(raw, "test_img_ids.json"), "--output", out, "--zip") == 0
    with open(out) as f:
        answer = json.load(f)
    ids = _ids(raw)
    sizes = {e["id"]: [e["height"], e["width"]] for e in ids}
    assert answer and {a["image_id"] for a in answer} == set(sizes)
    for a in answer:
        assert set(a) == {"image_id", "category_id", "segmentation", "score", "bbox"}
        assert a["category_id"] == 1
        assert a["segmentation"]["size"] == sizes[a["image_id"]]
        assert isinstance(a["segmentation"]["counts"], str)
        assert len(a["bbox"]) == 4 and isinstance(a["score"], float)
    for image_id in sizes:  # sorted by score within each image
        scores = [a["score"] for a in answer if a["image_id"] == image_id]
        assert scores == sorted(scores, reverse=True)

    gt = COCO()
    gt.dataset = {"images": ids, "categories": [{"id": 1, "name": "nucleus"}], "annotations": []}
    gt.createIndex()
    res = gt.loadRes(str(out))
    assert len(res.anns) == len(answer)

    with zipfile.ZipFile(tmp_path / "sub" / "answer.zip") as zf:
        assert zf.namelist() == ["answer.json"]
        assert json.loads(zf.read("answer.json")) == answer
    assert not [n for n in os.listdir(tmp_path / "sub") if n.endswith(".tmp")]


def test_folder_with_ids_single_image_and_plain_folder(weights, raw, tmp_path):
    test_dir = os.path.join(raw, "test")
    ids = _ids(raw)
    # folder + --ids: ids from the file
    out = tmp_path / "a.json"
    assert predict(weights, "--input", test_dir, "--ids", os.path.join(raw, "test_img_ids.json"), "--output", out) == 0
    assert {a["image_id"] for a in json.load(open(out))} == {e["id"] for e in ids}
    # a folder without ids: 1..N in file-name order; one image: id 1
    items = list_inputs(test_dir)
    assert [os.path.basename(i.path) for i in items] == sorted(os.listdir(test_dir))
    assert [i.image_id for i in items] == [1, 2]
    one = os.path.join(test_dir, ids[0]["file_name"])
    out = tmp_path / "b.json"
    assert predict(weights, "--input", one, "--output", out) == 0
    assert {a["image_id"] for a in json.load(open(out))} == {1}


def test_native_resolution_any_size_and_channels(weights, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (75, 130, 4), dtype=np.uint8), "RGBA").save(folder / "a_rgba.png")
    Image.fromarray(rng.integers(0, 255, (64, 50), dtype=np.uint8), "L").save(folder / "b_grey.png")
    Image.fromarray((rng.integers(0, 65535, (40, 60))).astype(np.uint16)).save(folder / "c_grey16.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = [read_image(str(folder / n)) for n in ("a_rgba.png", "b_grey.png", "c_grey16.png")]
    assert [im.shape for im in images] == [(75, 130, 3), (64, 50, 3), (40, 60, 3)]
    assert all(im.dtype == np.uint8 for im in images)
    assert len([w for w in caught if "converted" in str(w.message) or "scaled" in str(w.message)]) == 3
    out = tmp_path / "answer.json"
    assert predict(weights, "--input", folder, "--output", out) == 0
    sizes = {a["image_id"]: a["segmentation"]["size"] for a in json.load(open(out))}
    assert sizes == {1: [75, 130], 2: [64, 50], 3: [40, 60]}


def test_test_scale_outputs_in_image_pixels(weights, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    img, _ = render_nuclei_image(np.random.default_rng(3), 90, 120, 25)
    Image.fromarray(img).save(folder / "a.png")
    outs = {}
    for scale in ("1.0", "1.5"):
        out = tmp_path / f"answer_{scale}.json"
        assert predict(weights, "--input", folder, "--output", out, opts=["INPUT.TEST_SCALE", scale]) == 0
        outs[scale] = json.load(open(out))
    assert all(a["segmentation"]["size"] == [90, 120] for a in outs["1.5"]) and outs["1.5"]
    # another input size, so other detections: the key reaches the model
    assert [a["bbox"] for a in outs["1.0"]] != [a["bbox"] for a in outs["1.5"]]


# -------------------------------------------------------------------------------------------------
# GeoJSON, label maps, overlays
# -------------------------------------------------------------------------------------------------
def _detections(answer, image_id, thresh=0.0):
    """The answer's detections an export keeps: score >= thresh and a non-empty mask."""
    dets = [a for a in answer if a["image_id"] == image_id and a["score"] >= thresh]
    return [a for a in dets if mask_util.area(a["segmentation"]) > 0]


def test_geojson_labels_and_overlays(weights, raw, tmp_path):
    out = tmp_path / "answer.json"
    rc = predict(weights, "--input", os.path.join(raw, "test_img_ids.json"), "--output", out,
                 "--vis-dir", tmp_path / "vis", "--geojson-dir", tmp_path / "geo", "--labels-dir", tmp_path / "lab")
    assert rc == 0
    answer = json.load(open(out))
    for entry in _ids(raw):
        stem = os.path.splitext(entry["file_name"])[0]
        h, w = entry["height"], entry["width"]
        dets = _detections(answer, entry["id"])
        assert dets

        geo = json.load(open(tmp_path / "geo" / f"{stem}.geojson"))
        assert geo["type"] == "FeatureCollection"
        assert len(geo["features"]) == len(dets)  # one feature per detection
        for feature, det in zip(geo["features"], dets):
            assert feature["type"] == "Feature"
            assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
            props = feature["properties"]
            assert props["objectType"] == "detection"
            assert props["classification"]["name"] == "Nucleus"
            assert props["measurements"]["Detection score"] == pytest.approx(det["score"])
            # the mask's pixels exactly (pixel edges; tests/test_geojson.py): valid, same area, same box
            polygon = shapely.geometry.shape(feature["geometry"])
            assert polygon.is_valid and polygon.area == mask_util.area(det["segmentation"])
            x, y, bw, bh = mask_util.toBbox(det["segmentation"])
            assert polygon.bounds == (x, y, x + bw, y + bh)
            assert 0 <= x and x + bw <= w and 0 <= y and y + bh <= h

        labels = cv2.imread(str(tmp_path / "lab" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert labels.dtype == np.uint16 and labels.shape == (h, w)
        expected = rles_to_label_map([d["segmentation"] for d in dets], h, w, [d["score"] for d in dets])
        np.testing.assert_array_equal(labels, expected)
        assert labels.max() == len(dets)

        vis = cv2.imread(str(tmp_path / "vis" / f"{stem}.png"))
        assert vis.shape == (h, w, 3)


def test_label_maps_n_labels_png_and_tiff(tmp_path):
    from d2_nucleus.data.synthetic import render_nuclei_image

    _, labels = render_nuclei_image(np.random.default_rng(0), 96, 80, 25)
    n = int(labels.max())
    rles = [mask_util.encode(np.asfortranarray((labels == k).astype(np.uint8))) for k in range(1, n + 1)]
    label_map = rles_to_label_map(rles, 96, 80)
    assert len(np.unique(label_map)) == n + 1  # N labels for N detections, plus background
    write_label_map(label_map, str(tmp_path / "a.png"))
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_UNCHANGED), label_map)
    write_label_map(label_map, str(tmp_path / "a.tif"))
    assert tifffile.imread(str(tmp_path / "a.tif")).dtype == np.uint16
    big = np.zeros((4, 4), np.int32)
    big[0, 0] = 70000
    write_label_map(big, str(tmp_path / "big.tif"))
    read = tifffile.imread(str(tmp_path / "big.tif"))
    assert read.dtype == np.uint32 and read[0, 0] == 70000
    with pytest.raises(ValueError, match="16-bit"):
        write_label_map(big, str(tmp_path / "big.png"))
    with pytest.raises(OutputExistsError):
        write_label_map(label_map, str(tmp_path / "a.png"))
    geo = rles_to_geojson(rles, scores=[1.0] * n)
    assert len(geo["features"]) == n


def test_label_format_tiff_cli(weights, raw, tmp_path):
    rc = predict(weights, "--input", os.path.join(raw, "test_img_ids.json"), "--output", tmp_path / "a.json",
                 "--labels-dir", tmp_path / "lab", "--label-format", "tiff")
    assert rc == 0
    files = sorted(os.listdir(tmp_path / "lab"))
    assert files == sorted(os.path.splitext(e["file_name"])[0] + ".tif" for e in _ids(raw))
    assert tifffile.imread(str(tmp_path / "lab" / files[0])).max() > 0


# -------------------------------------------------------------------------------------------------
# TTA
# -------------------------------------------------------------------------------------------------
def test_tta_flag(weights, raw, tmp_path, monkeypatch):
    calls = []
    original = NucleusRCNNWithTTA._inference_one_image

    def spy(self, inputs):
        calls.append(len(self.tta_mapper(inputs)))
        return original(self, inputs)

    monkeypatch.setattr(NucleusRCNNWithTTA, "_inference_one_image", spy)
    out = tmp_path / "answer.json"
    image = os.path.join(raw, "test", _ids(raw)[0]["file_name"])
    assert predict(weights, "--input", image, "--output", out, "--tta", "--batch-size", "2") == 0
    assert calls == [4]  # native resolution x (identity, h-flip, v-flip, both)
    answer = json.load(open(out))
    assert answer and {a["image_id"] for a in answer} == {1}
    assert all(a["segmentation"]["size"] == [256, 256] for a in answer)


# -------------------------------------------------------------------------------------------------
# Bad input
# -------------------------------------------------------------------------------------------------
def test_unreadable_image_and_skip_bad(weights, raw, tmp_path, capsys):
    bad = _ids(raw)[0]["file_name"]
    with open(os.path.join(raw, "test", bad), "wb") as f:
        f.write(b"not a png")
    out = tmp_path / "answer.json"
    assert predict(weights, "--input", os.path.join(raw, "test_img_ids.json"), "--output", out) == 2
    assert bad in capsys.readouterr().err
    assert not os.path.exists(out)  # nothing written, nothing partial
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]

    assert predict(weights, "--input", os.path.join(raw, "test_img_ids.json"), "--output", out, "--skip-bad") == 0
    captured = capsys.readouterr().out
    assert "Skipped 1" in captured and bad in captured
    assert {a["image_id"] for a in json.load(open(out))} == {_ids(raw)[1]["id"]}
    with pytest.raises(BadImageError, match=bad):
        read_image(os.path.join(raw, "test", bad))


def test_ids_name_absent_file(weights, raw, tmp_path, capsys):
    missing = _ids(raw)[1]["file_name"]
    os.remove(os.path.join(raw, "test", missing))
    out = tmp_path / "answer.json"
    assert predict(weights, "--input", os.path.join(raw, "test_img_ids.json"), "--output", out) == 2
    err = capsys.readouterr().err
    assert missing in err and "test_img_ids.json" in err
    assert not os.path.exists(out)
    assert predict(weights, "--input", os.path.join(raw, "test_img_ids.json"), "--output", out, "--skip-bad") == 0
    assert missing in capsys.readouterr().out


def test_missing_weights(raw, tmp_path, capsys):
    missing = str(tmp_path / "nope" / "model_final.pth")
    assert predict(missing, "--input", os.path.join(raw, "test"), "--output", tmp_path / "a.json") == 2
    err = capsys.readouterr().err
    assert missing in err and "train_net.py" in err


def test_output_not_writable_and_overwrite(weights, raw, tmp_path, capsys, monkeypatch):
    inp = os.path.join(raw, "test_img_ids.json")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert predict(weights, "--input", inp, "--output", blocker / "answer.json") == 2
    assert "file" in capsys.readouterr().err
    # a read-only folder (tests may run as root, who may write anywhere: simulate it)
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if str(p) == str(ro) else real_access(p, m))
    assert predict(weights, "--input", inp, "--output", ro / "answer.json") == 2
    assert "not writable" in capsys.readouterr().err
    monkeypatch.undo()
    # existing outputs are kept without --overwrite, replaced with it
    out = tmp_path / "answer.json"
    out.write_text("keep me")
    assert predict(weights, "--input", inp, "--output", out) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "keep me"
    assert predict(weights, "--input", inp, "--output", out, "--overwrite") == 0
    assert json.load(open(out))


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(RuntimeError):
        with atomic_write(str(target)) as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with atomic_write(str(target)) as f:
        f.write(b"done")
    assert target.read_bytes() == b"done"
    with pytest.raises(OutputExistsError):
        check_writable(str(target))
    check_writable(str(target), overwrite=True)


class _NotAWeight:
    """Pickled by reference: loading it would run code from outside the checkpoint format."""


def test_checkpoint_with_pickled_code_refused(raw, tmp_path, capsys):
    cfg = get_nucleus_cfg(CONFIG, TINY_OPTS + ["MODEL.WEIGHTS", ""])
    model = build_model(cfg)
    path = tmp_path / "unsafe.pth"
    torch.save({"model": model.state_dict(), "extra": _NotAWeight()}, path)
    assert predict(str(path), "--input", os.path.join(raw, "test"), "--output", tmp_path / "a.json") == 2
    err = capsys.readouterr().err
    assert str(path) in err and "refusing" in err
    assert not os.path.exists(tmp_path / "a.json")


@pytest.mark.parametrize("name", ["../../x.png", "/etc/x.png", "sub/x.png", ".hidden.png"])
def test_ids_names_outside_the_folder_refused(weights, raw, tmp_path, capsys, name):
    """test_img_ids.json is parsed by the strict parser of data preparation: an entry cannot
    make predict read a file outside the image folder."""
    outside = tmp_path / "x.png"
    cv2.imwrite(str(outside), np.zeros((8, 8, 3), np.uint8))
    ids = _ids(raw)
    ids[0]["file_name"] = name
    ids_file = os.path.join(raw, "test_img_ids.json")
    with open(ids_file, "w") as f:
        json.dump(ids, f)
    out = tmp_path / "answer.json"
    for args in (["--input", ids_file], ["--input", os.path.join(raw, "test"), "--ids", ids_file]):
        assert predict(weights, *args, "--output", out, "--skip-bad") == 2
        err = capsys.readouterr().err
        assert "file_name must be a plain file name" in err and "test_img_ids.json" in err
        assert len(err.strip().splitlines()) == 1
        assert not os.path.exists(out)
    with pytest.raises(ValueError, match="plain file name"):
        list_inputs(ids_file)


def test_detection_cap_named_per_image(weights, raw, tmp_path, caplog):
    image = os.path.join(raw, "test", _ids(raw)[0]["file_name"])
    with caplog.at_level("WARNING", logger="d2_nucleus.engine.prediction"):
        assert predict(weights, "--input", image, "--output", tmp_path / "a.json", "--max-dets", "5") == 0
    notices = [r.getMessage() for r in caplog.records if "DETECTIONS_PER_IMAGE" in r.getMessage()]
    assert len(notices) == 1 and image in notices[0] and "\n" not in notices[0]
    assert len(json.load(open(tmp_path / "a.json"))) == 5
    caplog.clear()
    with caplog.at_level("WARNING", logger="d2_nucleus.engine.prediction"):
        assert predict(weights, "--input", image, "--output", tmp_path / "b.json", "--max-dets", "1000") == 0
    assert not [r for r in caplog.records if "DETECTIONS_PER_IMAGE" in r.getMessage()]


def test_huge_image_one_line_error(weights, tmp_path, capsys, monkeypatch):
    from d2_nucleus.data import image_io

    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "huge.png"), np.zeros((64, 64, 3), np.uint8))
    monkeypatch.setattr(image_io, "MAX_IMAGE_PIXELS", 1000)
    assert predict(weights, "--input", folder, "--output", tmp_path / "a.json") == 2
    err = capsys.readouterr().err.strip()
    assert "huge.png" in err and "64x64" in err and len(err.splitlines()) == 1


def test_image_outputs_min_visible(tmp_path):
    """TEST.LABEL_MAP_MIN_VISIBLE drops the detections evaluation drops from every export."""
    from d2_nucleus.export.image_outputs import write_image_outputs

    a = np.zeros((20, 20), np.uint8)
    a[2:12, 2:12] = 1  # 100 px
    b = np.zeros((20, 20), np.uint8)
    b[4:14, 4:14] = 1  # 100 px, 64 under a
    c = np.zeros((20, 20), np.uint8)
    c[15:19, 15:19] = 1
    rles = [mask_util.encode(np.asfortranarray(m)) for m in (a, b, c)]
    image = np.zeros((20, 20, 3), np.uint8)
    for frac, expected in ((0.0, 3), (0.3, 3), (0.5, 2)):
        out = tmp_path / str(frac)
        out.mkdir()
        paths = {"vis": None, "geojson": str(out / "x.geojson"), "labels": str(out / "x")}
        write_image_outputs(image, rles, [0.9, 0.8, 0.7], paths, min_visible=frac)
        geo = json.loads((out / "x.geojson").read_text())
        labels = cv2.imread(str(out / "x.png"), cv2.IMREAD_UNCHANGED)
        assert len(geo["features"]) == expected == labels.max() == len(np.unique(labels)) - 1
        # the exported map = the survivors painted afresh (b, 64% covered, is dropped at 0.5)
        survivors = [0, 1, 2] if expected == 3 else [0, 2]
        np.testing.assert_array_equal(labels, rles_to_label_map(
            [rles[i] for i in survivors], 20, 20, scores=[[0.9, 0.8, 0.7][i] for i in survivors]))


def test_images_beyond_max_size_test_warn_that_they_are_downscaled():
    """INPUT.MAX_SIZE_TEST caps the model's input: a larger image is downscaled, its nuclei shrink;
    prediction says so (issue 27) and names the tiled slide path."""
    from d2_nucleus.engine.predictor import _warn_if_downscaled

    cfg = get_nucleus_cfg(CONFIG, TINY_OPTS + ["INPUT.TEST_SCALE", "1.25", "INPUT.MAX_SIZE_TEST", "4000"])
    with pytest.warns(UserWarning, match=r"6000x5000 image is downscaled to 4000x3333.*segment_slides"):
        _warn_if_downscaled(cfg, 5000, 6000, (3333, 4000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_downscaled(cfg, 1000, 1000, (1250, 1250))  # the config's own upscale
        cfg.INPUT.TEST_SCALE = 1.0
        cfg.INPUT.MIN_SIZE_TEST = 800
        _warn_if_downscaled(cfg, 1000, 1200, (800, 960))  # a short-edge resize by design
