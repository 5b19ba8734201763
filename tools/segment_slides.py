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
    from d2_nucleus.slide.options import add_slide_arguments

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("slides", nargs="+", metavar="SLIDE", help="slide or image files, or folders of them")
    return add_slide_arguments(p)


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from d2_nucleus.engine import NucleusPredictor
    from d2_nucleus.modeling.cpu.malloc import tune_process
    from d2_nucleus.slide import list_slides, segment_slides
    from d2_nucleus.slide.options import slide_cfg_from_args
    from d2_nucleus.slide.outputs import check_slide_outputs

    try:
        cfg = slide_cfg_from_args(args)
        paths = list_slides(args.slides)
        if os.path.isfile(cfg.SLIDE.TISSUE.MASK) and len(paths) > 1:
            raise ValueError("one --tissue-mask file for several slides; pass a folder of <slide>.png masks")
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise NotADirectoryError(f"--out {args.out!r} is a file")
        # whatever --overwrite: no output replaces a slide, a tissue mask, the config or the weights
        check_slide_outputs(cfg, paths, args.out, inputs=[args.config_file] + args.slides)
        tune_process(cfg)
        predictor = NucleusPredictor(cfg, batch_size=cfg.SLIDE.BATCH_SIZE)
        summaries, errors = segment_slides(predictor, cfg, paths, args.out, mpp=args.mpp, overwrite=args.overwrite,
                                           progress=not args.quiet)
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
