//! The registry server: who is online, at which address, sharing which files.
//!
//! [`Registry`] is a running server. A fixed set of event-loop threads (mio; one per
//! core by default, [`RegistryConfig::threads`]) serves every connection, so 10,000
//! idle peer sessions cost memory for their buffers, not 10,000 threads; the thread
//! count never grows with the load. The user table lives in
//! `directory` behind a short-held lock; answers are built in memory, then written,
//! never while holding it.
//!
//! It speaks both framings of `docs/PROTOCOL.md`: `\n`-terminated session lines, and
//! the original C++ client's unterminated one-query-per-connection style. Session
//! lines travel in plaintext or inside an encrypted link (a `REG/2` marker, a Noise
//! handshake with the registry's key, then AEAD records: see [`crate::secure`]); a
//! name registered over an encrypted session is *claimed* by its key (see `claims`),
//! across restarts when the registry has a data directory.
//!
//! Reaching peers behind NATs (`docs/PROTOCOL.md` §5): after an encrypted session
//! registers a user at a new address, the `prober` thread checks from outside whether
//! the user's listener answers there, and the outcome (`reach`) is listed with the
//! user. A peer's second encrypted session can become its *watch session* (`watch`),
//! on which the registry pushes that outcome and the requests of other peers to be
//! connected to (`CONNECT`: dial the caller back; `RELAY`: meet it at a relay), parsed
//! in `signal`.

mod claims;
mod directory;
mod prober;
mod server;
mod signal;
mod store;
mod watch;

pub use claims::{claims_file, release_name};
pub use directory::UserEntry;
pub use store::events::{EventTail, NodeEvent, TailFrom};
pub use store::StoreSpec;

use crate::error::{Error, Result};
use crate::identity::{Fingerprint, Identity, PublicKey};
use crate::limits;
use crate::thread::spawn_named;
use directory::{Bounds, Directory};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// Tunables of a [`Registry`]. `Default` gives the values in [`crate::limits`].
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// How long a legacy (one-shot) registration lives after the last well-formed legacy
    /// query from its IP (any verb: the original client never says it is still there;
    /// junk that does not parse renews nothing).
    pub legacy_lease: Duration,
    /// How long an unterminated query may wait for more bytes before it counts as whole.
    pub legacy_grace: Duration,
    /// How long a query may take to arrive once it has started (slowloris guard).
    pub query_timeout: Duration,
    /// How long a connection holding no registration may stay silent.
    pub idle_timeout: Duration,
    /// Most open connections; past it, new ones get `ERR,Server busy` and are closed.
    /// Lowered at start to fit under the descriptor limit (see
    /// [`Registry::connection_cap`]).
    pub max_connections: usize,
    /// Most registered users; past it, `INIT` gets `ERR,Registry full`.
    pub max_users: usize,
    /// Event-loop threads; 0 (the default) means one per core, at most 8.
    pub threads: usize,
    /// Most bytes of registration data held (username + filenames + 96 bytes of
    /// bookkeeping per user, close to what the process really spends); past it `INIT`
    /// of a new name, or an update that would grow one, gets `ERR,Registry full`.
    pub memory_budget: usize,
    /// Most unsent answer bytes one connection may hold before its queries wait (it is
    /// not read until its output drains; a shared answer such as `GET_AF` counts whole
    /// for each holder but is one copy in memory).
    pub max_unsent_per_conn: usize,
    /// A connection whose unsent output the socket takes none of for this long is
    /// closed and its memory freed (reported as `RegistryEvent::Refused` with
    /// outcome `closed`).
    pub slow_reader_deadline: Duration,
    /// Most open connections from one address (one /64 for IPv6, see
    /// [`address_key`]); past it, `ERR,Too many connections from your address` and
    /// closed.
    pub max_conns_per_addr: usize,
    /// Most registrations (session and legacy) held by one address (one /64 for IPv6);
    /// past it `INIT` of a new name gets `ERR,Too many registrations from your address`.
    pub max_users_per_addr: usize,
    /// Sustained queries per second from one address (one /64 for IPv6), all its
    /// connections together. Over it, its connections are not read until a token is
    /// there again (TCP backpressure; no answer, no event). 0 means no limit.
    pub queries_per_sec_per_addr: u32,
    /// Queries one address may send at once above its sustained rate.
    pub query_burst_per_addr: u32,
    /// Where the registry keeps its key (`registry.key`) and the name claims
    /// (`claims.redb`); created with mode 0700 if missing. `None`: a new key each start
    /// and claims in memory only (a restart forgets them).
    pub data_dir: Option<PathBuf>,
    /// How long a name claim lives unused (see [`limits::CLAIM_TTL`]).
    pub claim_ttl: Duration,
    /// The registry's key, overriding the one in `data_dir` (or the ephemeral one).
    pub identity: Option<Identity>,
    /// The relay offered to peers that cannot reach each other (`RELAY` queries:
    /// tokens minted under its secret; a standalone one, whose secret the registry
    /// shares); `None`: none, unless `embedded_relay` starts one, and `RELAY` is
    /// answered `ERR,No relay available`.
    pub relay_offer: Option<crate::relay::RelayOffer>,
    /// Start a relay inside the registry (on the registry's IP) and offer it, in place
    /// of `relay_offer`; `None` (the default): no embedded relay.
    pub embedded_relay: Option<EmbeddedRelay>,
    /// Where the directory (and, with Redis, the name claims) lives: this process's
    /// memory (the default) or a Redis shared by several registry nodes (see
    /// `docs/SCALE-OUT.md`). With Redis, `max_users`, `memory_budget` and
    /// `max_users_per_addr` hold across all the nodes; connection caps stay per node.
    pub store: StoreSpec,
    /// With the Redis store, whether this node publishes its events (queries with
    /// their outcome, connects, refusals, …) to `p2p:events` for every node's live
    /// display (`p2pchat server --show all`, `p2pchat server log`). On by default; off
    /// spares the node building and queueing an event per query, which a query flood
    /// makes into most of the work. Without Redis, nothing is published either way.
    pub publish_events: bool,
}

