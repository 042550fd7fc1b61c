//! T4 — chat between two peers on 127.0.0.1.
//!
//! The chat runs over whatever link this build's peers open (an encrypted `P2P/2` link
//! with issue 11's peer links); T7 measures an encrypted round trip on the bare link.
//!
//! Peer B's `on_chat_request` hook accepts and hands the [`Chat`] over a channel; its
//! `on_chat_message` hook forwards 64-byte messages to an echo thread (which sends them
//! back on B's `Chat`: never from inside the hook) and counts 1 KiB ones. Peer A's
//! `on_chat_message` hook forwards to a channel A's main thread waits on.
//!
//! - Round trip: 64 bytes A→B→A, one at a time; the figure is each run's p50 (and p99).
//!   Baseline: raw TCP ping-pong of 64 bytes between two threads, `TCP_NODELAY`.
//!   Context: the same raw ping-pong relayed through threads and channels the way
//!   p2pchat's hooks make an application do it, which isolates p2pchat's own cost.
//! - One-way rate: A sends 1 KiB messages as fast as `send` returns; timed until B's
//!   hook has counted all of them. Baseline: one thread writing 1 KiB at a time on a
//!   loopback socket, another reading `read_exact` 1 KiB chunks (`TCP_NODELAY` on
//!   both, as p2pchat's chat sockets have).
//! - The registry's CPU while idle: after the runs, with both peers registered and the
//!   chat still open, windows of [`IDLE_WINDOW`] doing nothing; the CPU time of the registry's
//!   event-loop threads (`p2p-registry-N`, from `/proc/self/task`) in that window. An
//!   idle registry that uses CPU takes it from the peers on a small machine.

use crate::report::{Figure, Goal, Stats};
use crate::scratch::{self, TempDir};
use crate::sys;
use crate::{progress, Options, Outcome};
use p2pcore::peer::Chat;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RUNS: usize = 3;
pub(crate) const PING: usize = 64;
const BULK: usize = 1024;
/// Round trips before the timed ones of a run (connections and caches warm).
pub(crate) const WARMUP: usize = 100;
/// Goal: p2pchat's round trip is at most this multiple of the baseline's.
const GOAL_RTT_RATIO: f64 = 1.5;
/// Goal: one-way messages per second.
const GOAL_RATE: f64 = 100_000.0;
/// Any single wait longer than this means something is stuck.
const STEP_LIMIT: Duration = Duration::from_secs(5);
/// A whole one-way run longer than this failed.
const RATE_LIMIT: Duration = Duration::from_secs(60);
/// Goal: the idle registry uses less than this share of one core (percent).
const GOAL_REGISTRY_CPU: f64 = 5.0;
/// How long the idle registry is watched, per window.
const IDLE_WINDOW: Duration = Duration::from_secs(1);

