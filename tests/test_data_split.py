"""d2_nucleus.data.split: seeded, machine-independent train/val split."""
import json

import pytest

from d2_nucleus.data.split import load_split, split_dict, split_image_ids

IDS = [f"TCGA-{i:02d}" for i in range(24)]


def test_split_sizes_and_partition():
    train, val = split_image_ids(IDS, 0.2, 0)
    assert len(val) == 5 and len(train) == 19  # ceil(0.2 * 24)
    assert sorted(train + val) == sorted(IDS)
    assert train == sorted(train) and val == sorted(val)
    assert split_image_ids(IDS[::-1], 0.2, 0) == (train, val)  # input order does not matter


def test_split_is_a_pure_function_of_ids_ratio_seed():
    # Golden values: SHA-256 based, so any machine and any library version gives these.
    assert split_image_ids(IDS, 0.2, 0)[1] == ["TCGA-00", "TCGA-04", "TCGA-10", "TCGA-14", "TCGA-22"]
    assert split_image_ids(IDS, 0.2, 1)[1] != split_image_ids(IDS, 0.2, 0)[1]
    assert split_image_ids(IDS, 0.2, 7) == split_image_ids(IDS, 0.2, 7)


def test_split_ratio_bounds():
    assert split_image_ids(IDS, 0.0, 0) == (sorted(IDS), [])
    assert len(split_image_ids(IDS, 0.01, 0)[1]) == 1
    assert len(split_image_ids(["a", "b"], 0.5, 0)[1]) == 1
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="ratio"):
            split_image_ids(IDS, bad, 0)
    with pytest.raises(ValueError, match="no training image"):
        split_image_ids(["a"], 0.5, 0)
    with pytest.raises(ValueError, match="duplicate"):
        split_image_ids(["a", "a", "b"], 0.2, 0)


def test_split_dict_and_load(tmp_path):
    d = split_dict(IDS, 0.2, 3)
    assert d["seed"] == 3 and d["ratio"] == 0.2
    path = tmp_path / "split.json"
    path.write_text(json.dumps(d))
    assert load_split(str(path)) == d
    path.write_text(json.dumps({"train": ["a"], "val": ["a"]}))
    with pytest.raises(ValueError, match="both train and val"):
        load_split(str(path))
    path.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_split(str(path))
    with pytest.raises(FileNotFoundError):
        load_split(str(tmp_path / "missing.json"))
