# -*- coding: utf-8 -*-
"""
Deterministic synthetic H&E nuclei images in the raw layout users download::

    <out>/train/<ID>/images/<ID>.png
    <out>/train/<ID>/masks/mask_NNNN.png      one nucleus each, values {0, 255}
    <out>/test/<ID>.png
    <out>/test_img_ids.json                   [{"file_name", "id", "height", "width"}, ...]

Images are rendered with the Beer-Lambert model of haematoxylin and eosin (Ruifrok & Johnston's
stain vectors): pink eosin-stained tissue with low-frequency texture, and purple-blue
haematoxylin-stained nuclei with chromatin texture and a soft edge. Nuclei are ellipses of 8-40 px
diameter that may touch but never overlap; every mask is one connected component.
Used by the unit tests and by ``make demo``.
"""
import json
import os
import shutil
import tempfile
from typing import Dict, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = ["render_nuclei_image", "generate_dataset"]

# Ruifrok & Johnston optical-density vectors (R, G, B) of haematoxylin and eosin.
_H_OD = np.array([0.650, 0.704, 0.286], dtype=np.float32)
_E_OD = np.array([0.072, 0.990, 0.105], dtype=np.float32)


def _smooth_noise(rng, h, w, scale):
    """Low-frequency noise in [0, 1]: Gaussian-blurred white noise, rescaled."""
    n = rng.standard_normal((h, w)).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigmaX=scale, sigmaY=scale)
    n -= n.min()
    return n / max(float(n.max()), 1e-6)


def render_nuclei_image(
    rng: np.random.Generator,
    height: int,
    width: int,
    num_nuclei: int,
    min_diameter: float = 8,
    max_diameter: float = 40,
    max_tries: int = 200,
) -> Tuple[np.ndarray, np.ndarray]:
    """
    Render one image.

    Returns:
        image (H, W, 3) uint8 RGB, labels (H, W) int32 with 0 = background and 1..num_nuclei.

    Raises:
        ValueError: if ``num_nuclei`` nuclei do not fit into the image.
    """
    if not 1 <= min_diameter <= max_diameter:
        raise ValueError(f"need 1 <= min_diameter <= max_diameter, got {min_diameter}, {max_diameter}")
    labels = np.zeros((height, width), np.int32)
    # Sizes follow a log-uniform law: many small nuclei, a few large ones.
    placed, tries = 0, 0
    while placed < num_nuclei:
        if tries > max_tries * max(num_nuclei, 1):
            raise ValueError(
                f"could only place {placed} of {num_nuclei} non-overlapping nuclei in a "
                f"{height}x{width} image; ask for fewer or smaller nuclei"
            )
        tries += 1
        d = float(np.exp(rng.uniform(np.log(min_diameter), np.log(max_diameter))))
        aspect = rng.uniform(0.6, 1.0)
        axes = (max(d / 2, 1.0), max(d * aspect / 2, 1.0))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        angle = rng.uniform(0, 180)
        r = int(np.ceil(axes[0])) + 2
        x0, y0 = max(int(cx) - r, 0), max(int(cy) - r, 0)
        x1, y1 = min(int(cx) + r + 1, width), min(int(cy) + r + 1, height)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        local = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.ellipse(local, ((cx - x0, cy - y0), (2 * axes[0], 2 * axes[1]), angle), 1, -1)
        want = local.astype(bool)
        area = int(want.sum())
        if area < 0.5 * np.pi * (min_diameter / 2) ** 2 * 0.6:
            continue  # mostly outside the image
        region = labels[y0:y1, x0:x1]
        taken = want & (region > 0)
        # Allow a small overlap, trimmed away, so that neighbours touch without overlapping.
        if taken.sum() > 0.15 * area:
            continue
        keep = want & ~taken
        n, comp = cv2.connectedComponents(keep.astype(np.uint8), connectivity=4)
        if n > 2:  # trimming split it: keep the largest piece
            sizes = np.bincount(comp.ravel())[1:]
            keep = comp == (1 + int(np.argmax(sizes)))
        if keep.sum() < 0.7 * area:
            continue
        placed += 1
        region[keep] = placed

    # --- Beer-Lambert rendering -------------------------------------------------------------
    fg = labels > 0
    tissue = _smooth_noise(rng, height, width, scale=max(height, width) / 16)
    fibres = _smooth_noise(rng, height, width, scale=2.0)
    e_conc = 0.25 + 0.35 * tissue + 0.15 * fibres
    h_conc = 0.05 + 0.05 * tissue
    # Per-nucleus stain intensity, chromatin texture and a darker rim.
    per_nucleus = rng.uniform(0.6, 1.2, size=placed + 1).astype(np.float32)
    chromatin = _smooth_noise(rng, height, width, scale=1.2)
    dist = cv2.distanceTransform(fg.astype(np.uint8), cv2.DIST_L2, 3)
    rim = np.exp(-dist / 2.0)
    h_nuc = per_nucleus[labels] * (0.75 + 0.35 * chromatin + 0.25 * rim)
    h_conc = np.where(fg, h_nuc, h_conc)
    e_conc = np.where(fg, 0.15 * e_conc, e_conc)
    # Soft edges: blur the concentrations, not the labels.
    h_conc = cv2.GaussianBlur(h_conc.astype(np.float32), (0, 0), 0.8)
    od = h_conc[..., None] * _H_OD + e_conc[..., None] * _E_OD
    rgb = 255.0 * np.exp(-od) + rng.normal(0, 3.0, size=(height, width, 3))
    image = np.clip(rgb, 0, 255).astype(np.uint8)
    return image, labels


