//! Several `p2pchat server --store redis://…` nodes sharing one directory in a real
//! `redis-server` (each test starts its own on a free loopback port, persistence off,
//! in a temporary directory; killed and reaped on drop). Skipped with a message where
//! `redis-server` is missing, unless `P2PCHAT_REDIS_REQUIRED=1` (CI), then it fails.

mod common;

use common::{server_proc, share, Proc};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of this test's own; killed and reaped on drop (a panic included).
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    /// `None` (after saying why) when `redis-server` is not installed and not required.
    fn start() -> Option<Redis> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok();
        if !found {
            assert!(
                std::env::var("P2PCHAT_REDIS_REQUIRED").as_deref() != Ok("1"),
                "redis-server is not installed and P2PCHAT_REDIS_REQUIRED=1"
            );
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut r = Redis {
            child: None,
            port,
            dir: tempfile::tempdir().expect("redis temp dir"),
        };
        r.run();
        Some(r)
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends commands pipelined (RESP) and reads one reply line each (bulk bodies
    /// skipped): enough for the writes and counters these tests need.
    fn pipeline(&self, commands: &[Vec<String>]) -> Vec<String> {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect redis");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut out = Vec::new();
        for c in commands {
            out.extend_from_slice(format!("*{}\r\n", c.len()).as_bytes());
            for a in c {
                out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
        }
        (&s).write_all(&out).expect("write to redis");
        let mut r = BufReader::new(&s);
        let mut replies = Vec::new();
        for _ in commands {
            let mut line = String::new();
            r.read_line(&mut line).expect("redis reply");
            if let Some(n) = line
                .strip_prefix('$')
                .and_then(|n| n.trim().parse::<usize>().ok())
            {
                let mut body = vec![0; n + 2];
                r.read_exact(&mut body).unwrap();
                line = String::from_utf8_lossy(&body[..n]).into_owned();
            }
            replies.push(line.trim_end().to_string());
        }
        replies
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A registry node on the Redis store: the process and its address.
fn node(redis: &Redis, extra: &[&str]) -> (Proc, String) {
    let url = redis.url();
    let mut args = vec!["--addr", "127.0.0.1:0", "--store", url.as_str(), "--quiet"];
    args.extend_from_slice(extra);
    let mut p = server_proc(&args);
    let line = p.line_with("registry listening on ");
    let addr = line
        .rsplit(' ')
        .next()
        .expect("an address")
        .trim()
        .to_string();
    (p, addr)
}

/// A plaintext session with one registry node.
struct Session {
    r: BufReader<TcpStream>,
}

impl Session {
    fn open(addr: &str) -> Session {
        let s = TcpStream::connect(addr).expect("connect to the node");
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        Session {
            r: BufReader::new(s),
        }
    }

    /// One query, one answer line.
    fn ask(&mut self, q: &str) -> String {
        self.r
            .get_mut()
            .write_all(format!("{q}\n").as_bytes())
            .expect("send");
        let mut line = String::new();
        self.r.read_line(&mut line).expect("answer");
        line.trim_end_matches('\n').to_string()
    }

    /// `GET_AF`: the user lines (the answer ends with an empty line), or the `ERR`.
    fn all_files(&mut self) -> Result<Vec<String>, String> {
        let first = self.ask("GET_AF");
        if first.starts_with("ERR") {
            return Err(first);
        }
        let mut users = Vec::new();
        let mut line = first.strip_prefix("OK,").expect("OK,").to_string();
        while !line.is_empty() {
            users.push(std::mem::take(&mut line));
            self.r.read_line(&mut line).expect("GET_AF line");
            line.truncate(line.trim_end_matches('\n').len());
        }
        Ok(users)
    }
}

/// Ask `addr` in a fresh session until `want` holds for the answer (deadline `within`);
/// returns how long it took.
fn until(addr: &str, q: &str, within: Duration, mut want: impl FnMut(&str) -> bool) -> Duration {
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < within {
        last = Session::open(addr).ask(q);
        if want(&last) {
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{q} on {addr}: still {last:?} after {within:?}");
}

const SLACK: Duration = Duration::from_secs(10);

/// Held by the tests that load the machine (floods, 100,000 users): one at a time, so
/// that none of them pushes another's replica past its 1 s freshness bound on a small
/// machine.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn registrations_ownership_and_caps_hold_across_nodes() {
    let Some(redis) = Redis::start() else { return };
    let (_a, a) = node(&redis, &["--max-users-per-addr", "3"]);
    let (_b, b) = node(&redis, &["--max-users-per-addr", "3"]);
    let mut on_a = Session::open(&a);
    assert_eq!(on_a.ask("INIT,alice,5000,notes.txt,song.mp3"), "OK");
    // On node A at once (its own write), on node B through the change log.
    assert_eq!(on_a.ask("GET_P,alice"), "OK,127.0.0.1,5000");
    let took = until(&b, "GET_P,alice", SLACK, |s| s == "OK,127.0.0.1,5000");
    eprintln!("alice visible on the other node after {took:?}");
    let mut on_b = Session::open(&b);
    assert_eq!(on_b.ask("GET_UF,alice"), "OK,notes.txt,song.mp3");
    assert_eq!(on_b.ask("GET_U"), "OK,alice");
    // Ownership is decided in Redis: node B's session neither takes nor removes it.
    assert_eq!(on_b.ask("INIT,alice,6000,x"), "ERR,Username taken");
    assert_eq!(on_b.ask("EXIT,alice"), "ERR,Not the owner of this username");
    assert_eq!(on_b.ask("EXIT,nobody"), "ERR,User not found!");
    // An update on A shows on B.
    assert_eq!(on_a.ask("INIT,alice,5001,notes.txt"), "UP");
    until(&b, "GET_UF,alice", SLACK, |s| s == "OK,notes.txt");
    // The per-address registration cap (3) counts both nodes' registrations.
    assert_eq!(on_b.ask("INIT,bob,5002"), "OK");
    assert_eq!(on_a.ask("INIT,carol,5003"), "OK");
    assert_eq!(
        on_b.ask("INIT,dave,5004"),
        "ERR,Too many registrations from your address"
    );
    // A session's end removes its registrations on every node, at once.
    drop(on_a);
    until(&b, "GET_P,alice", SLACK, |s| s == "ERR,User not found!");
    until(&b, "GET_U", SLACK, |s| s == "OK,bob");
    // ... and frees the address's share.
    assert_eq!(on_b.ask("INIT,dave,5004"), "OK");
    // EXIT through the owning node, seen on the other.
    assert_eq!(on_b.ask("EXIT,bob"), "OK");
    until(&a, "GET_U", SLACK, |s| s == "OK,dave");
    // A legacy (one-shot, unterminated) registration of this IP on node A ...
    let mut legacy = TcpStream::connect(&a).unwrap();
    legacy.write_all(b"INIT,zed,5005").unwrap();
    legacy
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let _ = legacy.read_to_end(&mut Vec::new());
    until(&b, "GET_P,zed", SLACK, |s| s == "OK,127.0.0.1,5005,legacy");
    // ... which a session of the same IP on node B may take over, as on one node.
    assert_eq!(on_b.ask("INIT,zed,5006"), "UP");
    until(&a, "GET_P,zed", SLACK, |s| s == "OK,127.0.0.1,5006");
    // Now it is that session's: it ends with it, on every node.
    drop(on_b);
    until(&a, "GET_U", SLACK, |s| s == "OK");
}

#[test]
fn a_killed_node_loses_its_users_on_the_others_within_5_s() {
    let Some(redis) = Redis::start() else { return };
    let (mut a, a_addr) = node(&redis, &[]);
    let (_b, b) = node(&redis, &[]);
    let (_c, c) = node(&redis, &[]);
    let mut on_a = Session::open(&a_addr);
    assert_eq!(on_a.ask("INIT,erin,5000,a.txt"), "OK");
    let mut on_c = Session::open(&c);
    assert_eq!(on_c.ask("INIT,frank,5001"), "OK");
    until(&b, "GET_U", SLACK, |s| s == "OK,erin,frank");
    a.signal(libc::SIGKILL);
    let killed = Instant::now();
    a.wait_exit(Duration::from_secs(10));
    until(&b, "GET_P,erin", SLACK, |s| s == "ERR,User not found!");
    let gone = killed.elapsed();
    eprintln!("erin gone from node B {gone:?} after node A was killed");
    assert!(
        gone < Duration::from_secs(5) + Duration::from_millis(1500),
        "a dead node's users must go within 5 s (took {gone:?})"
    );
    until(&c, "GET_P,erin", SLACK, |s| s == "ERR,User not found!");
    // The other nodes' users stay.
    assert_eq!(Session::open(&b).ask("GET_U"), "OK,frank");
    // The dead node's session is no owner any more: the name is free again.
    assert_eq!(Session::open(&b).ask("INIT,erin,5009"), "OK");
}

#[test]
fn a_redis_restart_is_unavailable_then_recovers() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (mut a, a_addr) = node(&redis, &[]);
    let (mut b, b_addr) = node(&redis, &[]);
    let mut held = Session::open(&a_addr);
    assert_eq!(held.ask("INIT,gina,5000,g.txt"), "OK");
    until(&b_addr, "GET_P,gina", SLACK, |s| s == "OK,127.0.0.1,5000");
    redis.stop();
    // Never stale data served as fresh: reads and writes are refused while it is down.
    until(&b_addr, "GET_U", SLACK, |s| s == "ERR,Registry unavailable");
    let mut on_b = Session::open(&b_addr);
    assert_eq!(on_b.ask("GET_P,gina"), "ERR,Registry unavailable");
    assert_eq!(on_b.ask("INIT,hal,5001"), "ERR,Registry unavailable");
    assert_eq!(on_b.ask("GET_AF"), "ERR,Registry unavailable");
    assert!(a.exits_within(Duration::ZERO).is_none(), "node A crashed");
    assert!(b.exits_within(Duration::ZERO).is_none(), "node B crashed");
    // Redis comes back empty (no persistence): the nodes resync by themselves, and
    // node A writes back the registration its live session still holds.
    redis.run();
    until(&b_addr, "GET_P,gina", SLACK, |s| s == "OK,127.0.0.1,5000");
    assert_eq!(on_b.ask("INIT,hal,5001"), "OK");
    until(&a_addr, "GET_U", SLACK, |s| s == "OK,gina,hal");
    // The written-back registration is still the session's: it ends with it.
    drop(held);
    until(&b_addr, "GET_U", SLACK, |s| s == "OK,hal");
}

#[test]
fn get_af_of_100000_users_through_another_node() {
    let _heavy = heavy();
    const USERS: usize = 100_000;
    let Some(redis) = Redis::start() else { return };
    let (_a, a) = node(&redis, &[]);
    let (_b, b) = node(&redis, &[]);
    // Registrations written straight into Redis in the store's layout (legacy ones, of
    // 127.0.0.9, whose lease is live), each with its change-log entry, in slices of
    // 2,000 per script (Redis is never held long): as if made through other nodes, far
    // faster than 100,000 INITs.
    let script = r#"
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  local name = string.format('user%06d', i)
  redis.call('HSET', 'p2p:u:' .. name, 'ip', '127.0.0.9', 'port', 10000 + i % 50000,
    'files', 'a.txt,b.txt', 'owner', 'l:127.0.0.9', 'key', '', 'addr', '127.0.0.9',
    'node', '', 'cost', 150)
  redis.call('ZADD', 'p2p:users', 0, name)
  redis.call('SADD', 'p2p:lu:127.0.0.9', name)
  local seq = redis.call('INCR', 'p2p:seq')
  redis.call('XADD', 'p2p:log', 'MAXLEN', '~', 100000, '*', 's', seq, 'n', name)
end
redis.call('SADD', 'p2p:leases', '127.0.0.9')
redis.call('SET', 'p2p:lease:127.0.0.9', '1', 'PX', 600000)
return 1
"#;
    let mut cmds = Vec::new();
    for start in (0..USERS).step_by(10_000) {
        let args = [
            script,
            "0",
            &start.to_string(),
            &(start + 9_999).to_string(),
        ];
        cmds.push(
            std::iter::once("EVAL")
                .chain(args)
                .map(String::from)
                .collect(),
        );
    }
    // One script at a time (a pipeline of them would hold Redis for seconds).
    for c in cmds {
        assert_eq!(redis.pipeline(&[c]), [":1"], "loading users");
    }
    // The last user written is the last applied: poll for it cheaply (a GET_AF per poll
    // would render the growing list each time), then ask for everything once.
    let last = format!("OK,127.0.0.9,{},legacy", 10_000 + (USERS - 1) % 50_000);
    let t0 = Instant::now();
    until(&b, "GET_P,user099999", Duration::from_secs(60), |s| {
        s == last
    });
    let users = Session::open(&b).all_files().expect("GET_AF on B");
    assert_eq!(users.len(), USERS);
    eprintln!("100,000 users on node B after {:?}", t0.elapsed());
    assert_eq!(users[0], "user000000: a.txt,b.txt");
    assert_eq!(users[USERS - 1], "user099999: a.txt,b.txt");
    assert!(
        users.windows(2).all(|w| w[0] < w[1]),
        "sorted, no duplicates"
    );
    assert_eq!(
        Session::open(&b).ask("GET_P,user054321"),
        format!("OK,127.0.0.9,{},legacy", 10_000 + 54_321 % 50_000)
    );
    // Node A answers the same, once it has caught up too (it follows the same log,
    // on a machine other tests load as well).
    until(&a, "GET_P,user099999", Duration::from_secs(60), |s| {
        s == last
    });
    let on_a = Session::open(&a).all_files().expect("GET_AF on A");
    assert_eq!(on_a.len(), USERS);
    let memory = redis.pipeline(&[vec![
        "MEMORY".into(),
        "USAGE".into(),
        "p2p:u:user000001".into(),
    ]]);
    eprintln!(
        "one user's hash: {} bytes",
        memory[0].trim_start_matches(':')
    );
}

#[test]
fn name_claims_hold_across_nodes() {
    let Some(redis) = Redis::start() else { return };
    let (_a, a) = node(&redis, &[]);
    let (_b, b) = node(&redis, &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.txt"), b"x").unwrap();
    // `p2pchat share` registers over an encrypted session with its key: a claim.
    let (peer, _) = share(&a, "ivy", dir.path(), false);
    let on_b = until(&b, "GET_P,ivy", SLACK, |s| s.starts_with("OK,127.0.0.1,"));
    eprintln!("ivy visible on node B after {on_b:?}");
    // `OK,ip,port,key,reach`: node A's prober checks ivy's listener; its result is
    // shared through Redis, so node B answers the same reach.
    let mut on_a = String::new();
    until(&a, "GET_P,ivy", SLACK, |s| {
        on_a = s.to_string();
        s.split(',').nth(4).is_some_and(|r| r != "unknown")
    });
    until(&b, "GET_P,ivy", SLACK, |s| s == on_a);
    let key = on_a.split(',').nth(3).unwrap().to_string();
    assert_eq!(key.len(), 64, "the key travels with the user: {on_a}");
    // Online: refused on every node (the claim is checked first).
    assert_eq!(
        Session::open(&b).ask("INIT,ivy,5000"),
        "ERR,Username is claimed by another key"
    );
    drop(peer);
    until(&b, "GET_P,ivy", SLACK, |s| s == "ERR,User not found!");
    // Offline: still claimed by ivy's key, on the node that never saw the claim made.
    assert_eq!(
        Session::open(&b).ask("INIT,ivy,5000"),
        "ERR,Username is claimed by another key"
    );
    // The claim is in Redis, with its TTL (the claim TTL, 90 days by default).
    let ttl = redis.pipeline(&[vec!["PTTL".into(), "p2p:claim:ivy".into()]]);
    let ms: i64 = ttl[0].trim_start_matches(':').parse().unwrap();
    assert!(ms > 80 * 86_400_000, "claim TTL {ms} ms");
    // The same key comes back through the other node: granted.
    let (_peer, _) = share(&b, "ivy", dir.path(), false);
    until(&a, "GET_P,ivy", SLACK, |s| s.contains(&key));
}

/// A node printing its log (no `--quiet`) and its node id (the `registry node:` line).
fn logging_node(redis: &Redis, extra: &[&str]) -> (Proc, String, String) {
    let url = redis.url();
    let mut args = vec!["--addr", "127.0.0.1:0", "--store", url.as_str()];
    args.extend_from_slice(extra);
    let mut p = server_proc(&args);
    let line = p.line_with("registry listening on ");
    let addr = line
        .rsplit(' ')
        .next()
        .expect("an address")
        .trim()
        .to_string();
    let id = p.line_with("registry node: ");
    let id = id.rsplit(' ').next().expect("a node id").trim().to_string();
    assert_eq!(id.len(), 16, "{id:?}");
    (p, addr, id)
}

#[test]
fn a_node_with_publish_events_off_keeps_its_events_to_itself() {
    let Some(redis) = Redis::start() else { return };
    let (mut quiet, quiet_addr, quiet_id) = logging_node(&redis, &["--publish-events", "off"]);
    let (_loud, loud_addr, loud_id) = logging_node(&redis, &[]);
    let url = redis.url();
    let mut viewer =
        common::Proc::start(&["server", "log", "--store", &url, "--log-format", "json"]);
    viewer.expect("\"event\":\"following\"");
    // The quiet node serves and logs its query as ever.
    assert_eq!(
        Session::open(&quiet_addr).ask("GET_P,asked-of-quiet"),
        "ERR,User not found!"
    );
    quiet.expect("GET_P,asked-of-quiet");
    // A later query on the other node reaches the viewer (retried: the viewer's tail
    // starts at "now"), and a second after it, still nothing of the quiet node's.
    let t0 = Instant::now();
    for n in 1.. {
        let q = format!("GET_P,asked-of-loud{n}");
        assert_eq!(Session::open(&loud_addr).ask(&q), "ERR,User not found!");
        std::thread::sleep(Duration::from_millis(300));
        if viewer.all_stdout().contains(&q) {
            break;
        }
        assert!(t0.elapsed() < SLACK, "{}", viewer.all_stdout());
    }
    std::thread::sleep(Duration::from_secs(1));
    let seen = viewer.all_stdout();
    assert!(seen.contains(&format!("\"node\":\"{loud_id}\"")), "{seen}");
    assert!(!seen.contains("asked-of-quiet"), "{seen}");
    assert!(!seen.contains(&quiet_id), "{seen}");
}

#[test]
fn show_all_and_the_viewer_print_every_nodes_events_tagged_with_their_node() {
    let Some(redis) = Redis::start() else { return };
    let (mut a, a_addr, a_id) = logging_node(&redis, &["--show", "all"]);
    let (mut b, b_addr, b_id) = logging_node(&redis, &[]);
    assert_ne!(a_id, b_id);
    let url = redis.url();
    let mut viewer =
        common::Proc::start(&["server", "log", "--store", &url, "--log-format", "json"]);
    viewer.expect("\"event\":\"following\"");
    // A query on node B shows on node A, tagged with B, within a few seconds (the
    // tail starts at "now": retry until A is following).
    let t0 = Instant::now();
    let mut n = 0;
    let seen = loop {
        n += 1;
        let q = format!("GET_P,probe{n}");
        assert_eq!(Session::open(&b_addr).ask(&q), "ERR,User not found!");
        let needle = format!("[{b_id}] 127.0.0.1:");
        let deadline = Instant::now() + Duration::from_millis(1500);
        let mut found = None;
        while Instant::now() < deadline && found.is_none() {
            std::thread::sleep(Duration::from_millis(50));
            found = a
                .all_stdout()
                .lines()
                .find(|l| l.contains(&needle) && l.contains(&format!("{q} -> ERR,User not found!")))
                .map(String::from);
        }
        if let Some(line) = found {
            break line;
        }
        assert!(t0.elapsed() < SLACK, "{}", a.all_stdout());
    };
    eprintln!("on node A: {seen}");
    // A's own queries are tagged with A.
    assert_eq!(
        Session::open(&a_addr).ask("GET_P,only-on-a"),
        "ERR,User not found!"
    );
    a.line_with(&format!("[{a_id}] 127.0.0.1:"));
    // The viewer shows both, as JSON lines with their node.
    let line = viewer.line_with(&format!("\"node\":\"{b_id}\""));
    assert!(line.starts_with("{\"time\":"), "{line}");
    let line = viewer.line_with("GET_P,only-on-a");
    assert!(line.contains(&format!("\"node\":\"{a_id}\"")), "{line}");
    assert!(line.contains("\"event\":\"query\""), "{line}");
    // Node B (default `--show own`) printed its own queries only, untagged: a marker
    // query on B after A's event was published (the viewer saw it).
    assert_eq!(
        Session::open(&b_addr).ask("GET_P,marker"),
        "ERR,User not found!"
    );
    b.expect("GET_P,marker");
    let b_out = b.all_stdout();
    assert!(!b_out.contains("only-on-a"), "{b_out}");
    assert!(!b_out.contains(&format!("[{a_id}]")), "{b_out}");
    assert!(!b_out.contains(&format!("[{b_id}]")), "{b_out}");
    assert!(
        b_out.contains("GET_P,probe1 -> ERR,User not found!"),
        "{b_out}"
    );
}

#[test]
fn show_all_needs_the_redis_store() {
    let o = common::p2pchat(&[
        "server",
        "--ephemeral",
        "--addr",
        "127.0.0.1:0",
        "--show",
        "all",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("--show all"), "{}", o.stderr);
}

#[test]
fn a_stalled_redis_neither_stalls_the_event_loop_nor_loses_events_silently() {
    let _heavy = heavy();
    let Some(redis) = Redis::start() else { return };
    let (mut a, a_addr, _) = logging_node(&redis, &["--queries-per-sec", "0"]);
    let pid = redis.child.as_ref().expect("redis runs").id() as i32;
    // SAFETY: signals to the redis-server this test started (resumed below and on
    // every exit path by the guard).
    struct Resume(i32);
    impl Drop for Resume {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0, libc::SIGCONT) };
        }
    }
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let _resume = Resume(pid);
    // A flood of queries on one session, all sent at once: each is answered (from the
    // replica while fresh, then `ERR,Registry unavailable`), none waits on Redis.
    let s = TcpStream::connect(&a_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    const N: usize = 5_000;
    let flood = "GET_U\n".repeat(N);
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || w.write_all(flood.as_bytes()))
    };
    let mut r = BufReader::new(&s);
    let (mut ok, mut unavailable) = (0, 0);
    for _ in 0..N {
        let mut line = String::new();
        r.read_line(&mut line)
            .expect("an answer while redis is stopped");
        match line.trim_end() {
            "OK" => ok += 1,
            "ERR,Registry unavailable" => unavailable += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    writer.join().unwrap().unwrap();
    eprintln!("{ok} answered, {unavailable} refused while redis was stopped");
    // The events the publisher could not send are counted and said.
    let line = a.line_with("not shared with the other nodes");
    let n: u64 = line
        .split("... ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count in {line:?}"));
    assert!(n > 0, "{line}");
    // Redis back: the node serves again.
    drop(_resume);
    until(&a_addr, "GET_U", SLACK, |s| s == "OK");
}

#[test]
fn a_stalled_viewer_drops_lines_and_says_so_within_a_bounded_memory() {
    let _heavy = heavy();
    let Some(redis) = Redis::start() else { return };
    let (_a, a_addr) = node(&redis, &["--queries-per-sec", "0"]);
    let url = redis.url();
    let mut viewer = common::Proc::start(&["server", "log", "--store", &url]);
    viewer.expect("following the registry nodes' events");
    let before = viewer.rss_kib();
    // Nobody reads the viewer's stdout: its pipe fills, then its queue.
    viewer.pause_stdout();
    let s = TcpStream::connect(&a_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    const N: usize = 20_000;
    let flood = "GET_P,nobody\n".repeat(N);
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || w.write_all(flood.as_bytes()))
    };
    let mut r = BufReader::new(&s);
    for _ in 0..N {
        let mut line = String::new();
        r.read_line(&mut line).expect("an answer");
        assert_eq!(line, "ERR,User not found!\n");
    }
    writer.join().unwrap().unwrap();
    // Let the viewer read the stream while stalled.
    std::thread::sleep(Duration::from_secs(2));
    let during = viewer.rss_kib();
    viewer.resume_stdout();
    let line = viewer.line_with("log lines dropped (output too slow)");
    eprintln!("{line}; viewer VmRSS {before} -> {during} KiB");
    // The queue (4,096 lines) and one read (512 entries) bound it, whatever the flood.
    assert!(during < before + 32 * 1024, "{before} -> {during} KiB");
}

#[test]
fn the_viewer_needs_a_redis_store_it_can_reach() {
    let o = common::p2pchat(&["server", "log", "--store", "memory"]);
    assert_eq!(o.status.code(), Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("--store redis://"), "{}", o.stderr);
    // Nothing listens on this port (bound, then closed): a clear failure, no wait.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let o = common::p2pchat(&["server", "log", "--store", &url]);
    assert_eq!(o.status.code(), Some(1), "{}", o.stderr);
    assert!(
        o.stderr.contains("cannot follow the registry's events"),
        "{}",
        o.stderr
    );
}
