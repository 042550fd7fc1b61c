//! Secured peer links (`P2P/2`), over real sockets on loopback: what crosses the wire
//! is ciphertext only; a caller is served only as the user whose key the registry lists
//! (and the pinned one); a changed key is refused until accepted; a registry cannot make
//! a known user unverified; an altered byte ends a download or a chat cleanly; the
//! serve-only list and `refuse_unverified` hold.
//!
//! The registry here is [`keyed::KeyedRegistry`], whose `GET_P` listing (key, none,
//! `legacy`, and the address) each test sets, so a hostile or changed registry is one
//! call away. Every peer has its own `Identity::generate()` and known-keys file in a
//! temporary directory.

mod common;

#[path = "common/keyed.rs"]
mod keyed;

use common::{pattern, wait_until};
use crossbeam_channel::{unbounded, Receiver, Sender};
use keyed::{KeyedRegistry, Listing};
use p2pcore::identity::{Identity, PublicKey};
use p2pcore::known_keys::{KnownKeys, Subject};
use p2pcore::peer::{Chat, ChatClosedBy, Peer, PeerBuilder, PeerEvent};
use p2pcore::secure::{self, Cipher, DialParams, Dialed, Kind};
use p2pcore::{Error, ErrorCode};
use std::io::{BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// A chat request as the hook saw it: from, key, verified.
type Asked = (String, Option<PublicKey>, bool);
/// Bytes one proxied connection carried one way: (connection, "up"/"down", bytes).
type Streams = Arc<Mutex<Vec<(usize, &'static str, Vec<u8>)>>>;

/// What one peer's hooks saw.
#[derive(Clone, Default)]
struct Seen {
    requests: Arc<AtomicUsize>,
    /// (from, key, verified) of each chat request.
    asked: Arc<Mutex<Vec<Asked>>>,
    accepted: Arc<Mutex<Vec<Chat>>>,
    events: Arc<Mutex<Vec<PeerEvent>>>,
    closed: Arc<Mutex<Vec<ChatClosedBy>>>,
}

impl Seen {
    fn refused(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                PeerEvent::RequestRefused { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }
}

struct Node {
    peer: Peer,
    id: Identity,
    seen: Seen,
    messages: Receiver<String>,
    known_keys: PathBuf,
}

/// A peer `name` sharing `dir`, with identity `id` and known keys in `kk`, listed by
/// `reg` with its key; it accepts every chat request and reports what it sees.
fn builder(
    reg: &KeyedRegistry,
    name: &str,
    dir: &Path,
    id: &Identity,
    kk: &Path,
) -> (PeerBuilder, Seen, Receiver<String>) {
    let seen = Seen::default();
    let (tx, rx): (Sender<String>, Receiver<String>) = unbounded();
    let s = seen.clone();
    let s2 = seen.clone();
    let s3 = seen.clone();
    let b = Peer::builder(&reg.addr(), name, dir)
        .identity(id.clone())
        .known_keys_file(kk)
        .on_chat_request(move |req| {
            s.requests.fetch_add(1, Ordering::SeqCst);
            s.asked
                .lock()
                .unwrap()
                .push((req.from().to_string(), req.key(), req.is_verified()));
            if let Ok(chat) = req.accept() {
                s.accepted.lock().unwrap().push(chat);
            }
        })
        .on_chat_message(move |_, _, text| {
            let _ = tx.send(text.to_string());
        })
        .on_chat_closed(move |_, _, by| s3.closed.lock().unwrap().push(by))
        .on_event(move |e| s2.events.lock().unwrap().push(e.clone()));
    (b, seen, rx)
}

fn node(
    reg: &KeyedRegistry,
    name: &str,
    root: &Path,
    configure: impl FnOnce(PeerBuilder) -> PeerBuilder,
) -> Node {
    let id = Identity::generate().unwrap();
    node_with(reg, name, root, id, configure)
}

fn node_with(
    reg: &KeyedRegistry,
    name: &str,
    root: &Path,
    id: Identity,
    configure: impl FnOnce(PeerBuilder) -> PeerBuilder,
) -> Node {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let kk = root.join(format!("{name}.known_keys"));
    reg.list(name, Listing::Key(id.public()));
    let (b, seen, messages) = builder(reg, name, &dir, &id, &kk);
    let peer = configure(b).connect().unwrap();
    Node {
        peer,
        id,
        seen,
        messages,
        known_keys: kk,
    }
}

/// A forwarding proxy that records every byte, per connection and direction, and can
/// flip one byte of what the server sends at a given offset of each connection.
struct Proxy {
    addr: SocketAddr,
    /// (connection, "up" client→server / "down" server→client, bytes).
    streams: Streams,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(target: SocketAddr, flip_down_at: Option<u64>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let streams = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, flag) = (streams.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut pumps = Vec::new();
            let mut n = 0;
            while !flag.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                for (from, to, dir, flip) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        "up",
                        None,
                    ),
                    (server, client, "down", flip_down_at),
                ] {
                    let (st, flag) = (st.clone(), flag.clone());
                    pumps.push(std::thread::spawn(move || {
                        pump(from, to, n, dir, flip, st, flag)
                    }));
                }
                n += 1;
            }
            for p in pumps {
                let _ = p.join();
            }
        });
        Proxy {
            addr,
            streams,
            stop,
            thread: Some(thread),
        }
    }

    fn streams(&self) -> Vec<(usize, &'static str, Vec<u8>)> {
        self.streams.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    conn: usize,
    dir: &'static str,
    flip: Option<u64>,
    streams: Streams,
    stop: Arc<AtomicBool>,
) {
    let index = {
        let mut s = streams.lock().unwrap();
        s.push((conn, dir, Vec::new()));
        s.len() - 1
    };
    from.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // A side that stops reading cannot hold the proxy (and the test) forever.
    to.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut pos = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                continue;
            }
            Err(_) => break,
        };
        let chunk = &mut buf[..n];
        if let Some(at) = flip {
            if at >= pos && at < pos + n as u64 {
                chunk[(at - pos) as usize] ^= 0x01;
            }
        }
        pos += n as u64;
        streams.lock().unwrap()[index].2.extend_from_slice(chunk);
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A file whose every 64 KiB holds a distinctive marker, so any plaintext on the wire
/// would show it.
fn distinctive_file(len: usize) -> Vec<u8> {
    let mut v = pattern(len, 7);
    for at in (0..len.saturating_sub(64)).step_by(65_536) {
        v[at..at + 24].copy_from_slice(b"DISTINCTIVE-FILE-PATTERN");
    }
    v
}

