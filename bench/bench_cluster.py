#!/usr/bin/env python
"""
Many slides on Dask (d2_nucleus/slide/cluster.py): slides/hour with 1 and 2 LocalCluster worker
processes against the single-process loop of tools/segment_slides.py, measured in the same run, and
the scheduling overhead per slide. Numbers in BENCHMARKS.md.

    OMP_NUM_THREADS=1 python bench/bench_cluster.py [--slides 8] [--work /tmp/bench_cluster]

Slides: small synthetic Aperio slides (640 x 600 px, 9 tiles of 256 px), the demo model
(configs/demo) with random weights. Each timed run is preceded by a warm-up slide, so the model load
(once per worker) is reported apart from the throughput.
"""
import argparse
import os
import shutil
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from d2_nucleus.config import get_nucleus_cfg  # noqa: E402
from d2_nucleus.data.synthetic import render_nuclei_image  # noqa: E402
from d2_nucleus.data.synthetic_slide import write_synthetic_slide  # noqa: E402

DEMO = os.path.join(ROOT, "configs", "demo", "mask_rcnn_R_18_FPN_demo.yaml")
OPTS = ["MODEL.DEVICE", "cpu", "SLIDE.TILE_SIZE", "256", "SLIDE.OVERLAP", "32", "TEST.LABEL_MAP_SCORE_THRESH", "0.0",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
        "TEST.DETECTIONS_PER_IMAGE", "20"]


def _noop(i):
    return i


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slides", type=int, default=8)
    p.add_argument("--work", default="/tmp/bench_cluster")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()

    import torch
    from detectron2.modeling import build_model
    from distributed import Client

    import d2_nucleus.modeling  # noqa: F401
    from d2_nucleus.engine import NucleusPredictor
    from d2_nucleus.slide import segment_slide
    from d2_nucleus.slide.cluster import read_manifest, segment_slides_on_cluster, start_local_cluster

    shutil.rmtree(args.work, ignore_errors=True)
    slides_dir, warm_dir = os.path.join(args.work, "slides"), os.path.join(args.work, "warm")
    os.makedirs(slides_dir)
    os.makedirs(warm_dir)
    torch.manual_seed(0)
    weights = os.path.join(args.work, "model.pth")
    torch.save({"model": build_model(get_nucleus_cfg(DEMO, ["MODEL.DEVICE", "cpu"])).state_dict()}, weights)
    cfg = get_nucleus_cfg(DEMO, OPTS + ["MODEL.WEIGHTS", weights])
    cfg.freeze()
    rng = np.random.default_rng(0)
    for i in range(args.slides + max(args.workers)):
        tissue, _ = render_nuclei_image(rng, 380, 420, 70)
        folder = slides_dir if i < args.slides else warm_dir
        write_synthetic_slide(os.path.join(folder, f"s{i}.svs"), 640, 600, [(tissue, 60, 80)], mpp=0.252,
                              min_level_side=100)
    jobs, warm = read_manifest([slides_dir]), read_manifest([warm_dir])
    n = len(jobs)
    results = []

    # baseline: the single-process loop (tools/segment_slides.py's engine), model loaded once
    predictor = NucleusPredictor(cfg, batch_size=cfg.SLIDE.BATCH_SIZE)
    segment_slide(predictor, cfg, warm[0].path, os.path.join(args.work, "out_warm_single"), progress=False)
    t0 = time.perf_counter()
    pipeline_s = sum(segment_slide(predictor, cfg, j.path, os.path.join(args.work, "out_single"), progress=False)["seconds"]
                     for j in jobs)
    wall = time.perf_counter() - t0
    results.append(("single process (segment_slides.py loop)", wall, pipeline_s, None, None))
    del predictor

    for workers in args.workers:
        t0 = time.perf_counter()
        cluster = start_local_cluster(workers, torch_threads=1, dashboard_address=":0")
        client = Client(cluster)
        try:
            client.wait_for_workers(workers)
            start_s = time.perf_counter() - t0
            t0 = time.perf_counter()  # warm-up: one slide per worker loads its model
            segment_slides_on_cluster(client, cfg, warm[:workers], os.path.join(args.work, f"out_warm_{workers}"),
                                      progress=False)
            warm_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            rows = segment_slides_on_cluster(client, cfg, jobs, os.path.join(args.work, f"out_{workers}"),
                                             progress=False)
            wall = time.perf_counter() - t0
            assert all(r["status"] == "done" for r in rows), rows
            if workers == 1:  # Dask's own round trip, no model: n empty tasks one after another
                t1 = time.perf_counter()
                for i in range(50):
                    client.submit(_noop, i, pure=False).result()
                noop_ms = (time.perf_counter() - t1) / 50 * 1000
            else:
                noop_ms = None
            results.append((f"LocalCluster, {workers} worker process(es) x 1 thread", wall,
                            sum(r["seconds"] for r in rows), (start_s, warm_s), noop_ms))
        finally:
            client.close()
            cluster.close()

    base = results[0][1]
    print(f"{n} slides of 640 x 600 px (9 tiles of 256 px each), demo model, random weights, OMP_NUM_THREADS=1")
    print("| run | wall s | slides/hour | vs single process | sum of per-slide pipeline s | overhead s/slide "
          "(wall x workers - pipeline) / n | cluster start s, model warm-up s | empty task round trip ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name, wall, pipe, start, noop in results:
        workers = 1 if "single" in name else int(name.split(",")[1].split()[0])
        print(f"| {name} | {wall:.1f} | {3600 * n / wall:.0f} | {base / wall:.2f}x | {pipe:.1f} | "
              f"{(wall * workers - pipe) / n:.2f} | {'-' if start is None else f'{start[0]:.1f}, {start[1]:.1f}'} | "
              f"{'-' if noop is None else f'{noop:.1f}'} |")


if __name__ == "__main__":
    main()
