//! Keys through the `p2pchat` binary (real processes on loopback): `--identity` and
//! `id`, fingerprints in `whois`, chat requests and `share`'s status, a changed key
//! refused with its warning and accepted with `trust`, a registry pinned with
//! `HOST:PORT#FINGERPRINT`, `--refuse-unverified` and `--serve-only`.

mod common;

#[path = "../../core/tests/common/original.rs"]
mod original;

use common::*;
use p2pcore::identity::{Fingerprint, Identity};
use p2pcore::known_keys::{KnownKeys, Subject};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use tempfile::TempDir;

/// `p2pchat id USER`'s fingerprint (the key in the tests' shared home).
fn id_of(user: &str) -> String {
    let o = p2pchat(&["id", user]);
    assert!(o.status.success(), "{o:?}");
    o.stdout.trim_end().to_string()
}

/// A fingerprint of a key nobody holds.
fn stranger() -> Identity {
    Identity::generate().unwrap()
}

/// The registry key pinned in `file` for `addr`, learnt by browsing it once.
fn registry_fingerprint(addr: &str, file: &Path) -> Fingerprint {
    let f = file.to_str().unwrap();
    let o = p2pchat(&["users", "--registry", addr, "--known-keys", f]);
    assert!(o.status.success(), "{o:?}");
    KnownKeys::open(file)
        .unwrap()
        .pinned(Subject::Registry(addr))
        .expect("the registry's key pinned on first use")
        .fingerprint()
}