fn dial_raw(addr: SocketAddr, id: &Identity, key: PublicKey, hello: &str) -> secure::SecureStream {
    let s = TcpStream::connect(addr).unwrap();
    let dialed = secure::dial(
        s,
        DialParams {
            kind: Kind::Peer,
            identity: id,
            remote: Some(key),
            hello: hello.as_bytes(),
            cipher: Cipher::preferred(),
            deadline: Instant::now() + WAIT,
        },
    )
    .unwrap();
    match dialed {
        Dialed::Secured(s) => *s,
        Dialed::Refused(line) => panic!("refused before the handshake: {line}"),
    }
}

/// Sends `request` inside a secured link and returns the answer line.
fn ask_secure(s: &mut secure::SecureStream, request: &str) -> String {
    s.reader.socket().set_read_timeout(Some(WAIT)).unwrap();
    s.writer.write_all(request.as_bytes()).unwrap();
    let mut line = String::new();
    s.reader.read_line(&mut line).unwrap();
    line
}

fn ask_plain(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn chat_and_download_through_a_recording_proxy_carry_no_plaintext() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = KeyedRegistry::start();
    let alice = node(&reg, "alice", tmp.path(), |b| b);
    let bob = node(&reg, "bob", tmp.path(), |b| b);
    let content = distinctive_file(3 * 1024 * 1024 + 123);
    std::fs::write(bob.peer.shared_dir().join("secret.bin"), &content).unwrap();
    bob.peer.rescan().unwrap();
    let proxy = Proxy::start(bob.peer.listen_addr(), None);
    reg.list_at("bob", proxy.addr);

    let text = "the meeting moves to pier 39 at 0700, bring the blue folder";
    let chat = alice.peer.chat("bob").unwrap();
    assert!(chat.is_encrypted() && chat.is_verified());
    assert_eq!(chat.remote_key(), Some(bob.id.public()));
    chat.send(text).unwrap();
    assert_eq!(bob.messages.recv_timeout(WAIT).unwrap(), text);
    let asked = bob.seen.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        vec![("alice".to_string(), Some(alice.id.public()), true)]
    );
    let theirs = bob.seen.accepted.lock().unwrap()[0].clone();
    assert!(theirs.is_encrypted() && theirs.is_verified());
    assert_eq!(theirs.remote_key(), Some(alice.id.public()));
    let reply = "confirmed: pier 39, blue folder";
    theirs.send(reply).unwrap();
    assert_eq!(alice.messages.recv_timeout(WAIT).unwrap(), reply);

    let t = alice.peer.fetch("bob", "secret.bin").unwrap();
    let path = t.wait().unwrap();
    assert!(std::fs::read(&path).unwrap() == content);
    assert!(t.is_verified() && t.is_encrypted());
    assert_eq!(t.remote_key(), Some(bob.id.public()));
    chat.close();
    assert!(wait_until(WAIT, || !bob
        .seen
        .closed
        .lock()
        .unwrap()
        .is_empty()));
    let served = bob.seen.events.lock().unwrap().iter().any(|e| {
        matches!(e, PeerEvent::Served { user: Some(u), file, .. } if u == "alice" && file == "secret.bin")
    });
    assert!(served, "bob reports the verified user it served");
    let started = alice
        .seen
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, PeerEvent::TransferStarted { verified: true, .. }));
    assert!(started);

    // Each connection's bytes, one direction at a time: a chat and a download.
    let streams = proxy.streams();
    drop(proxy);
    let total: usize = streams.iter().map(|(_, _, b)| b.len()).sum();
    assert!(
        total > content.len(),
        "the proxy carried it all: {total} bytes"
    );
    let conns: std::collections::BTreeSet<usize> = streams.iter().map(|(c, _, _)| *c).collect();
    assert_eq!(conns.len(), 2, "one chat and one download");
    for (conn, dir, bytes) in &streams {
        if *dir == "up" {
            assert!(
                bytes.starts_with(b"P2P/2 IK "),
                "connection {conn} opens secured"
            );
        }
        for needle in [
            text.as_bytes(),
            reply.as_bytes(),
            b"pier 39",
            b"DISTINCTIVE-FILE-PATTERN",
            b"P2P/1",
            b"secret.bin",
            b"alice",
            &content[1000..1032],
        ] {
            assert!(
                !contains(bytes, needle),
                "{:?} seen in the clear on connection {conn} ({dir})",
                String::from_utf8_lossy(needle)
            );
        }
    }
}

