//! Events you pull, from a real C program (`tests/c/poll_loop.c`, compiled with the
//! system compiler against the shared library, its config directory pointed at a
//! temporary one): a poll() loop on the event descriptors drives a chat request,
//! accept, messages and close; an async chat answers as an event (and a cancelled one
//! as `P2P_CANCELLED`); no message event comes before the accept that opens its chat
//! returned its handle; a queue of 4 flooded with progress and 20 messages loses no
//! request, message, close or download end; the descriptor is readable only while
//! events wait. See the program's header comment for every step. Run again under
//! valgrind (when installed) with the shipped suppressions.

mod common;

use common::{build, root, run_to_all_ok, valgrind, Link};
use std::time::Duration;

#[test]
fn poll_loop_events_from_c() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("poll_loop");
    build(&root().join("tests/c/poll_loop.c"), &exe, Link::Shared);

    // The program guards itself with alarm(); this deadline is the last resort.
    run_to_all_ok(&exe, Duration::from_secs(180));
    if let Some(summary) = valgrind(&exe) {
        println!("valgrind poll_loop:");
        for line in summary {
            println!("  {line}");
        }
    }
}

/// The C++17 variant (`tests/c/poll_loop.cpp`): RAII owners for handles and events, an
/// application object per chat as user data handed back by every event of that chat.
#[test]
fn poll_loop_events_from_cxx() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("poll_loop_cxx");
    build(&root().join("tests/c/poll_loop.cpp"), &exe, Link::Shared);
    run_to_all_ok(&exe, Duration::from_secs(150));
    if let Some(summary) = valgrind(&exe) {
        println!("valgrind poll_loop.cpp:");
        for line in summary {
            println!("  {line}");
        }
    }
}
