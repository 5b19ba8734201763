# -*- coding: utf-8 -*-
"""
Per-nucleus mask PNGs -> COCO instance annotations, in parallel over images.

Default format "rle": compressed RLE built from the mask's tight crop, pixel-exact
(``pycocotools.mask.decode(segmentation)`` equals the source mask > 0). Format "polygon": the
seed's imantics contours, for parity with it; COCO polygons cannot hold holes, so hole contours are
dropped (the hole is filled, reported) and so are degenerate contours (< 3 points or zero area,
which pycocotools would misread, e.g. a 4-number polygon as a box); a mask left with none is skipped.
Every annotation has the tight box and the area of the source mask, iscrowd 0 and category 1.
"""
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from ..utils import rle as rle_util
from .layout import CATEGORIES
from .mask_io import BinaryMask, read_image_size, read_mask
from .raw import RawDataError, RawTrainImage
from .report import DataReport

__all__ = [
    "CATEGORIES",
    "FORMATS",
    "coco_dict",
    "encode_rle",
    "mask_to_polygons",
    "convert_image",
    "masks_to_coco",
    "default_workers",
]

FORMATS = ("rle", "polygon")


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def encode_rle(mask: BinaryMask) -> Dict:
    """
    Compressed COCO RLE ({"size": [h, w], "counts": str}) of a non-empty mask, identical to
    ``pycocotools.mask.encode`` of the full mask but computed from the crop
    (:func:`d2_nucleus.utils.rle.encode_box_masks`).
    """
    if mask.crop.shape[0] == 0:
        raise ValueError("cannot encode an empty mask")
    return rle_util.encode_box_masks(mask.crop[None], [(mask.x0, mask.y0)], (mask.height, mask.width))[0]


def mask_to_polygons(mask: BinaryMask) -> Tuple[List[List[int]], int, int]:
    """
    The seed's polygons: ``imantics.Mask(mask).polygons()`` (OpenCV contours, CHAIN_APPROX_SIMPLE),
    computed on the crop and shifted back to image coordinates.

    Returns:
        (polygons as flat [x1, y1, x2, y2, ...] lists, number of degenerate contours dropped,
        number of hole contours dropped)
    """
    import imantics  # only this format needs it

    polygons, degenerate, holes = [], 0, 0
    for points in imantics.Mask(mask.crop).polygons().points:
        if len(points) < 3:
            degenerate += 1
            continue
        # OpenCV traces outer borders with negative and holes with positive signed area.
        signed_area = cv2.contourArea(points.reshape(-1, 1, 2).astype(np.int32), oriented=True)
        if signed_area == 0:
            degenerate += 1
        elif signed_area > 0:
            holes += 1
        else:
            polygons.append((points + (mask.x0, mask.y0)).ravel().tolist())
    return polygons, degenerate, holes


