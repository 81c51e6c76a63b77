"""The executor's Rust readers return what pyarrow returns for the same files (values and
types), whichever library wrote them; pushed filters prune and filter like pyarrow; results
do not depend on the thread count."""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

import ferrobatch as fb
from ferrobatch.pipeline import _plan, _Run

F = pc.field
N = 5_000


def wide_table(n: int = N) -> pa.Table:
    """Every column type a scan must keep, with nulls, NaN, -0.0, unicode and empty strings."""
    idx = list(range(n))
    words = ["", "a", "ä", "日本", "\U0001f600", "zz", None, "long string beyond twelve bytes"]
    return pa.table(
        {
            "i64": pa.array([None if i % 11 == 0 else i * 7 - n for i in idx], pa.int64()),
            "i32": pa.array([i % 100 for i in idx], pa.int32()),
            "u8": pa.array([i % 250 for i in idx], pa.uint8()),
            "f64": pa.array(
                [
                    [math.nan, -0.0, 0.0, math.inf, None, 1.5][i % 6] if i % 7 == 0 else i / 3
                    for i in idx
                ]  # fmt: skip
            ),
            "f32": pa.array([i / 8 for i in idx], pa.float32()),
            "b": pa.array([None if i % 5 == 0 else i % 2 == 0 for i in idx]),
            "s": pa.array([words[i % len(words)] for i in idx]),
            "ls": pa.array([words[(i * 3) % len(words)] for i in idx], pa.large_string()),
            "sv": pa.array([words[(i * 5) % len(words)] for i in idx], pa.string_view()),
            "dict": pa.array([words[i % 4] for i in idx]).dictionary_encode(),
            "bin": pa.array([bytes([i % 256]) * (i % 3) for i in idx], pa.binary()),
            "date": pa.array([dt.date(2020, 1, 1) + dt.timedelta(days=i % 900) for i in idx]),
            "ts": pa.array([i * 10**9 for i in idx], pa.timestamp("ns")),
            "ts_tz": pa.array([i * 10**6 for i in idx], pa.timestamp("us", tz="Europe/Berlin")),
            "dec": pa.array([Decimal(i) / 100 for i in idx], pa.decimal128(15, 2)),
            "list": pa.array([[i, None, i + 1][: i % 4] for i in idx], pa.list_(pa.int64())),
            "struct": pa.array([{"x": i, "y": str(i)} for i in idx]),
        }
    )


def values(col: pa.ChunkedArray) -> list:
    """A column's values, floats by repr (NaN equal to itself, -0.0 unequal to 0.0)."""
    return [repr(v) if isinstance(v, float) else v for v in col.to_pylist()]


def same(got: pa.Table, want: pa.Table) -> None:
    assert got.schema == want.schema, (got.schema, want.schema)
    for name in want.column_names:
        assert values(got.column(name)) == values(want.column(name)), name


@pytest.mark.parametrize("writer", ["pyarrow", "polars", "duckdb"])
def test_parquet_reader_equals_pyarrow(tmp_path, writer) -> None:
    t = wide_table()
    path = tmp_path / "t.parquet"
    if writer == "pyarrow":
        pq.write_table(t, path, row_group_size=700)  # many row groups
    elif writer == "polars":
        keep = [c for c in t.column_names if c not in ("sv", "dict", "ts_tz")]
        pl.from_arrow(t.select(keep)).write_parquet(path, row_group_size=700)
    else:
        keep = [c for c in t.column_names if c not in ("sv", "dict", "u8", "ts_tz")]
        con = duckdb.connect()
        con.register("t", t.select(keep))
        con.execute(f"copy t to '{path}' (format parquet, row_group_size 1024)")
    want = ds.dataset(path).to_table()
    same(fb.scan(path).collect(), want)
    # Projection and a pushed filter (statistics pruning and row filter) agree with pyarrow.
    p = fb.scan(path).filter((F("i32") < 10) & (F("i64") > 0)).select(["i64", "s", "i32"])
    small = want.select(["i64", "s", "i32"])
    same(p.collect(), small.filter((F("i32") < 10) & (F("i64") > 0)))