def _imwrite(path, image):
    if not cv2.imwrite(path, image):
        raise OSError(f"could not write {path}")


def generate_dataset(
    out_dir: str,
    num_train: int = 4,
    num_test: int = 2,
    image_size: Union[int, Sequence[int]] = 256,
    nuclei_per_image: Union[int, Sequence[int]] = (120, 200),
    min_diameter: float = 8,
    max_diameter: float = 40,
    seed: int = 0,
    overwrite: bool = False,
) -> Dict:
    """
    Write a synthetic raw dataset to ``out_dir`` (see the module docstring for the layout).

    Args:
        image_size: int (square) or (height, width).
        nuclei_per_image: exact count, or an inclusive (low, high) range drawn per image.
        seed: same seed, same bytes on any machine.
        overwrite: replace an existing ``out_dir``; without it an existing non-empty folder is an error.

    Returns:
        dict with "train" and "test" image ids and "nuclei" (count per training image).
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if os.path.exists(out_dir) and os.listdir(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty (pass overwrite=True to replace it)")
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".synthetic-", dir=parent)
    try:
        rng = np.random.default_rng(seed)
        summary = {"train": [], "test": [], "nuclei": {}}
        test_ids = []
        for split, count in (("train", num_train), ("test", num_test)):
            for i in range(count):
                image_id = f"synthetic-{split}-{i:03d}"
                if isinstance(nuclei_per_image, int):
                    n = nuclei_per_image
                else:
                    n = int(rng.integers(nuclei_per_image[0], nuclei_per_image[1] + 1))
                img_rng = np.random.default_rng([seed, 0 if split == "train" else 1, i])
                image, labels = render_nuclei_image(img_rng, h, w, n, min_diameter, max_diameter)
                bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
                if split == "train":
                    img_dir = os.path.join(tmp, "train", image_id, "images")
                    mask_dir = os.path.join(tmp, "train", image_id, "masks")
                    os.makedirs(img_dir)
                    os.makedirs(mask_dir)
                    _imwrite(os.path.join(img_dir, image_id + ".png"), bgr)
                    for k in range(1, n + 1):
                        mask = (labels == k).astype(np.uint8) * 255
                        _imwrite(os.path.join(mask_dir, f"mask_{k:04d}.png"), mask)
                    summary["nuclei"][image_id] = n
                else:
                    os.makedirs(os.path.join(tmp, "test"), exist_ok=True)
                    _imwrite(os.path.join(tmp, "test", image_id + ".png"), bgr)
                    test_ids.append(
                        {"file_name": image_id + ".png", "id": i + 1, "height": h, "width": w}
                    )
                summary[split].append(image_id)
        with open(os.path.join(tmp, "test_img_ids.json"), "w") as f:
            json.dump(test_ids, f)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
