//! The interop and live-share additions of the C API from a real C program
//! (`tests/c/live_share_verified.c`, compiled with the system compiler against the
//! shared library): `p2p_peer_config_set_live_share` makes a file written after connect
//! reach the registry without a rescan, `p2p_peer_config_set_legacy_registry(false)`,
//! `p2p_peer_registry_is_legacy` and `p2p_peer_user_is_legacy` say false for p2pchat
//! peers, and `p2p_transfer_is_verified` says true for the download from one.

mod common;

use common::{build, root, Link};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn live_share_and_verified_download_from_c() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("live_share_verified");
    build(
        &root().join("tests/c/live_share_verified.c"),
        &exe,
        Link::Shared,
    );
    // The program guards itself with alarm(120); this deadline is the last resort.
    let mut child = Command::new(&exe)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running live_share_verified");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("live_share_verified hung past its own alarm() guard");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        status.success() && stdout.lines().last() == Some("ALL OK"),
        "live_share_verified failed with {status}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}
