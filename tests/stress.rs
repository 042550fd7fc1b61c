//! Stress: peers freed with `p2p_peer_free` while downloads, chats and callbacks are in
//! flight, called from Rust exactly as C calls them.
//!
//! Every iteration connects two fresh peers, alice and bob, to one registry; alice
//! downloads a file from bob and chats with him (bob accepts from his chat-request
//! callback and answers every message from his message callback, so callbacks call
//! back into the library). Then, after a delay the iteration's seed picks, one or both
//! peers are freed: from this thread, from two threads at once, while a callback is
//! known to be running, or during a chat request still waiting for its answer. Every
//! free must return, every wait on the download must return, and every handle is freed
//! afterwards.
//!
//! A watchdog turns a hang into a failure: when no iteration step completes for
//! [`STALL`], it prints every thread's stack (through gdb when installed, else each
//! thread's name and kernel wait channel) and aborts the process.
//!
//! `cargo test --test stress` runs a few iterations; the long run is ignored by default:
//! `P2P_STRESS_ITERATIONS=5000 cargo test --release --test stress -- --ignored`.

use p2pchat::chat::*;
mod common;

use common::ffi::{c, connect_peer, last_error, start_registry};
use p2pchat::peer::*;
use p2pchat::registry::*;
use p2pchat::status::p2p_status;
use p2pchat::transfer::*;
use std::ffi::{c_char, c_void, CStr};
use std::path::Path;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use p2p_status::*;

/// No progress for this long is a hang (every wait in the library is bounded by at most
/// 35 s, so a healthy iteration never gets near it; a loaded CI machine is slow, not
/// this slow).
const STALL: Duration = Duration::from_secs(90);

/// A pointer moved to another thread.
struct SendPtr<T>(*mut T);
// SAFETY: the handles are documented as usable from any thread.
unsafe impl<T> Send for SendPtr<T> {}

/// A small deterministic generator (xorshift64*), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What one peer's callbacks share: the chats bob accepted, and whether a callback is
/// running now (so a free can be aimed at that moment).
#[derive(Default)]
struct Side {
    accepted: Mutex<Vec<SendPtr<p2p_chat>>>,
    in_callback: AtomicUsize,
    callbacks: AtomicU64,
    /// Callbacks sleep this many microseconds, to widen the window a free can hit.
    linger_us: AtomicU64,
    /// Answer chat messages from the message callback.
    reply: AtomicBool,
    /// Set once `p2p_peer_free` of this side's peer has returned: no callback may run
    /// after that.
    freed: AtomicBool,
    /// Callbacks that ran after the free returned (a broken promise of the API).
    late: Mutex<Vec<&'static str>>,
    /// Chat requests that reached this side's request callback.
    requests: AtomicU64,
    /// The side's own peer, once connected: callbacks try to exit it (refused).
    peer: AtomicPtr<p2p_peer>,
    /// Self-exits from callbacks that were not refused with `P2P_WOULD_DEADLOCK`.
    not_refused: Mutex<Vec<String>>,
}

impl Side {
    /// Mark a callback as running for its duration, and linger in it.
    fn enter(&self, what: &'static str) -> Entered<'_> {
        if self.freed.load(Ordering::SeqCst) {
            self.late.lock().unwrap().push(what);
        }
        // Exiting the peer from its own callback must be refused, also while another
        // thread is freeing it (the handle stays valid until that free returns).
        let own = self.peer.load(Ordering::SeqCst);
        if !own.is_null() {
            // SAFETY: a live peer handle (see above).
            let status = unsafe { p2p_peer_exit(own) };
            if status != P2P_WOULD_DEADLOCK {
                let e = format!("{what}: p2p_peer_exit gave {status:?}: {}", last_error());
                self.not_refused.lock().unwrap().push(e);
            }
        }
        self.in_callback.fetch_add(1, Ordering::SeqCst);
        self.callbacks.fetch_add(1, Ordering::SeqCst);
        let linger = self.linger_us.load(Ordering::Relaxed);
        if linger > 0 {
            std::thread::sleep(Duration::from_micros(linger));
        }
        Entered(self)
    }
}

struct Entered<'a>(&'a Side);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.in_callback.fetch_sub(1, Ordering::SeqCst);
    }
}

unsafe fn side<'a>(ud: *mut c_void) -> &'a Side {
    &*(ud as *const Side)
}

