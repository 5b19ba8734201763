# -*- coding: utf-8 -*-
"""
Issue 27 items 4 and 5: a prediction run that would leave images of its folder out (``--ids``
listing fewer) is an error unless ``--subset`` asks for it, and then says so; a prepared dataset
whose annotation file is malformed or names images outside its image folder stops train_net (also
``--eval-only``, extra data roots) and freeze_group_norm with one line naming the file, before
anything is written.
"""
import json
import os
import shutil

import pytest

from d2_nucleus.data.coco_check import check_coco_file, image_path_inside
from d2_nucleus.data.raw import RawDataError
from test_failures import DEMO, PREDICT, ROOT, SMALL, TRAIN_NET, _expect_error, _images, _run_cli_cases, _save_demo_weights, _tree

FREEZE = os.path.join(ROOT, "tools", "freeze_group_norm.py")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return _save_demo_weights(tmp_path_factory.mktemp("weights") / "demo.pth")


def test_predict_ids_leaving_images_out_needs_subset(weights, tmp_path):
    folder = _images(tmp_path / "images", 3)
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps([{"file_name": "img0.png", "id": 7, "height": 96, "width": 96}]))
    res = tmp_path / "res"
    before = _tree(tmp_path)

    def predict(*extra):
        return (PREDICT, ["--config-file", DEMO, "--weights", weights, "--input", folder, "--output",
                          res / "answer.json", "--device", "cpu", "--quiet", *extra])

    refused, no_ids = _run_cli_cases([predict("--ids", ids), predict("--subset")])
    _expect_error(refused, "predict", str(ids), "lists 1 image(s)", "2 more", "img1.png, img2.png", "--subset", rc=2)
    _expect_error(no_ids, "predict", "--subset goes with --ids", rc=2)
    assert _tree(tmp_path) == before  # nothing written by the refused runs
    subset = _run_cli_cases([predict("--ids", ids, "--subset")])[0]
    assert subset["rc"] == 0, subset["stderr"][-3000:]
    assert "2 image(s)" in subset["stderr"] and "img1.png, img2.png" in subset["stderr"]  # the warning
    assert "Left out 2 image(s) of the input folder that --ids does not list (--subset): img1.png, img2.png" \
        in subset["stdout"]
    answer = json.loads((res / "answer.json").read_text())
    assert {d["image_id"] for d in answer} <= {7}


def _variant(prepared, folder, split="train", edit=None, text=None, remove_image=False):
    """A copy of the prepared layout with annotations/instance_<split>.json changed."""
    shutil.copytree(prepared, folder)
    path = folder / "annotations" / f"instance_{split}.json"
    if text is not None:
        path.write_text(text)
    if edit is not None:
        coco = json.loads(path.read_text())
        edit(coco)
        path.write_text(json.dumps(coco))
    if remove_image:
        coco = json.loads(path.read_text())
        os.remove(folder / "nucleus_data" / split / coco["images"][0]["file_name"])
    return str(path)


def _set(key, value, where="images"):
    def edit(coco):
        coco[where][0][key] = value
    return edit


def test_check_coco_file(synthetic_prepared, tmp_path):
    for split in ("all_train", "train", "val", "test"):
        check_coco_file(os.path.join(synthetic_prepared, "annotations", f"instance_{split}.json"),
                        os.path.join(synthetic_prepared, "nucleus_data", split))
    root = str(tmp_path / "images")
    assert image_path_inside(root, "a/b.png") == os.path.join(root, "a", "b.png")
    for bad in ("../../../etc/passwd", "/etc/passwd", "a/../../x.png", "", ".", None):
        with pytest.raises(ValueError):
            image_path_inside(root, bad)
    # the loader Detectron2 calls checks too: no file outside the image folder is ever read
    from detectron2.data import DatasetCatalog

    from d2_nucleus.config import get_nucleus_cfg
    from d2_nucleus.data.datasets import register_nucleus_datasets

    json_file = _variant(synthetic_prepared, tmp_path / "evil", "val", _set("file_name", "../../../etc/passwd"))
    register_nucleus_datasets(cfg=get_nucleus_cfg(None, ["NUCLEUS.EXTRA_DATA_ROOTS", f'("evil={tmp_path / "evil"}",)']))
    with pytest.raises(RawDataError, match="lies outside the image folder") as e:
        DatasetCatalog.get("evil_val")
    assert json_file in str(e.value)


