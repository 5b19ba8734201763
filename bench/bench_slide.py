#!/usr/bin/env python
"""
Benchmarks of the whole-slide pipeline (tools/segment_slides.py); numbers in BENCHMARKS.md.

    python bench/bench_slide.py memory --config-file C --weights W   # peak RSS, 40k^2 and 80k^2 slides
    python bench/bench_slide.py speed  --config-file C --weights W [--raw RAW]  # vs predict, same pixels
    python bench/bench_slide.py resume --config-file C --weights W [--raw RAW]  # kill -9, rerun, compare
    python bench/bench_slide.py seams  --config-file C --weights W --raw RAW    # real mosaic vs per image
    python bench/bench_slide.py shift  --config-file C --weights W --raw RAW    # predict vs itself shifted
    python bench/bench_slide.py glass  --config-file C --weights W --raw RAW --seam-images 2  # context check

Slides are built in --work (default /tmp/bench_slide) from synthetic H&E (d2_nucleus.data.synthetic)
or, with --raw, the real training images (never written inside the repository).
"""
import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from d2_nucleus.config import get_nucleus_cfg  # noqa: E402
from d2_nucleus.data.synthetic import render_nuclei_image  # noqa: E402
from d2_nucleus.data.synthetic_slide import write_synthetic_slide  # noqa: E402

MPP = 0.252


def _cli(args, slide_paths, out, extra=(), opts=()):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "segment_slides.py"), "--config-file", args.config_file,
           "--weights", args.weights, *slide_paths, "--out", out, "--quiet", *extra]
    if opts:
        cmd += ["--opts", *opts]
    return cmd


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


# -------------------------------------------------------------------------------------------------
def bench_memory(args):
    """Peak RSS of segment_slides.py on mostly-glass slides of 40k^2 and 80k^2 px, the same tissue patch."""
    rng = np.random.default_rng(0)
    tissue, _ = render_nuclei_image(rng, 1536, 1536, 1200)
    results = []
    for side in args.sizes:
        path = os.path.join(args.work, f"glass_{side}.svs")
        if not os.path.isfile(path):
            t0 = time.perf_counter()
            # one tissue patch (~0.15 mm^2); the rest is glass
            write_synthetic_slide(path, side, side, [(tissue, 10560, 11520)], mpp=MPP, tile=512)
            print(f"wrote {path} ({os.path.getsize(path) / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s")
        out = os.path.join(args.work, f"out_memory_{side}")
        cmd = ["/usr/bin/time", "-v"] + _cli(args, [path], out, ["--overwrite"], args.opts)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise RuntimeError(proc.stderr[-3000:])
        rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
        with open(os.path.join(out, f"glass_{side}.summary.json")) as f:
            summary = json.load(f)
        results.append({
            "side_px": side, "peak_rss_gb": rss_kb / 1e6, "wall_s": wall, "tiles": summary["tiles"],
            "tiles_run": summary["tiles_run"], "tissue_mm2": summary["tissue_mm2"], "nuclei": summary["nuclei"],
            "seconds_model": summary["seconds_model"], "seconds_pipeline": summary["seconds"],
            "seconds_outside_model": summary["seconds"] - summary["seconds_model"],
        })
        print(json.dumps(results[-1]))
    return results


# -------------------------------------------------------------------------------------------------
def _tissue_images(args, n):
    """n 1000x1000 RGB tissue images: the real training images with --raw, else synthetic ones."""
    if args.raw:
        from d2_nucleus.data.raw import scan_train
        from d2_nucleus.data.image_io import read_image

        items = scan_train(args.raw).images[:n]
        return [read_image(it.image_file, "RGB") for it in items], items
    rng = np.random.default_rng(1)
    return [render_nuclei_image(rng, 1000, 1000, 400)[0] for _ in range(n)], None


