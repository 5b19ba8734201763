#!/usr/bin/env python
"""
Whole-slide throughput against the hardware (issue 28 item 3): seconds per mm^2 of tissue in slide
mode (tools/segment_slides.py's config and pipeline, measurements on), the model's FLOPs per mm^2
(fvcore's FlopCountAnalysis, which Detectron2 depends on) and the FLOP/s they run at, against the peak
FLOP/s of this CPU's cores (a large float32 matmul on torch's threads). Numbers in BENCHMARKS.md
"Seconds per mm² of tissue".

    python bench/bench_throughput.py --raw RAW --weights W                  # the CPU recipe
    python bench/bench_throughput.py --raw RAW --config configs/scratch/mask_rcnn_R_50_FPN_scratch_gn.yaml \\
        --weights random --opts TEST.LABEL_MAP_SCORE_THRESH 0 TEST.DETECTIONS_PER_IMAGE 350  # R50, random
    python bench/bench_throughput.py --raw RAW --weights W --variant nchw MODEL.CHANNELS_LAST False --rounds 2

The slide: ``--images`` real 1000 x 1000 training images of ``--raw`` edge to edge (``--cols`` a
row) on glass, at 0.252 um/px (d2_nucleus.data.synthetic_slide, lossless), written once into
``--work``. Each variant (``--variant NAME KEY VALUE ...``, config overrides on top of the slide
tool's config; ``base`` is the config as it is; the word ``COMPILE_BACKBONE`` among them puts the
backbone + FPN through ``torch.compile``) gets its own model, warmed up on one tile, and the
variants run one after the other, ``--rounds`` times (A, B, A, B: a shared machine's load falls on
each alike); the best round of each is reported with its load average. Per stage (backbone, RPN,
box head, mask head) the model's time comes from forward hooks. FLOPs are counted on the tiles of
the first variant's last pass (the model's own inputs, at its test scale), with PyTorch's kernels in
place of d2_nucleus's C++ ones (the same arithmetic, which fvcore can see); fvcore counts a
multiply-add as one flop: FLOPs here are 2 x its count.

``--weights random``: a randomly initialised model (seed 0) saved into ``--work``; its scores are
all about 0.5, so the detections per tile are set by ``TEST.DETECTIONS_PER_IMAGE`` (pass the trained
model's count a tile to compare like with like).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

RECIPE = "configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml"
# ops fvcore cannot count (C++ kernels, NNPACK), replaced by PyTorch's for the count (the same arithmetic;
# Winograd does fewer multiplications than it counts: the count is the direct convolution's)
COUNT_OPTS = ["MODEL.CPU.GROUP_NORM", "torch", "MODEL.CPU.ROI_ALIGN", "torchvision", "MODEL.CPU.RPN_NMS_THREADS", "1",
              "MODEL.CPU.CONV3X3", "onednn"]
STAGES = {"backbone": ("backbone",), "rpn": ("proposal_generator",),
          "box head": ("roi_heads.box_pooler", "roi_heads.box_head", "roi_heads.box_predictor"),
          "mask head": ("roi_heads.mask_pooler", "roi_heads.mask_head")}


def lscpu():
    info = {"model": None, "flags": []}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                info["model"] = value.strip()
            elif key.strip() == "Flags":
                info["flags"] = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in value.split()]
    except OSError:
        pass
    return info


def peak_flops(dtype_name="float32", n=4096, repeats=5):
    """FLOP/s of an n x n matmul on torch's threads (best of ``repeats``): the cores' practical peak."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n ** 3 / best


def _timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def build_slide(args):
    from bench_slide import _mosaic_slide  # noqa: E402  (bench/ is on sys.path as this script's folder)

    from d2_nucleus.data.image_io import read_image
    from d2_nucleus.data.raw import scan_train

    path = os.path.join(args.work, f"mosaic_{args.images}x{args.cols}.svs")
    if not os.path.isfile(path):
        items = scan_train(args.raw).images[: args.images]
        images = [read_image(it.image_file, "RGB") for it in items]
        tmp = path + ".tmp.svs"
        _mosaic_slide(tmp, images, cols=args.cols, gap=0, margin=args.margin)
        os.replace(tmp, path)
    return path


def slide_cfg(args, extra_opts):
    """The config tools/segment_slides.py builds from the same flags (its parser, its flag -> key mapping)."""
    import segment_slides

    from d2_nucleus.slide.options import slide_cfg_from_args

    argv = ["x", "--config-file", args.config, "--weights", args.weights, "--out", args.work, "--device", "cpu",
            "--opts", "MODEL.DEVICE", "cpu", *args.opts, *extra_opts]
    return slide_cfg_from_args(segment_slides.get_parser().parse_args(argv))