def convert_image(image: RawTrainImage, image_id: int, fmt: str = "rle") -> Tuple[Dict, List[Dict], DataReport]:
    """
    Convert the masks of one image.

    Returns:
        (COCO image entry, its annotations without "id", report of this image)

    Raises:
        RawDataError: unreadable image or mask, or a mask whose size differs from the image's.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown annotation format {fmt!r}, expected one of {FORMATS}")
    report = DataReport(images=1)
    height, width = read_image_size(image.image_file)
    entry = {"id": image_id, "file_name": os.path.basename(image.image_file), "height": height, "width": width}
    owner = np.zeros((height, width), np.int32)  # 1 + index of the last mask covering each pixel
    annotations = []
    for k, path in enumerate(image.mask_files):
        mask = read_mask(path)
        if (mask.height, mask.width) != (height, width):
            raise RawDataError(
                path,
                f"mask is {mask.width}x{mask.height} but its image {image.image_file} is {width}x{height}",
            )
        if mask.is_empty:
            report.skip("empty mask", f"{path}: empty mask (no pixel > 0), skipped")
            continue
        if mask.num_values > 1:
            report.warn(
                "non-binary",
                f"{path}: non-binary mask ({mask.num_values} distinct non-zero values); foreground = value > 0",
            )
        x0, y0, w, h = mask.bbox
        region = owner[y0 : y0 + h, x0 : x0 + w]
        under = region[mask.crop]
        if under.any():
            for other, n in zip(*np.unique(under[under > 0], return_counts=True)):
                report.warn(
                    "overlap",
                    f"{path} overlaps {image.mask_files[other - 1]} by {n} px (both kept)",
                )
        region[mask.crop] = k + 1
        if fmt == "rle":
            segmentation = encode_rle(mask)
        else:
            segmentation, degenerate, holes = mask_to_polygons(mask)
            if holes:
                report.warn("hole", f"{path}: {holes} hole(s) filled (COCO polygons cannot hold holes)")
            if degenerate:
                report.warn("degenerate polygon", f"{path}: dropped {degenerate} degenerate polygon(s)")
            if not segmentation:
                report.skip("no valid polygon", f"{path}: no valid polygon left, skipped")
                continue
        annotations.append(
            {
                "image_id": image_id,
                "category_id": 1,
                "segmentation": segmentation,
                "area": mask.area,
                "bbox": [x0, y0, w, h],
                "iscrowd": 0,
            }
        )
    report.nuclei = len(annotations)
    return entry, annotations, report


def coco_dict(images: List[Dict], annotations: List[Dict], description: str = "") -> Dict:
    """A COCO instances dict with the nucleus category (annotations get ids 1..N if they have none)."""
    anns = []
    for i, a in enumerate(annotations, start=1):
        anns.append(a if "id" in a else {"id": i, **a})
    return {
        "info": {"description": description or "d2_nucleus nuclei", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": [dict(c) for c in CATEGORIES],
    }


def _mp_context():
    """
    "fork" on Linux: workers start at once, without re-importing torch and Detectron2 (seconds a
    process). They only decode PNGs and encode masks (zlib, NumPy, pycocotools, single-threaded
    OpenCV calls), so the threads the parent may hold cannot deadlock them; notably they must not
    reconfigure OpenCV's thread pool (cv2.setNumThreads), which hangs after a fork.
    """
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _die_with_parent(parent_pid: int) -> None:
    """
    Pool initializer: the worker gets SIGKILL when its parent dies (Linux prctl
    PR_SET_PDEATHSIG), so killing prepare_data (even with SIGKILL, which runs no cleanup) leaves
    no orphan workers holding their memory. If the parent is already gone, exit at once. Ctrl-C
    (SIGINT, sent to the whole process group) is ignored here: the parent stops the pool and
    reports it in one line, with no traceback from each worker.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C pending since the fork is discarded
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by worker_pool
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the getppid check below still runs
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """
    The process pool of :func:`masks_to_coco`: fork context, workers die with their parent.

    The workers are forked here with SIGINT blocked: a Ctrl-C arriving during a fork would
    otherwise be raised inside an at-fork callback (logging's lock release), where Python prints
    it and carries on, so the tool went on converting and exited 0 (seen in tests under load). The
    parent gets the pending Ctrl-C when the mask is restored; a worker discards it
    (:func:`_die_with_parent`).
    """
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=_mp_context(), initializer=_die_with_parent, initargs=(os.getpid(),)
    )
    if not hasattr(signal, "pthread_sigmask") or _mp_context().get_start_method() != "fork":
        return pool
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pool.submit(int).result()  # with "fork", the first task starts every worker
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return pool


def masks_to_coco(
    images: Sequence[RawTrainImage],
    image_ids: Optional[Sequence[int]] = None,
    fmt: str = "rle",
    workers: Optional[int] = None,
    progress: bool = True,
    description: str = "",
) -> Tuple[Dict, DataReport]:
    """
    Convert the masks of ``images`` to one COCO dict, in parallel over images.

    Args:
        image_ids: COCO id of each image (default 1..N in the given order).
        fmt: "rle" (exact, default) or "polygon" (the seed's imantics polygons).
        workers: processes (default: all cores); 1 converts in this process.
        progress: show a tqdm bar counting masks.

    Returns:
        (COCO dict with images in the given order and annotation ids 1..N in image, then mask
        order; the merged report)

    Raises:
        RawDataError: the first bad input met (remaining work is cancelled).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown annotation format {fmt!r}, expected one of {FORMATS}")
    images = list(images)
    ids = list(range(1, len(images) + 1)) if image_ids is None else [int(i) for i in image_ids]
    if len(ids) != len(images):
        raise ValueError(f"{len(images)} images but {len(ids)} image ids")
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    workers = max(1, min(workers, len(images)))
    total = sum(len(r.mask_files) for r in images)
    results = [None] * len(images)
    with tqdm(total=total, unit="mask", desc=f"masks->COCO ({fmt})", disable=not progress, leave=False) as bar:
        if workers == 1:
            for i, (img, image_id) in enumerate(zip(images, ids)):
                results[i] = convert_image(img, image_id, fmt)
                bar.update(len(img.mask_files))
        else:
            # Largest images first: the pool's tail is then short.
            order = sorted(range(len(images)), key=lambda i: -len(images[i].mask_files))
            with worker_pool(workers) as pool:
                futures = {pool.submit(convert_image, images[i], ids[i], fmt): i for i in order}
                try:
                    for fut in as_completed(futures):
                        i = futures[fut]
                        results[i] = fut.result()
                        bar.update(len(images[i].mask_files))
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    report = DataReport()
    entries, annotations = [], []
    for entry, anns, rep in results:
        entries.append(entry)
        annotations.extend(anns)
        report.merge(rep)
    return coco_dict(entries, annotations, description), report
