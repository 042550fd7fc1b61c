//! Downloads for applications through the C API, from a real C program
//! (`tests/c/transfers.c`, compiled against the shared library, its config directory
//! pointed at a temporary one): `p2p_peer_fetch_to` a chosen path (byte-identical,
//! verified, never overwriting, a missing directory named as the download directory),
//! `p2p_transfer_stats` mid-transfer (0 < bytes <= total, rate > 0, ETA >= 0),
//! `p2p_peer_transfers`, cancel keeping the partial and `p2p_transfer_cancel_discard`
//! leaving none, and `p2p_set_log_callback` getting a warning the library emits at the
//! chosen level and nothing below it. See the program's header comment. Run again under
//! valgrind (when installed) with the shipped suppressions.

mod common;

use common::{build, root, run_to_all_ok, valgrind, Link};
use std::time::Duration;

#[test]
fn fetch_to_cancel_discard_stats_and_log_from_c() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("transfers");
    build(&root().join("tests/c/transfers.c"), &exe, Link::Shared);

    // The program guards itself with alarm(); this deadline is the last resort.
    run_to_all_ok(&exe, Duration::from_secs(300));
    if let Some(summary) = valgrind(&exe) {
        println!("valgrind transfers:");
        for line in summary {
            println!("  {line}");
        }
    }
}
