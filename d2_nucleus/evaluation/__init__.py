# -*- coding: utf-8 -*-
"""Evaluation of nucleus instance segmentation: dense COCO AP, the challenge AP50@100, AJI/PQ/Dice."""
from .nucleus_evaluation import NucleusEvaluator, build_coco_ground_truth, coco_average_precision, evaluate_coco
from .nucleus_metrics import (
    NUCLEUS_METRIC_NAMES,
    InstanceContingency,
    aggregated_jaccard_index,
    compute_nucleus_metrics,
    dice_coefficient,
    instance_contingency,
    panoptic_quality,
)

__all__ = [
    "NucleusEvaluator",
    "build_coco_ground_truth",
    "coco_average_precision",
    "evaluate_coco",
    "NUCLEUS_METRIC_NAMES",
    "InstanceContingency",
    "aggregated_jaccard_index",
    "compute_nucleus_metrics",
    "dice_coefficient",
    "instance_contingency",
    "panoptic_quality",
]
