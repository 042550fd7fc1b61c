//! Events you pull: a peer built with [`PeerBuilder::event_queue`] puts everything it
//! would have told its hooks into one bounded per-peer queue instead, read with
//! [`Peer::next_event`] or [`Peer::events`], and (on Unix) signalled on a descriptor,
//! [`Peer::event_fd`], for poll/epoll/GLib/Qt main loops.
//!
//! A peer uses hooks or the queue, never both: nothing is delivered twice.
//!
//! # Overflow rule
//! The capacity bounds the events that can pile up without limit, and no event the
//! application must see is ever dropped:
//! - **Transfer progress is coalesced**: at most one progress event per transfer waits
//!   in the queue; a newer one updates it in place. Progress never blocks and never
//!   counts against the capacity.
//! - **Must-deliver events** (a chat request, a file offer, the answer to
//!   [`Peer::chat_async`], a chat's close, a transfer's done or failed) are never
//!   dropped and never wait: they go in even past the capacity (a reserved overflow). Their number is bounded by the
//!   peer's own limits (open chats, pending requests, transfers), and some are produced
//!   on the application's own thread (closing a chat from the loop that drains the
//!   queue), where waiting for room would deadlock.
//! - **Chat messages wait for room**: a chat's reader thread waits until the queue has
//!   room (or the peer stops). It then stops reading that connection, so TCP flow
//!   control slows the sender down; no message is lost. Messages are only ever
//!   produced on chat reader threads, never on the thread that drains the queue.
//! - **Background [`PeerEvent`]s** are informational and some are produced on the
//!   caller's thread (a rescan's): when the queue is full they are dropped and counted
//!   ([`Peer::events_dropped`]).

use super::{Chat, ChatClosedBy, ChatId, ChatRequest, Inner, Peer, PeerBuilder, PeerEvent};
use super::{FileOffer, Hooks, TransferId};
use crate::error::{Error, Result};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// One thing that happened, taken from a peer's event queue.
#[derive(Debug)]
pub enum Event {
    /// Someone asks to chat: answer through the request (see [`ChatRequest`]).
    ChatRequest(ChatRequest),
    /// The answer to [`Peer::chat_async`] number `request`: the open chat, or why not
    /// ([`Error::Cancelled`] after [`Peer::chat_cancel`]).
    ChatOpened {
        /// The number [`Peer::chat_async`] returned.
        request: u64,
        /// Who was asked.
        user: String,
        /// The chat, or the error.
        result: Result<Chat>,
    },
    /// A chat message arrived.
    ChatMessage {
        /// Which chat.
        chat: ChatId,
        /// The sender's username.
        from: String,
        /// The message.
        text: String,
    },
    /// A chat ended (once per chat).
    ChatClosed {
        /// Which chat.
        chat: ChatId,
        /// The other side's username.
        peer: String,
        /// Who ended it.
        by: ChatClosedBy,
    },
    /// Download progress (coalesced: the newest value when taken).
    TransferProgress {
        /// Which download.
        transfer: TransferId,
        /// Bytes so far.
        received: u64,
        /// Total bytes.
        total: u64,
    },
    /// A download finished and was verified.
    TransferDone {
        /// Which download.
        transfer: TransferId,
        /// Where the file is.
        path: PathBuf,
    },
    /// A download failed.
    TransferFailed {
        /// Which download.
        transfer: TransferId,
        /// Why.
        error: Error,
    },
    /// Any other background event.
    Peer(PeerEvent),
    /// Someone offers a file: answer through the offer (see [`FileOffer`]) or by its
    /// id ([`Peer::accept_offer`], [`Peer::decline_offer`]). Never dropped.
    FileOffered(FileOffer),
    /// The answer to [`Peer::offer_file_async`] number `request`: the outgoing
    /// transfer once accepted, or why not ([`Error::OfferDeclined`],
    /// [`Error::Timeout`], [`Error::Cancelled`] after [`Peer::offer_cancel`]…). It comes
    /// before any event of that transfer. Never dropped.
    OfferAnswered {
        /// The number [`Peer::offer_file_async`] returned.
        request: u64,
        /// Who was offered the file.
        user: String,
        /// The outgoing transfer, or the error.
        result: Result<super::Transfer>,
    },
}

/// What waits in the queue: an event, or the place of a transfer's coalesced progress.
#[derive(Debug)]
enum Entry {
    Event(Event),
    Progress(TransferId),
}