class Stages:
    """Per-stage model seconds from forward hooks (pre-hook starts a clock, hook stops it)."""

    def __init__(self, model):
        self.seconds = {k: 0.0 for k in STAGES}
        self.rois = {"box head": 0, "mask head": 0}  # RoIs through the heads (their first layer's batch)
        self._start = {}
        modules = dict(model.named_modules())
        for stage, names in STAGES.items():
            for name in names:
                if name in modules:
                    modules[name].register_forward_pre_hook(self._pre(name))
                    modules[name].register_forward_hook(self._post(stage, name))

    def _pre(self, name):
        def hook(module, inputs):
            self._start[name] = time.perf_counter()
            head = {"roi_heads.box_head": "box head", "roi_heads.mask_head": "mask head"}.get(name)
            if head and inputs and hasattr(inputs[0], "shape"):
                self.rois[head] += int(inputs[0].shape[0])
        return hook

    def _post(self, stage, name):
        def hook(module, inputs, outputs):
            self.seconds[stage] += time.perf_counter() - self._start.pop(name)
        return hook

    def reset(self):
        self.seconds = {k: 0.0 for k in STAGES}
        self.rois = {"box head": 0, "mask head": 0}


def count_flops(cfg, batches):
    """
    fvcore's count over the recorded model inputs, one image a trace: (total multiply-adds, per stage).
    (Detectron2's own wrapper, detectron2.utils.analysis, imports caffe2, which PyTorch no longer
    ships: the model is wrapped here to take an image tensor and return tensors, as that wrapper does.)
    """
    import torch
    from fvcore.nn import FlopCountAnalysis

    from d2_nucleus.engine import NucleusPredictor

    count_cfg = cfg.clone()
    count_cfg.defrost()
    count_cfg.merge_from_list(COUNT_OPTS)
    model = NucleusPredictor(count_cfg).model

    class Inference(torch.nn.Module):  # tensors in and out (the RLEs of the post-processing are not traceable)
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image):
            r = self.m.inference([{"image": image}], do_postprocess=False)[0]
            return r.pred_boxes.tensor, r.scores, r.pred_masks

    wrapper = Inference(model).eval()
    total, stages = 0.0, {k: 0.0 for k in STAGES}
    with torch.no_grad():
        for inputs in batches:
            for one in inputs:  # one image a trace: the counts add up
                fca = FlopCountAnalysis(wrapper, (one["image"],))
                fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
                total += fca.total()
                by_module = fca.by_module()
                for stage, names in STAGES.items():
                    stages[stage] += sum(by_module.get(f"m.{n}", 0) for n in names)
    return total, stages


