# -*- coding: utf-8 -*-
"""
NucleusEvaluator: dense COCO AP, the challenge metric and AJI / PQ / Dice in one pass.
"""
import contextlib
import copy
import io
import itertools
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

import detectron2.utils.comm as comm
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.fast_eval_api import COCOeval_opt
from detectron2.structures import BoxMode
from detectron2.utils.logger import create_small_table

from ..utils.file_io import atomic_write_json
from ..utils.label_map import annotations_to_label_map, rles_to_label_map
from ..utils import rle as rle_util
from ..utils.rle import to_compressed_rle
from .nucleus_metrics import NUCLEUS_METRIC_NAMES, compute_nucleus_metrics

__all__ = ["NucleusEvaluator", "build_coco_ground_truth", "evaluate_coco", "coco_average_precision"]

COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# (IoU threshold or None = mean over 0.50:0.95, area range) of each COCO metric
_COCO_METRIC_DEFS = {
    "AP": (None, "all"),
    "AP50": (0.5, "all"),
    "AP75": (0.75, "all"),
    "APs": (None, "small"),
    "APm": (None, "medium"),
    "APl": (None, "large"),
}


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
                TEST.LABEL_MAP_SCORE_THRESH, TEST.NUCLEUS_METRICS).
            distributed: gather the predictions of all ranks and evaluate on the main one.
            output_dir: where to save predictions and metrics (None: save nothing).
            max_dets_per_image: detections per image counted by the dense AP
                (default: cfg, else 100).
            challenge_max_dets: detections per image counted by the challenge AP50 (default:
                cfg, else 100).
            label_map_score_thresh: lowest score of a detection painted into the predicted
                label map for AJI / PQ / Dice (default: cfg, else 0.5).
            nucleus_metrics: compute AJI / PQ / Dice (default: cfg, else True).
            use_fast_impl: COCOeval_opt (faster-coco-eval's C++ COCOeval without Detectron2's
                extension; same numbers) instead of pycocotools' Python COCOeval.
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
        for d, image_id in zip(dataset_dicts, _dataset_image_ids(dataset_dicts)):
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
            rles = _instance_rles(instances, height, width)
            results = _instances_to_coco_results(instances, rles, coco_id, self._category_to_coco)
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
        gt_map = annotations_to_label_map(d["annotations"], gt_h, gt_w)
        scores = instances.scores.numpy()
        keep = np.flatnonzero(scores >= self._score_thresh)
        pred_map = rles_to_label_map([rles[i] for i in keep], height, width, scores[keep])
        metrics = compute_nucleus_metrics(gt_map, pred_map)
        metrics["num_gt"] = len(np.unique(gt_map)) - 1
        metrics["num_pred"] = len(keep)
        return metrics

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
                f"Evaluating {task} with {'COCOeval_opt' if self._use_fast_impl else 'pycocotools'}"
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
            res = {name: _coco_metric(coco_eval, name, self._max_dets) for name in COCO_METRIC_NAMES}
            if task == "segm":
                res[f"AP50@{self._challenge_max_dets}"] = _coco_metric(
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
                            "coco_eval": "COCOeval_opt" if self._use_fast_impl else "pycocotools",
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
# COCO ground truth and evaluation
# -------------------------------------------------------------------------------------------------
def _dataset_image_ids(dataset_dicts: List[Dict]) -> list:
    """The "image_id" of each dataset dict (its index when absent, as in Detectron2)."""
    return [d.get("image_id", i) for i, d in enumerate(dataset_dicts)]


def build_coco_ground_truth(dataset_dicts: List[Dict], metadata, dataset_name: str = "dataset"):
    """
    A COCO ground-truth dict from Detectron2 dataset dicts, in memory.

    Unlike ``detectron2.data.datasets.convert_to_coco_dict`` it accepts any hashable image ids
    (ints are kept; other ids become 1..N), uncompressed RLE and polygons (all stored as
    compressed RLE with their pixel area, so boxes and masks are measured as COCOeval sees them)
    and does not modify the dataset dicts.

    Returns:
        (coco_dict, image_id -> COCO image id, COCO image id -> image_id,
        contiguous category id -> COCO category id)
    """
    ids = _dataset_image_ids(dataset_dicts)
    if len(set(ids)) != len(ids):
        raise ValueError(f"dataset '{dataset_name}' has duplicate image ids")
    if all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
        to_coco = {i: int(i) for i in ids}
    else:
        to_coco = {i: k + 1 for k, i in enumerate(ids)}

    if hasattr(metadata, "thing_dataset_id_to_contiguous_id"):
        category_to_coco = {v: int(k) for k, v in metadata.thing_dataset_id_to_contiguous_id.items()}
    else:
        category_to_coco = None
    class_names = metadata.get("thing_classes", None)
    if class_names is None:
        used = {a["category_id"] for d in dataset_dicts for a in d.get("annotations", [])}
        class_names = [str(i) for i in range(max(used) + 1)] if used else ["object"]
    if category_to_coco is None:
        category_to_coco = {i: i for i in range(len(class_names))}
    categories = [{"id": category_to_coco[i], "name": n} for i, n in enumerate(class_names)]

    images, annotations = [], []
    for d, image_id in zip(dataset_dicts, ids):
        h, w = int(d["height"]), int(d["width"])
        coco_id = to_coco[image_id]
        images.append({"id": coco_id, "height": h, "width": w, "file_name": str(d.get("file_name", ""))})
        for a in d.get("annotations", []):
            ann = {
                "id": len(annotations) + 1,
                "image_id": coco_id,
                "iscrowd": int(a.get("iscrowd", 0)),
            }
            cat = a["category_id"]
            if cat not in category_to_coco:
                raise ValueError(
                    f"dataset '{dataset_name}', {d.get('file_name', image_id)}: "
                    f"category_id {cat} is not one of the {len(class_names)} classes"
                )
            ann["category_id"] = category_to_coco[cat]
            if "segmentation" in a:
                rle = dict(to_compressed_rle(a["segmentation"], h, w))
                if [int(s) for s in rle["size"]] != [h, w]:
                    raise ValueError(
                        f"dataset '{dataset_name}', {d.get('file_name', image_id)}: mask size "
                        f"{list(rle['size'])} differs from the image's {[h, w]}"
                    )
                if isinstance(rle["counts"], bytes):
                    rle["counts"] = rle["counts"].decode("ascii")
                ann["segmentation"] = rle
                ann["area"] = float(rle_util.area(rle))
            if "bbox" in a:
                bbox = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYWH_ABS)
                ann["bbox"] = [float(x) for x in bbox]
            elif "segmentation" in ann:
                ann["bbox"] = [float(x) for x in rle_util.to_bbox(ann["segmentation"])]
            else:
                raise ValueError(f"dataset '{dataset_name}': an annotation has no bbox or mask")
            if "area" not in ann:
                ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
            annotations.append(ann)
    coco_dict = {"images": images, "annotations": annotations, "categories": categories}
    return coco_dict, to_coco, {v: k for k, v in to_coco.items()}, category_to_coco


