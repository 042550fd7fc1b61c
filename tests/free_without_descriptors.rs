//! `p2p_peer_free` returns even when the process has no descriptor left.
//!
//! Stopping a peer must wake its listener thread, blocked in `accept()`. It used to do
//! that only by connecting to itself, which needs a new socket: in a process out of
//! descriptors (many unfreed chats, a busy application) the connection could not be
//! made, the listener never woke, and `p2p_peer_free` waited for it forever, even
//! after descriptors were free again. This test makes that happen on purpose: alice
//! downloads from bob, the registry goes away (so her registry connection holds no
//! descriptor she could give back while stopping), every descriptor the process may
//! open is taken, and a hog thread keeps taking any that is released; then alice is
//! freed, which must return within a deadline. This file holds one test, because it
//! lowers the process's descriptor limit.

mod common;

use common::ffi::{connect_peer, last_error, start_registry};
use p2pchat::peer::*;
use p2pchat::registry::*;
use p2pchat::status::p2p_status::*;
use p2pchat::transfer::*;
use std::ffi::{c_char, c_void, CStr};
use std::fs::File;
use std::path::Path;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long freeing alice may take (it takes milliseconds; this is for a loaded CI).
const FREE_DEADLINE: Duration = Duration::from_secs(30);

/// A pointer moved to another thread.
struct SendPtr<T>(*mut T);
// SAFETY: the handles are documented as usable from any thread.
unsafe impl<T> Send for SendPtr<T> {}

/// What alice's callbacks share with the test.
#[derive(Default)]
struct Alice {
    /// Her registry connection was lost.
    lost: AtomicBool,
    /// Her download has made progress (it is running).
    receiving: AtomicBool,
}

unsafe extern "C" fn on_event(ud: *mut c_void, kind: p2p_peer_event_kind, _d: *const c_char) {
    if kind == p2p_peer_event_kind::P2P_EVENT_REGISTRY_LOST {
        (*(ud as *const Alice)).lost.store(true, Ordering::SeqCst);
    }
}

/// Slows the download down (20 ms a chunk), so it is still running when
/// alice is freed.
unsafe extern "C" fn on_progress(ud: *mut c_void, _id: u64, _got: u64, _total: u64) {
    (*(ud as *const Alice))
        .receiving
        .store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(20));
}

fn connect(registry: &CStr, name: &str, dir: &Path, alice: Option<&Alice>) -> *mut p2p_peer {
    connect_peer(registry, name, dir, |config| {
        if let Some(alice) = alice {
            let ud = alice as *const Alice as *mut c_void;
            // SAFETY: a live config; `alice` outlives the peer.
            unsafe {
                assert_eq!(p2p_peer_config_set_user_data(config, ud), P2P_OK);
                assert_eq!(p2p_peer_config_on_event(config, Some(on_event)), P2P_OK);
                assert_eq!(
                    p2p_peer_config_on_transfer_progress(config, Some(on_progress)),
                    P2P_OK
                );
            }
        }
    })
}

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

/// The soft descriptor limit, and a guard that restores it.
struct Limit(libc::rlimit);

impl Limit {
    fn lower_to(soft: u64) -> Limit {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain getrlimit/setrlimit on valid structs.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
            let new = libc::rlimit {
                rlim_cur: soft.min(old.rlim_cur),
                rlim_max: old.rlim_max,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &new), 0);
        }
        Limit(old)
    }
}

impl Drop for Limit {
    fn drop(&mut self) {
        // SAFETY: restores what getrlimit returned.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.0) };
    }
}

#[test]
fn freeing_a_downloading_peer_returns_with_no_descriptor_left() {
    let (registry, addr) = start_registry();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(db.path().join("big.bin"), vec![5u8; 16 << 20]).unwrap();
    let state = Alice::default();
    let alice = connect(&addr, "alice", da.path(), Some(&state));
    let bob = connect(&addr, "bob", db.path(), None);

    // SAFETY: live handles, each freed once.
    unsafe {
        let mut transfer = null_mut();
        let st = p2p_peer_fetch(alice, c"bob".as_ptr(), c"big.bin".as_ptr(), &mut transfer);
        assert_eq!(st, P2P_OK, "{}", last_error());

        // The download runs (bob has checked alice's key with the registry, so the
        // registry is no longer needed for it)...
        let deadline = Instant::now() + Duration::from_secs(10);
        while !state.receiving.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the download did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        // ...then the registry goes; alice notices and holds no registry connection any
        // more.
        assert_eq!(p2p_registry_stop(registry), P2P_OK);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !state.lost.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "alice did not notice the registry go"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut finished = true;
        assert_eq!(p2p_transfer_is_finished(transfer, &mut finished), P2P_OK);
        assert!(!finished, "the download should still be running");

        // Take every descriptor the process may open, and keep taking any released.
        let limit = Limit::lower_to(open_descriptors() + 64);
        let mut hog: Vec<File> = Vec::new();
        while let Ok(f) = File::open("/dev/null") {
            hog.push(f);
        }
        let hogging = Arc::new(AtomicBool::new(true));
        let hogger = {
            let hogging = hogging.clone();
            std::thread::spawn(move || {
                let mut more = Vec::new();
                while hogging.load(Ordering::SeqCst) {
                    if let Ok(f) = File::open("/dev/null") {
                        more.push(f);
                    }
                    std::thread::yield_now();
                }
                more
            })
        };

        let a = SendPtr(alice);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let started = Instant::now();
        std::thread::spawn(move || {
            let a = a;
            p2p_peer_free(a.0);
            let _ = done_tx.send(());
        });
        let freed = done_rx.recv_timeout(FREE_DEADLINE).is_ok();
        let took = started.elapsed();

        hogging.store(false, Ordering::SeqCst);
        drop(hogger.join().unwrap());
        drop(hog);
        drop(limit);
        assert!(
            freed,
            "p2p_peer_free did not return within {FREE_DEADLINE:?} with no descriptor left"
        );
        println!("p2p_peer_free with no descriptor left returned in {took:.1?}");

        assert_eq!(p2p_transfer_wait(transfer, null_mut()), P2P_CANCELLED);
        p2p_transfer_free(transfer);
        p2p_peer_free(bob);
        p2p_registry_free(registry);
    }
}
