"""The benchmark questions, per suite, with one implementation per engine.

Each question loads nothing itself: it gets the dataset already in the engine's own format
(``prepare``) and returns the answer, which ``answer_check`` turns into a row count and an
order-aware checksum so that engines can be cross-checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

ENGINES = ["ferrobatch", "polars", "duckdb", "pandas", "pyarrow"]


@dataclass(frozen=True)
class Question:
    suite: str
    qid: str
    title: str
    dataset: str  # "groupby" | "join" | "tpch" (Parquet files each engine reads itself)
    sort_keys: tuple[str, ...]  # order the answer must have (empty: order-free checksum)
    impls: dict[str, Callable[[Any], Any]]


def _sorted_by(keys: list[str], desc: list[bool]) -> dict[str, Callable[[Any], Any]]:
    import ferrobatch as fb

    order = ", ".join(f"{k} {'DESC' if d else 'ASC'}" for k, d in zip(keys, desc, strict=True))
    return {
        "ferrobatch": lambda d: fb.sort(d, keys, descending=desc),
        "polars": lambda d: d.sort(keys, descending=desc, maintain_order=True),
        "duckdb": lambda d: d.sql(f"SELECT * FROM x ORDER BY {order}").to_arrow_table(),
        "pandas": lambda d: d.sort_values(keys, ascending=[not x for x in desc], kind="stable"),
    }


def _dedup(keys: list[str]) -> dict[str, Callable[[Any], Any]]:
    import ferrobatch as fb

    part = ", ".join(keys)
    return {
        "ferrobatch": lambda d: fb.dedup(d, keys, keep="first"),
        "polars": lambda d: d.unique(keys, keep="first", maintain_order=True),
        "duckdb": lambda d: d.sql(
            f"SELECT * FROM x QUALIFY row_number() OVER (PARTITION BY {part} ORDER BY rowid) = 1"
        ).to_arrow_table(),
        "pandas": lambda d: d.drop_duplicates(keys, keep="first"),
    }


def _join(right: str, key: str, how: str) -> dict[str, Callable[[Any], Any]]:
    """x joined with one of the J1 right tables; clashing right columns get "_right"."""
    import ferrobatch as fb

    def duck(con: Any) -> Any:
        xcols = set(con.table("x").columns)
        sel = ", ".join(
            f"{right}.{c} AS {c}_right" if c in xcols else f"{right}.{c}"
            for c in con.table(right).columns
            if c != key
        )
        kind = "JOIN" if how == "inner" else "LEFT JOIN"
        sql = f"SELECT x.*, {sel} FROM x {kind} {right} USING ({key})"
        return con.sql(sql).to_arrow_table()

    return {
        "ferrobatch": lambda d: fb.join(d["x"], d[right], key, how=how),
        "polars": lambda d: d["x"].join(d[right], on=key, how=how),
        "duckdb": duck,
        "pandas": lambda d: d["x"].merge(d[right], on=key, how=how, suffixes=("", "_right")),
    }


def _agg(keys: list[str], aggs: dict[str, tuple], duck: str, pl_aggs: Any, pandas: Any) -> dict:
    """A db-benchmark group-by question: ferrobatch aggregates, the DuckDB select list, the
    Polars expressions (a function of the polars module), the pandas call."""
    import ferrobatch as fb

    by = ", ".join(keys)
    return {
        "ferrobatch": lambda d: fb.group_by(d, keys, aggs),
        "polars": lambda d: d.group_by(keys).agg(pl_aggs(_pl())),
        "duckdb": lambda d: d.sql(f"SELECT {by}, {duck} FROM x GROUP BY {by}").to_arrow_table(),
        "pandas": pandas,
    }


def _pl() -> Any:
    import polars as pl

    return pl


def _pd_agg(keys: list[str], **named: tuple[str, str]) -> Callable[[Any], Any]:
    return lambda d: d.groupby(keys, dropna=False, observed=True, sort=False, as_index=False).agg(
        **named
    )


def _q7() -> dict:
    import ferrobatch as fb

    def ferro(d: Any) -> Any:
        t = fb.group_by(d, ["id3"], {"hi": ("v1", "max"), "lo": ("v2", "min")})
        rng = pc.subtract(t.column("hi"), t.column("lo"))
        return pa.table({"id3": t.column("id3"), "range_v1_v2": rng})

    def pandas(d: Any) -> Any:
        r = d.groupby("id3", dropna=False, observed=True, sort=False).agg(
            v1=("v1", "max"), v2=("v2", "min")
        )
        return (r["v1"] - r["v2"]).rename("range_v1_v2").reset_index()

    return {
        "ferrobatch": ferro,
        "polars": lambda d: d.group_by("id3").agg(
            (_pl().max("v1") - _pl().min("v2")).alias("range_v1_v2")
        ),
        "duckdb": lambda d: d.sql(
            "SELECT id3, max(v1) - min(v2) AS range_v1_v2 FROM x GROUP BY id3"
        ).to_arrow_table(),
        "pandas": pandas,
    }


def _q8() -> dict:
    import ferrobatch as fb

    def ferro(d: Any) -> Any:
        t = fb.group_by(d, ["id6"], {"largest2_v3": ("v3", "top_k", 2)})
        top = t.column("largest2_v3").combine_chunks()
        ids = pc.take(t.column("id6"), pc.list_parent_indices(top))
        return pa.table({"id6": ids, "largest2_v3": pc.list_flatten(top)})

    return {
        "ferrobatch": ferro,
        "polars": lambda d: (
            d.drop_nulls("v3")
            .group_by("id6")
            .agg(_pl().col("v3").top_k(2).alias("largest2_v3"))
            .explode("largest2_v3")
        ),
        "duckdb": lambda d: d.sql(
            "SELECT id6, v3 AS largest2_v3 FROM (SELECT id6, v3, row_number() OVER "
            "(PARTITION BY id6 ORDER BY v3 DESC) AS order_v3 FROM x WHERE v3 IS NOT NULL) "
            "sub_query WHERE order_v3 <= 2"
        ).to_arrow_table(),
        "pandas": lambda d: (
            d[~d["v3"].isna()][["id6", "v3"]]
            .sort_values("v3", ascending=False)
            .groupby("id6", dropna=False, observed=True)
            .head(2)
            .rename(columns={"v3": "largest2_v3"})
        ),
    }


def _q9() -> dict:
    import ferrobatch as fb

    def ferro(d: Any) -> Any:
        t = fb.group_by(d, ["id2", "id4"], {"r": ("v1", "corr", "v2")})
        r2 = pc.multiply(t.column("r"), t.column("r"))
        return pa.table({"id2": t.column("id2"), "id4": t.column("id4"), "r2": r2})

    def pandas(d: Any) -> Any:
        import pandas as pd

        g = d[["id2", "id4", "v1", "v2"]].groupby(["id2", "id4"], observed=True, dropna=False)
        return g.apply(lambda x: pd.Series({"r2": x.corr()["v1"]["v2"] ** 2})).reset_index()

    return {
        "ferrobatch": ferro,
        "polars": lambda d: d.group_by(["id2", "id4"]).agg(
            (_pl().corr("v1", "v2") ** 2).alias("r2")
        ),
        "duckdb": lambda d: d.sql(
            "SELECT id2, id4, pow(corr(v1, v2), 2) AS r2 FROM x GROUP BY id2, id4"
        ).to_arrow_table(),
        "pandas": pandas,
    }


def _groupby_questions() -> list[Question]:
    """The ten db-benchmark group-by questions on G1 (answers order-free)."""
    ids = ["id1", "id2", "id3", "id4", "id5", "id6"]
    q = [
        ("q1", "sum v1 by id1", _agg(
            ["id1"], {"v1": ("v1", "sum")}, "sum(v1) AS v1",
            lambda pl: [pl.sum("v1")], _pd_agg(["id1"], v1=("v1", "sum")))),
        ("q2", "sum v1 by id1:id2", _agg(
            ["id1", "id2"], {"v1": ("v1", "sum")}, "sum(v1) AS v1",
            lambda pl: [pl.sum("v1")], _pd_agg(["id1", "id2"], v1=("v1", "sum")))),
        ("q3", "sum v1 mean v3 by id3", _agg(
            ["id3"], {"v1": ("v1", "sum"), "v3": ("v3", "mean")}, "sum(v1) AS v1, avg(v3) AS v3",
            lambda pl: [pl.sum("v1"), pl.mean("v3")],
            _pd_agg(["id3"], v1=("v1", "sum"), v3=("v3", "mean")))),
        ("q4", "mean v1:v3 by id4", _agg(
            ["id4"], {c: (c, "mean") for c in ("v1", "v2", "v3")},
            "avg(v1) AS v1, avg(v2) AS v2, avg(v3) AS v3",
            lambda pl: [pl.mean("v1"), pl.mean("v2"), pl.mean("v3")],
            _pd_agg(["id4"], v1=("v1", "mean"), v2=("v2", "mean"), v3=("v3", "mean")))),
        ("q5", "sum v1:v3 by id6", _agg(
            ["id6"], {c: (c, "sum") for c in ("v1", "v2", "v3")},
            "sum(v1) AS v1, sum(v2) AS v2, sum(v3) AS v3",
            lambda pl: [pl.sum("v1"), pl.sum("v2"), pl.sum("v3")],
            _pd_agg(["id6"], v1=("v1", "sum"), v2=("v2", "sum"), v3=("v3", "sum")))),
        ("q6", "median v3 sd v3 by id4 id5", _agg(
            ["id4", "id5"], {"median_v3": ("v3", "median"), "sd_v3": ("v3", "std")},
            "median(v3) AS median_v3, stddev(v3) AS sd_v3",
            lambda pl: [pl.median("v3").alias("median_v3"), pl.std("v3").alias("sd_v3")],
            _pd_agg(["id4", "id5"], median_v3=("v3", "median"), sd_v3=("v3", "std")))),
        ("q7", "max v1 - min v2 by id3", _q7()),
        ("q8", "largest two v3 by id6", _q8()),
        ("q9", "regression v1 v2 by id2 id4", _q9()),
        ("q10", "sum v3 count by id1:id6", _agg(
            ids, {"v3": ("v3", "sum"), "count": ("v1", "size")}, "sum(v3) AS v3, count(*) AS count",
            lambda pl: [pl.sum("v3"), pl.len().alias("count")],
            _pd_agg(ids, v3=("v3", "sum"), count=("v1", "size")))),
    ]  # fmt: skip
    return [Question("groupby", qid, title, "groupby", (), impls) for qid, title, impls in q]


def questions() -> list[Question]:
    s1 = _sorted_by(["id3", "v3"], [False, True])
    s2 = _sorted_by(["id6"], [False])
    s3 = _sorted_by(["id1", "id2", "id4"], [False, False, False])
    return [
        Question("sort", "s1", "sort 9 cols by [id3, v3 desc]", "groupby", ("id3", "v3"), s1),
        Question("sort", "s2", "sort 9 cols by id6", "groupby", ("id6",), s2),
        Question(
            "sort", "s3", "sort 9 cols by [id1, id2, id4]", "groupby", ("id1", "id2", "id4"), s3
        ),
        Question(
            "dedup",
            "d1",
            "dedup [id1, id2, id4] keep first",
            "groupby",
            (),
            _dedup(["id1", "id2", "id4"]),
        ),
        Question("dedup", "d2", "dedup [id3] keep first", "groupby", (), _dedup(["id3"])),
        # db-benchmark join questions on J1 (x: N rows; small N/1e6, medium N/1e3, big N).
        Question("join", "j1", "small inner on int", "join", (), _join("small", "id1", "inner")),
        Question("join", "j2", "medium inner on int", "join", (), _join("medium", "id2", "inner")),
        Question("join", "j3", "medium left on int", "join", (), _join("medium", "id2", "left")),
        Question(
            "join", "j4", "medium inner on string", "join", (), _join("medium", "id5", "inner")
        ),
        Question("join", "j5", "big inner on int", "join", (), _join("big", "id3", "inner")),
        *_groupby_questions(),
        *_tpch_questions(),
    ]


def _tpch_questions() -> list[Question]:
    from ferrobatch.bench.tpch import QUERIES

    return [
        Question("tpch", qid, title, "tpch", keys, impls)
        for qid, (title, keys, impls) in QUERIES.items()
    ]


SUITES = sorted({q.suite for q in questions()})


def prepare(engine: str, tables: dict[str, pa.Table]) -> Any:
    """The dataset in the engine's native form (loading is not timed): the table itself
    for a one-table dataset, else a dict by name (DuckDB: one connection holding them all)."""
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect()
        for name, t in tables.items():
            con.register("arrow_t", t)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM arrow_t")
            con.unregister("arrow_t")
        return con
    if engine == "ferrobatch":
        native = dict(tables)
    elif engine == "polars":
        import polars as pl

        native = {k: pl.from_arrow(t) for k, t in tables.items()}
    elif engine == "pandas":
        native = {k: t.to_pandas() for k, t in tables.items()}
    else:
        raise ValueError(f"unknown engine {engine!r}")
    return native["x"] if len(native) == 1 else native


def to_arrow(answer: Any) -> pa.Table:
    if isinstance(answer, pa.Table):
        return answer
    if hasattr(answer, "to_arrow"):
        return answer.to_arrow()  # polars
    import pandas as pd

    if isinstance(answer, pd.DataFrame):
        return pa.Table.from_pandas(answer, preserve_index=False)
    return pa.table(answer)


def answer_check(q: Question, answer: Any) -> tuple[int, str]:
    """Row count and checksum: sums of the numeric columns (rounded), plus, for sorted
    answers, the sort-key values at five fixed positions (ties may order payloads
    differently, the keys never)."""
    t = to_arrow(answer)
    n = t.num_rows
    parts = []
    # TPC-H: engines round decimal products differently (Polars keeps the larger input scale,
    # DuckDB and ferrobatch the exact product): compare to whole units.
    digits = 0 if q.dataset == "tpch" else 3
    for name in sorted(t.column_names):
        col = t.column(name)
        if pa.types.is_floating(col.type):
            # NaN and null are one "missing" (pandas turns NaN into null on the way to Arrow).
            col = pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)
        if pa.types.is_decimal(col.type):  # DuckDB's integer sums are int128
            col = col.cast(pa.float64())
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            s = pc.sum(col).as_py()
            parts.append(f"{name}={round(float(s or 0), digits)}")
    if q.sort_keys and n:
        for pos in sorted({0, n // 4, n // 2, 3 * n // 4, n - 1}):
            vals = [t.column(k)[pos].as_py() for k in q.sort_keys]
            vals = [round(float(v), digits) if isinstance(v, float | Decimal) else v for v in vals]
            parts.append(f"@{pos}={vals}")
    return n, ";".join(parts)
