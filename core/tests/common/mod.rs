//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// `Peer::builder` with the user's key kept under the build's temporary directory
/// (`<target>/tmp/test-keys/<name>.key`, one per name, shared by every test process so
/// a child process registering a name again proves the same key), never in the real
/// `~/.config`.
pub fn peer_builder(
    registry: &str,
    name: &str,
    dir: impl AsRef<std::path::Path>,
) -> p2pcore::peer::PeerBuilder {
    let keys = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-keys");
    p2pcore::peer::Peer::builder(registry, name, dir)
        .identity_file(keys.join(format!("{name}.key")))
}

/// `len` bytes of a deterministic, non-repeating-looking pattern (xorshift), different
/// for each `seed`: file contents whose corruption or truncation a test would notice.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678 ^ seed.wrapping_mul(0x9e37_79b9);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A port on 127.0.0.1 where nothing listens (bound, then closed).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// Poll `f` every 10 ms until it holds or `limit` passes; whether it held.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// Registers `name` on `port` sharing `x.bin` (asserting the registry's `OK`) over a
/// plaintext session, so without a key; the registration lasts while the returned
/// session is open.
pub fn register(registry: SocketAddr, name: &str, port: u16) -> TcpStream {
    let mut session = TcpStream::connect(registry).unwrap();
    session
        .write_all(format!("INIT,{name},{port},x.bin\n").as_bytes())
        .unwrap();
    let mut ok = String::new();
    BufReader::new(session.try_clone().unwrap())
        .read_line(&mut ok)
        .unwrap();
    assert_eq!(ok, "OK\n");
    session
}

/// A fake peer registered in the registry that answers a file request with `answer`
/// and then `body`.
pub fn fake_server(
    registry: SocketAddr,
    name: &str,
    answer: String,
    body: Vec<u8>,
) -> (TcpStream, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let session = register(registry, name, listener.local_addr().unwrap().port());
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        let _ = s.write_all(answer.as_bytes());
        let _ = s.write_all(&body);
    });
    (session, handle)
}

/// One connection to a [`FakePeer`]: which one it is (from 0), the request line it sent
/// (terminator removed) and its socket.
pub struct FakeConn<'a> {
    pub n: usize,
    pub line: String,
    pub stream: TcpStream,
    /// Set when the fake peer is dropped: long-running answers (a trickle) stop on it.
    pub stop: &'a std::sync::atomic::AtomicBool,
}

