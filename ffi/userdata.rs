//! The C caller's `void *user_data`, carried to callbacks on library threads.

use parking_lot::Mutex;
use std::collections::HashMap;
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

/// Starts an async request with `start` (a core `…_async_with` call), listing
/// `user_data` in `table` under the request's id before anything can answer it, and
/// unlisting it when the request could not start. The table's lock is taken only to
/// insert or remove: the answer's hook takes it too, so it is never held across the
/// call into the core.
pub(crate) fn start_listed(
    table: &Mutex<HashMap<u64, UserData>>,
    user_data: *mut c_void,
    start: impl FnOnce(&mut dyn FnMut(u64)) -> p2pcore::Result<u64>,
) -> p2pcore::Result<u64> {
    let mut listed = None;
    let started = start(&mut |id| {
        table.lock().insert(id, UserData(user_data));
        listed = Some(id);
    });
    if started.is_err() {
        if let Some(id) = listed {
            table.lock().remove(&id);
        }
    }
    started
}
