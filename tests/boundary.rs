//! The C boundary, called from Rust exactly as C calls it: statuses for NULLs and
//! non-UTF-8 strings, out-parameters untouched on failure, the last-error message,
//! panics contained, handles used after their parent stopped, and chat requests
//! answered later from another thread.

use p2pchat::chat::*;
use p2pchat::panic::p2p_last_error_message;
use p2pchat::peer::*;
use p2pchat::registry::*;
use p2pchat::status::{p2p_status, p2p_status_name, FfiError};
use p2pchat::strings::*;
use p2pchat::transfer::*;
use p2pchat::{p2p_max_chat_message_length, p2p_version, p2p_version_number};
use p2pcore::ErrorCode;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use p2p_status::*;

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn last_error() -> String {
    // SAFETY: the library returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(p2p_last_error_message()) }
        .to_str()
        .unwrap()
        .to_string()
}

/// Take a string the library handed out.
fn take(s: *mut c_char) -> String {
    assert!(!s.is_null());
    // SAFETY: a string from the library, freed once here.
    unsafe {
        let text = CStr::from_ptr(s).to_str().unwrap().to_string();
        p2p_string_free(s);
        text
    }
}

fn take_list(mut list: p2p_string_list) -> Vec<String> {
    // SAFETY: a list from the library, freed once here.
    unsafe {
        let v = (0..list.len)
            .map(|i| {
                CStr::from_ptr(*list.items.add(i))
                    .to_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        p2p_string_list_free(&mut list);
        v
    }
}

/// A pointer moved to another thread in a test.
struct SendPtr<T>(*mut T);
// SAFETY: the handles are documented as usable from any thread.
unsafe impl<T> Send for SendPtr<T> {}

/// What one peer's callbacks saw.
#[derive(Default)]
struct Inbox {
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Default)]
struct State {
    auto_accept: bool,
    requests: Vec<SendPtr<p2p_chat_request>>,
    accepted: Vec<SendPtr<p2p_chat>>,
    messages: Vec<String>,
    closed: Vec<p2p_chat_closed_by>,
}

impl Inbox {
    fn wait<T>(&self, mut f: impl FnMut(&mut State) -> Option<T>) -> T {
        let mut state = self.state.lock().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = f(&mut state) {
                return v;
            }
            let left = deadline
                .checked_duration_since(std::time::Instant::now())
                .expect("timed out waiting for a callback");
            state = self.cv.wait_timeout(state, left).unwrap().0;
        }
    }
}

unsafe extern "C" fn on_request(ud: *mut c_void, request: *mut p2p_chat_request) {
    let inbox = &*(ud as *const Inbox);
    let mut state = inbox.state.lock().unwrap();
    if state.auto_accept {
        let mut chat = null_mut();
        assert_eq!(p2p_chat_request_accept(request, &mut chat), P2P_OK);
        p2p_chat_request_free(request);
        state.accepted.push(SendPtr(chat));
    } else {
        state.requests.push(SendPtr(request)); // answered later by the test
    }
    inbox.cv.notify_all();
}

unsafe extern "C" fn on_message(
    ud: *mut c_void,
    _id: u64,
    from: *const c_char,
    text: *const c_char,
    len: usize,
) {
    let inbox = &*(ud as *const Inbox);
    let text = std::slice::from_raw_parts(text.cast::<u8>(), len);
    let line = format!(
        "{}: {}",
        CStr::from_ptr(from).to_str().unwrap(),
        String::from_utf8_lossy(text)
    );
    inbox.state.lock().unwrap().messages.push(line);
    inbox.cv.notify_all();
}

unsafe extern "C" fn on_closed(
    ud: *mut c_void,
    _id: u64,
    _peer: *const std::ffi::c_char,
    by: p2p_chat_closed_by,
) {
    let inbox = &*(ud as *const Inbox);
    inbox.state.lock().unwrap().closed.push(by);
    inbox.cv.notify_all();
}

