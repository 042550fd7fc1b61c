//! `p2pchat server`'s live log under load: bounded memory when nobody reads it, a count
//! of what was dropped, `--quiet`, and `--log-format json` with control characters
//! escaped.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the query flood runs at most.
const FLOOD_TIME: Duration = Duration::from_secs(6);
/// Most queries the flood sends.
const FLOOD_QUERIES: u64 = 3_000_000;
/// Most the server's VmRSS may grow during the flood. The log queue holds at most 4,096
/// events (about 2 MB); the old unbounded queue grew by hundreds of MB in this time.
const RSS_GROWTH_LIMIT_KIB: u64 = 48 * 1024;

/// `p2pchat server` on a free loopback port, with the per-address query rate set high
/// enough that only the log is in the way. Returns the process and its address.
fn server(extra: &[&str]) -> (Proc, SocketAddr) {
    let mut args = vec![
        "--addr",
        "127.0.0.1:0",
        "--queries-per-sec",
        "1000000",
        "--query-burst",
        "1000000",
    ];
    args.extend_from_slice(extra);
    let mut p = server_proc(&args);
    let first = p.line();
    let addr = if first.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(&first).expect("first line is JSON");
        v["addr"].as_str().expect("listening addr").to_string()
    } else {
        first
            .strip_prefix("registry listening on ")
            .unwrap_or_else(|| panic!("first line: {first:?}"))
            .to_string()
    };
    (p, addr.parse().expect("address"))
}

/// One pipelined query flood: a writer sending `GET_U` in 64 KiB batches and a reader
/// draining the answers, until `stop` or the query budget. Returns queries sent.
fn flood(addr: SocketAddr, stop: Arc<AtomicBool>, budget: u64) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let r = s.try_clone().unwrap();
        r.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let reading = stop.clone();
        let reader = std::thread::spawn(move || {
            let mut r = r;
            let mut buf = vec![0u8; 256 * 1024];
            while !reading.load(Ordering::SeqCst) {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
        });
        let batch = "GET_U\n".repeat(64 * 1024 / 6);
        let per_batch = (batch.len() / 6) as u64;
        let mut sent = 0;
        while !stop.load(Ordering::SeqCst) && sent < budget {
            match (&s).write_all(batch.as_bytes()) {
                Ok(()) => sent += per_batch,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        stop.store(true, Ordering::SeqCst);
        let _ = reader.join();
        let _ = s.shutdown(std::net::Shutdown::Both);
        sent
    })
}

/// One honest session query, answered within `WAIT`.
fn honest_users(addr: SocketAddr) -> String {
    let s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    (&s).write_all(b"GET_U\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).expect("an answer");
    line.trim_end().to_string()
}

#[test]
fn log_nobody_reads_stays_bounded_and_reports_dropped_lines() {
    let (mut server, addr) = server(&[]);
    // Let it settle, then stop reading its stdout: the pipe fills, printing stalls.
    assert!(honest_users(addr).starts_with("OK"));
    server.expect("GET_U -> OK");
    server.pause_stdout();
    let before = server.rss_kib();

    let stop = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = (0..2)
        .map(|_| flood(addr, stop.clone(), FLOOD_QUERIES / 2))
        .collect();
    let peak = AtomicU64::new(before);
    let started = Instant::now();
    while started.elapsed() < FLOOD_TIME && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        peak.fetch_max(server.rss_kib(), Ordering::SeqCst);
    }
    // An honest client is answered in the middle of the flood.
    let answer = honest_users(addr);
    stop.store(true, Ordering::SeqCst);
    let sent: u64 = floods.into_iter().map(|f| f.join().unwrap()).sum();
    let peak = peak.load(Ordering::SeqCst).max(server.rss_kib());
    eprintln!(
        "server VmRSS before {before} KiB, peak {peak} KiB during a flood of {sent} queries \
         in {:.1} s with stdout unread",
        started.elapsed().as_secs_f64()
    );
    assert!(
        answer.starts_with("OK"),
        "honest query answered: {answer:?}"
    );
    assert!(sent > 100_000, "the flood ran: {sent} queries");
    assert!(
        peak < before + RSS_GROWTH_LIMIT_KIB,
        "VmRSS grew from {before} KiB to {peak} KiB"
    );

    // Reading again: the queued lines, then how many were dropped.
    server.resume_stdout();
    let dropped = server.line_with("log lines dropped");
    let n: u64 = dropped
        .split_whitespace()
        .skip_while(|w| *w != "...")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count in {dropped:?}"));
    assert!(
        n > 0 && n <= 2 * sent + 10,
        "{n} dropped of {sent}: {dropped:?}"
    );
    // And it still logs.
    assert!(honest_users(addr).starts_with("OK"));
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(WAIT).code(), Some(130), "interrupted");
    assert!(server.all_stdout().ends_with("registry stopped\n"));
}

