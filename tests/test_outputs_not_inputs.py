# -*- coding: utf-8 -*-
"""
No output of any CLI is ever one of its inputs, whatever the flags (issue 27 item 1):
``file_io.check_not_input`` on resolved paths (symlinks included), called by every CLI that writes
before anything is written and before the "exists, pass --overwrite" check, and never overridden by
``--overwrite``. Each CLI case runs as a user runs it (the script as ``__main__``), and the test
compares what is on disk before and after byte for byte.
"""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from d2_nucleus.utils.file_io import OutputIsInputError, check_not_input
from test_failures import (
    DEMO, PREDICT, PREPARE, ROOT, SMALL, TRAIN_NET, _expect_error, _images, _run_cli_cases, _save_demo_weights, _tree,
)

SLIDES = os.path.join(ROOT, "tools", "segment_slides.py")
CLUSTER = os.path.join(ROOT, "tools", "segment_cluster.py")
FREEZE = os.path.join(ROOT, "tools", "freeze_group_norm.py")
IMPORT = os.path.join(ROOT, "tools", "import_annotations.py")
NO_FLAG = "no flag lets an output replace an input"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return _save_demo_weights(tmp_path_factory.mktemp("weights") / "demo.pth")


def test_check_not_input(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.png").write_bytes(b"image")
    os.symlink(d, tmp_path / "link")
    ok = [[str(d / "y.png")], [str(tmp_path / "out" / "x.png")], [str(d / "x.png.tmp")]]
    for outputs in ok:
        check_not_input(outputs, [str(d / "x.png"), None, "https://host/x.png"])
    refused = {
        "is the input": [str(d / "x.png")],
        "is the input " + str(d / "x.png"): [str(tmp_path / "link" / "x.png")],  # through a symlink
        "would replace the folder holding the input": [str(d)],
        "would replace the folder holding the input ": [str(tmp_path)],
    }
    for fragment, outputs in refused.items():
        with pytest.raises(OutputIsInputError, match=fragment.strip()) as e:
            check_not_input(outputs, [str(d / "x.png")])
        assert NO_FLAG in str(e.value) and "\n" not in str(e.value)
    # an output inside an input folder: allowed, unless outside=True (layouts built from a raw dataset)
    check_not_input([str(d / "new.json")], [str(d)])
    with pytest.raises(OutputIsInputError, match="would be inside the input"):
        check_not_input([str(d / "new.json")], [str(d)], outside=True)
    # two outputs that are one file (e.g. --vis-dir and --labels-dir in one folder)
    with pytest.raises(OutputIsInputError, match="two outputs would be the same file"):
        check_not_input([str(d / "a.png"), str(tmp_path / "link" / "a.png")], [])
    # a hard link is a separate name: atomic_write replaces the output's name, the input keeps its data
    os.link(d / "x.png", tmp_path / "hard.png")
    check_not_input([str(tmp_path / "hard.png")], [str(d / "x.png")])


def _config_copy(folder):
    """A config file of the run's own (its _BASE_ the demo config), which an output could replace."""
    path = folder / "model.yaml"
    path.write_text(f'_BASE_: "{DEMO}"\n')
    return str(path)


def test_predict_never_writes_over_its_inputs(weights, tmp_path):
    """The issue's cases (--labels-dir / --vis-dir / --measurements into the image folder, --output
    onto the input image, through a symlink), the weights, config and id file, and two outputs in
    one file; with --overwrite and without, the message never suggests --overwrite."""
    d = _images(tmp_path / "d", 2)
    os.symlink(d, tmp_path / "link")
    cfg = _config_copy(tmp_path)
    local_weights = tmp_path / "weights.pth"
    shutil.copyfile(weights, local_weights)
    ids = tmp_path / "ids.json"
    ids.write_text('[{"file_name": "img0.png", "id": 1, "height": 96, "width": 96},'
                   ' {"file_name": "img1.png", "id": 2, "height": 96, "width": 96}]')
    res = tmp_path / "res"
    before = _tree(tmp_path)

    def predict(*extra, inp=d):
        return (PREDICT, ["--config-file", cfg, "--weights", local_weights, "--input", inp, "--device", "cpu",
                          "--quiet", *extra])

    cases = [
        (predict("--labels-dir", d, "--output", res / "a.json", "--overwrite"), [f"{d}/img0.png", "is the input"]),
        (predict("--labels-dir", d, "--output", res / "a.json"), [f"{d}/img0.png", "is the input"]),  # first run
        (predict("--vis-dir", d, "--output", res / "a.json"), [f"{d}/img0.png", "is the input"]),
        (predict("--vis-dir", tmp_path / "link", "--output", res / "a.json", "--overwrite"),
         [str(tmp_path / "link" / "img0.png"), f"the input {d}/img0.png"]),
        (predict("--measurements", d, "--output", res / "a.json", "--overwrite"), [f"{d}/img0.png"]),
        (predict("--output", f"{d}/img0.png", "--overwrite", inp=f"{d}/img0.png"), [f"{d}/img0.png"]),
        (predict("--output", local_weights, "--overwrite"), [str(local_weights), "is the input"]),
        (predict("--output", cfg, "--overwrite"), [cfg, "is the input"]),
        (predict("--ids", ids, "--output", ids, "--overwrite"), [str(ids), "is the input"]),
        (predict("--output", res / "a.json", "--vis-dir", res / "v", "--labels-dir", res / "v"),
         ["two outputs would be the same file", str(res / "v" / "img0.png")]),
    ]
    results = _run_cli_cases([c for c, _ in cases])
    for (command, fragments), result in zip(cases, results):
        line = _expect_error(result, "predict", *fragments, rc=2)
        assert "pass --overwrite" not in line, line
    assert _tree(tmp_path) == before  # the images, weights, config and id file byte-identical
    assert not res.exists()


def _slides(folder, names):
    folder.mkdir()
    for name in names:
        Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(folder / name)
    return folder


def test_slide_tools_never_write_over_their_inputs(weights, tmp_path):
    """segment_slides and segment_cluster: a slide's output named like another slide, --out the
    folder of the slides or of the tissue masks (the next run would read the outputs as slides),
    through a symlink, the report over a slide or a manifest or another output."""
    slides = _slides(tmp_path / "slides", ["s.png", "s.overview.png"])
    one = _slides(tmp_path / "one", ["s.png"])
    masks = _slides(tmp_path / "masks", ["s.png"])
    os.symlink(one, tmp_path / "link")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,mpp\n{one / 's.png'},0.25\n")
    out = tmp_path / "out"
    before = _tree(tmp_path)

    def run(tool, inputs, *extra):
        return (tool, ["--config-file", DEMO, "--weights", weights, *inputs, "--device", "cpu", "--mpp", "0.25",
                       "--quiet", *extra] + (["--workers", "1"] if tool == CLUSTER else []))

    cases = [
        ("segment_slides", run(SLIDES, [slides], "--out", slides, "--overwrite"),
         [str(slides / "s.overview.png"), "is the input"]),
        ("segment_slides", run(SLIDES, [one], "--out", tmp_path / "link"), ["is the input folder", "as slides"]),
        ("segment_slides", run(SLIDES, [one], "--out", masks, "--tissue-mask", masks), ["is the input folder"]),
        ("segment_cluster", run(CLUSTER, [slides], "--out", slides, "--overwrite"), [str(slides / "s.overview.png")]),
        ("segment_cluster", run(CLUSTER, [one], "--out", out, "--report", one / "s.png"), [str(one / "s.png")]),
        ("segment_cluster", run(CLUSTER, [manifest], "--out", out, "--report", manifest), [str(manifest)]),
        ("segment_cluster", run(CLUSTER, [one], "--out", out, "--csv", "--report", out / "s.csv"),
         ["two outputs would be the same file", str(out / "s.csv")]),
    ]
    results = _run_cli_cases([c for _, c, _ in cases])
    for (prog, _, fragments), result in zip(cases, results):
        line = _expect_error(result, prog, *fragments, rc=2)
        assert "pass --overwrite" not in line, line
    assert _tree(tmp_path) == before
    assert not out.exists()


def test_prepare_import_freeze_never_write_over_their_inputs(synthetic_raw, synthetic_prepared, weights, tmp_path):
    """prepare_data (and its sub-steps) inside the raw dataset or over the split file it reads;
    import_annotations over the prepared layout it imports from; freeze_group_norm over its
    weights or config. With --overwrite: refused all the same, nothing changed."""
    raw = tmp_path / "raw"
    shutil.copytree(synthetic_raw, raw)
    prepared = tmp_path / "prepared"
    shutil.copytree(synthetic_prepared, prepared)
    split = tmp_path / "split.json"
    shutil.copyfile(prepared / "split.json", split)
    local_weights = tmp_path / "model.pth"
    shutil.copyfile(weights, local_weights)
    cfg = _config_copy(tmp_path)  # model.yaml: the frozen config of --output model.pth would replace it
    other_weights = tmp_path / "other.pth"
    shutil.copyfile(weights, other_weights)
    before = _tree(tmp_path)
    cases = [
        ("prepare_data", (PREPARE, ["split", "--raw", raw, "--out", raw / "test_img_ids.json", "--overwrite"]),
         [str(raw / "test_img_ids.json")]),
        ("prepare_data", (PREPARE, ["test-list", "--raw", raw, "--out", raw / "test" / "x.json"]), ["inside the input"]),
        ("prepare_data", (PREPARE, ["convert", "--raw", raw, "--subset", "val", "--split-file", split, "--out", split,
                                    "--overwrite"]), [str(split), "is the input"]),
        ("prepare_data", (PREPARE, ["--raw", raw, "--out", raw, "--overwrite", "--quiet"]), [str(raw)]),
        ("import_annotations", (IMPORT, ["--format", "coco", prepared / "annotations" / "instance_all_train.json",
                                         "--images", prepared / "nucleus_data" / "all_train", "--out", prepared,
                                         "--overwrite", "--default-mpp", "0.25", "--quiet"]), [str(prepared)]),
        ("freeze_group_norm", (FREEZE, ["--config-file", DEMO, "--weights", local_weights, "--output", local_weights,
                                        "--overwrite", "--data-root", prepared, "--device", "cpu", "--quiet"]),
         [str(local_weights), "is the input"]),
        ("freeze_group_norm", (FREEZE, ["--config-file", cfg, "--weights", other_weights, "--output", local_weights,
                                        "--overwrite", "--data-root", prepared, "--device", "cpu", "--quiet"]),
         [cfg, "is the input"]),
    ]
    results = _run_cli_cases([c for _, c, _ in cases])
    for (prog, _, fragments), result in zip(cases, results):
        rc = 1 if prog == "prepare_data" else 2  # prepare_data's documented status for bad input
        line = _expect_error(result, prog, *fragments, rc=rc)
        assert "pass --overwrite" not in line, line
    assert _tree(tmp_path) == before


def test_train_net_never_writes_over_its_inputs(synthetic_prepared, weights, tmp_path):
    """OUTPUT_DIR/config.yaml is not the --config-file (a run's saved config given back to it, even
    with --eval-only), and a training run does not save its model_final.pth over MODEL.WEIGHTS
    (fine-tuning from the earlier run's model into the same OUTPUT_DIR with --overwrite): refused
    before anything is written, and the earlier run's last_checkpoint and metrics.json are kept."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f'_BASE_: "{DEMO}"\n')
    shutil.copyfile(weights, run / "model_final.pth")
    (run / "last_checkpoint").write_text("model_final.pth")
    (run / "metrics.json").write_text('{"iteration": 0}\n')
    before = _tree(tmp_path)
    base = ["--data-root", synthetic_prepared, *SMALL]
    cases = [
        ((TRAIN_NET, ["--config-file", run / "config.yaml", "--eval-only", *base, "MODEL.WEIGHTS",
                      run / "model_final.pth", "OUTPUT_DIR", run]), [str(run / "config.yaml"), "is the input"]),
        ((TRAIN_NET, ["--config-file", DEMO, "--overwrite", *base, "MODEL.WEIGHTS", run / "model_final.pth",
                      "OUTPUT_DIR", run]), [str(run / "model_final.pth"), "would save its own model_final.pth"]),
        ((TRAIN_NET, ["--config-file", DEMO, *base, "MODEL.WEIGHTS", run / "model_final.pth", "OUTPUT_DIR", run]),
         [str(run / "model_final.pth"), "would save its own"]),  # first run: not "pass --overwrite"
    ]
    results = _run_cli_cases([c for c, _ in cases])
    for (_, fragments), result in zip(cases, results):
        line = _expect_error(result, "train_net", *fragments, rc=2)
        assert "pass --overwrite" not in line and "pass --resume" not in line, line
    assert _tree(tmp_path) == before
