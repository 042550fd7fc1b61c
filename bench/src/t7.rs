//! T7 — the secure link on its own (`p2pcore::secure`, issue 11), next to plain TCP
//! measured in the same run. No peer, no registry, no file: what the Noise handshake and
//! the AEAD records cost by themselves, so T1 (the download) and T4 (chat) can be read
//! against it.
//!
//! - **AEAD speed**: records of [`MAX_RECORD_PLAINTEXT`] bytes sealed and opened in
//!   memory, one thread, by a `Transport` pair from an XX handshake run in memory
//!   (`secure::transport_pair_for_bench`), for AES-256-GCM and ChaCha20-Poly1305. Every
//!   opened record is compared with what was sealed (untimed). The figure is bytes over
//!   seal time + open time: one core doing both ends' work. BLAKE3 over the same bytes,
//!   one thread, for reference (a download hashes what it decrypts).
//! - **Encrypted copy**: `--size-mib` MiB from the accepting side's `SecureWriter` to
//!   the dialing side's `SecureReader` (the direction of a download: the dialer
//!   receives) over 127.0.0.1, in writes of four full records, the reader discarding
//!   what `fill_buf` hands it. Timed from the first write (the handshake is done) until
//!   the reader sees the end of the stream. Baseline: the same bytes in the same write
//!   sizes over a plain loopback socket, read into a 256 KiB buffer and discarded.
//!   Runs alternate.
//! - **Handshakes per second**: one connection after another, each a TCP connect, the
//!   `P2P/2` marker and a complete IK (or XX) handshake through `secure::dial` ↔
//!   `secure::accept`, then the acceptor closes and the dialer reads the end of the
//!   stream. Bounded by a count and a time. Baseline: the same lifecycle without Noise
//!   (connect, one line, `OK\n`, close). CPU per handshake: this process's user +
//!   system time (`getrusage`) over the run divided by the handshakes, both ends
//!   included, as both run here.
//! - **Round trip**: 64 bytes dialer → acceptor → dialer over a secured link, one at a
//!   time, an echo thread on the acceptor's side (`TCP_NODELAY` on both ends); p50 and
//!   p99. Baseline: T4's raw TCP ping-pong, measured in the same run.

use crate::report::{Figure, Goal, Stats};
use crate::scratch::{self, mb_per_s};
use crate::t4::{self, pct, PING, WARMUP};
use crate::{progress, Options, Outcome};
use p2pcore::identity::{Identity, PublicKey};
use p2pcore::secure::{
    self, Cipher, DialParams, Dialed, Kind, Marker, Pattern, SecureStream, MAX_FRAME, MAX_MARKER,
    MAX_RECORD_PLAINTEXT,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const RUNS: usize = 3;
/// Writes of the copies: four full records, so the link is measured at its best framing.
const WRITE_CHUNK: usize = 4 * MAX_RECORD_PLAINTEXT;
/// The in-memory payload (about 4 MiB), sent over and over: a whole number of writes.
const SOURCE_LEN: usize = 16 * WRITE_CHUNK;
/// The plain copy's read buffer (T1's baseline uses the same).
const READ_BUF: usize = 256 * 1024;
/// Goal: the encrypted copy reaches this fraction of the plain copy (issue 11's aim for
/// the encrypted download; a download cannot run faster than its link).
const GOAL_COPY_RATIO: f64 = 0.75;
/// Goal: the encrypted round trip is at most this multiple of the raw ping-pong's.
const GOAL_RTT_RATIO: f64 = 1.5;
/// Any single wait (connect, handshake, read, write) longer than this means a stall.
const STEP_LIMIT: Duration = Duration::from_secs(10);
/// Hello sent by the dialer (a peer's would be its username).
const HELLO: &[u8] = b"t7-bench";

/// Run lengths, from the options.
struct Sizes {
    /// Bytes sealed and opened per AEAD run (and hashed per BLAKE3 run).
    aead_bytes: u64,
    /// Bytes per copy.
    copy_bytes: u64,
    /// Handshakes per run at most, and the time a run may take at most.
    handshakes: usize,
    handshake_time: Duration,
    round_trips: usize,
}

impl Sizes {
    fn of(opts: &Options) -> Sizes {
        Sizes {
            aead_bytes: if opts.quick { 128 } else { 512 } * scratch::MIB,
            copy_bytes: opts.size_mib * scratch::MIB,
            handshakes: if opts.quick { 300 } else { 2_000 },
            handshake_time: Duration::from_secs(if opts.quick { 1 } else { 3 }),
            round_trips: if opts.quick { 500 } else { 2_000 },
        }
    }
}

/// How a connection of the handshake runs is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    /// TCP connect, one line, `OK\n`, close: the baseline.
    Plain,
    /// TCP connect and a Noise handshake with this pattern.
    Secure(Pattern),
}

