# -*- coding: utf-8 -*-
"""
d2_nucleus's config: the keys it adds to Detectron2's (one ``add_<x>_config`` a file: :mod:`.defaults`,
:mod:`.cpu`, :mod:`.slide`, :mod:`.types`), the keys of earlier versions (:mod:`.legacy`), the values no run can use
(:mod:`.checks`), the bounded safe YAML reader (:mod:`.yaml_io`) and the one loader every entry point
uses (:mod:`.loader`). This package imports no other d2_nucleus package but
``utils``: every other layer reads its settings from here.
"""
from .checks import check_config_values
from .cpu import add_cpu_config
from .defaults import TRAINING_DATA_MPP, add_nucleus_config, input_resize_factor, model_mpp
from .loader import ConfigError, add_all_config, check_device, get_inference_cfg, get_nucleus_cfg, merge_config_file, merge_config_list
from .slide import add_slide_config, set_slide_score_threshold
from .types import add_types_config
from .yaml_io import load_config_yaml

__all__ = [
    "ConfigError", "TRAINING_DATA_MPP", "add_all_config", "check_config_values", "check_device", "load_config_yaml", "add_cpu_config", "add_nucleus_config", "add_slide_config",
    "add_types_config",
    "get_inference_cfg", "get_nucleus_cfg", "input_resize_factor", "merge_config_file", "merge_config_list", "model_mpp",
    "set_slide_score_threshold",
]
