//! Moving file bytes between peers: sending a range of a shared file to a socket, and
//! receiving a download into a partial file that is verified and then moved into place.
//!
//! This module owns the on-disk life of a download (`.NAME.p2pchat-part` and its origin
//! record `.NAME.p2pchat-orig`, the rules for resuming it, the free space it may take,
//! the pace its sender must keep, hash check, final placement, removal when stale). It
//! must never overwrite an existing file, never leave unverified bytes under the final
//! name, never write outside the destination directory, and never touch a partial file
//! another download holds. It knows nothing of the request/answer protocol around the
//! bytes.

use crate::error::{is_timeout, Error, Result};
use crate::limits::MAX_FILENAME_LEN;
use crate::protocol::{check_filename, truncate};
use crate::secure::{SecureWriter, MAX_RECORD_PLAINTEXT};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Buffer for copying file bytes (sending without sendfile, receiving, re-reading a
/// partial file to resume its hash).
const COPY_BUF: usize = 256 * 1024;

/// Ask the kernel to start writing `len` bytes at `offset` of `file` to disk, without
/// waiting (Linux `sync_file_range`); elsewhere a no-op.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain syscall on a descriptor `file` owns; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Suffix of a partial download's name (after a leading '.', so it is hidden and never
/// shared).
const PART_SUFFIX: &str = ".p2pchat-part";
/// Suffix of the origin record kept next to a partial download (see [`Origin`]). As long
/// as [`PART_SUFFIX`], so the record's name fits wherever the partial's does.
const ORIGIN_SUFFIX: &str = ".p2pchat-orig";
/// Suffix of an origin record being written, before it is renamed over the real one.
const ORIGIN_TMP_SUFFIX: &str = ".p2pchat-otmp";
/// Largest origin record read back; a bigger file there is not ours.
const MAX_ORIGIN_RECORD: u64 = 1024;
/// First line of an origin record (its format version).
const ORIGIN_MAGIC: &str = "p2pchat-partial 1";

/// The end of the byte range `offset..offset + len`, refused when it overflows.
fn range_end(offset: u64, len: u64) -> io::Result<u64> {
    offset
        .checked_add(len)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset + len overflows"))
}

/// Sends `len` bytes of `file` starting at `offset` to `sock`, and returns the number of
/// bytes sent (always `len` on success).
///
/// On Linux this is zero-copy (`sendfile`), falling back to a read/write copy where the
/// kernel cannot do it (`EINVAL`/`ENOSYS`); elsewhere it always copies. The socket's
/// write timeout is honored: a timeout surfaces as an error of kind `WouldBlock` or
/// `TimedOut` (see [`crate::error::is_timeout`]). If the file ends before `offset + len`
/// (it shrank), the error is of kind `UnexpectedEof`, since the receiver was promised
/// `len` bytes.
///
/// A write timeout restarts whenever the receiver takes a few bytes, so a receiver
/// reading a trickle holds the sender for as long as it likes; serving peers use
/// [`send_file_min_rate`] instead.
pub fn send_file(sock: &TcpStream, file: &File, offset: u64, len: u64) -> io::Result<u64> {
    let end = range_end(offset, len)?;
    let mut pos = offset;
    #[cfg(target_os = "linux")]
    {
        if sendfile_range(sock, file, &mut pos, end)? {
            return Ok(len);
        }
    }
    copy_range(sock, file, pos, end)?;
    Ok(len)
}

/// The minimum-rate rule of a transfer, the same for both ends: at least
/// `bytes_per_sec` × `window` bytes in every `window`, and never `stall` without a byte.
/// A sender judges its receiver by it ([`send_file_min_rate`]: every quarter window,
/// from the first full window on); a [`Receiver`] judges its sender
/// ([`Receiver::set_pace`]: each window on its own). `bytes_per_sec` 0: no rate rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    /// Least average rate, in bytes per second, over `window`.
    pub bytes_per_sec: u64,
    /// The window the rate is judged over.
    pub window: Duration,
    /// Longest time without the receiver taking a single byte.
    pub stall: Duration,
}

impl MinRate {
    /// How often the rule must be looked at: the read timeout a receiver sets on the
    /// socket it reads (between 10 ms and 1 s).
    pub fn tick(&self) -> Duration {
        let mut t = self.stall;
        if self.bytes_per_sec > 0 {
            t = t.min(self.window / 4);
        }
        t.clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// Like [`send_file`], but a receiver breaking `rule` is given up with an error of kind
/// `TimedOut` (which names the rule). The socket is switched to non-blocking for the
/// call and back to blocking after, so the rule is judged on a clock, not on how long
/// one write happens to block; bytes count when the kernel takes them.
///
/// Where `sendfile` is unavailable (not Linux, or `EINVAL`/`ENOSYS`), the copy fallback
/// honors only the stall timeout, as a per-write timeout.
pub fn send_file_min_rate(
    sock: &TcpStream,
    file: &File,
    offset: u64,
    len: u64,
    rule: MinRate,
) -> io::Result<u64> {
    let end = range_end(offset, len)?;
    #[allow(unused_mut)]
    let mut pos = offset;
    #[cfg(target_os = "linux")]
    {
        sock.set_nonblocking(true)?;
        let paced = sendfile_paced(sock, file, &mut pos, end, rule);
        sock.set_nonblocking(false)?;
        if paced? {
            return Ok(len);
        }
    }
    sock.set_write_timeout(Some(rule.stall.max(Duration::from_millis(1))))?;
    copy_range(sock, file, pos, end)?;
    Ok(len)
}

/// Most file bytes read, sealed and written at once by [`send_file_sealed`]: four whole
/// records, so each write hands the kernel about 256 KiB.
const SEALED_CHUNK: usize = 4 * MAX_RECORD_PLAINTEXT;

/// Like [`send_file_min_rate`], over a secured link: `len` bytes of `file` from
/// `offset`, read in chunks of up to four records, sealed, and written under the same
/// rule (bytes count as the kernel takes the records). The socket is non-blocking for
/// the call and blocking again after it. A receiver breaking the rule is an error of
/// kind `TimedOut`; a file that shrank, `UnexpectedEof`. Either leaves the link broken.
pub fn send_file_sealed(
    writer: &mut SecureWriter,
    file: &File,
    offset: u64,
    len: u64,
    rule: MinRate,
) -> io::Result<u64> {
    send_file_sealed_with(writer, file, offset, len, rule, &mut |_| true)
}

/// [`send_file_sealed`], telling `progress` the offset reached after each chunk (up to
/// four records); `progress` returning `false` stops the sending with an error of kind
/// `Interrupted` (a cancel). For a file push, whose sender shows its progress.
pub fn send_file_sealed_with(
    writer: &mut SecureWriter,
    file: &File,
    offset: u64,
    len: u64,
    rule: MinRate,
    progress: &mut dyn FnMut(u64) -> bool,
) -> io::Result<u64> {
    let end = range_end(offset, len)?;
    writer.socket().set_nonblocking(true)?;
    let sent = sealed_paced(writer, file, offset, end, rule, progress);
    writer.socket().set_nonblocking(false)?;
    sent.map(|()| len)
}

fn sealed_paced(
    writer: &mut SecureWriter,
    file: &File,
    mut pos: u64,
    end: u64,
    rule: MinRate,
    progress: &mut dyn FnMut(u64) -> bool,
) -> io::Result<()> {
    let start = Instant::now();
    let mut pacer = Pacer {
        floor: RateFloor::new(rule, start, 0),
        last_progress: start,
        stall: rule.stall,
        taken: 0,
    };
    let mut buf = vec![0u8; (end - pos).min(SEALED_CHUNK as u64) as usize];
    while pos < end {
        let want = (end - pos).min(buf.len() as u64) as usize;
        let n = match file.read_at(&mut buf[..want], pos) {
            Ok(0) => return Err(file_ended()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.send_with(&buf[..n], |sock, bytes| pacer.write_all(sock, bytes))?;
        pos += n as u64;
        if !progress(pos) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "sending cancelled",
            ));
        }
    }
    Ok(())
}

/// Writes to a non-blocking socket under a [`MinRate`]: what the kernel takes counts,
/// and while it takes nothing the writer waits in `poll` until it can, the next rate
/// check, or the stall deadline.
struct Pacer {
    floor: RateFloor,
    last_progress: Instant,
    stall: Duration,
    /// Bytes the kernel has taken so far.
    taken: u64,
}

impl Pacer {
    fn write_all(&mut self, sock: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
        let mut out = sock;
        while !bytes.is_empty() {
            match out.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    bytes = &bytes[n..];
                    self.taken += n as u64;
                    let now = Instant::now();
                    self.last_progress = now;
                    self.floor.check(now, self.taken)?;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            wait_paced(
                sock,
                &mut self.floor,
                self.taken,
                self.last_progress,
                self.stall,
            )?;
        }
        Ok(())
    }
}

/// The socket took nothing: check the rate and the stall deadline, then `poll` until
/// it can take more, the next rate check, or that deadline.
fn wait_paced(
    sock: &TcpStream,
    floor: &mut RateFloor,
    pos: u64,
    last_progress: Instant,
    stall: Duration,
) -> io::Result<()> {
    let now = Instant::now();
    floor.check(now, pos)?;
    let stall_at = last_progress + stall;
    if now >= stall_at {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the receiver took no byte for {stall:?}"),
        ));
    }
    let wake = floor.next_check().min(stall_at);
    let wait_ms = wake
        .saturating_duration_since(now)
        .as_millis()
        .clamp(1, i32::MAX as u128) as i32;
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    if unsafe { libc::poll(&mut pfd, 1, wait_ms) } < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    // Errors and hang-ups show up on the next write.
    Ok(())
}

