//! The NAT lab's scenarios: the real `p2pchat` binary on a small internet of network
//! namespaces (see `natlab/mod.rs` and docs/NATLAB.md for the topology).
//!
//! 1. both public: the download goes direct;
//! 2. the callee behind a NAT, the caller public: a direct connection is dropped by
//!    the NAT, and the download goes by reverse connect;
//! 3. both behind different NATs that keep source ports: a hole is punched and the
//!    download goes straight between the two NATs;
//! 4. a relayed download and chat (symmetric NATs), captured on the public segment: no
//!    file or chat plaintext in it, only the relay's two ciphertext streams;
//! 5. a relay at its circuit limit refuses a new circuit with a clear error, and a
//!    relayed download cut off mid-way resumes;
//! 6. both behind symmetric NATs (a random port per connection): the punch fails and
//!    the download is relayed.
//!
//! Each scenario skips with a message where the lab cannot run (not root, no `ip` or
//! `nft`), and fails there instead under `P2PCHAT_NATLAB_REQUIRED=1`.

#[path = "natlab/mod.rs"]
mod natlab;

use natlab::capture::Captured;
use natlab::{At, Lab, Output};
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A download that succeeds is given this long (it takes well under a second direct;
/// reverse and relayed add a registry round trip and the other side's dial-out).
const FETCH_OK_BOUND: Duration = Duration::from_secs(40);
/// A download that cannot reach its peer must fail within this: the peer's connect
/// timeout (15 s) plus registering and looking up.
const FETCH_FAIL_BOUND: Duration = Duration::from_secs(40);
/// Whois, users: one registry round trip.
const QUERY_BOUND: Duration = Duration::from_secs(15);
/// The shared file's size: several times any TCP window, so "the bytes went this way"
/// is unambiguous in the flow counts.
const FILE_SIZE: usize = 2 << 20;
/// The relay's port in the lab: `p2pchat server` runs its relay next to the registry.
const RELAY_PORT: u16 = natlab::REGISTRY_PORT + 1;

/// A file to share: varied bytes with a distinctive marker every 256 KiB (the string a
/// capture looks for), returned with that marker.
fn make_file(dir: &Path, name: &str) -> (Vec<u8>, Vec<u8>) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let marker = format!("natlab-plaintext-marker-{}-{nanos}", std::process::id()).into_bytes();
    let mut bytes: Vec<u8> = (0..FILE_SIZE).map(|i| (i * 7 + i / 251) as u8).collect();
    for at in (1000..FILE_SIZE - marker.len()).step_by(256 << 10) {
        bytes[at..at + marker.len()].copy_from_slice(&marker);
    }
    std::fs::write(dir.join(name), &bytes).expect("write the shared file");
    (bytes, marker)
}

/// A fresh directory in the lab's temporary tree.
fn dir(lab: &Lab, name: &str) -> PathBuf {
    let d = lab.temp.path().join(name);
    std::fs::create_dir_all(&d).expect("create a directory");
    d
}

/// `p2pchat whois USER` asked from `host`: the `IP:PORT` the registry gives (its
/// first line).
fn whois(lab: &Lab, host: &str, user: &str) -> SocketAddrV4 {
    let registry = lab.registry_addr();
    let o = lab.run(
        lab.host(host),
        &["whois", "--registry", &registry, user],
        QUERY_BOUND,
    );
    assert!(o.status_ok(), "whois {user} from {host}: {o:?}");
    // The first line; the second is the key the registry lists.
    o.stdout
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("whois {user}: not IPv4:PORT: {o:?}"))
}

