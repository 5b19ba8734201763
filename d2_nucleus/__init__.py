# -*- coding: utf-8 -*-
"""d2_nucleus: nucleus instance segmentation of H&E images on Detectron2."""
from . import compat  # noqa: F401  (runtime fixes for Detectron2 v0.6; first)
from .config import add_nucleus_config, get_nucleus_cfg
from .data import NucleusDatasetMapper, register_nucleus_datasets, resolve_data_root
from . import modeling  # noqa: F401  (registers NucleusRCNN, MaskScoringROIHeads, MaskIoUHead)
from .evaluation import NucleusEvaluator
from .engine import NucleusTrainer

__version__ = "0.1.0"
