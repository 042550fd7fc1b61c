//! The CLI against a hostile peer speaking the wire protocol by hand: terminal control
//! sequences in chat text and names, a chat that sends as fast as it can while stdout
//! is stalled, chat requests every second while a person uses the menu, a download
//! that never sends a byte, and where peers listen (`--listen`).

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn peer_addr(registry: &p2pcore::registry::Registry, user: &str) -> SocketAddr {
    let port = registry.user(user).expect("registered").port;
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Chat messages a hostile peer sends: screen clear, window title, OSC 52 clipboard
/// write, a C1 CSI, a carriage-return overwrite, bidi override, and a message forging
/// the program's own status lines.
const HOSTILE: &[&str] = &[
    "\x1b[2J\x1b[Hcleared",
    "\x1b]0;pwned\x07title",
    "\x1b]52;c;ZXZpbA==\x07clip",
    "\u{9b}2Jcsi",
    "innocent\r--- overwrite ---",
    "file\u{202e}gpj.exe",
    "hi\n--- bob ended the chat ---\nEnter choice: ",
];

/// What each [`HOSTILE`] message must look like on screen.
const SHOWN: &[&str] = &[
    ": \\e[2J\\e[Hcleared\n",
    ": \\e]0;pwned\\x07title\n",
    ": \\e]52;c;ZXZpbA==\\x07clip\n",
    ": \\x9b2Jcsi\n",
    ": innocent\\r--- overwrite ---\n",
    ": file\\u{202e}gpj.exe\n",
    ": hi\n  | --- bob ended the chat ---\n  | Enter choice: \n",
];

/// No terminal control, C1 code or format character in `out` (newlines aside).
fn assert_inert(out: &str) {
    for (i, line) in out.split('\n').enumerate() {
        assert!(
            !line.chars().any(|c| c.is_control()
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')),
            "line {i} reaches the terminal raw: {line:?}\n--- output ---\n{out}"
        );
    }
}

#[test]
fn chat_text_and_names_with_terminal_controls_are_shown_escaped() {
    let (registry, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    let mut a = client_at_menu(&addr, "alice", dir.path(), &[]);
    // The name is the requester's own claim: it may hold a bidi override.
    let mut m = FakePeer::registered(&addr, peer_addr(&registry, "alice"), "mal\u{202e}lory");
    a.expect("*** mal\\u{202e}lory wants to chat with you");
    a.expect("Accept chat with mal\\u{202e}lory? [y/n]: ");
    a.send_line("y");
    assert_eq!(m.answer(), "OK");
    a.expect("--- chatting with mal\\u{202e}lory:");
    for text in HOSTILE {
        m.say(text).unwrap();
    }
    m.say("last").unwrap();
    a.expect(": last\n");
    m.bye();
    a.expect("--- mal\\u{202e}lory ended the chat ---");
    a.expect("Enter choice: ");
    a.send_line("0");
    assert!(a.wait_exit(WAIT).success());
    let out = a.all_stdout();
    assert_inert(&out);
    for shown in SHOWN {
        assert!(out.contains(shown), "{shown:?} in\n{out}");
    }
    let status_lines = out
        .lines()
        .filter(|l| l.starts_with("--- ") && l.contains("ended the chat"))
        .count();
    assert_eq!(status_lines, 1, "only the real end line: {out}");

    // `share` prints chat text the same way.
    let (mut bob, _) = share(&addr, "bob", dir.path(), true);
    let mut m = FakePeer::registered(&addr, peer_addr(&registry, "bob"), "mallory");
    assert_eq!(m.answer(), "OK");
    for text in HOSTILE {
        m.say(text).unwrap();
    }
    m.say("last").unwrap();
    bob.expect("mallory: last\n");
    let out = bob.all_stdout();
    assert_inert(&out);
    for shown in SHOWN {
        assert!(out.contains(shown), "{shown:?} in\n{out}");
    }
}

/// How long a flood runs at most, and how much it may send at most.
const FLOOD_TIME: Duration = Duration::from_secs(5);
const FLOOD_BYTES: u64 = 192 * 1024 * 1024;
/// Most the receiving process's VmRSS may grow: its chat queue holds at most 32
/// messages of 64 KiB (2 MiB); the old unbounded queue took all of `FLOOD_BYTES`.
const RSS_GROWTH_LIMIT_KIB: u64 = 48 * 1024;

/// Send 60 KiB messages on `m` as fast as the receiver takes them, from a thread, for
/// [`FLOOD_TIME`] or [`FLOOD_BYTES`]; sample `pid`'s VmRSS meanwhile. Returns the
/// VmRSS before and at its peak, the bytes sent in that time, and the writer thread
/// (which may still be blocked in a write: it ends when the connection does).
fn flood(m: FakePeer, pid: i32) -> (u64, u64, u64, std::thread::JoinHandle<()>) {
    let before = vm_rss_kib(pid);
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (sent, stop) = (sent.clone(), stop.clone());
        std::thread::spawn(move || {
            m.stream.set_write_timeout(None).unwrap();
            let text = "x".repeat(60 * 1024);
            while !stop.load(Ordering::SeqCst) && sent.load(Ordering::SeqCst) < FLOOD_BYTES {
                if m.say(&text).is_err() {
                    break;
                }
                sent.fetch_add(text.len() as u64, Ordering::SeqCst);
            }
        })
    };
    let mut peak = before;
    let started = Instant::now();
    while started.elapsed() < FLOOD_TIME && !writer.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(vm_rss_kib(pid));
    }
    peak = peak.max(vm_rss_kib(pid));
    stop.store(true, Ordering::SeqCst);
    (before, peak, sent.load(Ordering::SeqCst), writer)
}

/// While the flood holds its output, `from` still serves an honest download.
fn honest_fetch(registry: &str, from: &str) {
    let into = tempfile::tempdir().unwrap();
    let o = p2pchat(&[
        "fetch",
        "--registry",
        registry,
        "--user",
        "honest",
        "--dir",
        into.path().to_str().unwrap(),
        from,
        "shared.bin",
    ]);
    assert!(o.status.success(), "honest fetch from {from}: {o:?}");
    assert!(std::fs::read(into.path().join("shared.bin")).unwrap() == pattern(100_000));
}

fn assert_bounded(who: &str, before: u64, peak: u64, sent: u64) {
    eprintln!(
        "{who}: VmRSS before {before} KiB, peak {peak} KiB; the chat got {} KiB through \
         with stdout stalled",
        sent / 1024
    );
    assert!(
        peak < before + RSS_GROWTH_LIMIT_KIB,
        "{who}: VmRSS grew from {before} KiB to {peak} KiB ({} KiB sent)",
        sent / 1024
    );
    // The sender was held back (TCP backpressure), not read into memory.
    assert!(
        sent < 64 * 1024 * 1024,
        "{who}: {} KiB went through",
        sent / 1024
    );
}

#[test]
fn fast_chat_with_client_stdout_stalled_keeps_memory_bounded() {
    let (registry, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shared.bin"), pattern(100_000)).unwrap();
    let mut a = client_at_menu(&addr, "alice", dir.path(), &[]);
    let mut m = FakePeer::registered(&addr, peer_addr(&registry, "alice"), "flood");
    a.expect("Accept chat with flood? [y/n]: ");
    a.send_line("y");
    assert_eq!(m.answer(), "OK");
    a.expect("--- chatting with flood:");
    a.pause_stdout();
    let (before, peak, sent, writer) = flood(m, a.pid());
    assert_bounded("client", before, peak, sent);
    honest_fetch(&addr, "alice");
    // Interrupted while its chat reader waits for room: it still leaves cleanly.
    a.signal(libc::SIGINT);
    a.resume_stdout();
    assert_eq!(a.wait_exit(WAIT).code(), Some(130));
    assert!(registry.user("alice").is_none(), "EXIT was sent");
    writer.join().unwrap();
}

#[test]
fn fast_chat_with_share_stdout_stalled_keeps_memory_bounded() {
    let (registry, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shared.bin"), pattern(100_000)).unwrap();
    let (mut bob, _) = share(&addr, "bob", dir.path(), true);
    let mut m = FakePeer::registered(&addr, peer_addr(&registry, "bob"), "flood");
    assert_eq!(m.answer(), "OK");
    bob.pause_stdout();
    let (before, peak, sent, writer) = flood(m, bob.pid());
    assert_bounded("share", before, peak, sent);
    honest_fetch(&addr, "bob");
    // Stopped while its printer is blocked on the stalled stdout, which nobody reads
    // until it has exited: the main thread only waits for the signal, so it leaves the
    // registry and exits anyway (after at most 1 s of grace for the printer).
    let signalled = Instant::now();
    bob.signal(libc::SIGTERM);
    let status = bob.exits_within(SHARE_STOP_DEADLINE);
    eprintln!(
        "share: exited {:?} after SIGTERM with stdout stalled",
        signalled.elapsed()
    );
    bob.resume_stdout();
    let status = status.unwrap_or_else(|| {
        panic!(
            "share did not exit within {SHARE_STOP_DEADLINE:?} of SIGTERM with stdout \
             stalled; stderr:\n{}",
            bob.all_stderr()
        )
    });
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(registry.user("bob").is_none(), "EXIT was sent");
    assert!(!bob.all_stderr().contains("panicked"));
    writer.join().unwrap();
}

/// How long `share` may take to exit after SIGTERM with its stdout stalled: its
/// printer's grace is 1 s; the rest is slack for a loaded machine.
const SHARE_STOP_DEADLINE: Duration = Duration::from_secs(15);

#[test]
fn chat_requests_every_second_never_take_menu_input() {
    let (registry, addr) = registry();
    let bob_dir = tempfile::tempdir().unwrap();
    std::fs::write(bob_dir.path().join("notes.txt"), "notes").unwrap();
    let (_bob, _) = share(&addr, "bob", bob_dir.path(), false);
    let dir = tempfile::tempdir().unwrap();
    let mut a = client_at_menu(&addr, "alice", dir.path(), &[]);
    let alice = peer_addr(&registry, "alice");
    // The requesters are registered users without a key (unverified), as a plaintext
    // request's name must be.
    let _registered: Vec<_> = ["spam", "ann", "ben", "cat"]
        .iter()
        .map(|n| register_by_hand(&addr, n, "x.txt"))
        .collect();

    // A request every second: "spam" again and again, and three others once each.
    let stop = Arc::new(AtomicBool::new(false));
    let requester = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let names = ["spam", "ann", "spam", "ben", "spam", "cat", "spam", "spam"];
            let mut asked = Vec::new();
            for name in names.iter().cycle().take(20) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                asked.push((*name, FakePeer::ask_chat(alice, name)));
                std::thread::sleep(Duration::from_millis(1000));
            }
            asked
        })
    };

    // Meanwhile the person goes through the menus; each input must reach its prompt.
    let steps: &[(&str, &str)] = &[
        ("1", "Online users (6):"),
        ("2", "Enter username (empty to go back): "),
        ("bob", "Selected user: bob"),
        ("2", "Files shared by bob (1):"),
        ("1", "bob is at IP 127.0.0.1 port"),
        ("0", "Main menu"),
        ("3", "bob: notes.txt"),
    ];
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(8) || rounds < 2 {
        for (input, shows) in steps {
            std::thread::sleep(Duration::from_millis(120));
            a.send_line(input);
            a.expect(shows);
        }
        rounds += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let mut asked = requester.join().unwrap();
    let seen = a.all_stdout();
    assert!(asked.len() >= 6, "{} requests arrived", asked.len());
    assert!(
        seen.contains("declined a repeated chat request from spam"),
        "repeats are declined with a note:\n{seen}"
    );
    // The repeats were answered at once; the first of each name waits for the person.
    let mut first = std::collections::HashSet::new();
    for (name, fake) in asked.iter_mut() {
        if !first.insert(*name) {
            let answer = fake.answer();
            assert!(answer.starts_with("ERR declined"), "{name}: {answer:?}");
        }
    }
    // At the menu the waiting requests are asked about, one at a time.
    a.expect("Accept chat with spam? [y/n]: ");
    a.send_line("n");
    a.expect("declined the chat request from spam");
    a.expect("Accept chat with ann? [y/n]: ");
    a.send_line("1");
    a.expect("Online users (6):");
    a.expect("Accept chat with ann? [y/n]: ");
    a.send_line("no");
    a.expect("declined the chat request from ann");
    a.expect("Accept chat with ben? [y/n]: ");
    let (_, ben) = asked.iter_mut().find(|(n, _)| *n == "ben").unwrap();
    a.send_line("y");
    assert_eq!(ben.answer(), "OK");
    a.expect("--- chatting with ben:");
    ben.say("hello").unwrap();
    a.expect("ben: hello");
    a.send_line("/exit");
    a.expect("--- chat with ben ended ---");
    a.expect("Accept chat with cat? [y/n]: ");
    a.send_line("n");
    a.expect("Enter choice: ");
    a.send_line("0");
    assert!(a.wait_exit(WAIT).success());
}

