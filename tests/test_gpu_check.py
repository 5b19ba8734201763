# -*- coding: utf-8 -*-
"""
The CUDA check's dry run (``bench/gpu_check.sh --device cpu``): every step of the GPU machine's run,
on the CPU with tiny sizes, ends without error and writes every figure into the JSON.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ["env", "data", "train_r18", "eval_only", "predict", "infer_r18", "slide", "train_r50_b1", "train_r50_b2",
         "train_r50_b2_fp32", "infer_r50", "cluster", "tests"]
TRAIN_FIGURES = {"s_per_iter", "images_per_s", "data_time_median", "loss_first", "loss_last", "losses_finite",
                 "loss_falls", "losses", "trainer", "amp", "peak_rss_mib"}


@pytest.mark.slow
def test_dry_run_runs_every_step_and_reports_its_figures(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable)
    proc = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_check.sh"), "--device", "cpu",
                           "--work", str(tmp_path / "work")],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert (out / "gpu_check.log").is_file()
    with open(out / "gpu_check.json") as f:
        r = json.load(f)
    assert r["failed_steps"] == [] and r["failed_checks"] == [], (r["failed_steps"], r["failed_checks"],
                                                                   proc.stdout[-3000:])
    assert proc.returncode == 0
    steps = r["steps"]
    assert list(steps) == STEPS
    for name, step in steps.items():
        assert step["ok"] and step["error"] is None and step["seconds"] > 0, name
        assert step["gpu"] is None, name  # no nvidia-smi here: the field is there, empty
    assert steps["env"]["missing_modules"] == {} and steps["env"]["versions"]["pb1-detectron2"]
    for name in ("train_r18", "train_r50_b1", "train_r50_b2", "train_r50_b2_fp32"):
        t = steps[name]
        assert TRAIN_FIGURES <= set(t), name
        assert t["losses_finite"] and t["s_per_iter"] > 0 and len(t["losses"]) == t["iters"] == t["max_iter"]
        assert t["amp"] is False and t["trainer"] == "SimpleTrainer"  # AMP needs CUDA
    assert steps["train_r50_b2"]["batch"] == 2 and "amp_speedup" not in steps["train_r50_b2_fp32"]
    assert "AP50@100" in steps["eval_only"]["metrics"]["results"]["segm"]
    cmp = steps["predict"]["compare_cpu_vs_cpu"]
    assert cmp["detections_a"] == cmp["detections_b"] > 0 and cmp["matched_fraction"] == 1.0
    assert cmp["score_diff_max"] == 0.0 and steps["predict"]["checks"] == {"parity_cpu": True}
    for name in ("infer_r18", "infer_r50"):
        assert steps[name]["s_per_image"] > 0 and steps[name]["detections"] >= 0
    slide = steps["slide"]
    assert slide["tiles_run"] > 0 and slide["tissue_mm2"] > 0
    assert slide["tiles_per_s"] > 0 and slide["tissue_megapixels_per_s"] > 0 and slide["s_per_mm2"] > 0
    assert steps["cluster"]["done"] == steps["cluster"]["slides"] == 2
    assert steps["tests"]["passed"] > 0 and "failed" not in steps["tests"]
