//! p2pchat-bench: the registry and the peer under load, against trivial baselines. One
//! module per scenario; each returns [`report::Figure`]s, printed as one table (or, with
//! `--json`, one JSON document on stdout). Progress goes to stderr.
//!
//! Scenarios: T1 (a download between two peers), T2 (registry lookups, sessions), T2b
//! (legacy one-shot lookups), T3 (scale: 10,000 sessions, 100,000 users, `GET_AF`), T4
//! (chat round trip and one-way rate), T5 (hashing a share, and the cached rescan), T6
//! (registry lookups under attack), T7 (the secure link by itself: AEAD speed, an
//! encrypted copy, handshakes per second, an encrypted round trip), T8 (the relay: a
//! relayed transfer next to a direct one, CPU per GB, memory per circuit), T9 (registry
//! nodes on one Redis next to one in-memory node). A new scenario is a
//! module and a line in [`SCENARIOS`].

mod baseline;
mod load;
mod redis;
mod report;
mod scratch;
mod setup;
mod sys;
mod t1;
mod t2;
mod t2b;
mod t3;
mod t4;
mod t5;
mod t6;
mod t7;
mod t8;
mod t9;

use report::Figure;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// What the command line asked for, and the run lengths that follow from it.
#[derive(Debug, Clone)]
pub struct Options {
    pub json: bool,
    pub quick: bool,
    /// Scenario ids to run (upper-cased); `None` runs every one.
    pub only: Option<Vec<String>>,
    /// Size of the downloaded file (T1) and of the hashed share (T5), in MiB.
    pub size_mib: u64,
    /// Closed-loop duration of one run (T2, T2b).
    pub duration: Duration,
    /// Runs per figure (T2, T2b); the figure is their median.
    pub runs: usize,
    /// `GET_AF` repetitions (T3).
    pub af_runs: usize,
}

/// What a scenario hands back.
pub struct Outcome {
    pub figures: Vec<Figure>,
    /// Caveats that are not one figure's (limits that could not be raised, …).
    pub notes: Vec<String>,
}

struct Scenario {
    id: &'static str,
    title: &'static str,
    run: fn(&Options) -> Result<Outcome, String>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        id: "T1",
        title: "download between two peers on 127.0.0.1",
        run: t1::run,
    },
    Scenario {
        id: "T2",
        title: "registry lookups, persistent session connections",
        run: t2::run,
    },
    Scenario {
        id: "T2b",
        title: "registry lookups, legacy one connection per query",
        run: t2b::run,
    },
    Scenario {
        id: "T3",
        title: "registry at scale: 10,000 sessions, 100,000 users, GET_AF",
        run: t3::run,
    },
    Scenario {
        id: "T4",
        title: "chat between two peers: round trip and one-way rate",
        run: t4::run,
    },
    Scenario {
        id: "T5",
        title: "share hashing: first scan and cached rescan",
        run: t5::run,
    },
    Scenario {
        id: "T6",
        title: "registry lookups under attack: slow GET_AF readers and a flooding address",
        run: t6::run,
    },
    Scenario {
        id: "T7",
        title: "secure link: AEAD speed, encrypted copy, handshakes, encrypted round trip",
        run: t7::run,
    },
    Scenario {
        id: "T8",
        title:
            "relay: a relayed 256 MiB transfer next to a direct one, CPU per GB, memory per circuit",
        run: t8::run,
    },
    Scenario {
        id: "T9",
        title: "registry on Redis: GET_P over 2 nodes vs 1 in-memory node, INIT/s, memory",
        run: t9::run,
    },
];

/// `--size-mib` when not given.
const DEFAULT_SIZE_MIB: u64 = 1024;
const QUICK_SIZE_MIB: u64 = 256;

const USAGE: &str = "\
p2pchat-bench: benchmarks of the p2pchat registry and peer against trivial baselines

usage: p2pchat-bench [--quick] [--json] [--only T1,T2,...] [--size-mib N]

  --quick        short runs (3 s per run instead of 10 s, fewer messages, 256 MiB);
                 whole run under 2 minutes
  --json         print the figures as a JSON document on stdout (progress on stderr)
  --only LIST    run only these scenarios (comma-separated ids, any case)
  --size-mib N   size of T1's downloaded file and of T5's share (default 1024,
                 256 with --quick)
  --help         this text

scenarios:
";

fn usage() -> String {
    let mut s = USAGE.to_string();
    for sc in SCENARIOS {
        s.push_str(&format!("  {:<5} {}\n", sc.id, sc.title));
    }
    s
}

/// Parse the command line (without the program name). `Ok(None)` means `--help`.
fn parse_args(args: &[String]) -> Result<Option<Options>, String> {
    let mut json = false;
    let mut quick = false;
    let mut only = None;
    let mut size_mib = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or(format!("{name} needs a value"))
        };
        match flag {
            "--help" | "-h" => return Ok(None),
            "--json" => json = true,
            "--quick" => quick = true,
            "--only" => {
                let list: Vec<String> = value("--only")?
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if list.is_empty() {
                    return Err("--only needs at least one scenario id".into());
                }
                for id in &list {
                    if !SCENARIOS.iter().any(|s| s.id.eq_ignore_ascii_case(id)) {
                        return Err(format!("unknown scenario {id:?}"));
                    }
                }
                only = Some(list);
            }
            "--size-mib" => {
                let v = value("--size-mib")?;
                size_mib = Some(
                    v.parse::<u64>()
                        .ok()
                        .filter(|n| (1..=1 << 20).contains(n))
                        .ok_or(format!("--size-mib: expected a number of MiB, got {v:?}"))?,
                );
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(Options {
        json,
        quick,
        only,
        size_mib: size_mib.unwrap_or(if quick {
            QUICK_SIZE_MIB
        } else {
            DEFAULT_SIZE_MIB
        }),
        duration: Duration::from_secs(if quick { 3 } else { 10 }),
        runs: 3,
        af_runs: if quick { 3 } else { 5 },
    }))
}

