//! What the peer's hooks report to the client loop, over two bounded queues.
//!
//! Chat messages go to their own queue ([`CHAT_QUEUE`] deep) with a *blocking* send:
//! the message hook runs on that chat's reader thread, so while the client is behind
//! (stdout stalled, a person scrolling back) the reader waits, stops reading the
//! socket, and TCP slows the sender; memory stays bounded. Nothing else waits on a
//! chat's reader thread, and the send gives up at once when the client stops (the
//! `stop` channel closes), so shutdown cannot deadlock on it.
//!
//! Every other hook may run on the client's own thread (closing a chat reports its end
//! from there), so those only `try_send` to the event queue ([`EVENT_QUEUE`] deep): if it
//! is full, the event is dropped; a dropped chat request is thereby declined.

use super::session::MAX_WAITING_REQUESTS;
use crossbeam_channel::{select, Receiver, Sender};
use p2pcore::peer::{
    ChatClosedBy, ChatId, ChatRequest, FileOffer, PeerBuilder, PeerEvent, TransferId,
};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most chat messages waiting to be shown (at most 64 KiB each, so at most 2 MiB).
pub const CHAT_QUEUE: usize = 32;
/// Most other events waiting for the client loop.
pub const EVENT_QUEUE: usize = 64 + MAX_WAITING_REQUESTS;

/// Something that happened in the background.
pub enum Event {
    /// Someone asks to chat; `at` is when the request arrived (its timeout runs from then).
    ChatRequest { request: ChatRequest, at: Instant },
    /// A chat ended.
    ChatClosed { chat: ChatId, by: ChatClosedBy },
    /// A chat request got no answer in time and was declined by the library.
    RequestExpired { from: String },
    /// Something worth a line (registry connection lost or back, a skipped file).
    Notice(String),
    /// A warning of several lines, already made visible (a changed key).
    Warning(Vec<String>),
    /// Someone offers a file; `at` is when the offer arrived (its timeout runs from then).
    FileOffer { offer: FileOffer, at: Instant },
}

/// A chat message.
pub struct ChatLine {
    pub from: String,
    pub text: String,
}

/// The client loop's ends of the queues, and the switch that releases blocked hooks.
pub struct Queues {
    pub events: Receiver<Event>,
    pub messages: Receiver<ChatLine>,
    /// Dropping it makes every hook return at once (before `Peer::exit`).
    pub stop: Sender<()>,
    /// Where downloads started (for "resuming …" and the rate).
    pub starts: crate::progress::Starts,
    /// Set while the registry connection is lost (set and cleared by the event hook
    /// itself, so it is right even when the event queue was full).
    pub registry_down: Arc<AtomicBool>,
    /// The transfers of accepted file offers, whose end is reported as a notice (the
    /// session holds the lock while it accepts and notes the id, so an end cannot be
    /// missed; bounded by the pending offers the library allows).
    pub incoming: Arc<Mutex<HashSet<TransferId>>>,
    event_tx: Sender<Event>,
    message_tx: Sender<ChatLine>,
    stopped: Receiver<()>,
}

impl Queues {
    pub fn new() -> Queues {
        let (event_tx, events) = crossbeam_channel::bounded(EVENT_QUEUE);
        let (message_tx, messages) = crossbeam_channel::bounded(CHAT_QUEUE);
        let (stop, stopped) = crossbeam_channel::bounded(0);
        Queues {
            events,
            messages,
            stop,
            starts: crate::progress::Starts::default(),
            registry_down: Arc::default(),
            incoming: Arc::default(),
            event_tx,
            message_tx,
            stopped,
        }
    }

