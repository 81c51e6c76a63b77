"""pytest-benchmark suites for the kernels at 10^5-10^6 rows.

pytest benches --benchmark-only            # measure
pytest benches --benchmark-disable         # run each once (what CI does, so they cannot rot)
"""

import pyarrow as pa
import pytest

import ferrobatch as fb
from ferrobatch.bench.data import make_groupby


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