#[derive(Default)]
struct State {
    entries: VecDeque<Entry>,
    /// The newest progress of each transfer that has an `Entry::Progress` waiting.
    progress: HashMap<TransferId, (u64, u64)>,
    /// Entries counted against the capacity (messages and background events).
    bounded: usize,
    /// `chat_async` requests not answered yet, with whom they ask.
    pending: HashMap<u64, String>,
    /// Chats opened for a cancelled `chat_async` request: nobody was given them, so
    /// none of their events is queued. Also transfers of a cancelled
    /// `offer_file_async` request (chat and transfer ids come from one counter).
    muted: HashSet<ChatId>,
    /// `offer_file_async` requests not answered yet, with whom they ask.
    offers: HashMap<u64, String>,
}

/// The answer hook for [`Peer::chat_async`] in hook mode: `(request, user, result)`.
pub(crate) type OpenedHook = dyn Fn(u64, &str, Result<Chat>) + Send + Sync;
/// The answer hook for [`Peer::offer_file_async`] in hook mode: `(request, user, result)`.
pub(crate) type AnsweredHook = dyn Fn(u64, &str, Result<super::Transfer>) + Send + Sync;

/// What an async request is answered with: a [`Chat`] for [`Peer::chat_async`], an
/// outgoing transfer for [`Peer::offer_file_async`]. Both kinds share one life cycle
/// (numbered, listed as pending, answered exactly once: by their thread or by a
/// cancel, whichever takes them out of the list first); this is what differs.
trait AsyncAnswer: Sized {
    /// The refusal of a request whose answer would have nowhere to go.
    const REFUSED: &'static str;
    /// The name of the thread that makes request `n` is this prefix and `n`.
    const THREAD: &'static str;
    /// The requests of this kind not answered yet, with whom they ask.
    fn pending(state: &mut State) -> &mut HashMap<u64, String>;
    /// Whether `q` has somewhere to put the answer: it queues, or has the hook.
    fn answerable(q: &EventQueue) -> bool;
    /// Deliver the answer, already taken out of [`pending`](Self::pending) under
    /// `state`.
    fn deliver(
        q: &EventQueue,
        state: MutexGuard<'_, State>,
        request: u64,
        user: String,
        result: Result<Self>,
    );
}

impl AsyncAnswer for Chat {
    const REFUSED: &'static str = "chat_async needs an event queue or an on_chat_opened hook";
    const THREAD: &'static str = "p2p-chat-ask-";
    fn pending(state: &mut State) -> &mut HashMap<u64, String> {
        &mut state.pending
    }
    fn answerable(q: &EventQueue) -> bool {
        q.queued || q.opened_hook.is_some()
    }
    fn deliver(
        q: &EventQueue,
        state: MutexGuard<'_, State>,
        request: u64,
        user: String,
        result: Result<Chat>,
    ) {
        q.answer(state, request, user, result)
    }
}

impl AsyncAnswer for super::Transfer {
    const REFUSED: &'static str =
        "offer_file_async needs an event queue or an on_offer_answered hook";
    const THREAD: &'static str = "p2p-offer-";
    fn pending(state: &mut State) -> &mut HashMap<u64, String> {
        &mut state.offers
    }
    fn answerable(q: &EventQueue) -> bool {
        q.queued || q.answered_hook.is_some()
    }
    fn deliver(
        q: &EventQueue,
        state: MutexGuard<'_, State>,
        request: u64,
        user: String,
        result: Result<super::Transfer>,
    ) {
        q.answer_offer(state, request, user, result)
    }
}

/// A peer's event queue (see the module documentation for the overflow rule). Every
/// peer has one for the bookkeeping of [`Peer::chat_async`]; only a peer built with
/// [`PeerBuilder::event_queue`] (`queued`) puts events in it.
pub(crate) struct EventQueue {
    queued: bool,
    /// Hook mode: where [`Peer::chat_async`]'s answers go.
    opened_hook: Option<Arc<OpenedHook>>,
    /// Hook mode: where [`Peer::offer_file_async`]'s answers go.
    answered_hook: Option<Arc<AnsweredHook>>,
    capacity: usize,
    state: Mutex<State>,
    /// Signalled when an entry is added (consumers) or taken (waiting producers).
    changed: Condvar,
    dropped: AtomicU64,
    next_request: AtomicU64,
    /// The peer, once connected: producers stop waiting for room when it stops.
    inner: OnceLock<Weak<Inner>>,
    #[cfg(unix)]
    notify: Option<Notifier>,
}

