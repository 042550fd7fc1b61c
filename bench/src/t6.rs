//! T6 — registry lookups under attack.
//!
//! The registry with its hostile-network bounds in force (the defaults, except that the
//! 10,000 users of the fill, all registered from 127.0.0.1, may exceed the
//! per-address registration cap). 50 honest clients, each on its own loopback address
//! (127.0.1.1 … 127.0.1.50) with one persistent session, send `GET_P,<random user>\n`
//! in a closed loop, as in T2. Each run is measured twice, alternately: without attack,
//! and while
//!
//! * 500 slow readers (from 127.0.2.1 … 127.0.2.10, 50 each) have each sent `GET_AF`
//!   four times and never read, and
//! * one flooding address (127.0.0.3) pipelines `GET_P` batches as fast as the registry
//!   takes them on 4 connections (reading the answers) and holds 300 more connections
//!   (past its per-address cap of 256).
//!
//! The figure is honest throughput under attack against the same load without it
//! (ratio), with p50 and p99; and what the attack got: the flood's answered queries per
//! second (the per-address rate), the connections refused, the process's RSS rise.

use crate::load::{closed_loop_from, connect, Mode, RunResult};
use crate::report::{Figure, Goal, Stats};
use crate::{progress, sys, Options, Outcome};
use p2pcore::registry::{Registry, RegistryConfig};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const USERS: usize = 10_000;
const HONEST: usize = 50;
const SLOW_READERS: usize = 500;
const FLOOD_SESSIONS: usize = 4;
const FLOOD_HELD: usize = 300;
/// Goal: honest throughput under attack at least this fraction of it without.
const GOAL_RATIO: f64 = 0.8;

fn honest_ip(t: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + t as u8))
}

