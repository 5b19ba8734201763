# -*- coding: utf-8 -*-
"""
The per-slide work folder that makes a run resumable.

``<out>/.<slide>.work/`` holds ``run.json`` (what the run depends on: slide file, geometry,
tiles, config and weights hashes, stain vectors) and one ``tiles/<tile>.json`` done record per
finished tile (its nuclei, see :mod:`.stitching`, their measurements, see :mod:`.measure`, and types, :mod:`.types`),
each written atomically. A run killed at any moment and started again with the same command finds the same ``run.json`` and predicts only the tiles without a
record; the final outputs are rebuilt from the records, so they equal those of an uninterrupted
run. A work folder of a different run (other settings, changed slide) is started over.
"""
import json
import logging
import os
import shutil
from typing import Dict, List, Optional

from ..utils.file_io import atomic_write_json
from .stitching import NucleusRecord
from .tiling import Tile

__all__ = ["WorkFolder"]

logger = logging.getLogger(__name__)


class WorkFolder:
    def __init__(self, path: str, run_info: Dict):
        """Open (resume) or create the work folder at ``path`` for a run described by ``run_info``."""
        self.path = path
        self.tiles_dir = os.path.join(path, "tiles")
        self.resumed = False
        info_path = os.path.join(path, "run.json")
        if os.path.isdir(path):
            if self.matches(path, run_info):
                self.resumed = True
            else:
                logger.warning("%s: left by a run with other settings or another slide; starting over", path)
                shutil.rmtree(path)
        if not self.resumed:
            os.makedirs(self.tiles_dir, exist_ok=True)
            atomic_write_json(info_path, run_info, overwrite=True)

    @staticmethod
    def matches(path: str, run_info: Dict) -> bool:
        """Whether ``path`` is the work folder of a run described by ``run_info``."""
        try:
            with open(os.path.join(path, "run.json")) as f:
                return json.load(f) == json.loads(json.dumps(run_info))
        except (OSError, ValueError):
            return False

    def _tile_path(self, tile: Tile) -> str:
        return os.path.join(self.tiles_dir, tile.name + ".json")

    def done(self, tile: Tile) -> bool:
        return os.path.isfile(self._tile_path(tile))

    def save(self, tile: Tile, records: List[NucleusRecord], cut: int, measurements: Optional[Dict] = None,
             types: Optional[Dict] = None) -> None:
        """``measurements``: the records' measurement columns (:mod:`.measure`), ``types`` their
        types (:mod:`.types`), kept with them."""
        done = {"cut": int(cut), "nuclei": records}
        if measurements is not None:
            done["measurements"] = measurements
        if types is not None:
            done["types"] = types
        atomic_write_json(self._tile_path(tile), done, overwrite=True)

    def load(self, tile: Tile) -> Dict:
        """The tile's done record: ``cut``, ``nuclei`` (:class:`NucleusRecord` s), ``measurements`` and ``types`` if kept."""
        with open(self._tile_path(tile)) as f:
            done = json.load(f)
        done["nuclei"] = [NucleusRecord.from_json(r) for r in done["nuclei"]]
        return done

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