/// How many checks of [`MinRate`] one window holds.
const RATE_TICKS: usize = 4;

/// The clock side of [`MinRate`], pure: fed the position now and then, it says when the
/// receiver has fallen under the rate. Keeps the position at each of the last
/// [`RATE_TICKS`] + 1 ticks, so it always compares against one whole window ago.
struct RateFloor {
    need: u64,
    tick: Duration,
    next: Instant,
    marks: VecDeque<u64>,
}

impl RateFloor {
    fn new(rule: MinRate, now: Instant, pos: u64) -> RateFloor {
        let need = u64::try_from(
            u128::from(rule.bytes_per_sec).saturating_mul(rule.window.as_millis()) / 1000,
        )
        .unwrap_or(u64::MAX);
        let tick = (rule.window / RATE_TICKS as u32).max(Duration::from_millis(1));
        RateFloor {
            need,
            tick,
            next: now + tick,
            marks: VecDeque::from([pos]),
        }
    }

    /// When the next check falls due.
    fn next_check(&self) -> Instant {
        self.next
    }

    /// Record `pos` at every tick passed by `now`; an error once the bytes taken over
    /// the last whole window are under the rule.
    fn check(&mut self, now: Instant, pos: u64) -> io::Result<()> {
        while now >= self.next {
            self.marks.push_back(pos);
            if self.marks.len() > RATE_TICKS + 1 {
                self.marks.pop_front();
            }
            self.next += self.tick;
            let window_ago = self.marks[0];
            if self.marks.len() == RATE_TICKS + 1 && pos.saturating_sub(window_ago) < self.need {
                let window = self.tick * RATE_TICKS as u32;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the receiver took {} bytes in {window:?}, under the minimum of {}",
                        pos.saturating_sub(window_ago),
                        self.need
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod min_rate_tests {
    use super::*;

    const RULE: MinRate = MinRate {
        bytes_per_sec: 1000,
        window: Duration::from_secs(4),
        stall: Duration::from_secs(60),
    };

    #[test]
    fn a_fast_start_does_not_excuse_a_slow_window() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut f = RateFloor::new(RULE, t0, 0);
        // 1 MB at once, then nothing: the first whole window passes, the next fails.
        f.check(t0 + s / 2, 1_000_000).unwrap();
        f.check(t0 + 4 * s, 1_000_000).unwrap();
        assert_eq!(
            f.check(t0 + 5 * s, 1_000_000).unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
    }

    #[test]
    fn a_steady_rate_at_the_floor_passes_and_under_it_fails() {
        let t0 = Instant::now();
        let mut ok = RateFloor::new(RULE, t0, 0);
        let mut slow = RateFloor::new(RULE, t0, 0);
        let mut failed_at = None;
        for sec in 1..=20u64 {
            let now = t0 + Duration::from_secs(sec);
            ok.check(now, sec * 1000).unwrap();
            if failed_at.is_none() && slow.check(now, sec * 900).is_err() {
                failed_at = Some(sec);
            }
        }
        assert_eq!(failed_at, Some(4));
    }

    #[test]
    fn a_slow_reader_is_given_up_and_the_socket_is_blocking_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let len = 64 * 1024 * 1024;
        File::create(&path).unwrap().set_len(len).unwrap();
        let file = File::open(&path).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let rx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (tx, _) = listener.accept().unwrap();
        let rule = MinRate {
            bytes_per_sec: 64 * 1024 * 1024,
            window: Duration::from_millis(400),
            stall: Duration::from_secs(60),
        };
        // The receiver never reads: after the buffers fill, nothing moves.
        let started = Instant::now();
        let e = send_file_min_rate(&tx, &file, 0, len, rule).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let mut probe = [0u8; 1];
        tx.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        // Blocking again: a read times out instead of failing at once with EAGAIN
        // (both map to WouldBlock, so check the flag itself).
        let _ = (&tx).read(&mut probe);
        // SAFETY: F_GETFL on a descriptor the test owns.
        let flags = unsafe { libc::fcntl(tx.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        drop(rx);
    }

    #[test]
    fn a_reader_keeping_up_gets_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &content).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut rx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (tx, _) = listener.accept().unwrap();
        let len = content.len() as u64;
        let sender = std::thread::spawn(move || {
            let n = send_file_min_rate(&tx, &File::open(&path).unwrap(), 7, len - 7, RULE);
            drop(tx);
            n.unwrap()
        });
        let mut got = Vec::new();
        rx.read_to_end(&mut got).unwrap();
        assert_eq!(sender.join().unwrap(), len - 7);
        assert!(got == content[7..]);
    }
}

/// [`send_file_min_rate`]'s loop on a non-blocking socket: `sendfile` what the socket
/// takes, then `poll` until it takes more, the next rate check, or the stall deadline.
/// Returns `false` if the kernel cannot sendfile between these descriptors.
#[cfg(target_os = "linux")]
fn sendfile_paced(
    sock: &TcpStream,
    file: &File,
    pos: &mut u64,
    end: u64,
    rule: MinRate,
) -> io::Result<bool> {
    const MAX_CHUNK: u64 = 0x7fff_f000;
    let start = Instant::now();
    let mut floor = RateFloor::new(rule, start, *pos);
    let mut last_progress = start;
    while *pos < end {
        let mut off = libc::off_t::try_from(*pos)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        let count = (end - *pos).min(MAX_CHUNK) as usize;
        // SAFETY: both descriptors are borrowed and so stay open for the call; `off` is a
        // valid, exclusive pointer. sendfile does not touch the file's own offset.
        let n = unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut off, count) };
        if n > 0 {
            let now = Instant::now();
            *pos += n as u64;
            last_progress = now;
            floor.check(now, *pos)?;
            continue;
        }
        if n == 0 {
            return Err(file_ended());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EINVAL | libc::ENOSYS) => return Ok(false),
            Some(libc::EAGAIN) => {}
            _ => return Err(err),
        }
        wait_paced(sock, &mut floor, *pos, last_progress, rule.stall)?;
    }
    Ok(true)
}

/// Sends `[*pos, end)` with `sendfile`, advancing `*pos`. Returns `false` if the kernel
/// cannot sendfile between these two descriptors (the caller copies the rest).
#[cfg(target_os = "linux")]
fn sendfile_range(sock: &TcpStream, file: &File, pos: &mut u64, end: u64) -> io::Result<bool> {
    // Linux moves at most this much per call, whatever is asked.
    const MAX_CHUNK: u64 = 0x7fff_f000;
    while *pos < end {
        let mut off = libc::off_t::try_from(*pos)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        let count = (end - *pos).min(MAX_CHUNK) as usize;
        // SAFETY: both descriptors are borrowed and so stay open for the call; `off` is a
        // valid, exclusive pointer. sendfile does not touch the file's own offset.
        let n = unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut off, count) };
        if n > 0 {
            *pos += n as u64;
            continue;
        }
        if n == 0 {
            return Err(file_ended());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EINVAL | libc::ENOSYS) => return Ok(false),
            Some(libc::EAGAIN) => wait_writable(sock, err)?,
            _ => return Err(err),
        }
    }
    Ok(true)
}

