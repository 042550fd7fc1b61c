//! The NAT lab: a small internet on this machine, made of Linux network namespaces,
//! veth pairs and nftables, in which the real `p2pchat` binary runs.
//!
//! ```text
//!                   public segment 203.0.113.0/24 (bridge `br0` in the switch namespace)
//!   ┌──────────────┬──────────────┬──────────────┬──────────────┬──────────────┐
//!   registry       public host    public host    NAT a wan      NAT b wan
//!   203.0.113.10   203.0.113.20   203.0.113.21…  203.0.113.101  203.0.113.102
//!                                                │ masquerade   │ masquerade
//!                                                NAT a lan      NAT b lan
//!                                                198.51.100.1   198.51.100.129
//!                                                /25            /25
//!                                                host .10, .11… host .138, .139…
//! ```
//!
//! Every host is a namespace of its own with one veth (`eth0`); the public ones and
//! each NAT router's `wan` side plug into the switch namespace's bridge, so the public
//! segment is one flat /24 with no routes at all. A NAT router forwards from `lan` to
//! `wan` with masquerade and drops everything unsolicited that arrives on `wan`
//! (`ct state established,related accept`, then a counted drop, for both forwarded
//! traffic and traffic to the router itself), as a home router does. Hosts behind a
//! NAT have a default route to their router; nothing has a route to the machine's
//! real network: no namespace is connected to it.
//!
//! Only the documentation ranges are used (RFC 5737): the public segment is
//! 203.0.113.0/24; NAT `a` is inside 198.51.100.0/25, NAT `b` inside
//! 198.51.100.128/25 and a third NAT inside 192.0.2.0/24.
//!
//! Names are unique per lab (`p2pnl-<pid>-<n>-<role>`), so parallel test processes
//! and the tests within one never collide; interfaces are created inside the
//! namespaces, never in the machine's own. [`Lab`] removes every namespace (and with
//! them their veths) and kills every process left in them on drop, panics included;
//! the first lab of a process also removes what a crashed earlier run left (namespaces
//! of this family whose process is gone). Every `ip`/`nft` command and every wait has a
//! deadline.
//!
//! Where the lab cannot run (not root, no `ip` or `nft`, namespaces refused) a scenario
//! prints why and passes, unless `P2PCHAT_NATLAB_REQUIRED=1`, where it fails (CI).

#![allow(dead_code)] // each scenario uses a different part

pub mod capture;
pub mod proc;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use proc::{LabProc, Output};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_p2pchat");
/// Set to `1` (CI) to turn "cannot build the lab here" from a skip into a failure.
pub const REQUIRED_ENV: &str = "P2PCHAT_NATLAB_REQUIRED";
/// Every namespace of the lab starts with this, then `-<pid>-<n>-`.
const FAMILY: &str = "p2pnl";
/// The longest any `ip` or `nft` command may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(10);
/// The registry's address on the public segment, and its port.
pub const REGISTRY_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const REGISTRY_PORT: u16 = 7777;

/// Where a host sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// On the public segment, reachable by everyone.
    Public,
    /// Behind the NAT router of this name (created on first mention), which keeps a
    /// connection's source port where it can, as most home routers do.
    Behind(&'static str),
    /// Behind the NAT router of this name that gives every connection a random port
    /// (`masquerade fully-random`), as carrier-grade and many corporate NATs do: no
    /// hole can be punched through it. One name is one kind of router.
    BehindSymmetric(&'static str),
}

/// One machine of the lab: its namespace and address.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// Its network namespace (`ip netns exec <ns> …`).
    pub ns: String,
    /// Its own address (inside a NAT's range for a host behind one).
    pub ip: Ipv4Addr,
    /// The address the internet sees it at: its own, or its NAT's public one.
    pub public_ip: Ipv4Addr,
    /// The NAT it sits behind, if any.
    pub nat: Option<String>,
}

/// A NAT router: public (`wan`) and inside (`lan`) sides.
#[derive(Debug, Clone)]
pub struct Nat {
    pub name: String,
    pub ns: String,
    /// Its address on the public segment: what the internet sees its hosts at.
    pub public_ip: Ipv4Addr,
    /// Its address inside, the hosts' default route.
    pub inside_ip: Ipv4Addr,
    /// The inside prefix length.
    pub prefix: u8,
    /// Hosts placed behind it so far.
    hosts: u8,
}

