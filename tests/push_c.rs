//! File push through the C API, from a real C program (`tests/c/push.c`, compiled
//! against the shared library, its config directory pointed at a temporary one): an
//! offer taken from the event queue and accepted into a chosen directory (the done
//! event carrying the borrowed transfer handle and its user data), an offer declined
//! (`P2P_DECLINED` for the sender), one left to expire (`P2P_TIMEOUT`, and
//! `P2P_EVENT_FILE_OFFER_EXPIRED`), one accepted inside the `p2p_file_offer_cb`
//! callback (the `p2p_transfer_event_cb` carrying handle and user data), and the
//! argument errors. See the program's header comment. Run again under valgrind (when
//! installed) with the shipped suppressions and `--error-exitcode`.

mod common;

use common::{build, root, run_to_all_ok, valgrind, Link};
use std::time::Duration;

#[test]
fn push_offer_accept_decline_expire_from_c() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("push");
    build(&root().join("tests/c/push.c"), &exe, Link::Shared);

    // The program guards itself with alarm(); this deadline is the last resort.
    run_to_all_ok(&exe, Duration::from_secs(300));
    if let Some(summary) = valgrind(&exe) {
        println!("valgrind push:");
        for line in summary {
            println!("  {line}");
        }
    }
}
