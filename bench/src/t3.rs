//! T3 — the registry at scale.
//!
//! 10,000 open, idle session connections holding 100,000 users with 10 files each (each
//! connection registers 10 users, its `INIT` lines pipelined in one write); then `GET_AF`
//! on another session connection. Measured: the registry's resident memory, the answer's
//! size, the time to receive it, and how much the RSS rises while it is built and sent.
//!
//! The registry runs inside the bench process, so its RSS is the process's `VmRSS` after
//! the setup minus `VmRSS` just before the registry started. The client ends of the
//! 10,000 sessions live in a child process (this same binary run with the internal
//! `--hold-sessions` flag): they cost neither memory nor descriptors here, and the
//! descriptor limit needs to cover 10,000 sockets per process, not 20,000. The client
//! reads the `GET_AF` answer through a fixed 256 KiB buffer, so it adds no memory that
//! grows with the answer either.

use crate::report::{Figure, Goal, Stats};
use crate::sys::{self, RssSampler};
use crate::{progress, Options, Outcome};
use p2pcore::registry::Registry;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The internal flag that makes this binary a session holder (see [`hold_sessions`]).
pub const HOLD_FLAG: &str = "--hold-sessions";
/// How long the holder may take to open and fill every session.
const HOLD_SETUP_LIMIT: Duration = Duration::from_secs(90);

const CONNS: usize = 10_000;
const USERS: usize = 100_000;
const FILES: usize = 10;
/// Setup threads opening connections (the registry runs its own event loops).
const SETUP_THREADS: usize = 4;
/// Descriptors beyond the CONNS sockets: stdio, listener, poll, waker, `/proc` reads…
const SPARE_FDS: u64 = 256;
const GOAL_RSS_MB: f64 = 300.0;
const GOAL_RISE_RATIO: f64 = 2.0;
const MB: f64 = 1e6;

