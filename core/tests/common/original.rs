//! Emulations of the original C++ programs, written from the record of their wire
//! behaviour (`/work/shared/PROTOCOL.md`, `docs/PROTOCOL.md` §1.6 and §2.4), for the
//! interoperability tests:
//!
//! * [`OriginalServer`]: a thread per connection; each query is one `recv` of at most
//!   1000 bytes into a zeroed 1000-byte buffer read as a C string and split on commas
//!   like `getline(ss, token, ',')`; `INIT` is form B only (`INIT,user,dir,port,…`,
//!   at least 4 fields, port through `stoi`); its exact answers, and silences
//!   (zero-length sends). Whatever would crash the original (`stoi` throwing on a
//!   non-numeric or out-of-range port, `tokens[0]` of an empty read, a 1000-byte read
//!   with no terminating zero) is recorded as a crash and ends the whole server.
//! * [`OriginalPeer`]: understands `CHAT,<name>` and `FILE,<name>` only, one accept at
//!   a time, reads each with one `recv` of 1000 bytes; anything else is ignored and
//!   its connection left open, as the original did.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The original's token split: `getline(ss, token, ',')` over a C string gives no
/// token for an empty string and none after a trailing comma.
pub fn tokens(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut t: Vec<String> = s.split(',').map(str::to_string).collect();
    if s.ends_with(',') {
        t.pop();
    }
    t
}

/// `std::stoi`: leading whitespace, optional sign, at least one digit, within `int`;
/// `None` where it throws (the original then dies with SIGABRT).
pub fn stoi(s: &str) -> Option<i32> {
    let t = s.trim_start();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n: String = digits.chars().take_while(char::is_ascii_digit).collect();
    if n.is_empty() {
        return None;
    }
    let v: i64 = n.parse().ok()?;
    let v = if neg { -v } else { v };
    i32::try_from(v).ok()
}

#[derive(Debug, Clone)]
struct Entry {
    ip: String,
    port: i32,
    files: Vec<String>,
}

#[derive(Default)]
struct ServerState {
    peers: BTreeMap<String, Entry>,
    /// Every query as received (the C string).
    queries: Vec<String>,
    /// Why the emulated server died, if it did.
    crash: Option<String>,
}

