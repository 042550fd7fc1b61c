//! `p2pchat send-file` against a real `p2pchat share` process: accepted into the
//! `--accept-files` directory (byte-identical, verified, the name on stdout, the
//! offer and the arrival on the sharer's stderr); declined without the flag, or when
//! the name is already there (exit 3, one line); a path that is no file (exit 1).

mod common;

use common::*;
use std::process::Stdio;

/// `p2pchat share` as `user`, taking files into `inbox`; returns once it is online.
fn share_accepting(registry: &str, user: &str, dir: &str, inbox: &str) -> Proc {
    let args = [
        "share",
        "--registry",
        registry,
        "--user",
        user,
        "--dir",
        dir,
        "--accept-files",
        inbox,
    ];
    let mut p = Proc::spawn(command(&args).stdin(Stdio::null()));
    let line = p.line();
    assert!(
        line.starts_with(&format!("sharing as {user} on ")),
        "{line:?}"
    );
    p
}

fn send_file(registry: &str, to: &str, path: &str) -> Output {
    p2pchat(&[
        "send-file",
        "--registry",
        registry,
        "--user",
        "alice",
        to,
        path,
    ])
}

#[test]
fn send_file_is_accepted_verified_or_declined() {
    let (_registry, addr) = registry();
    let bob_share = tempfile::tempdir().unwrap();
    let inbox = tempfile::tempdir().unwrap();
    let inbox_path = inbox.path().canonicalize().unwrap();
    let mut bob = share_accepting(
        &addr,
        "bob",
        bob_share.path().to_str().unwrap(),
        inbox_path.to_str().unwrap(),
    );
    let src_dir = tempfile::tempdir().unwrap();
    let content = pattern(2 * 1024 * 1024 + 5);
    let src = src_dir.path().join("holiday photos.tar");
    std::fs::write(&src, &content).unwrap();
    let src = src.to_str().unwrap();

    let o = send_file(&addr, "bob", src);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(o.stdout, "holiday photos.tar\n");
    assert_eq!(
        o.stderr, "",
        "no progress bar when stderr is not a terminal"
    );
    let got = inbox_path.join("holiday photos.tar");
    // Confirmed before send-file returned: the file is there, whole.
    assert!(std::fs::read(&got).unwrap() == content, "byte-identical");
    eventually("bob reports the arrival", || {
        bob.all_stderr().contains("received ")
    });
    let said = bob.all_stderr();
    assert!(
        said.contains("file offer from alice (key ")
            && said.contains("holiday photos.tar (2.0 MiB): accepted into"),
        "{said}"
    );
    // Nothing else in the inbox (no partial left).
    assert_eq!(std::fs::read_dir(&inbox_path).unwrap().count(), 1);

    // The same name again: bob's share declines it (it never overwrites).
    let o = send_file(&addr, "bob", src);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert_one_line_error(&o);
    assert!(o.stderr.contains("bob declined the file"), "{o:?}");
    eventually("bob says why", || {
        bob.all_stderr().contains("already exists")
    });

    // A share without --accept-files declines every file.
    let (mut carol, _) = share(&addr, "carol", bob_share.path(), false);
    let o = send_file(&addr, "carol", src);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert_one_line_error(&o);
    assert!(o.stderr.contains("carol declined the file"), "{o:?}");
    eventually("carol says she declined", || {
        carol
            .all_stderr()
            .contains("declined (share --accept-files DIR takes files)")
    });

    // Not a file: refused before connecting.
    let o = send_file(&addr, "bob", src_dir.path().to_str().unwrap());
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert_one_line_error(&o);
    assert!(o.stderr.contains("not a file"), "{o:?}");
}

/// The interactive client shows an offer at its menu and asks; `y` takes the file into
/// its download directory and a line says when it is there; `n` declines (exit 3 for
/// the sender).
#[test]
fn client_asks_about_an_offer() {
    let (_registry, addr) = registry();
    let bob_dir = tempfile::tempdir().unwrap();
    let mut bob = client_at_menu(&addr, "bob", bob_dir.path(), &[]);
    let src_dir = tempfile::tempdir().unwrap();
    let content = pattern(300_000);
    let src = src_dir.path().join("notes.txt");
    std::fs::write(&src, &content).unwrap();
    let src = src.to_str().unwrap().to_string();
    let sender = |src: &str| {
        Proc::start(&[
            "send-file",
            "--registry",
            &addr,
            "--user",
            "alice",
            "bob",
            src,
        ])
    };

    let mut alice = sender(&src);
    bob.expect("alice offers you the file notes.txt (293.0 KiB)");
    bob.expect("Accept the file notes.txt from alice? [y/n]: ");
    bob.send_line("y");
    bob.expect("receiving notes.txt from alice into");
    bob.expect("received ");
    assert!(alice.wait_exit(WAIT).success(), "{}", alice.all_stderr());
    assert_eq!(alice.all_stdout(), "notes.txt\n");
    let got = bob_dir.path().join("notes.txt");
    assert!(std::fs::read(&got).unwrap() == content, "byte-identical");

    let other = src_dir.path().join("other.txt");
    std::fs::write(&other, b"no").unwrap();
    let mut alice = sender(other.to_str().unwrap());
    bob.expect("Accept the file other.txt from alice? [y/n]: ");
    bob.send_line("n");
    bob.expect("declined the file offer from alice");
    assert_eq!(alice.wait_exit(WAIT).code(), Some(3));
    assert!(!bob_dir.path().join("other.txt").exists());
    bob.send_line("0");
    assert!(bob.wait_exit(WAIT).success());
}
