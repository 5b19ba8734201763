#!/usr/bin/env python
"""
Fine-tuning a trained model on a few images of a new domain, against the same CPU time spent
training from scratch (issue 25; numbers in BENCHMARKS.md "Fine-tuning").

The "new domain" is built from the real dataset: every training image of one organ (by default
kidney, the TCGA tissue source sites B0 and HE) is held out of the base model's training; a fixed
set of them is the evaluation set, and the others are the fine-tuning images, 1, 2 and 4 at a time.

    # 1. the base model: the CPU recipe on nucleus_train without the domain's images
    python bench/bench_finetune.py base-data --raw RAW --work W      # writes W/prepared_base
    python tools/train_net.py --config-file configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml \\
        --data-root W/prepared_base OUTPUT_DIR W/base
    # 2. the curves (each run: tools/train_net.py, then --eval-only of each checkpoint)
    python bench/bench_finetune.py curves --raw RAW --work W --base-weights W/base/model_final.pth

Runs (``--runs``): ``finetune`` (configs/cpu/finetune_R_18_FPN_cpu_gn.yaml from the base model,
everything trains), ``heads`` (the same, only the RPN and RoI heads train: SOLVER.TRAIN_ONLY),
``scratch`` (the CPU recipe from scratch on the same images, the same number of iterations). Each
run's checkpoints are evaluated on the held-out images (AJI, PQ, segm AP@[.5:.95] with 3,000
detections, the challenge AP50@100); CPU minutes are the training's own wall-clock time from its
``metrics.json``. Results: W/finetune.json, W/finetune.png and a Markdown table on stdout. Nothing is
written inside the repository (the data may not be committed).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
RECIPE = os.path.join(ROOT, "configs", "cpu", "mask_rcnn_R_18_FPN_cpu_gn.yaml")
FINETUNE = os.path.join(ROOT, "configs", "cpu", "finetune_R_18_FPN_cpu_gn.yaml")
# kidney (TCGA tissue source sites B0 and HE): 6 of the 24 training images; 2 of them (both in the
# seed-0 nucleus_val split) are the evaluation set, the other 4 the fine-tuning pool, in this order
DOMAIN_SITES = ("-B0-", "-HE-")
EVAL_IDS = ("TCGA-B0-5710-01Z-00-DX1", "TCGA-HE-7129-01Z-00-DX1")
POOL = ("TCGA-B0-5698-01Z-00-DX1", "TCGA-HE-7128-01Z-00-DX1", "TCGA-B0-5711-01Z-00-DX1", "TCGA-HE-7130-01Z-00-DX1")


def _run(cmd, log):
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                           env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}; see {log}")


def _raw_subset(raw, out, ids):
    """A raw dataset of the training images ``ids`` (symbolic links; the test images linked as they are)."""
    os.makedirs(os.path.join(out, "train"), exist_ok=True)
    for i in ids:
        link = os.path.join(out, "train", i)
        if not os.path.lexists(link):
            os.symlink(os.path.join(os.path.abspath(raw), "train", i), link)
    for name in ("test", "test_img_ids.json"):
        link = os.path.join(out, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(os.path.abspath(raw), name), link)


def _prepare(raw, work, name, ids, ratio="0"):
    out = os.path.join(work, f"prepared_{name}")
    if not os.path.isdir(out):
        _raw_subset(raw, os.path.join(work, f"raw_{name}"), ids)
        _run([PY, "tools/prepare_data.py", "--raw", os.path.join(work, f"raw_{name}"), "--out", out, "--ratio", ratio,
              "--quiet"], os.path.join(work, f"prepare_{name}.log"))
    return out


def base_data(args):
    """The base model's data: the seed-0 nucleus_train split without the domain's images, nucleus_val as is."""
    from d2_nucleus.data.split import split_image_ids

    ids = sorted(os.listdir(os.path.join(args.raw, "train")))
    train, val = split_image_ids(ids, ratio=0.2, seed=0)
    keep = [i for i in train if not any(s in i for s in DOMAIN_SITES)]
    out = os.path.join(args.work, "prepared_base")
    if not os.path.isdir(out):
        full = os.path.join(args.work, "prepared_full")
        if not os.path.isdir(full):
            _run([PY, "tools/prepare_data.py", "--raw", args.raw, "--out", full, "--quiet"],
                 os.path.join(args.work, "prepare_full.log"))
        _filter_layout(full, out, keep)
    print(f"{out}: nucleus_train = {len(keep)} images (without {len(train) - len(keep)} of the domain), "
          f"nucleus_val = {len(val)}")


def _filter_layout(src, out, keep):
    """A copy of a prepared layout whose train split keeps only the images ``keep``."""
    import shutil

    from d2_nucleus.data.layout import annotation_file

    shutil.copytree(src, out, symlinks=True)
    path = annotation_file(out, "train")
    with open(path) as f:
        coco = json.load(f)
    images = [im for im in coco["images"] if os.path.splitext(im["file_name"])[0] in keep]
    ids = {im["id"] for im in images}
    coco["images"], coco["annotations"] = images, [a for a in coco["annotations"] if a["image_id"] in ids]
    with open(path, "w") as f:
        json.dump(coco, f)


def _train(args, name, config, data, eval_root, iters, opts):
    out = os.path.join(args.work, name)
    if not os.path.isfile(os.path.join(out, "model_final.pth")):
        _run([PY, "tools/train_net.py", "--config-file", config, "--data-root", data, "--overwrite",
              "DATASETS.TRAIN", '("nucleus_all_train",)', "DATASETS.TEST", "()",
              "SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", f"({int(iters * 0.8)},)",
              "SOLVER.CHECKPOINT_PERIOD", str(args.eval_every), "OUTPUT_DIR", out, *opts, *args.opts],
             os.path.join(args.work, f"{name}.train.log"))
    return out


def _evaluate(args, weights, eval_root, out):
    """AJI, PQ, segm AP and AP50@100 of ``weights`` on the held-out images (tools/train_net.py --eval-only)."""
    result = os.path.join(out, "inference", "keval_all_train", "nucleus_metrics.json")
    if not os.path.isfile(result):
        _run([PY, "tools/train_net.py", "--config-file", RECIPE, "--data-root", eval_root, "--eval-only",
              "NUCLEUS.EXTRA_DATA_ROOTS", f'("keval={eval_root}",)', "DATASETS.TEST", '("keval_all_train",)',
              "MODEL.WEIGHTS", weights, "OUTPUT_DIR", out, *args.opts], out + ".log")
    with open(result) as f:
        r = json.load(f)["results"]
    return {"AJI": r["nucleus"]["AJI"], "PQ": r["nucleus"]["PQ"], "segm_AP": r["segm"]["AP"],
            "AP50@100": r["segm"]["AP50@100"]}


def curves(args):
    eval_root = _prepare(args.raw, args.work, "keval", EVAL_IDS)
    results = {"eval_images": list(EVAL_IDS), "pool": list(POOL), "runs": {}, "machine": _machine(),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    results["base"] = _evaluate(args, args.base_weights, eval_root, os.path.join(args.work, "eval_base"))
    print("base model (no domain image):", results["base"], flush=True)
    plan = [(n, run) for n in args.ns for run in args.runs]
    if args.plan:  # e.g. finetune:1,2,4 heads:4 scratch:4
        plan = [(int(n), run) for item in args.plan for run, ns in [item.split(":", 1)] for n in ns.split(",")]
        plan.sort(key=lambda p: p[0])
    for n, run in plan:
        data = _prepare(args.raw, args.work, f"k{n}", POOL[:n])
        name = f"{run}_k{n}"
        if run == "scratch":
            config, opts = RECIPE, ["MODEL.WEIGHTS", ""]
        else:
            config, opts = FINETUNE, ["MODEL.WEIGHTS", args.base_weights]
            if run == "heads":
                opts += ["SOLVER.TRAIN_ONLY", '("proposal_generator", "roi_heads")']
        start = time.perf_counter()
        out = _train(args, name, config, data, eval_root, args.iters, opts)
        wall = time.perf_counter() - start
        points = []
        for it in range(args.eval_every, args.iters + 1, args.eval_every):
            ckpt = os.path.join(out, f"model_{it - 1:07d}.pth" if it < args.iters else "model_final.pth")
            if not os.path.isfile(ckpt):
                continue
            m = _evaluate(args, ckpt, eval_root, os.path.join(out, f"eval_{it}"))
            points.append({"iteration": it, **m})
        log = os.path.join(args.work, f"{name}.train.log")
        results["runs"][name] = {"run": run, "images": n, "points": points, "train_wall_s": _log_wall(log) or wall}
        print(name, points[-1] if points else None, flush=True)
        with open(os.path.join(args.work, "finetune.json"), "w") as f:
            json.dump(results, f, indent=1)
    _report(results, os.path.join(args.work, "finetune.png"))


def _log_wall(log):
    """Seconds between the first and last iteration lines of a train_net log (the training's own time)."""
    import re

    stamps = []
    with open(log) as f:
        for line in f:
            m = re.match(r"\[(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d) d2\.utils\.events\]", line)
            if m:
                mo, d, h, mi, s = map(int, m.groups())
                stamps.append(((d * 24 + h) * 60 + mi) * 60 + s)
    return stamps[-1] - stamps[0] if len(stamps) > 1 else None


def _machine():
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} CPUs"


