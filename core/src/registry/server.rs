//! The registry's event loops: accept connections, frame queries, answer them.
//!
//! One loop per core (each a thread with its own mio `Poll`), non-blocking sockets,
//! edge-triggered. Loop 0 owns the listener and hands accepted connections round-robin
//! to every loop (itself included) over a channel plus a waker; a connection then stays
//! on its loop for life. All loops share the one [`Directory`]. Each connection has an
//! input buffer (at most one query line plus what one read brings) and an output queue
//! of owned and shared chunks (a `GET_AF` text is one shared buffer however many
//! connections queue it); deadlines (legacy grace, slowloris, idle, slow reader, query
//! rate, lingering) sit in a min-heap so a wake-up costs O(log n), not a scan of every
//! connection.
//!
//! Hostile clients: a connection answers at most [`BATCH`] queries per turn before the
//! others get theirs; one over its address's query rate is not read until its tokens
//! refill (TCP backpressure, no answer); one whose unsent output passes
//! `max_unsent_per_conn` is not read until it drains, and is closed when the socket
//! takes none of its output for `slow_reader_deadline`. A refusal is an `ERR` line, then
//! `shutdown(Write)` and a short linger reading what the client still sends, so the
//! close is a FIN the client can read the line before, not a reset.
//!
//! Encrypted sessions: a connection whose first line is a `REG/2` marker gets a
//! [`Secure`] state. Its bytes go to a [`FrameBuffer`]; the handshake runs one frame at
//! a time (it must finish within `query_timeout`), then every record is opened into the
//! input buffer, where the same line parser as for a plaintext session takes them.
//! Answers are queued as plaintext, exactly as for a plaintext session (a shared
//! `GET_AF` text stays one shared copy), and sealed lazily: the next record (at most
//! [`MAX_RECORD_PLAINTEXT`] bytes) is encrypted only when the socket has taken the
//! previous one, so an encrypted connection holds at most one record of ciphertext
//! besides what any connection holds. A record failing authentication closes the
//! connection at once (nothing can be answered on a broken link).
//!
//! Reaching peers (`docs/PROTOCOL.md` §5): `WATCH`, `CONNECT`, `RELAY` and `PUNCH` are taken
//! only as session lines on encrypted sessions (see `signal`). A keyed `INIT` that
//! lists a user at a new address hands a check to the prober thread; its outcomes come
//! back to loop 0 (`take_checks`). A watch session stays on its loop; pushes for it are
//! posted to that loop's mailbox by whichever thread makes them (see `watch`) and
//! queued on the connection like answers, at most `WATCH_MAX_UNSENT` of them unsent.

use super::claims::{Claim, Claims};
use super::directory::{Caller, Directory, InitOutcome, Listed};
use super::prober::{Checked, Job, Overflow, ProbeQueue};
use super::signal::{parse_signal, Signal, SignalBudget};
use super::store::redis::RedisStore;
use super::watch::{Mailbox, Post, Watcher, Watches};
use super::{address_key, RegistryConfig, RegistryEvent, RegistryHook};
use crate::identity::{Identity, PublicKey};
use crate::limits::{
    LEGACY_FAST_MAX, MAX_LINE_LEN, RELAY_TOKEN_TTL, SIGNALS_PER_MINUTE_PER_ADDR, WATCH_MAX_UNSENT,
};
use crate::protocol::{parse_query, reason, truncate, Query, QueryError};
use crate::reach::{Push, Reach};
use crate::secure::{FrameBuffer, Kind, Marker, Responder, Transport, MAX_RECORD_PLAINTEXT};
use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// A sealed-output buffer larger than this is given back once written out (an idle
/// encrypted connection keeps no record-sized buffer).
const WIRE_KEEP: usize = 4096;
/// Longest time between two refreshes of the claims of names registered now (a
/// quarter of the claim TTL when that is shorter).
const CLAIM_REFRESH_MAX: Duration = Duration::from_secs(3600);

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);
const READ_CHUNK: usize = 64 * 1024;
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Queries one connection may have answered in one turn before the loop serves the
/// others (a pipelining client cannot hold its loop).
const BATCH: usize = 64;
/// A connection over its address's query rate waits until this many tokens are there.
const RESUME_TOKENS: f64 = 16.0;
/// Shared answers smaller than this are copied into the connection's own buffer (one
/// chunk fewer to write; the copy is cheaper than the bookkeeping).
const SHARE_MIN: usize = 4096;
/// How long a refused or closing connection is kept (reading and discarding what the
/// client still sends) so its `ERR` line arrives before a FIN, not a reset.
const LINGER: Duration = Duration::from_secs(1);
/// Most bytes read and dropped from one lingering connection before it is closed.
const LINGER_MAX_BYTES: usize = 256 * 1024;
/// Most refused connections lingering at once (beyond it they are closed at once). Part
/// of the descriptor headroom, see [`super::FD_HEADROOM`].
pub(super) const MAX_LINGERING: usize = 64;
/// After this many bytes of registrations and buffers are freed, loop 0 asks the
/// allocator to give free pages back to the system (`malloc_trim`).
const TRIM_AFTER: usize = 4 * 1024 * 1024;
/// How soon to try `accept` again after it failed (EMFILE and friends): the listener
/// is edge-triggered, so waiting for the next connection could wait forever.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// One piece of a connection's unsent output.
enum Chunk {
    Own(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Own(v) => v,
            Chunk::Shared(a) => a,
        }
    }
}

/// A connection's unsent output: owned answers appended to an owned chunk, shared ones
/// queued by reference.
#[derive(Default)]
struct Output {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    pos: usize,
    /// Unsent bytes (a shared chunk counts whole for each holder).
    pending: usize,
    /// A written-out owned chunk kept for the next answer (one allocation less per
    /// query on a busy connection).
    spare: Option<Vec<u8>>,
}

impl Output {
    fn push_bytes(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.pending += bytes.len();
        if let Some(Chunk::Own(v)) = self.chunks.back_mut() {
            v.extend_from_slice(bytes);
        } else {
            let mut v = self.spare.take().unwrap_or_default();
            v.extend_from_slice(bytes);
            self.chunks.push_back(Chunk::Own(v));
        }
    }

    fn push_shared(&mut self, text: Arc<[u8]>) {
        if text.len() < SHARE_MIN {
            self.push_bytes(&text);
        } else {
            self.pending += text.len();
            self.chunks.push_back(Chunk::Shared(text));
        }
    }

    /// Mark `n` bytes of the front as written.
    fn advance(&mut self, n: usize) {
        self.pending -= n;
        self.pos += n;
        if let Some(front) = self.chunks.front() {
            if self.pos >= front.bytes().len() {
                if let Some(Chunk::Own(mut v)) = self.chunks.pop_front() {
                    if v.capacity() <= READ_CHUNK {
                        v.clear();
                        self.spare = Some(v);
                    }
                }
                self.pos = 0;
            }
        }
    }

    fn front(&self) -> Option<&[u8]> {
        self.chunks.front().map(|c| &c.bytes()[self.pos..])
    }
}

/// Where an encrypted connection's handshake is.
enum SecState {
    Handshake(Box<Responder>),
    Open(Transport),
    /// Between the two, for a moment (and after a failure: the link is closed).
    Broken,
}

/// An encrypted connection's link state.
struct Secure {
    state: SecState,
    /// Bytes read from the socket, not yet a whole frame (or not yet opened).
    frames: FrameBuffer,
    /// Bytes for the socket before anything in `Conn::out`: the handshake answer, then
    /// one sealed record at a time; `wire[wire_pos..]` is unsent.
    wire: Vec<u8>,
    wire_pos: usize,
    /// `OK` and handshake message 2 are queued: from now on the client reads frames,
    /// so a refusal can no longer be a plaintext `ERR` line.
    answered: bool,
    /// When the handshake must have finished.
    handshake_until: Option<Instant>,
}

impl Secure {
    fn wire_left(&self) -> usize {
        self.wire.len() - self.wire_pos
    }
}

