//! SIGINT and SIGTERM, delivered as messages on a channel so every loop can stop
//! cleanly (send EXIT, shut the registry down) instead of dying mid-way.

use crossbeam_channel::Receiver;

/// Install the handler (once per process) and return the channel it sends on.
pub fn channel() -> Receiver<()> {
    let (tx, rx) = crossbeam_channel::unbounded();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = tx.send(());
    }) {
        crate::output::err_line(&format!("warning: cannot catch Ctrl-C: {e}"));
    }
    rx
}
