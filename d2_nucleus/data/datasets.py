# -*- coding: utf-8 -*-
"""
Registration of the prepared nucleus dataset (tools/prepare_data.py output) with Detectron2:
nucleus_train, nucleus_val, nucleus_all_train and nucleus_test (images only, no ground truth).

Registration reads nothing; the COCO json is loaded (by Detectron2's ``load_coco_json``) when
``DatasetCatalog.get`` is called.
"""
import functools
import os
from typing import Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .layout import CLASSES, DATASET_SPLITS, annotation_file, image_dir

__all__ = [
    "DATASET_SPLITS",
    "DATA_ROOT_ENV",
    "DEFAULT_DATA_ROOT",
    "check_nucleus_datasets",
    "resolve_data_root",
    "register_nucleus_datasets",
]

DATA_ROOT_ENV = "D2_NUCLEUS_DATA"
DEFAULT_DATA_ROOT = "datasets/nucleus"


def resolve_data_root(root: Optional[str] = None, cfg=None) -> str:
    """
    The prepared data root: ``root`` if given, else ``cfg.NUCLEUS.DATA_ROOT`` if set, else
    ``$D2_NUCLEUS_DATA``, else "datasets/nucleus".
    """
    if root:
        return root
    cfg_root = cfg.NUCLEUS.DATA_ROOT if cfg is not None and "NUCLEUS" in cfg else ""
    if cfg_root:
        return cfg_root
    return os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT


def _check_files(json_file: str, image_root: str, dataset_name: str) -> None:
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"{json_file}: annotation file of dataset '{dataset_name}' not found; create the prepared "
            f"layout with `python tools/prepare_data.py --raw RAW_DATA --out {os.path.dirname(os.path.dirname(json_file))}` "
            f"or point --data-root / NUCLEUS.DATA_ROOT / ${DATA_ROOT_ENV} at it"
        )
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"{image_root}: image folder of dataset '{dataset_name}' not found")


def _load(json_file: str, image_root: str, dataset_name: str):
    _check_files(json_file, image_root, dataset_name)
    return load_coco_json(json_file, image_root, dataset_name)


def check_nucleus_datasets(dataset_names) -> None:
    """
    Raise FileNotFoundError (naming the file) if a registered nucleus dataset among
    ``dataset_names`` lacks its annotation file or image folder, so that a run fails before
    training rather than at its final evaluation. Other datasets are not checked.
    """
    for name in dataset_names:
        if name in DATASET_SPLITS and name in MetadataCatalog.list():
            meta = MetadataCatalog.get(name)
            _check_files(meta.json_file, meta.image_root, name)


def register_nucleus_datasets(root: Optional[str] = None, cfg=None) -> str:
    """
    Register the four nucleus datasets under the data root resolved by :func:`resolve_data_root`.
    Calling again (e.g. with another root) replaces the previous registration.

    Returns:
        the absolute data root used.
    """
    root = os.path.abspath(os.path.expanduser(resolve_data_root(root, cfg)))
    for name, split in DATASET_SPLITS.items():
        json_file = annotation_file(root, split)
        image_root = image_dir(root, split)
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, functools.partial(_load, json_file, image_root, name))
        MetadataCatalog.get(name).set(
            thing_classes=list(CLASSES), json_file=json_file, image_root=image_root, evaluator_type="coco"
        )
    return root
