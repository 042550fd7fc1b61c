//! File push: offering a file to another user, who accepts or declines it; then the
//! same verified, resumable transfer as a download, the other way round.
//!
//! **Sending** ([`Peer::offer_file`](super::Peer::offer_file)): the file is hashed,
//! a secured link (`P2P/2`, never plaintext, never to an original client) is opened to
//! the user, `P2P/1 OFFER <size> <hash> <name>` is sent, and the call waits (bounded by
//! the chat-answer timeout plus slack) for `OK <offset>` or `ERR …`. Once accepted the
//! bytes from `offset` go on a thread of the peer's own under the minimum-rate rule,
//! and the recipient's last line (`OK` once verified and stored, `ERR …` if not) ends
//! the outgoing [`Transfer`].
//!
//! **Receiving**: an offer is admitted like a chat request (a cap on pending offers in
//! total, `PeerLimits::max_pending_offers`, and per address, `max_serving_per_addr`; a
//! size over the maximum download size or the free space refused at once with
//! `ERR too-large`), handed to the application as a [`FileOffer`] (hook
//! [`PeerBuilder::on_file_offer`](super::PeerBuilder::on_file_offer), or
//! [`Event::FileOffered`](super::Event::FileOffered) in the event queue, which never
//! drops it), and waits on its serving thread until accepted, declined, expired (the
//! chat-answer timeout: `ERR declined no answer in time`) or the peer stops. An accepted
//! offer is received on that same serving thread through
//! [`transfer::Receiver`](crate::transfer::Receiver), with the partial-file, resume,
//! verify and no-overwrite rules of a download.

use super::fetch::{self, read_line_within, TransferShared};
use super::link::{self, LinkReader, LinkWriter, Partner, Route};
use super::slots::{Full, Gauge, Slot};
use super::{Inner, PeerEvent, Transfer};
use crate::error::{Error, Result};
use crate::identity::PublicKey;
use crate::protocol::{check_filename, parse_offer_answer, OfferAnswer, PeerRequest};
use crate::thread::call_hook;
use crate::transfer::{send_file_sealed_with, Receiver, Resume, SpaceReservation};
use crossbeam_channel::{select, Sender};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Identifies one incoming file offer within a peer.
pub type OfferId = u64;

/// The `ERR declined` text for an offer nobody answered in time; the offering peer
/// reports it as a timeout rather than a refusal (as for chat requests).
const NO_ANSWER_TEXT: &str = "no answer in time";

/// Where an incoming offer stands.
enum State {
    Waiting,
    Accepted(Box<Accepted>),
    Declined,
    Expired,
}

/// What an accept hands the serving thread.
struct Accepted {
    receiver: Receiver,
    transfer: Arc<TransferShared>,
    done: Sender<()>,
    /// Where the bytes start (`OK <offset>`).
    offset: u64,
    /// The partial's origin offered another file: start the partial over.
    restart: bool,
}

struct PendingOffer {
    id: OfferId,
    from: String,
    addr: SocketAddr,
    name: String,
    size: u64,
    hash: String,
    partner: Partner,
    /// How the link the offer came on is connected.
    path: crate::reach::Path,
    state: Mutex<State>,
    /// Wakes the serving thread once answered.
    decided: Sender<()>,
    inner: Weak<Inner>,
}

/// Someone offers a file. Answer with [`accept`](Self::accept),
/// [`accept_to`](Self::accept_to) or [`decline`](Self::decline) from any thread (or
/// by its [`id`](Self::id) with [`Peer::accept_offer`](super::Peer::accept_offer) /
/// [`Peer::decline_offer`](super::Peer::decline_offer)); no answer within the peer's
/// chat-answer timeout declines it. Dropping it does not answer it. Cheap to clone.
#[derive(Clone)]
pub struct FileOffer {
    pending: Arc<PendingOffer>,
}

impl FileOffer {
    /// This offer's id (unique for the peer's lifetime, shared with chat and transfer
    /// ids).
    pub fn id(&self) -> OfferId {
        self.pending.id
    }

    /// Who offers the file: always a user who proved its key (offers come only over
    /// secured links).
    pub fn from(&self) -> &str {
        &self.pending.from
    }

    /// Where they connect from.
    pub fn addr(&self) -> SocketAddr {
        self.pending.addr
    }

    /// The file's name (a plain file name, checked like a download's).
    pub fn name(&self) -> &str {
        &self.pending.name
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.pending.size
    }

