//! The NAT lab's scenarios: the real `p2pchat` binary on a small internet of network
//! namespaces (see `natlab/mod.rs` and docs/NATLAB.md for the topology).
//!
//! Today peers reach each other only directly: scenario 1 succeeds, and scenarios 2
//! and 3 record the baseline failure in one function each
//! ([`baseline_without_reverse_connect`], [`baseline_without_relay`]), the places that
//! reverse connect and the relay turn into successes.
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

/// A download that succeeds is given this long (it takes well under a second).
const FETCH_OK_BOUND: Duration = Duration::from_secs(30);
/// A download that cannot reach its peer must fail within this: the peer's connect
/// timeout (15 s) plus registering and looking up.
const FETCH_FAIL_BOUND: Duration = Duration::from_secs(40);
/// Whois, users: one registry round trip.
const QUERY_BOUND: Duration = Duration::from_secs(15);
/// The shared file's size: several times any TCP window, so "the bytes went this way"
/// is unambiguous in the flow counts.
const FILE_SIZE: usize = 2 << 20;

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

/// `p2pchat fetch` of `file` from `from`, run on `host` as `user` into `into`.
fn fetch(
    lab: &Lab,
    host: &str,
    user: &str,
    into: &Path,
    from: &str,
    file: &str,
    bound: Duration,
) -> Output {
    fetch_on(lab, host, user, into, from, file, "auto", bound)
}