unsafe extern "C" fn on_request(ud: *mut c_void, request: *mut p2p_chat_request) {
    let s = side(ud);
    s.requests.fetch_add(1, Ordering::SeqCst);
    let _in = s.enter("on_request");
    let mut chat = null_mut();
    if p2p_chat_request_accept(request, &mut chat) == P2P_OK {
        s.accepted.lock().unwrap().push(SendPtr(chat));
    }
    p2p_chat_request_free(request);
}

unsafe extern "C" fn on_message(
    ud: *mut c_void,
    chat_id: u64,
    _from: *const c_char,
    _text: *const c_char,
    _len: usize,
) {
    let s = side(ud);
    let _in = s.enter("on_message");
    if s.reply.load(Ordering::Relaxed) {
        // Answer on the chat this message came on (bob's accepted chats).
        let accepted = s.accepted.lock().unwrap();
        for chat in accepted.iter() {
            let mut id = 0;
            if p2p_chat_id(chat.0, &mut id) == P2P_OK && id == chat_id {
                let _ = p2p_chat_send(chat.0, c"echo".as_ptr());
            }
        }
    }
}

unsafe extern "C" fn on_closed(
    ud: *mut c_void,
    _id: u64,
    _peer: *const c_char,
    _by: p2p_chat_closed_by,
) {
    let _in = side(ud).enter("on_closed");
}

unsafe extern "C" fn on_progress(ud: *mut c_void, _id: u64, _got: u64, _total: u64) {
    let _in = side(ud).enter("on_progress");
}

unsafe extern "C" fn on_done(ud: *mut c_void, _id: u64, _path: *const c_char) {
    let _in = side(ud).enter("on_done");
}

unsafe extern "C" fn on_failed(ud: *mut c_void, _id: u64, _st: p2p_status, _msg: *const c_char) {
    let _in = side(ud).enter("on_failed");
}

unsafe extern "C" fn on_event(ud: *mut c_void, _kind: p2p_peer_event_kind, _detail: *const c_char) {
    let _in = side(ud).enter("on_event");
}

/// Connect a peer with every callback set, `side` as its user data.
fn connect(registry: &CStr, name: &str, shared: &Path, side: &Side) -> *mut p2p_peer {
    connect_peer(registry, name, shared, |config| {
        let ud = side as *const Side as *mut c_void;
        // SAFETY: a live config; `side` outlives the peer (freed before it is dropped).
        unsafe {
            assert_eq!(p2p_peer_config_set_user_data(config, ud), P2P_OK);
            p2p_peer_config_on_chat_request(config, Some(on_request));
            p2p_peer_config_on_chat_message(config, Some(on_message));
            p2p_peer_config_on_chat_closed(config, Some(on_closed));
            p2p_peer_config_on_transfer_progress(config, Some(on_progress));
            p2p_peer_config_on_transfer_done(config, Some(on_done));
            p2p_peer_config_on_transfer_failed(config, Some(on_failed));
            p2p_peer_config_on_event(config, Some(on_event));
        }
    })
}

/// The watchdog: steps report progress; a step that does not finish within [`STALL`]
/// gets every thread's stack printed and the process aborted.
struct Watchdog {
    last_step: Arc<Mutex<(Instant, String)>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start() -> Watchdog {
        let last_step = Arc::new(Mutex::new((Instant::now(), String::from("start"))));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopping) = (last_step.clone(), stop.clone());
        let slow_dump: Option<Duration> = std::env::var("P2P_STRESS_DUMP_SLOW_FREE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis);
        let thread = std::thread::spawn(move || {
            let mut dumped = String::new();
            while !stopping.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                let (at, what) = seen.lock().unwrap().clone();
                if let Some(limit) = slow_dump {
                    if what.contains(": free (") && at.elapsed() > limit && dumped != what {
                        eprintln!("SLOW: {what:?} running for {:?}", at.elapsed());
                        dump_threads();
                        dumped = what.clone();
                    }
                }
                if at.elapsed() > STALL {
                    eprintln!("HANG: no progress for {STALL:?} after step {what:?}");
                    RELEASE_HOGS.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(500));
                    dump_threads();
                    std::process::abort();
                }
            }
        });
        Watchdog {
            last_step,
            stop,
            thread: Some(thread),
        }
    }

    fn step(&self, what: impl Into<String>) {
        *self.last_step.lock().unwrap() = (Instant::now(), what.into());
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Print every thread's stack: gdb's backtraces when it is installed, else each
/// thread's name and where it sleeps in the kernel.
fn dump_threads() {
    let pid = std::process::id().to_string();
    let gdb = std::process::Command::new("gdb")
        .args(["-p", &pid, "-batch", "-nx", "-ex", "thread apply all bt"])
        .output();
    if let Ok(out) = gdb {
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    }
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let read = |f: &str| std::fs::read_to_string(task.path().join(f)).unwrap_or_default();
            eprintln!(
                "thread {:?} {}: wchan {}",
                task.file_name(),
                read("comm").trim(),
                read("wchan").trim()
            );
        }
    }
}

