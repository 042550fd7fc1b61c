//! Downloads: asking another peer for a file and receiving it in the background.
//!
//! Each download runs on a thread of the peer's own; the [`Transfer`] handle shows its
//! progress, waits for it, or cancels it. Bytes go through
//! [`transfer::Receiver`](crate::transfer::Receiver): temporary file, hash while
//! writing, verify, then move into place without overwriting.

use super::link::{self, LinkReader, Partner, Route};
use super::registry_link::PeerInfo;
use super::{Inner, PeerEvent};
use crate::error::{is_timeout, Error, Result};
use crate::identity::PublicKey;
use crate::limits::MAX_PEER_LINE;
use crate::protocol::{parse_peer_answer, PeerAnswer, PeerRequest};
use crate::reach::Path;
use crate::thread::call_hook;
use crate::transfer::{Receiver, Resume, SpaceReservation};
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Identifies one download within a peer.
pub type TransferId = u64;

pub(crate) struct TransferShared {
    id: TransferId,
    from: String,
    file: String,
    /// From an original client: no hash, so the file cannot be verified.
    legacy: bool,
    received: AtomicU64,
    total: AtomicU64,
    cancelled: AtomicBool,
    socket: Mutex<Option<TcpStream>>,
    result: Mutex<Option<Result<PathBuf>>>,
    /// Disconnected when the download thread ends: wakes every waiter.
    finished: crossbeam_channel::Receiver<()>,
    /// Who sends it, as far as the link proves it.
    partner: Partner,
    /// Where the partial file lives (removed by `cancel_discard`).
    part_path: PathBuf,
    /// Set by `cancel_discard`: the partial goes once the download has ended.
    discard: AtomicBool,
    /// Recent `(when, bytes received)` samples, oldest first, for the rate.
    samples: Mutex<VecDeque<(Instant, u64)>>,
    /// Bytes the receiving side had already when the transfer began (a resumed
    /// partial file).
    resumed_from: u64,
    /// This peer sends the file (a file it offered, [`super::Peer::offer_file`]):
    /// `from` is then the recipient, and nothing is ever discarded.
    outgoing: bool,
    /// Where the sender listens and how the registry sees it (for choosing the path).
    info: PeerInfo,
    /// How the current (or last) link to the sender is connected.
    path: Mutex<Path>,
}

/// How far a download is, how fast it goes and when it should end: see
/// [`Transfer::stats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransferStats {
    /// Bytes received so far (a resumed partial file's included).
    pub bytes: u64,
    /// The file's total size; 0 until the sender announced it (and for an original
    /// client, which never does).
    pub total: u64,
    /// Bytes per second over the last few seconds (0 before any byte arrived, and once
    /// the download ended).
    pub bytes_per_sec: f64,
    /// Estimated time left at that rate: `None` when unknown (no rate yet, or no total),
    /// zero once the download ended.
    pub eta: Option<Duration>,
}

/// How far back [`Transfer::stats`] looks to measure the rate.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// At most one rate sample per this interval.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

impl TransferShared {
    /// The directory the file lands in (the partial file's), `default` if unknown.
    fn dest_dir<'a>(&'a self, default: &'a std::path::Path) -> &'a std::path::Path {
        match self.part_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => default,
        }
    }

    /// Note `got` bytes received by now (for the rate).
    fn sample(&self, got: u64) {
        let now = Instant::now();
        let mut samples = self.samples.lock();
        if samples
            .back()
            .is_some_and(|&(at, _)| now.duration_since(at) < SAMPLE_EVERY)
        {
            return;
        }
        samples.push_back((now, got));
        while samples.len() > 2
            && samples
                .front()
                .is_some_and(|&(at, _)| now.duration_since(at) > RATE_WINDOW)
        {
            samples.pop_front();
        }
    }

    /// Remove the partial file if `cancel_discard` asked for it and the download did
    /// not succeed. Called with the result lock held.
    fn discard_if_asked(&self, result: &Option<Result<PathBuf>>) {
        if self.outgoing || !self.discard.load(Ordering::SeqCst) || !matches!(result, Some(Err(_)))
        {
            return;
        }
        match crate::transfer::remove_partial(&self.part_path) {
            Ok(true) => log::debug!("discarded partial {}", self.part_path.display()),
            Ok(false) => log::warn!(
                "partial {} is in use by another download: not discarded",
                self.part_path.display()
            ),
            Err(e) => log::warn!("cannot discard {}: {e}", self.part_path.display()),
        }
    }
}

