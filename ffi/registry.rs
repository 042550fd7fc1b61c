//! `p2p_registry`: starting and stopping a registry server from C, and its event
//! callback. Owns only the handle; the server itself is [`p2pcore::registry`].

use crate::callback::{self, Owner, Scope};
use crate::panic;
use crate::status::{p2p_status, FfiError};
use crate::strings::{
    arg_out, arg_path_or_none, arg_ref, arg_str, c_string, owned, p2p_string_list, put,
};
use crate::userdata::UserData;
use p2pcore::registry::{Registry, RegistryConfig, RegistryEvent, StoreSpec};
use parking_lot::Mutex;
use std::ffi::{c_char, c_void, CString};
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

/// A running (or stopped) registry server. Opaque; made by `p2p_registry_start()`,
/// freed by `p2p_registry_free()`.
pub struct p2p_registry {
    server: Mutex<Option<Registry>>,
    local_addr: SocketAddr,
    /// The registry's key fingerprint, kept so it can be read after a stop too.
    fingerprint: String,
    /// This registry's process-unique id: its event callback runs inside
    /// `Owner::Registry(id)`, so stopping or freeing it from there (which would join
    /// the event-loop thread from itself) is refused, not attempted.
    id: u64,
    /// The embedded relay's port (0: none), kept so it can be read after a stop too.
    relay_port: u16,
}

/// What kind of thing a `p2p_registry_event` reports.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum p2p_registry_event_kind {
    /// A client connected (`source` is set).
    P2P_REGISTRY_CONNECTED = 0,
    /// A query was answered (`source`, `query`, `outcome`, `legacy`, `at_unix_ms`).
    P2P_REGISTRY_QUERY = 1,
    /// A client's connection closed (`source`; `usernames` are the names it held).
    P2P_REGISTRY_DISCONNECTED = 2,
    /// Legacy registrations whose lease ended (`usernames`).
    P2P_REGISTRY_LEASE_EXPIRED = 3,
    /// A client was refused by a bound (`source`; `outcome` is the `ERR,<reason>` it
    /// was sent, or `"closed"` when it was closed without an answer).
    P2P_REGISTRY_REFUSED = 4,
    /// A reachability check of a user's listener finished (`source` is the address
    /// checked, `"ip:port"`; `outcome` is `"reachable"`, `"unreachable"` or
    /// `"unknown"`; `usernames` holds the user).
    P2P_REGISTRY_REACHABILITY = 5,
}

/// One thing the registry saw, passed to a `p2p_registry_event_cb`.
///
/// Everything it points to (the struct itself included) is valid only during the
/// callback: copy what you need. Fields a kind does not use are NULL / 0 / false.
#[repr(C)]
#[derive(Debug)]
pub struct p2p_registry_event {
    /// Which event this is.
    pub kind: p2p_registry_event_kind,
    /// The client's address as `"ip:port"`, or NULL (`P2P_REGISTRY_LEASE_EXPIRED`).
    pub source: *const c_char,
    /// The query as received (cut to 200 bytes), or NULL.
    pub query: *const c_char,
    /// The first line of the answer (e.g. `"OK"`, `"ERR,User not found!"`), or NULL.
    pub outcome: *const c_char,
    /// Whether the query came in the original client's unterminated framing.
    pub legacy: bool,
    /// When the query was answered, in milliseconds since the Unix epoch (0 otherwise).
    pub at_unix_ms: u64,
    /// Usernames released (`P2P_REGISTRY_DISCONNECTED`, `P2P_REGISTRY_LEASE_EXPIRED`).
    pub usernames: *const *const c_char,
    /// How many `usernames` there are.
    pub usernames_len: usize,
    /// `P2P_REGISTRY_QUERY`: the fingerprint of the key of the encrypted session the
    /// query came on (the client's identity, proven by its handshake); NULL for a
    /// plaintext session or a legacy query.
    pub fingerprint: *const c_char,
}

