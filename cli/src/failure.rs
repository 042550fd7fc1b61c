//! How a command fails: a one-line message for stderr and the process exit code.
//!
//! Every command uses the same exit codes (listed in `p2pchat --help` and the README):
//! 0 success, [`EXIT_ERROR`], [`EXIT_USAGE`] (clap's own), [`EXIT_DECLINED`],
//! [`EXIT_KEY_CHANGED`], [`EXIT_DENIED`], [`EXIT_INTERRUPTED`] and
//! [`crate::output::EXIT_OUTPUT_CLOSED`].

use p2pcore::Error;
use std::path::Path;

/// Exit code for any failure without a code of its own.
pub const EXIT_ERROR: i32 = 1;
/// Exit code for a command line that cannot be used (clap exits with it by itself).
pub const EXIT_USAGE: i32 = 2;
/// Exit code for a chat (`p2pchat send`) or a file (`p2pchat send-file`) the other
/// side declined.
pub const EXIT_DECLINED: i32 = 3;
/// Exit code for a key that is not the one expected: a user's or the registry's key
/// differs from the pinned one (or from the `#FINGERPRINT` given), or `trust` was given
/// a fingerprint the listed key does not have. Nothing was sent to the other side.
pub const EXIT_KEY_CHANGED: i32 = 4;
/// Exit code for a refusal on the grounds of who is asking: the other peer answered
/// `denied` (not on its serve-only list, unverified), `--refuse-unverified` refused an
/// unverified partner, or a pinned registry no longer offers a secured session.
pub const EXIT_DENIED: i32 = 5;
/// Exit code after SIGINT (Ctrl-C) or SIGTERM: 128 + SIGINT, as shells report it.
pub const EXIT_INTERRUPTED: i32 = 130;

/// The exit-code table shown by `p2pchat --help` (and in the README).
pub const EXIT_CODES: &str = "\
Exit status (every command):
  0    success
  1    error (a one-line message on stderr)
  2    usage error (bad flags or arguments)
  3    declined: the other side declined the chat (send) or file (send-file)
  4    key changed: a key differs from the pinned one (see the warning)
  5    denied: refused for who is asking (serve-only, unverified partner,
       a pinned registry without a secured session)
  130  interrupted by Ctrl-C (SIGINT) or SIGTERM
  141  stdout was closed (a pipe whose reader went away)";

/// A failed command.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    /// A generic failure (exit code 1).
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_ERROR,
            message: message.into(),
        }
    }

    /// Stopped by SIGINT/SIGTERM, with what the user should know.
    pub fn interrupted(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_INTERRUPTED,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let code = match e {
            Error::Declined(_) | Error::OfferDeclined { .. } => EXIT_DECLINED,
            Error::KeyChanged { .. } => EXIT_KEY_CHANGED,
            Error::Denied { .. } => EXIT_DENIED,
            _ => EXIT_ERROR,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::new(message)
    }
}

/// The message for a registry that cannot be used: what went wrong and, where the
/// cause is likely, what to do about it. A changed registry key gets its warning on
/// stderr first ([`crate::keys::warning`]) and [`EXIT_KEY_CHANGED`]; a pinned registry
/// refused for offering no secured session, [`EXIT_DENIED`].
pub fn registry_failure(addr: &str, known_keys: Option<&Path>, e: &Error) -> Failure {
    if matches!(e, Error::KeyChanged { .. } | Error::Denied { .. }) {
        return failure_at(addr, known_keys, e.clone());
    }
    let hint = match e {
        Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "; is `p2pchat server` running there? (--registry or P2PCHAT_REGISTRY says where)"
        }
        _ => "",
    };
    Failure::new(format!("cannot reach the registry at {addr}: {e}{hint}"))
}

/// `e` as the failure of a command using the registry at `registry` (as typed) and the
/// known-keys file `known_keys` (when given explicitly): a changed key is preceded by
/// its warning on stderr, which says how to accept it.
pub fn failure_at(registry: &str, known_keys: Option<&Path>, e: Error) -> Failure {
    for line in crate::keys::warning(registry, known_keys, &e) {
        crate::output::err_line(&line);
    }
    e.into()
}
