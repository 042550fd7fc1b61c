//! T8 — the relay (`p2pcore::relay`, issue 12): a transfer relayed next to the same
//! transfer direct, in the same run, on 127.0.0.1.
//!
//! - **Relayed vs direct**: 256 MiB from a sender to a receiver over one TCP connection
//!   (direct), then through a relay in this process (both sides connect out to it with
//!   a token, as peers do, and the relay splices), writes of 256 KiB, the receiver
//!   reading into a 256 KiB buffer and discarding. Timed from the first write until the
//!   receiver sees the end of the stream. The relay runs with its rate limits off (its
//!   defaults, 16 MiB/s per circuit and 128 MiB/s in all, are an operator's choice, not
//!   its speed). Runs alternate direct, relayed (splice), relayed (copy loop) and, where
//!   `socat` is installed, socat as a relay (`TCP-LISTEN` → `TCP`), the usual tool.
//! - **CPU per GB**: the relay thread's user + system time (`/proc/self/task/*/stat`)
//!   over the relayed runs divided by the gigabytes it forwarded.
//! - **Memory per circuit**: this process's VmRSS with [`IDLE_CIRCUITS`] idle circuits
//!   open (each has carried a byte both ways) against none, divided by their number;
//!   and the descriptors each takes in the relay (two sockets, two pipes). The client
//!   ends of the circuits live in this process too (kernel memory, not VmRSS).
//!
//! - **A real download, relayed vs direct**: a 256 MiB file served by one peer and
//!   fetched by two others, one allowed only the direct path, one only the relay
//!   (`PathPolicy::Relay`), through the relay embedded in the registry (rate limits
//!   off); each download encrypted end to end, BLAKE3-verified, synced and renamed as
//!   in T1, and its reported path checked. On loopback a download is bounded by its
//!   encryption and the disk (T1, T7), so the relay's own cost shows best on raw bytes.

use crate::report::{Figure, Goal, Stats};
use crate::scratch::{self, mb_per_s};
use crate::{progress, sys, Options, Outcome};
use p2pcore::peer::{PathPolicy, Peer};
use p2pcore::reach::Path as LinkPath;
use p2pcore::registry::{EmbeddedRelay, Registry, RegistryConfig};
use p2pcore::relay::token::mint;
use p2pcore::relay::{Forwarding, Relay, RelayLimits, RelaySecret};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime};

const RUNS: usize = 5;
/// Bytes per transfer (the 256 MiB).
const TRANSFER: u64 = 256 * scratch::MIB;
const CHUNK: usize = 256 * 1024;
/// Idle circuits held open for the memory figure.
const IDLE_CIRCUITS: usize = 500;
/// Goal: relayed throughput at least this fraction of direct (issue 12).
const GOAL_RATIO: f64 = 0.7;
/// Any single wait longer than this means a stall.
const STEP_LIMIT: Duration = Duration::from_secs(30);

