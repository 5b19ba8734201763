# -*- coding: utf-8 -*-
"""
Nucleus types in the whole-slide pipeline (d2_nucleus/slide/types.py, TYPES.CLASSIFIER, --types) on
synthetic slides, with a classifier trained on synthetic features.

The stand-in model of tests/test_slide.py (a perfect segmenter of label-coloured nuclei) is given
"box features" that are each nucleus' own area: a classifier trained on synthetic rows (area above
or below a threshold) must then type every nucleus of the slide by its own area, which it does only
when each tile's features reach the right nuclei through the seams, the done records and a resume.
"""
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from d2_nucleus.slide import segment_slide
from d2_nucleus.types.classifier import BadClassifierError
from d2_nucleus.types.features import model_fingerprint
from d2_nucleus.types.training import fit_classifier, make_recipe
from d2_nucleus.utils import rle as rle_util

from test_slide import LabelSegmenter, _cfg, _label_slide

CLASSES = ("small", "large")
COLORS = ((0, 160, 0), (200, 0, 0))
THRESHOLD = 500  # px: a nucleus of more pixels is "large"


class FeatureSegmenter(LabelSegmenter):
    """The stand-in model, whose box (and context) features of a nucleus are [its area in px, 1]."""

    def __init__(self, fail_after=None):
        super().__init__(fail_after)
        torch.manual_seed(0)
        self.model = torch.nn.Linear(2, 2)  # what the classifier's model fingerprint is taken of

    def __call__(self, images):
        outputs = super().__call__(images)
        for inst in outputs:
            area = torch.tensor([float(rle_util.rle_counts(r)[1::2].sum()) for r in inst.pred_rles])
            inst.box_features = torch.stack([area, torch.ones_like(area)], dim=1)
            inst.context_features = inst.box_features.clone()
        return outputs


@pytest.fixture(scope="module")
def typed(tmp_path_factory):
    root = tmp_path_factory.mktemp("slide_types")
    path = str(root / "labels.svs")
    _label_slide(path, seed=3, size=(500, 700), n=200)
    rng = np.random.default_rng(0)
    area = rng.uniform(50, 1300, 2000)
    x = np.stack([area, np.ones_like(area)], axis=1)
    recipe = make_recipe(["box"], 2, model_fingerprint(FeatureSegmenter().model), 0.25, "ruifrok")
    clf = fit_classifier(x, (area > THRESHOLD).astype(np.int64), CLASSES, COLORS, recipe, hidden_dim=0, epochs=300,
                         lr=0.05, weight_decay=0.0, dropout=0.0)
    classifier = str(root / "types.npz")
    clf.save(classifier)
    return {"root": root, "slide": path, "classifier": classifier}


def _typed_cfg(classifier, *opts):
    return _cfg("TYPES.CLASSIFIER", classifier, "TYPES.BOX_FEATURES", "True", "SLIDE.BATCH_SIZE", "2", *opts)


def test_every_nucleus_typed_by_its_own_features(typed, tmp_path):
    out = tmp_path / "out"
    summary = segment_slide(FeatureSegmenter(), _typed_cfg(typed["classifier"]), typed["slide"], str(out), progress=False)
    table = pq.read_table(out / "labels.parquet").to_pydict()
    area = np.asarray(table["area_px"])
    types = np.asarray(table["type"], dtype=object)
    sure = np.abs(area - THRESHOLD) > 60  # the learnt boundary is within a few px of the threshold
    assert sure.sum() > 100 and (types[sure] == np.where(area[sure] > THRESHOLD, "large", "small")).all()
    probs = np.stack([table["prob_small"], table["prob_large"]], axis=1)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-6)
    assert (np.asarray(CLASSES, dtype=object)[probs.argmax(axis=1)] == types).all()
    # QuPath: the type's name and colour, its probabilities as measurements, in the table's order
    with open(out / "labels.geojson") as f:
        features = json.load(f)["features"]
    assert [f["properties"]["classification"]["name"] for f in features] == list(types)
    assert {tuple(f["properties"]["classification"]["color"]) for f in features} == set(COLORS)
    assert [f["properties"]["measurements"]["Probability large"] for f in features] == pytest.approx(table["prob_large"])
    # summary: count, fraction and density per mm^2 of tissue of each type
    assert summary["type_classifier"] == typed["classifier"]
    n_large = int((types == "large").sum())
    assert summary["types"]["large"]["count"] == n_large and summary["nuclei"] == len(types)
    assert summary["types"]["large"]["fraction"] == pytest.approx(n_large / len(types))
    assert summary["types"]["large"]["density_per_mm2"] == pytest.approx(n_large / summary["tissue_mm2"])
    assert summary["types"]["small"]["color"] == list(COLORS[0]) and summary["seconds_types"] >= 0
    # the figures show the types: a third overview panel, the measurement figure's type panel
    import cv2

    plain = tmp_path / "plain"
    segment_slide(FeatureSegmenter(), _cfg("SLIDE.BATCH_SIZE", "2"), typed["slide"], str(plain), progress=False)
    for name in ("labels.overview.png", "labels.measurements.png"):
        assert cv2.imread(str(out / name)).shape[1] > cv2.imread(str(plain / name)).shape[1], name
    assert "type" not in pq.read_schema(plain / "labels.parquet").names


