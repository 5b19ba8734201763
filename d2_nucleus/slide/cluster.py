# -*- coding: utf-8 -*-
"""
Many slides on a Dask cluster: the slide pipeline (:func:`.pipeline.segment_slide`) as one
Dask distributed task per slide, behind ``tools/segment_cluster.py``.

* **Manifest** (:func:`read_manifest`): slide files, folders, glob patterns, or a CSV with a
  ``path`` column and an optional ``mpp`` column (relative paths are relative to the CSV).
* **Model once per worker**: the task builds its :class:`~d2_nucleus.engine.NucleusPredictor`
  through :func:`worker_predictor`, a per-process cache keyed by the config's and the weights'
  SHA-256; every later slide on that worker reuses it. On CUDA each task asks for the resource
  ``GPU: 1`` (workers declare ``--resources GPU=1``), so a worker runs one slide at a time on
  its GPU.
* **Faults**: a slide that fails for its own reasons (unreadable, no resolution, no tissue,
  outputs in the way) is a ``failed`` row and the others go on. A task whose worker dies is
  rescheduled by the scheduler up to ``distributed.scheduler.allowed-failures`` times (set from
  ``worker_deaths`` for a cluster started here); an unexpected exception in a task is retried
  ``retries`` times (``Client.submit(retries=)``). A retried slide resumes from its tiles already
  done (the slide pipeline's work folder), so its outputs equal an uninterrupted run's.
* **Re-run**: slides whose ``<slide>.summary.json`` exists are not submitted (no work); partial
  ones resume. The outputs are those of ``tools/segment_slides.py``: the same function writes them.
* **Report** (:func:`write_report`): one row per slide (:data:`REPORT_COLUMNS`), CSV or Parquet.

Workers must see the slides, the weights and ``out_dir`` at the same paths (a shared file system).
"""
import csv
import glob
import hashlib
import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from ..utils.file_io import atomic_write
from .inputs import SLIDE_EXTENSIONS, file_sha256, list_slides, slide_stem
from .outputs import SlideOutputs
from .dask_cluster import scheduler_address, start_local_cluster, worker_settings  # noqa: F401 (the cluster API)
from .runner import SLIDE_ERRORS, run_one_slide

__all__ = [
    "REPORT_COLUMNS", "SlideJob", "read_manifest", "worker_predictor", "model_loads", "run_slide", "segment_slides_on_cluster",
    "write_report", "scheduler_address", "start_local_cluster", "worker_settings",
]

logger = logging.getLogger(__name__)

REPORT_COLUMNS = ("slide", "status", "nuclei", "tissue_mm2", "seconds", "worker", "resumed_tiles", "error")

# Errors that belong to the slide (runner.SLIDE_ERRORS: bad file, no mpp, no tissue, outputs in the
# way) are reported, not retried; anything else raised by a task is retried (``retries``), then reported.

@dataclass(frozen=True)
class SlideJob:
    path: str
    mpp: Optional[float] = None  # level-0 um/px overriding the slide's metadata


def read_manifest(items: Sequence[str], mpp: Optional[float] = None) -> List[SlideJob]:
    """
    Slides from ``items``: slide files, folders of them, glob patterns (``"slides/**/*.svs"``),
    or CSV manifests (a ``path`` column, optional ``mpp``; relative paths are relative to the CSV;
    an empty ``mpp`` cell means the slide's metadata, or ``mpp``).

    Raises:
        ValueError: a CSV without a ``path`` column or with a bad ``mpp``, a pattern matching
            nothing, slides sharing a file name (their outputs would collide).
    """
    jobs: List[SlideJob] = []
    for item in items:
        if item.lower().endswith(".csv") and os.path.isfile(item):
            jobs += _read_csv_manifest(item, mpp)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True)
                           if os.path.isfile(p) and p.lower().endswith(SLIDE_EXTENSIONS))
            if not found:
                raise ValueError(f"no slides match {item!r}")
            jobs += [SlideJob(p, mpp) for p in found]
        else:
            jobs += [SlideJob(p, mpp) for p in list_slides([item])]
    list_slides([j.path for j in jobs])  # refuses clashing file names
    # workers may run elsewhere (another working folder): absolute paths
    return [SlideJob(os.path.abspath(j.path), j.mpp) for j in jobs]


