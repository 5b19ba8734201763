# -*- coding: utf-8 -*-
"""
Measurements as QuPath names them in a detection's ``properties.measurements`` (GeoJSON): plain
words with the unit in the name ("Area µm^2", "Perimeter µm"), pixels ("Area px^2") where the
resolution is unknown.
"""
from typing import Dict, List, Mapping, Optional

import numpy as np

__all__ = ["qupath_names", "qupath_measurements"]

# table column (pixel version) -> QuPath name without unit, unit kind: "len", "area" or None
_NAMES = (
    ("area", "Area", "area"),
    ("perimeter", "Perimeter", "len"),
    ("circularity", "Circularity", None),
    ("solidity", "Solidity", None),
    ("eccentricity", "Eccentricity", None),
    ("major_axis_length", "Major axis length", "len"),
    ("minor_axis_length", "Minor axis length", "len"),
    ("equivalent_diameter", "Equivalent diameter", "len"),
    ("orientation", "Orientation rad", None),
    ("hematoxylin_od_mean", "Hematoxylin OD mean", None),
    ("hematoxylin_od_std", "Hematoxylin OD std dev", None),
    ("eosin_od_mean", "Eosin OD mean", None),
    ("eosin_od_std", "Eosin OD std dev", None),
    ("red_mean", "Red mean", None),
    ("green_mean", "Green mean", None),
    ("blue_mean", "Blue mean", None),
)


def qupath_names(calibrated: bool) -> Dict[str, str]:
    """Table column -> QuPath measurement name (µm columns if ``calibrated``, else px columns)."""
    names = {}
    for base, name, unit in _NAMES:
        if unit == "area":
            names["area_um2" if calibrated else "area_px"] = f"{name} {'µm^2' if calibrated else 'px^2'}"
        elif unit == "len":
            names[f"{base}_{'um' if calibrated else 'px'}"] = f"{name} {'µm' if calibrated else 'px'}"
        else:
            names[base] = name
    return names


def qupath_measurements(columns: Mapping[str, np.ndarray], mpp: Optional[float]) -> List[Dict[str, float]]:
    """
    One ``{QuPath name: value}`` dict per row of measurement ``columns`` (columns not present,
    and NaN values, are left out: JSON has no NaN).
    """
    names = {c: n for c, n in qupath_names(bool(mpp)).items() if c in columns}
    n = len(next(iter(columns.values()))) if columns else 0
    values = {name: np.asarray(columns[col], dtype=np.float64).tolist() for col, name in names.items()}
    rows = []
    for i in range(n):
        rows.append({name: v[i] for name, v in values.items() if v[i] == v[i]})
    return rows
