//! Processes of the lab: commands run to their end within a deadline, and background
//! processes whose output is read line by line, killed and reaped on drop.

use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest a background process is waited for (a line, an exit).
pub const WAIT: Duration = Duration::from_secs(20);

/// What a finished (or killed) command did.
#[derive(Debug)]
pub struct Output {
    /// `None` when it could not be started or was killed at its deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    /// Killed at its deadline.
    pub timed_out: bool,
    /// Why it could not be started.
    pub spawn_error: Option<String>,
    /// From start to exit (or to the kill).
    pub elapsed: Duration,
}

impl Output {
    /// Exited with status 0.
    pub fn status_ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Read `from` to its end on a thread of its own (joined by the caller).
fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = from.read_to_end(&mut all);
        all
    })
}

/// Run `cmd` to its end, killed (SIGKILL) and reaped after `timeout`.
pub fn run_bounded(cmd: Command, timeout: Duration) -> Output {
    run_bounded_with_input(cmd, None, timeout)
}

/// [`run_bounded`] with `input` on stdin (then closed).
pub fn run_bounded_with_input(mut cmd: Command, input: Option<&str>, timeout: Duration) -> Output {
    let start = Instant::now();
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Output {
                status: None,
                stdout: String::new(),
                stderr: String::new(),
                timed_out: false,
                spawn_error: Some(e.to_string()),
                elapsed: start.elapsed(),
            }
        }
    };
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // Small inputs (rule sets): they fit in the pipe, so this cannot block long.
        let _ = stdin.write_all(text.as_bytes());
    }
    let deadline = start + timeout;
    let (status, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (Some(status), false),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break (None, true);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                break (None, false);
            }
        }
    };
    let elapsed = start.elapsed();
    // The pipes close with the process (the lab's commands have no children that
    // outlive them), so these end.
    let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    Output {
        status,
        stdout,
        stderr,
        timed_out,
        spawn_error: None,
        elapsed,
    }
}

/// A process running in the background, its stdout and stderr read as they come.
/// Killed (SIGKILL) and reaped on drop; its reader threads are joined then.
pub struct LabProc {
    what: String,
    child: Child,
    lines: Receiver<String>,
    readers: Vec<JoinHandle<()>>,
    /// Everything seen on stdout and stderr so far, for failure messages.
    seen: String,
}

/// Send each line of `from` (tagged with `tag`) to `tx` until EOF.
fn lines(
    from: impl Read + Send + 'static,
    tag: &'static str,
    tx: crossbeam_channel::Sender<String>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match std::io::BufRead::read_until(&mut reader, b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    if tx.send(format!("{tag}{}", text.trim_end())).is_err() {
                        break;
                    }
                }
            }
        }
    })
}

impl LabProc {
    /// Start `cmd` (described as `what` in failure messages).
    pub fn spawn(mut cmd: Command, what: &str) -> LabProc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let (tx, rx) = crossbeam_channel::unbounded();
        let readers = vec![
            lines(child.stdout.take().expect("piped"), "", tx.clone()),
            lines(child.stderr.take().expect("piped"), "[stderr] ", tx),
        ];
        LabProc {
            what: what.to_string(),
            child,
            lines: rx,
            readers,
            seen: String::new(),
        }
    }

    /// Wait (at most `timeout`) for a stdout line starting with `prefix`, or a stderr
    /// line when `prefix` starts with `[stderr] `; earlier lines are skipped. Panics
    /// with everything seen on timeout or exit.
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        self.wait_line(timeout, |l| l.starts_with(prefix))
            .unwrap_or_else(|why| {
                panic!(
                    "{} never printed {prefix:?}: {why}\n{}",
                    self.what, self.seen
                )
            })
    }

    /// Wait (at most `timeout`) for a line (stdout, or stderr tagged `[stderr] `) that
    /// `wanted` accepts.
    pub fn wait_line(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                    if wanted(&line) {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err(format!("nothing in {timeout:?}")),
                Err(RecvTimeoutError::Disconnected) => return Err("the process ended".into()),
            }
        }
    }

    /// Wait (at most [`WAIT`]) for a line holding both `a` and `b`.
    pub fn expect_line_containing(&mut self, a: &str, b: &str) -> String {
        self.wait_line(WAIT, |l| l.contains(a) && l.contains(b))
            .unwrap_or_else(|why| {
                panic!(
                    "{} never printed a line with {a:?} and {b:?}: {why}\n{}",
                    self.what, self.seen
                )
            })
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything printed so far (stderr lines tagged `[stderr] `).
    pub fn transcript(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        self.seen.clone()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for LabProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its pipes are closed now: the readers reach EOF.
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}
