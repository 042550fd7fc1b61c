//! The shared directory: which files a peer offers, their sizes and content hashes, and
//! opening one of them to serve it.
//!
//! This module owns the list of shared files (the top level of one directory, regular
//! files only), the BLAKE3 content hashes and their on-disk cache. It must never hand out
//! a file that is not in the scanned list, never follow a path or symlink that leads
//! outside the shared directory, and never return a hash that does not match the content
//! of the file it returns.
//!
//! # The hash cache
//!
//! Hashes are cached by size and mtime in the user's cache directory, never in the
//! shared directory: `$XDG_CACHE_HOME/p2pchat/` (when that variable holds an absolute
//! path) or `~/.cache/p2pchat/`, one file per shared directory named
//! `hashes-<first 32 hex digits of the BLAKE3 hash of its canonical path>` (see
//! [`cache_file_for`]). If neither variable is usable, or the directory cannot be
//! written, the cache lives in memory only: the next start hashes everything again.
//! A `.p2pchat-hashes` left in the shared directory by an earlier version is read once
//! to seed the cache and removed after the new cache file is written; it is never
//! shared (its name starts with a dot). A cache file whose shared directory no longer
//! exists is removed by a later `Share::open`: at once if that directory was in the
//! system's temporary directory, otherwise once it is [`STALE_CACHE_AGE`] old.

use crate::error::{Error, Result};
use crate::limits::{MAX_FILENAME_LEN, MAX_FILES_PER_USER};
use crate::protocol::check_filename;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Name of the hash cache file that earlier versions kept inside the shared directory.
/// It is read once to migrate its hashes, then removed; it starts with a dot, so it is
/// never shared.
pub const CACHE_FILE: &str = ".p2pchat-hashes";

/// First word of the header line of a cache file in the cache directory (followed by
/// the format version and the shared directory's path in hex).
const CACHE_MAGIC: &str = "p2pchat-hashes";

/// A cache file whose shared directory is gone is removed once it is this old: a
/// directory that is only unmounted for a while keeps its hashes.
pub const STALE_CACHE_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// How many other cache files one `Share::open` looks at for staleness (bounds the
/// work done at start however many caches have piled up).
const STALE_CHECKS_PER_OPEN: usize = 64;

/// Read buffer for hashing: large enough that BLAKE3 can use its widest SIMD path and
/// that a big file costs few system calls.
const HASH_BUF: usize = 1024 * 1024;

/// A cache file larger than this cannot be ours (4096 lines of at most ~360 bytes), so
/// it is ignored rather than read into memory.
const MAX_CACHE_FILE: u64 = 16 * 1024 * 1024;

/// A file that [`Share::scan_settled`] found still changing for this long is shared as
/// it is: it is being appended to (a log), not copied in.
pub const MAX_UNSETTLED: std::time::Duration = std::time::Duration::from_secs(30);

/// How often a file that keeps changing while it is hashed is re-read before giving up.
const HASH_ATTEMPTS: usize = 3;

/// One shared file as last seen by a scan (or re-checked by [`Share::open_file`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFile {
    /// Name inside the shared directory (no path separators; valid for the registry).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub mtime: SystemTime,
    /// BLAKE3 hash of the whole content.
    pub hash: blake3::Hash,
}

/// What a [`Share::scan`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Number of files now shared.
    pub files: usize,
    /// Number of files whose content was read to hash them (hash-cache misses).
    pub hashed: usize,
    /// Entries left out of the share, with the reason, for a warning to the user.
    /// Names starting with '.' are left out silently: they are hidden on purpose, and
    /// include p2pchat's own cache and partial-download files.
    pub skipped: Vec<(String, String)>,
    /// The entries of `skipped` that the previous scan of this `Share` did not skip
    /// (for the same reason): all of them on the first scan. Lets an application warn
    /// once per name instead of at every rescan.
    pub newly_skipped: Vec<(String, String)>,
    /// Names shared now that the previous scan did not share (all on the first scan).
    pub added: Vec<String>,
    /// Names the previous scan shared that are no longer shared.
    pub removed: Vec<String>,
    /// Names shared before and now whose size, mtime or hash changed.
    pub changed: Vec<String>,
    /// Names left as they were (not yet shared if new, the previous entry if not)
    /// because they were modified less than the settle time ago ([`Share::scan_settled`]
    /// only): a file still being copied in is not announced half-written.
    pub unsettled: Vec<String>,
}

impl ScanReport {
    /// Whether the shared list or a shared file's content changed with this scan.
    pub fn changed_anything(&self) -> bool {
        !(self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty())
    }
}

#[derive(Debug, Clone)]
struct Entry {
    file: SharedFile,
    /// Whether the name is a symlink (to a regular file inside the share); decides
    /// whether `open_file` may follow it.
    link: bool,
}

/// A shared directory and the files it currently offers. Cheap to query from many
/// threads; [`Share::scan`] refreshes it.
#[derive(Debug)]
pub struct Share {
    dir: PathBuf,
    files: RwLock<BTreeMap<String, Entry>>,
    /// The hashes as last written to (or read from) the cache file, so a scan writes the
    /// file only when something changed.
    persisted: Mutex<BTreeMap<String, CacheLine>>,
    cache: Mutex<CacheState>,
    /// What the last scan skipped, to tell which skips are new.
    skipped: Mutex<BTreeSet<(String, String)>>,
    /// Files found still being written by `scan_settled`, and since when: one that
    /// keeps changing for [`MAX_UNSETTLED`] is taken as it is.
    young: Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Held for a whole scan: scans from a file watcher and from `rescan` at once would
    /// otherwise race to replace the list, an older view possibly last. Only scans wait
    /// on it; serving reads `files`.
    scanning: Mutex<()>,
}