/// After `EAGAIN` from the socket: on a blocking socket that means its write timeout
/// expired, so `eagain` is returned as the error; on a non-blocking one, waits (up to the
/// write timeout, if any) until it can take more.
#[cfg(target_os = "linux")]
fn wait_writable(sock: &TcpStream, eagain: io::Error) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    // SAFETY: F_GETFL on a descriptor we borrow; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK == 0 {
        return Err(eagain);
    }
    let timeout_ms = match sock.write_timeout()? {
        Some(t) => i32::try_from(t.as_millis()).unwrap_or(i32::MAX).max(1),
        None => -1,
    };
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    match r {
        0 => Err(io::Error::new(io::ErrorKind::TimedOut, "send timed out")),
        r if r < 0 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            }
        }
        // Errors and hang-ups show up on the next sendfile.
        _ => Ok(()),
    }
}

/// Sends `[pos, end)` of `file` with plain reads and writes.
fn copy_range(sock: &TcpStream, file: &File, mut pos: u64, end: u64) -> io::Result<()> {
    let mut out = sock;
    let mut buf = vec![0u8; (end - pos).min(COPY_BUF as u64) as usize];
    while pos < end {
        let want = (end - pos).min(buf.len() as u64) as usize;
        let n = match file.read_at(&mut buf[..want], pos) {
            Ok(0) => return Err(file_ended()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        pos += n as u64;
    }
    Ok(())
}

fn file_ended() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file ended before the requested range was sent",
    )
}

/// Where a download of `name` into `dest_dir` lives while in progress:
/// `dest_dir/.NAME.p2pchat-part`.
///
/// A name too long for that to fit the file system's 255-byte limit is shortened and
/// given a hash of the full name, so different long names still get different paths.
pub fn partial_path(dest_dir: &Path, name: &str) -> PathBuf {
    let plain = format!(".{name}{PART_SUFFIX}");
    if plain.len() <= MAX_FILENAME_LEN {
        return dest_dir.join(plain);
    }
    let tag = blake3::hash(name.as_bytes()).to_hex();
    let tag = &tag[..16];
    // '.' + prefix + '~' + tag + suffix
    let room = MAX_FILENAME_LEN - 1 - 1 - tag.len() - PART_SUFFIX.len();
    dest_dir.join(format!(".{}~{tag}{PART_SUFFIX}", truncate(name, room)))
}

/// The file next to the partial file at `part_path` named like it with `suffix` in place
/// of [`PART_SUFFIX`] (suffixes of the same length, so it is hidden and fits too).
fn sibling(part_path: &Path, suffix: &str) -> PathBuf {
    let name = part_path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(PART_SUFFIX))
        .unwrap_or("");
    part_path.with_file_name(format!("{name}{suffix}"))
}

/// Where a partial download came from, recorded next to it in `.NAME.p2pchat-orig` when
/// its first byte is about to be written: the peer it was started from, and the size and
/// BLAKE3 hash that peer announced. The hash says which file the partial's bytes belong
/// to, so a later answer for a different file under the same name is recognised before
/// it can append to (or destroy) them.
///
/// A small sidecar file rather than an extended attribute: user xattrs are missing on
/// some file systems downloads land on (tmpfs before Linux 6.6, FAT, several network
/// file systems), and a sidecar is written atomically (temporary file, fsync, rename)
/// everywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Username of the peer the download was started from.
    pub peer: String,
    /// Size of the whole file, as that peer announced it.
    pub size: u64,
    /// BLAKE3 hash (lowercase hex) of the whole file, as that peer announced it.
    pub hash: String,
    /// Where bytes from other peers begin, if any have been appended (another peer that
    /// announced the same file resumed it): everything before is the origin's own.
    pub others_from: Option<u64>,
}

impl Origin {
    fn to_record(&self) -> String {
        let mut r = format!(
            "{ORIGIN_MAGIC}\npeer {}\nsize {}\nblake3 {}\n",
            self.peer, self.size, self.hash
        );
        if let Some(at) = self.others_from {
            r.push_str(&format!("others-from {at}\n"));
        }
        r
    }

    /// Parses a record; `None` for anything that is not exactly what `to_record` writes.
    fn from_record(text: &str) -> Option<Origin> {
        let mut lines = text.strip_suffix('\n')?.split('\n');
        if lines.next()? != ORIGIN_MAGIC {
            return None;
        }
        let peer = lines.next()?.strip_prefix("peer ")?;
        let size = lines.next()?.strip_prefix("size ")?.parse().ok()?;
        let hash = lines.next()?.strip_prefix("blake3 ")?;
        let others_from = match lines.next() {
            None => None,
            Some(l) => Some(l.strip_prefix("others-from ")?.parse().ok()?),
        };
        if lines.next().is_some()
            || peer.is_empty()
            || peer.chars().any(char::is_control)
            || blake3::Hash::from_hex(hash).is_err()
        {
            return None;
        }
        Some(Origin {
            peer: peer.to_string(),
            size,
            hash: hash.to_ascii_lowercase(),
            others_from,
        })
    }
}

/// Reads the origin record at `path`; `None` if there is none or it is not one of ours
/// (unreadable, too big, malformed, not a regular file).
fn read_origin(path: &Path) -> Option<Origin> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_ORIGIN_RECORD)
        .read_to_string(&mut text)
        .ok()?;
    let origin = Origin::from_record(&text);
    if origin.is_none() {
        log::warn!("ignoring malformed origin record {}", path.display());
    }
    origin
}

/// What to do with a partial download when a peer announces the file's size and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Append to the partial file (or start it, when it is empty).
    Continue,
    /// The partial's own origin now offers a different file under that name: its bytes
    /// belong to a file that no longer exists there, so start over from 0.
    Restart,
    /// Another peer offers a different file under that name: keep the partial (it is
    /// another file's progress) and refuse this download.
    Conflict,
}

/// The rule for resuming `offset` bytes recorded as coming from `origin` when `peer`
/// announces a file of `size` bytes with `hash`. Pure; see [`Resume`].
///
/// An empty partial has nothing to lose: always `Continue`. A partial with no origin
/// record (left by an older p2pchat, or whose record is unreadable) is resumed by
/// whoever offers the file, as before: the hash check at the end tells whether its
/// bytes belonged to it.
pub fn judge_resume(
    origin: Option<&Origin>,
    offset: u64,
    peer: &str,
    size: u64,
    hash: &str,
) -> Resume {
    match origin {
        _ if offset == 0 => Resume::Continue,
        None => Resume::Continue,
        Some(o) if o.size == size && o.hash.eq_ignore_ascii_case(hash) => Resume::Continue,
        Some(o) if o.peer == peer => Resume::Restart,
        Some(_) => Resume::Conflict,
    }
}

/// Free bytes for an unprivileged user in the file system holding `dir` (`statvfs`).
pub fn free_space(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: `c` is a valid NUL-terminated path; `st` is written by the call only.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Bytes promised to downloads running in this process, per file system (`st_dev`), so
/// that two downloads started at once cannot each count the same free space.
static RESERVED: Mutex<Option<HashMap<u64, u64>>> = Mutex::new(None);

/// Space promised to one running download; given back as its bytes land on disk (they
/// then show in the free space itself) and in full on drop.
#[derive(Debug)]
pub struct SpaceReservation {
    dev: u64,
    held: u64,
}

impl SpaceReservation {
    /// Reserves `needed` bytes in the file system of `dir`, keeping `margin` bytes free
    /// beyond every running download's reservation.
    ///
    /// Errors with [`Error::NoSpace`] (the `file` and `peer` are for its message) when
    /// that does not fit, or an I/O error if the free space cannot be read.
    pub fn reserve(
        dir: &Path,
        needed: u64,
        margin: u64,
        file: &str,
        peer: &str,
    ) -> Result<SpaceReservation> {
        let dev = fs::metadata(dir)?.dev();
        let free = free_space(dir)?;
        let mut all = RESERVED.lock();
        let reserved = all.as_ref().and_then(|m| m.get(&dev)).copied().unwrap_or(0);
        let available = free.saturating_sub(reserved).saturating_sub(margin);
        if needed > available {
            return Err(Error::NoSpace {
                peer: peer.to_string(),
                file: truncate(file, MAX_FILENAME_LEN).to_string(),
                needed,
                free,
                margin,
                reserved,
            });
        }
        *all.get_or_insert_with(HashMap::new).entry(dev).or_insert(0) += needed;
        Ok(SpaceReservation { dev, held: needed })
    }

    /// Only `remaining` bytes are still to be written: give the rest back.
    pub fn shrink_to(&mut self, remaining: u64) {
        if remaining >= self.held {
            return;
        }
        let mut all = RESERVED.lock();
        if let Some(r) = all.as_mut().and_then(|m| m.get_mut(&self.dev)) {
            *r = r.saturating_sub(self.held - remaining);
        }
        self.held = remaining;
    }
}

impl Drop for SpaceReservation {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

/// Removes partial downloads (and their origin records) in `dir` that nobody touched for
/// longer than `age`, and returns how many partial files went.
///
/// A partial file in use by a running download (its `flock` is held, in this process or
/// another) is never removed; neither is anything that is not a regular file named like
/// a partial download or an origin record. Errors on single entries are logged and
/// skipped.
pub fn remove_stale_partials(dir: &Path, age: Duration) -> io::Result<usize> {
    let now = SystemTime::now();
    let stale = |meta: &fs::Metadata| {
        meta.modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|d| d > age)
    };
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() || !stale(&meta) {
            continue;
        }
        if name.ends_with(PART_SUFFIX) {
            match remove_unless_locked(&path, &stale) {
                Ok(true) => {
                    removed += 1;
                    log::info!("removed stale partial download {}", path.display());
                    let _ = fs::remove_file(sibling(&path, ORIGIN_SUFFIX));
                    let _ = fs::remove_file(sibling(&path, ORIGIN_TMP_SUFFIX));
                }
                Ok(false) => {}
                Err(e) => log::warn!("cannot remove stale {}: {e}", path.display()),
            }
        } else if let Some(stem) = name
            .strip_suffix(ORIGIN_SUFFIX)
            .or_else(|| name.strip_suffix(ORIGIN_TMP_SUFFIX))
        {
            // A record whose partial is gone (or stale itself and handled above).
            let part = dir.join(format!("{stem}{PART_SUFFIX}"));
            if fs::symlink_metadata(&part).is_err() {
                let _ = fs::remove_file(&path);
            }
        }
    }
    Ok(removed)
}