def run_variant(state, slide, out_dir):
    from d2_nucleus.slide import segment_slide

    import resource

    state["stages"].reset()
    state["recorded"].clear()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    s = segment_slide(state["predictor"], state["cfg"], slide, out_dir, overwrite=True, progress=False)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "pipeline_s": s["seconds"], "model_s": s["seconds_model"], "read_s": s["seconds_read"],
            "stitch_s": s["seconds_stitch"], "measure_s": s["seconds_measure"], "tissue_mm2": s["tissue_mm2"],
            "nuclei": s["nuclei"], "tiles_run": s["tiles_run"], "stages": dict(state["stages"].seconds),
            "rois": dict(state["stages"].rois),
            "loadavg": os.getloadavg()[0]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw", default=os.environ.get("D2_NUCLEUS_RAW_DATA"), help="the real dataset (train/*/images)")
    p.add_argument("--config", default=RECIPE)
    p.add_argument("--weights", required=True, help="a checkpoint of --config, or 'random'")
    p.add_argument("--work", default="/tmp/bench_throughput")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--margin", type=int, default=200, help="px of glass around the images")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--variant", nargs="+", action="append", default=[], metavar=("NAME", "KEY VALUE"),
                   help="a variant: its name and config overrides (repeatable); 'base' always runs first")
    p.add_argument("--opts", nargs="+", default=[], help="config overrides for every variant")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's, all cores). On a shared machine --threads 1 and the "
                   "CPU seconds column compare variants more steadily than wall time (no thread waits for another)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if not args.raw:
        p.error("--raw (or $D2_NUCLEUS_RAW_DATA) is needed: the slide is made of the real images")
    os.makedirs(args.work, exist_ok=True)
    args.config = os.path.join(ROOT, args.config) if not os.path.isabs(args.config) else args.config

    import torch

    from d2_nucleus.engine import NucleusPredictor
    from d2_nucleus.modeling.cpu.malloc import tune_process

    if args.threads:
        torch.set_num_threads(args.threads)

    if args.weights == "random":
        from detectron2.modeling import build_model

        from d2_nucleus.config import get_nucleus_cfg

        torch.manual_seed(0)
        args.weights = os.path.join(args.work, f"random_{os.path.basename(args.config)}.pth")
        model = build_model(get_nucleus_cfg(args.config, ["MODEL.DEVICE", "cpu"]))
        torch.save({"model": model.state_dict()}, args.weights)
        del model
    slide = build_slide(args)
    variants = [("base", [])] + [(v[0], v[1:]) for v in args.variant if v[0] != "base"]
    info = {"machine": lscpu(), "date": time.strftime("%Y-%m-%d %H:%M %Z"), "slide": slide,
            "config": os.path.relpath(args.config, ROOT), "weights": args.weights,
            "opts": args.opts, "torch_threads": torch.get_num_threads(), "variants": {}}
    info["peak_flops_fp32"] = peak_flops("float32")
    print(json.dumps({k: info[k] for k in ("machine", "peak_flops_fp32", "torch_threads")}), flush=True)

    states = {}
    for name, opts in variants:
        compile_backbone = "COMPILE_BACKBONE" in opts
        cfg = slide_cfg(args, [o for o in opts if o != "COMPILE_BACKBONE"])
        tune_process(cfg)
        predictor = NucleusPredictor(cfg, batch_size=cfg.SLIDE.BATCH_SIZE)
        if compile_backbone:  # backbone + FPN through torch.compile (inductor's CPU code); compiles at warm-up
            predictor.model.backbone = torch.compile(predictor.model.backbone)
        recorded = []
        predictor.model.register_forward_pre_hook(lambda m, a, rec=recorded: rec.append(a[0]))
        state = {"cfg": cfg, "predictor": predictor, "recorded": recorded, "stages": Stages(predictor.model)}
        side = int(cfg.SLIDE.TILE_SIZE)
        warm = np.full((side, side, 3), 200, np.uint8)
        state["warmup_s"] = _timed(lambda: predictor([warm]))  # a full-size tile (a compiled model compiles here)
        states[name] = state
        info["variants"][name] = {"opts": opts, "warmup_s": state["warmup_s"], "rounds": []}
    for r in range(args.rounds):
        for name, _ in variants:
            res = run_variant(states[name], slide, os.path.join(args.work, f"out_{name}"))
            info["variants"][name]["rounds"].append(res)
            print(json.dumps({"round": r, "variant": name, **res}), flush=True)
    if not args.no_flops:
        base = states["base"]
        t0 = time.perf_counter()
        macs, stage_macs = count_flops(base["cfg"], base["recorded"])
        info["flops"] = 2 * macs
        info["stage_flops"] = {k: 2 * v for k, v in stage_macs.items()}
        print(json.dumps({"flops": info["flops"], "stage_flops": info["stage_flops"],
                          "count_s": time.perf_counter() - t0}), flush=True)

    peak = info["peak_flops_fp32"]
    m = info["machine"]
    print(f"\n{m['model']} ({' '.join(m['flags'])}), {info['torch_threads']} torch threads, {info['date']}; "
          f"{info['config']}, weights {os.path.basename(args.weights)}; peak float32 matmul "
          f"{peak / 1e9:.1f} GFLOP/s")
    best = {n: min(v["rounds"], key=lambda r: r["pipeline_s"]) for n, v in info["variants"].items()}
    b0 = best["base"]
    print(f"slide {os.path.basename(slide)}: {b0['tissue_mm2']:.3f} mm^2 of tissue, {b0['tiles_run']} tiles; "
          f"base: {b0['rois']['box head'] / b0['tiles_run']:.0f} proposals and "
          f"{b0['rois']['mask head'] / b0['tiles_run']:.0f} detections (mask-head RoIs) a tile")
    cpu_best = {n: min(v["rounds"], key=lambda r: r["cpu_s"]) for n, v in info["variants"].items()}
    print("| variant | s/mm^2 | model s/mm^2 | nuclei | backbone / RPN / box head / mask head s | "
          "warm-up s | vs base | CPU s/mm^2 (best round) | vs base by CPU s | load average |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in best.items():
        st = r["stages"]
        c = cpu_best[name]
        print(f"| {name} | {r['pipeline_s'] / r['tissue_mm2']:.1f} | {r['model_s'] / r['tissue_mm2']:.1f} | "
              f"{r['nuclei']} | {st['backbone']:.1f} / {st['rpn']:.1f} / {st['box head']:.1f} / {st['mask head']:.1f} | "
              f"{info['variants'][name]['warmup_s']:.1f} | {b0['pipeline_s'] / r['pipeline_s']:.2f}x | "
              f"{c['cpu_s'] / c['tissue_mm2']:.1f} | {cpu_best['base']['cpu_s'] / c['cpu_s']:.2f}x | "
              f"{r['loadavg']:.1f} |")
    if "flops" in info:
        f = info["flops"]
        mm2 = b0["tissue_mm2"]
        print(f"\nRoofline (base): {f / 1e9 / mm2:.0f} GFLOP/mm^2 "
              f"({', '.join(f'{k} {v / 1e9 / mm2:.0f}' for k, v in info['stage_flops'].items())}); "
              f"at {f / b0['model_s'] / 1e9:.1f} GFLOP/s over the model's time = "
              f"{100 * f / b0['model_s'] / peak:.0f}% of the matmul peak; the peak would take "
              f"{f / peak / mm2:.1f} s/mm^2")
        for k, v in info["stage_flops"].items():
            t = b0["stages"][k]
            if t > 0:
                print(f"  {k}: {v / 1e9:.0f} GFLOP in {t:.1f} s = {v / t / 1e9:.1f} GFLOP/s ({100 * v / t / peak:.0f}% of peak)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(info, fh, indent=1)


if __name__ == "__main__":
    main()