/// A download in progress (or finished). Cheap to clone.
#[derive(Clone)]
pub struct Transfer {
    shared: Arc<TransferShared>,
}

impl Transfer {
    /// This download's id (the one hooks receive).
    pub fn id(&self) -> TransferId {
        self.shared.id
    }

    /// Who the file comes from; for a file this peer sends
    /// ([`is_outgoing`](Self::is_outgoing)), who it goes to.
    pub fn from(&self) -> &str {
        &self.shared.from
    }

    /// Whether this peer sends the file (a file offered with
    /// [`Peer::offer_file`](super::Peer::offer_file) and accepted): progress then counts
    /// the bytes sent, and [`wait`](Self::wait) gives the path of the file sent once the
    /// recipient confirmed it verified and stored it. `false` for a download and for an
    /// accepted offer on the receiving side.
    pub fn is_outgoing(&self) -> bool {
        self.shared.outgoing
    }

    /// The file's name.
    pub fn file(&self) -> &str {
        &self.shared.file
    }

    /// Whether the file comes with a hash that is checked before it gets its name.
    /// `false` for a download from an original C++ client (it sends raw bytes and
    /// closes: the file is saved as received, **unverified**).
    pub fn is_verified(&self) -> bool {
        !self.shared.legacy
    }

    /// `(bytes received, total size)`; the total is 0 until the other peer answered
    /// (and stays 0 for an original client, which never says).
    /// Received bytes include a resumed partial file.
    pub fn progress(&self) -> (u64, u64) {
        (
            self.shared.received.load(Ordering::Relaxed),
            self.shared.total.load(Ordering::Relaxed),
        )
    }

    /// Bytes the receiving side already had when this transfer began: a partial file
    /// it resumes (0 for a fresh one). Unlike [`progress`](Self::progress), which
    /// moves on as bytes arrive, this is fixed.
    pub fn resumed_from(&self) -> u64 {
        self.shared.resumed_from
    }

    /// Whether the download has ended (successfully or not).
    pub fn is_finished(&self) -> bool {
        self.shared.result.lock().is_some()
    }

    /// Stop the download. The partial file is kept, so a later fetch resumes it.
    pub fn cancel(&self) {
        self.shared.cancelled.store(true, Ordering::SeqCst);
        if let Some(s) = self.shared.socket.lock().as_ref() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Stop the download and throw its partial file away (with its origin record), so
    /// a later fetch starts from 0. A download that already ended in failure loses its
    /// partial file too; a finished, successful one is left alone. The partial file of
    /// another running download of the same destination is never removed.
    pub fn cancel_discard(&self) {
        self.shared.discard.store(true, Ordering::SeqCst);
        self.cancel();
        let result = self.shared.result.lock();
        self.shared.discard_if_asked(&result);
    }

    /// Bytes, total, rate over the last few seconds and the estimated time left.
    pub fn stats(&self) -> TransferStats {
        let (bytes, total) = self.progress();
        if self.is_finished() {
            return TransferStats {
                bytes,
                total,
                bytes_per_sec: 0.0,
                eta: Some(Duration::ZERO),
            };
        }
        let now = Instant::now();
        let rate = {
            let samples = self.shared.samples.lock();
            let first = samples
                .iter()
                .find(|&&(at, _)| now.duration_since(at) <= RATE_WINDOW)
                .or(samples.back());
            match first {
                Some(&(at, b)) if bytes > b => {
                    let secs = now.duration_since(at).as_secs_f64().max(0.001);
                    (bytes - b) as f64 / secs
                }
                _ => 0.0,
            }
        };
        let eta = (rate > 0.0 && total > 0)
            .then(|| Duration::from_secs_f64(total.saturating_sub(bytes) as f64 / rate));
        TransferStats {
            bytes,
            total,
            bytes_per_sec: rate,
            eta,
        }
    }

    /// Block until the download ends; the path of the verified file, or why it failed.
    pub fn wait(&self) -> Result<PathBuf> {
        let _ = self.shared.finished.recv();
        self.outcome()
    }

    /// Like [`wait`](Self::wait), but gives up after `timeout`: `None` if the download
    /// is still running then.
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> Option<Result<PathBuf>> {
        match self.shared.finished.recv_timeout(timeout) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
            _ => Some(self.outcome()),
        }
    }

