#!/usr/bin/env python
"""
The CUDA check: every CUDA path of d2_nucleus run once on synthetic data, with its figures, in one
JSON. Run it through ``bench/gpu_check.sh`` (which installs the carried wheels on a bare GPU
machine first); ``--device cpu`` is the dry run of every step with tiny sizes (CI-friendly).

    OUT=results bash bench/gpu_check.sh                # on a GPU machine: about 6-8 minutes
    python bench/gpu_check.py --device cpu --out DIR   # the dry run here: about 2-3 minutes on 2 cores

Steps, in this order (each in its own processes, time-boxed by --budget; a failing step is recorded
with its error and the next steps still run; steps that need an earlier one's output say so):

  env               versions, the GPU, TF32 settings, every runtime dependency imported
  data              a synthetic training set: tools/make_synthetic.py + tools/prepare_data.py
  train_r18         the CPU recipe's architecture (configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml) trained
                    with SOLVER.AMP.ENABLED (CUDA): loss falls, no NaN, s/iteration; its weights
                    serve every later step
  eval_only         tools/train_net.py --eval-only with those weights
  predict           tools/predict.py --device cuda and --device cpu, same weights: detections compared
                    (d2_nucleus.evaluation.compare_detections); on CUDA also with TF32 off
  infer_r18         NucleusPredictor s/image on a dense synthetic 1000 x 1000 image
  slide             tools/segment_slides.py on a synthetic slide: tiles/s, tissue megapixels/s, s/mm²
  train_r50_b2      configs/scratch/mask_rcnn_R_50_FPN_scratch_gn.yaml with AMP: s/iteration at batch 2,
  train_r50_b8      ... at batch 8 (loss falls, no NaN),
  train_r50_b8_fp32 ... at batch 8 without AMP (the same-run baseline of AMP's speed-up)
  infer_r50         NucleusPredictor s/image of the R50 model on the dense image
  cluster           tools/segment_cluster.py: one Dask worker per GPU on two synthetic slides
  tests             the CUDA-relevant tests (pytest)

Every step records ``ok``, ``seconds``, ``error`` and its figures, with GPU utilisation and memory
sampled by ``nvidia-smi`` every 200 ms over the step (null without nvidia-smi) and, where a step's own
process measured it, ``torch.cuda.max_memory_allocated``. ``checks`` hold the pass/fail criteria
(loss falls, finite losses, CUDA-CPU parity within tolerance); ``failed_steps`` and ``failed_checks``
list what did not hold. The JSON is rewritten after every step, so a run cut short still reports.
"""
import argparse
import csv
import glob
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

R18 = "configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml"
R50 = "configs/scratch/mask_rcnn_R_50_FPN_scratch_gn.yaml"
MPP = 0.252  # the synthetic slides' resolution (MoNuSeg's scanners)

# CUDA-CPU parity of tools/predict.py with the same weights (justified in BENCHMARKS.md "GPU"):
# convolutions run in TF32 on CUDA by default (PyTorch's cudnn.allow_tf32) and reduce in another
# order, so logits differ by ~1e-3 relative: scores move in the third decimal, a few boundary pixels
# flip at the 0.5 mask threshold, and a detection near the score threshold or an NMS decision can be
# in one run only. Nearly every detection must still have its partner, with nearly the same mask.
PARITY = {"matched_fraction": 0.97, "mask_iou_median": 0.95, "score_diff_p95": 0.02}

