//! The registry's table of online users and the rules for changing it.
//!
//! Owns the map from username to address and files, and decides who may change an
//! entry (ownership) and whether a new one fits (the table's size, its memory budget,
//! the registering address's share). It never does I/O: the server calls it with parsed
//! queries and writes the answers it returns.
//!
//! Memory: one entry is its username and its filenames joined by `,` in one boxed
//! string (filenames never contain `,`), plus a fixed overhead — near the size of the
//! registration on the wire, where a `Vec<String>` cost ~50 bytes per filename. The
//! big answers (`GET_AF`, `GET_U`) are rendered once per table generation into shared
//! buffers that every asking connection queues without copying.

use super::address_key;
use crate::identity::PublicKey;
use crate::limits::MAX_USERS;
use crate::protocol::{reason, QueryError};
use crate::reach::Reach;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes one entry costs beyond its username and filenames: the map's key and value
/// (boxed name, address, port, owner, shared files) and the B-tree's share of a node,
/// measured at ~90 bytes on x86-64. Counted against `memory_budget`.
/// 32 more for the key of a registration made over an encrypted session.
pub(crate) const ENTRY_OVERHEAD: usize = 128;

/// Who may change or remove a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Made on a session connection; removed when that connection closes.
    Session(u64),
    /// Made by a one-shot legacy query; owned by the IP it came from, and lives until
    /// `EXIT` or until that IP has sent no legacy query for a whole lease.
    Legacy { ip: IpAddr },
    /// Made on a session of another registry node sharing the directory (Redis store):
    /// this node's replica holds it, but only the store changes or removes it.
    Remote,
}

/// One online user, as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// The IP seen on the registering connection (never taken from the message).
    pub ip: IpAddr,
    /// The port the user's peer listens on.
    pub port: u16,
    /// The user's shared filenames.
    pub files: Vec<String>,
    /// The key of the encrypted session that registered the user (`None` for a
    /// plaintext session or a legacy client).
    pub key: Option<PublicKey>,
    /// Whether the registry reached the user's listener at `ip:port` from outside
    /// (checked for registrations over encrypted sessions only; `Unknown` until the
    /// check ends, and for everyone else).
    pub reach: Reach,
}

/// The stored form of an entry (see the module notes on memory).
#[derive(Debug)]
struct Slot {
    ip: IpAddr,
    port: u16,
    /// The filenames joined by `,`; empty for an empty share. Shared: a `GET_UF`
    /// answer queues it by reference rather than copying it per asking connection.
    files: Arc<str>,
    owner: Owner,
    /// The registering session's key (proven by its handshake).
    key: Option<PublicKey>,
    /// The outcome of the last reachability check of `ip:port` (see
    /// [`Directory::set_reach`]); `Unknown` again whenever the address changes.
    reach: Reach,
}

impl Slot {
    fn entry(&self) -> UserEntry {
        UserEntry {
            ip: self.ip,
            port: self.port,
            files: if self.files.is_empty() {
                Vec::new()
            } else {
                self.files.split(',').map(str::to_string).collect()
            },
            key: self.key,
            reach: self.reach,
        }
    }
}

fn cost(username: &str, files: &str) -> usize {
    username.len() + files.len() + ENTRY_OVERHEAD
}

/// Who is asking, as far as ownership is concerned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    pub conn: u64,
    pub ip: IpAddr,
    /// Whether the query came framed as a session line (else legacy one-shot).
    pub session: bool,
    /// The session's key, when it is an encrypted one.
    pub key: Option<PublicKey>,
}

/// Result of an `INIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InitOutcome {
    Registered,
    Updated,
}

/// A user's entry without its files (see [`Directory::peek`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peek {
    pub ip: IpAddr,
    pub port: u16,
    pub key: Option<PublicKey>,
    pub reach: Reach,
    /// The session connection holding the registration (`None`: a legacy one, or
    /// another node's session).
    pub conn: Option<u64>,
    /// Held by a session on another registry node (Redis store).
    pub remote: bool,
}

/// Where a user is registered and who holds the registration: what a reachability
/// check result must still match to be recorded (a check of an address the user has
/// since left, or of an earlier holder of the name, is stale).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listed {
    pub ip: IpAddr,
    pub port: u16,
    /// The session connection holding the registration.
    pub conn: u64,
}

