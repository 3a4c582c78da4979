//! The on-disk kernel cache: where it lives, the layout of an entry, reading with verification and
//! atomic writing. Pure functions over bytes and a directory, so all of it is tested without a GPU.
//!
//! Nothing here is trusted: an entry whose header, length, key or checksum does not match is
//! reported as [`Lookup::Corrupt`] and the caller recompiles and rewrites it. An unwritable cache
//! directory only costs the compile next time.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::cache_key::{stable_hash, CACHE_VERSION};

/// The first bytes of every entry.
pub const ENTRY_MAGIC: [u8; 8] = *b"PSGKCACH";

/// Bytes before the payload: magic, version (u32), key (u64), payload length (u64), checksum (u64).
pub const HEADER_LEN: usize = 8 + 4 + 8 + 8 + 8;

/// The cache directory from the environment, or `None` when the disk cache is off.
///
/// `PSG_CACHE` set to anything but `on`, `1`, `true` or `yes` (`off`, `0`, `disabled`, ...; an
/// empty value counts as unset) turns it off, so that a spelling psg does not know never leaves
/// it on; otherwise `PSG_CACHE_DIR` if set, else `$XDG_CACHE_HOME/psg`, else `$HOME/.cache/psg`;
/// `None` when none of these is set.
pub fn cache_dir() -> Option<PathBuf> {
    resolve_cache_dir(|name| std::env::var_os(name))
}

/// [`cache_dir`] over any environment (`lookup` returns a variable's value), for tests.
pub fn resolve_cache_dir(lookup: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |name: &str| lookup(name).filter(|v| !v.is_empty());
    if let Some(v) = set("PSG_CACHE") {
        let v = v.to_string_lossy().trim().to_ascii_lowercase();
        if !matches!(v.as_str(), "on" | "1" | "true" | "yes") {
            return None;
        }
    }
    if let Some(dir) = set("PSG_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    // The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    if let Some(xdg) = set("XDG_CACHE_HOME").map(PathBuf::from) {
        if xdg.is_absolute() {
            return Some(xdg.join("psg"));
        }
    }
    set("HOME").map(|home| PathBuf::from(home).join(".cache").join("psg"))
}

/// The disk cache's size limit where `PSG_CACHE_MAX_MB` is not set: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// The size limit the environment asks for: `PSG_CACHE_MAX_MB`, a whole number of MiB (at least
/// 1), or `unlimited` for none; [`DEFAULT_MAX_BYTES`] where it is unset or empty. `None` means no
/// limit.
pub fn cache_max_bytes() -> Result<Option<u64>, String> {
    resolve_cache_max_bytes(|name| std::env::var_os(name))
}

/// [`cache_max_bytes`] over any environment (`lookup` returns a variable's value), for tests.
pub fn resolve_cache_max_bytes(
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Result<Option<u64>, String> {
    let Some(raw) = lookup("PSG_CACHE_MAX_MB").filter(|v| !v.is_empty()) else {
        return Ok(Some(DEFAULT_MAX_BYTES));
    };
    let text = raw.to_string_lossy();
    let v = text.trim();
    if v.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    match v.parse::<u64>() {
        Ok(mib) if mib >= 1 => Ok(Some(mib.saturating_mul(1 << 20))),
        _ => Err(format!(
            "PSG_CACHE_MAX_MB={raw:?} is not a whole number of MiB (1 or more) nor `unlimited`; \
             the default limit of {} MiB is used",
            DEFAULT_MAX_BYTES >> 20
        )),
    }
}

/// Serialises one entry: header then payload.
pub fn encode_entry(key: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&ENTRY_MAGIC);
    out.extend_from_slice(&CACHE_VERSION.to_le_bytes());
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&stable_hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks an entry against `key` and returns its payload, or says what is wrong with it.
pub fn decode_entry(bytes: &[u8], key: u64) -> Result<&[u8], String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        ));
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    let u32_at = |i: usize| header[i..i + 4].try_into().map(u32::from_le_bytes);
    let u64_at = |i: usize| header[i..i + 8].try_into().map(u64::from_le_bytes);
    let bad = |_| "malformed header".to_string();
    if header[..8] != ENTRY_MAGIC {
        return Err("not a psg cache entry (bad magic)".into());
    }
    let version = u32_at(8).map_err(bad)?;
    if version != CACHE_VERSION {
        return Err(format!("entry version {version}, expected {CACHE_VERSION}"));
    }
    if u64_at(12).map_err(bad)? != key {
        return Err("entry was written for a different key".into());
    }
    let len = u64_at(20).map_err(bad)?;
    if len != payload.len() as u64 {
        return Err(format!(
            "payload is {} bytes, header says {len} (truncated or appended to)",
            payload.len()
        ));
    }
    if u64_at(28).map_err(bad)? != stable_hash(payload) {
        return Err("payload checksum does not match".into());
    }
    Ok(payload)
}