impl EventQueue {
    fn new(capacity: usize) -> EventQueue {
        EventQueue {
            queued: true,
            opened_hook: None,
            answered_hook: None,
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            dropped: AtomicU64::new(0),
            next_request: AtomicU64::new(1),
            inner: OnceLock::new(),
            #[cfg(unix)]
            notify: Notifier::new().ok(),
        }
    }

    fn stopping(&self) -> bool {
        self.inner
            .get()
            .is_some_and(|w| w.upgrade().is_none_or(|i| i.stopping()))
    }

    /// Adds `entry`, keeping the descriptor readable while anything waits.
    fn put(&self, state: &mut State, entry: Entry, bounded: bool) {
        let was_empty = state.entries.is_empty();
        state.entries.push_back(entry);
        if bounded {
            state.bounded += 1;
        }
        #[cfg(unix)]
        if was_empty {
            if let Some(n) = &self.notify {
                n.set();
            }
        }
        let _ = was_empty;
        self.changed.notify_all();
    }

    /// The answer to a `chat_async` request. It is queued before the chat's reader
    /// starts (see `chat::request_with`); should any event of the chat be queued
    /// already, the answer still goes in ahead of the first of them, so no event of a
    /// chat comes before the one that opens it.
    fn put_opened(&self, state: &mut State, request: u64, user: String, result: Result<Chat>) {
        let id = result.as_ref().ok().map(Chat::id);
        let first = id.and_then(|id| {
            state.entries.iter().position(|e| {
                matches!(e, Entry::Event(Event::ChatMessage { chat, .. } | Event::ChatClosed { chat, .. }) if *chat == id)
            })
        });
        let event = Entry::Event(Event::ChatOpened {
            request,
            user,
            result,
        });
        match first {
            // Not empty: the descriptor is set already.
            Some(at) => {
                state.entries.insert(at, event);
                self.changed.notify_all();
            }
            None => self.put(state, event, false),
        }
    }

    /// Answer async request `request` with `result` if it is still pending. If it was
    /// answered already (cancelled), nothing is delivered and `result` is handed back,
    /// for the caller to dispose of what nobody was given.
    fn settle<A: AsyncAnswer>(
        &self,
        request: u64,
        result: Result<A>,
    ) -> std::result::Result<(), Result<A>> {
        let mut state = self.state.lock();
        match A::pending(&mut state).remove(&request) {
            Some(user) => {
                A::deliver(self, state, request, user, result);
                Ok(())
            }
            None => Err(result),
        }
    }

    /// Deliver the answer to a `chat_async` request (already taken out of `pending`
    /// under `state`): queued, or given to the hook (outside the lock).
    fn answer(
        &self,
        mut state: MutexGuard<'_, State>,
        request: u64,
        user: String,
        result: Result<Chat>,
    ) {
        if self.queued {
            self.put_opened(&mut state, request, user, result);
            return;
        }
        drop(state);
        match &self.opened_hook {
            Some(h) => crate::thread::call_hook(|| h(request, &user, result)),
            None => {
                if let Ok(chat) = result {
                    chat.close();
                }
            }
        }
    }

    /// Deliver the answer to an `offer_file_async` request (already taken out of
    /// `offers` under `state`): queued ahead of any event of its transfer, or given to
    /// the hook (outside the lock); with neither, an accepted transfer is cancelled.
    fn answer_offer(
        &self,
        mut state: MutexGuard<'_, State>,
        request: u64,
        user: String,
        result: Result<super::Transfer>,
    ) {
        if self.queued {
            let id = result.as_ref().ok().map(super::Transfer::id);
            let first = id.and_then(|id| {
                state.entries.iter().position(|e| match e {
                    Entry::Progress(t) => *t == id,
                    Entry::Event(
                        Event::TransferDone { transfer, .. }
                        | Event::TransferFailed { transfer, .. },
                    ) => *transfer == id,
                    _ => false,
                })
            });
            let event = Entry::Event(Event::OfferAnswered {
                request,
                user,
                result,
            });
            match first {
                Some(at) => {
                    state.entries.insert(at, event);
                    self.changed.notify_all();
                }
                None => self.put(&mut state, event, false),
            }
            return;
        }
        drop(state);
        match &self.answered_hook {
            Some(h) => crate::thread::call_hook(|| h(request, &user, result)),
            None => {
                if let Ok(t) = result {
                    t.cancel();
                }
            }
        }
    }