/// Set by the watchdog before it prints the threads' stacks: a hog gives every
/// descriptor back (gdb and /proc need some).
static RELEASE_HOGS: AtomicBool = AtomicBool::new(false);

/// Every descriptor the process may open, taken: the soft limit is lowered to a little
/// above what is open, the rest opened, and any descriptor released is taken again at
/// once, until the hog is dropped (which gives everything back and restores the
/// limit). One thread does it all.
struct Hog {
    taking: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hog {
    fn take_all() -> Hog {
        let taking = Arc::new(AtomicBool::new(true));
        let still = taking.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
            // SAFETY: plain getrlimit/setrlimit on valid structs.
            unsafe {
                assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
                let lower = libc::rlimit {
                    rlim_cur: (open + 32).min(limit.rlim_cur),
                    rlim_max: limit.rlim_max,
                };
                assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lower), 0);
            }
            let mut files = Vec::new();
            while let Ok(f) = std::fs::File::open("/dev/null") {
                files.push(f);
            }
            let _ = ready_tx.send(());
            while still.load(Ordering::SeqCst) && !RELEASE_HOGS.load(Ordering::SeqCst) {
                if let Ok(f) = std::fs::File::open("/dev/null") {
                    files.push(f);
                }
                std::thread::yield_now();
            }
            drop(files);
            // SAFETY: restores what getrlimit returned.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        });
        let _ = ready_rx.recv();
        Hog {
            taking,
            thread: Some(thread),
        }
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        self.taking.store(false, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How an iteration frees its peers.
#[derive(Debug, Clone, Copy)]
enum Free {
    /// Alice (the downloader) first, then bob.
    AliceThenBob,
    /// Bob (the sender) first, then alice.
    BobThenAlice,
    /// Both at once, from two threads.
    BothAtOnce,
    /// Alice while one of her callbacks is running (a progress callback, most often).
    AliceInCallback,
    /// Bob while one of his callbacks is running (a chat request or message).
    BobInCallback,
    /// Alice while her chat request to bob waits for his answer.
    AliceDuringChatRequest,
    /// Alice while the process has no descriptor left (every one taken, and any
    /// released taken again at once by a hog thread).
    AliceOutOfDescriptors,
}

const FREES: [Free; 7] = [
    Free::AliceThenBob,
    Free::BobThenAlice,
    Free::BothAtOnce,
    Free::AliceInCallback,
    Free::BobInCallback,
    Free::AliceDuringChatRequest,
    Free::AliceOutOfDescriptors,
];

/// Wait (bounded) until `cond` holds; false if it did not within `limit`.
fn wait_until(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

/// One iteration; panics on a broken promise of the API. Returns how long freeing the
/// peers took.
fn iteration(
    n: u64,
    seed: u64,
    registry: &CStr,
    bob_dir: &Path,
    file: &str,
    dog: &Watchdog,
) -> Duration {
    let mut rng = Rng(seed | 1);
    let mode = FREES[rng.below(FREES.len() as u64) as usize];
    let alice_dir = tempfile::tempdir().unwrap();
    // Leaked (a few hundred bytes an iteration) so that a callback run after its
    // peer was freed is recorded as such instead of touching freed memory.
    let alice_side: &'static Side = Box::leak(Box::default());
    let bob_side: &'static Side = Box::leak(Box::default());
    bob_side.reply.store(rng.below(2) == 0, Ordering::Relaxed);
    let linger = [0, 0, 50, 500][rng.below(4) as usize];
    alice_side.linger_us.store(linger, Ordering::Relaxed);
    bob_side.linger_us.store(linger, Ordering::Relaxed);
    let step = |what: &str| dog.step(format!("iteration {n} (seed {seed}, {mode:?}): {what}"));

    step("connect");
    let alice = connect(registry, &format!("alice{n}"), alice_dir.path(), alice_side);
    let bob = connect(registry, &format!("bob{n}"), bob_dir, bob_side);
    alice_side.peer.store(alice, Ordering::SeqCst);
    bob_side.peer.store(bob, Ordering::SeqCst);
    let bob_name = c(&format!("bob{n}"));

    // SAFETY: every handle below is live until freed once, at the end.
    unsafe {
        step("fetch");
        let mut transfer = null_mut();
        let st = p2p_peer_fetch(alice, bob_name.as_ptr(), c(file).as_ptr(), &mut transfer);
        assert_eq!(st, P2P_OK, "fetch: {}", last_error());

        // A chat from alice to bob, on this thread or (to be freed while it waits)
        // on another one.
        let mut chat = null_mut();
        let mut asking = None;
        if matches!(mode, Free::AliceDuringChatRequest) {
            bob_side.linger_us.store(20_000, Ordering::Relaxed);
            let (a, name) = (SendPtr(alice), bob_name.clone());
            asking = Some(std::thread::spawn(move || {
                let a = a;
                let mut chat = null_mut();
                let st = p2p_peer_chat(a.0, name.as_ptr(), &mut chat);
                (st, SendPtr(chat))
            }));
            // Alice may be freed only once her call is under way (the API forbids
            // freeing a handle another thread may still start a call on): once the
            // request has reached bob's callback, which lingers in it.
            step("wait for the chat request to reach bob");
            let reached = wait_until(Duration::from_secs(10), || {
                bob_side.requests.load(Ordering::SeqCst) > 0
            });
            assert!(reached, "iteration {n}: the chat request never reached bob");
        } else if rng.below(3) != 0 {
            step("chat");
            let st = p2p_peer_chat(alice, bob_name.as_ptr(), &mut chat);
            assert_eq!(st, P2P_OK, "chat: {}", last_error());
            for _ in 0..rng.below(4) {
                let st = p2p_chat_send(chat, c"hello".as_ptr());
                assert!(matches!(st, P2P_OK | P2P_CLOSED), "{st:?} {}", last_error());
            }
        }

        step("delay");
        match rng.below(4) {
            0 => {}
            1 => std::thread::sleep(Duration::from_micros(rng.below(2000))),
            2 => std::thread::sleep(Duration::from_millis(rng.below(20))),
            _ => {
                for _ in 0..rng.below(100_000) {
                    std::hint::spin_loop();
                }
            }
        }

        step(&format!("free ({mode:?})"));
        let freeing = Instant::now();
        // Either exit first (callbacks running meanwhile try to exit their own peer,
        // which must be refused) and then free, or free at once (the handle is hidden
        // from the callbacks first: it is gone once the free returns).
        let exit_first = rng.below(2) == 0;
        let free = move |peer: SendPtr<p2p_peer>, side: &Side| {
            if exit_first {
                assert_eq!(p2p_peer_exit(peer.0), P2P_OK, "{}", last_error());
                side.freed.store(true, Ordering::SeqCst);
                side.peer.store(null_mut(), Ordering::SeqCst);
                p2p_peer_free(peer.0);
            } else {
                side.peer.store(null_mut(), Ordering::SeqCst);
                p2p_peer_free(peer.0);
                side.freed.store(true, Ordering::SeqCst);
            }
        };
        let (a, b) = (SendPtr(alice), SendPtr(bob));
        match mode {
            Free::AliceThenBob | Free::AliceDuringChatRequest => {
                free(a, alice_side);
                free(b, bob_side);
            }
            Free::BobThenAlice => {
                free(b, bob_side);
                free(a, alice_side);
            }
            Free::BothAtOnce => {
                let other = std::thread::spawn(move || free(b, bob_side));
                free(a, alice_side);
                other.join().unwrap();
            }
            Free::AliceInCallback => {
                wait_until(Duration::from_millis(200), || {
                    alice_side.in_callback.load(Ordering::SeqCst) > 0
                });
                free(a, alice_side);
                free(b, bob_side);
            }
            Free::BobInCallback => {
                wait_until(Duration::from_millis(200), || {
                    bob_side.in_callback.load(Ordering::SeqCst) > 0
                });
                free(b, bob_side);
                free(a, alice_side);
            }
            Free::AliceOutOfDescriptors => {
                let hog = Hog::take_all();
                free(a, alice_side);
                drop(hog);
                free(b, bob_side);
            }
        }

        let free_took = freeing.elapsed();
        step("transfer wait after free");
        let st = p2p_transfer_wait(transfer, null_mut());
        assert!(
            matches!(
                st,
                P2P_OK
                    | P2P_CANCELLED
                    | P2P_IO
                    | P2P_CLOSED
                    | P2P_PROTOCOL
                    | P2P_USER_NOT_FOUND
                    | P2P_TIMEOUT
            ) || (
                // Out of descriptors, bob cannot open the file he serves (he then
                // answers that it is not shared) or take the request at all.
                matches!(mode, Free::AliceOutOfDescriptors)
                    && matches!(st, P2P_FILE_NOT_FOUND | P2P_BUSY | P2P_REFUSED)
            ),
            "iteration {n} (seed {seed}, {mode:?}): wait: {st:?} {}",
            last_error()
        );
        p2p_transfer_free(transfer);

        step("join the chat request");
        if let Some(asking) = asking {
            let (st, asked) = asking.join().unwrap();
            if st == P2P_OK {
                chat = asked.0;
            }
        }
        if !chat.is_null() {
            let st = p2p_chat_send(chat, c"late".as_ptr());
            assert!(matches!(st, P2P_CLOSED | P2P_IO), "{st:?}");
            p2p_chat_free(chat);
        }
        for chat in bob_side.accepted.lock().unwrap().drain(..) {
            p2p_chat_free(chat.0);
        }
        for (who, side) in [("alice", alice_side), ("bob", bob_side)] {
            assert_eq!(side.in_callback.load(Ordering::SeqCst), 0, "{who}");
            let not_refused = side.not_refused.lock().unwrap();
            assert!(
                not_refused.is_empty(),
                "iteration {n} (seed {seed}, {mode:?}): {who}: {not_refused:?}"
            );
            let late = side.late.lock().unwrap();
            assert!(
                late.is_empty(),
                "iteration {n} (seed {seed}, {mode:?}): {who}'s callbacks ran after \
                 p2p_peer_free returned: {late:?}"
            );
        }
        step("done");
        free_took
    }
}

/// Run `iterations` iterations against one registry; returns how many ran.
fn run(iterations: u64, first_seed: u64) -> u64 {
    let dog = Watchdog::start();
    let (registry, addr) = start_registry();
    let bob_dir = tempfile::tempdir().unwrap();
    // Big enough that a download is usually still running when its peer is freed.
    let content: Vec<u8> = (0..2 * 1024 * 1024u32)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    std::fs::write(bob_dir.path().join("big.bin"), &content).unwrap();
    std::fs::write(bob_dir.path().join("small.bin"), &content[..3000]).unwrap();
    let started = Instant::now();
    let mut slowest: Vec<(Duration, u64, u64)> = Vec::new();
    for n in 0..iterations {
        let seed = first_seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let file = if n % 3 == 0 { "small.bin" } else { "big.bin" };
        let took = iteration(n, seed, &addr, bob_dir.path(), file, &dog);
        slowest.push((took, n, seed));
        slowest.sort_by(|a, b| b.cmp(a));
        slowest.truncate(5);
        if n > 0 && n % 500 == 0 {
            println!("{n} iterations in {:.1?}", started.elapsed());
        }
    }
    // SAFETY: freed once.
    unsafe { p2p_registry_free(registry) };
    println!("{iterations} iterations in {:.1?}", started.elapsed());
    for (took, n, seed) in &slowest {
        println!("slowest frees: {took:.1?} (iteration {n}, seed {seed})");
    }
    iterations
}

#[test]
fn peers_freed_during_downloads_chats_and_callbacks() {
    run(40, 0x5eed);
}

/// The long run: `P2P_STRESS_ITERATIONS` (default 5000) iterations, best in release.
#[test]
#[ignore]
fn peers_freed_during_downloads_chats_and_callbacks_long() {
    let n = std::env::var("P2P_STRESS_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let seed = std::env::var("P2P_STRESS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    assert_eq!(run(n, seed), n);
}
