//! Who a p2pchat user is: a long-term X25519 key pair, its public half as the identity,
//! and a short fingerprint of it for people to compare.
//!
//! The key is the one Noise uses for its static key (`secure`), so proving a name is
//! simply completing a handshake: the registry binds a username to the key that
//! registered it, and peers check the key they reached against the one listed (and
//! against the one they [pinned](crate::known_keys) before). X25519 rather than an
//! Ed25519 signing key: nothing in p2pchat signs; every proof is a Noise handshake,
//! which is what WireGuard and Tox do too.
//!
//! On disk (`<config dir>/p2pchat/<username>.key`, mode 0600), an identity is text:
//!
//! ```text
//! p2pchat-identity 1
//! private <64 lowercase hex digits>
//! public <64 lowercase hex digits>
//! ```
//!
//! The file is created atomically (a temporary file created with mode 0600, written,
//! synced, then renamed), and a file others can read is refused, as SSH refuses a
//! private key with loose permissions.

use crate::error::{Error, Result};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Length of an X25519 key, public or private.
pub const KEY_LEN: usize = 32;

/// The largest identity file read (a valid one is about 150 bytes).
const MAX_IDENTITY_FILE: u64 = 4096;

/// The Noise suite's DH function; also used to derive a public key from a private one.
const DH_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// A user's (or a registry's) public key: the identity others check and pin.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// The key from raw bytes; `None` unless there are exactly 32.
    pub fn from_slice(b: &[u8]) -> Option<PublicKey> {
        <[u8; KEY_LEN]>::try_from(b).ok().map(PublicKey)
    }

    /// 64 lowercase hex digits (how keys appear on the wire and in files).
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// Parses 64 hex digits (either case). `None` for anything else.
    pub fn from_hex(s: &str) -> Option<PublicKey> {
        if s.len() != 2 * KEY_LEN {
            return None;
        }
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(s.as_bytes())
            .ok()?;
        PublicKey::from_slice(&bytes)
    }

    /// The key's fingerprint, what a person compares.
    pub fn fingerprint(&self) -> Fingerprint {
        let digest = blake3::derive_key("p2pchat 2026 key fingerprint v1", &self.0);
        let mut fp = [0u8; FINGERPRINT_LEN];
        fp.copy_from_slice(&digest[..FINGERPRINT_LEN]);
        Fingerprint(fp)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl fmt::Display for PublicKey {
    /// The hex form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Bytes of the key's BLAKE3 digest a fingerprint keeps: 160 bits, so finding a
/// second key with the same fingerprint costs about 2^160 work.
const FINGERPRINT_LEN: usize = 20;

/// A short, human-comparable digest of a [`PublicKey`]: 32 base32 characters in
/// groups of four, e.g. `K7QH-2MXA-9PLD-…`. Base32 (A–Z, 2–7) has no 0/O or 1/l to
/// confuse when read aloud; parsing ignores case, dashes and spaces.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; FINGERPRINT_LEN]);

impl Fingerprint {
    /// Parses a fingerprint as [`Display`](fmt::Display) writes it; case, `-` and
    /// spaces are ignored. `None` unless it is exactly 32 base32 characters.
    pub fn parse(s: &str) -> Option<Fingerprint> {
        let cleaned: String = s
            .chars()
            .filter(|c| *c != '-' && *c != ' ')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let bytes = data_encoding::BASE32_NOPAD
            .decode(cleaned.as_bytes())
            .ok()?;
        <[u8; FINGERPRINT_LEN]>::try_from(bytes.as_slice())
            .ok()
            .map(Fingerprint)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = data_encoding::BASE32_NOPAD.encode(&self.0);
        for (i, chunk) in text.as_bytes().chunks(4).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            // Base32 output is ASCII.
            f.write_str(std::str::from_utf8(chunk).unwrap_or("?"))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A long-term key pair: the private half never leaves the process (nor its file).
#[derive(Clone)]
pub struct Identity {
    private: [u8; KEY_LEN],
    public: PublicKey,
}

impl Identity {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> Result<Identity> {
        let params = noise_params()?;
        let kp = snow::Builder::new(params)
            .generate_keypair()
            .map_err(|e| Error::InvalidArgument(format!("cannot generate a key: {e}")))?;
        Identity::from_private(&kp.private)
    }

    /// The identity whose private key is `private` (32 bytes).
    pub fn from_private(private: &[u8]) -> Result<Identity> {
        let private = <[u8; KEY_LEN]>::try_from(private)
            .map_err(|_| Error::InvalidArgument("a private key is 32 bytes".into()))?;
        let public = public_of(&private)?;
        Ok(Identity { private, public })
    }

    /// The public key: this identity as others see it.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The public key's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.public.fingerprint()
    }

    /// The private key, for the Noise handshake.
    pub(crate) fn private_bytes(&self) -> &[u8; KEY_LEN] {
        &self.private
    }

    /// Loads the identity in `path`, or creates one there (and its directory, mode
    /// 0700) when the file does not exist. Refuses a file readable or writable by
    /// group or others, and one that is not exactly an identity file.
    pub fn load_or_create(path: &Path) -> Result<Identity> {
        match Identity::load(path) {
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        let id = Identity::generate()?;
        match id.save_new(path) {
            Ok(()) => Ok(id),
            // Another process created it first: use theirs, so both agree.
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Identity::load(path)
            }
            Err(e) => Err(e),
        }
    }

    /// Loads the identity stored in `path` (see the module documentation).
    pub fn load(path: &Path) -> Result<Identity> {
        let meta = fs::metadata(path)?;
        check_private_mode(path, &meta)?;
        if meta.len() > MAX_IDENTITY_FILE {
            return Err(bad_file(path, "it is too large to be an identity file"));
        }
        let text = fs::read_to_string(path).map_err(|_| bad_file(path, "it is not a text file"))?;
        let mut lines = text.lines();
        if lines.next() != Some("p2pchat-identity 1") {
            return Err(bad_file(
                path,
                "its first line is not \"p2pchat-identity 1\"",
            ));
        }
        let field = |line: Option<&str>, name: &str| -> Result<[u8; KEY_LEN]> {
            line.and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .and_then(PublicKey::from_hex)
                .map(|k| k.0)
                .ok_or_else(|| bad_file(path, &format!("its {name} line is missing or malformed")))
        };
        let private = field(lines.next(), "private")?;
        let public = field(lines.next(), "public")?;
        let id = Identity::from_private(&private)?;
        if id.public.0 != public {
            return Err(bad_file(
                path,
                "its public key does not belong to its private key",
            ));
        }
        Ok(id)
    }

    /// Writes this identity to `path`, which must not exist yet (never overwrites a
    /// key: losing one loses the names it holds).
    pub fn save_new(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        let text = format!(
            "p2pchat-identity 1\nprivate {}\npublic {}\n",
            data_encoding::HEXLOWER.encode(&self.private),
            self.public.to_hex()
        );
        // Unique per call, not only per process: two threads of one process creating
        // the same file must not share (and remove) one temporary file, or the loser
        // would find neither its file nor the winner's.
        static NEXT_TMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT_TMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        let written = (|| -> std::io::Result<()> {
            let mut f = open_private_new(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            // A hard link fails when `path` exists, where a rename would replace it.
            fs::hard_link(&tmp, path)
        })();
        let _ = fs::remove_file(&tmp);
        written?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Identity {
    /// Never prints the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.public.fingerprint())
    }
}

/// The per-user configuration directory: `$XDG_CONFIG_HOME/p2pchat` when that is an
/// absolute path, else `$HOME/.config/p2pchat`; `None` when neither is set.
pub fn default_config_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    match (xdg, home) {
        (Some(x), _) if x.is_absolute() => Some(x.join("p2pchat")),
        (_, Some(h)) if h.is_absolute() => Some(h.join(".config").join("p2pchat")),
        _ => None,
    }
}

/// Where `username`'s identity is kept by default: `<config dir>/<username>.key`.
/// Usernames cannot contain `/` (registry rule), but the name is checked here too.
pub fn default_identity_file(username: &str) -> Result<PathBuf> {
    if username.is_empty()
        || username.contains(['/', '\\', '\0'])
        || username == "."
        || username == ".."
    {
        return Err(Error::InvalidUsername(username.to_string()));
    }
    let dir = default_config_dir().ok_or_else(|| {
        Error::InvalidArgument(
            "no place for the identity key: set HOME or XDG_CONFIG_HOME, or give an identity file"
                .into(),
        )
    })?;
    Ok(dir.join(format!("{username}.key")))
}

fn noise_params() -> Result<snow::params::NoiseParams> {
    DH_PARAMS
        .parse()
        .map_err(|e| Error::InvalidArgument(format!("noise parameters: {e:?}")))
}

/// X25519 public key of `private`, through snow's own DH (no hand-written curve code).
fn public_of(private: &[u8; KEY_LEN]) -> Result<PublicKey> {
    use snow::resolvers::{CryptoResolver, DefaultResolver};
    let mut dh = DefaultResolver
        .resolve_dh(&snow::params::DHChoice::Curve25519)
        .ok_or_else(|| Error::InvalidArgument("no X25519 implementation".into()))?;
    dh.set(private);
    PublicKey::from_slice(dh.pubkey())
        .ok_or_else(|| Error::InvalidArgument("X25519 public key is not 32 bytes".into()))
}

fn bad_file(path: &Path, why: &str) -> Error {
    Error::InvalidArgument(format!(
        "{} is not a usable p2pchat identity: {why}",
        path.display()
    ))
}

#[cfg(unix)]
fn check_private_mode(path: &Path, meta: &fs::Metadata) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InvalidArgument(format!(
            "{} holds a private key but its mode is {mode:04o}, open to others; run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_path: &Path, _meta: &fs::Metadata) -> Result<()> {
    Ok(())
}

/// Creates `dir` (and parents) with mode 0700 where it does not exist.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Creates a new file with mode 0600 (fails if it exists).
pub(crate) fn open_private_new(path: &Path) -> std::io::Result<fs::File> {
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_creating_one_key_at_once_all_get_the_same_key() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("alice.key");
            let start = std::sync::Barrier::new(8);
            let keys: Vec<PublicKey> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            Identity::load_or_create(&path).map(|id| id.public())
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap().expect("created or loaded"))
                    .collect()
            });
            assert!(keys.iter().all(|k| *k == keys[0]), "one key for all");
            assert_eq!(Identity::load(&path).unwrap().public(), keys[0]);
        }
    }

    #[test]
    fn hex_and_fingerprint_round_trip() {
        let id = Identity::generate().unwrap();
        let k = id.public();
        assert_eq!(PublicKey::from_hex(&k.to_hex()), Some(k));
        assert_eq!(PublicKey::from_hex(&k.to_hex().to_uppercase()), Some(k));
        assert_eq!(PublicKey::from_hex("abc"), None);
        let fp = k.fingerprint();
        let text = fp.to_string();
        assert_eq!(text.len(), 32 + 7, "{text}");
        assert_eq!(Fingerprint::parse(&text), Some(fp));
        assert_eq!(
            Fingerprint::parse(&text.to_lowercase().replace('-', "")),
            Some(fp)
        );
        assert_eq!(Fingerprint::parse("AAAA"), None);
        let other = Identity::generate().unwrap();
        assert_ne!(other.fingerprint(), fp);
    }

    #[test]
    fn public_key_is_derived_from_the_private_key() {
        let id = Identity::generate().unwrap();
        let again = Identity::from_private(id.private_bytes()).unwrap();
        assert_eq!(again.public(), id.public());
    }

    #[test]
    fn a_key_file_is_created_private_and_loaded_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg").join("alice.key");
        let a = Identity::load_or_create(&path).unwrap();
        let b = Identity::load_or_create(&path).unwrap();
        assert_eq!(a.public(), b.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let dmode = fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dmode & 0o777, 0o700);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            let err = Identity::load(&path).unwrap_err().to_string();
            assert!(err.contains("chmod 600"), "{err}");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        // Never overwritten.
        assert!(Identity::generate().unwrap().save_new(&path).is_err());
        assert_eq!(Identity::load(&path).unwrap().public(), a.public());
    }

    #[test]
    fn a_tampered_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bob.key");
        let id = Identity::generate().unwrap();
        id.save_new(&path).unwrap();
        let other = Identity::generate().unwrap().public().to_hex();
        let text = fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        let public_line = format!("public {other}");
        lines[2] = &public_line;
        fs::remove_file(&path).unwrap();
        let mut f = open_private_new(&path).unwrap();
        f.write_all(lines.join("\n").as_bytes()).unwrap();
        let err = Identity::load(&path).unwrap_err().to_string();
        assert!(err.contains("does not belong"), "{err}");
    }

    #[test]
    fn default_file_refuses_path_like_names() {
        assert!(default_identity_file("../x").is_err());
        assert!(default_identity_file("..").is_err());
    }
}
