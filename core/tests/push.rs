//! File push over real sockets: a user offers a file (`Peer::offer_file`), the other
//! side accepts (into a directory of its choice), declines or lets the offer expire;
//! an accepted file is verified against the offered hash and resumed after a cut-off;
//! pending offers are capped; plaintext and oversized offers are refused before anyone
//! is asked.

mod common;

use common::{pattern, peer_builder, wait_until};
use p2pcore::peer::{Event, FileOffer, Peer, PeerEvent, PeerLimits, Transfer};
use p2pcore::registry::Registry;
use p2pcore::ErrorCode;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);

fn builder(registry: SocketAddr, name: &str, dir: &TempDir) -> p2pcore::peer::PeerBuilder {
    let share = dir.path().join(name);
    std::fs::create_dir_all(&share).unwrap();
    peer_builder(&registry.to_string(), name, &share).listen_ip("127.0.0.1".parse().unwrap())
}

/// The next event other than background ones.
fn next(peer: &Peer) -> Event {
    loop {
        match peer.next_event(Some(WAIT)).expect("an event within 10 s") {
            Event::Peer(_) => continue,
            e => return e,
        }
    }
}

fn next_offer(peer: &Peer) -> FileOffer {
    loop {
        match next(peer) {
            Event::FileOffered(o) => return o,
            Event::TransferDone { .. }
            | Event::TransferFailed { .. }
            | Event::TransferProgress { .. } => continue,
            other => panic!("expected a file offer, got {other:?}"),
        }
    }
}

/// `offer_file` on its own thread (it blocks until the answer).
fn offer_in_background(
    peer: &Arc<Peer>,
    user: &str,
    path: &Path,
) -> std::thread::JoinHandle<p2pcore::Result<Transfer>> {
    let (peer, user, path) = (peer.clone(), user.to_string(), path.to_path_buf());
    std::thread::spawn(move || peer.offer_file(&user, &path))
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Event mode: the offer arrives as an event with name, size, hash and a verified
/// sender; accepted into another directory, the file lands there verified, the
/// receiver's transfer reports done, the sender's outgoing transfer ends once the
/// receiver confirmed, and no partial file is left.
#[test]
fn offer_accepted_from_the_event_queue() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let alice = Arc::new(builder(r.local_addr(), "alice", &dir).connect().unwrap());
    let bob = builder(r.local_addr(), "bob", &dir)
        .event_queue(16)
        .connect()
        .unwrap();
    let dest = dir.path().join("inbox");
    std::fs::create_dir(&dest).unwrap();
    let data = pattern(3 * 1024 * 1024 + 17, 1);
    let src = write_file(dir.path(), "report final.pdf", &data);

    let sending = offer_in_background(&alice, "bob", &src);
    let offer = next_offer(&bob);
    assert_eq!(offer.from(), "alice");
    assert_eq!(offer.name(), "report final.pdf");
    assert_eq!(offer.size(), data.len() as u64);
    assert_eq!(offer.hash(), blake3::hash(&data).to_hex().as_str());
    assert!(offer.is_verified());
    assert_eq!(offer.key(), Some(alice.public_key()));
    assert_eq!(bob.file_offers().len(), 1);

    let incoming = bob.accept_offer(offer.id(), Some(&dest)).unwrap();
    assert!(!incoming.is_outgoing());
    assert_eq!(incoming.from(), "alice");
    let outgoing = sending.join().unwrap().unwrap();
    assert!(outgoing.is_outgoing());
    assert_eq!(outgoing.from(), "bob");
    assert_eq!(outgoing.wait().unwrap(), src);
    let got = incoming.wait().unwrap();
    assert_eq!(got, dest.join("report final.pdf"));
    assert_eq!(std::fs::read(&got).unwrap(), data);
    assert_eq!(outgoing.progress(), (data.len() as u64, data.len() as u64));
    assert_eq!(names_in(&dest), vec!["report final.pdf".to_string()]);
    assert!(bob.file_offers().is_empty());
    // The receiving transfer's end comes as an event.
    loop {
        match next(&bob) {
            Event::TransferDone { transfer, path } => {
                assert_eq!((transfer, path), (incoming.id(), got.clone()));
                break;
            }
            Event::TransferProgress { transfer, .. } => assert_eq!(transfer, incoming.id()),
            other => panic!("expected the transfer's end, got {other:?}"),
        }
    }
    // Answered: the id is no longer pending.
    let again = bob.accept_offer(offer.id(), None).unwrap_err();
    assert_eq!(again.code(), ErrorCode::InvalidArgument);
    assert!(!bob.decline_offer(offer.id()));
}

