//! The trivial servers the registry is compared with: a thread per connection, no
//! parsing, one fixed answer. They say what the machine, the kernel's loopback and the
//! load generator manage by themselves, so the registry's figure can be read as a ratio.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How a trivial server frames its input and answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Reads `\n`-terminated lines; answers each with `OK,127.0.0.1,5000\n`.
    Lines,
    /// Answers each `read` (up to 1000 bytes) with `OK,127.0.0.1,5000`, no terminator.
    Legacy,
}

const LINE_REPLY: &[u8] = b"OK,127.0.0.1,5000\n";
const LEGACY_REPLY: &[u8] = b"OK,127.0.0.1,5000";
/// A connection silent this long is dropped, so stopping never waits on a stuck client.
const HANDLER_TIMEOUT: Duration = Duration::from_secs(5);

/// A running trivial server; [`TrivialServer::stop`] (or drop) stops it and joins every
/// thread it started.
pub struct TrivialServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// A second handle on the listening socket, to `shutdown(2)` it: that wakes the
    /// accept thread out of a blocking `accept`.
    listener: TcpListener,
    accept: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl TrivialServer {
    pub fn start(style: Style) -> std::io::Result<TrivialServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let handle = listener.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("baseline-accept".into())
                .spawn(move || accept_loop(listener, style, &stop))?
        };
        Ok(TrivialServer {
            addr,
            stop,
            listener: handle,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        // SAFETY: shutdown on a socket we own; on Linux it makes a blocked accept()
        // return EINVAL. A connection to ourselves is the portable fallback.
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Ok(handlers) = accept.join() {
            for h in handlers {
                let _ = h.join();
            }
        }
    }
}

impl Drop for TrivialServer {
    fn drop(&mut self) {
        self.halt();
    }
}

fn accept_loop(listener: TcpListener, style: Style, stop: &AtomicBool) -> Vec<JoinHandle<()>> {
    let mut handlers: Vec<JoinHandle<()>> = Vec::new();
    let mut accepted: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) if stop.load(Ordering::SeqCst) => break,
            Err(e) => {
                // Out of descriptors, a connection reset before accept, …: a client's
                // trouble is never the server's end. Back off a little and go on.
                if e.kind() != std::io::ErrorKind::ConnectionAborted {
                    std::thread::sleep(Duration::from_millis(1));
                }
                continue;
            }
        };
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let spawned = std::thread::Builder::new()
            .name("baseline-conn".into())
            .spawn(move || match style {
                Style::Lines => serve_lines(stream),
                Style::Legacy => serve_legacy(stream),
            });
        if let Ok(h) = spawned {
            handlers.push(h);
        }
        accepted += 1;
        // Reap finished handlers now and then so one-shot connections (T2b) do not
        // pile up join handles.
        if accepted % 256 == 0 {
            let (done, running): (Vec<_>, Vec<_>) =
                handlers.into_iter().partition(JoinHandle::is_finished);
            for h in done {
                let _ = h.join();
            }
            handlers = running;
        }
    }
    handlers
}

fn prepare(stream: &TcpStream) -> bool {
    stream.set_nodelay(true).is_ok()
        && stream.set_read_timeout(Some(HANDLER_TIMEOUT)).is_ok()
        && stream.set_write_timeout(Some(HANDLER_TIMEOUT)).is_ok()
}

fn serve_lines(stream: TcpStream) {
    if !prepare(&stream) {
        return;
    }
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if writer.write_all(LINE_REPLY).is_err() {
            return;
        }
    }
}

fn serve_legacy(stream: TcpStream) {
    if !prepare(&stream) {
        return;
    }
    let mut buf = [0u8; 1000];
    let mut s = &stream;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if s.write_all(LEGACY_REPLY).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_survives_rude_clients() {
        for style in [Style::Lines, Style::Legacy] {
            let server = TrivialServer::start(style).unwrap();
            // A client that connects and vanishes must not hurt the server.
            drop(TcpStream::connect(server.addr()).unwrap());
            let mut c = TcpStream::connect(server.addr()).unwrap();
            c.write_all(b"GET_P,x\n").unwrap();
            let mut buf = [0u8; 64];
            let n = c.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"OK,127.0.0.1,5000"));
            drop(c);
            server.stop();
        }
    }
}
