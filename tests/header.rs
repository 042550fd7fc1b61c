//! The header: generated content equals the committed file, it compiles cleanly as
//! C11 and C++17 (included twice), and it declares exactly what the library exports.

mod common;

use common::{build, lib_dir, root, run_ok, Link};
use std::collections::BTreeSet;
use std::process::Command;

#[test]
fn header_is_up_to_date() {
    let generated = std::fs::read_to_string(concat!(env!("OUT_DIR"), "/p2pchat.h"))
        .expect("build.rs leaves the generated header in OUT_DIR");
    let committed = std::fs::read_to_string(root().join("include/p2pchat.h"))
        .expect("include/p2pchat.h exists");
    assert!(
        generated == committed,
        "include/p2pchat.h differs from what cbindgen generates from ffi/: run `cargo build` \
         (outside CI) and commit include/p2pchat.h"
    );
}

fn compile_and_run_twice_included(src_name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let original = root().join("tests/c/header_twice.c");
    let src = dir.path().join(src_name);
    std::fs::copy(&original, &src).unwrap();
    let exe = dir.path().join("header_twice");
    build(&src, &exe, Link::Shared);
    let out = run_ok(&mut Command::new(&exe));
    assert!(out.contains("ALL OK"), "{out}");
}

#[test]
fn header_included_twice_compiles_and_works_as_c11() {
    compile_and_run_twice_included("header_twice.c");
}

#[test]
fn header_included_twice_compiles_and_works_as_cxx17() {
    compile_and_run_twice_included("header_twice.cpp");
}

/// `p2p_*` names the shared library exports.
fn exported_symbols() -> Option<BTreeSet<String>> {
    let output = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(lib_dir().join("libp2pchat.so"))
        .output()
        .ok()?;
    assert!(output.status.success(), "nm failed");
    Some(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2))
            .filter(|s| s.starts_with("p2p_"))
            .map(str::to_string)
            .collect(),
    )
}

/// `p2p_*` functions the header declares.
fn declared_functions() -> BTreeSet<String> {
    let header = std::fs::read_to_string(root().join("include/p2pchat.h")).unwrap();
    header
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with("typedef") && !l.starts_with("#"))
        .filter_map(|l| {
            let open = l.find('(')?;
            let name = l[..open].rsplit([' ', '*']).next()?;
            name.starts_with("p2p_").then(|| name.to_string())
        })
        .collect()
}

#[test]
fn header_declares_exactly_the_exported_functions() {
    let Some(exported) = exported_symbols() else {
        println!("SKIP: nm is not installed");
        return;
    };
    let declared = declared_functions();
    assert!(
        declared.len() > 40,
        "parsed too few declarations: {declared:?}"
    );
    assert_eq!(
        exported, declared,
        "exported symbols vs header declarations"
    );
    println!(
        "{} exported functions:\n{}",
        exported.len(),
        exported.into_iter().collect::<Vec<_>>().join("\n")
    );
}