/// The relay a registry runs inside itself ([`RegistryConfig::embedded_relay`]): it
/// shares a secret generated at start with the registry, and stops with it.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedRelay {
    /// Its port on the registry's IP; 0: any free port (see [`Registry::relay_addr`]).
    pub port: u16,
    /// Its bounds.
    pub limits: crate::relay::RelayLimits,
    /// When `port` is taken, take any free port instead of failing (for a default
    /// port, such as `p2pchat server`'s registry port + 1).
    pub any_port_if_taken: bool,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            legacy_lease: limits::LEGACY_LEASE,
            legacy_grace: limits::LEGACY_GRACE,
            query_timeout: limits::QUERY_TIMEOUT,
            idle_timeout: limits::IDLE_TIMEOUT,
            max_connections: limits::MAX_CONNECTIONS,
            max_users: limits::MAX_USERS,
            threads: 0,
            memory_budget: limits::REGISTRY_MEMORY_BUDGET,
            max_unsent_per_conn: limits::MAX_UNSENT_PER_CONN,
            slow_reader_deadline: limits::SLOW_READER_DEADLINE,
            max_conns_per_addr: limits::MAX_CONNS_PER_ADDR,
            max_users_per_addr: limits::MAX_USERS_PER_ADDR,
            queries_per_sec_per_addr: limits::QUERIES_PER_SEC_PER_ADDR,
            query_burst_per_addr: limits::QUERY_BURST_PER_ADDR,
            data_dir: None,
            claim_ttl: limits::CLAIM_TTL,
            identity: None,
            store: StoreSpec::Memory,
            publish_events: true,
            relay_offer: None,
            embedded_relay: None,
        }
    }
}