pub fn run(opts: &Options) -> Result<Outcome, String> {
    let round_trips = if opts.quick { 500 } else { 2_000 };
    let messages: u64 = if opts.quick { 50_000 } else { 200_000 };

    let scratch = TempDir::new("t4")?;
    let (registry, reg_addr) = scratch::registry()?;
    let pair = ChatPair::open(&reg_addr, &scratch)?;

    let mut rtt = Vec::new();
    let mut rtt_base = Vec::new();
    let mut rtt_relayed = Vec::new();
    let mut rate = Vec::new();
    let mut rate_base = Vec::new();
    let result = (|| -> Result<(), String> {
        for run in 1..=RUNS {
            let ours = pair.round_trips(round_trips)?;
            let base = raw_ping_pong(round_trips)?;
            let relayed = relayed_ping_pong(round_trips)?;
            progress(&format!(
                "T4 run {run}/{RUNS} round trip: p2pchat p50 {:.1} us p99 {:.1} us, \
                 baseline p50 {:.1} us p99 {:.1} us, relayed baseline p50 {:.1} us",
                pct(&ours, 50.0),
                pct(&ours, 99.0),
                pct(&base, 50.0),
                pct(&base, 99.0),
                pct(&relayed, 50.0)
            ));
            rtt.push(ours);
            rtt_base.push(base);
            rtt_relayed.push(relayed);
        }
        for run in 1..=RUNS {
            let ours = messages as f64 / pair.one_way(messages)?;
            let base = messages as f64 / raw_stream(messages)?;
            progress(&format!(
                "T4 run {run}/{RUNS} one-way: p2pchat {ours:.0} msg/s, baseline {base:.0} msg/s"
            ));
            rate.push(ours);
            rate_base.push(base);
        }
        Ok(())
    })();
    // Windows of idleness, after the runs: the registry has been up for seconds by now.
    let registry_cpu: Option<Vec<(f64, usize)>> = if result.is_ok() {
        (0..RUNS)
            .map(|_| idle_cpu(&is_registry_loop, IDLE_WINDOW))
            .collect()
    } else {
        None
    };
    pair.close();
    registry.shutdown();
    drop(scratch);
    result?;

    let pcts =
        |runs: &[Vec<f64>], p: f64| Stats::of(&runs.iter().map(|r| pct(r, p)).collect::<Vec<_>>());
    let mut notes = Vec::new();
    let mut figures = vec![
        Figure::compared(
            "T4 chat round trip p50",
            "us",
            pcts(&rtt, 50.0),
            pcts(&rtt_base, 50.0),
        )
        .goal(Goal::RatioAtMost(GOAL_RTT_RATIO))
        .extra(format!(
            "{PING}-byte message A->B, echoed by B from a thread of its own; {round_trips} \
             round trips per run, {RUNS} runs; ratio = p2pchat/baseline, lower is better; \
             baseline: raw TCP ping-pong, TCP_NODELAY"
        )),
        Figure::compared(
            "T4 chat round trip p99",
            "us",
            pcts(&rtt, 99.0),
            pcts(&rtt_base, 99.0),
        ),
        Figure::compared(
            "T4 context: round trip p50 vs relayed TCP",
            "us",
            pcts(&rtt, 50.0),
            pcts(&rtt_relayed, 50.0),
        )
        .extra(
            "no goal: the raw ping-pong with the threads the hooks imply: a reader thread \
             per side handing each message over a channel, to the echo thread on B and the \
             waiting thread on A; this ratio is p2pchat's own cost (framing, hooks, locks)",
        ),
        Figure::compared(
            "T4 chat one-way rate",
            "msg/s",
            Stats::of(&rate),
            Stats::of(&rate_base),
        )
        .goal(Goal::AtLeast(GOAL_RATE))
        .extra(format!(
            "{messages} messages of {BULK} bytes per run, counted in B's hook, {RUNS} runs; \
             baseline: raw stream of {BULK}-byte writes, read_exact {BULK}-byte chunks"
        )),
    ];
    match registry_cpu {
        Some(windows) => figures.push(
            Figure::single(
                "T4 registry CPU while idle",
                "% core",
                Stats::of(&windows.iter().map(|w| w.0).collect::<Vec<_>>()),
            )
            .goal(Goal::Below(GOAL_REGISTRY_CPU))
            .extra(format!(
                "user + system time of the registry's {} event-loop threads in {RUNS} windows \
                 of {} s with 2 peers registered, a chat open and nothing asked; percent of \
                 one core",
                windows.first().map_or(0, |w| w.1),
                IDLE_WINDOW.as_secs()
            )),
        ),
        None => notes.push(
            "T4: the registry's threads (p2p-registry-N) were not found in /proc/self/task; \
             its CPU use is not reported"
                .to_string(),
        ),
    }
    Ok(Outcome { figures, notes })
}

/// Percent of one core the threads `pick` selects use over `window` (and how many
/// there are); `None` if there are none or `/proc` cannot be read.
fn idle_cpu(pick: &dyn Fn(&str) -> bool, window: Duration) -> Option<(f64, usize)> {
    let (before, _) = sys::threads_cpu(pick)?;
    let t = Instant::now();
    std::thread::sleep(window);
    let (after, n) = sys::threads_cpu(pick)?;
    (n > 0).then(|| ((after - before) / t.elapsed().as_secs_f64() * 100.0, n))
}

