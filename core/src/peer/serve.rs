//! The peer's listener: accepts other peers' connections and serves each admitted
//! request (a file, or a chat request) on its own thread, so a slow download or a chat
//! request waiting for its person never delays anyone else.
//!
//! Admission is bounded in total (`PeerLimits::max_serving`) and per address
//! (`PeerLimits::max_serving_per_addr`, one /64 for IPv6), so one address cannot take
//! every slot. A connection past either bound costs no thread: it goes to the
//! [refuser](super::refuser), which reads its request and answers `ERR busy …` (a
//! legacy request: a bare close) without a reset. The whole request line must arrive
//! within `PeerLimits::request_line_timeout`, however it trickles in, and a file is
//! sent under the minimum-rate rule (`min_transfer_rate` over `min_rate_window`).

use super::link::{LinkReader, LinkWriter, Partner};
use super::refuser::Job;
use super::slots::Full;
use super::{chat, is_legacy_start, push, Inner, PeerEvent};
use crate::error::Error;
use crate::identity::PublicKey;
use crate::known_keys::Subject;
use crate::limits::REVERSE_CLAIM_WAIT;
use crate::limits::{LEGACY_GRACE, MAX_PEER_LINE};
use crate::protocol::{check_username, parse_peer_request, PeerAnswer, PeerRequest};
use crate::reach::{probe_answer, Path, Preamble};
use crate::secure::{self, Kind, Marker, SecureStream, MAX_FRAME};
use crate::transfer::{send_file_min_rate, send_file_sealed};
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `ERR busy` text for a connection past a serving bound.
fn busy_text(full: Full) -> &'static str {
    match full {
        Full::Total => "too many requests at once, try again later",
        Full::Address => "too many requests from your address at once, try again later",
    }
}

pub(super) fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    for conn in listener.incoming() {
        if inner.stopping() {
            return;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                log::warn!("peer accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let Ok(from) = stream.peer_addr() else {
            continue;
        };
        let limits = &inner.limits;
        let slot = inner.serving.try_acquire(
            Some(from.ip()),
            limits.max_serving,
            limits.max_serving_per_addr,
        );
        match slot {
            Ok(slot) => {
                let worker = inner.clone();
                let spawned = inner.threads.spawn("p2p-serve", move || {
                    serve_one(&worker, stream, Path::Direct);
                    drop(slot);
                });
                if let Err(e) = spawned {
                    log::warn!("no thread to serve {from}: {e}");
                }
            }
            Err(full) => inner.refuser.send(Job::Refuse {
                stream,
                from,
                code: "busy",
                text: busy_text(full).to_string(),
            }),
        }
    }
}

/// Why a request was not served: `ERR <code> <reason>` (nothing for a legacy request).
struct Refusal {
    request: String,
    code: &'static str,
    reason: String,
    legacy: bool,
}

impl Refusal {
    fn denied(request: String, reason: String) -> Refusal {
        Refusal {
            request,
            code: "denied",
            reason,
            legacy: false,
        }
    }
}