/// Something the registry saw; handed to the hook set with [`RegistryBuilder::on_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    /// A client connected.
    Connected { source: SocketAddr },
    /// A query was answered.
    Query {
        at: SystemTime,
        source: SocketAddr,
        /// The query as received (cut to 200 bytes, invalid UTF-8 replaced).
        query: String,
        /// A summary of the answer: its lines joined with ` | ` (a `GET_AF` answer
        /// starts `OK (N users): `), cut at 160 bytes with `… (N bytes)`; e.g. `OK`,
        /// `ERR,User not found!`, `OK (2 users): alice: notes.txt | bob: `;
        /// `(nothing sent)` for a legacy answer that is nothing, as the original's was.
        outcome: String,
        /// Whether it came in the legacy unterminated framing.
        legacy: bool,
        /// The fingerprint of the key of the encrypted session it came on (`None` for
        /// a plaintext session or a legacy query).
        key: Option<Fingerprint>,
    },
    /// A client's connection closed; `released` are the names its session held.
    Disconnected {
        source: SocketAddr,
        released: Vec<String>,
    },
    /// Legacy registrations whose lease ended.
    LeaseExpired { usernames: Vec<String> },
    /// A client hit a bound (per-address connections, registrations or query rate,
    /// memory budget, a slow reader's deadline, the connection cap).
    Refused {
        source: SocketAddr,
        /// What it was sent, e.g. `ERR,Too many connections from your address`, or
        /// `closed` when it was closed without an answer.
        outcome: String,
    },
    /// A reachability check of a user's listener finished (`docs/PROTOCOL.md` §5.1).
    Reachability {
        user: String,
        /// The address checked: the IP the registry sees, the registered port.
        addr: SocketAddr,
        /// `Reachable` or `Unreachable` (`Unknown` when the check could not run).
        reach: crate::reach::Reach,
    },
}

/// A hook that sees every registry event. Called on the registry's event-loop threads:
/// it must return quickly (print, or send on a channel), or clients wait. A panic in it
/// is caught and logged; the registry carries on.
pub type RegistryHook = Arc<dyn Fn(&RegistryEvent) + Send + Sync>;

/// Configures and starts a [`Registry`].
#[derive(Default)]
pub struct RegistryBuilder {
    config: RegistryConfig,
    hook: Option<RegistryHook>,
    relay_hook: Option<crate::relay::RelayHook>,
}

impl RegistryBuilder {
    /// Use these tunables instead of the defaults.
    pub fn config(mut self, config: RegistryConfig) -> Self {
        self.config = config;
        self
    }