def test_bad_data_stops_every_cli_before_anything_is_written(synthetic_prepared, weights, tmp_path):
    p = synthetic_prepared
    truncated = open(os.path.join(p, "annotations", "instance_train.json")).read()[:500]
    variants = {
        "truncated JSON": (_variant(p, tmp_path / "a", text=truncated), "not valid JSON"),
        "a list": (_variant(p, tmp_path / "b", text="[]"), "expected a COCO object"),
        "no images": (_variant(p, tmp_path / "c", edit=lambda c: c.pop("images")), "no 'images' list"),
        "../../../etc/passwd": (_variant(p, tmp_path / "d", edit=_set("file_name", "../../../etc/passwd")),
                                "'../../../etc/passwd' lies outside the image folder"),
        "/etc/passwd": (_variant(p, tmp_path / "e", edit=_set("file_name", "/etc/passwd")),
                        "must be a path relative to the image folder"),
        "missing image": (_variant(p, tmp_path / "f", remove_image=True), "not found"),
        "no bbox": (_variant(p, tmp_path / "g", edit=_set("bbox", None, "annotations")), "bbox must be 4 finite"),
        "height 0": (_variant(p, tmp_path / "h", edit=_set("height", 0)), "'height' > 0"),
    }
    val_bad = _variant(p, tmp_path / "v", "val", text="{")
    # an earlier run in OUTPUT_DIR: --overwrite must not remove its files when the data is bad
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "last_checkpoint").write_text("model_final.pth")
    (earlier / "metrics.json").write_text("{}\n")
    (earlier / "model_final.pth").write_bytes(b"the earlier model")
    before = _tree(tmp_path)
    out = tmp_path / "runs"

    def train(root, name, *extra, flags=()):
        return (TRAIN_NET, ["--config-file", DEMO, "--data-root", root, *flags, *SMALL, *extra, "OUTPUT_DIR", out / name])

    cases = [(train(tmp_path / json_file.split(os.sep)[-3], json_file.split(os.sep)[-3]), [json_file, fragment])
             for json_file, fragment in variants.values()]
    cases += [
        (train(tmp_path / "v", "eval", "MODEL.WEIGHTS", weights, flags=["--eval-only"]), [val_bad, "not valid JSON"]),
        ((TRAIN_NET, ["--config-file", DEMO, "--data-root", p, "--overwrite", *SMALL, "NUCLEUS.EXTRA_DATA_ROOTS",
                      f'("mine={tmp_path / "d"}",)', "DATASETS.TRAIN", '("mine_train",)', "OUTPUT_DIR", earlier]),
         [variants["../../../etc/passwd"][0], "lies outside the image folder"]),
        ((FREEZE, ["--config-file", DEMO, "--weights", weights, "--data-root", tmp_path / "d", "--output",
                   out / "frozen.pth", "--device", "cpu", "--quiet"]), [variants["../../../etc/passwd"][0]]),
    ]
    results = _run_cli_cases([c for c, _ in cases], timeout=900)
    for ((script, argv), fragments), result in zip(cases, results):
        prog = os.path.splitext(os.path.basename(script))[0]
        try:
            _expect_error(result, prog, *fragments, rc=2)
        except AssertionError as e:
            raise AssertionError(f"{fragments}: {e}") from None
    assert not out.exists()  # no config.yaml, no log.txt
    assert _tree(tmp_path) == before  # the earlier run's files too
