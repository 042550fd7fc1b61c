//! The wire formats of p2pchat: registry queries and answers, and the peer-to-peer
//! requests, answers and chat frames.
//!
//! Pure functions over bytes and strings. This module never touches a socket; every
//! parser here enforces the limits in [`crate::limits`] and returns an error for
//! anything else, so it can be fed arbitrary input (see the property tests and `fuzz/`).

use crate::limits::*;
use std::fmt;

/// Reasons the registry gives after `ERR,`. Stable: clients match on them.
pub mod reason {
    pub const USER_NOT_FOUND: &str = "User not found!";
    pub const INVALID_REQUEST: &str = "Invalid Request!";
    pub const USERNAME_TAKEN: &str = "Username taken";
    pub const NOT_OWNER: &str = "Not the owner of this username";
    pub const INVALID_PORT: &str = "Invalid port (expected 1-65535)";
    pub const INVALID_USERNAME: &str = "Invalid username";
    pub const INVALID_FILENAME: &str = "Invalid filename";
    pub const INVALID_DIRECTORY: &str = "Invalid directory";
    pub const INVALID_UTF8: &str = "Query is not valid UTF-8";
    pub const LINE_TOO_LONG: &str = "Query too long";
    pub const TOO_MANY_FIELDS: &str = "Too many fields";
    pub const TOO_MANY_FILES: &str = "Too many files";
    pub const WRONG_FIELD_COUNT: &str = "Wrong number of fields";
    pub const REGISTRY_FULL: &str = "Registry full";
    pub const TIMED_OUT: &str = "Query timed out";
    pub const BUSY: &str = "Server busy";
    /// The source address (its /64 for IPv6) already has `max_conns_per_addr` open.
    pub const TOO_MANY_CONNECTIONS: &str = "Too many connections from your address";
    /// The source address (its /64 for IPv6) already holds `max_users_per_addr`.
    pub const TOO_MANY_USERS: &str = "Too many registrations from your address";
    /// The name is claimed by a key, and this `INIT` did not come over an encrypted
    /// session with that key (another key, a plaintext session or a legacy client).
    pub const CLAIMED: &str = "Username is claimed by another key";
    /// The claims store could not be written; the `INIT` is refused rather than
    /// registered without its claim.
    pub const REGISTRY_UNAVAILABLE: &str = "Registry unavailable";
    /// A first line that starts like a `REG/2` marker but is not one this registry
    /// speaks (unknown pattern or cipher); the connection is closed after it.
    pub const UNSUPPORTED_SECURE: &str = "Unsupported secure link";
    /// `WATCH`, `CONNECT` or `RELAY` on a plaintext session (they need a key).
    pub const NEEDS_SECURE: &str = "Needs a secured session";
    /// `WATCH` of a user registered with another key (or with none).
    pub const NOT_YOUR_REGISTRATION: &str = "Not your registration";
    /// `CONNECT` or `RELAY` from a session that holds no registration.
    pub const REGISTER_FIRST: &str = "Register first";
    /// `CONNECT` from a user whose listener is not known to be reachable.
    pub const NOT_REACHABLE: &str = "You are not reachable: ask for a relay";
    /// `RELAY` to a registry that offers no relay.
    pub const NO_RELAY: &str = "No relay available";
    /// More `CONNECT` and `RELAY` queries on one session than `SIGNALS_PER_MINUTE`.
    pub const TOO_MANY_SIGNALS: &str = "Too many connection requests: try again in a minute";
    /// The text after `ERR,<callee> ` when the callee has no watch session (the answer
    /// names the callee first: `ERR,bob cannot be asked to connect back`).
    pub const CANNOT_ASK: &str = "cannot be asked to connect back";
}