def evaluate_coco(coco_gt: COCO, coco_results: List[Dict], iou_type: str, max_dets, img_ids=None,
                  use_fast_impl: bool = True):
    """
    Run COCOeval (evaluate + accumulate, no summarize) with ``params.maxDets = max_dets``.

    As in Detectron2, segm results lose their "bbox" so that area ranges use the mask area;
    bbox results are evaluated on their boxes. Empty results are fine (AP 0).
    """
    results = copy.deepcopy(coco_results)
    if iou_type == "segm":
        for r in results:
            r.pop("bbox", None)
    else:
        for r in results:
            r.pop("segmentation", None)
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": coco_gt.dataset["images"],
                "categories": coco_gt.dataset["categories"],
                "annotations": [],
            }
            coco_dt.createIndex()
        coco_eval = (COCOeval_opt if use_fast_impl else COCOeval)(coco_gt, coco_dt, iou_type)
        coco_eval.params.maxDets = sorted({int(m) for m in max_dets})
        if img_ids is not None:
            coco_eval.params.imgIds = list(img_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def coco_average_precision(coco_eval, iou_thr=None, area="all", max_dets=100) -> float:
    """
    AP (fraction; -1 entries ignored, NaN if none is valid) from an accumulated COCOeval's
    precision array [IoU, recall, class, area, maxDets]; ``iou_thr=None`` averages 0.50:0.95.
    """
    p = coco_eval.params
    s = coco_eval.eval["precision"]
    if iou_thr is not None:
        s = s[np.flatnonzero(np.isclose(np.asarray(p.iouThrs), iou_thr))]
    s = s[:, :, :, list(p.areaRngLbl).index(area), list(p.maxDets).index(max_dets)]
    valid = s[s > -1]
    return float(valid.mean()) if valid.size else float("nan")


def _coco_metric(coco_eval, name, max_dets) -> float:
    iou_thr, area = _COCO_METRIC_DEFS[name]
    return coco_average_precision(coco_eval, iou_thr, area, max_dets) * 100


# -------------------------------------------------------------------------------------------------
# Predictions
# -------------------------------------------------------------------------------------------------
def _instance_rles(instances, height, width) -> Optional[List[Dict]]:
    """Compressed RLEs (str counts) of the instances' masks, or None without masks."""
    if instances.has("pred_rles"):
        rles = []
        for r in instances.pred_rles:
            counts = r["counts"]
            rles.append({"size": [int(s) for s in r["size"]],
                         "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts})
    elif instances.has("pred_masks"):
        masks = instances.pred_masks
        if masks.dim() == 4:
            masks = masks[:, 0]
        if len(masks) and tuple(masks.shape[-2:]) != (height, width):
            raise ValueError(
                f"pred_masks are {tuple(masks.shape[-2:])}, the image is {(height, width)}: "
                "the masks must be pasted into the image (detector_postprocess)"
            )
        if masks.dtype != torch.bool:
            masks = masks >= 0.5
        rles = []
        for m in masks.numpy():
            r = rle_util.encode(m)
            r["counts"] = r["counts"].decode("ascii")
            rles.append(r)
    else:
        return None
    for r in rles:
        if r["size"] != [height, width]:
            raise ValueError(f"a predicted mask is {r['size']}, the image is {[height, width]}")
    return rles


def _instances_to_coco_results(instances, rles, coco_image_id, category_to_coco) -> List[Dict]:
    n = len(instances)
    if n == 0:
        return []
    boxes = BoxMode.convert(instances.pred_boxes.tensor.numpy(), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    boxes = boxes.tolist()
    scores = instances.scores.tolist()
    classes = instances.pred_classes.tolist()
    results = []
    for k in range(n):
        r = {
            "image_id": coco_image_id,
            "category_id": category_to_coco[classes[k]],
            "bbox": boxes[k],
            "score": scores[k],
        }
        if rles is not None:
            r["segmentation"] = rles[k]
        results.append(r)
    return results


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
