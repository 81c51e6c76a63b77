"""The benchmark questions, per suite, with one implementation per engine.

Each question loads nothing itself: it gets the dataset already in the engine's own format
(``prepare``) and returns the answer, which ``answer_check`` turns into a row count and an
order-aware checksum so that engines can be cross-checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

ENGINES = ["ferrobatch", "polars", "duckdb", "pandas"]


@dataclass(frozen=True)
class Question:
    suite: str
    qid: str
    title: str
    dataset: str  # "groupby" | "join"
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
    for name in sorted(t.column_names):
        col = t.column(name)
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            s = pc.sum(col).as_py()
            parts.append(f"{name}={round(float(s or 0), 3)}")
    if q.sort_keys and n:
        for pos in sorted({0, n // 4, n // 2, 3 * n // 4, n - 1}):
            vals = [t.column(k)[pos].as_py() for k in q.sort_keys]
            parts.append(f"@{pos}={vals}")
    return n, ";".join(parts)
