# -*- coding: utf-8 -*-
"""
A slide's nuclei from its tiles' done records (:mod:`.work`) into its outputs, streamed tile by
tile: seam duplicates removed (:class:`.stitching.SeamStitcher`), the per-nucleus table
(:mod:`d2_nucleus.export.tables`) and the QuPath GeoJSON (:mod:`d2_nucleus.export.geojson`) in
level-0 pixels, with each nucleus' type when the run has a classifier (:mod:`.types`), the density
map of the overview; then the measurements' summary and figure read back from the table a few
columns at a time. Memory: one tile's nuclei and two rows of seam nuclei.
"""
import os
import uuid
from typing import Dict, List, Optional, Sequence

import numpy as np
import pyarrow as pa

from ..export.geojson import detection_feature, mask_to_geometry, write_geojson_features
from ..export.classes import prob_column
from ..export.tables import TABLE_COLUMNS, NucleusTableWriter
from ..measurements.figure import FIGURE_COLUMNS, write_distributions
from ..measurements.masks import BoxMasks
from ..measurements.nuclei import nucleus_geometry
from ..measurements.qupath import qupath_measurements
from ..measurements.summary import SUMMARY_COLUMNS, read_summary_columns, summarize
from .measure import TILE_COLUMNS, level0_columns
from .outputs import SlideOutputs
from .overview import DensityMap
from .stitching import SeamStitcher
from .tiling import SlideGeometry, Tile, TileGrid
from .work import WorkFolder

__all__ = ["SLIDE_TABLE_FIELDS", "write_nuclei", "write_measurement_outputs"]

# Table columns the slide pipeline fills (see d2_nucleus.export.tables.TABLE_COLUMNS).
SLIDE_TABLE_FIELDS = (
    "id", "image", "tile", "score", "centroid_x", "centroid_y", "centroid_x_um", "centroid_y_um",
    "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "area_px", "area_um2",
)


def _level0_rows(geo: Dict[str, np.ndarray], s: float, mpp: Sequence[float], working_mpp: float) -> Dict[str, List]:
    """Working-px geometry (:func:`nucleus_geometry`) -> the level-0 table columns (``s``: level-0 px a working px)."""
    # pixel centres: working px x -> level-0 (x + 0.5) * s - 0.5
    cx = (geo["centroid_x"] + 0.5) * s - 0.5
    cy = (geo["centroid_y"] + 0.5) * s - 0.5
    area = geo["area_px"]
    return {
        "centroid_x": cx.tolist(), "centroid_y": cy.tolist(),
        "centroid_x_um": (cx * mpp[0]).tolist(), "centroid_y_um": (cy * mpp[1]).tolist(),
        "bbox_x0": [int(np.floor(v * s)) for v in geo["bbox_x0"].tolist()],
        "bbox_y0": [int(np.floor(v * s)) for v in geo["bbox_y0"].tolist()],
        "bbox_x1": [int(np.ceil(v * s)) for v in geo["bbox_x1"].tolist()],
        "bbox_y1": [int(np.ceil(v * s)) for v in geo["bbox_y1"].tolist()],
        "area_px": [int(round(n * s * s)) for n in area.tolist()],
        "area_um2": [n * working_mpp**2 for n in area.tolist()],
    }