    /// The sender's public key, proven by the handshake of the secured link and checked
    /// against the registry's listing and the pins; `None` for an unverified sender
    /// (registered without a key, or an original client).
    pub fn remote_key(&self) -> Option<PublicKey> {
        self.shared.partner.key
    }

    /// How the link to the sender is connected (the latest one, for a download that
    /// asked twice): [`Path::Direct`], [`Path::Reverse`] (the sender connected back),
    /// [`Path::Punched`] (both connected at once through their NATs) or
    /// [`Path::Relayed`] (through a relay, which sees only ciphertext). Known once
    /// [`PeerEvent::TransferStarted`] was reported; [`Path::Direct`] before.
    pub fn path(&self) -> Path {
        *self.shared.path.lock()
    }

    /// Whether the file comes over a secured link (`P2P/2`): encrypted, and every
    /// byte authenticated as the sender's (a byte altered on the way ends the
    /// download). `false` for a plaintext download from an unverified sender.
    pub fn is_encrypted(&self) -> bool {
        self.shared.partner.encrypted
    }

    fn outcome(&self) -> Result<PathBuf> {
        match self.shared.result.lock().as_ref() {
            Some(r) => r.clone(),
            None => Err(Error::Shutdown),
        }
    }
}

impl std::fmt::Debug for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfer")
            .field("id", &self.shared.id)
            .field("from", &self.shared.from)
            .field("file", &self.shared.file)
            .finish_non_exhaustive()
    }
}

/// At the peer's start: remove partial downloads in `dir` untouched for longer than
/// `limits.stale_partial_age` (never one a running download holds). Failures are only
/// logged: a peer starts anyway.
pub(super) fn remove_stale_partials(dir: &std::path::Path, limits: &super::PeerLimits) {
    let Some(age) = limits.stale_partial_age else {
        return;
    };
    match crate::transfer::remove_stale_partials(dir, age) {
        Ok(0) => {}
        Ok(n) => log::info!(
            "removed {n} stale partial download(s) from {}",
            dir.display()
        ),
        Err(e) => log::warn!(
            "cannot look for stale partial downloads in {}: {e}",
            dir.display()
        ),
    }
}

/// Check what can be checked at once (name, existing file, user online), then download
/// in the background.
pub(super) fn start(
    inner: &Arc<Inner>,
    from: &str,
    file: &str,
    dest: Option<&std::path::Path>,
) -> Result<Transfer> {
    if inner.stopping() {
        return Err(Error::Shutdown);
    }
    // The destination is checked first: a mistake there needs no registry.
    if let Some(dest) = dest {
        Receiver::prepare_at(dest, file)?.discard_if_empty();
    }
    let info = inner.peer_info(from)?;
    let route = link::route(inner, from, &info)?;
    let addr = info.addr;
    let legacy = matches!(route, Route::Legacy);
    let receiver = match dest {
        Some(dest) => Receiver::prepare_at(dest, file)?,
        None => Receiver::prepare(&inner.download_dir, file)?,
    };
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    let shared = Arc::new(TransferShared {
        id: inner.next_id(),
        from: from.to_string(),
        file: file.to_string(),
        legacy,
        received: AtomicU64::new(if legacy { 0 } else { receiver.offset() }),
        total: AtomicU64::new(0),
        cancelled: AtomicBool::new(false),
        socket: Mutex::new(None),
        result: Mutex::new(None),
        finished: done_rx,
        partner: route.partner(),
        part_path: receiver.partial_path().to_path_buf(),
        discard: AtomicBool::new(false),
        samples: Mutex::new(VecDeque::from([(Instant::now(), receiver.offset())])),
        resumed_from: receiver.offset(),
        outgoing: false,
        info,
        path: Mutex::new(Path::Direct),
    });
    inner.note_transfer(&shared);
    let t = shared.clone();
    let worker = inner.clone();
    inner
        .threads
        .spawn(&format!("p2p-fetch-{}", shared.id), move || {
            run(worker, t, receiver, addr, done_tx)
        })?;
    Ok(Transfer { shared })
}

fn run(
    inner: Arc<Inner>,
    t: Arc<TransferShared>,
    receiver: Receiver,
    addr: SocketAddr,
    done: Sender<()>,
) {
    let result = if t.legacy {
        download_legacy(&inner, &t, receiver, addr)
    } else {
        download(&inner, &t, receiver, addr)
    };
    // Whatever happened, this download's connection is done: close it now, so a
    // sender still writing (after a failure here) stops at once.
    if let Some(s) = t.socket.lock().take() {
        let _ = s.shutdown(Shutdown::Both);
    }
    finish(&inner, &t, result, done);
}

