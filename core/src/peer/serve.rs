//! The peer's listener: accepts other peers' connections and serves each request (a
//! file, or a chat request) on its own thread, at most
//! [`MAX_SERVING`](crate::limits::MAX_SERVING) at once, so a slow download or a chat
//! request waiting for its person never delays anyone else.

use super::{chat, Inner, PeerEvent};
use crate::limits::{LEGACY_GRACE, MAX_PEER_LINE, MAX_SERVING};
use crate::protocol::{parse_peer_request, PeerAnswer, PeerRequest};
use crate::transfer::send_file;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

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
        if inner.serving.load(Ordering::SeqCst) >= MAX_SERVING as u64 {
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = (&stream).write_all(
                err_line("busy", "too many requests at once, try again later").as_bytes(),
            );
            if let Ok(from) = stream.peer_addr() {
                inner.emit(PeerEvent::RequestRefused {
                    from,
                    request: String::new(),
                    reason: "busy".into(),
                });
            }
            continue;
        }
        inner.serving.fetch_add(1, Ordering::SeqCst);
        let worker = inner.clone();
        let spawned = inner.threads.spawn("p2p-serve", move || {
            serve_one(&worker, stream);
            worker.serving.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            inner.serving.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn err_line(code: &str, text: &str) -> String {
    PeerAnswer::Err {
        code: code.into(),
        text: text.into(),
    }
    .to_line()
}

fn serve_one(inner: &Arc<Inner>, stream: TcpStream) {
    let Ok(from) = stream.peer_addr() else {
        return;
    };
    let setup = stream
        .set_read_timeout(Some(inner.io_timeout))
        .and_then(|()| stream.set_write_timeout(Some(inner.io_timeout)))
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| stream.try_clone());
    let Ok(read_half) = setup else {
        return;
    };
    let key = inner.track_socket(&stream);
    let mut reader = BufReader::new(read_half);
    let refuse = |request: String, code: &str, reason: String, legacy: bool| {
        if !legacy {
            let _ = (&stream).write_all(err_line(code, &reason).as_bytes());
        }
        inner.emit(PeerEvent::RequestRefused {
            from,
            request,
            reason,
        });
    };
    match read_request(&stream, &mut reader, inner.io_timeout) {
        Ok(None) => {}
        Err(reason) => refuse(String::new(), "bad-request", reason, false),
        Ok(Some(raw)) => match parse_peer_request(&raw) {
            Err(e) => refuse(
                String::from_utf8_lossy(&raw).into_owned(),
                e.code,
                e.text,
                false,
            ),
            Ok(PeerRequest::Chat { from: name, legacy }) => {
                inner.forget_socket(key);
                chat::offer(inner, reader, stream, name, legacy);
                return;
            }
            Ok(PeerRequest::File {
                name,
                offset,
                legacy,
            }) => serve_file(inner, &stream, from, &name, offset, legacy, &refuse),
        },
    }
    inner.forget_socket(key);
}

fn serve_file(
    inner: &Inner,
    stream: &TcpStream,
    from: SocketAddr,
    name: &str,
    offset: u64,
    legacy: bool,
    refuse: &dyn Fn(String, &str, String, bool),
) {
    let request = format!("FILE {name}");
    let (file, info) = match inner.share.open_file(name) {
        Ok(found) => found,
        Err(_) => {
            refuse(
                request,
                "not-found",
                format!("{name:?} is not shared"),
                legacy,
            );
            return;
        }
    };
    if offset > info.size {
        let why = format!("offset {offset} is past the end ({} bytes)", info.size);
        refuse(request, "bad-offset", why, legacy);
        return;
    }
    if !legacy {
        let answer = PeerAnswer::File {
            size: info.size,
            hash: info.hash.to_hex().to_string(),
        };
        let mut w = stream;
        if w.write_all(answer.to_line().as_bytes()).is_err() {
            return;
        }
    }
    match send_file(stream, &file, offset, info.size - offset) {
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
}

/// Read the first message: a `\n`-terminated line, or a legacy unterminated
/// `CHAT,…`/`FILE,…` that is whole once no more bytes come within the grace period.
/// `Ok(None)`: the other side went away without asking anything.
fn read_request(
    stream: &TcpStream,
    reader: &mut BufReader<TcpStream>,
    io_timeout: Duration,
) -> Result<Option<Vec<u8>>, String> {
    let mut buf = Vec::new();
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if is_legacy_start(&buf) {
                    break;
                }
                return Err("request timed out".into());
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
            let _ = stream.set_read_timeout(Some(LEGACY_GRACE));
        }
    }
    let _ = stream.set_read_timeout(Some(io_timeout));
    Ok(Some(buf))
}

fn is_legacy_start(buf: &[u8]) -> bool {
    buf.starts_with(b"CHAT,") || buf.starts_with(b"FILE,")
}