/// What a cache lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A verified payload.
    Hit(Vec<u8>),
    /// No entry.
    Miss,
    /// An entry that failed verification (the reason in words); recompile and rewrite it.
    Corrupt(String),
}

/// A kernel cache in one directory, with an optional limit on the bytes its entries take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskCache {
    dir: PathBuf,
    max_bytes: Option<u64>,
}

/// What [`DiskCache::trim`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrimReport {
    /// Entries removed, least recently used first.
    pub removed: u64,
    /// Their bytes.
    pub freed_bytes: u64,
    /// The bytes of the entries left.
    pub kept_bytes: u64,
    /// Temporary files of writers that died (older than an hour), removed.
    pub stale_temporaries: u64,
    /// The entry the trim could not remove, and why: it stopped there rather than remove newer
    /// entries in its place.
    pub stuck: Option<String>,
}

/// A temporary file this old is a writer's that died (a write takes milliseconds).
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(3600);

/// A hit refreshes its entry's time of last use (the file's modification time, which
/// [`DiskCache::trim`] orders by) only when that is older than this: one write of metadata an
/// hour per entry at most.
const REFRESH_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// A hit also refreshes a time of last use this far in the future or more (a clock set back, a
/// file copied from another host): such an entry would otherwise rank as the latest used for
/// good.
const FUTURE_SLACK: std::time::Duration = std::time::Duration::from_secs(60);

/// A process's stores between two checks of the cache's size (the first store checks).
const TRIM_EVERY: u64 = 32;

