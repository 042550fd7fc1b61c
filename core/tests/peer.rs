//! Peers and a registry in one process, over real loopback sockets and real temporary
//! directories: joining, browsing, chats, downloads, resume, safety, legacy clients.

mod common;

use common::{fake_server, pattern, wait_until};
use crossbeam_channel::{unbounded, Receiver};
use p2pcore::peer::{ChatClosedBy, ChatRequest, Peer, PeerBuilder, PeerEvent};
use p2pcore::registry::{Registry, RegistryConfig};
use p2pcore::ErrorCode;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Message { from: String, text: String },
    Closed(ChatClosedBy),
    Done(String),
    Failed(ErrorCode),
    Event(PeerEvent),
}

/// A peer whose hooks report everything on a channel; chat requests go to `requests`.
struct TestPeer {
    peer: Peer,
    seen: Receiver<Seen>,
    requests: Receiver<ChatRequest>,
    dir: TempDir,
}

fn builder(
    registry: SocketAddr,
    name: &str,
    dir: &Path,
) -> (PeerBuilder, Receiver<Seen>, Receiver<ChatRequest>) {
    let (tx, seen) = unbounded::<Seen>();
    let (rtx, requests) = unbounded::<ChatRequest>();
    let (t1, t2, t3, t4, t5) = (tx.clone(), tx.clone(), tx.clone(), tx.clone(), tx);
    let b = common::peer_builder(&registry.to_string(), name, dir)
        .listen_ip("127.0.0.1".parse().unwrap())
        .on_chat_request(move |r| {
            let _ = rtx.send(r);
        })
        .on_chat_message(move |_, from, text| {
            let _ = t1.send(Seen::Message {
                from: from.into(),
                text: text.into(),
            });
        })
        .on_chat_closed(move |_, _, by| {
            let _ = t2.send(Seen::Closed(by));
        })
        .on_transfer_done(move |_, p| {
            let _ = t3.send(Seen::Done(p.file_name().unwrap().to_string_lossy().into()));
        })
        .on_transfer_failed(move |_, e| {
            let _ = t4.send(Seen::Failed(e.code()));
        })
        .on_event(move |e| {
            let _ = t5.send(Seen::Event(e.clone()));
        });
    (b, seen, requests)
}

fn join(registry: SocketAddr, name: &str, files: &[(&str, &[u8])]) -> TestPeer {
    let dir = TempDir::new().unwrap();
    for (n, content) in files {
        std::fs::write(dir.path().join(n), content).unwrap();
    }
    let (b, seen, requests) = builder(registry, name, dir.path());
    TestPeer {
        peer: b.connect().unwrap(),
        seen,
        requests,
        dir,
    }
}

impl TestPeer {
    /// The next hook report that matches `f`, skipping others.
    fn expect(&self, what: &str, f: impl Fn(&Seen) -> bool) -> Seen {
        let end = Instant::now() + WAIT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.seen.recv_timeout(left) {
                Ok(s) if f(&s) => return s,
                Ok(_) => continue,
                Err(_) => panic!("{}: timed out waiting for {what}", self.peer.username()),
            }
        }
    }

    fn expect_message(&self, text: &str) {
        self.expect(
            text,
            |s| matches!(s, Seen::Message { text: t, .. } if t == text),
        );
    }

    fn next_request(&self) -> ChatRequest {
        self.requests.recv_timeout(WAIT).expect("a chat request")
    }
}

#[test]
fn joining_validates_each_field_with_a_distinct_error() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let a = r.local_addr();
    let alice = join(a, "alice", &[]);
    let dir = TempDir::new().unwrap();
    let err = |b: PeerBuilder| b.connect().unwrap_err().code();
    assert_eq!(
        err(builder(a, "alice", dir.path()).0),
        ErrorCode::UsernameTaken
    );
    assert_eq!(
        err(builder(a, "bad,name", dir.path()).0),
        ErrorCode::InvalidUsername
    );
    assert_eq!(
        err(builder(a, "", dir.path()).0),
        ErrorCode::InvalidUsername
    );
    assert_eq!(
        err(builder(a, "bob", &dir.path().join("missing")).0),
        ErrorCode::NotADirectory
    );
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    assert_eq!(err(builder(a, "bob", &file).0), ErrorCode::NotADirectory);
    let taken_port = alice.peer.listen_addr().port();
    assert_eq!(
        err(builder(a, "bob", dir.path()).0.port(taken_port)),
        ErrorCode::PortUnavailable
    );
    // Nothing half-registered remains from the failures.
    assert_eq!(r.users(), vec!["alice"]);
    assert!(p2pcore::peer::username_available(&a.to_string(), "bob").unwrap());
    assert!(!p2pcore::peer::username_available(&a.to_string(), "alice").unwrap());
}

