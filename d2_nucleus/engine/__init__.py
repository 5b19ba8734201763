from .trainer import NucleusTrainer
from .predictor import NucleusPredictor, list_inputs, read_image, run_prediction
