//! Events you pull: `p2p_event`, `p2p_peer_next_event()`, `p2p_peer_event_fd()`, and
//! the calls that answer through events (`p2p_peer_chat_async()`).
//!
//! A peer configured with `p2p_peer_config_set_event_queue()` reports everything
//! through its queue and calls none of its callbacks. The queue itself (and its
//! overflow rule) is p2pcore's `peer::events`; this module turns its events into
//! `p2p_event`s, with the chat handles C holds.

use crate::callback::{Owner, Scope};
use crate::chat::{new_chat, p2p_chat, p2p_chat_closed_by, p2p_chat_request, ChatTable};
use crate::panic;
use crate::peer::{describe, p2p_path, p2p_peer, p2p_peer_event_kind};
use crate::status::{p2p_status, FfiError};
use crate::strings::{arg_out, arg_ref, arg_str, c_string, owned, put};
use crate::transfer::{p2p_transfer, TransferTable};
use crate::userdata::UserData;
use p2pcore::peer::{ChatClosedBy, ChatId, Event, PeerEvent};
use std::ffi::{c_char, c_void};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The answer to `p2p_peer_chat_async()` request `request_id` for a peer with
/// callbacks (`p2p_peer_config_on_chat_opened()`): `status` is `P2P_OK` and `chat` a
/// new handle owned by the callee (free it with `p2p_chat_free()`), or `status` says
/// why not (`P2P_CANCELLED` after `p2p_peer_chat_cancel()`), `chat` is NULL and
/// `message` (valid only during the call) the text. `request_user_data` is the one
/// given to `p2p_peer_chat_async()` (also set as the chat's user data). Called on a
/// library thread; for a cancel, on the thread calling `p2p_peer_chat_cancel()` before
/// it returns.
pub type p2p_chat_opened_cb = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        request_id: u64,
        request_user_data: *mut c_void,
        status: p2p_status,
        chat: *mut p2p_chat,
        message: *const c_char,
    ),
>;

/// The hook that turns `chat_async` answers into `p2p_chat_opened_cb` calls.
pub(crate) fn opened_hook(
    cb: unsafe extern "C" fn(
        *mut c_void,
        u64,
        *mut c_void,
        p2p_status,
        *mut p2p_chat,
        *const c_char,
    ),
    ud: UserData,
    peer_id: u64,
    chats: Arc<ChatTable>,
) -> impl Fn(u64, &str, p2pcore::Result<p2pcore::peer::Chat>) + Send + Sync + 'static {
    move |request, _user, result| {
        let request_ud = chats
            .async_user_data
            .lock()
            .get(&request)
            .map_or(std::ptr::null_mut(), |u| u.ptr());
        let held = result.as_ref().ok().map(p2pcore::peer::Chat::id);
        // Its callbacks wait until this one has returned.
        let _holding = crate::chat::Holding::start(&chats, held);
        let (status, chat, message) = match result {
            Ok(chat) => {
                let id = chat.id();
                let handle = new_chat(&chats, chat);
                if let Some(h) = chats.handles.lock().get(&id) {
                    h.user_data.store(request_ud, Ordering::Release);
                }
                (p2p_status::P2P_OK, handle, c_string(""))
            }
            Err(e) => {
                let f = FfiError::from(&e);
                (f.status, std::ptr::null_mut(), c_string(&f.message))
            }
        };
        // Only now, the chat listed: its callbacks waiting for a handle may run.
        chats.async_user_data.lock().remove(&request);
        chats.listed();
        let _scope = Scope::enter(Owner::Peer(peer_id));
        // SAFETY: the caller's callback, called as documented; it owns `chat`.
        unsafe {
            cb(
                ud.ptr(),
                request,
                request_ud,
                status,
                chat,
                message.as_ptr(),
            )
        }
    }
}

