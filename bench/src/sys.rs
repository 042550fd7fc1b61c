//! The little OS plumbing the scenarios need: file-descriptor limits and this process's
//! memory as Linux reports it in `/proc/self/status`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The outcome of [`raise_nofile`].
#[derive(Debug, Clone, Copy)]
pub struct NofileLimit {
    /// The soft limit in force afterwards.
    pub soft: u64,
    /// The hard limit found before anything was changed.
    pub hard_before: u64,
    /// Whether the hard limit itself had to be (and could be) raised.
    pub raised_hard: bool,
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; if that is still below `want`, try
/// to raise the hard limit too (only a privileged process can).
// `rlim_t` is u64 here but not on every target; the casts are for those.
#[allow(clippy::unnecessary_cast)]
pub fn raise_nofile(want: u64) -> Result<NofileLimit, String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        ));
    }
    let hard_before = lim.rlim_max as u64;
    let mut raised_hard = false;
    if (lim.rlim_max as u64) < want {
        let bigger = libc::rlimit {
            rlim_cur: want as libc::rlim_t,
            rlim_max: want as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct we own. Fails with EPERM when unprivileged.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &bigger) } == 0 {
            lim = bigger;
            raised_hard = true;
        }
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above; a soft limit up to the hard one is always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(format!(
                "setrlimit(RLIMIT_NOFILE, {}): {}",
                lim.rlim_cur,
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(NofileLimit {
        soft: lim.rlim_cur as u64,
        hard_before,
        raised_hard,
    })
}

/// CPU time (user + system, seconds) used so far by this process's threads whose name
/// (`/proc/self/task/*/comm`, at most 15 bytes) satisfies `pick`, and how many there
/// are. `None` when `/proc` cannot be read.
pub fn threads_cpu(pick: &dyn Fn(&str) -> bool) -> Option<(f64, usize)> {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    let mut secs = 0.0;
    let mut found = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if !pick(comm.trim_end()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        secs += (utime + stime) / ticks;
        found += 1;
    }
    Some((secs, found))
}

/// One `kB` field of `/proc/self/status`, in bytes.
fn status_field(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn read_status() -> Option<String> {
    std::fs::read_to_string("/proc/self/status").ok()
}

/// This process's resident set size in bytes (`VmRSS`).
pub fn rss() -> Option<u64> {
    status_field(&read_status()?, "VmRSS:")
}

/// This process's peak resident set size in bytes (`VmHWM`).
pub fn hwm() -> Option<u64> {
    status_field(&read_status()?, "VmHWM:")
}

/// Give memory that is free in the allocator back to the OS, so a later `VmRSS`
/// difference is not hidden by the allocator reusing memory freed earlier (the latency
/// vectors of the scenarios before).
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reset `VmHWM` to the current RSS (Linux ≥ 4.0). Returns whether it worked.
pub fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A thread that samples `VmRSS` every millisecond and keeps the largest value, for a
/// second view of a peak besides `VmHWM` (which another thread's reset could blur).
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    pub fn start() -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss().unwrap_or(0)));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::Builder::new()
                .name("rss-sampler".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(r) = rss() {
                            peak.fetch_max(r, Ordering::Relaxed);
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
                .ok()
        };
        RssSampler { stop, peak, thread }
    }

    /// Stop sampling; the largest RSS seen, in bytes.
    pub fn finish(mut self) -> u64 {
        self.halt();
        self.peak.load(Ordering::Relaxed)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let s = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(status_field(s, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(status_field(s, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(status_field(s, "VmSwap:"), None);
    }

    #[test]
    fn finds_named_threads() {
        // The thread names itself once it runs: wait until it does.
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("bench-named-9".into())
            .spawn(move || {
                let _ = started_tx.send(());
                let _ = rx.recv();
            })
            .unwrap();
        started.recv().unwrap();
        let (secs, n) = threads_cpu(&|name| name == "bench-named-9").unwrap();
        assert_eq!(n, 1);
        assert!(secs >= 0.0);
        drop(tx);
        t.join().unwrap();
    }

    #[test]
    fn reads_own_rss() {
        assert!(rss().unwrap_or(0) > 0);
    }
}
