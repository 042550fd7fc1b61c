//! The non-interactive commands: `users`, `files`, `whois`, `share`, `fetch`, `send`,
//! `send-file`.
//! Each prints its result on stdout and fails with a one-line error (exit code
//! [`output::EXIT_OUTPUT_CLOSED`] when stdout itself fails). Names, filenames
//! and chat text from others are printed through [`crate::visible`] (names and
//! filenames cannot hold control characters, but may hold format characters such as
//! bidi overrides).

use crate::args::{
    FetchArgs, FilesArgs, Identity, RegistryArg, SendArgs, SendFileArgs, ShareArgs, WhoisArgs,
};
use crate::failure::{failure_at, registry_failure, Failure};
use crate::output;
use crate::visible::{message, visible};
use crossbeam_channel::{select, Receiver, TrySendError};
use p2pcore::peer::{ChatClosedBy, Peer, PeerBuilder, PeerEvent, RegistryClient};
use p2pcore::Error;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A browsing connection to the registry, its key checked against the pins.
fn registry(args: &RegistryArg) -> Result<RegistryClient, Failure> {
    let addr = &args.registry;
    let keys = args.known_keys_file();
    RegistryClient::connect_pinned(addr, args.mode(), keys.as_deref())
        .map_err(|e| registry_failure(addr, args.known_keys.as_deref(), &e))
}

/// `e` as this command's failure (a changed key gets its warning first).
fn fail(args: &RegistryArg, e: Error) -> Failure {
    failure_at(&args.registry, args.known_keys.as_deref(), e)
}

/// `p2pchat users`
pub fn users(args: &RegistryArg) -> Result<(), Failure> {
    for user in registry(args)?.users()? {
        output::print(&visible(&user))?;
    }
    Ok(())
}