/// What a `p2p_event` reports (its `kind`).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum p2p_event_kind {
    /// Nothing (a zeroed or freed event).
    P2P_EV_NONE = 0,
    /// Someone asks to chat: `request` is a new handle owned by the application, as
    /// with `p2p_chat_request_cb` (answer it, then `p2p_chat_request_free()` it);
    /// `from` is who asks.
    P2P_EV_CHAT_REQUEST = 1,
    /// The answer to `p2p_peer_chat_async()` number `id`: `status` is `P2P_OK` and
    /// `chat` a new handle owned by the application (free it with `p2p_chat_free()`),
    /// or `status` says why not (`P2P_CANCELLED` after `p2p_peer_chat_cancel()`),
    /// `text` the message and `chat` NULL. `user_data` is the one given to
    /// `p2p_peer_chat_async()` (also set as the new chat's user data); `from` is who
    /// was asked.
    P2P_EV_CHAT_OPENED = 2,
    /// A message arrived in chat `id`: `from` sent `text` (`text_len` bytes of UTF-8
    /// plus a NUL; it may contain NUL bytes). `chat` and `user_data` as below.
    P2P_EV_CHAT_MESSAGE = 3,
    /// Chat `id` ended (once per chat): `from` is the other side, `closed_by` who ended
    /// it. `chat` and `user_data` as below.
    P2P_EV_CHAT_CLOSED = 4,
    /// Download `id` progressed: `received` of `total` bytes (coalesced: the newest).
    P2P_EV_TRANSFER_PROGRESS = 5,
    /// Download `id` finished and was verified; `text` is the file's path.
    P2P_EV_TRANSFER_DONE = 6,
    /// Download `id` failed: `status` (`P2P_CANCELLED` when cancelled) and `text`.
    P2P_EV_TRANSFER_FAILED = 7,
    /// A background event: `peer_event` says which, `text` describes it (the same text
    /// `p2p_peer_event_cb` gets).
    P2P_EV_PEER = 8,
    /// Someone offers a file: `id` is the offer's id (answer it with
    /// `p2p_peer_accept_offer()` or `p2p_peer_decline_offer()` within the chat-answer
    /// timeout), `from` the sender (always a user who proved its key), `text` the file's
    /// name and `total` its size in bytes. Never dropped by the queue's overflow rule.
    P2P_EV_FILE_OFFERED = 9,
    /// The answer to `p2p_peer_offer_file_async()` number `id`: `status` is `P2P_OK`
    /// and `transfer` a new handle owned by the application (the outgoing transfer;
    /// free it with `p2p_transfer_free()`), or `status` says why not (`P2P_DECLINED`,
    /// `P2P_TIMEOUT`, `P2P_CANCELLED` after `p2p_peer_offer_cancel()`...), `text` the
    /// message and `transfer` NULL. `user_data` is the one given to
    /// `p2p_peer_offer_file_async()` (also set as the transfer's user data); `from` is
    /// who was offered the file. It comes before any event of that transfer.
    P2P_EV_OFFER_ANSWERED = 10,
}

