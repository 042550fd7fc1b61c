//! `p2p_transfer`: downloads started from C, their progress, waiting and cancelling.

use crate::callback;
use crate::panic;
use crate::peer::p2p_peer;
use crate::status::{p2p_status, FfiError};
use crate::strings::{arg_out, arg_ref, arg_str, owned_path, put, put_ids};
use p2pcore::peer::{Transfer, TransferId};
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

/// A download in progress or finished. Opaque; made by `p2p_peer_fetch()`, freed by
/// `p2p_transfer_free()`. It may be used from any thread, also after its peer exited
/// (the download then ends with `P2P_CANCELLED`).
pub struct p2p_transfer {
    pub(crate) transfer: Transfer,
    /// The id of the peer that started it (download threads are marked with it).
    pub(crate) peer: u64,
    /// `p2p_transfer_set_user_data()`: shared with the peer's table, for events.
    user_data: Arc<AtomicPtr<c_void>>,
    /// The peer's table of transfer handles (left by `p2p_transfer_free()`).
    table: Weak<TransferTable>,
}

/// The transfer handles C holds, by transfer id, so transfer events can carry the
/// handle and its user data (as chat events carry the chat's).
#[derive(Default)]
pub(crate) struct TransferTable {
    pub(crate) handles: Mutex<HashMap<TransferId, TransferHandle>>,
    /// Calls that are starting a transfer (fetch, accepting an offer) and have not yet
    /// returned its handle: events of a transfer without a handle wait for them.
    opening: Mutex<usize>,
    /// Signalled when `opening` drops.
    opened: Condvar,
    /// The user data of each pending `p2p_peer_offer_file_async()` request.
    pub(crate) async_user_data: Mutex<HashMap<u64, crate::userdata::UserData>>,
}

/// What events need of a transfer handle C holds.
#[derive(Clone)]
pub(crate) struct TransferHandle {
    pub(crate) ptr: *mut p2p_transfer,
    pub(crate) user_data: Arc<AtomicPtr<c_void>>,
}

// SAFETY: the pointer is only handed back to C (in events), never dereferenced here.
unsafe impl Send for TransferHandle {}

/// Counts a call that is starting a transfer until its handle has been returned.
pub(crate) struct Opening<'a>(&'a TransferTable);

impl<'a> Opening<'a> {
    pub(crate) fn start(table: &'a TransferTable) -> Opening<'a> {
        *table.opening.lock() += 1;
        Opening(table)
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        *self.0.opening.lock() -= 1;
        self.0.opened.notify_all();
    }
}

impl TransferTable {
    /// The handle C holds for transfer `id`, if any.
    pub(crate) fn handle(&self, id: TransferId) -> Option<TransferHandle> {
        self.handles.lock().get(&id).cloned()
    }

