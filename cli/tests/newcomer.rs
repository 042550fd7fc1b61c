//! A newcomer's first hour (issue 16): exit codes, error wording, `P2PCHAT_USER`,
//! fetch/send while the same user is online elsewhere, resume said out loud, `share`
//! and `client` saying what happens to the registry, `~` at the prompt, the server's
//! log of file lists. All over loopback, with the real binary.

mod common;

use common::{
    assert_one_line_error, client_at_menu, command, eventually, pattern, register_by_hand,
    registry, run, server_proc, share, Proc, WAIT,
};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::time::Duration;

fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    std::fs::read_to_string(path).expect("read README.md")
}

/// `cmd` with one more environment variable.
fn with_env(mut cmd: std::process::Command, key: &str, value: &str) -> std::process::Command {
    cmd.env(key, value);
    cmd
}

/// A command without the user's own settings for the registry and the name.
fn clean(args: &[&str]) -> std::process::Command {
    let mut c = command(args);
    c.env_remove("P2PCHAT_USER");
    c
}

#[test]
fn help_and_readme_list_one_exit_code_table_and_usage_errors_exit_2() {
    let o = run(clean(&["--help"]));
    assert!(o.status.success(), "{o:?}");
    let table = o
        .stdout
        .split_once("Exit status (every command):")
        .map(|(_, t)| t.trim_end())
        .unwrap_or_else(|| panic!("no exit-code table in --help: {}", o.stdout));
    for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "130 ", "141 "] {
        assert!(
            table.lines().any(|l| l.trim_start().starts_with(code)),
            "{code}in {table}"
        );
    }
    let readme = readme();
    assert!(
        readme.contains(&format!("Exit status (every command):{table}")),
        "the README shows the same table as --help:\n{table}"
    );

    // Usage errors: clap's message, exit 2.
    let o = run(clean(&["fetch"]));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    // A malformed registry address is a usage error, not "cannot reach".
    for bad in ["nonsense", "127.0.0.1", "localhost:99999"] {
        let o = run(clean(&["users", "--registry", bad]));
        assert_eq!(o.status.code(), Some(2), "{o:?}");
        assert!(o.stderr.contains("is not HOST:PORT"), "{o:?}");
        assert!(!o.stderr.contains("cannot reach"), "{o:?}");
    }
    let o = run(with_env(
        clean(&["users"]),
        "P2PCHAT_REGISTRY",
        "no-port-here",
    ));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}

#[test]
fn an_unreachable_or_silent_registry_says_what_to_do() {
    // Nobody listens: "Connection refused", and a hint to start the server.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for args in [
        vec!["users", "--registry", &addr],
        vec!["share", "--registry", &addr, "--user", "bob", "--dir", d],
        vec![
            "fetch",
            "--registry",
            &addr,
            "--user",
            "bob",
            "--dir",
            d,
            "x",
            "f",
        ],
    ] {
        let o = run(clean(&args));
        assert_one_line_error(&o);
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert!(
            o.stderr
                .contains(&format!("cannot reach the registry at {addr}"))
                && o.stderr.contains("Connection refused")
                && o.stderr.contains("is `p2pchat server` running there?"),
            "{o:?}"
        );
    }

    // A registry that accepts and never answers: a timeout, in seconds, no "os error".
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let o = run(clean(&["users", "--registry", &addr]));
    assert_one_line_error(&o);
    assert!(
        o.stderr.contains(&format!(
            "timed out: the registry at {addr} did not answer within 10 s"
        )),
        "{o:?}"
    );
    assert!(!o.stderr.contains("os error"), "{o:?}");
    drop(silent);
}

#[test]
fn plain_wording_for_port_zero_timeouts_and_yourself() {
    use p2pcore::Error;
    use std::io::{Error as IoError, ErrorKind};
    let e = Error::PortUnavailable {
        port: 0,
        source: IoError::from(ErrorKind::AddrNotAvailable),
    };
    assert!(
        e.to_string().starts_with("no free port to listen on: "),
        "{e}"
    );
    let e = Error::PortUnavailable {
        port: 4000,
        source: IoError::from(ErrorKind::AddrInUse),
    };
    assert!(
        e.to_string().starts_with("port 4000 is not available: "),
        "{e}"
    );
    let e = Error::Io(IoError::from_raw_os_error(libc::EAGAIN));
    assert_eq!(e.to_string(), "I/O error: timed out (no answer in time)");

    // Sending to yourself is an error (1), not a decline (3).
    let (_registry, addr) = registry();
    let o = run(clean(&[
        "send",
        "--registry",
        &addr,
        "--user",
        "amy",
        "amy",
        "hi",
    ]));
    assert_one_line_error(&o);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        o.stderr.contains("cannot send to amy: that is you"),
        "{o:?}"
    );
}

