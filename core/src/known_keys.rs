//! Keys this user has seen before, pinned like SSH's `known_hosts`: the registry's key
//! per registry address, and each peer's key per (registry, username). A key that
//! differs from the pinned one is a [`Pin::Changed`], which p2pchat refuses until the
//! user accepts the new key, so a compromised or restarted registry cannot silently
//! point a name at someone else.
//!
//! The file (`<config dir>/p2pchat/known_keys`, mode 0600) is text, one pin per line:
//!
//! ```text
//! registry <registry-address> <64 hex digits>
//! peer <registry-address> <username> <64 hex digits>
//! ```
//!
//! Lines that do not parse are kept as they are and otherwise ignored. Each change
//! re-reads the file under an exclusive `flock` and replaces it atomically, so two
//! processes pinning at once both keep their pins.

use crate::error::{Error, Result};
use crate::identity::{create_private_dir, open_private_new, PublicKey};
use parking_lot::Mutex;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The largest known-keys file read (about 20,000 pins).
const MAX_FILE: u64 = 4 << 20;

/// What a pin store says about a key offered for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// Nothing pinned for this name yet.
    New,
    /// The key is the pinned one.
    Matches,
    /// Another key is pinned: the offered one is refused until the user accepts it.
    Changed {
        /// The key pinned before.
        pinned: PublicKey,
    },
}

/// The subject of a pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// The registry at this address (as the user wrote it).
    Registry(&'a str),
    /// A user of the registry at this address.
    Peer {
        /// The registry's address.
        registry: &'a str,
        /// The username.
        name: &'a str,
    },
}

impl Subject<'_> {
    fn key_fields(&self) -> String {
        match self {
            Subject::Registry(r) => format!("registry {r}"),
            Subject::Peer { registry, name } => format!("peer {registry} {name}"),
        }
    }
}

/// A pin store backed by a file; in memory only when built with [`KnownKeys::memory`].
#[derive(Debug)]
pub struct KnownKeys {
    path: Option<PathBuf>,
    /// The parsed pins, refreshed from the file before each decision.
    lines: Mutex<Vec<String>>,
}

impl KnownKeys {
    /// Pins kept in `path` (created on the first pin).
    pub fn open(path: &Path) -> Result<KnownKeys> {
        let k = KnownKeys {
            path: Some(path.to_path_buf()),
            lines: Mutex::new(Vec::new()),
        };
        k.reload()?;
        Ok(k)
    }

    /// Pins kept only in memory (forgotten at exit).
    pub fn memory() -> KnownKeys {
        KnownKeys {
            path: None,
            lines: Mutex::new(Vec::new()),
        }
    }

    /// The default file: `<config dir>/p2pchat/known_keys`.
    pub fn default_path() -> Option<PathBuf> {
        crate::identity::default_config_dir().map(|d| d.join("known_keys"))
    }

    /// Where the pins are kept (`None`: memory only).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// What is pinned for `subject`, compared with `key`.
    pub fn check(&self, subject: Subject<'_>, key: &PublicKey) -> Result<Pin> {
        self.reload()?;
        Ok(match self.pinned(subject) {
            None => Pin::New,
            Some(p) if p == *key => Pin::Matches,
            Some(p) => Pin::Changed { pinned: p },
        })
    }

    /// The key pinned for `subject`, if any (as of the last read of the file).
    pub fn pinned(&self, subject: Subject<'_>) -> Option<PublicKey> {
        let prefix = subject.key_fields();
        let lines = self.lines.lock();
        lines.iter().rev().find_map(|l| {
            let rest = l.strip_prefix(&prefix)?.strip_prefix(' ')?;
            PublicKey::from_hex(rest.trim())
        })
    }

    /// Pins `key` for `subject`, replacing what was pinned.
    pub fn pin(&self, subject: Subject<'_>, key: &PublicKey) -> Result<()> {
        let prefix = format!("{} ", subject.key_fields());
        let line = format!("{prefix}{}", key.to_hex());
        let Some(path) = &self.path else {
            let mut lines = self.lines.lock();
            lines.retain(|l| !l.starts_with(&prefix));
            lines.push(line);
            return Ok(());
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        // The lock file, not the pins file: the pins file is replaced by rename.
        let lock = lock_file(path)?;
        let mut lines = read_lines(path)?;
        lines.retain(|l| !l.starts_with(&prefix));
        lines.push(line);
        write_atomically(path, &lines)?;
        drop(lock);
        *self.lines.lock() = lines;
        Ok(())
    }

    fn reload(&self) -> Result<()> {
        if let Some(path) = &self.path {
            let lines = read_lines(path)?;
            *self.lines.lock() = lines;
        }
        Ok(())
    }
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
        Ok(m) if m.len() > MAX_FILE => {
            return Err(Error::InvalidArgument(format!(
                "{} is over {MAX_FILE} bytes; it is not a known-keys file",
                path.display()
            )))
        }
        Ok(_) => {}
    }
    let text = fs::read(path)?;
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

fn write_atomically(path: &Path, lines: &[String]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let written = (|| -> std::io::Result<()> {
        let mut f = open_private_new(&tmp)?;
        for l in lines {
            f.write_all(l.as_bytes())?;
            f.write_all(b"\n")?;
        }
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    Ok(written?)
}

/// An exclusive `flock` on `<path>.lock`, released when the file is dropped.
fn lock_file(path: &Path) -> Result<fs::File> {
    let lock_path = path.with_extension("lock");
    let mut o = fs::OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let f = o.open(&lock_path)?;
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a descriptor we own; blocks until the other writer is done.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn pins_are_kept_checked_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_keys");
        let a = Identity::generate().unwrap().public();
        let b = Identity::generate().unwrap().public();
        let alice = Subject::Peer {
            registry: "127.0.0.1:8080",
            name: "alice",
        };
        let reg = Subject::Registry("127.0.0.1:8080");
        let k = KnownKeys::open(&path).unwrap();
        assert_eq!(k.check(alice, &a).unwrap(), Pin::New);
        k.pin(alice, &a).unwrap();
        k.pin(reg, &b).unwrap();
        // Another process (a second store on the same file) sees the pins.
        let k2 = KnownKeys::open(&path).unwrap();
        assert_eq!(k2.check(alice, &a).unwrap(), Pin::Matches);
        assert_eq!(k2.check(alice, &b).unwrap(), Pin::Changed { pinned: a });
        assert_eq!(k2.check(reg, &b).unwrap(), Pin::Matches);
        // A name on another registry is another person.
        let other = Subject::Peer {
            registry: "127.0.0.1:9090",
            name: "alice",
        };
        assert_eq!(k2.check(other, &b).unwrap(), Pin::New);
        k2.pin(alice, &b).unwrap();
        assert_eq!(k.check(alice, &b).unwrap(), Pin::Matches);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn memory_store_pins_without_a_file() {
        let k = KnownKeys::memory();
        let a = Identity::generate().unwrap().public();
        let s = Subject::Registry("r:1");
        assert_eq!(k.check(s, &a).unwrap(), Pin::New);
        k.pin(s, &a).unwrap();
        assert_eq!(k.check(s, &a).unwrap(), Pin::Matches);
    }
}