impl Options {
    fn selected(&self, id: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|l| l.iter().any(|x| x.eq_ignore_ascii_case(id)))
    }
}

/// A progress line on stderr (stdout is kept for the results).
pub fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// The watchdog's limit: 180 s with `--quick`, 460 s otherwise, plus time for a
/// `--size-mib` beyond the default (T1 syncs the download to disk, which may manage
/// only some tens of MB/s).
fn watchdog_limit(opts: &Options) -> Duration {
    let base = if opts.quick { 180 } else { 460 };
    let default = if opts.quick {
        QUICK_SIZE_MIB
    } else {
        DEFAULT_SIZE_MIB
    };
    // T1: three downloads and a copy per run, at 20 MB/s or so: ~0.2 s per MiB; T7: nine
    // copies in memory, at 150 MB/s or more: ~0.05 s per MiB.
    Duration::from_secs(base + opts.size_mib.saturating_sub(default) / 4)
}

/// Kill the run if it overstays its budget by far: every scenario bounds itself, this
/// is the net under them.
fn watchdog(limit: Duration) {
    let _ = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit);
            eprintln!(
                "[bench] giving up: the run took longer than {} s",
                limit.as_secs()
            );
            std::process::exit(3);
        });
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Internal: T3 runs this binary again to hold the client ends of its sessions.
    if args.first().map(String::as_str) == Some(t3::HOLD_FLAG) {
        return t3::hold_sessions(&args[1..]);
    }
    let opts = match parse_args(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("p2pchat-bench: {e}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    watchdog(watchdog_limit(&opts));

    let started = Instant::now();
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    let mut failed = false;
    for sc in SCENARIOS.iter().filter(|s| opts.selected(s.id)) {
        progress(&format!("{}: {}", sc.id, sc.title));
        let t = Instant::now();
        match (sc.run)(&opts) {
            Ok(out) => {
                figures.extend(out.figures);
                notes.extend(out.notes);
            }
            Err(e) => {
                failed = true;
                notes.push(format!("{} FAILED: {e}", sc.id));
            }
        }
        progress(&format!(
            "{} done in {:.1} s",
            sc.id,
            t.elapsed().as_secs_f64()
        ));
    }
    let total = started.elapsed().as_secs_f64();

    let missed: Vec<&str> = figures
        .iter()
        .filter(|f| f.goal_met() == Some(false))
        .map(|f| f.name.as_str())
        .collect();
    if opts.json {
        let settings = [
            ("quick", opts.quick.to_string()),
            ("run_seconds", report::json_num(opts.duration.as_secs_f64())),
            ("runs", opts.runs.to_string()),
            ("get_af_runs", opts.af_runs.to_string()),
            ("size_mib", opts.size_mib.to_string()),
            ("total_seconds", report::json_num(total)),
        ];
        print!("{}", report::json(&figures, &notes, &settings));
    } else {
        println!(
            "p2pchat-bench{}: {} s per run, medians of {} runs ({} for GET_AF); \
             {} MiB for T1/T5; total {:.0} s",
            if opts.quick { " --quick" } else { "" },
            opts.duration.as_secs(),
            opts.runs,
            opts.af_runs,
            opts.size_mib,
            total
        );
        println!();
        print!("{}", report::table(&figures));
        for n in &notes {
            println!("note: {n}");
        }
        if missed.is_empty() {
            println!("all goals met");
        } else {
            println!("goals missed: {}", missed.join(", "));
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags() {
        let o = parse_args(&args(&["--quick", "--only", "t2,T2b", "--json"]))
            .unwrap()
            .unwrap();
        assert!(o.quick && o.json);
        assert_eq!(o.duration, Duration::from_secs(3));
        assert!(o.selected("T2") && o.selected("T2B") && !o.selected("T3"));
        assert_eq!(o.size_mib, QUICK_SIZE_MIB);
        let o = parse_args(&args(&["--size-mib=8"])).unwrap().unwrap();
        assert_eq!(o.size_mib, 8);
        assert!(o.selected("T3"));
        let o = parse_args(&args(&["--only", "t1,t4,T5"])).unwrap().unwrap();
        assert_eq!(o.size_mib, DEFAULT_SIZE_MIB);
        assert!(o.selected("T1") && o.selected("T4") && o.selected("T5") && !o.selected("T2"));
        let o = parse_args(&args(&["--only=t7", "--quick"]))
            .unwrap()
            .unwrap();
        assert!(o.selected("T7") && !o.selected("T1"));
        assert!(parse_args(&args(&["--help"])).unwrap().is_none());
        assert!(parse_args(&args(&["--only", "T99"])).is_err());
        assert!(parse_args(&args(&["--size-mib", "x"])).is_err());
        assert!(parse_args(&args(&["--bogus"])).is_err());
        assert!(parse_args(&args(&["--only"])).is_err());
    }
}
