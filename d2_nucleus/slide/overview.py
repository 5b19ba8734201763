# -*- coding: utf-8 -*-
"""The overview figure of a slide: thumbnail, tissue outline and nucleus density heatmap."""
import io
import math

import numpy as np

from ..utils.file_io import atomic_write

__all__ = ["DensityMap", "write_overview"]


class DensityMap:
    """Nuclei counted in square bins of ``bin_um`` um over the slide (level-0 coordinates)."""

    def __init__(self, width0: int, height0: int, mpp0: float, bin_um: float):
        self.bin_px = max(bin_um / mpp0, 1.0)  # level-0 px
        self.bin_um = self.bin_px * mpp0
        self.counts = np.zeros((math.ceil(height0 / self.bin_px), math.ceil(width0 / self.bin_px)), np.int64)

    def add(self, x0: np.ndarray, y0: np.ndarray) -> None:
        """Count nuclei at level-0 positions."""
        col = np.clip((np.asarray(x0) / self.bin_px).astype(np.int64), 0, self.counts.shape[1] - 1)
        row = np.clip((np.asarray(y0) / self.bin_px).astype(np.int64), 0, self.counts.shape[0] - 1)
        np.add.at(self.counts, (row, col), 1)

    def per_mm2(self) -> np.ndarray:
        return self.counts / (self.bin_um / 1000.0) ** 2


def write_overview(path: str, thumb: np.ndarray, thumb_scale: float, tissue: np.ndarray, density: DensityMap,
                   title: str, overwrite: bool = False) -> None:
    """
    PNG: the thumbnail (``thumb_scale`` level-0 px per px) with the tissue outline, and the
    density heatmap over it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = thumb.shape[:2]
    fig, axes = plt.subplots(1, 2, figsize=(12, 6.5 * h / max(w, 1) + 1.0), squeeze=False)
    ax0, ax1 = axes[0]
    ax0.imshow(thumb)
    if tissue is not None and tissue.any():
        ax0.contour(tissue.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
    ax0.set_title("tissue (outline)")
    ax1.imshow(thumb)
    dens = density.per_mm2()
    masked = np.ma.masked_where(dens <= 0, dens)
    im = ax1.imshow(masked, extent=(0, dens.shape[1] * density.bin_px / thumb_scale, dens.shape[0] * density.bin_px / thumb_scale, 0), cmap="magma", alpha=0.75, interpolation="nearest",
                    vmin=0, vmax=max(float(dens.max()), 1.0))
    fig.colorbar(im, ax=ax1, fraction=0.046, pad=0.04, label=f"nuclei / mm² ({density.bin_um:.0f} µm bins)")
    ax1.set_xlim(0, w)  # imshow widened the limits to the heatmap's extent
    ax1.set_ylim(h, 0)
    ax1.set_title("nucleus density")
    for ax in (ax0, ax1):
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(buffer.getvalue())
