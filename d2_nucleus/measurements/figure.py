# -*- coding: utf-8 -*-
"""One PNG of the main distributions of an image's (or slide's) nuclei: six histograms."""
import io
from typing import Mapping, Optional, Sequence

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


def plot_distributions(columns: Mapping[str, np.ndarray], title: str = "", calibrated: Optional[bool] = None,
                       type_colors: Optional[Mapping[str, Sequence[int]]] = None):
    """
    A matplotlib Figure (no pyplot state: safe in worker threads) with histograms of area, major
    axis length, circularity, solidity, eccentricity and haematoxylin OD, the median marked.
    ``calibrated``: use the µm columns (default: when they hold finite values).
    ``type_colors`` (type name -> RGB, with a ``type`` column): the histograms stacked by
    nucleus type in its colour, and a panel of each type's count and share.
    """
    from matplotlib.figure import Figure

    if calibrated is None:
        um = np.asarray(columns.get("area_um2", []), dtype=np.float64)
        calibrated = bool(np.isfinite(um).any())
    typed = type_colors is not None and "type" in columns
    fig = Figure(figsize=(16 if typed else 12, 7), dpi=100, layout="constrained")
    axes = fig.subplots(2, 4 if typed else 3)
    n = len(next(iter(columns.values()))) if columns else 0
    panels = [ax for row in axes for ax in (row[:3] if typed else row)]
    if typed:
        _plot_types(axes[0][3], axes[1][3], columns, type_colors)
    for ax, (col_um, col_px, label_um, label_px) in zip(panels, _PANELS):
        col, label = (col_um, label_um) if calibrated else (col_px, label_px)
        x = np.asarray(columns.get(col, []), dtype=np.float64)
        x = x[np.isfinite(x)]
        ax.set_xlabel(label)
        ax.set_ylabel("nuclei")
        if len(x) == 0:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        bins = min(50, max(5, int(np.sqrt(len(x)))))
        if typed:
            values = np.asarray(columns.get(col, []), dtype=np.float64)
            types = np.asarray(columns["type"], dtype=object)
            finite = np.isfinite(values)
            names = list(type_colors)
            ax.hist([values[finite & (types == t)] for t in names], bins=np.histogram_bin_edges(x, bins), stacked=True,
                    color=[np.asarray(type_colors[t]) / 255 for t in names], alpha=0.85, label=names)
        else:
            ax.hist(x, bins=bins, color="#7b4f9d", alpha=0.85)
        median = float(np.median(x))
        ax.axvline(median, color="k", linestyle="--", linewidth=1)
        ax.set_title(f"median {median:.3g}", fontsize=9)
    fig.suptitle(f"{title}  ({n} nuclei)" if title else f"{n} nuclei")
    return fig


def _plot_types(ax_count, ax_legend, columns: Mapping[str, np.ndarray], type_colors: Mapping[str, Sequence[int]]):
    """Bars of each type's count (share written on it); the legend beneath."""
    names = list(type_colors)
    types = np.asarray(columns["type"], dtype=object)
    counts = [int((types == t).sum()) for t in names]
    total = max(sum(counts), 1)
    colors = [np.asarray(type_colors[t]) / 255 for t in names]
    bars = ax_count.bar(range(len(names)), counts, color=colors)
    for bar, c in zip(bars, counts):
        ax_count.annotate(f"{c}\n{c / total:.0%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                          ha="center", va="bottom", fontsize=8)
    ax_count.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax_count.set_ylabel("nuclei")
    ax_count.set_title("nucleus types", fontsize=9)
    ax_count.margins(y=0.25)
    ax_legend.axis("off")
    handles = [ax_legend.bar(0, 0, color=c, label=f"{t}: {k} ({k / total:.0%})") for t, c, k in zip(names, colors, counts)]
    ax_legend.legend(handles=handles, loc="center", frameon=False, title="type: nuclei (share)")


def write_distributions(columns: Mapping[str, np.ndarray], path: str, title: str = "", overwrite: bool = False,
                        type_colors: Optional[Mapping[str, Sequence[int]]] = None) -> None:
    """Write :func:`plot_distributions` as a PNG, atomically."""
    fig = plot_distributions(columns, title, type_colors=type_colors)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(buffer.getvalue())
