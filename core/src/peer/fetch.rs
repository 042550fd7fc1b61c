//! Downloads: asking another peer for a file and receiving it in the background.
//!
//! Each download runs on a thread of the peer's own; the [`Transfer`] handle shows its
//! progress, waits for it, or cancels it. Bytes go through
//! [`transfer::Receiver`](crate::transfer::Receiver): temporary file, hash while
//! writing, verify, then move into place without overwriting.

use super::{Inner, PeerEvent};
use crate::error::{Error, Result};
use crate::limits::MAX_PEER_LINE;
use crate::protocol::{parse_peer_answer, PeerAnswer, PeerRequest};
use crate::thread::call_hook;
use crate::transfer::Receiver;
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Identifies one download within a peer.
pub type TransferId = u64;

struct TransferShared {
    id: TransferId,
    from: String,
    file: String,
    received: AtomicU64,
    total: AtomicU64,
    cancelled: AtomicBool,
    socket: Mutex<Option<TcpStream>>,
    result: Mutex<Option<Result<PathBuf>>>,
    /// Disconnected when the download thread ends: wakes every waiter.
    finished: crossbeam_channel::Receiver<()>,
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

    /// Who the file comes from.
    pub fn from(&self) -> &str {
        &self.shared.from
    }

    /// The file's name.
    pub fn file(&self) -> &str {
        &self.shared.file
    }

    /// `(bytes received, total size)`; the total is 0 until the other peer answered.
    /// Received bytes include a resumed partial file.
    pub fn progress(&self) -> (u64, u64) {
        (
            self.shared.received.load(Ordering::Relaxed),
            self.shared.total.load(Ordering::Relaxed),
        )
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

/// Check what can be checked at once (name, existing file, user online), then download
/// in the background.
pub(super) fn start(inner: &Arc<Inner>, from: &str, file: &str) -> Result<Transfer> {
    if inner.stopping() {
        return Err(Error::Shutdown);
    }
    let addr = inner.peer_addr(from)?;
    let receiver = Receiver::prepare(&inner.download_dir, file)?;
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    let shared = Arc::new(TransferShared {
        id: inner.next_id(),
        from: from.to_string(),
        file: file.to_string(),
        received: AtomicU64::new(receiver.offset()),
        total: AtomicU64::new(0),
        cancelled: AtomicBool::new(false),
        socket: Mutex::new(None),
        result: Mutex::new(None),
        finished: done_rx,
    });
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
    let result = download(&inner, &t, receiver, addr).map_err(|e| {
        if t.cancelled.load(Ordering::SeqCst) || inner.stopping() {
            Error::Cancelled
        } else {
            e
        }
    });
    if let Ok(path) = &result {
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
    *t.result.lock() = Some(result);
    drop(done);
}

fn download(
    inner: &Inner,
    t: &TransferShared,
    mut receiver: Receiver,
    addr: SocketAddr,
) -> Result<PathBuf> {
    // A second round only when the other side says our partial file is longer than
    // the file (it changed since): start over from 0.
    for attempt in 0..2 {
        let (key, mut reader, answer) = match ask(inner, t, addr, receiver.offset()) {
            Ok(asked) => asked,
            Err(e) => {
                receiver.discard_if_empty();
                return Err(e);
            }
        };
        let result = match answer {
            PeerAnswer::File { size, hash } => {
                t.total.store(size, Ordering::Relaxed);
                inner.emit(PeerEvent::TransferStarted {
                    id: t.id,
                    from: t.from.clone(),
                    file: t.file.clone(),
                    size,
                    offset: receiver.offset(),
                });
                let mut progress = |got: u64| {
                    t.received.store(got, Ordering::Relaxed);
                    if let Some(h) = &inner.hooks.progress {
                        call_hook(|| h(t.id, got, size));
                    }
                    !t.cancelled.load(Ordering::SeqCst)
                };
                let r = receiver.receive(&mut reader, size, &hash, &mut progress);
                inner.forget_socket(key);
                return r;
            }
            PeerAnswer::Err { code, .. } if code == "bad-offset" && attempt == 0 => {
                receiver.restart()?;
                t.received.store(0, Ordering::Relaxed);
                continue;
            }
            PeerAnswer::Err { code, .. } if code == "not-found" => Err(Error::FileNotFound {
                user: t.from.clone(),
                file: t.file.clone(),
            }),
            PeerAnswer::Err { code, .. } if code == "busy" => Err(Error::Busy(t.from.clone())),
            PeerAnswer::Err { code, text } => Err(Error::Refused {
                peer: t.from.clone(),
                reason: format!("{code} {text}"),
            }),
            PeerAnswer::ChatAccepted => Err(Error::protocol(addr, "chat answer to a file request")),
        };
        inner.forget_socket(key);
        receiver.discard_if_empty();
        return result;
    }
    Err(Error::protocol(
        addr,
        "refused the offset of a fresh download",
    ))
}

/// Connect, send the file request from `offset`, read the answer line.
fn ask(
    inner: &Inner,
    t: &TransferShared,
    addr: SocketAddr,
    offset: u64,
) -> Result<(Option<u64>, BufReader<TcpStream>, PeerAnswer)> {
    let stream = TcpStream::connect_timeout(&addr, inner.io_timeout)?;
    stream.set_read_timeout(Some(inner.io_timeout))?;
    stream.set_write_timeout(Some(inner.io_timeout))?;
    *t.socket.lock() = Some(stream.try_clone()?);
    if t.cancelled.load(Ordering::SeqCst) {
        return Err(Error::Cancelled);
    }
    let key = inner.track_socket(&stream);
    let answer = (|| {
        let request = PeerRequest::File {
            name: t.file.clone(),
            offset,
            legacy: false,
        };
        (&stream).write_all(request.to_line().as_bytes())?;
        let mut reader = BufReader::with_capacity(256 * 1024, stream.try_clone()?);
        let line =
            crate::net::read_line(&mut reader, MAX_PEER_LINE, "peer")?.ok_or(Error::Closed)?;
        let answer = parse_peer_answer(&line).map_err(|d| Error::protocol(addr, d))?;
        Ok((reader, answer))
    })();
    match answer {
        Ok((reader, answer)) => Ok((key, reader, answer)),
        Err(e) => {
            inner.forget_socket(key);
            Err(e)
        }
    }
}
