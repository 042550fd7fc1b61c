//! Watching a download: a progress bar (bytes, rate, ETA) on a terminal, silence
//! otherwise; Ctrl-C cancels it.

use crossbeam_channel::Receiver;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use p2pcore::peer::Transfer;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

/// How often the bar is redrawn and a signal looked for.
const TICK: Duration = Duration::from_millis(100);

/// Wait for `transfer` to end, drawing a bar on stderr when it is a terminal. A message
/// on `signals` cancels the download (the partial file is kept for a resume).
pub fn watch(transfer: &Transfer, signals: &Receiver<()>) -> p2pcore::Result<PathBuf> {
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
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
    let result = loop {
        if let Some(r) = transfer.wait_timeout(TICK) {
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