/// Called for every registry event, on one of the registry's event-loop threads (a few
/// for the whole server, each serving many clients). It must return quickly: the
/// clients of that thread wait while it runs.
///
/// `event` and every string in it are valid only during the call. Stopping or freeing
/// this registry from inside it is refused (`p2p_registry_stop()` returns
/// `P2P_WOULD_DEADLOCK`, `p2p_registry_free()` does nothing), as is
/// `p2p_transfer_wait()`. Any other function may be called, but a peer call that asks
/// this same registry something (`p2p_peer_users()`, `p2p_peer_chat()`,
/// `p2p_peer_exit()`...) may wait for an answer this thread would have to give: it then
/// fails (or, for exit, goes on without it) after the registry timeout of 10 s.
pub type p2p_registry_event_cb =
    Option<unsafe extern "C" fn(user_data: *mut c_void, event: *const p2p_registry_event)>;

fn deliver(
    cb: unsafe extern "C" fn(*mut c_void, *const p2p_registry_event),
    ud: UserData,
    ev: &RegistryEvent,
) {
    let none = std::ptr::null();
    let (kind, source, query, outcome, legacy, at, names): (_, _, _, _, _, _, &[String]) = match ev
    {
        RegistryEvent::Connected { source } => (
            p2p_registry_event_kind::P2P_REGISTRY_CONNECTED,
            Some(source.to_string()),
            None,
            None,
            false,
            0,
            &[],
        ),
        RegistryEvent::Query {
            at,
            source,
            query,
            outcome,
            legacy,
            ..
        } => (
            p2p_registry_event_kind::P2P_REGISTRY_QUERY,
            Some(source.to_string()),
            Some(c_string(query)),
            Some(c_string(outcome)),
            *legacy,
            at.duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            &[],
        ),
        RegistryEvent::Disconnected { source, released } => (
            p2p_registry_event_kind::P2P_REGISTRY_DISCONNECTED,
            Some(source.to_string()),
            None,
            None,
            false,
            0,
            released.as_slice(),
        ),
        RegistryEvent::LeaseExpired { usernames } => (
            p2p_registry_event_kind::P2P_REGISTRY_LEASE_EXPIRED,
            None,
            None,
            None,
            false,
            0,
            usernames.as_slice(),
        ),
        RegistryEvent::Refused { source, outcome } => (
            p2p_registry_event_kind::P2P_REGISTRY_REFUSED,
            Some(source.to_string()),
            None,
            Some(c_string(outcome)),
            false,
            0,
            &[],
        ),
        RegistryEvent::Reachability { user, addr, reach } => (
            p2p_registry_event_kind::P2P_REGISTRY_REACHABILITY,
            Some(addr.to_string()),
            None,
            Some(c_string(reach.as_str())),
            false,
            0,
            std::slice::from_ref(user),
        ),
    };
    let fingerprint = match ev {
        RegistryEvent::Query { key: Some(fp), .. } => Some(c_string(&fp.to_string())),
        _ => None,
    };
    let source = source.map(|s| c_string(&s));
    let names: Vec<CString> = names.iter().map(|n| c_string(n)).collect();
    let name_ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let event = p2p_registry_event {
        kind,
        source: source.as_ref().map_or(none, |s| s.as_ptr()),
        query: query.as_ref().map_or(none, |s| s.as_ptr()),
        outcome: outcome.as_ref().map_or(none, |s| s.as_ptr()),
        legacy,
        at_unix_ms: at,
        usernames: if name_ptrs.is_empty() {
            std::ptr::null()
        } else {
            name_ptrs.as_ptr()
        },
        usernames_len: name_ptrs.len(),
        fingerprint: fingerprint.as_ref().map_or(none, |s| s.as_ptr()),
    };
    // SAFETY: the callback and user data are the caller's, called as documented.
    unsafe { cb(ud.ptr(), &event) };
}

impl p2p_registry {
    fn with<T>(&self, f: impl FnOnce(&Registry) -> T) -> Result<T, FfiError> {
        match self.server.lock().as_ref() {
            Some(r) => Ok(f(r)),
            None => Err(FfiError::shutdown("registry")),
        }
    }
}

/// How to start a registry. Opaque; made by `p2p_registry_config_new()`, adjusted with
/// the `p2p_registry_config_*` functions, used by `p2p_registry_start_with_config()`
/// (which copies it: the config may be freed or reused right after), freed by
/// `p2p_registry_config_free()`.
pub struct p2p_registry_config {
    addr: String,
    config: RegistryConfig,
    on_event: p2p_registry_event_cb,
    user_data: UserData,
}