/// One copy: wall-clock seconds, and the process's CPU seconds (both ends) meanwhile.
#[derive(Debug, Clone, Copy)]
struct Copied {
    secs: f64,
    cpu_secs: f64,
}

impl Copied {
    /// CPU milliseconds per GiB moved.
    fn cpu_ms_per_gib(&self, bytes: u64) -> f64 {
        self.cpu_secs * 1e3 / (bytes as f64 / (1u64 << 30) as f64)
    }
}

/// One handshake run: how many completed, in how long, with how much CPU.
#[derive(Debug, Clone, Copy)]
struct HandshakeRun {
    count: usize,
    secs: f64,
    cpu_secs: f64,
}

impl HandshakeRun {
    fn per_sec(&self) -> f64 {
        self.count as f64 / self.secs
    }
    fn cpu_us(&self) -> f64 {
        self.cpu_secs / self.count as f64 * 1e6
    }
}

pub fn run(opts: &Options) -> Result<Outcome, String> {
    let sizes = Sizes::of(opts);
    let source = Arc::new(scratch::noise_bytes(SOURCE_LEN, 0x7437));
    let preferred = Cipher::preferred();
    let other = match preferred {
        Cipher::AesGcm => Cipher::ChaChaPoly,
        Cipher::ChaChaPoly => Cipher::AesGcm,
    };

    // AEAD and hash speed, in memory.
    let (mut aes, mut chacha, mut hash) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=RUNS {
        aes.push(aead_speed(Cipher::AesGcm, sizes.aead_bytes, &source)?);
        chacha.push(aead_speed(Cipher::ChaChaPoly, sizes.aead_bytes, &source)?);
        hash.push(mb_per_s(
            sizes.aead_bytes,
            blake3_speed(sizes.aead_bytes, &source),
        ));
        let (a, c) = (aes[run - 1], chacha[run - 1]);
        progress(&format!(
            "T7 run {run}/{RUNS} AEAD (MB/s of CPU time) AES-256-GCM seal {:.0}, open {:.0} \
             in frame, {:.0} aligned; ChaCha20-Poly1305 seal {:.0}, open {:.0} in frame, \
             {:.0} aligned; BLAKE3 {:.0}",
            a.seal_mbs(),
            a.framed_mbs(),
            a.aligned_mbs(),
            c.seal_mbs(),
            c.framed_mbs(),
            c.aligned_mbs(),
            hash[run - 1]
        ));
    }

    // The link copy against a plain socket.
    let bytes = sizes.copy_bytes;
    let (mut ours, mut theirs, mut ours_other) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ours_cpu, mut theirs_cpu) = (Vec::new(), Vec::new());
    for run in 1..=RUNS {
        let enc = secure_copy(preferred, bytes, &source, false)?;
        let base = plain_copy(bytes, &source, false)?;
        let alt = secure_copy(other, bytes, &source, false)?;
        ours.push(mb_per_s(bytes, enc.secs));
        theirs.push(mb_per_s(bytes, base.secs));
        ours_other.push(mb_per_s(bytes, alt.secs));
        ours_cpu.push(enc.cpu_ms_per_gib(bytes));
        theirs_cpu.push(base.cpu_ms_per_gib(bytes));
        progress(&format!(
            "T7 run {run}/{RUNS} copy: {} {:.0} MB/s ({:.0} CPU ms/GiB), plain TCP {:.0} MB/s \
             ({:.0} CPU ms/GiB), {} {:.0} MB/s",
            cipher_name(preferred),
            mb_per_s(bytes, enc.secs),
            enc.cpu_ms_per_gib(bytes),
            mb_per_s(bytes, base.secs),
            base.cpu_ms_per_gib(bytes),
            cipher_name(other),
            mb_per_s(bytes, alt.secs)
        ));
    }

    // Handshakes, one connection after another.
    let (mut ik, mut xx, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=RUNS {
        let i = handshakes(Conn::Secure(Pattern::IK), &sizes)?;
        let x = handshakes(Conn::Secure(Pattern::XX), &sizes)?;
        let p = handshakes(Conn::Plain, &sizes)?;
        progress(&format!(
            "T7 run {run}/{RUNS} handshakes: IK {:.0}/s ({:.0} us CPU), XX {:.0}/s ({:.0} us \
             CPU), plain connections {:.0}/s ({:.0} us CPU)",
            i.per_sec(),
            i.cpu_us(),
            x.per_sec(),
            x.cpu_us(),
            p.per_sec(),
            p.cpu_us()
        ));
        ik.push(i);
        xx.push(x);
        plain.push(p);
    }

    // Round trips.
    let (mut rtt, mut rtt_base) = (Vec::new(), Vec::new());
    for run in 1..=RUNS {
        let ours = secure_ping_pong(sizes.round_trips)?;
        let base = t4::raw_ping_pong(sizes.round_trips)?;
        progress(&format!(
            "T7 run {run}/{RUNS} round trip: encrypted p50 {:.1} us p99 {:.1} us, raw TCP \
             p50 {:.1} us p99 {:.1} us",
            pct(&ours, 50.0),
            pct(&ours, 99.0),
            pct(&base, 50.0),
            pct(&base, 99.0)
        ));
        rtt.push(ours);
        rtt_base.push(base);
    }

    let stats = |runs: &[HandshakeRun], f: fn(&HandshakeRun) -> f64| {
        Stats::of(&runs.iter().map(f).collect::<Vec<_>>())
    };
    let pcts =
        |runs: &[Vec<f64>], p: f64| Stats::of(&runs.iter().map(|r| pct(r, p)).collect::<Vec<_>>());
    let aead_stats = |runs: &[AeadRun], f: fn(&AeadRun) -> f64| {
        Stats::of(&runs.iter().map(f).collect::<Vec<_>>())
    };
    let aead_extra = |runs: &[AeadRun]| {
        let num = |f: fn(&AeadRun) -> f64| crate::report::num(aead_stats(runs, f).median);
        format!(
            "one thread, in memory, records of {MAX_RECORD_PLAINTEXT} bytes through \
             Transport::seal/open, thread CPU time (other load not counted); one core \
             doing both ends' work, opening in the frame as SecureReader does; seal alone \
             {} MB/s, open in the frame {} MB/s, open from an aligned copy {} MB/s; {} MiB \
             per run, {RUNS} runs",
            num(AeadRun::seal_mbs),
            num(AeadRun::framed_mbs),
            num(AeadRun::aligned_mbs),
            sizes.aead_bytes / scratch::MIB
        )
    };
    let size_mib = bytes / scratch::MIB;
    let handshake_extra = |pattern: &str| {
        format!(
            "{pattern}: TCP connect, P2P/2 marker, Noise handshake (secure::dial <-> \
             secure::accept), acceptor closes, dialer reads the end; one at a time, at most \
             {} per run or {} s; baseline: the same connection with one plaintext line and \
             OK instead of the handshake",
            sizes.handshakes,
            sizes.handshake_time.as_secs()
        )
    };
    let figures = vec![
        Figure::single(
            "T7 AEAD AES-256-GCM seal+open",
            "MB/s",
            aead_stats(&aes, AeadRun::seal_open),
        )
        .extra(aead_extra(&aes)),
        Figure::single(
            "T7 AEAD ChaCha20-Poly1305 seal+open",
            "MB/s",
            aead_stats(&chacha, AeadRun::seal_open),
        )
        .extra(aead_extra(&chacha)),
        Figure::single("T7 BLAKE3 hash (reference)", "MB/s", Stats::of(&hash)).extra(
            "one thread, blake3::Hasher::update over the same in-memory bytes, thread CPU \
             time: what a download's receiver also spends per byte",
        ),
        Figure::compared(
            format!(
                "T7 encrypted copy {size_mib} MiB, {}",
                cipher_name(preferred)
            ),
            "MB/s",
            Stats::of(&ours),
            Stats::of(&theirs),
        )
        .goal(Goal::RatioAtLeast(GOAL_COPY_RATIO))
        .extra(format!(
            "SecureWriter -> SecureReader over 127.0.0.1 with this machine's cipher \
             (Cipher::preferred), writes of {WRITE_CHUNK} bytes (4 records), reader \
             discards; no file, no hash; baseline: plain TCP, same bytes and writes, \
             {READ_BUF}-byte reads; {RUNS} runs each, alternating"
        )),
        Figure::compared(
            format!("T7 context: encrypted copy, {}", cipher_name(other)),
            "MB/s",
            Stats::of(&ours_other),
            Stats::of(&theirs),
        )
        .extra("the same copy with the other cipher (no goal)"),
        Figure::compared(
            format!("T7 CPU per GiB, encrypted copy, {}", cipher_name(preferred)),
            "ms/GiB",
            Stats::of(&ours_cpu),
            Stats::of(&theirs_cpu),
        )
        .extra(
            "user + system time of this process (getrusage), sender and receiver together, \
             per GiB moved, against the plain copy's; ratio = encrypted/plain, lower is \
             better. The copies are CPU-bound on 2 cores: this is the link's cost \
             whatever else runs on the machine",
        ),
        Figure::compared(
            "T7 handshakes IK",
            "conn/s",
            stats(&ik, HandshakeRun::per_sec),
            stats(&plain, HandshakeRun::per_sec),
        )
        .extra(handshake_extra("IK (the dialer knows the key)")),
        Figure::compared(
            "T7 handshakes XX",
            "conn/s",
            stats(&xx, HandshakeRun::per_sec),
            stats(&plain, HandshakeRun::per_sec),
        )
        .extra(handshake_extra("XX (no key known)")),
        Figure::compared(
            "T7 CPU per handshake IK",
            "us",
            stats(&ik, HandshakeRun::cpu_us),
            stats(&plain, HandshakeRun::cpu_us),
        )
        .extra(
            "user + system time of this process (getrusage) per connection, both ends \
             included; baseline: a plain connection's",
        ),
        Figure::compared(
            "T7 CPU per handshake XX",
            "us",
            stats(&xx, HandshakeRun::cpu_us),
            stats(&plain, HandshakeRun::cpu_us),
        ),
        Figure::compared(
            "T7 encrypted round trip p50",
            "us",
            pcts(&rtt, 50.0),
            pcts(&rtt_base, 50.0),
        )
        .goal(Goal::RatioAtMost(GOAL_RTT_RATIO))
        .extra(format!(
            "{PING} bytes dialer -> acceptor -> dialer through SecureStream (one record \
             each way), echoed by a thread, TCP_NODELAY; {} round trips per run, {RUNS} \
             runs; ratio = encrypted/raw, lower is better; baseline: raw TCP ping-pong",
            sizes.round_trips
        )),
        Figure::compared(
            "T7 encrypted round trip p99",
            "us",
            pcts(&rtt, 99.0),
            pcts(&rtt_base, 99.0),
        ),
    ];
    Ok(Outcome {
        figures,
        notes: Vec::new(),
    })
}

