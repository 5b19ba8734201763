#!/usr/bin/env python
"""
CPU training speed: seconds per iteration of the d2_nucleus recipe vs. plain Detectron2, same
model and same crops, measured in one run (each variant in a fresh process, one after the other).

    python bench/bench_train_speed.py --raw ../shared/data/dataset            # plain vs recipe
    python bench/bench_train_speed.py --raw RAW --variants plain,bf16,recipe --iters 10

Variants (all train the same model from the same initial weights on random 512 px crops):
  plain      Detectron2 as shipped: DatasetMapper (crop + flip, per-annotation mask transforms),
             fp32, NCHW, DefaultTrainer's SimpleTrainer.
  mapper     plain + NucleusDatasetMapper's label-map fast path (same crop + flip augmentation).
  bf16       mapper + bfloat16 autocast on the CPU (AVX-512 BF16 / AMX).
  recipe0    bf16 + channels-last with the CPU speed options off (MODEL.CPU: GROUP_NORM torch,
             ROI_ALIGN torchvision, TUNE_MALLOC False, ...): the recipe before them.
  recipe     bf16 + channels-last + those options (the defaults): what the CPU recipe trains with.

The model defaults to the light ResNet-18-FPN GroupNorm Mask R-CNN (configs/cpu/).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from bench_cpu_speed import OFF as SPEED_OPTIONS_OFF  # noqa: E402  (bench/ is sys.path[0])

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {
    "plain": dict(mapper="detectron2", bf16=False, channels_last=False),
    "mapper": dict(mapper="nucleus", bf16=False, channels_last=False),
    "bf16": dict(mapper="nucleus", bf16=True, channels_last=False),
    "recipe0": dict(mapper="nucleus", bf16=True, channels_last=True, opts=SPEED_OPTIONS_OFF),
    "recipe": dict(mapper="nucleus", bf16=True, channels_last=True),
}
# the variants before "recipe" ran Detectron2's code paths: the speed options off
for _v in ("plain", "mapper", "bf16"):
    VARIANTS[_v]["opts"] = VARIANTS["recipe0"]["opts"]


def run_variant(args, name):
    """Child process: time `iters` training steps of one variant; prints one JSON line."""
    import numpy as np
    import torch
    from detectron2.data import DatasetMapper, build_detection_train_loader
    from detectron2.engine import SimpleTrainer
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer
    from detectron2.utils.events import EventStorage

    import d2_nucleus.modeling  # noqa: F401  (registers NucleusRCNN)
    from d2_nucleus.config import get_nucleus_cfg
    from d2_nucleus.data import NucleusDatasetMapper, register_nucleus_datasets

    v = VARIANTS[name]
    opts = [
        "MODEL.DEVICE", "cpu",
        "SOLVER.IMS_PER_BATCH", str(args.batch),
        "INPUT.CROP.SIZE", f"[{args.crop}, {args.crop}]",
        "INPUT.MIN_SIZE_TRAIN", f"({args.crop},)",
        "DATALOADER.NUM_WORKERS", str(args.workers),
        "SOLVER.CPU_BF16", str(v["bf16"]),
        "MODEL.CHANNELS_LAST", str(v["channels_last"]),
        # the same augmentation for every variant: Detectron2's crop + horizontal flip
        "INPUT.VFLIP", "False", "INPUT.ROT90", "False", "INPUT.STAIN_JITTER.ENABLED", "False",
    ] + v.get("opts", []) + args.opts
    cfg = get_nucleus_cfg(os.path.join(ROOT, args.config), opts, data_root=args.data_root)
    register_nucleus_datasets(cfg=cfg)
    torch.manual_seed(0)
    np.random.seed(0)
    model = build_model(cfg)
    model.train()
    mapper = (DatasetMapper(cfg, is_train=True) if v["mapper"] == "detectron2"
              else NucleusDatasetMapper(cfg, is_train=True))
    loader = build_detection_train_loader(cfg, mapper=mapper)
    trainer = SimpleTrainer(model, loader, build_optimizer(cfg, model))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=v["bf16"])
    times = []
    with EventStorage(0):
        for i in range(args.warmup + args.iters):
            t0 = time.perf_counter()
            trainer.iter = i
            with autocast:
                trainer.run_step()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    print(json.dumps({"variant": name, "s_per_iter": float(np.mean(times)),
                      "median": float(np.median(times)), "iters": len(times)}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw", default=os.environ.get("D2_NUCLEUS_RAW_DATA", os.path.join(ROOT, "..", "shared", "data", "dataset")),
                   help="raw dataset (prepared into a temporary folder unless --data-root is given)")
    p.add_argument("--data-root", default=None, help="an already prepared data root")
    p.add_argument("--config", default="configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml")
    p.add_argument("--variants", default="plain,recipe")
    p.add_argument("--iters", type=int, default=8, help="timed iterations per variant (default 8)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first (default 2)")
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--workers", type=int, default=1, help="data-loader workers (default 1)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra config KEY VALUE pairs")
    args = p.parse_args()
    if args.child:
        return run_variant(args, args.child)

    tmp = None
    if args.data_root is None:
        from d2_nucleus.data import prepare_dataset

        tmp = tempfile.TemporaryDirectory(prefix="bench-train-")
        args.data_root = os.path.join(tmp.name, "prepared")
        prepare_dataset(args.raw, args.data_root, progress=False)
    results = []
    for name in args.variants.split(","):
        cmd = [sys.executable, __file__, "--child", name, "--data-root", args.data_root, "--config", args.config,
               "--iters", str(args.iters), "--warmup", str(args.warmup), "--crop", str(args.crop),
               "--batch", str(args.batch), "--workers", str(args.workers)] + args.opts
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.stderr.write(out.stderr[-4000:])
            raise SystemExit(f"variant {name} failed")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{name:8s} {results[-1]['s_per_iter']:.2f} s/iter (median {results[-1]['median']:.2f})", flush=True)
    base = results[0]["s_per_iter"]
    print(f"\n{args.config}, {args.crop} px crops, batch {args.batch}, {args.workers} loader worker(s), "
          f"{args.iters} timed iterations after {args.warmup} warm-up")
    print("| variant | s/iter | median | speed-up vs " + results[0]["variant"] + " |\n| --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['variant']} | {r['s_per_iter']:.2f} | {r['median']:.2f} | {base / r['s_per_iter']:.2f}x |")


if __name__ == "__main__":
    main()
