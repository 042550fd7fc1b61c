//! The peer: p2pchat's client side.
//!
//! A [`Peer`] registers with the registry over one session connection that it keeps
//! (and re-opens by itself if it drops), serves its shared directory and chat requests
//! on a listener, and opens chats and downloads with other peers: directly, or, when a
//! NAT is in the way, by reverse connect or through a relay (see [`PathPolicy`] and
//! `docs/PROTOCOL.md` §5). Everything it does in the background runs on threads it
//! owns and joins in [`Peer::exit`] (and on drop).
//!
//! Hooks are called on those library threads: they must return quickly (print, or
//! send on a channel) and must not drop the `Peer`. A hook that panics is caught and
//! logged; the thread that called it carries on (a panicking chat-request hook, having
//! dropped its request, declines it).

mod chat;
mod fetch;
mod link;
mod live;
mod paths;
mod push;
mod refuser;
mod registry_link;
mod serve;
mod slots;
mod watch;

pub mod events;
pub use events::{Event, Events};

pub use chat::{Chat, ChatClosedBy, ChatId, ChatRequest};
pub use fetch::{Transfer, TransferId, TransferStats};
pub use paths::PathPolicy;
pub use push::{FileOffer, OfferId};
pub use registry_link::{PeerInfo, RegistryMode};

use crate::error::{Error, Result};
use crate::identity::{default_identity_file, Fingerprint, Identity, PublicKey};
use crate::known_keys::{KnownKeys, Pin, Subject};
use crate::limits::{self, CHAT_ANSWER_TIMEOUT, LEGACY_QUERY_MAX, PEER_IO_TIMEOUT};
use crate::protocol::{check_username, Answer, Query};
use crate::reach::{Reach, Token};
use crate::share::{ScanReport, Share};
use crate::thread::Threads;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use refuser::Refuser;
use registry_link::RegistryLink;
use slots::Gauge;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Something that happened in the background that the application may want to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A file in the share was left out (its name cannot be carried, or it leads out).
    /// Reported once while it stays left out for the same reason: at connect, then by
    /// each rescan only for names it newly leaves out.
    ShareSkipped { name: String, reason: String },
    /// A rescan (live, [`Peer::rescan`], or after a download into the share) found the
    /// share changed; `files` is how many files are shared now. Names in `added` or
    /// `removed` (a rename is both) have been sent to the registry, or will be as soon
    /// as it answers; `changed` files are served with their new content and hash.
    ShareUpdated {
        files: usize,
        added: Vec<String>,
        removed: Vec<String>,
        changed: Vec<String>,
    },
    /// The registry connection dropped; the peer is re-connecting.
    RegistryLost { detail: String },
    /// The registry connection is back and this peer is registered again.
    RegistryRestored,
    /// After a reconnect the registry refused to register this peer again.
    RegistrationRefused { reason: String },
    /// A file was served to another peer (`bytes` sent from `offset`).
    Served {
        to: SocketAddr,
        file: String,
        offset: u64,
        bytes: u64,
        /// The user it went to, verified (a secured link whose key is the one the
        /// registry lists for that name); `None`: an original client, unverified.
        user: Option<String>,
    },
    /// A request from another peer was refused (not shared, traversal attempt, busy…).
    RequestRefused {
        from: SocketAddr,
        request: String,
        reason: String,
    },
    /// A chat request got no answer in time and was declined.
    ChatRequestExpired { from: String },
    /// A key offered for a name (a user's, or `registry <addr>`) differs from the one
    /// pinned before: the chat, download or connection was refused. Accept the new key
    /// with [`Peer::accept_key`] once the person confirms its fingerprint.
    KeyChanged {
        subject: String,
        pinned: Fingerprint,
        offered: Fingerprint,
    },
    /// A download started: `offset` > 0 when it resumes a partial file.
    TransferStarted {
        id: TransferId,
        from: String,
        file: String,
        size: u64,
        offset: u64,
        /// Over a secured link from the key the registry lists for `from` (and the
        /// pinned one); `false`: plaintext from an unverified sender.
        verified: bool,
        /// How the link to the sender is connected.
        path: crate::reach::Path,
    },
    /// The registry checked whether this peer's listener can be reached from outside
    /// at `addr` (the address it lists for this peer): see [`Peer::reachability`].
    /// Reported when the registry says it (once the first check finished, and after
    /// each change); `reach` is never [`Reach::Unknown`] here.
    Reachability {
        /// The outcome.
        reach: Reach,
        /// The address checked: the IP the registry sees, the listening port.
        addr: SocketAddr,
    },
    /// A file offered to this peer got no answer in time and was declined.
    FileOfferExpired { from: String, file: String },
}

type Hook<F> = Option<Arc<F>>;
type MessageHook = dyn Fn(ChatId, &str, &str) + Send + Sync;
type DoneHook = dyn Fn(TransferId, &Path) + Send + Sync;
type FailedHook = dyn Fn(TransferId, &Error) + Send + Sync;
type ClosedHook = dyn Fn(ChatId, &str, ChatClosedBy) + Send + Sync;

/// The callbacks a peer calls. All are optional; all run on library threads.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub chat_request: Hook<dyn Fn(ChatRequest) + Send + Sync>,
    pub chat_message: Hook<MessageHook>,
    pub chat_closed: Hook<ClosedHook>,
    pub progress: Hook<dyn Fn(TransferId, u64, u64) + Send + Sync>,
    pub done: Hook<DoneHook>,
    pub failed: Hook<FailedHook>,
    pub event: Hook<dyn Fn(&PeerEvent) + Send + Sync>,
    /// The answer to [`Peer::chat_async`] in hook mode.
    pub chat_opened: Hook<events::OpenedHook>,
    /// A file offered to this peer ([`PeerBuilder::on_file_offer`]).
    pub file_offer: Hook<dyn Fn(FileOffer) + Send + Sync>,
    /// The answer to [`Peer::offer_file_async`] in hook mode.
    pub offer_answered: Hook<events::AnsweredHook>,
}

