#!/usr/bin/env python
"""
Precision by machine (issue 28 item 1): float32 against bfloat16 autocast (``SOLVER.CPU_BF16``),
training s/iteration and inference s/image of the CPU recipe, on this CPU's own instruction set
and on an emulated older one, in one run. Numbers in BENCHMARKS.md "Precision by machine".

    python bench/bench_precision.py --data-root PREPARED --weights W --image DENSE_1000x1000.png \\
        [--isas native,SSE41] [--precisions fp32,bf16] [--timeout 240]

An ISA other than ``native`` is emulated in the child processes: oneDNN's ``ONEDNN_MAX_CPU_ISA``
(its convolutions and matmuls) plus ``ATEN_CPU_CAPABILITY`` (ATen's own vectorised kernels:
``default`` below AVX2). The run shows that they took effect: ``torch.backends.cpu.get_cpu_capability()``
and the oneDNN verbose lines (``ONEDNN_VERBOSE=1``) of one float32 and one bfloat16 convolution in
each environment: the ISA oneDNN reports and the implementation it ran (a bf16 convolution without
a oneDNN line ran ATen's reference kernel). d2_nucleus's C++ kernels are compiled for the CPU they
run on (``-march=native``): ``--kernels-arch x86-64-v2`` builds them for a CPU without AVX/AVX2
(``D2_NUCLEUS_NATIVE_ARCH``) in the emulated environments and checks them against PyTorch's
kernels, so a CPU without AVX-512 (or AVX2) gets working kernels.

Each (ISA, precision, task) runs in a fresh process with a time limit (``--timeout``): where bf16
is emulated it can be tens of times slower than float32, and what it reached is reported ("3 of 3
iterations", "> 240 s: 1 of 4 calls"). ``--rounds 2`` runs the whole matrix twice, interleaved, so
a shared machine's load falls on every variant alike (the best of the rounds is reported).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# ATen's CPU capability for an emulated oneDNN ISA (ATen knows default, avx2, avx512)
ATEN_CAPABILITY = {"SSE41": "default", "AVX": "default", "AVX2": "avx2", "AVX2_VNNI": "avx2",
                   "AVX2_VNNI_2": "avx2", "AVX512_CORE": "avx512", "AVX512_CORE_VNNI": "avx512",
                   "AVX512_CORE_BF16": "avx512", "AVX512_CORE_FP16": "avx512", "AVX512_CORE_AMX": "avx512"}
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def machine():
    """lscpu's model name and the feature flags that decide the precision, the load average."""
    info = {"model": None, "flags": []}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                info["model"] = value.strip()
            elif key.strip() == "Flags":
                have = set(value.split())
                info["flags"] = [f for f in CPU_FLAGS if f in have]
    except (OSError, subprocess.CalledProcessError):
        pass
    info["cpus"] = os.cpu_count()
    info["loadavg"] = os.getloadavg()
    return info


def isa_env(isa, kernels_arch=None):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for k in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "ONEDNN_VERBOSE"):
        env.pop(k, None)
    if isa != "native":
        env["ONEDNN_MAX_CPU_ISA"] = isa
        env["ATEN_CPU_CAPABILITY"] = ATEN_CAPABILITY.get(isa.upper(), "default")
        if kernels_arch:
            env["D2_NUCLEUS_NATIVE_ARCH"] = kernels_arch
    return env


