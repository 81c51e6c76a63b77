"""The benchmark's data generators and its answer cross-check."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ferrobatch.bench import data
from ferrobatch.bench.questions import answer_check, questions
from ferrobatch.bench.runner import cross_check, main


def test_groupby_cardinalities_and_ranges():
    n, k = 20_000, 10
    t = data.make_groupby(n, k)
    assert t.num_rows == n
    assert t.column_names == ["id1", "id2", "id3", "id4", "id5", "id6", "v1", "v2", "v3"]
    for c in ("id1", "id2", "id4", "id5"):
        assert len(pc.unique(t.column(c))) == k
    assert len(pc.unique(t.column("id3"))) <= n // k
    assert len(pc.unique(t.column("id3"))) > 0.9 * (n // k)
    assert pc.min(t.column("id6")).as_py() >= 1 and pc.max(t.column("id6")).as_py() <= n // k
    assert set(pc.unique(t.column("v1")).to_pylist()) == {1, 2, 3, 4, 5}
    assert set(pc.unique(t.column("v2")).to_pylist()) == set(range(1, 16))
    v3 = t.column("v3").to_numpy()
    assert 0 <= v3.min() and v3.max() <= 100 and np.all(np.round(v3, 6) == v3)
    assert all(len(s) == 5 for s in t.column("id1").to_pylist())
    assert all(len(s) == 12 and s.startswith("id") for s in t.column("id3").to_pylist()[:100])


def test_groupby_is_deterministic_by_seed():
    a = data.make_groupby(5000, 10, seed=1)
    assert a.equals(data.make_groupby(5000, 10, seed=1))
    assert not a.equals(data.make_groupby(5000, 10, seed=2))


@pytest.mark.parametrize("nas", [5, 20])
def test_groupby_missing_values(nas):
    n, k = 50_000, 100
    t = data.make_groupby(n, k, nas=nas)
    # v columns: exactly nas percent of rows.
    for c in ("v1", "v2", "v3"):
        assert t.column(c).null_count == n * nas // 100
    # id columns: nas percent of the distinct values are gone (every row holding them).
    for c in ("id1", "id4"):
        present = len(pc.unique(t.column(c)).drop_null())
        assert present == k - k * nas // 100
        assert abs(t.column(c).null_count / n - nas / 100) < 0.05


def test_groupby_sorted_flag():
    t = data.make_groupby(5000, 10, sort=1)
    keys = [(c, "ascending") for c in data.ID_COLS]
    assert t.equals(t.sort_by(keys))


def test_join_tables_key_split():
    n = 100_000
    j = data.make_join(n)
    x, small, medium, big = j["x"], j["small"], j["medium"], j["big"]
    assert (x.num_rows, small.num_rows, medium.num_rows, big.num_rows) == (n, 1, 100, n)
    # big: every right key distinct; 0.9 of them shared with x.
    assert len(pc.unique(big.column("id3"))) == n
    shared = pc.is_in(big.column("id3"), value_set=pc.unique(x.column("id3")))
    assert pc.sum(shared).as_py() == int(n * 0.9)
    # left keys: 0.9 shared + 0.1 left-only values, all present.
    assert len(pc.unique(x.column("id3"))) == n
    assert x.column("id6").to_pylist()[:5] == [f"id{v}" for v in x.column("id3").to_pylist()[:5]]
    assert j["x"].equals(data.make_join(n)["x"])


def test_answer_check_tells_answers_apart():
    q = next(q for q in questions() if q.qid == "s2")
    t = pa.table({"id6": [3, 1, 2], "v1": [1, 2, 3]})
    good = t.sort_by("id6")
    assert answer_check(q, good) == answer_check(q, good.to_pandas())
    assert answer_check(q, good) != answer_check(q, t)  # unsorted
    assert answer_check(q, good) != answer_check(q, good.slice(0, 2))


def test_cross_check_catches_a_wrong_engine():
    ok = {"rows": 10, "checksum": "v1=5.0"}
    results = [
        {"engine": "ferrobatch", "question": "d1", **ok},
        {"engine": "polars", "question": "d1", **ok},
        {"engine": "duckdb", "question": "d1", "rows": 10, "checksum": "v1=6.0"},
        {"engine": "pandas", "question": "s1", "error": "boom"},
    ]
    problems = cross_check(results)
    assert len(problems) == 1 and "d1" in problems[0] and "duckdb" in problems[0]
    assert cross_check(results[:2]) == []


def test_runner_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("FERROBATCH_DATA", str(tmp_path / "data"))
    engines = "ferrobatch,polars,pandas"
    rc = main(["--rows", "3000", "--reps", "1", "--engines", engines, "--out", str(tmp_path)])
    assert rc == 0
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert {r["engine"] for r in report["results"]} == {"ferrobatch", "polars", "pandas"}
    assert report["mismatches"] == []
    assert all(len(r["times"]) == 1 for r in report["results"])
    assert next(tmp_path.glob("*.png")).stat().st_size > 1000
