#!/usr/bin/env python
"""
GeoJSON export of many nuclei: the pixel-edge tracer (``mask_to_geometry``, issue 27) vs the
previous pixel-centre tracer (``cv2.findContours`` through boundary-pixel centres, largest part
only; kept below, verbatim, as the baseline).

Synthetic nuclei (``--nuclei``, default 1000) of ``render_nuclei_image`` (the synthetic dataset's
ellipses with texture) as COCO RLEs of a 1024 x 1024 image. Timed, best of ``--repeats``:

* the tracer alone on each nucleus' box-local mask;
* the whole export of one image as ``tools/predict.py --geojson-dir`` does it: RLE -> box mask ->
  geometry -> Feature (``rles_to_geojson``), then ``json.dumps``.

Also reported: vertices per nucleus, the polygon area / pixel count ratio (shapely) and invalid
polygons, for both tracers.

    python bench/bench_geojson.py [--nuclei 1000] [--repeats 5]
"""
import argparse
import json
import time

import cv2
import numpy as np


def old_mask_to_polygon(mask, x0=0, y0=0):
    """The tracer before issue 27 (d2_nucleus/export/geojson.py at 6f50b2c), for comparison."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        raise ValueError("empty mask has no polygon")
    contour = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))[:, 0, :]
    if len(contour) >= 3 and cv2.contourArea(contour) > 0:
        ring = (contour + [x0 + 0.5, y0 + 0.5]).tolist()
    else:
        xa, ya = contour.min(axis=0) + [x0, y0]
        xb, yb = contour.max(axis=0) + [x0 + 1, y0 + 1]
        ring = [[xa, ya], [xb, ya], [xb, yb], [xa, yb]]
    ring = [[float(x), float(y)] for x, y in ring]
    return {"type": "Polygon", "coordinates": [ring + [ring[0]]]}


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nuclei", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    import pycocotools.mask as mask_util
    import shapely
    from shapely.geometry import shape

    import d2_nucleus.export.geojson as geojson
    from d2_nucleus.data.synthetic import render_nuclei_image
    from d2_nucleus.utils.rle import to_box_mask

    _, labels = render_nuclei_image(np.random.default_rng(0), 1024, 1024, args.nuclei)
    n = int(labels.max())
    rles = [mask_util.encode(np.asfortranarray((labels == k).astype(np.uint8))) for k in range(1, n + 1)]
    for r in rles:
        r["counts"] = r["counts"].decode()
    crops = [to_box_mask(r) for r in rles]
    pixels = np.array([c[0].sum() for c in crops])
    print(f"{n} nuclei, {pixels.mean():.0f} px each on average")

    new_tracer = geojson.mask_to_geometry
    results = {}
    for name, tracer in (("old (pixel centres)", old_mask_to_polygon), ("new (pixel edges)", new_tracer)):
        trace = best_of(lambda: [tracer(*c) for c in crops], args.repeats)

        def export():
            geojson.mask_to_geometry = tracer  # rles_to_geojson looks the tracer up at call time
            try:
                return json.dumps(geojson.rles_to_geojson(rles, np.ones(n)), separators=(",", ":"))
            finally:
                geojson.mask_to_geometry = new_tracer

        whole = best_of(export, args.repeats)
        geoms = [tracer(*c) for c in crops]
        shapes = [shape(g) for g in geoms]
        ratio = np.array([s.area for s in shapes]) / pixels
        vertices = np.mean([len(shapely.get_coordinates(s)) for s in shapes])
        invalid = sum(not s.is_valid for s in shapes)
        results[name] = (trace, whole)
        print(f"{name}: tracer {1e6 * trace / n:.1f} us/nucleus ({trace * 1e3:.1f} ms), "
              f"export + json.dumps {whole * 1e3:.1f} ms ({len(export()) / 1e6:.2f} MB), "
              f"{vertices:.1f} vertices/nucleus, area/pixels median {np.median(ratio):.3f} "
              f"min {ratio.min():.3f} max {ratio.max():.3f}, invalid {invalid}")
    (t_old, w_old), (t_new, w_new) = results.values()
    print(f"new / old: tracer {t_new / t_old:.2f}x, whole export {w_new / w_old:.2f}x")


if __name__ == "__main__":
    main()
