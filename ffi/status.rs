//! `p2p_status`, the result of every fallible call, and the conversion from
//! [`p2pcore::Error`]. Values 1..=22 are exactly [`p2pcore::ErrorCode`]'s, so C and Rust
//! callers branch on the same numbers; the C-only statuses start at 100.

use p2pcore::{Error, ErrorCode};
use std::ffi::c_char;

/// The result of every fallible p2pchat call. `P2P_OK` (0) is success; every other
/// value is a failure whose text `p2p_last_error_message()` gives.
///
/// Values 1 to 22 are the engine's error codes; 100 and above are the C boundary's own.
/// Treat unknown values as failures: new ones may be added.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum p2p_status {
    /// Success.
    P2P_OK = 0,
    /// An operating-system I/O error (connecting, reading, writing a file...).
    P2P_IO = 1,
    /// An argument is not acceptable (e.g. a malformed address, an answered request).
    P2P_INVALID_ARGUMENT = 2,
    /// The username is already registered by someone else.
    P2P_USERNAME_TAKEN = 3,
    /// The username breaks the rules (1-64 bytes, no comma, colon, control characters
    /// or surrounding spaces).
    P2P_INVALID_USERNAME = 4,
    /// The shared (or download) directory does not exist or is not a directory.
    P2P_NOT_A_DIRECTORY = 5,
    /// The listening port could not be bound.
    P2P_PORT_UNAVAILABLE = 6,
    /// The registry refused the query.
    P2P_REGISTRY = 7,
    /// The other side broke the protocol.
    P2P_PROTOCOL = 8,
    /// The user is not online.
    P2P_USER_NOT_FOUND = 9,
    /// The other side declined the chat.
    P2P_DECLINED = 10,
    /// The chat or connection is closed.
    P2P_CLOSED = 11,
    /// The other peer does not share that file.
    P2P_FILE_NOT_FOUND = 12,
    /// The other peer is busy; try again later.
    P2P_BUSY = 13,
    /// The destination file already exists; p2pchat never overwrites a file.
    P2P_ALREADY_EXISTS = 14,
    /// A download failed verification.
    P2P_HASH_MISMATCH = 15,
    /// The operation was cancelled.
    P2P_CANCELLED = 16,
    /// The operation timed out (also: a chat request nobody answered in time, one
    /// answered after it expired, and one an original C++ client closed without taking
    /// it, which is how the original says nothing).
    P2P_TIMEOUT = 17,
    /// The peer or registry has been stopped (`p2p_peer_exit`, `p2p_registry_stop`).
    P2P_SHUTDOWN = 18,
    /// A message, name or list is over its limit.
    P2P_TOO_LARGE = 19,
    /// The other peer refused the request.
    P2P_REFUSED = 20,
    /// The key the registry lists for a user differs from the one this peer pinned for
    /// that name before (like SSH's changed host key): the chat or download was
    /// refused, and a `P2P_EVENT_KEY_CHANGED` event names both fingerprints. Refused
    /// until the person has compared the new fingerprint with its owner and accepted
    /// it (`p2p_peer_user_fingerprint()`, then `p2p_peer_accept_user_key()`).
    P2P_KEY_CHANGED = 21,
    /// An identity check failed: the other side is not who it claims, or refuses who
    /// this peer is (not registered with its key, not on its serve-only list), an
    /// unverified partner was refused (`p2p_peer_config_set_refuse_unverified()`), or
    /// a fingerprint given to `p2p_peer_accept_user_key()` does not match.
    P2P_DENIED = 22,
    /// A required pointer argument was NULL.
    P2P_NULL_ARGUMENT = 100,
    /// A string argument was not valid UTF-8.
    P2P_INVALID_UTF8 = 101,
    /// The library panicked (a bug in p2pchat); the call had no effect or a partial one.
    P2P_PANIC = 102,
    /// The call was refused because it would wait for the calling thread itself: it was
    /// made from inside a library callback whose return it would have to wait for
    /// (waiting on a download from that download's own callbacks, stopping or freeing
    /// a registry or peer from one of its own callbacks). Nothing was done; make the
    /// call from another thread.
    P2P_WOULD_DEADLOCK = 103,
}

impl p2p_status {
    /// The status of an engine error code.
    pub fn from_code(code: ErrorCode) -> p2p_status {
        use p2p_status::*;
        match code {
            ErrorCode::Io => P2P_IO,
            ErrorCode::InvalidArgument => P2P_INVALID_ARGUMENT,
            ErrorCode::UsernameTaken => P2P_USERNAME_TAKEN,
            ErrorCode::InvalidUsername => P2P_INVALID_USERNAME,
            ErrorCode::NotADirectory => P2P_NOT_A_DIRECTORY,
            ErrorCode::PortUnavailable => P2P_PORT_UNAVAILABLE,
            ErrorCode::Registry => P2P_REGISTRY,
            ErrorCode::Protocol => P2P_PROTOCOL,
            ErrorCode::UserNotFound => P2P_USER_NOT_FOUND,
            ErrorCode::Declined => P2P_DECLINED,
            ErrorCode::Closed => P2P_CLOSED,
            ErrorCode::FileNotFound => P2P_FILE_NOT_FOUND,
            ErrorCode::Busy => P2P_BUSY,
            ErrorCode::AlreadyExists => P2P_ALREADY_EXISTS,
            ErrorCode::HashMismatch => P2P_HASH_MISMATCH,
            ErrorCode::Cancelled => P2P_CANCELLED,
            ErrorCode::Timeout => P2P_TIMEOUT,
            ErrorCode::Shutdown => P2P_SHUTDOWN,
            ErrorCode::TooLarge => P2P_TOO_LARGE,
            ErrorCode::Refused => P2P_REFUSED,
            ErrorCode::KeyChanged => P2P_KEY_CHANGED,
            ErrorCode::Denied => P2P_DENIED,
        }
    }