/// The bounds a [`Directory`] enforces on new registrations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub max_users: usize,
    /// Most accounted bytes (see [`ENTRY_OVERHEAD`]).
    pub memory_budget: usize,
    /// Most registrations per [`address_key`].
    pub max_users_per_addr: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_users: MAX_USERS,
            memory_budget: usize::MAX,
            max_users_per_addr: usize::MAX,
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    map: BTreeMap<Box<str>, Slot>,
    /// Accounted bytes of every entry.
    bytes: usize,
    /// Registrations held per address key.
    per_addr: HashMap<IpAddr, usize>,
    /// Bumped on every change; the rendered answers are valid for one generation.
    generation: u64,
}

impl Table {
    fn insert(&mut self, name: &str, slot: Slot) {
        self.bytes += cost(name, &slot.files);
        *self.per_addr.entry(address_key(slot.ip)).or_insert(0) += 1;
        self.map.insert(name.into(), slot);
        self.generation += 1;
    }

    /// Remove `name`; returns the bytes it was accounted at.
    fn remove(&mut self, name: &str) -> Option<usize> {
        let slot = self.map.remove(name)?;
        let freed = cost(name, &slot.files);
        self.bytes -= freed;
        let key = address_key(slot.ip);
        if let Some(n) = self.per_addr.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_addr.remove(&key);
            }
        }
        self.generation += 1;
        Some(freed)
    }
}

/// An answer rendered for one table generation, shared by every connection sending it.
type Rendered = Mutex<Option<(u64, Arc<[u8]>, usize)>>;

/// The user table: a sorted map behind a short-held `RwLock` (the loops take the read
/// side to answer, the write side to change it).
#[derive(Debug)]
pub(crate) struct Directory {
    users: RwLock<Table>,
    /// When each IP holding legacy registrations last sent a well-formed legacy query:
    /// the original client never says it is still there, but it queries while its
    /// person uses it. Only IPs with legacy registrations have an entry.
    legacy_seen: Mutex<HashMap<IpAddr, Instant>>,
    bounds: Bounds,
    all_files: Rendered,
    /// The `GET_AF` text in the original server's legacy form (see
    /// [`Directory::all_files_legacy_text`]).
    all_files_legacy: Rendered,
    usernames: Rendered,
    /// Accounted bytes released since the server last asked (it hands memory back to
    /// the system after large releases).
    released: AtomicUsize,
}

impl Default for Directory {
    fn default() -> Self {
        Directory::new(Bounds::default())
    }
}

impl Directory {
    pub fn new(bounds: Bounds) -> Self {
        Directory {
            users: RwLock::new(Table::default()),
            legacy_seen: Mutex::new(HashMap::new()),
            bounds,
            all_files: Mutex::new(None),
            all_files_legacy: Mutex::new(None),
            usernames: Mutex::new(None),
            released: AtomicUsize::new(0),
        }
    }

    pub fn init(
        &self,
        caller: Caller,
        username: &str,
        port: u16,
        files: &[&str],
    ) -> Result<InitOutcome, QueryError> {
        let owner = if caller.session {
            Owner::Session(caller.conn)
        } else {
            Owner::Legacy { ip: caller.ip }
        };
        let joined: Arc<str> = files.join(",").into();
        let new_cost = cost(username, &joined);
        let mut users = self.users.write();
        let mut reach = Reach::Unknown;
        let outcome = match users.map.get(username) {
            Some(slot) => {
                if !owns(slot.owner, caller) {
                    return Err(QueryError(reason::USERNAME_TAKEN));
                }
                if slot.ip == caller.ip && slot.port == port && slot.owner == owner {
                    // The same listener: what was learnt of it still holds.
                    reach = slot.reach;
                }
                let old_cost = cost(username, &slot.files);
                if users.bytes - old_cost + new_cost > self.bounds.memory_budget {
                    return Err(QueryError(reason::REGISTRY_FULL));
                }
                users.remove(username);
                InitOutcome::Updated
            }
            None => {
                if users.map.len() >= self.bounds.max_users
                    || users.bytes + new_cost > self.bounds.memory_budget
                {
                    return Err(QueryError(reason::REGISTRY_FULL));
                }
                let held = users.per_addr.get(&address_key(caller.ip));
                if held.copied().unwrap_or(0) >= self.bounds.max_users_per_addr {
                    return Err(QueryError(reason::TOO_MANY_USERS));
                }
                InitOutcome::Registered
            }
        };
        let slot = Slot {
            ip: caller.ip,
            port,
            files: joined,
            owner,
            key: caller.key,
            reach,
        };
        users.insert(username, slot);
        drop(users);
        if !caller.session {
            self.legacy_seen.lock().insert(caller.ip, Instant::now());
        }
        Ok(outcome)
    }

