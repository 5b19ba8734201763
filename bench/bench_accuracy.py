#!/usr/bin/env python
"""
Accuracy on nucleus_val against training time (a learning curve), and test-time variants.

Learning curve: every checkpoint of a finished training run evaluated after training (not during
it: evaluation would steal the CPU from training), by `tools/train_net.py --eval-only` as a user
runs it. The training minutes of a checkpoint are its file's modification time minus the run's
"Starting training" time in `log.txt`.

    python bench/bench_accuracy.py curve --run-dir output/curve --data-root PREPARED \\
        [--config CONFIG] [--out bench_out/curve] [--opts KEY VALUE ...]

Test-time variants: one checkpoint evaluated under named sets of config overrides.

    python bench/bench_accuracy.py variants --weights W --data-root PREPARED \\
        --variant "default:" --variant "thresh 0.3:TEST.LABEL_MAP_SCORE_THRESH 0.3" ...

Each writes `results.json`, prints a Markdown table (segm AP50@100 = the challenge metric, segm
AP@[.5:.95] and AP50 with 3,000 detections per image, AJI, PQ, DQ, SQ) and, for the curve, a PNG.

The challenge metric's top 100: which of the detections it counts are false positives, and what
AP50@100 the same detections would score if every false positive ranked below every true positive
(the most any rescoring of them can reach), from an evaluation's `coco_instances_results.json`.

    python bench/bench_accuracy.py top --results OUT/inference/nucleus_val/coco_instances_results.json \
        --data-root PREPARED
"""
import argparse
import contextlib
import datetime
import glob
import io
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = ("AP50@100", "AP", "AP50", "AJI", "PQ", "DQ", "SQ")