/// The end of a transfer, whatever it was: a cancel reported as such, a file received
/// into the share shared, the hooks told, the result stored (waking every waiter when
/// `done` drops).
pub(super) fn finish(
    inner: &Inner,
    t: &Arc<TransferShared>,
    result: Result<PathBuf>,
    done: Sender<()>,
) {
    let result = result.map_err(|e| {
        if t.cancelled.load(Ordering::SeqCst) || inner.stopping() {
            Error::Cancelled
        } else {
            e
        }
    });
    if let (Ok(path), false) = (&result, t.outgoing) {
        // Share what was just downloaded, as the original client did (`UP`).
        if path.parent() == Some(inner.share.dir()) {
            if let Err(e) = inner.rescan() {
                log::warn!("rescan after downloading {:?} failed: {e}", t.file);
            }
        }
    }
    match &result {
        Ok(path) => {
            if let Some(h) = &inner.hooks.done {
                call_hook(|| h(t.id, path));
            }
        }
        Err(e) => {
            if let Some(h) = &inner.hooks.failed {
                call_hook(|| h(t.id, e));
            }
        }
    }
    let mut slot = t.result.lock();
    *slot = Some(result);
    t.discard_if_asked(&slot);
    drop(slot);
    drop(done);
}

fn download(
    inner: &Inner,
    t: &TransferShared,
    mut receiver: Receiver,
    addr: SocketAddr,
) -> Result<PathBuf> {
    // The offset asked for. It differs from the partial's length only on the second
    // round after `ERR bad-offset`: that answer does not say which file the peer has,
    // so the file is asked for again from 0 to learn its size and hash before anything
    // happens to the partial (see `Resume`).
    let mut from = receiver.offset();
    for _round in 0..2 {
        let (key, mut reader, answer) = match ask(inner, t, addr, from) {
            Ok(asked) => asked,
            Err(e) => {
                receiver.discard_if_empty();
                return Err(e);
            }
        };
        let probing = from != receiver.offset();
        let refused = match answer {
            PeerAnswer::File { size, hash } => match receiver.judge(&t.from, size, &hash) {
                Resume::Continue if !probing => {
                    return receive(inner, t, receiver, key, &mut reader, size, &hash, false)
                }
                Resume::Restart if probing => {
                    return receive(inner, t, receiver, key, &mut reader, size, &hash, true)
                }
                Resume::Restart => {
                    // The partial's origin replaced its file: ask for the new one from 0.
                    inner.forget_socket(key);
                    receiver.restart()?;
                    t.received.store(0, Ordering::Relaxed);
                    t.samples.lock().clear();
                    from = 0;
                    continue;
                }
                Resume::Continue => match receiver.origin() {
                    // "Your offset is past the end" and then the very same file: a lie.
                    Some(o) => Err(Error::protocol(
                        addr,
                        format!(
                            "refused offset {} of {:?} but announces the same {}-byte file",
                            receiver.offset(),
                            t.file,
                            o.size
                        ),
                    )),
                    // A partial of unknown origin is never thrown away on a peer's word.
                    None => Err(conflict(t, &receiver, "an unrecorded peer")),
                },
                Resume::Conflict => {
                    let origin = receiver.origin().map(|o| o.peer.clone());
                    Err(conflict(t, &receiver, origin.as_deref().unwrap_or("?")))
                }
            },
            PeerAnswer::Err { code, .. } if code == "bad-offset" && !probing && from > 0 => {
                inner.forget_socket(key);
                from = 0;
                continue;
            }
            PeerAnswer::Err { code, .. } if code == "not-found" => Err(Error::FileNotFound {
                user: t.from.clone(),
                file: t.file.clone(),
            }),
            PeerAnswer::Err { code, text } => Err(link::answer_error(&t.from, &code, &text)),
            PeerAnswer::ChatAccepted => Err(Error::protocol(addr, "chat answer to a file request")),
        };
        inner.forget_socket(key);
        receiver.discard_if_empty();
        return refused;
    }
    // Not reached: a second round asks from 0, where every answer ends the loop.
    Err(Error::protocol(addr, "no usable answer to a resume"))
}

