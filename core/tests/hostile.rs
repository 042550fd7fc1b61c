//! Hostile input, over real sockets. Every case asserts the exact error the attacker
//! gets, and then that the registry or peer still serves a well-behaved client.

mod common;

use common::fake_server;
use p2pcore::peer::Peer;
use p2pcore::registry::{Registry, RegistryConfig};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(20);

/// Send `bytes` on a fresh connection and read the first answer line (session framing).
fn first_line(addr: SocketAddr, bytes: &[u8]) -> String {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut w = s.try_clone().unwrap();
    let bytes = bytes.to_vec();
    // Write from a thread: the registry may answer (and close) before taking it all.
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&bytes);
    });
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let _ = writer.join();
    line
}

/// The registry still answers a well-behaved session client correctly.
fn still_serves(addr: SocketAddr) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    (&s).write_all(b"GET_P,resident\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert_eq!(line, "OK,127.0.0.1,4000\n");
}

/// A registry with one resident user whose session stays open for the whole test.
fn registry(config: RegistryConfig) -> (Registry, TcpStream) {
    let r = Registry::builder()
        .config(config)
        .bind("127.0.0.1:0")
        .unwrap();
    let s = TcpStream::connect(r.local_addr()).unwrap();
    (&s).write_all(b"INIT,resident,4000,r.txt\n").unwrap();
    let mut line = String::new();
    BufReader::new(s.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "OK\n");
    (r, s)
}

#[test]
fn malformed_registry_queries_get_exact_errors() {
    let (r, _resident) = registry(RegistryConfig::default());
    let long_user = "u".repeat(10 * 1024);
    let many_fields = format!("GET_U{}\n", ",x".repeat(100_000));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "invalid utf-8",
            b"GET_P,\xc3\x28\n".to_vec(),
            "ERR,Query is not valid UTF-8",
        ),
        (
            "lone continuation byte",
            b"\x80\n".to_vec(),
            "ERR,Query is not valid UTF-8",
        ),
        ("nul in verb", b"GET\0_U\n".to_vec(), "ERR,Invalid Request!"),
        (
            "nul in name",
            b"GET_P,res\0ident\n".to_vec(),
            "ERR,Invalid Request!",
        ),
        ("empty line", b"\n".to_vec(), "ERR,Invalid Request!"),
        ("only commas", b",,,\n".to_vec(), "ERR,Invalid Request!"),
        (
            "empty username",
            b"INIT,,7000\n".to_vec(),
            "ERR,Invalid username",
        ),
        (
            "empty GET_P field",
            b"GET_P,\n".to_vec(),
            "ERR,Invalid username",
        ),
        (
            "empty EXIT field",
            b"EXIT,\n".to_vec(),
            "ERR,Invalid username",
        ),
        (
            "comma in looked-up name",
            b"GET_P,a,b\n".to_vec(),
            "ERR,Wrong number of fields",
        ),
        (
            "10 KiB username",
            format!("INIT,{long_user},7000\n").into_bytes(),
            "ERR,Invalid username",
        ),
        (
            "tab in username",
            b"INIT,a\tb,7000\n".to_vec(),
            "ERR,Invalid username",
        ),
        (
            "escape in username",
            b"INIT,a\x1b[31mb,7000\n".to_vec(),
            "ERR,Invalid username",
        ),
        (
            "port 0",
            b"INIT,p,0\n".to_vec(),
            "ERR,Invalid port (expected 1-65535)",
        ),
        (
            "port -1",
            b"INIT,p,-1\n".to_vec(),
            "ERR,Invalid port (expected 1-65535)",
        ),
        (
            "port 65536",
            b"INIT,p,65536\n".to_vec(),
            "ERR,Invalid port (expected 1-65535)",
        ),
        (
            "port abc",
            b"INIT,p,abc\n".to_vec(),
            "ERR,Invalid port (expected 1-65535)",
        ),
        (
            "port +80",
            b"INIT,p,+80\n".to_vec(),
            "ERR,Invalid port (expected 1-65535)",
        ),
        (
            "port 99999999999",
            b"INIT,p,/d,99999999999\n".to_vec(),
            "ERR,Invalid port (expected 1-65535)",
        ),
        (
            "no port",
            b"INIT,p\n".to_vec(),
            "ERR,Wrong number of fields",
        ),
        (
            "100,000 fields",
            many_fields.into_bytes(),
            "ERR,Too many fields",
        ),
        (
            "filename with escape",
            b"INIT,p,7000,a\x07b\n".to_vec(),
            "ERR,Invalid filename",
        ),
        (
            "filename with slash",
            b"INIT,p,7000,../etc/passwd\n".to_vec(),
            "ERR,Invalid filename",
        ),
        (
            "filename dot-dot",
            b"INIT,p,7000,..\n".to_vec(),
            "ERR,Invalid filename",
        ),
        (
            "lowercase verb",
            b"exit,resident\n".to_vec(),
            "ERR,Invalid Request!",
        ),
        (
            "unknown verb",
            b"DELETE_ALL\n".to_vec(),
            "ERR,Invalid Request!",
        ),
        (
            "exit someone else",
            b"EXIT,resident\n".to_vec(),
            "ERR,Not the owner of this username",
        ),
        (
            "init someone else",
            b"INIT,resident,6666,evil.exe\n".to_vec(),
            "ERR,Username taken",
        ),
        (
            "exit nobody",
            b"EXIT,nobody\n".to_vec(),
            "ERR,User not found!",
        ),
    ];
    for (what, bytes, want) in &cases {
        assert_eq!(
            first_line(r.local_addr(), bytes),
            format!("{want}\n"),
            "case: {what}"
        );
        still_serves(r.local_addr());
    }
    // A newline inside a username splits the query: each half is refused on its own.
    let s = TcpStream::connect(r.local_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    (&s).write_all(b"INIT,a\nb,7000\n").unwrap();
    let mut lines = BufReader::new(s).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ERR,Wrong number of fields");
    assert_eq!(lines.next().unwrap().unwrap(), "ERR,Invalid Request!");
    assert_eq!(r.users(), vec!["resident"]);
    assert!(r.user("resident").unwrap().files == vec!["r.txt"]);
}

