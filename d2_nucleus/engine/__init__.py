# -*- coding: utf-8 -*-
"""
Training (:class:`NucleusTrainer`) and prediction (:class:`NucleusPredictor`, its inputs, the run).
Names are imported on first use (PEP 562): prediction does not load the trainer.
"""
from ..utils.lazy import lazy_attributes

_LAZY = {
    ".trainer": ("NucleusTrainer",),
    ".predictor": ("NucleusPredictor",),
    ".inputs": ("IMAGE_EXTENSIONS", "ImageItem", "list_inputs", "unlisted_images"),
    ".prediction": ("PredictionSummary", "check_outputs", "run_prediction"),
}
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
