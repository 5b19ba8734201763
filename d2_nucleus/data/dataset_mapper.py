# -*- coding: utf-8 -*-
"""The training/test mapper: Detectron2's DatasetMapper with H&E augmentation."""
import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .transforms import RandomRot90, RandomStainJitter

__all__ = ["NucleusDatasetMapper", "build_nucleus_augmentation"]

logger = logging.getLogger(__name__)


def build_nucleus_augmentation(cfg, is_train):
    """
    Training: random crop -> scale jitter -> horizontal/vertical flips -> 90-degree rotations ->
    stain, brightness and contrast jitter. Test: Detectron2's resize (MIN_SIZE_TEST 0 = native).
    """
    augs = utils.build_augmentation(cfg, is_train)  # resize (+ horizontal flip when training)
    if not is_train:
        return augs
    if cfg.INPUT.CROP.ENABLED:
        augs.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    if cfg.INPUT.VFLIP:
        augs.append(T.RandomFlip(horizontal=False, vertical=True))
    if cfg.INPUT.ROT90:
        augs.append(RandomRot90())
    sj = cfg.INPUT.STAIN_JITTER
    if sj.ENABLED:
        augs.append(RandomStainJitter(sj.SIGMA_SCALE, sj.SIGMA_SHIFT, cfg.INPUT.FORMAT))
        if sj.BRIGHTNESS > 0:
            augs.append(T.RandomBrightness(1 - sj.BRIGHTNESS, 1 + sj.BRIGHTNESS))
        if sj.CONTRAST > 0:
            augs.append(T.RandomContrast(1 - sj.CONTRAST, 1 + sj.CONTRAST))
    return augs


class NucleusDatasetMapper(DatasetMapper):
    """
    DatasetMapper with :func:`build_nucleus_augmentation`. Only the nuclei whose box meets the
    random crop are decoded and transformed (a crop holds a fraction of a tile's hundreds).
    """

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["augmentations"] = build_nucleus_augmentation(cfg, is_train)
        # Boxes follow the (cropped, rotated) masks exactly.
        ret["recompute_boxes"] = bool(cfg.MODEL.MASK_ON and is_train)
        return ret

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        annos = [a for a in dataset_dict.pop("annotations", []) if a.get("iscrowd", 0) == 0]
        annos = _drop_outside_crop(annos, transforms)
        annos = [utils.transform_instance_annotations(a, transforms, image_shape) for a in annos]
        instances = utils.annotations_to_instances(annos, image_shape, mask_format=self.instance_mask_format)
        if self.recompute_boxes and instances.has("gt_masks"):
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict


def _drop_outside_crop(annos, transforms):
    """Annotations whose box misses the crop window (if the first transform is a crop)."""
    from fvcore.transforms.transform import CropTransform

    crop = next((t for t in transforms.transforms if isinstance(t, CropTransform)), None)
    if crop is None or not annos:
        return annos
    x0, y0, x1, y1 = crop.x0, crop.y0, crop.x0 + crop.w, crop.y0 + crop.h
    keep = []
    for a in annos:
        bx, by, bw, bh = utils.BoxMode.convert(a["bbox"], a["bbox_mode"], utils.BoxMode.XYWH_ABS)
        if bx < x1 and by < y1 and bx + bw > x0 and by + bh > y0:
            keep.append(a)
    return keep
