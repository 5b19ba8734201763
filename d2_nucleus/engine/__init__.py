from .trainer import NucleusTrainer