def _report(results, png):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = results["base"]
    print(f"\nbase model on the held-out images: AJI {base['AJI']:.3f}, PQ {base['PQ']:.3f}, "
          f"segm AP {base['segm_AP']:.1f}, AP50@100 {base['AP50@100']:.2f}\n")
    print("| run | images | iterations | training minutes | AJI | PQ | segm AP | AP50@100 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"finetune": "tab:blue", "heads": "tab:green", "scratch": "tab:red"}
    styles = {1: ":", 2: "--", 4: "-"}
    for name, r in results["runs"].items():
        minutes_per_iter = r["train_wall_s"] / 60 / max(p["iteration"] for p in r["points"]) if r["points"] else 0
        for p in r["points"]:
            print(f"| {r['run']} | {r['images']} | {p['iteration']} | {p['iteration'] * minutes_per_iter:.1f} | "
                  f"{p['AJI']:.3f} | {p['PQ']:.3f} | {p['segm_AP']:.1f} | {p['AP50@100']:.2f} |")
        xs = [0] + [p["iteration"] * minutes_per_iter for p in r["points"]]
        for ax, key in zip(axes, ("AJI", "PQ")):
            start = base[key] if r["run"] != "scratch" else 0.0
            ax.plot(xs, [start] + [p[key] for p in r["points"]], styles.get(r["images"], "-"), marker="o", ms=3,
                    color=colours.get(r["run"]), label=f"{r['run']}, {r['images']} image(s)")
    for ax, key in zip(axes, ("AJI", "PQ")):
        ax.axhline(base[key], color="grey", lw=0.8)
        ax.set_xlabel("training CPU minutes (2 cores)")
        ax.set_ylabel(f"{key} on the held-out kidney images")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle("Fine-tuning a model trained without kidney on 1-4 kidney images vs training from scratch")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"\nwrote {png}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("base-data", "curves"))
    p.add_argument("--raw", required=True, help="the real raw dataset ($D2_NUCLEUS_RAW_DATA)")
    p.add_argument("--work", required=True, help="work folder outside the repository")
    p.add_argument("--base-weights", default=None, help="curves: the base model trained on W/prepared_base")
    p.add_argument("--ns", default="1,2,4", help="numbers of fine-tuning images")
    p.add_argument("--runs", default="finetune,heads,scratch")
    p.add_argument("--plan", nargs="+", default=None, metavar="RUN:N,N",
                   help="runs and their numbers of images instead of --ns x --runs, e.g. finetune:1,2,4 heads:4 scratch:4")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="config overrides for every run, e.g. --opts SOLVER.CPU_BF16 False")
    args = p.parse_args()
    args.ns = [int(n) for n in args.ns.split(",")]
    args.runs = args.runs.split(",")
    os.makedirs(args.work, exist_ok=True)
    if args.step == "base-data":
        return base_data(args)
    if not args.base_weights:
        p.error("curves needs --base-weights")
    return curves(args)


if __name__ == "__main__":
    main()
