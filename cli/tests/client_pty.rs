//! The full interactive session, as a person would have it, through pseudo-terminals:
//! two clients register, browse, chat (accepted, then declined), fetch a file, leave.

mod common;

use common::{pattern, register_by_hand, registry, BIN, WAIT};
use expectrl::process::unix::{PtyStream, UnixProcess};
use expectrl::stream::log::LoggedStream;
use expectrl::{ControlCode, WaitStatus};
use std::io::{Read, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Everything read from and written to a terminal, for failure messages.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

type Session = expectrl::session::Session<UnixProcess, LoggedStream<PtyStream, Log>>;

/// A client in a terminal; killed on drop.
struct Pty {
    name: &'static str,
    session: Session,
    log: Log,
    pid: i32,
}

impl Pty {
    /// `p2pchat client` as `user` sharing `dir` on any port, all given as flags.
    fn client(user: &'static str, registry: &str, dir: &str, color: bool) -> Pty {
        Pty::spawn(
            user,
            &[
                "--registry",
                registry,
                "--user",
                user,
                "--dir",
                dir,
                "--port",
                "0",
            ],
            color,
        )
    }

    fn spawn(name: &'static str, args: &[&str], color: bool) -> Pty {
        let mut cmd = Command::new(BIN);
        cmd.arg("client").args(args).env_remove("P2PCHAT_REGISTRY");
        if color {
            cmd.env_remove("NO_COLOR");
        } else {
            cmd.env("NO_COLOR", "1");
        }
        let log = Log::default();
        let session = expectrl::Session::spawn(cmd).expect("spawn in a pty");
        let pid = session.pid().as_raw();
        let mut session = session.with_log(log.clone()).expect("log");
        session.set_expect_timeout(Some(WAIT));
        Pty {
            name,
            session,
            log,
            pid,
        }
    }

    fn expect(&mut self, needle: &str) {
        if let Err(e) = self.session.expect(needle) {
            let log = String::from_utf8_lossy(&self.log.0.lock().unwrap()).into_owned();
            panic!(
                "{}: waiting for {needle:?}: {e}\n--- terminal log ---\n{log}",
                self.name
            );
        }
    }

    fn send_line(&mut self, text: &str) {
        self.session.send_line(text).expect("type into the pty");
    }

    /// Wait for the process to exit by itself; its exit code.
    fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.session.status() {
                Ok(WaitStatus::Exited(_, code)) => return code,
                Ok(WaitStatus::StillAlive) | Err(_) if Instant::now() < deadline => {
                    // Keep the terminal drained so the child never blocks writing.
                    let mut buf = [0u8; 4096];
                    let _ = self.session.try_read(&mut buf);
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => panic!("{}: did not exit: {other:?}", self.name),
            }
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        // Only a child still running (not yet reaped, so its pid is still ours).
        if let Ok(WaitStatus::StillAlive) = self.session.status() {
            // SAFETY: kill(2) on our own live child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
        }
    }
}

#[test]
fn full_session_between_two_terminals() {
    let (registry, addr) = registry();
    let alice_dir = tempfile::tempdir().unwrap();
    let bob_dir = tempfile::tempdir().unwrap();
    let report = pattern(2 * 1024 * 1024 + 3);
    std::fs::write(bob_dir.path().join("report.bin"), &report).unwrap();
    std::fs::write(bob_dir.path().join("notes.txt"), "notes").unwrap();

    // alice answers the registration prompts.
    let mut alice = Pty::spawn("alice", &["--registry", &addr], false);
    alice.expect("Enter username: ");
    alice.send_line("alice");
    alice.expect("Enter shared directory: ");
    alice.send_line(alice_dir.path().to_str().unwrap());
    alice.expect("Enter port (empty or 0 for any free port): ");
    alice.send_line("");
    alice.expect("registered as alice");
    alice.expect("Enter choice: ");

    // bob gives everything as flags; a terminal without NO_COLOR gets colours.
    let bob_path = bob_dir.path().to_str().unwrap();
    let mut bob = Pty::client("bob", &addr, bob_path, true);
    bob.expect("\x1b[32mregistered as bob");
    bob.expect("Enter choice: ");

    // alice browses.
    alice.send_line("1");
    alice.expect("Online users (2):");
    alice.expect("alice (you)");
    alice.expect("bob");
    alice.expect("Enter choice: ");
    alice.send_line("3");
    alice.expect("Shared files:");
    alice.expect("alice: (no files)");
    alice.expect("bob: notes.txt, report.bin");
    alice.expect("Enter choice: ");
    alice.send_line("2");
    alice.expect("Enter username (empty to go back): ");
    alice.send_line("bob");
    alice.expect("Selected user: bob");
    alice.expect("Enter choice: ");
    alice.send_line("1");
    let port = registry.user("bob").unwrap().port;
    alice.expect(&format!("bob is at IP 127.0.0.1 port {port}"));
    alice.expect("Enter choice: ");
    alice.send_line("2");
    alice.expect("Files shared by bob (2):");
    alice.expect("notes.txt");
    alice.expect("report.bin");
    alice.expect("Enter choice: ");

    // A chat that bob accepts; both talk; bob ends it.
    alice.send_line("3");
    alice.expect("asking bob for a chat");
    bob.expect("alice wants to chat with you");
    bob.expect("Accept chat with alice? [y/n]: ");
    bob.send_line("y");
    bob.expect("chatting with alice");
    alice.expect("bob accepted the chat");
    alice.expect("chatting with bob");
    alice.send_line("hello bob");
    bob.expect(": hello bob");
    bob.send_line("hi alice, got it");
    alice.expect("bob: hi alice, got it");
    alice.send_line("second message");
    bob.expect(": second message");
    bob.send_line("/exit");
    bob.expect("--- chat with alice ended ---");
    // The interrupted menu is shown again before its prompt.
    bob.expect("0. Exit");
    bob.expect("Enter choice: ");
    alice.expect("--- bob ended the chat ---");
    alice.expect("Enter choice: ");

    // A second request, declined.
    alice.send_line("3");
    bob.expect("Accept chat with alice? [y/n]: ");
    bob.send_line("n");
    bob.expect("declined the chat request from alice");
    bob.expect("Enter choice: ");
    alice.expect("bob declined the chat request");
    alice.expect("Enter choice: ");

    // A fetch: progress bar on the terminal, then the saved path and "hash verified".
    alice.send_line("4");
    alice.expect("Enter filename (empty to go back): ");
    alice.send_line("report.bin");
    alice.expect("(hash verified)");
    let saved = alice_dir.path().join("report.bin");
    assert!(
        std::fs::read(&saved).unwrap() == report,
        "byte-identical copy"
    );
    alice.expect("Enter choice: ");

    // Back, and the downloaded file is now shared by alice too.
    alice.send_line("0");
    alice.expect("Main menu");
    alice.expect("Enter choice: ");
    alice.send_line("3");
    alice.expect("alice: report.bin");
    alice.expect("Enter choice: ");

    // Both leave: alice with Exit, bob with Ctrl-D.
    alice.send_line("0");
    alice.expect("leaving the registry (bye)");
    assert_eq!(alice.wait_exit(), 0);
    bob.session
        .send_control(ControlCode::EndOfTransmission)
        .unwrap();
    bob.expect("leaving the registry (end of input; bye)");
    assert_eq!(bob.wait_exit(), 0);
    assert!(
        registry.users().is_empty(),
        "both vanished: {:?}",
        registry.users()
    );
}

#[test]
fn ctrl_d_ends_only_the_chat_in_a_terminal() {
    let (registry, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut alice = Pty::client("alice", &addr, d, false);
    alice.expect("Enter choice: ");
    let mut bob = Pty::client("bob", &addr, d, false);
    bob.expect("Enter choice: ");
    bob.send_line("2");
    bob.expect("Enter username");
    bob.send_line("alice");
    bob.expect("Enter choice: ");
    bob.send_line("3");
    alice.expect("Accept chat with bob? [y/n]: ");
    alice.send_line("yes");
    bob.expect("chatting with alice");
    alice.expect("chatting with bob");
    alice
        .session
        .send_control(ControlCode::EndOfTransmission)
        .unwrap();
    alice.expect("--- chat with bob ended ---");
    bob.expect("--- alice ended the chat ---");
    // alice is back at the menu and still works.
    alice.expect("Enter choice: ");
    alice.send_line("1");
    alice.expect("Online users (2):");
    alice.expect("Enter choice: ");
    alice.send_line("0");
    assert_eq!(alice.wait_exit(), 0);
    bob.expect("Enter choice: ");
    bob.send_line("0");
    bob.expect("Enter choice: ");
    bob.send_line("0");
    assert_eq!(bob.wait_exit(), 0);
    assert!(registry.users().is_empty());
}

/// Issue 10 (glued lines), 5 (the request's full answer time), 16 (a filename with
/// spaces around it typed at the menu): what arrives while alice is typing starts on a
/// fresh line (`\r` + erase line) and the prompt comes back; what she had typed is
/// still sent whole.
#[test]
fn lines_arriving_while_typing_start_on_a_fresh_line() {
    use p2pcore::peer::Peer;
    let (_registry, addr) = registry();
    let alice_dir = tempfile::tempdir().unwrap();
    let bob_dir = tempfile::tempdir().unwrap();
    std::fs::write(bob_dir.path().join(" spaced name "), "spaces kept").unwrap();
    let (chats_tx, chats) = crossbeam_channel::unbounded();
    let (heard_tx, heard) = crossbeam_channel::unbounded();
    let bob = Peer::builder(&addr, "bob", bob_dir.path())
        .on_chat_request(move |r| {
            let _ = chats_tx.send(r.accept());
        })
        .on_chat_message(move |_, _, text| {
            let _ = heard_tx.send(text.to_string());
        })
        .connect()
        .unwrap();
    let d = alice_dir.path().to_str().unwrap();
    let mut alice = Pty::client("alice", &addr, d, false);
    // As a person's terminal: what is typed is echoed at once (before Enter).
    alice
        .session
        .set_echo(true, Some(Duration::from_secs(5)))
        .expect("echo on");
    alice.expect("Enter choice: ");

    // At the menu prompt: "1" typed, not yet sent, when a chat request comes in.
    alice.session.send("1").unwrap();
    alice.expect("1");
    let listen = bob.peer_addr("alice").unwrap();
    let _carol_listed = common::keyless(&addr, &["carol"]);
    let _carol = common::FakePeer::ask_chat(listen, "carol");
    alice.expect("\r\x1b[K*** carol wants to chat with you (answer within 30 s;");
    alice.expect("Accept chat with carol? [y/n]: ");
    // Enter sends the "1" typed before: a menu choice, not an answer.
    alice.send_line("");
    // alice, bob and carol (listed without a key, so her plaintext request is served).
    alice.expect("Online users (3):");

    // In a chat: "hel" typed when bob's message arrives.
    alice.expect("Accept chat with carol? [y/n]: ");
    alice.send_line("n");
    alice.expect("Enter choice: ");
    alice.send_line("2");
    alice.expect("Enter username (empty to go back): ");
    alice.send_line("bob");
    alice.expect("Enter choice: ");
    alice.send_line("3");
    let chat = chats.recv_timeout(WAIT).unwrap().unwrap();
    alice.expect("chatting with bob");
    alice.session.send("hel").unwrap();
    alice.expect("hel");
    chat.send("hi alice").unwrap();
    alice.expect("\r\x1b[Kbob: hi alice\r\n");
    alice.send_line("lo");
    assert_eq!(heard.recv_timeout(WAIT).unwrap(), "hello", "sent whole");
    alice.send_line("/exit");
    alice.expect("Enter choice: ");

    // A filename typed with its spaces is fetched as typed.
    alice.send_line("4");
    alice.expect("Enter filename (empty to go back): ");
    alice.send_line(" spaced name ");
    alice.expect("(hash verified)");
    assert_eq!(
        std::fs::read_to_string(alice_dir.path().join(" spaced name ")).unwrap(),
        "spaces kept"
    );
    alice.expect("Enter choice: ");
    alice.send_line("0");
    alice.expect("Enter choice: ");
    alice.send_line("0");
    assert_eq!(alice.wait_exit(), 0);
    bob.exit();
}

/// Registers as `bob` sharing `name`, then serves one request for it: answers with
/// its size and hash and sends the bytes from the asked offset, `chunk` bytes every
/// `every`, stopping after `limit` bytes (then holding the connection until dropped).
fn serve_slowly(
    registry: &str,
    name: &str,
    data: Vec<u8>,
    hash: String,
    chunk: usize,
    every: Duration,
    limit: usize,
) -> (std::net::TcpStream, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, BufReader};
    let (listener, session) = register_by_hand(registry, "bob", name);
    let server = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut request = String::new();
        let _ = BufReader::new(s.try_clone().unwrap()).read_line(&mut request);
        // "P2P/1 FILE <offset> <name>"
        let offset: usize = request
            .split(' ')
            .nth(2)
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        let _ = s.write_all(format!("OK {} {hash}\n", data.len()).as_bytes());
        let end = data.len().min(offset.saturating_add(limit));
        for piece in data[offset..end].chunks(chunk) {
            if s.write_all(piece).is_err() {
                return;
            }
            std::thread::sleep(every);
        }
        // Hold the connection until the fetch is done with it.
        let _ = s.read(&mut [0u8; 1]);
    });
    (session, server)
}

