#!/usr/bin/env python
"""
Segment nuclei in whole-slide images (any format OpenSlide reads) and large images, tile by
tile, with QuPath GeoJSON, a per-nucleus table with measurements, an overview PNG, a figure of the
measurements and a summary per slide.

    python tools/segment_slides.py --config-file configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml \\
        --weights output/model_final.pth slides/ --out results/
    python tools/segment_slides.py --config-file ... --weights ... a.svs b.ndpi --out results \\
        --tile-size 1024 --overlap 64 --batch-size 4 --csv --opts SLIDE.PREFETCH_BATCHES 4

A run killed at any point continues where it stopped when started again with the same command.
"""
import argparse
import logging
import os
import sys


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("slides", nargs="+", metavar="SLIDE", help="slide or image files, or folders of them")
    p.add_argument("--config-file", required=True, metavar="FILE", help="model config (YAML)")
    p.add_argument("--weights", default=None, help="checkpoint (.pth) to load (default: MODEL.WEIGHTS of the config)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    p.add_argument("--tile-size", type=int, default=None,
                   help="tile side in px at the model's resolution, overlap included (default: SLIDE.TILE_SIZE)")
    p.add_argument("--overlap", type=int, default=None,
                   help="px neighbouring tiles share; at least the largest nucleus (default: SLIDE.OVERLAP)")
    p.add_argument("--batch-size", type=int, default=None, help="tiles per forward pass (default: SLIDE.BATCH_SIZE)")
    p.add_argument("--mpp", type=float, default=None,
                   help="microns per pixel of the slides' full resolution; required when a file does not "
                   "say it, overrides the file's metadata otherwise")
    p.add_argument("--model-mpp", type=float, default=None,
                   help="microns per pixel the model was trained at (default: MODEL.PIXEL_SIZE_UM, or 0.25)")
    p.add_argument("--score-thresh", type=float, default=None,
                   help="keep nuclei scoring at least this (default: TEST.LABEL_MAP_SCORE_THRESH)")
    p.add_argument("--no-tissue-mask", action="store_true", help="segment every tile, glass included")
    p.add_argument("--tissue-mask", default=None, metavar="PATH",
                   help="tissue mask image (any size, non-zero = tissue) for one slide, or a folder of "
                   "<slide name>.png masks; replaces tissue detection")
    p.add_argument("--csv", action="store_true", help="also write the per-nucleus table as CSV")
    p.add_argument("--no-measurements", action="store_true",
                   help="no per-nucleus measurements (shape, size, H&E optical densities, RGB) in the table "
                   "and GeoJSON, and no measurement summary and figure (default: SLIDE.MEASUREMENTS.ENABLED)")
    p.add_argument("--stain", choices=("ruifrok", "macenko"), default=None,
                   help="H&E stain vectors of the colour deconvolution: fixed Ruifrok-Johnston, or Macenko "
                   "estimated once per slide from its thumbnail (default: SLIDE.MEASUREMENTS.STAIN)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    # a flag, not trailing words as in tools/predict.py: they could not be told from slide names
    p.add_argument("--opts", default=[], nargs="+", metavar="KEY VALUE",
                   help="config overrides as KEY VALUE pairs, e.g. --opts SLIDE.PREFETCH_BATCHES 4")
    return p


def setup_cfg(args):
    # Imported here: --help and argument errors return without loading torch / Detectron2.
    from d2_nucleus.config import get_inference_cfg
    from d2_nucleus.slide.config import set_slide_score_threshold
    from d2_nucleus.utils.cli import check_flag_number

    check_flag_number(args.mpp, "--mpp")
    check_flag_number(args.model_mpp, "--model-mpp", zero_ok=True)
    cfg = get_inference_cfg(args.config_file, args.opts, args.weights, args.device)
    for value, key in ((args.tile_size, "TILE_SIZE"), (args.overlap, "OVERLAP"), (args.batch_size, "BATCH_SIZE")):
        if value is not None:
            cfg.SLIDE[key] = value
    if args.model_mpp is not None:
        cfg.MODEL.PIXEL_SIZE_UM = args.model_mpp
    set_slide_score_threshold(cfg, args.score_thresh)
    cfg.freeze()
    return cfg


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from d2_nucleus.engine import NucleusPredictor
    from d2_nucleus.slide import list_slides, segment_slides

    try:
        if args.tissue_mask and args.no_tissue_mask:
            raise ValueError("--tissue-mask and --no-tissue-mask exclude each other")
        cfg = setup_cfg(args)
        paths = list_slides(args.slides)
        if args.tissue_mask and os.path.isfile(args.tissue_mask) and len(paths) > 1:
            raise ValueError("one --tissue-mask file for several slides; pass a folder of <slide>.png masks")
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise NotADirectoryError(f"--out {args.out!r} is a file")
        predictor = NucleusPredictor(cfg, batch_size=cfg.SLIDE.BATCH_SIZE)
        summaries, errors = segment_slides(
            predictor, cfg, paths, args.out, mpp=args.mpp,
            use_tissue=False if args.no_tissue_mask else None, tissue_mask=args.tissue_mask,
            csv=args.csv, overwrite=args.overwrite, progress=not args.quiet,
            measurements=False if args.no_measurements else None, stain=args.stain,
        )
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print(f"segment_slides: error: {e}", file=sys.stderr)
        return 2
    for s in summaries:
        if s["status"] == "exists":
            print(f"{s['slide']}: already complete ({s['summary']}; pass --overwrite to redo it)")
            continue
        density = s["nuclei_per_mm2_tissue"]
        print(
            f"{s['slide']}: {s['nuclei']} nuclei in {s['tissue_mm2']:.2f} mm² of tissue"
            + (f" ({density:.0f}/mm²)" if density is not None else "")
            + f" | level {s['level']} at {s['working_mpp']:.3f} um/px | {s['tiles_run']}/{s['tiles']} tiles"
            f" ({100 * s['tiles_skipped_fraction']:.0f}% skipped) | {s['seconds']:.1f} s"
        )
    if errors:
        print(f"{len(errors)} slide(s) failed:", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from d2_nucleus.utils.cli import run_main

    sys.exit(run_main(main, "segment_slides", "the same command continues where it stopped"))