#[test]
fn an_impostor_key_claiming_alice_is_denied_and_bobs_hook_never_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = KeyedRegistry::start();
    let alice = node(&reg, "alice", tmp.path(), |b| b);
    let bob = node(&reg, "bob", tmp.path(), |b| b);
    let bob_addr = bob.peer.listen_addr();

    // Another key, claiming to be alice (who is registered with her own).
    let mallory = Identity::generate().unwrap();
    let mut s = dial_raw(bob_addr, &mallory, bob.id.public(), "alice");
    let line = ask_secure(&mut s, "P2P/1 CHAT alice\n");
    assert!(
        line.starts_with("ERR denied alice is registered with another key than this link's "),
        "{line:?}"
    );
    // In the clear, in alice's name.
    let out = ask_plain(bob_addr, b"P2P/1 CHAT alice\n");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "ERR denied alice proves its identity with a key; plaintext requests in its name are refused\n"
    );
    // Alice's own key, asking in someone else's name.
    let mut s = dial_raw(bob_addr, &alice.id, bob.id.public(), "alice");
    let line = ask_secure(&mut s, "P2P/1 CHAT carol\n");
    assert_eq!(
        line,
        "ERR denied the chat request names carol, but this link is alice's\n"
    );
    // A hello that is no username at all.
    let mut s = dial_raw(bob_addr, &mallory, bob.id.public(), "a,b");
    let line = ask_secure(&mut s, "P2P/1 CHAT a\n");
    assert_eq!(line, "ERR denied the hello is not a valid username\n");

    assert_eq!(
        bob.seen.requests.load(Ordering::SeqCst),
        0,
        "the hook never ran"
    );
    assert!(
        wait_until(WAIT, || bob.seen.refused().len() >= 4),
        "{:?}",
        bob.seen.refused()
    );
    // The real alice still gets through.
    let chat = alice.peer.chat("bob").unwrap();
    assert!(chat.is_verified());
    assert_eq!(bob.seen.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn a_secured_request_while_the_registry_is_unreachable_is_denied() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = KeyedRegistry::start();
    let alice = node(&reg, "alice", tmp.path(), |b| b);
    let bob = node(&reg, "bob", tmp.path(), |b| b);
    drop(reg);
    let mut s = dial_raw(bob.peer.listen_addr(), &alice.id, bob.id.public(), "alice");
    let line = ask_secure(&mut s, "P2P/1 CHAT alice\n");
    assert_eq!(
        line,
        "ERR denied cannot check alice's key: the registry is unreachable\n"
    );
    assert_eq!(bob.seen.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn a_changed_key_is_refused_until_accepted_and_a_registry_cannot_unverify_a_pinned_user() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = KeyedRegistry::start();
    let alice = node(&reg, "alice", tmp.path(), |b| b);
    let bob = node(&reg, "bob", tmp.path(), |b| b);
    std::fs::write(bob.peer.shared_dir().join("f.txt"), b"hello").unwrap();
    bob.peer.rescan().unwrap();
    let old = bob.id.public();
    alice.peer.chat("bob").unwrap().close();
    // Bob comes back with a new key (the registry lists it: it believes him).
    drop(bob);
    assert!(wait_until(WAIT, || !reg.has("bob")));
    let bob = node(&reg, "bob", tmp.path(), |b| b);
    let new = bob.id.public();

    let e = alice.peer.chat("bob").unwrap_err();
    match &e {
        Error::KeyChanged {
            subject,
            pinned,
            offered,
        } => {
            assert_eq!(subject, "bob");
            assert_eq!(*pinned, old.fingerprint());
            assert_eq!(*offered, new.fingerprint());
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(e.code(), ErrorCode::KeyChanged);
    let warned = alice.seen.events.lock().unwrap().iter().any(|e| {
        matches!(e, PeerEvent::KeyChanged { subject, offered, .. }
            if subject == "bob" && *offered == new.fingerprint())
    });
    assert!(warned, "PeerEvent::KeyChanged");
    let e = alice.peer.fetch("bob", "f.txt").unwrap_err();
    assert_eq!(e.code(), ErrorCode::KeyChanged, "{e}");
    // And alice does not take bob's new key when bob calls her either.
    let e = bob.peer.chat("alice").unwrap_err();
    assert_eq!(e.code(), ErrorCode::Denied, "{e}");
    assert!(e.to_string().contains("bob's key changed"), "{e}");
    assert_eq!(bob.seen.requests.load(Ordering::SeqCst), 0);

    alice.peer.accept_key("bob", &new).unwrap();
    let chat = alice.peer.chat("bob").unwrap();
    assert_eq!(chat.remote_key(), Some(new));
    chat.close();
    let pinned = KnownKeys::open(&alice.known_keys)
        .unwrap()
        .pinned(Subject::Peer {
            registry: &reg.addr(),
            name: "bob",
        });
    assert_eq!(pinned, Some(new), "the accepted key is kept in the file");

    // The registry now claims bob has no key, or is an original client: refused, where
    // it would otherwise make the download unverified.
    for listing in [Listing::Keyless, Listing::Legacy] {
        reg.list("bob", listing.clone());
        let e = alice.peer.fetch("bob", "f.txt").unwrap_err();
        assert_eq!(e.code(), ErrorCode::Denied, "{listing:?}: {e}");
        assert!(
            e.to_string().contains("proved its identity with key"),
            "{e}"
        );
        let e = alice.peer.chat("bob").unwrap_err();
        assert_eq!(e.code(), ErrorCode::Denied, "{listing:?}: {e}");
    }
    assert!(!alice.peer.download_dir().join("f.txt").exists());
}

#[test]
fn a_flipped_byte_fails_the_download_cleanly_and_ends_a_chat_as_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = KeyedRegistry::start();
    let alice = node(&reg, "alice", tmp.path(), |b| b);
    let bob = node(&reg, "bob", tmp.path(), |b| b);
    let content = pattern(8 * 1024 * 1024, 3);
    std::fs::write(bob.peer.shared_dir().join("big.bin"), &content).unwrap();
    bob.peer.rescan().unwrap();

    let proxy = Proxy::start(bob.peer.listen_addr(), Some(2_000_000));
    reg.list_at("bob", proxy.addr);
    let t = alice.peer.fetch("bob", "big.bin").unwrap();
    let e = t.wait().unwrap_err();
    assert_ne!(e.code(), ErrorCode::Cancelled, "{e}");
    let dir = alice.peer.download_dir();
    assert!(!dir.join("big.bin").exists(), "no file under the name");
    // What was kept for a resume is the sender's bytes only: nothing after the flip.
    let part = p2pcore::transfer::partial_path(dir, "big.bin");
    if let Ok(kept) = std::fs::read(&part) {
        assert!(kept.len() < 2_000_000, "{} bytes kept", kept.len());
        assert!(kept == content[..kept.len()], "the kept bytes are genuine");
    }
    // A resume over a clean link completes and verifies.
    reg.list_at("bob", bob.peer.listen_addr());
    let t = alice.peer.fetch("bob", "big.bin").unwrap();
    assert!(std::fs::read(t.wait().unwrap()).unwrap() == content);
    drop(proxy);

    // A chat: the flip lands in bob's first message to alice.
    let proxy = Proxy::start(bob.peer.listen_addr(), Some(300));
    reg.list_at("bob", proxy.addr);
    let chat = alice.peer.chat("bob").unwrap();
    assert!(wait_until(WAIT, || !bob
        .seen
        .accepted
        .lock()
        .unwrap()
        .is_empty()));
    let theirs = bob.seen.accepted.lock().unwrap()[0].clone();
    theirs.send(&"x".repeat(1000)).unwrap();
    assert!(
        wait_until(WAIT, || alice.seen.closed.lock().unwrap().as_slice()
            == [ChatClosedBy::Lost]),
        "{:?}",
        alice.seen.closed.lock().unwrap()
    );
    assert!(
        alice.messages.try_recv().is_err(),
        "nothing altered was delivered"
    );
    assert!(chat.is_closed());
}

#[test]
fn downloads_need_a_registered_key_and_the_serve_only_list() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = KeyedRegistry::start();
    let alice = node(&reg, "alice", tmp.path(), |b| b);
    let carol = node(&reg, "carol", tmp.path(), |b| b);
    let dave = node(&reg, "dave", tmp.path(), |b| b);
    let alice_key = format!("key:{}", alice.id.public().to_hex());
    let bob = node(&reg, "bob", tmp.path(), |b| {
        b.serve_only(["carol".to_string(), alice_key])
    });
    std::fs::write(bob.peer.shared_dir().join("f.txt"), b"for friends").unwrap();
    bob.peer.rescan().unwrap();
    let addr = bob.peer.listen_addr();

    // A key nobody registered.
    let stranger = Identity::generate().unwrap();
    let mut s = dial_raw(addr, &stranger, bob.id.public(), "mallory");
    assert_eq!(
        ask_secure(&mut s, "P2P/1 FILE 0 f.txt\n"),
        "ERR denied mallory is not registered\n"
    );
    // In the clear: no downloads at all.
    assert_eq!(
        String::from_utf8_lossy(&ask_plain(addr, b"P2P/1 FILE 0 f.txt\n")),
        "ERR denied downloads need a secured link (P2P/2)\n"
    );
    // The list: carol by name, alice by key; dave is refused.
    let t = carol.peer.fetch("bob", "f.txt").unwrap();
    assert_eq!(std::fs::read(t.wait().unwrap()).unwrap(), b"for friends");
    let t = alice.peer.fetch("bob", "f.txt").unwrap();
    assert_eq!(std::fs::read(t.wait().unwrap()).unwrap(), b"for friends");
    let e = dave.peer.fetch("bob", "f.txt").unwrap().wait().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Denied, "{e}");
    assert!(
        e.to_string()
            .contains("dave is not among the users this peer serves files to"),
        "{e}"
    );
    assert!(!dave.peer.download_dir().join("f.txt").exists());
    assert!(!p2pcore::transfer::partial_path(dave.peer.download_dir(), "f.txt").exists());
    // An original client cannot prove who it is: a bare close.
    assert!(ask_plain(addr, b"FILE,f.txt").is_empty());
}

