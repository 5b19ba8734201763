# -*- coding: utf-8 -*-
"""Several prepared sets in one run: NUCLEUS.EXTRA_DATA_ROOTS registered beside nucleus_*, each with its own split."""
import json
import os

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from d2_nucleus.config import ConfigError, get_nucleus_cfg
from d2_nucleus.data.datasets import check_nucleus_datasets, register_nucleus_datasets
from d2_nucleus.data.importing import import_annotations
from d2_nucleus.engine import NucleusTrainer
from import_data import outlines_of, synthetic_image, write_aperio_xml, write_image
from test_training import tiny_cfg

RECIPE = "configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml"


@pytest.fixture(scope="module")
def kidney(tmp_path_factory):
    """An imported set (Aperio XML of 2 images at 0.5 um/px, imported at 0.25 um/px: 2x upsampled)."""
    src = tmp_path_factory.mktemp("kidney_src")
    for i in range(2):
        image, labels = synthetic_image(20 + i, 96, 15)
        write_image(str(src / f"k{i}.png"), image)
        write_aperio_xml(str(src / f"k{i}.xml"), outlines_of(labels), mpp=0.5)
    out = str(tmp_path_factory.mktemp("kidney") / "prepared")
    import_annotations("aperio-xml", [str(src)], out, target_mpp=0.25, ratio=0.5, progress=False)
    return out


@pytest.fixture(autouse=True)
def _clean_catalog():
    yield
    for name in list(DatasetCatalog.list()):
        if name.startswith(("nucleus_", "kidney_", "lung_")):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_extra_roots_register_with_their_own_split(synthetic_prepared, kidney):
    cfg = get_nucleus_cfg(None, ["NUCLEUS.EXTRA_DATA_ROOTS", f'("kidney={kidney}",)'], data_root=synthetic_prepared)
    register_nucleus_datasets(cfg=cfg)
    split = json.load(open(os.path.join(kidney, "split.json")))
    train = DatasetCatalog.get("kidney_train")
    val = DatasetCatalog.get("kidney_val")
    assert [os.path.basename(d["file_name"])[:-4] for d in train] == split["train"]
    assert [os.path.basename(d["file_name"])[:-4] for d in val] == split["val"]
    assert (train[0]["height"], train[0]["width"]) == (192, 192)  # at the model's 0.25 um/px
    assert all(a["category_id"] == 0 for d in train for a in d["annotations"])
    assert MetadataCatalog.get("kidney_val").thing_classes == ["nucleus"]
    assert len(DatasetCatalog.get("nucleus_train")) == 3  # the main root is unchanged
    check_nucleus_datasets(["nucleus_val", "kidney_val", "coco_2017_val"])  # others are not checked


def test_bad_entries_and_missing_roots_are_clear(synthetic_prepared, tmp_path):
    for entry in ("kidney", "nucleus=/x", "1abc=/x", "a b=/x"):
        cfg = get_nucleus_cfg(None, ["NUCLEUS.EXTRA_DATA_ROOTS", f'("{entry}",)'], data_root=synthetic_prepared)
        with pytest.raises(ConfigError, match="NUCLEUS.EXTRA_DATA_ROOTS entry"):
            register_nucleus_datasets(cfg=cfg)
    cfg = get_nucleus_cfg(None, ["NUCLEUS.EXTRA_DATA_ROOTS", f'("lung={tmp_path / "nowhere"}",)'],
                          data_root=synthetic_prepared)
    register_nucleus_datasets(cfg=cfg)
    with pytest.raises(FileNotFoundError, match="dataset 'lung_train' not found"):
        check_nucleus_datasets(["nucleus_train", "lung_train"])


def test_train_and_evaluate_on_two_sources(synthetic_prepared, kidney, tmp_path):
    cfg = tiny_cfg(RECIPE, synthetic_prepared, tmp_path, "SOLVER.MAX_ITER", "2",
                   "NUCLEUS.EXTRA_DATA_ROOTS", f'("kidney={kidney}",)',
                   "DATASETS.TRAIN", '("nucleus_train", "kidney_train")',
                   "DATASETS.TEST", '("nucleus_val", "kidney_val")',
                   "TEST.BEST_METRIC", "kidney_val/segm/AP50")
    trainer = NucleusTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert torch.isfinite(torch.tensor(trainer.storage.latest()["total_loss"][0]))
    res = trainer._last_eval_results
    assert set(res) == {"nucleus_val", "kidney_val"} and "AP50@100" in res["kidney_val"]["segm"]
    cfg = tiny_cfg(RECIPE, synthetic_prepared, tmp_path, "NUCLEUS.EXTRA_DATA_ROOTS", f'("kidney={kidney}",)',
                   "DATASETS.TEST", '("kidney_val",)', "MODEL.WEIGHTS", str(tmp_path / "model_final.pth"))
    res = NucleusTrainer.eval_only(cfg)
    assert "AP50@100" in res["segm"] and "AJI" in res["nucleus"]
