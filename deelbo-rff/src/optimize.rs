//! Bounded optimizers of the hyperparameter searches: Brent's method for one coordinate and a
//! projected L-BFGS for several. Both maximize, both are deterministic, both count evaluations.

use crate::error::{Result, RffError};

/// `(3 - sqrt 5)/2`, the golden-section fraction.
const CGOLD: f64 = 0.381_966_011_250_105_1;

/// The best point of a 1-D search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BrentResult {
    /// The maximizer.
    pub argmax: f64,
    /// The maximum.
    pub value: f64,
    /// Objective evaluations.
    pub evaluations: usize,
}

/// Maximize `f` on `[a, b]` by Brent's method (parabolic interpolation safeguarded by golden
/// sections) until the bracket is narrower than `2 tol`. `f` is treated as `-inf` where it is
/// NaN. `start` (inside `[a, b]`) with its known value `f_start` seeds the search.
pub fn brent_maximize<F>(
    mut f: F,
    a: f64,
    b: f64,
    start: (f64, f64),
    tol: f64,
    max_evaluations: usize,
) -> Result<BrentResult>
where
    F: FnMut(f64) -> Result<f64>,
{
    let clean = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
    let (mut a, mut b) = (a.min(b), a.max(b));
    let (mut x, mut fx) = (start.0.clamp(a, b), -clean(start.1));
    let (mut w, mut fw, mut v, mut fv) = (x, fx, x, fx);
    let (mut d, mut e) = (0.0f64, 0.0f64);
    let mut evaluations = 0;
    while evaluations < max_evaluations {
        let m = 0.5 * (a + b);
        let tol1 = tol + 1e-10 * x.abs();
        let tol2 = 2.0 * tol1;
        if (x - m).abs() <= tol2 - 0.5 * (b - a) {
            break;
        }
        let mut golden = true;
        if e.abs() > tol1 {
            let r = (x - w) * (fx - fv);
            let mut q = (x - v) * (fx - fw);
            let mut p = (x - v) * q - (x - w) * r;
            q = 2.0 * (q - r);
            if q > 0.0 {
                p = -p;
            }
            q = q.abs();
            if p.abs() < (0.5 * q * e).abs() && p > q * (a - x) && p < q * (b - x) {
                e = d;
                d = p / q;
                let u = x + d;
                if u - a < tol2 || b - u < tol2 {
                    d = if m >= x { tol1 } else { -tol1 };
                }
                golden = false;
            }
        }
        if golden {
            e = if x >= m { a - x } else { b - x };
            d = CGOLD * e;
        }
        let u = if d.abs() >= tol1 {
            x + d
        } else if d > 0.0 {
            x + tol1
        } else {
            x - tol1
        };
        let fu = -clean(f(u)?);
        evaluations += 1;
        if fu <= fx {
            if u >= x {
                a = x;
            } else {
                b = x;
            }
            (v, fv, w, fw, x, fx) = (w, fw, x, fx, u, fu);
        } else {
            if u < x {
                a = u;
            } else {
                b = u;
            }
            if fu <= fw || w == x {
                (v, fv, w, fw) = (w, fw, u, fu);
            } else if fu <= fv || v == x || v == w {
                (v, fv) = (u, fu);
            }
        }
    }
    Ok(BrentResult {
        argmax: x,
        value: -fx,
        evaluations,
    })
}

/// Iterations whose summed gain is compared with the value tolerance.
const GAIN_WINDOW: usize = 5;

/// Settings of the projected L-BFGS.
///
/// # Parameters
///
/// | name | default | range | meaning |
/// |---|---|---|---|
/// | `memory` | 8 | `>= 1` | correction pairs kept |
/// | `max_iterations` | 100 | `>= 1` | iterations (each one line search) |
/// | `gradient_tolerance` | `1e-5` | `>= 0` | stop when the projected gradient's max-norm is below `gradient_tolerance (1 + |f|) / N`-scaled |
/// | `value_tolerance` | `1e-9` | `>= 0` | stop when the last 5 iterations together gain less than `value_tolerance (1 + |f|)` |
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LbfgsSettings {
    /// Correction pairs kept.
    pub memory: usize,
    /// Iterations.
    pub max_iterations: usize,
    /// Projected-gradient stopping threshold (absolute, on the max-norm).
    pub gradient_tolerance: f64,
    /// Relative gain (over the last 5 iterations) below which the search stops.
    pub value_tolerance: f64,
}