/// Removes the partial file at `path` if no download holds its lock and it is still
/// stale once locked; whether it was removed.
fn remove_unless_locked(path: &Path, stale: &dyn Fn(&fs::Metadata) -> bool) -> io::Result<bool> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    // SAFETY: flock on the descriptor `file` owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Ok(false); // a download is using it
    }
    // It may have been written between the scan and the lock.
    if !stale(&file.metadata()?) {
        return Ok(false);
    }
    // Unlinked while locked: a download starting now either waited for nothing (it
    // fails as busy) or creates a fresh file.
    fs::remove_file(path)?;
    Ok(true)
}

/// Removes the partial download at `part_path` and its origin records, unless a running
/// download holds it; whether it was removed (also `true` when there was none).
pub fn remove_partial(part_path: &Path) -> io::Result<bool> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(part_path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let _ = fs::remove_file(sibling(part_path, ORIGIN_SUFFIX));
            return Ok(true);
        }
        Err(e) => return Err(e),
    };
    // SAFETY: flock on the descriptor `file` owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Ok(false);
    }
    fs::remove_file(part_path)?;
    let _ = fs::remove_file(sibling(part_path, ORIGIN_SUFFIX));
    let _ = fs::remove_file(sibling(part_path, ORIGIN_TMP_SUFFIX));
    Ok(true)
}

/// Receives one file into a destination directory, resuming a previous partial
/// download when there is one.
///
/// Usage: `let r = Receiver::prepare(dest_dir, name)?;` → request the file from
/// [`Receiver::offset`] → learn its size and hash → decide with [`Receiver::judge`]
/// → [`Receiver::begin`] → [`Receiver::receive`].
#[derive(Debug)]
pub struct Receiver {
    name: String,
    dest_dir: PathBuf,
    final_path: PathBuf,
    part_path: PathBuf,
    part: File,
    offset: u64,
    /// What the partial's origin record says (`None`: no record, or unreadable).
    origin: Option<Origin>,
    /// The peer sending this time (set by `begin`).
    sender: Option<String>,
    pace: Option<MinRate>,
}

impl Receiver {
    /// Prepares to download `name` into `dest_dir`: opens (or creates) the partial file,
    /// whose current length is the offset to resume from.
    ///
    /// Errors: [`Error::InvalidArgument`] if `name` is not a valid shared file name
    /// (path separators, `..`, control characters, comma, leading '.'...);
    /// [`Error::AlreadyExists`] if `dest_dir/name` exists (p2pchat never overwrites).
    pub fn prepare(dest_dir: &Path, name: &str) -> Result<Receiver> {
        if check_filename(name).is_err() || name.starts_with('.') {
            return Err(Error::InvalidArgument(format!(
                "{:?} is not a valid name for a downloaded file",
                truncate(name, MAX_FILENAME_LEN)
            )));
        }
        Self::open(dest_dir, name)
    }

    /// Like [`prepare`](Self::prepare), for a download saved as `dest`: an existing
    /// directory (the file then keeps its `name` there) or the path of a new file in an
    /// existing directory. The partial file lives next to the destination, under the
    /// same rules (no overwrite, resume, verify before the final name appears).
    ///
    /// Errors: as `prepare`, and [`Error::InvalidArgument`] when the final name is not
    /// a valid file name; [`Error::NotADownloadDirectory`] when the directory is missing.
    pub fn prepare_at(dest: &Path, name: &str) -> Result<Receiver> {
        if dest.is_dir() {
            return Self::prepare(dest, name);
        }
        // "dir/" names a directory, even a missing one.
        if dest.as_os_str().as_encoded_bytes().ends_with(b"/") {
            return Err(Error::NotADownloadDirectory(dest.to_path_buf()));
        }
        let invalid = || {
            Error::InvalidArgument(format!(
                "{} is not a valid destination for a download (a directory, or a file \
                 name in an existing directory)",
                dest.display()
            ))
        };
        let file_name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(invalid)?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if check_filename(file_name).is_err() || file_name.starts_with('.') {
            return Err(invalid());
        }
        if check_filename(name).is_err() || name.starts_with('.') {
            return Err(Error::InvalidArgument(format!(
                "{:?} is not a valid name for a downloaded file",
                truncate(name, MAX_FILENAME_LEN)
            )));
        }
        if !dir.is_dir() {
            return Err(Error::NotADownloadDirectory(dir.to_path_buf()));
        }
        Self::open(dir, file_name)
    }

