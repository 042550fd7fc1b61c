//! The Redis store: several registry nodes sharing one directory.
//!
//! Layout (every key under `p2p:`):
//! - `p2p:u:<name>`: a hash per user — `ip`, `port`, `files` (joined by `,`), `owner`
//!   (`s:<node>:<conn>` for a session, `l:<ip>` for a legacy registration), `key` (hex or
//!   empty), `addr` (the per-address cap's key), `node` (empty for legacy), `cost`.
//! - `p2p:users`: a sorted set of every name (score 0: ordered by name), the index a full
//!   load walks in slices (`ZRANGE`, then pipelined `HMGET`) — never `KEYS`/`SCAN`.
//! - `p2p:addr`: registrations per address key (the per-address cap, across nodes);
//!   `p2p:bytes`: accounted bytes of every registration (the memory budget).
//! - `p2p:nodes` and `p2p:node:<id>` (a key with a 3 s TTL each node refreshes every
//!   500 ms); `p2p:nu:<id>`: the names a node's sessions hold.
//! - `p2p:leases`, `p2p:lease:<ip>` (TTL = the legacy lease, renewed by the IP's legacy
//!   queries) and `p2p:lu:<ip>`: legacy registrations, removed when their lease lapses.
//! - `p2p:log`: a stream naming every change (`s` sequence, `n` the name; never the
//!   entry itself, so the log stays small whatever users share), capped near 100,000
//!   entries; `p2p:seq`: its sequence counter. A follower fetches each changed name's
//!   current state.
//! - `p2p:claim:<name>`: the hex key holding the name's claim, its TTL the claim TTL.
//! - `p2p:registry-key`: the registry key (hex) every live node serves with, refreshed
//!   with the nodes' liveness keys: a node with another key does not start, since
//!   clients pin one registry key per address and a name round-robins over the nodes.
//!
//! Every write is one Lua script, so the ownership check and the change (and its log
//! entry) happen atomically for all nodes. Each node's *sync thread* tails the log
//! (`XREAD BLOCK`) into its replica; a gap in the sequence (trimmed log, Redis
//! restarted empty) or a lost connection makes it reload everything. The replica knows
//! its age: when the last successful read of the log is older than [`FRESH_FOR`], reads
//! are refused with `ERR,Registry unavailable` rather than answered from stale data.
//! The same thread keeps the node alive, reaps dead nodes' users and lapsed legacy
//! leases (a script, atomic; whichever node runs it first does the work), and retries
//! session releases that failed while Redis was away.

