# -*- coding: utf-8 -*-
"""
The CPU speed options of a built model, applied by one function from the config node
``MODEL.CPU`` (:mod:`d2_nucleus.config.cpu` documents each choice):

* ``GROUP_NORM`` (channels-last models): ``nchw`` / ``native`` replace the GroupNorms
  (:mod:`.group_norm`), ``native`` also fuses the RoI heads' ReLUs into them;
* ``ROI_ALIGN``: ``threaded`` runs torchvision's RoIAlign on threads (:mod:`.roi_align`) with the
  RoI heads' feature maps converted once an image; ``native`` adds the C++ pooler
  (:mod:`.poolers`), which reads the maps as they are (the threaded path stays as the fallback
  where the C++ kernels are missing);
* ``RPN_NMS_THREADS``, ``ANCHOR_IOU``: :class:`.rpn.NucleusRPN`, which the config names in
  ``MODEL.PROPOSAL_GENERATOR.NAME`` (a Detectron2 registry entry: nothing to apply here);
* ``CONV3X3``: ``winograd`` (``auto`` on CPUs with AVX2 and no AVX-512:
  :func:`d2_nucleus.utils.cpu_features.resolve_conv3x3`) gives the 3 x 3 convolutions NNPACK's
  Winograd path at float32 inference (:mod:`.winograd`);
* ``TUNE_MALLOC``: process-wide, so the entry points apply it (:func:`.malloc.tune_process`).

None changes a parameter or a state-dict key; on other devices than the CPU the model runs
Detectron2's kernels.
"""
import logging
from dataclasses import dataclass
from typing import Dict

import torch
from torch import nn

from .group_norm import convert_group_norms, fuse_group_norm_relus
from .poolers import convert_poolers, native_pooling
from .roi_align import convert_roi_aligns, roi_features
from .winograd import convert_winograd_convs

__all__ = ["CPUOptions", "apply_cpu_options", "roi_heads_features"]

logger = logging.getLogger(__name__)
_logged = set()


@dataclass(frozen=True)
class CPUOptions:
    """What :func:`apply_cpu_options` does to a model (the defaults: nothing)."""

    group_norm: str = "torch"  # torch | nchw | native (channels-last models only)
    roi_align: str = "torchvision"  # torchvision | threaded | native
    conv3x3: str = "onednn"  # onednn | winograd (resolved: never "auto")

    @classmethod
    def from_config(cls, cfg) -> "CPUOptions":
        from ...utils.cpu_features import resolve_conv3x3

        conv3x3 = "onednn"
        if str(cfg.MODEL.DEVICE).startswith("cpu"):
            conv3x3, why = resolve_conv3x3(cfg.MODEL.CPU.CONV3X3)
            if why not in _logged:
                _logged.add(why)
                logger.info("CPU 3x3 convolutions: %s (%s)", conv3x3, why)
        return cls(group_norm=cfg.MODEL.CPU.GROUP_NORM, roi_align=cfg.MODEL.CPU.ROI_ALIGN, conv3x3=conv3x3)


def apply_cpu_options(model: nn.Module, options: CPUOptions, channels_last: bool) -> None:
    """Apply ``options`` to ``model`` (a GeneralizedRCNN, already channels-last if ``channels_last``), in place."""
    if channels_last and options.group_norm != "torch":
        native = options.group_norm == "native"
        convert_group_norms(model, native=native)
        if native:
            fuse_group_norm_relus(model.roi_heads)
    if options.conv3x3 == "winograd":
        convert_winograd_convs(model)
    roi_heads = model.roi_heads
    roi_heads.cpu_roi_align = options.roi_align
    if options.roi_align != "torchvision":
        convert_roi_aligns(roi_heads, threads=0)
        if options.roi_align == "native":
            convert_poolers(roi_heads)
        roi_heads.register_forward_pre_hook(_roi_heads_features_hook)


def _roi_in_features(roi_heads):
    names = []
    for attr in ("box_in_features", "mask_in_features", "keypoint_in_features", "in_features"):
        names += [f for f in getattr(roi_heads, attr, None) or [] if f not in names]
    return names


def roi_heads_features(roi_heads: nn.Module, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """
    The feature maps ``roi_heads`` should get: with ``ROI_ALIGN`` ``threaded`` (or ``native``
    where the C++ pooler is not used) on CPU, its input maps as RoIAlign reads them, float32
    NCHW, converted once (:func:`roi_features`); otherwise ``features`` as they are.
    """
    mode = getattr(roi_heads, "cpu_roi_align", "torchvision")
    device = next(iter(features.values())).device if features else None
    if mode == "torchvision" or device is None or device.type != "cpu":
        return features
    if mode == "native" and native_pooling(device):
        return features
    wanted = [f for f in _roi_in_features(roi_heads) if f in features] or list(features)
    return roi_features({f: features[f] for f in wanted})


def _roi_heads_features_hook(roi_heads, args):
    """Forward pre-hook: ``roi_heads(images, features, ...)`` gets :func:`roi_heads_features`."""
    if len(args) < 2 or not isinstance(args[1], dict) or not args[1]:
        return None
    features = roi_heads_features(roi_heads, args[1])
    if features is args[1]:
        return None
    return (args[0], features) + tuple(args[2:])
