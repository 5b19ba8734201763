# -*- coding: utf-8 -*-
"""
The CPU speed options: ``MODEL.CPU``, one key a choice, applied to a built model by
:func:`d2_nucleus.modeling.cpu.apply_cpu_options` (none of them changes a parameter or a
state-dict key; CUDA runs Detectron2's kernels whatever they say). BENCHMARKS.md "CPU speed
options" and "C++ kernels" have the measurements behind each default.
"""
from detectron2.config import CfgNode as CN

__all__ = ["GROUP_NORM_CHOICES", "ROI_ALIGN_CHOICES", "ANCHOR_IOU_CHOICES", "CONV3X3_CHOICES", "add_cpu_config",
           "check_cpu_config"]

GROUP_NORM_CHOICES = ("torch", "nchw", "native")
ROI_ALIGN_CHOICES = ("torchvision", "threaded", "native")
ANCHOR_IOU_CHOICES = ("detectron2", "native")
CONV3X3_CHOICES = ("auto", "onednn", "winograd")


def add_cpu_config(cfg):
    """Add ``cfg.MODEL.CPU``. Safe to call on a config that already has it."""
    if "CPU" in cfg.MODEL:
        return
    cfg.MODEL.CPU = CN()
    # GroupNorms of a channels-last model (MODEL.CHANNELS_LAST) on CPU (modeling/cpu/group_norm.py):
    #   "torch":  torch.nn.GroupNorm as it is;
    #   "nchw":   RoI batches (H x W <= 32 x 32) through PyTorch's NCHW kernel, faster there;
    #   "native": d2_nucleus's channels-last C++ kernels, forward and backward, the RoI heads'
    #             ReLUs fused in (float32 GroupNorm's values within 1e-5); "nchw" where the C++
    #             kernels cannot be built.
    cfg.MODEL.CPU.GROUP_NORM = "native"
    # RoIAlign of the RoI heads on CPU (modeling/cpu/roi_align.py, poolers.py):
    #   "torchvision": Detectron2's ROIPooler as it is (torchvision's single-threaded kernel, the
    #                  feature maps converted to float32 NCHW at every call);
    #   "threaded":    torchvision's kernel on all of torch's threads, the maps converted once an
    #                  image (the same values);
    #   "native":      every pyramid level in one call of the channels-last C++ RoIAlign, forward
    #                  and backward (torchvision's values bit for bit); "threaded" where the C++
    #                  kernels cannot be built.
    cfg.MODEL.CPU.ROI_ALIGN = "native"
    # Threads the RPN's NMS runs on at inference, one pyramid level a thread (0: all of torch's;
    # 1: Detectron2's; modeling/cpu/rpn.py). Same proposals; equal scores may come in another order.
    cfg.MODEL.CPU.RPN_NMS_THREADS = 0
    # The RPN's anchor x nucleus IoU matrix in training: "detectron2" (pairwise_iou) or "native"
    # (the C++ kernel: the same values, faster).
    cfg.MODEL.CPU.ANCHOR_IOU = "native"
    # Raise glibc's mmap/trim thresholds so large activations are not page-faulted in at every
    # step (modeling/cpu/malloc.py). Process-wide: the entry points apply it (tools/, Dask workers).
    cfg.MODEL.CPU.TUNE_MALLOC = True
    # 3 x 3 convolutions at float32 inference on CPU (modeling/cpu/winograd.py):
    #   "onednn":   PyTorch's (oneDNN's direct convolution);
    #   "winograd": NNPACK's Winograd convolution for the inputs where it is faster (values within
    #               ~1e-5 relative of float32);
    #   "auto":     winograd on CPUs with AVX2 and no AVX-512 (oneDNN has Winograd only for AVX-512),
    #               onednn elsewhere (d2_nucleus/utils/cpu_features.py decides, and logs why).
    # Default onednn: on the one AVX2 CPU measured (AMD EPYC Zen 3, loaded), winograd used 3% fewer
    # CPU seconds per mm^2 of slide, within that run's noise (BENCHMARKS.md "Precision by machine").
    cfg.MODEL.CPU.CONV3X3 = "onednn"


def check_cpu_config(cfg) -> None:
    """Raise ValueError (one line) for a ``MODEL.CPU`` value that is not one of its choices."""
    for key, choices in (("GROUP_NORM", GROUP_NORM_CHOICES), ("ROI_ALIGN", ROI_ALIGN_CHOICES),
                         ("ANCHOR_IOU", ANCHOR_IOU_CHOICES), ("CONV3X3", CONV3X3_CHOICES)):
        value = cfg.MODEL.CPU[key]
        if value not in choices:
            raise ValueError(f"MODEL.CPU.{key} must be one of {', '.join(choices)}; got {value!r}")
    if int(cfg.MODEL.CPU.RPN_NMS_THREADS) < 0:
        raise ValueError(f"MODEL.CPU.RPN_NMS_THREADS must be >= 0, got {cfg.MODEL.CPU.RPN_NMS_THREADS}")