/// [`fetch`] with `--path path`.
#[allow(clippy::too_many_arguments)]
fn fetch_on(
    lab: &Lab,
    host: &str,
    user: &str,
    into: &Path,
    from: &str,
    file: &str,
    path: &str,
    bound: Duration,
) -> Output {
    let registry = lab.registry_addr();
    let into = into.to_str().expect("UTF-8 path");
    let args = [
        "fetch",
        "--registry",
        &registry,
        "--user",
        user,
        "--dir",
        into,
        "--path",
        path,
        from,
        file,
    ];
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

/// What every failed fetch across a NAT looks like today: a one-line error, within
/// the bound (not killed by it), nothing saved, and the NAT counting the unsolicited
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
        lines[0].contains("timed out") && lines[0].contains("did not answer the connection"),
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

/// The download succeeded (see [`assert_fetched`]) on `path`, as the CLI says on
/// stderr ("fetching report.bin from bob (reverse)").
fn assert_fetched_on(o: &Output, into: &Path, expected: &[u8], path: &str) {
    assert_fetched(o, into, "report.bin", expected);
    assert!(
        o.stderr
            .lines()
            .any(|l| l == format!("fetching report.bin from bob ({path})")),
        "the path is said: {o:?}"
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
    let (_bob, port) = lab.share(&bob, "bob", &share);
    // The registry lists bob at his own public address.
    assert_eq!(whois(&lab, "alice", "bob"), SocketAddrV4::new(bob.ip, port));

    let capture = lab.capture_public();
    let into = dir(&lab, "alice-downloads");
    let o = fetch(
        &lab,
        "alice",
        "alice",
        &into,
        "bob",
        "report.bin",
        FETCH_OK_BOUND,
    );
    let cap = capture.stop();
    assert_fetched(&o, &into, "report.bin", &content);

    let flows = cap.flows();
    let direct: u64 = flows
        .iter()
        .filter(|((s, d), _)| *s == SocketAddrV4::new(bob.ip, port) && *d.ip() == alice.ip)
        .map(|(_, n)| n)
        .sum();
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
/// public address (not his inside one) and lists him; a direct download is dropped by
/// the NAT, and the default path gets the file by reverse connect.
#[test]
fn scenario2_callee_behind_nat_is_listed_at_the_nat_but_unreachable() {
    let start = Instant::now();
    let scenario = "scenario2_callee_behind_nat_is_listed_at_the_nat_but_unreachable";
    let Some(lab) = Lab::start(scenario, &[("alice", At::Public), ("bob", At::Behind("a"))]) else {
        return;
    };
    let bob = lab.host("bob").clone();
    let nat = lab.nat("a").clone();
    let mut registry = lab.start_registry();
    let share = dir(&lab, "bob-share");
    let (content, _) = make_file(&share, "report.bin");
    let (_bob, port) = lab.share(&bob, "bob", &share);

    // The registry's own log shows bob's session coming from the NAT's address.
    registry.expect_line_containing(&format!("{}:", nat.public_ip), "INIT,bob");
    let users = lab.run(
        lab.host("alice"),
        &["users", "--registry", &lab.registry_addr()],
        QUERY_BOUND,
    );
    assert!(
        users.status_ok() && users.stdout.lines().any(|l| l == "bob"),
        "bob is listed: {users:?}"
    );
    let seen = whois(&lab, "alice", "bob");
    assert_eq!(
        seen,
        SocketAddrV4::new(nat.public_ip, port),
        "listed at the NAT's public address"
    );
    assert_ne!(*seen.ip(), bob.ip, "never at his inside address");
    // Bob does listen: from inside the NAT his port answers. Only the NAT is in the way.
    assert!(
        lab.connects(
            &nat.ns,
            SocketAddrV4::new(bob.ip, port),
            Duration::from_secs(5)
        ),
        "bob's listener answers inside the NAT"
    );

    // Straight to the address the registry lists: the NAT drops it.
    let into = dir(&lab, "alice-downloads");
    let dropped_before = lab.nat_dropped("a");
    let o = fetch_on(
        &lab,
        "alice",
        "alice",
        &into,
        "bob",
        "report.bin",
        "direct",
        FETCH_FAIL_BOUND,
    );
    assert_blocked_by_nat(&lab, &o, &into, "a", dropped_before);

    // alice is reachable, bob is not: bob connects out to alice (reverse connect).
    let o = fetch(
        &lab,
        "alice",
        "alice",
        &into,
        "bob",
        "report.bin",
        FETCH_FAIL_BOUND,
    );
    assert_fetched_on(&o, &into, &content, "reverse");
    report_time(scenario, start);
}

/// Scenario 3: alice behind NAT b, bob behind NAT a. Each is listed at their own
/// NAT's public address; alice's download goes through the registry's relay.
#[test]
fn scenario3_both_behind_nats_fetch_through_the_relay() {
    let start = Instant::now();
    let scenario = "scenario3_both_behind_nats_fetch_through_the_relay";
    let Some(lab) = Lab::start(
        scenario,
        &[("alice", At::Behind("b")), ("bob", At::Behind("a"))],
    ) else {
        return;
    };
    let (alice, bob) = (lab.host("alice").clone(), lab.host("bob").clone());
    let (nat_a, nat_b) = (lab.nat("a").clone(), lab.nat("b").clone());
    let _registry = lab.start_registry();
    let bob_share = dir(&lab, "bob-share");
    let (content, _) = make_file(&bob_share, "report.bin");
    let (_bob, bob_port) = lab.share(&bob, "bob", &bob_share);
    let alice_share = dir(&lab, "alice-share");
    let (_alice, alice_port) = lab.share(&alice, "alice", &alice_share);

    assert_eq!(
        whois(&lab, "alice", "bob"),
        SocketAddrV4::new(nat_a.public_ip, bob_port)
    );
    assert_eq!(
        whois(&lab, "bob", "alice"),
        SocketAddrV4::new(nat_b.public_ip, alice_port)
    );
    assert_ne!(nat_a.public_ip, nat_b.public_ip);

    // Neither can be reached: both connect out to the registry's embedded relay.
    let into = dir(&lab, "alice-downloads");
    // As "alice" while her share is online: the run registers as alice~2.
    let o = fetch(
        &lab,
        "alice",
        "alice",
        &into,
        "bob",
        "report.bin",
        FETCH_FAIL_BOUND,
    );
    let o = Output {
        // The note about the alternate name is expected; the error is the other line.
        stderr: o
            .stderr
            .lines()
            .filter(|l| !l.contains("is online elsewhere"))
            .map(|l| format!("{l}\n"))
            .collect(),
        ..o
    };
    assert_fetched_on(&o, &into, &content, "relayed");
    report_time(scenario, start);
}

/// Scenario 4: the capture of the public segment, and its "this plaintext is not in
/// it" assertion, shown to work both ways on today's links: the registry link is
/// secured (`REG/2`): bob's file list crosses it as ciphertext only. The peer link is
/// read by its first line: plaintext `P2P/1` (the file's marker is found, and the
/// absence assertion fails on it), or secured `P2P/2` (the marker is absent).
#[test]
fn scenario4_capture_sees_what_crosses_the_public_segment() {
    let start = Instant::now();
    let scenario = "scenario4_capture_sees_what_crosses_the_public_segment";
    let Some(lab) = Lab::start(scenario, &[("alice", At::Public), ("bob", At::Public)]) else {
        return;
    };
    let (alice, bob) = (lab.host("alice").clone(), lab.host("bob").clone());
    let capture = lab.capture_public();
    let _registry = lab.start_registry();
    let share = dir(&lab, "bob-share");
    let file = format!("natlab-secret-name-{}.bin", std::process::id());
    let (content, marker) = make_file(&share, &file);
    let (_bob, port) = lab.share(&bob, "bob", &share);
    let into = dir(&lab, "alice-downloads");
    let o = fetch(&lab, "alice", "alice", &into, "bob", &file, FETCH_OK_BOUND);
    let cap = capture.stop();
    assert_fetched(&o, &into, &file, &content);
    if let Some(why) = cap.incomplete() {
        panic!("the capture must be complete here: {why}");
    }

    // Something never sent is absent; the helper must not cry wolf.
    cap.assert_absent(b"natlab: never sent by anyone", "a string nobody sent");

    // The registry links: bob's INIT carries the file's name, alice's queries ask for
    // bob. Secured (`REG/2` answered `OK`): neither is visible. A registry without
    // secured links (it refuses `REG/2`; the peer falls back to plaintext): both are.
    let registry = SocketAddrV4::new(natlab::REGISTRY_IP, natlab::REGISTRY_PORT);
    for (who, ip, visible) in [
        ("bob", bob.ip, file.as_bytes()),
        ("alice", alice.ip, &b"GET_P,bob"[..]),
    ] {
        let link = cap.between(ip, *registry.ip());
        if link.secured(ip, registry, b"REG/2 ") {
            link.assert_absent(visible, &format!("{who}'s registry session"));
        } else {
            link.assert_present(visible, &format!("{who}'s plaintext registry session"));
        }
    }

    // The peer link: alice to bob's port. Secured (`P2P/2` answered `OK`): the file's
    // marker must be absent. Plaintext (today): it is there, and the absence check
    // fails on it, as it would on a relay leaking plaintext.
    let bob_addr = SocketAddrV4::new(bob.ip, port);
    let peer_link = cap.between(alice.ip, bob.ip);
    if peer_link.secured(alice.ip, bob_addr, b"P2P/2 ") {
        peer_link.assert_absent(&marker, "the file's content on a secured peer link");
    } else {
        let request = peer_link
            .streams()
            .into_iter()
            .find(|s| s.dst == bob_addr)
            .map(|s| s.data)
            .unwrap_or_default();
        assert!(
            request.starts_with(b"P2P/1 FILE "),
            "a plaintext download request was captured"
        );
        peer_link.assert_present(&marker, "the file's content on today's plaintext peer link");
        assert!(
            peer_link
                .check_absent(&marker, "the file's content")
                .is_err(),
            "the absence check fails when the plaintext is there"
        );
        // Found in the reassembled stream bob -> alice (also across segment borders).
        let (streams, _) = peer_link.find(&marker);
        assert_eq!(
            streams,
            vec![(bob_addr, streams[0].1)],
            "bob's answer stream carries the file"
        );
        assert_eq!(*streams[0].1.ip(), alice.ip);
    }
    report_time(scenario, start);
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
