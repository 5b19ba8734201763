# -*- coding: utf-8 -*-
"""
Training a type classifier from point annotations on top of a trained segmentation model:

1. segment the annotated images (:class:`.detect.NucleusDetector`);
2. pair each image's nuclei with its annotated centres one to one within ``TYPES.MATCH_RADIUS_UM``
   (:func:`.matching.match_points`; every centre takes part, with or without a class, so that a
   nucleus is never paired with a neighbour's centre);
3. learn the class of the paired nuclei whose centre has one from their features
   (:func:`fit_classifier`). Unpaired nuclei and centres without a class are not trained on: the
   first have no label, the second no class.

The classifier is a small MLP (one hidden layer, ``TYPES.HIDDEN_DIM``) or, with 0 hidden units,
multinomial logistic regression, on standardised features, with a small convolutional branch on
the image patch around the nucleus when the features include "patch" (:mod:`.network`), trained
with AdamW and a class-balanced cross-entropy (each class weighted by N / (K n_c)), so that rare
classes are not ignored. BENCHMARKS.md ("Nucleus types") has the measurements behind the defaults.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .classifier import TypeClassifier
from .features import FEATURE_KINDS, MEASUREMENT_FEATURES, MODEL_FEATURES, feature_matrix
from .matching import match_points, radius_px
from .patches import PATCH_PX, PATCH_UM

__all__ = ["TrainingSet", "fit_classifier", "paired_labels", "training_set"]


@dataclass
class TrainingSet:
    """Features (N, D) of the paired, classed nuclei, their labels (N,), and the image of each row."""

    x: np.ndarray
    y: np.ndarray
    image: np.ndarray
    patches: Optional[np.ndarray] = None


def paired_labels(annotations, nuclei, radius_um: float) -> np.ndarray:
    """
    The class of each nucleus of one image: the label of the centre it is paired with within
    ``radius_um`` (-1 for an unpaired nucleus or a centre without a class).
    """
    labels = np.full(len(nuclei), -1, np.int64)
    if len(nuclei) and len(annotations):
        pairs, _, _ = match_points(annotations.xy, nuclei.xy, radius_px(radius_um, annotations.mpp))
        labels[pairs[:, 1]] = annotations.labels[pairs[:, 0]]
    return labels


def training_set(annotations: Sequence, nuclei: Sequence, kinds: Sequence[str], radius_um: float) -> TrainingSet:
    """The features and labels of the paired, classed nuclei of every image."""
    xs, ys, names, patches = [], [], [], []
    for ann, nuc in zip(annotations, nuclei):
        labels = paired_labels(ann, nuc, radius_um)
        keep = labels >= 0
        if not keep.any():
            continue
        x = feature_matrix(kinds, nuc.features, nuc.columns, num=len(nuc))
        xs.append(x[keep])
        ys.append(labels[keep])
        if "patch" in kinds:
            if "patch" not in nuc.features:
                raise ValueError(f"{ann.name}: no image patches of the nuclei (NucleusDetector patches)")
            patches.append(nuc.features["patch"][keep])
        names += [ann.name] * int(keep.sum())
    if not xs:
        raise ValueError("no segmented nucleus was paired with an annotated centre that has a class: "
                         "check the points' coordinates and the images' resolution (mpp)")
    return TrainingSet(np.concatenate(xs), np.concatenate(ys), np.array(names, dtype=object),
                       np.concatenate(patches) if patches else None)


def fit_classifier(
    x: np.ndarray,
    y: np.ndarray,
    class_names: Sequence[str],
    colors: Sequence[Tuple[int, int, int]],
    recipe: Dict,
    hidden_dim: int = 256,
    epochs: int = 60,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    dropout: float = 0.2,
    seed: int = 0,
    progress: bool = False,
    info: Optional[Dict] = None,
    patches: Optional[np.ndarray] = None,
    patch_channels: Sequence[int] = (),
) -> TypeClassifier:
    """
    Train a :class:`TypeClassifier` on raw feature rows ``x`` (N, D) with labels ``y`` in
    0..K-1 and, with ``patch_channels``, the uint8 image ``patches`` (N, P, P, 3) of the same
    nuclei (see the module docstring and :mod:`.network`). Deterministic for a seed on one machine.
    """
    from .network import train_network

    x = np.asarray(x, np.float64).reshape(len(y), -1)
    y = np.asarray(y, np.int64)
    k = len(class_names)
    if not len(y):
        raise ValueError("no training nuclei")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels must be in 0..{k - 1}")
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(x, axis=0) if x.shape[1] else np.zeros(0)
        std = np.nanstd(x, axis=0) if x.shape[1] else np.zeros(0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
    z = np.nan_to_num((x - mean) / std, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    recipe = dict(recipe)
    patch_mean = patch_std = None
    if patch_channels:
        if patches is None or len(patches) != len(y):
            raise ValueError("a patch classifier needs an image patch around each training nucleus")
        flat = patches.reshape(-1, 3).astype(np.float64) / 255.0
        patch_mean, patch_std = flat.mean(axis=0), np.maximum(flat.std(axis=0), 1e-3)
        recipe["patch"] = dict(recipe.get("patch") or {}, px=int(patches.shape[1]), mean=patch_mean.tolist(),
                               std=patch_std.tolist(), channels=[int(c) for c in patch_channels])
    convs, layers = train_network(z, y, k, patches, patch_mean, patch_std, tuple(patch_channels), int(hidden_dim),
                                  int(epochs), int(batch_size), lr, weight_decay, dropout, int(seed), progress)
    counts = np.bincount(y, minlength=k)
    record = {"samples": int(len(y)), "class_counts": counts.astype(int).tolist(), "hidden_dim": int(hidden_dim),
              "epochs": int(epochs), "batch_size": int(batch_size), "lr": lr, "weight_decay": weight_decay,
              "dropout": dropout, "seed": int(seed), **(info or {})}
    return TypeClassifier(list(class_names), list(colors), recipe, mean, std, layers, record, convs)


def classifier_from_cfg(cfg, train: TrainingSet, class_names, colors, recipe: Dict, progress: bool = False,
                        info: Optional[Dict] = None) -> TypeClassifier:
    """:func:`fit_classifier` with the settings of ``cfg.TYPES``."""
    t = cfg.TYPES
    patch = "patch" in recipe["features"]
    return fit_classifier(train.x, train.y, class_names, colors, recipe, hidden_dim=int(t.HIDDEN_DIM),
                          epochs=int(t.PATCH_EPOCHS if patch else t.EPOCHS), batch_size=int(t.BATCH_SIZE),
                          lr=float(t.PATCH_LR if patch else t.LR), weight_decay=float(t.WEIGHT_DECAY),
                          dropout=float(t.DROPOUT), seed=int(t.SEED), progress=progress, info=info,
                          patches=train.patches if patch else None,
                          patch_channels=tuple(t.PATCH_CHANNELS) if patch else ())


def make_recipe(kinds: Sequence[str], box_dim: int, fingerprint: Optional[str], working_mpp: Optional[float],
                stain: str, model: Optional[Dict] = None, context_scale: float = 0.0) -> Dict:
    """The feature recipe a classifier file records (see :class:`TypeClassifier`)."""
    model_kinds = any(k in MODEL_FEATURES for k in kinds)
    return {
        "features": [k for k in FEATURE_KINDS if k in kinds],
        "measurement_names": list(MEASUREMENT_FEATURES) if "measurements" in kinds else [],
        "box_dim": int(box_dim) if model_kinds else 0,
        "context_scale": float(context_scale) if "context" in kinds else 0.0,
        "patch": {"px": PATCH_PX, "um": PATCH_UM} if "patch" in kinds else None,
        "model": {"fingerprint": fingerprint, **(model or {})},
        "working_mpp": working_mpp,
        "stain": stain,
    }


def split_names(names: List[str], test_fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    """A seeded split of image names: (train, test), the test share rounded up."""
    order = sorted(names)
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    n_test = int(np.ceil(len(order) * test_fraction))
    return sorted(order[n_test:]), sorted(order[:n_test])
