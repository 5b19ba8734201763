# -*- coding: utf-8 -*-
"""
Mask Scoring R-CNN (Huang et al., CVPR 2019): a MaskIoU head that predicts the IoU of each
predicted mask with its ground truth, and ROI heads that rescore detections with it
(score = class score x predicted mask IoU). Detectron2 has no such head.

Enable with::

    MODEL.ROI_HEADS.NAME: "MaskScoringROIHeads"
    MODEL.MASKIOU_ON: True          # MODEL.ROI_MASKIOU_HEAD.* configure the head

With MASKIOU_ON False, MaskScoringROIHeads is exactly StandardROIHeads.
"""
from typing import Dict, List

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, cat, get_norm
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.roi_heads.mask_head import BaseMaskRCNNHead, mask_rcnn_inference, mask_rcnn_loss
from detectron2.modeling.roi_heads.roi_heads import select_foreground_proposals
from detectron2.structures import BitMasks, Instances, PolygonMasks
from detectron2.utils.events import get_event_storage
from detectron2.utils.registry import Registry

__all__ = [
    "ROI_MASKIOU_HEAD_REGISTRY",
    "MaskIoUHead",
    "build_maskiou_head",
    "maskiou_targets",
    "maskiou_loss",
    "maskiou_inference",
    "MaskScoringROIHeads",
]

ROI_MASKIOU_HEAD_REGISTRY = Registry("ROI_MASKIOU_HEAD")
ROI_MASKIOU_HEAD_REGISTRY.__doc__ = """
Registry for MaskIoU heads, which predict the IoU of each predicted mask with its ground truth
from the mask head's RoI features and the predicted mask.

The registered object is called with `obj(cfg, input_shape)`, input_shape being the ShapeSpec
of the pooled RoI features of the mask branch.
"""


def maskiou_targets(
    mask_probs: torch.Tensor, instances: List[Instances], mask_threshold: float = 0.5
) -> torch.Tensor:
    """
    The IoU of each binarised predicted mask with its ground-truth mask, as in MS R-CNN.

    The predicted mask only covers the proposal box, but the ground truth may extend beyond it.
    MS R-CNN therefore takes the union with the ground truth's *full* area:
    ``IoU = |P & G_box| / (|P| + |G_full| - |P & G_box|)``, measured on the M x M grid of the
    mask head. ``G_box`` is the ground truth rasterised in the proposal box
    (``gt_masks.crop_and_resize``); ``|G_full|`` is the ground truth's area in image pixels
    (``gt_mask_areas``, set by :class:`MaskScoringROIHeads`) times the grid cells per pixel of
    the box, ``M^2 / (box_w * box_h)`` -- equivalent to the paper's ``|G_box| / ratio`` with
    ``ratio`` = fraction of the ground truth inside the box, without cropping the full-size masks
    again. It is clamped to at least ``|G_box|`` (rasterisation can disagree by a few cells).

    Args:
        mask_probs: (N, 1, M, M) predicted probabilities of the ground-truth class.
        instances: the N foreground proposals, per image, with ``proposal_boxes``, ``gt_masks``
            (BitMasks or PolygonMasks) and ``gt_mask_areas``.
        mask_threshold: a cell is in the predicted mask when its probability >= this.

    Returns:
        (N,) float tensor of IoUs in [0, 1], no gradient.
    """
    side = mask_probs.shape[-1]
    gt, full_area, box_area = [], [], []
    for inst in instances:
        if len(inst) == 0:
            continue
        boxes = inst.proposal_boxes.tensor
        gt.append(inst.gt_masks.crop_and_resize(boxes, side).to(device=mask_probs.device))
        full_area.append(inst.gt_mask_areas.to(device=mask_probs.device, dtype=torch.float32))
        box_area.append(inst.proposal_boxes.area().to(device=mask_probs.device))
    if not gt:
        return mask_probs.new_zeros(0)
    gt = cat(gt, dim=0)
    gt = gt if gt.dtype == torch.bool else gt > 0.5
    pred = mask_probs[:, 0].detach() >= mask_threshold
    inter = (pred & gt).sum(dim=(1, 2)).float()
    pred_area = pred.sum(dim=(1, 2)).float()
    gt_in_box = gt.sum(dim=(1, 2)).float()
    gt_full = cat(full_area) * (side * side) / cat(box_area).clamp(min=1e-6)
    gt_full = torch.max(gt_full, gt_in_box)
    union = (pred_area + gt_full - inter).clamp(min=1.0)
    return (inter / union).clamp(0.0, 1.0)


