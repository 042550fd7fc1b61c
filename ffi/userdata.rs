//! The C caller's `void *user_data`, carried to callbacks on library threads.

use std::ffi::c_void;

/// A `void *user_data` the caller promised is usable from the library's threads (the
/// header says so for every callback).
#[derive(Debug, Clone, Copy)]
pub struct UserData(pub *mut c_void);

// SAFETY: the pointer is never dereferenced by the library, only handed back to the
// caller's callbacks, whose documentation says they run on library threads.
unsafe impl Send for UserData {}
// SAFETY: as above.
unsafe impl Sync for UserData {}

impl UserData {
    /// The pointer. (A method, not `.0`, so closures capture the whole `Send` value
    /// rather than the raw field.)
    pub fn ptr(self) -> *mut c_void {
        self.0
    }
}