    /// Transfer `id` belongs to a cancelled offer: drop its queued events and queue
    /// none from now on.
    fn mute_transfer(&self, id: TransferId) {
        let mut state = self.state.lock();
        state.muted.insert(id);
        state.progress.remove(&id);
        let before = state.entries.len();
        state.entries.retain(|e| match e {
            Entry::Progress(t) => *t != id,
            Entry::Event(
                Event::TransferDone { transfer, .. } | Event::TransferFailed { transfer, .. },
            ) => *transfer != id,
            _ => true,
        });
        #[cfg(unix)]
        if before > 0 && state.entries.is_empty() {
            if let Some(n) = &self.notify {
                n.clear();
            }
        }
        let _ = before;
        self.changed.notify_all();
    }

    /// A must-deliver event: in at once, past the capacity if need be.
    fn push_always(&self, event: Event) {
        let mut state = self.state.lock();
        if is_muted(&state, &event) {
            return;
        }
        self.put(&mut state, Entry::Event(event), false);
    }

    /// Chat `id` belongs to a cancelled request: drop its queued events and queue
    /// none from now on.
    fn mute(&self, id: ChatId) {
        let mut state = self.state.lock();
        state.muted.insert(id);
        let before = state.entries.len();
        let mut freed = 0;
        state.entries.retain(|e| match e {
            Entry::Event(Event::ChatMessage { chat, .. }) if *chat == id => {
                freed += 1;
                false
            }
            Entry::Event(Event::ChatClosed { chat, .. }) => *chat != id,
            _ => true,
        });
        state.bounded -= freed;
        #[cfg(unix)]
        if before > 0 && state.entries.is_empty() {
            if let Some(n) = &self.notify {
                n.clear();
            }
        }
        let _ = before;
        self.changed.notify_all();
    }

    /// A chat message: waits for room (or until the peer stops; then it is dropped,
    /// as the chat is ending anyway).
    fn push_waiting(&self, event: Event) {
        let mut state = self.state.lock();
        while state.bounded >= self.capacity && !is_muted(&state, &event) {
            if self.stopping() {
                return;
            }
            self.changed.wait_for(&mut state, Duration::from_millis(50));
        }
        if is_muted(&state, &event) {
            return;
        }
        self.put(&mut state, Entry::Event(event), true);
    }

    /// A background event: dropped (and counted) when the queue is full.
    fn push_or_drop(&self, event: Event) {
        let mut state = self.state.lock();
        if state.bounded >= self.capacity {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.put(&mut state, Entry::Event(event), true);
    }

    fn push_progress(&self, transfer: TransferId, received: u64, total: u64) {
        let mut state = self.state.lock();
        if state.muted.contains(&transfer) {
            return;
        }
        if state.progress.insert(transfer, (received, total)).is_none() {
            self.put(&mut state, Entry::Progress(transfer), false);
        }
    }

    /// The next event, waiting up to `timeout` (`None`: without limit).
    pub(crate) fn pop(&self, timeout: Option<Duration>) -> Option<Event> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut state = self.state.lock();
        loop {
            if let Some(entry) = state.entries.pop_front() {
                let event = match entry {
                    Entry::Event(e) => {
                        if matches!(e, Event::ChatMessage { .. } | Event::Peer(_)) {
                            state.bounded -= 1;
                        }
                        e
                    }
                    Entry::Progress(transfer) => {
                        let (received, total) =
                            state.progress.remove(&transfer).unwrap_or_default();
                        Event::TransferProgress {
                            transfer,
                            received,
                            total,
                        }
                    }
                };
                #[cfg(unix)]
                if state.entries.is_empty() {
                    if let Some(n) = &self.notify {
                        n.clear();
                    }
                }
                self.changed.notify_all();
                return Some(event);
            }
            match deadline {
                None => {
                    // Without a limit: give up once the peer has stopped (nothing
                    // will come any more).
                    self.changed
                        .wait_for(&mut state, Duration::from_millis(100));
                    if state.entries.is_empty() && self.stopping() {
                        return None;
                    }
                }
                Some(d) => {
                    if self.changed.wait_until(&mut state, d).timed_out()
                        && state.entries.is_empty()
                    {
                        return None;
                    }
                }
            }
        }
    }