def _mosaic_slide(path, images, cols, gap, margin):
    """Images on glass in a grid (gap px between, margin around), lossless; returns their offsets."""
    h, w = images[0].shape[:2]
    rows = (len(images) + cols - 1) // cols
    offsets = [(margin + (i % cols) * (w + gap), margin + (i // cols) * (h + gap)) for i in range(len(images))]
    width = 2 * margin + cols * w + (cols - 1) * gap
    height = 2 * margin + rows * h + (rows - 1) * gap
    write_synthetic_slide(path, width, height, [(im, x, y) for im, (x, y) in zip(images, offsets)], mpp=MPP,
                          compression="zlib")
    return offsets


def _predictor(args, opts=(), slide=False):
    """The model as tools/predict.py runs it, or with ``slide`` as tools/segment_slides.py does."""
    from d2_nucleus.engine import NucleusPredictor
    from d2_nucleus.config import set_slide_score_threshold

    cfg = get_nucleus_cfg(args.config_file, ["MODEL.WEIGHTS", args.weights, "MODEL.DEVICE", "cpu", *opts])
    if slide:
        set_slide_score_threshold(cfg)
    return cfg, NucleusPredictor(cfg, batch_size=1)


def bench_speed(args):
    """Time per tissue Mpx: slide mode on a mosaic of N images (edge to edge) vs predicting each image."""
    from d2_nucleus.engine import list_inputs, run_prediction
    from d2_nucleus.slide import segment_slide

    images, _ = _tissue_images(args, args.num_images)
    folder = os.path.join(args.work, "speed_images")
    os.makedirs(folder, exist_ok=True)
    for i, im in enumerate(images):
        cv2.imwrite(os.path.join(folder, f"{i:02d}.png"), im[:, :, ::-1])
    slide = os.path.join(args.work, "speed_mosaic.svs")
    _mosaic_slide(slide, images, cols=args.cols, gap=0, margin=0)
    mpx = sum(im.shape[0] * im.shape[1] for im in images) / 1e6
    results = {"images": len(images), "tissue_mpx": mpx}
    for tile in args.tile_sizes:
        _, predictor = _predictor(args, ["SLIDE.TILE_SIZE", str(tile), *args.opts])
        cfg, slide_predictor = _predictor(args, ["SLIDE.TILE_SIZE", str(tile), *args.opts], slide=True)
        for p in (predictor, slide_predictor):
            p([images[0][:512, :512, ::-1]])  # warm-up
        items = list_inputs(folder)
        t0 = time.perf_counter()
        run_prediction(predictor, items, output=None, progress=False)
        per_image = time.perf_counter() - t0
        t0 = time.perf_counter()
        s = segment_slide(slide_predictor, cfg, slide, os.path.join(args.work, f"out_speed_{tile}"), overwrite=True,
                          progress=False)
        slide_s = time.perf_counter() - t0
        results[f"tile_{tile}"] = {
            "predict_s": per_image, "predict_s_per_mpx": per_image / mpx,
            "slide_s": slide_s, "slide_s_per_mpx": slide_s / mpx, "ratio": slide_s / per_image,
            "slide_seconds_model": s["seconds_model"], "slide_seconds_read": s["seconds_read"],
            "slide_seconds_stitch": s["seconds_stitch"], "tiles_run": s["tiles_run"],
        }
        print(json.dumps({tile: results[f"tile_{tile}"]}))
    return results


# -------------------------------------------------------------------------------------------------
def bench_resume(args):
    """An uninterrupted run, then a run killed (SIGKILL) at a random point and rerun: same outputs?"""
    import pyarrow.parquet as pq

    images, _ = _tissue_images(args, args.num_images)
    slide = os.path.join(args.work, "resume_mosaic.svs")
    _mosaic_slide(slide, images, cols=args.cols, gap=300, margin=200)
    full, killed = os.path.join(args.work, "out_resume_full"), os.path.join(args.work, "out_resume_killed")
    opts = ["SLIDE.TILE_SIZE", "512"]
    t0 = time.perf_counter()
    subprocess.run(_cli(args, [slide], full, ["--overwrite", "--csv"], opts), env=_env(), check=True)
    uninterrupted = time.perf_counter() - t0
    random.seed(args.seed)
    kill_at = random.uniform(0.3, 0.8) * uninterrupted
    import shutil

    shutil.rmtree(killed, ignore_errors=True)
    proc = subprocess.Popen(_cli(args, [slide], killed, ["--csv"], opts), env=_env())
    time.sleep(kill_at)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    work = os.path.join(killed, ".resume_mosaic.work", "tiles")
    done_at_kill = len(os.listdir(work)) if os.path.isdir(work) else 0
    finals_at_kill = sorted(n for n in os.listdir(killed) if not n.startswith(".")) if os.path.isdir(killed) else []
    subprocess.run(_cli(args, [slide], killed, ["--csv"], opts), env=_env(), check=True)
    same = {}
    for name in ("resume_mosaic.geojson", "resume_mosaic.csv"):
        with open(os.path.join(full, name), "rb") as a, open(os.path.join(killed, name), "rb") as b:
            same[name] = a.read() == b.read()
    same["resume_mosaic.parquet"] = pq.read_table(os.path.join(full, "resume_mosaic.parquet")).equals(
        pq.read_table(os.path.join(killed, "resume_mosaic.parquet")))
    with open(os.path.join(killed, "resume_mosaic.summary.json")) as f:
        summary = json.load(f)
    result = {"uninterrupted_s": uninterrupted, "killed_after_s": kill_at, "tiles_done_at_kill": done_at_kill,
              "final_outputs_at_kill": finals_at_kill, "tiles_resumed": summary["resumed_tiles"],
              "tiles_run": summary["tiles_run"], "identical": same}
    print(json.dumps(result))
    return result


# -------------------------------------------------------------------------------------------------
def _rasterise(features, shape, dx=0, dy=0):
    """Label map of GeoJSON polygons (pixel edges: export/geojson.py), higher scores drawn last (on top)."""
    from d2_nucleus.export.geojson import geometry_to_mask

    labels = np.zeros(shape, np.int32)
    order = sorted(range(len(features)), key=lambda i: features[i]["properties"]["measurements"]["Detection score"])
    for k, i in enumerate(order, 1):
        crop = geometry_to_mask(features[i]["geometry"])
        if crop is None:
            continue
        mask, x0, y0 = crop
        x0, y0 = x0 - dx, y0 - dy
        h, w = mask.shape
        a, b = max(0, -y0), max(0, -x0)  # clip to the label map
        view = labels[y0 + a:y0 + h, x0 + b:x0 + w]
        view[mask[a:a + view.shape[0], b:b + view.shape[1]] > 0] = k
    return labels


def _centre_inside(feature, ox, oy, w, h):
    g = feature["geometry"]
    polygons = g["coordinates"] if g["type"] == "MultiPolygon" else [g["coordinates"]]
    xy = np.concatenate([np.asarray(p[0]) for p in polygons])  # exterior rings
    cx, cy = xy[:, 0].mean(), xy[:, 1].mean()
    return ox <= cx < ox + w and oy <= cy < oy + h


def _duplicates(features, iou=0.5):
    """Pairs (i, j) of polygons with mask IoU > iou (boxes bucketed on a 64 px grid)."""
    from d2_nucleus.slide.stitching import crop_iou

    from d2_nucleus.export.geojson import geometry_to_mask

    crops, buckets = [], {}
    for i, f in enumerate(features):
        mask, x0, y0 = geometry_to_mask(f["geometry"])
        y1, x1 = y0 + mask.shape[0], x0 + mask.shape[1]
        crops.append((mask, int(x0), int(y0)))
        for bx in range(x0 // 64, x1 // 64 + 1):
            for by in range(y0 // 64, y1 // 64 + 1):
                buckets.setdefault((bx, by), []).append(i)
    pairs = set()
    for members in buckets.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                i, j = members[a], members[b]
                if (i, j) not in pairs and crop_iou(crops[i], crops[j]) > iou:
                    pairs.add((i, j))
    return pairs


def _image_features(predictor, canvas, thresh, inside=None):
    """GeoJSON features of the detections scoring >= thresh on an RGB canvas (the nuclei the slide
    outputs keep); with inside=(x, y, w, h) only those whose centre lies in that rectangle."""
    from d2_nucleus.export import rles_to_geojson
    from d2_nucleus.utils.rle import rle_counts

    inst = predictor([canvas[:, :, ::-1].copy()])[0]
    keep = [i for i, s in enumerate(inst.scores.tolist()) if s >= thresh]
    rles = [inst.pred_rles[i] for i in keep]
    scores = [float(inst.scores[i]) for i in keep]
    nonempty = [i for i, r in enumerate(rles) if rle_counts(r)[1::2].sum() > 0]
    features = rles_to_geojson([rles[i] for i in nonempty], [scores[i] for i in nonempty])["features"]
    if inside is not None:
        features = [f for f in features if _centre_inside(f, *inside)]
    return features


def _gt_labels(item, shape):
    from d2_nucleus.data.mask_io import read_mask

    gt = np.zeros(shape, np.int32)
    for k, mf in enumerate(item.mask_files, 1):
        gt[read_mask(mf).to_full() > 0] = k
    return gt


def bench_seams(args):
    """Real-image mosaic (tiles not aligned with the image grid) vs tools/predict.py's per-image run."""
    from d2_nucleus.data.synthetic_slide import GLASS_RGB
    from d2_nucleus.evaluation.nucleus_metrics import compute_nucleus_metrics
    from d2_nucleus.slide import segment_slide

    if not args.raw:
        raise SystemExit("seams needs --raw (the real dataset)")
    images, items = _tissue_images(args, args.seam_images)
    slide = os.path.join(args.work, "seams_mosaic.svs")
    offsets = _mosaic_slide(slide, images, cols=min(6, len(images)), gap=200, margin=300)
    cfg, predictor = _predictor(args, args.opts)
    if args.reference_align and float(cfg.INPUT.TEST_SCALE) != 1.0:
        raise SystemExit("--reference-align aligns in slide pixels: it needs --opts INPUT.TEST_SCALE 1.0")
    out = os.path.join(args.work, "out_seams")
    t0 = time.perf_counter()
    summary = segment_slide(predictor, cfg, slide, out, overwrite=True, progress=True)
    slide_s = time.perf_counter() - t0
    with open(os.path.join(out, "seams_mosaic.geojson")) as f:
        features = json.load(f)["features"]
    thresh = float(cfg.TEST.LABEL_MAP_SCORE_THRESH)
    import pyarrow.parquet as pq

    tile_of = pq.read_table(os.path.join(out, "seams_mosaic.parquet"), columns=["tile"])["tile"].to_pylist()
    pairs = _duplicates(features)
    rows = []
    t_pred = 0.0
    image_dups = 0
    for im, item, (ox, oy) in zip(images, items, offsets):
        h, w = im.shape[:2]
        gt = _gt_labels(item, (h, w))
        pad = args.reference_glass
        px = py = 0
        if pad:  # the image in the glass it has around it in the mosaic (isolates the stitching)
            if args.reference_align:
                # at the offset modulo 32 px (the stride of the coarsest feature map the RoI heads
                # read, P5) it has in its tiles: tile origins (core origin - OVERLAP / 2, core
                # origins multiples of TILE_SIZE - OVERLAP) are multiples of 32 with the defaults
                px, py = pad + (ox - pad) % 32, pad + (oy - pad) % 32
            else:
                px = py = pad
            canvas = np.empty((h + py + pad, w + px + pad, 3), np.uint8)
            canvas[:] = GLASS_RGB
            canvas[py : py + h, px : px + w] = im
        else:
            canvas = im
        t0 = time.perf_counter()
        per_image = _image_features(predictor, canvas, thresh, (px, py, w, h) if pad else None)
        t_pred += time.perf_counter() - t0
        image_dups += len(_duplicates(per_image))
        mine = [f for f in features if _centre_inside(f, ox, oy, w, h)]
        m_img = compute_nucleus_metrics(gt, _rasterise(per_image, (h, w), px, py))
        m_sld = compute_nucleus_metrics(gt, _rasterise(mine, (h, w), ox, oy))
        rows.append({"image": item.image_id, "n_image": len(per_image), "n_slide": len(mine),
                     "aji_image": m_img["AJI"], "aji_slide": m_sld["AJI"], "pq_image": m_img["PQ"],
                     "pq_slide": m_sld["PQ"]})
        print(json.dumps(rows[-1]))
    d_aji = [abs(r["aji_image"] - r["aji_slide"]) for r in rows]
    d_pq = [abs(r["pq_image"] - r["pq_slide"]) for r in rows]
    result = {
        "images": len(rows), "slide_nuclei": len(features), "per_image_nuclei": sum(r["n_image"] for r in rows),
        "max_abs_d_aji": max(d_aji), "max_abs_d_pq": max(d_pq),
        "mean_aji_image": float(np.mean([r["aji_image"] for r in rows])),
        "mean_aji_slide": float(np.mean([r["aji_slide"] for r in rows])),
        "mean_pq_image": float(np.mean([r["pq_image"] for r in rows])),
        "mean_pq_slide": float(np.mean([r["pq_slide"] for r in rows])),
        "duplicates_iou_gt_0.5": len(pairs),
        # pairs of one tile are the model's own overlapping outputs (as in per-image prediction), not seams
        "duplicates_across_tiles": sum(tile_of[i] != tile_of[j] for i, j in pairs),
        "per_image_duplicates_iou_gt_0.5": image_dups, "duplicates_removed": summary["duplicates_removed"],
        "cut_at_tile_edges": summary["nuclei_cut_at_tile_edges"], "slide_s": slide_s, "per_image_model_s": t_pred,
        "slide_model_s": summary["seconds_model"], "slide_measure_s": summary.get("seconds_measure"),
        "tiles_run": summary["tiles_run"], "tiles": summary["tiles"],
    }
    print(json.dumps(result))
    return result


def bench_shift(args):
    """tools/predict.py against itself: each image alone vs the same image shifted right and down by
    s px on a canvas of the model's pixel mean (the value Detectron2 pads with: 0 after
    normalisation), AJI / PQ against the ground truth. Shifts that are not multiples of the
    network's stride (32) put the nuclei on another feature grid, as tiles of a slide do: this is
    the per-image prediction's own spread under such a shift, the noise floor of the seams target."""
    from d2_nucleus.evaluation.nucleus_metrics import compute_nucleus_metrics

    if not args.raw:
        raise SystemExit("shift needs --raw (the real dataset)")
    images, items = _tissue_images(args, args.seam_images)
    cfg, predictor = _predictor(args, args.opts)
    thresh = float(cfg.TEST.LABEL_MAP_SCORE_THRESH)
    mean_rgb = np.clip(np.round(np.asarray(cfg.MODEL.PIXEL_MEAN, np.float64)), 0, 255).astype(np.uint8)
    if cfg.INPUT.FORMAT == "BGR":
        mean_rgb = mean_rgb[::-1]
    rows = []
    for im, item in zip(tqdm(images, desc="shift", unit="image"), items):
        h, w = im.shape[:2]
        gt = _gt_labels(item, (h, w))
        row = {"image": item.image_id}
        for s in [0, *args.shifts]:
            canvas = np.empty((h + s, w + s, 3), np.uint8)
            canvas[:] = mean_rgb
            canvas[s:, s:] = im
            m = compute_nucleus_metrics(gt, _rasterise(_image_features(predictor, canvas, thresh, (s, s, w, h)),
                                                       (h, w), s, s))
            row[f"aji_{s}"], row[f"pq_{s}"] = m["AJI"], m["PQ"]
        rows.append(row)
        print(json.dumps(row))
    result = {"images": len(rows), "rows": rows, "shifts": {}}
    for s in args.shifts:
        d_aji = np.abs([r[f"aji_{s}"] - r["aji_0"] for r in rows])
        d_pq = np.abs([r[f"pq_{s}"] - r["pq_0"] for r in rows])
        result["shifts"][s] = {
            "within_0.01_both": int(((d_aji <= 0.01) & (d_pq <= 0.01)).sum()),
            "median_abs_d_aji": float(np.median(d_aji)), "max_abs_d_aji": float(d_aji.max()),
            "median_abs_d_pq": float(np.median(d_pq)), "max_abs_d_pq": float(d_pq.max()),
            "mean_aji": float(np.mean([r[f"aji_{s}"] for r in rows])),
            "mean_pq": float(np.mean([r[f"pq_{s}"] for r in rows])),
        }
    result["mean_aji_0"] = float(np.mean([r["aji_0"] for r in rows]))
    result["mean_pq_0"] = float(np.mean([r["pq_0"] for r in rows]))
    print(json.dumps(result["shifts"]))
    return result


def bench_glass(args):
    """The model on an image alone vs the same image centred in glass (does context change it?)."""
    from d2_nucleus.data.synthetic_slide import GLASS_RGB

    images, items = _tissue_images(args, args.seam_images)
    cfg, predictor = _predictor(args, args.opts)
    thresh = float(cfg.TEST.LABEL_MAP_SCORE_THRESH)
    rows = []
    for im, item in zip(images, items or [None] * len(images)):
        h, w = im.shape[:2]
        canvas = np.empty((h + 2 * args.glass, w + 2 * args.glass, 3), np.uint8)
        canvas[:] = GLASS_RGB
        canvas[args.glass : args.glass + h, args.glass : args.glass + w] = im
        counts = [int((predictor([x[:, :, ::-1].copy()])[0].scores >= thresh).sum()) for x in (im, canvas)]
        rows.append({"image": item.image_id if item else len(rows), "alone": counts[0], "in_glass": counts[1]})
        print(json.dumps(rows[-1]))
    return {"glass_px": args.glass, "rows": rows}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("memory", "speed", "resume", "seams", "shift", "glass"))
    p.add_argument("--config-file", default=os.path.join(ROOT, "configs", "cpu", "mask_rcnn_R_18_FPN_cpu_gn.yaml"))
    p.add_argument("--weights", required=True)
    p.add_argument("--raw", default=os.environ.get("D2_NUCLEUS_RAW_DATA"))
    p.add_argument("--work", default="/tmp/bench_slide")
    p.add_argument("--sizes", type=int, nargs="+", default=[40000, 80000])
    p.add_argument("--num-images", type=int, default=6)
    p.add_argument("--cols", type=int, default=3)
    p.add_argument("--seam-images", type=int, default=24, help="seams: training images in the mosaic (6 a row)")
    p.add_argument("--glass", type=int, default=212, help="glass: px of glass around each image")
    p.add_argument("--reference-glass", type=int, default=0,
                   help="seams: predict each reference image in this many px of glass, as the mosaic has it "
                   "around it (default 0: the image alone, as tools/predict.py)")
    p.add_argument("--reference-align", action="store_true",
                   help="seams, with --reference-glass: place the image at the offset modulo 32 px it has in its tiles")
    p.add_argument("--shifts", type=int, nargs="+", default=[8, 16, 32],
                   help="shift: px to shift each image by (32, the stride, is the control)")
    p.add_argument("--tile-sizes", type=int, nargs="+", default=[1024])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--opts", nargs="+", default=[], help="config overrides (memory, speed, seams), e.g. SLIDE.BATCH_SIZE 1")
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    result = {"memory": bench_memory, "speed": bench_speed, "resume": bench_resume, "seams": bench_seams,
              "shift": bench_shift, "glass": bench_glass}[args.what](args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
