//! Strings and lists crossing the boundary: reading C arguments (NULL and UTF-8
//! checked) and handing out owned strings and lists that C frees with
//! `p2p_string_free`, `p2p_string_list_free` and `p2p_user_files_list_free`.

use crate::panic;
use crate::status::{p2p_status, FfiError};
use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};

/// A list of strings handed to C. Owned by the caller: release it with
/// `p2p_string_list_free()`.
///
/// `items` holds `len` NUL-terminated UTF-8 strings; it is NULL when `len` is 0.
#[repr(C)]
#[derive(Debug)]
pub struct p2p_string_list {
    /// The strings (`len` of them; NULL when the list is empty).
    pub items: *mut *mut c_char,
    /// How many strings `items` holds.
    pub len: usize,
}

/// One user's shared files, an element of `p2p_user_files_list`.
#[repr(C)]
#[derive(Debug)]
pub struct p2p_user_files {
    /// The username (NUL-terminated UTF-8).
    pub user: *mut c_char,
    /// The filenames this user shares.
    pub files: p2p_string_list,
}

/// Every online user's shared files (the answer of `p2p_peer_all_files()`). Owned by
/// the caller: release it with `p2p_user_files_list_free()`, which frees every nested
/// string and list too.
#[repr(C)]
#[derive(Debug)]
pub struct p2p_user_files_list {
    /// The users (`len` of them; NULL when the list is empty).
    pub items: *mut p2p_user_files,
    /// How many users `items` holds.
    pub len: usize,
}

/// A C string argument as `&str`: NULL gives `P2P_NULL_ARGUMENT`, invalid UTF-8
/// `P2P_INVALID_UTF8`; `what` names the argument in the message.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that outlives the call.
pub unsafe fn arg_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, FfiError> {
    if ptr.is_null() {
        return Err(FfiError::null(what));
    }
    CStr::from_ptr(ptr).to_str().map_err(|e| {
        FfiError::new(
            p2p_status::P2P_INVALID_UTF8,
            format!("{what} is not valid UTF-8: {e}"),
        )
    })
}

/// An optional C path argument: NULL is `None` (a setter's "back to the default"),
/// anything else as [`arg_path`].
///
/// # Safety
/// As for [`arg_str`].
pub unsafe fn arg_path_or_none(
    ptr: *const c_char,
    what: &str,
) -> Result<Option<PathBuf>, FfiError> {
    if ptr.is_null() {
        Ok(None)
    } else {
        arg_path(ptr, what).map(Some)
    }
}

/// A C path argument: any bytes on Unix (paths need not be UTF-8 there), UTF-8
/// elsewhere.
///
/// # Safety
/// As for [`arg_str`].
pub unsafe fn arg_path(ptr: *const c_char, what: &str) -> Result<PathBuf, FfiError> {
    if ptr.is_null() {
        return Err(FfiError::null(what));
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(
            CStr::from_ptr(ptr).to_bytes(),
        )))
    }
    #[cfg(not(unix))]
    {
        arg_str(ptr, what).map(PathBuf::from)
    }
}

/// A handle argument as a shared reference.
///
/// # Safety
/// `ptr` is NULL or a live handle of type `T` that this library handed out.
pub unsafe fn arg_ref<'a, T>(ptr: *const T, what: &str) -> Result<&'a T, FfiError> {
    ptr.as_ref().ok_or_else(|| FfiError::null(what))
}

/// An out-parameter, checked before any work so a NULL one changes nothing.
///
/// # Safety
/// `ptr` is NULL or valid for writing a `T`.
pub unsafe fn arg_out<'a, T>(ptr: *mut T, what: &str) -> Result<&'a mut T, FfiError> {
    // A `&mut T` to possibly uninitialised memory is only ever written through
    // (`*out = value` would drop the old value; callers use `std::ptr::write`).
    ptr.as_mut().ok_or_else(|| FfiError::null(what))
}

/// Write an out-parameter without reading or dropping what was there.
pub fn put<T>(out: &mut T, value: T) {
    // SAFETY: `out` is a valid, aligned, writable place (it came from `arg_out`).
    unsafe { std::ptr::write(out, value) }
}

