#!/usr/bin/env python
"""
Segment nuclei in many slides on a Dask cluster: each slide is a task running the pipeline of
tools/segment_slides.py (same flags, same outputs), one model per worker, with retries, resume
and a run report (one row per slide).

    # a LocalCluster on this machine (workers = GPUs, or CPU processes)
    python tools/segment_cluster.py --config-file configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml \\
        --weights output/model_final.pth slides/ --out results/ --workers 2 --threads-per-worker 4
    # join a running cluster (workers see the same files), manifest CSV with path[,mpp] rows
    python tools/segment_cluster.py --config-file ... --weights ... manifest.csv --out results/ \\
        --scheduler tcp://head:8786

Running the same command again skips complete slides and resumes partial ones.
"""
import argparse
import importlib.util
import logging
import os
import sys

from d2_nucleus.utils.cli import check_flag_number, error_line, run_main


def get_parser():
    from d2_nucleus.slide.options import add_slide_arguments

    p = argparse.ArgumentParser(prog="segment_cluster.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("slides", nargs="+", metavar="SLIDE",
                   help="slide or image files, folders of them, glob patterns (quoted: 'data/**/*.svs'), "
                   "or CSV manifests with a 'path' column and an optional 'mpp' column")
    add_slide_arguments(p)
    g = p.add_argument_group("cluster")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="join a running Dask scheduler, e.g. tcp://head:8786 (default: start a LocalCluster)")
    where.add_argument("--scheduler-file", default=None, metavar="FILE",
                       help="join the Dask scheduler described by this file (dask scheduler --scheduler-file), "
                       "waiting for it to appear")
    g.add_argument("--connect-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="give up (exit status 2) when the --scheduler-file has not appeared, or the scheduler "
                   "has not answered, within this many seconds (default: 30)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="LocalCluster worker processes (default: one per GPU with CUDA, else CPU cores / "
                   "--threads-per-worker)")
    g.add_argument("--threads-per-worker", type=int, default=None, metavar="N",
                   help="CPU threads of each worker's model; a worker runs one slide at a time "
                   "(default: 1 with CUDA, else CPU cores / workers, at most 4)")
    g.add_argument("--retries", type=int, default=2, metavar="N",
                   help="retries of a task raising an unexpected error (not of slides failing for their own "
                   "reasons) (default: 2)")
    g.add_argument("--worker-deaths", type=int, default=3, metavar="N",
                   help="a slide whose workers die N+1 times is reported failed (LocalCluster; on your own "
                   "scheduler set distributed.scheduler.allowed-failures) (default: 3)")
    g.add_argument("--dashboard-address", default=":8787", metavar="HOST:PORT",
                   help="LocalCluster dashboard address (default :8787; :0 picks a free port)")
    g.add_argument("--report", default=None, metavar="FILE",
                   help="run report, .csv or .parquet, one row per slide, replaced each run "
                   "(default: <out>/cluster_report.csv)")
    return p


def _local_sizes(args, cuda: bool):
    cores = os.cpu_count() or 1
    if cuda:
        import torch

        return args.workers or torch.cuda.device_count(), args.threads_per_worker or 1
    threads = args.threads_per_worker or min(4, max(1, cores // (args.workers or 1)))
    return args.workers or max(1, cores // threads), threads


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from d2_nucleus.checkpoint import check_weights_path
    from d2_nucleus.slide.cluster import (
        read_manifest, scheduler_address, segment_slides_on_cluster, start_local_cluster, write_report,
    )
    from d2_nucleus.slide.options import slide_cfg_from_args
    from d2_nucleus.slide.outputs import check_slide_outputs

    report = args.report or os.path.join(args.out, "cluster_report.csv")
    address = None
    try:
        for flag, least in (("workers", 1), ("threads_per_worker", 1), ("retries", 0), ("worker_deaths", 0)):
            value = getattr(args, flag)
            if value is not None and value < least:
                raise ValueError(f"--{flag.replace('_', '-')} must be at least {least}, got {value}")
        check_flag_number(args.connect_timeout, "--connect-timeout")
        cfg = slide_cfg_from_args(args)
        jobs = read_manifest(args.slides, args.mpp)
        if os.path.isfile(cfg.SLIDE.TISSUE.MASK) and len(jobs) > 1:
            raise ValueError("one --tissue-mask file for several slides; pass a folder of <slide>.png masks")
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise NotADirectoryError(f"--out {args.out!r} is a file")
        check_weights_path(str(cfg.MODEL.WEIGHTS))  # empty, a folder, missing: one line each
        # no output (the slides' files, the report) replaces an input (slides, manifests, masks, config, weights)
        check_slide_outputs(cfg, [j.path for j in jobs], args.out, inputs=[args.config_file] + args.slides,
                            outputs=[report])
        # weights and slides are read by the workers: give them absolute paths
        cfg.defrost()
        cfg.MODEL.WEIGHTS = os.path.abspath(str(cfg.MODEL.WEIGHTS))
        cfg.freeze()
        if args.scheduler or args.scheduler_file:  # bounded: a scheduler that never answers is an error
            address = scheduler_address(args.scheduler, args.scheduler_file, args.connect_timeout)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print(error_line("segment_cluster", e), file=sys.stderr)
        return 2

    from distributed import Client

    cuda = str(cfg.MODEL.DEVICE).startswith("cuda")
    cluster = client = None
    try:
        if address is not None:
            client = Client(address, timeout=args.connect_timeout)
            threads = args.threads_per_worker
        else:
            workers, threads = _local_sizes(args, cuda)
            cluster = start_local_cluster(workers, threads, gpus=cuda, worker_deaths=args.worker_deaths,
                                          dashboard_address=args.dashboard_address)
            client = Client(cluster)
        info = client.scheduler_info()
        dashboard = client.dashboard_link if "dashboard" in info.get("services", {}) else "not running"
        if cluster is not None and importlib.util.find_spec("bokeh") is None:
            dashboard += " (its pages need the bokeh package: pip install bokeh)"
        print(f"Dask scheduler {info['address']}, {len(info['workers'])} worker(s); dashboard: {dashboard}", flush=True)
        rows = segment_slides_on_cluster(client, cfg, jobs, os.path.abspath(args.out), overwrite=args.overwrite,
                                         retries=args.retries, torch_threads=threads, progress=not args.quiet)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    write_report(rows, report)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "exists", "failed")}
    print(f"{counts['done']} slide(s) done, {counts['exists']} already complete, {counts['failed']} failed; "
          f"report: {report}")
    errors = [f"  {r['error']}" for r in rows if r["status"] == "failed"]
    if errors:
        print("\n".join([f"{len(errors)} slide(s) failed:"] + errors), file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(run_main(main, "segment_cluster", "running the same command again resumes the slides"))
