//! Encrypted, authenticated links: a Noise handshake (the `snow` crate), then AEAD
//! records. The same for a peer's link to another peer and to its registry.
//!
//! # Bytes on the wire
//!
//! ```text
//! initiator → <marker line>  e.g. "P2P/2 IK AESGCM\n"  (REG/2 … for the registry)
//! initiator → frame(handshake message 1)
//! responder → "OK\n" frame(handshake message 2)        or an ERR line, then close
//! initiator → frame(handshake message 3)                (XX only)
//! both      → frame(record) …                           (transport, either direction)
//! ```
//!
//! A *frame* is a 2-byte big-endian length and that many bytes (1–65,535). A record is
//! one Noise transport message: at most [`MAX_RECORD_PLAINTEXT`] bytes of plaintext
//! and a 16-byte tag; nonces count up from 0 in each direction, so a record that is
//! dropped, repeated, reordered or altered fails authentication and ends the link.
//!
//! The Noise protocol name is `Noise_<IK|XX>_25519_<AESGCM|ChaChaPoly>_BLAKE2s`; the
//! prologue is `"p2pchat\n"` followed by the marker line (its `\n` included), so the
//! link kind, version, pattern and cipher are all bound into the handshake: a
//! man-in-the-middle who rewrites the marker breaks the handshake.
//!
//! The initiator picks the pattern: **IK** when it knows the responder's static key
//! (from the registry's `GET_P`, or a pinned registry key), one round trip, and the
//! initiator's identity is encrypted to the responder; **XX** otherwise, one and a half
//! round trips, both static keys sent encrypted. It also picks the cipher:
//! **AES-256-GCM** when its CPU has AES and carry-less multiply instructions (ring's
//! assembly runs several GiB/s per core), **ChaCha20-Poly1305** otherwise (faster than
//! AES in software, constant time everywhere). The responder accepts either.
//!
//! The initiator's *hello* (for peers: the username it claims) travels in the first
//! handshake message that carries its static key — IK message 1, XX message 3 — so it
//! is encrypted, and bound to the key that completes the handshake.
//!
//! Pure parts (marker, [`FrameBuffer`], [`Transport`], [`Responder`]) touch no
//! socket, so the registry's event loop drives them without blocking, and they can be
//! fuzzed; [`dial`] and [`accept`] run them over a blocking `TcpStream` with a deadline.

use crate::error::{Error, Result};
use crate::identity::{Identity, PublicKey};
use snow::{HandshakeState, StatelessTransportState};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

/// Largest frame body (Noise's message limit).
pub const MAX_FRAME: usize = 65_535;
/// AEAD tag length.
pub const TAG_LEN: usize = 16;
/// Largest plaintext in one record.
pub const MAX_RECORD_PLAINTEXT: usize = MAX_FRAME - TAG_LEN;
/// The dialer's socket read buffer: four records, so most records arrive whole in it
/// and are opened in place.
const READ_BUFFER: usize = 4 * (MAX_FRAME + 2);
/// Largest hello payload accepted in a handshake.
pub const MAX_HELLO: usize = 1024;
/// Longest marker line accepted (without its `\n`).
pub const MAX_MARKER: usize = 64;

/// Which conversation a link carries: the marker's first word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Peer to peer (`P2P/2`).
    Peer,
    /// Client to registry (`REG/2`).
    Registry,
}

/// The Noise handshake pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// The initiator knows the responder's static key.
    IK,
    /// Neither knows the other's key in advance.
    XX,
}

/// The AEAD cipher of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// AES-256-GCM (with AES-NI/CLMUL or ARMv8 crypto extensions).
    AesGcm,
    /// ChaCha20-Poly1305.
    ChaChaPoly,
}

impl Cipher {
    /// The cipher this machine runs fastest: AES-GCM with AES hardware, else ChaCha.
    pub fn preferred() -> Cipher {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            if std::arch::is_x86_feature_detected!("aes")
                && std::arch::is_x86_feature_detected!("pclmulqdq")
            {
                return Cipher::AesGcm;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("aes")
                && std::arch::is_aarch64_feature_detected!("pmull")
            {
                return Cipher::AesGcm;
            }
        }
        Cipher::ChaChaPoly
    }

    fn name(self) -> &'static str {
        match self {
            Cipher::AesGcm => "AESGCM",
            Cipher::ChaChaPoly => "ChaChaPoly",
        }
    }
}

/// The first line of a secured link: kind, pattern and cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Peer or registry link.
    pub kind: Kind,
    /// Handshake pattern.
    pub pattern: Pattern,
    /// AEAD cipher.
    pub cipher: Cipher,
}

impl Marker {
    /// The line, with its `\n`.
    pub fn to_line(&self) -> String {
        let kind = match self.kind {
            Kind::Peer => "P2P/2",
            Kind::Registry => "REG/2",
        };
        let pattern = match self.pattern {
            Pattern::IK => "IK",
            Pattern::XX => "XX",
        };
        format!("{kind} {pattern} {}\n", self.cipher.name())
    }

