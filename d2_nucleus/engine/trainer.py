# -*- coding: utf-8 -*-
"""The d2_nucleus trainer: DefaultTrainer with the nucleus mapper, evaluator and checkpointing."""
import logging
import os
import weakref
import torch
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from ..checkpoint import NucleusCheckpointer
from .trainer_state import TrainerStateMixin
from ..data import NucleusDatasetMapper
from ..data.datasets import prepare_nucleus_datasets
from ..evaluation import NucleusEvaluator
from ..modeling import NucleusRCNNWithTTA
from ..utils.autocast import cpu_autocast
from .trainable import freeze_all_but

__all__ = ["NucleusTrainer", "TrainingDiverged"]

logger = logging.getLogger(__name__)


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite (Detectron2's FloatingPointError), with a one-line message
    naming the iteration and the losses."""


class _NoTracebackForDivergence(logging.Filter):
    """Detectron2's training loop logs every exception with its traceback ("Exception during
    training:"); a diverged loss is reported in one line instead (tools/train_net.py)."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, TrainingDiverged)


logging.getLogger("detectron2.engine.train_loop").addFilter(_NoTracebackForDivergence())


class NucleusTrainer(TrainerStateMixin, DefaultTrainer):
    """
    DefaultTrainer for nuclei:

    * registers ``nucleus_{train,val,all_train,test}`` from the data root
      (``cfg.NUCLEUS.DATA_ROOT``, else ``$D2_NUCLEUS_DATA``, else ``datasets/nucleus``);
    * trains with :class:`NucleusDatasetMapper` (crops, flips, rotations, stain jitter);
    * evaluates with :class:`NucleusEvaluator` (dense COCO AP, the challenge AP50@100, AJI, PQ);
    * keeps ``model_best.pth`` by ``cfg.TEST.BEST_METRIC``;
    * saves and restores the optimizer state on resume (see :mod:`.trainer_state`);
    * trains only the parameters ``cfg.SOLVER.TRAIN_ONLY`` names, when it names any;
    * optionally runs each training step (forward, loss and backward) and the evaluation under
      bfloat16 autocast on CPU (``cfg.SOLVER.CPU_BF16``).
    """

    def __init__(self, cfg):
        # The evaluation datasets too: a missing val annotation file stops the run now, not
        # after the whole training (registered once: tools/train_net.py prepared them already).
        prepare_nucleus_datasets(cfg, list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
        super().__init__(cfg)

    def build_hooks(self):
        # DefaultTrainer.__init__ made a plain DetectionCheckpointer just before calling this.
        # strict=False: MODEL.WEIGHTS may be pretrained weights of another dataset (fine-tuning
        # rules in NucleusCheckpointer); resuming from last_checkpoint is always strict.
        self.checkpointer = NucleusCheckpointer(
            self.checkpointer.model, self.cfg.OUTPUT_DIR, strict=False, trainer=weakref.proxy(self),
            download_timeout=self.cfg.MODEL.WEIGHTS_DOWNLOAD_TIMEOUT,
        )
        ret = super().build_hooks()
        cfg = self.cfg
        if cfg.TEST.BEST_METRIC and cfg.TEST.EVAL_PERIOD > 0 and comm.is_main_process():
            best = hooks.BestCheckpointer(
                cfg.TEST.EVAL_PERIOD, self.checkpointer, cfg.TEST.BEST_METRIC, cfg.TEST.BEST_METRIC_MODE
            )
            at = next(i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook)) + 1
            ret.insert(at, best)
        return ret

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        freeze_all_but(model, cfg.SOLVER.TRAIN_ONLY)
        return model

    def run_step(self):
        try:
            with cpu_autocast(self.cfg):
                super().run_step()
        except FloatingPointError as e:
            # Detectron2: "Loss became infinite or NaN at iteration=N!\nloss_dict = {...}", or the RPN's
            # "Predicted boxes or scores contain Inf/NaN. Training has diverged."
            text = str(e)
            detail = text.split("loss_dict = ", 1)[1] if "loss_dict = " in text else text
            raise TrainingDiverged(
                f"the loss became NaN or infinite at iteration {self.iter} ({' '.join(detail.split())}): "
                "training stopped; the "
                "checkpoints saved before it are kept. Lower SOLVER.BASE_LR (or raise SOLVER.WARMUP_ITERS), "
                "or check the data"
            ) from None

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=NucleusDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=NucleusDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return NucleusEvaluator.from_config(cfg, dataset_name, output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        with cpu_autocast(cfg), torch.no_grad():
            return super().test(cfg, model, evaluators)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        logger.info("Running inference with test-time augmentation ...")
        model = NucleusRCNNWithTTA(cfg, model)
        evaluators = [
            cls.build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name))
            for name in cfg.DATASETS.TEST
        ]
        res = cls.test(cfg, model, evaluators)
        return {k + "_TTA": v for k, v in res.items()}

    @classmethod
    def eval_only(cls, cfg, resume=False):
        """Build the model, load ``cfg.MODEL.WEIGHTS`` (or the last checkpoint), evaluate."""
        prepare_nucleus_datasets(cfg, cfg.DATASETS.TEST)
        model = cls.build_model(cfg)
        NucleusCheckpointer(model, save_dir=cfg.OUTPUT_DIR, download_timeout=cfg.MODEL.WEIGHTS_DOWNLOAD_TIMEOUT).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=resume
        )
        res = cls.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            res.update(cls.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

