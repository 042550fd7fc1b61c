//! Error reports through the C API, from a real C program (`tests/c/errors.c`): the
//! fixed texts and statuses (a missing download directory, a registry that never
//! answers, a malformed registry listen address, a chat interrupted by the peer's own
//! exit), and every status it provokes checked against the function's documented
//! "Errors" list, parsed from `include/p2pchat.h`. Run again under valgrind (when
//! installed) with the shipped suppressions.

mod common;

use common::{build, isolate_config, root, valgrind, Link};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Each `p2p_status`-returning function in the header with the statuses its doc
/// comment lists from "Errors" on (`P2P_OK` and `P2P_PANIC`, which any call may
/// return, are always allowed).
fn documented_statuses() -> BTreeMap<String, BTreeSet<String>> {
    let header = std::fs::read_to_string(root().join("include/p2pchat.h")).unwrap();
    let mut out = BTreeMap::new();
    let mut rest = header.as_str();
    while let Some(start) = rest.find("/**") {
        let after = &rest[start + 3..];
        let end = after.find("*/").expect("an unterminated doc comment");
        let doc = &after[..end];
        let tail = after[end + 2..].trim_start();
        rest = &after[end + 2..];
        let Some(decl) = tail.strip_prefix("p2p_status ") else {
            continue;
        };
        let name: String = decl
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !decl[name.len()..].starts_with('(') {
            continue;
        }
        let errors = doc
            .find("Errors")
            .unwrap_or_else(|| panic!("{name}: its doc comment has no \"Errors\" list"));
        let listed: BTreeSet<String> = doc[errors..]
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("P2P_") && w.len() > 4)
            .map(str::to_string)
            .chain(["P2P_OK".to_string(), "P2P_PANIC".to_string()])
            .collect();
        // "Errors: as `p2p_other()`" (and "as for `p2p_other()`") take that list.
        let same_as = doc[errors..]
            .split("as `")
            .skip(1)
            .chain(doc[errors..].split("as for `").skip(1))
            .filter_map(|w| w.split_once("()`").map(|(f, _)| f.to_string()))
            .collect::<Vec<_>>();
        out.insert(name, (listed, same_as));
    }
    let mut resolved = BTreeMap::new();
    for (name, (listed, same_as)) in &out {
        let mut all = listed.clone();
        for other in same_as {
            let (theirs, _) = out
                .get(other)
                .unwrap_or_else(|| panic!("{name}: refers to unknown {other}"));
            all.extend(theirs.iter().cloned());
        }
        assert!(all.len() > 2, "{name}: its \"Errors\" list names no status");
        resolved.insert(name.clone(), all);
    }
    resolved
}

#[test]
fn every_exported_function_documents_its_errors() {
    let docs = documented_statuses();
    let header = std::fs::read_to_string(root().join("include/p2pchat.h")).unwrap();
    let declared: BTreeSet<String> = header
        .lines()
        .filter_map(|l| l.strip_prefix("p2p_status "))
        .map(|d| d.chars().take_while(|c| *c != '(').collect())
        .collect();
    assert!(declared.len() > 60, "too few functions found: {declared:?}");
    for name in &declared {
        assert!(docs.contains_key(name), "{name} has no parsed doc comment");
    }
}

#[test]
fn fixed_error_reports_and_documented_statuses_from_c() {
    let docs = documented_statuses();
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("errors");
    build(&root().join("tests/c/errors.c"), &exe, Link::Shared);

    let config = tempfile::tempdir().unwrap();
    let mut child = isolate_config(&mut Command::new(&exe), config.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The program guards itself with alarm(); this deadline is the last resort.
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("errors hung past its own alarm() guard");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.lines().last() == Some("ALL OK"),
        "errors failed with {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );

    println!("{stdout}");
    let mut undocumented = Vec::new();
    let mut provoked = 0;
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("PROVOKED ") else {
            continue;
        };
        let (name, status) = rest.split_once(' ').unwrap();
        provoked += 1;
        let listed = docs
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not a documented function"));
        if !listed.contains(status) {
            undocumented.push(format!("{name} returned {status}, not in {listed:?}"));
        }
    }
    assert!(provoked > 50, "only {provoked} provoked calls:\n{stdout}");
    assert!(
        undocumented.is_empty(),
        "statuses missing from the doc comments:\n{}",
        undocumented.join("\n")
    );

    if let Some(summary) = valgrind(&exe) {
        println!("valgrind errors:");
        for line in summary {
            println!("  {line}");
        }
    }
}
