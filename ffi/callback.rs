//! Which library callbacks the calling thread is inside, so that a call which would
//! wait for the calling thread itself is refused with `P2P_WOULD_DEADLOCK` instead of
//! hanging (a download waited on from its own callback) or panicking (a registry
//! joining its own thread).
//!
//! Every C callback is invoked inside a [`Scope`], which pushes its owner (one peer or
//! one registry, named by a process-unique id) on a thread-local stack for the
//! duration of the call; callbacks nest when a callback calls a function that runs
//! another callback on the same thread (`p2p_chat_close` runs the chat-closed
//! callback). Download threads are also marked for their whole life with the transfer
//! they run, the first time one of its callbacks runs there: every callback on that
//! thread (progress, done, failed, and the events it emits, such as a share rescan's
//! `P2P_EVENT_SHARE_SKIPPED`) runs before the download can finish.
//!
//! All of this is thread-local and touched only around callbacks and by the few
//! calls that check it; nothing in p2pcore knows about it.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};

/// Whose callback a thread is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// A peer (its `p2p_peer` id).
    Peer(u64),
    /// A registry (its `p2p_registry` id).
    Registry(u64),
}

thread_local! {
    /// The owners of the callbacks this thread is inside, innermost last.
    static SCOPES: RefCell<Vec<Owner>> = const { RefCell::new(Vec::new()) };
    /// `(peer id, transfer id)` when this thread is a download's own thread.
    static DOWNLOAD: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// A process-unique id for a new peer or registry handle (never 0).
pub(crate) fn new_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Marks the calling thread as inside a callback of its owner until dropped.
#[must_use]
pub(crate) struct Scope(());

impl Scope {
    /// Enter a callback of `owner` (leave it by dropping the scope).
    pub(crate) fn enter(owner: Owner) -> Scope {
        // `try_with`: never panic, not even while the thread's locals are torn down.
        let _ = SCOPES.try_with(|s| s.borrow_mut().push(owner));
        Scope(())
    }

    /// Enter a callback of peer `peer` that runs on the thread of its download
    /// `transfer`, and remember that this thread is that download's.
    pub(crate) fn enter_download(peer: u64, transfer: u64) -> Scope {
        let _ = DOWNLOAD.try_with(|d| d.set(Some((peer, transfer))));
        Scope::enter(Owner::Peer(peer))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let _ = SCOPES.try_with(|s| s.borrow_mut().pop());
    }
}

/// Whether the calling thread is inside a callback of `owner` (at any depth).
pub(crate) fn inside(owner: Owner) -> bool {
    SCOPES
        .try_with(|s| s.borrow().contains(&owner))
        .unwrap_or(false)
}

/// Whether the calling thread is inside a callback of any registry.
pub(crate) fn inside_any_registry() -> bool {
    SCOPES
        .try_with(|s| s.borrow().iter().any(|o| matches!(o, Owner::Registry(_))))
        .unwrap_or(false)
}

/// Whether the calling thread is the thread of download `transfer` of peer `peer`.
pub(crate) fn is_download_thread(peer: u64, transfer: u64) -> bool {
    DOWNLOAD
        .try_with(|d| d.get() == Some((peer, transfer)))
        .unwrap_or(false)
}
