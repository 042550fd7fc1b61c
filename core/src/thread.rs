//! Spawning p2pchat's threads.
//!
//! Every thread the library starts goes through [`spawn_named`], which names it (for
//! debuggers and `top -H`) and blocks `SIGPIPE` in it: when p2pchat is linked into a C
//! program that has not ignored `SIGPIPE`, a `sendfile` to a peer that went away would
//! otherwise kill the whole process instead of returning `EPIPE`.

use std::io;
use std::thread::JoinHandle;

/// Spawn a named thread with `SIGPIPE` blocked. The caller owns the handle and must
/// join it.
pub fn spawn_named<F, T>(name: &str, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(1024 * 1024)
        .spawn(move || {
            block_sigpipe();
            f()
        })
}

fn block_sigpipe() {
    #[cfg(unix)]
    // SAFETY: plain libc calls on a stack-allocated, initialised signal set that only
    // this thread's mask is changed from.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Call an application hook so that a panic in it stays there: it is logged, and the
/// library thread that called it (an event loop, a chat reader) goes on working.
pub fn call_hook(f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        log::error!("an application hook panicked; p2pchat carries on");
    }
}

/// The threads one component started and must join: finished ones are reaped as new
/// ones start, and [`Threads::join_all`] waits for the rest on shutdown.
///
/// Once `join_all` has run, the set is closed: a later [`Threads::spawn`] fails instead
/// of starting a thread nobody would join (a call that was already in progress on an
/// application thread when the component stopped, such as a chat being opened, would
/// otherwise leave a reader thread, and its hook calls, running after shutdown
/// returned).
#[derive(Default)]
pub struct Threads {
    state: parking_lot::Mutex<Tracked>,
}

#[derive(Default)]
struct Tracked {
    handles: Vec<JoinHandle<()>>,
    closed: bool,
}

impl Threads {
    /// Spawn a tracked thread (see [`spawn_named`]). Fails once [`Threads::join_all`]
    /// has closed the set.
    pub fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        // The lock is held across the spawn so join_all never misses a thread that is
        // started but not yet recorded.
        let mut state = self.state.lock();
        if state.closed {
            return Err(io::Error::other(
                "shutting down: no new threads are started",
            ));
        }
        let handle = spawn_named(name, f)?;
        state.handles.retain(|h| !h.is_finished());
        state.handles.push(handle);
        Ok(())
    }

    /// Join every tracked thread, also those started while joining, then close the set.
    /// A thread never joins itself (a hook that ends the component from a library
    /// thread).
    pub fn join_all(&self) {
        let me = std::thread::current().id();
        loop {
            let batch: Vec<JoinHandle<()>> = {
                let mut state = self.state.lock();
                if state.handles.is_empty() {
                    state.closed = true;
                    return;
                }
                std::mem::take(&mut state.handles)
            };
            for h in batch {
                if h.thread().id() != me {
                    let _ = h.join();
                }
            }
        }
    }
}
