# -*- coding: utf-8 -*-
"""Tiles read ahead of the model by a loader thread (reading and decoding overlap the model)."""
import queue
import threading
import time
from typing import Dict, Iterator, List, Tuple

import numpy as np

from ..data.slide_readers import SlideSource
from .tiling import SlideGeometry, Tile, read_tile

__all__ = ["prefetch_batches"]


def prefetch_batches(source: SlideSource, geometry: SlideGeometry, batches: List[List[Tile]], prefetch: int,
                     timing: Dict[str, float]) -> Iterator[Tuple[List[Tile], List[np.ndarray]]]:
    """
    The tiles of ``batches`` (RGB images at the working resolution) read by a loader thread,
    ``prefetch`` batches ahead of the caller; the seconds spent reading are added to
    ``timing["read"]``. An error of the loader is raised in the caller; closing the generator
    stops the thread.
    """
    q: "queue.Queue" = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def load():
        try:
            for batch in batches:
                start = time.perf_counter()
                images = [read_tile(source, geometry, t) for t in batch]
                timing["read"] += time.perf_counter() - start
                if not put((batch, images)):
                    return
            put(None)
        except BaseException as e:  # handed to the consumer, raised there
            put(e)

    thread = threading.Thread(target=load, name="slide-tile-loader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
