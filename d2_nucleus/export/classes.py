# -*- coding: utf-8 -*-
"""
Classes of nuclei (e.g. the nucleus types of :mod:`d2_nucleus.types`) in the outputs, whoever
computed them: :class:`NucleusClasses` holds each nucleus' class and probabilities with the
classes' names and colours, and writes them as

* the per-nucleus table's ``type`` column and one ``prob_<type>`` column a class
  (:meth:`NucleusClasses.columns`, :func:`prob_column`);
* QuPath's ``classification`` ``{"name", "color"}`` and ``Probability <type>`` measurements
  (:meth:`~NucleusClasses.classifications`, :meth:`~NucleusClasses.qupath_measurements`);
* an overlay's outline colours and legend (:meth:`~NucleusClasses.label_colors`,
  :meth:`~NucleusClasses.legend`);
* counts, fractions and density per mm^2 of each class (:func:`class_summary` from a table's
  ``type`` column, :func:`class_count_summary` from counts, as a slide streams its nuclei).
"""
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["NucleusClasses", "class_count_summary", "class_summary", "prob_column"]

RGB = Tuple[int, int, int]


def prob_column(name: str) -> str:
    """The probability column of a class: ``prob_`` + the name, runs of other characters as ``_``."""
    return "prob_" + (re.sub(r"[^0-9A-Za-z]+", "_", str(name)).strip("_") or "type")


def class_count_summary(counts: Sequence[int], class_names: Sequence[str], area_mm2: Optional[float] = None,
                        colors: Optional[Sequence[Sequence[int]]] = None) -> Dict[str, Dict]:
    """
    Per class: ``count`` (``counts[k]``), ``fraction`` of the nuclei, ``density_per_mm2`` (None
    without an area) and ``color``.
    """
    counts = [int(c) for c in counts]
    total = sum(counts)
    out = {}
    for k, name in enumerate(class_names):
        n = counts[k]
        out[str(name)] = {"count": n, "fraction": n / total if total else None,
                          "density_per_mm2": n / area_mm2 if area_mm2 else None}
        if colors is not None:
            out[str(name)]["color"] = [int(v) for v in colors[k]]
    return out


def class_summary(types: Sequence, class_names: Sequence[str], area_mm2: Optional[float] = None,
                  colors: Optional[Sequence[Sequence[int]]] = None) -> Dict[str, Dict]:
    """:func:`class_count_summary` from the class name of each nucleus (a table's ``type`` column)."""
    types = np.asarray(list(types), dtype=object)
    return class_count_summary([int((types == name).sum()) for name in class_names], class_names, area_mm2, colors)


@dataclass
class NucleusClasses:
    """
    The class of N nuclei.

    Attributes:
        names: the K class names, in the order of ``probs``' columns.
        colors: RGB colour of each class (overlays, figures, QuPath).
        index: (N,) class index of each nucleus.
        probs: (N, K) probabilities (None: none).
    """

    names: Sequence[str]
    colors: Sequence[RGB]
    index: np.ndarray
    probs: Optional[np.ndarray] = None

    def __post_init__(self):
        self.names = [str(n) for n in self.names]
        self.colors = [tuple(int(v) for v in c) for c in self.colors]
        self.index = np.asarray(self.index, np.int64).reshape(-1)
        if len(self.colors) != len(self.names):
            raise ValueError(f"{len(self.colors)} colours for {len(self.names)} classes")
        if len(self.index) and (self.index.min() < 0 or self.index.max() >= len(self.names)):
            raise ValueError(f"class indices must be in 0..{len(self.names) - 1}")
        if self.probs is not None:
            self.probs = np.asarray(self.probs, np.float64).reshape(len(self.index), len(self.names))

    def __len__(self) -> int:
        return len(self.index)

    @property
    def type_names(self) -> np.ndarray:
        """(N,) the class name of each nucleus (object array)."""
        return np.asarray(self.names, dtype=object)[self.index] if len(self.index) else np.zeros(0, dtype=object)

    def columns(self) -> Dict[str, np.ndarray]:
        """The table's ``type`` column and, with probabilities, one ``prob_<type>`` column a class."""
        out = {"type": self.type_names}
        if self.probs is not None:
            for k, name in enumerate(self.names):
                out[prob_column(name)] = self.probs[:, k]
        return out

    def classifications(self) -> List[Dict]:
        """QuPath ``classification`` objects, one a nucleus: ``{"name": type, "color": [r, g, b]}``."""
        table = [{"name": n, "color": list(c)} for n, c in zip(self.names, self.colors)]
        return [dict(table[i]) for i in self.index]

    def qupath_measurements(self) -> List[Dict[str, float]]:
        """``{"Probability <type>": p, ...}`` a nucleus (empty dicts without probabilities)."""
        if self.probs is None:
            return [{} for _ in self.index]
        return [{f"Probability {n}": float(p) for n, p in zip(self.names, row)} for row in self.probs]

    def label_colors(self) -> np.ndarray:
        """(N + 1, 3) uint8 colours of label-map labels 1..N (the nuclei in order; 0: background)."""
        colors = np.zeros((len(self.index) + 1, 3), np.uint8)
        colors[1:] = np.asarray(self.colors, np.uint8).reshape(-1, 3)[self.index]
        return colors

    def legend(self) -> List[Tuple[str, RGB]]:
        """``("<type>: <count>", colour)`` a class."""
        counts = np.bincount(self.index, minlength=len(self.names))
        return [(f"{n}: {int(c)}", col) for n, c, col in zip(self.names, counts, self.colors)]

    def summary(self, area_mm2: Optional[float] = None) -> Dict[str, Dict]:
        """:func:`class_summary` of these nuclei."""
        return class_summary(self.type_names, self.names, area_mm2, self.colors)

    @property
    def color_map(self) -> Dict[str, RGB]:
        """Class name -> colour (the figures' ``type_colors``)."""
        return dict(zip(self.names, self.colors))