/// One event, filled by `p2p_peer_next_event()` and released by `p2p_event_free()`.
/// Fields a kind does not use are 0 / NULL.
///
/// Ownership: `text` and `from` belong to the event (freed by `p2p_event_free()`).
/// `request` (`P2P_EV_CHAT_REQUEST`) and `chat` in `P2P_EV_CHAT_OPENED` are new handles
/// the application owns (`p2p_event_free()` does not free them). `chat` in
/// `P2P_EV_CHAT_MESSAGE` / `P2P_EV_CHAT_CLOSED` is **borrowed**: the handle the
/// application already holds for that chat (from `p2p_chat_request_accept()`,
/// `p2p_peer_chat()` or a `P2P_EV_CHAT_OPENED` event), valid until the application
/// frees it; NULL if it was freed before the event was taken. No message or close of
/// a chat is handed out before the call that returns its handle has returned.
#[repr(C)]
pub struct p2p_event {
    /// What happened; `P2P_EV_NONE` once freed.
    pub kind: p2p_event_kind,
    /// The chat id (chat events), transfer id (transfer events) or request number
    /// (`P2P_EV_CHAT_OPENED`).
    pub id: u64,
    /// `P2P_EV_CHAT_OPENED`, `P2P_EV_TRANSFER_FAILED`: the outcome (else `P2P_OK`).
    pub status: p2p_status,
    /// `P2P_EV_CHAT_REQUEST`: the request, owned by the application.
    pub request: *mut p2p_chat_request,
    /// Chat events: the chat (owned in `P2P_EV_CHAT_OPENED`, borrowed otherwise).
    pub chat: *mut p2p_chat,
    /// The chat's user data (`p2p_chat_set_user_data()`), or the request's
    /// (`p2p_peer_chat_async()`).
    pub user_data: *mut c_void,
    /// Chat events: the other side's username (owned by the event).
    pub from: *mut c_char,
    /// The message, error text, file path or description (owned by the event);
    /// `text_len` bytes plus a NUL.
    pub text: *mut c_char,
    /// The length of `text` in bytes, without the NUL.
    pub text_len: usize,
    /// `P2P_EV_CHAT_CLOSED`: who ended the chat.
    pub closed_by: p2p_chat_closed_by,
    /// `P2P_EV_TRANSFER_PROGRESS`: bytes received so far.
    pub received: u64,
    /// `P2P_EV_TRANSFER_PROGRESS`: the file's size.
    pub total: u64,
    /// `P2P_EV_PEER`: which background event.
    pub peer_event: p2p_peer_event_kind,
    /// Transfer events: the transfer's handle, **borrowed**: the one the application
    /// holds (from `p2p_peer_fetch()`, `p2p_peer_fetch_to()`, `p2p_peer_accept_offer()`,
    /// `p2p_peer_offer_file()` or a `P2P_EV_OFFER_ANSWERED` event), valid until the
    /// application frees it; NULL if it was freed before the event was taken.
    /// `user_data` is then its `p2p_transfer_set_user_data()`. No event of a download,
    /// accepted offer or async offer is handed out before the call or event giving its
    /// handle; the sending side of the blocking `p2p_peer_offer_file()` may report
    /// before that call returned (NULL then: use `p2p_peer_offer_file_async()` to have
    /// the handle first). In `P2P_EV_OFFER_ANSWERED`: a new handle the application
    /// owns.
    pub transfer: *mut p2p_transfer,
    /// How the chat or download is connected: `P2P_EV_CHAT_REQUEST`,
    /// `P2P_EV_CHAT_OPENED` (on success), and `P2P_EV_PEER` with
    /// `P2P_EVENT_TRANSFER_STARTED`; `P2P_PATH_DIRECT` otherwise.
    pub path: p2p_path,
}

impl p2p_event {
    pub(crate) fn empty(kind: p2p_event_kind, id: u64) -> p2p_event {
        p2p_event {
            kind,
            id,
            status: p2p_status::P2P_OK,
            request: std::ptr::null_mut(),
            chat: std::ptr::null_mut(),
            user_data: std::ptr::null_mut(),
            from: std::ptr::null_mut(),
            text: std::ptr::null_mut(),
            text_len: 0,
            closed_by: p2p_chat_closed_by::P2P_CHAT_CLOSED_LOCAL,
            received: 0,
            total: 0,
            peer_event: p2p_peer_event_kind::P2P_EVENT_SHARE_SKIPPED,
            transfer: std::ptr::null_mut(),
            path: p2p_path::P2P_PATH_DIRECT,
        }
    }

    pub(crate) fn set_text(&mut self, text: &str) {
        self.set_bytes(text.as_bytes());
    }

    /// Length-counted with a NUL after it, so a message may carry NUL bytes.
    fn set_bytes(&mut self, text: &[u8]) {
        let mut bytes = Vec::with_capacity(text.len() + 1);
        bytes.extend_from_slice(text);
        bytes.push(0);
        self.text_len = text.len();
        self.text = Box::into_raw(bytes.into_boxed_slice()).cast();
    }
}

