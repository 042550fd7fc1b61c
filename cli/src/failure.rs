//! How a command fails: a one-line message for stderr and the process exit code.

use p2pcore::Error;

/// Exit code for a chat the other side declined (`p2pchat send`).
pub const EXIT_DECLINED: i32 = 3;

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
            code: 1,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let code = match e {
            Error::Declined(_) => EXIT_DECLINED,
            _ => 1,
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