def _read_csv_manifest(path: str, default_mpp: Optional[float]) -> List[SlideJob]:
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise ValueError(f"{path}: manifest needs a 'path' column (and optionally 'mpp'), has {reader.fieldnames}")
        jobs = []
        for line, row in enumerate(reader, start=2):
            slide = (row["path"] or "").strip()
            if not slide:
                raise ValueError(f"{path}:{line}: empty path")
            value = (row.get("mpp") or "").strip()
            try:
                slide_mpp = float(value) if value else default_mpp
            except ValueError:
                raise ValueError(f"{path}:{line}: mpp {value!r} is not a number") from None
            if slide_mpp is not None and not (math.isfinite(slide_mpp) and slide_mpp > 0):
                raise ValueError(f"{path}:{line}: mpp must be a finite number > 0, got {value!r}")
            jobs.append(SlideJob(os.path.join(base, slide), slide_mpp))
    if not jobs:
        raise ValueError(f"{path}: manifest lists no slides")
    return jobs


# -------------------------------------------------------------------------------------------------
# On the workers
# -------------------------------------------------------------------------------------------------
_PREDICTORS: Dict[tuple, object] = {}  # this worker process's model, by (config, weights, device)
_MODEL_LOADS = [0]


def model_loads() -> int:
    """How many models this process has built (``client.run(model_loads)``: per worker)."""
    return _MODEL_LOADS[0]


def _worker_device(device: str) -> str:
    """``cuda`` on a worker of a machine with several visible GPUs: the worker's own one."""
    import torch

    if device != "cuda" or torch.cuda.device_count() < 2:
        return device
    try:
        from distributed import get_worker

        name = get_worker().name
    except ValueError:  # not on a worker
        return device
    # LocalCluster names its workers 0..n-1; others see one GPU each (CUDA_VISIBLE_DEVICES)
    return f"cuda:{int(name) % torch.cuda.device_count()}" if str(name).isdigit() else device


def worker_predictor(cfg, torch_threads: Optional[int] = None):
    """
    This process's predictor for ``cfg``: built on first use, then reused by every task of the
    worker (the cache holds one model: another config or weights replace it).
    """
    import torch

    from ..modeling.cpu.malloc import tune_process

    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    tune_process(cfg)  # process-wide: this worker process is the entry point here
    _check_worker_arenas()
    weights = str(cfg.MODEL.WEIGHTS)
    device = _worker_device(str(cfg.MODEL.DEVICE))
    key = (hashlib.sha256(cfg.dump().encode("utf-8")).hexdigest(),
           file_sha256(weights) if os.path.isfile(weights) else weights, device)
    if key not in _PREDICTORS:
        from ..engine import NucleusPredictor

        _PREDICTORS.clear()
        model_cfg = cfg
        if device != cfg.MODEL.DEVICE:
            model_cfg = cfg.clone()
            model_cfg.defrost()
            model_cfg.MODEL.DEVICE = device
        _PREDICTORS[key] = NucleusPredictor(model_cfg, batch_size=cfg.SLIDE.BATCH_SIZE)
        _MODEL_LOADS[0] += 1
    return _PREDICTORS[key]


_ARENA_WARNED = [False]


def _check_worker_arenas() -> None:
    """Warn once when the model runs in a thread of a process without MALLOC_ARENA_MAX (see worker_settings)."""
    import platform
    import threading

    if (_ARENA_WARNED[0] or os.environ.get("MALLOC_ARENA_MAX") or platform.libc_ver()[0] != "glibc"
            or threading.current_thread() is threading.main_thread()):
        return
    _ARENA_WARNED[0] = True
    logger.warning("this Dask worker runs the model in a task thread without MALLOC_ARENA_MAX=1 in its environment: "
                   "its large activations are page-faulted at every tile (~1.2x the time); start the workers "
                   "with MALLOC_ARENA_MAX=1 (tools/segment_cluster.py's own LocalCluster does)")


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except ValueError:
        return f"{socket.gethostname()}:{os.getpid()}"


def run_slide(cfg, job: SlideJob, out_dir: str, overwrite: bool = False, torch_threads: Optional[int] = None,
              predictor_factory: Optional[Callable] = None) -> Dict:
    """
    The task: segment one slide with this worker's model; a report row (see
    :data:`REPORT_COLUMNS`). Slide errors (:data:`~.runner.SLIDE_ERRORS`) become a ``failed``
    row; others propagate (retried).
    """
    start = time.perf_counter()
    row = {"slide": job.path, "worker": _worker_name()}
    try:
        predictor = (predictor_factory or worker_predictor)(cfg, torch_threads)
    except SLIDE_ERRORS as e:  # e.g. the weights: reported like the slide tool does
        return {**row, "status": "failed", "seconds": time.perf_counter() - start, "error": f"{job.path}: {e}"}
    summary, error = run_one_slide(predictor, cfg, job.path, out_dir, mpp=job.mpp, overwrite=overwrite, progress=False)
    if error is not None:
        return {**row, "status": "failed", "seconds": time.perf_counter() - start, "error": error}
    if summary["status"] == "exists":  # completed meanwhile (e.g. by an earlier attempt)
        return {**_row_from_summary(job.path, summary["summary"], "exists"), "worker": row["worker"]}
    return {**row, "status": "done", "nuclei": summary["nuclei"], "tissue_mm2": summary["tissue_mm2"],
            "seconds": summary["seconds"], "resumed_tiles": summary["resumed_tiles"]}


