//! An idle registry uses no CPU: every event loop sleeps until its next deadline.
//! (Its own test binary, so no other test's registry threads are counted.)

use p2pcore::registry::{Registry, RegistryConfig};
use std::time::Duration;

/// CPU time, in clock ticks, used so far by this process's registry loop threads.
fn registry_ticks() -> u64 {
    let mut ticks = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("p2p-registry") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is the 3rd, utime the 14th,
        // stime the 15th.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        ticks += fields
            .get(11)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
        ticks += fields
            .get(12)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
    }
    ticks
}

#[test]
fn idle_event_loops_do_not_spin() {
    let r = Registry::builder()
        .config(RegistryConfig {
            threads: 3,
            ..RegistryConfig::default()
        })
        .bind("127.0.0.1:0")
        .unwrap();
    // Past the first one-second sweep, where a loop that stopped advancing its clock
    // would begin to spin.
    std::thread::sleep(Duration::from_millis(1500));
    let before = registry_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let used = registry_ticks() - before;
    // Three spinning loops would use ~600 ticks (100 Hz) in 2 s; idle ones use ~0.
    assert!(used < 50, "idle registry used {used} ticks of CPU in 2 s");
    drop(r);
}
