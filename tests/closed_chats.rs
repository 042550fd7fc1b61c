//! A chat that has ended holds no descriptor, though its handle is not freed yet.
//!
//! Hundreds of chats are opened between two peers over loopback and ended one by one,
//! by either side, and none of the handles is freed; the process's open descriptors
//! (`/proc/self/fd`) and threads (`/proc/self/task`) must come back to where they were
//! before the first chat, while every handle still answers (`P2P_CLOSED` for sending).
//! Only then are the handles freed. This file holds one test, so nothing else in the
//! process opens descriptors meanwhile.

mod common;

use common::ffi::{connect_peer, last_error, start_registry};
use p2pchat::chat::*;
use p2pchat::peer::*;
use p2pchat::registry::*;
use p2pchat::status::p2p_status::*;
use p2pchat::strings::p2p_string_free;
use std::ffi::{c_void, CStr};
use std::path::Path;
use std::ptr::null_mut;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Chats opened and ended (`P2P_CLOSED_CHATS` overrides it). Before chats released
/// their socket when they ended, each ended chat kept one descriptor on each side until
/// freed: 2 × CHATS here.
const CHATS: usize = 400;
/// Descriptors the process may hold above its baseline once every chat has ended
/// (connections in the middle of closing, the registry's own bookkeeping).
const SLACK: usize = 8;

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// Wait (bounded) until `f` gives at most `limit`; the last value seen.
fn settle(limit: usize, f: impl Fn() -> usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = f();
        if now <= limit || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `f` once it has not changed for 200 ms (bounded): a count with nothing in flight.
fn steady(f: impl Fn() -> usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = f();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = f();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// A pointer kept by a callback for the test thread.
struct SendPtr(*mut p2p_chat);
// SAFETY: chat handles are documented as usable from any thread.
unsafe impl Send for SendPtr {}

/// Bob's inbox: the chats his callback accepted.
#[derive(Default)]
struct Accepted {
    chats: Mutex<Vec<SendPtr>>,
    cv: Condvar,
}

unsafe extern "C" fn accept(ud: *mut c_void, request: *mut p2p_chat_request) {
    let inbox = &*(ud as *const Accepted);
    let mut chat = null_mut();
    assert_eq!(p2p_chat_request_accept(request, &mut chat), P2P_OK);
    p2p_chat_request_free(request);
    inbox.chats.lock().unwrap().push(SendPtr(chat));
    inbox.cv.notify_all();
}

fn connect(registry: &CStr, name: &str, dir: &Path, inbox: Option<&Accepted>) -> *mut p2p_peer {
    connect_peer(registry, name, dir, |config| {
        if let Some(inbox) = inbox {
            let ud = inbox as *const Accepted as *mut c_void;
            // SAFETY: a live config; `inbox` outlives the peer.
            unsafe {
                assert_eq!(p2p_peer_config_set_user_data(config, ud), P2P_OK);
                assert_eq!(
                    p2p_peer_config_on_chat_request(config, Some(accept)),
                    P2P_OK
                );
            }
        }
    })
}

fn is_closed(chat: *mut p2p_chat) -> bool {
    let mut closed = false;
    // SAFETY: a live handle.
    assert_eq!(unsafe { p2p_chat_is_closed(chat, &mut closed) }, P2P_OK);
    closed
}

#[test]
fn ended_chats_release_their_descriptors_before_they_are_freed() {
    let (registry, addr) = start_registry();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let inbox = Accepted::default();
    let alice = connect(&addr, "alice", da.path(), None);
    let bob = connect(&addr, "bob", db.path(), Some(&inbox));

    // One chat first, so lazily made things (the registry link's lookups) are counted
    // in the baseline.
    let mut handles: Vec<*mut p2p_chat> = Vec::new();
    let open = |n: usize| -> (*mut p2p_chat, *mut p2p_chat) {
        let mut chat = null_mut();
        // SAFETY: valid arguments.
        let status = unsafe { p2p_peer_chat(alice, c"bob".as_ptr(), &mut chat) };
        assert_eq!(status, P2P_OK, "chat {n}: {}", last_error());
        let guard = inbox.chats.lock().unwrap();
        let (mut guard, timeout) = inbox
            .cv
            .wait_timeout_while(guard, Duration::from_secs(10), |v| v.is_empty())
            .unwrap();
        assert!(!timeout.timed_out(), "bob did not accept chat {n}");
        let bobs = guard.pop().unwrap().0;
        (chat, bobs)
    };
    let (a0, b0) = open(0);
    // SAFETY: live handles, freed once.
    unsafe {
        assert_eq!(p2p_chat_close(a0), P2P_OK);
        p2p_chat_free(a0);
        p2p_chat_free(b0);
    }
    let fds_before = steady(|| count("/proc/self/fd"));
    let threads_before = steady(|| count("/proc/self/task"));

    let chats: usize = std::env::var("P2P_CLOSED_CHATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CHATS);
    let started = Instant::now();
    for n in 1..=chats {
        let (mine, bobs) = open(n);
        // SAFETY: live handles.
        unsafe {
            assert_eq!(p2p_chat_send(mine, c"hi".as_ptr()), P2P_OK);
            // Alternate who ends it; the other side's chat ends as closed remotely.
            let (ender, other) = if n % 2 == 0 {
                (mine, bobs)
            } else {
                (bobs, mine)
            };
            assert_eq!(p2p_chat_close(ender), P2P_OK);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !is_closed(other) {
                assert!(
                    Instant::now() < deadline,
                    "chat {n} did not end on both sides"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(p2p_chat_send(ender, c"late".as_ptr()), P2P_CLOSED);
        }
        handles.push(mine);
        handles.push(bobs);
    }
    let took = started.elapsed();

    let fds_after = settle(fds_before, || count("/proc/self/fd"));
    let threads_after = settle(threads_before, || count("/proc/self/task"));
    println!(
        "{chats} ended, unfreed chats ({} handles) in {took:.1?}: descriptors {fds_before} -> \
         {fds_after}, threads {threads_before} -> {threads_after}",
        handles.len()
    );
    assert!(
        fds_after <= fds_before + SLACK,
        "{chats} ended but unfreed chats still hold descriptors: {fds_before} before, \
         {fds_after} after"
    );
    assert!(
        threads_after <= threads_before + 2,
        "the chats' reader threads did not end: {threads_before} before, {threads_after} after"
    );

    // Every handle still answers, and frees cleanly.
    // SAFETY: live handles, each freed once.
    unsafe {
        for &chat in &handles {
            assert!(is_closed(chat));
            assert_eq!(p2p_chat_send(chat, c"anyone?".as_ptr()), P2P_CLOSED);
            assert_eq!(p2p_chat_close(chat), P2P_OK);
            let mut id = 0;
            assert_eq!(p2p_chat_id(chat, &mut id), P2P_OK);
            assert_ne!(id, 0);
            let mut name = null_mut();
            assert_eq!(p2p_chat_peer_name(chat, &mut name), P2P_OK);
            assert!(matches!(
                CStr::from_ptr(name).to_str().unwrap(),
                "alice" | "bob"
            ));
            p2p_string_free(name);
        }
        for chat in handles {
            p2p_chat_free(chat);
        }
        p2p_peer_free(alice);
        p2p_peer_free(bob);
        p2p_registry_free(registry);
    }
}
