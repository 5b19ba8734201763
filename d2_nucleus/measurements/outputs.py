# -*- coding: utf-8 -*-
"""
Per-image measurement outputs of ``tools/predict.py --measurements DIR``: for each image
``<stem>.parquet`` (per-nucleus table, :mod:`d2_nucleus.export.tables`), ``<stem>.csv`` (with
``--measurements-format csv``), ``<stem>.summary.json`` (:mod:`.summary`) and ``<stem>.png``
(:mod:`.figure`), each written atomically.
"""
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..export.classes import NucleusClasses
from ..export.tables import write_table
from ..utils.file_io import atomic_write_json, check_writable
from .figure import write_distributions
from .masks import BoxMasks
from .nuclei import measure_nuclei
from .qupath import qupath_measurements
from .stain import STAIN_METHODS, image_stain_matrix
from .summary import summarize

__all__ = ["MeasurementWriter"]

logger = logging.getLogger(__name__)


@dataclass
class MeasurementWriter:
    """
    Measure the nuclei of one image at a time and write its table, summary and figure.

    Args:
        out_dir: folder of the outputs.
        csv: also write ``<stem>.csv``.
        mpp: micrometres per pixel of the images (None or 0: unknown, pixel units only).
        stain: "ruifrok" (fixed Ruifrok-Johnston H&E vectors) or "macenko" (estimated per image).
    """

    out_dir: str
    csv: bool = False
    mpp: Optional[float] = None
    stain: str = "ruifrok"

    def __post_init__(self):
        if self.stain not in STAIN_METHODS:
            raise ValueError(f"stain method must be one of {STAIN_METHODS}, got {self.stain!r}")
        if self.mpp is not None and not (self.mpp >= 0 and np.isfinite(self.mpp)):
            raise ValueError(f"mpp must be a positive number of micrometres per pixel, got {self.mpp}")

    def paths(self, stem: str) -> Dict[str, Optional[str]]:
        base = os.path.join(self.out_dir, stem)
        return {
            "table": base + ".parquet",
            "csv": base + ".csv" if self.csv else None,
            "summary": base + ".summary.json",
            "figure": base + ".png",
        }

    def check(self, stems: Sequence[str], overwrite: bool = False) -> None:
        """Fail before any work if an output exists (without ``overwrite``) or cannot be written."""
        for stem in stems:
            for path in self.paths(stem).values():
                if path:
                    check_writable(path, overwrite=overwrite)

    def write(
        self,
        stem: str,
        image_rgb: np.ndarray,
        rles: Sequence[Dict],
        scores: Sequence[float],
        image_name: Optional[str] = None,
        overwrite: bool = False,
        columns: Optional[Dict[str, np.ndarray]] = None,
        classes: Optional[NucleusClasses] = None,
    ) -> Dict:
        """
        Measure the nuclei (COCO RLEs of the image, in its pixels) and write the outputs.

        Args:
            columns: their measurements when already computed (with this writer's mpp and stain).
            classes: the nuclei's types (e.g. of :mod:`d2_nucleus.types`): the table's ``type``
                and ``prob_<type>`` columns, per-type counts, fractions and densities in the
                summary (``types``), the figure's histograms stacked by type.

        Returns:
            {"columns": the table's columns, "qupath": one QuPath measurement dict a nucleus,
            "written": the paths written}.
        """
        n = len(rles)
        stain = self.stain
        try:
            rgb_from_stain = image_stain_matrix(image_rgb, stain)
        except ValueError as e:  # Macenko on an image without enough stained pixels
            logger.warning("%s: %s; using the Ruifrok-Johnston stain vectors", stem, e)
            stain, rgb_from_stain = "ruifrok", image_stain_matrix(image_rgb, "ruifrok")
        measured = columns
        columns = {
            "id": np.arange(n, dtype=np.int64),
            "image": np.array([image_name or stem] * n, dtype=object),
            "tile": np.full(n, -1, dtype=np.int64),
            "score": np.asarray(scores, dtype=np.float64).reshape(-1),
        }
        if measured is None:
            measured = measure_nuclei(BoxMasks.from_rles(rles), image_rgb, mpp=self.mpp, rgb_from_stain=rgb_from_stain)
        columns.update(measured)
        if classes is not None:
            columns.update(classes.columns())
        paths = self.paths(stem)
        write_table(columns, paths["table"], csv_path=paths["csv"], overwrite=overwrite)
        height, width = image_rgb.shape[:2]
        extra = {"image": image_name or stem, "width": int(width), "height": int(height), "stain": stain}
        if stain != "ruifrok":
            extra["stain_vectors"] = np.asarray(rgb_from_stain).round(6).tolist()
        summary = summarize(columns, mpp=self.mpp, image_area_px=float(height * width), extra=extra)
        if classes is not None:
            summary["types"] = classes.summary(summary["area_mm2"])
        atomic_write_json(paths["summary"], summary, overwrite=overwrite)
        write_distributions(columns, paths["figure"], title=image_name or stem, overwrite=overwrite,
                            type_colors=classes.color_map if classes is not None else None)
        written: List[str] = [p for p in paths.values() if p]
        return {"columns": columns, "qupath": qupath_measurements(columns, self.mpp), "written": written}
