# -*- coding: utf-8 -*-
"""
segment_cluster's and the slide tools' bad input (issue 27 items 3 and 9): a scheduler file that
never appears, a scheduler that accepts connections but never answers, an address that is not one,
a weights folder, a manifest mpp of inf or nan, tiles too small for a run: one line and exit status
2 within the bounded wait (--connect-timeout), nothing written; Ctrl-C one line and 130.
"""
import os
import select
import signal
import socket

import numpy as np
import pytest
from PIL import Image

from test_failures import DEMO, ROOT, _expect_error, _interrupt, _run_cli_cases, _save_demo_weights, _tree

SLIDES = os.path.join(ROOT, "tools", "segment_slides.py")
CLUSTER = os.path.join(ROOT, "tools", "segment_cluster.py")


class _SilentScheduler:
    """A TCP server that accepts connections (the kernel's backlog) and never answers."""

    def __enter__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        return self

    @property
    def address(self):
        return f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"

    def connected(self):
        """Whether a client has connected (a connection waits in the backlog)."""
        return bool(select.select([self.sock], [], [], 0)[0])

    def __exit__(self, *exc):
        self.sock.close()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return _save_demo_weights(tmp_path_factory.mktemp("weights") / "demo.pth")


def test_cluster_and_slide_tools_bad_input(weights, tmp_path):
    slides = tmp_path / "slides"
    slides.mkdir()
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(slides / "s.png")
    manifests = {}
    for name, mpp in (("inf", "inf"), ("nan", "nan")):
        manifests[name] = tmp_path / f"{name}.csv"
        manifests[name].write_text(f"path,mpp\n{slides / 's.png'},{mpp}\n")
    not_a_scheduler_file = tmp_path / "scheduler.json"
    not_a_scheduler_file.write_text("[1, 2]")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    before = _tree(tmp_path)
    out = tmp_path / "out"

    def run(tool, *extra, inputs=(slides,), w=weights):
        return (tool, ["--config-file", DEMO, "--weights", w, *inputs, "--out", out, "--device", "cpu", "--mpp",
                       "0.25", "--quiet", *extra])

    with _SilentScheduler() as silent:
        cases = [
            ("segment_cluster", run(CLUSTER, "--scheduler", silent.address, "--connect-timeout", "2"),
             [silent.address, "no Dask scheduler answered within 2 s", "--connect-timeout"]),
            ("segment_cluster", run(CLUSTER, "--scheduler-file", tmp_path / "no" / "such.json", "--connect-timeout", "1"),
             [str(tmp_path / "no" / "such.json"), "no such file after 1 s"]),
            ("segment_cluster", run(CLUSTER, "--scheduler-file", not_a_scheduler_file),
             [str(not_a_scheduler_file), "not a Dask scheduler file"]),
            ("segment_cluster", run(CLUSTER, "--scheduler", "not an address"), ["not a Dask scheduler address"]),
            ("segment_cluster", run(CLUSTER, "--scheduler", "foo://head:8786"), ["unknown address scheme 'foo'"]),
            ("segment_cluster", run(CLUSTER, "--scheduler", silent.address, "--connect-timeout", "nan"),
             ["--connect-timeout must be a finite number > 0, got nan"]),
            ("segment_cluster", run(CLUSTER, "--workers", "1", w=str(folder)), [str(folder), "is a folder"]),
            ("segment_cluster", run(CLUSTER, "--workers", "1", inputs=(manifests["inf"],)),
             [str(manifests["inf"]) + ":2", "mpp must be a finite number > 0, got 'inf'"]),
            ("segment_cluster", run(CLUSTER, "--workers", "1", inputs=(manifests["nan"],)),
             [str(manifests["nan"]) + ":2", "got 'nan'"]),
            ("segment_cluster", run(CLUSTER, "--workers", "1", "--tile-size", "8"),
             ["SLIDE.TILE_SIZE (--tile-size) must be at least 192 px", "got 8"]),
            ("segment_slides", run(SLIDES, "--tile-size", "8"), ["SLIDE.TILE_SIZE (--tile-size)", "got 8"]),
            ("segment_slides", run(SLIDES, "--tile-size", "256", "--overlap", "100"),
             ["must be at least 264 px", "SLIDE.OVERLAP (--overlap) 100"]),
            ("segment_slides", run(SLIDES, "--overlap", "-1"), ["SLIDE.OVERLAP (--overlap) must be >= 0"]),
            ("segment_slides", run(SLIDES, "--batch-size", "0"), ["SLIDE.BATCH_SIZE (--batch-size) must be >= 1"]),
            ("segment_slides", run(SLIDES, "--opts", "SLIDE.TILE_SIZE", "100"), ["SLIDE.TILE_SIZE", "got 100"]),
        ]
        # Before the fix the first two waited forever: the whole batch is bounded.
        results = _run_cli_cases([c for _, c, _ in cases], timeout=400)
    for (prog, (_, argv), fragments), result in zip(cases, results):
        try:
            _expect_error(result, prog, *fragments, rc=2)
        except AssertionError as e:
            raise AssertionError(f"{prog} {' '.join(map(str, argv[-4:]))}: {e}") from None
    assert not out.exists()
    assert _tree(tmp_path) == before


