#!/usr/bin/env python
"""
Inference post-processing of a dense image: Detectron2's default vs d2_nucleus's.

A synthetic 1000x1000 image with ~2000 detections (random boxes 8-60 px, random 28x28 mask
logits), as the R-CNN hands them over (network-input coordinates, box-local mask probabilities):

* detectron2: ``detector_postprocess`` (N full-size masks) + ``instances_to_coco_json``
  (RLE-encodes each full-size mask);
* d2_nucleus: ``nucleus_postprocess`` (per-instance RLEs from box-local masks) +
  ``d2_nucleus.export.instances_to_coco_json``.

Each method runs in a fresh subprocess (per repeat) that builds the same inputs, then records the
wall time of post-processing + JSON conversion and its peak RSS (``ru_maxrss``) above the RSS
reached before it started. The outputs of both methods are checked to be identical.

    python bench/bench_postprocess.py [--detections 2000] [--size 1000] [--repeats 3]

``--inference`` instead measures a whole NucleusRCNN forward pass (tiny random R18-FPN, score
threshold 0 so that it emits ``--detections`` detections on a synthetic H&E image) with the mask
head run all at once (Detectron2's way, TEST.MASK_HEAD_CHUNK_SIZE 0) and in chunks of 256
(the default): wall time and peak RSS above the RSS after loading the model.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

METHODS = ("detectron2", "d2_nucleus")


def make_instances(n: int, size: int, seed: int = 0):
    import numpy as np
    import torch
    from detectron2.structures import Boxes, Instances

    rng = np.random.default_rng(seed)
    wh = rng.uniform(8, 60, (n, 2))
    xy = rng.uniform(0, size, (n, 2)) - wh / 2
    inst = Instances((size, size))
    inst.pred_boxes = Boxes(torch.from_numpy(np.concatenate([xy, xy + wh], 1).astype(np.float32)))
    inst.scores = torch.from_numpy(np.sort(rng.uniform(0.05, 1, n))[::-1].astype(np.float32).copy())
    inst.pred_classes = torch.zeros(n, dtype=torch.int64)
    inst.pred_masks = torch.from_numpy(rng.normal(0, 3, (n, 1, 28, 28)).astype(np.float32)).sigmoid()
    return inst


def run_one(method: str, n: int, size: int, out_json: str) -> dict:
    """Child process: set up, measure one method, dump its results."""
    import torch  # noqa: F401  (imports before the baseline RSS)

    if method == "detectron2":
        from detectron2.evaluation.coco_evaluation import instances_to_coco_json
        from detectron2.modeling.postprocessing import detector_postprocess as post
    else:
        from d2_nucleus.evaluation.coco_results import instances_to_coco_json
        from d2_nucleus.modeling import nucleus_postprocess as post
    inst = make_instances(n, size)
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    results = instances_to_coco_json(post(inst, size, size), 1)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(out_json, "w") as f:
        json.dump([{k: r[k] for k in ("segmentation", "bbox", "score")} for r in results], f)
    return {"method": method, "seconds": seconds, "peak_mb": (peak_kb - base_kb) / 1024, "count": len(results)}


TINY_OPTS = [
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.FPN.OUT_CHANNELS", "64",
    "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN", "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
]


def run_inference(chunk: int, n: int, size: int) -> dict:
    """Child process: one NucleusRCNN forward pass with the given mask-head chunk size."""
    import numpy as np
    import torch
    from detectron2.modeling import build_model

    from d2_nucleus.config import get_nucleus_cfg
    from d2_nucleus.data.synthetic import render_nuclei_image

    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                          "Base-Nucleus-RCNN-FPN.yaml")
    opts = TINY_OPTS + ["TEST.DETECTIONS_PER_IMAGE", str(n), "TEST.MASK_HEAD_CHUNK_SIZE", str(chunk)]
    cfg = get_nucleus_cfg(config, opts)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    rgb, _ = render_nuclei_image(np.random.default_rng(0), size, size, 400)
    image = torch.from_numpy(np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1)))
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.no_grad():
        out = model([{"image": image}])[0]["instances"]
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"method": f"chunk {chunk}", "seconds": seconds, "peak_mb": (peak_kb - base_kb) / 1024, "count": len(out)}


def main_inference(args):
    print(f"NucleusRCNN forward pass (tiny random R18-FPN) on a {args.size}x{args.size} image, "
          f"up to {args.detections} detections")
    print(f"{'mask head':<24} {'forward + post (s)':>19} {'peak RSS (MB)':>14} {'detections':>11}")
    for chunk in (0, 256):
        cmd = [sys.executable, __file__, "--detections", str(args.detections), "--size", str(args.size),
               "--_infer", str(chunk)]
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        name = "all at once (Detectron2)" if chunk == 0 else f"chunks of {chunk}"
        print(f"{name:<24} {r['seconds']:>19.1f} {r['peak_mb']:>14.0f} {r['count']:>11}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detections", type=int, default=2000)
    p.add_argument("--size", type=int, default=1000, help="image side (pixels)")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per method")
    p.add_argument("--inference", action="store_true", help="measure the model's forward pass instead")
    p.add_argument("--_child", nargs=2, metavar=("METHOD", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--_infer", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._infer is not None:
        print(json.dumps(run_inference(args._infer, args.detections, args.size)))
        return 0
    if args.inference:
        return main_inference(args)
    if args._child:
        print(json.dumps(run_one(args._child[0], args.detections, args.size, args._child[1])))
        return 0

    runs = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {}
        for r in range(args.repeats):
            for method in METHODS:
                out = os.path.join(tmp, f"{method}.json")
                cmd = [sys.executable, __file__, "--detections", str(args.detections), "--size", str(args.size),
                       "--_child", method, out]
                proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
                runs[method].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                with open(out) as f:
                    outputs[method] = json.load(f)
        identical = outputs["detectron2"] == outputs["d2_nucleus"]

    print(f"{args.detections} detections on a {args.size}x{args.size} image, {args.repeats} fresh processes "
          f"per method (median time, max peak RSS above the pre-run RSS)")
    print(f"{'method':<12} {'post-processing + json (s)':>27} {'peak RSS (MB)':>14}")
    summary = {}
    for method in METHODS:
        t = statistics.median(r["seconds"] for r in runs[method])
        mem = max(r["peak_mb"] for r in runs[method])
        summary[method] = (t, mem)
        print(f"{method:<12} {t:>27.3f} {mem:>14.1f}")
    (t_ref, m_ref), (t_new, m_new) = summary["detectron2"], summary["d2_nucleus"]
    print(f"speed-up {t_ref / t_new:.1f}x, peak RSS {m_new / max(m_ref, 1e-9):.3f} of Detectron2's "
          f"({m_ref / max(m_new, 1e-9):.0f}x less); outputs identical: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
