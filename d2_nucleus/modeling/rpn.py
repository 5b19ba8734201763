# -*- coding: utf-8 -*-
"""
The RPN's non-maximum suppression on CPU threads at inference: one pyramid level a thread.

Detectron2's RPN keeps the top ``PRE_NMS_TOPK_TEST`` proposals of each level (6,000 in our
configs: images hold up to ~2,000 nuclei) and suppresses each level's separately
(``batched_nms`` with the level as the class; torchvision's single-threaded CPU kernel), then keeps
the ``POST_NMS_TOPK_TEST`` best of all levels. After the C++ RoI kernels that NMS was the largest
item left on a 2-core CPU: 0.11 s of 0.63 s for a dense 1000 x 1000 image, over ~22,000 boxes.
:class:`NucleusRPN` runs Detectron2's own ``find_top_rpn_proposals`` on each level in a thread,
then merges the levels' proposals by objectness (a stable sort: levels in order on ties) and keeps
the best ``POST_NMS_TOPK_TEST``: the proposals each level keeps are exactly Detectron2's, and the
merged list the same up to the order of equal scores.

Training, CUDA and ``threads`` 1 run Detectron2's :class:`RPN` as it is. Same parameters and
state-dict keys: :func:`convert_rpn` changes the class of a built RPN.
"""
from typing import List, Tuple

import torch
from torch import nn

from detectron2.modeling.proposal_generator.proposal_utils import find_top_rpn_proposals
from detectron2.modeling.proposal_generator.rpn import RPN
from detectron2.structures import Boxes, Instances

from ..utils.threads import thread_pool

__all__ = ["NucleusRPN", "convert_rpn"]


class NucleusRPN(RPN):
    # threads the levels are spread over at inference (0: torch.get_num_threads(); 1: Detectron2's)
    nms_threads = 0

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


def convert_rpn(module: nn.Module, threads: int = 0) -> int:
    """Make every Detectron2 :class:`RPN` in ``module`` a :class:`NucleusRPN` on ``threads``. Returns how many."""
    n = 0
    for m in module.modules():
        if type(m) is RPN:
            m.__class__ = NucleusRPN
            m.nms_threads = threads
            n += 1
    return n