def maskiou_loss(pred_maskiou: torch.Tensor, instances: List[Instances], targets: torch.Tensor):
    """
    L2 loss of the predicted IoU of each foreground proposal's ground-truth class:
    mean over the N proposals of ``(pred - target)^2``. (MS R-CNN's code uses
    ``0.5 * sum / N`` and drops proposals whose target is 0; here a mask with IoU 0 is a valid
    example of a bad mask.)

    Args:
        pred_maskiou: (N, C) predicted IoUs, one per class.
        instances: the N foreground proposals, with ``gt_classes``.
        targets: (N,) IoU targets from :func:`maskiou_targets`.
    """
    if pred_maskiou.shape[0] == 0:
        return pred_maskiou.sum() * 0
    gt_classes = cat([i.gt_classes for i in instances if len(i)], dim=0).to(torch.int64)
    if pred_maskiou.shape[1] == 1:
        gt_classes = torch.zeros_like(gt_classes)
    pred = pred_maskiou[torch.arange(len(gt_classes), device=pred_maskiou.device), gt_classes]
    loss = F.mse_loss(pred, targets.to(pred.dtype), reduction="mean")
    storage = get_event_storage()
    storage.put_scalar("maskiou/target_mean", targets.mean().item())
    storage.put_scalar("maskiou/pred_mean", pred.detach().mean().item())
    return loss


def maskiou_inference(pred_maskiou: torch.Tensor, pred_instances: List[Instances]) -> None:
    """
    Rescore detections: for each image, ``pred_maskiou`` = predicted IoU of the predicted class
    (clamped to [0, 1]), ``cls_scores`` = the original scores, ``scores`` = their product.
    The order of the instances is unchanged (it is no longer by decreasing score).
    """
    classes = cat([i.pred_classes for i in pred_instances]).to(torch.int64)
    if pred_maskiou.shape[1] == 1:
        classes = torch.zeros_like(classes)
    ious = pred_maskiou[torch.arange(len(classes), device=pred_maskiou.device), classes]
    ious = ious.clamp(0.0, 1.0)
    for iou, inst in zip(ious.split([len(i) for i in pred_instances]), pred_instances):
        inst.cls_scores = inst.scores
        inst.pred_maskiou = iou.to(inst.scores.dtype)
        inst.scores = inst.scores * inst.pred_maskiou


