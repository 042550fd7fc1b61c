//! Duplex chats between two peers: asking, answering, framing messages, ending.
//!
//! Each open chat has one reader thread (owned by the peer's thread set) that hands
//! every incoming message to the `on_chat_message` hook; sending happens on the
//! caller's thread under a short per-chat write lock with a write timeout, so a peer
//! that never reads makes `send` fail, never hang or queue without bound.
//!
//! **Backpressure.** The reader calls the hook synchronously and reads the next frame
//! only when it returns; nothing in p2pcore queues messages. A slow hook (an
//! application whose output is stalled) therefore stops the reading, the kernel's
//! receive buffer fills, TCP's window closes, and the sender's writes block and then
//! time out: one chat costs at most one message buffer (`MAX_CHAT_MESSAGE`) plus the
//! socket buffers, however fast the other side sends. An application that queues
//! messages from the hook must bound that queue itself.
//!
//! **Caps.** Incoming chat requests waiting for an answer are bounded by
//! `PeerLimits::max_pending_chat_requests`, open chats (incoming and outgoing, each a
//! socket and a reader thread) by `PeerLimits::max_open_chats`, and one address (one
//! /64 for IPv6) holds at most `max_serving_per_addr` of either. A request past a cap
//! gets `ERR busy <text>` (a legacy request: a bare close) and a
//! [`PeerEvent::RequestRefused`].

use super::link::{self, LinkReader, LinkWriter, Partner, Route};
use super::slots::{Full, Slot};
use super::{Hooks, Inner, PeerEvent};
use crate::error::{is_timeout, Error, Result};
use crate::identity::PublicKey;
use crate::limits::{
    LEGACY_CHAT_ANSWER_WAIT, LEGACY_CHAT_GAP, LEGACY_CHAT_PIECE, MAX_CHAT_MESSAGE, MAX_PEER_LINE,
};
use crate::net::{read_line, write_all_within};
use crate::protocol::{
    chat_frame_header, chat_message_header, parse_chat_header, parse_peer_answer, ChatFrame,
    ChatHeader, PeerAnswer, PeerRequest,
};
use crate::reach::Path;
use crate::thread::call_hook;
use crossbeam_channel::{select, Receiver, Sender};
use parking_lot::Mutex;
use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The text of the `ERR declined` answer to a chat request nobody answered in time;
/// the requesting peer reports it as a timeout rather than a refusal.
const NO_ANSWER_TEXT: &str = "no answer in time";

/// Identifies one chat within a peer (unique for the peer's lifetime).
pub type ChatId = u64;

/// Who ended a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatClosedBy {
    /// This side: [`Chat::close`], or the peer exiting.
    Local,
    /// The other side said goodbye (or, for a legacy client, closed the connection).
    Remote,
    /// The connection failed or the other side broke the protocol.
    Lost,
}

struct ChatShared {
    id: ChatId,
    peer: String,
    legacy: bool,
    io_timeout: Duration,
    /// The chat's writing half (its socket, and on a secured link its cipher state);
    /// `None` once the chat ended, so an ended chat holds no descriptor even while
    /// clones of its [`Chat`] live on.
    writer: Mutex<Option<LinkWriter>>,
    /// When the last piece went to a legacy (original) client; taken under `writer`.
    last_legacy_send: Mutex<Option<Instant>>,
    closed: AtomicBool,
    socket_key: Option<u64>,
    hooks: Hooks,
    inner: Weak<Inner>,
    /// Who the other side is, as far as the link proves it.
    partner: Partner,
    /// How the link is connected.
    path: Path,
}

impl ChatShared {
    /// End the chat once: close the socket and tell the hook.
    fn finish(&self, by: ChatClosedBy) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(mut guard) = self.writer.try_lock_for(self.io_timeout) {
            if let Some(mut w) = guard.take() {
                if by == ChatClosedBy::Local && !self.legacy {
                    let bye = chat_frame_header(&ChatFrame::Bye);
                    let _ = w.write_all_within(bye.as_bytes(), self.io_timeout);
                }
                let _ = w.socket().shutdown(Shutdown::Both);
                // Dropping `w` closes the descriptor; the reader's clone closes when
                // its thread sees the shutdown and ends.
            }
        }
        if let Some(inner) = self.inner.upgrade() {
            inner.forget_socket(self.socket_key);
        }
        if let Some(h) = &self.hooks.chat_closed {
            call_hook(|| h(self.id, &self.peer, by));
        }
    }
}

