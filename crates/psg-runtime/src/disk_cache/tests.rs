use super::*;
use std::cell::Cell;
use std::collections::HashMap;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "psg-runtime-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const KEY: u64 = 0x0123_4567_89ab_cdef;
const IMAGE: &[u8] = b"\x7fELF pretend cubin";

#[test]
fn entry_round_trips() {
    let e = encode_entry(KEY, IMAGE);
    assert_eq!(e.len(), HEADER_LEN + IMAGE.len());
    assert_eq!(decode_entry(&e, KEY), Ok(IMAGE));
}

#[test]
fn every_kind_of_damage_is_detected() {
    let good = encode_entry(KEY, IMAGE);
    assert!(decode_entry(&good, KEY ^ 1).is_err(), "other key");
    assert!(
        decode_entry(&good[..HEADER_LEN - 1], KEY).is_err(),
        "short header"
    );
    assert!(
        decode_entry(&good[..good.len() - 1], KEY).is_err(),
        "truncated"
    );
    let mut longer = good.clone();
    longer.push(0);
    assert!(decode_entry(&longer, KEY).is_err(), "appended");
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x40;
        assert!(decode_entry(&bad, KEY).is_err(), "flipped byte {i}");
    }
}

#[test]
fn miss_then_hit() {
    let tmp = TempDir::new("hit");
    let cache = DiskCache::new(&tmp.0);
    assert_eq!(cache.load("k", KEY), Lookup::Miss);
    cache.store("k", KEY, IMAGE).unwrap();
    assert_eq!(cache.load("k", KEY), Lookup::Hit(IMAGE.to_vec()));
    assert_eq!(cache.load("k", KEY + 1), Lookup::Miss);
    // No temporary files are left behind.
    let names: Vec<_> = fs::read_dir(&tmp.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

/// Another writer's temporary file under the name this process would take next (a process of the
/// same pid in another PID namespace or on another host): left as it is, and the entry written
/// whole. (A writer that truncated and wrote such a file gave readers torn entries.)
#[test]
fn another_writers_temporary_file_is_not_written_over() {
    let tmp = TempDir::new("tmpname");
    fs::create_dir_all(&tmp.0).unwrap();
    // Every name the counter can reach in this test process (a few stores run before this one).
    let planted: Vec<PathBuf> = (0..2000u64)
        .map(|n| {
            let p = tmp
                .0
                .join(format!(".tmp-{:016x}-{n}-{KEY:016x}", process_token()));
            fs::write(&p, b"another writer's").unwrap();
            p
        })
        .collect();
    let cache = DiskCache::new(&tmp.0);
    cache.store("k", KEY, IMAGE).unwrap();
    assert_eq!(cache.load("k", KEY), Lookup::Hit(IMAGE.to_vec()));
    for p in &planted {
        assert_eq!(fs::read(p).unwrap(), b"another writer's", "{}", p.display());
    }
}

/// A cache folder that is a file: writes fail, and the problem says how to choose another folder.
#[test]
fn a_cache_folder_that_is_a_file_is_named_with_the_fix() {
    let tmp = TempDir::new("isfile");
    fs::create_dir_all(&tmp.0).unwrap();
    let file = tmp.0.join("afile");
    fs::write(&file, b"not a folder").unwrap();
    let cache = DiskCache::new(&file);
    let e = cache.store("k", KEY, IMAGE).unwrap_err();
    let text = cache.write_problem(&cache.entry_path("k", KEY), &e);
    assert!(text.contains("PSG_CACHE_DIR"), "{text}");
    assert!(text.contains(&file.display().to_string()), "{text}");
    // A folder that exists gets no such hint.
    let ok = DiskCache::new(&tmp.0);
    let plain = ok.write_problem(&ok.entry_path("k", KEY), &e);
    assert!(!plain.contains("PSG_CACHE_DIR"), "{plain}");
}

#[test]
fn entry_names_are_safe_file_names() {
    let cache = DiskCache::new("/c");
    let p = cache.entry_path("../evil name/x", 0xab);
    assert_eq!(p, PathBuf::from("/c/---evil-name-x-00000000000000ab.bin"));
}

/// Runs `load_or_compile` with a compile closure that counts its calls.
fn fetch(cache: Option<&DiskCache>, calls: &Cell<u32>) -> (Vec<u8>, ImageOrigin) {
    load_or_compile(cache, "k", KEY, || {
        calls.set(calls.get() + 1);
        Ok(IMAGE.to_vec())
    })
    .unwrap()
}

#[test]
fn compiled_once_then_read_from_disk() {
    let tmp = TempDir::new("pipeline");
    let cache = DiskCache::new(&tmp.0);
    let calls = Cell::new(0);
    assert_eq!(
        fetch(Some(&cache), &calls),
        (IMAGE.to_vec(), ImageOrigin::Compiled)
    );
    assert_eq!(
        fetch(Some(&cache), &calls),
        (IMAGE.to_vec(), ImageOrigin::Disk)
    );
    assert_eq!(calls.get(), 1);
}

#[test]
fn corrupt_entry_is_recompiled_and_rewritten() {
    let tmp = TempDir::new("corrupt");
    let cache = DiskCache::new(&tmp.0);
    let calls = Cell::new(0);
    fetch(Some(&cache), &calls);
    let path = cache.entry_path("k", KEY);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(cache.load("k", KEY), Lookup::Corrupt(_)));
    // Recorded (other tests of this binary may record theirs at the same time).
    let before = problems().count;
    assert_eq!(
        fetch(Some(&cache), &calls),
        (IMAGE.to_vec(), ImageOrigin::Compiled)
    );
    assert!(problems().count > before);
    assert_eq!(calls.get(), 2);
    assert_eq!(cache.load("k", KEY), Lookup::Hit(IMAGE.to_vec()));
}

#[cfg(unix)]
#[test]
fn entries_that_are_not_regular_files_are_not_read() {
    let tmp = TempDir::new("special");
    let cache = DiskCache::new(&tmp.0);
    fs::create_dir_all(&tmp.0).unwrap();
    let path = cache.entry_path("k", KEY);
    // A FIFO would block the read until a writer came; a link to /dev/zero would fill memory.
    let made = std::process::Command::new("mkfifo").arg(&path).status();
    if made.is_ok_and(|s| s.success()) {
        assert_eq!(
            cache.load("k", KEY),
            Lookup::Corrupt("not a regular file".into())
        );
        fs::remove_file(&path).unwrap();
    }
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    assert_eq!(
        cache.load("k", KEY),
        Lookup::Corrupt("not a regular file".into())
    );
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    assert_eq!(
        cache.load("k", KEY),
        Lookup::Corrupt("not a regular file".into())
    );
}

#[test]
fn truncated_entry_is_recompiled() {
    let tmp = TempDir::new("truncated");
    let cache = DiskCache::new(&tmp.0);
    let calls = Cell::new(0);
    fetch(Some(&cache), &calls);
    let path = cache.entry_path("k", KEY);
    let bytes = fs::read(&path).unwrap();
    for cut in [0, 5, HEADER_LEN, bytes.len() - 1] {
        fs::write(&path, &bytes[..cut]).unwrap();
        assert!(
            matches!(cache.load("k", KEY), Lookup::Corrupt(_)),
            "cut at {cut}"
        );
        assert_eq!(fetch(Some(&cache), &calls).1, ImageOrigin::Compiled);
    }
    assert_eq!(calls.get(), 5);
}

#[test]
fn unwritable_dir_is_not_an_error() {
    let tmp = TempDir::new("unwritable");
    fs::create_dir_all(&tmp.0).unwrap();
    // A directory below a regular file can't be created, even by root.
    let file = tmp.0.join("a-file");
    fs::write(&file, b"x").unwrap();
    let cache = DiskCache::new(file.join("cache"));
    assert!(cache.store("k", KEY, IMAGE).is_err());
    let calls = Cell::new(0);
    let before = problems().count;
    assert_eq!(fetch(Some(&cache), &calls).1, ImageOrigin::Compiled);
    assert!(problems().count > before);
    assert_eq!(fetch(Some(&cache), &calls).1, ImageOrigin::Compiled);
    assert_eq!(calls.get(), 2);
}

#[test]
fn no_cache_always_compiles_and_compile_errors_pass_through() {
    let calls = Cell::new(0);
    assert_eq!(fetch(None, &calls).1, ImageOrigin::Compiled);
    assert_eq!(fetch(None, &calls).1, ImageOrigin::Compiled);
    assert_eq!(calls.get(), 2);
    let err = load_or_compile(None, "k", KEY, || {
        Err(crate::Error::Compile {
            kernel: "k".into(),
            log: "k.cu(1): error".into(),
        })
    });
    assert!(matches!(err, Err(crate::Error::Compile { .. })));
}

fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
    let map: HashMap<&str, &str> = vars.iter().copied().collect();
    move |name| map.get(name).map(OsString::from)
}