#[test]
fn a_one_mib_line_without_newline_is_refused() {
    let (r, _resident) = registry(RegistryConfig::default());
    assert_eq!(
        first_line(r.local_addr(), &vec![b'x'; 1 << 20]),
        "ERR,Query too long\n"
    );
    still_serves(r.local_addr());
}

#[test]
fn a_100_mib_line_without_newline_is_refused_without_reading_it_all() {
    let (r, _resident) = registry(RegistryConfig::default());
    let s = TcpStream::connect(r.local_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'y'; 1 << 20];
        let mut sent = 0usize;
        for _ in 0..100 {
            match w.write_all(&chunk) {
                Ok(()) => sent += chunk.len(),
                Err(_) => break, // the registry closed on us
            }
        }
        sent
    });
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert_eq!(line, "ERR,Query too long\n");
    assert!(
        writer.join().unwrap() < 100 << 20,
        "the registry stopped reading early"
    );
    still_serves(r.local_addr());
}

#[test]
fn a_legacy_connection_sending_junk_gets_an_error_per_read() {
    let (r, _resident) = registry(RegistryConfig::default());
    let mut s = TcpStream::connect(r.local_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 1000];
    for junk in [&b"\xff\xfe"[..], b"HELLO", b"INIT,x,notaport"] {
        s.write_all(junk).unwrap();
        let n = s.read(&mut buf).unwrap();
        assert!(
            buf[..n].starts_with(b"ERR,"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    still_serves(r.local_addr());
}

#[test]
fn slowloris_and_silent_connections_are_cut_off() {
    let (r, _resident) = registry(RegistryConfig {
        query_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(400),
        ..RegistryConfig::default()
    });
    // Byte at a time, never finishing the line.
    let mut slow = TcpStream::connect(r.local_addr()).unwrap();
    slow.set_read_timeout(Some(WAIT)).unwrap();
    slow.write_all(b"GET_U\n").unwrap(); // now a session
    let mut answer = [0u8; 12];
    slow.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"OK,resident\n");
    let started = Instant::now();
    let mut cut = false;
    for b in b"GET_P,resident".iter().cycle().take(400) {
        if slow.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let mut rest = String::new();
    let _ = slow.read_to_string(&mut rest);
    assert!(cut || rest == "ERR,Query timed out\n", "{rest:?}");
    assert!(rest.is_empty() || rest == "ERR,Query timed out\n");
    // Silent: never sends a byte.
    let mut silent = TcpStream::connect(r.local_addr()).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    let mut all = String::new();
    silent.read_to_string(&mut all).unwrap();
    assert_eq!(all, "ERR,Query timed out\n");
    still_serves(r.local_addr());
}

#[test]
fn thousands_of_connections_at_once_are_all_served() {
    // All from 127.0.0.1: the per-address cap (tested in registry_hostile.rs) is lifted.
    let (r, _resident) = registry(RegistryConfig {
        max_conns_per_addr: usize::MAX,
        ..RegistryConfig::default()
    });
    let addr = r.local_addr();
    // Open 2,000 connections first, then query on each.
    let conns: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    for c in &conns {
        let mut c = c;
        c.write_all(b"GET_U\n").unwrap();
    }
    for c in conns {
        c.set_read_timeout(Some(WAIT)).unwrap();
        let mut line = String::new();
        BufReader::new(c).read_line(&mut line).unwrap();
        assert_eq!(line, "OK,resident\n");
    }
    still_serves(addr);
}

// ---- peers ----

struct Sharing {
    _registry: Registry,
    peer: Peer,
    dir: TempDir,
    /// Registered with a key of its own: what it asks goes inside a `P2P/2` link.
    client: common::KeyedClient,
}

fn sharing() -> Sharing {
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("ok.txt"), b"good bytes").unwrap();
    let peer = common::peer_builder(&registry.local_addr().to_string(), "server", dir.path())
        .listen_ip("127.0.0.1".parse().unwrap())
        .on_chat_request(|r| {
            let _ = r.accept();
        })
        .connect()
        .unwrap();
    let client = common::keyed_client(registry.local_addr(), "tester", 1);
    Sharing {
        _registry: registry,
        peer,
        dir,
        client,
    }
}

fn peer_answer(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// What the sharing peer answers `bytes` sent inside a secured link from a registered
/// user (plaintext downloads are refused as such).
fn secure_answer(s: &Sharing, bytes: &[u8]) -> Vec<u8> {
    s.client
        .ask(s.peer.listen_addr(), s.peer.public_key(), bytes)
}

fn peer_still_serves(s: &Sharing) {
    let out = secure_answer(s, b"P2P/1 FILE 0 ok.txt\n");
    let hash = blake3::hash(b"good bytes").to_hex().to_string();
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!("OK 10 {hash}\ngood bytes")
    );
}

#[test]
fn malformed_peer_requests_get_exact_errors() {
    let s = sharing();
    let outside = TempDir::new().unwrap();
    std::fs::write(outside.path().join("secret"), "x").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), s.dir.path().join("escape")).unwrap();
    s.peer.rescan().unwrap();
    let addr = s.peer.listen_addr();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dot-dot",
            b"P2P/1 FILE 0 ../secret\n".to_vec(),
            "ERR not-found",
        ),
        (
            "absolute path",
            b"P2P/1 FILE 0 /etc/passwd\n".to_vec(),
            "ERR not-found",
        ),
        (
            "url-encoded dot-dot",
            b"P2P/1 FILE 0 %2e%2e/%2e%2e/etc/passwd\n".to_vec(),
            "ERR not-found",
        ),
        (
            "symlink out of the share",
            b"P2P/1 FILE 0 escape\n".to_vec(),
            "ERR not-found",
        ),
        (
            "newline splits the name",
            b"P2P/1 FILE 0 ok\n.txt\n".to_vec(),
            "ERR not-found",
        ),
        (
            "hidden cache file",
            b"P2P/1 FILE 0 .p2pchat-hashes\n".to_vec(),
            "ERR not-found",
        ),
        (
            "nul in name",
            b"P2P/1 FILE 0 ok.txt\0\n".to_vec(),
            "ERR bad-request",
        ),
        (
            "invalid utf-8",
            b"P2P/1 FILE 0 \xff\xfe\n".to_vec(),
            "ERR bad-request",
        ),
        (
            "offset past the end",
            b"P2P/1 FILE 11 ok.txt\n".to_vec(),
            "ERR bad-offset",
        ),
        (
            "negative offset",
            b"P2P/1 FILE -1 ok.txt\n".to_vec(),
            "ERR bad-request",
        ),
        (
            "huge offset",
            b"P2P/1 FILE 99999999999999999999999 ok.txt\n".to_vec(),
            "ERR bad-request",
        ),
        (
            "missing name",
            b"P2P/1 FILE 0\n".to_vec(),
            "ERR bad-request",
        ),
        (
            "unknown verb",
            b"P2P/1 DELETE ok.txt\n".to_vec(),
            "ERR bad-request",
        ),
        (
            "future version",
            b"P2P/9 FILE 0 ok.txt\n".to_vec(),
            "ERR version",
        ),
        (
            "not the protocol",
            b"GET / HTTP/1.1\n".to_vec(),
            "ERR bad-request",
        ),
        (
            "chat with bad name",
            b"P2P/1 CHAT a,b\n".to_vec(),
            "ERR bad-request",
        ),
        (
            "2 KiB request line",
            [b"P2P/1 FILE 0 ".to_vec(), vec![b'a'; 2048], b"\n".to_vec()].concat(),
            "ERR bad-request",
        ),
    ];
    for (what, bytes, want) in &cases {
        let out = String::from_utf8_lossy(&secure_answer(&s, bytes)).into_owned();
        assert!(out.starts_with(want), "case {what}: {out:?}");
        assert!(
            out.ends_with('\n') && out.lines().count() == 1,
            "case {what}: one line only: {out:?}"
        );
        peer_still_serves(&s);
    }
    // In the clear, a download is refused before its name is even looked at.
    let out = peer_answer(addr, b"P2P/1 FILE 0 ok.txt\n");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "ERR denied downloads need a secured link (P2P/2)\n"
    );
}

