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
    ]


SUITES = sorted({q.suite for q in questions()})


def prepare(engine: str, tables: dict[str, pa.Table]) -> Any:
    """The dataset in the engine's native form (loading is not timed)."""
    t = tables["x"]
    if engine == "ferrobatch":
        return t
    if engine == "polars":
        import polars as pl

        return pl.from_arrow(t)
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect()
        con.register("arrow_x", t)
        con.execute("CREATE TABLE x AS SELECT * FROM arrow_x")
        con.unregister("arrow_x")
        return con
    if engine == "pandas":
        return t.to_pandas()
    raise ValueError(f"unknown engine {engine!r}")


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
