# -*- coding: utf-8 -*-
"""The training/test mapper: Detectron2's DatasetMapper with H&E augmentation."""
import copy
from collections import OrderedDict

import numpy as np
import torch
from scipy import ndimage
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances
from fvcore.transforms.transform import CropTransform

from ..utils import rle as rle_util
from ..utils.label_map import annotations_to_label_map
from .image_io import read_image
from .transforms import RandomRot90, RandomStainJitter, RelativeResize

__all__ = ["NucleusDatasetMapper", "build_nucleus_augmentation", "dense_label_map"]


def build_nucleus_augmentation(cfg, is_train, resize_factor: float = 1.0):
    """
    Training: random crop -> scale jitter -> horizontal/vertical flips -> 90-degree rotations ->
    stain, brightness and contrast jitter. Test: ``INPUT.TEST_SCALE`` x ``resize_factor`` (an input
    at another resolution than the model's: :func:`d2_nucleus.config.input_resize_factor`) x the
    native size when that is not 1, else Detectron2's resize (MIN_SIZE_TEST 0 = native).
    """
    scale = float(cfg.INPUT.TEST_SCALE) * float(resize_factor)
    if not is_train and scale != 1.0:
        return [RelativeResize(scale, int(cfg.INPUT.MAX_SIZE_TEST))]
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
    DatasetMapper with :func:`build_nucleus_augmentation` and a fast path for dense,
    non-overlapping RLE annotations (nuclei): each image's annotations are decoded once into an
    instance label map (cached per worker), the label map goes through the same transforms as the
    image (crop, nearest-neighbour resize, flips, rotations), and the instance masks are cut from
    the result. That is one image-sized transform per sample instead of one per nucleus (hundreds);
    the masks are identical to the per-annotation path. Overlapping or polygon annotations take
    Detectron2's per-annotation path.
    """

    @configurable
    def __init__(self, is_train: bool = True, *, label_map_cache_size: int = 64, **kwargs):
        super().__init__(is_train, **kwargs)
        self._label_maps = OrderedDict()
        self._cache_size = label_map_cache_size

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["augmentations"] = build_nucleus_augmentation(cfg, is_train)
        # Boxes follow the (cropped, rotated) masks exactly.
        ret["recompute_boxes"] = bool(cfg.MODEL.MASK_ON and is_train)
        return ret

    def __call__(self, dataset_dict):
        dataset_dict = copy.copy(dataset_dict)  # annotations are read, never modified in place
        image = read_image(dataset_dict["file_name"], format=self.image_format)  # the one image reader
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        annos = dataset_dict.pop("annotations", None)
        if not self.is_train or annos is None:
            return dataset_dict
        annos = [a for a in annos if a.get("iscrowd", 0) == 0]
        instances = None
        if self.instance_mask_format == "bitmask" and self.use_instance_mask:
            labels = self._label_map(dataset_dict, annos)
            if labels is not None:
                instances = _instances_from_label_map(labels, annos, transforms, image_shape)
        if instances is None:
            annos = [
                utils.transform_instance_annotations(copy.deepcopy(a), transforms, image_shape)
                for a in _drop_outside_crop(annos, transforms)
            ]
            instances = utils.annotations_to_instances(annos, image_shape, mask_format=self.instance_mask_format)
        if self.recompute_boxes and instances.has("gt_masks"):
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict

    def _label_map(self, dataset_dict, annos):
        """uint16 label map (0 = background, k = annos[k - 1]), or None if not applicable."""
        key = dataset_dict["file_name"]
        if key in self._label_maps:
            self._label_maps.move_to_end(key)
            return self._label_maps[key]
        labels = dense_label_map(annos, dataset_dict["height"], dataset_dict["width"])
        self._label_maps[key] = labels
        if len(self._label_maps) > self._cache_size:
            self._label_maps.popitem(last=False)
        return labels


def dense_label_map(annos, height, width):
    """
    uint16 label map of non-overlapping RLE annotations (k = annos[k - 1]), or None where a
    label map cannot stand for them: polygons, overlapping masks, 2**16 or more instances.
    """
    if not annos or len(annos) >= 2 ** 16:
        return None
    segs = [a.get("segmentation") for a in annos]
    if not all(isinstance(seg, dict) for seg in segs):
        return None  # polygons: Detectron2's path
    labels = annotations_to_label_map(annos, height, width)
    areas = rle_util.area([rle_util.to_compressed_rle(seg, height, width) for seg in segs])
    if int(areas.sum()) != int(np.count_nonzero(labels)):
        return None  # overlapping instances: a label map cannot hold them
    return labels.astype(np.uint16)


def _instances_from_label_map(labels, annos, transforms, image_shape):
    # Two uint8 planes (low, high byte) take Detectron2's uint8 segmentation path (PIL nearest
    # resize), exactly as a single uint8 instance mask would.
    planes = labels.astype("<u2").view(np.uint8).reshape(labels.shape + (2,))
    planes = transforms.apply_segmentation(planes)
    assert tuple(planes.shape[:2]) == tuple(image_shape), (planes.shape, image_shape)
    lab = planes[..., 0].astype(np.int32) | (planes[..., 1].astype(np.int32) << 8)
    slices = ndimage.find_objects(lab)
    ids = [k for k, sl in enumerate(slices, start=1) if sl is not None]
    masks = np.zeros((len(ids),) + tuple(image_shape), dtype=bool)
    for i, k in enumerate(ids):
        sl = slices[k - 1]
        masks[i][sl] = lab[sl] == k
    instances = Instances(image_shape)
    instances.gt_classes = torch.tensor([annos[k - 1]["category_id"] for k in ids], dtype=torch.int64)
    bitmasks = BitMasks(torch.from_numpy(masks))
    instances.gt_masks = bitmasks
    instances.gt_boxes = bitmasks.get_bounding_boxes()
    return instances


def _drop_outside_crop(annos, transforms):
    """Drop the annotations whose box misses the crop window (if there is a crop)."""
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
