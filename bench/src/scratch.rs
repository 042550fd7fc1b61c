//! What the peer scenarios (T1, T4, T5, T7) share: a scratch directory that removes itself,
//! files of random-ish bytes, and a registry with peers on 127.0.0.1.

use p2pcore::peer::{Peer, PeerBuilder};
use p2pcore::registry::{Registry, RegistryConfig};
use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Decimal megabyte: throughputs are in MB/s (10^6 bytes per second).
pub const MB: f64 = 1e6;
pub const MIB: u64 = 1024 * 1024;

/// A directory under the system temp dir (`TMPDIR`), removed with everything in it when
/// dropped, also when the scenario fails half way.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir, String> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "p2pchat-bench-{tag}-{}-{nanos:x}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(TempDir { path })
    }

    /// A subdirectory, created now.
    pub fn subdir(&self, name: &str) -> Result<PathBuf, String> {
        let p = self.path.join(name);
        std::fs::create_dir(&p).map_err(|e| format!("creating {}: {e}", p.display()))?;
        Ok(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            crate::progress(&format!("cannot remove {}: {e}", self.path.display()));
        }
    }
}

/// Remove every entry of `dir` (files only; the scenarios create no subdirectories in
/// the directories they empty).
pub fn empty_dir(dir: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("listing {}: {e}", dir.display()))?
            .path();
        std::fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// xorshift64*: fast, and its output does not compress, so no layer can cheat on it.
struct Noise(u64);

impl Noise {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// `len` random-ish bytes (seeded by `seed`), in memory: the payload of the scenarios
/// that measure a link without a file (T7).
pub fn noise_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    Noise(seed | 1).fill(&mut buf);
    buf
}

/// Write `bytes` random-ish bytes (seeded by `seed`) to a new file at `path`. With
/// `sync`, the data is also flushed to the disk, so the kernel does not write the file
/// back in the background later, in the middle of a measurement.
pub fn write_noise_file(path: &Path, bytes: u64, seed: u64, sync: bool) -> io::Result<()> {
    let mut noise = Noise(seed | 1);
    let mut buf = vec![0u8; MIB as usize];
    let mut f = File::create_new(path)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        noise.fill(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    if sync {
        f.sync_all()?;
    }
    Ok(())
}

pub fn localhost() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// The registry configuration of the scenarios whose whole load comes from one address
/// (127.0.0.1): the defaults with the per-address bounds (connections, registrations,
/// query rate) lifted, which would otherwise cap the load itself. T6 measures the
/// registry with those bounds in force.
pub fn one_address_config() -> RegistryConfig {
    RegistryConfig {
        max_conns_per_addr: usize::MAX,
        max_users_per_addr: usize::MAX,
        queries_per_sec_per_addr: 0,
        ..RegistryConfig::default()
    }
}

/// A registry on 127.0.0.1 with an ephemeral port (configured by
/// [`one_address_config`]), and its address as `host:port`.
pub fn registry() -> Result<(Registry, String), String> {
    let registry = Registry::builder()
        .config(one_address_config())
        .bind("127.0.0.1:0")
        .map_err(|e| format!("registry bind: {e}"))?;
    let addr = registry.local_addr().to_string();
    Ok((registry, addr))
}

/// A peer builder listening on 127.0.0.1 only.
pub fn peer(registry: &str, name: &str, share: &Path) -> PeerBuilder {
    Peer::builder(registry, name, share).listen_ip(localhost())
}

/// Bytes per second as MB/s.
pub fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / MB / secs
}
