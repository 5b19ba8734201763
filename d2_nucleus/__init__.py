# -*- coding: utf-8 -*-
"""d2_nucleus: nucleus instance segmentation of H&E images on Detectron2."""
import warnings

# Detectron2 v0.6 decorates a few helpers with torch.jit.script, which torch>=2.9 warns about at
# every import; the helpers work, the warning only clutters every CLI's output.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

from . import compat  # noqa: E402,F401  (runtime fixes for Detectron2 v0.6; first)
from .config import add_nucleus_config, get_nucleus_cfg  # noqa: E402
from .data import NucleusDatasetMapper, register_nucleus_datasets, resolve_data_root
from . import modeling  # noqa: F401  (registers NucleusRCNN, MaskScoringROIHeads, MaskIoUHead)
from .evaluation import NucleusEvaluator
from .engine import NucleusTrainer

__version__ = "0.1.0"
