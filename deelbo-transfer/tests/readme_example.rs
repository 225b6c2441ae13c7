//! The README's candle loop is quoted verbatim from `examples/finetune_conv_net.rs` (which CI
//! compiles), so the README cannot drift from code that builds.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

fn trimmed_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn readme_candle_loop_matches_the_compiled_example() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/finetune_conv_net.rs"
    ))
    .unwrap();
    let section = readme
        .split("## DE-ELBO in any candle model")
        .nth(1)
        .unwrap();
    let block = section
        .split("```rust\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .unwrap();
    let quoted = example
        .split("// README-BEGIN")
        .nth(1)
        .and_then(|s| s.split("// README-END").next())
        .unwrap();
    let block = trimmed_lines(block);
    let quoted = trimmed_lines(quoted);
    // The README block is the plan and model lines of the example followed by the loop.
    assert!(
        block.ends_with(&quoted),
        "README:\n{block:#?}\nexample:\n{quoted:#?}"
    );
    for line in &block[..block.len() - quoted.len()] {
        assert!(
            trimmed_lines(&example).contains(line),
            "README line not in the example: {line}"
        );
    }
}