pub fn run(opts: &Options) -> Result<Outcome, String> {
    let mut notes = Vec::new();
    let want = 4 * (SLOW_READERS + FLOOD_SESSIONS + FLOOD_HELD + HONEST) as u64 + 256;
    let lim = sys::raise_nofile(want)?;
    if lim.soft < want {
        return Err(format!(
            "T6 needs {want} descriptors, the limit is {}",
            lim.soft
        ));
    }
    let registry = Registry::builder()
        .config(RegistryConfig {
            max_users_per_addr: USERS,
            ..RegistryConfig::default()
        })
        .bind("127.0.0.1:0")
        .map_err(|e| format!("registry bind: {e}"))?;
    let addr = registry.local_addr();
    let t = Instant::now();
    let sessions = crate::setup::open_sessions(addr, 4, USERS / 4, 4, &|u| {
        format!("INIT,user{u:05},{},f1.txt\n", 10_000 + u)
    })?;
    if registry.user_count() != USERS {
        return Err(format!("T6: {} users registered", registry.user_count()));
    }
    progress(&format!(
        "T6: {USERS} users registered in {:.2} s (per-address query rate applies)",
        t.elapsed().as_secs_f64()
    ));

    let mut quiet: Vec<RunResult> = Vec::new();
    let mut attacked: Vec<RunResult> = Vec::new();
    let mut flood_rates = Vec::new();
    let mut rss_rises = Vec::new();
    let mut refused_total = 0;
    for run in 1..=opts.runs {
        let q = closed_loop_from(
            addr,
            Mode::Session,
            HONEST,
            USERS,
            opts.duration,
            Some(honest_ip),
        )?;
        report_run("T6", run, opts.runs, "no attack", &q);
        quiet.push(q);

        let rss_before = sys::rss().unwrap_or(0);
        let sampler = sys::RssSampler::start();
        let attack = Attack::start(addr)?;
        std::thread::sleep(Duration::from_millis(500));
        let a = closed_loop_from(
            addr,
            Mode::Session,
            HONEST,
            USERS,
            opts.duration,
            Some(honest_ip),
        )?;
        let outcome = attack.stop();
        let peak = sampler.finish();
        report_run("T6", run, opts.runs, "under attack", &a);
        progress(&format!(
            "T6 run {run}: flood answered {:.0} q/s; {} of {FLOOD_HELD} held connections refused; \
             {} slow readers; RSS rise {:.1} MB",
            outcome.flood_per_s,
            outcome.refused,
            outcome.slow_readers,
            peak.saturating_sub(rss_before) as f64 / 1e6
        ));
        refused_total = outcome.refused;
        flood_rates.push(outcome.flood_per_s);
        rss_rises.push(peak.saturating_sub(rss_before) as f64 / 1e6);
        attacked.push(a);
    }
    drop(sessions);
    registry.shutdown();

    // The reference: redis-server answering the same lookups from the same 50 addresses.
    let mut redis_runs: Vec<RunResult> = Vec::new();
    match crate::redis::RedisServer::start()? {
        None => notes.push("T6: redis-server is not installed; no redis reference".into()),
        Some(redis) => {
            redis.fill(USERS)?;
            for run in 1..=opts.runs {
                let r = closed_loop_from(
                    redis.addr(),
                    Mode::Redis,
                    HONEST,
                    USERS,
                    opts.duration,
                    Some(honest_ip),
                )?;
                report_run("T6", run, opts.runs, "redis-server GET", &r);
                redis_runs.push(r);
            }
        }
    }

    let stats = |runs: &[RunResult], f: &dyn Fn(&RunResult) -> f64| {
        Stats::of(&runs.iter().map(f).collect::<Vec<_>>())
    };
    let errors = |runs: &[RunResult]| runs.iter().map(|r| r.errors).sum::<u64>();
    let first_error = attacked
        .iter()
        .chain(&quiet)
        .find_map(|r| r.first_error.clone());
    let mut context = format!(
        "baseline = same load without attack; {HONEST} honest clients on 50 addresses; attack: \
         {SLOW_READERS} slow GET_AF readers + 1 address flooding on {FLOOD_SESSIONS} sessions \
         and holding {FLOOD_HELD} connections; errors under attack {} / without {}",
        errors(&attacked),
        errors(&quiet)
    );
    if let Some(e) = first_error {
        context.push_str(&format!("; first error: {e}"));
    }
    let per_s: &dyn Fn(&RunResult) -> f64 = &|r| r.per_second();
    let p50: &dyn Fn(&RunResult) -> f64 = &|r| r.percentile_us(50.0);
    let p99: &dyn Fn(&RunResult) -> f64 = &|r| r.percentile_us(99.0);
    notes.push(format!(
        "T6: the flooding address held {FLOOD_HELD} connections; {refused_total} were refused \
         with ERR,Too many connections from your address (cap 256, its 4 flood sessions count)"
    ));
    let mut figures = vec![
        Figure::compared(
            "T6 GET_P throughput under attack",
            "q/s",
            stats(&attacked, per_s),
            stats(&quiet, per_s),
        )
        .goal(Goal::RatioAtLeast(GOAL_RATIO))
        .extra(context),
        Figure::compared(
            "T6 GET_P latency p50 under attack",
            "us",
            stats(&attacked, p50),
            stats(&quiet, p50),
        ),
        Figure::compared(
            "T6 GET_P latency p99 under attack",
            "us",
            stats(&attacked, p99),
            stats(&quiet, p99),
        ),
        Figure::single(
            "T6 flood answered (one address)",
            "q/s",
            Stats::of(&flood_rates),
        )
        .extra("the per-address rate: 2,000 q/s, bursts of 4,000"),
        Figure::single(
            "T6 process RSS rise under attack",
            "MB",
            Stats::of(&rss_rises),
        )
        .extra("bench process (registry + every client), peak during the attacked run"),
    ];
    if !redis_runs.is_empty() {
        let redis_note = "baseline = redis-server GET of the same 10,000 keys, same 50 \
                          clients and addresses, no attack";
        figures.push(
            Figure::compared(
                "T6 GET_P throughput vs redis (no attack)",
                "q/s",
                stats(&quiet, per_s),
                stats(&redis_runs, per_s),
            )
            .goal(Goal::RatioAtLeast(1.0))
            .extra(redis_note),
        );
        figures.push(
            Figure::compared(
                "T6 GET_P throughput under attack vs redis",
                "q/s",
                stats(&attacked, per_s),
                stats(&redis_runs, per_s),
            )
            .goal(Goal::RatioAtLeast(GOAL_RATIO)),
        );
        figures.push(Figure::compared(
            "T6 GET_P latency p99 vs redis (no attack)",
            "us",
            stats(&quiet, p99),
            stats(&redis_runs, p99),
        ));
    }
    Ok(Outcome { figures, notes })
}

