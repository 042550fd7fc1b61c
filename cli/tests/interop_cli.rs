//! The `p2pchat` binary with the original C++ programs (emulated, see
//! `core/tests/common/original.rs`): browsing, fetching and chatting through an
//! original server, found out by itself or with `--legacy-registry`, and with an
//! original client through p2pchat's registry.

mod common;

#[path = "../../core/tests/common/original.rs"]
mod original;

use common::*;
use original::{eventually, Answer, OriginalPeer, OriginalServer};
use std::time::Duration;
use tempfile::TempDir;

#[test]
fn scripted_commands_work_through_an_original_server() {
    let server = OriginalServer::start();
    let reg = server.addr().to_string();
    let orig_dir = TempDir::new().unwrap();
    let content = pattern(50_000);
    std::fs::write(orig_dir.path().join("o1_file.txt"), &content).unwrap();
    let orig = OriginalPeer::start(orig_dir.path().to_path_buf(), Answer::Accept);
    assert_eq!(
        orig.register(server.addr(), "orig1", &["o1_file.txt"]),
        b"OK"
    );

    for extra in [&[][..], &["--legacy-registry"][..]] {
        let with = |args: &[&str]| {
            let mut a = args.to_vec();
            a.extend_from_slice(&["--registry", &reg]);
            a.extend_from_slice(extra);
            p2pchat(&a)
        };
        let o = with(&["users"]);
        assert!(o.status.success(), "{o:?}");
        assert_eq!(o.stdout, "orig1\n");
        let o = with(&["files"]);
        assert_eq!(o.stdout, "orig1: o1_file.txt\n", "{o:?}");
        let o = with(&["files", "orig1"]);
        assert_eq!(o.stdout, "o1_file.txt\n", "{o:?}");
        let o = with(&["whois", "orig1"]);
        assert_eq!(
            o.stdout,
            format!(
                "{}\nno key: unverified (an original registry, which lists no keys)\n",
                orig.addr()
            ),
            "{o:?}"
        );
        assert!(o.stderr.contains("original one"), "{o:?}");
    }

    let dir = TempDir::new().unwrap();
    let d = dir.path().to_str().unwrap();
    let o = p2pchat(&[
        "fetch",
        "--registry",
        &reg,
        "--user",
        "alice",
        "--dir",
        d,
        "orig1",
        "o1_file.txt",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        o.stderr.contains("(unverified: original client, no hash)"),
        "{o:?}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("o1_file.txt")).unwrap(),
        content
    );

    let o = p2pchat(&[
        "send",
        "--registry",
        &reg,
        "--user",
        "bob",
        "orig1",
        "first line",
        "second line",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(eventually(Duration::from_secs(10), || orig
        .log
        .lock()
        .unwrap()
        .chat_reads
        .len()
        >= 2));
    assert_eq!(
        orig.log.lock().unwrap().chat_reads,
        vec![b"first line".to_vec(), b"second line".to_vec()],
        "each message one recv on the original"
    );
    assert!(orig.log.lock().unwrap().ignored.is_empty());

    // The other way: `share` registers through the original server (form B); an
    // original client finds it there, chats with it and downloads from it.
    let alice_dir = TempDir::new().unwrap();
    std::fs::write(alice_dir.path().join("notes.txt"), b"alice's notes").unwrap();
    let (mut alice, port) = share(&reg, "alice", alice_dir.path(), true);
    let found = original::original_client_query(server.addr(), "GET_P,alice", WAIT).unwrap();
    assert_eq!(found, format!("OK,127.0.0.1,{port}").into_bytes());
    let files = original::original_client_query(server.addr(), "GET_UF,alice", WAIT).unwrap();
    assert_eq!(files, b"notes.txt,");
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut c, b"CHAT,orig1").unwrap();
    for line in ["hello alice", "second line"] {
        std::thread::sleep(Duration::from_millis(100));
        std::io::Write::write_all(&mut c, line.as_bytes()).unwrap();
        alice.expect(&format!("orig1: {line}"));
    }
    drop(c);
    let mut f = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut f, b"FILE,notes.txt").unwrap();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut got).unwrap();
    assert_eq!(got, b"alice's notes");
    alice.signal(libc::SIGINT);
    alice.wait_exit(WAIT);

    assert_eq!(server.crash(), None, "{:#?}", server.queries());
    assert!(eventually(Duration::from_secs(10), || server.users() == vec!["orig1"]));
}

