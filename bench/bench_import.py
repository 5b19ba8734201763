#!/usr/bin/env python
"""
Benchmark: each annotation importer (tools/import_annotations.py's library call) on realistic sizes.

Inputs, built once in a temporary folder:
  synthetic  N images of SIZE x SIZE px with ~NUCLEI nuclei each (d2_nucleus.data.synthetic), as
             per-nucleus mask PNGs (the raw layout), 16-bit label TIFFs, QuPath GeoJSON (the
             project's exporter), Aperio XML and COCO polygons (the same outlines), COCO RLE
  real       the 11 MoNuSeg Aperio XML files and their images, when --shared (or
             $D2_NUCLEUS_SHARED_DATA) is given

Times, in one process, each import into a fresh prepared layout (reading, rasterising or
resampling, RLE encoding, writing images and JSON), at the source resolution (factor 1) and at
half of it (factor 0.5); the same-run baseline is masks_to_coco (tools/prepare_data.py's
conversion, one process) on the same nuclei as mask PNGs. The first call's one-off import of
torch/Detectron2 (the image reader) is made before timing.

Usage:
  python bench/bench_import.py [--images 4] [--size 1000] [--nuclei 1000] [--shared DIR] [--repeat 2]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import cv2
import numpy as np
import tifffile

from d2_nucleus.data.importing import import_annotations
from d2_nucleus.data.mask2coco import masks_to_coco
from d2_nucleus.data.raw import scan_train
from d2_nucleus.data.synthetic import generate_dataset
from d2_nucleus.export.geojson import rles_to_geojson
from d2_nucleus.utils import rle as rle_util


def _labels(image_record):
    labels = None
    for k, path in enumerate(image_record.mask_files, start=1):
        fg = cv2.imread(path, cv2.IMREAD_GRAYSCALE) > 0
        labels = np.zeros(fg.shape, np.int32) if labels is None else labels
        labels[fg] = k
    return labels


def build_inputs(root, n_images, size, nuclei):
    raw = os.path.join(root, "raw")
    generate_dataset(raw, num_train=n_images, num_test=1, image_size=size, nuclei_per_image=nuclei,
                     max_diameter=30, seed=0)
    train = scan_train(raw)
    dirs = {k: os.path.join(root, k) for k in ("label-image", "geojson", "aperio-xml", "coco-poly", "coco-rle")}
    os.makedirs(os.path.join(dirs["label-image"], "images"))
    os.makedirs(os.path.join(dirs["label-image"], "masks"))
    for k in ("geojson", "aperio-xml", "coco-poly", "coco-rle"):
        os.makedirs(dirs[k])
    coco = {"poly": {"images": [], "annotations": [], "categories": [{"id": 1, "name": "nucleus"}]}}
    coco["rle"] = json.loads(json.dumps(coco["poly"]))
    for i, rec in enumerate(train.images, start=1):
        name = rec.image_id
        labels = _labels(rec)
        h, w = labels.shape
        shutil.copyfile(rec.image_file, os.path.join(dirs["label-image"], "images", name + ".png"))
        tifffile.imwrite(os.path.join(dirs["label-image"], "masks", name + ".tif"), labels.astype(np.uint16))
        rles = []
        for k in range(1, labels.max() + 1):
            r = rle_util.encode((labels == k).astype(np.uint8))
            r["counts"] = r["counts"].decode("ascii")
            rles.append(r)
        for k in ("geojson", "aperio-xml", "coco-poly", "coco-rle"):
            shutil.copyfile(rec.image_file, os.path.join(dirs[k], name + ".png"))
        collection = rles_to_geojson(rles)
        with open(os.path.join(dirs["geojson"], name + ".geojson"), "w") as f:
            json.dump(collection, f)
        rings = [f["geometry"]["coordinates"][0] for f in collection["features"]]
        regions = "".join(
            f'<Region Id="{j}" Type="0"><Vertices>'
            + "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in ring[:-1]) + "</Vertices></Region>"
            for j, ring in enumerate(rings, start=1))
        with open(os.path.join(dirs["aperio-xml"], name + ".xml"), "w") as f:
            f.write(f'<Annotations MicronsPerPixel="0.250000"><Annotation Id="1"><Regions>{regions}'
                    "</Regions></Annotation></Annotations>")
        for kind in ("poly", "rle"):
            coco[kind]["images"].append({"id": i, "file_name": name + ".png", "height": h, "width": w})
        for j, (ring, r) in enumerate(zip(rings, rles)):
            base = {"id": len(coco["poly"]["annotations"]) + 1, "image_id": i, "category_id": 1, "iscrowd": 0}
            coco["poly"]["annotations"].append({**base, "segmentation": [list(np.ravel(ring[:-1]))]})
            coco["rle"]["annotations"].append({**base, "segmentation": r})
    for kind in ("poly", "rle"):
        with open(os.path.join(dirs[f"coco-{kind}"], "coco.json"), "w") as f:
            json.dump(coco[kind], f)
    return train, dirs


def _time(fn, repeat):
    best = None
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t) if best is not None else time.perf_counter() - t
    return best


def _import(fmt, inputs, out, target, images=None):
    def run():
        shutil.rmtree(out, ignore_errors=True)
        import_annotations(fmt, inputs, out, target_mpp=target, images=images, default_mpp=0.25, ratio=0.0,
                           tolerance=0.1, progress=False)  # the CLI's default (SLIDE.MPP_TOLERANCE)
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--size", type=int, default=1000)
    p.add_argument("--nuclei", type=int, default=1000)
    p.add_argument("--shared", default=os.environ.get("D2_NUCLEUS_SHARED_DATA"))
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args(argv)
    from d2_nucleus.data.image_io import read_image  # noqa: F401  (torch/Detectron2, once, untimed)

    root = tempfile.mkdtemp(prefix="bench_import-")
    try:
        t = time.perf_counter()
        train, dirs = build_inputs(root, args.images, args.size, args.nuclei)
        n = train.num_masks
        print(f"inputs: {args.images} images {args.size}x{args.size}, {n} nuclei ({time.perf_counter() - t:.1f} s to build)")
        base = _time(lambda: masks_to_coco(train.images, workers=1, progress=False), args.repeat)
        print(f"{'what':38s} {'s':>7s} {'ms/image':>9s} {'us/nucleus':>10s} {'vs masks_to_coco':>16s}")
        print(f"{'baseline: masks_to_coco, mask PNGs':38s} {base:7.2f} {1e3 * base / args.images:9.1f} "
              f"{1e6 * base / n:10.1f} {1.0:16.2f}")
        runs = [("label-image", [dirs["label-image"]], None), ("geojson", [dirs["geojson"]], None),
                ("aperio-xml", [dirs["aperio-xml"]], None),
                ("coco", [os.path.join(dirs["coco-poly"], "coco.json")], "polygons"),
                ("coco", [os.path.join(dirs["coco-rle"], "coco.json")], "RLE")]
        out = os.path.join(root, "out")
        for fmt, inputs, note in runs:
            for target in (0.25, 0.5):
                s = _time(_import(fmt, inputs, out, target), args.repeat)
                what = f"{fmt}{' ' + note if note else ''}, factor {0.25 / target:g}"
                print(f"{what:38s} {s:7.2f} {1e3 * s / args.images:9.1f} {1e6 * s / n:10.1f} {s / base:16.2f}")
        if args.shared:
            xml = os.path.join(args.shared, "monuseg_xml")
            images = os.path.join(args.shared, "dataset", "train")
            ids = sorted(f[:-4] for f in os.listdir(xml) if f.endswith(".xml"))
            real = [r for r in scan_train(os.path.join(args.shared, "dataset")).images if r.image_id in ids]
            n = sum(len(r.mask_files) for r in real)
            base = _time(lambda: masks_to_coco(real, workers=1, progress=False), args.repeat)
            print(f"real: {len(ids)} MoNuSeg images, {n} mask PNGs / Aperio XML regions")
            print(f"{'baseline: masks_to_coco, mask PNGs':38s} {base:7.2f} {1e3 * base / len(ids):9.1f} "
                  f"{1e6 * base / n:10.1f} {1.0:16.2f}")
            for target in (0.25, 0.5):
                s = _time(_import("aperio-xml", [xml], out, target, images), args.repeat)
                what = f"aperio-xml (real), factor {'1' if target == 0.25 else '~0.5'}"
                print(f"{what:38s} {s:7.2f} {1e3 * s / len(ids):9.1f} {1e6 * s / n:10.1f} {s / base:16.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