    /// Call `hook` for every event (see [`RegistryHook`] for the rules).
    pub fn on_event(mut self, hook: impl Fn(&RegistryEvent) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Call `hook` for every event of the embedded relay (see
    /// [`crate::relay::RelayHook`]; only with [`RegistryConfig::embedded_relay`]).
    pub fn on_relay_event(
        mut self,
        hook: impl Fn(&crate::relay::RelayEvent) + Send + Sync + 'static,
    ) -> Self {
        self.relay_hook = Some(Arc::new(hook));
        self
    }

    /// Bind to `addr` (port 0 picks a free port) and start serving. Opens (or
    /// creates) the data directory first: its key, and its claims store, which fails
    /// with [`Error::Busy`] while another registry uses the same directory.
    pub fn bind(self, addr: impl ToSocketAddrs) -> Result<Registry> {
        let (identity, mut claims) = open_data(&self.config)?;
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let (relay, relay_offer) = match &self.config.embedded_relay {
            Some(embedded) => {
                let (relay, offer) = start_relay(local_addr, embedded, self.relay_hook)?;
                (Some(relay), Some(offer))
            }
            None => (None, self.config.relay_offer.clone()),
        };
        let loops = match self.config.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
            n => n,
        };
        let directory = Arc::new(Directory::new(Bounds {
            max_users: self.config.max_users,
            memory_budget: self.config.memory_budget,
            max_users_per_addr: self.config.max_users_per_addr,
        }));
        let store = match &self.config.store {
            StoreSpec::Memory => None,
            StoreSpec::Redis(url) => {
                let c = &self.config;
                let bounds = store::redis::StoreBounds {
                    max_users: c.max_users,
                    max_users_per_addr: c.max_users_per_addr,
                    memory_budget: c.memory_budget,
                    legacy_lease: c.legacy_lease,
                    claim_ttl: c.claim_ttl,
                };
                // One Redis connection per event loop, opened when first needed.
                let s = store::redis::RedisStore::connect(
                    url,
                    &identity.public(),
                    directory.clone(),
                    bounds,
                    loops,
                )?;
                // Claims must be shared by the nodes too: a name claimed through one
                // node is refused to another key on every node.
                claims = claims::Claims::from_store(Box::new(store::redis::RedisClaims::new(&s)));
                Some(Arc::new(s))
            }
        };
        // With Redis, every event is also published for the other nodes' displays
        // (offered to a bounded queue: never blocks the loop that emits it), unless
        // this node is told not to.
        let hook: Option<RegistryHook> = match (&store, self.hook) {
            (Some(s), user) if self.config.publish_events => {
                let sink = s.event_sink();
                Some(Arc::new(move |e: &RegistryEvent| {
                    sink.offer(e);
                    if let Some(user) = &user {
                        user(e);
                    }
                }))
            }
            (_, user) => user,
        };
        let max_connections = connection_cap(self.config.max_connections, raise_nofile_limit());
        let mut parts = Vec::with_capacity(loops);
        let mut mailboxes = Vec::with_capacity(loops);
        for _ in 0..loops {
            let (p, mailbox) = server::LoopParts::new()?;
            parts.push(p);
            mailboxes.push(mailbox);
        }
        let (prober, probes) = prober::Prober::new()?;
        let prober_waker = probes.waker();
        // Every finished check fits: at most this many are queued or in flight.
        let (checked_tx, checked_rx) =
            crossbeam_channel::bounded(limits::PROBE_QUEUE + limits::PROBE_MAX_IN_FLIGHT);
        let shared = Arc::new(server::Shared {
            config: self.config,
            max_connections,
            hook,
            directory: directory.clone(),
            stop: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            lingering: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            addrs: Mutex::new(HashMap::new()),
            freed: AtomicUsize::new(0),
            identity,
            claims,
            store,
            relay: relay_offer,
            watches: Arc::new(watch::Watches::new(mailboxes)),
            probes,
        });
        if let Some(store) = &shared.store {
            store.attach_watches(shared.watches.clone());
        }
        let mut servers = Vec::with_capacity(loops);
        let mut handoffs = Vec::with_capacity(loops);
        for (i, p) in parts.into_iter().enumerate() {
            let (server, handoff) = server::Server::new(shared.clone(), p, i);
            servers.push(server);
            handoffs.push(handoff);
        }
        let mut wakers: Vec<Arc<mio::Waker>> = handoffs.iter().map(|h| h.waker.clone()).collect();
        let report = wakers[0].clone();
        wakers.push(prober_waker);
        servers[0].report_checks(checked_rx);
        servers[0].accept_on(mio::net::TcpListener::from_std(listener), handoffs)?;
        let mut registry = Registry {
            local_addr,
            directory,
            shared: shared.clone(),
            wakers,
            threads: Vec::with_capacity(loops + 1),
            relay,
        };
        registry
            .threads
            .push(spawn_named("p2p-registry-probe", move || {
                prober.run(shared, checked_tx, report)
            })?);
        for (i, server) in servers.into_iter().enumerate() {
            // On failure, dropping `registry` stops and joins the loops already started.
            registry
                .threads
                .push(spawn_named(&format!("p2p-registry-{i}"), move || {
                    server.run()
                })?);
        }
        Ok(registry)
    }
}

/// A running registry server. Dropping it (or [`Registry::shutdown`]) stops the server
/// and joins its thread; open connections are closed.
///
/// ```
/// use p2pcore::registry::Registry;
/// use std::io::{BufRead, BufReader, Write};
///
/// let registry = Registry::bind("127.0.0.1:0")?;
/// let mut conn = std::net::TcpStream::connect(registry.local_addr())?;
/// conn.write_all(b"INIT,alice,5000,notes.txt\nGET_U\n")?;
/// let mut lines = BufReader::new(conn).lines();
/// assert_eq!(lines.next().unwrap()?, "OK");
/// assert_eq!(lines.next().unwrap()?, "OK,alice");
/// registry.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Registry {
    local_addr: SocketAddr,
    directory: Arc<Directory>,
    shared: Arc<server::Shared>,
    wakers: Vec<Arc<mio::Waker>>,
    threads: Vec<JoinHandle<()>>,
    /// The embedded relay, stopped (and its thread joined) with the registry.
    relay: Option<crate::relay::Relay>,
}

