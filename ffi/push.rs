//! File push from C: `p2p_peer_offer_file()` on the sending side; on the receiving
//! side the offer arrives as a `P2P_EV_FILE_OFFERED` event (or the
//! `p2p_file_offer_cb` callback) and is answered by id with `p2p_peer_accept_offer()`
//! or `p2p_peer_decline_offer()`. Also the callback mode's transfer events, which carry
//! the transfer's handle and user data (`p2p_transfer_event_cb`).

use crate::callback::{Owner, Scope};
use crate::events::{p2p_event, p2p_event_free, transfer_event};
use crate::panic;
use crate::peer::{p2p_peer, Callbacks};
use crate::status::{p2p_status, FfiError};
use crate::strings::{arg_out, arg_path_or_none, arg_ref, arg_str, c_string, put};
use crate::transfer::{new_transfer, p2p_transfer, Opening, TransferTable};
use p2pcore::peer::{Event, PeerBuilder};
use std::ffi::{c_char, c_void};
use std::sync::Arc;

/// Someone offers a file (callback mode; with an event queue it is a
/// `P2P_EV_FILE_OFFERED` event instead). `offer_id` answers it:
/// `p2p_peer_accept_offer()` or `p2p_peer_decline_offer()`, in the callback or later
/// from any thread, within the chat-answer timeout (then the library declines it).
/// `from` (a user who proved its key) and `name` (the file's name) are valid only
/// during the call; `size` is in bytes. Called on the library thread serving the
/// offer, which also receives the file once accepted.
pub type p2p_file_offer_cb = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        offer_id: u64,
        from: *const c_char,
        name: *const c_char,
        size: u64,
    ),
>;

/// A transfer progressed, finished or failed (callback mode): `event` is a
/// `P2P_EV_TRANSFER_PROGRESS`, `P2P_EV_TRANSFER_DONE` or `P2P_EV_TRANSFER_FAILED`
/// event as `p2p_peer_next_event()` would give it, with `event->transfer` (the handle
/// the application holds, borrowed; NULL if freed, or not yet returned by the call
/// starting the transfer) and `event->user_data` (that handle's
/// `p2p_transfer_set_user_data()`). The event and everything in it are valid only
/// during the call: do not free it. Called on the transfer's thread, after the
/// `p2p_transfer_progress_cb` / `_done_cb` / `_failed_cb` of the same happening (the
/// three stay, with their ids, for compatibility); `p2p_transfer_wait()` on this
/// transfer from inside it returns `P2P_WOULD_DEADLOCK`.
pub type p2p_transfer_event_cb =
    Option<unsafe extern "C" fn(user_data: *mut c_void, event: *const p2p_event)>;

/// The answer to `p2p_peer_offer_file_async()` request `request_id` for a peer with
/// callbacks (`p2p_peer_config_on_offer_answered()`): `status` is `P2P_OK` and
/// `transfer` a new handle owned by the callee (the outgoing transfer; free it with
/// `p2p_transfer_free()`), or `status` says why not (`P2P_DECLINED`, `P2P_TIMEOUT`,
/// `P2P_CANCELLED` after `p2p_peer_offer_cancel()`...), `transfer` is NULL and
/// `message` (valid only during the call) the text. `request_user_data` is the one
/// given to `p2p_peer_offer_file_async()` (also set as the transfer's user data).
/// Called on a library thread before any byte is sent (so before any callback of the
/// transfer); for a cancel, on the thread calling `p2p_peer_offer_cancel()` before it
/// returns.
pub type p2p_offer_answered_cb = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        request_id: u64,
        request_user_data: *mut c_void,
        status: p2p_status,
        transfer: *mut p2p_transfer,
        message: *const c_char,
    ),
>;

/// Hand `event` to `cb` as a borrowed `p2p_event`, then release it.
fn call_transfer_event(
    cb: unsafe extern "C" fn(*mut c_void, *const p2p_event),
    cbs: Callbacks,
    table: &TransferTable,
    event: Event,
) {
    let mut e = transfer_event(table, event);
    // SAFETY: as documented for `p2p_transfer_event_cb`; `e` lives across the call.
    unsafe {
        cb(cbs.user_data.ptr(), &e);
        p2p_event_free(&mut e);
    }
}

