# -*- coding: utf-8 -*-
"""
The package import stays light: data preparation (tools/prepare_data.py and its worker processes)
and every CLI's --help run without importing torch or Detectron2.
"""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("torch", "detectron2")


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)


_REPORT = "import sys; print('HEAVY', sorted(m for m in {heavy!r} if m in sys.modules))".format(heavy=HEAVY)


def _heavy(stdout: str):
    line = [ln for ln in stdout.splitlines() if ln.startswith("HEAVY ")][-1]
    return line[len("HEAVY "):]


def test_package_and_light_modules_import_without_torch():
    code = (
        "import d2_nucleus, d2_nucleus.data, d2_nucleus.export, d2_nucleus.evaluation\n"
        "import d2_nucleus.utils.rle, d2_nucleus.utils.label_map, d2_nucleus.utils.file_io\n"
        "import d2_nucleus.data.prepare, d2_nucleus.data.mask2coco, d2_nucleus.data.synthetic\n"
        "import d2_nucleus.data.layout, d2_nucleus.data.raw, d2_nucleus.evaluation.nucleus_metrics\n"
        "import d2_nucleus.data.importing, d2_nucleus.data.importers, d2_nucleus.data.rasterize\n"
        "import d2_nucleus.export.geojson, d2_nucleus.export.label_maps, d2_nucleus.export.overlay\n"
        "assert d2_nucleus.__version__\n" + _REPORT
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert _heavy(r.stdout) == "[]", r.stdout


def test_lazy_names_still_resolve():
    r = _run("import d2_nucleus, d2_nucleus.engine as e, d2_nucleus.export as x\n"
             "assert d2_nucleus.NucleusTrainer.__name__ == 'NucleusTrainer'\n"
             "assert callable(d2_nucleus.get_nucleus_cfg) and callable(e.run_prediction)\n"
             "assert callable(e.list_inputs) and e.NucleusPredictor and callable(x.write_answer)\n"
             "from detectron2.modeling import META_ARCH_REGISTRY\n"
             "assert 'NucleusRCNN' in META_ARCH_REGISTRY  # registered by the import above\n")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("tool,args", [
    ("prepare_data.py", ["--help"]),
    ("prepare_data.py", ["convert", "--help"]),
    ("import_annotations.py", ["--help"]),
    ("predict.py", ["--help"]),
    ("make_synthetic.py", ["--help"]),
    ("install_detectron2.py", ["--help"]),
    ("build_native.py", ["--help"]),
    ("segment_slides.py", ["--help"]),
    ("segment_cluster.py", ["--help"]),
])
def test_cli_help_without_torch(tool, args):
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{tool!r}] + sys.argv[1:]\n"
        "try:\n"
        f"    runpy.run_path({os.path.join(ROOT, 'tools', tool)!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n" + _REPORT
    )
    r = _run(code, *args)
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower()
    assert _heavy(r.stdout) == "[]", f"{tool} --help imported {_heavy(r.stdout)}"


def test_prepare_data_and_its_workers_without_torch(synthetic_raw, tmp_path):
    """A whole tools/prepare_data.py run with 2 worker processes; each worker checks itself."""
    out = str(tmp_path / "prepared")
    code = (
        "import runpy, sys\n"
        "import d2_nucleus.data.mask2coco as m2c\n"
        "_convert = m2c.convert_image\n"
        "def probe(*args, **kwargs):\n"
        f"    heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "    assert not heavy, f'worker imported {heavy}'\n"
        "    return _convert(*args, **kwargs)\n"
        "m2c.convert_image = probe  # what the pool's workers run\n"
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('prepare_cli', {os.path.join(ROOT, 'tools', 'prepare_data.py')!r})\n"
        "cli = importlib.util.module_from_spec(spec); spec.loader.exec_module(cli)\n"
        f"assert cli.main(['--raw', {synthetic_raw!r}, '--out', {out!r}, '--workers', '2', '--quiet']) == 0\n"
        + _REPORT
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert _heavy(r.stdout) == "[]", r.stdout
    assert os.path.isfile(os.path.join(out, "annotations", "instance_all_train.json"))