/// # Safety
/// `config` is NULL or a live config handle.
unsafe fn config_mut<'a>(
    config: *mut p2p_registry_config,
) -> Result<&'a mut p2p_registry_config, FfiError> {
    config.as_mut().ok_or_else(|| FfiError::null("config"))
}

/// Make a registry configuration: listen on `addr` (`"host:port"`, borrowed for the
/// call; port 0 picks a free port). Defaults: the limits of `p2p_registry_start()`, no
/// event callback, no data directory (name claims and the registry's key last only as
/// long as the process), claims lapsing after 90 days unused. On success `*out` is a
/// new config owned by the caller, to free with `p2p_registry_config_free()`. Nothing
/// is bound before `p2p_registry_start_with_config()`.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_UTF8`.
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_config_new(
    addr: *const c_char,
    out: *mut *mut p2p_registry_config,
) -> p2p_status {
    panic::status(|| {
        let addr = arg_str(addr, "addr")?;
        let out = arg_out(out, "out")?;
        let config = Box::new(p2p_registry_config {
            addr: addr.to_string(),
            config: RegistryConfig::default(),
            on_event: None,
            user_data: UserData(std::ptr::null_mut()),
        });
        put(out, Box::into_raw(config));
        Ok(())
    })
}

/// Free a registry configuration. NULL is a no-op; registries started with it are not
/// affected.
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_config_free(config: *mut p2p_registry_config) {
    panic::void(|| {
        if !config.is_null() {
            drop(Box::from_raw(config));
        }
    })
}

/// Call `on_event` for every event (see `p2p_registry_event_cb`) with `user_data`,
/// which must stay valid until `p2p_registry_stop()` or `p2p_registry_free()` returns.
/// `on_event` NULL unsets it.
///
/// Errors: `P2P_NULL_ARGUMENT` (config; `user_data` may be NULL).
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_config_on_event(
    config: *mut p2p_registry_config,
    on_event: p2p_registry_event_cb,
    user_data: *mut c_void,
) -> p2p_status {
    panic::status(|| {
        let config = config_mut(config)?;
        config.on_event = on_event;
        config.user_data = UserData(user_data);
        Ok(())
    })
}

/// Keep the registry's key (`registry.key`, mode 0600) and its name claims
/// (`claims.redb`) in directory `dir` (bytes, borrowed for the call; created with mode
/// 0700 if missing), so a restart keeps both: the same fingerprint for clients that
/// pinned it, and every name still owned by its key. NULL restores the default: a new
/// key at each start and claims in memory only.
///
/// Errors: `P2P_NULL_ARGUMENT` (config).
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_config_set_data_dir(
    config: *mut p2p_registry_config,
    dir: *const c_char,
) -> p2p_status {
    panic::status(|| {
        let config = config_mut(config)?;
        config.config.data_dir = arg_path_or_none(dir, "dir")?;
        Ok(())
    })
}

