"""
Each CLI's failure cases run as a user would run them (issue 11): the script as ``__main__`` with
its command line, checked for the exit status, one error line naming the file, no traceback, no
file left behind.

Every CLI start imports torch and Detectron2 (~3-5 s), so the cases of a test run one after the
other in ONE fresh interpreter (``_run_cli_cases``: ``runpy.run_path(script, run_name="__main__")``
per case, stderr captured per case) instead of one interpreter each.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from PIL import Image
from weights import save_untrained_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(ROOT, "tools", "train_net.py")
PREDICT = os.path.join(ROOT, "tools", "predict.py")
PREPARE = os.path.join(ROOT, "tools", "prepare_data.py")
DEMO = os.path.join(ROOT, "configs", "demo", "mask_rcnn_R_18_FPN_demo.yaml")
# A few-second CPU run of the demo model
SMALL = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "SOLVER.MAX_ITER", "1", "INPUT.CROP.SIZE", "[128, 128]", "INPUT.MIN_SIZE_TRAIN", "(128,)",
         "SOLVER.IMS_PER_BATCH", "1", "SOLVER.WARMUP_ITERS", "1", "DATALOADER.NUM_WORKERS", "0",
         "MODEL.RPN.POST_NMS_TOPK_TRAIN", "200", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
         "TEST.DETECTIONS_PER_IMAGE", "50"]

_RUNNER = textwrap.dedent(
    """
    import contextlib, io, json, runpy, sys, traceback
    results = []
    for script, argv in json.loads(sys.argv[1]):
        err, out = io.StringIO(), io.StringIO()
        sys.argv = [script] + argv
        rc = 0
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                runpy.run_path(script, run_name="__main__")
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                traceback.print_exc()
                rc = 99
        results.append({"rc": rc, "stderr": err.getvalue(), "stdout": out.getvalue()})
    print("@@RESULTS@@" + json.dumps(results))
    """
)


def _run_cli_cases(cases, cwd=None, timeout=300):
    """[(script, [args...]), ...] -> [{"rc", "stderr", "stdout"}, ...], all in one fresh interpreter."""
    cases = [(script, [str(a) for a in argv]) for script, argv in cases]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(cases)], capture_output=True, text=True,
                       cwd=cwd or ROOT, env=env, timeout=timeout)
    assert "@@RESULTS@@" in r.stdout, r.stderr[-3000:]
    return json.loads(r.stdout.split("@@RESULTS@@", 1)[1])


def _expect_error(result, prog, *fragments, rc=None):
    """Non-zero exit, no traceback, exactly one '<prog>: error:' line, holding every fragment."""
    err = result["stderr"]
    assert result["rc"] != 0 and (rc is None or result["rc"] == rc), (result["rc"], err[-2000:])
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, err[-2000:]
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])
    return lines[0]


def _expect_errors(cases, prog):
    """Run {name: ((script, argv), fragments)} in one interpreter; each must fail with exit status 2."""
    results = _run_cli_cases([c for c, _ in cases.values()])
    for (name, (_, fragments)), result in zip(cases.items(), results):
        try:
            _expect_error(result, prog, *fragments, rc=2)
        except AssertionError as e:
            raise AssertionError(f"case {name!r}: {e}") from None


def _hidden_temps(root):
    return [os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files if ".d2tmp-" in n]


def _dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _save_demo_weights(path, *opts):
    """An (untrained) demo model's weights, with config overrides ``opts`` (another architecture)."""
    from d2_nucleus.config import get_nucleus_cfg

    return save_untrained_weights(get_nucleus_cfg(DEMO, ["MODEL.DEVICE", "cpu"] + list(opts)), path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    good = _save_demo_weights(d / "demo.pth")
    other = _save_demo_weights(d / "other_arch.pth", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RESNETS.DEPTH", "34")
    unrelated = d / "unrelated.pth"
    torch.save({"model": {"foo.weight": torch.zeros(3)}}, unrelated)
    data = open(good, "rb").read()
    truncated = d / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 3])
    random_bytes = d / "random.pth"
    random_bytes.write_bytes(np.random.default_rng(1).bytes(10000))
    return {"good": good, "other": other, "unrelated": str(unrelated), "truncated": str(truncated),
            "random": str(random_bytes)}