/// The arguments of `p2pchat fetch` of `file` from `from` as `user` into `into`, then
/// `extra` (e.g. `--path direct`).
fn fetch_args(
    lab: &Lab,
    user: &str,
    into: &Path,
    from: &str,
    file: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "fetch",
        "--registry",
        &lab.registry_addr(),
        "--user",
        user,
        "--dir",
        into.to_str().expect("UTF-8 path"),
        from,
        file,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `p2pchat fetch` run on `host` to its end (see [`fetch_args`]).
#[allow(clippy::too_many_arguments)]
fn fetch(
    lab: &Lab,
    host: &str,
    user: &str,
    into: &Path,
    from: &str,
    file: &str,
    extra: &[&str],
    bound: Duration,
) -> Output {
    let args = fetch_args(lab, user, into, from, file, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.run(lab.host(host), &args, bound)
}

/// The download succeeded, verified, and the saved file is byte for byte `expected`.
fn assert_fetched(o: &Output, into: &Path, file: &str, expected: &[u8]) {
    assert!(o.status_ok(), "fetch failed: {o:?}");
    let saved = PathBuf::from(o.stdout.trim());
    assert_eq!(saved, into.join(file), "the saved path is printed: {o:?}");
    // The CLI says "unverified" only for a download without a hash (original clients).
    assert!(
        !o.stderr.contains("unverified"),
        "hash-verified download: {o:?}"
    );
    let got = std::fs::read(&saved).expect("read the downloaded file");
    assert!(
        got == expected,
        "the downloaded file differs ({} bytes, expected {})",
        got.len(),
        expected.len()
    );
}

/// The download of `file` from `from` said it went by `path` (`reverse`, `relayed`);
/// a direct one says nothing about its path.
fn assert_path(o: &Output, file: &str, from: &str, path: &str) {
    let line = format!("fetching {file} from {from} ({path})");
    assert!(
        o.stderr.lines().any(|l| l.contains(&line)),
        "the download reports its path {path:?}: {o:?}"
    );
}

/// A fetch forced onto the direct path across a NAT: a one-line error, within the
/// bound (not killed by it), nothing saved, and the NAT counting the unsolicited
/// packets it dropped (so the NAT, not a broken peer, is why).
fn assert_blocked_by_nat(lab: &Lab, o: &Output, into: &Path, nat: &str, dropped_before: u64) {
    assert!(
        !o.timed_out,
        "fetch must give up by itself within {FETCH_FAIL_BOUND:?}: {o:?}"
    );
    assert_eq!(
        o.status.and_then(|s| s.code()),
        Some(1),
        "fetch fails with status 1: {o:?}"
    );
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {o:?}");
    assert!(lines[0].starts_with("p2pchat: "), "{o:?}");
    assert!(
        lines[0].contains("did not answer the connection"),
        "says the connection got no answer, naming the user and address: {o:?}"
    );
    assert_eq!(o.stdout, "", "nothing saved is printed: {o:?}");
    let left: Vec<_> = std::fs::read_dir(into)
        .expect("read the download dir")
        .collect();
    assert!(
        left.is_empty(),
        "nothing is left in the download directory: {left:?}"
    );
    let dropped = lab.nat_dropped(nat) - dropped_before;
    assert!(
        dropped > 0,
        "NAT {nat} dropped the unsolicited connection attempts"
    );
}

/// How long a scenario took, on stderr past the harness's capture (for the figures).
fn report_time(scenario: &str, start: Instant) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "natlab: {scenario} took {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// The bytes each direction of each TCP connection carried, for failure messages.
fn flow_table(cap: &Captured) -> String {
    cap.flows()
        .iter()
        .map(|((s, d), n)| format!("  {s} -> {d}: {n} bytes\n"))
        .collect()
}

/// Drop the note a second run under a name already online prints ("… is online
/// elsewhere: registered as alice~2").
fn without_alternate_name_note(o: Output) -> Output {
    Output {
        stderr: o
            .stderr
            .lines()
            .filter(|l| !l.contains("is online elsewhere"))
            .map(|l| format!("{l}\n"))
            .collect(),
        ..o
    }
}

/// Scenario 1: both peers public. The download is direct: the file's bytes cross the
/// public segment from bob's address to alice's and nowhere else.
#[test]
fn scenario1_both_public_fetch_goes_direct() {
    let start = Instant::now();
    let Some(lab) = Lab::start(
        "scenario1_both_public_fetch_goes_direct",
        &[("alice", At::Public), ("bob", At::Public)],
    ) else {
        return;
    };
    let (alice, bob) = (lab.host("alice").clone(), lab.host("bob").clone());
    let _registry = lab.start_registry();
    let share = dir(&lab, "bob-share");
    let (content, _) = make_file(&share, "report.bin");
    let (mut bob_share, port) = lab.share(&bob, "bob", &share);
    // The registry lists bob at his own public address, and reaches him there.
    assert_eq!(whois(&lab, "alice", "bob"), SocketAddrV4::new(bob.ip, port));
    bob_share.expect_line(
        &format!("[stderr] reachable at {}:{port}", bob.ip),
        natlab::proc::WAIT,
    );

    let capture = lab.capture_public();
    let into = dir(&lab, "alice-downloads");
    let o = fetch(
        &lab,
        "alice",
        "alice",
        &into,
        "bob",
        "report.bin",
        &[],
        FETCH_OK_BOUND,
    );
    let cap = capture.stop();
    assert_fetched(&o, &into, "report.bin", &content);
    assert!(
        !o.stderr.contains("fetching"),
        "a direct download says nothing about its path: {o:?}"
    );

    let flows = cap.flows();
    let direct =
        cap.bytes_where(|s, d| *s == SocketAddrV4::new(bob.ip, port) && *d.ip() == alice.ip);
    assert!(
        direct >= FILE_SIZE as u64,
        "the file went from bob's address straight to alice's:\n{}",
        flow_table(&cap)
    );
    // No other flow carried anything like the file (the registry only saw queries).
    for ((s, d), n) in &flows {
        let pair = [*s.ip(), *d.ip()];
        if !(pair.contains(&alice.ip) && pair.contains(&bob.ip)) {
            assert!(
                *n < (FILE_SIZE / 4) as u64,
                "{s} -> {d} carried {n} bytes:\n{}",
                flow_table(&cap)
            );
        }
    }
    report_time("scenario1_both_public_fetch_goes_direct", start);
}

/// Scenario 2: bob behind NAT a, alice public. The registry sees bob at NAT a's
/// public address, lists him there, and finds him unreachable; a download forced
/// direct is dropped by the NAT; the ordinary download goes by reverse connect: bob
/// connects out to alice, and the file comes over that connection.
#[test]
fn scenario2_callee_behind_nat_is_reached_by_reverse_connect() {
    let start = Instant::now();
    let scenario = "scenario2_callee_behind_nat_is_reached_by_reverse_connect";
    let Some(lab) = Lab::start(scenario, &[("alice", At::Public), ("bob", At::Behind("a"))]) else {
        return;
    };
    let (alice, bob) = (lab.host("alice").clone(), lab.host("bob").clone());
    let nat = lab.nat("a").clone();
    let mut registry = lab.start_registry();
    let share = dir(&lab, "bob-share");
    let (content, _) = make_file(&share, "report.bin");
    let (mut bob_share, port) = lab.share(&bob, "bob", &share);

    // The registry's own log shows bob's session coming from the NAT's address.
    registry.expect_line_containing(&format!("{}:", nat.public_ip), "INIT,bob");
    let seen = whois(&lab, "alice", "bob");
    assert_eq!(
        seen,
        SocketAddrV4::new(nat.public_ip, port),
        "listed at the NAT's public address"
    );
    assert_ne!(*seen.ip(), bob.ip, "never at his inside address");
    // The registry's check from outside fails, and bob is told.
    bob_share.expect_line(
        &format!("[stderr] not reachable from outside at {seen}"),
        natlab::proc::WAIT,
    );
    // Bob does listen: from inside the NAT his port answers. Only the NAT is in the way.
    assert!(
        lab.connects(
            &nat.ns,
            SocketAddrV4::new(bob.ip, port),
            Duration::from_secs(5)
        ),
        "bob's listener answers inside the NAT"
    );

    // Forced direct: the NAT drops it.
    let blocked = dir(&lab, "alice-direct");
    let dropped_before = lab.nat_dropped("a");
    let o = fetch(
        &lab,
        "alice",
        "alice",
        &blocked,
        "bob",
        "report.bin",
        &["--path", "direct"],
        FETCH_FAIL_BOUND,
    );
    assert_blocked_by_nat(&lab, &o, &blocked, "a", dropped_before);

    // The ordinary download: reverse connect.
    let capture = lab.capture_public();
    let into = dir(&lab, "alice-downloads");
    let o = fetch(
        &lab,
        "alice",
        "alice",
        &into,
        "bob",
        "report.bin",
        &[],
        FETCH_OK_BOUND,
    );
    let cap = capture.stop();
    assert_fetched(&o, &into, "report.bin", &content);
    assert_path(&o, "report.bin", "bob", "reverse");
    // The file came from the NAT's address (bob's connection out, masqueraded) to
    // alice's address, and not through the relay.
    let reversed: u64 = cap.bytes_where(|s, d| *s.ip() == nat.public_ip && *d.ip() == alice.ip);
    assert!(
        reversed >= FILE_SIZE as u64,
        "the file went from NAT a's address to alice's:\n{}",
        flow_table(&cap)
    );
    let relayed: u64 = cap.bytes_where(|s, d| s.port() == RELAY_PORT || d.port() == RELAY_PORT);
    assert_eq!(relayed, 0, "nothing went through the relay");
    report_time(scenario, start);
}

/// Scenario 3: alice behind NAT b, bob behind NAT a, both NATs keeping a connection's
/// source port (as most home routers do). Each is listed at their own NAT's public
/// address and neither is reachable; the registry times a hole punch (both connect to
/// each other at once, each SYN opening its own NAT for the other's), and the file
/// goes straight from NAT a to NAT b, past no relay.
#[test]
fn scenario3_both_behind_nats_fetch_goes_through_a_punched_hole() {
    let start = Instant::now();
    let scenario = "scenario3_both_behind_nats_fetch_goes_through_a_punched_hole";
    let Some(lab) = Lab::start(
        scenario,
        &[("alice", At::Behind("b")), ("bob", At::Behind("a"))],
    ) else {
        return;
    };
    let Fetched {
        lab,
        alice,
        nat_a,
        nat_b,
        bob_port,
        mut bob_share,
        _alice_share,
        _registry,
        o,
        cap,
    } = fetch_between_two_nats(lab);
    assert_path(&o, "report.bin", "bob", "punched");
    // The file went from NAT a to NAT b directly: from bob's listening port (kept by
    // NAT a) to the fetch's punching port; nothing through the relay.
    let relay = SocketAddrV4::new(natlab::REGISTRY_IP, RELAY_PORT);
    let direct: u64 = cap.bytes_where(|s, d| {
        *s == SocketAddrV4::new(nat_a.public_ip, bob_port) && *d.ip() == nat_b.public_ip
    });
    assert!(
        direct >= FILE_SIZE as u64,
        "the file went from NAT a to NAT b:\n{}",
        flow_table(&cap)
    );
    let relayed: u64 = cap.bytes_where(|s, d| *s == relay || *d == relay);
    assert_eq!(
        relayed,
        0,
        "nothing went through the relay:\n{}",
        flow_table(&cap)
    );
    // A chat takes a punched hole of its own (a fresh port on alice's side).
    let secret = format!("natlab punched chat line {}", std::process::id());
    send_to_bob(&lab, &alice, &secret, "punched");
    // As "alice" while her share is online: the run registers as alice~2.
    bob_share.expect_line(&format!("alice~2: {secret}"), natlab::proc::WAIT);
    report_time(scenario, start);
}

/// `p2pchat send bob <text>` as alice from `host`: it succeeds and says the chat went
/// by `path`.
fn send_to_bob(lab: &Lab, host: &natlab::Host, text: &str, path: &str) {
    let home = dir(lab, "alice-home");
    let sent = lab.run(
        host,
        &[
            "send",
            "--registry",
            &lab.registry_addr(),
            "--user",
            "alice",
            "--dir",
            home.to_str().expect("UTF-8 path"),
            "bob",
            text,
        ],
        FETCH_OK_BOUND,
    );
    assert!(sent.status_ok(), "send: {sent:?}");
    assert!(
        sent.stderr.contains(&format!("chatting with bob ({path})")),
        "the chat reports its path: {sent:?}"
    );
}

/// What scenarios 3 and 6 share: alice behind NAT b and bob behind NAT a in `lab`,
/// each listed at their own NAT's address (as `whois` shows), bob sharing report.bin
/// and accepting chats; alice (as alice~2, her share online) fetches it with the public
/// segment captured, and it arrives byte-identical and verified.
struct Fetched {
    alice: natlab::Host,
    nat_a: natlab::Nat,
    nat_b: natlab::Nat,
    bob_port: u16,
    bob_share: natlab::LabProc,
    _alice_share: natlab::LabProc,
    _registry: natlab::LabProc,
    o: Output,
    cap: Captured,
    lab: Lab,
}

fn fetch_between_two_nats(lab: Lab) -> Fetched {
    let (alice, bob) = (lab.host("alice").clone(), lab.host("bob").clone());
    let (nat_a, nat_b) = (lab.nat("a").clone(), lab.nat("b").clone());
    let registry = lab.start_registry();
    let share = dir(&lab, "bob-share");
    let (content, _) = make_file(&share, "report.bin");
    let (mut bob_share, bob_port) = lab.share_with(&bob, "bob", &share, &["--accept-chats"]);
    // bob's listener checked (and found unreachable) before the fetch plans its path.
    bob_share.expect_line("[stderr] not reachable from outside at", natlab::proc::WAIT);
    let alice_share = dir(&lab, "alice-share");
    let (alice_share, alice_port) = lab.share(&alice, "alice", &alice_share);
    assert_eq!(
        whois(&lab, "alice", "bob"),
        SocketAddrV4::new(nat_a.public_ip, bob_port)
    );
    assert_eq!(
        whois(&lab, "bob", "alice"),
        SocketAddrV4::new(nat_b.public_ip, alice_port)
    );
    assert_ne!(nat_a.public_ip, nat_b.public_ip);

    let capture = lab.capture_public();
    let into = dir(&lab, "alice-downloads");
    // As "alice" while her share is online: the run registers as alice~2.
    let o = without_alternate_name_note(fetch(
        &lab,
        "alice",
        "alice",
        &into,
        "bob",
        "report.bin",
        &[],
        FETCH_OK_BOUND,
    ));
    let cap = capture.stop();
    assert_fetched(&o, &into, "report.bin", &content);
    Fetched {
        alice,
        nat_a,
        nat_b,
        bob_port,
        bob_share,
        _alice_share: alice_share,
        _registry: registry,
        o,
        cap,
        lab,
    }
}

/// Scenario 4: a relayed download and a relayed chat, with every byte on the public
/// segment captured: neither the file's content, nor its name, nor the chat's text is
/// in it; the relay's streams are `RELAY/1` then Noise ciphertext.
#[test]
fn scenario4_the_relay_carries_only_ciphertext() {
    let start = Instant::now();
    let scenario = "scenario4_the_relay_carries_only_ciphertext";
    // Symmetric NATs: no hole can be punched, so both links take the relay.
    let Some(lab) = Lab::start(
        scenario,
        &[
            ("alice", At::BehindSymmetric("b")),
            ("bob", At::BehindSymmetric("a")),
        ],
    ) else {
        return;
    };
    let (alice, bob) = (lab.host("alice").clone(), lab.host("bob").clone());
    let capture = lab.capture_public();
    let _registry = lab.start_registry();
    let share = dir(&lab, "bob-share");
    let file = format!("natlab-secret-name-{}.bin", std::process::id());
    let (content, marker) = make_file(&share, &file);
    let (mut bob_share, _) = lab.share_with(&bob, "bob", &share, &["--accept-chats"]);

    let into = dir(&lab, "alice-downloads");
    let o = fetch(
        &lab,
        "alice",
        "alice",
        &into,
        "bob",
        &file,
        &[],
        FETCH_OK_BOUND,
    );
    assert_fetched(&o, &into, &file, &content);
    assert_path(&o, &file, "bob", "relayed");

    // A chat, relayed too: bob's share prints what arrives.
    let secret = format!("natlab secret chat line {}", std::process::id());
    send_to_bob(&lab, &alice, &secret, "relayed");
    bob_share.expect_line(&format!("alice: {secret}"), natlab::proc::WAIT);
    let cap = capture.stop();
    if let Some(why) = cap.incomplete() {
        panic!("the capture must be complete here: {why}");
    }

    // Something never sent is absent; the helper must not cry wolf.
    cap.assert_absent(b"natlab: never sent by anyone", "a string nobody sent");
    cap.assert_absent(&marker, "the file's content");
    cap.assert_absent(file.as_bytes(), "the file's name");
    cap.assert_absent(secret.as_bytes(), "the chat's text");

    // The relay's streams exist (both sides connected out to it) and open with
    // RELAY/1; what follows is the peers' secured link.
    let relay = SocketAddrV4::new(natlab::REGISTRY_IP, RELAY_PORT);
    let to_relay: Vec<_> = cap
        .streams()
        .into_iter()
        .filter(|s| s.dst == relay)
        .collect();
    assert!(
        to_relay.len() >= 4,
        "two circuits (download, chat), two sides each: {}",
        flow_table(&cap)
    );
    for s in &to_relay {
        assert!(
            s.data.starts_with(b"RELAY/1 "),
            "{:?}",
            &s.data[..s.data.len().min(40)]
        );
    }
    let from_a = to_relay
        .iter()
        .any(|s| *s.src.ip() == lab.nat("a").public_ip);
    let from_b = to_relay
        .iter()
        .any(|s| *s.src.ip() == lab.nat("b").public_ip);
    assert!(from_a && from_b, "both NATs connected out to the relay");
    let _ = (alice.ip, bob.ip);
    report_time(scenario, start);
}

/// Scenario 5: a relay at its limits. With room for one circuit, a second relayed
/// download is refused with a clear error while the first runs; then the first is cut
/// off mid-way (its process killed), and the same command again resumes it from the
/// partial file and finishes it, verified.
#[test]
fn scenario5_relay_limits_and_a_relayed_download_resumed() {
    let start = Instant::now();
    let scenario = "scenario5_relay_limits_and_a_relayed_download_resumed";
    let Some(lab) = Lab::start(
        scenario,
        // Symmetric NATs: no hole can be punched, so the downloads take the relay.
        &[
            ("alice", At::BehindSymmetric("b")),
            ("carol", At::BehindSymmetric("b")),
            ("bob", At::BehindSymmetric("a")),
        ],
    ) else {
        return;
    };
    let bob = lab.host("bob").clone();
    // One circuit, 256 KiB/s: the 2 MiB download takes about 8 s, long enough to be
    // seen holding the circuit and to be cut off half-way.
    let _registry =
        lab.start_registry_with(&["--relay-max-circuits", "1", "--relay-circuit-rate", "256K"]);
    let share = dir(&lab, "bob-share");
    let (content, _) = make_file(&share, "report.bin");
    let (_bob, _) = lab.share(&bob, "bob", &share);

    let into = dir(&lab, "alice-downloads");
    let args = fetch_args(&lab, "alice", &into, "bob", "report.bin", &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut first = lab.spawn(lab.host("alice"), &args);
    first.expect_line(
        "[stderr] fetching report.bin from bob (relayed)",
        natlab::proc::WAIT,
    );
    // The partial file grows: the circuit is in use.
    let partial = wait_for_partial(&into, "report.bin", 1);

    // Carol's download needs a second circuit: refused, clearly. (Straight to the
    // relay: by default a punch would be tried first, and the first download might be
    // over by the time it failed.)
    let carol_into = dir(&lab, "carol-downloads");
    let o = fetch(
        &lab,
        "carol",
        "carol",
        &carol_into,
        "bob",
        "report.bin",
        &["--path", "relay"],
        FETCH_FAIL_BOUND,
    );
    assert!(!o.status_ok() && !o.timed_out, "refused, not hung: {o:?}");
    assert!(
        o.stderr.contains("relay") && o.stderr.contains("circuit limit"),
        "the error names the relay's circuit limit: {o:?}"
    );

    // Cut off mid-way.
    let had: u64 = 256 << 10;
    wait_for_partial(&into, "report.bin", had);
    drop(first); // SIGKILL, reaped
    let kept = std::fs::metadata(&partial).map_or(0, |m| m.len());
    assert!(
        kept >= had && kept < FILE_SIZE as u64,
        "a partial file is kept: {kept} bytes"
    );

    // The same command again resumes and finishes, verified.
    let o = fetch(
        &lab,
        "alice",
        "alice",
        &into,
        "bob",
        "report.bin",
        &[],
        FETCH_OK_BOUND,
    );
    assert_fetched(&o, &into, "report.bin", &content);
    assert_path(&o, "report.bin", "bob", "relayed");
    assert!(
        o.stderr.contains("resuming report.bin"),
        "it resumed from the partial file: {o:?}"
    );
    report_time(scenario, start);
}

/// Scenario 6: alice and bob behind NATs that give every connection a random port
/// (symmetric). Neither is reachable and the hole punch fails (each side's SYN goes to
/// a port the other's NAT never opened), so the download is relayed, both sides
/// connecting out to the relay next to the registry.
#[test]
fn scenario6_behind_symmetric_nats_the_punch_fails_and_the_fetch_is_relayed() {
    let start = Instant::now();
    let scenario = "scenario6_behind_symmetric_nats_the_punch_fails_and_the_fetch_is_relayed";
    let Some(lab) = Lab::start(
        scenario,
        &[
            ("alice", At::BehindSymmetric("b")),
            ("bob", At::BehindSymmetric("a")),
        ],
    ) else {
        return;
    };
    let Fetched {
        nat_a,
        nat_b,
        o,
        cap,
        ..
    } = fetch_between_two_nats(lab);
    assert_path(&o, "report.bin", "bob", "relayed");
    // The file went NAT a -> relay -> NAT b; never between the two NATs.
    let relay = SocketAddrV4::new(natlab::REGISTRY_IP, RELAY_PORT);
    let sum = |from: std::net::Ipv4Addr, to: std::net::Ipv4Addr| -> u64 {
        cap.bytes_where(|s, d| *s.ip() == from && *d.ip() == to)
    };
    let into_relay: u64 = cap.bytes_where(|s, d| *s.ip() == nat_a.public_ip && *d == relay);
    let out_of_relay: u64 = cap.bytes_where(|s, d| *s == relay && *d.ip() == nat_b.public_ip);
    assert!(
        into_relay >= FILE_SIZE as u64 && out_of_relay >= FILE_SIZE as u64,
        "the file went from NAT a to the relay and from the relay to NAT b:\n{}",
        flow_table(&cap)
    );
    assert_eq!(
        sum(nat_a.public_ip, nat_b.public_ip) + sum(nat_b.public_ip, nat_a.public_ip),
        0,
        "nothing went between the NATs"
    );
    report_time(scenario, start);
}

/// Waits (at most the lab's wait) until the partial file of `file` in `into` holds at
/// least `bytes`; returns its path.
fn wait_for_partial(into: &Path, file: &str, bytes: u64) -> PathBuf {
    let partial = p2pcore::transfer::partial_path(into, file);
    let deadline = Instant::now() + natlab::proc::WAIT;
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < bytes {
        assert!(
            Instant::now() < deadline,
            "no partial file {} with {bytes} bytes",
            partial.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    partial
}

/// The lab leaves nothing behind: after a panic inside a scenario, its namespaces and
/// processes are gone; a namespace left by a crashed run (its process dead) is swept.
#[test]
fn lab_cleans_up_after_a_panic_and_after_a_crash() {
    let scenario = "lab_cleans_up_after_a_panic_and_after_a_crash";
    let (tx, rx) = std::sync::mpsc::channel();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let Some(lab) = Lab::start(scenario, &[("alice", At::Public), ("bob", At::Behind("a"))])
        else {
            return;
        };
        let registry = lab.start_registry();
        tx.send((lab.tag.clone(), registry.pid())).unwrap();
        panic!("a scenario failing half-way");
    }));
    let Ok((tag, pid)) = rx.try_recv() else {
        // Skipped (a required lab panics in `Lab::start`, caught above: fail here).
        assert!(!natlab::required(), "the lab is required but did not start");
        return;
    };
    assert!(panicked.is_err());
    assert!(
        natlab::namespaces_tagged(&tag).is_empty(),
        "no namespace of {tag} is left"
    );
    // SAFETY: signal 0 only asks whether the process exists.
    assert_ne!(
        unsafe { libc::kill(pid, 0) },
        0,
        "the registry process {pid} is gone"
    );

    // A crashed run: a namespace of a process that no longer exists.
    let dead = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().expect("reap true");
    let stale = format!("p2pnl-{dead_pid}-0-stale");
    let made = natlab::proc::run_bounded(
        {
            let mut c = std::process::Command::new(natlab::tool("ip"));
            c.args(["netns", "add", &stale]);
            c
        },
        Duration::from_secs(10),
    );
    assert!(made.status_ok(), "{made:?}");
    natlab::sweep_stale();
    assert!(
        natlab::namespaces_tagged(&stale).is_empty(),
        "the stale namespace {stale} was swept"
    );
}

/// The capture's stream reassembly, on frames made by hand (needs no lab): segments
/// out of order, retransmitted and overlapping make one stream; a string split across
/// two segments is found in the stream and in no single frame; a hole makes the
/// capture unable to prove absence.
#[test]
fn capture_reassembles_streams_from_segments() {
    let a = SocketAddrV4::new(std::net::Ipv4Addr::new(203, 0, 113, 20), 40000);
    let b = SocketAddrV4::new(std::net::Ipv4Addr::new(203, 0, 113, 21), 7000);
    let isn = u32::MAX - 3; // the sequence numbers wrap inside the stream
    let frames = [
        frame(a, b, isn, true, b""),
        frame(a, b, isn.wrapping_add(1 + 10), false, b"-marker-splits"),
        frame(a, b, isn.wrapping_add(1), false, b"0123456789"),
        frame(a, b, isn.wrapping_add(1 + 5), false, b"56789-mar"), // overlap
        frame(a, b, isn.wrapping_add(1), false, b"0123456789"),    // retransmission
        frame(b, a, 77, false, b"no SYN seen this way"),
    ];
    let cap = Captured {
        frames: frames
            .into_iter()
            .map(|data| natlab::capture::Frame { data })
            .collect(),
        ..Captured::default()
    };
    let streams = cap.streams();
    let ab = streams.iter().find(|s| s.src == a).expect("a -> b");
    assert_eq!(ab.data, b"0123456789-marker-splits");
    assert_eq!(ab.gaps, 0);
    let ba = streams.iter().find(|s| s.src == b).expect("b -> a");
    assert_eq!(ba.data, b"no SYN seen this way");
    assert_eq!(
        cap.find(b"9-marker-s"),
        (vec![(a, b)], 0),
        "found across segments only"
    );
    assert!(cap.check_absent(b"9-marker-s", "x").is_err());
    cap.assert_absent(b"never sent", "a string nobody sent");
    assert_eq!(cap.flows()[&(a, b)], 10 + 14 + 9 + 10);

    let holed = Captured {
        frames: vec![
            natlab::capture::Frame {
                data: frame(a, b, 1000, false, b"abc"),
            },
            natlab::capture::Frame {
                data: frame(a, b, 1010, false, b"xyz"),
            },
        ],
        ..Captured::default()
    };
    let why = holed.check_absent(b"never sent", "x").unwrap_err();
    assert!(why.contains("incomplete"), "{why}");
    let dropped = Captured { drops: 1, ..cap };
    assert!(
        dropped.check_absent(b"never sent", "x").is_err(),
        "drops make it incomplete"
    );
}

/// An Ethernet frame holding an IPv4 TCP segment from `src` to `dst`.
fn frame(src: SocketAddrV4, dst: SocketAddrV4, seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 20 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 6, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.ip().octets());
    ip.extend_from_slice(&dst.ip().octets());
    f.extend_from_slice(&ip);
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&src.port().to_be_bytes());
    tcp.extend_from_slice(&dst.port().to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&[
        0,
        0,
        0,
        0,
        0x50,
        if syn { 0x02 } else { 0x18 },
        0xff,
        0xff,
        0,
        0,
        0,
        0,
    ]);
    f.extend_from_slice(&tcp);
    f.extend_from_slice(payload);
    f
}