def test_parquet_many_files_and_batch_size(tmp_path) -> None:
    t = wide_table()
    for i, part in enumerate([t.slice(0, 1000), t.slice(1000, 0), t.slice(1000)]):
        pq.write_table(part, tmp_path / f"part-{i}.parquet", row_group_size=333)
    got = fb.scan(tmp_path, batch_size=100).collect()
    same(got, ds.dataset(tmp_path).to_table())
    assert max(b.num_rows for b in fb.scan(tmp_path, batch_size=100).to_batches()) <= 100


def test_parquet_files_with_different_types_are_refused(tmp_path) -> None:
    pq.write_table(pa.table({"a": pa.array([1], pa.int64())}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"a": pa.array([1], pa.int32())}), tmp_path / "b.parquet")
    with pytest.raises((ValueError, pa.ArrowInvalid, pa.ArrowTypeError)):
        fb.scan(tmp_path).collect()


def test_ipc_reader_equals_pyarrow(tmp_path) -> None:
    t = wide_table()
    path = tmp_path / "t.arrow"
    feather.write_feather(t, path, chunksize=900)
    same(fb.scan(path).collect(), ds.dataset(path, format="ipc").to_table())
    same(fb.scan(path).select(["sv", "dec"]).collect(), t.select(["sv", "dec"]))


def test_statistics_prune_row_groups(tmp_path) -> None:
    t = pa.table({"k": list(range(10_000)), "v": [float(i) for i in range(10_000)]})
    path = tmp_path / "t.parquet"
    pq.write_table(t, path, row_group_size=1000)
    for expr, rows in [
        (F("k") >= 9500, 1000),
        (F("k") < 1000, 1000),
        (F("k") == 4321, 1000),
        (pc.scalar(8000) <= F("k"), 2000),
        ((F("k") > 2500) & (F("k") < 3500), 2000),
        (F("v") > -1.0, 10_000),
    ]:
        p = fb.scan(path).filter(expr)
        got = p.collect()
        same(got, t.filter(expr))
        assert p.last_report.stages[-1].rows_in == rows, expr


def test_results_do_not_depend_on_thread_count(tmp_path) -> None:
    t = wide_table(20_000)
    path = tmp_path / "t.parquet"
    pq.write_table(t, path, row_group_size=1500)
    p = (
        fb.scan(path)
        .filter(F("i32") != 3)
        .with_columns(x=F("f64") * 3.3 + F("f32"), d=F("dec") * F("dec"))
        .group_by(
            "s",
            {
                "sx": ("x", "sum"),
                "mx": ("x", "mean"),
                "sd": ("d", "sum"),
                "n": (None, "size"),
                "first": ("i64", "first"),
            },
        )  # fmt: skip
    )
    before = fb.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 4):
            fb.set_num_threads(n)
            outs.append(p.collect())
            outs.append(fb.scan(path).filter(F("i32") < 50).head(777).collect())
    finally:
        fb.set_num_threads(before)
    for o in outs[2::2]:
        same(o, outs[0])  # bit for bit, floats included
    for o in outs[3::2]:
        same(o, outs[1])
    assert outs[1].num_rows == 777


def test_map_batches_and_head_keep_order(tmp_path) -> None:
    t = pa.table({"k": list(range(10_000))})
    path = tmp_path / "t.parquet"
    pq.write_table(t, path, row_group_size=97)
    seen: list[int] = []

    def tag(b: pa.RecordBatch) -> pa.RecordBatch:
        seen.extend(b.column(0).to_pylist())
        return b

    got = fb.scan(path).map_batches(tag).filter(F("k") >= 100).head(50).collect()
    assert got.column("k").to_pylist() == list(range(100, 150))
    assert seen[: len(seen)] == list(range(len(seen)))  # callbacks in input order
    assert len(seen) < 10_000  # head stopped the scan early