#[derive(Debug)]
struct CacheState {
    /// The cache file, `None` when there is no usable cache directory.
    path: Option<PathBuf>,
    /// The cache file does not hold `persisted` yet (seeded from a legacy file).
    must_write: bool,
    /// A legacy `.p2pchat-hashes` in the shared directory, removed once `path` is written.
    legacy: Option<PathBuf>,
    /// A write failure has been logged (logged once, not at every scan).
    warned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CacheLine {
    size: u64,
    mtime: i128,
    hash: blake3::Hash,
}

impl Share {
    /// Opens the shared directory `dir` without scanning it; loads the hash cache if
    /// there is a readable one.
    ///
    /// Errors with [`Error::NotADirectory`] when `dir` is missing or not a directory.
    pub fn open(dir: &Path) -> Result<Share> {
        Share::open_with_cache_dir(dir, default_cache_dir())
    }

    /// Like [`Share::open`], with the hash cache kept in `cache_dir` (created if
    /// missing) instead of the default; `None` keeps hashes in memory only.
    pub fn open_with_cache_dir(dir: &Path, cache_dir: Option<PathBuf>) -> Result<Share> {
        let not_dir = || Error::NotADirectory(dir.to_path_buf());
        let canon = fs::canonicalize(dir).map_err(|_| not_dir())?;
        if !fs::metadata(&canon).map_err(|_| not_dir())?.is_dir() {
            return Err(not_dir());
        }
        let path = cache_dir.map(|d| d.join(cache_file_name(&canon)));
        if let Some(path) = &path {
            prune_stale_caches(path);
        }
        let mut cache = CacheState {
            path,
            must_write: false,
            legacy: None,
            warned: false,
        };
        let legacy_path = canon.join(CACHE_FILE);
        let mut persisted = cache
            .path
            .as_deref()
            .and_then(|p| load_cache(p, Some(&canon)));
        let legacy = load_cache(&legacy_path, None);
        // Only a regular file of that name is ours to remove, valid or not.
        if legacy_path.symlink_metadata().is_ok_and(|m| m.is_file()) {
            cache.legacy = Some(legacy_path);
            cache.must_write = true;
        }
        if persisted.is_none() {
            persisted = legacy;
        }
        Ok(Share {
            dir: canon,
            files: RwLock::new(BTreeMap::new()),
            persisted: Mutex::new(persisted.unwrap_or_default()),
            cache: Mutex::new(cache),
            skipped: Mutex::new(BTreeSet::new()),
            young: Mutex::default(),
            scanning: Mutex::new(()),
        })
    }

    /// The file this share's hash cache is kept in (`None`: in memory only).
    pub fn cache_file(&self) -> Option<PathBuf> {
        self.cache.lock().path.clone()
    }

    /// The canonical path of the shared directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// (Re)reads the directory listing, hashing new and changed files, and replaces the
    /// shared list with the result. Persists the hash cache when it changed.
    pub fn scan(&self) -> Result<ScanReport> {
        self.scan_inner(None)
    }

    /// Like [`Share::scan`], but a file modified less than `settle` ago is left as it
    /// was (see [`ScanReport::unsettled`]): for rescans driven by file events, which
    /// come while a file is still being written. A file that keeps changing for longer
    /// than [`MAX_UNSETTLED`] (a growing log) is taken as it is.
    pub fn scan_settled(&self, settle: std::time::Duration) -> Result<ScanReport> {
        self.scan_inner(Some(settle))
    }

    fn scan_inner(&self, settle: Option<std::time::Duration>) -> Result<ScanReport> {
        let _scanning = self.scanning.lock();
        let listing = fs::read_dir(&self.dir).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotADirectory(self.dir.clone()),
            _ => Error::Io(e),
        })?;
        // Known hashes: what this process saw last plus what the cache file held.
        let mut known: BTreeMap<String, CacheLine> = self.persisted.lock().clone();
        for (name, e) in self.files.read().iter() {
            known.insert(name.clone(), cache_line(&e.file));
        }

        let mut report = ScanReport::default();
        let mut found: BTreeSet<String> = BTreeSet::new();
        for item in listing {
            let item = match item {
                Ok(item) => item,
                Err(e) => {
                    log::warn!("reading {}: {e}", self.dir.display());
                    continue;
                }
            };
            let name = match item.file_name().into_string() {
                Ok(name) => name,
                Err(raw) if raw.as_bytes().first() == Some(&b'.') => continue,
                Err(raw) => {
                    report.skipped.push((
                        raw.to_string_lossy().into_owned(),
                        "name is not valid UTF-8: the registry protocol cannot carry it".into(),
                    ));
                    continue;
                }
            };
            if name.starts_with('.') {
                continue;
            }
            if let Err(why) = self.check_entry(&name) {
                report.skipped.push((name, why));
                continue;
            }
            found.insert(name);
        }

        // The registry refuses more files than this, so the rest (in name order, to be
        // stable across scans) are left out rather than failing the whole registration.
        if let Some(first_over) = found.iter().nth(MAX_FILES_PER_USER).cloned() {
            for name in found.split_off(&first_over) {
                report.skipped.push((
                    name,
                    format!("over the limit of {MAX_FILES_PER_USER} shared files"),
                ));
            }
        }