PROFILES = {
    # a GPU machine (16 cores): sizes of real use, within about 7 minutes
    "cuda": dict(
        budget=450,
        loss_check=True,
        test_opts=[],
        data=dict(num_train=8, num_test=4, size=1000, nuclei=(300, 500)),
        train_opts=[],
        r18=dict(iters=300, batch=4, workers=6, warmup=100, skip=20, timeout=150),
        r50=dict(iters={2: 30, 8: 40}, fp32_iters=20, workers=6, warmup=100, skip=10, timeout=120),
        predict=[],
        dense=dict(size=1000, nuclei=600, warmup=2, runs=10),
        slide=dict(side=8192, patch=2048, batch=4, tile=[]),
        cluster=dict(slides=2, side=4096, patch=2048, workers=[]),
        tests=["tests/test_cuda.py", "tests/test_predict.py", "tests/test_eval_predict_parity.py",
               "tests/test_slide.py"],
    ),
    # the dry run on a CPU: every step, tiny sizes
    "cpu": dict(
        budget=600,
        loss_check=False,  # a few iterations from scratch are noise: the loss is reported, not checked
        # narrow models (the architectures' depth and heads as configured, fewer channels: as
        # tests/test_training.py's TINY), and fewer proposals at test time: an untrained model keeps
        # thousands, and each tiny image would take seconds on two cores
        test_opts=["MODEL.RESNETS.STEM_OUT_CHANNELS", "32", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
                   "MODEL.RESNETS.WIDTH_PER_GROUP", "32", "MODEL.FPN.OUT_CHANNELS", "32",
                   "MODEL.ROI_BOX_HEAD.CONV_DIM", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
                   "MODEL.ROI_MASK_HEAD.CONV_DIM", "32", "MODEL.RPN.PRE_NMS_TOPK_TEST", "1000",
                   "MODEL.RPN.POST_NMS_TOPK_TEST", "200", "TEST.DETECTIONS_PER_IMAGE", "100"],
        data=dict(num_train=4, num_test=2, size=128, nuclei=(15, 25)),
        train_opts=["INPUT.CROP.SIZE", "[128, 128]", "INPUT.MIN_SIZE_TRAIN", "(128,)",
                    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "300", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64"],
        r18=dict(iters=6, batch=2, workers=0, warmup=1, skip=2, timeout=150),
        r50=dict(iters={1: 2, 2: 2}, fp32_iters=2, workers=0, warmup=1, skip=1, timeout=150),
        # an untrained model: every detection kept, so that the comparison has some
        predict=["--score-thresh", "0", "--max-dets", "50"],
        dense=dict(size=256, nuclei=60, warmup=1, runs=2),
        slide=dict(side=1024, patch=256, batch=2, tile=["--tile-size", "256"]),
        cluster=dict(slides=2, side=512, patch=256, workers=["--threads-per-worker", "1"]),
        tests=["tests/test_cuda.py"],
    ),
}
# the R50 runs at batch 8 (2 in the dry run) use the same sizes as these names say on CUDA
ENV_PACKAGES = ["torch", "torchvision", "pb1-detectron2", "numpy", "pycocotools", "faster-coco-eval", "fvcore",
                "iopath", "omegaconf", "opencv-python-headless", "pillow", "scipy", "scikit-image", "pyarrow",
                "tifffile", "openslide-python", "openslide-bin", "dask", "distributed", "pytest"]
ENV_MODULES = ["torch", "torchvision", "detectron2", "d2_nucleus.modeling", "d2_nucleus.engine", "pycocotools.mask",
               "faster_coco_eval", "fvcore", "omegaconf", "cv2", "scipy", "skimage", "pyarrow.parquet", "tifffile",
               "openslide", "dask", "distributed"]


class StepError(RuntimeError):
    """A failed step; ``figures`` are what it measured all the same (recorded with the error)."""

    def __init__(self, message, figures=None):
        super().__init__(message)
        self.figures = figures or {}


# -------------------------------------------------------------------------------------------------
# GPU utilisation and memory, sampled in the background
# -------------------------------------------------------------------------------------------------
class GpuSampler:
    """``nvidia-smi`` every 200 ms (GPU 0): (time, utilisation %, memory used MiB) samples."""

    def __init__(self):
        self.samples = []
        self.proc = None
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return
        self.proc = subprocess.Popen(
            [exe, "--id=0", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "200"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                util, mem = (float(v) for v in line.strip().split(","))
            except ValueError:
                continue
            self.samples.append((time.time(), util, mem))

    def window(self, t0, t1):
        if self.proc is None:
            return None
        s = [x for x in self.samples if t0 <= x[0] <= t1]
        if not s:
            return {"samples": 0}
        utils = sorted(x[1] for x in s)
        return {"samples": len(s), "util_mean_pct": sum(utils) / len(utils),
                "util_median_pct": utils[len(utils) // 2],
                "util_busy_fraction": sum(u > 0 for u in utils) / len(utils),
                "memory_used_max_mib": max(x[2] for x in s)}

    def close(self, csv_path):
        if self.proc is None:
            return
        self.proc.terminate()
        self.proc.wait()
        with open(csv_path, "w") as f:
            f.write("unix_time,utilization_gpu_pct,memory_used_mib\n")
            for t, u, m in self.samples:
                f.write(f"{t:.2f},{u:.0f},{m:.0f}\n")


# -------------------------------------------------------------------------------------------------
# The run: steps, subprocesses, the JSON
# -------------------------------------------------------------------------------------------------
class Run:
    def __init__(self, args):
        self.args = args
        self.device = args.device
        self.p = PROFILES["cuda" if args.device.startswith("cuda") else "cpu"]
        self.out = os.path.abspath(args.out)
        self.work = os.path.abspath(args.work)
        os.makedirs(self.out, exist_ok=True)
        os.makedirs(self.work, exist_ok=True)
        self.log_path = os.path.join(self.out, "gpu_check.log")
        self.json_path = os.path.join(self.out, "gpu_check.json")
        self.start = time.time()
        self.deadline = self.start + (args.budget or self.p["budget"])
        self.gpu = GpuSampler()
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
                        PYTHONUNBUFFERED="1", MPLBACKEND="Agg",
                        # the C++ kernels are CPU-only (CUDA runs torchvision's ops): not compiled for the
                        # CPU reference runs, whose results equal torchvision's (modeling/native.py)
                        D2_NUCLEUS_NO_NATIVE="1")
        self.result = {"device": self.device, "profile": "cuda" if self.device.startswith("cuda") else "cpu (dry run)",
                       "started": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_s": self.deadline - self.start,
                       "parity_tolerance": PARITY, "steps": {}}
        self.stop_reason = None
        self.children = 0
        self.current = None  # the running command: ended with its process group if this run is ended
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._ended)

    def _ended(self, signum, frame):
        if self.current is not None:
            try:
                os.killpg(self.current.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.gpu.close(os.path.join(self.out, "gpu_util.csv"))
        sys.exit(128 + signum)

    # -- output ---------------------------------------------------------------------------------
    def say(self, msg):
        line = f"[gpu_check {time.time() - self.start:6.1f}s] {msg}"
        print(line, flush=True)
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def write_json(self):
        from d2_nucleus.utils.file_io import atomic_write_json

        steps = self.result["steps"]
        self.result["failed_steps"] = [k for k, v in steps.items() if not v["ok"]]
        self.result["failed_checks"] = [f"{k}.{c}" for k, v in steps.items() for c, ok in v.get("checks", {}).items()
                                        if not ok]
        self.result["total_seconds"] = time.time() - self.start
        atomic_write_json(self.json_path, self.result, overwrite=True)

    # -- subprocesses -----------------------------------------------------------------------------
    def run(self, cmd, deadline, env=None):
        """Run ``cmd`` (output into the log) until ``deadline``; StepError on failure or timeout."""
        timeout = deadline - time.time()
        if timeout < 5:
            raise StepError(f"no time left for {os.path.basename(cmd[1])}")
        with open(self.log_path, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            offset = f.tell()
            # own process group: a timeout ends its data-loader and Dask worker processes too
            proc = self.current = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                                   env=env or self.env, start_new_session=True)
            try:
                rc = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise StepError(f"{os.path.basename(cmd[1])} timed out after {timeout:.0f} s") from None
            finally:
                self.current = None
        if rc != 0:
            what = " ".join(os.path.basename(c) for c in cmd[1:3])
            raise StepError(f"{what} exited {rc}: {self._last_error(offset)}")
        return offset

    def _last_error(self, offset):
        with open(self.log_path, errors="replace") as f:
            f.seek(offset)
            lines = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
        errors = [ln for ln in lines if re.search(r"Error|error:|Exception|assert", ln)]
        return ((errors or lines or ["no output"])[-1])[:400]

    def child(self, kind, spec, deadline, env=None):
        """This file's child mode ``kind`` with ``spec``; its result dict."""
        self.children += 1
        path = os.path.join(self.work, f"child_{self.children}_{kind}.json")
        with open(path + ".spec", "w") as f:
            json.dump(spec, f)
        self.run([sys.executable, os.path.abspath(__file__), "--child", kind, "--spec", path + ".spec",
                  "--result", path], deadline, env)
        with open(path) as f:
            return json.load(f)

    def tool(self, name, *args, deadline, env=None):
        self.run([sys.executable, os.path.join(ROOT, "tools", f"{name}.py"), *map(str, args)], deadline, env)

    # -- steps ------------------------------------------------------------------------------------
    def step(self, name, fn, timeout=120):
        if self.args.steps and name not in self.args.steps:
            return
        t0 = time.time()
        if self.stop_reason:
            rec = {"ok": False, "seconds": 0.0, "error": f"skipped: {self.stop_reason}"}
        elif self.deadline - t0 < 15:
            rec = {"ok": False, "seconds": 0.0, "error": "skipped: the time budget is spent"}
        else:
            self.say(f"step {name} ...")
            try:
                figures = fn(min(t0 + timeout, self.deadline)) or {}
                rec = {"ok": True, "error": None, **figures}
            except Exception as e:
                msg = " ".join(str(e).split()) or type(e).__name__
                rec = {**getattr(e, "figures", {}), "ok": False, "error": f"{type(e).__name__}: {msg}"[:600]}
                with open(self.log_path, "a") as f:
                    f.write(traceback.format_exc())
            rec["seconds"] = round(time.time() - t0, 2)
            rec["gpu"] = self.gpu.window(t0, time.time())
        self.result["steps"][name] = rec
        failed = [c for c, ok in rec.get("checks", {}).items() if not ok]
        self.say(f"step {name}: {'ok' if rec['ok'] else 'FAILED: ' + rec['error']} ({rec['seconds']:.1f} s)"
                 + (f"; checks failed: {failed}" if failed else ""))
        self.write_json()

    def train_opts(self, batch, iters, workers, warmup, amp, out):
        return ["MODEL.DEVICE", self.device, "SOLVER.AMP.ENABLED", str(amp), "SOLVER.CPU_BF16", "False",
                "SOLVER.IMS_PER_BATCH", str(batch), "SOLVER.MAX_ITER", str(iters), "SOLVER.WARMUP_ITERS", str(warmup),
                "SOLVER.CHECKPOINT_PERIOD", "1000000", "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0",
                "DATALOADER.NUM_WORKERS", str(workers), "SEED", "1", "OUTPUT_DIR", out] + self.p["test_opts"] \
            + self.p["train_opts"]

    def cuda(self):
        return self.device.startswith("cuda")

    def s_env(self, deadline):
        res = self.child("env", {"packages": ENV_PACKAGES, "modules": ENV_MODULES, "device": self.device}, deadline)
        res["cpu"] = _cpu_model()
        res["cpu_count"] = os.cpu_count()
        res["python"] = platform.python_version()
        res["checks"] = {"imports": not res["missing_modules"]}
        if self.cuda():
            res["checks"]["cuda_available"] = bool(res["cuda_available"])
            if not res["cuda_available"]:
                self.stop_reason = "torch sees no CUDA device"
        if {"torch", "detectron2", "d2_nucleus.engine"} & set(res["missing_modules"]):
            self.stop_reason = f"cannot import {sorted(res['missing_modules'])}"
        if res["missing_modules"]:  # e.g. openslide or dask alone: the steps that need them fail, the others run
            raise StepError(f"cannot import {res['missing_modules']}", res)
        return res

    def s_data(self, deadline):
        d = self.p["data"]
        raw, prepared = os.path.join(self.work, "raw"), os.path.join(self.work, "prepared")
        self.tool("make_synthetic", "--out", raw, "--num-train", d["num_train"], "--num-test", d["num_test"],
                  "--size", d["size"], "--nuclei", *d["nuclei"], "--overwrite", deadline=deadline)
        self.tool("prepare_data", "--raw", raw, "--out", prepared, "--overwrite", "--quiet", deadline=deadline)
        return {"images_train": d["num_train"], "images_test": d["num_test"], "image_side": d["size"],
                "nuclei_per_image": list(d["nuclei"])}

    def _train(self, deadline, config, name, batch, iters, r, amp, loss_check=True):
        out = os.path.join(self.work, name)
        amp = amp and self.cuda()  # Detectron2's AMPTrainer needs CUDA; the dry run trains in fp32
        opts = self.train_opts(batch, iters, r["workers"], r["warmup"], amp, out)
        # training stops early (and saves its model) 20 s before the step's time is up
        res = self.child("train", {"config": config, "opts": opts, "data_root": os.path.join(self.work, "prepared"),
                                   "skip": min(r["skip"], iters - 1), "stop_at": deadline - 20}, deadline)
        res["checks"] = {"losses_finite": res["losses_finite"]}
        if loss_check and self.p["loss_check"]:
            res["checks"]["loss_falls"] = res["loss_falls"]
        if amp:
            res["checks"]["amp_trainer"] = res["trainer"] == "AMPTrainer"
        return res

    def s_train_r18(self, deadline):
        r = self.p["r18"]
        return self._train(deadline, R18, "train_r18", r["batch"], r["iters"], r, amp=True)

    def s_train_r50(self, batch, amp=True):
        r = self.p["r50"]

        def fn(deadline):
            iters = r["iters"][batch] if amp else r["fp32_iters"]
            name = f"train_r50_b{batch}" + ("" if amp else "_fp32")
            res = self._train(deadline, R50, name, batch, iters, r, amp=amp,
                              loss_check=amp and batch == max(r["iters"]))
            if not amp:
                amp_run = self.result["steps"].get(f"train_r50_b{batch}", {})
                if amp_run.get("ok") and amp_run.get("amp"):
                    res["amp_speedup"] = res["s_per_iter"] / amp_run["s_per_iter"]
            return res
        return fn

    def weights(self, name):
        path = os.path.join(self.work, name, "model_final.pth")
        if not os.path.isfile(path):
            raise StepError(f"needs {name}'s weights ({path}), which that step did not write")
        return path

    def s_eval_only(self, deadline):
        out = os.path.join(self.work, "eval_only")
        self.tool("train_net", "--config-file", R18, "--data-root", os.path.join(self.work, "prepared"), "--eval-only",
                  "MODEL.WEIGHTS", self.weights("train_r18"), "MODEL.DEVICE", self.device, "SOLVER.CPU_BF16", "False",
                  "DATASETS.TEST", '("nucleus_val",)', "DATALOADER.NUM_WORKERS", "2" if self.cuda() else "0",
                  "OUTPUT_DIR", out,
                  *self.p["test_opts"], deadline=deadline)
        with open(os.path.join(out, "inference", "nucleus_val", "nucleus_metrics.json")) as f:
            metrics = json.load(f)
        return {"metrics": metrics}

    def s_predict(self, deadline):
        from d2_nucleus.evaluation.compare import compare_detections

        weights = self.weights("train_r18")
        inputs = os.path.join(self.work, "prepared", "test_img_ids.json")
        out = os.path.join(self.work, "predict")
        # (tag, device, environment): the device under test, the CPU reference, and on CUDA the device
        # under test with TF32 off (NVIDIA_TF32_OVERRIDE=0: cuDNN and cuBLAS in full fp32)
        runs = [(self.device, self.device, self.env), ("cpu_reference", "cpu", self.env)]
        if self.cuda():
            runs.append(("cuda_tf32_off", self.device, dict(self.env, NVIDIA_TF32_OVERRIDE="0")))
        res, answers = {"inputs": inputs}, {}
        for tag, device, env in runs:
            path = os.path.join(out, f"answer_{tag}.json")
            t0 = time.time()
            self.tool("predict", "--config-file", R18, "--weights", weights, "--input", inputs, "--output", path,
                      "--device", device, "--overwrite", "--quiet", *self.p["predict"],
                      "SOLVER.CPU_BF16", "False", *self.p["test_opts"],
                      deadline=deadline, env=env)
            res[f"seconds_{tag}"] = time.time() - t0
            with open(path) as f:
                answers[tag] = json.load(f)
        res["checks"] = {}
        for tag in answers:
            if tag != "cpu_reference":
                res[f"compare_{tag}_vs_cpu"] = cmp = compare_detections(answers[tag], answers["cpu_reference"])
                res["checks"][f"parity_{tag}"] = _within(cmp)
        return res

    def s_infer(self, config, train_step):
        def fn(deadline):
            d = self.p["dense"]
            return self.child("infer", {"config": config, "weights": self.weights(train_step), "device": self.device,
                                        "size": d["size"], "nuclei": d["nuclei"], "warmup": d["warmup"],
                                        "runs": d["runs"], "opts": self.p["test_opts"]}, deadline)
        return fn

    def _slides(self, folder, count, side, patch):
        """``count`` synthetic Aperio slides of ``side``^2 px, tissue on half of the ``patch`` cells."""
        import numpy as np

        from d2_nucleus.data.synthetic import render_nuclei_image
        from d2_nucleus.data.synthetic_slide import write_synthetic_slide

        os.makedirs(folder, exist_ok=True)
        rng = np.random.default_rng(0)
        # MoNuSeg's density: about 500 nuclei a megapixel at 0.25 um/px
        tissue = [render_nuclei_image(rng, patch, patch, int(500 * patch * patch / 1e6))[0] for _ in range(2)]
        cells = [(x, y) for y in range(0, side - patch + 1, patch) for x in range(0, side - patch + 1, patch)]
        patches = [(tissue[i % 2], x, y) for i, (x, y) in enumerate(cells) if (x // patch + y // patch) % 2 == 0]
        paths = []
        for i in range(count):
            path = os.path.join(folder, f"synthetic_{i}.svs")
            write_synthetic_slide(path, side, side, patches, mpp=MPP, compression="zlib")
            paths.append(path)
        return paths

    def _slide_opts(self):
        opts = ["SOLVER.CPU_BF16", "False", *self.p["test_opts"]]
        return ["--opts", *opts]

    def s_slide(self, deadline):
        s = self.p["slide"]
        t0 = time.time()
        (path,) = self._slides(os.path.join(self.work, "slides"), 1, s["side"], s["patch"])
        write_s = time.time() - t0
        out = os.path.join(self.work, "slide_out")
        t0 = time.time()
        self.tool("segment_slides", "--config-file", R18, "--weights", self.weights("train_r18"), path, "--out", out,
                  "--device", self.device, "--batch-size", s["batch"], *s["tile"], "--overwrite", "--quiet",
                  *self._slide_opts(), deadline=deadline)
        wall = time.time() - t0
        (summary_path,) = glob.glob(os.path.join(out, "*.summary.json"))
        with open(summary_path) as f:
            sm = json.load(f)
        tissue_mpx = sm["tissue_mm2"] / (MPP * MPP)  # mm² -> µm² (x1e6) -> px (/mpp²) -> Mpx (/1e6)
        keys = ("tiles", "tiles_run", "nuclei", "tissue_mm2", "seconds", "seconds_read", "seconds_model",
                "seconds_stitch", "seconds_measure", "level", "working_mpp")
        return {"slide_side_px": s["side"], "batch_size": s["batch"], "write_seconds": write_s,
                "cli_wall_seconds": wall,
                **{k: sm.get(k) for k in keys}, "tissue_megapixels": tissue_mpx,
                "tiles_per_s": sm["tiles_run"] / sm["seconds"], "tissue_megapixels_per_s": tissue_mpx / sm["seconds"],
                "s_per_mm2": sm["seconds"] / sm["tissue_mm2"] if sm["tissue_mm2"] else None,
                "checks": {"nuclei_found": sm["nuclei"] > 0 or not self.cuda()}}

    def s_cluster(self, deadline):
        c = self.p["cluster"]
        folder = os.path.join(self.work, "cluster_slides")
        self._slides(folder, c["slides"], c["side"], c["patch"])
        out = os.path.join(self.work, "cluster_out")
        t0 = time.time()
        self.tool("segment_cluster", "--config-file", R18, "--weights", self.weights("train_r18"), folder, "--out", out,
                  "--device", self.device, "--dashboard-address", ":0", *c["workers"], "--overwrite", "--quiet",
                  *self._slide_opts(), deadline=deadline)
        wall = time.time() - t0
        with open(os.path.join(out, "cluster_report.csv")) as f:
            rows = list(csv.DictReader(f))
        done = [r for r in rows if r["status"] == "done"]
        return {"slides": len(rows), "done": len(done), "wall_seconds": wall,
                "slides_per_hour": 3600 * len(done) / wall,
                "slide_seconds": [float(r["seconds"]) for r in done], "workers": sorted({r["worker"] for r in done}),
                "checks": {"all_done": len(done) == len(rows)}}

    def s_tests(self, deadline):
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow and not realdata",
               *self.p["tests"]]
        t0 = time.time()
        error = None
        with open(self.log_path) as f:
            offset = f.seek(0, os.SEEK_END)
        try:
            self.run(cmd, deadline)
        except StepError as e:
            error = str(e)
        with open(self.log_path, errors="replace") as f:
            f.seek(offset)
            output = f.read()
        summary = [ln for ln in output.splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
        counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)",
                                                   summary[-1] if summary else "")}
        res = {"files": self.p["tests"], "pytest_seconds": time.time() - t0, **counts}
        if error:
            res["failed_tests"] = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.M)
            raise StepError(f"{error}; {counts}", res)
        return res

    def main(self):
        self.say(f"device {self.device}, budget {self.deadline - self.start:.0f} s, out {self.out}, work {self.work}")
        p = self.p
        self.step("env", self.s_env, 90)
        self.step("data", self.s_data, 120)
        self.step("train_r18", self.s_train_r18, p["r18"]["timeout"])
        self.step("eval_only", self.s_eval_only, 90)
        self.step("predict", self.s_predict, 150)
        self.step("infer_r18", self.s_infer(R18, "train_r18"), 90)
        self.step("slide", self.s_slide, 150)
        small, large = sorted(p["r50"]["iters"])
        self.step(f"train_r50_b{small}", self.s_train_r50(small), p["r50"]["timeout"])
        self.step(f"train_r50_b{large}", self.s_train_r50(large), p["r50"]["timeout"])
        self.step(f"train_r50_b{large}_fp32", self.s_train_r50(large, amp=False), p["r50"]["timeout"])
        self.step("infer_r50", self.s_infer(R50, f"train_r50_b{large}"), 90)
        self.step("cluster", self.s_cluster, 150)
        self.step("tests", self.s_tests, 240)
        self.gpu.close(os.path.join(self.out, "gpu_util.csv"))
        self.result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        self.write_json()
        r = self.result
        self.say(f"done in {r['total_seconds']:.0f} s: {len(r['steps']) - len(r['failed_steps'])}/{len(r['steps'])} "
                 f"steps ok; failed steps {r['failed_steps']}; failed checks {r['failed_checks']} -> {self.json_path}")
        return 1 if r["failed_steps"] or r["failed_checks"] else 0


def _within(cmp):
    if cmp["detections_a"] == cmp["detections_b"] == 0:
        return True
    return (cmp["matched_fraction"] >= PARITY["matched_fraction"]
            and (cmp["mask_iou_median"] or 0) >= PARITY["mask_iou_median"]
            and (cmp["score_diff_p95"] if cmp["score_diff_p95"] is not None else 1) <= PARITY["score_diff_p95"])


def _cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"Model name:\s*(.+)", out)
        if m:
            return m.group(1).strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


