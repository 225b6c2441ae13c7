//! The final model's sufficient statistics over every training row at the chosen lengthscale:
//! `G = Phi^T Phi`, `c = Phi^T y`, `y^T y`, `tr G`, `N`. They are plain sums over rows, so they
//! accumulate block by block in `O(R^2 + block)` memory (never `O(N R)`), and they split across
//! machines: each machine sums its rows, the sums add (in a fixed order for the same bits).

use ndarray::Array2;

use crate::data::RowSource;
use crate::error::{Result, RffError};
use crate::features::Lengthscale;
use crate::fit::prepared::Prepared;
use crate::linalg::{GramAccumulator, GramSums};
use crate::spectrum::Spectrum;

/// The spectrum of the final model at `ls`, and the feature matrix when it was formed (all rows
/// in memory). With a subsampled search, one pass over `source` accumulates the statistics.
pub(crate) fn final_spectrum(
    prep: &Prepared,
    source: Option<&mut dyn RowSource>,
    ls: &Lengthscale,
    progress: &mut dyn FnMut(usize),
) -> Result<(Spectrum, Option<Array2<f64>>)> {
    if !prep.subsampled {
        let phi = prep.features.matrix(prep.x.view(), ls)?;
        let spectrum = Spectrum::of_features(phi.view(), prep.y.view())?;
        return Ok((spectrum, Some(phi)));
    }
    let Some(source) = source else {
        return Err(RffError::InvalidConfig {
            name: "data".to_string(),
            reason: "a subsampled search needs the rows again for the final model".to_string(),
        });
    };
    let mut sums = GramAccumulator::new(prep.features.count());
    source.visit(&mut |x, y| {
        let xs = prep.standardizer.transform_x(x)?;
        let ys = prep.standardizer.transform_y(y);
        let phi = prep.features.matrix(xs.view(), ls)?;
        sums.add(phi.view(), ys.view())?;
        progress(sums.rows());
        Ok(())
    })?;
    let GramSums {
        gram: g,
        cross: c,
        yy,
        rows: n,
    } = sums.finish()?;
    if n != prep.n() {
        return Err(RffError::Shape {
            name: "rows of the second pass over the data (the source changed?)".to_string(),
            expected: prep.n(),
            found: n,
        });
    }
    let trace = deelbo_core::deterministic_sum(g.diag().iter().copied());
    Ok((Spectrum::of_gram(g, c, yy, trace, n)?, None))
}

/// The training RMSE in the targets' units of the mean with spectral coefficients `coeffs`.
///
/// # Formula
/// `y_std sqrt(||y - Phi m||^2 / N)`, `||y - Phi m||^2 = sum_i (y~_i - s_i m~_i)^2 + y_perp^2`.
pub(crate) fn spectrum_rmse(spectrum: &Spectrum, coeffs: &[f64], prep: &Prepared) -> f64 {
    let n = spectrum.examples.max(1) as f64;
    (spectrum.residual_sq(coeffs) / n).sqrt() * prep.standardizer.y_std
}
