# -*- coding: utf-8 -*-
"""
Config keys of the whole-slide pipeline (``cfg.SLIDE``: tools/segment_slides.py and
tools/segment_cluster.py; their flags map onto these keys in one place,
:func:`d2_nucleus.slide.options.slide_cfg_from_args`).
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_slide_config", "set_slide_score_threshold"]


def add_slide_config(cfg):
    """
    Add the whole-slide keys (``cfg.SLIDE``). Safe to call on a config that already has them.
    The model's resolution is ``cfg.MODEL.PIXEL_SIZE_UM``: slides are read at the pyramid level
    closest to it and their tiles resampled to it.
    """
    if hasattr(cfg, "SLIDE"):
        return
    cfg.SLIDE = CN()
    # Side of a tile at the model's resolution, overlap included (tiles at the slide's right and
    # bottom edges are smaller).
    cfg.SLIDE.TILE_SIZE = 1024
    # Pixels (at the model's resolution) that neighbouring tiles share. Each nucleus belongs to the
    # one tile whose core (the tile less half the overlap on each side) holds its box centre; it is
    # seen whole by that tile when it is at most OVERLAP px wide and high. Nuclei touching a tile's
    # edge inside the slide are counted as "cut" in the summary: raise OVERLAP if that is not 0.
    cfg.SLIDE.OVERLAP = 64
    # Nuclei whose box centre lies up to this many px outside their tile's core are kept too, so
    # that a nucleus on a seam whose centre two tiles place on different sides of it is not lost;
    # the duplicate check below removes the second copy.
    cfg.SLIDE.SEAM_TOLERANCE = 2
    # Safety net across neighbouring tiles: of two nuclei with mask IoU above this, the one of the
    # later tile (row-major order) is dropped (the summary counts them).
    cfg.SLIDE.DUPLICATE_IOU = 0.5
    # Tiles per forward pass, and batches the loader thread reads ahead of the model.
    cfg.SLIDE.BATCH_SIZE = 2
    cfg.SLIDE.PREFETCH_BATCHES = 2
    # A pyramid level (or, in tools/predict.py, an image of --mpp) whose resolution is within this
    # relative difference of the model's is used as is, without resampling (nucleus sizes vary far
    # more between scanners; config.defaults.input_resize_factor).
    cfg.SLIDE.MPP_TOLERANCE = 0.1
    # Nuclei density heatmap of the overview figure: bin side in micrometres.
    cfg.SLIDE.HEATMAP_BIN_UM = 100.0
    # Also write the per-nucleus table as CSV beside the Parquet table (--csv).
    cfg.SLIDE.CSV = False

    cfg.SLIDE.MEASUREMENTS = CN()
    # Per-nucleus measurements (d2_nucleus.measurements: shape, size, H&E optical densities, RGB)
    # in the table and the GeoJSON, their per-slide summary and figure. Cheap next to the model
    # (BENCHMARKS.md "Whole slides"); tools/segment_slides.py --no-measurements turns them off.
    cfg.SLIDE.MEASUREMENTS.ENABLED = True
    # Stain vectors of the colour deconvolution: "ruifrok" (fixed Ruifrok-Johnston H&E) or
    # "macenko" (estimated once per slide from its thumbnail).
    cfg.SLIDE.MEASUREMENTS.STAIN = "ruifrok"

    cfg.SLIDE.TISSUE = CN()
    # Detect tissue on a thumbnail and skip background tiles (tools/segment_slides.py
    # --no-tissue-mask turns it off, --tissue-mask passes a mask).
    cfg.SLIDE.TISSUE.ENABLED = True
    # Your own tissue mask instead of detection (--tissue-mask): an image of any size covering the
    # slide (non-zero = tissue), or a folder of <slide name>.png masks (slides without one get
    # detection). "" = none.
    cfg.SLIDE.TISSUE.MASK = ""
    # Resolution of the thumbnail tissue is detected on (um/px).
    cfg.SLIDE.TISSUE.THUMBNAIL_MPP = 8.0
    # Tissue: HSV saturation (0-255) above this. Glass is grey (saturation under ~15), stained
    # tissue is not; raise it for slides on tinted glass.
    cfg.SLIDE.TISSUE.MIN_SATURATION = 20
    # Tissue regions (and holes in them) smaller than this many mm^2 are dropped (filled).
    cfg.SLIDE.TISSUE.MIN_AREA_MM2 = 0.005


def set_slide_score_threshold(cfg, score_thresh=None) -> None:
    """
    Slide mode keeps only the nuclei scoring at least ``TEST.LABEL_MAP_SCORE_THRESH`` (or
    ``score_thresh``, which then becomes it). Make it the detector's threshold too
    (``MODEL.ROI_HEADS.SCORE_THRESH_TEST``), so that the mask head, mask pasting and RLE encoding
    run for those nuclei only, not for every detection above the challenge's 0.05. The nuclei kept
    are the same: box NMS among detections above the threshold is unchanged. Measured with the CPU
    recipe (threshold 0.3): a 1024 x 272 px edge tile had 459 detections above 0.05.
    """
    if score_thresh is not None:
        cfg.TEST.LABEL_MAP_SCORE_THRESH = float(score_thresh)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(cfg.TEST.LABEL_MAP_SCORE_THRESH)