/// A running lab. Dropping it kills what runs in it and removes it.
pub struct Lab {
    /// `p2pnl-<pid>-<n>`: every namespace name starts with it.
    pub tag: String,
    /// The namespace holding the public segment's bridge (where captures listen).
    pub switch: String,
    /// Every namespace made, in order (removed in reverse).
    namespaces: Vec<String>,
    hosts: Vec<Host>,
    nats: Vec<Nat>,
    /// Ports made on the bridge so far.
    ports: u32,
    /// Home, config and data directories of the processes run here.
    pub temp: tempfile::TempDir,
}

/// Why the lab cannot run here.
#[derive(Debug)]
pub struct Unavailable(pub String);

/// Whether a lab that cannot be built fails the test (CI) rather than skipping it.
pub fn required() -> bool {
    std::env::var(REQUIRED_ENV).is_ok_and(|v| v == "1")
}

/// Say that `scenario` is skipped and why, or fail when the lab is required. Written
/// straight to stderr, past the test harness's capture, so a skip shows in CI logs.
fn skip_or_fail(scenario: &str, why: &str) {
    if required() {
        panic!("NAT lab {scenario}: cannot run ({why}), and {REQUIRED_ENV}=1 requires it");
    }
    let _ = writeln!(
        std::io::stderr(),
        "natlab: SKIPPED {scenario}: {why} (the lab needs root, `ip` and `nft`; \
         set {REQUIRED_ENV}=1 to make this a failure)"
    );
}

static LABS: AtomicU32 = AtomicU32::new(0);
static SWEEP: std::sync::Once = std::sync::Once::new();

impl Lab {
    /// A lab with the registry's host and `hosts` placed as given, or `None` (after a
    /// skip message) where namespaces cannot be made. Panics instead of skipping under
    /// `P2PCHAT_NATLAB_REQUIRED=1`.
    pub fn start(scenario: &str, hosts: &[(&str, At)]) -> Option<Lab> {
        if let Err(Unavailable(why)) = prerequisites() {
            skip_or_fail(scenario, &why);
            return None;
        }
        SWEEP.call_once(sweep_stale);
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{FAMILY}-{}-{n}", std::process::id());
        let temp = match tempfile::Builder::new().prefix("p2pchat-natlab-").tempdir() {
            Ok(t) => t,
            Err(e) => panic!("cannot create the lab's temporary directory: {e}"),
        };
        let mut lab = Lab {
            switch: format!("{tag}-sw"),
            tag,
            namespaces: Vec::new(),
            hosts: Vec::new(),
            nats: Vec::new(),
            ports: 0,
            temp,
        };
        match lab.build(hosts) {
            Ok(()) => Some(lab),
            Err(Unavailable(why)) => {
                // The partial lab goes first, so a required-mode panic leaves nothing.
                drop(lab);
                skip_or_fail(scenario, &why);
                None
            }
        }
    }

    fn build(&mut self, hosts: &[(&str, At)]) -> Result<(), Unavailable> {
        let sw = self.switch.clone();
        self.add_namespace(&sw)?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        self.add_public_host("registry", REGISTRY_IP)?;
        let mut public = 20u8;
        for &(name, at) in hosts {
            match at {
                At::Public => {
                    self.add_public_host(name, Ipv4Addr::new(203, 0, 113, public))?;
                    public += 1;
                }
                At::Behind(nat) => self.add_host_behind(name, nat, false)?,
                At::BehindSymmetric(nat) => self.add_host_behind(name, nat, true)?,
            }
        }
        Ok(())
    }

    fn add_namespace(&mut self, ns: &str) -> Result<(), Unavailable> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// A veth from the bridge to `iface` in `ns`, which gets `addr`/24 on the public
    /// segment.
    fn plug_into_switch(
        &mut self,
        ns: &str,
        iface: &str,
        addr: Ipv4Addr,
    ) -> Result<(), Unavailable> {
        assert_documentation(addr);
        let port = format!("p{}", self.ports);
        self.ports += 1;
        let sw = self.switch.clone();
        ip(&[
            "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", iface, "netns", ns,
        ])?;
        ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
        ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", iface])?;
        ip(&["-n", ns, "link", "set", iface, "up"])?;
        Ok(())
    }