    /// The file's BLAKE3 hash (lowercase hex): the received file is verified against it.
    pub fn hash(&self) -> &str {
        &self.pending.hash
    }

    /// The sender's public key, proven by the secured link's handshake.
    pub fn key(&self) -> Option<PublicKey> {
        self.pending.partner.key
    }

    /// Whether the sender proved it is [`from`](Self::from) (always, since offers come
    /// only over secured links from the key the registry lists for that name).
    pub fn is_verified(&self) -> bool {
        self.pending.partner.verified
    }

    /// Whether the offer can still be answered.
    pub fn is_pending(&self) -> bool {
        matches!(*self.pending.state.lock(), State::Waiting)
    }

    /// Accept into the peer's download directory: see [`accept_to`](Self::accept_to).
    pub fn accept(&self) -> Result<Transfer> {
        self.accept_at(None)
    }

    /// Accept, saving the file as `dest`: an existing directory (the file keeps its
    /// name) or a new file's path in an existing directory, as for
    /// [`Peer::fetch_to`](super::Peer::fetch_to). Returns the receiving [`Transfer`]
    /// at once (its progress starts at the resumed offset). A partial file of the same
    /// content there is resumed (`OK <offset>`).
    ///
    /// Errors, with the offer still pending (try another destination, or decline):
    /// [`Error::AlreadyExists`], [`Error::InvalidArgument`],
    /// [`Error::NotADownloadDirectory`], [`Error::Busy`] (the same destination is being
    /// written), [`Error::PartialConflict`], [`Error::DownloadTooLarge`],
    /// [`Error::NoSpace`], I/O errors. Not pending any more: [`Error::Timeout`]
    /// (expired), [`Error::InvalidArgument`] (already answered), [`Error::Shutdown`].
    pub fn accept_to(&self, dest: impl AsRef<Path>) -> Result<Transfer> {
        self.accept_at(Some(dest.as_ref()))
    }

    /// Decline; the sender is told (`ERR declined`). `false` if the offer was no longer
    /// pending.
    pub fn decline(&self) -> bool {
        let mut state = self.pending.state.lock();
        if !matches!(*state, State::Waiting) {
            return false;
        }
        *state = State::Declined;
        drop(state);
        let _ = self.pending.decided.try_send(());
        true
    }

    fn accept_at(&self, dest: Option<&Path>) -> Result<Transfer> {
        let p = &self.pending;
        let inner = p.inner.upgrade().ok_or(Error::Shutdown)?;
        if inner.stopping() {
            return Err(Error::Shutdown);
        }
        let mut state = p.state.lock();
        match *state {
            State::Waiting => {}
            State::Expired => {
                return Err(Error::Timeout(format!(
                    "the offer of {:?} from {} expired",
                    p.name, p.from
                )))
            }
            State::Accepted(_) | State::Declined => {
                return Err(Error::InvalidArgument(format!(
                    "the offer of {:?} from {} was already answered",
                    p.name, p.from
                )))
            }
        }
        let receiver = match dest {
            Some(d) => Receiver::prepare_at(d, &p.name)?,
            None => Receiver::prepare(&inner.download_dir, &p.name)?,
        };
        let checked = (|| {
            let conflict = |origin: &str| Error::PartialConflict {
                peer: p.from.clone(),
                file: p.name.clone(),
                origin: origin.to_string(),
                partial: receiver.partial_path().to_path_buf(),
            };
            let (offset, restart) = match receiver.judge(&p.from, p.size, &p.hash) {
                Resume::Continue if receiver.offset() > p.size => {
                    return Err(conflict("an unrecorded peer"))
                }
                Resume::Continue => (receiver.offset(), false),
                Resume::Restart => (0, true),
                Resume::Conflict => {
                    let origin = receiver.origin().map(|o| o.peer.clone());
                    return Err(conflict(origin.as_deref().unwrap_or("?")));
                }
            };
            let limits = &inner.limits;
            if let Some(limit) = limits.max_download_size.filter(|&l| p.size > l) {
                return Err(Error::DownloadTooLarge {
                    peer: p.from.clone(),
                    file: p.name.clone(),
                    size: p.size,
                    limit,
                });
            }
            // A check only: the receiving reserves the space itself.
            let dir = receiver
                .partial_path()
                .parent()
                .unwrap_or(&inner.download_dir);
            drop(SpaceReservation::reserve(
                dir,
                p.size - offset,
                limits.free_space_margin,
                &p.name,
                &p.from,
            )?);
            Ok((offset, restart))
        })();
        let (offset, restart) = match checked {
            Ok(c) => c,
            Err(e) => {
                receiver.discard_if_empty();
                return Err(e);
            }
        };
        let (transfer, done) = TransferShared::new_push(
            &inner,
            &p.from,
            &p.name,
            p.partner,
            (p.addr, p.path),
            receiver.partial_path().to_path_buf(),
            false,
            offset,
            p.size,
        );
        *state = State::Accepted(Box::new(Accepted {
            receiver,
            transfer: transfer.clone(),
            done,
            offset,
            restart,
        }));
        drop(state);
        let _ = p.decided.try_send(());
        Ok(Transfer::from_shared(transfer))
    }
}

