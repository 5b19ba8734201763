# -*- coding: utf-8 -*-
"""
The per-nucleus table: one row per detected nucleus, written as Parquet (pyarrow) and optionally
CSV, by the per-image predictor (``tools/predict.py --measurements``) and the slide pipeline.

:class:`NucleusTableWriter` streams: each :meth:`~NucleusTableWriter.write` call appends one batch
(a dict of equal-length numpy columns, or a ``pyarrow.Table``) as Parquet row groups / CSV rows
straight to a temporary file, so memory is bounded by one batch whatever the number of nuclei.
The temporary files replace the targets only when the writer is closed without an error
(:func:`d2_nucleus.utils.file_io.atomic_write`); after an error no output is left.

Column schema (:data:`TABLE_COLUMNS`; coordinates in pixels of the image, or of level 0 of a
slide, x right, y down, pixel (x, y) covering [x, x + 1) x [y, y + 1); ``_um`` columns are NaN
when the resolution is unknown). Every column is optional; the documented ones are cast to the
type given here and come first, in this order, followed by any other columns of the first batch.

==============================  =======  ========================================================
column                          type     meaning
==============================  =======  ========================================================
id                              int64    nucleus id, unique within the table (0, 1, ...)
image                           string   image (or slide) name
tile                            int64    tile index in the slide pipeline (-1: whole image)
score                           float64  detection score
centroid_x, centroid_y          float64  centroid (mean pixel index, as regionprops; px)
centroid_x_um, centroid_y_um    float64  centroid in um (pixel index * mpp)
bbox_x0, bbox_y0                int64    first column / row of the mask's bounding box (px)
bbox_x1, bbox_y1                int64    one past the last column / row (px, half-open)
area_px                         int64    number of mask pixels
area_um2                        float64  area in um^2 (area_px * mpp^2)
perimeter_px, perimeter_um      float64  regionprops ``perimeter`` (4-neighbourhood estimator)
circularity                     float64  4 * pi * area / perimeter^2 (NaN when perimeter is 0)
solidity                        float64  area / convex hull area (regionprops ``solidity``)
eccentricity                    float64  of the ellipse with the same second moments (0: circle)
major_axis_length_px, _um       float64  regionprops ``axis_major_length``
minor_axis_length_px, _um       float64  regionprops ``axis_minor_length``
orientation                     float64  regionprops ``orientation``: angle (rad, -pi/2..pi/2)
                                         between the row axis and the major axis
equivalent_diameter_px, _um     float64  diameter of the circle of the same area
hematoxylin_od_mean, _std       float64  haematoxylin optical density (colour deconvolution) over
                                         the mask; ``eosin_od_mean``, ``eosin_od_std`` likewise
red_mean, green_mean, blue_mean float64  mean RGB over the mask (the image's scale, 0-255 for 8 bits)
type                            string   nucleus type (with a type classifier, d2_nucleus.types)
prob_<type>                     float64  the classifier's probability of each type (one column a
                                         type, after the documented ones; names: types.outputs)
==============================  =======  ========================================================
"""
import contextlib
from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ..utils.file_io import atomic_write, check_writable

__all__ = ["TABLE_COLUMNS", "TABLE_SCHEMA", "NucleusTableWriter", "write_table"]

_F8 = pa.float64()
_I8 = pa.int64()

# Documented columns, in table order (see the module docstring).
TABLE_COLUMNS: Dict[str, pa.DataType] = {
    "id": _I8,
    "image": pa.string(),
    "tile": _I8,
    "score": _F8,
    "centroid_x": _F8,
    "centroid_y": _F8,
    "centroid_x_um": _F8,
    "centroid_y_um": _F8,
    "bbox_x0": _I8,
    "bbox_y0": _I8,
    "bbox_x1": _I8,
    "bbox_y1": _I8,
    "area_px": _I8,
    "area_um2": _F8,
    "perimeter_px": _F8,
    "perimeter_um": _F8,
    "circularity": _F8,
    "solidity": _F8,
    "eccentricity": _F8,
    "major_axis_length_px": _F8,
    "major_axis_length_um": _F8,
    "minor_axis_length_px": _F8,
    "minor_axis_length_um": _F8,
    "orientation": _F8,
    "equivalent_diameter_px": _F8,
    "equivalent_diameter_um": _F8,
    "hematoxylin_od_mean": _F8,
    "hematoxylin_od_std": _F8,
    "eosin_od_mean": _F8,
    "eosin_od_std": _F8,
    "red_mean": _F8,
    "green_mean": _F8,
    "blue_mean": _F8,
    "type": pa.string(),
}

# The schema of a table with every documented column but the type's (what an empty table is written with).
TABLE_SCHEMA = pa.schema([(k, t) for k, t in TABLE_COLUMNS.items() if k != "type"])

Batch = Union[Mapping[str, Union[np.ndarray, Sequence]], pa.Table]


def _to_table(batch: Batch) -> pa.Table:
    """A batch as a pyarrow Table (columns of a dict must have equal length)."""
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    lengths = {name: len(col) for name, col in batch.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"table columns of different lengths: {lengths}")
    return pa.table({name: np.asarray(col) if not isinstance(col, pa.Array) else col for name, col in batch.items()})