        let mut shared = BTreeMap::new();
        if let Some(settle) = settle {
            self.hold_unsettled(settle, &mut found, &mut shared, &mut report);
        }
        for (name, outcome) in self.hash_all(found.into_iter().collect(), &known) {
            match outcome {
                Ok((entry, read)) => {
                    report.hashed += usize::from(read);
                    shared.insert(name, entry);
                }
                Err(why) => report.skipped.push((name, why)),
            }
        }
        report.files = shared.len();
        report.skipped.sort();
        {
            let mut before = self.skipped.lock();
            let now: BTreeSet<(String, String)> = report.skipped.iter().cloned().collect();
            report.newly_skipped = now.difference(&before).cloned().collect();
            *before = now;
        }
        {
            let mut files = self.files.write();
            for (name, e) in &shared {
                match files.get(name) {
                    None => report.added.push(name.clone()),
                    Some(old) if old.file != e.file => report.changed.push(name.clone()),
                    Some(_) => {}
                }
            }
            report.removed = files
                .keys()
                .filter(|n| !shared.contains_key(*n))
                .cloned()
                .collect();
            *files = shared;
        }
        self.persist();
        Ok(report)
    }

    /// Takes the files modified less than `settle` ago out of `found`, keeping their
    /// previous entry (if any) in `shared` and their names in `report.unsettled`.
    fn hold_unsettled(
        &self,
        settle: std::time::Duration,
        found: &mut BTreeSet<String>,
        shared: &mut BTreeMap<String, Entry>,
        report: &mut ScanReport,
    ) {
        let (now, clock) = (SystemTime::now(), std::time::Instant::now());
        let previous = self.files.read();
        let mut young = self.young.lock();
        let mut still = std::collections::HashMap::new();
        found.retain(|name| {
            let modified = fs::metadata(self.dir.join(name)).and_then(|m| m.modified());
            let fresh = modified.is_ok_and(|m| match now.duration_since(m) {
                Ok(age) => age < settle,
                // Slightly in the future: just written (coarse clocks). Far in the
                // future: a skewed clock, which waiting would not fix.
                Err(e) => e.duration() < std::time::Duration::from_secs(1),
            });
            let since = young.get(name).copied().unwrap_or(clock);
            if !fresh || clock.duration_since(since) >= MAX_UNSETTLED {
                return true;
            }
            still.insert(name.clone(), since);
            report.unsettled.push(name.clone());
            if let Some(e) = previous.get(name) {
                shared.insert(name.clone(), e.clone());
            }
            false
        });
        *young = still;
    }

    /// Stat (and, where the cache has no hash for it, hash) every file, spread over one
    /// scoped thread per core: hashing is CPU-bound, so a share of many files is read
    /// that many times faster. Files are taken from a shared counter, so one big file
    /// does not hold back the rest.
    #[allow(clippy::type_complexity)]
    fn hash_all(
        &self,
        names: Vec<String>,
        known: &BTreeMap<String, CacheLine>,
    ) -> Vec<(String, std::result::Result<(Entry, bool), String>)> {
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(names.len())
            .max(1);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = |out: &mut Vec<_>| loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(name) = names.get(i) else {
                return;
            };
            out.push((name.clone(), self.stat_and_hash(name, known.get(name))));
        };
        let mut results = Vec::with_capacity(names.len());
        std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut out = Vec::new();
                        work(&mut out);
                        out
                    })
                })
                .collect();
            work(&mut results);
            for h in helpers {
                // A panicking hasher is a bug; its files are simply not shared.
                results.extend(h.join().unwrap_or_default());
            }
        });
        results
    }

    /// Names of the shared files, sorted.
    pub fn names(&self) -> Vec<String> {
        self.files.read().keys().cloned().collect()
    }

    /// The shared file called `name`, as of the last scan.
    pub fn get(&self, name: &str) -> Option<SharedFile> {
        self.files.read().get(name).map(|e| e.file.clone())
    }

    /// Opens the shared file `name` for serving, with its current size and hash.
    ///
    /// This is the security boundary for serving: only names in the scanned list are
    /// opened, and the path is re-checked at open time (no symlink swapped in, still a
    /// regular file inside the shared directory). If the file changed since the scan it
    /// is re-hashed first, so the returned hash always describes the returned content.
    /// Anything refused is [`Error::FileNotFound`] (with an empty `user`), so a
    /// requester learns nothing about what lies outside the share.
    pub fn open_file(&self, name: &str) -> Result<(File, SharedFile)> {
        let not_found = || Error::FileNotFound {
            user: String::new(),
            file: name.to_string(),
        };
        let entry = self.files.read().get(name).cloned().ok_or_else(not_found)?;
        let path = self.dir.join(name);
        let canon = fs::canonicalize(&path).map_err(|_| not_found())?;
        if !canon.starts_with(&self.dir) || canon == self.dir {
            return Err(not_found());
        }
        // A plain file is opened by its own name with O_NOFOLLOW, so a symlink swapped in
        // since the scan fails the open. A shared symlink is opened by its resolved path,
        // already checked to be inside the share. O_NONBLOCK keeps a FIFO swapped in
        // from blocking the open; it has no effect on regular files.
        let open_path = if entry.link { &canon } else { &path };
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(open_path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => not_found(),
                _ if e.raw_os_error() == Some(libc::ELOOP) => not_found(),
                _ => Error::Io(e),
            })?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(not_found());
        }
        let mtime = meta.modified()?;
        if meta.len() == entry.file.size && mtime == entry.file.mtime {
            return Ok((file, entry.file));
        }

        let (size, mtime, hash) = hash_open_file(&mut file, meta).map_err(|e| match e {
            HashError::Io(e) => Error::Io(e),
            HashError::Unstable => Error::Io(io::Error::other(format!(
                "{name} keeps changing while being read"
            ))),
        })?;
        file.seek(SeekFrom::Start(0))?;
        let fresh = SharedFile {
            name: name.to_string(),
            size,
            mtime,
            hash,
        };
        {
            let mut files = self.files.write();
            // A concurrent scan may have dropped the name meanwhile; don't resurrect it.
            if let Some(e) = files.get_mut(name) {
                e.file = fresh.clone();
            }
        }
        self.persist();
        Ok((file, fresh))
    }

    /// Why `name` cannot be shared, if it cannot (checks the name and the file type).
    fn check_entry(&self, name: &str) -> std::result::Result<(), String> {
        if let Some(why) = filename_problem(name) {
            return Err(why);
        }
        let path = self.dir.join(name);
        let meta = fs::symlink_metadata(&path).map_err(|e| format!("cannot be read: {e}"))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            return Err(
                "is a directory: only files directly in the shared directory are shared".into(),
            );
        }
        if ft.is_symlink() {
            let target = fs::canonicalize(&path)
                .map_err(|e| format!("is a symlink that cannot be resolved: {e}"))?;
            if !target.starts_with(&self.dir) {
                return Err("is a symlink leading outside the shared directory".into());
            }
            let tmeta =
                fs::metadata(&target).map_err(|e| format!("symlink target cannot be read: {e}"))?;
            if !tmeta.is_file() {
                return Err("is a symlink to something other than a regular file".into());
            }
            return Ok(());
        }
        if !ft.is_file() {
            return Err("is not a regular file".into());
        }
        Ok(())
    }

    /// Stats `name` and gets its hash, from `known` when size and mtime still match.
    /// Returns the entry and whether the content had to be read.
    fn stat_and_hash(
        &self,
        name: &str,
        known: Option<&CacheLine>,
    ) -> std::result::Result<(Entry, bool), String> {
        let path = self.dir.join(name);
        let link = fs::symlink_metadata(&path)
            .map(|m| m.file_type().is_symlink())
            .map_err(|e| format!("cannot be read: {e}"))?;
        // Symlinks were checked by check_entry to resolve inside the share.
        let meta = fs::metadata(&path).map_err(|e| format!("cannot be read: {e}"))?;
        if !meta.is_file() {
            return Err("is not a regular file".into());
        }
        let mtime = meta
            .modified()
            .map_err(|e| format!("has no modification time: {e}"))?;
        if let Some(k) = known {
            if k.size == meta.len() && k.mtime == mtime_nanos(mtime) {
                let file = SharedFile {
                    name: name.to_string(),
                    size: k.size,
                    mtime,
                    hash: k.hash,
                };
                return Ok((Entry { file, link }, false));
            }
        }
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(if link { 0 } else { libc::O_NOFOLLOW } | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| format!("cannot be read: {e}"))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot be read: {e}"))?;
        if !meta.is_file() {
            return Err("is not a regular file".into());
        }
        let (size, mtime, hash) = hash_open_file(&mut file, meta).map_err(|e| match e {
            HashError::Io(e) => format!("cannot be read: {e}"),
            HashError::Unstable => "keeps changing while being read".into(),
        })?;
        let file = SharedFile {
            name: name.to_string(),
            size,
            mtime,
            hash,
        };
        Ok((Entry { file, link }, true))
    }

    /// Writes the cache file if the shared hashes differ from what it holds. Failures
    /// are only logged: the cache saves time, it is never needed for correctness.
    fn persist(&self) {
        let current: BTreeMap<String, CacheLine> = self
            .files
            .read()
            .iter()
            .map(|(n, e)| (n.clone(), cache_line(&e.file)))
            .collect();
        let mut persisted = self.persisted.lock();
        let mut cache = self.cache.lock();
        if *persisted == current && !cache.must_write {
            return;
        }
        let Some(path) = cache.path.clone() else {
            *persisted = current;
            return;
        };
        match write_cache(&path, &self.dir, &current) {
            Ok(()) => {
                *persisted = current;
                cache.must_write = false;
                if let Some(legacy) = cache.legacy.take() {
                    // The hashes now live in the cache directory; the old file would
                    // only be a stale copy in the user's folder.
                    if let Err(e) = fs::remove_file(&legacy) {
                        log::warn!("cannot remove the old {}: {e}", legacy.display());
                    }
                }
            }
            Err(e) => {
                // The cache only saves time: carry on with hashes in memory.
                if !cache.warned {
                    cache.warned = true;
                    log::warn!(
                        "cannot write the hash cache {}: {e}; hashes are kept in memory only",
                        path.display()
                    );
                }
                *persisted = current;
            }
        }
    }
}