use crate::error::{Error, Result};
use crate::identity::PublicKey;
use crate::protocol::{reason, QueryError};
use crate::reach::Reach;
use crate::registry::address_key;
use crate::registry::claims::{Claim, ClaimStore};
use crate::registry::directory::{Caller, Directory, InitOutcome, Listed, Owner, Replicated};
use crate::registry::watch::Watches;
use parking_lot::Mutex;
use redis::{Connection, Script, Value};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// How old the replica may be (time since the last successful read of the change log)
/// and still answer reads: the issue's cross-node visibility bound.
pub(crate) const FRESH_FOR: Duration = Duration::from_secs(1);
/// A node's liveness key lives this long unless refreshed.
const NODE_TTL: Duration = Duration::from_secs(3);
/// How often the sync thread refreshes its node key and reaps dead nodes and lapsed
/// leases: a dead node's users are gone within NODE_TTL + this (+ a log read), < 5 s.
const TICK: Duration = Duration::from_millis(500);
/// Longest wait in `XREAD BLOCK`: the replica's age stays well under [`FRESH_FOR`].
const BLOCK_MS: u64 = 200;
/// Connect and per-command timeouts: an event loop waits at most this long on Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// The sync thread's per-command timeout: longer (it holds up no client; a full load
/// of 100,000 users on a loaded machine must not time out into a resync loop). The
/// replica's freshness is bounded separately ([`FRESH_FOR`]).
const SYNC_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failed connect, the event loops do not try again for this long (a Redis
/// that is down costs each query nothing, not a connect attempt).
pub(super) const RETRY_AFTER: Duration = Duration::from_millis(250);
/// Users loaded per round trip in a full resync.
const LOAD_SLICE: isize = 2_000;
/// Change-log entries read per `XREAD`.
const READ_COUNT: usize = 2_000;
/// The change log's approximate cap (`XADD MAXLEN ~`): a replica further behind than
/// this reloads everything.
const LOG_CAP: usize = 100_000;

/// Lua shared by the write scripts: remove one user with its index, counters and log
/// entry.
const DEL_FN: &str = r#"
local function del(name)
  local uk = 'p2p:u:' .. name
  local h = redis.call('HMGET', uk, 'addr', 'ip', 'node', 'cost')
  if not h[1] then return 0 end
  redis.call('DEL', uk)
  redis.call('ZREM', 'p2p:users', name)
  if redis.call('HINCRBY', 'p2p:addr', h[1], -1) <= 0 then redis.call('HDEL', 'p2p:addr', h[1]) end
  redis.call('DECRBY', 'p2p:bytes', tonumber(h[4]) or 0)
  if h[3] ~= '' then redis.call('SREM', 'p2p:nu:' .. h[3], name)
  else redis.call('SREM', 'p2p:lu:' .. h[2], name) end
  local seq = redis.call('INCR', 'p2p:seq')
  redis.call('XADD', 'p2p:log', 'MAXLEN', '~', LOG_CAP, '*', 's', seq, 'n', name)
  return 1
end
"#;

/// The registry key every live node serves with: ARGV the node's key (hex), TTL ms.
/// Set when absent (the first node, or every node was gone for the TTL), its TTL
/// renewed when it is the node's own; returns the key in force either way.
const REGISTRY_KEY_LUA: &str = r#"
local cur = redis.call('GET', 'p2p:registry-key')
if not cur then
  redis.call('SET', 'p2p:registry-key', ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
if cur == ARGV[1] then redis.call('PEXPIRE', 'p2p:registry-key', ARGV[2]) end
return cur
"#;

/// `INIT`: ARGV name, ip, port, files, owner, key, addr, node, max_users, max_per_addr,
/// cost, budget, lease_ms. Returns OK, UP, or ERR:claimed|taken|full|addr (a live claim
/// by another key is checked first, in the same step: one round trip). As in the memory
/// store, a session may take over a legacy registration of its own IP.
const INIT_LUA: &str = r#"
local name, ip, owner, node = ARGV[1], ARGV[2], ARGV[5], ARGV[8]
local claim = redis.call('GET', 'p2p:claim:' .. name)
if claim and claim ~= ARGV[6] then return 'ERR:claimed' end
local uk = 'p2p:u:' .. name
local cur = redis.call('HMGET', uk, 'owner', 'cost', 'ip', 'port')
if cur[3] ~= ip or cur[4] ~= ARGV[3] then redis.call('HDEL', uk, 'reach') end
local outcome = 'OK'
local cost = tonumber(ARGV[11])
local bytes = tonumber(redis.call('GET', 'p2p:bytes') or '0')
if cur[1] then
  if cur[1] ~= owner and cur[1] ~= 'l:' .. ip then return 'ERR:taken' end
  if bytes - tonumber(cur[2]) + cost > tonumber(ARGV[12]) then return 'ERR:full' end
  redis.call('DECRBY', 'p2p:bytes', tonumber(cur[2]))
  if cur[1] ~= owner then
    redis.call('SREM', 'p2p:lu:' .. ip, name)
    redis.call('SADD', 'p2p:nu:' .. node, name)
  end
  outcome = 'UP'
else
  if redis.call('ZCARD', 'p2p:users') >= tonumber(ARGV[9]) or bytes + cost > tonumber(ARGV[12]) then
    return 'ERR:full'
  end
  if tonumber(redis.call('HGET', 'p2p:addr', ARGV[7]) or '0') >= tonumber(ARGV[10]) then
    return 'ERR:addr'
  end
  redis.call('HINCRBY', 'p2p:addr', ARGV[7], 1)
  redis.call('ZADD', 'p2p:users', 0, name)
  if node ~= '' then redis.call('SADD', 'p2p:nu:' .. node, name)
  else
    redis.call('SADD', 'p2p:lu:' .. ip, name)
    redis.call('SADD', 'p2p:leases', ip)
  end
end
if node == '' then redis.call('SET', 'p2p:lease:' .. ip, '1', 'PX', ARGV[13]) end
redis.call('INCRBY', 'p2p:bytes', cost)
redis.call('HSET', uk, 'ip', ip, 'port', ARGV[3], 'files', ARGV[4], 'owner', owner,
  'key', ARGV[6], 'addr', ARGV[7], 'node', node, 'cost', cost)
local seq = redis.call('INCR', 'p2p:seq')
redis.call('XADD', 'p2p:log', 'MAXLEN', '~', LOG_CAP, '*', 's', seq, 'n', name)
return outcome
"#;

/// `EXIT`: ARGV name, the caller's session owner, the caller's legacy owner.
/// Returns OK or ERR:notfound|owner.
const EXIT_LUA: &str = r#"
local owner = redis.call('HGET', 'p2p:u:' .. ARGV[1], 'owner')
if not owner then return 'ERR:notfound' end
if owner ~= ARGV[2] and owner ~= ARGV[3] then return 'ERR:owner' end
del(ARGV[1])
return 'OK'
"#;

/// A session's end: ARGV owner, then names; removes those the owner still holds.
const RELEASE_LUA: &str = r#"
local n = 0
for i = 2, #ARGV do
  if redis.call('HGET', 'p2p:u:' .. ARGV[i], 'owner') == ARGV[1] then n = n + del(ARGV[i]) end
end
return n
"#;

/// Reaps the users of nodes whose liveness key expired and of lapsed legacy leases.
/// ARGV: a node to count as dead even if its key lives (its own shutdown), or ''.
const REAP_LUA: &str = r#"
local n = 0
for _, node in ipairs(redis.call('SMEMBERS', 'p2p:nodes')) do
  if node == ARGV[1] or redis.call('EXISTS', 'p2p:node:' .. node) == 0 then
    for _, name in ipairs(redis.call('SMEMBERS', 'p2p:nu:' .. node)) do
      if redis.call('HGET', 'p2p:u:' .. name, 'node') == node then n = n + del(name) end
    end
    redis.call('DEL', 'p2p:nu:' .. node, 'p2p:node:' .. node, 'p2p:push:' .. node)
    redis.call('SREM', 'p2p:nodes', node)
  end
end
for _, ip in ipairs(redis.call('SMEMBERS', 'p2p:leases')) do
  if redis.call('EXISTS', 'p2p:lease:' .. ip) == 0 then
    for _, name in ipairs(redis.call('SMEMBERS', 'p2p:lu:' .. ip)) do
      if redis.call('HGET', 'p2p:u:' .. name, 'owner') == 'l:' .. ip then n = n + del(name) end
    end
    redis.call('DEL', 'p2p:lu:' .. ip)
    redis.call('SREM', 'p2p:leases', ip)
  end
end
return n
"#;

/// A reachability result: ARGV name, owner, ip, port, reach; recorded (and logged with
/// the whole entry) only if that session still lists the user at that address.
const REACH_LUA: &str = r#"
local uk = 'p2p:u:' .. ARGV[1]
local h = redis.call('HMGET', uk, 'owner', 'ip', 'port')
if h[1] ~= ARGV[2] or h[2] ~= ARGV[3] or h[3] ~= ARGV[4] then return 0 end
redis.call('HSET', uk, 'reach', ARGV[5])
local seq = redis.call('INCR', 'p2p:seq')
redis.call('XADD', 'p2p:log', 'MAXLEN', '~', LOG_CAP, '*', 's', seq, 'n', ARGV[1])
return 1
"#;

/// A watch session for ARGV[1] opened on node ARGV[2]: other nodes forward its pushes
/// there (the field goes with the user's hash when the registration ends).
const WATCH_LUA: &str = r#"
if redis.call('EXISTS', 'p2p:u:' .. ARGV[1]) == 1 then
  redis.call('HSET', 'p2p:u:' .. ARGV[1], 'watch', ARGV[2])
end
return 0
"#;

/// A push for ARGV[1] (line ARGV[2]) this node ARGV[3] cannot deliver: appended to the
/// push stream of the node holding the user's watch session, if that node is alive. 1
/// if forwarded.
const FORWARD_LUA: &str = r#"
local node = redis.call('HGET', 'p2p:u:' .. ARGV[1], 'watch')
if not node or node == ARGV[3] or redis.call('EXISTS', 'p2p:node:' .. node) == 0 then
  return 0
end
redis.call('XADD', 'p2p:push:' .. node, 'MAXLEN', '~', 1000, '*', 'u', ARGV[1], 'l', ARGV[2])
return 1
"#;

/// Legacy activity: ARGV lease_ms, then IPs; renews the leases of IPs holding some.
const LEASE_LUA: &str = r#"
for i = 2, #ARGV do
  if redis.call('SISMEMBER', 'p2p:leases', ARGV[i]) == 1 then
    redis.call('SET', 'p2p:lease:' .. ARGV[i], '1', 'PX', ARGV[1])
  end
end
return 0
"#;

/// First claim or renewal (SET NX semantics, plus "or it is already mine"): ARGV name,
/// hex key, ttl_ms. Returns 1 granted, 0 another key's.
const CLAIM_LUA: &str = r#"
local k = 'p2p:claim:' .. ARGV[1]
local cur = redis.call('GET', k)
if cur and cur ~= ARGV[2] then return 0 end
redis.call('SET', k, ARGV[2], 'PX', ARGV[3])
return 1
"#;

/// Marks claims used: ARGV ttl_ms, then name/hex-key pairs; each renewed if that key's.
const TOUCH_LUA: &str = r#"
for i = 2, #ARGV, 2 do
  local k = 'p2p:claim:' .. ARGV[i]
  if redis.call('GET', k) == ARGV[i + 1] then redis.call('PEXPIRE', k, ARGV[1]) end
end
return 0
"#;

fn script(body: &str, with_del: bool) -> Script {
    let cap = LOG_CAP.to_string();
    let src = if with_del {
        format!("{DEL_FN}\n{body}")
    } else {
        body.to_string()
    };
    Script::new(&src.replace("LOG_CAP", &cap))
}

struct Scripts {
    init: Script,
    exit: Script,
    release: Script,
    reap: Script,
    lease: Script,
    reach: Script,
    watch: Script,
    forward: Script,
    claim: Script,
    touch: Script,
    registry_key: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            init: script(INIT_LUA, false),
            exit: script(EXIT_LUA, true),
            release: script(RELEASE_LUA, true),
            reap: script(REAP_LUA, true),
            lease: script(LEASE_LUA, false),
            reach: script(REACH_LUA, false),
            watch: script(WATCH_LUA, false),
            forward: script(FORWARD_LUA, false),
            claim: script(CLAIM_LUA, false),
            touch: script(TOUCH_LUA, false),
            registry_key: script(REGISTRY_KEY_LUA, false),
        }
    }
}

