import json
import os

import cv2
import numpy as np
import pytest

from d2_nucleus.data.synthetic import generate_dataset, render_nuclei_image


def _masks(raw, image_id):
    d = os.path.join(raw, "train", image_id, "masks")
    return [cv2.imread(os.path.join(d, f), cv2.IMREAD_UNCHANGED) for f in sorted(os.listdir(d))]


def test_layout_counts_and_masks(tmp_path):
    out = str(tmp_path / "raw")
    s = generate_dataset(out, num_train=2, num_test=3, image_size=(160, 200), nuclei_per_image=70, seed=1)
    assert len(s["train"]) == 2 and len(s["test"]) == 3
    for image_id in s["train"]:
        img = cv2.imread(os.path.join(out, "train", image_id, "images", image_id + ".png"))
        assert img.shape == (160, 200, 3)
        masks = _masks(out, image_id)
        assert len(masks) == s["nuclei"][image_id] == 70
        stack = np.stack(masks)
        assert stack.dtype == np.uint8 and set(np.unique(stack)) <= {0, 255}
        fg = stack > 0
        assert fg.any(axis=(1, 2)).all(), "no empty mask"
        assert fg.sum(axis=0).max() == 1, "masks never overlap"
        for m in fg:  # one connected component each, 8-40 px across
            n, _ = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
            assert n == 2
            ys, xs = np.nonzero(m)
            assert max(np.ptp(ys), np.ptp(xs)) + 1 <= 42
        # some nuclei touch: a dilated mask reaches another nucleus somewhere
        labels = np.argmax(np.concatenate([np.zeros_like(fg[:1]), fg]), axis=0)
        grown = cv2.dilate(labels.astype(np.uint16), np.ones((3, 3), np.uint8))
        assert ((grown != labels) & (labels > 0) & (grown > 0)).any()
    ids = json.load(open(os.path.join(out, "test_img_ids.json")))
    assert [d["id"] for d in ids] == [1, 2, 3]
    for d in ids:
        assert set(d) == {"file_name", "id", "height", "width"}
        assert cv2.imread(os.path.join(out, "test", d["file_name"])).shape == (160, 200, 3)


def test_deterministic_for_a_seed(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    generate_dataset(a, 1, 1, 128, (30, 40), seed=7)
    generate_dataset(b, 1, 1, 128, (30, 40), seed=7)
    generate_dataset(c, 1, 1, 128, (30, 40), seed=8)

    def files(root):
        out = {}
        for dp, _, fs in os.walk(root):
            for f in fs:
                out[os.path.relpath(os.path.join(dp, f), root)] = open(os.path.join(dp, f), "rb").read()
        return out

    assert files(a) == files(b)
    assert files(a) != files(c)


def test_he_like_colours():
    img, labels = render_nuclei_image(np.random.default_rng(0), 128, 128, 40)
    fg, bg = labels > 0, labels == 0
    nuc, tissue = img[fg].mean(axis=0), img[bg].mean(axis=0)
    assert nuc.sum() < tissue.sum()  # nuclei are darker
    assert nuc[2] > nuc[1] and tissue[0] > tissue[1]  # purple-blue nuclei, pink eosin


def test_refuses_impossible_and_existing(tmp_path):
    with pytest.raises(ValueError, match="could only place"):
        render_nuclei_image(np.random.default_rng(0), 32, 32, 500, max_tries=5)
    out = tmp_path / "raw"
    generate_dataset(str(out), 1, 0, 64, 5)
    with pytest.raises(FileExistsError):
        generate_dataset(str(out), 1, 0, 64, 5)
    generate_dataset(str(out), 1, 0, 64, 6, overwrite=True)
    assert len(os.listdir(out / "train" / "synthetic-train-000" / "masks")) == 6
