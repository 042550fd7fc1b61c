//! The live event display across registry nodes: each node on the Redis store
//! publishes its [`RegistryEvent`]s to one capped stream, `p2p:events`, tagged with its
//! node id; a viewer ([`EventTail`]) follows that stream and sees every node's events.
//!
//! A capped stream rather than pub/sub: a viewer that connects (or reconnects) later
//! sees the last events instead of nothing, and the stream's cap
//! ([`EVENTS_CAP`] entries, `XADD MAXLEN ~`) bounds what Redis holds whatever the
//! viewers do; pub/sub would also push to a slow subscriber through Redis's output
//! buffer, which Redis then has to cut. Publishing never holds an event loop up: the
//! registry's hook only offers each event to a bounded channel ([`PUBLISH_QUEUE`]);
//! one publisher thread, owned and joined by the store, sends them in pipelined
//! batches. What does not fit, or cannot be sent (Redis slow or away), is dropped and
//! counted ([`Publisher::dropped`]).
//!
//! Events carry what the local log shows and nothing more: queries are already cut to
//! 200 bytes and answers to 160, and key material appears only as fingerprints.

use crate::error::{Error, Result};
use crate::identity::Fingerprint;
use crate::reach::Reach;
use crate::registry::RegistryEvent;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use redis::{Connection, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The stream every node publishes to.
pub const EVENTS_STREAM: &str = "p2p:events";
/// The stream's approximate cap (`XADD MAXLEN ~`): what a late viewer can look back on.
pub const EVENTS_CAP: usize = 10_000;
/// Most events waiting for the publisher thread; past it, events are dropped and
/// counted (a few hundred bytes each: ~1-2 MB at most).
pub const PUBLISH_QUEUE: usize = 4_096;
/// Most events sent in one pipeline.
const BATCH: usize = 256;
/// Longest value of a decoded field (a query is cut to 200 bytes, an answer to 160; a
/// list of released names is longer): a bigger entry is not an event of ours.
const MAX_FIELD: usize = 64 * 1024;
/// Entries a viewer reads per round trip.
const READ_COUNT: usize = 512;

/// An event of some node of the registry, as read back from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    /// The node's id (16 hex digits, random at each start; see
    /// [`Registry::node_id`](crate::registry::Registry::node_id)).
    pub node: String,
    /// When the node published it (a query: when it was answered).
    pub at: SystemTime,
    /// The event, as the node's own hook saw it.
    pub event: RegistryEvent,
}

fn ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An event's stream fields: `n` node, `e` kind, `t` milliseconds since the epoch, then
/// by kind `s` source, `q` query, `o` outcome, `l` legacy (`1`/`0`), `k` fingerprint,
/// `r` released or expired names (joined by `,`: a username holds no comma), `u` user,
/// `a` address, `h` reach.
pub fn encode(node: &str, at: SystemTime, e: &RegistryEvent) -> Vec<(&'static str, String)> {
    let mut f = vec![("n", node.to_string())];
    let (kind, t) = match e {
        RegistryEvent::Connected { .. } => ("connected", at),
        RegistryEvent::Query { at, .. } => ("query", *at),
        RegistryEvent::Disconnected { .. } => ("disconnected", at),
        RegistryEvent::LeaseExpired { .. } => ("lease_expired", at),
        RegistryEvent::Refused { .. } => ("refused", at),
        RegistryEvent::Reachability { .. } => ("reachability", at),
    };
    f.push(("e", kind.to_string()));
    f.push(("t", ms(t).to_string()));
    match e {
        RegistryEvent::Connected { source } => f.push(("s", source.to_string())),
        RegistryEvent::Query {
            source,
            query,
            outcome,
            legacy,
            key,
            ..
        } => {
            f.push(("s", source.to_string()));
            f.push(("q", query.clone()));
            f.push(("o", outcome.clone()));
            f.push(("l", if *legacy { "1" } else { "0" }.to_string()));
            if let Some(k) = key {
                f.push(("k", k.to_string()));
            }
        }
        RegistryEvent::Disconnected { source, released } => {
            f.push(("s", source.to_string()));
            f.push(("r", released.join(",")));
        }
        RegistryEvent::LeaseExpired { usernames } => f.push(("r", usernames.join(","))),
        RegistryEvent::Refused { source, outcome } => {
            f.push(("s", source.to_string()));
            f.push(("o", outcome.clone()));
        }
        RegistryEvent::Reachability { user, addr, reach } => {
            f.push(("u", user.clone()));
            f.push(("a", addr.to_string()));
            f.push(("h", reach.as_str().to_string()));
        }
    }
    f
}

