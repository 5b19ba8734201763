# -*- coding: utf-8 -*-
"""
The prepared dataset layout, spelled once (tools/prepare_data.py writes it; the dataset
registration, mask conversion and prediction read it)::

    <root>/nucleus_data/{all_train,train,val,test}/<file>.png
    <root>/annotations/instance_{all_train,train,val,test}.json   COCO; test: images only
    <root>/test_img_ids.json                                      copied from the raw dataset
    <root>/classes.txt                                            "nucleus"
    <root>/split.json                                             the train/val split and its seed
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
ANNOTATIONS_DIR = "annotations"
IMAGES_DIR = "nucleus_data"


def annotation_file(root: str, split: str) -> str:
    """``<root>/annotations/instance_<split>.json``."""
    return os.path.join(root, ANNOTATIONS_DIR, f"instance_{split}.json")


def image_dir(root: str, split: str) -> str:
    """``<root>/nucleus_data/<split>``."""
    return os.path.join(root, IMAGES_DIR, split)
