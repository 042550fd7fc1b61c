//! Calls from inside callbacks that would wait for their own thread: a real C program
//! (`tests/c/reentrant_calls.c`, compiled with the system compiler against the shared
//! library) makes each of them from the callback it is refused in, checks that it
//! returns `P2P_WOULD_DEADLOCK` (or, for a free, does nothing and says why) within its
//! `alarm()` guard, and then finishes everything normally; then again under valgrind
//! (when installed): a refused free must neither leak nor touch freed memory.

mod common;

use common::{build, root, valgrind, Link};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    let mut child = Command::new(&exe)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running reentrant_calls");
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("reentrant_calls hung past its own alarm() guards");
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
        "reentrant_calls failed with {status}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    if let Some(summary) = valgrind(&exe) {
        println!("valgrind reentrant_calls:");
        for line in summary {
            println!("  {line}");
        }
    }
}
