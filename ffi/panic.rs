//! The guard around every entry point: no panic crosses into C, and every fallible call
//! leaves its outcome in the thread-local last-error message.
//!
//! Each `extern "C"` function body is one closure passed to [`status`] (fallible calls)
//! or [`void`] (frees and other calls that cannot fail). Nothing in here touches a
//! handle's contents.

use crate::status::{p2p_status, FfiError};
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("p2pchat panicked (a bug in the library): {detail}")
}

/// Run a fallible entry point: `P2P_OK` and an empty message on success, the error's
/// status and text on failure, `P2P_PANIC` if it panicked.
pub fn status(f: impl FnOnce() -> Result<(), FfiError>) -> p2p_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            set_last_error("");
            p2p_status::P2P_OK
        }
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status
        }
        Err(payload) => {
            set_last_error(&panic_text(payload.as_ref()));
            p2p_status::P2P_PANIC
        }
    }
}

/// Run an entry point that cannot fail (frees): a panic is swallowed, never unwound
/// into C, and the last-error message is left alone.
pub fn void(f: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(f));
}

/// Run a free function that may refuse (freeing a peer or registry from inside its own
/// callback): a refusal's text goes to the last-error message, success leaves the
/// message alone (as every free does), and a panic is swallowed.
pub fn void_or_refuse(f: impl FnOnce() -> Result<(), FfiError>) {
    if let Ok(Err(e)) = catch_unwind(AssertUnwindSafe(f)) {
        set_last_error(&e.message);
    }
}

/// The text of the last failed call on the calling thread, or `""` if the last
/// fallible call on this thread succeeded (or none was made).
///
/// Never NULL. The string belongs to the library: do not free it. It stays valid until
/// the next fallible p2pchat call on the same thread (copy it if you need it longer).
/// Free functions, `p2p_version()`, `p2p_status_name()` and this function do not change
/// it, except a refused `p2p_peer_free()` or `p2p_registry_free()` (called from inside
/// that peer's or registry's own callback), which sets it to say why.
#[no_mangle]
pub extern "C" fn p2p_last_error_message() -> *const c_char {
    static EMPTY: &[u8] = b"\0";
    catch_unwind(|| LAST_ERROR.with(|e| e.borrow().as_ptr())).unwrap_or(EMPTY.as_ptr().cast())
}