def _evil_files(folder, marker):
    """A .pkl that would `touch marker`, a YAML config doing the same, and an innocent config
    whose _BASE_ is that YAML."""
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle

    pkl = folder / "evil.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"w": Evil()}, "__author__": "x"}))
    yml = folder / "evil.yaml"
    yml.write_text(f'_BASE_: "{DEMO}"\nOUTPUT_DIR: !!python/object/apply:os.system ["touch {marker}"]\n')
    base = folder / "innocent.yaml"
    base.write_text('_BASE_: "evil.yaml"\nSOLVER:\n  MAX_ITER: 1\n')
    return str(pkl), str(yml), str(base)


def test_train_net_failures(synthetic_prepared, weights, tmp_path):
    marker = tmp_path / "PWNED"
    evil_pkl, evil_yaml, innocent = _evil_files(tmp_path, marker)
    typo = tmp_path / "typo.yaml"
    typo.write_text(f'_BASE_: "{DEMO}"\nMODEL:\n  RESNETS:\n    DEPHT: 18\n')
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    no_val = tmp_path / "no_val"
    shutil.copytree(synthetic_prepared, no_val)
    os.remove(no_val / "annotations" / "instance_val.json")
    empty_marker, dangling = tmp_path / "empty_marker", tmp_path / "dangling"
    for d, content in ((empty_marker, ""), (dangling, "model_0000999.pth")):
        d.mkdir()
        (d / "last_checkpoint").write_text(content)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "model_final.pth").write_bytes(b"the earlier run's model")

    def out(name):
        return str(tmp_path / "runs" / name)

    def train(cfg_file, *extra, data_root=synthetic_prepared):
        return (TRAIN_NET, ["--config-file", cfg_file, "--data-root", data_root] + list(extra))

    cases = {
        "missing config": (train(str(tmp_path / "nope.yaml"), *SMALL, "OUTPUT_DIR", out("a")), ["nope.yaml"]),
        "evil yaml": (train(evil_yaml, *SMALL, "OUTPUT_DIR", out("b")), [evil_yaml, "line 2", "run code"]),
        "evil _BASE_": (train(innocent, *SMALL, "OUTPUT_DIR", out("c")), [evil_yaml]),
        "typo in yaml": (train(str(typo), *SMALL, "OUTPUT_DIR", out("d")), [str(typo), "MODEL.RESNETS.DEPHT"]),
        "typo on cli": (train(DEMO, *SMALL, "MODEL.RESNETS.DEPHT", "18", "OUTPUT_DIR", out("e")),
                        ["command-line", "MODEL.RESNETS.DEPHT"]),
        "odd overrides": (train(DEMO, *SMALL, "OUTPUT_DIR", out("f"), "SOLVER.MAX_ITER"), ["KEY VALUE"]),
        "bad value": (train(DEMO, *SMALL, "SOLVER.MAX_ITER", "many", "OUTPUT_DIR", out("f2")), ["SOLVER.MAX_ITER"]),
        "unwritable OUTPUT_DIR": (train(DEMO, *SMALL, "OUTPUT_DIR", a_file / "out"), [str(a_file), "is a file"]),
        "missing val annotations": (train(DEMO, *SMALL, "OUTPUT_DIR", out("g"), data_root=no_val),
                                    ["instance_val.json", "nucleus_val"]),
        "--resume, mistyped OUTPUT_DIR": (train(DEMO, "--resume", *SMALL, "OUTPUT_DIR", out("typo")),
                                          [out("typo"), "last_checkpoint"]),
        "empty last_checkpoint": (train(DEMO, "--resume", *SMALL, "OUTPUT_DIR", empty_marker),
                                  [str(empty_marker / "last_checkpoint"), "empty"]),
        "dangling last_checkpoint": (train(DEMO, "--resume", *SMALL, "OUTPUT_DIR", dangling),
                                     [str(dangling / "last_checkpoint"), "model_0000999.pth", "does not exist"]),
        "earlier run, no --resume": (train(DEMO, *SMALL, "OUTPUT_DIR", earlier), [str(earlier), "--overwrite"]),
        "truncated .pth": (train(DEMO, *SMALL, "MODEL.WEIGHTS", weights["truncated"], "OUTPUT_DIR", out("h")),
                           [weights["truncated"], "truncated"]),
        "random-bytes .pth": (train(DEMO, *SMALL, "MODEL.WEIGHTS", weights["random"], "OUTPUT_DIR", out("i")),
                              [weights["random"], "not a readable PyTorch checkpoint"]),
        "evil .pkl": (train(DEMO, *SMALL, "MODEL.WEIGHTS", evil_pkl, "OUTPUT_DIR", out("j")),
                      [evil_pkl, "refusing to unpickle"]),
        "other architecture (fine-tuning)": (
            train(DEMO, *SMALL, "MODEL.WEIGHTS", weights["other"], "OUTPUT_DIR", out("k")),
            [weights["other"], "do not fit", "other shapes"]),
        "no matching key (fine-tuning)": (
            train(DEMO, *SMALL, "MODEL.WEIGHTS", weights["unrelated"], "OUTPUT_DIR", out("l")),
            [weights["unrelated"], "none of the model's"]),
        "--eval-only, other architecture": (
            train(DEMO, "--eval-only", *SMALL, "MODEL.WEIGHTS", weights["other"], "OUTPUT_DIR", out("m")),
            [weights["other"], "do not fit"]),
        "--eval-only, no matching key": (
            train(DEMO, "--eval-only", *SMALL, "MODEL.WEIGHTS", weights["unrelated"], "OUTPUT_DIR", out("n")),
            [weights["unrelated"], "none of the model's"]),
    }
    _expect_errors(cases, "train_net")
    assert not marker.exists(), "an untrusted file ran code"
    # Errors of the input are found before OUTPUT_DIR is created; weights errors before any checkpoint.
    for name in ["a", "b", "c", "d", "e", "f", "f2", "g"]:
        assert not os.path.exists(out(name)), name
    assert not os.path.exists(out("typo"))
    assert (earlier / "model_final.pth").read_bytes() == b"the earlier run's model"
    assert sorted(os.listdir(earlier)) == ["model_final.pth"]
    for name in ["h", "i", "j", "k", "l", "m", "n"]:
        assert not [f for f in os.listdir(out(name)) if f.endswith(".pth")], name


