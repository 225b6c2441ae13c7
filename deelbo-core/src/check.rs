//! Input checks shared by every deelbo crate, each returning a [`CoreError`] that names the bad
//! input and carries the rejected value (every crate's error type converts from it with `?`).
//!
//! ```
//! use deelbo_core::check;
//!
//! assert_eq!(check::positive("noise variance", 0.25)?, 0.25);
//! assert!(check::positive("noise variance", 0.0).is_err());
//! assert!(check::in_range("momentum", 1.0, 0.0..1.0).is_err());
//! assert!(check::all_finite("targets", &[1.0, f64::NAN]).is_err());
//! # Ok::<(), deelbo_core::CoreError>(())
//! ```

use std::ops::{Bound, RangeBounds};

use crate::error::{CoreError, Result};

/// `value` is finite and `> 0`; returns it.
pub fn positive(name: &str, value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(CoreError::NonPositive {
            name: name.to_string(),
            value,
        })
    }
}

/// `value` is finite (any sign); returns it.
pub fn finite(name: &str, value: f64) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(CoreError::NonFinite {
            name: name.to_string(),
            index: 0,
            value,
        })
    }
}

/// `value` is finite and inside `range` (any of `a..b`, `a..=b`, `a..`, `..b`); returns it.
pub fn in_range<R: RangeBounds<f64>>(name: &str, value: f64, range: R) -> Result<f64> {
    if value.is_finite() && range.contains(&value) {
        return Ok(value);
    }
    let lower = match range.start_bound() {
        Bound::Included(a) => format!("[{a}"),
        Bound::Excluded(a) => format!("({a}"),
        Bound::Unbounded => "(-inf".to_string(),
    };
    let upper = match range.end_bound() {
        Bound::Included(b) => format!("{b}]"),
        Bound::Excluded(b) => format!("{b})"),
        Bound::Unbounded => "inf)".to_string(),
    };
    Err(CoreError::OutOfRange {
        name: name.to_string(),
        value,
        reason: format!("must be finite and in {lower}, {upper}"),
    })
}

/// Every element of `values` is finite; the error names the first offending index and value.
pub fn all_finite<T: Copy + Into<f64>>(name: &str, values: &[T]) -> Result<()> {
    match values.iter().position(|&v| !v.into().is_finite()) {
        Some(index) => Err(CoreError::NonFinite {
            name: name.to_string(),
            index,
            value: values[index].into(),
        }),
        None => Ok(()),
    }
}

/// Two lengths (or shapes along one axis) agree.
pub fn same_len(name: &str, expected: usize, found: usize) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(CoreError::LengthMismatch {
            name: name.to_string(),
            expected,
            found,
        })
    }
}

/// A block or model has at least one parameter (`D >= 1`); returns `D`.
pub fn has_parameters(name: &str, count: usize) -> Result<usize> {
    if count > 0 {
        Ok(count)
    } else {
        Err(CoreError::NoParameters {
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_accepts_the_valid_and_names_the_invalid() {
        assert_eq!(positive("s", 2.0), Ok(2.0));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(positive("s", bad), Err(CoreError::NonPositive { ref name, .. }) if name == "s")
            );
        }
        assert_eq!(finite("x", -3.0), Ok(-3.0));
        assert!(finite("x", f64::NEG_INFINITY).is_err());
        assert_eq!(in_range("m", 0.0, 0.0..1.0), Ok(0.0));
        let e = in_range("m", 1.0, 0.0..1.0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "m = 1 is out of range: must be finite and in [0, 1)"
        );
        assert!(in_range("f", f64::NAN, ..).is_err());
        assert_eq!(in_range("f", 5.0, 1.0..), Ok(5.0));
        let e = all_finite("y", &[1.0f32, 2.0, f32::NAN]).unwrap_err();
        assert!(matches!(e, CoreError::NonFinite { index: 2, .. }));
        assert!(same_len("a", 3, 3).is_ok());
        assert!(matches!(
            same_len("a", 3, 4),
            Err(CoreError::LengthMismatch {
                expected: 3,
                found: 4,
                ..
            })
        ));
        assert_eq!(has_parameters("head", 7), Ok(7));
        assert!(
            matches!(has_parameters("head", 0), Err(CoreError::NoParameters { ref name }) if name == "head")
        );
    }
}
