#!/usr/bin/env python
"""
Why a slide costs more in a Dask worker (issue 28 item 2): the model called from a process's main
thread (as tools/segment_slides.py does) against the same calls from another thread (as a Dask task
runs), with glibc's default malloc arenas and with one arena (``MALLOC_ARENA_MAX=1``, what
d2_nucleus.slide.cluster.worker_settings gives LocalCluster workers). Each variant runs in a fresh
process (the arena count is read at start), ``MODEL.CPU.TUNE_MALLOC`` on as the tools set it, one
dense image in slide mode (the detector's threshold at the kept score); per call: seconds, minor page
faults and CPU seconds (user + system) of the process. Page faults and system CPU do not depend on
the machine's load the way wall time does. Numbers in BENCHMARKS.md "Many slides on Dask".

    python bench/bench_worker_thread.py --weights W --image DENSE.png [--rounds 2] [--calls 3]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

VARIANTS = {  # name: (thread the model runs in, extra environment)
    "main thread": ("main", {}),
    "other thread": ("thread", {}),
    "other thread, MALLOC_ARENA_MAX=1": ("thread", {"MALLOC_ARENA_MAX": "1"}),
}


def child(args):
    from d2_nucleus.config import get_inference_cfg, set_slide_score_threshold
    from d2_nucleus.data.image_io import read_image
    from d2_nucleus.engine import NucleusPredictor
    from d2_nucleus.modeling.cpu.malloc import tune_process

    cfg = get_inference_cfg(os.path.join(ROOT, args.config), opts=args.opts, weights=args.weights, device="cpu")
    set_slide_score_threshold(cfg)
    cfg.freeze()
    tune_process(cfg)  # as the tools and the Dask task do, before the model exists
    image = read_image(args.image, cfg.INPUT.FORMAT)

    def work():  # the model built and called in one thread, as a Dask task thread does
        predictor = NucleusPredictor(cfg)
        rows = []
        for i in range(1 + args.calls):
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            out = predictor([image])
            r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            rows.append({"call": i, "s": t1 - t0, "minor_faults": r1.ru_minflt - r0.ru_minflt,
                         "cpu_s": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
                         "sys_s": r1.ru_stime - r0.ru_stime, "detections": len(out[0])})
        return rows

    if args.where == "main":
        rows = work()
    else:
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("rows", work()), name="task")
        t.start()
        t.join()
        rows = box["rows"]
    print("@@json " + json.dumps(rows[1:]), flush=True)  # the first call is the warm-up


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml")
    p.add_argument("--weights", required=True)
    p.add_argument("--image", required=True, help="a dense H&E image (e.g. a 1000 x 1000 test image)")
    p.add_argument("--calls", type=int, default=3, help="timed calls after the warm-up")
    p.add_argument("--rounds", type=int, default=1, help="run every variant this many times, interleaved")
    p.add_argument("--where", default=None, help=argparse.SUPPRESS)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    args = p.parse_args()
    if args.where:
        return child(args)
    results = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, (where, extra) in VARIANTS.items():
            env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
            env.pop("MALLOC_ARENA_MAX", None)
            env.update(extra)
            cmd = [sys.executable, __file__, "--where", where, "--config", args.config, "--weights", args.weights,
                   "--image", args.image, "--calls", str(args.calls)] + args.opts
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode:
                sys.stderr.write(proc.stderr[-3000:])
                raise SystemExit(f"{name} failed")
            rows = json.loads([x for x in proc.stdout.splitlines() if x.startswith("@@json ")][-1][7:])
            results[name] += [dict(r, loadavg=os.getloadavg()[0]) for r in rows]
            print(name, json.dumps(rows), flush=True)
    print(f"\n{os.path.basename(args.image)}, {args.config}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {args.rounds} round(s) x {args.calls} calls")
    print("| the model runs in | s/call (best) | minor page faults/call (median) | CPU s/call (median) | "
          "of which system | load average |")
    print("| --- | --- | --- | --- | --- | --- |")

    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2]

    for name, rows in results.items():
        print(f"| {name} | {min(r['s'] for r in rows):.2f} | {median([r['minor_faults'] for r in rows]):,} | "
              f"{median([r['cpu_s'] for r in rows]):.2f} | {median([r['sys_s'] for r in rows]):.2f} | "
              f"{min(r['loadavg'] for r in rows):.1f}-{max(r['loadavg'] for r in rows):.1f} |")


if __name__ == "__main__":
    main()