    /// Parses a marker line (without its `\n`; a trailing `\r` is not accepted).
    /// `None` for anything that is not exactly a marker.
    pub fn parse(line: &[u8]) -> Option<Marker> {
        if line.len() > MAX_MARKER {
            return None;
        }
        let text = std::str::from_utf8(line).ok()?;
        let mut words = text.split(' ');
        let kind = match words.next()? {
            "P2P/2" => Kind::Peer,
            "REG/2" => Kind::Registry,
            _ => return None,
        };
        let pattern = match words.next()? {
            "IK" => Pattern::IK,
            "XX" => Pattern::XX,
            _ => return None,
        };
        let cipher = match words.next()? {
            "AESGCM" => Cipher::AesGcm,
            "ChaChaPoly" => Cipher::ChaChaPoly,
            _ => return None,
        };
        if words.next().is_some() {
            return None;
        }
        Some(Marker {
            kind,
            pattern,
            cipher,
        })
    }

    /// Whether a first line starts like a marker of `kind` (so a responder can tell a
    /// secured link from a plaintext request and answer a bad marker precisely).
    pub fn looks_like(line: &[u8], kind: Kind) -> bool {
        let word: &[u8] = match kind {
            Kind::Peer => b"P2P/2 ",
            Kind::Registry => b"REG/2 ",
        };
        line.starts_with(word)
    }

    fn noise_params(&self) -> snow::params::NoiseParams {
        let pattern = match self.pattern {
            Pattern::IK => "IK",
            Pattern::XX => "XX",
        };
        let name = format!("Noise_{pattern}_25519_{}_BLAKE2s", self.cipher.name());
        // Every combination above is a valid Noise protocol name.
        name.parse().unwrap_or_else(|_| unreachable!("{name}"))
    }

    fn prologue(&self) -> Vec<u8> {
        let mut p = b"p2pchat\n".to_vec();
        p.extend_from_slice(self.to_line().as_bytes());
        p
    }

    /// The handshake message (0-based) in which the initiator's static key, and so its
    /// hello, travels.
    fn hello_message(&self) -> usize {
        match self.pattern {
            Pattern::IK => 0,
            Pattern::XX => 2,
        }
    }
}

fn noise_err(e: snow::Error) -> Error {
    Error::protocol("secure link", format!("handshake failed: {e}"))
}

/// Frames a message: 2-byte big-endian length, then the bytes.
fn push_frame(out: &mut Vec<u8>, body: &[u8]) {
    debug_assert!(!body.is_empty() && body.len() <= MAX_FRAME);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// Collects bytes from a non-blocking socket and hands out whole frames. Holds at most
/// one frame (2 + 65,535 bytes) plus what was pushed beyond it.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
}

impl FrameBuffer {
    /// An empty buffer.
    pub fn new() -> FrameBuffer {
        FrameBuffer::default()
    }

    /// Appends bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes waiting (a partial frame, or frames not popped yet).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame's body, if one is there. A zero length is an error (no
    /// frame is empty).
    pub fn pop(&mut self) -> Result<Option<Vec<u8>>> {
        let avail = &self.buf[self.start..];
        if avail.len() < 2 {
            return Ok(None);
        }
        let len = u16::from_be_bytes([avail[0], avail[1]]) as usize;
        if len == 0 {
            return Err(Error::protocol("secure link", "empty frame"));
        }
        if avail.len() < 2 + len {
            return Ok(None);
        }
        let body = avail[2..2 + len].to_vec();
        self.start += 2 + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 4 * MAX_FRAME {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(body))
    }
}

/// A finished handshake's cipher state: seals outgoing records, opens incoming ones.
/// Nonces are counted here (snow's stateless transport takes them explicitly), so the
/// two directions can be [split](Transport::split) between a reader and a writer.
pub struct Transport {
    state: Arc<StatelessTransportState>,
    send_nonce: u64,
    recv_nonce: u64,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("send_nonce", &self.send_nonce)
            .field("recv_nonce", &self.recv_nonce)
            .finish()
    }
}

impl Transport {
    fn new(hs: HandshakeState) -> Result<Transport> {
        let state = hs.into_stateless_transport_mode().map_err(noise_err)?;
        Ok(Transport {
            state: Arc::new(state),
            send_nonce: 0,
            recv_nonce: 0,
        })
    }

    /// Encrypts `plaintext` as one or more framed records appended to `out` (an empty
    /// plaintext appends nothing).
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        seal_with(&self.state, &mut self.send_nonce, plaintext, out)
    }

    /// Decrypts one record (a frame's body), appending its plaintext to `out`.
    pub fn open(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<()> {
        open_with(&self.state, &mut self.recv_nonce, record, out)
    }

    /// The sending and the receiving half, for a writer and a reader on two threads.
    pub fn split(self) -> (Sealer, Opener) {
        (
            Sealer {
                state: self.state.clone(),
                nonce: self.send_nonce,
            },
            Opener {
                state: self.state,
                nonce: self.recv_nonce,
            },
        )
    }
}