/// An open chat. Cheap to clone; every clone is the same chat.
#[derive(Clone)]
pub struct Chat {
    shared: Arc<ChatShared>,
}

impl Chat {
    /// This chat's id (the one hooks receive).
    pub fn id(&self) -> ChatId {
        self.shared.id
    }

    /// The other side's username.
    pub fn peer(&self) -> &str {
        &self.shared.peer
    }

    /// Whether the other side is an original C++ client: its chat is unframed (each
    /// `send` is shown as one line), it says nothing when it accepts, and messages to
    /// it go in pieces of at most [`LEGACY_CHAT_PIECE`] bytes, [`LEGACY_CHAT_GAP`] apart.
    pub fn is_legacy(&self) -> bool {
        self.shared.legacy
    }

    /// Whether the chat has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Send one message (any UTF-8, newlines included, up to
    /// [`MAX_CHAT_MESSAGE`](crate::limits::MAX_CHAT_MESSAGE) bytes). Fails with
    /// [`Error::Closed`] once the chat has ended, and ends the chat with a timeout error
    /// if the other side stops reading.
    pub fn send(&self, text: &str) -> Result<()> {
        self.send_within(text, self.shared.io_timeout)
    }

    /// As [`send`](Self::send), waiting at most `timeout` (for another sender to
    /// finish, then for the other side to read) instead of the peer's I/O timeout. On a
    /// timeout while writing the chat ends (a message cut short cannot be resumed);
    /// waiting for another sender times out with the chat still open.
    pub fn send_within(&self, text: &str, timeout: Duration) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        if text.len() > MAX_CHAT_MESSAGE {
            return Err(Error::TooLarge {
                what: "chat message",
                size: text.len(),
                limit: MAX_CHAT_MESSAGE,
            });
        }
        let Some(mut guard) = self.shared.writer.try_lock_for(timeout) else {
            return Err(Error::Timeout(format!(
                "another message to {} was still being sent",
                self.shared.peer
            )));
        };
        let Some(writer) = guard.as_mut() else {
            return Err(Error::Closed);
        };
        let result = if self.shared.legacy {
            self.send_legacy(writer.socket(), text)
        } else {
            let mut frame = Vec::with_capacity(text.len() + 16);
            frame.extend_from_slice(chat_message_header(text.len()).as_bytes());
            frame.extend_from_slice(text.as_bytes());
            writer.write_all_within(&frame, timeout)
        };
        // `finish` takes the lock: release it first.
        drop(guard);
        result.map_err(|e| {
            let err = if is_timeout(&e) {
                Error::Timeout(format!("{} is not reading the chat", self.shared.peer))
            } else {
                Error::Io(e)
            };
            self.shared.finish(ChatClosedBy::Lost);
            err
        })
    }

    /// To an original client: each piece (at most [`LEGACY_CHAT_PIECE`] bytes, cut at
    /// character boundaries) in its own `send`, at least [`LEGACY_CHAT_GAP`] after the
    /// previous one, so that its one `recv` of 1000 bytes per loop takes each alone.
    fn send_legacy(&self, writer: &TcpStream, text: &str) -> std::io::Result<()> {
        let mut last = self.shared.last_legacy_send.lock();
        for piece in legacy_pieces(text, LEGACY_CHAT_PIECE) {
            if let Some(at) = *last {
                let since = at.elapsed();
                if since < LEGACY_CHAT_GAP {
                    std::thread::sleep(LEGACY_CHAT_GAP - since);
                }
            }
            write_all_within(writer, piece.as_bytes(), self.shared.io_timeout)?;
            *last = Some(Instant::now());
        }
        Ok(())
    }

    /// End the chat; the other side is told. Idempotent.
    pub fn close(&self) {
        self.shared.finish(ChatClosedBy::Local);
    }

    /// The other side's public key, proven by the handshake of a secured link and
    /// checked against the registry's listing and the pins; `None` for an unverified
    /// partner (registered without a key, or an original client).
    pub fn remote_key(&self) -> Option<PublicKey> {
        self.shared.partner.key
    }

    /// Whether the chat runs over a secured link (`P2P/2`): every message encrypted
    /// and authenticated. `false` for an unverified partner's plaintext chat.
    pub fn is_encrypted(&self) -> bool {
        self.shared.partner.encrypted
    }

    /// Whether the other side proved it is [`peer`](Self::peer): its key is the one
    /// the registry lists for that name, and the one pinned for it.
    pub fn is_verified(&self) -> bool {
        self.shared.partner.verified
    }

    /// How the link is connected: [`Path::Direct`] (the caller connected to the
    /// callee's listener), [`Path::Reverse`] (the callee connected back),
    /// [`Path::Punched`] (both connected at once through their NATs) or
    /// [`Path::Relayed`] (through a relay, which sees only ciphertext).
    pub fn path(&self) -> Path {
        self.shared.path
    }
}