/// Waits (until `deadline`) while a call opening a chat has not returned the handle of
/// chat `id`; returns whether the event may be handed out now.
fn chat_ready(table: &ChatTable, id: ChatId, deadline: Option<Instant>) -> bool {
    let mut opening = table.opening.lock();
    let ready = |opening: usize| {
        opening == 0 || table.handles.lock().contains_key(&id) || table.gone.lock().contains(&id)
    };
    loop {
        if ready(*opening) {
            return true;
        }
        match deadline {
            Some(d) => {
                if table.opened.wait_until(&mut opening, d).timed_out() {
                    return ready(*opening);
                }
            }
            None => table.opened.wait(&mut opening),
        }
    }
}

fn closed_by(by: ChatClosedBy) -> p2p_chat_closed_by {
    match by {
        ChatClosedBy::Local => p2p_chat_closed_by::P2P_CHAT_CLOSED_LOCAL,
        ChatClosedBy::Remote => p2p_chat_closed_by::P2P_CHAT_CLOSED_REMOTE,
        ChatClosedBy::Lost => p2p_chat_closed_by::P2P_CHAT_CLOSED_LOST,
    }
}

/// A transfer event (progress, done, failed; anything else is `P2P_EV_NONE`) with the
/// handle C holds for that transfer and its user data.
pub(crate) fn transfer_event(table: &TransferTable, event: Event) -> p2p_event {
    use p2p_event_kind::*;
    let mut e = match event {
        Event::TransferProgress {
            transfer,
            received,
            total,
        } => {
            let mut e = p2p_event::empty(P2P_EV_TRANSFER_PROGRESS, transfer);
            e.received = received;
            e.total = total;
            e
        }
        Event::TransferDone { transfer, path } => {
            let mut e = p2p_event::empty(P2P_EV_TRANSFER_DONE, transfer);
            #[cfg(unix)]
            e.set_bytes(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()));
            #[cfg(not(unix))]
            e.set_bytes(path.to_string_lossy().as_bytes());
            e
        }
        Event::TransferFailed { transfer, error } => {
            let mut e = p2p_event::empty(P2P_EV_TRANSFER_FAILED, transfer);
            let f = FfiError::from(&error);
            e.status = f.status;
            e.set_text(&f.message);
            e
        }
        _ => return p2p_event::empty(P2P_EV_NONE, 0),
    };
    if let Some(h) = table.handle(e.id) {
        e.transfer = h.ptr;
        e.user_data = h.user_data.load(Ordering::Acquire);
    }
    e
}

/// A chat event (request, async answer, message, close; anything else is
/// `P2P_EV_NONE`) with the handle C holds for that chat and its user data, for the
/// queue and for `p2p_chat_event_cb`. A close is marked handed out.
pub(crate) fn chat_event(chats: &Arc<ChatTable>, event: Event) -> p2p_event {
    use p2p_event_kind::*;
    let chat_of = |e: &mut p2p_event, id: ChatId| {
        if let Some(h) = chats.handles.lock().get(&id) {
            e.chat = h.ptr;
            e.user_data = h.user_data.load(Ordering::Acquire);
        }
    };
    match event {
        Event::ChatRequest(request) => {
            let mut e = p2p_event::empty(P2P_EV_CHAT_REQUEST, 0);
            e.from = owned(request.from());
            e.path = request.path().into();
            e.request = Box::into_raw(Box::new(p2p_chat_request::new(request, chats.clone())));
            e
        }
        Event::ChatOpened {
            request,
            user,
            result,
        } => {
            let mut e = p2p_event::empty(P2P_EV_CHAT_OPENED, request);
            e.from = owned(&user);
            let ud = chats.async_user_data.lock().get(&request).copied();
            e.user_data = ud.map_or(std::ptr::null_mut(), UserData::ptr);
            match result {
                Ok(chat) => {
                    let id = chat.id();
                    e.path = chat.path().into();
                    e.chat = new_chat(chats, chat);
                    if let Some(h) = chats.handles.lock().get(&id) {
                        h.user_data.store(e.user_data, Ordering::Release);
                    }
                }
                Err(err) => {
                    let f = FfiError::from(&err);
                    e.status = f.status;
                    e.set_text(&f.message);
                }
            }
            // Only now, the chat listed: callbacks waiting for a handle may run.
            chats.async_user_data.lock().remove(&request);
            chats.listed();
            e
        }
        Event::ChatMessage { chat, from, text } => {
            let mut e = p2p_event::empty(P2P_EV_CHAT_MESSAGE, chat);
            chat_of(&mut e, chat);
            e.from = owned(&from);
            e.set_text(&text);
            e
        }
        Event::ChatClosed { chat, peer, by } => {
            // The chat's connection is released now (the callback mode's hook does
            // it as the chat ends).
            chats.ended(chat);
            let mut e = p2p_event::empty(P2P_EV_CHAT_CLOSED, chat);
            chat_of(&mut e, chat);
            chats.mark_closed(chat);
            e.from = owned(&peer);
            e.closed_by = closed_by(by);
            e
        }
        _ => p2p_event::empty(P2P_EV_NONE, 0),
    }
}

