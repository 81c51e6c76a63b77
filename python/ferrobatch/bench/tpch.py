"""TPC-H queries for ``ferrobatch-bench --suite tpch``: each written three times — a
ferrobatch pipeline with pyarrow expressions, DuckDB SQL, Polars' lazy API — over the same
``tpchgen-cli`` Parquet files, which every engine reads itself (the scan is part of the
work). ``--rows`` sets the scale: rows of ``lineitem`` / 6e6 is the scale factor.

The executor runs scans, filters, expressions and group-bys; joins and sorts run as before
(moved onto the executor by the next issue). Questions that are scans alone (``scan``,
``scan-<type>``) compare the Parquet readers: ferrobatch, Polars' ``read_parquet`` and
pyarrow's ``read_table``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

TABLES = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]
F = pc.field
ONE = pc.scalar(Decimal("1"))


def scale_of(rows: int) -> float:
    """The scale factor whose lineitem has about `rows` rows (at least 0.01)."""
    return max(round(rows / 6_000_000, 2), 0.01)


def tpch_path(rows: int) -> Path:
    """The generated Parquet files (one directory per table), made once and cached."""
    from ferrobatch.bench.data import cache_dir

    sf = scale_of(rows)
    d = cache_dir() / f"tpch-sf{sf:g}"
    if not (d / "done").exists():
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["tpchgen-cli", "parquet", "-s", f"{sf:g}", "--output-dir", str(d)],
            check=True,
            capture_output=True,
        )
        (d / "done").write_text("ok")
    return d


def day(s: str) -> pc.Expression:
    return pc.scalar(date.fromisoformat(s))


def _files(d: Path, t: str) -> str:
    return str(d / f"{t}.parquet")


def _fb(d: Path, t: str) -> Any:
    import ferrobatch as fb

    return fb.scan(_files(d, t))


def _pl(d: Path, t: str) -> Any:
    import polars as pl

    return pl.scan_parquet(_files(d, t))


def _duck(d: Path, sql: str) -> pa.Table:
    import duckdb

    con = duckdb.connect()
    for t in TABLES:
        con.execute(f"create view {t} as select * from read_parquet('{_files(d, t)}')")
    return con.sql(sql).to_arrow_table()


# -- Q1 pricing summary ------------------------------------------------------------------


def q1_fb(d: Path) -> pa.Table:
    ext, disc, tax = F("l_extendedprice"), F("l_discount"), F("l_tax")
    return (
        _fb(d, "lineitem")
        .filter(F("l_shipdate") <= day("1998-09-02"))
        .with_columns(
            disc_price=ext * (ONE - disc),
            # pyarrow's decimal rules would widen the second product past 38 digits.
            charge=(ext * (ONE - disc)).cast(pa.decimal128(18, 4)) * (ONE + tax),
        )
        .group_by(
            ["l_returnflag", "l_linestatus"],
            {
                "sum_qty": ("l_quantity", "sum"),
                "sum_base_price": ("l_extendedprice", "sum"),
                "sum_disc_price": ("disc_price", "sum"),
                "sum_charge": ("charge", "sum"),
                "avg_qty": ("l_quantity", "mean"),
                "avg_price": ("l_extendedprice", "mean"),
                "avg_disc": ("l_discount", "mean"),
                "count_order": (None, "size"),
            },
            sort=True,
        )
        .collect()
    )


Q1 = """select l_returnflag, l_linestatus, sum(l_quantity) sum_qty,
  sum(l_extendedprice) sum_base_price, sum(l_extendedprice * (1 - l_discount)) sum_disc_price,
  sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) sum_charge, avg(l_quantity) avg_qty,
  avg(l_extendedprice) avg_price, avg(l_discount) avg_disc, count(*) count_order
