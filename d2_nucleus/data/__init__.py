# -*- coding: utf-8 -*-
"""
Data: raw nucleus masks -> COCO, annotations of other formats -> the same prepared layout
(:mod:`.importing`), its Detectron2 registration, the image reader and the training mapper.

Data preparation (:mod:`.prepare`, :mod:`.mask2coco`, ...) needs neither torch nor Detectron2;
the parts that do are imported on first use (PEP 562).
"""
from ..utils.lazy import lazy_attributes
from .importing import import_annotations
from .mask2coco import masks_to_coco
from .prepare import prepare_dataset
from .raw import RawDataError
from .report import DataReport
from .split import split_image_ids
from .synthetic import generate_dataset, render_nuclei_image
from .testset import testset_to_coco

_LAZY = {
    ".datasets": ("register_nucleus_datasets", "resolve_data_root"),
    ".dataset_mapper": ("NucleusDatasetMapper", "build_nucleus_augmentation"),
    ".image_io": ("BadImageError", "read_image"),
}
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
