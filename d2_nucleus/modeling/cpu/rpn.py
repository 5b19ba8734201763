# -*- coding: utf-8 -*-
"""
The RPN on CPU: non-maximum suppression on threads at inference (one pyramid level a thread), and
the anchor-to-nucleus IoU of training in one C++ pass.

Detectron2's RPN keeps the top ``PRE_NMS_TOPK_TEST`` proposals of each level (6,000 in our
configs: images hold up to ~2,000 nuclei) and suppresses each level's separately
(``batched_nms`` with the level as the class; torchvision's single-threaded CPU kernel), then keeps
the ``POST_NMS_TOPK_TEST`` best of all levels. After the C++ RoI kernels that NMS was the largest
item left on a 2-core CPU (~22,000 boxes for a dense 1000 x 1000 image; BENCHMARKS.md "C++ kernels").
:class:`NucleusRPN` runs Detectron2's own ``find_top_rpn_proposals`` on each level in a thread,
then merges the levels' proposals by objectness (a stable sort: levels in order on ties) and keeps
the best ``POST_NMS_TOPK_TEST``: the proposals each level keeps are exactly Detectron2's, and the
merged list the same up to the order of equal scores.

In training, Detectron2's RPN matches every anchor of a crop with every ground-truth nucleus by
``pairwise_iou``, which builds several [nuclei, anchors, 2] temporaries (~65,000 anchors x
hundreds of nuclei, two images a step: a large share of a recipe step on 2 cores, BENCHMARKS.md
"C++ kernels"). With ``native_iou`` the IoU matrix comes from ``torch.ops.d2_nucleus.pairwise_iou``
(``csrc/pairwise_iou.cpp``: the same values bit for bit), and the rest of Detectron2's matching and
sampling runs as it is.

:class:`NucleusRPN` is registered in Detectron2's ``PROPOSAL_GENERATOR_REGISTRY``
(``MODEL.PROPOSAL_GENERATOR.NAME: NucleusRPN``, the d2_nucleus configs' choice) and reads
``MODEL.CPU.RPN_NMS_THREADS`` and ``MODEL.CPU.ANCHOR_IOU``. CUDA, 1 thread with ``detectron2``
anchor IoU, and no C++ kernels run Detectron2's :class:`RPN` as it is. Same parameters and
state-dict keys as :class:`RPN`.
"""
from typing import List, Tuple

import torch

from detectron2.config import configurable
from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY
from detectron2.modeling.proposal_generator.proposal_utils import find_top_rpn_proposals
from detectron2.modeling.proposal_generator.rpn import RPN
from detectron2.structures import Boxes, Instances, pairwise_iou

from ...utils.threads import thread_pool
from .native import native_ops

__all__ = ["NucleusRPN"]


def _native_pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Detectron2's ``pairwise_iou``, from the C++ kernel for float32 CPU boxes."""
    a, b = boxes1.tensor, boxes2.tensor
    if a.device.type == "cpu" and a.dtype == b.dtype == torch.float32 and native_ops() is not None:
        return torch.ops.d2_nucleus.pairwise_iou(a, b)
    return pairwise_iou(boxes1, boxes2)


@PROPOSAL_GENERATOR_REGISTRY.register()
class NucleusRPN(RPN):
    """
    :class:`RPN` with its inference NMS on ``nms_threads`` CPU threads (0: all of torch's; 1:
    Detectron2's) and, with ``native_iou``, the anchor matching's IoU from the C++ kernel.
    """

    @configurable
    def __init__(self, *, nms_threads: int = 1, native_iou: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.nms_threads = int(nms_threads)
        self.native_iou = bool(native_iou)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["nms_threads"] = cfg.MODEL.CPU.RPN_NMS_THREADS
        ret["native_iou"] = cfg.MODEL.CPU.ANCHOR_IOU == "native"
        return ret

    def label_and_sample_anchors(self, anchors: List[Boxes], gt_instances: List[Instances]):
        """Detectron2's ``RPN.label_and_sample_anchors``, its IoU from the C++ kernel with ``native_iou``."""
        if not self.native_iou:
            return super().label_and_sample_anchors(anchors, gt_instances)
        # Detectron2's loop (detectron2/modeling/proposal_generator/rpn.py, v0.6) with one change:
        # the IoU matrix. Its ``pairwise_iou`` is a module global that only a process-wide swap
        # could redirect, so the loop is restated here.
        anchors = Boxes.cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        for gt in gt_instances:
            gt_boxes_i = gt.gt_boxes
            matched_idxs, gt_labels_i = self.anchor_matcher(_native_pairwise_iou(gt_boxes_i, anchors))
            gt_labels_i = gt_labels_i.to(device=gt_boxes_i.device)
            if self.anchor_boundary_thresh >= 0:
                gt_labels_i[~anchors.inside_box(gt.image_size, self.anchor_boundary_thresh)] = -1
            gt_labels_i = self._subsample_labels(gt_labels_i)
            if len(gt_boxes_i) == 0:
                matched_gt_boxes_i = torch.zeros_like(anchors.tensor)
            else:
                matched_gt_boxes_i = gt_boxes_i[matched_idxs].tensor
            gt_labels.append(gt_labels_i)
            matched_gt_boxes.append(matched_gt_boxes_i)
        return gt_labels, matched_gt_boxes

    def predict_proposals(
        self,
        anchors: List[Boxes],
        pred_objectness_logits: List[torch.Tensor],
        pred_anchor_deltas: List[torch.Tensor],
        image_sizes: List[Tuple[int, int]],
    ):
        threads = self.nms_threads or torch.get_num_threads()
        if self.training or threads <= 1 or len(anchors) <= 1 or pred_objectness_logits[0].device.type != "cpu":
            return super().predict_proposals(anchors, pred_objectness_logits, pred_anchor_deltas, image_sizes)
        with torch.no_grad():
            proposals = self._decode_proposals(anchors, pred_anchor_deltas)
            post_nms_topk = self.post_nms_topk[False]
            # autocast and grad mode are thread-local: the threads run under the caller's
            autocast = dict(device_type="cpu", dtype=torch.get_autocast_dtype("cpu"),
                            enabled=torch.is_autocast_enabled("cpu"))

            def level(i):
                # every proposal the level keeps: the cut to post_nms_topk is made across levels
                with torch.no_grad(), torch.autocast(**autocast):
                    return find_top_rpn_proposals(
                        [proposals[i]], [pred_objectness_logits[i]], image_sizes, self.nms_thresh,
                        self.pre_nms_topk[False], proposals[i].shape[1], self.min_box_size, False,
                    )

            per_level = list(thread_pool(threads).map(level, range(len(proposals))))
            results = []
            for n in range(len(image_sizes)):
                merged = Instances.cat([lv[n] for lv in per_level])
                order = torch.sort(merged.objectness_logits, descending=True, stable=True)[1]
                results.append(merged[order[:post_nms_topk]])
            return results