#[test]
fn chat_requests_under_ever_new_names_neither_flood_the_screen_nor_take_input() {
    let (registry, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    let mut a = client_at_menu(&addr, "alice", dir.path(), &[]);
    let alice = peer_addr(&registry, "alice");
    let mut fakes: Vec<FakePeer> = (0..30)
        .map(|i| FakePeer::registered(&addr, alice, &format!("n{i}")))
        .collect();
    // All but the (at most 8) waiting ones are declined at once, by the client or, past
    // its own bounds, by the library.
    for f in &fakes {
        f.stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
    }
    let mut answered = vec![false; fakes.len()];
    let deadline = Instant::now() + WAIT;
    while answered.iter().filter(|a| **a).count() < fakes.len() - 8 {
        assert!(Instant::now() < deadline, "requests answered: {answered:?}");
        for (i, f) in fakes.iter_mut().enumerate() {
            if !answered[i] {
                let answer = f.answer();
                if !answer.is_empty() {
                    assert!(answer.starts_with("ERR "), "{answer:?}");
                    answered[i] = true;
                }
            }
        }
    }
    // Input still goes where it was typed.
    a.send_line("1");
    a.expect("Online users (31):");
    a.expect("? [y/n]: ");
    let out = a.all_stdout();
    let notes = out.lines().filter(|l| l.contains("declined")).count();
    assert!(notes <= 4, "{notes} lines about declined requests:\n{out}");
    a.send_line("0");
    assert!(a.wait_exit(WAIT).success());
}

/// Whether something listens on `ip:port`.
fn listening(ip: [u8; 4], port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(5)).is_ok()
}

