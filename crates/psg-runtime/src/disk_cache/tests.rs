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
