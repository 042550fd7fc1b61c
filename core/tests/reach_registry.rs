//! The registry's side of reaching peers behind NATs (`docs/PROTOCOL.md` §5), over
//! real loopback sockets and real `REG/2` sessions: the reachability check of a
//! listener (answering, closed, silent), `GET_P`'s reach field, watch sessions and
//! their pushes, `CONNECT` and `RELAY` with their refusals and rate cap, and the bounds
//! (prober threads and descriptors under a flood of registrations, a watcher that
//! never reads).
//!
//! The bound tests measure this process's threads (`/proc/self/task`) and
//! descriptors (`/proc/self/fd`): they hold a lock so they do not run alongside the
//! others.

mod common;

use common::{closed_port, legacy, wait_until, Enc, Plain};
use p2pcore::identity::Identity;
use p2pcore::reach::{probe_answer, Preamble, Push, Reach, Token};
use p2pcore::registry::{Registry, RegistryConfig, RegistryEvent};
use p2pcore::relay::{token, RelayAddr, RelayOffer, RelaySecret};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Serializes the tests that measure the whole process.
static MEASURED: Mutex<()> = Mutex::new(());

fn measured() -> std::sync::MutexGuard<'static, ()> {
    MEASURED.lock().unwrap_or_else(|e| e.into_inner())
}