/// The bounds a peer holds against other peers. `Default` gives the values in
/// [`crate::limits`]; set with [`PeerBuilder::limits`].
#[derive(Debug, Clone)]
pub struct PeerLimits {
    /// How long a whole request line may take to arrive (not per byte): past it the
    /// connection gets `ERR bad-request request timed out`.
    pub request_line_timeout: Duration,
    /// Transfers slower than this (bytes/s) over `min_rate_window` are ended.
    pub min_transfer_rate: u64,
    /// The window over which `min_transfer_rate` is judged.
    pub min_rate_window: Duration,
    /// Most requests served at once (chat requests waiting for an answer included);
    /// past it `ERR busy`.
    pub max_serving: usize,
    /// Most requests served at once for one address (one /64 for IPv6); also the most
    /// pending chat requests and the most open incoming chats one address may hold.
    pub max_serving_per_addr: usize,
    /// Most incoming chat requests waiting for an answer at once; past it `ERR busy`.
    pub max_pending_chat_requests: usize,
    /// Most chats open at once, incoming and outgoing (each holds a socket and a
    /// reader thread); past it an incoming request gets `ERR busy` and
    /// [`Peer::chat`] fails with [`Error::Busy`].
    pub max_open_chats: usize,
    /// Largest file a download accepts (`None`: no limit but the free space).
    pub max_download_size: Option<u64>,
    /// Free space a download must leave in the download directory.
    pub free_space_margin: u64,
    /// Partial downloads untouched for longer than this are removed when the peer
    /// starts (`None`: never).
    pub stale_partial_age: Option<Duration>,
    /// Most incoming file offers waiting for an answer at once (one address holds at
    /// most `max_serving_per_addr` of them); past it `ERR busy`.
    pub max_pending_offers: usize,
}

impl PeerLimits {
    /// The minimum-rate rule both ends of a transfer hold each other to, with `stall`
    /// as the longest silence.
    pub fn min_rate(&self, stall: Duration) -> crate::transfer::MinRate {
        crate::transfer::MinRate {
            bytes_per_sec: self.min_transfer_rate,
            window: self.min_rate_window,
            stall,
        }
    }
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            request_line_timeout: limits::REQUEST_LINE_TIMEOUT,
            min_transfer_rate: limits::MIN_TRANSFER_RATE,
            min_rate_window: limits::MIN_RATE_WINDOW,
            max_serving: limits::MAX_SERVING,
            max_serving_per_addr: limits::MAX_SERVING_PER_ADDR,
            max_pending_chat_requests: limits::MAX_PENDING_CHAT_REQUESTS,
            max_open_chats: limits::MAX_OPEN_CHATS,
            max_download_size: None,
            free_space_margin: limits::FREE_SPACE_MARGIN,
            stale_partial_age: Some(limits::STALE_PARTIAL_AGE),
            max_pending_offers: limits::MAX_PENDING_OFFERS,
        }
    }
}

/// Configures and connects a [`Peer`].
pub struct PeerBuilder {
    registry: String,
    username: String,
    shared_dir: PathBuf,
    download_dir: Option<PathBuf>,
    port: u16,
    listen_ip: Option<IpAddr>,
    chat_answer_timeout: Duration,
    io_timeout: Duration,
    limits: PeerLimits,
    hooks: Hooks,
    live_share: bool,
    registry_mode: RegistryMode,
    identity: Option<Identity>,
    identity_file: Option<PathBuf>,
    known_keys_file: Option<PathBuf>,
    refuse_unverified: bool,
    serve_only: Option<Vec<String>>,
    /// The event queue's capacity ([`PeerBuilder::event_queue`]); `None`: hooks.
    events: Option<usize>,
    path_policy: PathPolicy,
}

