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

/// A kernel cache in one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DiskCache { dir: dir.into() }
    }

    /// The cache the environment asks for ([`cache_dir`]), or `None` when it is off.
    pub fn from_env() -> Option<Self> {
        cache_dir().map(DiskCache::new)
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
        match fs::metadata(&path) {
            Ok(m) if !m.is_file() => return Lookup::Corrupt("not a regular file".to_string()),
            Ok(m) if m.len() > MAX_ENTRY_BYTES => {
                return Lookup::Corrupt(format!(
                    "{} bytes, more than an entry may hold ({MAX_ENTRY_BYTES})",
                    m.len()
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Corrupt(format!("unreadable: {e}")),
        }
        match fs::read(&path) {
            Ok(bytes) => match decode_entry(&bytes, key) {
                Ok(payload) => Lookup::Hit(payload.to_vec()),
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
    pub(crate) fn store_noted(&self, kernel: &str, key: u64, payload: &[u8]) {
        if let Err(e) = self.store(kernel, key, payload) {
            note_problem(self.write_problem(&self.entry_path(kernel, key), &e));
        }
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
