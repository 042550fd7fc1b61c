//! Watching a download: a progress bar (bytes, rate, ETA) on a terminal, silence
//! otherwise; Ctrl-C cancels it.

use crossbeam_channel::Receiver;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use p2pcore::peer::Transfer;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

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
    // `wait` blocks; a helper thread turns its end into a message (it ends when the
    // download does, which cancel and the peer's exit both guarantee).
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let waiting = transfer.clone();
    std::thread::spawn(move || {
        let _ = done_tx.send(waiting.wait());
    });
    let mut last_total = 0;
    let result = loop {
        crossbeam_channel::select! {
            recv(done_rx) -> r => break r.unwrap_or(Err(p2pcore::Error::Shutdown)),
            recv(signals) -> _ => transfer.cancel(),
            default(Duration::from_millis(100)) => {}
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