fn seal_with(
    state: &StatelessTransportState,
    nonce: &mut u64,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    for chunk in plaintext.chunks(MAX_RECORD_PLAINTEXT) {
        let at = out.len();
        out.resize(at + 2 + chunk.len() + TAG_LEN, 0);
        let n = state
            .write_message(*nonce, chunk, &mut out[at + 2..])
            .map_err(noise_err)?;
        *nonce += 1;
        out[at..at + 2].copy_from_slice(&(n as u16).to_be_bytes());
        out.truncate(at + 2 + n);
    }
    Ok(())
}

fn open_with(
    state: &StatelessTransportState,
    nonce: &mut u64,
    record: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    if record.len() < TAG_LEN {
        return Err(tampered());
    }
    let at = out.len();
    out.resize(at + record.len(), 0);
    match state.read_message(*nonce, record, &mut out[at..]) {
        Ok(n) => {
            *nonce += 1;
            out.truncate(at + n);
            Ok(())
        }
        Err(_) => {
            out.truncate(at);
            Err(tampered())
        }
    }
}

fn tampered() -> Error {
    Error::protocol(
        "secure link",
        "a record failed authentication (altered, replayed or out of order); the link is closed",
    )
}

/// The sending half of a [`Transport`].
pub struct Sealer {
    state: Arc<StatelessTransportState>,
    nonce: u64,
}

impl Sealer {
    /// Encrypts `plaintext` as framed records appended to `out`.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        seal_with(&self.state, &mut self.nonce, plaintext, out)
    }
}

/// The receiving half of a [`Transport`].
pub struct Opener {
    state: Arc<StatelessTransportState>,
    nonce: u64,
}

impl Opener {
    /// Decrypts one record, appending its plaintext to `out`.
    pub fn open(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<()> {
        open_with(&self.state, &mut self.nonce, record, out)
    }

    /// Decrypts one record into `out` (at least as long as the record); returns the
    /// plaintext's length.
    pub fn open_into(&mut self, record: &[u8], out: &mut [u8]) -> Result<usize> {
        if record.len() < TAG_LEN || out.len() < record.len() {
            return Err(tampered());
        }
        let n = self
            .state
            .read_message(self.nonce, record, out)
            .map_err(|_| tampered())?;
        self.nonce += 1;
        Ok(n)
    }
}

/// A connected pair of transports (initiator, responder) from an XX handshake between
/// two fresh identities, run in memory: for the benchmark of the record layer's own
/// speed (`p2pchat-bench` T7), which has no other way to get a `Transport`.
#[doc(hidden)]
pub fn transport_pair_for_bench(cipher: Cipher) -> Result<(Transport, Transport)> {
    let marker = Marker {
        kind: Kind::Peer,
        pattern: Pattern::XX,
        cipher,
    };
    let (a, b) = (Identity::generate()?, Identity::generate()?);
    let prologue = marker.prologue();
    let mut init = snow::Builder::new(marker.noise_params())
        .local_private_key(a.private_bytes())
        .and_then(|s| s.prologue(&prologue))
        .and_then(|s| s.build_initiator())
        .map_err(noise_err)?;
    let mut resp = Responder::new(&b, marker)?;
    let mut msg = vec![0u8; MAX_FRAME];
    let mut scratch = vec![0u8; MAX_FRAME];
    let n = init.write_message(&[], &mut msg).map_err(noise_err)?;
    let reply = resp
        .read(&msg[..n])?
        .ok_or_else(|| Error::protocol("secure link", "no handshake reply"))?;
    init.read_message(&reply[2..], &mut scratch)
        .map_err(noise_err)?;
    let n = init.write_message(&[], &mut msg).map_err(noise_err)?;
    resp.read(&msg[..n])?;
    Ok((Transport::new(init)?, resp.finish()?.transport))
}

/// The outcome of a handshake.
pub struct Established {
    /// The cipher state for the records that follow.
    pub transport: Transport,
    /// The other side's static key (proven: the handshake completed with it).
    pub remote: PublicKey,
    /// The initiator's hello, as the responder received it (empty on the initiator).
    pub hello: Vec<u8>,
}

/// The responder's side of a handshake, driven one message at a time (no socket), for
/// event loops. [`accept`] runs it over a blocking socket.
pub struct Responder {
    marker: Marker,
    hs: HandshakeState,
    /// Index of the next handshake message (0-based, both directions counted).
    next: usize,
    hello: Vec<u8>,
}

impl Responder {
    /// A responder for the link that `marker` opened, with this side's identity.
    pub fn new(identity: &Identity, marker: Marker) -> Result<Responder> {
        let prologue = marker.prologue();
        let hs = snow::Builder::new(marker.noise_params())
            .local_private_key(identity.private_bytes())
            .and_then(|b| b.prologue(&prologue))
            .and_then(|b| b.build_responder())
            .map_err(noise_err)?;
        Ok(Responder {
            marker,
            hs,
            next: 0,
            hello: Vec::new(),
        })
    }

