//! The non-interactive commands: `users`, `files`, `whois`, `share`, `fetch`, `send`.
//! Each prints its result on stdout and fails with a one-line error.

use crate::args::{FetchArgs, FilesArgs, Identity, RegistryArg, SendArgs, ShareArgs, WhoisArgs};
use crate::failure::Failure;
use p2pcore::peer::{ChatClosedBy, Peer, PeerBuilder, RegistryClient};
use std::path::Path;

fn registry(addr: &str) -> Result<RegistryClient, Failure> {
    RegistryClient::connect(addr)
        .map_err(|e| Failure::new(format!("cannot reach the registry at {addr}: {e}")))
}

/// `p2pchat users`
pub fn users(args: &RegistryArg) -> Result<(), Failure> {
    for user in registry(&args.registry)?.users()? {
        println!("{user}");
    }
    Ok(())
}

/// `p2pchat files [USER]`
pub fn files(args: &FilesArgs) -> Result<(), Failure> {
    let client = registry(&args.registry.registry)?;
    match &args.user {
        Some(user) => {
            for file in client.files_of(user)? {
                println!("{file}");
            }
        }
        None => {
            for (user, files) in client.all_files()? {
                for file in files {
                    println!("{user}: {file}");
                }
            }
        }
    }
    Ok(())
}

/// `p2pchat whois USER`
pub fn whois(args: &WhoisArgs) -> Result<(), Failure> {
    let addr = registry(&args.registry.registry)?.peer_addr(&args.user)?;
    println!("{addr}");
    Ok(())
}

fn builder(registry: &str, id: &Identity, dir: &Path) -> PeerBuilder {
    Peer::builder(registry, &id.user, dir).port(id.port)
}

/// What `share` hears from its hooks, printed on the main thread.
enum Heard {
    Request { from: String, accepted: bool },
    Message { from: String, text: String },
    Closed(String, ChatClosedBy),
}

/// `p2pchat share`: online until SIGINT/SIGTERM.
pub fn share(args: &ShareArgs) -> Result<(), Failure> {
    let signals = crate::signals::channel();
    let (tx, heard) = crossbeam_channel::unbounded();
    let accept = args.accept_chats;
    let (t1, t2, t3) = (tx.clone(), tx.clone(), tx);
    let peer = builder(&args.registry.registry, &args.id, &args.dir)
        .on_chat_request(move |request| {
            let from = request.from().to_string();
            let accepted = accept && request.accept().is_ok();
            let _ = t1.send(Heard::Request { from, accepted });
        })
        .on_chat_message(move |_, from, text| {
            let _ = t2.send(Heard::Message {
                from: from.to_string(),
                text: text.to_string(),
            });
        })
        .on_chat_closed(move |_, who, by| {
            let _ = t3.send(Heard::Closed(who.to_string(), by));
        })
        .connect()?;
    println!(
        "sharing as {} on {}",
        peer.username(),
        peer.listen_addr().port()
    );
    loop {
        crossbeam_channel::select! {
            recv(heard) -> h => match h {
                Ok(Heard::Message { from, text }) => println!("{from}: {text}"),
                Ok(Heard::Request { from, accepted }) => eprintln!(
                    "chat request from {from}: {}",
                    if accepted { "accepted" } else { "declined" }
                ),
                Ok(Heard::Closed(who, by)) => eprintln!("the chat with {who} ended ({by:?})"),
                Err(_) => break,
            },
            recv(signals) -> _ => break,
        }
    }
    peer.exit();
    Ok(())
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
    println!("{}", path.display());
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
