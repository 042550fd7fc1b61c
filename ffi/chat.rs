//! `p2p_chat` and `p2p_chat_request`: opening, answering, using and ending chats
//! from C.

use crate::panic;
use crate::peer::p2p_path;
use crate::peer::p2p_peer;
use crate::status::{p2p_status, FfiError};
use crate::strings::{arg_out, arg_ref, arg_str, owned, put};
use crate::userdata::UserData;
use p2pcore::identity::PublicKey;
use p2pcore::peer::{Chat, ChatId, ChatRequest};
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Weak};

/// Who ended a chat (passed to `p2p_chat_closed_cb`).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum p2p_chat_closed_by {
    /// This side: `p2p_chat_close()`, `p2p_chat_free()`, or the peer exiting.
    P2P_CHAT_CLOSED_LOCAL = 0,
    /// The other side said goodbye (or, for an original client, closed the connection).
    P2P_CHAT_CLOSED_REMOTE = 1,
    /// The connection failed or the other side broke the protocol.
    P2P_CHAT_CLOSED_LOST = 2,
}

/// An open (or ended) chat. Opaque; made by `p2p_peer_chat()` or
/// `p2p_chat_request_accept()`, freed by `p2p_chat_free()`. It may be used from any
/// thread, also after its peer was freed (sending then fails with `P2P_CLOSED`).
///
/// Once the chat has ended, whoever ended it, the handle no longer holds the
/// connection: its socket is closed at once, and the handle keeps only the chat's id
/// and the other side's name until it is freed.
pub struct p2p_chat {
    id: ChatId,
    peer: String,
    /// Over a secured link (kept here: the slot empties when the chat ends).
    encrypted: bool,
    /// The other side proved it is `peer`.
    verified: bool,
    /// The other side's proven key (`None`: unverified).
    key: Option<PublicKey>,
    slot: Arc<ChatSlot>,
    /// How the link is connected (kept: the slot empties when the chat ends).
    path: p2p_path,
    /// `p2p_chat_set_user_data()`'s pointer, shared with the table's entry so events
    /// can carry it.
    user_data: Arc<AtomicPtr<c_void>>,
    /// The peer's chat table, where the handle is listed until freed.
    table: Weak<ChatTable>,
}

/// The live chat behind a handle; emptied when the chat ends, which drops the handle's
/// share of the connection.
struct ChatSlot {
    chat: Mutex<Option<Chat>>,
}

impl ChatSlot {
    /// The chat while it is open (a clone: calls on it keep it alive for their
    /// duration, even if the handle is freed from a callback they run).
    fn get(&self) -> Option<Chat> {
        self.chat.lock().clone()
    }

    fn release(&self) {
        // Dropped outside the lock.
        let chat = self.chat.lock().take();
        drop(chat);
    }
}

/// The chats of one peer that C holds handles for, by id, so the peer's chat-closed
/// hook can release each one's connection the moment the chat ends (by either side,
/// a failure, or the peer exiting), not when C gets round to freeing the handle.
#[derive(Default)]
pub(crate) struct ChatTable {
    live: Mutex<HashMap<ChatId, Weak<ChatSlot>>>,
    /// Every chat handle C holds (until `p2p_chat_free()`), for events to carry.
    pub(crate) handles: Mutex<HashMap<ChatId, ChatHandle>>,
    /// Calls that are opening a chat (accept, `p2p_peer_chat()`) and have not yet
    /// returned its handle: events of a chat without a handle wait for them.
    pub(crate) opening: Mutex<usize>,
    /// Signalled when `opening` drops.
    pub(crate) opened: Condvar,
    /// The user data of each pending `p2p_peer_chat_async()` request.
    pub(crate) async_user_data: Mutex<HashMap<u64, UserData>>,
    /// Chats whose handle was freed before their close was handed out in an event:
    /// their events go out at once (without a handle), never waiting for an accept.
    /// Each leaves when its close is handed out.
    pub(crate) gone: Mutex<std::collections::HashSet<ChatId>>,
    /// Callback mode: chats whose handle a `p2p_peer_chat_async()` answer's callback is
    /// handing over and has not yet returned: their callbacks wait for it.
    held: Mutex<std::collections::HashSet<ChatId>>,
}

