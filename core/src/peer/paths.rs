//! How this peer reaches another for a secured link: directly, by reverse connect, by
//! a hole punched through both NATs, or through a relay (`docs/PROTOCOL.md` §5), chosen from the registry's word on the
//! callee ([`PeerInfo::reach`]), this peer's own reachability and the paths that failed
//! lately; and joining a relay circuit, which both sides of a relayed link do.
//!
//! Every path ends in a connected TCP stream on which the caller runs the same IK
//! handshake ([`super::link::handshake`]); this module never reads or writes anything
//! past the preambles (`P2P/2 REVERSE`, `RELAY/1`; a punched connection has none). The plan itself ([`plan`]) and the
//! relay's answer ([`parse_relay_answer`]) are pure functions.

use super::registry_link::PeerInfo;
use super::Inner;
use crate::error::{is_timeout, Error, Result};
use crate::limits::{
    CALLEE_REACH_WAIT, MAX_PATH_MEMORY, MAX_RELAY_LINE, PATH_RETRY_AFTER, REACH_WAIT,
    RELAY_JOIN_WAIT, REVERSE_WAIT,
};
use crate::reach::{Path, Reach, Token};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Which paths a peer may take to reach others ([`super::PeerBuilder::path_policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PathPolicy {
    /// Direct when the callee may be reachable, then reverse connect when this peer is
    /// reachable, then a hole punch when neither is (Unix), then the relay.
    #[default]
    Auto,
    /// Only direct connections.
    Direct,
    /// Only reverse connect: the callee connects to this peer (needs a reachable
    /// listener here and a registry with watch sessions).
    Reverse,
    /// Only the relay: neither side learns the other's address (an application that
    /// wants to hide where its user is, or a test on loopback, where everything is
    /// reachable).
    Relay,
    /// Only a hole punch: both sides connect to each other at once, timed by the
    /// registry (Unix only; a NAT that gives each connection a new port defeats it).
    Punch,
}

impl PathPolicy {
    /// `auto`, `direct`, `reverse`, `relay`, `punch`.
    pub fn as_str(self) -> &'static str {
        match self {
            PathPolicy::Auto => "auto",
            PathPolicy::Direct => "direct",
            PathPolicy::Reverse => "reverse",
            PathPolicy::Relay => "relay",
            PathPolicy::Punch => "punch",
        }
    }

    /// The policy named `word` (as [`as_str`](Self::as_str) writes it).
    pub fn parse(word: &str) -> Option<PathPolicy> {
        match word {
            "auto" => Some(PathPolicy::Auto),
            "direct" => Some(PathPolicy::Direct),
            "reverse" => Some(PathPolicy::Reverse),
            "relay" | "relayed" => Some(PathPolicy::Relay),
            "punch" | "punched" => Some(PathPolicy::Punch),
            _ => None,
        }
    }
}

/// The paths to try, in order, to reach a callee the registry lists as `callee`, from
/// a peer whose own listener is `me`. `secured`: the registry session is secured (the
/// only kind that knows `CONNECT` and `RELAY`); without it only direct is possible.
/// `one_nat`: the registry lists both at the same IP, behind one NAT, where a punch
/// would aim at the NAT's own address from inside it.
pub(crate) fn plan(
    policy: PathPolicy,
    callee: Reach,
    me: Reach,
    secured: bool,
    one_nat: bool,
) -> Vec<Path> {
    match policy {
        PathPolicy::Direct => vec![Path::Direct],
        PathPolicy::Reverse => vec![Path::Reverse],
        PathPolicy::Relay => vec![Path::Relayed],
        PathPolicy::Punch => vec![Path::Punched],
        PathPolicy::Auto if !secured => vec![Path::Direct],
        PathPolicy::Auto => {
            let mut paths = Vec::with_capacity(4);
            if callee != Reach::Unreachable {
                paths.push(Path::Direct);
            }
            // The registry asks the callee to connect back only to a caller it found
            // reachable; while that is not known yet, `reverse` waits a moment for it.
            if me != Reach::Unreachable {
                paths.push(Path::Reverse);
            }
            // Both behind NATs (or firewalls): a punched hole saves the relay's
            // bandwidth and a hop; a NAT that picks a new port per connection defeats
            // it, and the relay follows. Behind one NAT, both SYNs would go to the
            // NAT's outside address from inside, which few NATs send back in
            // (hairpinning): not worth the wait.
            if cfg!(unix) && callee == Reach::Unreachable && me != Reach::Reachable && !one_nat {
                paths.push(Path::Punched);
            }
            paths.push(Path::Relayed);
            paths
        }
    }
}

/// Paths that failed lately, per user, so they are skipped for [`PATH_RETRY_AFTER`]
/// instead of being tried again at every request.
#[derive(Default)]
pub(crate) struct PathMemory {
    failed: Mutex<HashMap<(String, Path), Instant>>,
}

impl PathMemory {
    /// How long ago `path` to `user` failed, if that is recent enough to skip it.
    fn recently_failed(&self, user: &str, path: Path) -> Option<Duration> {
        let mut failed = self.failed.lock();
        let key = (user.to_string(), path);
        let ago = failed.get(&key)?.elapsed();
        if ago < PATH_RETRY_AFTER {
            return Some(ago);
        }
        failed.remove(&key);
        None
    }

    fn note_failure(&self, user: &str, path: Path) {
        let mut failed = self.failed.lock();
        if failed.len() >= MAX_PATH_MEMORY {
            failed.retain(|_, at| at.elapsed() < PATH_RETRY_AFTER);
            if failed.len() >= MAX_PATH_MEMORY {
                // Still full of fresh failures: forget the oldest.
                if let Some(oldest) = failed
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone())
                {
                    failed.remove(&oldest);
                }
            }
        }
        failed.insert((user.to_string(), path), Instant::now());
    }

    fn note_success(&self, user: &str, path: Path) {
        self.failed.lock().remove(&(user.to_string(), path));
    }
}

/// A TCP stream to `name` (listed as `info`) on the first path of the plan that works,
/// and which path that was. Paths that fail before anything is said on them (no
/// answer, refused, the registry could not arrange it) fall through to the next; the
/// error, when all fail, names every path tried and why.
pub(crate) fn connect(inner: &Inner, name: &str, info: &PeerInfo) -> Result<(TcpStream, Path)> {
    let secured = inner.registry_secured();
    let fresh;
    let info = if inner.path_policy == PathPolicy::Auto
        && secured
        && info.reach == Reach::Unknown
        && inner.registry.reports_reach()
    {
        fresh = callee_checked(inner, name, info);
        &fresh
    } else {
        info
    };
    let (me, listed) = inner.reachability();
    let one_nat = listed.is_some_and(|mine| mine.ip() == info.addr.ip());
    let plan = plan(inner.path_policy, info.reach, me, secured, one_nat);
    let mut tried: Vec<(Path, Error)> = Vec::new();
    let mut skipped = Vec::new();
    for (i, &path) in plan.iter().enumerate() {
        let last = i + 1 == plan.len();
        if !last {
            if let Some(ago) = inner.path_memory.recently_failed(name, path) {
                skipped.push(format!("{path}: skipped (failed {} s ago)", ago.as_secs()));
                continue;
            }
        }
        let attempt = match path {
            Path::Direct => super::link::connect(inner, name, info.addr),
            Path::Reverse => reverse(inner, name),
            Path::Relayed => relayed(inner, name),
            Path::Punched => punched(inner, name),
        };
        match attempt {
            Ok(stream) => {
                inner.path_memory.note_success(name, path);
                return Ok((stream, path));
            }
            Err(e @ (Error::Shutdown | Error::KeyChanged { .. } | Error::UserNotFound(_))) => {
                return Err(e)
            }
            Err(e) => {
                if inner.stopping() {
                    return Err(Error::Shutdown);
                }
                log::info!("{name}: {path} path failed: {e}");
                inner.path_memory.note_failure(name, path);
                tried.push((path, e));
            }
        }
    }
    Err(no_path(name, tried, skipped))
}

/// `info` once the registry's check of the callee finished (a callee that just
/// registered): asked again every 200 ms for at most [`CALLEE_REACH_WAIT`]. A direct
/// attempt at a listener behind a NAT costs the whole connect timeout; this costs at
/// most the registry's check.
fn callee_checked(inner: &Inner, name: &str, info: &PeerInfo) -> PeerInfo {
    let until = Instant::now() + CALLEE_REACH_WAIT;
    let mut info = *info;
    while info.reach == Reach::Unknown && Instant::now() < until {
        if inner.stop_rx.recv_timeout(Duration::from_millis(200))
            != Err(crossbeam_channel::RecvTimeoutError::Timeout)
        {
            break;
        }
        match inner.peer_info(name) {
            // Only the verdict: the address and key checked before stay.
            Ok(fresh) if fresh.addr == info.addr && fresh.key == info.key => {
                info.reach = fresh.reach
            }
            _ => break,
        }
    }
    info
}

/// The error after every path failed: the only error itself when one path was tried
/// (its text already names the user), else one naming each path and why: a
/// [`Error::Timeout`] when any path got no answer (the usual sign of a NAT or a
/// firewall), else an I/O error of the first I/O failure's kind (connection refused
/// when none was one).
fn no_path(name: &str, mut tried: Vec<(Path, Error)>, skipped: Vec<String>) -> Error {
    if tried.len() == 1 && skipped.is_empty() {
        if let Some((_, e)) = tried.pop() {
            return e;
        }
    }
    let any_timeout = tried.iter().any(|(_, e)| matches!(e, Error::Timeout(_)));
    let kind = tried
        .iter()
        .find_map(|(_, e)| match e {
            Error::Io(io) => Some(io.kind()),
            _ => None,
        })
        .unwrap_or(ErrorKind::ConnectionRefused);
    let mut parts: Vec<String> = tried
        .into_iter()
        .map(|(p, e)| {
            let text = match e {
                Error::Timeout(t) => t,
                e => e.to_string(),
            };
            format!("{p}: {text}")
        })
        .collect();
    parts.extend(skipped);
    let text = format!("{name}: {}", parts.join("; "));
    if any_timeout {
        Error::Timeout(text)
    } else {
        Error::Io(std::io::Error::new(kind, text))
    }
}

/// `query` on the registry session: the answer's fields after `OK`; a refusal
/// (`ERR,…`) is reported after `what` (what could not be arranged).
fn ask(inner: &Inner, query: &str, what: &str) -> Result<Vec<String>> {
    inner.registry.ask_fields(query).map_err(|e| match e {
        Error::Registry(r) => Error::Registry(format!("{what}: {r}")),
        e => e,
    })
}

/// Reverse connect, the caller's side: `CONNECT,<name>` on the registry session, then
/// wait for `name`'s `P2P/2 REVERSE <token>` connection on this peer's listener.
fn reverse(inner: &Inner, name: &str) -> Result<TcpStream> {
    if !inner.registry_secured() {
        return Err(no_session(inner, "reverse connect"));
    }
    // Just registered (a `fetch` run): the registry's check of this peer's listener
    // may not have finished, and it asks the callee to connect back only to a caller
    // it found reachable.
    let until = Instant::now() + REACH_WAIT;
    while inner.reachability().0 == Reach::Unknown && Instant::now() < until {
        if inner.stop_rx.recv_timeout(Duration::from_millis(20))
            != Err(crossbeam_channel::RecvTimeoutError::Timeout)
        {
            return Err(Error::Shutdown);
        }
    }
    match inner.reachability() {
        (Reach::Unreachable, Some(addr)) => {
            return Err(Error::Refused {
                peer: "the registry".into(),
                reason: format!(
                    "this peer is not reachable from outside at {addr}, so {name} cannot \
                     connect back to it"
                ),
            })
        }
        (Reach::Unknown, _) => log::info!(
            "this peer's reachability is still unknown after {} s; asking anyway",
            REACH_WAIT.as_secs()
        ),
        _ => {}
    }
    let (tx, rx) = crossbeam_channel::bounded::<TcpStream>(1);
    // While this is above 0 the listener holds a REVERSE connection with an unknown
    // token a moment: the callee may connect before the registry's answer is read.
    inner.connects_in_flight.fetch_add(1, Ordering::SeqCst);
    let result = (|| {
        let fields = ask(
            inner,
            &format!("CONNECT,{name}"),
            &format!("the registry cannot ask {name} to connect back"),
        )?;
        let token = fields
            .first()
            .and_then(|t| Token::parse(t))
            .ok_or_else(|| Error::protocol(inner.registry.addr(), "malformed CONNECT answer"))?;
        inner.reverse_waiters.lock().insert(token, tx);
        let waited = crossbeam_channel::after(REVERSE_WAIT);
        let got = crossbeam_channel::select! {
            recv(rx) -> s => s.map_err(|_| Error::Closed),
            recv(inner.stop_rx) -> _ => Err(Error::Shutdown),
            recv(waited) -> _ => Err(Error::Timeout(format!(
                "{name} did not connect back within {} s",
                REVERSE_WAIT.as_secs()
            ))),
        };
        inner.reverse_waiters.lock().remove(&token);
        // Handed over just as the wait ended: still good.
        got.or_else(|e| rx.try_recv().map_err(|_| e))
    })();
    inner.connects_in_flight.fetch_sub(1, Ordering::SeqCst);
    result
}

/// A hole punch, the caller's side: a socket bound to a fresh port, then
/// `PUNCH,<name>,<port>` on the registry session, which answers `name`'s listed address
/// and asks `name` to connect at once to this peer's address with that port; then
/// connect there while `name` connects this way.
fn punched(inner: &Inner, name: &str) -> Result<TcpStream> {
    if !inner.registry_secured() {
        return Err(no_session(inner, "hole punching"));
    }
    #[cfg(unix)]
    {
        let local = SocketAddr::new(inner.listen_addr.ip(), 0);
        let socket = crate::net::bound_socket(local, false)?;
        let port = socket
            .local_addr()?
            .as_socket()
            .map(|a| a.port())
            .ok_or(Error::Closed)?;
        let fields = ask(
            inner,
            &format!("PUNCH,{name},{port}"),
            &format!("no hole punch to {name}"),
        )?;
        let addr = parse_punch_answer(&fields)
            .ok_or_else(|| Error::protocol(inner.registry.addr(), "malformed PUNCH answer"))?;
        punch_error(
            name,
            addr,
            crate::net::punch(socket, addr, crate::limits::PUNCH_WAIT, false),
        )
    }
    #[cfg(not(unix))]
    {
        Err(Error::InvalidArgument(format!(
            "no hole punch to {name}: it needs SO_REUSEPORT (Unix)"
        )))
    }
}

/// The registry's answer to `PUNCH`: `OK,<ip>,<port>` (the fields after `OK`).
pub(crate) fn parse_punch_answer(fields: &[String]) -> Option<SocketAddr> {
    let [ip, port] = fields else {
        return None;
    };
    let ip: std::net::IpAddr = ip.parse().ok()?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    Some(SocketAddr::new(ip.to_canonical(), port))
}

/// A hole punch, the callee's side (a `PUNCH` push): connect to the caller at `addr`
/// from this peer's listening port while the caller connects this way.
pub(crate) fn punch_back(inner: &Inner, caller: &str, addr: SocketAddr) -> Result<TcpStream> {
    #[cfg(unix)]
    {
        let socket = crate::net::bound_socket(inner.listen_addr, true)?;
        punch_error(
            caller,
            addr,
            crate::net::punch(socket, addr, crate::limits::PUNCH_WAIT, true),
        )
    }
    #[cfg(not(unix))]
    {
        let _ = inner;
        Err(Error::InvalidArgument(format!(
            "no hole punch to {caller} at {addr}: it needs SO_REUSEPORT (Unix)"
        )))
    }
}

/// A punch's outcome, its error naming the other side.
#[cfg(unix)]
fn punch_error(
    name: &str,
    addr: SocketAddr,
    punched: std::io::Result<TcpStream>,
) -> Result<TcpStream> {
    punched.map_err(|e| {
        if is_timeout(&e) {
            Error::Timeout(format!(
                "no hole punched to {name} at {addr} within {} s (a NAT that changes \
                 ports, or a firewall)",
                crate::limits::PUNCH_WAIT.as_secs()
            ))
        } else {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("no hole punched to {name} at {addr}: {e}"),
            ))
        }
    })
}

/// The relay, the caller's side: `RELAY,<name>` on the registry session, then join the
/// circuit the registry minted.
fn relayed(inner: &Inner, name: &str) -> Result<TcpStream> {
    if !inner.registry_secured() {
        return Err(no_session(inner, "a relay"));
    }
    let fields = ask(
        inner,
        &format!("RELAY,{name}"),
        &format!("no relay to {name}"),
    )?;
    let [relay, token] = fields.as_slice() else {
        return Err(Error::protocol(
            inner.registry.addr(),
            "malformed RELAY answer",
        ));
    };
    join_relay(relay, token, inner.io_timeout)
}

/// The error for a path that needs a secured registry session when there is none.
fn no_session(inner: &Inner, what: &str) -> Error {
    Error::Registry(format!(
        "{what} needs a secured session with the registry, and the one with {} is not",
        inner.registry.addr()
    ))
}

/// What a relay's first line says: `Ok` for `OK relayed`, else its refusal text.
pub(crate) fn parse_relay_answer(line: &str) -> std::result::Result<(), String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line == "OK relayed" {
        return Ok(());
    }
    match line.strip_prefix("ERR ") {
        Some(text) => Err(text.to_string()),
        None => Err(format!(
            "unexpected answer {:?}",
            crate::protocol::truncate(line, 80)
        )),
    }
}

/// Connects to the relay at `relay` (`host:port`), opens with `RELAY/1 <token>` and
/// waits (at most [`RELAY_JOIN_WAIT`]) for `OK relayed`: then the stream is the circuit,
/// joined to the other side. The answer is read a byte at a time, so nothing the other
/// side sends right after it is taken from the stream.
pub(crate) fn join_relay(relay: &str, token: &str, io_timeout: Duration) -> Result<TcpStream> {
    let who = format!("relay {relay}");
    let addrs: Vec<SocketAddr> = relay
        .to_socket_addrs()
        .map_err(|e| Error::InvalidArgument(format!("relay address {relay:?}: {e}")))?
        .collect();
    let addr = addrs.first().copied().ok_or_else(|| {
        Error::InvalidArgument(format!("relay address {relay:?} resolves to nothing"))
    })?;
    let stream = TcpStream::connect_timeout(&addr, io_timeout).map_err(|e| {
        if is_timeout(&e) {
            Error::Timeout(format!(
                "the {who} did not answer the connection within {} s",
                io_timeout.as_secs()
            ))
        } else {
            Error::Io(std::io::Error::new(e.kind(), format!("{who}: {e}")))
        }
    })?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(io_timeout))?;
    (&stream).write_all(format!("RELAY/1 {token}\n").as_bytes())?;
    let deadline = Instant::now() + RELAY_JOIN_WAIT;
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout(format!(
                "the {who} did not join the circuit within {} s",
                RELAY_JOIN_WAIT.as_secs()
            )));
        }
        stream.set_read_timeout(Some(left))?;
        let mut byte = [0u8; 1];
        match (&stream).read(&mut byte) {
            Ok(0) => {
                return Err(Error::protocol(
                    who.as_str(),
                    "closed before joining the circuit",
                ))
            }
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => {
                line.push(byte[0]);
                if line.len() > MAX_RELAY_LINE {
                    return Err(Error::protocol(who.as_str(), "answer line too long"));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted || is_timeout(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let line = String::from_utf8_lossy(&line);
    match parse_relay_answer(&line) {
        Ok(()) => {
            stream.set_read_timeout(None)?;
            Ok(stream)
        }
        Err(text) => Err(Error::Refused {
            peer: who,
            reason: text,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_follow_the_policy_and_the_reach_of_both_sides() {
        use Path::*;
        use Reach::*;
        let auto = PathPolicy::Auto;
        assert_eq!(
            plan(auto, Reachable, Reachable, true, false),
            vec![Direct, Reverse, Relayed]
        );
        assert_eq!(
            plan(auto, Unknown, Unknown, true, false),
            vec![Direct, Reverse, Relayed]
        );
        assert_eq!(
            plan(auto, Unknown, Unreachable, true, false),
            vec![Direct, Relayed]
        );
        assert_eq!(
            plan(auto, Unreachable, Reachable, true, false),
            vec![Reverse, Relayed]
        );
        // Both behind NATs: a hole punch before the relay (Unix), also while this
        // peer's own check is still running (reverse first then).
        let punch: &[Path] = if cfg!(unix) { &[Punched] } else { &[] };
        assert_eq!(
            plan(auto, Unreachable, Unreachable, true, false),
            [punch, &[Relayed]].concat()
        );
        assert_eq!(
            plan(auto, Unreachable, Unknown, true, false),
            [&[Reverse][..], punch, &[Relayed]].concat()
        );
        assert_eq!(
            plan(PathPolicy::Punch, Reachable, Reachable, true, false),
            vec![Punched]
        );
        // Behind one NAT: no punch at the NAT's own address.
        assert_eq!(
            plan(auto, Unreachable, Unreachable, true, true),
            vec![Relayed]
        );
        assert_eq!(
            plan(auto, Unreachable, Reachable, false, false),
            vec![Direct]
        );
        assert_eq!(
            plan(PathPolicy::Relay, Reachable, Reachable, true, false),
            vec![Relayed]
        );
        assert_eq!(
            plan(PathPolicy::Reverse, Reachable, Unknown, true, false),
            vec![Reverse]
        );
        assert_eq!(
            plan(PathPolicy::Direct, Unreachable, Unknown, true, false),
            vec![Direct]
        );
        for p in [
            PathPolicy::Auto,
            PathPolicy::Direct,
            PathPolicy::Reverse,
            PathPolicy::Relay,
            PathPolicy::Punch,
        ] {
            assert_eq!(PathPolicy::parse(p.as_str()), Some(p));
        }
        assert_eq!(PathPolicy::parse("sideways"), None);
    }

    #[test]
    fn punch_answers_parse() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_punch_answer(&f(&["203.0.113.5", "4000"])),
            Some("203.0.113.5:4000".parse().unwrap())
        );
        assert_eq!(
            parse_punch_answer(&f(&["::ffff:203.0.113.5", "4000"])),
            Some("203.0.113.5:4000".parse().unwrap())
        );
        for bad in [
            &[][..],
            &["203.0.113.5"],
            &["x", "1"],
            &["203.0.113.5", "0"],
            &["1.2.3.4", "5", "6"],
        ] {
            assert_eq!(parse_punch_answer(&f(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn relay_answers_parse() {
        assert_eq!(parse_relay_answer("OK relayed"), Ok(()));
        assert_eq!(parse_relay_answer("OK relayed\r"), Ok(()));
        assert_eq!(
            parse_relay_answer("ERR denied expired relay token"),
            Err("denied expired relay token".to_string())
        );
        assert!(parse_relay_answer("HELLO").is_err());
    }

    #[test]
    fn failed_paths_are_skipped_for_a_while_and_memory_is_bounded() {
        let m = PathMemory::default();
        assert_eq!(m.recently_failed("bob", Path::Direct), None);
        m.note_failure("bob", Path::Direct);
        assert!(m.recently_failed("bob", Path::Direct).is_some());
        assert_eq!(m.recently_failed("bob", Path::Relayed), None);
        m.note_success("bob", Path::Direct);
        assert_eq!(m.recently_failed("bob", Path::Direct), None);
        for i in 0..MAX_PATH_MEMORY + 10 {
            m.note_failure(&format!("u{i}"), Path::Direct);
        }
        assert!(m.failed.lock().len() <= MAX_PATH_MEMORY);
    }

    #[test]
    fn the_error_names_every_path_tried() {
        let e = no_path(
            "bob",
            vec![
                (Path::Direct, Error::Timeout("no answer within 15 s".into())),
                (
                    Path::Relayed,
                    Error::Registry("no relay to bob: No relay available".into()),
                ),
            ],
            vec![],
        );
        let text = e.to_string();
        assert!(
            text.contains("bob: direct: no answer within 15 s; relayed: "),
            "{text}"
        );
        assert!(text.contains("No relay available"), "{text}");
        let one = no_path(
            "bob",
            vec![(Path::Direct, Error::Timeout("x".into()))],
            vec![],
        );
        assert!(matches!(one, Error::Timeout(t) if t == "x"));
    }
}
