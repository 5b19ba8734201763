#!/usr/bin/env python
"""
Peak memory of the per-image path (``tools/predict.py``) against the image's size: what decides
``d2_nucleus.data.image_io.MAX_IMAGE_PIXELS`` (issue 27: a 1.2 MB 20,000 x 20,000 PNG went past
6.3 GB).

Each size runs ``tools/predict.py`` in a fresh process on one synthetic H&E-like PNG (a 1024 px
``render_nuclei_image`` tile repeated), with every export on (answer.json, ``--vis-dir``,
``--geojson-dir``, ``--labels-dir``, ``--measurements``), and reports the process's peak RSS
(``ru_maxrss``) and its wall time; ``read`` is the peak RSS of ``read_image`` alone in a fresh
process. The model is the CPU recipe's architecture (``--config-file``, ``SOLVER.CPU_BF16 False``)
with ``--weights`` (default: untrained weights, score threshold 0: ``TEST.DETECTIONS_PER_IMAGE``
detections on every image, the most the heads and exports handle).

    python bench/bench_image_memory.py [--sides 1024 2048 4096 6144 8192] [--weights model.pth]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

_CHILD = """
import resource, runpy, sys, json
argv = json.loads(sys.argv[1])
if argv[0] == "read":
    from d2_nucleus.data.image_io import read_image
    import d2_nucleus.data.image_io as io
    io.MAX_IMAGE_PIXELS = 1 << 40
    read_image(argv[1])
else:
    import d2_nucleus.data.image_io as io
    io.MAX_IMAGE_PIXELS = 1 << 40  # measure beyond the cap
    sys.argv = argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        if e.code:
            raise
print("@@" + json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))
"""


def run_child(argv):
    env = dict(os.environ, PYTHONPATH=ROOT)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(argv)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    return int(r.stdout.rsplit("@@", 1)[1]), time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sides", type=int, nargs="+", default=[1024, 2048, 4096, 6144, 8192])
    p.add_argument("--config-file", default=os.path.join(ROOT, "configs", "cpu", "mask_rcnn_R_18_FPN_cpu_gn.yaml"))
    p.add_argument("--weights", default=None)
    p.add_argument("--out", default=None, help="JSON results file")
    args = p.parse_args()

    import numpy as np
    from PIL import Image

    from d2_nucleus.data.synthetic import render_nuclei_image

    work = tempfile.mkdtemp(prefix="bench_image_memory_")
    opts = ["SOLVER.CPU_BF16", "False", "MODEL.DEVICE", "cpu"]
    weights = args.weights
    if weights is None:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from weights import save_untrained_weights

        from d2_nucleus.config import get_nucleus_cfg

        weights = save_untrained_weights(get_nucleus_cfg(args.config_file, opts + ["MODEL.WEIGHTS", ""]),
                                         os.path.join(work, "model.pth"))
        opts += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.LABEL_MAP_SCORE_THRESH", "0.0"]
    tile, _ = render_nuclei_image(np.random.default_rng(0), 1024, 1024, 600)
    rows = []
    for side in args.sides:
        folder = os.path.join(work, f"in{side}")
        os.makedirs(folder)
        reps = -(-side // 1024)
        image = np.tile(tile, (reps, reps, 1))[:side, :side]
        path = os.path.join(folder, "image.png")
        Image.fromarray(image).save(path)
        del image
        read_rss, _ = run_child(["read", path])
        out = os.path.join(work, f"out{side}")
        argv = [os.path.join(ROOT, "tools", "predict.py"), "--config-file", args.config_file, "--weights", weights,
                "--input", folder, "--output", os.path.join(out, "answer.json"), "--vis-dir", os.path.join(out, "vis"),
                "--geojson-dir", os.path.join(out, "geo"), "--labels-dir", os.path.join(out, "lab"),
                "--measurements", os.path.join(out, "meas"), "--quiet", *opts]
        rss, seconds = run_child(argv)
        mp = side * side / 1e6
        row = {"side": side, "megapixels": mp, "file_mb": os.path.getsize(path) / 1e6, "read_peak_mb": read_rss / 1e6,
               "predict_peak_mb": rss / 1e6, "seconds": seconds}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        slope = (b["predict_peak_mb"] - a["predict_peak_mb"]) / (b["megapixels"] - a["megapixels"])
        print(f"predict: {slope:.1f} MB per megapixel (= bytes per pixel) between {a['side']} and {b['side']} px")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