def _row_from_summary(slide: str, summary_path: str, status: str) -> Dict:
    import json

    with open(summary_path) as f:
        s = json.load(f)
    return {"slide": slide, "status": status, "nuclei": s.get("nuclei"), "tissue_mm2": s.get("tissue_mm2"),
            "seconds": s.get("seconds"), "resumed_tiles": s.get("resumed_tiles")}


# -------------------------------------------------------------------------------------------------
# On the client
# -------------------------------------------------------------------------------------------------
def segment_slides_on_cluster(client, cfg, jobs: Sequence[SlideJob], out_dir: str, overwrite: bool = False,
                              retries: int = 2, torch_threads: Optional[int] = None, progress: bool = True,
                              on_submitted: Optional[Callable] = None) -> List[Dict]:
    """
    Segment ``jobs`` on the cluster of ``client`` with the settings of ``cfg`` (those of
    tools/segment_slides.py: :mod:`.options`); the report rows, in the order of ``jobs``.

    Complete slides (summary present, not ``overwrite``) are not submitted: their row (status
    ``exists``) comes from their summary. ``on_submitted(futures)`` is called once the tasks are
    submitted (tests use it to kill a worker mid-run).
    """
    from distributed import as_completed
    from tqdm import tqdm

    os.makedirs(out_dir, exist_ok=True)
    rows: Dict[int, Dict] = {}
    todo = []
    for i, job in enumerate(jobs):
        summary = SlideOutputs.for_slide(out_dir, slide_stem(job.path)).summary
        if os.path.isfile(summary) and not overwrite:
            rows[i] = {**_row_from_summary(job.path, summary, "exists"), "worker": None}
        else:
            todo.append(i)
    resources = {"GPU": 1} if str(cfg.MODEL.DEVICE).startswith("cuda") else None
    futures = {}
    for i in todo:
        job = jobs[i]
        future = client.submit(
            run_slide, cfg, job, out_dir, overwrite=overwrite, torch_threads=torch_threads, retries=retries,
            resources=resources,
            pure=False, key=f"slide-{i}-{os.path.basename(job.path)}-{time.time_ns()}",
        )
        futures[future] = i
    if on_submitted is not None:
        on_submitted(list(futures))
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="slide", desc="slides", disable=not progress)
    failed = 0
    try:
        for future in as_completed(futures):
            i = futures[future]
            try:
                row = future.result()
            except Exception as e:  # retries and worker deaths spent, or a bug: reported, the rest go on
                from distributed import KilledWorker

                why = (f"its worker died too many times ({e})" if isinstance(e, KilledWorker)
                       else f"{type(e).__name__}: {e}")
                row = {"slide": jobs[i].path, "status": "failed", "worker": None, "error": f"{jobs[i].path}: {why}"}
            rows[i] = row
            failed += row["status"] == "failed"
            bar.set_postfix(failed=failed, refresh=False)
            bar.update(1)
    finally:
        bar.close()
        for future in futures:
            future.release()
    return [{k: rows[i].get(k) for k in REPORT_COLUMNS} for i in range(len(jobs))]


def write_report(rows: Sequence[Dict], path: str) -> None:
    """The run report: ``.parquet`` or CSV (by extension), one row per slide, replaced each run."""
    import pyarrow as pa

    types = {"slide": pa.string(), "status": pa.string(), "nuclei": pa.int64(), "tissue_mm2": pa.float64(),
             "seconds": pa.float64(), "worker": pa.string(), "resumed_tiles": pa.int64(), "error": pa.string()}
    table = pa.table({k: pa.array([r.get(k) for r in rows], type=types[k]) for k in REPORT_COLUMNS})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path, overwrite=True) as f:
        if path.lower().endswith(".parquet"):
            import pyarrow.parquet as pq

            pq.write_table(table, f)
        else:
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, f)