/// A registry query, borrowed from the line it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query<'a> {
    /// Register `username` (or update its file list when its owner sends it again).
    Init {
        username: &'a str,
        /// The legacy client's shared directory (form B); informational only.
        dir: Option<&'a str>,
        port: u16,
        files: Vec<&'a str>,
    },
    /// Remove `username`.
    Exit { username: &'a str },
    /// List usernames.
    GetUsers,
    /// Address of one user.
    GetPeer { username: &'a str },
    /// Every user's files.
    GetAllFiles,
    /// One user's files.
    GetUserFiles { username: &'a str },
}

impl Query<'_> {
    /// The verb on the wire.
    pub fn verb(&self) -> &'static str {
        match self {
            Query::Init { .. } => "INIT",
            Query::Exit { .. } => "EXIT",
            Query::GetUsers => "GET_U",
            Query::GetPeer { .. } => "GET_P",
            Query::GetAllFiles => "GET_AF",
            Query::GetUserFiles { .. } => "GET_UF",
        }
    }
}

impl fmt::Display for Query<'_> {
    /// The query as sent on the wire (form A for `INIT`, no terminator).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Query::Init {
                username,
                dir,
                port,
                files,
            } => {
                write!(f, "INIT,{username}")?;
                if let Some(dir) = dir {
                    write!(f, ",{dir}")?;
                }
                write!(f, ",{port}")?;
                for file in files {
                    write!(f, ",{file}")?;
                }
                Ok(())
            }
            Query::Exit { username } => write!(f, "EXIT,{username}"),
            Query::GetUsers => f.write_str("GET_U"),
            Query::GetPeer { username } => write!(f, "GET_P,{username}"),
            Query::GetAllFiles => f.write_str("GET_AF"),
            Query::GetUserFiles { username } => write!(f, "GET_UF,{username}"),
        }
    }
}

/// Why a query was refused; its `Display` is the reason sent after `ERR,`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryError(pub &'static str);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Parse a port: decimal digits only, 1–65535.
///
/// ```
/// assert_eq!(p2pcore::protocol::parse_port("8080"), Some(8080));
/// assert_eq!(p2pcore::protocol::parse_port("0"), None);
/// assert_eq!(p2pcore::protocol::parse_port("+80"), None);
/// ```
pub fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match s.parse::<u32>() {
        Ok(p @ 1..=65535) => Some(p as u16),
        _ => None,
    }
}

/// Check a username: 1–64 bytes, no comma, no whitespace other than inner spaces, no
/// control characters, and not starting with a character that would break a line.
///
/// ```
/// assert!(p2pcore::protocol::check_username("alice").is_ok());
/// assert!(p2pcore::protocol::check_username("a,b").is_err());
/// ```
pub fn check_username(name: &str) -> Result<(), QueryError> {
    let bad = name.is_empty()
        || name.len() > MAX_USERNAME_LEN
        || name.trim() != name
        || name.contains([',', ':'])
        || name.chars().any(char::is_control);
    if bad {
        Err(QueryError(reason::INVALID_USERNAME))
    } else {
        Ok(())
    }
}

/// Check a shared filename as the registry protocol can carry it: 1–255 bytes, no comma,
/// no slash or backslash, no control characters, not `.` or `..`.
pub fn check_filename(name: &str) -> Result<(), QueryError> {
    let bad = name.is_empty()
        || name.len() > MAX_FILENAME_LEN
        || name == "."
        || name == ".."
        || name.contains([',', '/', '\\'])
        || name.chars().any(char::is_control);
    if bad {
        Err(QueryError(reason::INVALID_FILENAME))
    } else {
        Ok(())
    }
}

