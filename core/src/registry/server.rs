//! The registry's event loops: accept connections, frame queries, answer them.
//!
//! One loop per core (each a thread with its own mio `Poll`), non-blocking sockets,
//! edge-triggered. Loop 0 owns the listener and hands accepted connections round-robin
//! to every loop (itself included) over a channel plus a waker; a connection then stays
//! on its loop for life. All loops share the one [`Directory`]. Each connection has an input
//! buffer (at most one query line plus what one read brings) and an output buffer;
//! deadlines (legacy grace, slowloris, idle) sit in a min-heap so a wake-up costs
//! O(log n), not a scan of every connection.

use super::directory::{Caller, Directory, InitOutcome};
use super::{RegistryConfig, RegistryEvent, RegistryHook};
use crate::limits::{LEGACY_FAST_MAX, MAX_LINE_LEN};
use crate::protocol::{parse_query, reason, truncate, Query, QueryError};
use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);
/// Past this much unsent output, a connection's further queries wait (a client that
/// pipelines `GET_AF` without reading must not grow our memory without bound).
const OUT_HIGH_WATER: usize = 4 * 1024 * 1024;
const READ_CHUNK: usize = 64 * 1024;
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Conn {
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
    inbuf: Vec<u8>,
    /// How far `inbuf` has been searched for `\n`.
    scanned: usize,
    out: Vec<u8>,
    out_pos: usize,
    /// Has sent at least one `\n`-terminated line: answers are framed, partial lines wait.
    session: bool,
    /// When the incomplete query now in `inbuf` began.
    partial_since: Option<Instant>,
    last_byte: Instant,
    last_activity: Instant,
    /// Names registered on this session (released when it closes).
    owned: HashSet<String>,
    close_after_flush: bool,
    /// Earliest deadline of this connection already in the timer heap.
    scheduled: Option<Instant>,
    eof: bool,
    /// Registered for writable events (only while output waits for socket space:
    /// permanent interest would wake the loop after every ACK).
    want_write: bool,
}

impl Conn {
    fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }
}

/// What every loop shares.
pub(super) struct Shared {
    pub config: RegistryConfig,
    pub hook: Option<RegistryHook>,
    pub directory: Arc<Directory>,
    pub stop: AtomicBool,
    /// Open connections across all loops (for `max_connections`).
    pub open: AtomicUsize,
    /// Connection ids, unique across loops (session ownership is keyed by them).
    pub next_id: AtomicU64,
}

/// Where loop 0 sends a connection for another loop.
pub(super) struct Handoff {
    pub tx: Sender<(TcpStream, SocketAddr)>,
    pub waker: Arc<Waker>,
}

pub(super) struct Server {
    poll: Poll,
    /// Loop 0 only: the listener, and every loop's hand-off (its own included).
    listener: Option<TcpListener>,
    handoffs: Vec<Handoff>,
    next_loop: usize,
    inbox: Receiver<(TcpStream, SocketAddr)>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    shared: Arc<Shared>,
    scratch: Vec<u8>,
}