impl LbfgsSettings {
    /// Check every setting against its range in the `# Parameters` table; [`lbfgs_maximize`]
    /// calls this before the first evaluation.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("memory", self.memory),
            ("max_iterations", self.max_iterations),
        ] {
            if v < 1 {
                return Err(RffError::InvalidConfig {
                    name: name.to_string(),
                    reason: "must be at least 1".to_string(),
                });
            }
        }
        for (name, v) in [
            ("gradient_tolerance", self.gradient_tolerance),
            ("value_tolerance", self.value_tolerance),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(RffError::InvalidConfig {
                    name: name.to_string(),
                    reason: format!("must be finite and >= 0, got {v}"),
                });
            }
        }
        Ok(())
    }
}

impl Default for LbfgsSettings {
    fn default() -> Self {
        Self {
            memory: 8,
            max_iterations: 100,
            gradient_tolerance: 1e-5,
            value_tolerance: 1e-9,
        }
    }
}

/// The end of a multi-dimensional search.
#[derive(Debug, Clone, PartialEq)]
pub struct LbfgsResult {
    /// The best point found.
    pub argmax: Vec<f64>,
    /// Its value.
    pub value: f64,
    /// Objective (and gradient) evaluations.
    pub evaluations: usize,
    /// Iterations done.
    pub iterations: usize,
}

