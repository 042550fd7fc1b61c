//! The interactive client with piped stdin/stdout: prompts asked again on bad input,
//! chat-request expiry, clean exits (EXIT sent) at end of input, on SIGINT and when
//! stdout is closed.

mod common;

use common::*;
use p2pcore::registry::{Registry, RegistryEvent};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn bad_input_is_asked_again_and_end_of_input_exits_cleanly() {
    let (registry, addr) = registry();
    let bob_dir = tempfile::tempdir().unwrap();
    std::fs::write(bob_dir.path().join("hello.txt"), "hi").unwrap();
    let (_bob, _) = share(&addr, "bob", bob_dir.path(), false);
    let dir = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("0.0.0.0:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();

    let mut a = client(&["--registry", &addr]);
    a.expect("Enter username: ");
    a.send_line("bob");
    a.expect("username \"bob\" is taken; choose another");
    a.expect("Enter username: ");
    a.send_line("bad,name");
    a.expect("invalid username");
    a.expect("Enter username: ");
    a.send_line("alice");
    a.expect("Enter shared directory: ");
    a.send_line("/no/such/dir");
    a.expect("/no/such/dir is not a directory");
    a.expect("Enter shared directory: ");
    a.send_line(dir.path().to_str().unwrap());
    a.expect("Enter port (empty or 0 for any free port): ");
    a.send_line("x");
    a.expect("\"x\" is not a port number");
    a.expect("Enter port");
    a.send_line(&busy_port);
    a.expect(&format!("port {busy_port} is not available"));
    a.expect("Enter port");
    a.send_line("");
    a.expect("registered as alice");
    assert!(registry.user("alice").is_some());

    a.expect("Enter choice: ");
    a.send_line("q");
    a.expect("invalid choice \"q\": enter 0-3");
    a.expect("Enter choice: ");
    a.send_line("2");
    a.expect("Enter username (empty to go back): ");
    a.send_line("nobody");
    a.expect("nobody is not online");
    a.expect("Enter username (empty to go back): ");
    a.send_line("bob");
    a.expect("Selected user: bob");
    a.expect("Enter choice: ");
    a.send_line("4");
    a.expect("Enter filename (empty to go back): ");
    a.send_line("missing.txt");
    a.expect("bob does not share \"missing.txt\"");
    a.expect("Enter choice: ");
    a.send_line("7");
    a.expect("invalid choice \"7\": enter 0-4");
    a.expect("Enter choice: ");
    a.close_stdin();
    a.expect("leaving the registry (end of input; bye)");
    let status = a.wait_exit(WAIT);
    assert!(status.success(), "{status:?}");
    assert!(registry.user("alice").is_none(), "EXIT was sent");
    assert_eq!(a.all_stderr(), "");
}

#[test]
fn unanswered_chat_request_expires() {
    let (registry, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut a = client(&[
        "--registry",
        &addr,
        "--user",
        "alice",
        "--dir",
        d,
        "--port",
        "0",
        "--answer-timeout",
        "1",
    ]);
    a.expect("Enter choice: ");
    let mut carol = Proc::start(&[
        "send",
        "--registry",
        &addr,
        "--user",
        "carol",
        "alice",
        "hi",
    ]);
    a.expect("carol wants to chat with you");
    a.expect("Accept chat with carol? [y/n]: ");
    a.expect("the chat request from carol expired");
    let status = carol.wait_exit(WAIT);
    // Not "declined" (exit 3): nobody answered, and carol is told so (exit 1).
    assert_eq!(status.code(), Some(1), "carol is told: no answer");
    assert_eq!(
        carol.all_stderr(),
        "p2pchat: timed out: alice did not answer the chat request in time\n"
    );
    // Back at the menu.
    a.expect("Enter choice: ");
    a.send_line("0");
    a.expect("leaving the registry (bye)");
    assert!(a.wait_exit(WAIT).success());
    assert!(registry.user("alice").is_none());
}

#[test]
fn sigint_leaves_the_registry() {
    let (registry, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut a = client(&[
        "--registry",
        &addr,
        "--user",
        "alice",
        "--dir",
        d,
        "--port",
        "0",
    ]);
    a.expect("Enter choice: ");
    assert!(registry.user("alice").is_some());
    a.signal(libc::SIGINT);
    a.expect("leaving the registry (interrupted; bye)");
    assert_eq!(a.wait_exit(WAIT).code(), Some(130));
    assert!(registry.user("alice").is_none());
}

#[test]
fn unreachable_registry_is_a_one_line_error() {
    let mut a = client(&["--registry", "127.0.0.1:1", "--user", "alice"]);
    let status = a.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1));
    let err = a.all_stderr();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is `p2pchat server` running there?"), "{err}");
    assert!(err.contains("cannot reach the registry"), "{err}");
}

#[test]
fn closed_stdout_ends_the_client_without_a_panic_and_leaves_the_registry() {
    // The registry reports every EXIT query, so the test sees the client's own EXIT
    // (a dying client's closed connection would release the name as well).
    let (exit_tx, exits) = crossbeam_channel::unbounded();
    let registry = Registry::builder()
        .config(registry_config())
        .on_event(move |e| {
            if let RegistryEvent::Query { query, outcome, .. } = e {
                if query.starts_with("EXIT") {
                    let _ = exit_tx.send((query.clone(), outcome.clone()));
                }
            }
        })
        .bind("127.0.0.1:0")
        .expect("bind registry");
    let addr = registry.local_addr().to_string();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut child = command(&[
        "client",
        "--registry",
        &addr,
        "--user",
        "alice",
        "--dir",
        d,
        "--port",
        "0",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn p2pchat");
    // Killed and reaped whatever happens below.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut child = Reap(child);
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // Read stdout up to the menu prompt (on a thread: a read has no timeout), then
    // close its read end.
    let (seen_tx, seen) = crossbeam_channel::bounded(1);
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("Enter choice: ") {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = seen_tx.send(String::from_utf8_lossy(&got).into_owned());
        stdout
    });
    let before = seen
        .recv_timeout(WAIT)
        .expect("the menu within the deadline");
    assert!(before.contains("Enter choice: "), "{before}");
    drop(reader.join().unwrap());
    assert!(registry.user("alice").is_some());

    // A menu command: its echo and its answer meet a closed pipe (EPIPE).
    stdin.write_all(b"1\n").unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the client did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = stderr_reader.join().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(status.code(), Some(141), "documented exit code: {err}");
    assert!(err.contains("cannot write to stdout"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    assert_eq!(
        exits.recv_timeout(WAIT),
        Ok(("EXIT,alice".to_string(), "OK".to_string())),
        "the client sent EXIT"
    );
    assert!(registry.user("alice").is_none());
}
