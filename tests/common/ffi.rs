//! For the tests that call the C ABI from Rust: C strings, the thread's last error, and
//! connecting a peer on 127.0.0.1 with the callbacks a test sets.

use p2pchat::panic::p2p_last_error_message;
use p2pchat::peer::{
    p2p_peer, p2p_peer_config, p2p_peer_config_free, p2p_peer_config_new,
    p2p_peer_config_set_identity_file, p2p_peer_config_set_listen_ip, p2p_peer_connect,
};
use p2pchat::registry::{p2p_registry, p2p_registry_address, p2p_registry_start};
use p2pchat::status::p2p_status::P2P_OK;
use p2pchat::strings::p2p_string_free;
use std::ffi::{CStr, CString};
use std::path::Path;
use std::ptr::null_mut;

pub fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// `p2p_last_error_message()` of this thread.
pub fn last_error() -> String {
    // SAFETY: the library returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(p2p_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// Start a registry on a free loopback port; its handle (the caller frees it) and its
/// `ip:port`.
pub fn start_registry() -> (*mut p2p_registry, CString) {
    let mut registry = null_mut();
    let mut addr = null_mut();
    // SAFETY: valid arguments; the address string is copied, then freed.
    unsafe {
        assert_eq!(
            p2p_registry_start(c"127.0.0.1:0".as_ptr(), None, null_mut(), &mut registry),
            P2P_OK
        );
        assert_eq!(p2p_registry_address(registry, &mut addr), P2P_OK);
        let text = CStr::from_ptr(addr).to_owned();
        p2p_string_free(addr);
        (registry, text)
    }
}

/// Connect `name`, sharing `dir`, listening on 127.0.0.1, with a fresh identity (its key
/// file in a temporary directory, removed once the peer has loaded it: never the real
/// user's config); `configure` sets callbacks and user data on the config before it
/// connects (whatever it points at must outlive the peer). Panics with the library's
/// message when connecting fails.
pub fn connect_peer(
    registry: &CStr,
    name: &str,
    dir: &Path,
    configure: impl FnOnce(*mut p2p_peer_config),
) -> *mut p2p_peer {
    let mut config = null_mut();
    let mut peer = null_mut();
    let dir = c(dir.to_str().unwrap());
    let keys = tempfile::tempdir().unwrap();
    let key_file = c(keys.path().join(format!("{name}.key")).to_str().unwrap());
    // SAFETY: valid arguments; the config is freed once connected.
    unsafe {
        assert_eq!(
            p2p_peer_config_new(
                registry.as_ptr(),
                c(name).as_ptr(),
                dir.as_ptr(),
                &mut config
            ),
            P2P_OK
        );
        assert_eq!(
            p2p_peer_config_set_listen_ip(config, c"127.0.0.1".as_ptr()),
            P2P_OK
        );
        assert_eq!(
            p2p_peer_config_set_identity_file(config, key_file.as_ptr()),
            P2P_OK
        );
        configure(config);
        let status = p2p_peer_connect(config, &mut peer);
        p2p_peer_config_free(config);
        assert_eq!(status, P2P_OK, "connecting {name}: {}", last_error());
    }
    peer
}
