//! `p2p_peer_config` and `p2p_peer`: configuring, connecting and querying a peer from
//! C, and the peer's callbacks. Chats and downloads live in `chat.rs` and
//! `transfer.rs`.

use crate::callback::{self, Owner, Scope};
use crate::chat::{p2p_chat_closed_by, p2p_chat_request, ChatTable};
use crate::panic;
use crate::status::{p2p_status, FfiError};
use crate::strings::{
    arg_out, arg_path, arg_path_or_none, arg_ref, arg_str, c_path, c_string, owned, owned_path,
    p2p_string_list, p2p_user_files_list, put, put_ids,
};
use crate::userdata::UserData;
use p2pcore::identity::{Fingerprint, PublicKey};
use p2pcore::peer::{Peer, PeerEvent};
use p2pcore::protocol::check_username;
use parking_lot::Mutex;
use std::ffi::{c_char, c_void};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Someone asks to chat. Called on the library thread serving that connection.
///
/// `request` is a new handle owned by the callee from now on: answer it with
/// `p2p_chat_request_accept()` or `p2p_chat_request_decline()` (in the callback or
/// later, from any thread) and always release it with `p2p_chat_request_free()`
/// (freeing an unanswered request declines it). A request nobody answers within the
/// chat-answer timeout is declined by the library.
pub type p2p_chat_request_cb =
    Option<unsafe extern "C" fn(user_data: *mut c_void, request: *mut p2p_chat_request)>;

/// A chat message arrived. Called on that chat's reader thread, in order, never before
/// the call returning the chat's handle has returned. `p2p_chat_event_cb` gets the
/// same message with the chat's handle and user data.
///
/// `from` (the sender's username) and `text` (`text_len` bytes of UTF-8, followed by a
/// NUL; the text itself may contain NUL bytes) are valid only during the call.
pub type p2p_chat_message_cb = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        chat_id: u64,
        from: *const c_char,
        text: *const c_char,
        text_len: usize,
    ),
>;

/// A chat ended; called once per chat, on whichever thread ended it (the chat's reader
/// thread, or the thread calling `p2p_chat_close()`, `p2p_chat_send()`,
/// `p2p_chat_free()` or `p2p_peer_exit()`), never before the call returning the chat's
/// handle has returned. `p2p_chat_event_cb` gets it with the handle and user data.
///
/// `peer` is the other side's username, valid only during the call.
pub type p2p_chat_closed_cb = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        chat_id: u64,
        peer: *const c_char,
        by: p2p_chat_closed_by,
    ),
>;

/// Download progress: `received` of `total` bytes. Called on the download's thread;
/// `p2p_transfer_wait()` on this download from inside it returns `P2P_WOULD_DEADLOCK`.
pub type p2p_transfer_progress_cb = Option<
    unsafe extern "C" fn(user_data: *mut c_void, transfer_id: u64, received: u64, total: u64),
>;

/// A download finished and was verified; `path` (valid only during the call) is where
/// the file is. Called on the download's thread, before `p2p_transfer_wait()` returns
/// (so `p2p_transfer_wait()` on this download from inside it returns
/// `P2P_WOULD_DEADLOCK`: the outcome is this call).
pub type p2p_transfer_done_cb =
    Option<unsafe extern "C" fn(user_data: *mut c_void, transfer_id: u64, path: *const c_char)>;

/// A download failed (`P2P_CANCELLED` when cancelled); `message` is valid only during
/// the call. Called on the download's thread, before `p2p_transfer_wait()` returns
/// (so `p2p_transfer_wait()` on this download from inside it returns
/// `P2P_WOULD_DEADLOCK`).
pub type p2p_transfer_failed_cb = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        transfer_id: u64,
        status: p2p_status,
        message: *const c_char,
    ),
>;

/// What kind of background happening a `p2p_peer_event_cb` reports.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum p2p_peer_event_kind {
    /// A file in the share was left out (its name cannot be carried, or it leads out).
    P2P_EVENT_SHARE_SKIPPED = 0,
    /// The registry connection dropped; the peer is re-connecting.
    P2P_EVENT_REGISTRY_LOST = 1,
    /// The registry connection is back and the peer is registered again.
    P2P_EVENT_REGISTRY_RESTORED = 2,
    /// After a reconnect the registry refused to register this peer again.
    P2P_EVENT_REGISTRATION_REFUSED = 3,
    /// A file was served to another peer; the text names the user when it was verified,
    /// else says `unverified, plaintext` (an original client).
    P2P_EVENT_SERVED = 4,
    /// A request from another peer was refused.
    P2P_EVENT_REQUEST_REFUSED = 5,
    /// A chat request got no answer in time and was declined.
    P2P_EVENT_CHAT_REQUEST_EXPIRED = 6,
    /// A download started (possibly resuming a partial file); the text ends with
    /// `(verified, encrypted)` or `(unverified, plaintext)`.
    P2P_EVENT_TRANSFER_STARTED = 7,
    /// A rescan found files added, removed or changed in the share.
    P2P_EVENT_SHARE_UPDATED = 8,
    /// The key of a user (or of the registry) differs from the one pinned for it
    /// before; the chat, download or connection was refused (with `P2P_KEY_CHANGED`).
    /// The text names the user (or `registry <address>`) and both fingerprints, pinned
    /// and new. For a user,
    /// `p2p_peer_accept_user_key()` with the new fingerprint, once its owner has
    /// confirmed it, lets the next attempt through.
    P2P_EVENT_KEY_CHANGED = 9,
    /// A file offered to this peer got no answer in time and was declined; the text
    /// names the sender and the file.
    P2P_EVENT_FILE_OFFER_EXPIRED = 10,
    /// The registry checked whether this peer's listener can be reached from outside:
    /// the text is `reachable at <ip:port>` or `unreachable at <ip:port>` (see
    /// `p2p_peer_reachability()`).
    P2P_EVENT_REACHABILITY = 11,
}

/// How a chat or a download is connected.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum p2p_path {
    /// The caller connected to the callee's listener.
    P2P_PATH_DIRECT = 0,
    /// The callee connected back to the caller, asked through the registry (the callee
    /// cannot be reached from outside).
    P2P_PATH_REVERSE = 1,
    /// Both connected out to a relay, which forwards the encrypted bytes.
    P2P_PATH_RELAYED = 2,
    /// Both connected to each other at once through their NATs, timed by the registry
    /// (a hole punched).
    P2P_PATH_PUNCHED = 3,
}

impl From<p2pcore::reach::Path> for p2p_path {
    fn from(p: p2pcore::reach::Path) -> p2p_path {
        match p {
            p2pcore::reach::Path::Direct => p2p_path::P2P_PATH_DIRECT,
            p2pcore::reach::Path::Reverse => p2p_path::P2P_PATH_REVERSE,
            p2pcore::reach::Path::Relayed => p2p_path::P2P_PATH_RELAYED,
            p2pcore::reach::Path::Punched => p2p_path::P2P_PATH_PUNCHED,
        }
    }
}

