//! The closed-loop load generator of T2 and T2b: N client threads, each sending one
//! `GET_P` for a random user and waiting for its answer before sending the next, for a
//! fixed time. The same code drives the registry and the baseline server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How a client talks to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One persistent connection per thread; `GET_P,user\n`, answer read up to `\n`.
    Session,
    /// A new connection per query, as the original C++ client does: `GET_P,user` with no
    /// terminator, one `read` of at most 1000 bytes, close.
    Legacy,
    /// The same lookup against `redis-server` (the natural baseline for a lookup
    /// server): one persistent connection per thread, `GET user…\r\n`, the bulk reply
    /// read whole.
    Redis,
}

/// A socket operation that takes longer than this counts as an error (and ends that
/// client's loop for `Session`), so a stuck server cannot hang the bench.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What one run of the load measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Answers that started with `OK,`.
    pub ok: u64,
    /// Failed connects, reads, writes, and answers that were not `OK,…`.
    pub errors: u64,
    /// From the common start to the last client's last answer.
    pub elapsed: Duration,
    /// Latency of each successful query, nanoseconds, sorted.
    latencies: Vec<u64>,
    /// The first error seen, to make a report actionable.
    pub first_error: Option<String>,
}

impl RunResult {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Two loads run at the same time (against two nodes) as one: answers and errors
    /// added, the longer elapsed time, every latency.
    pub fn merge(self, other: RunResult) -> RunResult {
        let mut latencies = self.latencies;
        latencies.extend(other.latencies);
        latencies.sort_unstable();
        RunResult {
            ok: self.ok + other.ok,
            errors: self.errors + other.errors,
            elapsed: self.elapsed.max(other.elapsed),
            latencies,
            first_error: self.first_error.or(other.first_error),
        }
    }

    /// The `p`-th percentile latency (0 < p ≤ 100), in microseconds.
    pub fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.latencies.len()) - 1;
        self.latencies[i] as f64 / 1000.0
    }
}

struct ClientResult {
    ok: u64,
    errors: u64,
    latencies: Vec<u64>,
    finished: Instant,
    first_error: Option<String>,
}

/// A small xorshift generator: enough to pick users, and no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Where the clients wait until all of them are connected, then learn when to stop.
#[derive(Default)]
struct Gate {
    /// (clients ready, end of the run once decided)
    state: Mutex<(usize, Option<Instant>)>,
    cv: Condvar,
}

impl Gate {
    /// A client is ready; returns when the run ends.
    fn arrive(&self) -> Instant {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 += 1;
        self.cv.notify_all();
        loop {
            if let Some(end) = st.1 {
                return end;
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Wait for `n` clients, then start the run now; returns its start.
    fn open(&self, n: usize, duration: Duration) -> Instant {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.0 < n {
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let start = Instant::now();
        st.1 = Some(start + duration);
        self.cv.notify_all();
        start
    }

    /// Give up: every client waiting or yet to arrive stops at once.
    fn abort(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.1 = Some(Instant::now());
        self.cv.notify_all();
    }
}

/// Run `threads` clients against `addr` for `duration`, each querying random users
/// `user00000` … `user{users-1}`.
pub fn closed_loop(
    addr: SocketAddr,
    mode: Mode,
    threads: usize,
    users: usize,
    duration: Duration,
) -> Result<RunResult, String> {
    closed_loop_from(addr, mode, threads, users, duration, None)
}

/// [`closed_loop`], with client `t` connecting from local address `from(t)` (a loopback
/// address) when `from` is given.
pub fn closed_loop_from(
    addr: SocketAddr,
    mode: Mode,
    threads: usize,
    users: usize,
    duration: Duration,
    from: Option<fn(usize) -> IpAddr>,
) -> Result<RunResult, String> {
    // Clients connect (Session) before the gate opens, so connects are out of the timing
    // and every client starts together.
    let gate = Arc::new(Gate::default());
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let client_gate = gate.clone();
        let seed = 0x9E37_79B9_7F4A_7C15u64 ^ ((t as u64 + 1) * 0x2545_F491_4F6C_DD1D);
        let spawned = std::thread::Builder::new()
            .name(format!("load-{t}"))
            .spawn(move || {
                let mut rng = Rng(seed);
                let source = from.map(|f| f(t));
                match mode {
                    Mode::Session | Mode::Redis => {
                        session_client(addr, source, mode, users, &mut rng, &client_gate)
                    }
                    Mode::Legacy => legacy_client(addr, users, &mut rng, &client_gate),
                }
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                gate.abort();
                for h in handles {
                    let _ = h.join();
                }
                return Err(format!("could not start load thread: {e}"));
            }
        }
    }
    let start = gate.open(threads, duration);
    let mut result = RunResult {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        first_error: None,
    };
    let mut last = start;
    let mut panicked = false;
    for h in handles {
        let Ok(r) = h.join() else {
            panicked = true;
            continue;
        };
        result.ok += r.ok;
        result.errors += r.errors;
        result.latencies.extend_from_slice(&r.latencies);
        last = last.max(r.finished);
        if result.first_error.is_none() {
            result.first_error = r.first_error;
        }
    }
    if panicked {
        return Err("a load thread panicked".into());
    }
    result.elapsed = last.saturating_duration_since(start).max(duration);
    result.latencies.sort_unstable();
    Ok(result)
}

fn query(rng: &mut Rng, users: usize, terminated: bool, buf: &mut Vec<u8>) {
    buf.clear();
    let u = rng.next() % users as u64;
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "GET_P,user{u:05}");
    if terminated {
        buf.push(b'\n');
    }
}

/// `GET user{u:05}\r\n`: redis's inline form of the same lookup.
fn redis_query(rng: &mut Rng, users: usize, buf: &mut Vec<u8>) {
    buf.clear();
    let u = rng.next() % users as u64;
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "GET user{u:05}\r\n");
}

/// Read one RESP bulk reply (`$<len>\r\n<bytes>\r\n`, or `$-1\r\n` for none) into
/// `out`, header included.
fn read_bulk(reader: &mut impl BufRead, out: &mut Vec<u8>) -> std::io::Result<usize> {
    let n = reader.read_until(b'\n', out)?;
    if n == 0 || !out.starts_with(b"$") {
        return Ok(n);
    }
    let len: i64 = std::str::from_utf8(&out[1..n])
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(-1);
    if len < 0 {
        return Ok(n);
    }
    let mut body = vec![0; len as usize + 2];
    reader.read_exact(&mut body)?;
    out.extend_from_slice(&body);
    Ok(n + body.len())
}

/// Connect to `to`, from local address `from` when given.
pub fn connect(to: SocketAddr, from: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = from else {
        return TcpStream::connect_timeout(&to, IO_TIMEOUT);
    };
    let domain = if ip.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(ip, 0).into())?;
    sock.connect_timeout(&to.into(), IO_TIMEOUT)?;
    Ok(sock.into())
}

