# -*- coding: utf-8 -*-
"""One PNG of the main distributions of an image's (or slide's) nuclei: six histograms."""
import io
from typing import Mapping, Optional

import numpy as np

from ..utils.file_io import atomic_write

__all__ = ["FIGURE_COLUMNS", "plot_distributions", "write_distributions"]

# (column in um, column in px, label in um, label in px)
_PANELS = (
    ("area_um2", "area_px", "Area (µm²)", "Area (px²)"),
    ("major_axis_length_um", "major_axis_length_px", "Major axis length (µm)", "Major axis length (px)"),
    ("circularity", "circularity", "Circularity", "Circularity"),
    ("solidity", "solidity", "Solidity", "Solidity"),
    ("eccentricity", "eccentricity", "Eccentricity", "Eccentricity"),
    ("hematoxylin_od_mean", "hematoxylin_od_mean", "Haematoxylin OD mean", "Haematoxylin OD mean"),
)
# The table columns the figure reads.
FIGURE_COLUMNS = tuple(dict.fromkeys(c for panel in _PANELS for c in panel[:2]))


def plot_distributions(columns: Mapping[str, np.ndarray], title: str = "", calibrated: Optional[bool] = None):
    """
    A matplotlib Figure (no pyplot state: safe in worker threads) with histograms of area, major
    axis length, circularity, solidity, eccentricity and haematoxylin OD, the median marked.
    ``calibrated``: use the µm columns (default: when they hold finite values).
    """
    from matplotlib.figure import Figure

    if calibrated is None:
        um = np.asarray(columns.get("area_um2", []), dtype=np.float64)
        calibrated = bool(np.isfinite(um).any())
    fig = Figure(figsize=(12, 7), dpi=100, layout="constrained")
    axes = fig.subplots(2, 3)
    n = len(next(iter(columns.values()))) if columns else 0
    for ax, (col_um, col_px, label_um, label_px) in zip(axes.flat, _PANELS):
        col, label = (col_um, label_um) if calibrated else (col_px, label_px)
        x = np.asarray(columns.get(col, []), dtype=np.float64)
        x = x[np.isfinite(x)]
        ax.set_xlabel(label)
        ax.set_ylabel("nuclei")
        if len(x) == 0:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.hist(x, bins=min(50, max(5, int(np.sqrt(len(x))))), color="#7b4f9d", alpha=0.85)
        median = float(np.median(x))
        ax.axvline(median, color="k", linestyle="--", linewidth=1)
        ax.set_title(f"median {median:.3g}", fontsize=9)
    fig.suptitle(f"{title}  ({n} nuclei)" if title else f"{n} nuclei")
    return fig


def write_distributions(columns: Mapping[str, np.ndarray], path: str, title: str = "", overwrite: bool = False) -> None:
    """Write :func:`plot_distributions` as a PNG, atomically."""
    fig = plot_distributions(columns, title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(buffer.getvalue())
