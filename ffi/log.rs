//! `p2p_set_log_callback`: the library's log records (and Rust panics) delivered to the
//! application instead of being dropped (records) or printed on stderr (panics).
//!
//! One `log::Log` implementation is installed, the first time a callback is set; it
//! forwards each record at or above the chosen level to the callback of the moment.
//! Each sink counts the calls under way through it, so replacing or removing it waits
//! until none is left (its `user_data` may be freed as soon as that returns).

use crate::panic;
use crate::status::{p2p_status, FfiError};
use crate::userdata::UserData;
use parking_lot::Mutex;
use std::cell::Cell;
use std::ffi::{c_char, c_void, CString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

/// How serious a log record is. `P2P_LOG_ERROR` is the most serious; a callback set
/// with a minimum level gets that level and every more serious one.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum p2p_log_level {
    /// Something failed that the library could not report through a return value.
    P2P_LOG_ERROR = 1,
    /// Something unusual that the library worked around (a refused request, a file it
    /// could not read, a malformed record it ignored).
    P2P_LOG_WARN = 2,
    /// Notable events (a stale partial download removed, a transfer stopped).
    P2P_LOG_INFO = 3,
    /// Details for debugging (and the library's trace records).
    P2P_LOG_DEBUG = 4,
}

/// Receives one log record.
///
/// - `user_data`: as given to `p2p_set_log_callback()`;
/// - `level`: the record's level (never less serious than the chosen minimum);
/// - `target`: where in the library it comes from (`"p2pcore::peer::fetch"`...;
///   `"panic"` for a Rust panic), borrowed for the call;
/// - `message`: the text, one line or more, borrowed for the call (copy it to keep it).
///
/// Called on whichever thread made the record: the caller's own thread inside a
/// p2pchat call, or one of the library's threads (serving, downloading, chat readers),
/// possibly on several threads at once, so it must be thread-safe. It should return
/// quickly (the library thread waits for it). It may call p2pchat functions; records
/// those calls make on the same thread while it runs are dropped (no recursion).
pub type p2p_log_cb = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        level: p2p_log_level,
        target: *const c_char,
        message: *const c_char,
    ),
>;

#[derive(Clone)]
struct Sink {
    cb: unsafe extern "C" fn(*mut c_void, p2p_log_level, *const c_char, *const c_char),
    ud: UserData,
    min: p2p_log_level,
    /// Calls under way through this sink.
    calls: Arc<AtomicUsize>,
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

thread_local! {
    /// Inside the log callback on this thread: nested records are dropped.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

fn level_of(level: log::Level) -> p2p_log_level {
    match level {
        log::Level::Error => p2p_log_level::P2P_LOG_ERROR,
        log::Level::Warn => p2p_log_level::P2P_LOG_WARN,
        log::Level::Info => p2p_log_level::P2P_LOG_INFO,
        log::Level::Debug | log::Level::Trace => p2p_log_level::P2P_LOG_DEBUG,
    }
}

fn filter_of(min: p2p_log_level) -> log::LevelFilter {
    match min {
        p2p_log_level::P2P_LOG_ERROR => log::LevelFilter::Error,
        p2p_log_level::P2P_LOG_WARN => log::LevelFilter::Warn,
        p2p_log_level::P2P_LOG_INFO => log::LevelFilter::Info,
        p2p_log_level::P2P_LOG_DEBUG => log::LevelFilter::Trace,
    }
}

/// Hand one record to the callback, if one is set and wants that level; whether it was
/// delivered.
fn deliver(level: p2p_log_level, target: &str, message: &str) -> bool {
    if INSIDE.with(Cell::get) {
        return false;
    }
    let sink = {
        let guard = SINK.lock();
        match guard.as_ref() {
            Some(s) if level <= s.min => {
                s.calls.fetch_add(1, Ordering::SeqCst);
                s.clone()
            }
            _ => return false,
        }
    };
    let text = |s: &str| CString::new(s.replace('\0', "\\0")).unwrap_or_default();
    let (target, message) = (text(target), text(message));
    INSIDE.with(|i| i.set(true));
    // SAFETY: the caller's callback, given the caller's pointer and two strings that
    // live for the call; the header says it runs on library threads.
    let _ = std::panic::catch_unwind(|| unsafe {
        (sink.cb)(sink.ud.ptr(), level, target.as_ptr(), message.as_ptr())
    });
    INSIDE.with(|i| i.set(false));
    sink.calls.fetch_sub(1, Ordering::SeqCst);
    true
}

struct Forward;

impl log::Log for Forward {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        SINK.lock()
            .as_ref()
            .is_some_and(|s| level_of(metadata.level()) <= s.min)
    }

    fn log(&self, record: &log::Record) {
        deliver(
            level_of(record.level()),
            record.target(),
            &record.args().to_string(),
        );
    }

    fn flush(&self) {}
}

static FORWARD: Forward = Forward;

/// Install the logger and the panic hook, once.
fn install() -> bool {
    static ONCE: Once = Once::new();
    static INSTALLED: AtomicUsize = AtomicUsize::new(0);
    ONCE.call_once(|| {
        if log::set_logger(&FORWARD).is_ok() {
            INSTALLED.store(1, Ordering::SeqCst);
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("unnamed");
            let text = format!("p2pchat panicked (a bug in the library) on thread {name}: {info}");
            if !deliver(p2p_log_level::P2P_LOG_ERROR, "panic", &text) {
                previous(info);
            }
        }));
    });
    INSTALLED.load(Ordering::SeqCst) == 1
}