def test_expression_fallback_marked_and_correct(tmp_path) -> None:
    t = pa.table({"s": ["ab", "Cd", None, "ÄÖ"], "v": [1, 2, 3, 4]})
    p = fb.scan(t).with_columns(u=pc.utf8_reverse(F("s")), w=F("v") * 2)
    assert "with_columns ['u', 'w'] (evaluated by pyarrow: utf8_reverse)" in p.explain()
    assert "(runs in Python)" not in p.sort("v").explain()  # sorts run on the executor
    last = p.dedup("v", keep="last").explain()  # so does a dedup over the whole input
    assert "(whole input)" in last and "(runs in Python)" not in last
    assert "pyarrow" not in fb.scan(t).filter(F("v") > 2).explain()
    assert p.collect().column("u").to_pylist() == ["ba", "dC", None, "ÖÄ"]
    assert p.collect().column("w").to_pylist() == [2, 4, 6, 8]


def test_string_keys_read_as_dictionaries_keep_their_types(tmp_path) -> None:
    """A Parquet string column used only as a group-by key (through a filter, a rename and a
    with_columns) is read as a dictionary; the output still has the file's type and values."""
    t = wide_table()
    path = tmp_path / "t.parquet"
    pq.write_table(t, path, row_group_size=800)
    aggs = {"n": (None, "size"), "v": ("i32", "sum")}
    p = (
        fb.scan(path)
        .filter(F("sv") != "zz")
        .rename({"sv": "key"})
        .with_columns(w=F("i32") * 2)
        .group_by(["key", "ls"], aggs, sort=True)
    )
    got = p.collect()
    src = ds.dataset(path).to_table()
    i = src.column_names.index("sv")
    src = src.set_column(i, "sv", src.column("sv").cast(pa.large_string()))
    src = src.filter(F("sv") != "zz")
    src = src.set_column(i, "key", src.column("sv").cast(pa.string_view()))
    want = fb.group_by(src, ["key", "ls"], aggs, sort=True)
    assert got.schema.field("key").type == pa.string_view()
    assert got.schema.field("ls").type == pa.large_string()
    same(got, want)
    # A string column also aggregated (or computed on) is read as it is in the file.
    q = fb.scan(path).group_by("s", {"m": ("s", "max")}, sort=True)
    same(q.collect(), fb.group_by(ds.dataset(path).to_table(), "s", {"m": ("s", "max")},
                                  sort=True))  # fmt: skip


CSV = """i,f,s,d,t,n,e
1,1.5,a,2020-01-01,2020-01-01 10:00:00,,x
-2,inf,,2021-02-28,2021-02-28T11:22:33,,
,NaN,NA,,,,"a ""q"" b"
9223372036854775807,-0.0,"x,y",1999-12-31,1999-12-31 23:59:59,,N/A
3,1e5,null,2000-02-29,2000-02-29 00:00:00,,
4,.5,ä 日本,2000-03-01,2000-03-01 00:00:01,,
-7,-inf,  sp  ,1970-01-01,1970-01-01 00:00:00,,
8,1E-3,"multi
line",1970-01-02,1969-12-31 23:59:59,,
"""