    /// Waits (until `deadline`; `None`: without limit) while a call starting a
    /// transfer has not returned and transfer `id` has no handle; whether its event
    /// may be handed out now.
    pub(crate) fn ready(&self, id: TransferId, deadline: Option<Instant>) -> bool {
        let mut opening = self.opening.lock();
        let ready = |opening: usize| opening == 0 || self.handles.lock().contains_key(&id);
        loop {
            if ready(*opening) {
                return true;
            }
            match deadline {
                Some(d) => {
                    if self.opened.wait_until(&mut opening, d).timed_out() {
                        return ready(*opening);
                    }
                }
                None => self.opened.wait(&mut opening),
            }
        }
    }
}

/// A new handle for `transfer` of `peer`, listed in its table (owned by the caller).
pub(crate) fn new_transfer(peer: &p2p_peer, transfer: Transfer) -> *mut p2p_transfer {
    new_transfer_in(peer.id, &peer.transfers, transfer, std::ptr::null_mut())
}

/// A new handle for `transfer` of peer `peer_id` with `user_data`, listed in `table`
/// (owned by the caller).
pub(crate) fn new_transfer_in(
    peer_id: u64,
    table: &Arc<TransferTable>,
    transfer: Transfer,
    user_data: *mut c_void,
) -> *mut p2p_transfer {
    let id = transfer.id();
    let user_data = Arc::new(AtomicPtr::new(user_data));
    let ptr = Box::into_raw(Box::new(p2p_transfer {
        transfer,
        peer: peer_id,
        user_data: user_data.clone(),
        table: Arc::downgrade(table),
    }));
    table
        .handles
        .lock()
        .insert(id, TransferHandle { ptr, user_data });
    ptr
}

/// Start downloading `file` from `user` in the background, into the peer's download
/// directory (never overwriting: an existing file fails with `P2P_ALREADY_EXISTS`; a
/// partial download left by a cancelled one is resumed). On success `*out` is the
/// transfer, owned by the caller (free it with `p2p_transfer_free()`); progress, done
/// and failed callbacks then run on the download's thread.
///
/// Errors (checked before starting): `P2P_NULL_ARGUMENT`, `P2P_INVALID_UTF8`,
/// `P2P_INVALID_ARGUMENT` (a filename that is not a plain name), `P2P_ALREADY_EXISTS`,
/// `P2P_BUSY` (a download of the same file into the same place is running),
/// `P2P_INVALID_USERNAME`, `P2P_USER_NOT_FOUND`, `P2P_SHUTDOWN`, `P2P_IO`,
/// `P2P_TIMEOUT`, `P2P_CLOSED`, `P2P_REGISTRY`, `P2P_PROTOCOL` (asking the registry
/// where `user` is),
/// `P2P_KEY_CHANGED` (the key the registry lists for `user` differs from the one pinned
/// for that name: see `p2p_peer_accept_user_key()`; or, reconnecting, the registry's
/// key had changed), `P2P_DENIED` (`user` is unverified and this peer refuses those;
/// or, reconnecting, the registry no longer secured its link). Later failures
/// (`P2P_FILE_NOT_FOUND`, `P2P_HASH_MISMATCH`, `P2P_KEY_CHANGED`...) come from
/// `p2p_transfer_wait()` and the failed callback.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_fetch(
    peer: *const p2p_peer,
    user: *const c_char,
    file: *const c_char,
    out: *mut *mut p2p_transfer,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?;
        let user = arg_str(user, "user")?;
        let file = arg_str(file, "file")?;
        let out = arg_out(out, "out")?;
        let _opening = Opening::start(&peer.transfers);
        let transfer = peer.get()?.fetch(user, file)?;
        put(out, new_transfer(peer, transfer));
        Ok(())
    })
}

/// This download's id: the `transfer_id` its callbacks receive.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_transfer_id(
    transfer: *const p2p_transfer,
    out: *mut u64,
) -> p2p_status {
    panic::status(|| {
        let transfer = arg_ref(transfer, "transfer")?;
        put(arg_out(out, "out")?, transfer.transfer.id());
        Ok(())
    })
}

/// Bytes received so far and the file's total size (0 until the other peer answered).
/// Either out-pointer may be NULL if not wanted.
///
/// Errors: `P2P_NULL_ARGUMENT` (transfer).
#[no_mangle]
pub unsafe extern "C" fn p2p_transfer_progress(
    transfer: *const p2p_transfer,
    received_out: *mut u64,
    total_out: *mut u64,
) -> p2p_status {
    panic::status(|| {
        let transfer = arg_ref(transfer, "transfer")?;
        let (received, total) = transfer.transfer.progress();
        if let Some(out) = received_out.as_mut() {
            put(out, received);
        }
        if let Some(out) = total_out.as_mut() {
            put(out, total);
        }
        Ok(())
    })
}

/// Whether the download is checked against the sender's content hash: true for a
/// download from a p2pchat peer (a mismatch fails it with `P2P_HASH_MISMATCH`), false
/// for one from an original (C++) client, which sends no hash (the file is saved as
/// received). Known from the start; does not change.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_transfer_is_verified(
    transfer: *const p2p_transfer,
    out: *mut bool,
) -> p2p_status {
    panic::status(|| {
        let transfer = arg_ref(transfer, "transfer")?;
        put(arg_out(out, "out")?, transfer.transfer.is_verified());
        Ok(())
    })
}

/// Whether the file comes over a secured link: encrypted, and every byte
/// authenticated as the sender's (a byte altered on the way ends the download with an
/// error, never a damaged file). False for a plaintext download from an unverified
/// sender (an original client). Known from the start of the download.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_transfer_is_encrypted(
    transfer: *const p2p_transfer,
    out: *mut bool,
) -> p2p_status {
    panic::status(|| {
        let transfer = arg_ref(transfer, "transfer")?;
        put(arg_out(out, "out")?, transfer.transfer.is_encrypted());
        Ok(())
    })
}

