# -*- coding: utf-8 -*-
"""
Config files read safely (d2_nucleus/config/yaml_io.py, issue 27): _BASE_ cycles, empty files, a top
level that is not a mapping, YAML alias bombs and recursive aliases are one-line ConfigErrors naming
the file, found before anything is expanded; every shipped config loads as Detectron2 loads it.
"""
import glob
import os
import time

import pytest

from d2_nucleus.config import ConfigError, get_nucleus_cfg, merge_config_file
from d2_nucleus.config.yaml_io import MAX_CONFIG_BYTES, load_config_yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "configs", "demo", "mask_rcnn_R_18_FPN_demo.yaml")


def _error(path) -> str:
    with pytest.raises(ConfigError) as e:
        get_nucleus_cfg(str(path))
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 500, msg
    return msg


def alias_bomb(levels: int = 9, width: int = 10) -> str:
    """~440 bytes of YAML whose SOLVER.STEPS expands to width ** levels (10^9) values."""
    names = "abcdefghijklmnopqrstuvwxyz"[:levels]
    lines = ["SOLVER:", "  STEPS:", "  - &a [" + ", ".join(["0"] * width) + "]"]
    for prev, cur in zip(names, names[1:]):
        lines.append(f"  - &{cur} [" + ", ".join([f"*{prev}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_base_cycles_name_the_files(tmp_path):
    a, b, c = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    a.write_text("_BASE_: b.yaml\nSOLVER:\n  MAX_ITER: 3\n")
    b.write_text("_BASE_: [c.yaml]\n")
    c.write_text("_BASE_: ./a.yaml\n")
    msg = _error(a)
    assert "_BASE_ cycle" in msg and "a.yaml -> " in msg and "b.yaml" in msg and "c.yaml" in msg, msg
    selfish = tmp_path / "self.yaml"
    selfish.write_text(f"_BASE_: {selfish}\n")
    assert "_BASE_ cycle" in _error(selfish)
    # a diamond (two bases sharing one) is not a cycle
    (tmp_path / "x.yaml").write_text(f"_BASE_: {DEMO}\nSOLVER:\n  MAX_ITER: 7\n")
    (tmp_path / "y.yaml").write_text(f"_BASE_: {DEMO}\nSOLVER:\n  BASE_LR: 0.5\n")
    (tmp_path / "d.yaml").write_text("_BASE_: [x.yaml, y.yaml]\n")
    cfg = get_nucleus_cfg(str(tmp_path / "d.yaml"))
    assert cfg.SOLVER.BASE_LR == 0.5 and cfg.SOLVER.MAX_ITER == get_nucleus_cfg(DEMO).SOLVER.MAX_ITER


def test_empty_and_non_mapping_configs(tmp_path):
    cases = {
        "empty.yaml": ("", "empty config file"),
        "comments.yaml": ("# nothing here\n\n", "empty config file"),
        "list.yaml": ("- MODEL\n- SOLVER\n", "top level is a list"),
        "scalar.yaml": ("42\n", "top level is a int"),
        "string.yaml": ("just words\n", "top level is a str"),
        "base_type.yaml": ("_BASE_: {a: 1}\n", "_BASE_ must be a file name"),
        "url_base.yaml": ("_BASE_: https://example.invalid/x.yaml\n", "is a URL"),
        "missing_base.yaml": ("_BASE_: nowhere.yaml\n", "does not exist"),
        "base_conflict.yaml": (f"_BASE_: {DEMO}\nSOLVER: 3\n", "SOLVER"),
    }
    for name, (text, fragment) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        msg = _error(path)
        assert str(path) in msg and fragment in msg, (name, msg)
    # an empty file as the _BASE_ of another: the message names the empty one
    (tmp_path / "child.yaml").write_text("_BASE_: empty.yaml\n")
    assert str(tmp_path / "empty.yaml") in _error(tmp_path / "child.yaml")


def test_alias_bomb_is_refused_before_expansion(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    assert bomb.stat().st_size < 600
    t = time.perf_counter()
    msg = _error(bomb)
    assert time.perf_counter() - t < 5
    assert str(bomb) in msg and "alias" in msg, msg
    # as the _BASE_ of an innocent config too
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: bomb.yaml\n")
    assert str(bomb) in _error(child)
    recursive = tmp_path / "recursive.yaml"
    recursive.write_text("SOLVER:\n  STEPS: &a [1, *a]\n")
    assert "refers to itself" in _error(recursive)
    # a few shared values are fine
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"_BASE_: {DEMO}\nSOLVER:\n  STEPS: &s [10, 20]\nTEST:\n  AUG:\n    SCALES: [1.0]\n")
    assert tuple(get_nucleus_cfg(str(ok)).SOLVER.STEPS) == (10, 20)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_CONFIG_BYTES + "\n")
    assert "bytes" in _error(big)
    deep = tmp_path / "deep.yaml"
    deep.write_text("SOLVER:\n  STEPS: " + "[" * 5000 + "]" * 5000 + "\n")
    assert str(deep) in _error(deep)


def test_shipped_configs_load_as_detectron2_loads_them():
    """The safe loader gives every config in configs/ exactly what Detectron2's merge_from_file gives."""
    from detectron2.config import get_cfg

    from d2_nucleus.config import add_all_config

    def base():
        return add_all_config(get_cfg())

    files = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))
    assert len(files) >= 10
    for path in files:
        ours, theirs = base(), base()
        merge_config_file(ours, path)
        theirs.merge_from_file(path, allow_unsafe=False)
        assert ours.dump() == theirs.dump(), path
        assert "_BASE_" not in load_config_yaml(path)
