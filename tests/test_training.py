"""Configs, trainer, --eval-only, resume, and a real-learning check (all on CPU, tiny sizes)."""
import glob
import os
import subprocess
import sys

import pytest
import torch

from d2_nucleus.config import get_nucleus_cfg
from d2_nucleus.engine import NucleusTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-")
)

# Shrinks any of our configs to a few-second CPU run; the architecture (heads, cascade, PointRend,
# MaskIoU, GN or not, groups) stays as configured.
TINY = [
    "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "32",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "300",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "300",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
    "MODEL.ROI_BOX_HEAD.CONV_DIM", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    "MODEL.ROI_MASK_HEAD.FC_DIM", "64",
    "MODEL.POINT_HEAD.FC_DIM", "32",
    "MODEL.ROI_MASKIOU_HEAD.CONV_DIM", "32",
    "MODEL.ROI_MASKIOU_HEAD.FC_DIM", "64",
    "INPUT.CROP.SIZE", "[128, 128]",
    "INPUT.MIN_SIZE_TRAIN", "(128,)",
    "SOLVER.IMS_PER_BATCH", "1",
    "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.CHECKPOINT_PERIOD", "1000",
    "TEST.DETECTIONS_PER_IMAGE", "200",
    "TEST.EVAL_PERIOD", "0",
    "DATALOADER.NUM_WORKERS", "0",
]


def tiny_cfg(config, data_root, output_dir, *opts):
    cfg = get_nucleus_cfg(os.path.join(ROOT, config), TINY, data_root=data_root)
    groups = cfg.MODEL.RESNETS.NUM_GROUPS
    # bottleneck channels stay multiples of 32 (GroupNorm's 32 groups)
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 1 if groups > 1 else 32
    if cfg.MODEL.RESNETS.DEPTH in (18, 34):
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.merge_from_list(["OUTPUT_DIR", str(output_dir)] + list(opts))
    return cfg


@pytest.mark.parametrize("config", CONFIGS)
def test_config_builds_trains_and_evaluates(config, synthetic_prepared, tmp_path):
    cfg = tiny_cfg(config, synthetic_prepared, tmp_path, "SOLVER.MAX_ITER", "1", "TEST.DETECTIONS_PER_IMAGE", "100")
    assert cfg.TEST.CHALLENGE_MAX_DETS == 100
    if cfg.MODEL.MASKIOU_ON:
        assert cfg.MODEL.ROI_HEADS.NAME == "MaskScoringROIHeads"
    trainer = NucleusTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # one step, then the final evaluation on nucleus_val
    losses = trainer.storage.latest()
    assert torch.isfinite(torch.tensor(losses["total_loss"][0]))
    assert "loss_mask" in losses
    if cfg.MODEL.MASKIOU_ON:
        assert "loss_maskiou" in losses
    assert os.path.isfile(tmp_path / "model_final.pth")
    res = trainer._last_eval_results
    assert {"bbox", "segm", "nucleus"} <= set(res)
    assert "AP50@100" in res["segm"]


def _train(cfg, hooks=()):
    trainer = NucleusTrainer(cfg)
    trainer.register_hooks(list(hooks))
    trainer.resume_or_load(resume=True)
    return trainer


class _Interrupt(Exception):
    pass


def test_resume_restores_iteration_optimizer_and_scheduler(synthetic_prepared, tmp_path):
    from detectron2.engine import HookBase

    cfg = tiny_cfg("configs/demo/mask_rcnn_R_18_FPN_demo.yaml", synthetic_prepared, tmp_path,
                   "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3", "SOLVER.STEPS", "(4,)",
                   "DATASETS.TEST", "()")

    class Crash(HookBase):
        def after_step(self):
            if self.trainer.iter == 4:
                raise _Interrupt()

    t1 = _train(cfg, [Crash()])
    with pytest.raises(_Interrupt):
        t1.train()
    ckpt = torch.load(tmp_path / "model_0000002.pth", weights_only=True)
    assert ckpt["iteration"] == 2
    saved_opt = ckpt["trainer"]["_trainer"]["optimizer"]
    assert saved_opt["state"], "optimizer momentum is in the checkpoint"

    t2 = _train(cfg)  # resume from last_checkpoint (model_0000002.pth)
    assert t2.start_iter == 3
    state = t2.optimizer.state_dict()
    for k, v in saved_opt["state"].items():
        assert torch.equal(state["state"][k]["momentum_buffer"], v["momentum_buffer"])
    assert t2.scheduler.last_epoch == 3
    lrs = [g["lr"] for g in t2.optimizer.param_groups]
    assert lrs == pytest.approx([cfg.SOLVER.BASE_LR] * len(lrs))  # iteration 3: past warm-up, before the step
    t2.train()
    assert t2.iter == 6 and os.path.isfile(tmp_path / "model_final.pth")


@pytest.fixture(scope="module")
def trained_demo(synthetic_prepared, tmp_path_factory):
    """The demo model trained briefly on the synthetic training images."""
    out = tmp_path_factory.mktemp("demo_train")
    cfg = tiny_cfg("configs/demo/mask_rcnn_R_18_FPN_demo.yaml", synthetic_prepared, out,
                   "SOLVER.MAX_ITER", "3", "DATASETS.TEST", "()")
    trainer = NucleusTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return cfg, str(out / "model_final.pth")


