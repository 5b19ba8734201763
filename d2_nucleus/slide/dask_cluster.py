# -*- coding: utf-8 -*-
"""
The Dask cluster of ``tools/segment_cluster.py``, on the client: joining a running scheduler with a
bounded wait (:func:`scheduler_address`), or starting a LocalCluster (:func:`start_local_cluster`)
whose workers run a slide as fast as a plain process does (:func:`worker_settings`). The slides'
tasks are :mod:`.cluster`'s.
"""
import os
import time
from typing import Dict, Optional

__all__ = ["scheduler_address", "start_local_cluster", "worker_settings"]


def scheduler_address(scheduler: Optional[str] = None, scheduler_file: Optional[str] = None,
                      timeout: float = 30.0) -> str:
    """
    The address of the running Dask scheduler to join (``scheduler``, or the ``address`` of the
    JSON ``scheduler_file`` that ``dask scheduler --scheduler-file`` writes, awaited until it
    appears), checked to answer within ``timeout`` seconds. distributed's Client has no such
    bound here: it waits forever for a scheduler file that never appears, and for a server that
    accepts the connection but never answers, whatever its ``timeout`` (distributed 2026.8).

    Raises:
        ValueError: not an address, or a scheduler file that is not JSON with an "address".
        TimeoutError: no file, connection or answer within ``timeout`` (one line each).
    """
    import asyncio
    import json

    from distributed.comm import connect
    from distributed.comm.addressing import parse_address

    if scheduler_file:
        deadline = time.monotonic() + timeout
        while not os.path.isfile(scheduler_file):
            if time.monotonic() > deadline:
                raise TimeoutError(f"--scheduler-file {scheduler_file}: no such file after {timeout:g} s (start the "
                                   f"scheduler with: dask scheduler --scheduler-file {scheduler_file})")
            time.sleep(0.1)
        try:
            with open(scheduler_file, "rb") as f:
                scheduler = json.loads(f.read(1 << 20))["address"]
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"--scheduler-file {scheduler_file}: not a Dask scheduler file (JSON with an "
                             f"\"address\": {type(e).__name__}: {e})") from None
    where = f"--scheduler-file {scheduler_file} ({scheduler})" if scheduler_file else f"--scheduler {scheduler}"
    try:
        parse_address(str(scheduler))
    except ValueError as e:
        raise ValueError(f"{where}: not a Dask scheduler address like tcp://host:8786 ({e})") from None

    async def identity():
        comm = await asyncio.wait_for(connect(scheduler, timeout=timeout), timeout)
        try:
            await asyncio.wait_for(comm.write({"op": "identity", "reply": True}), timeout)
            return await asyncio.wait_for(comm.read(), timeout)
        finally:
            comm.abort()

    try:
        asyncio.run(identity())
    except (OSError, asyncio.TimeoutError) as e:
        raise TimeoutError(f"{where}: no Dask scheduler answered within {timeout:g} s (--connect-timeout)"
                           + (f": {e}" if str(e) else "")) from None
    except ValueError as e:  # e.g. an unknown scheme
        raise ValueError(f"{where}: not a Dask scheduler address like tcp://host:8786 ({e})") from None
    return scheduler


def worker_settings(torch_threads: int) -> Dict:
    """
    The Dask settings of the workers :func:`start_local_cluster` starts, so that a slide costs what
    it costs in ``tools/segment_slides.py`` (BENCHMARKS.md "Many slides on Dask"):

    * one glibc malloc arena (``MALLOC_ARENA_MAX=1``): a Dask task runs in a thread of the worker,
      not in its main thread, and glibc gives each thread its own arena made of 64 MiB heaps, which
      cannot hold the model's larger activations (a stride-2 map of a 1024 px tile at 1.25x is
      ~100 MB): those are mapped and unmapped at every use whatever ``MODEL.CPU.TUNE_MALLOC``
      says, ~400,000 page faults and ~1.3x the time a tile (measured: bench/bench_worker_thread.py);
      with one arena the task thread allocates as a plain process's main thread does;
    * the thread variables at ``torch_threads`` (Dask's are 1: torch would start on one thread);
    * none of Dask's ``MALLOC_TRIM_THRESHOLD_=65536``: setting it turns off glibc's dynamic mmap
      threshold, so every allocation above 128 KiB is mapped and unmapped at each use (unless
      ``MODEL.CPU.TUNE_MALLOC`` raises the thresholds in the task);
    * no statistical profiler (``distributed.worker.profile``): it wakes every 10 ms to walk the
      stacks of every thread, taking the GIL and a core from the model's threads.
    """
    threads = str(int(torch_threads))
    return {
        "distributed.nanny.pre-spawn-environ": {"MALLOC_TRIM_THRESHOLD_": None, "MALLOC_ARENA_MAX": "1",
                                                "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                                                "OPENBLAS_NUM_THREADS": threads},
        "distributed.worker.profile.enabled": False,
    }


def start_local_cluster(n_workers: int, torch_threads: int = 1, gpus: bool = False, worker_deaths: int = 3,
                        dashboard_address: str = ":8787", **kwargs):
    """
    A :class:`distributed.LocalCluster` of ``n_workers`` processes running one slide at a time
    each (one Dask thread; the model uses ``torch_threads``), with resource ``GPU: 1`` when
    ``gpus``, and the worker settings of :func:`worker_settings`. A task whose worker dies is
    rescheduled at most ``worker_deaths`` times.
    """
    import dask
    from distributed import LocalCluster

    settings = {"distributed.scheduler.allowed-failures": int(worker_deaths), **worker_settings(torch_threads)}
    environ = dict(os.environ)
    try:
        with dask.config.set(settings):
            return LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True,
                resources={"GPU": 1} if gpus else None, dashboard_address=dashboard_address,
                # the model's threads: torch reads OMP_NUM_THREADS when the worker starts (these win
                # over the variables of the client's own environment, which the pre-spawn ones take)
                env={"OMP_NUM_THREADS": str(torch_threads), "MKL_NUM_THREADS": str(torch_threads)}, **kwargs,
            )
    finally:
        # the nanny writes its pre-spawn variables into this (the client's) process's environment,
        # where later subprocesses would inherit them: put it back (a restarted worker gets them again)
        for key in set(os.environ) | set(environ):
            if os.environ.get(key) != environ.get(key):
                if key in environ:
                    os.environ[key] = environ[key]
                else:
                    del os.environ[key]
