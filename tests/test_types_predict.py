# -*- coding: utf-8 -*-
"""
Nucleus types end to end on synthetic data: tools/train_types.py (CSV points) -> classifier file
-> tools/predict.py --types (table, summary, figure, GeoJSON, overlay; answer.json unchanged) and
tools/eval_types.py; bad input (another model's classifier, a corrupted file, no resolution).
"""
import csv
import json
import os
import shutil

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from d2_nucleus.config import get_nucleus_cfg
from test_predict import CONFIG, TINY_OPTS
from tools_cli import load_tool
from weights import save_untrained_weights

TRAIN = load_tool("train_types")
EVAL = load_tool("eval_types")
PREDICT = load_tool("predict")
CLASSES = ["small", "large"]
# every detection of the untrained model pairs with some centre: the plumbing is what is tested
OPTS = TINY_OPTS + ["TYPES.MATCH_RADIUS_UM", "1000.0", "TYPES.EPOCHS", "3", "TYPES.HIDDEN_DIM", "8"]


@pytest.fixture(scope="module")
def data(synthetic_raw, tmp_path_factory):
    """Images (the synthetic training images) and a CSV of their nuclei's centres, typed by size."""
    root = tmp_path_factory.mktemp("types")
    images = root / "images"
    images.mkdir()
    rows = []
    train = os.path.join(synthetic_raw, "train")
    for image_id in sorted(os.listdir(train)):
        shutil.copy(os.path.join(train, image_id, "images", image_id + ".png"), images / (image_id + ".png"))
        masks = os.path.join(train, image_id, "masks")
        for name in sorted(os.listdir(masks)):
            ys, xs = np.nonzero(cv2.imread(os.path.join(masks, name), cv2.IMREAD_GRAYSCALE))
            rows.append([image_id + ".png", xs.mean(), ys.mean(), CLASSES[int(len(xs) > 250)]])
    rows[0][3] = ""  # a centre without a class
    points = root / "points.csv"
    with open(points, "w", newline="") as f:
        csv.writer(f).writerows([["image", "x", "y", "class"]] + rows)
    cfg = get_nucleus_cfg(CONFIG, TINY_OPTS + ["MODEL.WEIGHTS", ""])
    weights = save_untrained_weights(cfg, root / "a" / "model_final.pth", seed=0)
    other = save_untrained_weights(cfg, root / "b" / "model_final.pth", seed=1)
    return {"root": root, "images": str(images), "points": str(points), "weights": weights, "other": other}


def _common(data, weights=None):
    return ["--config-file", CONFIG, "--weights", weights or data["weights"], "--points", data["points"],
            "--format", "csv", "--images", data["images"], "--mpp", "0.25", "--classes", ",".join(CLASSES),
            "--cache", str(data["root"] / "cache"), "--quiet"]


def _train(data, output, *extra, weights=None):
    argv = _common(data, weights) + ["--output", str(output), *extra, *OPTS]
    return TRAIN.main([str(a) for a in argv])


def _predict(data, *args, weights=None):
    argv = ["--config-file", CONFIG, "--weights", weights or data["weights"], "--quiet", "--input", data["images"],
            *args, *TINY_OPTS]
    return PREDICT.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def classifier(data):
    path = data["root"] / "types.npz"
    assert _train(data, path, "--split", data["root"] / "split.json", "--test-fraction", "0.5",
                  "--features", "box,context,measurements") == 0  # the model's features (default: patch,measurements)
    return str(path)


def test_train_writes_classifier_and_split(data, classifier, capsys):
    from d2_nucleus.types.classifier import TypeClassifier

    clf = TypeClassifier.load(classifier)
    assert clf.class_names == CLASSES and clf.features == ["box", "context", "measurements"]
    assert clf.recipe["box_dim"] == 1024 and clf.recipe["working_mpp"] == pytest.approx(0.25)
    assert clf.context_scale == 3.0 and clf.feature_dim == 2 * 1024 + 15
    assert len(clf.recipe["model"]["fingerprint"]) == 64 and clf.recipe["model"]["weights"] == data["weights"]
    split = json.load(open(data["root"] / "split.json"))
    assert len(split["train"]) == 2 and len(split["test"]) == 2 and clf.info["images"] == split["train"]
    # the output exists: refused without --overwrite
    assert _train(data, classifier) == 2
    assert "already exists" in capsys.readouterr().err