def test_resume_keeps_the_types(typed, tmp_path):
    cfg = _typed_cfg(typed["classifier"])
    full = tmp_path / "full"
    segment_slide(FeatureSegmenter(), cfg, typed["slide"], str(full), progress=False)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        segment_slide(FeatureSegmenter(fail_after=2), cfg, typed["slide"], str(out), progress=False)
    tiles = out / ".labels.work" / "tiles"
    done = json.loads(sorted(tiles.iterdir())[0].read_text())
    assert len(done["types"]["index"]) == len(done["types"]["probs"]) == len(done["nuclei"])
    segment_slide(FeatureSegmenter(), cfg, typed["slide"], str(out), progress=False)
    for name in ("labels.geojson", "labels.overview.png", "labels.measurements.png"):
        assert (full / name).read_bytes() == (out / name).read_bytes(), name
    assert pq.read_table(out / "labels.parquet").equals(pq.read_table(full / "labels.parquet"))
    # a work folder of a run without types is started over, not resumed without them
    out2 = tmp_path / "untyped_first"
    with pytest.raises(KeyboardInterrupt):
        segment_slide(FeatureSegmenter(fail_after=2), _cfg("SLIDE.BATCH_SIZE", "2"), typed["slide"], str(out2),
                      progress=False)
    summary = segment_slide(FeatureSegmenter(), cfg, typed["slide"], str(out2), progress=False)
    assert summary["resumed_tiles"] == 0
    assert pq.read_table(out2 / "labels.parquet").equals(pq.read_table(full / "labels.parquet"))


def test_bad_classifiers_for_slides(typed, tmp_path):
    # made for another model's features: one line naming the file, no output
    other = FeatureSegmenter()
    with torch.no_grad():
        other.model.weight.add_(1.0)
    out = tmp_path / "other"
    with pytest.raises(BadClassifierError, match="another segmentation model"):
        segment_slide(other, _typed_cfg(typed["classifier"]), typed["slide"], str(out), progress=False)
    assert not out.exists() or not any(p.name.startswith("labels.") for p in out.iterdir())
    # a model that does not compute the features (TYPES.BOX_FEATURES off), or none to check
    no_features = LabelSegmenter()
    no_features.model = FeatureSegmenter().model
    with pytest.raises(RuntimeError, match="TYPES.BOX_FEATURES"):
        segment_slide(no_features, _cfg("TYPES.CLASSIFIER", typed["classifier"]), typed["slide"],
                      str(tmp_path / "nofeatures"), progress=False)
    with pytest.raises(BadClassifierError, match="has no model"):
        segment_slide(LabelSegmenter(), _typed_cfg(typed["classifier"]), typed["slide"], str(tmp_path / "c"),
                      progress=False)
    # corrupted and missing files
    broken = tmp_path / "broken.npz"
    broken.write_bytes(open(typed["classifier"], "rb").read()[:300])
    for path, message in ((broken, "corrupt or truncated"), (tmp_path / "missing.npz", "does not exist")):
        with pytest.raises(BadClassifierError, match=message):
            segment_slide(FeatureSegmenter(), _typed_cfg(str(path)), typed["slide"], str(tmp_path / "b"), progress=False)
