//! Reachability checks (`docs/PROTOCOL.md` §5.1): the registry connects to a user's
//! listener at the IP it sees the user's session come from and the registered port —
//! never any other address — sends `P2P/2 PROBE <token>` and expects
//! `OK probe <token>` back within [`PROBE_TIMEOUT`].
//!
//! The event loops must never block on a connect, so the checks run on one thread of
//! their own (owned and joined by the `Registry`), itself a small mio loop: one thread
//! holds every check in flight as a non-blocking socket with a deadline, so the thread
//! count never grows with the load and the descriptors are capped by
//! [`PROBE_MAX_IN_FLIGHT`]. The loops hand checks over through a bounded queue
//! ([`ProbeQueue::submit`], which also caps the checks of one address); outcomes go
//! back to loop 0 over a channel and its waker, like the connection hand-offs. A check
//! that does not fit (queue full, its address over its share) is set aside
//! ([`ProbeQueue::defer`]) and queued again by loop 0's once-a-second sweep
//! ([`ProbeQueue::retry`]) for up to [`PROBE_RETRY_FOR`], so the peers behind one NAT
//! are checked in turn; past that, or when even the set-aside list is full, the user's
//! reach stays `unknown`, and the registry logs it.

use super::address_key;
use super::directory::Directory;
use super::directory::Listed;
use super::server::Shared;
use super::signal::SignalBudget;
use crate::limits::{
    MAX_USERS_PER_ADDR, PROBES_PER_MINUTE_PER_ADDR, PROBE_ANSWER_MAX, PROBE_MAX_IN_FLIGHT,
    PROBE_MAX_PER_ADDR, PROBE_QUEUE, PROBE_RETRY_FOR, PROBE_TIMEOUT,
};
use crate::reach::{probe_answer, Preamble, Reach, Token as ProbeToken};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

const WAKER: Token = Token(usize::MAX);

/// One check to make: `user`, listed at `at` (its address is what is dialed).
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub user: Box<str>,
    pub at: Listed,
}

impl Job {
    fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.at.ip, self.at.port)
    }
}

/// A finished check, on its way to loop 0.
#[derive(Debug, Clone)]
pub(super) struct Checked {
    pub user: Box<str>,
    pub at: Listed,
    pub reach: Reach,
}

/// Why a check was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Overflow {
    /// [`PROBE_QUEUE`] checks already wait.
    Queue,
    /// The address already has [`PROBE_MAX_PER_ADDR`] checks waiting or in flight.
    Address,
    /// The address had its [`PROBES_PER_MINUTE_PER_ADDR`] checks this minute.
    Rate,
}

/// The loops' side of the prober: where checks are handed over.
pub(super) struct ProbeQueue {
    tx: Sender<Job>,
    waker: Arc<Waker>,
    /// Checks waiting or in flight per address key.
    per_addr: Mutex<HashMap<IpAddr, usize>>,
    /// Checks that did not fit, with when they were first tried (at most
    /// [`PROBE_QUEUE`]).
    deferred: Mutex<VecDeque<(Job, Instant)>>,
    /// Checks each address may still get this minute (addresses whose budget is whole
    /// again are forgotten by [`retry`](Self::retry)).
    budgets: Mutex<HashMap<IpAddr, SignalBudget>>,
}

impl ProbeQueue {
    /// Queue a check, or say why it cannot be made (then nothing is queued).
    pub fn submit(&self, job: Job) -> Result<(), Overflow> {
        let key = address_key(job.at.ip);
        {
            let mut per_addr = self.per_addr.lock();
            let n = per_addr.entry(key).or_insert(0);
            if *n >= PROBE_MAX_PER_ADDR {
                return Err(Overflow::Address);
            }
            let now = Instant::now();
            let took = self
                .budgets
                .lock()
                .entry(key)
                .or_insert_with(|| SignalBudget::new(PROBES_PER_MINUTE_PER_ADDR, now))
                .take(now);
            if !took {
                if *n == 0 {
                    per_addr.remove(&key);
                }
                return Err(Overflow::Rate);
            }
            *n += 1;
        }
        match self.tx.try_send(job) {
            Ok(()) => {
                let _ = self.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.done(key);
                Err(Overflow::Queue)
            }
        }
    }

