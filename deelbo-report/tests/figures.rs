//! Both figure types write a valid SVG and a PNG of the expected size, with the bundled font.

use deelbo_report::{BandFigure, BandPanel, LineFigure, LinePanel, Series};

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (be(16), be(20))
}

#[test]
fn band_and_line_figures_write_svg_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let xs: Vec<f64> = (0..50).map(|i| f64::from(i) / 10.0).collect();
    let band = BandFigure {
        title: "title".into(),
        subtitle: "subtitle".into(),
        panels: vec![
            BandPanel {
                title: "a".into(),
                note: "note".into(),
                points: vec![(1.0, 0.5), (2.0, 100.0)],
                curve_x: xs.clone(),
                mean: xs.iter().map(|x| x.sin()).collect(),
                std: vec![0.1; xs.len()],
                reference: xs.iter().map(|&x| (x, x.sin())).collect(),
            };
            3
        ],
        columns: 2,
        x_range: (0.0, 5.0),
        y_range: (-2.0, 2.0),
        panel_size: (300, 200),
    };
    let files = band.save(&dir.path().join("band")).unwrap();
    assert_eq!(
        png_size(&std::fs::read(&files[1]).unwrap()),
        (600, 2 * 200 + 70)
    );
    let svg = std::fs::read_to_string(&files[0]).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("subtitle"));

    let lines = LineFigure {
        title: "curves".into(),
        panels: vec![
            LinePanel {
                title: "log x".into(),
                x_desc: "time".into(),
                y_desc: "accuracy".into(),
                x_log: true,
                y_range: Some((0.0, 1.0)),
                series: vec![Series {
                    label: "method".into(),
                    color: (10, 20, 30),
                    points: vec![(0.0, 0.1), (0.5, 0.6), (5.0, 0.9)],
                    mark_last: true,
                }],
            },
            // Nothing drawable: left blank, not an error.
            LinePanel::default(),
        ],
        panel_size: (400, 300),
    };
    let files = lines.save(&dir.path().join("lines")).unwrap();
    assert_eq!(png_size(&std::fs::read(&files[1]).unwrap()), (800, 330));
    assert!(
        std::fs::read_to_string(&files[0])
            .unwrap()
            .contains("method")
    );
}

#[test]
fn an_unwritable_path_is_a_typed_error() {
    let f = LineFigure {
        title: String::new(),
        panels: vec![],
        panel_size: (10, 10),
    };
    let e = f
        .save(std::path::Path::new("/nonexistent-dir/x"))
        .unwrap_err();
    assert!(e.to_string().contains("/nonexistent-dir/x"), "{e}");
}
