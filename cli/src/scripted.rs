//! The non-interactive commands: `users`, `files`, `whois`, `share`, `fetch`, `send`.
//! Each prints its result on stdout and fails with a one-line error (exit code
//! [`output::EXIT_OUTPUT_CLOSED`] when stdout itself fails). Names, filenames
//! and chat text from others are printed through [`crate::visible`] (names and
//! filenames cannot hold control characters, but may hold format characters such as
//! bidi overrides).

use crate::args::{FetchArgs, FilesArgs, Identity, RegistryArg, SendArgs, ShareArgs, WhoisArgs};
use crate::failure::Failure;
use crate::output;
use crate::visible::{message, visible};
use crossbeam_channel::{select, Receiver, TrySendError};
use p2pcore::peer::{ChatClosedBy, Peer, PeerBuilder, PeerEvent, RegistryClient};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn registry(addr: &str) -> Result<RegistryClient, Failure> {
    RegistryClient::connect(addr)
        .map_err(|e| Failure::new(format!("cannot reach the registry at {addr}: {e}")))
}

/// `p2pchat users`
pub fn users(args: &RegistryArg) -> Result<(), Failure> {
    for user in registry(&args.registry)?.users()? {
        output::print(&visible(&user))?;
    }
    Ok(())
}

/// `p2pchat files [USER]`
pub fn files(args: &FilesArgs) -> Result<(), Failure> {
    let client = registry(&args.registry.registry)?;
    match &args.user {
        Some(user) => {
            for file in client.files_of(user)? {
                output::print(&visible(&file))?;
            }
        }
        None => {
            for (user, files) in client.all_files()? {
                for file in files {
                    output::print(&format!("{}: {}", visible(&user), visible(&file)))?;
                }
            }
        }
    }
    Ok(())
}

/// `p2pchat whois USER`
pub fn whois(args: &WhoisArgs) -> Result<(), Failure> {
    let addr = registry(&args.registry.registry)?.peer_addr(&args.user)?;
    output::print(&addr.to_string())?;
    Ok(())
}

fn builder(registry: &str, id: &Identity, dir: &Path) -> PeerBuilder {
    let b = Peer::builder(registry, &id.user, dir).port(id.port);
    match id.listen {
        Some(ip) => b.listen_ip(ip),
        None => b,
    }
}

/// Most things `share` has heard and not printed yet. Messages and chat ends wait for
/// room (on the chat's reader thread: TCP then slows the sender), so a stalled stdout
/// holds at most this many messages of at most 64 KiB each.
const SHARE_QUEUE: usize = 32;
/// Most share notices (files not shared, share updates) waiting for the printer; past
/// it they are counted, and the count is printed (at most ~90 KiB held).
const SHARE_NOTICES: usize = 256;
/// Once `share` has stopped, how long it waits for its printer to write what is left.
/// A stalled stdout must not keep the process alive after SIGINT/SIGTERM: past this the
/// printer (blocked in a write) is left to the process exit.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// What `share` hears from its hooks, printed by its printer thread.
enum Heard {
    Request { from: String, accepted: bool },
    Message { from: String, text: String },
    Closed(String, ChatClosedBy),
}