def test_predict_with_types(data, classifier, tmp_path):
    out = tmp_path / "typed"
    args = ["--output", out / "answer.json", "--measurements", out / "m", "--measurements-format", "csv",
            "--geojson-dir", out / "g", "--vis-dir", out / "v", "--mpp", "0.25"]
    assert _predict(data, *args, "--types", classifier) == 0
    plain = tmp_path / "plain"
    assert _predict(data, "--output", plain / "answer.json", "--vis-dir", plain / "v") == 0
    # answer.json keeps the model's single class and is unchanged by types
    assert json.load(open(out / "answer.json")) == json.load(open(plain / "answer.json"))
    colors = {"small": None, "large": None}
    total = 0
    for name in sorted(os.listdir(data["images"])):
        stem = os.path.splitext(name)[0]
        table = pq.read_table(out / "m" / f"{stem}.parquet").to_pydict()
        n = len(table["id"])
        total += n
        probs = np.stack([table["prob_small"], table["prob_large"]], axis=1)
        np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
        assert table["type"] == [CLASSES[i] for i in probs.argmax(axis=1)]
        header = (out / "m" / f"{stem}.csv").read_text().splitlines()[0].replace('"', "").split(",")
        assert header[-3:] == ["type", "prob_small", "prob_large"]
        summary = json.load(open(out / "m" / f"{stem}.summary.json"))
        types = summary["types"]
        assert sum(t["count"] for t in types.values()) == summary["count"] == n
        for cls in CLASSES:
            assert types[cls]["count"] == table["type"].count(cls)
            if n:
                assert types[cls]["fraction"] == pytest.approx(types[cls]["count"] / n)
            assert types[cls]["density_per_mm2"] == pytest.approx(types[cls]["count"] / summary["area_mm2"])
        features = json.load(open(out / "g" / f"{stem}.geojson"))["features"]
        assert [f["properties"]["classification"]["name"] for f in features] == table["type"]
        for f, p in zip(features, probs):
            m = f["properties"]["measurements"]
            assert m["Probability small"] == pytest.approx(p[0]) and "Area µm^2" in m
            colors[f["properties"]["classification"]["name"]] = tuple(f["properties"]["classification"]["color"])
        # the overlay: outlines in the types' colours, legend; not the untyped overlay
        typed = cv2.imread(str(out / "v" / f"{stem}.png"))[:, :, ::-1]
        assert not np.array_equal(typed, cv2.imread(str(plain / "v" / f"{stem}.png"))[:, :, ::-1])
        for cls in set(table["type"]):
            assert (typed == np.array(colors[cls], np.uint8)).all(axis=2).sum() > 20, cls
        assert os.path.getsize(out / "m" / f"{stem}.png") > 0
    assert total > 0