fn cipher_name(c: Cipher) -> &'static str {
    match c {
        Cipher::AesGcm => "AES-256-GCM",
        Cipher::ChaChaPoly => "ChaCha20-Poly1305",
    }
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, String> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| format!("spawn: {e}"))
}

/// One AEAD run: bytes and this thread's CPU seconds, per operation.
#[derive(Debug, Clone, Copy, Default)]
struct AeadRun {
    /// Bytes sealed (all records).
    bytes: u64,
    seal: f64,
    /// Bytes opened in the frame (2 bytes into it, as `SecureReader` does), and time.
    framed_bytes: u64,
    framed: f64,
    /// Bytes opened from a copy of the record at the start of its own buffer, and time.
    aligned_bytes: u64,
    aligned: f64,
}

impl AeadRun {
    /// MB/s of one core sealing and opening as the link does (opening in the frame).
    fn seal_open(&self) -> f64 {
        let per_byte = self.seal / self.bytes as f64 + self.framed / self.framed_bytes as f64;
        1.0 / per_byte / scratch::MB
    }
    fn seal_mbs(&self) -> f64 {
        mb_per_s(self.bytes, self.seal)
    }
    fn framed_mbs(&self) -> f64 {
        mb_per_s(self.framed_bytes, self.framed)
    }
    fn aligned_mbs(&self) -> f64 {
        mb_per_s(self.aligned_bytes, self.aligned)
    }
}