/// Whether a peer's listener can be reached from outside, as its registry found.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum p2p_reach {
    /// Not checked (yet), or the registry does not check.
    P2P_REACH_UNKNOWN = 0,
    /// The registry connected to the listener at the address it lists.
    P2P_REACH_REACHABLE = 1,
    /// The registry's connection got no answer or was refused: a NAT or a firewall.
    /// Others reach this peer by reverse connect, a punched hole or through the relay.
    P2P_REACH_UNREACHABLE = 2,
}

/// Which paths a peer takes to reach others (`p2p_peer_config_set_path_policy()`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum p2p_path_policy {
    /// The default: direct when the other side may be reachable, then reverse connect
    /// when this peer is reachable, then a hole punch when neither is (Unix), then the
    /// relay.
    P2P_PATH_POLICY_AUTO = 0,
    /// Only direct connections.
    P2P_PATH_POLICY_DIRECT = 1,
    /// Only reverse connect.
    P2P_PATH_POLICY_REVERSE = 2,
    /// Only the relay (neither side learns the other's address).
    P2P_PATH_POLICY_RELAY = 3,
    /// Only a hole punch (Unix).
    P2P_PATH_POLICY_PUNCH = 4,
}

/// Something else happened in the background; `detail` is a one-line description for
/// people (valid only during the call). Called on various library threads: a
/// download's own thread for `P2P_EVENT_TRANSFER_STARTED` (and for
/// `P2P_EVENT_SHARE_SKIPPED` from the rescan after a download into the shared
/// directory), where `p2p_transfer_wait()` on that download returns
/// `P2P_WOULD_DEADLOCK`.
pub type p2p_peer_event_cb = Option<
    unsafe extern "C" fn(user_data: *mut c_void, kind: p2p_peer_event_kind, detail: *const c_char),
>;

/// The C callbacks of one peer and their shared user data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Callbacks {
    pub user_data: UserData,
    pub chat_request: p2p_chat_request_cb,
    pub chat_message: p2p_chat_message_cb,
    pub chat_closed: p2p_chat_closed_cb,
    pub progress: p2p_transfer_progress_cb,
    pub done: p2p_transfer_done_cb,
    pub failed: p2p_transfer_failed_cb,
    pub event: p2p_peer_event_cb,
    /// `p2p_peer_config_on_file_offer`.
    pub file_offer: crate::push::p2p_file_offer_cb,
    /// `p2p_peer_config_on_transfer_event`.
    pub transfer_event: crate::push::p2p_transfer_event_cb,
    /// `p2p_peer_config_on_offer_answered`.
    pub offer_answered: crate::push::p2p_offer_answered_cb,
    /// `p2p_peer_config_on_chat_event`.
    pub chat_event: crate::chat_callbacks::p2p_chat_event_cb,
}

/// How to connect a peer. Opaque; made by `p2p_peer_config_new()`, adjusted with the
/// `p2p_peer_config_set_*` and `p2p_peer_config_on_*` functions, used by
/// `p2p_peer_connect()` (which copies it: the config may be freed or reused right
/// after), freed by `p2p_peer_config_free()`.
pub struct p2p_peer_config {
    registry: String,
    username: String,
    shared_dir: PathBuf,
    port: u16,
    listen_ip: Option<IpAddr>,
    download_dir: Option<PathBuf>,
    chat_answer_timeout: Option<Duration>,
    /// Talk to the registry as the original client did (`p2p_peer_config_set_legacy_registry`).
    legacy_registry: bool,
    /// Watch the shared directory and announce changes (`p2p_peer_config_set_live_share`).
    live_share: bool,
    /// Where the key pair is kept (`p2p_peer_config_set_identity_file`); `None`: the
    /// default file for the username under the user's config directory.
    identity_file: Option<PathBuf>,
    /// Where pinned keys are kept (`p2p_peer_config_set_known_keys_file`); `None`: in
    /// memory for the life of the peer.
    known_keys_file: Option<PathBuf>,
    /// Refuse original clients and keyless peers (`p2p_peer_config_set_refuse_unverified`).
    refuse_unverified: bool,
    /// Serve files only to these names / `key:<hex>` entries
    /// (`p2p_peer_config_set_serve_only`); `None`: any registered user.
    serve_only: Option<Vec<String>>,
    callbacks: Callbacks,
    /// Events through a queue of this capacity instead of callbacks
    /// (`p2p_peer_config_set_event_queue`).
    event_queue: Option<usize>,
    /// `p2p_peer_config_on_chat_opened`.
    chat_opened: crate::events::p2p_chat_opened_cb,
    /// `p2p_peer_config_set_path_policy`.
    path_policy: p2pcore::peer::PathPolicy,
}

/// A connected peer. Opaque; made by `p2p_peer_connect()`, freed by `p2p_peer_free()`.
pub struct p2p_peer {
    /// `None` once exited. Calls clone the `Arc` and release the lock at once, so a
    /// long call (a chat request) never blocks another thread's call.
    peer: Mutex<Option<Arc<Peer>>>,
    /// This peer's process-unique id: its callbacks run inside `Owner::Peer(id)`.
    pub(crate) id: u64,
    /// The chats C holds handles for, released when they end.
    pub(crate) chats: Arc<ChatTable>,
    /// The transfer handles C holds, for events to carry.
    pub(crate) transfers: Arc<crate::transfer::TransferTable>,
}

impl p2p_peer {
    pub(crate) fn get(&self) -> Result<Arc<Peer>, FfiError> {
        self.peer
            .lock()
            .clone()
            .ok_or_else(|| FfiError::shutdown("peer"))
    }

    /// Refuse `what` (exiting or freeing) from inside one of this peer's own
    /// callbacks: it would join the very thread it runs on.
    fn refuse_in_own_callback(&self, what: &str) -> Result<(), FfiError> {
        if callback::inside(Owner::Peer(self.id)) {
            return Err(FfiError::would_deadlock(format!(
                "{what} was called from inside one of this peer's own callbacks; it waits \
                 for every thread of the peer, this one included, so nothing was done: \
                 call it from another thread"
            )));
        }
        Ok(())
    }

    /// Take the peer out of the handle and stop it; false if it had already exited.
    ///
    /// Stopping closes every connection, so calls in progress on other threads (a
    /// pending chat request included) return with an error at once; when this returns
    /// every library thread of the peer is joined and no callback runs any more.
    fn exit(&self) -> bool {
        let Some(peer) = self.peer.lock().take() else {
            return false;
        };
        peer.shutdown();
        true
    }
}

/// # Safety
/// `config` is NULL or a live config handle.
unsafe fn config_mut<'a>(
    config: *mut p2p_peer_config,
) -> Result<&'a mut p2p_peer_config, FfiError> {
    config.as_mut().ok_or_else(|| FfiError::null("config"))
}

