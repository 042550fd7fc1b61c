//! The scriptable commands (`server`, `users`, `files`, `whois`, `share`, `fetch`,
//! `send`) driven as a shell script would: exit codes, stdout, one-line errors.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn every_command_has_help() {
    let o = p2pchat(&["--help"]);
    assert!(o.status.success(), "{o:?}");
    for cmd in [
        "server",
        "client",
        "users",
        "files",
        "whois",
        "share",
        "fetch",
        "send",
        "send-file",
        "id",
        "trust",
    ] {
        assert!(
            o.stdout.contains(cmd),
            "top-level help lists {cmd}: {}",
            o.stdout
        );
        let o = p2pchat(&[cmd, "--help"]);
        assert!(o.status.success(), "{cmd} --help: {o:?}");
        assert!(o.stdout.contains("Usage: p2pchat"), "{cmd} --help: {o:?}");
    }
    let o = p2pchat(&["fetch", "--user", "x"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "missing arguments are a usage error"
    );
}

#[test]
fn server_logs_queries_and_stops_on_sigint() {
    let mut server = server_proc(&["--addr", "127.0.0.1:0"]);
    let first = server.line();
    let addr = first
        .strip_prefix("registry listening on ")
        .unwrap_or_else(|| panic!("first line: {first:?}"))
        .to_string();
    assert!(!addr.ends_with(":0"), "the real port is printed: {addr}");

    let o = p2pchat(&["users", "--registry", &addr]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(o.stdout, "");
    server.line_with("connected");
    let query = server.line_with("GET_U");
    assert!(query.contains("GET_U -> OK"), "query line: {query:?}");
    assert!(
        query.contains("127.0.0.1:"),
        "query line names the source: {query:?}"
    );
    server.line_with("disconnected");

    let o = p2pchat(&["whois", "ghost", "--registry", &addr]);
    assert!(!o.status.success());
    server.line_with("GET_P,ghost -> ERR,User not found!");

    server.signal(libc::SIGINT);
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(130), "stopped by SIGINT: {status:?}");
    assert!(server.all_stdout().ends_with("registry stopped\n"));
}

#[test]
fn server_shows_released_names_when_a_peer_disappears() {
    let mut server = server_proc(&["--addr", "127.0.0.1:0"]);
    let addr = server.line().rsplit(' ').next().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (mut bob, _) = share(&addr, "bob", dir.path(), false);
    server.expect("INIT,bob,");
    bob.signal(libc::SIGKILL);
    bob.wait_exit(WAIT);
    server.expect("disconnected (released bob)");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(WAIT).code(), Some(130));
}

#[test]
fn browse_users_files_and_whois() {
    let (registry, addr) = registry();
    let bob_dir = tempfile::tempdir().unwrap();
    std::fs::write(bob_dir.path().join("notes.txt"), "notes").unwrap();
    std::fs::write(bob_dir.path().join("song.ogg"), "la la").unwrap();
    let carol_dir = tempfile::tempdir().unwrap();
    std::fs::write(carol_dir.path().join("photo.png"), "png").unwrap();
    let (_bob, bob_port) = share(&addr, "bob", bob_dir.path(), false);
    let (_carol, _) = share(&addr, "carol", carol_dir.path(), false);

    let o = p2pchat(&["users", "--registry", &addr]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(o.stdout, "bob\ncarol\n");

    // The registry may also come from the environment.
    let o = run({
        let mut c = command(&["files"]);
        c.env("P2PCHAT_REGISTRY", &addr);
        c
    });
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        o.stdout,
        "bob: notes.txt\nbob: song.ogg\ncarol: photo.png\n"
    );

    let o = p2pchat(&["files", "bob", "--registry", &addr]);
    assert_eq!(o.stdout, "notes.txt\nsong.ogg\n", "{o:?}");

    // Where bob listens, then the key the registry lists for him.
    let o = p2pchat(&["whois", "bob", "--registry", &addr]);
    assert!(o.status.success(), "{o:?}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{o:?}");
    assert_eq!(lines[0], format!("127.0.0.1:{bob_port}"));
    let bob_id = p2pchat(&["id", "bob"]);
    assert_eq!(lines[1], format!("key {}", bob_id.stdout.trim()), "{o:?}");
    assert_eq!(registry.user("bob").unwrap().port, bob_port);
}

