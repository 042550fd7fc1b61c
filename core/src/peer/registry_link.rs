//! A peer's conversation with the registry: one session connection, `\n`-framed, or,
//! with a registry that has no sessions (the original C++ server), the original's
//! one-query-per-connection wire behaviour.
//!
//! Owns the connection and the round trip of one query (write, read the framed
//! answer, with a timeout). It never decides policy: reconnecting and re-registering
//! is the keeper's job in `peer::mod`.
//!
//! **Legacy mode** (see `docs/PROTOCOL.md` §1.6): each query opens its own connection,
//! is written in one `send` with no terminator, the sending side is then shut (so the
//! registry, original or p2pchat, answers and closes), and the answer is everything
//! read until that close. One query at a time per link: the original server's table
//! has no lock, so concurrent queries from one client could corrupt it. Nothing this
//! module sends can crash the original server: every query is under 1000 bytes, starts
//! with a verb, and an `INIT` is form B with a numeric port (it crashes on form A and
//! on non-numeric ports).

use crate::error::{is_timeout, Error, Result};
use crate::identity::{Fingerprint, Identity, PublicKey};
use crate::known_keys::{KnownKeys, Pin, Subject};
use crate::limits::{LEGACY_QUERY_MAX, LEGACY_READ_MAX, MAX_ANSWER_LEN, REGISTRY_IO_TIMEOUT};
use crate::net::read_line;
use crate::protocol::{parse_answer, parse_files_line, parse_port, reason, Answer};
use crate::reach::Reach;
use crate::secure::{self, Cipher, DialParams, Dialed, Kind, SecureStream};
use parking_lot::Mutex;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How a peer talks to its registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegistryMode {
    /// Find out at every (re)connection: the first line on the session connection is
    /// `GET_U\n`, which both registries answer harmlessly. p2pchat's registry answers
    /// with a `\n`-terminated line (a session); the original server, which cannot read
    /// terminated queries, answers exactly `ERR,Invalid Request!` with no terminator,
    /// and the peer switches to legacy mode.
    #[default]
    Auto,
    /// Always a session (p2pchat registries only; never probes).
    Session,
    /// Always the original's wire behaviour (no probe): for the original server, or to
    /// register with a p2pchat registry as an original client would.
    Legacy,
}

/// The original server's answer to anything it cannot parse, a `\n`-terminated line
/// included. p2pchat's registry never answers `GET_U` with it.
const ORIGINAL_INVALID: &[u8] = b"ERR,Invalid Request!";

/// Where another user listens, and how to talk to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    /// The address their peer listens on.
    pub addr: SocketAddr,
    /// Whether they must be spoken to in the original client's protocol (`CHAT,` /
    /// `FILE,`, unframed chat, downloads without a hash): the registry says they
    /// registered as an original client (session `GET_P` answer `OK,ip,port,legacy`),
    /// or the registry itself is an original one, which cannot say who is what.
    pub legacy: bool,
    /// Their public key as the registry lists it (session `GET_P` answer
    /// `OK,ip,port,<64 hex digits>`); `None` for a user who registered without one (an
    /// original client, an unencrypted session) or from an original registry.
    pub key: Option<crate::identity::PublicKey>,
    /// Whether their listener answered the registry's check from outside (session
    /// `GET_P` answer's fifth field, `docs/PROTOCOL.md` §5.1); [`Reach::Unknown`] from
    /// a registry that does not check.
    pub reach: Reach,
}

/// A connection to the registry (may be down; queries then reconnect once).
pub(crate) struct RegistryLink {
    /// `host:port`, without a `#fingerprint` pin.
    addr: String,
    /// The fingerprint given after `#` in the address: the registry must have it.
    pinned_fingerprint: Option<Fingerprint>,
    /// The key this side proves on the secured link (a peer's own identity; a
    /// throwaway one for browsing clients, which register nothing).
    identity: Identity,
    /// Where registry keys are pinned on first use.
    known_keys: Arc<KnownKeys>,
    /// The registry's key on the current secured connection (`None`: plaintext).
    remote_key: Mutex<Option<PublicKey>>,
    mode: RegistryMode,
    /// The wire behaviour in use now (decided by `mode`, for `Auto` by the last probe).
    legacy: AtomicBool,
    /// The session connection; in legacy mode never set, and the lock serializes the
    /// one-shot queries instead.
    conn: Mutex<Option<Conn>>,
    /// The local address of the last connection made to the registry.
    local_ip: Mutex<Option<IpAddr>>,
    /// A `GET_P` answer carried a reachability word: this registry checks listeners.
    reports_reach: AtomicBool,
}

