//! The registry, driven over real TCP connections: legacy one-shot clients, sessions,
//! ownership, limits and hostile input.

mod common;

use common::wait_until;
use p2pcore::registry::{Registry, RegistryConfig, RegistryEvent};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A client that behaves like the original C++ one: connect, one `send` with no
/// terminator, one `recv` of at most 1000 bytes, close.
fn legacy(addr: SocketAddr, query: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(query.as_bytes()).unwrap();
    let mut buf = [0u8; 1000];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A legacy query whose answer is nothing (the original server's `EXIT`): sent with
/// the sending side shut, so the registry answers (nothing) and closes.
fn legacy_silent(addr: SocketAddr, query: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(query.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A session client: `\n`-terminated queries on one kept connection.
struct Session {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Session {
    fn connect(addr: SocketAddr) -> Session {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Session {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    fn from_ip(addr: SocketAddr, ip: &str) -> Session {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let local: SocketAddr = format!("{ip}:0").parse().unwrap();
        sock.bind(&local.into()).unwrap();
        sock.connect(&addr.into()).unwrap();
        let s: TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Session {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.reader.read_line(&mut l).unwrap();
        assert!(l.ends_with('\n'), "answer not terminated: {l:?}");
        l.pop();
        l
    }

    fn ask(&mut self, q: &str) -> String {
        self.writer.write_all(format!("{q}\n").as_bytes()).unwrap();
        self.line()
    }

    /// `GET_AF`: the first line, then lines until the empty one.
    fn all_files(&mut self) -> Vec<String> {
        self.writer.write_all(b"GET_AF\n").unwrap();
        let first = self.line();
        let rest = first
            .strip_prefix("OK,")
            .expect("GET_AF answer starts with OK,");
        let mut lines = Vec::new();
        if rest.is_empty() {
            assert_eq!(self.line(), "", "empty GET_AF ends with an empty line");
            return lines;
        }
        lines.push(rest.to_string());
        loop {
            let l = self.line();
            if l.is_empty() {
                return lines;
            }
            lines.push(l);
        }
    }
}

/// These tests load the registry from one address (127.0.0.1), far past the
/// per-address bounds meant for hostile clients; those bounds have their own tests in
/// `registry_hostile.rs`.
fn start() -> Registry {
    start_with(RegistryConfig {
        max_conns_per_addr: usize::MAX,
        max_users_per_addr: usize::MAX,
        queries_per_sec_per_addr: 0,
        ..RegistryConfig::default()
    })
}

fn start_with(config: RegistryConfig) -> Registry {
    Registry::builder()
        .config(config)
        .bind("127.0.0.1:0")
        .unwrap()
}

#[test]
fn legacy_client_registers_with_form_b_and_trailing_comma() {
    let r = start();
    let a = r.local_addr();
    assert_eq!(
        legacy(a, "INIT,user1,/home/u1/share,5001,a.txt,b.txt"),
        "OK"
    );
    assert_eq!(legacy(a, "INIT,user2,/home/u2/share,5002,"), "OK");
    assert_eq!(legacy(a, "GET_U"), "OK,user1,user2");
    assert_eq!(legacy(a, "GET_P,user1"), "OK,127.0.0.1,5001");
    // The original server's bytes: no `OK,`, a comma after each file, nothing for an
    // empty share (and the registry closes, so the client does not wait for ever).
    assert_eq!(legacy(a, "GET_UF,user1"), "a.txt,b.txt,");
    assert_eq!(legacy(a, "GET_UF,user2"), "");
    assert_eq!(legacy(a, "GET_AF"), "user1: a.txt,b.txt,\nuser2: ");
    assert_eq!(legacy(a, "GET_P,nobody"), "ERR,User not found!");
    assert_eq!(legacy(a, "GET_UF,nobody"), "ERR,User not found!");
    // Re-registration by the same IP after a download refreshes the list.
    assert_eq!(legacy(a, "INIT,user2,/home/u2/share,5002,new.bin"), "UP");
    assert_eq!(legacy(a, "GET_UF,user2"), "new.bin,");
    assert_eq!(legacy_silent(a, "EXIT,user1"), "");
    assert_eq!(legacy(a, "GET_U"), "OK,user2");
}

#[test]
fn documented_form_a_is_accepted() {
    let r = start();
    assert_eq!(legacy(r.local_addr(), "INIT,alice,6000,x.txt,y.txt"), "OK");
    assert_eq!(r.user("alice").unwrap().files, vec!["x.txt", "y.txt"]);
    assert_eq!(r.user("alice").unwrap().port, 6000);
}

#[test]
fn empty_registry_still_answers_every_query() {
    let r = start();
    let a = r.local_addr();
    assert_eq!(legacy(a, "GET_U"), "OK,");
    assert_eq!(legacy(a, "GET_AF"), "");
    let mut s = Session::connect(a);
    assert_eq!(s.ask("GET_U"), "OK");
    assert!(s.all_files().is_empty());
}

#[test]
fn several_legacy_queries_on_one_connection_each_get_an_answer() {
    let r = start();
    let mut s = TcpStream::connect(r.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1000];
    for q in ["INIT,bob,/s,7000,f", "GET_U", "GET_P,bob"] {
        s.write_all(q.as_bytes()).unwrap();
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
    }
}

#[test]
fn unterminated_query_split_across_writes_is_joined_within_the_grace_period() {
    let r = start();
    let mut s = TcpStream::connect(r.local_addr()).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // "GET_" does not parse, so the registry waits for the rest.
    s.write_all(b"GET_").unwrap();
    std::thread::sleep(Duration::from_millis(5));
    s.write_all(b"U").unwrap();
    let mut buf = [0u8; 100];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"OK,",
        "the original's answer with nobody online"
    );
}

#[test]
fn session_answers_are_terminated_and_get_af_ends_with_an_empty_line() {
    let r = start();
    let mut s = Session::connect(r.local_addr());
    assert_eq!(s.ask("INIT,carol,7001,one.txt,two words.txt"), "OK");
    assert_eq!(s.ask("INIT,carol,7001,three.txt"), "UP");
    assert_eq!(s.ask("GET_P,carol"), "OK,127.0.0.1,7001");
    assert_eq!(s.all_files(), vec!["carol: three.txt"]);
    assert_eq!(s.ask("BOGUS"), "ERR,Invalid Request!");
    assert_eq!(s.ask("GET_U"), "OK,carol");
}

#[test]
fn get_af_with_100000_users_is_framed_and_complete() {
    let r = start();
    let mut s = Session::connect(r.local_addr());
    // Pipeline the registrations from a writer thread while reading the answers here.
    let mut w = s.writer.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut batch = String::new();
        for i in 0..100_000 {
            batch.push_str(&format!(
                "INIT,user{i:06},{},f{i}.txt,g.txt\n",
                1000 + i % 60000
            ));
            if batch.len() > 64 * 1024 {
                w.write_all(batch.as_bytes()).unwrap();
                batch.clear();
            }
        }
        w.write_all(batch.as_bytes()).unwrap();
    });
    for _ in 0..100_000 {
        assert_eq!(s.line(), "OK");
    }
    writer.join().unwrap();
    let lines = s.all_files();
    assert_eq!(lines.len(), 100_000);
    assert_eq!(lines[0], "user000000: f0.txt,g.txt");
    assert_eq!(lines[99_999], "user099999: f99999.txt,g.txt");
    // The connection is still usable afterwards.
    assert_eq!(s.ask("GET_P,user000042"), "OK,127.0.0.1,1042");
}

/// Run as a child process by `session_registration_vanishes_when_its_process_is_killed`.
#[test]
#[ignore]
fn child_holds_a_session() {
    let Ok(addr) = std::env::var("P2P_TEST_REGISTRY") else {
        return;
    };
    let mut s = Session::connect(addr.parse().unwrap());
    assert_eq!(s.ask("INIT,doomed,7100,x"), "OK");
    println!("REGISTERED");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn session_registration_vanishes_when_its_process_is_killed() {
    let r = start();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_holds_a_session",
            "--ignored",
            "--nocapture",
        ])
        .env("P2P_TEST_REGISTRY", r.local_addr().to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("REGISTERED") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
    }
    assert_eq!(r.users(), vec!["doomed"]);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed = Instant::now();
    let mut s = Session::connect(r.local_addr());
    assert!(wait_until(Duration::from_secs(1), || s.ask("GET_U") == "OK"));
    assert!(killed.elapsed() < Duration::from_secs(1));
}

#[test]
fn session_registration_vanishes_when_the_connection_closes() {
    let r = start();
    let mut s = Session::connect(r.local_addr());
    assert_eq!(s.ask("INIT,brief,7200"), "OK");
    drop(s);
    assert!(wait_until(Duration::from_secs(1), || r.users().is_empty()));
}

#[test]
fn legacy_registration_lives_until_its_lease_ends() {
    let r = start_with(RegistryConfig {
        legacy_lease: Duration::from_millis(300),
        ..RegistryConfig::default()
    });
    assert_eq!(legacy(r.local_addr(), "INIT,old,/d,7300,"), "OK");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(r.users(), vec!["old"], "connection closed, still listed");
    assert!(wait_until(Duration::from_secs(3), || r.users().is_empty()));
}

#[test]
fn a_legacy_registration_lives_on_while_its_ip_keeps_querying() {
    let r = start_with(RegistryConfig {
        legacy_lease: Duration::from_millis(400),
        ..RegistryConfig::default()
    });
    assert_eq!(legacy(r.local_addr(), "INIT,browsing,/d,7300,"), "OK");
    // Three leases long, the original client keeps browsing (any query counts).
    let until = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < until {
        assert_eq!(legacy(r.local_addr(), "GET_U"), "OK,browsing");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Then it falls silent, and the lease runs out.
    assert!(wait_until(Duration::from_secs(3), || r.users().is_empty()));
}

#[test]
fn exit_or_init_from_another_session_is_refused() {
    let r = start();
    let mut owner = Session::connect(r.local_addr());
    let mut other = Session::connect(r.local_addr());
    assert_eq!(owner.ask("INIT,dave,7400,a"), "OK");
    assert_eq!(other.ask("INIT,dave,9999,evil"), "ERR,Username taken");
    assert_eq!(other.ask("EXIT,dave"), "ERR,Not the owner of this username");
    assert_eq!(other.ask("GET_P,dave"), "OK,127.0.0.1,7400");
    assert_eq!(owner.ask("EXIT,dave"), "OK");
    assert_eq!(other.ask("GET_U"), "OK");
}

#[test]
fn legacy_registration_is_owned_by_its_ip() {
    let r = start();
    let a = r.local_addr();
    assert_eq!(legacy(a, "INIT,erin,/d,7500,a"), "OK");
    let mut stranger = Session::from_ip(a, "127.0.0.2");
    assert_eq!(
        stranger.ask("EXIT,erin"),
        "ERR,Not the owner of this username"
    );
    assert_eq!(stranger.ask("INIT,erin,7501,b"), "ERR,Username taken");
    assert_eq!(r.user("erin").unwrap().port, 7500);
    // The registry records the address it sees, not one from the message.
    assert_eq!(stranger.ask("INIT,frank,7600"), "OK");
    assert_eq!(stranger.ask("GET_P,frank"), "OK,127.0.0.2,7600");
    assert_eq!(legacy_silent(a, "EXIT,erin"), "");
}

#[test]
fn bad_fields_get_clear_errors_and_the_server_keeps_serving() {
    let r = start();
    let mut s = Session::connect(r.local_addr());
    let cases = [
        ("INIT,x,abc,f", "ERR,Invalid port (expected 1-65535)"),
        ("INIT,x,/d,abc,f", "ERR,Invalid port (expected 1-65535)"),
        ("INIT,x,0", "ERR,Invalid port (expected 1-65535)"),
        ("INIT,x,-1", "ERR,Invalid port (expected 1-65535)"),
        ("INIT,x,65536", "ERR,Invalid port (expected 1-65535)"),
        ("INIT,,7000", "ERR,Invalid username"),
        ("INIT,a\u{1}b,7000", "ERR,Invalid username"),
        ("INIT, padded,7000", "ERR,Invalid username"),
        ("INIT", "ERR,Wrong number of fields"),
        ("GET_P", "ERR,Wrong number of fields"),
        ("GET_P,a,b", "ERR,Wrong number of fields"),
        ("GET_U,extra", "ERR,Wrong number of fields"),
        ("INIT,x,7000,bad\u{7}name", "ERR,Invalid filename"),
        ("get_u", "ERR,Invalid Request!"),
        ("", "ERR,Invalid Request!"),
    ];
    for (q, want) in cases {
        assert_eq!(s.ask(q), want, "query {q:?}");
    }
    let long_name = format!("INIT,{},7000", "n".repeat(65));
    assert_eq!(s.ask(&long_name), "ERR,Invalid username");
    let many_files = format!("INIT,x,7000{}", ",f".repeat(4097));
    assert_eq!(s.ask(&many_files), "ERR,Too many files");
    let many_fields = format!("GET_U{}", ",".repeat(100_000));
    assert_eq!(s.ask(&many_fields), "ERR,Too many fields");
    s.writer.write_all(b"GET_P,\xff\xfe\n").unwrap();
    assert_eq!(s.line(), "ERR,Query is not valid UTF-8");
    s.writer.write_all(b"GET_P,a\0b\n").unwrap();
    assert_eq!(s.line(), "ERR,Invalid Request!");
    assert!(r.users().is_empty());
    assert_eq!(s.ask("INIT,ok,7000"), "OK");
}

#[test]
fn nul_byte_from_a_legacy_client_gets_an_error() {
    let r = start();
    assert_eq!(legacy(r.local_addr(), "GET_P,\0"), "ERR,Invalid Request!");
    assert_eq!(legacy(r.local_addr(), "GET_U"), "OK,");
}

#[test]
fn a_5000_byte_legacy_query_is_answered() {
    let r = start();
    let files: Vec<String> = (0..500).map(|i| format!("file{i:05}.t")).collect();
    let q = format!("INIT,big,/d,7000,{}", files.join(","));
    assert!(q.len() > 5000);
    assert_eq!(legacy(r.local_addr(), &q), "OK");
    assert_eq!(r.user("big").unwrap().files.len(), 500);
}

#[test]
fn an_overlong_line_is_refused_and_the_connection_closed() {
    let r = start();
    let s = TcpStream::connect(r.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // 1 MiB with no newline: the registry answers once it has seen the limit pass.
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![b'A'; 64 * 1024];
            for _ in 0..16 {
                if s.write_all(&chunk).is_err() {
                    break;
                }
            }
        })
    };
    let mut answer = String::new();
    BufReader::new(s.try_clone().unwrap())
        .read_line(&mut answer)
        .unwrap();
    assert_eq!(answer, "ERR,Query too long\n");
    writer.join().unwrap();
    assert_eq!(legacy(r.local_addr(), "GET_U"), "OK,");
}

#[test]
fn a_query_that_never_completes_times_out() {
    let r = start_with(RegistryConfig {
        query_timeout: Duration::from_millis(300),
        ..RegistryConfig::default()
    });
    let mut s = Session::connect(r.local_addr());
    assert_eq!(s.ask("GET_U"), "OK");
    // A session's partial line waits, one byte at a time, until the query timeout.
    for b in b"GET_P,slo" {
        s.writer.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.line(), "ERR,Query timed out");
    let mut rest = Vec::new();
    assert_eq!(
        s.reader.read_to_end(&mut rest).unwrap(),
        0,
        "closed after the error"
    );
}

#[test]
fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let r = start_with(RegistryConfig {
        idle_timeout: Duration::from_millis(200),
        ..RegistryConfig::default()
    });
    let mut s = TcpStream::connect(r.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"ERR,Query timed out\n");
}

#[test]
fn a_session_holding_a_registration_is_not_idle_closed() {
    let r = start_with(RegistryConfig {
        idle_timeout: Duration::from_millis(100),
        ..RegistryConfig::default()
    });
    let mut s = Session::connect(r.local_addr());
    assert_eq!(s.ask("INIT,stay,7000"), "OK");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(s.ask("GET_U"), "OK,stay");
}

#[test]
fn user_limit_gives_registry_full() {
    let r = start_with(RegistryConfig {
        max_users: 2,
        ..RegistryConfig::default()
    });
    let mut s = Session::connect(r.local_addr());
    assert_eq!(s.ask("INIT,a,7000"), "OK");
    assert_eq!(s.ask("INIT,b,7000"), "OK");
    assert_eq!(s.ask("INIT,c,7000"), "ERR,Registry full");
    assert_eq!(s.ask("INIT,a,7001"), "UP", "updates still work when full");
}

#[test]
fn connection_limit_refuses_with_busy() {
    let r = start_with(RegistryConfig {
        max_connections: 2,
        ..RegistryConfig::default()
    });
    let mut a = Session::connect(r.local_addr());
    let _b = Session::connect(r.local_addr());
    assert_eq!(a.ask("GET_U"), "OK");
    let mut c = Session::connect(r.local_addr());
    assert_eq!(c.line(), "ERR,Server busy");
}

#[test]
fn a_client_closing_before_reading_its_answer_does_not_hurt_the_server() {
    let r = start();
    let mut s = Session::connect(r.local_addr());
    for i in 0..2000 {
        assert_eq!(s.ask(&format!("INIT,u{i},7000,{}", "f".repeat(200))), "OK");
    }
    for _ in 0..20 {
        let mut c = TcpStream::connect(r.local_addr()).unwrap();
        c.write_all(b"GET_AF\n").unwrap();
        c.shutdown(Shutdown::Both).unwrap();
    }
    assert_eq!(s.ask("GET_P,u7"), "OK,127.0.0.1,7000");
}

#[test]
fn fifty_concurrent_inits_lose_nothing() {
    let r = start();
    let addr = r.local_addr();
    let threads: Vec<_> = (0..50)
        .map(|i| std::thread::spawn(move || legacy(addr, &format!("INIT,p{i},/d,{},", 8000 + i))))
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), "OK");
    }
    assert_eq!(r.user_count(), 50);
}

