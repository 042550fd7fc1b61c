//! The relay server: one event-loop thread (mio) that accepts connections, reads each
//! one's `RELAY/1 <token>` line, pairs the two connections of a circuit and forwards
//! bytes between them until both sides are done.
//!
//! Why one thread for every circuit, not two threads per circuit: the forwarding itself
//! is `splice(2)` (the kernel moves the bytes, the thread only says which socket to
//! which), so one thread keeps up with loopback speed; two blocking threads per circuit
//! would cost two stacks and two context switches per chunk for nothing, and a relay
//! holding [`limits::RELAY_MAX_CIRCUITS`] circuits would hold 2,048 threads. With one
//! loop the relay's threads and memory do not grow with its circuits: a circuit is a
//! small struct, two sockets and two pipes (see `tests/relay.rs` and the bench's
//! figures). The loop uses edge-triggered readiness: a direction is pumped until a
//! socket says `WouldBlock`, its pipe is full, or a rate limit stops it (then a timer
//! wakes it).
//!
//! Never: read past a connection's first line before it is joined (what follows is the
//! other side's), buffer more than a pipe (or 64 KiB) per direction, wait without a
//! deadline, or drop a byte to keep a rate (it stops reading instead).

use super::bucket::Bucket;
use super::forward::{Buffer, Forwarding};
use super::token::{self, CircuitId, RelaySecret, TokenError};
use super::wire::{self, Refusal, Scan};
use crate::limits;
use crate::net::address_key;
use crate::thread::{call_hook, spawn_named};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
/// How often deadlines (first line, pending side, idle, lifetime, linger) are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// How often used tokens past their expiry are forgotten.
const PURGE_EVERY: Duration = Duration::from_secs(10);
/// Least bytes a throttled direction waits for before it reads again, so a slow rate
/// moves whole segments rather than a few bytes per wake-up.
const THROTTLE_CHUNK: u64 = 16 * 1024;

/// The relay's bounds. `Default` gives the values in [`crate::limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLimits {
    /// Most circuits at once, a circuit whose first side waits for the second included;
    /// past it `ERR busy relay is at its circuit limit, try again later`.
    pub max_circuits: usize,
    /// Most circuits one address (one /64 for IPv6) takes part in; past it `ERR busy
    /// too many circuits from your address, try again later`.
    pub max_circuits_per_addr: usize,
    /// Most connections not yet joined (reading their first line or waiting for the
    /// other side); past it `ERR busy relay has too many waiting connections, try again
    /// later`.
    pub max_pending: usize,
    /// Most connections not yet joined from one address (one /64 for IPv6).
    pub max_pending_per_addr: usize,
    /// Bytes per second one circuit forwards, both directions together; 0: no limit.
    pub circuit_bytes_per_sec: u64,
    /// Bytes per second all circuits together forward; 0: no limit.
    pub total_bytes_per_sec: u64,
    /// Longest life of a joined circuit; then both sides are closed.
    pub max_lifetime: Duration,
    /// How long a new connection may take to send its first line.
    pub line_timeout: Duration,
    /// How long the first side of a circuit waits for the second.
    pub pending_timeout: Duration,
    /// A joined circuit forwarding no byte for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_circuits: limits::RELAY_MAX_CIRCUITS,
            max_circuits_per_addr: limits::RELAY_MAX_CIRCUITS_PER_ADDR,
            max_pending: limits::RELAY_MAX_PENDING,
            max_pending_per_addr: limits::RELAY_MAX_PENDING_PER_ADDR,
            circuit_bytes_per_sec: limits::RELAY_CIRCUIT_BYTES_PER_SEC,
            total_bytes_per_sec: limits::RELAY_TOTAL_BYTES_PER_SEC,
            max_lifetime: limits::RELAY_MAX_LIFETIME,
            line_timeout: limits::RELAY_LINE_TIMEOUT,
            pending_timeout: limits::RELAY_PENDING_TIMEOUT,
            idle_timeout: limits::RELAY_IDLE_TIMEOUT,
        }
    }
}