/// `p2pchat files [USER]`
pub fn files(args: &FilesArgs) -> Result<(), Failure> {
    let client = registry(&args.registry)?;
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

/// `p2pchat whois USER`: where the user listens, then the fingerprint of the key the
/// registry lists for them (or why there is none).
pub fn whois(args: &WhoisArgs) -> Result<(), Failure> {
    let client = registry(&args.registry)?;
    let info = client.peer_info(&args.user)?;
    output::print(&info.addr.to_string())?;
    output::print(&crate::keys::listed_key(&info, client.is_legacy()))?;
    let keys = args.registry.known_keys_file();
    if let Some(w) = crate::keys::pin_conflict(
        keys.as_deref(),
        &args.registry.registry,
        &args.user,
        info.key,
    ) {
        output::err_line(&w);
    }
    if client.is_legacy() {
        output::err_line(
            "note: the registry is an original one; it cannot tell original clients from \
             p2pchat peers, so p2pchat talks to everyone in the original's protocol",
        );
    } else if info.legacy {
        output::err_line(&format!(
            "note: {} is an original client (unframed chat, downloads without a hash)",
            visible(&args.user)
        ));
    }
    Ok(())
}

fn builder(
    registry: &RegistryArg,
    user: &str,
    id: &Identity,
    key: &p2pcore::identity::Identity,
    dir: &Path,
) -> PeerBuilder {
    let mut b = Peer::builder(&registry.registry, user, dir)
        .port(id.port)
        .registry_mode(registry.mode())
        .identity(key.clone())
        .path_policy(id.path);
    if let Some(file) = registry.known_keys_file() {
        b = b.known_keys_file(file);
    }
    match id.listen {
        Some(ip) => b.listen_ip(ip),
        None => b,
    }
}

/// Most other names `fetch` and `send` try (`NAME~2` to `NAME~9`).
const MAX_ALTERNATE: u32 = 9;

/// Register as `id.user` and connect. An unreachable registry gets its hint.
///
/// `fetch` and `send` only need a name for the length of one run, and their user is
/// often online at the same time in a `client` or `share` of theirs. So for them
/// (`alternate`), a taken name is retried as `NAME~2`, `NAME~3`, … `NAME~9` (the first
/// free one), with a line on stderr saying so; the other user sees that name on a chat
/// request from `send`. Everything else about the run is unchanged. `share` stays
/// strict: it is someone's presence, and a second one under a made-up name would
/// mislead. Every name tried uses the same key: `--identity`, else the user's own
/// (`NAME.key` in the config directory), so `NAME~2` is still provably NAME's.
fn connect_as(
    registry: &RegistryArg,
    id: &Identity,
    dir: &Path,
    alternate: bool,
    hooks: impl Fn(PeerBuilder) -> PeerBuilder,
) -> Result<Peer, Failure> {
    let key_file = match &id.identity {
        Some(path) => path.clone(),
        None => p2pcore::identity::default_identity_file(&id.user)?,
    };
    let key = p2pcore::identity::Identity::load_or_create(&key_file)?;
    let mut name = id.user.clone();
    let mut n = 1;
    loop {
        match hooks(builder(registry, &name, id, &key, dir)).connect() {
            Ok(peer) => {
                if n > 1 {
                    output::err_line(&format!(
                        "{} is online elsewhere; this run is registered as {}",
                        visible(&id.user),
                        visible(&name)
                    ));
                }
                return Ok(peer);
            }
            Err(Error::UsernameTaken(_)) if alternate && n < MAX_ALTERNATE => {
                n += 1;
                name = format!("{}~{n}", id.user);
            }
            Err(Error::UsernameTaken(_)) if alternate => {
                return Err(Failure::new(format!(
                    "{} and {}~2 to {}~{MAX_ALTERNATE} are all online; stop one or choose another --user",
                    id.user, id.user, id.user
                )))
            }
            // The registry connection is the first thing `connect` opens after reading
            // the share: network failures are about it, and get its hint.
            Err(e @ Error::Io(_)) if is_network(&e) => {
                return Err(registry_failure(
                    &registry.registry,
                    registry.known_keys.as_deref(),
                    &e,
                ))
            }
            Err(e @ Error::Timeout(_)) => {
                return Err(registry_failure(
                    &registry.registry,
                    registry.known_keys.as_deref(),
                    &e,
                ))
            }
            Err(e) => return Err(fail(registry, e)),
        }
    }
}

/// Whether `e` is a failure to reach another host (not, say, an unreadable share).
fn is_network(e: &Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e, Error::Io(io) if matches!(
        io.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | HostUnreachable
            | NetworkUnreachable
            | AddrNotAvailable
            | TimedOut
            | WouldBlock
    ))
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
    Request {
        from: String,
        /// Their key, or a loud UNVERIFIED mark ([`crate::keys::caller_mark`]).
        mark: String,
        accepted: bool,
    },
    Message {
        from: String,
        text: String,
    },
    Closed(String, ChatClosedBy),
    /// The registry connection dropped, came back, or refused this peer again.
    Notice(String),
    /// The lines of a warning, already made visible (a changed key).
    Warning(Vec<String>),
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
    let accept_files = args.accept_files.clone();
    if let Some(dir) = &accept_files {
        if !dir.is_dir() {
            return Err(Failure::new(format!(
                "--accept-files {}: not a directory",
                dir.display()
            )));
        }
    }
    let (t1, t2, t3, t4) = (tx.clone(), tx.clone(), tx.clone(), tx);
    let registry_down = Arc::new(AtomicBool::new(false));
    let down = registry_down.clone();
    let (s2, s3) = (stopped.clone(), stopped);
    let counter = dropped.clone();
    let (notice_tx, notices) = crossbeam_channel::bounded::<String>(SHARE_NOTICES);
    let unshown = Arc::new(AtomicU64::new(0));
    let hooks = |b: PeerBuilder| {
        let (t1, t2, t3, t4) = (t1.clone(), t2.clone(), t3.clone(), t4.clone());
        let (t5, t6, t7) = (t4.clone(), t4.clone(), t4.clone());
        let (s2, s3) = (s2.clone(), s3.clone());
        let counter = counter.clone();
        let down = down.clone();
        let notice_tx = notice_tx.clone();
        let unshown_hook = unshown.clone();
        let registry = args.registry.registry.clone();
        let explicit_keys = args.registry.known_keys.clone();
        args.serving
            .apply(b)
            .live_share(true)
            .on_chat_request(move |request| {
                let from = request.from().to_string();
                let mark = crate::keys::caller_mark(
                    request.key(),
                    request.is_verified(),
                    request.is_legacy(),
                );
                let accepted = accept && request.accept().is_ok();
                let h = Heard::Request {
                    from,
                    mark,
                    accepted,
                };
                // On a serving thread: never wait; a full queue loses only this line.
                if let Err(TrySendError::Full(_)) = t1.try_send(h) {
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
            .on_event(move |e| {
                let text = match e {
                    PeerEvent::RegistryLost { detail } => {
                        down.store(true, Ordering::SeqCst);
                        format!("lost the registry ({detail}); reconnecting...")
                    }
                    PeerEvent::RegistryRestored => {
                        down.store(false, Ordering::SeqCst);
                        "registry connection restored; registered again".to_string()
                    }
                    PeerEvent::RegistrationRefused { reason } => {
                        format!("the registry refused to register again: {reason}")
                    }
                    PeerEvent::Reachability { reach, addr } => {
                        match crate::notice::reachability(*reach, *addr) {
                            Some(text) => text,
                            None => return,
                        }
                    }
                    PeerEvent::KeyChanged {
                        subject,
                        pinned,
                        offered,
                    } => {
                        let e = Error::KeyChanged {
                            subject: subject.clone(),
                            pinned: *pinned,
                            offered: *offered,
                        };
                        let lines = crate::keys::warning(&registry, explicit_keys.as_deref(), &e);
                        // Already made visible; all its lines or none.
                        let _ = t4.try_send(Heard::Warning(lines));
                        return;
                    }
                    PeerEvent::ShareSkipped { .. } | PeerEvent::ShareUpdated { .. } => {
                        let text = match e {
                            PeerEvent::ShareSkipped { name, reason } => {
                                crate::notice::skipped(name, reason)
                            }
                            PeerEvent::ShareUpdated {
                                files,
                                added,
                                removed,
                                changed,
                            } => crate::notice::updated(*files, added, removed, changed),
                            _ => return,
                        };
                        // On the share watcher's thread: never wait; count what is lost.
                        if notice_tx.try_send(text).is_err() {
                            unshown_hook.fetch_add(1, Ordering::Relaxed);
                        }
                        return;
                    }
                    _ => return,
                };
                // On the registry keeper's thread: never wait.
                let _ = t4.try_send(Heard::Notice(text));
            })
            .on_file_offer({
                let into = accept_files.clone();
                move |offer| {
                    let line = answer_offer(&offer, into.as_deref());
                    // On a serving thread: never wait.
                    let _ = t5.try_send(Heard::Notice(line));
                }
            })
            .on_transfer_done({
                move |_, path| {
                    let line = format!("received {}", path.display());
                    let _ = t6.try_send(Heard::Notice(line));
                }
            })
            .on_transfer_failed({
                move |_, e| {
                    let _ = t7.try_send(Heard::Notice(format!("receiving a file failed: {e}")));
                }
            })
    };
    let peer = connect_as(&args.registry, &args.id, &args.dir, false, hooks)?;
    drop(notice_tx);
    let files = peer.shared_files().len();
    let banner = format!(
        "sharing as {} on {}",
        visible(peer.username()),
        peer.listen_addr().port(),
    );
    // On stderr with the other status lines: stdout stays the banner and chat text.
    let folder = format!(
        "shared folder: {} ({files} file{})\n{}\n{}",
        visible(&peer.shared_dir().display().to_string()),
        if files == 1 { "" } else { "s" },
        crate::keys::own_key(&peer),
        crate::keys::registry_status(&peer, &args.registry.registry),
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
    let leaving = if registry_down.load(Ordering::SeqCst) {
        "interrupted; stopped sharing (the registry is unreachable)"
    } else {
        "interrupted; leaving the registry"
    };
    peer.exit();
    drop(quit);
    // The printer's owner: joined once it has written what is left; if stdout is
    // stalled it stays blocked in a write, and the process exit ends it.
    if done.recv_timeout(FINAL_FLUSH).is_ok() {
        let _ = printer.join();
    }
    output::err_line(leaving);
    // Stopped by a signal, like every command: 130, with the line above as its word.
    Err(Failure::interrupted(""))
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
        Heard::Request {
            from,
            mark,
            accepted,
        } => output::err_line(&format!(
            "chat request from {} {mark}: {}",
            visible(&from),
            if accepted { "accepted" } else { "declined" }
        )),
        Heard::Closed(who, by) => {
            let who = visible(&who);
            let how = match by {
                ChatClosedBy::Remote => format!("{who} closed it"),
                ChatClosedBy::Lost => "the connection was lost".to_string(),
                ChatClosedBy::Local => "closed here".to_string(),
            };
            output::err_line(&format!("the chat with {who} ended ({how})"))
        }
        Heard::Notice(text) => output::err_line(&visible(&text)),
        Heard::Warning(lines) => {
            for line in lines {
                output::err_line(&line);
            }
        }
    }
}

/// `p2pchat fetch`: the saved path on stdout; a resumed download says so on stderr.
/// Ctrl-C keeps the partial file (exit 130) and says how to resume it.
pub fn fetch(args: &FetchArgs) -> Result<(), Failure> {
    let signals = crate::signals::channel();
    let starts = crate::progress::Starts::default();
    let hook_starts = starts.clone();
    let hooks = |b: PeerBuilder| {
        let starts = hook_starts.clone();
        b.on_event(move |e| starts.record(e))
    };
    let peer = connect_as(&args.registry, &args.id, &args.dir, true, hooks)?;
    let partial = p2pcore::transfer::partial_path(peer.download_dir(), &args.file);
    let result = peer.fetch(&args.from, &args.file).and_then(|t| {
        crate::progress::watch(&t, &signals, &starts, &mut |line| output::err_line(line))
            .map(|path| (path, t.is_verified()))
    });
    peer.exit();
    let (path, verified) = match result {
        Ok(done) => done,
        Err(Error::Cancelled) => {
            let kept = std::fs::metadata(&partial).map_or(0, |m| m.len());
            return Err(Failure::interrupted(if kept > 0 {
                format!(
                    "interrupted; the partial download ({}) is kept in {}: run the same command again to resume it",
                    crate::progress::bytes(kept),
                    partial.display()
                )
            } else {
                "interrupted before any of the file arrived; nothing was kept".to_string()
            }));
        }
        Err(e) => return Err(fail(&args.registry, e)),
    };
    let shown = visible(&path.display().to_string()).into_owned();
    output::print(&shown)?;
    if !verified {
        output::err_line(&format!(
            "saved {shown} (unverified: original client, no hash)"
        ));
    }
    Ok(())
}

/// Refuses to send to `to` when it is this command's own `user`.
fn not_yourself(to: &str, user: &str) -> Result<(), Failure> {
    if to == user {
        return Err(Failure::new(format!(
            "cannot send to {}: that is you (--user)",
            visible(to)
        )));
    }
    Ok(())
}

/// The directory to share while connected: `dir`, else a new empty temporary one,
/// removed when the returned guard is dropped.
fn dir_or_temp(
    dir: Option<&Path>,
) -> Result<(std::path::PathBuf, Option<tempfile::TempDir>), Failure> {
    if let Some(d) = dir {
        return Ok((d.to_path_buf(), None));
    }
    let temp = tempfile::Builder::new()
        .prefix("p2pchat-send-")
        .tempdir()
        .map_err(|e| Failure::new(format!("cannot create a temporary directory: {e}")))?;
    Ok((temp.path().to_path_buf(), Some(temp)))
}

/// Runs `work`, a call that blocks until the other side answers, while a watcher
/// shuts `peer` down on SIGINT/SIGTERM (which ends the wait). Returns what `work`
/// returned and whether a signal stopped it.
fn until_signal<R>(peer: &Peer, signals: &Receiver<()>, work: impl FnOnce() -> R) -> (R, bool) {
    let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            select! {
                recv(signals) -> _ => {
                    peer.shutdown();
                    true
                }
                recv(done) -> _ => false,
            }
        });
        let result = work();
        drop(done_tx);
        (result, watcher.join().unwrap_or(false))
    })
}

