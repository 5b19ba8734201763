# -*- coding: utf-8 -*-
"""The config keys d2_nucleus adds to Detectron2's defaults (model, data, evaluation, inference)."""
from detectron2.config import CfgNode as CN

__all__ = ["TRAINING_DATA_MPP", "add_nucleus_config", "input_resize_factor", "model_mpp"]

# Resolution of the training data (MoNuSeg: 40x scans, ~0.25 um/px), the default of
# MODEL.PIXEL_SIZE_UM.
TRAINING_DATA_MPP = 0.25


def add_nucleus_config(cfg):
    """
    Add config keys for d2_nucleus. Safe to call on a config that already has them.
    """
    if hasattr(cfg, "NUCLEUS"):
        return
    cfg.NUCLEUS = CN()
    # Root of the prepared dataset (tools/prepare_data.py output: annotations/, nucleus_data/).
    # Empty: use $D2_NUCLEUS_DATA, then "datasets/nucleus".
    cfg.NUCLEUS.DATA_ROOT = ""
    # More prepared sets (tools/import_annotations.py --out), "NAME=PATH" each: registers NAME_train,
    # NAME_val, NAME_all_train and NAME_test beside nucleus_*, for DATASETS.TRAIN / DATASETS.TEST.
    cfg.NUCLEUS.EXTRA_DATA_ROOTS = ()
    # Binarisation threshold of the mask head's probabilities.
    cfg.NUCLEUS.MASK_THRESHOLD = 0.5
    # Seconds a download of http(s):// or detectron2:// weights (MODEL.WEIGHTS, --weights) may wait
    # for the server at each step (connecting, each read) before the run stops with an error
    # (checkpoint.fetch_weights; 0 = wait forever). A server that accepts and never answers would hang.
    cfg.MODEL.WEIGHTS_DOWNLOAD_TIMEOUT = 60.0
    # The resolution the model works at, in micrometres per pixel: the training data's (MoNuSeg, 40x
    # scans: TRAINING_DATA_MPP). Inputs of another resolution (tools/predict.py --mpp, a slide's
    # metadata) are resized to it for detection; outputs stay in the input's pixels.
    cfg.MODEL.PIXEL_SIZE_UM = TRAINING_DATA_MPP

    # Test images (evaluation, tools/predict.py, slide tiles) are resized by this factor of their
    # native size when it is not 1 (replacing MIN_SIZE_TEST); outputs are in the image's pixels.
    # Upscaling helps small nuclei: BENCHMARKS.md "Test-time upscaling".
    cfg.INPUT.TEST_SCALE = 1.0

    # ---------------------------------------------------------------------------------------------
    # Training augmentation for H&E tiles (applied after Detectron2's resize/crop/flip)
    # ---------------------------------------------------------------------------------------------
    # Random 0/90/180/270 degree rotations (tissue has no orientation).
    cfg.INPUT.ROT90 = True
    # Vertical flip in addition to INPUT.RANDOM_FLIP (horizontal).
    cfg.INPUT.VFLIP = True
    cfg.INPUT.STAIN_JITTER = CN()
    cfg.INPUT.STAIN_JITTER.ENABLED = True
    # Per-channel scale/shift of the haematoxylin/eosin/DAB optical densities (Tellez et al. 2018).
    cfg.INPUT.STAIN_JITTER.SIGMA_SCALE = 0.05
    cfg.INPUT.STAIN_JITTER.SIGMA_SHIFT = 0.05
    # Random brightness / contrast factors in [1 - x, 1 + x].
    cfg.INPUT.STAIN_JITTER.BRIGHTNESS = 0.1
    cfg.INPUT.STAIN_JITTER.CONTRAST = 0.1

    # ---------------------------------------------------------------------------------------------
    # Mask Scoring R-CNN (Huang et al. 2019): MaskIoU head
    # ---------------------------------------------------------------------------------------------
    cfg.MODEL.MASKIOU_ON = False
    cfg.MODEL.ROI_MASKIOU_HEAD = CN()
    cfg.MODEL.ROI_MASKIOU_HEAD.NAME = "MaskIoUHead"
    cfg.MODEL.ROI_MASKIOU_HEAD.CONV_DIM = 256
    cfg.MODEL.ROI_MASKIOU_HEAD.NUM_CONV = 4
    cfg.MODEL.ROI_MASKIOU_HEAD.FC_DIM = 1024
    cfg.MODEL.ROI_MASKIOU_HEAD.NORM = ""
    cfg.MODEL.ROI_MASKIOU_HEAD.LOSS_WEIGHT = 1.0

    # Train only the parameters whose names start with one of these prefixes (e.g.
    # "roi_heads.maskiou_head" to add a MaskIoU head to a trained model); the rest are frozen
    # (engine/trainable.py). Empty: train everything.
    cfg.SOLVER.TRAIN_ONLY = ()

    # ---------------------------------------------------------------------------------------------
    # Evaluation
    # ---------------------------------------------------------------------------------------------
    # The challenge metric: segm AP@0.5 counting the top-N scoring detections per image.
    cfg.TEST.CHALLENGE_MAX_DETS = 100
    # AJI / PQ / Dice from instance label maps built of detections scoring at least this.
    cfg.TEST.LABEL_MAP_SCORE_THRESH = 0.5
    # Painting them (higher score first), a detection left with less than this fraction of its
    # mask free is dropped instead of leaving a fragment (0: keep every fragment). Evaluation's
    # label maps and tools/predict.py's label maps, overlays, GeoJSON and measurements use it.
    cfg.TEST.LABEL_MAP_MIN_VISIBLE = 0.0
    # Detection score = class score x maskness ** this (the mean probability of the pixels its
    # mask keeps; modeling/maskness.py): ranks crisp masks above unsure ones. 0 = class score only.
    cfg.TEST.MASKNESS_POWER = 0.0
    cfg.TEST.NUCLEUS_METRICS = True
    # Keep model_best.pth by this metric ("task/metric" of the evaluation results; "" = off).
    cfg.TEST.BEST_METRIC = "segm/AP50"
    cfg.TEST.BEST_METRIC_MODE = "max"

    # ---------------------------------------------------------------------------------------------
    # Speed on CPU
    # ---------------------------------------------------------------------------------------------
    # bfloat16 autocast on CPU around each whole training step (forward, loss, backward) and around
    # evaluation and prediction: "auto" (bf16 where the CPU computes it natively, AMX; float32
    # elsewhere: utils/autocast.py), True or False to force it.
    cfg.SOLVER.CPU_BF16 = "auto"
    # Channels-last memory format for the model and images (any device; on CPU the kernels of
    # MODEL.CPU read it as it is).
    cfg.MODEL.CHANNELS_LAST = False
    # The box predictor (class scores, box deltas) in float32 under bf16/fp16 autocast, any device:
    # bf16 scores take steps of 1/256 and hundreds of nuclei tie (modeling/float32_heads.py).
    cfg.MODEL.ROI_BOX_HEAD.FLOAT32_PREDICTOR = True

    # The backbone's (and FPN's) GroupNorms normalise with statistics fixed after training, so a
    # nucleus's features do not depend on the rest of the input (whole-slide tiles next to glass).
    # Needs weights calibrated by tools/freeze_group_norm.py (modeling/frozen_group_norm.py).
    cfg.MODEL.FROZEN_GROUP_NORM = False

    # ---------------------------------------------------------------------------------------------
    # Inference: test-time augmentation (tools/predict.py --tta; modeling/test_time_augmentation.py)
    # and the mask head's memory (modeling/meta_arch.py)
    # ---------------------------------------------------------------------------------------------
    # Scales relative to each image's test size, i.e. its native size x INPUT.TEST_SCALE (1.0 = the
    # test size itself). When non-empty they replace Detectron2's absolute TEST.AUG.MIN_SIZES.
    # Default: the test size only (nuclei are small).
    cfg.TEST.AUG.SCALES = (1.0,)
    # Vertical flips too (TEST.AUG.FLIP is Detectron2's horizontal flip; both: 4 passes a scale).
    cfg.TEST.AUG.VFLIP = True
    # NucleusRCNN runs the mask head on at most this many detections at a time at inference
    # (~2.5 MB of activations a detection with the default head on CPU; 0 = all at once).
    cfg.TEST.MASK_HEAD_CHUNK_SIZE = 256


def model_mpp(cfg) -> float:
    """The resolution the model works at, in um/px (``MODEL.PIXEL_SIZE_UM``)."""
    return float(cfg.MODEL.PIXEL_SIZE_UM)


def input_resize_factor(cfg, mpp=None) -> float:
    """
    The factor an image at ``mpp`` um/px is resized by for the model: ``mpp / MODEL.PIXEL_SIZE_UM``,
    or 1 when ``mpp`` is None (taken to be the model's) or within ``SLIDE.MPP_TOLERANCE`` of it
    (nucleus sizes vary far more between scanners than that). The same rule as the slide
    pipeline's choice of pyramid level.
    """
    if mpp is None:
        return 1.0
    factor = float(mpp) / model_mpp(cfg)
    return 1.0 if abs(factor - 1.0) <= float(cfg.SLIDE.MPP_TOLERANCE) else factor