def test_eval_only_cli_prints_and_saves_metrics(trained_demo, synthetic_prepared, tmp_path):
    cfg, weights = trained_demo
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"),
           "--config-file", os.path.join(ROOT, "configs/demo/mask_rcnn_R_18_FPN_demo.yaml"),
           "--data-root", synthetic_prepared, "--eval-only"] + TINY + [
           "MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(tmp_path), "MODEL.RESNETS.WIDTH_PER_GROUP", "32",
           "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    log = r.stdout + r.stderr
    for key in ("AP50@100", "AJI", "PQ"):
        assert key in log
    saved = glob.glob(str(tmp_path / "inference" / "nucleus_val" / "*.json"))
    assert saved, "metrics and predictions are saved"


def test_train_only_adds_a_maskiou_head_to_a_trained_model(trained_demo, synthetic_prepared, tmp_path):
    """SOLVER.TRAIN_ONLY: a MaskIoU head learns on top of trained weights that stay as they were."""
    _, weights = trained_demo
    cfg = tiny_cfg("configs/demo/mask_rcnn_R_18_FPN_demo.yaml", synthetic_prepared, tmp_path,
                   "MODEL.WEIGHTS", weights, "MODEL.RESNETS.WIDTH_PER_GROUP", "32",
                   "MODEL.ROI_HEADS.NAME", "MaskScoringROIHeads", "MODEL.MASKIOU_ON", "True",
                   "SOLVER.TRAIN_ONLY", "('roi_heads.maskiou_head',)", "SOLVER.BASE_LR", "0.01",
                   "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()")
    trainer = NucleusTrainer(cfg)
    trainer.resume_or_load(resume=False)
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    assert "loss_maskiou" in trainer.storage.latest()
    after = trainer.model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed and all(k.startswith("roi_heads.maskiou_head.") for k in changed), changed
    trainable = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert trainable == {id(p) for n, p in trainer.model.named_parameters() if n.startswith("roi_heads.maskiou_head.")}


def test_train_only_naming_no_parameter_is_a_config_error(synthetic_prepared, tmp_path):
    from d2_nucleus.config import ConfigError

    cfg = tiny_cfg("configs/demo/mask_rcnn_R_18_FPN_demo.yaml", synthetic_prepared, tmp_path,
                   "SOLVER.TRAIN_ONLY", "('roi_heads.maskiou',)")  # MASKIOU_ON is off: no such head
    with pytest.raises(ConfigError, match="SOLVER.TRAIN_ONLY: 'roi_heads.maskiou' names no parameter"):
        NucleusTrainer(cfg)


def test_missing_weights_stop_with_a_clear_message(synthetic_prepared, tmp_path):
    cfg = tiny_cfg("configs/mask_rcnn_R_50_FPN_3x.yaml", synthetic_prepared, tmp_path,
                   "MODEL.WEIGHTS", str(tmp_path / "missing.pkl"))
    trainer = NucleusTrainer(cfg)
    with pytest.raises(FileNotFoundError, match="missing.pkl.*configs/scratch"):
        trainer.resume_or_load(resume=False)


def test_learns_synthetic_nuclei(tmp_path_factory):
    """It learns: the demo model, trained for a few minutes of CPU on 4 small synthetic images,
    segments them with a high AP50 (an untrained model scores ~0)."""
    from d2_nucleus.data import generate_dataset, prepare_dataset

    base = tmp_path_factory.mktemp("learn")
    generate_dataset(str(base / "raw"), num_train=4, num_test=1, image_size=128, nuclei_per_image=(20, 25),
                     min_diameter=12, max_diameter=26, seed=3)
    prepare_dataset(str(base / "raw"), str(base / "prepared"), ratio=0.0, workers=1, progress=False)
    cfg = get_nucleus_cfg(os.path.join(ROOT, "configs/demo/mask_rcnn_R_18_FPN_demo.yaml"), [
        "MODEL.DEVICE", "cpu",
        "INPUT.CROP.SIZE", "[128, 128]", "INPUT.MIN_SIZE_TRAIN", "(128,)",
        "SOLVER.MAX_ITER", "150", "SOLVER.STEPS", "(120,)", "SOLVER.WARMUP_ITERS", "20",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.02",
        "DATASETS.TRAIN", '("nucleus_train",)', "DATASETS.TEST", '("nucleus_train",)',
        "TEST.DETECTIONS_PER_IMAGE", "100", "DATALOADER.NUM_WORKERS", "0",
        "OUTPUT_DIR", str(base / "out"),
    ], data_root=str(base / "prepared"))
    from detectron2.utils.env import seed_all_rng

    seed_all_rng(0)  # sampler, crops and initial weights: the same run every time
    trainer = NucleusTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    res = trainer._last_eval_results
    print("learned:", res)
    assert res["segm"]["AP50"] > 70, res
    assert res["nucleus"]["PQ"] > 0.5, res