/// How long a name claim lives unused (its key neither registering the name nor
/// ending a session holding it) before it lapses and anyone may register the name, in
/// seconds (default 90 days).
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_ARGUMENT` (0).
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_config_set_claim_ttl_secs(
    config: *mut p2p_registry_config,
    secs: u64,
) -> p2p_status {
    panic::status(|| {
        let config = config_mut(config)?;
        if secs == 0 {
            return Err(FfiError::new(
                p2p_status::P2P_INVALID_ARGUMENT,
                "the claim lifetime must be at least 1 s",
            ));
        }
        config.config.claim_ttl = Duration::from_secs(secs);
        Ok(())
    })
}

/// Run a relay inside the registry (`on`), for peers that cannot reach each other:
/// both connect out to it and it forwards their end-to-end encrypted bytes. It listens
/// on the registry's IP at `port` (0: any free port, see `p2p_registry_relay_port()`),
/// with the default bounds (1,024 circuits, 16 MiB/s per circuit, 128 MiB/s in all;
/// `docs/PROTOCOL.md` §5.4), and stops with the registry. Off by default.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_config_set_relay(
    config: *mut p2p_registry_config,
    on: bool,
    port: u16,
) -> p2p_status {
    panic::status(|| {
        let config = config_mut(config)?;
        config.config.embedded_relay = on.then(|| p2pcore::registry::EmbeddedRelay {
            port,
            ..Default::default()
        });
        Ok(())
    })
}

/// Where the registry keeps its directory: `"memory"` (the default: this process) or
/// `"redis://HOST:PORT[/DB]"` (bytes, borrowed for the call), a Redis 7 (or Valkey)
/// shared by every registry node given the same URL: users, name claims and the
/// per-address registration caps then hold across the nodes (give each node the same
/// data directory key so clients pin one fingerprint). Redis is first reached by
/// `p2p_registry_start_with_config()`; while it is unreachable later, queries get
/// `ERR,Registry unavailable` and the node recovers by itself when it returns.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_UTF8`, `P2P_INVALID_ARGUMENT` (neither
/// `memory` nor a `redis://HOST:PORT[/DB]` URL).
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_config_set_store(
    config: *mut p2p_registry_config,
    store: *const c_char,
) -> p2p_status {
    panic::status(|| {
        let config = config_mut(config)?;
        let store = arg_str(store, "store")?;
        config.config.store = StoreSpec::parse(store)?;
        Ok(())
    })
}

/// With the Redis store, whether this node publishes its events (queries, connects,
/// refusals, …) for every node's live display (`p2pchat server --show all`,
/// `p2pchat server log`): `true` (the default) or `false`, which spares the node an
/// event per query under a flood. Without Redis nothing is published either way.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_config_set_publish_events(
    config: *mut p2p_registry_config,
    on: bool,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.config.publish_events = on;
        Ok(())
    })
}

/// Start a registry as `config` says (see `p2p_registry_start()`, which this extends).
/// `config` is only read. On success `*out` receives the new handle, owned by the
/// caller (free it with `p2p_registry_free()`); untouched on failure.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_IO` (cannot bind; the data directory, its key or
/// its claims store cannot be created or read; the Redis store cannot be reached),
/// `P2P_INVALID_ARGUMENT` (a malformed
/// listen address; the data directory's `registry.key` is not a key file, or others
/// may read it; the nodes running on the Redis store serve with another key), `P2P_BUSY`
/// (another registry is serving from the same data directory).
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_start_with_config(
    config: *const p2p_registry_config,
    out: *mut *mut p2p_registry,
) -> p2p_status {
    panic::status(|| {
        let config = arg_ref(config, "config")?;
        let out = arg_out(out, "out")?;
        let handle = start(
            &config.addr,
            config.config.clone(),
            config.on_event,
            config.user_data,
        )?;
        put(out, handle);
        Ok(())
    })
}

/// Start a registry: the one body of `p2p_registry_start()` and
/// `p2p_registry_start_with_config()`.
fn start(
    addr: &str,
    config: RegistryConfig,
    on_event: p2p_registry_event_cb,
    ud: UserData,
) -> Result<*mut p2p_registry, FfiError> {
    let mut builder = Registry::builder().config(config);
    let id = callback::new_id();
    if let Some(cb) = on_event {
        builder = builder.on_event(move |ev| {
            let _scope = Scope::enter(Owner::Registry(id));
            deliver(cb, ud, ev)
        });
    }
    // A malformed address is the caller's mistake (as a peer's registry address is),
    // not an I/O failure of binding.
    let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .map_err(|e| {
            FfiError::from(p2pcore::Error::InvalidArgument(format!(
                "registry listen address {addr:?}: {e} (expected \"host:port\")"
            )))
        })?
        .collect();
    if addrs.is_empty() {
        return Err(FfiError::from(p2pcore::Error::InvalidArgument(format!(
            "registry listen address {addr:?} resolves to nothing"
        ))));
    }
    let server = builder.bind(&addrs[..])?;
    let handle = Box::new(p2p_registry {
        local_addr: server.local_addr(),
        fingerprint: server.fingerprint().to_string(),
        relay_port: server.relay_addr().map_or(0, |a| a.port()),
        server: Mutex::new(Some(server)),
        id,
    });
    Ok(Box::into_raw(handle))
}

