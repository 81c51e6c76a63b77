"""TPC-H queries for ``ferrobatch-bench --suite tpch``: a ferrobatch pipeline with pyarrow
expressions, DuckDB SQL and (for some) Polars' lazy API, over the same
``tpchgen-cli`` Parquet files, which every engine reads itself (the scan is part of the
work). ``--rows`` sets the scale: rows of ``lineitem`` / 6e6 is the scale factor.

All 22 queries have a pipeline, DuckDB SQL (the standard text and parameters) and a Polars
lazy version; the tests run every pipeline against DuckDB on small data
(``tests/test_tpch.py``). Questions that are scans alone (``scan``,
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
    """Table `t` under `d`: one file, or a directory of parts (the tests' layout)."""
    return str(d / t / "*.parquet") if (d / t).is_dir() else str(d / f"{t}.parquet")


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


def q1_fb(d: Path) -> Any:
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


def q6_fb(d: Path) -> Any:
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


def q3_fb(d: Path) -> Any:
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


def q4_fb(d: Path) -> Any:
    late = _fb(d, "lineitem").filter(F("l_commitdate") < F("l_receiptdate"))
    return (
        _fb(d, "orders")
        .filter((F("o_orderdate") >= day("1993-07-01")) & (F("o_orderdate") < day("1993-10-01")))
        .join(late, left_on="o_orderkey", right_on="l_orderkey", how="semi")
        .group_by("o_orderpriority", {"order_count": (None, "size")}, sort=True)
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


def q12_fb(d: Path) -> Any:
    urgent = F("o_orderpriority").isin(["1-URGENT", "2-HIGH"])
    lines = _fb(d, "lineitem").filter(
        F("l_shipmode").isin(["MAIL", "SHIP"])
        & (F("l_commitdate") < F("l_receiptdate"))
        & (F("l_shipdate") < F("l_commitdate"))
        & (F("l_receiptdate") >= day("1994-01-01"))
        & (F("l_receiptdate") < day("1995-01-01"))
    )
    # The filtered lines (about 2 % of lineitem) are the join's built side; the orders probe.
    return (
        _fb(d, "orders")
        .join(lines, left_on="o_orderkey", right_on="l_orderkey")
        .with_columns(
            high=pc.if_else(urgent, 1, 0),
            low=pc.if_else(urgent, 0, 1),
        )
        .group_by(
            "l_shipmode",
            {"high_line_count": ("high", "sum"), "low_line_count": ("low", "sum")},
            sort=True,
        )
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


# -- the other queries: pipelines and DuckDB SQL (their Polars versions below) -------------


def dec(s: str) -> pc.Expression:
    return pc.scalar(Decimal(s))


def flt(e: pc.Expression) -> pc.Expression:
    return e.cast(pa.float64())


def _fb_nations_of(d: Path, region: str) -> Any:
    """The nations of `region` with the region's columns."""
    return (
        _fb(d, "region")
        .filter(F("r_name") == region)
        .join(_fb(d, "nation"), left_on="r_regionkey", right_on="n_regionkey")
    )


def _pl_nations_of(d: Path, region: str) -> Any:
    """:func:`_fb_nations_of` in Polars."""
    import polars as pl

    return (
        _pl(d, "region")
        .filter(pl.col("r_name") == region)
        .join(_pl(d, "nation"), left_on="r_regionkey", right_on="n_regionkey")
    )


def _nation_as(d: Path, prefix: str) -> Any:
    """The nation table as `<prefix>_nationkey`, `<prefix>` (its name)."""
    return _fb(d, "nation").select({f"{prefix}_nationkey": "n_nationkey", prefix: "n_name"})


def q2_fb(d: Path) -> Any:
    """Q2 minimum cost supplier."""
    europe = _fb_nations_of(d, "EUROPE")
    suppliers = _fb(d, "supplier").join(europe, left_on="s_nationkey", right_on="n_nationkey")
    parts = _fb(d, "part").filter((F("p_size") == 15) & pc.ends_with(F("p_type"), "BRASS"))
    offers = (
        _fb(d, "partsupp")
        .join(suppliers, left_on="ps_suppkey", right_on="s_suppkey")
        .join(parts, left_on="ps_partkey", right_on="p_partkey")
    )
    cheapest = offers.group_by("ps_partkey", {"min_cost": ("ps_supplycost", "min")})
    return (
        offers.join(
            cheapest, left_on=["ps_partkey", "ps_supplycost"], right_on=["ps_partkey", "min_cost"]
        )
        .select(
            {
                "s_acctbal": "s_acctbal",
                "s_name": "s_name",
                "n_name": "n_name",
                "p_partkey": "ps_partkey",
                "p_mfgr": "p_mfgr",
                "s_address": "s_address",
                "s_phone": "s_phone",
                "s_comment": "s_comment",
            }
        )  # fmt: skip
        .sort(
            ["s_acctbal", "n_name", "s_name", "p_partkey"],
            descending=[True, False, False, False],
            limit=100,
        )  # fmt: skip
    )


Q2 = """select s_acctbal, s_name, n_name, p_partkey, p_mfgr, s_address, s_phone, s_comment
from part, supplier, partsupp, nation, region
where p_partkey = ps_partkey and s_suppkey = ps_suppkey and p_size = 15
  and p_type like '%BRASS' and s_nationkey = n_nationkey and n_regionkey = r_regionkey
  and r_name = 'EUROPE'
  and ps_supplycost = (select min(ps_supplycost) from partsupp, supplier, nation, region
                       where p_partkey = ps_partkey and s_suppkey = ps_suppkey
                         and s_nationkey = n_nationkey and n_regionkey = r_regionkey
                         and r_name = 'EUROPE')
order by s_acctbal desc, n_name, s_name, p_partkey limit 100"""


def q5_fb(d: Path) -> Any:
    """Q5 local supplier volume."""
    asia = _fb_nations_of(d, "ASIA")
    suppliers = _fb(d, "supplier").join(asia, left_on="s_nationkey", right_on="n_nationkey")
    # The year's orders of Asian customers (about 3 % of the orders) are built once; lineitem
    # probes them.
    orders = (
        _fb(d, "orders")
        .filter((F("o_orderdate") >= day("1994-01-01")) & (F("o_orderdate") < day("1995-01-01")))
        .join(
            _fb(d, "customer").join(
                asia, left_on="c_nationkey", right_on="n_nationkey", how="semi"
            ),
            left_on="o_custkey",
            right_on="c_custkey",
        )  # fmt: skip
    )
    return (
        _fb(d, "lineitem")
        .with_columns(rev=F("l_extendedprice") * (ONE - F("l_discount")))
        .join(orders, left_on="l_orderkey", right_on="o_orderkey")
        # Two-column key: the supplier must be in the customer's nation.
        .join(
            suppliers, left_on=["l_suppkey", "c_nationkey"], right_on=["s_suppkey", "s_nationkey"]
        )
        .group_by("n_name", {"revenue": ("rev", "sum")})
        .sort("revenue", descending=True)
    )


Q5 = """select n_name, sum(l_extendedprice * (1 - l_discount)) revenue
from customer, orders, lineitem, supplier, nation, region
where c_custkey = o_custkey and l_orderkey = o_orderkey and l_suppkey = s_suppkey
  and c_nationkey = s_nationkey and s_nationkey = n_nationkey
  and n_regionkey = r_regionkey and r_name = 'ASIA'
  and o_orderdate >= date '1994-01-01' and o_orderdate < date '1995-01-01'
group by n_name order by revenue desc"""


def q7_fb(d: Path) -> Any:
    """Q7 volume shipping."""
    pair = ((F("supp_nation") == "FRANCE") & (F("cust_nation") == "GERMANY")) | (
        (F("supp_nation") == "GERMANY") & (F("cust_nation") == "FRANCE")
    )
    # Only French and German suppliers and customers can form a pair: their suppliers, and
    # their customers' orders, are the built sides.
    both = ["FRANCE", "GERMANY"]
    suppliers = _fb(d, "supplier").join(
        _nation_as(d, "supp_nation").filter(F("supp_nation").isin(both)),
        left_on="s_nationkey",
        right_on="supp_nation_nationkey",
    )
    customers = _fb(d, "customer").join(
        _nation_as(d, "cust_nation").filter(F("cust_nation").isin(both)),
        left_on="c_nationkey",
        right_on="cust_nation_nationkey",
    )
    orders = _fb(d, "orders").join(customers, left_on="o_custkey", right_on="c_custkey")
    return (
        _fb(d, "lineitem")
        .filter((F("l_shipdate") >= day("1995-01-01")) & (F("l_shipdate") <= day("1996-12-31")))
        .join(suppliers, left_on="l_suppkey", right_on="s_suppkey")
        .join(orders, left_on="l_orderkey", right_on="o_orderkey")
        .filter(pair)
        .with_columns(
            l_year=pc.year(F("l_shipdate")),
            volume=F("l_extendedprice") * (ONE - F("l_discount")),
        )
        .group_by(
            ["supp_nation", "cust_nation", "l_year"], {"revenue": ("volume", "sum")}, sort=True
        )  # fmt: skip
    )


Q7 = """select supp_nation, cust_nation, l_year, sum(volume) revenue from (
    select n1.n_name supp_nation, n2.n_name cust_nation,
           extract(year from l_shipdate) l_year,
           l_extendedprice * (1 - l_discount) volume
    from supplier, lineitem, orders, customer, nation n1, nation n2
    where s_suppkey = l_suppkey and o_orderkey = l_orderkey and c_custkey = o_custkey
      and s_nationkey = n1.n_nationkey and c_nationkey = n2.n_nationkey
      and ((n1.n_name = 'FRANCE' and n2.n_name = 'GERMANY')
           or (n1.n_name = 'GERMANY' and n2.n_name = 'FRANCE'))
      and l_shipdate between date '1995-01-01' and date '1996-12-31')
group by supp_nation, cust_nation, l_year
order by supp_nation, cust_nation, l_year"""


def q8_fb(d: Path) -> Any:
    """Q8 national market share."""
    america = _fb_nations_of(d, "AMERICA")
    # The lines of the one part type (about 0.7 % of lineitem) are built; the two years'
    # orders of American customers probe them.
    lines = _fb(d, "lineitem").join(
        _fb(d, "part").filter(F("p_type") == "ECONOMY ANODIZED STEEL"),
        left_on="l_partkey",
        right_on="p_partkey",
        how="semi",
    )
    customers = _fb(d, "customer").join(
        america, left_on="c_nationkey", right_on="n_nationkey", how="semi"
    )
    return (
        _fb(d, "orders")
        .filter((F("o_orderdate") >= day("1995-01-01")) & (F("o_orderdate") <= day("1996-12-31")))
        .join(customers, left_on="o_custkey", right_on="c_custkey", how="semi")
        .join(lines, left_on="o_orderkey", right_on="l_orderkey")
        .join(_fb(d, "supplier"), left_on="l_suppkey", right_on="s_suppkey")
        .join(_nation_as(d, "nation"), left_on="s_nationkey", right_on="nation_nationkey")
        .with_columns(
            o_year=pc.year(F("o_orderdate")),
            volume=F("l_extendedprice") * (ONE - F("l_discount")),
        )
        # if_else takes equal types: the zero as the volume's decimal type.
        .with_columns(
            brazil=pc.if_else(
                F("nation") == "BRAZIL", F("volume"), dec("0").cast(pa.decimal128(32, 4))
            )
        )  # fmt: skip
        .group_by("o_year", {"b": ("brazil", "sum"), "v": ("volume", "sum")}, sort=True)
        .select({"o_year": "o_year", "mkt_share": flt(F("b")) / flt(F("v"))})
    )


Q8 = """select o_year, sum(case when nation = 'BRAZIL' then volume else 0 end) / sum(volume)
       mkt_share
from (select extract(year from o_orderdate) o_year,
             l_extendedprice * (1 - l_discount) volume, n2.n_name nation
      from part, supplier, lineitem, orders, customer, nation n1, nation n2, region
      where p_partkey = l_partkey and s_suppkey = l_suppkey and l_orderkey = o_orderkey
        and o_custkey = c_custkey and c_nationkey = n1.n_nationkey
        and n1.n_regionkey = r_regionkey and r_name = 'AMERICA'
        and s_nationkey = n2.n_nationkey
        and o_orderdate between date '1995-01-01' and date '1996-12-31'
        and p_type = 'ECONOMY ANODIZED STEEL')
group by o_year order by o_year"""


def q9_fb(d: Path) -> Any:
    """Q9 product type profit."""
    green = _fb(d, "part").filter(pc.match_like(F("p_name"), "%green%"))
    # Only the green parts' supply costs are built.
    costs = _fb(d, "partsupp").join(green, left_on="ps_partkey", right_on="p_partkey", how="semi")
    return (
        _fb(d, "lineitem")
        .join(green, left_on="l_partkey", right_on="p_partkey", how="semi")
        .join(_fb(d, "supplier"), left_on="l_suppkey", right_on="s_suppkey")
        .join(
            costs,
            left_on=["l_suppkey", "l_partkey"],
            right_on=["ps_suppkey", "ps_partkey"],
        )  # fmt: skip
        .join(_fb(d, "orders"), left_on="l_orderkey", right_on="o_orderkey")
        .join(_nation_as(d, "nation"), left_on="s_nationkey", right_on="nation_nationkey")
        .with_columns(
            o_year=pc.year(F("o_orderdate")),
            amount=F("l_extendedprice") * (ONE - F("l_discount"))
            - F("ps_supplycost") * F("l_quantity"),
        )
        .group_by(["nation", "o_year"], {"sum_profit": ("amount", "sum")})
        .sort(["nation", "o_year"], descending=[False, True])
    )


Q9 = """select nation, o_year, sum(amount) sum_profit
from (select n_name nation, extract(year from o_orderdate) o_year,
             l_extendedprice * (1 - l_discount) - ps_supplycost * l_quantity amount
      from part, supplier, lineitem, partsupp, orders, nation
      where s_suppkey = l_suppkey and ps_suppkey = l_suppkey and ps_partkey = l_partkey
        and p_partkey = l_partkey and o_orderkey = l_orderkey
        and s_nationkey = n_nationkey and p_name like '%green%')
group by nation, o_year order by nation, o_year desc"""


def q10_fb(d: Path) -> Any:
    """Q10 returned items."""
    # The customer's columns are functions of its key: revenue is summed per key, the top 20
    # kept, and only then are their customer and nation columns joined in.
    top = (
        _fb(d, "lineitem")
        .filter(F("l_returnflag") == "R")
        .with_columns(rev=F("l_extendedprice") * (ONE - F("l_discount")))
        .join(
            _fb(d, "orders").filter(
                (F("o_orderdate") >= day("1993-10-01")) & (F("o_orderdate") < day("1994-01-01"))
            ),
            left_on="l_orderkey",
            right_on="o_orderkey",
        )
        .group_by("o_custkey", {"revenue": ("rev", "sum")})
        .sort(["revenue", "o_custkey"], descending=[True, False], limit=20)
    )
    return (
        _fb(d, "customer")
        .join(top, left_on="c_custkey", right_on="o_custkey")
        .join(_fb(d, "nation"), left_on="c_nationkey", right_on="n_nationkey")
        .sort(["revenue", "c_custkey"], descending=[True, False])
        .select(
            [
                "c_custkey",
                "c_name",
                "revenue",
                "c_acctbal",
                "n_name",
                "c_address",
                "c_phone",
                "c_comment",
            ]
        )  # fmt: skip
    )


Q10 = """select c_custkey, c_name, sum(l_extendedprice * (1 - l_discount)) revenue, c_acctbal,
  n_name, c_address, c_phone, c_comment
from customer, orders, lineitem, nation
where c_custkey = o_custkey and l_orderkey = o_orderkey
  and o_orderdate >= date '1993-10-01' and o_orderdate < date '1994-01-01'
  and l_returnflag = 'R' and c_nationkey = n_nationkey
group by c_custkey, c_name, c_acctbal, c_phone, n_name, c_address, c_comment
order by revenue desc, c_custkey limit 20"""


def q11_fb(d: Path) -> Any:
    """Q11 important stock."""
    stock = (
        _fb(d, "partsupp")
        .join(_fb(d, "supplier"), left_on="ps_suppkey", right_on="s_suppkey")
        .join(
            _fb(d, "nation").filter(F("n_name") == "GERMANY"),
            left_on="s_nationkey",
            right_on="n_nationkey",
            how="semi",
        )  # fmt: skip
        .with_columns(v=F("ps_supplycost") * F("ps_availqty"))
    )
    total = stock.group_by([], {"total": ("v", "sum")})
    return (
        stock.group_by("ps_partkey", {"value": ("v", "sum")})
        .join(total, how="cross")
        .filter(flt(F("value")) > flt(F("total")) * 0.0001)
        .select(["ps_partkey", "value"])
        .sort("value", descending=True)
    )


Q11 = """select ps_partkey, sum(ps_supplycost * ps_availqty) value
from partsupp, supplier, nation
where ps_suppkey = s_suppkey and s_nationkey = n_nationkey and n_name = 'GERMANY'
group by ps_partkey
having sum(ps_supplycost * ps_availqty) > (
    select sum(ps_supplycost * ps_availqty) * 0.0001
    from partsupp, supplier, nation
    where ps_suppkey = s_suppkey and s_nationkey = n_nationkey and n_name = 'GERMANY')
order by value desc"""


def q13_fb(d: Path) -> Any:
    """Q13 customer distribution."""
    orders = _fb(d, "orders").filter(~pc.match_like(F("o_comment"), "%special%requests%"))
    return (
        _fb(d, "customer")
        .join(orders, left_on="c_custkey", right_on="o_custkey", how="left")
        .group_by("c_custkey", {"c_count": ("o_orderkey", "count")})
        .group_by("c_count", {"custdist": (None, "size")})
        .sort(["custdist", "c_count"], descending=True)
    )


Q13 = """select c_count, count(*) custdist from (
    select c_custkey, count(o_orderkey) c_count
    from customer left outer join orders
      on c_custkey = o_custkey and o_comment not like '%special%requests%'
    group by c_custkey)
group by c_count order by custdist desc, c_count desc"""


def q14_fb(d: Path) -> Any:
    """Q14 promotion effect."""
    return (
        _fb(d, "lineitem")
        .filter((F("l_shipdate") >= day("1995-09-01")) & (F("l_shipdate") < day("1995-10-01")))
        .join(_fb(d, "part"), left_on="l_partkey", right_on="p_partkey")
        .with_columns(rev=flt(F("l_extendedprice") * (ONE - F("l_discount"))))
        .with_columns(promo=pc.if_else(pc.starts_with(F("p_type"), "PROMO"), F("rev"), 0.0))
        .group_by([], {"promo": ("promo", "sum"), "rev": ("rev", "sum")})
        .select({"promo_revenue": F("promo") * 100.0 / F("rev")})
    )


Q14 = """select 100.00 * sum(case when p_type like 'PROMO%'
                         then l_extendedprice * (1 - l_discount) else 0 end)
       / sum(l_extendedprice * (1 - l_discount)) promo_revenue
from lineitem, part
where l_partkey = p_partkey and l_shipdate >= date '1995-09-01'
  and l_shipdate < date '1995-10-01'"""


def q15_fb(d: Path) -> Any:
    """Q15 top supplier."""
    revenue = (
        _fb(d, "lineitem")
        .filter((F("l_shipdate") >= day("1996-01-01")) & (F("l_shipdate") < day("1996-04-01")))
        .with_columns(rev=F("l_extendedprice") * (ONE - F("l_discount")))
        .group_by("l_suppkey", {"total_revenue": ("rev", "sum")})
    )
    top = revenue.group_by([], {"max_revenue": ("total_revenue", "max")})
    return (
        _fb(d, "supplier")
        .join(revenue, left_on="s_suppkey", right_on="l_suppkey")
        .join(top, left_on="total_revenue", right_on="max_revenue", how="semi")
        .select(["s_suppkey", "s_name", "s_address", "s_phone", "total_revenue"])
        .sort("s_suppkey")
    )


Q15 = """with revenue as (
    select l_suppkey supplier_no, sum(l_extendedprice * (1 - l_discount)) total_revenue
    from lineitem
    where l_shipdate >= date '1996-01-01' and l_shipdate < date '1996-04-01'
    group by l_suppkey)
select s_suppkey, s_name, s_address, s_phone, total_revenue
from supplier, revenue
where s_suppkey = supplier_no
  and total_revenue = (select max(total_revenue) from revenue)
order by s_suppkey"""


def q16_fb(d: Path, excluded: pc.Expression | None = None) -> Any:
    """Q16 parts / supplier relation; `excluded`: the suppliers left out (TPC-H: those with
    complaints; ``Q16.format(excluded=...)`` is the SQL condition)."""
    if excluded is None:
        excluded = pc.match_like(F("s_comment"), "%Customer%Complaints%")
    left_out = _fb(d, "supplier").filter(excluded)
    parts = _fb(d, "part").filter(
        (F("p_brand") != "Brand#45")
        & ~pc.match_like(F("p_type"), "MEDIUM POLISHED%")
        & F("p_size").isin([49, 14, 23, 45, 19, 3, 36, 9])
    )
    return (
        _fb(d, "partsupp")
        .join(left_out, left_on="ps_suppkey", right_on="s_suppkey", how="anti")
        .join(parts, left_on="ps_partkey", right_on="p_partkey")
        .group_by(["p_brand", "p_type", "p_size"], {"supplier_cnt": ("ps_suppkey", "n_unique")})
        .sort(
            ["supplier_cnt", "p_brand", "p_type", "p_size"], descending=[True, False, False, False]
        )
    )


Q16 = """select p_brand, p_type, p_size, count(distinct ps_suppkey) supplier_cnt
from partsupp, part
where p_partkey = ps_partkey and p_brand <> 'Brand#45'
  and p_type not like 'MEDIUM POLISHED%' and p_size in (49, 14, 23, 45, 19, 3, 36, 9)
  and ps_suppkey not in (select s_suppkey from supplier where {excluded})
group by p_brand, p_type, p_size
order by supplier_cnt desc, p_brand, p_type, p_size"""


def q17_fb(d: Path) -> Any:
    """Q17 small-quantity revenue."""
    parts = _fb(d, "part").filter((F("p_brand") == "Brand#23") & (F("p_container") == "MED BOX"))
    lines = _fb(d, "lineitem").join(parts, left_on="l_partkey", right_on="p_partkey",
                                        how="semi")  # fmt: skip
    small = lines.group_by("l_partkey", {"avg_qty": ("l_quantity", "mean")})
    return (
        lines.join(small, on="l_partkey")
        .filter(flt(F("l_quantity")) < flt(F("avg_qty")) * 0.2)
        .group_by([], {"s": ("l_extendedprice", "sum")})
        .select({"avg_yearly": flt(F("s")) / 7.0})
    )


Q17 = """select sum(l_extendedprice) / 7.0 avg_yearly
from lineitem, part
where p_partkey = l_partkey and p_brand = 'Brand#23' and p_container = 'MED BOX'
  and l_quantity < (select 0.2 * avg(l_quantity) from lineitem
                    where l_partkey = p_partkey)"""


def q18_fb(d: Path, threshold: int = 300) -> Any:
    """Q18 large volume customers."""
    big = (
        _fb(d, "lineitem")
        .group_by("l_orderkey", {"q": ("l_quantity", "sum")})
        .filter(F("q") > dec(str(threshold)))
    )
    # The few big orders with their customers are built; lineitem probes them.
    orders = (
        _fb(d, "orders")
        .join(big, left_on="o_orderkey", right_on="l_orderkey", how="semi")
        .join(_fb(d, "customer"), left_on="o_custkey", right_on="c_custkey")
    )
    return (
        _fb(d, "lineitem")
        .join(orders, left_on="l_orderkey", right_on="o_orderkey")
        .rename({"l_orderkey": "o_orderkey"})
        .group_by(
            ["c_name", "o_custkey", "o_orderkey", "o_orderdate", "o_totalprice"],
            {"sum_qty": ("l_quantity", "sum")},
        )  # fmt: skip
        .rename({"o_custkey": "c_custkey"})
        .sort(
            ["o_totalprice", "o_orderdate", "o_orderkey"],
            descending=[True, False, False],
            limit=100,
        )  # fmt: skip
    )


Q18 = """select c_name, c_custkey, o_orderkey, o_orderdate, o_totalprice, sum(l_quantity) sum_qty
from customer, orders, lineitem
where o_orderkey in (select l_orderkey from lineitem group by l_orderkey
             having sum(l_quantity) > {threshold})
  and c_custkey = o_custkey and o_orderkey = l_orderkey
group by c_name, c_custkey, o_orderkey, o_orderdate, o_totalprice
order by o_totalprice desc, o_orderdate, o_orderkey limit 100"""


def q19_fb(d: Path) -> Any:
    """Q19 discounted revenue."""

    def case(brand: str, containers: list[str], lo: int, size: int) -> pc.Expression:
        return (
            (F("p_brand") == brand)
            & F("p_container").isin(containers)
            & (F("l_quantity") >= dec(str(lo)))
            & (F("l_quantity") <= dec(str(lo + 10)))
            & (F("p_size") >= 1)
            & (F("p_size") <= size)
        )

    def part_case(brand: str, containers: list[str], size: int) -> pc.Expression:
        return (F("p_brand") == brand) & F("p_container").isin(containers) & (
            F("p_size") >= 1) & (F("p_size") <= size)  # fmt: skip

    # The part conditions of the three cases, applied to part before the join (the built
    # side shrinks to the parts that can match), and the whole condition after it.
    parts = _fb(d, "part").filter(
        part_case("Brand#12", ["SM CASE", "SM BOX", "SM PACK", "SM PKG"], 5)
        | part_case("Brand#23", ["MED BAG", "MED BOX", "MED PKG", "MED PACK"], 10)
        | part_case("Brand#34", ["LG CASE", "LG BOX", "LG PACK", "LG PKG"], 15)
    )
    return (
        _fb(d, "lineitem")
        .filter(
            F("l_shipmode").isin(["AIR", "AIR REG"]) & (F("l_shipinstruct") == "DELIVER IN PERSON")
        )  # fmt: skip
        .join(parts, left_on="l_partkey", right_on="p_partkey")
        .filter(
            case("Brand#12", ["SM CASE", "SM BOX", "SM PACK", "SM PKG"], 1, 5)
            | case("Brand#23", ["MED BAG", "MED BOX", "MED PKG", "MED PACK"], 10, 10)
            | case("Brand#34", ["LG CASE", "LG BOX", "LG PACK", "LG PKG"], 20, 15)
        )
        .with_columns(rev=F("l_extendedprice") * (ONE - F("l_discount")))
        .group_by([], {"revenue": ("rev", "sum")})
    )


Q19 = """select sum(l_extendedprice * (1 - l_discount)) revenue
from lineitem, part
where p_partkey = l_partkey and l_shipmode in ('AIR', 'AIR REG')
  and l_shipinstruct = 'DELIVER IN PERSON'
  and ((p_brand = 'Brand#12' and p_container in ('SM CASE', 'SM BOX', 'SM PACK', 'SM PKG')
        and l_quantity >= 1 and l_quantity <= 11 and p_size between 1 and 5)
    or (p_brand = 'Brand#23'
        and p_container in ('MED BAG', 'MED BOX', 'MED PKG', 'MED PACK')
        and l_quantity >= 10 and l_quantity <= 20 and p_size between 1 and 10)
    or (p_brand = 'Brand#34' and p_container in ('LG CASE', 'LG BOX', 'LG PACK', 'LG PKG')
        and l_quantity >= 20 and l_quantity <= 30 and p_size between 1 and 15))"""


def q20_fb(d: Path) -> Any:
    """Q20 potential promotion."""
    forest = _fb(d, "part").filter(pc.starts_with(F("p_name"), "forest"))
    # Only the forest parts' shipments matter: the semi join runs before the group-by.
    shipped = (
        _fb(d, "lineitem")
        .filter((F("l_shipdate") >= day("1994-01-01")) & (F("l_shipdate") < day("1995-01-01")))
        .join(forest, left_on="l_partkey", right_on="p_partkey", how="semi")
        .group_by(["l_partkey", "l_suppkey"], {"qty": ("l_quantity", "sum")})
    )
    excess = (
        _fb(d, "partsupp")
        .join(forest, left_on="ps_partkey", right_on="p_partkey", how="semi")
        .join(shipped, left_on=["ps_partkey", "ps_suppkey"], right_on=["l_partkey", "l_suppkey"])
        .filter(flt(F("ps_availqty")) > flt(F("qty")) * 0.5)
    )
    return (
        _fb(d, "supplier")
        .join(excess, left_on="s_suppkey", right_on="ps_suppkey", how="semi")
        .join(
            _fb(d, "nation").filter(F("n_name") == "CANADA"),
            left_on="s_nationkey",
            right_on="n_nationkey",
            how="semi",
        )  # fmt: skip
        .select(["s_name", "s_address"])
        .sort("s_name")
    )


Q20 = """select s_name, s_address from supplier, nation
where s_suppkey in (
    select ps_suppkey from partsupp
    where ps_partkey in (select p_partkey from part where p_name like 'forest%')
      and ps_availqty > (select 0.5 * sum(l_quantity) from lineitem
                         where l_partkey = ps_partkey and l_suppkey = ps_suppkey
                           and l_shipdate >= date '1994-01-01'
                           and l_shipdate < date '1995-01-01'))
  and s_nationkey = n_nationkey and n_name = 'CANADA'
order by s_name"""


def q21_fb(d: Path) -> Any:
    """Q21 suppliers kept waiting."""
    # exists another supplier on the order <=> the order has more than one supplier; no other
    # supplier was late <=> exactly one supplier was late (this one). "More than one distinct
    # (non-null) supplier" is "smallest != largest": two decomposable aggregates, no set of
    # suppliers per order.
    lines = _fb(d, "lineitem")
    late = lines.filter(F("l_receiptdate") > F("l_commitdate"))
    span = {"lo": ("l_suppkey", "min"), "hi": ("l_suppkey", "max")}
    several = lines.group_by("l_orderkey", span).filter(F("lo") != F("hi"))
    alone = late.group_by("l_orderkey", span).filter(F("lo") == F("hi"))
    return (
        late.join(
            _fb(d, "orders").filter(F("o_orderstatus") == "F"),
            left_on="l_orderkey",
            right_on="o_orderkey",
            how="semi",
        )  # fmt: skip
        .join(several, on="l_orderkey", how="semi")
        .join(alone, on="l_orderkey", how="semi")
        .join(_fb(d, "supplier"), left_on="l_suppkey", right_on="s_suppkey")
        .join(
            _fb(d, "nation").filter(F("n_name") == "SAUDI ARABIA"),
            left_on="s_nationkey",
            right_on="n_nationkey",
            how="semi",
        )  # fmt: skip
        .group_by("s_name", {"numwait": (None, "size")})
        .sort(["numwait", "s_name"], descending=[True, False], limit=100)
    )


Q21 = """select s_name, count(*) numwait
from supplier, lineitem l1, orders, nation
where s_suppkey = l1.l_suppkey and o_orderkey = l1.l_orderkey and o_orderstatus = 'F'
  and l1.l_receiptdate > l1.l_commitdate
  and exists (select * from lineitem l2
              where l2.l_orderkey = l1.l_orderkey and l2.l_suppkey <> l1.l_suppkey)
  and not exists (select * from lineitem l3
                  where l3.l_orderkey = l1.l_orderkey and l3.l_suppkey <> l1.l_suppkey
                    and l3.l_receiptdate > l3.l_commitdate)
  and s_nationkey = n_nationkey and n_name = 'SAUDI ARABIA'
group by s_name order by numwait desc, s_name limit 100"""


def q22_fb(d: Path) -> Any:
    """Q22 global sales opportunity."""
    codes = ["13", "31", "23", "29", "30", "18", "17"]
    customers = (
        _fb(d, "customer")
        .with_columns(cntrycode=pc.utf8_slice_codeunits(F("c_phone"), 0, 2))
        .filter(F("cntrycode").isin(codes))
    )
    average = customers.filter(F("c_acctbal") > dec("0.00")).group_by(
        [], {"avg_bal": ("c_acctbal", "mean")}
    )
    return (
        customers.join(average, how="cross")
        .filter(flt(F("c_acctbal")) > F("avg_bal"))
        .join(_fb(d, "orders"), left_on="c_custkey", right_on="o_custkey", how="anti")
        .group_by(
            "cntrycode", {"numcust": (None, "size"), "totacctbal": ("c_acctbal", "sum")}, sort=True
        )  # fmt: skip
    )


Q22 = """select cntrycode, count(*) numcust, sum(c_acctbal) totacctbal
from (select substring(c_phone, 1, 2) cntrycode, c_acctbal from customer
      where substring(c_phone, 1, 2) in ('13', '31', '23', '29', '30', '18', '17')
        and c_acctbal > (select avg(c_acctbal) from customer
                         where c_acctbal > 0.00
                           and substring(c_phone, 1, 2)
                               in ('13', '31', '23', '29', '30', '18', '17'))
        and not exists (select * from orders where o_custkey = c_custkey))
group by cntrycode order by cntrycode"""


# -- Polars versions of the other queries -------------------------------------------------


def _pl_rev() -> Any:
    import polars as pl

    c = pl.col
    return c("l_extendedprice").cast(pl.Float64) * (1 - c("l_discount").cast(pl.Float64))


def q5_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    asia = _pl_nations_of(d, "ASIA")
    suppliers = _pl(d, "supplier").join(asia, left_on="s_nationkey", right_on="n_nationkey")
    orders = _pl(d, "orders").filter(
        (c("o_orderdate") >= date(1994, 1, 1)) & (c("o_orderdate") < date(1995, 1, 1))
    )
    return (
        _pl(d, "lineitem")
        .join(orders, left_on="l_orderkey", right_on="o_orderkey")
        .join(_pl(d, "customer"), left_on="o_custkey", right_on="c_custkey")
        .join(
            suppliers, left_on=["l_suppkey", "c_nationkey"], right_on=["s_suppkey", "s_nationkey"]
        )  # fmt: skip
        .group_by("n_name")
        .agg(_pl_rev().sum().alias("revenue"))
        .sort("revenue", descending=True)
        .collect()
    )


def q10_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    orders = _pl(d, "orders").filter(
        (c("o_orderdate") >= date(1993, 10, 1)) & (c("o_orderdate") < date(1994, 1, 1))
    )
    return (
        _pl(d, "lineitem")
        .filter(c("l_returnflag") == "R")
        .join(orders, left_on="l_orderkey", right_on="o_orderkey")
        .join(_pl(d, "customer"), left_on="o_custkey", right_on="c_custkey")
        .join(_pl(d, "nation"), left_on="c_nationkey", right_on="n_nationkey")
        .group_by(
            "o_custkey", "c_name", "c_acctbal", "c_phone", "n_name", "c_address", "c_comment"
        )  # fmt: skip
        .agg(_pl_rev().sum().alias("revenue"))
        .sort(["revenue", "o_custkey"], descending=[True, False])
        .head(20)
        .select(
            c("o_custkey").alias("c_custkey"),
            "c_name",
            "revenue",
            "c_acctbal",
            "n_name",
            "c_address",
            "c_phone",
            "c_comment",
        )  # fmt: skip
        .collect()
    )


def q14_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    rev = _pl_rev()
    return (
        _pl(d, "lineitem")
        .filter((c("l_shipdate") >= date(1995, 9, 1)) & (c("l_shipdate") < date(1995, 10, 1)))
        .join(_pl(d, "part"), left_on="l_partkey", right_on="p_partkey")
        .select(
            (
                100.0
                * pl.when(c("p_type").str.starts_with("PROMO")).then(rev).otherwise(0.0).sum()
                / rev.sum()
            ).alias("promo_revenue")
        )  # fmt: skip
        .collect()
    )


def q19_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col

    def case(brand: str, containers: list[str], lo: int, size: int) -> Any:
        return (
            (c("p_brand") == brand)
            & c("p_container").is_in(containers)
            & c("l_quantity").is_between(lo, lo + 10)
            & c("p_size").is_between(1, size)
        )

    return (
        _pl(d, "lineitem")
        .filter(
            c("l_shipmode").is_in(["AIR", "AIR REG"]) & (c("l_shipinstruct") == "DELIVER IN PERSON")
        )  # fmt: skip
        .join(_pl(d, "part"), left_on="l_partkey", right_on="p_partkey")
        .filter(
            case("Brand#12", ["SM CASE", "SM BOX", "SM PACK", "SM PKG"], 1, 5)
            | case("Brand#23", ["MED BAG", "MED BOX", "MED PKG", "MED PACK"], 10, 10)
            | case("Brand#34", ["LG CASE", "LG BOX", "LG PACK", "LG PKG"], 20, 15)
        )
        .select(_pl_rev().sum().alias("revenue"))
        .collect()
    )


def q2_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    europe = _pl_nations_of(d, "EUROPE")
    offers = (
        _pl(d, "partsupp")
        .join(
            _pl(d, "supplier").join(europe, left_on="s_nationkey", right_on="n_nationkey"),
            left_on="ps_suppkey",
            right_on="s_suppkey",
        )  # fmt: skip
        .join(
            _pl(d, "part").filter((c("p_size") == 15) & c("p_type").str.ends_with("BRASS")),
            left_on="ps_partkey",
            right_on="p_partkey",
        )  # fmt: skip
    )
    return (
        offers.filter(c("ps_supplycost") == c("ps_supplycost").min().over("ps_partkey"))
        .select(
            "s_acctbal",
            "s_name",
            "n_name",
            c("ps_partkey").alias("p_partkey"),
            "p_mfgr",
            "s_address",
            "s_phone",
            "s_comment",
        )  # fmt: skip
        .sort(
            ["s_acctbal", "n_name", "s_name", "p_partkey"], descending=[True, False, False, False]
        )  # fmt: skip
        .head(100)
        .collect()
    )


def q7_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    n1 = _pl(d, "nation").select(c("n_nationkey").alias("sn"), c("n_name").alias("supp_nation"))
    n2 = _pl(d, "nation").select(c("n_nationkey").alias("cn"), c("n_name").alias("cust_nation"))
    return (
        _pl(d, "lineitem")
        .filter(c("l_shipdate").is_between(date(1995, 1, 1), date(1996, 12, 31)))
        .join(_pl(d, "supplier"), left_on="l_suppkey", right_on="s_suppkey")
        .join(_pl(d, "orders"), left_on="l_orderkey", right_on="o_orderkey")
        .join(_pl(d, "customer"), left_on="o_custkey", right_on="c_custkey")
        .join(n1, left_on="s_nationkey", right_on="sn")
        .join(n2, left_on="c_nationkey", right_on="cn")
        .filter(
            ((c("supp_nation") == "FRANCE") & (c("cust_nation") == "GERMANY"))
            | ((c("supp_nation") == "GERMANY") & (c("cust_nation") == "FRANCE"))
        )
        .with_columns(c("l_shipdate").dt.year().cast(pl.Int64).alias("l_year"))
        .group_by("supp_nation", "cust_nation", "l_year")
        .agg(_pl_rev().sum().alias("revenue"))
        .sort("supp_nation", "cust_nation", "l_year")
        .collect()
    )


def q9_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    amount = _pl_rev() - c("ps_supplycost").cast(pl.Float64) * c("l_quantity").cast(pl.Float64)
    return (
        _pl(d, "lineitem")
        .join(
            _pl(d, "part").filter(c("p_name").str.contains("green")),
            left_on="l_partkey",
            right_on="p_partkey",
            how="semi",
        )  # fmt: skip
        .join(_pl(d, "supplier"), left_on="l_suppkey", right_on="s_suppkey")
        .join(
            _pl(d, "partsupp"),
            left_on=["l_suppkey", "l_partkey"],
            right_on=["ps_suppkey", "ps_partkey"],
        )  # fmt: skip
        .join(_pl(d, "orders"), left_on="l_orderkey", right_on="o_orderkey")
        .join(_pl(d, "nation"), left_on="s_nationkey", right_on="n_nationkey")
        .group_by(
            c("n_name").alias("nation"), c("o_orderdate").dt.year().cast(pl.Int64).alias("o_year")
        )  # fmt: skip
        .agg(amount.sum().alias("sum_profit"))
        .sort(["nation", "o_year"], descending=[False, True])
        .collect()
    )


def q11_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    stock = (
        _pl(d, "partsupp")
        .join(_pl(d, "supplier"), left_on="ps_suppkey", right_on="s_suppkey")
        .join(
            _pl(d, "nation").filter(c("n_name") == "GERMANY"),
            left_on="s_nationkey",
            right_on="n_nationkey",
            how="semi",
        )  # fmt: skip
        .with_columns((c("ps_supplycost").cast(pl.Float64) * c("ps_availqty")).alias("v"))
    )
    return (
        stock.group_by("ps_partkey")
        .agg(c("v").sum().alias("value"))
        .join(stock.select((c("v").sum() * 0.0001).alias("t")), how="cross")
        .filter(c("value") > c("t"))
        .select("ps_partkey", "value")
        .sort("value", descending=True)
        .collect()
    )


def q13_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    orders = _pl(d, "orders").filter(~c("o_comment").str.contains("special.*requests"))
    return (
        _pl(d, "customer")
        .join(orders, left_on="c_custkey", right_on="o_custkey", how="left")
        .group_by("c_custkey")
        .agg(c("o_orderkey").count().alias("c_count"))
        .group_by("c_count")
        .agg(pl.len().alias("custdist"))
        .sort(["custdist", "c_count"], descending=True)
        .collect()
    )


def q15_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    revenue = (
        _pl(d, "lineitem")
        .filter((c("l_shipdate") >= date(1996, 1, 1)) & (c("l_shipdate") < date(1996, 4, 1)))
        .group_by("l_suppkey")
        .agg(_pl_rev().sum().alias("total_revenue"))
    )
    return (
        _pl(d, "supplier")
        .join(revenue, left_on="s_suppkey", right_on="l_suppkey")
        .filter(c("total_revenue") == c("total_revenue").max())
        .select("s_suppkey", "s_name", "s_address", "s_phone", "total_revenue")
        .sort("s_suppkey")
        .collect()
    )


def q16_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    complaints = _pl(d, "supplier").filter(c("s_comment").str.contains("Customer.*Complaints"))
    parts = _pl(d, "part").filter(
        (c("p_brand") != "Brand#45")
        & ~c("p_type").str.starts_with("MEDIUM POLISHED")
        & c("p_size").is_in([49, 14, 23, 45, 19, 3, 36, 9])
    )
    return (
        _pl(d, "partsupp")
        .join(complaints, left_on="ps_suppkey", right_on="s_suppkey", how="anti")
        .join(parts, left_on="ps_partkey", right_on="p_partkey")
        .group_by("p_brand", "p_type", "p_size")
        .agg(c("ps_suppkey").n_unique().alias("supplier_cnt"))
        .sort(
            ["supplier_cnt", "p_brand", "p_type", "p_size"], descending=[True, False, False, False]
        )  # fmt: skip
        .collect()
    )


def q17_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    parts = _pl(d, "part").filter((c("p_brand") == "Brand#23") & (c("p_container") == "MED BOX"))
    lines = _pl(d, "lineitem").join(parts, left_on="l_partkey", right_on="p_partkey", how="semi")
    q = c("l_quantity").cast(pl.Float64)
    return (
        lines.filter(q < 0.2 * q.mean().over("l_partkey"))
        .select((c("l_extendedprice").cast(pl.Float64).sum() / 7.0).alias("avg_yearly"))
        .collect()
    )


def q18_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    big = (
        _pl(d, "lineitem")
        .group_by("l_orderkey")
        .agg(c("l_quantity").sum().alias("q"))
        .filter(c("q") > 300)
    )
    return (
        _pl(d, "orders")
        .join(big, left_on="o_orderkey", right_on="l_orderkey", how="semi")
        .join(_pl(d, "customer"), left_on="o_custkey", right_on="c_custkey")
        .join(_pl(d, "lineitem"), left_on="o_orderkey", right_on="l_orderkey")
        .group_by(
            "c_name", c("o_custkey").alias("c_custkey"), "o_orderkey", "o_orderdate", "o_totalprice"
        )  # fmt: skip
        .agg(c("l_quantity").sum().alias("sum_qty"))
        .sort(["o_totalprice", "o_orderdate", "o_orderkey"], descending=[True, False, False])
        .head(100)
        .collect()
    )


def q20_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    shipped = (
        _pl(d, "lineitem")
        .filter((c("l_shipdate") >= date(1994, 1, 1)) & (c("l_shipdate") < date(1995, 1, 1)))
        .group_by("l_partkey", "l_suppkey")
        .agg(c("l_quantity").cast(pl.Float64).sum().alias("qty"))
    )
    excess = (
        _pl(d, "partsupp")
        .join(
            _pl(d, "part").filter(c("p_name").str.starts_with("forest")),
            left_on="ps_partkey",
            right_on="p_partkey",
            how="semi",
        )  # fmt: skip
        .join(shipped, left_on=["ps_partkey", "ps_suppkey"], right_on=["l_partkey", "l_suppkey"])
        .filter(c("ps_availqty") > 0.5 * c("qty"))
    )
    return (
        _pl(d, "supplier")
        .join(excess, left_on="s_suppkey", right_on="ps_suppkey", how="semi")
        .join(
            _pl(d, "nation").filter(c("n_name") == "CANADA"),
            left_on="s_nationkey",
            right_on="n_nationkey",
            how="semi",
        )  # fmt: skip
        .select("s_name", "s_address")
        .sort("s_name")
        .collect()
    )


def q21_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    lines = _pl(d, "lineitem")
    late = lines.filter(c("l_receiptdate") > c("l_commitdate"))
    several = lines.group_by("l_orderkey").agg(c("l_suppkey").n_unique().alias("n"))
    alone = late.group_by("l_orderkey").agg(c("l_suppkey").n_unique().alias("n"))
    return (
        late.join(
            _pl(d, "orders").filter(c("o_orderstatus") == "F"),
            left_on="l_orderkey",
            right_on="o_orderkey",
            how="semi",
        )  # fmt: skip
        .join(several.filter(c("n") > 1), on="l_orderkey", how="semi")
        .join(alone.filter(c("n") == 1), on="l_orderkey", how="semi")
        .join(_pl(d, "supplier"), left_on="l_suppkey", right_on="s_suppkey")
        .join(
            _pl(d, "nation").filter(c("n_name") == "SAUDI ARABIA"),
            left_on="s_nationkey",
            right_on="n_nationkey",
            how="semi",
        )  # fmt: skip
        .group_by("s_name")
        .agg(pl.len().alias("numwait"))
        .sort(["numwait", "s_name"], descending=[True, False])
        .head(100)
        .collect()
    )


def q22_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    codes = ["13", "31", "23", "29", "30", "18", "17"]
    customers = (
        _pl(d, "customer")
        .with_columns(c("c_phone").str.slice(0, 2).alias("cntrycode"))
        .filter(c("cntrycode").is_in(codes))
    )
    avg = customers.filter(c("c_acctbal") > 0).select(
        c("c_acctbal").cast(pl.Float64).mean().alias("avg_bal")
    )
    return (
        customers.join(avg, how="cross")
        .filter(c("c_acctbal").cast(pl.Float64) > c("avg_bal"))
        .join(_pl(d, "orders"), left_on="c_custkey", right_on="o_custkey", how="anti")
        .group_by("cntrycode")
        .agg(pl.len().alias("numcust"), c("c_acctbal").sum().alias("totacctbal"))
        .sort("cntrycode")
        .collect()
    )


def q8_pl(d: Path) -> Any:
    import polars as pl

    c = pl.col
    america = _pl_nations_of(d, "AMERICA")
    orders = _pl(d, "orders").filter(
        c("o_orderdate").is_between(date(1995, 1, 1), date(1996, 12, 31))
    )
    volume = _pl_rev()
    return (
        _pl(d, "lineitem")
        .join(
            _pl(d, "part").filter(c("p_type") == "ECONOMY ANODIZED STEEL"),
            left_on="l_partkey",
            right_on="p_partkey",
            how="semi",
        )  # fmt: skip
        .join(orders, left_on="l_orderkey", right_on="o_orderkey")
        .join(_pl(d, "customer"), left_on="o_custkey", right_on="c_custkey")
        .join(america, left_on="c_nationkey", right_on="n_nationkey", how="semi")
        .join(_pl(d, "supplier"), left_on="l_suppkey", right_on="s_suppkey")
        .join(_pl(d, "nation"), left_on="s_nationkey", right_on="n_nationkey")
        .group_by(c("o_orderdate").dt.year().cast(pl.Int64).alias("o_year"))
        .agg(
            (
                pl.when(c("n_name") == "BRAZIL").then(volume).otherwise(0.0).sum() / volume.sum()
            ).alias("mkt_share")
        )  # fmt: skip
        .sort("o_year")
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


# (title, sort-key columns compared across engines, pipeline, SQL, Polars) per query.
Impl = Callable[[Path], Any]
TPCH: dict[int, tuple[str, tuple[str, ...], Impl, str, Impl]] = {
    1: ("pricing summary", ("l_returnflag", "l_linestatus"), q1_fb, Q1, q1_pl),
    2: ("minimum cost supplier", ("s_acctbal",), q2_fb, Q2, q2_pl),
    3: ("shipping priority", ("revenue",), q3_fb, Q3, q3_pl),
    4: ("order priority", ("o_orderpriority",), q4_fb, Q4, q4_pl),
    5: ("local supplier volume", ("revenue",), q5_fb, Q5, q5_pl),
    6: ("revenue change", (), q6_fb, Q6, q6_pl),
    7: ("volume shipping", ("supp_nation", "cust_nation", "l_year"), q7_fb, Q7, q7_pl),
    8: ("national market share", ("o_year",), q8_fb, Q8, q8_pl),
    9: ("product type profit", ("nation", "o_year"), q9_fb, Q9, q9_pl),
    10: ("returned items", ("revenue",), q10_fb, Q10, q10_pl),
    11: ("important stock", ("value",), q11_fb, Q11, q11_pl),
    12: ("shipping modes", ("l_shipmode",), q12_fb, Q12, q12_pl),
    13: ("customer distribution", ("custdist", "c_count"), q13_fb, Q13, q13_pl),
    14: ("promotion effect", (), q14_fb, Q14, q14_pl),
    15: ("top supplier", ("s_suppkey",), q15_fb, Q15, q15_pl),
    16: ("parts / supplier relation", ("supplier_cnt",), q16_fb,
         Q16.format(excluded="s_comment like '%Customer%Complaints%'"), q16_pl),
    17: ("small-quantity revenue", (), q17_fb, Q17, q17_pl),
    18: ("large volume customers", ("o_totalprice",), q18_fb, Q18.format(threshold=300), q18_pl),
    19: ("discounted revenue", (), q19_fb, Q19, q19_pl),
    20: ("potential part promotion", ("s_name",), q20_fb, Q20, q20_pl),
    21: ("suppliers kept waiting", ("numwait",), q21_fb, Q21, q21_pl),
    22: ("global sales opportunity", ("cntrycode",), q22_fb, Q22, q22_pl),
}  # fmt: skip


def _collect(fn: Callable[[Path], Any]) -> Callable[[Path], Any]:
    return lambda d: fn(d).collect()


QUERIES: dict[str, tuple[str, tuple[str, ...], dict[str, Callable[[Path], Any]]]] = {
    **{
        f"tpch-q{q}": (title, keys,
                       {"ferrobatch": _collect(fb_q), "duckdb": _duck_sql(sql), "polars": pl_q})
        for q, (title, keys, fb_q, sql, pl_q) in TPCH.items()
    },
    **{f"scan-{k}": (f"read lineitem {k}", (), _scan(cols)) for k, cols in SCAN_COLUMNS.items()},
}  # fmt: skip
