"""Expressions evaluated in Rust equal pyarrow compute's results, types included, over nasty
data: random expression trees of the functions the executor implements natively (and some
it hands back to pyarrow), on every column type they take, with nulls, NaN, -0.0, overflow
and empty batches. When pyarrow raises, so must the executor."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import ferrobatch as fb
from ferrobatch.pipeline import _Expr, _try_eval, _unview, _unview_schema

F = pc.field
I64 = [-(2**63), 2**63 - 1, 0, 1, -1, 7, 100]
FL = [0.0, -0.0, math.nan, math.inf, -math.inf, 1.5, -2.25, 1e300]
TX = [
    "",
    "a",
    "ab",
    "abc",
    "ä",
    "日本",
    "A%b",
    "x_y",
    "long string over twelve",
    " \t pad\u3000",
    "ßİ ǅ",
    "\x1cx\x1f",
    "xyyx",
]
DATES = [dt.date(1970, 1, 1), dt.date(2000, 2, 29), dt.date(1969, 12, 31), dt.date(2024, 12, 31)]

COLUMNS = {
    "i64": (pa.int64(), st.sampled_from(I64)),
    "i32": (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    "i8": (pa.int8(), st.integers(-128, 127)),
    "u8": (pa.uint8(), st.integers(0, 255)),
    "u64": (pa.uint64(), st.sampled_from([0, 1, 2**64 - 1, 2**63])),
    "f64": (pa.float64(), st.sampled_from(FL)),
    "f32": (pa.float32(), st.sampled_from([0.0, -0.0, math.nan, 1.5, -3.0])),
    "b": (pa.bool_(), st.booleans()),
    "s": (pa.string(), st.sampled_from(TX)),
    "ls": (pa.large_string(), st.sampled_from(TX)),
    "sv": (pa.string_view(), st.sampled_from(TX)),
    "dict": (pa.dictionary(pa.int32(), pa.string()), st.sampled_from(TX)),
    "d": (pa.date32(), st.sampled_from(DATES)),
    "ts": (pa.timestamp("us"), st.integers(-(10**12), 10**12)),
    "dec": (pa.decimal128(15, 2), st.sampled_from([Decimal("0.00"), Decimal("-1.50"),
                                                   Decimal("9999999999999.99"), Decimal("0.01")])),
    "dec2": (pa.decimal128(7, 3), st.sampled_from([Decimal("1.000"), Decimal("-0.005"),
                                                   Decimal("9999.999")])),
}  # fmt: skip
NUMERIC = ["i64", "i32", "i8", "u8", "u64", "f64", "f32", "dec", "dec2"]
STRINGS = ["s", "ls", "sv", "dict"]


@st.composite
def batches(draw) -> pa.RecordBatch:
    n = draw(st.integers(0, 12))
    cols = {}
    for name, (ty, values) in COLUMNS.items():
        vals = [draw(st.none() | values) for _ in range(n)]
        cols[name] = pa.array(vals, ty.value_type if pa.types.is_dictionary(ty) else ty)
        if pa.types.is_dictionary(ty):
            cols[name] = cols[name].dictionary_encode()
    return pa.record_batch(cols)


def literal_for(name: str) -> st.SearchStrategy:
    ty, values = COLUMNS[name]
    if name in STRINGS:
        return st.sampled_from(TX).map(pc.scalar)
    if name in ("dec", "dec2"):
        return st.sampled_from([Decimal("1"), Decimal("0.05"), Decimal("24")]).map(pc.scalar)
    if name == "d":
        return st.sampled_from(DATES).map(pc.scalar)
    if name == "ts":
        return st.just(pc.scalar(pa.scalar(5, pa.timestamp("us"))))
    if name == "b":
        return st.booleans().map(pc.scalar)
    if name in ("f64", "f32"):
        return st.sampled_from([0.5, 1.5, -0.0, math.nan, 1e-3]).map(pc.scalar)
    return st.sampled_from([0, 1, -1, 3, 200, 2**40]).map(pc.scalar)


numeric = st.sampled_from(NUMERIC)
strings = st.sampled_from(STRINGS)


@st.composite
def numeric_expr(draw, depth: int = 0) -> pc.Expression:
    a = draw(numeric)
    left = F(a) if depth > 1 or draw(st.booleans()) else draw(numeric_expr(depth + 1))
    kind = draw(st.sampled_from(["add", "sub", "mul", "div", "lit", "neg", "cast"]))
    right = draw(st.one_of(literal_for(a), numeric.map(F)))
    if kind == "add":
        return draw(st.sampled_from([pc.add, pc.add_checked]))(left, right)
    if kind == "sub":
        return draw(st.sampled_from([pc.subtract, pc.subtract_checked]))(left, right)
    if kind == "mul":
        return draw(st.sampled_from([pc.multiply, pc.multiply_checked]))(left, right)
    if kind == "div":
        return pc.divide(left, right)
    if kind == "neg":
        return pc.negate_checked(left)
    if kind == "cast":
        to = draw(st.sampled_from([pa.float64(), pa.int64(), pa.int16(), pa.decimal128(20, 4),
                                   pa.decimal128(38, 2), pa.decimal128(12, 2),
                                   pa.decimal128(4, 3)]))  # fmt: skip
        return left.cast(to)
    return left


@st.composite
def predicate(draw, depth: int = 0) -> pc.Expression:
    kind = draw(st.sampled_from(["cmp", "cmp", "str", "null", "isin", "and", "or", "not",
                                 "date"]))  # fmt: skip
    if depth > 1 and kind in ("and", "or", "not"):
        kind = "cmp"
    if kind == "cmp":
        col = draw(st.sampled_from(list(COLUMNS)))
        left = draw(numeric_expr()) if col in NUMERIC and draw(st.booleans()) else F(col)
        right = draw(st.one_of(literal_for(col), st.sampled_from(list(COLUMNS)).map(F)))
        op = draw(st.sampled_from([pc.equal, pc.not_equal, pc.less, pc.less_equal,
                                   pc.greater, pc.greater_equal]))  # fmt: skip
        return op(left, right)
    if kind == "str":
        col = F(draw(strings))
        pat = draw(st.sampled_from(["a", "", "%b%", "a_", "ä%", "日"]))
        f = draw(st.sampled_from(["like", "starts", "ends", "sub"]))
        if f == "like":
            return pc.match_like(col, pat, ignore_case=draw(st.booleans()))
        if f == "starts":
            return pc.starts_with(col, pat)
        if f == "ends":
            return pc.ends_with(col, pat)
        return pc.match_substring(col, pat)
    if kind == "null":
        col = F(draw(st.sampled_from(list(COLUMNS))))
        return col.is_null(nan_is_null=draw(st.booleans())) if draw(st.booleans()) \
            else col.is_valid()  # fmt: skip
    if kind == "isin":
        if draw(st.booleans()):
            col = draw(strings)
            vals = draw(st.lists(st.sampled_from([*TX, None]), max_size=4))
        else:
            col = draw(st.sampled_from(["i64", "i32", "i8", "u8"]))
            vals = draw(st.lists(st.sampled_from([0, 1, -1, 7, 100, None]), max_size=4))
        return pc.is_in(F(col), pa.array(vals, pa.string() if col in STRINGS else pa.int64()),
                        skip_nulls=draw(st.booleans()))  # fmt: skip
    if kind == "date":
        part = draw(st.sampled_from([pc.year, pc.month, pc.day, pc.quarter, pc.day_of_year]))
        return part(F(draw(st.sampled_from(["d", "ts"])))) > 2
    if kind == "not":
        return ~draw(predicate(depth + 1))
    a, b = draw(predicate(depth + 1)), draw(predicate(depth + 1))
    return (a & b) if kind == "and" else (a | b)


@st.composite
def string_expr(draw) -> pc.Expression:
    col = F(draw(strings))
    kind = draw(st.sampled_from(["length", "slice", "trim", "case"]))
    pos = st.integers(-4, 4)
    if kind == "length":
        return pc.utf8_length(col)
    if kind == "slice":
        stop = draw(st.none() | pos)
        return pc.utf8_slice_codeunits(col, draw(pos), stop) if stop is not None \
            else pc.utf8_slice_codeunits(col, draw(pos))  # fmt: skip
    if kind == "trim":
        f = draw(st.sampled_from([pc.utf8_trim, pc.utf8_ltrim, pc.utf8_rtrim]))
        if draw(st.booleans()):
            return f(col, draw(st.sampled_from(["x", "xy", " ", "ä日", ""])))
        return draw(st.sampled_from([pc.utf8_trim_whitespace, pc.utf8_ltrim_whitespace,
                                     pc.utf8_rtrim_whitespace]))(col)  # fmt: skip
    return draw(st.sampled_from([pc.utf8_upper, pc.utf8_lower, pc.ascii_upper,
                                 pc.ascii_lower]))(col)  # fmt: skip


@st.composite
def expressions(draw) -> pc.Expression:
    kind = draw(st.sampled_from(["num", "pred", "if_else", "coalesce", "str", "case_when"]))
    if kind == "num":
        return draw(numeric_expr())
    if kind == "pred":
        return draw(predicate())
    if kind == "str":
        return draw(string_expr())
    if kind == "case_when":
        n = draw(st.integers(1, 3))
        conds = pc.make_struct(*[draw(predicate(1)) for _ in range(n)])
        pool = draw(st.sampled_from([NUMERIC, STRINGS]))
        values = [F(draw(st.sampled_from(pool))) for _ in range(n + draw(st.integers(0, 1)))]
        return pc.case_when(conds, *values)
    col = draw(st.sampled_from(list(COLUMNS)))
    other = draw(st.one_of(literal_for(col), st.just(F(col))))
    if kind == "if_else":
        return pc.if_else(draw(predicate()), F(col), other)
    return pc.coalesce(F(col), other)


def pyarrow_eval(e: pc.Expression, batch: pa.RecordBatch) -> pa.Array:
    t = ds.dataset(pa.Table.from_batches([_unview(batch)])).to_table(columns={"_": e})
    return t.column(0).combine_chunks()


def values(a: pa.Array) -> list:
    return [repr(v) if isinstance(v, float) else v for v in a.to_pylist()]


@given(batch=batches(), e=expressions())
def test_rust_evaluation_equals_pyarrow(batch: pa.RecordBatch, e: pc.Expression) -> None:
    try:
        ty = _try_eval(e, _unview_schema(batch.schema))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        assume(False)  # the pipeline refuses it when the plan is built
    x = _Expr(e)
    try:
        want = pyarrow_eval(e, batch)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        with pytest.raises(Exception):  # noqa: B017 - pyarrow raised: so must we
            x.core.evaluate(batch, x.resolve)
        return
    got = x.core.evaluate(batch, x.resolve)
    # The pipeline's schema says `ty`. pyarrow's output type can differ from the type it
    # resolves for the same expression on the same schema (decimal sums of a column and
    # literals come out one digit narrower over a non-empty batch); the values cannot.
    assert got.type == ty, (e, got.type, ty)
    assert got.type == want.type or pa.types.is_decimal(ty), (e, got.type, want.type)
    assert values(got) == values(want), e
    # The executor carries decimals of at most 18 digits that only Rust reads as decimal64
    # (marked in the field metadata): same answers.
    if not x.fallbacks(_unview_schema(batch.schema)):
        narrowed = narrow_decimals(batch)
        again = x.core.evaluate(narrowed, x.resolve)
        assert again.type == got.type and values(again) == values(got), e


def narrow_decimals(batch: pa.RecordBatch) -> pa.RecordBatch:
    fields = [
        pa.field(f.name, pa.decimal64(f.type.precision, f.type.scale),
                 metadata={"ferrobatch:narrowed": ""})
        if pa.types.is_decimal128(f.type) and f.type.precision <= 18 else f
        for f in batch.schema
    ]  # fmt: skip
    cols = [c.cast(f.type) for c, f in zip(batch.columns, fields, strict=True)]
    return pa.RecordBatch.from_arrays(cols, schema=pa.schema(fields))


def test_native_coverage() -> None:
    """The functions the executor must evaluate without pyarrow."""
    schema = pa.schema([(n, t) for n, (t, _) in COLUMNS.items()])
    native = [
        (F("i32") + 1) * F("i64") - pc.divide(F("i8"), 2),
        (F("dec") * (pc.scalar(Decimal("1")) - F("dec2"))).cast(pa.decimal128(25, 5)),
        (F("sv") == "a") & (F("dict") != "b") | ~F("b"),
        pc.starts_with(F("sv"), "a") | pc.match_like(F("ls"), "%b_") | pc.ends_with(F("s"), "c"),
        F("i64").isin([1, 2]) & F("dict").isin(["a"]) & F("d").is_valid() & F("f64").is_null(),
        pc.if_else(F("f64") > 0, F("f64"), F("f32")) < pc.coalesce(F("f64"), 1.0),
        (pc.year(F("d")) == 2000) & (pc.month(F("ts")) < 3) & (F("d") < pc.scalar(DATES[1])),
        pc.utf8_slice_codeunits(F("sv"), 0, 2) == pc.utf8_trim_whitespace(F("dict")),
        (pc.utf8_length(F("s")) > 1) & (pc.ascii_upper(F("ls")) == pc.utf8_ltrim(F("s"), "x")),
        pc.case_when(pc.make_struct(F("b"), F("i8") > 1), F("i64"), F("i32"), F("i8")) > 2,
    ]
    for e in native:
        assert _Expr(e).fallbacks(schema) == [], e
    # ASCII batches are upper-cased here, others by pyarrow (utf8proc's case tables).
    assert _Expr(pc.utf8_upper(F("s")) == "A").fallbacks(schema) == [
        "utf8_upper (batches with non-ASCII text)"
    ]
    assert _Expr(pc.utf8_reverse(F("s")) == "A").fallbacks(schema) == ["utf8_reverse"]


def test_lower_case_equals_pyarrow_on_every_character() -> None:
    """`utf8_lower` runs natively on Latin, Greek and Cyrillic text (İ, final Σ, ẞ's partner
    ß, title-case digraphs) and hands batches with other characters (Georgian, Cherokee,
    Deseret, CJK, emoji) to pyarrow: every result equals pyarrow's, batch by batch."""
    native = [chr(c) for c in range(0x80, 0x530) if not 0xD800 <= c < 0xE000]
    words = ["ΣΟΦΟΣ ΣΑΣ", "İSTANBUL", "ǅǄǆ", "Straße", "ÀÉÎÕÜ ÿ", "ДЖЁ Ѐ"]
    other = ["ẞ", "Ⴀᏸ𐐀", "日本", "😀Ä", "ⰀⲀ", "ꙀꚘ"]
    batches = [
        pa.record_batch({"s": pa.array(native + words + [None, ""], pa.string())}),
        pa.record_batch({"s": pa.array(other + words, pa.string())}),
        pa.record_batch({"s": pa.array(native[::7] + words, pa.large_string())}),
    ]
    for batch in batches:
        want = pc.utf8_lower(batch.column(0))
        got = fb.scan(pa.Table.from_batches([batch])).with_columns(s=pc.utf8_lower(F("s")))
        assert got.collect().column("s").combine_chunks().equals(want)
    schema = batches[0].schema
    assert _Expr(pc.utf8_lower(F("s")) == "a").fallbacks(schema) == [
        "utf8_lower (batches with text beyond Latin, Greek, Cyrillic)"
    ]