pub fn run(opts: &Options) -> Result<Outcome, String> {
    let _ = opts;
    let mut notes = Vec::new();
    let secret = RelaySecret::generate().map_err(|e| e.to_string())?;
    let unlimited = RelayLimits {
        circuit_bytes_per_sec: 0,
        total_bytes_per_sec: 0,
        max_circuits: IDLE_CIRCUITS + 16,
        max_circuits_per_addr: IDLE_CIRCUITS + 16,
        ..RelayLimits::default()
    };
    let start = |mode| {
        Relay::builder(secret.clone())
            .limits(unlimited.clone())
            .forwarding(mode)
            .bind("127.0.0.1:0")
            .map_err(|e| format!("relay: {e}"))
    };
    let splice = start(Forwarding::Splice)?;
    let copy = start(Forwarding::Copy)?;
    let socat = Socat::start();
    if socat.is_none() {
        notes.push("T8: socat is not installed; no socat baseline".into());
    }
    let source = scratch::noise_bytes(CHUNK, 0x7438);

    // One untimed round first: connections, pages and caches warmed for every path.
    transfer_direct(&source)?;
    transfer_relayed(&splice, &secret, &source)?;
    transfer_relayed(&copy, &secret, &source)?;
    if let Some(s) = &socat {
        s.transfer(&source)?;
    }
    let (mut direct, mut spliced, mut copied, mut socats) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut relay_cpu = 0.0;
    let mut relay_bytes = 0u64;
    for run in 1..=RUNS {
        direct.push(mb_per_s(TRANSFER, transfer_direct(&source)?));
        let cpu0 = relay_thread_cpu();
        let before = splice.stats().bytes_forwarded;
        spliced.push(mb_per_s(
            TRANSFER,
            transfer_relayed(&splice, &secret, &source)?,
        ));
        relay_cpu += relay_thread_cpu() - cpu0;
        relay_bytes += splice.stats().bytes_forwarded - before;
        copied.push(mb_per_s(
            TRANSFER,
            transfer_relayed(&copy, &secret, &source)?,
        ));
        if let Some(s) = &socat {
            socats.push(mb_per_s(TRANSFER, s.transfer(&source)?));
        }
        progress(&format!(
            "T8 run {run}/{RUNS}: direct {:.0} MB/s, relayed (splice) {:.0} MB/s, relayed \
             (copy) {:.0} MB/s{}",
            direct[run - 1],
            spliced[run - 1],
            copied[run - 1],
            socats
                .last()
                .map_or(String::new(), |s| format!(", socat {s:.0} MB/s"))
        ));
    }
    drop(copy);
    let direct = Stats::of(&direct);
    let mut figures = vec![
        Figure::compared(
            "T8 relayed transfer (splice) vs direct",
            "MB/s",
            Stats::of(&spliced),
            direct,
        )
        .goal(Goal::RatioAtLeast(GOAL_RATIO))
        .extra("256 MiB over 127.0.0.1, raw TCP; the relay in this process, rate limits off"),
        Figure::compared(
            "T8 relayed transfer (copy loop) vs direct",
            "MB/s",
            Stats::of(&copied),
            direct,
        )
        .extra("read/write through a 64 KiB buffer per direction (the non-Linux path)"),
    ];
    if !socats.is_empty() {
        figures.push(
            Figure::compared(
                "T8 relayed transfer (splice) vs socat relay",
                "MB/s",
                Stats::of(&spliced),
                Stats::of(&socats),
            )
            .extra("socat TCP-LISTEN -> TCP forwarding the same bytes"),
        );
    }
    let gb = relay_bytes as f64 / 1e9;
    figures.push(
        Figure::single(
            "T8 relay CPU per GB forwarded",
            "CPU s/GB",
            Stats::of(&[relay_cpu / gb]),
        )
        .extra(format!(
            "relay thread user+system time over {RUNS} relayed runs ({gb:.2} GB, splice)"
        )),
    );
    drop(socat);

    let (relayed_dl, direct_dl) = downloads(&unlimited)?;
    figures.push(
        Figure::compared(
            "T8 download 256 MiB, relayed vs direct",
            "MB/s",
            Stats::of(&relayed_dl),
            Stats::of(&direct_dl),
        )
        .goal(Goal::RatioAtLeast(GOAL_RATIO))
        .extra(
            "p2pchat peers: fetch() to wait(), encrypted P2P/2 link, verified, synced; \
             PathPolicy::Relay through the registry's embedded relay vs PathPolicy::Direct \
             (path checked each run), runs alternating",
        ),
    );

    let (kib, fds) = memory_per_circuit(&splice, &secret)?;
    figures.push(
        Figure::single("T8 relay memory per idle circuit", "KiB", Stats::of(&[kib])).extra(
            format!(
                "VmRSS with {IDLE_CIRCUITS} idle circuits open vs none; {fds:.1} descriptors \
             per circuit in the whole process (the relay's 2 sockets + 2 pipes = 6, the \
             clients' 2), one relay thread however many circuits"
            ),
        ),
    );
    Ok(Outcome { figures, notes })
}

