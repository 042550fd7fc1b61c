//! Where the registry's directory lives: this process's memory (the default, nothing
//! external needed) or a Redis (or Valkey) instance shared by several registry nodes.
//!
//! The in-memory store is the [`Directory`](super::directory::Directory) itself. With
//! Redis, every node still answers reads (`GET_U`, `GET_P`, `GET_UF`, `GET_AF`) from its
//! own `Directory`, now a *replica* kept in step with Redis by a change log (see
//! [`redis`]); writes (`INIT`, `EXIT`, a session's end) are decided in Redis, atomically
//! for every node (Lua scripts), then applied to the local replica. So the event loops
//! never wait on Redis for a read, the big answers (`GET_AF` over 100,000 users) are
//! rendered once per change from local memory as before, and a write costs one or two
//! loopback round trips under a short timeout.

pub mod events;
pub(crate) mod redis;

use crate::error::{Error, Result};

/// Which directory store a registry uses ([`RegistryConfig::store`](super::RegistryConfig::store)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreSpec {
    /// This process's memory (the default).
    #[default]
    Memory,
    /// A Redis 7 (or Valkey) instance at this `redis://HOST:PORT[/DB]` URL, shared by
    /// every registry node given the same URL.
    Redis(String),
}

impl StoreSpec {
    /// Parses `memory` or `redis://HOST:PORT[/DB]` (the `--store` flag).
    ///
    /// ```
    /// use p2pcore::registry::StoreSpec;
    /// assert_eq!(StoreSpec::parse("memory").unwrap(), StoreSpec::Memory);
    /// assert!(matches!(StoreSpec::parse("redis://127.0.0.1:6379/2"), Ok(StoreSpec::Redis(_))));
    /// assert!(StoreSpec::parse("redis://127.0.0.1:6379/x").is_err());
    /// assert!(StoreSpec::parse("postgres://h").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<StoreSpec> {
        if s == "memory" {
            return Ok(StoreSpec::Memory);
        }
        let bad = || {
            Error::InvalidArgument(format!(
                "store {s:?}: expected memory or redis://HOST:PORT[/DB]"
            ))
        };
        let rest = s.strip_prefix("redis://").ok_or_else(bad)?;
        let (hostport, db) = match rest.split_once('/') {
            Some((hp, db)) => (hp, Some(db)),
            None => (rest, None),
        };
        let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad());
        }
        if let Some(db) = db {
            if !db.is_empty() && db.parse::<u16>().is_err() {
                return Err(bad());
            }
        }
        Ok(StoreSpec::Redis(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_specs_parse() {
        assert_eq!(StoreSpec::parse("memory").unwrap(), StoreSpec::Memory);
        for ok in [
            "redis://127.0.0.1:6379",
            "redis://[::1]:1/",
            "redis://h:7/15",
        ] {
            assert_eq!(StoreSpec::parse(ok).unwrap(), StoreSpec::Redis(ok.into()));
        }
        for bad in [
            "",
            "redis://",
            "redis://h",
            "redis://h:0",
            "redis://h:1/a",
            "h:1",
        ] {
            assert!(StoreSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
