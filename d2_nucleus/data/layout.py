# -*- coding: utf-8 -*-
"""
The prepared dataset layout, spelled once (tools/prepare_data.py writes it; the dataset
registration, mask conversion and prediction read it)::

    <root>/nucleus_data/{all_train,train,val,test}/<file>.png
    <root>/annotations/instance_{all_train,train,val,test}.json   COCO; test: images only
    <root>/test_img_ids.json                                      copied from the raw dataset
    <root>/classes.txt                                            "nucleus"
    <root>/split.json                                             the train/val split and its seed
    <root>/source.json                                            imports only (below)

A layout made by tools/import_annotations.py (:mod:`.importing`) has no test images (an empty
``instance_test.json``, no ``test_img_ids.json``) and two additions:

* every annotation carries ``"class_name"``: the nucleus's class in its source (QuPath
  classification, COCO category, Aperio region text or layer name; null when it had none). The
  detector trains on the one class "nucleus" (category 1); a nucleus-type classifier can use these.
* ``source.json``: how the layout was made: ``{"format", "target_mpp", "mpp_tolerance",
  "classes": {class name ("" = none): nuclei}, "images": {image id: {"image", "annotations" (source files),
  "source_mpp", "mpp_from", "factor" (source px -> layout px, 1 = not resampled), "scale" ([sx, sy]
  exactly), "region" ([x, y, w, h] of the source read, level-0 px), "size" ([h, w] in the layout),
  "nuclei"}}}``.
"""
import os

__all__ = [
    "SPLITS",
    "DATASET_SPLITS",
    "CLASSES",
    "CATEGORIES",
    "TEST_IDS_FILE",
    "CLASSES_FILE",
    "SPLIT_FILE",
    "SOURCE_FILE",
    "CLASS_NAME_KEY",
    "ANNOTATIONS_DIR",
    "IMAGES_DIR",
    "annotation_file",
    "image_dir",
]

SPLITS = ("all_train", "train", "val", "test")
#: Detectron2 dataset name -> split folder
DATASET_SPLITS = {
    "nucleus_train": "train",
    "nucleus_val": "val",
    "nucleus_all_train": "all_train",
    "nucleus_test": "test",
}
CLASSES = ("nucleus",)
#: COCO categories of the annotation files (category id 1 = class index 0)
CATEGORIES = [{"id": i, "name": name, "supercategory": name} for i, name in enumerate(CLASSES, start=1)]
TEST_IDS_FILE = "test_img_ids.json"
CLASSES_FILE = "classes.txt"
SPLIT_FILE = "split.json"
SOURCE_FILE = "source.json"
#: per-annotation field of imported layouts: the nucleus's class name in its source
CLASS_NAME_KEY = "class_name"
ANNOTATIONS_DIR = "annotations"
IMAGES_DIR = "nucleus_data"


def annotation_file(root: str, split: str) -> str:
    """``<root>/annotations/instance_<split>.json``."""
    return os.path.join(root, ANNOTATIONS_DIR, f"instance_{split}.json")


def image_dir(root: str, split: str) -> str:
    """``<root>/nucleus_data/<split>``."""
    return os.path.join(root, IMAGES_DIR, split)
