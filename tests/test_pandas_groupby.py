"""fpd.groupby_agg against df.groupby(by, dropna=, sort=).agg(**named): the same frame
(assert_frame_equal: values, dtypes, index / MultiIndex, column order), G1-G11 of
PANDAS_SEMANTICS.md, and the fallbacks."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ferrobatch
from ferrobatch import pandas as fpd

KEY_KINDS = ["int", "float", "str", "object_str", "bool", "datetime"]
VALUE_FUNCS = {
    "int": ["sum", "mean", "min", "max", "count", "size", "first", "last", "std", "var", "median",
            "nunique"],
    "float": ["sum", "mean", "min", "max", "count", "first", "last", "std", "var", "median",
              "nunique"],
    "bool": ["sum", "mean", "count", "nunique", "min", "max"],
    "str": ["min", "max", "count", "first", "last", "nunique"],
    "datetime": ["min", "max", "count", "first", "last", "nunique"],
}  # fmt: skip


def _series(draw: Any, kind: str, n: int, name: str, pool_size: int) -> pd.Series:
    if kind == "int":
        vals = draw(
            st.lists(
                st.integers(-5, 5) | st.sampled_from([2**62, -(2**62)]), min_size=n, max_size=n
            )
        )
        return pd.Series(vals, dtype="int64", name=name)
    if kind == "float":
        choice = st.sampled_from(
            [0.0, -0.0, 1.5, -2.0, math.nan, math.inf, -math.inf, 3.25][: pool_size + 3]
        )
        return pd.Series(draw(st.lists(choice, min_size=n, max_size=n)), dtype="float64", name=name)
    if kind == "bool":
        return pd.Series(
            draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool, name=name
        )
    if kind in ("str", "object_str"):
        choice = st.none() | st.sampled_from(["a", "B", "b", "", "ä", "日本"][: pool_size + 1])
        vals = draw(st.lists(choice, min_size=n, max_size=n))
        return pd.Series(vals, dtype=object if kind == "object_str" else "str", name=name)
    choice = st.none() | st.sampled_from(
        ["2020-01-01", "1999-12-31 23:59:59", "2020-01-01 00:00:01"]
    )
    vals = draw(st.lists(choice, min_size=n, max_size=n))
    return pd.Series(pd.to_datetime(vals, format="ISO8601"), name=name)


@st.composite
def frames(draw: Any) -> tuple[pd.DataFrame, list[str], dict[str, tuple[str, str]]]:
    n = draw(st.integers(1, 30))
    pool = draw(st.integers(1, 4))
    key_kinds = draw(st.lists(st.sampled_from(KEY_KINDS), min_size=1, max_size=2))
    cols = {}
    keys = []
    for j, kind in enumerate(key_kinds):
        name = f"k{j}"
        cols[name] = _series(draw, kind, n, name, pool)
        keys.append(name)
    value_kinds = ["int", "float", "bool", "str", "datetime"]
    for kind in value_kinds:
        cols[f"v_{kind}"] = _series(draw, kind, n, f"v_{kind}", 4)
    df = pd.DataFrame(cols)
    aggs = {}
    for i in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(value_kinds))
        func = draw(st.sampled_from(VALUE_FUNCS[kind]))
        aggs[f"a{i}"] = (f"v_{kind}", func)
    return df, keys, aggs


@given(frames(), st.booleans(), st.booleans())
def test_matches_pandas(data: tuple, dropna: bool, sort: bool) -> None:
    df, keys, aggs = data
    before = df.copy()
    by = keys[0] if len(keys) == 1 else keys
    want = df.groupby(by, dropna=dropna, sort=sort).agg(**aggs)
    # The documented fallbacks among these dtypes: an all-missing object key,
    # and an int64 sum that overflows (pandas wraps it; the kernel refuses).
    quirk = any(df[k].dtype == object and df[k].isna().all() for k in keys) or (
        ("v_int", "sum") in aggs.values() and (df["v_int"].abs() >= 2**62).sum() >= 2
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if quirk else "error", ferrobatch.FallbackWarning)
        got = fpd.groupby_agg(df, by, dropna=dropna, sort=sort, **aggs)
    pd.testing.assert_frame_equal(got, want)
    pd.testing.assert_frame_equal(df, before)


def test_semantics_g1_to_g11() -> None:
    df = pd.DataFrame({
        "k": ["b", "a", None, "B", "a", "b"],
        "k2": [1, 1, 2, 2, 1, 2],
        "i": [1, 2, 3, 4, 5, 6],
        "f": [np.nan, np.nan, 1.0, 2.0, 3.0, np.nan],
        "b": [True, False, True, True, True, False],
        "s": [None, "x", "y", None, "Z", "a"],
    })  # fmt: skip
    cases = [
        ("k", {}, dict(s=("f", "sum"), m=("f", "mean"), lo=("f", "min"))),  # G1, G6
        ("k", {"dropna": False}, dict(n=("f", "count"), sz=("f", "size"))),  # G7
        ("k", {"sort": False}, dict(m=("i", "mean"), s=("i", "sum"), sb=("b", "sum"))),  # G2, G4
        ("k", {}, dict(sd=("i", "std"), v=("f", "var"))),  # G5
        ("k", {}, dict(u=("s", "nunique"), lo=("s", "min"), hi=("s", "max"))),  # G8, G10
        ("k", {}, dict(f=("s", "first"), la=("f", "last"))),  # G9
        (["k", "k2"], {"dropna": False}, dict(s=("i", "sum"))),  # G11 MultiIndex
    ]
    for by, kw, aggs in cases:
        want = df.groupby(by, **kw).agg(**aggs)
        got = fpd.groupby_agg(df, by, **kw, **aggs)
        pd.testing.assert_frame_equal(got, want)
    assert list(fpd.groupby_agg(df, "k", s=("i", "sum")).index) == ["B", "a", "b"]  # code points


def test_fallbacks_warn_and_match() -> None:
    df = pd.DataFrame(
        {"k": pd.Categorical(["x", "y", "x"]), "v": [1, 2, 3], "n": pd.array([1, None, 3], "Int64")}
    )
    cases = [
        ("k", dict(s=("v", "sum"))),  # categorical key
        ("v", dict(s=("v", lambda x: x.sum()))),  # callable
        ("v", dict(p=("v", "prod"))),  # function not accelerated
        ("v", dict(s=("n", "sum"))),  # extension dtype
    ]
    for by, aggs in cases:
        want = df.groupby(by, observed=True).agg(**aggs)
        with pytest.warns(ferrobatch.FallbackWarning):
            got = fpd.groupby_agg(df, by, **aggs)
        pd.testing.assert_frame_equal(got, want)


def test_errors_are_pandas_errors() -> None:
    df = pd.DataFrame({"k": [1, 2], "v": [1.0, 2.0]})
    with pytest.raises(KeyError):
        fpd.groupby_agg(df, "nope", s=("v", "sum"))
    with pytest.raises(TypeError, match="DataFrame"):
        fpd.groupby_agg([1, 2], "k", s=("v", "sum"))  # type: ignore[arg-type]
