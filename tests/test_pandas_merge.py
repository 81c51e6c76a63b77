"""ferrobatch.pandas.merge against pandas.merge (PANDAS_SEMANTICS.md M1-M15)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_pandas_dropins import column

import ferrobatch as fb
from ferrobatch import pandas as fpd

# Key kinds; each side draws its key columns from the same kinds (int32 on one side next to
# int64 on the other compares by value, as in pandas).
KEY_KINDS = ["int", "int32", "float", "str", "object", "datetime", "datetime_tz", "bool", "Int64"]


def key_column(kind: str, n: int, draw) -> pd.Series:
    if kind == "int32":
        return pd.Series(
            draw(st.lists(st.sampled_from([0, 1, -1, 5, 2**31 - 1]), min_size=n, max_size=n)),
            dtype="int32",
        )
    return column(kind, n, draw)


@st.composite
def merge_frames(draw):
    """Two frames sharing 1-2 key columns (same or different names), int / bool payloads
    (to exercise the missing-row promotions) and an overlapping payload name."""
    nkeys = draw(st.integers(1, 2))
    kinds = [draw(st.sampled_from(KEY_KINDS)) for _ in range(nkeys)]
    rkinds = [
        draw(st.sampled_from(["int", "int32"])) if k in ("int", "int32") else k for k in kinds
    ]
    n_l, n_r = draw(st.integers(0, 12)), draw(st.integers(0, 12))
    same_names = draw(st.booleans())
    left = pd.DataFrame({f"k{j}": key_column(k, n_l, draw) for j, k in enumerate(kinds)})
    right = pd.DataFrame(
        {
            (f"k{j}" if same_names else f"r{j}"): key_column(k, n_r, draw)
            for j, k in enumerate(rkinds)
        }
    )
    left["v"] = np.arange(n_l, dtype=np.int64)
    left["flag"] = np.arange(n_l) % 2 == 0
    right["v"] = np.arange(n_r, dtype=np.int64) * 10
    right["w"] = np.arange(n_r) % 3 == 0
    if draw(st.booleans()):
        left.index = pd.Index(np.arange(n_l) * 7 + 3)
    lk = [f"k{j}" for j in range(nkeys)]
    rk = lk if same_names else [f"r{j}" for j in range(nkeys)]
    return left, right, lk, rk


def run_both(left, right, **kw):
    """(ours, pandas'), each a frame or the exception type it raised."""
    out = []
    for fn in (fpd.merge, pd.merge):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", fb.FallbackWarning)
                out.append(fn(left, right, **kw))
        except Exception as e:  # noqa: BLE001 - the comparison is the point
            out.append(type(e))
    return out


@given(
    merge_frames(),
    st.sampled_from(["inner", "left", "right", "outer"]),
    st.booleans(),
    st.sampled_from([False, True, "origin"]),
    st.sampled_from([None, None, "1:1", "1:m", "m:1", "m:m"]),
)
def test_merge_matches_pandas(frames, how, sort, indicator, validate):
    left, right, lk, rk = frames
    before = (left.copy(), right.copy())
    kw = {"how": how, "sort": sort, "indicator": indicator, "validate": validate}
    if lk == rk and len(lk) == 1:
        kw["on"] = lk[0]
    else:
        kw["left_on"], kw["right_on"] = lk, rk
    ours, theirs = run_both(left, right, **kw)
    if isinstance(theirs, type):
        assert ours is theirs
    else:
        pd.testing.assert_frame_equal(ours, theirs)
    pd.testing.assert_frame_equal(left, before[0])
    pd.testing.assert_frame_equal(right, before[1])


@given(merge_frames())
def test_cross_merge_matches_pandas(frames):
    left, right, _, _ = frames
    ours, theirs = run_both(left, right, how="cross", suffixes=("_l", "_r"))
    pd.testing.assert_frame_equal(ours, theirs)


def test_documented_behaviours():
    # M1: missing keys match each other; M3: left order, matches in right order.
    left = pd.DataFrame({"k": [1, math.nan, 2], "a": [1, 2, 3]})
    right = pd.DataFrame({"k": [math.nan, 2, math.nan], "b": [4, 5, 6]})
    got = fpd.merge(left, right, on="k")
    pd.testing.assert_frame_equal(got, pd.merge(left, right, on="k"))
    assert got["b"].tolist() == [4, 6, 5]
    # M2: None and NaN in object columns match.
    lo = pd.DataFrame({"k": pd.Series([None, "x"], dtype=object)})
    ro = pd.DataFrame({"k": pd.Series([math.nan, "x"], dtype=object), "b": [1, 2]})
    pd.testing.assert_frame_equal(fpd.merge(lo, ro, on="k"), pd.merge(lo, ro, on="k"))
    assert len(fpd.merge(lo, ro, on="k")) == 2
    # M3 example.
    l3 = pd.DataFrame({"k": [3, 1, 2, 1]})
    r3 = pd.DataFrame({"k": [1, 3, 4, 1]})
    assert fpd.merge(l3, r3, on="k")["k"].tolist() == [3, 1, 1, 1, 1]
    # M6: outer sorted, missing last; M8: promotions only where rows are unmatched.
    out = fpd.merge(l3.assign(v=1), r3.assign(w=True), on="k", how="outer")
    pd.testing.assert_frame_equal(
        out, pd.merge(l3.assign(v=1), r3.assign(w=True), on="k", how="outer")
    )
    assert out["v"].dtype == np.float64 and out["w"].dtype == object
    # M9: left_on / right_on keep both key columns; clashing suffixes raise MergeError.
    a = pd.DataFrame({"x": [1, 2], "v": [1, 2]})
    b = pd.DataFrame({"y": [2, 1], "v": [3, 4], "v_x": [0, 0]})
    b2 = b.drop(columns="v_x")
    pd.testing.assert_frame_equal(
        fpd.merge(a, b2, left_on="x", right_on="y"), pd.merge(a, b2, left_on="x", right_on="y")
    )
    with pytest.raises(pd.errors.MergeError):
        fpd.merge(a, b, left_on="x", right_on="y")
    # M11: validate raises MergeError, missing keys count as duplicates.
    dup = pd.DataFrame({"k": [math.nan, math.nan, 1.0]})
    with pytest.raises(pd.errors.MergeError, match="not unique in left dataset; not a one-to-one"):
        fpd.merge(dup, dup.iloc[2:], on="k", validate="1:1")
    # M12: int vs str raises pandas' ValueError; int vs float matches by value.
    with pytest.raises(ValueError, match="int64 and str"):
        fpd.merge(pd.DataFrame({"k": [1]}), pd.DataFrame({"k": ["1"]}), on="k")
    fl = pd.DataFrame({"k": [1.0, 2.5]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fb.FallbackWarning)
        pd.testing.assert_frame_equal(fpd.merge(l3, fl, on="k"), pd.merge(l3, fl, on="k"))
    # M13: -0.0 == 0.0; M14: fresh RangeIndex.
    z = fpd.merge(pd.DataFrame({"k": [-0.0]}, index=[5]), pd.DataFrame({"k": [0.0]}), on="k")
    assert len(z) == 1 and isinstance(z.index, pd.RangeIndex)


def test_suffix_clash_raises_like_pandas():
    a = pd.DataFrame({"x": [1, 2], "v": [1, 2]})
    b = pd.DataFrame({"x": [2, 1], "v": [3, 4], "v_x": [0, 0]})
    ours, theirs = run_both(a, b, on="x")
    assert ours is theirs is pd.errors.MergeError


def test_fallbacks_warn_and_match():
    from ferrobatch import _pandas_private

    # On a pandas whose internals are not tested every merge falls back, for that reason.
    untested = _pandas_private.unsupported() is not None
    left = pd.DataFrame({"k": pd.Categorical(["a", "b"]), "v": [1, 2]})
    right = pd.DataFrame({"k": pd.Categorical(["b", "c"]), "w": [3, 4]})
    with pytest.warns(fb.FallbackWarning, match="outside" if untested else "categorical"):
        got = fpd.merge(left, right, on="k")
    pd.testing.assert_frame_equal(got, pd.merge(left, right, on="k"))
    with pytest.warns(fb.FallbackWarning, match="left_index"):
        got = fpd.merge(left, right, left_index=True, right_index=True)
    pd.testing.assert_frame_equal(got, pd.merge(left, right, left_index=True, right_index=True))
    with pytest.warns(fb.FallbackWarning, match="outside" if untested else "left_anti"):
        got = fpd.merge(left, right, on="k", how="left_anti")


def test_merge_large_matches_pandas():
    rng = np.random.default_rng(3)
    n = 200_000
    left = pd.DataFrame(
        {
            "a": rng.integers(0, 5000, n),
            "s": rng.integers(0, 300, n).astype(str),
            "v": rng.random(n),
        }
    )
    right = pd.DataFrame(
        {
            "a": rng.integers(0, 6000, 8000),
            "s": rng.integers(0, 300, 8000).astype(str),
            "w": np.arange(8000),
        }
    )
    for how in ("inner", "left", "right", "outer"):
        pd.testing.assert_frame_equal(
            fpd.merge(left, right, on=["a", "s"], how=how),
            pd.merge(left, right, on=["a", "s"], how=how),
        )