#[test]
fn registers_its_real_port_and_files_and_browses() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let alice = join(
        r.local_addr(),
        "alice",
        &[("a.txt", b"A"), ("b c.txt", b"BC"), ("bad,name", b"")],
    );
    let bob = join(r.local_addr(), "bob", &[]);
    assert_eq!(bob.peer.users().unwrap(), vec!["alice", "bob"]);
    assert_eq!(
        bob.peer.peer_addr("alice").unwrap(),
        alice.peer.listen_addr()
    );
    assert_eq!(
        bob.peer.files_of("alice").unwrap(),
        vec!["a.txt", "b c.txt"]
    );
    assert_eq!(bob.peer.files_of("bob").unwrap(), Vec::<String>::new());
    assert_eq!(
        bob.peer.all_files().unwrap(),
        vec![
            (
                "alice".to_string(),
                vec!["a.txt".to_string(), "b c.txt".to_string()]
            ),
            ("bob".to_string(), vec![])
        ]
    );
    assert_eq!(
        bob.peer.files_of("nobody").unwrap_err().code(),
        ErrorCode::UserNotFound
    );
    // The name the registry protocol cannot carry was left out with a warning event.
    alice.expect(
        "skip warning",
        |s| matches!(s, Seen::Event(PeerEvent::ShareSkipped { name, .. }) if name == "bad,name"),
    );
    std::fs::write(alice.dir.path().join("new.txt"), "n").unwrap();
    alice.peer.rescan().unwrap();
    assert_eq!(
        bob.peer.files_of("alice").unwrap(),
        vec!["a.txt", "b c.txt", "new.txt"]
    );
    alice.peer.exit();
    assert!(wait_until(WAIT, || r.users() == vec!["bob"]));
}

#[test]
fn chat_accepted_is_duplex_and_either_side_can_close() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let alice = join(r.local_addr(), "alice", &[]);
    let bob = join(r.local_addr(), "bob", &[]);
    let (tx, rx) = unbounded();
    std::thread::scope(|s| {
        s.spawn(|| tx.send(alice.peer.chat("bob")).unwrap());
        let req = bob.next_request();
        assert_eq!(req.from(), "alice");
        let bob_chat = req.accept().unwrap();
        let alice_chat = rx.recv_timeout(WAIT).unwrap().unwrap();
        assert_eq!(alice_chat.peer(), "bob");
        let multi = "line one\nline two, with ünïcode ✓\n";
        alice_chat.send(multi).unwrap();
        bob_chat.send("hi alice").unwrap();
        alice_chat.send("").unwrap();
        bob.expect_message(multi);
        bob.expect_message("");
        alice.expect_message("hi alice");
        bob_chat.close();
        alice.expect("closed by remote", |s| {
            *s == Seen::Closed(ChatClosedBy::Remote)
        });
        bob.expect("closed locally", |s| {
            *s == Seen::Closed(ChatClosedBy::Local)
        });
        assert_eq!(
            alice_chat.send("too late").unwrap_err().code(),
            ErrorCode::Closed
        );
    });
    // The other direction, closed by the requester this time.
    let (tx, rx) = unbounded();
    std::thread::scope(|s| {
        s.spawn(|| tx.send(bob.peer.chat("alice")).unwrap());
        let chat = alice.next_request().accept().unwrap();
        let bob_chat = rx.recv_timeout(WAIT).unwrap().unwrap();
        chat.send("from alice").unwrap();
        bob.expect_message("from alice");
        bob_chat.close();
        alice.expect("closed by remote", |s| {
            *s == Seen::Closed(ChatClosedBy::Remote)
        });
    });
}

