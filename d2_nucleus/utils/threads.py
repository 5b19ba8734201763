# -*- coding: utf-8 -*-
"""One thread pool per process and size, for running single-threaded torch kernels side by side."""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Tuple

__all__ = ["thread_pool"]

_pools: Dict[Tuple[int, int], ThreadPoolExecutor] = {}


def thread_pool(n: int) -> ThreadPoolExecutor:
    """A :class:`ThreadPoolExecutor` of ``n`` threads, made once per process (torch kernels release the GIL)."""
    # keyed by process id too: a forked child (data-loader or cluster worker) has the parent's
    # executor object but none of its threads
    key = (os.getpid(), n)
    if key not in _pools:
        _pools[key] = ThreadPoolExecutor(n, thread_name_prefix="d2_nucleus")
    return _pools[key]