/// `p2pchat send`
pub fn send(args: &SendArgs) -> Result<(), Failure> {
    not_yourself(&args.to, &args.id.user)?;
    let (dir, _temp) = dir_or_temp(args.dir.as_deref())?;
    let signals = crate::signals::channel();
    let peer = connect_as(&args.registry, &args.id, &dir, true, |b| b)?;
    // The chat request blocks until answered: a signal ends the wait, and the command
    // reports the interruption.
    let (result, interrupted) = until_signal(&peer, &signals, || {
        peer.chat(&args.to).and_then(|chat| {
            if let Some(w) = crate::keys::unsecured_chat(&chat) {
                output::err_line(&format!("note: {w}"));
            }
            // A direct chat is the quiet default (stderr stays empty for scripts).
            if chat.path() != p2pcore::reach::Path::Direct {
                output::err_line(&format!(
                    "chatting with {} ({})",
                    visible(chat.peer()),
                    chat.path()
                ));
            }
            let sent = args.messages.iter().try_for_each(|m| chat.send(m));
            chat.close();
            sent
        })
    });
    peer.exit();
    if interrupted {
        return Err(Failure::interrupted(
            "interrupted; the chat was not completed",
        ));
    }
    result.map_err(|e| fail(&args.registry, e))?;
    Ok(())
}

