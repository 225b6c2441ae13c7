//! Bounded one-dimensional maximization: a global log-spaced grid, then Brent's method
//! inside the bracket around the best grid point. Used for `ln(lengthscale)` (whose
//! objective is jagged and multi-modal with finitely many random features) and for the
//! signal-to-noise ratio of the evidence.

use serde::{Deserialize, Serialize};

use crate::error::{Result, RffError};

/// Settings of a bounded 1-D search over `t` in `[lower, upper]`: `grid_points` equally spaced
/// values (inclusive ends), then Brent's method in the best bracket until it is narrower than
/// `tolerance` (in units of `t`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GridSearch {
    /// Lower end of `t`.
    pub lower: f64,
    /// Upper end of `t`.
    pub upper: f64,
    /// Number of grid points (`>= 2`).
    pub grid_points: usize,
    /// Width at which the refinement stops; `0` or less skips refinement.
    pub tolerance: f64,
}

impl GridSearch {
    /// Validate: finite `lower < upper`, at least 2 grid points.
    pub fn validate(&self, what: &str) -> Result<()> {
        if !(self.lower.is_finite() && self.upper.is_finite() && self.lower < self.upper) {
            return Err(RffError::InvalidConfig {
                name: what.to_string(),
                reason: format!(
                    "needs finite bounds lower < upper, got [{}, {}]",
                    self.lower, self.upper
                ),
            });
        }
        if self.grid_points < 2 {
            return Err(RffError::InvalidConfig {
                name: what.to_string(),
                reason: format!("needs at least 2 grid points, got {}", self.grid_points),
            });
        }
        Ok(())
    }

    /// The grid values `lower + i (upper - lower)/(grid_points - 1)`.
    pub fn grid(&self) -> Vec<f64> {
        let step = (self.upper - self.lower) / (self.grid_points - 1) as f64;
        (0..self.grid_points)
            .map(|i| self.lower + step * i as f64)
            .collect()
    }
}

/// The best point a search found: its location `t`, the objective value and whatever the
/// objective computed there.
#[derive(Debug, Clone)]
pub struct SearchResult<T> {
    /// The maximizer.
    pub argmax: f64,
    /// The maximum (objective value at `argmax`).
    pub value: f64,
    /// The payload computed at `argmax`.
    pub payload: T,
    /// Every grid point and its value (`NaN` mapped to `-inf`), for plots and diagnostics.
    pub grid_values: Vec<(f64, f64)>,
    /// Number of objective evaluations.
    pub evaluations: usize,
}

/// Maximize `f(t)` on `[lower, upper]`: grid first, then Brent's method between the best grid
/// point's neighbours. `f` returns the value and a payload; a `NaN` value counts as `-inf`.
/// Errors from `f` propagate. The returned point is the best one ever evaluated.
pub fn maximize<T, F>(search: &GridSearch, what: &str, mut f: F) -> Result<SearchResult<T>>
where
    F: FnMut(f64) -> Result<(f64, T)>,
{
    search.validate(what)?;
    let grid = search.grid();
    let values = grid.iter().map(|&t| f(t)).collect::<Result<Vec<_>>>()?;
    refine(search, what, &grid, values, f)
}

/// [`maximize`] with the grid points evaluated concurrently on the crate's threads (the same
/// points and the same result at any thread count; Brent's steps stay serial). For objectives
/// that are expensive next to a thread start.
pub fn maximize_parallel<T, F>(search: &GridSearch, what: &str, f: F) -> Result<SearchResult<T>>
where
    T: Send,
    F: Fn(f64) -> Result<(f64, T)> + Sync,
{
    search.validate(what)?;
    let grid = search.grid();
    let values = crate::parallel::map_blocks(grid.len(), |i| f(grid[i]))?;
    refine(search, what, &grid, values, f)
}