/// Hook mode: a hook that accepts one name and declines another; the declined sender
/// gets `OfferDeclined` and nothing is written; a peer taking no files declines at once.
#[test]
fn hook_accepts_and_declines() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let alice = Arc::new(builder(r.local_addr(), "alice", &dir).connect().unwrap());
    let accepted: Arc<Mutex<Vec<Transfer>>> = Arc::default();
    let list = accepted.clone();
    let bob = builder(r.local_addr(), "bob", &dir)
        .on_file_offer(move |offer| {
            if offer.name() == "yes.bin" {
                list.lock().unwrap().push(offer.accept().unwrap());
            } else {
                assert!(offer.decline());
                assert!(!offer.decline(), "answered twice");
            }
        })
        .connect()
        .unwrap();
    let carol = builder(r.local_addr(), "carol", &dir).connect().unwrap();

    let data = pattern(200_000, 2);
    let yes = write_file(dir.path(), "yes.bin", &data);
    let no = write_file(dir.path(), "no.bin", &data);
    let sent = alice.offer_file("bob", &yes).unwrap();
    assert_eq!(sent.wait().unwrap(), yes);
    let received = accepted.lock().unwrap()[0].wait().unwrap();
    assert_eq!(received, bob.download_dir().join("yes.bin"));
    assert_eq!(std::fs::read(&received).unwrap(), data);

    let e = alice.offer_file("bob", &no).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Declined, "{e}");
    assert_eq!(e.to_string(), "bob declined the file \"no.bin\"");
    assert!(!bob.download_dir().join("no.bin").exists());
    assert_eq!(names_in(bob.download_dir()), vec!["yes.bin".to_string()]);

    let e = alice.offer_file("carol", &no).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Declined, "{e}");
    assert!(names_in(carol.download_dir()).is_empty());
}

/// An offer nobody answers expires after the receiver's answer timeout: the sender
/// gets a timeout (not a decline), the receiver a `FileOfferExpired` event, and the
/// offer can no longer be accepted.
#[test]
fn unanswered_offer_expires() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let alice = Arc::new(builder(r.local_addr(), "alice", &dir).connect().unwrap());
    let bob = builder(r.local_addr(), "bob", &dir)
        .chat_answer_timeout(Duration::from_secs(1))
        .event_queue(16)
        .connect()
        .unwrap();
    let src = write_file(dir.path(), "late.txt", b"too late");
    let sending = offer_in_background(&alice, "bob", &src);
    let offer = next_offer(&bob);
    let e = sending.join().unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    assert!(
        e.to_string().contains("did not answer the file offer"),
        "{e}"
    );
    let expired = wait_until(WAIT, || {
        matches!(
            bob.next_event(Some(Duration::from_millis(100))),
            Some(Event::Peer(PeerEvent::FileOfferExpired { ref from, ref file }))
                if from == "alice" && file == "late.txt"
        )
    });
    assert!(expired, "no FileOfferExpired event");
    assert!(!offer.is_pending());
    assert_eq!(offer.accept().unwrap_err().code(), ErrorCode::Timeout);
    assert_eq!(
        bob.accept_offer(offer.id(), None).unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    assert!(!bob.download_dir().join("late.txt").exists());
}

/// A receiving transfer cut off midway keeps its partial file; the same file offered
/// again is resumed from there (`OK <offset>`), and the result is verified whole.
#[test]
fn cut_off_push_resumes() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let alice = Arc::new(builder(r.local_addr(), "alice", &dir).connect().unwrap());
    let bob = builder(r.local_addr(), "bob", &dir)
        .event_queue(64)
        .connect()
        .unwrap();
    let data = pattern(32 * 1024 * 1024, 3);
    let src = write_file(dir.path(), "big.bin", &data);

    let sending = offer_in_background(&alice, "bob", &src);
    let offer = next_offer(&bob);
    let t = offer.accept().unwrap();
    assert!(
        wait_until(WAIT, || t.progress().0 >= data.len() as u64 / 4
            || t.is_finished()),
        "no progress"
    );
    // Cut off once a quarter has arrived.
    t.cancel();
    assert_eq!(t.wait().unwrap_err().code(), ErrorCode::Cancelled);
    let out = sending.join().unwrap().unwrap();
    assert!(out.wait().is_err(), "the sender saw the file delivered");
    // The partial file itself (next to it lies its origin record).
    let partial = p2pcore::transfer::partial_path(bob.download_dir(), "big.bin");
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(
        kept > 0 && kept < data.len() as u64,
        "partial of {kept} bytes"
    );
    assert!(!bob.download_dir().join("big.bin").exists());

    let sending = offer_in_background(&alice, "bob", &src);
    let offer = next_offer(&bob);
    let t = offer.accept().unwrap();
    assert!(t.progress().0 >= kept, "resumed from {:?}", t.progress());
    let out = sending.join().unwrap().unwrap();
    // Both sides know where it resumed, however far the bytes have gone since.
    assert_eq!(t.resumed_from(), kept, "the receiver's start");
    assert_eq!(out.resumed_from(), kept, "the sender's start");
    assert_eq!(out.wait().unwrap(), src);
    let path = t.wait().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data);
    // The resumed session started at the partial's length.
    let started =
        std::iter::from_fn(|| bob.next_event(Some(Duration::ZERO))).find_map(|e| match e {
            Event::Peer(PeerEvent::TransferStarted { id, offset, .. }) if id == t.id() => {
                Some(offset)
            }
            _ => None,
        });
    assert!(started.is_some_and(|o| o >= kept), "{started:?}");
    assert!(!partial.exists(), "partial left behind");
}

