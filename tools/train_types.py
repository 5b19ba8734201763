#!/usr/bin/env python
"""
Train a nucleus type classifier from point annotations on top of a trained segmentation model:
segment the annotated images, pair the nuclei with the clicked centres, and learn the types of
the paired nuclei from the model's box features and their measurements.

    python tools/train_types.py --config-file configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml \\
        --weights output/model_final.pth --points crchisto/ --format crchisto \\
        --split types_split.json --output output/types.npz
    python tools/train_types.py --config-file ... --weights ... --points qupath_points/ --format qupath \\
        --images images/ --mpp 0.5 --output types.npz TYPES.HIDDEN_DIM 0
"""
import argparse
import logging
import sys

from d2_nucleus.types.options import add_common_arguments, input_paths, read_annotations, setup_cfg
from d2_nucleus.utils.cli import check_flag_number, quiet_known_warnings, run_main


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p)
    p.add_argument("--output", required=True, metavar="FILE", help="the classifier file to write (.npz)")
    p.add_argument("--features", default=None, metavar="KINDS",
                   help="some of box,context,measurements,patch (default: TYPES.FEATURES, patch,measurements)")
    p.add_argument("--test-fraction", type=float, default=0.25,
                   help="share of images held out when --split writes a new split file (default 0.25)")
    p.add_argument("--seed", type=int, default=0, help="seed of a new split (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_known_warnings()
    from d2_nucleus.types.detect import NucleusDetector
    from d2_nucleus.types.workflow import select_images, train_types
    from d2_nucleus.utils.file_io import check_not_input, check_writable

    try:
        check_flag_number(args.mpp, "--mpp")
        cfg = setup_cfg(args, args.features)
        check_not_input([args.output, args.split], input_paths(args, cfg))
        check_writable(args.output, overwrite=args.overwrite)
        annotations = read_annotations(args)
        annotations = select_images(annotations, args.split, "train", args.test_fraction, args.seed, create=True)
        if "context" not in cfg.TYPES.FEATURES:
            cfg.TYPES.CONTEXT_SCALE = 0.0
        detector = NucleusDetector(cfg, box_features=any(k in ("box", "context") for k in cfg.TYPES.FEATURES),
                                   stain=cfg.TYPES.STAIN,
                                   cache_dir=args.cache)
        model = {"config": args.config_file, "weights": cfg.MODEL.WEIGHTS}
        classifier, report = train_types(cfg, annotations, detector, progress=not args.quiet, model_info=model)
        classifier.save(args.output, overwrite=args.overwrite)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print(f"train_types: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    counts = dict(zip(classifier.class_names, classifier.info["class_counts"]))
    print(f"Trained on {report['trained_on']} paired nuclei with a class ({counts}) of {report['num_images']} images "
          f"({report['nuclei']} nuclei segmented, {report['centres']} centres); features "
          f"{'+'.join(classifier.features)} ({classifier.feature_dim}). Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "train_types"))
