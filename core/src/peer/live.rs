//! The live share ([`PeerBuilder::live_share`](super::PeerBuilder::live_share)): a
//! watcher on the shared directory that rescans it after changes and updates the
//! registry when the list of names changed.
//!
//! The `notify` crate watches the directory (inotify, not recursive: only its top level
//! is shared). Its handler runs on notify's own thread and only sets a flag (a channel
//! of capacity 1, `try_send`), so a flood of events costs no memory; events about
//! hidden names (p2pchat's partial downloads, editors' swap files) and plain reads are
//! ignored. The watcher thread, owned by the peer's `Threads`, waits for the flag,
//! lets the directory settle ([`SHARE_SETTLE`], at most [`SHARE_MAX_DELAY`]), keeps
//! rescans [`SHARE_MIN_RESCAN_INTERVAL`] apart, rescans (the hash cache keeps unchanged
//! files unread; a file modified within the settle time is held back, so a file still
//! being copied in is not announced half-written) and sends `INIT` only when names
//! were added or removed. If the system
//! cannot watch the directory, the thread rescans every [`SHARE_POLL_INTERVAL`]
//! instead.

use super::Inner;
use crate::limits::{
    SHARE_MAX_DELAY, SHARE_MIN_RESCAN_INTERVAL, SHARE_POLL_INTERVAL, SHARE_SETTLE,
};
use crossbeam_channel::{select, Receiver, Sender};
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the watcher thread waits, after dropping the notify watcher, for notify's
/// own thread to let go of the handler (its last act before it ends).
const NOTIFY_STOP_WAIT: Duration = Duration::from_secs(2);
/// After a failed `INIT` (the registry busy or briefly away), retry this often.
const REGISTER_RETRY: Duration = Duration::from_secs(1);

/// Start watching the share on a thread owned by `inner.threads`.
pub(crate) fn start(inner: &Arc<Inner>) -> std::io::Result<()> {
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    let watcher = match watch(inner.share.dir(), tx) {
        Ok(w) => Some(w),
        Err(e) => {
            log::warn!(
                "cannot watch {} ({e}); rescanning it every {} ms instead",
                inner.share.dir().display(),
                SHARE_POLL_INTERVAL.as_millis()
            );
            None
        }
    };
    let owned = inner.clone();
    inner
        .threads
        .spawn("p2p-share-watch", move || run(&owned, watcher, &rx))
}

fn watch(dir: &Path, tx: Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let root = dir.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if matters(&root, &res) {
            // Full means a rescan is already due: this change is covered by it.
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Whether a notify event may change what is shared.
fn matters(root: &Path, res: &notify::Result<notify::Event>) -> bool {
    let Ok(event) = res else {
        return true; // lost events (queue overflow): rescan to be sure
    };
    match event.kind {
        // Opening or reading a file (serving it) changes nothing; closing a file that
        // was written may be the end of a copy.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    if event.need_rescan() || event.paths.is_empty() {
        return true;
    }
    // Anything but a hidden name directly in the share may matter.
    event.paths.iter().any(|p| {
        let hidden = p
            .file_name()
            .is_some_and(|n| n.as_bytes().first() == Some(&b'.'));
        p.parent() != Some(root) || !hidden
    })
}

fn run(inner: &Inner, watcher: Option<notify::RecommendedWatcher>, rx: &Receiver<()>) {
    let mut polling = watcher.is_none();
    // Without a watcher nobody sends: wait on a channel that never fires.
    let mut changes = if polling {
        crossbeam_channel::never()
    } else {
        rx.clone()
    };
    let mut last_scan: Option<Instant> = None;
    let mut must_register = false;
    // Files were still being written at the last scan: look again once they settle.
    let mut recheck = false;
    loop {
        // Wait for a change (or poll, or retry a failed INIT).
        let wait = if recheck {
            SHARE_MIN_RESCAN_INTERVAL
        } else if polling {
            SHARE_POLL_INTERVAL
        } else if must_register {
            REGISTER_RETRY
        } else {
            // Nothing to do until a change: wake now and then all the same.
            Duration::from_secs(3600)
        };
        select! {
            recv(inner.stop_rx) -> _ => break,
            recv(changes) -> r => {
                if r.is_err() {
                    // notify's thread ended on its own (it does on a poll failure).
                    log::warn!("the share watcher stopped; rescanning every second instead");
                    polling = true;
                    changes = crossbeam_channel::never();
                } else if !settle(inner, &changes, last_scan) {
                    break;
                }
            }
            default(wait) => {
                if !(polling || must_register || recheck) {
                    continue;
                }
            }
        }
        if inner.stopping() {
            break;
        }
        last_scan = Some(Instant::now());
        let report = match inner.scan_share(Some(SHARE_SETTLE)) {
            Ok(report) => {
                must_register |= !(report.added.is_empty() && report.removed.is_empty());
                recheck = !report.unsettled.is_empty();
                Some(report)
            }
            Err(e) => {
                log::warn!("rescanning {}: {e}", inner.share.dir().display());
                None
            }
        };
        if must_register {
            match inner.register() {
                Ok(()) => must_register = false,
                Err(e) => log::warn!("updating the registry after a share change: {e}"),
            }
        }
        if let Some(report) = report {
            inner.announce(&report);
        }
    }
    if let Some(w) = watcher {
        // notify's drop panics if its loop thread already died; keep that here.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(w)));
        // notify's loop thread is detached; it drops the handler (and with it the
        // channel's sender) as it ends. Waiting for that means no thread of ours
        // outlives `Peer::exit` for longer than it takes to return.
        let deadline = Instant::now() + NOTIFY_STOP_WAIT;
        while let Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Timeout) =
            rx.recv_deadline(deadline)
        {
            if Instant::now() >= deadline {
                log::warn!("the share watcher's notify thread did not stop in time");
                break;
            }
        }
    }
}

/// After a first change: wait until the directory is quiet for [`SHARE_SETTLE`] (at
/// most [`SHARE_MAX_DELAY`]) and at least [`SHARE_MIN_RESCAN_INTERVAL`] since the last
/// scan started. False when the peer is stopping.
fn settle(inner: &Inner, changes: &Receiver<()>, last_scan: Option<Instant>) -> bool {
    let first = Instant::now();
    let latest = first + SHARE_MAX_DELAY;
    let earliest = last_scan.map_or(first, |t| t + SHARE_MIN_RESCAN_INTERVAL);
    let mut quiet_from = first;
    loop {
        let now = Instant::now();
        let due = (quiet_from + SHARE_SETTLE).min(latest).max(earliest);
        if now >= due {
            return true;
        }
        select! {
            recv(inner.stop_rx) -> _ => return false,
            recv(changes) -> r => {
                if r.is_err() {
                    return true;
                }
                quiet_from = Instant::now();
            }
            default(due - now) => return true,
        }
    }
}