    pub fn exit(&self, caller: Caller, username: &str) -> Result<(), QueryError> {
        let mut users = self.users.write();
        match users.map.get(username) {
            None => Err(QueryError(reason::USER_NOT_FOUND)),
            Some(slot) if !owns(slot.owner, caller) => Err(QueryError(reason::NOT_OWNER)),
            Some(_) => {
                if let Some(freed) = users.remove(username) {
                    self.released.fetch_add(freed, Ordering::Relaxed);
                }
                Ok(())
            }
        }
    }

    /// Remove every registration held by session connection `conn`; returns their names.
    pub fn release_session<'a>(
        &self,
        conn: u64,
        names: impl IntoIterator<Item = &'a String>,
    ) -> Vec<String> {
        let mut users = self.users.write();
        let mut released = Vec::new();
        let mut freed = 0;
        for name in names {
            if matches!(users.map.get(name.as_str()), Some(s) if s.owner == Owner::Session(conn)) {
                freed += users.remove(name).unwrap_or(0);
                released.push(name.clone());
            }
        }
        self.released.fetch_add(freed, Ordering::Relaxed);
        released
    }

    /// A well-formed legacy query came from `ip`: its legacy registrations live on.
    pub fn legacy_activity(&self, ip: IpAddr) {
        if let Some(seen) = self.legacy_seen.lock().get_mut(&ip) {
            *seen = Instant::now();
        }
    }

    /// Remove legacy registrations whose IP has been silent for a whole `lease`;
    /// returns their names.
    pub fn expire_leases(&self, now: Instant, lease: Duration) -> Vec<String> {
        let live: HashSet<IpAddr> = {
            let mut seen = self.legacy_seen.lock();
            seen.retain(|_, t| *t + lease > now);
            seen.keys().copied().collect()
        };
        let lapsed = |s: &Slot| matches!(s.owner, Owner::Legacy { ip } if !live.contains(&ip));
        if !self.users.read().map.values().any(lapsed) {
            return Vec::new();
        }
        let mut users = self.users.write();
        let expired: Vec<String> = users
            .map
            .iter()
            .filter(|(_, s)| lapsed(s))
            .map(|(n, _)| n.to_string())
            .collect();
        let mut freed = 0;
        for name in &expired {
            freed += users.remove(name).unwrap_or(0);
        }
        self.released.fetch_add(freed, Ordering::Relaxed);
        expired
    }

    /// Accounted bytes released since the last call.
    pub fn take_released(&self) -> usize {
        self.released.swap(0, Ordering::Relaxed)
    }

    /// Drop rendered answers of past generations (they are otherwise kept until the
    /// next query of their kind); returns their size.
    pub fn drop_stale_renders(&self) -> usize {
        let generation = self.users.read().generation;
        let mut freed = 0;
        for cache in [&self.all_files, &self.all_files_legacy, &self.usernames] {
            let mut c = cache.lock();
            if matches!(&*c, Some((g, _, _)) if *g != generation) {
                freed += c.take().map_or(0, |(_, text, _)| text.len());
            }
        }
        freed
    }

    /// Accounted bytes of the table now.
    pub fn accounted_bytes(&self) -> usize {
        self.users.read().bytes
    }

    pub fn get(&self, username: &str) -> Option<UserEntry> {
        self.users.read().map.get(username).map(Slot::entry)
    }

    pub fn usernames(&self) -> Vec<String> {
        self.users
            .read()
            .map
            .keys()
            .map(|k| k.to_string())
            .collect()
    }

    /// The names registered over encrypted sessions, with their keys.
    pub fn keyed_names(&self) -> Vec<(Box<str>, PublicKey)> {
        self.users
            .read()
            .map
            .iter()
            .filter_map(|(n, s)| s.key.map(|k| (n.clone(), k)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.users.read().map.len()
    }

    /// Where `username` is listed and which session holds it; `None` for a name not
    /// registered, or registered by a legacy query.
    pub fn listed(&self, username: &str) -> Option<Listed> {
        let users = self.users.read();
        let slot = users.map.get(username)?;
        match slot.owner {
            Owner::Session(conn) => Some(Listed {
                ip: slot.ip,
                port: slot.port,
                conn,
            }),
            // Legacy, or another node's session (Redis store): no session here.
            Owner::Legacy { .. } | Owner::Remote => None,
        }
    }

    /// What the reach queries need to know of `username`, without copying its files.
    pub fn peek(&self, username: &str) -> Option<Peek> {
        let users = self.users.read();
        let slot = users.map.get(username)?;
        Some(Peek {
            ip: slot.ip,
            port: slot.port,
            key: slot.key,
            reach: slot.reach,
            conn: match slot.owner {
                Owner::Session(conn) => Some(conn),
                Owner::Legacy { .. } | Owner::Remote => None,
            },
            remote: slot.owner == Owner::Remote,
        })
    }

    /// Record the outcome of a reachability check of `username` at `at`, if the user
    /// is still listed there by the same session (else the result is stale and
    /// dropped). Whether it was recorded.
    pub fn set_reach(&self, username: &str, at: Listed, reach: Reach) -> bool {
        let mut users = self.users.write();
        match users.map.get_mut(username) {
            Some(slot)
                if slot.ip == at.ip
                    && slot.port == at.port
                    && slot.owner == Owner::Session(at.conn) =>
            {
                slot.reach = reach;
                true
            }
            _ => false,
        }
    }

    /// `OK,user1,user2,…` (just `OK` when nobody is online), shared.
    pub fn usernames_text(&self) -> Arc<[u8]> {
        self.rendered(&self.usernames, |table, out| {
            out.extend_from_slice(b"OK");
            for name in table.map.keys() {
                out.push(b',');
                out.extend_from_slice(name.as_bytes());
            }
        })
        .0
    }

    /// `OK,ip,port` or `ERR,User not found!`. With `session` (session answers), a
    /// user registered by a legacy (original client) query gets a third field:
    /// `OK,ip,port,legacy`, so p2pchat peers talk to it in its own protocol; one
    /// registered over an encrypted session gets its key, 64 lowercase hex digits, and
    /// its reach: `OK,ip,port,<key>,<reach>`, so a peer knows whom it dials and how.
    pub fn write_peer(
        &self,
        username: &str,
        session: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), QueryError> {
        let users = self.users.read();
        let slot = users
            .map
            .get(username)
            .ok_or(QueryError(reason::USER_NOT_FOUND))?;
        // Writing into a Vec cannot fail.
        let _ = write!(out, "OK,{},{}", slot.ip, slot.port);
        if session {
            if matches!(slot.owner, Owner::Legacy { .. }) {
                out.extend_from_slice(b",legacy");
            } else if let Some(key) = &slot.key {
                out.push(b',');
                out.extend_from_slice(key.to_hex().as_bytes());
                out.push(b',');
                out.extend_from_slice(slot.reach.as_str().as_bytes());
            }
        }
        Ok(())
    }

    /// A user's filenames joined by `,` (empty for an empty share), shared with the
    /// table, or `ERR,User not found!`. The `GET_UF` answer is `OK` then `,` and these.
    pub fn user_files(&self, username: &str) -> Result<Arc<[u8]>, QueryError> {
        let users = self.users.read();
        let slot = users
            .map
            .get(username)
            .ok_or(QueryError(reason::USER_NOT_FOUND))?;
        Ok(slot.files.clone().into())
    }

    /// `OK,` then `user: f1,f2\n` per user, shared; and how many users it lists.
    ///
    /// Rendered once per table generation under the read lock (memory, never a
    /// socket); every connection asking in that generation queues the same buffer, so
    /// 500 clients that ask and never read hold one copy, not 500.
    pub fn all_files_text(&self) -> (Arc<[u8]>, usize) {
        self.rendered(&self.all_files, |table, out| {
            out.extend_from_slice(b"OK,");
            for (name, slot) in &table.map {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(slot.files.as_bytes());
                out.push(b'\n');
            }
        })
    }

    /// The legacy-framing `GET_AF` answer, byte for byte the original server's: no
    /// `OK,`, one `user: f1,f2,` line per user (each file followed by a comma; `user: `
    /// for an empty share), lines joined by `\n` with none after the last; empty when
    /// nobody is online. Shared like [`all_files_text`](Self::all_files_text).
    pub fn all_files_legacy_text(&self) -> (Arc<[u8]>, usize) {
        self.rendered(&self.all_files_legacy, |table, out| {
            for (i, (name, slot)) in table.map.iter().enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                if !slot.files.is_empty() {
                    out.extend_from_slice(slot.files.as_bytes());
                    out.push(b',');
                }
            }
        })
    }

    fn rendered(
        &self,
        cache: &Rendered,
        render: impl FnOnce(&Table, &mut Vec<u8>),
    ) -> (Arc<[u8]>, usize) {
        let users = self.users.read();
        if let Some((g, text, n)) = &*cache.lock() {
            if *g == users.generation {
                return (text.clone(), *n);
            }
        }
        let mut out = Vec::new();
        render(&users, &mut out);
        let text: Arc<[u8]> = out.into();
        let n = users.map.len();
        *cache.lock() = Some((users.generation, text.clone(), n));
        (text, n)
    }
}