/// What events need of a chat handle C holds.
#[derive(Clone)]
pub(crate) struct ChatHandle {
    pub(crate) ptr: *mut p2p_chat,
    pub(crate) user_data: Arc<AtomicPtr<c_void>>,
    /// Its close was handed out in an event.
    pub(crate) closed: bool,
}

// SAFETY: the pointer is only handed back to C (in events), never dereferenced here.
unsafe impl Send for ChatHandle {}

/// Counts a call that is opening a chat until its handle has been returned.
pub(crate) struct Opening<'a>(&'a ChatTable);

/// The longest a chat callback waits for the call returning its chat's handle: a
/// handle is listed moments after the chat opens, so this only bounds the unforeseen.
const HANDLE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

thread_local! {
    /// How many calls opening a chat run on this thread: a chat callback running on
    /// the very thread of such a call (a close while accepting) must not wait for it.
    static OPENING_HERE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl<'a> Opening<'a> {
    /// Count one call opening a chat of `table` until dropped.
    pub(crate) fn start(table: &'a ChatTable) -> Opening<'a> {
        *table.opening.lock() += 1;
        OPENING_HERE.with(|n| n.set(n.get() + 1));
        Opening(table)
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        OPENING_HERE.with(|n| n.set(n.get().saturating_sub(1)));
        *self.0.opening.lock() -= 1;
        self.0.opened.notify_all();
    }
}

/// Holds back the callbacks of chat `id` while the callback handing over its handle
/// (the answer to `p2p_peer_chat_async()`) runs on this thread.
pub(crate) struct Holding<'a>(&'a ChatTable, Option<ChatId>);

impl<'a> Holding<'a> {
    /// Hold chat `id` (if any) of `table` until dropped.
    pub(crate) fn start(table: &'a ChatTable, id: Option<ChatId>) -> Holding<'a> {
        if let Some(id) = id {
            table.held.lock().insert(id);
            OPENING_HERE.with(|n| n.set(n.get() + 1));
        }
        Holding(table, id)
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.1 {
            OPENING_HERE.with(|n| n.set(n.get().saturating_sub(1)));
            self.0.held.lock().remove(&id);
            self.0.listed();
        }
    }
}

impl ChatTable {
    /// Chat `id` has ended: release its handle's connection, if a handle has it.
    pub(crate) fn ended(&self, id: ChatId) {
        let slot = self.live.lock().remove(&id).and_then(|w| w.upgrade());
        if let Some(slot) = slot {
            slot.release();
        }
    }

    /// The close of chat `id` is being handed out (event or callback): its handle, if
    /// C still holds it, is marked so, else the chat leaves `gone`. Under the handles
    /// lock, so a `p2p_chat_free()` at the same moment cannot leave an entry behind.
    pub(crate) fn mark_closed(&self, id: ChatId) {
        let mut handles = self.handles.lock();
        match handles.get_mut(&id) {
            Some(h) => h.closed = true,
            None => {
                self.gone.lock().remove(&id);
            }
        }
    }

    /// Wake callbacks waiting in [`wait_for_handle`](Self::wait_for_handle) after a
    /// handle was listed outside an [`Opening`] (a `p2p_peer_chat_async()` answer).
    pub(crate) fn listed(&self) {
        let _opening = self.opening.lock();
        self.opened.notify_all();
    }

    /// Callback mode: wait until a callback of chat `id` may run, that is until the
    /// call returning its handle (for an async answer: its callback) has returned. While
    /// some call opening a chat
    /// (`p2p_chat_request_accept()`, `p2p_peer_chat()`) or some `p2p_peer_chat_async()`
    /// answer is pending, a chat C holds no handle for (and did not free) waits; the
    /// wait ends when its handle is listed or those calls return (each ends within its
    /// own timeout, and at once when the peer exits), and after [`HANDLE_WAIT`] at
    /// most, so no reader thread is held by a call that never returns a handle. Never
    /// waits on a thread that is itself opening a chat (it could not return first).
    pub(crate) fn wait_for_handle(&self, id: ChatId) {
        if OPENING_HERE.with(std::cell::Cell::get) > 0 {
            return;
        }
        let deadline = std::time::Instant::now() + HANDLE_WAIT;
        let mut opening = self.opening.lock();
        loop {
            if self.gone.lock().contains(&id) {
                return;
            }
            let waiting = *opening > 0 || !self.async_user_data.lock().is_empty();
            let ready = !waiting || self.handles.lock().contains_key(&id);
            if ready && !self.held.lock().contains(&id) {
                return;
            }
            if self.opened.wait_until(&mut opening, deadline).timed_out() {
                return;
            }
        }
    }
}

/// An incoming chat request, handed to the `p2p_chat_request_cb` callback. Opaque;
/// owned by the application from the callback on, freed by `p2p_chat_request_free()`.
pub struct p2p_chat_request {
    from: String,
    addr: String,
    /// The requester proved it is `from` (a secured link with the listed, pinned key).
    verified: bool,
    /// The requester's key proven by the handshake (`None`: a plaintext request).
    key: Option<PublicKey>,
    request: Mutex<Option<ChatRequest>>,
    /// How the request came.
    path: p2p_path,
    /// The receiving peer's chats, where an accepted chat is entered.
    chats: Arc<ChatTable>,
}

impl p2p_chat_request {
    pub(crate) fn new(request: ChatRequest, chats: Arc<ChatTable>) -> p2p_chat_request {
        p2p_chat_request {
            from: request.from().to_string(),
            addr: request.addr().to_string(),
            verified: request.is_verified(),
            key: request.key(),
            path: request.path().into(),
            request: Mutex::new(Some(request)),
            chats,
        }
    }

    fn take(&self) -> Result<ChatRequest, FfiError> {
        self.request.lock().take().ok_or_else(|| {
            FfiError::new(
                p2p_status::P2P_INVALID_ARGUMENT,
                format!("the chat request from {} was already answered", self.from),
            )
        })
    }
}

/// A handle for a newly opened chat of the peer whose chats `table` lists.
pub(crate) fn new_chat(table: &Arc<ChatTable>, chat: Chat) -> *mut p2p_chat {
    let id = chat.id();
    let slot = Arc::new(ChatSlot {
        chat: Mutex::new(Some(chat.clone())),
    });
    table.live.lock().insert(id, Arc::downgrade(&slot));
    // It may have ended before it was listed (the other side left at once): its
    // closed hook found nothing to release then, so release it now.
    if chat.is_closed() {
        table.ended(id);
    }
    let user_data = Arc::new(AtomicPtr::new(std::ptr::null_mut()));
    let ptr = Box::into_raw(Box::new(p2p_chat {
        id,
        peer: chat.peer().to_string(),
        encrypted: chat.is_encrypted(),
        verified: chat.is_verified(),
        key: chat.remote_key(),
        path: chat.path().into(),
        slot,
        user_data: user_data.clone(),
        table: Arc::downgrade(table),
    }));
    table.handles.lock().insert(
        id,
        ChatHandle {
            ptr,
            user_data,
            closed: false,
        },
    );
    ptr
}

impl p2p_chat {
    /// The open chat, or `P2P_CLOSED` once it has ended.
    fn open(&self) -> Result<Chat, FfiError> {
        self.slot
            .get()
            .ok_or_else(|| FfiError::from(p2pcore::Error::Closed))
    }
}

/// Ask `user` for a chat. Blocks until they accept, decline, or do not answer within
/// their chat-answer timeout (30 s by default). On success `*out` is the open chat,
/// owned by the caller (free it with `p2p_chat_free()`); messages then arrive through
/// the peer's `p2p_chat_message_cb` / `p2p_chat_event_cb` (or its event queue), none
/// before this call has returned.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_UTF8`, `P2P_INVALID_USERNAME`,
/// `P2P_USER_NOT_FOUND`, `P2P_DECLINED`, `P2P_TIMEOUT` (no answer in time, or an
/// original client closed the request untaken), `P2P_BUSY`, `P2P_REFUSED`,
/// `P2P_KEY_CHANGED` (`user`'s key differs from the one pinned for that name: see
/// `p2p_peer_accept_user_key()`; or, reconnecting, the registry's key had changed),
/// `P2P_DENIED` (the other side is not the key the registry lists for `user`, or
/// refuses this peer, or `user` is unverified and this peer refuses those; or,
/// reconnecting, the registry no longer secured its link), `P2P_SHUTDOWN`, `P2P_IO`,
/// `P2P_PROTOCOL`.
#[no_mangle]
pub unsafe extern "C" fn p2p_peer_chat(
    peer: *const p2p_peer,
    user: *const c_char,
    out: *mut *mut p2p_chat,
) -> p2p_status {
    panic::status(|| {
        let peer = arg_ref(peer, "peer")?;
        let user = arg_str(user, "user")?;
        let out = arg_out(out, "out")?;
        let _opening = Opening::start(&peer.chats);
        let chat = peer.get()?.chat(user)?;
        put(out, new_chat(&peer.chats, chat));
        Ok(())
    })
}

/// Send one message: `text` is NUL-terminated UTF-8 (borrowed for the call), up to
/// `p2p_max_chat_message_length()` bytes. Blocks at most 15 s if the other side does
/// not read (the chat then ends with `P2P_TIMEOUT`).
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_UTF8`, `P2P_CLOSED` (the chat has ended,
/// also after its peer exited), `P2P_TOO_LARGE`, `P2P_TIMEOUT`, `P2P_IO`.
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_send(chat: *const p2p_chat, text: *const c_char) -> p2p_status {
    panic::status(|| {
        let chat = arg_ref(chat, "chat")?;
        let text = arg_str(text, "text")?;
        chat.open()?.send(text)?;
        Ok(())
    })
}

/// As `p2p_chat_send()`, for a message of `len` bytes that need not be NUL-terminated
/// (and may contain NUL bytes); it must be UTF-8. `text` may be NULL when `len` is 0.
///
/// Errors: as `p2p_chat_send()`.
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_send_len(
    chat: *const p2p_chat,
    text: *const c_char,
    len: usize,
) -> p2p_status {
    panic::status(|| {
        let chat = arg_ref(chat, "chat")?;
        let bytes: &[u8] = if len == 0 {
            &[]
        } else if text.is_null() {
            return Err(FfiError::null("text"));
        } else {
            std::slice::from_raw_parts(text.cast(), len)
        };
        let text = std::str::from_utf8(bytes).map_err(|e| {
            FfiError::new(
                p2p_status::P2P_INVALID_UTF8,
                format!("text is not valid UTF-8: {e}"),
            )
        })?;
        chat.open()?.send(text)?;
        Ok(())
    })
}

/// This chat's id: the `chat_id` its callbacks receive.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_id(chat: *const p2p_chat, out: *mut u64) -> p2p_status {
    panic::status(|| {
        let chat = arg_ref(chat, "chat")?;
        put(arg_out(out, "out")?, chat.id);
        Ok(())
    })
}

/// The other side's username. On success `*out` is a new string; free it with
/// `p2p_string_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_peer_name(
    chat: *const p2p_chat,
    out: *mut *mut c_char,
) -> p2p_status {
    panic::status(|| {
        let chat = arg_ref(chat, "chat")?;
        put(arg_out(out, "out")?, owned(&chat.peer));
        Ok(())
    })
}

/// How the chat is connected: `P2P_PATH_DIRECT`, `P2P_PATH_REVERSE` (the callee
/// connected back), `P2P_PATH_PUNCHED` (both connected at once through their NATs)
/// or `P2P_PATH_RELAYED` (through a relay, which sees only ciphertext). Stays as it
/// was after the chat ended.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_path(chat: *const p2p_chat, out: *mut p2p_path) -> p2p_status {
    panic::status(|| {
        let chat = arg_ref(chat, "chat")?;
        put(arg_out(out, "out")?, chat.path);
        Ok(())
    })
}

/// How the chat request came: `P2P_PATH_DIRECT` (to this peer's listener),
/// `P2P_PATH_REVERSE` (this peer connected back at the registry's request),
/// `P2P_PATH_PUNCHED` (both connected at once through their NATs) or
/// `P2P_PATH_RELAYED` (through a relay; `p2p_chat_request_address()` is then the
/// relay's).
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_request_path(
    request: *const p2p_chat_request,
    out: *mut p2p_path,
) -> p2p_status {
    panic::status(|| {
        let request = arg_ref(request, "request")?;
        put(arg_out(out, "out")?, request.path);
        Ok(())
    })
}

/// Whether the chat runs over a secured link: every message encrypted and
/// authenticated. False for a plaintext chat with an unverified partner (an original
/// client, or a peer registered without a key). Stays as it was after the chat ended.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_is_encrypted(
    chat: *const p2p_chat,
    out: *mut bool,
) -> p2p_status {
    panic::status(|| {
        let chat = arg_ref(chat, "chat")?;
        put(arg_out(out, "out")?, chat.encrypted);
        Ok(())
    })
}