    /// Install hooks on `builder` that feed these queues; `keys` says how to advise
    /// about a changed key.
    pub fn wire(&self, builder: PeerBuilder, keys: &super::session::Keys) -> PeerBuilder {
        let (registry, given) = (keys.registry.clone(), keys.given.clone());
        let (t1, t3, t4) = (
            self.event_tx.clone(),
            self.event_tx.clone(),
            self.event_tx.clone(),
        );
        let (messages, stopped) = (self.message_tx.clone(), self.stopped.clone());
        let (starts, down) = (self.starts.clone(), self.registry_down.clone());
        let (t5, t6, t7) = (
            self.event_tx.clone(),
            self.event_tx.clone(),
            self.event_tx.clone(),
        );
        let (done_ids, failed_ids) = (self.incoming.clone(), self.incoming.clone());
        builder
            .on_file_offer(move |offer| {
                let event = Event::FileOffer {
                    offer,
                    at: Instant::now(),
                };
                // Full: declined at once rather than left to expire.
                if let Err(e) = t5.try_send(event) {
                    if let Event::FileOffer { offer, .. } = e.into_inner() {
                        offer.decline();
                    }
                }
            })
            .on_transfer_done(move |id, path| {
                if ours(&done_ids, id) {
                    let text = format!("received {}", path.display());
                    let _ = t6.try_send(Event::Notice(text));
                }
            })
            .on_transfer_failed(move |id, e| {
                if ours(&failed_ids, id) {
                    let text = format!("receiving a file failed: {e}");
                    let _ = t7.try_send(Event::Notice(text));
                }
            })
            .on_chat_request(move |request| {
                // Full: the request is dropped here, which declines it.
                let _ = t1.try_send(Event::ChatRequest {
                    request,
                    at: Instant::now(),
                });
            })
            .on_chat_message(move |_, from, text| {
                let line = ChatLine {
                    from: from.to_string(),
                    text: text.to_string(),
                };
                // Blocks this chat's reader thread while the queue is full.
                select! {
                    send(messages, line) -> _ => {},
                    recv(stopped) -> _ => {},
                }
            })
            .on_chat_closed(move |chat, _, by| {
                let _ = t3.try_send(Event::ChatClosed { chat, by });
            })
            .on_event(move |e| {
                starts.record(e);
                match e {
                    PeerEvent::RegistryLost { .. } => down.store(true, Ordering::SeqCst),
                    PeerEvent::RegistryRestored => down.store(false, Ordering::SeqCst),
                    _ => {}
                }
                let event = match e {
                    PeerEvent::ChatRequestExpired { from } => {
                        Event::RequestExpired { from: from.clone() }
                    }
                    PeerEvent::RegistryLost { detail } => {
                        Event::Notice(format!("lost the registry ({detail}); reconnecting..."))
                    }
                    PeerEvent::RegistryRestored => {
                        Event::Notice("registry connection restored".into())
                    }
                    PeerEvent::RegistrationRefused { reason } => {
                        Event::Notice(format!("the registry refused to register again: {reason}"))
                    }
                    // Only the news that matters here: this peer cannot be reached (a
                    // reachable listener is the normal case, shown in the menu's status).
                    PeerEvent::Reachability {
                        reach: reach @ p2pcore::reach::Reach::Unreachable,
                        addr,
                    } => match crate::notice::reachability(*reach, *addr) {
                        Some(text) => Event::Notice(text),
                        None => return,
                    },
                    PeerEvent::ShareSkipped { name, reason } => {
                        Event::Notice(crate::notice::skipped(name, reason))
                    }
                    PeerEvent::KeyChanged {
                        subject,
                        pinned,
                        offered,
                    } => {
                        let e = p2pcore::Error::KeyChanged {
                            subject: subject.clone(),
                            pinned: *pinned,
                            offered: *offered,
                        };
                        Event::Warning(crate::keys::warning(&registry, given.as_deref(), &e))
                    }
                    PeerEvent::ShareUpdated {
                        files,
                        added,
                        removed,
                        changed,
                    } => Event::Notice(crate::notice::updated(*files, added, removed, changed)),
                    _ => return,
                };
                let _ = t4.try_send(event);
            })
    }
}

/// Whether transfer `id` is an accepted offer's (taken out of the set).
fn ours(incoming: &Mutex<HashSet<TransferId>>, id: TransferId) -> bool {
    incoming
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id)
}