fn owns(owner: Owner, caller: Caller) -> bool {
    match owner {
        Owner::Session(conn) => conn == caller.conn,
        Owner::Legacy { ip } => ip == caller.ip,
        Owner::Remote => false,
    }
}

/// One registration as a shared store holds it, applied to a node's replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replicated {
    pub ip: IpAddr,
    pub port: u16,
    /// Filenames joined by `,`.
    pub files: String,
    pub owner: Owner,
    pub key: Option<PublicKey>,
    /// The outcome of the last reachability check, when the store says; `None`: kept
    /// if the user stays at the same address, else unknown (as `init` does).
    pub reach: Option<Reach>,
}

impl Directory {
    /// Sets `name` as the shared store says, without the ownership or bound checks
    /// (the store made them, atomically, for every node): the replica holds what the
    /// store holds.
    pub fn apply_set(&self, name: &str, r: Replicated) {
        let mut users = self.users.write();
        let kept = users
            .map
            .get(name)
            .filter(|s| s.ip == r.ip && s.port == r.port)
            .map_or(Reach::Unknown, |s| s.reach);
        if let Some(freed) = users.remove(name) {
            self.released.fetch_add(freed, Ordering::Relaxed);
        }
        let reach = r.reach.unwrap_or(kept);
        let mut slot = slot_of(r);
        slot.reach = reach;
        users.insert(name, slot);
    }