def test_fallback_sub_expression_only() -> None:
    batch = pa.record_batch({"s": ["ab", None, "x"], "v": [1, 2, 3]})
    e = (pc.binary_length(F("s")) + F("v")) > 2
    x = _Expr(e)
    assert x.fallbacks(batch.schema) == ["binary_length"]
    assert x.core.evaluate(batch, x.resolve).to_pylist() == [True, None, True]
    # Errors raised by pyarrow inside a fallback keep their class.
    bad = pc.divide_checked(F("v").cast(pa.float64()), 0.0) > 1
    with pytest.raises(pa.ArrowInvalid, match="divide by zero"):
        _Expr(bad).core.evaluate(batch, _Expr(bad).resolve)
    assert fb.scan(batch).filter(e).collect().column("v").to_pylist() == [1, 3]


def test_cast_to_a_too_narrow_decimal_raises_as_pyarrow_does() -> None:
    """pyarrow refuses int64 -> decimal128(20, 4) (19 digits + 4 > 20) even on null rows."""
    batch = pa.record_batch({"i": pa.array([None], pa.int64())})
    e = F("i").cast(pa.decimal128(20, 4))
    with pytest.raises(pa.ArrowInvalid):
        pyarrow_eval(e, batch)
    with pytest.raises(pa.ArrowInvalid, match="Precision is not great enough"):
        _Expr(e).core.evaluate(batch, _Expr(e).resolve)
    wide = F("i").cast(pa.decimal128(23, 4))
    assert _Expr(wide).core.evaluate(batch, _Expr(wide).resolve).to_pylist() == [None]
