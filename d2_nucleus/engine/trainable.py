# -*- coding: utf-8 -*-
"""
``SOLVER.TRAIN_ONLY``: train a part of a model and freeze the rest, e.g. a MaskIoU head added to
a trained Mask R-CNN (``MODEL.MASKIOU_ON True SOLVER.TRAIN_ONLY "('roi_heads.maskiou_head',)"``).

Frozen parameters get ``requires_grad = False`` before the optimizer is built, so Detectron2's
optimizer leaves them out and autograd does not run the backward pass through them: a step costs
about a forward pass of the frozen part.
"""
import logging
from typing import Sequence

from torch import nn

from ..config import ConfigError

__all__ = ["freeze_all_but"]

logger = logging.getLogger(__name__)


def freeze_all_but(model: nn.Module, prefixes: Sequence[str]) -> int:
    """
    Set ``requires_grad = False`` on every parameter of ``model`` whose name starts with none of
    ``prefixes`` (names as in ``model.named_parameters()``, without a DDP ``module.``).
    Empty ``prefixes``: nothing changes.

    Returns:
        the number of parameters (elements) left trainable.

    Raises:
        ConfigError: a prefix that names no parameter (a typo would otherwise freeze everything).
    """
    prefixes = tuple(p.strip() for p in prefixes if p.strip())
    named = list(model.named_parameters())
    if not prefixes:
        return sum(p.numel() for _, p in named if p.requires_grad)
    unused = [p for p in prefixes if not any(n.startswith(p) for n, _ in named)]
    if unused:
        raise ConfigError(
            f"SOLVER.TRAIN_ONLY: {', '.join(map(repr, unused))} names no parameter of the model "
            f"(top-level modules: {', '.join(sorted({n.split('.')[0] for n, _ in named}))})"
        )
    trainable = 0
    for name, param in named:
        keep = name.startswith(prefixes)
        param.requires_grad_(keep)
        trainable += param.numel() if keep else 0
    logger.info(
        "SOLVER.TRAIN_ONLY %s: %d of %d parameters trainable, the rest frozen",
        list(prefixes), trainable, sum(p.numel() for _, p in named),
    )
    return trainable
