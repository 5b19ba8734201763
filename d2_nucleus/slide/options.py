# -*- coding: utf-8 -*-
"""
The slide tools' command line, in one place for every slide entry point (tools/segment_slides.py,
tools/segment_cluster.py, and the next): :func:`add_slide_arguments` declares the flags and
:func:`slide_cfg_from_args` maps each one onto its config key (:data:`FLAG_KEYS`), so a setting
reaches the pipeline only through the config. ``--mpp`` is a per-slide input (a manifest can give
each slide its own) and ``--overwrite`` / ``--quiet`` are about the run, not the segmentation:
they stay arguments.
"""
import argparse
from typing import Callable, Dict, Tuple

__all__ = ["FLAG_KEYS", "MIN_TILE_SIZE", "add_slide_arguments", "check_slide_args", "check_tiles", "slide_cfg_from_args"]

# flag (argparse dest) -> (config key, value for the key from the flag's value)
FLAG_KEYS: Dict[str, Tuple[str, Callable]] = {
    "tile_size": ("SLIDE.TILE_SIZE", int),
    "overlap": ("SLIDE.OVERLAP", int),
    "batch_size": ("SLIDE.BATCH_SIZE", int),
    "model_mpp": ("MODEL.PIXEL_SIZE_UM", float),
    "score_thresh": ("TEST.LABEL_MAP_SCORE_THRESH", float),
    "no_tissue_mask": ("SLIDE.TISSUE.ENABLED", lambda v: not v),
    "tissue_mask": ("SLIDE.TISSUE.MASK", str),
    "csv": ("SLIDE.CSV", bool),
    "no_measurements": ("SLIDE.MEASUREMENTS.ENABLED", lambda v: not v),
    "stain": ("SLIDE.MEASUREMENTS.STAIN", str),
    "types": ("TYPES.CLASSIFIER", str),
}

#: The least tile side (px at the model's resolution). Tiles must also be at least twice the overlap
#: plus TILE_CORE_MARGIN, so that each tile's core (its side minus the overlap) is wider than the
#: overlap: the model then runs on at most (tile / core)^2 < 4 times the slide's area. ``--tile-size 8``
#: made 6,600 tiles of a small image, each almost all overlap.
MIN_TILE_SIZE = 128
TILE_CORE_MARGIN = 64
_FLAGS = {key: "--" + dest.replace("_", "-") for dest, (key, _) in FLAG_KEYS.items()}


