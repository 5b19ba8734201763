# -*- coding: utf-8 -*-
"""
:class:`NucleusPredictor`: a d2_nucleus model on images at their native resolution.

The model is the one ``cfg`` describes (``build_model(cfg)``, as ``tools/train_net.py
--eval-only`` builds it): no meta-architecture is swapped here, so prediction and evaluation run
the same inference and post-processing for the same config. Masks come out as per-instance COCO
RLEs (``pred_rles``): NucleusRCNN makes them from each box-local mask; the full-size
``pred_masks`` of other meta-architectures are encoded by the converter the evaluator uses.

The rest of a prediction run lives next door: the inputs (:mod:`.inputs`), the run and its
outputs (:mod:`.prediction`); images are read by :func:`d2_nucleus.data.image_io.read_image`.
"""
import warnings
from typing import List, Optional, Sequence

import numpy as np
import torch

import detectron2.data.transforms as T
from detectron2.modeling import build_model
from detectron2.structures import Instances

from ..checkpoint import NucleusCheckpointer, check_weights_path
from ..config import check_device, input_resize_factor
from ..data.dataset_mapper import build_nucleus_augmentation
from ..evaluation.coco_results import instance_rles
from ..modeling import NucleusRCNNWithTTA, RLEList
from ..utils.autocast import cpu_autocast

__all__ = ["NucleusPredictor"]


class NucleusPredictor:
    """
    Run a d2_nucleus model on images at their native resolution (or whatever the test-time
    transform of the config says: ``build_augmentation(cfg, is_train=False)``, as in evaluation).

    Outputs are :class:`Instances` on CPU with ``pred_boxes``, ``scores``, ``pred_classes`` and
    ``pred_rles`` (see :func:`d2_nucleus.modeling.nucleus_postprocess`).
    """

    def __init__(self, cfg, tta: bool = False, batch_size: int = 1):
        """
        Args:
            cfg: a d2_nucleus config; ``MODEL.WEIGHTS`` must be a checkpoint file.
            tta: use :class:`NucleusRCNNWithTTA` (``cfg.TEST.AUG``).
            batch_size: images per forward pass (with TTA: augmented copies per pass).

        Raises:
            WeightsNotFoundError: ``MODEL.WEIGHTS`` is empty, a folder or not a file, or a URL that
                cannot be downloaded.
            RuntimeError: ``MODEL.DEVICE`` is not usable here (e.g. ``cuda`` without CUDA).
        """
        self.cfg = cfg = cfg.clone()
        check_device(cfg.MODEL.DEVICE)
        weights = cfg.MODEL.WEIGHTS
        check_weights_path(weights)  # empty, a folder, not found: one line each
        self.model = build_model(cfg)
        self.model.eval()
        NucleusCheckpointer(self.model, download_timeout=cfg.MODEL.WEIGHTS_DOWNLOAD_TIMEOUT).load(weights)
        self._augmentations = {}  # resize factor -> the test-time augmentation
        self.input_format = cfg.INPUT.FORMAT
        self.batch_size = max(1, int(batch_size))
        self.tta = NucleusRCNNWithTTA(cfg, self.model, batch_size=self.batch_size) if tta else None

    def augmentations(self, mpp: Optional[float] = None) -> T.AugmentationList:
        """The test-time resize of images at ``mpp`` um/px (None: the model's resolution)."""
        factor = input_resize_factor(self.cfg, mpp)
        if factor not in self._augmentations:
            self._augmentations[factor] = T.AugmentationList(
                build_nucleus_augmentation(self.cfg, is_train=False, resize_factor=factor))
        return self._augmentations[factor]

    def __call__(self, images: Sequence[np.ndarray], mpp: Optional[float] = None) -> List[Instances]:
        """
        Args:
            images: H x W x 3 uint8 arrays in ``cfg.INPUT.FORMAT`` (see :func:`read_image`).
            mpp: their resolution in um/px: images at another resolution than the model's
                (``MODEL.PIXEL_SIZE_UM``, beyond ``SLIDE.MPP_TOLERANCE``) are resized to it for
                the model (:func:`d2_nucleus.config.input_resize_factor`); None: the model's.

        Returns:
            one :class:`Instances` per image, at the image's size (its own pixels).
        """
        augmentations = self.augmentations(mpp)
        inputs = []
        for image in images:
            height, width = image.shape[:2]
            aug_input = T.AugInput(image)
            augmentations(aug_input)
            _warn_if_downscaled(self.cfg, height, width, aug_input.image.shape[:2], input_resize_factor(self.cfg, mpp))
            tensor = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
            inputs.append({"image": tensor, "height": height, "width": width})
        outputs = []
        with torch.no_grad(), cpu_autocast(self.cfg):
            if self.tta is not None:
                outputs = self.tta(inputs)
            else:
                for i in range(0, len(inputs), self.batch_size):
                    outputs.extend(self.model(inputs[i : i + self.batch_size]))
        results = [o["instances"].to("cpu") for o in outputs]
        for r in results:
            if not r.has("pred_rles"):
                rles = instance_rles(r)  # full-size pred_masks (e.g. GeneralizedRCNN)
                if rles is None:
                    raise RuntimeError(
                        f"{self.cfg.MODEL.META_ARCHITECTURE} outputs no masks; prediction needs "
                        "MODEL.MASK_ON True"
                    )
                r.remove("pred_masks")
                r.pred_rles = RLEList(rles)
        return results


def _warn_if_downscaled(cfg, height: int, width: int, model_size, resize_factor: float = 1.0) -> None:
    """An image larger than INPUT.MAX_SIZE_TEST allows reaches the model smaller than the config's
    scale asks (Detectron2's cap): its nuclei shrink. Say so, and where large images belong."""
    cap = int(cfg.INPUT.MAX_SIZE_TEST)
    if float(cfg.INPUT.TEST_SCALE) * resize_factor != 1.0:
        scale = float(cfg.INPUT.TEST_SCALE) * resize_factor
    else:  # Detectron2's short-edge resize (MIN_SIZE_TEST 0: native)
        min_size = cfg.INPUT.MIN_SIZE_TEST
        scale = min_size / min(height, width) if min_size else 1.0
    if cap and abs(max(model_size) - cap) <= 1 and max(model_size) < 0.99 * scale * max(height, width):
        warnings.warn(
            f"a {width}x{height} image is downscaled to {model_size[1]}x{model_size[0]} for the model "
            f"(INPUT.MAX_SIZE_TEST {cfg.INPUT.MAX_SIZE_TEST}): its nuclei are smaller than in training; "
            "tools/segment_slides.py segments large images tile by tile at their resolution"
        )
