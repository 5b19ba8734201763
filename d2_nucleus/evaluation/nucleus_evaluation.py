# -*- coding: utf-8 -*-
"""
NucleusEvaluator: dense COCO AP, the challenge metric and AJI / PQ / Dice in one pass.

The evaluator only orchestrates; each step has its own module: the ground truth
(:mod:`.coco_ground_truth`), the COCO results (:mod:`.coco_results`, shared with
``tools/predict.py``'s answer.json), COCOeval (:mod:`.coco_eval`) and the label-map metrics
(:mod:`.nucleus_metrics`).
"""
import contextlib
import copy
import io
import itertools
import logging
import os
from collections import OrderedDict
from typing import Dict, Optional

import numpy as np
import torch
from pycocotools.coco import COCO
from tabulate import tabulate

import detectron2.utils.comm as comm
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils.logger import create_small_table

from ..utils.file_io import atomic_write_json
from .coco_eval import COCO_METRIC_NAMES, coco_metric, evaluate_coco
from .coco_ground_truth import build_coco_ground_truth, dataset_image_ids
from .coco_results import instance_rles, instances_to_coco_json
from .nucleus_metrics import NUCLEUS_METRIC_NAMES, image_nucleus_metrics

__all__ = ["NucleusEvaluator"]

_BACKENDS = {True: "faster-coco-eval", False: "pycocotools"}