/// The bounds the `INIT` script enforces across nodes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreBounds {
    pub max_users: usize,
    pub max_users_per_addr: usize,
    pub memory_budget: usize,
    pub legacy_lease: Duration,
    pub claim_ttl: Duration,
}

/// One connection of the event loops' pool (one command at a time, each under
/// [`COMMAND_TIMEOUT`]), reconnected lazily.
struct Link {
    conn: Option<Connection>,
    retry_at: Option<Instant>,
}

struct Inner {
    client: redis::Client,
    node: String,
    /// The registry's public key (hex), the same on every node (`p2p:registry-key`).
    registry_key: String,
    /// Whether another key in force has been logged (once, not at every tick).
    key_conflict_logged: AtomicBool,
    directory: Arc<Directory>,
    bounds: StoreBounds,
    scripts: Scripts,
    /// One connection per event loop (see [`Inner::with`]): the loops' writes do not
    /// wait for each other's round trips.
    links: Vec<Mutex<Link>>,
    stop: AtomicBool,
    /// Milliseconds since `epoch` of the replica's last successful log read; 0 while a
    /// resync is due.
    fresh_at: AtomicU64,
    epoch: Instant,
    /// IPs whose legacy queries renew their leases at the next tick.
    lease_touches: Mutex<HashSet<IpAddr>>,
    /// Session releases that failed (Redis away), retried at each tick.
    pending_releases: Mutex<Vec<(String, Vec<String>)>>,
    /// This node's watch sessions: pushes forwarded by other nodes go there, and a
    /// watch ends when its user's registration leaves the directory.
    watches: std::sync::OnceLock<Arc<Watches>>,
}

/// Hands each thread its own starting place in the link pool.
static NEXT_LINK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

thread_local! {
    static PREFERRED_LINK: usize = NEXT_LINK.fetch_add(1, Ordering::Relaxed);
}

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::other(format!("redis store: {e}")))
}

fn unavailable(e: impl std::fmt::Display) -> QueryError {
    log::warn!("registry: redis store: {e}");
    QueryError(reason::REGISTRY_UNAVAILABLE)
}

/// A connection under the event loops' timeouts (the event publisher and viewers use
/// the same).
pub(super) fn open_link(client: &redis::Client) -> redis::RedisResult<Connection> {
    open(client, COMMAND_TIMEOUT)
}

fn open(client: &redis::Client, timeout: Duration) -> redis::RedisResult<Connection> {
    let conn = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    Ok(conn)
}

