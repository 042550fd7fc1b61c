//! The C ABI of p2pchat: `libp2pchat.so` / `libp2pchat.a` and `include/p2pchat.h`
//! (generated from these files by cbindgen in `build.rs`).
//!
//! This crate only translates: C strings, handles, status codes and callbacks to and
//! from [`p2pcore`], which does all the work. One module per C-facing concept:
//! [`status`] (`p2p_status`), [`panic`] (the entry-point guard and
//! `p2p_last_error_message`), [`strings`] (strings and lists), [`registry`], [`peer`],
//! [`chat`], [`transfer`].
//!
//! Rules every function follows (see the header's preamble for the C side):
//! - Every fallible function returns a `p2p_status`, writes its out-parameters only on
//!   success, and leaves a message for `p2p_last_error_message()`.
//! - NULL pointers and non-UTF-8 strings give a status, never undefined behaviour.
//! - No panic crosses into C: every entry point runs inside `catch_unwind`, and callback
//!   wrappers run inside p2pcore's hook guard (`p2pcore::thread::call_hook`).
//! - The Rust names are the C names, so `grep` finds both.
#![allow(non_camel_case_types)]
// Pointer rules are documented on each function and in the header's preamble.
#![allow(clippy::missing_safety_doc)]

// Declared in the order the header presents them (cbindgen follows this order).
pub mod status;

pub mod panic;

pub mod strings;

pub mod registry;

pub mod peer;

pub mod chat;

pub mod transfer;

pub mod push;

pub mod chat_callbacks;

pub mod events;
pub mod log;

mod callback;

mod userdata;

use std::ffi::c_char;

/// The library version (e.g. `"0.1.0"`), a static string: never free it.
#[no_mangle]
pub extern "C" fn p2p_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The library's version as one number: major * 10000 + minor * 100 + patch (0.1.0 is
/// 100), to compare with the header's `P2PCHAT_VERSION_NUMBER`: a program built
/// against this header works with a library of the same major and a number at least
/// `P2PCHAT_VERSION_NUMBER` (see the header's preamble).
#[no_mangle]
pub extern "C" fn p2p_version_number() -> u32 {
    VERSION_NUMBER
}

/// `p2p_version_number()`'s value, computed from the package version at compile time.
const VERSION_NUMBER: u32 = {
    const fn parse(s: &str) -> u32 {
        let b = s.as_bytes();
        let mut i = 0;
        let mut n = 0;
        while i < b.len() {
            n = n * 10 + (b[i] - b'0') as u32;
            i += 1;
        }
        n
    }
    parse(env!("CARGO_PKG_VERSION_MAJOR")) * 10000
        + parse(env!("CARGO_PKG_VERSION_MINOR")) * 100
        + parse(env!("CARGO_PKG_VERSION_PATCH"))
};

/// The largest chat message `p2p_chat_send()` accepts, in bytes of UTF-8.
#[no_mangle]
pub extern "C" fn p2p_max_chat_message_length() -> usize {
    p2pcore::limits::MAX_CHAT_MESSAGE
}

/// The longest username, in bytes.
#[no_mangle]
pub extern "C" fn p2p_max_username_length() -> usize {
    p2pcore::limits::MAX_USERNAME_LEN
}

/// The longest shared filename, in bytes.
#[no_mangle]
pub extern "C" fn p2p_max_filename_length() -> usize {
    p2pcore::limits::MAX_FILENAME_LEN
}
