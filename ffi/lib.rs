//! The C ABI of p2pchat.

/// The library version as a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn p2p_version() -> *const std::ffi::c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