/// Start a registry server listening on `addr` (`"host:port"`; port 0 picks a free
/// port, see `p2p_registry_port()`).
///
/// - `addr`: NUL-terminated UTF-8, borrowed for the call.
/// - `on_event`: called for every event (see `p2p_registry_event_cb`), or NULL.
/// - `user_data`: passed to `on_event` as is; must stay valid until
///   `p2p_registry_stop()` or `p2p_registry_free()` returns.
/// - `out`: on success receives the new handle, owned by the caller (free it with
///   `p2p_registry_free()`); untouched on failure.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_UTF8`, `P2P_INVALID_ARGUMENT` (`addr` is
/// not a `"host:port"` address, or resolves to nothing), `P2P_IO` (cannot bind).
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_start(
    addr: *const c_char,
    on_event: p2p_registry_event_cb,
    user_data: *mut c_void,
    out: *mut *mut p2p_registry,
) -> p2p_status {
    panic::status(|| {
        let addr = arg_str(addr, "addr")?;
        let out = arg_out(out, "out")?;
        let handle = start(
            addr,
            RegistryConfig::default(),
            on_event,
            UserData(user_data),
        )?;
        put(out, handle);
        Ok(())
    })
}

/// The port the registry listens on (the real one when started on port 0). Works
/// after `p2p_registry_stop()` too.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_port(
    registry: *const p2p_registry,
    out: *mut u16,
) -> p2p_status {
    panic::status(|| {
        let registry = arg_ref(registry, "registry")?;
        put(arg_out(out, "out")?, registry.local_addr.port());
        Ok(())
    })
}

/// The port of the registry's embedded relay (see `p2p_registry_config_set_relay()`),
/// or 0 when it runs none. Works after `p2p_registry_stop()` too.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_relay_port(
    registry: *const p2p_registry,
    out: *mut u16,
) -> p2p_status {
    panic::status(|| {
        let registry = arg_ref(registry, "registry")?;
        put(arg_out(out, "out")?, registry.relay_port);
        Ok(())
    })
}

/// The address the registry listens on, as `"ip:port"` (what peers pass as their
/// registry address). On success `*out` is a new string the caller frees with
/// `p2p_string_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_address(
    registry: *const p2p_registry,
    out: *mut *mut c_char,
) -> p2p_status {
    panic::status(|| {
        let registry = arg_ref(registry, "registry")?;
        put(
            arg_out(out, "out")?,
            owned(&registry.local_addr.to_string()),
        );
        Ok(())
    })
}

/// The usernames online now, sorted. On success `*out` is filled in; the caller frees
/// it with `p2p_string_list_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN` (after `p2p_registry_stop()`).
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_users(
    registry: *const p2p_registry,
    out: *mut p2p_string_list,
) -> p2p_status {
    panic::status(|| {
        let registry = arg_ref(registry, "registry")?;
        let out = arg_out(out, "out")?;
        let users = registry.with(|r| r.users())?;
        put(out, p2p_string_list::from_strings(&users));
        Ok(())
    })
}

/// How many users are online.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN` (after `p2p_registry_stop()`).
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_user_count(
    registry: *const p2p_registry,
    out: *mut usize,
) -> p2p_status {
    panic::status(|| {
        let registry = arg_ref(registry, "registry")?;
        let out = arg_out(out, "out")?;
        put(out, registry.with(|r| r.user_count())?);
        Ok(())
    })
}

/// The fingerprint of the registry's key (eight groups of four characters), what its
/// operator publishes so that users can pin it (`"host:port#FINGERPRINT"`, see
/// `p2p_peer_config_new()`). Works after `p2p_registry_stop()` too. On success `*out`
/// is a new string; free it with `p2p_string_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_fingerprint(
    registry: *const p2p_registry,
    out: *mut *mut c_char,
) -> p2p_status {
    panic::status(|| {
        let registry = arg_ref(registry, "registry")?;
        put(arg_out(out, "out")?, owned(&registry.fingerprint));
        Ok(())
    })
}

