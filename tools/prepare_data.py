#!/usr/bin/env python
"""
Raw nucleus dataset (train/<ID>/images, train/<ID>/masks, test/, test_img_ids.json) -> the prepared
layout that training, evaluation and prediction read (nucleus_data/, annotations/instance_*.json,
test_img_ids.json, classes.txt, split.json). See d2_nucleus.data.prepare.

  python tools/prepare_data.py --raw RAW --out OUT [--ratio 0.2] [--seed 0] [--format rle|polygon]
                               [--workers N] [--overwrite]

Sub-steps, each writing one file:

  python tools/prepare_data.py split     --raw RAW --out split.json [--ratio R] [--seed S]
  python tools/prepare_data.py convert   --raw RAW --out instance_all_train.json [--subset all_train|train|val]
                                         [--split-file split.json | --ratio R --seed S] [--format F] [--workers N]
  python tools/prepare_data.py test-list --raw RAW --out instance_test.json

Errors name the file and the problem and exit with status 1, leaving no output behind; an existing
output is replaced only with --overwrite.
"""
import argparse
import logging
import sys

from d2_nucleus.data.mask2coco import FORMATS
from d2_nucleus.data.prepare import convert_split, prepare_dataset, write_split, write_test_list
from d2_nucleus.data.raw import RawDataError

PROG = "prepare_data"
SUBCOMMANDS = ("split", "convert", "test-list")


def _ratio(s):
    v = float(s)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {s}")
    return v


def _workers(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {s}")
    return v


def _add_common(p, out_help):
    p.add_argument("--raw", required=True, help="raw dataset folder (train/, test/, test_img_ids.json)")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (a prepared layout; refused if it holds other files)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no info messages")
    p.add_argument("--max-warnings", type=int, default=20, metavar="N",
                   help="warnings listed in full in the final report (default 20; all are counted)")


def _add_split(p):
    p.add_argument("--ratio", type=_ratio, default=0.2, help="share of training images for val, in [0, 1) (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="split seed; same seed and images, same split anywhere (default 0)")


def _add_convert(p):
    p.add_argument("--format", choices=FORMATS, default="rle",
                   help="segmentation format: rle = pixel-exact compressed RLE (default); "
                        "polygon = the seed's imantics polygons (holes filled, degenerate ones dropped)")
    p.add_argument("--workers", type=_workers, default=None, metavar="N",
                   help="processes converting masks, at least 1 (default: all cores; 1 = in this process)")


def build_parser(command=None):
    if command is None:
        p = argparse.ArgumentParser(prog="prepare_data.py", description=__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(p, "output root of the prepared layout (must not exist unless --overwrite)")
        _add_split(p)
        _add_convert(p)
    elif command == "split":
        p = argparse.ArgumentParser(prog="prepare_data.py split", description="Write the train/val split (split.json).")
        _add_common(p, "output split.json")
        _add_split(p)
    elif command == "convert":
        p = argparse.ArgumentParser(prog="prepare_data.py convert",
                                    description="Masks -> COCO json for one of all_train / train / val.")
        _add_common(p, "output COCO json, e.g. instance_all_train.json")
        p.add_argument("--subset", choices=("all_train", "train", "val"), default="all_train",
                       help="images to convert (default all_train)")
        p.add_argument("--split-file", default=None, help="split.json defining train/val (default: --ratio/--seed)")
        _add_split(p)
        _add_convert(p)
    elif command == "test-list":
        p = argparse.ArgumentParser(prog="prepare_data.py test-list",
                                    description="test_img_ids.json + test/ -> COCO image list (instance_test.json).")
        _add_common(p, "output COCO json, e.g. instance_test.json")
    else:
        raise ValueError(command)
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else None
    args = build_parser(command).parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format=f"{PROG}: %(message)s")
    progress = not args.quiet
    try:
        if command is None:
            report = prepare_dataset(args.raw, args.out, args.ratio, args.seed, args.format, args.workers,
                                     args.overwrite, progress)
        elif command == "split":
            split = write_split(args.raw, args.out, args.ratio, args.seed, args.overwrite)
            print(f"{PROG}: {len(split['train'])} train, {len(split['val'])} val -> {args.out}")
            return 0
        elif command == "convert":
            report = convert_split(args.raw, args.out, args.subset, args.split_file, args.ratio, args.seed,
                                   args.format, args.workers, args.overwrite, progress)
        else:
            report = write_test_list(args.raw, args.out, args.overwrite)
    except (RawDataError, OSError, ValueError) as e:  # OSError: exists, missing, not writable, ...
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    print(f"{PROG}: wrote {args.out}\n{report.summary(args.max_warnings)}")
    return 0


if __name__ == "__main__":
    from d2_nucleus.utils.cli import run_main

    sys.exit(run_main(main, PROG, "nothing was written (the layout appears whole at the end)"))