/// The event in a stream entry's fields ([`encode`]'s); `None` for anything that is
/// not one (a field missing, malformed or longer than 64 KiB).
pub fn decode<'a>(fields: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Option<NodeEvent> {
    let mut map = std::collections::HashMap::new();
    for (k, v) in fields {
        if v.len() > MAX_FIELD || map.len() > 16 {
            return None;
        }
        map.insert(k, std::str::from_utf8(v).ok()?);
    }
    let get = |k: &str| map.get(k).copied();
    let source = || get("s")?.parse::<SocketAddr>().ok();
    let names = |v: &str| -> Vec<String> {
        v.split(',')
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect()
    };
    let node = get("n")?;
    // Printed as is in the tag of a log line: letters and digits only.
    if node.is_empty() || node.len() > 64 || !node.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let at = UNIX_EPOCH + Duration::from_millis(get("t")?.parse().ok()?);
    let event = match get("e")? {
        "connected" => RegistryEvent::Connected { source: source()? },
        "query" => RegistryEvent::Query {
            at,
            source: source()?,
            query: get("q")?.to_string(),
            outcome: get("o")?.to_string(),
            legacy: get("l")? == "1",
            key: match get("k") {
                Some(k) => Some(Fingerprint::parse(k)?),
                None => None,
            },
        },
        "disconnected" => RegistryEvent::Disconnected {
            source: source()?,
            released: names(get("r")?),
        },
        "lease_expired" => RegistryEvent::LeaseExpired {
            usernames: names(get("r")?),
        },
        "refused" => RegistryEvent::Refused {
            source: source()?,
            outcome: get("o")?.to_string(),
        },
        "reachability" => RegistryEvent::Reachability {
            user: get("u")?.to_string(),
            addr: get("a")?.parse().ok()?,
            reach: Reach::parse(get("h")?)?,
        },
        _ => return None,
    };
    Some(NodeEvent {
        node: node.to_string(),
        at,
        event,
    })
}

/// The hook's side of the publisher: offers each event without blocking.
#[derive(Clone)]
pub(crate) struct EventSink {
    tx: Sender<(SystemTime, RegistryEvent)>,
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// Queue `e` for publishing, or count it dropped when the queue is full.
    pub fn offer(&self, e: &RegistryEvent) {
        // Under a flood the queue is full: count without copying the event.
        if self.tx.is_full() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Err(TrySendError::Full(_)) = self.tx.try_send((SystemTime::now(), e.clone())) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The publisher thread's state: its own connection (so a slow `XADD` holds up no
/// event loop's writes), opened lazily and dropped on any failure.
pub(crate) struct Publisher {
    client: redis::Client,
    node: String,
    rx: Receiver<(SystemTime, RegistryEvent)>,
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    conn: Option<Connection>,
    retry_at: Option<Instant>,
}

/// A new publisher for `node` and the sink the registry's hook offers to. `stop` ends
/// [`Publisher::run`] (after one last attempt at what is queued).
pub(crate) fn publisher(
    client: redis::Client,
    node: String,
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> (Publisher, EventSink) {
    let (tx, rx) = crossbeam_channel::bounded(PUBLISH_QUEUE);
    let sink = EventSink {
        tx,
        dropped: dropped.clone(),
    };
    let p = Publisher {
        client,
        node,
        rx,
        dropped,
        stop,
        conn: None,
        retry_at: None,
    };
    (p, sink)
}

impl Publisher {
    /// Publish until stopped (or every sink is gone).
    pub fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let stopping = self.stop.load(Ordering::SeqCst);
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(e) => batch.push(e),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    if batch.is_empty() {
                        return;
                    }
                }
            }
            batch.extend(self.rx.try_iter().take(BATCH - batch.len().min(BATCH)));
            let sent = batch.is_empty() || self.send(&batch);
            batch.clear();
            if stopping && (!sent || self.rx.is_empty()) {
                // Stopping: what is left is not worth waiting on a failing Redis for.
                let left = self.rx.try_iter().count() as u64;
                self.dropped.fetch_add(left, Ordering::Relaxed);
                return;
            }
        }
    }

    /// Sends `batch` in one pipeline; false (the batch counted dropped) on failure.
    fn send(&mut self, batch: &[(SystemTime, RegistryEvent)]) -> bool {
        let lost = || batch.len() as u64;
        if self.conn.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                self.dropped.fetch_add(lost(), Ordering::Relaxed);
                return false;
            }
            match super::redis::open_link(&self.client) {
                Ok(c) => self.conn = Some(c),
                Err(e) => {
                    log::debug!("registry: events not published: {e}");
                    self.retry_at = Some(Instant::now() + super::redis::RETRY_AFTER);
                    self.dropped.fetch_add(lost(), Ordering::Relaxed);
                    return false;
                }
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let mut pipe = redis::pipe();
        for (at, e) in batch {
            let cmd = pipe
                .cmd("XADD")
                .arg(EVENTS_STREAM)
                .arg("MAXLEN")
                .arg("~")
                .arg(EVENTS_CAP)
                .arg("*");
            for (k, v) in encode(&self.node, *at, e) {
                cmd.arg(k).arg(v);
            }
            cmd.ignore();
        }
        if let Err(e) = pipe.query::<()>(conn) {
            log::debug!("registry: events not published: {e}");
            // A timeout may leave replies in flight: start afresh.
            self.conn = None;
            self.retry_at = Some(Instant::now() + super::redis::RETRY_AFTER);
            self.dropped.fetch_add(lost(), Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// Where an [`EventTail`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailFrom {
    /// Only events published from now on.
    Now,
    /// The last `n` events in the stream (at most [`EVENTS_CAP`]), then what follows.
    Last(usize),
}

/// A follower of every node's events (`p2pchat server --show all`, `p2pchat server
/// log`): reads the stream in blocking reads of at most [`READ_COUNT`] entries, and
/// reconnects by itself after a failure (keeping its place; entries trimmed meanwhile
/// are missed).
pub struct EventTail {
    client: redis::Client,
    conn: Option<Connection>,
    last_id: String,
    from: TailFrom,
}

impl std::fmt::Debug for EventTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventTail")
            .field("last_id", &self.last_id)
            .finish_non_exhaustive()
    }
}