/// Whether the other side proved it is who the chat names (`p2p_chat_peer_name()`):
/// its key is the one the registry lists for that name and the one pinned for it.
/// False for an unverified partner. Stays as it was after the chat ended.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_is_verified(chat: *const p2p_chat, out: *mut bool) -> p2p_status {
    panic::status(|| {
        let chat = arg_ref(chat, "chat")?;
        put(arg_out(out, "out")?, chat.verified);
        Ok(())
    })
}

/// The fingerprint of the other side's key, proven by the secured link's handshake,
/// or `""` for an unverified partner. On success `*out` is a new string; free it with
/// `p2p_string_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_fingerprint(
    chat: *const p2p_chat,
    out: *mut *mut c_char,
) -> p2p_status {
    panic::status(|| {
        let chat = arg_ref(chat, "chat")?;
        put(arg_out(out, "out")?, owned_fingerprint(chat.key));
        Ok(())
    })
}

/// A key's fingerprint handed to C, `""` for none.
fn owned_fingerprint(key: Option<PublicKey>) -> *mut c_char {
    owned(&key.map(|k| k.fingerprint().to_string()).unwrap_or_default())
}

/// Whether the chat has ended (closed by either side, lost, or its peer exited).
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_is_closed(chat: *const p2p_chat, out: *mut bool) -> p2p_status {
    panic::status(|| {
        let chat = arg_ref(chat, "chat")?;
        let closed = chat.slot.get().is_none_or(|c| c.is_closed());
        put(arg_out(out, "out")?, closed);
        Ok(())
    })
}

