# -*- coding: utf-8 -*-
"""
Calibrate a trained GroupNorm model's backbone into :class:`FrozenGroupNorm` layers and write the
checkpoint and config that use them (``tools/freeze_group_norm.py``).

The statistics come from the model's own training images at the test-time size (the images it
normalised per image in training), run as at inference (bf16 autocast and channels-last as the
config says).
"""
import itertools
import os
from typing import Sequence, Tuple

import torch
from tqdm import tqdm

from detectron2.modeling import build_model

from ..checkpoint import NucleusCheckpointer
from ..data.datasets import prepare_nucleus_datasets
from ..modeling.frozen_group_norm import calibrate_frozen_group_norms, convert_frozen_group_norms
from ..utils.autocast import cpu_autocast
from ..utils.file_io import atomic_write, check_not_input, check_target, output_transaction

__all__ = ["freeze_group_norms", "frozen_output_paths", "write_frozen_model"]


def freeze_group_norms(cfg, dataset: str = "", num_images: int = 0, progress: bool = True) -> Tuple[torch.nn.Module, int]:
    """
    Build the model of ``cfg`` (GroupNorm, ``MODEL.FROZEN_GROUP_NORM`` False), load
    ``cfg.MODEL.WEIGHTS`` strictly, convert its backbone's GroupNorms to :class:`FrozenGroupNorm`
    and calibrate them on ``dataset`` (default: the first of ``cfg.DATASETS.TRAIN``; at most
    ``num_images`` images, 0 = all).

    Returns:
        (the model, in eval mode, with calibrated statistics; the number of images used)
    """
    if cfg.MODEL.FROZEN_GROUP_NORM:
        raise ValueError("the config already has MODEL.FROZEN_GROUP_NORM True: give the GroupNorm model's config")
    dataset = dataset or cfg.DATASETS.TRAIN[0]
    prepare_nucleus_datasets(cfg, [dataset])
    model = build_model(cfg)
    NucleusCheckpointer(model, download_timeout=cfg.MODEL.WEIGHTS_DOWNLOAD_TIMEOUT).load(cfg.MODEL.WEIGHTS)
    model.eval()
    if convert_frozen_group_norms(model.backbone) == 0:
        raise ValueError(f"the backbone of this config has no GroupNorm (MODEL.RESNETS.NORM {cfg.MODEL.RESNETS.NORM!r})")

    from .trainer import NucleusTrainer  # the test loader evaluation uses (native size, no augmentation)

    loader = NucleusTrainer.build_test_loader(cfg, dataset)
    total = len(loader) if num_images <= 0 else min(num_images, len(loader))
    batches = tqdm(itertools.islice(loader, total), total=total, desc="calibrating GroupNorm", unit="image",
                   disable=not progress)

    def run(batch):
        with cpu_autocast(cfg):
            model.backbone(model.preprocess_image(batch).tensor)

    n = calibrate_frozen_group_norms(model.backbone, run, batches)
    return model, n


def frozen_output_paths(output: str, overwrite: bool = False, inputs: Sequence[str] = ()) -> Tuple[str, str]:
    """
    The checkpoint ``output`` (must end in ``.pth``) and its config (``.yaml`` beside it).

    Raises:
        ValueError: another name. OutputIsInputError: one of them is one of ``inputs`` (the
        trained model's config and weights), whatever ``overwrite``. OutputExistsError: one
        exists and ``overwrite`` is False.
    """
    root, ext = os.path.splitext(output)
    if ext != ".pth":
        raise ValueError(f"{output}: the checkpoint name must end in .pth")
    config_path = root + ".yaml"
    check_not_input([output, config_path], inputs)
    check_target(output, overwrite)
    check_target(config_path, overwrite)
    return output, config_path


def write_frozen_model(model, cfg, output: str, overwrite: bool = False) -> Tuple[str, str]:
    """
    Write ``output`` (the checkpoint: ``{"model": state_dict}``) and ``output`` with ``.yaml``
    (``cfg`` with ``MODEL.FROZEN_GROUP_NORM True`` and ``MODEL.WEIGHTS`` = the checkpoint), both or
    neither. Returns their paths.
    """
    output, config_path = frozen_output_paths(output, overwrite, [str(cfg.MODEL.WEIGHTS)])
    frozen = cfg.clone()
    frozen.defrost()
    frozen.MODEL.FROZEN_GROUP_NORM = True
    frozen.MODEL.WEIGHTS = os.path.abspath(output)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with output_transaction():
        with atomic_write(output, overwrite) as f:
            torch.save({"model": state}, f)
        with atomic_write(config_path, overwrite, mode="w") as f:
            f.write(frozen.dump())
    return output, config_path
