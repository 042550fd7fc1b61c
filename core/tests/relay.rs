//! The relay over real loopback sockets: joining, forwarding both ways (splice and
//! copy), half-close, every refusal line, the circuit, pending and rate limits, the
//! lifetime and idle deadlines, and what idle circuits cost in threads, descriptors and
//! memory.
//!
//! The tests take one lock: several measure the process's threads and descriptors.

mod common;

use p2pcore::relay::token::mint;
use p2pcore::relay::{
    CloseReason, Forwarding, Relay, RelayEvent, RelayLimits, RelaySecret, RelayStats,
};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

static SERIAL: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

fn token(secret: &RelaySecret) -> String {
    mint(secret, SystemTime::now(), Duration::from_secs(60)).unwrap()
}

/// Connects from `from` (a loopback address) and sends the first line.
fn connect_from(relay: SocketAddr, from: &str, line: &str) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let bind: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&bind.into()).unwrap();
    socket.connect(&relay.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    s
}

fn connect(relay: SocketAddr, token: &str) -> TcpStream {
    connect_from(relay, "127.0.0.1", &format!("RELAY/1 {token}\n"))
}

/// One line, read a byte at a time so nothing after it is taken.
fn line(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => {
                out.push(b[0]);
                if b[0] == b'\n' {
                    break;
                }
            }
            Err(e) => panic!("no line (got {:?}): {e}", String::from_utf8_lossy(&out)),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The refusal line, then the close (a FIN, not a reset).
fn refused(s: &mut TcpStream, expected: &str) {
    assert_eq!(line(s), expected);
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("a clean close after the ERR line");
    assert!(rest.is_empty(), "{rest:?}");
}

/// Two connections joined with one fresh token.
fn pair(relay: SocketAddr, secret: &RelaySecret) -> (TcpStream, TcpStream) {
    let t = token(secret);
    // Whichever line the relay reads first waits for the other.
    let mut a = connect(relay, &t);
    let mut b = connect(relay, &t);
    assert_eq!(line(&mut a), "OK relayed\n");
    assert_eq!(line(&mut b), "OK relayed\n");
    (a, b)
}

fn start(limits: RelayLimits, forwarding: Forwarding) -> (Relay, RelaySecret) {
    let secret = RelaySecret::generate().unwrap();
    let relay = Relay::builder(secret.clone())
        .limits(limits)
        .forwarding(forwarding)
        .bind("127.0.0.1:0")
        .unwrap();
    (relay, secret)
}

fn unlimited() -> RelayLimits {
    RelayLimits {
        circuit_bytes_per_sec: 0,
        total_bytes_per_sec: 0,
        ..RelayLimits::default()
    }
}

fn wait_stats(relay: &Relay, f: impl Fn(&RelayStats) -> bool) -> RelayStats {
    assert!(
        common::wait_until(Duration::from_secs(10), || f(&relay.stats())),
        "{:?}",
        relay.stats()
    );
    relay.stats()
}

fn read_all(mut s: TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut v = Vec::new();
    s.read_to_end(&mut v).unwrap();
    v
}

fn forwards_both_ways(forwarding: Forwarding) {
    let (relay, secret) = start(unlimited(), forwarding);
    let addr = relay.local_addr();

    // Half-close: a sends and closes its direction; b reads to the end, and only then
    // answers on the same circuit.
    let (mut a, mut b) = pair(addr, &secret);
    let to_b = common::pattern(3 << 20, 1);
    let to_a = common::pattern(2 << 20, 2);
    a.write_all(&to_b).unwrap();
    a.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    b.read_to_end(&mut got).unwrap();
    assert_eq!(blake3::hash(&got), blake3::hash(&to_b), "a -> b");
    b.write_all(&to_a).unwrap();
    b.shutdown(Shutdown::Write).unwrap();
    let got = read_all(a);
    assert_eq!(blake3::hash(&got), blake3::hash(&to_a), "b -> a");
    drop(b);

    // Both ways at once (neither side reads before it has written everything): the
    // relay must not stall one direction behind the other.
    let (a, b) = pair(addr, &secret);
    let big_a = common::pattern(8 << 20, 3);
    let big_b = common::pattern(6 << 20, 4);
    let send = |mut s: TcpStream, data: Vec<u8>| {
        std::thread::spawn(move || {
            s.write_all(&data).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
        })
    };
    let ta = send(a.try_clone().unwrap(), big_a.clone());
    let tb = send(b.try_clone().unwrap(), big_b.clone());
    let rb = std::thread::spawn(move || read_all(b));
    let got_a = read_all(a);
    let got_b = rb.join().unwrap();
    ta.join().unwrap();
    tb.join().unwrap();
    assert_eq!(blake3::hash(&got_b), blake3::hash(&big_a));
    assert_eq!(blake3::hash(&got_a), blake3::hash(&big_b));

    let s = wait_stats(&relay, |s| s.circuits == 0);
    assert_eq!(s.joined, 2);
    assert_eq!(
        s.bytes_forwarded,
        (to_b.len() + to_a.len() + big_a.len() + big_b.len()) as u64
    );
    assert_eq!(s.pending, 0);
    assert_eq!(s.refused, 0);
}

#[test]
fn a_joined_pair_forwards_both_ways_byte_identical_with_splice() {
    let _g = SERIAL.lock();
    forwards_both_ways(Forwarding::Splice);
}

#[test]
fn a_joined_pair_forwards_both_ways_byte_identical_with_the_copy_loop() {
    let _g = SERIAL.lock();
    forwards_both_ways(Forwarding::Copy);
}

#[test]
fn bytes_sent_right_after_the_line_reach_the_other_side() {
    let _g = SERIAL.lock();
    let (relay, secret) = start(unlimited(), Forwarding::Splice);
    let t = token(&secret);
    // Both sides send their first bytes without waiting for `OK relayed`.
    let mut a = connect_from(
        relay.local_addr(),
        "127.0.0.1",
        &format!("RELAY/1 {t}\nhello from a"),
    );
    std::thread::sleep(Duration::from_millis(50));
    let mut b = connect_from(
        relay.local_addr(),
        "127.0.0.1",
        &format!("RELAY/1 {t}\nhello from b"),
    );
    assert_eq!(line(&mut a), "OK relayed\n");
    assert_eq!(line(&mut b), "OK relayed\n");
    let mut buf = [0u8; 12];
    b.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello from a");
    a.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello from b");
}

#[test]
fn forged_expired_reused_and_malformed_tokens_are_refused_with_their_lines() {
    let _g = SERIAL.lock();
    let (relay, secret) = start(unlimited(), Forwarding::Splice);
    let addr = relay.local_addr();

    let foreign = token(&RelaySecret::generate().unwrap());
    refused(
        &mut connect(addr, &foreign),
        "ERR denied invalid relay token\n",
    );
    let mut forged = token(&secret).into_bytes();
    forged[70] = if forged[70] == b'0' { b'1' } else { b'0' };
    refused(
        &mut connect(addr, std::str::from_utf8(&forged).unwrap()),
        "ERR denied invalid relay token\n",
    );
    let expired = mint(
        &secret,
        SystemTime::now() - Duration::from_secs(600),
        Duration::from_secs(60),
    )
    .unwrap();
    refused(
        &mut connect(addr, &expired),
        "ERR denied expired relay token\n",
    );

    let t = token(&secret);
    let mut a = connect(addr, &t);
    std::thread::sleep(Duration::from_millis(50));
    let mut b = connect(addr, &t);
    assert_eq!(line(&mut a), "OK relayed\n");
    assert_eq!(line(&mut b), "OK relayed\n");
    refused(
        &mut connect(addr, &t),
        "ERR denied relay token already used\n",
    );
    // Still refused once the circuit has closed: a token joins once.
    drop((a, b));
    wait_stats(&relay, |s| s.circuits == 0);
    refused(
        &mut connect(addr, &t),
        "ERR denied relay token already used\n",
    );

    let bad = "ERR bad request, expected RELAY/1 <token>\n";
    refused(
        &mut connect_from(addr, "127.0.0.1", "GET / HTTP/1.1\n"),
        bad,
    );
    refused(&mut connect_from(addr, "127.0.0.1", "RELAY/1 \n"), bad);
    // A line that never ends is refused at 128 bytes, not read on.
    refused(&mut connect_from(addr, "127.0.0.1", &"R".repeat(4000)), bad);
    assert_eq!(relay.stats().refused, 8);
    assert_eq!(relay.stats().pending, 0);
}

#[test]
fn the_other_side_never_coming_and_a_silent_connection_get_timeout_lines() {
    let _g = SERIAL.lock();
    let limits = RelayLimits {
        pending_timeout: Duration::from_millis(800),
        line_timeout: Duration::from_millis(800),
        ..unlimited()
    };
    let (relay, secret) = start(limits, Forwarding::Splice);
    let addr = relay.local_addr();
    let t0 = Instant::now();
    let mut alone = connect(addr, &token(&secret));
    let mut silent = connect_from(addr, "127.0.0.1", "RELAY/1 abc");
    refused(&mut alone, "ERR timeout the other side did not come\n");
    refused(&mut silent, "ERR timeout the first line took too long\n");
    assert!(t0.elapsed() >= Duration::from_millis(700));
    let s = wait_stats(&relay, |s| s.pending == 0);
    assert_eq!(s.refused, 2);
}

#[test]
fn circuit_limits_in_total_and_per_address_answer_busy_and_honest_pairs_are_served() {
    let _g = SERIAL.lock();
    let limits = RelayLimits {
        max_circuits: 3,
        max_circuits_per_addr: 2,
        ..unlimited()
    };
    let (relay, secret) = start(limits, Forwarding::Splice);
    let addr = relay.local_addr();
    let first_line = |t: &str| format!("RELAY/1 {t}\n");

    // 127.0.0.2 opens two circuits (first sides waiting); its third is refused.
    let t1 = token(&secret);
    let t2 = token(&secret);
    let _w1 = connect_from(addr, "127.0.0.2", &first_line(&t1));
    let _w2 = connect_from(addr, "127.0.0.2", &first_line(&t2));
    wait_stats(&relay, |s| s.pending == 2);
    refused(
        &mut connect_from(addr, "127.0.0.2", &first_line(&token(&secret))),
        "ERR busy too many circuits from your address, try again later\n",
    );
    // A third circuit from elsewhere fills the relay; a fourth is refused.
    let t3 = token(&secret);
    let mut w3 = connect_from(addr, "127.0.0.3", &first_line(&t3));
    wait_stats(&relay, |s| s.pending == 3);
    refused(
        &mut connect_from(addr, "127.0.0.4", &first_line(&token(&secret))),
        "ERR busy relay is at its circuit limit, try again later\n",
    );
    // The honest second side of an open circuit is still joined and served.
    let mut j3 = connect_from(addr, "127.0.0.4", &first_line(&t3));
    assert_eq!(line(&mut w3), "OK relayed\n");
    assert_eq!(line(&mut j3), "OK relayed\n");
    j3.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    w3.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    // Once it ends, a new pair gets the place.
    drop((w3, j3));
    wait_stats(&relay, |s| s.circuits == 0);
    let t4 = token(&secret);
    let mut a = connect_from(addr, "127.0.0.5", &first_line(&t4));
    std::thread::sleep(Duration::from_millis(50));
    let mut b = connect_from(addr, "127.0.0.6", &first_line(&t4));
    assert_eq!(line(&mut a), "OK relayed\n");
    assert_eq!(line(&mut b), "OK relayed\n");
    a.write_all(b"pong").unwrap();
    b.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    assert_eq!(relay.stats().refused, 2);
}

#[test]
fn pending_caps_in_total_and_per_address_answer_busy() {
    let _g = SERIAL.lock();
    let limits = RelayLimits {
        max_pending: 5,
        max_pending_per_addr: 3,
        ..unlimited()
    };
    let (relay, secret) = start(limits, Forwarding::Splice);
    let addr = relay.local_addr();
    // Connections that send nothing hold pending places.
    let _held: Vec<TcpStream> = (0..3)
        .map(|_| connect_from(addr, "127.0.0.2", ""))
        .collect();
    wait_stats(&relay, |s| s.pending == 3);
    refused(
        &mut connect_from(addr, "127.0.0.2", ""),
        "ERR busy too many waiting connections from your address, try again later\n",
    );
    let _more: Vec<TcpStream> = (0..2)
        .map(|_| connect_from(addr, "127.0.0.3", ""))
        .collect();
    wait_stats(&relay, |s| s.pending == 5);
    refused(
        &mut connect_from(addr, "127.0.0.4", ""),
        "ERR busy relay has too many waiting connections, try again later\n",
    );
    drop(_more);
    wait_stats(&relay, |s| s.pending == 3);
    let (mut a, mut b) = pair(addr, &secret);
    a.write_all(b"ok").unwrap();
    let mut buf = [0u8; 2];
    b.read_exact(&mut buf).unwrap();
}

/// Sends `len` bytes one way through each of `circuits` circuits at once; how long the
/// slowest took to arrive, all of it verified.
fn timed_transfer(relay: &Relay, secret: &RelaySecret, circuits: usize, len: usize) -> Duration {
    let pairs: Vec<_> = (0..circuits)
        .map(|_| pair(relay.local_addr(), secret))
        .collect();
    let t0 = Instant::now();
    let threads: Vec<_> = pairs
        .into_iter()
        .enumerate()
        .map(|(i, (mut a, b))| {
            let data = common::pattern(len, 10 + i as u32);
            let expected = blake3::hash(&data);
            let sender = std::thread::spawn(move || {
                a.write_all(&data).unwrap();
                a.shutdown(Shutdown::Write).unwrap();
                a
            });
            std::thread::spawn(move || {
                let got = read_all(b);
                assert_eq!(got.len(), len);
                assert_eq!(blake3::hash(&got), expected);
                drop(sender.join().unwrap());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    t0.elapsed()
}

#[test]
fn byte_rates_per_circuit_and_in_total_throttle_without_losing_bytes() {
    let _g = SERIAL.lock();
    const RATE: u64 = 1 << 20;
    // The relay reads at most a burst (an eighth of a second) plus the rate.
    let burst = RATE / 8;
    let len: usize = 2 << 20;
    let least = |bytes: u64| Duration::from_secs_f64((bytes - burst) as f64 / RATE as f64);

    let per_circuit = RelayLimits {
        circuit_bytes_per_sec: RATE,
        total_bytes_per_sec: 0,
        ..RelayLimits::default()
    };
    let (relay, secret) = start(per_circuit, Forwarding::Splice);
    let took = timed_transfer(&relay, &secret, 1, len);
    assert!(took >= least(len as u64), "{took:?}");
    drop(relay);

    // Two circuits share the total rate.
    let total = RelayLimits {
        circuit_bytes_per_sec: 0,
        total_bytes_per_sec: RATE,
        ..RelayLimits::default()
    };
    let (relay, secret) = start(total, Forwarding::Splice);
    let took = timed_transfer(&relay, &secret, 2, len / 2);
    assert!(took >= least(len as u64), "{took:?}");
}

#[test]
fn the_longest_lifetime_and_the_idle_deadline_close_both_sides() {
    let _g = SERIAL.lock();
    let (tx, events) = crossbeam_channel::unbounded();
    let secret = RelaySecret::generate().unwrap();
    let relay = Relay::builder(secret.clone())
        .limits(RelayLimits {
            max_lifetime: Duration::from_millis(1500),
            idle_timeout: Duration::from_millis(600),
            ..unlimited()
        })
        .on_event(move |e| {
            let _ = tx.send(e.clone());
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let closed = |want: CloseReason| loop {
        match events.recv_timeout(Duration::from_secs(10)).unwrap() {
            RelayEvent::Closed { why, .. } => break assert_eq!(why, want),
            RelayEvent::Joined { .. } => {}
            other => panic!("{other:?}"),
        }
    };

    // Idle: nothing forwarded for 600 ms.
    let (a, b) = pair(relay.local_addr(), &secret);
    closed(CloseReason::Idle);
    assert!(read_all(a).is_empty() && read_all(b).is_empty());

    // Busy but old: closed at 1.5 s though bytes keep flowing.
    let (mut a, b) = pair(relay.local_addr(), &secret);
    let t0 = Instant::now();
    let writer = std::thread::spawn(move || {
        while a.write_all(b"tick").is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    closed(CloseReason::Lifetime);
    assert!(t0.elapsed() >= Duration::from_millis(1400));
    let got = read_all(b);
    assert!(got.len() >= 4 * 10 && got.chunks(4).all(|c| c == b"tick"));
    writer.join().unwrap();
    assert_eq!(relay.stats().circuits, 0);
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).unwrap().count()
}

/// The relay threads alive in this process (the test harness starts and ends its own
/// threads as tests come and go, so all of them are not counted).
fn relay_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "p2p-relay")
        .count()
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn idle_circuits_keep_threads_descriptors_and_memory_bounded_and_drop_releases_all() {
    let _g = SERIAL.lock();
    const N: usize = 100;
    let fds0 = count_dir("/proc/self/fd");
    let limits = RelayLimits {
        max_circuits_per_addr: N,
        ..unlimited()
    };
    let (relay, secret) = start(limits, Forwarding::Splice);
    // The thread names itself once it runs.
    assert!(
        common::wait_until(Duration::from_secs(5), || relay_threads() == 1),
        "one thread per relay"
    );
    let rss1 = vm_rss_kib();
    let mut pairs: Vec<_> = (0..N).map(|_| pair(relay.local_addr(), &secret)).collect();
    // A few bytes each way, so every circuit has used its pipes once.
    for (a, b) in &mut pairs {
        a.write_all(b"x").unwrap();
        b.write_all(b"y").unwrap();
        let mut buf = [0u8; 1];
        b.read_exact(&mut buf).unwrap();
        a.read_exact(&mut buf).unwrap();
    }
    wait_stats(&relay, |s| s.circuits == N);
    assert_eq!(relay_threads(), 1, "no thread per circuit");
    // Per circuit: the test's two sockets, the relay's two and its two pipes (4 fds).
    let fds = count_dir("/proc/self/fd") - fds0;
    assert!(fds <= N * 8 + 8, "{fds} descriptors for {N} circuits");
    let rss_per_circuit = (vm_rss_kib().saturating_sub(rss1)) as f64 / N as f64;
    eprintln!("relay: {rss_per_circuit:.1} KiB of VmRSS per idle circuit (both ends' sockets in this process)");
    assert!(rss_per_circuit < 64.0, "{rss_per_circuit} KiB per circuit");

    // Dropping the relay closes its side of every circuit and joins its thread.
    drop(relay);
    assert_eq!(relay_threads(), 0);
    for (a, b) in pairs {
        assert!(read_all(a).is_empty() && read_all(b).is_empty());
    }
    assert!(
        common::wait_until(Duration::from_secs(5), || count_dir("/proc/self/fd")
            <= fds0),
        "{} descriptors left of {fds0}",
        count_dir("/proc/self/fd")
    );
}

#[test]
fn shutdown_closes_waiting_joined_and_refused_connections_and_joins_the_thread() {
    let _g = SERIAL.lock();
    let (relay, secret) = start(unlimited(), Forwarding::Copy);
    let addr = relay.local_addr();
    let (a, b) = pair(addr, &secret);
    let waiting = connect(addr, &token(&secret));
    let silent = connect_from(addr, "127.0.0.1", "");
    wait_stats(&relay, |s| s.circuits == 1 && s.pending == 2);
    relay.shutdown();
    assert_eq!(relay_threads(), 0);
    for s in [a, b, waiting, silent] {
        assert!(read_all(s).is_empty());
    }
}

#[test]
fn a_registry_runs_its_embedded_relay_and_stops_it_with_itself() {
    use p2pcore::registry::{EmbeddedRelay, Registry, RegistryConfig};
    let _g = SERIAL.lock();
    let (tx, events) = crossbeam_channel::unbounded();
    let registry = Registry::builder()
        .config(RegistryConfig {
            embedded_relay: Some(EmbeddedRelay::default()),
            ..RegistryConfig::default()
        })
        .on_relay_event(move |e| {
            let _ = tx.send(e.clone());
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = registry.relay_addr().expect("an embedded relay");
    assert_eq!(addr.ip(), registry.local_addr().ip());
    assert_ne!(addr.port(), registry.local_addr().port());
    // Its secret stays inside the registry: a token from anywhere else is refused.
    let foreign = token(&RelaySecret::generate().unwrap());
    refused(
        &mut connect(addr, &foreign),
        "ERR denied invalid relay token\n",
    );
    match events.recv_timeout(Duration::from_secs(5)).unwrap() {
        RelayEvent::Refused { outcome, .. } => {
            assert_eq!(outcome, "ERR denied invalid relay token")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(registry.relay_stats().unwrap().refused, 1);
    assert!(common::wait_until(
        Duration::from_secs(5),
        || relay_threads() == 1
    ));
    registry.shutdown();
    assert_eq!(relay_threads(), 0);
    assert!(TcpStream::connect(addr).is_err());

    // Without the setting, no relay.
    let plain = Registry::bind("127.0.0.1:0").unwrap();
    assert_eq!(plain.relay_addr(), None);
}
