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
    /// [`Error::Io`].
    Io = 1,
    /// [`Error::InvalidArgument`].
    InvalidArgument = 2,
    /// [`Error::UsernameTaken`].
    UsernameTaken = 3,
    /// [`Error::InvalidUsername`].
    InvalidUsername = 4,
    /// [`Error::NotADirectory`].
    NotADirectory = 5,
    /// [`Error::PortUnavailable`].
    PortUnavailable = 6,
    /// [`Error::Registry`].
    Registry = 7,
    /// [`Error::Protocol`].
    Protocol = 8,
    /// [`Error::UserNotFound`].
    UserNotFound = 9,
    /// [`Error::Declined`].
    Declined = 10,
    /// [`Error::Closed`].
    Closed = 11,
    /// [`Error::FileNotFound`].
    FileNotFound = 12,
    /// [`Error::Busy`].
    Busy = 13,
    /// [`Error::AlreadyExists`] and [`Error::PartialConflict`].
    AlreadyExists = 14,
    /// [`Error::HashMismatch`].
    HashMismatch = 15,
    /// [`Error::Cancelled`].
    Cancelled = 16,
    /// [`Error::Timeout`] and I/O timeouts.
    Timeout = 17,
    /// [`Error::Shutdown`].
    Shutdown = 18,
    /// [`Error::TooLarge`], [`Error::NoSpace`] and [`Error::DownloadTooLarge`].
    TooLarge = 19,
    /// [`Error::Refused`].
    Refused = 20,
    /// [`Error::KeyChanged`].
    KeyChanged = 21,
    /// [`Error::Denied`].
    Denied = 22,
}

