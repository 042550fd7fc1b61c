//! T2b — registry lookups the way the original C++ client makes them.
//!
//! One TCP connection per query: `GET_P,<random user>` written with no terminator, one
//! `read` of at most 1000 bytes, close; 50 threads, closed loop. Baseline: a
//! thread-per-connection server that answers every read with a fixed unterminated reply.
//!
//! The registry answers an unterminated query of at most `limits::LEGACY_FAST_MAX` bytes
//! that already parses as complete at once, so this path must not show the legacy grace
//! period (30 ms) in its latency.

use crate::baseline::Style;
use crate::load::Mode;
use crate::{Options, Outcome};

pub fn run(opts: &Options) -> Result<Outcome, String> {
    let mut outcome = crate::t2::lookups(opts, "T2b", Mode::Legacy, Style::Legacy)?;
    let grace_ms = p2pcore::limits::LEGACY_GRACE.as_secs_f64() * 1000.0;
    if let Some(p50) = outcome
        .figures
        .iter()
        .find(|f| f.name.ends_with("latency p50"))
    {
        if p50.p2pchat.median / 1000.0 >= grace_ms * 0.9 {
            outcome.notes.push(format!(
                "T2b: median latency {:.1} ms is about the legacy grace period ({grace_ms} ms): \
                 the fast path for short complete queries did not trigger",
                p50.p2pchat.median / 1000.0
            ));
        }
    }
    Ok(outcome)
}
