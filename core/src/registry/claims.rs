//! Name claims: which key owns which username, kept across registry restarts.
//!
//! An `INIT` over an encrypted session claims its name for the session's key (name →
//! key and the time it was last used). While the claim lives, only that key may
//! register the name. A claim not used for the claim TTL *lapses*: it counts as gone,
//! and the next key to register the name takes it over. "Used" means registered: a
//! claim is touched when its key registers the name, periodically while the name
//! stays registered, and when that registration ends.
//!
//! The store is [redb](https://docs.rs/redb) (`<data-dir>/claims.redb`): one table
//! `claims`, key the username (UTF-8), value 40 bytes — the 32-byte public key, then
//! the last-used time as milliseconds since the Unix epoch, big-endian u64. redb
//! commits are atomic and crash safe (copy-on-write B-tree, checksummed commit
//! slots), and it takes an exclusive lock on the file, so a second process (say
//! `p2pchat server release-name` while the server runs) is told the store is in use
//! rather than corrupting it. Without a data directory the same code runs on redb's
//! in-memory backend.

use crate::error::{Error, Result};
use crate::identity::{PublicKey, KEY_LEN};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The claims table: username → key (32 bytes) ‖ last used (ms since epoch, u64 BE).
const CLAIMS: TableDefinition<&str, &[u8]> = TableDefinition::new("claims");
const VALUE_LEN: usize = KEY_LEN + 8;

/// The claims file inside a registry's data directory.
pub fn claims_file(data_dir: &Path) -> PathBuf {
    data_dir.join("claims.redb")
}

/// The outcome of [`Claims::check_and_claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The name is now (still) claimed by the key asking.
    Granted,
    /// Another key holds a live claim on the name.
    Other,
}

/// One claim as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    pub key: PublicKey,
    pub last_used: SystemTime,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn encode(key: &PublicKey, at: SystemTime) -> [u8; VALUE_LEN] {
    let mut v = [0u8; VALUE_LEN];
    v[..KEY_LEN].copy_from_slice(&key.0);
    v[KEY_LEN..].copy_from_slice(&millis(at).to_be_bytes());
    v
}

/// `None` for a value of the wrong size (a damaged or foreign file): treated as no
/// claim rather than trusted.
fn decode(v: &[u8]) -> Option<Record> {
    if v.len() != VALUE_LEN {
        return None;
    }
    let key = PublicKey::from_slice(&v[..KEY_LEN])?;
    let mut ms = [0u8; 8];
    ms.copy_from_slice(&v[KEY_LEN..]);
    let last_used = UNIX_EPOCH + Duration::from_millis(u64::from_be_bytes(ms));
    Some(Record { key, last_used })
}

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::other(format!("claims store: {e}")))
}

/// Where claims are kept: redb (this module) or Redis (`store::redis`, shared by
/// several registry nodes). Object safe; [`Claims`] wraps one with the convenience
/// methods the server uses.
pub(crate) trait ClaimStore: Send + Sync + std::fmt::Debug {
    /// The key holding a live claim on `name`, if any.
    fn holder(&self, name: &str, now: SystemTime) -> Result<Option<PublicKey>>;
    /// Claims `name` for `key` (or renews `key`'s claim), atomically; [`Claim::Other`]
    /// (nothing written) when another key holds a live claim.
    fn check_and_claim(&self, name: &str, key: &PublicKey, now: SystemTime) -> Result<Claim>;
    /// Marks each name's claim used if it is that key's.
    fn touch_pairs(&self, pairs: &[(&str, &PublicKey)], now: SystemTime) -> Result<()>;
    /// Removes the claim on `name`; whether there was one.
    fn release(&self, name: &str) -> Result<bool>;
    /// Removes every lapsed claim; how many.
    fn purge_lapsed(&self, now: SystemTime) -> Result<usize>;
}

/// The claims store the registry uses (see the module notes).
#[derive(Debug)]
pub(crate) struct Claims {
    store: Box<dyn ClaimStore>,
}

