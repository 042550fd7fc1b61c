//! T5 — hashing a share.
//!
//! A scratch share of `--size-mib` MiB in [`FILES`] files of random-ish bytes. Timed:
//! `Share::open` + `scan()` with no hash cache (its cache directory, `.cache` inside the
//! scratch share, deleted first), which
//! reads and hashes every file; then `scan()` on a fresh `Share::open`, which must find
//! every hash in the cache and read no file's content (`ScanReport.hashed == 0`).
//! Baseline: reading the same files sequentially with a 1 MiB buffer, discarding the
//! bytes. Runs alternate p2pchat and baseline; the files are in the page cache for both.

use crate::report::{Figure, Goal, Stats};
use crate::scratch::{self, mb_per_s, TempDir, MIB};
use crate::{progress, Options, Outcome};
use p2pcore::share::Share;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

const RUNS: usize = 3;
/// The share is this many files (fewer when `--size-mib` is smaller).
const FILES: u64 = 16;
const READ_BUF: usize = 1024 * 1024;
/// Goal: the first scan reaches this fraction of the plain read's MB/s.
const GOAL_RATIO: f64 = 0.8;

pub fn run(opts: &Options) -> Result<Outcome, String> {
    let total = opts.size_mib * MIB;
    let files = FILES.min(opts.size_mib).max(1);
    let scratch = TempDir::new("t5")?;
    let dir = scratch.subdir("share")?;
    let mut paths = Vec::new();
    let t = Instant::now();
    for i in 0..files {
        // The remainder goes to the last file, so the total is exact.
        let size = total / files + if i == files - 1 { total % files } else { 0 };
        let path = dir.join(format!("file-{i:02}.bin"));
        scratch::write_noise_file(&path, size, 0x7435 + i, false)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        paths.push(path);
    }
    progress(&format!(
        "T5: {files} files, {} MiB, written in {:.1} s",
        opts.size_mib,
        t.elapsed().as_secs_f64()
    ));

    let mut first = Vec::new();
    let mut rescan_ms = Vec::new();
    let mut baseline = Vec::new();
    let mut max_reread = 0;
    for run in 1..=RUNS {
        let (secs, hashed) = timed_scan(&dir, true)?;
        if hashed as u64 != files {
            return Err(format!(
                "first scan hashed {hashed} files, expected {files}"
            ));
        }
        first.push(mb_per_s(total, secs));
        let (re, reread) = timed_scan(&dir, false)?;
        max_reread = max_reread.max(reread);
        rescan_ms.push(re * 1e3);
        let base = read_all(&paths)?;
        baseline.push(mb_per_s(total, base));
        progress(&format!(
            "T5 run {run}/{RUNS}: first scan {secs:.3} s ({:.0} MB/s), rescan {:.2} ms \
             ({reread} files read), plain read {base:.3} s ({:.0} MB/s)",
            mb_per_s(total, secs),
            re * 1e3,
            mb_per_s(total, base)
        ));
    }
    drop(scratch);

    let figures = vec![
        Figure::compared(
            "T5 share first scan",
            "MB/s",
            Stats::of(&first),
            Stats::of(&baseline),
        )
        .goal(Goal::RatioAtLeast(GOAL_RATIO))
        .extra(format!(
            "Share::open + scan() of {files} files, {} MiB, no hash cache: BLAKE3 of \
             everything; baseline: sequential read, 1 MiB buffer, bytes discarded; files \
             in the page cache for both; {RUNS} runs",
            opts.size_mib
        )),
        Figure::single("T5 share rescan (cache hit)", "ms", Stats::of(&rescan_ms))
            .goal(Goal::Check {
                what: "reads no file contents",
                met: max_reread == 0,
            })
            .extra(format!(
                "fresh Share::open + scan() with the cache of the first scan; files read: \
                 {max_reread} (ScanReport.hashed, worst run) of {files}"
            )),
    ];
    Ok(Outcome {
        figures,
        notes: Vec::new(),
    })
}

/// `Share::open` + `scan()` of `dir`, after deleting the hash cache when `cold`.
/// Seconds, and how many files the scan read (`ScanReport.hashed`).
fn timed_scan(dir: &Path, cold: bool) -> Result<(f64, usize), String> {
    // A hidden directory in the scratch share (never shared), not the user's cache.
    let cache = dir.join(".cache");
    if cold {
        match std::fs::remove_dir_all(&cache) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("removing {}: {e}", cache.display())),
        }
    } else if !cache.exists() {
        return Err(format!("the first scan left no {}", cache.display()));
    }
    let t = Instant::now();
    let share =
        Share::open_with_cache_dir(dir, Some(cache)).map_err(|e| format!("Share::open: {e}"))?;
    let report = share.scan().map_err(|e| format!("scan: {e}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !report.skipped.is_empty() {
        return Err(format!("scan skipped files: {:?}", report.skipped));
    }
    Ok((secs, report.hashed))
}

/// The baseline: every file read start to end, 1 MiB at a time. Seconds.
fn read_all(paths: &[PathBuf]) -> Result<f64, String> {
    let mut buf = vec![0u8; READ_BUF];
    let t = Instant::now();
    for path in paths {
        let mut f = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    std::hint::black_box(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read {}: {e}", path.display())),
            }
        }
    }
    Ok(t.elapsed().as_secs_f64())
}
