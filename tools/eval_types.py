#!/usr/bin/env python
"""
Evaluate a nucleus type classifier against point annotations, as the field does on CRCHisto:
detection precision / recall / F1 within a radius (6 px at 20x), HoVer-Net's per-class joint
detection + classification F1 (F_c), and the classification-only weighted F1 of the paired nuclei,
pooled over the images; per-image rows and the confusion matrix picture.

    python tools/eval_types.py --config-file configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml \\
        --weights output/model_final.pth --classifier output/types.npz --points crchisto/ \\
        --split types_split.json --out output/types_eval
"""
import argparse
import logging
import os
import sys

from d2_nucleus.types.options import add_common_arguments, input_paths, read_annotations, setup_cfg
from d2_nucleus.utils.cli import check_flag_number, quiet_known_warnings, run_main


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p)
    p.add_argument("--classifier", default=None, metavar="FILE", help="the classifier (default: TYPES.CLASSIFIER)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="writes metrics.json, per_image.csv and confusion.png here")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_known_warnings()
    from d2_nucleus.types.detect import NucleusDetector
    from d2_nucleus.types.evaluation import format_table, write_evaluation
    from d2_nucleus.types.workflow import evaluate_classifier, load_classifier, select_images
    from d2_nucleus.utils.file_io import check_not_input, check_writable

    paths = {k: os.path.join(args.out, name) for k, name in
             (("json", "metrics.json"), ("csv", "per_image.csv"), ("figure", "confusion.png"))}
    try:
        check_flag_number(args.mpp, "--mpp")
        cfg = setup_cfg(args)
        if args.classifier is not None:
            cfg.TYPES.CLASSIFIER = args.classifier
        check_not_input(list(paths.values()), input_paths(args, cfg) + [args.split, cfg.TYPES.CLASSIFIER])
        for path in paths.values():
            check_writable(path, overwrite=args.overwrite)
        classifier = load_classifier(cfg.TYPES.CLASSIFIER)
        annotations = select_images(read_annotations(args), args.split, "test")
        cfg.TYPES.CONTEXT_SCALE = classifier.context_scale
        detector = NucleusDetector(cfg, box_features=classifier.needs_model_features, stain=classifier.recipe["stain"],
                                   cache_dir=args.cache)
        results = evaluate_classifier(cfg, classifier, annotations, detector, progress=not args.quiet)
        results["classifier"] = cfg.TYPES.CLASSIFIER
        write_evaluation(results, paths["json"], paths["csv"], paths["figure"],
                         title=os.path.basename(cfg.TYPES.CLASSIFIER), overwrite=args.overwrite)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print(f"eval_types: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"{len(annotations)} image(s), match radius {results['radius_um']} um")
    print(format_table(results))
    print(f"Wrote {', '.join(paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "eval_types"))
