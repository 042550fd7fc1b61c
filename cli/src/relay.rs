//! `p2pchat relay`: a standalone relay in the foreground, one log line per circuit
//! joined or closed and per refusal, with the same bounded, never-blocking log as
//! `p2pchat server` (see [`crate::server`]).

use crate::args::RelayArgs;
use crate::failure::Failure;
use crate::server::{print_loop, Log, LogOffer, Logged, LOG_QUEUE};
use crate::style::Style;
use p2pcore::relay::{Relay, RelayEvent, RelaySecret};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// How long the shutdown waits for the printer to write what is left.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// Run the relay until SIGINT/SIGTERM; then exit status 130.
pub fn run(args: &RelayArgs) -> Result<(), Failure> {
    let secret = secret(&args.secret_file)?;
    let signals = crate::signals::channel();
    let log = Log {
        style: Style::stdout(),
        format: args.log_format,
    };
    let (tx, queue) = crossbeam_channel::bounded::<Logged>(LOG_QUEUE);
    let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
    let dropped = Arc::new(AtomicU64::new(0));
    let offer = LogOffer::new(tx, dropped.clone(), args.quiet);
    let relay = Relay::builder(secret)
        .limits(args.limits.limits())
        .on_event(move |e: &RelayEvent| offer.offer(e, Logged::Relay))
        .bind(&args.addr)
        .map_err(|e| Failure::new(format!("cannot start the relay on {}: {e}", args.addr)))?;
    let startup = log.relay_listening(relay.local_addr(), &args.secret_file);
    let stopped = log.stopped("relay");
    let (done_tx, done) = crossbeam_channel::bounded::<()>(1);
    let printer = std::thread::Builder::new()
        .name("log".into())
        .spawn(move || {
            print_loop(&log, &startup, &stopped, &queue, &stop, &dropped);
            let _ = done_tx.send(());
        })
        .map_err(|e| Failure::new(format!("cannot start the log printer: {e}")))?;
    let _ = signals.recv();
    // Joins the relay's thread: no event comes after this.
    relay.shutdown();
    drop(stop_tx);
    if done.recv_timeout(FINAL_FLUSH).is_ok() {
        let _ = printer.join();
    }
    Err(Failure::interrupted(""))
}

/// The secret in `file`, or a new one written there (mode 0600) when it is missing.
fn secret(file: &Path) -> Result<RelaySecret, Failure> {
    match std::fs::read_to_string(file) {
        Ok(text) => RelaySecret::from_hex(&text).ok_or_else(|| {
            Failure::new(format!(
                "{} does not hold a relay secret (64 hex characters)",
                file.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = RelaySecret::generate()
                .map_err(|e| Failure::new(format!("cannot make a relay secret: {e}")))?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            options
                .open(file)
                .and_then(|mut f| writeln!(f, "{}", secret.to_hex()))
                .map_err(|e| {
                    Failure::new(format!(
                        "cannot create the relay secret file {}: {e}",
                        file.display()
                    ))
                })?;
            Ok(secret)
        }
        Err(e) => Err(Failure::new(format!(
            "cannot read the relay secret file {}: {e}",
            file.display()
        ))),
    }
}

/// The secret a registry shares with the standalone relay it offers
/// (`p2pchat server --relay-secret-file`): the file must exist.
pub fn read_secret(file: &Path) -> Result<RelaySecret, Failure> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        Failure::new(format!(
            "cannot read the relay secret file {}: {e} (p2pchat relay --secret-file creates it)",
            file.display()
        ))
    })?;
    RelaySecret::from_hex(&text).ok_or_else(|| {
        Failure::new(format!(
            "{} does not hold a relay secret (64 hex characters)",
            file.display()
        ))
    })
}
