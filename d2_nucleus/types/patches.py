# -*- coding: utf-8 -*-
"""
Image patches around nuclei, the input of a type classifier's convolutional branch (feature kind
``"patch"``): a square of ``patch_um`` micrometres centred on each nucleus' centroid, resampled to
``patch_px`` x ``patch_px`` pixels, so that a classifier sees the same physical size whatever the
image's resolution (CRCHisto, 0.55 um/px: 32 px = 17.6 um, the nucleus and its neighbourhood, as
Sirinukunwattana et al.'s patch classifiers do). Beyond the image's border the image is mirrored.
"""
import numpy as np

__all__ = ["PATCH_PX", "PATCH_UM", "extract_patches"]

PATCH_PX = 32
PATCH_UM = 17.6


def extract_patches(image_rgb: np.ndarray, xy: np.ndarray, mpp: float, patch_px: int = PATCH_PX,
                    patch_um: float = PATCH_UM) -> np.ndarray:
    """
    (N, patch_px, patch_px, 3) uint8 patches of ``image_rgb`` (H x W x 3 uint8, ``mpp`` um/px)
    centred on ``xy`` (N x 2 pixel indices; NaN centres give empty patches). The image is resized
    once to the patches' resolution (``patch_um / patch_px`` um/px), then cut.
    """
    import cv2

    if not (mpp and mpp > 0):
        raise ValueError(f"image patches of a size in micrometres need the images' resolution (mpp), got {mpp}")
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    out = np.zeros((len(xy), patch_px, patch_px, 3), np.uint8)
    if not len(xy):
        return out
    scale = float(mpp) / (patch_um / patch_px)  # image px -> patch px
    image = np.ascontiguousarray(image_rgb[:, :, :3])
    if abs(scale - 1) > 1e-6:
        size = (max(1, int(round(image.shape[1] * scale))), max(1, int(round(image.shape[0] * scale))))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    half = patch_px // 2
    padded = cv2.copyMakeBorder(image, patch_px, patch_px, patch_px, patch_px, cv2.BORDER_REFLECT_101)
    # pixel-index centre c in the original -> (c + 0.5) * scale - 0.5 in the resized image
    centres = (xy + 0.5) * scale - 0.5
    ok = np.isfinite(centres).all(axis=1)
    cx = np.round(np.nan_to_num(centres[:, 0])).astype(np.int64) + patch_px
    cy = np.round(np.nan_to_num(centres[:, 1])).astype(np.int64) + patch_px
    cx = np.clip(cx, half, padded.shape[1] - (patch_px - half))
    cy = np.clip(cy, half, padded.shape[0] - (patch_px - half))
    for i in np.flatnonzero(ok):
        out[i] = padded[cy[i] - half : cy[i] - half + patch_px, cx[i] - half : cx[i] - half + patch_px]
    return out