impl Claims {
    /// Opens (or creates) the redb store in `data_dir`.
    pub fn open(data_dir: &Path, ttl: Duration) -> Result<Claims> {
        Ok(Claims::from(RedbClaims::open(data_dir, ttl)?))
    }

    /// A redb store in memory (a registry without a data directory).
    pub fn memory(ttl: Duration) -> Result<Claims> {
        Ok(Claims::from(RedbClaims::memory(ttl)?))
    }

    /// A redb store on any backend (tests: one that fails on demand).
    #[cfg(test)]
    pub fn with_backend(backend: impl redb::StorageBackend, ttl: Duration) -> Result<Claims> {
        Ok(Claims::from(RedbClaims::with_backend(backend, ttl)?))
    }

    /// Claims kept in another store (Redis).
    pub fn from_store(store: Box<dyn ClaimStore>) -> Claims {
        Claims { store }
    }

    /// See [`ClaimStore::holder`].
    pub fn holder(&self, name: &str, now: SystemTime) -> Result<Option<PublicKey>> {
        self.store.holder(name, now)
    }

    /// See [`ClaimStore::check_and_claim`].
    pub fn check_and_claim(&self, name: &str, key: &PublicKey, now: SystemTime) -> Result<Claim> {
        self.store.check_and_claim(name, key, now)
    }

    /// Marks `key`'s claims on `names` used at `now`.
    pub fn touch<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
        key: &PublicKey,
        now: SystemTime,
    ) -> Result<()> {
        let pairs: Vec<(&str, &PublicKey)> = names.into_iter().map(|n| (n, key)).collect();
        self.store.touch_pairs(&pairs, now)
    }

    /// Like [`touch`](Self::touch) for names with their own keys.
    pub fn touch_pairs<'a>(
        &self,
        pairs: impl IntoIterator<Item = (&'a str, &'a PublicKey)>,
        now: SystemTime,
    ) -> Result<()> {
        let pairs: Vec<(&str, &PublicKey)> = pairs.into_iter().collect();
        self.store.touch_pairs(&pairs, now)
    }

    /// See [`ClaimStore::release`].
    pub fn release(&self, name: &str) -> Result<bool> {
        self.store.release(name)
    }

    /// See [`ClaimStore::purge_lapsed`].
    pub fn purge_lapsed(&self, now: SystemTime) -> Result<usize> {
        self.store.purge_lapsed(now)
    }
}

impl From<RedbClaims> for Claims {
    fn from(c: RedbClaims) -> Claims {
        Claims { store: Box::new(c) }
    }
}

impl ClaimStore for RedbClaims {
    fn holder(&self, name: &str, now: SystemTime) -> Result<Option<PublicKey>> {
        RedbClaims::holder(self, name, now)
    }
    fn check_and_claim(&self, name: &str, key: &PublicKey, now: SystemTime) -> Result<Claim> {
        RedbClaims::check_and_claim(self, name, key, now)
    }
    fn touch_pairs(&self, pairs: &[(&str, &PublicKey)], now: SystemTime) -> Result<()> {
        RedbClaims::touch_pairs(self, pairs.iter().copied(), now)
    }
    fn release(&self, name: &str) -> Result<bool> {
        RedbClaims::release(self, name)
    }
    fn purge_lapsed(&self, now: SystemTime) -> Result<usize> {
        RedbClaims::purge_lapsed(self, now)
    }
}

/// The redb claims store (see the module notes).
pub(crate) struct RedbClaims {
    db: Database,
    ttl: Duration,
}

