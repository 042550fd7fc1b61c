//! The registry's Redis store in process: what it costs (threads, descriptors) and
//! gives back, claims and users shared by two `Registry` values on one real
//! `redis-server` (started here on a free loopback port, persistence off, killed and
//! reaped on drop). Skipped with a message where `redis-server` is missing, unless
//! `P2PCHAT_REDIS_REQUIRED=1` (CI), then it fails.

mod common;

use common::{closed_port, keyed_client, register, wait_until, Enc};
use p2pcore::identity::Identity;
use p2pcore::registry::{Registry, RegistryConfig, StoreSpec};
use parking_lot::Mutex;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tests count this process's threads and descriptors: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    /// The registry key of every node on this Redis (nodes of one network share it).
    key: Identity,
}

impl Redis {
    fn start() -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            assert!(
                std::env::var("P2PCHAT_REDIS_REQUIRED").as_deref() != Ok("1"),
                "redis-server is not installed and P2PCHAT_REDIS_REQUIRED=1"
            );
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let r = Redis {
            child,
            port,
            _dir: dir,
            key: Identity::generate().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(r)
    }

    fn node(&self) -> Registry {
        self.node_with(&self.key)
            .expect("a registry node on the Redis store")
    }

    /// A node serving with `key`.
    fn node_with(&self, key: &Identity) -> p2pcore::Result<Registry> {
        Registry::builder()
            .config(RegistryConfig {
                threads: 1,
                store: StoreSpec::Redis(format!("redis://127.0.0.1:{}", self.port)),
                identity: Some(key.clone()),
                ..RegistryConfig::default()
            })
            .bind("127.0.0.1:0")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[test]
fn the_store_costs_two_threads_and_three_connections_and_gives_them_back() {
    let _serial = SERIAL.lock();
    let Some(redis) = Redis::start() else { return };
    let (threads0, fds0) = (count("/proc/self/task"), count("/proc/self/fd"));
    // The same registry in memory, with one session registered: the reference.
    let (mem_threads, mem_fds) = {
        let memory = Registry::builder()
            .config(RegistryConfig {
                threads: 1,
                ..RegistryConfig::default()
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let _session = register(memory.local_addr(), "lena", 5000);
        (count("/proc/self/task"), count("/proc/self/fd"))
    };
    assert!(wait_until(Duration::from_secs(10), || {
        count("/proc/self/task") == threads0 && count("/proc/self/fd") == fds0
    }));
    let node = redis.node();
    let session = register(node.local_addr(), "lena", 5000);
    // Two threads more (the store's sync thread and its event publisher) and three
    // connections (the sync thread's, the event loop's, made at the first write, and
    // the publisher's, made at the first event).
    assert_eq!(count("/proc/self/task"), mem_threads + 2);
    assert!(
        wait_until(Duration::from_secs(10), || count("/proc/self/fd")
            == mem_fds + 3),
        "descriptors {} -> {}",
        mem_fds,
        count("/proc/self/fd")
    );
    drop(session);
    assert!(wait_until(Duration::from_secs(10), || node
        .user("lena")
        .is_none()));
    drop(node);
    assert!(
        wait_until(Duration::from_secs(10), || {
            count("/proc/self/task") == threads0 && count("/proc/self/fd") == fds0
        }),
        "threads {} -> {}, descriptors {} -> {}",
        threads0,
        count("/proc/self/task"),
        fds0,
        count("/proc/self/fd")
    );
}

#[test]
fn claims_and_users_are_shared_and_a_clean_stop_removes_its_users_at_once() {
    let _serial = SERIAL.lock();
    let Some(redis) = Redis::start() else { return };
    let a = redis.node();
    let b = redis.node();
    let kim = keyed_client(a.local_addr(), "kim", 5000);
    let key = kim.id.public();
    // The claim was written to Redis before A answered OK.
    assert_eq!(b.claim("kim").unwrap(), Some(key));
    assert!(wait_until(Duration::from_secs(10), || b
        .user("kim")
        .is_some()));
    let entry = b.user("kim").unwrap();
    assert_eq!((entry.port, entry.key), (5000, Some(key)));
    assert_eq!(entry.files, vec!["x.bin"]);
    assert_eq!(b.users(), vec!["kim".to_string()]);
    // Released through B, gone for A.
    assert!(b.release_claim("kim").unwrap());
    assert_eq!(a.claim("kim").unwrap(), None);
    // A stops cleanly: its session users leave every node at once, not after its
    // liveness key expires (3 s).
    let stopped = Instant::now();
    drop(a);
    assert!(wait_until(Duration::from_secs(10), || b
        .user("kim")
        .is_none()));
    let took = stopped.elapsed();
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    drop(kim);
}

#[test]
fn a_node_with_another_registry_key_does_not_join_the_running_ones() {
    let _serial = SERIAL.lock();
    let Some(redis) = Redis::start() else { return };
    let a = redis.node();
    let other = Identity::generate().unwrap();
    let Err(err) = redis.node_with(&other) else {
        panic!("a node with another key joined");
    };
    let text = err.to_string();
    assert!(
        text.contains(&a.fingerprint().to_string())
            && text.contains(&other.fingerprint().to_string())
            && text.contains("give every node the same registry.key"),
        "{text}"
    );
    // The same key joins.
    let b = redis.node();
    assert_eq!(b.public_key(), a.public_key());
    // Once every node has been gone for the key's lifetime (3 s), a network may start
    // over with another key.
    drop((a, b));
    assert!(wait_until(Duration::from_secs(15), || redis
        .node_with(&other)
        .is_ok()));
}

#[test]
fn a_node_does_not_start_without_its_redis() {
    let _serial = SERIAL.lock();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let err = Registry::builder()
        .config(RegistryConfig {
            store: StoreSpec::Redis(format!("redis://127.0.0.1:{port}")),
            ..RegistryConfig::default()
        })
        .bind("127.0.0.1:0")
        .expect_err("no Redis listening");
    let text = err.to_string();
    assert!(
        text.contains("redis store") && text.contains(&port.to_string()),
        "{text}"
    );
}

/// An encrypted registry session (`REG/2`) with `id`'s key, with 15 s limits.
fn dial(addr: std::net::SocketAddr, id: &p2pcore::identity::Identity) -> Enc {
    Enc::within(
        TcpStream::connect(addr).unwrap(),
        id,
        None,
        Duration::from_secs(15),
    )
}

#[test]
fn a_watch_on_another_node_gets_the_pushes_and_ends_with_the_registration() {
    let _serial = SERIAL.lock();
    let Some(redis) = Redis::start() else { return };
    let a = redis.node();
    let b = redis.node();
    let bob = p2pcore::identity::Identity::generate().unwrap();
    let (p1, p2) = (closed_port(), closed_port());
    let mut session = dial(a.local_addr(), &bob);
    assert_eq!(session.ask(&format!("INIT,bob,{p1}")), "OK");
    // Node A's prober checks bob's listener; the result reaches node B's replica.
    assert!(wait_until(Duration::from_secs(15), || {
        b.user("bob")
            .is_some_and(|u| u.reach != p2pcore::reach::Reach::Unknown)
    }));
    // Another key may not watch bob on either node; bob's own key may, on node B.
    let eve = p2pcore::identity::Identity::generate().unwrap();
    assert_eq!(
        dial(b.local_addr(), &eve).ask("WATCH,bob"),
        "ERR,Not your registration"
    );
    let mut watch = dial(b.local_addr(), &bob);
    assert_eq!(
        watch.ask("WATCH,bob"),
        format!("OK,127.0.0.1,{p1},unreachable")
    );
    // bob moves: node A checks the new port and its push crosses to node B's watcher.
    assert_eq!(session.ask(&format!("INIT,bob,{p2}")), "UP");
    assert_eq!(
        watch.line().ok().as_deref(),
        Some(format!("REACH,unreachable,127.0.0.1,{p2}").as_str())
    );
    // bob's registration ends on node A: node B ends the watch session.
    drop(session);
    assert_eq!(
        watch.line().ok(),
        None,
        "the watch session ends with the registration"
    );
}
