# -*- coding: utf-8 -*-
"""
Annotations in other formats (:mod:`.importers`) -> the prepared layout (:mod:`.layout`) that
training and evaluation read, at the model's resolution: the one writer of every importer.

For each image: its resolution (:func:`source_mpp`), the factor to the target resolution
(:mod:`.resample`), its pixels (a slide: only the region around its nuclei), the nuclei rasterised
(outlines) or resampled (masks) on the target grid, overlaps resolved (:mod:`.rasterize`), one
compressed RLE each (:mod:`d2_nucleus.utils.rle`) with its source class name. Images are split
into train / val by seed (:mod:`.split`, ids = file stems). Everything is written into a
temporary folder that replaces ``out`` only at the end: a bad input (one line naming the file,
:class:`~.raw.RawDataError`) leaves nothing behind.
"""
import logging
import os
from collections import Counter
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from ..utils import rle as rle_util
from ..utils.file_io import atomic_output_dir, atomic_write_json, check_not_input, link_or_copy
from .importers import IMPORTERS
from .importers.source import ImageFile, SourceImage
from .layout import (
    ANNOTATIONS_DIR,
    CLASS_NAME_KEY,
    CLASSES,
    CLASSES_FILE,
    SOURCE_FILE,
    SPLIT_FILE,
    SPLITS,
    annotation_file,
    image_dir,
)
from .mask2coco import coco_dict
from .prepare import check_prepared_out, subset_coco
from .rasterize import instance_crops, paint_instances, rasterize, to_polygonal
from .raw import RawDataError
from .report import DataReport
from .resample import check_mpp, resample_crops, resample_image, scale_factor, scale_geometry, target_size
from .split import split_dict

__all__ = ["import_annotations", "source_mpp", "convert_source", "SLIDE_MARGIN"]

logger = logging.getLogger(__name__)

#: Level-0 pixels of a slide read around the box of its annotated nuclei.
SLIDE_MARGIN = 32
#: An annotation file and its image whose resolutions differ by more than this are reported.
MPP_DISAGREEMENT = 0.02


def source_mpp(src: SourceImage, image: ImageFile, mpp: Optional[float], report: DataReport,
               default_mpp: Optional[float] = None) -> Tuple[float, str]:
    """
    The source's microns per pixel and where it came from: ``mpp`` (``--mpp``), else the
    annotation file's (Aperio ``MicronsPerPixel``, a label TIFF's tags), else the image's metadata
    (slide properties, TIFF tags), else ``default_mpp`` (``--default-mpp``). A disagreement of the
    file's and the image's beyond :data:`MPP_DISAGREEMENT` is reported. Raises RawDataError when
    none is known.
    """
    if mpp is not None:
        return float(mpp), "--mpp"
    if src.mpp is not None:
        value = check_mpp(src.mpp, f"{src.annotation_file}: {src.mpp_from}")
        if image.mpp is not None and abs(image.mpp / value - 1) > MPP_DISAGREEMENT:
            report.warn("mpp", f"{src.annotation_file}: {src.mpp_from} says {value:g} um/px, its image "
                               f"{image.path} {image.mpp:g}; using {value:g} (pass --mpp to choose)")
        return value, src.mpp_from
    if image.mpp is not None:
        return image.mpp, "image metadata"
    if default_mpp is not None:
        return float(default_mpp), "--default-mpp"
    raise RawDataError(src.annotation_file, f"no resolution known: neither it nor its image {image.path} says its "
                                            "microns per pixel; pass --default-mpp (or --mpp for all)")


def _check_inside(src: SourceImage, nuclei, height: int, width: int, image: str, report: DataReport) -> None:
    """Outlines must meet the image [0, W] x [0, H]; those crossing its border are clipped (counted)."""
    clipped = 0
    for n in nuclei:
        if n.geometry is None:
            continue
        x0, y0, x1, y1 = n.geometry.bounds
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            raise RawDataError(src.annotation_file, f"{n.where} lies outside its image {image} ({width}x{height} px) "
                                                    f"at x {x0:.1f}..{x1:.1f}, y {y0:.1f}..{y1:.1f}: wrong image, or "
                                                    "coordinates of another level or resolution")
        clipped += x0 < 0 or y0 < 0 or x1 > width or y1 > height
    if clipped:
        report.warn("clipped", f"{src.annotation_file}: {clipped} outline(s) cross the image border, clipped to it")