/// Serves one connection: one the listener accepted (`path` [`Path::Direct`]), or one
/// this peer connected out on a caller's behalf (reverse or relayed), which may carry
/// only a secured link: the caller must prove who it is, and no plaintext request
/// travels through a relay.
pub(super) fn serve_one(inner: &Arc<Inner>, stream: TcpStream, path: Path) {
    let Ok(from) = stream.peer_addr() else {
        return;
    };
    let setup = stream
        .set_write_timeout(Some(inner.io_timeout))
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| stream.try_clone());
    let Ok(read_half) = setup else {
        return;
    };
    let key = inner.track_socket(&stream);
    // Large enough for a whole handshake message or record in one read.
    let mut reader = BufReader::with_capacity(MAX_FRAME + 2, read_half);
    let deadline = Instant::now() + inner.limits.request_line_timeout;
    let first = read_request(&stream, &mut reader, deadline, path == Path::Direct);
    if let Ok(Some(line)) = &first {
        if path == Path::Direct {
            if let Some(preamble) = Preamble::parse(line) {
                inner.forget_socket(key);
                serve_preamble(inner, stream, from, reader, preamble);
                return;
            }
        }
        if Marker::looks_like(line, Kind::Peer) {
            let refusal = match Marker::parse(line) {
                Some(marker) => {
                    serve_secure(inner, &stream, from, reader, marker, deadline, key, path);
                    return;
                }
                None => Refusal {
                    request: String::from_utf8_lossy(line).into_owned(),
                    code: "version",
                    reason: "unsupported secure link, this peer speaks P2P/2 IK or XX with \
                             AESGCM or ChaChaPoly"
                        .into(),
                    legacy: false,
                },
            };
            inner.forget_socket(key);
            if let Ok(w) = stream.try_clone() {
                refuse(inner, &stream, from, &mut LinkWriter::Plain(w), refusal);
            }
            return;
        }
    }
    let writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => {
            inner.forget_socket(key);
            return;
        }
    };
    let mut writer = LinkWriter::Plain(writer);
    if path != Path::Direct {
        inner.forget_socket(key);
        if let Ok(Some(line)) = first {
            let r = Refusal::denied(
                String::from_utf8_lossy(&line).into_owned(),
                format!("a {path} connection carries only a secured link (P2P/2)"),
            );
            refuse(inner, &stream, from, &mut writer, r);
        }
        return;
    }
    let refusal = match parse_first(first) {
        Ok(None) => None,
        Err(r) => Some(r),
        Ok(Some((_, request))) => match request {
            PeerRequest::Chat { from: name, legacy } => {
                match plaintext_chat_allowed(inner, &name, legacy) {
                    Err(reason) => Some(Refusal {
                        request: format!("CHAT {name}"),
                        code: "denied",
                        reason,
                        legacy,
                    }),
                    Ok(()) => {
                        let _ = stream.set_read_timeout(Some(inner.io_timeout));
                        match chat::admit(inner, from.ip()) {
                            Ok(pending) => {
                                inner.forget_socket(key);
                                chat::offer(
                                    inner,
                                    LinkReader::Plain(reader),
                                    writer,
                                    name,
                                    legacy,
                                    Partner::UNVERIFIED,
                                    pending,
                                    Path::Direct,
                                );
                                return;
                            }
                            Err((code, reason)) => Some(Refusal {
                                request: format!("CHAT {name}"),
                                code,
                                reason,
                                legacy,
                            }),
                        }
                    }
                }
            }
            PeerRequest::File { name, legacy, .. } if !legacy => Some(Refusal::denied(
                format!("FILE {name}"),
                "downloads need a secured link (P2P/2)".into(),
            )),
            PeerRequest::File { name, offset, .. } => {
                if inner.refuse_unverified || inner.serve_only.is_some() {
                    Some(Refusal {
                        request: format!("FILE {name}"),
                        code: "denied",
                        reason: "an original client cannot prove who it is".into(),
                        legacy: true,
                    })
                } else {
                    serve_file(inner, &mut writer, from, &name, offset, true, None).err()
                }
            }
            PeerRequest::Offer { name, .. } => Some(Refusal::denied(
                format!("OFFER {name}"),
                "file offers need a secured link (P2P/2)".into(),
            )),
        },
    };
    inner.forget_socket(key);
    if let Some(r) = refusal {
        refuse(inner, &stream, from, &mut writer, r);
    }
}

/// A connection to the listener that opened with a preamble instead of a request: the
/// registry's reachability check (answered, then closed), or a callee connecting back
/// because this peer asked (`CONNECT`): handed to the dialer waiting for its token.
/// A reverse connection nobody waits for is refused with
/// `ERR denied unexpected reverse connection`.
fn serve_preamble(
    inner: &Inner,
    stream: TcpStream,
    from: SocketAddr,
    reader: BufReader<TcpStream>,
    preamble: Result<Preamble, String>,
) {
    let mut writer = match stream.try_clone() {
        Ok(w) => LinkWriter::Plain(w),
        Err(_) => return,
    };
    let token = match preamble {
        Err(reason) => {
            let r = Refusal {
                request: "P2P/2 preamble".into(),
                code: "bad-request",
                reason,
                legacy: false,
            };
            refuse(inner, &stream, from, &mut writer, r);
            return;
        }
        Ok(Preamble::Probe(token)) => {
            let _ = writer.write_line(&probe_answer(token));
            let _ = stream.shutdown(std::net::Shutdown::Write);
            inner.refuser.send(Job::Linger { stream });
            return;
        }
        Ok(Preamble::Reverse(token)) => token,
    };
    // Nothing may follow the preamble before this side starts the handshake.
    let clean = reader.buffer().is_empty();
    drop(reader);
    // The callee can connect before this peer read the registry's answer to its
    // `CONNECT`: while one is in flight, give the token a moment to be waited for.
    let until = if inner.connects_in_flight.load(Ordering::SeqCst) > 0 {
        Instant::now() + REVERSE_CLAIM_WAIT
    } else {
        Instant::now()
    };
    loop {
        let waiter = inner.reverse_waiters.lock().remove(&token);
        if let Some(tx) = waiter {
            if clean {
                // The dialer may have given up just now: then the stream is dropped
                // and closed.
                let _ = tx.try_send(stream);
                return;
            }
            break;
        }
        if Instant::now() >= until || inner.stopping() {
            break;
        }
        let _ = inner.stop_rx.recv_timeout(Duration::from_millis(20));
    }
    let r = Refusal::denied(
        "P2P/2 REVERSE".into(),
        "unexpected reverse connection".into(),
    );
    refuse(inner, &stream, from, &mut writer, r);
}