/// The file changed between the offer and the sending: the receiver's hash check
/// fails, nothing is stored (partial removed), and both sides report the mismatch.
#[test]
fn changed_file_fails_the_hash_check() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let alice = Arc::new(builder(r.local_addr(), "alice", &dir).connect().unwrap());
    let bob = builder(r.local_addr(), "bob", &dir)
        .event_queue(16)
        .connect()
        .unwrap();
    let data = pattern(500_000, 4);
    let src = write_file(dir.path(), "draft.txt", &data);
    let sending = offer_in_background(&alice, "bob", &src);
    let offer = next_offer(&bob);
    // Same size, other bytes: hashed at the offer, sent after the accept.
    std::fs::write(&src, pattern(500_000, 5)).unwrap();
    let t = offer.accept().unwrap();
    let e = t.wait().unwrap_err();
    assert_eq!(e.code(), ErrorCode::HashMismatch, "{e}");
    let out = sending.join().unwrap().unwrap();
    let e = out.wait().unwrap_err();
    assert_eq!(e.code(), ErrorCode::HashMismatch, "{e}");
    assert!(
        names_in(bob.download_dir()).is_empty(),
        "{:?}",
        names_in(bob.download_dir())
    );
}

/// Pending offers are capped (`ERR busy` past `max_pending_offers`); a file over the
/// maximum download size is refused before anyone is asked; an `OFFER` in plaintext
/// is refused (`ERR denied`); none of them reaches the application, and once the
/// pending offer is declined the peer serves nothing any more.
#[test]
fn offers_are_capped_and_checked_before_asking() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let alice = Arc::new(builder(r.local_addr(), "alice", &dir).connect().unwrap());
    let bob = builder(r.local_addr(), "bob", &dir)
        .limits(PeerLimits {
            max_pending_offers: 1,
            max_download_size: Some(1000),
            ..PeerLimits::default()
        })
        .event_queue(16)
        .connect()
        .unwrap();
    let small = write_file(dir.path(), "small.txt", b"small");
    let large = write_file(dir.path(), "large.bin", &pattern(2000, 6));

    let sending = offer_in_background(&alice, "bob", &small);
    let offer = next_offer(&bob);
    let e = alice.offer_file("bob", &small).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Busy, "{e}");
    let e = alice.offer_file("bob", &large).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Refused, "{e}");
    assert!(e.to_string().contains("too large"), "{e}");

    // Plaintext: refused with a clear line before the close.
    let mut raw = TcpStream::connect(bob.listen_addr()).unwrap();
    raw.set_read_timeout(Some(WAIT)).unwrap();
    let line = format!("P2P/1 OFFER 5 {} x.txt\n", "ab".repeat(32));
    raw.write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(&raw).read_line(&mut answer).unwrap();
    assert_eq!(
        answer,
        "ERR denied file offers need a secured link (P2P/2)\n"
    );

    assert!(offer.decline());
    assert_eq!(
        sending.join().unwrap().unwrap_err().code(),
        ErrorCode::Declined
    );
    // Only the one admitted offer reached the queue.
    while let Some(e) = bob.next_event(Some(Duration::from_millis(200))) {
        assert!(!matches!(e, Event::FileOffered(_)), "{e:?}");
    }
    // Every serving thread (and its place) is given back: no offer lingers.
    assert!(
        wait_until(WAIT, || bob.serving() == 0),
        "{} requests still served",
        bob.serving()
    );
    assert!(bob.file_offers().is_empty());
}

