#!/usr/bin/env python
"""
CPU inference speed of a d2_nucleus model on one dense image: the speed options of
``MODEL.CPU`` (d2_nucleus/config/cpu.py) one at a time and together, against the same
model with all of them off (the code before they existed), measured in one run. Each variant runs
in a fresh process (the malloc settings are process-wide) on the same image and weights.

    python bench/bench_cpu_speed.py --weights output/cpu_recipe/train/model_final.pth \\
        --image ../shared/data/dataset/<a test image>.png [--repeats 5] [--profile]

Variants:
  before      all speed options off: MODEL.CPU.GROUP_NORM torch, ROI_ALIGN torchvision,
              RPN_NMS_THREADS 1, TUNE_MALLOC False, CONV3X3 onednn (the config's bf16 /
              channels-last kept).
  malloc      before + MODEL.CPU.TUNE_MALLOC
  groupnorm   before + MODEL.CPU.GROUP_NORM nchw
  roi         before + MODEL.CPU.ROI_ALIGN threaded
  nonative    GROUP_NORM nchw, ROI_ALIGN threaded, RPN_NMS_THREADS 1, CONV3X3 onednn, malloc (the defaults before
              the C++ kernels and the threaded RPN NMS)
  nativeroi   nonative + the C++ RoIAlign pooler (ROI_ALIGN native)
  native      nativeroi + the C++ GroupNorm + ReLU (GROUP_NORM native)
  onednn      every option but the Winograd 3 x 3 convolutions (MODEL.CPU.CONV3X3 onednn)
  all         the defaults: every option on (CONV3X3 auto: Winograd on AVX2 CPUs without AVX-512).

Reported: seconds per image (best of --repeats after one warm-up call), detections, peak RSS
(ru_maxrss) of the process, and the speed-up over ``before``; --profile adds torch.profiler's
self-time table of one call of ``all``. Without --weights the model is randomly initialised
(speed then depends on how many detections it happens to make: use a trained model).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

OFF = ["MODEL.CPU.GROUP_NORM", "torch", "MODEL.CPU.ROI_ALIGN", "torchvision", "MODEL.CPU.TUNE_MALLOC", "False",
       "MODEL.CPU.RPN_NMS_THREADS", "1", "MODEL.CPU.ANCHOR_IOU", "detectron2", "MODEL.CPU.CONV3X3", "onednn"]
VARIANTS = {
    "before": OFF,
    "malloc": OFF + ["MODEL.CPU.TUNE_MALLOC", "True"],
    "groupnorm": OFF + ["MODEL.CPU.GROUP_NORM", "nchw"],
    "roi": OFF + ["MODEL.CPU.ROI_ALIGN", "threaded"],
    "all": [],
    # every option but the C++ kernels (the defaults before they existed), and but the C++ GroupNorm
    "nonative": ["MODEL.CPU.GROUP_NORM", "nchw", "MODEL.CPU.ROI_ALIGN", "threaded", "MODEL.CPU.RPN_NMS_THREADS", "1",
                 "MODEL.CPU.CONV3X3", "onednn"],
    "nativeroi": ["MODEL.CPU.GROUP_NORM", "nchw", "MODEL.CPU.RPN_NMS_THREADS", "1", "MODEL.CPU.CONV3X3", "onednn"],
    "native": ["MODEL.CPU.RPN_NMS_THREADS", "1", "MODEL.CPU.CONV3X3", "onednn"],
    # the C++ kernels and threaded NMS, oneDNN's 3 x 3 convolutions (the defaults before CONV3X3)
    "onednn": ["MODEL.CPU.CONV3X3", "onednn"],
}


def child(args):
    import torch

    from d2_nucleus.config import get_inference_cfg
    from d2_nucleus.data.image_io import read_image
    from d2_nucleus.engine import NucleusPredictor
    from d2_nucleus.modeling.cpu.malloc import tune_process

    torch.manual_seed(0)
    opts = VARIANTS[args.child] + args.opts
    cfg = get_inference_cfg(os.path.join(ROOT, args.config), opts=opts, weights=args.weights, device="cpu")
    tune_process(cfg)  # as the tools do
    predictor = NucleusPredictor(cfg)
    image = read_image(args.image, cfg.INPUT.FORMAT)
    out = predictor([image])
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = predictor([image])
        times.append(time.perf_counter() - t0)
    res = {"variant": args.child, "s_per_image": min(times), "times": times, "detections": len(out[0]),
           "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            predictor([image])
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:10]
        res["profile"] = [(e.key, e.count, e.self_cpu_time_total / 1e3, e.self_cpu_time_total / total) for e in rows]
    print(json.dumps(res), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml")
    p.add_argument("--weights", required=True, help="a trained checkpoint of --config (e.g. make recipe-val's)")
    p.add_argument("--image", required=True, help="a dense H&E image, e.g. a 1000x1000 test image")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--profile", action="store_true", help="profile one call of the last variant")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra config KEY VALUE pairs for every variant")
    args = p.parse_args()
    if args.child:
        return child(args)
    names = args.variants.split(",")
    results = []
    for name in names:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--config", args.config,
               "--weights", args.weights, "--image", args.image, "--repeats", str(args.repeats)]
        if args.profile and name == names[-1]:
            cmd.append("--profile")
        out = subprocess.run(cmd + args.opts, capture_output=True, text=True)
        if out.returncode != 0:
            sys.stderr.write(out.stderr[-4000:])
            raise SystemExit(f"variant {name} failed")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{name:10s} {r['s_per_image']:.2f} s/image  {r['detections']} detections  "
              f"{r['max_rss_mb']:.0f} MB", flush=True)
    base = results[0]["s_per_image"]
    print(f"\n{args.config}, {os.path.basename(args.image)}, {os.cpu_count()} CPUs, "
          f"torch threads default, best of {args.repeats}")
    print(f"| variant | s/image | detections | peak RSS MB | speed-up vs {results[0]['variant']} |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['variant']} | {r['s_per_image']:.2f} | {r['detections']} | {r['max_rss_mb']:.0f} | "
              f"{base / r['s_per_image']:.2f}x |")
    prof = results[-1].get("profile")
    if prof:
        print(f"\ntorch.profiler self CPU time, one call of {results[-1]['variant']}:")
        print("| op | calls | self ms | share |\n| --- | --- | --- | --- |")
        for key, count, ms, share in prof:
            print(f"| {key} | {count} | {ms:.0f} | {100 * share:.0f}% |")


if __name__ == "__main__":
    main()