/// At least `bytes` sealed and opened in whole records of [`MAX_RECORD_PLAINTEXT`]
/// bytes, taken in turn from 64 KiB-aligned places of `source` (as from a file read
/// buffer). Records are opened alternately where `SecureReader` opens them (in the
/// frame, after its 2-byte length) and from a copy at the start of a buffer of its
/// own (the copy untimed): the two differ only in the alignment of the copy the
/// cipher makes. Every opened record is checked against its plaintext. Times are this
/// thread's CPU time, so other work on the machine (preempting it) does not count.
fn aead_speed(cipher: Cipher, bytes: u64, source: &[u8]) -> Result<AeadRun, String> {
    const STRIDE: usize = 64 * 1024;
    let (mut tx, mut rx) = secure::transport_pair_for_bench(cipher)
        .map_err(|e| format!("{} transport pair: {e}", cipher_name(cipher)))?;
    let records = bytes.div_ceil(MAX_RECORD_PLAINTEXT as u64);
    let slots = (source.len() - MAX_RECORD_PLAINTEXT) / STRIDE + 1;
    let mut wire = Vec::with_capacity(MAX_FRAME + 2);
    let mut aligned = Vec::with_capacity(MAX_FRAME);
    let mut plain = Vec::with_capacity(MAX_FRAME);
    let mut run = AeadRun::default();
    let (mut seal, mut framed, mut copied) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for i in 0..records {
        let at = (i as usize % slots) * STRIDE;
        let chunk = &source[at..at + MAX_RECORD_PLAINTEXT];
        wire.clear();
        plain.clear();
        let t = thread_cpu();
        tx.seal(chunk, &mut wire)
            .map_err(|e| format!("seal: {e}"))?;
        seal += thread_cpu() - t;
        // A single record: its frame's body follows the 2-byte length.
        let in_frame = i % 2 == 0;
        let record: &[u8] = if in_frame {
            &wire[2..]
        } else {
            aligned.clear();
            aligned.extend_from_slice(&wire[2..]);
            &aligned
        };
        let t = thread_cpu();
        rx.open(record, &mut plain)
            .map_err(|e| format!("open: {e}"))?;
        let took = thread_cpu() - t;
        if in_frame {
            framed += took;
            run.framed_bytes += MAX_RECORD_PLAINTEXT as u64;
        } else {
            copied += took;
            run.aligned_bytes += MAX_RECORD_PLAINTEXT as u64;
        }
        if plain != chunk {
            return Err(format!(
                "{}: record {i} did not open to what was sealed",
                cipher_name(cipher)
            ));
        }
    }
    run.bytes = records * MAX_RECORD_PLAINTEXT as u64;
    run.seal = seal.as_secs_f64();
    run.framed = framed.as_secs_f64();
    run.aligned = copied.as_secs_f64();
    Ok(run)
}