/// BLAKE3 hash of the whole content of the file at `path` (symlinks followed).
pub fn hash_file(path: &Path) -> io::Result<blake3::Hash> {
    hash_reader(File::open(path)?)
}

/// BLAKE3 hash of everything `r` yields until end of file.
pub fn hash_reader(mut r: impl Read) -> io::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; HASH_BUF];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize()),
            Ok(n) => {
                hasher.update(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Why `name` cannot be shared under the registry's filename rules, in words for the
/// user, or `None` if it can.
fn filename_problem(name: &str) -> Option<String> {
    if check_filename(name).is_ok() {
        return None;
    }
    let why = if name.len() > MAX_FILENAME_LEN {
        format!("longer than {MAX_FILENAME_LEN} bytes: the registry protocol cannot carry it")
    } else if name.contains(',') {
        "contains a comma: the registry protocol cannot carry it".into()
    } else if name.contains(['\n', '\r']) {
        "contains a line break: the registry protocol cannot carry it".into()
    } else if name.chars().any(char::is_control) {
        "contains a control character: the registry protocol cannot carry it".into()
    } else if name.contains('\\') {
        "contains a backslash: peers on other systems would read it as a path".into()
    } else {
        "is not a valid shared file name".into()
    };
    Some(why)
}

enum HashError {
    Io(io::Error),
    /// Size or mtime changed on every attempt.
    Unstable,
}

/// Hashes an open file from its start, re-reading it if it changed while being read, so
/// the returned size and mtime are the ones the hash describes.
fn hash_open_file(
    file: &mut File,
    mut before: Metadata,
) -> std::result::Result<(u64, SystemTime, blake3::Hash), HashError> {
    for _ in 0..HASH_ATTEMPTS {
        file.seek(SeekFrom::Start(0)).map_err(HashError::Io)?;
        let hash = hash_reader(&mut *file).map_err(HashError::Io)?;
        let after = file.metadata().map_err(HashError::Io)?;
        let (m0, m1) = (
            before.modified().map_err(HashError::Io)?,
            after.modified().map_err(HashError::Io)?,
        );
        if before.len() == after.len() && m0 == m1 {
            return Ok((after.len(), m1, hash));
        }
        before = after;
    }
    Err(HashError::Unstable)
}

fn cache_line(f: &SharedFile) -> CacheLine {
    CacheLine {
        size: f.size,
        mtime: mtime_nanos(f.mtime),
        hash: f.hash,
    }
}

/// Nanoseconds since the epoch, signed so that pre-1970 times stay distinct.
fn mtime_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// The default directory for hash caches: `$XDG_CACHE_HOME/p2pchat` when that is an
/// absolute path, else `$HOME/.cache/p2pchat`; `None` when neither is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    cache_dir_from(xdg, home)
}

/// [`default_cache_dir`] from given values of `XDG_CACHE_HOME` and `HOME` (the XDG
/// spec says a relative path there is to be ignored).
fn cache_dir_from(xdg: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    match (xdg, home) {
        (Some(x), _) if x.is_absolute() => Some(x.join("p2pchat")),
        (_, Some(h)) if h.is_absolute() => Some(h.join(".cache").join("p2pchat")),
        _ => None,
    }
}

/// Where the hash cache of the shared directory `dir` is kept by default (`dir` is
/// canonicalized first; `None` when there is no cache directory or `dir` is missing).
pub fn cache_file_for(dir: &Path) -> Option<PathBuf> {
    let canon = fs::canonicalize(dir).ok()?;
    Some(default_cache_dir()?.join(cache_file_name(&canon)))
}

fn cache_file_name(canon: &Path) -> String {
    let hex = blake3::hash(canon.as_os_str().as_bytes()).to_hex();
    format!("hashes-{}", &hex[..32])
}

fn hex_path(p: &Path) -> String {
    p.as_os_str()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unhex_path(hex: &str) -> Option<PathBuf> {
    if hex.len() % 2 != 0 || hex.len() > 2 * 4096 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    Some(PathBuf::from(std::ffi::OsString::from_vec(bytes?)))
}

/// Removes cache files next to `ours` whose shared directory no longer exists: at once
/// when that directory was in the system's temporary directory (it is not coming
/// back), otherwise once nobody wrote the cache for [`STALE_CACHE_AGE`] (a folder on a
/// drive that is only unmounted keeps its hashes). At most
/// [`STALE_CHECKS_PER_OPEN`] files are looked at per open, from a varying start, so the
/// cache directory does not grow without bound and opening stays cheap. Failures are
/// ignored.
fn prune_stale_caches(ours: &Path) {
    let Some(dir) = ours.parent() else {
        return;
    };
    let Ok(listing) = fs::read_dir(dir) else {
        return;
    };
    let caches: Vec<PathBuf> = listing
        .flatten()
        .take(100_000)
        .filter(|e| e.file_name().as_bytes().starts_with(b"hashes-"))
        .map(|e| e.path())
        .filter(|p| p != ours)
        .collect();
    if caches.is_empty() {
        return;
    }
    let now = SystemTime::now();
    let start = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize)
        % caches.len();
    let temp = std::env::temp_dir();
    let temp_canon = fs::canonicalize(&temp).unwrap_or_else(|_| temp.clone());
    let checks = caches.len().min(STALE_CHECKS_PER_OPEN);
    for path in caches.iter().cycle().skip(start).take(checks) {
        let Ok(meta) = fs::symlink_metadata(path) else {
            continue;
        };
        // Only files in our own format (the header names the share) are ours to remove.
        let Some(share) = meta.is_file().then(|| read_header(path)).flatten() else {
            continue;
        };
        if fs::symlink_metadata(&share).is_ok() {
            continue;
        }
        let temporary = share.starts_with(&temp) || share.starts_with(&temp_canon);
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > STALE_CACHE_AGE);
        if temporary || old {
            let _ = fs::remove_file(path);
        }
    }
}