    fn add_public_host(&mut self, name: &str, addr: Ipv4Addr) -> Result<(), Unavailable> {
        let ns = format!("{}-{name}", self.tag);
        self.add_namespace(&ns)?;
        self.plug_into_switch(&ns, "eth0", addr)?;
        self.hosts.push(Host {
            name: name.to_string(),
            ns,
            ip: addr,
            public_ip: addr,
            nat: None,
        });
        Ok(())
    }

    /// The NAT router `name`, made on first use: `wan` on the public segment, `lan`
    /// inside its range, forwarding with masquerade (`symmetric`: a random port per
    /// connection), unsolicited inbound dropped.
    fn nat_router(&mut self, name: &str, symmetric: bool) -> Result<usize, Unavailable> {
        if let Some(i) = self.nats.iter().position(|n| n.name == name) {
            return Ok(i);
        }
        let i = self.nats.len();
        let (inside_ip, prefix) = match i {
            0 => (Ipv4Addr::new(198, 51, 100, 1), 25),
            1 => (Ipv4Addr::new(198, 51, 100, 129), 25),
            2 => (Ipv4Addr::new(192, 0, 2, 1), 24),
            _ => panic!("the lab has room for three NATs"),
        };
        let public_ip = Ipv4Addr::new(203, 0, 113, 101 + i as u8);
        let ns = format!("{}-nat-{name}", self.tag);
        self.add_namespace(&ns)?;
        self.plug_into_switch(&ns, "wan", public_ip)?;
        run_cmd(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                &tool("sh"),
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward",
            ],
            None,
        )?;
        let rules = if symmetric {
            NAT_RULES.replace(
                "oifname \"wan\" masquerade",
                "oifname \"wan\" masquerade fully-random",
            )
        } else {
            NAT_RULES.to_string()
        };
        run_cmd(
            "ip",
            &["netns", "exec", &ns, &tool("nft"), "-f", "-"],
            Some(&rules),
        )?;
        self.nats.push(Nat {
            name: name.to_string(),
            ns,
            public_ip,
            inside_ip,
            prefix,
            hosts: 0,
        });
        Ok(i)
    }

    fn add_host_behind(
        &mut self,
        name: &str,
        nat: &str,
        symmetric: bool,
    ) -> Result<(), Unavailable> {
        let i = self.nat_router(nat, symmetric)?;
        let router = self.nats[i].clone();
        let [a, b, c, d] = router.inside_ip.octets();
        let addr = Ipv4Addr::new(a, b, c, d + 9 + router.hosts);
        self.nats[i].hosts += 1;
        let ns = format!("{}-{name}", self.tag);
        self.add_namespace(&ns)?;
        // The host's veth is made inside the router and moved into the host: no name
        // ever appears in the machine's own namespace.
        let lan_port = format!("lan{}", router.hosts);
        ip(&[
            "-n", &router.ns, "link", "add", &lan_port, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ])?;
        if router.hosts == 0 {
            // The inside is a bridge, `lan`, holding the router's inside address; each
            // host's veth is a port of it.
            ip(&["-n", &router.ns, "link", "add", "lan", "type", "bridge"])?;
            ip(&["-n", &router.ns, "link", "set", "lan", "up"])?;
            let cidr = format!("{}/{}", router.inside_ip, router.prefix);
            ip(&["-n", &router.ns, "addr", "add", &cidr, "dev", "lan"])?;
        }
        ip(&[
            "-n", &router.ns, "link", "set", &lan_port, "master", "lan", "up",
        ])?;
        assert_documentation(addr);
        let cidr = format!("{addr}/{}", router.prefix);
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        let via = router.inside_ip.to_string();
        ip(&["-n", &ns, "route", "add", "default", "via", &via])?;
        self.hosts.push(Host {
            name: name.to_string(),
            ns,
            ip: addr,
            public_ip: router.public_ip,
            nat: Some(router.name.clone()),
        });
        Ok(())
    }

    /// The host called `name` (`"registry"` is always there).
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("the lab has no host {name:?}"))
    }

    /// The NAT router called `name`.
    pub fn nat(&self, name: &str) -> &Nat {
        self.nats
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("the lab has no NAT {name:?}"))
    }

    /// The registry's `HOST:PORT`.
    pub fn registry_addr(&self) -> String {
        SocketAddrV4::new(REGISTRY_IP, REGISTRY_PORT).to_string()
    }

    /// `p2pchat ARGS` to run on `host`, with the host's home, config, data and cache
    /// directory (nothing of the machine's user is read or written; one per host, as
    /// on a machine, so a user's runs there share their key) and no registry or user
    /// from the environment.
    pub fn p2pchat(&self, host: &Host, args: &[&str]) -> Command {
        let home = self.temp.path().join(format!("home-{}", host.name));
        for sub in ["config", "data", "cache"] {
            std::fs::create_dir_all(home.join(sub)).expect("create a child's home");
        }
        let mut c = Command::new(tool("ip"));
        c.args(["netns", "exec", &host.ns, BIN])
            .args(args)
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("NO_COLOR", "1")
            .env_remove("P2PCHAT_REGISTRY")
            .env_remove("P2PCHAT_USER")
            .stdin(Stdio::null());
        c
    }

    /// Run `p2pchat ARGS` on `host` to its end; killed past `timeout`.
    pub fn run(&self, host: &Host, args: &[&str], timeout: Duration) -> Output {
        proc::run_bounded(self.p2pchat(host, args), timeout)
    }

    /// Start `p2pchat ARGS` on `host` in the background (killed when dropped).
    pub fn spawn(&self, host: &Host, args: &[&str]) -> LabProc {
        LabProc::spawn(
            self.p2pchat(host, args),
            &format!("{} on {}", args[0], host.name),
        )
    }

    /// `p2pchat server` on the registry's host; returns once it listens.
    pub fn start_registry(&self) -> LabProc {
        self.start_registry_with(&[])
    }

    /// `p2pchat server` with `extra` arguments (e.g. relay limits).
    pub fn start_registry_with(&self, extra: &[&str]) -> LabProc {
        let addr = self.registry_addr();
        let mut args = vec!["server", "--addr", &addr];
        args.extend_from_slice(extra);
        let mut server = self.spawn(self.host("registry"), &args);
        server.expect_line(&format!("registry listening on {addr}"), proc::WAIT);
        server
    }

    /// `p2pchat share` of `dir` as `user` on `host`; returns the process and its
    /// listening port once it is registered.
    pub fn share(&self, host: &Host, user: &str, dir: &std::path::Path) -> (LabProc, u16) {
        self.share_with(host, user, dir, &[])
    }

    /// [`Lab::share`] with `extra` arguments (e.g. `--accept-chats`).
    pub fn share_with(
        &self,
        host: &Host,
        user: &str,
        dir: &std::path::Path,
        extra: &[&str],
    ) -> (LabProc, u16) {
        let registry = self.registry_addr();
        let dir = dir.to_str().expect("UTF-8 path");
        let mut args = vec![
            "share",
            "--registry",
            &registry,
            "--user",
            user,
            "--dir",
            dir,
        ];
        args.extend_from_slice(extra);
        let mut p = self.spawn(host, &args);
        let banner = format!("sharing as {user} on ");
        let line = p.expect_line(&banner, proc::WAIT);
        let port = line[banner.len()..]
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no port in {line:?}"));
        (p, port)
    }

    /// Whether a TCP connection from inside `ns` to `to` is accepted within `timeout`
    /// (made from a thread that enters the namespace; nothing is sent).
    pub fn connects(&self, ns: &str, to: SocketAddrV4, timeout: Duration) -> bool {
        let path = netns_path(ns);
        std::thread::scope(|s| {
            s.spawn(|| {
                enter_netns(&path).is_ok()
                    && TcpStream::connect_timeout(&to.into(), timeout).is_ok()
            })
            .join()
            .unwrap_or(false)
        })
    }

    /// How many unsolicited packets NAT `name` has dropped on its public side.
    pub fn nat_dropped(&self, name: &str) -> u64 {
        let nat = self.nat(name);
        let out = run_cmd(
            "ip",
            &[
                "netns",
                "exec",
                &nat.ns,
                &tool("nft"),
                "list",
                "counter",
                "ip",
                "natlab",
                "unsolicited",
            ],
            None,
        )
        .unwrap_or_else(|Unavailable(e)| panic!("reading NAT {name}'s counter: {e}"));
        out.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no packet count in {out:?}"))
    }

    /// Start recording every frame that crosses the public segment.
    pub fn capture_public(&self) -> capture::Capture {
        capture::Capture::start(&netns_path(&self.switch), "br0")
            .unwrap_or_else(|e| panic!("cannot capture on the public segment: {e}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Processes first (a namespace lives on while a process is in it), then the
        // namespaces, whose veths and bridges go with them.
        for ns in self.namespaces.iter().rev() {
            kill_all_in(ns);
        }
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// The NAT router's rules: masquerade out of `wan`; from the inside anything goes
/// (`lan*`: with bridge netfilter on, traffic between two hosts of one NAT also passes
/// the forward chain); on `wan`, only replies come in (to the router or through it),
/// everything else is counted and dropped.
const NAT_RULES: &str = r#"
table ip natlab {
  counter unsolicited {
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" masquerade
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan*" accept
    iifname "wan" counter name "unsolicited" drop
  }
  chain input {
    type filter hook input priority filter; policy accept;
    ct state established,related accept
    iifname "wan" counter name "unsolicited" drop
  }
}
"#;

/// The lab never uses an address outside the documentation ranges (RFC 5737), so it
/// can never shadow or reach a real network.
fn assert_documentation(addr: Ipv4Addr) {
    let [a, b, c, _] = addr.octets();
    assert!(
        matches!((a, b, c), (192, 0, 2) | (198, 51, 100) | (203, 0, 113)),
        "{addr} is not a documentation address"
    );
}

/// Root, `ip` and `nft`: without them there is no lab.
fn prerequisites() -> Result<(), Unavailable> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Unavailable("not running as root".into()));
    }
    for (tool, flag) in [("ip", "-V"), ("nft", "--version")] {
        run_cmd(tool, &[flag], None)
            .map_err(|Unavailable(e)| Unavailable(format!("`{tool}` is not usable: {e}")))?;
    }
    Ok(())
}