/// Parse one registry query (terminator already removed; a trailing `\r` is tolerated).
///
/// `INIT` comes in two forms, told apart by where the port is: form A
/// `INIT,user,port,files…` has a port (1–65535 in decimal) as its third field; form B
/// `INIT,user,dir,port,files…` (what the original client sends) has it as the fourth.
/// Empty file fields (the original's trailing comma) are ignored.
///
/// ```
/// use p2pcore::protocol::{parse_query, Query};
/// let q = parse_query(b"INIT,bob,/home/bob/share,5000,a.txt,").unwrap();
/// assert_eq!(q, Query::Init { username: "bob", dir: Some("/home/bob/share"), port: 5000, files: vec!["a.txt"] });
/// ```
pub fn parse_query(line: &[u8]) -> Result<Query<'_>, QueryError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE_LEN {
        return Err(QueryError(reason::LINE_TOO_LONG));
    }
    let text = std::str::from_utf8(line).map_err(|_| QueryError(reason::INVALID_UTF8))?;
    if text.contains('\0') {
        return Err(QueryError(reason::INVALID_REQUEST));
    }
    let mut fields: Vec<&str> = Vec::new();
    for field in text.split(',') {
        if fields.len() == MAX_FIELDS {
            return Err(QueryError(reason::TOO_MANY_FIELDS));
        }
        fields.push(field);
    }
    let verb = fields[0];
    let args = &fields[1..];
    match verb {
        "INIT" => parse_init(args),
        "EXIT" => single_username(args).map(|username| Query::Exit { username }),
        "GET_U" => no_args(args, Query::GetUsers),
        "GET_P" => single_username(args).map(|username| Query::GetPeer { username }),
        "GET_AF" => no_args(args, Query::GetAllFiles),
        "GET_UF" => single_username(args).map(|username| Query::GetUserFiles { username }),
        _ => Err(QueryError(reason::INVALID_REQUEST)),
    }
}

fn no_args<'a>(args: &[&'a str], q: Query<'a>) -> Result<Query<'a>, QueryError> {
    // The original client sends `GET_U` bare; tolerate one empty trailing field.
    match args {
        [] | [""] => Ok(q),
        _ => Err(QueryError(reason::WRONG_FIELD_COUNT)),
    }
}

fn single_username<'a>(args: &[&'a str]) -> Result<&'a str, QueryError> {
    match args {
        [name] => {
            check_username(name)?;
            Ok(name)
        }
        _ => Err(QueryError(reason::WRONG_FIELD_COUNT)),
    }
}

fn parse_init<'a>(args: &[&'a str]) -> Result<Query<'a>, QueryError> {
    let (username, rest) = args
        .split_first()
        .ok_or(QueryError(reason::WRONG_FIELD_COUNT))?;
    check_username(username)?;
    let (dir, port, files) = match rest {
        [] => return Err(QueryError(reason::WRONG_FIELD_COUNT)),
        [p, files @ ..] if parse_port(p).is_some() => (None, parse_port(p), files),
        [d, p, files @ ..] if parse_port(p).is_some() => (Some(*d), parse_port(p), files),
        _ => return Err(QueryError(reason::INVALID_PORT)),
    };
    let port = port.ok_or(QueryError(reason::INVALID_PORT))?;
    if let Some(d) = dir {
        if d.len() > MAX_DIR_LEN {
            return Err(QueryError(reason::LINE_TOO_LONG));
        }
        // Found by fuzzing: a control character here (a lone `\n` in a legacy query)
        // would be echoed into logs and re-framed queries.
        if d.chars().any(char::is_control) {
            return Err(QueryError(reason::INVALID_DIRECTORY));
        }
    }
    let files: Vec<&str> = files.iter().copied().filter(|f| !f.is_empty()).collect();
    if files.len() > MAX_FILES_PER_USER {
        return Err(QueryError(reason::TOO_MANY_FILES));
    }
    for f in &files {
        check_filename(f)?;
    }
    Ok(Query::Init {
        username,
        dir,
        port,
        files,
    })
}

/// A registry answer as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `OK` with its comma-separated fields (for `GET_AF`, the lines after `OK,`).
    Ok(Vec<String>),
    /// `UP`: the registration was updated.
    Up,
    /// `ERR,<reason>`.
    Err(String),
}

