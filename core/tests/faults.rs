//! Fault injection: processes killed with SIGKILL mid-way, a full disk, a requester that
//! vanishes. Child processes are this test binary re-run with an `#[ignore]`d entry
//! point and its settings in environment variables.

mod common;

use common::{fake_peer, pattern, wait_until};
use p2pcore::peer::{Peer, PeerLimits};
use p2pcore::registry::{Registry, RegistryConfig};
use p2pcore::ErrorCode;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(20);

/// A child process running one of the `child_*` entry points; killed on drop.
struct ChildProc(Child);

impl ChildProc {
    fn start(entry: &str, env: &[(&str, String)]) -> (ChildProc, String) {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            entry,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = ChildProc(cmd.spawn().unwrap());
        let mut out = BufReader::new(child.0.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "{entry} ended early");
            // The harness prints "test NAME ... " without a newline first.
            if let Some((_, ready)) = line.split_once("READY ") {
                return (child, ready.trim().to_string());
            }
        }
    }

    fn kill(mut self) {
        self.0.kill().unwrap(); // SIGKILL
        self.0.wait().unwrap();
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn park() {
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
#[ignore]
fn child_serves_a_share() {
    let (Ok(registry), Ok(dir)) = (std::env::var("P2P_REGISTRY"), std::env::var("P2P_DIR")) else {
        return;
    };
    let peer = common::peer_builder(&registry, "server", Path::new(&dir))
        .connect()
        .unwrap();
    println!("READY {}", peer.listen_addr());
    std::io::stdout().flush().unwrap();
    park();
}

#[test]
#[ignore]
fn child_runs_a_registry() {
    let Ok(addr) = std::env::var("P2P_ADDR") else {
        return;
    };
    let config = RegistryConfig {
        data_dir: std::env::var_os("P2P_DATA").map(Into::into),
        ..RegistryConfig::default()
    };
    let r = Registry::builder().config(config).bind(addr).unwrap();
    println!("READY {}", r.local_addr());
    std::io::stdout().flush().unwrap();
    park();
}

#[test]
fn a_serving_peer_killed_mid_transfer_is_resumed_to_an_identical_file() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let content = pattern(256 * 1024 * 1024, 0);
    let share = TempDir::new().unwrap();
    std::fs::write(share.path().join("big.bin"), &content).unwrap();
    let env = [
        ("P2P_REGISTRY", r.local_addr().to_string()),
        ("P2P_DIR", share.path().display().to_string()),
    ];
    let (server, _) = ChildProc::start("child_serves_a_share", &env);
    let mine = TempDir::new().unwrap();
    let bob = common::peer_builder(&r.local_addr().to_string(), "bob", mine.path())
        .connect()
        .unwrap();
    let final_path = mine.path().join("big.bin");
    let t = bob.fetch("server", "big.bin").unwrap();
    assert!(wait_until(WAIT, || t.progress().0 > 0 || t.is_finished()));
    server.kill();
    let first = t.wait();
    assert!(
        first.is_ok() || !final_path.exists(),
        "nothing under the final name before it verifies"
    );
    if first.is_err() {
        // Its session died with it: the registry forgot the server at once.
        assert!(wait_until(WAIT, || !r
            .users()
            .contains(&"server".to_string())));
        let (_server, _) = ChildProc::start("child_serves_a_share", &env);
        let t = bob.fetch("server", "big.bin").unwrap();
        let resumed_from = t.progress().0;
        assert!(resumed_from > 0, "resumes from the partial file");
        t.wait().unwrap();
        eprintln!("resumed from byte {resumed_from} of {}", content.len());
    }
    assert!(
        std::fs::read(&final_path).unwrap() == content,
        "byte-identical"
    );
}

#[test]
fn a_killed_registry_restarted_on_its_address_lists_every_peer_again() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    // Restarted from the same data directory: the same key (the peers pinned it) and
    // the same claims.
    let data = TempDir::new().unwrap();
    let env = [
        ("P2P_ADDR", addr.to_string()),
        ("P2P_DATA", data.path().display().to_string()),
    ];
    let (registry, _) = ChildProc::start("child_runs_a_registry", &env);
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let peers: Vec<Peer> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            common::peer_builder(&addr.to_string(), &format!("p{i}"), d.path())
                .connect()
                .unwrap()
        })
        .collect();
    registry.kill();
    let restarted = Instant::now();
    let r = Registry::builder()
        .config(RegistryConfig {
            data_dir: Some(data.path().to_path_buf()),
            ..RegistryConfig::default()
        })
        .bind(addr)
        .unwrap();
    assert!(
        wait_until(WAIT, || r.users() == vec!["p0", "p1", "p2"]),
        "listed again: {:?}",
        r.users()
    );
    assert!(
        restarted.elapsed() < Duration::from_secs(5),
        "within 5 s: {:?}",
        restarted.elapsed()
    );
    drop(peers);
}

