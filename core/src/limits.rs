//! Every size and time limit of p2pchat, in one place.
//!
//! `docs/PROTOCOL.md` cites these same numbers; change both together.

use std::time::Duration;

/// Longest registry query line, in bytes, terminator excluded.
pub const MAX_LINE_LEN: usize = 256 * 1024;
/// Most comma-separated fields in one registry query (verb included).
pub const MAX_FIELDS: usize = MAX_FILES_PER_USER + 4;
/// Longest username, in bytes.
pub const MAX_USERNAME_LEN: usize = 64;
/// Most shared files one user may announce.
pub const MAX_FILES_PER_USER: usize = 4096;
/// Longest shared filename, in bytes (the usual file-system limit).
pub const MAX_FILENAME_LEN: usize = 255;
/// Longest shared-directory path accepted in a legacy form-B `INIT`.
pub const MAX_DIR_LEN: usize = 4096;
/// Most users the registry holds at once.
pub const MAX_USERS: usize = 200_000;
/// Most connections the registry keeps open at once; past it new ones are refused.
pub const MAX_CONNECTIONS: usize = 20_000;

/// How long a legacy (unterminated) query may wait for more bytes before the registry
/// takes what it has as one whole query.
pub const LEGACY_GRACE: Duration = Duration::from_millis(30);
/// An unterminated read of at most this many bytes that already parses as a complete
/// query is answered at once: TCP never splits one `send` this small (the minimum MSS is
/// 536 bytes), so waiting the grace period would only add latency.
pub const LEGACY_FAST_MAX: usize = 512;
/// How long a query may take to arrive once its first byte has (slowloris guard).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a registry connection that holds no registration may stay silent.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a legacy (one-shot) registration lives after its IP's last legacy query.
pub const LEGACY_LEASE: Duration = Duration::from_secs(3600);
/// How long a name claim lives without being used (its key registering the name, or
/// a session of it ending) before it lapses and anyone may take the name.
pub const CLAIM_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// Largest chat message, in bytes of UTF-8.
pub const MAX_CHAT_MESSAGE: usize = 64 * 1024;
/// Longest header line in the peer protocol (request, answer, frame header).
pub const MAX_PEER_LINE: usize = 1024;
/// How long a chat request waits for the receiving person before it counts as declined.
pub const CHAT_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Socket read/write timeout between peers while a request or transfer is in progress
/// (default of `PeerBuilder::io_timeout`); a serving peer also gives up a transfer whose
/// receiver takes no byte for this long. The request line itself has its own deadline,
/// [`REQUEST_LINE_TIMEOUT`].
pub const PEER_IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Timeout for one registry round trip made by a peer.
pub const REGISTRY_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most peer requests served at once (chats waiting for an answer included).
pub const MAX_SERVING: usize = 64;
/// Largest answer a legacy client reads (one `recv` of 1000 bytes).
pub const LEGACY_ANSWER_MAX: usize = 1000;

// ---- Hostile-network bounds (defaults of `RegistryConfig` and `PeerLimits`) ----

/// Registry: most bytes of registration data (names, addresses, filenames, accounted
/// at their stored size) the registry holds; past it `INIT` gets `ERR,Registry full`.
/// Entries cost about their wire size plus 96 bytes, so this holds the full
/// `MAX_USERS` with ~2.5 KB of filenames each, in well under 1 GB of RSS.
pub const REGISTRY_MEMORY_BUDGET: usize = 512 * 1024 * 1024;
/// Registry: most unsent answer bytes one connection may hold (answers shared between
/// connections, such as one `GET_AF` text, count once for each holder).
pub const MAX_UNSENT_PER_CONN: usize = 4 * 1024 * 1024;
/// Registry: how long a connection may hold unsent output without the socket taking
/// any of it before it is closed and its memory freed.
pub const SLOW_READER_DEADLINE: Duration = Duration::from_secs(30);
/// Registry: most open connections from one address (one /64 for IPv6). Room for a
/// busy NAT (an office, a campus) of peers with one session each, yet one address can
/// take only ~1% of `MAX_CONNECTIONS`.
pub const MAX_CONNS_PER_ADDR: usize = 256;
/// Registry: most registrations (session and legacy together) held by one address.
pub const MAX_USERS_PER_ADDR: usize = 256;
/// Registry: sustained queries per second from one address (a token bucket). A peer
/// sends a few queries per user action; 2,000/s leaves a NAT of hundreds of them room
/// while one address gets a small share of what the registry serves (~50,000/s on
/// 2 cores).
pub const QUERIES_PER_SEC_PER_ADDR: u32 = 2_000;
/// Registry: how many queries one address may send at once above its rate.
pub const QUERY_BURST_PER_ADDR: u32 = 4_000;

