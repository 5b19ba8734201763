# -*- coding: utf-8 -*-
"""
Training (:class:`NucleusTrainer`) and prediction (:class:`NucleusPredictor`, the inputs, the
run). Names are imported on first use (PEP 562).
"""
from ..utils.lazy import lazy_attributes

_LAZY = {
    "NucleusTrainer": ".trainer",
    "NucleusPredictor": ".predictor",
    "BadImageError": "..data.image_io",
    "read_image": "..data.image_io",
    "IMAGE_EXTENSIONS": ".inputs",
    "ImageItem": ".inputs",
    "list_inputs": ".inputs",
    "PredictionSummary": ".prediction",
    "check_outputs": ".prediction",
    "run_prediction": ".prediction",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