    /// Set aside a check that did not fit, to be queued again by [`retry`](Self::retry).
    /// `false`: the set-aside list is full, or holds [`MAX_USERS_PER_ADDR`] checks of
    /// this address already (the check is not made).
    pub fn defer(&self, job: Job, since: Instant) -> bool {
        let mut deferred = self.deferred.lock();
        let key = address_key(job.at.ip);
        let mine = deferred
            .iter()
            .filter(|(j, _)| address_key(j.at.ip) == key)
            .count();
        if deferred.len() >= PROBE_QUEUE || mine >= MAX_USERS_PER_ADDR {
            return false;
        }
        deferred.push_back((job, since));
        true
    }

    /// Queue again the checks set aside, those still current (the user still listed
    /// at the address, by the same session) and younger than [`PROBE_RETRY_FOR`];
    /// returns the names given up on.
    pub fn retry(&self, directory: &Directory, now: Instant) -> Vec<Box<str>> {
        self.budgets.lock().retain(|_, b| !b.is_full(now));
        let waiting: Vec<(Job, Instant)> = self.deferred.lock().drain(..).collect();
        let mut given_up = Vec::new();
        for (job, since) in waiting {
            if directory.listed(&job.user) != Some(job.at) {
                continue; // moved or gone: a new check was asked for, if any
            }
            let user = job.user.clone();
            if let Err(_full) = self.submit(job.clone()) {
                if now.saturating_duration_since(since) >= PROBE_RETRY_FOR
                    || !self.defer(job, since)
                {
                    given_up.push(user);
                }
            }
        }
        given_up
    }

    /// A check of an address (its key) ended or was never made.
    fn done(&self, key: IpAddr) {
        let mut per_addr = self.per_addr.lock();
        if let Some(n) = per_addr.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                per_addr.remove(&key);
            }
        }
    }

    /// The prober thread's waker (the registry wakes it to stop).
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }
}

/// One check in flight.
struct Probe {
    job: Job,
    stream: TcpStream,
    token: ProbeToken,
    deadline: Instant,
    /// The preamble line; `sent` bytes of it are written.
    line: Vec<u8>,
    sent: usize,
    connected: bool,
    /// The answer read so far (at most [`PROBE_ANSWER_MAX`] bytes).
    answer: Vec<u8>,
}

/// The prober thread's state.
pub(super) struct Prober {
    poll: Poll,
    jobs: Receiver<Job>,
    probes: Vec<Option<Probe>>,
    free: Vec<usize>,
    in_flight: usize,
}