def test_train_net_resume_logs_and_overwrite(synthetic_prepared, tmp_path):
    """A run, its --resume (the package logger shows "Restored optimizer state"), a refused
    re-run without flags, and the --overwrite re-run."""
    out = tmp_path / "run"
    base = ["--config-file", DEMO, "--data-root", synthetic_prepared] + SMALL + [
        "DATASETS.TEST", "()", "SOLVER.CHECKPOINT_PERIOD", "1", "OUTPUT_DIR", out]
    r = _run_cli_cases([
        (TRAIN_NET, base + ["SOLVER.MAX_ITER", "1"]),
        (TRAIN_NET, ["--resume"] + base + ["SOLVER.MAX_ITER", "2"]),
        (TRAIN_NET, base + ["SOLVER.MAX_ITER", "1"]),
        (TRAIN_NET, ["--overwrite"] + base + ["SOLVER.MAX_ITER", "1"]),
    ])
    assert [x["rc"] for x in r[:2]] == [0, 0], r[1]["stderr"][-3000:]
    _expect_error(r[2], "train_net", str(out), "--resume", "--overwrite", rc=2)
    assert r[3]["rc"] == 0, r[3]["stderr"][-3000:]
    log = (out / "log.txt").read_text()
    assert "Restored optimizer state" in log
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"


