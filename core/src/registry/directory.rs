//! The registry's table of online users and the rules for changing it.
//!
//! Owns the map from username to address and files, and decides who may change an
//! entry (ownership). It never does I/O: the server calls it with parsed queries and
//! writes the answers it returns.

use crate::limits::MAX_USERS;
use crate::protocol::{reason, QueryError};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Who may change or remove a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Made on a session connection; removed when that connection closes.
    Session(u64),
    /// Made by a one-shot legacy query; owned by the IP it came from, and lives until
    /// `EXIT` or until that IP has sent no legacy query for a whole lease.
    Legacy { ip: IpAddr },
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
}

#[derive(Debug)]
struct Slot {
    entry: UserEntry,
    owner: Owner,
}

/// Who is asking, as far as ownership is concerned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    pub conn: u64,
    pub ip: IpAddr,
    /// Whether the query came framed as a session line (else legacy one-shot).
    pub session: bool,
}

/// Result of an `INIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InitOutcome {
    Registered,
    Updated,
}

/// The user table: a sorted map behind a short-held `RwLock` (readers in other threads
/// take snapshots; the server thread is the only writer).
#[derive(Debug)]
pub(crate) struct Directory {
    users: RwLock<BTreeMap<String, Slot>>,
    /// When each IP holding legacy registrations last sent a legacy query: the original
    /// client never says it is still there, but it queries while its person uses it.
    /// Only IPs with legacy registrations have an entry, so this stays small.
    legacy_seen: Mutex<HashMap<IpAddr, Instant>>,
    max_users: usize,
}

impl Default for Directory {
    fn default() -> Self {
        Directory::new(MAX_USERS)
    }
}

impl Directory {
    pub fn new(max_users: usize) -> Self {
        Directory {
            users: RwLock::new(BTreeMap::new()),
            legacy_seen: Mutex::new(HashMap::new()),
            max_users,
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
            self.legacy_seen.lock().insert(caller.ip, Instant::now());
            Owner::Legacy { ip: caller.ip }
        };
        let entry = UserEntry {
            ip: caller.ip,
            port,
            files: files.iter().map(|f| f.to_string()).collect(),
        };
        let mut users = self.users.write();
        match users.get_mut(username) {
            Some(slot) => {
                if !owns(slot.owner, caller) {
                    return Err(QueryError(reason::USERNAME_TAKEN));
                }
                slot.entry = entry;
                slot.owner = owner;
                Ok(InitOutcome::Updated)
            }
            None => {
                if users.len() >= self.max_users {
                    return Err(QueryError(reason::REGISTRY_FULL));
                }
                users.insert(username.to_string(), Slot { entry, owner });
                Ok(InitOutcome::Registered)
            }
        }
    }

    pub fn exit(&self, caller: Caller, username: &str) -> Result<(), QueryError> {
        let mut users = self.users.write();
        match users.get(username) {
            None => Err(QueryError(reason::USER_NOT_FOUND)),
            Some(slot) if !owns(slot.owner, caller) => Err(QueryError(reason::NOT_OWNER)),
            Some(_) => {
                users.remove(username);
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
        for name in names {
            if matches!(users.get(name), Some(s) if s.owner == Owner::Session(conn)) {
                users.remove(name);
                released.push(name.clone());
            }
        }
        released
    }

    /// A legacy query came from `ip`: its legacy registrations live on.
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
        if !self.users.read().values().any(lapsed) {
            return Vec::new();
        }
        let mut users = self.users.write();
        let expired: Vec<String> = users
            .iter()
            .filter(|(_, s)| lapsed(s))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &expired {
            users.remove(name);
        }
        expired
    }

    pub fn get(&self, username: &str) -> Option<UserEntry> {
        self.users.read().get(username).map(|s| s.entry.clone())
    }

    pub fn usernames(&self) -> Vec<String> {
        self.users.read().keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.users.read().len()
    }

    /// `OK,user1,user2,…` (just `OK` when nobody is online).
    pub fn write_usernames(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"OK");
        for name in self.users.read().keys() {
            out.push(b',');
            out.extend_from_slice(name.as_bytes());
        }
    }

    /// `OK,ip,port` or `ERR,User not found!`.
    pub fn write_peer(&self, username: &str, out: &mut Vec<u8>) -> Result<(), QueryError> {
        let users = self.users.read();
        let slot = users
            .get(username)
            .ok_or(QueryError(reason::USER_NOT_FOUND))?;
        // Writing into a Vec cannot fail.
        let _ = write!(out, "OK,{},{}", slot.entry.ip, slot.entry.port);
        Ok(())
    }

    /// `OK,f1,f2,…` (just `OK` for an empty share) or `ERR,User not found!`.
    pub fn write_user_files(&self, username: &str, out: &mut Vec<u8>) -> Result<(), QueryError> {
        let users = self.users.read();
        let slot = users
            .get(username)
            .ok_or(QueryError(reason::USER_NOT_FOUND))?;
        out.extend_from_slice(b"OK");
        for f in &slot.entry.files {
            out.push(b',');
            out.extend_from_slice(f.as_bytes());
        }
        Ok(())
    }

    /// `OK,` then `user: f1,f2\n` per user. Returns how many users were written.
    ///
    /// The answer is built in one pass under the read lock into the connection's output
    /// buffer (memory, not a socket), so the lock is never held across network I/O.
    pub fn write_all_files(&self, out: &mut Vec<u8>) -> usize {
        out.extend_from_slice(b"OK,");
        let users = self.users.read();
        for (name, slot) in users.iter() {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            for (i, f) in slot.entry.files.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(f.as_bytes());
            }
            out.push(b'\n');
        }
        users.len()
    }
}

fn owns(owner: Owner, caller: Caller) -> bool {
    match owner {
        Owner::Session(conn) => conn == caller.conn,
        Owner::Legacy { ip } => ip == caller.ip,
    }
}