impl Server {
    /// A loop and the hand-off other loops (well, loop 0) use to give it connections.
    pub fn new(shared: Arc<Shared>) -> io::Result<(Server, Handoff)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, inbox) = crossbeam_channel::unbounded();
        let server = Server {
            poll,
            listener: None,
            handoffs: Vec::new(),
            next_loop: 0,
            inbox,
            conns: Vec::new(),
            free: Vec::new(),
            timers: BinaryHeap::new(),
            shared,
            scratch: vec![0; READ_CHUNK],
        };
        Ok((server, Handoff { tx, waker }))
    }

    /// Make this loop the accepting one.
    pub fn accept_on(
        &mut self,
        mut listener: TcpListener,
        handoffs: Vec<Handoff>,
    ) -> io::Result<()> {
        self.poll
            .registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        self.listener = Some(listener);
        self.handoffs = handoffs;
        Ok(())
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        while !self.shared.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let mut wake_at = next_sweep;
            if let Some(Reverse((t, _, _))) = self.timers.peek() {
                wake_at = wake_at.min(*t);
            }
            let timeout = wake_at.saturating_duration_since(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("registry poll failed: {e}");
                break;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => self.take_handoffs(),
                    Token(idx) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(idx, event.is_read_closed() || event.is_error());
                        }
                        if event.is_writable() {
                            self.on_writable(idx);
                        }
                    }
                }
            }
            let now = Instant::now();
            self.fire_timers(now);
            if now >= next_sweep {
                // Every loop moves its clock on (else its poll timeout stays 0 and it
                // spins); only loop 0, the accepting one, sweeps the shared leases.
                next_sweep = now + SWEEP_EVERY;
                if self.listener.is_some() {
                    let lease = self.shared.config.legacy_lease;
                    let expired = self.shared.directory.expire_leases(now, lease);
                    if !expired.is_empty() {
                        self.emit(|| RegistryEvent::LeaseExpired { usernames: expired });
                    }
                }
            }
        }
    }

    fn emit(&self, event: impl FnOnce() -> RegistryEvent) {
        if let Some(hook) = &self.shared.hook {
            crate::thread::call_hook(|| hook(&event()));
        }
    }

    fn accept_all(&mut self) {
        // Out of `self` while accepting, so a connection can be added to this loop.
        let Some(listener) = self.listener.take() else {
            return;
        };
        self.accept_from(&listener);
        self.listener = Some(listener);
    }

    fn accept_from(&mut self, listener: &TcpListener) {
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    let open = self.shared.open.fetch_add(1, Ordering::SeqCst);
                    if open >= self.shared.config.max_connections {
                        self.shared.open.fetch_sub(1, Ordering::SeqCst);
                        // Best effort: a fresh socket's send buffer takes this at once.
                        let _ = stream.write_all(format!("ERR,{}\n", reason::BUSY).as_bytes());
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    crate::net::set_keepalive(&stream);
                    let target = self.next_loop % self.handoffs.len().max(1);
                    self.next_loop = self.next_loop.wrapping_add(1);
                    match self.handoffs.get(target) {
                        Some(h) if target != 0 => {
                            if h.tx.send((stream, peer)).is_ok() {
                                let _ = h.waker.wake();
                            } else {
                                self.shared.open.fetch_sub(1, Ordering::SeqCst);
                            }
                        }
                        _ => self.add_conn(stream, peer),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log and try again on the next event rather
                    // than spin; the listener stays registered.
                    log::warn!("registry accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn take_handoffs(&mut self) {
        while let Ok((stream, peer)) = self.inbox.try_recv() {
            self.add_conn(stream, peer);
        }
    }

    fn add_conn(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        let idx = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(idx), Interest::READABLE)
        {
            log::warn!("registry could not register a connection: {e}");
            self.free.push(idx);
            self.shared.open.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let now = Instant::now();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.conns[idx] = Some(Conn {
            id,
            stream,
            peer,
            inbuf: Vec::new(),
            scanned: 0,
            out: Vec::new(),
            out_pos: 0,
            session: false,
            partial_since: None,
            last_byte: now,
            last_activity: now,
            owned: HashSet::new(),
            close_after_flush: false,
            scheduled: None,
            eof: false,
            want_write: false,
        });
        self.emit(|| RegistryEvent::Connected { source: peer });
        self.schedule(idx);
        // Edge-triggered: bytes may already be waiting.
        self.on_readable(idx, false);
    }

    /// `closing`: the event said the peer closed (or errored), so read until the end
    /// instead of stopping at a short read.
    fn on_readable(&mut self, idx: usize, closing: bool) {
        loop {
            let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                return;
            };
            let mut drained = false;
            let mut got = false;
            // Read until the kernel has no more (edge-triggered), or a full line is
            // buffered, or output is backed up; in the last two cases the rest waits in
            // the kernel (TCP flow control) and this loop comes back for it.
            while !conn.eof
                && conn.inbuf.len() <= MAX_LINE_LEN
                && conn.pending_out() <= OUT_HIGH_WATER
            {
                match conn.stream.read(&mut self.scratch) {
                    Ok(0) => conn.eof = true,
                    Ok(n) => {
                        conn.inbuf.extend_from_slice(&self.scratch[..n]);
                        got = true;
                        // A short read emptied the socket; anything arriving later
                        // raises a new edge, so skip the read that would only say
                        // WouldBlock (one syscall less per query).
                        if n < self.scratch.len() && !closing {
                            drained = true;
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        drained = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        self.close(idx);
                        return;
                    }
                }
            }
            if got {
                let now = Instant::now();
                conn.last_byte = now;
                conn.last_activity = now;
            }
            self.process(idx);
            match self.conns.get(idx) {
                Some(Some(c))
                    if !drained
                        && !c.eof
                        && !c.close_after_flush
                        && c.pending_out() <= OUT_HIGH_WATER => {}
                _ => return,
            }
        }
    }

    fn on_writable(&mut self, idx: usize) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let was_backed_up = conn.pending_out() > OUT_HIGH_WATER;
        self.flush(idx);
        let resume = matches!(self.conns.get(idx), Some(Some(c)) if was_backed_up && c.pending_out() <= OUT_HIGH_WATER);
        if resume {
            self.on_readable(idx, false);
        }
    }

    /// Answer every complete line in the input buffer, then decide what the rest is.
    fn process(&mut self, idx: usize) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        // Work on the buffer outside the connection so `answer` can borrow the server;
        // consumed lines are removed with one drain at the end, not one per line.
        let mut buf = std::mem::take(&mut conn.inbuf);
        let mut scan = conn.scanned;
        let mut start = 0;
        loop {
            let Some(Some(conn)) = self.conns.get(idx) else {
                return;
            };
            if conn.close_after_flush || conn.pending_out() > OUT_HIGH_WATER {
                break;
            }
            let Some(pos) = memchr(b'\n', &buf[scan..]) else {
                scan = buf.len();
                break;
            };
            let end = scan + pos;
            if let Some(Some(conn)) = self.conns.get_mut(idx) {
                conn.session = true;
                conn.partial_since = None;
            }
            self.answer(idx, &buf[start..end], false);
            start = end + 1;
            scan = start;
        }
        buf.drain(..start);
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        conn.scanned = scan - start;
        conn.inbuf = buf;
        if conn.inbuf.is_empty() {
            conn.partial_since = None;
        } else if conn.inbuf.len() > MAX_LINE_LEN {
            self.refuse_and_close(idx, reason::LINE_TOO_LONG);
            return;
        } else if !conn.close_after_flush {
            conn.partial_since.get_or_insert(conn.last_byte);
            let whole_legacy = !conn.session
                && (conn.eof
                    || (conn.inbuf.len() <= LEGACY_FAST_MAX && parse_query(&conn.inbuf).is_ok()));
            if whole_legacy {
                self.take_legacy_query(idx);
            }
        }
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if conn.eof && conn.pending_out() == 0 {
            self.close(idx);
            return;
        }
        if conn.eof {
            conn.close_after_flush = true;
        }
        self.flush(idx);
        self.schedule(idx);
    }

    fn take_legacy_query(&mut self, idx: usize) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let line = std::mem::take(&mut conn.inbuf);
        conn.scanned = 0;
        conn.partial_since = None;
        self.answer(idx, &line, true);
    }

    /// Answer one query into the connection's output buffer.
    fn answer(&mut self, idx: usize, line: &[u8], legacy: bool) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        conn.last_activity = Instant::now();
        let caller = Caller {
            conn: conn.id,
            ip: conn.peer.ip(),
            session: !legacy,
        };
        if legacy {
            // The original client never says it is still there; its queries do.
            self.shared.directory.legacy_activity(caller.ip);
        }
        let start = conn.out.len();
        let parsed = parse_query(line);
        let is_get_af = matches!(parsed, Ok(Query::GetAllFiles));
        let result = parsed.and_then(|q| {
            execute(
                &self.shared.directory,
                caller,
                q,
                &mut conn.out,
                &mut conn.owned,
            )
        });
        let mut empty_af = false;
        match result {
            Ok(users) => empty_af = is_get_af && users == 0,
            Err(e) => {
                conn.out.extend_from_slice(b"ERR,");
                conn.out.extend_from_slice(e.0.as_bytes());
            }
        }
        if !legacy {
            // Session framing: every answer ends with `\n`; a `GET_AF` answer also ends
            // with an empty line (user lines are never empty).
            // A non-empty `GET_AF` text already ends with `\n`, so one more makes the
            // empty line; an empty one needs both.
            if is_get_af && empty_af {
                conn.out.push(b'\n');
            }
            conn.out.push(b'\n');
        }
        if self.shared.hook.is_some() {
            let peer = conn.peer;
            let answer = &conn.out[start..];
            let first = answer.split(|&b| b == b'\n').next().unwrap_or_default();
            let outcome = truncate(&String::from_utf8_lossy(first), 120).to_string();
            let query = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
            self.emit(|| RegistryEvent::Query {
                at: SystemTime::now(),
                source: peer,
                query,
                outcome,
                legacy,
            });
        }
    }

    fn refuse_and_close(&mut self, idx: usize, why: &str) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        conn.out
            .extend_from_slice(format!("ERR,{why}\n").as_bytes());
        conn.inbuf = Vec::new();
        conn.scanned = 0;
        conn.partial_since = None;
        conn.close_after_flush = true;
        let peer = conn.peer;
        self.emit(|| RegistryEvent::Query {
            at: SystemTime::now(),
            source: peer,
            query: String::from("(incomplete query)"),
            outcome: format!("ERR,{why}"),
            legacy: false,
        });
        self.flush(idx);
    }

    fn flush(&mut self, idx: usize) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        while conn.out_pos < conn.out.len() {
            match conn.stream.write(&conn.out[conn.out_pos..]) {
                Ok(0) => {
                    self.close(idx);
                    return;
                }
                Ok(n) => conn.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !conn.want_write {
                        conn.want_write = true;
                        let interest = Interest::READABLE | Interest::WRITABLE;
                        if self
                            .poll
                            .registry()
                            .reregister(&mut conn.stream, Token(idx), interest)
                            .is_err()
                        {
                            self.close(idx);
                        }
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(idx);
                    return;
                }
            }
        }
        conn.out.clear();
        conn.out_pos = 0;
        if conn.want_write {
            conn.want_write = false;
            let _ =
                self.poll
                    .registry()
                    .reregister(&mut conn.stream, Token(idx), Interest::READABLE);
        }
        if conn.out.capacity() > OUT_HIGH_WATER {
            conn.out.shrink_to(READ_CHUNK);
        }
        if conn.close_after_flush {
            self.close(idx);
        }
    }

    fn close(&mut self, idx: usize) {
        let Some(mut conn) = self.conns.get_mut(idx).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.free.push(idx);
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
        let released = self.shared.directory.release_session(conn.id, &conn.owned);
        let source = conn.peer;
        drop(conn);
        self.emit(|| RegistryEvent::Disconnected { source, released });
    }

    /// The next moment something must happen on this connection by itself.
    fn deadline(&self, conn: &Conn) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut earliest = |t: Instant| d = Some(d.map_or(t, |d: Instant| d.min(t)));
        if let Some(since) = conn.partial_since {
            earliest(since + self.shared.config.query_timeout);
            if !conn.session {
                earliest(conn.last_byte + self.shared.config.legacy_grace);
            }
        }
        if conn.owned.is_empty() && !conn.close_after_flush {
            earliest(conn.last_activity + self.shared.config.idle_timeout);
        }
        d
    }

    fn schedule(&mut self, idx: usize) {
        let Some(Some(conn)) = self.conns.get(idx) else {
            return;
        };
        let Some(d) = self.deadline(conn) else {
            return;
        };
        let id = conn.id;
        let Some(Some(conn)) = self.conns.get_mut(idx) else {
            return;
        };
        if conn.scheduled.is_none_or(|s| d < s) {
            conn.scheduled = Some(d);
            self.timers.push(Reverse((d, idx, id)));
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((t, idx, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(Some(conn)) = self.conns.get_mut(idx) else {
                continue;
            };
            if conn.id != id || conn.scheduled != Some(t) {
                continue; // stale entry
            }
            conn.scheduled = None;
            self.on_deadline(idx, now);
            self.schedule(idx);
        }
    }

    fn on_deadline(&mut self, idx: usize, now: Instant) {
        let Some(Some(conn)) = self.conns.get(idx) else {
            return;
        };
        if let Some(since) = conn.partial_since {
            if now >= since + self.shared.config.query_timeout {
                self.refuse_and_close(idx, reason::TIMED_OUT);
                return;
            }
            if !conn.session && now >= conn.last_byte + self.shared.config.legacy_grace {
                self.take_legacy_query(idx);
                self.flush(idx);
                return;
            }
        }
        if conn.owned.is_empty() && now >= conn.last_activity + self.shared.config.idle_timeout {
            self.refuse_and_close(idx, reason::TIMED_OUT);
        }
    }
}

/// Run one parsed query against the directory, writing the answer's text (without the
/// session terminator) into `out`. Returns the number of users for `GET_AF`.
fn execute(
    directory: &Directory,
    caller: Caller,
    query: Query<'_>,
    out: &mut Vec<u8>,
    owned: &mut HashSet<String>,
) -> Result<usize, QueryError> {
    match query {
        Query::Init {
            username,
            port,
            files,
            ..
        } => {
            let outcome = directory.init(caller, username, port, &files)?;
            if caller.session && !owned.contains(username) {
                owned.insert(username.to_string());
            }
            out.extend_from_slice(match outcome {
                InitOutcome::Registered => b"OK",
                InitOutcome::Updated => b"UP",
            });
        }
        Query::Exit { username } => {
            directory.exit(caller, username)?;
            owned.remove(username);
            out.extend_from_slice(b"OK");
        }
        Query::GetUsers => directory.write_usernames(out),
        Query::GetPeer { username } => directory.write_peer(username, out)?,
        Query::GetUserFiles { username } => directory.write_user_files(username, out)?,
        Query::GetAllFiles => return Ok(directory.write_all_files(out)),
    }
    Ok(0)
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}
