# -*- coding: utf-8 -*-
"""
Evaluation of nucleus instance segmentation: dense COCO AP, the challenge AP50@100, AJI/PQ/Dice.

One module a step: :mod:`.coco_ground_truth`, :mod:`.coco_results` (Instances -> COCO results,
also used for answer.json), :mod:`.coco_eval`, :mod:`.nucleus_metrics`,
:mod:`.nucleus_evaluation` (the DatasetEvaluator), and :mod:`.compare` (two prediction runs, e.g.
CUDA against CPU, detection by detection). The label-map metrics need neither torch nor
Detectron2; the rest is imported on first use (PEP 562).
"""
from ..utils.lazy import lazy_attributes
from .nucleus_metrics import (
    NUCLEUS_METRIC_NAMES,
    InstanceContingency,
    aggregated_jaccard_index,
    compute_nucleus_metrics,
    dice_coefficient,
    image_nucleus_metrics,
    instance_contingency,
    panoptic_quality,
)

_LAZY = {
    ".nucleus_evaluation": ("NucleusEvaluator",),
    ".coco_ground_truth": ("build_coco_ground_truth",),
    ".coco_eval": ("coco_average_precision", "evaluate_coco"),
    ".coco_results": ("instance_rles", "instances_to_coco_json"),
    ".compare": ("compare_detections",),
}
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
