//! Downloading from hostile serving peers, over loopback with fake peers: announcements
//! too big for the disk or the configured maximum, a sender that trickles, stale partial
//! files, and partial files that another peer's answer must not destroy.

mod common;

use common::{fake_peer, pattern, FakeConn, FakePeer};
use p2pcore::peer::{Peer, PeerLimits};
use p2pcore::registry::Registry;
use p2pcore::transfer::partial_path;
use p2pcore::{Error, ErrorCode};
use parking_lot::Mutex;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tempfile::TempDir;

/// Longest any download here may take before the test calls it hung.
const WAIT: Duration = Duration::from_secs(20);
const TB: u64 = 1 << 40;

fn hex(content: &[u8]) -> String {
    blake3::hash(content).to_hex().to_string()
}

/// Bob downloads into `dir`; he shares an empty directory of his own, so nothing but
/// downloads ever lands in `dir`.
fn bob(registry: SocketAddr, dir: &Path, limits: PeerLimits) -> (Peer, TempDir) {
    let share = TempDir::new().unwrap();
    let peer = common::peer_builder(&registry.to_string(), "bob", share.path())
        .listen_ip("127.0.0.1".parse().unwrap())
        .download_dir(dir)
        .limits(limits)
        .connect()
        .unwrap();
    (peer, share)
}

/// Fetch `file` from `from` and wait for the outcome (a hang fails the test).
fn fetch(peer: &Peer, from: &str, file: &str) -> Result<PathBuf, Error> {
    let t = peer.fetch(from, file).unwrap();
    match t.wait_timeout(WAIT) {
        Some(r) => r,
        None => {
            t.cancel();
            panic!("fetch of {file} from {from} still running after {WAIT:?}");
        }
    }
}

/// Everything in `dir`, hidden files included, with sizes.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let len = e.metadata().unwrap().len();
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect();
    v.sort();
    v
}

/// Answers a file request honestly: `OK size hash` and the bytes from the asked offset.
fn serve_honestly(mut c: FakeConn<'_>, content: &[u8]) {
    let off = c.offset() as usize;
    if off > content.len() {
        let _ = c.stream.write_all(b"ERR bad-offset past the end\n");
        return;
    }
    let _ = writeln!(c.stream, "OK {} {}", content.len(), hex(content));
    let _ = c.stream.write_all(&content[off..]);
}

/// A fake peer serving `content` honestly to every request.
fn honest(registry: SocketAddr, name: &str, content: Vec<u8>) -> FakePeer {
    fake_peer(registry, name, move |c| serve_honestly(c, &content))
}

/// A fake peer whose first answer announces `content` but breaks off after `cut` bytes;
/// later requests are served honestly (from whatever `content` holds then). The offsets
/// asked for are recorded.
fn breaks_off_once(
    registry: SocketAddr,
    name: &str,
    content: Arc<Mutex<Vec<u8>>>,
    cut: usize,
) -> (FakePeer, Arc<Mutex<Vec<u64>>>) {
    let offsets = Arc::new(Mutex::new(Vec::new()));
    let seen = offsets.clone();
    let fake = fake_peer(registry, name, move |mut c| {
        seen.lock().push(c.offset());
        let content = content.lock().clone();
        if c.n == 0 {
            let _ = writeln!(c.stream, "OK {} {}", content.len(), hex(&content));
            let _ = c.stream.write_all(&content[..cut]);
        } else {
            serve_honestly(c, &content);
        }
    });
    (fake, offsets)
}

fn partial_and_record(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let part = partial_path(dir, name);
    let file = part.file_name().unwrap().to_str().unwrap();
    let record = part.with_file_name(file.replace(".p2pchat-part", ".p2pchat-orig"));
    (part, record)
}

