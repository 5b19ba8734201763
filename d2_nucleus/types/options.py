# -*- coding: utf-8 -*-
"""
The flags ``tools/train_types.py`` and ``tools/eval_types.py`` share, and how they become the run's
config and annotations (one place for both tools, as :mod:`d2_nucleus.slide.options` is for the
slide tools). ``TYPES.CLASSIFIER`` of the image and slide tools is their ``--types``.
"""
import argparse

__all__ = ["add_common_arguments", "setup_cfg", "input_paths", "read_annotations"]


def add_common_arguments(p):
    """The flags tools/train_types.py and tools/eval_types.py share."""
    p.add_argument("--config-file", required=True, metavar="FILE", help="segmentation model config (YAML)")
    p.add_argument("--weights", default=None, help="segmentation checkpoint (.pth) (default: MODEL.WEIGHTS)")
    p.add_argument("--points", required=True, metavar="PATH",
                   help="point annotations: CRCHisto folder, folder of QuPath .geojson point files, or a CSV")
    p.add_argument("--format", choices=("crchisto", "qupath", "csv"), default="crchisto",
                   help="annotation format (default: crchisto)")
    p.add_argument("--images", default=None, metavar="DIR", help="the images of QuPath / CSV points")
    p.add_argument("--mpp", type=float, default=None,
                   help="micrometres per pixel of the images (CRCHisto: 0.55 from its paper; required otherwise)")
    p.add_argument("--classes", default=None, metavar="A,B,...",
                   help="QuPath / CSV: the class names in order (default: every name found, sorted)")
    p.add_argument("--split", default=None, metavar="JSON",
                   help='{"train": [image names], "test": [...]}: train on "train", evaluate on "test" '
                   "(train_types.py writes a seeded split when the file does not exist)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="keep each image's segmentation and features here and reuse them")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                   help="config overrides as KEY VALUE pairs, e.g. TYPES.HIDDEN_DIM 0 TYPES.EPOCHS 40")


def setup_cfg(args, features=None):
    """The config: model, weights, device, overrides; flags onto TYPES keys."""
    from ..config import get_inference_cfg

    cfg = get_inference_cfg(args.config_file, args.opts, args.weights, args.device)
    if features is not None:
        cfg.TYPES.FEATURES = tuple(k.strip() for k in features.split(",") if k.strip())
    return cfg


def input_paths(args, cfg):
    """What the run reads (no output may be one of them)."""
    return [args.config_file, cfg.MODEL.WEIGHTS, args.points, args.images]


def read_annotations(args):
    """The point annotations the flags name (:func:`d2_nucleus.types.points.read_points`)."""
    from .points import read_points

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    return read_points(args.format, args.points, args.images, classes, args.mpp)
