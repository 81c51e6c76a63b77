//! pyarrow's `utf8_*` / `ascii_*` string functions over `string` / `large_string` arrays.
//!
//! Positions and lengths count code points, as pyarrow's do. The output keeps the input's
//! offset width (`utf8_length` gives int32 for `string`, int64 for `large_string`) and its
//! nulls. Case mapping is native only for ASCII text: pyarrow maps other characters with
//! utf8proc's tables (`ß` upper-cases to `ẞ`), which Rust's do not reproduce, so a batch
//! with any non-ASCII byte is handed to pyarrow by the caller.

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