/// The best of the grid `values` (at the points `grid`), then Brent's method around it.
fn refine<T, F>(
    search: &GridSearch,
    what: &str,
    grid: &[f64],
    values: Vec<(f64, T)>,
    mut f: F,
) -> Result<SearchResult<T>>
where
    F: FnMut(f64) -> Result<(f64, T)>,
{
    let mut evaluations = 0usize;
    let mut best: Option<(f64, f64, T)> = None;
    let mut grid_values = Vec::with_capacity(grid.len());
    let mut best_index = 0usize;
    let clean = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
    for (i, (&t, (v, p))) in grid.iter().zip(values).enumerate() {
        evaluations += 1;
        let v = clean(v);
        grid_values.push((t, v));
        if best.as_ref().is_none_or(|b| v > b.1) {
            best = Some((t, v, p));
            best_index = i;
        }
    }
    let Some(mut best) = best else {
        return Err(RffError::InvalidConfig {
            name: what.to_string(),
            reason: "empty grid".to_string(),
        });
    };
    if search.tolerance > 0.0 && grid.len() > 1 {
        // Brent's method inside the bracket of the best grid point's neighbours, seeded with
        // that point; every evaluated point competes for the best.
        let lo = grid[best_index.saturating_sub(1)];
        let hi = grid[(best_index + 1).min(grid.len() - 1)];
        let mut payloads: Vec<(f64, f64, T)> = Vec::new();
        let r = crate::optimize::brent_maximize(
            |t| {
                let (v, p) = f(t)?;
                let v = clean(v);
                payloads.push((t, v, p));
                Ok(v)
            },
            lo,
            hi,
            (best.0, best.1),
            0.5 * search.tolerance,
            200,
        )?;
        evaluations += r.evaluations;
        for (t, v, p) in payloads {
            if v > best.1 {
                best = (t, v, p);
            }
        }
    }
    Ok(SearchResult {
        argmax: best.0,
        value: best.1,
        payload: best.2,
        grid_values,
        evaluations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parallel_grid_gives_the_serial_search_exactly() {
        let f = |t: f64| (-(t + 2.0).powi(2)).exp() + 2.0 * (-4.0 * (t - 1.3).powi(2)).exp();
        let s = GridSearch {
            lower: -4.0,
            upper: 4.0,
            grid_points: 13,
            tolerance: 1e-6,
        };
        let serial = maximize(&s, "t", |t| Ok((f(t), t * 2.0))).unwrap();
        let parallel = maximize_parallel(&s, "t", |t| Ok((f(t), t * 2.0))).unwrap();
        assert_eq!(serial.argmax.to_bits(), parallel.argmax.to_bits());
        assert_eq!(serial.payload.to_bits(), parallel.payload.to_bits());
        assert_eq!(serial.grid_values, parallel.grid_values);
        assert_eq!(serial.evaluations, parallel.evaluations);
        assert!((parallel.argmax - 1.3).abs() < 1e-5);
        // An error at a grid point propagates.
        let failing = maximize_parallel(&s, "t", |t| {
            if t > 0.0 {
                Err(RffError::InvalidConfig {
                    name: "t".to_string(),
                    reason: "positive".to_string(),
                })
            } else {
                Ok((t, ()))
            }
        });
        assert!(failing.is_err());
    }

    #[test]
    fn finds_the_global_peak_of_a_bimodal_function() {
        // Local peak at t = -2 (height 1), global at t = 1.3 (height 2): a local search from
        // the left would stop at -2.
        let f = |t: f64| (-(t + 2.0).powi(2)).exp() + 2.0 * (-4.0 * (t - 1.3).powi(2)).exp();
        let s = GridSearch {
            lower: -4.0,
            upper: 4.0,
            grid_points: 17,
            tolerance: 1e-7,
        };
        let r = maximize(&s, "t", |t| Ok((f(t), ()))).unwrap();
        // The analytic maximizer is within 1e-5 of 1.3 (the left bump's tail shifts it slightly).
        assert!((r.argmax - 1.3).abs() < 1e-4, "argmax {}", r.argmax);
        assert!(r.value > 1.99);
        assert_eq!(r.grid_values.len(), 17);
    }

    #[test]
    fn rejects_bad_settings_and_survives_nan() {
        let bad = GridSearch {
            lower: 1.0,
            upper: 0.0,
            grid_points: 5,
            tolerance: 0.0,
        };
        assert!(maximize(&bad, "t", |t| Ok((t, ()))).is_err());
        let s = GridSearch {
            lower: 0.0,
            upper: 1.0,
            grid_points: 5,
            tolerance: 1e-3,
        };
        let r = maximize(&s, "t", |t| Ok((if t < 0.3 { f64::NAN } else { -t }, ()))).unwrap();
        assert!((r.argmax - 0.5).abs() < 0.3 && r.value.is_finite());
    }
}