/// Set the file-offer and transfer-event hooks of a peer with callbacks (peer `id`).
/// The transfer hooks replace the ones set for the older callbacks, and call both.
pub(crate) fn wire(
    mut b: PeerBuilder,
    cbs: Callbacks,
    id: u64,
    transfers: &Arc<TransferTable>,
) -> PeerBuilder {
    let ud = cbs.user_data;
    if let Some(cb) = cbs.file_offer {
        b = b.on_file_offer(move |offer| {
            let from = c_string(offer.from());
            let name = c_string(offer.name());
            let _scope = Scope::enter(Owner::Peer(id));
            // SAFETY: as documented for `p2p_file_offer_cb`.
            unsafe {
                cb(
                    ud.ptr(),
                    offer.id(),
                    from.as_ptr(),
                    name.as_ptr(),
                    offer.size(),
                )
            }
        });
    }
    if let Some(cb) = cbs.offer_answered {
        let table = transfers.clone();
        b = b.on_offer_answered(move |request, _user, result| {
            let request_ud = table
                .async_user_data
                .lock()
                .remove(&request)
                .map_or(std::ptr::null_mut(), |u| u.ptr());
            let (status, transfer, message) = match result {
                Ok(t) => (
                    p2p_status::P2P_OK,
                    crate::transfer::new_transfer_in(id, &table, t, request_ud),
                    c_string(""),
                ),
                Err(e) => {
                    let f = FfiError::from(&e);
                    (f.status, std::ptr::null_mut(), c_string(&f.message))
                }
            };
            let _scope = Scope::enter(Owner::Peer(id));
            // SAFETY: the caller's callback, called as documented; it owns `transfer`.
            unsafe {
                cb(
                    ud.ptr(),
                    request,
                    request_ud,
                    status,
                    transfer,
                    message.as_ptr(),
                )
            }
        });
    }
    let Some(cb) = cbs.transfer_event else {
        return b;
    };
    let table = transfers.clone();
    b = b.on_transfer_progress(move |transfer, received, total| {
        let _scope = Scope::enter_download(id, transfer);
        if let Some(old) = cbs.progress {
            // SAFETY: as documented for `p2p_transfer_progress_cb`.
            unsafe { old(ud.ptr(), transfer, received, total) }
        }
        let event = Event::TransferProgress {
            transfer,
            received,
            total,
        };
        call_transfer_event(cb, cbs, &table, event);
    });
    let table = transfers.clone();
    b = b.on_transfer_done(move |transfer, path| {
        let _scope = Scope::enter_download(id, transfer);
        if let Some(old) = cbs.done {
            let p = crate::strings::c_path(path);
            // SAFETY: as documented for `p2p_transfer_done_cb`.
            unsafe { old(ud.ptr(), transfer, p.as_ptr()) }
        }
        let event = Event::TransferDone {
            transfer,
            path: path.to_path_buf(),
        };
        call_transfer_event(cb, cbs, &table, event);
    });
    let table = transfers.clone();
    b.on_transfer_failed(move |transfer, err| {
        let _scope = Scope::enter_download(id, transfer);
        if let Some(old) = cbs.failed {
            let e = FfiError::from(err);
            let message = c_string(&e.message);
            // SAFETY: as documented for `p2p_transfer_failed_cb`.
            unsafe { old(ud.ptr(), transfer, e.status, message.as_ptr()) }
        }
        let event = Event::TransferFailed {
            transfer,
            error: err.clone(),
        };
        call_transfer_event(cb, cbs, &table, event);
    })
}

