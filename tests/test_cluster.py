# -*- coding: utf-8 -*-
"""
Many slides on Dask (d2_nucleus/slide/cluster.py, tools/segment_cluster.py): a LocalCluster of 2
worker processes (1 thread each), 4 small synthetic slides and the demo model with random weights.
"""
import contextlib
import os
import signal
import time

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from d2_nucleus.config import get_nucleus_cfg
from d2_nucleus.data.synthetic import render_nuclei_image
from d2_nucleus.data.synthetic_slide import write_synthetic_slide
from d2_nucleus.slide.cluster import model_loads, read_manifest, segment_slides_on_cluster, start_local_cluster
from d2_nucleus.slide.options import slide_cfg_from_args

from tools_cli import load_tool
from weights import save_untrained_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo", "mask_rcnn_R_18_FPN_demo.yaml")
SLIDES = ["s0", "s1", "s2", "s3"]
OMP_AT_IMPORT = os.environ.get("OMP_NUM_THREADS")
OUTPUT_SUFFIXES = (".geojson", ".parquet", ".csv", ".overview.png")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    weights = save_untrained_weights(get_nucleus_cfg(DEMO_CONFIG, ["MODEL.DEVICE", "cpu"]), root / "model.pth")
    slides = root / "slides"
    slides.mkdir()
    rng = np.random.default_rng(0)
    for name in SLIDES:  # tissue on glass: about 6 of 9 tiles of 256 px run
        tissue, _ = render_nuclei_image(rng, 380, 420, 70)
        write_synthetic_slide(str(slides / f"{name}.svs"), 640, 600, [(tissue, 60, 80)], mpp=0.252,
                              min_level_side=100)
    args = ["--config-file", DEMO_CONFIG, "--weights", weights, "--device", "cpu", "--quiet", "--tile-size", "256",
            "--overlap", "32", "--batch-size", "2", "--csv", "--score-thresh", "0.0",
            "--opts", "MODEL.RPN.POST_NMS_TOPK_TEST", "100", "TEST.DETECTIONS_PER_IMAGE", "20"]
    # the single-process reference: tools/segment_slides.py
    ref = root / "ref"
    # With the workers' torch thread count (1): float reductions (GroupNorm, convolutions) split
    # work by thread, so scores differ in the last bit between 1 and 2 threads.
    with _torch_threads(1):
        assert load_tool("segment_slides").main([str(slides), "--out", str(ref)] + args) == 0
    return {"root": root, "slides": slides, "ref": ref, "args": args}


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client

    local = start_local_cluster(2, torch_threads=1, dashboard_address=":0")
    client = Client(local)
    try:
        client.wait_for_workers(2, timeout=120)
        yield local, client
    finally:
        client.close()
        local.close()


@contextlib.contextmanager
def _torch_threads(n):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _assert_same_outputs(ref, out, names=SLIDES):
    for name in names:
        for suffix in (".geojson", ".csv", ".overview.png"):
            with open(ref / f"{name}{suffix}", "rb") as a, open(out / f"{name}{suffix}", "rb") as b:
                assert a.read() == b.read(), f"{name}{suffix}"
        assert pq.read_table(ref / f"{name}.parquet").equals(pq.read_table(out / f"{name}.parquet"))
        import json

        with open(ref / f"{name}.summary.json") as a, open(out / f"{name}.summary.json") as b:
            sa, sb = json.load(a), json.load(b)
        for key in ("nuclei", "tissue_mm2", "tiles_run", "config_sha256", "weights_sha256", "level"):
            assert sa[key] == sb[key], key


def _report(path):
    return {os.path.basename(r["slide"]): r for r in pacsv.read_csv(path).to_pylist()}