    /// Takes one handshake message from the initiator (a frame's body). Returns the
    /// framed reply to send, if this step has one (message 2, after `"OK\n"`, which
    /// the caller writes first).
    pub fn read(&mut self, message: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut payload = vec![0u8; message.len()];
        let n = self
            .hs
            .read_message(message, &mut payload)
            .map_err(noise_err)?;
        if self.next == self.marker.hello_message() {
            if n > MAX_HELLO {
                return Err(Error::protocol("secure link", "hello too long"));
            }
            self.hello = payload[..n].to_vec();
        }
        self.next += 1;
        if self.hs.is_handshake_finished() {
            return Ok(None);
        }
        let mut reply = vec![0u8; MAX_FRAME];
        let n = self.hs.write_message(&[], &mut reply).map_err(noise_err)?;
        self.next += 1;
        let mut framed = Vec::with_capacity(2 + n);
        push_frame(&mut framed, &reply[..n]);
        Ok(Some(framed))
    }

    /// Whether the handshake is complete.
    pub fn is_finished(&self) -> bool {
        self.hs.is_handshake_finished()
    }

    /// The established link (after [`is_finished`](Responder::is_finished)).
    pub fn finish(self) -> Result<Established> {
        let remote = self
            .hs
            .get_remote_static()
            .and_then(PublicKey::from_slice)
            .ok_or_else(|| Error::protocol("secure link", "no static key from the initiator"))?;
        Ok(Established {
            transport: Transport::new(self.hs)?,
            remote,
            hello: self.hello,
        })
    }
}

/// A secured link over a blocking socket: the reading half (buffered, [`BufRead`]),
/// the writing half, and who is at the other end.
pub struct SecureStream {
    /// Reads decrypted bytes.
    pub reader: SecureReader,
    /// Writes encrypted records.
    pub writer: SecureWriter,
    /// The other side's static key, proven by the handshake.
    pub remote: PublicKey,
    /// The initiator's hello (on the responder; empty on the initiator).
    pub hello: Vec<u8>,
}

/// What [`dial`] got back.
pub enum Dialed {
    /// The handshake completed.
    Secured(Box<SecureStream>),
    /// The responder refused before the handshake with this line (without its `\n`,
    /// e.g. `ERR busy …` from a peer, `ERR,Server busy` from a registry).
    Refused(String),
}

/// What to dial.
pub struct DialParams<'a> {
    /// Peer or registry.
    pub kind: Kind,
    /// This side's identity.
    pub identity: &'a Identity,
    /// The responder's key when known (then the pattern is IK and the handshake can
    /// only complete with that key); `None`: XX, and the caller checks the key it got.
    pub remote: Option<PublicKey>,
    /// The hello (peers: the username this side claims).
    pub hello: &'a [u8],
    /// Cipher to propose ([`Cipher::preferred`] normally).
    pub cipher: Cipher,
    /// When the whole handshake must be done.
    pub deadline: Instant,
}

/// Runs the initiator's side of a handshake over `stream` (connected, blocking).
pub fn dial(stream: TcpStream, p: DialParams<'_>) -> Result<Dialed> {
    if p.hello.len() > MAX_HELLO {
        return Err(Error::InvalidArgument("hello too long".into()));
    }
    let marker = Marker {
        kind: p.kind,
        pattern: if p.remote.is_some() {
            Pattern::IK
        } else {
            Pattern::XX
        },
        cipher: p.cipher,
    };
    let prologue = marker.prologue();
    let mut builder = snow::Builder::new(marker.noise_params())
        .local_private_key(p.identity.private_bytes())
        .and_then(|b| b.prologue(&prologue))
        .map_err(noise_err)?;
    if let Some(k) = &p.remote {
        builder = builder.remote_public_key(&k.0).map_err(noise_err)?;
    }
    let mut hs = builder.build_initiator().map_err(noise_err)?;
    let writer = stream.try_clone()?;
    // Room for several records per read, so most are opened straight from it.
    let mut reader = BufReader::with_capacity(READ_BUFFER, stream);

    let mut msg = vec![0u8; MAX_FRAME];
    let hello_now = marker.hello_message() == 0;
    let n = hs
        .write_message(if hello_now { p.hello } else { &[] }, &mut msg)
        .map_err(noise_err)?;
    let mut out = marker.to_line().into_bytes();
    push_frame(&mut out, &msg[..n]);
    (&writer).write_all(&out)?;

    let line = read_line_by(&mut reader, p.deadline)?;
    if line != b"OK" {
        return Ok(Dialed::Refused(String::from_utf8_lossy(&line).into_owned()));
    }
    let reply = read_frame_by(&mut reader, p.deadline)?;
    let mut scratch = vec![0u8; reply.len()];
    hs.read_message(&reply, &mut scratch).map_err(noise_err)?;
    if !hs.is_handshake_finished() {
        // XX: message 3 carries this side's static key and the hello.
        let n = hs.write_message(p.hello, &mut msg).map_err(noise_err)?;
        let mut out = Vec::with_capacity(2 + n);
        push_frame(&mut out, &msg[..n]);
        (&writer).write_all(&out)?;
    }
    let remote = hs
        .get_remote_static()
        .and_then(PublicKey::from_slice)
        .ok_or_else(|| Error::protocol("secure link", "no static key from the responder"))?;
    if let Some(expected) = p.remote {
        // IK guarantees it; checked anyway so the rule holds for every pattern.
        if remote != expected {
            return Err(Error::Denied {
                peer: "secure link".into(),
                reason: "reached a different key than the one listed".into(),
            });
        }
    }
    let (sealer, opener) = Transport::new(hs)?.split();
    Ok(Dialed::Secured(Box::new(SecureStream {
        reader: SecureReader::new(reader, opener),
        writer: SecureWriter::new(writer, sealer),
        remote,
        hello: Vec::new(),
    })))
}