def add_slide_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags every slide tool takes (its own positional inputs and extra flags aside)."""
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
                   help="microns per pixel the model works at (default: MODEL.PIXEL_SIZE_UM, 0.25)")
    p.add_argument("--score-thresh", type=float, default=None,
                   help="keep nuclei scoring at least this (default: TEST.LABEL_MAP_SCORE_THRESH)")
    p.add_argument("--no-tissue-mask", action="store_true", default=None,
                   help="segment every tile, glass included (SLIDE.TISSUE.ENABLED False)")
    p.add_argument("--tissue-mask", default=None, metavar="PATH",
                   help="tissue mask image (any size, non-zero = tissue) for one slide, or a folder of "
                   "<slide name>.png masks; replaces tissue detection (SLIDE.TISSUE.MASK)")
    p.add_argument("--csv", action="store_true", default=None,
                   help="also write the per-nucleus table as CSV (SLIDE.CSV)")
    p.add_argument("--no-measurements", action="store_true", default=None,
                   help="no per-nucleus measurements (shape, size, H&E optical densities, RGB) in the table "
                   "and GeoJSON, and no measurement summary and figure (SLIDE.MEASUREMENTS.ENABLED False)")
    p.add_argument("--stain", choices=("ruifrok", "macenko"), default=None,
                   help="H&E stain vectors of the colour deconvolution: fixed Ruifrok-Johnston, or Macenko "
                   "estimated once per slide from its thumbnail (default: SLIDE.MEASUREMENTS.STAIN)")
    p.add_argument("--types", default=None, metavar="FILE",
                   help="nucleus type classifier (tools/train_types.py) applied to every nucleus: type and "
                   "probability columns, QuPath classes in the types' colours, per-type counts, fractions and "
                   "densities in the summary, figures by type (TYPES.CLASSIFIER)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    # a flag, not trailing words as in tools/predict.py: they could not be told from slide names
    p.add_argument("--opts", default=[], nargs="+", metavar="KEY VALUE",
                   help="config overrides as KEY VALUE pairs, e.g. --opts SLIDE.PREFETCH_BATCHES 4")
    return p


def check_slide_args(args) -> None:
    """Raise ValueError (one line) for flag values no run can use and flags that contradict each other."""
    from ..utils.cli import check_flag_number

    check_flag_number(args.mpp, "--mpp")
    check_flag_number(args.model_mpp, "--model-mpp")
    if args.tissue_mask and args.no_tissue_mask:
        raise ValueError("--tissue-mask and --no-tissue-mask exclude each other")


def check_tiles(cfg) -> None:
    """
    Raise ValueError (one line naming the key and its flag) for tile settings no run should use:
    ``SLIDE.OVERLAP`` < 0, ``SLIDE.BATCH_SIZE`` < 1, ``SLIDE.TILE_SIZE`` < :data:`MIN_TILE_SIZE`
    or < 2 x overlap + :data:`TILE_CORE_MARGIN`.
    """
    def name(key):
        return f"{key} ({_FLAGS[key]})"

    tile, overlap, batch = cfg.SLIDE.TILE_SIZE, cfg.SLIDE.OVERLAP, cfg.SLIDE.BATCH_SIZE
    if overlap < 0:
        raise ValueError(f"{name('SLIDE.OVERLAP')} must be >= 0, got {overlap}")
    if batch < 1:
        raise ValueError(f"{name('SLIDE.BATCH_SIZE')} must be >= 1, got {batch}")
    least = max(MIN_TILE_SIZE, 2 * overlap + TILE_CORE_MARGIN)
    if tile < least:
        raise ValueError(f"{name('SLIDE.TILE_SIZE')} must be at least {least} px (>= {MIN_TILE_SIZE} and >= 2 x "
                         f"{name('SLIDE.OVERLAP')} {overlap} + {TILE_CORE_MARGIN}), got {tile}")


def slide_cfg_from_args(args):
    """
    The frozen config of a slide tool: ``--config-file`` with ``--opts``, then each flag given
    (:data:`FLAG_KEYS`) onto its key, ``--weights`` / ``--device``, and the detector's score
    threshold set to the kept score (:func:`d2_nucleus.config.set_slide_score_threshold`).
    Paths (weights, tissue masks, the type classifier) are made absolute: Dask workers may run in
    another folder. A type classifier is loaded (a bad file fails here) and the model set to
    compute the features it reads (:func:`d2_nucleus.types.outputs.load_for_model`).

    Raises:
        ConfigError / ValueError: a bad config, override or flag, tiles out of bounds
        (:func:`check_tiles`), a bad type classifier file (one line).
    """
    import os

    from ..config import get_inference_cfg, set_slide_score_threshold
    from ..types.outputs import load_for_model

    check_slide_args(args)
    cfg = get_inference_cfg(args.config_file, args.opts, args.weights, args.device)
    for dest, (key, convert) in FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        node, _, leaf = key.rpartition(".")
        target = cfg
        for part in node.split("."):
            target = target[part]
        target[leaf] = convert(value)
    check_tiles(cfg)
    if cfg.SLIDE.TISSUE.MASK:
        cfg.SLIDE.TISSUE.MASK = os.path.abspath(cfg.SLIDE.TISSUE.MASK)
    if cfg.TYPES.CLASSIFIER:
        cfg.TYPES.CLASSIFIER = os.path.abspath(cfg.TYPES.CLASSIFIER)
        _, cfg = load_for_model(cfg)
    set_slide_score_threshold(cfg)
    cfg.freeze()
    return cfg