#[test]
fn declined_chat_requests_fail_with_declined_and_unanswered_ones_with_timeout() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let alice = join(r.local_addr(), "alice", &[]);
    let dir = TempDir::new().unwrap();
    let (b, _seen, requests) = builder(r.local_addr(), "bob", dir.path());
    let bob = b
        .chat_answer_timeout(Duration::from_millis(300))
        .connect()
        .unwrap();
    std::thread::scope(|s| {
        s.spawn(|| requests.recv_timeout(WAIT).unwrap().decline());
        assert_eq!(
            alice.peer.chat("bob").unwrap_err().code(),
            ErrorCode::Declined
        );
    });
    // Nobody answers: the request expires, reported as a timeout (not a refusal).
    let started = Instant::now();
    let err = alice.peer.chat("bob").unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    assert_eq!(
        err.to_string(),
        "timed out: bob did not answer the chat request in time"
    );
    let late = requests.recv_timeout(WAIT).unwrap();
    assert_eq!(late.accept().unwrap_err().code(), ErrorCode::Timeout);
    assert!(started.elapsed() < WAIT);
    drop(bob);
}

#[test]
fn two_chats_at_once_and_a_pending_request_does_not_block_downloads() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let alice = join(r.local_addr(), "alice", &[("f.bin", &pattern(100_000, 0))]);
    let bob = join(r.local_addr(), "bob", &[]);
    let carol = join(r.local_addr(), "carol", &[]);
    std::thread::scope(|s| {
        let b = s.spawn(|| bob.peer.chat("alice").unwrap());
        let c = s.spawn(|| carol.peer.chat("alice").unwrap());
        let first = alice.next_request();
        let second = alice.next_request();
        // While both wait for an answer, alice still serves a download.
        let t = bob.peer.fetch("alice", "f.bin").unwrap();
        t.wait().unwrap();
        let chats = [first.accept().unwrap(), second.accept().unwrap()];
        let (bc, cc) = (b.join().unwrap(), c.join().unwrap());
        for chat in &chats {
            chat.send(&format!("to {}", chat.peer())).unwrap();
        }
        bob.expect_message("to bob");
        carol.expect_message("to carol");
        bc.send("b").unwrap();
        cc.send("c").unwrap();
        // The two chats deliver on their own threads: in either order.
        let mut got: Vec<(String, String)> = (0..2)
            .map(
                |_| match alice.expect("a message", |s| matches!(s, Seen::Message { .. })) {
                    Seen::Message { from, text } => (from, text),
                    _ => unreachable!(),
                },
            )
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![("bob".into(), "b".into()), ("carol".into(), "c".into())]
        );
    });
}

fn fetch_and_compare(size: usize) {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let content = pattern(size, 0);
    let alice = join(r.local_addr(), "alice", &[("data.bin", &content)]);
    let bob = join(r.local_addr(), "bob", &[]);
    let t = bob.peer.fetch("alice", "data.bin").unwrap();
    let path = t.wait().unwrap();
    assert_eq!(path, bob.peer.download_dir().join("data.bin"));
    assert!(std::fs::read(&path).unwrap() == content, "byte-identical");
    assert_eq!(t.progress(), (size as u64, size as u64));
    bob.expect("done hook", |s| *s == Seen::Done("data.bin".into()));
    // The download is shared in turn (re-INIT answered UP).
    assert!(wait_until(WAIT, || alice.peer.files_of("bob").unwrap()
        == vec!["data.bin"]));
    // Nothing else was left in the directory.
    let names: Vec<_> = std::fs::read_dir(bob.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with(".p2pchat-hashes"))
        .collect();
    assert_eq!(names, vec!["data.bin"]);
}

#[test]
fn downloads_an_empty_file() {
    fetch_and_compare(0);
}

#[test]
fn downloads_a_one_byte_file() {
    fetch_and_compare(1);
}

#[test]
fn downloads_a_100_mib_file() {
    fetch_and_compare(100 * 1024 * 1024);
}

#[test]
fn never_overwrites_an_existing_file() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let alice = join(r.local_addr(), "alice", &[("same.txt", b"theirs")]);
    let bob = join(r.local_addr(), "bob", &[("same.txt", b"mine")]);
    let err = bob.peer.fetch("alice", "same.txt").unwrap_err();
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
    assert_eq!(
        std::fs::read(bob.dir.path().join("same.txt")).unwrap(),
        b"mine"
    );
    drop(alice);
}