/// Runs the responder's side over a blocking socket whose marker line `marker` was
/// already read from `reader` (which may hold message 1 already). Writes `"OK\n"`
/// and message 2; the caller checks `remote` and `hello` before serving anything.
pub fn accept(
    mut reader: BufReader<TcpStream>,
    marker: Marker,
    identity: &Identity,
    deadline: Instant,
) -> Result<SecureStream> {
    let writer = reader.get_ref().try_clone()?;
    let mut responder = Responder::new(identity, marker)?;
    let mut first = true;
    while !responder.is_finished() {
        let msg = read_frame_by(&mut reader, deadline)?;
        if let Some(reply) = responder.read(&msg)? {
            let mut out = Vec::with_capacity(3 + reply.len());
            if first {
                out.extend_from_slice(b"OK\n");
            }
            out.extend_from_slice(&reply);
            (&writer).write_all(&out)?;
            first = false;
        }
    }
    let est = responder.finish()?;
    let (sealer, opener) = est.transport.split();
    Ok(SecureStream {
        reader: SecureReader::new(reader, opener),
        writer: SecureWriter::new(writer, sealer),
        remote: est.remote,
        hello: est.hello,
    })
}

/// Waits for readable bytes until `deadline`, using the socket's read timeout.
fn fill_by(reader: &mut BufReader<TcpStream>, deadline: Instant) -> Result<bool> {
    loop {
        if !reader.buffer().is_empty() {
            return Ok(true);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout(
                "the secure handshake did not finish in time".into(),
            ));
        }
        reader.get_ref().set_read_timeout(Some(left))?;
        match reader.fill_buf() {
            Ok([]) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads a `\n`-terminated line of at most 1024 bytes (the `\n` dropped).
fn read_line_by(reader: &mut BufReader<TcpStream>, deadline: Instant) -> Result<Vec<u8>> {
    let mut line = Vec::new();
    loop {
        if !fill_by(reader, deadline)? {
            return Err(Error::Closed);
        }
        let buf = reader.buffer();
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&buf[..pos]);
            reader.consume(pos + 1);
            return Ok(line);
        }
        let n = buf.len();
        line.extend_from_slice(buf);
        reader.consume(n);
        if line.len() > 1024 {
            return Err(Error::protocol("secure link", "answer line too long"));
        }
    }
}

/// Reads exactly `n` bytes by `deadline`.
fn read_exact_by(
    reader: &mut BufReader<TcpStream>,
    n: usize,
    deadline: Instant,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        if !fill_by(reader, deadline)? {
            return Err(Error::Closed);
        }
        let buf = reader.buffer();
        let take = buf.len().min(n - out.len());
        out.extend_from_slice(&buf[..take]);
        reader.consume(take);
    }
    Ok(out)
}

fn read_frame_by(reader: &mut BufReader<TcpStream>, deadline: Instant) -> Result<Vec<u8>> {
    let len = read_exact_by(reader, 2, deadline)?;
    let len = u16::from_be_bytes([len[0], len[1]]) as usize;
    if len == 0 {
        return Err(Error::protocol("secure link", "empty frame"));
    }
    read_exact_by(reader, len, deadline)
}

/// The reading half of a [`SecureStream`]: decrypted bytes through [`BufRead`]. A
/// read that times out keeps the part of a record already received, so it can be
/// retried; a record failing authentication is an `InvalidData` error, and every read
/// after it fails too. A close in the middle of a record is `UnexpectedEof`.
pub struct SecureReader {
    inner: BufReader<TcpStream>,
    opener: Opener,
    /// The current record's frame: its bytes so far.
    frame: Vec<u8>,
    /// Decrypted bytes not yet consumed: `plain[pos..]`.
    plain: Vec<u8>,
    pos: usize,
    broken: bool,
}

impl SecureReader {
    fn new(inner: BufReader<TcpStream>, opener: Opener) -> SecureReader {
        SecureReader {
            inner,
            opener,
            frame: Vec::with_capacity(MAX_FRAME + 2),
            plain: Vec::with_capacity(MAX_RECORD_PLAINTEXT),
            pos: 0,
            broken: false,
        }
    }