fn convert(handle: &p2p_peer, event: Event) -> p2p_event {
    use p2p_event_kind::*;
    match event {
        e @ (Event::ChatRequest(_)
        | Event::ChatOpened { .. }
        | Event::ChatMessage { .. }
        | Event::ChatClosed { .. }) => chat_event(&handle.chats, e),
        e @ (Event::TransferProgress { .. }
        | Event::TransferDone { .. }
        | Event::TransferFailed { .. }) => transfer_event(&handle.transfers, e),
        Event::OfferAnswered {
            request,
            user,
            result,
        } => {
            let mut e = p2p_event::empty(P2P_EV_OFFER_ANSWERED, request);
            e.from = owned(&user);
            let ud = handle.transfers.async_user_data.lock().remove(&request);
            e.user_data = ud.map_or(std::ptr::null_mut(), UserData::ptr);
            match result {
                Ok(t) => {
                    e.transfer = crate::transfer::new_transfer_in(
                        handle.id,
                        &handle.transfers,
                        t,
                        e.user_data,
                    );
                }
                Err(err) => {
                    let f = FfiError::from(&err);
                    e.status = f.status;
                    e.set_text(&f.message);
                }
            }
            e
        }
        Event::FileOffered(offer) => {
            let mut e = p2p_event::empty(P2P_EV_FILE_OFFERED, offer.id());
            e.from = owned(offer.from());
            e.set_text(offer.name());
            e.total = offer.size();
            e
        }
        Event::Peer(event) => {
            let (kind, detail) = describe(&event);
            let mut e = p2p_event::empty(P2P_EV_PEER, 0);
            e.peer_event = kind;
            if let PeerEvent::TransferStarted { path, .. } = &event {
                e.path = (*path).into();
            }
            e.set_text(&detail);
            e
        }
    }
}

fn free_str(p: &mut *mut c_char) {
    if !p.is_null() {
        // SAFETY: made by `owned` (CString::into_raw), freed once (then nulled).
        drop(unsafe { std::ffi::CString::from_raw(*p) });
        *p = std::ptr::null_mut();
    }
}