/// Make a peer configuration: register as `username` (1-64 bytes of UTF-8, no comma,
/// colon or control characters) with the registry at `registry` (`"host:port"`, or
/// `"host:port#FINGERPRINT"` to accept only the registry whose key has that
/// fingerprint, as `p2p_registry_fingerprint()` or `p2pchat server` give it), sharing
/// the files of directory `shared_dir`.
///
/// Defaults: any free port, listening on the local address of the registry connection
/// (the address the registry records and hands out: a loopback registry means a
/// loopback-only listener), downloads saved into `shared_dir`, a 30 s chat-answer
/// timeout, the registry probed for its kind (p2pchat or original), no live share, no
/// callbacks (so every chat request is declined); the identity (key pair) in the
/// user's config directory, `$XDG_CONFIG_HOME/p2pchat/<username>.key` (else
/// `$HOME/.config/p2pchat/<username>.key`), created with mode 0600 on first use; pinned
/// keys kept in memory only; unverified partners accepted (and marked); files served
/// to any registered user whose key the registry lists.
///
/// All strings are borrowed for the call; `shared_dir` is taken as bytes (need not be
/// UTF-8). On success `*out` is a new config owned by the caller, to free with
/// `p2p_peer_config_free()`. Nothing is checked against the network or the file system
/// before `p2p_peer_connect()`.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_UTF8`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_new(
    registry: *const c_char,
    username: *const c_char,
    shared_dir: *const c_char,
    out: *mut *mut p2p_peer_config,
) -> p2p_status {
    panic::status(|| {
        let registry = arg_str(registry, "registry")?;
        let username = arg_str(username, "username")?;
        let shared_dir = arg_path(shared_dir, "shared_dir")?;
        let out = arg_out(out, "out")?;
        let config = Box::new(p2p_peer_config {
            registry: registry.to_string(),
            username: username.to_string(),
            shared_dir,
            port: 0,
            listen_ip: None,
            download_dir: None,
            chat_answer_timeout: None,
            legacy_registry: false,
            live_share: false,
            identity_file: None,
            known_keys_file: None,
            refuse_unverified: false,
            serve_only: None,
            callbacks: Callbacks {
                user_data: UserData(std::ptr::null_mut()),
                chat_request: None,
                chat_message: None,
                chat_closed: None,
                progress: None,
                done: None,
                failed: None,
                event: None,
                file_offer: None,
                transfer_event: None,
                offer_answered: None,
                chat_event: None,
            },
            event_queue: None,
            chat_opened: None,
            path_policy: p2pcore::peer::PathPolicy::Auto,
        });
        put(out, Box::into_raw(config));
        Ok(())
    })
}

/// Free a peer configuration. NULL is a no-op; peers connected with it are not
/// affected.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_free(config: *mut p2p_peer_config) {
    panic::void(|| {
        if !config.is_null() {
            drop(Box::from_raw(config));
        }
    })
}

/// Listen for other peers on `port` (0, the default, picks a free one; see
/// `p2p_peer_listen_port()`).
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_set_port(
    config: *mut p2p_peer_config,
    port: u16,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.port = port;
        Ok(())
    })
}

/// Listen on this IP address (e.g. `"127.0.0.1"`; `"0.0.0.0"` or `"::"` for every
/// interface); NULL restores the default, the local address of the peer's registry
/// connection (the address the registry records and hands out for it).
///
/// Errors: `P2P_NULL_ARGUMENT` (config), `P2P_INVALID_UTF8`, `P2P_INVALID_ARGUMENT`
/// (not an IP address).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_set_listen_ip(
    config: *mut p2p_peer_config,
    ip: *const c_char,
) -> p2p_status {
    panic::status(|| {
        let config = config_mut(config)?;
        config.listen_ip = if ip.is_null() {
            None
        } else {
            let text = arg_str(ip, "ip")?;
            Some(text.parse().map_err(|_| {
                FfiError::new(
                    p2p_status::P2P_INVALID_ARGUMENT,
                    format!("{text:?} is not an IP address"),
                )
            })?)
        };
        Ok(())
    })
}

/// Save downloads into directory `dir` (bytes, borrowed for the call) instead of the
/// shared directory; NULL restores the default. The directory must exist when
/// `p2p_peer_connect()` runs.
///
/// Errors: `P2P_NULL_ARGUMENT` (config).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_set_download_dir(
    config: *mut p2p_peer_config,
    dir: *const c_char,
) -> p2p_status {
    panic::status(|| {
        let config = config_mut(config)?;
        config.download_dir = arg_path_or_none(dir, "dir")?;
        Ok(())
    })
}

/// `true`: talk to the registry as the original C++ client did (one query per
/// connection, the registration re-sent periodically), for an original server;
/// `false` (the default): probe at every connection whether the registry is a
/// p2pchat registry or an original one and talk accordingly.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_set_legacy_registry(
    config: *mut p2p_peer_config,
    legacy: bool,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.legacy_registry = legacy;
        Ok(())
    })
}

/// `true`: watch the shared directory and tell the registry when files appear, change
/// or go (a file still being written is held back until it has settled); `false`
/// (the default): the share is read at connect and on `p2p_peer_rescan()` only. The
/// changes are reported as `P2P_EVENT_SHARE_*` events.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_set_live_share(
    config: *mut p2p_peer_config,
    on: bool,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.live_share = on;
        Ok(())
    })
}

/// Keep this peer's identity (its long-term key pair, which owns its username at the
/// registry) in file `path` (bytes, borrowed for the call): loaded by
/// `p2p_peer_connect()`, or created there (mode 0600, its directory 0700) when it does
/// not exist. NULL restores the default, `<username>.key` under the user's config
/// directory (see `p2p_peer_config_new()`). Keep the file: another key cannot register
/// the name while the registry's claim for it lasts. `p2p_peer_connect()` refuses a
/// file others may read or write, or one that is not an identity file
/// (`P2P_INVALID_ARGUMENT`).
///
/// Errors: `P2P_NULL_ARGUMENT` (config).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_set_identity_file(
    config: *mut p2p_peer_config,
    path: *const c_char,
) -> p2p_status {
    panic::status(|| {
        let config = config_mut(config)?;
        config.identity_file = arg_path_or_none(path, "path")?;
        Ok(())
    })
}

/// Keep the keys this peer pins (the key first seen for each user of its registry,
/// like SSH's `known_hosts`) in file `path` (bytes, borrowed for the call), created on
/// the first pin, so a changed key is noticed across runs. NULL restores the default:
/// pins kept in memory, forgotten when the peer is freed.
///
/// Errors: `P2P_NULL_ARGUMENT` (config).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_set_known_keys_file(
    config: *mut p2p_peer_config,
    path: *const c_char,
) -> p2p_status {
    panic::status(|| {
        let config = config_mut(config)?;
        config.known_keys_file = arg_path_or_none(path, "path")?;
        Ok(())
    })
}

/// `true`: refuse partners that cannot prove who they are (original C++ clients and
/// peers registered without a key): their requests are refused
/// (`P2P_EVENT_REQUEST_REFUSED`), and chats and downloads to them fail with
/// `P2P_DENIED`. `false` (the default): accept them, marked unverified
/// (`p2p_chat_request_is_verified()`, `p2p_peer_user_fingerprint()` gives `""`).
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_set_refuse_unverified(
    config: *mut p2p_peer_config,
    on: bool,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.refuse_unverified = on;
        Ok(())
    })
}

