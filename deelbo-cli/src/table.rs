//! Table cells specific to the CLI; the layout itself is `deelbo_report::render_table`.

use deelbo_rff::Lengthscale;

/// A lengthscale as text: one number, or `[a, b, ...]` for ARD.
pub fn format_lengthscale(l: &Lengthscale) -> String {
    match l {
        Lengthscale::Isotropic(v) => format!("{v:.4}"),
        Lengthscale::Ard(v) => format!(
            "[{}]",
            v.iter()
                .map(|x| format!("{x:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