/// What a relay has done so far ([`Relay::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayStats {
    /// Joined circuits open now.
    pub circuits: usize,
    /// Connections not yet joined (reading their first line, or waiting for the other
    /// side).
    pub pending: usize,
    /// Circuits joined since the start.
    pub joined: u64,
    /// Bytes forwarded since the start, both directions of every circuit.
    pub bytes_forwarded: u64,
    /// Connections refused since the start (each was sent an `ERR` line).
    pub refused: u64,
}

/// Why a joined circuit was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides closed their direction (the normal end).
    Ended,
    /// A socket failed (reset, broken pipe); the text says how.
    Failed(String),
    /// It reached [`RelayLimits::max_lifetime`].
    Lifetime,
    /// It forwarded nothing for [`RelayLimits::idle_timeout`].
    Idle,
    /// The relay stopped.
    Shutdown,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Ended => f.write_str("ended"),
            CloseReason::Failed(e) => write!(f, "failed: {e}"),
            CloseReason::Lifetime => f.write_str("closed at the longest circuit lifetime"),
            CloseReason::Idle => f.write_str("closed idle"),
            CloseReason::Shutdown => f.write_str("closed as the relay stopped"),
        }
    }
}

/// Something the relay did; handed to the hook set with [`RelayBuilder::on_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// Two connections were joined into a circuit.
    Joined {
        /// The first 8 hex characters of the circuit id (enough to follow it in a log).
        circuit: String,
        /// The side that came first, then the side that joined it.
        sides: [SocketAddr; 2],
    },
    /// A joined circuit closed.
    Closed {
        circuit: String,
        sides: [SocketAddr; 2],
        /// Bytes forwarded, both directions.
        bytes: u64,
        /// How long it was joined.
        lasted: Duration,
        why: CloseReason,
    },
    /// A connection was refused; `outcome` is the `ERR` line it was sent (no `\n`).
    Refused { source: SocketAddr, outcome: String },
}

/// A hook that sees every relay event. Called on the relay's thread: it must return
/// quickly (print, or send on a channel), or every circuit waits. A panic in it is
/// caught and logged.
pub type RelayHook = Arc<dyn Fn(&RelayEvent) + Send + Sync>;

/// Configures and starts a [`Relay`].
pub struct RelayBuilder {
    secret: RelaySecret,
    limits: RelayLimits,
    forwarding: Forwarding,
    hook: Option<RelayHook>,
}

