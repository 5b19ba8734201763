# -*- coding: utf-8 -*-
"""Checkpoints of untrained models for tests that need weights on disk (predict, eval, slides)."""
import os

import torch


def save_untrained_weights(cfg, path, seed: int = 0) -> str:
    """
    Build ``cfg``'s model with torch's seed ``seed`` (the same weights every run) and save its
    state dict as a Detectron2 checkpoint (``{"model": ...}``) at ``path``. Returns ``str(path)``.
    """
    from detectron2.modeling import build_model

    import d2_nucleus.modeling  # noqa: F401  (registers NucleusRCNN and the heads)

    torch.manual_seed(seed)
    model = build_model(cfg)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({"model": model.state_dict()}, path)
    return str(path)
