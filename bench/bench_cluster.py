#!/usr/bin/env python
"""
Many slides on Dask (d2_nucleus/slide/cluster.py): the same slides through ``tools/segment_slides.py``
(a plain process, the baseline) and through LocalCluster workers (the engine of
tools/segment_cluster.py), measured in one run, interleaved (``--rounds``: baseline, cluster,
baseline, cluster, ...: a shared machine's load falls on both alike). Numbers in BENCHMARKS.md
"Many slides on Dask".

    python bench/bench_cluster.py                                  # synthetic slides, demo model, random weights
    python bench/bench_cluster.py --raw RAW --config configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml \\
        --weights W --slides 3 --images-per-slide 2 --workers 1 2 --rounds 2

Slides: small synthetic Aperio slides (640 x 600 px, 9 tiles of 256 px; the demo model with random
weights), or with ``--raw`` slides of ``--images-per-slide`` real 1000 x 1000 training images side
by side on glass, segmented with the slide tool's defaults (tiles, measurements) and the given model.
Each run segments a warm-up slide first (one per worker: the model load); then the slides are timed:
the sum of their pipeline seconds (each slide's summary: the same clock in both) and the wall time.

Threads: the baseline runs with torch's default (all cores), as ``tools/segment_slides.py`` does; a
cluster of N workers gives each ``cores / N`` torch threads (``--threads``), as
``tools/segment_cluster.py`` does. ``default`` is start_local_cluster as it is;
``--cluster-variant NAME [KEY=VALUE ...]`` adds a 1-worker run with these Dask settings instead of
its own (``d2_nucleus.slide.cluster.worker_settings``): ``--cluster-variant dask`` alone is Dask's
defaults (the code before them: the nanny's ``MALLOC_TRIM_THRESHOLD_``, the profiler on),
``--cluster-variant noprofile distributed.worker.profile.enabled=False`` turns only the profiler
off. Each worker's environment (thread variables, torch's threads in the task, the allocator
variables, the profiler) is printed once per variant.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from d2_nucleus.config import get_nucleus_cfg  # noqa: E402
from d2_nucleus.data.synthetic import render_nuclei_image  # noqa: E402
from d2_nucleus.data.synthetic_slide import write_synthetic_slide  # noqa: E402

DEMO = os.path.join(ROOT, "configs", "demo", "mask_rcnn_R_18_FPN_demo.yaml")
DEMO_FLAGS = ["--tile-size", "256", "--overlap", "32", "--score-thresh", "0.0",
              "--opts", "MODEL.RPN.POST_NMS_TOPK_TEST", "100", "TEST.DETECTIONS_PER_IMAGE", "20"]
ENV_KEYS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_",
            "MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX")


def _noop(i):
    return i


def _process_cpu_s():
    """CPU seconds (user + system) this process has used, all its threads."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _minor_faults():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def worker_probe():
    """What a task sees on its worker: thread variables and counts, allocator variables, profiler."""
    import threading

    import dask
    import torch

    return {**{k: os.environ.get(k) for k in ENV_KEYS}, "torch_threads": torch.get_num_threads(),
            "task_thread_is_main": threading.current_thread() is threading.main_thread(),
            "profile_enabled": dask.config.get("distributed.worker.profile.enabled")}


def make_slides(args):
    """(slides, warm-up slides): synthetic ones, or real training images side by side (--raw)."""
    slides_dir, warm_dir = os.path.join(args.work, "slides"), os.path.join(args.work, "warm")
    os.makedirs(slides_dir)
    os.makedirs(warm_dir)
    n = args.slides + max(args.workers)
    paths = [os.path.join(slides_dir if i < args.slides else warm_dir, f"s{i}.svs") for i in range(n)]
    if args.raw:
        from d2_nucleus.data.image_io import read_image
        from d2_nucleus.data.raw import scan_train

        items = scan_train(args.raw).images
        k = args.images_per_slide
        for i, path in enumerate(paths):
            images = [read_image(items[(i * k + j) % len(items)].image_file, "RGB") for j in range(k)]
            h, w = images[0].shape[:2]
            margin = 100
            write_synthetic_slide(path, 2 * margin + k * w, 2 * margin + h,
                                  [(im, margin + j * w, margin) for j, im in enumerate(images)],
                                  mpp=0.252, compression="zlib")
    else:
        rng = np.random.default_rng(0)
        for path in paths:
            tissue, _ = render_nuclei_image(rng, 380, 420, 70)
            write_synthetic_slide(path, 640, 600, [(tissue, 60, 80)], mpp=0.252, min_level_side=100)
    return paths[: args.slides], paths[args.slides:]


