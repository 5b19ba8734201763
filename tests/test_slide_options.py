# -*- coding: utf-8 -*-
"""
Every slide flag through every slide entry point (tools/segment_slides.py, tools/segment_cluster.py):
each flag maps onto its config key in one place (d2_nucleus/slide/options.py) and takes effect in
what the tool writes; both tools write the same bytes for the same flags.
"""
import json
import os

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from d2_nucleus.config import get_nucleus_cfg
from d2_nucleus.data.synthetic import render_nuclei_image
from d2_nucleus.data.synthetic_slide import write_synthetic_slide
from d2_nucleus.slide.options import FLAG_KEYS

from tools_cli import load_tool
from weights import save_untrained_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo", "mask_rcnn_R_18_FPN_demo.yaml")
ENTRY_POINTS = ("segment_slides", "segment_cluster")
FAST = ["MODEL.RPN.POST_NMS_TOPK_TEST", "100", "TEST.DETECTIONS_PER_IMAGE", "20", "SLIDE.TISSUE.THUMBNAIL_MPP", "1.0"]


@pytest.fixture(scope="module")
def slide_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("slide_options")
    weights = save_untrained_weights(get_nucleus_cfg(DEMO_CONFIG, ["MODEL.DEVICE", "cpu"]), root / "model.pth")
    rng = np.random.default_rng(0)
    tissue, _ = render_nuclei_image(rng, 300, 340, 50)
    slide = root / "case.svs"
    write_synthetic_slide(str(slide), 560, 500, [(tissue, 60, 80)], mpp=0.252, min_level_side=100)
    mask = np.zeros((50, 56), np.uint8)
    mask[:, :30] = 255  # the left half is "tissue"
    cv2.imwrite(str(root / "mask.png"), mask)
    return {"root": root, "weights": weights, "slide": str(slide), "mask": str(root / "mask.png"),
            "types": _type_classifier(weights, root / "types.npz")}


def _type_classifier(weights, path):
    """A classifier of the model's box and context features and the measurements, trained on random rows."""
    from d2_nucleus.engine import NucleusPredictor
    from d2_nucleus.types.features import MEASUREMENT_FEATURES, model_fingerprint
    from d2_nucleus.types.training import fit_classifier, make_recipe

    cfg = get_nucleus_cfg(DEMO_CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights])
    dim = cfg.MODEL.ROI_BOX_HEAD.FC_DIM
    recipe = make_recipe(["box", "context", "measurements"], dim, model_fingerprint(NucleusPredictor(cfg).model), 0.2,
                         "ruifrok", context_scale=3.0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2 * dim + len(MEASUREMENT_FEATURES)))
    fit_classifier(x, (x[:, 0] > 0).astype(np.int64), ["a", "b"], [(1, 2, 3), (4, 5, 6)], recipe, hidden_dim=8,
                   epochs=2).save(str(path))
    return str(path)


# Two sets of flags that between them give every slide flag a non-default value, and what each
# must change in the outputs.
SETS = {
    "a": (["--tile-size", "256", "--overlap", "32", "--batch-size", "1", "--mpp", "0.26", "--model-mpp", "0.26",
           "--score-thresh", "0.0", "--no-tissue-mask", "--csv", "--stain", "macenko", "--types", "{types}"],
          {"tile_size": 256, "overlap": 32, "batch_size": 1, "mpp": [0.26, 0.26], "model_mpp": 0.26,
           "score_thresh": 0.0, "tissue": "off", "stain": "macenko", "type_classifier": "{types}"}),
    "b": (["--tile-size", "320", "--overlap", "48", "--batch-size", "2", "--score-thresh", "0.2",
           "--tissue-mask", "{mask}", "--no-measurements"],
          {"tile_size": 320, "overlap": 48, "batch_size": 2, "mpp": [0.252, 0.252], "model_mpp": 0.25,
           "score_thresh": 0.2, "tissue": "mask {mask}", "measurements": None, "stain": None, "types": None}),
}


def test_the_sets_cover_every_flag():
    given = {a[2:].replace("-", "_") for args, _ in SETS.values() for a in args if a.startswith("--")}
    assert set(FLAG_KEYS) <= given, sorted(set(FLAG_KEYS) - given)


def _run(tool, slide_data, out, args, extra=()):
    argv = [slide_data["slide"], "--out", str(out), "--config-file", DEMO_CONFIG, "--weights", slide_data["weights"],
            "--device", "cpu", "--quiet", *args, "--opts", *FAST, *extra]
    if tool == "segment_cluster":
        return load_tool(tool).main(argv + ["--workers", "1", "--threads-per-worker", "1", "--dashboard-address", ":0"])
    # the worker's torch thread count (1): float reductions split work by thread, so the last bits
    # of the scores differ between 1 and 2 threads
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return load_tool(tool).main(argv)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(SETS))
def test_every_flag_takes_effect_in_every_entry_point(slide_data, tmp_path, name):
    args, expected = SETS[name]
    args = [a.format(mask=slide_data["mask"], types=slide_data["types"]) for a in args]
    outputs = {}
    for tool in ENTRY_POINTS:
        out = tmp_path / tool
        assert _run(tool, slide_data, out, args) == 0, tool
        with open(out / "case.summary.json") as f:
            summary = json.load(f)
        for key, value in expected.items():
            value = value.format(mask=slide_data["mask"], types=slide_data["types"]) if isinstance(value, str) else value
            assert summary[key] == pytest.approx(value) if isinstance(value, (int, float, list)) else summary[key] == value, (
                tool, key, summary[key], value)
        assert summary["device"] == "cpu" and summary["weights"] == slide_data["weights"]
        assert os.path.isfile(out / "case.csv") == ("--csv" in args), tool
        assert os.path.isfile(out / "case.measurements.png") == ("--no-measurements" not in args), tool
        typed = "--types" in args
        assert ("type" in pq.read_schema(out / "case.parquet").names) == typed, tool
        assert (summary["types"] is not None and summary["nuclei"] > 0
                and sum(t["count"] for t in summary["types"].values()) == summary["nuclei"]
                ) if typed else summary["types"] is None, tool
        outputs[tool] = {n: (out / n).read_bytes() for n in ("case.geojson", "case.parquet", "case.overview.png")}
        outputs[tool]["config_sha256"] = summary["config_sha256"]
    assert outputs["segment_slides"] == outputs["segment_cluster"]


def test_opts_and_overwrite_take_effect_in_every_entry_point(slide_data, tmp_path):
    base = ["--tile-size", "256", "--overlap", "32", "--no-tissue-mask", "--no-measurements"]
    for tool in ENTRY_POINTS:
        out = tmp_path / tool
        assert _run(tool, slide_data, out, base) == 0
        first = json.loads((out / "case.summary.json").read_text())
        # the same command again: complete, nothing redone; --overwrite with --opts: redone with the override
        assert _run(tool, slide_data, out, base) == 0
        assert json.loads((out / "case.summary.json").read_text()) == first
        assert _run(tool, slide_data, out, base + ["--overwrite"], extra=["SLIDE.SEAM_TOLERANCE", "5"]) == 0
        again = json.loads((out / "case.summary.json").read_text())
        assert again["config_sha256"] != first["config_sha256"], tool