impl RelayBuilder {
    /// Use these bounds instead of the defaults.
    pub fn limits(mut self, limits: RelayLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How bytes are moved (default: `splice(2)` where the OS has it).
    pub fn forwarding(mut self, forwarding: Forwarding) -> Self {
        self.forwarding = forwarding;
        self
    }

    /// Call `hook` for every event (see [`RelayHook`] for the rules).
    pub fn on_event(mut self, hook: impl Fn(&RelayEvent) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Bind to `addr` (port 0 picks a free port) and start relaying.
    pub fn bind(self, addr: impl ToSocketAddrs) -> io::Result<Relay> {
        let listener = std::net::TcpListener::bind(addr)?;
        self.start(listener)
    }

    /// Start relaying on a listener bound already.
    pub fn start(self, listener: std::net::TcpListener) -> io::Result<Relay> {
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let shared = Arc::new(Shared::default());
        let now = Instant::now();
        let event_loop = Loop {
            poll,
            listener,
            shared: shared.clone(),
            secret: self.secret,
            total: Bucket::new(self.limits.total_bytes_per_sec, now),
            limits: self.limits,
            forwarding: self.forwarding,
            hook: self.hook,
            entries: HashMap::new(),
            next_key: 0,
            pending_circuits: HashMap::new(),
            used: HashMap::new(),
            per_addr: HashMap::new(),
            waiting: 0,
            circuits: 0,
            joined: 0,
            refusing: 0,
            timers: BinaryHeap::new(),
            last_sweep: now,
            last_purge: now,
            accept_stalled: false,
        };
        let thread = spawn_named("p2p-relay", move || event_loop.run())?;
        Ok(Relay {
            local_addr,
            shared,
            waker,
            thread: Some(thread),
        })
    }
}

/// A running relay. Dropping it (or [`Relay::shutdown`]) stops it, closes every
/// connection and joins its thread.
pub struct Relay {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// A builder for a relay checking tokens made with `secret`.
    pub fn builder(secret: RelaySecret) -> RelayBuilder {
        RelayBuilder {
            secret,
            limits: RelayLimits::default(),
            forwarding: Forwarding::default(),
            hook: None,
        }
    }

    /// Start a relay on `addr` with the default bounds.
    pub fn bind(addr: impl ToSocketAddrs, secret: RelaySecret) -> io::Result<Relay> {
        Relay::builder(secret).bind(addr)
    }

    /// The address the relay listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What the relay has done so far.
    pub fn stats(&self) -> RelayStats {
        let s = &self.shared;
        RelayStats {
            circuits: s.circuits.load(Ordering::Relaxed),
            pending: s.pending.load(Ordering::Relaxed),
            joined: s.joined.load(Ordering::Relaxed),
            bytes_forwarded: s.bytes.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
        }
    }

    /// Stop relaying, close every connection and join the thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// What the relay's handle and its thread share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    circuits: AtomicUsize,
    pending: AtomicUsize,
    joined: AtomicU64,
    bytes: AtomicU64,
    refused: AtomicU64,
}

/// A connection that is not joined yet.
struct Waiting {
    stream: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    /// Once its line is read and its token valid: the circuit it waits for the other
    /// side of, and the token's expiry.
    circuit: Option<(CircuitId, SystemTime)>,
}

/// A refused connection whose `ERR` line is on its way: read and discarded until the
/// client closes or the linger ends, so the close is a FIN after the line, not a reset
/// that could destroy it.
struct Refusing {
    stream: TcpStream,
    until: Instant,
}

/// One side of a circuit.
struct Side {
    stream: TcpStream,
    peer: SocketAddr,
}

/// One direction: bytes from `sides[d]` to `sides[1 - d]`.
struct Direction {
    buffer: Buffer,
    /// The source sent its FIN.
    eof: bool,
    /// The FIN was passed on (everything before it written).
    done: bool,
}

struct Circuit {
    id: CircuitId,
    sides: [Side; 2],
    dirs: [Direction; 2],
    joined_at: Instant,
    last_active: Instant,
    bytes: u64,
    bucket: Bucket,
    /// When a timer is set to pump it again (it was throttled).
    wake_at: Option<Instant>,
}

enum Entry {
    Waiting(Waiting),
    Circuit(Box<Circuit>),
    Refusing(Refusing),
}

/// Connections and circuits one address holds.
#[derive(Default)]
struct AddrCount {
    waiting: usize,
    circuits: usize,
}

/// How pumping one direction ended.
enum Pumped {
    /// A socket said `WouldBlock` (or the pipe is full): readiness will call again.
    Blocked,
    /// A rate limit stopped it: call again after this long.
    Throttled(Duration),
    /// The FIN was passed on.
    Done,
}

struct Loop {
    poll: Poll,
    listener: TcpListener,
    shared: Arc<Shared>,
    secret: RelaySecret,
    limits: RelayLimits,
    forwarding: Forwarding,
    hook: Option<RelayHook>,
    /// Every connection, by key; a key's mio tokens are `2 * key` and `2 * key + 1`
    /// (the second side of a circuit).
    entries: HashMap<usize, Entry>,
    next_key: usize,
    /// Circuits whose first side waits: the key of that side.
    pending_circuits: HashMap<CircuitId, usize>,
    /// Circuits joined, remembered until their token expires.
    used: HashMap<CircuitId, SystemTime>,
    per_addr: HashMap<IpAddr, AddrCount>,
    /// Connections not yet joined.
    waiting: usize,
    /// Circuits, pending ones included.
    circuits: usize,
    /// Joined circuits.
    joined: usize,
    refusing: usize,
    /// Throttled circuits to pump again, by key.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    total: Bucket,
    last_sweep: Instant,
    last_purge: Instant,
    /// The last accept failed (descriptors ran out): retried at each sweep, since no
    /// new edge may come for connections already in the backlog.
    accept_stalled: bool,
}

impl Loop {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut ready: Vec<Token> = Vec::with_capacity(1024);
        while !self.shared.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let mut timeout = (self.last_sweep + SWEEP_EVERY).saturating_duration_since(now);
            if let Some(Reverse((at, _))) = self.timers.peek() {
                timeout = timeout.min(at.saturating_duration_since(now));
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("relay: poll failed, stopping: {e}");
                break;
            }
            ready.clear();
            ready.extend(events.iter().map(|e| e.token()));
            for &token in &ready {
                match token {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    Token(t) => self.ready(t / 2),
                }
            }
            self.fire_timers();
            if self.last_sweep.elapsed() >= SWEEP_EVERY {
                self.sweep();
            }
        }
        self.close_all();
    }

