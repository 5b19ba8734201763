"""d2_nucleus.data.datasets: lazy Detectron2 registration of the prepared layout."""
import os

import cv2
import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode

from d2_nucleus.config import add_nucleus_config
from d2_nucleus.data import prepare_dataset, register_nucleus_datasets, resolve_data_root
from d2_nucleus.data.datasets import DATASET_SPLITS


@pytest.fixture(scope="module")
def prepared(synthetic_raw, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("prepared") / "nucleus")
    prepare_dataset(synthetic_raw, out, workers=1, progress=False)
    return out


@pytest.fixture(autouse=True)
def _clean_catalog():
    yield
    for name in DATASET_SPLITS:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)


def test_resolve_data_root_precedence(monkeypatch):
    cfg = get_cfg()
    add_nucleus_config(cfg)
    monkeypatch.delenv("D2_NUCLEUS_DATA", raising=False)
    assert resolve_data_root() == "datasets/nucleus"
    assert resolve_data_root(cfg=cfg) == "datasets/nucleus"
    monkeypatch.setenv("D2_NUCLEUS_DATA", "/env/root")
    assert resolve_data_root() == "/env/root"
    cfg.NUCLEUS.DATA_ROOT = "/cfg/root"
    assert resolve_data_root(cfg=cfg) == "/cfg/root"
    assert resolve_data_root("/arg/root", cfg) == "/arg/root"
    assert resolve_data_root(None, get_cfg()) == "/env/root"  # a cfg without NUCLEUS keys


def test_registration_is_lazy_and_missing_files_are_clear(tmp_path, monkeypatch):
    root = str(tmp_path / "not-prepared")
    assert register_nucleus_datasets(root) == root  # reads nothing
    assert set(DATASET_SPLITS) <= set(DatasetCatalog.list())
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("nucleus_train")
    msg = str(e.value)
    assert os.path.join(root, "annotations", "instance_train.json") in msg and "tools/prepare_data.py" in msg
    monkeypatch.setenv("D2_NUCLEUS_DATA", root)
    assert register_nucleus_datasets() == root


def test_registered_dicts_and_metadata(prepared):
    register_nucleus_datasets(prepared)
    for name, split in DATASET_SPLITS.items():
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == ["nucleus"] and meta.evaluator_type == "coco"
        assert meta.json_file == os.path.join(prepared, "annotations", f"instance_{split}.json")
        assert meta.image_root == os.path.join(prepared, "nucleus_data", split)
    dicts = DatasetCatalog.get("nucleus_all_train")
    assert [d["image_id"] for d in dicts] == [1, 2, 3, 4]
    d = dicts[0]
    assert os.path.isfile(d["file_name"]) and (d["height"], d["width"]) == (256, 256)
    for a in d["annotations"]:
        assert a["category_id"] == 0 and a["bbox_mode"] == BoxMode.XYWH_ABS and a["iscrowd"] == 0
        assert isinstance(a["segmentation"], dict) and set(a["segmentation"]) == {"size", "counts"}
    # Through Detectron2's own conversion to instances: the masks are the source masks.
    inst = utils.annotations_to_instances(d["annotations"], (d["height"], d["width"]), mask_format="bitmask")
    assert inst.gt_masks.tensor.shape[0] == len(d["annotations"])
    assert (inst.gt_classes == 0).all()
    train = DatasetCatalog.get("nucleus_train")
    val = DatasetCatalog.get("nucleus_val")
    assert sorted(x["image_id"] for x in train + val) == [1, 2, 3, 4]
    test = DatasetCatalog.get("nucleus_test")
    assert [x["image_id"] for x in test] == [1, 2] and all(not x.get("annotations") for x in test)


def test_gt_masks_equal_source_masks(prepared, synthetic_raw):
    register_nucleus_datasets(prepared)
    d = DatasetCatalog.get("nucleus_all_train")[0]
    image_id = os.path.splitext(os.path.basename(d["file_name"]))[0]
    mask_dir = os.path.join(synthetic_raw, "train", image_id, "masks")
    sources = sorted(os.listdir(mask_dir))
    inst = utils.annotations_to_instances(d["annotations"], (d["height"], d["width"]), mask_format="bitmask")
    for k, name in enumerate(sources):
        src = cv2.imread(os.path.join(mask_dir, name), cv2.IMREAD_GRAYSCALE) > 0
        assert np.array_equal(inst.gt_masks.tensor[k].numpy(), src), name


def test_reregistration_replaces(prepared, tmp_path):
    register_nucleus_datasets(str(tmp_path / "elsewhere"))
    register_nucleus_datasets(prepared)
    assert MetadataCatalog.get("nucleus_train").json_file.startswith(prepared)
    assert len(DatasetCatalog.get("nucleus_train")) > 0


def test_preparing_twice_registers_once(prepared, monkeypatch):
    """tools/train_net.py and the trainer both prepare the datasets: the second call registers nothing."""
    from d2_nucleus.config import get_nucleus_cfg
    from d2_nucleus.data.datasets import prepare_nucleus_datasets

    cfg = get_nucleus_cfg(data_root=prepared)
    calls = []
    real = DatasetCatalog.register
    monkeypatch.setattr(DatasetCatalog, "register", lambda name, f: calls.append(name) or real(name, f))
    register_nucleus_datasets(str(prepared) + "/../elsewhere")  # another root first: replaced below
    calls.clear()
    assert prepare_nucleus_datasets(cfg, ["nucleus_train", "nucleus_val"]) == os.path.abspath(prepared)
    assert sorted(calls) == sorted(DATASET_SPLITS)
    calls.clear()
    prepare_nucleus_datasets(cfg, ["nucleus_train", "nucleus_val"])
    assert calls == []
