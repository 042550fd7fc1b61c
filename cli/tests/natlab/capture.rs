//! Recording what crosses the public segment, and asserting what is (not) in it.
//!
//! A raw `AF_PACKET` socket opened inside the switch namespace (from a thread that
//! enters it) sees every frame as it arrives on a bridge port: each frame crossing the
//! segment once. Nothing needs installing (no tcpdump): the frames are kept in memory,
//! TCP payloads are put back into byte streams per direction, and
//! [`Captured::assert_absent`] searches both the frames and the streams, so a string
//! split across two segments is still found. An incomplete capture (frames dropped by
//! the socket, truncated or past the memory cap) can prove no absence, and says so.

use super::enter_netns;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Most bytes of frames one capture keeps.
const MAX_CAPTURED: usize = 256 << 20;
/// Largest frame read whole: a veth hands over TSO segments of up to 64 KiB.
const FRAME_BUF: usize = 256 << 10;

/// A capture in progress (stopped and joined by [`Capture::stop`] or on drop).
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Captured, String>>>,
}

/// One frame as it arrived on a port of the segment.
pub struct Frame {
    pub data: Vec<u8>,
}

/// What a capture recorded.
#[derive(Default)]
pub struct Captured {
    pub frames: Vec<Frame>,
    /// Frames the kernel dropped because the socket's buffer was full.
    pub drops: u64,
    /// Frames longer than the read buffer (kept cut short).
    pub truncated: u64,
    /// Frames not kept past [`MAX_CAPTURED`].
    pub over_cap: u64,
}

impl Capture {
    /// Start capturing on every port of `bridge` in the namespace at `netns` (the bridge
    /// device itself is skipped: a frame it also saw would count twice). Returns once
    /// the socket is open, so nothing sent afterwards is missed.
    pub fn start(netns: &Path, bridge: &str) -> Result<Capture, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready) = crossbeam_channel::bounded::<Result<(), String>>(1);
        let netns = netns.to_path_buf();
        let bridge = bridge.to_string();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("natlab-capture".into())
            .spawn(move || {
                let socket = enter_netns(&netns).and_then(|()| open_socket(&bridge));
                match socket {
                    Ok(socket) => {
                        let _ = ready_tx.send(Ok(()));
                        record(socket, &flag)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        Err(e)
                    }
                }
            })
            .map_err(|e| format!("cannot start the capture thread: {e}"))?;
        let mut capture = Capture {
            stop,
            thread: Some(thread),
        };
        match ready.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(capture),
            Ok(Err(e)) => {
                let _ = capture.stop_thread();
                Err(e)
            }
            Err(_) => {
                let _ = capture.stop_thread();
                Err("the capture socket did not open in 10 s".into())
            }
        }
    }

    /// Stop and return what was recorded (frames still queued in the socket included).
    pub fn stop(mut self) -> Captured {
        self.stop_thread()
            .unwrap_or_else(|e| panic!("capture failed: {e}"))
    }

    fn stop_thread(&mut self) -> Result<Captured, String> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err("the capture thread panicked".into())),
            None => Err("already stopped".into()),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop_thread();
        }
    }
}

/// An owned descriptor, closed on drop.
struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: a descriptor this struct owns.
        unsafe { libc::close(self.0) };
    }
}