#[test]
fn missing_file_and_unknown_user_fail_clearly() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let _alice = join(r.local_addr(), "alice", &[]);
    let bob = join(r.local_addr(), "bob", &[]);
    let t = bob.peer.fetch("alice", "nope.txt").unwrap();
    assert_eq!(t.wait().unwrap_err().code(), ErrorCode::FileNotFound);
    bob.expect("failed hook", |s| {
        *s == Seen::Failed(ErrorCode::FileNotFound)
    });
    assert_eq!(
        bob.peer.fetch("ghost", "x").unwrap_err().code(),
        ErrorCode::UserNotFound
    );
    // The parent of bob's share is shared with other programs (the system temp dir):
    // check that nothing named `x` appears or changes there, not that none exists.
    let outside = bob.dir.path().parent().unwrap().join("x");
    let before = std::fs::symlink_metadata(&outside)
        .ok()
        .map(|m| m.modified().ok());
    for bad in ["../x", "/etc/passwd", ".hidden", "a/b", ""] {
        assert_eq!(
            bob.peer.fetch("alice", bad).unwrap_err().code(),
            ErrorCode::InvalidArgument,
            "{bad:?}"
        );
    }
    let after = std::fs::symlink_metadata(&outside)
        .ok()
        .map(|m| m.modified().ok());
    assert_eq!(before, after, "{} was touched", outside.display());
}

#[test]
fn a_cut_transfer_resumes_to_the_right_hash() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let content = pattern(64 * 1024 * 1024, 0);
    let alice_dir = TempDir::new().unwrap();
    std::fs::write(alice_dir.path().join("big.bin"), &content).unwrap();
    let (b, _, _) = builder(r.local_addr(), "alice", alice_dir.path());
    let alice = b.connect().unwrap();
    let bob = join(r.local_addr(), "bob", &[]);
    // Stop the serving peer once bob has some of the bytes.
    let t = bob.peer.fetch("alice", "big.bin").unwrap();
    assert!(wait_until(WAIT, || t.progress().0 > 0 || t.is_finished()));
    alice.exit();
    let err = t.wait();
    if err.is_ok() {
        // Loopback was faster than the stop; nothing to resume. Still byte-identical.
        assert!(std::fs::read(bob.dir.path().join("big.bin")).unwrap() == content);
        return;
    }
    let partial = p2pcore::transfer::partial_path(bob.peer.download_dir(), "big.bin");
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept > 0 && kept < content.len() as u64);
    assert!(
        !bob.dir.path().join("big.bin").exists(),
        "nothing under the final name"
    );
    // Serve again; the next fetch starts from the partial file's length.
    let (b, _, _) = builder(r.local_addr(), "alice", alice_dir.path());
    let _alice = b.connect().unwrap();
    while bob.seen.try_recv().is_ok() {} // forget the first attempt's reports
    let t = bob.peer.fetch("alice", "big.bin").unwrap();
    let started = bob.expect("start", |s| {
        matches!(s, Seen::Event(PeerEvent::TransferStarted { .. }))
    });
    let Seen::Event(PeerEvent::TransferStarted { offset, .. }) = started else {
        unreachable!()
    };
    assert_eq!(offset, kept);
    eprintln!("resuming from byte {kept}");
    t.wait().unwrap();
    assert!(std::fs::read(bob.dir.path().join("big.bin")).unwrap() == content);
    assert!(!partial.exists());
}

#[test]
fn a_cancelled_transfer_leaves_nothing_under_the_final_name() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let alice = join(
        r.local_addr(),
        "alice",
        &[("big.bin", &pattern(32 * 1024 * 1024, 0))],
    );
    let bob = join(r.local_addr(), "bob", &[]);
    let t = bob.peer.fetch("alice", "big.bin").unwrap();
    t.cancel();
    match t.wait() {
        Err(e) => assert_eq!(e.code(), ErrorCode::Cancelled),
        Ok(_) => return, // finished before the cancel landed
    }
    assert!(!bob.dir.path().join("big.bin").exists());
    drop(alice);
}

#[test]
fn a_corrupted_byte_in_flight_is_caught_by_the_hash() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let content = pattern(10_000, 0);
    let mut corrupted = content.clone();
    corrupted[5000] ^= 1;
    let hash = blake3::hash(&content).to_hex().to_string();
    let (_session, h) = fake_server(
        r.local_addr(),
        "mallory",
        format!("OK 10000 {hash}\n"),
        corrupted,
    );
    let bob = join(r.local_addr(), "bob", &[]);
    let err = bob
        .peer
        .fetch("mallory", "x.bin")
        .unwrap()
        .wait()
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::HashMismatch, "{err}");
    assert!(!bob.dir.path().join("x.bin").exists());
    assert!(!p2pcore::transfer::partial_path(bob.dir.path(), "x.bin").exists());
    h.join().unwrap();
}

