"""tools/prepare_data.py and d2_nucleus.data.prepare: the prepared layout, sub-steps, and bad input."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from tools_cli import load_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = ("all_train", "train", "val", "test")


CLI = load_tool("prepare_data")


def run_cli(*args):
    return CLI.main([str(a) for a in args])


def _write(path, arr):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    assert cv2.imwrite(str(path), arr)


def make_raw(root, n_train=4, size=(32, 40), n_test=2):
    """A tiny raw dataset: 3 non-overlapping square nuclei per training image."""
    h, w = size
    for i in range(n_train):
        iid = f"img-{i}"
        _write(root / "train" / iid / "images" / f"{iid}.png", np.full((h, w, 3), 40 * i, np.uint8))
        for k in range(3):
            m = np.zeros((h, w), np.uint8)
            m[2 + 9 * k : 7 + 9 * k, 3 + i : 10 + i] = 255
            _write(root / "train" / iid / "masks" / f"mask_{k + 1:04d}.png", m)
    entries = []
    for j in range(n_test):
        name = f"test-{j}.png"
        _write(root / "test" / name, np.full((h, w, 3), 100, np.uint8))
        entries.append({"file_name": name, "id": 100 + j, "height": h, "width": w})
    (root / "test_img_ids.json").write_text(json.dumps(entries))
    return root


@pytest.fixture
def raw(tmp_path):
    return make_raw(tmp_path / "raw")


def _leftovers(parent):
    return [n for n in os.listdir(parent) if n.startswith(".") and (n.endswith(".tmp") or n.endswith(".old"))]


def expect_error(capsys, out, *fragments, args=()):
    """Run the CLI on a bad input: exit 1, message with every fragment, no output, no temp files."""
    raw_dir, out = fragments[0], out
    rc = run_cli("--raw", raw_dir, "--out", out, "--workers", 1, "--quiet", *args)
    err = capsys.readouterr().err
    assert rc == 1, err
    for f in fragments[1:]:
        assert str(f) in err, (f, err)
    assert not os.path.exists(out)
    assert not _leftovers(os.path.dirname(str(out)))
    return err


def test_full_pipeline_layout(raw, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli("--raw", raw, "--out", out, "--workers", 2) == 0
    stdout = capsys.readouterr().out
    assert "images: 4 train, 2 test" in stdout and "nuclei: 12 written, 0 skipped" in stdout
    assert (out / "classes.txt").read_text() == "nucleus\n"
    assert (out / "test_img_ids.json").read_bytes() == (raw / "test_img_ids.json").read_bytes()
    cocos = {s: json.loads((out / "annotations" / f"instance_{s}.json").read_text()) for s in SPLITS}
    split = json.loads((out / "split.json").read_text())
    assert split["val"] == ["img-0"] and split["train"] == ["img-1", "img-2", "img-3"]  # ceil(0.2 * 4) = 1
    all_ids = {img["file_name"]: img["id"] for img in cocos["all_train"]["images"]}
    assert all_ids == {"img-0.png": 1, "img-1.png": 2, "img-2.png": 3, "img-3.png": 4}
    for s in ("train", "val"):
        for img in cocos[s]["images"]:
            assert all_ids[img["file_name"]] == img["id"]  # train/val keep the all_train ids
        assert [a["id"] for a in cocos[s]["annotations"]] == list(range(1, len(cocos[s]["annotations"]) + 1))
    assert len(cocos["train"]["annotations"]) == 9 and len(cocos["val"]["annotations"]) == 3
    assert [i["id"] for i in cocos["val"]["images"]] == [1] and [i["id"] for i in cocos["train"]["images"]] == [2, 3, 4]
    for s, coco in cocos.items():
        assert coco["categories"] == [{"id": 1, "name": "nucleus", "supercategory": "nucleus"}]
        names = sorted(os.listdir(out / "nucleus_data" / s))
        assert names == sorted(img["file_name"] for img in coco["images"])
        for img in coco["images"]:
            assert set(img) == {"id", "file_name", "height", "width"} and img["file_name"] == os.path.basename(img["file_name"])
            assert (img["height"], img["width"]) == (32, 40)
    assert cocos["test"]["annotations"] == []
    assert [(i["file_name"], i["id"]) for i in cocos["test"]["images"]] == [("test-0.png", 100), ("test-1.png", 101)]
    for a in cocos["all_train"]["annotations"]:
        assert set(a) == {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"}
        assert isinstance(a["segmentation"]["counts"], str) and a["segmentation"]["size"] == [32, 40]
        assert a["area"] == 35 and a["bbox"][2:] == [7, 5] and a["iscrowd"] == 0
    # Images are hard links (or copies) with the same bytes.
    src = raw / "train" / "img-0" / "images" / "img-0.png"
    assert (out / "nucleus_data" / "all_train" / "img-0.png").read_bytes() == src.read_bytes()
    assert not _leftovers(tmp_path)


def test_runs_are_identical_and_overwrite(raw, tmp_path, capsys):
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    assert run_cli("--raw", raw, "--out", out1, "--workers", 2, "--quiet") == 0
    assert run_cli("--raw", raw, "--out", out2, "--workers", 1, "--quiet") == 0
    for s in SPLITS:
        rel = os.path.join("annotations", f"instance_{s}.json")
        assert (out1 / rel).read_bytes() == (out2 / rel).read_bytes()
    # Existing output without --overwrite: error, nothing touched.
    (out1 / "mine.txt").write_text("keep me")
    assert run_cli("--raw", raw, "--out", out1, "--quiet") == 1
    assert "already exists" in capsys.readouterr().err and (out1 / "mine.txt").exists()
    # --overwrite replaces only what prepare_data wrote: a folder with a file of the user's is refused.
    assert run_cli("--raw", raw, "--out", out1, "--quiet", "--overwrite", "--seed", "5") == 1
    err = capsys.readouterr().err
    assert "mine.txt" in err and (out1 / "mine.txt").read_text() == "keep me"
    assert json.loads((out1 / "split.json").read_text())["seed"] == 0
    # Without it: the layout is replaced as a whole.
    (out1 / "mine.txt").unlink()
    assert run_cli("--raw", raw, "--out", out1, "--quiet", "--overwrite", "--seed", "5") == 0
    assert json.loads((out1 / "split.json").read_text())["seed"] == 5
    assert not _leftovers(tmp_path)
    # An empty folder may be filled.
    (tmp_path / "empty").mkdir()
    assert run_cli("--raw", raw, "--out", tmp_path / "empty", "--quiet") == 0


def test_polygon_format(raw, tmp_path):
    out = tmp_path / "out"
    assert run_cli("--raw", raw, "--out", out, "--format", "polygon", "--quiet") == 0
    coco = json.loads((out / "annotations" / "instance_all_train.json").read_text())
    for a in coco["annotations"]:
        assert isinstance(a["segmentation"], list) and all(len(p) >= 6 for p in a["segmentation"])
        assert a["area"] == 35


def test_substeps_match_full_pipeline(raw, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli("--raw", raw, "--out", out, "--quiet", "--seed", "3", "--ratio", "0.5") == 0
    ann = out / "annotations"
    split = tmp_path / "split.json"
    assert run_cli("split", "--raw", raw, "--out", split, "--seed", "3", "--ratio", "0.5") == 0
    assert json.loads(split.read_text()) == json.loads((out / "split.json").read_text())
    for subset in ("all_train", "train", "val"):
        target = tmp_path / f"{subset}.json"
        assert run_cli("convert", "--raw", raw, "--out", target, "--subset", subset, "--split-file", split,
                       "--workers", 1, "--quiet") == 0
        assert json.loads(target.read_text()) == json.loads((ann / f"instance_{subset}.json").read_text())
    # without a split file: --ratio/--seed
    target = tmp_path / "val2.json"
    assert run_cli("convert", "--raw", raw, "--out", target, "--subset", "val", "--seed", "3", "--ratio", "0.5", "--quiet") == 0
    assert json.loads(target.read_text()) == json.loads((ann / "instance_val.json").read_text())
    test_json = tmp_path / "test.json"
    assert run_cli("test-list", "--raw", raw, "--out", test_json) == 0
    assert json.loads(test_json.read_text()) == json.loads((ann / "instance_test.json").read_text())
    capsys.readouterr()
    assert run_cli("test-list", "--raw", raw, "--out", test_json) == 1  # exists
    assert "already exists" in capsys.readouterr().err
    # a split naming an unknown image
    split.write_text(json.dumps({"train": ["img-0"], "val": ["nope"]}))
    assert run_cli("convert", "--raw", raw, "--out", tmp_path / "x.json", "--subset", "val", "--split-file", split) == 1
    assert "nope" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_cli_subprocess_exit_codes(raw, tmp_path):
    """The script itself, as users run it: non-zero exit and a message naming the file."""
    script = os.path.join(REPO, "tools", "prepare_data.py")
    shutil.rmtree(raw / "train" / "img-1" / "masks")
    r = subprocess.run([sys.executable, script, "--raw", str(raw), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "img-1: missing masks/ folder" in r.stderr
    assert not (tmp_path / "o").exists()


def test_help_documents_every_step(capsys):
    for cmd in ([], ["split"], ["convert"], ["test-list"]):
        with pytest.raises(SystemExit) as e:
            run_cli(*cmd, "--help")
        assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--raw", "--out", "--ratio", "--seed", "--format", "--workers", "--overwrite", "--subset",
                 "--split-file", "test-list", "convert"):
        assert flag in text


# ------------------------------------------------------------------------------------------------
# Bad input, one case each
# ------------------------------------------------------------------------------------------------
def test_missing_images_folder(raw, tmp_path, capsys):
    shutil.rmtree(raw / "train" / "img-2" / "images")
    expect_error(capsys, tmp_path / "out", raw, os.path.join("img-2"), "missing images/ folder")


def test_missing_masks_folder(raw, tmp_path, capsys):
    shutil.rmtree(raw / "train" / "img-0" / "masks")
    expect_error(capsys, tmp_path / "out", raw, "img-0", "missing masks/ folder")


def test_missing_image_file(raw, tmp_path, capsys):
    os.rename(raw / "train" / "img-0" / "images" / "img-0.png", raw / "train" / "img-0" / "images" / "other.png")
    expect_error(capsys, tmp_path / "out", raw, "expected img-0.png, found other.png")


def test_missing_raw_and_train(tmp_path, capsys):
    expect_error(capsys, tmp_path / "out", tmp_path / "nothing", "raw dataset folder does not exist")
    (tmp_path / "raw").mkdir()
    expect_error(capsys, tmp_path / "out", tmp_path / "raw", "missing train/ folder")


@pytest.mark.parametrize("what", ["mask", "image"])
def test_corrupt_png(raw, tmp_path, capsys, what):
    path = raw / "train" / "img-1" / ("masks/mask_0002.png" if what == "mask" else "images/img-1.png")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_error(capsys, tmp_path / "out", raw, str(path), "cannot be decoded")


def test_corrupt_test_image(raw, tmp_path, capsys):
    path = raw / "test" / "test-1.png"
    path.write_bytes(b"not a png")
    expect_error(capsys, tmp_path / "out", raw, str(path), "cannot be decoded")


def test_mask_size_differs(raw, tmp_path, capsys):
    path = raw / "train" / "img-2" / "masks" / "mask_0003.png"
    m = np.zeros((32, 41), np.uint8)
    m[1:4, 1:4] = 255
    _write(path, m)
    expect_error(capsys, tmp_path / "out", raw, str(path), "mask is 41x32", "is 40x32")


def test_non_binary_mask_is_reported(raw, tmp_path, capsys):
    path = raw / "train" / "img-0" / "masks" / "mask_0001.png"
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    m[3, 4] = 100
    _write(path, m)
    out = tmp_path / "out"
    assert run_cli("--raw", raw, "--out", out, "--quiet") == 0
    stdout = capsys.readouterr().out
    assert "non-binary: 1" in stdout and str(path) in stdout
    coco = json.loads((out / "annotations" / "instance_all_train.json").read_text())
    assert np.array_equal(mask_util.decode(coco["annotations"][0]["segmentation"]), (m > 0).astype(np.uint8))


def test_empty_mask_is_skipped(raw, tmp_path, capsys):
    path = raw / "train" / "img-1" / "masks" / "mask_0002.png"
    _write(path, np.zeros((32, 40), np.uint8))
    out = tmp_path / "out"
    assert run_cli("--raw", raw, "--out", out, "--quiet") == 0
    stdout = capsys.readouterr().out
    assert "nuclei: 11 written, 1 skipped (empty mask: 1)" in stdout and str(path) in stdout
    coco = json.loads((out / "annotations" / "instance_all_train.json").read_text())
    assert len(coco["annotations"]) == 11


def test_overlapping_masks_are_kept_and_reported(raw, tmp_path, capsys):
    path = raw / "train" / "img-3" / "masks" / "mask_0004.png"
    m = np.zeros((32, 40), np.uint8)
    m[4:9, 5:9] = 255  # overlaps mask_0001 of img-3
    _write(path, m)
    out = tmp_path / "out"
    assert run_cli("--raw", raw, "--out", out, "--quiet") == 0
    stdout = capsys.readouterr().out
    assert "overlap: 1" in stdout and "mask_0004.png overlaps" in stdout
    coco = json.loads((out / "annotations" / "instance_all_train.json").read_text())
    assert len(coco["annotations"]) == 13


def test_hidden_entries_are_ignored(raw, tmp_path, capsys):
    img = raw / "train" / "img-0"
    for p in (raw / "train" / ".ipynb_checkpoints" / "junk.png", img / "masks" / ".ipynb_checkpoints" / "mask_0001-checkpoint.png",
              raw / "test" / ".ipynb_checkpoints" / "test-0-checkpoint.png"):
        _write(p, np.zeros((5, 5), np.uint8))
    shutil.copy(img / "masks" / "mask_0001.png", img / "masks" / "mask_0001-checkpoint.png")
    shutil.copy(img / "images" / "img-0.png", img / "images" / "img-0-checkpoint.png")
    (raw / "test" / "test-0-checkpoint.png").write_bytes(b"junk")
    (raw / "train" / ".DS_Store").write_bytes(b"junk")
    out = tmp_path / "out"
    assert run_cli("--raw", raw, "--out", out, "--quiet") == 0
    stdout = capsys.readouterr().out
    assert "nuclei: 12 written" in stdout and "warnings: 0" in stdout
    assert "ignored hidden/checkpoint entries" in stdout
    assert sorted(os.listdir(out / "nucleus_data" / "test")) == ["test-0.png", "test-1.png"]


def test_test_list_names_absent_file(raw, tmp_path, capsys):
    os.remove(raw / "test" / "test-1.png")
    expect_error(capsys, tmp_path / "out", raw, str(raw / "test" / "test-1.png"), "listed in", "but absent")


def test_unlisted_test_image_is_a_warning(raw, tmp_path, capsys):
    _write(raw / "test" / "extra.png", np.zeros((32, 40, 3), np.uint8))
    out = tmp_path / "out"
    assert run_cli("--raw", raw, "--out", out, "--quiet") == 0
    stdout = capsys.readouterr().out
    assert "unlisted test image: 1" in stdout and "extra.png: not listed" in stdout
    assert "extra.png" not in os.listdir(out / "nucleus_data" / "test")


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "not valid JSON"),
        ('{"a": 1}', "expected a list"),
        ('[{"file_name": "test-0.png", "id": 1, "height": 32}]', "has no 'width'"),
        ('[{"file_name": "test-0.png", "id": "1", "height": 32, "width": 40}]', "'id' must be"),
        ('[{"file_name": "test-0.png", "id": 1, "height": 32, "width": 40},'
         ' {"file_name": "test-1.png", "id": 1, "height": 32, "width": 40}]', "duplicate id 1"),
        ('[{"file_name": "test-0.png", "id": 1, "height": 30, "width": 40}]', "test_img_ids.json says 40x30"),
        ("[]", "lists no test images"),
    ],
)
def test_bad_test_img_ids(raw, tmp_path, capsys, content, message):
    (raw / "test_img_ids.json").write_text(content)
    expect_error(capsys, tmp_path / "out", raw, message)


def test_missing_test_img_ids(raw, tmp_path, capsys):
    os.remove(raw / "test_img_ids.json")
    expect_error(capsys, tmp_path / "out", raw, str(raw / "test_img_ids.json"), "missing test image list")


def test_output_must_not_hold_raw(raw, tmp_path, capsys):
    rc = run_cli("--raw", raw, "--out", tmp_path, "--overwrite", "--quiet")
    assert rc == 1 and "would replace the folder holding the input" in capsys.readouterr().err
    assert (raw / "test_img_ids.json").exists()
    rc = run_cli("--raw", raw, "--out", raw / "prepared", "--quiet")
    assert rc == 1 and not (raw / "prepared").exists()


def test_bad_arguments(raw, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli("--raw", raw, "--out", tmp_path / "o", "--ratio", "1.5")
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        run_cli("--raw", raw, "--out", tmp_path / "o", "--format", "bitmask")
    assert not (tmp_path / "o").exists()
