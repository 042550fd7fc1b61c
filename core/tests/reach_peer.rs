//! Reaching peers on every path, the peer's side (`docs/PROTOCOL.md` §5), over real
//! loopback sockets with the real registry (and a real relay it offers). On loopback a
//! listener is reachable unless it listens on another 127.0.0.x than its registry
//! session comes from (then the registry checks an address where nothing listens, as
//! behind a NAT): the default policy is tested that way, the other tests force the path
//! with [`PathPolicy`](p2pcore::peer::PathPolicy). They check that both sides report it, that
//! what arrives is byte-identical, that the listener answers the registry's probe and
//! refuses a reverse connection nobody asked for, and that a flood of `DIAL` pushes
//! keeps threads and descriptors bounded, and that a relayed download cut by the relay
//! going away resumes.
//!
//! The tests measure this process's threads (`/proc/self/task`) and descriptors
//! (`/proc/self/fd`), so they run one at a time.

mod common;

use common::{closed_port, pattern, wait_until};
use p2pcore::peer::{Chat, PathPolicy, Peer, PeerBuilder, PeerEvent};
use p2pcore::reach::{Path, Preamble, Reach, Token};
use p2pcore::registry::{Registry, RegistryConfig};
use p2pcore::relay::{Relay, RelayAddr, RelayOffer, RelaySecret};
use parking_lot::Mutex;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(15);

/// The tests count this process's threads and descriptors: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The secret shared by the test relays and registries of this process.
static RELAY_SECRET: std::sync::OnceLock<RelaySecret> = std::sync::OnceLock::new();

/// A registry that offers a relay of its own (started here, sharing its secret).
fn registry_with_relay() -> (Registry, Relay) {
    let secret = RELAY_SECRET
        .get_or_init(|| RelaySecret::generate().unwrap())
        .clone();
    let relay = Relay::bind("127.0.0.1:0", secret.clone()).unwrap();
    let config = RegistryConfig {
        relay_offer: Some(RelayOffer {
            addr: RelayAddr::Fixed(relay.local_addr().to_string()),
            secret,
        }),
        ..RegistryConfig::default()
    };
    let registry = Registry::builder()
        .config(config)
        .bind("127.0.0.1:0")
        .unwrap();
    (registry, relay)
}

/// What one peer's hooks saw.
#[derive(Clone, Default)]
struct Seen {
    events: Arc<Mutex<Vec<PeerEvent>>>,
    /// The path of each chat request, as the request reported it.
    request_paths: Arc<Mutex<Vec<Path>>>,
    accepted: Arc<Mutex<Vec<Chat>>>,
    messages: Arc<Mutex<Vec<String>>>,
}

impl Seen {
    fn reach(&self) -> Option<Reach> {
        self.events.lock().iter().rev().find_map(|e| match e {
            PeerEvent::Reachability { reach, .. } => Some(*reach),
            _ => None,
        })
    }

    fn started_paths(&self) -> Vec<Path> {
        self.events
            .lock()
            .iter()
            .filter_map(|e| match e {
                PeerEvent::TransferStarted { path, .. } => Some(*path),
                _ => None,
            })
            .collect()
    }
}

/// A peer `name` of `registry` sharing `dir`, taking paths as `policy` says; it
/// accepts every chat request and records what it sees.
fn peer(registry: &str, name: &str, dir: &std::path::Path, policy: PathPolicy) -> (Peer, Seen) {
    let seen = Seen::default();
    let (s1, s2, s3) = (seen.clone(), seen.clone(), seen.clone());
    let b: PeerBuilder = common::peer_builder(registry, name, dir)
        .path_policy(policy)
        .on_event(move |e| s1.events.lock().push(e.clone()))
        .on_chat_request(move |r| {
            s2.request_paths.lock().push(r.path());
            if let Ok(chat) = r.accept() {
                s2.accepted.lock().push(chat);
            }
        })
        .on_chat_message(move |_, _, text| s3.messages.lock().push(text.to_string()));
    (b.connect().unwrap(), seen)
}

