//! pyarrow's `utf8_*` / `ascii_*` string functions over `string` / `large_string` arrays.
//!
//! Positions and lengths count code points, as pyarrow's do. The output keeps the input's
//! offset width (`utf8_length` gives int32 for `string`, int64 for `large_string`) and its
//! nulls. Upper-casing is native only for ASCII text: pyarrow maps other characters with
//! utf8proc's tables (`ß` upper-cases to `ẞ`), which Rust's do not reproduce, so a batch
//! with any non-ASCII byte is handed to pyarrow by the caller. Lower-casing is native for
//! Latin, Greek and Cyrillic text too ([`unicode_lower`]), where the tables agree.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, GenericStringArray, Int32Array, Int64Array, OffsetSizeTrait};
use arrow_buffer::Buffer;
use arrow_schema::DataType;

use crate::error::{Error, Result};

/// Which ends `trim` strips, and of what.
#[derive(Clone, Debug)]
pub struct Trim {
    pub left: bool,
    pub right: bool,
    /// The characters stripped; `None`: Unicode whitespace as pyarrow defines it.
    pub chars: Option<Vec<char>>,
}

impl Trim {
    fn strips(&self, c: char) -> bool {
        match &self.chars {
            Some(set) => set.contains(&c),
            // Rust's White_Space plus the ASCII separators U+001C..U+001F, as utf8proc.
            None => c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c),
        }
    }

    fn apply<'a>(&self, s: &'a str) -> &'a str {
        let s = if self.left {
            s.trim_start_matches(|c| self.strips(c))
        } else {
            s
        };
        if self.right {
            s.trim_end_matches(|c| self.strips(c))
        } else {
            s
        }
    }
}

/// Dispatch `$f::<O>` on the string array's offset width.
macro_rules! by_width {
    ($a:expr, $f:ident $(, $arg:expr)*) => {
        match $a.data_type() {
            DataType::Utf8 => $f($a.as_string::<i32>() $(, $arg)*),
            DataType::LargeUtf8 => $f($a.as_string::<i64>() $(, $arg)*),
            t => Err(Error::Type(format!("a string function over {t}"))),
        }
    };
}

/// Code points per string.
pub fn length(a: &ArrayRef) -> Result<ArrayRef> {
    fn go<O: OffsetSizeTrait>(s: &GenericStringArray<O>) -> Result<ArrayRef> {
        // Every byte that does not continue a UTF-8 sequence starts a code point.
        let count = |v: &str| v.bytes().filter(|&b| (b as i8) >= -0x40).count();
        let nulls = s.nulls().cloned();
        Ok(if O::IS_LARGE {
            let v: Vec<i64> = (0..s.len()).map(|i| count(s.value(i)) as i64).collect();
            Arc::new(Int64Array::new(v.into(), nulls))
        } else {
            let v: Vec<i32> = (0..s.len()).map(|i| count(s.value(i)) as i32).collect();
            Arc::new(Int32Array::new(v.into(), nulls))
        })
    }
    by_width!(a, go)
}

/// `utf8_slice_codeunits` with step 1: code points `start..stop`, negative positions
/// counted from the end, both clamped to the string.
pub fn slice(a: &ArrayRef, start: i64, stop: i64) -> Result<ArrayRef> {
    fn go<O: OffsetSizeTrait>(
        s: &GenericStringArray<O>,
        start: i64,
        stop: i64,
    ) -> Result<ArrayRef> {
        map_str(s, |v| {
            let n = if start < 0 || stop < 0 {
                v.chars().count() as i64
            } else {
                0
            };
            let at = |i: i64| if i < 0 { (n + i).max(0) } else { i };
            let (lo, hi) = (at(start), at(stop));
            if lo >= hi {
                return "";
            }
            let byte = |k: i64| v.char_indices().nth(k as usize).map_or(v.len(), |(b, _)| b);
            let b0 = byte(lo);
            let b1 = b0
                + v[b0..]
                    .char_indices()
                    .nth((hi - lo) as usize)
                    .map_or(v.len() - b0, |(b, _)| b);
            &v[b0..b1]
        })
    }
    by_width!(a, go, start, stop)
}

pub fn trim(a: &ArrayRef, how: &Trim) -> Result<ArrayRef> {
    fn go<O: OffsetSizeTrait>(s: &GenericStringArray<O>, how: &Trim) -> Result<ArrayRef> {
        map_str(s, |v| how.apply(v))
    }
    by_width!(a, go, how)
}

/// Whether every byte of the array's strings is ASCII.
pub fn is_ascii(a: &ArrayRef) -> bool {
    fn go<O: OffsetSizeTrait>(s: &GenericStringArray<O>) -> Result<bool> {
        let o = s.value_offsets();
        let (lo, hi) = (o[0].as_usize(), o[o.len() - 1].as_usize());
        Ok(s.value_data()[lo..hi].is_ascii())
    }
    matches!(by_width!(a, go), Ok(true))
}