    /// Removes `name` as the shared store says; whether it was there.
    pub fn apply_remove(&self, name: &str) -> bool {
        let freed = self.users.write().remove(name);
        if let Some(freed) = freed {
            self.released.fetch_add(freed, Ordering::Relaxed);
        }
        freed.is_some()
    }

    /// Replaces the whole table with the store's (a full resync).
    pub fn replace_all(&self, entries: Vec<(String, Replicated)>) {
        let mut table = Table::default();
        for (name, r) in entries {
            table.insert(&name, slot_of(r));
        }
        let mut users = self.users.write();
        table.generation = users.generation + 1;
        self.released.fetch_add(users.bytes, Ordering::Relaxed);
        *users = table;
    }

    /// The registrations held by this node's session connections: (name, connection,
    /// entry), to write back into a store that lost them (a Redis restart).
    pub fn session_entries(&self) -> Vec<(String, u64, UserEntry)> {
        self.users
            .read()
            .map
            .iter()
            .filter_map(|(n, s)| match s.owner {
                Owner::Session(conn) => Some((n.to_string(), conn, s.entry())),
                _ => None,
            })
            .collect()
    }
}

fn slot_of(r: Replicated) -> Slot {
    Slot {
        ip: r.ip,
        port: r.port,
        files: r.files.into(),
        owner: r.owner,
        key: r.key,
        reach: r.reach.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(ip: &str, conn: u64) -> Caller {
        Caller {
            conn,
            ip: ip.parse().unwrap(),
            session: true,
            key: None,
        }
    }

    #[test]
    fn entries_round_trip_and_count() {
        let d = Directory::new(Bounds {
            max_users_per_addr: 2,
            ..Bounds::default()
        });
        let a = caller("127.0.0.3", 1);
        d.init(a, "u1", 5000, &["x", "y"]).unwrap();
        d.init(a, "u2", 5000, &[]).unwrap();
        assert_eq!(d.get("u1").unwrap().files, vec!["x", "y"]);
        assert!(d.get("u2").unwrap().files.is_empty());
        assert_eq!(
            d.init(a, "u3", 5000, &[]).unwrap_err().0,
            reason::TOO_MANY_USERS
        );
        // An update is not a new registration.
        assert_eq!(d.init(a, "u2", 5001, &["z"]), Ok(InitOutcome::Updated));
        assert!(d.init(caller("127.0.0.4", 2), "u3", 5000, &[]).is_ok());
        let (text, n) = d.all_files_text();
        assert_eq!(n, 3);
        assert_eq!(&text[..], b"OK,u1: x,y\nu2: z\nu3: \n");
        d.release_session(1, &["u1".to_string(), "u2".to_string()]);
        assert_eq!(d.accounted_bytes(), cost("u3", ""));
        assert!(d.init(a, "u4", 5000, &[]).is_ok());
    }

    #[test]
    fn reach_is_kept_for_the_same_listener_and_stale_results_are_dropped() {
        let d = Directory::default();
        let a = caller("127.0.0.3", 1);
        d.init(a, "u1", 5000, &[]).unwrap();
        let at = d.listed("u1").unwrap();
        assert_eq!((at.port, at.conn), (5000, 1));
        assert_eq!(d.get("u1").unwrap().reach, Reach::Unknown);
        assert!(d.set_reach("u1", at, Reach::Reachable));
        assert_eq!(d.peek("u1").unwrap().reach, Reach::Reachable);
        // A new file list on the same port keeps it; a new port forgets it.
        d.init(a, "u1", 5000, &["f"]).unwrap();
        assert_eq!(d.get("u1").unwrap().reach, Reach::Reachable);
        d.init(a, "u1", 5001, &["f"]).unwrap();
        assert_eq!(d.get("u1").unwrap().reach, Reach::Unknown);
        // The result of the old port's check, arriving late, is not recorded.
        assert!(!d.set_reach("u1", at, Reach::Unreachable));
        assert_eq!(d.get("u1").unwrap().reach, Reach::Unknown);
        // Nor one for another session holding the name since.
        let now = d.listed("u1").unwrap();
        d.release_session(1, &["u1".to_string()]);
        d.init(caller("127.0.0.3", 2), "u1", 5001, &[]).unwrap();
        assert!(!d.set_reach("u1", now, Reach::Reachable));
        // Legacy registrations are never listed for checks.
        let legacy = Caller {
            session: false,
            ..caller("127.0.0.4", 3)
        };
        d.init(legacy, "old", 6000, &[]).unwrap();
        assert_eq!(d.listed("old"), None);
        assert_eq!(d.peek("old").unwrap().conn, None);
    }

    #[test]
    fn budget_refuses_new_and_grown_entries() {
        let d = Directory::new(Bounds {
            memory_budget: 2 * ENTRY_OVERHEAD + 20,
            ..Bounds::default()
        });
        let a = caller("127.0.0.3", 1);
        d.init(a, "u1", 5000, &["abc"]).unwrap();
        d.init(a, "u2", 5000, &["abc"]).unwrap();
        assert_eq!(
            d.init(a, "u3", 5000, &[]).unwrap_err().0,
            reason::REGISTRY_FULL
        );
        assert_eq!(
            d.init(a, "u2", 5000, &["abcdefghijklmnop"]).unwrap_err().0,
            reason::REGISTRY_FULL
        );
        assert_eq!(d.get("u2").unwrap().files, vec!["abc"]);
    }
}