#[test]
fn refuse_unverified_refuses_original_and_keyless_partners_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = KeyedRegistry::start();
    let alice = node(&reg, "alice", tmp.path(), |b| b);
    let bob = node(&reg, "bob", tmp.path(), |b| b.refuse_unverified(true));
    // An original client's chat request: a bare close, reported, no hook.
    let out = ask_plain(bob.peer.listen_addr(), b"CHAT,orig1");
    assert!(out.is_empty(), "{out:?}");
    assert!(wait_until(WAIT, || !bob.seen.refused().is_empty()));
    assert_eq!(bob.seen.requests.load(Ordering::SeqCst), 0);
    // A user registered without a key, either way.
    let keyless = node(&reg, "keyless", tmp.path(), |b| b);
    reg.list("keyless", Listing::Keyless);
    let out = ask_plain(bob.peer.listen_addr(), b"P2P/1 CHAT keyless\n");
    assert!(
        String::from_utf8_lossy(&out).starts_with("ERR denied "),
        "{out:?}"
    );
    let e = bob.peer.chat("keyless").unwrap_err();
    assert_eq!(e.code(), ErrorCode::Denied, "{e}");
    reg.list("keyless", Listing::Legacy);
    let e = bob.peer.fetch("keyless", "x").unwrap_err();
    assert_eq!(e.code(), ErrorCode::Denied, "{e}");
    assert_eq!(bob.seen.requests.load(Ordering::SeqCst), 0);
    // Verified partners are served as ever.
    let chat = alice.peer.chat("bob").unwrap();
    assert!(chat.is_verified());
    drop(keyless);
}