/// The shared directory named in a cache file's header line.
fn read_header(path: &Path) -> Option<PathBuf> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let mut first = String::new();
    io::BufRead::read_line(&mut io::BufReader::new(file.take(9000)), &mut first).ok()?;
    let mut parts = first.trim_end().splitn(3, ' ');
    if parts.next()? != CACHE_MAGIC || parts.next()? != "1" {
        return None;
    }
    unhex_path(parts.next()?)
}

/// Reads a cache file; anything wrong with it (missing, unreadable, too big, one bad
/// line, a header for another directory) means no cache, since the worst outcome is
/// re-hashing. `share` is the directory the header must name (`None`: the legacy
/// format, which has no header).
fn load_cache(path: &Path, share: Option<&Path>) -> Option<BTreeMap<String, CacheLine>> {
    let read = || -> Option<BTreeMap<String, CacheLine>> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.len() > MAX_CACHE_FILE {
            return None;
        }
        let mut text = String::new();
        file.take(MAX_CACHE_FILE).read_to_string(&mut text).ok()?;
        let mut lines = text.lines();
        if let Some(share) = share {
            let mut header = lines.next()?.splitn(3, ' ');
            if header.next()? != CACHE_MAGIC || header.next()? != "1" {
                return None;
            }
            if unhex_path(header.next()?)? != share {
                return None;
            }
        }
        let mut map = BTreeMap::new();
        for line in lines {
            let mut parts = line.splitn(4, ' ');
            let hash = blake3::Hash::from_hex(parts.next()?).ok()?;
            let size = parts.next()?.parse().ok()?;
            let mtime = parts.next()?.parse().ok()?;
            let name = parts.next()?;
            if check_filename(name).is_err() {
                return None;
            }
            map.insert(name.to_string(), CacheLine { size, mtime, hash });
        }
        Some(map)
    };
    read()
}