/// Serve files only to the `len` users of `names`: each entry a username, or
/// `"key:"` followed by 64 hex digits for a key whatever name it registers under (a
/// username cannot contain `:`). Anyone else asking for a file is refused
/// (`P2P_EVENT_REQUEST_REFUSED`; the asker gets `P2P_DENIED`). Chats are not affected.
///
/// `names` NULL restores the default (any registered user whose key the registry
/// lists); `names` not NULL with `len` 0 serves no one. The strings are copied: they
/// are borrowed for the call only. On failure the config is unchanged.
///
/// Errors: `P2P_NULL_ARGUMENT` (config, or an entry of `names`), `P2P_INVALID_UTF8`,
/// `P2P_INVALID_ARGUMENT` (an entry neither a valid username nor `key:<64 hex>`).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_set_serve_only(
    config: *mut p2p_peer_config,
    names: *const *const c_char,
    len: usize,
) -> p2p_status {
    panic::status(|| {
        let config = config_mut(config)?;
        if names.is_null() {
            config.serve_only = None;
            return Ok(());
        }
        let mut list = Vec::with_capacity(len.min(1024));
        for i in 0..len {
            let what = format!("names[{i}]");
            let entry = arg_str(*names.add(i), &what)?;
            check_serve_only_entry(entry).map_err(|why| {
                FfiError::new(
                    p2p_status::P2P_INVALID_ARGUMENT,
                    format!("{what} ({entry:?}) {why}"),
                )
            })?;
            list.push(entry.to_string());
        }
        config.serve_only = Some(list);
        Ok(())
    })
}

/// Checks one entry of a serve-only list: a username or `key:<64 hex digits>`.
fn check_serve_only_entry(entry: &str) -> Result<(), &'static str> {
    match entry.strip_prefix("key:") {
        Some(hex) if PublicKey::from_hex(hex).is_some() => Ok(()),
        Some(_) => Err("is not key: followed by 64 hex digits"),
        None if check_username(entry).is_ok() => Ok(()),
        None => Err("is not a valid username (nor key:<64 hex digits>)"),
    }
}

