# -*- coding: utf-8 -*-
"""
The features a type classifier sees for each nucleus, and the identity of the model they come from.

* ``"box"``: the segmentation model's own per-nucleus features, its RoI box head's output for
  the nucleus' final box (:mod:`d2_nucleus.modeling.nucleus_features`; 512 numbers for the CPU
  recipe). They depend on the model's weights and on the scale the image reached the model at, so
  a classifier records both (:func:`model_fingerprint`, ``working_mpp``).
* ``"context"``: the same head's output for a square of ``TYPES.CONTEXT_SCALE`` x the box's
  longer side around it: the nucleus' surroundings.
* ``"patch"``: the image around the nucleus (:mod:`.patches`), read by the classifier's small
  convolutional branch (:mod:`.network`) rather than given as numbers.
* ``"measurements"``: :data:`MEASUREMENT_FEATURES`, columns of
  :func:`d2_nucleus.measurements.measure_nuclei` (size in micrometres, shape, H&E optical
  densities, RGB): what QuPath's object classifier has.
"""
import hashlib
from typing import Mapping, Optional, Sequence

import numpy as np

__all__ = ["FEATURE_KINDS", "MEASUREMENT_FEATURES", "MODEL_FEATURES", "feature_matrix", "model_fingerprint", "working_mpp"]

FEATURE_KINDS = ("box", "context", "measurements", "patch")
#: The model's features: kind -> the Instances field holding them (NucleusRCNN with TYPES.BOX_FEATURES).
MODEL_FEATURES = {"box": "box_features", "context": "context_features"}

#: Measurement columns used as features (sizes in micrometres: the images' mpp must be known).
MEASUREMENT_FEATURES = (
    "area_um2", "perimeter_um", "circularity", "solidity", "eccentricity",
    "major_axis_length_um", "minor_axis_length_um", "equivalent_diameter_um",
    "hematoxylin_od_mean", "hematoxylin_od_std", "eosin_od_mean", "eosin_od_std",
    "red_mean", "green_mean", "blue_mean",
)  # fmt: skip


def feature_matrix(kinds: Sequence[str], model_features: Optional[Mapping[str, np.ndarray]] = None,
                   columns: Optional[Mapping[str, np.ndarray]] = None, num: Optional[int] = None,
                   measurement_names: Sequence[str] = MEASUREMENT_FEATURES) -> np.ndarray:
    """
    The (N, D) float64 features of ``kinds`` in the order of :data:`FEATURE_KINDS`, from the
    model's features (``{"box": (N, D), "context": (N, D)}``) and the measurement ``columns``;
    NaN where a measurement is undefined (e.g. the circularity of one pixel).

    Raises:
        ValueError: a feature kind is unknown or its values are missing, or the row counts differ.
    """
    parts = []
    for kind in [k for k in FEATURE_KINDS if k in kinds] + [k for k in kinds if k not in FEATURE_KINDS]:
        if kind == "patch":
            continue  # image patches go to the classifier's convolutional branch, not into this matrix
        if kind in MODEL_FEATURES:
            values = (model_features or {}).get(kind)
            if values is None:
                raise ValueError(f"the classifier needs the model's {kind} features (TYPES.BOX_FEATURES), none given")
            parts.append(np.asarray(values, np.float64).reshape(len(values), -1))
        elif kind == "measurements":
            if columns is None:
                raise ValueError("the classifier needs the nuclei's measurements, none given")
            missing = [c for c in measurement_names if c not in columns]
            if missing:
                raise ValueError(f"measurement columns {missing} missing")
            cols = np.stack([np.asarray(columns[c], np.float64).reshape(-1) for c in measurement_names], axis=1)
            if "area_um2" in measurement_names and len(cols) and np.isnan(columns["area_um2"]).all():
                raise ValueError("the classifier's measurements are in micrometres: give the images' resolution (--mpp)")
            parts.append(cols)
        else:
            raise ValueError(f"unknown feature kind {kind!r}; one of {FEATURE_KINDS}")
    if not parts:
        return np.zeros((num or 0, 0))
    rows = {len(p) for p in parts}
    if len(rows) != 1:
        raise ValueError(f"feature parts have different numbers of nuclei: {sorted(rows)}")
    return np.concatenate(parts, axis=1)


def model_fingerprint(model) -> str:
    """
    SHA-256 of a model's state dict (every parameter and buffer: name, dtype, shape, values), the
    identity of the features it computes, whatever file the weights were saved in.
    """
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.dtype == torch.bfloat16:
            t = t.float()
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def working_mpp(cfg, image_mpp: Optional[float]) -> float:
    """
    Micrometres per pixel of the model's input for an image of ``image_mpp`` (None: the model's
    resolution) predicted with ``cfg``: the image is resized by ``INPUT.TEST_SCALE`` x
    :func:`d2_nucleus.config.input_resize_factor`.
    """
    from ..config import input_resize_factor, model_mpp

    mpp = float(image_mpp) if image_mpp else model_mpp(cfg)
    return mpp / (float(cfg.INPUT.TEST_SCALE) * input_resize_factor(cfg, image_mpp))