#[test]
fn a_peer_that_sends_less_than_announced_leaves_only_a_partial_file() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let content = pattern(10_000, 0);
    let hash = blake3::hash(&content).to_hex().to_string();
    let (_session, h) = fake_server(
        r.local_addr(),
        "mallory",
        format!("OK 10000 {hash}\n"),
        content[..4000].to_vec(),
    );
    let bob = join(r.local_addr(), "bob", &[]);
    let err = bob
        .peer
        .fetch("mallory", "x.bin")
        .unwrap()
        .wait()
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Closed, "{err}");
    assert!(!bob.dir.path().join("x.bin").exists());
    h.join().unwrap();
}

/// Send one request line to a peer's listener and read everything it answers.
fn raw_request(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn every_traversal_attempt_is_refused_with_an_event() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let alice = join(r.local_addr(), "alice", &[("ok.txt", b"fine")]);
    let outside = TempDir::new().unwrap();
    std::fs::write(outside.path().join("secret"), "s3cret").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), alice.dir.path().join("link"))
        .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", alice.dir.path().join("passwd")).unwrap();
    alice.peer.rescan().unwrap();
    let addr = alice.peer.listen_addr();
    // Downloads go inside a secured link from a user registered with a key.
    let prober = common::keyed_client(r.local_addr(), "prober", 1);
    let key = alice.peer.public_key();
    let secure_request = |bytes: &[u8]| prober.ask(addr, key, bytes);
    for name in [
        "../secret",
        "/etc/passwd",
        "%2e%2e/secret",
        "..",
        "link",
        "passwd",
        "sub/../ok.txt",
        ".p2pchat-hashes",
    ] {
        let out = secure_request(format!("P2P/1 FILE 0 {name}\n").as_bytes());
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("ERR not-found"), "{name:?} gave {text:?}");
        alice.expect("refusal event", |s| {
            matches!(s, Seen::Event(PeerEvent::RequestRefused { .. }))
        });
    }
    let out = secure_request(b"P2P/1 FILE 0 ok\0.txt\n");
    assert!(String::from_utf8_lossy(&out).starts_with("ERR "));
    let out = secure_request(b"P2P/1 FILE 99 ok.txt\n");
    assert!(String::from_utf8_lossy(&out).starts_with("ERR bad-offset"));
    let out = raw_request(addr, b"P2P/2 FILE 0 ok.txt\n");
    assert!(String::from_utf8_lossy(&out).starts_with("ERR version"));
    let out = raw_request(addr, b"P2P/1 FILE 2 ok.txt\n");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "ERR denied downloads need a secured link (P2P/2)\n"
    );
    // The one real file is served.
    let out = secure_request(b"P2P/1 FILE 2 ok.txt\n");
    let hash = blake3::hash(b"fine").to_hex().to_string();
    assert_eq!(out, format!("OK 4 {hash}\nne").into_bytes());
}

#[test]
fn legacy_file_request_gets_raw_bytes_and_errors_are_a_bare_close() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let content = pattern(300_000, 0);
    let alice = join(r.local_addr(), "alice", &[("doc.pdf", &content)]);
    let addr = alice.peer.listen_addr();
    assert!(raw_request(addr, b"FILE,doc.pdf") == content);
    assert!(raw_request(addr, b"FILE,missing.pdf").is_empty());
    assert!(raw_request(addr, b"FILE,../../etc/passwd").is_empty());
}

#[test]
fn legacy_chat_is_raw_both_ways_and_ends_with_the_connection() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let alice = join(r.local_addr(), "alice", &[]);
    let mut s = TcpStream::connect(alice.peer.listen_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"CHAT,olduser").unwrap();
    let req = alice.next_request();
    assert_eq!(req.from(), "olduser");
    assert!(req.is_legacy());
    let chat = req.accept().unwrap();
    s.write_all(b"hello from c++").unwrap();
    alice.expect_message("hello from c++");
    chat.send("hello back").unwrap();
    let mut buf = [0u8; 100];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello back");
    drop(s);
    alice.expect("closed by remote", |x| {
        *x == Seen::Closed(ChatClosedBy::Remote)
    });
    // A declined legacy request is just a close.
    let mut s = TcpStream::connect(alice.peer.listen_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"CHAT,olduser").unwrap();
    alice.next_request().decline();
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
}

