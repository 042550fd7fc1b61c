//! Async chats and file offers started and cancelled from several threads at once, and
//! from inside their own answer callbacks, called from Rust exactly as C calls them.
//!
//! `p2p_peer_chat_async()` / `p2p_peer_offer_file_async()` list the request's user
//! data, and the answer's callback (or event) takes that same table; a cancel answers
//! on the cancelling thread. A library lock held across the call into the core, or
//! taken again by an answer delivered on the same thread, would hang here: every wait
//! is bounded, so a hang is a failure ("… answers within 60 s"), never a stuck test.
//!
//! Asserted, for a peer with callbacks and for a peer with an event queue: every
//! request gets exactly one answer, carrying the user data given with it; requests
//! cancelled before their answer are answered `P2P_CANCELLED`; with the queue, no event
//! of a chat that opened for a cancelled request is queued; nothing hangs.

mod common;

use common::ffi::{c, connect_peer, last_error, start_registry};
use p2pchat::chat::*;
use p2pchat::events::*;
use p2pchat::peer::*;
use p2pchat::push::*;
use p2pchat::registry::*;
use p2pchat::status::p2p_status::{self, *};
use p2pchat::transfer::*;
use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Far beyond a healthy run (a few seconds); only a hang gets near it.
const HANG: Duration = Duration::from_secs(60);
const THREADS: usize = 3;
const CHATS_PER_THREAD: usize = 16;
const OFFERS_PER_THREAD: usize = 6;
/// Requests started (and cancelled) from inside answer callbacks.
const NESTED: usize = 12;

/// What was asked and what was answered, per request id.
#[derive(Default)]
struct Book {
    peer: AtomicPtr<p2p_peer>,
    next_token: AtomicUsize,
    nested: AtomicUsize,
    /// Request id → the token given as its user data.
    issued: Mutex<HashMap<u64, usize>>,
    /// Request id → (the user data the answer carried, its status).
    answers: Mutex<HashMap<u64, (usize, p2p_status)>>,
    duplicates: AtomicUsize,
    /// Ids cancelled by a cancel that returned P2P_OK.
    cancelled: Mutex<Vec<u64>>,
}