#[test]
fn cache_dir_follows_the_environment() {
    let dir = |vars: &[(&str, &str)]| resolve_cache_dir(env(vars));
    assert_eq!(dir(&[]), None);
    assert_eq!(dir(&[("HOME", "/h")]), Some(PathBuf::from("/h/.cache/psg")));
    assert_eq!(
        dir(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]),
        Some(PathBuf::from("/x/psg"))
    );
    assert_eq!(
        dir(&[("HOME", "/h"), ("XDG_CACHE_HOME", "relative")]),
        Some(PathBuf::from("/h/.cache/psg"))
    );
    assert_eq!(
        dir(&[
            ("HOME", "/h"),
            ("XDG_CACHE_HOME", "/x"),
            ("PSG_CACHE_DIR", "/p")
        ]),
        Some(PathBuf::from("/p"))
    );
    for off in ["off", "0", "OFF", "false", "disabled", "none", "nope"] {
        assert_eq!(
            dir(&[("PSG_CACHE", off), ("PSG_CACHE_DIR", "/p")]),
            None,
            "{off}"
        );
    }
    for on in ["on", "1", "TRUE", " yes "] {
        assert_eq!(
            dir(&[("PSG_CACHE", on), ("PSG_CACHE_DIR", "/p")]),
            Some(PathBuf::from("/p")),
            "{on}"
        );
    }
}

