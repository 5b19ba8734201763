# -*- coding: utf-8 -*-
"""
The CUDA paths: what can be checked without a GPU runs everywhere (device handling, the AMP trainer's
set-up and checkpoint, the cluster's GPU resources, the CUDA-CPU comparison); the rest needs CUDA and
skips without it (bench/gpu_check.sh runs this file on a GPU machine).
"""
import os
import sys
import types

import numpy as np
import pytest
import torch

from d2_nucleus.config import check_device, get_inference_cfg, get_nucleus_cfg
from d2_nucleus.evaluation.compare import compare_detections
from d2_nucleus.utils.rle import encode

from tools_cli import load_tool
from weights import save_untrained_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "configs", "demo", "mask_rcnn_R_18_FPN_demo.yaml")
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")
no_cuda = pytest.mark.skipif(CUDA, reason="checks the behaviour without CUDA")


def _result(image_id, score, y0, x0, h=8, w=10, shape=(64, 64)):
    mask = np.zeros(shape, np.uint8)
    mask[y0 : y0 + h, x0 : x0 + w] = 1
    rle = encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode()
    return {"image_id": image_id, "category_id": 1, "score": score, "segmentation": rle}


# -------------------------------------------------------------------------------------------------
# Without a GPU
# -------------------------------------------------------------------------------------------------
def test_compare_detections_pairs_by_mask_iou():
    a = [_result(1, 0.9, 0, 0), _result(1, 0.8, 20, 20), _result(1, 0.31, 40, 40), _result(2, 0.7, 5, 5)]
    # the same detections from "another device": one mask a pixel row shorter, one score moved, the
    # low-scoring one missing (fell under the threshold), listed in another order, plus an extra one
    b = [_result(2, 0.7, 5, 5), _result(1, 0.8, 20, 20, h=7), _result(1, 0.905, 0, 0), _result(1, 0.3, 50, 2)]
    cmp = compare_detections(a, b)
    assert cmp["detections_a"] == cmp["detections_b"] == 4 and cmp["images"] == 2
    assert cmp["matched"] == 3 and cmp["matched_fraction"] == pytest.approx(0.75)
    assert cmp["mask_iou_min"] == pytest.approx(7 / 8)
    assert cmp["mask_iou_median"] == 1.0 and cmp["mask_iou_ge_0.9"] == pytest.approx(2 / 3)
    assert cmp["score_diff_max"] == pytest.approx(0.005)
    assert cmp["unmatched_score_max"] == pytest.approx(0.31)
    empty = compare_detections([], [])
    assert empty["matched_fraction"] == 1.0 and empty["mask_iou_median"] is None


