//! Refusing connections past a bound: one thread for all of them, never a reset.
//!
//! A refused connection must still read its answer. Closing a socket whose request is
//! still unread makes the close a reset, which the client sees instead of the answer;
//! so the request is read first (which also tells a legacy request, answered with a bare
//! close, from a `P2P/1` one, answered with the `ERR` line), the answer written, the
//! sending side shut, and what the client still sends drained until it closes or
//! [`REFUSAL_LINGER`] passes. Connections that a serving thread already answered with a
//! refusal come here too, to be drained and closed without holding that thread.
//!
//! One thread does this for every refused connection, on non-blocking sockets (mio),
//! with a deadline on each: at most [`MAX_REFUSING`] connections at once and
//! [`MAX_REFUSING_PER_ADDR`] per address (one /64 for IPv6). Past those a refused
//! connection is closed at once: the bound on what refusing may cost comes first.

use super::{is_legacy_start, Inner, PeerEvent};
use crate::limits::{
    LEGACY_GRACE, MAX_PEER_LINE, MAX_REFUSING, MAX_REFUSING_PER_ADDR, REFUSAL_LINGER,
    REFUSAL_READ_TIMEOUT,
};
use crate::net::address_key;
use crate::protocol::{truncate, PeerAnswer};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

/// Most bytes drained from one refused connection before it is closed anyway.
const DRAIN_MAX: usize = 64 * 1024;
const WAKE: Token = Token(0);

/// A connection handed to the refuser.
pub(crate) enum Job {
    /// Read the request, then answer `ERR <code> <text>` (a legacy request: nothing),
    /// report it, and close cleanly.
    Refuse {
        stream: TcpStream,
        from: SocketAddr,
        code: &'static str,
        text: String,
    },
    /// Already answered (and reported): shut the sending side, drain, close.
    Linger { stream: TcpStream },
}

/// The handle the listener and serving threads give refused connections to.
pub(crate) struct Refuser {
    tx: Sender<Job>,
    waker: Waker,
}

/// The refuser thread's half, moved into [`run`].
pub(crate) struct RefuserLoop {
    poll: Poll,
    rx: Receiver<Job>,
}

impl Refuser {
    pub fn new() -> io::Result<(Refuser, RefuserLoop)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        let (tx, rx) = crossbeam_channel::bounded(MAX_REFUSING);
        Ok((Refuser { tx, waker }, RefuserLoop { poll, rx }))
    }

    /// Hand over a connection; never blocks. When the refuser is full the connection
    /// is closed at once.
    pub fn send(&self, job: Job) {
        match self.tx.try_send(job) {
            Ok(()) => self.wake(),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                log::debug!("refuser full: a refused connection is closed at once");
            }
        }
    }

    /// Wake the thread (new work, or the peer is stopping).
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }
}

enum State {
    Reading {
        buf: Vec<u8>,
        code: &'static str,
        text: String,
        /// When the request must be whole (the legacy grace may end it sooner).
        read_by: Instant,
    },
    Draining {
        drained: usize,
    },
}

struct Entry {
    sock: mio::net::TcpStream,
    from: SocketAddr,
    key: IpAddr,
    state: State,
    deadline: Instant,
}

enum Step {
    Keep,
    Close,
}

