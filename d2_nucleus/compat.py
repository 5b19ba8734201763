# -*- coding: utf-8 -*-
"""
What Detectron2 v0.6 (as installed by tools/install_detectron2.py) still needs at run time on
current PyTorch. Everything here is a no-op where the installed Detectron2 already does it, so a
complete source build (with ``detectron2._C``, or a newer release) is used as it is.

1. :class:`NucleusCheckpointer` loads ``.pth`` checkpoints explicitly with
   ``torch.load(weights_only=True)`` (no arbitrary pickled code; the default since torch 2.6) and
   turns a missing or unreachable ``MODEL.WEIGHTS`` into an error that names it and the offline
   alternative. Detectron2/Caffe2 model-zoo ``.pkl`` files are pickles by format and are loaded as
   Detectron2 does.
2. :class:`TrainerStateMixin` puts the optimizer (and AMP grad-scaler) state into training
   checkpoints and restores it on ``--resume``: v0.6's ``DefaultTrainer`` saves only the iteration
   and the LR-scheduler hook, so a resumed run loses its momentum. Newer Detectron2 versions save
   ``"_trainer"`` themselves; then the mixin does nothing.
"""
import logging
import os
import pickle

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine.train_loop import TrainerBase

__all__ = ["NucleusCheckpointer", "TrainerStateMixin", "WeightsNotFoundError"]

logger = logging.getLogger(__name__)

OFFLINE_HINT = (
    "Without network access, train from scratch instead: use a config from configs/scratch/ "
    "(GroupNorm, MODEL.WEIGHTS \"\"), or pass MODEL.WEIGHTS pointing at a local file."
)


class WeightsNotFoundError(FileNotFoundError):
    pass


class NucleusCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with safe ``.pth`` loading and a clear error for missing weights."""

    def load(self, path, *args, **kwargs):
        try:
            return super().load(path, *args, **kwargs)
        except (AssertionError, OSError) as e:  # fvcore asserts the file exists; URLError is OSError
            if path and not os.path.isfile(path):
                raise WeightsNotFoundError(
                    f"Model weights {path!r} (MODEL.WEIGHTS) not found or unreachable: {e}. " + OFFLINE_HINT
                ) from e
            raise

    def _load_file(self, filename):
        if filename.endswith(".pkl") or filename.endswith(".pyth"):
            return super()._load_file(filename)
        with self.path_manager.open(filename, "rb") as f:
            try:
                loaded = torch.load(f, map_location=torch.device("cpu"), weights_only=True)
            except pickle.UnpicklingError as e:
                raise RuntimeError(
                    f"{filename}: refusing to load a checkpoint that needs arbitrary pickled code "
                    f"(torch.load weights_only=True failed: {e}). Re-save it as a plain state dict "
                    "if you trust its origin."
                ) from e
        if "model" not in loaded:
            loaded = {"model": loaded}
        return loaded


def _defines_trainer_state(cls, method):
    """Whether the first class after TrainerStateMixin in cls's MRO that defines ``method`` handles
    the "_trainer" state itself (anything but TrainerBase's generic version does)."""
    mro = cls.__mro__
    start = mro.index(TrainerStateMixin) + 1
    for klass in mro[start:]:
        if method in klass.__dict__:
            return klass is not TrainerBase
    return False


class TrainerStateMixin:
    """
    Mix into a DefaultTrainer subclass (before DefaultTrainer) so that checkpoints hold the inner
    SimpleTrainer/AMPTrainer state (optimizer, grad scaler) and ``resume`` restores it.
    """

    def state_dict(self):
        ret = super().state_dict()
        if "_trainer" not in ret:
            ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict and not _defines_trainer_state(type(self), "load_state_dict"):
            self._trainer.load_state_dict(state_dict["_trainer"])
            logger.info("Restored optimizer state from the checkpoint.")
        elif "_trainer" not in state_dict:
            logger.warning("The checkpoint has no optimizer state; the optimizer starts fresh.")
