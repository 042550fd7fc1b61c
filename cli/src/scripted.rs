//! The non-interactive commands: `users`, `files`, `whois`, `share`, `fetch`, `send`.
//! Each prints its result on stdout and fails with a one-line error. Names, filenames
//! and chat text from others are printed through [`crate::visible`] (names and
//! filenames cannot hold control characters, but may hold format characters such as
//! bidi overrides).

use crate::args::{FetchArgs, FilesArgs, Identity, RegistryArg, SendArgs, ShareArgs, WhoisArgs};
use crate::failure::Failure;
use crate::visible::{message, visible};
use crossbeam_channel::{select, TrySendError};
use p2pcore::peer::{ChatClosedBy, Peer, PeerBuilder, RegistryClient};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn registry(args: &RegistryArg) -> Result<RegistryClient, Failure> {
    let addr = &args.registry;
    RegistryClient::connect_with(addr, args.mode())
        .map_err(|e| Failure::new(format!("cannot reach the registry at {addr}: {e}")))
}

/// `p2pchat users`
pub fn users(args: &RegistryArg) -> Result<(), Failure> {
    for user in registry(args)?.users()? {
        println!("{}", visible(&user));
    }
    Ok(())
}

/// `p2pchat files [USER]`
pub fn files(args: &FilesArgs) -> Result<(), Failure> {
    let client = registry(&args.registry)?;
    match &args.user {
        Some(user) => {
            for file in client.files_of(user)? {
                println!("{}", visible(&file));
            }
        }
        None => {
            for (user, files) in client.all_files()? {
                for file in files {
                    println!("{}: {}", visible(&user), visible(&file));
                }
            }
        }
    }
    Ok(())
}

/// `p2pchat whois USER`
pub fn whois(args: &WhoisArgs) -> Result<(), Failure> {
    let client = registry(&args.registry)?;
    let info = client.peer_info(&args.user)?;
    println!("{}", info.addr);
    if client.is_legacy() {
        eprintln!("note: the registry is an original one; it cannot tell original clients from p2pchat peers, so p2pchat talks to everyone in the original's protocol");
    } else if info.legacy {
        eprintln!(
            "note: {} is an original client (unframed chat, downloads without a hash)",
            visible(&args.user)
        );
    }
    Ok(())
}

fn builder(registry: &RegistryArg, id: &Identity, dir: &Path) -> PeerBuilder {
    let b = Peer::builder(&registry.registry, &id.user, dir)
        .port(id.port)
        .registry_mode(registry.mode());
    match id.listen {
        Some(ip) => b.listen_ip(ip),
        None => b,
    }
}

/// Most things `share` has heard and not printed yet. Messages and chat ends wait for
/// room (on the chat's reader thread: TCP then slows the sender), so a stalled stdout
/// holds at most this many messages of at most 64 KiB each.
const SHARE_QUEUE: usize = 32;

/// What `share` hears from its hooks, printed on the main thread.
enum Heard {
    Request { from: String, accepted: bool },
    Message { from: String, text: String },
    Closed(String, ChatClosedBy),
}

/// `p2pchat share`: online until SIGINT/SIGTERM.
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
    let peer = builder(&args.registry, &args.id, &args.dir)
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
    println!(
        "sharing as {} on {}",
        visible(peer.username()),
        peer.listen_addr().port()
    );
    // Write errors (a reader that went away) are ignored: sharing goes on.
    let mut out = std::io::stdout();
    loop {
        select! {
            recv(heard) -> h => {
                let n = dropped.swap(0, Ordering::Relaxed);
                if n > 0 {
                    eprintln!("... {n} chat-request lines dropped (output too slow)");
                }
                match h {
                    Ok(Heard::Message { from, text }) => {
                        let prefix = format!("{}: ", visible(&from));
                        let _ = writeln!(out, "{}", message(&prefix, &text));
                    }
                    Ok(Heard::Request { from, accepted }) => eprintln!(
                        "chat request from {}: {}",
                        visible(&from),
                        if accepted { "accepted" } else { "declined" }
                    ),
                    Ok(Heard::Closed(who, by)) => {
                        eprintln!("the chat with {} ended ({by:?})", visible(&who))
                    }
                    Err(_) => break,
                }
            },
            recv(signals) -> _ => break,
        }
    }
    drop(stop);
    peer.exit();
    Ok(())
}

/// `p2pchat fetch`
pub fn fetch(args: &FetchArgs) -> Result<(), Failure> {
    let signals = crate::signals::channel();
    let peer = builder(&args.registry, &args.id, &args.dir).connect()?;
    let result = peer
        .fetch(&args.from, &args.file)
        .and_then(|t| crate::progress::watch(&t, &signals).map(|path| (path, t.is_verified())));
    peer.exit();
    let (path, verified) = result?;
    let shown = visible(&path.display().to_string()).into_owned();
    println!("{shown}");
    if !verified {
        eprintln!("saved {shown} (unverified: original client, no hash)");
    }
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
    let peer = builder(&args.registry, &args.id, dir).connect()?;
    let result = peer.chat(&args.to).and_then(|chat| {
        let sent = args.messages.iter().try_for_each(|m| chat.send(m));
        chat.close();
        sent
    });
    peer.exit();
    result?;
    Ok(())
}