/// End the chat; the other side is told. Idempotent: closing an ended chat succeeds.
/// The peer's `p2p_chat_closed_cb` runs on this thread if this call ended the chat.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_close(chat: *const p2p_chat) -> p2p_status {
    panic::status(|| {
        if let Some(open) = arg_ref(chat, "chat")?.slot.get() {
            open.close();
        }
        Ok(())
    })
}

/// Close the chat (as `p2p_chat_close()`) and free the handle. NULL is a no-op;
/// freeing twice is undefined behaviour (the caller's bug).
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_free(chat: *mut p2p_chat) {
    panic::void(|| {
        if !chat.is_null() {
            let chat = Box::from_raw(chat);
            // No event carries this handle from now on.
            if let Some(table) = chat.table.upgrade() {
                let mut handles = table.handles.lock();
                if handles.remove(&chat.id).is_some_and(|h| !h.closed) {
                    table.gone.lock().insert(chat.id);
                }
            }
            if let Some(open) = chat.slot.get() {
                open.close();
            }
        }
    })
}

/// Who asks to chat. On success `*out` is a new string; free it with
/// `p2p_string_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_request_from(
    request: *const p2p_chat_request,
    out: *mut *mut c_char,
) -> p2p_status {
    panic::status(|| {
        let request = arg_ref(request, "request")?;
        put(arg_out(out, "out")?, owned(&request.from));
        Ok(())
    })
}

