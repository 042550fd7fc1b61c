//! The registry's key, pinned on first use or given in the address: a client refuses
//! a registry whose key changed, one whose key is not the fingerprint it was given, and
//! a pinned registry that stops offering a secured session (a downgrade), and falls
//! back to plaintext only for an unpinned registry without secured links.
//!
//! The registries here are small stand-ins on loopback that speak the secured
//! session (`REG/2`) with a key of the test's choosing, so the same address can come
//! back with another key.

use p2pcore::identity::Identity;
use p2pcore::known_keys::{KnownKeys, Subject};
use p2pcore::peer::{RegistryClient, RegistryMode};
use p2pcore::secure::{self, Marker};
use p2pcore::{Error, ErrorCode};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a stand-in registry answers the secured-session marker.
#[derive(Clone)]
enum Kind {
    /// Completes the handshake with this key.
    Secure(Identity),
    /// Answers `ERR,Invalid Request!` as a registry from before secured links does.
    Old,
}

/// A registry stand-in: answers `GET_U` with `OK,someone` on secured and plaintext
/// sessions alike.
struct StandIn {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StandIn {
    fn start(at: Option<SocketAddr>, kind: Kind) -> StandIn {
        let listener = TcpListener::bind(at.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))
            .expect("bind stand-in registry");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let kind = kind.clone();
                        conns.push(std::thread::spawn(move || serve(s, kind)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        StandIn {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(line: &str) -> &'static str {
    match line {
        "GET_U" => "OK,someone\n",
        _ => "ERR,Invalid Request!\n",
    }
}

/// One connection: a marker line starts a secured session (or is refused, for
/// `Kind::Old`); any other line is a plaintext session query. Ends when the client
/// closes or after 5 s of silence.
fn serve(s: TcpStream, kind: Kind) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut writer = s.try_clone().unwrap();
    let mut reader = BufReader::new(s);
    let mut first = String::new();
    if reader.read_line(&mut first).unwrap_or(0) == 0 {
        return;
    }
    let first = first.trim_end_matches('\n').to_string();
    match (Marker::parse(first.as_bytes()), kind) {
        (Some(marker), Kind::Secure(id)) => {
            let deadline = Instant::now() + Duration::from_secs(5);
            let Ok(mut link) = secure::accept(reader, marker, &id, deadline) else {
                return;
            };
            let mut line = String::new();
            while matches!(link.reader.read_line(&mut line), Ok(n) if n > 0) {
                if link
                    .writer
                    .write_all(answer(line.trim_end_matches('\n')).as_bytes())
                    .is_err()
                {
                    return;
                }
                line.clear();
            }
        }
        (Some(_), Kind::Old) => {
            let _ = writer.write_all(b"ERR,Invalid Request!\n");
        }
        (None, _) => {
            let mut line = first;
            loop {
                if writer.write_all(answer(&line).as_bytes()).is_err() {
                    return;
                }
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                line.truncate(line.trim_end_matches('\n').len());
            }
        }
    }
}

fn pins(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("known_keys")
}

#[test]
fn a_registry_key_is_pinned_on_first_use_and_a_changed_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Identity::generate().unwrap();
    let second = Identity::generate().unwrap();
    let a = StandIn::start(None, Kind::Secure(first.clone()));
    let addr = a.addr;
    let c =
        RegistryClient::connect_pinned(&addr.to_string(), RegistryMode::Session, Some(&pins(&dir)))
            .expect("first contact");
    assert_eq!(c.registry_key(), Some(first.public()));
    assert_eq!(c.users().unwrap(), vec!["someone".to_string()]);
    drop(c);
    // Pinned in the file, under the address as written.
    let k = KnownKeys::open(&pins(&dir)).unwrap();
    assert_eq!(
        k.pinned(Subject::Registry(&addr.to_string())),
        Some(first.public())
    );

    // The same address comes back with another key.
    drop(a);
    let _b = StandIn::start(Some(addr), Kind::Secure(second.clone()));
    let err =
        RegistryClient::connect_pinned(&addr.to_string(), RegistryMode::Session, Some(&pins(&dir)))
            .err()
            .expect("a changed registry key must be refused");
    assert_eq!(err.code(), ErrorCode::KeyChanged, "{err}");
    let text = err.to_string();
    assert!(text.contains(&first.fingerprint().to_string()), "{text}");
    assert!(text.contains(&second.fingerprint().to_string()), "{text}");

    // The user's explicit word (the new fingerprint in the address) accepts it, and
    // re-pins it for the plain address.
    let with_fp = format!("{addr}#{}", second.fingerprint());
    let c = RegistryClient::connect_pinned(&with_fp, RegistryMode::Session, Some(&pins(&dir)))
        .expect("explicit fingerprint");
    assert_eq!(c.registry_key(), Some(second.public()));
    drop(c);
    RegistryClient::connect_pinned(&addr.to_string(), RegistryMode::Session, Some(&pins(&dir)))
        .expect("the new key is pinned now");
}

#[test]
fn a_fingerprint_in_the_address_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let real = Identity::generate().unwrap();
    let other = Identity::generate().unwrap();
    let r = StandIn::start(None, Kind::Secure(real.clone()));
    let wrong = format!("{}#{}", r.addr, other.fingerprint());
    let err = RegistryClient::connect_pinned(&wrong, RegistryMode::Auto, Some(&pins(&dir)))
        .err()
        .expect("wrong fingerprint");
    assert_eq!(err.code(), ErrorCode::KeyChanged, "{err}");
    assert!(err.to_string().contains(&real.fingerprint().to_string()));
    // Nothing was pinned by the failed attempt.
    let k = KnownKeys::open(&pins(&dir)).unwrap();
    assert_eq!(k.pinned(Subject::Registry(&r.addr.to_string())), None);

    let bad = format!("{}#not-a-fingerprint", r.addr);
    let err = RegistryClient::connect_pinned(&bad, RegistryMode::Auto, None)
        .err()
        .expect("malformed pin");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[test]
fn a_pinned_registry_without_a_secured_link_is_refused_an_unpinned_one_is_used_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let id = Identity::generate().unwrap();
    let a = StandIn::start(None, Kind::Secure(id.clone()));
    let addr = a.addr;
    RegistryClient::connect_pinned(&addr.to_string(), RegistryMode::Auto, Some(&pins(&dir)))
        .expect("first contact pins");
    drop(a);

    // Now the address answers like a registry from before secured links.
    let _old = StandIn::start(Some(addr), Kind::Old);
    let err =
        RegistryClient::connect_pinned(&addr.to_string(), RegistryMode::Auto, Some(&pins(&dir)))
            .err()
            .expect("downgrade of a pinned registry");
    assert_eq!(err.code(), ErrorCode::Denied, "{err}");
    assert!(err.to_string().contains("pinned"), "{err}");

    // Without a pin the same registry is used, unencrypted, and says so.
    let c = RegistryClient::connect_pinned(&addr.to_string(), RegistryMode::Auto, None)
        .expect("unpinned old registry");
    assert_eq!(c.registry_key(), None);
    assert_eq!(c.users().unwrap(), vec!["someone".to_string()]);
}