impl std::fmt::Debug for Chat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat")
            .field("id", &self.shared.id)
            .field("peer", &self.shared.peer)
            .finish_non_exhaustive()
    }
}

struct Pending {
    from: String,
    addr: SocketAddr,
    legacy: bool,
    conn: Mutex<Option<(LinkReader, LinkWriter)>>,
    decided: Sender<()>,
    inner: Weak<Inner>,
    partner: Partner,
    path: Path,
}

/// Someone asks to chat. Answer with [`accept`](Self::accept) or
/// [`decline`](Self::decline), now or later from any thread; dropping it unanswered
/// declines; no answer within the peer's chat-answer timeout declines too.
pub struct ChatRequest {
    pending: Arc<Pending>,
}

impl ChatRequest {
    /// Who asks.
    pub fn from(&self) -> &str {
        &self.pending.from
    }

    /// Where they connect from.
    pub fn addr(&self) -> SocketAddr {
        self.pending.addr
    }

    /// Whether the request comes from an original C++ client (raw, unframed chat).
    pub fn is_legacy(&self) -> bool {
        self.pending.legacy
    }

    /// How the request came: [`Path::Direct`] (the caller connected to this peer's
    /// listener), [`Path::Reverse`] (this peer connected back at the registry's
    /// request), [`Path::Punched`] (both connected at once through their NATs) or
    /// [`Path::Relayed`] (through a relay). [`addr`](Self::addr) is then the caller's
    /// listener, or the relay.
    pub fn path(&self) -> Path {
        self.pending.path
    }

    /// Whether the request can still be answered (it has not expired or been answered).
    pub fn is_pending(&self) -> bool {
        self.pending.conn.lock().is_some()
    }

    /// Accept: returns the open [`Chat`]. Fails with [`Error::Timeout`] if the request
    /// already expired.
    pub fn accept(self) -> Result<Chat> {
        let taken = self.pending.conn.lock().take();
        let Some((reader, mut writer)) = taken else {
            if self.pending.inner.upgrade().is_none_or(|i| i.stopping()) {
                return Err(Error::Shutdown);
            }
            return Err(Error::Timeout(format!(
                "the chat request from {} expired",
                self.pending.from
            )));
        };
        let _ = self.pending.decided.try_send(());
        let inner = self.pending.inner.upgrade().ok_or(Error::Shutdown)?;
        let limits = &inner.limits;
        let slot = match inner.open_chats.try_acquire(
            Some(self.pending.addr.ip()),
            limits.max_open_chats,
            limits.max_serving_per_addr,
        ) {
            Ok(slot) => slot,
            Err(full) => {
                let text = open_chats_text(full);
                if !self.pending.legacy {
                    let answer = PeerAnswer::Err {
                        code: "busy".into(),
                        text: text.into(),
                    };
                    let _ = writer.write_line(&answer.to_line());
                }
                let _ = writer.socket().shutdown(Shutdown::Both);
                inner.emit(PeerEvent::RequestRefused {
                    from: self.pending.addr,
                    request: format!("CHAT {}", self.pending.from),
                    reason: text.into(),
                });
                return Err(Error::Busy(match full {
                    Full::Total => format!(
                        "this peer ({} chats open, the most allowed)",
                        limits.max_open_chats
                    ),
                    Full::Address => format!(
                        "this peer ({} chats open with {}, the most allowed)",
                        limits.max_serving_per_addr,
                        self.pending.addr.ip()
                    ),
                }));
            }
        };
        if !self.pending.legacy {
            writer.write_line(&PeerAnswer::ChatAccepted.to_line())?;
        }
        start(
            &inner,
            reader,
            writer,
            &self.pending.from,
            self.pending.legacy,
            self.pending.partner,
            slot,
            self.pending.path,
            &mut |_| {},
        )
    }