impl std::fmt::Debug for FileOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileOffer")
            .field("id", &self.pending.id)
            .field("from", &self.pending.from)
            .field("name", &self.pending.name)
            .field("size", &self.pending.size)
            .finish_non_exhaustive()
    }
}

/// A peer's incoming offers waiting for an answer.
#[derive(Default)]
pub(crate) struct Offers {
    /// Places among the pending offers, in total and per address.
    places: Arc<Gauge>,
    by_id: Mutex<HashMap<OfferId, FileOffer>>,
}

impl Offers {
    /// The pending offer `id`, if it still waits.
    pub(crate) fn get(&self, id: OfferId) -> Option<FileOffer> {
        self.by_id.lock().get(&id).cloned()
    }

    /// The offers waiting for an answer, oldest first.
    pub(crate) fn pending(&self) -> Vec<FileOffer> {
        let mut list: Vec<FileOffer> = self.by_id.lock().values().cloned().collect();
        list.sort_by_key(FileOffer::id);
        list
    }
}

/// Whether an offer of `size` bytes from `ip` may wait for an answer: a place among the
/// pending offers (held until [`offered`] returns), or the `ERR` code and text.
pub(super) fn admit(
    inner: &Inner,
    ip: IpAddr,
    size: u64,
) -> std::result::Result<Slot, (&'static str, String)> {
    if inner.hooks.file_offer.is_none() {
        return Err(("declined", "this peer does not take files".into()));
    }
    let limits = &inner.limits;
    if let Some(limit) = limits.max_download_size.filter(|&l| size > l) {
        return Err((
            "too-large",
            format!("{size} bytes is over this peer's maximum of {limit} bytes"),
        ));
    }
    if let Ok(free) = crate::transfer::free_space(&inner.download_dir) {
        if size > free.saturating_sub(limits.free_space_margin) {
            return Err((
                "too-large",
                format!("{size} bytes do not fit in this peer's free space"),
            ));
        }
    }
    inner
        .offers
        .places
        .try_acquire(
            Some(ip),
            limits.max_pending_offers,
            limits.max_serving_per_addr,
        )
        .map_err(|full| {
            let text = match full {
                Full::Total => "too many file offers waiting for an answer, try again later",
                Full::Address => {
                    "too many file offers from your address waiting for an answer, try again later"
                }
            };
            ("busy", text.into())
        })
}

