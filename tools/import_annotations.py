#!/usr/bin/env python
"""
Your own annotations -> the prepared layout that tools/train_net.py trains and evaluates on, at the
model's resolution (see d2_nucleus.data.importing and README "Training on your own annotations").

  python tools/import_annotations.py --format aperio-xml  XMLS_OR_DIR...   --out PREPARED [--images DIR]
  python tools/import_annotations.py --format geojson     GEOJSONS_OR_DIR... --out PREPARED [--default-mpp 0.5]
  python tools/import_annotations.py --format label-image DIR_OR_LABELS...  --out PREPARED [--default-mpp 0.5]
  python tools/import_annotations.py --format coco        COCO_JSON...      --out PREPARED [--images DIR]

      [--mpp X] [--target-mpp X] [--config-file CFG] [--mpp-tolerance 0.1] [--class NAME ...]
      [--ratio 0.2] [--seed 0] [--overwrite] [--quiet] [--max-warnings N]

Bad input (a missing image, a malformed or empty file, outlines outside their image, a label image
of another size than its image, no resolution known) stops the run with one line naming the file
and exit status 2, leaving no output behind; an existing output is replaced only with --overwrite.
"""
import argparse
import logging
import sys

from d2_nucleus.data.importers import FORMATS
from d2_nucleus.data.importing import import_annotations
from d2_nucleus.data.raw import RawDataError
from d2_nucleus.utils.cli import error_line, quiet_known_warnings, run_main

PROG = "import_annotations"


def _positive(s):
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {s}")
    return v


def _ratio(s):
    v = float(s)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {s}")
    return v


def build_parser():
    p = argparse.ArgumentParser(prog="import_annotations.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="annotation files or folders of them (label-image: folders with masks/ + images/, "
                        "or with X.png + X_masks.png, or the label files)")
    p.add_argument("--format", required=True, choices=FORMATS, help="annotation format of the inputs")
    p.add_argument("--out", required=True, help="output root of the prepared layout (must not exist unless --overwrite)")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="find each image (same name as its annotation file, any image extension) anywhere under "
                        "DIR; COCO: the folder file_name is relative to (default: beside the annotation file)")
    p.add_argument("--mpp", type=_positive, default=None, metavar="UM",
                   help="microns per pixel of every source, overriding what the files say (default: Aperio "
                        "MicronsPerPixel or a label TIFF's tags, then the image's TIFF/slide metadata, then "
                        "--default-mpp; an error when none is known)")
    p.add_argument("--default-mpp", type=_positive, default=None, metavar="UM",
                   help="microns per pixel of the sources whose files state none (PNG, JPEG, GeoJSON, COCO, "
                        "an XML without MicronsPerPixel)")
    p.add_argument("--target-mpp", type=_positive, default=None, metavar="UM",
                   help="resolution to import at, in microns per pixel (default: the model config's "
                        "MODEL.PIXEL_SIZE_UM, the training data's 0.25)")
    p.add_argument("--config-file", default=None, metavar="CFG",
                   help="the model config whose MODEL.PIXEL_SIZE_UM is the default target and whose "
                        "SLIDE.MPP_TOLERANCE the default --mpp-tolerance (default: the defaults, 0.25 um/px and 0.1)")
    p.add_argument("--mpp-tolerance", type=_ratio, default=None, metavar="REL",
                   help="sources within this relative difference of the target keep their pixels, as images of "
                        "such a resolution are not resized for prediction (default: the config's "
                        "SLIDE.MPP_TOLERANCE, 0.1)")
    p.add_argument("--class", dest="classes", action="append", default=None, metavar="NAME",
                   help="keep only nuclei of this source class name (QuPath classification, COCO category, "
                        "Aperio region text or layer name); repeat for several (default: all)")
    p.add_argument("--ratio", type=_ratio, default=0.2, help="share of images for val, in [0, 1) (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="split seed; same seed and images, same split anywhere (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (a prepared layout; refused if it holds other files)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no info messages")
    p.add_argument("--max-warnings", type=int, default=20, metavar="N",
                   help="warnings listed in full in the final report (default 20; all are counted)")
    return p


def resolution(args):
    """(target mpp, tolerance): --target-mpp / --mpp-tolerance, else the config's (--config-file or the defaults)."""
    from d2_nucleus.config import get_nucleus_cfg, model_mpp

    cfg = get_nucleus_cfg(args.config_file, ["MODEL.DEVICE", "cpu"])  # no model runs here
    target = args.target_mpp if args.target_mpp is not None else model_mpp(cfg)
    tolerance = args.mpp_tolerance if args.mpp_tolerance is not None else float(cfg.SLIDE.MPP_TOLERANCE)
    return target, tolerance


def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_known_warnings()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format=f"{PROG}: %(message)s")
    try:
        target, tolerance = resolution(args)
        report = import_annotations(
            args.format, args.inputs, args.out, target, images=args.images, mpp=args.mpp, default_mpp=args.default_mpp,
            ratio=args.ratio, seed=args.seed, classes=args.classes, tolerance=tolerance,
            overwrite=args.overwrite, progress=not args.quiet,
        )
    except (RawDataError, OSError, ValueError) as e:  # ValueError: ConfigError, SlideError, bad arguments
        print(error_line(PROG, e), file=sys.stderr)
        return 2
    print(f"{PROG}: wrote {args.out}\n{report.summary(args.max_warnings)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, PROG, "nothing was written (the layout appears whole at the end)"))