@no_cuda
def test_cuda_device_without_cuda_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(RuntimeError, match="CUDA is not available here.*use --device cpu"):
        check_device("cuda")
    with pytest.raises(RuntimeError, match="not one torch knows"):
        check_device("gpu0")
    assert check_device("cpu") == "cpu"
    weights = save_untrained_weights(get_nucleus_cfg(DEMO, ["MODEL.DEVICE", "cpu"]), tmp_path / "m.pth")
    image = tmp_path / "a.png"
    import cv2

    cv2.imwrite(str(image), np.full((32, 32, 3), 200, np.uint8))
    rc = load_tool("predict").main(["--config-file", DEMO, "--weights", weights, "--input", str(image),
                                    "--output", str(tmp_path / "answer.json"), "--device", "cuda", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "CUDA is not available" in err[0]
    assert not os.path.exists(tmp_path / "answer.json")


def test_cuda_config_stays_for_gpu_workers():
    """A Dask client without GPUs keeps ``--device cuda`` for its workers; an ordinal beyond the
    GPUs here is refused where a model is built."""
    cfg = get_inference_cfg(DEMO, device="cuda")
    assert cfg.MODEL.DEVICE == "cuda"
    with pytest.raises(RuntimeError, match="GPU"):
        check_device(f"cuda:{torch.cuda.device_count() if CUDA else 0}")


def test_amp_config_builds_amp_trainer_and_checkpoints_its_scaler(synthetic_prepared, tmp_path):
    """SOLVER.AMP.ENABLED gives Detectron2's AMPTrainer, whose grad-scaler state goes into training
    checkpoints and comes back on resume (TrainerStateMixin); on CUDA two AMP steps run first."""
    import warnings

    from d2_nucleus.engine import NucleusTrainer
    from test_training import tiny_cfg

    device = "cuda" if CUDA else "cpu"
    cfg = tiny_cfg("configs/demo/mask_rcnn_R_18_FPN_demo.yaml", synthetic_prepared, tmp_path,
                   "MODEL.DEVICE", device, "SOLVER.AMP.ENABLED", "True", "SOLVER.MAX_ITER", "2",
                   "DATASETS.TEST", "()")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradScaler without CUDA: "disabling"
        trainer = NucleusTrainer(cfg)
    assert type(trainer._trainer).__name__ == "AMPTrainer"
    assert "grad_scaler" in trainer.state_dict()["_trainer"]
    trainer.resume_or_load(resume=False)
    if CUDA:
        trainer.train()
        assert np.isfinite(trainer.storage.latest()["total_loss"][0])
        scale = trainer._trainer.grad_scaler.get_scale()
    else:  # AMPTrainer.run_step needs CUDA: a checkpoint as training writes it
        trainer.iter = 1
        trainer.checkpointer.save("model_final")  # and last_checkpoint names it
        scale = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed = NucleusTrainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    if CUDA:
        assert resumed._trainer.grad_scaler.get_scale() == scale


def test_cluster_asks_one_gpu_per_slide_task_on_cuda(monkeypatch, tmp_path):
    from d2_nucleus.slide import cluster

    class Stop(Exception):
        pass

    class FakeClient:
        def __init__(self):
            self.kwargs = []

        def submit(self, fn, *args, **kwargs):
            self.kwargs.append(kwargs)
            return object()

    def stop(futures):
        raise Stop()

    jobs = [cluster.SlideJob(str(tmp_path / "a.svs")), cluster.SlideJob(str(tmp_path / "b.svs"))]
    for device, resources in (("cuda", {"GPU": 1}), ("cpu", None)):
        cfg = get_inference_cfg(DEMO, device=device)
        client = FakeClient()
        with pytest.raises(Stop):
            cluster.segment_slides_on_cluster(client, cfg, jobs, str(tmp_path / device), on_submitted=stop,
                                              progress=False)
        assert [k["resources"] for k in client.kwargs] == [resources] * 2

    # LocalCluster: the resource on every worker with GPUs; one worker per GPU and 1 torch thread
    made = {}
    monkeypatch.setattr("distributed.LocalCluster", lambda **kw: made.update(kw) or "cluster")
    assert cluster.start_local_cluster(2, gpus=True) == "cluster"
    assert made["resources"] == {"GPU": 1} and made["n_workers"] == 2
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    args = types.SimpleNamespace(workers=None, threads_per_worker=None)
    assert load_tool("segment_cluster")._local_sizes(args, cuda=True) == (4, 1)

    # each LocalCluster worker (named 0..n-1) on its own GPU; elsewhere plain "cuda"
    import distributed

    monkeypatch.setattr(distributed, "get_worker", lambda: types.SimpleNamespace(name=6))
    assert cluster._worker_device("cuda") == "cuda:2"
    assert cluster._worker_device("cuda:1") == "cuda:1" and cluster._worker_device("cpu") == "cpu"

    def not_on_a_worker():
        raise ValueError("no worker")

    monkeypatch.setattr(distributed, "get_worker", not_on_a_worker)
    assert cluster._worker_device("cuda") == "cuda"


# -------------------------------------------------------------------------------------------------
# On CUDA
# -------------------------------------------------------------------------------------------------
CUDA_CONFIGS = ["configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml", "configs/demo/mask_rcnn_R_18_FPN_demo.yaml",
                "configs/scratch/mask_rcnn_R_50_FPN_scratch_gn.yaml",
                "configs/scratch/cascade_mask_rcnn_R_50_FPN_scratch_gn.yaml",
                "configs/scratch/point_rend_R_50_FPN_scratch_gn.yaml",
                "configs/scratch/ms_rcnn_X_101_32x8d_FPN_scratch_gn.yaml"]


@needs_cuda
@pytest.mark.parametrize("config", CUDA_CONFIGS)
def test_amp_training_and_evaluation_on_cuda(config, synthetic_prepared, tmp_path):
    from d2_nucleus.engine import NucleusTrainer
    from test_training import tiny_cfg

    cfg = tiny_cfg(config, synthetic_prepared, tmp_path, "MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", "True",
                   "SOLVER.MAX_ITER", "3", "SOLVER.CPU_BF16", "False", "TEST.DETECTIONS_PER_IMAGE", "100")
    trainer = NucleusTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # three AMP steps, then the evaluation on nucleus_val on CUDA
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 3 and np.all(np.isfinite(losses))
    assert "AP50@100" in trainer._last_eval_results["segm"]


@needs_cuda
def test_predictor_on_cuda_matches_cpu(synthetic_raw, tmp_path):
    """The same weights on CUDA and on the CPU: the same detections, within TF32's rounding."""
    from d2_nucleus.engine import NucleusPredictor
    from d2_nucleus.data.image_io import read_image
    from d2_nucleus.evaluation.coco_results import instances_to_coco_json

    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from gpu_check import PARITY

    opts = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05", "TEST.DETECTIONS_PER_IMAGE", "100",
            "SOLVER.CPU_BF16", "False"]
    weights = save_untrained_weights(get_nucleus_cfg(DEMO, ["MODEL.DEVICE", "cpu"]), tmp_path / "m.pth")
    test = os.path.join(synthetic_raw, "test")
    images = [read_image(os.path.join(test, f), format="BGR") for f in sorted(os.listdir(test))]
    runs = {}
    for device in ("cuda", "cpu"):
        predictor = NucleusPredictor(get_inference_cfg(DEMO, opts, weights, device))
        runs[device] = [r for i, inst in enumerate(predictor(images)) for r in instances_to_coco_json(inst, i)]
    cmp = compare_detections(runs["cuda"], runs["cpu"])
    assert cmp["detections_a"] > 0
    assert cmp["matched_fraction"] >= PARITY["matched_fraction"], cmp
    assert cmp["mask_iou_median"] >= PARITY["mask_iou_median"], cmp
    assert cmp["score_diff_p95"] <= PARITY["score_diff_p95"], cmp