    /// Decline; the requester is told (a legacy requester sees the connection close).
    pub fn decline(self) {
        // Drop does it.
    }

    fn refuse(pending: &Pending, text: &str) {
        if let Some((_, mut writer)) = pending.conn.lock().take() {
            if !pending.legacy {
                let answer = PeerAnswer::Err {
                    code: "declined".into(),
                    text: text.into(),
                };
                let _ = writer.write_line(&answer.to_line());
            }
            let _ = writer.socket().shutdown(Shutdown::Both);
        }
        let _ = pending.decided.try_send(());
    }
}

impl ChatRequest {
    /// The requester's public key, proven by the handshake of a secured link; `None`
    /// for a plaintext request (a user registered without a key, an original client).
    pub fn key(&self) -> Option<PublicKey> {
        self.pending.partner.key
    }

    /// Whether the requester proved it is [`from`](Self::from): a secured link whose
    /// key is the one the registry lists for that name, and the one pinned for it.
    /// `false` for a plaintext or original client's request, whose name nobody
    /// checked.
    pub fn is_verified(&self) -> bool {
        self.pending.partner.verified
    }
}

impl Drop for ChatRequest {
    fn drop(&mut self) {
        ChatRequest::refuse(&self.pending, "the chat was declined");
    }
}

impl std::fmt::Debug for ChatRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatRequest")
            .field("from", &self.pending.from)
            .field("addr", &self.pending.addr)
            .finish_non_exhaustive()
    }
}

/// The `ERR busy` text for a chat past the open-chats cap.
fn open_chats_text(full: Full) -> &'static str {
    match full {
        Full::Total => "too many open chats, try again later",
        Full::Address => "too many open chats with your address, try again later",
    }
}

/// Whether an incoming chat request from `ip` may wait for an answer: a place among
/// the pending requests (held until [`offer`] returns), or the `ERR` code and text to
/// refuse it with.
pub(super) fn admit(
    inner: &Inner,
    ip: IpAddr,
) -> std::result::Result<Slot, (&'static str, String)> {
    if inner.hooks.chat_request.is_none() {
        return Err(("declined", "this peer does not take chats".into()));
    }
    let limits = &inner.limits;
    let per_addr = limits.max_serving_per_addr;
    // Refuse now what could not be accepted anyway, rather than ask the person.
    if let Err(full) = inner
        .open_chats
        .check(Some(ip), limits.max_open_chats, per_addr)
    {
        return Err(("busy", open_chats_text(full).into()));
    }
    inner
        .pending_chats
        .try_acquire(Some(ip), limits.max_pending_chat_requests, per_addr)
        .map_err(|full| {
            let text = match full {
                Full::Total => "too many chat requests waiting for an answer, try again later",
                Full::Address => {
                    "too many chat requests from your address waiting for an answer, try again later"
                }
            };
            ("busy", text.into())
        })
}