/// Where the request comes from, as `"ip:port"`. On success `*out` is a new string;
/// free it with `p2p_string_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_request_address(
    request: *const p2p_chat_request,
    out: *mut *mut c_char,
) -> p2p_status {
    panic::status(|| {
        let request = arg_ref(request, "request")?;
        put(arg_out(out, "out")?, owned(&request.addr));
        Ok(())
    })
}

/// Whether the requester proved it is who it says (`p2p_chat_request_from()`): it
/// came over a secured link whose key is the one the registry lists for that name and
/// the one pinned for it. False for a plaintext request (an original client, or a peer
/// registered without a key), whose name nobody checked: show it as unverified.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_request_is_verified(
    request: *const p2p_chat_request,
    out: *mut bool,
) -> p2p_status {
    panic::status(|| {
        let request = arg_ref(request, "request")?;
        put(arg_out(out, "out")?, request.verified);
        Ok(())
    })
}

/// The fingerprint of the requester's key, proven by the secured link's handshake (to
/// show next to its name), or `""` for a plaintext request. On success `*out` is a new
/// string; free it with `p2p_string_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_request_fingerprint(
    request: *const p2p_chat_request,
    out: *mut *mut c_char,
) -> p2p_status {
    panic::status(|| {
        let request = arg_ref(request, "request")?;
        put(arg_out(out, "out")?, owned_fingerprint(request.key));
        Ok(())
    })
}

