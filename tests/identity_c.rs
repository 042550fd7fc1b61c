//! Identity, pinning and encryption marks through the C API, from a real C program
//! (`tests/c/identity.c`, compiled with the system compiler against the shared library,
//! its config directory pointed at a temporary one): identity files created with mode
//! 0600 and reloaded to the same fingerprint, a loose key file refused, the fingerprint
//! the registry lists for a user equal to that user's own, accepting a key only with
//! its fingerprint. See the program's header comment for every step. Run again under
//! valgrind (when installed) with the shipped suppressions.

mod common;

use common::{build, root, run_to_all_ok, valgrind, Link};
use std::time::Duration;

#[test]
fn identity_fingerprints_and_pinning_from_c() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("identity");
    build(&root().join("tests/c/identity.c"), &exe, Link::Shared);

    // The program guards itself with alarm(); this deadline is the last resort.
    run_to_all_ok(&exe, Duration::from_secs(180));
    if let Some(summary) = valgrind(&exe) {
        println!("valgrind identity:");
        for line in summary {
            println!("  {line}");
        }
    }
}