/// The request in a first line as read, or the refusal for one that is none (timed
/// out, too long, malformed). `Ok(None)`: the other side went away without asking.
fn parse_first(
    first: Result<Option<Vec<u8>>, String>,
) -> Result<Option<(Vec<u8>, PeerRequest)>, Refusal> {
    match first {
        Ok(None) => Ok(None),
        Err(reason) => Err(Refusal {
            request: String::new(),
            code: "bad-request",
            reason,
            legacy: false,
        }),
        Ok(Some(raw)) => match parse_peer_request(&raw) {
            Err(e) => Err(Refusal {
                request: String::from_utf8_lossy(&raw).into_owned(),
                code: e.code,
                reason: e.text,
                legacy: false,
            }),
            Ok(request) => Ok(Some((raw, request))),
        },
    }
}

/// Answers a refusal (`ERR` line, nothing for a legacy request), reports it, and hands
/// the connection to the refuser to drain and close.
fn refuse(
    inner: &Inner,
    stream: &TcpStream,
    from: SocketAddr,
    writer: &mut LinkWriter,
    r: Refusal,
) {
    if !r.legacy {
        let answer = PeerAnswer::Err {
            code: r.code.into(),
            text: r.reason.clone(),
        };
        let _ = writer.write_line(&answer.to_line());
    }
    inner.emit(PeerEvent::RequestRefused {
        from,
        request: r.request,
        reason: r.reason,
    });
    // Drained and closed by the refuser: a clean close, and this thread is free.
    if let Ok(stream) = stream.try_clone() {
        inner.refuser.send(Job::Linger { stream });
    }
}

/// Whether a chat request that proves nothing (plaintext `P2P/1`, or an original
/// client's `CHAT,`) may go to the person: not under `refuse_unverified`, and a
/// `P2P/1` one only in the name of a user the registry lists without a key (and who was
/// never seen with one). `Err`: the `ERR denied` text.
fn plaintext_chat_allowed(inner: &Inner, name: &str, legacy: bool) -> Result<(), String> {
    if inner.refuse_unverified {
        return Err("this peer takes requests only from users who prove their key (P2P/2)".into());
    }
    if legacy {
        return Ok(());
    }
    let keyed = || {
        format!("{name} proves its identity with a key; plaintext requests in its name are refused")
    };
    let subject = Subject::Peer {
        registry: inner.registry_scope(),
        name,
    };
    if inner.known_keys.pinned(subject).is_some() {
        return Err(keyed());
    }
    match inner.peer_info(name) {
        Ok(info) if info.key.is_some() => Err(keyed()),
        Ok(info) if info.legacy => Err(format!(
            "{name} is registered as an original client, which does not ask this way"
        )),
        Ok(_) => Ok(()),
        Err(Error::UserNotFound(_)) => Err(format!("{name} is not registered")),
        Err(_) => Err(format!("cannot check {name}: the registry is unreachable")),
    }
}