unsafe extern "C" fn count_events(ud: *mut c_void, event: *const p2p_registry_event) {
    let counter = &*(ud as *const AtomicUsize);
    if (*event).kind == p2p_registry_event_kind::P2P_REGISTRY_QUERY {
        assert!(!(*event).query.is_null() && !(*event).outcome.is_null());
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// A registry on a free loopback port, with its address.
fn registry() -> (*mut p2p_registry, CString) {
    let mut registry = null_mut();
    let mut addr = null_mut();
    // SAFETY: valid arguments.
    unsafe {
        assert_eq!(
            p2p_registry_start(c("127.0.0.1:0").as_ptr(), None, null_mut(), &mut registry),
            P2P_OK
        );
        assert_eq!(p2p_registry_address(registry, &mut addr), P2P_OK);
    }
    (registry, c(&take(addr)))
}

/// A config for `name` sharing `dir`, and the temporary directory holding its identity
/// key (keep it until the peer has connected; never the real user's config).
fn config(
    addr: &CStr,
    name: &str,
    dir: &Path,
    inbox: Option<&Inbox>,
) -> (*mut p2p_peer_config, tempfile::TempDir) {
    let mut config = null_mut();
    let dir = c(dir.to_str().unwrap());
    let keys = tempfile::tempdir().unwrap();
    let key_file = c(keys.path().join("id.key").to_str().unwrap());
    // SAFETY: valid arguments; `inbox` outlives the peer in every test.
    unsafe {
        assert_eq!(
            p2p_peer_config_new(addr.as_ptr(), c(name).as_ptr(), dir.as_ptr(), &mut config),
            P2P_OK
        );
        assert_eq!(
            p2p_peer_config_set_listen_ip(config, c("127.0.0.1").as_ptr()),
            P2P_OK
        );
        assert_eq!(
            p2p_peer_config_set_identity_file(config, key_file.as_ptr()),
            P2P_OK
        );
        if let Some(inbox) = inbox {
            let ud = inbox as *const Inbox as *mut c_void;
            assert_eq!(p2p_peer_config_set_user_data(config, ud), P2P_OK);
            assert_eq!(
                p2p_peer_config_on_chat_request(config, Some(on_request)),
                P2P_OK
            );
            assert_eq!(
                p2p_peer_config_on_chat_message(config, Some(on_message)),
                P2P_OK
            );
            assert_eq!(
                p2p_peer_config_on_chat_closed(config, Some(on_closed)),
                P2P_OK
            );
        }
    }
    (config, keys)
}

fn connect(addr: &CStr, name: &str, dir: &Path, inbox: Option<&Inbox>) -> *mut p2p_peer {
    let (config, _keys) = config(addr, name, dir, inbox);
    let mut peer = null_mut();
    // SAFETY: valid arguments.
    unsafe {
        assert_eq!(
            p2p_peer_connect(config, &mut peer),
            P2P_OK,
            "{}",
            last_error()
        );
        p2p_peer_config_free(config);
    }
    peer
}

#[test]
fn status_values_are_the_engine_error_codes() {
    let codes = [
        ErrorCode::Io,
        ErrorCode::InvalidArgument,
        ErrorCode::UsernameTaken,
        ErrorCode::InvalidUsername,
        ErrorCode::NotADirectory,
        ErrorCode::PortUnavailable,
        ErrorCode::Registry,
        ErrorCode::Protocol,
        ErrorCode::UserNotFound,
        ErrorCode::Declined,
        ErrorCode::Closed,
        ErrorCode::FileNotFound,
        ErrorCode::Busy,
        ErrorCode::AlreadyExists,
        ErrorCode::HashMismatch,
        ErrorCode::Cancelled,
        ErrorCode::Timeout,
        ErrorCode::Shutdown,
        ErrorCode::TooLarge,
        ErrorCode::Refused,
        ErrorCode::KeyChanged,
        ErrorCode::Denied,
    ];
    for code in codes {
        assert_eq!(p2p_status::from_code(code) as i32, code as i32, "{code:?}");
    }
    assert_eq!(P2P_OK as i32, 0);
    assert_eq!(p2p_status::ALL.len(), codes.len() + 5);
}

#[test]
fn status_names_are_distinct_and_unknown_values_are_safe() {
    let name = |s: i32| {
        unsafe { CStr::from_ptr(p2p_status_name(s)) }
            .to_str()
            .unwrap()
    };
    let mut names: Vec<&str> = p2p_status::ALL.iter().map(|s| name(*s as i32)).collect();
    assert_eq!(names[0], "P2P_OK");
    assert_eq!(name(P2P_USER_NOT_FOUND as i32), "P2P_USER_NOT_FOUND");
    assert_eq!(name(21), "P2P_KEY_CHANGED");
    assert_eq!(name(22), "P2P_DENIED");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), p2p_status::ALL.len());
    assert_eq!(name(-1), "P2P_UNKNOWN_STATUS");
    assert_eq!(name(999), "P2P_UNKNOWN_STATUS");
}