    /// The socket (for read timeouts, shutdown, addresses).
    pub fn socket(&self) -> &TcpStream {
        self.inner.get_ref()
    }

    /// Whether the next record lies whole in the socket buffer (reading it would not
    /// wait for the network).
    fn whole_record_buffered(&self) -> bool {
        let buf = self.inner.buffer();
        self.frame.is_empty()
            && buf.len() >= 2
            && buf.len() >= 2 + u16::from_be_bytes([buf[0], buf[1]]) as usize
    }

    /// Whether bytes arrived that were not read yet (decrypted or still in a record).
    pub fn has_buffered(&self) -> bool {
        self.pos < self.plain.len() || !self.frame.is_empty() || !self.inner.buffer().is_empty()
    }

    /// Reads and decrypts the next record: into `dst` when given (it must hold a whole
    /// record, [`MAX_FRAME`] bytes), else into the plaintext buffer. `Ok(None)`: the
    /// other side closed cleanly between records; `Ok(Some(n))`: `n` plaintext bytes
    /// (0 for an empty record).
    ///
    /// A record that lies whole in the socket buffer is opened from there; only one
    /// that straddles two socket reads is first assembled in `frame`. That saves a copy
    /// of nearly every record, which is what bounds a download's receiving thread.
    fn next_record(&mut self, dst: Option<&mut [u8]>) -> io::Result<Option<usize>> {
        if self.broken {
            return Err(io::Error::new(ErrorKind::InvalidData, "secure link broken"));
        }
        loop {
            if self.frame.is_empty() {
                let buf = self.inner.fill_buf()?;
                if buf.is_empty() {
                    return Ok(None);
                }
                if buf.len() >= 2 {
                    let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
                    if len == 0 {
                        self.broken = true;
                        return Err(io::Error::new(ErrorKind::InvalidData, "empty record frame"));
                    }
                    if buf.len() >= 2 + len {
                        let opened =
                            open_record(&mut self.opener, &buf[2..2 + len], dst, &mut self.plain);
                        self.inner.consume(2 + len);
                        return self.opened(opened);
                    }
                }
            }
            let need = if self.frame.len() < 2 {
                2
            } else {
                2 + u16::from_be_bytes([self.frame[0], self.frame[1]]) as usize
            };
            if self.frame.len() >= 2 && need == 2 {
                self.broken = true;
                return Err(io::Error::new(ErrorKind::InvalidData, "empty record frame"));
            }
            if self.frame.len() == need && need > 2 {
                let opened = open_record(&mut self.opener, &self.frame[2..], dst, &mut self.plain);
                self.frame.clear();
                return self.opened(opened);
            }
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                self.broken = true;
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the secure link closed in the middle of a record",
                ));
            }
            let take = buf.len().min(need - self.frame.len());
            self.frame.extend_from_slice(&buf[..take]);
            self.inner.consume(take);
        }
    }

    fn opened(&mut self, opened: Result<usize>) -> io::Result<Option<usize>> {
        match opened {
            Ok(n) => Ok(Some(n)),
            Err(e) => {
                self.broken = true;
                self.plain.clear();
                self.pos = 0;
                Err(io::Error::new(ErrorKind::InvalidData, e.to_string()))
            }
        }
    }
}

/// Opens `record` into `dst`, or (without one) into `plain`, replacing its contents.
fn open_record(
    opener: &mut Opener,
    record: &[u8],
    dst: Option<&mut [u8]>,
    plain: &mut Vec<u8>,
) -> Result<usize> {
    match dst {
        Some(d) => opener.open_into(record, d),
        None => {
            plain.clear();
            opener.open(record, plain)?;
            Ok(plain.len())
        }
    }
}

impl Read for SecureReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.plain.len() && out.len() >= MAX_FRAME {
            // Nothing buffered and room for a whole record: decrypt straight into the
            // caller's buffer (one copy fewer), and go on with the records that are
            // already whole in the socket buffer while they fit (never waiting for
            // more), so a large buffer is handed back full rather than one record at
            // a time.
            let mut total = 0;
            while out.len() - total >= MAX_FRAME && (total == 0 || self.whole_record_buffered()) {
                match self.next_record(Some(&mut out[total..]))? {
                    None => break,
                    Some(n) => total += n,
                }
            }
            return Ok(total);
        }
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for SecureReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        // Empty records are legal: keep reading until bytes or a clean end.
        while self.pos == self.plain.len() {
            self.pos = 0;
            if self.next_record(None)?.is_none() {
                self.plain.clear();
                return Ok(&[]);
            }
        }
        Ok(&self.plain[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.plain.len());
    }
}

/// The writing half of a [`SecureStream`]: each `write` sends one or more whole
/// records. A write that fails part-way (a timeout) leaves the link unusable, so every
/// later write fails too.
pub struct SecureWriter {
    sock: TcpStream,
    sealer: Sealer,
    out: Vec<u8>,
    broken: bool,
}