/// Parse a single-line answer (`OK…`, `UP`, `ERR,…`), terminator removed.
///
/// ```
/// use p2pcore::protocol::{parse_answer, Answer};
/// assert_eq!(parse_answer("OK,alice,bob").unwrap(), Answer::Ok(vec!["alice".into(), "bob".into()]));
/// assert_eq!(parse_answer("OK").unwrap(), Answer::Ok(vec![]));
/// ```
pub fn parse_answer(line: &str) -> Result<Answer, String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.len() > crate::limits::MAX_ANSWER_LEN {
        return Err("answer too long".into());
    }
    if line == "UP" {
        return Ok(Answer::Up);
    }
    if let Some(r) = line.strip_prefix("ERR") {
        return Ok(Answer::Err(r.strip_prefix(',').unwrap_or(r).to_string()));
    }
    if let Some(rest) = line.strip_prefix("OK") {
        let fields = match rest.strip_prefix(',') {
            None if rest.is_empty() => Vec::new(),
            None => return Err(format!("malformed answer: {line:?}")),
            Some("") => Vec::new(),
            Some(rest) => rest.split(',').map(str::to_string).collect(),
        };
        return Ok(Answer::Ok(fields));
    }
    Err(format!("malformed answer: {line:?}"))
}

/// One line of a `GET_AF` answer: `user: f1,f2,…`.
///
/// ```
/// let (u, f) = p2pcore::protocol::parse_files_line("bob: a.txt,b.txt").unwrap();
/// assert_eq!((u, f), ("bob".to_string(), vec!["a.txt".to_string(), "b.txt".to_string()]));
/// ```
pub fn parse_files_line(line: &str) -> Result<(String, Vec<String>), String> {
    let (user, files) = line
        .split_once(':')
        .ok_or_else(|| format!("malformed file list line: {line:?}"))?;
    let files = files.trim_start();
    let files = if files.is_empty() {
        Vec::new()
    } else {
        files.split(',').map(str::to_string).collect()
    };
    Ok((user.to_string(), files))
}

/// The first token of every peer-protocol request and answer of this version.
pub const PEER_VERSION: &str = "P2P/1";

/// A request one peer sends another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRequest {
    /// Ask for a chat. `legacy`: sent by an original C++ client (raw, unframed chat).
    Chat { from: String, legacy: bool },
    /// Ask for a file from byte `offset` on. `legacy`: raw bytes, errors only as a close.
    File {
        name: String,
        offset: u64,
        legacy: bool,
    },
}

impl PeerRequest {
    /// The request line, `\n`-terminated (the legacy forms are never sent by p2pchat).
    pub fn to_line(&self) -> String {
        match self {
            PeerRequest::Chat { from, .. } => format!("{PEER_VERSION} CHAT {from}\n"),
            PeerRequest::File { name, offset, .. } => {
                format!("{PEER_VERSION} FILE {offset} {name}\n")
            }
        }
    }
}

/// Why a peer request could not be parsed; sent back as `ERR <code> <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerProtocolError {
    pub code: &'static str,
    pub text: String,
}

impl PeerProtocolError {
    fn new(code: &'static str, text: impl Into<String>) -> Self {
        PeerProtocolError {
            code,
            text: text.into(),
        }
    }
}