/// Runs of a 256 MiB download through the relay and direct, alternating: MB/s each.
fn downloads(limits: &RelayLimits) -> Result<(Vec<f64>, Vec<f64>), String> {
    const FILE: &str = "t8.bin";
    let scratch = scratch::TempDir::new("t8")?;
    let share = scratch.subdir("share")?;
    let empty = scratch.subdir("empty")?;
    let dl_relay = scratch.subdir("dl-relay")?;
    let dl_direct = scratch.subdir("dl-direct")?;
    scratch::write_noise_file(&share.join(FILE), TRANSFER, 0x7438, true)
        .map_err(|e| format!("writing the shared file: {e}"))?;
    let registry = Registry::builder()
        .config(RegistryConfig {
            embedded_relay: Some(EmbeddedRelay {
                port: 0,
                limits: limits.clone(),
                any_port_if_taken: true,
            }),
            ..scratch::one_address_config()
        })
        .bind("127.0.0.1:0")
        .map_err(|e| format!("registry: {e}"))?;
    let reg = registry.local_addr().to_string();
    let connect = |name: &str, dir: &std::path::Path, dl: &std::path::Path, policy| {
        scratch::peer(&reg, name, dir)
            .download_dir(dl)
            .path_policy(policy)
            .connect()
            .map_err(|e| format!("peer {name}: {e}"))
    };
    let server = connect("t8-server", &share, &dl_direct, PathPolicy::Auto)?;
    let via_relay = connect("t8-relayed", &empty, &dl_relay, PathPolicy::Relay)?;
    let direct = connect("t8-direct", &empty, &dl_direct, PathPolicy::Direct)?;
    let result = (|| -> Result<(Vec<f64>, Vec<f64>), String> {
        let (mut r, mut d) = (Vec::new(), Vec::new());
        for run in 1..=3 {
            let rs = download(&via_relay, server.username(), FILE, LinkPath::Relayed)?;
            scratch::empty_dir(&dl_relay)?;
            let ds = download(&direct, server.username(), FILE, LinkPath::Direct)?;
            scratch::empty_dir(&dl_direct)?;
            r.push(mb_per_s(TRANSFER, rs));
            d.push(mb_per_s(TRANSFER, ds));
            progress(&format!(
                "T8 download run {run}/3: relayed {:.0} MB/s, direct {:.0} MB/s",
                r[run - 1],
                d[run - 1]
            ));
        }
        Ok((r, d))
    })();
    via_relay.exit();
    direct.exit();
    server.exit();
    registry.shutdown();
    result
}