/// How the download is connected: `P2P_PATH_DIRECT`, `P2P_PATH_REVERSE` (the sender
/// connected back), `P2P_PATH_PUNCHED` (both connected at once through their NATs)
/// or `P2P_PATH_RELAYED` (through a relay, which sees only ciphertext). Known once the download started (`P2P_EVENT_TRANSFER_STARTED`);
/// `P2P_PATH_DIRECT` before.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_transfer_path(
    transfer: *const p2p_transfer,
    out: *mut crate::peer::p2p_path,
) -> p2p_status {
    panic::status(|| {
        let transfer = arg_ref(transfer, "transfer")?;
        put(arg_out(out, "out")?, transfer.transfer.path().into());
        Ok(())
    })
}

/// Whether the download has ended, successfully or not (`p2p_transfer_wait()` then
/// returns at once).
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_transfer_is_finished(
    transfer: *const p2p_transfer,
    out: *mut bool,
) -> p2p_status {
    panic::status(|| {
        let transfer = arg_ref(transfer, "transfer")?;
        put(arg_out(out, "out")?, transfer.transfer.is_finished());
        Ok(())
    })
}

/// Block until the download ends and return its outcome: `P2P_OK` when the file was
/// received and verified (received only, for an unverified download: see
/// `p2p_transfer_is_verified()`), else why it failed. On success, if `path_out` is not NULL,
/// `*path_out` is a new string with the file's path (free it with `p2p_string_free()`).
/// May be called any number of times, from any thread but two kinds:
///
/// - the download's own thread, i.e. inside its progress, done or failed callback or
///   an event callback it runs (`P2P_EVENT_TRANSFER_STARTED`, a rescan's
///   `P2P_EVENT_SHARE_SKIPPED`): the download ends only after that callback returns;
/// - a registry's event callback: the download may need that registry to answer (it
///   re-registers the share after saving into it) before it ends.
///
/// There it returns `P2P_WOULD_DEADLOCK` at once (the done and failed callbacks
/// already carry the outcome; `p2p_transfer_is_finished()` never blocks). Inside any
/// other callback it blocks that callback's thread until the download ends.
///
/// Errors: `P2P_NULL_ARGUMENT` (transfer), `P2P_WOULD_DEADLOCK`, `P2P_CANCELLED`
/// (cancelled, or the peer exited), `P2P_FILE_NOT_FOUND`, `P2P_HASH_MISMATCH`,
/// `P2P_BUSY`, `P2P_REFUSED`, `P2P_ALREADY_EXISTS`, `P2P_KEY_CHANGED` (the user's key
/// differs from the one pinned: see `p2p_peer_accept_user_key()`), `P2P_DENIED` (the
/// other side is not the key the registry lists, or does not serve this peer, or it
/// is unverified and this peer refuses those), `P2P_TIMEOUT`, `P2P_IO` (also: a
/// record of the encrypted link failed its check), `P2P_PROTOCOL`.
#[no_mangle]
pub unsafe extern "C" fn p2p_transfer_wait(
    transfer: *const p2p_transfer,
    path_out: *mut *mut c_char,
) -> p2p_status {
    panic::status(|| {
        let transfer = arg_ref(transfer, "transfer")?;
        let id = transfer.transfer.id();
        if callback::is_download_thread(transfer.peer, id) {
            return Err(FfiError::would_deadlock(format!(
                "p2p_transfer_wait was called on the thread of transfer {id} itself (from \
                 its progress, done or failed callback or an event it emitted); the \
                 download ends only after that callback returns: take the outcome from \
                 the done/failed callback, or wait from another thread"
            )));
        }
        if callback::inside_any_registry() {
            return Err(FfiError::would_deadlock(format!(
                "p2p_transfer_wait (transfer {id}) was called from a registry event \
                 callback; the download may need that registry thread to answer before \
                 it ends: wait from another thread"
            )));
        }
        let path = transfer.transfer.wait()?;
        if let Some(out) = path_out.as_mut() {
            put(out, owned_path(&path));
        }
        Ok(())
    })
}

/// Stop the download (it then fails with `P2P_CANCELLED`). The partial file is kept,
/// so a later `p2p_peer_fetch()` of the same file resumes it. Cancelling a finished
/// download does nothing.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_transfer_cancel(transfer: *const p2p_transfer) -> p2p_status {
    panic::status(|| {
        arg_ref(transfer, "transfer")?.transfer.cancel();
        Ok(())
    })
}

