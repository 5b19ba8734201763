# -*- coding: utf-8 -*-
"""
Colour measurements of stacks of masks: mean / standard deviation (population, ddof = 0) of the
haematoxylin and eosin amounts (:mod:`.stain`) and mean R, G, B over each mask's pixels, as
regionprops' ``intensity_mean`` / ``intensity_std`` on ``rgb2hed(image)`` and on the image.
Only the masks' own pixels are read from the image.
"""
from typing import Dict

import numpy as np

from .stain import separate_stains

__all__ = ["stack_intensity"]


def stack_intensity(
    s: np.ndarray, x0: np.ndarray, y0: np.ndarray, image: np.ndarray, conversion: np.ndarray
) -> Dict[str, np.ndarray]:
    """
    Args:
        s: (k, H, W) bool stack; ``s[j, 1 + r, 1 + c]`` is image pixel (y0[j] + r, x0[j] + c).
        image: (height, width, 3) RGB image.
        conversion: optical density -> stain matrix (:func:`.stain.stain_conversion`).

    Returns:
        dict of (k,) float64 arrays ``hematoxylin_od_mean``, ``hematoxylin_od_std``,
        ``eosin_od_mean``, ``eosin_od_std``, ``red_mean``, ``green_mean``, ``blue_mean``
        (NaN for empty masks).

    Raises:
        ValueError: a mask pixel lies outside the image.
    """
    k = len(s)
    j, r, c = np.nonzero(s)
    ys = y0[j] + r - 1
    xs = x0[j] + c - 1
    height, width = image.shape[:2]
    if len(j) and (ys.min() < 0 or xs.min() < 0 or ys.max() >= height or xs.max() >= width):
        raise ValueError(f"a nucleus mask reaches outside the {height} x {width} image")
    rgb = image[ys, xs]  # (P, 3)
    stains = separate_stains(rgb, conversion)
    n = np.bincount(j, minlength=k).astype(np.float64)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for ch, name in ((0, "hematoxylin"), (1, "eosin")):
            x = stains[:, ch]
            mean = np.bincount(j, weights=x, minlength=k) / n
            var = np.bincount(j, weights=(x - mean[j]) ** 2, minlength=k) / n
            out[f"{name}_od_mean"] = mean
            out[f"{name}_od_std"] = np.sqrt(var)
        for ch, name in enumerate(("red", "green", "blue")):
            out[f"{name}_mean"] = np.bincount(j, weights=rgb[:, ch].astype(np.float64), minlength=k) / n
    return out