/// Two peers, alice (who asks, with `policy`) and bob (who shares `report.bin`), on
/// `registry`; each waits until the registry found its listener reachable.
struct Pair {
    alice: Peer,
    alice_seen: Seen,
    bob: Peer,
    bob_seen: Seen,
    content: Vec<u8>,
    _dirs: (TempDir, TempDir),
}

fn pair(registry: &str, policy: PathPolicy, size: usize) -> Pair {
    let (da, db) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let content = pattern(size, 12);
    std::fs::write(db.path().join("report.bin"), &content).unwrap();
    let (bob, bob_seen) = peer(registry, "bob", db.path(), PathPolicy::Auto);
    let (alice, alice_seen) = peer(registry, "alice", da.path(), policy);
    for (who, p) in [("alice", &alice), ("bob", &bob)] {
        assert!(
            wait_until(WAIT, || p.reachability() == Reach::Reachable),
            "{who}'s listener found reachable (the registry's check over its watch session)"
        );
    }
    assert_eq!(alice_seen.reach(), Some(Reach::Reachable));
    assert_eq!(alice.listed_addr(), Some(alice.listen_addr()));
    Pair {
        alice,
        alice_seen,
        bob,
        bob_seen,
        content,
        _dirs: (da, db),
    }
}

/// alice downloads report.bin and chats with bob on the forced path; alice reports
/// `path`, bob one of `callee_sees` (`path` but for a hole punch on one host, see
/// `punch_forced_…`), and the file and the messages arrive intact.
fn chat_and_download_on(registry: &str, policy: PathPolicy, path: Path, callee_sees: &[Path]) {
    let p = pair(registry, policy, 3 * 1024 * 1024 + 17);
    let started = std::time::Instant::now();
    let t = p.alice.fetch("bob", "report.bin").unwrap();
    let saved = t.wait_timeout(WAIT).expect("download ended").unwrap();
    let fetched = started.elapsed();
    assert_eq!(std::fs::read(&saved).unwrap(), p.content, "byte-identical");
    assert!(t.is_verified() && t.is_encrypted());
    assert_eq!(t.path(), path, "the transfer reports its path");
    assert_eq!(
        p.alice_seen.started_paths(),
        vec![path],
        "and so does its start"
    );

    let started = std::time::Instant::now();
    let chat = p.alice.chat("bob").unwrap();
    println!(
        "{path}: 3 MiB download {:.0} ms, chat open {:.1} ms (debug build)",
        fetched.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(chat.path(), path, "the caller's chat reports its path");
    assert!(chat.is_verified() && chat.is_encrypted());
    chat.send("hello over the other path").unwrap();
    chat.send(&"ü".repeat(5000)).unwrap();
    assert!(wait_until(WAIT, || p.bob_seen.messages.lock().len() == 2));
    assert_eq!(p.bob_seen.messages.lock()[0], "hello over the other path");
    assert_eq!(p.bob_seen.messages.lock()[1], "ü".repeat(5000));
    let request_paths = p.bob_seen.request_paths.lock().clone();
    assert!(
        request_paths.len() == 1 && callee_sees.contains(&request_paths[0]),
        "the callee knows: {request_paths:?}"
    );
    let theirs = p.bob_seen.accepted.lock()[0].clone();
    assert_eq!(
        theirs.path(),
        request_paths[0],
        "the callee's chat reports the path"
    );
    chat.close();
    p.alice.exit();
    p.bob.exit();
}

#[test]
fn direct_forced_chat_and_download_report_direct_on_both_sides() {
    let _one = SERIAL.lock();
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    chat_and_download_on(
        &registry.local_addr().to_string(),
        PathPolicy::Direct,
        Path::Direct,
        &[Path::Direct],
    );
}

#[test]
fn reverse_forced_chat_and_download_are_byte_identical_and_report_reverse_on_both_sides() {
    let _one = SERIAL.lock();
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    chat_and_download_on(
        &registry.local_addr().to_string(),
        PathPolicy::Reverse,
        Path::Reverse,
        &[Path::Reverse],
    );
}

#[test]
fn relay_forced_chat_and_download_are_byte_identical_and_report_relayed_on_both_sides() {
    let _one = SERIAL.lock();
    let (registry, relay) = registry_with_relay();
    chat_and_download_on(
        &registry.local_addr().to_string(),
        PathPolicy::Relay,
        Path::Relayed,
        &[Path::Relayed],
    );
    let stats = relay.stats();
    assert_eq!(
        stats.joined, 2,
        "one circuit for the download, one for the chat"
    );
    assert!(
        stats.bytes_forwarded > 3 * 1024 * 1024,
        "the file went through the relay: {stats:?}"
    );
}

/// Reads one `\n`-terminated line (at most 200 bytes) and then expects the close.
fn answer_then_close(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after the answer: {rest:?}");
    line
}

#[test]
fn the_listener_answers_a_probe_and_refuses_reverse_connections_nobody_asked_for() {
    let _one = SERIAL.lock();
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let (bob, seen) = peer(
        &registry.local_addr().to_string(),
        "bob",
        dir.path(),
        PathPolicy::Auto,
    );
    let addr = bob.listen_addr();

    let token = Token::generate().unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(Preamble::Probe(token).to_line().as_bytes())
        .unwrap();
    assert_eq!(
        answer_then_close(&mut s),
        format!("OK probe {}\n", token.to_hex())
    );

    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(
        Preamble::Reverse(Token::generate().unwrap())
            .to_line()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        answer_then_close(&mut s),
        "ERR denied unexpected reverse connection\n"
    );
    assert!(wait_until(WAIT, || seen.events.lock().iter().any(
        |e| matches!(
            e,
            PeerEvent::RequestRefused { reason, .. } if reason == "unexpected reverse connection"
        )
    )));

    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"P2P/2 REVERSE not-a-token\n").unwrap();
    let line = answer_then_close(&mut s);
    assert!(
        line.starts_with("ERR bad-request malformed token"),
        "{line:?}"
    );

    // The listener still serves: a plaintext request as before.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"FILE nothing.bin 0\n").unwrap();
    let line = answer_then_close(&mut s);
    assert!(line.starts_with("ERR "), "{line:?}");
    bob.exit();
}