/// Like `p2p_peer_fetch()`, saving the file as `dest_path` (NUL-terminated UTF-8,
/// borrowed for the call): an existing directory (the file keeps its name `file`
/// there) or the path of a new file in an existing directory. The same rules as
/// `p2p_peer_fetch()` hold: an existing destination is never overwritten
/// (`P2P_ALREADY_EXISTS`), the partial download lives next to the destination (hidden,
/// `.NAME.p2pchat-part`; a cancelled download resumes from it), and the file gets its
/// name only once received and verified.
///
/// Errors (checked before starting): `P2P_NULL_ARGUMENT`, `P2P_INVALID_UTF8`,
/// `P2P_INVALID_ARGUMENT` (`file` is not a plain name, or `dest_path` names no valid
/// file), `P2P_NOT_A_DIRECTORY` (the destination's directory does not exist),
/// `P2P_ALREADY_EXISTS`, `P2P_BUSY` (another download of the same destination is
/// running), `P2P_INVALID_USERNAME`, `P2P_USER_NOT_FOUND`, `P2P_SHUTDOWN`, `P2P_IO`,
/// `P2P_TIMEOUT`, `P2P_CLOSED`, `P2P_PROTOCOL`, `P2P_REGISTRY` (asking the registry
/// where `user` is), `P2P_KEY_CHANGED`, `P2P_DENIED` (as for `p2p_peer_fetch()`). Later
/// failures come from `p2p_transfer_wait()` and the failed callback.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_fetch_to(
    peer: *const p2p_peer,
    user: *const c_char,
    file: *const c_char,
    dest_path: *const c_char,
    out: *mut *mut p2p_transfer,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?;
        let user = arg_str(user, "user")?;
        let file = arg_str(file, "file")?;
        let dest = arg_str(dest_path, "dest_path")?;
        let out = arg_out(out, "out")?;
        let _opening = Opening::start(&peer.transfers);
        let transfer = peer.get()?.fetch_to(user, file, dest)?;
        put(out, new_transfer(peer, transfer));
        Ok(())
    })
}

/// Stop the download (it then fails with `P2P_CANCELLED`) and remove its partial file
/// and the partial's origin record, so a later fetch starts from 0 and nothing is
/// left on disk. A download that already failed (or was cancelled with
/// `p2p_transfer_cancel()`) loses its partial file too; a finished, successful one is
/// left alone. Returns at once: the partial goes when the download's thread has
/// stopped, at the latest by the time `p2p_transfer_wait()` returns.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_transfer_cancel_discard(transfer: *const p2p_transfer) -> p2p_status {
    panic::status(|| {
        arg_ref(transfer, "transfer")?.transfer.cancel_discard();
        Ok(())
    })
}

/// A download's progress, rate and estimated time left: see `p2p_transfer_stats()`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct p2p_transfer_statistics {
    /// Bytes received so far (a resumed partial file's included).
    pub bytes: u64,
    /// The file's size; 0 until the sender announced it (always 0 from an original
    /// client).
    pub total: u64,
    /// Bytes per second over the last few seconds; 0 before the first byte and once
    /// the download has ended.
    pub bytes_per_sec: f64,
    /// Estimated milliseconds left at that rate; -1 when unknown (no rate yet, or no
    /// total), 0 once the download has ended.
    pub eta_ms: i64,
}

/// Fill `*out` with the download's bytes, total, recent rate and estimated time left.
/// Never blocks; callable from any thread, callbacks included.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_transfer_stats(
    transfer: *const p2p_transfer,
    out: *mut p2p_transfer_statistics,
) -> p2p_status {
    panic::status(|| {
        let transfer = arg_ref(transfer, "transfer")?;
        let out = arg_out(out, "out")?;
        let s = transfer.transfer.stats();
        let eta_ms = match s.eta {
            Some(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            None => -1,
        };
        put(
            out,
            p2p_transfer_statistics {
                bytes: s.bytes,
                total: s.total,
                bytes_per_sec: s.bytes_per_sec,
                eta_ms,
            },
        );
        Ok(())
    })
}

/// The ids (`p2p_transfer_id()`) of the transfers of `peer` still running, oldest
/// first: downloads, and files sent or received after an offer
/// (`p2p_transfer_is_outgoing()` tells the sending ones). Writes at most `capacity` ids to `ids` (which may be NULL
/// when `capacity` is 0) and sets `*count_out` to how many there are (call again with
/// a larger array if that is more than `capacity`).
///
/// Errors: `P2P_NULL_ARGUMENT` (`peer`, `count_out`, or `ids` with a non-zero
/// `capacity`), `P2P_SHUTDOWN`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_transfers(
    peer: *const p2p_peer,
    ids: *mut u64,
    capacity: usize,
    count_out: *mut usize,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?;
        put_ids(ids, capacity, count_out, || {
            Ok(peer.get()?.transfers().iter().map(|t| t.id()).collect())
        })
    })
}

