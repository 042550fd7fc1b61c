//! The watch session (`docs/PROTOCOL.md` §5.2): a second secured registry session on
//! which the registry pushes what concerns this peer: the outcome of its reachability
//! check (`REACH`), and callers that cannot connect to it (`DIAL`: connect out to
//! them; `PUNCH`: connect to them at once as they connect here; `RELAY`: meet them at
//! a relay).
//!
//! One thread (`p2p-watch`, owned by the peer's thread set) opens the session, reads
//! the pushes and opens it again with back-off when it drops. Every dial-out runs on
//! its own owned thread, bounded in number at once ([`MAX_DIAL_OUTS`]) and per minute
//! ([`MAX_DIAL_OUTS_PER_MINUTE`]), and each holds a serving slot like a connection the
//! listener accepted. What a dial-out connection carries is served by
//! [`serve`](super::serve) as a secured link only. This module never connects anywhere
//! a push names without those bounds, and never keeps a push it cannot parse.

use super::{serve, Inner};
use crate::error::{is_timeout, Error, Result};
use crate::limits::{
    MAX_DIAL_OUTS, MAX_DIAL_OUTS_PER_MINUTE, MAX_PUSH_LINE, WATCH_BACKOFF_MAX, WATCH_BACKOFF_MIN,
};
use crate::net::read_line;
use crate::reach::{Path, Preamble, Push, Reach, Token};
use crate::secure::SecureStream;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A session that lasted this long was a good one: the back-off starts over.
const GOOD_SESSION: Duration = Duration::from_secs(60);

/// The watch thread: keep a watch session open while the peer runs.
pub(super) fn run(inner: Arc<Inner>) {
    let mut backoff = WATCH_BACKOFF_MIN;
    let mut wait = Duration::ZERO;
    loop {
        if inner.stop_rx.recv_timeout(wait) != Err(crossbeam_channel::RecvTimeoutError::Timeout) {
            return; // stopping
        }
        if !inner.registry_secured() {
            // An original registry or a plaintext session: nothing to watch; the reach
            // stays unknown. Checked again now and then (the session may come back
            // secured after a reconnect).
            wait = WATCH_BACKOFF_MAX;
            continue;
        }
        match inner.registry.open_watch(&inner.username) {
            Ok(None) => wait = WATCH_BACKOFF_MAX,
            Ok(Some((session, fields))) => {
                apply_watch_answer(&inner, &fields);
                let started = Instant::now();
                read_pushes(&inner, *session);
                if started.elapsed() >= GOOD_SESSION {
                    backoff = WATCH_BACKOFF_MIN;
                }
                wait = backoff;
                backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
            }
            Err(e) => {
                log::debug!("watch session to {} not open: {e}", inner.registry.addr());
                wait = backoff;
                backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
            }
        }
    }
}

/// The answer to `WATCH`: `OK,<ip>,<port>,<reach>`.
fn apply_watch_answer(inner: &Inner, fields: &[String]) {
    match parse_watch_answer(fields) {
        Some((reach, addr)) => inner.set_reachability(reach, addr),
        None => log::warn!("malformed WATCH answer from {}", inner.registry.addr()),
    }
}

/// The fields of `OK,<ip>,<port>,<reach>`, or `None` when malformed.
pub(crate) fn parse_watch_answer(fields: &[String]) -> Option<(Reach, SocketAddr)> {
    let [ip, port, reach] = fields else {
        return None;
    };
    let ip: IpAddr = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let port = crate::protocol::parse_port(port)?;
    Some((
        Reach::parse(reach)?,
        SocketAddr::new(ip.to_canonical(), port),
    ))
}

/// Reads pushes until the session ends (the registry closed it, or the peer stops:
/// its socket is tracked, so `stop` shuts it down).
fn read_pushes(inner: &Arc<Inner>, session: SecureStream) {
    let SecureStream {
        mut reader, writer, ..
    } = session;
    let tracked = inner.track_socket(reader.socket());
    // A watch session idles for as long as nothing happens: no read timeout, but
    // keepalive (set when it was opened) ends a dead one.
    if reader.socket().set_read_timeout(None).is_ok() {
        loop {
            if inner.stopping() {
                break;
            }
            let line = match read_line(&mut reader, MAX_PUSH_LINE, "registry") {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => {
                    if !inner.stopping() {
                        log::info!("watch session to {} ended: {e}", inner.registry.addr());
                    }
                    break;
                }
            };
            match Push::parse(&line) {
                Ok(push) => handle(inner, push),
                Err(e) => log::warn!("ignored a push from {}: {e}", inner.registry.addr()),
            }
        }
    }
    inner.forget_socket(tracked);
    drop(writer);
}