#[test]
fn every_query_is_reported_to_the_hook() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let r = Registry::builder()
        .on_event(move |e| sink.lock().unwrap().push(e.clone()))
        .bind("127.0.0.1:0")
        .unwrap();
    assert_eq!(legacy(r.local_addr(), "GET_P,ghost"), "ERR,User not found!");
    let mut s = Session::connect(r.local_addr());
    assert_eq!(s.ask("INIT,hooked,7000"), "OK");
    drop(s);
    assert!(wait_until(Duration::from_secs(1), || r.users().is_empty()));
    // The hook hears of the end once the loop has released the name: wait for it (a
    // loaded machine may run the test thread first).
    let released = |e: &RegistryEvent| matches!(e, RegistryEvent::Disconnected { released, .. } if released == &vec!["hooked".to_string()]);
    assert!(wait_until(Duration::from_secs(10), || seen
        .lock()
        .unwrap()
        .iter()
        .any(released)));
    let events = seen.lock().unwrap().clone();
    let queries: Vec<(String, String, bool)> = events
        .iter()
        .filter_map(|e| match e {
            RegistryEvent::Query {
                query,
                outcome,
                legacy,
                ..
            } => Some((query.clone(), outcome.clone(), *legacy)),
            _ => None,
        })
        .collect();
    assert_eq!(
        queries,
        vec![
            ("GET_P,ghost".into(), "ERR,User not found!".into(), true),
            ("INIT,hooked,7000".into(), "OK".into(), false)
        ]
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, RegistryEvent::Connected { .. })));
}

#[test]
fn shutdown_closes_every_connection() {
    let r = start();
    let mut s = Session::connect(r.local_addr());
    assert_eq!(s.ask("INIT,z,7000"), "OK");
    r.shutdown();
    let mut rest = Vec::new();
    assert_eq!(s.reader.read_to_end(&mut rest).unwrap_or(0), 0);
    assert!(TcpStream::connect(s.writer.peer_addr().unwrap()).is_err());
}

#[test]
fn a_panicking_hook_does_not_stop_the_registry() {
    let r = Registry::builder()
        .on_event(|_| panic!("a buggy application hook"))
        .bind("127.0.0.1:0")
        .unwrap();
    for _ in 0..3 {
        assert_eq!(legacy(r.local_addr(), "GET_U"), "OK,");
    }
    let mut s = Session::connect(r.local_addr());
    assert_eq!(s.ask("INIT,still,7000"), "OK");
}