/// From an original client: `FILE,<name>` in one `send`, then its raw bytes until it
/// closes, saved unverified (there is no hash) through the same partial file and
/// no-overwrite rename. The original cannot resume, so a partial file already there
/// (from another peer) is left alone and the download refused. An original sends
/// nothing at all for a file it cannot open, so zero bytes are an empty file only if
/// the registry lists the name in its share.
fn download_legacy(
    inner: &Inner,
    t: &TransferShared,
    receiver: Receiver,
    addr: SocketAddr,
) -> Result<PathBuf> {
    if receiver.offset() > 0 {
        let origin = receiver.origin().map(|o| o.peer.clone());
        return Err(conflict(
            t,
            &receiver,
            origin.as_deref().unwrap_or("an unrecorded peer"),
        ));
    }
    // Until the receiver takes over (it removes its partial on failure), an early
    // failure leaves no empty partial behind.
    let mut pending = Some(receiver);
    let result = legacy_transfer(inner, t, &mut pending, addr);
    if let Some(r) = pending {
        r.discard_if_empty();
    }
    let (path, len) = result?;
    if len == 0 {
        let listed = inner
            .registry
            .files_of(&t.from)
            .is_ok_and(|files| files.iter().any(|f| f == &t.file));
        if !listed {
            let _ = std::fs::remove_file(&path);
            return Err(Error::FileNotFound {
                user: t.from.clone(),
                file: t.file.clone(),
            });
        }
    }
    Ok(path)
}

/// Connect, ask, receive (see [`download_legacy`]); takes the receiver out of `pending`
/// when it starts receiving.
fn legacy_transfer(
    inner: &Inner,
    t: &TransferShared,
    pending: &mut Option<Receiver>,
    addr: SocketAddr,
) -> Result<(PathBuf, u64)> {
    let limits = &inner.limits;
    let free = crate::transfer::free_space(t.dest_dir(&inner.download_dir))?;
    let mut limit = free.saturating_sub(limits.free_space_margin);
    if let Some(max) = limits.max_download_size {
        limit = limit.min(max);
    }
    let stream = link::connect(inner, &t.from, addr)?;
    stream.set_write_timeout(Some(inner.io_timeout))?;
    *t.socket.lock() = Some(stream.try_clone()?);
    let key = inner.track_socket(&stream);
    let result = (|| {
        if t.cancelled.load(Ordering::SeqCst) {
            return Err(Error::Cancelled);
        }
        (&stream).write_all(format!("FILE,{}", t.file).as_bytes())?;
        // Nothing more to say: a p2pchat peer then takes the request as whole at once.
        let _ = stream.shutdown(Shutdown::Write);
        let pace = limits.min_rate(inner.io_timeout);
        stream.set_read_timeout(Some(pace.tick()))?;
        let mut reader = BufReader::with_capacity(256 * 1024, stream.try_clone()?);
        let Some(mut receiver) = pending.take() else {
            return Err(Error::Closed);
        };
        receiver.set_pace(pace);
        inner.emit(PeerEvent::TransferStarted {
            id: t.id,
            from: t.from.clone(),
            file: t.file.clone(),
            size: 0,
            offset: 0,
            verified: false,
            path: Path::Direct,
        });
        let mut progress = |got: u64| {
            t.received.store(got, Ordering::Relaxed);
            t.sample(got);
            if let Some(h) = &inner.hooks.progress {
                call_hook(|| h(t.id, got, 0));
            }
            !t.cancelled.load(Ordering::SeqCst)
        };
        receiver.receive_unverified(&mut reader, &t.from, limit, &mut progress)
    })();
    inner.forget_socket(key);
    result
}

fn conflict(t: &TransferShared, receiver: &Receiver, origin: &str) -> Error {
    Error::PartialConflict {
        peer: t.from.clone(),
        file: t.file.clone(),
        origin: origin.to_string(),
        partial: receiver.partial_path().to_path_buf(),
    }
}

