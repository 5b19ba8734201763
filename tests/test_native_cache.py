# -*- coding: utf-8 -*-
"""
The C++ kernels' build cache (d2_nucleus/modeling/cpu/native.py, issue 27): one folder per environment
(sources by content, flags, torch and its location/include paths, Python, compiler, CPU model and
flags), and processes building at once build once, into a temporary folder renamed into place.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from d2_nucleus.modeling.cpu import native

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(bool(os.environ.get("D2_NUCLEUS_NO_NATIVE")), reason="D2_NUCLEUS_NO_NATIVE set")


def test_build_folder_is_keyed_by_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("D2_NUCLEUS_NATIVE_CACHE", str(tmp_path))
    here = native.build_dir()
    assert os.path.dirname(here) == str(tmp_path) and native.build_dir() == here  # deterministic
    inputs = "\n".join(native.build_inputs())
    for what in ("torch location", "include ", "python ", "compiler ", "cpu ", "cflags "):
        assert what in inputs, what
    cpp = native._cpp_extension()
    changes = {
        "another venv's python": lambda m: m.setattr(sys, "executable", "/elsewhere/venv/bin/python"),
        "another torch install": lambda m: m.setattr(cpp, "include_paths", lambda *a, **k: ["/elsewhere/torch/include"]),
        "another compiler": lambda m: m.setattr(native, "_compiler_version", lambda c: ["/usr/bin/clang++", "clang 18"]),
        "a CPU without AVX-512": lambda m: m.setattr(native, "_cpu", lambda: ["AMD EPYC", "avx avx2 fma sse4_2"]),
        "other flags": lambda m: m.setattr(native, "CFLAGS", native.CFLAGS + ["-O2"]),
    }
    seen = {here}
    for name, change in changes.items():
        with monkeypatch.context() as m:
            change(m)
            other = native.build_dir()
        assert other not in seen, name
        seen.add(other)
    assert native.build_dir() == here
    # the sources count by content, not by where the checkout is (worktrees share one build)
    copy = tmp_path / "csrc"
    shutil.copytree(native.CSRC, copy)
    with monkeypatch.context() as m:
        m.setattr(native, "CSRC", str(copy))
        assert native.build_dir() == here
        (copy / "pairwise_iou.cpp").write_text((copy / "pairwise_iou.cpp").read_text() + "\n// changed\n")
        assert native.build_dir() != here


_BUILDER = textwrap.dedent(
    """
    import json, sys, torch
    from d2_nucleus.modeling.cpu import native
    built = []
    build = native._build
    native._build = lambda *a, **k: (built.append(1), build(*a, **k))
    ops = native.build_native_ops()
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]])
    iou = ops.pairwise_iou(boxes, boxes)
    print("@@" + json.dumps({"built": len(built), "dir": native.build_dir(), "iou": iou[0, 1].item()}))
    """
)


def test_concurrent_builds_build_once_and_both_succeed(tmp_path):
    """Two processes on an empty cache at once: one compiles, the other waits and loads its build;
    the temporary folder of a killed build is removed; nothing half-built is ever loaded."""
    cache = tmp_path / "cache"
    env = dict(os.environ, D2_NUCLEUS_NATIVE_CACHE=str(cache), PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    env.pop("D2_NUCLEUS_NO_NATIVE", None)
    key = os.path.basename(subprocess.run([sys.executable, "-c", "from d2_nucleus.modeling.cpu import native; "
                                           "print(native.build_dir())"], env=env, capture_output=True, text=True,
                                          check=True).stdout.strip())
    cache.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = cache / f".{key}.tmp-{dead.pid}-abc"  # what a build killed with -9 leaves
    (stale / "sub").mkdir(parents=True)
    procs = [subprocess.Popen([sys.executable, "-c", _BUILDER], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=1200)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.split("@@", 1)[1]))
    assert sorted(r["built"] for r in results) == [0, 1]  # one compiled, the other loaded its build
    assert all(r["iou"] == pytest.approx(25 / 175) for r in results)
    assert {r["dir"] for r in results} == {str(cache / key)}
    assert sorted(os.listdir(cache)) == [key, key + ".lock"]  # no temporary folder left, the stale one removed
    files = os.listdir(cache / key)
    assert "d2_nucleus_native.so" in files and "build_inputs.txt" in files
    # a third process loads the build without compiling
    third = subprocess.run([sys.executable, "-c", _BUILDER], env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0 and json.loads(third.stdout.split("@@", 1)[1])["built"] == 0
