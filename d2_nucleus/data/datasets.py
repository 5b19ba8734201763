# -*- coding: utf-8 -*-
"""
Registration of the prepared nucleus dataset (tools/prepare_data.py output) with Detectron2:
nucleus_train, nucleus_val, nucleus_all_train and nucleus_test (images only, no ground truth).

More prepared sets (tools/import_annotations.py output) train and evaluate beside it:
``NUCLEUS.EXTRA_DATA_ROOTS ("kidney=/data/kidney_prepared",)`` registers kidney_train, kidney_val,
kidney_all_train and kidney_test from that root, each set keeping its own split; then e.g.
``DATASETS.TRAIN ("nucleus_train", "kidney_train")`` and ``DATASETS.TEST ("nucleus_val", "kidney_val")``.

Registration reads nothing; the COCO json is loaded (by Detectron2's ``load_coco_json``) when
``DatasetCatalog.get`` is called.
"""
import functools
import os
import re
from typing import List, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .coco_check import check_coco_file
from .layout import CLASSES, DATASET_SPLITS, SPLITS, annotation_file, image_dir

__all__ = [
    "DATASET_SPLITS",
    "DATA_ROOT_ENV",
    "DEFAULT_DATA_ROOT",
    "check_nucleus_datasets",
    "prepare_nucleus_datasets",
    "extra_data_roots",
    "resolve_data_root",
    "register_nucleus_datasets",
]

DATA_ROOT_ENV = "D2_NUCLEUS_DATA"
DEFAULT_DATA_ROOT = "datasets/nucleus"
_MAIN_PREFIX = "nucleus"
_PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
_registered = set()  # names this module registered: the datasets check_nucleus_datasets checks


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
            f"(or tools/import_annotations.py) or point --data-root / NUCLEUS.DATA_ROOT / ${DATA_ROOT_ENV} "
            "(NUCLEUS.EXTRA_DATA_ROOTS) at it"
        )
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"{image_root}: image folder of dataset '{dataset_name}' not found")
    # JSON, the keys, every image present and inside image_root (once per process while unchanged)
    check_coco_file(json_file, image_root)


def _load(json_file: str, image_root: str, dataset_name: str):
    _check_files(json_file, image_root, dataset_name)
    return load_coco_json(json_file, image_root, dataset_name)


def check_nucleus_datasets(dataset_names) -> None:
    """
    Raise FileNotFoundError (naming the file) if a registered nucleus dataset among
    ``dataset_names`` (the main root's or an extra root's) lacks its annotation file or image
    folder, or :class:`~.raw.RawDataError` (one line naming the file) if the annotation file is
    not a COCO file of that folder (:func:`.coco_check.check_coco_file`: JSON, keys, images present
    and inside the folder), so that a run fails before it writes anything rather than with a
    traceback at its first or final load. Other datasets are not checked.
    """
    for name in dataset_names:
        if name in _registered and name in MetadataCatalog.list():
            meta = MetadataCatalog.get(name)
            _check_files(meta.json_file, meta.image_root, name)


def extra_data_roots(cfg) -> List[Tuple[str, str]]:
    """
    ``cfg.NUCLEUS.EXTRA_DATA_ROOTS`` ("NAME=PATH" entries) as (name prefix, path) pairs.

    Raises:
        ConfigError: an entry that is not NAME=PATH, a NAME that is not a letter followed by
            letters, digits or "-", the main root's "nucleus", or a NAME given twice.
    """
    from ..config import ConfigError

    entries = list(cfg.NUCLEUS.EXTRA_DATA_ROOTS) if cfg is not None and "NUCLEUS" in cfg and \
        "EXTRA_DATA_ROOTS" in cfg.NUCLEUS else []
    out, seen = [], {_MAIN_PREFIX}
    for entry in entries:
        prefix, sep, path = str(entry).partition("=")
        prefix, path = prefix.strip(), path.strip()
        if not sep or not path or not _PREFIX_RE.match(prefix) or prefix in seen:
            why = "is given twice or is the main root's 'nucleus'" if prefix in seen else "must be NAME=PATH"
            raise ConfigError(f"NUCLEUS.EXTRA_DATA_ROOTS entry {entry!r} {why} (NAME: a letter, then letters, "
                              "digits or '-'; registers NAME_train, NAME_val, NAME_all_train, NAME_test)")
        seen.add(prefix)
        out.append((prefix, path))
    return out


def _register(root: str, prefix: str) -> None:
    for split in SPLITS:
        name = f"{prefix}_{split}"
        json_file = annotation_file(root, split)
        image_root = image_dir(root, split)
        if name in _registered and name in MetadataCatalog.list() and \
                MetadataCatalog.get(name).get("json_file") == json_file:
            continue  # already registered here (a run's entry point and its trainer both prepare)
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, functools.partial(_load, json_file, image_root, name))
        MetadataCatalog.get(name).set(
            thing_classes=list(CLASSES), json_file=json_file, image_root=image_root, evaluator_type="coco"
        )
        _registered.add(name)


def register_nucleus_datasets(root: Optional[str] = None, cfg=None) -> str:
    """
    Register the four nucleus datasets under the data root resolved by :func:`resolve_data_root`,
    and the four of every ``cfg.NUCLEUS.EXTRA_DATA_ROOTS`` entry (module docstring). Calling
    again with the same roots changes nothing; with another root it replaces the registration.

    Returns:
        the absolute data root used.
    """
    root = os.path.abspath(os.path.expanduser(resolve_data_root(root, cfg)))
    _register(root, _MAIN_PREFIX)
    for prefix, path in extra_data_roots(cfg):
        _register(os.path.abspath(os.path.expanduser(path)), prefix)
    return root


def prepare_nucleus_datasets(cfg, dataset_names: Sequence[str]) -> str:
    """
    What a run needs before it writes anything: the nucleus datasets of ``cfg`` registered
    (:func:`register_nucleus_datasets`, once) and the annotation files and image folders of
    ``dataset_names`` checked (:func:`check_nucleus_datasets`). Returns the data root.
    """
    root = register_nucleus_datasets(cfg=cfg)
    check_nucleus_datasets(list(dataset_names))
    return root
