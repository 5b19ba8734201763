# -*- coding: utf-8 -*-
"""
d2_nucleus: nucleus instance segmentation of H&E images on Detectron2.

``import d2_nucleus`` is light: it imports neither torch nor Detectron2, so data preparation
(``tools/prepare_data.py`` and its worker processes) and every CLI's ``--help`` never pay for
them. The names below are imported on first use (PEP 562); the Detectron2 registrations
(``NucleusRCNN``, ``MaskScoringROIHeads``, ``MaskIoUHead``) happen when
:mod:`d2_nucleus.modeling` is imported, which the trainer and the predictor do.
"""
from .utils.lazy import lazy_attributes

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "add_nucleus_config": ".config",
    "get_nucleus_cfg": ".config",
    "NucleusDatasetMapper": ".data.dataset_mapper",
    "register_nucleus_datasets": ".data.datasets",
    "resolve_data_root": ".data.datasets",
    "NucleusEvaluator": ".evaluation.nucleus_evaluation",
    "NucleusTrainer": ".engine.trainer",
    "NucleusPredictor": ".engine.predictor",
}

__all__ = sorted(_LAZY) + ["__version__"]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
