//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// `len` bytes of a deterministic, non-repeating-looking pattern (xorshift), different
/// for each `seed`: file contents whose corruption or truncation a test would notice.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678 ^ seed.wrapping_mul(0x9e37_79b9);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Poll `f` every 10 ms until it holds or `limit` passes; whether it held.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// A fake peer registered in the registry that answers a file request with `answer`
/// and then `body`.
pub fn fake_server(
    registry: SocketAddr,
    name: &str,
    answer: String,
    body: Vec<u8>,
) -> (TcpStream, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut session = TcpStream::connect(registry).unwrap();
    session
        .write_all(format!("INIT,{name},{port},x.bin\n").as_bytes())
        .unwrap();
    let mut ok = String::new();
    BufReader::new(session.try_clone().unwrap())
        .read_line(&mut ok)
        .unwrap();
    assert_eq!(ok, "OK\n");
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        let _ = s.write_all(answer.as_bytes());
        let _ = s.write_all(&body);
    });
    (session, handle)
}