    /// The status's name as a static NUL-terminated string.
    fn name(self) -> &'static str {
        use p2p_status::*;
        match self {
            P2P_OK => "P2P_OK\0",
            P2P_IO => "P2P_IO\0",
            P2P_INVALID_ARGUMENT => "P2P_INVALID_ARGUMENT\0",
            P2P_USERNAME_TAKEN => "P2P_USERNAME_TAKEN\0",
            P2P_INVALID_USERNAME => "P2P_INVALID_USERNAME\0",
            P2P_NOT_A_DIRECTORY => "P2P_NOT_A_DIRECTORY\0",
            P2P_PORT_UNAVAILABLE => "P2P_PORT_UNAVAILABLE\0",
            P2P_REGISTRY => "P2P_REGISTRY\0",
            P2P_PROTOCOL => "P2P_PROTOCOL\0",
            P2P_USER_NOT_FOUND => "P2P_USER_NOT_FOUND\0",
            P2P_DECLINED => "P2P_DECLINED\0",
            P2P_CLOSED => "P2P_CLOSED\0",
            P2P_FILE_NOT_FOUND => "P2P_FILE_NOT_FOUND\0",
            P2P_BUSY => "P2P_BUSY\0",
            P2P_ALREADY_EXISTS => "P2P_ALREADY_EXISTS\0",
            P2P_HASH_MISMATCH => "P2P_HASH_MISMATCH\0",
            P2P_CANCELLED => "P2P_CANCELLED\0",
            P2P_TIMEOUT => "P2P_TIMEOUT\0",
            P2P_SHUTDOWN => "P2P_SHUTDOWN\0",
            P2P_TOO_LARGE => "P2P_TOO_LARGE\0",
            P2P_REFUSED => "P2P_REFUSED\0",
            P2P_KEY_CHANGED => "P2P_KEY_CHANGED\0",
            P2P_DENIED => "P2P_DENIED\0",
            P2P_NULL_ARGUMENT => "P2P_NULL_ARGUMENT\0",
            P2P_INVALID_UTF8 => "P2P_INVALID_UTF8\0",
            P2P_PANIC => "P2P_PANIC\0",
            P2P_WOULD_DEADLOCK => "P2P_WOULD_DEADLOCK\0",
        }
    }

    /// Every status, for tests and for mapping raw numbers back.
    pub const ALL: [p2p_status; 27] = {
        use p2p_status::*;
        [
            P2P_OK,
            P2P_IO,
            P2P_INVALID_ARGUMENT,
            P2P_USERNAME_TAKEN,
            P2P_INVALID_USERNAME,
            P2P_NOT_A_DIRECTORY,
            P2P_PORT_UNAVAILABLE,
            P2P_REGISTRY,
            P2P_PROTOCOL,
            P2P_USER_NOT_FOUND,
            P2P_DECLINED,
            P2P_CLOSED,
            P2P_FILE_NOT_FOUND,
            P2P_BUSY,
            P2P_ALREADY_EXISTS,
            P2P_HASH_MISMATCH,
            P2P_CANCELLED,
            P2P_TIMEOUT,
            P2P_SHUTDOWN,
            P2P_TOO_LARGE,
            P2P_REFUSED,
            P2P_KEY_CHANGED,
            P2P_DENIED,
            P2P_NULL_ARGUMENT,
            P2P_INVALID_UTF8,
            P2P_PANIC,
            P2P_WOULD_DEADLOCK,
        ]
    };
}

/// A failure on its way to C: the status to return and the text for
/// `p2p_last_error_message()`.
#[derive(Debug, Clone)]
pub struct FfiError {
    pub status: p2p_status,
    pub message: String,
}

impl FfiError {
    pub fn new(status: p2p_status, message: impl Into<String>) -> FfiError {
        FfiError {
            status,
            message: message.into(),
        }
    }

    pub fn null(what: &str) -> FfiError {
        FfiError::new(p2p_status::P2P_NULL_ARGUMENT, format!("{what} is NULL"))
    }

    /// A call refused because it would wait for its own thread (see
    /// `P2P_WOULD_DEADLOCK`); `message` says which call, from where, and what to do.
    pub fn would_deadlock(message: impl Into<String>) -> FfiError {
        FfiError::new(p2p_status::P2P_WOULD_DEADLOCK, message)
    }

    pub fn shutdown(what: &str) -> FfiError {
        FfiError::new(
            p2p_status::P2P_SHUTDOWN,
            format!("the {what} has been stopped"),
        )
    }
}

impl From<Error> for FfiError {
    fn from(e: Error) -> FfiError {
        FfiError::from(&e)
    }
}

impl From<&Error> for FfiError {
    fn from(e: &Error) -> FfiError {
        FfiError::new(p2p_status::from_code(e.code()), e.to_string())
    }
}

/// The name of a status (`"P2P_OK"`, `"P2P_USER_NOT_FOUND"`...), for logs.
///
/// Takes a plain `int` so any number is safe to pass: unknown values give
/// `"P2P_UNKNOWN_STATUS"`. The returned string is static: never free it.
#[no_mangle]
pub extern "C" fn p2p_status_name(status: i32) -> *const c_char {
    let name = p2p_status::ALL
        .iter()
        .find(|s| **s as i32 == status)
        .map_or("P2P_UNKNOWN_STATUS\0", |s| s.name());
    name.as_ptr().cast()
}