#[test]
fn the_size_limit_follows_the_environment() {
    let env = |v: Option<&str>| {
        let v = v.map(OsString::from);
        resolve_cache_max_bytes(move |name| {
            assert_eq!(name, "PSG_CACHE_MAX_MB");
            v.clone()
        })
    };
    assert_eq!(env(None), Ok(Some(DEFAULT_MAX_BYTES)));
    assert_eq!(env(Some("")), Ok(Some(DEFAULT_MAX_BYTES)));
    assert_eq!(env(Some("64")), Ok(Some(64 << 20)));
    assert_eq!(env(Some(" 2 ")), Ok(Some(2 << 20)));
    assert_eq!(env(Some("Unlimited")), Ok(None));
    // Past u64's MiB: not a number psg reads.
    assert!(env(Some("99999999999999999999")).is_err());
    // Past u64's bytes: as good as no limit.
    assert_eq!(env(Some("99999999999999")), Ok(Some(u64::MAX)));
    for bad in ["0", "-1", "1.5", "1G", "lots"] {
        let why = env(Some(bad)).unwrap_err();
        assert!(
            why.contains("PSG_CACHE_MAX_MB") && why.contains("unlimited") && why.contains("1024"),
            "{bad}: {why}"
        );
    }
}

/// Sets `path`'s modification time `age_s` seconds back.
fn age(path: &Path, age_s: u64) {
    let when = std::time::SystemTime::now() - std::time::Duration::from_secs(age_s);
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

/// Writes an entry of `len` payload bytes for kernel `name`, last used `age_s` seconds ago.
fn aged_entry(cache: &DiskCache, name: &str, len: usize, age_s: u64) -> PathBuf {
    cache.store(name, KEY, &vec![7u8; len]).unwrap();
    let path = cache.entry_path(name, KEY);
    age(&path, age_s);
    path
}

#[test]
fn a_trim_removes_the_least_recently_used_entries_down_to_three_quarters() {
    let dir = TempDir::new("trim");
    let cache = DiskCache::new(&dir.0);
    let entry = (HEADER_LEN + 1000) as u64;
    // Ten entries, k used k hours ago.
    let paths: Vec<PathBuf> = (0..10)
        .map(|k| aged_entry(&cache, &format!("k{k}"), 1000, 3600 * k))
        .collect();
    // Files psg did not write, and a folder, are left alone whatever their age.
    fs::write(dir.0.join("notes.txt"), vec![0u8; 50_000]).unwrap();
    fs::create_dir(dir.0.join("sub.bin")).unwrap();

    // Under the limit: nothing goes.
    let r = cache.trim(10 * entry).unwrap();
    assert_eq!((r.removed, r.kept_bytes), (0, 10 * entry));

    // Over it: the oldest go until at most three quarters of 8 entries' bytes are left (6).
    let r = cache.trim(8 * entry).unwrap();
    assert_eq!(r.removed, 4);
    assert_eq!(r.freed_bytes, 4 * entry);
    assert_eq!(r.kept_bytes, 6 * entry);
    for (k, p) in paths.iter().enumerate() {
        assert_eq!(p.exists(), k < 6, "entry k{k}, used {k} hours ago");
    }
    assert!(dir.0.join("notes.txt").exists() && dir.0.join("sub.bin").is_dir());

    // A folder that does not exist yet has nothing to trim.
    let none = DiskCache::new(dir.0.join("not-yet"));
    assert_eq!(none.trim(0).unwrap(), TrimReport::default());
}

#[test]
fn a_hit_keeps_an_old_entry_from_the_trim() {
    let dir = TempDir::new("trim-hit");
    let cache = DiskCache::new(&dir.0);
    let used = aged_entry(&cache, "used", 1000, 10 * 3600);
    let unused = aged_entry(&cache, "unused", 1000, 5 * 3600);
    assert!(matches!(cache.load("used", KEY), Lookup::Hit(_)));
    let r = cache.trim((HEADER_LEN + 1500) as u64).unwrap();
    assert_eq!(r.removed, 1);
    assert!(used.exists(), "the entry just read was removed");
    assert!(!unused.exists());
    // A recent entry's hit writes no metadata (at most once an hour).
    let before = fs::metadata(&used).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(matches!(cache.load("used", KEY), Lookup::Hit(_)));
    assert_eq!(fs::metadata(&used).unwrap().modified().unwrap(), before);
}

#[test]
fn a_trim_removes_temporary_files_of_writers_that_died() {
    let dir = TempDir::new("trim-tmp");
    fs::create_dir_all(&dir.0).unwrap();
    let name = |n: u32| format!(".tmp-{:016x}-{n}-{KEY:016x}", 0xdead_u64);
    let stale = dir.0.join(name(1));
    let fresh = dir.0.join(name(2));
    // Old files named otherwise are not psg's.
    let others: Vec<PathBuf> = [".tmp-dead-writer", ".tmp-0123-1-4567", "x.tmp"]
        .iter()
        .map(|n| dir.0.join(n))
        .collect();
    for p in others.iter().chain([&stale, &fresh]) {
        fs::write(p, b"half an entry").unwrap();
        if *p != fresh {
            age(p, 7200);
        }
    }
    let r = DiskCache::new(&dir.0).trim(u64::MAX).unwrap();
    assert_eq!(r.stale_temporaries, 1);
    assert!(!stale.exists() && fresh.exists());
    assert!(others.iter().all(|p| p.exists()));
}

/// A cache folder shared with other files: a trim removes psg's entries only, whatever the
/// other files' names, ages and sizes.
#[test]
fn a_trim_leaves_files_that_are_not_entries() {
    let dir = TempDir::new("trim-others");
    let cache = DiskCache::new(&dir.0);
    let entry = aged_entry(&cache, "k", 1000, 3600);
    let foreign: Vec<PathBuf> = [
        "pytorch_model.bin",
        "model-0123456789abcdef.bin",
        "k-0123456789ABCDEF.bin",
        "-0123456789abcdef.bin",
        "k-0123456789abcde.bin",
    ]
    .iter()
    .map(|n| dir.0.join(n))
    .collect();
    for p in &foreign {
        // Named like an entry or not, none starts with the entry's magic.
        fs::write(p, vec![0u8; 100_000]).unwrap();
        age(p, 30 * 24 * 3600);
    }
    let r = cache.trim(1).unwrap();
    assert_eq!(r.removed, 1);
    assert_eq!(r.kept_bytes, 0);
    assert!(!entry.exists());
    for p in &foreign {
        assert!(p.exists(), "{} was removed", p.display());
    }
    assert!(is_entry_name("median_f32_tile-0123456789abcdef.bin"));
    assert!(is_entry_name(
        cache
            .entry_path("a-b c", KEY)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
    ));
}

/// An entry the trim cannot remove stops it: the newer ones stay, and the reason is reported.
#[test]
fn a_trim_stops_at_an_entry_it_cannot_remove() {
    let dir = TempDir::new("trim-stuck");
    let cache = DiskCache::new(&dir.0);
    let paths: Vec<PathBuf> = (0..4)
        .map(|k| aged_entry(&cache, &format!("k{k}"), 1000, 3600 * (4 - k)))
        .collect();
    // k0 is the oldest, k1 the one that cannot be removed.
    let stuck = paths[1].clone();
    let r = cache
        .trim_with(1, None, &|p| {
            if p == stuck {
                Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"))
            } else {
                fs::remove_file(p)
            }
        })
        .unwrap();
    assert_eq!(r.removed, 1);
    assert!(r
        .stuck
        .as_deref()
        .is_some_and(|w| w.contains("k1-") && w.contains("read-only")));
    assert!(!paths[0].exists());
    assert!(paths[1..].iter().all(|p| p.exists()));
    assert_eq!(r.kept_bytes, 3 * (HEADER_LEN + 1000) as u64);
}

/// A store that trims never removes the entry it wrote, even one larger than the limit.
#[test]
fn a_store_that_trims_keeps_its_own_entry() {
    let dir = TempDir::new("trim-own");
    let cache = DiskCache::new(&dir.0).with_max_bytes(Some(500));
    let old = aged_entry(&cache, "old", 1000, 3600);
    cache.store_noted_trimming("new", KEY, &[1u8; 1000], true);
    assert!(cache.entry_path("new", KEY).exists());
    assert!(!old.exists());
    // Not due: nothing is trimmed.
    let old = aged_entry(&cache, "old", 1000, 7200);
    cache.store_noted_trimming("newer", KEY, &[1u8; 1000], false);
    assert!(old.exists());
}

/// A hit refreshes a time of last use set in the future (else the entry would rank as the
/// latest used for good), and a trim counts such a time as now.
#[test]
fn a_time_of_last_use_in_the_future_is_refreshed_by_a_hit() {
    let dir = TempDir::new("trim-future");
    let cache = DiskCache::new(&dir.0);
    cache.store("ahead", KEY, IMAGE).unwrap();
    let path = cache.entry_path("ahead", KEY);
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(24 * 3600);
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert!(matches!(cache.load("ahead", KEY), Lookup::Hit(_)));
    let modified = fs::metadata(&path).unwrap().modified().unwrap();
    assert!(modified < later - std::time::Duration::from_secs(3600));
}

/// Dates in the future: an entry dated ahead ranks as used now (after older ones), and a
/// temporary file dated well ahead is no writer's at work: stale.
#[test]
fn a_trim_keeps_an_entry_dated_ahead_and_removes_a_temporary_dated_ahead() {
    let dir = TempDir::new("trim-ahead");
    let cache = DiskCache::new(&dir.0);
    let old = aged_entry(&cache, "old", 1000, 3600);
    cache.store("ahead", KEY, &[7u8; 1000]).unwrap();
    let ahead = cache.entry_path("ahead", KEY);
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(365 * 24 * 3600);
    let set = |p: &Path| {
        fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(later)
            .unwrap()
    };
    set(&ahead);
    let tmp = dir.0.join(format!(".tmp-{:016x}-7-{KEY:016x}", 0xbeef_u64));
    fs::write(&tmp, b"half").unwrap();
    set(&tmp);
    // A limit of one and a half entries: the old one goes, the one dated ahead (now) stays.
    let r = cache.trim((HEADER_LEN + 1000) as u64 * 3 / 2).unwrap();
    assert_eq!((r.removed, r.stale_temporaries), (1, 1));
    assert!(!old.exists() && ahead.exists() && !tmp.exists());
}

/// A hit through a link reads what it points to, but refreshes no time outside the cache.
#[cfg(unix)]
#[test]
fn a_hit_through_a_link_refreshes_nothing() {
    let dir = TempDir::new("trim-link");
    let elsewhere = TempDir::new("trim-link-target");
    let target_cache = DiskCache::new(&elsewhere.0);
    let target = aged_entry(&target_cache, "k", 100, 10 * 3600);
    let before = fs::metadata(&target).unwrap().modified().unwrap();
    let cache = DiskCache::new(&dir.0);
    fs::create_dir_all(&dir.0).unwrap();
    std::os::unix::fs::symlink(&target, cache.entry_path("k", KEY)).unwrap();
    assert!(matches!(cache.load("k", KEY), Lookup::Hit(_)));
    assert_eq!(fs::metadata(&target).unwrap().modified().unwrap(), before);
}

/// The only test of this binary that stores through [`DiskCache::store_noted`] with a limit: its
/// store is the process's first such store, which checks the size.
#[test]
fn a_store_past_the_limit_trims_the_cache() {
    let dir = TempDir::new("trim-store");
    let cache = DiskCache::new(&dir.0);
    let old: Vec<PathBuf> = (0..4)
        .map(|k| aged_entry(&cache, &format!("old{k}"), 1000, 3600 * (k + 1)))
        .collect();
    let limited = cache.with_max_bytes(Some(3 * (HEADER_LEN + 1000) as u64));
    assert_eq!(limited.max_bytes(), Some(3 * (HEADER_LEN + 1000) as u64));
    limited.store_noted("new", KEY, &[1u8; 1000]);
    assert!(limited.entry_path("new", KEY).exists());
    // Five entries over a limit of three: down to two (three quarters of three).
    let left = old.iter().filter(|p| p.exists()).count();
    assert_eq!(left, 1, "the newest old entry and the new one are kept");
    assert!(old[0].exists());
}
