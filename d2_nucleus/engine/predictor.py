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
Those names are importable from here too.
"""
import warnings
from typing import List, Sequence

import numpy as np
import torch

import detectron2.data.transforms as T
from detectron2.modeling import build_model
from detectron2.structures import Instances

from ..compat import NucleusCheckpointer, check_weights_path
from ..data.dataset_mapper import build_nucleus_augmentation
from ..data.image_io import BadImageError, read_image  # noqa: F401  (re-exported)
from ..evaluation.coco_results import instance_rles
from ..modeling import NucleusRCNNWithTTA, RLEList
from ..utils.autocast import cpu_autocast
from .inputs import IMAGE_EXTENSIONS, ImageItem, list_inputs  # noqa: F401  (re-exported)

__all__ = [
    "BadImageError",
    "ImageItem",
    "IMAGE_EXTENSIONS",
    "NucleusPredictor",
    "PredictionSummary",
    "check_outputs",
    "list_inputs",
    "read_image",
    "run_prediction",
]


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
        """
        self.cfg = cfg = cfg.clone()
        weights = cfg.MODEL.WEIGHTS
        check_weights_path(weights)  # empty, a folder, not found: one line each
        self.model = build_model(cfg)
        self.model.eval()
        NucleusCheckpointer(self.model, download_timeout=cfg.MODEL.WEIGHTS_DOWNLOAD_TIMEOUT).load(weights)
        self.augmentations = T.AugmentationList(build_nucleus_augmentation(cfg, is_train=False))
        self.input_format = cfg.INPUT.FORMAT
        self.batch_size = max(1, int(batch_size))
        self.tta = NucleusRCNNWithTTA(cfg, self.model, batch_size=self.batch_size) if tta else None

    def __call__(self, images: Sequence[np.ndarray]) -> List[Instances]:
        """
        Args:
            images: H x W x 3 uint8 arrays in ``cfg.INPUT.FORMAT`` (see :func:`read_image`).

        Returns:
            one :class:`Instances` per image, at the image's size.
        """
        inputs = []
        for image in images:
            height, width = image.shape[:2]
            aug_input = T.AugInput(image)
            self.augmentations(aug_input)
            _warn_if_downscaled(self.cfg, height, width, aug_input.image.shape[:2])
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


def _warn_if_downscaled(cfg, height: int, width: int, model_size) -> None:
    """An image larger than INPUT.MAX_SIZE_TEST allows reaches the model smaller than the config's
    scale asks (Detectron2's cap): its nuclei shrink. Say so, and where large images belong."""
    cap = int(cfg.INPUT.MAX_SIZE_TEST)
    if float(cfg.INPUT.TEST_SCALE) != 1.0:
        scale = float(cfg.INPUT.TEST_SCALE)
    else:  # Detectron2's short-edge resize (MIN_SIZE_TEST 0: native)
        min_size = cfg.INPUT.MIN_SIZE_TEST
        scale = min_size / min(height, width) if min_size else 1.0
    if cap and abs(max(model_size) - cap) <= 1 and max(model_size) < 0.99 * scale * max(height, width):
        warnings.warn(
            f"a {width}x{height} image is downscaled to {model_size[1]}x{model_size[0]} for the model "
            f"(INPUT.MAX_SIZE_TEST {cfg.INPUT.MAX_SIZE_TEST}): its nuclei are smaller than in training; "
            "tools/segment_slides.py segments large images tile by tile at their resolution"
        )


from .prediction import PredictionSummary, check_outputs, run_prediction  # noqa: E402,F401  (re-exported)
