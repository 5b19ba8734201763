# -*- coding: utf-8 -*-
"""
Nucleus types in the outputs, for per-image prediction (``tools/predict.py --types``) and, per
tile, the whole-slide pipeline:

* :class:`TypePredictor`: a loaded classifier applied to one image's (or tile's) nuclei: their
  measurements (computed here when the classifier needs them) and box features -> type index and
  probabilities;
* :func:`type_columns`: the per-nucleus table's ``type`` column and one ``prob_<type>`` column a
  type (:func:`prob_column`);
* :func:`type_classifications`: QuPath's ``classification`` ``{"name", "color"}`` of each nucleus;
* :func:`type_summary`: counts, fractions and density (per mm^2) of each type, from the table's
  ``type`` column (so a slide can summarise its whole table).
"""
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from .classifier import BadClassifierError, TypeClassifier

__all__ = ["TypePredictor", "TypedNuclei", "prob_column", "type_classifications", "type_columns", "type_summary"]


def prob_column(name: str) -> str:
    """The probability column of a type: ``prob_`` + the name, runs of other characters as ``_``."""
    return "prob_" + (re.sub(r"[^0-9A-Za-z]+", "_", str(name)).strip("_") or "type")


def type_columns(class_names: Sequence[str], index: np.ndarray, probs: np.ndarray) -> Dict[str, np.ndarray]:
    """``type`` (the name, object array) and ``prob_<type>`` (float64) columns of N nuclei."""
    names = np.asarray(list(class_names), dtype=object)
    out = {"type": names[np.asarray(index, np.int64)] if len(index) else np.zeros(0, dtype=object)}
    probs = np.asarray(probs, np.float64).reshape(len(index), len(class_names))
    for k, name in enumerate(class_names):
        out[prob_column(name)] = probs[:, k]
    return out


def type_classifications(class_names: Sequence[str], colors: Sequence[Sequence[int]], index: np.ndarray) -> List[Dict]:
    """QuPath ``classification`` objects, one a nucleus: ``{"name": type, "color": [r, g, b]}``."""
    table = [{"name": str(n), "color": [int(v) for v in c]} for n, c in zip(class_names, colors)]
    return [dict(table[int(i)]) for i in np.asarray(index, np.int64)]


def type_summary(types: Sequence, class_names: Sequence[str], area_mm2: Optional[float] = None,
                 colors: Optional[Sequence[Sequence[int]]] = None) -> Dict[str, Dict]:
    """
    Per type: ``count``, ``fraction`` of the nuclei, ``density_per_mm2`` (None without an area),
    and ``color``, from the type name of each nucleus (the table's ``type`` column).
    """
    types = np.asarray(list(types), dtype=object)
    total = len(types)
    out = {}
    for k, name in enumerate(class_names):
        n = int((types == name).sum())
        out[str(name)] = {
            "count": n, "fraction": n / total if total else None,
            "density_per_mm2": n / area_mm2 if area_mm2 else None,
        }  # fmt: skip
        if colors is not None:
            out[str(name)]["color"] = [int(v) for v in colors[k]]
    return out


@dataclass
class TypedNuclei:
    """One image's nuclei with types: ``index`` (N,), ``probs`` (N, K), and the measurement
    ``columns`` computed for the classifier (None when it needs none)."""

    index: np.ndarray
    probs: np.ndarray
    columns: Optional[Dict[str, np.ndarray]]


class TypePredictor:
    """
    Apply a type classifier to the nuclei of images (or slide tiles).

    Args:
        classifier: a :class:`TypeClassifier` or the path of its file.
        mpp: micrometres per pixel of the images (the measurements' sizes; required when the
            classifier uses measurements).
        model_fingerprint: the segmentation model's :func:`.features.model_fingerprint`; a
            classifier of box features is refused for another model.
        working_mpp: um per pixel of the model's input in this run; a warning is logged when it
            differs from the classifier's by more than 10% (its box features were seen at
            another scale).
    """

    def __init__(self, classifier, mpp: Optional[float] = None, model_fingerprint: Optional[str] = None,
                 working_mpp: Optional[float] = None, source: str = ""):
        import logging

        if isinstance(classifier, str):
            source = source or classifier
            classifier = TypeClassifier.load(classifier)
        self.classifier: TypeClassifier = classifier
        self.source = source
        self.mpp = float(mpp) if mpp else None
        self.stain = classifier.recipe.get("stain", "ruifrok")
        if classifier.needs_model_features:
            classifier.check_model(model_fingerprint, source)
            trained = classifier.recipe.get("working_mpp")
            if trained and working_mpp and abs(working_mpp / trained - 1) > 0.1:
                logging.getLogger(__name__).warning(
                    "%s: trained on box features at %.3g um per model-input pixel, this run gives %.3g "
                    "(image mpp / INPUT.TEST_SCALE); types may be less accurate", source or "type classifier",
                    trained, working_mpp)
        if (classifier.needs_measurements or classifier.needs_patches) and not self.mpp:
            raise BadClassifierError(f"{source or 'type classifier'}: uses sizes in micrometres; give the images' "
                                     "resolution (--mpp or MODEL.PIXEL_SIZE_UM)")

    @property
    def class_names(self) -> List[str]:
        return list(self.classifier.class_names)

    @property
    def colors(self):
        return list(self.classifier.colors)

    def classify(self, image_rgb: Optional[np.ndarray], rles: Sequence[Dict],
                 model_features: Optional[Mapping[str, np.ndarray]] = None,
                 columns: Optional[Mapping[str, np.ndarray]] = None) -> TypedNuclei:
        """
        Types of the nuclei ``rles`` (COCO RLEs in the image's pixels) of ``image_rgb``, given the
        model's features (``{"box": (N, D), "context": (N, D)}``, rows in the order of ``rles``)
        and, optionally, their measurement ``columns`` (else measured here with the classifier's
        stain method).
        """
        clf = self.classifier
        if (clf.needs_measurements or clf.needs_patches) and columns is None:
            from .detect import measure_selection

            columns = measure_selection(np.ascontiguousarray(image_rgb), rles, self.mpp, self.stain)
        if not len(rles):
            return TypedNuclei(np.zeros(0, np.int64), np.zeros((0, len(self.class_names))), columns)
        patches = None
        if clf.needs_patches:
            from .patches import extract_patches

            xy = np.stack([columns["centroid_x"], columns["centroid_y"]], axis=1)
            p = clf.recipe["patch"]
            patches = extract_patches(image_rgb, xy, self.mpp, int(p["px"]), float(p["um"]))
        index, probs = clf.predict(model_features, columns, patches)
        return TypedNuclei(index, probs, dict(columns) if columns is not None else None)