fn handle(inner: &Arc<Inner>, push: Push) {
    match push {
        Push::Reach { reach, addr } => inner.set_reachability(reach, addr),
        Push::Dial {
            token,
            addr,
            caller,
        } => dial_out(inner, Target::Reverse { addr, token }, caller),
        Push::Relay {
            token,
            relay,
            caller,
        } => dial_out(inner, Target::Relay { relay, token }, caller),
        Push::Punch { addr, caller } => dial_out(inner, Target::Punch { addr }, caller),
    }
}

/// Where a dial-out goes.
enum Target {
    /// The caller's listener, opened with `P2P/2 REVERSE <token>`.
    Reverse { addr: SocketAddr, token: Token },
    /// A relay, opened with `RELAY/1 <token>`.
    Relay { relay: String, token: String },
    /// The caller's listed address, connected to from this peer's listening port while
    /// the caller connects the other way (a hole punch); nothing is sent first.
    Punch { addr: SocketAddr },
}

/// Whether another dial-out may start now (at most [`MAX_DIAL_OUTS_PER_MINUTE`] in
/// the last minute); records it when so.
fn rate_allows(inner: &Inner) -> bool {
    let mut starts = inner.dial_out_starts.lock();
    let now = Instant::now();
    while starts
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
    {
        starts.pop_front();
    }
    if starts.len() >= MAX_DIAL_OUTS_PER_MINUTE {
        return false;
    }
    starts.push_back(now);
    true
}

/// Follows a `DIAL` or `RELAY` push on its own thread, within the bounds: a dial-out
/// place, a serving slot (counted for the address connected to), the rate. A push
/// past a bound is dropped with a log line; the caller then tries its next path.
fn dial_out(inner: &Arc<Inner>, target: Target, caller: String) {
    let Ok(dialing) = inner
        .dial_outs
        .try_acquire(None, MAX_DIAL_OUTS, MAX_DIAL_OUTS)
    else {
        log::warn!("dropped a connection request from {caller}: {MAX_DIAL_OUTS} dial-outs running");
        return;
    };
    if !rate_allows(inner) {
        log::warn!(
            "dropped a connection request from {caller}: over {MAX_DIAL_OUTS_PER_MINUTE} a minute"
        );
        return;
    }
    let limits = &inner.limits;
    let ip = match &target {
        Target::Reverse { addr, .. } | Target::Punch { addr } => Some(addr.ip()),
        Target::Relay { .. } => None,
    };
    let Ok(slot) = inner
        .serving
        .try_acquire(ip, limits.max_serving, limits.max_serving_per_addr)
    else {
        log::warn!("dropped a connection request from {caller}: serving at the limit");
        return;
    };
    let worker = inner.clone();
    let spawned = inner.threads.spawn("p2p-dial-out", move || {
        let (opened, path) = match &target {
            Target::Reverse { addr, token } => (reverse_out(&worker, *addr, *token), Path::Reverse),
            Target::Relay { relay, token } => (
                super::paths::join_relay(relay, token, worker.io_timeout),
                Path::Relayed,
            ),
            Target::Punch { addr } => (
                super::paths::punch_back(&worker, &caller, *addr),
                Path::Punched,
            ),
        };
        match opened {
            Ok(stream) => serve::serve_one(&worker, stream, path),
            Err(e) => {
                if !worker.stopping() {
                    log::info!("could not connect out to {caller} ({path}): {e}");
                }
            }
        }
        drop(slot);
        drop(dialing);
    });
    if let Err(e) = spawned {
        log::warn!("no thread to connect out to a caller: {e}");
    }
}

/// Connects to the caller's listener and opens with `P2P/2 REVERSE <token>`.
fn reverse_out(inner: &Inner, addr: SocketAddr, token: Token) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, inner.io_timeout).map_err(|e| {
        if is_timeout(&e) {
            Error::Timeout(format!(
                "{addr} did not answer within {} s",
                inner.io_timeout.as_secs()
            ))
        } else {
            Error::Io(e)
        }
    })?;
    stream.set_write_timeout(Some(inner.io_timeout))?;
    (&stream).write_all(Preamble::Reverse(token).to_line().as_bytes())?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_answers_parse() {
        let f = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            parse_watch_answer(&f("203.0.113.5,4000,reachable")),
            Some((Reach::Reachable, "203.0.113.5:4000".parse().unwrap()))
        );
        assert_eq!(
            parse_watch_answer(&f("::1,4000,unknown")),
            Some((Reach::Unknown, "[::1]:4000".parse().unwrap()))
        );
        assert_eq!(parse_watch_answer(&f("1.2.3.4,0,reachable")), None);
        assert_eq!(parse_watch_answer(&f("1.2.3.4,5,maybe")), None);
        assert_eq!(parse_watch_answer(&f("1.2.3.4,5")), None);
    }
}
