//! Writing to stdout and stderr without panicking. `println!` and `eprintln!` panic
//! when a write fails (a pipe whose reader went away gives EPIPE: Rust ignores
//! SIGPIPE), so every line p2pchat prints goes through here: a failed stdout write
//! comes back as an error the caller acts on (the client leaves the registry and exits
//! with [`EXIT_OUTPUT_CLOSED`]); a failed stderr write is dropped, since there is
//! nowhere left to report it.
//!
//! This module never decides what is printed; text from other parties must already
//! have gone through [`crate::visible`].

use crate::failure::Failure;
use std::io::{self, Write};

/// Exit code when stdout was closed (or failed) under a command: 128 + SIGPIPE, what a
/// shell reports for a program that a closed pipe stopped, so `set -o pipefail`
/// scripts treat p2pchat like any other program at the head of a pipeline.
pub const EXIT_OUTPUT_CLOSED: i32 = 141;

/// Write `text` and a line break to stdout, flushed.
pub fn line(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Write `text` to stdout without a line break (a prompt), flushed.
pub fn partial(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Write `text` and a line break to stderr; a failure is ignored.
pub fn err_line(text: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.write_all(b"\n");
    let _ = err.flush();
}

/// The failure of a command whose stdout failed.
pub fn closed(e: io::Error) -> Failure {
    Failure {
        code: EXIT_OUTPUT_CLOSED,
        message: format!("cannot write to stdout: {e}"),
    }
}

/// [`line`], failing the command when stdout fails.
pub fn print(text: &str) -> Result<(), Failure> {
    line(text).map_err(closed)
}