impl EventTail {
    /// Connects to the Redis at `url` (`redis://HOST:PORT[/DB]`, as `--store`). Fails
    /// when it cannot be reached now.
    pub fn open(url: &str, from: TailFrom) -> Result<EventTail> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::InvalidArgument(format!("store {url}: {e}")))?;
        let mut t = EventTail {
            client,
            conn: None,
            last_id: String::new(),
            from,
        };
        t.connect()?;
        Ok(t)
    }

    fn connect(&mut self) -> Result<&mut Connection> {
        if self.conn.is_none() {
            let mut c = super::redis::open_link(&self.client).map_err(store_err)?;
            if self.last_id.is_empty() {
                // Where to start: the newest entry now, or the one `n` back.
                let back = match self.from {
                    TailFrom::Now => 1,
                    TailFrom::Last(n) => n.min(EVENTS_CAP) + 1,
                };
                let v: Value = redis::cmd("XREVRANGE")
                    .arg(EVENTS_STREAM)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(back)
                    .query(&mut c)
                    .map_err(store_err)?;
                let ids: Vec<String> = items(&v)
                    .iter()
                    .filter_map(|e| items(e).first().and_then(bulk))
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect();
                self.last_id = match self.from {
                    TailFrom::Now => ids.first().cloned(),
                    // Fewer than n + 1: all of them, from the start.
                    TailFrom::Last(n) if ids.len() > n.min(EVENTS_CAP) => ids.last().cloned(),
                    TailFrom::Last(_) => None,
                }
                .unwrap_or_else(|| "0-0".into());
            }
            self.conn = Some(c);
        }
        self.conn.as_mut().ok_or_else(|| store_err("no connection"))
    }

    /// The next events, waiting up to `block` (at most a few seconds) for some; empty
    /// when none came. An error (Redis away) drops the connection: the next call
    /// reconnects and carries on from the same place.
    pub fn next_batch(&mut self, block: Duration) -> Result<Vec<NodeEvent>> {
        let last = self.last_id.clone();
        let conn = self.connect()?;
        let block_ms = u64::try_from(block.as_millis())
            .unwrap_or(5_000)
            .clamp(1, 5_000);
        // The read waits for the block, and a little more for the answer.
        if let Err(e) = conn.set_read_timeout(Some(
            Duration::from_millis(block_ms) + Duration::from_secs(1),
        )) {
            self.conn = None;
            return Err(store_err(e));
        }
        let reply: redis::RedisResult<Value> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(EVENTS_STREAM)
            .arg(if last.is_empty() { "0-0" } else { &last })
            .query(conn);
        let reply = match reply {
            Ok(v) => v,
            Err(e) => {
                self.conn = None;
                return Err(store_err(e));
            }
        };
        let mut out = Vec::new();
        for (_, list) in streams(&reply) {
            for e in list {
                let parts = items(e);
                let (Some(id), Some(fv)) = (parts.first().and_then(bulk), parts.get(1)) else {
                    continue;
                };
                self.last_id = String::from_utf8_lossy(id).into_owned();
                let fields = items(fv).chunks(2).filter_map(|p| {
                    let k = std::str::from_utf8(bulk(p.first()?)?).ok()?;
                    Some((k, bulk(p.get(1)?)?))
                });
                if let Some(ev) = decode(fields) {
                    out.push(ev);
                }
            }
        }
        Ok(out)
    }
}

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::other(format!("redis store: {e}")))
}