#[test]
fn listen_chooses_the_address_peers_listen_on() {
    let (registry, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut only_loopback = Proc::spawn(
        command(&[
            "share",
            "--registry",
            &addr,
            "--user",
            "bob",
            "--dir",
            d,
            "--listen",
            "127.0.0.1",
        ])
        .stdin(std::process::Stdio::null()),
    );
    only_loopback.expect("sharing as bob on ");
    let port = registry.user("bob").unwrap().port;
    assert!(listening([127, 0, 0, 1], port));
    assert!(!listening([127, 0, 0, 2], port), "not on 127.0.0.2");

    let mut everywhere = client_at_menu(&addr, "carol", dir.path(), &["--listen", "0.0.0.0"]);
    let port = registry.user("carol").unwrap().port;
    assert!(listening([127, 0, 0, 1], port));
    assert!(listening([127, 0, 0, 2], port), "every interface");
    everywhere.send_line("0");
    assert!(everywhere.wait_exit(WAIT).success());

    let mut client_loopback = client_at_menu(&addr, "dave", dir.path(), &["--listen", "127.0.0.2"]);
    let port = registry.user("dave").unwrap().port;
    assert!(listening([127, 0, 0, 2], port));
    assert!(!listening([127, 0, 0, 1], port), "only on 127.0.0.2");
    client_loopback.send_line("0");
    assert!(client_loopback.wait_exit(WAIT).success());

    for cmd in ["client", "share", "fetch", "send"] {
        let o = p2pchat(&[cmd, "--help"]);
        assert!(
            o.stdout.contains("--listen <ADDR>"),
            "{cmd} --help: {}",
            o.stdout
        );
    }
    let o = p2pchat(&["share", "--user", "x", "--dir", d, "--listen", "nowhere"]);
    assert_eq!(o.status.code(), Some(2), "not an IP: usage error: {o:?}");
}

/// How many threads process `pid` has now.
fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("read /proc/<pid>/task")
        .count()
}

