//! Plain-text tables for terminals and `table.txt` files.

/// A number with 3 decimals, switching to scientific notation (`1.23e-5`) for magnitudes outside
/// `[1e-3, 1e5)`; zero prints as `0.000`.
pub fn format_number(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || (1e-3..1e5).contains(&a) {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

/// Render `rows` under `header`, a dashed rule between them; the first column is left-aligned,
/// the others right-aligned, columns two spaces apart, trailing spaces trimmed. Rows shorter
/// than the header leave their last cells empty; extra cells are dropped.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[&str]| -> String {
        let mut s = String::new();
        for (i, w) in width.iter().enumerate() {
            let c = cells.get(i).copied().unwrap_or("");
            let pad = " ".repeat(w.saturating_sub(c.chars().count()));
            if i == 0 {
                s.push_str(c);
                s.push_str(&pad);
            } else {
                s.push_str("  ");
                s.push_str(&pad);
                s.push_str(c);
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header);
    out.push('\n');
    out.push_str(&"-".repeat(width.iter().sum::<usize>() + 2 * cols.saturating_sub(1)));
    out.push('\n');
    for r in rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        out.push_str(&line(&cells));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_numbers_switch_notation() {
        let t = render_table(
            &["method", "x"],
            &[
                vec!["a".into(), "1.000".into()],
                vec!["longer".into(), "12".into()],
                vec!["short row".into()],
            ],
        );
        assert_eq!(
            t,
            "method         x\n----------------\na          1.000\nlonger        12\nshort row\n"
        );
        assert_eq!(format_number(0.0), "0.000");
        assert_eq!(format_number(0.25), "0.250");
        assert_eq!(format_number(1.5e-5), "1.50e-5");
        assert_eq!(format_number(-2.0e6), "-2.00e6");
    }
}