impl Prober {
    /// A prober and the queue the loops submit to.
    pub fn new() -> io::Result<(Prober, ProbeQueue)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, jobs) = crossbeam_channel::bounded(PROBE_QUEUE);
        let prober = Prober {
            poll,
            jobs,
            probes: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
        };
        let queue = ProbeQueue {
            tx,
            waker,
            per_addr: Mutex::new(HashMap::new()),
            deferred: Mutex::new(VecDeque::new()),
            budgets: Mutex::new(HashMap::new()),
        };
        Ok((prober, queue))
    }

    /// Run until the registry stops: start queued checks while fewer than
    /// [`PROBE_MAX_IN_FLIGHT`] are in flight, drive them, and report each outcome on
    /// `results`, waking `report` (loop 0).
    pub fn run(mut self, shared: Arc<Shared>, results: Sender<Checked>, report: Arc<Waker>) {
        let mut events = Events::with_capacity(256);
        let report_to = |c: Checked| {
            if results.try_send(c).is_ok() {
                let _ = report.wake();
            } else {
                log::warn!("registry: a reachability result was dropped (loop 0 backed up)");
            }
        };
        while !shared.stop.load(Ordering::SeqCst) {
            while self.in_flight < PROBE_MAX_IN_FLIGHT {
                let Ok(job) = self.jobs.try_recv() else {
                    break;
                };
                if let Some(done) = self.start(job) {
                    shared.probes.done(address_key(done.at.ip));
                    report_to(done);
                }
            }
            let now = Instant::now();
            let timeout = self
                .probes
                .iter()
                .flatten()
                .map(|p| p.deadline.saturating_duration_since(now))
                .min();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("registry prober: poll failed: {e}");
                break;
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                let idx = event.token().0;
                if let Some(reach) = self.drive(idx) {
                    if let Some(done) = self.finish(idx, reach) {
                        shared.probes.done(address_key(done.at.ip));
                        report_to(done);
                    }
                }
            }
            let now = Instant::now();
            let expired: Vec<usize> = self
                .probes
                .iter()
                .enumerate()
                .filter(|(_, p)| p.as_ref().is_some_and(|p| now >= p.deadline))
                .map(|(i, _)| i)
                .collect();
            for idx in expired {
                // No answer in time: a NAT or a firewall dropping the SYN, or a
                // listener that is not p2pchat's.
                if let Some(done) = self.finish(idx, Reach::Unreachable) {
                    shared.probes.done(address_key(done.at.ip));
                    report_to(done);
                }
            }
        }
        // Stopping: what is in flight is dropped (the registry is going away).
        for idx in 0..self.probes.len() {
            let _ = self.finish(idx, Reach::Unknown);
        }
    }

    /// Open the check's connection; `Some`: it ended at once (its outcome).
    fn start(&mut self, job: Job) -> Option<Checked> {
        let addr = job.addr();
        let fail = |job: Job, reach| {
            Some(Checked {
                user: job.user,
                at: job.at,
                reach,
            })
        };
        let token = match ProbeToken::generate() {
            Ok(t) => t,
            Err(e) => {
                log::warn!("registry prober: no random token: {e}");
                return fail(job, Reach::Unknown);
            }
        };
        let mut stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                let reach = connect_failure(&e);
                if reach == Reach::Unknown {
                    log::warn!("registry prober: cannot check {addr}: {e}");
                }
                return fail(job, reach);
            }
        };
        let idx = self.free.pop().unwrap_or_else(|| {
            self.probes.push(None);
            self.probes.len() - 1
        });
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(idx),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("registry prober: cannot poll a check of {addr}: {e}");
            self.free.push(idx);
            return fail(job, Reach::Unknown);
        }
        self.probes[idx] = Some(Probe {
            job,
            stream,
            token,
            deadline: Instant::now() + PROBE_TIMEOUT,
            line: Preamble::Probe(token).to_line().into_bytes(),
            sent: 0,
            connected: false,
            answer: Vec::new(),
        });
        self.in_flight += 1;
        None
    }

    /// Move a check on after a readiness event; `Some`: it has its outcome.
    fn drive(&mut self, idx: usize) -> Option<Reach> {
        let p = self.probes.get_mut(idx)?.as_mut()?;
        if !p.connected {
            match p.stream.take_error() {
                Ok(Some(_)) | Err(_) => return Some(Reach::Unreachable),
                Ok(None) => {}
            }
            match p.stream.peer_addr() {
                Ok(_) => p.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
                Err(_) => return Some(Reach::Unreachable),
            }
        }
        while p.sent < p.line.len() {
            match p.stream.write(&p.line[p.sent..]) {
                Ok(0) => return Some(Reach::Unreachable),
                Ok(n) => p.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Some(Reach::Unreachable),
            }
        }
        let mut buf = [0u8; PROBE_ANSWER_MAX];
        loop {
            let room = PROBE_ANSWER_MAX - p.answer.len();
            match p.stream.read(&mut buf[..room.max(1)]) {
                Ok(0) => return Some(judge(&p.answer, p.token)),
                Ok(n) => {
                    p.answer.extend_from_slice(&buf[..n]);
                    if p.answer.contains(&b'\n') || p.answer.len() >= PROBE_ANSWER_MAX {
                        return Some(judge(&p.answer, p.token));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Some(Reach::Unreachable),
            }
        }
    }

    /// End the check in slot `idx` with `reach`, freeing its socket.
    fn finish(&mut self, idx: usize, reach: Reach) -> Option<Checked> {
        let mut p = self.probes.get_mut(idx)?.take()?;
        let _ = self.poll.registry().deregister(&mut p.stream);
        self.free.push(idx);
        self.in_flight -= 1;
        Some(Checked {
            user: p.job.user,
            at: p.job.at,
            reach,
        })
    }
}

/// What a failed `connect` says about the listener: refused, unreachable network or
/// host → `Unreachable`; out of descriptors or memory (the registry's own trouble) →
/// `Unknown`, the check could not run.
fn connect_failure(e: &io::Error) -> Reach {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => Reach::Unknown,
        _ => Reach::Unreachable,
    }
}

