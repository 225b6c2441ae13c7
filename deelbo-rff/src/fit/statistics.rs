//! The final model's sufficient statistics over every training row at the chosen lengthscale:
//! `G = Phi^T Phi`, `c = Phi^T y`, `y^T y`, `tr G`, `N`. They are plain sums over rows, so they
//! accumulate block by block in `O(R^2 + block)` memory (never `O(N R)`), and they split across
//! machines: each machine sums its rows, the sums add (in a fixed order for the same bits).

use ndarray::{Array1, Array2, Axis};

use crate::data::RowSource;
use crate::error::{Result, RffError};
use crate::features::Lengthscale;
use crate::fit::prepared::Prepared;
use crate::spectrum::{Spectrum, gram_of_columns};

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
    let r = prep.features.count();
    let mut g = Array2::<f64>::zeros((r, r));
    let mut c = Array1::<f64>::zeros(r);
    let (mut yy, mut n) = (0.0f64, 0usize);
    source.visit(&mut |x, y| {
        let xs = prep.standardizer.transform_x(x)?;
        let ys = prep.standardizer.transform_y(y);
        let phi = prep.features.matrix(xs.view(), ls)?;
        g += &gram_of_columns(phi.view())?;
        c += &phi.t().dot(&ys);
        yy += ys.dot(&ys);
        n += ys.len();
        progress(n);
        Ok(())
    })?;
    if n != prep.n() {
        return Err(RffError::Shape {
            name: "rows of the second pass over the data (the source changed?)".to_string(),
            expected: prep.n(),
            found: n,
        });
    }
    let trace = g.diag().sum();
    let _ = Axis(0);
    Ok((Spectrum::of_gram(g, c, yy, trace, n)?, None))
}
