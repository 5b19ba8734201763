# -*- coding: utf-8 -*-
"""
Evaluation of nucleus instance segmentation: dense COCO AP, the challenge AP50@100, AJI/PQ/Dice.

One module a step: :mod:`.coco_ground_truth`, :mod:`.coco_results` (Instances -> COCO results,
also used for answer.json), :mod:`.coco_eval`, :mod:`.nucleus_metrics`, and
:mod:`.nucleus_evaluation` (the DatasetEvaluator). Names are imported on first use (PEP 562):
the label-map metrics need neither torch nor Detectron2.
"""
from ..utils.lazy import lazy_attributes

_LAZY = {
    "NucleusEvaluator": ".nucleus_evaluation",
    "build_coco_ground_truth": ".coco_ground_truth",
    "coco_average_precision": ".coco_eval",
    "evaluate_coco": ".coco_eval",
    "instance_rles": ".coco_results",
    "instances_to_coco_json": ".coco_results",
    "NUCLEUS_METRIC_NAMES": ".nucleus_metrics",
    "InstanceContingency": ".nucleus_metrics",
    "aggregated_jaccard_index": ".nucleus_metrics",
    "compute_nucleus_metrics": ".nucleus_metrics",
    "dice_coefficient": ".nucleus_metrics",
    "image_nucleus_metrics": ".nucleus_metrics",
    "instance_contingency": ".nucleus_metrics",
    "panoptic_quality": ".nucleus_metrics",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