/// Checks who is at the other end of a secured link: the hello names a registered user
/// whose listed key is the handshake's, and the pinned one. `Ok`: the name.
fn verify_caller(inner: &Inner, hello: &[u8], remote: &PublicKey) -> Result<String, String> {
    let name = std::str::from_utf8(hello)
        .ok()
        .filter(|n| check_username(n).is_ok())
        .ok_or_else(|| "the hello is not a valid username".to_string())?;
    match inner.peer_info(name) {
        Ok(info) => match info.key {
            Some(k) if k == *remote => {}
            Some(_) => {
                return Err(format!(
                    "{name} is registered with another key than this link's {}",
                    remote.fingerprint()
                ))
            }
            None => {
                return Err(format!(
                    "{name} is registered without a key, so this link's key {} is not {name}'s",
                    remote.fingerprint()
                ))
            }
        },
        Err(Error::UserNotFound(_)) => {
            return Err(format!("{name} is not registered"));
        }
        Err(_) => {
            return Err(format!(
                "cannot check {name}'s key: the registry is unreachable"
            ))
        }
    }
    match inner.check_pin(name, remote) {
        Ok(()) => Ok(name.to_string()),
        Err(Error::KeyChanged {
            pinned, offered, ..
        }) => Err(format!(
            "{name}'s key changed since this peer last saw it (pinned {pinned}, now {offered}); \
             refused until this peer's user accepts the new key"
        )),
        Err(e) => Err(format!("cannot check {name}'s key: {e}")),
    }
}

/// Whether `serve_only` lets `name` (with `key`) download.
fn may_download(inner: &Inner, name: &str, key: &PublicKey) -> bool {
    let Some(list) = &inner.serve_only else {
        return true;
    };
    list.iter().any(|entry| match entry.strip_prefix("key:") {
        Some(hex) => PublicKey::from_hex(hex.trim()).is_some_and(|k| k == *key),
        None => entry == name,
    })
}

/// A `P2P/2` link: handshake, then the `P2P/1` request inside it, served only after
/// the caller's identity checked out.
#[allow(clippy::too_many_arguments)]
fn serve_secure(
    inner: &Arc<Inner>,
    stream: &TcpStream,
    from: SocketAddr,
    reader: BufReader<TcpStream>,
    marker: Marker,
    deadline: Instant,
    key: Option<u64>,
    path: Path,
) {
    let secured = match secure::accept(reader, marker, &inner.identity, deadline) {
        Ok(s) => s,
        Err(e) => {
            inner.forget_socket(key);
            inner.emit(PeerEvent::RequestRefused {
                from,
                request: marker.to_line().trim_end().to_string(),
                reason: format!("{e}"),
            });
            if let Ok(stream) = stream.try_clone() {
                inner.refuser.send(Job::Linger { stream });
            }
            return;
        }
    };
    let SecureStream {
        reader,
        writer,
        remote,
        hello,
    } = secured;
    let mut reader = LinkReader::Secure(Box::new(reader));
    let mut writer = LinkWriter::Secure(Box::new(writer));
    let refusal = match parse_first(read_request(stream, &mut reader, deadline, false)) {
        Ok(None) => None,
        Err(r) => Some(r),
        Ok(Some((raw, request))) => match request {
            PeerRequest::Chat { legacy: true, .. } | PeerRequest::File { legacy: true, .. } => {
                Some(Refusal {
                    request: String::from_utf8_lossy(&raw).into_owned(),
                    code: "bad-request",
                    reason: "an original client's request inside a secured link".into(),
                    legacy: false,
                })
            }
            request => {
                let what = match &request {
                    PeerRequest::Chat { from, .. } => format!("CHAT {from}"),
                    PeerRequest::File { name, .. } => format!("FILE {name}"),
                    PeerRequest::Offer { name, .. } => format!("OFFER {name}"),
                };
                match verify_caller(inner, &hello, &remote) {
                    Err(reason) => Some(Refusal::denied(what, reason)),
                    Ok(user) => match request {
                        PeerRequest::Chat { from: name, .. } if name != user => {
                            Some(Refusal::denied(
                                what,
                                format!("the chat request names {name}, but this link is {user}'s"),
                            ))
                        }
                        PeerRequest::Chat { from: name, .. } => {
                            let _ = stream.set_read_timeout(Some(inner.io_timeout));
                            match chat::admit(inner, from.ip()) {
                                Ok(pending) => {
                                    inner.forget_socket(key);
                                    chat::offer(
                                        inner,
                                        reader,
                                        writer,
                                        name,
                                        false,
                                        Partner::verified(remote),
                                        pending,
                                        path,
                                    );
                                    return;
                                }
                                Err((code, reason)) => Some(Refusal {
                                    request: what,
                                    code,
                                    reason,
                                    legacy: false,
                                }),
                            }
                        }
                        PeerRequest::File { .. } if !may_download(inner, &user, &remote) => {
                            Some(Refusal::denied(
                                what,
                                format!("{user} is not among the users this peer serves files to"),
                            ))
                        }
                        PeerRequest::File { name, offset, .. } => {
                            serve_file(inner, &mut writer, from, &name, offset, false, Some(user))
                                .err()
                        }
                        PeerRequest::Offer { name, size, hash } => {
                            match push::admit(inner, from.ip(), size) {
                                Ok(place) => {
                                    let offer = (name, size, hash);
                                    let partner = Partner::verified(remote);
                                    push::offered(
                                        inner, reader, writer, from, user, partner, offer, place,
                                        path,
                                    );
                                    inner.forget_socket(key);
                                    return;
                                }
                                Err((code, reason)) => Some(Refusal {
                                    request: what,
                                    code,
                                    reason,
                                    legacy: false,
                                }),
                            }
                        }
                    },
                }
            }
        },
    };
    inner.forget_socket(key);
    if let Some(r) = refusal {
        refuse(inner, stream, from, &mut writer, r);
    }
}