/// The original registry server, emulated (see the module notes).
pub struct OriginalServer {
    addr: SocketAddr,
    state: Arc<Mutex<ServerState>>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl OriginalServer {
    pub fn start() -> OriginalServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ServerState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (st, sp, cs) = (state.clone(), stop.clone(), conns.clone());
        let accept = std::thread::spawn(move || {
            let mut handlers = Vec::new();
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(c) = conn.try_clone() {
                    cs.lock().unwrap().push(c);
                }
                let (st, sp, cs) = (st.clone(), sp.clone(), cs.clone());
                handlers.push(std::thread::spawn(move || {
                    let c = conn.try_clone();
                    serve(conn, st, sp, cs);
                    // `close(connfd)`: a clone is kept for Drop, so shut it explicitly.
                    if let Ok(c) = c {
                        let _ = c.shutdown(Shutdown::Both);
                    }
                }));
            }
            for h in handlers {
                let _ = h.join();
            }
        });
        OriginalServer {
            addr,
            state,
            stop,
            conns,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every query received so far.
    pub fn queries(&self) -> Vec<String> {
        self.state.lock().unwrap().queries.clone()
    }

    /// Why it crashed, if it did.
    pub fn crash(&self) -> Option<String> {
        self.state.lock().unwrap().crash.clone()
    }

    /// The registered usernames.
    pub fn users(&self) -> Vec<String> {
        self.state.lock().unwrap().peers.keys().cloned().collect()
    }

    /// Register `name` as its own client would (for tests that need an original user
    /// without going through a socket).
    pub fn files_of(&self, name: &str) -> Option<Vec<String>> {
        self.state
            .lock()
            .unwrap()
            .peers
            .get(name)
            .map(|e| e.files.clone())
    }
}

/// Ends an original program's accept loop listening on `addr`: sets `stop`, shuts its
/// open connections, wakes the loop with a connection of our own and joins it.
fn stop_listening(
    stop: &AtomicBool,
    conns: &Mutex<Vec<TcpStream>>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
) {
    stop.store(true, Ordering::SeqCst);
    for c in conns.lock().unwrap().drain(..) {
        let _ = c.shutdown(Shutdown::Both);
    }
    let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    if let Some(a) = accept {
        let _ = a.join();
    }
}

impl Drop for OriginalServer {
    fn drop(&mut self) {
        stop_listening(&self.stop, &self.conns, self.addr, self.accept.take());
    }
}

fn die(state: &Mutex<ServerState>, stop: &AtomicBool, conns: &Mutex<Vec<TcpStream>>, why: String) {
    let mut s = state.lock().unwrap();
    s.crash.get_or_insert(why);
    stop.store(true, Ordering::SeqCst);
    for c in conns.lock().unwrap().drain(..) {
        let _ = c.shutdown(Shutdown::Both);
    }
}

fn serve(
    mut conn: TcpStream,
    state: Arc<Mutex<ServerState>>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
) {
    let ip = conn
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    loop {
        let mut buf = [0u8; 1000];
        let n = match conn.read(&mut buf) {
            Ok(n) if n > 0 => n,
            _ => return,
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(end) = buf.iter().position(|&b| b == 0) else {
            let why = format!("a {n}-byte read fills the buffer: no terminating zero");
            return die(&state, &stop, &conns, why);
        };
        let query = String::from_utf8_lossy(&buf[..end]).into_owned();
        state.lock().unwrap().queries.push(query.clone());
        let t = tokens(&query);
        if t.is_empty() {
            return die(&state, &stop, &conns, "tokens[0] of an empty query".into());
        }
        let answer: Option<String> = if t.len() >= 4 && t[0] == "INIT" {
            let Some(port) = stoi(&t[3]) else {
                let why = format!("stoi({:?}) throws: {query:?}", t[3]);
                return die(&state, &stop, &conns, why);
            };
            let mut s = state.lock().unwrap();
            let fresh = !s.peers.contains_key(&t[1]);
            s.peers.insert(
                t[1].clone(),
                Entry {
                    ip: ip.clone(),
                    port,
                    files: t[4..].to_vec(),
                },
            );
            Some(if fresh { "OK" } else { "UP" }.to_string())
        } else if t.len() == 2 && t[0] == "EXIT" {
            state.lock().unwrap().peers.remove(&t[1]);
            None
        } else {
            let s = state.lock().unwrap();
            Some(match (t.len(), t[0].as_str()) {
                (1, "GET_U") => {
                    let names: Vec<&str> = s.peers.keys().map(String::as_str).collect();
                    format!("OK,{}", names.join(","))
                }
                (2, "GET_P") => match s.peers.get(&t[1]) {
                    Some(e) => format!("OK,{},{}", e.ip, e.port),
                    None => "ERR,User not found!".into(),
                },
                (1, "GET_AF") => s
                    .peers
                    .iter()
                    .map(|(name, e)| format!("{name}: {}", with_commas(&e.files)))
                    .collect::<Vec<_>>()
                    .join("\n"),
                (2, "GET_UF") => match s.peers.get(&t[1]) {
                    Some(e) => with_commas(&e.files),
                    None => "ERR,User not found!".into(),
                },
                _ => "ERR,Invalid Request!".into(),
            })
        };
        if let Some(a) = answer {
            // A zero-length answer is a zero-length send: nothing on the wire.
            if conn.write_all(a.as_bytes()).is_err() {
                return;
            }
        }
    }
}

fn with_commas(files: &[String]) -> String {
    files.iter().map(|f| format!("{f},")).collect()
}

/// One legacy query the way the original client makes it: its own connection, one
/// send, one `recv` of at most 1000 bytes, close. `None` if the answer was nothing
/// before the connection closed or `wait` passed.
pub fn original_client_query(addr: SocketAddr, query: &str, wait: Duration) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(query.as_bytes()).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1000];
    match s.read(&mut buf) {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(buf[..n].to_vec()),
    }
}

/// One legacy query, reading the whole answer: send, shut the sending side, read until
/// the server closes (both servers close once the client has).
pub fn legacy_query_whole(addr: SocketAddr, query: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(query.as_bytes()).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

/// What an emulated original peer saw.
#[derive(Debug, Default)]
pub struct PeerLog {
    /// Each chat `recv` as the original got it (one printed line each).
    pub chat_reads: Vec<Vec<u8>>,
    /// Requests it ignored (anything but `CHAT,`/`FILE,`).
    pub ignored: Vec<String>,
    /// Chat requests it saw, by requester.
    pub chat_requests: Vec<String>,
    /// Files asked for.
    pub file_requests: Vec<String>,
    /// Whether a chat ended (the other side closed).
    pub chat_ended: bool,
}

/// How an emulated original peer answers a chat request.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// Its person types 9 at once.
    Accept,
    /// Nobody types 9: after its 5 s it closes (`shutdown(connfd, 2)`).
    Ignore,
}

