# -*- coding: utf-8 -*-
"""Overlays: instance contours drawn on the image, with the number of instances in a corner."""
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from ..utils.file_io import atomic_write

__all__ = ["draw_overlay", "write_overlay"]


def _colors(n: int, seed: int = 0) -> np.ndarray:
    """n + 1 bright colours (RGB uint8); index 0 is unused (background)."""
    rng = np.random.default_rng(seed)
    hsv = np.stack(
        [rng.integers(0, 180, n + 1), rng.integers(150, 256, n + 1), np.full(n + 1, 255)], axis=1
    ).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def draw_overlay(image_rgb: np.ndarray, label_map: np.ndarray, count: int = None,
                 label_colors: Optional[np.ndarray] = None,
                 legend: Optional[Sequence[Tuple[str, Sequence[int]]]] = None) -> np.ndarray:
    """
    Draw the one-pixel outline of every instance of ``label_map`` (H x W, 0 = background) on a
    copy of ``image_rgb`` (H x W x 3 uint8), each instance in its own colour (or
    ``label_colors[label]``, an (L + 1) x 3 RGB array, e.g. its nucleus type's colour), and write
    "<count> nuclei" in the top-left corner (default: the number of labels present), followed by
    the ``legend`` lines (text, RGB colour swatch). O(H * W) whatever the number of instances.
    """
    if image_rgb.shape[:2] != label_map.shape:
        raise ValueError(f"image {image_rgb.shape[:2]} and label map {label_map.shape} differ in size")
    out = np.ascontiguousarray(image_rgb[:, :, :3], dtype=np.uint8).copy()
    labels = label_map
    # A pixel is on an outline if a 4-neighbour has another label (the image border counts).
    padded = np.pad(labels, 1, mode="constant", constant_values=0)
    edge = np.zeros(labels.shape, bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= padded[dy : dy + labels.shape[0], dx : dx + labels.shape[1]] != labels
    edge &= labels > 0
    max_label = int(labels.max()) if labels.size else 0
    colors = _colors(max_label) if label_colors is None else np.asarray(label_colors, np.uint8)
    if len(colors) <= max_label:
        raise ValueError(f"{len(colors)} label colours for labels up to {max_label}")
    out[edge] = colors[labels[edge]]
    if count is None:
        count = len(np.unique(labels[labels > 0]))
    lines = [(f"{count} nuclei", None)] + [(str(t), c) for t, c in (legend or [])]
    scale = max(0.4, min(out.shape[:2]) / 800)
    thickness = max(1, int(round(scale * 2)))
    sizes = [cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness) for t, _ in lines]
    th, base = sizes[0][0][1], sizes[0][1]
    step = th + base + 6
    swatch = th + base if legend else 0
    width = max(w for (w, _), _ in sizes) + 12 + swatch
    cv2.rectangle(out, (0, 0), (width, step * len(lines) + 4), (0, 0, 0), -1)
    for i, (text, color) in enumerate(lines):
        y = i * step + th + 4
        x = 4
        if color is not None:
            cv2.rectangle(out, (x, y - th), (x + swatch - 4, y + base - 2), tuple(int(v) for v in color), -1)
            x += swatch
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out


def write_overlay(overlay_rgb: np.ndarray, path: str, overwrite: bool = False) -> None:
    """Write an RGB overlay as PNG (or the format of ``path``'s extension) atomically."""
    ext = "." + path.rsplit(".", 1)[-1] if "." in path else ".png"
    ok, buffer = cv2.imencode(ext, cv2.cvtColor(overlay_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"{path}: image encoding failed")
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(buffer.tobytes())