#[test]
fn a_requester_that_vanishes_mid_transfer_frees_the_serving_slot() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let share = TempDir::new().unwrap();
    std::fs::write(share.path().join("big.bin"), pattern(64 * 1024 * 1024, 0)).unwrap();
    let server = common::peer_builder(&r.local_addr().to_string(), "server", share.path())
        .connect()
        .unwrap();
    let client = common::keyed_client(r.local_addr(), "vanisher", 1);
    for _ in 0..5 {
        let mut s = client.link(server.listen_addr(), server.public_key());
        s.writer.write_all(b"P2P/1 FILE 0 big.bin\n").unwrap();
        let mut some = [0u8; 4096];
        s.reader.read_exact(&mut some).unwrap();
        drop(s); // gone mid-transfer
    }
    assert!(
        wait_until(WAIT, || server.serving() == 0),
        "slots freed: {}",
        server.serving()
    );
}

/// Mount a 1 MiB tmpfs at `dir`; `false` where this machine does not allow it.
fn small_disk(dir: &Path) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn a_full_disk_fails_clearly_and_keeps_the_partial_file_for_resume() {
    let disk = TempDir::new().unwrap();
    if !small_disk(disk.path()) {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root and mount rights)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(disk.path());
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let share = TempDir::new().unwrap();
    let content = pattern(4 * 1024 * 1024, 0);
    std::fs::write(share.path().join("big.bin"), &content).unwrap();
    let _server = common::peer_builder(&r.local_addr().to_string(), "server", share.path())
        .connect()
        .unwrap();
    let bob = common::peer_builder(&r.local_addr().to_string(), "bob", disk.path())
        .limits(PeerLimits {
            free_space_margin: 0,
            ..PeerLimits::default()
        })
        .connect()
        .unwrap();
    // Larger than the disk: refused before the first byte is written.
    let err = bob.fetch("server", "big.bin").unwrap().wait().unwrap_err();
    assert_eq!(err.code(), ErrorCode::TooLarge, "{err}");
    assert!(err.to_string().contains("nothing was written"), "{err}");
    assert!(!disk.path().join("big.bin").exists());
    assert!(!p2pcore::transfer::partial_path(disk.path(), "big.bin").exists());
    assert!(
        std::fs::read(share.path().join("big.bin")).unwrap() == content,
        "source untouched"
    );

    // Fits when it starts, but another program fills the disk meanwhile: the write
    // error ends the download clearly, and the partial file stays for a resume.
    let small = pattern(512 * 1024, 1);
    let first = 64 * 1024;
    let (go, wait_go) = crossbeam_channel::bounded::<()>(1);
    let _filler = fake_peer(r.local_addr(), "filler", move |mut c| {
        let hash = blake3::hash(&small).to_hex();
        let _ = writeln!(c.stream, "OK {} {hash}", small.len());
        let _ = c.stream.write_all(&small[..first]);
        let _ = wait_go.recv_timeout(WAIT);
        let _ = c.stream.write_all(&small[first..]);
    });
    let t = bob.fetch("filler", "x.bin").unwrap();
    let partial = p2pcore::transfer::partial_path(disk.path(), "x.bin");
    let len = || std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(wait_until(WAIT, || len() >= first as u64), "{}", len());
    let mut hog = std::fs::File::create(disk.path().join("hog")).unwrap();
    while hog.write_all(&[0u8; 4096]).is_ok() {}
    go.send(()).unwrap();
    let err = t.wait().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Io, "{err}");
    assert!(err.to_string().contains("No space left"), "{err}");
    assert!(!disk.path().join("x.bin").exists());
    assert!(len() >= first as u64, "the partial file stays for a resume");
}