    fn open(dest_dir: &Path, name: &str) -> Result<Receiver> {
        let final_path = dest_dir.join(name);
        ensure_absent(&final_path)?;
        let part_path = partial_path(dest_dir, name);
        // O_NOFOLLOW: a symlink planted under the partial name must not redirect the
        // write elsewhere. O_NONBLOCK: a FIFO planted there must not hang the open.
        let part = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&part_path)?;
        // One download per name at a time: a second one appending to the same partial
        // file would interleave bytes. The lock lives as long as `part` is open.
        // SAFETY: flock on the descriptor `part` owns.
        if unsafe { libc::flock(part.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::Busy(format!(
                "a download of {:?} into {}",
                truncate(name, MAX_FILENAME_LEN),
                dest_dir.display()
            )));
        }
        let meta = part.metadata()?;
        if !meta.is_file() {
            return Err(Error::Io(io::Error::other(format!(
                "{} is not a regular file",
                part_path.display()
            ))));
        }
        // Read only once the lock is ours: nobody else writes it meanwhile.
        let origin = read_origin(&sibling(&part_path, ORIGIN_SUFFIX));
        Ok(Receiver {
            name: name.to_string(),
            dest_dir: dest_dir.to_path_buf(),
            final_path,
            part_path,
            part,
            offset: meta.len(),
            origin,
            sender: None,
            pace: None,
        })
    }

    /// Remove the partial file (and its origin record) if nothing was ever written to it
    /// (the other side refused or was unreachable, or the download was refused before
    /// it started), so a failed attempt leaves no trace; one with bytes stays for a
    /// resume.
    pub fn discard_if_empty(&self) {
        if self.part.metadata().is_ok_and(|m| m.len() == 0) {
            let _ = fs::remove_file(&self.part_path);
            let _ = fs::remove_file(sibling(&self.part_path, ORIGIN_SUFFIX));
        }
    }

    /// Where the partial file's bytes came from, as recorded next to it; `None` when
    /// there is no record (a new download, or a partial left by an older p2pchat).
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// The path of the partial file.
    pub fn partial_path(&self) -> &Path {
        &self.part_path
    }

    /// What to do when `peer` announces the file as `size` bytes with `hash`: see
    /// [`judge_resume`].
    pub fn judge(&self, peer: &str, size: u64, hash: &str) -> Resume {
        judge_resume(self.origin.as_ref(), self.offset, peer, size, hash)
    }

    /// Judge the sender's pace while receiving (see [`MinRate`]): a read timeout from the
    /// source then only means "check the pace now", so the caller sets the socket's read
    /// timeout to [`MinRate::tick`]. Without a pace, any read timeout ends the download.
    pub fn set_pace(&mut self, pace: MinRate) {
        self.pace = Some(pace);
    }

    /// `peer` is about to send the file it announced as `size` bytes with `hash`: record
    /// it as the partial's origin unless the partial already belongs to that same file
    /// (then its first origin stays, and where another peer's bytes begin is noted).
    /// Call after [`judge`](Self::judge) said [`Resume::Continue`] (or after
    /// [`restart`](Self::restart)) and before [`receive`](Self::receive).
    pub fn begin(&mut self, peer: &str, size: u64, hash: &str) -> Result<()> {
        self.sender = Some(peer.to_string());
        let origin = match self.origin.clone() {
            Some(o) if self.offset > 0 && o.size == size && o.hash.eq_ignore_ascii_case(hash) => {
                if o.peer == peer || o.others_from.is_some() {
                    return Ok(());
                }
                Origin {
                    others_from: Some(self.offset),
                    ..o
                }
            }
            _ => Origin {
                peer: peer.to_string(),
                size,
                hash: hash.to_ascii_lowercase(),
                others_from: None,
            },
        };
        self.write_origin(origin)
    }

    /// Replaces the origin record, atomically: temporary file, fsync, rename.
    fn write_origin(&mut self, origin: Origin) -> Result<()> {
        let tmp = sibling(&self.part_path, ORIGIN_TMP_SUFFIX);
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(Error::Io(e)),
            _ => {}
        }
        // create_new + O_NOFOLLOW: whatever is planted at the temporary name is neither
        // followed nor reused.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(origin.to_record().as_bytes())?;
        f.sync_data()?;
        drop(f);
        fs::rename(&tmp, sibling(&self.part_path, ORIGIN_SUFFIX))?;
        self.origin = Some(origin);
        Ok(())
    }

    /// How many bytes are already here: the offset to request the file from.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Where the file will be once received and verified.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Discards the partial file's content and starts again from 0 (when the partial's
    /// own origin now offers a different file: see [`Resume::Restart`]). The origin
    /// record is replaced by the next [`begin`](Self::begin).
    pub fn restart(&mut self) -> Result<()> {
        self.part.set_len(0)?;
        self.offset = 0;
        Ok(())
    }

    /// Receives the rest of the file (bytes `offset..size`) from `src`, verifies the
    /// whole file against `expected_hash` (BLAKE3, hex) and moves it into place.
    /// Returns the final path.
    ///
    /// `progress` gets the total received so far (offset included) after each chunk;
    /// returning `false` cancels.
    ///
    /// Errors, with what happens to the partial file:
    /// - [`Error::Protocol`] if the offset is past `size` or `expected_hash` is not a
    ///   hash (kept; [`Receiver::restart`] before asking again);
    /// - [`Error::Cancelled`], [`Error::Closed`] (early end of data), [`Error::Timeout`]
    ///   (no byte for the stall time, or under the [`MinRate`]'s minimum rate) (kept, to
    ///   resume later, unless it is still empty);
    /// - [`Error::HashMismatch`] (deleted with its origin record: its content is wrong
    ///   somewhere; but when this session resumed another peer's partial, only this
    ///   session's bytes are cut off);
    /// - [`Error::AlreadyExists`] if the final name appeared meanwhile (kept).
    pub fn receive(
        self,
        src: &mut impl Read,
        size: u64,
        expected_hash: &str,
        progress: &mut dyn FnMut(u64) -> bool,
    ) -> Result<PathBuf> {
        if self.offset > size {
            return Err(Error::protocol(
                "",
                format!(
                    "resume offset {} is past the end of {:?} ({size} bytes)",
                    self.offset, self.name
                ),
            ));
        }
        let expected = blake3::Hash::from_hex(expected_hash).map_err(|_| {
            Error::protocol(
                "",
                format!("invalid content hash {:?}", truncate(expected_hash, 80)),
            )
        })?;

        let mut buf = vec![0u8; COPY_BUF];
        let hasher = self.hash_partial(&mut buf)?;
        let hasher = match self.pipe(src, size, hasher, buf, progress) {
            Ok(h) => h,
            Err(e) => {
                // Kept for a resume, unless not one byte ever arrived.
                self.discard_if_empty();
                return Err(e);
            }
        };

        let actual = hasher.finalize();
        // blake3::Hash compares in constant time; not needed here, but free.
        if actual != expected {
            let file = self.name.clone();
            self.drop_mismatched();
            return Err(Error::HashMismatch {
                file,
                expected: expected.to_hex().to_string(),
                actual: actual.to_hex().to_string(),
            });
        }
        // The bytes must be on disk before the name says the download is complete.
        self.part.sync_data()?;
        self.place()?;
        Ok(self.final_path)
    }

    /// Receives a file that comes with no size and no hash (from an original C++ client,
    /// which sends the raw bytes and closes): everything until the sender closes, at
    /// most `limit` bytes, then moves it into place without overwriting. Nothing can
    /// verify it. Always from offset 0 (the original cannot resume): the partial file is
    /// emptied first, and removed on any failure (there is nothing to resume from).
    /// Returns the final path and the number of bytes.
    ///
    /// Errors: [`Error::DownloadTooLarge`] past `limit` (with `size` = `limit` + 1),
    /// [`Error::Timeout`] (no byte for the stall time, or under the [`MinRate`]),
    /// [`Error::Cancelled`], [`Error::AlreadyExists`], I/O errors.
    pub fn receive_unverified(
        mut self,
        src: &mut impl Read,
        peer: &str,
        limit: u64,
        progress: &mut dyn FnMut(u64) -> bool,
    ) -> Result<(PathBuf, u64)> {
        self.restart()?;
        let _ = fs::remove_file(sibling(&self.part_path, ORIGIN_SUFFIX));
        self.origin = None;
        self.sender = Some(peer.to_string());
        let buf = vec![0u8; COPY_BUF];
        // `pipe` wants a size: one byte more than allowed, so reaching it means too large
        // and the sender closing (`Closed`) is the normal end.
        let outcome = self.pipe(
            src,
            limit.saturating_add(1),
            blake3::Hasher::new(),
            buf,
            progress,
        );
        let failed = match outcome {
            Ok(_) => Some(Error::DownloadTooLarge {
                peer: peer.to_string(),
                file: self.name.clone(),
                size: limit.saturating_add(1),
                limit,
            }),
            Err(Error::Closed) => None,
            Err(e) => Some(e),
        };
        if let Some(e) = failed {
            self.discard();
            return Err(e);
        }
        let len = self.part.metadata()?.len();
        self.part.sync_data()?;
        if let Err(e) = self.place() {
            self.discard();
            return Err(e);
        }
        Ok((self.final_path, len))
    }

    /// Remove the partial file and its origin record.
    fn discard(self) {
        drop(self.part);
        let _ = fs::remove_file(&self.part_path);
        let _ = fs::remove_file(sibling(&self.part_path, ORIGIN_SUFFIX));
    }

    /// After a failed hash check: which bytes are wrong is unknown. When peers other
    /// than the origin appended to the partial (they announced the same file, so they
    /// could), only their bytes go, so a peer other than the origin can never get the
    /// origin's bytes thrown away; the next mismatch, with only the origin's bytes
    /// left, deletes them. Otherwise the whole partial file and its record go.
    fn drop_mismatched(mut self) {
        if let Some(o) = self.origin.clone() {
            if let Some(at) = o.others_from {
                if self.part.set_len(at).is_ok() {
                    let mine = Origin {
                        others_from: None,
                        ..o
                    };
                    if let Err(e) = self.write_origin(mine) {
                        log::warn!("cannot update {}: {e}", self.part_path.display());
                    }
                    return;
                }
            }
        }
        drop(self.part);
        if let Err(e) = fs::remove_file(&self.part_path) {
            log::warn!("cannot remove {}: {e}", self.part_path.display());
        }
        let _ = fs::remove_file(sibling(&self.part_path, ORIGIN_SUFFIX));
    }

    /// Move bytes `offset..size` from `src` into the partial file, hashing them.
    ///
    /// Two stages: this thread copies out of the socket while a scoped worker hashes
    /// and writes the previous chunk, so the two copies and the hash overlap on
    /// separate cores. Buffers circulate between them (`SLOTS` of them, so memory stays
    /// bounded whatever the file size). Every `WRITEBACK_EVERY` bytes the worker asks
    /// the kernel to start writing them to disk, so the final `sync_data` has little
    /// left to wait for.
    fn pipe(
        &self,
        src: &mut impl Read,
        size: u64,
        mut hasher: blake3::Hasher,
        first: Vec<u8>,
        progress: &mut dyn FnMut(u64) -> bool,
    ) -> Result<blake3::Hasher> {
        const SLOTS: usize = 4;
        const WRITEBACK_EVERY: u64 = 32 * 1024 * 1024;
        let (full_tx, full_rx) = crossbeam_channel::bounded::<(Vec<u8>, usize)>(SLOTS);
        let (empty_tx, empty_rx) = crossbeam_channel::bounded::<Vec<u8>>(SLOTS);
        let _ = empty_tx.send(first);
        for _ in 1..SLOTS {
            let _ = empty_tx.send(vec![0u8; COPY_BUF]);
        }
        let part = &self.part;
        let start = self.offset;
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("p2p-receive-write".into())
                .spawn_scoped(scope, move || -> io::Result<blake3::Hasher> {
                    let mut written = start;
                    let mut flushed = start;
                    for (buf, n) in full_rx {
                        hasher.update(&buf[..n]);
                        let mut w = part;
                        w.write_all(&buf[..n])?;
                        written += n as u64;
                        if written - flushed >= WRITEBACK_EVERY {
                            start_writeback(part, flushed, written - flushed);
                            flushed = written;
                        }
                        // The reader may have stopped; then nobody needs the buffer.
                        let _ = empty_tx.send(buf);
                    }
                    Ok(hasher)
                })?;
            let read = (|| -> Result<()> {
                let mut received = start;
                let mut pace = self
                    .pace
                    .map(|p| PaceCheck::new(p, Instant::now(), received));
                while received < size {
                    // No buffer back means the worker stopped on a write error.
                    let Ok(mut buf) = empty_rx.recv() else {
                        return Ok(());
                    };
                    let want = (size - received).min(COPY_BUF as u64) as usize;
                    let n = match src.read(&mut buf[..want]) {
                        Ok(0) => return Err(Error::Closed),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                        // With a pace, a read timeout is only the tick that judges it.
                        Err(e) if is_timeout(&e) && pace.is_some() => 0,
                        Err(e) if is_timeout(&e) => {
                            return Err(Error::Timeout(format!(
                                "no data from the sender of {:?}",
                                self.name
                            )))
                        }
                        Err(e) => return Err(Error::Io(e)),
                    };
                    if full_tx.send((buf, n)).is_err() {
                        return Ok(()); // worker stopped: its error follows
                    }
                    received += n as u64;
                    if let Some(p) = &mut pace {
                        p.check(Instant::now(), received).map_err(|why| {
                            Error::Timeout(format!(
                                "download of {:?} from {} abandoned: {why}; the partial file \
                                 is kept for a resume",
                                self.name,
                                self.sender.as_deref().unwrap_or("its sender"),
                            ))
                        })?;
                    }
                    if n > 0 && !progress(received) {
                        return Err(Error::Cancelled);
                    }
                }
                Ok(())
            })();
            drop(full_tx);
            // A write error (disk full) explains an early stop better than anything
            // the reader saw after it.
            let written = worker
                .join()
                .map_err(|_| Error::Io(io::Error::other("the download writer panicked")))?;
            let hasher = written?;
            read.map(|()| hasher)
        })
    }

    /// A hasher that has seen the partial file's first `offset` bytes, so the final hash
    /// covers the whole file and not just this session's bytes.
    fn hash_partial(&self, buf: &mut [u8]) -> Result<blake3::Hasher> {
        let mut hasher = blake3::Hasher::new();
        let mut pos = 0u64;
        while pos < self.offset {
            let want = (self.offset - pos).min(buf.len() as u64) as usize;
            match self.part.read_at(&mut buf[..want], pos) {
                Ok(0) => {
                    return Err(Error::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} shrank while resuming", self.part_path.display()),
                    )))
                }
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
        Ok(hasher)
    }

    /// Gives the verified partial file its final name without ever replacing a file
    /// there: a hard link fails if the name exists, where a rename would silently replace.
    fn place(&self) -> Result<()> {
        match fs::hard_link(&self.part_path, &self.final_path) {
            Ok(()) => {
                if let Err(e) = fs::remove_file(&self.part_path) {
                    // The download is complete under its final name; a leftover partial
                    // only costs space (and goes as stale later).
                    log::warn!("cannot remove {}: {e}", self.part_path.display());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists(self.final_path.clone()));
            }
            Err(e) => {
                // File systems without hard links (FAT, some network mounts): check, then
                // rename. Another process could create the name in between; that window
                // is the price of such file systems.
                log::debug!(
                    "hard link to {} failed ({e}); renaming instead",
                    self.final_path.display()
                );
                ensure_absent(&self.final_path)?;
                fs::rename(&self.part_path, &self.final_path)?;
            }
        }
        let _ = fs::remove_file(sibling(&self.part_path, ORIGIN_SUFFIX));
        // Make the new name durable too; best effort, the data already is.
        if let Ok(dir) = File::open(&self.dest_dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// Judges a sender's pace while a download runs (see [`MinRate`]); pure, given the time.
#[derive(Debug)]
struct PaceCheck {
    pace: MinRate,
    last_byte: Instant,
    window_start: Instant,
    window_first: u64,
    received: u64,
}

impl PaceCheck {
    fn new(pace: MinRate, now: Instant, received: u64) -> PaceCheck {
        PaceCheck {
            pace,
            last_byte: now,
            window_start: now,
            window_first: received,
            received,
        }
    }

    /// Called after every read (also one that got nothing) with the total received so
    /// far; `Err` says why the sender is too slow.
    fn check(&mut self, now: Instant, received: u64) -> std::result::Result<(), String> {
        if received > self.received {
            self.received = received;
            self.last_byte = now;
        }
        let silent = now.saturating_duration_since(self.last_byte);
        if silent >= self.pace.stall {
            return Err(format!(
                "no byte for {:.1} s (limit {:.1} s)",
                silent.as_secs_f64(),
                self.pace.stall.as_secs_f64()
            ));
        }
        let span = now.saturating_duration_since(self.window_start);
        if self.pace.bytes_per_sec == 0 || span < self.pace.window {
            return Ok(());
        }
        // Tumbling windows: each one judged on its own, over its real length.
        let got = received - self.window_first;
        let owed = (self.pace.bytes_per_sec as f64 * span.as_secs_f64()) as u64;
        if got < owed {
            return Err(format!(
                "{got} bytes in {:.1} s, under the minimum rate of {} bytes/s",
                span.as_secs_f64(),
                self.pace.bytes_per_sec
            ));
        }
        self.window_start = now;
        self.window_first = received;
        Ok(())
    }
}

/// Errors with [`Error::AlreadyExists`] if anything (even a dangling symlink) is at `path`.
fn ensure_absent(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(_) => Err(Error::AlreadyExists(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;
    use std::time::Duration;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 253) as u8).collect()
    }

    fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    /// Sends `content[offset..offset+len]` through a real loopback socket with `send`,
    /// returns what arrived and what `send` returned.
    fn roundtrip(
        content: &[u8],
        offset: u64,
        len: u64,
        send: fn(&TcpStream, &File, u64, u64) -> io::Result<u64>,
    ) -> (Vec<u8>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, content).unwrap();
        let (tx, mut rx) = tcp_pair();
        let sender = thread::spawn(move || {
            let file = File::open(&path).unwrap();
            send(&tx, &file, offset, len).unwrap()
            // tx dropped here: the reader sees EOF.
        });
        let mut got = Vec::new();
        rx.read_to_end(&mut got).unwrap();
        (got, sender.join().unwrap())
    }

    fn via_copy(sock: &TcpStream, file: &File, offset: u64, len: u64) -> io::Result<u64> {
        copy_range(sock, file, offset, offset + len).map(|()| len)
    }

    #[test]
    fn a_second_download_of_the_same_name_is_busy_and_empty_partials_are_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let first = Receiver::prepare(dir.path(), "same.bin").unwrap();
        let second = Receiver::prepare(dir.path(), "same.bin").unwrap_err();
        assert_eq!(second.code(), crate::ErrorCode::Busy, "{second}");
        first.discard_if_empty();
        drop(first);
        assert!(!partial_path(dir.path(), "same.bin").exists());
        // Free again once the first is gone.
        drop(Receiver::prepare(dir.path(), "same.bin").unwrap());
    }

    #[test]
    fn send_file_sends_exact_ranges() {
        for send in [send_file as fn(&_, &_, _, _) -> _, via_copy] {
            assert_eq!(roundtrip(b"", 0, 0, send), (vec![], 0));
            assert_eq!(roundtrip(b"x", 0, 1, send), (b"x".to_vec(), 1));
            let big = pattern(5 * 1024 * 1024);
            let (got, n) = roundtrip(&big, 0, big.len() as u64, send);
            assert_eq!(n, big.len() as u64);
            assert!(got == big);
            let (got, n) = roundtrip(&big, 12345, big.len() as u64 - 12345, send);
            assert_eq!(n, got.len() as u64);
            assert!(got == big[12345..]);
            let (got, _) = roundtrip(&big, 1000, 10, send);
            assert_eq!(got, big[1000..1010]);
        }
    }

    #[test]
    fn send_file_past_end_of_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"short").unwrap();
        let file = File::open(&path).unwrap();
        let (tx, _rx) = tcp_pair();
        let e = send_file(&tx, &file, 2, 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let e = copy_range(&tx, &file, 2, 12).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn send_file_honors_the_write_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        // Sparse: far more than the socket buffers hold, at no disk cost.
        let len = 256 * 1024 * 1024;
        File::create(&path).unwrap().set_len(len).unwrap();
        let file = File::open(&path).unwrap();
        let (tx, _rx) = tcp_pair(); // never read
        tx.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let e = send_file(&tx, &file, 0, len).unwrap_err();
        assert!(is_timeout(&e), "{e:?}");
    }

    #[test]
    fn partial_path_is_hidden_and_fits() {
        let d = Path::new("/dl");
        assert_eq!(
            partial_path(d, "a b.txt"),
            Path::new("/dl/.a b.txt.p2pchat-part")
        );
        let long = "é".repeat(127); // 254 bytes
        let p = partial_path(d, &long);
        let file = p.file_name().unwrap().to_str().unwrap();
        assert!(file.len() <= MAX_FILENAME_LEN);
        assert!(file.starts_with('.') && file.ends_with(PART_SUFFIX));
        assert_ne!(p, partial_path(d, &format!("{}x", "é".repeat(126))));
    }

    fn always(_: u64) -> bool {
        true
    }

    #[test]
    fn receive_full_file() {
        let dir = tempfile::tempdir().unwrap();
        let content = pattern(COPY_BUF * 3 + 17);
        let hash = blake3::hash(&content).to_hex();
        let r = Receiver::prepare(dir.path(), "file.bin").unwrap();
        assert_eq!(r.offset(), 0);
        assert_eq!(r.final_path(), dir.path().join("file.bin"));
        let mut seen = Vec::new();
        let path = r
            .receive(&mut &content[..], content.len() as u64, &hash, &mut |n| {
                seen.push(n);
                true
            })
            .unwrap();
        assert_eq!(path, dir.path().join("file.bin"));
        assert!(fs::read(&path).unwrap() == content);
        assert!(!partial_path(dir.path(), "file.bin").exists());
        assert_eq!(seen.last(), Some(&(content.len() as u64)));
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn receive_over_a_socket_from_send_file() {
        let dir = tempfile::tempdir().unwrap();
        let content = pattern(5 * 1024 * 1024 + 3);
        let src_path = dir.path().join("src");
        fs::write(&src_path, &content).unwrap();
        let dest = dir.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let (tx, mut rx) = tcp_pair();
        let len = content.len() as u64;
        let sender = thread::spawn(move || {
            send_file(&tx, &File::open(&src_path).unwrap(), 0, len).unwrap();
        });
        rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = Receiver::prepare(&dest, "src").unwrap();
        let hash = blake3::hash(&content).to_hex().to_ascii_uppercase();
        let path = r.receive(&mut rx, len, &hash, &mut always).unwrap();
        sender.join().unwrap();
        assert!(fs::read(path).unwrap() == content);
    }

    #[test]
    fn empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let r = Receiver::prepare(dir.path(), "empty").unwrap();
        let hash = blake3::hash(b"").to_hex();
        let path = r.receive(&mut io::empty(), 0, &hash, &mut always).unwrap();
        assert_eq!(fs::read(path).unwrap(), b"");
    }

    #[test]
    fn cancelled_download_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let content = pattern(COPY_BUF * 4 + 1000);
        let size = content.len() as u64;
        let hash = blake3::hash(&content).to_hex();
        let part = partial_path(dir.path(), "f");

        let r = Receiver::prepare(dir.path(), "f").unwrap();
        let half = size / 2;
        let e = r
            .receive(&mut &content[..], size, &hash, &mut |n| n < half)
            .unwrap_err();
        assert!(matches!(e, Error::Cancelled), "{e:?}");
        assert!(!dir.path().join("f").exists());
        let kept = fs::metadata(&part).unwrap().len();
        assert!(kept >= half && kept < size, "{kept}");

        let r = Receiver::prepare(dir.path(), "f").unwrap();
        assert_eq!(r.offset(), kept);
        let mut first = None;
        let path = r
            .receive(&mut &content[kept as usize..], size, &hash, &mut |n| {
                first.get_or_insert(n);
                true
            })
            .unwrap();
        assert!(first.unwrap() > kept);
        assert!(fs::read(path).unwrap() == content);
        assert!(!part.exists());
    }

    #[test]
    fn corrupted_byte_is_a_hash_mismatch_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let content = pattern(100_000);
        let hash = blake3::hash(&content).to_hex();
        let mut bad = content.clone();
        bad[5000] ^= 1;
        let r = Receiver::prepare(dir.path(), "f").unwrap();
        let e = r
            .receive(&mut &bad[..], bad.len() as u64, &hash, &mut always)
            .unwrap_err();
        match e {
            Error::HashMismatch {
                file,
                expected,
                actual,
            } => {
                assert_eq!(file, "f");
                assert_eq!(expected, hash.as_str());
                assert_eq!(actual, blake3::hash(&bad).to_hex().as_str());
            }
            e => panic!("{e:?}"),
        }
        assert!(!dir.path().join("f").exists());
        assert!(!partial_path(dir.path(), "f").exists());
    }

    #[test]
    fn corrupted_resumed_prefix_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let content = pattern(10_000);
        let mut prefix = content[..4000].to_vec();
        prefix[10] ^= 0x80;
        fs::write(partial_path(dir.path(), "f"), &prefix).unwrap();
        let r = Receiver::prepare(dir.path(), "f").unwrap();
        assert_eq!(r.offset(), 4000);
        let hash = blake3::hash(&content).to_hex();
        let e = r
            .receive(&mut &content[4000..], 10_000, &hash, &mut always)
            .unwrap_err();
        assert!(matches!(e, Error::HashMismatch { .. }), "{e:?}");
    }

    /// A reader that fails the test if anything reads it.
    struct Untouchable;
    impl Read for Untouchable {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            panic!("must not be read");
        }
    }

    #[test]
    fn existing_final_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"mine").unwrap();
        let e = Receiver::prepare(dir.path(), "f").unwrap_err();
        assert!(
            matches!(&e, Error::AlreadyExists(p) if *p == dir.path().join("f")),
            "{e:?}"
        );
        assert!(!partial_path(dir.path(), "f").exists());
        // A dangling symlink counts as existing too.
        std::os::unix::fs::symlink("nowhere", dir.path().join("g")).unwrap();
        assert!(matches!(
            Receiver::prepare(dir.path(), "g"),
            Err(Error::AlreadyExists(_))
        ));

        // Appearing during the download: the download is kept, the file untouched.
        let r = Receiver::prepare(dir.path(), "h").unwrap();
        fs::write(dir.path().join("h"), b"theirs").unwrap();
        let hash = blake3::hash(b"new").to_hex();
        let e = r
            .receive(&mut &b"new"[..], 3, &hash, &mut always)
            .unwrap_err();
        assert!(matches!(e, Error::AlreadyExists(_)), "{e:?}");
        assert_eq!(fs::read(dir.path().join("h")).unwrap(), b"theirs");
        assert_eq!(fs::read(partial_path(dir.path(), "h")).unwrap(), b"new");
    }

    #[test]
    fn early_eof_is_closed_and_keeps_the_partial() {
        let dir = tempfile::tempdir().unwrap();
        let content = pattern(1000);
        let hash = blake3::hash(&content).to_hex();
        let r = Receiver::prepare(dir.path(), "f").unwrap();
        let e = r
            .receive(&mut &content[..600], 1000, &hash, &mut always)
            .unwrap_err();
        assert!(matches!(e, Error::Closed), "{e:?}");
        assert_eq!(
            fs::read(partial_path(dir.path(), "f")).unwrap(),
            &content[..600]
        );
        assert!(!dir.path().join("f").exists());
    }

    #[test]
    fn read_timeout_is_timeout_and_keeps_the_partial() {
        struct Stalls(usize);
        impl Read for Stalls {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = self.0.min(buf.len());
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let r = Receiver::prepare(dir.path(), "f").unwrap();
        let hash = blake3::hash(b"whatever").to_hex();
        let e = r
            .receive(&mut Stalls(10), 100, &hash, &mut always)
            .unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e:?}");
        assert_eq!(fs::read(partial_path(dir.path(), "f")).unwrap(), [7; 10]);
    }

    #[test]
    fn offset_past_end_is_protocol_error_and_restart_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(partial_path(dir.path(), "f"), b"0123456789").unwrap();
        let hash = blake3::hash(b"abc").to_hex();
        let r = Receiver::prepare(dir.path(), "f").unwrap();
        let e = r
            .receive(&mut Untouchable, 3, &hash, &mut always)
            .unwrap_err();
        assert!(matches!(e, Error::Protocol { .. }), "{e:?}");

        let mut r = Receiver::prepare(dir.path(), "f").unwrap();
        assert_eq!(r.offset(), 10);
        r.restart().unwrap();
        assert_eq!(r.offset(), 0);
        let path = r.receive(&mut &b"abc"[..], 3, &hash, &mut always).unwrap();
        assert_eq!(fs::read(path).unwrap(), b"abc");
    }

    #[test]
    fn origin_records_round_trip_and_junk_is_no_origin() {
        let mut o = Origin {
            peer: "alice".into(),
            size: 12345,
            hash: blake3::hash(b"x").to_hex().to_string(),
            others_from: Some(77),
        };
        assert_eq!(Origin::from_record(&o.to_record()), Some(o.clone()));
        o.others_from = None;
        assert_eq!(Origin::from_record(&o.to_record()), Some(o.clone()));
        let rec = o.to_record();
        for junk in [
            "",
            "p2pchat-partial 2\npeer a\nsize 1\nblake3 00\n",
            &rec[..rec.len() - 1],
            &format!("{rec}extra\n"),
            &format!("{rec}others-from 1\nothers-from 2\n"),
            &format!("{rec}others-from x\n"),
            &rec.replace("12345", "-1"),
            &rec.replace("peer alice", "peer "),
            &rec.replace(&o.hash, "abc"),
        ] {
            assert_eq!(Origin::from_record(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn the_resume_rule() {
        let h1 = blake3::hash(b"1").to_hex().to_string();
        let h2 = blake3::hash(b"2").to_hex().to_string();
        let alice = Origin {
            peer: "alice".into(),
            size: 100,
            hash: h1.clone(),
            others_from: None,
        };
        let a = Some(&alice);
        // Nothing to lose, or no record: as before.
        assert_eq!(judge_resume(a, 0, "bob", 7, &h2), Resume::Continue);
        assert_eq!(judge_resume(None, 50, "bob", 7, &h2), Resume::Continue);
        // The same file, from anyone.
        assert_eq!(judge_resume(a, 50, "alice", 100, &h1), Resume::Continue);
        assert_eq!(
            judge_resume(a, 50, "bob", 100, &h1.to_uppercase()),
            Resume::Continue
        );
        // Another file: the origin restarts it, anyone else is refused.
        assert_eq!(judge_resume(a, 50, "alice", 100, &h2), Resume::Restart);
        assert_eq!(judge_resume(a, 50, "alice", 101, &h1), Resume::Restart);
        assert_eq!(judge_resume(a, 50, "bob", 100, &h2), Resume::Conflict);
    }

    #[test]
    fn the_pace_rule() {
        let pace = MinRate {
            bytes_per_sec: 1000,
            window: Duration::from_secs(10),
            stall: Duration::from_secs(15),
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut p = PaceCheck::new(pace, t0, 500);
        // Within a window nothing is judged; 10,000 bytes in 10 s is just enough.
        assert!(p.check(at(9), 500).is_ok());
        assert!(p.check(at(10), 10_500).is_ok());
        // The next window starts afresh: 9,999 bytes in it is too few.
        assert!(p.check(at(15), 15_000).is_ok());
        let e = p.check(at(20), 20_499).unwrap_err();
        assert!(e.contains("9999 bytes in 10.0 s"), "{e}");
        // One byte now and then keeps nothing alive past the window.
        let mut p = PaceCheck::new(pace, t0, 0);
        for s in 1..10 {
            assert!(p.check(at(s), s).is_ok());
        }
        assert!(p.check(at(10), 10).is_err());
        // Silence ends it at the idle time even without a rate rule.
        let mut p = PaceCheck::new(
            MinRate {
                bytes_per_sec: 0,
                ..pace
            },
            t0,
            0,
        );
        assert!(p.check(at(100), 0).is_err());
        let mut p = PaceCheck::new(
            MinRate {
                bytes_per_sec: 0,
                ..pace
            },
            t0,
            0,
        );
        assert!(p.check(at(14), 1).is_ok());
        assert!(p.check(at(28), 1).is_ok());
        assert!(p.check(at(29), 1).is_err());
        assert_eq!(pace.tick(), Duration::from_secs(1));
        let fast = MinRate {
            window: Duration::from_millis(200),
            ..pace
        };
        assert_eq!(fast.tick(), Duration::from_millis(50));
    }

    #[test]
    fn the_origin_record_lives_and_goes_with_the_partial() {
        let dir = tempfile::tempdir().unwrap();
        let content = pattern(10_000);
        let hash = blake3::hash(&content).to_hex().to_string();
        let record = sibling(&partial_path(dir.path(), "f"), ORIGIN_SUFFIX);
        assert_eq!(
            record.file_name().unwrap().len(),
            partial_path(dir.path(), "f").file_name().unwrap().len()
        );
        let mut r = Receiver::prepare(dir.path(), "f").unwrap();
        assert_eq!(r.origin(), None);
        r.begin("alice", 10_000, &hash).unwrap();
        let e = r
            .receive(&mut &content[..4000], 10_000, &hash, &mut always)
            .unwrap_err();
        assert!(matches!(e, Error::Closed), "{e:?}");
        let r = Receiver::prepare(dir.path(), "f").unwrap();
        let origin = r.origin().unwrap().clone();
        assert_eq!((origin.peer.as_str(), origin.size), ("alice", 10_000));
        assert_eq!(r.judge("bob", 10_000, &hash), Resume::Continue);
        let mut r = r;
        r.begin("bob", 10_000, &hash).unwrap();
        let noted = Origin {
            others_from: Some(4000),
            ..origin.clone()
        };
        assert_eq!(r.origin(), Some(&noted), "the first origin stays");
        r.receive(&mut &content[4000..], 10_000, &hash, &mut always)
            .unwrap();
        assert!(!record.exists());
        assert!(!partial_path(dir.path(), "f").exists());

        // Refused or unreachable before any byte: neither file stays.
        let mut r = Receiver::prepare(dir.path(), "g").unwrap();
        r.begin("alice", 10, &hash).unwrap();
        r.discard_if_empty();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "only f");
    }

    #[test]
    fn invalid_expected_hash_is_protocol_error() {
        let dir = tempfile::tempdir().unwrap();
        let r = Receiver::prepare(dir.path(), "f").unwrap();
        let e = r
            .receive(&mut Untouchable, 3, "not-a-hash", &mut always)
            .unwrap_err();
        assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    }

    #[test]
    fn bad_names_are_refused_and_nothing_is_written() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("dest");
        fs::create_dir(&dest).unwrap();
        for name in [
            "../x", "/etc/x", ".hidden", "..", ".", "", "a/b", "x\0y", "a,b", "a\nb", "a\\b",
        ] {
            let e = Receiver::prepare(&dest, name).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{name:?}: {e:?}");
        }
        assert_eq!(fs::read_dir(&dest).unwrap().count(), 0);
        let outside: Vec<_> = fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(outside.len(), 1);
    }

    #[test]
    fn planted_symlink_at_partial_path_is_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let victim = root.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let dest = root.path().join("dest");
        fs::create_dir(&dest).unwrap();
        std::os::unix::fs::symlink(&victim, partial_path(&dest, "f")).unwrap();
        assert!(Receiver::prepare(&dest, "f").is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }
}
