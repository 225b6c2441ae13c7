//! The README's training-loop snippet is quoted verbatim from `examples/01_training_loop.rs`
//! (which CI compiles), so the README cannot drift from code that builds.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

fn trimmed_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn readme_snippet_matches_the_compiled_example() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/01_training_loop.rs"
    ))
    .unwrap();
    let snippet = readme
        .split("```rust\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .unwrap();
    let quoted = example
        .split("// README-BEGIN")
        .nth(1)
        .and_then(|s| s.split("// README-END").next())
        .unwrap();
    let mut expected = trimmed_lines(quoted);
    expected.push("}".to_string()); // the README closes the loop the example keeps open
    assert_eq!(trimmed_lines(snippet), expected);
}