struct Conn {
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
    /// This connection's address's rate budgets (queries, connection requests).
    rates: Arc<AddrRates>,
    inbuf: Vec<u8>,
    /// How far `inbuf` has been searched for `\n`.
    scanned: usize,
    out: Output,
    /// Since when unsent output has waited without the socket taking any of it.
    out_stalled_since: Option<Instant>,
    /// Has sent at least one `\n`-terminated line: answers are framed, partial lines wait.
    session: bool,
    /// When the incomplete query now in `inbuf` began.
    partial_since: Option<Instant>,
    last_byte: Instant,
    last_activity: Instant,
    /// Names registered on this session (released when it closes).
    owned: HashSet<String>,
    close_after_flush: bool,
    /// Over its address's query rate: not read nor answered until then.
    throttled_until: Option<Instant>,
    /// Answered a whole batch this turn; continues from the ready list.
    yielded: bool,
    /// Refused or done: output flushed and write side shut; input is read and dropped
    /// until EOF or this deadline, then the socket is closed.
    linger_until: Option<Instant>,
    /// Bytes read and dropped while lingering.
    lingered: usize,
    /// Counted in `Shared::open` and its address's connections (refused ones are not).
    counted: bool,
    /// Earliest deadline of this connection already in the timer heap.
    scheduled: Option<Instant>,
    eof: bool,
    /// Registered for writable events (only while output waits for socket space:
    /// permanent interest would wake the loop after every ACK).
    want_write: bool,
    /// The first line was looked at (a `REG/2` marker or not).
    first_line_seen: bool,
    /// The encrypted link, for a connection that opened with a marker.
    sec: Option<Box<Secure>>,
    /// The client's key, proven by a finished handshake.
    key: Option<PublicKey>,
    /// A watch session: the user whose pushes it receives. It answers no more
    /// queries, and has no idle timeout (it is closed when the user's registration
    /// ends).
    watch: Option<Box<str>>,
    /// What is left of this session's `CONNECT`/`RELAY` budget (made at the first).
    signals: Option<SignalBudget>,
}

impl Conn {
    /// Output not yet taken by the socket: queued plaintext and sealed bytes.
    fn unsent(&self) -> usize {
        self.out.pending + self.sec.as_ref().map_or(0, |s| s.wire_left())
    }

    /// Bytes read but not yet parsed: the input buffer and unopened frames.
    fn unparsed(&self) -> usize {
        self.inbuf.len() + self.sec.as_ref().map_or(0, |s| s.frames.pending())
    }
}

/// A token bucket for one address's queries.
#[derive(Debug)]
pub(super) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32) -> Bucket {
        Bucket {
            tokens: f64::from(burst.max(1)),
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant, rate: u32, burst: u32) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst.max(1)));
        self.at = now;
    }

    /// Take one token, or say how long to wait. The wait is for [`RESUME_TOKENS`]
    /// (at most the burst), not one: a flooding connection is then woken, read and
    /// answered a handful of queries at a time rather than once per token.
    fn take(&mut self, now: Instant, rate: u32, burst: u32) -> Result<(), Duration> {
        self.refill(now, rate, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let want = RESUME_TOKENS.min(f64::from(burst.max(1)));
            Err(Duration::from_secs_f64(
                (want - self.tokens) / f64::from(rate),
            ))
        }
    }
}

/// What the registry keeps per source address (per /64 for IPv6).
pub(super) struct AddrState {
    conns: usize,
    rates: Arc<AddrRates>,
}

/// One address's rate budgets, shared by all its connections on every loop.
pub(super) struct AddrRates {
    /// Queries (`queries_per_sec_per_addr`).
    queries: Mutex<Bucket>,
    /// `CONNECT`, `RELAY` and `PUNCH` ([`SIGNALS_PER_MINUTE_PER_ADDR`]): the
    /// per-session budget alone would let one address with many sessions multiply it.
    signals: Mutex<SignalBudget>,
}

impl AddrRates {
    fn full(query_burst: u32, now: Instant) -> AddrRates {
        AddrRates {
            queries: Mutex::new(Bucket::full(query_burst)),
            signals: Mutex::new(SignalBudget::new(SIGNALS_PER_MINUTE_PER_ADDR, now)),
        }
    }
}

/// What every loop shares.
pub(super) struct Shared {
    pub config: RegistryConfig,
    /// The connection cap in force: `config.max_connections`, lowered to fit under the
    /// descriptor limit.
    pub max_connections: usize,
    pub hook: Option<RegistryHook>,
    pub directory: Arc<Directory>,
    pub stop: AtomicBool,
    /// Open connections across all loops (for `max_connections`).
    pub open: AtomicUsize,
    /// Refused connections lingering (for [`MAX_LINGERING`]).
    pub lingering: AtomicUsize,
    /// Connection ids, unique across loops (session ownership is keyed by them).
    pub next_id: AtomicU64,
    /// Per-address connection counts and query buckets.
    pub addrs: Mutex<HashMap<IpAddr, AddrState>>,
    /// Bytes of connection buffers freed since loop 0 last trimmed.
    pub freed: AtomicUsize,
    /// The registry's static key for encrypted sessions.
    pub identity: Identity,
    /// Name claims (see `claims`).
    pub claims: Claims,
    /// The shared store, when the directory lives in Redis (`None`: memory only). The
    /// directory above is then this node's replica: reads answer from it, writes go
    /// through the store.
    pub store: Option<Arc<RedisStore>>,
    /// The relay offered to peers that cannot reach each other (`RELAY` queries);
    /// `None`: no relay.
    pub relay: Option<crate::relay::RelayOffer>,
    /// Watch sessions, and the delivery of pushes to them (see `watch`).
    pub watches: Arc<Watches>,
    /// Where reachability checks are handed to the prober thread.
    pub probes: ProbeQueue,
}

impl Shared {
    fn rate_limited(&self) -> bool {
        self.config.queries_per_sec_per_addr > 0
    }
}

/// A connection on its way to a loop: its stream, peer and its address's rate budgets.
type Accepted = (TcpStream, SocketAddr, Arc<AddrRates>);

/// Where loop 0 sends a connection for another loop.
pub(super) struct Handoff {
    pub tx: Sender<Accepted>,
    pub waker: Arc<Waker>,
}

/// A loop's poller and channels, made before the state every loop shares (which holds
/// the mailboxes other loops post to).
pub(super) struct LoopParts {
    poll: Poll,
    waker: Arc<Waker>,
    tx: Sender<Accepted>,
    inbox: Receiver<Accepted>,
    posts: Receiver<Post>,
    queued: Arc<AtomicUsize>,
}

impl LoopParts {
    /// A loop's parts, and the mailbox others post pushes to it through.
    pub fn new() -> io::Result<(LoopParts, Mailbox)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, inbox) = crossbeam_channel::unbounded();
        let (post_tx, posts) = crossbeam_channel::unbounded();
        let queued = Arc::new(AtomicUsize::new(0));
        let mailbox = Mailbox {
            tx: post_tx,
            waker: waker.clone(),
            queued: queued.clone(),
        };
        let parts = LoopParts {
            poll,
            waker,
            tx,
            inbox,
            posts,
            queued,
        };
        Ok((parts, mailbox))
    }
}

pub(super) struct Server {
    poll: Poll,
    /// Loop 0 only: the listener, and every loop's hand-off (its own included).
    listener: Option<TcpListener>,
    handoffs: Vec<Handoff>,
    next_loop: usize,
    accept_retry_at: Option<Instant>,
    inbox: Receiver<Accepted>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Connections that yielded after a batch, to continue after the next poll.
    ready: Vec<(usize, u64)>,
    shared: Arc<Shared>,
    scratch: Vec<u8>,
    /// One answer being built (copied into the connection's output when done).
    answer_buf: Vec<u8>,
    /// Freed bytes counted towards the next `malloc_trim` (loop 0).
    trim_debt: usize,
    /// Loop 0: when the claims of names registered now are next marked used.
    next_claim_refresh: Instant,
    /// This loop's index (where watch sessions on it are found).
    loop_idx: usize,
    /// Pushes and watch ends posted to this loop (see `watch`).
    posts: Receiver<Post>,
    /// Pushes in `posts` not yet taken.
    queued: Arc<AtomicUsize>,
    /// Loop 0: outcomes of reachability checks from the prober thread.
    results: Option<Receiver<Checked>>,
}

impl Server {
    /// Loop number `loop_idx` and the hand-off other loops (well, loop 0) use to give
    /// it connections.
    pub fn new(shared: Arc<Shared>, parts: LoopParts, loop_idx: usize) -> (Server, Handoff) {
        let LoopParts {
            poll,
            waker,
            tx,
            inbox,
            posts,
            queued,
        } = parts;
        let server = Server {
            poll,
            listener: None,
            handoffs: Vec::new(),
            next_loop: 0,
            accept_retry_at: None,
            inbox,
            conns: Vec::new(),
            free: Vec::new(),
            timers: BinaryHeap::new(),
            ready: Vec::new(),
            shared,
            scratch: vec![0; READ_CHUNK],
            answer_buf: Vec::new(),
            trim_debt: 0,
            next_claim_refresh: Instant::now(),
            loop_idx,
            posts,
            queued,
            results: None,
        };
        (server, Handoff { tx, waker })
    }