/// A session connection: plaintext (a registry without secured links, or an older
/// p2pchat registry), or a Noise-secured one.
enum Conn {
    Plain {
        reader: BufReader<TcpStream>,
        writer: TcpStream,
    },
    Secure(Box<SecureStream>),
}

impl Conn {
    fn plain(stream: TcpStream) -> Result<Conn> {
        Ok(Conn::Plain {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    fn socket(&self) -> &TcpStream {
        match self {
            Conn::Plain { writer, .. } => writer,
            Conn::Secure(s) => s.writer.socket(),
        }
    }

    fn reader(&mut self) -> &mut dyn BufRead {
        match self {
            Conn::Plain { reader, .. } => reader,
            Conn::Secure(s) => &mut s.reader,
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain { writer, .. } => writer.write_all(bytes),
            Conn::Secure(s) => s.writer.send(bytes),
        }
    }

    /// Whether bytes were received and not read yet (then the session is not idle).
    fn has_buffered(&self) -> bool {
        match self {
            Conn::Plain { reader, .. } => !reader.buffer().is_empty(),
            Conn::Secure(s) => s.reader.has_buffered(),
        }
    }

    fn shutdown(&self) {
        let _ = self.socket().shutdown(Shutdown::Both);
    }
}

/// Splits `host:port#FINGERPRINT` into the address and the pinned fingerprint.
pub(crate) fn split_pin(addr: &str) -> Result<(String, Option<Fingerprint>)> {
    match addr.split_once('#') {
        None => Ok((addr.to_string(), None)),
        Some((a, fp)) => match Fingerprint::parse(fp) {
            Some(f) => Ok((a.to_string(), Some(f))),
            None => Err(Error::InvalidArgument(format!(
                "registry address {addr:?}: after '#' comes the registry's key fingerprint \
                 (32 base32 characters, as `p2pchat server` prints it)"
            ))),
        },
    }
}

impl RegistryLink {
    /// A link to the registry at `addr` (`host:port`, optionally `#FINGERPRINT` to
    /// require that registry key), proving `identity` on secured connections (a
    /// throwaway key when `None`), pinning the registry's key in `known_keys`.
    pub fn new(
        addr: &str,
        mode: RegistryMode,
        identity: Option<Identity>,
        known_keys: Arc<KnownKeys>,
    ) -> Result<RegistryLink> {
        let (addr, pinned_fingerprint) = split_pin(addr)?;
        let identity = match identity {
            Some(id) => id,
            None => Identity::generate()?,
        };
        Ok(RegistryLink {
            addr,
            pinned_fingerprint,
            identity,
            known_keys,
            remote_key: Mutex::new(None),
            mode,
            legacy: AtomicBool::new(mode == RegistryMode::Legacy),
            conn: Mutex::new(None),
            local_ip: Mutex::new(None),
            reports_reach: AtomicBool::new(false),
        })
    }

    /// The registry's address (`host:port`, without a `#` pin): also the scope of
    /// pinned user keys.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The registry's key on the current secured session; `None` when the session is
    /// plaintext (an older p2pchat registry) or the registry is an original one.
    pub fn registry_key(&self) -> Option<PublicKey> {
        *self.remote_key.lock()
    }

    /// Whether this registry checks listeners (a `GET_P` answer carried a reach).
    pub fn reports_reach(&self) -> bool {
        self.reports_reach.load(Ordering::Relaxed)
    }

    /// Whether the registry is spoken to in the original's one-shot way.
    pub fn is_legacy(&self) -> bool {
        self.legacy.load(Ordering::SeqCst)
    }

    /// Open the connection now (replacing any old one). In `Auto` mode this probes
    /// which kind of registry answers; in legacy mode it only checks the registry is
    /// reachable (a connection that sends nothing, which both registries just close).
    pub fn connect(&self) -> Result<()> {
        let mut guard = self.conn.lock();
        if let Some(old) = guard.take() {
            old.shutdown();
        }
        *self.remote_key.lock() = None;
        let stream = open_stream(&self.addr)?;
        self.note_local(&stream);
        if self.mode == RegistryMode::Legacy {
            if self.pinned_fingerprint.is_some() {
                return Err(self.downgrade_refused("is spoken to as the original server"));
            }
            return Ok(());
        }
        let mut fallback = None;
        let mut first = Some(stream);
        if self.mode == RegistryMode::Auto {
            let Some(stream) = first.take() else {
                return Err(Error::Closed);
            };
            let mut conn = Conn::plain(stream)?;
            let original = probe(&mut conn).map_err(|e| match e {
                // Silence is a timeout, whatever is listening there.
                Error::Timeout(_) => Error::Timeout(format!(
                    "the registry at {} did not answer within {} s",
                    self.addr,
                    REGISTRY_IO_TIMEOUT.as_secs()
                )),
                Error::Closed => Error::protocol(
                    &self.addr,
                    "closed without answering GET_U: neither a p2pchat registry nor the \
                     original server",
                ),
                e => e,
            })?;
            self.legacy.store(original, Ordering::SeqCst);
            if original {
                conn.shutdown();
                if self.pinned().is_some() {
                    return Err(self.downgrade_refused("answers as the original server"));
                }
                return Ok(());
            }
            fallback = Some(conn);
        }
        let stream = match first {
            Some(s) => s,
            None => {
                let s = open_stream(&self.addr)?;
                self.note_local(&s);
                s
            }
        };
        let conn = match self.secure_session(stream)? {
            Some(secured) => {
                if let Some(f) = fallback {
                    f.shutdown();
                }
                secured
            }
            None => {
                // A p2pchat registry from before secured links.
                if self.pinned().is_some() {
                    return Err(self.downgrade_refused("offers no secured link"));
                }
                log::warn!(
                    "the registry at {} offers no secured link: the session is unencrypted",
                    self.addr
                );
                match fallback {
                    Some(f) => f,
                    None => {
                        let s = open_stream(&self.addr)?;
                        self.note_local(&s);
                        Conn::plain(s)?
                    }
                }
            }
        };
        *guard = Some(conn);
        Ok(())
    }

    /// The registry key this client expects, if any: the one in the address, else the
    /// one pinned on first use (as its fingerprint).
    fn pinned(&self) -> Option<Fingerprint> {
        self.pinned_fingerprint.or_else(|| {
            self.known_keys
                .pinned(Subject::Registry(&self.addr))
                .map(|k| k.fingerprint())
        })
    }

    fn downgrade_refused(&self, what: &str) -> Error {
        Error::Denied {
            peer: format!("registry {}", self.addr),
            reason: format!(
                "it {what}, but its key is pinned; refusing an unauthenticated session \
                 (someone may be posing as the registry)"
            ),
        }
    }

    /// Opens a secured session on `stream` (handshake XX, so that a changed registry
    /// key is reported with both fingerprints rather than as a failed handshake; the
    /// extra half round trip is paid once per session). `Ok(None)`: the registry does
    /// not know secured links (it answered the marker `ERR,Invalid Request!`).
    fn secure_session(&self, stream: TcpStream) -> Result<Option<Conn>> {
        let dialed = secure::dial(
            stream,
            DialParams {
                kind: Kind::Registry,
                identity: &self.identity,
                remote: None,
                hello: &[],
                cipher: Cipher::preferred(),
                deadline: Instant::now() + REGISTRY_IO_TIMEOUT,
            },
        )
        .map_err(|e| match e {
            Error::Timeout(_) => Error::Timeout(format!(
                "the registry at {} did not complete the secure handshake within {} s",
                self.addr,
                REGISTRY_IO_TIMEOUT.as_secs()
            )),
            e => e,
        })?;
        let s = match dialed {
            Dialed::Secured(s) => s,
            Dialed::Refused(line) if line == "ERR,Invalid Request!" => return Ok(None),
            Dialed::Refused(line) => {
                let reason = line.strip_prefix("ERR,").unwrap_or(&line).to_string();
                return Err(Error::Registry(reason));
            }
        };
        let key = s.remote;
        let subject = format!("registry {}", self.addr);
        if let Some(want) = self.pinned_fingerprint {
            if key.fingerprint() != want {
                return Err(Error::KeyChanged {
                    subject,
                    pinned: want,
                    offered: key.fingerprint(),
                });
            }
        }
        let pin = Subject::Registry(&self.addr);
        match self.known_keys.check(pin, &key)? {
            Pin::Matches => {}
            Pin::New => self.known_keys.pin(pin, &key)?,
            // A fingerprint in the address is the user's explicit word: it wins.
            Pin::Changed { .. } if self.pinned_fingerprint.is_some() => {
                self.known_keys.pin(pin, &key)?
            }
            Pin::Changed { pinned } => {
                return Err(Error::KeyChanged {
                    subject,
                    pinned: pinned.fingerprint(),
                    offered: key.fingerprint(),
                })
            }
        }
        s.reader
            .socket()
            .set_read_timeout(Some(REGISTRY_IO_TIMEOUT))?;
        *self.remote_key.lock() = Some(key);
        Ok(Some(Conn::Secure(s)))
    }

    fn note_local(&self, s: &TcpStream) {
        if let Ok(a) = s.local_addr() {
            // A dual-stack registry sees an IPv4 client as ::ffff:a.b.c.d; listen on
            // a.b.c.d.
            *self.local_ip.lock() = Some(a.ip().to_canonical());
        }
    }

    /// The local address of the last connection to the registry (the one the
    /// registry records for this peer).
    pub fn local_ip(&self) -> Option<IpAddr> {
        *self.local_ip.lock()
    }

    /// Whether the session is up: a non-blocking peek sees no end-of-stream. In legacy
    /// mode there is no session: always true (the keeper re-registers on a timer).
    pub fn is_alive(&self) -> bool {
        if self.is_legacy() {
            return true;
        }
        let mut guard = self.conn.lock();
        let Some(conn) = guard.as_mut() else {
            return false;
        };
        let sock = conn.socket();
        let alive = !conn.has_buffered()
            && sock.set_nonblocking(true).is_ok()
            && matches!(sock.peek(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock);
        if alive && conn.socket().set_nonblocking(false).is_ok() {
            return true;
        }
        *guard = None;
        false
    }

    /// Drop the connection (the registry then releases this session's names).
    pub fn disconnect(&self) {
        if let Some(conn) = self.conn.lock().take() {
            conn.shutdown();
        }
    }

    /// Send one single-line query and parse its answer. `ERR` answers are returned as
    /// [`Answer::Err`], not as errors; I/O failures drop the connection.
    pub fn ask(&self, query: &str) -> Result<Answer> {
        let line = if self.ready()? {
            self.legacy_exchange(query)?
        } else {
            self.round_trip(query, false)?.swap_remove(0)
        };
        parse_answer(&line).map_err(|d| Error::protocol(&self.addr, d))
    }

    /// `EXIT`: in legacy mode sent without waiting (the original server answers
    /// nothing); on a session, the answer is read.
    pub fn exit(&self, query: &str) {
        if self.is_legacy() {
            let _guard = self.conn.lock();
            if let Ok(s) = open_stream(&self.addr) {
                let _ = (&s).write_all(query.as_bytes());
                let _ = s.shutdown(Shutdown::Write);
            }
        } else {
            let _ = self.ask(query);
        }
    }

    /// The fields of an `OK` answer to `query`; `ERR,User not found!` becomes
    /// [`Error::UserNotFound`] naming `user`, any other `ERR` [`Error::Registry`].
    fn ask_ok(&self, query: &str, user: Option<&str>) -> Result<Vec<String>> {
        match self.ask(query)? {
            Answer::Ok(fields) => Ok(fields),
            Answer::Up => Err(Error::protocol(&self.addr, "unexpected UP")),
            Answer::Err(r) => Err(err_answer(r, user)),
        }
    }

    /// `GET_U`: the usernames online.
    pub fn users(&self) -> Result<Vec<String>> {
        let mut users = self.ask_ok("GET_U", None)?;
        // The original server answers `OK,` with nobody online.
        users.retain(|u| !u.is_empty());
        Ok(users)
    }

    /// `GET_UF`: one user's files.
    pub fn files_of(&self, name: &str) -> Result<Vec<String>> {
        let query = format!("GET_UF,{name}");
        if !self.ready()? {
            return self.ask_ok(&query, Some(name));
        }
        parse_legacy_files(&self.legacy_exchange(&query)?).map_err(|r| err_answer(r, Some(name)))
    }

    /// `GET_P`: where `name` listens, and whether to talk to them as an original client.
    pub fn peer_info(&self, name: &str) -> Result<PeerInfo> {
        let fields = self.ask_ok(&format!("GET_P,{name}"), Some(name))?;
        let bad = || Error::protocol(&self.addr, "malformed GET_P answer");
        let (ip, port, flags) = match fields.as_slice() {
            [ip, port, flags @ ..] => (ip, port, flags),
            _ => return Err(bad()),
        };
        let reach = flags.iter().find_map(|f| Reach::parse(f));
        if reach.is_some() {
            self.reports_reach.store(true, Ordering::Relaxed);
        }
        // The registry writes IPv6 addresses bare (`::1`); accept `[::1]` too.
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let port = parse_port(port).ok_or_else(bad)?;
        Ok(PeerInfo {
            addr: SocketAddr::new(ip.to_canonical(), port),
            // An original registry cannot tell who is what, and every p2pchat peer
            // also serves the original's requests: speak the original's protocol.
            legacy: self.is_legacy() || flags.iter().any(|f| f == "legacy"),
            key: flags
                .iter()
                .find_map(|f| crate::identity::PublicKey::from_hex(f)),
            reach: reach.unwrap_or_default(),
        })
    }

    /// `GET_AF`: every user's files.
    pub fn all_files(&self) -> Result<Vec<(String, Vec<String>)>> {
        if self.ready()? {
            let text = self.legacy_exchange("GET_AF")?;
            return parse_legacy_all_files(&text).map_err(|e| match e {
                LegacyAllFiles::Err(r) => Error::Registry(r),
                LegacyAllFiles::Malformed(d) => Error::protocol(&self.addr, d),
            });
        }
        let lines = self.round_trip("GET_AF", true)?;
        let first = &lines[0];
        if let Some(reason) = first.strip_prefix("ERR") {
            return Err(Error::Registry(reason.trim_start_matches(',').to_string()));
        }
        let rest = first
            .strip_prefix("OK,")
            .ok_or_else(|| Error::protocol(&self.addr, format!("malformed answer {first:?}")))?;
        std::iter::once(rest)
            .filter(|l| !l.is_empty())
            .chain(lines[1..].iter().map(String::as_str))
            .map(|l| parse_files_line(l).map_err(|d| Error::protocol(&self.addr, d)))
            .collect()
    }

    /// Connect if there is no session (probing in `Auto` mode); whether the registry
    /// is to be spoken to in legacy mode. Call before composing a query whose form
    /// depends on the mode (`INIT`).
    pub fn ready(&self) -> Result<bool> {
        if !self.is_legacy() && self.conn.lock().is_none() {
            self.connect()?;
        }
        Ok(self.is_legacy())
    }

    fn round_trip(&self, query: &str, multi_line: bool) -> Result<Vec<String>> {
        let mut guard = self.conn.lock();
        let Some(conn) = guard.as_mut() else {
            return Err(Error::Closed);
        };
        let result = exchange(conn, query, multi_line);
        if result.is_err() {
            *guard = None;
        }
        result.map_err(|e| match e {
            Error::Io(io) if is_timeout(&io) => Error::Timeout(format!(
                "the registry at {} did not answer within {} s",
                self.addr,
                REGISTRY_IO_TIMEOUT.as_secs()
            )),
            e => e,
        })
    }

    /// The fields of an `OK` answer to `query` on the session (`CONNECT`, `RELAY`);
    /// an `ERR` answer becomes [`Error::Registry`] with its text.
    pub fn ask_fields(&self, query: &str) -> Result<Vec<String>> {
        self.ask_ok(query, None)
    }

    /// Opens a second secured session (same identity, same pinned registry key) and
    /// sends `WATCH,<user>` on it (`docs/PROTOCOL.md` §5.2). Returns the session and
    /// the fields of the `OK` answer (`ip`, `port`, `reach`); `Ok(None)` when the
    /// registry has no secured sessions (then there is nothing to watch).
    pub fn open_watch(&self, user: &str) -> Result<Option<(Box<SecureStream>, Vec<String>)>> {
        if self.is_legacy() {
            return Ok(None);
        }
        let stream = open_stream(&self.addr)?;
        let Some(mut conn) = self.secure_session(stream)? else {
            return Ok(None);
        };
        let line = exchange(&mut conn, &format!("WATCH,{user}"), false)?.swap_remove(0);
        let Conn::Secure(s) = conn else {
            return Ok(None);
        };
        match parse_answer(&line).map_err(|d| Error::protocol(&self.addr, d))? {
            Answer::Ok(fields) => Ok(Some((s, fields))),
            Answer::Up => Err(Error::protocol(&self.addr, "unexpected UP to WATCH")),
            Answer::Err(r) => Err(Error::Registry(r)),
        }
    }

    /// One legacy query: its own connection, one write, shut the sending side, read
    /// the answer until the registry closes (at most [`LEGACY_READ_MAX`] bytes, within
    /// [`REGISTRY_IO_TIMEOUT`] in all).
    fn legacy_exchange(&self, query: &str) -> Result<String> {
        if let Err(why) = legacy_safe(query) {
            return Err(Error::InvalidArgument(format!(
                "not sent to a legacy registry: {why}"
            )));
        }
        let _one_at_a_time = self.conn.lock();
        let s = open_stream(&self.addr)?;
        self.note_local(&s);
        (&s).write_all(query.as_bytes())?;
        s.shutdown(Shutdown::Write)?;
        let deadline = Instant::now() + REGISTRY_IO_TIMEOUT;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(format!(
                    "the registry at {} did not finish answering {:?}",
                    self.addr,
                    query.split(',').next().unwrap_or_default()
                )));
            }
            s.set_read_timeout(Some(left))?;
            match (&s).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if answer.len() + n > LEGACY_READ_MAX {
                        return Err(Error::protocol(&self.addr, "answer too long"));
                    }
                    answer.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if crate::error::is_timeout(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        String::from_utf8(answer).map_err(|_| Error::protocol(&self.addr, "answer is not UTF-8"))
    }
}

/// Whether the original server can take `query` without crashing or misreading it:
/// one read of under 1000 bytes (it reads a C string from a 1000-byte buffer), no
/// `\n` or NUL, a verb first, and an `INIT` with at least four fields only as form B
/// with a decimal port in the fourth (it calls `stoi` on that field, which throws, and
/// aborts the server, on anything else).
pub(crate) fn legacy_safe(query: &str) -> std::result::Result<(), &'static str> {
    if query.is_empty() || query.len() > LEGACY_QUERY_MAX {
        return Err("a legacy query must be 1-999 bytes");
    }
    if query.contains(['\n', '\0']) {
        return Err("a legacy query is one line without NUL bytes");
    }
    let fields: Vec<&str> = query.split(',').collect();
    if fields[0] == "INIT" && fields.len() >= 4 && parse_port(fields[3]).is_none() {
        return Err("an INIT for a legacy registry must be form B (user, directory, port)");
    }
    Ok(())
}

fn err_answer(r: String, user: Option<&str>) -> Error {
    if r == reason::USER_NOT_FOUND {
        Error::UserNotFound(user.unwrap_or_default().to_string())
    } else {
        Error::Registry(r)
    }
}

/// Send `GET_U\n` on a fresh connection and tell the registries apart: `true` for the
/// original server (`ERR,Invalid Request!`, no terminator), `false` for a p2pchat
/// registry (a `\n`-terminated line, read to its end and dropped without keeping it:
/// a `GET_U` answer for a full registry is megabytes).
fn probe(conn: &mut Conn) -> Result<bool> {
    conn.write_all(b"GET_U\n")?;
    let deadline = Instant::now() + REGISTRY_IO_TIMEOUT;
    // The answer's first bytes, as many as it takes to recognise the original's.
    let mut head = Vec::with_capacity(ORIGINAL_INVALID.len());
    let mut buf = [0u8; 8192];
    let mut stream = conn.socket();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout("the registry did not answer".into()));
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut buf) {
            Ok(0) => return Err(Error::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if crate::error::is_timeout(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        let chunk = &buf[..n];
        let room = ORIGINAL_INVALID.len() - head.len();
        head.extend_from_slice(&chunk[..n.min(room)]);
        if let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            // Only one query was sent, so nothing follows its answer line.
            if i + 1 != n {
                return Err(Error::protocol(
                    "registry",
                    "more than one answer to one query",
                ));
            }
            return Ok(false);
        }
        if head == ORIGINAL_INVALID {
            return Ok(true);
        }
    }
}

fn open_stream(addr: &str) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| Error::InvalidArgument(format!("registry address {addr:?}: {e}")))?
        .collect();
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, REGISTRY_IO_TIMEOUT) {
            Ok(s) => {
                s.set_read_timeout(Some(REGISTRY_IO_TIMEOUT))?;
                s.set_write_timeout(Some(REGISTRY_IO_TIMEOUT))?;
                s.set_nodelay(true)?;
                crate::net::set_keepalive(&s);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        None => Error::InvalidArgument(format!("registry address {addr:?} resolves to nothing")),
        Some(e) if is_timeout(&e) => Error::Timeout(format!(
            "connecting to the registry at {addr} took over {} s",
            REGISTRY_IO_TIMEOUT.as_secs()
        )),
        Some(e) => Error::Io(e),
    })
}