/// The namespaces whose name is `tag` or starts with `tag-`.
pub fn namespaces_tagged(tag: &str) -> Vec<String> {
    let list = run_cmd("ip", &["netns", "list"], None)
        .unwrap_or_else(|Unavailable(e)| panic!("ip netns list: {e}"));
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| *ns == tag || ns.starts_with(&format!("{tag}-")))
        .map(str::to_string)
        .collect()
}

/// Remove what crashed earlier runs left: namespaces of this family whose process is
/// gone (a live process's labs, parallel to this one, are left alone). Run by the
/// first lab of each test process.
pub fn sweep_stale() {
    let Ok(list) = run_cmd("ip", &["netns", "list"], None) else {
        return;
    };
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = ns
            .strip_prefix(FAMILY)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 == std::process::id() || pid_alive(pid) {
            continue;
        }
        let _ = writeln!(std::io::stderr(), "natlab: removing stale namespace {ns}");
        kill_all_in(ns);
        let _ = ip(&["netns", "del", ns]);
    }
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

/// SIGKILL every process in `ns` (only ever a lab namespace: its processes are the
/// lab's) and wait, briefly, until they are gone.
fn kill_all_in(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids: Vec<i32> = run_cmd("ip", &["netns", "pids", ns], None)
            .map(|o| {
                o.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    // Never this test process (its threads may visit a namespace).
                    .filter(|&p: &i32| p as u32 != std::process::id())
                    .collect()
            })
            .unwrap_or_default();
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) on a process inside one of the lab's namespaces.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn netns_path(ns: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(ns)
}

