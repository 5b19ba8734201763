# -*- coding: utf-8 -*-
"""NucleusRCNN: GeneralizedRCNN whose inference returns per-instance RLE masks."""
from typing import Dict, List, Optional

import torch

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import Instances

from .postprocessing import nucleus_postprocess

__all__ = ["NucleusRCNN"]


@META_ARCH_REGISTRY.register()
class NucleusRCNN(GeneralizedRCNN):
    """
    :class:`GeneralizedRCNN` for dense nuclei. Training is unchanged. At inference, masks are
    returned as COCO RLEs built from each box-local mask (:func:`nucleus_postprocess`) instead
    of N full-size masks: each output ``Instances`` (on CPU, at the input's "height" x "width")
    has ``pred_boxes``, ``scores``, ``pred_classes`` and ``pred_rles``.
    """

    @configurable
    def __init__(self, *, mask_threshold: float = 0.5, **kwargs):
        """
        Args:
            mask_threshold: binarisation threshold of the mask probabilities.
            kwargs: the arguments of :class:`GeneralizedRCNN`.
        """
        super().__init__(**kwargs)
        self.mask_threshold = mask_threshold

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["mask_threshold"] = cfg.NUCLEUS.MASK_THRESHOLD
        return ret

    def inference(
        self,
        batched_inputs: List[Dict[str, torch.Tensor]],
        detected_instances: Optional[List[Instances]] = None,
        do_postprocess: bool = True,
    ):
        """
        Same as :meth:`GeneralizedRCNN.inference`; with ``do_postprocess`` the results are
        rescaled to each input's "height" x "width" and their masks RLE-encoded.
        """
        results = super().inference(batched_inputs, detected_instances, do_postprocess=False)
        if not do_postprocess:
            return results
        processed = []
        for result, inputs in zip(results, batched_inputs):
            height = inputs.get("height", result.image_size[0])
            width = inputs.get("width", result.image_size[1])
            r = nucleus_postprocess(result, height, width, self.mask_threshold)
            processed.append({"instances": r.to("cpu")})
        return processed