#[test]
fn a_keyless_user_chats_in_the_clear_marked_unverified() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = KeyedRegistry::start();
    let bob = node(&reg, "bob", tmp.path(), |b| b);
    // "old": an older p2pchat, registered without a key, speaking plaintext P2P/1.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut session = TcpStream::connect(reg.addr()).unwrap();
    let port = listener.local_addr().unwrap().port();
    session
        .write_all(format!("INIT,old,{port},o.txt\n").as_bytes())
        .unwrap();
    let mut ok = String::new();
    std::io::BufReader::new(session.try_clone().unwrap())
        .read_line(&mut ok)
        .unwrap();
    assert_eq!(ok, "OK\n");
    reg.list("old", Listing::Keyless);

    // Its request reaches bob's hook, marked unverified.
    let mut c = TcpStream::connect(bob.peer.listen_addr()).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(b"P2P/1 CHAT old\n").unwrap();
    let mut reader = std::io::BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "OK\n");
    assert_eq!(
        bob.seen.asked.lock().unwrap().clone(),
        vec![("old".to_string(), None, false)]
    );
    // The hook keeps the chat just after accepting (which sent the OK).
    assert!(wait_until(WAIT, || !bob
        .seen
        .accepted
        .lock()
        .unwrap()
        .is_empty()));
    let theirs = bob.seen.accepted.lock().unwrap()[0].clone();
    assert!(!theirs.is_encrypted() && !theirs.is_verified());
    assert_eq!(theirs.remote_key(), None);
    c.write_all(b"MSG 2\nhi").unwrap();
    assert_eq!(bob.messages.recv_timeout(WAIT).unwrap(), "hi");

    // Bob asks it in the clear: P2P/1, no handshake.
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        s.write_all(b"OK\n").unwrap();
        (line, s)
    });
    let chat = bob.peer.chat("old").unwrap();
    assert!(!chat.is_encrypted() && !chat.is_verified());
    assert_eq!(chat.remote_key(), None);
    let (line, _s) = server.join().unwrap();
    assert_eq!(line, "P2P/1 CHAT bob\n");
}