/// Peer: how long a whole request line may take to arrive, however it trickles in.
pub const REQUEST_LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// Peer: a transfer slower than this many bytes per second over [`MIN_RATE_WINDOW`]
/// is ended (by the sender and by the receiver).
pub const MIN_TRANSFER_RATE: u64 = 1024;
/// Peer: the window over which [`MIN_TRANSFER_RATE`] is judged.
pub const MIN_RATE_WINDOW: Duration = Duration::from_secs(30);
/// Peer: most requests served at once for one address (one /64 for IPv6).
pub const MAX_SERVING_PER_ADDR: usize = 8;
/// Peer: most incoming chat requests waiting for an answer at once. Twice
/// [`MAX_SERVING_PER_ADDR`] (a pending request holds a serving slot, so one address can
/// hold at most that many), so one address alone cannot take every place.
pub const MAX_PENDING_CHAT_REQUESTS: usize = 16;
/// Most incoming file offers waiting for an answer at once (`PeerLimits::max_pending_offers`).
pub const MAX_PENDING_OFFERS: usize = 16;
/// Peer: most chats open at once (each holds a socket and a reader thread). Incoming
/// chats from one address (one /64 for IPv6) count at most [`MAX_SERVING_PER_ADDR`].
pub const MAX_OPEN_CHATS: usize = 32;
/// Peer: most refused connections held at once while their request is read and their
/// `ERR` line delivered (past it a refused connection is closed at once).
pub const MAX_REFUSING: usize = 256;
/// Peer: most refused connections held at once for one address (one /64 for IPv6).
pub const MAX_REFUSING_PER_ADDR: usize = 32;
/// Peer: how long a refused connection may take to send its request (to tell a legacy
/// request, which gets a bare close, from a `P2P/1` one, which gets the `ERR` line).
pub const REFUSAL_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Peer: how long a refused connection is drained after its answer, so that the
/// close is a FIN the client reads after the answer, not a reset that destroys it.
pub const REFUSAL_LINGER: Duration = Duration::from_secs(2);
/// Peer: free space a download must leave in the download directory.
pub const FREE_SPACE_MARGIN: u64 = 64 * 1024 * 1024;
/// Peer: partial downloads untouched for longer than this are removed at start.
pub const STALE_PARTIAL_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

// ---- Live share (`PeerBuilder::live_share`) ----

/// Live share: a change in the shared directory is rescanned once no further change
/// came for this long (a copy or an editor's save is many events; one rescan covers
/// them).
pub const SHARE_SETTLE: Duration = Duration::from_millis(200);
/// Live share: however busy the directory, a change waits at most this long for quiet
/// before its rescan, so a new file reaches the registry within 2 s (this, the scan and
/// one `INIT` round trip).
pub const SHARE_MAX_DELAY: Duration = Duration::from_secs(1);
/// Live share: rescans start at most this often, so a flood of file events costs at most
/// a couple of rescans (and re-registrations) per second.
pub const SHARE_MIN_RESCAN_INTERVAL: Duration = Duration::from_millis(500);
/// Live share: how often the shared directory is rescanned when the system cannot watch
/// it (inotify instances or watches used up).
pub const SHARE_POLL_INTERVAL: Duration = Duration::from_secs(1);

// ---- Talking to the original C++ programs (legacy registry mode, legacy peers) ----

/// Longest query p2pchat sends to a registry in legacy mode, in bytes: the original
/// server reads a query with one `recv` into a 1000-byte buffer and treats it as a C
/// string, so a query must leave room for its terminating zero. An `INIT` that would be
/// longer leaves the last files out (each reported as `PeerEvent::ShareSkipped`).
pub const LEGACY_QUERY_MAX: usize = LEGACY_ANSWER_MAX - 1;
/// Most bytes of one answer read from a registry in legacy mode (read until the
/// registry closes). The original client read only 1000; p2pchat reads whole lists.
pub const LEGACY_READ_MAX: usize = 4 * 1024 * 1024;
/// How often a peer in legacy registry mode sends its `INIT` again. The original
/// server has no sessions: this renews a p2pchat registry's legacy lease
/// ([`LEGACY_LEASE`], 1 h) many times over, and registers the peer again within a
/// minute after an original server restarted (it forgets everyone).
pub const LEGACY_REREGISTER: Duration = Duration::from_secs(60);
/// Largest piece of a chat message sent to an original client in one `send`: it reads
/// with one `recv` of 1000 bytes into a 1000-byte buffer and prints it as a C string,
/// so a full 1000-byte read would print a stray byte after it.
pub const LEGACY_CHAT_PIECE: usize = LEGACY_ANSWER_MAX - 1;
/// Pause between two sends to an original client, so each arrives as its own `recv`
/// (one printed line) rather than merged with the next: see `docs/PROTOCOL.md` §2.4
/// for the measurement behind it.
pub const LEGACY_CHAT_GAP: Duration = Duration::from_millis(50);
/// How long a chat request to an original client waits to see whether it is taken:
/// the original gives its person 5 s and then closes the connection; it sends nothing
/// when its person accepts.
pub const LEGACY_CHAT_ANSWER_WAIT: Duration = Duration::from_secs(6);
/// Longest answer line a peer reads from a registry: a `GET_U` answer for
/// [`MAX_USERS`] names of up to 64 bytes, or one user's 4,096 filenames of 255 bytes,
/// is far longer than a query may be ([`MAX_LINE_LEN`]).
pub const MAX_ANSWER_LEN: usize = 16 * 1024 * 1024;