    /// Makes the counts visible to [`Relay::stats`] (called at every change, so a
    /// client that saw a circuit end never reads a count from before).
    fn publish(&self) {
        self.shared.circuits.store(self.joined, Ordering::Relaxed);
        self.shared.pending.store(self.waiting, Ordering::Relaxed);
    }

    fn emit(&self, event: RelayEvent) {
        if let Some(hook) = &self.hook {
            call_hook(|| hook(&event));
        }
    }

    fn addr(&mut self, ip: IpAddr) -> &mut AddrCount {
        self.per_addr.entry(address_key(ip)).or_default()
    }

    fn forget_addr_if_empty(&mut self, ip: IpAddr) {
        let key = address_key(ip);
        if let Some(c) = self.per_addr.get(&key) {
            if c.waiting == 0 && c.circuits == 0 {
                self.per_addr.remove(&key);
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    self.accept_stalled = false;
                    self.admit(stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_stalled = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and the like: try again at the next sweep.
                    if !self.accept_stalled {
                        log::warn!("relay: accept failed: {e}");
                    }
                    self.accept_stalled = true;
                    return;
                }
            }
        }
    }

    /// A new connection: waits for its first line, or is refused at the pending caps.
    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        crate::net::set_keepalive(&stream);
        let refusal = if self.waiting >= self.limits.max_pending {
            Some(Refusal::PendingLimit)
        } else if self.addr(peer.ip()).waiting >= self.limits.max_pending_per_addr {
            Some(Refusal::PendingLimitPerAddr)
        } else {
            None
        };
        self.forget_addr_if_empty(peer.ip());
        if let Some(r) = refusal {
            self.refuse(stream, peer, r);
            return;
        }
        let key = self.new_key();
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, Token(2 * key), Interest::READABLE)
        {
            log::warn!("relay: cannot watch a connection from {peer}: {e}");
            return;
        }
        self.waiting += 1;
        self.addr(peer.ip()).waiting += 1;
        self.publish();
        let deadline = Instant::now() + self.limits.line_timeout;
        self.entries.insert(
            key,
            Entry::Waiting(Waiting {
                stream,
                peer,
                deadline,
                circuit: None,
            }),
        );
        // Its line may be there already (the edge came before the registration).
        self.read_line(key);
    }

    fn new_key(&mut self) -> usize {
        loop {
            let key = self.next_key;
            // Keys stay clear of the listener's and waker's tokens.
            self.next_key = (self.next_key + 1) % (usize::MAX / 2 - 1);
            if !self.entries.contains_key(&key) {
                return key;
            }
        }
    }

    /// Sends `refusal`'s line and keeps the connection briefly (see [`Refusing`]).
    fn refuse(&mut self, mut stream: TcpStream, peer: SocketAddr, refusal: Refusal) {
        self.shared.refused.fetch_add(1, Ordering::Relaxed);
        // A fresh or idle socket takes a line this short at once; if not, the client
        // does not get it, which it would not with a full buffer either.
        let _ = (&stream).write(refusal.line().as_bytes());
        let _ = stream.shutdown(Shutdown::Write);
        self.emit(RelayEvent::Refused {
            source: peer,
            outcome: refusal.text().to_string(),
        });
        if self.refusing >= limits::RELAY_MAX_REFUSING {
            return;
        }
        let key = self.new_key();
        let registered = self
            .poll
            .registry()
            .reregister(&mut stream, Token(2 * key), Interest::READABLE)
            .or_else(|_| {
                self.poll
                    .registry()
                    .register(&mut stream, Token(2 * key), Interest::READABLE)
            });
        if registered.is_err() {
            return;
        }
        self.refusing += 1;
        self.entries.insert(
            key,
            Entry::Refusing(Refusing {
                stream,
                until: Instant::now() + limits::REFUSAL_LINGER,
            }),
        );
        self.discard(key);
    }

    fn ready(&mut self, key: usize) {
        match self.entries.get(&key) {
            Some(Entry::Waiting(w)) if w.circuit.is_none() => self.read_line(key),
            Some(Entry::Waiting(_)) => self.check_waiting(key),
            Some(Entry::Circuit(_)) => self.pump(key, Instant::now()),
            Some(Entry::Refusing(_)) => self.discard(key),
            None => {}
        }
    }

    /// Removes a waiting connection and its counts (and its pending circuit, if any).
    fn take_waiting(&mut self, key: usize) -> Option<Waiting> {
        let Some(Entry::Waiting(w)) = self.entries.remove(&key) else {
            return None;
        };
        self.waiting -= 1;
        self.addr(w.peer.ip()).waiting -= 1;
        if let Some((id, _)) = w.circuit {
            self.pending_circuits.remove(&id);
            self.circuits -= 1;
            self.addr(w.peer.ip()).circuits -= 1;
        }
        self.forget_addr_if_empty(w.peer.ip());
        self.publish();
        Some(w)
    }

    fn refuse_waiting(&mut self, key: usize, refusal: Refusal) {
        if let Some(w) = self.take_waiting(key) {
            self.refuse(w.stream, w.peer, refusal);
        }
    }

    /// A connection waiting for its other side: notice when it gives up.
    fn check_waiting(&mut self, key: usize) {
        let Some(Entry::Waiting(w)) = self.entries.get(&key) else {
            return;
        };
        let mut probe = [0u8; 1];
        match w.stream.peek(&mut probe) {
            // Bytes it sent early stay for the other side; a FIN or an error ends it.
            Ok(0) => {
                self.take_waiting(key);
            }
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                self.take_waiting(key);
            }
            _ => {}
        }
    }

    /// Reads the first line once it is all there, never a byte past it.
    fn read_line(&mut self, key: usize) {
        let Some(Entry::Waiting(w)) = self.entries.get_mut(&key) else {
            return;
        };
        let mut buf = [0u8; limits::RELAY_MAX_LINE];
        let n = match w.stream.peek(&mut buf) {
            Ok(0) => {
                self.take_waiting(key);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return self.read_line(key),
            Err(_) => {
                self.take_waiting(key);
                return;
            }
        };
        let len = match wire::scan(&buf[..n]) {
            Scan::More => return,
            Scan::TooLong => return self.refuse_waiting(key, Refusal::BadRequest),
            Scan::Line(len) => len,
        };
        if (&w.stream).read_exact(&mut buf[..len]).is_err() {
            self.take_waiting(key);
            return;
        }
        let Some(text) = wire::parse_line(&buf[..len]) else {
            return self.refuse_waiting(key, Refusal::BadRequest);
        };
        let (id, expiry) = match token::verify_until(&self.secret, text, SystemTime::now()) {
            Ok(v) => v,
            Err(TokenError::Invalid) => return self.refuse_waiting(key, Refusal::InvalidToken),
            Err(TokenError::Expired) => return self.refuse_waiting(key, Refusal::ExpiredToken),
        };
        if self.used.contains_key(&id) {
            return self.refuse_waiting(key, Refusal::TokenUsed);
        }
        if let Some(&first) = self.pending_circuits.get(&id) {
            return self.join(first, key);
        }
        let peer = w.peer;
        if self.circuits >= self.limits.max_circuits {
            return self.refuse_waiting(key, Refusal::CircuitLimit);
        }
        if self.addr(peer.ip()).circuits >= self.limits.max_circuits_per_addr {
            return self.refuse_waiting(key, Refusal::CircuitLimitPerAddr);
        }
        if self.used.len() >= limits::RELAY_MAX_USED_TOKENS {
            self.purge_used();
            if self.used.len() >= limits::RELAY_MAX_USED_TOKENS {
                return self.refuse_waiting(key, Refusal::OutOfResources);
            }
        }
        let deadline = Instant::now() + self.limits.pending_timeout;
        if let Some(Entry::Waiting(w)) = self.entries.get_mut(&key) {
            w.circuit = Some((id, expiry));
            w.deadline = deadline;
        }
        self.pending_circuits.insert(id, key);
        self.circuits += 1;
        self.addr(peer.ip()).circuits += 1;
        // It may have closed already, or sent its first bytes: look once now.
        self.check_waiting(key);
    }

    /// Joins the waiting side `first` with `second`, which just presented the same
    /// token.
    fn join(&mut self, first: usize, second: usize) {
        let (Some(Entry::Waiting(a)), Some(Entry::Waiting(b))) =
            (self.entries.get(&first), self.entries.get(&second))
        else {
            return;
        };
        let (a_ip, b_ip) = (a.peer.ip(), b.peer.ip());
        let other_addr = address_key(a_ip) != address_key(b_ip);
        if other_addr && self.addr(b_ip).circuits >= self.limits.max_circuits_per_addr {
            self.forget_addr_if_empty(b_ip);
            return self.refuse_waiting(second, Refusal::CircuitLimitPerAddr);
        }
        let (buf_a, buf_b) = match (Buffer::new(self.forwarding), Buffer::new(self.forwarding)) {
            (Ok(x), Ok(y)) => (x, y),
            _ => {
                // No pipes (descriptors ran out): both are told.
                self.refuse_waiting(first, Refusal::OutOfResources);
                return self.refuse_waiting(second, Refusal::OutOfResources);
            }
        };
        let (Some(a), Some(b)) = (self.take_waiting(first), self.take_waiting(second)) else {
            return;
        };
        let Some((id, expiry)) = a.circuit else {
            return;
        };
        // take_waiting released the pending circuit; it is one joined circuit now.
        self.circuits += 1;
        self.addr(a_ip).circuits += 1;
        if other_addr {
            self.addr(b_ip).circuits += 1;
        }
        self.joined += 1;
        self.publish();
        self.used.insert(id, expiry);
        let now = Instant::now();
        let mut circuit = Box::new(Circuit {
            id,
            sides: [
                Side {
                    stream: a.stream,
                    peer: a.peer,
                },
                Side {
                    stream: b.stream,
                    peer: b.peer,
                },
            ],
            dirs: [buf_a, buf_b].map(|buffer| Direction {
                buffer,
                eof: false,
                done: false,
            }),
            joined_at: now,
            last_active: now,
            bytes: 0,
            bucket: Bucket::new(self.limits.circuit_bytes_per_sec, now),
            wake_at: None,
        });
        self.shared.joined.fetch_add(1, Ordering::Relaxed);
        let both = Interest::READABLE | Interest::WRITABLE;
        let mut ok = true;
        for (i, side) in circuit.sides.iter_mut().enumerate() {
            ok &= self
                .poll
                .registry()
                .reregister(&mut side.stream, Token(2 * first + i), both)
                .is_ok();
            // The sockets are idle: the line goes out whole or the circuit is dead.
            ok &= matches!((&side.stream).write(wire::JOINED.as_bytes()), Ok(n) if n == wire::JOINED.len());
        }
        let sides = [circuit.sides[0].peer, circuit.sides[1].peer];
        self.emit(RelayEvent::Joined {
            circuit: short(&id),
            sides,
        });
        self.entries.insert(first, Entry::Circuit(circuit));
        if !ok {
            self.close(
                first,
                CloseReason::Failed("could not answer both sides".into()),
            );
            return;
        }
        // Either side may have sent bytes already (their edges are spent): pump now.
        self.pump(first, now);
    }

    /// Moves what can be moved both ways; closes the circuit when it is done or broken.
    fn pump(&mut self, key: usize, now: Instant) {
        let Some(Entry::Circuit(c)) = self.entries.get_mut(&key) else {
            return;
        };
        let mut moved = 0u64;
        let mut wait: Option<Duration> = None;
        let mut failed = None;
        for d in 0..2 {
            if c.dirs[d].done {
                continue;
            }
            let (src, dst) = if d == 0 {
                (&c.sides[0].stream, &c.sides[1].stream)
            } else {
                (&c.sides[1].stream, &c.sides[0].stream)
            };
            match pump_direction(
                &mut c.dirs[d],
                src,
                dst,
                &mut c.bucket,
                &mut self.total,
                now,
                &mut moved,
            ) {
                Ok(Pumped::Blocked) | Ok(Pumped::Done) => {}
                Ok(Pumped::Throttled(after)) => {
                    wait = Some(wait.map_or(after, |w| w.min(after)));
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if moved > 0 {
            c.bytes += moved;
            c.last_active = now;
            self.shared.bytes.fetch_add(moved, Ordering::Relaxed);
        }
        if let Some(e) = failed {
            return self.close(key, CloseReason::Failed(e.to_string()));
        }
        if c.dirs[0].done && c.dirs[1].done {
            return self.close(key, CloseReason::Ended);
        }
        if let Some(after) = wait {
            let at = now + after.max(Duration::from_millis(1));
            if c.wake_at.is_none_or(|w| at < w) {
                c.wake_at = Some(at);
                self.timers.push(Reverse((at, key)));
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, key))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(Entry::Circuit(c)) = self.entries.get_mut(&key) {
                if c.wake_at.is_some_and(|w| w <= now) {
                    c.wake_at = None;
                }
                self.pump(key, now);
            }
        }
    }

    /// Closes a joined circuit (dropping both sockets) and reports it.
    fn close(&mut self, key: usize, why: CloseReason) {
        let Some(Entry::Circuit(c)) = self.entries.remove(&key) else {
            return;
        };
        let (a_ip, b_ip) = (c.sides[0].peer.ip(), c.sides[1].peer.ip());
        self.circuits -= 1;
        self.joined -= 1;
        self.publish();
        self.addr(a_ip).circuits -= 1;
        if address_key(a_ip) != address_key(b_ip) {
            self.addr(b_ip).circuits -= 1;
        }
        self.forget_addr_if_empty(a_ip);
        self.forget_addr_if_empty(b_ip);
        self.emit(RelayEvent::Closed {
            circuit: short(&c.id),
            sides: [c.sides[0].peer, c.sides[1].peer],
            bytes: c.bytes,
            lasted: c.joined_at.elapsed(),
            why,
        });
    }

    /// Reads and drops what a refused client still sends; ends on its FIN.
    fn discard(&mut self, key: usize) {
        let Some(Entry::Refusing(r)) = self.entries.get_mut(&key) else {
            return;
        };
        let mut sink = [0u8; 4096];
        // Bounded per wake-up: a client streaming junk cannot keep the loop here.
        for _ in 0..16 {
            match (&r.stream).read(&mut sink) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.entries.remove(&key);
        self.refusing -= 1;
    }

    /// Deadlines: first lines, pending sides, idle and old circuits, lingering refusals.
    fn sweep(&mut self) {
        let now = Instant::now();
        self.last_sweep = now;
        if self.accept_stalled {
            self.accept_all();
        }
        let mut refuse = Vec::new();
        let mut close = Vec::new();
        let mut drop_refusing = Vec::new();
        for (&key, entry) in &self.entries {
            match entry {
                Entry::Waiting(w) if now >= w.deadline => refuse.push((
                    key,
                    if w.circuit.is_some() {
                        Refusal::OtherSideAbsent
                    } else {
                        Refusal::LineTimeout
                    },
                )),
                Entry::Circuit(c) => {
                    if now.duration_since(c.joined_at) >= self.limits.max_lifetime {
                        close.push((key, CloseReason::Lifetime));
                    } else if now.duration_since(c.last_active) >= self.limits.idle_timeout {
                        close.push((key, CloseReason::Idle));
                    }
                }
                Entry::Refusing(r) if now >= r.until => drop_refusing.push(key),
                _ => {}
            }
        }
        for (key, r) in refuse {
            self.refuse_waiting(key, r);
        }
        for (key, why) in close {
            self.close(key, why);
        }
        for key in drop_refusing {
            if self.entries.remove(&key).is_some() {
                self.refusing -= 1;
            }
        }
        if now.duration_since(self.last_purge) >= PURGE_EVERY {
            self.last_purge = now;
            self.purge_used();
        }
    }

    fn purge_used(&mut self) {
        let now = SystemTime::now();
        self.used.retain(|_, expiry| *expiry >= now);
    }

    fn close_all(&mut self) {
        let keys: Vec<usize> = self.entries.keys().copied().collect();
        for key in keys {
            match self.entries.get(&key) {
                Some(Entry::Circuit(_)) => self.close(key, CloseReason::Shutdown),
                _ => {
                    self.entries.remove(&key);
                }
            }
        }
        self.waiting = 0;
        self.refusing = 0;
        self.publish();
    }
}

/// Pumps one direction until a socket blocks, a rate stops it, or its FIN is passed
/// on. Adds the bytes written to `moved`.
fn pump_direction(
    dir: &mut Direction,
    src: &TcpStream,
    dst: &TcpStream,
    circuit: &mut Bucket,
    total: &mut Bucket,
    now: Instant,
    moved: &mut u64,
) -> io::Result<Pumped> {
    loop {
        while dir.buffer.held() > 0 {
            match dir.buffer.drain(dst) {
                Ok(n) => *moved += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let held = dir.buffer.held();
        if dir.eof {
            if held > 0 {
                return Ok(Pumped::Blocked);
            }
            // Half-close: the other side reads the end of this direction, and may
            // still send the other way.
            let _ = dst.shutdown(Shutdown::Write);
            dir.done = true;
            return Ok(Pumped::Done);
        }
        let room = dir.buffer.room();
        if room == 0 {
            // The last drain said WouldBlock: the writable edge calls again.
            return Ok(Pumped::Blocked);
        }
        let want = room as u64;
        let allowed = circuit.available(now).min(total.available(now));
        let enough = want.min(THROTTLE_CHUNK);
        if allowed < enough {
            let after = circuit
                .wait_for(enough, now)
                .max(total.wait_for(enough, now));
            return Ok(Pumped::Throttled(after));
        }
        let max = usize::try_from(allowed.min(want)).unwrap_or(room);
        match dir.buffer.fill(src, max) {
            Ok(0) => dir.eof = true,
            Ok(n) => {
                circuit.take(n as u64, now);
                total.take(n as u64, now);
            }
            // Nothing to read (and, if bytes are held, the last drain blocked too):
            // the next readable or writable edge calls again.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Pumped::Blocked),
            Err(e) => return Err(e),
        }
    }
}

/// The first 8 hex characters of a circuit id.
fn short(id: &CircuitId) -> String {
    data_encoding::HEXLOWER.encode(&id.0[..4])
}
