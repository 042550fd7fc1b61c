//! The README's Rust example is `examples/quickstart.rs`, word for word; the crate
//! docs include that file, so `cargo test` compiles and runs it as a doctest.

#[test]
fn the_readme_rust_snippet_is_the_tested_example() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../examples/quickstart.rs");
    let start = readme
        .find("```rust\n")
        .expect("a ```rust block in README.md")
        + "```rust\n".len();
    let len = readme[start..].find("```").expect("the block ends");
    let snippet = &readme[start..start + len];
    assert_eq!(
        snippet, example,
        "README.md's Rust block must be core/examples/quickstart.rs exactly"
    );
    assert_eq!(
        readme.matches("```rust").count(),
        1,
        "one Rust block in the README (the tested one)"
    );
    let lib = include_str!("../src/lib.rs");
    assert!(lib.contains("include_str!(\"../examples/quickstart.rs\")"));
}
