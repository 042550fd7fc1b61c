//! What the peer's hooks report to the client loop. Hooks run on library threads and
//! must return at once, so each one only sends an [`Event`] down a channel.

use crossbeam_channel::Sender;
use p2pcore::peer::{ChatClosedBy, ChatId, ChatRequest, PeerBuilder, PeerEvent};
use std::time::Instant;

/// Something that happened in the background.
pub enum Event {
    /// Someone asks to chat; `at` is when the request arrived (its timeout runs from then).
    ChatRequest { request: ChatRequest, at: Instant },
    /// A chat message.
    ChatMessage {
        chat: ChatId,
        from: String,
        text: String,
    },
    /// A chat ended.
    ChatClosed { chat: ChatId, by: ChatClosedBy },
    /// A chat request got no answer in time and was declined by the library.
    RequestExpired { from: String },
    /// Something worth a line (registry connection lost or back, a skipped file).
    Notice(String),
}

/// Install hooks on `builder` that send every event to `tx`.
pub fn wire(builder: PeerBuilder, tx: &Sender<Event>) -> PeerBuilder {
    let (t1, t2, t3, t4) = (tx.clone(), tx.clone(), tx.clone(), tx.clone());
    builder
        .on_chat_request(move |request| {
            let _ = t1.send(Event::ChatRequest {
                request,
                at: Instant::now(),
            });
        })
        .on_chat_message(move |chat, from, text| {
            let _ = t2.send(Event::ChatMessage {
                chat,
                from: from.to_string(),
                text: text.to_string(),
            });
        })
        .on_chat_closed(move |chat, _, by| {
            let _ = t3.send(Event::ChatClosed { chat, by });
        })
        .on_event(move |e| {
            let event = match e {
                PeerEvent::ChatRequestExpired { from } => {
                    Event::RequestExpired { from: from.clone() }
                }
                PeerEvent::RegistryLost { detail } => {
                    Event::Notice(format!("lost the registry ({detail}); reconnecting..."))
                }
                PeerEvent::RegistryRestored => Event::Notice("registry connection restored".into()),
                PeerEvent::RegistrationRefused { reason } => {
                    Event::Notice(format!("the registry refused to register again: {reason}"))
                }
                PeerEvent::ShareSkipped { name, reason } => {
                    Event::Notice(format!("not shared: {name:?} ({reason})"))
                }
                _ => return,
            };
            let _ = t4.send(event);
        })
}