    /// The hooks that fill this queue.
    fn hooks(self: &Arc<Self>) -> Hooks {
        let q = self.clone();
        let request = move |r: ChatRequest| q.push_always(Event::ChatRequest(r));
        let q = self.clone();
        let message = move |chat: ChatId, from: &str, text: &str| {
            q.push_waiting(Event::ChatMessage {
                chat,
                from: from.to_string(),
                text: text.to_string(),
            })
        };
        let q = self.clone();
        let closed = move |chat: ChatId, peer: &str, by: ChatClosedBy| {
            q.push_always(Event::ChatClosed {
                chat,
                peer: peer.to_string(),
                by,
            })
        };
        let q = self.clone();
        let progress = move |t: TransferId, r: u64, n: u64| q.push_progress(t, r, n);
        let q = self.clone();
        let done = move |transfer: TransferId, path: &std::path::Path| {
            q.push_always(Event::TransferDone {
                transfer,
                path: path.to_path_buf(),
            })
        };
        let q = self.clone();
        let failed = move |transfer: TransferId, error: &Error| {
            q.push_always(Event::TransferFailed {
                transfer,
                error: error.clone(),
            })
        };
        let q = self.clone();
        let offer = move |o: FileOffer| q.push_always(Event::FileOffered(o));
        let q = self.clone();
        let event = move |e: &PeerEvent| q.push_or_drop(Event::Peer(e.clone()));
        Hooks {
            chat_request: Some(Arc::new(request)),
            chat_message: Some(Arc::new(message)),
            chat_closed: Some(Arc::new(closed)),
            progress: Some(Arc::new(progress)),
            done: Some(Arc::new(done)),
            failed: Some(Arc::new(failed)),
            event: Some(Arc::new(event)),
            chat_opened: None,
            file_offer: Some(Arc::new(offer)),
            offer_answered: None,
        }
    }
}

/// Whether `event` is of a chat or transfer nobody was given (see `State::muted`).
fn is_muted(state: &State, event: &Event) -> bool {
    match event {
        Event::ChatMessage { chat, .. } | Event::ChatClosed { chat, .. } => {
            state.muted.contains(chat)
        }
        Event::TransferDone { transfer, .. } | Event::TransferFailed { transfer, .. } => {
            state.muted.contains(transfer)
        }
        _ => false,
    }
}

/// The descriptor readable exactly while the queue is non-empty: an eventfd on Linux,
/// a pipe elsewhere. Set and cleared under the queue's lock, on the empty/non-empty
/// transitions only.
#[cfg(unix)]
struct Notifier {
    read: libc::c_int,
    write: libc::c_int,
}

#[cfg(unix)]
impl Notifier {
    fn new() -> std::io::Result<Notifier> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: plain system call; the result is checked.
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Notifier {
                read: fd,
                write: fd,
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let mut fds = [0 as libc::c_int; 2];
            // SAFETY: `fds` has room for the two descriptors; the result is checked.
            if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for fd in fds {
                // SAFETY: descriptors just made by `pipe`.
                unsafe {
                    libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            Ok(Notifier {
                read: fds[0],
                write: fds[1],
            })
        }
    }

    fn set(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes (an eventfd counter increment, or one pipe byte) from
        // a live local.
        unsafe {
            libc::write(
                self.write,
                (&one as *const u64).cast(),
                if self.read == self.write { 8 } else { 1 },
            );
        }
    }

    fn clear(&self) {
        let mut buf = [0u8; 64];
        // SAFETY: reads into a live local buffer; the descriptor is non-blocking.
        unsafe {
            libc::read(self.read, buf.as_mut_ptr().cast(), buf.len());
        }
    }
}

#[cfg(unix)]
impl Drop for Notifier {
    fn drop(&mut self) {
        // SAFETY: descriptors owned by this notifier, closed once.
        unsafe {
            libc::close(self.read);
            if self.write != self.read {
                libc::close(self.write);
            }
        }
    }
}

/// An iterator over a peer's events ([`Peer::events`]): blocks for each next one and
/// ends when the peer has stopped and the queue is drained.
pub struct Events<'a> {
    peer: &'a Peer,
}

impl Iterator for Events<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let q = self.peer.queue()?;
        loop {
            if let Some(e) = q.pop(Some(Duration::from_millis(200))) {
                return Some(e);
            }
            if self.peer.inner.stopping() {
                return q.pop(Some(Duration::ZERO));
            }
        }
    }
}

