//! Socket helpers std does not have: keepalive tuning, writing with one deadline for a
//! whole buffer, the key per-address caps count a remote address under, and the
//! listener and outgoing connection of a hole punch sharing one port.

use crate::error::{Error, Result};
use std::io::{self, BufRead, Read, Write};
use std::net::{IpAddr, Ipv6Addr, TcpStream};
use std::time::{Duration, Instant};

/// Let the kernel notice a peer that vanished without a FIN or RST (cable pulled,
/// machine off): probes after 10 s of silence, every 2 s, 3 tries, so a dead
/// connection errors out within about 16 s instead of hanging forever.
pub(crate) fn set_keepalive(socket: &impl std::os::fd::AsRawFd) {
    #[cfg(target_os = "linux")]
    {
        let fd = socket.as_raw_fd();
        let set = |level, name, value: libc::c_int| {
            // SAFETY: setsockopt on a descriptor the caller keeps open, with a pointer
            // to a live c_int and its exact size.
            unsafe {
                libc::setsockopt(
                    fd,
                    level,
                    name,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        };
        set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 10);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 2);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// The key under which per-address caps count a remote address: an IPv4 address
/// itself, an IPv6 address's /64 prefix (one subscriber is usually given a whole /64, so
/// caps per IPv6 address would hand one party 2^64 places). IPv4-mapped IPv6 addresses
/// count as the IPv4 address they carry.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// Write all of `buf` within `timeout` in total. A plain `write_all` with a socket write
/// timeout restarts the clock after every partial write, so a peer that reads a trickle
/// could hold the writer for many timeouts; this one fails once `timeout` has passed.
///
/// The socket's write timeout must already be `timeout` (chat sockets are set up so):
/// the common case, one write taking it all, then costs no extra system call. After a
/// partial write the timeout is narrowed to what is left, and restored at the end.
pub(crate) fn write_all_within(
    stream: &TcpStream,
    mut buf: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut w = stream;
    let mut narrowed = false;
    let result = loop {
        if buf.is_empty() {
            break Ok(());
        }
        match w.write(buf) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
        if buf.is_empty() {
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "write deadline passed",
            ));
        }
        if let Err(e) = stream.set_write_timeout(Some(left)) {
            break Err(e);
        }
        narrowed = true;
    };
    if narrowed {
        let _ = stream.set_write_timeout(Some(timeout));
    }
    result
}

/// Read one `\n`-terminated line of at most `max` bytes (a `\r` before the `\n` is
/// dropped); `None` at a clean end of stream. An over-long line or invalid UTF-8 is a
/// protocol error from `who`; a stream that ends mid-line is [`Error::Closed`].
pub(crate) fn read_line(
    reader: &mut impl BufRead,
    max: usize,
    who: &str,
) -> Result<Option<String>> {
    let mut buf = Vec::new();
    let n = reader
        .by_ref()
        .take(max as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if buf.len() > max {
            Error::protocol(who, "line too long")
        } else {
            Error::Closed
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| Error::protocol(who, "line is not UTF-8"))
}

/// A listener on `addr` whose port a hole punch ([`punch`]) can connect out from too
/// (`SO_REUSEPORT`, on Unix; elsewhere a plain listener). A port that anything listens
/// on is refused as by a plain bind: the port is first bound plainly (and let go), so
/// another peer, or any other program, listening there makes this fail rather than
/// share it. Port 0 takes a free port.
pub(crate) fn listen_shared(addr: std::net::SocketAddr) -> io::Result<std::net::TcpListener> {
    let plain = std::net::TcpListener::bind(addr)?;
    #[cfg(unix)]
    {
        let addr = plain.local_addr()?;
        drop(plain);
        // SO_REUSEADDR too, as std sets for a listener: a restart does not wait out
        // TIME_WAIT.
        let socket = bound_socket(addr, true)?;
        socket.listen(1024)?;
        Ok(socket.into())
    }
    #[cfg(not(unix))]
    Ok(plain)
}

/// A TCP socket bound to `local` with `SO_REUSEADDR` (and `SO_REUSEPORT` when
/// `share_port`): a shared listener's ([`listen_shared`]), or one side of a hole punch
/// ([`punch`]) — the callee's on its listening address, sharing the listener's port;
/// the caller's on a fresh port (`local` port 0), which the caller names in its
/// `PUNCH` so that each punch has a connection of its own (a closed one's TIME_WAIT, or
/// an open one, never stands in the next one's way).
#[cfg(unix)]
pub(crate) fn bound_socket(
    local: std::net::SocketAddr,
    share_port: bool,
) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(local),
        socket2::Type::STREAM,
        None,
    )?;
    // A punch binds the same port again after a refused attempt.
    socket.set_reuse_address(true)?;
    if share_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&local.into())?;
    Ok(socket)
}

/// One side of a hole punch: connects `first` (from [`bound_socket`]) to `remote`
/// while the other side connects the other way. Each side's SYN opens its own NAT for
/// the other's (TCP simultaneous open, or an ordinary connect where the other side's
/// SYN was still on its way); a NAT that keeps a connection's source port maps each
/// side's port to itself, which is what the two were told of each other. No answer is
/// left to the kernel's SYN retries; a refusal or reset (the other host not connecting
/// yet, or a NAT that answers for a closed port) is tried again every 200 ms from a
/// socket bound to the same address. Gives up with [`io::ErrorKind::TimedOut`] after
/// `within`; any other error ends it at once (the listener on the other end of the
/// same addresses may have taken the connection: `AddrNotAvailable`).
#[cfg(unix)]
pub(crate) fn punch(
    first: socket2::Socket,
    remote: std::net::SocketAddr,
    within: Duration,
    share_port: bool,
) -> io::Result<TcpStream> {
    let local = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("a punch socket without an address"))?;
    let deadline = Instant::now() + within;
    let mut socket = first;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer from {remote} within {} s", within.as_secs()),
            ));
        }
        match socket.connect_timeout(&remote.into(), left) {
            Ok(()) => return Ok(socket.into()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ) =>
            {
                std::thread::sleep(Duration::from_millis(200).min(left));
                socket = bound_socket(local, share_port)?;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::address_key;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_addresses_count_per_64_and_mapped_ones_as_ipv4() {
        assert_eq!(address_key(ip("127.0.0.2")), ip("127.0.0.2"));
        assert_ne!(address_key(ip("127.0.0.2")), address_key(ip("127.0.0.3")));
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_eq!(address_key(ip("2001:db8:1:2::7")), ip("2001:db8:1:2::"));
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(address_key(ip("::ffff:127.0.0.2")), ip("127.0.0.2"));
        assert_eq!(address_key(ip("::1")), ip("::"));
    }
}
