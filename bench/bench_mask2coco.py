#!/usr/bin/env python
"""
Benchmark: per-nucleus mask PNGs -> COCO annotations on the real raw dataset.

Times, on the same masks in the same run:
  seed      the seed's mask2coco.py method, one process: for each mask PNG, cv2.imread (grayscale),
            imantics.Mask(mask).polygons() -> segmentation list, bbox from the polygons
  ours      d2_nucleus.data.mask2coco.masks_to_coco, default RLE format (pixel-exact), all cores;
            also in one process, and the polygon format on all cores; with the standard zlib and,
            when the zlib-ng package is installed, with zlib-ng (what the reader uses by default then)
  floors    decoding every mask PNG with OpenCV (libpng), one process; and inflating the zlib
            stream of every PNG (the floor of our reader, which skips libpng's full unfiltering)

Usage:
  python bench/bench_mask2coco.py [--raw RAW] [--workers N] [--images N] [--repeat R]

RAW defaults to $D2_NUCLEUS_RAW_DATA, then ../shared/data/dataset beside the repository.
"""
import argparse
import os
import platform
import resource
import struct
import sys
import time
import zlib

import cv2

from d2_nucleus.data import mask_io
from d2_nucleus.data.mask2coco import default_workers, masks_to_coco
from d2_nucleus.data.raw import scan_train


def _default_raw():
    env = os.environ.get("D2_NUCLEUS_RAW_DATA")
    if env:
        return env
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(os.path.dirname(repo), "shared", "data", "dataset")


def seed_method(mask_files):
    """What the seed's mask2coco.py does for each mask."""
    import imantics

    out = []
    for path in mask_files:
        mask = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        polygons = imantics.Mask(mask).polygons()
        out.append((polygons.segmentation, polygons.bbox().bbox()))
    return out


def decode_opencv(mask_files):
    for path in mask_files:
        cv2.imread(path, cv2.IMREAD_GRAYSCALE)


def inflate_only(mask_files, inflater=zlib):
    for path in mask_files:
        with open(path, "rb") as f:
            data = f.read()
        pos, idat = 8, []
        while pos + 12 <= len(data):
            (n,) = struct.unpack_from(">I", data, pos)
            if data[pos + 4 : pos + 8] == b"IDAT":
                idat.append(data[pos + 8 : pos + 8 + n])
            pos += 12 + n
        inflater.decompress(b"".join(idat), bufsize=1 << 20)


def with_inflater(inflater, fn):
    """Run ``fn`` with the mask reader using ``inflater`` (forked workers inherit it)."""

    def run():
        saved, mask_io._zlib = mask_io._zlib, inflater
        try:
            return fn()
        finally:
            mask_io._zlib = saved

    return run


def _cpu():
    """CPU seconds of this process and its finished children (the worker pools)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, repeat):
    """Best wall time of ``repeat`` runs, and the CPU time of that run."""
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        c0, t0 = _cpu(), time.perf_counter()
        fn()
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        best = min(best, (wall, cpu))
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw", default=_default_raw(), help="raw dataset folder")
    p.add_argument("--workers", type=int, default=None, help="processes for 'ours' (default: all cores)")
    p.add_argument("--images", type=int, default=None, help="only the first N images (default: all)")
    p.add_argument("--repeat", type=int, default=1, help="best of R runs for each method (default 1)")
    args = p.parse_args(argv)
    if not os.path.isdir(args.raw):
        print(f"bench_mask2coco: raw dataset {args.raw} not found (set D2_NUCLEUS_RAW_DATA or --raw)", file=sys.stderr)
        return 1
    images = scan_train(args.raw).images[: args.images]
    masks = [m for r in images for m in r.mask_files]
    workers = args.workers or default_workers()
    for path in masks:  # warm the page cache so no method pays for the disk
        with open(path, "rb") as f:
            f.read()
    n = len(masks)
    print(f"{len(images)} images, {n} masks; {workers} workers; {platform.python_implementation()} "
          f"{platform.python_version()}, {os.cpu_count()} CPUs; inflater: {mask_io._zlib.__name__}; "
          f"load average at start: {os.getloadavg()[0]:.2f}")

    try:
        from zlib_ng import zlib_ng
    except ImportError:
        zlib_ng = None
    inflaters = [("zlib", zlib)] + ([("zlib-ng", zlib_ng)] if zlib_ng else [])
    rows = [("seed: imantics polygons (1 process)", lambda: seed_method(masks))]
    for label, inflater in inflaters:
        rows += [
            (f"ours: RLE, all cores, {label}",
             with_inflater(inflater, lambda: masks_to_coco(images, workers=workers, progress=False))),
            (f"ours: RLE, 1 process, {label}",
             with_inflater(inflater, lambda: masks_to_coco(images, workers=1, progress=False))),
        ]
    rows.append(("ours: polygon (imantics), all cores",
                 lambda: masks_to_coco(images, fmt="polygon", workers=workers, progress=False)))
    rows.append(("floor: cv2.imread decode (1 process)", lambda: decode_opencv(masks)))
    for label, inflater in inflaters:
        rows.append((f"floor: {label} inflate (1 process)", lambda inflater=inflater: inflate_only(masks, inflater)))
    times = {}
    for name, fn in rows:
        times[name] = timed(fn, args.repeat)
        print(f"  {name}: {times[name][0]:.2f} s wall, {times[name][1]:.2f} s CPU", flush=True)
    seed_wall, seed_cpu = times[rows[0][0]]
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print()
    print("| method | wall (s) | CPU (s) | wall ms / mask | speed-up vs seed (wall) | CPU ratio vs seed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, _ in rows:
        wall, cpu = times[name]
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {1e3 * wall / n:.3f} | {seed_wall / wall:.1f}x | {seed_cpu / cpu:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
