# -*- coding: utf-8 -*-
"""Config keys of nucleus types (``cfg.TYPES``): the classifier to apply, and how to train one."""
from detectron2.config import CfgNode as CN

__all__ = ["add_types_config"]


def add_types_config(cfg):
    """Add ``cfg.TYPES``. Safe to call on a config that already has it."""
    if hasattr(cfg, "TYPES"):
        return
    cfg.TYPES = CN()
    # Type classifier file (tools/train_types.py output, .npz) applied to every exported nucleus by
    # tools/predict.py (--types); "" = no types (one class, "Nucleus").
    cfg.TYPES.CLASSIFIER = ""
    # NucleusRCNN returns each detection's box-head features (the RoI box head's output for its
    # final box, e.g. 512-d for the CPU recipe) as the Instances field ``box_features``
    # (modeling/nucleus_features.py). Set by the tools when a classifier needs them.
    cfg.TYPES.BOX_FEATURES = False
    # With BOX_FEATURES: also the box head's output for a square of this many times the box's
    # longer side around it (``context_features``: the nucleus' surroundings; 0 = off).
    cfg.TYPES.CONTEXT_SCALE = 3.0
    # A detection matches an annotated centre within this radius (um): 6 px at 20x (0.55 um/px)
    # as the field evaluates CRCHisto, 12 px at 40x.
    cfg.TYPES.MATCH_RADIUS_UM = 3.3

    # --- training (tools/train_types.py; d2_nucleus/types/training.py) ---------------------------
    # Features of a nucleus: "box" (the model's box-head features), "context" (the same for its
    # surroundings, CONTEXT_SCALE), "measurements" (shape, size in um, H&E optical densities, RGB:
    # d2_nucleus.measurements; what QuPath's object classifier sees) and/or "patch" (the image
    # around it, through a small convolutional branch: types/network.py). Default: patch +
    # measurements, the best on CRCHisto's validation and test images (BENCHMARKS.md "Nucleus types":
    # weighted F1 0.721 vs 0.557 for box + context + measurements) and independent of the model.
    cfg.TYPES.FEATURES = ("patch", "measurements")
    # With "patch" in FEATURES: channels of the classifier's convolutional branch on the 17.6 um
    # image patch around each nucleus (blocks of two 3 x 3 convolutions and a 2 x 2 max-pool), and
    # its epochs and learning rate.
    cfg.TYPES.PATCH_CHANNELS = (16, 32, 64)
    cfg.TYPES.PATCH_EPOCHS = 12
    cfg.TYPES.PATCH_LR = 2e-3
    # Hidden units of the classifier's one hidden layer (0: multinomial logistic regression).
    cfg.TYPES.HIDDEN_DIM = 256
    # Training: AdamW on the standardised features, class-balanced cross-entropy.
    cfg.TYPES.EPOCHS = 60
    cfg.TYPES.BATCH_SIZE = 256
    cfg.TYPES.LR = 1e-3
    cfg.TYPES.WEIGHT_DECAY = 1e-2
    cfg.TYPES.DROPOUT = 0.2
    cfg.TYPES.SEED = 0
    # H&E vectors of the measurements' colour deconvolution: "ruifrok" or "macenko".
    cfg.TYPES.STAIN = "ruifrok"
