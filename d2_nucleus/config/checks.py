# -*- coding: utf-8 -*-
"""
Config values no run can use (a batch of 0 images, a NaN resolution, a CPU option that is not one
of its choices, ...), found when the config is made instead of as an AssertionError or a
ZeroDivisionError minutes into a run: :func:`check_config_values`, one :class:`ConfigError` line
naming the key, what it must be and where the value came from.
"""
import math

from ..utils.autocast import resolve_cpu_bf16
from .cpu import check_cpu_config
from .errors import ConfigError

__all__ = ["check_config_values"]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# Values that cannot work, found before a run starts instead of as an AssertionError or a
# ZeroDivisionError minutes into it: (key, test, what it must be).
_VALUE_RULES = (
    ("SOLVER.IMS_PER_BATCH", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("SOLVER.MAX_ITER", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("SOLVER.CHECKPOINT_PERIOD", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("SOLVER.WARMUP_ITERS", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    ("SOLVER.BASE_LR", lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    ("SOLVER.GAMMA", lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    ("SOLVER.MOMENTUM", lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    ("SOLVER.WEIGHT_DECAY", lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    ("SOLVER.WARMUP_FACTOR", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    ("SOLVER.STEPS", lambda v: all(_is_int(x) and x >= 0 for x in v) and list(v) == sorted(v),
     "increasing integers >= 0"),
    ("TEST.EVAL_PERIOD", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    ("TEST.DETECTIONS_PER_IMAGE", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("DATALOADER.NUM_WORKERS", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    ("INPUT.TEST_SCALE", lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    ("MODEL.PIXEL_SIZE_UM", lambda v: _is_number(v) and v > 0, "a finite number > 0 (um/px)"),
    ("MODEL.WEIGHTS_DOWNLOAD_TIMEOUT", lambda v: _is_number(v) and v >= 0, "a finite number >= 0 (0 = none)"),
    ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    ("NUCLEUS.MASK_THRESHOLD", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    ("TEST.LABEL_MAP_SCORE_THRESH", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
)


def check_config_values(cfg, source: str = "the config") -> None:
    """
    Refuse values no run can use (a batch of 0 images, a NaN resolution, ...) with one
    :class:`ConfigError` naming the key, what it must be and ``source``.
    """
    for key, ok, what in _VALUE_RULES:
        node = cfg
        for part in key.split("."):
            node = node[part]
        try:
            good = ok(node)
        except TypeError:
            good = False
        if not good:
            raise ConfigError(f"{source}: {key} must be {what}, got {node!r}")
    try:
        check_cpu_config(cfg)
        resolve_cpu_bf16(cfg.SOLVER.CPU_BF16)
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None