/// Release the claim on `username`, as an operator does for a user who lost their key:
/// the name stays registered if it is online, and its next registration, by any key,
/// is unclaimed (an encrypted one claims it anew). On success, if `released_out` is
/// not NULL, `*released_out` says whether there was a claim.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_UTF8`, `P2P_SHUTDOWN`, `P2P_IO` (the
/// claims store could not be written).
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_release_name(
    registry: *const p2p_registry,
    username: *const c_char,
    released_out: *mut bool,
) -> p2p_status {
    panic::status(|| {
        let registry = arg_ref(registry, "registry")?;
        let username = arg_str(username, "username")?;
        let released = registry.with(|r| r.release_claim(username))??;
        if let Some(out) = released_out.as_mut() {
            put(out, released);
        }
        Ok(())
    })
}

impl p2p_registry {
    /// Refuse `what` (stopping or freeing) from inside this registry's own event
    /// callback: it would join the very thread it runs on.
    fn refuse_in_own_callback(&self, what: &str) -> Result<(), FfiError> {
        if callback::inside(Owner::Registry(self.id)) {
            return Err(FfiError::would_deadlock(format!(
                "{what} was called from inside this registry's own event callback; it \
                 waits for every registry thread, this one included, so nothing was \
                 done: call it from another thread"
            )));
        }
        Ok(())
    }
}

/// Stop serving: close every connection and join the server's threads. When it
/// returns, the event callback is never called again. The handle stays valid (and must
/// still be freed); other calls on it then return `P2P_SHUTDOWN`.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN` (already stopped),
/// `P2P_WOULD_DEADLOCK` (called from the registry's own event callback, which it
/// would have to wait for: nothing was done; stop it from another thread).
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_stop(registry: *mut p2p_registry) -> p2p_status {
    panic::status(|| {
        let registry = arg_ref(registry, "registry")?;
        registry.refuse_in_own_callback("p2p_registry_stop")?;
        let server = registry.server.lock().take();
        match server {
            Some(s) => {
                s.shutdown();
                Ok(())
            }
            None => Err(FfiError::shutdown("registry")),
        }
    })
}

/// Stop the registry (as `p2p_registry_stop()`) if it still runs, and free the handle.
///
/// NULL is a no-op. Freeing twice is undefined behaviour (the caller's bug).
///
/// Called from inside the registry's own event callback it is refused: the registry
/// keeps running, the handle stays valid, and `p2p_last_error_message()` on that thread
/// says why (the one free function besides `p2p_peer_free()` that sets it); free it
/// from another thread.
#[no_mangle]
pub unsafe extern "C" fn p2p_registry_free(registry: *mut p2p_registry) {
    panic::void_or_refuse(|| {
        if let Some(handle) = registry.as_ref() {
            handle.refuse_in_own_callback("p2p_registry_free")?;
            drop(Box::from_raw(registry));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    /// What the callback saw: kind, source, outcome, usernames.
    type Seen = (p2p_registry_event_kind, String, String, Vec<String>);

    unsafe extern "C" fn record(ud: *mut c_void, event: *const p2p_registry_event) {
        // SAFETY: `ud` is the test's `Seen` and `event` is valid during the call.
        unsafe {
            let seen = &mut *(ud as *mut Option<Seen>);
            let e = &*event;
            let text = |p: *const c_char| CStr::from_ptr(p).to_string_lossy().into_owned();
            let names = (0..e.usernames_len)
                .map(|i| text(*e.usernames.add(i)))
                .collect();
            *seen = Some((e.kind, text(e.source), text(e.outcome), names));
        }
    }

    #[test]
    fn a_reachability_event_names_the_address_the_outcome_and_the_user() {
        let mut seen: Option<Seen> = None;
        let ev = RegistryEvent::Reachability {
            user: "alice".into(),
            addr: "127.0.0.1:5000".parse().unwrap(),
            reach: p2pcore::reach::Reach::Reachable,
        };
        deliver(record, UserData(&mut seen as *mut _ as *mut c_void), &ev);
        assert_eq!(
            seen,
            Some((
                p2p_registry_event_kind::P2P_REGISTRY_REACHABILITY,
                "127.0.0.1:5000".into(),
                "reachable".into(),
                vec!["alice".into()]
            ))
        );
    }
}
