"""A nightly customer job, written once with the ferrobatch pipeline and once in pandas.

    python examples/nightly_customer_job.py [--contacts 500000] [--transactions 5000000]

1. Generates a CRM export (seeded, so every run sees the same data) under ``--dir``:
   ``contacts.parquet`` — contacts with duplicates (the same person entered again with a
   messier email: capitals, stray spaces), some invalid or missing emails;
   ``transactions/part-*.parquet`` — orders keyed by the shop's (clean) email, some from guests
   who are not contacts, each paid / refunded / cancelled, amounts in cents, UTC timestamps.
2. Runs the job as one pipeline: standardize emails (trim, lower case), drop invalid ones,
   keep the most recently updated contact per email, join the paid transactions, compute per
   customer revenue / order count / last order time, rank customers into segments by revenue
   percentile (top 1% platinum, next 9% gold, next 40% silver, rest bronze), check the output
   and write it to Parquet atomically; prints the run report.
3. Runs the same job in pandas, asserts that both outputs are equal and prints the speedup.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import ferrobatch as fb

QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
SEGMENTS = ["platinum", "gold", "silver", "bronze"]  # revenue >= p99, >= p90, >= p50, below


# -- data --------------------------------------------------------------------------------------


def generate(folder: str, contacts: int, transactions: int, seed: int = 7) -> None:
    """The CRM export: contacts with duplicates and messy emails, transactions in parts."""
    rng = np.random.default_rng(seed)
    people = int(contacts * 0.8)  # the rest of the rows are re-entries of the same people
    first = np.array(["anna", "ben", "chloé", "dmitri", "eve", "fatima", "götz", "hiro", "ines"])
    last = np.array(["smith", "müller", "garcía", "kowalski", "nguyen", "o'brien", "rossi"])
    domains = np.array(["gmail.com", "example.org", "post.de", "mail.fr", "corp.co.uk"])
    f = first[rng.integers(0, len(first), people)]
    la = last[rng.integers(0, len(last), people)]
    d = domains[rng.integers(0, len(domains), people)]
    ids = np.arange(people)
    clean = np.char.add(np.char.add(np.char.add(np.char.add(f, "."), la), ids.astype(str)), "@")
    clean = np.char.add(clean, d)
    names = np.char.add(np.char.add(np.char.capitalize(f), " "), np.char.capitalize(la))

    # Duplicates: people entered again, with the email typed differently.
    dup = rng.integers(0, people, contacts - people)
    rows = np.concatenate([ids, dup])
    rng.shuffle(rows)
    email = clean[rows].astype(object)
    messy = rng.random(len(rows))
    upper = messy < 0.3
    email[upper] = np.char.upper(clean[rows][upper].astype(str))
    spaced = (messy >= 0.3) & (messy < 0.45)
    email[spaced] = np.char.add(np.char.add("  ", clean[rows][spaced].astype(str)), " ")
    email[messy > 0.995] = "n/a"  # not an email
    email[(messy > 0.99) & (messy <= 0.995)] = None
    start = np.datetime64("2020-01-01T00:00:00", "s")
    updated = start + rng.integers(0, 5 * 365 * 86400, len(rows)).astype("timedelta64[s]")
    contacts_t = pa.table({
        "contact_id": pa.array(np.arange(len(rows)) + 1_000_000),
        "name": pa.array(names[rows]),
        "email": pa.array(email, pa.string()),
        "country": pa.array(np.array(["DE", "FR", "GB", "US", "JP"])[rows % 5]),
        "updated_at": pa.array(updated.astype("datetime64[us]")).cast(pa.timestamp("us", "UTC")),
    })  # fmt: skip
    os.makedirs(folder, exist_ok=True)
    pq.write_table(contacts_t, os.path.join(folder, "contacts.parquet"))

    # Transactions: most buyers are contacts (some buy a lot), a few are guests.
    tx_dir = os.path.join(folder, "transactions")
    os.makedirs(tx_dir, exist_ok=True)
    guests = pa.array([f"guest{i}@shop.example" for i in range(20_000)])
    pool = pa.concat_arrays([pa.array(clean), guests])
    parts = 5
    for part in range(parts):
        n = transactions // parts
        who = np.minimum(rng.zipf(1.3, n) - 1, len(pool) - 1)
        who = (who * 7919 + part) % len(pool)  # spread the heavy buyers over the pool
        ts = start + rng.integers(0, 5 * 365 * 86400, n).astype("timedelta64[s]")
        t = pa.table({
            "order_id": pa.array(np.arange(n) + part * n),
            "email": pool.take(pa.array(who)),
            "amount_cents": pa.array(rng.integers(99, 50_000, n)),
            "status": pa.array(np.array(["paid", "paid", "paid", "refunded", "cancelled"])[
                rng.integers(0, 5, n)]),
            "order_ts": pa.array(ts.astype("datetime64[us]")).cast(pa.timestamp("us", "UTC")),
        })  # fmt: skip
        pq.write_table(t, os.path.join(tx_dir, f"part-{part}.parquet"))


# -- the job -------------------------------------------------------------------------------------


def ferrobatch_job(folder: str, out: str) -> fb.Report:
    contacts = (
        fb.scan(os.path.join(folder, "contacts.parquet"))
        .with_columns(email=pc.utf8_lower(pc.utf8_trim_whitespace(pc.field("email"))))
        .filter(pc.match_like(pc.field("email"), "%_@_%"))
        .sort("updated_at", descending=True)
        .dedup("email")  # keep="first": the most recently updated record per email
        .select(["contact_id", "email", "country"])
    )
    customers = (
        fb.scan(os.path.join(folder, "transactions"))
        .filter(pc.field("status") == "paid")
        .join(contacts, on="email")  # the contacts are built once; transactions stream
        .group_by(
            ["contact_id", "email", "country"],
            {
                "revenue_cents": ("amount_cents", "sum"),
                "orders": (None, "size"),
                "last_order": ("order_ts", "max"),
            },
        )  # fmt: skip
    )
    # The revenue percentiles over all customers: a second consumer of the same sub-plan.
    cuts = customers.group_by(
        [], {name: ("revenue_cents", "quantile", q) for name, q in QUANTILES.items()}
    )
    r = pc.field("revenue_cents")
    job = (
        customers.join(cuts, how="cross")
        .with_columns(
            segment=pc.case_when(
                pc.make_struct(r >= pc.field("p99"), r >= pc.field("p90"), r >= pc.field("p50")),
                *SEGMENTS,
            )
        )  # fmt: skip
        .select(
            ["contact_id", "email", "country", "revenue_cents", "orders", "last_order", "segment"]
        )  # fmt: skip
        .sort(["revenue_cents", "contact_id"], descending=[True, False])
        .expect(min_rows=1, unique=["contact_id"], not_null=["email", "revenue_cents"])
    )
    print(job.explain(), "\n")
    return job.write_parquet(out, overwrite=True)


def pandas_job(folder: str) -> pd.DataFrame:
    c = pd.read_parquet(os.path.join(folder, "contacts.parquet"))
    c["email"] = c["email"].str.strip().str.lower()
    c = c[c["email"].str.match(r".+@.+", na=False)]
    c = c.sort_values("updated_at", ascending=False, kind="stable").drop_duplicates("email")
    c = c[["contact_id", "email", "country"]]
    t = pd.read_parquet(os.path.join(folder, "transactions"))
    t = t[t["status"] == "paid"]
    g = (
        t.merge(c, on="email")
        .groupby(["contact_id", "email", "country"], sort=False)
        .agg(
            revenue_cents=("amount_cents", "sum"),
            orders=("order_id", "size"),
            last_order=("order_ts", "max"),
        )
        .reset_index()
    )
    q = {name: g["revenue_cents"].quantile(v) for name, v in QUANTILES.items()}
    r = g["revenue_cents"]
    g["segment"] = np.select(
        [r >= q["p99"], r >= q["p90"], r >= q["p50"]], SEGMENTS[:3], default=SEGMENTS[3]
    )
    g = g.sort_values(["revenue_cents", "contact_id"], ascending=[False, True], kind="stable")
    assert g["contact_id"].is_unique and g["email"].notna().all()
    return g.reset_index(drop=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contacts", type=float, default=5e5)
    ap.add_argument("--transactions", type=float, default=5e6)
    ap.add_argument("--dir", default="/tmp/ferrobatch-crm")
    args = ap.parse_args()

    start = time.perf_counter()
    generate(args.dir, int(args.contacts), int(args.transactions))
    print(f"generated {int(args.contacts):,} contacts and {int(args.transactions):,} "
          f"transactions in {time.perf_counter() - start:.1f} s under {args.dir}\n")  # fmt: skip

    out = os.path.join(args.dir, "customers.parquet")
    start = time.perf_counter()
    report = ferrobatch_job(args.dir, out)
    fb_seconds = time.perf_counter() - start
    print(report, "\n")

    start = time.perf_counter()
    expected = pandas_job(args.dir)
    pd_seconds = time.perf_counter() - start

    got = pq.read_table(out).to_pandas()
    got["segment"] = got["segment"].astype(expected["segment"].dtype)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    counts = got["segment"].value_counts().reindex(SEGMENTS).to_dict()
    print(f"{len(got):,} customers {counts}: equal to pandas")
    print(f"ferrobatch {fb_seconds:.2f} s, pandas {pd_seconds:.2f} s: "
          f"{pd_seconds / fb_seconds:.1f}x faster (same data, one run each)")  # fmt: skip


if __name__ == "__main__":
    main()
