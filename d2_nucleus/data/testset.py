# -*- coding: utf-8 -*-
"""
Test images -> COCO image list (no annotations), with the ids of test_img_ids.json: those are the
ids a submission (answer.json) must carry.
"""
import os
from typing import Dict, Tuple

from .mask2coco import coco_dict
from .mask_io import read_image_size
from .raw import RawDataError, read_test_img_ids
from .report import DataReport

__all__ = ["testset_to_coco"]


def testset_to_coco(raw_root: str) -> Tuple[Dict, DataReport]:
    """
    Read ``<raw_root>/test_img_ids.json``, decode every listed image of ``<raw_root>/test`` and check
    its size against the list.

    Returns:
        (COCO dict whose images are the list's entries in its order, with no annotations; report)

    Raises:
        RawDataError: the list is missing or malformed, names an absent or unreadable image, or
            gives a size that differs from the image's.
    """
    entries, warnings = read_test_img_ids(raw_root)
    report = DataReport(test_images=len(entries))
    for msg in warnings:
        report.warn("unlisted test image", msg)
    for e in entries:
        path = os.path.join(raw_root, "test", e["file_name"])
        h, w = read_image_size(path)
        if (h, w) != (e["height"], e["width"]):
            raise RawDataError(
                path,
                f"image is {w}x{h} but test_img_ids.json says {e['width']}x{e['height']} (id {e['id']})",
            )
    return coco_dict(entries, [], "d2_nucleus test images (ids from test_img_ids.json)"), report
