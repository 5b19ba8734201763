# -*- coding: utf-8 -*-
"""Training (:class:`NucleusTrainer`) and prediction (:class:`NucleusPredictor`, its inputs, the run)."""
from ..data.image_io import BadImageError, read_image
from .inputs import IMAGE_EXTENSIONS, ImageItem, list_inputs
from .prediction import PredictionSummary, check_outputs, run_prediction
from .predictor import NucleusPredictor
from .trainer import NucleusTrainer