impl PeerBuilder {
    /// Use this identity (key pair) instead of loading one from a file.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Load the identity from `path`, creating it (mode 0600) on first use. By default
    /// it is [`default_identity_file`](crate::identity::default_identity_file) for the
    /// username: `$XDG_CONFIG_HOME/p2pchat/<username>.key` (or under
    /// `~/.config/p2pchat`). The key owns the username at the registry, so keep it:
    /// another key cannot register the name while the claim lasts.
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity_file = Some(path.into());
        self
    }

    /// Keep pinned keys (the registry's, and other users') in this file, like SSH's
    /// `known_hosts` ([`known_keys`](crate::known_keys)). Without it, pins live in
    /// memory for the life of the peer (the CLI uses
    /// [`KnownKeys::default_path`](crate::known_keys::KnownKeys::default_path)).
    pub fn known_keys_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.known_keys_file = Some(path.into());
        self
    }

    /// `true`: refuse partners that cannot prove who they are (original C++ clients,
    /// peers registered without a key): their requests are answered `ERR denied`, and
    /// chats and downloads to them fail with [`Error::Denied`]. Default `false`:
    /// accepted and marked unverified.
    pub fn refuse_unverified(mut self, on: bool) -> Self {
        self.refuse_unverified = on;
        self
    }

    /// Serve files only to these users (each a username, or `key:<64 hex digits>` for
    /// a key whatever its name). By default any registered user whose key the
    /// registry lists is served.
    pub fn serve_only(mut self, allowed: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.serve_only = Some(allowed.into_iter().map(Into::into).collect());
        self
    }

    /// Watch the shared directory and follow its changes: files added, removed,
    /// renamed or changed reach the registry within 2 s, each reported as
    /// [`PeerEvent::ShareUpdated`] (and new skips as [`PeerEvent::ShareSkipped`]).
    /// Costs one watcher thread (two: notify runs its own) and an inotify instance.
    /// Off by default, so an embedding application decides when its share changes
    /// ([`Peer::rescan`]).
    pub fn live_share(mut self, on: bool) -> Self {
        self.live_share = on;
        self
    }

    /// How to talk to the registry (default [`RegistryMode::Auto`]: probe at every
    /// connection whether it is a p2pchat registry or the original server).
    pub fn registry_mode(mut self, mode: RegistryMode) -> Self {
        self.registry_mode = mode;
        self
    }

    /// `true`: talk to the registry as the original client did
    /// ([`RegistryMode::Legacy`]: one query per connection, form-B `INIT` re-sent every
    /// [`LEGACY_REREGISTER`](crate::limits::LEGACY_REREGISTER)); `false`: the default,
    /// [`RegistryMode::Auto`].
    pub fn legacy_registry(self, legacy: bool) -> Self {
        self.registry_mode(if legacy {
            RegistryMode::Legacy
        } else {
            RegistryMode::Auto
        })
    }

    /// Use these bounds instead of the defaults.
    pub fn limits(mut self, limits: PeerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Listen on this port (0, the default, picks a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Listen on this address (`0.0.0.0` or `::` for every interface). By default a
    /// peer listens on the local address of its registry connection: the address the
    /// registry records and hands out for it, so a loopback registry means a
    /// loopback-only listener and an IPv6 registry an IPv6 listener.
    pub fn listen_ip(mut self, ip: IpAddr) -> Self {
        self.listen_ip = Some(ip);
        self
    }

    /// Save downloads here instead of the shared directory (the default, as the
    /// original client did, so a downloaded file is shared in turn).
    pub fn download_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.download_dir = Some(dir.into());
        self
    }

    /// How long an incoming chat request waits for [`ChatRequest::accept`] before it is
    /// declined (default 30 s).
    pub fn chat_answer_timeout(mut self, t: Duration) -> Self {
        self.chat_answer_timeout = t;
        self
    }

    /// How long a peer-to-peer read or write may stall before the connection is given
    /// up (default 15 s). A chat `send` to a peer that stops reading fails after this.
    pub fn io_timeout(mut self, t: Duration) -> Self {
        self.io_timeout = t;
        self
    }

    /// Someone asks to chat: answer through the [`ChatRequest`], now or later from any
    /// thread. Without this hook every request is declined.
    pub fn on_chat_request(mut self, f: impl Fn(ChatRequest) + Send + Sync + 'static) -> Self {
        self.hooks.chat_request = Some(Arc::new(f));
        self
    }

    /// A chat message arrived: `(chat, from, text)`. Called on that chat's reader
    /// thread, in order.
    pub fn on_chat_message(
        mut self,
        f: impl Fn(ChatId, &str, &str) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.chat_message = Some(Arc::new(f));
        self
    }

    /// A chat ended: `(chat, the other side's username, who ended it)`. Called once
    /// per chat, whoever ended it.
    pub fn on_chat_closed(
        mut self,
        f: impl Fn(ChatId, &str, ChatClosedBy) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.chat_closed = Some(Arc::new(f));
        self
    }

    /// Download progress: `(transfer, bytes so far, total bytes)`.
    pub fn on_transfer_progress(
        mut self,
        f: impl Fn(TransferId, u64, u64) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.progress = Some(Arc::new(f));
        self
    }

    /// A download finished and verified: `(transfer, final path)`.
    pub fn on_transfer_done(
        mut self,
        f: impl Fn(TransferId, &Path) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.done = Some(Arc::new(f));
        self
    }

    /// A download failed: `(transfer, error)`.
    pub fn on_transfer_failed(
        mut self,
        f: impl Fn(TransferId, &Error) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.failed = Some(Arc::new(f));
        self
    }

    /// Which paths to take to other peers (default [`PathPolicy::Auto`]: direct, then
    /// reverse connect, then the relay, as the registry's reachability checks
    /// suggest). The others force one path.
    pub fn path_policy(mut self, policy: PathPolicy) -> Self {
        self.path_policy = policy;
        self
    }

    /// Every other [`PeerEvent`].
    pub fn on_event(mut self, f: impl Fn(&PeerEvent) + Send + Sync + 'static) -> Self {
        self.hooks.event = Some(Arc::new(f));
        self
    }

    /// Validate, scan the share, connect to the registry, start listening and
    /// register.
    ///
    /// Errors, each distinct: [`Error::InvalidUsername`], [`Error::NotADirectory`] (the
    /// shared directory), [`Error::NotADownloadDirectory`] (the download directory),
    /// [`Error::PortUnavailable`], [`Error::UsernameTaken`], or an I/O error reaching
    /// the registry.
    pub fn connect(mut self) -> Result<Peer> {
        let queue = self.take_queue();
        check_username(&self.username)
            .map_err(|_| Error::InvalidUsername(self.username.clone()))?;
        let live_share = self.live_share;
        let share = Share::open(&self.shared_dir)?;
        let download_dir = match &self.download_dir {
            Some(d) if d.is_dir() => d.clone(),
            Some(d) => return Err(Error::NotADownloadDirectory(d.clone())),
            None => share.dir().to_path_buf(),
        };
        fetch::remove_stale_partials(&download_dir, &self.limits);
        let identity = match (self.identity, &self.identity_file) {
            (Some(id), _) => id,
            (None, Some(path)) => Identity::load_or_create(path)?,
            (None, None) => Identity::load_or_create(&default_identity_file(&self.username)?)?,
        };
        let known_keys = Arc::new(match &self.known_keys_file {
            Some(path) => KnownKeys::open(path)?,
            None => KnownKeys::memory(),
        });
        let registry = RegistryLink::new(
            &self.registry,
            self.registry_mode,
            Some(identity.clone()),
            known_keys.clone(),
        )?;
        let listen_ip = match self.listen_ip {
            Some(ip) => ip,
            None => {
                registry.connect()?;
                registry.local_ip().ok_or(Error::Closed)?
            }
        };
        // Shared with hole punches' outgoing connections (same port: see net::punch).
        let listener =
            crate::net::listen_shared(SocketAddr::new(listen_ip, self.port)).map_err(|source| {
                Error::PortUnavailable {
                    port: self.port,
                    source,
                }
            })?;
        let listen_addr = listener.local_addr()?;
        let (refuser, refuser_loop) = Refuser::new()?;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let inner = Arc::new(Inner {
            username: self.username,
            share,
            download_dir,
            listen_addr,
            chat_answer_timeout: self.chat_answer_timeout,
            io_timeout: self.io_timeout,
            limits: self.limits,
            hooks: self.hooks,
            registry,
            threads: Threads::default(),
            sockets: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            stop_rx,
            stop_tx: Mutex::new(Some(stop_tx)),
            serving: Arc::default(),
            pending_chats: Arc::default(),
            open_chats: Arc::default(),
            refuser,
            listener_dup: listener.try_clone()?,
            legacy_cut: Mutex::new(Vec::new()),
            identity,
            known_keys,
            refuse_unverified: self.refuse_unverified,
            serve_only: self.serve_only,
            open_transfers: Default::default(),
            open_chat_list: Default::default(),
            offers: Default::default(),
            path_policy: self.path_policy,
            path_memory: Default::default(),
            reach: Mutex::new(None),
            reverse_waiters: Mutex::new(HashMap::new()),
            connects_in_flight: AtomicUsize::new(0),
            dial_outs: Arc::default(),
            dial_out_starts: Mutex::new(std::collections::VecDeque::new()),
        });
        inner.scan_share(None)?;
        inner.register()?;
        let peer = Peer {
            inner,
            events: queue,
        };
        peer.attach_queue();
        let refuser_inner = peer.inner.clone();
        peer.inner.threads.spawn("p2p-refuser", move || {
            refuser::run(refuser_inner, refuser_loop)
        })?;
        let serve_inner = peer.inner.clone();
        peer.inner.threads.spawn("p2p-listener", move || {
            serve::accept_loop(serve_inner, listener)
        })?;
        let keeper = peer.inner.clone();
        peer.inner
            .threads
            .spawn("p2p-registry-keeper", move || keep_registered(keeper))?;
        let watcher = peer.inner.clone();
        peer.inner
            .threads
            .spawn("p2p-watch", move || watch::run(watcher))?;
        if live_share {
            live::start(&peer.inner)?;
        }
        Ok(peer)
    }
}

