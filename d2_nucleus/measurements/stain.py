# -*- coding: utf-8 -*-
"""
Colour deconvolution of H&E pixels into haematoxylin, eosin and residual optical densities.

The stain values are those of ``skimage.color.separate_stains`` (``rgb2hed`` with the default
matrix): ``max(0, (log(max(rgb, 1e-6)) / log(1e-6)) @ inv(M))`` with ``rgb`` in [0, 1] and ``M``
the 3 x 3 matrix whose rows are the stains' RGB optical-density vectors. The default ``M`` is
Ruifrok & Johnston's H&E(-DAB) matrix, ``skimage.color.rgb_from_hed``; :func:`macenko_stain_matrix`
estimates an H&E matrix from an image instead (Macenko et al. 2009).

Pixels are converted through a 256-entry table (8-bit images), so only the pixels of the nuclei
are touched, never the whole image.
"""
from typing import Optional

import numpy as np
from skimage.color import rgb_from_hed
from skimage.util import img_as_float64

__all__ = [
    "RUIFROK_JOHNSTON",
    "STAIN_METHODS",
    "stain_conversion",
    "separate_stains",
    "macenko_stain_matrix",
    "image_stain_matrix",
]

# Rows: haematoxylin, eosin, DAB optical-density vectors (Ruifrok & Johnston 2001).
RUIFROK_JOHNSTON = np.array(rgb_from_hed, dtype=np.float64)
STAIN_METHODS = ("ruifrok", "macenko")

_LOG_ADJUST = np.log(1e-6)
# log(max(v / 255, 1e-6)) / log(1e-6) for every 8-bit value, with scikit-image's conversion to float.
_OD_TABLE = np.log(np.maximum(img_as_float64(np.arange(256, dtype=np.uint8)), 1e-6)) / _LOG_ADJUST


def stain_conversion(rgb_from_stain: Optional[np.ndarray] = None) -> np.ndarray:
    """The 3 x 3 matrix from optical densities to stain amounts (inverse of ``rgb_from_stain``)."""
    m = RUIFROK_JOHNSTON if rgb_from_stain is None else np.asarray(rgb_from_stain, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"stain matrix must be 3 x 3, got {m.shape}")
    return np.linalg.inv(m)


def _optical_density(rgb: np.ndarray) -> np.ndarray:
    """scikit-image's scaled optical density ``log(max(rgb, 1e-6)) / log(1e-6)`` of (..., 3) pixels."""
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:
        return _OD_TABLE[rgb]
    x = np.maximum(img_as_float64(rgb), 1e-6)
    return np.log(x) / _LOG_ADJUST


def separate_stains(rgb: np.ndarray, conversion: Optional[np.ndarray] = None) -> np.ndarray:
    """
    Stain amounts of (..., 3) RGB pixels (uint8, uint16 or float in [0, 1]), as
    ``skimage.color.separate_stains(rgb, conversion)``; default conversion: ``hed_from_rgb``.
    """
    conversion = stain_conversion() if conversion is None else conversion
    stains = _optical_density(rgb) @ conversion
    np.maximum(stains, 0, out=stains)
    return stains


def macenko_stain_matrix(
    rgb: np.ndarray,
    beta: float = 0.15,
    alpha: float = 1.0,
    max_pixels: int = 1_000_000,
    seed: int = 0,
) -> np.ndarray:
    """
    H&E stain vectors of an image by Macenko et al.'s method ("A method for normalizing histology
    slides for quantitative analysis", ISBI 2009): optical densities ``-ln(I / 255)`` of the
    pixels with OD of at least ``beta`` in every channel (tissue, not background), projected on the plane of their two main
    directions; the stains are the directions at the ``alpha`` and ``100 - alpha`` percentiles of
    the angle in that plane; haematoxylin is the one with the larger red OD.

    Args:
        rgb: (H, W, 3) or (P, 3) RGB pixels (uint8, or float in [0, 1]).
        max_pixels: estimate from at most this many randomly chosen tissue pixels.

    Returns:
        3 x 3 ``rgb_from_stain`` matrix (unit rows: haematoxylin, eosin, and their normalised
        cross product as the residual stain), for :func:`stain_conversion`.

    Raises:
        ValueError: fewer than 100 stained pixels (a blank image).
    """
    pixels = np.asarray(rgb).reshape(-1, 3)
    od = -np.log(np.maximum(img_as_float64(pixels), 1e-6))
    tissue = od[(od >= beta).all(axis=1)]
    if len(tissue) < 100:
        raise ValueError(f"only {len(tissue)} stained pixels: cannot estimate stain vectors")
    if len(tissue) > max_pixels:
        tissue = tissue[np.random.default_rng(seed).choice(len(tissue), max_pixels, replace=False)]
    _, vectors = np.linalg.eigh(np.cov(tissue, rowvar=False))
    plane = vectors[:, 1:3]  # the two largest eigenvalues' directions
    plane = plane * np.where(plane.sum(axis=0) < 0, -1, 1)  # point into positive OD
    proj = tissue @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100 - alpha])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    h, e = (v1, v2) if v1[0] > v2[0] else (v2, v1)
    h, e = h / np.linalg.norm(h), e / np.linalg.norm(e)
    residual = np.cross(h, e)
    residual = residual / np.linalg.norm(residual)
    return np.stack([h, e, residual])


def image_stain_matrix(rgb: np.ndarray, method: str = "ruifrok") -> np.ndarray:
    """The ``rgb_from_stain`` matrix of a method: fixed Ruifrok-Johnston, or estimated from ``rgb``."""
    if method == "ruifrok":
        return RUIFROK_JOHNSTON
    if method == "macenko":
        return macenko_stain_matrix(rgb)
    raise ValueError(f"stain method must be one of {STAIN_METHODS}, got {method!r}")
