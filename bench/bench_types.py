#!/usr/bin/env python
"""
Nucleus types on CRCHisto (CRCHistoPhenotypes, 80 images at 20x, 0.55 um/px): a segmentation model
trained on 40x MoNuSeg + a type classifier trained from CRCHisto's points, evaluated as the field
does (d2_nucleus.types.metrics): detection P / R / F1 within 6 px (3.3 um), HoVer-Net's per-class
joint F_c, the classification-only weighted F1 of the paired nuclei; pooled over the test images.

Steps:
1. the fixed split: a seeded split of the 80 image names (``split_names``, seed 0, 25% test: 60 / 20),
   written to ``bench/results/types_split.json`` (names only);
2. every image segmented once (cached: ``--cache``) with the model's box and context features
   (``TYPES.CONTEXT_SCALE``) and the measurements;
3. the detector's score threshold chosen on the training images (the best pooled detection F1;
   CRCHisto marks every nucleus) and applied to train and test alike;
4. the classifiers chosen on a validation split of the training images (45 / 15 images, seed 1),
   by the classification-only weighted F1: for each feature set (the model's box + context
   features, measurements, image patches, combinations) logistic regression vs an MLP (patch
   classifiers: the MLP head only); "ours" is the best set on validation, the baseline the best
   measurements-only classifier (what QuPath's object classifier sees);
5. each set's chosen classifier trained on the 60 training images and evaluated on the 20 test
   images; detection also with HoVer-Net's exact pairing;
6. the coordinate convention of the points measured: the mean offset from the paired nuclei's
   centroids to the points (before the reader's conversion).

Results: ``bench/results/types_crchisto.json`` (+ per-image rows), ``types_confusion_*.png``; a
Markdown table on stdout.

    python bench/bench_types.py --config-file configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml \\
        --weights /work/runs/base_nokidney/model_final.pth --data $D2_NUCLEUS_SHARED_DATA/crchisto \\
        --cache /work/runs/types/cache SOLVER.CPU_BF16 False
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
FEATURE_SETS = {
    "measurements": ("measurements",),
    "box+measurements": ("box", "measurements"),
    "box+context+measurements": ("box", "context", "measurements"),
    "patch+measurements": ("patch", "measurements"),
    "patch+box+context+measurements": ("patch", "box", "context", "measurements"),
}  # fmt: skip
CANDIDATES = {"logistic": 0, "mlp256": 256}  # TYPES.HIDDEN_DIM


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor()


def fit(cfg, hidden, train, classes, recipe):
    from d2_nucleus.types.classifier import default_colors
    from d2_nucleus.types.training import classifier_from_cfg

    cfg = cfg.clone()
    cfg.defrost()
    cfg.TYPES.HIDDEN_DIM = hidden
    return classifier_from_cfg(cfg, train, classes, default_colors(classes), recipe)


def validate(cfg, anns, nuclei, kinds, hidden, classes, recipe, val_names):
    """Classification-only weighted F1 and accuracy on the validation images, trained on the others."""
    from d2_nucleus.types.evaluation import evaluate_types
    from d2_nucleus.types.training import training_set

    tr = [i for i, a in enumerate(anns) if a.name not in val_names]
    va = [i for i, a in enumerate(anns) if a.name in val_names]
    train = training_set([anns[i] for i in tr], [nuclei[i] for i in tr], kinds, cfg.TYPES.MATCH_RADIUS_UM)
    clf = fit(cfg, hidden, train, classes, recipe)
    c = evaluate_types(clf, [anns[i] for i in va], [nuclei[i] for i in va], cfg.TYPES.MATCH_RADIUS_UM)
    c = c["pooled"]["classification"]
    return c["weighted_f1"], c["accuracy"]


def detection_counts(anns, nuclei, radius_um, gated=True):
    """Pooled detection TP, FP, FN and F1 (one-to-one within the radius, as the metrics pair them;
    ``gated=False``: HoVer-Net's pairing, least total distance then the radius)."""
    from d2_nucleus.types.matching import match_points, radius_px

    tp = fp = fn = 0
    for a, n in zip(anns, nuclei):
        pairs, ut, up = match_points(a.xy, n.xy, radius_px(radius_um, a.mpp), gated=gated)
        tp, fp, fn = tp + len(pairs), fp + len(up), fn + len(ut)
    return {"tp": tp, "fp": fp, "fn": fn, "f1": 2 * tp / max(2 * tp + fp + fn, 1)}


def choose_score_threshold(anns, nuclei, radius_um, lowest):
    """
    The detection score threshold of the best pooled detection F1 on ``anns`` (the training
    images: CRCHisto marks every nucleus, so an unpaired detection is a false one), from
    ``lowest`` (what the export kept) up in steps of 0.05. Returns (threshold, {threshold: F1}).
    """
    grid = [round(float(t), 2) for t in np.arange(lowest, 0.951, 0.05)]
    f1 = {t: detection_counts(anns, [n.above(t) for n in nuclei], radius_um)["f1"] for t in grid}
    return max(f1, key=f1.get), f1


def coordinate_offset(anns, nuclei, radius_um):
    """Mean (point - paired centroid) in px, with the reader's conversion undone."""
    from d2_nucleus.types.matching import match_points, radius_px
    from d2_nucleus.types.crchisto import CRCHISTO_OFFSET

    d = []
    for a, n in zip(anns, nuclei):
        pairs, _, _ = match_points(a.xy, n.xy, radius_px(radius_um, a.mpp))
        d.append(a.xy[pairs[:, 0]] - n.xy[pairs[:, 1]])
    d = np.concatenate(d) + CRCHISTO_OFFSET
    return {"dx_mean": float(d[:, 0].mean()), "dy_mean": float(d[:, 1].mean()), "dx_median": float(np.median(d[:, 0])),
            "dy_median": float(np.median(d[:, 1])), "pairs": int(len(d)), "reader_offset": CRCHISTO_OFFSET}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--data", default=os.path.join(os.environ.get("D2_NUCLEUS_SHARED_DATA", ""), "crchisto"))
    p.add_argument("--cache", default=None, help="segmentation cache folder (reused across runs)")
    p.add_argument("--tag", default="crchisto", help="name of the results files: types_<tag>.json")
    p.add_argument("--max-images", type=int, default=0, help="at most this many train and test images (0: all; quick checks)")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)

    from d2_nucleus.config import get_inference_cfg
    from d2_nucleus.types.detect import NucleusDetector
    from d2_nucleus.types.evaluation import evaluate_types, format_table, write_evaluation
    from d2_nucleus.types.matching import radius_px
    from d2_nucleus.types.crchisto import read_crchisto
    from d2_nucleus.types.training import make_recipe, split_names, training_set
    from d2_nucleus.types.workflow import select_images

    os.makedirs(RESULTS, exist_ok=True)
    cfg = get_inference_cfg(args.config_file, args.opts, args.weights, "cpu")
    anns = read_crchisto(args.data)
    split_path = os.path.join(RESULTS, "types_split.json")
    if not os.path.isfile(split_path):
        train_names, test_names = split_names([a.name for a in anns], 0.25, 0)
        with open(split_path, "w") as f:
            json.dump({"train": train_names, "test": test_names, "seed": 0, "test_fraction": 0.25}, f, indent=1)
    train_anns = select_images(anns, split_path, "train")
    test_anns = select_images(anns, split_path, "test")
    if args.max_images:
        train_anns, test_anns = train_anns[: args.max_images], test_anns[: args.max_images]
    classes = list(anns[0].class_names)
    radius = float(cfg.TYPES.MATCH_RADIUS_UM)

    detector = NucleusDetector(cfg, box_features=True, stain=cfg.TYPES.STAIN, cache_dir=args.cache)
    t0 = time.perf_counter()
    train_nuc = detector.detect_all(train_anns)
    test_nuc = detector.detect_all(test_anns)
    segment_s = time.perf_counter() - t0
    box_dim = train_nuc[0].features["box"].shape[1]
    working = detector.working_mpp(anns[0].mpp)

    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": cpu_model(),
           "command": "python bench/bench_types.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "weights": args.weights, "fingerprint": detector.fingerprint, "image_mpp": anns[0].mpp,
           "test_scale": detector.test_scale(anns[0].mpp), "working_mpp": working,
           "radius_um": radius, "radius_px": radius_px(radius, anns[0].mpp), "segment_seconds": segment_s,
           "split": {"train": len(train_anns), "test": len(test_anns)},
           "offset": coordinate_offset(train_anns, train_nuc, radius), "validation": {}, "test": {}}
    # the detector's score threshold, chosen on the training images and applied to both
    lowest = float(cfg.TEST.LABEL_MAP_SCORE_THRESH)
    thresh, f1_by_thresh = choose_score_threshold(train_anns, train_nuc, radius, lowest)
    out["score_threshold"] = {"chosen": thresh, "exported_from": lowest, "train_detection_f1": f1_by_thresh,
                              "test_detection_at_export": detection_counts(test_anns, test_nuc, radius)}
    train_nuc = [n.above(thresh) for n in train_nuc]
    test_nuc = [n.above(thresh) for n in test_nuc]
    print(f"score threshold {thresh} (training images' detection F1 {f1_by_thresh[thresh]:.3f}; "
          f"{f1_by_thresh[round(lowest, 2)]:.3f} at the export's {lowest})", flush=True)
    _, val_names = split_names([a.name for a in train_anns], 0.25, 1)
    out["split"]["validation"] = len(val_names)
    print(f"segmented {len(train_anns) + len(test_anns)} images in {segment_s:.0f} s; offset {out['offset']}", flush=True)

    chosen = {}
    for set_name, kinds in FEATURE_SETS.items():
        model_kinds = "box" in kinds or "context" in kinds
        recipe = make_recipe(kinds, box_dim, detector.fingerprint if model_kinds else None,
                             working if model_kinds else None, detector.stain, None, detector.context_scale)
        best = None
        for cand, hidden in CANDIDATES.items():
            if "patch" in kinds and hidden == 0:
                continue
            t = time.perf_counter()
            wf1, acc = validate(cfg, train_anns, train_nuc, kinds, hidden, classes, recipe, set(val_names))
            out["validation"][f"{set_name}/{cand}"] = {"weighted_f1": wf1, "accuracy": acc,
                                                       "seconds": time.perf_counter() - t}
            print(f"validation {set_name:>30} {cand:>8}: weighted F1 {wf1:.3f} accuracy {acc:.3f} "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)
            if best is None or wf1 > best[1]:
                best = (cand, wf1)
        chosen[set_name] = best
        cand = best[0]
        train = training_set(train_anns, train_nuc, kinds, radius)
        t = time.perf_counter()
        clf = fit(cfg, CANDIDATES[cand], train, classes, recipe)
        train_s = time.perf_counter() - t
        res = evaluate_types(clf, test_anns, test_nuc, radius)
        tag = set_name.replace("+", "_")
        write_evaluation(res, figure_path=os.path.join(RESULTS, f"types_confusion_{tag}.png"),
                         title=f"CRCHisto test (20 images): {set_name}, {cand}", overwrite=True)
        out["test"][set_name] = {"classifier": cand, "train_seconds": train_s, "trained_on": int(len(train.y)),
                                 "validation_weighted_f1": best[1], "pooled": res["pooled"], "images": res["images"]}
        print(f"\n== {set_name} ({cand}, trained on {len(train.y)} nuclei in {train_s:.0f} s)\n{format_table(res)}",
              flush=True)
    out["ours"] = max((k for k in chosen if k != "measurements"), key=lambda k: chosen[k][1])
    out["baseline"] = "measurements"
    print(f"ours (best on validation): {out['ours']}")

    # detection with HoVer-Net's exact pairing (least total distance, then the radius)
    d = detection_counts(test_anns, test_nuc, radius, gated=False)
    out["detection_hovernet_pairing"] = d
    path = os.path.join(RESULTS, f"types_{args.tag}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"\nHoVer-Net pairing: detection F1 {d['f1']:.3f}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