/// Serve an incoming chat request: hand it to the hook and wait (on this serving
/// thread) until it is answered, expires, or the peer stops. `_pending` is its place
/// among the pending requests, given back when this returns.
#[allow(clippy::too_many_arguments)]
pub(super) fn offer(
    inner: &Arc<Inner>,
    reader: LinkReader,
    writer: LinkWriter,
    from: String,
    legacy: bool,
    partner: Partner,
    _pending: Slot,
    path: Path,
) {
    let addr = match writer.socket().peer_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let (decided_tx, decided_rx): (Sender<()>, Receiver<()>) = crossbeam_channel::bounded(1);
    let pending = Arc::new(Pending {
        from: from.clone(),
        addr,
        legacy,
        conn: Mutex::new(Some((reader, writer))),
        decided: decided_tx,
        inner: Arc::downgrade(inner),
        partner,
        path,
    });
    match &inner.hooks.chat_request {
        Some(hook) => {
            let request = ChatRequest {
                pending: pending.clone(),
            };
            call_hook(|| hook(request));
        }
        None => {
            ChatRequest::refuse(&pending, "this peer does not take chats");
            return;
        }
    }
    let timeout = crossbeam_channel::after(inner.chat_answer_timeout);
    select! {
        recv(decided_rx) -> _ => {}
        recv(inner.stop_rx) -> _ => ChatRequest::refuse(&pending, "the peer is shutting down"),
        recv(timeout) -> _ => {
            if pending.conn.lock().is_some() {
                ChatRequest::refuse(&pending, NO_ANSWER_TEXT);
                inner.emit(PeerEvent::ChatRequestExpired { from });
            }
        }
    }
}

/// Ask `name` for a chat (see [`super::Peer::chat`]).
pub(super) fn request(inner: &Arc<Inner>, name: &str) -> Result<Chat> {
    request_with(inner, name, &mut |_| {})
}

/// [`request`], calling `opened` with the chat once it is open but before its reader
/// starts: whatever `opened` hands the chat to (the answer of
/// [`super::Peer::chat_async`]) comes before any message or close of it.
pub(super) fn request_with(
    inner: &Arc<Inner>,
    name: &str,
    opened: &mut dyn FnMut(&Chat),
) -> Result<Chat> {
    if inner.stopping() {
        return Err(Error::Shutdown);
    }
    let max = inner.limits.max_open_chats;
    let slot = inner
        .open_chats
        .try_acquire(None, max, usize::MAX)
        .map_err(|_| Error::Busy(format!("this peer ({max} chats open, the most allowed)")))?;
    let info = inner.peer_info(name)?;
    let route = link::route(inner, name, &info)?;
    let key = match route {
        Route::Legacy => return request_legacy(inner, name, info.addr, slot, opened),
        Route::Plain => None,
        Route::Secure(key) => Some(key),
    };
    let addr = info.addr;
    let (mut reader, mut writer, tracked, path) = match key {
        Some(key) => link::dial_secure(inner, name, &info, key)?,
        None => {
            let stream = link::connect(inner, name, addr)?;
            stream.set_nodelay(true)?;
            stream.set_write_timeout(Some(inner.io_timeout))?;
            let tracked = inner.track_socket(&stream);
            match stream.try_clone() {
                Ok(r) => (
                    LinkReader::Plain(BufReader::new(r)),
                    LinkWriter::Plain(stream),
                    tracked,
                    Path::Direct,
                ),
                Err(e) => {
                    inner.forget_socket(tracked);
                    return Err(e.into());
                }
            }
        }
    };
    let result = (move || {
        // The other person gets the whole answer timeout, plus slack for the network.
        let waited = inner.chat_answer_timeout + Duration::from_secs(5);
        reader.socket().set_read_timeout(Some(waited))?;
        let request = PeerRequest::Chat {
            from: inner.username.clone(),
            legacy: false,
        };
        writer.write_line(&request.to_line())?;
        let line = match read_line(&mut reader, MAX_PEER_LINE, "peer") {
            Ok(Some(l)) => l,
            Ok(None) => return Err(Error::Declined(name.to_string())),
            // Not a refusal: nobody answered. Said as what it is, with how long.
            Err(e) if e.code() == crate::ErrorCode::Timeout => {
                return Err(Error::Timeout(format!(
                    "{name} did not answer the chat request within {} s",
                    waited.as_secs()
                )))
            }
            Err(e) => return Err(e),
        };
        match parse_peer_answer(&line).map_err(|d| Error::protocol(addr, d))? {
            PeerAnswer::ChatAccepted => {}
            // The other peer's own deadline passed (`NO_ANSWER_TEXT`): a timeout too.
            PeerAnswer::Err { code, text } if code == "declined" && text == NO_ANSWER_TEXT => {
                return Err(Error::Timeout(format!(
                    "{name} did not answer the chat request in time"
                )))
            }
            PeerAnswer::Err { code, .. } if code == "declined" => {
                return Err(Error::Declined(name.to_string()))
            }
            PeerAnswer::Err { code, text } => return Err(link::answer_error(name, &code, &text)),
            PeerAnswer::File { .. } => {
                return Err(Error::protocol(addr, "file answer to a chat request"))
            }
        }
        reader.socket().set_read_timeout(None)?;
        start(
            inner,
            reader,
            writer,
            name,
            false,
            route.partner(),
            slot,
            path,
            opened,
        )
    })();
    inner.forget_socket(tracked);
    // This peer's own exit closed the connection: not the other side's answer.
    result.map_err(|e| if inner.stopping() { Error::Shutdown } else { e })
}