impl SecureWriter {
    fn new(sock: TcpStream, sealer: Sealer) -> SecureWriter {
        SecureWriter {
            sock,
            sealer,
            out: Vec::with_capacity(MAX_FRAME + 2),
            broken: false,
        }
    }

    /// The socket (for write timeouts, shutdown, addresses).
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Encrypts and sends all of `buf` (split into records of at most
    /// [`MAX_RECORD_PLAINTEXT`] bytes).
    pub fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::new(ErrorKind::BrokenPipe, "secure link broken"));
        }
        for chunk in buf.chunks(MAX_RECORD_PLAINTEXT) {
            self.out.clear();
            self.sealer
                .seal(chunk, &mut self.out)
                .map_err(|e| io::Error::other(e.to_string()))?;
            if let Err(e) = (&self.sock).write_all(&self.out) {
                self.broken = true;
                return Err(e);
            }
        }
        Ok(())
    }
}

impl SecureWriter {
    /// Seals all of `buf` (as records of at most [`MAX_RECORD_PLAINTEXT`] bytes) and
    /// hands the framed bytes to `write` with the socket, for callers that write on
    /// their own terms: one deadline for a whole message, a minimum rate for a file.
    /// `write` must write all of them or fail; a failure leaves the link broken (a
    /// record cut short cannot be resumed).
    pub fn send_with(
        &mut self,
        buf: &[u8],
        write: impl FnOnce(&TcpStream, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::new(ErrorKind::BrokenPipe, "secure link broken"));
        }
        self.out.clear();
        self.sealer
            .seal(buf, &mut self.out)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let result = write(&self.sock, &self.out);
        if result.is_err() {
            self.broken = true;
        }
        // A large file chunk grew the buffer; a chat keeps at most two records' worth.
        if self.out.capacity() > 4 * (MAX_FRAME + 2) {
            self.out = Vec::with_capacity(MAX_FRAME + 2);
        }
        result
    }
}

