//! The one error type of p2pcore. Every variant maps to a stable [`ErrorCode`] that the
//! C API returns as its status, so C and Rust callers branch on the same numbers.

use std::io;
use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Stable numeric codes for [`Error`] kinds (the C API's `p2p_status` uses the same
/// values; 0 is success there).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Io = 1,
    InvalidArgument = 2,
    UsernameTaken = 3,
    InvalidUsername = 4,
    NotADirectory = 5,
    PortUnavailable = 6,
    Registry = 7,
    Protocol = 8,
    UserNotFound = 9,
    Declined = 10,
    Closed = 11,
    FileNotFound = 12,
    Busy = 13,
    AlreadyExists = 14,
    HashMismatch = 15,
    Cancelled = 16,
    Timeout = 17,
    Shutdown = 18,
    TooLarge = 19,
    Refused = 20,
}

/// Everything that can go wrong in p2pchat, with what the user needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("username {0:?} is already taken on the registry")]
    UsernameTaken(String),
    #[error("invalid username {0:?}: 1-64 bytes, no comma, colon, control characters or surrounding spaces")]
    InvalidUsername(String),
    #[error("shared directory {} does not exist or is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("port {port} is not available: {source}")]
    PortUnavailable { port: u16, source: io::Error },
    #[error("registry refused: {0}")]
    Registry(String),
    #[error("protocol error from {peer}: {detail}")]
    Protocol { peer: String, detail: String },
    #[error("user {0:?} is not online")]
    UserNotFound(String),
    #[error("{0} declined the chat")]
    Declined(String),
    #[error("the connection was closed")]
    Closed,
    #[error("{user} does not share {file:?}")]
    FileNotFound { user: String, file: String },
    #[error("{0} is busy, try again later")]
    Busy(String),
    #[error("{} already exists; p2pchat never overwrites a file", .0.display())]
    AlreadyExists(PathBuf),
    #[error("download of {file:?} failed verification: expected hash {expected}, got {actual}")]
    HashMismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("cancelled")]
    Cancelled,
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("the peer is shut down")]
    Shutdown,
    #[error("{what} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("{peer} refused: {reason}")]
    Refused { peer: String, reason: String },
    /// A download refused before its first byte: it does not fit the download
    /// directory's free space minus the margin (and other running downloads). Code
    /// [`ErrorCode::TooLarge`].
    #[error("{peer} offers {file:?} needing {needed} more bytes, but the download directory has {free} bytes free, {reserved} promised to running downloads and {margin} to keep free; nothing was written")]
    NoSpace {
        peer: String,
        file: String,
        needed: u64,
        free: u64,
        margin: u64,
        reserved: u64,
    },
    /// A download refused before its first byte: larger than
    /// `PeerLimits::max_download_size`. Code [`ErrorCode::TooLarge`].
    #[error("{peer} offers {file:?} of {size} bytes, over the maximum download size of {limit}; nothing was written")]
    DownloadTooLarge {
        peer: String,
        file: String,
        size: u64,
        limit: u64,
    },
    /// A partial download of that name from another peer, of another file, is kept:
    /// this peer's file would need it thrown away. Code [`ErrorCode::AlreadyExists`].
    #[error("{peer} offers a different {file:?} than the partial download from {origin} kept in {}; it stays: finish it from its origin, or remove it to download from {peer}", .partial.display())]
    PartialConflict {
        peer: String,
        file: String,
        origin: String,
        partial: PathBuf,
    },
    /// A chat request to an original C++ client that it did not take: it closed the
    /// connection. The original says nothing either way; it gives its person 5 s to
    /// accept and then closes. Not a decline anyone chose. Code [`ErrorCode::Timeout`].
    #[error("{0} is an original client; it did not answer the chat request (it closes a request its user does not accept within 5 s)")]
    NoAnswer(String),
}