/// How long an incoming chat request waits for an answer before the library declines
/// it, in milliseconds (default 30000).
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_ARGUMENT` (0).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_set_chat_answer_timeout_ms(
    config: *mut p2p_peer_config,
    timeout_ms: u64,
) -> p2p_status {
    panic::status(|| {
        let config = config_mut(config)?;
        if timeout_ms == 0 {
            return Err(FfiError::new(
                p2p_status::P2P_INVALID_ARGUMENT,
                "the chat-answer timeout must be at least 1 ms",
            ));
        }
        config.chat_answer_timeout = Some(Duration::from_millis(timeout_ms));
        Ok(())
    })
}

/// The pointer every callback of the peer receives as its first argument. The
/// library never dereferences it; it must stay valid (and usable from library
/// threads) until `p2p_peer_exit()` or `p2p_peer_free()` returns: no callback of the
/// peer runs after that.
///
/// Errors: `P2P_NULL_ARGUMENT` (config; `user_data` may be NULL).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_set_user_data(
    config: *mut p2p_peer_config,
    user_data: *mut c_void,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.callbacks.user_data = UserData(user_data);
        Ok(())
    })
}

/// Call `callback` when someone asks to chat (see `p2p_chat_request_cb`). Without
/// it (and without `p2p_peer_config_on_chat_event()`) every request is declined.
///
/// NULL unsets it. Errors: `P2P_NULL_ARGUMENT` (config).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_on_chat_request(
    config: *mut p2p_peer_config,
    callback: p2p_chat_request_cb,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.callbacks.chat_request = callback;
        Ok(())
    })
}

/// Call `callback` for every chat message received (see `p2p_chat_message_cb`).
///
/// NULL unsets it. Errors: `P2P_NULL_ARGUMENT` (config).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_on_chat_message(
    config: *mut p2p_peer_config,
    callback: p2p_chat_message_cb,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.callbacks.chat_message = callback;
        Ok(())
    })
}

/// Call `callback` when a chat ends (see `p2p_chat_closed_cb`).
///
/// NULL unsets it. Errors: `P2P_NULL_ARGUMENT` (config).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_on_chat_closed(
    config: *mut p2p_peer_config,
    callback: p2p_chat_closed_cb,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.callbacks.chat_closed = callback;
        Ok(())
    })
}

/// Call `callback` as a download progresses (see `p2p_transfer_progress_cb`).
///
/// NULL unsets it. Errors: `P2P_NULL_ARGUMENT` (config).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_on_transfer_progress(
    config: *mut p2p_peer_config,
    callback: p2p_transfer_progress_cb,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.callbacks.progress = callback;
        Ok(())
    })
}

/// Call `callback` when a download succeeds (see `p2p_transfer_done_cb`).
///
/// NULL unsets it. Errors: `P2P_NULL_ARGUMENT` (config).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_on_transfer_done(
    config: *mut p2p_peer_config,
    callback: p2p_transfer_done_cb,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.callbacks.done = callback;
        Ok(())
    })
}

/// Call `callback` when a download fails (see `p2p_transfer_failed_cb`).
///
/// NULL unsets it. Errors: `P2P_NULL_ARGUMENT` (config).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_on_transfer_failed(
    config: *mut p2p_peer_config,
    callback: p2p_transfer_failed_cb,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.callbacks.failed = callback;
        Ok(())
    })
}

/// Call `callback` for other background events (see `p2p_peer_event_cb`).
///
/// NULL unsets it. Errors: `P2P_NULL_ARGUMENT` (config).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_on_event(
    config: *mut p2p_peer_config,
    callback: p2p_peer_event_cb,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.callbacks.event = callback;
        Ok(())
    })
}

/// Call `callback` when someone offers a file (see `p2p_file_offer_cb`). Without it
/// (and without an event queue) offers are declined at once.
///
/// NULL unsets it. Errors: `P2P_NULL_ARGUMENT` (config).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_on_file_offer(
    config: *mut p2p_peer_config,
    callback: crate::push::p2p_file_offer_cb,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.callbacks.file_offer = callback;
        Ok(())
    })
}

/// Call `callback` for each transfer's progress, end or failure with the transfer's
/// handle and user data (see `p2p_transfer_event_cb`), besides the per-kind callbacks.
///
/// NULL unsets it. Errors: `P2P_NULL_ARGUMENT` (config).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_on_transfer_event(
    config: *mut p2p_peer_config,
    callback: crate::push::p2p_transfer_event_cb,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.callbacks.transfer_event = callback;
        Ok(())
    })
}

/// Call `callback` with the answer to each `p2p_peer_offer_file_async()` (see
/// `p2p_offer_answered_cb`). Without it (and without an event queue)
/// `p2p_peer_offer_file_async()` is refused.
///
/// NULL unsets it. Errors: `P2P_NULL_ARGUMENT` (config).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_on_offer_answered(
    config: *mut p2p_peer_config,
    callback: crate::push::p2p_offer_answered_cb,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.callbacks.offer_answered = callback;
        Ok(())
    })
}

pub(crate) fn describe(event: &PeerEvent) -> (p2p_peer_event_kind, String) {
    use p2p_peer_event_kind::*;
    match event {
        PeerEvent::ShareSkipped { name, reason } => (
            P2P_EVENT_SHARE_SKIPPED,
            format!("skipped {name:?}: {reason}"),
        ),
        PeerEvent::RegistryLost { detail } => (P2P_EVENT_REGISTRY_LOST, detail.clone()),
        PeerEvent::RegistryRestored => (
            P2P_EVENT_REGISTRY_RESTORED,
            "registered with the registry again".into(),
        ),
        PeerEvent::RegistrationRefused { reason } => {
            (P2P_EVENT_REGISTRATION_REFUSED, reason.clone())
        }
        PeerEvent::Served {
            to,
            file,
            offset,
            bytes,
            user,
        } => (
            P2P_EVENT_SERVED,
            match user {
                Some(user) => format!(
                    "sent {bytes} bytes of {file:?} from offset {offset} to {user} at {to} \
                     (verified)"
                ),
                None => format!(
                    "sent {bytes} bytes of {file:?} from offset {offset} to {to} \
                     (unverified, plaintext)"
                ),
            },
        ),
        PeerEvent::RequestRefused {
            from,
            request,
            reason,
        } => (
            P2P_EVENT_REQUEST_REFUSED,
            format!("refused {request:?} from {from}: {reason}"),
        ),
        PeerEvent::ChatRequestExpired { from } => (
            P2P_EVENT_CHAT_REQUEST_EXPIRED,
            format!("the chat request from {from} expired"),
        ),
        PeerEvent::TransferStarted {
            id,
            from,
            file,
            size,
            offset,
            verified,
            path,
        } => (
            P2P_EVENT_TRANSFER_STARTED,
            format!(
                "download {id} of {file:?} ({size} bytes) from {from} started at offset \
                 {offset} ({}, {path})",
                if *verified {
                    "verified, encrypted"
                } else {
                    "unverified, plaintext"
                }
            ),
        ),
        PeerEvent::Reachability { reach, addr } => {
            (P2P_EVENT_REACHABILITY, format!("{reach} at {addr}"))
        }
        PeerEvent::KeyChanged {
            subject,
            pinned,
            offered,
        } => (
            P2P_EVENT_KEY_CHANGED,
            // The same words as the P2P_KEY_CHANGED status's message.
            p2pcore::Error::KeyChanged {
                subject: subject.clone(),
                pinned: *pinned,
                offered: *offered,
            }
            .to_string(),
        ),
        PeerEvent::ShareUpdated {
            files,
            added,
            removed,
            changed,
        } => (
            P2P_EVENT_SHARE_UPDATED,
            format!(
                "sharing {files} files: {} added, {} removed, {} changed",
                added.len(),
                removed.len(),
                changed.len()
            ),
        ),
        PeerEvent::FileOfferExpired { from, file } => (
            P2P_EVENT_FILE_OFFER_EXPIRED,
            format!("the offer of {file:?} from {from} expired"),
        ),
    }
}

impl p2p_peer_config {
    /// Connect, with every C callback run inside a [`Scope`] of peer `id`, and the
    /// chat-closed hook always set so `chats` releases each chat's socket as it ends.
    fn connect(
        &self,
        id: u64,
        chats: &Arc<ChatTable>,
        transfers: &Arc<crate::transfer::TransferTable>,
    ) -> Result<Peer, FfiError> {
        let mut b = Peer::builder(&self.registry, &self.username, &self.shared_dir).port(self.port);
        if let Some(ip) = self.listen_ip {
            b = b.listen_ip(ip);
        }
        if let Some(dir) = &self.download_dir {
            b = b.download_dir(dir);
        }
        if let Some(t) = self.chat_answer_timeout {
            b = b.chat_answer_timeout(t);
        }
        b = b
            .legacy_registry(self.legacy_registry)
            .live_share(self.live_share)
            .refuse_unverified(self.refuse_unverified);
        if let Some(path) = &self.identity_file {
            b = b.identity_file(path);
        }
        if let Some(path) = &self.known_keys_file {
            b = b.known_keys_file(path);
        }
        if let Some(list) = &self.serve_only {
            b = b.serve_only(list.iter().cloned());
        }
        let cbs = self.callbacks;
        let ud = cbs.user_data;
        b = crate::chat_callbacks::wire(b, cbs, self.chat_opened, id, chats);
        if let Some(cb) = cbs.progress {
            b = b.on_transfer_progress(move |transfer, got, total| {
                let _scope = Scope::enter_download(id, transfer);
                // SAFETY: as documented for `p2p_transfer_progress_cb`.
                unsafe { cb(ud.ptr(), transfer, got, total) }
            });
        }
        if let Some(cb) = cbs.done {
            b = b.on_transfer_done(move |transfer, path| {
                let path = c_path(path);
                let _scope = Scope::enter_download(id, transfer);
                // SAFETY: as documented for `p2p_transfer_done_cb`.
                unsafe { cb(ud.ptr(), transfer, path.as_ptr()) }
            });
        }
        if let Some(cb) = cbs.failed {
            b = b.on_transfer_failed(move |transfer, err| {
                let e = FfiError::from(err);
                let message = c_string(&e.message);
                let _scope = Scope::enter_download(id, transfer);
                // SAFETY: as documented for `p2p_transfer_failed_cb`.
                unsafe { cb(ud.ptr(), transfer, e.status, message.as_ptr()) }
            });
        }
        if let Some(cb) = cbs.event {
            b = b.on_event(move |event| {
                let (kind, detail) = describe(event);
                let detail = c_string(&detail);
                let _scope = match event {
                    // Emitted on the download's own thread.
                    PeerEvent::TransferStarted { id: transfer, .. } => {
                        Scope::enter_download(id, *transfer)
                    }
                    _ => Scope::enter(Owner::Peer(id)),
                };
                // SAFETY: as documented for `p2p_peer_event_cb`.
                unsafe { cb(ud.ptr(), kind, detail.as_ptr()) }
            });
        }
        b = crate::push::wire(b, cbs, id, transfers);
        if let Some(capacity) = self.event_queue {
            b = b.event_queue(capacity);
        }
        b = b.path_policy(self.path_policy);
        Ok(b.connect()?)
    }
}

/// Connect a peer as `config` says: check the username and directories, scan the
/// share, start listening and register with the registry. Blocks until registered
/// (registry round trips time out after 10 s).
///
/// `config` is only read (and may be freed right after). On success `*out` is the new
/// peer, owned by the caller (free it with `p2p_peer_free()`); callbacks may run on
/// library threads from now until `p2p_peer_exit()` / `p2p_peer_free()` returns.
///
/// The registry link is secured (a Noise handshake) when the registry offers it; the
/// registry's key is then checked against the `#FINGERPRINT` in the registry address,
/// or else against the key pinned for that address before (pinned now on first use).
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_USERNAME`, `P2P_NOT_A_DIRECTORY` (the
/// shared or the download directory, named as such in the message),
/// `P2P_INVALID_ARGUMENT` (the identity file is not one, or others may read it; no
/// identity file set and neither `XDG_CONFIG_HOME` nor `HOME` set; a malformed
/// `#FINGERPRINT`), `P2P_IO` (registry unreachable; the identity or known-keys file
/// cannot be read or created), `P2P_KEY_CHANGED` (the registry's key is not the one
/// pinned or given: the message names both fingerprints), `P2P_DENIED` (the registry's
/// key is pinned or given but it no longer secures its link), `P2P_PORT_UNAVAILABLE`,
/// `P2P_USERNAME_TAKEN`, `P2P_TIMEOUT`, `P2P_REGISTRY` (also: the name is claimed by
/// another key, the message saying so), `P2P_PROTOCOL`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_connect(
    config: *const p2p_peer_config,
    out: *mut *mut p2p_peer,
) -> p2p_status {
    panic::status(|| {
        let config = arg_ref(config, "config")?;
        let out = arg_out(out, "out")?;
        let id = callback::new_id();
        let chats = Arc::new(ChatTable::default());
        let transfers = Arc::new(crate::transfer::TransferTable::default());
        let peer = config.connect(id, &chats, &transfers)?;
        let handle = Box::new(p2p_peer {
            peer: Mutex::new(Some(Arc::new(peer))),
            id,
            chats,
            transfers,
        });
        put(out, Box::into_raw(handle));
        Ok(())
    })
}

