//! Watching a download: a progress bar (bytes, this run's rate, ETA) on a terminal, silence
//! otherwise; Ctrl-C cancels it. A download that resumes a partial file says so, and
//! its rate counts only the bytes this run received.

use crossbeam_channel::Receiver;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use p2pcore::peer::{PeerEvent, Transfer, TransferId};
use std::collections::HashMap;
use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the bar is redrawn and a signal looked for.
const TICK: Duration = Duration::from_millis(100);
/// Most download starts remembered and not yet watched (this program watches one
/// download at a time; the bound only keeps a misbehaving caller from growing it).
const MAX_STARTS: usize = 64;

/// Where each download started (`PeerEvent::TransferStarted`): filled by the peer's
/// event hook, read by [`watch`].
#[derive(Clone, Default)]
pub struct Starts(Arc<Mutex<HashMap<TransferId, (u64, u64)>>>);

impl Starts {
    /// Remember a download's start, if `event` is one.
    pub fn record(&self, event: &PeerEvent) {
        if let PeerEvent::TransferStarted {
            id, offset, size, ..
        } = event
        {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() < MAX_STARTS {
                map.insert(*id, (*offset, *size));
            }
        }
    }

    fn take(&self, id: TransferId) -> Option<(u64, u64)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&id)
    }
}

/// Shortest time over which a rate is shown: over less, a burst of a few packets (or a
/// burst of a resumed file's length) says nothing about the download's speed.
const MIN_RATE_TIME: Duration = Duration::from_millis(500);

/// This run's average rate in bytes per second, once it has run [`MIN_RATE_TIME`].
fn rate(state: &ProgressState, base: &AtomicU64) -> Option<f64> {
    let secs = state.elapsed();
    if secs < MIN_RATE_TIME {
        return None;
    }
    let got = state.pos().saturating_sub(base.load(Ordering::Relaxed));
    Some(got as f64 / secs.as_secs_f64())
}

/// `n` bytes for people: `512 B`, `1.5 KiB`, `2.0 MiB`, `1.25 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Wait for `transfer` to end, drawing a bar on stderr when it is a terminal. A message
/// on `signals` cancels the download (the partial file is kept for a resume). When the
/// download resumes a partial file, `note` gets one line saying so.
pub fn watch(
    transfer: &Transfer,
    signals: &Receiver<()>,
    starts: &Starts,
    note: &mut dyn FnMut(&str),
) -> p2pcore::Result<PathBuf> {
    // Where this run's bytes start (a resumed download's partial length): the rate is
    // this run's bytes over this run's time, so a resume never shows as a burst.
    let base = Arc::new(AtomicU64::new(0));
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let (rate_base, eta_base) = (base.clone(), base.clone());
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {rate} ETA {left}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            move |state: &ProgressState, w: &mut dyn fmt::Write| {
                let _ = match rate(state, &rate_base) {
                    Some(r) => write!(w, "{}/s", HumanBytes(r as u64)),
                    None => write!(w, "-"),
                };
            },
        )
        .with_key(
            "left",
            move |state: &ProgressState, w: &mut dyn fmt::Write| {
                let left = state.len().unwrap_or(0).saturating_sub(state.pos());
                let _ = match rate(state, &eta_base).filter(|r| *r > 0.0) {
                    Some(r) => write!(w, "{}s", (left as f64 / r).ceil() as u64),
                    None => write!(w, "-"),
                };
            },
        )
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(crate::visible::visible(transfer.file()).into_owned());
        Some(bar)
    } else {
        None
    };
    // No helper thread to wait on the download (one would need an owner joining it on
    // every path): the loop waits on the download itself, one tick at a time, and
    // looks for a signal between ticks. It returns only once the download has ended
    // (cancel and the peer's exit both end it).
    let mut last_total = 0;
    let mut started = false;
    let result = loop {
        let done = transfer.wait_timeout(TICK);
        if !started {
            if let Some((offset, size)) = starts.take(transfer.id()) {
                started = true;
                // A direct download is the quiet default; any other path is said.
                if transfer.path() != p2pcore::reach::Path::Direct {
                    let line = format!(
                        "fetching {} from {} ({})",
                        crate::visible::visible(transfer.file()),
                        crate::visible::visible(transfer.from()),
                        transfer.path()
                    );
                    match &bar {
                        Some(bar) => bar.suspend(|| note(&line)),
                        None => note(&line),
                    }
                }
                if offset > 0 {
                    let line = format!(
                        "resuming {}: {} of {} already here from an earlier download",
                        crate::visible::visible(transfer.file()),
                        bytes(offset),
                        bytes(size)
                    );
                    match &bar {
                        Some(bar) => bar.suspend(|| note(&line)),
                        None => note(&line),
                    }
                }
                if let Some(bar) = &bar {
                    // The rate and ETA count from here: the resumed bytes came earlier.
                    base.store(offset, Ordering::Relaxed);
                    bar.set_length(size);
                    last_total = size;
                    bar.set_position(offset);
                    bar.reset_elapsed();
                }
            }
        }
        if let Some(r) = done {
            break r;
        }
        if signals.try_recv().is_ok() {
            transfer.cancel();
        }
        if let Some(bar) = &bar {
            let (got, total) = transfer.progress();
            if total != last_total {
                bar.set_length(total);
                last_total = total;
            }
            bar.set_position(got);
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_counts_for_people() {
        assert_eq!(super::bytes(0), "0 B");
        assert_eq!(super::bytes(1023), "1023 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(3 << 20), "3.0 MiB");
        assert_eq!(super::bytes(5 << 30), "5.0 GiB");
    }
}