impl Inner {
    /// Runs `f` on the shared connection, (re)connecting first if needed; a failure
    /// drops the connection (the next call reconnects, after [`RETRY_AFTER`]).
    ///
    /// Each thread prefers one link of the pool (the event loops: one each); when it is
    /// busy, any free one; when all are, it waits for its own.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>) -> Result<T> {
        let n = self.links.len().max(1);
        let first = PREFERRED_LINK.with(|i| *i) % n;
        let mut link = (0..n)
            .find_map(|k| self.links.get((first + k) % n)?.try_lock())
            .or_else(|| self.links.get(first).map(|l| l.lock()))
            .ok_or_else(|| store_err("no connection"))?;
        if link.conn.is_none() {
            if link.retry_at.is_some_and(|t| Instant::now() < t) {
                return Err(store_err("unreachable (retrying shortly)"));
            }
            match open(&self.client, COMMAND_TIMEOUT) {
                Ok(c) => {
                    link.conn = Some(c);
                    link.retry_at = None;
                }
                Err(e) => {
                    link.retry_at = Some(Instant::now() + RETRY_AFTER);
                    return Err(store_err(e));
                }
            }
        }
        let Some(conn) = link.conn.as_mut() else {
            return Err(store_err("no connection"));
        };
        match f(conn) {
            Ok(v) => Ok(v),
            Err(e) => {
                // A script's own error keeps the connection; anything else (timeout,
                // reset) may leave a reply in flight: drop it.
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    link.conn = None;
                }
                Err(store_err(e))
            }
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn session_owner(&self, conn: u64) -> String {
        format!("s:{}:{conn}", self.node)
    }

    /// The replica's owner for a stored owner string.
    fn owner_of(&self, stored: &str) -> Option<Owner> {
        if let Some(ip) = stored.strip_prefix("l:") {
            return ip.parse().ok().map(|ip| Owner::Legacy { ip });
        }
        let rest = stored.strip_prefix("s:")?;
        let (node, conn) = rest.rsplit_once(':')?;
        if node == self.node {
            conn.parse().ok().map(Owner::Session)
        } else {
            Some(Owner::Remote)
        }
    }

    fn replicated(&self, f: &HashMap<&str, &[u8]>) -> Option<Replicated> {
        let text = |k: &str| f.get(k).and_then(|v| std::str::from_utf8(v).ok());
        let key = match text("key")? {
            "" => None,
            hex => Some(PublicKey::from_hex(hex)?),
        };
        Some(Replicated {
            ip: text("ip")?.parse().ok()?,
            port: text("port")?.parse().ok()?,
            files: text("files")?.to_string(),
            owner: self.owner_of(text("owner")?)?,
            key,
            reach: text("reach").and_then(Reach::parse),
        })
    }
}