/// `p2pchat share`: online until SIGINT/SIGTERM.
///
/// Hooks hand what they hear to a bounded queue; a printer thread writes it; the main
/// thread only waits for a signal, so a stalled stdout (a terminal scrolled back, a
/// pipe nobody reads) neither grows the process nor keeps a signal from stopping it.
pub fn share(args: &ShareArgs) -> Result<(), Failure> {
    let signals = crate::signals::channel();
    let (tx, heard) = crossbeam_channel::bounded(SHARE_QUEUE);
    // Dropping `stop` releases every hook waiting for room (before `Peer::exit`).
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let dropped = Arc::new(AtomicU64::new(0));
    let accept = args.accept_chats;
    let (t1, t2, t3) = (tx.clone(), tx.clone(), tx);
    let (s2, s3) = (stopped.clone(), stopped);
    let counter = dropped.clone();
    let (notice_tx, notices) = crossbeam_channel::bounded::<String>(SHARE_NOTICES);
    let unshown = Arc::new(AtomicU64::new(0));
    let unshown_hook = unshown.clone();
    let peer = builder(&args.registry.registry, &args.id, &args.dir)
        .live_share(true)
        .on_event(move |e| {
            let text = match e {
                PeerEvent::ShareSkipped { name, reason } => crate::notice::skipped(name, reason),
                PeerEvent::ShareUpdated {
                    files,
                    added,
                    removed,
                    changed,
                } => crate::notice::updated(*files, added, removed, changed),
                _ => return,
            };
            if notice_tx.try_send(text).is_err() {
                unshown_hook.fetch_add(1, Ordering::Relaxed);
            }
        })
        .on_chat_request(move |request| {
            let from = request.from().to_string();
            let accepted = accept && request.accept().is_ok();
            // On a serving thread: never wait; a full queue loses only this line.
            if let Err(TrySendError::Full(_)) = t1.try_send(Heard::Request { from, accepted }) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
        .on_chat_message(move |_, from, text| {
            let h = Heard::Message {
                from: from.to_string(),
                text: text.to_string(),
            };
            select! { send(t2, h) -> _ => {}, recv(s2) -> _ => {} }
        })
        .on_chat_closed(move |_, who, by| {
            let h = Heard::Closed(who.to_string(), by);
            select! { send(t3, h) -> _ => {}, recv(s3) -> _ => {} }
        })
        .connect()?;
    let files = peer.shared_files().len();
    let banner = format!(
        "sharing as {} on {}",
        visible(peer.username()),
        peer.listen_addr().port(),
    );
    // On stderr with the other status lines: stdout stays the banner and chat text.
    let folder = format!(
        "shared folder: {} ({files} file{})",
        visible(&peer.shared_dir().display().to_string()),
        if files == 1 { "" } else { "s" }
    );
    // Dropping `quit` tells the printer to write what is queued and end; it says on
    // `done` that it has.
    let (quit, quitting) = crossbeam_channel::bounded::<()>(0);
    let (done_tx, done) = crossbeam_channel::bounded::<()>(1);
    let spawned = std::thread::Builder::new()
        .name("print".into())
        .spawn(move || {
            let banner = [banner.as_str(), folder.as_str()];
            print_loop(banner, &heard, &quitting, &dropped, (&notices, &unshown));
            let _ = done_tx.send(());
        });
    let printer = match spawned {
        Ok(printer) => printer,
        Err(e) => {
            drop(stop);
            peer.exit();
            return Err(Failure::new(format!("cannot start the printer: {e}")));
        }
    };
    let _ = signals.recv();
    drop(stop);
    peer.exit();
    drop(quit);
    // The printer's owner: joined once it has written what is left; if stdout is
    // stalled it stays blocked in a write, and the process exit ends it.
    if done.recv_timeout(FINAL_FLUSH).is_ok() {
        let _ = printer.join();
    }
    Ok(())
}

/// `share`'s printer: the banner, then what the hooks heard until told to stop, then
/// what is still queued. Write errors (a reader that went away) are ignored: sharing
/// goes on.
fn print_loop(
    [banner, folder]: [&str; 2],
    heard: &Receiver<Heard>,
    quitting: &Receiver<()>,
    dropped: &AtomicU64,
    (notices, unshown): (&Receiver<String>, &AtomicU64),
) {
    let _ = output::line(banner);
    output::err_line(folder);
    let mut notices = notices.clone();
    loop {
        select! {
            recv(heard) -> h => match h {
                Ok(h) => show(h, dropped),
                Err(_) => break,
            },
            recv(notices) -> n => match n {
                Ok(n) => {
                    output::err_line(&n);
                    let more = unshown.swap(0, Ordering::Relaxed);
                    if more > 0 {
                        output::err_line(&format!("... {more} more share notices not shown"));
                    }
                }
                // The peer (and its hook) is gone.
                Err(_) => notices = crossbeam_channel::never(),
            },
            recv(quitting) -> _ => break,
        }
    }
    for h in heard.try_iter() {
        show(h, dropped);
    }
}

/// Print one thing `share` heard: chat text on stdout, the rest on stderr; first the
/// count of request lines that did not fit in the queue, if any.
fn show(h: Heard, dropped: &AtomicU64) {
    let n = dropped.swap(0, Ordering::Relaxed);
    if n > 0 {
        output::err_line(&format!(
            "... {n} chat-request lines dropped (output too slow)"
        ));
    }
    match h {
        Heard::Message { from, text } => {
            let prefix = format!("{}: ", visible(&from));
            let _ = output::line(&message(&prefix, &text));
        }
        Heard::Request { from, accepted } => output::err_line(&format!(
            "chat request from {}: {}",
            visible(&from),
            if accepted { "accepted" } else { "declined" }
        )),
        Heard::Closed(who, by) => {
            output::err_line(&format!("the chat with {} ended ({by:?})", visible(&who)))
        }
    }
}

/// `p2pchat fetch`
pub fn fetch(args: &FetchArgs) -> Result<(), Failure> {
    let signals = crate::signals::channel();
    let peer = builder(&args.registry.registry, &args.id, &args.dir).connect()?;
    let result = peer
        .fetch(&args.from, &args.file)
        .and_then(|t| crate::progress::watch(&t, &signals));
    peer.exit();
    let path = result?;
    output::print(&visible(&path.display().to_string()))?;
    Ok(())
}

/// `p2pchat send`
pub fn send(args: &SendArgs) -> Result<(), Failure> {
    let temp;
    let dir = match &args.dir {
        Some(d) => d.as_path(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("p2pchat-send-")
                .tempdir()
                .map_err(|e| Failure::new(format!("cannot create a temporary directory: {e}")))?;
            temp.path()
        }
    };
    let peer = builder(&args.registry.registry, &args.id, dir).connect()?;
    let result = peer.chat(&args.to).and_then(|chat| {
        let sent = args.messages.iter().try_for_each(|m| chat.send(m));
        chat.close();
        sent
    });
    peer.exit();
    result?;
    Ok(())
}