impl Registry {
    /// Start a registry on `addr` with the default configuration and no hook.
    pub fn bind(addr: impl ToSocketAddrs) -> Result<Registry> {
        Registry::builder().bind(addr)
    }

    /// A builder, for configuration and an event hook.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// The address the registry listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The usernames online now, sorted.
    pub fn users(&self) -> Vec<String> {
        self.directory.usernames()
    }

    /// One user's entry, if online.
    pub fn user(&self, username: &str) -> Option<UserEntry> {
        self.directory.get(username)
    }

    /// How many users are online.
    pub fn user_count(&self) -> usize {
        self.directory.len()
    }

    /// The connection cap in force: [`RegistryConfig::max_connections`], lowered when
    /// the process's descriptor limit (raised to its hard limit at start) leaves less
    /// room, so that past it clients get `ERR,Server busy` rather than an `accept` that
    /// fails for want of descriptors.
    pub fn connection_cap(&self) -> usize {
        self.shared.max_connections
    }

    /// The registry's public key (what clients pin).
    pub fn public_key(&self) -> PublicKey {
        self.shared.identity.public()
    }

    /// The fingerprint of [`public_key`](Self::public_key), what an operator tells
    /// users to compare (`--registry HOST:PORT#FINGERPRINT`).
    pub fn fingerprint(&self) -> Fingerprint {
        self.shared.identity.fingerprint()
    }

    /// The key holding a live claim on `username`, if any.
    pub fn claim(&self, username: &str) -> Result<Option<PublicKey>> {
        self.shared.claims.holder(username, SystemTime::now())
    }

    /// Releases the claim on `username` (it stays registered if online; the next
    /// registration of the name, by anyone, is unclaimed). Whether there was one.
    pub fn release_claim(&self, username: &str) -> Result<bool> {
        self.shared.claims.release(username)
    }

    /// Pushes dropped so far because a watch session was not reading them (see
    /// [`crate::limits::WATCH_MAX_UNSENT`]).
    pub fn pushes_dropped(&self) -> u64 {
        self.shared.watches.dropped()
    }

    /// Bytes of registration data held now, as counted against
    /// [`RegistryConfig::memory_budget`].
    pub fn memory_used(&self) -> usize {
        self.directory.accounted_bytes()
    }

    /// Where the embedded relay listens ([`RegistryConfig::embedded_relay`]).
    pub fn relay_addr(&self) -> Option<SocketAddr> {
        self.relay.as_ref().map(|r| r.local_addr())
    }

    /// What the embedded relay has done so far.
    pub fn relay_stats(&self) -> Option<crate::relay::RelayStats> {
        self.relay.as_ref().map(|r| r.stats())
    }

    /// This node's id in the Redis store (16 hex digits, random at each start): the
    /// tag of the events it publishes for the other nodes' displays (see
    /// [`EventTail`]). `None` with the memory store.
    pub fn node_id(&self) -> Option<String> {
        self.shared.store.as_ref().map(|s| s.node_id().to_string())
    }

    /// Events not published to the Redis store so far (its queue was full, or Redis
    /// was slow or away); 0 with the memory store.
    pub fn events_unpublished(&self) -> u64 {
        self.shared.store.as_ref().map_or(0, |s| s.events_dropped())
    }

    /// Stop serving, close every connection and join the server thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for w in &self.wakers {
            let _ = w.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(relay) = self.relay.take() {
            relay.shutdown();
        }
    }
}

