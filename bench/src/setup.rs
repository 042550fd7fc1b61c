//! Filling a registry with users: session connections that each send a batch of `INIT`
//! lines in one go (pipelined) and then read the batch's answers. The connections are
//! returned open, because a session's registrations end when it closes.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Bound on every socket operation while filling, so a stuck registry cannot hang us.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Connections per setup thread whose batches are in flight at once.
const WINDOW: usize = 8;

/// Open `conns` session connections to `addr`, spread over `threads` threads; connection
/// `c` registers users `c*per_conn .. (c+1)*per_conn`, whose `INIT` line (with `\n`) is
/// `line(user)`. Every answer must be `OK`. Returns the open connections, in order.
///
/// The client writes a whole batch before reading: the answers (`OK\n`, 3 bytes each)
/// are far smaller than the queries, so the registry never blocks on output while the
/// client is still writing, and the two cannot deadlock.
pub fn open_sessions(
    addr: SocketAddr,
    conns: usize,
    per_conn: usize,
    threads: usize,
    line: &(dyn Fn(usize) -> String + Sync),
) -> Result<Vec<TcpStream>, String> {
    let threads = threads.clamp(1, conns.max(1));
    let chunk = conns.div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let first = t * chunk;
                let last = ((t + 1) * chunk).min(conns);
                scope.spawn(move || fill(addr, first..last, per_conn, line))
            })
            .collect();
        let mut all = Vec::with_capacity(conns);
        let mut error = None;
        for w in workers {
            match w.join() {
                Ok(Ok(mut v)) => all.append(&mut v),
                Ok(Err(e)) => error = error.or(Some(e)),
                Err(_) => error = error.or(Some("a setup thread panicked".to_string())),
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(all),
        }
    })
}

fn fill(
    addr: SocketAddr,
    range: std::ops::Range<usize>,
    per_conn: usize,
    line: &(dyn Fn(usize) -> String + Sync),
) -> Result<Vec<TcpStream>, String> {
    let mut streams = Vec::with_capacity(range.len());
    let mut batch = Vec::new();
    let mut answer = Vec::with_capacity(64);
    // A window of connections sends its batches, then their answers are read: the
    // registry works on some while we write to others, yet connections never arrive
    // much faster than it accepts them (an overflowing accept queue drops SYNs, and each
    // drop costs the client a 1 s retransmission).
    let ids: Vec<usize> = range.collect();
    for window in ids.chunks(WINDOW) {
        let first = streams.len();
        for &c in window {
            let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
                .map_err(|e| format!("connection {c} of the setup: connect: {e}"))?;
            s.set_read_timeout(Some(IO_TIMEOUT))
                .and_then(|()| s.set_write_timeout(Some(IO_TIMEOUT)))
                .map_err(|e| format!("setting timeouts: {e}"))?;
            batch.clear();
            for u in c * per_conn..(c + 1) * per_conn {
                batch.extend_from_slice(line(u).as_bytes());
            }
            s.write_all(&batch)
                .map_err(|e| format!("connection {c} of the setup: write: {e}"))?;
            streams.push(s);
        }
        for (&c, s) in window.iter().zip(&streams[first..]) {
            let mut reader = BufReader::with_capacity(4096, s);
            for u in 0..per_conn {
                answer.clear();
                match reader.read_until(b'\n', &mut answer) {
                    Ok(0) => return Err(format!("connection {c}: registry closed it")),
                    Ok(_) if answer == b"OK\n" => {}
                    Ok(_) => {
                        return Err(format!(
                            "INIT of user {} answered {:?}",
                            c * per_conn + u,
                            String::from_utf8_lossy(&answer)
                        ))
                    }
                    Err(e) => return Err(format!("connection {c}: read: {e}")),
                }
            }
        }
    }
    Ok(streams)
}