fn exchange(conn: &mut Conn, query: &str, multi_line: bool) -> Result<Vec<String>> {
    conn.write_all(format!("{query}\n").as_bytes())?;
    let mut lines =
        vec![read_line(&mut conn.reader(), MAX_ANSWER_LEN, "registry")?.ok_or(Error::Closed)?];
    if multi_line && lines[0].starts_with("OK,") {
        // The first line may itself be the empty-share marker `OK,` followed by the
        // terminating empty line; otherwise read user lines until the empty one.
        loop {
            let l =
                read_line(&mut conn.reader(), MAX_ANSWER_LEN, "registry")?.ok_or(Error::Closed)?;
            if l.is_empty() {
                break;
            }
            lines.push(l);
        }
    }
    Ok(lines)
}

/// A legacy `GET_UF` answer: `f1,f2,` (the original's trailing comma), empty for an
/// empty share, or `ERR,<reason>` (returned as the reason).
pub(crate) fn parse_legacy_files(text: &str) -> std::result::Result<Vec<String>, String> {
    if let Some(r) = text.strip_prefix("ERR,") {
        return Err(r.to_string());
    }
    Ok(text
        .split(',')
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect())
}

/// Why a legacy `GET_AF` answer was not a list.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LegacyAllFiles {
    Err(String),
    Malformed(String),
}

