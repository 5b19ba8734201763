# -*- coding: utf-8 -*-
"""
Segment images and describe each nucleus for type classification: the detections a prediction
run exports (:func:`d2_nucleus.export.image_outputs.export_selection`), their measurements
(:func:`d2_nucleus.measurements.measure_nuclei`, which also gives the centroids matched to
annotated centres) and, on request, their box-head features. Images are predicted at the model's
resolution (the predictor's ``mpp``). Results can be cached per image (``.npz``, read
with ``allow_pickle=False``), keyed by the model's fingerprint, the image file and the settings,
so that training and evaluating several classifiers segments each image once.
"""
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from .features import MODEL_FEATURES
from .patches import extract_patches

__all__ = ["ImageNuclei", "NucleusDetector", "measure_selection"]

logger = logging.getLogger(__name__)


@dataclass
class ImageNuclei:
    """
    The exported nuclei of one image.

    Attributes:
        name: the image's name (file stem).
        columns: measurement columns (:func:`measure_nuclei`) plus ``score``, one row a nucleus.
        features: the model's features, ``{"box": (N, D), "context": (N, D)}`` float32 (those
            computed), and ``"patch"``: (N, 32, 32, 3) uint8 image patches (:mod:`.patches`;
            images of known resolution).
        rles: the nuclei's COCO RLEs (not cached; None when read from the cache).
    """

    name: str
    columns: Dict[str, np.ndarray]
    features: Dict[str, np.ndarray] = field(default_factory=dict)
    rles: Optional[list] = None

    def __len__(self) -> int:
        return len(self.columns["score"])

    @property
    def xy(self) -> np.ndarray:
        """(N, 2) centroids (pixel indices), the points matched to annotated centres."""
        return np.stack([self.columns["centroid_x"], self.columns["centroid_y"]], axis=1)

    def above(self, score: float) -> "ImageNuclei":
        """The nuclei whose detection score is at least ``score`` (columns, features and RLEs alike)."""
        keep = np.asarray(self.columns["score"]) >= score
        rles = [r for r, k in zip(self.rles, keep) if k] if self.rles is not None else None
        return ImageNuclei(self.name, {k: np.asarray(v)[keep] for k, v in self.columns.items()},
                           {k: v[keep] for k, v in self.features.items()}, rles)


