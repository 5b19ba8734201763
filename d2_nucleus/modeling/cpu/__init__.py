# -*- coding: utf-8 -*-
"""
The CPU speed layer: C++ kernels (:mod:`.native`, ``csrc/``), GroupNorm (:mod:`.group_norm`),
RoIAlign (:mod:`.roi_align`, :mod:`.poolers`), the RPN (:mod:`.rpn`), glibc malloc
(:mod:`.malloc`), applied from ``MODEL.CPU`` by :func:`apply_cpu_options` (:mod:`.options`).
"""
from .native import native_ops
from .group_norm import NucleusGroupNorm, convert_group_norms, fuse_group_norm_relus
from .roi_align import ThreadedROIAlign, convert_roi_aligns, roi_features
from .poolers import NucleusROIPooler, convert_poolers, native_pooling
from .rpn import NucleusRPN
from .malloc import tune_malloc, tune_process
from .options import CPUOptions, apply_cpu_options, roi_heads_features
