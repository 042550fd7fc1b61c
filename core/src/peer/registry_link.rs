//! A peer's conversation with the registry: one session connection, `\n`-framed.
//!
//! Owns the connection and the round trip of one query (write a line, read the framed
//! answer, with a timeout). It never decides policy: reconnecting and re-registering
//! is the keeper's job in `peer::mod`.

use crate::error::{is_timeout, Error, Result};
use crate::limits::{MAX_LINE_LEN, REGISTRY_IO_TIMEOUT};
use crate::net::read_line;
use crate::protocol::{parse_answer, parse_files_line, parse_port, reason, Answer};
use parking_lot::Mutex;
use std::io::{BufReader, ErrorKind, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};

/// A session connection to the registry (may be down; queries then reconnect once).
pub(crate) struct RegistryLink {
    addr: String,
    conn: Mutex<Option<Conn>>,
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RegistryLink {
    pub fn new(addr: &str) -> RegistryLink {
        RegistryLink {
            addr: addr.to_string(),
            conn: Mutex::new(None),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Open the connection now (replacing any old one).
    pub fn connect(&self) -> Result<()> {
        *self.conn.lock() = Some(open(&self.addr)?);
        Ok(())
    }

    /// The local address of the connection (the one the registry records for this
    /// peer), if connected.
    pub fn local_ip(&self) -> Option<IpAddr> {
        let guard = self.conn.lock();
        let ip = guard.as_ref()?.writer.local_addr().ok()?.ip();
        // A dual-stack registry sees an IPv4 client as ::ffff:a.b.c.d; listen on a.b.c.d.
        Some(ip.to_canonical())
    }

    /// Whether the connection is up: a non-blocking peek sees no end-of-stream.
    pub fn is_alive(&self) -> bool {
        let mut guard = self.conn.lock();
        let Some(conn) = guard.as_mut() else {
            return false;
        };
        let alive = conn.reader.buffer().is_empty()
            && conn.writer.set_nonblocking(true).is_ok()
            && matches!(conn.writer.peek(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock);
        if alive && conn.writer.set_nonblocking(false).is_ok() {
            return true;
        }
        *guard = None;
        false
    }

    /// Drop the connection (the registry then releases this session's names).
    pub fn disconnect(&self) {
        if let Some(conn) = self.conn.lock().take() {
            let _ = conn.writer.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Send one single-line query and parse its answer. `ERR` answers are returned as
    /// [`Answer::Err`], not as errors; I/O failures drop the connection.
    pub fn ask(&self, query: &str) -> Result<Answer> {
        let line = self.round_trip(query, false)?;
        parse_answer(&line[0]).map_err(|d| Error::protocol(&self.addr, d))
    }

    /// The fields of an `OK` answer to `query`; `ERR,User not found!` becomes
    /// [`Error::UserNotFound`] naming `user`, any other `ERR` [`Error::Registry`].
    pub fn ask_ok(&self, query: &str, user: Option<&str>) -> Result<Vec<String>> {
        match self.ask(query)? {
            Answer::Ok(fields) => Ok(fields),
            Answer::Up => Err(Error::protocol(&self.addr, "unexpected UP")),
            Answer::Err(r) if r == reason::USER_NOT_FOUND => {
                Err(Error::UserNotFound(user.unwrap_or_default().to_string()))
            }
            Answer::Err(r) => Err(Error::Registry(r)),
        }
    }

    /// `GET_P`: where `name` listens.
    pub fn peer_addr(&self, name: &str) -> Result<SocketAddr> {
        let fields = self.ask_ok(&format!("GET_P,{name}"), Some(name))?;
        let bad = || Error::protocol(&self.addr, "malformed GET_P answer");
        let [ip, port] = fields.as_slice() else {
            return Err(bad());
        };
        // The registry writes IPv6 addresses bare (`::1`); accept `[::1]` too.
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let port = parse_port(port).ok_or_else(bad)?;
        Ok(SocketAddr::new(ip.to_canonical(), port))
    }

    /// `GET_AF`: every user's files.
    pub fn all_files(&self) -> Result<Vec<(String, Vec<String>)>> {
        let lines = self.round_trip("GET_AF", true)?;
        let first = &lines[0];
        if let Some(reason) = first.strip_prefix("ERR") {
            return Err(Error::Registry(reason.trim_start_matches(',').to_string()));
        }
        let rest = first
            .strip_prefix("OK,")
            .ok_or_else(|| Error::protocol(&self.addr, format!("malformed answer {first:?}")))?;
        std::iter::once(rest)
            .filter(|l| !l.is_empty())
            .chain(lines[1..].iter().map(String::as_str))
            .map(|l| parse_files_line(l).map_err(|d| Error::protocol(&self.addr, d)))
            .collect()
    }

    fn round_trip(&self, query: &str, multi_line: bool) -> Result<Vec<String>> {
        let mut guard = self.conn.lock();
        if guard.is_none() {
            *guard = Some(open(&self.addr)?);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(Error::Closed);
        };
        let result = exchange(conn, query, multi_line);
        if result.is_err() {
            *guard = None;
        }
        result.map_err(|e| match e {
            Error::Io(io) if is_timeout(&io) => Error::Timeout(format!(
                "the registry at {} did not answer within {} s",
                self.addr,
                REGISTRY_IO_TIMEOUT.as_secs()
            )),
            e => e,
        })
    }
}

fn open(addr: &str) -> Result<Conn> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| Error::InvalidArgument(format!("registry address {addr:?}: {e}")))?
        .collect();
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, REGISTRY_IO_TIMEOUT) {
            Ok(s) => {
                s.set_read_timeout(Some(REGISTRY_IO_TIMEOUT))?;
                s.set_write_timeout(Some(REGISTRY_IO_TIMEOUT))?;
                s.set_nodelay(true)?;
                crate::net::set_keepalive(&s);
                return Ok(Conn {
                    reader: BufReader::new(s.try_clone()?),
                    writer: s,
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        None => Error::InvalidArgument(format!("registry address {addr:?} resolves to nothing")),
        Some(e) if is_timeout(&e) => Error::Timeout(format!(
            "connecting to the registry at {addr} took over {} s",
            REGISTRY_IO_TIMEOUT.as_secs()
        )),
        Some(e) => Error::Io(e),
    })
}

fn exchange(conn: &mut Conn, query: &str, multi_line: bool) -> Result<Vec<String>> {
    conn.writer.write_all(format!("{query}\n").as_bytes())?;
    let mut lines =
        vec![read_line(&mut conn.reader, MAX_LINE_LEN, "registry")?.ok_or(Error::Closed)?];
    if multi_line && lines[0].starts_with("OK,") {
        // The first line may itself be the empty-share marker `OK,` followed by the
        // terminating empty line; otherwise read user lines until the empty one.
        loop {
            let l = read_line(&mut conn.reader, MAX_LINE_LEN, "registry")?.ok_or(Error::Closed)?;
            if l.is_empty() {
                break;
            }
            lines.push(l);
        }
    }
    Ok(lines)
}