/// The peer announced `size` bytes with `hash` and the bytes follow on `reader` (from 0
/// when `restart`, else from the partial's length): check the bounds, record the
/// origin, then receive with the minimum-rate rule.
#[allow(clippy::too_many_arguments)]
pub(super) fn receive(
    inner: &Inner,
    t: &TransferShared,
    mut receiver: Receiver,
    key: Option<u64>,
    reader: &mut LinkReader,
    size: u64,
    hash: &str,
    restart: bool,
) -> Result<PathBuf> {
    let limits = &inner.limits;
    let start = if restart { 0 } else { receiver.offset() };
    // Everything refused here is refused before the first byte is written.
    let checked = (|| {
        if start > size {
            // Answered `OK` for a file shorter than the partial, where `bad-offset` was
            // due: nothing to record, nothing to receive.
            return Err(Error::protocol(
                t.from.as_str(),
                format!(
                    "offers {size} bytes of {:?} after a resume from {start}",
                    t.file
                ),
            ));
        }
        if let Some(limit) = limits.max_download_size.filter(|&l| size > l) {
            return Err(Error::DownloadTooLarge {
                peer: t.from.clone(),
                file: t.file.clone(),
                size,
                limit,
            });
        }
        let space = SpaceReservation::reserve(
            t.dest_dir(&inner.download_dir),
            size.saturating_sub(start),
            limits.free_space_margin,
            &t.file,
            &t.from,
        )?;
        if restart {
            receiver.restart()?;
            t.received.store(0, Ordering::Relaxed);
        }
        receiver.begin(&t.from, size, hash)?;
        let pace = limits.min_rate(inner.io_timeout);
        reader.socket().set_read_timeout(Some(pace.tick()))?;
        receiver.set_pace(pace);
        Ok(space)
    })();
    let mut space = match checked {
        Ok(space) => space,
        Err(e) => {
            inner.forget_socket(key);
            receiver.discard_if_empty();
            return Err(e);
        }
    };
    t.total.store(size, Ordering::Relaxed);
    inner.emit(PeerEvent::TransferStarted {
        id: t.id,
        from: t.from.clone(),
        file: t.file.clone(),
        size,
        offset: receiver.offset(),
        verified: t.partner.verified,
        path: *t.path.lock(),
    });
    let mut progress = |got: u64| {
        t.received.store(got, Ordering::Relaxed);
        t.sample(got);
        space.shrink_to(size.saturating_sub(got));
        if let Some(h) = &inner.hooks.progress {
            call_hook(|| h(t.id, got, size));
        }
        !t.cancelled.load(Ordering::SeqCst)
    };
    let r = receiver.receive(reader, size, hash, &mut progress);
    inner.forget_socket(key);
    r
}

/// Connect (a secured link when the sender has a key), send the file request from
/// `offset`, read the answer line.
fn ask(
    inner: &Inner,
    t: &TransferShared,
    addr: SocketAddr,
    offset: u64,
) -> Result<(Option<u64>, LinkReader, PeerAnswer)> {
    if t.cancelled.load(Ordering::SeqCst) {
        return Err(Error::Cancelled);
    }
    let (mut reader, mut writer, key) = match t.partner.key {
        Some(k) => {
            let (r, w, key, path) = link::dial_secure(inner, &t.from, &t.info, k)?;
            *t.path.lock() = path;
            (r, w, key)
        }
        None => {
            let stream = link::connect(inner, &t.from, addr)?;
            stream.set_write_timeout(Some(inner.io_timeout))?;
            let key = inner.track_socket(&stream);
            match stream.try_clone() {
                Ok(r) => (
                    LinkReader::Plain(BufReader::with_capacity(256 * 1024, r)),
                    link::LinkWriter::Plain(stream),
                    key,
                ),
                Err(e) => {
                    inner.forget_socket(key);
                    return Err(e.into());
                }
            }
        }
    };
    let answer = (|| {
        *t.socket.lock() = Some(reader.socket().try_clone()?);
        if t.cancelled.load(Ordering::SeqCst) {
            return Err(Error::Cancelled);
        }
        let request = PeerRequest::File {
            name: t.file.clone(),
            offset,
            legacy: false,
        };
        writer.write_line(&request.to_line())?;
        let line = read_answer_line(&mut reader, inner.io_timeout, addr, &t.from)?;
        let answer = parse_peer_answer(&line).map_err(|d| Error::protocol(addr, d))?;
        Ok(answer)
    })();
    match answer {
        Ok(answer) => Ok((key, reader, answer)),
        Err(e) => {
            inner.forget_socket(key);
            Err(e)
        }
    }
}

/// Reads the answer line to a file request within `timeout` (see [`read_line_within`]).
fn read_answer_line(
    reader: &mut LinkReader,
    timeout: Duration,
    addr: SocketAddr,
    peer: &str,
) -> Result<String> {
    read_line_within(reader, timeout, addr, || {
        format!(
            "{peer} did not answer the file request within {:.1} s",
            timeout.as_secs_f64()
        )
    })
}

