//! One peer-to-peer connection, plaintext or secured, behind one reader and one writer
//! type; who is at the other end ([`Partner`]); and the dialer's choice of how to reach
//! a user ([`route`], [`dial_secure`]).
//!
//! A secured link (`P2P/2`, see [`crate::secure`]) carries the `P2P/1` conversation
//! verbatim inside its records, so the chat and file code above this module reads
//! lines and bytes the same way over either kind. This module never decides what a
//! request may do; [`super::serve`] does.

use super::paths;
use super::registry_link::PeerInfo;
use super::Inner;
use crate::error::{Error, Result};
use crate::identity::PublicKey;
use crate::known_keys::Subject;
use crate::protocol::{parse_peer_answer, PeerAnswer};
use crate::reach::Path;
use crate::secure::{self, Cipher, DialParams, Dialed, Kind, SecureReader, SecureWriter};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Who is at the other end of a link, as far as this peer could tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Partner {
    /// Their static key, proven by the handshake (`None` on a plaintext link).
    pub key: Option<PublicKey>,
    /// The link is a Noise session: every byte after the handshake is encrypted and
    /// authenticated.
    pub encrypted: bool,
    /// The key is the one the registry lists for their name, and the pinned one.
    pub verified: bool,
}

impl Partner {
    /// A plaintext partner (a keyless registration, or an original client).
    pub const UNVERIFIED: Partner = Partner {
        key: None,
        encrypted: false,
        verified: false,
    };

    /// A partner on a secured link whose key checked out.
    pub fn verified(key: PublicKey) -> Partner {
        Partner {
            key: Some(key),
            encrypted: true,
            verified: true,
        }
    }
}

/// The reading half of a link.
pub(crate) enum LinkReader {
    Plain(BufReader<TcpStream>),
    Secure(Box<SecureReader>),
}

impl LinkReader {
    /// The socket underneath (for read timeouts).
    pub fn socket(&self) -> &TcpStream {
        match self {
            LinkReader::Plain(r) => r.get_ref(),
            LinkReader::Secure(r) => r.socket(),
        }
    }
}

impl Read for LinkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LinkReader::Plain(r) => r.read(buf),
            LinkReader::Secure(r) => r.read(buf),
        }
    }
}

impl BufRead for LinkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self {
            LinkReader::Plain(r) => r.fill_buf(),
            LinkReader::Secure(r) => r.fill_buf(),
        }
    }

    fn consume(&mut self, n: usize) {
        match self {
            LinkReader::Plain(r) => r.consume(n),
            LinkReader::Secure(r) => r.consume(n),
        }
    }
}

/// The writing half of a link.
pub(crate) enum LinkWriter {
    Plain(TcpStream),
    Secure(Box<SecureWriter>),
}

impl LinkWriter {
    /// The socket underneath (for timeouts, shutdown, tracking).
    pub fn socket(&self) -> &TcpStream {
        match self {
            LinkWriter::Plain(s) => s,
            LinkWriter::Secure(w) => w.socket(),
        }
    }

    /// Writes all of `buf` within `timeout` in total (see
    /// [`write_all_within`](crate::net::write_all_within)); on a secured link `buf`
    /// goes as whole records. The socket's write timeout must be `timeout`.
    pub fn write_all_within(&mut self, buf: &[u8], timeout: Duration) -> io::Result<()> {
        match self {
            LinkWriter::Plain(s) => crate::net::write_all_within(s, buf, timeout),
            LinkWriter::Secure(w) => {
                w.send_with(buf, |s, b| crate::net::write_all_within(s, b, timeout))
            }
        }
    }

    /// Writes one answer line (the socket's write timeout applies).
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        match self {
            LinkWriter::Plain(s) => (&*s).write_all(line.as_bytes()),
            LinkWriter::Secure(w) => w.send(line.as_bytes()),
        }
    }
}

/// How to reach a user, decided from the registry's answer and the pins.
pub(crate) enum Route {
    /// `P2P/2` to this key (IK), then `P2P/1` inside.
    Secure(PublicKey),
    /// Plaintext `P2P/1`: a user registered without a key (unverified).
    Plain,
    /// The original client's protocol (`CHAT,` / `FILE,`; unverified).
    Legacy,
}

impl Route {
    /// Who the partner will be on this route, before connecting.
    pub fn partner(&self) -> Partner {
        match self {
            Route::Secure(key) => Partner::verified(*key),
            Route::Plain | Route::Legacy => Partner::UNVERIFIED,
        }
    }
}

