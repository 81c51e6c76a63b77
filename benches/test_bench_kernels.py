"""pytest-benchmark suites for the kernels at 10^5-10^6 rows.

pytest benches --benchmark-only            # measure
pytest benches --benchmark-disable         # run each once (what CI does, so they cannot rot)
"""

import pyarrow as pa
import pytest

import ferrobatch as fb
from ferrobatch.bench.data import make_groupby, make_join
from ferrobatch.bench.questions import questions


@pytest.fixture(scope="module", params=[10**5, 10**6], ids=["1e5", "1e6"])
def g1(request) -> pa.Table:
    return make_groupby(request.param)


def test_sort_two_keys(benchmark, g1):
    out = benchmark(fb.sort, g1, ["id3", "v3"], descending=[False, True])
    assert out.num_rows == g1.num_rows


def test_sort_int_key(benchmark, g1):
    out = benchmark(fb.sort, g1, "id6")
    assert out.num_rows == g1.num_rows


def test_sort_top_k(benchmark, g1):
    out = benchmark(fb.sort, g1, "v3", descending=True, limit=100)
    assert out.num_rows == 100


def test_dedup_three_keys(benchmark, g1):
    out = benchmark(fb.dedup, g1, ["id1", "id2", "id4"])
    assert 0 < out.num_rows <= g1.num_rows


def test_dedup_high_cardinality(benchmark, g1):
    out = benchmark(fb.dedup, g1, ["id3", "id6"], keep="last")
    assert 0 < out.num_rows <= g1.num_rows


@pytest.fixture(scope="module", params=[10**6], ids=["1e6"])
def j1(request) -> dict[str, pa.Table]:
    return make_join(request.param)


# db-benchmark join questions q1-q5 (J1: x joined with its small / medium / big tables).
JOINS = {
    "q1_small_inner_int": ("small", "id1", "inner"),
    "q2_medium_inner_int": ("medium", "id2", "inner"),
    "q3_medium_left_int": ("medium", "id2", "left"),
    "q4_medium_inner_str": ("medium", "id5", "inner"),
    "q5_big_inner_int": ("big", "id3", "inner"),
}


@pytest.mark.parametrize("question", sorted(JOINS))
def test_join(benchmark, j1, question):
    right, key, how = JOINS[question]
    out = benchmark(fb.join, j1["x"], j1[right], key, how=how)
    # About 90% of x's keys are in each right table (left keeps every row).
    assert 0.85 * j1["x"].num_rows < out.num_rows <= j1["x"].num_rows


# db-benchmark group-by questions q1-q10 on G1, through the same public-API implementations
# that ferrobatch-bench times.
GROUPBY = [q for q in questions() if q.suite == "groupby"]


@pytest.mark.parametrize("question", GROUPBY, ids=[q.qid for q in GROUPBY])
def test_group_by(benchmark, g1, question):
    out = benchmark(question.impls["ferrobatch"], g1)
    # Every question has at least the 100 groups of its smallest key and at most one per row.
    assert 100 <= out.num_rows <= 2 * g1.num_rows