/// The "fill the caller's array" convention of the list functions: checks
/// `count_out`, and `ids` (NULL allowed only with `capacity` 0), then writes at most
/// `capacity` of the ids `list` gives into `ids` and how many there are into
/// `*count_out`. `list` runs after the checks, so a NULL argument is reported first.
///
/// # Safety
/// `ids` is NULL or valid for `capacity` writes; `count_out` as for [`arg_out`].
pub unsafe fn put_ids(
    ids: *mut u64,
    capacity: usize,
    count_out: *mut usize,
    list: impl FnOnce() -> Result<Vec<u64>, FfiError>,
) -> Result<(), FfiError> {
    let count_out = arg_out(count_out, "count_out")?;
    if capacity > 0 && ids.is_null() {
        return Err(FfiError::null("ids"));
    }
    let list = list()?;
    for (i, id) in list.iter().take(capacity).enumerate() {
        ids.add(i).write(*id);
    }
    put(count_out, list.len());
    Ok(())
}

/// A Rust string as a C string, with any NUL bytes replaced (they cannot be carried).
pub fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

/// A path as a C string (its bytes on Unix).
pub fn c_path(p: &Path) -> CString {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let bytes: Vec<u8> = p.as_os_str().as_bytes().to_vec();
        CString::new(bytes).unwrap_or_default()
    }
    #[cfg(not(unix))]
    {
        c_string(&p.to_string_lossy())
    }
}

/// A string handed to C, freed with `p2p_string_free`.
pub fn owned(s: &str) -> *mut c_char {
    c_string(s).into_raw()
}

/// A path handed to C, freed with `p2p_string_free`.
pub fn owned_path(p: &Path) -> *mut c_char {
    c_path(p).into_raw()
}

fn into_c_array<T>(items: Vec<T>) -> (*mut T, usize) {
    if items.is_empty() {
        return (std::ptr::null_mut(), 0);
    }
    let len = items.len();
    (Box::into_raw(items.into_boxed_slice()).cast::<T>(), len)
}

/// # Safety
/// `ptr`/`len` came from [`into_c_array`] and are released once.
unsafe fn from_c_array<T>(ptr: *mut T, len: usize) -> Vec<T> {
    if ptr.is_null() {
        return Vec::new();
    }
    Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)).into_vec()
}

impl p2p_string_list {
    /// A list handed to C.
    pub fn from_strings<S: AsRef<str>>(strings: &[S]) -> p2p_string_list {
        let (items, len) = into_c_array(strings.iter().map(|s| owned(s.as_ref())).collect());
        p2p_string_list { items, len }
    }

    /// # Safety
    /// The list came from [`p2p_string_list::from_strings`] and is released once.
    unsafe fn release(&mut self) {
        for s in from_c_array(self.items, self.len) {
            if !s.is_null() {
                drop(CString::from_raw(s));
            }
        }
        self.items = std::ptr::null_mut();
        self.len = 0;
    }
}

impl p2p_user_files_list {
    /// A list handed to C.
    pub fn from_pairs(pairs: &[(String, Vec<String>)]) -> p2p_user_files_list {
        let (items, len) = into_c_array(
            pairs
                .iter()
                .map(|(user, files)| p2p_user_files {
                    user: owned(user),
                    files: p2p_string_list::from_strings(files),
                })
                .collect(),
        );
        p2p_user_files_list { items, len }
    }
}

/// Free a string that p2pchat handed out (through a `char **` out-parameter).
///
/// NULL is a no-op. Freeing a string twice, or one not from p2pchat, is undefined
/// behaviour (the caller's bug).
#[no_mangle]
pub unsafe extern "C" fn p2p_string_free(s: *mut c_char) {
    panic::void(|| {
        if !s.is_null() {
            drop(CString::from_raw(s));
        }
    })
}

/// Free the strings of a list that p2pchat filled in, and reset it to
/// `{NULL, 0}` (the struct itself is the caller's storage and is not freed).
///
/// `list` NULL, or a list already reset, is a no-op.
#[no_mangle]
pub unsafe extern "C" fn p2p_string_list_free(list: *mut p2p_string_list) {
    panic::void(|| {
        if let Some(list) = list.as_mut() {
            list.release();
        }
    })
}

/// Free every user, filename and array of a list filled in by `p2p_peer_all_files()`,
/// and reset it to `{NULL, 0}` (the struct itself is the caller's storage).
///
/// `list` NULL, or a list already reset, is a no-op.
#[no_mangle]
pub unsafe extern "C" fn p2p_user_files_list_free(list: *mut p2p_user_files_list) {
    panic::void(|| {
        if let Some(list) = list.as_mut() {
            for mut entry in from_c_array(list.items, list.len) {
                if !entry.user.is_null() {
                    drop(CString::from_raw(entry.user));
                }
                entry.files.release();
            }
            list.items = std::ptr::null_mut();
            list.len = 0;
        }
    })
}