impl DiskCache {
    /// A cache in `dir` (created on first write), without a size limit.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DiskCache {
            dir: dir.into(),
            max_bytes: None,
        }
    }

    /// The same cache, limited to `max_bytes` of entries (`None`: no limit). Stores check the
    /// size now and then (a process's first store, then every 32nd) and, past the limit, remove
    /// the least recently used entries down to three quarters of it ([`DiskCache::trim`]).
    pub fn with_max_bytes(mut self, max_bytes: Option<u64>) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The size limit, if any.
    pub fn max_bytes(&self) -> Option<u64> {
        self.max_bytes
    }

    /// The cache the environment asks for ([`cache_dir`]) with its size limit
    /// ([`cache_max_bytes`]; a value psg cannot read is recorded in [`problems`], once, and the
    /// default used), or `None` when it is off.
    pub fn from_env() -> Option<Self> {
        let dir = cache_dir()?;
        let max = cache_max_bytes().unwrap_or_else(|why| {
            static NOTED: std::sync::Once = std::sync::Once::new();
            NOTED.call_once(|| note_problem(why));
            Some(DEFAULT_MAX_BYTES)
        });
        Some(DiskCache::new(dir).with_max_bytes(max))
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of the entry for `kernel` under `key`: `<kernel>-<key as 16 hex digits>.bin`.
    pub fn entry_path(&self, kernel: &str, key: u64) -> PathBuf {
        let name: String = kernel
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        self.dir.join(format!("{name}-{key:016x}.bin"))
    }

    /// Reads and verifies the entry for `kernel` under `key`. Only a regular file of at most
    /// [`MAX_ENTRY_BYTES`] is read: a FIFO would block the read, a link to `/dev/zero` fill
    /// memory.
    pub fn load(&self, kernel: &str, key: u64) -> Lookup {
        let path = self.entry_path(kernel, key);
        let modified = match fs::metadata(&path) {
            Ok(m) if !m.is_file() => return Lookup::Corrupt("not a regular file".to_string()),
            Ok(m) if m.len() > MAX_ENTRY_BYTES => {
                return Lookup::Corrupt(format!(
                    "{} bytes, more than an entry may hold ({MAX_ENTRY_BYTES})",
                    m.len()
                ))
            }
            Ok(m) => m.modified().ok(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Corrupt(format!("unreadable: {e}")),
        };
        match fs::read(&path) {
            Ok(bytes) => match decode_entry(&bytes, key) {
                Ok(payload) => {
                    refresh_if_old(&path, modified);
                    Lookup::Hit(payload.to_vec())
                }
                Err(why) => Lookup::Corrupt(why),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Lookup::Miss,
            Err(e) => Lookup::Corrupt(format!("unreadable: {e}")),
        }
    }

    /// [`DiskCache::load`], with a corrupt entry recorded in [`problems`]: the payload of a hit.
    pub(crate) fn load_noted(&self, kernel: &str, key: u64) -> Option<Vec<u8>> {
        match self.load(kernel, key) {
            Lookup::Hit(payload) => Some(payload),
            Lookup::Miss => None,
            Lookup::Corrupt(why) => {
                let path = self.entry_path(kernel, key);
                note_problem(format!("{}: {why}; compiled again", path.display()));
                None
            }
        }
    }

    /// [`DiskCache::store`], with a failed write recorded in [`problems`] (not an error: an
    /// unwritable cache costs a compile next time, nothing else).
    ///
    /// Past the size limit, now and then, the least recently used entries are removed (see
    /// [`DiskCache::with_max_bytes`]); a trim that fails is recorded too.
    pub(crate) fn store_noted(&self, kernel: &str, key: u64, payload: &[u8]) {
        static STORES: AtomicU64 = AtomicU64::new(0);
        let due = self.max_bytes.is_some()
            && STORES
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(TRIM_EVERY);
        self.store_noted_trimming(kernel, key, payload, due);
    }

    /// [`DiskCache::store_noted`], trimming (where there is a limit) if `due`. The entry just
    /// written is never removed.
    fn store_noted_trimming(&self, kernel: &str, key: u64, payload: &[u8], due: bool) {
        let path = self.entry_path(kernel, key);
        if let Err(e) = self.store(kernel, key, payload) {
            note_problem(self.write_problem(&path, &e));
            return;
        }
        let Some(max) = self.max_bytes.filter(|_| due) else {
            return;
        };
        match self.trim_keeping(max, Some(&path)) {
            Ok(TrimReport {
                stuck: Some(why), ..
            }) => note_problem(format!(
                "could not trim the cache folder {} to {max} bytes: {why}",
                self.dir.display()
            )),
            Ok(_) => {}
            Err(e) => note_problem(format!(
                "could not trim the cache folder {} to {max} bytes: {e}",
                self.dir.display()
            )),
        }
    }

    /// Removes the least recently used entries (by the time of their last write or hit) until
    /// those left take at most three quarters of `max_bytes`, if they take more than
    /// `max_bytes`; and temporary files left by writers that died (an hour old).
    ///
    /// Only psg's own files are touched, so that a cache folder shared with other files (a
    /// `PSG_CACHE_DIR` pointed at a models folder) loses none of them: regular files (not what
    /// a link points to) named as [`DiskCache::entry_path`] names entries
    /// (`<kernel>-<16 hex digits>.bin`) that start with [`ENTRY_MAGIC`], and temporary files
    /// named as [`DiskCache::store`] names them. An entry that cannot be removed stops the trim
    /// (see [`TrimReport::stuck`]): newer entries are not removed in its place. A time of last
    /// use in the future counts as now. A process loading an entry another removes finds it
    /// missing and compiles it: two processes can share and trim one folder. An error only where
    /// the folder cannot be read.
    pub fn trim(&self, max_bytes: u64) -> io::Result<TrimReport> {
        self.trim_keeping(max_bytes, None)
    }

    /// [`DiskCache::trim`], never removing `keep` (the entry a store just wrote).
    fn trim_keeping(&self, max_bytes: u64, keep: Option<&Path>) -> io::Result<TrimReport> {
        self.trim_with(max_bytes, keep, &|path| fs::remove_file(path))
    }

    /// [`DiskCache::trim_keeping`], removing entries with `remove` (a test's, that fails).
    fn trim_with(
        &self,
        max_bytes: u64,
        keep: Option<&Path>,
        remove: &dyn Fn(&Path) -> io::Result<()>,
    ) -> io::Result<TrimReport> {
        let mut report = TrimReport::default();
        let mut entries = Vec::new();
        let now = std::time::SystemTime::now();
        let dir = match fs::read_dir(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
            Err(e) => return Err(e),
        };
        for item in dir {
            let Ok(item) = item else { continue };
            // The entry itself, not what a link points to.
            let Ok(meta) = item.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let name = item.file_name();
            let name = name.to_string_lossy();
            let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            if is_temporary_name(&name) {
                // A writer's file dated well in the future (another host's clock) is not one
                // being written now either.
                let stale = match now.duration_since(modified) {
                    Ok(age) => age > STALE_TEMPORARY,
                    Err(ahead) => ahead.duration() >= FUTURE_SLACK,
                };
                if stale && fs::remove_file(item.path()).is_ok() {
                    report.stale_temporaries += 1;
                }
            } else if is_entry_name(&name) {
                entries.push((modified.min(now), meta.len(), item.path()));
            }
        }
        let sum = |entries: &[(std::time::SystemTime, u64, PathBuf)]| {
            entries.iter().fold(0u64, |t, e| t.saturating_add(e.1))
        };
        let mut total = sum(&entries);
        if total > max_bytes {
            // Over the limit: only files that start as psg's entries do count, and may go (each
            // opened here, not at every check).
            entries.retain(|e| starts_with_magic(&e.2));
            total = sum(&entries);
        }
        if total > max_bytes {
            entries.sort();
            let target = max_bytes / 4 * 3;
            for (_, len, path) in entries {
                if total <= target {
                    break;
                }
                if keep == Some(path.as_path()) {
                    continue;
                }
                match remove(&path) {
                    Ok(()) => {
                        report.removed += 1;
                        report.freed_bytes = report.freed_bytes.saturating_add(len);
                        total = total.saturating_sub(len);
                    }
                    // Another process's trim took it first.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        total = total.saturating_sub(len)
                    }
                    Err(e) => {
                        report.stuck = Some(format!("{}: {e}", path.display()));
                        break;
                    }
                }
            }
        }
        report.kept_bytes = total;
        Ok(report)
    }

    /// The problem a failed write of `path` records: where the cache folder itself is not a
    /// folder (a file, a dangling link, not creatable), it says so and how to choose another.
    fn write_problem(&self, path: &Path, e: &io::Error) -> String {
        let hint = if self.dir.is_dir() {
            String::new()
        } else {
            format!(
                "; the cache folder {} is not a folder psg can use: set PSG_CACHE_DIR to a \
                 writable folder, or PSG_CACHE=off",
                self.dir.display()
            )
        };
        format!("could not write {}: {e}{hint}", path.display())
    }

    /// Writes the entry atomically: to a temporary file in the same directory, then renamed over
    /// the entry, so a reader sees the old entry, the new one, or none, never half of one.
    ///
    /// The file is not synced to the disk before the rename. A crash can then leave an entry
    /// empty or torn, and [`DiskCache::load`] reports that as corrupt (length and checksum are
    /// checked), so the kernel is compiled again: the cost of a crash is one compile. A sync
    /// would add the disk's flush latency to every first compile to save that one.
    ///
    /// The temporary file is created exclusively (`create_new`), under a name of this process's
    /// own token: processes in other PID namespaces (containers sharing a cache volume) or on
    /// other hosts (a shared home) can have the same pid, and two writers of one file gave
    /// readers torn entries.
    pub fn store(&self, kernel: &str, key: u64, payload: &[u8]) -> io::Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        fs::create_dir_all(&self.dir)?;
        let path = self.entry_path(kernel, key);
        let mut tries = 0;
        let (tmp, mut f) = loop {
            tries += 1;
            let tmp = self.dir.join(format!(
                ".tmp-{:016x}-{}-{key:016x}",
                process_token(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(f) => break (tmp, f),
                // Another writer's name: take the next (a bounded number of times).
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 4096 => continue,
                Err(e) => return Err(e),
            }
        };
        let written = f
            .write_all(&encode_entry(key, payload))
            .and_then(|()| fs::rename(&tmp, &path));
        if written.is_err() {
            // Best effort: a leftover temporary file is harmless, but don't leave litter.
            let _ = fs::remove_file(&tmp);
        }
        written
    }
}

/// Sets the entry's modification time to now where it is older than [`REFRESH_AFTER`] or
/// [`FUTURE_SLACK`] or more in the future, so that [`DiskCache::trim`] keeps the entries in use.
/// Only a regular file's, not that of what a link points to (outside the cache, maybe). Best
/// effort: a cache on a read-only volume is read as before.
fn refresh_if_old(path: &Path, modified: Option<std::time::SystemTime>) {
    let now = std::time::SystemTime::now();
    let stale = modified.is_none_or(|m| match now.duration_since(m) {
        Ok(age) => age > REFRESH_AFTER,
        Err(ahead) => ahead.duration() >= FUTURE_SLACK,
    });
    if !stale {
        return;
    }
    let Ok(entry) = fs::symlink_metadata(path) else {
        return;
    };
    if entry.is_file() {
        if let Ok(f) = fs::OpenOptions::new().write(true).open(path) {
            // The file opened is the one checked (not a link put in its place since).
            if f.metadata().is_ok_and(|m| same_file(&m, &entry)) {
                let _ = f.set_modified(now);
            }
        }
    }
}

/// Whether two metadata are of one file (device and inode, where the platform has them).
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        a.dev() == b.dev() && a.ino() == b.ino()
    }
    #[cfg(not(unix))]
    {
        a.len() == b.len() && a.modified().ok() == b.modified().ok()
    }
}