def measure_selection(image_rgb: np.ndarray, rles: Sequence[Dict], mpp: Optional[float], stain: str = "ruifrok"):
    """Measurement columns of ``rles`` on ``image_rgb`` with the stain vectors ``stain`` gives."""
    from ..measurements.masks import BoxMasks
    from ..measurements.nuclei import measure_nuclei
    from ..measurements.stain import image_stain_matrix

    try:
        rgb_from_stain = image_stain_matrix(image_rgb, stain)
    except ValueError:  # Macenko on an image without enough stained pixels
        rgb_from_stain = image_stain_matrix(image_rgb, "ruifrok")
    return measure_nuclei(BoxMasks.from_rles(list(rles)), image_rgb, mpp=mpp, rgb_from_stain=rgb_from_stain)


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class NucleusDetector:
    """
    Segment images with a model (built once; images of another resolution than the model's are
    resized to it by the predictor, results in the image's pixels) and return their
    :class:`ImageNuclei`.

    Args:
        cfg: the model's config (``MODEL.WEIGHTS`` a checkpoint).
        box_features: also compute the model's features of each nucleus' box (``TYPES.BOX_FEATURES``)
            and, with ``TYPES.CONTEXT_SCALE`` > 0, of its context.
        stain: the measurements' stain vectors ("ruifrok" or "macenko").
        cache_dir: keep each image's result here and reuse it (None: no cache).
    """

    def __init__(self, cfg, box_features: bool = True, stain: str = "ruifrok", cache_dir: Optional[str] = None):
        from .features import model_fingerprint
        from ..engine.predictor import NucleusPredictor

        self.cfg = cfg.clone()
        self.cfg.defrost()
        self.cfg.TYPES.BOX_FEATURES = bool(box_features)
        self.box_features = bool(box_features)
        self.context_scale = float(self.cfg.TYPES.CONTEXT_SCALE) if box_features else 0.0
        self.stain = stain
        self.cache_dir = cache_dir
        self.predictor = NucleusPredictor(self.cfg)
        self.fingerprint = model_fingerprint(self.predictor.model)

    def test_scale(self, mpp: Optional[float]) -> float:
        """The factor images of ``mpp`` um/px are resized by before the model."""
        from ..config import input_resize_factor

        return float(self.cfg.INPUT.TEST_SCALE) * input_resize_factor(self.cfg, mpp)

    def working_mpp(self, mpp: Optional[float]) -> float:
        """Micrometres per pixel of the model's input for images of ``mpp`` (None: the model's)."""
        from .features import working_mpp

        return working_mpp(self.cfg, mpp)

    def _cache_path(self, image: str, mpp: Optional[float]) -> Optional[str]:
        if not self.cache_dir:
            return None
        key = json.dumps({
            "model": self.fingerprint, "image": _file_digest(image), "mpp": mpp, "box": self.box_features, "context": self.context_scale,
            "stain": self.stain, "scale": self.test_scale(mpp),
            "thresh": float(self.cfg.TEST.LABEL_MAP_SCORE_THRESH), "visible": float(self.cfg.TEST.LABEL_MAP_MIN_VISIBLE),
            "bf16": bool(self.cfg.SOLVER.CPU_BF16), "v": 3,
        }, sort_keys=True)  # fmt: skip
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        stem = os.path.splitext(os.path.basename(image))[0]
        return os.path.join(self.cache_dir, f"{stem}-{digest}.npz")

    def detect(self, image: str, mpp: Optional[float]) -> ImageNuclei:
        """Segment one image file (of ``mpp`` um/px) and describe its exported nuclei."""
        from ..data.image_io import read_image
        from ..export.image_outputs import export_selection
        from ..utils.file_io import atomic_write

        name = os.path.splitext(os.path.basename(image))[0]
        cache = self._cache_path(image, mpp)
        if cache and os.path.isfile(cache):
            try:
                with np.load(cache, allow_pickle=False) as data:
                    columns = {k[4:]: data[k] for k in data.files if k.startswith("col_")}
                    features = {k[5:]: data[k] for k in data.files if k.startswith("feat_")}
                return ImageNuclei(name, columns, features)
            except (OSError, ValueError, KeyError, EOFError) as e:
                logger.warning("%s: unreadable cache entry (%s); segmenting again", cache, e)
        predictor = self.predictor
        pixels = read_image(image, predictor.input_format)
        rgb = pixels[:, :, ::-1] if predictor.input_format == "BGR" else pixels
        instances = predictor([pixels], mpp=mpp)[0]
        rles, scores = instances.pred_rles, instances.scores.numpy()
        keep, _ = export_selection(rles, scores, rgb.shape[0], rgb.shape[1],
                                   float(self.cfg.TEST.LABEL_MAP_SCORE_THRESH),
                                   float(self.cfg.TEST.LABEL_MAP_MIN_VISIBLE))
        kept = [rles[i] for i in keep]
        columns = dict(measure_selection(np.ascontiguousarray(rgb), kept, mpp, self.stain))
        columns["score"] = scores[keep].astype(np.float64)
        features = {kind: instances.get(f).numpy()[keep].astype(np.float32)
                    for kind, f in MODEL_FEATURES.items() if instances.has(f)}
        if mpp:
            xy = np.stack([columns["centroid_x"], columns["centroid_y"]], axis=1)
            features["patch"] = extract_patches(rgb, xy, mpp)
        if cache:
            os.makedirs(self.cache_dir, exist_ok=True)
            arrays = {f"col_{k}": np.asarray(v) for k, v in columns.items()}
            arrays.update({f"feat_{k}": v for k, v in features.items()})
            with atomic_write(cache, overwrite=True) as f:
                np.savez(f, **arrays)
        return ImageNuclei(name, columns, features, kept)

    def detect_all(self, annotations: Sequence, progress: bool = True) -> List[ImageNuclei]:
        """:meth:`detect` every :class:`.points.PointAnnotations`' image, with a progress bar."""
        from tqdm import tqdm

        out = []
        for ann in tqdm(annotations, desc="segment", unit="img", disable=not progress):
            out.append(self.detect(ann.image, ann.mpp))
        return out
