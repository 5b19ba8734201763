# -*- coding: utf-8 -*-
"""
Config keys that d2_nucleus adds to Detectron2's defaults, and the one safe config loader
(:func:`merge_config_file`, :func:`get_nucleus_cfg`) that every entry point uses.
"""
import os

import yaml
from detectron2.config import CfgNode as CN

__all__ = ["ConfigError", "add_nucleus_config", "get_nucleus_cfg", "merge_config_file", "merge_config_list"]


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file (or override)."""


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
    # Binarisation threshold of the mask head's probabilities.
    cfg.NUCLEUS.MASK_THRESHOLD = 0.5
    # Resolution the model works at, in micrometres per pixel (0 = unknown). Sizes in um / um^2
    # (tools/predict.py --measurements) use it when --mpp is not given.
    cfg.MODEL.PIXEL_SIZE_UM = 0.0

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
    # bfloat16 autocast on CPU (AVX-512 BF16 / AMX CPUs) around each whole training step (forward,
    # loss, backward) and around evaluation and prediction.
    cfg.SOLVER.CPU_BF16 = False
    # Channels-last memory format for the model and images.
    cfg.MODEL.CHANNELS_LAST = False
    # With CHANNELS_LAST: GroupNorms of RoI batches take PyTorch's NCHW kernel, ~4-15x faster there
    # (modeling/group_norm.py).
    cfg.MODEL.FAST_GROUP_NORM = True
    # CPU threads each RoIAlign forward/backward runs on (0: all of torch's; 1: torchvision's
    # single-threaded kernel as is; modeling/roi_align.py).
    cfg.MODEL.ROI_ALIGN_THREADS = 0
    # The RoI heads get their feature maps as float32 NCHW, converted once an image (RoIAlign
    # would convert them at every call under bf16 autocast / channels-last).
    cfg.MODEL.ROI_FEATURES_ONCE = True
    # On CPU the RoI heads' poolers run every pyramid level in one call of d2_nucleus's
    # channels-last C++ RoIAlign, forward and backward (modeling/poolers.py; compiled on first use,
    # or by `make install`; torchvision's values; PyTorch's kernels where it cannot be built).
    cfg.MODEL.NATIVE_ROI_ALIGN = True
    # With CHANNELS_LAST and FAST_GROUP_NORM: on CPU the GroupNorms run as channels-last C++ kernels,
    # forward and backward, with the RoI heads' ReLUs fused in (modeling/group_norm.py; float32
    # GroupNorm's values within 1e-5; PyTorch's kernels where they cannot be built).
    cfg.MODEL.NATIVE_GROUP_NORM = True
    # CPU threads the RPN's NMS runs on at inference, one pyramid level a thread (0: all of
    # torch's; 1: Detectron2's RPN as it is; modeling/rpn.py). Same proposals; equal scores may
    # come in another order.
    cfg.MODEL.RPN_NMS_THREADS = 0
    # Training on CPU: the RPN's anchor matching takes its anchor x nucleus IoU matrix from a C++
    # kernel (modeling/rpn.py; the same values as Detectron2's pairwise_iou, ~8x faster).
    cfg.MODEL.NATIVE_ANCHOR_IOU = True
    # Raise glibc's mmap/trim thresholds on CPU so large activations are not page-faulted in
    # again at every step (utils/malloc.py).
    cfg.MODEL.CPU_TUNE_MALLOC = True
    # The box predictor (class scores, box deltas) in float32 under bf16/fp16 autocast: bf16 scores
    # take steps of 1/256 and hundreds of nuclei tie (modeling/float32_heads.py).
    cfg.MODEL.ROI_BOX_HEAD.FLOAT32_PREDICTOR = True

    # The backbone's (and FPN's) GroupNorms normalise with statistics fixed after training, so a
    # nucleus's features do not depend on the rest of the input (whole-slide tiles next to glass).
    # Needs weights calibrated by tools/freeze_group_norm.py (modeling/frozen_group_norm.py).
    cfg.MODEL.FROZEN_GROUP_NORM = False

    # ---------------------------------------------------------------------------------------------
    # Inference: test-time augmentation (tools/predict.py --tta; modeling/test_time_augmentation.py)
    # and the mask head's memory (modeling/meta_arch.py)
    # ---------------------------------------------------------------------------------------------
    # Short-edge scales relative to each image's native size (1.0 = native). When non-empty they
    # replace Detectron2's absolute TEST.AUG.MIN_SIZES. Default: native only (nuclei are small).
    cfg.TEST.AUG.SCALES = (1.0,)
    # Vertical flips too (TEST.AUG.FLIP is Detectron2's horizontal flip; both: 4 passes a scale).
    cfg.TEST.AUG.VFLIP = True
    # NucleusRCNN runs the mask head on at most this many detections at a time at inference
    # (~2.5 MB of activations a detection with the default head on CPU; 0 = all at once).
    cfg.TEST.MASK_HEAD_CHUNK_SIZE = 256


def _one_line(e) -> str:
    return " ".join(str(e).split())


def merge_config_file(cfg, config_file):
    """
    ``cfg.merge_from_file`` that never runs code: the file and its ``_BASE_`` chain are read with
    ``yaml.safe_load`` (``allow_unsafe=False``; Detectron2's default falls back to
    ``yaml.unsafe_load``, which executes ``!!python/...`` tags). Every problem is a one-line
    :class:`ConfigError` naming the file.
    """
    if not os.path.isfile(config_file):
        what = "is a folder" if os.path.isdir(config_file) else "does not exist"
        raise ConfigError(f"config file {config_file!r} {what}")
    try:
        cfg.merge_from_file(config_file, allow_unsafe=False)
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{mark.name}, line {mark.line + 1}" if mark is not None else config_file
        raise ConfigError(
            f"{where}: refusing to load a YAML tag that would run code or build Python objects "
            f"({_one_line(e.problem)}); configs may hold only plain YAML values"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{config_file}: not valid YAML: {_one_line(e)}") from None
    except (KeyError, ValueError, TypeError, AssertionError) as e:
        # KeyError "Non-existent config key: X", ValueError/TypeError on a value of the wrong type
        msg = _one_line(e.args[0] if isinstance(e, KeyError) and e.args else e)
        raise ConfigError(f"{config_file}: {msg}") from None
    except OSError as e:  # a _BASE_ that does not exist
        raise ConfigError(f"{config_file}: {e.strerror or e}: {getattr(e, 'filename', '') or ''}".rstrip(": ")) from None


def merge_config_list(cfg, opts):
    """``cfg.merge_from_list`` with one-line :class:`ConfigError` s for command-line overrides."""
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(
            f"config overrides must be KEY VALUE pairs, got {len(opts)} words: {' '.join(map(str, opts))}"
        )
    try:
        cfg.merge_from_list(opts)
    except (KeyError, ValueError, TypeError, AssertionError) as e:
        msg = _one_line(e.args[0] if isinstance(e, KeyError) and e.args else e)
        raise ConfigError(f"command-line config override: {msg}") from None


def get_nucleus_cfg(config_file=None, opts=None, data_root=None):
    """
    The config every d2_nucleus entry point uses: Detectron2 defaults + PointRend keys + ours,
    then ``config_file`` (read safely: :func:`merge_config_file`), then ``opts`` (KEY VALUE list).
    Falls back to the CPU with a warning when the config asks for CUDA and none is available.

    Raises:
        ConfigError: a missing or unsafe config file, an unknown key, a bad value, or an odd
            number of overrides (one line naming the file or override).
    """
    import logging

    import torch
    from detectron2.config import get_cfg
    from detectron2.projects.point_rend import add_pointrend_config

    cfg = get_cfg()
    from .slide.config import add_slide_config
    from .types.config import add_types_config

    add_pointrend_config(cfg)
    add_nucleus_config(cfg)
    add_slide_config(cfg)
    add_types_config(cfg)
    if config_file:
        merge_config_file(cfg, config_file)
    if opts:
        merge_config_list(cfg, opts)
    if data_root:
        cfg.NUCLEUS.DATA_ROOT = data_root
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning("CUDA is not available: running on the CPU (MODEL.DEVICE cpu).")
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def get_inference_cfg(config_file, opts=None, weights=None, device=None):
    """
    The config of an inference CLI (tools/predict.py, tools/segment_slides.py): ``config_file``
    (must exist) with ``opts`` (KEY VALUE pairs), ``weights`` as ``MODEL.WEIGHTS`` and ``device``
    as ``MODEL.DEVICE`` when given (default: CUDA when available, else the CPU). Not frozen.

    Raises:
        FileNotFoundError: no such config file. ValueError: ``opts`` not in pairs.
    """
    import os

    import torch

    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file {config_file!r} does not exist")
    opts = list(opts or [])
    if len(opts) % 2:
        raise ValueError(f"config overrides must be KEY VALUE pairs, got {opts}")
    cfg = get_nucleus_cfg(config_file, opts)
    if weights is not None:
        cfg.MODEL.WEIGHTS = weights
    if device is not None:
        cfg.MODEL.DEVICE = device
    elif not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    return cfg