/// Parse the first message on a peer connection: either a versioned line (terminator
/// removed) or a legacy `CHAT,<name>` / `FILE,<name>` read that had no terminator.
///
/// ```
/// use p2pcore::protocol::{parse_peer_request, PeerRequest};
/// let r = parse_peer_request(b"P2P/1 FILE 10 my notes.txt").unwrap();
/// assert_eq!(r, PeerRequest::File { name: "my notes.txt".into(), offset: 10, legacy: false });
/// ```
pub fn parse_peer_request(line: &[u8]) -> Result<PeerRequest, PeerProtocolError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_PEER_LINE {
        return Err(PeerProtocolError::new(
            "bad-request",
            "request line too long",
        ));
    }
    let text = std::str::from_utf8(line)
        .map_err(|_| PeerProtocolError::new("bad-request", "request is not UTF-8"))?;
    // Found by fuzzing: a `\r` left in a name changed it on a round trip. No name or
    // username may hold a control character anyway.
    if text.chars().any(char::is_control) {
        return Err(PeerProtocolError::new(
            "bad-request",
            "control bytes in request",
        ));
    }
    if let Some(name) = text.strip_prefix("CHAT,") {
        return Ok(PeerRequest::Chat {
            from: name.to_string(),
            legacy: true,
        });
    }
    if let Some(name) = text.strip_prefix("FILE,") {
        return Ok(PeerRequest::File {
            name: name.to_string(),
            offset: 0,
            legacy: true,
        });
    }
    let (version, rest) = text.split_once(' ').unwrap_or((text, ""));
    if version != PEER_VERSION {
        return if version.starts_with("P2P/") {
            Err(PeerProtocolError::new(
                "version",
                format!("unsupported version, this peer speaks {PEER_VERSION}"),
            ))
        } else {
            Err(PeerProtocolError::new("bad-request", "unknown request"))
        };
    }
    let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    match kind {
        "CHAT" => {
            check_username(rest)
                .map_err(|_| PeerProtocolError::new("bad-request", "invalid username"))?;
            Ok(PeerRequest::Chat {
                from: rest.to_string(),
                legacy: false,
            })
        }
        "FILE" => {
            let (offset, name) = rest.split_once(' ').ok_or_else(|| {
                PeerProtocolError::new("bad-request", "FILE needs offset and name")
            })?;
            if offset.is_empty() || offset.len() > 20 || !offset.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(PeerProtocolError::new("bad-request", "invalid offset"));
            }
            let offset = offset
                .parse::<u64>()
                .map_err(|_| PeerProtocolError::new("bad-request", "invalid offset"))?;
            Ok(PeerRequest::File {
                name: name.to_string(),
                offset,
                legacy: false,
            })
        }
        _ => Err(PeerProtocolError::new("bad-request", "unknown request")),
    }
}

/// The answer to a peer request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAnswer {
    /// Chat accepted.
    ChatAccepted,
    /// File follows: its full `size` and BLAKE3 `hash` (hex); bytes from the requested
    /// offset come after the line.
    File { size: u64, hash: String },
    /// Refused: a stable `code` (`declined`, `not-found`, `busy`, `bad-offset`, …) and text.
    Err { code: String, text: String },
}

impl PeerAnswer {
    /// The answer line, `\n`-terminated.
    pub fn to_line(&self) -> String {
        match self {
            PeerAnswer::ChatAccepted => "OK\n".to_string(),
            PeerAnswer::File { size, hash } => format!("OK {size} {hash}\n"),
            PeerAnswer::Err { code, text } => format!("ERR {code} {text}\n"),
        }
    }
}

/// Parse an answer line (terminator removed).
pub fn parse_peer_answer(line: &str) -> Result<PeerAnswer, String> {
    if line.len() > MAX_PEER_LINE {
        return Err("answer line too long".into());
    }
    if line == "OK" {
        return Ok(PeerAnswer::ChatAccepted);
    }
    if let Some(rest) = line.strip_prefix("OK ") {
        let (size, hash) = rest.split_once(' ').ok_or("malformed file answer")?;
        let size = size.parse().map_err(|_| "malformed size in file answer")?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("malformed hash in file answer".into());
        }
        return Ok(PeerAnswer::File {
            size,
            hash: hash.to_ascii_lowercase(),
        });
    }
    if let Some(rest) = line.strip_prefix("ERR ") {
        let (code, text) = rest.split_once(' ').unwrap_or((rest, ""));
        return Ok(PeerAnswer::Err {
            code: code.to_string(),
            text: text.to_string(),
        });
    }
    Err(format!("malformed answer: {line:?}"))
}

/// A frame inside an accepted chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatFrame {
    /// `MSG <len>\n` then `len` bytes of UTF-8.
    Message(String),
    /// `BYE\n`: the sender ended the chat.
    Bye,
}

/// The header line of a chat frame; a message's payload follows it.
pub fn chat_frame_header(frame: &ChatFrame) -> String {
    match frame {
        ChatFrame::Message(m) => chat_message_header(m.len()),
        ChatFrame::Bye => "BYE\n".to_string(),
    }
}