/// Free the handle. The download itself is not cancelled: it goes on in the background
/// (callbacks still run) until it ends or its peer exits. NULL is a no-op; freeing
/// twice is undefined behaviour (the caller's bug).
#[no_mangle]
pub unsafe extern "C" fn p2p_transfer_free(transfer: *mut p2p_transfer) {
    panic::void(|| {
        if !transfer.is_null() {
            let t = Box::from_raw(transfer);
            // No event carries this handle from now on.
            if let Some(table) = t.table.upgrade() {
                let mut handles = table.handles.lock();
                if handles
                    .get(&t.transfer.id())
                    .is_some_and(|h| h.ptr == transfer)
                {
                    handles.remove(&t.transfer.id());
                }
            }
        }
    })
}

/// Attach `user_data` to `transfer` (the library never dereferences it): events of
/// this transfer (`p2p_event.user_data`, in the queue and in the transfer-event
/// callback) carry it from now on. NULL clears it.
///
/// Errors: `P2P_NULL_ARGUMENT` (transfer).
#[no_mangle]
pub unsafe extern "C" fn p2p_transfer_set_user_data(
    transfer: *const p2p_transfer,
    user_data: *mut c_void,
) -> p2p_status {
    panic::status(|| {
        arg_ref(transfer, "transfer")?
            .user_data
            .store(user_data, Ordering::Release);
        Ok(())
    })
}

/// The user data attached to `transfer` (NULL if none, or if `transfer` is NULL).
#[no_mangle]
pub unsafe extern "C" fn p2p_transfer_get_user_data(transfer: *const p2p_transfer) -> *mut c_void {
    let mut out = std::ptr::null_mut();
    panic::void(|| {
        if let Some(t) = transfer.as_ref() {
            out = t.user_data.load(Ordering::Acquire);
        }
    });
    out
}

/// Whether this peer sends the file (`p2p_peer_offer_file()`, accepted): progress
/// then counts bytes sent, and `p2p_transfer_wait()` returns `P2P_OK` (with the path
/// of the file sent) once the recipient verified and stored it. False for a download
/// and for an accepted offer on the receiving side.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_transfer_is_outgoing(
    transfer: *const p2p_transfer,
    out: *mut bool,
) -> p2p_status {
    panic::status(|| {
        let transfer = arg_ref(transfer, "transfer")?;
        put(arg_out(out, "out")?, transfer.transfer.is_outgoing());
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A transfer event waits while a call starting a transfer has not returned and
    /// the transfer has no handle, up to the deadline; it goes out once the handle is
    /// listed, or once no call is starting one (a freed handle: at once).
    #[test]
    fn transfer_events_wait_for_the_call_that_returns_the_handle() {
        let table = Arc::new(TransferTable::default());
        assert!(table.ready(5, Some(Instant::now())));
        let opening = Opening::start(&table);
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(
            !table.ready(5, Some(soon)),
            "handed out before the call returned"
        );

        let t = table.clone();
        let waiter = std::thread::spawn(move || t.ready(5, None));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished());
        table.handles.lock().insert(
            5,
            TransferHandle {
                ptr: std::ptr::null_mut(),
                user_data: Arc::new(AtomicPtr::new(std::ptr::null_mut())),
            },
        );
        // Listed: ready at once, although the call has not returned yet.
        assert!(table.ready(5, Some(Instant::now())));
        // The waiter sees it on the next wake-up: the call returning.
        drop(opening);
        assert!(waiter.join().unwrap());
        assert!(table.ready(6, Some(Instant::now())));
    }
}