impl FakeConn<'_> {
    /// The offset of a `P2P/1 FILE <offset> <name>` request (0 if it is not one).
    pub fn offset(&self) -> u64 {
        self.line
            .split(' ')
            .nth(2)
            .and_then(|o| o.parse().ok())
            .unwrap_or(0)
    }

    /// Whether the fake peer is being dropped.
    pub fn stopping(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A fake serving peer registered in the registry under `name`, handing every
/// connection (each on a thread of its own) to `serve` until dropped. Dropping it stops
/// accepting, sets [`FakeConn::stop`] and joins every thread.
pub struct FakePeer {
    _session: TcpStream,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

/// Starts a [`FakePeer`].
pub fn fake_peer(
    registry: SocketAddr,
    name: &str,
    serve: impl Fn(FakeConn<'_>) + Send + Sync + 'static,
) -> FakePeer {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let session = register(registry, name, listener.local_addr().unwrap().port());
    let stop = Arc::new(AtomicBool::new(false));
    let serve = Arc::new(serve);
    let flag = stop.clone();
    let accept = std::thread::spawn(move || {
        let mut conns = Vec::new();
        let mut n = 0;
        while !flag.load(Ordering::SeqCst) {
            let stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            let (serve, flag) = (serve.clone(), flag.clone());
            let this = n;
            n += 1;
            conns.push(std::thread::spawn(move || {
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let line = line.trim_end().to_string();
                serve(FakeConn {
                    n: this,
                    line,
                    stream,
                    stop: &flag,
                });
            }));
        }
        for c in conns {
            let _ = c.join();
        }
    });
    FakePeer {
        _session: session,
        stop,
        accept: Some(accept),
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

/// A raw client that proves who it is: registered under a name over an encrypted
/// registry session (`REG/2`, which lists its key in `GET_P`, §1.7–1.8 of PROTOCOL.md),
/// speaking to peers over `P2P/2` links with that key, so tests can send a peer any
/// bytes inside a link it accepts (p2pchat peers refuse plaintext downloads, and
/// plaintext chats in the name of a user with a key). The registration lasts while it
/// lives.
pub struct KeyedClient {
    pub name: String,
    pub id: p2pcore::identity::Identity,
    _session: p2pcore::secure::SecureStream,
}

/// Registers `name` (listening on `port`, sharing `x.bin`) with the registry at
/// `registry` over an encrypted session.
pub fn keyed_client(registry: SocketAddr, name: &str, port: u16) -> KeyedClient {
    use p2pcore::secure::{self, Cipher, DialParams, Dialed, Kind};
    let id = p2pcore::identity::Identity::generate().unwrap();
    let s = TcpStream::connect(registry).unwrap();
    let dialed = secure::dial(
        s,
        DialParams {
            kind: Kind::Registry,
            identity: &id,
            remote: None,
            hello: b"",
            cipher: Cipher::preferred(),
            deadline: Instant::now() + Duration::from_secs(20),
        },
    )
    .unwrap();
    let Dialed::Secured(session) = dialed else {
        panic!("the registry refused an encrypted session");
    };
    let mut session = *session;
    session
        .reader
        .socket()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    session
        .writer
        .write_all(format!("INIT,{name},{port},x.bin\n").as_bytes())
        .unwrap();
    let mut ok = String::new();
    session.reader.read_line(&mut ok).unwrap();
    assert_eq!(ok, "OK\n", "registering {name} with a key");
    KeyedClient {
        name: name.to_string(),
        id,
        _session: session,
    }
}

impl KeyedClient {
    /// A `P2P/2` link to the peer at `addr` whose key is `key`, hello = this name.
    pub fn link(
        &self,
        addr: SocketAddr,
        key: p2pcore::identity::PublicKey,
    ) -> p2pcore::secure::SecureStream {
        use p2pcore::secure::{self, Cipher, DialParams, Dialed, Kind};
        let s = TcpStream::connect(addr).unwrap();
        let dialed = secure::dial(
            s,
            DialParams {
                kind: Kind::Peer,
                identity: &self.id,
                remote: Some(key),
                hello: self.name.as_bytes(),
                cipher: Cipher::preferred(),
                deadline: Instant::now() + Duration::from_secs(20),
            },
        )
        .unwrap();
        match dialed {
            Dialed::Secured(s) => {
                let s = *s;
                s.reader
                    .socket()
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                s
            }
            Dialed::Refused(line) => panic!("refused before the handshake: {line}"),
        }
    }

    /// A `P2P/2` link over `stream` (already connected, e.g. from a chosen address or
    /// with a small receive buffer) to the peer whose key is `key`.
    pub fn link_over(
        &self,
        stream: TcpStream,
        key: p2pcore::identity::PublicKey,
    ) -> p2pcore::secure::SecureStream {
        use p2pcore::secure::{self, Cipher, DialParams, Dialed, Kind};
        let dialed = secure::dial(
            stream,
            DialParams {
                kind: Kind::Peer,
                identity: &self.id,
                remote: Some(key),
                hello: self.name.as_bytes(),
                cipher: Cipher::preferred(),
                deadline: Instant::now() + Duration::from_secs(20),
            },
        )
        .unwrap();
        match dialed {
            Dialed::Secured(s) => *s,
            Dialed::Refused(line) => panic!("refused before the handshake: {line}"),
        }
    }

    /// Sends `bytes` inside a new link and returns everything the peer sends back
    /// until it closes (or 20 s pass).
    pub fn ask(
        &self,
        addr: SocketAddr,
        key: p2pcore::identity::PublicKey,
        bytes: &[u8],
    ) -> Vec<u8> {
        use std::io::Read;
        let mut s = self.link(addr, key);
        let _ = s.writer.write_all(bytes);
        let mut out = Vec::new();
        let _ = s.reader.read_to_end(&mut out);
        out
    }
}

/// An encrypted registry session (`REG/2` over `secure::dial`), asking one line at a
/// time. Each test file adds what only it needs in its own `impl Enc` (the same crate).
pub struct Enc {
    pub s: Box<p2pcore::secure::SecureStream>,
}

impl Enc {
    /// Dials `addr` as `id` without knowing the registry's key (XX), 10 s limits.
    pub fn dial(addr: SocketAddr, id: &p2pcore::identity::Identity) -> Enc {
        Enc::dial_key(addr, id, None)
    }

    /// Dials `addr` as `id`: IK when `registry_key` is given, XX otherwise; 10 s limits.
    pub fn dial_key(
        addr: SocketAddr,
        id: &p2pcore::identity::Identity,
        registry_key: Option<p2pcore::identity::PublicKey>,
    ) -> Enc {
        Enc::over(TcpStream::connect(addr).unwrap(), id, registry_key)
    }

    /// The handshake over a connected `stream`, 10 s limits.
    pub fn over(
        stream: TcpStream,
        id: &p2pcore::identity::Identity,
        registry_key: Option<p2pcore::identity::PublicKey>,
    ) -> Enc {
        Enc::within(stream, id, registry_key, Duration::from_secs(10))
    }

    /// The handshake over `stream`, finished within `limit`, which also bounds each
    /// read; panics if the registry refuses it.
    pub fn within(
        stream: TcpStream,
        id: &p2pcore::identity::Identity,
        registry_key: Option<p2pcore::identity::PublicKey>,
        limit: Duration,
    ) -> Enc {
        use p2pcore::secure::{self, Cipher, DialParams, Dialed, Kind};
        stream.set_read_timeout(Some(limit)).unwrap();
        let dialed = secure::dial(
            stream,
            DialParams {
                kind: Kind::Registry,
                identity: id,
                remote: registry_key,
                hello: b"",
                cipher: Cipher::preferred(),
                deadline: Instant::now() + limit,
            },
        )
        .unwrap();
        match dialed {
            Dialed::Secured(s) => Enc { s },
            Dialed::Refused(line) => panic!("refused: {line}"),
        }
    }

    /// Sends one line (`q` and a newline).
    pub fn send(&mut self, q: &str) {
        self.s
            .writer
            .write_all(format!("{q}\n").as_bytes())
            .unwrap();
    }

    /// The next line without its newline; `UnexpectedEof` when the session ended.
    pub fn line(&mut self) -> std::io::Result<String> {
        let mut l = String::new();
        if self.s.reader.read_line(&mut l)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(l.trim_end_matches('\n').to_string())
    }

    /// Sends `q` and returns the answer line.
    pub fn ask(&mut self, q: &str) -> String {
        self.send(q);
        self.line().unwrap()
    }

    /// Whether the registry closed this session (EOF within the read timeout).
    pub fn closed(&mut self) -> bool {
        let mut buf = String::new();
        matches!(self.s.reader.read_line(&mut buf), Ok(0))
    }
}

/// A plaintext registry session, asking one line at a time (10 s read limit).
pub struct Plain {
    pub w: TcpStream,
    pub r: BufReader<TcpStream>,
}

impl Plain {
    pub fn new(addr: SocketAddr) -> Plain {
        let w = TcpStream::connect(addr).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Plain { w, r }
    }

    /// Sends `q` and returns the answer line.
    pub fn ask(&mut self, q: &str) -> String {
        self.w.write_all(format!("{q}\n").as_bytes()).unwrap();
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        l.trim_end_matches('\n').to_string()
    }
}

/// One legacy (unterminated, one-shot) query; the whole answer.
pub fn legacy(addr: SocketAddr, q: &str) -> String {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(q.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}
