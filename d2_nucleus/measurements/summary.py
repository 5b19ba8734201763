# -*- coding: utf-8 -*-
"""
Summary of an image's (or a slide's) nuclei: count, density per mm^2 of tissue or image, and the
median and inter-quartile range of each measurement.
"""
import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["SUMMARY_COLUMNS", "summarize", "read_summary_columns"]

# Measurements summarised (those present in the table; _um columns only with a resolution).
SUMMARY_COLUMNS = (
    "area_px", "area_um2", "perimeter_px", "perimeter_um", "circularity", "solidity", "eccentricity",
    "major_axis_length_px", "major_axis_length_um", "minor_axis_length_px", "minor_axis_length_um",
    "equivalent_diameter_px", "equivalent_diameter_um",
    "hematoxylin_od_mean", "hematoxylin_od_std", "eosin_od_mean", "eosin_od_std",
    "red_mean", "green_mean", "blue_mean",
)  # fmt: skip


def _finite(x: float) -> Optional[float]:
    return float(x) if math.isfinite(x) else None


def summarize(
    columns: Mapping[str, np.ndarray],
    mpp: Optional[float] = None,
    image_area_px: Optional[float] = None,
    tissue_area_mm2: Optional[float] = None,
    extra: Optional[Dict] = None,
    summary_columns: Sequence[str] = SUMMARY_COLUMNS,
    count: Optional[int] = None,
) -> Dict:
    """
    Args:
        columns: the per-nucleus table's columns (numpy arrays of one length).
        mpp: micrometres per pixel (None: no mm^2 and no density unless ``tissue_area_mm2``).
        image_area_px: the image's area in pixels (the density's area when there is no tissue area).
        tissue_area_mm2: area of the tissue (slides); preferred for the density.
        extra: entries put first in the summary (image name, ...).
        count: number of nuclei (default: the columns' length).

    Returns:
        JSON-ready dict: ``count``, ``mpp``, ``area_mm2`` and ``area_source`` ("tissue" /
        "image"), ``density_per_mm2``, and per measurement ``{"median", "q1", "q3", "iqr",
        "mean", "n"}`` under ``measurements`` (NaN values ignored; None where undefined).
    """
    n = count if count is not None else (len(next(iter(columns.values()))) if columns else 0)
    summary = dict(extra or {})
    summary["count"] = int(n)
    summary["mpp"] = float(mpp) if mpp else None
    if tissue_area_mm2 is not None:
        area_mm2, source = float(tissue_area_mm2), "tissue"
    elif image_area_px is not None and mpp:
        area_mm2, source = float(image_area_px) * float(mpp) ** 2 / 1e6, "image"
    else:
        area_mm2, source = None, None
    summary["area_px"] = float(image_area_px) if image_area_px is not None else None
    summary["area_mm2"] = area_mm2
    summary["area_source"] = source
    summary["density_per_mm2"] = n / area_mm2 if area_mm2 else None
    stats = {}
    for name in summary_columns:
        if name not in columns:
            continue
        x = np.asarray(columns[name], dtype=np.float64)
        x = x[np.isfinite(x)]
        if len(x) == 0:
            continue  # e.g. _um columns without a resolution
        q1, median, q3 = np.percentile(x, [25, 50, 75])
        stats[name] = {
            "median": _finite(median),
            "q1": _finite(q1),
            "q3": _finite(q3),
            "iqr": _finite(q3 - q1),
            "mean": _finite(x.mean()),
            "n": int(len(x)),
        }
    summary["measurements"] = stats
    return summary


def read_summary_columns(path: str, summary_columns: Sequence[str] = SUMMARY_COLUMNS) -> Tuple[Dict[str, np.ndarray], int]:
    """(the summarised columns present in a per-nucleus Parquet table, its row count)."""
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    table = pq.read_table(path, columns=[c for c in summary_columns if c in names])
    columns = {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}
    return columns, pq.read_metadata(path).num_rows