/// A registry event-loop thread (`p2p-registry-0`, …; not a peer's `p2p-registry-keeper`).
fn is_registry_loop(name: &str) -> bool {
    name.strip_prefix("p2p-registry-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The `p`th percentile of `samples` (µs), nearest rank.
pub(crate) fn pct(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Two peers with an accepted chat between them, and the threads around it.
struct ChatPair {
    a: p2pcore::peer::Peer,
    b: p2pcore::peer::Peer,
    chat_a: Chat,
    /// Messages arriving at A.
    at_a: mpsc::Receiver<String>,
    /// 1 KiB messages B's hook has counted, and how many make a run complete.
    counted: Arc<AtomicU64>,
    target: Arc<AtomicU64>,
    complete: mpsc::Receiver<()>,
    /// Stops the echo thread (`None`).
    echo: mpsc::Sender<Option<String>>,
    echo_thread: std::thread::JoinHandle<()>,
}

impl ChatPair {
    fn open(reg_addr: &str, scratch: &TempDir) -> Result<ChatPair, String> {
        let (a_tx, at_a) = mpsc::channel::<String>();
        let a = scratch::peer(reg_addr, "t4-a", &scratch.subdir("a")?)
            .on_chat_message(move |_, _, text| {
                let _ = a_tx.send(text.to_string());
            })
            .connect()
            .map_err(|e| format!("peer A: {e}"))?;

        let (chat_tx, chat_rx) = mpsc::channel::<Chat>();
        let (echo, echo_rx) = mpsc::channel::<Option<String>>();
        let (complete_tx, complete) = mpsc::channel::<()>();
        let counted = Arc::new(AtomicU64::new(0));
        let target = Arc::new(AtomicU64::new(u64::MAX));
        let hook_echo = echo.clone();
        let (hook_counted, hook_target) = (counted.clone(), target.clone());
        let b = scratch::peer(reg_addr, "t4-b", &scratch.subdir("b")?)
            .on_chat_request(move |req| {
                if let Ok(chat) = req.accept() {
                    let _ = chat_tx.send(chat);
                }
            })
            .on_chat_message(move |_, _, text| {
                if text.len() == BULK {
                    let n = hook_counted.fetch_add(1, Ordering::Relaxed) + 1;
                    if n == hook_target.load(Ordering::Relaxed) {
                        let _ = complete_tx.send(());
                    }
                } else {
                    let _ = hook_echo.send(Some(text.to_string()));
                }
            })
            .connect()
            .map_err(|e| format!("peer B: {e}"))?;

        let chat_a = a
            .chat(b.username())
            .map_err(|e| format!("chat A->B: {e}"))?;
        let chat_b = chat_rx
            .recv_timeout(STEP_LIMIT)
            .map_err(|_| "B's hook did not hand over the accepted chat".to_string())?;
        let echo_thread = std::thread::Builder::new()
            .name("t4-echo".into())
            .spawn(move || {
                while let Ok(Some(text)) = echo_rx.recv() {
                    if chat_b.send(&text).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| format!("spawn: {e}"))?;
        Ok(ChatPair {
            a,
            b,
            chat_a,
            at_a,
            counted,
            target,
            complete,
            echo,
            echo_thread,
        })
    }

    /// `n` timed round trips (after [`WARMUP`] untimed ones); each in µs.
    fn round_trips(&self, n: usize) -> Result<Vec<f64>, String> {
        let msg = "p".repeat(PING);
        let mut out = Vec::with_capacity(n);
        for i in 0..WARMUP + n {
            let t = Instant::now();
            self.chat_a.send(&msg).map_err(|e| format!("send: {e}"))?;
            let back = self
                .at_a
                .recv_timeout(STEP_LIMIT)
                .map_err(|_| format!("no echo within {} s", STEP_LIMIT.as_secs()))?;
            let us = t.elapsed().as_secs_f64() * 1e6;
            if back.len() != PING {
                return Err(format!("echo of {} bytes, expected {PING}", back.len()));
            }
            if i >= WARMUP {
                out.push(us);
            }
        }
        Ok(out)
    }

    /// Seconds to deliver `n` 1 KiB messages A→B, counted by B's hook.
    fn one_way(&self, n: u64) -> Result<f64, String> {
        let msg = "m".repeat(BULK);
        // Nothing may be left over from a previous run.
        while self.complete.try_recv().is_ok() {}
        self.counted.store(0, Ordering::SeqCst);
        self.target.store(n, Ordering::SeqCst);
        let t = Instant::now();
        for _ in 0..n {
            self.chat_a.send(&msg).map_err(|e| format!("send: {e}"))?;
            if t.elapsed() > RATE_LIMIT {
                return Err(format!("sending took over {} s", RATE_LIMIT.as_secs()));
            }
        }
        let left = RATE_LIMIT.saturating_sub(t.elapsed());
        self.complete.recv_timeout(left).map_err(|_| {
            format!(
                "B counted {} of {n} messages within {} s",
                self.counted.load(Ordering::SeqCst),
                RATE_LIMIT.as_secs()
            )
        })?;
        let secs = t.elapsed().as_secs_f64();
        self.target.store(u64::MAX, Ordering::SeqCst);
        Ok(secs)
    }

    fn close(self) {
        let _ = self.echo.send(None);
        let _ = self.echo_thread.join();
        self.chat_a.close();
        self.a.exit();
        self.b.exit();
    }
}

/// A connected loopback pair with `TCP_NODELAY` and I/O timeouts on both ends.
fn socket_pair() -> Result<(TcpStream, TcpStream), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let client =
        TcpStream::connect_timeout(&addr, STEP_LIMIT).map_err(|e| format!("connect: {e}"))?;
    let (server, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    for s in [&client, &server] {
        s.set_nodelay(true)
            .and_then(|()| s.set_read_timeout(Some(STEP_LIMIT)))
            .and_then(|()| s.set_write_timeout(Some(STEP_LIMIT)))
            .map_err(|e| format!("socket options: {e}"))?;
    }
    Ok((client, server))
}

/// Baseline round trips: `n` timed ping-pongs of [`PING`] bytes (after the warm-up),
/// each in µs.
pub(crate) fn raw_ping_pong(n: usize) -> Result<Vec<f64>, String> {
    let (mut client, mut server) = socket_pair()?;
    let echo = std::thread::Builder::new()
        .name("t4-baseline-echo".into())
        .spawn(move || {
            let mut buf = [0u8; PING];
            while server.read_exact(&mut buf).is_ok() {
                if server.write_all(&buf).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| format!("spawn: {e}"))?;
    let result = (|| {
        let msg = [b'p'; PING];
        let mut back = [0u8; PING];
        let mut out = Vec::with_capacity(n);
        for i in 0..WARMUP + n {
            let t = Instant::now();
            client.write_all(&msg).map_err(|e| format!("send: {e}"))?;
            client
                .read_exact(&mut back)
                .map_err(|e| format!("receive: {e}"))?;
            if i >= WARMUP {
                out.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        Ok(out)
    })();
    drop(client);
    let _ = echo.join();
    result
}

/// Context for the round trip: the raw ping-pong, but every message crosses threads
/// as it does through p2pchat's hooks: on each side a reader thread hands what it reads
/// over a channel, to an echo thread on the server side (which writes it back) and to
/// the timing thread on the client side. Each round trip in µs, after the warm-up.
fn relayed_ping_pong(n: usize) -> Result<Vec<f64>, String> {
    let (mut client, server) = socket_pair()?;
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| format!("spawn: {e}"))
    };
    /// Read `PING`-byte messages from `sock` and pass them on until the end of stream.
    fn relay(mut sock: TcpStream, to: mpsc::Sender<[u8; PING]>) {
        let mut buf = [0u8; PING];
        while sock.read_exact(&mut buf).is_ok() {
            if to.send(buf).is_err() {
                return;
            }
        }
    }
    let (echo_tx, echo_rx) = mpsc::channel::<[u8; PING]>();
    let (back_tx, back_rx) = mpsc::channel::<[u8; PING]>();
    let clone = |s: &TcpStream| s.try_clone().map_err(|e| format!("clone: {e}"));
    let (server_read, mut server_write, client_read) =
        (clone(&server)?, clone(&server)?, clone(&client)?);
    drop(server);
    let threads = [
        spawn(
            "t4-relay-b-read",
            Box::new(move || relay(server_read, echo_tx)),
        )?,
        spawn(
            "t4-relay-b-echo",
            Box::new(move || {
                while let Ok(msg) = echo_rx.recv() {
                    if server_write.write_all(&msg).is_err() {
                        return;
                    }
                }
            }),
        )?,
        spawn(
            "t4-relay-a-read",
            Box::new(move || relay(client_read, back_tx)),
        )?,
    ];
    let result = (|| {
        let msg = [b'p'; PING];
        let mut out = Vec::with_capacity(n);
        for i in 0..WARMUP + n {
            let t = Instant::now();
            client.write_all(&msg).map_err(|e| format!("send: {e}"))?;
            back_rx
                .recv_timeout(STEP_LIMIT)
                .map_err(|_| format!("no echo within {} s", STEP_LIMIT.as_secs()))?;
            if i >= WARMUP {
                out.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        Ok(out)
    })();
    // Both directions end: every reader sees the end of stream, the echo thread its
    // channel close.
    let _ = client.shutdown(std::net::Shutdown::Both);
    drop(client);
    for t in threads {
        let _ = t.join();
    }
    result
}

/// Baseline one-way: seconds for `n` writes of [`BULK`] bytes to be read.
fn raw_stream(n: u64) -> Result<f64, String> {
    let (mut client, mut server) = socket_pair()?;
    let t = Instant::now();
    let reader = std::thread::Builder::new()
        .name("t4-baseline-read".into())
        .spawn(move || -> Result<f64, String> {
            let mut buf = [0u8; BULK];
            for _ in 0..n {
                server
                    .read_exact(&mut buf)
                    .map_err(|e| format!("receive: {e}"))?;
            }
            Ok(t.elapsed().as_secs_f64())
        })
        .map_err(|e| format!("spawn: {e}"))?;
    let msg = [b'm'; BULK];
    let mut sent = Ok(());
    for _ in 0..n {
        if let Err(e) = client.write_all(&msg) {
            sent = Err(format!("send: {e}"));
            break;
        }
    }
    let secs = reader
        .join()
        .map_err(|_| "baseline reader panicked".to_string())?;
    sent?;
    secs
}
