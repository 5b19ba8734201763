# -*- coding: utf-8 -*-
"""
The RPN on CPU: non-maximum suppression on threads at inference (one pyramid level a thread), and
the anchor-to-nucleus IoU of training in one C++ pass.

Detectron2's RPN keeps the top ``PRE_NMS_TOPK_TEST`` proposals of each level (6,000 in our
configs: images hold up to ~2,000 nuclei) and suppresses each level's separately
(``batched_nms`` with the level as the class; torchvision's single-threaded CPU kernel), then keeps
the ``POST_NMS_TOPK_TEST`` best of all levels. After the C++ RoI kernels that NMS was the largest
item left on a 2-core CPU: 0.11 s of 0.63 s for a dense 1000 x 1000 image, over ~22,000 boxes.
:class:`NucleusRPN` runs Detectron2's own ``find_top_rpn_proposals`` on each level in a thread,
then merges the levels' proposals by objectness (a stable sort: levels in order on ties) and keeps
the best ``POST_NMS_TOPK_TEST``: the proposals each level keeps are exactly Detectron2's, and the
merged list the same up to the order of equal scores.

In training, Detectron2's RPN matches every anchor of a crop with every ground-truth nucleus by
``pairwise_iou``, which builds several [nuclei, anchors, 2] temporaries: ~65,000 anchors x
hundreds of nuclei, two images a step, were ~0.25 s of a 1.9 s recipe step on 2 cores. With
``native_iou`` the IoU matrix comes from ``torch.ops.d2_nucleus.pairwise_iou``
(``csrc/pairwise_iou.cpp``: the same values bit for bit, ~8x faster), and the rest of Detectron2's
matching and sampling runs as it is.

CUDA, ``threads`` 1 and no C++ kernels run Detectron2's :class:`RPN` as it is. Same parameters and
state-dict keys: :func:`convert_rpn` changes the class of a built RPN.
"""
import contextlib
from typing import List, Tuple

import torch
from torch import nn

from detectron2.modeling.proposal_generator import rpn as d2_rpn
from detectron2.modeling.proposal_generator.proposal_utils import find_top_rpn_proposals
from detectron2.modeling.proposal_generator.rpn import RPN
from detectron2.structures import Boxes, Instances
from detectron2.structures import pairwise_iou as d2_pairwise_iou

from ..utils.threads import thread_pool
from .native import native_ops

__all__ = ["NucleusRPN", "convert_rpn"]


def _native_pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Detectron2's ``pairwise_iou``, from the C++ kernel for float32 CPU boxes."""
    a, b = boxes1.tensor, boxes2.tensor
    if a.device.type == "cpu" and a.dtype == b.dtype == torch.float32:
        return torch.ops.d2_nucleus.pairwise_iou(a, b)
    return d2_pairwise_iou(boxes1, boxes2)


@contextlib.contextmanager
def _rpn_pairwise_iou(fn):
    # Detectron2's RPN calls the ``pairwise_iou`` of its module; label_and_sample_anchors is
    # Detectron2's as it is, with this one call answered by ``fn`` (the same values), so none of
    # its code is copied here
    old = d2_rpn.pairwise_iou
    d2_rpn.pairwise_iou = fn
    try:
        yield
    finally:
        d2_rpn.pairwise_iou = old


class NucleusRPN(RPN):
    # threads the levels are spread over at inference (0: torch.get_num_threads(); 1: Detectron2's)
    nms_threads = 0
    # anchor matching's IoU from the C++ kernel (training)
    native_iou = False

    def label_and_sample_anchors(self, anchors: List[Boxes], gt_instances: List[Instances]):
        if not self.native_iou or native_ops() is None:
            return super().label_and_sample_anchors(anchors, gt_instances)
        with _rpn_pairwise_iou(_native_pairwise_iou):
            return super().label_and_sample_anchors(anchors, gt_instances)

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


def convert_rpn(module: nn.Module, threads: int = 0, native_iou: bool = False) -> int:
    """
    Make every Detectron2 :class:`RPN` in ``module`` a :class:`NucleusRPN` whose inference NMS
    runs on ``threads`` and whose anchor matching uses the C++ IoU if ``native_iou``. Returns how many.
    """
    n = 0
    for m in module.modules():
        if type(m) is RPN:
            m.__class__ = NucleusRPN
            m.nms_threads = threads
            m.native_iou = native_iou
            n += 1
    return n