/// The Redis store of one registry node (see the module notes). Dropping it stops and
/// joins its sync thread and removes the node's session users from Redis.
pub(crate) struct RedisStore {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The event publisher's thread (see [`super::events`]), its sink and stop flag,
    /// and the events it could not publish.
    publisher: Mutex<Option<JoinHandle<()>>>,
    events: super::events::EventSink,
    events_stop: Arc<AtomicBool>,
    events_dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

fn node_id() -> String {
    let mut b = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok();
    if !ok {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = (t as u64 ^ u64::from(std::process::id()).rotate_left(32)).to_be_bytes();
    }
    data_encoding::HEXLOWER.encode(&b)
}

impl RedisStore {
    /// Connects to `url`, registers this node and loads the directory into
    /// `directory`; then starts the sync thread. Fails (the registry does not start)
    /// when Redis cannot be reached now (later outages are survived), or when the
    /// nodes already running serve with another key than `registry_key`.
    pub fn connect(
        url: &str,
        registry_key: &PublicKey,
        directory: Arc<Directory>,
        bounds: StoreBounds,
        pool: usize,
    ) -> Result<RedisStore> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::InvalidArgument(format!("store {url}: {e}")))?;
        let inner = Arc::new(Inner {
            client,
            node: node_id(),
            registry_key: registry_key.to_hex(),
            key_conflict_logged: AtomicBool::new(false),
            directory,
            bounds,
            scripts: Scripts::new(),
            links: (0..pool.clamp(1, 16))
                .map(|_| {
                    Mutex::new(Link {
                        conn: None,
                        retry_at: None,
                    })
                })
                .collect(),
            stop: AtomicBool::new(false),
            fresh_at: AtomicU64::new(0),
            epoch: Instant::now(),
            lease_touches: Mutex::new(HashSet::new()),
            pending_releases: Mutex::new(Vec::new()),
            watches: std::sync::OnceLock::new(),
        });
        let mut sync = Sync::new(inner.clone());
        let mut conn =
            open(&inner.client, SYNC_TIMEOUT).map_err(|e| store_err(format!("{url}: {e}")))?;
        let in_force = sync.heartbeat(&mut conn).map_err(store_err)?;
        if in_force != inner.registry_key {
            let theirs = PublicKey::from_hex(&in_force).map_or_else(
                || "an unreadable key".to_string(),
                |k| k.fingerprint().to_string(),
            );
            return Err(Error::InvalidArgument(format!(
                "store {url}: the registry nodes running on it serve with key {theirs}, \
                 this node with {}: give every node the same registry.key (clients pin \
                 one key per registry address)",
                registry_key.fingerprint()
            )));
        }
        sync.resync(&mut conn).map_err(store_err)?;
        // Fresh as of the load just done (the sync thread keeps it so).
        inner
            .fresh_at
            .store(inner.now_ms().max(1), Ordering::Release);
        sync.conn = Some(conn);
        let events_stop = Arc::new(AtomicBool::new(false));
        let events_dropped = Arc::new(AtomicU64::new(0));
        let (publisher, events) = super::events::publisher(
            inner.client.clone(),
            inner.node.clone(),
            events_dropped.clone(),
            events_stop.clone(),
        );
        let publisher = crate::thread::spawn_named("p2p-registry-events", move || publisher.run())?;
        let thread = match crate::thread::spawn_named("p2p-registry-store", move || sync.run()) {
            Ok(t) => t,
            Err(e) => {
                events_stop.store(true, Ordering::SeqCst);
                let _ = publisher.join();
                return Err(e.into());
            }
        };
        Ok(RedisStore {
            inner,
            thread: Mutex::new(Some(thread)),
            publisher: Mutex::new(Some(publisher)),
            events,
            events_stop,
            events_dropped,
        })
    }

    /// This node's id in Redis (random at each start): the tag of its published events.
    pub fn node_id(&self) -> &str {
        &self.inner.node
    }

    /// What the registry's hook hands its events to (never blocks; see
    /// [`super::events`]).
    pub fn event_sink(&self) -> super::events::EventSink {
        self.events.clone()
    }

    /// Events not published so far (the publisher's queue full, or Redis slow or away).
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped.load(Ordering::Relaxed)
    }

    /// `Err(Registry unavailable)` when the replica may be stale (see [`FRESH_FOR`]).
    pub fn check_fresh(&self) -> std::result::Result<(), QueryError> {
        let at = self.inner.fresh_at.load(Ordering::Acquire);
        let age = self.inner.now_ms().saturating_sub(at);
        if at == 0 || age > FRESH_FOR.as_millis() as u64 {
            return Err(QueryError(reason::REGISTRY_UNAVAILABLE));
        }
        Ok(())
    }

    /// `INIT` decided in Redis (ownership, caps, budget across nodes), then applied to
    /// the local replica so this node's next read sees it at once.
    pub fn init(
        &self,
        caller: Caller,
        username: &str,
        port: u16,
        files: &[&str],
    ) -> std::result::Result<InitOutcome, QueryError> {
        let inner = &self.inner;
        let joined = files.join(",");
        let (owner, node) = if caller.session {
            (inner.session_owner(caller.conn), inner.node.as_str())
        } else {
            (format!("l:{}", caller.ip), "")
        };
        let key_hex = caller.key.map(|k| k.to_hex()).unwrap_or_default();
        let cost = username.len() + joined.len() + super::super::directory::ENTRY_OVERHEAD;
        let b = inner.bounds;
        let reply: String = inner
            .with(|c| {
                inner
                    .scripts
                    .init
                    .arg(username)
                    .arg(caller.ip.to_string())
                    .arg(port)
                    .arg(&joined)
                    .arg(&owner)
                    .arg(&key_hex)
                    .arg(address_key(caller.ip).to_string())
                    .arg(node)
                    .arg(b.max_users)
                    .arg(b.max_users_per_addr)
                    .arg(cost)
                    .arg(b.memory_budget)
                    .arg(millis(b.legacy_lease))
                    .invoke(c)
            })
            .map_err(unavailable)?;
        let outcome = match reply.as_str() {
            "OK" => InitOutcome::Registered,
            "UP" => InitOutcome::Updated,
            "ERR:claimed" => return Err(QueryError(reason::CLAIMED)),
            "ERR:taken" => return Err(QueryError(reason::USERNAME_TAKEN)),
            "ERR:full" => return Err(QueryError(reason::REGISTRY_FULL)),
            "ERR:addr" => return Err(QueryError(reason::TOO_MANY_USERS)),
            other => return Err(unavailable(format!("unexpected INIT reply {other:?}"))),
        };
        let owner = if caller.session {
            Owner::Session(caller.conn)
        } else {
            Owner::Legacy { ip: caller.ip }
        };
        inner.directory.apply_set(
            username,
            Replicated {
                ip: caller.ip,
                port,
                files: joined,
                owner,
                key: caller.key,
                reach: None,
            },
        );
        Ok(outcome)
    }

    /// `EXIT` decided in Redis, then applied locally.
    pub fn exit(&self, caller: Caller, username: &str) -> std::result::Result<(), QueryError> {
        let inner = &self.inner;
        let session = if caller.session {
            inner.session_owner(caller.conn)
        } else {
            String::new()
        };
        let reply: String = inner
            .with(|c| {
                inner
                    .scripts
                    .exit
                    .arg(username)
                    .arg(&session)
                    .arg(format!("l:{}", caller.ip))
                    .invoke(c)
            })
            .map_err(unavailable)?;
        match reply.as_str() {
            "OK" => {
                inner.directory.apply_remove(username);
                Ok(())
            }
            "ERR:notfound" => Err(QueryError(reason::USER_NOT_FOUND)),
            "ERR:owner" => Err(QueryError(reason::NOT_OWNER)),
            other => Err(unavailable(format!("unexpected EXIT reply {other:?}"))),
        }
    }

    /// A session ended: remove what it holds, in Redis (retried by the sync thread if
    /// Redis is away now) and locally; returns the names released locally.
    pub fn release_session<'a>(
        &self,
        conn: u64,
        names: impl IntoIterator<Item = &'a String>,
    ) -> Vec<String> {
        let names: Vec<String> = names.into_iter().cloned().collect();
        if names.is_empty() {
            return names;
        }
        let owner = self.inner.session_owner(conn);
        if let Err(e) = self.inner.release(&owner, &names) {
            log::warn!("registry: session release deferred: {e}");
            self.inner
                .pending_releases
                .lock()
                .push((owner, names.clone()));
        }
        self.inner.directory.release_session(conn, &names)
    }

    /// A reachability result this node's prober found for one of its sessions' users,
    /// recorded in Redis so every node's `GET_P` answers it (best effort: when Redis is
    /// away the other nodes keep `unknown`, never a wrong value).
    pub fn set_reach(&self, username: &str, at: Listed, reach: Reach) {
        let inner = &self.inner;
        let done = inner.with(|c| {
            inner
                .scripts
                .reach
                .arg(username)
                .arg(inner.session_owner(at.conn))
                .arg(at.ip.to_string())
                .arg(at.port)
                .arg(reach.as_str())
                .invoke::<i64>(c)
        });
        if let Err(e) = done {
            log::warn!("registry: reachability of {username} not shared: {e}");
        }
    }

    /// Where forwarded pushes are delivered (set once the loops exist).
    pub fn attach_watches(&self, watches: Arc<Watches>) {
        let _ = self.inner.watches.set(watches);
    }

    /// A watch session for `user` opened on this node (best effort: while Redis is
    /// away, pushes from other nodes do not reach it).
    pub fn watch_here(&self, user: &str) {
        let inner = &self.inner;
        let done = inner.with(|c| {
            inner
                .scripts
                .watch
                .arg(user)
                .arg(&inner.node)
                .invoke::<i64>(c)
        });
        if let Err(e) = done {
            log::warn!("registry: {user}'s watch not shared: {e}");
        }
    }

    /// Forwards a push this node has no watcher for to the node holding `user`'s
    /// watch session; whether it was handed to that node.
    pub fn forward_push(&self, user: &str, line: &str) -> bool {
        let inner = &self.inner;
        let line = line.trim_end_matches('\n');
        inner
            .with(|c| {
                inner
                    .scripts
                    .forward
                    .arg(user)
                    .arg(line)
                    .arg(&inner.node)
                    .invoke::<i64>(c)
            })
            .is_ok_and(|n| n == 1)
    }

    /// A well-formed legacy query came from `ip` (its lease is renewed at the next
    /// tick, off the event loop).
    pub fn legacy_activity(&self, ip: IpAddr) {
        let mut t = self.inner.lease_touches.lock();
        if t.len() < 100_000 {
            t.insert(ip);
        }
    }
}