impl PeerBuilder {
    /// Deliver everything through a bounded event queue of `capacity` events instead
    /// of hooks (see [`Peer::next_event`] and the overflow rule in
    /// [`events`](crate::peer::events)). Hooks set with the `on_*` methods, before or
    /// after, are not called: a peer uses one or the other.
    pub fn event_queue(mut self, capacity: usize) -> Self {
        self.events = Some(capacity);
        self
    }

    /// Hook mode: the answer to [`Peer::chat_async`] request `(request, user,
    /// result)`, called on a library thread (or, for [`Peer::chat_cancel`], on the
    /// cancelling thread before it returns). Without it (and without an event queue)
    /// `chat_async` is refused.
    pub fn on_chat_opened(
        mut self,
        f: impl Fn(u64, &str, Result<Chat>) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.chat_opened = Some(Arc::new(f));
        self
    }

    /// Hook mode: the answer to [`Peer::offer_file_async`] request `(request, user,
    /// result)`, called on a library thread (or, for [`Peer::offer_cancel`], on the
    /// cancelling thread before it returns). Without it (and without an event queue)
    /// `offer_file_async` is refused.
    pub fn on_offer_answered(
        mut self,
        f: impl Fn(u64, &str, Result<super::Transfer>) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.offer_answered = Some(Arc::new(f));
        self
    }

    /// The queue to connect with; with an event queue its hooks replace the others.
    pub(super) fn take_queue(&mut self) -> Option<Arc<EventQueue>> {
        let Some(capacity) = self.events else {
            let mut q = EventQueue::new(1);
            q.queued = false;
            q.opened_hook = self.hooks.chat_opened.clone();
            q.answered_hook = self.hooks.offer_answered.clone();
            #[cfg(unix)]
            {
                q.notify = None;
            }
            return Some(Arc::new(q));
        };
        let queue = Arc::new(EventQueue::new(capacity));
        self.hooks = queue.hooks();
        Some(queue)
    }
}

impl Peer {
    /// The event queue, when the peer was built with one.
    fn queue(&self) -> Option<&Arc<EventQueue>> {
        self.events.as_ref().filter(|q| q.queued)
    }

    /// The next event of a peer built with [`PeerBuilder::event_queue`], waiting up to
    /// `timeout` (`None`: until one comes or the peer stops); `None` when nothing came
    /// in time (or the peer has no queue, or it stopped with the queue drained).
    pub fn next_event(&self, timeout: Option<Duration>) -> Option<Event> {
        self.queue()?.pop(timeout)
    }