#[test]
fn an_original_client_through_p2pchats_registry_is_shown_as_one() {
    let (_r, reg) = registry();
    let orig_dir = TempDir::new().unwrap();
    std::fs::write(orig_dir.path().join("song.mp3"), b"la la la").unwrap();
    let orig = OriginalPeer::start(orig_dir.path().to_path_buf(), Answer::Accept);
    orig.register(reg.parse().unwrap(), "orig1", &["song.mp3"]);
    let o = p2pchat(&["whois", "orig1", "--registry", &reg]);
    assert_eq!(
        o.stdout,
        format!(
            "{}\nno key: unverified (an original client, unencrypted)\n",
            orig.addr()
        ),
        "{o:?}"
    );
    assert!(o.stderr.contains("orig1 is an original client"), "{o:?}");
    let dir = TempDir::new().unwrap();
    let o = p2pchat(&[
        "fetch",
        "--registry",
        &reg,
        "--user",
        "alice",
        "--dir",
        dir.path().to_str().unwrap(),
        "orig1",
        "song.mp3",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(o.stderr.contains("unverified"), "{o:?}");
    assert_eq!(
        std::fs::read(dir.path().join("song.mp3")).unwrap(),
        b"la la la"
    );
}

#[test]
fn the_interactive_client_through_an_original_server() {
    let server = OriginalServer::start();
    let reg = server.addr().to_string();
    let orig_dir = TempDir::new().unwrap();
    std::fs::write(orig_dir.path().join("o1_file.txt"), b"from the original").unwrap();
    let orig = OriginalPeer::start(orig_dir.path().to_path_buf(), Answer::Accept);
    orig.register(server.addr(), "orig1", &["o1_file.txt"]);
    let dir = TempDir::new().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut a = Proc::start(&[
        "client",
        "--registry",
        &reg,
        "--legacy-registry",
        "--user",
        "alice",
        "--dir",
        d,
        "--port",
        "0",
    ]);
    a.expect("registered as alice");
    a.expect("Enter choice: ");
    a.send_line("1");
    a.expect("orig1");
    a.expect("Enter choice: ");
    a.send_line("2");
    a.expect("Enter username (empty to go back): ");
    a.send_line("orig1");
    a.expect("Enter choice: ");
    a.send_line("4");
    a.expect("Enter filename (empty to go back): ");
    a.send_line("o1_file.txt");
    a.expect("(unverified: original client, no hash)");
    assert_eq!(
        std::fs::read(dir.path().join("o1_file.txt")).unwrap(),
        b"from the original"
    );
    a.expect("Enter choice: ");
    a.send_line("3");
    a.expect("chat open with orig1 (an original client");
    a.send_line("hello orig");
    assert!(eventually(Duration::from_secs(10), || !orig
        .log
        .lock()
        .unwrap()
        .chat_reads
        .is_empty()));
    assert_eq!(
        orig.log.lock().unwrap().chat_reads,
        vec![b"hello orig".to_vec()]
    );
    orig.say.send("hello alice".into()).unwrap();
    a.expect("hello alice");
    a.send_line("/exit");
    a.expect("Enter choice: ");
    a.send_line("0");
    a.expect("Enter choice: ");
    a.send_line("0");
    a.expect("leaving the registry (bye)");
    assert!(a.wait_exit(WAIT).success());
    assert!(eventually(Duration::from_secs(10), || server.users() == vec!["orig1"]));
    assert_eq!(server.crash(), None, "{:#?}", server.queries());
}