def _region(nuclei, image: ImageFile) -> Tuple[int, int, int, int]:
    """(x, y, w, h) read from the image: all of it, or for a slide the box of its outlines plus a margin."""
    height, width = image.size
    if not image.is_slide or not nuclei or any(n.geometry is None for n in nuclei):
        return 0, 0, width, height
    b = np.array([n.geometry.bounds for n in nuclei])
    x0 = max(int(np.floor(b[:, 0].min())) - SLIDE_MARGIN, 0)
    y0 = max(int(np.floor(b[:, 1].min())) - SLIDE_MARGIN, 0)
    x1 = min(int(np.ceil(b[:, 2].max())) + SLIDE_MARGIN, width)
    y1 = min(int(np.ceil(b[:, 3].max())) + SLIDE_MARGIN, height)
    return x0, y0, x1 - x0, y1 - y0


def _skip_many(report: DataReport, reason: str, n: int, message: str) -> None:
    if n:
        report.skipped[reason] += n
        report.warn(reason, message)


def convert_source(src: SourceImage, image_id: int, target_mpp: float, mpp: Optional[float] = None,
                   tolerance: float = 0.0, classes: Optional[Sequence[str]] = None,
                   default_mpp: Optional[float] = None):
    """
    One image -> (RGB pixels at the target resolution, COCO image entry, its annotations, its
    source.json record, its report). Raises RawDataError for bad input.
    """
    report = DataReport(images=1)
    for reason, message in src.skipped:
        report.skip(reason, message)
    image = ImageFile(src.image_file)
    try:
        if image.note:
            report.warn("mpp", image.note)
        nuclei, grid = src.load_nuclei()
        mpp_value, mpp_from = source_mpp(src, image, mpp, report, default_mpp)
        height, width = image.size
        if grid is not None and tuple(grid) != (height, width):
            raise RawDataError(src.annotation_file, f"annotations are {grid[1]}x{grid[0]} px but the image "
                                                    f"{src.image_file} is {width}x{height}")
        if classes is not None:
            unwanted = Counter(n.class_name for n in nuclei if n.class_name not in classes)
            nuclei = [n for n in nuclei if n.class_name in classes]
            _skip_many(report, "class not chosen (--class)", sum(unwanted.values()),
                       f"{src.annotation_file}: left out {dict(unwanted)} (not chosen with --class)")
        _check_inside(src, nuclei, height, width, src.image_file, report)
        rx, ry, rw, rh = _region(nuclei, image)
        factor = scale_factor(mpp_value, target_mpp, tolerance)
        h, w = target_size(rh, rw, factor)
        sx, sy = w / rw, h / rh
        pixels = resample_image(image.read(rx, ry, rw, rh), h, w)
    finally:
        image.close()

    crops, repaired, degenerate = [None] * len(nuclei), 0, 0
    for i, n in enumerate(nuclei):
        if n.geometry is not None:
            geom, fixed = to_polygonal(n.geometry)
            repaired += fixed
            if geom is None:
                degenerate += 1
                continue
            crops[i] = rasterize(scale_geometry(geom, sx, sy, -rx, -ry), h, w)
    masks = [i for i, n in enumerate(nuclei) if n.geometry is None]
    if masks:  # masks are on the whole image's grid (no region is read for them); disjoint first
        source = [nuclei[i].crop for i in masks]
        if (h, w) != (height, width):
            painted = paint_instances(source, height, width)
            source = instance_crops(painted, [(x0, y0, c.shape[1], c.shape[0]) for c, x0, y0 in source])
        resampled = resample_crops(source, (height, width), (h, w))
        for i, c in zip(masks, resampled):
            crops[i] = c
    if repaired:
        report.warn("repaired", f"{src.annotation_file}: {repaired} invalid outline(s) (self-intersecting) "
                                "repaired with make_valid")
    _skip_many(report, "degenerate outline", degenerate, f"{src.annotation_file}: {degenerate} outline(s) without area, skipped")
    empty = sum(1 for n, c in zip(nuclei, crops) if c is None) - degenerate
    _skip_many(report, "no pixel", empty, f"{src.annotation_file}: {empty} nuclei cover no pixel centre at "
                                          f"{target_mpp:g} um/px (or lie outside the image), skipped")

    labels = paint_instances(crops, h, w)
    final = instance_crops(labels, [None if c is None else (c[1], c[2], c[0].shape[1], c[0].shape[0]) for c in crops])
    covered = sum(1 for c, f in zip(crops, final) if c is not None and f is None)
    trimmed = sum(1 for c, f in zip(crops, final) if c is not None and f is not None and f[0].sum() < c[0].sum())
    _skip_many(report, "covered", covered, f"{src.annotation_file}: {covered} nuclei lie wholly under smaller ones, skipped")
    if trimmed:
        report.warn("overlap", f"{src.annotation_file}: {trimmed} nuclei overlap smaller ones, which keep the shared pixels")

    entry = {"id": image_id, "file_name": src.image_id + ".png", "height": h, "width": w}
    annotations = []
    for n, f in zip(nuclei, final):
        if f is None:
            continue
        mask, x0, y0 = f
        annotations.append({
            "image_id": image_id,
            "category_id": 1,
            "segmentation": rle_util.encode_box_masks(mask[None], [(x0, y0)], (h, w))[0],
            "area": int(mask.sum()),
            "bbox": [x0, y0, int(mask.shape[1]), int(mask.shape[0])],
            "iscrowd": 0,
            CLASS_NAME_KEY: n.class_name,
        })
    report.nuclei = len(annotations)
    record = {
        "image": os.path.abspath(src.image_file),
        "annotations": os.path.abspath(src.annotation_file),
        "source_mpp": mpp_value,
        "mpp_from": mpp_from,
        "factor": factor,
        "scale": [sx, sy],
        "region": [rx, ry, rw, rh],
        "size": [h, w],
        "nuclei": len(annotations),
    }
    return pixels, entry, annotations, record, report