impl Book {
    fn token(&self) -> usize {
        self.next_token.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn answered(&self, request: u64, ud: *mut c_void, status: p2p_status) {
        if self
            .answers
            .lock()
            .unwrap()
            .insert(request, (ud as usize, status))
            .is_some()
        {
            self.duplicates.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn cancel(&self, request: u64, chat: bool) {
        let peer = self.peer.load(Ordering::SeqCst);
        // SAFETY: the peer outlives every caller (freed after all answers are in).
        let status = unsafe {
            if chat {
                p2p_peer_chat_cancel(peer, request)
            } else {
                p2p_peer_offer_cancel(peer, request)
            }
        };
        if status == P2P_OK {
            self.cancelled.lock().unwrap().push(request);
        }
    }

    /// Start a request (a chat with bob, or offering `file` to him) with a fresh token
    /// as its user data; its id.
    fn start(&self, file: Option<&std::ffi::CStr>) -> u64 {
        let peer = self.peer.load(Ordering::SeqCst);
        let token = self.token();
        let mut id = 0;
        // Listed before the call: an answer may come before the call returns.
        // SAFETY: valid arguments; the user data is never dereferenced.
        let status = unsafe {
            match file {
                None => p2p_peer_chat_async(peer, c"bob".as_ptr(), token as *mut c_void, &mut id),
                Some(f) => p2p_peer_offer_file_async(
                    peer,
                    c"bob".as_ptr(),
                    f.as_ptr(),
                    token as *mut c_void,
                    &mut id,
                ),
            }
        };
        assert_eq!(status, P2P_OK, "{}", last_error());
        self.issued.lock().unwrap().insert(id, token);
        id
    }

    /// From inside an answer: start another request and cancel it on this thread (its
    /// answer comes nested, before the cancel returns), a bounded number of times.
    fn nest(&self, request: u64, chat: bool) {
        if request % 3 == 0 && self.nested.fetch_add(1, Ordering::SeqCst) < NESTED {
            let file = c(FILE.lock().unwrap().as_str());
            let id = self.start((!chat).then_some(file.as_c_str()));
            self.cancel(id, chat);
        }
    }

    /// Wait until every issued request is answered, then check the answers.
    fn check(&self, what: &str) {
        let deadline = Instant::now() + HANG;
        loop {
            let issued = self.issued.lock().unwrap().len();
            let answered = self.answers.lock().unwrap().len();
            if answered >= issued && self.nested.load(Ordering::SeqCst) >= NESTED {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {answered} of {issued} requests answered within {} s (a hang)",
                HANG.as_secs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let issued = self.issued.lock().unwrap().clone();
        let answers = self.answers.lock().unwrap().clone();
        assert_eq!(
            self.duplicates.load(Ordering::SeqCst),
            0,
            "{what}: answered twice"
        );
        assert_eq!(
            issued.len(),
            answers.len(),
            "{what}: answers to unknown requests"
        );
        for (id, token) in &issued {
            let (ud, _) = answers[id];
            assert_eq!(
                ud, *token,
                "{what}: request {id} answered with another user data"
            );
        }
        let mut by_status: HashMap<String, usize> = HashMap::new();
        for (_, status) in answers.values() {
            *by_status.entry(format!("{status:?}")).or_default() += 1;
        }
        eprintln!("{what}: {} requests answered: {by_status:?}", answers.len());
        for id in self.cancelled.lock().unwrap().iter() {
            assert_eq!(
                answers[id].1, P2P_CANCELLED,
                "{what}: cancelled request {id}"
            );
        }
    }
}

/// The file alice offers.
static FILE: Mutex<String> = Mutex::new(String::new());

unsafe extern "C" fn bob_request(_ud: *mut c_void, request: *mut p2p_chat_request) {
    let mut chat = null_mut();
    if p2p_chat_request_accept(request, &mut chat) == P2P_OK {
        p2p_chat_free(chat);
    }
    p2p_chat_request_free(request);
}

unsafe extern "C" fn chat_opened(
    ud: *mut c_void,
    request: u64,
    request_ud: *mut c_void,
    status: p2p_status,
    chat: *mut p2p_chat,
    _message: *const c_char,
) {
    let book = &*(ud as *const Book);
    book.answered(request, request_ud, status);
    if !chat.is_null() {
        p2p_chat_free(chat);
    }
    book.nest(request, true);
}

unsafe extern "C" fn offer_answered(
    ud: *mut c_void,
    request: u64,
    request_ud: *mut c_void,
    status: p2p_status,
    transfer: *mut p2p_transfer,
    _message: *const c_char,
) {
    let book = &*(ud as *const Book);
    book.answered(request, request_ud, status);
    if !transfer.is_null() {
        p2p_transfer_free(transfer);
    }
    book.nest(request, false);
}

/// Several threads start chats and offers, cancelling some at once, some a moment
/// later, some never.
fn hammer(book: &'static Book, file: &std::ffi::CStr) {
    let file = Arc::new(file.to_owned());
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let file = file.clone();
            std::thread::spawn(move || {
                for i in 0..CHATS_PER_THREAD + OFFERS_PER_THREAD {
                    let chat = i < CHATS_PER_THREAD;
                    let id = book.start((!chat).then_some(file.as_c_str()));
                    match (i + t) % 3 {
                        0 => book.cancel(id, chat),
                        1 => {
                            std::thread::sleep(Duration::from_millis(2));
                            book.cancel(id, chat);
                        }
                        _ => {}
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn async_requests_and_cancels_from_many_threads_and_callbacks_never_hang() {
    let (registry, addr) = start_registry();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("offered.txt");
    std::fs::write(&file, b"pushed").unwrap();
    *FILE.lock().unwrap() = file.to_str().unwrap().to_string();
    let file = c(file.to_str().unwrap());
    for d in ["alice", "bob", "carol"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    // Bob accepts every chat (and closes it), declines every offer.
    let bob = connect_peer(&addr, "bob", &dir.path().join("bob"), |cfg| unsafe {
        p2p_peer_config_on_chat_request(cfg, Some(bob_request));
    });

    // Callbacks: answers on library threads, and for cancels on the cancelling thread
    // (a worker, or an answer callback cancelling its nested request).
    let book: &'static Book = Box::leak(Box::default());
    let alice = connect_peer(&addr, "alice", &dir.path().join("alice"), |cfg| unsafe {
        p2p_peer_config_set_user_data(cfg, book as *const Book as *mut c_void);
        p2p_peer_config_on_chat_opened(cfg, Some(chat_opened));
        p2p_peer_config_on_offer_answered(cfg, Some(offer_answered));
    });
    book.peer.store(alice, Ordering::SeqCst);
    hammer(book, &file);
    book.check("callbacks");

    // An event queue: a thread drains it, cancelling other requests as it goes.
    let queued: &'static Book = Box::leak(Box::default());
    let carol = connect_peer(&addr, "carol", &dir.path().join("carol"), |cfg| unsafe {
        p2p_peer_config_set_event_queue(cfg, 64);
    });
    queued.peer.store(carol, Ordering::SeqCst);
    queued.nested.store(NESTED, Ordering::SeqCst);
    let carol_ptr = carol as usize;
    let drainer = std::thread::spawn(move || {
        let carol = carol_ptr as *mut p2p_peer;
        let deadline = Instant::now() + HANG;
        // Chats handed out; an event of any other chat (one opened for a cancelled
        // request) must never be queued.
        let mut handed = std::collections::HashSet::new();
        let mut strays = 0;
        while Instant::now() < deadline {
            let mut slot = std::mem::MaybeUninit::<p2p_event>::uninit();
            // SAFETY: valid arguments; the event is filled on P2P_OK, freed below.
            if unsafe { p2p_peer_next_event(carol, 100, slot.as_mut_ptr()) } != P2P_OK {
                continue;
            }
            // SAFETY: filled by the library (P2P_OK).
            let mut e = unsafe { slot.assume_init() };
            match e.kind {
                p2p_event_kind::P2P_EV_CHAT_OPENED | p2p_event_kind::P2P_EV_OFFER_ANSWERED => {
                    queued.answered(e.id, e.user_data, e.status);
                    // SAFETY: handles owned by this test from the event on.
                    unsafe {
                        if !e.chat.is_null() {
                            let mut id = 0;
                            assert_eq!(p2p_chat_id(e.chat, &mut id), P2P_OK);
                            handed.insert(id);
                            p2p_chat_free(e.chat);
                        }
                        if !e.transfer.is_null() {
                            p2p_transfer_free(e.transfer);
                        }
                    }
                    // Cancel the next request, whatever state it is in.
                    queued.cancel(e.id + 1, e.kind == p2p_event_kind::P2P_EV_CHAT_OPENED);
                }
                p2p_event_kind::P2P_EV_CHAT_MESSAGE | p2p_event_kind::P2P_EV_CHAT_CLOSED
                    if !handed.contains(&e.id) =>
                {
                    strays += 1;
                }
                _ => {}
            }
            // SAFETY: filled by the library; freed once.
            unsafe { p2p_event_free(&mut e) };
            let done = queued.answers.lock().unwrap().len();
            if done >= THREADS * (CHATS_PER_THREAD + OFFERS_PER_THREAD) {
                break;
            }
        }
        // The last closes of handed-out chats, and anything stray, come within this.
        loop {
            let mut slot = std::mem::MaybeUninit::<p2p_event>::uninit();
            // SAFETY: as above.
            if unsafe { p2p_peer_next_event(carol, 300, slot.as_mut_ptr()) } != P2P_OK {
                break;
            }
            let mut e = unsafe { slot.assume_init() };
            let chat_event = matches!(
                e.kind,
                p2p_event_kind::P2P_EV_CHAT_MESSAGE | p2p_event_kind::P2P_EV_CHAT_CLOSED
            );
            if chat_event && !handed.contains(&e.id) {
                strays += 1;
            }
            unsafe { p2p_event_free(&mut e) };
        }
        strays
    });
    hammer(queued, &file);
    queued.check("event queue");
    let strays = drainer.join().unwrap();
    assert_eq!(strays, 0, "events of chats opened for cancelled requests");

    // SAFETY: every answer is in; the handles are freed once.
    unsafe {
        p2p_peer_free(carol);
        p2p_peer_free(alice);
        p2p_peer_free(bob);
        p2p_registry_free(registry);
    }
}