def test_csv_reader_equals_pyarrow(tmp_path) -> None:
    """Same inferred types and values as pyarrow (its null values in non-string columns,
    strings never null, quoting, multi-line fields, booleans from its true / false values)."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(CSV)
    b.write_text(CSV.replace("\n8,", "\n9,"))
    for source in (a, [a, b]):
        want = ds.dataset(source, format="csv").to_table()
        same(fb.scan(source).collect(), want)
        same(fb.scan(source, batch_size=3).select(["s", "i"]).collect(), want.select(["s", "i"]))
        assert fb.scan(source).group_by([], {"n": (None, "size")}).collect()["n"][0].as_py() \
            == want.num_rows  # fmt: skip
    bools = tmp_path / "bools.csv"
    bools.write_text("b,c\ntrue,1\n0,2\nFalse,\nN/A,4\nTRUE,5\n1,6\nfalse,7\n")
    want = ds.dataset(bools, format="csv").to_table()
    assert want.schema.field("b").type == pa.bool_()
    same(fb.scan(bools).collect(), want)
    node = fb.scan(bools)._node
    assert node.lower(_plan(node), _Run(), ())[0][0] == "csv"  # the Rust reader
    # pyarrow infers from the first block (1 MB); a later value that is no bool is an error
    # for both readers.
    bad = tmp_path / "bad.csv"
    bad.write_text("b,c\n" + "true,1\n" * 200_000 + "yes,2\n")
    assert ds.dataset(bad, format="csv").schema.field("b").type == pa.bool_()
    with pytest.raises(pa.ArrowInvalid):
        ds.dataset(bad, format="csv").to_table()
    with pytest.raises(ValueError, match="'b'.*bool.*'yes'|bool.*yes"):
        fb.scan(bad).collect()


def test_projection_shares_common_sub_expressions() -> None:
    t = pa.table({"x": [1.5, None, -2.0, 4.0], "s": ["a", "b", None, "a"]})
    common = F("x") * 2 + 1
    p = fb.scan(t).with_columns(
        a=common, b=common * common, c=pc.if_else(F("s") == "a", common, F("x")),
        d=(F("s") == "a") & (common > 3),
    )  # fmt: skip
    got = p.collect()
    for name, e in [("a", common), ("b", common * common),
                    ("c", pc.if_else(F("s") == "a", common, F("x"))),
                    ("d", (F("s") == "a") & (common > 3))]:  # fmt: skip
        want = ds.dataset(t).to_table(columns={name: e})
        assert values(got.column(name)) == values(want.column(name)), name


@pytest.mark.parametrize("writer", ["pyarrow", "duckdb"])
def test_narrow_decimals_read_as_decimal64_give_decimal128_answers(tmp_path, writer) -> None:
    """Decimals of at most 18 digits that only native expressions and sum / mean read are
    carried as decimal64 inside the executor (pyarrow writes them as fixed-size binary,
    DuckDB as int64); the answers are DuckDB's, and every column that leaves the executor has
    the file's decimal128 type."""
    n = 5000
    t = pa.table(
        {
            "k": pa.array([["a", "b", "c"][i % 3] for i in range(n)]),
            "p": pa.array(
                [Decimal(i * 37 % 100_003) / 100 for i in range(n)], pa.decimal128(15, 2)
            ),
            "d": pa.array(
                [None if i % 11 == 0 else Decimal(i % 11) / 100 for i in range(n)],
                pa.decimal128(15, 2),
            ),
            "q": pa.array([Decimal(i % 50) for i in range(n)], pa.decimal128(12, 0)),
        }
    )
    path = tmp_path / "t.parquet"
    con = duckdb.connect()
    if writer == "pyarrow":
        pq.write_table(t, path, row_group_size=700)
    else:
        con.register("t", t)
        con.execute(f"copy t to '{path}' (format parquet, row_group_size 1024)")
    one = pc.scalar(Decimal("1"))
    p = (
        fb.scan(path)
        .filter((F("q") < pc.scalar(Decimal("24"))) & (F("d") >= pc.scalar(Decimal("0.02"))))
        .with_columns(net=F("p") * (one - F("d")), dd=F("d"))
        .group_by(
            ["k"],
            {
                "sum_p": ("p", "sum"),
                "mean_q": ("q", "mean"),
                "sum_net": ("net", "sum"),
                "max_dd": ("dd", "max"),
                "n": (None, "size"),
            },
            sort=True,
        )
    )
    got = p.collect()
    want = con.sql(
        f"""select k, sum(p), avg(q), sum(p * (1 - d)), max(d), count(*) from '{path}'
        where q < 24 and d >= 0.02 group by k order by k"""
    ).fetchall()
    assert got.schema.field("sum_p").type == pa.decimal128(38, 2)
    assert got.schema.field("sum_net").type == pa.decimal128(38, 4)
    assert got.schema.field("max_dd").type == pa.decimal128(15, 2)  # keeps its type
    rows = got.to_pylist()
    rows = [tuple(r.values()) for r in rows]
    assert [(r[0], r[1], r[3], r[4], r[5]) for r in rows] == [
        (w[0], w[1], w[3], w[4], w[5]) for w in want
    ]
    assert [r[2] for r in rows] == pytest.approx([float(w[2]) for w in want])
    # A narrowed column never leaves the executor as decimal64.
    out = fb.scan(path).filter(F("p") > pc.scalar(Decimal("10"))).collect()
    assert out.schema == ds.dataset(path).schema
    assert out.equals(ds.dataset(path).to_table(filter=F("p") > pc.scalar(Decimal("10"))))