#[test]
fn a_killed_registry_restarted_lists_the_peer_again_without_help() {
    // Restarted from its data directory: the same key (so the peer's pin holds) and
    // alice's claim.
    let data = TempDir::new().unwrap();
    let start = |addr: SocketAddr| {
        Registry::builder()
            .config(RegistryConfig {
                data_dir: Some(data.path().to_path_buf()),
                ..RegistryConfig::default()
            })
            .bind(addr)
            .unwrap()
    };
    let r = start("127.0.0.1:0".parse().unwrap());
    let addr = r.local_addr();
    let alice = join(addr, "alice", &[("a.txt", b"a")]);
    r.shutdown();
    alice.expect("lost", |s| {
        matches!(s, Seen::Event(PeerEvent::RegistryLost { .. }))
    });
    let r = start(addr);
    assert!(
        wait_until(WAIT, || r.users() == vec!["alice"]),
        "re-registered within the wait"
    );
    alice.expect("restored", |s| {
        *s == Seen::Event(PeerEvent::RegistryRestored)
    });
    assert_eq!(r.user("alice").unwrap().files, vec!["a.txt"]);
}

#[test]
fn a_registry_restarted_with_another_key_is_refused_and_reported_once() {
    // No data directory: the restarted registry has a new key, which the peer pinned
    // on its first session; it must not register there, and must say why.
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let addr = r.local_addr();
    let first = r.fingerprint();
    let alice = join(addr, "alice", &[("a.txt", b"a")]);
    r.shutdown();
    let r = Registry::bind(addr).unwrap();
    let second = r.fingerprint();
    assert_ne!(first, second);
    alice.expect("key change reported", |s| {
        matches!(s, Seen::Event(PeerEvent::KeyChanged { subject, pinned, offered })
            if subject.starts_with("registry ") && *pinned == first && *offered == second)
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        r.users().is_empty(),
        "not registered with the changed registry"
    );
    let again = alice
        .seen
        .try_iter()
        .filter(|s| matches!(s, Seen::Event(PeerEvent::KeyChanged { .. })))
        .count();
    assert_eq!(again, 0, "reported once, not at every retry");
}

#[test]
fn exit_sends_exit_and_joins_everything_even_with_open_chats() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let alice = join(r.local_addr(), "alice", &[]);
    let bob = join(r.local_addr(), "bob", &[]);
    std::thread::scope(|s| {
        let h = s.spawn(|| alice.peer.chat("bob").unwrap());
        let _bob_chat = bob.next_request().accept().unwrap();
        let _alice_chat = h.join().unwrap();
    });
    let TestPeer { peer, seen, .. } = bob;
    peer.exit(); // must not hang on the open chat
    assert!(seen
        .try_iter()
        .any(|s| s == Seen::Closed(ChatClosedBy::Local)));
    alice.expect("closed by remote", |s| {
        matches!(s, Seen::Closed(ChatClosedBy::Remote | ChatClosedBy::Lost))
    });
    assert!(wait_until(WAIT, || r.users() == vec!["alice"]));
}

#[test]
fn an_oversized_chat_message_is_refused_before_sending() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let alice = join(r.local_addr(), "alice", &[]);
    let bob = join(r.local_addr(), "bob", &[]);
    std::thread::scope(|s| {
        let h = s.spawn(|| alice.peer.chat("bob").unwrap());
        let _b = bob.next_request().accept().unwrap();
        let chat = h.join().unwrap();
        let big = "x".repeat(p2pcore::limits::MAX_CHAT_MESSAGE + 1);
        assert_eq!(chat.send(&big).unwrap_err().code(), ErrorCode::TooLarge);
        chat.send("still open").unwrap();
        bob.expect_message("still open");
    });
}

#[test]
fn a_panicking_chat_request_hook_declines_and_the_peer_carries_on() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("f.txt"), "still served").unwrap();
    let _bob = common::peer_builder(&r.local_addr().to_string(), "bob", dir.path())
        .on_chat_request(|_| panic!("a buggy application hook"))
        .connect()
        .unwrap();
    let alice = join(r.local_addr(), "alice", &[]);
    assert_eq!(
        alice.peer.chat("bob").unwrap_err().code(),
        ErrorCode::Declined
    );
    let path = alice.peer.fetch("bob", "f.txt").unwrap().wait().unwrap();
    assert_eq!(std::fs::read_to_string(path).unwrap(), "still served");
}
