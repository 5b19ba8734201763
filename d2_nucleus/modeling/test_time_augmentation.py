# -*- coding: utf-8 -*-
"""
Test-time augmentation for NucleusRCNN: Detectron2's GeneralizedRCNNWithTTA (boxes from all
augmented images merged by NMS, masks of the merged boxes averaged over the augmentations),
with scales relative to each image's test size, vertical flips, and RLE post-processing.

Config (``cfg.TEST.AUG``):
    SCALES: scales relative to the test size, i.e. the native size x ``INPUT.TEST_SCALE`` (the
        predictor's and the evaluation's test-time resize comes first; 1.0 = the test size). When
        non-empty they replace Detectron2's absolute ``MIN_SIZES`` (short-edge lengths in
        pixels, 0 = native). Default ``(1.0,)``: the test size only, the right choice for nuclei
        that are only 8-40 px across.
    MAX_SIZE: upper limit of the longer edge after resizing (Detectron2's key).
    FLIP: horizontal flips (Detectron2's key); VFLIP: vertical flips (with FLIP, also both).
Default: 4 passes per image (identity, horizontal, vertical, both) at the test size.
"""
import copy

import numpy as np
import torch
from fvcore.transforms import NoOpTransform, VFlipTransform

from detectron2.config import configurable
from detectron2.data.transforms import (
    RandomFlip,
    ResizeShortestEdge,
    ResizeTransform,
    apply_augmentations,
)
from detectron2.modeling import DatasetMapperTTA, GeneralizedRCNNWithTTA

from ..data.transforms import RelativeResize
from .meta_arch import PER_DETECTION_HEADS
from .maskness import maskness_rescore
from .postprocessing import nucleus_postprocess

__all__ = ["NucleusDatasetMapperTTA", "NucleusRCNNWithTTA"]


class NucleusDatasetMapperTTA(DatasetMapperTTA):
    """
    :class:`DatasetMapperTTA` with sizes relative to the test size and vertical flips.
    Returns ``len(sizes) * (1 + flip) * (1 + vflip)`` augmented dicts.
    """

    @configurable
    def __init__(self, min_sizes, max_size: int, flip: bool, scales=(), vflip: bool = False):
        """
        Args:
            min_sizes, max_size, flip: as in :class:`DatasetMapperTTA`.
            scales: short-edge scales relative to the test size (1.0 = the test size); replace
                ``min_sizes`` when non-empty.
            vflip: also flip vertically.
        """
        super().__init__(min_sizes=min_sizes, max_size=max_size, flip=flip)
        if any(s <= 0 for s in scales):
            raise ValueError(f"TEST.AUG.SCALES must be positive, got {tuple(scales)}")
        self.scales = tuple(scales)
        self.vflip = vflip

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret.update(scales=cfg.TEST.AUG.SCALES, vflip=cfg.TEST.AUG.VFLIP)
        return ret

    def __call__(self, dataset_dict):
        image = dataset_dict["image"].permute(1, 2, 0).numpy()
        orig_shape = (dataset_dict["height"], dataset_dict["width"])
        if image.shape[:2] != orig_shape:
            pre_tfm = ResizeTransform(orig_shape[0], orig_shape[1], image.shape[0], image.shape[1])
        else:
            pre_tfm = NoOpTransform()
        if self.scales:  # relative to the image as it comes (already at INPUT.TEST_SCALE)
            resizes = [RelativeResize(s, self.max_size) for s in self.scales]
        else:
            resizes = [ResizeShortestEdge(size, self.max_size) for size in self.min_sizes]
        flips = [[]]
        if self.flip:
            flips.append([RandomFlip(prob=1.0, horizontal=True, vertical=False)])
        if self.vflip:
            flips += [f + [RandomFlip(prob=1.0, horizontal=False, vertical=True)] for f in flips]

        ret = []
        for resize in resizes:
            for flip in flips:
                new_image, tfms = apply_augmentations([resize] + flip, np.copy(image))
                dic = copy.deepcopy(dataset_dict)
                dic["transforms"] = pre_tfm + tfms
                dic["image"] = torch.from_numpy(np.ascontiguousarray(new_image.transpose(2, 0, 1)))
                ret.append(dic)
        return ret


class NucleusRCNNWithTTA(GeneralizedRCNNWithTTA):
    """
    :class:`GeneralizedRCNNWithTTA` for :class:`NucleusRCNN`: outputs (on CPU) have
    ``pred_rles`` instead of full-size ``pred_masks`` (see :func:`nucleus_postprocess`).
    """

    def __init__(self, cfg, model, tta_mapper=None, batch_size: int = 3):
        if tta_mapper is None:
            tta_mapper = NucleusDatasetMapperTTA(cfg)
        super().__init__(cfg, model, tta_mapper, batch_size)
        self.mask_threshold = cfg.NUCLEUS.MASK_THRESHOLD

    def _inference_one_image(self, input):
        orig_shape = (input["height"], input["width"])
        augmented_inputs, tfms = self._get_augmented_inputs(input)
        with self._turn_off_roi_heads(list(PER_DETECTION_HEADS)):  # boxes only
            boxes, scores, classes = self._get_augmented_boxes(augmented_inputs, tfms)
        merged = self._merge_detections(boxes, scores, classes, orig_shape)
        if self.cfg.MODEL.MASK_ON:
            instances = self._rescale_detected_boxes(augmented_inputs, merged, tfms)
            outputs = self._batch_inference(augmented_inputs, instances)
            merged.pred_masks = self._reduce_pred_masks(outputs, tfms)
            if outputs and all(o.has("pred_maskiou") for o in outputs):
                # Mask Scoring R-CNN: rescore with the mask IoU averaged over the augmentations
                iou = torch.stack([o.pred_maskiou for o in outputs]).mean(dim=0)
                merged.cls_scores, merged.pred_maskiou = merged.scores, iou
                merged.scores = merged.scores * iou
            # maskness of the averaged masks (the per-augmentation rescoring is not used here)
            maskness_rescore([merged], self.mask_threshold, self.cfg.TEST.MASKNESS_POWER)
            merged = nucleus_postprocess(merged, *orig_shape, mask_threshold=self.mask_threshold)
        return {"instances": merged.to("cpu")}

    def _reduce_pred_masks(self, outputs, tfms):
        # Detectron2 undoes horizontal flips of the box-local masks; undo vertical ones here.
        for output, tfm in zip(outputs, tfms):
            if any(isinstance(t, VFlipTransform) for t in tfm.transforms):
                output.pred_masks = output.pred_masks.flip(dims=[2])
        return super()._reduce_pred_masks(outputs, tfms)
