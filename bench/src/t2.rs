//! T2 — registry lookups on session connections.
//!
//! 10,000 users registered (over a few session connections that stay open), then 50
//! client threads, each with one persistent connection, send `GET_P,<random user>\n`
//! and wait for the `\n`-terminated answer, closed loop. Baseline: the same load against
//! a thread-per-connection server that answers every line with a fixed string.
//!
//! T2b (legacy, one connection per query) shares this code; see [`crate::t2b`].

use crate::baseline::{Style, TrivialServer};
use crate::load::{closed_loop, Mode, RunResult};
use crate::report::{Figure, Goal, Stats};
use crate::{progress, Options, Outcome};
use p2pcore::registry::Registry;

/// Users registered before the load starts.
pub const USERS: usize = 10_000;
/// Client threads of the load.
pub const THREADS: usize = 50;
/// Session connections the users are registered over (kept open during the run).
const LOADERS: usize = 4;
/// Goal: the registry serves at least this fraction of the baseline's queries/s.
const GOAL_RATIO: f64 = 0.8;

pub fn run(opts: &Options) -> Result<Outcome, String> {
    lookups(opts, "T2", Mode::Session, Style::Lines)
}

/// Fill a registry, then alternate runs against it and against the baseline.
pub(crate) fn lookups(
    opts: &Options,
    id: &str,
    mode: Mode,
    style: Style,
) -> Result<Outcome, String> {
    let registry = Registry::builder()
        .config(crate::scratch::one_address_config())
        .bind("127.0.0.1:0")
        .map_err(|e| format!("registry bind: {e}"))?;
    let addr = registry.local_addr();
    let t = std::time::Instant::now();
    let sessions = crate::setup::open_sessions(addr, LOADERS, USERS / LOADERS, LOADERS, &|u| {
        format!("INIT,user{u:05},{},f1.txt\n", 10_000 + u)
    })?;
    if registry.user_count() != USERS {
        return Err(format!(
            "{} users registered, expected {USERS}",
            registry.user_count()
        ));
    }
    progress(&format!(
        "{id}: {USERS} users registered in {:.2} s",
        t.elapsed().as_secs_f64()
    ));
    let baseline = TrivialServer::start(style).map_err(|e| format!("baseline server: {e}"))?;

    let mut ours: Vec<RunResult> = Vec::new();
    let mut theirs: Vec<RunResult> = Vec::new();
    // Interleaved, so a drift of the machine (another job, thermal) hits both alike.
    for run in 1..=opts.runs {
        for (label, target, into) in [
            ("p2pchat", addr, &mut ours),
            ("baseline", baseline.addr(), &mut theirs),
        ] {
            let r = closed_loop(target, mode, THREADS, USERS, opts.duration)?;
            progress(&format!(
                "{id} run {run}/{} {label}: {:.0} q/s, p50 {:.1} us, p99 {:.1} us, {} errors{}",
                opts.runs,
                r.per_second(),
                r.percentile_us(50.0),
                r.percentile_us(99.0),
                r.errors,
                r.first_error
                    .as_deref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default(),
            ));
            into.push(r);
        }
    }
    baseline.stop();
    drop(sessions);
    registry.shutdown();

    let stats = |runs: &[RunResult], f: &dyn Fn(&RunResult) -> f64| {
        Stats::of(&runs.iter().map(f).collect::<Vec<_>>())
    };
    let errors = |runs: &[RunResult]| runs.iter().map(|r| r.errors).sum::<u64>();
    let first_error = ours
        .iter()
        .chain(&theirs)
        .find_map(|r| r.first_error.clone());
    let load = match mode {
        Mode::Session => "persistent connections",
        Mode::Legacy => "one connection per query",
        Mode::Redis => "redis GET, persistent connections",
    };
    let mut context = format!(
        "{THREADS} threads, {load}, {USERS} users, {} x {} s; errors p2pchat {} / baseline {}",
        opts.runs,
        opts.duration.as_secs_f64(),
        errors(&ours),
        errors(&theirs)
    );
    if let Some(e) = first_error {
        context.push_str(&format!("; first error: {e}"));
    }
    let per_s: &dyn Fn(&RunResult) -> f64 = &|r| r.per_second();
    let p50: &dyn Fn(&RunResult) -> f64 = &|r| r.percentile_us(50.0);
    let p99: &dyn Fn(&RunResult) -> f64 = &|r| r.percentile_us(99.0);
    let figures = vec![
        Figure::compared(
            format!("{id} GET_P throughput"),
            "q/s",
            stats(&ours, per_s),
            stats(&theirs, per_s),
        )
        .goal(Goal::RatioAtLeast(GOAL_RATIO))
        .extra(context),
        Figure::compared(
            format!("{id} GET_P latency p50"),
            "us",
            stats(&ours, p50),
            stats(&theirs, p50),
        ),
        Figure::compared(
            format!("{id} GET_P latency p99"),
            "us",
            stats(&ours, p99),
            stats(&theirs, p99),
        ),
    ];
    Ok(Outcome {
        figures,
        notes: Vec::new(),
    })
}