impl std::fmt::Debug for RedbClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbClaims")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl RedbClaims {
    /// Opens (or creates) the store in `data_dir`. Fails with a clear message when
    /// another process holds it.
    pub fn open(data_dir: &Path, ttl: Duration) -> Result<RedbClaims> {
        let path = claims_file(data_dir);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Busy(format!(
                "the claims store {} (another p2pchat registry using this data directory)",
                path.display()
            )),
            e => store_err(format!("{}: {e}", path.display())),
        })?;
        RedbClaims::init(db, ttl)
    }

    /// A store in memory (a registry without a data directory).
    pub fn memory(ttl: Duration) -> Result<RedbClaims> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(store_err)?;
        RedbClaims::init(db, ttl)
    }

    /// A store on any redb backend (tests: one that fails on demand).
    #[cfg(test)]
    pub fn with_backend(backend: impl redb::StorageBackend, ttl: Duration) -> Result<RedbClaims> {
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(store_err)?;
        RedbClaims::init(db, ttl)
    }

    fn init(db: Database, ttl: Duration) -> Result<RedbClaims> {
        // Create the table up front, so reads never meet a missing one.
        let tx = db.begin_write().map_err(store_err)?;
        tx.open_table(CLAIMS).map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(RedbClaims { db, ttl })
    }

    fn live(&self, r: &Record, now: SystemTime) -> bool {
        r.last_used + self.ttl > now
    }

    /// The claim on `name`, lapsed or not.
    pub fn get(&self, name: &str) -> Result<Option<Record>> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let table = tx.open_table(CLAIMS).map_err(store_err)?;
        let v = table.get(name).map_err(store_err)?;
        Ok(v.and_then(|v| decode(v.value())))
    }

    /// The key holding a live claim on `name`, if any.
    pub fn holder(&self, name: &str, now: SystemTime) -> Result<Option<PublicKey>> {
        Ok(self.get(name)?.filter(|r| self.live(r, now)).map(|r| r.key))
    }

    /// Claims `name` for `key` (or renews `key`'s claim), in one write transaction,
    /// committed durably before it returns; [`Claim::Other`] (nothing written) when
    /// another key holds a live claim.
    pub fn check_and_claim(&self, name: &str, key: &PublicKey, now: SystemTime) -> Result<Claim> {
        let tx = self.db.begin_write().map_err(store_err)?;
        {
            let mut table = tx.open_table(CLAIMS).map_err(store_err)?;
            let current = table
                .get(name)
                .map_err(store_err)?
                .and_then(|v| decode(v.value()));
            if matches!(current, Some(r) if r.key != *key && self.live(&r, now)) {
                return Ok(Claim::Other);
            }
            table
                .insert(name, &encode(key, now)[..])
                .map_err(store_err)?;
        }
        tx.commit().map_err(store_err)?;
        Ok(Claim::Granted)
    }

    /// Marks `key`'s claims on `names` used at `now` (names claimed by another key, or
    /// not at all, are left alone). Committed with eventual durability: a touch lost to
    /// a crash only makes a claim look a little older, and it spares the event loop a
    /// disk flush per closing session.
    #[cfg(test)]
    pub fn touch<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
        key: &PublicKey,
        now: SystemTime,
    ) -> Result<()> {
        self.touch_pairs(names.into_iter().map(|n| (n, key)), now)
    }

    /// Like [`touch`](Self::touch) for names with their own keys: each name's claim
    /// is marked used if it is that key's.
    pub fn touch_pairs<'a>(
        &self,
        pairs: impl IntoIterator<Item = (&'a str, &'a PublicKey)>,
        now: SystemTime,
    ) -> Result<()> {
        let mut tx = self.db.begin_write().map_err(store_err)?;
        tx.set_durability(Durability::Eventual);
        {
            let mut table = tx.open_table(CLAIMS).map_err(store_err)?;
            for (name, key) in pairs {
                let mine = table
                    .get(name)
                    .map_err(store_err)?
                    .and_then(|v| decode(v.value()))
                    .is_some_and(|r| r.key == *key);
                if mine {
                    table
                        .insert(name, &encode(key, now)[..])
                        .map_err(store_err)?;
                }
            }
        }
        tx.commit().map_err(store_err)
    }

    /// Removes the claim on `name`; whether there was one.
    pub fn release(&self, name: &str) -> Result<bool> {
        let tx = self.db.begin_write().map_err(store_err)?;
        let had = {
            let mut table = tx.open_table(CLAIMS).map_err(store_err)?;
            let had = table.remove(name).map_err(store_err)?.is_some();
            had
        };
        tx.commit().map_err(store_err)?;
        Ok(had)
    }

    /// Removes every lapsed claim; how many.
    pub fn purge_lapsed(&self, now: SystemTime) -> Result<usize> {
        let tx = self.db.begin_write().map_err(store_err)?;
        let n = {
            let mut table = tx.open_table(CLAIMS).map_err(store_err)?;
            let before = table.len().map_err(store_err)?;
            table
                .retain(|_, v| decode(v).is_some_and(|r| self.live(&r, now)))
                .map_err(store_err)?;
            let after = table.len().map_err(store_err)?;
            usize::try_from(before - after).unwrap_or(usize::MAX)
        };
        tx.commit().map_err(store_err)?;
        Ok(n)
    }

    /// How many claims are stored (lapsed ones included).
    #[cfg(test)]
    pub fn len(&self) -> Result<u64> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let table = tx.open_table(CLAIMS).map_err(store_err)?;
        table.len().map_err(store_err)
    }
}