#[test]
fn version_is_the_package_version() {
    let v = unsafe { CStr::from_ptr(p2p_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    let part = |s: &str| s.parse::<u32>().unwrap();
    assert_eq!(
        p2p_version_number(),
        part(env!("CARGO_PKG_VERSION_MAJOR")) * 10000
            + part(env!("CARGO_PKG_VERSION_MINOR")) * 100
            + part(env!("CARGO_PKG_VERSION_PATCH"))
    );
    assert_eq!(
        p2p_max_chat_message_length(),
        p2pcore::limits::MAX_CHAT_MESSAGE
    );
}

#[test]
fn null_arguments_give_a_status_and_leave_outputs_untouched() {
    let sentinel = std::ptr::dangling_mut::<p2p_registry>();
    let mut registry = sentinel;
    unsafe {
        assert_eq!(
            p2p_registry_start(null(), None, null_mut(), &mut registry),
            P2P_NULL_ARGUMENT
        );
        assert!(last_error().contains("addr"), "{}", last_error());
        assert_eq!(registry, sentinel);
        // A NULL out-pointer is refused before any work: no registry is started.
        assert_eq!(
            p2p_registry_start(c("127.0.0.1:0").as_ptr(), None, null_mut(), null_mut()),
            P2P_NULL_ARGUMENT
        );
        assert!(last_error().contains("out"));

        let mut port = 7u16;
        assert_eq!(p2p_registry_port(null(), &mut port), P2P_NULL_ARGUMENT);
        assert_eq!(port, 7);
        let mut config = null_mut();
        assert_eq!(
            p2p_peer_config_new(null(), c("a").as_ptr(), c("/tmp").as_ptr(), &mut config),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(
            p2p_peer_config_new(c("x:1").as_ptr(), null(), c("/tmp").as_ptr(), &mut config),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(
            p2p_peer_config_new(c("x:1").as_ptr(), c("a").as_ptr(), null(), &mut config),
            P2P_NULL_ARGUMENT
        );
        assert!(config.is_null());
        assert_eq!(p2p_peer_config_set_port(null_mut(), 1), P2P_NULL_ARGUMENT);
        assert_eq!(
            p2p_peer_config_on_chat_message(null_mut(), None),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(p2p_peer_connect(null(), &mut null_mut()), P2P_NULL_ARGUMENT);

        let mut list = p2p_string_list {
            items: std::ptr::dangling_mut(),
            len: 3,
        };
        assert_eq!(p2p_peer_users(null(), &mut list), P2P_NULL_ARGUMENT);
        assert_eq!((list.items, list.len), (std::ptr::dangling_mut(), 3));
        assert_eq!(
            p2p_peer_files_of(null(), c("bob").as_ptr(), &mut list),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(p2p_peer_exit(null_mut()), P2P_NULL_ARGUMENT);
        assert_eq!(
            p2p_peer_chat(null(), c("bob").as_ptr(), &mut null_mut()),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(
            p2p_peer_fetch(null(), c("bob").as_ptr(), c("f").as_ptr(), &mut null_mut()),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(p2p_chat_send(null(), c("hi").as_ptr()), P2P_NULL_ARGUMENT);
        assert_eq!(p2p_chat_send_len(null(), null(), 0), P2P_NULL_ARGUMENT);
        assert_eq!(p2p_chat_close(null()), P2P_NULL_ARGUMENT);
        assert_eq!(
            p2p_chat_request_accept(null(), &mut null_mut()),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(p2p_chat_request_decline(null()), P2P_NULL_ARGUMENT);
        assert_eq!(p2p_transfer_wait(null(), null_mut()), P2P_NULL_ARGUMENT);
        assert_eq!(p2p_transfer_cancel(null()), P2P_NULL_ARGUMENT);
        assert_eq!(
            p2p_transfer_progress(null(), null_mut(), null_mut()),
            P2P_NULL_ARGUMENT
        );
        let mut ok = false;
        assert_eq!(
            p2p_username_available(null(), c("a").as_ptr(), &mut ok),
            P2P_NULL_ARGUMENT
        );

        // The interop and live-share additions follow the same rules.
        assert_eq!(
            p2p_peer_config_set_legacy_registry(null_mut(), true),
            P2P_NULL_ARGUMENT
        );
        assert!(last_error().contains("config"), "{}", last_error());
        assert_eq!(
            p2p_peer_config_set_live_share(null_mut(), true),
            P2P_NULL_ARGUMENT
        );
        let mut flag = true;
        assert_eq!(
            p2p_transfer_is_verified(null(), &mut flag),
            P2P_NULL_ARGUMENT
        );
        assert!(last_error().contains("transfer"), "{}", last_error());
        assert_eq!(
            p2p_peer_user_is_legacy(null(), c("bob").as_ptr(), &mut flag),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(
            p2p_peer_registry_is_legacy(null(), &mut flag),
            P2P_NULL_ARGUMENT
        );
        assert!(flag, "out-parameters keep what they held on failure");
    }
}

#[test]
fn non_utf8_strings_give_invalid_utf8() {
    let bad = b"b\xffd\0";
    let bad = bad.as_ptr().cast::<c_char>();
    let (registry, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    let peer = connect(&addr, "alice", dir.path(), None);
    unsafe {
        let mut config = null_mut();
        assert_eq!(
            p2p_peer_config_new(addr.as_ptr(), bad, c("/tmp").as_ptr(), &mut config),
            P2P_INVALID_UTF8
        );
        assert!(last_error().contains("username"), "{}", last_error());
        assert!(config.is_null());
        assert_eq!(
            p2p_registry_start(bad, None, null_mut(), &mut null_mut()),
            P2P_INVALID_UTF8
        );
        let mut list = p2p_string_list {
            items: null_mut(),
            len: 0,
        };
        assert_eq!(p2p_peer_files_of(peer, bad, &mut list), P2P_INVALID_UTF8);
        assert_eq!(p2p_peer_chat(peer, bad, &mut null_mut()), P2P_INVALID_UTF8);
        assert_eq!(
            p2p_peer_fetch(peer, c("alice").as_ptr(), bad, &mut null_mut()),
            P2P_INVALID_UTF8
        );
        // A path need not be UTF-8: it is taken as bytes (and here does not exist).
        let mut cfg = null_mut();
        assert_eq!(
            p2p_peer_config_new(addr.as_ptr(), c("zed").as_ptr(), bad, &mut cfg),
            P2P_OK
        );
        let mut peer2 = null_mut();
        assert_eq!(p2p_peer_connect(cfg, &mut peer2), P2P_NOT_A_DIRECTORY);
        assert!(peer2.is_null());
        p2p_peer_config_free(cfg);
        p2p_peer_free(peer);
        p2p_registry_free(registry);
    }
}

#[test]
fn last_error_message_is_set_on_failure_cleared_on_success_and_per_thread() {
    let (registry, _addr) = registry();
    unsafe {
        let mut port = 0;
        assert_eq!(p2p_registry_port(null(), &mut port), P2P_NULL_ARGUMENT);
        assert_eq!(last_error(), "registry is NULL");
        // Another thread has its own message.
        let other = std::thread::spawn(last_error).join().unwrap();
        assert_eq!(other, "");
        // Calls that cannot fail leave it alone...
        p2p_string_free(null_mut());
        let _ = p2p_version();
        assert_eq!(last_error(), "registry is NULL");
        // ...a successful fallible call clears it.
        let r = SendPtr(registry);
        assert_eq!(p2p_registry_port(r.0, &mut port), P2P_OK);
        assert_eq!(last_error(), "");
        assert_eq!(
            p2p_registry_start(
                c("not an address").as_ptr(),
                None,
                null_mut(),
                &mut null_mut()
            ),
            P2P_INVALID_ARGUMENT
        );
        assert!(!last_error().is_empty());
        p2p_registry_free(registry);
    }
}

#[test]
fn a_panic_inside_an_entry_point_becomes_p2p_panic() {
    let status = p2pchat::panic::status(|| -> Result<(), FfiError> { panic!("boom") });
    assert_eq!(status, P2P_PANIC);
    assert!(last_error().contains("boom"), "{}", last_error());
    p2pchat::panic::void(|| panic!("swallowed"));
}

#[test]
fn free_functions_accept_null_and_lists_reset_after_free() {
    unsafe {
        p2p_registry_free(null_mut());
        p2p_peer_config_free(null_mut());
        p2p_peer_free(null_mut());
        p2p_chat_free(null_mut());
        p2p_chat_request_free(null_mut());
        p2p_transfer_free(null_mut());
        p2p_string_free(null_mut());
        p2p_string_list_free(null_mut());
        p2p_user_files_list_free(null_mut());
        let mut list = p2p_string_list::from_strings(&["a", "b"]);
        p2p_string_list_free(&mut list);
        assert!(list.items.is_null() && list.len == 0);
        p2p_string_list_free(&mut list); // a reset list frees nothing
        let mut all = p2p_user_files_list::from_pairs(&[("u".into(), vec!["f".into()])]);
        p2p_user_files_list_free(&mut all);
        assert!(all.items.is_null() && all.len == 0);
        p2p_user_files_list_free(&mut all);
    }
}

#[test]
fn connect_failures_have_distinct_statuses() {
    let (registry, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    let alice = connect(&addr, "alice", dir.path(), None);
    let attempt = |name: &str, shared: &Path| {
        let (cfg, _keys) = config(&addr, name, shared, None);
        let mut peer = null_mut();
        let status = unsafe { p2p_peer_connect(cfg, &mut peer) };
        unsafe { p2p_peer_config_free(cfg) };
        assert!(peer.is_null());
        status
    };
    // Another key: alice's name is claimed by hers.
    assert_eq!(attempt("alice", dir.path()), P2P_REGISTRY);
    assert!(
        last_error().contains("claimed by another key"),
        "{}",
        last_error()
    );
    // The same key a second time: the name is taken (online).
    let (cfg, keys) = config(&addr, "carol", dir.path(), None);
    let key_file = c(keys.path().join("id.key").to_str().unwrap());
    let mut carol = null_mut();
    unsafe {
        assert_eq!(p2p_peer_connect(cfg, &mut carol), P2P_OK);
        p2p_peer_config_free(cfg);
        let (again, _keys) = config(&addr, "carol", dir.path(), None);
        assert_eq!(
            p2p_peer_config_set_identity_file(again, key_file.as_ptr()),
            P2P_OK
        );
        let mut peer = null_mut();
        assert_eq!(p2p_peer_connect(again, &mut peer), P2P_USERNAME_TAKEN);
        assert!(peer.is_null());
        p2p_peer_config_free(again);
        p2p_peer_free(carol);
    }
    assert_eq!(attempt("a,b", dir.path()), P2P_INVALID_USERNAME);
    assert_eq!(
        attempt("bob", &dir.path().join("nope")),
        P2P_NOT_A_DIRECTORY
    );
    unsafe {
        let (cfg, _keys) = config(&addr, "bob", dir.path(), None);
        assert_eq!(
            p2p_peer_config_set_listen_ip(cfg, c("localhost!").as_ptr()),
            P2P_INVALID_ARGUMENT
        );
        assert_eq!(
            p2p_peer_config_set_chat_answer_timeout_ms(cfg, 0),
            P2P_INVALID_ARGUMENT
        );
        assert_eq!(
            p2p_peer_config_set_download_dir(cfg, c("/nonexistent/x").as_ptr()),
            P2P_OK
        );
        let mut peer = null_mut();
        assert_eq!(p2p_peer_connect(cfg, &mut peer), P2P_NOT_A_DIRECTORY);
        p2p_peer_config_free(cfg);
        let mut free = true;
        assert_eq!(
            p2p_username_available(addr.as_ptr(), c("alice").as_ptr(), &mut free),
            P2P_OK
        );
        assert!(!free);
        assert_eq!(
            p2p_username_available(addr.as_ptr(), c("carol").as_ptr(), &mut free),
            P2P_OK
        );
        assert!(free);
        p2p_peer_free(alice);
        p2p_registry_free(registry);
    }
}

#[test]
fn registry_calls_after_stop_return_shutdown_and_events_were_seen() {
    let queries = AtomicUsize::new(0);
    let mut registry = null_mut();
    unsafe {
        let ud = &queries as *const AtomicUsize as *mut c_void;
        assert_eq!(
            p2p_registry_start(
                c("127.0.0.1:0").as_ptr(),
                Some(count_events),
                ud,
                &mut registry
            ),
            P2P_OK
        );
        let mut addr = null_mut();
        assert_eq!(p2p_registry_address(registry, &mut addr), P2P_OK);
        let addr = c(&take(addr));
        let dir = tempfile::tempdir().unwrap();
        let peer = connect(&addr, "alice", dir.path(), None);
        let mut n = 0;
        assert_eq!(p2p_registry_user_count(registry, &mut n), P2P_OK);
        assert_eq!(n, 1);
        p2p_peer_free(peer);
        assert_eq!(p2p_registry_stop(registry), P2P_OK);
        let seen = queries.load(Ordering::SeqCst);
        assert!(seen >= 1, "the event callback saw the INIT");
        assert_eq!(p2p_registry_stop(registry), P2P_SHUTDOWN);
        let mut list = p2p_string_list {
            items: null_mut(),
            len: 0,
        };
        assert_eq!(p2p_registry_users(registry, &mut list), P2P_SHUTDOWN);
        assert_eq!(p2p_registry_user_count(registry, &mut n), P2P_SHUTDOWN);
        let mut port = 0;
        assert_eq!(p2p_registry_port(registry, &mut port), P2P_OK);
        assert_ne!(port, 0);
        p2p_registry_free(registry);
        assert_eq!(
            queries.load(Ordering::SeqCst),
            seen,
            "no callback after stop"
        );
    }
}

#[test]
fn peer_calls_after_exit_return_shutdown() {
    let (registry, addr) = registry();
    let dir = tempfile::tempdir().unwrap();
    let peer = connect(&addr, "alice", dir.path(), None);
    unsafe {
        assert_eq!(p2p_peer_exit(peer), P2P_OK);
        assert_eq!(p2p_peer_exit(peer), P2P_SHUTDOWN);
        let mut list = p2p_string_list {
            items: null_mut(),
            len: 0,
        };
        assert_eq!(p2p_peer_users(peer, &mut list), P2P_SHUTDOWN);
        assert!(last_error().contains("stopped"));
        assert_eq!(
            p2p_peer_chat(peer, c("bob").as_ptr(), &mut null_mut()),
            P2P_SHUTDOWN
        );
        assert_eq!(
            p2p_peer_fetch(peer, c("bob").as_ptr(), c("f").as_ptr(), &mut null_mut()),
            P2P_SHUTDOWN
        );
        let mut flag = true;
        assert_eq!(
            p2p_peer_user_is_legacy(peer, c("bob").as_ptr(), &mut flag),
            P2P_SHUTDOWN
        );
        assert_eq!(p2p_peer_registry_is_legacy(peer, &mut flag), P2P_SHUTDOWN);
        assert!(flag);
        let mut users = p2p_string_list {
            items: null_mut(),
            len: 0,
        };
        assert_eq!(p2p_registry_users(registry, &mut users), P2P_OK);
        assert_eq!(
            take_list(users),
            Vec::<String>::new(),
            "exit unregistered alice"
        );
        p2p_peer_free(peer);
        p2p_registry_free(registry);
    }
}

#[test]
fn chat_handles_outlive_their_peer_and_report_closed() {
    let (registry, addr) = registry();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ia, ib) = (Inbox::default(), Inbox::default());
    ib.state.lock().unwrap().auto_accept = true;
    let a = connect(&addr, "alice", da.path(), Some(&ia));
    let b = connect(&addr, "bob", db.path(), Some(&ib));
    unsafe {
        let mut chat = null_mut();
        assert_eq!(p2p_peer_chat(a, c("bob").as_ptr(), &mut chat), P2P_OK);
        let bob_chat = ib.wait(|s| s.accepted.pop()).0;
        assert_eq!(
            p2p_chat_send_len(chat, b"with\0nul".as_ptr().cast(), 8),
            P2P_OK
        );
        ib.wait(|s| s.messages.first().cloned());
        assert_eq!(ib.state.lock().unwrap().messages[0], "alice: with\0nul");
        assert_eq!(
            p2p_chat_send_len(chat, b"\xc3".as_ptr().cast(), 1),
            P2P_INVALID_UTF8
        );
        let too_long = "x".repeat(p2p_max_chat_message_length() + 1);
        assert_eq!(p2p_chat_send(chat, c(&too_long).as_ptr()), P2P_TOO_LARGE);

        // Free alice (the parent) while her chat handle lives on.
        p2p_peer_free(a);
        ia.wait(|s| s.closed.first().copied());
        let mut closed = false;
        assert_eq!(p2p_chat_is_closed(chat, &mut closed), P2P_OK);
        assert!(closed);
        assert_eq!(p2p_chat_send(chat, c("anyone?").as_ptr()), P2P_CLOSED);
        assert_eq!(
            p2p_chat_close(chat),
            P2P_OK,
            "closing an ended chat is fine"
        );
        let mut name = null_mut();
        assert_eq!(p2p_chat_peer_name(chat, &mut name), P2P_OK);
        assert_eq!(take(name), "bob");
        p2p_chat_free(chat);

        // Bob sees the chat end, and his handle reports it too.
        ib.wait(|s| s.closed.first().copied());
        assert_eq!(p2p_chat_send(bob_chat, c("hello?").as_ptr()), P2P_CLOSED);
        p2p_chat_free(bob_chat);
        p2p_peer_free(b);
        p2p_registry_free(registry);
    }
}

#[test]
fn transfer_handles_outlive_their_peer() {
    let (registry, addr) = registry();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(db.path().join("data.bin"), vec![7u8; 100_000]).unwrap();
    let a = connect(&addr, "alice", da.path(), None);
    let b = connect(&addr, "bob", db.path(), None);
    unsafe {
        let mut t = null_mut();
        assert_eq!(
            p2p_peer_fetch(a, c("bob").as_ptr(), c("data.bin").as_ptr(), &mut t),
            P2P_OK
        );
        let mut verified = false;
        assert_eq!(p2p_transfer_is_verified(t, &mut verified), P2P_OK);
        assert!(verified, "a download from a p2pchat peer is hash-checked");
        assert_eq!(p2p_transfer_is_verified(t, null_mut()), P2P_NULL_ARGUMENT);
        let mut path = null_mut();
        assert_eq!(p2p_transfer_wait(t, &mut path), P2P_OK, "{}", last_error());
        let path = take(path);
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 100_000]);
        let mut legacy = true;
        assert_eq!(
            p2p_peer_user_is_legacy(a, c("bob").as_ptr(), &mut legacy),
            P2P_OK,
            "{}",
            last_error()
        );
        assert!(!legacy, "bob is a p2pchat peer");
        legacy = true;
        assert_eq!(p2p_peer_registry_is_legacy(a, &mut legacy), P2P_OK);
        assert!(!legacy, "the registry is a p2pchat registry");
        assert_eq!(
            p2p_peer_user_is_legacy(a, null(), &mut legacy),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(
            p2p_peer_user_is_legacy(a, c("bob").as_ptr(), null_mut()),
            P2P_NULL_ARGUMENT
        );
        legacy = true;
        assert_eq!(
            p2p_peer_user_is_legacy(a, c("nobody").as_ptr(), &mut legacy),
            P2P_USER_NOT_FOUND
        );
        assert_eq!(
            p2p_peer_user_is_legacy(a, c("bad,name").as_ptr(), &mut legacy),
            P2P_INVALID_USERNAME
        );
        assert_eq!(
            p2p_peer_user_is_legacy(a, c"b\xffd".as_ptr(), &mut legacy),
            P2P_INVALID_UTF8
        );
        assert!(legacy, "untouched on failure");
        let mut id = 0;
        assert_eq!(p2p_transfer_id(t, &mut id), P2P_OK);

        p2p_peer_free(a);
        // The handle still answers: the outcome is kept.
        assert_eq!(p2p_transfer_wait(t, null_mut()), P2P_OK);
        let (mut got, mut total) = (0, 0);
        assert_eq!(p2p_transfer_progress(t, &mut got, &mut total), P2P_OK);
        assert_eq!((got, total), (100_000, 100_000));
        assert_eq!(p2p_transfer_cancel(t), P2P_OK);
        let mut done = false;
        assert_eq!(p2p_transfer_is_finished(t, &mut done), P2P_OK);
        assert!(done);
        p2p_transfer_free(t);

        // Bob's file is not fetched again: the user is gone from the registry now.
        p2p_peer_free(b);
        p2p_registry_free(registry);
    }
}

/// Start `alice` asking `bob` for a chat on another thread; returns the join handle.
fn ask_in_background(a: *mut p2p_peer) -> std::thread::JoinHandle<(p2p_status, SendPtr<p2p_chat>)> {
    let a = SendPtr(a);
    std::thread::spawn(move || {
        let a = a;
        let mut chat = null_mut();
        let status = unsafe { p2p_peer_chat(a.0, c("bob").as_ptr(), &mut chat) };
        (status, SendPtr(chat))
    })
}

#[test]
fn chat_request_is_answered_later_from_another_thread() {
    let (registry, addr) = registry();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ia, ib) = (Inbox::default(), Inbox::default());
    let a = connect(&addr, "alice", da.path(), Some(&ia));
    let b = connect(&addr, "bob", db.path(), Some(&ib));
    unsafe {
        // Declined from this thread, after the callback returned.
        let asking = ask_in_background(a);
        let request = ib.wait(|s| s.requests.pop());
        let mut from = null_mut();
        assert_eq!(p2p_chat_request_from(request.0, &mut from), P2P_OK);
        assert_eq!(take(from), "alice");
        let mut where_from = null_mut();
        assert_eq!(p2p_chat_request_address(request.0, &mut where_from), P2P_OK);
        assert!(take(where_from).starts_with("127.0.0.1:"));
        assert_eq!(p2p_chat_request_decline(request.0), P2P_OK);
        assert_eq!(p2p_chat_request_decline(request.0), P2P_INVALID_ARGUMENT);
        assert_eq!(
            p2p_chat_request_accept(request.0, &mut null_mut()),
            P2P_INVALID_ARGUMENT
        );
        p2p_chat_request_free(request.0);
        let (status, chat) = asking.join().unwrap();
        assert_eq!(status, P2P_DECLINED);
        assert!(chat.0.is_null());

        // Accepted from yet another thread.
        let asking = ask_in_background(a);
        let request = ib.wait(|s| s.requests.pop());
        let answering = std::thread::spawn(move || {
            let request = request;
            let mut chat = null_mut();
            let status = p2p_chat_request_accept(request.0, &mut chat);
            p2p_chat_request_free(request.0);
            (status, SendPtr(chat))
        });
        let (status, bob_chat) = answering.join().unwrap();
        assert_eq!(status, P2P_OK);
        let (status, alice_chat) = asking.join().unwrap();
        assert_eq!(status, P2P_OK);
        assert_eq!(p2p_chat_send(bob_chat.0, c("hi alice").as_ptr()), P2P_OK);
        assert_eq!(ia.wait(|s| s.messages.pop()), "bob: hi alice");

        // Freeing an unanswered request declines it.
        let asking = ask_in_background(a);
        let request = ib.wait(|s| s.requests.pop());
        p2p_chat_request_free(request.0);
        assert_eq!(asking.join().unwrap().0, P2P_DECLINED);

        p2p_chat_free(alice_chat.0);
        p2p_chat_free(bob_chat.0);
        p2p_peer_free(a);
        p2p_peer_free(b);
        p2p_registry_free(registry);
    }
}

#[test]
fn chat_request_answered_after_it_expired_times_out() {
    let (registry, addr) = registry();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ib = Inbox::default();
    let a = connect(&addr, "alice", da.path(), None);
    let (cfg, _keys) = config(&addr, "bob", db.path(), Some(&ib));
    let mut b = null_mut();
    unsafe {
        assert_eq!(p2p_peer_config_set_chat_answer_timeout_ms(cfg, 200), P2P_OK);
        assert_eq!(p2p_peer_connect(cfg, &mut b), P2P_OK);
        p2p_peer_config_free(cfg);
        let asking = ask_in_background(a);
        let request = ib.wait(|s| s.requests.pop());
        // Nobody answered: a timeout for the asker too, not a refusal.
        assert_eq!(asking.join().unwrap().0, P2P_TIMEOUT);
        assert_eq!(
            p2p_chat_request_accept(request.0, &mut null_mut()),
            P2P_TIMEOUT
        );
        p2p_chat_request_free(request.0);

        // A request still held when its peer is freed can be answered (and freed)
        // safely afterwards.
        let asking = ask_in_background(a);
        let request = ib.wait(|s| s.requests.pop());
        p2p_peer_free(b);
        assert_eq!(asking.join().unwrap().0, P2P_DECLINED);
        let status = p2p_chat_request_accept(request.0, &mut null_mut());
        assert!(matches!(status, P2P_TIMEOUT | P2P_SHUTDOWN), "{status:?}");
        p2p_chat_request_free(request.0);
        p2p_peer_free(a);
        p2p_registry_free(registry);
    }
}

/// The registry handle and what stopping it from its own callback returned.
struct SelfStop {
    registry: std::sync::atomic::AtomicPtr<p2p_registry>,
    status: Mutex<Option<p2p_status>>,
}

unsafe extern "C" fn stop_from_callback(ud: *mut c_void, _event: *const p2p_registry_event) {
    let s = &*(ud as *const SelfStop);
    let registry = s.registry.load(Ordering::SeqCst);
    if !registry.is_null() {
        let status = p2p_registry_stop(registry);
        s.status.lock().unwrap().get_or_insert(status);
    }
}

#[test]
fn stopping_a_registry_from_its_own_callback_is_refused() {
    let s = SelfStop {
        registry: Default::default(),
        status: Mutex::new(None),
    };
    let mut registry = null_mut();
    unsafe {
        let ud = &s as *const SelfStop as *mut c_void;
        assert_eq!(
            p2p_registry_start(
                c("127.0.0.1:0").as_ptr(),
                Some(stop_from_callback),
                ud,
                &mut registry
            ),
            P2P_OK
        );
        s.registry.store(registry, Ordering::SeqCst);
        let mut port = 0;
        assert_eq!(p2p_registry_port(registry, &mut port), P2P_OK);
        // Any connection makes an event.
        let conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.status.lock().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "no event");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*s.status.lock().unwrap(), Some(P2P_WOULD_DEADLOCK));
        drop(conn);
        s.registry.store(null_mut(), Ordering::SeqCst);
        assert_eq!(p2p_registry_stop(registry), P2P_OK);
        p2p_registry_free(registry);
    }
}

#[test]
fn exit_ends_calls_in_progress_on_other_threads() {
    let (registry, addr) = registry();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ib = Inbox::default();
    let a = connect(&addr, "alice", da.path(), None);
    let b = connect(&addr, "bob", db.path(), Some(&ib));
    unsafe {
        let asking = ask_in_background(a);
        let request = ib.wait(|s| s.requests.pop());
        // Bob leaves the request unanswered until alice's exit has returned and her
        // pending chat call has ended; only then (or after 20 s) does he decline.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let declining = std::thread::spawn(move || {
            let request = request;
            let told = wait.recv_timeout(Duration::from_secs(20)).is_ok();
            p2p_chat_request_free(request.0);
            told
        });
        assert_eq!(p2p_peer_exit(a), P2P_OK);
        assert_eq!(asking.join().unwrap().0, P2P_SHUTDOWN); // her own exit, not an answer
        go.send(()).unwrap();
        assert!(
            declining.join().unwrap(),
            "exit and the pending call ended before bob answered"
        );
        let mut users = p2p_string_list {
            items: null_mut(),
            len: 0,
        };
        assert_eq!(p2p_peer_users(b, &mut users), P2P_OK);
        assert_eq!(take_list(users), vec!["bob"]);
        p2p_peer_free(a);
        p2p_peer_free(b);
        p2p_registry_free(registry);
    }
}

/// An original (C++) client, reduced to what a download needs: it registers with the
/// form-B `INIT` in one connection, and answers each `FILE,<name>` with the file's bytes
/// and a close (no header, no hash). Serves `count` requests, then its thread ends.
fn original_client(
    registry: &str,
    user: &str,
    file: &str,
    content: Vec<u8>,
    count: usize,
) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut init = TcpStream::connect(registry).unwrap();
    init.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    init.write_all(format!("INIT,{user},/home/{user},{port},{file}").as_bytes())
        .unwrap();
    let mut answer = [0u8; 1000];
    let n = init.read(&mut answer).unwrap();
    assert!(n > 0, "the registry answered the original's INIT");
    let file = file.to_string();
    std::thread::spawn(move || {
        for _ in 0..count {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 1000];
            let n = s.read(&mut buf).unwrap_or(0);
            if buf[..n] == *format!("FILE,{file}").as_bytes() {
                let _ = s.write_all(&content);
            }
        }
    })
}

#[test]
fn original_clients_are_reported_and_their_downloads_are_unverified() {
    let (registry, addr) = registry();
    let content: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let orig = original_client(
        addr.to_str().unwrap(),
        "orig1",
        "old.bin",
        content.clone(),
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let a = connect(&addr, "alice", dir.path(), None);
    unsafe {
        let mut legacy = false;
        assert_eq!(
            p2p_peer_user_is_legacy(a, c("orig1").as_ptr(), &mut legacy),
            P2P_OK,
            "{}",
            last_error()
        );
        assert!(legacy, "orig1 registered as an original client");
        let mut t = null_mut();
        assert_eq!(
            p2p_peer_fetch(a, c("orig1").as_ptr(), c("old.bin").as_ptr(), &mut t),
            P2P_OK,
            "{}",
            last_error()
        );
        let mut verified = true;
        assert_eq!(p2p_transfer_is_verified(t, &mut verified), P2P_OK);
        assert!(!verified, "an original client sends no hash");
        let mut encrypted = true;
        assert_eq!(p2p_transfer_is_encrypted(t, &mut encrypted), P2P_OK);
        assert!(!encrypted, "an original client speaks plaintext");
        let mut fp = null_mut();
        assert_eq!(
            p2p_peer_user_fingerprint(a, c("orig1").as_ptr(), &mut fp),
            P2P_OK
        );
        assert_eq!(
            take(fp),
            "",
            "the registry lists no key for an original client"
        );
        assert_eq!(
            p2p_peer_accept_user_key(a, c("orig1").as_ptr(), c(&"A".repeat(32)).as_ptr()),
            P2P_DENIED
        );
        let mut path = null_mut();
        assert_eq!(p2p_transfer_wait(t, &mut path), P2P_OK, "{}", last_error());
        assert_eq!(std::fs::read(take(path)).unwrap(), content);
        p2p_transfer_free(t);
        p2p_peer_free(a);
        p2p_registry_free(registry);
    }
    orig.join().unwrap();
}

/// Sends an original client's chat request (`CHAT,<name>`, unterminated, as the C++
/// client does) to the peer listening on `port`; returns the connection.
fn original_chat_request(port: u16, name: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("CHAT,{name}").as_bytes()).unwrap();
    s
}

fn listen_port(peer: *mut p2p_peer) -> u16 {
    let mut port = 0;
    // SAFETY: a live peer.
    assert_eq!(unsafe { p2p_peer_listen_port(peer, &mut port) }, P2P_OK);
    port
}

#[test]
fn an_original_clients_chat_request_is_marked_unverified_or_refused() {
    let (registry, addr) = registry();
    let (db, dc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ib = Inbox::default();
    let bob = connect(&addr, "bob", db.path(), Some(&ib));
    let _conn = original_chat_request(listen_port(bob), "old");
    let request = ib.wait(|s| s.requests.pop());
    // SAFETY: the request handle is ours (the callback handed it over), freed once.
    unsafe {
        let mut from = null_mut();
        assert_eq!(p2p_chat_request_from(request.0, &mut from), P2P_OK);
        assert_eq!(take(from), "old");
        let mut verified = true;
        assert_eq!(
            p2p_chat_request_is_verified(request.0, &mut verified),
            P2P_OK
        );
        assert!(!verified, "nobody checked an original client's name");
        let mut fp = null_mut();
        assert_eq!(p2p_chat_request_fingerprint(request.0, &mut fp), P2P_OK);
        assert_eq!(take(fp), "");
        assert_eq!(
            p2p_chat_request_is_verified(request.0, null_mut()),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(
            p2p_chat_request_fingerprint(null(), &mut null_mut()),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(p2p_chat_request_decline(request.0), P2P_OK);
        p2p_chat_request_free(request.0);
    }

    // A peer that refuses unverified partners closes on it; its callback sees nothing.
    let ic = Inbox::default();
    let (cfg, _keys) = config(&addr, "carol", dc.path(), Some(&ic));
    let mut carol = null_mut();
    // SAFETY: live handles, each freed once.
    unsafe {
        assert_eq!(p2p_peer_config_set_refuse_unverified(cfg, true), P2P_OK);
        assert_eq!(
            p2p_peer_connect(cfg, &mut carol),
            P2P_OK,
            "{}",
            last_error()
        );
        p2p_peer_config_free(cfg);
    }
    let mut conn = original_chat_request(listen_port(carol), "old");
    let mut rest = Vec::new();
    // Closed (as every refusal of an original client): end of stream, or a reset.
    let _ = std::io::Read::read_to_end(&mut conn, &mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).contains("OK"),
        "carol answered {rest:?}"
    );
    assert!(ic.state.lock().unwrap().requests.is_empty());
    // SAFETY: live handles, each freed once.
    unsafe {
        p2p_peer_free(carol);
        p2p_peer_free(bob);
        p2p_registry_free(registry);
    }
}

#[test]
fn chat_and_transfer_marks_check_their_arguments() {
    let mut flag = true;
    let mut s = null_mut();
    // SAFETY: NULL handles are what is being tested.
    unsafe {
        assert_eq!(p2p_chat_is_encrypted(null(), &mut flag), P2P_NULL_ARGUMENT);
        assert_eq!(p2p_chat_is_verified(null(), &mut flag), P2P_NULL_ARGUMENT);
        assert_eq!(p2p_chat_fingerprint(null(), &mut s), P2P_NULL_ARGUMENT);
        assert_eq!(
            p2p_transfer_is_encrypted(null(), &mut flag),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(p2p_peer_fingerprint(null(), &mut s), P2P_NULL_ARGUMENT);
        assert_eq!(
            p2p_peer_registry_fingerprint(null(), &mut s),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(
            p2p_peer_user_fingerprint(null(), c("bob").as_ptr(), &mut s),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(
            p2p_peer_accept_user_key(null(), c("bob").as_ptr(), c("x").as_ptr()),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(
            p2p_registry_release_name(null(), c("bob").as_ptr(), null_mut()),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(p2p_registry_fingerprint(null(), &mut s), P2P_NULL_ARGUMENT);
        assert_eq!(
            p2p_registry_config_set_claim_ttl_secs(null_mut(), 1),
            P2P_NULL_ARGUMENT
        );
        let mut rc = null_mut();
        assert_eq!(
            p2p_registry_config_new(c("127.0.0.1:0").as_ptr(), &mut rc),
            P2P_OK
        );
        assert_eq!(
            p2p_registry_config_set_claim_ttl_secs(rc, 0),
            P2P_INVALID_ARGUMENT
        );
        assert_eq!(p2p_registry_config_set_claim_ttl_secs(rc, 60), P2P_OK);
        assert_eq!(p2p_registry_config_set_data_dir(rc, null()), P2P_OK);
        assert_eq!(
            p2p_registry_config_set_store(null_mut(), c("memory").as_ptr()),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(p2p_registry_config_set_store(rc, null()), P2P_NULL_ARGUMENT);
        assert_eq!(
            p2p_registry_config_set_store(rc, c("redis://nowhere").as_ptr()),
            P2P_INVALID_ARGUMENT
        );
        assert_eq!(
            p2p_registry_config_set_store(rc, c("redis://127.0.0.1:6379/1").as_ptr()),
            P2P_OK
        );
        assert_eq!(
            p2p_registry_config_set_store(rc, c("memory").as_ptr()),
            P2P_OK
        );
        assert_eq!(
            p2p_registry_config_set_publish_events(null_mut(), false),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(p2p_registry_config_set_publish_events(rc, false), P2P_OK);
        p2p_registry_config_free(rc);
    }
    assert!(flag && s.is_null(), "outputs untouched on failure");
}
