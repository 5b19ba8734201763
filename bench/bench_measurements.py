#!/usr/bin/env python
"""
Per-nucleus measurements of many nuclei: d2_nucleus.measurements vs scikit-image regionprops.

Synthetic nuclei (``--nuclei``, default 100,000): random ellipses of 3-9 px radius, rotated, some
with holes, tiled in a grid of 20 x 20 px cells (touching neighbours allowed) over a synthetic
H&E-like RGB image. Both methods compute the same values: area, centroid, bbox, perimeter,
solidity, eccentricity, major/minor axis length, orientation, equivalent diameter, mean/std of
haematoxylin and eosin OD (colour deconvolution, Ruifrok-Johnston) and mean RGB.

* regionprops: ``skimage.measure.regionprops`` on the full label map of the nuclei, with
  ``intensity_image=rgb2hed(image)`` (and the RGB image for mean RGB), every property read;
* d2_nucleus: ``measure_nuclei`` on the box-local masks + offsets (``BoxMasks``) and the image.

Each method runs in a fresh subprocess that builds the same inputs, then records the wall time
of the measurements and the peak RSS (``ru_maxrss``) above the RSS reached once the inputs are
built. ``--canvas-scale 2`` spreads the same nuclei over an image twice as wide and high (4x the
pixels) to show that d2_nucleus's memory does not depend on the image size. The values of both
methods are compared (the script exits 1 if any differs by more than 1e-6).

    python bench/bench_measurements.py [--nuclei 100000] [--canvas-scale 1]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

CELL = 20
COLUMNS = (
    "area_px", "centroid_x", "centroid_y", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "perimeter_px",
    "solidity", "eccentricity", "major_axis_length_px", "minor_axis_length_px", "orientation",
    "equivalent_diameter_px", "hematoxylin_od_mean", "hematoxylin_od_std", "eosin_od_mean", "eosin_od_std",
    "red_mean", "green_mean", "blue_mean",
)  # fmt: skip


def make_templates(num: int = 400, seed: int = 0):
    from skimage.draw import ellipse

    rng = np.random.default_rng(seed)
    templates = []
    for _ in range(num):
        ry, rx = rng.uniform(3, 9, 2)
        size = 2 * int(np.ceil(max(ry, rx))) + 1
        m = np.zeros((size, size), bool)
        rr, cc = ellipse(size // 2, size // 2, ry, rx, shape=m.shape, rotation=rng.uniform(-np.pi, np.pi))
        m[rr, cc] = True
        if rng.random() < 0.2:  # a hole
            m[size // 2, size // 2] = False
        ys, xs = np.nonzero(m)
        templates.append(m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    return templates


def make_inputs(n: int, canvas_scale: int = 1, seed: int = 0):
    """Masks + offsets, the label map and an RGB image of n nuclei on a grid."""
    rng = np.random.default_rng(seed)
    templates = make_templates(seed=seed)
    per_row = int(np.ceil(np.sqrt(n)))
    cell = CELL * canvas_scale
    size = per_row * cell
    pick = rng.integers(0, len(templates), n)
    masks = [templates[i] for i in pick.tolist()]
    gy, gx = np.divmod(np.arange(n), per_row)
    y0 = gy * cell + rng.integers(0, 2, n)
    x0 = gx * cell + rng.integers(0, 2, n)
    return masks, x0, y0, size


def make_image(size: int, seed: int = 0) -> np.ndarray:
    """Pinkish background with random purple-ish texture (uint8 RGB), built in row blocks."""
    rng = np.random.default_rng(seed)
    image = np.empty((size, size, 3), np.uint8)
    base = np.array([220, 170, 200], np.int16)
    for r in range(0, size, 512):
        block = base + rng.integers(-80, 30, (min(512, size - r), size, 3), dtype=np.int16)
        image[r : r + 512] = np.clip(block, 0, 255)
    return image


def make_label_map(masks, x0, y0, size) -> np.ndarray:
    labels = np.zeros((size, size), np.int32)
    for i, (m, x, y) in enumerate(zip(masks, x0.tolist(), y0.tolist())):
        view = labels[y : y + m.shape[0], x : x + m.shape[1]]
        view[m] = i + 1
    return labels


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_one(method: str, n: int, canvas_scale: int, out_npz: str) -> dict:
    masks, x0, y0, size = make_inputs(n, canvas_scale)
    image = make_image(size)
    if method == "regionprops":
        from skimage.color import rgb2hed
        from skimage.measure import regionprops

        labels = make_label_map(masks, x0, y0, size)
        del masks
    else:
        from d2_nucleus.measurements import BoxMasks, measure_nuclei

    base = rss_mb()
    start = time.perf_counter()
    if method == "regionprops":
        hed = rgb2hed(image)
        cols = {c: np.empty(n) for c in COLUMNS}
        for p, q in zip(regionprops(labels, intensity_image=hed), regionprops(labels, intensity_image=image)):
            i = p.label - 1
            cols["area_px"][i] = p.area
            cols["centroid_y"][i], cols["centroid_x"][i] = p.centroid
            cols["bbox_y0"][i], cols["bbox_x0"][i], cols["bbox_y1"][i], cols["bbox_x1"][i] = p.bbox
            cols["perimeter_px"][i] = p.perimeter
            cols["solidity"][i] = p.solidity
            cols["eccentricity"][i] = p.eccentricity
            cols["major_axis_length_px"][i] = p.axis_major_length
            cols["minor_axis_length_px"][i] = p.axis_minor_length
            cols["orientation"][i] = p.orientation
            cols["equivalent_diameter_px"][i] = p.equivalent_diameter_area
            mean, std = p.intensity_mean, p.intensity_std
            cols["hematoxylin_od_mean"][i], cols["eosin_od_mean"][i] = mean[0], mean[1]
            cols["hematoxylin_od_std"][i], cols["eosin_od_std"][i] = std[0], std[1]
            cols["red_mean"][i], cols["green_mean"][i], cols["blue_mean"][i] = q.intensity_mean
    else:
        out = measure_nuclei(BoxMasks(masks, x0, y0), image)
        cols = {c: np.asarray(out[c], dtype=np.float64) for c in COLUMNS}
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.savez(out_npz, **cols)
    return {"method": method, "seconds": seconds, "peak_rss_above_inputs_mb": peak - base,
            "inputs_rss_mb": base, "image": f"{size}x{size}"}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nuclei", type=int, default=100_000)
    p.add_argument("--canvas-scale", type=int, default=1, help="cell size multiplier (image area x scale^2)")
    p.add_argument("--methods", default="regionprops,d2_nucleus")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.nuclei, args.canvas_scale, args.out)))
        return 0
    results, values = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            out = os.path.join(tmp, method + ".npz")
            cmd = [sys.executable, __file__, "--child", method, "--nuclei", str(args.nuclei),
                   "--canvas-scale", str(args.canvas_scale), "--out", out]
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
            results.append(res)
            values[method] = dict(np.load(out))
            print(json.dumps(res), flush=True)
    ok = True
    if len(values) == 2:
        a, b = values.values()
        diffs = {c: float(np.nanmax(np.abs(a[c] - b[c]))) for c in COLUMNS}
        worst = max(diffs, key=diffs.get)
        ok = diffs[worst] <= 1e-6
        t = {r["method"]: r for r in results}
        print(f"max |difference| over {len(COLUMNS)} columns: {diffs[worst]:.2e} ({worst})")
        if "regionprops" in t and "d2_nucleus" in t:
            print(f"speed-up: {t['regionprops']['seconds'] / t['d2_nucleus']['seconds']:.1f}x, "
                  f"peak RSS ratio: {t['d2_nucleus']['peak_rss_above_inputs_mb'] / t['regionprops']['peak_rss_above_inputs_mb']:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