@ROI_MASKIOU_HEAD_REGISTRY.register()
class MaskIoUHead(nn.Module):
    """
    The MaskIoU head of MS R-CNN: the mask branch's pooled RoI features (C x S x S) concatenated
    with the max-pooled predicted mask (2S x 2S -> S x S), then convs (the last one of stride 2),
    two fully-connected layers and a linear layer to one IoU per class.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dims: List[int],
        fc_dims: List[int],
        conv_norm: str = "",
        loss_weight: float = 1.0,
        mask_threshold: float = 0.5,
    ):
        """
        Args:
            input_shape: shape of the pooled RoI features (channels, height, width).
            num_classes: number of foreground classes (one IoU each).
            conv_dims: output channels of the 3x3 convs; the last one has stride 2.
            fc_dims: output sizes of the fully-connected layers.
            conv_norm: normalization of the convs (see :func:`detectron2.layers.get_norm`).
            loss_weight: multiplier of the L2 loss.
            mask_threshold: binarisation threshold of the predicted mask for the IoU targets.
        """
        super().__init__()
        if not conv_dims:
            raise ValueError("MaskIoUHead needs at least one conv")
        self.loss_weight = loss_weight
        self.mask_threshold = mask_threshold
        channels = input_shape.channels + 1
        self.convs = []
        for k, dim in enumerate(conv_dims):
            stride = 2 if k == len(conv_dims) - 1 else 1
            conv = Conv2d(
                channels, dim, kernel_size=3, stride=stride, padding=1, bias=not conv_norm,
                norm=get_norm(conv_norm, dim), activation=nn.ReLU(),
            )
            self.add_module(f"maskiou_fcn{k + 1}", conv)
            self.convs.append(conv)
            channels = dim
        # a 3x3 conv of stride 2 and padding 1 maps S to ceil(S / 2)
        in_dim = channels * ((input_shape.height + 1) // 2) * ((input_shape.width + 1) // 2)
        self.fcs = []
        for k, dim in enumerate(fc_dims):
            fc = nn.Linear(in_dim, dim)
            self.add_module(f"maskiou_fc{k + 1}", fc)
            self.fcs.append(fc)
            in_dim = dim
        self.predictor = nn.Linear(in_dim, num_classes)

        for conv in self.convs:
            weight_init.c2_msra_fill(conv)
        for fc in self.fcs:
            weight_init.c2_xavier_fill(fc)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.ROI_MASKIOU_HEAD
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "conv_dims": [head.CONV_DIM] * head.NUM_CONV,
            "fc_dims": [head.FC_DIM] * 2,
            "conv_norm": head.NORM,
            "loss_weight": head.LOSS_WEIGHT,
            "mask_threshold": cfg.NUCLEUS.MASK_THRESHOLD if "NUCLEUS" in cfg else 0.5,
        }

    def layers(self, features: torch.Tensor, mask_probs: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) features and (N, 1, M, M) mask probabilities -> (N, num_classes) IoUs."""
        mask = F.adaptive_max_pool2d(mask_probs.to(features.dtype), features.shape[-2:])
        x = torch.cat([features, mask], dim=1)
        for conv in self.convs:
            x = conv(x)
        x = torch.flatten(x, start_dim=1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return self.predictor(x)

    def forward(self, features: torch.Tensor, mask_probs: torch.Tensor, instances: List[Instances]):
        """
        Args:
            features: pooled RoI features of the mask branch, (N, C, S, S).
            mask_probs: (N, 1, M, M) predicted mask probabilities of the ground-truth class in
                training, of the predicted class at inference. Detached here: the MaskIoU
                loss does not train the mask head through its input.
            instances: in training, the foreground proposals (with gt fields); at inference,
                the detections (with pred_classes and scores).

        Returns:
            In training, {"loss_maskiou"}; at inference, ``instances`` rescored
            (see :func:`maskiou_inference`).
        """
        mask_probs = mask_probs.detach()
        pred = self.layers(features, mask_probs)
        if self.training:
            targets = maskiou_targets(mask_probs, instances, self.mask_threshold)
            return {"loss_maskiou": maskiou_loss(pred, instances, targets) * self.loss_weight}
        maskiou_inference(pred, instances)
        return instances


def build_maskiou_head(cfg, input_shape: ShapeSpec) -> nn.Module:
    """A MaskIoU head named by ``cfg.MODEL.ROI_MASKIOU_HEAD.NAME``."""
    return ROI_MASKIOU_HEAD_REGISTRY.get(cfg.MODEL.ROI_MASKIOU_HEAD.NAME)(cfg, input_shape)


def _mask_areas(masks) -> torch.Tensor:
    """Pixel area of each mask: BitMasks (counted) or PolygonMasks (polygon area)."""
    if isinstance(masks, BitMasks):
        return masks.tensor.flatten(1).sum(dim=1).to(torch.float32)
    if isinstance(masks, PolygonMasks):
        return masks.area().to(torch.float32)
    raise TypeError(f"MaskIoU targets need BitMasks or PolygonMasks, got {type(masks).__name__}")


@ROI_HEADS_REGISTRY.register()
class MaskScoringROIHeads(StandardROIHeads):
    """
    StandardROIHeads plus, when ``cfg.MODEL.MASKIOU_ON``, a MaskIoU head:

    * training: the mask head's loss as usual, plus ``loss_maskiou`` (see
      :func:`maskiou_targets`, :func:`maskiou_loss`) on the foreground proposals;
    * inference: after the mask head, ``scores`` = class score x predicted mask IoU, with the
      class scores kept in ``cls_scores`` and the IoUs in ``pred_maskiou``. This happens in
      ``_forward_mask``, i.e. also in ``forward_with_given_boxes`` (test-time augmentation),
      before any meta-architecture post-processing.

    Requires a pooled mask branch (``ROI_MASK_HEAD.POOLER_TYPE``) and a mask head derived from
    :class:`BaseMaskRCNNHead` (its ``layers`` give the logits).
    """

    @configurable
    def __init__(self, *, maskiou_head: nn.Module = None, **kwargs):
        """
        Args:
            maskiou_head: the MaskIoU head; None disables mask scoring.
            kwargs: the arguments of :class:`StandardROIHeads`.
        """
        super().__init__(**kwargs)
        self.maskiou_on = maskiou_head is not None
        if self.maskiou_on:
            if not self.mask_on or self.mask_pooler is None:
                raise ValueError("MASKIOU_ON needs MODEL.MASK_ON and ROI_MASK_HEAD.POOLER_TYPE")
            if not isinstance(self.mask_head, BaseMaskRCNNHead):
                raise ValueError(
                    f"MASKIOU_ON needs a BaseMaskRCNNHead mask head, got {type(self.mask_head).__name__}"
                )
            self.maskiou_head = maskiou_head

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        if cfg.MODEL.MASKIOU_ON:
            ret.update(cls._init_maskiou_head(cfg, input_shape))
        return ret

    @classmethod
    def _init_maskiou_head(cls, cfg, input_shape):
        if not cfg.MODEL.MASK_ON or not cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE:
            raise ValueError("MODEL.MASKIOU_ON needs MODEL.MASK_ON and ROI_MASK_HEAD.POOLER_TYPE")
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        resolution = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
        channels = input_shape[in_features[0]].channels
        shape = ShapeSpec(channels=channels, height=resolution, width=resolution)
        return {"maskiou_head": build_maskiou_head(cfg, shape)}

    def label_and_sample_proposals(self, proposals, targets):
        if self.maskiou_on and self.training:
            # each target's full mask area, carried to its proposals like every "gt_" field
            with_areas = []
            for t in targets:
                t = Instances(t.image_size, **t.get_fields())
                if t.has("gt_masks"):
                    t.gt_mask_areas = _mask_areas(t.gt_masks)
                with_areas.append(t)
            targets = with_areas
        return super().label_and_sample_proposals(proposals, targets)

    def _forward_mask(self, features: Dict[str, torch.Tensor], instances: List[Instances]):
        if not self.mask_on:  # boxes-only passes (TTA, chunked inference): no masks, no rescoring
            return {} if self.training else instances
        if not self.maskiou_on:
            return super()._forward_mask(features, instances)
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
        boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
        x = self.mask_pooler([features[f] for f in self.mask_in_features], boxes)
        mask_logits = self.mask_head.layers(x)
        if self.training:
            losses = {
                "loss_mask": mask_rcnn_loss(mask_logits, instances, self.mask_head.vis_period)
                * self.mask_head.loss_weight
            }
            if mask_logits.shape[1] == 1 or mask_logits.shape[0] == 0:
                logits = mask_logits[:, :1]
            else:
                classes = cat([i.gt_classes for i in instances if len(i)], dim=0).to(torch.int64)
                idx = torch.arange(len(classes), device=mask_logits.device)
                logits = mask_logits[idx, classes][:, None]
            losses.update(self.maskiou_head(x, logits.sigmoid(), instances))
            return losses
        mask_rcnn_inference(mask_logits, instances)
        mask_probs = cat([i.pred_masks for i in instances], dim=0)
        return self.maskiou_head(x, mask_probs, instances)