/// A raw socket for every protocol on every interface of the current namespace, with a
/// large buffer; and the bridge's interface index (to skip).
fn open_socket(bridge: &str) -> Result<(Fd, i32), String> {
    let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(format!(
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    let fd = Fd(fd);
    let size: libc::c_int = 64 << 20;
    // SAFETY: setsockopt with a pointer to a live c_int and its size. Root may go past
    // rmem_max (FORCE); otherwise the ordinary cap applies, and drops are counted.
    unsafe {
        let p = &size as *const libc::c_int as *const libc::c_void;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        if libc::setsockopt(fd.0, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, p, len) != 0 {
            libc::setsockopt(fd.0, libc::SOL_SOCKET, libc::SO_RCVBUF, p, len);
        }
    }
    let name = std::ffi::CString::new(bridge).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated name.
    let skip = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
    Ok((fd, skip))
}

/// Read frames until `stop`, then what is still queued; then the drop count.
fn record((fd, skip): (Fd, i32), stop: &AtomicBool) -> Result<Captured, String> {
    let mut got = Captured::default();
    let mut kept = 0usize;
    let mut buf = vec![0u8; FRAME_BUF];
    let mut draining = false;
    loop {
        if !draining && stop.load(Ordering::SeqCst) {
            // Everything sent before `stop` is in the queue by now: read it, then end.
            draining = true;
        }
        let mut pfd = libc::pollfd {
            fd: fd.0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, if draining { 0 } else { 50 }) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        if ready == 0 {
            if draining {
                break;
            }
            continue;
        }
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and from are live and sized as passed. MSG_TRUNC returns the
        // frame's real length, so a cut frame is known.
        let n = unsafe {
            libc::recvfrom(
                fd.0,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                &mut from as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                &mut from_len,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => continue,
                _ => return Err(format!("recvfrom: {e}")),
            }
        }
        // Each frame is seen arriving on a port and again leaving by another: keep
        // the arrivals only, and nothing the bridge device itself saw.
        if from.sll_pkttype == libc::PACKET_OUTGOING || from.sll_ifindex == skip {
            continue;
        }
        let len = n as usize;
        if len > buf.len() {
            got.truncated += 1;
        }
        let len = len.min(buf.len());
        if kept + len > MAX_CAPTURED {
            got.over_cap += 1;
            continue;
        }
        kept += len;
        got.frames.push(Frame {
            data: buf[..len].to_vec(),
        });
    }
    // SAFETY: tpacket_stats is plain data; getsockopt fills at most its size.
    let mut stats: libc::tpacket_stats = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: as above.
    let r = unsafe {
        libc::getsockopt(
            fd.0,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            &mut stats as *mut libc::tpacket_stats as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(format!(
            "PACKET_STATISTICS: {}",
            std::io::Error::last_os_error()
        ));
    }
    got.drops = u64::from(stats.tp_drops);
    Ok(got)
}

/// One TCP segment of a captured IPv4 frame.
pub struct Segment<'a> {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub seq: u32,
    pub syn: bool,
    pub payload: &'a [u8],
}

/// The TCP segment in an Ethernet frame, if it holds IPv4 TCP.
fn tcp_segment(frame: &[u8]) -> Option<Segment<'_>> {
    if frame.len() < 14 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 6 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    // A length of 0 is a segmentation-offload frame larger than 64 KiB: all of it.
    let ip = if total >= ihl && total <= ip.len() && total != 0 {
        &ip[..total]
    } else {
        ip
    };
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let tcp = ip.get(ihl..)?;
    if tcp.len() < 20 {
        return None;
    }
    let doff = usize::from(tcp[12] >> 4) * 4;
    Some(Segment {
        src: SocketAddrV4::new(src_ip, u16::from_be_bytes([tcp[0], tcp[1]])),
        dst: SocketAddrV4::new(dst_ip, u16::from_be_bytes([tcp[2], tcp[3]])),
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        syn: tcp[13] & 0x02 != 0,
        payload: tcp.get(doff..)?,
    })
}

/// One direction of a TCP connection: (source, destination).
pub type Direction = (SocketAddrV4, SocketAddrV4);

/// A direction's start, if its SYN was seen, and its segments (sequence, payload).
type Parts<'a> = (Option<u32>, Vec<(u32, &'a [u8])>);

/// One direction of one TCP connection, its payload put back in order.
pub struct Stream {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub data: Vec<u8>,
    /// Holes (bytes never seen): an incomplete stream.
    pub gaps: u64,
}