/// The fastest rate a progress bar in `log` showed, in bytes per second.
fn fastest_rate(log: &str) -> f64 {
    let mut best = 0.0f64;
    for (i, _) in log.match_indices("/s") {
        let head = &log[..i];
        let mut words = head.rsplit(' ');
        let (Some(unit), Some(number)) = (words.next(), words.next()) else {
            continue;
        };
        let scale = match unit {
            "B" => 1.0,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            _ => continue,
        };
        if let Ok(n) = number.parse::<f64>() {
            best = best.max(n * scale);
        }
    }
    best
}

/// Issue 7: a resumed download says so, and its progress bar's rate counts only the
/// bytes this run received (the 1 MiB already there would show as a burst of many
/// MiB/s in the first tick; a sender trickling 32 KiB per 50 ms, at most ~640 KiB/s,
/// can never show more than that).
#[test]
fn a_resumed_download_says_so_and_its_rate_counts_only_new_bytes() {
    let (registry, addr) = registry();
    let src = tempfile::tempdir().unwrap();
    let data = pattern(2 * 1024 * 1024);
    let path = src.path().join("report.bin");
    std::fs::write(&path, &data).unwrap();
    let hash = p2pcore::share::hash_file(&path)
        .unwrap()
        .to_hex()
        .to_string();
    let dl = tempfile::tempdir().unwrap();
    let d = dl.path().to_str().unwrap().to_string();
    let fetch = |addr: &str| {
        let mut cmd = Command::new(BIN);
        cmd.args(["fetch", "--registry", addr, "--user", "alice", "--dir", &d])
            .args(["bob", "report.bin"])
            .env("NO_COLOR", "1")
            .env_remove("P2PCHAT_USER");
        cmd
    };
    let partial = p2pcore::transfer::partial_path(dl.path(), "report.bin");

    // First run: 1 MiB arrives at once, then nothing; Ctrl-C keeps it.
    let half = data.len() / 2;
    let (session, server) = serve_slowly(
        &addr,
        "report.bin",
        data.clone(),
        hash.clone(),
        half,
        Duration::ZERO,
        half,
    );
    let mut first = fetch(&addr)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < half as u64 {
        assert!(Instant::now() < deadline, "the first half never landed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(first.id() as i32, libc::SIGINT);
    }
    assert_eq!(first.wait().unwrap().code(), Some(130));
    drop(session);
    server.join().unwrap();
    let deadline = Instant::now() + WAIT;
    while registry.user("bob").is_some() {
        assert!(Instant::now() < deadline, "bob never left");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Second run, in a terminal (so the bar is drawn): the rest trickles in.
    let (session, server) = serve_slowly(
        &addr,
        "report.bin",
        data.clone(),
        hash,
        32 * 1024,
        Duration::from_millis(50),
        usize::MAX,
    );
    let log = Log::default();
    let mut run = expectrl::Session::spawn(fetch(&addr))
        .expect("spawn in a pty")
        .with_log(log.clone())
        .expect("log");
    run.set_expect_timeout(Some(WAIT));
    run.expect("resuming report.bin: 1.0 MiB of 2.0 MiB already here from an earlier download")
        .expect("the resume is announced");
    run.expect(expectrl::Eof).expect("fetch ends");
    drop(session);
    server.join().unwrap();
    assert_eq!(std::fs::read(dl.path().join("report.bin")).unwrap(), data);
    let shown = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    let fastest = fastest_rate(&shown);
    assert!(fastest > 0.0, "a rate was shown:\n{shown}");
    assert!(
        fastest < 1.5 * 1024.0 * 1024.0,
        "the rate counts resumed bytes: {fastest} B/s\n{shown}"
    );
}