def _schema_of(table: pa.Table) -> pa.Schema:
    """Documented columns first (documented types), then the others (their own types)."""
    names = table.column_names
    fields = [pa.field(n, t) for n, t in TABLE_COLUMNS.items() if n in names]
    fields += [table.schema.field(n) for n in names if n not in TABLE_COLUMNS]
    return pa.schema(fields)


class NucleusTableWriter:
    """
    Stream per-nucleus rows to Parquet (and optionally CSV), all or nothing.

    Example::

        with NucleusTableWriter("nuclei.parquet", csv_path="nuclei.csv") as writer:
            for batch in batches:          # dict of equal-length numpy columns, or pyarrow.Table
                writer.write(batch)

    The schema is fixed by the first batch (documented columns cast to their types and put
    first, see :data:`TABLE_COLUMNS`), or by ``schema``; later batches must have the same
    columns (any order) and are cast to it. A writer closed without any batch writes an empty
    table with ``schema`` (default :data:`TABLE_SCHEMA`). On an exception inside the ``with``
    block, or :meth:`abort`, the temporary files are deleted and the targets are untouched.

    Args:
        path: the Parquet file.
        csv_path: also write the rows as CSV here (header + one line a nucleus).
        overwrite: replace existing targets (otherwise :class:`OutputExistsError`, raised
            when the writer is created, before any work).
        schema: fix the schema up front instead of taking it from the first batch.
        compression: Parquet compression codec.
    """

    def __init__(
        self,
        path: str,
        csv_path: Optional[str] = None,
        overwrite: bool = False,
        schema: Optional[pa.Schema] = None,
        compression: str = "zstd",
    ):
        self.path = path
        self.csv_path = csv_path
        self.overwrite = overwrite
        self.schema = schema
        self.compression = compression
        self.num_rows = 0
        for target in [path] + ([csv_path] if csv_path else []):
            check_writable(target, overwrite=overwrite)
        self._stack = contextlib.ExitStack()
        self._parquet = None
        self._csv = None
        self._closed = False

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> "NucleusTableWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self._finish(exc_type, exc, tb)
        return False

    # -- writing ------------------------------------------------------------------------------
    def _open(self, schema: pa.Schema) -> None:
        self.schema = schema
        f = self._stack.enter_context(atomic_write(self.path, overwrite=self.overwrite))
        self._parquet = pq.ParquetWriter(f, schema, compression=self.compression)
        if self.csv_path:
            g = self._stack.enter_context(atomic_write(self.csv_path, overwrite=self.overwrite))
            self._csv = pa_csv.CSVWriter(g, schema)

    def write(self, batch: Batch) -> None:
        """Append the rows of ``batch`` (dict of equal-length columns, or a pyarrow Table)."""
        if self._closed:
            raise ValueError("write to a closed NucleusTableWriter")
        table = _to_table(batch)
        if self._parquet is None:
            self._open(self.schema if self.schema is not None else _schema_of(table))
        if set(table.column_names) != set(self.schema.names):
            raise ValueError(
                f"batch columns {sorted(table.column_names)} differ from the table's {sorted(self.schema.names)}"
            )
        table = table.select(self.schema.names).cast(self.schema)
        if table.num_rows == 0:
            return
        self._parquet.write_table(table)
        if self._csv is not None:
            self._csv.write_table(table)
        self.num_rows += table.num_rows

    def close(self) -> None:
        """Finish the files and move them into place (no-op when already closed)."""
        if self._closed:
            return
        if self._parquet is None:  # no batch: an empty table with the schema
            self._open(self.schema if self.schema is not None else TABLE_SCHEMA)
        self._finish(None, None, None)

    def abort(self) -> None:
        """Drop everything written so far; the targets are untouched."""
        if not self._closed:
            err = RuntimeError("table writer aborted")
            self._finish(RuntimeError, err, None)

    def _finish(self, exc_type, exc, tb) -> None:
        self._closed = True
        # Close the writers (footers) before atomic_write renames or deletes the files; after
        # an error too, so that no writer is left to flush into a closed file later.
        error = None
        for writer in (self._parquet, self._csv):
            if writer is not None:
                try:
                    writer.close()
                except BaseException as e:  # noqa: B902 - re-raised below
                    error = error or e
        if exc_type is None and error is not None:
            exc_type, exc, tb = type(error), error, error.__traceback__
        # With exc_type set, atomic_write deletes its temporary files and re-raises exc (the
        # caller's own exception then propagates from __exit__; a close error is raised here).
        try:
            self._stack.__exit__(exc_type, exc, tb)
        except BaseException as e:
            if e is not exc or exc is error:
                raise
        if error is not None and exc is error:
            raise error

def write_table(batch: Batch, path: str, csv_path: Optional[str] = None, overwrite: bool = False) -> int:
    """Write one batch as a whole table (see :class:`NucleusTableWriter`); returns the row count."""
    with NucleusTableWriter(path, csv_path=csv_path, overwrite=overwrite) as writer:
        writer.write(batch)
    return writer.num_rows
