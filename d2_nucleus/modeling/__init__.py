# -*- coding: utf-8 -*-
from .meta_arch import NucleusRCNN
from .postprocessing import RLEList, nucleus_postprocess, paste_masks_to_rles
from .test_time_augmentation import NucleusDatasetMapperTTA, NucleusRCNNWithTTA
from .mask_scoring import ROI_MASKIOU_HEAD_REGISTRY, MaskIoUHead, MaskScoringROIHeads, build_maskiou_head
from .cpu import NucleusRPN  # registers it in PROPOSAL_GENERATOR_REGISTRY
from .maskness import maskness, maskness_rescore
from .float32_heads import convert_box_predictors, float32_class
from .frozen_group_norm import FrozenGroupNorm, calibrate_frozen_group_norms, convert_frozen_group_norms
