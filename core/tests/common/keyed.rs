//! A session registry for peer-link tests whose `GET_P` answers the test controls: the
//! key listed for a name (`OK,<ip>,<port>,<64 hex>`), none (`OK,<ip>,<port>`), or
//! `legacy`, and the address listed (a recording proxy in front of the real peer).
//! It speaks the session framing only (one line a query, `GET_AF` ends with an empty
//! line), answers anything else `ERR,Invalid Request!` as a registry without secured
//! links does, and forgets a connection's registrations when it closes.
#![allow(dead_code)]

use p2pcore::identity::PublicKey;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How `GET_P` lists a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    Key(PublicKey),
    Keyless,
    Legacy,
}

#[derive(Debug, Clone)]
struct User {
    conn: u64,
    addr: SocketAddr,
    files: Vec<String>,
}

#[derive(Default)]
struct State {
    users: BTreeMap<String, User>,
    listing: BTreeMap<String, Listing>,
    addr_override: BTreeMap<String, SocketAddr>,
    conns: Vec<(u64, TcpStream)>,
}

/// The registry; stops (closing every connection) on drop.
pub struct KeyedRegistry {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl KeyedRegistry {
    pub fn start() -> KeyedRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, flag) = (state.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            let next = AtomicU64::new(1);
            let mut threads = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let id = next.fetch_add(1, Ordering::SeqCst);
                        if let Ok(c) = s.try_clone() {
                            st.lock().unwrap().conns.push((id, c));
                        }
                        let st = st.clone();
                        threads.push(std::thread::spawn(move || serve(st, s, id)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for (_, c) in st.lock().unwrap().conns.drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
            for t in threads {
                let _ = t.join();
            }
        });
        KeyedRegistry {
            addr,
            state,
            stop,
            accept: Some(accept),
        }
    }

    /// `host:port` for `Peer::builder`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// How `GET_P` lists `name` from now on (default: without a key).
    pub fn list(&self, name: &str, listing: Listing) {
        self.state
            .lock()
            .unwrap()
            .listing
            .insert(name.to_string(), listing);
    }

    /// List `name` at `addr` instead of where it registered (a proxy in front of it).
    pub fn list_at(&self, name: &str, addr: SocketAddr) {
        self.state
            .lock()
            .unwrap()
            .addr_override
            .insert(name.to_string(), addr);
    }

    /// Whether `name` is registered now.
    pub fn has(&self, name: &str) -> bool {
        self.state.lock().unwrap().users.contains_key(name)
    }
}

impl Drop for KeyedRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

fn serve(state: Arc<Mutex<State>>, s: TcpStream, id: u64) {
    let peer_ip = s.peer_addr().map(|a| a.ip()).ok();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut out = s;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = line.trim_end_matches(['\n', '\r']);
        let answer = answer(&state, line, id, peer_ip);
        if out.write_all(answer.as_bytes()).is_err() {
            break;
        }
    }
    let mut st = state.lock().unwrap();
    st.users.retain(|_, u| u.conn != id);
    st.conns.retain(|(c, _)| *c != id);
}

fn answer(state: &Mutex<State>, line: &str, id: u64, ip: Option<std::net::IpAddr>) -> String {
    let fields: Vec<&str> = line.split(',').collect();
    let mut st = state.lock().unwrap();
    match fields.as_slice() {
        ["GET_U"] => {
            let names: Vec<&str> = st.users.keys().map(String::as_str).collect();
            if names.is_empty() {
                "OK\n".into()
            } else {
                format!("OK,{}\n", names.join(","))
            }
        }
        ["INIT", name, port, files @ ..] => {
            let Some(ip) = ip else {
                return "ERR,Invalid Request!\n".into();
            };
            let Ok(port) = port.parse::<u16>() else {
                return "ERR,Invalid port (expected 1-65535)\n".into();
            };
            if st.users.get(*name).is_some_and(|u| u.conn != id) {
                return "ERR,Username taken\n".into();
            }
            let again = st.users.contains_key(*name);
            st.users.insert(
                name.to_string(),
                User {
                    conn: id,
                    addr: SocketAddr::new(ip, port),
                    files: files.iter().map(|f| f.to_string()).collect(),
                },
            );
            if again {
                "UP\n".into()
            } else {
                "OK\n".into()
            }
        }
        ["EXIT", name] => {
            if st.users.get(*name).is_some_and(|u| u.conn == id) {
                st.users.remove(*name);
            }
            "OK\n".into()
        }
        ["GET_P", name] => match st.users.get(*name) {
            None => "ERR,User not found!\n".into(),
            Some(u) => {
                let addr = st.addr_override.get(*name).copied().unwrap_or(u.addr);
                let tail = match st.listing.get(*name) {
                    Some(Listing::Key(k)) => format!(",{}", k.to_hex()),
                    Some(Listing::Legacy) => ",legacy".into(),
                    Some(Listing::Keyless) | None => String::new(),
                };
                format!("OK,{},{}{tail}\n", addr.ip(), addr.port())
            }
        },
        ["GET_UF", name] => match st.users.get(*name) {
            None => "ERR,User not found!\n".into(),
            Some(u) if u.files.is_empty() => "OK\n".into(),
            Some(u) => format!("OK,{}\n", u.files.join(",")),
        },
        ["GET_AF"] => {
            let mut a = String::from("OK,\n");
            for (name, u) in &st.users {
                a.push_str(&format!("{name}: {}\n", u.files.join(",")));
            }
            a.push('\n');
            a
        }
        _ => "ERR,Invalid Request!\n".into(),
    }
}
