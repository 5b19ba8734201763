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
multinomial logistic regression, on standardised features, trained with AdamW and a
class-balanced cross-entropy (each class weighted by N / (K n_c)), so that rare classes are not
ignored. BENCHMARKS.md ("Nucleus types") has the measurements behind the defaults.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .classifier import TypeClassifier
from .features import FEATURE_KINDS, MEASUREMENT_FEATURES, MODEL_FEATURES, feature_matrix
from .matching import match_points, radius_px

__all__ = ["TrainingSet", "fit_classifier", "paired_labels", "training_set"]


@dataclass
class TrainingSet:
    """Features (N, D) of the paired, classed nuclei, their labels (N,), and the image of each row."""

    x: np.ndarray
    y: np.ndarray
    image: np.ndarray


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
    xs, ys, names = [], [], []
    for ann, nuc in zip(annotations, nuclei):
        labels = paired_labels(ann, nuc, radius_um)
        keep = labels >= 0
        if not keep.any():
            continue
        x = feature_matrix(kinds, nuc.features, nuc.columns, num=len(nuc))
        xs.append(x[keep])
        ys.append(labels[keep])
        names += [ann.name] * int(keep.sum())
    if not xs:
        raise ValueError("no segmented nucleus was paired with an annotated centre that has a class: "
                         "check the points' coordinates and the images' resolution (mpp)")
    return TrainingSet(np.concatenate(xs), np.concatenate(ys), np.array(names, dtype=object))


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
) -> TypeClassifier:
    """
    Train a :class:`TypeClassifier` on raw feature rows ``x`` (N, D) with labels ``y`` in
    0..K-1 (see the module docstring). Deterministic for a seed on one machine.
    """
    import torch
    from torch import nn
    from tqdm import tqdm

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    k = len(class_names)
    if len(x) != len(y) or not len(y):
        raise ValueError(f"need as many labels as feature rows, and some: {len(x)} rows, {len(y)} labels")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels must be in 0..{k - 1}")
    mean = np.nanmean(x, axis=0)
    std = np.nanstd(x, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
    z = np.nan_to_num((x - mean) / std, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)

    counts = np.bincount(y, minlength=k).astype(np.float64)
    weights = np.where(counts > 0, len(y) / (k * np.maximum(counts, 1)), 0.0)
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    d = z.shape[1]
    if hidden_dim > 0:
        net = nn.Sequential(nn.Linear(d, hidden_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, k))
    else:
        net = nn.Sequential(nn.Linear(d, k))
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max(1, epochs * ((len(y) + batch_size - 1) // batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss(weight=torch.as_tensor(weights, dtype=torch.float32))
    xt, yt = torch.from_numpy(z), torch.from_numpy(y)
    net.train()
    for _ in tqdm(range(epochs), desc="train types", unit="epoch", disable=not progress):
        order = torch.randperm(len(yt), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(xt[idx]), yt[idx]).backward()
            optimizer.step()
            schedule.step()
    linears = [m for m in net if isinstance(m, nn.Linear)]
    layers = [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy()) for m in linears]
    record = {"samples": int(len(y)), "class_counts": counts.astype(int).tolist(), "hidden_dim": int(hidden_dim),
              "epochs": int(epochs), "batch_size": int(batch_size), "lr": lr, "weight_decay": weight_decay,
              "dropout": dropout, "seed": int(seed), **(info or {})}
    return TypeClassifier(list(class_names), list(colors), dict(recipe), mean, std, layers, record)


def classifier_from_cfg(cfg, train: TrainingSet, class_names, colors, recipe: Dict, progress: bool = False,
                        info: Optional[Dict] = None) -> TypeClassifier:
    """:func:`fit_classifier` with the settings of ``cfg.TYPES``."""
    t = cfg.TYPES
    return fit_classifier(train.x, train.y, class_names, colors, recipe, hidden_dim=int(t.HIDDEN_DIM),
                          epochs=int(t.EPOCHS), batch_size=int(t.BATCH_SIZE), lr=float(t.LR),
                          weight_decay=float(t.WEIGHT_DECAY), dropout=float(t.DROPOUT), seed=int(t.SEED),
                          progress=progress, info=info)


def make_recipe(kinds: Sequence[str], box_dim: int, fingerprint: Optional[str], working_mpp: Optional[float],
                stain: str, model: Optional[Dict] = None, context_scale: float = 0.0) -> Dict:
    """The feature recipe a classifier file records (see :class:`TypeClassifier`)."""
    model_kinds = any(k in MODEL_FEATURES for k in kinds)
    return {
        "features": [k for k in FEATURE_KINDS if k in kinds],
        "measurement_names": list(MEASUREMENT_FEATURES) if "measurements" in kinds else [],
        "box_dim": int(box_dim) if model_kinds else 0,
        "context_scale": float(context_scale) if "context" in kinds else 0.0,
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