#[test]
fn user_from_the_environment_and_fetch_send_while_online_elsewhere() {
    let (registry, addr) = registry();
    let bob_dir = tempfile::tempdir().unwrap();
    let data = pattern(64 * 1024 + 5);
    std::fs::write(bob_dir.path().join("report.bin"), &data).unwrap();
    let (mut bob, _) = share(&addr, "bob", bob_dir.path(), true);
    // alice is online in a share of her own.
    let alice_dir = tempfile::tempdir().unwrap();
    let (_alice, _) = share(&addr, "alice", alice_dir.path(), false);

    // fetch, its user from P2PCHAT_USER, while alice is online: registered as alice~2.
    let dl = tempfile::tempdir().unwrap();
    let fetch = clean(&[
        "fetch",
        "--registry",
        &addr,
        "--dir",
        dl.path().to_str().unwrap(),
        "bob",
        "report.bin",
    ]);
    let o = run(with_env(fetch, "P2PCHAT_USER", "alice"));
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        o.stderr,
        "alice is online elsewhere; this run is registered as alice~2\n"
    );
    assert_eq!(std::fs::read(dl.path().join("report.bin")).unwrap(), data);

    // send, the same way: bob sees who asked.
    let send = clean(&["send", "--registry", &addr, "bob", "hi from a script"]);
    let o = run(with_env(send, "P2PCHAT_USER", "alice"));
    assert!(o.status.success(), "{o:?}");
    bob.expect("alice~2: hi from a script");
    assert!(
        registry.user("alice").is_some(),
        "alice's share is untouched"
    );
    assert!(registry.user("alice~2").is_none(), "the run left");

    // The client takes its name from P2PCHAT_USER too: no username prompt.
    let mut carol = Proc::spawn(
        clean(&[
            "client",
            "--registry",
            &addr,
            "--dir",
            dl.path().to_str().unwrap(),
            "--port",
            "0",
        ])
        .env("P2PCHAT_USER", "carol")
        .stdin(Stdio::piped()),
    );
    let seen = carol.expect("Enter choice: ");
    assert!(!seen.contains("Enter username"), "{seen}");
    assert!(seen.contains("registered as carol"), "{seen}");
    carol.send_line("0");
    assert!(carol.wait_exit(WAIT).success());
}

/// A peer registered as `bob` that answers one request for `name` with its size and
/// hash, sends `sent` bytes of `data` and then holds the connection until dropped.
struct StallingBob {
    _session: TcpStream,
    held: crossbeam_channel::Receiver<TcpStream>,
}

