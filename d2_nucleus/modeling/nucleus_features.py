# -*- coding: utf-8 -*-
"""
Per-nucleus features of a trained model for its final detections: the RoI box head's output
(``box_head(box_pooler(features, boxes))``, e.g. the 512-d FC output of the CPU recipe) for each
final box, stored in the detections' ``box_features`` field (float32, one row a detection), and,
with a context scale s > 1, the same for the square of side s x the box's longer side around the
box's centre (its surroundings: gland, stroma, a cluster of lymphocytes), ``context_features``.
Nucleus type classifiers (:mod:`d2_nucleus.types`) learn from them.

The box head saw the proposals, not the final (regressed) boxes; pooling again at the final box
describes the nucleus the mask and the measurements are of. Called by :class:`NucleusRCNN` at
inference when ``TYPES.BOX_FEATURES`` is on, with the feature maps its RoI heads read.
"""
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from detectron2.structures import Boxes, Instances

__all__ = ["FEATURE_FIELDS", "add_box_features", "box_feature_head", "box_feature_scales"]

#: Instances field of the features of the box itself and of its context.
FEATURE_FIELDS = ("box_features", "context_features")


def box_feature_scales(cfg) -> Tuple[float, ...]:
    """The box scales ``TYPES.BOX_FEATURES`` / ``TYPES.CONTEXT_SCALE`` ask for: (), (1,) or (1, s)."""
    types = cfg.get("TYPES")
    if types is None or not types.BOX_FEATURES:
        return ()
    context = float(types.get("CONTEXT_SCALE", 0.0))
    return (1.0, context) if context > 0 else (1.0,)


def box_feature_head(roi_heads) -> nn.Module:
    """The box head whose output the features are (a cascade's last stage)."""
    head = roi_heads.box_head
    return head[-1] if isinstance(head, nn.ModuleList) else head


def _context_boxes(boxes: Boxes, scale: float) -> Boxes:
    """Squares of side ``scale`` x the longer side, centred on the boxes."""
    if scale == 1.0:
        return boxes
    b = boxes.tensor
    half = scale * torch.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) / 2
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    return Boxes(torch.stack([cx - half, cy - half, cx + half, cy + half], dim=1))


@torch.no_grad()
def add_box_features(roi_heads, features: Dict[str, torch.Tensor], instances: List[Instances],
                     chunk_size: int = 1024, scales: Sequence[float] = (1.0,)) -> None:
    """
    Set the fields :data:`FEATURE_FIELDS` (N x D float32) of each image's ``instances`` from their
    ``pred_boxes`` scaled by ``scales`` (the box itself, then its context), at most ``chunk_size``
    boxes an image per pass.
    """
    maps = [features[f] for f in roi_heads.box_in_features]
    head = box_feature_head(roi_heads)
    k = max(1, int(chunk_size))
    num_chunks = max([(len(x) + k - 1) // k for x in instances] + [1])
    for field, scale in zip(FEATURE_FIELDS, scales):
        parts: List[List[torch.Tensor]] = [[] for _ in instances]
        for i in range(num_chunks):
            boxes = [_context_boxes(x.pred_boxes[i * k : (i + 1) * k], float(scale)) for x in instances]
            out = head(roi_heads.box_pooler(maps, boxes)).flatten(1).float()
            for j, part in enumerate(out.split([len(b) for b in boxes])):
                parts[j].append(part)
        for x, p in zip(instances, parts):
            x.set(field, torch.cat(p))