/// The header of a chat message of `len` bytes.
pub fn chat_message_header(len: usize) -> String {
    format!("MSG {len}\n")
}

/// What a chat frame header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatHeader {
    /// A message of this many bytes follows.
    Message(usize),
    Bye,
}

/// Parse a chat frame header line (terminator removed), enforcing
/// [`MAX_CHAT_MESSAGE`].
pub fn parse_chat_header(line: &str) -> Result<ChatHeader, String> {
    if line == "BYE" {
        return Ok(ChatHeader::Bye);
    }
    let len = line
        .strip_prefix("MSG ")
        .filter(|n| !n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| format!("malformed chat frame: {:?}", truncate(line, 64)))?;
    if len > MAX_CHAT_MESSAGE {
        return Err(format!(
            "chat message of {len} bytes exceeds the limit of {MAX_CHAT_MESSAGE}"
        ));
    }
    Ok(ChatHeader::Message(len))
}

/// At most `max` bytes of `s`, cut on a character boundary (for logs and events).
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn init_form_a_and_b() {
        assert_eq!(
            parse_query(b"INIT,al,9000,x,y").unwrap(),
            Query::Init {
                username: "al",
                dir: None,
                port: 9000,
                files: vec!["x", "y"]
            }
        );
        assert_eq!(
            parse_query(b"INIT,al,/d,9000,").unwrap(),
            Query::Init {
                username: "al",
                dir: Some("/d"),
                port: 9000,
                files: vec![]
            }
        );
        assert_eq!(
            parse_query(b"INIT,al,abc").unwrap_err().0,
            reason::INVALID_PORT
        );
        assert_eq!(
            parse_query(b"INIT,al,/d,65536").unwrap_err().0,
            reason::INVALID_PORT
        );
    }

    /// Inputs that fuzzing found to break an invariant, kept as regression tests.
    #[test]
    fn fuzz_regressions() {
        let q = b"INIT,m@=EET_UF,\n=hhhhhhhz,6,,A2";
        assert_eq!(parse_query(q).unwrap_err().0, reason::INVALID_DIRECTORY);
        assert!(parse_peer_request(b"FILE,9\r\r").is_err());
        assert!(parse_peer_request(b"P2P/1 FILE 0 a\rb").is_err());
    }

    #[test]
    fn bad_usernames_are_refused() {
        for name in ["", " a", "a\nb", "x".repeat(65).as_str(), "a:b", "a\u{7f}"] {
            assert!(check_username(name).is_err(), "{name:?}");
        }
        assert!(check_username("Ünïcode user").is_ok());
    }

    proptest! {
        #[test]
        fn parse_query_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_query(&bytes);
        }

        #[test]
        fn parse_peer_request_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_peer_request(&bytes);
        }

        #[test]
        fn answers_never_panic(s in ".{0,200}") {
            let _ = parse_answer(&s);
            let _ = parse_peer_answer(&s);
            let _ = parse_chat_header(&s);
            let _ = parse_files_line(&s);
        }

        #[test]
        fn init_round_trips(user in "[a-zA-Z0-9_]{1,64}", port in 1u16..,
                            files in proptest::collection::vec("[a-zA-Z0-9 ._-]{1,40}", 0..20)) {
            let files: Vec<&str> = files.iter().map(String::as_str)
                .filter(|f| check_filename(f).is_ok()).collect();
            let q = Query::Init { username: &user, dir: None, port, files };
            let line = q.to_string();
            prop_assert_eq!(parse_query(line.as_bytes()).unwrap(), q);
        }

        #[test]
        fn peer_requests_round_trip(name in "[^\\p{Cc}]{1,100}", offset in any::<u64>()) {
            let r = PeerRequest::File { name, offset, legacy: false };
            let line = r.to_line();
            prop_assert_eq!(parse_peer_request(line.trim_end_matches('\n').as_bytes()).unwrap(), r);
        }
    }
}