#[test]
fn browse_errors_are_one_line() {
    let (_registry, addr) = registry();
    assert_one_line_error(&p2pchat(&["whois", "nobody", "--registry", &addr]));
    assert_one_line_error(&p2pchat(&["files", "nobody", "--registry", &addr]));
    // Nothing listens on port 1.
    let o = p2pchat(&["users", "--registry", "127.0.0.1:1"]);
    assert_one_line_error(&o);
    assert!(o.stderr.contains("cannot reach the registry"), "{o:?}");
}

#[test]
fn fetch_downloads_a_verified_identical_copy() {
    let (_registry, addr) = registry();
    let bob_dir = tempfile::tempdir().unwrap();
    let content = pattern(3 * 1024 * 1024 + 17);
    std::fs::write(bob_dir.path().join("big.bin"), &content).unwrap();
    let (_bob, _) = share(&addr, "bob", bob_dir.path(), false);
    let alice_dir = tempfile::tempdir().unwrap();
    let dir = alice_dir.path().to_str().unwrap();
    // `p2pchat fetch` as alice, downloading into her directory.
    let fetch_as_alice = |from: &str, file: &str| {
        p2pchat(&[
            "fetch",
            "--registry",
            &addr,
            "--user",
            "alice",
            "--dir",
            dir,
            from,
            file,
        ])
    };

    let o = fetch_as_alice("bob", "big.bin");
    assert!(o.status.success(), "{o:?}");
    let saved = alice_dir.path().canonicalize().unwrap().join("big.bin");
    assert_eq!(o.stdout.trim_end(), saved.to_str().unwrap());
    assert_eq!(
        o.stderr, "",
        "no progress bar when stderr is not a terminal"
    );
    assert!(std::fs::read(&saved).unwrap() == content, "byte-identical");

    // Again: p2pchat never overwrites.
    let o = fetch_as_alice("bob", "big.bin");
    assert_one_line_error(&o);
    assert!(o.stderr.contains("already exists"), "{o:?}");
    // A file bob does not share, a user who is not online.
    let o = fetch_as_alice("bob", "nope.txt");
    assert_one_line_error(&o);
    assert!(o.stderr.contains("does not share"), "{o:?}");
    let o = fetch_as_alice("zed", "x");
    assert_one_line_error(&o);
    assert!(o.stderr.contains("not online"), "{o:?}");
}

#[test]
fn send_delivers_each_message_and_a_decline_exits_3() {
    let (registry, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    let (mut bob, _) = share(&addr, "bob", dir.path(), true);
    let o = p2pchat(&[
        "send",
        "--registry",
        &addr,
        "--user",
        "carol",
        "bob",
        "hello bob",
        "second, with a comma",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(bob.line(), "carol: hello bob");
    assert_eq!(bob.line(), "carol: second, with a comma");
    eventually("carol left", || registry.user("carol").is_none());

    let (_dave, _) = share(&addr, "dave", dir.path(), false);
    let o = p2pchat(&["send", "--registry", &addr, "--user", "carol", "dave", "hi"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert_one_line_error(&o);
    assert!(o.stderr.contains("declined"), "{o:?}");

    let o = p2pchat(&[
        "send",
        "--registry",
        &addr,
        "--user",
        "carol",
        "nobody",
        "hi",
    ]);
    assert_one_line_error(&o);
    assert_ne!(o.status.code(), Some(3));
}

#[test]
fn share_refuses_a_taken_name_and_leaves_on_sigterm() {
    let (registry, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    let (mut bob, _) = share(&addr, "bob", dir.path(), false);
    let d = dir.path().to_str().unwrap();
    let o = p2pchat(&["share", "--registry", &addr, "--user", "bob", "--dir", d]);
    assert_one_line_error(&o);
    assert!(o.stderr.contains("already taken"), "{o:?}");
    let o = p2pchat(&[
        "share",
        "--registry",
        &addr,
        "--user",
        "eve",
        "--dir",
        "/no/such/dir",
    ]);
    assert_one_line_error(&o);

    assert!(registry.user("bob").is_some());
    bob.signal(libc::SIGTERM);
    let status = bob.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(
        bob.all_stderr()
            .ends_with("interrupted; leaving the registry\n"),
        "{}",
        bob.all_stderr()
    );
    assert!(
        registry.user("bob").is_none(),
        "EXIT was sent before exiting"
    );
}