/// Send the library's log records at `min_level` or more serious (a `p2p_log_level`
/// value: `P2P_LOG_ERROR` ... `P2P_LOG_DEBUG`) to `callback`, with `user_data`; NULL
/// stops logging (records are then dropped). Rust panics inside the library (each is
/// also reported as `P2P_PANIC` by the call it happened in) then go to the callback as
/// `P2P_LOG_ERROR` records with target `"panic"`, instead of being printed on the
/// process's stderr; without a callback they are printed as before.
///
/// Process-wide: one callback for every peer and registry. It may be called from the
/// library's own threads, several at once (see `p2p_log_cb`). When this function
/// returns, no call of the previous callback is under way any more (except one that
/// called this function from inside the log callback itself), so the previous
/// `user_data` may be freed. `user_data` must stay valid until the callback is
/// replaced or removed.
///
/// Errors: `P2P_INVALID_ARGUMENT` (`min_level` is not a `p2p_log_level`), `P2P_BUSY`
/// (another `log` logger was installed in this process before, by Rust code linked
/// into the same library: records cannot be routed, panics still are).
#[no_mangle]
pub unsafe extern "C" fn p2p_set_log_callback(
    callback: p2p_log_cb,
    user_data: *mut c_void,
    min_level: i32,
) -> p2p_status {
    panic::status(|| {
        let min = match min_level {
            1 => p2p_log_level::P2P_LOG_ERROR,
            2 => p2p_log_level::P2P_LOG_WARN,
            3 => p2p_log_level::P2P_LOG_INFO,
            4 => p2p_log_level::P2P_LOG_DEBUG,
            other => {
                return Err(FfiError::from(p2pcore::Error::InvalidArgument(format!(
                    "log level {other} is not a p2p_log_level (1 = P2P_LOG_ERROR ... 4 = \
                     P2P_LOG_DEBUG)"
                ))))
            }
        };
        let routed = install();
        let new = callback.map(|cb| Sink {
            cb,
            ud: UserData(user_data),
            min,
            calls: Arc::new(AtomicUsize::new(0)),
        });
        let filter = new
            .as_ref()
            .map_or(log::LevelFilter::Off, |s| filter_of(s.min));
        let old = std::mem::replace(&mut *SINK.lock(), new);
        log::set_max_level(filter);
        if let Some(old) = old {
            // A call from inside the callback counts itself: do not wait for it.
            let own = usize::from(INSIDE.with(Cell::get));
            while old.calls.load(Ordering::SeqCst) > own {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if !routed {
            return Err(FfiError::from(p2pcore::Error::Busy(
                "another logger is installed in this process: p2pchat's log records \
                 cannot be routed to the callback (panics are)"
                    .into(),
            )));
        }
        Ok(())
    })
}
