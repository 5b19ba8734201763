# -*- coding: utf-8 -*-
from .meta_arch import NucleusRCNN
from .postprocessing import RLEList, nucleus_postprocess, paste_masks_to_rles
from .test_time_augmentation import NucleusDatasetMapperTTA, NucleusRCNNWithTTA
from .mask_scoring import ROI_MASKIOU_HEAD_REGISTRY, MaskIoUHead, MaskScoringROIHeads, build_maskiou_head
from .group_norm import NucleusGroupNorm, convert_group_norms, fuse_group_norm_relus
from .roi_align import ThreadedROIAlign, convert_roi_aligns, roi_features
from .poolers import NucleusROIPooler, convert_poolers
from .rpn import NucleusRPN, convert_rpn
from .native import native_ops
from .maskness import maskness, maskness_rescore
from .float32_heads import convert_box_predictors, float32_class
from .frozen_group_norm import FrozenGroupNorm, calibrate_frozen_group_norms, convert_frozen_group_norms
