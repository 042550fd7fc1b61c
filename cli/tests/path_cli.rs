//! The path of a download and a chat, as the CLI says it, with real `p2pchat`
//! processes on loopback and an in-process registry that offers an in-process relay.
//! On loopback every listener is reachable, so the client side forces the path with
//! `--path`; `share` says it is reachable.

mod common;

use common::{p2pchat, pattern, registry_config, share};
use p2pcore::registry::{Registry, RegistryConfig};
use p2pcore::relay::{Relay, RelayAddr, RelayOffer, RelaySecret};
use std::time::Duration;

/// A registry (the test key) offering a relay started here.
fn registry_with_relay() -> (Registry, Relay, String) {
    let secret = RelaySecret::generate().unwrap();
    let relay = Relay::bind("127.0.0.1:0", secret.clone()).unwrap();
    let config = RegistryConfig {
        relay_offer: Some(RelayOffer {
            addr: RelayAddr::Fixed(relay.local_addr().to_string()),
            secret,
        }),
        ..registry_config()
    };
    let registry = Registry::builder()
        .config(config)
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = registry.local_addr().to_string();
    (registry, relay, addr)
}

#[test]
fn fetch_and_send_on_a_forced_path_say_how_they_are_connected() {
    let (_registry, relay, addr) = registry_with_relay();
    let bob_dir = tempfile::tempdir().unwrap();
    let content = pattern(2 * 1024 * 1024 + 5);
    std::fs::write(bob_dir.path().join("report.bin"), &content).unwrap();
    std::fs::write(bob_dir.path().join("notes.txt"), b"notes\n").unwrap();
    let (mut bob, port) = share(&addr, "bob", bob_dir.path(), true);
    let alice_dir = tempfile::tempdir().unwrap();
    let dir = alice_dir.path().to_str().unwrap();
    // `p2pchat COMMAND --registry … --user alice --dir … REST…`
    let run = |args: &[&str]| {
        let mut all = vec![
            args[0],
            "--registry",
            &addr,
            "--user",
            "alice",
            "--dir",
            dir,
        ];
        all.extend_from_slice(&args[1..]);
        p2pchat(&all)
    };

    let o = run(&["fetch", "--path", "relay", "bob", "report.bin"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        o.stderr, "fetching report.bin from bob (relayed)\n",
        "{o:?}"
    );
    let saved = alice_dir.path().canonicalize().unwrap().join("report.bin");
    assert_eq!(o.stdout.trim_end(), saved.to_str().unwrap());
    assert!(std::fs::read(&saved).unwrap() == content, "byte-identical");
    assert_eq!(relay.stats().joined, 1, "through the relay");

    let o = run(&["fetch", "--path", "reverse", "bob", "notes.txt"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(o.stderr, "fetching notes.txt from bob (reverse)\n", "{o:?}");

    // Direct, the default, stays quiet.
    std::fs::remove_file(&saved).unwrap();
    let o = run(&["fetch", "bob", "report.bin"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(o.stderr, "", "{o:?}");

    let o = run(&["send", "--path", "relay", "bob", "hello through the relay"]);
    assert!(o.status.success(), "{o:?}");
    assert!(o.stderr.contains("chatting with bob (relayed)"), "{o:?}");
    bob.expect("hello through the relay");
    assert_eq!(
        relay.stats().joined,
        2,
        "the chat went through the relay too"
    );

    let o = run(&["fetch", "--path", "sideways", "bob", "notes.txt"]);
    assert_eq!(o.status.code(), Some(2), "a usage error: {o:?}");
    assert!(
        o.stderr.contains("auto, direct, reverse, punch or relay"),
        "{o:?}"
    );

    bob.signal(libc::SIGTERM);
    bob.wait_exit(Duration::from_secs(10));
    let err = bob.all_stderr();
    assert!(
        err.contains(&format!("reachable at 127.0.0.1:{port}\n")),
        "share says it is reachable: {err}"
    );
}