/// CPU seconds of this thread to hash `bytes` from `source` (repeated).
fn blake3_speed(bytes: u64, source: &[u8]) -> f64 {
    let mut hasher = blake3::Hasher::new();
    let mut left = bytes;
    let t = thread_cpu();
    while left > 0 {
        let n = left.min(source.len() as u64) as usize;
        hasher.update(&source[..n]);
        left -= n as u64;
    }
    std::hint::black_box(hasher.finalize());
    (thread_cpu() - t).as_secs_f64()
}

/// Whether `data` is `source` repeated, seen from stream offset `offset`.
fn matches_cyclic(source: &[u8], offset: u64, data: &[u8]) -> bool {
    let mut at = (offset % source.len() as u64) as usize;
    let mut rest = data;
    while !rest.is_empty() {
        let n = rest.len().min(source.len() - at);
        if rest[..n] != source[at..at + n] {
            return false;
        }
        rest = &rest[n..];
        at = 0;
    }
    true
}

/// Writes `bytes` of `source` (repeated) through `write`, [`WRITE_CHUNK`] at a time.
fn send_cyclic(
    source: &[u8],
    bytes: u64,
    mut write: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<(), String> {
    let mut left = bytes;
    let mut at = 0;
    while left > 0 {
        let n = left.min(WRITE_CHUNK as u64) as usize;
        write(&source[at..at + n]).map_err(|e| format!("send: {e}"))?;
        left -= n as u64;
        // SOURCE_LEN is a whole number of chunks: a chunk never wraps.
        at = (at + n) % source.len();
    }
    Ok(())
}

fn listen() -> Result<(TcpListener, SocketAddr), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    Ok((listener, addr))
}

fn set_timeouts(sock: &TcpStream, nodelay: bool) -> Result<(), String> {
    sock.set_read_timeout(Some(STEP_LIMIT))
        .and_then(|()| sock.set_write_timeout(Some(STEP_LIMIT)))
        .and_then(|()| sock.set_nodelay(nodelay))
        .map_err(|e| format!("socket options: {e}"))
}

/// The dialer's side: the handshake over a connected socket.
fn dial(
    sock: TcpStream,
    identity: &Identity,
    remote: Option<PublicKey>,
    cipher: Cipher,
) -> Result<SecureStream, String> {
    let params = DialParams {
        kind: Kind::Peer,
        identity,
        remote,
        hello: HELLO,
        cipher,
        deadline: Instant::now() + STEP_LIMIT,
    };
    match secure::dial(sock, params) {
        Ok(Dialed::Secured(s)) => Ok(*s),
        Ok(Dialed::Refused(line)) => Err(format!("handshake refused: {line}")),
        Err(e) => Err(format!("dial: {e}")),
    }
}

/// The acceptor's side on an accepted socket: the marker line, then the handshake.
fn respond(sock: TcpStream, identity: &Identity) -> Result<SecureStream, String> {
    set_timeouts(&sock, false)?;
    let mut reader = BufReader::with_capacity(MAX_FRAME + 2, sock);
    let mut line = Vec::new();
    (&mut reader)
        .take(MAX_MARKER as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("reading the marker: {e}"))?;
    if line.pop() != Some(b'\n') {
        return Err("no marker line".into());
    }
    let marker = Marker::parse(&line)
        .ok_or_else(|| format!("bad marker {:?}", String::from_utf8_lossy(&line)))?;
    let s = secure::accept(reader, marker, identity, Instant::now() + STEP_LIMIT)
        .map_err(|e| format!("accept: {e}"))?;
    if s.hello != HELLO {
        return Err("the hello did not arrive intact".into());
    }
    Ok(s)
}

