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
//! the original C++ client's unterminated one-query-per-connection style.

mod directory;
mod server;

pub use directory::UserEntry;

use crate::error::Result;
use crate::limits;
use crate::thread::spawn_named;
use directory::Directory;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// Tunables of a [`Registry`]. `Default` gives the values in [`crate::limits`].
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// How long a legacy (one-shot) registration lives after the last legacy query from
    /// its IP (any query: the original client never says it is still there).
    pub legacy_lease: Duration,
    /// How long an unterminated query may wait for more bytes before it counts as whole.
    pub legacy_grace: Duration,
    /// How long a query may take to arrive once it has started (slowloris guard).
    pub query_timeout: Duration,
    /// How long a connection holding no registration may stay silent.
    pub idle_timeout: Duration,
    /// Most open connections; past it, new ones get `ERR,Server busy` and are closed.
    pub max_connections: usize,
    /// Most registered users; past it, `INIT` gets `ERR,Registry full`.
    pub max_users: usize,
    /// Event-loop threads; 0 (the default) means one per core, at most 8.
    pub threads: usize,
    /// Most bytes of registration data held; past it `INIT` gets `ERR,Registry full`.
    pub memory_budget: usize,
    /// Most unsent answer bytes one connection may hold before its queries wait.
    pub max_unsent_per_conn: usize,
    /// A connection whose unsent output the socket takes none of for this long is
    /// closed and its memory freed.
    pub slow_reader_deadline: Duration,
    /// Most open connections from one address (one /64 for IPv6).
    pub max_conns_per_addr: usize,
    /// Most registrations (session and legacy) held by one address.
    pub max_users_per_addr: usize,
    /// Sustained queries per second from one address.
    pub queries_per_sec_per_addr: u32,
    /// Queries one address may send at once above its sustained rate.
    pub query_burst_per_addr: u32,
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
        /// The first line of the answer (cut to 120 bytes), e.g. `OK`, `ERR,User not found!`.
        outcome: String,
        /// Whether it came in the legacy unterminated framing.
        legacy: bool,
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

    /// Bind to `addr` (port 0 picks a free port) and start serving.
    pub fn bind(self, addr: impl ToSocketAddrs) -> Result<Registry> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let loops = match self.config.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
            n => n,
        };
        let directory = Arc::new(Directory::new(self.config.max_users));
        let shared = Arc::new(server::Shared {
            config: self.config,
            hook: self.hook,
            directory: directory.clone(),
            stop: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        });
        let mut servers = Vec::with_capacity(loops);
        let mut handoffs = Vec::with_capacity(loops);
        for _ in 0..loops {
            let (server, handoff) = server::Server::new(shared.clone())?;
            servers.push(server);
            handoffs.push(handoff);
        }
        let wakers = handoffs.iter().map(|h| h.waker.clone()).collect();
        servers[0].accept_on(mio::net::TcpListener::from_std(listener), handoffs)?;
        let mut registry = Registry {
            local_addr,
            directory,
            shared,
            wakers,
            threads: Vec::with_capacity(loops),
        };
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