    /// A blocking iterator over the events (empty without a queue); it ends once the
    /// peer has stopped and the queue is drained.
    pub fn events(&self) -> Events<'_> {
        Events { peer: self }
    }

    /// A descriptor that is readable exactly while events wait in the queue (an eventfd
    /// on Linux, a pipe elsewhere; owned by the peer, never read it yourself). `None`
    /// without a queue.
    #[cfg(unix)]
    pub fn event_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.queue()?.notify.as_ref()?.read)
    }

    /// Whether this peer was built with an event queue.
    pub fn has_event_queue(&self) -> bool {
        self.queue().is_some()
    }

    /// Put `event`, just taken, back at the front of the queue (for a consumer that
    /// cannot hand it on yet); it is the next one taken. No-op without a queue.
    pub fn put_back_event(&self, event: Event) {
        let Some(q) = self.queue() else {
            return;
        };
        let mut state = q.state.lock();
        let was_empty = state.entries.is_empty();
        if matches!(event, Event::ChatMessage { .. } | Event::Peer(_)) {
            state.bounded += 1;
        }
        state.entries.push_front(Entry::Event(event));
        #[cfg(unix)]
        if was_empty {
            if let Some(n) = &q.notify {
                n.set();
            }
        }
        let _ = was_empty;
        q.changed.notify_all();
    }

    /// How many background [`PeerEvent`]s were dropped because the queue was full.
    pub fn events_dropped(&self) -> u64 {
        self.queue()
            .map_or(0, |q| q.dropped.load(Ordering::Relaxed))
    }

    /// Ask `user` for a chat without waiting: returns a request number at once; the
    /// answer arrives as [`Event::ChatOpened`] with that number (or, without an event
    /// queue, through the [`PeerBuilder::on_chat_opened`] hook). Needs one of the two
    /// ([`Error::InvalidArgument`] without).
    pub fn chat_async(&self, user: &str) -> Result<u64> {
        self.chat_async_with(user, |_| {})
    }

    /// [`chat_async`](Self::chat_async), calling `register` with the request number
    /// before anything can answer that request (not even [`Peer::chat_cancel`] on
    /// another thread): for per-request data the answer's consumer looks up, without
    /// holding a lock across this call. `register` runs on the calling thread, under no
    /// lock of the peer; it is not called when the request is refused up front.
    pub fn chat_async_with(&self, user: &str, register: impl FnOnce(u64)) -> Result<u64> {
        let inner = self.inner.clone();
        let name = user.to_string();
        self.start_async::<Chat>(user, register, move |q, request| {
            // Answered as soon as the chat is open, before its reader starts: the
            // answer handing it over comes before any message or close of it.
            let mut given = None;
            let mut unwanted = None;
            let result = super::chat::request_with(&inner, &name, &mut |chat| {
                if q.settle(request, Ok(chat.clone())).is_ok() {
                    given = Some(chat.clone());
                    return;
                }
                // Cancelled meanwhile (answered already): report nothing of it.
                if q.queued {
                    q.mute(chat.id());
                }
                unwanted = Some(chat.clone());
            });
            if let Some(chat) = unwanted {
                chat.close();
                return;
            }
            if let Some(chat) = given {
                // Handed over; if its reader could not start (the peer is
                // stopping), end it so its close is reported.
                if result.is_err() {
                    chat.close();
                }
                return;
            }
            if let Err(Ok(chat)) = q.settle(request, result) {
                // Cancelled: the answer was given already.
                chat.close();
            }
        })
    }

    /// Cancel [`chat_async`](Self::chat_async) request `request`: its answer, at once,
    /// is [`Event::ChatOpened`] with [`Error::Cancelled`]; if the other side accepts
    /// later, that chat is closed at once and none of its events is queued (in hook
    /// mode the answer goes to the hook, on this thread). `false` if the request was
    /// already answered (or is unknown).
    pub fn chat_cancel(&self, request: u64) -> bool {
        self.cancel_async::<Chat>(request)
    }

    /// Offer the file at `path` to `user` without waiting: returns a request number at
    /// once; the answer (see [`Peer::offer_file`]) arrives as [`Event::OfferAnswered`]
    /// with that number (or, without an event queue, through the
    /// [`PeerBuilder::on_offer_answered`] hook), ahead of any event of its transfer.
    /// Needs one of the two ([`Error::InvalidArgument`] without).
    pub fn offer_file_async(&self, user: &str, path: impl AsRef<std::path::Path>) -> Result<u64> {
        self.offer_file_async_with(user, path, |_| {})
    }

    /// [`offer_file_async`](Self::offer_file_async), calling `register` with the
    /// request number before anything can answer that request (as
    /// [`chat_async_with`](Self::chat_async_with)).
    pub fn offer_file_async_with(
        &self,
        user: &str,
        path: impl AsRef<std::path::Path>,
        register: impl FnOnce(u64),
    ) -> Result<u64> {
        let inner = self.inner.clone();
        let name = user.to_string();
        let path = path.as_ref().to_path_buf();
        self.start_async::<super::Transfer>(user, register, move |q, request| {
            // Answered as soon as accepted, before the sending starts: the answer
            // comes before any event of the transfer.
            let mut answered = false;
            let result = super::push::offer_with(&inner, &name, &path, &mut |t| {
                if q.settle(request, Ok(t.clone())).is_ok() {
                    answered = true;
                    return true;
                }
                // Cancelled meanwhile (answered already): send nothing, and report
                // nothing of the transfer.
                if q.queued {
                    q.mute_transfer(t.id());
                }
                false
            });
            if !answered {
                // Not handed over: the outcome is the answer, unless a cancel gave
                // one already. A transfer only ever comes through the callback above,
                // so nothing handed back needs stopping.
                let _ = q.settle(request, result);
            }
        })
    }

    /// Cancel [`offer_file_async`](Self::offer_file_async) request `request`: its
    /// answer, at once, is [`Event::OfferAnswered`] with [`Error::Cancelled`] (in hook
    /// mode the hook gets it, on this thread); if the other side accepts later, the
    /// transfer is stopped at once and none of its events is queued. `false` if the
    /// request was already answered (or is unknown).
    pub fn offer_cancel(&self, request: u64) -> bool {
        self.cancel_async::<super::Transfer>(request)
    }

    /// The frame of [`chat_async_with`](Self::chat_async_with) and
    /// [`offer_file_async_with`](Self::offer_file_async_with): refuse the request if its
    /// answer would have nowhere to go, number it, show the number to `register`, list
    /// it as pending, then run `run(queue, request)` on its own thread, which answers
    /// through [`EventQueue::settle`]. In that order, nothing can answer a request
    /// before `register` has seen it.
    fn start_async<A: AsyncAnswer>(
        &self,
        user: &str,
        register: impl FnOnce(u64),
        run: impl FnOnce(Arc<EventQueue>, u64) + Send + 'static,
    ) -> Result<u64> {
        let q = self
            .events
            .clone()
            .filter(|q| A::answerable(q))
            .ok_or_else(|| Error::InvalidArgument(A::REFUSED.into()))?;
        if self.inner.stopping() {
            return Err(Error::Shutdown);
        }
        let request = q.next_request.fetch_add(1, Ordering::Relaxed);
        register(request);
        A::pending(&mut q.state.lock()).insert(request, user.to_string());
        let queue = q.clone();
        let spawned = self
            .inner
            .threads
            .spawn(&format!("{}{request}", A::THREAD), move || {
                run(queue, request)
            });
        if let Err(e) = spawned {
            // Nothing will answer it: unlist it (the caller gets the error instead).
            A::pending(&mut q.state.lock()).remove(&request);
            return Err(e.into());
        }
        Ok(request)
    }

    /// Answer async request `request` with [`Error::Cancelled`] at once, if it is still
    /// pending; its thread then finds it answered and disposes of what it gets.
    fn cancel_async<A: AsyncAnswer>(&self, request: u64) -> bool {
        self.events
            .as_ref()
            .is_some_and(|q| q.settle::<A>(request, Err(Error::Cancelled)).is_ok())
    }

    /// Let the queue's waiting producers see the peer stop.
    pub(super) fn attach_queue(&self) {
        if let Some(q) = &self.events {
            let _ = q.inner.set(Arc::downgrade(&self.inner));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(i: usize) -> Event {
        Event::ChatMessage {
            chat: 7,
            from: "bob".into(),
            text: format!("m{i}"),
        }
    }

    #[cfg(unix)]
    fn fd_readable(q: &EventQueue) -> bool {
        let mut p = libc::pollfd {
            fd: q.notify.as_ref().unwrap().read,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    /// A queue of 4 flooded with progress and 20 messages (from a producer thread that
    /// must wait for room), then a close, a done and background events: every message
    /// in order, the close and the done are taken; progress is coalesced; background
    /// events past the capacity are dropped and counted; the descriptor is readable
    /// exactly while something waits.
    #[test]
    fn overflow_rule_keeps_what_must_be_delivered() {
        let q = Arc::new(EventQueue::new(4));
        #[cfg(unix)]
        assert!(!fd_readable(&q));
        for i in 0..1000 {
            q.push_progress(1, i, 1000);
        }
        #[cfg(unix)]
        assert!(fd_readable(&q));
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    q.push_waiting(message(i));
                }
                q.push_always(Event::ChatClosed {
                    chat: 7,
                    peer: "bob".into(),
                    by: ChatClosedBy::Remote,
                });
            })
        };
        // The producer fills the queue and waits for room.
        while q.state.lock().bounded < 4 {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Must-deliver kinds go past the capacity; background events are dropped.
        q.push_always(Event::TransferDone {
            transfer: 1,
            path: "/tmp/x".into(),
        });
        q.push_or_drop(Event::Peer(PeerEvent::RegistryRestored));
        assert_eq!(q.dropped.load(Ordering::Relaxed), 1);
        for i in 0..1000 {
            q.push_progress(1, i, 1000);
        }

        let (mut messages, mut progress, mut closed, mut done) = (0, 0, 0, 0);
        while closed == 0 || done == 0 || messages < 20 {
            match q.pop(Some(Duration::from_secs(10))).expect("an event") {
                Event::ChatMessage { text, .. } => {
                    assert_eq!(text, format!("m{messages}"));
                    messages += 1;
                }
                Event::ChatClosed { .. } => {
                    assert_eq!(messages, 20, "the close comes after every message");
                    closed += 1;
                }
                Event::TransferProgress { received, .. } => {
                    assert_eq!(received, 999, "coalesced to the newest");
                    progress += 1;
                }
                Event::TransferDone { .. } => done += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        producer.join().unwrap();
        assert!(progress <= 2, "{progress} progress events");
        assert!(q.pop(Some(Duration::ZERO)).is_none());
        #[cfg(unix)]
        assert!(!fd_readable(&q));
    }
}