#[test]
fn a_peer_that_sends_more_than_announced_gets_exactly_the_announced_bytes() {
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    let content = b"exactly these bytes".to_vec();
    let hash = blake3::hash(&content).to_hex().to_string();
    let body = [content.clone(), vec![b'!'; 1 << 20]].concat();
    let answer = format!("OK {} {hash}\n", content.len());
    let (_session, server) = fake_server(registry.local_addr(), "mallory", answer, body);
    let dir = TempDir::new().unwrap();
    let bob = common::peer_builder(&registry.local_addr().to_string(), "bob", dir.path())
        .connect()
        .unwrap();
    let path = bob.fetch("mallory", "x.bin").unwrap().wait().unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"exactly these bytes");
    server.join().unwrap();
}

#[test]
fn an_oversized_incoming_chat_message_ends_the_chat_not_the_peer() {
    let s = sharing();
    let mut c = s.client.link(s.peer.listen_addr(), s.peer.public_key());
    c.writer.write_all(b"P2P/1 CHAT tester\n").unwrap();
    let mut ok = [0u8; 3];
    c.reader.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"OK\n");
    c.writer.write_all(b"MSG 70000\n").unwrap();
    let _ = c.writer.write_all(&vec![b'z'; 70000]);
    let mut rest = Vec::new();
    let _ = c.reader.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed without a word: {rest:?}");
    peer_still_serves(&s);
}