/// Reads one answer line (at most `MAX_PEER_LINE` bytes) within `timeout` in total,
/// however it trickles in: a socket read timeout alone restarts with every byte, so a
/// peer sending one byte now and then could hold a download (or a push's answer) for
/// hours. Past the deadline: [`Error::Timeout`] with `too_slow()`'s text.
pub(super) fn read_line_within(
    reader: &mut LinkReader,
    timeout: Duration,
    addr: SocketAddr,
    too_slow: impl Fn() -> String,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout(too_slow()));
        }
        reader.socket().set_read_timeout(Some(left))?;
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => return Err(Error::Timeout(too_slow())),
            Err(e) => return Err(e.into()),
        };
        if buf.is_empty() {
            return Err(Error::Closed);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > MAX_PEER_LINE + 1 {
            return Err(Error::protocol(addr, "answer line too long"));
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if done {
            break;
        }
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| Error::protocol(addr, "answer line is not UTF-8"))
}

/// The transfers of a peer still running (each held weakly: a finished one goes).
#[derive(Default)]
pub(crate) struct OpenTransfers(Mutex<Vec<std::sync::Weak<TransferShared>>>);

impl OpenTransfers {
    fn add(&self, t: &Arc<TransferShared>) {
        let mut list = self.0.lock();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(t));
    }

    /// The downloads still running, oldest first.
    pub(crate) fn running(&self) -> Vec<Transfer> {
        let mut list = self.0.lock();
        list.retain(|w| w.strong_count() > 0);
        list.iter()
            .filter_map(|w| w.upgrade())
            .filter(|t| t.result.lock().is_none())
            .map(|shared| Transfer { shared })
            .collect()
    }
}

impl Inner {
    fn note_transfer(&self, t: &Arc<TransferShared>) {
        self.open_transfers.add(t);
    }
}

impl TransferShared {
    /// A transfer for a file push (see [`super::push`]): `peer` is the other side,
    /// `part_path` the partial file (receiving) or empty (sending); `received` bytes
    /// are there already, of `total`. Noted among the open transfers; the sender
    /// returned is dropped by [`finish`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_push(
        inner: &Inner,
        peer: &str,
        file: &str,
        partner: Partner,
        (addr, path): (SocketAddr, Path),
        part_path: PathBuf,
        outgoing: bool,
        received: u64,
        total: u64,
    ) -> (Arc<TransferShared>, Sender<()>) {
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        let shared = Arc::new(TransferShared {
            id: inner.next_id(),
            from: peer.to_string(),
            file: file.to_string(),
            legacy: false,
            received: AtomicU64::new(received),
            total: AtomicU64::new(total),
            cancelled: AtomicBool::new(false),
            socket: Mutex::new(None),
            result: Mutex::new(None),
            finished: done_rx,
            partner,
            part_path,
            discard: AtomicBool::new(false),
            samples: Mutex::new(VecDeque::from([(Instant::now(), received)])),
            resumed_from: received,
            outgoing,
            // A pushed file is never fetched again over this link: the address is the
            // other side's end of it (a relay's, when relayed), kept for the record.
            info: PeerInfo {
                addr,
                legacy: false,
                key: partner.key,
                reach: crate::reach::Reach::Unknown,
            },
            path: Mutex::new(path),
        });
        inner.note_transfer(&shared);
        (shared, done_tx)
    }

    pub(super) fn id(&self) -> TransferId {
        self.id
    }

    /// The other side's username.
    pub(super) fn peer_name(&self) -> &str {
        &self.from
    }

    pub(super) fn file_name(&self) -> &str {
        &self.file
    }

    /// Keep a clone of the transfer's socket, so a cancel can shut it down.
    pub(super) fn set_socket(&self, s: &TcpStream) {
        if let Ok(c) = s.try_clone() {
            *self.socket.lock() = Some(c);
        }
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// `got` bytes sent or received by now.
    pub(super) fn note_progress(&self, got: u64) {
        self.received.store(got, Ordering::Relaxed);
        self.sample(got);
    }

    /// Close the transfer's socket (the transfer ends, or ended).
    pub(super) fn close_socket(&self) {
        if let Some(s) = self.socket.lock().take() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Transfer {
    pub(super) fn from_shared(shared: Arc<TransferShared>) -> Transfer {
        Transfer { shared }
    }
}