/// Both ends of a secured loopback link, `(dialer, acceptor)`: IK (the dialer knows
/// the acceptor's key), `cipher`, timeouts of [`STEP_LIMIT`] on both sockets.
fn secure_pair(cipher: Cipher, nodelay: bool) -> Result<(SecureStream, SecureStream), String> {
    let (listener, addr) = listen()?;
    let server_id = Identity::generate().map_err(|e| format!("identity: {e}"))?;
    let client_id = Identity::generate().map_err(|e| format!("identity: {e}"))?;
    let server_key = server_id.public();
    let sock =
        TcpStream::connect_timeout(&addr, STEP_LIMIT).map_err(|e| format!("connect: {e}"))?;
    set_timeouts(&sock, nodelay)?;
    // The kernel completed the TCP handshake: accept returns at once.
    let (accepted, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let acceptor = spawn("t7-accept", move || respond(accepted, &server_id))?;
    let dialed = dial(sock, &client_id, Some(server_key), cipher);
    let accepted = acceptor
        .join()
        .map_err(|_| "acceptor panicked".to_string())?;
    let (dialed, accepted) = (dialed?, accepted?);
    // The handshake left its own deadline as the read timeout.
    set_timeouts(accepted.reader.socket(), nodelay)?;
    set_timeouts(dialed.reader.socket(), nodelay)?;
    if accepted.remote != client_id.public() {
        return Err("the acceptor saw another key than the dialer's".into());
    }
    Ok((dialed, accepted))
}

/// Seconds to move `bytes` from the acceptor's `SecureWriter` to the dialer's
/// `SecureReader` (after the handshake), and the process's CPU seconds meanwhile. With
/// `check`, every byte received is compared with what was sent (for tests: this costs
/// time).
fn secure_copy(
    cipher: Cipher,
    bytes: u64,
    source: &Arc<Vec<u8>>,
    check: bool,
) -> Result<Copied, String> {
    let (client, server) = secure_pair(cipher, false)?;
    let cpu = process_cpu();
    let t = Instant::now();
    let sender = {
        let source = source.clone();
        spawn("t7-secure-send", move || {
            let mut writer = server.writer;
            let sent = send_cyclic(&source, bytes, |c| writer.send(c));
            let _ = writer.socket().shutdown(Shutdown::Write);
            sent
        })?
    };
    let mut reader = client.reader;
    let received = (|| -> Result<u64, String> {
        let mut total = 0u64;
        loop {
            let buf = reader.fill_buf().map_err(|e| format!("receive: {e}"))?;
            if buf.is_empty() {
                return Ok(total);
            }
            if check && !matches_cyclic(source, total, buf) {
                return Err(format!("byte mismatch after {total} bytes"));
            }
            let n = buf.len();
            reader.consume(n);
            total += n as u64;
        }
    })();
    let secs = t.elapsed().as_secs_f64();
    if received.is_err() {
        // The sender may be blocked on a full socket: unblock it.
        let _ = reader.socket().shutdown(Shutdown::Both);
    }
    let sent = sender
        .join()
        .map_err(|_| "secure sender panicked".to_string())?;
    let cpu_secs = process_cpu() - cpu;
    let received = received?;
    sent?;
    if received != bytes {
        return Err(format!(
            "encrypted copy moved {received} bytes, expected {bytes}"
        ));
    }
    Ok(Copied { secs, cpu_secs })
}

/// The baseline: seconds to move `bytes` over a plain loopback socket in the same
/// writes, read into a [`READ_BUF`] buffer and discarded (and the CPU seconds).
fn plain_copy(bytes: u64, source: &Arc<Vec<u8>>, check: bool) -> Result<Copied, String> {
    let (listener, addr) = listen()?;
    let mut client =
        TcpStream::connect_timeout(&addr, STEP_LIMIT).map_err(|e| format!("connect: {e}"))?;
    let (server, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    set_timeouts(&client, false)?;
    set_timeouts(&server, false)?;
    let cpu = process_cpu();
    let t = Instant::now();
    let sender = {
        let source = source.clone();
        spawn("t7-plain-send", move || {
            let mut sock = server;
            let sent = send_cyclic(&source, bytes, |c| sock.write_all(c));
            let _ = sock.shutdown(Shutdown::Write);
            sent
        })?
    };
    let received = (|| -> Result<u64, String> {
        let mut buf = vec![0u8; READ_BUF];
        let mut total = 0u64;
        loop {
            let n = client.read(&mut buf).map_err(|e| format!("receive: {e}"))?;
            if n == 0 {
                return Ok(total);
            }
            if check && !matches_cyclic(source, total, &buf[..n]) {
                return Err(format!("byte mismatch after {total} bytes"));
            }
            total += n as u64;
        }
    })();
    let secs = t.elapsed().as_secs_f64();
    if received.is_err() {
        let _ = client.shutdown(Shutdown::Both);
    }
    let sent = sender
        .join()
        .map_err(|_| "plain sender panicked".to_string())?;
    let cpu_secs = process_cpu() - cpu;
    let received = received?;
    sent?;
    if received != bytes {
        return Err(format!(
            "plain copy moved {received} bytes, expected {bytes}"
        ));
    }
    Ok(Copied { secs, cpu_secs })
}

/// This thread's CPU time so far (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// This process's user + system CPU time so far, in seconds.
fn process_cpu() -> f64 {
    // SAFETY: rusage is plain integers, for which all-zero bytes are a valid value;
    // getrusage writes into the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// The acceptor of the handshake runs: one connection at a time until `stop`, each
/// handled to its end; the number of connections that failed.
fn serve_handshakes(
    listener: TcpListener,
    conn: Conn,
    identity: Identity,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let mut failures = Vec::new();
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok((sock, _)) = accepted else { continue };
        let served = match conn {
            Conn::Secure(_) => respond(sock, &identity).map(drop),
            Conn::Plain => (|| {
                set_timeouts(&sock, false)?;
                let mut reader = BufReader::new(&sock);
                let mut line = Vec::new();
                (&mut reader)
                    .take(MAX_MARKER as u64 + 1)
                    .read_until(b'\n', &mut line)
                    .map_err(|e| format!("reading the line: {e}"))?;
                (&sock)
                    .write_all(b"OK\n")
                    .map_err(|e| format!("answering: {e}"))
            })(),
        };
        if let Err(e) = served {
            failures.push(e);
        }
    }
    match failures.first() {
        None => Ok(()),
        Some(e) => Err(format!("{} connections failed, first: {e}", failures.len())),
    }
}

/// Connections set up one after another, up to `sizes.handshakes` or for
/// `sizes.handshake_time`, whichever ends first.
fn handshakes(conn: Conn, sizes: &Sizes) -> Result<HandshakeRun, String> {
    handshakes_bounded(conn, sizes.handshakes, sizes.handshake_time)
}

fn handshakes_bounded(conn: Conn, count: usize, limit: Duration) -> Result<HandshakeRun, String> {
    // A listener per run: each connection leaves a TIME_WAIT entry for 60 s, and the
    // entries of one listening port share the ephemeral port range.
    let (listener, addr) = listen()?;
    let server_id = Identity::generate().map_err(|e| format!("identity: {e}"))?;
    let client_id = Identity::generate().map_err(|e| format!("identity: {e}"))?;
    let remote = match conn {
        Conn::Secure(Pattern::IK) => Some(server_id.public()),
        _ => None,
    };
    // A second handle on the listening socket, to wake the acceptor when the run ends.
    let waker = listener.try_clone().map_err(|e| format!("listener: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        spawn("t7-handshakes", move || {
            serve_handshakes(listener, conn, server_id, stop)
        })?
    };
    let cpu = process_cpu();
    let t = Instant::now();
    let mut done = 0;
    let dialed = (|| -> Result<(), String> {
        while done < count && t.elapsed() < limit {
            let sock = TcpStream::connect_timeout(&addr, STEP_LIMIT)
                .map_err(|e| format!("connect: {e}"))?;
            set_timeouts(&sock, false)?;
            match conn {
                Conn::Secure(_) => {
                    let mut s = dial(sock, &client_id, remote, Cipher::preferred())?;
                    // The acceptor closes once its side is done: wait for that.
                    if !s
                        .reader
                        .fill_buf()
                        .map_err(|e| format!("after the handshake: {e}"))?
                        .is_empty()
                    {
                        return Err("bytes after the handshake".into());
                    }
                }
                Conn::Plain => {
                    (&sock)
                        .write_all(b"P2P/1 PING\n")
                        .map_err(|e| format!("send: {e}"))?;
                    let mut answer = Vec::new();
                    (&sock)
                        .take(16)
                        .read_to_end(&mut answer)
                        .map_err(|e| format!("receive: {e}"))?;
                    if answer != b"OK\n" {
                        return Err(format!("answer {answer:?}"));
                    }
                }
            }
            done += 1;
        }
        Ok(())
    })();
    let secs = t.elapsed().as_secs_f64();
    let cpu_secs = process_cpu() - cpu;
    stop.store(true, Ordering::SeqCst);
    // Wake the acceptor out of accept(); it sees `stop` and ends. shutdown(2) makes a
    // blocked accept() fail on Linux; a connection is the portable fallback.
    // SAFETY: shutdown on a socket this function owns.
    unsafe {
        libc::shutdown(waker.as_raw_fd(), libc::SHUT_RDWR);
    }
    let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(200));
    let served = server
        .join()
        .map_err(|_| "handshake acceptor panicked".to_string())?;
    dialed?;
    served?;
    if done == 0 {
        return Err("no connection completed".into());
    }
    Ok(HandshakeRun {
        count: done,
        secs,
        cpu_secs,
    })
}

