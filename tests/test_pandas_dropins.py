"""ferrobatch.pandas drop-ins against pandas itself (PANDAS_SEMANTICS.md S1-S5, D1-D3)."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ferrobatch as fb
from ferrobatch import pandas as fpd

COLUMN_KINDS = [
    "int",
    "float",
    "str",
    "object",
    "datetime",
    "datetime_tz",
    "bool",
    "category",
    "Int64",
]


def column(kind: str, n: int, draw) -> pd.Series:
    pick = lambda pool: draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))  # noqa: E731
    if kind == "int":
        return pd.Series(pick([0, 1, -1, 2**63 - 1, -(2**63), 5]), dtype="int64")
    if kind == "float":
        return pd.Series(
            pick([0.0, -0.0, 1.5, math.nan, math.inf, -math.inf, -2.0]), dtype="float64"
        )
    if kind == "str":
        return pd.Series(pick(["a", "B", "", "ä", "b", None, "日本"]), dtype="str")
    if kind == "object":
        return pd.Series(pick(["a", "B", "", None, math.nan, "b"]), dtype=object)
    if kind == "datetime":
        return pd.Series(
            pd.to_datetime(
                pick(["2024-01-01", "1999-12-31 23:59:59", None, "2024-01-01 00:00:01"]),
                format="ISO8601",
            )
        )
    if kind == "datetime_tz":
        s = pd.to_datetime(
            pick(["2024-03-31 01:30", "2024-10-27 02:30", None, "2000-01-01 00:00"]),
            format="ISO8601",
        )
        return pd.Series(s).dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin")
    if kind == "bool":
        return pd.Series(pick([True, False]), dtype=bool)
    if kind == "category":
        return pd.Series(pd.Categorical(pick(["z", "a", None, "m"]), categories=["z", "m", "a"]))
    if kind == "Int64":
        return pd.Series(pick([1, -3, None, 7]), dtype="Int64")
    raise AssertionError(kind)


@st.composite
def frames(draw, max_rows=30):
    n = draw(st.integers(0, max_rows))
    kinds = draw(st.lists(st.sampled_from(COLUMN_KINDS), min_size=1, max_size=4))
    df = pd.DataFrame({f"{k}{i}": column(k, n, draw) for i, k in enumerate(kinds)})
    df["payload"] = np.arange(n) * 10
    if draw(st.booleans()):
        df.index = pd.Index(
            draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n)), dtype="int64"
        )
    return df


@given(frames(), st.data())
def test_sort_values_equals_pandas(df, data):
    keys = [c for c in df.columns if c != "payload"]
    by = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True))
    ascending = data.draw(
        st.booleans() | st.lists(st.booleans(), min_size=len(by), max_size=len(by))
    )
    na_position = data.draw(st.sampled_from(["first", "last"]))
    ignore_index = data.draw(st.booleans())
    before = df.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", fb.FallbackWarning)
        got = fpd.sort_values(
            df, by, ascending=ascending, na_position=na_position, ignore_index=ignore_index
        )
    expected = df.sort_values(
        by, ascending=ascending, na_position=na_position, ignore_index=ignore_index, kind="stable"
    )
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(df, before)


@given(frames(), st.data())
def test_drop_duplicates_equals_pandas(df, data):
    keys = [c for c in df.columns if c != "payload"]
    subset = data.draw(
        st.none() | st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True)
    )
    if subset is None:
        df = df.drop(columns="payload")
    keep = data.draw(st.sampled_from(["first", "last", False]))
    ignore_index = data.draw(st.booleans())
    with warnings.catch_warnings():
        warnings.simplefilter("error", fb.FallbackWarning)
        got = fpd.drop_duplicates(df, subset, keep=keep, ignore_index=ignore_index)
    expected = df.drop_duplicates(subset, keep=keep, ignore_index=ignore_index)
    pd.testing.assert_frame_equal(got, expected)


def test_s1_s2_na_block_and_stable_descending():
    df = pd.DataFrame({"a": [2.0, np.nan, 1.0, 2.0, np.nan, 1.0], "p": range(6)})
    for asc in (True, False):
        for na in ("first", "last"):
            pd.testing.assert_frame_equal(
                fpd.sort_values(df, "a", ascending=asc, na_position=na),
                df.sort_values("a", ascending=asc, na_position=na, kind="stable"),
            )


def test_s4_ascending_length_mismatch():
    df = pd.DataFrame({"a": [1, 2], "b": [3, 4]})
    with pytest.raises(ValueError, match="Length of ascending"):
        fpd.sort_values(df, ["a", "b"], ascending=[True])


def test_d2_none_and_nan_are_distinct_in_object_columns():
    df = pd.DataFrame({"o": pd.Series([None, np.nan, None, np.nan, "x"], dtype=object)})
    pd.testing.assert_frame_equal(fpd.drop_duplicates(df), df.drop_duplicates())
    assert len(fpd.drop_duplicates(df)) == 3


def test_m13_signed_zero_is_one_key():
    df = pd.DataFrame({"f": [0.0, -0.0, 1.0]})
    pd.testing.assert_frame_equal(fpd.drop_duplicates(df), df.drop_duplicates())


def test_missing_column_and_bad_keep():
    df = pd.DataFrame({"a": [1]})
    with pytest.raises(KeyError):
        fpd.sort_values(df, "zz")
    with pytest.raises(KeyError):
        fpd.drop_duplicates(df, ["zz"])
    with pytest.raises(ValueError, match="keep"):
        fpd.drop_duplicates(df, keep="middle")
    with pytest.raises(TypeError, match="DataFrame"):
        fpd.sort_values([1, 2], "a")


def test_unsupported_arguments_fall_back_with_warning():
    df = pd.DataFrame({"a": [3, 1, 2], "b": ["x", "y", "z"]})
    with pytest.warns(fb.FallbackWarning, match="key"):
        got = fpd.sort_values(df, "a", key=lambda s: -s)
    pd.testing.assert_frame_equal(got, df.sort_values("a", key=lambda s: -s, kind="stable"))
    mixed = pd.DataFrame({"m": pd.Series([1, "a", 2.5, None], dtype=object)})
    with pytest.warns(fb.FallbackWarning, match="object column"):
        got = fpd.drop_duplicates(mixed)
    pd.testing.assert_frame_equal(got, mixed.drop_duplicates())


def test_larger_frame_many_duplicates():
    rng = np.random.default_rng(5)
    n = 200_000
    df = pd.DataFrame(
        {
            "s": pd.Series(rng.choice(["a", "b", None, "c"], n), dtype="str"),
            "f": np.where(rng.random(n) < 0.05, np.nan, rng.integers(0, 50, n).astype(float)),
            "t": pd.to_datetime(rng.integers(0, 1000, n), unit="s"),
            "v": rng.random(n),
        }
    )
    pd.testing.assert_frame_equal(
        fpd.sort_values(df, ["s", "f", "t"], ascending=[False, True, False]),
        df.sort_values(["s", "f", "t"], ascending=[False, True, False], kind="stable"),
    )
    for keep in ("first", "last", False):
        pd.testing.assert_frame_equal(
            fpd.drop_duplicates(df, ["s", "f"], keep=keep),
            df.drop_duplicates(["s", "f"], keep=keep),
        )


def test_multikey_nan_first_ties_with_infinity_like_pandas():
    # pandas 3 sorts numpy float keys of multi-key sorts with NaN filled by -inf (after
    # negating descending keys): NaN ties with the infinity at the front, in row order.
    df = pd.DataFrame({"a": [0, 0, 0, 0, 0], "f": [0.0, np.inf, np.nan, -np.inf, 1.0]})
    for asc in (True, False):
        pd.testing.assert_frame_equal(
            fpd.sort_values(df, ["a", "f"], ascending=asc, na_position="first"),
            df.sort_values(["a", "f"], ascending=asc, na_position="first", kind="stable"),
        )


def test_index_level_and_duplicate_labels_fall_back():
    df = pd.DataFrame({"a": [2, 1, 2]}, index=pd.Index([3, 2, 1], name="lvl"))
    with pytest.warns(fb.FallbackWarning, match="index level"):
        got = fpd.sort_values(df, ["lvl"])
    pd.testing.assert_frame_equal(got, df.sort_values(["lvl"], kind="stable"))
    dup = pd.DataFrame([[1, 2], [1, 3]], columns=["x", "x"])
    with pytest.warns(fb.FallbackWarning, match="duplicate"):
        got = fpd.drop_duplicates(dup, ["x"])
    pd.testing.assert_frame_equal(got, dup.drop_duplicates(["x"]))