/// The refuser thread: runs until the peer stops.
pub(super) fn run(inner: Arc<Inner>, lp: RefuserLoop) {
    let RefuserLoop { mut poll, rx } = lp;
    let mut events = Events::with_capacity(256);
    let mut entries: HashMap<Token, Entry> = HashMap::new();
    let mut per_addr: HashMap<IpAddr, usize> = HashMap::new();
    let mut next_token = 1usize;
    loop {
        let timeout = entries
            .values()
            .map(|e| e.deadline)
            .min()
            .map(|d| d.saturating_duration_since(Instant::now()));
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != ErrorKind::Interrupted {
                log::warn!("peer refuser poll failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            continue;
        }
        if inner.stopping() {
            return; // dropping the entries closes their sockets
        }
        let mut done = Vec::new();
        for ev in events.iter() {
            let token = ev.token();
            if let Some(entry) = entries.get_mut(&token) {
                if let Step::Close = advance(&inner, entry, false) {
                    done.push(token);
                }
            }
        }
        while let Ok(job) = rx.try_recv() {
            let Some(mut entry) = admit(&inner, job, &entries, &per_addr) else {
                continue;
            };
            let token = loop {
                let t = Token(next_token);
                next_token = next_token.checked_add(1).unwrap_or(1);
                if t != WAKE && !entries.contains_key(&t) {
                    break t;
                }
            };
            if poll
                .registry()
                .register(&mut entry.sock, token, Interest::READABLE)
                .is_err()
            {
                continue;
            }
            *per_addr.entry(entry.key).or_insert(0) += 1;
            // Bytes may be there already: look now rather than wait for an edge.
            let step = advance(&inner, &mut entry, false);
            entries.insert(token, entry);
            if let Step::Close = step {
                done.push(token);
            }
        }
        let now = Instant::now();
        for (token, entry) in entries.iter_mut() {
            if entry.deadline <= now && !done.contains(token) {
                if let Step::Close = advance(&inner, entry, true) {
                    done.push(*token);
                }
            }
        }
        for token in done {
            if let Some(mut entry) = entries.remove(&token) {
                let _ = poll.registry().deregister(&mut entry.sock);
                if let Some(n) = per_addr.get_mut(&entry.key) {
                    *n -= 1;
                    if *n == 0 {
                        per_addr.remove(&entry.key);
                    }
                }
            }
        }
    }
}

/// Take a job on, unless the refuser holds too many connections (in all, or from this
/// address): then the connection is closed at once.
fn admit(
    inner: &Inner,
    job: Job,
    entries: &HashMap<Token, Entry>,
    per_addr: &HashMap<IpAddr, usize>,
) -> Option<Entry> {
    let (stream, state, deadline, refusal) = match job {
        Job::Refuse {
            stream,
            from,
            code,
            text,
        } => {
            let read_by = Instant::now() + REFUSAL_READ_TIMEOUT;
            let state = State::Reading {
                buf: Vec::new(),
                code,
                text: text.clone(),
                read_by,
            };
            (stream, state, read_by, Some((from, text)))
        }
        Job::Linger { stream } => {
            let _ = stream.shutdown(Shutdown::Write);
            let state = State::Draining { drained: 0 };
            (stream, state, Instant::now() + REFUSAL_LINGER, None)
        }
    };
    let from = stream.peer_addr().ok()?;
    let key = address_key(from.ip());
    let full = entries.len() >= MAX_REFUSING
        || per_addr.get(&key).copied().unwrap_or(0) >= MAX_REFUSING_PER_ADDR;
    if full {
        if let Some((from, text)) = refusal {
            inner.emit(PeerEvent::RequestRefused {
                from,
                request: String::new(),
                reason: format!("{text} (closed unread: too many refusals at once)"),
            });
        }
        return None;
    }
    stream.set_nonblocking(true).ok()?;
    Some(Entry {
        sock: mio::net::TcpStream::from_std(stream),
        from,
        key,
        state,
        deadline,
    })
}

/// Move one connection on as far as its bytes (or its deadline, when `expired`) allow.
fn advance(inner: &Inner, entry: &mut Entry, expired: bool) -> Step {
    match &mut entry.state {
        State::Reading { buf, read_by, .. } => {
            let mut chunk = [0u8; 1024];
            let mut whole = expired;
            while !whole {
                match entry.sock.read(&mut chunk) {
                    Ok(0) => whole = true,
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        if buf.contains(&b'\n') || buf.len() > MAX_PEER_LINE {
                            whole = true;
                        } else if is_legacy_start(buf) {
                            // A legacy request is whole once no more bytes come within
                            // the grace period.
                            entry.deadline = (Instant::now() + LEGACY_GRACE).min(*read_by);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return Step::Close,
                }
            }
            if !whole {
                return Step::Keep;
            }
            answer(inner, entry);
            // The client may have closed already: see at once.
            advance(inner, entry, false)
        }
        State::Draining { drained } => {
            if expired {
                return Step::Close;
            }
            let mut chunk = [0u8; 4096];
            loop {
                match entry.sock.read(&mut chunk) {
                    Ok(0) => return Step::Close,
                    Ok(n) => {
                        *drained += n;
                        if *drained > DRAIN_MAX {
                            return Step::Close;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Keep,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return Step::Close,
                }
            }
        }
    }
}

/// The request is in (or its time is up): answer, report, shut the sending side and
/// start draining.
fn answer(inner: &Inner, entry: &mut Entry) {
    let State::Reading {
        buf, code, text, ..
    } = &mut entry.state
    else {
        return;
    };
    let legacy = is_legacy_start(buf);
    if !legacy {
        let line = PeerAnswer::Err {
            code: (*code).to_string(),
            text: text.clone(),
        }
        .to_line();
        // A short line into an empty send buffer: one write takes it all.
        let _ = entry.sock.write(line.as_bytes());
    }
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let request = String::from_utf8_lossy(&buf[..end]).into_owned();
    inner.emit(PeerEvent::RequestRefused {
        from: entry.from,
        request: truncate(&request, 200).to_string(),
        reason: std::mem::take(text),
    });
    let _ = entry.sock.shutdown(Shutdown::Write);
    entry.state = State::Draining { drained: 0 };
    entry.deadline = Instant::now() + REFUSAL_LINGER;
}
