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

/// The same features through the Rust API the C functions wrap: `Peer::fetch_to` (a
/// file path, a directory, never overwriting, a missing directory named as the
/// download directory), `Transfer::stats` and `Transfer::cancel_discard` on a finished
/// download, `Peer::transfers` and `Peer::chats`.
#[test]
fn rust_api_fetch_to_stats_and_lists() {
    use p2pcore::peer::Peer;
    use p2pcore::registry::Registry;
    use p2pcore::Error;

    let registry = Registry::bind("127.0.0.1:0").unwrap();
    let addr = registry.local_addr().to_string();
    let keys = tempfile::tempdir().unwrap();
    let (a_dir, b_dir, dest) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    std::fs::write(b_dir.path().join("notes.txt"), b"bob's notes\n").unwrap();
    let join = |name: &str, dir: &std::path::Path, accept: bool| {
        let mut b = Peer::builder(&addr, name, dir)
            .listen_ip("127.0.0.1".parse().unwrap())
            .identity_file(keys.path().join(format!("{name}.key")));
        if accept {
            b = b.on_chat_request(|r| {
                // The chat stays open while its reader runs; the handle may go.
                let _ = r.accept();
            });
        }
        b.connect().unwrap()
    };
    let alice = join("alice", a_dir.path(), false);
    let bob = join("bob", b_dir.path(), true);

    let target = dest.path().join("renamed.txt");
    let t = alice.fetch_to("bob", "notes.txt", &target).unwrap();
    assert_eq!(t.wait().unwrap(), target);
    assert_eq!(std::fs::read(&target).unwrap(), b"bob's notes\n");
    assert!(t.is_verified());
    let s = t.stats();
    assert_eq!((s.bytes, s.total), (12, 12));
    assert_eq!(s.eta, Some(Duration::ZERO));
    // A finished, successful download is left alone by cancel_discard.
    t.cancel_discard();
    assert!(target.exists());
    assert!(!a_dir.path().join("notes.txt").exists());
    assert!(matches!(
        alice.fetch_to("bob", "notes.txt", &target),
        Err(Error::AlreadyExists(_))
    ));
    let t = alice.fetch_to("bob", "notes.txt", dest.path()).unwrap();
    assert_eq!(t.wait().unwrap(), dest.path().join("notes.txt"));
    let missing = dest.path().join("missing").join("x.txt");
    let e = alice.fetch_to("bob", "notes.txt", &missing).unwrap_err();
    assert!(matches!(e, Error::NotADownloadDirectory(_)), "{e}");
    assert!(e.to_string().starts_with("download directory"), "{e}");
    assert!(alice.transfers().is_empty());

    assert!(alice.chats().is_empty());
    let chat = alice.chat("bob").unwrap();
    let ids: Vec<_> = alice.chats().iter().map(|c| c.id()).collect();
    assert_eq!(ids, vec![chat.id()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while bob.chats().len() != 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(bob.chats().len(), 1);
    chat.close();
    assert!(alice.chats().is_empty());
    while !bob.chats().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(bob.chats().is_empty());
    alice.exit();
    bob.exit();
}