/// Releases the claim on `name` in the registry data directory `data_dir` (the
/// operator's `p2pchat server release-name`); `Ok(false)` when there was none. Fails
/// with [`Error::Busy`] while a registry serving from `data_dir` holds the store.
pub fn release_name(data_dir: &Path, name: &str) -> Result<bool> {
    if !claims_file(data_dir).exists() {
        return Ok(false);
    }
    Claims::open(data_dir, Duration::MAX)?.release(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn claims_are_granted_refused_lapse_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::generate().unwrap().public();
        let b = Identity::generate().unwrap().public();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ttl = Duration::from_secs(100);
        {
            let c = RedbClaims::open(dir.path(), ttl).unwrap();
            assert_eq!(c.check_and_claim("alice", &a, t0).unwrap(), Claim::Granted);
            assert_eq!(c.check_and_claim("alice", &b, t0).unwrap(), Claim::Other);
            assert_eq!(c.check_and_claim("alice", &a, t0).unwrap(), Claim::Granted);
            // A second opener is told the store is in use.
            assert!(matches!(
                RedbClaims::open(dir.path(), ttl),
                Err(Error::Busy(_))
            ));
        }
        let c = RedbClaims::open(dir.path(), ttl).unwrap();
        assert_eq!(c.holder("alice", t0).unwrap(), Some(a));
        let later = t0 + Duration::from_secs(99);
        c.touch(["alice", "nobody"], &b, later).unwrap();
        assert_eq!(c.get("alice").unwrap().unwrap().last_used, t0);
        c.touch(["alice"], &a, later).unwrap();
        let lapse = later + ttl;
        assert_eq!(
            c.holder("alice", lapse - Duration::from_secs(1)).unwrap(),
            Some(a)
        );
        assert_eq!(c.holder("alice", lapse).unwrap(), None);
        assert_eq!(
            c.check_and_claim("alice", &b, lapse).unwrap(),
            Claim::Granted
        );
        assert_eq!(c.holder("alice", lapse).unwrap(), Some(b));
        c.check_and_claim("old", &a, t0).unwrap();
        assert_eq!(c.purge_lapsed(lapse).unwrap(), 1);
        assert!(c.release("alice").unwrap());
        assert!(!c.release("alice").unwrap());
        assert_eq!(c.len().unwrap(), 0);
        let m = RedbClaims::memory(ttl).unwrap();
        assert_eq!(m.check_and_claim("x", &a, t0).unwrap(), Claim::Granted);
        assert_eq!(m.holder("x", t0).unwrap(), Some(a));
    }
}
