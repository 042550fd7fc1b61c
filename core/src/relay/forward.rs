//! One direction of a joined circuit: bytes read from one socket, held briefly, written
//! to the other. On Linux they stay in the kernel: `splice(2)` moves them from the
//! socket into a pipe and from the pipe into the other socket, never through user
//! memory. Elsewhere (or when asked) a 64 KiB user-space buffer does the same job.
//! Both sockets are non-blocking: every call returns `WouldBlock` rather than wait.

use std::io::{self, Read, Write};

/// Bytes of the user-space buffer of [`Buffer::Memory`].
const MEMORY_BUFFER: usize = 64 * 1024;

/// How a relay moves bytes between the two sockets of a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Forwarding {
    /// `splice(2)` through a pipe (Linux), zero-copy; [`Forwarding::Copy`] elsewhere.
    #[default]
    Splice,
    /// `read`/`write` through a 64 KiB buffer per direction (allocated when the first
    /// byte comes).
    Copy,
}

/// Where the bytes of one direction wait between the read and the write.
pub(crate) enum Buffer {
    #[cfg(target_os = "linux")]
    Pipe {
        read: std::os::fd::OwnedFd,
        write: std::os::fd::OwnedFd,
        capacity: usize,
        held: usize,
    },
    Memory {
        buf: Vec<u8>,
        start: usize,
        end: usize,
    },
}

impl Buffer {
    /// A buffer for `mode` (a pipe pair for [`Forwarding::Splice`] on Linux: this may
    /// fail for want of descriptors).
    pub(crate) fn new(mode: Forwarding) -> io::Result<Buffer> {
        match mode {
            #[cfg(target_os = "linux")]
            Forwarding::Splice => pipe(),
            _ => Ok(Buffer::Memory {
                buf: Vec::new(),
                start: 0,
                end: 0,
            }),
        }
    }

    /// Bytes held, read but not yet written.
    pub(crate) fn held(&self) -> usize {
        match self {
            #[cfg(target_os = "linux")]
            Buffer::Pipe { held, .. } => *held,
            Buffer::Memory { start, end, .. } => end - start,
        }
    }

    /// Bytes that may be read in now.
    pub(crate) fn room(&self) -> usize {
        match self {
            #[cfg(target_os = "linux")]
            Buffer::Pipe { capacity, held, .. } => capacity - held,
            Buffer::Memory { end, .. } => MEMORY_BUFFER - end,
        }
    }

    /// Read at most `max` bytes (and at most [`Buffer::room`]) from `src`. `Ok(0)`:
    /// `src` sent its FIN (or `max` was 0).
    pub(crate) fn fill(&mut self, src: &mio::net::TcpStream, max: usize) -> io::Result<usize> {
        let max = max.min(self.room());
        if max == 0 {
            return Ok(0);
        }
        match self {
            #[cfg(target_os = "linux")]
            Buffer::Pipe { write, held, .. } => {
                use std::os::fd::AsRawFd;
                let n = splice(src.as_raw_fd(), write.as_raw_fd(), max)?;
                *held += n;
                Ok(n)
            }
            Buffer::Memory { buf, start, end } => {
                if buf.is_empty() {
                    buf.resize(MEMORY_BUFFER, 0);
                }
                let mut r = src;
                let n = retry(|| r.read(&mut buf[*end..*end + max]))?;
                *end += n;
                if *start == *end {
                    *start = 0;
                    *end = 0;
                }
                Ok(n)
            }
        }
    }

    /// Write what is held to `dst`, as much as it takes now.
    pub(crate) fn drain(&mut self, dst: &mio::net::TcpStream) -> io::Result<usize> {
        match self {
            #[cfg(target_os = "linux")]
            Buffer::Pipe { read, held, .. } => {
                use std::os::fd::AsRawFd;
                let n = splice(read.as_raw_fd(), dst.as_raw_fd(), *held)?;
                *held -= n;
                Ok(n)
            }
            Buffer::Memory { buf, start, end } => {
                let mut w = dst;
                let n = retry(|| w.write(&buf[*start..*end]))?;
                *start += n;
                if *start == *end {
                    *start = 0;
                    *end = 0;
                }
                Ok(n)
            }
        }
    }
}

fn retry(mut f: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// A non-blocking pipe pair and its capacity.
#[cfg(target_os = "linux")]
fn pipe() -> io::Result<Buffer> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_GETPIPE_SZ only reads the pipe's size.
    let size = unsafe { libc::fcntl(fds[1], libc::F_GETPIPE_SZ) };
    // A pipe holds 64 KiB unless the system says otherwise (a user over
    // pipe-user-pages-soft gets smaller ones).
    let capacity = usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096);
    Ok(Buffer::Pipe {
        read,
        write,
        capacity,
        held: 0,
    })
}

/// One `splice(2)` of at most `len` bytes, never blocking.
#[cfg(target_os = "linux")]
fn splice(from: libc::c_int, to: libc::c_int, len: usize) -> io::Result<usize> {
    retry(|| {
        // SAFETY: both descriptors are open (owned by the caller's circuit); null
        // offsets, as one of them is a socket and the other a pipe.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
}