pub fn run(opts: &Options) -> Result<Outcome, String> {
    let mut notes = Vec::new();
    // The registry holds one descriptor per session (the client ends are in the holder).
    let want = CONNS as u64 + SPARE_FDS;
    let limit = sys::raise_nofile(want)?;
    let mut conns = CONNS;
    if limit.raised_hard {
        notes.push(format!(
            "T3: RLIMIT_NOFILE hard limit was {} (< {want} needed); raised it to {} (privileged)",
            limit.hard_before, limit.soft
        ));
    }
    if limit.soft < want {
        conns = limit.soft.saturating_sub(SPARE_FDS) as usize;
        notes.push(format!(
            "T3: RLIMIT_NOFILE could only be raised to {} (hard limit {}), {want} needed: \
             ran with {conns} connections instead of {CONNS}",
            limit.soft, limit.hard_before
        ));
        if conns == 0 {
            return Err("T3: not enough file descriptors for any connection".into());
        }
    }
    let per_conn = USERS.div_ceil(conns);
    let users = per_conn * conns;

    sys::trim_heap();
    let rss_before = sys::rss().ok_or("cannot read VmRSS from /proc/self/status")?;
    let registry = Registry::builder()
        .config(crate::scratch::one_address_config())
        .bind("127.0.0.1:0")
        .map_err(|e| format!("registry bind: {e}"))?;
    let addr = registry.local_addr();
    let t = Instant::now();
    let holder = Holder::spawn(addr, conns, per_conn)?;
    let setup_s = t.elapsed().as_secs_f64();
    if registry.user_count() != users {
        return Err(format!(
            "T3: {} users registered, expected {users}",
            registry.user_count()
        ));
    }
    progress(&format!(
        "T3: {conns} sessions, {users} users x {FILES} files registered in {setup_s:.2} s"
    ));
    // Let the registry finish with the last reads and the setup threads' memory settle.
    std::thread::sleep(Duration::from_millis(300));
    let rss_after = sys::rss().ok_or("cannot read VmRSS")?;
    let registry_rss = rss_after.saturating_sub(rss_before) as f64 / MB;

    let hwm_works = sys::reset_hwm();
    if !hwm_works {
        notes.push(
            "T3: cannot reset VmHWM (/proc/self/clear_refs), peak RSS comes from 1 ms sampling only"
                .into(),
        );
    }
    let mut sizes = Vec::new();
    let mut times = Vec::new();
    let mut rises = Vec::new();
    let mut ratios = Vec::new();
    let mut residuals = Vec::new();
    let mut conn = TcpStream::connect(addr).map_err(|e| format!("T3 connect: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .and_then(|()| conn.set_write_timeout(Some(Duration::from_secs(30))))
        .map_err(|e| format!("T3 timeouts: {e}"))?;
    for run in 1..=opts.af_runs {
        let before = sys::rss().ok_or("cannot read VmRSS")?;
        if hwm_works {
            sys::reset_hwm();
        }
        let sampler = RssSampler::start();
        let t0 = Instant::now();
        let got = get_af(&mut conn)?;
        let took = t0.elapsed();
        let sampled = sampler.finish();
        let hwm = if hwm_works {
            sys::hwm().unwrap_or(0)
        } else {
            0
        };
        let peak = sampled.max(hwm);
        let rise = peak.saturating_sub(before) as f64;
        if got.lines != users {
            return Err(format!(
                "T3: GET_AF answered {} user lines, expected {users}",
                got.lines
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
        let residual = sys::rss().unwrap_or(before) as f64 - before as f64;
        progress(&format!(
            "T3 GET_AF run {run}/{}: {:.1} MB in {:.1} ms, peak RSS rise {:.1} MB ({:.2}x), \
             {:.1} MB still resident after",
            opts.af_runs,
            got.bytes as f64 / MB,
            took.as_secs_f64() * 1000.0,
            rise / MB,
            rise / got.bytes as f64,
            residual / MB,
        ));
        sizes.push(got.bytes as f64 / MB);
        times.push(took.as_secs_f64() * 1000.0);
        rises.push(rise / MB);
        ratios.push(rise / got.bytes as f64);
        residuals.push(residual / MB);
    }
    drop(conn);
    registry.shutdown();
    holder.finish();

    let residual = Stats::of(&residuals);
    let figures = vec![
        Figure::single(
            format!("T3 registry RSS ({conns} sessions, {users} users)"),
            "MB",
            Stats::of(&[registry_rss]),
        )
        .goal(Goal::AtMost(GOAL_RSS_MB))
        .extra(format!(
            "VmRSS of the bench process after setup ({:.1} MB) minus before the registry \
             started ({:.1} MB); client ends in a child process; {FILES} files per user; setup \
             took {setup_s:.2} s; kernel socket buffers are not in RSS",
            rss_after as f64 / MB,
            rss_before as f64 / MB
        )),
        Figure::single("T3 GET_AF answer size", "MB", Stats::of(&sizes)).extra(format!(
            "{users} user lines, read through a fixed 256 KiB buffer"
        )),
        Figure::single("T3 GET_AF time to receive", "ms", Stats::of(&times))
            .extra("from writing GET_AF to the final empty line, one session connection"),
        Figure::single("T3 GET_AF peak RSS rise", "MB", Stats::of(&rises)).extra(format!(
            "peak of VmHWM (reset before) and 1 ms VmRSS samples, minus VmRSS before; \
             still resident 100 ms after: {} MB median",
            crate::report::num(residual.median)
        )),
        Figure::single("T3 GET_AF RSS rise / answer size", "x", Stats::of(&ratios))
            .goal(Goal::Below(GOAL_RISE_RATIO)),
    ];
    Ok(Outcome { figures, notes })
}

struct AfAnswer {
    bytes: usize,
    /// User lines (the final empty line not counted).
    lines: usize,
}

/// Send `GET_AF\n` and read the answer up to its final empty line without keeping it.
fn get_af(conn: &mut TcpStream) -> Result<AfAnswer, String> {
    conn.write_all(b"GET_AF\n")
        .map_err(|e| format!("T3 GET_AF write: {e}"))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::with_capacity(3);
    let mut bytes = 0usize;
    let mut newlines = 0usize;
    let mut prev = 0u8;
    loop {
        let n = conn
            .read(&mut buf)
            .map_err(|e| format!("T3 GET_AF read after {bytes} bytes: {e}"))?;
        if n == 0 {
            return Err(format!("T3 GET_AF: connection closed after {bytes} bytes"));
        }
        let chunk = &buf[..n];
        if head.len() < 3 {
            let take = (3 - head.len()).min(n);
            head.extend_from_slice(&chunk[..take]);
            if head.len() == 3 && head != b"OK," {
                return Err(format!(
                    "T3 GET_AF answer starts with {:?}, expected \"OK,\"",
                    String::from_utf8_lossy(&head)
                ));
            }
        }
        bytes += n;
        newlines += chunk.iter().filter(|&&b| b == b'\n').count();
        // User lines are never empty, so "\n\n" only ever ends the answer.
        let last_two = if n >= 2 {
            [chunk[n - 2], chunk[n - 1]]
        } else {
            [prev, chunk[0]]
        };
        prev = chunk[n - 1];
        if last_two == *b"\n\n" {
            return Ok(AfAnswer {
                bytes,
                lines: newlines.saturating_sub(1),
            });
        }
    }
}

/// The `INIT` line (with `\n`) of user `u`: 10 files, about 180 bytes.
fn init_line(u: usize) -> String {
    let mut line = format!("INIT,user{u:06},{}", 10_000 + u % 50_000);
    for f in 0..FILES {
        line.push_str(&format!(",file{f}_{u:06}.txt"));
    }
    line.push('\n');
    line
}

/// The child process holding the client ends of the idle sessions. Dropping it closes
/// its stdin, which makes it close every session and exit; it is killed if it does not.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    reader: Option<JoinHandle<()>>,
}

impl Holder {
    /// Start the holder and wait until its `conns` sessions have registered every user.
    fn spawn(addr: SocketAddr, conns: usize, per_conn: usize) -> Result<Holder, String> {
        let exe = std::env::current_exe().map_err(|e| format!("T3: own executable: {e}"))?;
        let mut child = Command::new(exe)
            .args([
                HOLD_FLAG.to_string(),
                addr.to_string(),
                conns.to_string(),
                per_conn.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("T3: starting the session holder: {e}"))?;
        let stdout = child.stdout.take();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::Builder::new()
            .name("holder-stdout".into())
            .spawn(move || {
                let mut line = String::new();
                if let Some(out) = stdout {
                    let _ = BufReader::new(out).read_line(&mut line);
                }
                let _ = tx.send(line);
            })
            .ok();
        let holder = Holder {
            stdin: child.stdin.take(),
            child,
            reader,
        };
        // On any error below, dropping `holder` stops the child.
        let line = rx
            .recv_timeout(HOLD_SETUP_LIMIT)
            .map_err(|_| format!("T3: session holder not ready after {HOLD_SETUP_LIMIT:?}"))?;
        let line = line.trim_end();
        match line.strip_prefix("READY ") {
            Some(n) if n.parse::<usize>() == Ok(conns) => Ok(holder),
            _ => Err(format!("T3: session holder: {line:?}")),
        }
    }

    fn finish(self) {}

    fn stop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The holder's `main`: `--hold-sessions ADDR CONNS PER_CONN`. Opens the sessions,
/// registers the users, prints `READY <conns>` (or `ERROR <why>`) on stdout, then keeps
/// every session open until its stdin closes (the parent is done, or gone).
pub fn hold_sessions(args: &[String]) -> ExitCode {
    let parsed = match args {
        [addr, conns, per_conn] => addr
            .parse::<SocketAddr>()
            .ok()
            .zip(conns.parse::<usize>().ok())
            .zip(per_conn.parse::<usize>().ok()),
        _ => None,
    };
    let Some(((addr, conns), per_conn)) = parsed else {
        println!("ERROR usage: {HOLD_FLAG} ADDR CONNS PER_CONN");
        return ExitCode::from(2);
    };
    let want = conns as u64 + SPARE_FDS;
    match sys::raise_nofile(want) {
        Ok(l) if l.soft >= want => {}
        Ok(l) => {
            println!("ERROR RLIMIT_NOFILE is {}, {want} needed", l.soft);
            return ExitCode::FAILURE;
        }
        Err(e) => {
            println!("ERROR {e}");
            return ExitCode::FAILURE;
        }
    }
    let sessions =
        match crate::setup::open_sessions(addr, conns, per_conn, SETUP_THREADS, &init_line) {
            Ok(s) => s,
            Err(e) => {
                println!("ERROR {e}");
                return ExitCode::FAILURE;
            }
        };
    println!("READY {}", sessions.len());
    let _ = std::io::stdout().flush();
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    drop(sessions);
    ExitCode::SUCCESS
}