from lineitem where l_shipdate <= date '1998-09-02'
group by l_returnflag, l_linestatus order by l_returnflag, l_linestatus"""


def q1_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    # Polars rounds decimal products to the larger input scale (TPC-H wants them exact, as
    # DuckDB and ferrobatch compute them): its products here are in float64.
    f = lambda name: c(name).cast(pl.Float64)  # noqa: E731
    disc_price = f("l_extendedprice") * (1 - f("l_discount"))
    return (
        _pl(d, "lineitem")
        .filter(c("l_shipdate") <= date(1998, 9, 2))
        .group_by("l_returnflag", "l_linestatus")
        .agg(
            c("l_quantity").sum().alias("sum_qty"),
            c("l_extendedprice").sum().alias("sum_base_price"),
            disc_price.sum().alias("sum_disc_price"),
            (disc_price * (1 + f("l_tax"))).sum().alias("sum_charge"),
            c("l_quantity").mean().alias("avg_qty"),
            c("l_extendedprice").mean().alias("avg_price"),
            c("l_discount").mean().alias("avg_disc"),
            pl.len().alias("count_order"),
        )
        .sort("l_returnflag", "l_linestatus")
        .collect()
    )


# -- Q6 forecasting revenue change -------------------------------------------------------


def q6_fb(d: Path) -> pa.Table:
    dec = lambda s: pc.scalar(Decimal(s))  # noqa: E731
    return (
        _fb(d, "lineitem")
        .filter(
            (F("l_shipdate") >= day("1994-01-01"))
            & (F("l_shipdate") < day("1995-01-01"))
            & (F("l_discount") >= dec("0.05"))
            & (F("l_discount") <= dec("0.07"))
            & (F("l_quantity") < dec("24"))
        )
        .with_columns(rev=F("l_extendedprice") * F("l_discount"))
        .group_by([], {"revenue": ("rev", "sum")})
        .collect()
    )


Q6 = """select sum(l_extendedprice * l_discount) revenue from lineitem
where l_shipdate >= date '1994-01-01' and l_shipdate < date '1995-01-01'
  and l_discount between 0.05 and 0.07 and l_quantity < 24"""


def q6_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    return (
        _pl(d, "lineitem")
        .filter(
            (c("l_shipdate") >= date(1994, 1, 1))
            & (c("l_shipdate") < date(1995, 1, 1))
            & c("l_discount").is_between(Decimal("0.05"), Decimal("0.07"))
            & (c("l_quantity") < 24)
        )
        .select(
            (c("l_extendedprice").cast(pl.Float64) * c("l_discount").cast(pl.Float64))
            .sum()
            .alias("revenue")
        )
        .collect()
    )


# -- Q3 shipping priority (joins: not on the executor yet) -------------------------------


def q3_fb(d: Path) -> pa.Table:
    cust = _fb(d, "customer").filter(F("c_mktsegment") == "BUILDING")
    orders = (
        _fb(d, "orders")
        .filter(F("o_orderdate") < day("1995-03-15"))
        .join(cust, left_on="o_custkey", right_on="c_custkey", how="semi")
    )
    return (
        _fb(d, "lineitem")
        .filter(F("l_shipdate") > day("1995-03-15"))
        .with_columns(revenue=F("l_extendedprice") * (ONE - F("l_discount")))
        .join(orders, left_on="l_orderkey", right_on="o_orderkey")
        .group_by(["l_orderkey", "o_orderdate", "o_shippriority"], {"revenue": ("revenue", "sum")})
        .sort(["revenue", "o_orderdate"], descending=[True, False], limit=10)
        .select(["l_orderkey", "revenue", "o_orderdate", "o_shippriority"])
        .collect()
    )


Q3 = """select l_orderkey, sum(l_extendedprice * (1 - l_discount)) revenue, o_orderdate,
  o_shippriority
from customer, orders, lineitem
where c_mktsegment = 'BUILDING' and c_custkey = o_custkey and l_orderkey = o_orderkey
  and o_orderdate < date '1995-03-15' and l_shipdate > date '1995-03-15'
group by l_orderkey, o_orderdate, o_shippriority order by revenue desc, o_orderdate limit 10"""


def q3_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    cust = _pl(d, "customer").filter(c("c_mktsegment") == "BUILDING")
    orders = _pl(d, "orders").filter(c("o_orderdate") < date(1995, 3, 15))
    return (
        _pl(d, "lineitem")
        .filter(c("l_shipdate") > date(1995, 3, 15))
        .join(
            orders.join(cust, left_on="o_custkey", right_on="c_custkey", how="semi"),
            left_on="l_orderkey",
            right_on="o_orderkey",
        )  # fmt: skip
        .group_by("l_orderkey", "o_orderdate", "o_shippriority")
        .agg(
            (c("l_extendedprice").cast(pl.Float64) * (1 - c("l_discount").cast(pl.Float64)))
            .sum()
            .alias("revenue")
        )
        .sort(["revenue", "o_orderdate"], descending=[True, False])
        .head(10)
        .select("l_orderkey", "revenue", "o_orderdate", "o_shippriority")
        .collect()
    )


# -- Q4 order priority checking (semi join) ----------------------------------------------


def q4_fb(d: Path) -> pa.Table:
    late = _fb(d, "lineitem").filter(F("l_commitdate") < F("l_receiptdate"))
    return (
        _fb(d, "orders")
        .filter((F("o_orderdate") >= day("1993-07-01")) & (F("o_orderdate") < day("1993-10-01")))
        .join(late, left_on="o_orderkey", right_on="l_orderkey", how="semi")
        .group_by("o_orderpriority", {"order_count": (None, "size")}, sort=True)
        .collect()
    )


Q4 = """select o_orderpriority, count(*) order_count from orders
where o_orderdate >= date '1993-07-01' and o_orderdate < date '1993-10-01'
  and exists (select * from lineitem where l_orderkey = o_orderkey and l_commitdate < l_receiptdate)