# -------------------------------------------------------------------------------------------------
# children
# -------------------------------------------------------------------------------------------------
def child_probe(args):
    """What the environment gives: torch's capability, oneDNN's ISA and kernels, the C++ kernels."""
    import torch

    res = {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    x = torch.randn(2, 64, 56, 56).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last).eval()
    with torch.no_grad():
        for name, enabled in (("fp32", False), ("bf16", True)):
            print(f"@@conv {name}", flush=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                conv(x)
            print("@@end", flush=True)
    # the C++ kernels: built for this environment's -march, and equal to PyTorch's kernels
    from torchvision.ops import roi_align

    from d2_nucleus.modeling.cpu import native

    res["kernels_cflags"] = " ".join(native.CFLAGS)
    ops = native.native_ops()
    res["kernels_built"] = ops is not None
    if ops is not None:
        g = torch.Generator().manual_seed(0)
        maps = [torch.randn(1, 32, 40, 44, generator=g).contiguous(memory_format=torch.channels_last)]
        xy = torch.rand(200, 2, generator=g) * 150
        rois = torch.cat([torch.zeros(200, 1), xy, xy + 2 + torch.rand(200, 2, generator=g) * 40], 1)
        out = ops.roi_align_nhwc(maps, rois, torch.zeros(200, dtype=torch.long), [0.25], 7, 0, True, torch.float32)
        ref = roi_align(maps[0].contiguous(), rois, 7, 0.25, 0, True)
        res["roi_align_equal_torchvision"] = bool(torch.equal(out, ref))
        w, b = torch.randn(32, generator=g), torch.randn(32, generator=g)
        y = ops.group_norm_nhwc(maps[0], 8, w, b, 1e-5, False)
        res["group_norm_max_abs_diff"] = float((y - torch.nn.functional.group_norm(maps[0], 8, w, b, 1e-5)).abs().max())
    print("@@json " + json.dumps(res), flush=True)


def child_infer(args):
    """Inference s/image, one JSON line per call (a time limit keeps what was reached)."""
    import torch

    from d2_nucleus.config import get_inference_cfg
    from d2_nucleus.data.image_io import read_image
    from d2_nucleus.engine import NucleusPredictor
    from d2_nucleus.modeling.cpu.malloc import tune_process

    torch.manual_seed(0)
    cfg = get_inference_cfg(os.path.join(ROOT, args.config), opts=["SOLVER.CPU_BF16", args.bf16] + args.opts,
                            weights=args.weights, device="cpu")
    tune_process(cfg)
    predictor = NucleusPredictor(cfg)
    image = read_image(args.image, cfg.INPUT.FORMAT)
    for i in range(1 + args.repeats):  # the first call is the warm-up
        t0 = time.perf_counter()
        out = predictor([image])
        print("@@json " + json.dumps({"call": i, "s": time.perf_counter() - t0, "detections": len(out[0])}), flush=True)


def child_train(args):
    """Training s/iteration of the recipe (its own trainer step under cpu_autocast), one JSON line an iteration."""
    import numpy as np
    import torch
    from detectron2.data import build_detection_train_loader
    from detectron2.engine import SimpleTrainer
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer
    from detectron2.utils.events import EventStorage

    import d2_nucleus.modeling  # noqa: F401
    from d2_nucleus.config import get_nucleus_cfg
    from d2_nucleus.data import NucleusDatasetMapper, register_nucleus_datasets
    from d2_nucleus.modeling.cpu.malloc import tune_process
    from d2_nucleus.utils.autocast import cpu_autocast

    opts = ["MODEL.DEVICE", "cpu", "SOLVER.CPU_BF16", args.bf16, "DATALOADER.NUM_WORKERS", "1",
            # the same crops for every variant (bench_train_speed.py's choice)
            "INPUT.VFLIP", "False", "INPUT.ROT90", "False", "INPUT.STAIN_JITTER.ENABLED", "False"] + args.opts
    cfg = get_nucleus_cfg(os.path.join(ROOT, args.config), opts, data_root=args.data_root)
    register_nucleus_datasets(cfg=cfg)
    tune_process(cfg)
    torch.manual_seed(0)
    np.random.seed(0)
    model = build_model(cfg)
    model.train()
    loader = build_detection_train_loader(cfg, mapper=NucleusDatasetMapper(cfg, is_train=True))
    trainer = SimpleTrainer(model, loader, build_optimizer(cfg, model))
    with EventStorage(0):
        for i in range(1 + args.iters):  # the first iteration is the warm-up
            t0 = time.perf_counter()
            trainer.iter = i
            with cpu_autocast(cfg):
                trainer.run_step()
            print("@@json " + json.dumps({"iter": i, "s": time.perf_counter() - t0}), flush=True)


# -------------------------------------------------------------------------------------------------
def _run(cmd, env, timeout):
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        out, err, timed_out, rc = proc.stdout, proc.stderr, False, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        timed_out, rc = True, None
    return out, err, timed_out, rc, time.perf_counter() - t0


def _json_lines(out):
    return [json.loads(line[7:]) for line in out.splitlines() if line.startswith("@@json ")]


def probe(args, isa):
    env = isa_env(isa, args.kernels_arch)
    env["ONEDNN_VERBOSE"] = "1"
    out, err, timed_out, rc, _ = _run([sys.executable, __file__, "--child", "probe"], env, args.build_timeout)
    res = (_json_lines(out) or [{}])[-1]
    if timed_out or rc:
        res["error"] = "timed out" if timed_out else err.strip().splitlines()[-1:]
    m = re.search(r"onednn_verbose,.*?info,cpu,isa:([^\n]+)", out)
    res["onednn_isa"] = m.group(1).strip() if m else None
    for name, block in re.findall(r"@@conv (\w+)\n(.*?)@@end", out, re.S):
        impl = re.findall(r"primitive,exec,cpu,convolution,([^,]+),[^,]+,src:(\w+)", block)
        res[f"conv_{name}"] = f"{impl[0][0]} ({impl[0][1]})" if impl else "no oneDNN convolution (ATen's reference kernel)"
    return res


def measure(args, isa, precision, task):
    bf16 = {"fp32": "False", "bf16": "True"}[precision]
    cmd = [sys.executable, __file__, "--child", task, "--config", args.config, "--bf16", bf16]
    if task == "infer":
        cmd += ["--weights", args.weights, "--image", args.image, "--repeats", str(args.repeats)]
        want = args.repeats
    else:
        cmd += ["--data-root", args.data_root, "--iters", str(args.iters)]
        want = args.iters
    out, err, timed_out, rc, wall = _run(cmd + args.opts, isa_env(isa, args.kernels_arch), args.timeout)
    if rc:
        sys.stderr.write(err[-3000:])
        raise SystemExit(f"{isa} {precision} {task} failed")
    rows = _json_lines(out)
    timed = [r["s"] for r in rows[1:]]
    res = {"isa": isa, "precision": precision, "task": task, "timed_out": timed_out, "wall_s": wall,
           "done": len(timed), "wanted": want, "times": [r["s"] for r in rows],
           "best": min(timed) if timed else None, "mean": sum(timed) / len(timed) if timed else None,
           "detections": rows[-1].get("detections") if rows else None, "loadavg": os.getloadavg()}
    print(json.dumps(res), flush=True)
    return res


def _cell(r, key):
    if r is None:
        return "-"
    if r[key] is None:  # not even the warm-up finished
        first = r["times"][0] if r["times"] else None
        return (f"> {r['wall_s']:.0f} s: warm-up {'not finished' if first is None else f'{first:.0f} s'}, "
                f"0 of {r['wanted']}")
    text = f"{r[key]:.2f}"
    if r["done"] < r["wanted"]:
        text += f" ({r['done']} of {r['wanted']} in {r['wall_s']:.0f} s)"
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml")
    p.add_argument("--weights", help="a float32-trained checkpoint of --config (inference)")
    p.add_argument("--image", help="a dense 1000 x 1000 H&E image (inference)")
    p.add_argument("--data-root", help="tools/prepare_data.py output (training)")
    p.add_argument("--isas", default="native,SSE41",
                   help="'native' and oneDNN ISA names to emulate (ONEDNN_MAX_CPU_ISA), e.g. SSE41, AVX2")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--tasks", default="infer,train")
    p.add_argument("--repeats", type=int, default=1, help="timed inference calls after the warm-up")
    p.add_argument("--iters", type=int, default=2, help="timed training iterations after the warm-up")
    p.add_argument("--rounds", type=int, default=1, help="run the whole matrix this many times, interleaved")
    p.add_argument("--timeout", type=float, default=150, help="seconds a (ISA, precision, task) process may run")
    p.add_argument("--build-timeout", type=float, default=600, help="seconds the probe may take (C++ build)")
    p.add_argument("--kernels-arch", default=None,
                   help="build the C++ kernels for this -march in the emulated ISAs (e.g. x86-64-v2)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--bf16", default="False", help=argparse.SUPPRESS)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs for every run")
    args = p.parse_args()
    if args.child:
        return {"probe": child_probe, "infer": child_infer, "train": child_train}[args.child](args)
    tasks = args.tasks.split(",")
    if "infer" in tasks and not (args.weights and args.image):
        p.error("inference needs --weights and --image")
    if "train" in tasks and not args.data_root:
        p.error("training needs --data-root")
    isas, precisions = args.isas.split(","), args.precisions.split(",")

    info = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M %Z"), "probes": {}, "runs": []}
    print(json.dumps(info["machine"]), flush=True)
    for isa in isas:
        info["probes"][isa] = probe(args, isa)
        print(isa, json.dumps(info["probes"][isa]), flush=True)
    for _ in range(args.rounds):
        for task in tasks:
            for isa in isas:
                for precision in precisions:
                    info["runs"].append(measure(args, isa, precision, task))

    def best(isa, precision, task):
        rs = [r for r in info["runs"] if (r["isa"], r["precision"], r["task"]) == (isa, precision, task)]
        done = [r for r in rs if r["best"] is not None]
        return min(done, key=lambda r: r["best"]) if done else (rs[-1] if rs else None)

    m = info["machine"]
    print(f"\n{m['model']}, {m['cpus']} CPUs, flags: {' '.join(m['flags']) or 'none of ' + ', '.join(CPU_FLAGS)}; "
          f"{info['date']}; load average at the start {m['loadavg'][0]:.2f}")
    print("\n| ISA | torch CPU capability | oneDNN ISA | fp32 convolution | bf16 convolution | C++ kernels |")
    print("| --- | --- | --- | --- | --- | --- |")
    for isa in isas:
        pr = info["probes"][isa]
        kernels = ("built" if pr.get("kernels_built") else "not built") + (
            f", RoIAlign = torchvision's: {pr.get('roi_align_equal_torchvision')}, GroupNorm max |diff| "
            f"{pr.get('group_norm_max_abs_diff', float('nan')):.1e}" if pr.get("kernels_built") else "")
        march = re.search(r"-march=(\S+)", pr.get("kernels_cflags", ""))
        kernels += f" (-march={march.group(1)})" if march else ""
        print(f"| {isa} | {pr.get('capability')} | {pr.get('onednn_isa')} | {pr.get('conv_fp32')} | "
              f"{pr.get('conv_bf16')} | {kernels} |")
    for task, unit in (("infer", "inference s/image (best)"), ("train", "training s/iteration (mean)")):
        if task not in tasks:
            continue
        key = "best" if task == "infer" else "mean"
        header = ["ISA"] + [f"{pr} {unit}" for pr in precisions] + [f"{pr} / fp32" for pr in precisions
                                                                    if pr != "fp32"] + ["load average"]
        print("\n| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
        for isa in isas:
            rs = {pr: best(isa, pr, task) for pr in precisions}
            base = rs.get("fp32")
            ratios = []
            for pr in precisions:
                if pr == "fp32":
                    continue
                r = rs[pr]
                if base and base[key] and r and r[key]:
                    ratios.append(f"{r[key] / base[key]:.1f}x")
                elif base and base["times"] and r and r["times"]:  # only its warm-up finished: warm-up against warm-up
                    ratios.append(f"{r['times'][0] / base['times'][0]:.1f}x (warm-ups)")
                elif base and base["times"] and r:  # not even its warm-up: at least the time it ran
                    ratios.append(f"> {r['wall_s'] / base['times'][0]:.0f}x (its run against the fp32 warm-up)")
                else:
                    ratios.append("-")
            loads = ", ".join(f"{rs[pr]['loadavg'][0]:.1f}" for pr in precisions if rs[pr])
            print("| " + " | ".join([isa] + [_cell(rs[pr], key) for pr in precisions] + ratios + [loads]) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)


if __name__ == "__main__":
    main()