/// `n` timed round trips of [`PING`] bytes over a secured link (after [`WARMUP`]
/// untimed ones), each in µs.
fn secure_ping_pong(n: usize) -> Result<Vec<f64>, String> {
    let (client, server) = secure_pair(Cipher::preferred(), true)?;
    let echo = spawn("t7-echo", move || {
        let SecureStream {
            mut reader,
            mut writer,
            ..
        } = server;
        let mut buf = [0u8; PING];
        while reader.read_exact(&mut buf).is_ok() {
            if writer.send(&buf).is_err() {
                return;
            }
        }
    })?;
    let SecureStream {
        mut reader,
        mut writer,
        ..
    } = client;
    let result = (|| {
        let msg = [b'p'; PING];
        let mut back = [0u8; PING];
        let mut out = Vec::with_capacity(n);
        for i in 0..WARMUP + n {
            let t = Instant::now();
            writer.send(&msg).map_err(|e| format!("send: {e}"))?;
            reader
                .read_exact(&mut back)
                .map_err(|e| format!("receive: {e}"))?;
            if i >= WARMUP {
                out.push(t.elapsed().as_secs_f64() * 1e6);
            }
            if back != msg {
                return Err("the echo differs from the message".to_string());
            }
        }
        Ok(out)
    })();
    // The echo thread sees the end of the stream and ends.
    let _ = writer.socket().shutdown(Shutdown::Both);
    drop((reader, writer));
    let _ = echo.join();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Arc<Vec<u8>> {
        Arc::new(scratch::noise_bytes(SOURCE_LEN, 7))
    }

    #[test]
    fn records_round_trip_with_both_ciphers() {
        let src = source();
        for cipher in [Cipher::AesGcm, Cipher::ChaChaPoly] {
            // 3 MiB: more records than the source holds, so it wraps around.
            let run = aead_speed(cipher, 3 * scratch::MIB, &src).unwrap();
            assert_eq!(run.bytes % MAX_RECORD_PLAINTEXT as u64, 0);
            assert!(run.bytes >= 3 * scratch::MIB);
            // Half the records are opened in the frame, half from an aligned copy.
            assert_eq!(run.framed_bytes + run.aligned_bytes, run.bytes);
            assert!(run.framed_bytes.abs_diff(run.aligned_bytes) <= MAX_RECORD_PLAINTEXT as u64);
            assert!(run.seal > 0.0 && run.framed > 0.0 && run.aligned > 0.0);
            assert!(run.seal_open().is_finite() && run.seal_open() > 0.0);
        }
        assert!(blake3_speed(scratch::MIB, &src) > 0.0);
    }

    #[test]
    fn cyclic_check_detects_a_changed_byte() {
        let src: Vec<u8> = (0..10u8).collect();
        let stream: Vec<u8> = (0..25u8).map(|i| i % 10).collect();
        assert!(matches_cyclic(&src, 0, &stream));
        assert!(matches_cyclic(&src, 7, &stream[7..]));
        let mut bad = stream.clone();
        bad[13] ^= 1;
        assert!(!matches_cyclic(&src, 0, &bad));
    }

    #[test]
    fn copies_deliver_every_byte_in_order() {
        let src = source();
        // Not a whole number of writes, nor of records.
        let bytes = 9 * scratch::MIB + 12_345;
        for cipher in [Cipher::AesGcm, Cipher::ChaChaPoly] {
            let c = secure_copy(cipher, bytes, &src, true).unwrap();
            assert!(c.secs > 0.0 && c.cpu_secs > 0.0);
        }
        let c = plain_copy(bytes, &src, true).unwrap();
        assert!(c.secs > 0.0 && c.cpu_ms_per_gib(bytes) > 0.0);
    }

    #[test]
    fn handshake_runs_stop_at_their_count() {
        for conn in [
            Conn::Secure(Pattern::IK),
            Conn::Secure(Pattern::XX),
            Conn::Plain,
        ] {
            let run = handshakes_bounded(conn, 5, STEP_LIMIT).unwrap();
            assert_eq!(run.count, 5, "{conn:?}");
            assert!(run.secs > 0.0 && run.cpu_secs >= 0.0);
        }
    }

    #[test]
    fn encrypted_ping_pong_times_each_round_trip() {
        let samples = secure_ping_pong(20).unwrap();
        assert_eq!(samples.len(), 20);
        assert!(samples.iter().all(|us| *us > 0.0));
    }
}
