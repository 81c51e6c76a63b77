"""`Pipeline.write_parquet` writes with arrow-rs (columns encoded in parallel): the file must
read back, with pyarrow, DuckDB and Polars as independent readers, as exactly the rows and
types the pipeline produced — whatever the batch cuts and the thread count — with the row
groups, compression and encodings asked for."""

from __future__ import annotations

import math
import os

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nasty import tables
from test_executor_readers import wide_table

import ferrobatch as fb


def _same(a: pa.Table, b: pa.Table) -> None:
    assert a.schema == b.schema
    assert a.num_rows == b.num_rows
    for name in a.column_names:
        x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
        for u, v in zip(x, y, strict=True):
            if isinstance(u, float) and math.isnan(u):
                assert isinstance(v, float) and math.isnan(v), name
            else:
                assert u == v and str(u) == str(v), (name, u, v)  # str: -0.0 vs 0.0


def test_every_column_type_reads_back_equal(tmp_path) -> None:
    t = wide_table()
    path = tmp_path / "out.parquet"
    fb.scan(t, batch_size=777).write_parquet(path, row_group_size=1000)
    back = pq.read_table(path)
    _same(back, t)
    meta = pq.ParquetFile(path).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    full, rest = divmod(t.num_rows, 1000)
    assert sizes == [1000] * full + ([rest] if rest else [])
    # Independent readers see the same values (the flat columns they read alike).
    flat = ["i64", "i32", "f64", "b", "s", "date", "dec"]
    duck = duckdb.sql(f"select {', '.join(flat)} from '{path}'").arrow()
    duck = duck.read_all() if isinstance(duck, pa.RecordBatchReader) else duck
    for c in flat:
        assert duck.column(c).to_pylist() == pytest.approx(t.column(c).to_pylist(), nan_ok=True)
    polars = pl.read_parquet(path, columns=flat)
    for c in flat:
        got = polars[c].to_list()
        want = t.column(c).to_pylist()
        assert got == pytest.approx(want, nan_ok=True), c


@given(tables(max_rows=60), st.integers(1, 25), st.sampled_from([1, 2, 4]))
def test_nasty_tables_round_trip_whatever_the_cuts_and_threads(tmp_path_factory, tt, rg, threads):
    table, _ = tt
    path = tmp_path_factory.mktemp("w") / "t.parquet"
    before = fb.get_num_threads()
    fb.set_num_threads(threads)
    try:
        fb.scan(table, batch_size=7).write_parquet(path, row_group_size=rg)
    finally:
        fb.set_num_threads(before)
    _same(pq.read_table(path), table)
    meta = pq.ParquetFile(path).metadata
    assert all(meta.row_group(i).num_rows <= rg for i in range(meta.num_row_groups))


def test_file_bytes_do_not_depend_on_the_thread_count(tmp_path) -> None:
    t = wide_table(20_000)
    files = []
    before = fb.get_num_threads()
    try:
        for n in (1, 2, 4):
            fb.set_num_threads(n)
            path = tmp_path / f"t{n}.parquet"
            fb.scan(t, batch_size=3000).write_parquet(path, row_group_size=4096)
            files.append(path.read_bytes())
    finally:
        fb.set_num_threads(before)
    assert files[0] == files[1] == files[2]


def test_dictionary_only_where_values_repeat(tmp_path) -> None:
    n = 200_000
    t = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),  # distinct: plain
            "email": pa.array([f"user{i}@example.org" for i in range(n)]),  # distinct: plain
            "country": pa.array([["DE", "FR", "JP"][i % 3] for i in range(n)]),  # repeats
            "bucket": pa.array([i % 5000 for i in range(n)], pa.int32()),  # 40 rows per value
        }
    )
    path = tmp_path / "d.parquet"
    fb.scan(t).write_parquet(path)
    rg = pq.ParquetFile(path).metadata.row_group(0)
    enc = {rg.column(i).path_in_schema: rg.column(i).encodings for i in range(4)}
    assert "RLE_DICTIONARY" not in enc["id"] and "RLE_DICTIONARY" not in enc["email"]
    assert "RLE_DICTIONARY" in enc["country"] and "RLE_DICTIONARY" in enc["bucket"]
    _same(pq.read_table(path), t)


@pytest.mark.parametrize("codec", ["none", "snappy", "zstd", "lz4", "gzip", "brotli"])
def test_compression(tmp_path, codec) -> None:
    t = wide_table(2000)
    path = tmp_path / "c.parquet"
    fb.scan(t).write_parquet(path, compression=codec)
    want = {"none": "UNCOMPRESSED"}.get(codec, codec.upper())  # LZ4_RAW reads as LZ4
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == want
    _same(pq.read_table(path), t)


def test_bad_arguments_raise_and_leave_nothing(tmp_path) -> None:
    t = pa.table({"a": [1, 2, 3]})
    path = tmp_path / "x.parquet"
    with pytest.raises(ValueError, match="compression"):
        fb.scan(t).write_parquet(path, compression="lzma")
    with pytest.raises(TypeError, match="compression"):
        fb.scan(t).write_parquet(path, compression=3)
    with pytest.raises(ValueError, match="row_group_size"):
        fb.scan(t).write_parquet(path, row_group_size=0)
    with pytest.raises(TypeError, match="row_group_size"):
        fb.scan(t).write_parquet(path, row_group_size=1.5)
    with pytest.raises(TypeError):
        fb.scan(t).write_parquet(path, use_dictionary=False)
    assert os.listdir(tmp_path) == []


def test_empty_output_is_a_file_with_the_schema(tmp_path) -> None:
    t = pa.table({"a": pa.array([], pa.int64()), "s": pa.array([], pa.string())})
    path = tmp_path / "e.parquet"
    fb.scan(t).write_parquet(path)
    back = pq.read_table(path)
    assert back.schema == t.schema and back.num_rows == 0


def test_the_writer_checks_its_batches(tmp_path) -> None:
    path = tmp_path / "w.parquet"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        w = fb._core.ParquetWriter(fd, pa.schema([("a", pa.int64())]))
        with pytest.raises(ValueError, match="schema"):
            w.write_batch(pa.record_batch({"a": pa.array(["x"])}))
        w.write_batch(pa.record_batch({"a": pa.array([1, 2])}))
        w.close()
        with pytest.raises(ValueError, match="closed"):
            w.write_batch(pa.record_batch({"a": pa.array([1])}))
    finally:
        os.close(fd)
    assert pq.read_table(path).column("a").to_pylist() == [1, 2]
