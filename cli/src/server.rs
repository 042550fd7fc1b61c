//! `p2pchat server`: the registry in the foreground, one line per event.

use crate::style::{clock, Style};
use p2pcore::registry::{Registry, RegistryEvent};
use std::time::SystemTime;

/// Run the registry on `addr` until SIGINT/SIGTERM.
pub fn run(addr: &str) -> Result<(), String> {
    let signals = crate::signals::channel();
    let style = Style::stdout();
    // The hook runs on the registry's thread: hand events over, print them here.
    let (tx, events) = crossbeam_channel::unbounded::<RegistryEvent>();
    let registry = Registry::builder()
        .on_event(move |e| {
            let _ = tx.send(e.clone());
        })
        .bind(addr)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!("registry listening on {}", registry.local_addr());
    loop {
        crossbeam_channel::select! {
            recv(events) -> e => match e {
                Ok(e) => println!("{}", line(&style, &e)),
                Err(_) => break,
            },
            recv(signals) -> _ => break,
        }
    }
    registry.shutdown();
    for e in events.try_iter() {
        println!("{}", line(&style, &e));
    }
    println!("registry stopped");
    Ok(())
}

/// One log line for an event.
fn line(style: &Style, e: &RegistryEvent) -> String {
    let now = || style.dim(&clock(SystemTime::now()));
    match e {
        RegistryEvent::Connected { source } => {
            format!("{} {source} {}", now(), style.green("connected"))
        }
        RegistryEvent::Query {
            at,
            source,
            query,
            outcome,
            legacy,
        } => {
            let outcome = if outcome.starts_with("ERR") {
                style.red(&printable(outcome))
            } else {
                printable(outcome)
            };
            let legacy = if *legacy { " (legacy)" } else { "" };
            format!(
                "{} {source} {}{legacy} -> {outcome}",
                style.dim(&clock(*at)),
                printable(query)
            )
        }
        RegistryEvent::Disconnected { source, released } => {
            let released = if released.is_empty() {
                String::new()
            } else {
                format!(" (released {})", released.join(", "))
            };
            format!(
                "{} {source} {}",
                now(),
                style.red(&format!("disconnected{released}"))
            )
        }
        RegistryEvent::LeaseExpired { usernames } => format!(
            "{} {}",
            now(),
            style.red(&format!("lease expired: {}", usernames.join(", ")))
        ),
        RegistryEvent::Refused { source, outcome } => format!(
            "{} {source} {}",
            now(),
            style.red(&format!("refused: {}", printable(outcome)))
        ),
    }
}

/// Text from the network with control characters escaped, so a client cannot move the
/// cursor or recolour the log.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}