/// `share`'s answer to a file offer: accepted into `into` (`--accept-files`), else
/// declined; the line saying so (made visible when printed).
fn answer_offer(offer: &p2pcore::peer::FileOffer, into: Option<&Path>) -> String {
    let mark = crate::keys::caller_mark(offer.key(), offer.is_verified(), false);
    let what = format!(
        "file offer from {} {mark}: {} ({})",
        offer.from(),
        offer.name(),
        crate::progress::bytes(offer.size())
    );
    match into {
        Some(dir) => match offer.accept_to(dir) {
            Ok(_) => format!("{what}: accepted into {}", dir.display()),
            Err(e) => {
                offer.decline();
                format!("{what}: declined ({e})")
            }
        },
        None => {
            offer.decline();
            format!("{what}: declined (share --accept-files DIR takes files)")
        }
    }
}

/// `p2pchat send-file`: offer, wait for the answer, send; the file's name on stdout
/// once the other side confirmed it received and verified it. Ctrl-C while waiting for
/// the answer or sending stops (exit 130).
pub fn send_file(args: &SendFileArgs) -> Result<(), Failure> {
    not_yourself(&args.to, &args.id.user)?;
    if !args.file.is_file() {
        return Err(Failure::new(format!(
            "{}: not a file",
            visible(&args.file.display().to_string())
        )));
    }
    let (dir, _temp) = dir_or_temp(args.dir.as_deref())?;
    let signals = crate::signals::channel();
    let peer = connect_as(&args.registry, &args.id, &dir, true, |b| b)?;
    // The offer blocks until answered: a signal ends the wait; once sending, the
    // progress watch takes the signals.
    let (offered, interrupted) =
        until_signal(&peer, &signals, || peer.offer_file(&args.to, &args.file));
    if interrupted {
        peer.exit();
        return Err(Failure::interrupted("interrupted; the file was not sent"));
    }
    let transfer = match offered {
        Ok(t) => t,
        Err(e) => {
            peer.exit();
            return Err(fail(&args.registry, e));
        }
    };
    let starts = crate::progress::Starts::default();
    // What the other side had before (a resumed offer), not what was sent since.
    let sent = transfer.resumed_from();
    if sent > 0 {
        output::err_line(&format!(
            "{} has {} of it already: sending the rest",
            visible(&args.to),
            crate::progress::bytes(sent)
        ));
    }
    let result = crate::progress::watch(&transfer, &signals, &starts, &mut |line| {
        output::err_line(line)
    });
    peer.exit();
    match result {
        Ok(_) => {
            output::print(&visible(transfer.file()))?;
            Ok(())
        }
        Err(Error::Cancelled) => Err(Failure::interrupted(
            "interrupted; what arrived is kept on the other side: the same command resumes it",
        )),
        Err(e) => Err(fail(&args.registry, e)),
    }
}