def write_nuclei(cfg, tiles: Sequence[Tile], grid: TileGrid, geometry: SlideGeometry, work: WorkFolder,
                 outputs: SlideOutputs, stem: str, mpp: Sequence[float], density: DensityMap, overwrite: bool,
                 measure: bool = False, types=None) -> Dict:
    """
    Stream the done records of ``tiles``, less seam duplicates, into the GeoJSON and the table
    (with ``types``, a :class:`.types.SlideTypes`: each nucleus' type from its done record).
    Returns the counts ``nuclei``, ``cut`` (nuclei touching an inner tile edge), ``duplicates``
    and ``types`` (the number of nuclei of each type; None without ``types``).
    """
    stitcher = SeamStitcher(grid, float(cfg.SLIDE.DUPLICATE_IOU))
    s = geometry.scale
    counts = {"nuclei": 0, "cut": 0, "types": np.zeros(len(types.names), np.int64) if types else None}
    names = set(SLIDE_TABLE_FIELDS)
    if measure:
        names |= set(level0_columns({c: [] for c in TILE_COLUMNS}, geometry))
    if types is not None:
        names.add("type")
    schema = pa.schema([(k, t) for k, t in TABLE_COLUMNS.items() if k in names]
                       + [(prob_column(n), pa.float64()) for n in (types.names if types else [])])

    with NucleusTableWriter(outputs.table, csv_path=outputs.csv, overwrite=overwrite, schema=schema) as table:

        def features():
            for tile in tiles:
                done = work.load(tile)
                counts["cut"] += int(done["cut"])
                # the stitcher yields the done record's own record objects: their position in it
                position = {id(r): i for i, r in enumerate(done["nuclei"])}
                kept, masks, records = [], [], []
                for record, mask in stitcher.add(tile, done["nuclei"]):
                    kept.append(position[id(record)])
                    masks.append(mask)
                    records.append(record)
                if not records:
                    continue
                ids = list(range(counts["nuclei"], counts["nuclei"] + len(records)))
                counts["nuclei"] += len(records)
                geo = nucleus_geometry(BoxMasks(masks, [r.x0 for r in records], [r.y0 for r in records]))
                columns = {
                    "id": ids, "image": [stem] * len(ids), "tile": [tile.row * grid.cols + tile.col] * len(ids),
                    "score": [r.score for r in records], **_level0_rows(geo, s, mpp, geometry.working_mpp),
                }
                columns = {k: np.asarray(columns[k]) for k in SLIDE_TABLE_FIELDS}
                extra = [{} for _ in ids]
                if measure:
                    values = done["measurements"]
                    columns.update(level0_columns({c: [values[c][i] for i in kept] for c in TILE_COLUMNS}, geometry))
                    extra = qupath_measurements(columns, mpp[0])
                classes = None
                if types is not None:
                    classes = types.classes(done.get("types"), kept)
                    columns.update(classes.columns())
                    extra = [dict(e, **p) for e, p in zip(extra, classes.qupath_measurements())]
                    counts["types"] += np.bincount(classes.index, minlength=len(types.names))
                table.write(columns)
                density.add(columns["centroid_x"], columns["centroid_y"], classes.index if classes else None)
                labels = classes.classifications() if classes else [{"name": "Nucleus", "color": None}] * len(ids)
                for nid, record, mask, more, label in zip(ids, records, masks, extra, labels):
                    shape = mask_to_geometry(mask, record.x0, record.y0, scale=s)  # level-0 pixels
                    feature_id = str(uuid.uuid5(uuid.NAMESPACE_OID, f"d2_nucleus/{stem}/{nid}"))
                    yield detection_feature(shape, feature_id, record.score, label["name"], more, label["color"])

        write_geojson_features(features(), outputs.geojson, overwrite=overwrite)
    counts["duplicates"] = stitcher.duplicates
    return counts


def write_measurement_outputs(outputs: SlideOutputs, path: str, mpp: float, tissue_mm2: float,
                              overwrite: bool, type_names: Optional[Sequence[str]] = None,
                              type_colors: Optional[Sequence] = None) -> Dict:
    """
    The per-slide measurement summary (returned, for the summary JSON) and figure, from the table.
    The table is read one column at a time for the summary, and only the figure's columns for
    the figure (and the ``type`` column, stacking its histograms by ``type_names`` in
    ``type_colors``): memory is a few columns of the slide's nuclei (8 bytes a nucleus each).
    """
    stats = {}
    for name in SUMMARY_COLUMNS:
        columns, count = read_summary_columns(outputs.table, [name])
        if columns:
            stats.update(summarize(columns, mpp=mpp, tissue_area_mm2=tissue_mm2, count=count,
                                   summary_columns=[name])["measurements"])
    typed = type_names is not None
    columns, _ = read_summary_columns(outputs.table, FIGURE_COLUMNS + (("type",) if typed else ()))
    write_distributions(columns, outputs.figure, title=os.path.basename(path), overwrite=overwrite,
                        type_colors=dict(zip(type_names, type_colors)) if typed else None)
    return stats