impl Captured {
    /// Every TCP segment, in arrival order.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'_>> {
        self.frames.iter().filter_map(|f| tcp_segment(&f.data))
    }

    /// The payload bytes of the flows `from → to` for which `which(from, to)` holds.
    pub fn bytes_where(&self, which: impl Fn(&SocketAddrV4, &SocketAddrV4) -> bool) -> u64 {
        self.flows()
            .iter()
            .filter(|((s, d), _)| which(s, d))
            .map(|(_, n)| n)
            .sum()
    }

    /// Payload bytes per direction of each TCP connection (retransmissions counted).
    pub fn flows(&self) -> BTreeMap<(SocketAddrV4, SocketAddrV4), u64> {
        let mut flows = BTreeMap::new();
        for s in self.segments() {
            *flows.entry((s.src, s.dst)).or_insert(0) += s.payload.len() as u64;
        }
        flows
    }

    /// Each direction of each TCP connection as one byte stream: segments ordered by
    /// sequence number (relative to the SYN, or to the first one seen when the
    /// connection began before the capture), overlaps and retransmissions once.
    pub fn streams(&self) -> Vec<Stream> {
        // Per direction: where the stream starts (the SYN's sequence number + 1, if
        // seen) and its segments as (sequence number, payload).
        let mut parts: BTreeMap<Direction, Parts<'_>> = BTreeMap::new();
        for s in self.segments() {
            let (start, list) = parts.entry((s.src, s.dst)).or_default();
            if s.syn {
                *start = Some(s.seq.wrapping_add(1));
            }
            if !s.payload.is_empty() {
                list.push((s.seq, s.payload));
            }
        }
        let mut streams = Vec::new();
        for ((src, dst), (start, list)) in parts {
            let Some(&(first, _)) = list.first() else {
                continue;
            };
            // Offsets from a base no later than any segment (wrapping arithmetic: a
            // stream is far shorter than 2 GiB here).
            let base = start.unwrap_or_else(|| {
                list.iter()
                    .map(|(seq, _)| seq.wrapping_sub(first) as i32)
                    .min()
                    .map_or(first, |d| first.wrapping_add(d as u32))
            });
            let mut ordered: Vec<(u64, &[u8])> = list
                .iter()
                .map(|&(seq, p)| (u64::from(seq.wrapping_sub(base)), p))
                .collect();
            ordered.sort_by_key(|&(off, _)| off);
            let mut data = Vec::new();
            let mut gaps = 0u64;
            for (off, p) in ordered {
                let next = data.len() as u64;
                let end = off + p.len() as u64;
                if end <= next {
                    continue;
                }
                if off > next {
                    gaps += off - next;
                    data.extend_from_slice(p);
                } else {
                    data.extend_from_slice(&p[(next - off) as usize..]);
                }
            }
            streams.push(Stream {
                src,
                dst,
                data,
                gaps,
            });
        }
        streams
    }

    /// Only the frames between `a` and `b` (either way): e.g. a peer's registry link.
    pub fn between(&self, a: Ipv4Addr, b: Ipv4Addr) -> Captured {
        let frames = self
            .frames
            .iter()
            .filter(|f| {
                tcp_segment(&f.data).is_some_and(|s| {
                    (*s.src.ip() == a && *s.dst.ip() == b) || (*s.src.ip() == b && *s.dst.ip() == a)
                })
            })
            .map(|f| Frame {
                data: f.data.clone(),
            })
            .collect();
        Captured {
            frames,
            drops: self.drops,
            truncated: self.truncated,
            over_cap: self.over_cap,
        }
    }

    /// Where `needle` occurs: the streams holding it, and how many single frames do.
    pub fn find(&self, needle: &[u8]) -> (Vec<(SocketAddrV4, SocketAddrV4)>, usize) {
        let in_streams = self
            .streams()
            .into_iter()
            .filter(|s| contains(&s.data, needle))
            .map(|s| (s.src, s.dst))
            .collect();
        let in_frames = self
            .frames
            .iter()
            .filter(|f| contains(&f.data, needle))
            .count();
        (in_streams, in_frames)
    }

    /// Whether `needle` occurs anywhere: in a frame, or across segments of a stream.
    pub fn contains(&self, needle: &[u8]) -> bool {
        let (streams, frames) = self.find(needle);
        !streams.is_empty() || frames > 0
    }

    /// Why this capture cannot prove that something is absent, if it cannot.
    pub fn incomplete(&self) -> Option<String> {
        let gaps: u64 = self.streams().iter().map(|s| s.gaps).sum();
        if self.frames.is_empty() {
            Some("nothing was captured".into())
        } else if self.drops + self.truncated + self.over_cap > 0 || gaps > 0 {
            Some(format!(
                "{} frames dropped, {} truncated, {} past the cap, {gaps} stream bytes missing",
                self.drops, self.truncated, self.over_cap
            ))
        } else {
            None
        }
    }

    /// `Ok` if the capture is complete and `needle` occurs nowhere in it: the proof
    /// that `what` crossed the segment in ciphertext only; otherwise why not.
    pub fn check_absent(&self, needle: &[u8], what: &str) -> Result<(), String> {
        if let Some(why) = self.incomplete() {
            return Err(format!(
                "cannot show that {what} is absent: the capture is incomplete ({why})"
            ));
        }
        let (streams, frames) = self.find(needle);
        if streams.is_empty() && frames == 0 {
            Ok(())
        } else {
            Err(format!(
                "{what} crossed the public segment in plaintext: {frames} frames, streams {streams:?}"
            ))
        }
    }

    /// Panics unless [`check_absent`](Self::check_absent) holds.
    pub fn assert_absent(&self, needle: &[u8], what: &str) {
        if let Err(e) = self.check_absent(needle, what) {
            panic!("{e}");
        }
    }

    /// Whether a connection from `from` to `to` opened with `marker` (a handshake's
    /// first line, e.g. `REG/2 ` or `P2P/2 `) and was answered `OK`: a secured link.
    pub fn secured(&self, from: Ipv4Addr, to: SocketAddrV4, marker: &[u8]) -> bool {
        let streams = self.streams();
        streams.iter().any(|s| {
            *s.src.ip() == from
                && s.dst == to
                && s.data.starts_with(marker)
                && streams
                    .iter()
                    .any(|r| r.src == s.dst && r.dst == s.src && r.data.starts_with(b"OK\n"))
        })
    }

    /// Panics unless `needle` occurs somewhere in the capture.
    pub fn assert_present(&self, needle: &[u8], what: &str) {
        assert!(
            self.contains(needle),
            "{what} is not in the capture ({} frames)",
            self.frames.len()
        );
    }
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