def test_cli_equals_single_process_bad_slide_reported_rerun_does_nothing(data, cluster, tmp_path, capsys):
    local, client = cluster
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in SLIDES:
        os.symlink(data["slides"] / f"{name}.svs", slides / f"{name}.svs")
    (slides / "corrupt.svs").write_bytes(b"II*\x00" + b"\x00" * 100)
    out = tmp_path / "out"
    cli = load_tool("segment_cluster")
    argv = [str(slides), "--out", str(out), "--scheduler", local.scheduler_address] + data["args"]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "dashboard:" in captured.out and "4 slide(s) done, 0 already complete, 1 failed" in captured.out
    assert "corrupt.svs" in captured.err
    report = _report(out / "cluster_report.csv")
    assert {k: r["status"] for k, r in report.items()} == {**{f"{n}.svs": "done" for n in SLIDES}, "corrupt.svs": "failed"}
    assert "corrupt.svs" in report["corrupt.svs"]["error"]
    workers = set(client.scheduler_info()["workers"])
    for name in SLIDES:
        row = report[f"{name}.svs"]
        assert row["nuclei"] > 0 and row["tissue_mm2"] > 0 and row["seconds"] > 0 and row["worker"] in workers
    _assert_same_outputs(data["ref"], out)
    assert not any(n.startswith("corrupt") or n.endswith(".work") for n in os.listdir(out))
    # the model was loaded once per worker, not per slide
    loads = client.run(model_loads)
    assert sum(loads.values()) <= 2 and max(loads.values()) == 1

    # the same command again: complete slides are not submitted, nothing is rewritten
    mtimes = {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out) if n != "cluster_report.csv"}
    assert cli.main(argv + ["--report", str(out / "again.parquet")]) == 1
    again = {os.path.basename(r["slide"]): r for r in pq.read_table(out / "again.parquet").to_pylist()}
    for name in SLIDES:
        row = again[f"{name}.svs"]
        assert row["status"] == "exists" and row["worker"] is None
        assert row["nuclei"] == report[f"{name}.svs"]["nuclei"]
    assert again["corrupt.svs"]["status"] == "failed"
    assert {n: os.stat(out / n).st_mtime_ns for n in mtimes} == mtimes
    assert client.run(model_loads) == loads


def test_workers_start_like_a_plain_process(cluster):
    """start_local_cluster's workers (worker_settings): one malloc arena (the task thread's own arena cannot
    hold large activations), the thread variables at the model's threads in the task too, none of the nanny's
    MALLOC_TRIM_THRESHOLD_ (it fixes glibc's mmap threshold at 128 KiB), and no statistical profiler; the
    client's own environment is left as it was."""
    local, client = cluster

    def probe():
        import dask
        import torch

        return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
                "MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_"), "torch": torch.get_num_threads(),
                "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX"),
                "profile": dask.config.get("distributed.worker.profile.enabled")}

    expected = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_TRIM_THRESHOLD_": None, "torch": 1,
                "MALLOC_ARENA_MAX": "1", "profile": False}
    assert list(client.run(probe).values()) == [expected, expected]
    assert client.submit(probe, pure=False).result() == expected  # in the task's thread
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ
    assert os.environ.get("OMP_NUM_THREADS") == OMP_AT_IMPORT  # the nanny's writes into it were undone
    from d2_nucleus.slide.cluster import worker_settings

    settings = worker_settings(3)
    assert settings["distributed.nanny.pre-spawn-environ"]["OMP_NUM_THREADS"] == "3"
    assert settings["distributed.nanny.pre-spawn-environ"]["MALLOC_TRIM_THRESHOLD_"] is None


def test_killed_worker_slide_is_retried_and_resumed(data, cluster, tmp_path):
    local, client = cluster
    out = tmp_path / "out"
    cli_args = load_tool("segment_cluster").get_parser().parse_args(
        [str(data["slides"]), "--out", str(out)] + data["args"])
    cfg = slide_cfg_from_args(cli_args)
    killed = {}

    def kill_a_worker(futures):
        """Once a slide has tiles done (and more to do), kill the worker process running it."""
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            for name in SLIDES:
                tiles = out / f".{name}.work" / "tiles"
                if tiles.is_dir() and len(os.listdir(tiles)) >= 1:
                    running = {k: a for a, keys in client.processing().items() for k in keys}
                    key = next((k for k in running if f"-{name}.svs-" in str(k)), None)
                    if key is None:
                        continue
                    pids = client.run(os.getpid)
                    os.kill(pids[running[key]], signal.SIGKILL)
                    killed.update(name=name, worker=running[key],
                                  done_before=os.path.isfile(out / f"{name}.summary.json"))
                    return
            time.sleep(0.05)

    rows = segment_slides_on_cluster(client, cfg, read_manifest([str(data["slides"])]), str(out),
                                     progress=False, on_submitted=kill_a_worker)
    assert killed, "no worker was killed"
    assert [r["status"] for r in rows] == ["done"] * 4, rows
    row = next(r for r in rows if r["slide"].endswith(f"{killed['name']}.svs"))
    assert row["worker"] != killed["worker"]
    if not killed["done_before"]:  # the retry resumed from the tiles the dead worker had done
        assert row["resumed_tiles"] > 0
    _assert_same_outputs(data["ref"], out)
    assert sorted(os.listdir(out)) == sorted(n for n in os.listdir(data["ref"]))
    client.wait_for_workers(2, timeout=120)  # the nanny restarted the killed one


