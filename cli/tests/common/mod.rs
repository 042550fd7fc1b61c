//! Helpers for driving the real `p2pchat` binary: processes killed on drop, output
//! waited for with timeouts, an in-process registry.

#![allow(dead_code)] // each test file uses a different part

use crossbeam_channel::{Receiver, RecvTimeoutError};
use p2pcore::registry::Registry;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_p2pchat");
/// The longest any single wait may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// A registry on a free loopback port, in this process.
pub fn registry() -> (Registry, String) {
    let r = Registry::bind("127.0.0.1:0").expect("bind registry");
    let addr = r.local_addr().to_string();
    (r, addr)
}

/// A `p2pchat` command with a clean environment for colours and the registry.
pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("NO_COLOR", "1")
        .env_remove("P2PCHAT_REGISTRY");
    c
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Spawn `p2pchat client ARGS` with a piped stdin.
pub fn client(args: &[&str]) -> Proc {
    let mut all = vec!["client"];
    all.extend_from_slice(args);
    Proc::start(&all)
}

/// `p2pchat client` online as `user` sharing `dir` on any port, with `extra` flags;
/// returns once it shows its menu.
pub fn client_at_menu(registry: &str, user: &str, dir: &Path, extra: &[&str]) -> Proc {
    let d = dir.to_str().unwrap();
    let mut args = vec![
        "--registry",
        registry,
        "--user",
        user,
        "--dir",
        d,
        "--port",
        "0",
    ];
    args.extend_from_slice(extra);
    let mut c = client(&args);
    c.expect("Enter choice: ");
    c
}

/// Run a command to its end (killed after [`WAIT`]).
pub fn run(mut cmd: Command) -> Output {
    let mut p = Proc::spawn(cmd.stdin(Stdio::null()));
    let status = p.wait_exit(WAIT);
    Output {
        status,
        stdout: p.all_stdout(),
        stderr: p.all_stderr(),
    }
}

/// Run `p2pchat ARGS` against no particular registry.
pub fn p2pchat(args: &[&str]) -> Output {
    run(command(args))
}

/// A child process whose output is collected by reader threads. Killed on drop.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Receiver<Vec<u8>>,
    err: Receiver<Vec<u8>>,
    /// While set, nobody reads the child's stdout (its pipe fills, its writes block).
    stdout_paused: Arc<AtomicBool>,
    /// stdout not yet consumed by [`Proc::expect`].
    pending: String,
    /// Everything seen on stdout, for failure messages.
    transcript: String,
    stderr: String,
    /// A server's temporary `--data-dir` (see [`server_proc`]), removed with it.
    data_dir: Option<tempfile::TempDir>,
}

/// `p2pchat server ARGS` (stdin closed) with its own temporary `--data-dir`, so tests
/// never touch the user's registry data and servers in parallel never share a store.
pub fn server_proc(args: &[&str]) -> Proc {
    let data = tempfile::tempdir().expect("temporary data directory");
    let dir = data.path().to_str().expect("UTF-8 temp path").to_string();
    let mut all = vec!["server", "--data-dir", dir.as_str()];
    all.extend_from_slice(args);
    let mut p = Proc::spawn(command(&all).stdin(Stdio::null()));
    p.data_dir = Some(data);
    p
}

