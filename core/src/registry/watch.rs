//! Watch sessions (`docs/PROTOCOL.md` §5.2): which connection receives the pushes for
//! which user, and the one step that delivers a push line to it.
//!
//! A watch session lives on one event loop, but pushes are made on any loop (a
//! `CONNECT` from a caller on another loop) and on loop 0 (reachability results). So
//! a push is posted to the watcher's loop over a channel and its waker, like the
//! connection hand-offs; the loop queues it on the connection (sealed like any answer)
//! unless the connection already holds [`WATCH_MAX_UNSENT`] unsent bytes, in which case
//! the push is dropped, counted and logged: a watcher that does not read never grows
//! the registry's memory.
//!
//! [`Watches::deliver`] is the seam a registry spread over several nodes replaces: the
//! user's watch session may then be on another node.
//!
//! [`WATCH_MAX_UNSENT`]: crate::limits::WATCH_MAX_UNSENT

use crate::reach::Push;
use crossbeam_channel::Sender;
use mio::Waker;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Most pushes waiting in one loop's channel; past it a push is dropped (counted). A
/// loop drains its channel every time it wakes, so this is only reached when a loop is
/// stuck or a flood outpaces it.
const MAX_QUEUED_PUSHES: usize = 4096;

/// What a loop is told by the others.
#[derive(Debug)]
pub(super) enum Post {
    /// Queue this line on connection `conn` (slot `idx`), if it is still that
    /// connection and still a watch session.
    Push {
        idx: usize,
        conn: u64,
        line: Box<str>,
    },
    /// The watched user's registration ended, or a newer watch replaced this one:
    /// close the connection once its output is sent.
    EndWatch { idx: usize, conn: u64 },
}

/// One loop's mailbox.
pub(super) struct Mailbox {
    pub tx: Sender<Post>,
    pub waker: Arc<Waker>,
    /// Pushes in the channel not yet taken by the loop.
    pub queued: Arc<AtomicUsize>,
}

/// Where a user's watch session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Watcher {
    /// The event loop holding the connection.
    pub loop_idx: usize,
    /// Its slot on that loop.
    pub idx: usize,
    /// Its connection id (a slot is reused; the id is not).
    pub conn: u64,
    /// The registry's address the watcher reached it at (a relay embedded in the
    /// registry is advertised on it).
    pub local_ip: IpAddr,
}

/// Every watch session, by user.
pub(super) struct Watches {
    table: Mutex<HashMap<Box<str>, Watcher>>,
    loops: Vec<Mailbox>,
    /// Pushes dropped: the watcher held too much unsent output, or its loop's mailbox
    /// was full.
    dropped: AtomicU64,
}

impl Watches {
    pub fn new(loops: Vec<Mailbox>) -> Watches {
        Watches {
            table: Mutex::new(HashMap::new()),
            loops,
            dropped: AtomicU64::new(0),
        }
    }

    /// Make `w` the watch session of `user`; a previous one is closed.
    pub fn watch(&self, user: &str, w: Watcher) {
        let old = self.table.lock().insert(user.into(), w);
        if let Some(old) = old.filter(|o| o.conn != w.conn) {
            self.post(
                old.loop_idx,
                Post::EndWatch {
                    idx: old.idx,
                    conn: old.conn,
                },
            );
        }
    }

    /// `user`'s registration ended: close its watch session, if any.
    pub fn end(&self, user: &str) {
        let old = self.table.lock().remove(user);
        if let Some(old) = old {
            self.post(
                old.loop_idx,
                Post::EndWatch {
                    idx: old.idx,
                    conn: old.conn,
                },
            );
        }
    }

    /// Connection `conn`, the watch session of `user`, closed.
    pub fn forget(&self, user: &str, conn: u64) {
        let mut table = self.table.lock();
        if table.get(user).is_some_and(|w| w.conn == conn) {
            table.remove(user);
        }
    }

    /// `user`'s watch session, if there is one.
    pub fn watcher(&self, user: &str) -> Option<Watcher> {
        self.table.lock().get(user).copied()
    }

    /// Deliver `push` to `user`'s watch session. `false`: there is none, or its loop's
    /// mailbox is full (the push is then dropped and counted). A push accepted here
    /// can still be dropped by the loop if the watcher does not read (see the module
    /// notes).
    pub fn deliver(&self, user: &str, push: &Push) -> bool {
        if self.watcher(user).is_none() {
            return false;
        }
        self.deliver_line(user, push.to_line().into_boxed_str())
    }

    /// [`deliver`](Self::deliver) of a push already formatted (one that another
    /// registry node forwarded, see `store::redis`).
    pub fn deliver_line(&self, user: &str, line: Box<str>) -> bool {
        let Some(w) = self.watcher(user) else {
            return false;
        };
        let Some(mailbox) = self.loops.get(w.loop_idx) else {
            return false;
        };
        if mailbox.queued.fetch_add(1, Ordering::SeqCst) >= MAX_QUEUED_PUSHES {
            mailbox.queued.fetch_sub(1, Ordering::SeqCst);
            self.count_dropped(user);
            return false;
        }
        if mailbox
            .tx
            .send(Post::Push {
                idx: w.idx,
                conn: w.conn,
                line,
            })
            .is_err()
        {
            mailbox.queued.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        let _ = mailbox.waker.wake();
        true
    }

    /// A push to `user` was dropped.
    pub fn count_dropped(&self, user: &str) {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // Logged at the first drop and then every 100th: a stuck watcher must not
        // flood the log either.
        if n == 1 || n % 100 == 0 {
            log::warn!(
                "registry: a push to {user}'s watch session was dropped (it is not reading); {n} dropped so far"
            );
        }
    }

    /// Pushes dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn post(&self, loop_idx: usize, post: Post) {
        if let Some(mailbox) = self.loops.get(loop_idx) {
            // Unbounded for these: one per registration end or watch replaced, so
            // bounded by the connections themselves.
            if mailbox.tx.send(post).is_ok() {
                let _ = mailbox.waker.wake();
            }
        }
    }
}