def _write_image(pixels: np.ndarray, src: SourceImage, record: Dict, path: str) -> None:
    import cv2

    plain_png = src.image_file.lower().endswith(".png") and record["factor"] == 1.0
    full = record["region"][:2] == [0, 0] and record["size"] == list(pixels.shape[:2])
    if plain_png and full:
        link_or_copy(src.image_file, path)  # the same file: the training reader gives the same pixels
        return
    ok, data = cv2.imencode(".png", np.ascontiguousarray(pixels[:, :, ::-1]))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with open(path, "wb") as f:
        f.write(data.tobytes())


def import_annotations(
    fmt: str,
    inputs: Sequence[str],
    out: str,
    target_mpp: float,
    images: Optional[str] = None,
    mpp: Optional[float] = None,
    default_mpp: Optional[float] = None,
    ratio: float = 0.2,
    seed: int = 0,
    classes: Optional[Sequence[str]] = None,
    tolerance: float = 0.0,
    overwrite: bool = False,
    progress: bool = True,
) -> DataReport:
    """
    Import annotations of format ``fmt`` (:data:`.importers.FORMATS`) into a prepared layout at
    ``out`` (module docstring), all or nothing.

    Args:
        inputs: annotation files or folders (per format: :mod:`.importers`).
        target_mpp: the model's resolution (um/px) the layout is made at.
        images: folder to find the images in (default: beside each annotation file).
        mpp: the sources' resolution, overriding what the files say.
        default_mpp: the resolution of sources whose files (annotation, image) state none.
        ratio, seed: the val share and split seed (:func:`.split.split_image_ids`).
        classes: keep only nuclei of these source class names (None: all).
        tolerance: sources within this relative difference of ``target_mpp`` are not resampled
            (tools/import_annotations.py: the config's ``SLIDE.MPP_TOLERANCE``; 0: every source is).
        overwrite: replace an existing prepared layout at ``out``.

    Raises:
        RawDataError: bad input (one line naming the file). ValueError: bad arguments.
        FileExistsError, PermissionError, NotADirectoryError: ``out`` cannot be written.
    """
    if fmt not in IMPORTERS:
        raise ValueError(f"unknown format {fmt!r}, expected one of {', '.join(IMPORTERS)}")
    if not inputs:
        raise ValueError("no input files or folders given")
    target_mpp = check_mpp(target_mpp, "the target resolution")
    if mpp is not None:
        mpp = check_mpp(mpp, "--mpp")
    if default_mpp is not None:
        default_mpp = check_mpp(default_mpp, "--default-mpp")
    if not 0 <= tolerance < 1:
        raise ValueError(f"mpp tolerance must be in [0, 1), got {tolerance}")
    # the layout replaces out as a whole: it may neither be nor hold nor lie inside an input
    check_not_input([out], list(inputs) + [images], outside=True)
    check_prepared_out(out, overwrite)
    sources = IMPORTERS[fmt](list(inputs), images)
    if not sources:
        raise ValueError("the inputs hold no images")
    seen: Dict[str, SourceImage] = {}
    for s in sources:
        if s.image_id in seen:
            raise RawDataError(s.annotation_file, f"image id {s.image_id!r} (its file stem) also comes from "
                                                  f"{seen[s.image_id].annotation_file}; rename one")
        seen[s.image_id] = s
    sources = sorted(sources, key=lambda s: s.image_id)
    try:
        split = split_dict([s.image_id for s in sources], ratio, seed)
    except ValueError as e:
        raise ValueError(f"{e}; pass --ratio 0 to train on all of them (then evaluate on another set)") from None
    logger.info("%d images (%d train, %d val; ratio %s, seed %s) from %s, target %g um/px",
                len(sources), len(split["train"]), len(split["val"]), ratio, seed, fmt, target_mpp)

    report = DataReport()
    entries, annotations, records, class_counts = [], [], {}, Counter()
    with atomic_output_dir(out, overwrite) as tmp:
        os.makedirs(os.path.join(tmp, ANNOTATIONS_DIR))
        for name in SPLITS:
            os.makedirs(image_dir(tmp, name))
        for k, src in enumerate(tqdm(sources, unit="image", desc=f"import {fmt}", disable=not progress), start=1):
            pixels, entry, anns, record, rep = convert_source(src, k, target_mpp, mpp, tolerance, classes, default_mpp)
            path = os.path.join(image_dir(tmp, "all_train"), entry["file_name"])
            _write_image(pixels, src, record, path)
            subset = "val" if src.image_id in split["val"] else "train"
            link_or_copy(path, os.path.join(image_dir(tmp, subset), entry["file_name"]))
            entries.append(entry)
            annotations.extend(anns)
            records[src.image_id] = record
            class_counts.update(a[CLASS_NAME_KEY] for a in anns)
            report.merge(rep)
        desc = f"d2_nucleus nuclei imported from {fmt} at {target_mpp:g} um/px"
        all_coco = coco_dict(entries, annotations, desc + ", all_train")
        ids = {e["file_name"][:-4]: e["id"] for e in entries}
        cocos = {
            "all_train": all_coco,
            "train": subset_coco(all_coco, [ids[i] for i in split["train"]], desc + ", train"),
            "val": subset_coco(all_coco, [ids[i] for i in split["val"]], desc + ", val"),
            "test": coco_dict([], [], desc + ", test (none)"),
        }
        for name in SPLITS:
            atomic_write_json(annotation_file(tmp, name), cocos[name])
        with open(os.path.join(tmp, CLASSES_FILE), "w") as f:
            f.write("\n".join(CLASSES) + "\n")
        atomic_write_json(os.path.join(tmp, SPLIT_FILE), split)
        atomic_write_json(os.path.join(tmp, SOURCE_FILE), {
            "format": fmt,
            "target_mpp": target_mpp,
            "mpp_tolerance": tolerance,
            "classes": {("" if k is None else k): v for k, v in sorted(class_counts.items(), key=lambda kv: str(kv[0]))},
            "images": records,
        })
    return report