/// Ask an original client for a chat: `CHAT,<me>` in one `send`, no terminator. It
/// answers nothing when its person accepts; it closes the connection when they do not
/// within its 5 s. So: a close within [`LEGACY_CHAT_ANSWER_WAIT`] is
/// [`Error::NoAnswer`]; bytes from it mean it accepted and already talks; neither means
/// it accepted (or has not read the request yet: it serves one chat at a time) and the
/// chat opens.
fn request_legacy(
    inner: &Arc<Inner>,
    name: &str,
    addr: SocketAddr,
    slot: Slot,
    opened: &mut dyn FnMut(&Chat),
) -> Result<Chat> {
    let stream = link::connect(inner, name, addr)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(inner.io_timeout))?;
    let key = inner.track_socket(&stream);
    let result = (|| {
        (&stream).write_all(format!("CHAT,{}", inner.username).as_bytes())?;
        let deadline = Instant::now() + LEGACY_CHAT_ANSWER_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            stream.set_read_timeout(Some(left))?;
            match stream.peek(&mut [0u8; 1]) {
                Ok(0) if inner.stopping() => return Err(Error::Shutdown),
                Ok(0) => return Err(Error::NoAnswer(name.to_string())),
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => break,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Err(Error::NoAnswer(name.to_string()))
                }
                Err(e) => return Err(e.into()),
            }
        }
        if inner.stopping() {
            return Err(Error::Shutdown);
        }
        start(
            inner,
            LinkReader::Plain(BufReader::new(stream.try_clone()?)),
            LinkWriter::Plain(stream.try_clone()?),
            name,
            true,
            Partner::UNVERIFIED,
            slot,
            Path::Direct,
            opened,
        )
    })();
    inner.forget_socket(key);
    result
}