fn project(x: &mut [f64], lower: &[f64], upper: &[f64]) {
    for ((v, lo), hi) in x.iter_mut().zip(lower).zip(upper) {
        *v = v.clamp(*lo, *hi);
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The factor a rejected step `t` shrinks by: `f(0) = f0`, the slope `slope` (the directional
/// derivative times `t`, `> 0` for ascent) and the value `ft` at `t`. The maximizer of the
/// quadratic through them, as a fraction of `t`, clamped to `[0.1, 0.5]` (`0.5` when `ft` is not
/// finite or the quadratic has no interior maximum).
///
/// # Formula
/// `q(s) = f0 + slope s + (ft - f0 - slope) s^2`, `s* = slope / (2 (f0 + slope - ft))`.
fn backtrack_factor(f0: f64, slope: f64, ft: f64) -> f64 {
    let curvature = f0 + slope - ft;
    if !(ft.is_finite() && slope > 0.0 && curvature > 0.0) {
        return 0.5;
    }
    (slope / (2.0 * curvature)).clamp(0.1, 0.5)
}

/// Maximize `f` (returning the value and its gradient) over the box `[lower, upper]` from `x0`
/// by L-BFGS with the direction restricted to the free variables (those not at a bound with the
/// gradient pointing out) and a backtracking Armijo line search along the projected path.
pub fn lbfgs_maximize<F>(
    mut f: F,
    x0: &[f64],
    lower: &[f64],
    upper: &[f64],
    settings: &LbfgsSettings,
) -> Result<LbfgsResult>
where
    F: FnMut(&[f64]) -> Result<(f64, Vec<f64>)>,
{
    settings.validate()?;
    let n = x0.len();
    if lower.len() != n || upper.len() != n {
        return Err(RffError::Shape {
            name: "L-BFGS bounds".to_string(),
            expected: n,
            found: lower.len().min(upper.len()),
        });
    }
    let mut x = x0.to_vec();
    project(&mut x, lower, upper);
    let (mut fx, mut g) = f(&x)?;
    let mut evaluations = 1;
    if !fx.is_finite() {
        return Err(RffError::Optimizer {
            name: "L-BFGS".to_string(),
            reason: format!("the objective is {fx} at the starting point"),
        });
    }
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut iterations = 0;
    let mut gains: Vec<f64> = Vec::new();
    let free = |x: &[f64], g: &[f64], i: usize| {
        !((x[i] <= lower[i] && g[i] < 0.0) || (x[i] >= upper[i] && g[i] > 0.0))
    };
    while iterations < settings.max_iterations {
        iterations += 1;
        // Projected gradient (ascent direction) and its norm.
        let pg: Vec<f64> = (0..n)
            .map(|i| if free(&x, &g, i) { g[i] } else { 0.0 })
            .collect();
        let pg_norm = pg.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if pg_norm <= settings.gradient_tolerance {
            break;
        }
        // Two-loop recursion on the free variables: d = H pg (ascent).
        let mut q = pg.clone();
        let k = s_hist.len();
        let mut alpha = vec![0.0; k];
        for j in (0..k).rev() {
            let rho = 1.0 / dot(&y_hist[j], &s_hist[j]);
            alpha[j] = rho * dot(&s_hist[j], &q);
            for (qi, yi) in q.iter_mut().zip(&y_hist[j]) {
                *qi -= alpha[j] * yi;
            }
        }
        let gamma = if k > 0 {
            dot(&s_hist[k - 1], &y_hist[k - 1]) / dot(&y_hist[k - 1], &y_hist[k - 1])
        } else {
            1.0 / pg_norm.max(1.0)
        };
        for qi in &mut q {
            *qi *= gamma;
        }
        for j in 0..k {
            let rho = 1.0 / dot(&y_hist[j], &s_hist[j]);
            let beta = rho * dot(&y_hist[j], &q);
            for (qi, si) in q.iter_mut().zip(&s_hist[j]) {
                *qi += (alpha[j] - beta) * si;
            }
        }
        let mut d: Vec<f64> = (0..n)
            .map(|i| if free(&x, &g, i) { q[i] } else { 0.0 })
            .collect();
        if dot(&d, &pg) <= 0.0 {
            // Not an ascent direction: restart from the projected gradient.
            s_hist.clear();
            y_hist.clear();
            d = pg.iter().map(|v| v / pg_norm.max(1.0)).collect();
        }
        // Backtracking line search on the projected path x(t) = P(x + t d): after a rejected
        // step the next one maximizes the quadratic through f(0), the slope along the step and
        // f(t), kept within [t/10, t/2].
        let mut t = 1.0;
        let mut accepted = None;
        for _ in 0..30 {
            let mut xt: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + t * b).collect();
            project(&mut xt, lower, upper);
            let step: Vec<f64> = xt.iter().zip(&x).map(|(a, b)| a - b).collect();
            if step.iter().all(|s| s.abs() < 1e-14) {
                break;
            }
            let (ft, gt) = f(&xt)?;
            evaluations += 1;
            let slope = dot(&pg, &step);
            if ft.is_finite() && ft >= fx + 1e-4 * slope {
                accepted = Some((xt, ft, gt, step));
                break;
            }
            t *= backtrack_factor(fx, slope, ft);
        }
        let Some((xn, fnew, gn, step)) = accepted else {
            break;
        };
        let yv: Vec<f64> = g.iter().zip(&gn).map(|(a, b)| a - b).collect(); // -(grad change)
        let gain = fnew - fx;
        if dot(&yv, &step) > 1e-12 * dot(&step, &step).sqrt() * dot(&yv, &yv).sqrt() {
            s_hist.push(step);
            y_hist.push(yv);
            if s_hist.len() > settings.memory {
                s_hist.remove(0);
                y_hist.remove(0);
            }
        }
        x = xn;
        fx = fnew;
        g = gn;
        gains.push(gain);
        let window = &gains[gains.len().saturating_sub(GAIN_WINDOW)..];
        if (window.len() == GAIN_WINDOW || gain.abs() == 0.0)
            && window.iter().sum::<f64>().abs() <= settings.value_tolerance * (1.0 + fx.abs())
        {
            break;
        }
    }
    Ok(LbfgsResult {
        argmax: x,
        value: fx,
        evaluations,
        iterations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backtrack_factor_is_the_peak_of_the_interpolating_quadratic() {
        // f(s) = 2 + 3 s - 5 s^2 along the step: f(0) = 2, slope 3, f(1) = 0; peak at 0.3.
        let f = |s: f64| 2.0 + 3.0 * s - 5.0 * s * s;
        assert!((backtrack_factor(f(0.0), 3.0, f(1.0)) - 0.3).abs() < 1e-15);
        // Peaks outside [0.1, 0.5] are clamped; no interior peak or a non-finite value halves.
        assert_eq!(backtrack_factor(0.0, 1.0, -100.0), 0.1);
        assert_eq!(backtrack_factor(0.0, 1.0, 0.9), 0.5);
        assert_eq!(backtrack_factor(0.0, 1.0, 2.0), 0.5);
        assert_eq!(backtrack_factor(0.0, 1.0, f64::NAN), 0.5);
        assert_eq!(backtrack_factor(0.0, 1.0, f64::NEG_INFINITY), 0.5);
    }

    #[test]
    fn brent_finds_a_parabola_peak_and_lbfgs_a_bounded_quadratic() {
        let r = brent_maximize(
            |t| Ok(-(t - 0.3).powi(2)),
            -2.0,
            2.0,
            (-2.0, -5.29),
            1e-8,
            100,
        )
        .unwrap();
        assert!((r.argmax - 0.3).abs() < 1e-6, "{r:?}");
        // max -(x-2)^2 - 10 (y+1)^2 on x <= 1: optimum (1, -1).
        let r = lbfgs_maximize(
            |p| {
                let v = -(p[0] - 2.0).powi(2) - 10.0 * (p[1] + 1.0).powi(2);
                Ok((v, vec![-2.0 * (p[0] - 2.0), -20.0 * (p[1] + 1.0)]))
            },
            &[0.0, 0.0],
            &[-5.0, -5.0],
            &[1.0, 5.0],
            &LbfgsSettings::default(),
        )
        .unwrap();
        assert!(
            (r.argmax[0] - 1.0).abs() < 1e-9 && (r.argmax[1] + 1.0).abs() < 1e-5,
            "{r:?}"
        );
    }
}
