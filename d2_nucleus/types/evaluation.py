# -*- coding: utf-8 -*-
"""
Evaluate a type classifier on annotated images (:mod:`.metrics`), write the results (JSON, a
per-image CSV) and the confusion-matrix picture.
"""
import csv
import io
from typing import Dict, Optional, Sequence

import numpy as np

from .matching import radius_px
from .metrics import TypeEvaluation

__all__ = ["evaluate_types", "plot_confusion", "write_evaluation"]


def evaluate_types(classifier, annotations: Sequence, nuclei: Sequence, radius_um: float) -> Dict:
    """
    Classify each image's nuclei and score detections and types against its annotated centres
    (see :mod:`.metrics`). The classifier's classes must be the annotations' (same names, order).
    """
    names = list(annotations[0].class_names) if annotations else list(classifier.class_names)
    if list(classifier.class_names) != names:
        raise ValueError(f"the classifier's classes {list(classifier.class_names)} differ from the annotations' {names}")
    evaluation = TypeEvaluation(names)
    for ann, nuc in zip(annotations, nuclei):
        pred = np.zeros(0, np.int64)
        if len(nuc):
            pred, _ = classifier.predict(nuc.features, nuc.columns, nuc.features.get("patch"))
        evaluation.add(ann.name, ann.xy, ann.labels, nuc.xy, pred, radius_px(radius_um, ann.mpp))
    results = evaluation.results()
    results["radius_um"] = float(radius_um)
    return results


def plot_confusion(results: Dict, title: str = ""):
    """A matplotlib Figure: the pooled confusion matrix, counts and row-normalised shares."""
    from matplotlib.figure import Figure

    names = results["classes"]
    conf = np.asarray(results["pooled"]["classification"]["confusion"], np.float64)
    share = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(1.6 + 1.1 * len(names), 1.2 + 1.0 * len(names)), dpi=110, layout="constrained")
    ax = fig.subplots()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            colour = "white" if share[i, j] > 0.55 else "black"
            ax.text(j, i, f"{int(conf[i, j])}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted type")
    ax.set_ylabel("annotated type")
    c = results["pooled"]["classification"]
    ax.set_title(f"{title}\nweighted F1 {c['weighted_f1']:.3f}, accuracy {c['accuracy']:.3f} (n={c['n']})".strip(),
                 fontsize=9)
    return fig


def _image_rows(results: Dict):
    names = results["classes"]
    for row in results["images"]:
        d, c = row["detection"], row["classification"]
        out = {"image": row["image"], "tp": d["tp"], "fp": d["fp"], "fn": d["fn"], "precision": d["precision"],
               "recall": d["recall"], "f1_detection": d["f1"], "n_classified": c["n"], "accuracy": c["accuracy"],
               "weighted_f1": c["weighted_f1"]}
        for name in names:
            out[f"f1_joint_{name}"] = row["joint"][name]["f1"]
        yield out


def write_evaluation(results: Dict, json_path: Optional[str] = None, csv_path: Optional[str] = None,
                     figure_path: Optional[str] = None, title: str = "", overwrite: bool = False) -> None:
    """Write the results as JSON, the per-image rows as CSV and the confusion picture (PNG), atomically."""
    from ..utils.file_io import atomic_write, atomic_write_json

    if json_path:
        atomic_write_json(json_path, results, overwrite=overwrite)
    if csv_path:
        rows = list(_image_rows(results))
        buffer = io.StringIO()
        if rows:
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        with atomic_write(csv_path, overwrite=overwrite) as f:
            f.write(buffer.getvalue().encode("utf-8"))
    if figure_path:
        buffer = io.BytesIO()
        plot_confusion(results, title).savefig(buffer, format="png")
        with atomic_write(figure_path, overwrite=overwrite) as f:
            f.write(buffer.getvalue())


def format_table(results: Dict) -> str:
    """A short text report of the pooled results."""
    p = results["pooled"]
    d, c = p["detection"], p["classification"]
    lines = [f"detection: P {d['precision']:.3f} R {d['recall']:.3f} F1 {d['f1']:.3f} "
             f"(TP {d['tp']}, FP {d['fp']}, FN {d['fn']})",
             f"classification of paired nuclei: weighted F1 {c['weighted_f1']:.3f}, accuracy {c['accuracy']:.3f} (n={c['n']})"]
    for name in results["classes"]:
        lines.append(f"  {name:>14}: F_c {p['joint'][name]['f1'] or 0:.3f}   classification F1 "
                     f"{c['per_class'][name]['f1'] or 0:.3f} (n={c['per_class'][name]['support']})")
    return "\n".join(lines)