#[test]
fn a_chat_partner_that_never_reads_makes_send_fail_not_hang() {
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let session = TcpStream::connect(registry.local_addr()).unwrap();
    (&session)
        .write_all(format!("INIT,sink,{port}\n").as_bytes())
        .unwrap();
    let mut ok = String::new();
    BufReader::new(session.try_clone().unwrap())
        .read_line(&mut ok)
        .unwrap();
    // The sink accepts the chat and then never reads another byte until told to end.
    let (end_tx, end_rx) = crossbeam_channel::bounded::<()>(1);
    let sink = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        (&s).write_all(b"OK\n").unwrap();
        let _ = end_rx.recv_timeout(Duration::from_secs(60));
    });
    let dir = TempDir::new().unwrap();
    let alice = common::peer_builder(&registry.local_addr().to_string(), "alice", dir.path())
        .io_timeout(Duration::from_secs(2))
        .connect()
        .unwrap();
    let chat = alice.chat("sink").unwrap();
    let msg = "m".repeat(60_000);
    let started = Instant::now();
    let err = loop {
        if let Err(e) = chat.send(&msg) {
            break e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "send never failed"
        );
    };
    assert_eq!(err.code(), p2pcore::ErrorCode::Timeout, "{err}");
    assert!(chat.is_closed());
    drop(alice);
    end_tx.send(()).unwrap();
    sink.join().unwrap();
}

#[test]
fn past_the_serving_bound_a_request_gets_a_clear_busy_answer() {
    let s = sharing();
    let addr = s.peer.listen_addr();
    // Fill every serving slot this address may hold with a connection that never says
    // anything (the total bound and the busy line's delivery: tests/peer_hostile.rs).
    let bound = p2pcore::limits::MAX_SERVING_PER_ADDR;
    let silent: Vec<TcpStream> = (0..bound)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let end = Instant::now() + WAIT;
    while s.peer.serving() < bound && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(s.peer.serving(), bound);
    let out = String::from_utf8_lossy(&peer_answer(addr, b"P2P/1 FILE 0 ok.txt\n")).into_owned();
    assert!(out.starts_with("ERR busy "), "{out:?}");
    // The slots free up as the silent connections go; service resumes.
    drop(silent);
    let end = Instant::now() + WAIT;
    while s.peer.serving() > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    peer_still_serves(&s);
}