/// A legacy `GET_AF` answer: `user: f1,f2,` lines joined by `\n`, empty with nobody
/// online. Older p2pchat registries put `OK,` in front: accepted too (a username never
/// holds a comma, so a line starting `OK,` cannot be a user's).
pub(crate) fn parse_legacy_all_files(
    text: &str,
) -> std::result::Result<Vec<(String, Vec<String>)>, LegacyAllFiles> {
    if let Some(r) = text.strip_prefix("ERR,") {
        return Err(LegacyAllFiles::Err(r.to_string()));
    }
    let text = text.strip_prefix("OK,").unwrap_or(text);
    text.split('\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (user, mut files) = parse_files_line(l).map_err(LegacyAllFiles::Malformed)?;
            files.retain(|f| !f.is_empty());
            Ok((user, files))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_answers_parse_as_the_original_wrote_them() {
        assert_eq!(
            parse_legacy_files("a.txt,b c.bin,"),
            Ok(vec!["a.txt".to_string(), "b c.bin".to_string()])
        );
        assert_eq!(parse_legacy_files(""), Ok(vec![]));
        assert_eq!(
            parse_legacy_files("ERR,User not found!"),
            Err("User not found!".to_string())
        );
        let all = parse_legacy_all_files("orig1: o1.txt,x.bin,\nbob: ").unwrap();
        assert_eq!(
            all,
            vec![
                (
                    "orig1".to_string(),
                    vec!["o1.txt".to_string(), "x.bin".to_string()]
                ),
                ("bob".to_string(), vec![])
            ]
        );
        assert_eq!(parse_legacy_all_files(""), Ok(vec![]));
        assert!(legacy_safe("INIT,alice,.,4000,a.txt").is_ok());
        assert!(legacy_safe("INIT,alice,4000,a.txt").is_err(), "form A");
        assert!(legacy_safe("INIT,alice,4000,a.txt,b").is_err(), "form A");
        assert!(legacy_safe("GET_U\n").is_err());
        assert!(legacy_safe(&"x".repeat(1000)).is_err());
        assert!(legacy_safe("").is_err());
        assert!(matches!(
            parse_legacy_all_files("no colon here"),
            Err(LegacyAllFiles::Malformed(_))
        ));
    }
}