/// Starts the embedded relay on the registry's IP, with a fresh secret, and the offer
/// that points peers to it.
fn start_relay(
    registry: SocketAddr,
    embedded: &EmbeddedRelay,
    hook: Option<crate::relay::RelayHook>,
) -> Result<(crate::relay::Relay, crate::relay::RelayOffer)> {
    use crate::relay::{Relay, RelayAddr, RelayOffer, RelaySecret};
    let secret = RelaySecret::generate()?;
    let mut builder = Relay::builder(secret.clone()).limits(embedded.limits.clone());
    if let Some(hook) = hook {
        builder = builder.on_event(move |e| hook(e));
    }
    let addr = SocketAddr::new(registry.ip(), embedded.port);
    let listener = match std::net::TcpListener::bind(addr) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && embedded.any_port_if_taken => {
            std::net::TcpListener::bind(SocketAddr::new(registry.ip(), 0))
        }
        r => r,
    };
    let relay = listener.and_then(|l| builder.start(l)).map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("cannot start the embedded relay on {addr}: {e}"),
        ))
    })?;
    let offer = RelayOffer {
        addr: RelayAddr::Port(relay.local_addr().port()),
        secret,
    };
    Ok((relay, offer))
}

/// The registry's key file inside its data directory.
pub fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("registry.key")
}

/// The key and the claims store of a registry about to start.
fn open_data(config: &RegistryConfig) -> Result<(Identity, claims::Claims)> {
    let Some(dir) = &config.data_dir else {
        let identity = match &config.identity {
            Some(id) => id.clone(),
            None => Identity::generate()?,
        };
        return Ok((identity, claims::Claims::memory(config.claim_ttl)?));
    };
    create_private_dir(dir)?;
    let identity = match &config.identity {
        Some(id) => id.clone(),
        None => Identity::load_or_create(&key_file(dir))?,
    };
    if matches!(config.store, StoreSpec::Redis(_)) {
        // The claims live in Redis (set up by `bind`); several nodes may share one
        // data directory (one key), so its claims file is not opened (it is locked).
        return Ok((identity, claims::Claims::memory(config.claim_ttl)?));
    }
    let claims = claims::Claims::open(dir, config.claim_ttl)?;
    match claims.purge_lapsed(SystemTime::now()) {
        Ok(n) if n > 0 => log::info!("registry: {n} lapsed name claims removed"),
        Ok(_) => {}
        Err(e) => log::warn!("registry: could not remove lapsed claims: {e}"),
    }
    Ok((identity, claims))
}

/// Creates `dir` (and its parents) with mode 0700 when missing: it holds the
/// registry's private key.
fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!(
                "cannot create the registry data directory {}: {e}",
                dir.display()
            ),
        ))
    })
}

/// Descriptors kept out of the connection cap: refused connections lingering (their
/// `ERR` line on its way), the listener, the pollers and wakers, and whatever else the
/// embedding process opens.
pub(crate) const FD_HEADROOM: usize = 64 + server::MAX_LINGERING;

/// The key per-address bounds are counted under (the peer's caps use the same one).
///
/// ```
/// use p2pcore::registry::address_key;
/// let a = address_key("2001:db8:1:2::1".parse().unwrap());
/// assert_eq!(a, address_key("2001:db8:1:2:ffff::9".parse().unwrap()));
/// assert_ne!(a, address_key("2001:db8:1:3::1".parse().unwrap()));
/// assert_eq!(address_key("::ffff:127.0.0.2".parse().unwrap()), "127.0.0.2".parse::<std::net::IpAddr>().unwrap());
/// ```
pub use crate::net::address_key;

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in
/// force (`None` if it could not be read).
pub(crate) fn raise_nofile_limit() -> Option<libc::rlim_t> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    Some(lim.rlim_cur)
}

/// The connection cap given the configured one and the descriptor limit.
fn connection_cap(configured: usize, nofile: Option<libc::rlim_t>) -> usize {
    match nofile {
        Some(n) if n != libc::RLIM_INFINITY => {
            let room = usize::try_from(n).unwrap_or(usize::MAX);
            configured.min(room.saturating_sub(FD_HEADROOM).max(1))
        }
        _ => configured,
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_stays_under_the_descriptor_limit() {
        assert_eq!(connection_cap(20_000, Some(1024)), 1024 - FD_HEADROOM);
        assert_eq!(connection_cap(20_000, Some(1 << 20)), 20_000);
        assert_eq!(connection_cap(20_000, None), 20_000);
        assert_eq!(connection_cap(20_000, Some(10)), 1);
    }
}