impl Write for SecureWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(MAX_RECORD_PLAINTEXT);
        self.send(&buf[..n])?;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.send(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Duration;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    /// Accepts one link on `b`, echoing the hello and the remote key back.
    fn serve(b: TcpStream, id: Identity) -> std::thread::JoinHandle<Result<(Vec<u8>, PublicKey)>> {
        std::thread::spawn(move || {
            let mut r = BufReader::new(b);
            let line = read_line_by(&mut r, deadline())?;
            let marker = Marker::parse(&line).expect("marker");
            let mut s = accept(r, marker, &id, deadline())?;
            let mut got = String::new();
            s.reader.read_line(&mut got)?;
            s.writer.write_all(got.to_uppercase().as_bytes())?;
            let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
            s.writer.write_all(&big)?;
            Ok((s.hello, s.remote))
        })
    }

    fn run(pattern_known: bool, cipher: Cipher) {
        let server = Identity::generate().unwrap();
        let client = Identity::generate().unwrap();
        let (a, b) = pair();
        let t = serve(b, server.clone());
        let dialed = dial(
            a,
            DialParams {
                kind: Kind::Peer,
                identity: &client,
                remote: pattern_known.then(|| server.public()),
                hello: b"alice",
                cipher,
                deadline: deadline(),
            },
        )
        .unwrap();
        let Dialed::Secured(mut s) = dialed else {
            panic!("refused")
        };
        assert_eq!(s.remote, server.public());
        s.writer.write_all(b"hello there\n").unwrap();
        let mut line = String::new();
        s.reader.read_line(&mut line).unwrap();
        assert_eq!(line, "HELLO THERE\n");
        let mut big = Vec::new();
        s.reader.read_to_end(&mut big).unwrap();
        assert_eq!(big.len(), 300_000);
        assert!(big.iter().enumerate().all(|(i, b)| *b == i as u8));
        let (hello, remote) = t.join().unwrap().unwrap();
        assert_eq!(hello, b"alice");
        assert_eq!(remote, client.public());
    }

    #[test]
    fn ik_and_xx_with_both_ciphers() {
        for known in [true, false] {
            for c in [Cipher::AesGcm, Cipher::ChaChaPoly] {
                run(known, c);
            }
        }
    }

    #[test]
    fn reads_into_large_and_small_buffers_see_every_byte_in_order() {
        let server = Identity::generate().unwrap();
        let client = Identity::generate().unwrap();
        let (a, b) = pair();
        let id = server.clone();
        let total = 1_000_003usize;
        let t = std::thread::spawn(move || {
            let mut r = BufReader::new(b);
            let line = read_line_by(&mut r, deadline()).unwrap();
            let mut s = accept(r, Marker::parse(&line).unwrap(), &id, deadline()).unwrap();
            let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
            // Odd-sized writes: records of every size, straddling the reader's buffer.
            for chunk in data.chunks(70_001) {
                s.writer.write_all(chunk).unwrap();
            }
        });
        let Dialed::Secured(mut s) = dial(
            a,
            DialParams {
                kind: Kind::Peer,
                identity: &client,
                remote: Some(server.public()),
                hello: b"bob",
                cipher: Cipher::preferred(),
                deadline: deadline(),
            },
        )
        .unwrap() else {
            panic!("refused")
        };
        let mut got = Vec::new();
        let mut big = vec![0u8; MAX_FRAME + 100];
        let mut small = [0u8; 1000];
        let mut turn = 0u32;
        loop {
            turn += 1;
            let n = if turn % 3 == 0 {
                s.reader.read(&mut small).unwrap()
            } else {
                s.reader.read(&mut big).unwrap()
            };
            if n == 0 {
                break;
            }
            got.extend_from_slice(if turn % 3 == 0 {
                &small[..n]
            } else {
                &big[..n]
            });
        }
        t.join().unwrap();
        assert_eq!(got.len(), total);
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    }

    #[test]
    fn ik_to_the_wrong_key_fails() {
        let server = Identity::generate().unwrap();
        let client = Identity::generate().unwrap();
        let someone = Identity::generate().unwrap();
        let (a, b) = pair();
        let t = serve(b, server);
        let r = dial(
            a,
            DialParams {
                kind: Kind::Peer,
                identity: &client,
                remote: Some(someone.public()),
                hello: b"alice",
                cipher: Cipher::preferred(),
                deadline: deadline(),
            },
        );
        assert!(r.is_err());
        assert!(t.join().unwrap().is_err());
    }

    #[test]
    fn a_flipped_byte_fails_authentication_and_stays_failed() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        // Drive both sides in memory through the pure API.
        let marker = Marker {
            kind: Kind::Registry,
            pattern: Pattern::XX,
            cipher: Cipher::ChaChaPoly,
        };
        let mut init = snow::Builder::new(marker.noise_params())
            .local_private_key(a.private_bytes())
            .unwrap()
            .prologue(&marker.prologue())
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut resp = Responder::new(&b, marker).unwrap();
        let mut buf = vec![0u8; MAX_FRAME];
        let n = init.write_message(&[], &mut buf).unwrap();
        let reply = resp.read(&buf[..n]).unwrap().unwrap();
        let mut scratch = vec![0u8; MAX_FRAME];
        init.read_message(&reply[2..], &mut scratch).unwrap();
        let n = init.write_message(b"hi", &mut buf).unwrap();
        assert!(resp.read(&buf[..n]).unwrap().is_none());
        let est = resp.finish().unwrap();
        assert_eq!(est.hello, b"hi");
        assert_eq!(est.remote, a.public());
        let mut tx = Transport::new(init).unwrap();
        let mut rx = est.transport;
        let mut wire = Vec::new();
        tx.seal(b"secret message", &mut wire).unwrap();
        assert!(!wire.windows(6).any(|w| w == b"secret"));
        let mut fb = FrameBuffer::new();
        let mut flipped = wire.clone();
        flipped[5] ^= 1;
        fb.push(&flipped);
        let rec = fb.pop().unwrap().unwrap();
        let mut plain = Vec::new();
        assert!(rx.open(&rec, &mut plain).is_err());
        // The nonce did not move, so the genuine record still opens; a replay does not.
        fb.push(&wire);
        let rec = fb.pop().unwrap().unwrap();
        rx.open(&rec, &mut plain).unwrap();
        assert_eq!(plain, b"secret message");
        assert!(rx.open(&rec, &mut plain).is_err());
    }

    #[test]
    fn markers_round_trip_and_reject_junk() {
        for kind in [Kind::Peer, Kind::Registry] {
            for pattern in [Pattern::IK, Pattern::XX] {
                for cipher in [Cipher::AesGcm, Cipher::ChaChaPoly] {
                    let m = Marker {
                        kind,
                        pattern,
                        cipher,
                    };
                    let line = m.to_line();
                    let parsed = Marker::parse(line.trim_end_matches('\n').as_bytes());
                    assert_eq!(parsed, Some(m));
                    assert!(Marker::looks_like(line.as_bytes(), kind));
                }
            }
        }
        for junk in [
            "P2P/2 IK",
            "P2P/2 NN AESGCM",
            "P2P/2 IK AESGCM x",
            "P2P/1 CHAT a",
            "",
        ] {
            assert_eq!(Marker::parse(junk.as_bytes()), None, "{junk}");
        }
    }

    #[test]
    fn frame_buffer_handles_split_and_empty_frames() {
        let mut fb = FrameBuffer::new();
        fb.push(&[0, 3, b'a']);
        assert!(fb.pop().unwrap().is_none());
        fb.push(b"bc\x00\x01z");
        assert_eq!(fb.pop().unwrap().unwrap(), b"abc");
        assert_eq!(fb.pop().unwrap().unwrap(), b"z");
        assert_eq!(fb.pending(), 0);
        fb.push(&[0, 0]);
        assert!(fb.pop().is_err());
    }
}