/// Sends `name` from `offset` (after the `OK <size> <hash>` line, except to an original
/// client): `sendfile` on a plaintext link, sealed records on a secured one, under the
/// minimum-rate rule either way. `user`: the verified user it goes to.
fn serve_file(
    inner: &Inner,
    writer: &mut LinkWriter,
    from: SocketAddr,
    name: &str,
    offset: u64,
    legacy: bool,
    user: Option<String>,
) -> Result<(), Refusal> {
    let refusal = |code, reason| Refusal {
        request: format!("FILE {name}"),
        code,
        reason,
        legacy,
    };
    let (file, info) = inner
        .share
        .open_file(name)
        .map_err(|_| refusal("not-found", format!("{name:?} is not shared")))?;
    if offset > info.size {
        let why = format!("offset {offset} is past the end ({} bytes)", info.size);
        return Err(refusal("bad-offset", why));
    }
    if !legacy {
        let answer = PeerAnswer::File {
            size: info.size,
            hash: info.hash.to_hex().to_string(),
        };
        if writer.write_line(&answer.to_line()).is_err() {
            return Ok(());
        }
    }
    let rule = inner.limits.min_rate(inner.io_timeout);
    let len = info.size - offset;
    let sent = match writer {
        LinkWriter::Plain(stream) => send_file_min_rate(stream, &file, offset, len, rule),
        LinkWriter::Secure(w) => send_file_sealed(w, &file, offset, len, rule),
    };
    match sent {
        Ok(bytes) => {
            // The original client reads until the connection closes.
            let _ = writer.socket().shutdown(std::net::Shutdown::Write);
            inner.emit(PeerEvent::Served {
                to: from,
                file: name.to_string(),
                offset,
                bytes,
                user,
            });
        }
        Err(e) => log::info!("sending {name:?} to {from} stopped: {e}"),
    }
    Ok(())
}

/// Read the first message: a `\n`-terminated line, or a legacy unterminated
/// `CHAT,…`/`FILE,…` that is whole once no more bytes come within the grace period.
/// All of it must arrive by `deadline` (each read waits only for what is left, so a
/// trickle of bytes cannot stretch it). `Ok(None)`: the other side went away without
/// asking anything.
fn read_request(
    stream: &TcpStream,
    reader: &mut impl BufRead,
    deadline: Instant,
    legacy_ok: bool,
) -> Result<Option<Vec<u8>>, String> {
    let mut buf = Vec::new();
    let mut legacy_until: Option<Instant> = None;
    loop {
        let until = legacy_until.map_or(deadline, |g| g.min(deadline));
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            if legacy_ok && is_legacy_start(&buf) {
                break;
            }
            return Err("request timed out".into());
        }
        if stream.set_read_timeout(Some(left)).is_err() {
            return Ok(None);
        }
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue; // judged against the deadline at the top
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Ok(None),
        };
        if available.is_empty() {
            return Ok((!buf.is_empty()).then_some(buf));
        }
        if let Some(pos) = available.iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&available[..pos]);
            reader.consume(pos + 1);
            break;
        }
        let n = available.len();
        buf.extend_from_slice(available);
        reader.consume(n);
        if buf.len() > MAX_PEER_LINE {
            return Err("request line too long".into());
        }
        if legacy_ok && is_legacy_start(&buf) {
            legacy_until = Some(Instant::now() + LEGACY_GRACE);
        }
    }
    Ok(Some(buf))
}
