"""
The documented job on the real data, end to end and short ($D2_NUCLEUS_RAW_DATA; skipped when
unset), exactly as a user runs it: ``make demo DATA=<raw dataset>`` with the CPU recipe config for a
handful of iterations, i.e. tools/prepare_data.py -> tools/train_net.py -> --eval-only ->
tools/predict.py. Each step's output is checked. Every real image has hundreds of nuclei, which
the synthetic tests do not: this is the test that catches a crash of real training.
"""
import json
import os
import subprocess
import sys

import pytest
from pycocotools.coco import COCO

pytestmark = pytest.mark.realdata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = "configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml"
ITERS = 6


@pytest.fixture(scope="module")
def demo_run(real_raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("realjob") / "demo"
    cmd = ["make", "--no-print-directory", "-C", ROOT, "demo", f"DATA={real_raw}", f"DEMO_DIR={out}",
           f"DEMO_CONFIG={RECIPE}", f"DEMO_ITERS={ITERS}", f"PYTHON={sys.executable}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return str(out), log


def test_real_prepare(demo_run, real_raw):
    out, _ = demo_run
    with open(os.path.join(out, "prepared", "annotations", "instance_train.json")) as f:
        train = json.load(f)
    with open(os.path.join(out, "prepared", "annotations", "instance_val.json")) as f:
        val = json.load(f)
    assert len(train["images"]) == 19 and len(val["images"]) == 5
    assert len(train["annotations"]) + len(val["annotations"]) == 14598


def test_real_training_ran(demo_run):
    out, log = demo_run
    assert os.path.isfile(os.path.join(out, "output", "model_final.pth"))
    with open(os.path.join(out, "output", "metrics.json")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    iters = [r["iteration"] for r in rows if "total_loss" in r]
    assert iters and max(iters) == ITERS - 1
    assert all(r["total_loss"] == r["total_loss"] for r in rows if "total_loss" in r)  # no NaN


def test_real_eval_only_metrics(demo_run):
    out, _ = demo_run
    path = os.path.join(out, "output", "inference", "nucleus_val", "nucleus_metrics.json")
    with open(path) as f:
        metrics = json.load(f)
    flat = json.dumps(metrics)
    for key in ("AP50@100", "AJI", "PQ"):
        assert key in flat, f"{key} missing from {path}"


def test_real_answer_json(demo_run, real_raw):
    out, _ = demo_run
    with open(os.path.join(real_raw, "test_img_ids.json")) as f:
        listed = json.load(f)
    gt = COCO()
    gt.dataset = {"images": [{"id": e["id"], "file_name": e["file_name"], "height": e["height"],
                              "width": e["width"]} for e in listed],
                  "annotations": [], "categories": [{"id": 1, "name": "nucleus"}]}
    gt.createIndex()
    dt = gt.loadRes(os.path.join(out, "answer.json"))
    ids = {a["image_id"] for a in dt.dataset["annotations"]}
    assert ids == {e["id"] for e in listed} and len(listed) == 6
    assert os.path.isfile(os.path.join(out, "answer.zip"))