/// Throughput of a download over a secured link next to the plaintext path it replaced
/// and a plain TCP copy, in the same run, on loopback (tmpfs when there is one). Prints
/// MB/s; asserts only that every copy arrived whole. Run in release:
/// `nice cargo test --release -p p2pcore --test peer_secure -- --ignored --nocapture`
/// (`P2P_BENCH_MB`, default 1024, sets the file size).
#[test]
#[ignore]
fn throughput_of_a_secured_download_next_to_plaintext_and_tcp() {
    use p2pcore::transfer::{send_file, send_file_min_rate, MinRate, Receiver};
    let mib: usize = std::env::var("P2P_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let len = (mib * 1024 * 1024) as u64;
    let tmp = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let reg = KeyedRegistry::start();
    let alice = node(&reg, "alice", tmp.path(), |b| b);
    let bob = node(&reg, "bob", tmp.path(), |b| b);
    let src = bob.peer.shared_dir().join("big.bin");
    {
        let chunk = pattern(1024 * 1024, 11);
        let mut f = std::fs::File::create(&src).unwrap();
        for i in 0..mib {
            let mut c = chunk.clone();
            c[..8].copy_from_slice(&(i as u64).to_le_bytes());
            f.write_all(&c).unwrap();
        }
    }
    bob.peer.rescan().unwrap();
    let hash = {
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(&src).unwrap()).unwrap();
        h.finalize().to_hex().to_string()
    };
    let mbps = |secs: f64| len as f64 / 1e6 / secs;
    let rule = MinRate {
        bytes_per_sec: 1024,
        window: Duration::from_secs(30),
        stall: Duration::from_secs(15),
    };
    let pair = || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    };
    let best = |f: &mut dyn FnMut() -> f64| (0..2).map(|_| f()).fold(f64::MAX, f64::min);

    // 1. A plain TCP copy: sendfile in, 1 MiB reads out, nothing kept.
    let tcp = best(&mut || {
        let (tx, mut rx) = pair();
        let path = src.clone();
        let started = Instant::now();
        let sender = std::thread::spawn(move || {
            send_file(&tx, &std::fs::File::open(path).unwrap(), 0, len).unwrap();
        });
        let mut buf = vec![0u8; 1024 * 1024];
        let mut got = 0u64;
        loop {
            match rx.read(&mut buf).unwrap() {
                0 => break,
                n => got += n as u64,
            }
        }
        sender.join().unwrap();
        assert_eq!(got, len);
        started.elapsed().as_secs_f64()
    });
    // 2. The plaintext path before P2P/2: sendfile under the rate rule, received into a
    //    partial file, hashed, verified, synced and renamed.
    let plain_dir = tmp.path().join("plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let plain = best(&mut || {
        let _ = std::fs::remove_file(plain_dir.join("big.bin"));
        let (tx, rx) = pair();
        let path = src.clone();
        let started = Instant::now();
        let sender = std::thread::spawn(move || {
            send_file_min_rate(&tx, &std::fs::File::open(path).unwrap(), 0, len, rule).unwrap();
        });
        let r = Receiver::prepare(&plain_dir, "big.bin").unwrap();
        let mut reader = std::io::BufReader::with_capacity(256 * 1024, rx);
        r.receive(&mut reader, len, &hash, &mut |_| true).unwrap();
        sender.join().unwrap();
        started.elapsed().as_secs_f64()
    });
    // 3. A secured link alone: records sealed, sent, opened; no file at either end.
    let link = best(&mut || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server_id = Identity::generate().unwrap();
        let server_key = server_id.public();
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = std::io::BufReader::new(s);
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line).unwrap();
            let marker = secure::Marker::parse(&line[..line.len() - 1]).unwrap();
            let mut st = secure::accept(r, marker, &server_id, Instant::now() + WAIT).unwrap();
            let buf = vec![7u8; 4 * secure::MAX_RECORD_PLAINTEXT];
            let mut sent = 0u64;
            while sent < len {
                let n = (len - sent).min(buf.len() as u64) as usize;
                st.writer.send(&buf[..n]).unwrap();
                sent += n as u64;
            }
        });
        let me = Identity::generate().unwrap();
        let started = Instant::now();
        let mut s = dial_raw(addr, &me, server_key, "x");
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        while got < len {
            got += s.reader.read(&mut buf).unwrap() as u64;
        }
        server.join().unwrap();
        started.elapsed().as_secs_f64()
    });
    // 4. The real thing: Peer::fetch over P2P/2, verified and renamed.
    let secured = best(&mut || {
        let _ = std::fs::remove_file(alice.peer.download_dir().join("big.bin"));
        let started = Instant::now();
        let t = alice.peer.fetch("bob", "big.bin").unwrap();
        t.wait().unwrap();
        assert!(t.is_encrypted());
        started.elapsed().as_secs_f64()
    });
    let got = std::fs::metadata(alice.peer.download_dir().join("big.bin")).unwrap();
    assert_eq!(got.len(), len);
    println!(
        "{mib} MiB on {}, cipher {:?}:\n  plain TCP copy (sendfile → read)        {:8.0} MB/s\n  \
         plaintext P2P/1 path (sendfile → verify) {:8.0} MB/s\n  secured link alone (seal → open)        {:8.0} MB/s\n  \
         secured P2P/2 download (Peer::fetch)     {:8.0} MB/s  = {:.2}x the TCP copy, {:.2}x the plaintext path",
        tmp.path().display(),
        Cipher::preferred(),
        mbps(tcp),
        mbps(plain),
        mbps(link),
        mbps(secured),
        tcp / secured,
        plain / secured,
    );
}