/// Move the calling thread into the namespace at `path` (the thread stays there).
pub(crate) fn enter_netns(path: &std::path::Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a descriptor we own; affects only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<String, Unavailable> {
    run_cmd("ip", args, None)
}

/// Where the system tool `name` is: found on `PATH`, or in the sbin directories a
/// non-login root shell may leave out of it; the bare name when nowhere.
pub fn tool(name: &str) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .map_or_else(|| name.to_string(), |p| p.display().to_string())
}

/// Run a tool to its end within [`CMD_TIMEOUT`]; its stdout, or why it failed.
fn run_cmd(tool: &str, args: &[&str], stdin: Option<&str>) -> Result<String, Unavailable> {
    let mut c = Command::new(self::tool(tool));
    c.args(args);
    let o = proc::run_bounded_with_input(c, stdin, CMD_TIMEOUT);
    if o.timed_out {
        return Err(Unavailable(format!(
            "`{tool} {}` took longer than {CMD_TIMEOUT:?}",
            args.join(" ")
        )));
    }
    if let Some(e) = &o.spawn_error {
        return Err(Unavailable(format!("cannot run `{tool}`: {e}")));
    }
    if !o.status_ok() {
        return Err(Unavailable(format!(
            "`{tool} {}` failed: {}",
            args.join(" "),
            o.stderr.trim()
        )));
    }
    Ok(o.stdout)
}
