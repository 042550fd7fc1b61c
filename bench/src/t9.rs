//! T9 — registry nodes on one Redis (`--store redis://…`) next to one in-memory node.
//!
//! A `redis-server` of the bench's own (persistence off), two registry nodes on it and
//! one in-memory registry, all in this process. 10,000 users are registered through
//! node A (timed: registrations per second through Redis; the same on the in-memory
//! node), node B must see them all, then 50 client threads with persistent connections
//! send `GET_P` closed loop: 25 to each Redis node at once, and, interleaved, 50 to the
//! in-memory node. Redis's `used_memory` before and after the registrations gives the
//! memory per user. Skipped (with a note) where `redis-server` is not installed.

use crate::load::{closed_loop, Mode, RunResult};
use crate::redis::RedisServer;
use crate::report::{Figure, Stats};
use crate::{progress, Options, Outcome};
use p2pcore::registry::{Registry, RegistryConfig, StoreSpec};
use std::time::{Duration, Instant};

const USERS: usize = 10_000;
const THREADS: usize = 50;
const LOADERS: usize = 4;

fn init_line(u: usize) -> String {
    format!("INIT,user{u:05},{},f1.txt,notes-{u}.md\n", 10_000 + u)
}

/// Registers [`USERS`] through `registry`; the open sessions and the registrations/s.
fn fill(registry: &Registry) -> Result<(Vec<std::net::TcpStream>, f64), String> {
    let t = Instant::now();
    let sessions = crate::setup::open_sessions(
        registry.local_addr(),
        LOADERS,
        USERS / LOADERS,
        LOADERS,
        &init_line,
    )?;
    Ok((sessions, USERS as f64 / t.elapsed().as_secs_f64()))
}

pub fn run(opts: &Options) -> Result<Outcome, String> {
    let Some(redis) = RedisServer::start()? else {
        return Ok(Outcome {
            figures: Vec::new(),
            notes: vec!["T9 skipped: redis-server is not installed".into()],
        });
    };
    // Nodes of one network serve with one registry key (the store refuses others).
    let key = p2pcore::identity::Identity::generate().map_err(|e| format!("key: {e}"))?;
    let config = |store| RegistryConfig {
        store,
        identity: Some(key.clone()),
        ..crate::scratch::one_address_config()
    };
    let bind = |store| {
        Registry::builder()
            .config(config(store))
            .bind("127.0.0.1:0")
            .map_err(|e| format!("registry bind: {e}"))
    };
    let memory = bind(StoreSpec::Memory)?;
    let a = bind(StoreSpec::Redis(redis.url()))?;
    let b = bind(StoreSpec::Redis(redis.url()))?;
    let before = redis.used_memory()?;
    let (_mem_sessions, mem_rate) = fill(&memory)?;
    let (_redis_sessions, redis_rate) = fill(&a)?;
    let t = Instant::now();
    while b.user_count() < USERS {
        if t.elapsed() > Duration::from_secs(30) {
            return Err(format!("node B sees {} of {USERS} users", b.user_count()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let seen_after = t.elapsed();
    let per_user = (redis.used_memory()?.saturating_sub(before)) as f64 / USERS as f64;
    progress(&format!(
        "T9: {USERS} users: {mem_rate:.0}/s in memory, {redis_rate:.0}/s through Redis \
         (all on node B {:.0} ms after the last), Redis {per_user:.0} bytes per user",
        seen_after.as_secs_f64() * 1000.0
    ));
    let mut ours: Vec<RunResult> = Vec::new();
    let mut theirs: Vec<RunResult> = Vec::new();
    for run in 1..=opts.runs {
        let (ra, rb) = std::thread::scope(|s| {
            let ja = s.spawn(|| {
                closed_loop(
                    a.local_addr(),
                    Mode::Session,
                    THREADS / 2,
                    USERS,
                    opts.duration,
                )
            });
            let jb = s.spawn(|| {
                closed_loop(
                    b.local_addr(),
                    Mode::Session,
                    THREADS / 2,
                    USERS,
                    opts.duration,
                )
            });
            (ja.join(), jb.join())
        });
        let r = match (ra, rb) {
            (Ok(Ok(ra)), Ok(Ok(rb))) => ra.merge(rb),
            (Ok(Err(e)), _) | (_, Ok(Err(e))) => return Err(e),
            _ => return Err("a load thread panicked".into()),
        };
        let m = closed_loop(
            memory.local_addr(),
            Mode::Session,
            THREADS,
            USERS,
            opts.duration,
        )?;
        for (label, r) in [("2 Redis nodes", &r), ("1 memory node", &m)] {
            progress(&format!(
                "T9 run {run}/{} {label}: {:.0} q/s, p99 {:.1} us, {} errors",
                opts.runs,
                r.per_second(),
                r.percentile_us(99.0),
                r.errors
            ));
        }
        ours.push(r);
        theirs.push(m);
    }
    let stats = |runs: &[RunResult], f: &dyn Fn(&RunResult) -> f64| {
        Stats::of(&runs.iter().map(f).collect::<Vec<_>>())
    };
    let errors: u64 = ours.iter().chain(&theirs).map(|r| r.errors).sum();
    let context = format!(
        "{THREADS} threads (25 per Redis node), {USERS} users, {} x {} s; baseline: one \
         in-memory node, same run; errors {errors}",
        opts.runs,
        opts.duration.as_secs_f64()
    );
    let figures = vec![
        Figure::compared(
            "T9 GET_P throughput, 2 nodes on Redis",
            "q/s",
            stats(&ours, &|r| r.per_second()),
            stats(&theirs, &|r| r.per_second()),
        )
        .extra(context),
        Figure::compared(
            "T9 GET_P latency p99, 2 nodes on Redis",
            "us",
            stats(&ours, &|r| r.percentile_us(99.0)),
            stats(&theirs, &|r| r.percentile_us(99.0)),
        ),
        Figure::compared(
            "T9 registrations through Redis",
            "/s",
            Stats::of(&[redis_rate]),
            Stats::of(&[mem_rate]),
        )
        .extra(format!("{USERS} INITs pipelined on {LOADERS} sessions")),
        Figure::single("T9 Redis memory per user", "bytes", Stats::of(&[per_user]))
            .extra("INFO used_memory growth / users (hash, index, change-log entry)"),
    ];
    Ok(Outcome {
        figures,
        notes: Vec::new(),
    })
}