fn pump(mut from: impl Read + Send + 'static, paused: Arc<AtomicBool>) -> Receiver<Vec<u8>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            while paused.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let Ok(n) = from.read(&mut buf) else { break };
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

impl Proc {
    /// Spawn with stdout and stderr piped (stdin as the command says, piped by default).
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn p2pchat");
        let stdout_paused = Arc::new(AtomicBool::new(false));
        let out = pump(child.stdout.take().unwrap(), stdout_paused.clone());
        let err = pump(
            child.stderr.take().unwrap(),
            Arc::new(AtomicBool::new(false)),
        );
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            out,
            err,
            stdout_paused,
            pending: String::new(),
            transcript: String::new(),
            stderr: String::new(),
            data_dir: None,
        }
    }

    /// Spawn `p2pchat ARGS` with a piped stdin.
    pub fn start(args: &[&str]) -> Proc {
        Proc::spawn(command(args).stdin(Stdio::piped()))
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Stop reading the child's stdout: once the pipe is full, its writes block, as
    /// with a terminal that is scrolled back or a pipe nobody reads.
    pub fn pause_stdout(&self) {
        self.stdout_paused.store(true, Ordering::SeqCst);
    }

    /// Read the child's stdout again.
    pub fn resume_stdout(&self) {
        self.stdout_paused.store(false, Ordering::SeqCst);
    }

    /// The child's resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        vm_rss_kib(self.pid())
    }

    fn take_stdout(&mut self, chunk: Vec<u8>) {
        let text = String::from_utf8_lossy(&chunk);
        self.pending.push_str(&text);
        self.transcript.push_str(&text);
    }

    fn drain_stderr(&mut self) {
        while let Ok(chunk) = self.err.try_recv() {
            self.stderr.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Wait until stdout shows `needle`; return the output up to and including it
    /// (consumed). Panics with the transcript after [`WAIT`].
    pub fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.pending.find(needle) {
                let end = i + needle.len();
                let seen = self.pending[..end].to_string();
                self.pending.drain(..end);
                return seen;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(chunk) => self.take_stdout(chunk),
                Err(e) => {
                    self.drain_stderr();
                    panic!(
                        "waiting for {needle:?}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                        if e == RecvTimeoutError::Timeout {
                            "timed out"
                        } else {
                            "stdout closed"
                        },
                        self.transcript,
                        self.stderr
                    );
                }
            }
        }
    }

    /// Wait for a whole stdout line and return it.
    pub fn line(&mut self) -> String {
        let seen = self.expect("\n");
        seen.trim_end_matches(['\r', '\n']).to_string()
    }

    /// Wait for a whole stdout line containing `needle` (earlier lines are skipped).
    pub fn line_with(&mut self, needle: &str) -> String {
        let seen = self.expect(needle);
        let start = seen.rfind('\n').map_or(0, |i| i + 1);
        seen[start..].to_string() + &self.line()
    }

    /// Type a line.
    pub fn send_line(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{text}").expect("write to p2pchat");
        stdin.flush().unwrap();
    }

    /// Close stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Send a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Whether the process exits within `timeout` (its output is left unread).
    pub fn exits_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the process to exit (panics after `timeout`), collecting its output.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The readers end at EOF; collect what is left.
                let end = Instant::now() + Duration::from_secs(5);
                while let Ok(chunk) = self
                    .out
                    .recv_timeout(end.saturating_duration_since(Instant::now()))
                {
                    self.take_stdout(chunk);
                }
                while let Ok(chunk) = self
                    .err
                    .recv_timeout(end.saturating_duration_since(Instant::now()))
                {
                    self.stderr.push_str(&String::from_utf8_lossy(&chunk));
                }
                return status;
            }
            if Instant::now() > deadline {
                self.drain_stderr();
                panic!(
                    "process did not exit in {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.transcript, self.stderr
                );
            }
            while let Ok(chunk) = self.out.try_recv() {
                self.take_stdout(chunk);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn all_stdout(&mut self) -> String {
        while let Ok(chunk) = self.out.try_recv() {
            self.take_stdout(chunk);
        }
        self.transcript.clone()
    }

    pub fn all_stderr(&mut self) -> String {
        self.drain_stderr();
        self.stderr.clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `p2pchat share` online as `user` sharing `dir`; returns once it printed its port.
pub fn share(registry: &str, user: &str, dir: &Path, accept: bool) -> (Proc, u16) {
    let dir = dir.to_str().unwrap();
    let mut args = vec![
        "share",
        "--registry",
        registry,
        "--user",
        user,
        "--dir",
        dir,
    ];
    if accept {
        args.push("--accept-chats");
    }
    let mut p = Proc::spawn(command(&args).stdin(Stdio::null()));
    let line = p.line();
    let prefix = format!("sharing as {user} on ");
    let port = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("port");
    (p, port)
}

/// Poll `cond` until it holds (panics after [`WAIT`]).
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// File contents that are not all alike (so a misplaced block would show).
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A one-line error on stderr.
pub fn assert_one_line_error(o: &Output) {
    assert!(!o.status.success(), "expected failure: {o:?}");
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {o:?}");
    assert!(lines[0].starts_with("p2pchat: "), "{o:?}");
}

/// A process's resident memory (VmRSS from `/proc/<pid>/status`), in KiB.
pub fn vm_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// The start of a peer made by hand: a listener on a free loopback port, registered in
/// `registry` as `user` sharing `file` (asserting the registry's `OK`). Returns the
/// listener and the registry session, which keeps the registration while open.
pub fn register_by_hand(registry: &str, user: &str, file: &str) -> (TcpListener, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut session = TcpStream::connect(registry).unwrap();
    session
        .write_all(format!("INIT,{user},{port},{file}\n").as_bytes())
        .unwrap();
    let mut ok = String::new();
    BufReader::new(session.try_clone().unwrap())
        .read_line(&mut ok)
        .unwrap();
    assert_eq!(ok, "OK\n");
    (listener, session)
}

/// Registers each of `names` without a key (plaintext sessions, listening nowhere
/// useful), so a hand-made peer's plaintext chat requests in those names are served,
/// unverified (p2pchat peers deny plaintext requests in the name of a user with a key,
/// or of no registered user). The registrations last while the result is kept.
pub fn keyless(registry: &str, names: &[&str]) -> Vec<(TcpListener, TcpStream)> {
    names
        .iter()
        .map(|n| register_by_hand(registry, n, "x.bin"))
        .collect()
}

/// A peer speaking the wire protocol by hand, as a hostile one would: it asks `to` (a
/// peer's listening address) for a chat as `from` (any name it likes).
pub struct FakePeer {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl FakePeer {
    /// Connect and send the chat request line.
    pub fn ask_chat(to: SocketAddr, from: &str) -> FakePeer {
        let stream = TcpStream::connect_timeout(&to, WAIT).expect("connect to the peer");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        (&stream)
            .write_all(format!("P2P/1 CHAT {from}\n").as_bytes())
            .expect("send the chat request");
        let reader = BufReader::new(stream.try_clone().unwrap());
        FakePeer { stream, reader }
    }

    /// The answer line (`OK`, `ERR declined ...`), or "" if the connection closed.
    pub fn answer(&mut self) -> String {
        let mut line = String::new();
        let _ = self.reader.read_line(&mut line);
        line.trim_end().to_string()
    }

    /// Send one chat message frame.
    pub fn say(&self, text: &str) -> std::io::Result<()> {
        let mut frame = format!("MSG {}\n", text.len()).into_bytes();
        frame.extend_from_slice(text.as_bytes());
        (&self.stream).write_all(&frame)
    }

    /// End the chat politely.
    pub fn bye(&self) {
        let _ = (&self.stream).write_all(b"BYE\n");
    }
}