impl Clone for Error {
    /// I/O errors are cloned as their kind and message (`io::Error` is not `Clone`).
    fn clone(&self) -> Self {
        let io = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
        match self {
            Error::Io(e) => Error::Io(io(e)),
            Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
            Error::UsernameTaken(s) => Error::UsernameTaken(s.clone()),
            Error::InvalidUsername(s) => Error::InvalidUsername(s.clone()),
            Error::NotADirectory(p) => Error::NotADirectory(p.clone()),
            Error::PortUnavailable { port, source } => Error::PortUnavailable {
                port: *port,
                source: io(source),
            },
            Error::Registry(s) => Error::Registry(s.clone()),
            Error::Protocol { peer, detail } => Error::Protocol {
                peer: peer.clone(),
                detail: detail.clone(),
            },
            Error::UserNotFound(s) => Error::UserNotFound(s.clone()),
            Error::Declined(s) => Error::Declined(s.clone()),
            Error::NoAnswer(s) => Error::NoAnswer(s.clone()),
            Error::Closed => Error::Closed,
            Error::FileNotFound { user, file } => Error::FileNotFound {
                user: user.clone(),
                file: file.clone(),
            },
            Error::Busy(s) => Error::Busy(s.clone()),
            Error::AlreadyExists(p) => Error::AlreadyExists(p.clone()),
            Error::HashMismatch {
                file,
                expected,
                actual,
            } => Error::HashMismatch {
                file: file.clone(),
                expected: expected.clone(),
                actual: actual.clone(),
            },
            Error::Cancelled => Error::Cancelled,
            Error::Timeout(s) => Error::Timeout(s.clone()),
            Error::Shutdown => Error::Shutdown,
            Error::TooLarge { what, size, limit } => Error::TooLarge {
                what,
                size: *size,
                limit: *limit,
            },
            Error::Refused { peer, reason } => Error::Refused {
                peer: peer.clone(),
                reason: reason.clone(),
            },
            Error::NoSpace {
                peer,
                file,
                needed,
                free,
                margin,
                reserved,
            } => Error::NoSpace {
                peer: peer.clone(),
                file: file.clone(),
                needed: *needed,
                free: *free,
                margin: *margin,
                reserved: *reserved,
            },
            Error::DownloadTooLarge {
                peer,
                file,
                size,
                limit,
            } => Error::DownloadTooLarge {
                peer: peer.clone(),
                file: file.clone(),
                size: *size,
                limit: *limit,
            },
            Error::PartialConflict {
                peer,
                file,
                origin,
                partial,
            } => Error::PartialConflict {
                peer: peer.clone(),
                file: file.clone(),
                origin: origin.clone(),
                partial: partial.clone(),
            },
        }
    }
}

impl Error {
    /// The stable code of this error's kind.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Io(e) if is_timeout(e) => ErrorCode::Timeout,
            Error::Io(_) => ErrorCode::Io,
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::UsernameTaken(_) => ErrorCode::UsernameTaken,
            Error::InvalidUsername(_) => ErrorCode::InvalidUsername,
            Error::NotADirectory(_) => ErrorCode::NotADirectory,
            Error::PortUnavailable { .. } => ErrorCode::PortUnavailable,
            Error::Registry(_) => ErrorCode::Registry,
            Error::Protocol { .. } => ErrorCode::Protocol,
            Error::UserNotFound(_) => ErrorCode::UserNotFound,
            Error::Declined(_) => ErrorCode::Declined,
            Error::NoAnswer(_) => ErrorCode::Timeout,
            Error::Closed => ErrorCode::Closed,
            Error::FileNotFound { .. } => ErrorCode::FileNotFound,
            Error::Busy(_) => ErrorCode::Busy,
            Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Error::HashMismatch { .. } => ErrorCode::HashMismatch,
            Error::Cancelled => ErrorCode::Cancelled,
            Error::Timeout(_) => ErrorCode::Timeout,
            Error::Shutdown => ErrorCode::Shutdown,
            Error::TooLarge { .. } => ErrorCode::TooLarge,
            Error::Refused { .. } => ErrorCode::Refused,
            // Existing codes, so the C API's status enum needs no new values.
            Error::NoSpace { .. } | Error::DownloadTooLarge { .. } => ErrorCode::TooLarge,
            Error::PartialConflict { .. } => ErrorCode::AlreadyExists,
        }
    }

    pub(crate) fn protocol(peer: impl ToString, detail: impl Into<String>) -> Error {
        Error::Protocol {
            peer: peer.to_string(),
            detail: detail.into(),
        }
    }
}

/// Whether an I/O error is a socket timeout (`WouldBlock` on Unix, `TimedOut` elsewhere).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
