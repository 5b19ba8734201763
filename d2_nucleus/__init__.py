# -*- coding: utf-8 -*-
"""d2_nucleus: nucleus instance segmentation of H&E images on Detectron2."""
from . import compat  # noqa: F401  (runtime fixes for Detectron2 v0.6; first)
from .config import add_nucleus_config

__version__ = "0.1.0"
