//! How peers reach each other, through the C API, from a real C program
//! (`tests/c/path.c`, compiled against the shared library): the path of a download, of
//! a chat on both sides and in the event that starts it (reverse connect forced with
//! `p2p_peer_config_set_path_policy`), `p2p_peer_reachability` and
//! `P2P_EVENT_REACHABILITY`. See the program's header comment. Run again under
//! valgrind (when installed) with the shipped suppressions.

mod common;

use common::{build, root, run_to_all_ok, valgrind, Link};
use std::time::Duration;

#[test]
fn reverse_path_reachability_and_policy_from_c() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("path");
    build(&root().join("tests/c/path.c"), &exe, Link::Shared);
    // The program guards itself with alarm(); this deadline is the last resort.
    run_to_all_ok(&exe, Duration::from_secs(180));
    if let Some(summary) = valgrind(&exe) {
        println!("valgrind path:");
        for line in summary {
            println!("  {line}");
        }
    }
}