/// The outcome of a check from the bytes the listener sent: `reachable` only for the
/// exact line `OK probe <token>` (a `\r` before the `\n` tolerated), `unreachable`
/// for anything else (another service on that port, an old peer's `ERR`, a close
/// before the line ended).
pub(super) fn judge(answer: &[u8], token: ProbeToken) -> Reach {
    let expected = probe_answer(token);
    let Some(end) = answer.iter().position(|&b| b == b'\n') else {
        return Reach::Unreachable;
    };
    let line = &answer[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line == expected.trim_end().as_bytes() {
        Reach::Reachable
    } else {
        Reach::Unreachable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::directory::Caller;

    #[test]
    fn one_address_gets_its_share_and_the_rest_waits_its_turn() {
        let (_prober, q) = Prober::new().unwrap();
        let d = Directory::default();
        let job = |n: u64, ip: &str| {
            let caller = Caller {
                conn: n,
                ip: ip.parse().unwrap(),
                session: true,
                key: None,
            };
            let user = format!("u{n}");
            d.init(caller, &user, 5000, &[]).unwrap();
            Job {
                user: user.into(),
                at: d.listed(&format!("u{n}")).unwrap(),
            }
        };
        for n in 0..PROBE_MAX_PER_ADDR as u64 {
            assert_eq!(q.submit(job(n, "127.0.0.3")), Ok(()));
        }
        let fifth = job(99, "127.0.0.3");
        assert_eq!(q.submit(fifth.clone()), Err(Overflow::Address));
        assert_eq!(q.submit(job(100, "127.0.0.4")), Ok(()), "another address");
        let t0 = Instant::now();
        assert!(q.defer(fifth, t0));
        // Still no room for its address: it stays set aside.
        assert!(q.retry(&d, t0).is_empty());
        assert_eq!(q.deferred.lock().len(), 1);
        // A check of that address ends: the next retry queues it.
        q.done(address_key("127.0.0.3".parse().unwrap()));
        assert!(q.retry(&d, t0).is_empty());
        assert!(q.deferred.lock().is_empty());
        // One left too long is given up; one whose user moved is dropped.
        let late = job(101, "127.0.0.3");
        assert!(q.defer(late, t0));
        let moved = job(102, "127.0.0.5");
        assert!(q.defer(moved.clone(), t0));
        let caller = Caller {
            conn: 102,
            ip: "127.0.0.5".parse().unwrap(),
            session: true,
            key: None,
        };
        d.init(caller, "u102", 6000, &[]).unwrap();
        let gone = q.retry(&d, t0 + PROBE_RETRY_FOR);
        assert_eq!(gone, vec![Box::from("u101")]);
        assert!(q.deferred.lock().is_empty());
    }

    #[test]
    fn one_address_gets_so_many_checks_a_minute() {
        let (_prober, q) = Prober::new().unwrap();
        let d = Directory::default();
        let caller = Caller {
            conn: 1,
            ip: "127.0.0.6".parse().unwrap(),
            session: true,
            key: None,
        };
        d.init(caller, "scanner", 5000, &[]).unwrap();
        let job = Job {
            user: "scanner".into(),
            at: d.listed("scanner").unwrap(),
        };
        let key = address_key(caller.ip);
        for _ in 0..PROBES_PER_MINUTE_PER_ADDR {
            assert_eq!(q.submit(job.clone()), Ok(()));
            q.done(key); // as if it had ended at once
        }
        assert_eq!(q.submit(job.clone()), Err(Overflow::Rate));
        assert!(
            q.per_addr.lock().is_empty(),
            "a refused check holds no place"
        );
    }

    #[test]
    fn only_the_exact_answer_counts_as_reachable() {
        let t = ProbeToken::generate().unwrap();
        let other = ProbeToken::generate().unwrap();
        let ok = probe_answer(t);
        assert_eq!(judge(ok.as_bytes(), t), Reach::Reachable);
        assert_eq!(
            judge(format!("OK probe {}\r\n", t.to_hex()).as_bytes(), t),
            Reach::Reachable
        );
        assert_eq!(judge(probe_answer(other).as_bytes(), t), Reach::Unreachable);
        assert_eq!(judge(b"", t), Reach::Unreachable);
        assert_eq!(judge(ok.trim_end().as_bytes(), t), Reach::Unreachable);
        assert_eq!(
            judge(b"ERR bad-request unknown request\n", t),
            Reach::Unreachable
        );
    }
}