group by o_orderpriority order by o_orderpriority"""


def q4_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    late = _pl(d, "lineitem").filter(c("l_commitdate") < c("l_receiptdate"))
    return (
        _pl(d, "orders")
        .filter((c("o_orderdate") >= date(1993, 7, 1)) & (c("o_orderdate") < date(1993, 10, 1)))
        .join(late, left_on="o_orderkey", right_on="l_orderkey", how="semi")
        .group_by("o_orderpriority")
        .agg(pl.len().alias("order_count"))
        .sort("o_orderpriority")
        .collect()
    )


# -- Q12 shipping modes and order priority -----------------------------------------------


def q12_fb(d: Path) -> pa.Table:
    urgent = F("o_orderpriority").isin(["1-URGENT", "2-HIGH"])
    lines = _fb(d, "lineitem").filter(
        F("l_shipmode").isin(["MAIL", "SHIP"])
        & (F("l_commitdate") < F("l_receiptdate"))
        & (F("l_shipdate") < F("l_commitdate"))
        & (F("l_receiptdate") >= day("1994-01-01"))
        & (F("l_receiptdate") < day("1995-01-01"))
    )
    return (
        lines.join(_fb(d, "orders"), left_on="l_orderkey", right_on="o_orderkey")
        .with_columns(
            high=pc.if_else(urgent, 1, 0),
            low=pc.if_else(urgent, 0, 1),
        )
        .group_by(
            "l_shipmode",
            {"high_line_count": ("high", "sum"), "low_line_count": ("low", "sum")},
            sort=True,
        )
        .collect()
    )


Q12 = """select l_shipmode,
  sum(case when o_orderpriority = '1-URGENT' or o_orderpriority = '2-HIGH' then 1 else 0 end)
    high_line_count,
  sum(case when o_orderpriority <> '1-URGENT' and o_orderpriority <> '2-HIGH' then 1 else 0 end)
    low_line_count
from orders, lineitem
where o_orderkey = l_orderkey and l_shipmode in ('MAIL', 'SHIP')
  and l_commitdate < l_receiptdate and l_shipdate < l_commitdate
  and l_receiptdate >= date '1994-01-01' and l_receiptdate < date '1995-01-01'
group by l_shipmode order by l_shipmode"""


def q12_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    urgent = c("o_orderpriority").is_in(["1-URGENT", "2-HIGH"])
    return (
        _pl(d, "lineitem")
        .filter(
            c("l_shipmode").is_in(["MAIL", "SHIP"])
            & (c("l_commitdate") < c("l_receiptdate"))
            & (c("l_shipdate") < c("l_commitdate"))
            & (c("l_receiptdate") >= date(1994, 1, 1))
            & (c("l_receiptdate") < date(1995, 1, 1))
        )
        .join(_pl(d, "orders"), left_on="l_orderkey", right_on="o_orderkey")
        .group_by("l_shipmode")
        .agg(
            urgent.cast(pl.Int64).sum().alias("high_line_count"),
            (~urgent).cast(pl.Int64).sum().alias("low_line_count"),
        )
        .sort("l_shipmode")
        .collect()
    )


# -- Parquet scans -----------------------------------------------------------------------

SCAN_COLUMNS = {
    "all": None,
    "int64": ["l_orderkey"],
    "decimal": ["l_extendedprice"],
    "date": ["l_shipdate"],
    "flag": ["l_returnflag"],
    "comment": ["l_comment"],
}


def _scan(columns: list[str] | None) -> dict[str, Callable[[Path], Any]]:
    def ferro(d: Path) -> Any:
        import ferrobatch as fb

        return fb.scan(_files(d, "lineitem"), columns=columns).collect()

    def polars(d: Path) -> Any:
        import polars as pl

        return pl.read_parquet(_files(d, "lineitem"), columns=columns)

    def pyarrow(d: Path) -> Any:
        import pyarrow.parquet as pq

        return pq.read_table(_files(d, "lineitem"), columns=columns)

    return {"ferrobatch": ferro, "polars": polars, "pyarrow": pyarrow}


def _duck_sql(sql: str) -> Callable[[Path], Any]:
    return lambda d: _duck(d, sql)


QUERIES: dict[str, tuple[str, tuple[str, ...], dict[str, Callable[[Path], Any]]]] = {
    "tpch-q1": ("pricing summary", ("l_returnflag", "l_linestatus"),
                {"ferrobatch": q1_fb, "duckdb": _duck_sql(Q1), "polars": q1_pl}),
    "tpch-q3": ("shipping priority", ("revenue",),
                {"ferrobatch": q3_fb, "duckdb": _duck_sql(Q3), "polars": q3_pl}),
    "tpch-q4": ("order priority", ("o_orderpriority",),
                {"ferrobatch": q4_fb, "duckdb": _duck_sql(Q4), "polars": q4_pl}),
    "tpch-q6": ("revenue change", (),
                {"ferrobatch": q6_fb, "duckdb": _duck_sql(Q6), "polars": q6_pl}),
    "tpch-q12": ("shipping modes", ("l_shipmode",),
                 {"ferrobatch": q12_fb, "duckdb": _duck_sql(Q12), "polars": q12_pl}),
    **{f"scan-{k}": (f"read lineitem {k}", (), _scan(cols)) for k, cols in SCAN_COLUMNS.items()},
}  # fmt: skip