class NucleusEvaluator(DatasetEvaluator):
    """
    Evaluate instance predictions on a registered dataset, in one pass:

    * ``bbox`` and ``segm``: COCO AP, AP50, AP75, APs, APm, APl counting up to
      ``max_dets_per_image`` detections per image (the dense setting: images hold up to
      ~1,900 nuclei, COCO's default of 100 would cap recall);
    * ``segm/AP50@100``: the challenge metric, segm AP at IoU 0.5 counting the 100
      top-scoring detections per image -- pycocotools' ``stats[1]`` with its default
      maxDets [1, 10, 100]. Both come from ONE COCOeval run with
      ``params.maxDets = [challenge_max_dets, max_dets_per_image]``: COCO matches detections
      greedily in score order, so the matches of the top 100 are the same whether or not
      more detections follow (tests check equality with separate pycocotools runs);
    * ``nucleus``: AJI, PQ, DQ, SQ and Dice (see :mod:`.nucleus_metrics`) of each image's
      instance label maps -- the ground truth, and the predictions scoring at least
      ``label_map_score_thresh`` painted higher score on top -- averaged over the images
      with ground truth (per-image mean; an image with neither nuclei nor predictions is
      skipped).

    AP values are percentages (Detectron2's convention, x100; NaN when undefined, e.g. APl
    without large nuclei); nucleus metrics are fractions in [0, 1].

    Ground truth is built in memory from ``DatasetCatalog.get(dataset_name)`` each time an
    evaluator is constructed: no ``*_coco_format.json`` is read or written (Detectron2's
    COCOEvaluator caches one in its output folder and reuses it even when the data changed).
    ``metadata.json_file`` is not read directly; a dataset registered from a COCO json loads it
    afresh through its DatasetCatalog function.

    The model's ``instances`` need ``pred_boxes``, ``scores``, ``pred_classes`` and either
    ``pred_rles`` (compressed RLE dicts of the full image, as NucleusRCNN outputs) or
    ``pred_masks`` (N x H x W, as plain Detectron2 outputs); without masks only bbox AP is
    computed.

    With ``output_dir``, writes (atomically) ``coco_instances_results.json`` (the predictions,
    COCO result format, with the dataset's own image ids) and ``nucleus_metrics.json`` (all
    metrics, settings and per-image metrics). Both are replaced at every evaluation.
    """

    def __init__(
        self,
        dataset_name: str,
        cfg=None,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        max_dets_per_image: Optional[int] = None,
        challenge_max_dets: Optional[int] = None,
        label_map_score_thresh: Optional[float] = None,
        nucleus_metrics: Optional[bool] = None,
        use_fast_impl: bool = True,
    ):
        """
        Args:
            dataset_name: a dataset registered in DatasetCatalog (Detectron2 dataset dicts).
            cfg: optional config: supplies the defaults of the keyword arguments left at None
                (TEST.DETECTIONS_PER_IMAGE, TEST.CHALLENGE_MAX_DETS,
                TEST.LABEL_MAP_SCORE_THRESH, TEST.LABEL_MAP_MIN_VISIBLE, TEST.NUCLEUS_METRICS).
            distributed: gather the predictions of all ranks and evaluate on the main one.
            output_dir: where to save predictions and metrics (None: save nothing).
            max_dets_per_image: detections per image counted by the dense AP
                (default: cfg, else 100).
            challenge_max_dets: detections per image counted by the challenge AP50 (default:
                cfg, else 100).
            label_map_score_thresh: lowest score of a detection painted into the predicted
                label map for AJI / PQ / Dice (default: cfg, else 0.5).
            nucleus_metrics: compute AJI / PQ / Dice (default: cfg, else True).
            use_fast_impl: faster-coco-eval's C++ COCOeval (same numbers, whichever Detectron2
                is installed) instead of pycocotools' Python COCOeval.
        """
        self._logger = logging.getLogger(__name__)
        test = cfg.TEST if cfg is not None else None

        def pick(value, key, default):
            if value is not None:
                return value
            if test is not None and key in test:
                return test[key]
            return default

        self._max_dets = int(pick(max_dets_per_image, "DETECTIONS_PER_IMAGE", 100))
        self._challenge_max_dets = int(pick(challenge_max_dets, "CHALLENGE_MAX_DETS", 100))
        self._score_thresh = float(pick(label_map_score_thresh, "LABEL_MAP_SCORE_THRESH", 0.5))
        self._min_visible = float(pick(None, "LABEL_MAP_MIN_VISIBLE", 0.0))
        self._nucleus_metrics = bool(pick(nucleus_metrics, "NUCLEUS_METRICS", True))
        if self._max_dets < 1 or self._challenge_max_dets < 1:
            raise ValueError("max_dets_per_image and challenge_max_dets must be >= 1")
        self._use_fast_impl = use_fast_impl
        self._distributed = distributed
        self._output_dir = output_dir
        self._dataset_name = dataset_name
        self._cpu_device = torch.device("cpu")

        self._metadata = MetadataCatalog.get(dataset_name)
        dataset_dicts = DatasetCatalog.get(dataset_name)
        coco_dict, self._image_id_to_coco, self._coco_to_image_id, self._category_to_coco = (
            build_coco_ground_truth(dataset_dicts, self._metadata, dataset_name)
        )
        # a dataset without a single annotation (e.g. a test set whose dicts carry empty
        # "annotations" lists) has no ground truth: predictions are only saved
        self._do_evaluation = any(len(d.get("annotations", ())) > 0 for d in dataset_dicts)
        self._has_gt_masks = all(
            "segmentation" in a for d in dataset_dicts for a in d.get("annotations", [])
        )
        # per image: what the nucleus metrics need
        self._gt_images = {}
        for d, image_id in zip(dataset_dicts, dataset_image_ids(dataset_dicts)):
            if self._do_evaluation and "annotations" in d:
                self._gt_images[self._image_id_to_coco[image_id]] = d
        with contextlib.redirect_stdout(io.StringIO()):
            self._coco_gt = COCO()
            self._coco_gt.dataset = coco_dict
            self._coco_gt.createIndex()
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None, distributed=True):
        """An evaluator with all settings from ``cfg.TEST`` (see ``__init__``)."""
        return cls(dataset_name, cfg, distributed, output_dir)

    def reset(self):
        self._predictions = []

    # ---------------------------------------------------------------------------------------------
    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            if "instances" not in output:
                continue
            image_id = input["image_id"]
            if image_id not in self._image_id_to_coco:
                raise KeyError(f"image_id {image_id!r} is not in dataset '{self._dataset_name}'")
            coco_id = self._image_id_to_coco[image_id]
            instances = output["instances"].to(self._cpu_device)
            height = int(input.get("height", instances.image_size[0]))
            width = int(input.get("width", instances.image_size[1]))
            rles = instance_rles(instances, height, width)
            results = instances_to_coco_json(instances, coco_id, self._category_to_coco, rles)
            prediction = {"image_id": coco_id, "instances": results, "has_mask": rles is not None}
            if self._nucleus_metrics and rles is not None and coco_id in self._gt_images:
                prediction["nucleus"] = self._image_metrics(coco_id, rles, instances, height, width)
            self._predictions.append(prediction)

    def _image_metrics(self, coco_id, rles, instances, height, width) -> Dict[str, float]:
        d = self._gt_images[coco_id]
        gt_h, gt_w = int(d["height"]), int(d["width"])
        if (gt_h, gt_w) != (height, width):
            raise ValueError(
                f"{d.get('file_name', coco_id)}: predictions are {height}x{width}, "
                f"ground truth is {gt_h}x{gt_w}"
            )
        return image_nucleus_metrics(d["annotations"], rles, instances.scores.numpy(), height, width,
                                     self._score_thresh, self._min_visible)

    # ---------------------------------------------------------------------------------------------
    def evaluate(self, img_ids=None):
        """
        Args:
            img_ids: dataset image ids to evaluate COCO AP on (default: all images).

        Returns:
            OrderedDict {"bbox": {...}, "segm": {..., "AP50@100"}, "nucleus": {...}}; empty
            on non-main ranks and when the dataset has no annotations.
        """
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        if len(predictions) == 0:
            self._logger.warning("[NucleusEvaluator] Did not receive valid predictions.")
            return {}

        coco_results = list(itertools.chain(*[p["instances"] for p in predictions]))
        if self._output_dir:
            saved = copy.copy(coco_results)
            for i, r in enumerate(saved):
                saved[i] = dict(r, image_id=self._coco_to_image_id[r["image_id"]])
            _atomic_write_json(os.path.join(self._output_dir, "coco_instances_results.json"), saved)
        if not self._do_evaluation:
            self._logger.info(f"'{self._dataset_name}' has no annotations: predictions only.")
            return {}

        coco_img_ids = None
        if img_ids is not None:
            coco_img_ids = [self._image_id_to_coco[i] for i in img_ids]
        tasks = ["bbox"]
        if self._has_gt_masks and any(p["has_mask"] for p in predictions):
            tasks.append("segm")

        results = OrderedDict()
        class_names = self._metadata.get("thing_classes", None)
        for task in tasks:
            self._logger.info(
                f"Evaluating {task} with {_BACKENDS[bool(self._use_fast_impl)]}"
                f" (maxDets {self._challenge_max_dets} and {self._max_dets}) ..."
            )
            coco_eval = evaluate_coco(
                self._coco_gt,
                coco_results,
                task,
                max_dets=[self._challenge_max_dets, self._max_dets],
                img_ids=coco_img_ids,
                use_fast_impl=self._use_fast_impl,
            )
            res = {name: coco_metric(coco_eval, name, self._max_dets) for name in COCO_METRIC_NAMES}
            if task == "segm":
                res[f"AP50@{self._challenge_max_dets}"] = coco_metric(
                    coco_eval, "AP50", self._challenge_max_dets
                )
            if class_names is not None and len(class_names) > 1:
                precision = coco_eval.eval["precision"]
                m = list(coco_eval.params.maxDets).index(self._max_dets)
                for k, name in enumerate(class_names):
                    p = precision[:, :, k, 0, m]
                    p = p[p > -1]
                    res[f"AP-{name}"] = float(p.mean() * 100) if p.size else float("nan")
            self._logger.info(
                f"Evaluation results for {task} (maxDets {self._max_dets}"
                + (f"; AP50@{self._challenge_max_dets} is the challenge metric" if task == "segm" else "")
                + "):\n"
                + create_small_table(res)
            )
            results[task] = res

        per_image = []
        if self._nucleus_metrics and "segm" in tasks:
            results["nucleus"], per_image = self._summarize_nucleus(predictions)

        if self._output_dir:
            _atomic_write_json(
                os.path.join(self._output_dir, "nucleus_metrics.json"),
                _json_safe(
                    {
                        "dataset": self._dataset_name,
                        "settings": {
                            "max_dets_per_image": self._max_dets,
                            "challenge_max_dets": self._challenge_max_dets,
                            "label_map_score_thresh": self._score_thresh,
                            "label_map_min_visible": self._min_visible,
                            "coco_eval": _BACKENDS[bool(self._use_fast_impl)],
                        },
                        "results": results,
                        "per_image": per_image,
                    }
                ),
            )
        return copy.deepcopy(results)

    def _summarize_nucleus(self, predictions):
        per_image = []
        for p in sorted(predictions, key=lambda p: p["image_id"]):
            if "nucleus" not in p:
                continue
            d = self._gt_images[p["image_id"]]
            row = {"image_id": self._coco_to_image_id[p["image_id"]]}
            row["file_name"] = os.path.basename(str(d.get("file_name", "")))
            row.update(p["nucleus"])
            per_image.append(row)
        summary = OrderedDict()
        for name in NUCLEUS_METRIC_NAMES:
            values = np.array([r[name] for r in per_image], dtype=np.float64)
            values = values[np.isfinite(values)]
            summary[name] = float(values.mean()) if values.size else float("nan")
        if per_image:
            cols = ["file_name", "num_gt", "num_pred"] + list(NUCLEUS_METRIC_NAMES)
            table = tabulate(
                [[r[c] for c in cols] for r in per_image],
                headers=cols,
                tablefmt="pipe",
                floatfmt=".4f",
            )
            self._logger.info(
                f"Per-image nucleus metrics (predictions scoring >= {self._score_thresh}):\n" + table
            )
        self._logger.info(
            f"Nucleus metrics (mean of {len(per_image)} images):\n" + create_small_table(summary)
        )
        return summary, per_image


# -------------------------------------------------------------------------------------------------
# Output
# -------------------------------------------------------------------------------------------------
def _json_safe(obj):
    """NaN / inf -> None (strict JSON), numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def _atomic_write_json(path: str, obj) -> None:
    atomic_write_json(path, obj, overwrite=True)
    logging.getLogger(__name__).info(f"Saved {path}")
