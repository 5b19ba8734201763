# -*- coding: utf-8 -*-
"""
Per-nucleus features of a trained model for its final detections: the RoI box head's output
(``box_head(box_pooler(features, boxes))``, e.g. the 512-d FC output of the CPU recipe) for each
final box, stored in the detections' ``box_features`` field (float32, one row a detection).
Nucleus type classifiers (:mod:`d2_nucleus.types`) learn from them.

The box head saw the proposals, not the final (regressed) boxes; pooling again at the final box
describes the nucleus the mask and the measurements are of. Called by :class:`NucleusRCNN` at
inference when ``TYPES.BOX_FEATURES`` is on, with the feature maps its RoI heads read.
"""
from typing import Dict, List

import torch
from torch import nn

from detectron2.structures import Instances

__all__ = ["add_box_features", "box_feature_head"]


def box_feature_head(roi_heads) -> nn.Module:
    """The box head whose output the features are (a cascade's last stage)."""
    head = roi_heads.box_head
    return head[-1] if isinstance(head, nn.ModuleList) else head


@torch.no_grad()
def add_box_features(roi_heads, features: Dict[str, torch.Tensor], instances: List[Instances],
                     chunk_size: int = 1024) -> None:
    """
    Set ``box_features`` (N x D float32) of each image's ``instances`` from their ``pred_boxes``,
    at most ``chunk_size`` boxes an image per pass.
    """
    maps = [features[f] for f in roi_heads.box_in_features]
    head = box_feature_head(roi_heads)
    k = max(1, int(chunk_size))
    num_chunks = max([(len(x) + k - 1) // k for x in instances] + [1])
    parts: List[List[torch.Tensor]] = [[] for _ in instances]
    for i in range(num_chunks):
        boxes = [x.pred_boxes[i * k : (i + 1) * k] for x in instances]
        out = head(roi_heads.box_pooler(maps, boxes)).flatten(1).float()
        for j, part in enumerate(out.split([len(b) for b in boxes])):
            parts[j].append(part)
    for x, p in zip(instances, parts):
        x.box_features = torch.cat(p)