/// One timed download that must take `path`; seconds.
fn download(peer: &Peer, from: &str, file: &str, path: LinkPath) -> Result<f64, String> {
    let t = Instant::now();
    let transfer = peer.fetch(from, file).map_err(|e| format!("fetch: {e}"))?;
    match transfer.wait_timeout(Duration::from_secs(120)) {
        Some(Ok(_)) => {}
        Some(Err(e)) => return Err(format!("download ({path:?}): {e}")),
        None => {
            transfer.cancel();
            return Err(format!("download ({path:?}) not done within 120 s"));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    if transfer.path() != path || !transfer.is_encrypted() {
        return Err(format!(
            "the download took the {:?} path (encrypted: {}), not {path:?}",
            transfer.path(),
            transfer.is_encrypted()
        ));
    }
    Ok(secs)
}

/// CPU seconds of the relay threads (all relays here are named `p2p-relay`).
fn relay_thread_cpu() -> f64 {
    sys::threads_cpu(&|name| name == "p2p-relay").map_or(0.0, |(s, _)| s)
}

/// Sends [`TRANSFER`] bytes on `out` and reads them on `input` until its end; seconds.
fn timed(mut out: TcpStream, mut input: TcpStream, source: &[u8]) -> Result<f64, String> {
    for s in [&out, &input] {
        s.set_read_timeout(Some(STEP_LIMIT))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(STEP_LIMIT))
            .map_err(|e| e.to_string())?;
    }
    let t0 = Instant::now();
    let chunk = source.to_vec();
    let sender = std::thread::spawn(move || -> Result<(), String> {
        let mut left = TRANSFER;
        while left > 0 {
            let n = (left as usize).min(chunk.len());
            out.write_all(&chunk[..n])
                .map_err(|e| format!("send: {e}"))?;
            left -= n as u64;
        }
        out.shutdown(Shutdown::Write).map_err(|e| e.to_string())
    });
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    sender.join().map_err(|_| "sender panicked".to_string())??;
    if got != TRANSFER {
        return Err(format!("received {got} bytes of {TRANSFER}"));
    }
    Ok(secs)
}

fn transfer_direct(source: &[u8]) -> Result<f64, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let out = TcpStream::connect(listener.local_addr().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let (input, _) = listener.accept().map_err(|e| e.to_string())?;
    timed(out, input, source)
}

/// Both sides connect to the relay with one token and read `OK relayed`.
fn relayed_pair(relay: SocketAddr, secret: &RelaySecret) -> Result<(TcpStream, TcpStream), String> {
    let token =
        mint(secret, SystemTime::now(), Duration::from_secs(600)).map_err(|e| e.to_string())?;
    let open = || -> Result<TcpStream, String> {
        let mut s = TcpStream::connect(relay).map_err(|e| format!("connect relay: {e}"))?;
        s.set_read_timeout(Some(STEP_LIMIT))
            .map_err(|e| e.to_string())?;
        s.write_all(format!("RELAY/1 {token}\n").as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(s)
    };
    let (mut a, mut b) = (open()?, open()?);
    for s in [&mut a, &mut b] {
        let mut answer = [0u8; 11];
        s.read_exact(&mut answer)
            .map_err(|e| format!("relay answer: {e}"))?;
        if &answer != b"OK relayed\n" {
            return Err(format!(
                "relay answered {:?}",
                String::from_utf8_lossy(&answer)
            ));
        }
    }
    Ok((a, b))
}

fn transfer_relayed(relay: &Relay, secret: &RelaySecret, source: &[u8]) -> Result<f64, String> {
    let (a, b) = relayed_pair(relay.local_addr(), secret)?;
    timed(a, b, source)
}

fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// KiB of VmRSS and descriptors per idle circuit.
fn memory_per_circuit(relay: &Relay, secret: &RelaySecret) -> Result<(f64, f64), String> {
    let limit = sys::raise_nofile((IDLE_CIRCUITS * 10 + 256) as u64)?;
    if limit.soft < (IDLE_CIRCUITS * 9) as u64 {
        return Err(format!(
            "{} descriptors allowed; {IDLE_CIRCUITS} circuits need {}",
            limit.soft,
            IDLE_CIRCUITS * 9
        ));
    }
    sys::trim_heap();
    let rss0 = sys::rss().ok_or("no VmRSS")?;
    let fds0 = count_fds();
    let mut pairs = Vec::with_capacity(IDLE_CIRCUITS);
    for _ in 0..IDLE_CIRCUITS {
        let (mut a, mut b) = relayed_pair(relay.local_addr(), secret)?;
        let mut byte = [0u8; 1];
        a.write_all(b"x").map_err(|e| e.to_string())?;
        b.read_exact(&mut byte).map_err(|e| e.to_string())?;
        b.write_all(b"y").map_err(|e| e.to_string())?;
        a.read_exact(&mut byte).map_err(|e| e.to_string())?;
        pairs.push((a, b));
    }
    let rss1 = sys::rss().ok_or("no VmRSS")?;
    let fds = (count_fds() - fds0) as f64 / IDLE_CIRCUITS as f64;
    let kib = rss1.saturating_sub(rss0) as f64 / 1024.0 / IDLE_CIRCUITS as f64;
    drop(pairs);
    Ok((kib, fds))
}

/// `socat TCP-LISTEN:<port>,reuseaddr,fork TCP:<receiver>`: the everyday relay, as a
/// baseline. `None` when socat is not installed.
struct Socat {
    child: std::process::Child,
    port: u16,
    receiver: TcpListener,
}

impl Socat {
    fn start() -> Option<Socat> {
        let receiver = TcpListener::bind("127.0.0.1:0").ok()?;
        let target = receiver.local_addr().ok()?;
        // A free port for socat to listen on (bound and released: a small race, fine
        // for a benchmark).
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = std::process::Command::new("socat")
            .args([
                "-b",
                &CHUNK.to_string(),
                &format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"),
                &format!("TCP:{target}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // That probe connection made socat dial the receiver once: take it and let it go.
        let _ = receiver.accept();
        Some(Socat {
            child,
            port,
            receiver,
        })
    }

    fn transfer(&self, source: &[u8]) -> Result<f64, String> {
        let out = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        let (input, _) = self.receiver.accept().map_err(|e| e.to_string())?;
        timed(out, input, source)
    }
}

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
