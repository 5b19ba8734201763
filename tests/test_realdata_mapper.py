"""
The training mapper on the real images ($D2_NUCLEUS_RAW_DATA; skipped when unset): the label-map
fast path gives exactly the instances of Detectron2's per-annotation path (same masks, boxes,
classes) after the same crop / scale / flip / rotation / stain jitter, on the image with the most
nuclei (1,862) and on the one with the fewest (294). A synthetic test once hid that every real
image (more than 255 nuclei) crashed the fast path.
"""
import random

import numpy as np
import pytest
from detectron2.data import DatasetCatalog

from d2_nucleus.config import get_nucleus_cfg
from d2_nucleus.data import register_nucleus_datasets
from d2_nucleus.data.dataset_mapper import NucleusDatasetMapper, dense_label_map

from test_dataset_mapper import _same_instances

pytestmark = pytest.mark.realdata

RECIPE = "configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml"


@pytest.fixture(scope="module")
def records(real_prepared):
    out, _ = real_prepared
    register_nucleus_datasets(out)
    dicts = DatasetCatalog.get("nucleus_all_train")
    dicts = sorted(dicts, key=lambda d: len(d["annotations"]))
    return dicts[0], dicts[-1]


def test_real_images_cover_both_ends(records):
    fewest, most = records
    assert len(fewest["annotations"]) == 294 and len(most["annotations"]) == 1862


@pytest.mark.parametrize("which", [0, 1])
def test_real_label_map_path_equals_per_annotation_path(records, which):
    rec = records[which]
    n = len(rec["annotations"])
    labels = dense_label_map(rec["annotations"], rec["height"], rec["width"])
    assert labels is not None and len(np.unique(labels)) == n + 1  # every nucleus, no overlap
    cfg = get_nucleus_cfg(RECIPE)
    fast, slow = NucleusDatasetMapper(cfg, True), NucleusDatasetMapper(cfg, True)
    slow._label_map = lambda *a: None  # force Detectron2's per-annotation transforms
    for seed in range(4):  # crops, scale jitter, flips, 90-degree rotations, stain jitter
        np.random.seed(seed), random.seed(seed)
        a = fast(rec)
        np.random.seed(seed), random.seed(seed)
        b = slow(rec)
        _same_instances(a, b)
    assert len(rec["annotations"]) == n  # the record is not modified