/// Take the next event of `peer` (configured with
/// `p2p_peer_config_set_event_queue()`), waiting at most `timeout_ms` milliseconds
/// (0: do not wait; negative: without limit). Returns `P2P_OK` with `*out` filled (free
/// it with `p2p_event_free()`), or `P2P_TIMEOUT` with `*out` untouched when none came
/// in time.
///
/// Any thread may call it; each event goes to one caller. A call waiting when another
/// thread exits the peer returns `P2P_SHUTDOWN` (within 0.1 s when waiting without
/// limit). It never returns a message
/// or close of a chat while another thread's `p2p_chat_request_accept()` or
/// `p2p_peer_chat()` that will return that chat's handle has not returned, nor an
/// event of a transfer while another thread's `p2p_peer_fetch()`,
/// `p2p_peer_fetch_to()` or `p2p_peer_accept_offer()` has not returned its handle:
/// such an event waits (within `timeout_ms`) at the head of the queue.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_ARGUMENT` (the peer has no event queue),
/// `P2P_SHUTDOWN` (the peer has exited: events still queued are dropped),
/// `P2P_TIMEOUT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_next_event(
    peer: *const p2p_peer,
    timeout_ms: i32,
    out: *mut p2p_event,
) -> p2p_status {
    panic::status(|| {
        let handle = arg_ref(peer, "peer")?;
        let out = arg_out(out, "out")?;
        let peer = handle.get()?;
        if !peer.has_event_queue() {
            return Err(FfiError::new(
                p2p_status::P2P_INVALID_ARGUMENT,
                "this peer has no event queue (see p2p_peer_config_set_event_queue)",
            ));
        }
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        let deadline = timeout.map(|t| Instant::now() + t);
        let none = || {
            FfiError::new(
                p2p_status::P2P_TIMEOUT,
                format!("no event within {timeout_ms} ms"),
            )
        };
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let Some(event) = peer.next_event(remaining) else {
            // Exited meanwhile (by another thread): say so rather than time out.
            handle.get()?;
            return Err(none());
        };
        let chat = match &event {
            Event::ChatMessage { chat, .. } | Event::ChatClosed { chat, .. } => Some(*chat),
            _ => None,
        };
        if let Some(id) = chat {
            if !chat_ready(&handle.chats, id, deadline) {
                peer.put_back_event(event);
                return Err(none());
            }
        }
        let transfer = match &event {
            Event::TransferProgress { transfer, .. }
            | Event::TransferDone { transfer, .. }
            | Event::TransferFailed { transfer, .. } => Some(*transfer),
            _ => None,
        };
        if let Some(id) = transfer {
            if !handle.transfers.ready(id, deadline) {
                peer.put_back_event(event);
                return Err(none());
            }
        }
        put(out, convert(handle, event));
        Ok(())
    })
}

/// Release what `event` owns (`text`, `from`) and zero it (kind `P2P_EV_NONE`);
/// handles it carried are not touched (see `p2p_event`). NULL, a zeroed and an already
/// freed event are no-ops.
#[no_mangle]
pub unsafe extern "C" fn p2p_event_free(event: *mut p2p_event) {
    panic::void(|| {
        let Some(e) = event.as_mut() else {
            return;
        };
        if e.kind == p2p_event_kind::P2P_EV_NONE {
            return;
        }
        free_str(&mut e.from);
        if !e.text.is_null() {
            let len = e.text_len + 1;
            // SAFETY: made by `set_text` (a boxed slice of `text_len + 1` bytes).
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                e.text.cast::<u8>(),
                len,
            )));
        }
        std::ptr::write(e, p2p_event::empty(p2p_event_kind::P2P_EV_NONE, 0));
    })
}