def test_eval_types(data, classifier, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = _common(data) + ["--classifier", classifier, "--split", data["root"] / "split.json", "--out", out, *OPTS]
    assert EVAL.main([str(a) for a in argv]) == 0
    results = json.load(open(out / "metrics.json"))
    split = json.load(open(data["root"] / "split.json"))
    assert [r["image"] for r in results["images"]] == split["test"] and results["classes"] == CLASSES
    pooled = results["pooled"]
    assert pooled["detection"]["tp"] == sum(r["detection"]["tp"] for r in results["images"]) > 0
    assert set(pooled["joint"]) == set(CLASSES) and pooled["classification"]["weighted_f1"] is not None
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert [r["image"] for r in rows] == split["test"] and "f1_joint_small" in rows[0]
    assert os.path.getsize(out / "confusion.png") > 1000
    assert "detection: P" in capsys.readouterr().out


def test_types_bad_input(data, classifier, tmp_path, capsys):
    # a classifier of box features made for another model: refused before any output
    out = tmp_path / "other"
    rc = _predict(data, "--output", out / "answer.json", "--geojson-dir", out / "g", "--types", classifier,
                  weights=data["other"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "another segmentation model" in err and len(err.splitlines()) == 1
    assert not out.exists() or not any(out.rglob("*.*"))
    # a corrupted file
    broken = tmp_path / "broken.npz"
    broken.write_bytes(open(classifier, "rb").read()[:500])
    rc = _predict(data, "--output", out / "answer.json", "--types", broken)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "corrupt or truncated" in err and len(err.splitlines()) == 1
    assert not (out / "answer.json").exists()
    # a measurements-only classifier fits any model; without --mpp the images are at the model's
    # resolution (MODEL.PIXEL_SIZE_UM, 0.25)
    meas = tmp_path / "meas.npz"
    assert _train(data, meas, "--features", "measurements") == 0
    assert _predict(data, "--output", out / "a.json", "--geojson-dir", out / "g", "--types", meas,
                    "--mpp", "0.25", weights=data["other"]) == 0
    assert _predict(data, "--output", out / "b.json", "--types", meas, "--geojson-dir", out / "g2",
                    weights=data["other"]) == 0
    for path in sorted((out / "g").iterdir()):
        assert path.read_bytes() == (out / "g2" / path.name).read_bytes()
    capsys.readouterr()
    # training: an unknown class name in the points, a missing images folder, bad features
    assert _train(data, tmp_path / "x.npz", "--classes", "small") == 2
    assert "unknown class name(s) ['large']" in capsys.readouterr().err
    argv = _common(data) + ["--output", tmp_path / "y.npz", "--features", "colour", *OPTS]
    assert TRAIN.main([str(a) for a in argv]) == 2
    assert "TYPES.FEATURES must name some of" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "y.npz").exists()


def test_model_box_and_context_features(data):
    """TYPES.BOX_FEATURES adds the box head's output at each final box (and its context square)
    without changing the detections."""
    import torch
    from detectron2.structures import Boxes

    from d2_nucleus.data.image_io import read_image
    from d2_nucleus.engine.predictor import NucleusPredictor
    from d2_nucleus.modeling.nucleus_features import _context_boxes, box_feature_head

    cfg = get_nucleus_cfg(CONFIG, TINY_OPTS + ["MODEL.WEIGHTS", data["weights"]])
    image = read_image(os.path.join(data["images"], sorted(os.listdir(data["images"]))[0]), "BGR")
    plain = NucleusPredictor(cfg)([image])[0]
    cfg.TYPES.BOX_FEATURES = True
    predictor = NucleusPredictor(cfg)
    out = predictor([image])[0]
    assert torch.equal(out.pred_boxes.tensor, plain.pred_boxes.tensor) and list(out.pred_rles) == list(plain.pred_rles)
    assert out.box_features.shape == (len(out), 1024) and out.context_features.shape == (len(out), 1024)
    assert out.box_features.dtype == torch.float32 and not torch.equal(out.box_features, out.context_features)
    # the head's output at those boxes: recompute from the model's feature maps
    model = predictor.model
    with torch.no_grad():
        inputs = [{"image": torch.as_tensor(image.transpose(2, 0, 1).copy()), "height": image.shape[0],
                   "width": image.shape[1]}]
        images = model.preprocess_image(inputs)
        maps = model.backbone(images.tensor)
        roi = model.roi_heads
        raw = model.inference(inputs, do_postprocess=False)[0]  # boxes in the input's pixels
        boxes = raw.pred_boxes[:5]
        want = box_feature_head(roi)(roi.box_pooler([maps[f] for f in roi.box_in_features], [boxes])).flatten(1)
        torch.testing.assert_close(raw.box_features[:5], want.float(), rtol=1e-4, atol=1e-4)
    square = _context_boxes(Boxes(torch.tensor([[10.0, 20.0, 14.0, 22.0]])), 3.0).tensor
    assert square.tolist() == [[6.0, 15.0, 18.0, 27.0]]


def test_patch_classifier_end_to_end(data, tmp_path):
    """A classifier of image patches + measurements: trained, then applied by predict.py."""
    from d2_nucleus.types.classifier import TypeClassifier

    path = tmp_path / "patch.npz"
    assert _train(data, path, "--features", "patch,measurements", "TYPES.PATCH_EPOCHS", "1",
                  "TYPES.PATCH_CHANNELS", "(4,)") == 0
    clf = TypeClassifier.load(str(path))
    assert clf.features == ["measurements", "patch"] and len(clf.convs) == 2 and not clf.needs_model_features
    out = tmp_path / "out"
    assert _predict(data, "--output", out / "a.json", "--measurements", out / "m", "--types", path,
                    "--mpp", "0.25", weights=data["other"]) == 0
    stem = os.path.splitext(sorted(os.listdir(data["images"]))[0])[0]
    table = pq.read_table(out / "m" / f"{stem}.parquet").to_pydict()
    assert set(table["type"]) <= set(CLASSES) and len(table["prob_small"]) == len(table["id"])
