# -*- coding: utf-8 -*-
"""
Nucleus types in the outputs, for per-image prediction (``tools/predict.py --types``) and, per
tile, the whole-slide pipeline: :class:`TypePredictor`, a loaded classifier applied to one image's
(or tile's) nuclei: their measurements (computed here when the classifier needs them) and the
model's features -> :class:`d2_nucleus.export.classes.NucleusClasses` (the type and probabilities
of each nucleus, which the exporters write into tables, GeoJSON, overlays and summaries).
"""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..export.classes import NucleusClasses
from .classifier import BadClassifierError, TypeClassifier
from .features import MODEL_FEATURES

__all__ = ["TypePredictor", "load_for_model", "type_predictor"]


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
                    "(types.features.working_mpp); types may be less accurate", source or "type classifier",
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

    def model_features(self, instances) -> Optional[Dict[str, np.ndarray]]:
        """The detections' features of the model the classifier reads (``{"box": ..., "context": ...}``, numpy)."""
        if not self.classifier.needs_model_features:
            return None
        out = {}
        for kind in self.classifier.features:
            if kind in MODEL_FEATURES:
                if not instances.has(MODEL_FEATURES[kind]):
                    raise RuntimeError(f"the type classifier needs the model's {kind} features: TYPES.BOX_FEATURES True "
                                       "(and TYPES.CONTEXT_SCALE), without --tta")
                out[kind] = instances.get(MODEL_FEATURES[kind]).numpy()
        return out

    def classify(self, image_rgb: Optional[np.ndarray], rles: Optional[Sequence[Dict]],
                 model_features: Optional[Mapping[str, np.ndarray]] = None,
                 columns: Optional[Mapping[str, np.ndarray]] = None, num: Optional[int] = None
                 ) -> Tuple[NucleusClasses, Optional[Dict[str, np.ndarray]]]:
        """
        Types of N nuclei of ``image_rgb``: ``rles`` (COCO RLEs in the image's pixels; measured
        here with the classifier's stain method when it needs measurements and ``columns`` are
        not given), the model's features (``{"box": (N, D), "context": (N, D)}``, rows in the
        nuclei's order) and their measurement ``columns`` (centroids in the image's pixels).
        ``num``: N when ``rles`` is None. Returns the types and the measurement columns (None when
        the classifier needs none).
        """
        clf = self.classifier
        n = len(rles) if rles is not None else int(num)
        if (clf.needs_measurements or clf.needs_patches) and columns is None:
            from .detect import measure_selection

            columns = measure_selection(np.ascontiguousarray(image_rgb), rles, self.mpp, self.stain)
        columns = dict(columns) if columns is not None else None
        if not n:
            return NucleusClasses(self.class_names, self.colors, np.zeros(0, np.int64),
                                  np.zeros((0, len(self.class_names)))), columns
        patches = None
        if clf.needs_patches:
            from .patches import extract_patches

            xy = np.stack([columns["centroid_x"], columns["centroid_y"]], axis=1)
            p = clf.recipe["patch"]
            patches = extract_patches(image_rgb, xy, self.mpp, int(p["px"]), float(p["um"]))
        index, probs = clf.predict(model_features, columns, patches)
        return NucleusClasses(self.class_names, self.colors, index, probs), columns


def load_for_model(cfg, tta: bool = False):
    """
    The classifier of ``cfg.TYPES.CLASSIFIER`` (None without one), loaded before the model so that
    a bad file is a one-line error, and a copy of ``cfg`` whose model computes the features it
    reads (``TYPES.BOX_FEATURES``, ``TYPES.CONTEXT_SCALE``; frozen if ``cfg`` was).
    """
    if not cfg.TYPES.CLASSIFIER:
        return None, cfg
    classifier = TypeClassifier.load(cfg.TYPES.CLASSIFIER)
    if classifier.needs_model_features:
        if tta:
            raise BadClassifierError(f"{cfg.TYPES.CLASSIFIER}: a type classifier of the model's features cannot be "
                                     "used with --tta")
        frozen = cfg.is_frozen()
        cfg = cfg.clone()
        cfg.defrost()
        cfg.TYPES.BOX_FEATURES = True
        cfg.TYPES.CONTEXT_SCALE = classifier.context_scale
        if frozen:
            cfg.freeze()
    return classifier, cfg


def type_predictor(classifier: TypeClassifier, model, cfg, image_mpp: Optional[float], source: str = "") -> TypePredictor:
    """
    The :class:`TypePredictor` of a loaded classifier for ``model`` (built from ``cfg``) and images
    of ``image_mpp`` um/px (None: the model's resolution, ``MODEL.PIXEL_SIZE_UM``).
    """
    from ..config import model_mpp
    from .features import model_fingerprint, working_mpp

    if classifier.needs_model_features and model is None:
        raise BadClassifierError(f"{source or cfg.TYPES.CLASSIFIER}: reads the segmentation model's features, and "
                                 "this predictor has no model")
    fingerprint = model_fingerprint(model) if classifier.needs_model_features else None
    mpp = float(image_mpp) if image_mpp else model_mpp(cfg)
    return TypePredictor(classifier, mpp=mpp, model_fingerprint=fingerprint, working_mpp=working_mpp(cfg, image_mpp),
                         source=source or cfg.TYPES.CLASSIFIER)