impl StallingBob {
    fn start(registry: &str, name: &str, data: &[u8], hash: String, sent: usize) -> StallingBob {
        let (listener, session) = register_by_hand(registry, "bob", name);
        let (tx, held) = crossbeam_channel::bounded(1);
        let head = data[..sent].to_vec();
        let size = data.len();
        std::thread::spawn(move || {
            let Ok((s, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let _ = (&s).write_all(format!("OK {size} {hash}\n").as_bytes());
            let _ = (&s).write_all(&head);
            let _ = tx.send(s);
        });
        StallingBob {
            _session: session,
            held,
        }
    }
}

#[test]
fn an_interrupted_fetch_keeps_the_partial_says_so_and_the_rerun_resumes() {
    let (registry, addr) = registry();
    let src = tempfile::tempdir().unwrap();
    let data = pattern(2 * 1024 * 1024);
    let path = src.path().join("report.bin");
    std::fs::write(&path, &data).unwrap();
    let hash = p2pcore::share::hash_file(&path)
        .unwrap()
        .to_hex()
        .to_string();
    let half = data.len() / 2;
    let bob = StallingBob::start(&addr, "report.bin", &data, hash, half);

    let dl = tempfile::tempdir().unwrap();
    let d = dl.path().to_str().unwrap();
    let args = [
        "fetch",
        "--registry",
        &addr,
        "--user",
        "alice",
        "--dir",
        d,
        "bob",
        "report.bin",
    ];
    let mut fetch = Proc::spawn(clean(&args).stdin(Stdio::null()));
    let partial = p2pcore::transfer::partial_path(dl.path(), "report.bin");
    let _held = bob.held.recv_timeout(WAIT).expect("the fetch asked");
    eventually("part of the file arrived", || {
        std::fs::metadata(&partial).is_ok_and(|m| m.len() > 0)
    });
    fetch.signal(libc::SIGINT);
    let status = fetch.wait_exit(WAIT);
    assert_eq!(status.code(), Some(130), "interrupted");
    let err = fetch.all_stderr();
    assert!(
        err.contains("interrupted; the partial download (")
            && err.contains(&format!(") is kept in {}", partial.display()))
            && err.ends_with("run the same command again to resume it\n"),
        "{err}"
    );
    drop(bob);
    eventually("the stalling bob left", || registry.user("bob").is_none());

    // The real bob, with the same file: the re-run says it resumes, and finishes.
    let (_bob, _) = share(&addr, "bob", src.path(), false);
    let kept = std::fs::metadata(&partial).unwrap().len();
    let o = run(clean(&args));
    assert!(o.status.success(), "{o:?}");
    assert!(
        o.stderr.starts_with("resuming report.bin: ")
            && o.stderr
                .contains(" of 2.0 MiB already here from an earlier download"),
        "{o:?}"
    );
    assert!(kept > 0);
    assert_eq!(std::fs::read(dl.path().join("report.bin")).unwrap(), data);
}

#[test]
fn share_says_when_chats_end_the_registry_drops_and_it_is_interrupted() {
    let (registry, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    let (mut bob, _) = share(&addr, "bob", dir.path(), true);
    let o = run(clean(&[
        "send",
        "--registry",
        &addr,
        "--user",
        "carol",
        "bob",
        "hi",
    ]));
    assert!(o.status.success(), "{o:?}");
    bob.expect("carol: hi");
    eventually("the chat's end is shown", || {
        bob.all_stderr()
            .contains("the chat with carol ended (carol closed it)")
    });
    assert!(!bob.all_stderr().contains("Remote"), "{}", bob.all_stderr());

    registry.shutdown();
    eventually("the lost registry is shown", || {
        bob.all_stderr().contains("lost the registry (")
    });
    bob.signal(libc::SIGINT);
    assert_eq!(bob.wait_exit(WAIT).code(), Some(130));
    let err = bob.all_stderr();
    assert!(
        err.ends_with("interrupted; stopped sharing (the registry is unreachable)\n"),
        "{err}"
    );
    assert!(!err.contains("leaving the registry"), "{err}");
}

#[test]
fn client_says_it_cannot_leave_a_registry_that_is_gone() {
    let (registry, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    let mut a = client_at_menu(&addr, "alice", dir.path(), &[]);
    registry.shutdown();
    a.expect("lost the registry (");
    a.expect("Enter choice: ");
    a.send_line("0");
    a.expect("stopping; the registry is unreachable (bye)");
    assert!(a.wait_exit(WAIT).success());
    assert!(!a.all_stdout().contains("leaving the registry"));
}

#[test]
fn a_tilde_at_the_directory_prompt_is_the_home_directory() {
    let (registry, addr) = registry();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("alice-share")).unwrap();
    let mut a = Proc::spawn(
        clean(&[
            "client",
            "--registry",
            &addr,
            "--user",
            "alice",
            "--port",
            "0",
        ])
        .env("HOME", home.path())
        .stdin(Stdio::piped()),
    );
    a.expect("Enter shared directory: ");
    a.send_line("~/alice-share");
    let line = a.line_with("registered as alice");
    let shared = home.path().join("alice-share").canonicalize().unwrap();
    assert!(
        line.contains(&format!("sharing {}: 0 files", shared.display())),
        "{line}"
    );
    a.send_line("0");
    assert!(a.wait_exit(WAIT).success());
    assert!(registry.user("alice").is_none());
}

#[test]
fn the_server_log_shows_a_whole_file_list() {
    let mut server = server_proc(&["--addr", "127.0.0.1:0"]);
    let addr = server.line().rsplit(' ').next().unwrap().to_string();
    let alice_dir = tempfile::tempdir().unwrap();
    let bob_dir = tempfile::tempdir().unwrap();
    std::fs::write(bob_dir.path().join("notes.txt"), "n").unwrap();
    std::fs::write(bob_dir.path().join("report.bin"), "r").unwrap();
    let (_alice, _) = share(&addr, "alice", alice_dir.path(), false);
    let (_bob, _) = share(&addr, "bob", bob_dir.path(), false);
    let o = run(clean(&["files", "--registry", &addr]));
    assert_eq!(o.stdout, "bob: notes.txt\nbob: report.bin\n", "{o:?}");
    let line = server.line_with("GET_AF");
    assert!(
        line.ends_with("GET_AF -> OK (2 users): alice:  | bob: notes.txt,report.bin"),
        "{line}"
    );
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(WAIT).code(), Some(130));
    let _ = Duration::ZERO;
}

/// The indented blocks of the README's session (after alice's registration, before
/// "Scripting"), with trailing spaces removed from each line.
fn readme_session_blocks(alice_share: &str) -> Vec<String> {
    let readme = readme();
    let start = readme
        .find("In a second terminal alice")
        .expect("the session in the README");
    let end = readme[start..].find("### Scripting").unwrap() + start;
    let mut blocks = Vec::new();
    let mut block: Vec<String> = Vec::new();
    for line in readme[start..end].lines() {
        if let Some(code) = line.strip_prefix("    ") {
            block.push(
                code.trim_end()
                    .replace("/home/alice/alice-share", alice_share),
            );
        } else if line.is_empty() && !block.is_empty() {
            block.push(String::new());
        } else if !block.is_empty() {
            while block.last().is_some_and(|l| l.is_empty()) {
                block.pop();
            }
            blocks.push(block.join("\n"));
            block.clear();
        }
    }
    blocks
}

fn trimmed(transcript: &str) -> String {
    transcript
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Issue 5: what the README shows of a session is what the client prints, line for line.
#[test]
fn the_readme_session_is_real_output() {
    let (_registry, addr) = registry();
    let alice_dir = tempfile::tempdir().unwrap();
    let bob_dir = tempfile::tempdir().unwrap();
    std::fs::write(bob_dir.path().join("notes.txt"), "notes").unwrap();
    std::fs::write(bob_dir.path().join("report.bin"), pattern(100_000)).unwrap();
    let b = bob_dir.path().to_str().unwrap();
    let mut bob = Proc::spawn(
        clean(&[
            "client",
            "--registry",
            &addr,
            "--user",
            "bob",
            "--dir",
            b,
            "--port",
            "0",
        ])
        .stdin(Stdio::piped()),
    );
    bob.expect("Enter choice: ");
    let mut alice = Proc::spawn(clean(&["client", "--registry", &addr]).stdin(Stdio::piped()));
    alice.expect("Enter username: ");
    alice.send_line("alice");
    alice.expect("Enter shared directory: ");
    alice.send_line(alice_dir.path().to_str().unwrap());
    alice.expect("Enter port (empty or 0 for any free port): ");
    alice.send_line("");
    for choice in ["1", "3", "2"] {
        alice.expect("Enter choice: ");
        alice.send_line(choice);
    }
    alice.expect("Enter username (empty to go back): ");
    alice.send_line("bob");
    for choice in ["1", "2", "3"] {
        alice.expect("Enter choice: ");
        alice.send_line(choice);
    }
    bob.expect("Accept chat with alice? [y/n]: ");
    bob.send_line("y");
    alice.expect("--- chatting with bob");
    alice.send_line("/exit");
    alice.expect("Enter choice: ");
    alice.send_line("4");
    alice.expect("Enter filename (empty to go back): ");
    alice.send_line("report.bin");
    alice.expect("(hash verified)");
    alice.expect("Enter choice: ");
    alice.send_line("0");
    alice.expect("Enter choice: ");
    alice.send_line("0");
    assert!(alice.wait_exit(WAIT).success());
    bob.expect("Enter choice: ");
    bob.send_line("0");
    assert!(bob.wait_exit(WAIT).success());

    // Keys differ from run to run: the README shows made-up fingerprints in their place.
    let mut seen = trimmed(&(alice.all_stdout() + "\n" + &bob.all_stdout()));
    for (user, shown) in [
        ("alice", "Q4RZ-7KWM-2XHD-LT5N-VB3C-6PJE-YF6A-MU7S"),
        ("bob", "H3GE-5NQA-W2TK-RD7V-ZX4M-LP6B-C7YJ-UF2N"),
    ] {
        let id = run(clean(&["id", user]));
        assert!(id.status.success(), "{id:?}");
        seen = seen.replace(id.stdout.trim_end(), shown);
    }
    let share = alice_dir.path().canonicalize().unwrap();
    let blocks = readme_session_blocks(&share.display().to_string());
    assert!(blocks.len() >= 8, "{blocks:#?}");
    for block in blocks.iter().filter(|b| !b.starts_with("$ ")) {
        assert!(
            seen.contains(block.as_str()),
            "README block not in the real output:\n{block}\n--- output ---\n{seen}"
        );
    }
}

/// Issue 14: Ctrl-C ends `send` waiting for an answer with 130 too (client, fetch,
/// share and server are covered by their own tests), and the run leaves the registry.
#[test]
fn an_interrupted_send_exits_130_and_leaves() {
    let (registry, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    let mut alice = client_at_menu(&addr, "alice", dir.path(), &[]);
    let mut send = Proc::spawn(
        clean(&[
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
    alice.expect("Accept chat with carol? [y/n]: ");
    assert!(registry.user("carol").is_some());
    send.signal(libc::SIGINT);
    assert_eq!(send.wait_exit(WAIT).code(), Some(130));
    assert_eq!(
        send.all_stderr(),
        "p2pchat: interrupted; the chat was not completed\n"
    );
    assert!(registry.user("carol").is_none(), "EXIT was sent");
    alice.send_line("0");
    assert!(alice.wait_exit(WAIT).success());
}