/// A descriptor for the application's main loop (poll/epoll/select, GLib, Qt): it is
/// readable exactly while events wait in `peer`'s queue, and stops being readable when
/// `p2p_peer_next_event()` takes the last one (level-triggered). So: poll it for
/// reading, then take events until `P2P_TIMEOUT` (a `timeout_ms` of 0), or one per
/// wake-up. It is an eventfd on Linux, a pipe elsewhere; it belongs to the peer: never
/// read, write or close it. It is valid until the peer exits (`p2p_peer_exit()` or
/// `p2p_peer_free()`) and may be closed from then on: take it out of the main loop
/// before. (While an event waits
/// for another thread's accept, as `p2p_peer_next_event()` says, it stays readable.)
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_ARGUMENT` (no event queue),
/// `P2P_SHUTDOWN`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_event_fd(peer: *const p2p_peer, out: *mut i32) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?.get()?;
        let out = arg_out(out, "out")?;
        #[cfg(unix)]
        let fd = peer.event_fd();
        #[cfg(not(unix))]
        let fd: Option<i32> = None;
        let fd = fd.ok_or_else(|| {
            FfiError::new(
                p2p_status::P2P_INVALID_ARGUMENT,
                "this peer has no event queue (see p2p_peer_config_set_event_queue)",
            )
        })?;
        put(out, fd);
        Ok(())
    })
}

/// Ask `user` for a chat without waiting: returns at once with `*request_id` set; the
/// answer comes as a `P2P_EV_CHAT_OPENED` event with that id, carrying `user_data`
/// (never dereferenced) and, on success, the new chat handle; for a peer with
/// callbacks, through its `p2p_chat_opened_cb` instead (or, without one, its
/// `p2p_chat_event_cb` as that event). Needs one of these.
///
/// Errors: `P2P_NULL_ARGUMENT` (peer, user, request_id; `user_data` may be NULL),
/// `P2P_INVALID_UTF8`, `P2P_INVALID_ARGUMENT` (neither an event queue nor a
/// chat-opened or chat-event callback), `P2P_SHUTDOWN`,
/// `P2P_IO` (no thread could be started). Everything else (`P2P_USER_NOT_FOUND`,
/// `P2P_DECLINED`, `P2P_TIMEOUT`... as `p2p_peer_chat()`) comes in the event.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_chat_async(
    peer: *const p2p_peer,
    user: *const c_char,
    user_data: *mut c_void,
    request_id: *mut u64,
) -> p2p_status {
    panic::status(|| {
        let handle = arg_ref(peer, "peer")?;
        let user = arg_str(user, "user")?;
        let out = arg_out(request_id, "request_id")?;
        let peer = handle.get()?;
        let id =
            crate::userdata::start_listed(&handle.chats.async_user_data, user_data, |register| {
                peer.chat_async_with(user, register)
            })?;
        put(out, id);
        Ok(())
    })
}

/// Cancel `p2p_peer_chat_async()` request `request_id`: returns at once; its answer is
/// a `P2P_EV_CHAT_OPENED` event with `P2P_CANCELLED` (with callbacks: the
/// `p2p_chat_opened_cb` is called with it, on this thread, before this returns). If
/// the other side accepts later, that chat is closed at once (with an event queue,
/// none of its events is queued).
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_SHUTDOWN`, `P2P_INVALID_ARGUMENT` (no such request
/// pending: already answered, or unknown).
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_chat_cancel(
    peer: *const p2p_peer,
    request_id: u64,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?.get()?;
        if peer.chat_cancel(request_id) {
            Ok(())
        } else {
            Err(FfiError::new(
                p2p_status::P2P_INVALID_ARGUMENT,
                format!("no chat request {request_id} is pending"),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{ChatHandle, Opening};
    use std::sync::atomic::AtomicPtr;

    /// An event of a chat without a handle waits while a call opening a chat has not
    /// returned, up to the deadline; it goes out as soon as the handle is listed and the
    /// call returned; with no call opening a chat it goes out at once (handle freed).
    #[test]
    fn chat_events_wait_for_the_accept_that_returns_the_handle() {
        let table = Arc::new(ChatTable::default());
        assert!(chat_ready(&table, 5, Some(Instant::now())));

        let opening = Opening::start(&table);
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(
            !chat_ready(&table, 5, Some(soon)),
            "handed out before the accept returned"
        );

        let t = table.clone();
        let accept = std::thread::spawn(move || {
            // Another accept, returning while the first call is still opening.
            let _accepting = Opening::start(&t);
            std::thread::sleep(Duration::from_millis(100));
            t.handles.lock().insert(
                5,
                ChatHandle {
                    ptr: std::ptr::null_mut(),
                    user_data: Arc::new(AtomicPtr::new(std::ptr::null_mut())),
                    closed: false,
                },
            );
        });
        // Listed and returned by the other accept: ready while the first still opens.
        assert!(chat_ready(
            &table,
            5,
            Some(Instant::now() + Duration::from_secs(10))
        ));
        accept.join().unwrap();
        // A chat whose handle was freed: at once.
        table.gone.lock().insert(7);
        assert!(chat_ready(&table, 7, Some(Instant::now())));
        // Another chat's event waits until the opening call has returned.
        let t = table.clone();
        let waiter = std::thread::spawn(move || chat_ready(&t, 6, None));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished());
        drop(opening);
        assert!(waiter.join().unwrap());
    }
}