def _images(folder, n, bad_last=False):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    if bad_last:
        (folder / "zz_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return str(folder)


def test_predict_failures(weights, tmp_path):
    marker = tmp_path / "PWNED"
    evil_pkl, evil_yaml, _ = _evil_files(tmp_path, marker)
    good = _images(tmp_path / "good", 2)
    with_bad = _images(tmp_path / "with_bad", 3, bad_last=True)
    res = tmp_path / "res"

    def predict(w, inp=good, cfg=DEMO, *extra):
        return (PREDICT, ["--config-file", cfg, "--weights", w, "--input", inp, "--output", res / "answer.json",
                          "--device", "cpu", "--quiet"] + list(extra))

    sides = ["--vis-dir", res / "vis", "--geojson-dir", res / "geojson", "--labels-dir", res / "labels"]
    cases = {
        "evil .pkl": (predict(evil_pkl), [evil_pkl, "refusing to unpickle"]),
        "evil yaml": (predict(weights["good"], good, evil_yaml), [evil_yaml, "run code"]),
        "other architecture": (predict(weights["other"]), [weights["other"], "do not fit"]),
        "no matching key": (predict(weights["unrelated"]), [weights["unrelated"], "none of the model's"]),
        "truncated .pth": (predict(weights["truncated"]), [weights["truncated"], "truncated"]),
        "typo override": (predict(weights["good"], good, DEMO, "MODEL.RESNETS.DEPHT", "3"), ["MODEL.RESNETS.DEPHT"]),
        "bad image after good ones": (predict(weights["good"], with_bad, DEMO, *sides), ["zz_bad.png"]),
    }
    _expect_errors(cases, "predict")
    assert not marker.exists(), "an untrusted file ran code"
    assert not os.path.exists(res), os.listdir(res)  # not one file, not even a folder


def _tree(root):
    """{relative path: bytes} of every file under root (what is on disk)."""
    out = {}
    for d, _, files in os.walk(root):
        for n in files:
            path = os.path.join(d, n)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def test_config_errors_in_every_cli(synthetic_prepared, weights, tmp_path):
    """A _BASE_ cycle, an empty config, a list at the top level and a YAML alias bomb: one line
    naming the file and exit status 2 from every CLI, before anything is written (issue 27)."""
    from test_config_files import alias_bomb

    cfgs = tmp_path / "cfgs"
    cfgs.mkdir()
    (cfgs / "a.yaml").write_text("_BASE_: b.yaml\n")
    (cfgs / "b.yaml").write_text("_BASE_: a.yaml\n")
    (cfgs / "empty.yaml").write_text("")
    (cfgs / "list.yaml").write_text("- MODEL\n")
    (cfgs / "bomb.yaml").write_text(alias_bomb())
    images = _images(tmp_path / "images", 1)
    slides = tmp_path / "slides"
    slides.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(slides / "s.png")
    before = _tree(tmp_path)
    out = tmp_path / "out"
    tools = {
        "train_net": lambda c: (TRAIN_NET, ["--config-file", c, "--data-root", synthetic_prepared, *SMALL,
                                            "OUTPUT_DIR", out / "train"]),
        "predict": lambda c: (PREDICT, ["--config-file", c, "--weights", weights["good"], "--input", images,
                                        "--output", out / "answer.json", "--device", "cpu", "--quiet"]),
        "segment_slides": lambda c: (os.path.join(ROOT, "tools", "segment_slides.py"),
                                     ["--config-file", c, "--weights", weights["good"], slides, "--out", out / "slides",
                                      "--device", "cpu", "--mpp", "0.25", "--quiet"]),
        "segment_cluster": lambda c: (os.path.join(ROOT, "tools", "segment_cluster.py"),
                                      ["--config-file", c, "--weights", weights["good"], slides, "--out", out / "cluster",
                                       "--device", "cpu", "--mpp", "0.25", "--quiet", "--workers", "1"]),
        "freeze_group_norm": lambda c: (os.path.join(ROOT, "tools", "freeze_group_norm.py"),
                                        ["--config-file", c, "--weights", weights["good"], "--output", out / "f.pth",
                                         "--data-root", synthetic_prepared, "--device", "cpu", "--quiet"]),
    }
    cases = []
    for prog, command in tools.items():
        cases.append((prog, command(cfgs / "a.yaml"), ["_BASE_ cycle", str(cfgs / "a.yaml"), "b.yaml"]))
    for prog in ("train_net", "predict"):
        cases += [(prog, tools[prog](cfgs / "empty.yaml"), [str(cfgs / "empty.yaml"), "empty config file"]),
                  (prog, tools[prog](cfgs / "list.yaml"), [str(cfgs / "list.yaml"), "top level is a list"]),
                  (prog, tools[prog](cfgs / "bomb.yaml"), [str(cfgs / "bomb.yaml"), "alias"])]
    results = _run_cli_cases([c for _, c, _ in cases], timeout=600)
    for (prog, (_, argv), fragments), result in zip(cases, results):
        try:
            _expect_error(result, prog, *fragments, rc=2)
        except AssertionError as e:
            raise AssertionError(f"{prog} {argv[1]}: {e}") from None
    assert not out.exists()
    assert _tree(tmp_path) == before  # configs, images, weights untouched; nothing written


SLIDES = os.path.join(ROOT, "tools", "segment_slides.py")
CLUSTER = os.path.join(ROOT, "tools", "segment_cluster.py")


def test_bad_values_weights_and_bombs_in_every_cli(synthetic_prepared, weights, tmp_path):
    """--mpp / --model-mpp NaN, inf or negative, a folder as weights, impossible solver values, a
    weights URL whose server never answers, a decompression bomb: one line and exit status 2 from
    each CLI concerned, nothing written, inputs unchanged (issue 27)."""
    from test_image_io import png_bomb
    from test_security import _SilentServer

    images = _images(tmp_path / "images", 1)
    bombs = tmp_path / "bombs"
    bombs.mkdir()
    png_bomb(bombs / "bomb.png", 20_000, 20_000)
    slides = tmp_path / "slides"
    slides.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(slides / "s.png")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    before = _tree(tmp_path)
    out = tmp_path / "out"

    def predict(*extra, w=weights["good"], inp=images):
        return (PREDICT, ["--config-file", DEMO, "--weights", w, "--input", inp, "--output", out / "answer.json",
                          "--device", "cpu", "--quiet", *extra])

    def slide(tool, *extra, w=weights["good"]):
        return (tool, ["--config-file", DEMO, "--weights", w, slides, "--out", out / "slides", "--device", "cpu",
                       "--quiet", *extra] + (["--workers", "1"] if tool == CLUSTER else []))

    def train(*extra):
        return (TRAIN_NET, ["--config-file", DEMO, "--data-root", synthetic_prepared, *SMALL, *extra,
                            "OUTPUT_DIR", out / "train"])

    with _SilentServer() as url:
        cases = [
            ("predict", predict("--measurements", out / "m", "--mpp", "nan"), ["--mpp", "nan"]),
            ("predict", predict("--measurements", out / "m", "--mpp", "inf"), ["--mpp", "inf"]),
            ("predict", predict("--measurements", out / "m", "--mpp", "-0.25"), ["--mpp", "-0.25"]),
            ("segment_slides", slide(SLIDES, "--mpp", "nan"), ["--mpp", "nan"]),
            ("segment_slides", slide(SLIDES, "--mpp", "0.25", "--model-mpp", "inf"), ["--model-mpp", "inf"]),
            ("segment_cluster", slide(CLUSTER, "--mpp", "-1"), ["--mpp", "-1"]),
            ("predict", predict(w=str(folder)), [str(folder), "is a folder"]),
            ("segment_slides", slide(SLIDES, "--mpp", "0.25", w=str(folder)), [str(folder), "is a folder"]),
            ("train_net", train("MODEL.WEIGHTS", folder), [str(folder), "is a folder"]),
            ("train_net", train("SOLVER.IMS_PER_BATCH", "0"), ["SOLVER.IMS_PER_BATCH must be an integer >= 1, got 0"]),
            ("train_net", train("SOLVER.MAX_ITER", "0"), ["SOLVER.MAX_ITER"]),
            ("predict", predict("MODEL.PIXEL_SIZE_UM", "-1.0"), ["MODEL.PIXEL_SIZE_UM"]),
            ("predict", predict("MODEL.WEIGHTS_DOWNLOAD_TIMEOUT", "2", w=url), ["decimal point (e.g. 2.0, not 2)"]),
            ("predict", predict("MODEL.WEIGHTS_DOWNLOAD_TIMEOUT", "2.0", w=url), [url, "no answer", "2 s"]),
            ("predict", predict(inp=str(bombs)), ["bomb.png", "20000x20000", "segment_slides"]),
        ]
        results = _run_cli_cases([c for _, c, _ in cases], timeout=900)
    for (prog, (_, argv), fragments), result in zip(cases, results):
        try:
            _expect_error(result, prog, *fragments, rc=2)
        except AssertionError as e:
            raise AssertionError(f"{prog} {' '.join(map(str, argv[-6:]))}: {e}") from None
    assert not out.exists()
    assert _tree(tmp_path) == before


def _wait_for(predicate, timeout, proc):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the run to start working")


def terminal_sigint():
    """Popen preexec_fn: SIGINT as a terminal's command gets it (default, unblocked). A test run
    started in the background by a non-interactive shell (``make test &``) inherits SIGINT
    ignored, and Python then installs no KeyboardInterrupt handler: the Ctrl-C tests would wait."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _interrupt(argv, started, timeout=300):
    """Start a CLI, wait until ``started()``, send SIGINT (Ctrl-C); returns (rc, stderr)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable] + [str(a) for a in argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, preexec_fn=terminal_sigint)
    try:
        _wait_for(started, timeout, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def test_ctrl_c_and_nan_loss_are_one_line(synthetic_prepared, weights, tmp_path):
    """Ctrl-C in predict, segment_slides and train_net: one line, exit status 130, no traceback
    (predict leaves nothing; the others keep what they had finished). A loss that becomes NaN:
    one line naming the iteration, exit status 1 (issue 27)."""
    from d2_nucleus.data.synthetic import render_nuclei_image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(40):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(
            images / f"img{i:02d}.png")
    res = tmp_path / "res"
    rc, err = _interrupt([PREDICT, "--config-file", DEMO, "--weights", weights["good"], "--input", images,
                          "--output", res / "answer.json", "--vis-dir", res / "vis", "--device", "cpu", "--quiet"],
                         lambda: bool(_hidden_temps(res)))
    assert rc == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("predict: interrupted (Ctrl-C)"), err[-500:]
    assert not os.path.exists(res) or not [f for _, _, fs in os.walk(res) for f in fs]  # nothing written

    slide, _ = render_nuclei_image(np.random.default_rng(0), 1536, 1536, 1500)
    slides = tmp_path / "slides"
    slides.mkdir()
    Image.fromarray(slide).save(slides / "big.png")
    out = tmp_path / "slides_out"
    work = out / ".big.work" / "tiles"
    rc, err = _interrupt([SLIDES, "--config-file", DEMO, "--weights", weights["good"], slides, "--out", out,
                          "--mpp", "0.25", "--device", "cpu", "--quiet", "--tile-size", "256", "--no-tissue-mask"],
                         lambda: work.is_dir() and len(os.listdir(work)) >= 1)
    assert rc == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("segment_slides: interrupted (Ctrl-C)"), err[-500:]

    train_out = tmp_path / "train"
    log = train_out / "log.txt"
    rc, err = _interrupt([TRAIN_NET, "--config-file", DEMO, "--data-root", synthetic_prepared, *SMALL,
                          "SOLVER.MAX_ITER", "100000", "OUTPUT_DIR", train_out],
                         lambda: log.is_file() and "Starting training" in log.read_text())
    assert rc == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("train_net: interrupted (Ctrl-C)"), err[-500:]

    r = _run_cli_cases([(TRAIN_NET, ["--config-file", DEMO, "--data-root", synthetic_prepared, *SMALL,
                                     "SOLVER.MAX_ITER", "20", "SOLVER.BASE_LR", "1e30", "SOLVER.WARMUP_ITERS", "0",
                                     "OUTPUT_DIR", tmp_path / "nan"])])[0]
    line = _expect_error(r, "train_net", "NaN or infinite at iteration", rc=1)
    assert "Exception during training" not in r["stderr"] + r["stdout"]
    print(line)


def test_disk_full_names_the_file(weights, tmp_path):
    """A write that fails for lack of space (here: RLIMIT_FSIZE, EFBIG, as ENOSPC would) names the
    output, exit status 2, nothing left behind (issue 27)."""
    import resource

    images = _images(tmp_path / "images", 2)
    res = tmp_path / "res"

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write beyond the limit fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([sys.executable, PREDICT, "--config-file", DEMO, "--weights", weights["good"], "--input",
                        images, "--output", res / "answer.json", "--vis-dir", res / "vis", "--device", "cpu", "--quiet"],
                       capture_output=True, text=True, env=env, preexec_fn=small_files, timeout=600)
    result = {"rc": r.returncode, "stderr": r.stderr}
    line = _expect_error(result, "predict", str(res), "File too large", rc=2)
    assert "nothing was written" in line
    assert not os.path.exists(res) or not [f for _, _, fs in os.walk(res) for f in fs]


def test_predict_after_kill_is_not_blocked_by_temp_files(weights, tmp_path):
    """What a kill -9 leaves (hidden temp files of a dead process) is removed by the next run;
    temp files of a live process are left alone."""
    good = _images(tmp_path / "good", 2)
    res = tmp_path / "res"
    (res / "vis").mkdir(parents=True)
    dead = _dead_pid()
    stale = [res / f".answer.json.d2tmp-{dead}-abc123.tmp", res / "vis" / f".img0.png.d2tmp-{dead}-x_y.tmp"]
    live = res / f".answer.json.d2tmp-{os.getpid()}-live.tmp"
    for p in stale + [live]:
        p.write_bytes(b"partial")
    r = _run_cli_cases([(PREDICT, ["--config-file", DEMO, "--weights", weights["good"], "--input", good,
                                   "--output", res / "answer.json", "--vis-dir", res / "vis", "--device", "cpu",
                                   "--quiet"])])[0]
    assert r["rc"] == 0, r["stderr"][-3000:]
    assert json.loads((res / "answer.json").read_text()) is not None
    assert sorted(os.listdir(res / "vis")) == ["img0.png", "img1.png"]
    assert not any(p.exists() for p in stale) and live.exists()


def test_prepare_data_failures(synthetic_raw, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    user_dir = tmp_path / "user"
    user_dir.mkdir()
    (user_dir / "thesis.txt").write_text("my thesis")
    stale_parent = tmp_path / "stale"
    stale_parent.mkdir()
    dead = _dead_pid()
    stale_tmp = stale_parent / f".prepared.d2tmp-{dead}-abcd.tmp"
    (stale_tmp / "annotations").mkdir(parents=True)
    cases = [
        (PREPARE, ["--raw", synthetic_raw, "--out", tmp_path / "o1", "--workers", "0"]),
        (PREPARE, ["--raw", synthetic_raw, "--out", tmp_path / "o2", "--workers", "-3"]),
        (PREPARE, ["--raw", synthetic_raw, "--out", a_file / "out"]),  # progress on: nothing converted
        (PREPARE, ["convert", "--raw", synthetic_raw, "--out", a_file / "x.json"]),
        (PREPARE, ["--raw", synthetic_raw, "--out", ".", "--overwrite", "--quiet"]),  # run in user_dir
        (PREPARE, ["--raw", synthetic_raw, "--out", stale_parent / "prepared", "--workers", "2", "--quiet"]),
    ]
    r = _run_cli_cases(cases[:4]) + _run_cli_cases(cases[4:], cwd=user_dir)
    _expect_error(r[0], "prepare_data.py", "--workers", "must be at least 1", rc=2)
    _expect_error(r[1], "prepare_data.py", "--workers", "must be at least 1", rc=2)
    _expect_error(r[2], "prepare_data", str(a_file), "is a file", rc=1)
    assert "masks->COCO" not in r[2]["stderr"], "checked before converting"
    _expect_error(r[3], "prepare_data", str(a_file), rc=1)
    _expect_error(r[4], "prepare_data", "thesis.txt", "--overwrite replaces only", rc=1)
    assert os.listdir(user_dir) == ["thesis.txt"] and (user_dir / "thesis.txt").read_text() == "my thesis"
    assert not os.path.exists(tmp_path / "o1") and not os.path.exists(tmp_path / "o2")
    assert r[5]["rc"] == 0, r[5]["stderr"][-2000:]
    assert sorted(os.listdir(stale_parent)) == ["prepared"], "the killed run's temp folder is removed"
    assert not _hidden_temps(tmp_path)


_POOL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from d2_nucleus.data.mask2coco import worker_pool
    pool = worker_pool(2)
    futures = [pool.submit(time.sleep, 120) for _ in range(2)]
    time.sleep(1.0)
    print(" ".join(str(p) for p in pool._processes), flush=True)
    time.sleep(120)
    """
)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_prepare_data_workers_die_with_a_killed_parent():
    """kill -9 of prepare_data leaves no orphan conversion workers (the pool of masks_to_coco)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-c", _POOL_SCRIPT], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        orphans = [p for p in pids if _alive(p)]
        for p in orphans:  # do not leave them running if the test fails
            os.kill(p, signal.SIGKILL)
        assert not orphans, "workers outlived their killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