# -------------------------------------------------------------------------------------------------
# Child processes (a fresh process per step: its own CUDA context and peak-memory counter)
# -------------------------------------------------------------------------------------------------
def _peaks(device):
    import resource

    import torch

    res = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda") and torch.cuda.is_available():
        res["peak_gpu_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        res["peak_gpu_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    return res


def child_env(spec):
    import importlib
    import importlib.metadata

    res = {"versions": {}, "missing_modules": {}}
    for name in spec["packages"]:
        try:
            res["versions"][name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            res["versions"][name] = None
    for name in spec["modules"]:
        try:
            importlib.import_module(name)
        except Exception as e:
            res["missing_modules"][name] = f"{type(e).__name__}: {e}"[:300]
    import torch

    res["cuda_available"] = torch.cuda.is_available()
    res["torch_cuda"] = torch.version.cuda
    res["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    res["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
    res["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    res["torch_threads"] = torch.get_num_threads()
    if res["cuda_available"]:
        res["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        props = torch.cuda.get_device_properties(0)
        res["gpu_memory_gib"] = props.total_memory / 2**30
        res["compute_capability"] = f"{props.major}.{props.minor}"
        res["multiprocessors"] = props.multi_processor_count
    smi = shutil.which("nvidia-smi")
    if smi:
        query = [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        res["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip()
    return res


def child_train(spec):
    import numpy as np
    import torch
    from detectron2.engine import HookBase
    from detectron2.utils.logger import setup_logger

    from d2_nucleus.config import get_nucleus_cfg
    from d2_nucleus.engine import NucleusTrainer

    setup_logger(name="detectron2")
    setup_logger(name="d2_nucleus")
    cfg = get_nucleus_cfg(os.path.join(ROOT, spec["config"]), spec["opts"], data_root=spec["data_root"])
    cfg.freeze()
    cuda = cfg.MODEL.DEVICE.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    class Clock(HookBase):
        """Seconds of each whole iteration (data, forward, backward, step), the GPU synchronised."""

        def __init__(self):
            self.times = []

        def before_step(self):
            sync()
            self.t0 = time.perf_counter()

        def after_step(self):
            sync()
            self.times.append(time.perf_counter() - self.t0)

    class TimeUp(Exception):
        pass

    class TimeLimit(HookBase):
        """Ends training after the iteration that passes ``stop_at`` (the model is saved below)."""

        def after_step(self):
            if self.trainer.iter + 1 < self.trainer.max_iter and time.time() > spec["stop_at"]:
                logging.getLogger("detectron2").warning("gpu_check: the step's time is up; training ends here")
                raise TimeUp()

    clock = Clock()
    trainer = NucleusTrainer(cfg)
    trainer.register_hooks([clock, TimeLimit()])
    trainer.resume_or_load(resume=False)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    stopped = False
    try:
        trainer.train()
    except TimeUp:
        stopped = True
        trainer.checkpointer.save("model_final")
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    data_time = [v for v, _ in trainer.storage.history("data_time").values()]
    skip = spec["skip"]
    times = clock.times[skip:]
    q = max(1, len(losses) // 4)
    first, last = float(np.mean(losses[:q])), float(np.mean(losses[-q:]))
    inner = trainer._trainer
    res = {
        "config": spec["config"], "device": cfg.MODEL.DEVICE, "amp": bool(cfg.SOLVER.AMP.ENABLED),
        "trainer": type(inner).__name__, "batch": cfg.SOLVER.IMS_PER_BATCH, "iters": len(clock.times),
        "max_iter": cfg.SOLVER.MAX_ITER, "stopped_by_time_limit": stopped,
        "timed_iters": len(times), "crop": list(cfg.INPUT.CROP.SIZE), "min_size_train": list(cfg.INPUT.MIN_SIZE_TRAIN),
        "s_per_iter": float(np.median(times)), "s_per_iter_mean": float(np.mean(times)),
        "images_per_s": cfg.SOLVER.IMS_PER_BATCH / float(np.median(times)),
        "data_time_median": float(np.median(data_time[skip:])) if data_time[skip:] else None,
        "loss_first": losses[0], "loss_last": losses[-1], "loss_first_quarter_mean": first,
        "loss_last_quarter_mean": last, "losses_finite": bool(np.all(np.isfinite(losses))),
        "loss_falls": bool(last < first), "losses": [round(float(v), 4) for v in losses],
        "last_losses": {k: float(v[0]) for k, v in trainer.storage.latest().items() if k.startswith("loss")},
        "grad_scale": float(inner.grad_scaler.get_scale()) if hasattr(inner, "grad_scaler") and cuda else None,
    }
    res.update(_peaks(cfg.MODEL.DEVICE))
    return res


def child_infer(spec):
    import numpy as np
    import torch

    from d2_nucleus.config import get_inference_cfg
    from d2_nucleus.data.synthetic import render_nuclei_image
    from d2_nucleus.engine import NucleusPredictor

    cfg = get_inference_cfg(os.path.join(ROOT, spec["config"]), ["SOLVER.CPU_BF16", "False", *spec["opts"]],
                            spec["weights"], spec["device"])
    cfg.freeze()
    predictor = NucleusPredictor(cfg)
    rgb, labels = render_nuclei_image(np.random.default_rng(1), spec["size"], spec["size"], spec["nuclei"])
    image = rgb[:, :, ::-1].copy() if cfg.INPUT.FORMAT == "BGR" else rgb
    cuda = spec["device"].startswith("cuda")
    for _ in range(spec["warmup"]):
        predictor([image])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(spec["runs"]):
        t0 = time.perf_counter()
        (inst,) = predictor([image])  # its Instances come back on the CPU: the GPU is done
        times.append(time.perf_counter() - t0)
    scores = inst.scores.numpy()
    res = {"config": spec["config"], "device": cfg.MODEL.DEVICE, "image_px": [spec["size"], spec["size"]],
           "nuclei_in_image": int(labels.max()), "test_scale": cfg.INPUT.TEST_SCALE, "runs": len(times),
           "s_per_image": float(np.median(times)), "s_per_image_mean": float(np.mean(times)),
           "s_per_image_min": float(np.min(times)), "detections": len(inst),
           "detections_score_ge_0.5": int((scores >= 0.5).sum())}
    res.update(_peaks(cfg.MODEL.DEVICE))
    return res


CHILDREN = {"env": child_env, "train": child_train, "infer": child_infer}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (the check) or cpu (the dry run, tiny sizes) (default cuda)")
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out",
                   help="folder of gpu_check.json, gpu_check.log, gpu_util.csv (default $OUT, else gpu_check_out)")
    p.add_argument("--work", default=None, help="scratch folder (default: a new folder under /tmp)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for all steps; later steps are skipped once spent (default 450 on CUDA, 600 dry run)")
    p.add_argument("--steps", default=None, help="comma-separated subset of the steps (default: all)")
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        with open(args.spec) as f:
            spec = json.load(f)
        res = CHILDREN[args.child](spec)
        with open(args.result, "w") as f:
            json.dump(res, f)
        return 0
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        p.error(f"--device must be cpu or cuda[:N], got {args.device!r}")
    args.steps = set(args.steps.split(",")) if args.steps else None
    if args.work is None:
        import tempfile

        args.work = tempfile.mkdtemp(prefix="gpu_check_")
    elif os.path.exists(args.work) and os.listdir(args.work):
        p.error(f"--work {args.work!r} is not empty")
    return Run(args).main()


if __name__ == "__main__":
    sys.exit(main())