/// Chooses how to reach `name` (listed as `info`): a listed key must match its pin
/// ([`Error::KeyChanged`] otherwise); a name pinned with a key that the registry now
/// lists without one is refused (a registry cannot make a known user unverified, and
/// with it the download unchecked); unverified routes are refused under
/// `refuse_unverified`.
pub(crate) fn route(inner: &Inner, name: &str, info: &PeerInfo) -> Result<Route> {
    if let Some(key) = info.key {
        inner.check_pin(name, &key)?;
        return Ok(Route::Secure(key));
    }
    let how = if info.legacy {
        "as an original client"
    } else {
        "without a key"
    };
    let subject = Subject::Peer {
        registry: inner.registry_scope(),
        name,
    };
    if let Some(pinned) = inner.known_keys.pinned(subject) {
        return Err(Error::Denied {
            peer: name.to_string(),
            reason: format!(
                "{name} proved its identity with key {} before, but the registry now lists \
                 {name} {how}; refused, since that would make the link unverified \
                 (if {name} really lost its key, remove its pin)",
                pinned.fingerprint()
            ),
        });
    }
    if inner.refuse_unverified {
        return Err(Error::Denied {
            peer: name.to_string(),
            reason: format!(
                "{name} is registered {how}, so it cannot prove who it is, and this peer \
                 refuses unverified partners"
            ),
        });
    }
    Ok(if info.legacy {
        Route::Legacy
    } else {
        Route::Plain
    })
}

/// Opens a TCP connection to `name` at `addr` within the peer's I/O timeout. A
/// connection that gets no answer at all (neither accepted nor refused) is reported
/// naming the user and the address: it usually means a NAT or a firewall on the way
/// drops it, which a bare "timed out" does not tell.
pub(crate) fn connect(inner: &Inner, name: &str, addr: SocketAddr) -> Result<TcpStream> {
    TcpStream::connect_timeout(&addr, inner.io_timeout).map_err(|e| {
        if crate::error::is_timeout(&e) {
            Error::Timeout(format!(
                "{name} at {addr} did not answer the connection within {} s (nothing came \
                 back: a NAT or a firewall on the way may drop it)",
                inner.io_timeout.as_secs()
            ))
        } else {
            Error::Io(e)
        }
    })
}

/// A secured link to `name` (listed as `info`), whose key must be `key`: a stream on
/// the path [`paths::connect`] finds, then the handshake on it. Returns the two halves,
/// the socket's tracking key (the caller forgets it) and the path taken.
pub(crate) fn dial_secure(
    inner: &Inner,
    name: &str,
    info: &PeerInfo,
    key: PublicKey,
) -> Result<(LinkReader, LinkWriter, Option<u64>, Path)> {
    let (stream, path) = paths::connect(inner, name, info)?;
    let deadline = Instant::now() + inner.io_timeout;
    let (r, w, tracked) = handshake(inner, name, stream, key, deadline)?;
    Ok((r, w, tracked, path))
}

/// The IK handshake (hello = this peer's username) as the initiator on `stream`,
/// connected to `name` on whatever path, by `deadline`. A refusal before the
/// handshake (`ERR busy …`) is mapped like an answer line.
pub(crate) fn handshake(
    inner: &Inner,
    name: &str,
    stream: TcpStream,
    key: PublicKey,
    deadline: Instant,
) -> Result<(LinkReader, LinkWriter, Option<u64>)> {
    let addr = stream.peer_addr()?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(inner.io_timeout))?;
    let tracked = inner.track_socket(&stream);
    let dialed = (|| {
        let dialed = secure::dial(
            stream.try_clone()?,
            DialParams {
                kind: Kind::Peer,
                identity: &inner.identity,
                remote: Some(key),
                hello: inner.username.as_bytes(),
                cipher: Cipher::preferred(),
                deadline,
            },
        )
        .map_err(|e| match e {
            Error::Protocol { detail, .. } => Error::protocol(
                addr,
                format!("{detail} (is {name} still the holder of the key the registry lists?)"),
            ),
            e => e,
        })?;
        match dialed {
            Dialed::Secured(s) => Ok(s),
            Dialed::Refused(line) => Err(refusal_error(name, addr, &line)),
        }
    })();
    match dialed {
        Ok(s) => {
            let s = *s;
            Ok((
                LinkReader::Secure(Box::new(s.reader)),
                LinkWriter::Secure(Box::new(s.writer)),
                tracked,
            ))
        }
        Err(e) => {
            inner.forget_socket(tracked);
            Err(e)
        }
    }
}

/// The error for an `ERR <code> <text>` line from `name` that is not specific to the
/// request (`busy`, `denied`, anything else as [`Error::Refused`]).
pub(crate) fn refusal_error(name: &str, addr: SocketAddr, line: &str) -> Error {
    match parse_peer_answer(line) {
        Ok(PeerAnswer::Err { code, text }) => answer_error(name, &code, &text),
        _ => Error::protocol(addr, format!("unexpected answer to a handshake: {line:?}")),
    }
}

/// The error for `ERR <code> <text>` from `name`, for the codes every request shares.
pub(crate) fn answer_error(name: &str, code: &str, text: &str) -> Error {
    match code {
        "busy" => Error::Busy(name.to_string()),
        "denied" => Error::Denied {
            peer: name.to_string(),
            reason: format!("refused this peer: {text}"),
        },
        _ => Error::Refused {
            peer: name.to_string(),
            reason: format!("{code} {text}"),
        },
    }
}