/// Offer the file at `path` (NUL-terminated UTF-8, borrowed for the call) to `user`,
/// and block until they accept, decline or let the offer expire: at most the
/// chat-answer timeout plus 5 s (`p2p_peer_config_set_chat_answer_timeout_ms()`), besides
/// connecting. Offers go only over a secured link, so `user` must be registered with
/// a key. The file is hashed first (the recipient verifies it). Once accepted, the
/// bytes go in the background (from where a partial file of the recipient's resumes);
/// `*out` is then the outgoing transfer, owned by the caller (free it with
/// `p2p_transfer_free()`): its progress counts bytes sent, and `p2p_transfer_wait()`
/// returns `P2P_OK` with `path` once the recipient verified and stored the file (later
/// failures: `P2P_HASH_MISMATCH` if the file changed since the offer, `P2P_REFUSED`,
/// `P2P_TIMEOUT`, `P2P_CANCELLED`, `P2P_IO`, `P2P_PROTOCOL`).
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_UTF8`, `P2P_INVALID_ARGUMENT` (not a
/// regular file, or a name that cannot be sent), `P2P_IO` (the file cannot be read;
/// connecting), `P2P_DECLINED` (declined, or `user` takes no files), `P2P_TIMEOUT` (no
/// answer in time), `P2P_BUSY` (too many offers pending there), `P2P_REFUSED` (too
/// large for the recipient), `P2P_DENIED` (`user` has no key, or refused this peer),
/// `P2P_INVALID_USERNAME`, `P2P_USER_NOT_FOUND`, `P2P_KEY_CHANGED`, `P2P_SHUTDOWN`,
/// `P2P_CLOSED`, `P2P_REGISTRY`, `P2P_PROTOCOL`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_offer_file(
    peer: *const p2p_peer,
    user: *const c_char,
    path: *const c_char,
    out: *mut *mut p2p_transfer,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?;
        let user = arg_str(user, "user")?;
        let path = arg_str(path, "path")?;
        let out = arg_out(out, "out")?;
        let transfer = peer.get()?.offer_file(user, path)?;
        put(out, new_transfer(peer, transfer));
        Ok(())
    })
}

/// Accept the pending file offer `offer_id` (from `P2P_EV_FILE_OFFERED` or
/// `p2p_file_offer_cb`), saving the file as `dest_path` (NUL-terminated UTF-8,
/// borrowed for the call): an existing directory (the file keeps its name) or a new
/// file's path in an existing directory; NULL: the download directory. Returns at once
/// with `*out` the receiving transfer, owned by the caller (free it with
/// `p2p_transfer_free()`); its progress starts at the resumed offset when a partial
/// file of the same content is there. The rules of a download hold: never
/// overwriting, verified against the offered hash before the file gets its name.
///
/// Errors (the offer stays pending: try another destination, or decline):
/// `P2P_NULL_ARGUMENT` (peer, out), `P2P_INVALID_UTF8`, `P2P_ALREADY_EXISTS` (also a
/// partial download of another file kept there), `P2P_NOT_A_DIRECTORY`, `P2P_BUSY`
/// (the same destination is being written), `P2P_TOO_LARGE` (over the maximum size or
/// the free space), `P2P_IO`. The offer not pending: `P2P_INVALID_ARGUMENT` (no such
/// offer waits: answered, expired or unknown; or `dest_path` names no valid file),
/// `P2P_TIMEOUT` (it expired meanwhile), `P2P_SHUTDOWN`. Later failures
/// (`P2P_HASH_MISMATCH`, `P2P_TIMEOUT`, `P2P_CLOSED`, `P2P_CANCELLED`...) come from
/// `p2p_transfer_wait()` and the failed callback.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_accept_offer(
    peer: *const p2p_peer,
    offer_id: u64,
    dest_path: *const c_char,
    out: *mut *mut p2p_transfer,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?;
        let dest = arg_path_or_none(dest_path, "dest_path")?;
        let out = arg_out(out, "out")?;
        let _opening = Opening::start(&peer.transfers);
        let transfer = peer.get()?.accept_offer(offer_id, dest.as_deref())?;
        put(out, new_transfer(peer, transfer));
        Ok(())
    })
}

/// Decline the pending file offer `offer_id`; the sender's `p2p_peer_offer_file()`
/// returns `P2P_DECLINED`.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN`, `P2P_INVALID_ARGUMENT` (no such offer
/// waits: answered, expired or unknown).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_decline_offer(
    peer: *const p2p_peer,
    offer_id: u64,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?.get()?;
        if peer.decline_offer(offer_id) {
            Ok(())
        } else {
            Err(FfiError::new(
                p2p_status::P2P_INVALID_ARGUMENT,
                format!("no file offer {offer_id} waits for an answer"),
            ))
        }
    })
}

/// Offer the file at `path` to `user` without waiting: returns at once with
/// `*request_id` set; the answer (as for `p2p_peer_offer_file()`) comes as a
/// `P2P_EV_OFFER_ANSWERED` event with that id, carrying `user_data` (never
/// dereferenced) and, once accepted, the new outgoing transfer handle, before any
/// event of that transfer; for a peer with callbacks, through its
/// `p2p_offer_answered_cb` instead. Needs one of the two.
///
/// Errors: `P2P_NULL_ARGUMENT` (peer, user, path, request_id; `user_data` may be
/// NULL), `P2P_INVALID_UTF8`, `P2P_INVALID_ARGUMENT` (neither an event queue nor an
/// offer-answered callback), `P2P_SHUTDOWN`, `P2P_IO` (no thread could be started).
/// Everything else (`P2P_DECLINED`, `P2P_TIMEOUT`, `P2P_USER_NOT_FOUND`... as
/// `p2p_peer_offer_file()`) comes in the answer.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_offer_file_async(
    peer: *const p2p_peer,
    user: *const c_char,
    path: *const c_char,
    user_data: *mut c_void,
    request_id: *mut u64,
) -> p2p_status {
    panic::status(|| {
        let handle = arg_ref(peer, "peer")?;
        let user = arg_str(user, "user")?;
        let path = arg_str(path, "path")?;
        let out = arg_out(request_id, "request_id")?;
        let peer = handle.get()?;
        let id = crate::userdata::start_listed(
            &handle.transfers.async_user_data,
            user_data,
            |register| peer.offer_file_async_with(user, path, register),
        )?;
        put(out, id);
        Ok(())
    })
}

/// Cancel `p2p_peer_offer_file_async()` request `request_id`: returns at once; its
/// answer is a `P2P_EV_OFFER_ANSWERED` event with `P2P_CANCELLED` (with callbacks: the
/// `p2p_offer_answered_cb` is called with it, on this thread, before this returns).
/// If the other side accepts later, nothing is sent (the recipient's transfer fails)
/// and no event of that transfer is queued.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN`, `P2P_INVALID_ARGUMENT` (no such request
/// pending: already answered, or unknown).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_offer_cancel(
    peer: *const p2p_peer,
    request_id: u64,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?.get()?;
        if peer.offer_cancel(request_id) {
            Ok(())
        } else {
            Err(FfiError::new(
                p2p_status::P2P_INVALID_ARGUMENT,
                format!("no file offer request {request_id} is pending"),
            ))
        }
    })
}