/// The original client's peer side, emulated (see the module notes).
pub struct OriginalPeer {
    addr: SocketAddr,
    pub log: Arc<Mutex<PeerLog>>,
    /// Lines "typed" into the open chat: each goes out as one `send`.
    pub say: crossbeam_channel::Sender<String>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl OriginalPeer {
    /// Serve `dir`'s files; answer chat requests with `answer`.
    pub fn start(dir: PathBuf, answer: Answer) -> OriginalPeer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(PeerLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (say, said) = crossbeam_channel::unbounded::<String>();
        let (lg, sp, op) = (log.clone(), stop.clone(), open.clone());
        let accept = std::thread::spawn(move || {
            let mut senders = Vec::new();
            // One connection at a time, as the original's accept loop.
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                if let Ok(c) = conn.try_clone() {
                    op.lock().unwrap().push(c);
                }
                let mut buf = [0u8; 1000];
                let n = match conn.read(&mut buf) {
                    Ok(n) if n > 0 => n,
                    _ => continue,
                };
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                let t = tokens(&request);
                match t.first().map(String::as_str) {
                    Some("CHAT") => {
                        lg.lock()
                            .unwrap()
                            .chat_requests
                            .push(t.get(1).cloned().unwrap_or_default());
                        if let Answer::Ignore = answer {
                            std::thread::sleep(Duration::from_secs(5));
                            let _ = conn.shutdown(Shutdown::Both);
                            continue;
                        }
                        chat(conn, &lg, &said, &sp);
                    }
                    Some("FILE") => {
                        let name = t.get(1).cloned().unwrap_or_default();
                        lg.lock().unwrap().file_requests.push(name.clone());
                        let path = dir.join(&name);
                        senders.push(std::thread::spawn(move || match std::fs::read(path) {
                            Ok(bytes) => {
                                for c in bytes.chunks(1000) {
                                    if conn.write_all(c).is_err() {
                                        return;
                                    }
                                }
                                // `close(connfd)` (a clone is kept for Drop).
                                let _ = conn.shutdown(Shutdown::Both);
                            }
                            Err(_) => {
                                let _ = conn.shutdown(Shutdown::Both);
                            }
                        }));
                    }
                    _ => lg.lock().unwrap().ignored.push(request),
                }
            }
            for s in senders {
                let _ = s.join();
            }
        });
        OriginalPeer {
            addr,
            log,
            say,
            stop,
            open,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Register with a registry as the original client does: `INIT,user,dir,port,files`
    /// (form B), one connection, one recv.
    pub fn register(&self, registry: SocketAddr, user: &str, files: &[&str]) -> Vec<u8> {
        let mut q = format!("INIT,{user},/home/{user}/share,{},", self.addr.port());
        q.push_str(&files.join(","));
        original_client_query(registry, &q, Duration::from_secs(5)).unwrap_or_default()
    }
}

impl Drop for OriginalPeer {
    fn drop(&mut self) {
        stop_listening(&self.stop, &self.open, self.addr, self.accept.take());
    }
}

/// The original's chat: one thread reads with `recv(1000)` and logs each read; lines
/// from `said` go out as one `send` each. Ends when the other side closes.
fn chat(
    conn: TcpStream,
    log: &Arc<Mutex<PeerLog>>,
    said: &crossbeam_channel::Receiver<String>,
    stop: &AtomicBool,
) {
    let mut reader = conn.try_clone().unwrap();
    let lg = log.clone();
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let r = std::thread::spawn(move || loop {
        let mut buf = [0u8; 1000];
        match reader.read(&mut buf) {
            Ok(n) if n > 0 => lg.lock().unwrap().chat_reads.push(buf[..n].to_vec()),
            _ => {
                lg.lock().unwrap().chat_ended = true;
                d.store(true, Ordering::SeqCst);
                return;
            }
        }
    });
    let mut w = conn;
    while !done.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
        if let Ok(line) = said.recv_timeout(Duration::from_millis(50)) {
            let _ = w.write_all(line.as_bytes());
        }
    }
    let _ = w.shutdown(Shutdown::Both);
    let _ = r.join();
}

/// Poll `f` until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
