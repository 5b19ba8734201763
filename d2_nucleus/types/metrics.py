# -*- coding: utf-8 -*-
"""
Detection and type metrics against annotated centres, pooled over images as the field does on
CRCHisto and CoNSeP (HoVer-Net's ``compute_stats.py``, ``run_nuclei_type_stat`` with
``exhaustive=False``):

* detection: a detection paired with a centre within the radius (:func:`.matching.match_points`)
  is a true positive; precision, recall and F1 (F_d) from the pooled TP, FP (unpaired
  detections), FN (unpaired centres). Centres without a class count here.
* per class c, the joint detection + classification F1

      F_c = 2 (TP_c + TN_c) / (2 (TP_c + TN_c) + 2 FP_c + 2 FN_c + FP_d,c + FN_d,c)

  where, as in HoVer-Net's code, TP_c / TN_c / FP_c / FN_c count only the *paired* nuclei whose
  true or predicted class is c (so TN_c is always 0), FP_d,c the unpaired detections predicted c
  and FN_d,c the unpaired centres of class c: missed and false detections count against their
  class. Centres without a class (label -1) are neither false positives of the class predicted
  for them (``exhaustive=False``) nor false negatives of any class;
* classification only, on the paired nuclei whose centre has a class: accuracy, per-class
  precision / recall / F1, the support-weighted F1 (Sirinukunwattana et al.'s "weighted average
  F1") and the confusion matrix (rows: true class, columns: predicted class).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from .matching import match_points

__all__ = ["TypeEvaluation", "type_metrics"]


def _safe(num: float, den: float) -> Optional[float]:
    return float(num) / float(den) if den else None


def type_metrics(paired_true: np.ndarray, paired_pred: np.ndarray, unpaired_true: np.ndarray,
                 unpaired_pred: np.ndarray, class_names: Sequence[str]) -> Dict:
    """
    The metrics of the module docstring from the class labels of the paired nuclei (true and
    predicted, equal length) and of the unpaired centres and detections (true -1: no class).
    """
    paired_true, paired_pred = np.asarray(paired_true, np.int64), np.asarray(paired_pred, np.int64)
    unpaired_true, unpaired_pred = np.asarray(unpaired_true, np.int64), np.asarray(unpaired_pred, np.int64)
    k = len(class_names)
    tp_d, fp_d, fn_d = len(paired_true), len(unpaired_pred), len(unpaired_true)
    out = {
        "detection": {
            "tp": tp_d, "fp": fp_d, "fn": fn_d,
            "precision": _safe(tp_d, tp_d + fp_d), "recall": _safe(tp_d, tp_d + fn_d),
            "f1": _safe(2 * tp_d, 2 * tp_d + fp_d + fn_d),
        },
    }  # fmt: skip
    joint = {}
    for c, name in enumerate(class_names):
        sel = (paired_true == c) | (paired_pred == c)
        t, p = paired_true[sel], paired_pred[sel]
        tp = int(((t == c) & (p == c)).sum())
        tn = int(((t != c) & (p != c)).sum())  # 0 by construction, kept as HoVer-Net writes it
        fp = int(((t != c) & (p == c)).sum()) - int((t == -1).sum())  # unlabelled centres ignored
        fn = int(((t == c) & (p != c)).sum())
        fpd, fnd = int((unpaired_pred == c).sum()), int((unpaired_true == c).sum())
        joint[name] = {
            "f1": _safe(2 * (tp + tn), 2 * (tp + tn) + 2 * fp + 2 * fn + fpd + fnd),
            "tp": tp, "tn": tn, "fp": fp, "fn": fn, "fp_d": fpd, "fn_d": fnd,
        }  # fmt: skip
    out["joint"] = joint
    labelled = paired_true >= 0
    t, p = paired_true[labelled], paired_pred[labelled]
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (t, p), 1)
    per_class, weighted, support_total = {}, 0.0, int(confusion.sum())
    for c, name in enumerate(class_names):
        tp, support, predicted = int(confusion[c, c]), int(confusion[c].sum()), int(confusion[:, c].sum())
        f1 = _safe(2 * tp, support + predicted)
        per_class[name] = {"precision": _safe(tp, predicted), "recall": _safe(tp, support), "f1": f1,
                           "support": support}
        weighted += (f1 or 0.0) * support
    f1s = [v["f1"] for v in per_class.values() if v["support"] > 0]
    out["classification"] = {
        "n": support_total,
        "accuracy": _safe(np.trace(confusion), support_total),
        "weighted_f1": _safe(weighted, support_total),
        "macro_f1": float(np.mean([f or 0.0 for f in f1s])) if f1s else None,
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "paired_without_class": int((~labelled).sum()),
    }
    return out


@dataclass
class TypeEvaluation:
    """
    Accumulates images (:meth:`add`) and reports the pooled metrics and one row per image
    (:meth:`results`).
    """

    class_names: Sequence[str]
    _parts: List[Dict[str, np.ndarray]] = field(default_factory=list)
    _names: List[str] = field(default_factory=list)

    def add(self, name: str, true_xy: np.ndarray, true_labels: np.ndarray, pred_xy: np.ndarray,
            pred_labels: np.ndarray, radius: float) -> Dict:
        """Pair one image's detections with its centres within ``radius`` px; returns its metrics."""
        true_labels = np.asarray(true_labels, np.int64)
        pred_labels = np.asarray(pred_labels, np.int64)
        pairs, ut, up = match_points(true_xy, pred_xy, radius)
        part = {
            "paired_true": true_labels[pairs[:, 0]], "paired_pred": pred_labels[pairs[:, 1]],
            "unpaired_true": true_labels[ut], "unpaired_pred": pred_labels[up],
        }  # fmt: skip
        self._parts.append(part)
        self._names.append(name)
        return type_metrics(**part, class_names=self.class_names)

    def results(self) -> Dict:
        """{"pooled": metrics over all images, "images": [{"image", **metrics}, ...]}."""
        keys = ("paired_true", "paired_pred", "unpaired_true", "unpaired_pred")
        pooled = {k: np.concatenate([p[k] for p in self._parts]) if self._parts else np.zeros(0, np.int64)
                  for k in keys}
        images = [{"image": n, **type_metrics(**p, class_names=self.class_names)}
                  for n, p in zip(self._names, self._parts)]
        return {"classes": list(self.class_names), "num_images": len(self._parts),
                "pooled": type_metrics(**pooled, class_names=self.class_names), "images": images}