// ---- Reaching peers behind NATs (registry side, `docs/PROTOCOL.md` §5) ----

/// Registry: how long a reachability check may take, from the first SYN to the
/// listener's `OK probe <token>` line; past it the listener counts as `unreachable`.
/// A listener on the internet answers within a round trip or two; a NAT or a firewall
/// dropping the SYN never does.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Registry: most reachability checks in flight at once (each holds one socket).
pub const PROBE_MAX_IN_FLIGHT: usize = 64;
/// Registry: most reachability checks waiting or in flight for one address (one /64
/// for IPv6); past it a new check waits its turn (see [`PROBE_RETRY_FOR`]).
pub const PROBE_MAX_PER_ADDR: usize = 4;
/// Registry: most reachability checks waiting for a place in flight, and most waiting
/// to be queued again (see [`PROBE_RETRY_FOR`]); past both, a check is not made and the
/// user's reach stays `unknown`.
pub const PROBE_QUEUE: usize = 1024;
/// Registry: most reachability checks one address (one /64 for IPv6) gets per minute
/// (a burst of as many, then one a second); past it a check waits its turn (see
/// [`PROBE_RETRY_FOR`]). A peer's port rarely changes; without this, a client could
/// re-register port after port and use the registry to scan its own address.
pub const PROBES_PER_MINUTE_PER_ADDR: u32 = 60;
/// Registry: how long a check that did not fit (the queue full, its address over
/// [`PROBE_MAX_PER_ADDR`]) is tried again, once a second, before the user's reach is
/// left `unknown`: a NAT with many peers behind one address gets each checked in turn.
pub const PROBE_RETRY_FOR: Duration = Duration::from_secs(300);
/// Registry: longest answer line read from a probed listener (`OK probe <token>` is
/// 42 bytes).
pub const PROBE_ANSWER_MAX: usize = 128;
/// Registry: most unsent bytes a watch session may hold; a push that would go past it
/// is dropped (counted and logged): a watcher that does not read costs at most this.
pub const WATCH_MAX_UNSENT: usize = 16 * 1024;
/// Registry: most `CONNECT`, `RELAY` and `PUNCH` queries one session may send per minute
/// (refused past it): each makes another peer connect somewhere, so a registry must
/// not let one client turn it into a dial-out amplifier.
pub const SIGNALS_PER_MINUTE: u32 = 20;
/// Registry: most `CONNECT`, `RELAY` and `PUNCH` queries all sessions from one address (one /64
/// for IPv6) may send per minute on one node: without it, an address holding many
/// sessions would multiply [`SIGNALS_PER_MINUTE`] by them. Six sessions' worth, so a
/// few busy peers behind one NAT are not refused.
pub const SIGNALS_PER_MINUTE_PER_ADDR: u32 = 120;
/// Registry: how long a relay token it mints stays valid (both sides connect to the
/// relay within it).
pub const RELAY_TOKEN_TTL: Duration = Duration::from_secs(60);

// ---- The relay (`RelayLimits`; PROTOCOL.md §5.4) ----