/// Whether `name` is an entry's file name as [`DiskCache::entry_path`] makes it:
/// `<kernel>-<16 lowercase hex digits>.bin`, the kernel's part 1 to 64 characters of ASCII
/// letters, digits, `_` and `-`.
fn is_entry_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".bin") else {
        return false;
    };
    let Some((kernel, key)) = stem.rsplit_once('-') else {
        return false;
    };
    (1..=64).contains(&kernel.len())
        && kernel
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        && is_hex16(key)
}

/// Whether `name` is a temporary file's name as [`DiskCache::store`] makes it:
/// `.tmp-<16 hex digits>-<counter>-<16 hex digits>`.
fn is_temporary_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(".tmp-") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('-').collect();
    matches!(parts.as_slice(), [token, n, key]
        if is_hex16(token)
            && !n.is_empty()
            && n.bytes().all(|c| c.is_ascii_digit())
            && is_hex16(key))
}

/// Exactly 16 lowercase hex digits.
fn is_hex16(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether the file starts with [`ENTRY_MAGIC`].
fn starts_with_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; ENTRY_MAGIC.len()];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == ENTRY_MAGIC)
}

/// A number of this process's own for temporary file names: its pid, start time, and an address
/// of its heap, hashed (pids repeat across PID namespaces and hosts).
fn process_token() -> u64 {
    static TOKEN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TOKEN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let heap = Box::new(0u8);
        let text = format!(
            "{}-{nanos}-{:p}-{:?}",
            std::process::id(),
            &*heap,
            std::thread::current().id()
        );
        crate::cache_key::stable_hash(text.as_bytes())
    })
}