def _summaries(out_dir, slides):
    rows = []
    for s in slides:
        with open(os.path.join(out_dir, os.path.splitext(os.path.basename(s))[0] + ".summary.json")) as f:
            rows.append(json.load(f))
    return rows


def _totals(summaries):
    return {f"seconds{k}": sum(s[f"seconds{k}"] for s in summaries) for k in ("", "_model", "_read", "_stitch", "_measure")}


def run_baseline(args, slides, warm, out_dir):
    """tools/segment_slides.py on the warm-up slide and the slides, in a fresh process."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", "segment_slides.py"), "--config-file", args.config,
           "--weights", args.weights, "--device", "cpu", "--quiet", "--overwrite", warm[0], *slides, "--out", out_dir,
           *args.slide_flags]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    wall = time.perf_counter() - t0
    warm_s = _summaries(out_dir, warm[:1])[0]["seconds"]
    return {"wall_s": wall, "warm_slide_s": warm_s, **_totals(_summaries(out_dir, slides))}


def run_cluster(args, cfg, slides, warm, out_dir, workers, dask_config, probe):
    from distributed import Client

    from d2_nucleus.slide import cluster as cluster_module
    from d2_nucleus.slide.cluster import read_manifest, segment_slides_on_cluster, start_local_cluster

    threads = args.threads or max(1, (os.cpu_count() or 1) // workers)
    res = {}
    own = cluster_module.worker_settings
    try:
        if dask_config is not None:  # these Dask settings instead of start_local_cluster's own
            cluster_module.worker_settings = lambda t: dict(dask_config)
        t0 = time.perf_counter()
        cluster = start_local_cluster(workers, torch_threads=threads, dashboard_address=":0")
        client = Client(cluster)
    finally:
        cluster_module.worker_settings = own
    try:
        client.wait_for_workers(workers)
        res["start_s"] = time.perf_counter() - t0
        if probe:
            res["probe"] = list(client.run(worker_probe).values())[0]
            res["probe"]["task"] = client.submit(worker_probe, pure=False).result()
        t0 = time.perf_counter()
        segment_slides_on_cluster(client, cfg, read_manifest(warm[:workers]), out_dir + "_warm", overwrite=True,
                                  progress=False, torch_threads=threads)
        res["warm_s"] = time.perf_counter() - t0
        worker_cpu0 = sum(client.run(_process_cpu_s).values())
        faults0 = sum(client.run(_minor_faults).values())
        own_cpu0 = _process_cpu_s()
        t0 = time.perf_counter()
        rows = segment_slides_on_cluster(client, cfg, read_manifest(slides), out_dir, overwrite=True,
                                         progress=False, torch_threads=threads)
        res["wall_s"] = time.perf_counter() - t0
        # CPU seconds during the slides: the client process (it hosts the scheduler and the nannies too)
        # and the worker processes (the model's threads and the worker's own)
        res["client_cpu_s"] = _process_cpu_s() - own_cpu0
        res["worker_cpu_s"] = sum(client.run(_process_cpu_s).values()) - worker_cpu0
        res["worker_minor_faults"] = sum(client.run(_minor_faults).values()) - faults0
        assert all(r["status"] == "done" for r in rows), rows
        if probe and workers == 1:  # Dask's own round trip, no model: empty tasks one after another
            t1 = time.perf_counter()
            for i in range(50):
                client.submit(_noop, i, pure=False).result()
            res["noop_ms"] = (time.perf_counter() - t1) / 50 * 1000
    finally:
        client.close()
        cluster.close()
    res.update(_totals(_summaries(out_dir, slides)))
    res["threads"] = threads
    return res


def _parse_variant(words):
    """NAME [KEY=VALUE ...]: a cluster started with these Dask settings instead of start_local_cluster's
    (d2_nucleus.slide.cluster.worker_settings); NAME alone: none, Dask's defaults (the code before them)."""
    import yaml

    config = {}
    for w in words[1:]:
        key, _, value = w.partition("=")
        config[key] = yaml.safe_load(value)
    return words[0], config


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slides", type=int, default=8)
    p.add_argument("--raw", default=None, help="real dataset: slides of its training images (else synthetic)")
    p.add_argument("--images-per-slide", type=int, default=2)
    p.add_argument("--config", default=None, help="model config (default: the demo config with random weights)")
    p.add_argument("--weights", default=None)
    p.add_argument("--work", default="/tmp/bench_cluster")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=None, help="torch threads a worker (default: cores / workers)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--cluster-variant", nargs="+", action="append", default=[], metavar=("NAME", "KEY=VALUE"),
                   help="an extra 1-worker cluster run with these Dask config values (repeatable)")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    import torch
    from detectron2.modeling import build_model

    import d2_nucleus.modeling  # noqa: F401
    from d2_nucleus.slide.options import slide_cfg_from_args

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import segment_slides

    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    if args.config is None:
        args.config = DEMO
        args.slide_flags = list(DEMO_FLAGS)
        torch.manual_seed(0)
        args.weights = os.path.join(args.work, "model.pth")
        torch.save({"model": build_model(get_nucleus_cfg(DEMO, ["MODEL.DEVICE", "cpu"])).state_dict()}, args.weights)
    else:
        args.slide_flags = []
    slides, warm = make_slides(args)
    cfg = slide_cfg_from_args(segment_slides.get_parser().parse_args(
        ["x", "--config-file", args.config, "--weights", args.weights, "--out", args.work, "--device", "cpu",
         *args.slide_flags]))
    variants = [("default", None)] + [_parse_variant(v) for v in args.cluster_variant]
    runs = []
    info = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpus": os.cpu_count(), "config": args.config,
            "slides": len(slides), "raw": bool(args.raw), "runs": runs}
    for r in range(args.rounds):
        res = run_baseline(args, slides, warm, os.path.join(args.work, "out_single"))
        runs.append({"round": r, "run": "segment_slides.py", "workers": 1, **res, "loadavg": os.getloadavg()[0]})
        print(json.dumps(runs[-1]), flush=True)
        for workers in args.workers:
            for name, config in (variants if workers == 1 else variants[:1]):
                res = run_cluster(args, cfg, slides, warm, os.path.join(args.work, f"out_{name}_{workers}"), workers,
                                  config, probe=r == 0)
                runs.append({"round": r, "run": f"LocalCluster {name}", "workers": workers, **res,
                             "loadavg": os.getloadavg()[0]})
                print(json.dumps(runs[-1]), flush=True)

    def best(run, workers):
        rs = [x for x in runs if x["run"] == run and x["workers"] == workers]
        return min(rs, key=lambda x: x["seconds"])

    base = best("segment_slides.py", 1)
    n = len(slides)
    print(f"\n{n} slides ({'real images, ' + str(args.images_per_slide) + ' a slide' if args.raw else 'synthetic'}), "
          f"{os.path.relpath(args.config, ROOT)}, {info['cpus']} CPUs, {info['date']}, best of {args.rounds} round(s)")
    print("| run | workers x torch threads | sum of slide s (model / read / stitch / measure) | vs segment_slides.py | "
          "wall s | slides/hour (cluster: by wall time) | CPU s: workers, client + scheduler + nannies | "
          "workers' minor page faults | load average |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    seen = []
    for x in runs:
        key = (x["run"], x["workers"])
        if key in seen:
            continue
        seen.append(key)
        b = best(*key)
        threads = b.get("threads", os.cpu_count())
        # the baseline's wall time holds its start-up and model load: its slides/hour from its slides' seconds
        busy = b["seconds"] if b["run"] == "segment_slides.py" else b["wall_s"]
        cpu = f"{b['worker_cpu_s']:.1f}, {b['client_cpu_s']:.1f}" if "worker_cpu_s" in b else "-"
        faults = f"{b['worker_minor_faults']:,}" if "worker_minor_faults" in b else "-"
        print(f"| {b['run']} | {b['workers']} x {threads} | {b['seconds']:.1f} ({b['seconds_model']:.1f} / "
              f"{b['seconds_read']:.1f} / {b['seconds_stitch']:.1f} / {b['seconds_measure']:.1f}) | "
              f"{base['seconds'] / b['seconds']:.2f}x | {b['wall_s']:.1f} | {3600 * n / busy:.0f} | "
              f"{cpu} | {faults} | {b['loadavg']:.1f} |")
    for x in runs:
        if "probe" in x:
            print(f"{x['run']} ({x['workers']} worker(s)): {json.dumps(x['probe'])}"
                  + (f"; empty task round trip {x['noop_ms']:.1f} ms" if "noop_ms" in x else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)


if __name__ == "__main__":
    main()
