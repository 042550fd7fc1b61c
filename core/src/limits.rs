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

/// Largest chat message, in bytes of UTF-8.
pub const MAX_CHAT_MESSAGE: usize = 64 * 1024;
/// Longest header line in the peer protocol (request, answer, frame header).
pub const MAX_PEER_LINE: usize = 1024;
/// How long a chat request waits for the receiving person before it counts as declined.
pub const CHAT_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Socket read/write timeout between peers while a request or transfer is in progress.
pub const PEER_IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Timeout for one registry round trip made by a peer.
pub const REGISTRY_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most peer requests served at once (chats waiting for an answer included).
pub const MAX_SERVING: usize = 64;
/// Largest answer a legacy client reads (one `recv` of 1000 bytes).
pub const LEGACY_ANSWER_MAX: usize = 1000;