/// A hostile sender: a malformed offer gets its `ERR bad-request` line; an accepted
/// offer whose sender stalls after a few bytes is ended by the receiver's stall rule
/// (its I/O timeout, here 1 s) with a timeout, the bytes kept for a resume, and the
/// sender told `ERR failed`.
#[test]
fn stalled_or_malformed_offers_end_cleanly() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let bob = builder(r.local_addr(), "bob", &dir)
        .io_timeout(Duration::from_secs(1))
        .event_queue(16)
        .connect()
        .unwrap();
    let mallory = common::keyed_client(r.local_addr(), "mallory", 1);

    let mut link = mallory.link(bob.listen_addr(), bob.public_key());
    link.writer
        .write_all(format!("P2P/1 OFFER 10 {} x.bin\n", "zz".repeat(32)).as_bytes())
        .unwrap();
    let mut line = String::new();
    link.reader.read_line(&mut line).unwrap();
    assert_eq!(line, "ERR bad-request invalid hash\n");

    let data = pattern(1_000_000, 7);
    let hash = blake3::hash(&data).to_hex().to_string();
    let mut link = mallory.link(bob.listen_addr(), bob.public_key());
    link.writer
        .write_all(format!("P2P/1 OFFER {} {hash} slow.bin\n", data.len()).as_bytes())
        .unwrap();
    let offer = next_offer(&bob);
    assert_eq!(offer.from(), "mallory");
    let t = offer.accept().unwrap();
    let mut line = String::new();
    link.reader.read_line(&mut line).unwrap();
    assert_eq!(line, "OK 0\n");
    link.writer.write_all(&data[..1000]).unwrap();
    // ... and nothing more: the receiver gives up on its own.
    let started = std::time::Instant::now();
    let e = t
        .wait_timeout(WAIT)
        .expect("ended by the stall rule")
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    assert!(started.elapsed() < WAIT);
    let mut verdict = String::new();
    link.reader.read_line(&mut verdict).unwrap();
    assert!(verdict.starts_with("ERR failed "), "{verdict:?}");
    let kept = std::fs::metadata(bob.download_dir().join(".slow.bin.p2pchat-part"))
        .unwrap()
        .len();
    assert_eq!(kept, 1000);
    assert!(!bob.download_dir().join("slow.bin").exists());
}

/// `offer_file_async`: the answer comes as `Event::OfferAnswered` with the outgoing
/// transfer, before that transfer's own end; a cancelled request answers `Cancelled`
/// at once, and when the other side accepts later the sending stops and none of its
/// events is queued; a peer without queue or answer hook cannot offer asynchronously.
#[test]
fn async_offers_answer_through_events_and_cancel() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let alice = builder(r.local_addr(), "alice", &dir)
        .event_queue(16)
        .connect()
        .unwrap();
    let bob = builder(r.local_addr(), "bob", &dir)
        .event_queue(16)
        .connect()
        .unwrap();
    let data = pattern(100_000, 8);
    let src = write_file(dir.path(), "async.bin", &data);

    let request = alice.offer_file_async("bob", &src).unwrap();
    let offer = next_offer(&bob);
    let incoming = offer.accept().unwrap();
    let out = match next(&alice) {
        Event::OfferAnswered {
            request: n,
            user,
            result,
        } => {
            assert_eq!((n, user.as_str()), (request, "bob"));
            result.unwrap()
        }
        other => panic!("expected OfferAnswered first, got {other:?}"),
    };
    assert!(out.is_outgoing());
    loop {
        match next(&alice) {
            Event::TransferDone { transfer, path } => {
                assert_eq!((transfer, path), (out.id(), src.clone()));
                break;
            }
            Event::TransferProgress { transfer, .. } => assert_eq!(transfer, out.id()),
            other => panic!("expected the sending's end, got {other:?}"),
        }
    }
    assert_eq!(std::fs::read(incoming.wait().unwrap()).unwrap(), data);

    // Cancelled while bob decides: answered at once; bob's accept later goes nowhere.
    let src2 = write_file(dir.path(), "cancelled.bin", &pattern(4 * 1024 * 1024, 9));
    let request = alice.offer_file_async("bob", &src2).unwrap();
    let offer = next_offer(&bob);
    assert!(alice.offer_cancel(request));
    assert!(!alice.offer_cancel(request));
    match next(&alice) {
        Event::OfferAnswered {
            request: n, result, ..
        } => {
            assert_eq!(n, request);
            assert_eq!(result.unwrap_err().code(), ErrorCode::Cancelled);
        }
        other => panic!("expected OfferAnswered, got {other:?}"),
    }
    let t = offer.accept().unwrap();
    assert!(t.wait_timeout(WAIT).expect("ended").is_err());
    assert!(!bob.download_dir().join("cancelled.bin").exists());
    // Nothing of the stopped sending reaches alice's queue.
    assert!(
        alice
            .next_event(Some(Duration::from_millis(500)))
            .is_none_or(|e| matches!(e, Event::Peer(_))),
        "an event of the cancelled offer"
    );

    let plain = builder(r.local_addr(), "carol", &dir).connect().unwrap();
    let e = plain.offer_file_async("bob", &src).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
}
