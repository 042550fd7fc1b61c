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

use super::refuser::Job;
use super::slots::Full;
use super::{chat, is_legacy_start, Inner, PeerEvent};
use crate::limits::{LEGACY_GRACE, MAX_PEER_LINE};
use crate::protocol::{parse_peer_request, PeerAnswer, PeerRequest};
use crate::transfer::send_file_min_rate;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
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
                    serve_one(&worker, stream);
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

fn serve_one(inner: &Arc<Inner>, stream: TcpStream) {
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
    let mut reader = BufReader::new(read_half);
    let deadline = Instant::now() + inner.limits.request_line_timeout;
    let refusal = match read_request(&stream, &mut reader, deadline) {
        Ok(None) => None,
        Err(reason) => Some(Refusal {
            request: String::new(),
            code: "bad-request",
            reason,
            legacy: false,
        }),
        Ok(Some(raw)) => match parse_peer_request(&raw) {
            Err(e) => Some(Refusal {
                request: String::from_utf8_lossy(&raw).into_owned(),
                code: e.code,
                reason: e.text,
                legacy: false,
            }),
            Ok(PeerRequest::Chat { from: name, legacy }) => {
                let _ = stream.set_read_timeout(Some(inner.io_timeout));
                match chat::admit(inner, from.ip()) {
                    Ok(pending) => {
                        inner.forget_socket(key);
                        chat::offer(inner, reader, stream, name, legacy, pending);
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
            Ok(PeerRequest::File {
                name,
                offset,
                legacy,
            }) => serve_file(inner, &stream, from, &name, offset, legacy).err(),
        },
    };
    inner.forget_socket(key);
    if let Some(r) = refusal {
        if !r.legacy {
            let answer = PeerAnswer::Err {
                code: r.code.into(),
                text: r.reason.clone(),
            };
            let _ = (&stream).write_all(answer.to_line().as_bytes());
        }
        inner.emit(PeerEvent::RequestRefused {
            from,
            request: r.request,
            reason: r.reason,
        });
        // Drained and closed by the refuser: a clean close, and this thread is free.
        inner.refuser.send(Job::Linger { stream });
    }
}

fn serve_file(
    inner: &Inner,
    stream: &TcpStream,
    from: SocketAddr,
    name: &str,
    offset: u64,
    legacy: bool,
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
        let mut w = stream;
        if w.write_all(answer.to_line().as_bytes()).is_err() {
            return Ok(());
        }
    }
    let rule = inner.limits.min_rate(inner.io_timeout);
    match send_file_min_rate(stream, &file, offset, info.size - offset, rule) {
        Ok(bytes) => {
            // The original client reads until the connection closes.
            let _ = stream.shutdown(std::net::Shutdown::Write);
            inner.emit(PeerEvent::Served {
                to: from,
                file: name.to_string(),
                offset,
                bytes,
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
    reader: &mut BufReader<TcpStream>,
    deadline: Instant,
) -> Result<Option<Vec<u8>>, String> {
    let mut buf = Vec::new();
    let mut legacy_until: Option<Instant> = None;
    loop {
        let until = legacy_until.map_or(deadline, |g| g.min(deadline));
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            if is_legacy_start(&buf) {
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
        if is_legacy_start(&buf) {
            legacy_until = Some(Instant::now() + LEGACY_GRACE);
        }
    }
    Ok(Some(buf))
}