#[test]
fn a_terabyte_announcement_is_refused_before_any_byte_is_written() {
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let free = p2pcore::transfer::free_space(dir.path()).unwrap();
    // 1 TiB, or more where a disk that big is free (the point is "more than fits").
    let announced = if free < TB {
        TB
    } else {
        free.saturating_mul(2)
    };
    // Announces 1 TiB and pours zeros (at most 64 MiB) for as long as it is read.
    let _mallory = fake_peer(registry.local_addr(), "mallory", move |mut c| {
        let _ = writeln!(c.stream, "OK {announced} {}", hex(b"anything"));
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..64 {
            if c.stopping() || c.stream.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let content = pattern(100_000, 1);
    let _alice = honest(registry.local_addr(), "alice", content.clone());
    let (bob, _share) = bob(registry.local_addr(), dir.path(), PeerLimits::default());

    let started = Instant::now();
    let err = fetch(&bob, "mallory", "x.bin").unwrap_err();
    let written: u64 = listing(dir.path()).iter().map(|(_, l)| l).sum();
    eprintln!(
        "1 TiB announcement: refused after {:?}, {written} bytes written: {err}",
        started.elapsed()
    );
    assert_eq!(err.code(), ErrorCode::TooLarge, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("needing {announced} more bytes"))
            && text.contains("nothing was written"),
        "{text}"
    );
    assert!(matches!(err, Error::NoSpace { .. }), "{err:?}");
    assert_eq!(listing(dir.path()), vec![], "no partial file, no record");

    // An honest download of the same name goes through right after.
    let path = fetch(&bob, "alice", "x.bin").unwrap();
    assert!(std::fs::read(path).unwrap() == content);
    assert_eq!(listing(dir.path()), vec![("x.bin".into(), 100_000)]);
}

#[test]
fn a_file_over_the_maximum_download_size_is_refused_before_any_byte_is_written() {
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let limit = 64 * 1024;
    let _mallory = honest(registry.local_addr(), "mallory", pattern(limit + 1, 2));
    let exact = pattern(limit, 3);
    let _alice = honest(registry.local_addr(), "alice", exact.clone());
    let limits = PeerLimits {
        max_download_size: Some(limit as u64),
        ..PeerLimits::default()
    };
    let (bob, _share) = bob(registry.local_addr(), dir.path(), limits);

    let err = fetch(&bob, "mallory", "x.bin").unwrap_err();
    assert_eq!(err.code(), ErrorCode::TooLarge, "{err}");
    assert!(matches!(err, Error::DownloadTooLarge { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "of {} bytes, over the maximum download size of {limit}",
            limit + 1
        )),
        "{text}"
    );
    assert_eq!(listing(dir.path()), vec![]);

    // Exactly the maximum is fine.
    let path = fetch(&bob, "alice", "x.bin").unwrap();
    assert!(std::fs::read(path).unwrap() == exact);
}

#[test]
fn a_trickling_sender_is_abandoned_after_the_rate_window_and_the_partial_resumes() {
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let content = pattern(200_000, 4);
    let burst = 1000;
    let served = content.clone();
    // First connection: 1000 bytes, then one byte every 100 ms (10 bytes/s) for up to
    // 30 s. Later ones: honest.
    let mallory = fake_peer(registry.local_addr(), "mallory", move |mut c| {
        if c.n > 0 {
            return serve_honestly(c, &served);
        }
        let _ = writeln!(c.stream, "OK {} {}", served.len(), hex(&served));
        let _ = c.stream.write_all(&served[..burst]);
        let end = Instant::now() + Duration::from_secs(30);
        let mut at = burst;
        while Instant::now() < end && !c.stopping() {
            std::thread::sleep(Duration::from_millis(100));
            if c.stream.write_all(&served[at..at + 1]).is_err() {
                break;
            }
            at += 1;
        }
    });
    let window = Duration::from_secs(2);
    let limits = PeerLimits {
        min_transfer_rate: 1024,
        min_rate_window: window,
        ..PeerLimits::default()
    };
    let (bob, _share) = bob(registry.local_addr(), dir.path(), limits);

    let started = Instant::now();
    let t = bob.fetch("mallory", "x.bin").unwrap();
    let outcome = t.wait_timeout(window + Duration::from_secs(8));
    let took = started.elapsed();
    let Some(outcome) = outcome else {
        t.cancel();
        panic!("a sender at 10 bytes/s was not abandoned within the window + 8 s");
    };
    let err = outcome.unwrap_err();
    eprintln!("trickler abandoned after {took:?}: {err}");
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    assert!(
        err.to_string()
            .contains("under the minimum rate of 1024 bytes/s"),
        "{err}"
    );
    assert!(took >= window, "judged over the whole window: {took:?}");
    let (part, _) = partial_and_record(dir.path(), "x.bin");
    let kept = std::fs::read(&part).unwrap();
    assert!(kept.len() >= burst, "{}", kept.len());
    assert!(
        kept[..] == content[..kept.len()],
        "the partial is the file's prefix"
    );

    // The next fetch resumes from the partial and verifies.
    let path = fetch(&bob, "mallory", "x.bin").unwrap();
    assert!(std::fs::read(path).unwrap() == content);
    assert!(!part.exists());
    drop(mallory);
}

#[test]
fn stale_partials_are_removed_at_start_and_fresh_or_locked_ones_kept() {
    use std::os::unix::io::AsRawFd;
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    let share = TempDir::new().unwrap();
    let dl = TempDir::new().unwrap();
    let d = dl.path();
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    let make = |name: &str, old: bool| {
        let path = d.join(name);
        let f = std::fs::File::create(&path).unwrap();
        f.write_all_at(b"some bytes", 0).unwrap();
        if old {
            f.set_modified(two_hours_ago).unwrap();
        }
        f
    };
    use std::os::unix::fs::FileExt;
    make(".old.bin.p2pchat-part", true);
    make(".old.bin.p2pchat-orig", true);
    make(".orphan.bin.p2pchat-orig", true);
    make(".fresh.bin.p2pchat-part", false);
    make(".fresh.bin.p2pchat-orig", true); // its partial is fresh: kept with it
    make("old.txt", true); // not a partial download
    make(".notes", true);
    let busy = make(".busy.bin.p2pchat-part", true);
    // As a running download (in this or another process) holds it.
    assert_eq!(
        unsafe { libc::flock(busy.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );

    let limits = PeerLimits {
        stale_partial_age: Some(Duration::from_secs(3600)),
        ..PeerLimits::default()
    };
    let peer = common::peer_builder(&registry.local_addr().to_string(), "bob", share.path())
        .listen_ip("127.0.0.1".parse().unwrap())
        .download_dir(d)
        .limits(limits)
        .connect()
        .unwrap();
    let names: Vec<String> = listing(d).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            ".busy.bin.p2pchat-part",
            ".fresh.bin.p2pchat-orig",
            ".fresh.bin.p2pchat-part",
            ".notes",
            "old.txt"
        ]
    );
    drop(peer);
    drop(busy);

    // `None` keeps everything.
    make(".old.bin.p2pchat-part", true);
    let peer = common::peer_builder(&registry.local_addr().to_string(), "bob", share.path())
        .listen_ip("127.0.0.1".parse().unwrap())
        .download_dir(d)
        .limits(PeerLimits {
            stale_partial_age: None,
            ..PeerLimits::default()
        })
        .connect()
        .unwrap();
    assert!(d.join(".old.bin.p2pchat-part").exists());
    drop(peer);
}

#[test]
fn bad_offset_from_another_peer_keeps_the_partial_and_the_origin_resumes_it() {
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let content = pattern(300_000, 5);
    let half = 150_000;
    let (_alice, offsets) = breaks_off_once(
        registry.local_addr(),
        "alice",
        Arc::new(Mutex::new(content.clone())),
        half,
    );
    // Mallory's x.bin is shorter: "bad-offset" for any resume, a different file from 0.
    let other = pattern(1000, 6);
    let _mallory = fake_peer(registry.local_addr(), "mallory", move |c| {
        serve_honestly(c, &other)
    });
    let (bob, _share) = bob(registry.local_addr(), dir.path(), PeerLimits::default());

    let err = fetch(&bob, "alice", "x.bin").unwrap_err();
    assert_eq!(err.code(), ErrorCode::Closed, "{err}");
    let (part, record) = partial_and_record(dir.path(), "x.bin");
    let before = std::fs::read(&part).unwrap();
    assert!(before[..] == content[..half]);
    let record_before = std::fs::read_to_string(&record).unwrap();
    assert!(record_before.contains("peer alice\n"), "{record_before}");
    assert!(record_before.contains(&hex(&content)), "{record_before}");

    let err = fetch(&bob, "mallory", "x.bin").unwrap_err();
    assert_eq!(err.code(), ErrorCode::AlreadyExists, "{err}");
    assert!(matches!(&err, Error::PartialConflict { origin, .. } if origin == "alice"));
    assert!(
        err.to_string()
            .contains("than the partial download from alice kept in"),
        "{err}"
    );
    assert!(std::fs::read(&part).unwrap() == before, "byte-identical");
    assert_eq!(std::fs::read_to_string(&record).unwrap(), record_before);

    let path = fetch(&bob, "alice", "x.bin").unwrap();
    assert!(std::fs::read(path).unwrap() == content);
    assert_eq!(*offsets.lock(), [0, half as u64], "resumed, not restarted");
    assert!(!part.exists() && !record.exists());
}

#[test]
fn a_different_file_from_another_peer_is_refused_and_from_the_origin_restarts() {
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let first = pattern(200_000, 7);
    let half = 100_000;
    let alices = Arc::new(Mutex::new(first.clone()));
    let (_alice, offsets) = breaks_off_once(registry.local_addr(), "alice", alices.clone(), half);
    // Mallory has a longer, different x.bin: she would happily append to the partial.
    let hers = pattern(400_000, 8);
    let _mallory = honest(registry.local_addr(), "mallory", hers);
    let (bob, _share) = bob(registry.local_addr(), dir.path(), PeerLimits::default());

    fetch(&bob, "alice", "x.bin").unwrap_err();
    let (part, _) = partial_and_record(dir.path(), "x.bin");
    let before = std::fs::read(&part).unwrap();
    assert_eq!(before.len(), half);

    let err = fetch(&bob, "mallory", "x.bin").unwrap_err();
    assert!(matches!(err, Error::PartialConflict { .. }), "{err:?}");
    assert!(std::fs::read(&part).unwrap() == before, "nothing appended");

    // Alice replaced her x.bin: the partial's bytes belong to a file that no longer
    // exists at its origin, so the download starts over from 0.
    let second = pattern(120_000, 9);
    *alices.lock() = second.clone();
    let path = fetch(&bob, "alice", "x.bin").unwrap();
    assert!(std::fs::read(path).unwrap() == second);
    assert_eq!(*offsets.lock(), [0, half as u64, 0]);
}

#[test]
fn bad_offset_from_the_origin_itself_restarts_from_zero() {
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let half = 100_000;
    let alices = Arc::new(Mutex::new(pattern(200_000, 13)));
    let (_alice, offsets) = breaks_off_once(registry.local_addr(), "alice", alices.clone(), half);
    let (bob, _share) = bob(registry.local_addr(), dir.path(), PeerLimits::default());
    fetch(&bob, "alice", "x.bin").unwrap_err();

    // Alice's x.bin is now shorter than the partial: "bad-offset", then asked from 0
    // (to learn which file she has), a different one: her old file is gone, so restart.
    let shorter = pattern(30_000, 14);
    *alices.lock() = shorter.clone();
    let path = fetch(&bob, "alice", "x.bin").unwrap();
    assert!(std::fs::read(path).unwrap() == shorter);
    assert_eq!(*offsets.lock(), [0, half as u64, 0]);
}

#[test]
fn bytes_from_another_peer_with_the_same_hash_never_cost_the_origins_bytes() {
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let content = pattern(200_000, 10);
    let half = 100_000;
    let (_alice, offsets) = breaks_off_once(
        registry.local_addr(),
        "alice",
        Arc::new(Mutex::new(content.clone())),
        half,
    );
    // Mallory announces alice's file (same size and hash) and sends garbage: all of it
    // the first time, then 20,000 bytes of it before closing.
    let announced = content.clone();
    let _mallory = fake_peer(registry.local_addr(), "mallory", move |mut c| {
        let _ = writeln!(c.stream, "OK {} {}", announced.len(), hex(&announced));
        let rest = announced.len() - c.offset() as usize;
        let n = if c.n == 0 { rest } else { 20_000 };
        let _ = c.stream.write_all(&vec![0xEE; n]);
    });
    let (bob, _share) = bob(registry.local_addr(), dir.path(), PeerLimits::default());

    fetch(&bob, "alice", "x.bin").unwrap_err();
    let (part, record) = partial_and_record(dir.path(), "x.bin");
    let before = std::fs::read(&part).unwrap();
    let record_before = std::fs::read_to_string(&record).unwrap();

    // The hash check fails on mallory's bytes: only they go.
    let err = fetch(&bob, "mallory", "x.bin").unwrap_err();
    assert_eq!(err.code(), ErrorCode::HashMismatch, "{err}");
    assert!(
        std::fs::read(&part).unwrap() == before,
        "alice's bytes kept"
    );
    assert_eq!(std::fs::read_to_string(&record).unwrap(), record_before);

    // Mallory appends garbage and stops; the failure shows only when alice finishes
    // the file: then too only the bytes from mallory on go, not alice's.
    let err = fetch(&bob, "mallory", "x.bin").unwrap_err();
    assert_eq!(err.code(), ErrorCode::Closed, "{err}");
    let noted = std::fs::read_to_string(&record).unwrap();
    assert!(noted.ends_with(&format!("others-from {half}\n")), "{noted}");
    let err = fetch(&bob, "alice", "x.bin").unwrap_err();
    assert_eq!(err.code(), ErrorCode::HashMismatch, "{err}");
    assert!(
        std::fs::read(&part).unwrap() == before,
        "alice's bytes kept"
    );

    let path = fetch(&bob, "alice", "x.bin").unwrap();
    assert!(std::fs::read(path).unwrap() == content);
    let resumed = half as u64;
    assert_eq!(
        *offsets.lock(),
        [0, resumed + 20_000, resumed],
        "alice resumed twice, never restarted"
    );
}

#[test]
fn a_partial_without_an_origin_record_is_never_deleted_on_bad_offset() {
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    // As an older p2pchat left it: no record next to it.
    let old = pattern(5000, 11);
    let part = partial_path(dir.path(), "x.bin");
    std::fs::write(&part, &old).unwrap();
    let _mallory = honest(registry.local_addr(), "mallory", pattern(1000, 12));
    let (bob, _share) = bob(registry.local_addr(), dir.path(), PeerLimits::default());

    let err = fetch(&bob, "mallory", "x.bin").unwrap_err();
    assert!(
        matches!(&err, Error::PartialConflict { origin, .. } if origin == "an unrecorded peer"),
        "{err:?}"
    );
    assert!(std::fs::read(&part).unwrap() == old);
    assert_eq!(listing(dir.path()).len(), 1, "no record written either");
}

#[test]
fn an_answer_line_that_trickles_in_is_given_up_at_the_io_timeout() {
    let registry = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let content = pattern(1000, 15);
    let answer = format!("OK {} {}\n", content.len(), hex(&content));
    // One byte of the answer line every 200 ms: ~15 s for the line, each read quick.
    let _mallory = fake_peer(registry.local_addr(), "mallory", move |mut c| {
        for b in answer.bytes() {
            std::thread::sleep(Duration::from_millis(200));
            if c.stopping() || c.stream.write_all(&[b]).is_err() {
                return;
            }
        }
        let _ = c.stream.write_all(&content);
    });
    let share = TempDir::new().unwrap();
    let io_timeout = Duration::from_secs(2);
    let bob = common::peer_builder(&registry.local_addr().to_string(), "bob", share.path())
        .listen_ip("127.0.0.1".parse().unwrap())
        .download_dir(dir.path())
        .io_timeout(io_timeout)
        .connect()
        .unwrap();
    let started = Instant::now();
    let t = bob.fetch("mallory", "x.bin").unwrap();
    let Some(outcome) = t.wait_timeout(io_timeout + Duration::from_secs(8)) else {
        t.cancel();
        panic!("a trickled answer line held the download past the timeout + 8 s");
    };
    let err = outcome.unwrap_err();
    eprintln!(
        "trickled answer line given up after {:?}",
        started.elapsed()
    );
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    assert!(
        err.to_string()
            .contains("mallory did not answer the file request within 2.0 s"),
        "{err}"
    );
    assert_eq!(listing(dir.path()), vec![]);
}
