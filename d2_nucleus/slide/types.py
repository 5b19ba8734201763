# -*- coding: utf-8 -*-
"""
Nucleus types in the slide pipeline (``TYPES.CLASSIFIER``, the slide tools' ``--types``).

Each tile classifies the nuclei it owns right after the model ran on it, as per-image prediction
does (:class:`d2_nucleus.types.outputs.TypePredictor`): from the model's features of each
detection (``TYPES.BOX_FEATURES``, set by :func:`d2_nucleus.slide.options.slide_cfg_from_args`
when the classifier reads them) and its measurements, taken on the tile's pixels at the working
resolution with the classifier's own stain method (Macenko: estimated once per slide from its
thumbnail). The type index and the probabilities go into the tile's done record (:mod:`.work`),
so a resumed run writes the same types as an uninterrupted one; at output they become the table's
``type`` and ``prob_<type>`` columns, QuPath's classification, the summary's per-type counts,
fractions and densities per mm^2 of tissue, and the figures' colours
(:class:`d2_nucleus.export.classes.NucleusClasses`).
"""
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..export.classes import NucleusClasses
from ..measurements.masks import BoxMasks
from ..measurements.nuclei import measure_nuclei
from .inputs import file_sha256
from .measure import slide_stain_matrix
from .stitching import NucleusRecord, record_mask
from .tiling import SlideGeometry, Tile

__all__ = ["SlideTypes"]


class SlideTypes:
    """
    The type classifier of one slide's run.

    Args:
        cfg: the run's config (``TYPES.CLASSIFIER``, and the model's keys).
        predictor: the slide's model (its ``model`` gives the fingerprint a classifier of the
            model's features is checked against).
        geometry: the slide's geometry (the measurements' resolution is its ``working_mpp``).
        thumbnail: the slide's thumbnail (Macenko stain vectors, when the classifier uses them).
        name: the slide, for messages.
    """

    def __init__(self, cfg, predictor, geometry: SlideGeometry, thumbnail: np.ndarray, name: str = ""):
        from ..types.outputs import load_for_model, type_predictor

        classifier, _ = load_for_model(cfg)
        self.path = str(cfg.TYPES.CLASSIFIER)
        self.predictor = type_predictor(classifier, getattr(predictor, "model", None), cfg, geometry.working_mpp,
                                        self.path)
        self.stain, self.rgb_from_stain = slide_stain_matrix(thumbnail, self.predictor.stain, name)
        self.names: List[str] = self.predictor.class_names
        self.colors = self.predictor.colors

    def run_info(self) -> Dict:
        """What the done records' types depend on (a work folder of another classifier is started over)."""
        return {"classifier_sha256": file_sha256(self.path), "stain": self.stain,
                "rgb_from_stain": np.asarray(self.rgb_from_stain).tolist()}

    def classify_tile(self, records: Sequence[NucleusRecord], index: Sequence[int], instances, tile: Tile,
                      image_rgb: np.ndarray) -> Dict[str, List]:
        """
        The types of a tile's records (:func:`.stitching.tile_records`; ``index``: their rows of
        ``instances``) from the model's features and their measurements on the tile's RGB
        pixels: ``{"index": [...], "probs": [[...], ...]}`` in record order (JSON-ready).
        """
        if not records:
            return {"index": [], "probs": []}
        rx0, ry0 = tile.region[:2]
        boxes = BoxMasks([record_mask(r) for r in records], [r.x0 - rx0 for r in records], [r.y0 - ry0 for r in records])
        columns = None
        clf = self.predictor.classifier
        if clf.needs_measurements or clf.needs_patches:
            columns = measure_nuclei(boxes, image_rgb, mpp=self.predictor.mpp, rgb_from_stain=self.rgb_from_stain)
        features = self.predictor.model_features(instances)
        if features is not None:
            rows = np.asarray(index, np.int64)
            features = {k: v[rows] for k, v in features.items()}
        classes, _ = self.predictor.classify(image_rgb, None, features, columns, num=len(records))
        return {"index": classes.index.tolist(), "probs": classes.probs.tolist()}

    def classes(self, done: Optional[Dict], kept: Sequence[int]) -> NucleusClasses:
        """The :class:`NucleusClasses` of the ``kept`` records of a tile's done record's ``types``."""
        if done is None:
            raise ValueError("a tile's done record has no types (TYPES.CLASSIFIER was set after it was made)")
        kept = list(kept)
        index = np.asarray(done["index"], np.int64)[kept] if kept else np.zeros(0, np.int64)
        probs = np.asarray(done["probs"], np.float64).reshape(-1, len(self.names))[kept] if kept else \
            np.zeros((0, len(self.names)))
        return NucleusClasses(self.names, self.colors, index, probs)