/// `text` cut into pieces of at most `max` bytes, each ending at a character boundary
/// (no piece is empty; an empty text gives none).
pub(crate) fn legacy_pieces(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(max.max(4));
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// Open the chat: register its socket, call `opened` with it, then start its reader
/// thread, which holds `slot` (its place among the open chats) until it ends.
#[allow(clippy::too_many_arguments)]
fn start(
    inner: &Arc<Inner>,
    reader: LinkReader,
    writer: LinkWriter,
    peer: &str,
    legacy: bool,
    partner: Partner,
    slot: Slot,
    path: Path,
    opened: &mut dyn FnMut(&Chat),
) -> Result<Chat> {
    let sock = writer.socket();
    sock.set_write_timeout(Some(inner.io_timeout))?;
    // Chats may idle for hours: no read timeout, but keepalive ends a dead one.
    sock.set_read_timeout(None)?;
    crate::net::set_keepalive(sock);
    let shared = Arc::new(ChatShared {
        id: inner.next_id(),
        peer: peer.to_string(),
        legacy,
        io_timeout: inner.io_timeout,
        socket_key: inner.track_socket(sock),
        writer: Mutex::new(Some(writer)),
        last_legacy_send: Mutex::new(None),
        closed: AtomicBool::new(false),
        hooks: inner.hooks.clone(),
        inner: Arc::downgrade(inner),
        partner,
        path,
    });
    let reading = shared.clone();
    inner.open_chat_list.add(&shared);
    let chat = Chat { shared };
    // Before the reader: no event of the chat can come ahead of what `opened` does.
    opened(&chat);
    inner
        .threads
        .spawn(&format!("p2p-chat-{}", chat.shared.id), move || {
            read_loop(reading, reader);
            drop(slot);
        })?;
    Ok(chat)
}

fn read_loop(chat: Arc<ChatShared>, mut reader: LinkReader) {
    let by = if chat.legacy {
        read_legacy(&chat, &mut reader)
    } else {
        read_framed(&chat, &mut reader)
    };
    let stopping = chat.inner.upgrade().is_none_or(|i| i.stopping());
    chat.finish(if stopping { ChatClosedBy::Local } else { by });
}

fn deliver(chat: &ChatShared, text: &str) {
    if let Some(h) = &chat.hooks.chat_message {
        call_hook(|| h(chat.id, &chat.peer, text));
    }
}

fn read_framed(chat: &ChatShared, reader: &mut LinkReader) -> ChatClosedBy {
    let mut payload = Vec::new();
    loop {
        let line = match read_line(reader, MAX_PEER_LINE, "peer") {
            Ok(Some(l)) => l,
            Ok(None) => return ChatClosedBy::Lost,
            Err(_) => {
                return if chat.closed.load(Ordering::SeqCst) {
                    ChatClosedBy::Local
                } else {
                    ChatClosedBy::Lost
                }
            }
        };
        match parse_chat_header(&line) {
            Ok(ChatHeader::Bye) => return ChatClosedBy::Remote,
            Ok(ChatHeader::Message(len)) => {
                payload.resize(len, 0);
                if reader.read_exact(&mut payload).is_err() {
                    return ChatClosedBy::Lost;
                }
                match std::str::from_utf8(&payload) {
                    Ok(text) => deliver(chat, text),
                    Err(_) => return ChatClosedBy::Lost,
                }
            }
            Err(detail) => {
                log::warn!("chat with {}: {detail}", chat.peer);
                return ChatClosedBy::Lost;
            }
        }
    }
}

/// The original client sends each typed line as one raw `send`; each read is shown as
/// one message, as the original did.
fn read_legacy(chat: &ChatShared, reader: &mut LinkReader) -> ChatClosedBy {
    let mut buf = vec![0u8; MAX_CHAT_MESSAGE];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return ChatClosedBy::Remote,
            Ok(n) => n,
            Err(_) => return ChatClosedBy::Lost,
        };
        deliver(chat, &String::from_utf8_lossy(&buf[..n]));
    }
}

#[cfg(test)]
mod tests {
    use super::legacy_pieces;

    #[test]
    fn legacy_pieces_fit_the_original_buffer_and_keep_characters_whole() {
        assert!(legacy_pieces("", 999).is_empty());
        assert_eq!(legacy_pieces("hello", 999), vec!["hello"]);
        let long = "a".repeat(1500);
        let p = legacy_pieces(&long, 999);
        assert_eq!((p.len(), p[0].len(), p[1].len()), (2, 999, 501));
        // 'é' is two bytes: a cut at 999 would split one.
        let accents = "é".repeat(600);
        let p = legacy_pieces(&accents, 999);
        assert!(p.iter().all(|x| x.len() <= 999));
        assert_eq!(p.concat(), accents);
        assert_eq!(p[0].len(), 998);
    }
}

/// The chats of a peer (held weakly: a chat whose reader ended and whose handles are
/// gone drops out), for `Peer::chats`.
#[derive(Default)]
pub(crate) struct OpenChats(Mutex<Vec<Weak<ChatShared>>>);

impl OpenChats {
    fn add(&self, chat: &Arc<ChatShared>) {
        let mut list = self.0.lock();
        list.retain(|w| {
            w.upgrade()
                .is_some_and(|c| !c.closed.load(Ordering::SeqCst))
        });
        list.push(Arc::downgrade(chat));
    }

    /// The chats still open, oldest first.
    pub(crate) fn open(&self) -> Vec<Chat> {
        let mut list = self.0.lock();
        list.retain(|w| {
            w.upgrade()
                .is_some_and(|c| !c.closed.load(Ordering::SeqCst))
        });
        list.iter()
            .filter_map(Weak::upgrade)
            .map(|shared| Chat { shared })
            .collect()
    }
}