/// The largest entry [`DiskCache::load`] reads (a kernel's CUBIN is a few MB at most).
pub const MAX_ENTRY_BYTES: u64 = 256 << 20;

/// What went wrong with the disk cache in this process: entries that failed verification (or
/// that the driver refused) and were compiled again, and writes that failed. None of these is an
/// error (the kernel is compiled instead), but each costs a compile in every process, so a
/// cache that is slow to warm up can be diagnosed here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheProblems {
    /// How many there were.
    pub count: u64,
    /// The latest, in words, with the entry's path.
    pub last: Option<String>,
}

static PROBLEMS: Mutex<CacheProblems> = Mutex::new(CacheProblems {
    count: 0,
    last: None,
});

/// The disk cache's problems in this process so far (see [`CacheProblems`]).
pub fn problems() -> CacheProblems {
    PROBLEMS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Records one problem.
pub(crate) fn note_problem(what: String) {
    let mut p = PROBLEMS.lock().unwrap_or_else(|p| p.into_inner());
    p.count += 1;
    p.last = Some(what);
}

/// Where [`load_or_compile`] found a kernel image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageOrigin {
    /// A verified disk cache entry.
    Disk,
    /// Compiled now (no cache, a miss, or a corrupt entry, which was rewritten).
    Compiled,
}

/// The image for `key`: from `cache` when a verified entry is there, else from `compile`, whose
/// result is then written to `cache`. A corrupt entry is recompiled and overwritten; a failed write
/// is ignored (the next process compiles again), so only `compile`'s own errors come back.
pub fn load_or_compile(
    cache: Option<&DiskCache>,
    kernel: &str,
    key: u64,
    compile: impl FnOnce() -> crate::Result<Vec<u8>>,
) -> crate::Result<(Vec<u8>, ImageOrigin)> {
    if let Some(image) = cache.and_then(|c| c.load_noted(kernel, key)) {
        return Ok((image, ImageOrigin::Disk));
    }
    let image = compile()?;
    if let Some(cache) = cache {
        cache.store_noted(kernel, key, &image);
    }
    Ok((image, ImageOrigin::Compiled))
}

#[cfg(test)]
mod tests;
