//! The interop and live-share additions of the C API from a real C program
//! (`tests/c/live_share_verified.c`, compiled with the system compiler against the
//! shared library): `p2p_peer_config_set_live_share` makes a file written after connect
//! reach the registry without a rescan, `p2p_peer_config_set_legacy_registry(false)`,
//! `p2p_peer_registry_is_legacy` and `p2p_peer_user_is_legacy` say false for p2pchat
//! peers, and `p2p_transfer_is_verified` says true for the download from one.

mod common;

use common::{build, root, run_to_all_ok, Link};
use std::time::Duration;

#[test]
fn live_share_and_verified_download_from_c() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("live_share_verified");
    build(
        &root().join("tests/c/live_share_verified.c"),
        &exe,
        Link::Shared,
    );
    // The program guards itself with alarm(); this deadline is the last resort.
    run_to_all_ok(&exe, Duration::from_secs(180));
}
