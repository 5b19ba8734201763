#!/usr/bin/env python
"""
Freeze a trained GroupNorm model's backbone statistics, for tiles that give the same nuclei as
whole images (whole slides: tools/segment_slides.py).

GroupNorm normalises by the statistics of the whole input, so a nucleus in a tile next to glass
gets other features than in its own image. This writes a checkpoint whose backbone (and FPN)
normalises with fixed statistics, calibrated on the training images, and the config that loads
it (MODEL.FROZEN_GROUP_NORM True):

    python tools/freeze_group_norm.py --config-file configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml \\
        --weights output/cpu_recipe/model_final.pth --data-root datasets/nucleus \\
        --output output/cpu_recipe/model_frozen_gn.pth
    # -> model_frozen_gn.pth and model_frozen_gn.yaml; then e.g.
    python tools/segment_slides.py --config-file output/cpu_recipe/model_frozen_gn.yaml ...
"""
import argparse
import logging
import sys

from d2_nucleus.utils.cli import error_line, quiet_known_warnings, run_main

PROG = "freeze_group_norm"


def get_parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="the trained model's config (YAML)")
    p.add_argument("--weights", default=None, help="its checkpoint (default: MODEL.WEIGHTS of the config)")
    p.add_argument("--output", required=True, metavar="PTH",
                   help="the frozen checkpoint to write (.pth); its config goes next to it as .yaml")
    p.add_argument("--data-root", default=None,
                   help="prepared dataset root (tools/prepare_data.py --out; default: NUCLEUS.DATA_ROOT / $D2_NUCLEUS_DATA)")
    p.add_argument("--dataset", default="", help="registered dataset to calibrate on (default: DATASETS.TRAIN[0])")
    p.add_argument("--num-images", type=int, default=0, help="use at most this many of its images (default: all)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="config overrides as KEY VALUE pairs")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_known_warnings()
    from d2_nucleus.config import get_inference_cfg
    from d2_nucleus.modeling.cpu.malloc import tune_process
    from d2_nucleus.engine.group_norm_calibration import freeze_group_norms, frozen_output_paths, write_frozen_model

    try:
        if args.num_images < 0:
            raise ValueError(f"--num-images must be >= 0, got {args.num_images}")
        cfg = get_inference_cfg(args.config_file, args.opts, args.weights, args.device)
        tune_process(cfg)
        if args.data_root:
            cfg.NUCLEUS.DATA_ROOT = args.data_root
        # Before the model runs: a bad output name, or outputs that exist, are refused now.
        frozen_output_paths(args.output, args.overwrite, inputs=[args.config_file, cfg.MODEL.WEIGHTS])
        model, n = freeze_group_norms(cfg, args.dataset, args.num_images, progress=not args.quiet)
        pth, yaml = write_frozen_model(model, cfg, args.output, args.overwrite)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print(error_line(PROG, e), file=sys.stderr)
        return 2
    print(f"calibrated on {n} images: wrote {pth} and {yaml}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, PROG, "nothing was written"))
