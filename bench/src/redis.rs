//! `redis-server` as the reference lookup server: a real, well-tuned program answering
//! the same lookup (`GET user…` → the user's address) over the same loopback, driven by
//! the same load generator. Started on a free loopback port with persistence off, filled,
//! and stopped (killed and reaped) on drop. Used only when `redis-server` is on `PATH`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`; dropping it kills and reaps the process.
pub struct RedisServer {
    child: Child,
    addr: SocketAddr,
}

impl RedisServer {
    /// Start `redis-server` on a free loopback port, or `Ok(None)` when it is not
    /// installed.
    pub fn start() -> Result<Option<RedisServer>, String> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return Ok(None);
        }
        // A free port: bind, read it, release it (a race with another program taking
        // it in between only fails this figure).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("redis port: {e}"))?
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?;
        let server = RedisServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(server.addr).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not start listening within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(server))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `SET user{u:05} 127.0.0.1,{10000+u}` for every user, pipelined on one connection.
    pub fn fill(&self, users: usize) -> Result<(), String> {
        let err = |e: std::io::Error| format!("redis fill: {e}");
        let stream = TcpStream::connect(self.addr).map_err(err)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(err)?;
        let mut commands = Vec::with_capacity(users * 40);
        for u in 0..users {
            let _ = write!(commands, "SET user{u:05} 127.0.0.1,{}\r\n", 10_000 + u);
        }
        (&stream).write_all(&commands).map_err(err)?;
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        for _ in 0..users {
            line.clear();
            reader.read_line(&mut line).map_err(err)?;
            if line != "+OK\r\n" {
                return Err(format!("redis fill: unexpected reply {line:?}"));
            }
        }
        Ok(())
    }
}

impl RedisServer {
    /// `used_memory` from `INFO memory`, in bytes.
    pub fn used_memory(&self) -> Result<u64, String> {
        let err = |e: std::io::Error| format!("redis INFO: {e}");
        let stream = TcpStream::connect(self.addr).map_err(err)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(err)?;
        (&stream).write_all(b"INFO memory\r\n").map_err(err)?;
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(err)?;
        let len: usize = line
            .trim_end()
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("redis INFO: unexpected reply {line:?}"))?;
        let mut body = vec![0; len];
        std::io::Read::read_exact(&mut reader, &mut body).map_err(err)?;
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok())
            .ok_or_else(|| "redis INFO: no used_memory".to_string())
    }

    /// The `redis://` URL of this server.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