/// Writes the cache file `path` for the shared directory `share` atomically: a temporary
/// file (per process, so two processes sharing a directory don't interleave) renamed
/// over the old one. Creates the cache directory (mode 0700) if needed.
fn write_cache(path: &Path, share: &Path, map: &BTreeMap<String, CacheLine>) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("cache path has no directory"))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut text = format!("{CACHE_MAGIC} 1 {}\n", hex_path(share));
    for (name, l) in map {
        text.push_str(&format!(
            "{} {} {} {name}\n",
            l.hash.to_hex(),
            l.size,
            l.mtime
        ));
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        // Without this a crash could leave the renamed file empty or torn; a torn line
        // could pair a name with the wrong hash.
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::fs::symlink;

    /// Opens `dir` with its hash cache in `dir/.cache` (hidden, so never shared), not in
    /// the user's cache directory.
    fn open(dir: &Path) -> Share {
        Share::open_with_cache_dir(dir, Some(dir.join(".cache"))).unwrap()
    }

    fn share_with(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Share) {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            fs::write(dir.path().join(name), content).unwrap();
        }
        let share = open(dir.path());
        (dir, share)
    }

    fn skipped_reason<'a>(r: &'a ScanReport, name: &str) -> Option<&'a str> {
        r.skipped
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, why)| why.as_str())
    }

    fn assert_not_found(share: &Share, name: &str) {
        match share.open_file(name) {
            Err(Error::FileNotFound { file, .. }) => assert_eq!(file, name),
            other => panic!("{name:?}: expected FileNotFound, got {other:?}"),
        }
    }

    #[test]
    fn open_refuses_missing_or_non_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(Share::open(&missing), Err(Error::NotADirectory(p)) if p == missing));
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(Share::open(&file), Err(Error::NotADirectory(_))));
    }

    #[test]
    fn open_does_not_scan() {
        let (_d, share) = share_with(&[("a.txt", b"a")]);
        assert!(share.names().is_empty());
        assert_eq!(share.dir(), fs::canonicalize(_d.path()).unwrap());
    }

    #[test]
    fn scan_lists_regular_files_with_hashes() {
        let (_d, share) = share_with(&[("b.txt", b"bee"), ("a file.txt", b"a"), ("empty", b"")]);
        let r = share.scan().unwrap();
        assert_eq!(r.files, 3);
        assert_eq!(r.hashed, 3);
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        assert_eq!(share.names(), ["a file.txt", "b.txt", "empty"]);
        let b = share.get("b.txt").unwrap();
        assert_eq!(b.name, "b.txt");
        assert_eq!(b.size, 3);
        assert_eq!(b.hash, blake3::hash(b"bee"));
        assert_eq!(share.get("empty").unwrap().hash, blake3::hash(b""));
        assert!(share.get("nope").is_none());
    }

    #[test]
    fn scan_skips_hidden_dirs_and_bad_names() {
        let (d, share) = share_with(&[
            ("ok.txt", b"ok"),
            (".hidden", b"h"),
            (".x.p2pchat-part", b"p"),
            ("a,b", b"c"),
            ("line\nbreak", b"n"),
            ("tab\there", b"t"),
        ]);
        fs::create_dir(d.path().join("sub")).unwrap();
        fs::write(d.path().join("sub/inner.txt"), b"i").unwrap();
        fs::write(d.path().join(OsStr::from_bytes(b"bad\xffutf8")), b"u").unwrap();
        let long = "l".repeat(MAX_FILENAME_LEN); // fits the FS and the protocol
        fs::write(d.path().join(&long), b"l").unwrap();

        let r = share.scan().unwrap();
        assert_eq!(share.names(), [long.as_str(), "ok.txt"]);
        assert_eq!(r.files, 2);
        assert!(skipped_reason(&r, "a,b").unwrap().contains("comma"));
        assert!(skipped_reason(&r, "line\nbreak")
            .unwrap()
            .contains("line break"));
        assert!(skipped_reason(&r, "tab\there").unwrap().contains("control"));
        assert!(skipped_reason(&r, "sub").unwrap().contains("directory"));
        assert!(skipped_reason(&r, "bad\u{fffd}utf8")
            .unwrap()
            .contains("UTF-8"));
        // Hidden names are left out silently.
        assert!(skipped_reason(&r, ".hidden").is_none());
        assert!(!share.names().iter().any(|n| n.starts_with('.')));
        for name in ["a,b", "sub", ".hidden", "sub/inner.txt", "inner.txt"] {
            assert_not_found(&share, name);
        }
    }

    #[test]
    fn symlinks_inside_are_shared_outside_are_not() {
        let (d, share) = share_with(&[("real.txt", b"real")]);
        let other = tempfile::tempdir().unwrap();
        fs::write(other.path().join("secret"), b"secret").unwrap();
        symlink("real.txt", d.path().join("inside")).unwrap();
        symlink(other.path().join("secret"), d.path().join("outside")).unwrap();
        symlink("/etc/passwd", d.path().join("passwd")).unwrap();
        symlink("../", d.path().join("parent")).unwrap();
        symlink("nowhere", d.path().join("dangling")).unwrap();
        fs::create_dir(d.path().join("dir")).unwrap();
        symlink("dir", d.path().join("dirlink")).unwrap();

        let r = share.scan().unwrap();
        assert_eq!(share.names(), ["inside", "real.txt"]);
        assert!(skipped_reason(&r, "outside").unwrap().contains("outside"));
        assert!(skipped_reason(&r, "passwd").unwrap().contains("outside"));
        assert!(skipped_reason(&r, "parent").is_some());
        assert!(skipped_reason(&r, "dangling").is_some());
        assert!(skipped_reason(&r, "dirlink")
            .unwrap()
            .contains("regular file"));
        for name in ["outside", "passwd", "parent", "dangling", "dirlink"] {
            assert_not_found(&share, name);
        }

        let (mut f, sf) = share.open_file("inside").unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "real");
        assert_eq!(sf.hash, blake3::hash(b"real"));
    }

    #[test]
    fn symlink_retargeted_outside_after_scan_cannot_be_opened() {
        let (d, share) = share_with(&[("real.txt", b"real")]);
        let other = tempfile::tempdir().unwrap();
        fs::write(other.path().join("secret"), b"secret").unwrap();
        symlink("real.txt", d.path().join("link")).unwrap();
        share.scan().unwrap();
        fs::remove_file(d.path().join("link")).unwrap();
        symlink(other.path().join("secret"), d.path().join("link")).unwrap();
        assert_not_found(&share, "link");
    }

    #[test]
    fn file_swapped_for_symlink_after_scan_cannot_be_opened() {
        let (d, share) = share_with(&[("f.txt", b"real")]);
        share.scan().unwrap();
        fs::remove_file(d.path().join("f.txt")).unwrap();
        symlink("/etc/passwd", d.path().join("f.txt")).unwrap();
        assert_not_found(&share, "f.txt");
    }

    #[test]
    fn open_file_refuses_traversal_and_unknown_names() {
        let (d, share) = share_with(&[("a", b"a"), ("b", b"b")]);
        fs::create_dir(d.path().join("x")).unwrap();
        share.scan().unwrap();
        for name in [
            "..",
            ".",
            "../x",
            "/etc/passwd",
            "a/../b",
            "%2e%2e",
            "%2e%2e/etc/passwd",
            "x\0y",
            "a\0",
            "",
            "x",
            "not-there",
            CACHE_FILE,
        ] {
            assert_not_found(&share, name);
        }
        let (mut f, sf) = share.open_file("a").unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!((s.as_str(), sf.size), ("a", 1));
    }

    #[test]
    fn removed_file_is_not_found() {
        let (d, share) = share_with(&[("a", b"a")]);
        share.scan().unwrap();
        fs::remove_file(d.path().join("a")).unwrap();
        assert_not_found(&share, "a");
    }

    #[test]
    fn rescan_of_unchanged_share_reads_nothing_even_after_restart() {
        let (d, share) = share_with(&[("a", b"aaa"), ("b", b"bbbb")]);
        assert_eq!(share.scan().unwrap().hashed, 2);
        assert!(share.cache_file().unwrap().exists());
        assert!(!d.path().join(CACHE_FILE).exists());
        let r = share.scan().unwrap();
        assert_eq!((r.files, r.hashed), (2, 0));

        let again = open(d.path());
        let r = again.scan().unwrap();
        assert_eq!((r.files, r.hashed), (2, 0));
        assert_eq!(again.get("b").unwrap().hash, blake3::hash(b"bbbb"));
    }

    #[test]
    fn names_with_spaces_survive_the_cache() {
        let (d, share) = share_with(&[(" lead and trail ", b"x"), ("a  b", b"y")]);
        share.scan().unwrap();
        let again = open(d.path());
        let r = again.scan().unwrap();
        assert_eq!((r.files, r.hashed), (2, 0));
        assert_eq!(
            again.get(" lead and trail ").unwrap().hash,
            blake3::hash(b"x")
        );
    }

    #[test]
    fn corrupt_cache_is_ignored() {
        let (d, share) = share_with(&[("a", b"aaa")]);
        share.scan().unwrap();
        fs::write(
            share.cache_file().unwrap(),
            b"\xff\xfe garbage\nnot a cache line\n",
        )
        .unwrap();
        let again = open(d.path());
        let r = again.scan().unwrap();
        assert_eq!((r.files, r.hashed), (1, 1));
        // And the cache was rewritten.
        let r = open(d.path()).scan().unwrap();
        assert_eq!(r.hashed, 0);
    }

    #[test]
    fn wrong_hash_line_for_other_size_is_not_trusted() {
        let (d, share) = share_with(&[("a", b"aaa")]);
        share.scan().unwrap();
        let line = format!(
            "{CACHE_MAGIC} 1 {}\n{} 99 0 a\n",
            hex_path(share.dir()),
            blake3::hash(b"zzz").to_hex()
        );
        fs::write(share.cache_file().unwrap(), line).unwrap();
        let again = open(d.path());
        assert_eq!(again.scan().unwrap().hashed, 1);
        assert_eq!(again.get("a").unwrap().hash, blake3::hash(b"aaa"));
    }

    #[test]
    fn modified_file_is_rehashed_on_scan() {
        let (d, share) = share_with(&[("a", b"abc"), ("b", b"b")]);
        share.scan().unwrap();
        fs::write(d.path().join("a"), b"abcdef").unwrap();
        let r = share.scan().unwrap();
        assert_eq!((r.files, r.hashed), (2, 1));
        let a = share.get("a").unwrap();
        assert_eq!((a.size, a.hash), (6, blake3::hash(b"abcdef")));
        // The cache file was updated too.
        assert_eq!(open(d.path()).scan().unwrap().hashed, 0);
    }

    #[test]
    fn open_file_rehashes_a_file_changed_since_the_scan() {
        let (d, share) = share_with(&[("a", b"abc")]);
        share.scan().unwrap();
        fs::write(d.path().join("a"), b"changed content").unwrap();
        let (mut f, sf) = share.open_file("a").unwrap();
        let mut content = Vec::new();
        f.read_to_end(&mut content).unwrap();
        assert_eq!(content, b"changed content");
        assert_eq!(sf.size, content.len() as u64);
        assert_eq!(sf.hash, blake3::hash(&content));
        assert_eq!(share.get("a").unwrap(), sf);
        assert_eq!(open(d.path()).scan().unwrap().hashed, 0);
    }

    #[test]
    fn deleted_and_new_files_are_picked_up() {
        let (d, share) = share_with(&[("a", b"a"), ("b", b"b")]);
        share.scan().unwrap();
        fs::remove_file(d.path().join("a")).unwrap();
        fs::write(d.path().join("c"), b"c").unwrap();
        let r = share.scan().unwrap();
        assert_eq!((r.files, r.hashed), (2, 1));
        assert_eq!(share.names(), ["b", "c"]);
        assert_not_found(&share, "a");
    }

    #[test]
    fn hashes_match_blake3_for_large_content() {
        let content: Vec<u8> = (0..3 * HASH_BUF + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let (d, share) = share_with(&[("big", &content)]);
        share.scan().unwrap();
        let want = blake3::hash(&content);
        assert_eq!(share.get("big").unwrap().hash, want);
        assert_eq!(hash_file(&d.path().join("big")).unwrap(), want);
        assert_eq!(hash_reader(&content[..]).unwrap(), want);
    }

    #[test]
    fn fifo_is_skipped() {
        let (d, share) = share_with(&[]);
        let path = std::ffi::CString::new(d.path().join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: path is a valid NUL-terminated string.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o644) }, 0);
        let r = share.scan().unwrap();
        assert_eq!(r.files, 0);
        assert!(skipped_reason(&r, "fifo").unwrap().contains("regular"));
    }

    #[test]
    fn cache_dir_follows_xdg_then_home() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(cache_dir_from(p("/x/c"), p("/h")), p("/x/c/p2pchat"));
        // A relative XDG_CACHE_HOME is ignored, as the XDG spec says.
        assert_eq!(cache_dir_from(p("rel"), p("/h")), p("/h/.cache/p2pchat"));
        assert_eq!(cache_dir_from(None, p("/h")), p("/h/.cache/p2pchat"));
        assert_eq!(cache_dir_from(None, None), None);
        assert_eq!(cache_dir_from(None, p("")), None);
    }

    #[test]
    fn cache_is_one_file_per_share_outside_it() {
        let cache = tempfile::tempdir().unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for d in [&a, &b] {
            fs::write(d.path().join("f"), d.path().as_os_str().as_bytes()).unwrap();
        }
        let sa = Share::open_with_cache_dir(a.path(), Some(cache.path().into())).unwrap();
        let sb = Share::open_with_cache_dir(b.path(), Some(cache.path().into())).unwrap();
        sa.scan().unwrap();
        sb.scan().unwrap();
        let (fa, fb) = (sa.cache_file().unwrap(), sb.cache_file().unwrap());
        assert_ne!(fa, fb);
        assert!(fa.starts_with(cache.path()) && fa.exists() && fb.exists());
        assert_eq!(read_header(&fa).unwrap(), sa.dir());
        for d in [&a, &b] {
            let names: Vec<_> = fs::read_dir(d.path()).unwrap().flatten().collect();
            assert_eq!(names.len(), 1, "only the shared file is in the share");
        }
        // A's cache copied over B's name is refused: the header names another directory.
        fs::copy(&fa, &fb).unwrap();
        let again = Share::open_with_cache_dir(b.path(), Some(cache.path().into())).unwrap();
        assert_eq!(again.scan().unwrap().hashed, 1);
    }

    #[test]
    fn legacy_cache_in_the_share_is_migrated_and_removed() {
        let (d, share) = share_with(&[("a", b"aaa")]);
        share.scan().unwrap();
        let hash = share.get("a").unwrap();
        let line = format!(
            "{} {} {} a\n",
            hash.hash.to_hex(),
            hash.size,
            mtime_nanos(hash.mtime)
        );
        fs::write(d.path().join(CACHE_FILE), line).unwrap();
        // A fresh cache directory: only the legacy file knows the hash.
        let cache = tempfile::tempdir().unwrap();
        let again = Share::open_with_cache_dir(d.path(), Some(cache.path().into())).unwrap();
        let r = again.scan().unwrap();
        assert_eq!((r.files, r.hashed), (1, 0), "the legacy hashes were used");
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        assert!(
            !d.path().join(CACHE_FILE).exists(),
            "the legacy file was removed"
        );
        assert!(again.cache_file().unwrap().exists());
        assert_not_found(&again, CACHE_FILE);
    }

    #[test]
    fn unwritable_cache_dir_falls_back_to_memory() {
        let (d, _) = share_with(&[("a", b"aaa")]);
        let blocker = d.path().join(".not-a-dir");
        fs::write(&blocker, b"x").unwrap();
        let share = Share::open_with_cache_dir(d.path(), Some(blocker.join("p2pchat"))).unwrap();
        assert_eq!(share.scan().unwrap().files, 1);
        assert_eq!(share.scan().unwrap().hashed, 0, "hashes kept in memory");
        let none = Share::open_with_cache_dir(d.path(), None).unwrap();
        assert_eq!(none.scan().unwrap().files, 1);
        assert!(none.cache_file().is_none());
    }

    #[test]
    fn stale_cache_of_a_vanished_share_is_pruned() {
        let cache = tempfile::tempdir().unwrap();
        // A temporary share: its cache goes as soon as the share is gone.
        let gone = tempfile::tempdir().unwrap();
        fs::write(gone.path().join("f"), b"f").unwrap();
        let s = Share::open_with_cache_dir(gone.path(), Some(cache.path().into())).unwrap();
        s.scan().unwrap();
        let temporary = s.cache_file().unwrap();
        drop((s, gone));
        // A share elsewhere (a drive that may only be unmounted): kept until old.
        let elsewhere = cache.path().join("hashes-0123456789abcdef0123456789abcdef");
        let missing = Path::new("/nonexistent-p2pchat-test/music");
        fs::write(
            &elsewhere,
            format!("{CACHE_MAGIC} 1 {}\n", hex_path(missing)),
        )
        .unwrap();
        // Not in our format: never removed.
        let foreign = cache.path().join("hashes-foreign");
        fs::write(&foreign, b"something else\n").unwrap();

        let keep = tempfile::tempdir().unwrap();
        let open = || Share::open_with_cache_dir(keep.path(), Some(cache.path().into())).unwrap();
        open();
        assert!(!temporary.exists());
        assert!(elsewhere.exists());
        let old = SystemTime::now() - STALE_CACHE_AGE - std::time::Duration::from_secs(60);
        for f in [&elsewhere, &foreign] {
            File::options()
                .write(true)
                .open(f)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        open();
        assert!(!elsewhere.exists());
        assert!(foreign.exists());
    }

    #[test]
    fn settled_scan_holds_files_still_being_written() {
        let (d, share) = share_with(&[("old", b"old")]);
        share.scan().unwrap();
        let hour = std::time::Duration::from_secs(3600);
        fs::write(d.path().join("old"), b"old, being rewritten").unwrap();
        fs::write(d.path().join("new"), b"half of it").unwrap();
        let r = share.scan_settled(hour).unwrap();
        assert_eq!(r.unsettled, ["new", "old"]);
        assert!(!r.changed_anything(), "{r:?}");
        assert_eq!(share.names(), ["old"]);
        assert_eq!(share.get("old").unwrap().hash, blake3::hash(b"old"));
        // Settled (or a plain scan): taken as they are.
        let r = share.scan_settled(std::time::Duration::ZERO).unwrap();
        assert!(r.unsettled.is_empty());
        assert_eq!(
            (r.added, r.changed),
            (vec!["new".into()], vec!["old".into()])
        );
    }

    #[test]
    fn scan_reports_what_changed_and_new_skips_once() {
        let (d, share) = share_with(&[("a", b"a"), ("b", b"b"), ("x,y", b"c")]);
        let r = share.scan().unwrap();
        assert_eq!(r.added, ["a", "b"]);
        assert_eq!(r.newly_skipped.len(), 1);
        let r = share.scan().unwrap();
        assert!(!r.changed_anything() && r.newly_skipped.is_empty(), "{r:?}");
        assert_eq!(r.skipped.len(), 1);
        fs::write(d.path().join("b"), b"bigger").unwrap();
        fs::remove_file(d.path().join("a")).unwrap();
        fs::write(d.path().join("c"), b"c").unwrap();
        fs::create_dir(d.path().join("sub")).unwrap();
        let r = share.scan().unwrap();
        assert_eq!(
            (r.added, r.removed, r.changed),
            (
                vec!["c".to_string()],
                vec!["a".to_string()],
                vec!["b".to_string()]
            )
        );
        assert_eq!(r.newly_skipped.len(), 1);
        assert_eq!(r.newly_skipped[0].0, "sub");
    }
}