/// Relay: longest first line (`RELAY/1 <token>\n`, 89 bytes with an 80-character
/// token), terminator included; a longer one is refused.
pub const RELAY_MAX_LINE: usize = 128;
/// Relay: how long a new connection may take to send its whole first line.
pub const RELAY_LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// Relay: how long the first side of a circuit waits for the second.
pub const RELAY_PENDING_TIMEOUT: Duration = Duration::from_secs(30);
/// Relay: most circuits at once, a circuit whose first side waits included. Each joined
/// circuit holds two sockets and (Linux) two pipes: six descriptors.
pub const RELAY_MAX_CIRCUITS: usize = 1024;
/// Relay: most circuits one address (one /64 for IPv6) takes part in at once.
pub const RELAY_MAX_CIRCUITS_PER_ADDR: usize = 32;
/// Relay: most connections not yet joined (reading their first line, or waiting for the
/// other side) at once.
pub const RELAY_MAX_PENDING: usize = 256;
/// Relay: most connections not yet joined from one address (one /64 for IPv6).
pub const RELAY_MAX_PENDING_PER_ADDR: usize = 16;
/// Relay: bytes per second one circuit forwards, both directions together (a token
/// bucket; over it the relay stops reading, TCP pushes back, no byte is dropped).
/// 0 means no limit.
pub const RELAY_CIRCUIT_BYTES_PER_SEC: u64 = 16 * 1024 * 1024;
/// Relay: bytes per second all circuits together forward. 0 means no limit.
pub const RELAY_TOTAL_BYTES_PER_SEC: u64 = 128 * 1024 * 1024;
/// Relay: longest life of a joined circuit; then both sides are closed (a cut-off
/// download resumes on a new circuit).
pub const RELAY_MAX_LIFETIME: Duration = Duration::from_secs(2 * 3600);
/// Relay: a joined circuit that forwards no byte either way for this long is closed.
pub const RELAY_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Relay: most refused connections held at once while their `ERR` line drains (past it
/// a refused connection is closed at once); each for at most [`REFUSAL_LINGER`].
pub const RELAY_MAX_REFUSING: usize = 256;
/// Relay: most refused connections held at once for one address (one /64 for IPv6), so
/// one address cannot take every lingering place.
pub const RELAY_MAX_REFUSING_PER_ADDR: usize = 32;
/// Relay: most joined circuits remembered until their token expires (so a token joins
/// once); past it new circuits are refused as busy.
pub const RELAY_MAX_USED_TOKENS: usize = 100_000;

// Reaching peers behind NATs, the peer's side (docs/PROTOCOL.md §5).

/// Longest line read on a watch session (a push is far shorter; anything longer is a
/// broken registry and ends the session).
pub const MAX_PUSH_LINE: usize = 1024;
/// First wait before a dropped watch session is opened again; doubled after each
/// failure up to [`WATCH_BACKOFF_MAX`].
pub const WATCH_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between two attempts to open the watch session.
pub const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Most dial-outs (`DIAL` and `RELAY` pushes being followed) running at once; pushes
/// past it are dropped with a log line (the caller then tries its next path).
pub const MAX_DIAL_OUTS: usize = 4;
/// Most dial-outs started per minute: a registry (or someone who made it push) cannot
/// turn this peer into a connection cannon.
pub const MAX_DIAL_OUTS_PER_MINUTE: usize = 30;
/// How long a caller waits for the callee's reverse connection after `CONNECT`.
pub const REVERSE_WAIT: Duration = Duration::from_secs(15);
/// How long both sides of a hole punch keep trying to connect to each other (`PUNCH`):
/// long enough for the SYNs the kernel sends at 0, 1 and 3 s, so one side's SYN that a
/// NAT dropped (sent before the other side's opened it) is sent again in time.
pub const PUNCH_WAIT: Duration = Duration::from_secs(6);
/// How long a `P2P/2 REVERSE` connection whose token is not (yet) waited for is held
/// while one of this peer's own `CONNECT`s is still waiting for its answer (the callee
/// can be faster than the registry's answer); otherwise it is refused at once.
pub const REVERSE_CLAIM_WAIT: Duration = Duration::from_secs(5);
/// How long a peer waits for a relay's `OK relayed` (the relay holds a lone side for
/// up to 30 s while the other comes).
pub const RELAY_JOIN_WAIT: Duration = Duration::from_secs(35);
/// Longest line read from a relay before its `OK relayed`.
pub const MAX_RELAY_LINE: usize = 256;
/// After a path to a user failed (no answer, refused), how long that path is skipped
/// for that user before it is tried again.
pub const PATH_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Most users whose failed paths are remembered (the oldest are forgotten first).
pub const MAX_PATH_MEMORY: usize = 1024;
/// How long a caller about to ask for a reverse connection waits for the registry's
/// check of its own listener, when that has not finished yet (a peer that just
/// registered): the registry asks callees to connect back only to reachable callers.
pub const REACH_WAIT: Duration = Duration::from_secs(3);
/// How long a caller waits for the registry's check of a callee that just registered
/// (its reach still `unknown`) before choosing a path: a little over the registry's
/// [`PROBE_TIMEOUT`].
pub const CALLEE_REACH_WAIT: Duration = Duration::from_secs(4);
