# -*- coding: utf-8 -*-
"""The overview figure of a slide: thumbnail, tissue outline, nucleus density heatmap and, with
nucleus types, the commonest type of each bin in its colour."""
import io
import math
from typing import Optional, Sequence, Tuple

import numpy as np

from ..utils.file_io import atomic_write

__all__ = ["DensityMap", "write_overview"]


class DensityMap:
    """Nuclei counted in square bins of ``bin_um`` um over the slide (level-0 coordinates), and
    per type with ``num_types`` > 0."""

    def __init__(self, width0: int, height0: int, mpp0: float, bin_um: float, num_types: int = 0):
        self.bin_px = max(bin_um / mpp0, 1.0)  # level-0 px
        self.bin_um = self.bin_px * mpp0
        self.counts = np.zeros((math.ceil(height0 / self.bin_px), math.ceil(width0 / self.bin_px)), np.int64)
        self.type_counts = np.zeros((num_types,) + self.counts.shape, np.int64) if num_types else None

    def add(self, x0: np.ndarray, y0: np.ndarray, types: Optional[np.ndarray] = None) -> None:
        """Count nuclei at level-0 positions (and of their type indices ``types``)."""
        col = np.clip((np.asarray(x0) / self.bin_px).astype(np.int64), 0, self.counts.shape[1] - 1)
        row = np.clip((np.asarray(y0) / self.bin_px).astype(np.int64), 0, self.counts.shape[0] - 1)
        np.add.at(self.counts, (row, col), 1)
        if types is not None and self.type_counts is not None:
            np.add.at(self.type_counts, (np.asarray(types, np.int64), row, col), 1)

    def per_mm2(self) -> np.ndarray:
        return self.counts / (self.bin_um / 1000.0) ** 2


def write_overview(path: str, thumb: np.ndarray, thumb_scale: float, tissue: np.ndarray, density: DensityMap,
                   title: str, overwrite: bool = False,
                   types: Optional[Tuple[Sequence[str], Sequence[Sequence[int]]]] = None) -> None:
    """
    PNG: the thumbnail (``thumb_scale`` level-0 px per px) with the tissue outline, and the
    density heatmap over it; with ``types`` (names, RGB colours) and the density's type counts, a
    third panel: each bin in the colour of its commonest type (opacity: the bin's share of the
    densest bin), the legend giving each type's count and share.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = thumb.shape[:2]
    typed = types is not None and density.type_counts is not None
    panels = 3 if typed else 2
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 6.5 * h / max(w, 1) + 1.0), squeeze=False)
    ax0, ax1 = axes[0][:2]
    ax0.imshow(thumb)
    if tissue is not None and tissue.any():
        ax0.contour(tissue.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
    ax0.set_title("tissue (outline)")
    ax1.imshow(thumb)
    dens = density.per_mm2()
    masked = np.ma.masked_where(dens <= 0, dens)
    extent = (0, dens.shape[1] * density.bin_px / thumb_scale, dens.shape[0] * density.bin_px / thumb_scale, 0)
    im = ax1.imshow(masked, extent=extent, cmap="magma", alpha=0.75, interpolation="nearest",
                    vmin=0, vmax=max(float(dens.max()), 1.0))
    fig.colorbar(im, ax=ax1, fraction=0.046, pad=0.04, label=f"nuclei / mm² ({density.bin_um:.0f} µm bins)")
    ax1.set_xlim(0, w)  # imshow widened the limits to the heatmap's extent
    ax1.set_ylim(h, 0)
    ax1.set_title("nucleus density")
    if typed:
        _type_panel(axes[0][2], thumb, density, extent, *types)
    for ax in axes[0]:
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(buffer.getvalue())


def _type_panel(ax, thumb: np.ndarray, density: DensityMap, extent, names: Sequence[str], colors) -> None:
    """Each bin in the colour of its commonest type, opacity by its count; legend: count and share a type."""
    from matplotlib.patches import Patch

    h, w = thumb.shape[:2]
    counts = density.type_counts
    palette = np.asarray(colors, np.float64).reshape(-1, 3) / 255.0
    total = counts.sum(axis=0)
    rgba = np.zeros(total.shape + (4,))
    rgba[..., :3] = palette[counts.argmax(axis=0)]
    rgba[..., 3] = np.where(total > 0, 0.25 + 0.75 * total / max(int(total.max()), 1), 0.0)
    ax.imshow(thumb)
    ax.imshow(rgba, extent=extent, interpolation="nearest")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    per_type = counts.sum(axis=(1, 2))
    n = max(int(per_type.sum()), 1)
    handles = [Patch(color=c, label=f"{name}: {int(k)} ({k / n:.0%})") for name, c, k in zip(names, palette, per_type)]
    ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.8)
    ax.set_title("nucleus types (commonest per bin)")