/// State shared by the peer's handle and its threads.
pub(crate) struct Inner {
    pub username: String,
    pub share: Share,
    pub download_dir: PathBuf,
    pub listen_addr: SocketAddr,
    pub chat_answer_timeout: Duration,
    pub io_timeout: Duration,
    pub limits: PeerLimits,
    pub hooks: Hooks,
    registry: RegistryLink,
    pub threads: Threads,
    /// Every open peer-to-peer socket, so shutdown can unblock whoever reads it.
    sockets: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
    stopping: AtomicBool,
    /// Disconnected (never sent on) when the peer stops: wakes every waiter at once.
    pub stop_rx: Receiver<()>,
    stop_tx: Mutex<Option<Sender<()>>>,
    /// Requests being served (one thread each), in total and per address.
    pub serving: Arc<Gauge>,
    /// Incoming chat requests waiting for their answer.
    pub pending_chats: Arc<Gauge>,
    /// Open chats, incoming (counted per address) and outgoing.
    pub open_chats: Arc<Gauge>,
    /// Where connections refused past a bound go to get their answer and a clean close.
    pub refuser: Refuser,
    /// The listening socket (a duplicate, made at connect): `stop` shuts it down to
    /// wake the listener's `accept()` without needing a new descriptor. Waking it only
    /// by connecting to it failed in a process out of descriptors, and the peer's exit
    /// then waited for the listener forever.
    listener_dup: TcpListener,
    /// Files left out of a legacy-mode `INIT` (it must stay under 1000 bytes), already
    /// reported, so the periodic re-registration does not report them again.
    legacy_cut: Mutex<Vec<String>>,
    /// This peer's key pair: its identity on every secured link.
    pub identity: Identity,
    /// Keys seen before (the registry's and other users'), shared with the registry link.
    pub known_keys: Arc<KnownKeys>,
    /// Refuse partners that cannot prove who they are.
    pub refuse_unverified: bool,
    /// Serve files only to these names / `key:<hex>` entries (`None`: any verified user).
    pub serve_only: Option<Vec<String>>,
    /// Downloads started here and still running (for `Peer::transfers`).
    pub(crate) open_transfers: fetch::OpenTransfers,
    /// Chats open (for `Peer::chats`).
    pub(crate) open_chat_list: chat::OpenChats,
    /// Incoming file offers waiting for an answer.
    pub(crate) offers: push::Offers,
    /// Which paths to take to other peers.
    pub path_policy: PathPolicy,
    /// Paths that failed lately, skipped for a while.
    pub(crate) path_memory: paths::PathMemory,
    /// What the registry last said of this peer's listener (`None`: nothing yet).
    reach: Mutex<Option<(Reach, SocketAddr)>>,
    /// Reverse connections this peer asked for (`CONNECT`), by token: the listener
    /// hands a `P2P/2 REVERSE <token>` connection to the dialer waiting for it.
    pub reverse_waiters: Mutex<HashMap<Token, Sender<TcpStream>>>,
    /// This peer's `CONNECT`s waiting for the registry's answer.
    pub connects_in_flight: AtomicUsize,
    /// Dial-outs (`DIAL`/`RELAY` pushes being followed) running now.
    pub dial_outs: Arc<Gauge>,
    /// When the dial-outs of the last minute started.
    pub dial_out_starts: Mutex<std::collections::VecDeque<std::time::Instant>>,
}

/// Whether a request's first bytes are a legacy (original client) request, which is
/// unterminated and is never answered with an `ERR` line.
pub(crate) fn is_legacy_start(buf: &[u8]) -> bool {
    buf.starts_with(b"CHAT,") || buf.starts_with(b"FILE,")
}

impl Inner {
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub fn emit(&self, event: PeerEvent) {
        if let Some(h) = &self.hooks.event {
            crate::thread::call_hook(|| h(&event));
        }
    }