/// Everything that can go wrong in p2pchat, with what the user needs to act on it.
///
/// Each variant's text (its `Display`) is a whole sentence fit to show a person; its
/// [`code`](Error::code) is stable for programs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed: a socket, a file, the share. A timeout reads "timed out"
    /// rather than the OS's "Resource temporarily unavailable". Code [`ErrorCode::Io`]
    /// ([`ErrorCode::Timeout`] for a timeout).
    #[error("I/O error: {}", io_text(.0))]
    Io(#[from] io::Error),
    /// An argument the caller passed cannot be used (an unparsable registry address,
    /// an empty name…). Code [`ErrorCode::InvalidArgument`].
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Registering failed: someone online already uses this name. Code
    /// [`ErrorCode::UsernameTaken`].
    #[error("username {0:?} is already taken on the registry")]
    UsernameTaken(String),
    /// A username breaks the rules (1-64 bytes, no comma, colon, control characters or
    /// surrounding spaces). Code [`ErrorCode::InvalidUsername`].
    #[error("invalid username {0:?}: 1-64 bytes, no comma, colon, control characters or surrounding spaces")]
    InvalidUsername(String),
    /// The shared (or download) directory does not exist or is not a directory. Code
    /// [`ErrorCode::NotADirectory`].
    #[error("shared directory {} does not exist or is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The download directory (the peer's, or a fetch's destination directory) does
    /// not exist or is not a directory. Code [`ErrorCode::NotADirectory`].
    #[error("download directory {} does not exist or is not a directory", .0.display())]
    NotADownloadDirectory(PathBuf),
    /// The peer cannot listen on the port it was given (in use, not allowed), or, for
    /// port 0, the system has no free port left. Code [`ErrorCode::PortUnavailable`].
    #[error("{}", port_text(*.port, .source))]
    PortUnavailable {
        /// The port asked for (0: any free one).
        port: u16,
        /// Why listening failed.
        source: io::Error,
    },
    /// The registry answered `ERR` with this reason (full, too many users from this
    /// address…). Code [`ErrorCode::Registry`].
    #[error("registry refused: {0}")]
    Registry(String),
    /// The registry or another peer sent something that breaks the protocol. Code
    /// [`ErrorCode::Protocol`].
    #[error("protocol error from {peer}: {detail}")]
    Protocol {
        /// Who sent it (an address or a name).
        peer: String,
        /// What was wrong.
        detail: String,
    },
    /// The named user is not online. Code [`ErrorCode::UserNotFound`].
    #[error("user {0:?} is not online")]
    UserNotFound(String),
    /// The named user declined the chat request (or takes no chats). A request they
    /// did not answer in time is [`Error::Timeout`]. Code [`ErrorCode::Declined`].
    #[error("{0} declined the chat")]
    Declined(String),
    /// The connection closed before the exchange was complete. Code
    /// [`ErrorCode::Closed`].
    #[error("the connection was closed")]
    Closed,
    /// The other peer does not share a file of that name. Code
    /// [`ErrorCode::FileNotFound`].
    #[error("{user} does not share {file:?}")]
    FileNotFound {
        /// Who was asked.
        user: String,
        /// The name asked for.
        file: String,
    },
    /// The other peer (or this one) is at a limit; trying later may work. Code
    /// [`ErrorCode::Busy`].
    #[error("{0} is busy, try again later")]
    Busy(String),
    /// A download would overwrite an existing file; p2pchat never does. Code
    /// [`ErrorCode::AlreadyExists`].
    #[error("{} already exists; p2pchat never overwrites a file", .0.display())]
    AlreadyExists(PathBuf),
    /// A download's bytes did not match the hash the other peer announced; the bytes
    /// were thrown away. Code [`ErrorCode::HashMismatch`].
    #[error("download of {file:?} failed verification: expected hash {expected}, got {actual}")]
    HashMismatch {
        /// The file's name.
        file: String,
        /// The hash announced (hex).
        expected: String,
        /// The hash of what arrived (hex).
        actual: String,
    },
    /// The operation was cancelled ([`Transfer::cancel`](crate::peer::Transfer::cancel),
    /// or the peer is exiting). A cancelled download keeps its partial file for a
    /// resume. Code [`ErrorCode::Cancelled`].
    #[error("cancelled")]
    Cancelled,
    /// Nothing came within a time limit; the text says what and how long. Code
    /// [`ErrorCode::Timeout`].
    #[error("timed out: {0}")]
    Timeout(String),
    /// The peer has exited ([`Peer::exit`](crate::peer::Peer::exit) or
    /// [`Peer::shutdown`](crate::peer::Peer::shutdown)). Code [`ErrorCode::Shutdown`].
    #[error("the peer is shut down")]
    Shutdown,
    /// Something is larger than a limit allows (a message, a line). Code
    /// [`ErrorCode::TooLarge`].
    #[error("{what} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The other peer refused the request with this reason (its `ERR` code and text).
    /// Code [`ErrorCode::Refused`].
    #[error("{peer} refused: {reason}")]
    Refused {
        /// Who refused.
        peer: String,
        /// Their `ERR` code and text.
        reason: String,
    },
    /// A download refused before its first byte: it does not fit the download
    /// directory's free space minus the margin (and other running downloads). Code
    /// [`ErrorCode::TooLarge`].
    #[error("{peer} offers {file:?} needing {needed} more bytes, but the download directory has {free} bytes free, {reserved} promised to running downloads and {margin} to keep free; nothing was written")]
    NoSpace {
        /// Who offers the file.
        peer: String,
        /// The file's name.
        file: String,
        /// Bytes still to download.
        needed: u64,
        /// Bytes free in the download directory.
        free: u64,
        /// Bytes to keep free (`PeerLimits::free_space_margin`).
        margin: u64,
        /// Bytes promised to downloads already running.
        reserved: u64,
    },
    /// A download refused before its first byte: larger than
    /// `PeerLimits::max_download_size`. Code [`ErrorCode::TooLarge`].
    #[error("{peer} offers {file:?} of {size} bytes, over the maximum download size of {limit}; nothing was written")]
    DownloadTooLarge {
        /// Who offers the file.
        peer: String,
        /// The file's name.
        file: String,
        /// Its size.
        size: u64,
        /// The largest download allowed.
        limit: u64,
    },
    /// A partial download of that name from another peer, of another file, is kept:
    /// this peer's file would need it thrown away. Code [`ErrorCode::AlreadyExists`].
    #[error("{peer} offers a different {file:?} than the partial download from {origin} kept in {}; it stays: finish it from its origin, or remove it to download from {peer}", .partial.display())]
    PartialConflict {
        /// Who offers the file now.
        peer: String,
        /// The file's name.
        file: String,
        /// Who the kept partial download came from.
        origin: String,
        /// Where the partial download is.
        partial: PathBuf,
    },
    /// A chat request to an original C++ client that it did not take: it closed the
    /// connection. The original says nothing either way; it gives its person 5 s to
    /// accept and then closes. Not a decline anyone chose. Code [`ErrorCode::Timeout`].
    #[error("{0} is an original client; it did not answer the chat request (it closes a request its user does not accept within 5 s)")]
    NoAnswer(String),
    /// The key offered for a name (or a registry) differs from the one pinned before
    /// ([`known_keys`](crate::known_keys)): refused, because a compromised or
    /// restarted registry, or someone on the path, may be posing as them. Accepting the
    /// new key is the user's decision (after comparing fingerprints with the person).
    /// Code [`ErrorCode::KeyChanged`].
    #[error("the key of {subject} has changed: pinned {pinned}, now {offered}; refused. If {subject} really has a new key (compare the fingerprint with them), accept it; otherwise someone may be posing as them")]
    KeyChanged {
        /// Who: `bob` or `registry 127.0.0.1:8080`.
        subject: String,
        /// The fingerprint pinned before.
        pinned: crate::identity::Fingerprint,
        /// The fingerprint offered now.
        offered: crate::identity::Fingerprint,
    },
    /// An identity check failed: the other side refused who this peer is (not
    /// registered, not on its allow-list, a key that does not own the name), or this
    /// peer refused the other side (a key that is not the one listed for the name, an
    /// unverified partner where those are refused). Code [`ErrorCode::Denied`].
    #[error("{peer}: {reason}")]
    Denied {
        /// Who was refused or refused us (a name or an address).
        peer: String,
        /// Why.
        reason: String,
    },
    /// The named user declined a file offered to them ([`Peer::offer_file`]), or takes
    /// no files. An offer they did not answer in time is [`Error::Timeout`]. Code
    /// [`ErrorCode::Declined`].
    ///
    /// [`Peer::offer_file`]: crate::peer::Peer::offer_file
    #[error("{peer} declined the file {file:?}")]
    OfferDeclined {
        /// Who declined.
        peer: String,
        /// The file offered.
        file: String,
    },
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
            Error::NotADownloadDirectory(p) => Error::NotADownloadDirectory(p.clone()),
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
            Error::KeyChanged {
                subject,
                pinned,
                offered,
            } => Error::KeyChanged {
                subject: subject.clone(),
                pinned: *pinned,
                offered: *offered,
            },
            Error::Denied { peer, reason } => Error::Denied {
                peer: peer.clone(),
                reason: reason.clone(),
            },
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
            Error::OfferDeclined { peer, file } => Error::OfferDeclined {
                peer: peer.clone(),
                file: file.clone(),
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
            Error::NotADirectory(_) | Error::NotADownloadDirectory(_) => ErrorCode::NotADirectory,
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
            Error::KeyChanged { .. } => ErrorCode::KeyChanged,
            Error::Denied { .. } => ErrorCode::Denied,
            Error::OfferDeclined { .. } => ErrorCode::Declined,
        }
    }

    pub(crate) fn protocol(peer: impl ToString, detail: impl Into<String>) -> Error {
        Error::Protocol {
            peer: peer.to_string(),
            detail: detail.into(),
        }
    }
}

/// An I/O error's text: "timed out" for a socket timeout (whose OS text, "Resource
/// temporarily unavailable (os error 11)", says nothing to a person).
fn io_text(e: &io::Error) -> String {
    if is_timeout(e) {
        "timed out (no answer in time)".to_string()
    } else {
        e.to_string()
    }
}

/// [`Error::PortUnavailable`]'s text: port 0 means "any free port", so failing there
/// means the system has none left, not that "port 0" is taken.
fn port_text(port: u16, source: &io::Error) -> String {
    if port == 0 {
        format!("no free port to listen on: {source}")
    } else {
        format!("port {port} is not available: {source}")
    }
}

/// Whether an I/O error is a socket timeout (`WouldBlock` on Unix, `TimedOut` elsewhere).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
