# -*- coding: utf-8 -*-
"""The per-nucleus table writer: Parquet/CSV round trip, streaming, all-or-nothing, schema."""
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from d2_nucleus.export.tables import TABLE_SCHEMA, NucleusTableWriter, write_table
from d2_nucleus.utils.file_io import OutputExistsError


def _batch(start, n):
    rng = np.random.default_rng(start)
    return {
        "area_px": rng.integers(1, 500, n).astype(np.int32),  # cast to int64 by the schema
        "id": np.arange(start, start + n),
        "image": np.array([f"img{start}"] * n),
        "centroid_x": rng.random(n),
        "my_feature": rng.random(n).astype(np.float32),  # an undocumented column keeps its type
    }


def test_round_trip_parquet_and_csv(tmp_path):
    pq_path, csv_path = str(tmp_path / "t.parquet"), str(tmp_path / "t.csv")
    batches = [_batch(0, 7), _batch(7, 0), _batch(7, 13)]
    with NucleusTableWriter(pq_path, csv_path=csv_path) as writer:
        for b in batches:
            writer.write(b)
    assert writer.num_rows == 20
    table = pq.read_table(pq_path)
    # documented columns first, in documented order, with documented types
    assert table.column_names == ["id", "image", "centroid_x", "area_px", "my_feature"]
    assert table.schema.field("area_px").type == pa.int64()
    assert table.schema.field("my_feature").type == pa.float32()
    for name in table.column_names:
        expected = np.concatenate([b[name] for b in batches])
        np.testing.assert_array_equal(table[name].to_numpy(), expected)
    csv = pa_csv.read_csv(csv_path)
    np.testing.assert_allclose(csv["centroid_x"].to_numpy(), table["centroid_x"].to_numpy(), rtol=1e-15)
    assert csv["id"].to_pylist() == list(range(20))
    assert sorted(os.listdir(tmp_path)) == ["t.csv", "t.parquet"]  # no temporary files left


def test_streams_row_groups(tmp_path):
    path = str(tmp_path / "t.parquet")
    with NucleusTableWriter(path) as writer:
        for i in range(5):
            writer.write(pa.table(_batch(10 * i, 10)))
    assert pq.ParquetFile(path).num_row_groups == 5


def test_error_leaves_nothing_and_keeps_existing(tmp_path):
    path, csv_path = str(tmp_path / "t.parquet"), str(tmp_path / "t.csv")
    with pytest.raises(KeyError):
        with NucleusTableWriter(path, csv_path=csv_path) as writer:
            writer.write(_batch(0, 5))
            raise KeyError("boom")
    assert os.listdir(tmp_path) == []
    write_table(_batch(0, 3), path)
    with pytest.raises(OutputExistsError):
        NucleusTableWriter(path)
    with pytest.raises(ValueError, match="differ"):
        with NucleusTableWriter(path, overwrite=True) as writer:
            writer.write(_batch(0, 5))
            writer.write({"id": np.arange(3)})
    assert pq.read_table(path).num_rows == 3  # the earlier table is untouched
    with pytest.raises(ValueError, match="different lengths"):
        write_table({"id": np.arange(3), "score": np.ones(2)}, str(tmp_path / "u.parquet"))
    assert sorted(os.listdir(tmp_path)) == ["t.parquet"]


def test_empty_table_has_full_schema(tmp_path):
    path = str(tmp_path / "t.parquet")
    with NucleusTableWriter(path):
        pass
    table = pq.read_table(path)
    assert table.num_rows == 0 and table.schema.equals(TABLE_SCHEMA)
