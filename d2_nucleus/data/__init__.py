# -*- coding: utf-8 -*-
"""Data: raw nucleus masks -> COCO, the prepared layout, and its Detectron2 registration."""
from .datasets import register_nucleus_datasets, resolve_data_root
from .mask2coco import masks_to_coco
from .prepare import prepare_dataset
from .raw import RawDataError
from .report import DataReport
from .split import split_image_ids
from .synthetic import generate_dataset, render_nuclei_image
from .testset import testset_to_coco

from .dataset_mapper import NucleusDatasetMapper, build_nucleus_augmentation