def test_manifest_csv_glob_and_bad_rows(data, tmp_path):
    manifest = tmp_path / "m.csv"
    rel = os.path.relpath(data["slides"] / "s0.svs", tmp_path)
    manifest.write_text(f"path,mpp\n{rel},0.5\n{data['slides'] / 's1.svs'},\n")
    jobs = read_manifest([str(manifest)], mpp=0.3)
    assert [(os.path.basename(j.path), j.mpp) for j in jobs] == [("s0.svs", 0.5), ("s1.svs", 0.3)]
    assert all(os.path.isabs(j.path) for j in jobs)
    assert [os.path.basename(j.path) for j in read_manifest([str(data["slides"] / "s[23].svs")])] == ["s2.svs", "s3.svs"]
    (tmp_path / "bad.csv").write_text("file\nx.svs\n")
    with pytest.raises(ValueError, match=r"bad\.csv.*'path' column"):
        read_manifest([str(tmp_path / "bad.csv")])
    (tmp_path / "badmpp.csv").write_text("path,mpp\nx.svs,abc\n")
    with pytest.raises(ValueError, match=r"badmpp\.csv:2: mpp 'abc'"):
        read_manifest([str(tmp_path / "badmpp.csv")])
    with pytest.raises(ValueError, match="no slides match"):
        read_manifest([str(tmp_path / "*.svs")])
    with pytest.raises(ValueError, match="share file names"):
        read_manifest([str(manifest), str(data["slides"] / "s0.svs")])


def test_resume_after_kill_between_tile_records_is_bit_identical(data, tmp_path):
    """A kill can land between the done records of one batch: the resumed run must batch as before."""
    from d2_nucleus.engine import NucleusPredictor
    from d2_nucleus.slide import segment_slide

    args = load_tool("segment_cluster").get_parser().parse_args([str(data["slides"]), "--out", "x"] + data["args"])
    cfg = slide_cfg_from_args(args)
    assert cfg.SLIDE.BATCH_SIZE == 2
    predictor = NucleusPredictor(cfg, batch_size=2)

    class OneBatch:  # the model, interrupted after its first batch of two tiles
        input_format = predictor.input_format
        pairs = 0

        def __call__(self, images):
            if self.pairs:
                raise KeyboardInterrupt("simulated kill")
            self.pairs += len(images) == 2
            return predictor(images)

    out = tmp_path / "out"
    with _torch_threads(1):  # as the reference
        with pytest.raises(KeyboardInterrupt):
            segment_slide(OneBatch(), cfg, str(data["slides"] / "s0.svs"), str(out), progress=False)
        records = sorted((out / ".s0.work" / "tiles").iterdir())  # row-major: the order of the run
        assert len(records) >= 2
        records[-1].unlink()  # killed after the pair's first record
        segment_slide(predictor, cfg, str(data["slides"] / "s0.svs"), str(out), progress=False)
    _assert_same_outputs(data["ref"], out, names=["s0"])


def test_task_thread_without_one_arena_warns_once(monkeypatch, caplog):
    """A model in a worker thread of a process started without MALLOC_ARENA_MAX (workers you start
    yourself) gets one warning naming the variable; the main thread, or the variable set, none."""
    import platform
    import threading

    from d2_nucleus.slide import cluster as cluster_module

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's arenas")
    monkeypatch.setattr(cluster_module, "_ARENA_WARNED", [False])
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)

    def in_thread():
        t = threading.Thread(target=cluster_module._check_worker_arenas)
        t.start()
        t.join()

    with caplog.at_level("WARNING", logger="d2_nucleus.slide.cluster"):
        cluster_module._check_worker_arenas()  # the main thread: as tools/segment_slides.py runs it
        assert not caplog.records
        in_thread()
        in_thread()
    assert len(caplog.records) == 1 and "MALLOC_ARENA_MAX=1" in caplog.records[0].getMessage()
    monkeypatch.setattr(cluster_module, "_ARENA_WARNED", [False])
    monkeypatch.setenv("MALLOC_ARENA_MAX", "1")
    caplog.clear()
    with caplog.at_level("WARNING", logger="d2_nucleus.slide.cluster"):
        in_thread()
    assert not caplog.records