/// Accept the request, from inside the `p2p_chat_request_cb` callback or later from any
/// thread. On success `*out` is the open chat, owned by the caller (free it with
/// `p2p_chat_free()`). The request handle must still be freed with
/// `p2p_chat_request_free()`.
///
/// The chat is live before this returns, but none of its events or callbacks (message,
/// close) comes before this call has returned and stored `*out`: the chat's reader
/// thread waits for it.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_ARGUMENT` (already answered),
/// `P2P_TIMEOUT` (the request expired, or the peer exited meanwhile), `P2P_SHUTDOWN`,
/// `P2P_IO`.
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_request_accept(
    request: *const p2p_chat_request,
    out: *mut *mut p2p_chat,
) -> p2p_status {
    panic::status(|| {
        let request = arg_ref(request, "request")?;
        let out = arg_out(out, "out")?;
        // Until the handle is in `*out`, no event of this chat is handed out.
        let _opening = Opening::start(&request.chats);
        let chat = request.take()?.accept()?;
        put(out, new_chat(&request.chats, chat));
        Ok(())
    })
}

/// Decline the request; the asker is told. The request handle must still be freed with
/// `p2p_chat_request_free()`.
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_ARGUMENT` (already answered).
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_request_decline(request: *const p2p_chat_request) -> p2p_status {
    panic::status(|| {
        arg_ref(request, "request")?.take()?.decline();
        Ok(())
    })
}

/// Free a chat request; an unanswered one is declined. NULL is a no-op; freeing twice
/// is undefined behaviour (the caller's bug).
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_request_free(request: *mut p2p_chat_request) {
    panic::void(|| {
        if !request.is_null() {
            drop(Box::from_raw(request));
        }
    })
}

/// Attach `user_data` to `chat` (the library never dereferences it): events of this
/// chat (`p2p_event.user_data`), in the queue and in `p2p_chat_event_cb`, carry it
/// from now on. NULL clears it.
///
/// Errors: `P2P_NULL_ARGUMENT` (chat).
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_set_user_data(
    chat: *const p2p_chat,
    user_data: *mut c_void,
) -> p2p_status {
    panic::status(|| {
        arg_ref(chat, "chat")?
            .user_data
            .store(user_data, Ordering::Release);
        Ok(())
    })
}

/// The user data attached to `chat` (NULL if none, or if `chat` is NULL).
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_get_user_data(chat: *const p2p_chat) -> *mut c_void {
    let mut out = std::ptr::null_mut();
    panic::void(|| {
        if let Some(chat) = chat.as_ref() {
            out = chat.user_data.load(Ordering::Acquire);
        }
    });
    out
}

/// As `p2p_chat_send()`, waiting at most `timeout_ms` milliseconds (at least 1) instead
/// of 15 s: first for another thread's send on this chat to finish (`P2P_TIMEOUT`,
/// the chat stays open), then for the other side to read (`P2P_TIMEOUT`, and the chat
/// ends: a message cut short cannot be resumed).
///
/// Errors: `P2P_NULL_ARGUMENT`, `P2P_INVALID_UTF8`, `P2P_CLOSED`, `P2P_TOO_LARGE`,
/// `P2P_TIMEOUT`, `P2P_IO`.
#[no_mangle]
pub unsafe extern "C" fn p2p_chat_send_timeout(
    chat: *const p2p_chat,
    text: *const c_char,
    timeout_ms: u32,
) -> p2p_status {
    panic::status(|| {
        let chat = arg_ref(chat, "chat")?;
        let text = arg_str(text, "text")?;
        let timeout = std::time::Duration::from_millis(u64::from(timeout_ms.max(1)));
        chat.open()?.send_within(text, timeout)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn list(table: &ChatTable, id: ChatId) {
        table.handles.lock().insert(
            id,
            ChatHandle {
                ptr: std::ptr::null_mut(),
                user_data: Arc::new(AtomicPtr::new(std::ptr::null_mut())),
                closed: false,
            },
        );
    }

    #[test]
    fn chat_callbacks_wait_for_the_call_that_returns_the_handle() {
        let table = Arc::new(ChatTable::default());
        // Nothing opening: at once.
        table.wait_for_handle(1);

        // Opening on this very thread (a close while accepting): at once, no deadlock.
        {
            let _opening = Opening::start(&table);
            table.wait_for_handle(1);
        }

        // Another thread opening: the callback waits until that thread listed chat 2
        // and returned.
        let (started_tx, started_rx) = std::sync::mpsc::sync_channel(0);
        let t = table.clone();
        let opener = std::thread::spawn(move || {
            let _opening = Opening::start(&t);
            started_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            list(&t, 2);
        });
        started_rx.recv().unwrap();
        table.wait_for_handle(2);
        assert!(
            table.handles.lock().contains_key(&2),
            "waited for the handle"
        );
        opener.join().unwrap();

        // A pending async answer: waits until it is listed and `listed` wakes it.
        table
            .async_user_data
            .lock()
            .insert(9, UserData(std::ptr::null_mut()));
        let t = table.clone();
        let answer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            list(&t, 3);
            t.async_user_data.lock().remove(&9);
            t.listed();
        });
        table.wait_for_handle(3);
        assert!(
            table.handles.lock().contains_key(&3),
            "waited for the answer"
        );
        answer.join().unwrap();

        // A freed chat (in `gone`) never waits, whatever is opening.
        table.gone.lock().insert(4);
        {
            let t = table.clone();
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(0);
            let (held_tx, held_rx) = std::sync::mpsc::sync_channel(0);
            let h = std::thread::spawn(move || {
                let _opening = Opening::start(&t);
                held_tx.send(()).unwrap();
                let _ = rx.recv();
            });
            held_rx.recv().unwrap();
            table.wait_for_handle(4);
            drop(tx);
            h.join().unwrap();
        }
        table.mark_closed(4);
        assert!(
            table.gone.lock().is_empty(),
            "a handed-out close leaves `gone`"
        );
    }
}