    /// Track a socket until [`Inner::forget_socket`]; returns its key.
    pub fn track_socket(&self, s: &TcpStream) -> Option<u64> {
        let Ok(clone) = s.try_clone() else {
            // Out of descriptors: a socket stop() could not reach might block its
            // reader (a chat has no read timeout) and with it the peer's exit, so it
            // is ended now instead.
            let _ = s.shutdown(Shutdown::Both);
            return None;
        };
        let key = self.next_id();
        self.sockets.lock().insert(key, clone);
        if self.stopping() {
            let _ = s.shutdown(Shutdown::Both);
        }
        Some(key)
    }

    pub fn forget_socket(&self, key: Option<u64>) {
        if let Some(k) = key {
            self.sockets.lock().remove(&k);
        }
    }

    /// Scan the share (files modified less than `settle` ago held back); report names
    /// newly skipped.
    fn scan_share(&self, settle: Option<Duration>) -> Result<ScanReport> {
        let report = match settle {
            Some(settle) => self.share.scan_settled(settle)?,
            None => self.share.scan()?,
        };
        for (name, reason) in &report.newly_skipped {
            self.emit(PeerEvent::ShareSkipped {
                name: name.clone(),
                reason: reason.clone(),
            });
        }
        Ok(report)
    }

    /// Report what a rescan changed, once the registry has been told (or tried).
    fn announce(&self, report: &ScanReport) {
        if report.changed_anything() {
            self.emit(PeerEvent::ShareUpdated {
                files: report.files,
                added: report.added.clone(),
                removed: report.removed.clone(),
                changed: report.changed.clone(),
            });
        }
    }

    fn init_query(&self) -> String {
        let names = self.share.names();
        if !self.registry.is_legacy() {
            return Query::Init {
                username: &self.username,
                dir: None,
                port: self.listen_addr.port(),
                files: names.iter().map(String::as_str).collect(),
            }
            .to_string();
        }
        // Form B, the only form the original server parses (form A crashes it). The
        // directory field is `.`: nobody reads it, the real path would only tell the
        // registry about this machine, and `.` is never mistaken for a port.
        let mut query = format!("INIT,{},.,{}", self.username, self.listen_addr.port());
        let mut cut = Vec::new();
        for name in &names {
            if cut.is_empty() && query.len() + 1 + name.len() <= LEGACY_QUERY_MAX {
                query.push(',');
                query.push_str(name);
            } else {
                cut.push(name.clone());
            }
        }
        let mut reported = self.legacy_cut.lock();
        for name in &cut {
            if !reported.contains(name) {
                self.emit(PeerEvent::ShareSkipped {
                    name: name.clone(),
                    reason: format!(
                        "not announced: a registration with an original registry must fit in \
                         {LEGACY_QUERY_MAX} bytes"
                    ),
                });
            }
        }
        *reported = cut;
        query
    }

    /// Send `INIT` with the current share; `OK` and `UP` are both success. The form
    /// depends on the registry's kind, so that is settled first.
    fn register(&self) -> Result<()> {
        self.registry.ready()?;
        match self.registry.ask(&self.init_query())? {
            Answer::Ok(_) | Answer::Up => Ok(()),
            Answer::Err(r) if r == crate::protocol::reason::USERNAME_TAKEN => {
                Err(Error::UsernameTaken(self.username.clone()))
            }
            Answer::Err(r) if r == crate::protocol::reason::INVALID_USERNAME => {
                Err(Error::InvalidUsername(self.username.clone()))
            }
            Answer::Err(r) => Err(Error::Registry(r)),
        }
    }

    pub fn peer_info(&self, name: &str) -> Result<PeerInfo> {
        check_username(name).map_err(|_| Error::InvalidUsername(name.to_string()))?;
        self.registry.peer_info(name)
    }

    /// The pin scope for users of this peer's registry: its address as configured.
    pub fn registry_scope(&self) -> &str {
        self.registry.addr()
    }

    /// Checks `key` for user `name` against the pins: a first sight pins it, the
    /// pinned key passes, another key is refused with [`Error::KeyChanged`] (and
    /// [`PeerEvent::KeyChanged`]) until the user accepts it ([`Peer::accept_key`]).
    pub fn check_pin(&self, name: &str, key: &PublicKey) -> Result<()> {
        let subject = Subject::Peer {
            registry: self.registry_scope(),
            name,
        };
        match self.known_keys.check(subject, key)? {
            Pin::Matches => Ok(()),
            Pin::New => self.known_keys.pin(subject, key),
            Pin::Changed { pinned } => {
                self.emit(PeerEvent::KeyChanged {
                    subject: name.to_string(),
                    pinned: pinned.fingerprint(),
                    offered: key.fingerprint(),
                });
                Err(Error::KeyChanged {
                    subject: name.to_string(),
                    pinned: pinned.fingerprint(),
                    offered: key.fingerprint(),
                })
            }
        }
    }

    /// What the registry last said of this peer's listener: [`Reach::Unknown`] (and no
    /// address) until it says anything.
    pub fn reachability(&self) -> (Reach, Option<SocketAddr>) {
        match *self.reach.lock() {
            Some((reach, addr)) => (reach, Some(addr)),
            None => (Reach::Unknown, None),
        }
    }

    /// Records what the registry says of this peer's listener; reported
    /// ([`PeerEvent::Reachability`]) when it changed to a known outcome (a check not
    /// finished yet is no news).
    pub fn set_reachability(&self, reach: Reach, addr: SocketAddr) {
        let changed = self.reach.lock().replace((reach, addr)) != Some((reach, addr));
        if changed && reach != Reach::Unknown {
            self.emit(PeerEvent::Reachability { reach, addr });
        }
    }

    /// Whether the registry session is secured (the only kind that knows watch
    /// sessions, `CONNECT` and `RELAY`).
    pub fn registry_secured(&self) -> bool {
        !self.registry.is_legacy() && self.registry.registry_key().is_some()
    }

    pub fn rescan(&self) -> Result<ScanReport> {
        let report = self.scan_share(None)?;
        let registered = self.register();
        self.announce(&report);
        registered.map(|()| report)
    }

