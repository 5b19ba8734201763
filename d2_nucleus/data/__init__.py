# -*- coding: utf-8 -*-
"""
Data: raw nucleus masks -> COCO, the prepared layout, its Detectron2 registration, the image
reader and the training mapper.

Importing this package imports nothing: data preparation (:mod:`.prepare`, :mod:`.mask2coco`)
runs without torch and Detectron2; the names below are imported on first use (PEP 562).
"""
from ..utils.lazy import lazy_attributes

_LAZY = {
    "register_nucleus_datasets": ".datasets",
    "resolve_data_root": ".datasets",
    "masks_to_coco": ".mask2coco",
    "prepare_dataset": ".prepare",
    "RawDataError": ".raw",
    "DataReport": ".report",
    "split_image_ids": ".split",
    "generate_dataset": ".synthetic",
    "render_nuclei_image": ".synthetic",
    "testset_to_coco": ".testset",
    "BadImageError": ".image_io",
    "read_image": ".image_io",
    "NucleusDatasetMapper": ".dataset_mapper",
    "build_nucleus_augmentation": ".dataset_mapper",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