/// Leave: unregister (`EXIT`), close every chat and connection, stop serving and join
/// every library thread of the peer. Calls on this peer already in progress on other
/// threads return promptly with an error (their connections are closed: a pending
/// `p2p_peer_chat()` gets `P2P_SHUTDOWN`); calls starting meanwhile return
/// `P2P_SHUTDOWN`. When it
/// returns, no callback of this peer runs any more. The handle stays valid and must
/// still be freed; other calls on it return `P2P_SHUTDOWN`. Chat and transfer handles
/// stay valid: sending then fails with `P2P_CLOSED`, waiting returns the download's
/// outcome.
///
/// From inside one of this peer's own callbacks (which this call would have to wait
/// for) it is refused with `P2P_WOULD_DEADLOCK` and does nothing: exit from another
/// thread.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN` (already exited), `P2P_WOULD_DEADLOCK`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_exit(peer: *mut p2p_peer) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?;
        peer.refuse_in_own_callback("p2p_peer_exit")?;
        if peer.exit() {
            Ok(())
        } else {
            Err(FfiError::shutdown("peer"))
        }
    })
}

/// Exit the peer (as `p2p_peer_exit()`) if it has not exited, and free the handle.
///
/// NULL is a no-op. Freeing twice is undefined behaviour (the caller's bug). Must not
/// be called while another thread may still start a call on the same handle (calls
/// already in progress end promptly, as with `p2p_peer_exit()`).
///
/// Called from inside one of this peer's own callbacks it is refused: nothing is
/// stopped or freed, the handle stays valid, and `p2p_last_error_message()` on that
/// thread says why (it and `p2p_registry_free()` are the only free functions that set
/// it); free it from another thread.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_free(peer: *mut p2p_peer) {
    panic::void_or_refuse(|| {
        if let Some(handle) = peer.as_ref() {
            handle.refuse_in_own_callback("p2p_peer_free")?;
            let peer = Box::from_raw(peer);
            peer.exit();
        }
        Ok(())
    })
}

/// This peer's username. On success `*out` is a new string; free it with
/// `p2p_string_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_username(
    peer: *const p2p_peer,
    out: *mut *mut c_char,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?.get()?;
        put(arg_out(out, "out")?, owned(peer.username()));
        Ok(())
    })
}

/// Which paths this peer takes to reach other peers: a `p2p_path_policy` value
/// (default `P2P_PATH_POLICY_AUTO`); the others force one path, e.g.
/// `P2P_PATH_POLICY_RELAY` for an application that does not want other users to learn
/// its address. Taken as an `int32_t` so that a value outside the enum is refused
/// rather than undefined.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_ARGUMENT` (not a `p2p_path_policy`).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_set_path_policy(
    config: *mut p2p_peer_config,
    policy: i32,
) -> p2p_status {
    panic::status(|| {
        let config = config_mut(config)?;
        use p2pcore::peer::PathPolicy;
        config.path_policy = match policy {
            0 => PathPolicy::Auto,
            1 => PathPolicy::Direct,
            2 => PathPolicy::Reverse,
            3 => PathPolicy::Relay,
            4 => PathPolicy::Punch,
            other => {
                return Err(FfiError::new(
                    p2p_status::P2P_INVALID_ARGUMENT,
                    format!("{other} is not a p2p_path_policy"),
                ))
            }
        };
        Ok(())
    })
}

/// Whether this peer's listener can be reached from outside, as the registry's check
/// found (`P2P_REACH_UNKNOWN` before it said, and with a registry that does not
/// check). Changes are reported as `P2P_EVENT_REACHABILITY`.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_reachability(
    peer: *const p2p_peer,
    out: *mut p2p_reach,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?.get()?;
        let reach = match peer.reachability() {
            p2pcore::reach::Reach::Unknown => p2p_reach::P2P_REACH_UNKNOWN,
            p2pcore::reach::Reach::Reachable => p2p_reach::P2P_REACH_REACHABLE,
            p2pcore::reach::Reach::Unreachable => p2p_reach::P2P_REACH_UNREACHABLE,
        };
        put(arg_out(out, "out")?, reach);
        Ok(())
    })
}

/// The port this peer listens on for other peers.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_listen_port(peer: *const p2p_peer, out: *mut u16) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?.get()?;
        put(arg_out(out, "out")?, peer.listen_addr().port());
        Ok(())
    })
}

/// The shared directory (canonical path). On success `*out` is a new string; free it
/// with `p2p_string_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_shared_dir(
    peer: *const p2p_peer,
    out: *mut *mut c_char,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?.get()?;
        put(arg_out(out, "out")?, owned_path(peer.shared_dir()));
        Ok(())
    })
}

/// Where downloads are saved. On success `*out` is a new string; free it with
/// `p2p_string_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_download_dir(
    peer: *const p2p_peer,
    out: *mut *mut c_char,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?.get()?;
        put(arg_out(out, "out")?, owned_path(peer.download_dir()));
        Ok(())
    })
}

/// The filenames this peer shares now (from its last scan; no network). On success
/// `*out` is filled in; free it with `p2p_string_list_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_shared_files(
    peer: *const p2p_peer,
    out: *mut p2p_string_list,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?.get()?;
        put(
            arg_out(out, "out")?,
            p2p_string_list::from_strings(&peer.shared_files()),
        );
        Ok(())
    })
}

/// The usernames online, sorted (asks the registry; blocks for one round trip). On
/// success `*out` is filled in; free it with `p2p_string_list_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN`, `P2P_IO`, `P2P_TIMEOUT` (the registry
/// did not answer in time), `P2P_CLOSED` (the registry closed the connection without
/// answering), `P2P_REGISTRY`, `P2P_PROTOCOL`, `P2P_KEY_CHANGED`, `P2P_DENIED`
/// (reconnecting, the registry's key had changed or it no longer secured its link: see
/// `p2p_peer_connect()`).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_users(
    peer: *const p2p_peer,
    out: *mut p2p_string_list,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?.get()?;
        let out = arg_out(out, "out")?;
        let users = peer.users()?;
        put(out, p2p_string_list::from_strings(&users));
        Ok(())
    })
}