    fn stop(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // Disconnect the stop channel: every select on `stop_rx` wakes now.
        self.stop_tx.lock().take();
        self.registry.exit(
            &Query::Exit {
                username: &self.username,
            }
            .to_string(),
        );
        self.registry.disconnect();
        self.refuser.wake();
        // Wake the blocking accept(): on Linux, shutting a listening socket down makes
        // accept() fail at once, with no new descriptor needed. Elsewhere (or should
        // that fail) connect to ourselves.
        #[cfg(target_os = "linux")]
        // SAFETY: shutdown on a descriptor `listener_dup` owns and keeps open.
        let woken = unsafe {
            use std::os::fd::AsRawFd;
            libc::shutdown(self.listener_dup.as_raw_fd(), libc::SHUT_RDWR) == 0
        };
        #[cfg(not(target_os = "linux"))]
        let woken = false;
        if !woken {
            let wake_ip = match self.listen_addr.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                ip => ip,
            };
            let _ = TcpStream::connect_timeout(
                &SocketAddr::new(wake_ip, self.listen_addr.port()),
                Duration::from_secs(1),
            );
        }
        for s in self.sockets.lock().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.reverse_waiters.lock().clear();
        self.threads.join_all();
    }
}

/// Re-open the registry session when it drops, with backoff, and register again. In
/// legacy mode (no session to watch) send `INIT` again every
/// [`LEGACY_REREGISTER`](limits::LEGACY_REREGISTER) instead.
fn keep_registered(inner: Arc<Inner>) {
    let mut backoff = Duration::from_millis(100);
    let mut lost = false;
    // A registry that comes back with another key, or refuses this peer, is reported
    // once (not at every retry); retrying goes on, in case it is fixed on its side.
    let mut refusal_reported = false;
    let mut last_legacy_init = std::time::Instant::now();
    loop {
        let wait = if lost {
            backoff
        } else {
            Duration::from_millis(250)
        };
        if inner.stop_rx.recv_timeout(wait) != Err(crossbeam_channel::RecvTimeoutError::Timeout) {
            return; // stopping
        }
        if inner.registry.is_legacy() {
            if !lost && last_legacy_init.elapsed() < limits::LEGACY_REREGISTER {
                continue;
            }
            last_legacy_init = std::time::Instant::now();
            match inner.register() {
                Ok(()) if lost => {
                    lost = false;
                    inner.emit(PeerEvent::RegistryRestored);
                }
                Ok(()) => {}
                Err(e) => {
                    if !lost {
                        lost = true;
                        backoff = Duration::from_millis(100);
                        inner.emit(PeerEvent::RegistryLost {
                            detail: format!(
                                "registering again with {} failed: {e}",
                                inner.registry.addr()
                            ),
                        });
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
            continue;
        }
        if inner.registry.is_alive() {
            continue;
        }
        if !lost {
            lost = true;
            backoff = Duration::from_millis(100);
            inner.emit(PeerEvent::RegistryLost {
                detail: format!("connection to {} closed", inner.registry.addr()),
            });
        }
        match inner.registry.connect().and_then(|()| inner.register()) {
            Ok(()) => {
                lost = false;
                refusal_reported = false;
                inner.emit(PeerEvent::RegistryRestored);
            }
            Err(Error::KeyChanged {
                subject,
                pinned,
                offered,
            }) => {
                if !refusal_reported {
                    refusal_reported = true;
                    inner.emit(PeerEvent::KeyChanged {
                        subject,
                        pinned,
                        offered,
                    });
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e @ (Error::Denied { .. } | Error::Registry(_))) => {
                if !refusal_reported {
                    refusal_reported = true;
                    inner.emit(PeerEvent::RegistrationRefused {
                        reason: e.to_string(),
                    });
                }
                inner.registry.disconnect();
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(Error::UsernameTaken(_)) => {
                inner.emit(PeerEvent::RegistrationRefused {
                    reason: "username taken by someone else meanwhile".into(),
                });
                inner.registry.disconnect();
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(_) => backoff = (backoff * 2).min(Duration::from_secs(2)),
        }
    }
}

/// A connected peer. See the [module docs](self).
///
/// ```
/// use p2pcore::{peer::Peer, registry::Registry};
/// let registry = Registry::bind("127.0.0.1:0")?;
/// let dir = std::env::temp_dir().join(format!("p2p-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// std::fs::write(dir.join("hello.txt"), "hi")?;
/// let alice = Peer::builder(&registry.local_addr().to_string(), "alice", &dir).connect()?;
/// assert_eq!(alice.users()?, vec!["alice"]);
/// assert_eq!(alice.files_of("alice")?, vec!["hello.txt"]);
/// alice.exit();
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Peer {
    inner: Arc<Inner>,
    /// The event queue, when built with [`PeerBuilder::event_queue`].
    events: Option<Arc<events::EventQueue>>,
}

impl Peer {
    /// Start configuring a peer that registers as `username` with the registry at
    /// `registry` (`host:port`) and shares `shared_dir`.
    pub fn builder(registry: &str, username: &str, shared_dir: impl AsRef<Path>) -> PeerBuilder {
        PeerBuilder {
            registry: registry.to_string(),
            username: username.to_string(),
            shared_dir: shared_dir.as_ref().to_path_buf(),
            download_dir: None,
            port: 0,
            listen_ip: None,
            chat_answer_timeout: CHAT_ANSWER_TIMEOUT,
            io_timeout: PEER_IO_TIMEOUT,
            limits: PeerLimits::default(),
            hooks: Hooks::default(),
            live_share: false,
            registry_mode: RegistryMode::default(),
            identity: None,
            identity_file: None,
            known_keys_file: None,
            refuse_unverified: false,
            serve_only: None,
            events: None,
            path_policy: PathPolicy::Auto,
        }
    }

    /// The registry's key on the current secured session; `None` while the session is
    /// unencrypted (an original registry, or a p2pchat registry without secured links).
    pub fn registry_key(&self) -> Option<PublicKey> {
        self.inner.registry.registry_key()
    }

    /// This peer's public key: its identity.
    pub fn public_key(&self) -> PublicKey {
        self.inner.identity.public()
    }

    /// This peer's fingerprint, for people to compare.
    pub fn fingerprint(&self) -> Fingerprint {
        self.inner.identity.fingerprint()
    }

    /// Accepts `key` as `name`'s key from now on (after [`Error::KeyChanged`], once the
    /// person confirmed the new fingerprint): replaces the pin.
    pub fn accept_key(&self, name: &str, key: &PublicKey) -> Result<()> {
        let subject = Subject::Peer {
            registry: self.inner.registry_scope(),
            name,
        };
        self.inner.known_keys.pin(subject, key)
    }

    /// This peer's username.
    pub fn username(&self) -> &str {
        &self.inner.username
    }

    /// The address this peer listens on for other peers.
    pub fn listen_addr(&self) -> SocketAddr {
        self.inner.listen_addr
    }

    /// The shared directory (canonical path).
    pub fn shared_dir(&self) -> &Path {
        self.inner.share.dir()
    }

    /// Where downloads are saved.
    pub fn download_dir(&self) -> &Path {
        &self.inner.download_dir
    }

    /// The filenames this peer shares now.
    pub fn shared_files(&self) -> Vec<String> {
        self.inner.share.names()
    }

    /// How many requests from other peers are being served right now (chat requests
    /// waiting for an answer included).
    pub fn serving(&self) -> usize {
        self.inner.serving.total()
    }

    /// Whether this peer's listener can be reached from outside, as the registry's
    /// check found ([`Reach::Unknown`] before it says, and with a registry that does
    /// not check). Changes are reported as [`PeerEvent::Reachability`].
    pub fn reachability(&self) -> Reach {
        self.inner.reachability().0
    }

    /// The address the registry lists for this peer and checked (the IP it sees this
    /// peer come from, the listening port); `None` before it said.
    pub fn listed_addr(&self) -> Option<SocketAddr> {
        self.inner.reachability().1
    }

    /// Usernames online, sorted.
    pub fn users(&self) -> Result<Vec<String>> {
        self.inner.registry.users()
    }

    /// Where another peer listens.
    pub fn peer_addr(&self, name: &str) -> Result<SocketAddr> {
        Ok(self.inner.peer_info(name)?.addr)
    }

    /// Where another peer listens, and whether it is an original client (or the
    /// registry is an original one, which cannot tell).
    pub fn peer_info(&self, name: &str) -> Result<PeerInfo> {
        self.inner.peer_info(name)
    }

    /// Whether this peer talks to its registry in the original's legacy way (forced
    /// with [`PeerBuilder::legacy_registry`], or found by the probe).
    pub fn registry_is_legacy(&self) -> bool {
        self.inner.registry.is_legacy()
    }

    /// Every online user's shared files.
    pub fn all_files(&self) -> Result<Vec<(String, Vec<String>)>> {
        self.inner.registry.all_files()
    }

    /// One user's shared files.
    pub fn files_of(&self, name: &str) -> Result<Vec<String>> {
        check_username(name).map_err(|_| Error::InvalidUsername(name.to_string()))?;
        self.inner.registry.files_of(name)
    }

    /// Re-read the shared directory and update the registry (`UP`).
    pub fn rescan(&self) -> Result<ScanReport> {
        self.inner.rescan()
    }

    /// Ask `name` for a chat; blocks until they accept ([`Chat`]) or decline
    /// ([`Error::Declined`]); [`Error::Timeout`] when they do not answer in time.
    pub fn chat(&self, name: &str) -> Result<Chat> {
        chat::request(&self.inner, name)
    }

    /// Start downloading `file` from `name` in the background.
    pub fn fetch(&self, name: &str, file: &str) -> Result<Transfer> {
        fetch::start(&self.inner, name, file, None)
    }

    /// Leave: send `EXIT`, close every connection, stop serving and join every thread.
    pub fn exit(self) {
        self.inner.stop();
    }

    /// Like [`exit`](Self::exit), through a shared reference (for a handle other
    /// threads still use: their calls then fail with [`Error::Shutdown`] or
    /// [`Error::Closed`]). Must not be called from a hook.
    pub fn shutdown(&self) {
        self.inner.stop();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.inner.stop();
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("username", &self.inner.username)
            .field("listen_addr", &self.inner.listen_addr)
            .finish_non_exhaustive()
    }
}

/// Ask the registry at `registry` whether `username` is free (for prompting before
/// [`PeerBuilder::connect`]). Opens and closes its own connection.
pub fn username_available(registry: &str, username: &str) -> Result<bool> {
    username_available_with(registry, username, RegistryMode::Auto)
}

/// [`username_available`] with a chosen [`RegistryMode`].
pub fn username_available_with(registry: &str, username: &str, mode: RegistryMode) -> Result<bool> {
    check_username(username).map_err(|_| Error::InvalidUsername(username.to_string()))?;
    let link = RegistryLink::new(registry, mode, None, Arc::new(KnownKeys::memory()))?;
    let answer = link.ask(&format!("GET_P,{username}"))?;
    link.disconnect();
    Ok(matches!(answer, Answer::Err(r) if r == crate::protocol::reason::USER_NOT_FOUND))
}

/// A registry client that holds no registration: for tools that only browse
/// (`p2pchat users`, `files`, `whois`).
pub struct RegistryClient {
    link: RegistryLink,
}

impl RegistryClient {
    /// Connect to the registry at `addr` (`host:port`), finding out which kind it is
    /// ([`RegistryMode::Auto`]).
    pub fn connect(addr: &str) -> Result<RegistryClient> {
        RegistryClient::connect_with(addr, RegistryMode::Auto)
    }

    /// Connect to the registry at `addr` in the given mode (registry key pinned in
    /// memory only).
    pub fn connect_with(addr: &str, mode: RegistryMode) -> Result<RegistryClient> {
        RegistryClient::connect_pinned(addr, mode, None)
    }

    /// Connect to the registry at `addr` (`host:port`, or `host:port#FINGERPRINT` to
    /// require that key) in the given mode, pinning its key in `known_keys_file` on
    /// first use and refusing a changed one ([`Error::KeyChanged`]). The session is
    /// secured with a throwaway key: a browsing client registers nothing.
    pub fn connect_pinned(
        addr: &str,
        mode: RegistryMode,
        known_keys_file: Option<&Path>,
    ) -> Result<RegistryClient> {
        let known_keys = match known_keys_file {
            Some(p) => KnownKeys::open(p)?,
            None => KnownKeys::memory(),
        };
        let link = RegistryLink::new(addr, mode, None, Arc::new(known_keys))?;
        link.connect()?;
        Ok(RegistryClient { link })
    }

    /// The registry's key on this secured session (`None`: unencrypted).
    pub fn registry_key(&self) -> Option<PublicKey> {
        self.link.registry_key()
    }

    /// Whether the registry is spoken to in the original's legacy way.
    pub fn is_legacy(&self) -> bool {
        self.link.is_legacy()
    }

    /// Usernames online.
    pub fn users(&self) -> Result<Vec<String>> {
        self.link.users()
    }

    /// One user's files.
    pub fn files_of(&self, name: &str) -> Result<Vec<String>> {
        self.link.files_of(name)
    }

    /// Every user's files.
    pub fn all_files(&self) -> Result<Vec<(String, Vec<String>)>> {
        self.link.all_files()
    }

    /// One user's address.
    pub fn peer_addr(&self, name: &str) -> Result<SocketAddr> {
        Ok(self.link.peer_info(name)?.addr)
    }

    /// One user's address, and whether they are an original client.
    pub fn peer_info(&self, name: &str) -> Result<PeerInfo> {
        self.link.peer_info(name)
    }
}

impl Peer {
    /// Like [`fetch`](Self::fetch), saving the file as `dest`: an existing directory
    /// (the file keeps its name there) or the path of a new file in an existing
    /// directory. The same rules hold: nothing is overwritten
    /// ([`Error::AlreadyExists`]), the partial file lives next to the destination (a
    /// cancelled download resumes from it) and the file gets its name only once
    /// verified. [`Error::InvalidArgument`] for a destination that is not a valid file
    /// name, [`Error::NotADownloadDirectory`] when its directory does not exist.
    pub fn fetch_to(&self, name: &str, file: &str, dest: impl AsRef<Path>) -> Result<Transfer> {
        fetch::start(&self.inner, name, file, Some(dest.as_ref()))
    }

    /// The transfers of this peer still running, oldest first: downloads, and files
    /// sent or received after an offer ([`Transfer::is_outgoing`] tells the sending ones).
    pub fn transfers(&self) -> Vec<Transfer> {
        self.inner.open_transfers.running()
    }

    /// The chats of this peer still open (asked for or accepted), oldest first.
    pub fn chats(&self) -> Vec<Chat> {
        self.inner.open_chat_list.open()
    }
}

impl PeerBuilder {
    /// Take file offers: `f` gets each [`FileOffer`] (on the offer's serving thread;
    /// answer it there or later, from any thread). Without this hook (and without an
    /// event queue) offers are declined at once with `ERR declined this peer does not
    /// take files`.
    pub fn on_file_offer(mut self, f: impl Fn(FileOffer) + Send + Sync + 'static) -> Self {
        self.hooks.file_offer = Some(Arc::new(f));
        self
    }
}

impl Peer {
    /// Offer the file at `path` to `user` and wait until they accept, decline or let
    /// the offer expire (at most this peer's chat-answer timeout plus 5 s, besides
    /// connecting). Offers go only over a secured link: `user` must be registered with
    /// a key. The file is hashed first (BLAKE3; the recipient verifies it). Once
    /// accepted, the bytes (from where a partial file of the recipient's resumes) go in
    /// the background: the returned outgoing [`Transfer`] shows the bytes sent, and
    /// [`Transfer::wait`] returns `path` once the recipient verified and stored the
    /// file. Its progress, done and failed hooks (or events) are those of downloads.
    ///
    /// Errors: [`Error::OfferDeclined`], [`Error::Timeout`] (no answer in time),
    /// [`Error::Busy`] (too many offers pending there), [`Error::Refused`] (too large
    /// for the recipient, or another refusal), [`Error::Denied`] (`user` has no key, or
    /// refused this peer), [`Error::InvalidArgument`] (a name that cannot be sent, not
    /// a regular file), [`Error::UserNotFound`], [`Error::KeyChanged`],
    /// [`Error::Shutdown`], I/O errors (the file cannot be read; connecting).
    pub fn offer_file(&self, user: &str, path: impl AsRef<Path>) -> Result<Transfer> {
        push::offer(&self.inner, user, path.as_ref())
    }

    /// Accept the pending file offer `id` (from [`FileOffer::id`]): into the download
    /// directory when `dest` is `None`, else as [`FileOffer::accept_to`]. Errors as
    /// there, and [`Error::InvalidArgument`] when no offer `id` waits (answered,
    /// expired or unknown).
    pub fn accept_offer(&self, id: OfferId, dest: Option<&Path>) -> Result<Transfer> {
        let offer = self.inner.offers.get(id).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "no file offer {id} waits for an answer (answered, expired or unknown)"
            ))
        })?;
        match dest {
            Some(d) => offer.accept_to(d),
            None => offer.accept(),
        }
    }

    /// Decline the pending file offer `id`; `false` when no offer `id` waits.
    pub fn decline_offer(&self, id: OfferId) -> bool {
        self.inner.offers.get(id).is_some_and(|o| o.decline())
    }

    /// The file offers waiting for an answer, oldest first.
    pub fn file_offers(&self) -> Vec<FileOffer> {
        self.inner.offers.pending()
    }
}
