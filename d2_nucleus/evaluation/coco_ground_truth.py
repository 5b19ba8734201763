# -*- coding: utf-8 -*-
"""COCO ground truth built in memory from Detectron2 dataset dicts (never a cached json)."""
from typing import Dict, List

import numpy as np

from detectron2.structures import BoxMode

from ..utils import rle as rle_util
from ..utils.rle import to_compressed_rle

__all__ = ["build_coco_ground_truth", "dataset_image_ids"]


def dataset_image_ids(dataset_dicts: List[Dict]) -> list:
    """The "image_id" of each dataset dict (its index when absent, as in Detectron2)."""
    return [d.get("image_id", i) for i, d in enumerate(dataset_dicts)]


def build_coco_ground_truth(dataset_dicts: List[Dict], metadata, dataset_name: str = "dataset"):
    """
    A COCO ground-truth dict from Detectron2 dataset dicts, in memory.

    Unlike ``detectron2.data.datasets.convert_to_coco_dict`` it accepts any hashable image ids
    (ints are kept; other ids become 1..N), uncompressed RLE and polygons (all stored as
    compressed RLE with their pixel area, so boxes and masks are measured as COCOeval sees them)
    and does not modify the dataset dicts.

    Returns:
        (coco_dict, image_id -> COCO image id, COCO image id -> image_id,
        contiguous category id -> COCO category id)
    """
    ids = dataset_image_ids(dataset_dicts)
    if len(set(ids)) != len(ids):
        raise ValueError(f"dataset '{dataset_name}' has duplicate image ids")
    if all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
        to_coco = {i: int(i) for i in ids}
    else:
        to_coco = {i: k + 1 for k, i in enumerate(ids)}

    if hasattr(metadata, "thing_dataset_id_to_contiguous_id"):
        category_to_coco = {v: int(k) for k, v in metadata.thing_dataset_id_to_contiguous_id.items()}
    else:
        category_to_coco = None
    class_names = metadata.get("thing_classes", None)
    if class_names is None:
        used = {a["category_id"] for d in dataset_dicts for a in d.get("annotations", [])}
        class_names = [str(i) for i in range(max(used) + 1)] if used else ["object"]
    if category_to_coco is None:
        category_to_coco = {i: i for i in range(len(class_names))}
    categories = [{"id": category_to_coco[i], "name": n} for i, n in enumerate(class_names)]

    images, annotations = [], []
    for d, image_id in zip(dataset_dicts, ids):
        h, w = int(d["height"]), int(d["width"])
        coco_id = to_coco[image_id]
        images.append({"id": coco_id, "height": h, "width": w, "file_name": str(d.get("file_name", ""))})
        for a in d.get("annotations", []):
            ann = {
                "id": len(annotations) + 1,
                "image_id": coco_id,
                "iscrowd": int(a.get("iscrowd", 0)),
            }
            cat = a["category_id"]
            if cat not in category_to_coco:
                raise ValueError(
                    f"dataset '{dataset_name}', {d.get('file_name', image_id)}: "
                    f"category_id {cat} is not one of the {len(class_names)} classes"
                )
            ann["category_id"] = category_to_coco[cat]
            if "segmentation" in a:
                rle = dict(to_compressed_rle(a["segmentation"], h, w))
                if [int(s) for s in rle["size"]] != [h, w]:
                    raise ValueError(
                        f"dataset '{dataset_name}', {d.get('file_name', image_id)}: mask size "
                        f"{list(rle['size'])} differs from the image's {[h, w]}"
                    )
                if isinstance(rle["counts"], bytes):
                    rle["counts"] = rle["counts"].decode("ascii")
                ann["segmentation"] = rle
                ann["area"] = float(rle_util.area(rle))
            if "bbox" in a:
                bbox = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYWH_ABS)
                ann["bbox"] = [float(x) for x in bbox]
            elif "segmentation" in ann:
                ann["bbox"] = [float(x) for x in rle_util.to_bbox(ann["segmentation"])]
            else:
                raise ValueError(f"dataset '{dataset_name}': an annotation has no bbox or mask")
            if "area" not in ann:
                ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
            annotations.append(ann)
    coco_dict = {"images": images, "annotations": annotations, "categories": categories}
    return coco_dict, to_coco, {v: k for k, v in to_coco.items()}, category_to_coco
