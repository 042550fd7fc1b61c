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
#[derive(Default)]
pub struct Threads {
    handles: parking_lot::Mutex<Vec<JoinHandle<()>>>,
}

impl Threads {
    /// Spawn a tracked thread (see [`spawn_named`]).
    pub fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let handle = spawn_named(name, f)?;
        let mut handles = self.handles.lock();
        handles.retain(|h| !h.is_finished());
        handles.push(handle);
        Ok(())
    }

    /// Join every tracked thread, also those started while joining. A thread never
    /// joins itself (a hook that ends the component from a library thread).
    pub fn join_all(&self) {
        let me = std::thread::current().id();
        loop {
            let batch: Vec<JoinHandle<()>> = std::mem::take(&mut *self.handles.lock());
            if batch.is_empty() {
                return;
            }
            for h in batch {
                if h.thread().id() != me {
                    let _ = h.join();
                }
            }
        }
    }
}
