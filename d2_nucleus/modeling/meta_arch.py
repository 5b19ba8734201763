# -*- coding: utf-8 -*-
"""NucleusRCNN: GeneralizedRCNN whose inference is memory-light for hundreds of nuclei an image."""
import contextlib
from typing import Dict, List, Optional

import torch

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import Instances

from .cpu import CPUOptions, apply_cpu_options, roi_heads_features
from .float32_heads import convert_box_predictors
from .frozen_group_norm import convert_frozen_group_norms
from .maskness import maskness_rescore
from .nucleus_features import add_box_features, box_feature_scales
from .postprocessing import nucleus_postprocess

__all__ = ["NucleusRCNN"]


# The flags that turn off the per-detection heads of Detectron2's ROI heads (the ones its
# GeneralizedRCNNWithTTA turns off for box-only passes). ROI heads with further per-detection heads
# run them only behind these (MaskScoringROIHeads' MaskIoU head runs inside the mask branch).
PER_DETECTION_HEADS = ("mask_on", "keypoint_on")


@contextlib.contextmanager
def _heads_off(roi_heads, names=PER_DETECTION_HEADS):
    """Temporarily turn off the per-detection heads of ``roi_heads`` that it has."""
    old = {n: getattr(roi_heads, n) for n in names if hasattr(roi_heads, n)}
    try:
        for n in old:
            setattr(roi_heads, n, False)
        yield
    finally:
        for n, v in old.items():
            setattr(roi_heads, n, v)


@META_ARCH_REGISTRY.register()
class NucleusRCNN(GeneralizedRCNN):
    """
    :class:`GeneralizedRCNN` for dense nuclei. Training is unchanged. At inference:

    * the mask head (and any other per-detection head) runs on the final detections in chunks
      of ``mask_chunk_size``: its activations take ~2.5 MB a detection with the default head, so
      3,000 detections at once would need ~7.5 GB;
    * masks are returned as COCO RLEs built from each box-local mask
      (:func:`nucleus_postprocess`) instead of N full-size masks.

    Each output ``Instances`` (on CPU, at the input's "height" x "width") has ``pred_boxes``,
    ``scores``, ``pred_classes`` and ``pred_rles`` (plus any extra field of the ROI heads).
    """

    @configurable
    def __init__(self, *, mask_threshold: float = 0.5, mask_chunk_size: int = 0, channels_last: bool = False,
                 maskness_power: float = 0.0, float32_box_predictor: bool = True, frozen_group_norm: bool = False,
                 cpu_options: Optional[CPUOptions] = None, box_features: tuple = (), **kwargs):
        """
        Args:
            mask_threshold: binarisation threshold of the mask probabilities.
            mask_chunk_size: detections per pass of the per-detection heads at inference
                (0: all at once, as Detectron2 does).
            channels_last: keep convolution weights (and so activations) in channels-last
                memory format, which oneDNN runs faster on CPUs, bfloat16 especially.
            maskness_power: at inference, multiply each detection's score by its mask's
                maskness to this power (:func:`maskness_rescore`; 0: scores as the heads give them).
            float32_box_predictor: run the box predictor in float32 under autocast, so scores
                are not rounded to bf16 (:func:`convert_box_predictors`).
            frozen_group_norm: the backbone's GroupNorms normalise with fixed statistics
                (:class:`FrozenGroupNorm`; the weights must come from tools/freeze_group_norm.py),
                so a nucleus's features do not depend on the rest of the input (whole-slide tiles).
            cpu_options: the CPU speed options (``MODEL.CPU``; :func:`apply_cpu_options`);
                None: none, Detectron2's kernels.
            box_features: at inference each detection gets the box head's features of its box
                scaled by each of these factors (``box_features``, ``context_features``:
                :func:`add_box_features`; () none; needs ``mask_chunk_size`` > 0).
            kwargs: the arguments of :class:`GeneralizedRCNN`.

        None of these changes a parameter or a state-dict key: checkpoints load either way.
        """
        super().__init__(**kwargs)
        if frozen_group_norm:
            convert_frozen_group_norms(self.backbone)
        self.mask_threshold = mask_threshold
        self.maskness_power = maskness_power
        self.mask_chunk_size = mask_chunk_size
        self.box_features = tuple(box_features)
        if box_features and mask_chunk_size <= 0:
            raise ValueError("TYPES.BOX_FEATURES needs TEST.MASK_HEAD_CHUNK_SIZE > 0")
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)
        if float32_box_predictor:
            convert_box_predictors(self.roi_heads)
        if cpu_options is not None:
            apply_cpu_options(self, cpu_options, channels_last)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["mask_threshold"] = cfg.NUCLEUS.MASK_THRESHOLD
        ret["mask_chunk_size"] = cfg.TEST.MASK_HEAD_CHUNK_SIZE
        ret["channels_last"] = cfg.MODEL.CHANNELS_LAST
        ret["maskness_power"] = cfg.TEST.MASKNESS_POWER
        ret["float32_box_predictor"] = cfg.MODEL.ROI_BOX_HEAD.FLOAT32_PREDICTOR
        ret["frozen_group_norm"] = cfg.MODEL.FROZEN_GROUP_NORM
        ret["cpu_options"] = CPUOptions.from_config(cfg)
        ret["box_features"] = box_feature_scales(cfg)
        return ret

    def preprocess_image(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        images = super().preprocess_image(batched_inputs)
        if self.channels_last:
            images.tensor = images.tensor.contiguous(memory_format=torch.channels_last)
        return images

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
        assert not self.training
        if self.mask_chunk_size <= 0:
            results = super().inference(batched_inputs, detected_instances, do_postprocess=False)
        else:
            images = self.preprocess_image(batched_inputs)
            features = self.backbone(images.tensor)
            if detected_instances is None:
                if self.proposal_generator is not None:
                    proposals, _ = self.proposal_generator(images, features, None)
                else:
                    proposals = [x["proposals"].to(self.device) for x in batched_inputs]
            features = roi_heads_features(self.roi_heads, features)
            if detected_instances is None:
                with _heads_off(self.roi_heads):  # boxes only
                    results, _ = self.roi_heads(images, features, proposals, None)
            else:
                results = [x.to(self.device) for x in detected_instances]
            results = self._forward_with_given_boxes_chunked(features, results)
            if self.box_features:
                add_box_features(self.roi_heads, features, results, self.mask_chunk_size, self.box_features)
        if self.maskness_power > 0:
            maskness_rescore(results, self.mask_threshold, self.maskness_power)
        if not do_postprocess:
            return results
        processed = []
        for result, inputs in zip(results, batched_inputs):
            height = inputs.get("height", result.image_size[0])
            width = inputs.get("width", result.image_size[1])
            r = nucleus_postprocess(result, height, width, self.mask_threshold)
            processed.append({"instances": r.to("cpu")})
        return processed

    def _forward_with_given_boxes_chunked(self, features, instances: List[Instances]) -> List[Instances]:
        """``roi_heads.forward_with_given_boxes`` on at most ``mask_chunk_size`` detections an image at a time."""
        k = self.mask_chunk_size
        num_chunks = max([(len(x) + k - 1) // k for x in instances] + [1])
        chunks = [
            self.roi_heads.forward_with_given_boxes(features, [x[i * k : (i + 1) * k] for x in instances])
            for i in range(num_chunks)
        ]
        return [Instances.cat([c[j] for c in chunks]) for j in range(len(instances))]
