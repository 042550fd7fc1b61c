//! The live share in the CLI: `share` says which folder and how many files it shares,
//! names each file it leaves out (once), and announces files added while it runs; the
//! `client` does the same at its menu.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn files_of(registry: &p2pcore::registry::Registry, user: &str) -> Vec<String> {
    registry.user(user).map(|u| u.files).unwrap_or_default()
}

#[test]
fn share_names_its_folder_and_skips_and_follows_changes() {
    let (r, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "a").unwrap();
    std::fs::write(dir.path().join("a,b"), "comma").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let (mut p, _port) = share(&addr, "alice", dir.path(), false);
    let canon = std::fs::canonicalize(dir.path()).unwrap();
    let folder = format!("shared folder: {} (1 file)\n", canon.display());
    eventually("the folder and both skips are reported", || {
        let err = p.all_stderr();
        err.starts_with(&folder)
            && err.contains("not shared: \"a,b\" (contains a comma")
            && err.contains("not shared: \"sub\" (is a directory")
    });

    let start = Instant::now();
    std::fs::write(dir.path().join("new.txt"), "new").unwrap();
    eventually("new.txt is registered", || {
        files_of(&r, "alice") == ["a.txt", "new.txt"]
    });
    println!(
        "share: new.txt registered {} ms after it was written",
        start.elapsed().as_millis()
    );
    eventually("the update is announced", || {
        p.all_stderr()
            .contains("share updated, now 2 files: added new.txt\n")
    });

    // A new unsharable name is reported once; the old ones are not repeated.
    std::fs::write(dir.path().join("c\u{1b}[2J,d"), "x").unwrap();
    eventually("the new skip is reported, escaped", || {
        p.all_stderr()
            .contains("not shared: \"c\\e[2J,d\" (contains a comma")
    });
    std::fs::remove_file(dir.path().join("new.txt")).unwrap();
    eventually("the removal is announced", || {
        p.all_stderr()
            .contains("share updated, now 1 file: removed new.txt\n")
    });
    assert_eq!(files_of(&r, "alice"), ["a.txt"]);
    let err = p.all_stderr();
    assert_eq!(err.matches("\"a,b\"").count(), 1, "{err}");
    assert!(!err.contains('\u{1b}'), "raw escape printed: {err:?}");
    p.signal(libc::SIGTERM);
    assert!(p.exits_within(Duration::from_secs(15)).is_some());
}

#[test]
fn client_shows_skips_at_registration_and_changes_at_the_menu() {
    let (r, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a,b"), "comma").unwrap();
    let d = dir.path().to_str().unwrap();
    let mut c = Proc::start(&[
        "client",
        "--registry",
        &addr,
        "--user",
        "carol",
        "--dir",
        d,
        "--port",
        "0",
    ]);
    c.expect("not shared: \"a,b\" (contains a comma");
    c.expect("Enter choice: ");
    std::fs::write(dir.path().join("later.txt"), "l").unwrap();
    c.expect("share updated, now 1 file: added later.txt");
    assert_eq!(files_of(&r, "carol"), ["later.txt"]);
    c.send_line("0");
    assert!(c.wait_exit(WAIT).success());
}
