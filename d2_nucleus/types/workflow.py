# -*- coding: utf-8 -*-
"""
The steps behind ``tools/train_types.py`` and ``tools/eval_types.py``: choose the images of a
split, segment them (:class:`.detect.NucleusDetector`), train a classifier or evaluate one.
"""
import json
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

from .classifier import BadClassifierError, TypeClassifier, default_colors
from .evaluation import evaluate_types
from .features import FEATURE_KINDS, MODEL_FEATURES
from .points import BadPointsError
from .training import classifier_from_cfg, make_recipe, split_names, training_set

__all__ = ["evaluate_classifier", "select_images", "train_types"]

logger = logging.getLogger(__name__)


def select_images(annotations: Sequence, split: Optional[str] = None, subset: str = "all",
                  test_fraction: float = 0.25, seed: int = 0, create: bool = False) -> List:
    """
    The annotated images of ``subset`` ("train", "test" or "all") of the split file ``split``
    (JSON ``{"train": [names], "test": [names]}``). With ``create`` a missing split file is
    written first: a seeded split of the image names with ``test_fraction`` of them (rounded up)
    for testing. Names in the file that have no annotations are an error.
    """
    if subset == "all" or not split:
        return list(annotations)
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be train, test or all, got {subset!r}")
    names = [a.name for a in annotations]
    if not os.path.isfile(split):
        if not create:
            raise BadPointsError(f"{split}: split file does not exist")
        from ..utils.file_io import atomic_write_json

        train, test = split_names(names, test_fraction, seed)
        atomic_write_json(split, {"train": train, "test": test, "seed": seed, "test_fraction": test_fraction})
        logger.warning("Wrote %s: %d training and %d test images (seed %d)", split, len(train), len(test), seed)
    try:
        with open(split) as f:
            chosen = json.load(f)[subset]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadPointsError(f"{split}: not a split file with a {subset!r} list of image names ({e})") from None
    known = set(names)
    missing = sorted(set(map(str, chosen)) - known)
    if missing:
        raise BadPointsError(f"{split}: images {missing[:5]} of {subset!r} have no annotations")
    chosen = set(map(str, chosen))
    return [a for a in annotations if a.name in chosen]


def _check_classes(annotations: Sequence) -> List[str]:
    names = [tuple(a.class_names) for a in annotations]
    if not names:
        raise BadPointsError("no annotated images")
    if len(set(names)) != 1:
        raise BadPointsError(f"the annotations do not share one list of classes: {sorted(set(names))}")
    return list(names[0])


def _check_kinds(kinds: Sequence[str]) -> List[str]:
    kinds = [str(k) for k in kinds]
    if not kinds or not set(kinds) <= set(FEATURE_KINDS) or len(set(kinds)) != len(kinds):
        raise ValueError(f"TYPES.FEATURES must name some of {FEATURE_KINDS}, got {kinds}")
    return [k for k in FEATURE_KINDS if k in kinds]


def train_types(cfg, annotations: Sequence, detector, progress: bool = True,
                model_info: Optional[Dict] = None) -> Tuple[TypeClassifier, Dict]:
    """
    Train a classifier of ``cfg.TYPES.FEATURES`` on the annotated images with the nuclei
    ``detector`` (:class:`.detect.NucleusDetector`) segments. Returns it and a short report.
    """
    classes = _check_classes(annotations)
    kinds = _check_kinds(cfg.TYPES.FEATURES)
    model_kinds = [k for k in kinds if k in MODEL_FEATURES]
    if model_kinds and not detector.box_features or "context" in kinds and not detector.context_scale:
        raise ValueError(f"TYPES.FEATURES has {model_kinds} but the detector computes no such features "
                         "(TYPES.BOX_FEATURES, TYPES.CONTEXT_SCALE)")
    nuclei = detector.detect_all(annotations, progress=progress)
    radius = float(cfg.TYPES.MATCH_RADIUS_UM)
    train = training_set(annotations, nuclei, kinds, radius)
    box_dim = next((n.features["box"].shape[1] for n in nuclei if "box" in n.features), 0)
    mpps = sorted({a.mpp for a in annotations})
    working = detector.working_mpp(mpps[0]) if model_kinds else None
    recipe = make_recipe(kinds, box_dim, detector.fingerprint if model_kinds else None, working,
                         detector.stain, model_info, detector.context_scale)
    report = {
        "num_images": len(annotations), "nuclei": int(sum(len(n) for n in nuclei)),
        "centres": int(sum(len(a) for a in annotations)),
        "centres_with_class": int(sum((a.labels >= 0).sum() for a in annotations)),
        "trained_on": int(len(train.y)), "radius_um": radius, "image_mpp": mpps,
    }  # fmt: skip
    classifier = classifier_from_cfg(cfg, train, classes, default_colors(classes), recipe, progress=progress,
                                     info={"images": sorted(a.name for a in annotations), **report})
    return classifier, report


def evaluate_classifier(cfg, classifier: TypeClassifier, annotations: Sequence, detector,
                        progress: bool = True) -> Dict:
    """Detection and type metrics of ``classifier`` on the annotated images (see :mod:`.metrics`)."""
    _check_classes(annotations)
    if classifier.needs_model_features:
        if not detector.box_features or (classifier.context_scale and detector.context_scale != classifier.context_scale):
            raise ValueError("the detector does not compute the model features the classifier needs")
        classifier.check_model(detector.fingerprint, cfg.TYPES.CLASSIFIER)
    nuclei = detector.detect_all(annotations, progress=progress)
    return evaluate_types(classifier, annotations, nuclei, float(cfg.TYPES.MATCH_RADIUS_UM))


def load_classifier(path: str) -> TypeClassifier:
    """:meth:`TypeClassifier.load`, with the error type tools report as bad input."""
    if not path:
        raise BadClassifierError("no type classifier: pass --classifier (TYPES.CLASSIFIER)")
    return TypeClassifier.load(path)