/// Where `user` listens (asks the registry). On success `*ip_out` is a new string
/// (`"127.0.0.1"`, free it with `p2p_string_free()`) and `*port_out` the port; on
/// failure neither is touched.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_UTF8`, `P2P_INVALID_USERNAME`,
/// `P2P_USER_NOT_FOUND`, `P2P_SHUTDOWN`, `P2P_IO`, `P2P_TIMEOUT`, `P2P_PROTOCOL`,
/// `P2P_KEY_CHANGED`, `P2P_DENIED` (reconnecting, the registry's key had changed or it
/// no longer secured its link: see `p2p_peer_connect()`).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_address(
    peer: *const p2p_peer,
    user: *const c_char,
    ip_out: *mut *mut c_char,
    port_out: *mut u16,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?;
        let user = arg_str(user, "user")?;
        let ip_out = arg_out(ip_out, "ip_out")?;
        let port_out = arg_out(port_out, "port_out")?;
        let addr = peer.get()?.peer_addr(user)?;
        put(ip_out, owned(&addr.ip().to_string()));
        put(port_out, addr.port());
        Ok(())
    })
}

/// Every online user's shared files (asks the registry). On success `*out` is filled
/// in: `out->len` entries of `{user, files}`; free it all with
/// `p2p_user_files_list_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN`, `P2P_IO`, `P2P_TIMEOUT`, `P2P_CLOSED`
/// (the registry closed the connection without answering), `P2P_REGISTRY`,
/// `P2P_PROTOCOL`, `P2P_KEY_CHANGED`, `P2P_DENIED` (reconnecting, the registry's key
/// had changed or it no longer secured its link: see `p2p_peer_connect()`).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_all_files(
    peer: *const p2p_peer,
    out: *mut p2p_user_files_list,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?.get()?;
        let out = arg_out(out, "out")?;
        let all = peer.all_files()?;
        put(out, p2p_user_files_list::from_pairs(&all));
        Ok(())
    })
}

/// Whether `user` is an original (C++) client (asks the registry). Such a user gets
/// chats and downloads in the original protocol: a chat request it does not take ends
/// with `P2P_TIMEOUT` (it just closes), and downloads from it cannot be verified (see
/// `p2p_transfer_is_verified()`). Behind an original registry, which cannot tell who
/// is what, every user counts as one. On success `*out` is true for an original client.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_UTF8`, `P2P_INVALID_USERNAME`,
/// `P2P_USER_NOT_FOUND`, `P2P_SHUTDOWN`, `P2P_IO`, `P2P_TIMEOUT`, `P2P_PROTOCOL`,
/// `P2P_KEY_CHANGED`, `P2P_DENIED` (reconnecting, the registry's key had changed or it
/// no longer secured its link: see `p2p_peer_connect()`).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_user_is_legacy(
    peer: *const p2p_peer,
    user: *const c_char,
    out: *mut bool,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?;
        let user = arg_str(user, "user")?;
        let out = arg_out(out, "out")?;
        let info = peer.get()?.peer_info(user)?;
        put(out, info.legacy);
        Ok(())
    })
}

/// This peer's own fingerprint: the short digest of its public key that other people
/// compare (eight groups of four characters, `"K7QH-2MXA-..."`), e.g. read out to a
/// friend who checks it against `p2p_peer_user_fingerprint()` on their side. On
/// success `*out` is a new string; free it with `p2p_string_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_fingerprint(
    peer: *const p2p_peer,
    out: *mut *mut c_char,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?.get()?;
        put(arg_out(out, "out")?, owned(&peer.fingerprint().to_string()));
        Ok(())
    })
}

/// The fingerprint of the key the registry lists for `user` now (asks the registry),
/// to compare with the one `user` reads out from their own `p2p_peer_fingerprint()`.
/// On success `*out` is a new string (free it with `p2p_string_free()`): the
/// fingerprint, or `""` when the registry lists no key for `user` (an original
/// client, a peer registered without a key, or an original registry): such a user
/// is unverified.
///
/// This only reports; it pins nothing (chats and downloads pin a user's key the first
/// time they reach it).
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_UTF8`, `P2P_INVALID_USERNAME`,
/// `P2P_USER_NOT_FOUND`, `P2P_SHUTDOWN`, `P2P_IO`, `P2P_TIMEOUT`, `P2P_PROTOCOL`,
/// `P2P_KEY_CHANGED`, `P2P_DENIED` (reconnecting, the registry's key had changed or it
/// no longer secured its link: see `p2p_peer_connect()`).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_user_fingerprint(
    peer: *const p2p_peer,
    user: *const c_char,
    out: *mut *mut c_char,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?;
        let user = arg_str(user, "user")?;
        let out = arg_out(out, "out")?;
        let info = peer.get()?.peer_info(user)?;
        let text = info.key.map(|k| k.fingerprint().to_string());
        put(out, owned(text.as_deref().unwrap_or("")));
        Ok(())
    })
}

/// Accept the key the registry lists now for `user` as theirs from now on, replacing
/// the key pinned for that name before: what to do after a chat or download failed
/// with `P2P_KEY_CHANGED` and the person has confirmed the new key with its owner.
///
/// `fingerprint` is the fingerprint the person compared (as `p2p_peer_user_fingerprint()`
/// and `p2p_peer_fingerprint()` write it; case, dashes and spaces do not matter). The
/// key is pinned only if the registry lists, at the time of this call, a key with
/// exactly that fingerprint, so a key swapped in after the comparison is not
/// accepted by mistake. Pinned in the known-keys file when the peer has one
/// (`p2p_peer_config_set_known_keys_file()`), else in memory.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_UTF8`, `P2P_INVALID_USERNAME`,
/// `P2P_INVALID_ARGUMENT` (`fingerprint` is not a fingerprint), `P2P_DENIED` (the
/// registry lists another key for `user` now, or none: nothing was pinned; or,
/// reconnecting, the registry no longer secured its link), `P2P_USER_NOT_FOUND`,
/// `P2P_SHUTDOWN`, `P2P_IO` (also: the known-keys file could not be written),
/// `P2P_TIMEOUT`, `P2P_PROTOCOL`, `P2P_KEY_CHANGED` (reconnecting, the registry's key
/// had changed: see `p2p_peer_connect()`).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_accept_user_key(
    peer: *const p2p_peer,
    user: *const c_char,
    fingerprint: *const c_char,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?;
        let user = arg_str(user, "user")?;
        let text = arg_str(fingerprint, "fingerprint")?;
        let wanted = Fingerprint::parse(text).ok_or_else(|| {
            FfiError::new(
                p2p_status::P2P_INVALID_ARGUMENT,
                format!(
                    "{text:?} is not a fingerprint (32 base32 characters, e.g. \
                     \"K7QH-2MXA-...\")"
                ),
            )
        })?;
        let peer = peer.get()?;
        let info = peer.peer_info(user)?;
        let denied = |why: String| FfiError::new(p2p_status::P2P_DENIED, why);
        let Some(key) = info.key else {
            return Err(denied(format!(
                "the registry lists no key for {user} (unverified): nothing to accept"
            )));
        };
        let listed = key.fingerprint();
        if listed != wanted {
            return Err(denied(format!(
                "the registry lists key {listed} for {user}, not {wanted}: nothing was accepted"
            )));
        }
        peer.accept_key(user, &key)?;
        Ok(())
    })
}