impl Inner {
    fn release(&self, owner: &str, names: &[String]) -> Result<()> {
        self.with(|c| {
            let mut inv = self.scripts.release.prepare_invoke();
            inv.arg(owner);
            for n in names {
                inv.arg(n);
            }
            inv.invoke::<i64>(c)
        })
        .map(drop)
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.events_stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        if let Some(t) = self.publisher.lock().take() {
            let _ = t.join();
        }
        // A clean stop: this node's session users go now, not when its key expires.
        let node = self.inner.node.clone();
        let _ = self
            .inner
            .with(|c| self.inner.scripts.reap.arg(&node).invoke::<i64>(c));
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The sync thread's state: its own connection (blocking reads of the log must not
/// hold the event loops' one) and where it is in the log.
struct Sync {
    inner: Arc<Inner>,
    conn: Option<Connection>,
    last_id: String,
    /// Where this node is in its own push stream (`p2p:push:<node>`).
    push_id: String,
    last_seq: u64,
    next_tick: Instant,
}

/// Field/value pairs of one stream entry.
type Fields<'a> = HashMap<&'a str, &'a [u8]>;

fn bulk(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

impl Sync {
    fn new(inner: Arc<Inner>) -> Sync {
        Sync {
            inner,
            conn: None,
            last_id: "0-0".into(),
            push_id: "0-0".into(),
            last_seq: 0,
            next_tick: Instant::now(),
        }
    }

    fn run(mut self) {
        let mut resync_due = false;
        while !self.inner.stop.load(Ordering::SeqCst) {
            let mut conn = match self.conn.take() {
                Some(c) => c,
                None => match open(&self.inner.client, SYNC_TIMEOUT) {
                    Ok(c) => {
                        resync_due = true;
                        c
                    }
                    Err(e) => {
                        log::debug!("registry: redis store unreachable: {e}");
                        std::thread::sleep(RETRY_AFTER);
                        continue;
                    }
                },
            };
            let step = (|| -> redis::RedisResult<bool> {
                if Instant::now() >= self.next_tick || resync_due {
                    self.next_tick = Instant::now() + TICK;
                    self.heartbeat(&mut conn)?;
                    self.chores(&mut conn)?;
                }
                if resync_due {
                    self.resync(&mut conn)?;
                }
                self.follow(&mut conn)
            })();
            match step {
                Ok(gap) => {
                    resync_due = gap;
                    self.conn = Some(conn);
                }
                Err(e) => {
                    log::warn!("registry: redis store: {e}; resync when it is back");
                    self.inner.fresh_at.store(0, Ordering::Release);
                    resync_due = true;
                    std::thread::sleep(RETRY_AFTER);
                }
            }
        }
    }

    /// Keep this node alive (and listed: a Redis restart forgets the list) and the
    /// registry key it serves with in force; returns the key in force.
    fn heartbeat(&self, conn: &mut Connection) -> redis::RedisResult<String> {
        let inner = &self.inner;
        let node = &inner.node;
        redis::pipe()
            .cmd("SET")
            .arg(format!("p2p:node:{node}"))
            .arg(1)
            .arg("PX")
            .arg(millis(NODE_TTL))
            .ignore()
            .cmd("SADD")
            .arg("p2p:nodes")
            .arg(node)
            .ignore()
            .query::<()>(conn)?;
        let in_force: String = inner
            .scripts
            .registry_key
            .arg(&inner.registry_key)
            .arg(millis(NODE_TTL))
            .invoke(conn)?;
        // Only while every node was gone (a Redis restart that lost the key, with a
        // node of another key starting first) can this happen to a running node: it
        // keeps serving (its clients pinned its key), and says so once.
        if in_force != inner.registry_key
            && !inner.key_conflict_logged.swap(true, Ordering::Relaxed)
        {
            log::error!(
                "registry: another registry key ({in_force}) is in force in the store: \
                 the nodes do not all serve with the same key"
            );
        }
        Ok(in_force)
    }

    /// Reap dead nodes and lapsed leases, renew leases, retry deferred releases.
    fn chores(&self, conn: &mut Connection) -> redis::RedisResult<()> {
        let inner = &self.inner;
        let reaped: i64 = inner.scripts.reap.arg("").invoke(conn)?;
        if reaped > 0 {
            log::info!("registry: {reaped} users of dead nodes or lapsed leases removed");
        }
        let ips: Vec<IpAddr> = inner.lease_touches.lock().drain().collect();
        for chunk in ips.chunks(1_000) {
            let mut inv = inner.scripts.lease.prepare_invoke();
            inv.arg(millis(inner.bounds.legacy_lease));
            for ip in chunk {
                inv.arg(ip.to_string());
            }
            inv.invoke::<i64>(conn)?;
        }
        let pending = std::mem::take(&mut *inner.pending_releases.lock());
        for (i, (owner, names)) in pending.iter().enumerate() {
            let mut inv = inner.scripts.release.prepare_invoke();
            inv.arg(owner);
            for n in names {
                inv.arg(n);
            }
            if let Err(e) = inv.invoke::<i64>(conn) {
                inner
                    .pending_releases
                    .lock()
                    .extend(pending[i..].iter().cloned());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Reload the whole directory: note where the log is, load every user (the index
    /// in slices, each slice's hashes pipelined), then follow the log from the noted
    /// point (entries since then re-applied: they converge on the latest state). The
    /// node's own sessions' registrations that Redis lost (a restart) are written back.
    fn resync(&mut self, conn: &mut Connection) -> redis::RedisResult<()> {
        let inner = &self.inner;
        // Atomic (MULTI/EXEC): no write may fall between the two.
        let (seq, last): (Option<u64>, Value) = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg("p2p:seq")
            .cmd("XREVRANGE")
            .arg("p2p:log")
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(conn)?;
        let last_id = items(&last)
            .first()
            .and_then(|e| items(e).first())
            .and_then(bulk)
            .map_or_else(|| "0-0".to_string(), |b| String::from_utf8_lossy(b).into());
        if self.push_id == "0-0" {
            // Pushes forwarded before this node started (an earlier node with this id
            // cannot exist: ids are random) are none of its business.
            let last: Value = redis::cmd("XREVRANGE")
                .arg(format!("p2p:push:{}", inner.node))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query(conn)?;
            if let Some(id) = items(&last)
                .first()
                .and_then(|e| items(e).first())
                .and_then(bulk)
            {
                self.push_id = String::from_utf8_lossy(id).into();
            }
        }
        let mut entries = Vec::new();
        let mut start = 0isize;
        loop {
            let names: Vec<String> = redis::cmd("ZRANGE")
                .arg("p2p:users")
                .arg(start)
                .arg(start + LOAD_SLICE - 1)
                .query(conn)?;
            if names.is_empty() {
                break;
            }
            let states = self.fetch(conn, &names)?;
            for (name, state) in names.into_iter().zip(states) {
                if let Some(r) = state {
                    entries.push((name, r));
                }
            }
            start += LOAD_SLICE;
        }
        let present: HashSet<String> = entries.iter().map(|(n, _)| n.clone()).collect();
        let mine = inner.directory.session_entries();
        let n = entries.len();
        inner.directory.replace_all(entries);
        self.last_id = last_id;
        self.last_seq = seq.unwrap_or(0);
        log::info!("registry: redis store loaded, {n} users");
        for (name, c, e) in mine.into_iter().filter(|(n, _, _)| !present.contains(n)) {
            self.restore(conn, &name, c, e)?;
        }
        Ok(())
    }

    /// Hands pushes other nodes forwarded to this node's watch sessions (a push whose
    /// watcher is gone meanwhile is dropped, as on one node).
    fn deliver_pushes(&mut self, list: &[Value]) {
        for e in list {
            let parts = items(e);
            let (Some(id), Some(fv)) = (parts.first().and_then(bulk), parts.get(1)) else {
                continue;
            };
            self.push_id = String::from_utf8_lossy(id).into();
            let f: Fields = items(fv)
                .chunks(2)
                .filter_map(|p| {
                    let k = std::str::from_utf8(bulk(p.first()?)?).ok()?;
                    Some((k, bulk(p.get(1)?)?))
                })
                .collect();
            let text = |k: &str| f.get(k).and_then(|v| std::str::from_utf8(v).ok());
            let (Some(user), Some(line), Some(w)) =
                (text("u"), text("l"), self.inner.watches.get())
            else {
                continue;
            };
            // One line, as a push is (forwarded by a node of this registry, but bounded
            // all the same).
            if line.len() <= 4096 && !line.contains('\n') {
                w.deliver_line(user, format!("{line}\n").into_boxed_str());
            }
        }
    }

    /// The current state of each of `names` (one pipeline of `HMGET`s); `None` for a
    /// name no longer registered (or a record this node cannot read).
    fn fetch(
        &self,
        conn: &mut Connection,
        names: &[String],
    ) -> redis::RedisResult<Vec<Option<Replicated>>> {
        const FIELDS: [&str; 6] = ["ip", "port", "files", "owner", "key", "reach"];
        let mut pipe = redis::pipe();
        for n in names {
            pipe.cmd("HMGET").arg(format!("p2p:u:{n}")).arg(&FIELDS);
        }
        let rows: Vec<Vec<Option<Vec<u8>>>> = pipe.query(conn)?;
        Ok(rows
            .iter()
            .map(|row| {
                let f: Fields = FIELDS
                    .into_iter()
                    .zip(row.iter())
                    .filter_map(|(k, v)| Some((k, v.as_deref()?)))
                    .collect();
                self.inner.replicated(&f)
            })
            .collect())
    }

    /// Writes back a registration of this node's session that Redis no longer has.
    fn restore(
        &self,
        conn: &mut Connection,
        name: &str,
        c: u64,
        e: crate::registry::UserEntry,
    ) -> redis::RedisResult<()> {
        let inner = &self.inner;
        let files = e.files.join(",");
        let b = inner.bounds;
        let cost = name.len() + files.len() + super::super::directory::ENTRY_OVERHEAD;
        let reply: String = inner
            .scripts
            .init
            .arg(name)
            .arg(e.ip.to_string())
            .arg(e.port)
            .arg(&files)
            .arg(inner.session_owner(c))
            .arg(e.key.map(|k| k.to_hex()).unwrap_or_default())
            .arg(address_key(e.ip).to_string())
            .arg(&inner.node)
            .arg(b.max_users)
            .arg(b.max_users_per_addr)
            .arg(cost)
            .arg(b.memory_budget)
            .arg(millis(b.legacy_lease))
            .invoke(conn)?;
        if reply.starts_with("ERR") {
            log::warn!("registry: could not restore {name} after a store loss: {reply}");
        }
        Ok(())
    }

    /// Read the log once (blocking up to [`BLOCK_MS`]) and apply it; `Ok(true)` when
    /// a gap in the sequence calls for a resync.
    fn follow(&mut self, conn: &mut Connection) -> redis::RedisResult<bool> {
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg("p2p:log")
            .arg(format!("p2p:push:{}", self.inner.node))
            .arg(&self.last_id)
            .arg(&self.push_id)
            .query(conn)?;
        let inner = self.inner.clone();
        // [[stream, [[id, [f, v, …]], …]], …] (RESP2); a map under RESP3.
        let streams: Vec<(&[u8], &[Value])> = match &reply {
            Value::Map(m) => m
                .iter()
                .filter_map(|(k, v)| Some((bulk(k)?, items(v))))
                .collect(),
            v => items(v)
                .iter()
                .filter_map(|s| {
                    let s = items(s);
                    Some((bulk(s.first()?)?, s.get(1).map(items).unwrap_or(&[])))
                })
                .collect(),
        };
        let mut entries: Vec<&Value> = Vec::new();
        for (name, list) in streams {
            if name == b"p2p:log" {
                entries.extend(list);
            } else {
                self.deliver_pushes(list);
            }
        }
        // A full read means more may be waiting: the replica is not known to be
        // current until a read comes back short.
        let caught_up = entries.len() < READ_COUNT;
        // The log says which names changed, not how (its entries stay small whatever
        // a user shares): each changed name's current state is fetched once, in one
        // pipeline, and applied — a name changed several times converges on its last.
        let mut changed: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        let mut gap = false;
        for e in entries {
            let parts = items(e);
            let (Some(id), Some(fv)) = (parts.first().and_then(bulk), parts.get(1)) else {
                continue;
            };
            let f: Fields = items(fv)
                .chunks(2)
                .filter_map(|p| {
                    let k = std::str::from_utf8(bulk(p.first()?)?).ok()?;
                    Some((k, bulk(p.get(1)?)?))
                })
                .collect();
            let seq = f
                .get("s")
                .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u64>().ok())
                .unwrap_or(0);
            self.last_id = String::from_utf8_lossy(id).into();
            if seq <= self.last_seq {
                // Already seen (a resync's overlap).
                continue;
            }
            if seq != self.last_seq + 1 {
                log::info!(
                    "registry: change log gap ({} -> {seq}); resync",
                    self.last_seq
                );
                gap = true;
                break;
            }
            self.last_seq = seq;
            if let Some(name) = f.get("n").and_then(|n| std::str::from_utf8(n).ok()) {
                if seen.insert(name.to_string()) {
                    changed.push(name.to_string());
                }
            }
        }
        if gap {
            return Ok(true);
        }
        for slice in changed.chunks(LOAD_SLICE as usize) {
            for (name, state) in slice.iter().zip(self.fetch(conn, slice)?) {
                match state {
                    Some(r) => inner.directory.apply_set(name, r),
                    None => {
                        if inner.directory.apply_remove(name) {
                            // Its registration ended elsewhere: so does its watch here.
                            if let Some(w) = inner.watches.get() {
                                w.end(name);
                            }
                        }
                    }
                }
            }
        }
        // A restarted, empty Redis: the counter went back. Resync.
        if self.last_seq > 0 {
            let seq: Option<u64> = redis::cmd("GET").arg("p2p:seq").query(conn)?;
            if seq.unwrap_or(0) < self.last_seq {
                return Ok(true);
            }
        }
        if caught_up {
            self.inner
                .fresh_at
                .store(self.inner.now_ms().max(1), Ordering::Release);
        }
        Ok(false)
    }
}

/// Name claims in Redis (see the module notes): the claim TTL is the key's, so a
/// lapsed claim is simply gone.
pub(crate) struct RedisClaims {
    inner: Arc<Inner>,
}

impl RedisClaims {
    pub fn new(store: &RedisStore) -> RedisClaims {
        RedisClaims {
            inner: store.inner.clone(),
        }
    }
}

impl std::fmt::Debug for RedisClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisClaims")
    }
}

impl ClaimStore for RedisClaims {
    fn holder(&self, name: &str, _now: SystemTime) -> Result<Option<PublicKey>> {
        let v: Option<String> = self
            .inner
            .with(|c| redis::cmd("GET").arg(format!("p2p:claim:{name}")).query(c))?;
        Ok(v.and_then(|h| PublicKey::from_hex(&h)))
    }

    fn check_and_claim(&self, name: &str, key: &PublicKey, _now: SystemTime) -> Result<Claim> {
        let ttl = millis(self.inner.bounds.claim_ttl);
        let granted: i64 = self.inner.with(|c| {
            self.inner
                .scripts
                .claim
                .arg(name)
                .arg(key.to_hex())
                .arg(ttl)
                .invoke(c)
        })?;
        Ok(if granted == 1 {
            Claim::Granted
        } else {
            Claim::Other
        })
    }

    fn touch_pairs(&self, pairs: &[(&str, &PublicKey)], _now: SystemTime) -> Result<()> {
        let ttl = millis(self.inner.bounds.claim_ttl);
        for chunk in pairs.chunks(1_000) {
            self.inner.with(|c| {
                let mut inv = self.inner.scripts.touch.prepare_invoke();
                inv.arg(ttl);
                for (n, k) in chunk {
                    inv.arg(*n).arg(k.to_hex());
                }
                inv.invoke::<i64>(c)
            })?;
        }
        Ok(())
    }

    fn release(&self, name: &str) -> Result<bool> {
        let n: i64 = self
            .inner
            .with(|c| redis::cmd("DEL").arg(format!("p2p:claim:{name}")).query(c))?;
        Ok(n > 0)
    }

    fn purge_lapsed(&self, _now: SystemTime) -> Result<usize> {
        // Redis expires them itself.
        Ok(0)
    }
}