fn session_client(
    addr: SocketAddr,
    from: Option<IpAddr>,
    mode: Mode,
    users: usize,
    rng: &mut Rng,
    gate: &Gate,
) -> ClientResult {
    let mut r = ClientResult {
        ok: 0,
        errors: 0,
        latencies: Vec::with_capacity(1 << 16),
        finished: Instant::now(),
        first_error: None,
    };
    let conn = connect(addr, from).and_then(|s| {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(s)
    });
    let end = gate.arrive();
    let stream = match conn {
        Ok(s) => s,
        Err(e) => {
            r.errors += 1;
            r.first_error = Some(format!("connect: {e}"));
            r.finished = Instant::now();
            return r;
        }
    };
    let mut reader = BufReader::with_capacity(4096, &stream);
    let mut writer = &stream;
    let mut q = Vec::with_capacity(32);
    let mut answer = Vec::with_capacity(64);
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        if mode == Mode::Redis {
            redis_query(rng, users, &mut q);
        } else {
            query(rng, users, true, &mut q);
        }
        if let Err(e) = writer.write_all(&q) {
            r.errors += 1;
            r.first_error.get_or_insert(format!("write: {e}"));
            break;
        }
        answer.clear();
        let read = if mode == Mode::Redis {
            read_bulk(&mut reader, &mut answer)
        } else {
            reader.read_until(b'\n', &mut answer)
        };
        match read {
            Ok(0) => {
                r.errors += 1;
                r.first_error
                    .get_or_insert("server closed the connection".into());
                break;
            }
            Err(e) => {
                r.errors += 1;
                r.first_error.get_or_insert(format!("read: {e}"));
                break;
            }
            Ok(_) => {}
        }
        let dt = t0.elapsed();
        let good = match mode {
            Mode::Redis => answer.starts_with(b"$") && !answer.starts_with(b"$-1"),
            _ => answer.starts_with(b"OK,") && answer.ends_with(b"\n"),
        };
        if good {
            r.ok += 1;
            r.latencies.push(dt.as_nanos() as u64);
        } else {
            r.errors += 1;
            r.first_error.get_or_insert(format!(
                "unexpected answer {:?}",
                String::from_utf8_lossy(&answer)
            ));
        }
    }
    r.finished = Instant::now();
    r
}

fn legacy_client(addr: SocketAddr, users: usize, rng: &mut Rng, gate: &Gate) -> ClientResult {
    let mut r = ClientResult {
        ok: 0,
        errors: 0,
        latencies: Vec::with_capacity(1 << 16),
        finished: Instant::now(),
        first_error: None,
    };
    let end = gate.arrive();
    let mut q = Vec::with_capacity(32);
    let mut buf = [0u8; 1000];
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        query(rng, users, false, &mut q);
        let outcome = TcpStream::connect_timeout(&addr, IO_TIMEOUT).and_then(|mut s| {
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.set_write_timeout(Some(IO_TIMEOUT))?;
            s.write_all(&q)?;
            let n = s.read(&mut buf)?;
            Ok(n)
            // `s` is closed here, as the original client closes after its one recv.
        });
        let dt = t0.elapsed();
        match outcome {
            Ok(n) if buf[..n].starts_with(b"OK,") => {
                r.ok += 1;
                r.latencies.push(dt.as_nanos() as u64);
            }
            Ok(n) => {
                r.errors += 1;
                r.first_error.get_or_insert(format!(
                    "unexpected answer {:?}",
                    String::from_utf8_lossy(&buf[..n])
                ));
            }
            Err(e) => {
                r.errors += 1;
                r.first_error.get_or_insert(format!("{e}"));
                // Out of ports or descriptors: do not spin on the error.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    r.finished = Instant::now();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let r = RunResult {
            ok: 100,
            errors: 0,
            elapsed: Duration::from_secs(1),
            latencies: (1..=100).map(|i| i * 1000).collect(),
            first_error: None,
        };
        assert_eq!(r.percentile_us(50.0), 50.0);
        assert_eq!(r.percentile_us(99.0), 99.0);
        assert_eq!(r.percentile_us(100.0), 100.0);
        assert_eq!(r.per_second(), 100.0);
    }
}
