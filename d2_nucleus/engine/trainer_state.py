# -*- coding: utf-8 -*-
"""
:class:`TrainerStateMixin` puts the optimizer (and AMP grad-scaler) state into training checkpoints
and restores it on ``--resume``: Detectron2 v0.6's ``DefaultTrainer`` saves only the iteration and
the LR-scheduler hook, so a resumed run lost its momentum. Newer Detectron2 versions save
``"_trainer"`` themselves; then the mixin does nothing.
"""
import logging

from detectron2.engine.train_loop import TrainerBase

__all__ = ["TrainerStateMixin"]

logger = logging.getLogger(__name__)


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