fn start(config: RegistryConfig) -> Registry {
    Registry::builder()
        .config(config)
        .bind("127.0.0.1:0")
        .unwrap()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// What only these tests ask of a session.
impl Enc {
    /// The next pushed line, parsed.
    fn push(&mut self) -> Push {
        let line = self.line().unwrap();
        Push::parse(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }
}

/// How a fake listener treats a connection.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Answers a probe correctly, once `gate` is open.
    Answer,
    /// Accepts and says nothing.
    Silent,
}

/// A fake peer listener on 127.0.0.1 that records the first line of every connection.
struct Listener {
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    gate: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn start(behaviour: Behaviour, gate_open: bool) -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(AtomicBool::new(gate_open));
        let stop = Arc::new(AtomicBool::new(false));
        let (ls, g, st) = (lines.clone(), gate.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !st.load(Ordering::SeqCst) {
                let Ok((s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut line = String::new();
                let _ = BufReader::new(s.try_clone().unwrap()).read_line(&mut line);
                let line = line.trim_end().to_string();
                ls.lock().unwrap().push(line.clone());
                if behaviour == Behaviour::Silent {
                    held.push(s);
                    continue;
                }
                while !g.load(Ordering::SeqCst) && !st.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if let Some(Ok(Preamble::Probe(t))) = Preamble::parse(line.as_bytes()) {
                    let mut s = s;
                    let _ = s.write_all(probe_answer(t).as_bytes());
                }
            }
        });
        Listener {
            addr,
            lines,
            gate,
            stop,
            thread: Some(thread),
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reach field of a session `GET_P` answer for a user with a key.
fn reach_in(answer: &str) -> Reach {
    let fields: Vec<&str> = answer.split(',').collect();
    assert_eq!(fields.len(), 5, "{answer:?}");
    Reach::parse(fields[4]).unwrap()
}

fn wait_reach(r: &Registry, user: &str, want: Reach, limit: Duration) -> bool {
    wait_until(limit, || r.user(user).is_some_and(|u| u.reach == want))
}

#[test]
fn an_answering_listener_is_reachable_in_get_p_the_event_and_a_push() {
    let _m = measured();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let r = Registry::builder()
        .on_event(move |e| seen.lock().unwrap().push(e.clone()))
        .bind("127.0.0.1:0")
        .unwrap();
    // The listener holds its answer until the watch session is open.
    let l = Listener::start(Behaviour::Answer, false);
    let alice = Identity::generate().unwrap();
    let mut a = Enc::dial(r.local_addr(), &alice);
    assert_eq!(a.ask(&format!("INIT,alice,{}", l.port())), "OK");
    let mut w = Enc::dial(r.local_addr(), &alice);
    assert_eq!(
        w.ask("WATCH,alice"),
        format!("OK,127.0.0.1,{},unknown", l.port())
    );
    let hex = alice.public().to_hex();
    assert_eq!(
        a.ask("GET_P,alice"),
        format!("OK,127.0.0.1,{},{hex},unknown", l.port())
    );
    l.gate.store(true, Ordering::SeqCst);
    assert_eq!(
        w.push(),
        Push::Reach {
            reach: Reach::Reachable,
            addr: l.addr
        }
    );
    assert_eq!(
        a.ask("GET_P,alice"),
        format!("OK,127.0.0.1,{},{hex},reachable", l.port())
    );
    assert_eq!(r.user("alice").unwrap().reach, Reach::Reachable);
    // The probe went to the registered port of the session's IP, once, with a token.
    let lines = l.lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(matches!(
        Preamble::parse(lines[0].as_bytes()),
        Some(Ok(Preamble::Probe(_)))
    ));
    assert!(events.lock().unwrap().iter().any(|e| matches!(
        e,
        RegistryEvent::Reachability { user, addr, reach: Reach::Reachable }
            if user == "alice" && *addr == l.addr
    )));
    // An update on the same port is not checked again; a new port is.
    assert_eq!(a.ask(&format!("INIT,alice,{},x.txt", l.port())), "UP");
    assert_eq!(reach_in(&a.ask("GET_P,alice")), Reach::Reachable);
    let port = closed_port();
    assert_eq!(a.ask(&format!("INIT,alice,{port}")), "UP");
    assert_eq!(
        w.push(),
        Push::Reach {
            reach: Reach::Unreachable,
            addr: SocketAddr::new(l.addr.ip(), port)
        }
    );
    assert_eq!(l.lines.lock().unwrap().len(), 1);
}

#[test]
fn a_closed_port_is_unreachable_and_plaintext_and_legacy_answers_do_not_change() {
    let _m = measured();
    let r = start(RegistryConfig::default());
    let port = closed_port();
    let alice = Identity::generate().unwrap();
    let mut a = Enc::dial(r.local_addr(), &alice);
    assert_eq!(a.ask(&format!("INIT,alice,{port}")), "OK");
    assert!(wait_reach(
        &r,
        "alice",
        Reach::Unreachable,
        Duration::from_secs(10)
    ));
    let hex = alice.public().to_hex();
    assert_eq!(
        a.ask("GET_P,alice"),
        format!("OK,127.0.0.1,{port},{hex},unreachable")
    );
    // A plaintext session's answer about alice carries the field too; the legacy
    // answer is the original server's, byte for byte.
    let mut p = Plain::new(r.local_addr());
    assert_eq!(
        p.ask("GET_P,alice"),
        format!("OK,127.0.0.1,{port},{hex},unreachable")
    );
    assert_eq!(
        legacy(r.local_addr(), "GET_P,alice"),
        format!("OK,127.0.0.1,{port}")
    );
    // Users without a key are never checked, and their answers are as before.
    let l = Listener::start(Behaviour::Answer, true);
    assert_eq!(p.ask(&format!("INIT,carol,{}", l.port())), "OK");
    assert_eq!(
        legacy(r.local_addr(), &format!("INIT,dave,{},d.txt", l.port())),
        "OK"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.ask("GET_P,carol"), format!("OK,127.0.0.1,{}", l.port()));
    assert_eq!(
        a.ask("GET_P,dave"),
        format!("OK,127.0.0.1,{},legacy", l.port())
    );
    assert!(
        l.lines.lock().unwrap().is_empty(),
        "a keyless user was probed"
    );
    assert_eq!(r.user("carol").unwrap().reach, Reach::Unknown);
}

#[test]
fn a_listener_that_never_answers_is_unreachable_within_the_deadline() {
    let _m = measured();
    let r = start(RegistryConfig::default());
    let l = Listener::start(Behaviour::Silent, true);
    let alice = Identity::generate().unwrap();
    let mut a = Enc::dial(r.local_addr(), &alice);
    assert_eq!(a.ask(&format!("INIT,alice,{}", l.port())), "OK");
    let t0 = Instant::now();
    assert!(wait_until(Duration::from_secs(5), || !l
        .lines
        .lock()
        .unwrap()
        .is_empty()));
    // The check has connected and is waiting for its answer.
    assert_eq!(reach_in(&a.ask("GET_P,alice")), Reach::Unknown);
    assert!(wait_reach(
        &r,
        "alice",
        Reach::Unreachable,
        Duration::from_secs(10)
    ));
    // PROBE_TIMEOUT is 3 s: the outcome came from the deadline, not an answer.
    assert!(t0.elapsed() >= Duration::from_secs(2), "{:?}", t0.elapsed());
}

#[test]
fn watch_is_refused_on_plaintext_for_another_key_and_for_nobody() {
    let _m = measured();
    let r = start(RegistryConfig::default());
    let alice = Identity::generate().unwrap();
    let mallory = Identity::generate().unwrap();
    let mut a = Enc::dial(r.local_addr(), &alice);
    assert_eq!(a.ask(&format!("INIT,alice,{}", closed_port())), "OK");
    let mut p = Plain::new(r.local_addr());
    assert_eq!(p.ask("WATCH,alice"), "ERR,Needs a secured session");
    assert_eq!(p.ask("INIT,carol,5000"), "OK");
    assert_eq!(p.ask("CONNECT,alice"), "ERR,Needs a secured session");
    assert_eq!(p.ask("RELAY,alice"), "ERR,Needs a secured session");
    let mut m = Enc::dial(r.local_addr(), &mallory);
    assert_eq!(m.ask("WATCH,alice"), "ERR,Not your registration");
    // A user registered without a key is nobody's to watch.
    assert_eq!(m.ask("WATCH,carol"), "ERR,Not your registration");
    assert_eq!(m.ask("WATCH,nobody"), "ERR,User not found!");
    assert_eq!(m.ask("WATCH"), "ERR,Wrong number of fields");
    assert_eq!(m.ask("WATCH,a,b"), "ERR,Wrong number of fields");
    // The refused sessions go on answering queries.
    assert_eq!(m.ask("GET_U"), "OK,alice,carol");
    // A legacy query with these verbs is unknown, as to the original server.
    assert_eq!(
        legacy(r.local_addr(), "WATCH,alice"),
        "ERR,Invalid Request!"
    );
    assert_eq!(
        legacy(r.local_addr(), "CONNECT,alice"),
        "ERR,Invalid Request!"
    );
}

#[test]
fn one_watch_per_user_and_it_ends_with_the_registration() {
    let _m = measured();
    let r = Registry::builder()
        .config(RegistryConfig {
            idle_timeout: Duration::from_secs(1),
            ..RegistryConfig::default()
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let alice = Identity::generate().unwrap();
    let mut a = Enc::dial(r.local_addr(), &alice);
    assert_eq!(a.ask(&format!("INIT,alice,{}", closed_port())), "OK");
    let mut w1 = Enc::dial(r.local_addr(), &alice);
    assert!(w1.ask("WATCH,alice").starts_with("OK,127.0.0.1,"));
    // A watch session has no idle timeout (this registry's is 1 s).
    std::thread::sleep(Duration::from_millis(2500));
    let mut w2 = Enc::dial(r.local_addr(), &alice);
    assert!(w2.ask("WATCH,alice").starts_with("OK,127.0.0.1,"));
    assert!(w1.closed(), "the older watch session stays open");
    // Lines sent on a watch session get no answer; it stays open.
    w2.send("GET_U");
    // The registration ends with EXIT: its watch session is closed.
    assert_eq!(a.ask("EXIT,alice"), "OK");
    assert!(w2.closed(), "the watch outlived the registration");
    // And when the registering session goes away.
    assert_eq!(a.ask(&format!("INIT,alice,{}", closed_port())), "OK");
    let mut w3 = Enc::dial(r.local_addr(), &alice);
    assert!(w3.ask("WATCH,alice").starts_with("OK,"));
    drop(a);
    assert!(w3.closed(), "the watch outlived its user's session");
}

/// alice (reachable, with a listener that answers probes) and bob (watching), each
/// registered over their own session. Bind every field when taking it apart (`_x`,
/// not `..`): a field left out is dropped, and with it its session.
struct Pair {
    r: Registry,
    a: Enc,
    b: Enc,
    w: Enc,
    l: Listener,
}

fn pair(config: RegistryConfig) -> Pair {
    let r = start(config);
    let l = Listener::start(Behaviour::Answer, true);
    let (alice, bob) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let mut a = Enc::dial(r.local_addr(), &alice);
    assert_eq!(a.ask(&format!("INIT,alice,{}", l.port())), "OK");
    let mut b = Enc::dial(r.local_addr(), &bob);
    assert_eq!(b.ask(&format!("INIT,bob,{}", closed_port())), "OK");
    let mut w = Enc::dial(r.local_addr(), &bob);
    assert!(w.ask("WATCH,bob").starts_with("OK,127.0.0.1,"));
    assert!(wait_reach(
        &r,
        "alice",
        Reach::Reachable,
        Duration::from_secs(10)
    ));
    Pair { r, a, b, w, l }
}

#[test]
fn connect_pushes_dial_with_the_callers_address_and_the_answered_token() {
    let _m = measured();
    let Pair {
        r: _r,
        mut a,
        b: _b,
        mut w,
        l,
    } = pair(RegistryConfig::default());
    // bob's own check (a closed port) may be pushed first: skipped below.
    let answer = a.ask("CONNECT,bob");
    let token = Token::parse(answer.strip_prefix("OK,").unwrap()).unwrap();
    loop {
        match w.push() {
            Push::Reach { .. } => continue,
            push => {
                assert_eq!(
                    push,
                    Push::Dial {
                        token,
                        addr: l.addr,
                        caller: "alice".into()
                    }
                );
                break;
            }
        }
    }
    // Each CONNECT has its own token.
    let again = a.ask("CONNECT,bob");
    assert_ne!(again, answer);
    loop {
        match w.push() {
            Push::Reach { .. } => continue,
            Push::Dial { token: t, .. } => {
                assert_eq!(t.to_hex(), again[3..]);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn punch_answers_the_callees_address_and_pushes_the_callers_with_its_punching_port() {
    let _m = measured();
    let Pair {
        r: _r,
        mut a,
        b: _b,
        mut w,
        l: _l,
    } = pair(RegistryConfig::default());
    let listed = a.ask("GET_P,bob");
    let fields: Vec<&str> = listed.split(',').collect();
    assert_eq!(
        a.ask("PUNCH,bob,40001"),
        format!("OK,{},{}", fields[1], fields[2])
    );
    // bob connects to alice's address as the registry sees it, at the port she named
    // (not her listener's: her punch has a connection of its own).
    loop {
        match w.push() {
            Push::Reach { .. } => continue,
            push => {
                assert_eq!(
                    push,
                    Push::Punch {
                        addr: "127.0.0.1:40001".parse().unwrap(),
                        caller: "alice".into()
                    }
                );
                break;
            }
        }
    }
    assert_eq!(a.ask("PUNCH,bob,0"), "ERR,Invalid port (expected 1-65535)");
    assert_eq!(a.ask("PUNCH,bob"), "ERR,Wrong number of fields");
    assert_eq!(a.ask("PUNCH,nobody,5"), "ERR,User not found!");
    // A callee without a watch session cannot be asked.
    assert_eq!(
        a.ask("PUNCH,alice,5"),
        "ERR,alice cannot be asked to connect back"
    );
}

#[test]
fn connect_and_relay_refusals_are_clear() {
    let _m = measured();
    let Pair {
        r,
        mut a,
        mut b,
        w: _w,
        l: _l,
    } = pair(RegistryConfig::default());
    assert_eq!(a.ask("CONNECT,nobody"), "ERR,User not found!");
    assert_eq!(a.ask("RELAY,bob"), "ERR,No relay available");
    // carol is registered but has no watch session.
    let carol = Identity::generate().unwrap();
    let mut c = Enc::dial(r.local_addr(), &carol);
    assert_eq!(c.ask(&format!("INIT,carol,{}", closed_port())), "OK");
    assert_eq!(
        a.ask("CONNECT,carol"),
        "ERR,carol cannot be asked to connect back"
    );
    // A session without a registration.
    let mut n = Enc::dial(r.local_addr(), &carol);
    assert_eq!(n.ask("CONNECT,bob"), "ERR,Register first");
    // alice has no watch session.
    assert_eq!(
        b.ask("CONNECT,alice"),
        "ERR,alice cannot be asked to connect back"
    );
    // carol's listener is not reachable: she may not ask bob to dial her.
    assert!(wait_reach(
        &r,
        "carol",
        Reach::Unreachable,
        Duration::from_secs(10)
    ));
    assert_eq!(
        c.ask("CONNECT,bob"),
        "ERR,You are not reachable: ask for a relay"
    );
    assert_eq!(a.ask("CONNECT,bob,x"), "ERR,Wrong number of fields");
}

#[test]
fn relay_pushes_a_token_the_relay_secret_verifies() {
    let _m = measured();
    let secret = RelaySecret::generate().unwrap();
    let Pair {
        r: _r,
        a: _a,
        mut b,
        mut w,
        l: _l,
    } = pair(RegistryConfig {
        relay_offer: Some(RelayOffer {
            addr: RelayAddr::Port(7001),
            secret: secret.clone(),
        }),
        ..RegistryConfig::default()
    });
    // Only bob watches: he is both caller and callee here (a relay needs neither to
    // be reachable).
    let answer = b.ask("RELAY,bob");
    let rest = answer.strip_prefix("OK,").unwrap();
    let (relay, tok) = rest.split_once(',').unwrap();
    assert_eq!(relay, "127.0.0.1:7001");
    assert!(token::verify(&secret, tok, SystemTime::now()).is_ok());
    loop {
        match w.push() {
            Push::Reach { .. } => continue,
            push => {
                assert_eq!(
                    push,
                    Push::Relay {
                        token: tok.to_string(),
                        relay: "127.0.0.1:7001".into(),
                        caller: "bob".into()
                    }
                );
                break;
            }
        }
    }
}

/// A registry offering a relay at `relay.example:7001` (nothing needs to run there:
/// the tests read the registry's answers).
fn offering_a_relay() -> RegistryConfig {
    RegistryConfig {
        relay_offer: Some(RelayOffer {
            addr: RelayAddr::Fixed("relay.example:7001".into()),
            secret: RelaySecret::generate().unwrap(),
        }),
        ..RegistryConfig::default()
    }
}

#[test]
fn connect_and_relay_are_capped_per_session() {
    let _m = measured();
    let Pair {
        r,
        mut a,
        b: _b,
        w: _w,
        l: _l,
    } = pair(offering_a_relay());
    for i in 0..20 {
        let q = if i % 2 == 0 {
            "CONNECT,bob"
        } else {
            "RELAY,bob"
        };
        assert!(a.ask(q).starts_with("OK,"), "{i}");
    }
    let over = "ERR,Too many connection requests: try again in a minute";
    assert_eq!(a.ask("CONNECT,bob"), over);
    assert_eq!(a.ask("RELAY,bob"), over);
    // Other queries still work; another session has its own budget.
    assert_eq!(a.ask("GET_U"), "OK,alice,bob");
    let mut other = Enc::dial(r.local_addr(), &Identity::generate().unwrap());
    assert_eq!(other.ask(&format!("INIT,zed,{}", closed_port())), "OK");
    assert!(other.ask("RELAY,bob").starts_with("OK,relay.example:7001,"));
}

#[test]
fn connect_and_relay_are_capped_per_address_across_its_sessions() {
    let _m = measured();
    let Pair {
        r,
        mut a,
        b: _b,
        w: _w,
        l: _l,
    } = pair(offering_a_relay());
    let per_session = p2pcore::limits::SIGNALS_PER_MINUTE;
    let per_addr = p2pcore::limits::SIGNALS_PER_MINUTE_PER_ADDR;
    // alice and more sessions from 127.0.0.1, each within its own budget, spend the
    // address's (`RELAY`: these callers' listeners are not reachable, which
    // `CONNECT` would refuse first).
    let mut sessions = Vec::new();
    let mut spent = 0;
    let ask = |s: &mut Enc, spent: &mut u32| {
        for _ in 0..per_session {
            if *spent == per_addr {
                return;
            }
            assert!(s.ask("RELAY,bob").starts_with("OK,"), "{spent}");
            *spent += 1;
        }
    };
    ask(&mut a, &mut spent);
    for i in 0.. {
        if spent == per_addr {
            break;
        }
        let mut s = Enc::dial(r.local_addr(), &Identity::generate().unwrap());
        assert_eq!(s.ask(&format!("INIT,caller{i},{}", closed_port())), "OK");
        ask(&mut s, &mut spent);
        sessions.push(s);
    }
    // A fresh session from the same address has its own budget, but the address has
    // none left.
    let over = "ERR,Too many connection requests: try again in a minute";
    let mut fresh = Enc::dial(r.local_addr(), &Identity::generate().unwrap());
    assert_eq!(fresh.ask(&format!("INIT,late,{}", closed_port())), "OK");
    assert_eq!(fresh.ask("RELAY,bob"), over);
    // Another address is not affected.
    let mut elsewhere = Enc::over(
        connect_from("127.0.0.2", r.local_addr(), None),
        &Identity::generate().unwrap(),
        None,
    );
    assert_eq!(elsewhere.ask(&format!("INIT,far,{}", closed_port())), "OK");
    assert!(elsewhere.ask("RELAY,bob").starts_with("OK,"));
}

/// A TCP connection to `to` from `from` (an address of 127.0.0.0/8), with this
/// receive buffer when given.
fn connect_from(from: &str, to: SocketAddr, rcvbuf: Option<usize>) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    if let Some(n) = rcvbuf {
        s.set_recv_buffer_size(n).unwrap();
    }
    let src: SocketAddr = format!("{from}:0").parse().unwrap();
    s.bind(&src.into()).unwrap();
    s.connect_timeout(&to.into(), Duration::from_secs(10))
        .unwrap();
    s.into()
}

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_flood_of_registrations_keeps_checks_threads_and_descriptors_bounded() {
    let _m = measured();
    const IPS: usize = 24;
    const PER_IP: usize = 5; // PROBE_MAX_PER_ADDR (4) checked at once, one waits
    let r = start(RegistryConfig::default());
    // Listeners that never accept: the kernel completes each check's connection and
    // the check then waits for an answer that never comes (its whole deadline).
    let listeners: Vec<TcpListener> = (0..IPS)
        .map(|i| TcpListener::bind(format!("127.0.0.{}:0", i + 2)).unwrap())
        .collect();
    let id = Identity::generate().unwrap();
    let mut sessions: Vec<Enc> = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        for _ in 0..PER_IP {
            let from = format!("127.0.0.{}", i + 2);
            sessions.push(Enc::over(
                connect_from(&from, r.local_addr(), None),
                &id,
                None,
            ));
        }
        let _ = l;
    }
    let (threads0, fds0) = (threads(), fds());
    for (n, s) in sessions.iter_mut().enumerate() {
        let port = listeners[n / PER_IP].local_addr().unwrap().port();
        s.send(&format!("INIT,u{n},{port}"));
    }
    for s in sessions.iter_mut() {
        assert_eq!(s.line().unwrap(), "OK");
    }
    // Sample while the checks run: at most PROBE_MAX_IN_FLIGHT (64) sockets.
    let (mut max_fds, mut max_threads) = (0, 0);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(2500) {
        max_fds = max_fds.max(fds());
        max_threads = max_threads.max(threads());
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "{} registrations: descriptors {fds0} -> at most {max_fds}, threads {threads0} -> at most {max_threads}",
        IPS * PER_IP
    );
    assert!(max_threads <= threads0, "the checks started threads");
    assert!(max_fds <= fds0 + 64 + 4, "more than 64 checks in flight");
    assert!(max_fds >= fds0 + 48, "the checks did not run side by side");
    // Every user ends unreachable, the fifth of each address once its turn came (a
    // check set aside is queued again each second).
    let count = |want: Reach| {
        (0..IPS * PER_IP)
            .filter(|n| r.user(&format!("u{n}")).unwrap().reach == want)
            .count()
    };
    let all = IPS * PER_IP;
    assert!(
        wait_until(Duration::from_secs(15), || count(Reach::Unreachable) == all),
        "{} unreachable, {} unknown",
        count(Reach::Unreachable),
        count(Reach::Unknown)
    );
    assert!(wait_until(Duration::from_secs(5), || fds() <= fds0 + 2));
}

#[test]
fn a_watcher_that_never_reads_loses_pushes_counted_not_memory() {
    let _m = measured();
    const CALLERS: usize = 64;
    let secret = RelaySecret::generate().unwrap();
    let r = start(RegistryConfig {
        relay_offer: Some(RelayOffer {
            addr: RelayAddr::Port(7001),
            secret,
        }),
        ..RegistryConfig::default()
    });
    let bob = Identity::generate().unwrap();
    let mut b = Enc::dial(r.local_addr(), &bob);
    assert_eq!(b.ask(&format!("INIT,bob,{}", closed_port())), "OK");
    // bob's watch session reads nothing (and offers a small receive window).
    let mut w = Enc::over(
        connect_from("127.0.0.1", r.local_addr(), Some(4096)),
        &bob,
        None,
    );
    assert!(w.ask("WATCH,bob").starts_with("OK,"));
    // bob's own check is pushed (unreachable): wait for it so the count is exact.
    assert!(wait_reach(
        &r,
        "bob",
        Reach::Unreachable,
        Duration::from_secs(10)
    ));
    let id = Identity::generate().unwrap();
    // Spread over 16 addresses: 4 callers and 80 requests each, within an address's
    // budget of `SIGNALS_PER_MINUTE_PER_ADDR` (the test is about the watcher).
    let mut callers: Vec<Enc> = (0..CALLERS)
        .map(|i| {
            let from = format!("127.0.0.{}", 10 + i % 16);
            let mut c = Enc::over(connect_from(&from, r.local_addr(), None), &id, None);
            assert_eq!(c.ask(&format!("INIT,c{i},{}", closed_port())), "OK");
            c
        })
        .collect();
    let rss0 = vm_rss_kib();
    let mut asked = 0;
    for _ in 0..20 {
        for c in callers.iter_mut() {
            c.send("RELAY,bob");
        }
        for c in callers.iter_mut() {
            assert!(c.line().unwrap().starts_with("OK,127.0.0.1:7001,"));
            asked += 1;
        }
    }
    let rss1 = vm_rss_kib();
    assert!(wait_until(Duration::from_secs(5), || r.pushes_dropped() > 0));
    let dropped = r.pushes_dropped();
    eprintln!(
        "{asked} RELAY pushes to a watcher not reading: {dropped} dropped; VmRSS {rss0} -> {rss1} KiB"
    );
    assert!(rss1 < rss0 + 16 * 1024, "memory grew with the pushes");
    // Now it reads: everything not dropped arrives, in order, then the session goes on.
    let mut got = 0u64;
    let mut relays = 0u64;
    w.s.reader
        .socket()
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    while let Ok(line) = w.line() {
        got += 1;
        if line.starts_with("RELAY,") {
            relays += 1;
        }
    }
    // Pushes still in the loop's mailbox when `dropped` was read went one way or the
    // other since: the final count is exact.
    assert_eq!(
        relays + r.pushes_dropped(),
        asked as u64,
        "pushes lost uncounted ({got} lines)"
    );
    let _ = b.ask("GET_U");
}

#[test]
fn a_peer_reads_the_five_field_get_p_answer() {
    let _m = measured();
    let r = start(RegistryConfig::default());
    let addr = r.local_addr().to_string();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let alice = common::peer_builder(&addr, "reach-alice", da.path())
        .connect()
        .unwrap();
    let bob = common::peer_builder(&addr, "reach-bob", db.path())
        .connect()
        .unwrap();
    // Once alice's check has ended her answer has its fifth field for certain
    // (whatever this peer's listener made of the probe).
    assert!(wait_until(Duration::from_secs(10), || r
        .user("reach-alice")
        .is_some_and(|u| u.reach != Reach::Unknown)));
    let info = bob.peer_info("reach-alice").unwrap();
    assert_eq!(info.key, Some(alice.public_key()));
    assert_eq!(info.addr.port(), alice.listen_addr().port());
    assert!(!info.legacy);
    bob.shutdown();
    alice.shutdown();
}

#[test]
fn relay_through_the_embedded_relay_joins_caller_and_callee() {
    let _m = measured();
    let Pair {
        r,
        mut a,
        b: _b,
        mut w,
        l: _l,
    } = pair(RegistryConfig {
        embedded_relay: Some(p2pcore::registry::EmbeddedRelay::default()),
        ..RegistryConfig::default()
    });
    let relay = r.relay_addr().unwrap();
    let answer = a.ask("RELAY,bob");
    let rest = answer.strip_prefix("OK,").unwrap();
    let (at, tok) = rest.split_once(',').unwrap();
    assert_eq!(at, relay.to_string(), "the relay on the registry's address");
    let pushed = loop {
        match w.push() {
            Push::Reach { .. } => continue,
            Push::Relay {
                token,
                relay,
                caller,
            } => break (token, relay, caller),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        pushed,
        (tok.to_string(), at.to_string(), "alice".to_string())
    );
    // Both sides go to the relay with the token and are joined.
    let join = |addr: &str| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("RELAY/1 {tok}\n").as_bytes()).unwrap();
        s
    };
    let (mut caller, mut callee) = (join(at), join(&pushed.1));
    let mut ok = [0u8; 11];
    caller.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"OK relayed\n");
    callee.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"OK relayed\n");
    caller.write_all(b"hello through the relay").unwrap();
    let mut got = [0u8; 23];
    callee.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello through the relay");
}

#[test]
fn over_ipv6_the_check_and_the_pushes_name_the_v6_address() {
    let _m = measured();
    let r = Registry::builder()
        .config(RegistryConfig {
            embedded_relay: Some(p2pcore::registry::EmbeddedRelay::default()),
            ..RegistryConfig::default()
        })
        .bind("[::1]:0")
        .unwrap();
    // A listener on ::1 that answers probes.
    let l = TcpListener::bind("[::1]:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let answering = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        if let Some(Ok(Preamble::Probe(t))) = Preamble::parse(line.trim_end().as_bytes()) {
            (&s).write_all(probe_answer(t).as_bytes()).unwrap();
        }
    });
    let alice = Identity::generate().unwrap();
    let mut a = Enc::dial(r.local_addr(), &alice);
    assert_eq!(a.ask(&format!("INIT,alice,{port}")), "OK");
    let mut w = Enc::dial(r.local_addr(), &alice);
    let watched = w.ask("WATCH,alice");
    assert!(watched.starts_with(&format!("OK,::1,{port},")), "{watched}");
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    if !watched.ends_with(",reachable") {
        assert_eq!(
            w.push(),
            Push::Reach {
                reach: Reach::Reachable,
                addr: v6
            }
        );
    }
    answering.join().unwrap();
    assert!(a.ask("GET_P,alice").ends_with(",reachable"));
    // The embedded relay is advertised on the v6 address the session reached.
    let relay = r.relay_addr().unwrap();
    let answer = a.ask("RELAY,alice");
    assert!(
        answer.starts_with(&format!("OK,[::1]:{},", relay.port())),
        "{answer}"
    );
    assert!(
        matches!(w.push(), Push::Relay { relay: at, .. } if at == format!("[::1]:{}", relay.port()))
    );
}