#[test]
fn json_log_is_one_object_per_line_with_controls_escaped() {
    let (mut server, addr) = server(&["--log-format", "json"]);
    let hostile = "GET_P,\x1b[2J\x1b]0;pwned\x07\u{202e}evil\r";
    {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        (&s).write_all(format!("{hostile}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        assert!(line.starts_with("ERR"), "{line:?}");
    }
    assert!(honest_users(addr).starts_with("OK"));
    server.expect("\"GET_U\"");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(WAIT).code(), Some(130), "interrupted");
    let out = server.all_stdout();
    let mut events = Vec::new();
    for line in out.lines() {
        assert!(
            !line.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "raw control or bidi character in {line:?}"
        );
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(
            v["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        events.push(v);
    }
    let kinds: Vec<&str> = events.iter().filter_map(|v| v["event"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"listening"), "{out}");
    assert_eq!(kinds.last(), Some(&"stopped"), "{out}");
    assert!(
        kinds.contains(&"connected") && kinds.contains(&"disconnected"),
        "{out}"
    );
    // The hostile query, byte for byte once parsed (the registry drops the `\r`).
    let q = events
        .iter()
        .find(|v| v["event"] == "query" && v["query"].as_str().is_some_and(|q| q.contains("pwned")))
        .unwrap_or_else(|| panic!("the hostile query is logged: {out}"));
    assert!(
        hostile.starts_with(q["query"].as_str().unwrap()),
        "query field {:?}",
        q["query"]
    );
    assert!(q["outcome"].as_str().unwrap().starts_with("ERR"), "{q}");
    assert_eq!(q["legacy"], false);
    assert!(
        q["source"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{q}"
    );
    assert!(out.contains("\\u001b[2J"), "ESC written as \\u001b: {out}");
    assert!(out.contains("\\u202e"), "U+202E written as \\u202e: {out}");
}

#[test]
fn quiet_log_keeps_only_startup_and_shutdown() {
    let (mut server, addr) = server(&["--quiet"]);
    for _ in 0..3 {
        assert!(honest_users(addr).starts_with("OK"));
    }
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(WAIT).code(), Some(130), "interrupted");
    let out = server.all_stdout();
    assert!(out.starts_with("registry listening on "), "{out}");
    assert!(out.ends_with("registry stopped\n"), "{out}");
    // Startup is the address, the registry's key and the embedded relay's address.
    assert!(
        out.lines()
            .nth(1)
            .unwrap_or("")
            .starts_with("registry key: "),
        "{out}"
    );
    assert!(
        out.lines()
            .nth(2)
            .unwrap_or("")
            .starts_with("relay listening on "),
        "{out}"
    );
    assert_eq!(out.lines().count(), 4, "no per-query lines: {out:?}");
}

#[test]
fn sigint_stops_the_server_while_nobody_reads_its_log() {
    let (mut server, addr) = server(&[]);
    server.pause_stdout();
    // Enough queries to fill the pipe (about 1,300 lines) and the log queue (4,096)
    // several times over; few enough that the registry has no long backlog.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = flood(addr, stop.clone(), 40_000).join().unwrap();
    assert!(sent >= 40_000, "{sent}");
    // Printing is stuck now: the old server could not see the signal any more.
    std::thread::sleep(Duration::from_millis(300));
    server.signal(libc::SIGINT);
    let signalled = Instant::now();
    // The printer gets 2 s to write what is left; then the process ends regardless.
    let status = server.exits_within(Duration::from_secs(15));
    eprintln!(
        "exited {:.1} s after SIGINT",
        signalled.elapsed().as_secs_f64()
    );
    if status.is_none() {
        server.resume_stdout();
        let status = server.exits_within(Duration::from_secs(5));
        let out = server.all_stdout();
        let tail = &out[out.len().saturating_sub(400)..];
        panic!(
            "still running 15 s after SIGINT with its log unread; after reading it: \
             {status:?}\n--- stdout tail ---\n{tail}\n--- stderr ---\n{}",
            server.all_stderr()
        );
    }
    assert!(status.is_some_and(|s| s.code() == Some(130)), "{status:?}");
}
