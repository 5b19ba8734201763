# -*- coding: utf-8 -*-
"""NucleusRCNN: GeneralizedRCNN whose inference is memory-light for hundreds of nuclei an image."""
import contextlib
from typing import Dict, List, Optional

import torch

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import Instances

from ..utils.malloc import tune_malloc as tune_malloc_thresholds
from .float32_heads import convert_box_predictors
from .frozen_group_norm import convert_frozen_group_norms
from .group_norm import convert_group_norms, fuse_group_norm_relus
from .maskness import maskness_rescore
from .nucleus_features import add_box_features, box_feature_scales
from .poolers import convert_poolers, native_pooling
from .postprocessing import nucleus_postprocess
from .roi_align import convert_roi_aligns, roi_features
from .rpn import convert_rpn

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


def _roi_in_features(roi_heads):
    names = []
    for attr in ("box_in_features", "mask_in_features", "keypoint_in_features", "in_features"):
        names += [f for f in getattr(roi_heads, attr, None) or [] if f not in names]
    return names


def _roi_heads_features_hook(roi_heads, args):
    """
    Forward pre-hook: ``roi_heads(images, features, ...)`` gets :func:`roi_features` of its
    features, unless its poolers read them as they are (:class:`NucleusROIPooler` at inference).
    """
    if len(args) < 2 or not isinstance(args[1], dict) or not args[1]:
        return None
    features = args[1]
    if getattr(roi_heads, "native_roi_align", False) and native_pooling(next(iter(features.values())).device):
        return None
    wanted = [f for f in _roi_in_features(roi_heads) if f in features] or list(features)
    return (args[0], roi_features({f: features[f] for f in wanted})) + tuple(args[2:])


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
                 fast_group_norm: bool = True, roi_align_threads: int = 1, roi_features_once: bool = True,
                 tune_malloc: bool = False, maskness_power: float = 0.0,
                 float32_box_predictor: bool = True, frozen_group_norm: bool = False,
                 native_roi_align: bool = False, native_group_norm: bool = False, rpn_nms_threads: int = 1,
                 native_anchor_iou: bool = False, box_features: tuple = (), **kwargs):
        """
        Args:
            mask_threshold: binarisation threshold of the mask probabilities.
            mask_chunk_size: detections per pass of the per-detection heads at inference
                (0: all at once, as Detectron2 does).
            channels_last: keep convolution weights (and so activations) in channels-last
                memory format, which oneDNN runs faster on CPUs, bfloat16 especially.
            fast_group_norm: with ``channels_last``, GroupNorms of RoI batches take PyTorch's
                faster NCHW kernel (:class:`NucleusGroupNorm`).
            roi_align_threads: CPU threads each RoIAlign runs on (0: all of torch's; 1:
                torchvision's single-threaded kernel as it is; :class:`ThreadedROIAlign`).
            roi_features_once: give the RoI heads their feature maps as RoIAlign reads them
                (float32, NCHW), converted once an image instead of at each RoIAlign call.
            tune_malloc: raise glibc's malloc thresholds for this process
                (:func:`d2_nucleus.utils.malloc.tune_malloc`; for CPU models).
            maskness_power: at inference, multiply each detection's score by its mask's
                maskness to this power (:func:`maskness_rescore`; 0: scores as the heads give them).
            float32_box_predictor: run the box predictor in float32 under autocast, so scores
                are not rounded to bf16 (:func:`convert_box_predictors`).
            frozen_group_norm: the backbone's GroupNorms normalise with fixed statistics
                (:class:`FrozenGroupNorm`; the weights must come from tools/freeze_group_norm.py),
                so a nucleus's features do not depend on the rest of the input (whole-slide tiles).
            native_roi_align: on CPU the RoI heads' poolers run all pyramid levels in one call
                of d2_nucleus's channels-last C++ RoIAlign, forward and backward
                (:class:`NucleusROIPooler`; torchvision's values), reading the maps as they are.
            native_group_norm: with ``channels_last`` and ``fast_group_norm``, on CPU the
                GroupNorms run as channels-last C++ kernels, forward and backward, with the RoI
                heads' ReLUs fused in (:func:`fuse_group_norm_relus`).
            rpn_nms_threads: CPU threads the RPN's per-level NMS runs on at inference (0: all of
                torch's; 1: Detectron2's :class:`RPN` as it is; :class:`NucleusRPN`).
            native_anchor_iou: in training on CPU the RPN's anchor matching takes its IoU matrix
                from a C++ kernel (:class:`NucleusRPN`; the same values).
            box_features: at inference each detection gets the box head's features of its box
                scaled by each of these factors (``box_features``, ``context_features``:
                :func:`add_box_features`; () none; needs ``mask_chunk_size`` > 0).
            kwargs: the arguments of :class:`GeneralizedRCNN`.

        None of the speed options changes a parameter or a state-dict key: checkpoints load
        either way.
        """
        super().__init__(**kwargs)
        if frozen_group_norm:
            convert_frozen_group_norms(self.backbone)
        if tune_malloc:
            tune_malloc_thresholds()
        self.mask_threshold = mask_threshold
        self.maskness_power = maskness_power
        self.mask_chunk_size = mask_chunk_size
        self.box_features = tuple(box_features)
        if box_features and mask_chunk_size <= 0:
            raise ValueError("TYPES.BOX_FEATURES needs TEST.MASK_HEAD_CHUNK_SIZE > 0")
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)
            if fast_group_norm:
                convert_group_norms(self, native=native_group_norm)
                if native_group_norm:
                    fuse_group_norm_relus(self.roi_heads)
        if roi_align_threads != 1:
            convert_roi_aligns(self.roi_heads, roi_align_threads)
        if float32_box_predictor:
            convert_box_predictors(self.roi_heads)
        if native_roi_align:
            convert_poolers(self.roi_heads)
        if (rpn_nms_threads != 1 or native_anchor_iou) and self.proposal_generator is not None:
            convert_rpn(self.proposal_generator, rpn_nms_threads, native_anchor_iou)
        # read by _roi_heads_features_hook and inference(): NucleusROIPooler needs no conversion
        self.roi_heads.native_roi_align = native_roi_align
        self.roi_features_once = roi_features_once
        if roi_features_once:
            self.roi_heads.register_forward_pre_hook(_roi_heads_features_hook)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["mask_threshold"] = cfg.NUCLEUS.MASK_THRESHOLD
        ret["mask_chunk_size"] = cfg.TEST.MASK_HEAD_CHUNK_SIZE
        ret["channels_last"] = cfg.MODEL.CHANNELS_LAST
        ret["fast_group_norm"] = cfg.MODEL.FAST_GROUP_NORM
        ret["roi_align_threads"] = cfg.MODEL.ROI_ALIGN_THREADS
        ret["roi_features_once"] = cfg.MODEL.ROI_FEATURES_ONCE
        ret["tune_malloc"] = cfg.MODEL.CPU_TUNE_MALLOC and cfg.MODEL.DEVICE == "cpu"
        ret["maskness_power"] = cfg.TEST.MASKNESS_POWER
        ret["float32_box_predictor"] = cfg.MODEL.ROI_BOX_HEAD.FLOAT32_PREDICTOR
        ret["frozen_group_norm"] = cfg.MODEL.FROZEN_GROUP_NORM
        ret["native_roi_align"] = cfg.MODEL.NATIVE_ROI_ALIGN
        ret["native_group_norm"] = cfg.MODEL.NATIVE_GROUP_NORM
        ret["rpn_nms_threads"] = cfg.MODEL.RPN_NMS_THREADS
        ret["native_anchor_iou"] = cfg.MODEL.NATIVE_ANCHOR_IOU
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
            if self.roi_features_once and not (
                self.roi_heads.native_roi_align and native_pooling(images.tensor.device)
            ):
                features = roi_features({f: features[f] for f in _roi_in_features(self.roi_heads)})
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
