# -*- coding: utf-8 -*-
"""
Model weights: where they come from (:mod:`.weights`: local paths, URLs with bounded waits), how
they are read without running code (:mod:`.safe_load`) and the one loading policy
(:mod:`.checkpointer`: :class:`NucleusCheckpointer`).
"""
from .weights import (
    OFFLINE_HINT,
    WeightsError,
    WeightsMismatchError,
    WeightsNotFoundError,
    check_weights_path,
    fetch_weights,
)
from .safe_load import safe_unpickle, torch_load
from .checkpointer import NucleusCheckpointer

__all__ = [
    "NucleusCheckpointer", "OFFLINE_HINT", "WeightsError", "WeightsMismatchError", "WeightsNotFoundError",
    "check_weights_path", "fetch_weights", "safe_unpickle", "torch_load",
]
