//! The callback mode's chat hooks: the older id-based callbacks (`p2p_chat_message_cb`,
//! `p2p_chat_closed_cb`) and `p2p_chat_event_cb`, which gets each chat happening as
//! the `p2p_event` the queue would give, with the borrowed chat handle and its user
//! data. Every callback of a chat waits until the call returning that chat's handle
//! has returned (the rule the queue keeps, through the same table).

use crate::callback::{Owner, Scope};
use crate::chat::{p2p_chat_closed_by, p2p_chat_request, ChatTable, Holding};
use crate::events::{chat_event, opened_hook, p2p_chat_opened_cb, p2p_event, p2p_event_free};
use crate::peer::Callbacks;
use crate::strings::c_string;
use p2pcore::peer::{ChatClosedBy, Event, PeerBuilder};
use std::ffi::c_void;
use std::sync::Arc;

/// A chat happening, in callback mode, as a `p2p_event` (see `p2p_event` for the
/// fields):
/// - `P2P_EV_CHAT_MESSAGE` and `P2P_EV_CHAT_CLOSED`, always: `event->chat` is the
///   handle the application holds for that chat (from `p2p_peer_chat()`,
///   `p2p_chat_request_accept()` or the async answer), **borrowed**: valid until the
///   application frees it, NULL if it was freed already; `event->user_data` is that
///   handle's `p2p_chat_set_user_data()`. Called after the older `p2p_chat_message_cb`
///   / `p2p_chat_closed_cb` of the same happening (they stay, with their ids, for
///   compatibility), on the same thread: the chat's reader thread, in order, for
///   messages; whichever thread ended the chat for the close.
/// - `P2P_EV_CHAT_REQUEST`, only when no `p2p_chat_request_cb` is set:
///   `event->request` is a new handle the callee owns (answer it, then
///   `p2p_chat_request_free()` it, as with `p2p_chat_request_cb`).
/// - `P2P_EV_CHAT_OPENED` (the answer to `p2p_peer_chat_async()`), only when no
///   `p2p_chat_opened_cb` is set: on `P2P_OK` `event->chat` is a new handle the callee
///   owns (free it with `p2p_chat_free()`), `event->user_data` the request's user data.
///
/// No message or close of a chat (to this callback or the older ones) comes before
/// the call returning its handle (`p2p_chat_request_accept()`, `p2p_peer_chat()`, the
/// async answer's callback) has returned: the chat's reader thread waits for it. The
/// event and the strings in it are valid only during the call (do not free it).
/// `p2p_peer_exit()` / `p2p_peer_free()` from inside it returns `P2P_WOULD_DEADLOCK`.
pub type p2p_chat_event_cb =
    Option<unsafe extern "C" fn(user_data: *mut c_void, event: *const p2p_event)>;

/// Hand `event` (converted with the handles of `chats`) to `cb`, then release it.
fn call(
    cb: unsafe extern "C" fn(*mut c_void, *const p2p_event),
    ud: crate::userdata::UserData,
    chats: &Arc<ChatTable>,
    event: Event,
) {
    let mut e = chat_event(chats, event);
    // SAFETY: as documented for `p2p_chat_event_cb`; `e` lives across the call, and
    // freeing it releases only what it owns (handles it carries stay).
    unsafe {
        cb(ud.ptr(), &e);
        p2p_event_free(&mut e);
    }
}

/// Set the chat hooks of a peer with callbacks (peer `id`, whose chat handles `chats`
/// lists): message and close always (the close releases the chat's socket at once),
/// request and async answer where a callback takes them.
pub(crate) fn wire(
    mut b: PeerBuilder,
    cbs: Callbacks,
    opened: p2p_chat_opened_cb,
    id: u64,
    chats: &Arc<ChatTable>,
) -> PeerBuilder {
    let ud = cbs.user_data;
    let event_cb = cbs.chat_event;
    if let Some(cb) = cbs.chat_request {
        let chats = chats.clone();
        b = b.on_chat_request(move |req| {
            let handle = Box::into_raw(Box::new(p2p_chat_request::new(req, chats.clone())));
            let _scope = Scope::enter(Owner::Peer(id));
            // SAFETY: the caller's callback, called as documented; it owns `handle`.
            unsafe { cb(ud.ptr(), handle) };
        });
    } else if let Some(cb) = event_cb {
        let chats = chats.clone();
        b = b.on_chat_request(move |req| {
            let _scope = Scope::enter(Owner::Peer(id));
            call(cb, ud, &chats, Event::ChatRequest(req));
        });
    }
    if cbs.chat_message.is_some() || event_cb.is_some() {
        let chats = chats.clone();
        b = b.on_chat_message(move |chat_id, from, text| {
            chats.wait_for_handle(chat_id);
            let _scope = Scope::enter(Owner::Peer(id));
            if let Some(old) = cbs.chat_message {
                let from = c_string(from);
                let mut bytes = Vec::with_capacity(text.len() + 1);
                bytes.extend_from_slice(text.as_bytes());
                bytes.push(0);
                // SAFETY: as documented for `p2p_chat_message_cb`.
                unsafe {
                    old(
                        ud.ptr(),
                        chat_id,
                        from.as_ptr(),
                        bytes.as_ptr().cast(),
                        text.len(),
                    )
                }
            }
            if let Some(cb) = event_cb {
                let event = Event::ChatMessage {
                    chat: chat_id,
                    from: from.to_string(),
                    text: text.to_string(),
                };
                call(cb, ud, &chats, event);
            }
        });
    }
    let table = chats.clone();
    b = b.on_chat_closed(move |chat_id, peer, by| {
        // The chat's socket closes now, not when C frees its handle.
        table.ended(chat_id);
        if cbs.chat_closed.is_none() && event_cb.is_none() {
            table.mark_closed(chat_id);
            return;
        }
        table.wait_for_handle(chat_id);
        let _scope = Scope::enter(Owner::Peer(id));
        if let Some(old) = cbs.chat_closed {
            let c_by = match by {
                ChatClosedBy::Local => p2p_chat_closed_by::P2P_CHAT_CLOSED_LOCAL,
                ChatClosedBy::Remote => p2p_chat_closed_by::P2P_CHAT_CLOSED_REMOTE,
                ChatClosedBy::Lost => p2p_chat_closed_by::P2P_CHAT_CLOSED_LOST,
            };
            let peer = c_string(peer);
            // SAFETY: as documented for `p2p_chat_closed_cb`.
            unsafe { old(ud.ptr(), chat_id, peer.as_ptr(), c_by) }
        }
        match event_cb {
            Some(cb) => {
                let event = Event::ChatClosed {
                    chat: chat_id,
                    peer: peer.to_string(),
                    by,
                };
                // Marks the close handed out.
                call(cb, ud, &table, event);
            }
            None => table.mark_closed(chat_id),
        }
    });
    if let Some(cb) = opened {
        b = b.on_chat_opened(opened_hook(cb, ud, id, chats.clone()));
    } else if let Some(cb) = event_cb {
        let chats = chats.clone();
        b = b.on_chat_opened(move |request, user, result| {
            let held = result.as_ref().ok().map(p2pcore::peer::Chat::id);
            // Its callbacks wait until this one has returned.
            let _holding = Holding::start(&chats, held);
            let _scope = Scope::enter(Owner::Peer(id));
            let event = Event::ChatOpened {
                request,
                user: user.to_string(),
                result,
            };
            call(cb, ud, &chats, event);
        });
    }
    b
}