/// Code points whose lower case Rust's tables and utf8proc's (pyarrow's `utf8_lower`) give
/// alike: the Latin, Greek and Cyrillic blocks below U+0530, whose case pairs are older
/// than either table (Unicode's stability policy keeps them). Outside it the caller asks
/// pyarrow.
const SHARED_LOWER: std::ops::RangeInclusive<char> = '\u{80}'..='\u{52f}';

/// `utf8_lower` natively when every character lies in [`SHARED_LOWER`] (or is ASCII), else
/// `None`. Each code point maps to its simple lower case, as utf8proc's does: the one
/// full mapping there to more than one character, `İ` to `i̇`, is `i` here.
pub fn unicode_lower(a: &ArrayRef) -> Result<Option<ArrayRef>> {
    fn go<O: OffsetSizeTrait>(s: &GenericStringArray<O>) -> Result<Option<ArrayRef>> {
        let table = lower_table();
        let (data, offsets) = (s.value_data(), s.value_offsets());
        let (lo, hi) = (offsets[0].as_usize(), offsets[offsets.len() - 1].as_usize());
        let mut values: Vec<u8> = Vec::with_capacity(hi - lo);
        let mut out = Vec::with_capacity(offsets.len());
        out.push(O::usize_as(0));
        let mut utf8 = [0u8; 4];
        for w in offsets.windows(2) {
            // Null slots map their bytes too (normally none): the offsets stay monotone.
            let v = &data[w[0].as_usize()..w[1].as_usize()];
            let mut at = 0;
            while at < v.len() {
                // A run of ASCII bytes at once, then one other character.
                let run = v[at..]
                    .iter()
                    .position(|b| !b.is_ascii())
                    .unwrap_or(v.len() - at);
                values.extend(v[at..at + run].iter().map(u8::to_ascii_lowercase));
                at += run;
                if at == v.len() {
                    break;
                }
                // SAFETY: a valid string array's value is UTF-8 and `at` starts a character.
                let rest = unsafe { std::str::from_utf8_unchecked(&v[at..]) };
                let c = rest
                    .chars()
                    .next()
                    .expect("a non-ASCII byte starts a character");
                let l = match (c as usize).checked_sub(0x80).and_then(|i| table.get(i)) {
                    Some(&Some(l)) => l,
                    _ => return Ok(None),
                };
                values.extend_from_slice(l.encode_utf8(&mut utf8).as_bytes());
                at += c.len_utf8();
            }
            out.push(O::usize_as(values.len()));
        }
        let offsets = arrow_buffer::OffsetBuffer::new(arrow_buffer::ScalarBuffer::from(out));
        // SAFETY: ASCII bytes and whole encoded characters between the offsets: valid UTF-8.
        let out = unsafe {
            GenericStringArray::<O>::new_unchecked(
                offsets,
                Buffer::from_vec(values),
                s.nulls().cloned(),
            )
        };
        Ok(Some(Arc::new(out)))
    }
    by_width!(a, go)
}

/// The lower case of every code point of [`SHARED_LOWER`] from U+0080 on (`None`: more than
/// one character, left to pyarrow), made once.
fn lower_table() -> &'static [Option<char>] {
    static TABLE: std::sync::OnceLock<Vec<Option<char>>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        SHARED_LOWER
            .map(|c| {
                if c == '\u{130}' {
                    return Some('i');
                }
                let mut m = c.to_lowercase();
                match (m.next(), m.next()) {
                    (Some(l), None) => Some(l),
                    _ => None,
                }
            })
            .collect()
    })
}

/// ASCII letters upper- or lower-cased, every other byte kept: the offsets and nulls are the
/// input's.
pub fn ascii_case(a: &ArrayRef, upper: bool) -> Result<ArrayRef> {
    fn go<O: OffsetSizeTrait>(s: &GenericStringArray<O>, upper: bool) -> Result<ArrayRef> {
        let bytes: Vec<u8> = match upper {
            true => s.value_data().iter().map(u8::to_ascii_uppercase).collect(),
            false => s.value_data().iter().map(u8::to_ascii_lowercase).collect(),
        };
        // SAFETY: mapping ASCII bytes to ASCII bytes and keeping all others leaves every
        // UTF-8 sequence valid at the same offsets.
        let out = unsafe {
            GenericStringArray::<O>::new_unchecked(
                s.offsets().clone(),
                Buffer::from_vec(bytes),
                s.nulls().cloned(),
            )
        };
        Ok(Arc::new(out))
    }
    by_width!(a, go, upper)
}

/// Each valid string replaced by a sub-slice of itself.
fn map_str<O: OffsetSizeTrait>(
    s: &GenericStringArray<O>,
    f: impl Fn(&str) -> &str,
) -> Result<ArrayRef> {
    let out: GenericStringArray<O> = s.iter().map(|v| v.map(&f)).collect();
    Ok(Arc::new(out))
}
