//! `p2pchat relay` and the relay inside `p2pchat server`, as real processes: the
//! secret file, joining two connections with tokens made from it, the log lines, the
//! refusals, and `--relay on|off|--relay-at`.

mod common;

use common::*;
use p2pcore::relay::token::mint;
use p2pcore::relay::RelaySecret;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime};

fn connect(relay: SocketAddr, token: &str) -> TcpStream {
    let mut s = TcpStream::connect(relay).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(format!("RELAY/1 {token}\n").as_bytes())
        .unwrap();
    s
}

/// One line, a byte at a time (what follows belongs to the other side).
fn line(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap_or(0) == 1 {
        out.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn relay_proc(secret_file: &std::path::Path) -> (Proc, SocketAddr) {
    let mut p = Proc::start(&[
        "relay",
        "--addr",
        "127.0.0.1:0",
        "--secret-file",
        secret_file.to_str().unwrap(),
    ]);
    let first = p.line();
    let addr = first
        .strip_prefix("relay listening on ")
        .unwrap_or_else(|| panic!("first line: {first:?}"))
        .parse()
        .unwrap();
    (p, addr)
}

#[test]
fn the_standalone_relay_creates_its_secret_joins_token_holders_and_logs_circuits() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.secret");
    let (mut relay, addr) = relay_proc(&file);
    relay.expect(&format!("relay secret file: {}", file.display()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the secret is private");
    }
    let secret = RelaySecret::from_hex(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let token = mint(&secret, SystemTime::now(), Duration::from_secs(60)).unwrap();
    let mut a = connect(addr, &token);
    let mut b = connect(addr, &token);
    assert_eq!(line(&mut a), "OK relayed\n");
    assert_eq!(line(&mut b), "OK relayed\n");
    let joined = relay.line_with(" joined ");
    assert!(joined.contains(" <-> 127.0.0.1:"), "{joined}");
    a.write_all(b"over the relay").unwrap();
    let mut buf = [0u8; 14];
    b.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"over the relay");
    drop((a, b));
    let closed = relay.line_with(" closed ");
    assert!(closed.contains("14 B (ended)"), "{closed}");

    // A token made with another secret: refused, and the refusal logged.
    let foreign = mint(
        &RelaySecret::generate().unwrap(),
        SystemTime::now(),
        Duration::from_secs(60),
    )
    .unwrap();
    let mut c = connect(addr, &foreign);
    assert_eq!(line(&mut c), "ERR denied invalid relay token\n");
    relay.line_with("relay refused: ERR denied invalid relay token");

    relay.signal(libc::SIGINT);
    assert_eq!(relay.wait_exit(WAIT).code(), Some(130));
    assert!(relay.all_stdout().ends_with("relay stopped\n"));

    // Started again, it keeps the secret: tokens the registry makes still join.
    let (mut relay, addr) = relay_proc(&file);
    let token = mint(&secret, SystemTime::now(), Duration::from_secs(60)).unwrap();
    let mut a = connect(addr, &token);
    let mut b = connect(addr, &token);
    assert_eq!(line(&mut a), "OK relayed\n");
    assert_eq!(line(&mut b), "OK relayed\n");
    relay.signal(libc::SIGTERM);
    assert_eq!(relay.wait_exit(WAIT).code(), Some(130));
    // The relay closed both sides on its way out.
    let mut rest = Vec::new();
    a.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn a_secret_file_without_a_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.secret");
    std::fs::write(&file, "not hex\n").unwrap();
    let out = p2pchat(&[
        "relay",
        "--addr",
        "127.0.0.1:0",
        "--secret-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = out.stderr.clone();
    assert!(err.contains("does not hold a relay secret"), "{err}");
}

fn server_relay_line(extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["--addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut p = server_proc(&args);
    assert!(p.line().starts_with("registry listening on "));
    assert!(p.line().starts_with("registry key: "));
    let third = p.line();
    (p, third)
}

#[test]
fn the_server_runs_its_relay_by_default_and_not_with_relay_off() {
    let (mut server, relay) = server_relay_line(&[]);
    let addr: SocketAddr = relay
        .strip_prefix("relay listening on ")
        .unwrap_or_else(|| panic!("{relay:?}"))
        .parse()
        .unwrap();
    // The embedded relay answers on its port (its secret never leaves the server, so
    // only the registry can make tokens for it).
    let mut c = connect(addr, &"0".repeat(80));
    assert_eq!(line(&mut c), "ERR denied invalid relay token\n");
    server.line_with("relay refused: ERR denied invalid relay token");
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(WAIT).code(), Some(130));
    // Stopped with the registry.
    assert!(TcpStream::connect(addr).is_err());

    let mut server = server_proc(&["--addr", "127.0.0.1:0", "--relay", "off", "--quiet"]);
    assert!(server.line().starts_with("registry listening on "));
    assert!(server.line().starts_with("registry key: "));
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(WAIT).code(), Some(130));
    let out = server.all_stdout();
    assert!(out.ends_with("registry stopped\n"), "{out}");
    assert_eq!(out.lines().count(), 3, "no relay line: {out}");
}

#[test]
fn the_server_offers_a_standalone_relay_with_its_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.secret");
    let (mut relay, addr) = relay_proc(&file);
    let at = addr.to_string();
    let (mut server, third) = server_relay_line(&[
        "--relay-at",
        &at,
        "--relay-secret-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(third, format!("relay offered: {at}"));
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(WAIT).code(), Some(130));
    relay.signal(libc::SIGINT);
    assert_eq!(relay.wait_exit(WAIT).code(), Some(130));

    // Offering a relay without its secret is refused at the start.
    let missing = dir.path().join("missing.secret");
    let out = p2pchat(&[
        "server",
        "--ephemeral",
        "--addr",
        "127.0.0.1:0",
        "--relay-at",
        &at,
        "--relay-secret-file",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out
        .stderr
        .clone()
        .contains("cannot read the relay secret file"));
}

#[test]
fn the_relay_flags_set_its_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.secret");
    let mut relay = Proc::start(&[
        "relay",
        "--addr",
        "127.0.0.1:0",
        "--secret-file",
        file.to_str().unwrap(),
        "--relay-max-circuits",
        "1",
        "--quiet",
    ]);
    let first = relay.line();
    let addr: SocketAddr = first
        .strip_prefix("relay listening on ")
        .unwrap_or_else(|| panic!("{first:?}"))
        .parse()
        .unwrap();
    let secret = RelaySecret::from_hex(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let token = || mint(&secret, SystemTime::now(), Duration::from_secs(60)).unwrap();
    let t = token();
    let mut a = connect(addr, &t);
    // The relay holds one circuit (its first side waiting): the next is refused.
    std::thread::sleep(Duration::from_millis(200));
    let mut other = connect(addr, &token());
    assert_eq!(
        line(&mut other),
        "ERR busy relay is at its circuit limit, try again later\n"
    );
    relay.line_with("relay refused: ERR busy relay is at its circuit limit");
    // The circuit's own second side is still joined.
    let mut b = connect(addr, &t);
    assert_eq!(line(&mut a), "OK relayed\n");
    assert_eq!(line(&mut b), "OK relayed\n");
    relay.signal(libc::SIGINT);
    assert_eq!(relay.wait_exit(WAIT).code(), Some(130));
    // `--quiet` left the circuit's lines out, not the refusal.
    let out = relay.all_stdout();
    assert!(!out.contains(" joined "), "{out}");
}

#[test]
fn the_embedded_relay_takes_the_registry_port_plus_one_or_any_free_port() {
    // A free port P whose P + 1 this test holds.
    let (port, _held) = (0..50)
        .find_map(|_| {
            let p = std::net::TcpListener::bind("127.0.0.1:0")
                .ok()?
                .local_addr()
                .ok()?
                .port();
            let next = std::net::TcpListener::bind(("127.0.0.1", p.checked_add(1)?)).ok()?;
            Some((p, next))
        })
        .expect("a free pair of ports");
    let addr = format!("127.0.0.1:{port}");
    let mut server = server_proc(&["--addr", &addr, "--quiet"]);
    assert_eq!(server.line(), format!("registry listening on {addr}"));
    server.line();
    let relay = server.line();
    let at: SocketAddr = relay
        .strip_prefix("relay listening on ")
        .unwrap_or_else(|| panic!("{relay:?}"))
        .parse()
        .unwrap();
    assert_ne!(
        at.port(),
        port + 1,
        "port + 1 is taken: any free port instead"
    );
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(WAIT).code(), Some(130));

    // Once port + 1 is free, the relay takes it.
    drop(_held);
    let mut server = server_proc(&["--addr", &addr, "--quiet"]);
    server.line();
    server.line();
    assert_eq!(
        server.line(),
        format!("relay listening on 127.0.0.1:{}", port + 1)
    );
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(WAIT).code(), Some(130));
}