/// Serve an admitted offer from verified `user` (on its serving thread): hand it to
/// the application, wait for the answer, then receive the file if accepted. The link's
/// socket stays tracked by the caller (a stop shuts it down). `_place` is the offer's
/// place among the pending ones, given back once it is answered.
#[allow(clippy::too_many_arguments)]
pub(super) fn offered(
    inner: &Arc<Inner>,
    mut reader: LinkReader,
    mut writer: LinkWriter,
    addr: SocketAddr,
    user: String,
    partner: Partner,
    (name, size, hash): (String, u64, String),
    place: Slot,
    path: crate::reach::Path,
) {
    let (decided_tx, decided_rx) = crossbeam_channel::bounded::<()>(1);
    let pending = Arc::new(PendingOffer {
        id: inner.next_id(),
        from: user,
        addr,
        name,
        size,
        hash,
        partner,
        path,
        state: Mutex::new(State::Waiting),
        decided: decided_tx,
        inner: Arc::downgrade(inner),
    });
    let offer = FileOffer {
        pending: pending.clone(),
    };
    inner.offers.by_id.lock().insert(pending.id, offer.clone());
    if let Some(hook) = &inner.hooks.file_offer {
        call_hook(|| hook(offer));
    }
    let timeout = crossbeam_channel::after(inner.chat_answer_timeout);
    let mut expired = false;
    select! {
        recv(decided_rx) -> _ => {}
        recv(inner.stop_rx) -> _ => {}
        recv(timeout) -> _ => expired = true,
    }
    inner.offers.by_id.lock().remove(&pending.id);
    // Taken out of the state (which stays "answered"); an expiry stays one, so a late
    // accept says so.
    let accepted = {
        let mut state = pending.state.lock();
        if matches!(*state, State::Waiting) {
            *state = if expired {
                State::Expired
            } else {
                State::Declined
            };
        }
        match &*state {
            State::Accepted(_) => match std::mem::replace(&mut *state, State::Declined) {
                State::Accepted(a) => Some(a),
                _ => None,
            },
            _ => None,
        }
    };
    drop(place);
    let p = &pending;
    let refuse = |writer: &mut LinkWriter, text: &str| {
        let answer = OfferAnswer::Err {
            code: "declined".into(),
            text: text.into(),
        };
        let _ = writer.write_line(&answer.to_line());
    };
    let Some(accepted) = accepted else {
        if inner.stopping() {
            refuse(&mut writer, "the peer is shutting down");
        } else if expired {
            refuse(&mut writer, NO_ANSWER_TEXT);
            inner.emit(PeerEvent::FileOfferExpired {
                from: p.from.clone(),
                file: p.name.clone(),
            });
        } else {
            refuse(&mut writer, "the file was declined");
        }
        return;
    };
    let Accepted {
        receiver,
        transfer: t,
        done,
        offset,
        restart,
    } = *accepted;
    t.set_socket(reader.socket());
    let result = (|| {
        if t.is_cancelled() {
            return Err(Error::Cancelled);
        }
        writer.write_line(&OfferAnswer::Accepted { offset }.to_line())?;
        fetch::receive(
            inner,
            &t,
            receiver,
            None,
            &mut reader,
            p.size,
            &p.hash,
            restart,
        )
    })();
    // The sender waits for this verdict before it reports the file delivered.
    let verdict = match &result {
        Ok(_) => OfferAnswer::Stored,
        Err(Error::HashMismatch { actual, .. }) => OfferAnswer::Err {
            code: "hash-mismatch".into(),
            text: actual.clone(),
        },
        Err(e) => OfferAnswer::Err {
            code: "failed".into(),
            text: e.to_string(),
        },
    };
    if !t.is_cancelled() {
        let _ = writer.write_line(&verdict.to_line());
    }
    t.close_socket();
    fetch::finish(inner, &t, result, done);
}

/// Offer the file at `path` to `user` (see [`Peer::offer_file`](super::Peer::offer_file)).
pub(super) fn offer(inner: &Arc<Inner>, user: &str, path: &Path) -> Result<Transfer> {
    offer_with(inner, user, path, &mut |_| true)
}