/// The fingerprint of the registry's key on this peer's current registry session (the
/// key pinned for its address), to compare with what the registry's operator
/// publishes; `""` while the session is not secured (an original registry, or one
/// without secured links). On success `*out` is a new string; free it with
/// `p2p_string_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_registry_fingerprint(
    peer: *const p2p_peer,
    out: *mut *mut c_char,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?.get()?;
        let text = peer.registry_key().map(|k| k.fingerprint().to_string());
        put(arg_out(out, "out")?, owned(text.as_deref().unwrap_or("")));
        Ok(())
    })
}

/// Whether this peer talks to its registry in the original client's way: forced with
/// `p2p_peer_config_set_legacy_registry()`, or because the probe found an original
/// server.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_registry_is_legacy(
    peer: *const p2p_peer,
    out: *mut bool,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?.get()?;
        put(arg_out(out, "out")?, peer.registry_is_legacy());
        Ok(())
    })
}

/// The files `user` shares (asks the registry). On success `*out` is filled in; free
/// it with `p2p_string_list_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_UTF8`, `P2P_INVALID_USERNAME`,
/// `P2P_USER_NOT_FOUND`, `P2P_SHUTDOWN`, `P2P_IO`, `P2P_TIMEOUT`, `P2P_CLOSED` (the
/// registry closed the connection without answering), `P2P_REGISTRY`, `P2P_PROTOCOL`,
/// `P2P_KEY_CHANGED`, `P2P_DENIED` (reconnecting, the registry's key had changed or it
/// no longer secured its link: see `p2p_peer_connect()`).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_files_of(
    peer: *const p2p_peer,
    user: *const c_char,
    out: *mut p2p_string_list,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?;
        let user = arg_str(user, "user")?;
        let out = arg_out(out, "out")?;
        let files = peer.get()?.files_of(user)?;
        put(out, p2p_string_list::from_strings(&files));
        Ok(())
    })
}

/// Re-read the shared directory and tell the registry. On success, if `files_out` is
/// not NULL, `*files_out` is the number of files now shared.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN`, `P2P_IO`, `P2P_NOT_A_DIRECTORY`,
/// `P2P_TIMEOUT`, `P2P_REGISTRY`, `P2P_KEY_CHANGED`, `P2P_DENIED` (reconnecting, the
/// registry's key had changed or it no longer secured its link: see
/// `p2p_peer_connect()`).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_rescan(
    peer: *const p2p_peer,
    files_out: *mut usize,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?.get()?;
        let report = peer.rescan()?;
        if let Some(out) = files_out.as_mut() {
            put(out, report.files);
        }
        Ok(())
    })
}

/// The ids (`p2p_chat_id()`) of `peer`'s chats still open (asked for or accepted),
/// oldest first. Writes at most `capacity` ids to `ids` (which may be NULL when
/// `capacity` is 0) and sets `*count_out` to how many there are (call again with a
/// larger array if that is more than `capacity`). See `p2p_peer_transfers()` for the
/// downloads.
///
/// Errors: `P2P_NULL_ARGUMENT` (`peer`, `count_out`, or `ids` with a non-zero
/// `capacity`), `P2P_SHUTDOWN`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_chats(
    peer: *const p2p_peer,
    ids: *mut u64,
    capacity: usize,
    count_out: *mut usize,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?;
        put_ids(ids, capacity, count_out, || {
            Ok(peer.get()?.chats().iter().map(|c| c.id()).collect())
        })
    })
}

/// Ask the registry at `registry` (`"host:port"`) whether `username` is free, without
/// registering (opens and closes its own connection). On success `*out` is true when
/// the name is free.
///
/// `registry` may end in `#FINGERPRINT` to require that registry key (see
/// `p2p_peer_config_new()`).
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_UTF8`, `P2P_INVALID_USERNAME`,
/// `P2P_INVALID_ARGUMENT` (a malformed `#FINGERPRINT`), `P2P_KEY_CHANGED` (the registry's
/// key is not the `#FINGERPRINT` given), `P2P_DENIED` (a `#FINGERPRINT` was given but
/// the registry does not secure its links), `P2P_IO`, `P2P_TIMEOUT`, `P2P_PROTOCOL`.
#[no_mangle]
pub unsafe extern "C" fn p2p_username_available(
    registry: *const c_char,
    username: *const c_char,
    out: *mut bool,
) -> p2p_status {
    panic::status(|| {
        let registry = arg_str(registry, "registry")?;
        let username = arg_str(username, "username")?;
        let out = arg_out(out, "out")?;
        put(out, p2pcore::peer::username_available(registry, username)?);
        Ok(())
    })
}

// ---- Events you pull (see events.rs) ----

/// Report everything through an event queue holding up to `capacity` events (at least
/// 1), read with `p2p_peer_next_event()` and signalled on `p2p_peer_event_fd()`,
/// instead of through the callbacks: with a queue no callback of the peer is called
/// (nothing is delivered twice); 0 restores callbacks. Without callbacks or a queue
/// every chat request is declined.
///
/// Overflow rule: download progress is coalesced (one waiting event per download,
/// updated in place); chat requests, `P2P_EV_CHAT_OPENED` answers, chat closes and a
/// download's done or failed are never dropped and never wait (they may exceed the
/// capacity, bounded by the peer's limits on chats and downloads); a chat message
/// waits for room on its chat's own reader thread (so a slow application slows the
/// sender down, and no message is lost); background events (`P2P_EV_PEER`) are
/// dropped while the queue is full.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_set_event_queue(
    config: *mut p2p_peer_config,
    capacity: usize,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.event_queue = (capacity > 0).then_some(capacity);
        Ok(())
    })
}

/// Call `callback` with the answer to each `p2p_peer_chat_async()` (see
/// `p2p_chat_opened_cb`) when the peer uses callbacks; with an event queue the answer
/// is an event instead and this is not called.
///
/// NULL unsets it. Errors: `P2P_NULL_ARGUMENT` (config).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_on_chat_opened(
    config: *mut p2p_peer_config,
    callback: crate::events::p2p_chat_opened_cb,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.chat_opened = callback;
        Ok(())
    })
}

/// Call `callback` for each chat happening with the chat's handle and user data (see
/// `p2p_chat_event_cb`): messages and closes besides the older id-based callbacks;
/// chat requests and `p2p_peer_chat_async()` answers when no `p2p_chat_request_cb` /
/// `p2p_chat_opened_cb` takes them (then it counts as the callback those need).
///
/// NULL unsets it. Errors: `P2P_NULL_ARGUMENT` (config).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_config_on_chat_event(
    config: *mut p2p_peer_config,
    callback: crate::chat_callbacks::p2p_chat_event_cb,
) -> p2p_status {
    panic::status(|| {
        config_mut(config)?.callbacks.chat_event = callback;
        Ok(())
    })
}