#[test]
fn identity_flag_creates_a_private_key_and_id_prints_a_stable_fingerprint() {
    let dir = TempDir::new().unwrap();
    let key = dir.path().join("keys").join("erin.key");
    let k = key.to_str().unwrap();
    let first = p2pchat(&["id", "--identity", k]);
    assert!(first.status.success(), "{first:?}");
    let fp = first.stdout.trim_end();
    assert!(Fingerprint::parse(fp).is_some(), "{first:?}");
    assert_eq!(fp.len(), 39, "8 groups of 4: {fp}");
    assert!(first.stderr.contains("created a new key in"), "{first:?}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the key file is private");
    let again = p2pchat(&["id", "--identity", k]);
    assert_eq!(again.stdout, first.stdout, "{again:?}");
    assert!(again.stderr.contains("key file:"), "{again:?}");

    // A share with that key proves it: the registry lists exactly that fingerprint.
    let (_registry, addr) = registry();
    let share_dir = TempDir::new().unwrap();
    let d = share_dir.path().to_str().unwrap();
    let mut erin = Proc::spawn(
        command(&[
            "share",
            "--registry",
            &addr,
            "--user",
            "erin",
            "--dir",
            d,
            "--identity",
            k,
        ])
        .stdin(Stdio::null()),
    );
    erin.line_with("sharing as erin");
    let o = p2pchat(&["whois", "erin", "--registry", &addr]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(o.stdout.lines().nth(1), Some(format!("key {fp}").as_str()));

    // Without --identity the key is the name's own, made once in the config directory.
    let own = p2pchat(&["id", "frank"]);
    assert!(own.stderr.contains("created a new key in"), "{own:?}");
    let path = test_home().join("config/p2pchat/frank.key");
    assert!(own.stderr.contains(path.to_str().unwrap()), "{own:?}");
    assert_eq!(id_of("frank"), own.stdout.trim_end());
    // The key of a name with no --identity and no name at all: a usage error.
    let o = run({
        let mut c = command(&["id"]);
        c.env_remove("P2PCHAT_USER");
        c
    });
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}

#[test]
fn whois_and_share_show_fingerprints_that_match_id() {
    let (_registry, addr) = registry();
    let dir = TempDir::new().unwrap();
    let (mut bob, port) = share(&addr, "bob", dir.path(), true);
    let o = p2pchat(&["whois", "bob", "--registry", &addr]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        o.stdout,
        format!("127.0.0.1:{port}\nkey {}\n", id_of("bob")),
        "{o:?}"
    );

    // A chat request names the caller's key: alice's own fingerprint.
    let o = p2pchat(&["send", "--registry", &addr, "--user", "alice", "bob", "hi"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(bob.line(), "alice: hi");
    eventually("bob's stderr shows the request", || {
        bob.all_stderr().contains("chat request from alice")
    });
    let err = bob.all_stderr();
    assert!(
        err.contains(&format!("your key: {}", id_of("bob"))),
        "share shows its own key: {err}"
    );
    assert!(
        err.contains(&format!("registry {addr}: key ")) && err.contains("(secured session)"),
        "share shows the registry's key: {err}"
    );
    assert!(
        err.contains(&format!(
            "chat request from alice (key {}): accepted",
            id_of("alice")
        )),
        "{err}"
    );
}

#[test]
fn a_changed_key_for_a_pinned_name_is_refused_until_trusted() {
    let (_registry, addr) = registry();
    let bob_dir = TempDir::new().unwrap();
    std::fs::write(bob_dir.path().join("notes.txt"), "bob's notes").unwrap();
    let (_bob, _) = share(&addr, "bob", bob_dir.path(), false);
    let keys_dir = TempDir::new().unwrap();
    let keys = keys_dir.path().join("known_keys");
    let kf = keys.to_str().unwrap();
    // alice saw another key for bob before (a pin that is not bob's key now).
    let old = stranger();
    std::fs::write(
        &keys,
        format!("peer {addr} bob {}\n", old.public().to_hex()),
    )
    .unwrap();
    let alice_dir = TempDir::new().unwrap();
    let d = alice_dir.path().to_str().unwrap();
    let fetch = || {
        p2pchat(&[
            "fetch",
            "--registry",
            &addr,
            "--known-keys",
            kf,
            "--user",
            "alice",
            "--dir",
            d,
            "bob",
            "notes.txt",
        ])
    };

    let bob_fp = id_of("bob");
    let o = fetch();
    assert_eq!(o.status.code(), Some(4), "key changed: exit 4: {o:?}");
    assert!(
        o.stderr
            .contains("@@@ WARNING: THE KEY OF bob HAS CHANGED @@@"),
        "{o:?}"
    );
    assert!(
        o.stderr
            .contains(&format!("pinned:  {}", old.fingerprint())),
        "{o:?}"
    );
    assert!(o.stderr.contains(&format!("offered: {bob_fp}")), "{o:?}");
    assert!(
        o.stderr.contains(&format!(
            "p2pchat trust bob {bob_fp} --registry {addr} --known-keys {kf}"
        )),
        "the warning says how to accept: {o:?}"
    );
    assert!(
        o.stderr.lines().last().unwrap().starts_with("p2pchat: "),
        "{o:?}"
    );
    assert!(!alice_dir.path().join("notes.txt").exists());

    // A fingerprint that is not the listed key's is refused, and changes nothing.
    let wrong = stranger().fingerprint().to_string();
    let o = p2pchat(&[
        "trust",
        "bob",
        &wrong,
        "--registry",
        &addr,
        "--known-keys",
        kf,
    ]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(o.stderr.contains("nothing was changed"), "{o:?}");
    assert!(
        o.stderr.contains(&bob_fp) && o.stderr.contains(&wrong),
        "{o:?}"
    );
    assert_eq!(fetch().status.code(), Some(4), "still refused");

    // The right one (as bob reads it out; case and dashes do not matter) is pinned.
    let spoken = bob_fp.replace('-', " ").to_lowercase();
    let o = p2pchat(&[
        "trust",
        "bob",
        &spoken,
        "--registry",
        &addr,
        "--known-keys",
        kf,
    ]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        o.stdout,
        format!(
            "trusted bob's new key {bob_fp} (registry {addr}); it replaces {}\n",
            old.fingerprint()
        )
    );
    let o = fetch();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        std::fs::read(alice_dir.path().join("notes.txt")).unwrap(),
        b"bob's notes"
    );
}

#[test]
fn a_registry_without_the_expected_key_is_refused_with_both_fingerprints() {
    let (_registry, addr) = registry();
    let keys_dir = TempDir::new().unwrap();
    let keys = keys_dir.path().join("known_keys");
    let kf = keys.to_str().unwrap();
    let real = registry_fingerprint(&addr, &keys);

    // A fingerprint given after '#' that the registry does not have.
    let wrong = stranger().fingerprint();
    let pinned = format!("{addr}#{wrong}");
    for args in [
        vec!["users", "--registry", &pinned, "--known-keys", kf],
        vec![
            "fetch",
            "--registry",
            &pinned,
            "--known-keys",
            kf,
            "--user",
            "alice",
        ],
    ] {
        let mut args = args.clone();
        let dir = TempDir::new().unwrap();
        if args[0] == "fetch" {
            args.extend_from_slice(&["--dir", dir.path().to_str().unwrap(), "bob", "x"]);
        }
        let o = p2pchat(&args);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {o:?}");
        assert!(
            o.stderr.contains(&format!(
                "@@@ WARNING: THE REGISTRY AT {addr} DOES NOT HAVE THE EXPECTED KEY @@@"
            )),
            "{o:?}"
        );
        assert!(
            o.stderr.contains(&format!("given (after #): {wrong}")),
            "{o:?}"
        );
        assert!(
            o.stderr.contains(&format!("offered:         {real}")),
            "{o:?}"
        );
        assert!(
            o.stderr.contains(&format!("--registry {addr}#{real}")),
            "{o:?}"
        );
    }
    // The menu client too: nothing registered, exit 4.
    let dir = TempDir::new().unwrap();
    let d = dir.path().to_str().unwrap();
    let o = run({
        let mut c = command(&["client", "--registry", &pinned, "--known-keys", kf]);
        c.args(["--user", "alice", "--dir", d, "--port", "0"]);
        c
    });
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(
        o.stderr.contains(&format!("offered:         {real}")),
        "{o:?}"
    );

    // A pinned registry key that changed (as after a registry set up again): refused,
    // and re-running with the offered fingerprint re-pins it.
    let old = stranger();
    std::fs::write(
        &keys,
        format!("registry {addr} {}\n", old.public().to_hex()),
    )
    .unwrap();
    let o = p2pchat(&["users", "--registry", &addr, "--known-keys", kf]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(
        o.stderr
            .contains(&format!("pinned:          {}", old.fingerprint())),
        "{o:?}"
    );
    let advice = format!("--registry {addr}#{real} --known-keys {kf}");
    assert!(o.stderr.contains(&advice), "{o:?}");
    let right = format!("{addr}#{real}");
    let o = p2pchat(&["users", "--registry", &right, "--known-keys", kf]);
    assert!(o.status.success(), "{o:?}");
    let o = p2pchat(&["users", "--registry", &addr, "--known-keys", kf]);
    assert!(o.status.success(), "re-pinned: {o:?}");

    // A malformed fingerprint is a usage error.
    let o = p2pchat(&["users", "--registry", &format!("{addr}#NOTAKEY")]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}

#[test]
fn a_pinned_registry_that_answers_as_the_original_server_is_denied() {
    let server = original::OriginalServer::start();
    let addr = server.addr().to_string();
    let pinned = format!("{addr}#{}", stranger().fingerprint());
    let o = p2pchat(&["users", "--registry", &pinned]);
    assert_eq!(o.status.code(), Some(5), "denied: exit 5: {o:?}");
    assert_one_line_error(&o);
    assert!(
        o.stderr.contains("refusing an unauthenticated session"),
        "{o:?}"
    );
}

#[test]
fn refuse_unverified_turns_away_a_caller_registered_without_a_key() {
    let (_registry, addr) = registry();
    let (bob_dir, carol_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let strict = |user: &str, dir: &Path, extra: &[&str]| {
        let mut args = vec![
            "share",
            "--registry",
            &addr,
            "--user",
            user,
            "--dir",
            dir.to_str().unwrap(),
            "--accept-chats",
        ];
        args.extend_from_slice(extra);
        let mut p = Proc::spawn(command(&args).stdin(Stdio::null()));
        let port: u16 = p
            .line_with("sharing as")
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        (p, port)
    };
    let (mut bob, bob_port) = strict("bob", bob_dir.path(), &["--refuse-unverified"]);
    let (mut carol, carol_port) = strict("carol", carol_dir.path(), &[]);
    // mallory registers over a plaintext session: no key, so nobody vouches for her.
    let (_listener, _session) = register_by_hand(&addr, "mallory", "x.txt");

    let mut ask = FakePeer::ask_chat(([127, 0, 0, 1], bob_port).into(), "mallory");
    let answer = ask.answer();
    assert!(answer.starts_with("ERR denied"), "{answer:?}");
    // carol accepts her, marked for what she is.
    let mut ask = FakePeer::ask_chat(([127, 0, 0, 1], carol_port).into(), "mallory");
    assert_eq!(ask.answer(), "OK");
    eventually("carol shows the request", || {
        carol.all_stderr().contains("chat request from mallory")
    });
    assert!(
        carol.all_stderr().contains(
            "chat request from mallory (UNVERIFIED, unencrypted: registered without a key): accepted"
        ),
        "{}",
        carol.all_stderr()
    );
    assert!(
        !bob.all_stderr().contains("chat request from mallory"),
        "bob never saw it: {}",
        bob.all_stderr()
    );
}

#[test]
fn serve_only_serves_the_names_listed_and_denies_the_rest() {
    let (_registry, addr) = registry();
    let bob_dir = TempDir::new().unwrap();
    std::fs::write(bob_dir.path().join("plan.txt"), "the plan").unwrap();
    let b = bob_dir.path().to_str().unwrap();
    let mut bob = Proc::spawn(
        command(&[
            "share",
            "--registry",
            &addr,
            "--user",
            "bob",
            "--dir",
            b,
            "--serve-only",
            "carol,dave",
        ])
        .stdin(Stdio::null()),
    );
    bob.line_with("sharing as bob");
    let fetch_as = |user: &str, dir: &Path| {
        p2pchat(&[
            "fetch",
            "--registry",
            &addr,
            "--user",
            user,
            "--dir",
            dir.to_str().unwrap(),
            "bob",
            "plan.txt",
        ])
    };
    let alice_dir = TempDir::new().unwrap();
    let o = fetch_as("alice", alice_dir.path());
    assert_eq!(o.status.code(), Some(5), "denied: exit 5: {o:?}");
    assert_one_line_error(&o);
    assert!(!alice_dir.path().join("plan.txt").exists());
    let carol_dir = TempDir::new().unwrap();
    let o = fetch_as("carol", carol_dir.path());
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        std::fs::read(carol_dir.path().join("plan.txt")).unwrap(),
        b"the plan"
    );
}

#[test]
fn the_client_shows_keys_at_start_in_view_ip_port_and_on_chat_requests() {
    let (_registry, addr) = registry();
    let (alice_dir, bob_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (_bob, _) = share(&addr, "bob", bob_dir.path(), true);
    let mut a = Proc::spawn(
        command(&[
            "client",
            "--registry",
            &addr,
            "--user",
            "alice",
            "--dir",
            alice_dir.path().to_str().unwrap(),
            "--port",
            "0",
        ])
        .stdin(Stdio::piped()),
    );
    let start = a.expect("Enter choice: ");
    assert!(
        start.contains(&format!("your key: {} ", id_of("alice"))),
        "{start}"
    );
    assert!(
        start.contains(&format!("registry {addr}: key ")) && start.contains("(secured session)"),
        "{start}"
    );
    a.send_line("2");
    a.expect("Enter username (empty to go back): ");
    a.send_line("bob");
    a.expect("Enter choice: ");
    a.send_line("1");
    assert_eq!(
        a.line_with("bob's key"),
        format!("bob's key {}", id_of("bob"))
    );
    a.expect("Enter choice: ");
    a.send_line("0");
    a.expect("Enter choice: ");

    // A caller nobody vouches for is marked so, under the request line.
    let listen = a_listen_addr(&addr, "alice");
    let _m = FakePeer::registered(&addr, listen, "mallory");
    a.expect("*** mallory wants to chat with you");
    assert_eq!(
        a.line_with("mallory is"),
        "    mallory is UNVERIFIED and unencrypted: registered without a key (anyone could use this name)"
    );
    a.expect("Accept chat with mallory? [y/n]: ");
    a.send_line("n");
    a.expect("declined the chat request from mallory");
    // A verified caller shows the fingerprint the registry lists for the name.
    let mut send = Proc::spawn(
        command(&[
            "send",
            "--registry",
            &addr,
            "--user",
            "carol",
            "alice",
            "hi",
        ])
        .stdin(Stdio::null()),
    );
    a.expect("*** carol wants to chat with you");
    assert_eq!(
        a.line_with("carol's key"),
        format!(
            "    carol's key: {} (verified: the key the registry lists for carol)",
            id_of("carol")
        )
    );
    a.expect("Accept chat with carol? [y/n]: ");
    a.send_line("n");
    assert_eq!(send.wait_exit(WAIT).code(), Some(3), "declined");
    a.close_stdin();
    assert!(a.wait_exit(WAIT).success());
}

/// Where `user` listens, as the registry lists it.
fn a_listen_addr(registry: &str, user: &str) -> std::net::SocketAddr {
    let o = p2pchat(&["whois", user, "--registry", registry]);
    assert!(o.status.success(), "{o:?}");
    o.stdout.lines().next().unwrap().parse().unwrap()
}

#[test]
fn a_changed_key_in_the_menu_and_at_share_is_a_warning_with_the_way_to_accept() {
    let (_registry, addr) = registry();
    let keys_dir = TempDir::new().unwrap();
    let keys = keys_dir.path().join("known_keys");
    let kf = keys.to_str().unwrap();
    let old = stranger();
    // This user pinned other keys for bob and for alice before.
    std::fs::write(
        &keys,
        format!(
            "peer {addr} bob {hex}\npeer {addr} alice {hex}\n",
            hex = old.public().to_hex()
        ),
    )
    .unwrap();
    let bob_dir = TempDir::new().unwrap();
    let b = bob_dir.path().to_str().unwrap();
    let mut bob = Proc::spawn(
        command(&[
            "share",
            "--registry",
            &addr,
            "--known-keys",
            kf,
            "--user",
            "bob",
            "--dir",
            b,
            "--accept-chats",
        ])
        .stdin(Stdio::null()),
    );
    bob.line_with("sharing as bob");

    // alice (her own known keys: fresh) asks bob, whose pin for her is another key.
    let o = p2pchat(&["send", "--registry", &addr, "--user", "alice", "bob", "hi"]);
    assert_eq!(o.status.code(), Some(5), "bob denies her: {o:?}");
    let alice_fp = id_of("alice");
    eventually("share warns about alice's key", || {
        bob.all_stderr().contains(&format!(
            "p2pchat trust alice {alice_fp} --registry {addr} --known-keys {kf}"
        ))
    });
    let err = bob.all_stderr();
    assert!(
        err.contains("@@@ WARNING: THE KEY OF alice HAS CHANGED @@@"),
        "{err}"
    );
    assert!(
        !err.contains("chat request from alice"),
        "never asked: {err}"
    );

    // carol, at the menu with the same pins, tries to chat with bob.
    let carol_dir = TempDir::new().unwrap();
    let mut c = client_at_menu(&addr, "carol", carol_dir.path(), &["--known-keys", kf]);
    c.send_line("2");
    c.expect("Enter username (empty to go back): ");
    c.send_line("bob");
    c.expect("Enter choice: ");
    c.send_line("1");
    let line = c.line_with("WARNING: this is not the key you pinned for bob");
    assert!(line.contains(&old.fingerprint().to_string()), "{line}");
    c.expect("Enter choice: ");
    c.send_line("3");
    let shown = c.expect("Enter choice: ");
    let bob_fp = id_of("bob");
    assert!(
        shown.contains("@@@ WARNING: THE KEY OF bob HAS CHANGED @@@"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "p2pchat trust bob {bob_fp} --registry {addr} --known-keys {kf}"
        )),
        "{shown}"
    );
    assert!(
        shown.contains("cannot chat with bob: the key of bob has changed"),
        "{shown}"
    );
    assert!(bob.all_stdout().lines().count() == 1, "bob heard nothing");
    c.close_stdin();
    assert!(c.wait_exit(WAIT).success());
}

#[test]
fn the_fingerprint_p2pchat_server_prints_pins_its_registry() {
    let mut server = server_proc(&["--addr", "127.0.0.1:0"]);
    let addr = server
        .line()
        .strip_prefix("registry listening on ")
        .expect("the address line")
        .to_string();
    let printed = server
        .line()
        .strip_prefix("registry key: ")
        .expect("the key line")
        .to_string();
    let keys_dir = TempDir::new().unwrap();
    let keys = keys_dir.path().join("known_keys");
    let kf = keys.to_str().unwrap();
    let pinned = format!("{addr}#{printed}");
    let o = p2pchat(&["users", "--registry", &pinned, "--known-keys", kf]);
    assert!(o.status.success(), "{o:?}");
    let key = KnownKeys::open(&keys)
        .unwrap()
        .pinned(Subject::Registry(&addr))
        .expect("pinned under HOST:PORT");
    assert_eq!(key.fingerprint().to_string(), printed);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(WAIT).code(), Some(130));
}