def evaluate(config, weights, data_root, opts, out_dir):
    """One `tools/train_net.py --eval-only` run; returns the nucleus_val metrics."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", config,
           "--data-root", data_root, "--eval-only", "MODEL.WEIGHTS", weights, "OUTPUT_DIR", out_dir] + list(opts)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"evaluation of {weights} failed")
    # with TEST.AUG.ENABLED the TTA results (inference_TTA/) are the ones asked for
    path = (glob.glob(os.path.join(out_dir, "inference_TTA", "*", "nucleus_metrics.json"))
            or glob.glob(os.path.join(out_dir, "inference", "*", "nucleus_metrics.json")))[0]
    with open(path) as f:
        r = json.load(f)["results"]
    return {"AP50@100": r["segm"]["AP50@100"], "AP": r["segm"]["AP"], "AP50": r["segm"]["AP50"],
            **{k: 100 * r["nucleus"][k] for k in ("AJI", "PQ", "DQ", "SQ")}}


def training_start(run_dir):
    with open(os.path.join(run_dir, "log.txt")) as f:
        for line in f:
            m = re.match(r"\[(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)\]? .*Starting training from iteration", line)
            if m:
                mo, d, h, mi, s = map(int, m.groups())
                year = datetime.datetime.fromtimestamp(os.path.getmtime(os.path.join(run_dir, "log.txt"))).year
                return datetime.datetime(year, mo, d, h, mi, s).timestamp()
    raise SystemExit(f"{run_dir}/log.txt: no 'Starting training' line")


def table(rows, first):
    lines = [f"| {first} | " + " | ".join(COLUMNS) + " |", "| --- " * (len(COLUMNS) + 1) + "|"]
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.2f}" for c in COLUMNS) + " |")
    return "\n".join(lines)


def plot_curve(points, path, title="CPU recipe learning curve (ResNet-18-FPN GN, from scratch)"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mins = [p["minutes"] for p in points]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for k in ("AJI", "PQ", "DQ", "SQ"):
        a.plot(mins, [p[k] for p in points], "o-", label=k)
    a.set_xlabel("training minutes (2 CPU cores)")
    a.set_ylabel("% (nucleus_val)")
    a.legend()
    a.grid(alpha=0.3)
    for k in ("AP50", "AP"):
        b.plot(mins, [p[k] for p in points], "o-", label=f"segm {k} (3,000 dets)")
    b2 = b.twinx()
    b2.plot(mins, [p["AP50@100"] for p in points], "s--", color="k", label="AP50@100 (challenge)")
    b2.set_ylabel("AP50@100")
    b.set_xlabel("training minutes (2 CPU cores)")
    b.legend(loc="lower right")
    b2.legend(loc="center right")
    b.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def top(results_path, data_root, max_dets=100):
    """The `top` mode: the counted detections' false positives per image, and the AP bounds."""
    from pycocotools.coco import COCO

    sys.path.insert(0, ROOT)
    from d2_nucleus.data.layout import annotation_file
    from d2_nucleus.evaluation.coco_eval import counted_detections

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(annotation_file(data_root, "val"))
    with open(results_path) as f:
        r = counted_detections(gt, json.load(f), max_dets)
    print("| image | nuclei | counted | false positives | their ranks |\n| --- | --- | --- | --- | --- |")
    for im in r["images"]:
        ranks = im["false_positive_ranks"]
        print(f"| {gt.imgs[im['image_id']]['file_name']} | {im['num_gt']} | {im['num_counted']} | {len(ranks)} | "
              f"{', '.join(map(str, ranks))} |")
    tp = len(r["counted"]) - len(r["false_positives"])
    print(f"\n{tp} true positives of {len(r['counted'])} counted, {r['num_gt']} nuclei")
    print(f"AP50@{max_dets} {100 * r['ap']:.2f}; false positives last {100 * r['ap_false_positives_last']:.2f}; "
          f"bound for these true positives {100 * r['ap_bound']:.2f}; ceiling (all counted true) "
          f"{100 * r['ap_ceiling']:.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("curve", "variants", "top"))
    p.add_argument("--config", default=os.path.join(ROOT, "configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml"))
    p.add_argument("--data-root", required=True, help="tools/prepare_data.py output (nucleus_val)")
    p.add_argument("--run-dir", help="curve: the training run's OUTPUT_DIR")
    p.add_argument("--weights", help="variants: the checkpoint")
    p.add_argument("--variant", action="append", default=[], help='variants: "name: KEY VALUE ..."')
    p.add_argument("--results", help="top: an evaluation's coco_instances_results.json (nucleus_val)")
    p.add_argument("--out", default=None, help="results folder (default: a temporary one)")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="config overrides for every evaluation")
    args = p.parse_args()
    if args.mode == "top":
        return top(args.results, args.data_root)
    out = args.out or tempfile.mkdtemp(prefix="bench-accuracy-")
    os.makedirs(out, exist_ok=True)
    if args.mode == "curve":
        start = training_start(args.run_dir)
        ckpts = sorted(glob.glob(os.path.join(args.run_dir, "model_*.pth")), key=os.path.getmtime)
        ckpts = [c for c in ckpts if not c.endswith("model_best.pth")]
        # model_final.pth is the last numbered checkpoint again when MAX_ITER is a multiple of
        # CHECKPOINT_PERIOD: keep it only when no checkpoint was saved within 5 s of it
        ckpts = [c for c in ckpts if not c.endswith("model_final.pth")
                 or all(abs(os.path.getmtime(c) - os.path.getmtime(o)) > 5 for o in ckpts if o != c)]
        points = []
        for c in ckpts:
            m = evaluate(args.config, c, args.data_root, args.opts, os.path.join(out, os.path.basename(c)[:-4]))
            m["checkpoint"] = os.path.basename(c)
            m["minutes"] = (os.path.getmtime(c) - start) / 60
            points.append(m)
            print(f"{m['checkpoint']}: {m['minutes']:.1f} min  " + "  ".join(f"{k} {m[k]:.2f}" for k in COLUMNS),
                  flush=True)
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(points, f, indent=1)
        plot_curve(points, os.path.join(out, "learning_curve.png"))
        print(table([(f"{p['checkpoint']} ({p['minutes']:.0f} min)", p) for p in points], "checkpoint"))
        print(f"\n{out}/results.json, {out}/learning_curve.png")
    else:
        rows = []
        for spec in args.variant:
            name, _, kv = spec.partition(":")
            m = evaluate(args.config, args.weights, args.data_root, args.opts + kv.split(),
                         os.path.join(out, re.sub(r"\W+", "_", name)))
            rows.append((name.strip(), m))
            print(f"{name.strip()}: " + "  ".join(f"{k} {m[k]:.2f}" for k in COLUMNS), flush=True)
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump([dict(variant=n, **m) for n, m in rows], f, indent=1)
        print(table(rows, "variant"))


if __name__ == "__main__":
    main()
