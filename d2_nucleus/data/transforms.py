# -*- coding: utf-8 -*-
"""Augmentations for H&E tiles: exact 90-degree rotations, stain (colour) jitter, and the test-time
resize relative to each image's native size."""
import numpy as np
from detectron2.data import transforms as T
from fvcore.transforms.transform import NoOpTransform, Transform

__all__ = ["Rot90Transform", "RandomRot90", "RelativeResize", "StainJitterTransform", "RandomStainJitter"]

# Ruifrok & Johnston stain matrix, rows = haematoxylin, eosin, DAB optical densities in RGB order.
_RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float32
)
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)


class Rot90Transform(Transform):
    """Rotate by ``k`` x 90 degrees counter-clockwise (pixel-exact, no interpolation)."""

    def __init__(self, h: int, w: int, k: int):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(img, self.k, axes=(0, 1)))

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        # Pixel-edge coordinates: a point (x, y) in a w x h image.
        x, y = coords[:, 0].copy(), coords[:, 1].copy()
        k = self.k % 4
        if k == 1:  # counter-clockwise: new image is w x h (height w)
            coords[:, 0], coords[:, 1] = y, self.w - x
        elif k == 2:
            coords[:, 0], coords[:, 1] = self.w - x, self.h - y
        elif k == 3:
            coords[:, 0], coords[:, 1] = self.h - y, x
        return coords

    def inverse(self) -> Transform:
        k = self.k % 4
        h, w = (self.w, self.h) if k % 2 else (self.h, self.w)
        return Rot90Transform(h, w, (4 - k) % 4)


class RandomRot90(T.Augmentation):
    """Rotate by 0, 90, 180 or 270 degrees, uniformly."""

    def get_transform(self, image):
        k = int(np.random.randint(4))
        if k == 0:
            return NoOpTransform()
        h, w = image.shape[:2]
        return Rot90Transform(h, w, k)


class StainJitterTransform(Transform):
    """
    Haematoxylin-eosin-DAB colour augmentation (Tellez et al., 2018): the image is converted to
    stain concentrations by colour deconvolution, each stain is scaled by ``alpha`` and shifted by
    ``beta``, and the result is converted back.
    """

    def __init__(self, alpha: np.ndarray, beta: np.ndarray, image_format: str = "BGR"):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        dtype = img.dtype
        rgb = img[..., ::-1] if self.image_format == "BGR" else img
        od = -np.log(np.maximum(rgb.astype(np.float32), 1.0) / 255.0)
        hed = od.reshape(-1, 3) @ _HED_FROM_RGB
        hed = hed * self.alpha + self.beta
        od = np.maximum(hed @ _RGB_FROM_HED, 0.0)
        out = (255.0 * np.exp(-od)).reshape(rgb.shape)
        out = out[..., ::-1] if self.image_format == "BGR" else out
        if dtype == np.uint8:
            return np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return out.astype(dtype)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> Transform:
        return NoOpTransform()


class RandomStainJitter(T.Augmentation):
    def __init__(self, sigma_scale: float = 0.05, sigma_shift: float = 0.05, image_format="BGR"):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        if image.ndim != 3 or image.shape[2] != 3 or self.image_format not in ("BGR", "RGB"):
            return NoOpTransform()
        alpha = np.random.uniform(1 - self.sigma_scale, 1 + self.sigma_scale, 3).astype(np.float32)
        beta = np.random.uniform(-self.sigma_shift, self.sigma_shift, 3).astype(np.float32)
        return StainJitterTransform(alpha, beta, self.image_format)


class RelativeResize(T.Augmentation):
    """
    Resize by a fixed factor of the image's own size (``INPUT.TEST_SCALE``), where Detectron2's
    ``ResizeShortestEdge`` resizes to a fixed short-edge length: an upscale for small nuclei must
    not turn into a downscale on a larger image or a slide tile. The longer edge is kept within
    ``max_size``. Bilinear, as ``ResizeShortestEdge``: on a 1000 x 1000 image ``RelativeResize(1.25)``
    gives exactly ``ResizeShortestEdge(1250)``'s pixels.
    """

    def __init__(self, scale: float, max_size: int = 0):
        super().__init__()
        if not scale > 0:
            raise ValueError(f"INPUT.TEST_SCALE must be positive, got {scale}")
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        scale = self.scale
        if self.max_size and max(h, w) * scale > self.max_size:
            scale = self.max_size / max(h, w)
        newh, neww = int(h * scale + 0.5), int(w * scale + 0.5)  # rounded as ResizeShortestEdge
        if (newh, neww) == (h, w):
            return NoOpTransform()
        return T.ResizeTransform(h, w, newh, neww)