/// [`offer`], calling `accepted` with the outgoing transfer once the offer is accepted
/// and before a byte is sent (an async offer answers its request there, so its answer
/// comes before any event of the transfer); `accepted` returning `false` (a cancelled
/// request) sends nothing and ends the transfer as cancelled.
pub(super) fn offer_with(
    inner: &Arc<Inner>,
    user: &str,
    path: &Path,
    accepted: &mut dyn FnMut(&Transfer) -> bool,
) -> Result<Transfer> {
    if inner.stopping() {
        return Err(Error::Shutdown);
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| check_filename(n).is_ok() && !n.starts_with('.'))
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} cannot be offered under its name (a plain file name: no comma, \
                 control character or leading '.')",
                path.display()
            ))
        })?
        .to_string();
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::InvalidArgument(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let size = meta.len();
    let hash = crate::share::hash_reader(&file)?.to_hex().to_string();
    let info = inner.peer_info(user)?;
    let key = match link::route(inner, user, &info)? {
        Route::Secure(key) => key,
        Route::Plain | Route::Legacy => {
            return Err(Error::Denied {
                peer: user.to_string(),
                reason: format!(
                    "{user} is registered without a key; files are offered only over a \
                     secured link (P2P/2)"
                ),
            })
        }
    };
    let (mut reader, mut writer, tracked, link_path) = link::dial_secure(inner, user, &info, key)?;
    let addr = reader.socket().peer_addr()?;
    let answered = (|| {
        let request = PeerRequest::Offer {
            name: name.clone(),
            size,
            hash: hash.clone(),
        };
        writer.write_line(&request.to_line())?;
        // The other person gets the whole answer timeout, plus slack for the network.
        let waited = inner.chat_answer_timeout + Duration::from_secs(5);
        let line = read_line_within(&mut reader, waited, addr, || {
            format!(
                "{user} did not answer the file offer within {} s",
                waited.as_secs()
            )
        })?;
        match parse_offer_answer(&line).map_err(|d| Error::protocol(addr, d))? {
            OfferAnswer::Accepted { offset } if offset <= size => Ok(offset),
            OfferAnswer::Accepted { offset } => Err(Error::protocol(
                addr,
                format!("accepted {name:?} ({size} bytes) from offset {offset}"),
            )),
            OfferAnswer::Stored => Err(Error::protocol(addr, "OK without an offset")),
            OfferAnswer::Err { code, text } if code == "declined" && text == NO_ANSWER_TEXT => Err(
                Error::Timeout(format!("{user} did not answer the file offer in time")),
            ),
            OfferAnswer::Err { code, .. } if code == "declined" => Err(Error::OfferDeclined {
                peer: user.to_string(),
                file: name.clone(),
            }),
            OfferAnswer::Err { code, text } if code == "too-large" => Err(Error::Refused {
                peer: user.to_string(),
                reason: format!("too large: {text}"),
            }),
            OfferAnswer::Err { code, text } => Err(link::answer_error(user, &code, &text)),
        }
    })();
    let offset = match answered {
        Ok(o) => o,
        Err(e) => {
            inner.forget_socket(tracked);
            return Err(e);
        }
    };
    let (t, done) = TransferShared::new_push(
        inner,
        user,
        &name,
        Partner::verified(key),
        (addr, link_path),
        PathBuf::new(),
        true,
        offset,
        size,
    );
    t.set_socket(reader.socket());
    if !accepted(&Transfer::from_shared(t.clone())) {
        t.close_socket();
        inner.forget_socket(tracked);
        fetch::finish(inner, &t, Err(Error::Cancelled), done);
        return Err(Error::Cancelled);
    }
    let worker = inner.clone();
    let shared = t.clone();
    let path = path.to_path_buf();
    let spawned = inner
        .threads
        .spawn(&format!("p2p-push-{}", t.id()), move || {
            let t = shared;
            let sent = send(
                &worker,
                &t,
                &file,
                &mut reader,
                &mut writer,
                offset,
                size,
                &hash,
            );
            t.close_socket();
            worker.forget_socket(tracked);
            fetch::finish(&worker, &t, sent.map(|()| path), done);
        });
    if let Err(e) = spawned {
        t.close_socket();
        inner.forget_socket(tracked);
        return Err(e.into());
    }
    Ok(Transfer::from_shared(t))
}

/// Send the bytes from `offset`, then read the recipient's verdict.
#[allow(clippy::too_many_arguments)]
fn send(
    inner: &Inner,
    t: &TransferShared,
    file: &std::fs::File,
    reader: &mut LinkReader,
    writer: &mut LinkWriter,
    offset: u64,
    size: u64,
    hash: &str,
) -> Result<()> {
    let LinkWriter::Secure(w) = writer else {
        return Err(Error::Closed);
    };
    let user = t.peer_name();
    let addr = w.socket().peer_addr()?;
    let rule = inner.limits.min_rate(inner.io_timeout);
    let mut progress = |pos: u64| {
        t.note_progress(pos);
        if let Some(h) = &inner.hooks.progress {
            call_hook(|| h(t.id(), pos, size));
        }
        !t.is_cancelled()
    };
    send_file_sealed_with(w, file, offset, size - offset, rule, &mut progress)?;
    let line = read_line_within(reader, inner.io_timeout, addr, || {
        format!("{user} did not confirm the file it received")
    })?;
    match parse_offer_answer(&line).map_err(|d| Error::protocol(addr, d))? {
        OfferAnswer::Stored => Ok(()),
        OfferAnswer::Err { code, text } if code == "hash-mismatch" => Err(Error::HashMismatch {
            file: t.file_name().to_string(),
            expected: hash.to_string(),
            actual: text,
        }),
        OfferAnswer::Err { code, text } => Err(Error::Refused {
            peer: user.to_string(),
            reason: format!("{code} {text}"),
        }),
        OfferAnswer::Accepted { .. } => Err(Error::protocol(addr, "a second OK <offset>")),
    }
}