    /// Make this loop the one that takes the prober's outcomes.
    pub fn report_checks(&mut self, results: Receiver<Checked>) {
        self.results = Some(results);
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
            if let Some(t) = self.accept_retry_at {
                wake_at = wake_at.min(t);
            }
            let timeout = if self.ready.is_empty() {
                wake_at.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
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
                    WAKER => {
                        self.take_handoffs();
                        self.take_posts();
                        self.take_checks();
                    }
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
            for (idx, id) in std::mem::take(&mut self.ready) {
                if let Some(Some(c)) = self.conns.get_mut(idx) {
                    if c.id == id && c.yielded {
                        c.yielded = false;
                        self.on_readable(idx, false);
                    }
                }
            }
            let now = Instant::now();
            self.fire_timers(now);
            if self.accept_retry_at.is_some_and(|t| now >= t) {
                self.accept_retry_at = None;
                self.accept_all();
            }
            if now >= next_sweep {
                // Every loop moves its clock on (else its poll timeout stays 0 and it
                // spins); only loop 0, the accepting one, sweeps the shared state.
                next_sweep = now + SWEEP_EVERY;
                if self.listener.is_some() {
                    self.sweep(now);
                }
            }
        }
    }

    /// Loop 0, once a second: expire leases, forget idle addresses, drop stale rendered
    /// answers, and give freed memory back to the system after large releases.
    fn sweep(&mut self, now: Instant) {
        if now >= self.next_claim_refresh {
            // A name registered now is in use: its claim must not lapse under a long
            // session (a crash would skip the touch at the session's end).
            let every = (self.shared.config.claim_ttl / 4).min(CLAIM_REFRESH_MAX);
            self.next_claim_refresh = now + every;
            let mut keyed = self.shared.directory.keyed_names();
            if self.shared.store.is_some() {
                // With a shared store each node renews only its own sessions' claims
                // (the replica also lists every other node's users).
                keyed.retain(|(n, _)| self.shared.directory.listed(n).is_some());
            }
            if !keyed.is_empty() {
                let pairs = keyed.iter().map(|(n, k)| (&**n, k));
                if let Err(e) = self.shared.claims.touch_pairs(pairs, SystemTime::now()) {
                    log::warn!("registry: could not record the claims' use: {e}");
                }
            }
        }
        for user in self.shared.probes.retry(&self.shared.directory, now) {
            log::warn!(
                "registry: {user}'s listener was not checked in time: its reach stays unknown"
            );
        }
        let lease = self.shared.config.legacy_lease;
        // With a shared store, leases lapse there (the store's sync thread reaps them).
        let expired = match self.shared.store {
            None => self.shared.directory.expire_leases(now, lease),
            Some(_) => Vec::new(),
        };
        if !expired.is_empty() {
            self.emit(|| RegistryEvent::LeaseExpired { usernames: expired });
        }
        let (rate, burst) = (
            self.shared.config.queries_per_sec_per_addr,
            self.shared.config.query_burst_per_addr,
        );
        // An address without connections is forgotten once its budgets are full again
        // (forgetting it earlier would hand a reconnecting flooder a fresh burst).
        self.shared.addrs.lock().retain(|_, a| {
            if a.conns > 0 {
                return true;
            }
            let mut b = a.rates.queries.lock();
            b.refill(now, rate, burst);
            (rate > 0 && b.tokens < f64::from(burst.max(1))) || !a.rates.signals.lock().is_full(now)
        });
        self.trim_debt += self.shared.directory.take_released()
            + self.shared.directory.drop_stale_renders()
            + self.shared.freed.swap(0, Ordering::Relaxed);
        if self.trim_debt >= TRIM_AFTER {
            self.trim_debt = 0;
            release_free_memory();
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
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    match self.admit_conn(peer) {
                        Ok(bucket) => self.hand_off(stream, peer, bucket),
                        Err(why) => self.refuse_at_accept(stream, peer, why),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends (the cap keeps descriptors in reserve, but the
                    // embedding process may use them): try again shortly rather than
                    // spin or wait for an edge that may never come.
                    log::warn!("registry accept failed: {e}");
                    self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Count a new connection against the global and per-address caps.
    fn admit_conn(&self, peer: SocketAddr) -> Result<Arc<AddrRates>, &'static str> {
        let cfg = &self.shared.config;
        let mut addrs = self.shared.addrs.lock();
        let state = addrs
            .entry(address_key(peer.ip()))
            .or_insert_with(|| AddrState {
                conns: 0,
                rates: Arc::new(AddrRates::full(cfg.query_burst_per_addr, Instant::now())),
            });
        if state.conns >= cfg.max_conns_per_addr {
            return Err(reason::TOO_MANY_CONNECTIONS);
        }
        let open = self.shared.open.fetch_add(1, Ordering::SeqCst);
        if open >= self.shared.max_connections {
            self.shared.open.fetch_sub(1, Ordering::SeqCst);
            return Err(reason::BUSY);
        }
        state.conns += 1;
        Ok(state.rates.clone())
    }

    fn hand_off(&mut self, stream: TcpStream, peer: SocketAddr, rates: Arc<AddrRates>) {
        crate::net::set_keepalive(&stream);
        let target = self.next_loop % self.handoffs.len().max(1);
        self.next_loop = self.next_loop.wrapping_add(1);
        match self.handoffs.get(target) {
            Some(h) if target != 0 => {
                if h.tx.send((stream, peer, rates)).is_ok() {
                    let _ = h.waker.wake();
                } else {
                    self.uncount(peer);
                }
            }
            _ => {
                self.add_conn(stream, peer, rates, true);
            }
        }
    }

    fn uncount(&self, peer: SocketAddr) {
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
        if let Some(a) = self.shared.addrs.lock().get_mut(&address_key(peer.ip())) {
            a.conns = a.conns.saturating_sub(1);
        }
    }

    /// Refuse a connection at accept: the `ERR` line, then linger (see the module notes)
    /// if the lingering set has room, else close at once.
    fn refuse_at_accept(&mut self, mut stream: TcpStream, peer: SocketAddr, why: &'static str) {
        let line = format!("ERR,{why}\n");
        self.emit(|| RegistryEvent::Refused {
            source: peer,
            outcome: format!("ERR,{why}"),
        });
        if self.shared.lingering.fetch_add(1, Ordering::SeqCst) >= MAX_LINGERING {
            self.shared.lingering.fetch_sub(1, Ordering::SeqCst);
            // Best effort: a fresh socket's send buffer takes this at once.
            let _ = stream.write_all(line.as_bytes());
            let _ = stream.shutdown(Shutdown::Write);
            return;
        }
        // A refused connection is never read: its budgets are never used.
        let rates = Arc::new(AddrRates::full(1, Instant::now()));
        let Some(idx) = self.add_conn(stream, peer, rates, false) else {
            return;
        };
        if let Some(Some(c)) = self.conns.get_mut(idx) {
            c.out.push_bytes(line.as_bytes());
            c.close_after_flush = true;
        }
        self.flush(idx);
        self.schedule(idx);
    }

    fn take_handoffs(&mut self) {
        while let Ok((stream, peer, rates)) = self.inbox.try_recv() {
            let _ = self.add_conn(stream, peer, rates, true);
        }
    }

    /// Pushes and watch ends posted to this loop's watch sessions.
    fn take_posts(&mut self) {
        while let Ok(post) = self.posts.try_recv() {
            match post {
                Post::Push { idx, conn, line } => {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    self.push_to(idx, conn, &line);
                }
                Post::EndWatch { idx, conn } => {
                    let Some(Some(c)) = self.conns.get_mut(idx) else {
                        continue;
                    };
                    if c.id != conn || c.watch.is_none() {
                        continue;
                    }
                    // It is no longer the watch session: closing it must not forget
                    // a newer one.
                    c.watch = None;
                    c.close_after_flush = true;
                    self.flush(idx);
                    self.schedule(idx);
                }
            }
        }
    }

    /// Queue a pushed line on watch session `conn` (slot `idx`), unless it holds
    /// [`WATCH_MAX_UNSENT`] bytes it has not read: then the push is dropped (counted).
    fn push_to(&mut self, idx: usize, conn: u64, line: &str) {
        let Some(Some(c)) = self.conns.get_mut(idx) else {
            return;
        };
        if c.id != conn || c.close_after_flush || c.linger_until.is_some() {
            return;
        }
        let Some(user) = c.watch.as_deref() else {
            return;
        };
        if c.unsent() + line.len() > WATCH_MAX_UNSENT {
            self.shared.watches.count_dropped(user);
            return;
        }
        c.out.push_bytes(line.as_bytes());
        self.flush(idx);
        self.schedule(idx);
    }

    /// Loop 0: record the outcomes of reachability checks, report them, and push them
    /// to the users' watch sessions.
    fn take_checks(&mut self) {
        let Some(results) = &self.results else {
            return;
        };
        let checked: Vec<Checked> = results.try_iter().collect();
        for c in checked {
            if !self.shared.directory.set_reach(&c.user, c.at, c.reach) {
                continue; // the user left that address, or the registry, meanwhile
            }
            if let Some(store) = &self.shared.store {
                // Every node's GET_P answers the reach (see store::redis).
                store.set_reach(&c.user, c.at, c.reach);
            }
            let addr = SocketAddr::new(c.at.ip, c.at.port);
            let push = Push::Reach {
                reach: c.reach,
                addr,
            };
            if !self.shared.watches.deliver(&c.user, &push) {
                if let Some(store) = &self.shared.store {
                    // The user's watch session may be on another node.
                    store.forward_push(&c.user, &push.to_line());
                }
            }
            let (user, reach) = (c.user.to_string(), c.reach);
            self.emit(|| RegistryEvent::Reachability { user, addr, reach });
        }
    }

    /// Add a connection to this loop; `counted`: it is served (else it is refused and
    /// only lingers). Returns its slot.
    fn add_conn(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        rates: Arc<AddrRates>,
        counted: bool,
    ) -> Option<usize> {
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
            if counted {
                self.uncount(peer);
            } else {
                self.shared.lingering.fetch_sub(1, Ordering::SeqCst);
            }
            return None;
        }
        let now = Instant::now();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.conns[idx] = Some(Conn {
            id,
            stream,
            peer,
            rates,
            inbuf: Vec::new(),
            scanned: 0,
            out: Output::default(),
            out_stalled_since: None,
            session: false,
            partial_since: None,
            last_byte: now,
            last_activity: now,
            owned: HashSet::new(),
            close_after_flush: false,
            throttled_until: None,
            yielded: false,
            linger_until: None,
            lingered: 0,
            counted,
            scheduled: None,
            eof: false,
            want_write: false,
            first_line_seen: false,
            sec: None,
            key: None,
            watch: None,
            signals: None,
        });
        if counted {
            self.emit(|| RegistryEvent::Connected { source: peer });
            self.schedule(idx);
            // Edge-triggered: bytes may already be waiting.
            self.on_readable(idx, false);
        }
        Some(idx)
    }

    /// `closing`: the event said the peer closed (or errored), so read until the end
    /// instead of stopping at a short read.
    fn on_readable(&mut self, idx: usize, closing: bool) {
        let cap = self.shared.config.max_unsent_per_conn;
        loop {
            let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                return;
            };
            if conn.linger_until.is_some() {
                self.drain_lingering(idx);
                return;
            }
            let mut drained = false;
            let mut got = false;
            // Read until the kernel has no more (edge-triggered), or a full line is
            // buffered, or output is backed up, or the address is over its rate, or
            // the connection used its turn; in those cases the rest waits in the kernel
            // (TCP flow control) and this loop comes back for it.
            while !conn.eof
                && conn.unparsed() <= MAX_LINE_LEN
                && conn.out.pending <= cap
                && conn.throttled_until.is_none()
                && !conn.yielded
            {
                match conn.stream.read(&mut self.scratch) {
                    Ok(0) => conn.eof = true,
                    Ok(n) => {
                        match &mut conn.sec {
                            Some(sec) => sec.frames.push(&self.scratch[..n]),
                            None => conn.inbuf.extend_from_slice(&self.scratch[..n]),
                        }
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
            if !self.secure_input(idx) {
                return;
            }
            self.process(idx);
            match self.conns.get(idx) {
                Some(Some(c))
                    if !drained
                        && !c.eof
                        && !c.close_after_flush
                        && c.throttled_until.is_none()
                        && !c.yielded
                        && c.out.pending <= cap => {}
                _ => return,
            }
        }
    }

    /// Encrypted sessions, before the lines are parsed: tell a `REG/2` marker from a
    /// plaintext first line, run the handshake, open records into the input buffer.
    /// `false`: the connection was closed, refused or must wait (nothing to parse).
    fn secure_input(&mut self, idx: usize) -> bool {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return false;
        };
        if !conn.counted || conn.linger_until.is_some() {
            return true;
        }
        if conn.sec.is_none() {
            if conn.first_line_seen {
                return true;
            }
            let Some(pos) = memchr(b'\n', &conn.inbuf) else {
                // Longer than any marker and still no line end: a plaintext query.
                if conn.inbuf.len() > crate::secure::MAX_MARKER {
                    conn.first_line_seen = true;
                }
                return true;
            };
            let line = &conn.inbuf[..pos];
            if !Marker::looks_like(line, Kind::Registry) {
                conn.first_line_seen = true;
                return true;
            }
            let Some(marker) = Marker::parse(line).filter(|m| m.kind == Kind::Registry) else {
                conn.first_line_seen = true;
                conn.session = true;
                conn.inbuf.truncate(pos);
                self.refuse_and_close(idx, reason::UNSUPPORTED_SECURE);
                return false;
            };
            // A handshake costs a few X25519 operations: it takes a query token like
            // a query does, so one address cannot make the registry do them faster.
            if !self.take_token(idx) {
                self.schedule(idx);
                return false;
            }
            let responder = match Responder::new(&self.shared.identity, marker) {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("registry: cannot start a handshake: {e}");
                    self.close(idx);
                    return false;
                }
            };
            let deadline = Instant::now() + self.shared.config.query_timeout;
            let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                return false;
            };
            conn.first_line_seen = true;
            conn.session = true;
            conn.partial_since = None;
            conn.scanned = 0;
            let rest = conn.inbuf.split_off(pos + 1);
            conn.inbuf = Vec::new();
            let mut frames = FrameBuffer::new();
            frames.push(&rest);
            conn.sec = Some(Box::new(Secure {
                state: SecState::Handshake(Box::new(responder)),
                frames,
                wire: Vec::new(),
                wire_pos: 0,
                answered: false,
                handshake_until: Some(deadline),
            }));
            self.schedule(idx);
        }
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return false;
        };
        let Some(sec) = conn.sec.as_mut() else {
            return true;
        };
        let mut broken = false;
        let mut replied = false;
        loop {
            let frame = match sec.frames.pop() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => {
                    broken = true;
                    break;
                }
            };
            match &mut sec.state {
                SecState::Handshake(responder) => {
                    match responder.read(&frame) {
                        Ok(Some(reply)) => {
                            if !sec.answered {
                                sec.wire.extend_from_slice(b"OK\n");
                                sec.answered = true;
                            }
                            sec.wire.extend_from_slice(&reply);
                            replied = true;
                        }
                        Ok(None) => {}
                        Err(_) => {
                            broken = true;
                            break;
                        }
                    }
                    if !responder.is_finished() {
                        continue;
                    }
                    let SecState::Handshake(responder) =
                        std::mem::replace(&mut sec.state, SecState::Broken)
                    else {
                        continue;
                    };
                    match responder.finish() {
                        Ok(est) => {
                            sec.state = SecState::Open(est.transport);
                            sec.handshake_until = None;
                            conn.key = Some(est.remote);
                        }
                        Err(_) => {
                            broken = true;
                            break;
                        }
                    }
                }
                SecState::Open(transport) => {
                    if transport.open(&frame, &mut conn.inbuf).is_err() {
                        broken = true;
                        break;
                    }
                }
                SecState::Broken => {
                    broken = true;
                    break;
                }
            }
        }
        if sec.frames.pending() == 0 {
            // Give back a buffer a large record grew (an idle connection keeps none).
            sec.frames = FrameBuffer::new();
        }
        if broken {
            // A failed handshake or a record failing authentication: nothing more can
            // be said on this link.
            let source = conn.peer;
            self.close(idx);
            self.emit(|| RegistryEvent::Refused {
                source,
                outcome: String::from("closed"),
            });
            return false;
        }
        if replied {
            self.flush(idx);
            self.schedule(idx);
        }
        matches!(self.conns.get(idx), Some(Some(_)))
    }

    fn on_writable(&mut self, idx: usize) {
        let cap = self.shared.config.max_unsent_per_conn;
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let was_backed_up = conn.out.pending > cap;
        self.flush(idx);
        let resume =
            matches!(self.conns.get(idx), Some(Some(c)) if was_backed_up && c.out.pending <= cap);
        if resume {
            self.on_readable(idx, false);
        }
        self.schedule(idx);
    }

    /// Take one query token for this connection's address; when there is none, the
    /// connection waits (neither read nor answered) until there is.
    fn take_token(&mut self, idx: usize) -> bool {
        if !self.shared.rate_limited() {
            return true;
        }
        let (rate, burst) = (
            self.shared.config.queries_per_sec_per_addr,
            self.shared.config.query_burst_per_addr,
        );
        let Some(Some(conn)) = self.conns.get_mut(idx) else {
            return false;
        };
        let now = Instant::now();
        let taken = conn.rates.queries.lock().take(now, rate, burst);
        match taken {
            Ok(()) => true,
            Err(wait) => {
                conn.throttled_until = Some(now + wait);
                false
            }
        }
    }

    /// Answer complete lines in the input buffer (at most a batch), then decide what the
    /// rest is.
    fn process(&mut self, idx: usize) {
        let cap = self.shared.config.max_unsent_per_conn;
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if conn.throttled_until.is_some() || conn.linger_until.is_some() || !conn.counted {
            return;
        }
        // Work on the buffer outside the connection so `answer` can borrow the server;
        // consumed lines are removed with one drain at the end, not one per line.
        let mut buf = std::mem::take(&mut conn.inbuf);
        let mut scan = conn.scanned;
        let mut start = 0;
        let mut answered = 0;
        let mut stopped = false;
        loop {
            let Some(Some(conn)) = self.conns.get(idx) else {
                return;
            };
            if conn.close_after_flush || conn.out.pending > cap {
                stopped = true;
                break;
            }
            let Some(pos) = memchr(b'\n', &buf[scan..]) else {
                scan = buf.len();
                break;
            };
            if answered == BATCH {
                // Let the loop's other connections have their turn; this one continues
                // from the ready list after the next (non-blocking) poll.
                stopped = true;
                if let Some(Some(conn)) = self.conns.get_mut(idx) {
                    conn.yielded = true;
                    self.ready.push((idx, conn.id));
                }
                break;
            }
            if !self.take_token(idx) {
                stopped = true;
                break;
            }
            let end = scan + pos;
            if let Some(Some(conn)) = self.conns.get_mut(idx) {
                conn.session = true;
                conn.partial_since = None;
            }
            self.answer(idx, &buf[start..end], false);
            answered += 1;
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
            // Part of a record is a query on its way too (slowloris guard).
            if conn.sec.as_ref().is_some_and(|s| s.frames.pending() > 0) {
                conn.partial_since.get_or_insert(conn.last_byte);
            } else {
                conn.partial_since = None;
            }
        } else if conn.inbuf.len() > MAX_LINE_LEN && !stopped {
            self.refuse_and_close(idx, reason::LINE_TOO_LONG);
            return;
        } else if !conn.close_after_flush && !stopped {
            conn.partial_since.get_or_insert(conn.last_byte);
            let whole_legacy = !conn.session
                && (conn.eof
                    || (conn.inbuf.len() <= LEGACY_FAST_MAX && parse_query(&conn.inbuf).is_ok()));
            if whole_legacy && self.take_token(idx) {
                self.take_legacy_query(idx);
            }
        }
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        // At the end of input, what is left is dropped unless it only waits for its
        // turn or for tokens.
        let more = stopped || conn.throttled_until.is_some();
        if conn.eof && !more && conn.unsent() == 0 {
            self.close(idx);
            return;
        }
        if conn.eof && !more {
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

    /// Answer one query into the connection's output.
    fn answer(&mut self, idx: usize, line: &[u8], legacy: bool) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        conn.last_activity = Instant::now();
        if !legacy {
            if conn.watch.is_some() {
                // A watch session carries pushes only: what the peer sends on it is
                // read (each line takes its query token) and dropped.
                return;
            }
            if let Some(signal) = parse_signal(line) {
                self.answer_signal(idx, line, signal);
                return;
            }
        }
        let caller = Caller {
            conn: conn.id,
            ip: conn.peer.ip(),
            session: !legacy,
            key: conn.key,
        };
        let parsed = parse_query(line);
        if legacy && parsed.is_ok() {
            // The original client never says it is still there; its well-formed
            // queries do (junk from its address does not).
            self.shared.directory.legacy_activity(caller.ip);
            if let Some(store) = &self.shared.store {
                store.legacy_activity(caller.ip);
            }
        }
        let is_get_af = matches!(parsed, Ok(Query::GetAllFiles));
        // An `INIT` on an encrypted session may list the user at a new address, whose
        // listener is then checked: where it was listed before.
        let init_before = match &parsed {
            Ok(Query::Init { username, .. }) if !legacy && caller.key.is_some() => {
                Some((username.to_string(), self.shared.directory.listed(username)))
            }
            _ => None,
        };
        let exited = match &parsed {
            Ok(Query::Exit { username }) if !legacy => Some(username.to_string()),
            _ => None,
        };
        let out = &mut self.answer_buf;
        out.clear();
        let result = parsed.and_then(|q| {
            let tables = Tables {
                directory: &self.shared.directory,
                claims: &self.shared.claims,
                store: self.shared.store.as_deref(),
            };
            execute(tables, caller, q, out, &mut conn.owned)
        });
        let succeeded = result.is_ok();
        let mut shared = None;
        let mut suffix_bytes: &[u8] = b"";
        let mut refused = None;
        let mut prefix = String::new();
        match result {
            Ok(Answered::Inline) => {}
            Ok(Answered::Nothing) => conn.close_after_flush = true,
            Ok(Answered::Suffixed(text, suffix)) => {
                shared = Some((text, 1));
                suffix_bytes = suffix;
            }
            Ok(Answered::Shared(text, users)) => shared = Some((text, users)),
            Ok(Answered::Prefixed(text)) if text.len() < SHARE_MIN => out.extend_from_slice(&text),
            Ok(Answered::Prefixed(text)) => {
                // The prefix goes first, then the text by reference.
                conn.out.push_bytes(out);
                prefix = String::from_utf8_lossy(out).into_owned();
                out.clear();
                shared = Some((text, 1));
            }
            Err(e) => {
                out.extend_from_slice(b"ERR,");
                // The original server answered a known verb with the wrong number of
                // fields as it answered anything it did not know.
                let why = if legacy && e.0 == reason::WRONG_FIELD_COUNT {
                    reason::INVALID_REQUEST
                } else {
                    e.0
                };
                out.extend_from_slice(why.as_bytes());
                if e.0 == reason::REGISTRY_FULL
                    || e.0 == reason::TOO_MANY_USERS
                    || e.0 == reason::CLAIMED
                {
                    refused = Some(e.0);
                }
            }
        }
        let outcome = self.shared.hook.as_ref().map(|_| match &shared {
            Some((text, users)) if is_get_af => answer_summary(b"", text, Some(*users)),
            Some((text, _)) => answer_summary(prefix.as_bytes(), text, None),
            // A legacy answer that is nothing, as the original server's was.
            None if out.is_empty() => String::from("(nothing sent)"),
            None => answer_summary(b"", out, None),
        });
        match shared {
            Some((text, users)) => {
                conn.out.push_shared(text);
                if !suffix_bytes.is_empty() {
                    conn.out.push_bytes(suffix_bytes);
                }
                // Session framing: a `GET_AF` answer ends with an empty line (user lines
                // are never empty): a non-empty text already ends with `\n`, so one more
                // makes the empty line; an empty one needs both.
                if !legacy {
                    let end: &[u8] = if is_get_af && users == 0 {
                        b"\n\n"
                    } else {
                        b"\n"
                    };
                    conn.out.push_bytes(end);
                }
            }
            None => {
                if !legacy {
                    out.push(b'\n');
                }
                conn.out.push_bytes(out);
            }
        }
        let peer = conn.peer;
        if let Some(why) = refused {
            self.emit(|| RegistryEvent::Refused {
                source: peer,
                outcome: format!("ERR,{why}"),
            });
        }
        if let Some(outcome) = outcome {
            let query = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
            self.emit(|| RegistryEvent::Query {
                at: SystemTime::now(),
                source: peer,
                query,
                outcome,
                legacy,
                key: caller.key.map(|k| k.fingerprint()),
            });
        }
        if succeeded {
            if let Some((user, before)) = init_before {
                self.check_reach(caller.conn, &user, before);
            }
            if let Some(user) = exited {
                // Its registration ended: so does its watch session.
                self.shared.watches.end(&user);
            }
        }
    }

    /// After an `INIT` by session `conn`: when `user` is now listed at another address
    /// (or another session's) than `before`, hand its listener to the prober.
    fn check_reach(&mut self, conn: u64, user: &str, before: Option<Listed>) {
        let Some(now) = self.shared.directory.listed(user) else {
            return;
        };
        if now.conn != conn || before == Some(now) {
            return;
        }
        let job = Job {
            user: user.into(),
            at: now,
        };
        if let Err(why) = self.shared.probes.submit(job.clone()) {
            let why = match why {
                Overflow::Queue => "too many checks waiting",
                Overflow::Address => "too many checks for its address",
                Overflow::Rate => "its address's checks per minute",
            };
            let addr = SocketAddr::new(now.ip, now.port);
            if self.shared.probes.defer(job, Instant::now()) {
                log::info!("registry: {user}'s listener at {addr} waits for its check ({why})");
            } else {
                log::warn!(
                    "registry: {user}'s listener at {addr} is not checked ({why}): its reach stays unknown"
                );
            }
        }
    }

    /// Answer a reach query (`WATCH`, `CONNECT`, `RELAY`: only on session framing).
    fn answer_signal(&mut self, idx: usize, line: &[u8], signal: Result<Signal<'_>, QueryError>) {
        let (answer, summary) = match signal.map_err(|e| e.0.to_string()) {
            Ok(sig) => match self.signal(idx, sig) {
                Ok(done) => done,
                Err(why) => (format!("ERR,{why}"), format!("ERR,{why}")),
            },
            Err(why) => (format!("ERR,{why}"), format!("ERR,{why}")),
        };
        let Some(Some(conn)) = self.conns.get_mut(idx) else {
            return;
        };
        conn.out.push_bytes(answer.as_bytes());
        conn.out.push_bytes(b"\n");
        let (source, key) = (conn.peer, conn.key.map(|k| k.fingerprint()));
        let query = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
        self.emit(|| RegistryEvent::Query {
            at: SystemTime::now(),
            source,
            query,
            outcome: summary,
            legacy: false,
            key,
        });
    }

    /// Run a reach query for the session in slot `idx`: its answer and what the log
    /// shows of it (tokens cut short: they are capabilities), or the `ERR` reason.
    ///
    /// `CONNECT`, `RELAY` and `PUNCH` are refused, in this order: a plaintext session; over the
    /// session's budget ([`crate::limits::SIGNALS_PER_MINUTE`]) or its address's
    /// ([`SIGNALS_PER_MINUTE_PER_ADDR`]); `RELAY` without a
    /// relay; a session holding no registration; an unknown callee; a callee without
    /// a watch session; `CONNECT` from a caller whose listener is not known to be
    /// reachable.
    fn signal(&mut self, idx: usize, sig: Signal<'_>) -> Result<(String, String), String> {
        let loop_idx = self.loop_idx;
        let shared = self.shared.clone();
        let dir = &shared.directory;
        let Some(Some(conn)) = self.conns.get_mut(idx) else {
            return Err(reason::INVALID_REQUEST.into());
        };
        if conn.key.is_none() {
            return Err(reason::NEEDS_SECURE.into());
        }
        let local_ip = conn
            .stream
            .local_addr()
            .map(|a| a.ip())
            .map_err(|_| reason::REGISTRY_UNAVAILABLE.to_string())?;
        let callee = match sig {
            Signal::Watch(user) => {
                let entry = dir.peek(user).ok_or(reason::USER_NOT_FOUND)?;
                // A keyed registration held on another node (Redis store) may be
                // watched here too: the key is the proof, as for a local one.
                let remote_ok = entry.remote && entry.key.is_some();
                if entry.key != conn.key || (entry.conn.is_none() && !remote_ok) {
                    return Err(reason::NOT_YOUR_REGISTRATION.into());
                }
                if let Some(store) = &shared.store {
                    // Other nodes forward this user's pushes here.
                    store.watch_here(user);
                }
                conn.watch = Some(user.into());
                // Pushes are small and few: the kernel need not hold more for a
                // watcher than the registry does (autotuning would let a watcher that
                // never reads park megabytes in its send buffer).
                small_send_buffer(&conn.stream, WATCH_MAX_UNSENT);
                let watcher = Watcher {
                    loop_idx,
                    idx,
                    conn: conn.id,
                    local_ip,
                };
                shared.watches.watch(user, watcher);
                let answer = format!("OK,{},{},{}", entry.ip, entry.port, entry.reach);
                return Ok((answer.clone(), answer));
            }
            Signal::Connect(callee) | Signal::Relay(callee) | Signal::Punch(callee, _) => callee,
        };
        let now = Instant::now();
        // The session's budget first, then its address's: a session over its own
        // budget does not spend its neighbours'.
        if !conn
            .signals
            .get_or_insert_with(|| SignalBudget::signals(now))
            .take(now)
            || !conn.rates.signals.lock().take(now)
        {
            return Err(reason::TOO_MANY_SIGNALS.into());
        }
        let offer = match sig {
            Signal::Relay(_) => Some(shared.relay.as_ref().ok_or(reason::NO_RELAY)?),
            _ => None,
        };
        // The caller is the session's registered name (the first in order, for a
        // session holding several).
        let mut names: Vec<&String> = conn.owned.iter().collect();
        names.sort();
        let (caller, listed) = names
            .into_iter()
            .find_map(|n| {
                dir.peek(n)
                    .filter(|p| p.conn == Some(conn.id))
                    .map(|p| (n.clone(), p))
            })
            .ok_or(reason::REGISTER_FIRST)?;
        let callee_listed = dir.peek(callee).ok_or(reason::USER_NOT_FOUND)?;
        let cannot_ask = || format!("{callee} {}", reason::CANNOT_ASK);
        // A watcher on another node (Redis store) is reached through Redis; the relay
        // is then advertised as this node sees it.
        let watcher_ip = match shared.watches.watcher(callee) {
            Some(w) => w.local_ip,
            None if shared.store.is_some() => local_ip,
            None => return Err(cannot_ask()),
        };
        let unavailable = |e: io::Error| {
            log::error!("registry: no random token: {e}");
            reason::REGISTRY_UNAVAILABLE.to_string()
        };
        let (push, answer, summary) = match (sig, offer) {
            // Each side is told the other's address as this registry sees it (the
            // NAT's public address) with its port (the callee's registered one, the
            // caller's punching one): a NAT that keeps a connection's source port maps
            // each to itself.
            (Signal::Punch(_, port), _) => {
                let answer = format!("OK,{},{}", callee_listed.ip, callee_listed.port);
                let push = Push::Punch {
                    addr: SocketAddr::new(listed.ip, port),
                    caller,
                };
                (push, answer.clone(), answer)
            }
            (_, Some(offer)) => {
                let token =
                    crate::relay::token::mint(&offer.secret, SystemTime::now(), RELAY_TOKEN_TTL)
                        .map_err(unavailable)?;
                let here = offer.addr.advertise(local_ip);
                let summary = format!("OK,{here},{}…", truncate(&token, 8));
                let push = Push::Relay {
                    relay: offer.addr.advertise(watcher_ip),
                    token: token.clone(),
                    caller,
                };
                (push, format!("OK,{here},{token}"), summary)
            }
            (_, None) => {
                if listed.reach != Reach::Reachable {
                    return Err(reason::NOT_REACHABLE.into());
                }
                let token = crate::reach::Token::generate().map_err(unavailable)?;
                let hex = token.to_hex();
                let summary = format!("OK,{}…", truncate(&hex, 8));
                let push = Push::Dial {
                    token,
                    addr: SocketAddr::new(listed.ip, listed.port),
                    caller,
                };
                (push, format!("OK,{hex}"), summary)
            }
        };
        let forwarded = |s: &Arc<RedisStore>| s.forward_push(callee, &push.to_line());
        if !shared.watches.deliver(callee, &push) && !shared.store.as_ref().is_some_and(forwarded) {
            return Err(cannot_ask());
        }
        Ok((answer, summary))
    }

    fn refuse_and_close(&mut self, idx: usize, why: &str) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        conn.out.push_bytes(format!("ERR,{why}\n").as_bytes());
        conn.inbuf = Vec::new();
        conn.scanned = 0;
        conn.partial_since = None;
        conn.close_after_flush = true;
        let peer = conn.peer;
        let key = conn.key.map(|k| k.fingerprint());
        self.emit(|| RegistryEvent::Query {
            at: SystemTime::now(),
            source: peer,
            query: String::from("(incomplete query)"),
            outcome: format!("ERR,{why}"),
            legacy: false,
            key,
        });
        self.flush(idx);
    }

    fn flush(&mut self, idx: usize) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let mut progressed = false;
        loop {
            // An encrypted connection writes `wire`; when it is all sent, the next
            // record is sealed from the front of the plaintext queue (see the module
            // notes). A plaintext one writes the queue itself.
            let bytes: &[u8] = match &mut conn.sec {
                Some(sec) => {
                    if sec.wire_pos == sec.wire.len() {
                        sec.wire.clear();
                        sec.wire_pos = 0;
                        let Some(front) = conn.out.front() else {
                            break;
                        };
                        let n = front.len().min(MAX_RECORD_PLAINTEXT);
                        match &mut sec.state {
                            SecState::Open(transport) => {
                                if transport.seal(&front[..n], &mut sec.wire).is_err() {
                                    self.close(idx);
                                    return;
                                }
                            }
                            // Before the link is up, the queue holds only a refusal,
                            // sent as the plaintext line the client expects then.
                            _ => sec.wire.extend_from_slice(&front[..n]),
                        }
                        conn.out.advance(n);
                    }
                    &sec.wire[sec.wire_pos..]
                }
                None => match conn.out.front() {
                    Some(front) => front,
                    None => break,
                },
            };
            match conn.stream.write(bytes) {
                Ok(0) => {
                    self.close(idx);
                    return;
                }
                Ok(n) => {
                    match &mut conn.sec {
                        Some(sec) => sec.wire_pos += n,
                        None => conn.out.advance(n),
                    }
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let now = Instant::now();
                    if progressed || conn.out_stalled_since.is_none() {
                        conn.out_stalled_since = Some(now);
                    }
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
        conn.out_stalled_since = None;
        if conn.out.chunks.capacity() > 64 {
            conn.out.chunks.shrink_to_fit();
        }
        if let Some(sec) = conn.sec.as_mut() {
            if sec.wire.capacity() > WIRE_KEEP {
                sec.wire = Vec::new();
                sec.wire_pos = 0;
            }
        }
        if conn.want_write {
            conn.want_write = false;
            let _ =
                self.poll
                    .registry()
                    .reregister(&mut conn.stream, Token(idx), Interest::READABLE);
        }
        if conn.close_after_flush {
            if conn.eof {
                self.close(idx);
            } else {
                self.start_linger(idx);
            }
        }
    }

    /// Output is all sent and the connection is done: shut the write side (a FIN after
    /// the last line) and read until the client closes or [`LINGER`] passes, so unread
    /// input does not turn the close into a reset that could destroy the `ERR` line.
    fn start_linger(&mut self, idx: usize) {
        let Some(Some(conn)) = self.conns.get_mut(idx) else {
            return;
        };
        let _ = conn.stream.shutdown(Shutdown::Write);
        conn.linger_until = Some(Instant::now() + LINGER);
        conn.inbuf = Vec::new();
        conn.scanned = 0;
        conn.partial_since = None;
        self.drain_lingering(idx);
        self.schedule(idx);
    }

    fn drain_lingering(&mut self, idx: usize) {
        let Some(Some(conn)) = self.conns.get_mut(idx) else {
            return;
        };
        loop {
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => break,
                Ok(n) => {
                    // A client still streaming after its refusal is not waiting for
                    // the line: stop paying for its bytes.
                    conn.lingered += n;
                    if conn.lingered > LINGER_MAX_BYTES {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.close(idx);
    }

    fn close(&mut self, idx: usize) {
        let Some(mut conn) = self.conns.get_mut(idx).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.free.push(idx);
        let freed = conn.inbuf.capacity()
            + conn
                .out
                .chunks
                .iter()
                .map(|c| match c {
                    Chunk::Own(v) => v.capacity(),
                    Chunk::Shared(_) => 0,
                })
                .sum::<usize>()
            + conn.sec.as_ref().map_or(0, |s| s.wire.capacity());
        self.shared.freed.fetch_add(freed, Ordering::Relaxed);
        if !conn.counted {
            self.shared.lingering.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        self.uncount(conn.peer);
        if let Some(user) = &conn.watch {
            self.shared.watches.forget(user, conn.id);
        }
        let released = match &self.shared.store {
            Some(store) => store.release_session(conn.id, &conn.owned),
            None => self.shared.directory.release_session(conn.id, &conn.owned),
        };
        for user in &released {
            // Their registrations ended: so do their watch sessions.
            self.shared.watches.end(user);
        }
        if let Some(key) = &conn.key {
            // The session's end is the claims' last use.
            let names = released.iter().map(String::as_str);
            if let Err(e) = self.shared.claims.touch(names, key, SystemTime::now()) {
                log::warn!("registry: could not record the claims' last use: {e}");
            }
        }
        let source = conn.peer;
        drop(conn);
        self.emit(|| RegistryEvent::Disconnected { source, released });
    }

    /// The next moment something must happen on this connection by itself.
    fn deadline(&self, conn: &Conn) -> Option<Instant> {
        if let Some(t) = conn.linger_until {
            return Some(t);
        }
        let cfg = &self.shared.config;
        let mut d: Option<Instant> = None;
        let mut earliest = |t: Instant| d = Some(d.map_or(t, |d: Instant| d.min(t)));
        if let Some(since) = conn.out_stalled_since {
            earliest(since + cfg.slow_reader_deadline);
        }
        if let Some(t) = conn.sec.as_ref().and_then(|s| s.handshake_until) {
            earliest(t);
        }
        if let Some(t) = conn.throttled_until {
            // What waited for tokens has arrived: no slowloris or grace deadline.
            earliest(t);
        } else if let Some(since) = conn.partial_since {
            earliest(since + cfg.query_timeout);
            if !conn.session {
                earliest(conn.last_byte + cfg.legacy_grace);
            }
        }
        if conn.owned.is_empty() && conn.watch.is_none() && !conn.close_after_flush {
            earliest(conn.last_activity + cfg.idle_timeout);
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
        let cfg = &self.shared.config;
        let (slow_reader, query_timeout, legacy_grace, idle_timeout) = (
            cfg.slow_reader_deadline,
            cfg.query_timeout,
            cfg.legacy_grace,
            cfg.idle_timeout,
        );
        let Some(Some(conn)) = self.conns.get_mut(idx) else {
            return;
        };
        if conn.linger_until.is_some_and(|t| now >= t) {
            self.close(idx);
            return;
        }
        if conn
            .out_stalled_since
            .is_some_and(|t| now >= t + slow_reader)
        {
            // The socket took none of the output for the whole deadline: close now and
            // free its buffers (a lingering close would only keep them).
            let source = conn.peer;
            self.close(idx);
            self.emit(|| RegistryEvent::Refused {
                source,
                outcome: String::from("closed"),
            });
            return;
        }
        if let Some(sec) = &conn.sec {
            if sec.handshake_until.is_some_and(|t| now >= t) {
                if sec.answered {
                    // The client reads frames now: no line can reach it.
                    let source = conn.peer;
                    self.close(idx);
                    self.emit(|| RegistryEvent::Refused {
                        source,
                        outcome: String::from("closed"),
                    });
                } else {
                    self.refuse_and_close(idx, reason::TIMED_OUT);
                }
                return;
            }
        }
        if let Some(t) = conn.throttled_until {
            if now >= t {
                // Tokens again: what waited is now taken as just arrived.
                conn.throttled_until = None;
                conn.partial_since = None;
                conn.last_byte = now;
                self.on_readable(idx, false);
            }
            return;
        }
        if let Some(since) = conn.partial_since {
            if now >= since + query_timeout {
                self.refuse_and_close(idx, reason::TIMED_OUT);
                return;
            }
            if !conn.session && now >= conn.last_byte + legacy_grace {
                if self.take_token(idx) {
                    self.take_legacy_query(idx);
                    if let Some(Some(c)) = self.conns.get_mut(idx) {
                        if c.eof {
                            c.close_after_flush = true;
                        }
                    }
                    self.flush(idx);
                }
                return;
            }
        }
        if conn.owned.is_empty()
            && conn.watch.is_none()
            && !conn.close_after_flush
            && now >= conn.last_activity + idle_timeout
        {
            self.refuse_and_close(idx, reason::TIMED_OUT);
        }
    }
}

/// How a query was answered: into the answer buffer, or with a shared rendered text.
enum Answered {
    Inline,
    /// The text and, for `GET_AF`, how many users it lists.
    Shared(Arc<[u8]>, usize),
    /// What is in the answer buffer, then this shared text.
    Prefixed(Arc<[u8]>),
    /// Legacy framing only: this shared text, then these bytes.
    Suffixed(Arc<[u8]>, &'static [u8]),
    /// Legacy framing only: an empty answer, where the original server sent nothing.
    /// The registry sends nothing too, then ends the connection (a FIN): the original
    /// client waits in `recv` for an answer, and without the close it would wait for
    /// ever (the original server never closed first).
    Nothing,
}

/// What a query runs against.
#[derive(Clone, Copy)]
struct Tables<'a> {
    directory: &'a Directory,
    claims: &'a Claims,
    /// The shared store (Redis), if any: writes go through it, and reads are refused
    /// while the local replica may be stale.
    store: Option<&'a RedisStore>,
}

/// Run one parsed query against the directory, writing an inline answer's text (without
/// the session terminator) into `out`.
fn execute(
    tables: Tables<'_>,
    caller: Caller,
    query: Query<'_>,
    out: &mut Vec<u8>,
    owned: &mut HashSet<String>,
) -> Result<Answered, QueryError> {
    let directory = tables.directory;
    if let (Some(store), false) = (
        tables.store,
        matches!(query, Query::Init { .. } | Query::Exit { .. }),
    ) {
        store.check_fresh()?;
    }
    match query {
        Query::Init {
            username,
            port,
            files,
            ..
        } => {
            let outcome = init(tables, caller, username, port, &files)?;
            if caller.session && !owned.contains(username) {
                owned.insert(username.to_string());
            }
            out.extend_from_slice(match outcome {
                InitOutcome::Registered => b"OK",
                InitOutcome::Updated => b"UP",
            });
        }
        Query::Exit { username } => {
            match tables.store {
                Some(store) => store.exit(caller, username)?,
                None => directory.exit(caller, username)?,
            }
            owned.remove(username);
            if let Some(key) = &caller.key {
                // Leaving is the claim's last use.
                let _ = tables.claims.touch([username], key, SystemTime::now());
            }
            // The original server answered a (legacy) `EXIT` with nothing; its client
            // does not read one. A refusal is still an `ERR` line.
            if caller.session {
                out.extend_from_slice(b"OK");
            }
        }
        Query::GetUsers => {
            let text = directory.usernames_text();
            // The original server answered `OK,` with nobody online; p2pchat's session
            // answer is `OK`.
            if !caller.session && &*text == b"OK" {
                out.extend_from_slice(b"OK,");
                return Ok(Answered::Inline);
            }
            return Ok(Answered::Shared(text, 1));
        }
        Query::GetPeer { username } => directory.write_peer(username, caller.session, out)?,
        Query::GetUserFiles { username } => {
            let files = directory.user_files(username)?;
            if !caller.session {
                // The original server's bytes: no `OK,`, each file followed by a comma.
                return Ok(if files.is_empty() {
                    Answered::Nothing
                } else {
                    Answered::Suffixed(files, b",")
                });
            }
            out.extend_from_slice(b"OK");
            if !files.is_empty() {
                out.push(b',');
                return Ok(Answered::Prefixed(files));
            }
        }
        Query::GetAllFiles if !caller.session => {
            let (text, users) = directory.all_files_legacy_text();
            return Ok(if users == 0 {
                Answered::Nothing
            } else {
                Answered::Shared(text, users)
            });
        }
        Query::GetAllFiles => {
            let (text, users) = directory.all_files_text();
            return Ok(Answered::Shared(text, users));
        }
    }
    Ok(Answered::Inline)
}

/// An `INIT` with the claim rules: a name claimed by a key is registered only over
/// an encrypted session with that key; a new registration over an encrypted session
/// claims (or renews) the name, durably, before it is answered, and is undone if the
/// claim cannot be written.
fn init(
    tables: Tables<'_>,
    caller: Caller,
    username: &str,
    port: u16,
    files: &[&str],
) -> Result<InitOutcome, QueryError> {
    let now = SystemTime::now();
    let unavailable = |e: crate::error::Error| {
        log::error!("registry: claims store failed: {e}");
        QueryError(reason::REGISTRY_UNAVAILABLE)
    };
    // The Redis store checks the claim inside its INIT script (one round trip).
    if tables.store.is_none() {
        let holder = tables.claims.holder(username, now).map_err(unavailable)?;
        if holder.is_some() && holder != caller.key {
            return Err(QueryError(reason::CLAIMED));
        }
    }
    let outcome = match tables.store {
        Some(store) => store.init(caller, username, port, files)?,
        None => tables.directory.init(caller, username, port, files)?,
    };
    let Some(key) = caller.key.filter(|_| outcome == InitOutcome::Registered) else {
        return Ok(outcome);
    };
    let undo = || {
        let name = username.to_string();
        match tables.store {
            Some(store) => drop(store.release_session(caller.conn, [&name])),
            None => drop(tables.directory.release_session(caller.conn, [&name])),
        }
    };
    match tables.claims.check_and_claim(username, &key, now) {
        Ok(Claim::Granted) => Ok(outcome),
        Ok(Claim::Other) => {
            undo();
            Err(QueryError(reason::CLAIMED))
        }
        Err(e) => {
            undo();
            Err(unavailable(e))
        }
    }
}

/// Give freed heap pages back to the system. glibc keeps freed memory in its arenas
/// (RSS stays at the peak after a load goes); `malloc_trim(0)` returns every whole free
/// page of every arena.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; no pointers of
    // ours are involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Fix a socket's kernel send buffer at `bytes` (Linux doubles it for bookkeeping),
/// instead of letting it grow with the connection.
fn small_send_buffer(stream: &TcpStream, bytes: usize) {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: setsockopt on a descriptor `stream` keeps open, with a pointer to a
        // live c_int and its exact size.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (stream, bytes);
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// Longest answer summary in the log, in bytes (before the "…" and the size note).
const SUMMARY_MAX: usize = 160;

/// What the log shows of an answer (`prefix` then `text`): its lines joined with
/// ` | `, cut at [`SUMMARY_MAX`] bytes with `…` and the answer's whole size; for a
/// `GET_AF` answer (`users` given) the user count first, so a long list never looks
/// like one user's. Only the head of the text is looked at: the summary costs the same
/// for a 10 MB answer as for a short one.
fn answer_summary(prefix: &[u8], text: &[u8], users: Option<usize>) -> String {
    let total = prefix.len() + text.len();
    let mut head = Vec::with_capacity(SUMMARY_MAX * 2);
    head.extend_from_slice(&prefix[..prefix.len().min(SUMMARY_MAX * 2)]);
    let room = (SUMMARY_MAX * 2).saturating_sub(head.len());
    head.extend_from_slice(&text[..text.len().min(room)]);
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.split('\n').filter(|l| !l.is_empty());
    let mut out = String::new();
    if let Some(users) = users {
        // `OK,` then the first user's line on the same line.
        let first = lines.next().unwrap_or_default();
        let rest = first.strip_prefix("OK,").unwrap_or(first);
        out.push_str(&format!(
            "OK ({users} user{})",
            if users == 1 { "" } else { "s" }
        ));
        if !rest.is_empty() {
            out.push_str(": ");
            out.push_str(rest);
        }
    } else if let Some(first) = lines.next() {
        out.push_str(first);
    }
    for line in lines {
        out.push_str(" | ");
        out.push_str(line);
    }
    let shown_all = total <= SUMMARY_MAX * 2 && out.len() <= SUMMARY_MAX;
    if shown_all {
        return out;
    }
    let cut = truncate(&out, SUMMARY_MAX).to_string();
    format!("{cut}… ({total} bytes)")
}

#[cfg(test)]
mod summary_tests {
    #[test]
    fn answer_summaries_show_every_line_or_say_where_they_are_cut() {
        use super::answer_summary;
        let all = b"OK,alice: notes.txt,song.mp3\nbob: \n";
        assert_eq!(
            answer_summary(b"", all, Some(2)),
            "OK (2 users): alice: notes.txt,song.mp3 | bob: "
        );
        assert_eq!(answer_summary(b"", b"OK,", Some(0)), "OK (0 users)");
        assert_eq!(
            answer_summary(b"OK,", b"a.txt,b.txt", None),
            "OK,a.txt,b.txt"
        );
        assert_eq!(
            answer_summary(b"", b"ERR,User not found!", None),
            "ERR,User not found!"
        );
        let long: Vec<u8> = (0..1000)
            .flat_map(|i| format!("u{i}: f\n").into_bytes())
            .collect();
        let mut text = b"OK,".to_vec();
        text.extend_from_slice(&long);
        let s = answer_summary(b"", &text, Some(1000));
        assert!(s.starts_with("OK (1000 users): u0: f | u1: f"), "{s}");
        assert!(s.ends_with(&format!("… ({} bytes)", text.len())), "{s}");
        assert!(s.len() < 200, "{s}");
    }
}

#[cfg(test)]
mod claim_tests {
    use super::*;
    use redb::backends::InMemoryBackend;
    use redb::StorageBackend;
    use std::sync::atomic::AtomicBool;

    /// redb's in-memory backend whose flushes fail once `fail` is set (a full or
    /// broken disk).
    #[derive(Debug)]
    struct Failing {
        inner: InMemoryBackend,
        fail: Arc<AtomicBool>,
    }

    impl StorageBackend for Failing {
        fn len(&self) -> io::Result<u64> {
            self.inner.len()
        }
        fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
            self.inner.read(offset, len)
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.inner.set_len(len)
        }
        fn sync_data(&self, eventual: bool) -> io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(io::Error::other("disk full"));
            }
            self.inner.sync_data(eventual)
        }
        fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(io::Error::other("disk full"));
            }
            self.inner.write(offset, data)
        }
    }

    #[test]
    fn an_init_whose_claim_cannot_be_stored_is_refused_and_not_registered() {
        let fail = Arc::new(AtomicBool::new(false));
        let backend = Failing {
            inner: InMemoryBackend::new(),
            fail: fail.clone(),
        };
        let claims = Claims::with_backend(backend, Duration::from_secs(3600)).unwrap();
        let directory = Directory::default();
        let tables = Tables {
            directory: &directory,
            claims: &claims,
            store: None,
        };
        let key = crate::identity::Identity::generate().unwrap().public();
        let caller = |conn, key| Caller {
            conn,
            ip: "127.0.0.1".parse().unwrap(),
            session: true,
            key,
        };
        assert_eq!(
            init(tables, caller(1, Some(key)), "alice", 5000, &[]),
            Ok(InitOutcome::Registered)
        );
        fail.store(true, Ordering::SeqCst);
        assert_eq!(
            init(tables, caller(2, Some(key)), "bob", 5000, &[]),
            Err(QueryError(reason::REGISTRY_UNAVAILABLE))
        );
        assert!(
            directory.get("bob").is_none(),
            "registered without its claim"
        );
        // An update makes no new claim; a plaintext registration makes none at all.
        assert_eq!(
            init(tables, caller(1, Some(key)), "alice", 5001, &[]),
            Ok(InitOutcome::Updated)
        );
        assert_eq!(
            init(tables, caller(3, None), "carol", 5000, &[]),
            Ok(InitOutcome::Registered)
        );
    }
}