/// A listener that plays a caller's: it answers the registry's probes (so the caller
/// is reachable) and holds every `P2P/2 REVERSE` connection without a word, counting
/// them: a callee following `DIAL` pushes sits in its handshake wait until it gives up.
struct HoldingCaller {
    addr: SocketAddr,
    reverse: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HoldingCaller {
    fn start() -> HoldingCaller {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let reverse: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (held, flag) = (reverse.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok((s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                while let Ok(1) = (&s).read(&mut byte) {
                    if byte[0] == b'\n' {
                        break;
                    }
                    line.push(byte[0]);
                }
                match Preamble::parse(&line) {
                    Some(Ok(Preamble::Probe(t))) => {
                        let _ = (&s).write_all(p2pcore::reach::probe_answer(t).as_bytes());
                    }
                    Some(Ok(Preamble::Reverse(_))) => held.lock().push(s),
                    _ => {}
                }
            }
        });
        HoldingCaller {
            addr,
            reverse,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HoldingCaller {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw secured registry session registered as `name` listening on `port`.
struct Session {
    s: p2pcore::secure::SecureStream,
}

impl Session {
    fn open(registry: SocketAddr, name: &str, port: u16) -> Session {
        let stream = TcpStream::connect(registry).unwrap();
        let id = p2pcore::identity::Identity::generate().unwrap();
        let dialed = p2pcore::secure::dial(
            stream,
            p2pcore::secure::DialParams {
                kind: p2pcore::secure::Kind::Registry,
                identity: &id,
                remote: None,
                hello: &[],
                cipher: p2pcore::secure::Cipher::preferred(),
                deadline: std::time::Instant::now() + WAIT,
            },
        )
        .unwrap();
        let p2pcore::secure::Dialed::Secured(s) = dialed else {
            panic!("the registry refused a secured session");
        };
        let mut session = Session { s: *s };
        let ok = session.ask(&format!("INIT,{name},{port},x.bin"));
        assert!(ok.starts_with("OK"), "{ok}");
        session
    }

    fn ask(&mut self, query: &str) -> String {
        self.s.writer.send(format!("{query}\n").as_bytes()).unwrap();
        let mut line = String::new();
        self.s.reader.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }
}

/// After `asked` pushes of `kind` (more than a minute's dial-outs): two seconds on,
/// the connections the callee holds open (`held()`) are at least one and at most
/// `MAX_DIAL_OUTS`, and its threads and descriptors grew by no more than those.
fn assert_dial_outs_bounded(
    kind: &str,
    asked: usize,
    held: impl Fn() -> usize,
    (threads_before, fds_before): (usize, usize),
) {
    assert!(
        asked > p2pcore::limits::MAX_DIAL_OUTS_PER_MINUTE,
        "only {asked} {kind} pushes"
    );
    std::thread::sleep(Duration::from_secs(2));
    let held = held();
    let (threads_peak, fds_peak) = (threads(), fds());
    println!(
        "{asked} {kind} pushes: {held} connections held open; threads {threads_before} -> {threads_peak}, descriptors {fds_before} -> {fds_peak}"
    );
    assert!(held >= 1, "bob connected at all");
    assert!(
        held <= p2pcore::limits::MAX_DIAL_OUTS,
        "at most {} dial-outs at once, {held} held",
        p2pcore::limits::MAX_DIAL_OUTS
    );
    assert!(
        threads_peak <= threads_before + p2pcore::limits::MAX_DIAL_OUTS + 4,
        "threads {threads_before} -> {threads_peak}"
    );
    // Each held connection: bob's socket and the holder's, and bob's slot.
    assert!(
        fds_peak <= fds_before + 6 * p2pcore::limits::MAX_DIAL_OUTS + 8,
        "descriptors {fds_before} -> {fds_peak}"
    );
}

/// Listeners on 127.0.0.1 that accept every connection and hold it without a word: a
/// callee following `PUNCH` pushes to them sits in its handshake wait until it gives up.
struct SilentHolders {
    ports: Vec<u16>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentHolders {
    fn start(n: usize) -> SilentHolders {
        let listeners: Vec<std::net::TcpListener> = (0..n)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.set_nonblocking(true).unwrap();
                l
            })
            .collect();
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (keep, flag) = (held.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                for l in &listeners {
                    if let Ok((s, _)) = l.accept() {
                        keep.lock().push(s);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        SilentHolders {
            ports,
            held,
            stop,
            thread: Some(thread),
        }
    }

    /// Connections held now that the other side has not closed.
    fn open(&self) -> usize {
        let mut held = self.held.lock();
        held.retain(|s| {
            s.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            // Open: nothing to read yet. Closed: end of stream.
            matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        });
        held.len()
    }
}

impl Drop for SilentHolders {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_flood_of_punch_pushes_keeps_dial_outs_threads_and_descriptors_bounded() {
    let _one = SERIAL.lock();
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    let reg = registry.local_addr();
    let dir = TempDir::new().unwrap();
    let (bob, _seen) = peer(&reg.to_string(), "bob", dir.path(), PathPolicy::Auto);
    assert!(wait_until(WAIT, || bob.reachability() == Reach::Reachable
        && bob.serving() == 0));
    // Eight callers, each naming a port of its own where a silent listener holds
    // whatever connects (one 4-tuple per port: bob connects from his listening port).
    let holders = SilentHolders::start(8);
    let mut sessions: Vec<Session> = (0..8)
        .map(|i| Session::open(reg, &format!("puncher{i}"), closed_port()))
        .collect();
    let (threads_before, fds_before) = (threads(), fds());
    let mut asked = 0;
    for round in 0..10 {
        for (s, port) in sessions.iter_mut().zip(&holders.ports) {
            let answer = s.ask(&format!("PUNCH,bob,{port}"));
            if answer.starts_with("OK,") {
                asked += 1;
            } else {
                assert!(answer.starts_with("ERR"), "round {round}: {answer}");
            }
        }
    }
    let held = || holders.open();
    assert_dial_outs_bounded("PUNCH", asked, held, (threads_before, fds_before));
    drop(sessions);
    drop(holders);
    bob.exit();
}

#[test]
fn a_flood_of_dial_pushes_keeps_dial_outs_threads_and_descriptors_bounded() {
    let _one = SERIAL.lock();
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    let reg = registry.local_addr();
    let dir = TempDir::new().unwrap();
    let (bob, _seen) = peer(&reg.to_string(), "bob", dir.path(), PathPolicy::Auto);
    assert!(wait_until(WAIT, || bob.reachability() == Reach::Reachable));
    let caller = HoldingCaller::start();
    // Callers registered at the holding listener, each asking for bob many times.
    let mut sessions: Vec<Session> = (0..8)
        .map(|i| Session::open(reg, &format!("flood{i}"), caller.addr.port()))
        .collect();
    for (i, s) in sessions.iter_mut().enumerate() {
        assert!(
            wait_until(WAIT, || s
                .ask(&format!("GET_P,flood{i}"))
                .ends_with(",reachable")),
            "flood{i} found reachable (the registry's check of the holding listener)"
        );
    }
    let (threads_before, fds_before) = (threads(), fds());
    let mut asked = 0;
    for round in 0..10 {
        for s in &mut sessions {
            let answer = s.ask("CONNECT,bob");
            if answer.starts_with("OK,") {
                asked += 1;
            } else {
                assert!(answer.starts_with("ERR"), "round {round}: {answer}");
            }
        }
    }
    let held = || caller.reverse.lock().len();
    assert_dial_outs_bounded("DIAL", asked, held, (threads_before, fds_before));
    drop(sessions);
    drop(caller);
    bob.exit();
}

#[test]
fn a_relayed_download_cut_midway_resumes_and_is_byte_identical() {
    let _one = SERIAL.lock();
    let (registry, relay) = registry_with_relay();
    let (relay_addr, secret) = (relay.local_addr(), RELAY_SECRET.get().cloned().unwrap());
    let p = pair(
        &registry.local_addr().to_string(),
        PathPolicy::Relay,
        48 * 1024 * 1024,
    );
    let t = p.alice.fetch("bob", "report.bin").unwrap();
    assert!(wait_until(WAIT, || t.progress().0 > 1024 * 1024));
    // The relay goes away mid-way (its circuits closed), and comes back at the same
    // address with the same secret.
    relay.shutdown();
    let cut = t.wait_timeout(WAIT).expect("the cut download ended");
    assert!(
        matches!(&cut, Err(e) if !matches!(e, p2pcore::Error::Cancelled)),
        "failed by the cut: {cut:?}"
    );
    let got = t.progress().0;
    assert!(got < p.content.len() as u64, "cut before the end: {got}");
    let relay = Relay::bind(relay_addr, secret).unwrap();
    let t = p.alice.fetch("bob", "report.bin").unwrap();
    let saved = t.wait_timeout(WAIT * 2).expect("download ended").unwrap();
    assert_eq!(std::fs::read(&saved).unwrap(), p.content, "byte-identical");
    assert_eq!(t.path(), Path::Relayed);
    let starts: Vec<(u64, Path)> = p
        .alice_seen
        .events
        .lock()
        .iter()
        .filter_map(|e| match e {
            PeerEvent::TransferStarted { offset, path, .. } => Some((*offset, *path)),
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert_eq!(starts[0], (0, Path::Relayed));
    assert!(
        starts[1].0 > 0 && starts[1].1 == Path::Relayed,
        "resumed: {starts:?}"
    );
    assert_eq!(
        relay.stats().joined,
        1,
        "the resume's circuit: {:?}",
        relay.stats()
    );
    p.alice.exit();
    p.bob.exit();
}

#[test]
fn punch_forced_chat_and_download_are_byte_identical_and_report_punched() {
    let _one = SERIAL.lock();
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    // Both sides connect to each other at once. With no NAT in between to drop the
    // first SYN, alice's usually reaches bob's listener before bob's own connect
    // starts: bob then serves an ordinary direct connection (and his connect finds the
    // addresses taken). The NAT lab (cli/tests/natlab.rs) shows both sides punched.
    chat_and_download_on(
        &registry.local_addr().to_string(),
        PathPolicy::Punch,
        Path::Punched,
        &[Path::Punched, Path::Direct],
    );
}

/// A peer that listens on `listen` (127.0.0.x) while its registry session comes from
/// 127.0.0.1: the registry lists and checks 127.0.0.1 at its port, where nothing
/// listens, as a NAT without a forwarded port would have it. Waits until the registry
/// said so.
fn unreachable_peer(
    registry: &str,
    name: &str,
    dir: &std::path::Path,
    listen: &str,
) -> (Peer, Seen) {
    let seen = Seen::default();
    let (s1, s2, s3) = (seen.clone(), seen.clone(), seen.clone());
    let peer = common::peer_builder(registry, name, dir)
        .listen_ip(listen.parse().unwrap())
        .on_event(move |e| s1.events.lock().push(e.clone()))
        .on_chat_request(move |r| {
            s2.request_paths.lock().push(r.path());
            if let Ok(chat) = r.accept() {
                s2.accepted.lock().push(chat);
            }
        })
        .on_chat_message(move |_, _, text| s3.messages.lock().push(text.to_string()))
        .connect()
        .unwrap();
    assert!(
        wait_until(WAIT, || peer.reachability() == Reach::Unreachable),
        "{name} found unreachable"
    );
    assert_eq!(seen.reach(), Some(Reach::Unreachable), "and told so");
    (peer, seen)
}

#[test]
fn by_default_an_unreachable_callee_is_reached_by_reverse_connect_and_two_through_the_relay() {
    let _one = SERIAL.lock();
    let (registry, relay) = registry_with_relay();
    let reg = registry.local_addr().to_string();
    let (da, db, dc) = (
        TempDir::new().unwrap(),
        TempDir::new().unwrap(),
        TempDir::new().unwrap(),
    );
    let content = pattern(1024 * 1024 + 3, 5);
    std::fs::write(db.path().join("report.bin"), &content).unwrap();
    let (bob, bob_seen) = unreachable_peer(&reg, "bob", db.path(), "127.0.0.2");
    assert_eq!(
        bob.listed_addr().map(|a| a.ip()),
        Some("127.0.0.1".parse().unwrap()),
        "listed where its session comes from"
    );
    // alice is reachable: bob connects back to her.
    let (alice, _) = peer(&reg, "alice", da.path(), PathPolicy::Auto);
    assert!(wait_until(WAIT, || alice.reachability() == Reach::Reachable));
    let t = alice.fetch("bob", "report.bin").unwrap();
    let saved = t.wait_timeout(WAIT).expect("download ended").unwrap();
    assert_eq!(std::fs::read(&saved).unwrap(), content);
    assert_eq!(t.path(), Path::Reverse);
    let chat = alice.chat("bob").unwrap();
    assert_eq!(chat.path(), Path::Reverse);
    chat.close();
    assert_eq!(*bob_seen.request_paths.lock(), vec![Path::Reverse]);
    assert_eq!(relay.stats().joined, 0, "no relay needed");

    // carol is unreachable too: the relay. (No hole punch first: the registry lists
    // carol and bob at one IP, as behind one NAT, where a punch cannot work.)
    let (carol, _) = unreachable_peer(&reg, "carol", dc.path(), "127.0.0.3");
    let t = carol.fetch("bob", "report.bin").unwrap();
    let saved = t.wait_timeout(WAIT).expect("download ended").unwrap();
    assert_eq!(std::fs::read(&saved).unwrap(), content);
    assert_eq!(t.path(), Path::Relayed);
    assert_eq!(relay.stats().joined, 1);

    // And a direct attempt, forced, is refused where the registry lists bob.
    let dd = TempDir::new().unwrap();
    let (dave, _) = peer(&reg, "dave", dd.path(), PathPolicy::Direct);
    let err = dave.fetch("bob", "report.bin").unwrap().wait_timeout(WAIT);
    assert!(matches!(err, Some(Err(_))), "{err:?}");
    for p in [alice, bob, carol, dave] {
        p.exit();
    }
}
