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

_LAZY = {
    ".config": ("add_nucleus_config", "get_nucleus_cfg"),
    ".data.datasets": ("register_nucleus_datasets", "resolve_data_root"),
    ".data.dataset_mapper": ("NucleusDatasetMapper",),
    ".evaluation.nucleus_evaluation": ("NucleusEvaluator",),
    ".engine.trainer": ("NucleusTrainer",),
    ".engine.predictor": ("NucleusPredictor",),
}
__all__ = sorted(n for names in _LAZY.values() for n in names) + ["__version__"]
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