#[test]
fn a_download_cancelled_by_sigint_leaves_no_thread_behind() {
    let (registry, addr) = registry();
    // A peer that registers a file, takes the request for it and never answers.
    let (listener, session) = register_by_hand(&addr, "stall", "x.bin");
    listener.set_nonblocking(true).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut a = client_at_menu(&addr, "alice", dir.path(), &[]);
    // The registry's reachability check of alice's listener is served on a thread of
    // its own for a moment: count from after it.
    eventually("the registry checked alice's listener", || {
        registry
            .user("alice")
            .is_some_and(|u| u.reach != p2pcore::reach::Reach::Unknown)
    });
    let mut baseline = threads(a.pid());
    eventually("alice's threads settle", || {
        std::thread::sleep(Duration::from_millis(100));
        let now = threads(a.pid());
        std::mem::replace(&mut baseline, now) == now
    });
    for round in 0..2 {
        a.send_line("2");
        a.expect("Enter username (empty to go back): ");
        a.send_line("stall");
        a.expect("Selected user: stall");
        a.expect("Enter choice: ");
        a.send_line("4");
        a.expect("Enter filename (empty to go back): ");
        a.send_line("x.bin");
        a.expect("fetching x.bin from stall...");
        // The download is under way once the request reached the silent peer.
        let mut held = None;
        eventually("the download connects", || match listener.accept() {
            Ok((s, _)) => {
                held = Some(s);
                true
            }
            Err(_) => false,
        });
        let mut held = BufReader::new(held.unwrap());
        held.get_ref().set_nonblocking(false).unwrap();
        held.get_ref().set_read_timeout(Some(WAIT)).unwrap();
        let mut request = String::new();
        held.read_line(&mut request).unwrap();
        assert!(request.contains("x.bin"), "{request:?}");
        assert!(threads(a.pid()) > baseline, "a thread runs the download");
        a.signal(libc::SIGINT);
        a.expect("download cancelled before any of the file arrived");
        a.expect("Enter choice: ");
        eventually(
            &format!("round {round}: back to {baseline} threads"),
            || threads(a.pid()) == baseline,
        );
        a.send_line("0");
        a.expect("Enter choice: ");
    }
    a.send_line("0");
    assert!(a.wait_exit(WAIT).success());
    assert!(registry.user("alice").is_none());
    drop(session);
}
