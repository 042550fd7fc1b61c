//! Calls from inside callbacks that would wait for their own thread: a real C program
//! (`tests/c/reentrant_calls.c`, compiled with the system compiler against the shared
//! library) makes each of them from the callback it is refused in, checks that it
//! returns `P2P_WOULD_DEADLOCK` (or, for a free, does nothing and says why) within its
//! `alarm()` guard, and then finishes everything normally; then again under valgrind
//! (when installed): a refused free must neither leak nor touch freed memory.

mod common;

use common::{build, root, run_to_all_ok, valgrind, Link};
use std::time::Duration;

#[test]
fn calls_that_would_wait_for_their_own_callback_thread_are_refused_from_c() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("reentrant_calls");
    build(
        &root().join("tests/c/reentrant_calls.c"),
        &exe,
        Link::Shared,
    );

    // The program guards itself with alarm(); this deadline is the last resort.
    run_to_all_ok(&exe, Duration::from_secs(240));
    if let Some(summary) = valgrind(&exe) {
        println!("valgrind reentrant_calls:");
        for line in summary {
            println!("  {line}");
        }
    }
}