/// `[[stream, [entry, …]], …]` (RESP2) or a map (RESP3).
fn streams(reply: &Value) -> Vec<(&[u8], &[Value])> {
    match reply {
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
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(e: RegistryEvent) {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_754_413_123);
        let f = encode("0123456789abcdef", at, &e);
        let back = decode(f.iter().map(|(k, v)| (*k, v.as_bytes()))).expect("decodes");
        assert_eq!(back.node, "0123456789abcdef");
        assert_eq!(back.event, e);
        if !matches!(e, RegistryEvent::Query { .. }) {
            assert_eq!(back.at, at);
        }
    }

    #[test]
    fn every_event_survives_the_stream() {
        let source: SocketAddr = "[::1]:5000".parse().unwrap();
        let key = crate::identity::Identity::generate().unwrap().fingerprint();
        roundtrip(RegistryEvent::Connected { source });
        for key in [None, Some(key)] {
            roundtrip(RegistryEvent::Query {
                at: UNIX_EPOCH + Duration::from_millis(42),
                source,
                query: "INIT,alice,5000,a b.txt\u{202e}".into(),
                outcome: "OK (2 users): alice: x | bob: ".into(),
                legacy: key.is_none(),
                key,
            });
        }
        roundtrip(RegistryEvent::Disconnected {
            source,
            released: vec![],
        });
        roundtrip(RegistryEvent::Disconnected {
            source,
            released: vec!["alice".into(), "bob".into()],
        });
        roundtrip(RegistryEvent::LeaseExpired {
            usernames: vec!["old".into()],
        });
        roundtrip(RegistryEvent::Refused {
            source,
            outcome: "ERR,Server busy".into(),
        });
        roundtrip(RegistryEvent::Reachability {
            user: "alice".into(),
            addr: "127.0.0.1:5000".parse().unwrap(),
            reach: Reach::Unreachable,
        });
    }

    #[test]
    fn malformed_entries_are_not_events() {
        let ok = [
            ("n", "ab".as_bytes()),
            ("e", b"connected"),
            ("t", b"1"),
            ("s", b"127.0.0.1:1"),
        ];
        assert!(decode(ok).is_some());
        let mut bad = ok;
        bad[1].1 = b"nonsense";
        assert!(decode(bad).is_none());
        let mut bad = ok;
        bad[3].1 = b"not an address";
        assert!(decode(bad).is_none());
        let mut bad = ok;
        bad[0].1 = b"";
        assert!(decode(bad).is_none());
        let mut bad = ok;
        bad[0].1 = b"a\x1b[2J";
        assert!(decode(bad).is_none());
        let mut bad = ok;
        bad[2].1 = b"\xff";
        assert!(decode(bad).is_none());
        let big = vec![b'a'; MAX_FIELD + 1];
        let mut bad = ok;
        bad[3].1 = &big;
        assert!(decode(bad).is_none());
        // A query without its outcome.
        assert!(decode([
            ("n", "ab".as_bytes()),
            ("e", b"query"),
            ("t", b"1"),
            ("s", b"127.0.0.1:1"),
            ("q", b"GET_U"),
            ("l", b"0"),
        ])
        .is_none());
    }
}