def test_page_index_skips_pages_the_predicate_rules_out(tmp_path) -> None:
    """One row group of 200k rows in ~1k-row pages with a page index: a range predicate on
    the sorted column decodes only the pages that may match (the scan's rows in), and the
    answer is pyarrow's — for a narrow range, a wide one, two columns' conjuncts, and none."""
    n = 200_000
    t = pa.table(
        {
            "k": pa.array(range(n)),
            "g": pa.array([i // 1000 % 7 for i in range(n)]),
            "v": pa.array([None if i % 13 == 0 else i * 0.5 for i in range(n)]),
            "s": pa.array([str(i % 97) for i in range(n)]),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(t, path, row_group_size=n, data_page_size=8192, write_page_index=True)
    for pred, most in [
        ((F("k") >= 150_000) & (F("k") < 150_100), 5_000),
        ((F("k") >= 20_000) & (F("k") < 120_000) & (F("g") == 3), 110_000),
        (F("k") > 10 * n, 0),
        ((F("k") < 50_000) | (F("g") == 1), n),  # not a conjunction of comparisons
    ]:
        p = fb.scan(path).filter(pred)
        got = p.collect()
        assert got.equals(ds.dataset(path).to_table(filter=pred)), pred
        scanned = p.last_report.stages[-1].rows_in
        assert scanned <= most, (pred, scanned)
    # explain() reports what the reader will decode, from the same metadata.
    p = fb.scan(path).filter((F("k") >= 150_000) & (F("k") < 150_100))
    m = re.search(r"reads: 1 of 1 row groups, ([\d,]+) of 200,000 rows \(statistics, page index\)",
                  p.explain())  # fmt: skip
    assert m and int(m.group(1).replace(",", "")) <= 5_000, p.explain()


@pytest.mark.parametrize("dictionary", [True, False, "mixed"])
def test_predicate_only_string_columns_filter_right_in_any_encoding(tmp_path, dictionary) -> None:
    """String columns only the pushed filter reads are decoded as dictionaries where every
    row group stores them so (the filter then compares each page's distinct values once):
    the rows kept are pyarrow's, whatever the encoding, nulls and empty strings included."""
    n = 5000
    modes = ["AIR", "MAIL", "SHIP", "", None, "ÄIR", "AIR REG"]
    t = pa.table({
        "mode": pa.array([modes[i % 7] for i in range(n)], pa.string()),
        "note": pa.array([modes[(i * 3) % 7] for i in range(n)], pa.string_view()),
        "v": list(range(n)),
    })  # fmt: skip
    paths = []
    for part in range(2):
        p = tmp_path / f"p{part}.parquet"
        use = dictionary if isinstance(dictionary, bool) else part == 0
        pq.write_table(t.slice(part * n // 2, n // 2), p, use_dictionary=use, row_group_size=700)
        paths.append(str(p))
    predicates = [
        F("mode").isin(["AIR", "AIR REG", ""]),
        (F("mode") == "MAIL") | (F("note") != "SHIP"),
        pc.match_like(F("mode"), "%IR%") & pc.starts_with(F("note"), "A"),
        F("mode") > "B",
        pc.utf8_length(F("note")) > 3,
        F("mode").is_null() | (F("note") == ""),
    ]
    plain = t.set_column(1, "note", t.column("note").cast(pa.string()))  # pyarrow's filter
    for pred in predicates:
        got = fb.scan(paths).filter(pred).select(["v"]).collect()
        assert got.column("v").to_pylist() == plain.filter(pred).column("v").to_pylist(), pred