def test_cluster_ctrl_c_is_one_line(weights, tmp_path):
    """Ctrl-C while segment_cluster waits for its scheduler: one line, exit status 130."""
    slides = tmp_path / "slides"
    slides.mkdir()
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(slides / "s.png")
    with _SilentScheduler() as silent:
        rc, err = _interrupt([CLUSTER, "--config-file", DEMO, "--weights", weights, slides, "--out", tmp_path / "out",
                              "--device", "cpu", "--mpp", "0.25", "--quiet", "--scheduler", silent.address,
                              "--connect-timeout", "300"], silent.connected)
    assert rc == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("segment_cluster: interrupted (Ctrl-C)"), err[-500:]
    assert not (tmp_path / "out").exists()


def test_prepare_and_freeze_ctrl_c_is_one_line(weights, synthetic_prepared, tmp_path):
    """Ctrl-C in prepare_data (during the mask conversion, worker processes included) and in
    freeze_group_norm (while its weights download waits): one line, exit status 130, no traceback
    from the tool or its workers, nothing written."""
    import subprocess
    import sys
    import time

    from d2_nucleus.data.synthetic import generate_dataset

    from test_failures import PREPARE, terminal_sigint

    raw = tmp_path / "raw"
    generate_dataset(str(raw), num_train=12, num_test=1, image_size=512, nuclei_per_image=(250, 300), seed=0)
    log = tmp_path / "prepare.log"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, PREPARE, "--raw", raw, "--out", tmp_path / "prepared", "--workers",
                                 "2"], stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=ROOT,
                                start_new_session=True, preexec_fn=terminal_sigint)  # as in a terminal
        try:
            deadline = time.time() + 300
            while "training images" not in log.read_text() and time.time() < deadline:  # converting now
                assert proc.poll() is None, log.read_text()[-3000:]
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the tool and its worker processes get it
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert rc == 130 and "Traceback" not in text, text[-3000:]
    assert text.strip().splitlines()[-1].startswith("prepare_data: interrupted (Ctrl-C)"), text[-500:]
    assert sorted(os.listdir(tmp_path)) == ["prepare.log", "raw"]  # no layout, no temporary folder

    with _SilentScheduler() as silent:  # any TCP server that never answers: here the weights' URL
        url = "http" + silent.address[3:] + "/model_final.pth"
        rc, err = _interrupt([os.path.join(ROOT, "tools", "freeze_group_norm.py"), "--config-file", DEMO,
                              "--weights", url, "--data-root", synthetic_prepared, "--output", tmp_path / "f.pth",
                              "--device", "cpu", "--quiet", "MODEL.WEIGHTS_DOWNLOAD_TIMEOUT", "300.0"], silent.connected)
    assert rc == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("freeze_group_norm: interrupted (Ctrl-C)"), err[-500:]
    assert not (tmp_path / "f.pth").exists()