fn report_run(id: &str, run: usize, runs: usize, label: &str, r: &RunResult) {
    progress(&format!(
        "{id} run {run}/{runs} {label}: {:.0} q/s, p50 {:.1} us, p99 {:.1} us, {} errors{}",
        r.per_second(),
        r.percentile_us(50.0),
        r.percentile_us(99.0),
        r.errors,
        r.first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
    ));
}

/// The attack of one run; every socket and thread is closed and joined by `stop` (or
/// on drop).
struct Attack {
    slow: Vec<TcpStream>,
    held: Vec<TcpStream>,
    flood: Vec<TcpStream>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    started: Instant,
}

struct AttackOutcome {
    flood_per_s: f64,
    refused: usize,
    slow_readers: usize,
}

impl Attack {
    fn start(addr: SocketAddr) -> Result<Attack, String> {
        let flooder = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
        let mut attack = Attack {
            slow: Vec::with_capacity(SLOW_READERS),
            held: Vec::with_capacity(FLOOD_HELD),
            flood: Vec::new(),
            threads: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            answered: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
        };
        for i in 0..SLOW_READERS {
            let from = IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1 + (i / 50) as u8));
            let mut s = connect(addr, Some(from)).map_err(|e| format!("slow reader: {e}"))?;
            s.write_all(b"GET_AF\nGET_AF\nGET_AF\nGET_AF\n")
                .map_err(|e| format!("slow reader: {e}"))?;
            attack.slow.push(s);
        }
        for _ in 0..FLOOD_SESSIONS {
            let s = connect(addr, Some(flooder)).map_err(|e| format!("flood: {e}"))?;
            s.set_nodelay(true).map_err(|e| format!("flood: {e}"))?;
            let mut w = s.try_clone().map_err(|e| format!("flood: {e}"))?;
            let r = s.try_clone().map_err(|e| format!("flood: {e}"))?;
            attack.flood.push(s);
            let stop = attack.stop.clone();
            attack.threads.push(std::thread::spawn(move || {
                let batch = "GET_P,user00001\n".repeat(256);
                while !stop.load(Ordering::Relaxed) {
                    if w.write_all(batch.as_bytes()).is_err() {
                        break;
                    }
                }
            }));
            let answered = attack.answered.clone();
            attack.threads.push(std::thread::spawn(move || {
                let mut lines = BufReader::new(r);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match lines.read_until(b'\n', &mut line) {
                        Ok(n) if n > 0 => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => break,
                    }
                }
            }));
        }
        for _ in 0..FLOOD_HELD {
            match connect(addr, Some(flooder)) {
                Ok(s) => attack.held.push(s),
                Err(e) => return Err(format!("held connection: {e}")),
            }
        }
        attack.started = Instant::now();
        attack.answered.store(0, Ordering::Relaxed);
        Ok(attack)
    }

    fn stop(mut self) -> AttackOutcome {
        let secs = self.started.elapsed().as_secs_f64();
        let answered = self.answered.load(Ordering::Relaxed);
        let mut refused = 0;
        for s in &self.held {
            let _ = s.set_nonblocking(true);
            let mut buf = [0u8; 128];
            if let Ok(n) = (&*s).read(&mut buf) {
                if buf[..n].starts_with(b"ERR,Too many connections") {
                    refused += 1;
                }
            }
        }
        let slow_readers = self.slow.len();
        self.shut();
        AttackOutcome {
            flood_per_s: answered as f64 / secs,
            refused,
            slow_readers,
        }
    }

    fn shut(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in self.flood.iter().chain(&self.slow).chain(&self.held) {
            let _ = s.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.slow.clear();
        self.held.clear();
        self.flood.clear();
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.shut();
    }
}
