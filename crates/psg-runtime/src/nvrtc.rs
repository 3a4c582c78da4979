//! The thin layer over libnvrtc: is it there, which version, which architectures, and one compile.
//!
//! cudarc loads libnvrtc on first use and panics when it is missing, so every entry point here
//! checks for the library first and runs the calls under `catch_unwind` as a second line of defence.

use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, OnceLock};

use cudarc::nvrtc::{result as nvrtc_result, sys};

use crate::error::{panic_message, Error, Result};

/// Runs NVRTC calls, turning a panic inside cudarc (a library or symbol that is missing after all)
/// into a typed error.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(Error::NvrtcUnavailable {
            reason: panic_message(p.as_ref()),
        })
    })
}

/// The file names cudarc tries for library `lib` (`"nvrtc"`, `"cuda"`), each once, in cudarc's
/// order (its list repeats some, not side by side), for messages.
pub(crate) fn library_candidates(lib: &str) -> Vec<String> {
    let mut names = cudarc::get_lib_name_candidates(lib);
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// The library file names cudarc tries, and where the loader looks, for messages.
fn search_description() -> String {
    let names = library_candidates("nvrtc");
    let path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    format!(
        "none of {} could be loaded (LD_LIBRARY_PATH={path:?})",
        names.join(", ")
    )
}

/// Whether libnvrtc can be loaded and compile a program; `Err(Error::NvrtcUnavailable)` (or
/// [`Error::NvrtcBuiltinsMissing`], when its companion `libnvrtc-builtins` cannot be opened) says
/// why not.
///
/// The answer is worked out once per process (the loader's search path cannot change after
/// start), by compiling an empty kernel to PTX (20-40 ms): a libnvrtc that loads but finds no
/// builtins can compile nothing, and a device that relied on it could run no kernel. (A compile
/// of the empty kernel that fails otherwise, say out of memory, is tried again at the next call.)
pub fn nvrtc_status() -> Result<()> {
    probe().map(|_| ())
}

/// The loaded libnvrtc's release and build, as the header of the PTX it writes gives them (e.g.
/// `"release 13.0, V13.0.88; CL-36424714"`; empty if a future header has neither line).
///
/// [`nvrtc_version`] gives only (13, 0); the disk cache's key holds this too, so that a patch
/// release of NVRTC (with another ptxas) compiles its own kernels instead of loading the last
/// one's.
pub fn nvrtc_build() -> Result<String> {
    probe()
}

/// Loads libnvrtc, calls it, and compiles an empty kernel; the build string. The answer is kept
/// for the process, but for a failed compile of the empty kernel other than missing builtins
/// (say, NVRTC out of memory), which is tried again at the next call.
fn probe() -> Result<String> {
    static STATUS: Mutex<Option<Result<String>>> = Mutex::new(None);
    let mut status = STATUS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(known) = status.as_ref() {
        return known.clone();
    }
    // SAFETY: loading libnvrtc runs its initialisers, which are as trusted as any library the
    // process links; nothing else is assumed.
    let present = catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false);
    // Whether the answer is for good: all but a failed compile of the empty kernel.
    let mut for_good = true;
    let answer = if !present {
        Err(Error::NvrtcUnavailable {
            reason: search_description(),
        })
    } else {
        raw_version().and_then(|_| {
            const PROBE: &str = "extern \"C\" __global__ void psg_probe() {}\n";
            match compile_unchecked(PROBE, "psg_probe", &[], false) {
                Ok(ptx) => Ok(build_of_ptx(&String::from_utf8_lossy(&ptx))),
                Err(Error::Compile { log, .. }) => {
                    for_good = false;
                    Err(Error::NvrtcUnavailable {
                        reason: format!("libnvrtc loads but cannot compile an empty kernel: {log}"),
                    })
                }
                Err(other) => Err(other),
            }
        })
    };
    if for_good {
        *status = Some(answer.clone());
    }
    answer
}

/// The release and build lines of NVRTC's PTX header, joined.
fn build_of_ptx(ptx: &str) -> String {
    let lines = ptx
        .lines()
        .take_while(|l| l.starts_with("//") || l.is_empty());
    let mut release = None;
    let mut build = None;
    for l in lines {
        if let Some(r) = l.strip_prefix("// Cuda compilation tools, ") {
            release = Some(r.trim());
        } else if let Some(b) = l.strip_prefix("// Compiler Build ID: ") {
            build = Some(b.trim());
        }
    }
    [release, build]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ")
}

fn raw_version() -> Result<(i32, i32)> {
    guarded(|| {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: both pointers are to live locals; the library is present (checked by callers).
        let r = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
        r.result().map_err(|e| Error::NvrtcUnavailable {
            reason: format!("nvrtcVersion failed: {e}"),
        })?;
        Ok((major, minor))
    })
}

/// The (major, minor) version of the loaded libnvrtc, e.g. (13, 0).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    nvrtc_status()?;
    static VERSION: OnceLock<Result<(i32, i32)>> = OnceLock::new();
    VERSION.get_or_init(raw_version).clone()
}

/// The real architectures this libnvrtc can compile for, ascending, as `10 * major + minor`
/// (e.g. `[75, 80, 86, 87, 89, 90, 100, 103, 110, 120, 121]` for NVRTC 13.0).
pub fn supported_archs() -> Result<Vec<u32>> {
    nvrtc_status()?;
    static ARCHS: OnceLock<Result<Vec<u32>>> = OnceLock::new();
    ARCHS
        .get_or_init(|| {
            guarded(|| {
                let fail = |e: nvrtc_result::NvrtcError| Error::NvrtcUnavailable {
                    reason: format!("nvrtcGetSupportedArchs failed: {e}"),
                };
                let mut n = 0;
                // SAFETY: `n` is a live local.
                unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) }
                    .result()
                    .map_err(fail)?;
                let mut archs = vec![0; usize::try_from(n).unwrap_or(0)];
                // SAFETY: `archs` has room for the `n` values NVRTC said it will write.
                unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
                    .result()
                    .map_err(fail)?;
                let mut archs: Vec<u32> = archs
                    .into_iter()
                    .filter_map(|a| u32::try_from(a).ok())
                    .collect();
                archs.sort_unstable();
                Ok(archs)
            })
        })
        .clone()
}

/// An NVRTC program, destroyed on drop.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the program was created by nvrtcCreateProgram and is destroyed only here.
        let _ = unsafe { nvrtc_result::destroy_program(self.0) };
    }
}

impl Program {
    fn log(&self) -> String {
        // SAFETY: the program is live (owned by self).
        match unsafe { nvrtc_result::get_program_log(self.0) } {
            Ok(chars) => c_chars_to_string(&chars),
            Err(e) => format!("(NVRTC gave no log: {e})"),
        }
    }

    fn image(&self, cubin: bool) -> std::result::Result<Vec<u8>, nvrtc_result::NvrtcError> {
        let mut size = 0usize;
        // SAFETY: the program is live and compiled; `size` is a live local and the buffer has the
        // size NVRTC reported, so NVRTC writes within it.
        unsafe {
            if cubin {
                sys::nvrtcGetCUBINSize(self.0, &mut size).result()?;
            } else {
                sys::nvrtcGetPTXSize(self.0, &mut size).result()?;
            }
            let mut buf = vec![0u8; size];
            let ptr = buf.as_mut_ptr().cast::<c_char>();
            if cubin {
                sys::nvrtcGetCUBIN(self.0, ptr).result()?;
            } else {
                sys::nvrtcGetPTX(self.0, ptr).result()?;
            }
            Ok(buf)
        }
    }
}

/// NUL-terminated C chars as a Rust string (lossy).
fn c_chars_to_string(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().map(|&c| c as u8).collect();
    match CStr::from_bytes_until_nul(&bytes) {
        Ok(s) => s.to_string_lossy().trim_end().to_string(),
        Err(_) => String::from_utf8_lossy(&bytes).trim_end().to_string(),
    }
}

/// Whether a failed compile failed because libnvrtc-builtins could not be opened.
fn builtins_missing(status: sys::nvrtcResult, log: &str) -> bool {
    status == sys::nvrtcResult::NVRTC_ERROR_BUILTIN_OPERATION_FAILURE
        || log.contains("nvrtc-builtins")
}

/// The NVRTC compiles running now, and whether the process is exiting. A process that exits
/// (returns from `main`, or calls `std::process::exit`) while another thread compiles inside
/// libnvrtc tears the library down under it, and crashed (SIGSEGV in 4 of 24 such exits): compiles
/// are counted, and an `atexit` handler lets no new one start and waits for those running. The
/// tiered JIT's background builds are such compiles, and so is a thread's first use of a kernel.
struct ExitGate {
    /// (compiles running, exiting).
    state: Mutex<(usize, bool)>,
    idle: Condvar,
}

fn exit_gate() -> &'static ExitGate {
    static GATE: OnceLock<ExitGate> = OnceLock::new();
    GATE.get_or_init(|| ExitGate {
        state: Mutex::new((0, false)),
        idle: Condvar::new(),
    })
}

/// A compile counted as running; `None` once the process exits.
struct Running;

impl Running {
    fn enter() -> Option<Running> {
        let mut s = exit_gate().state.lock().unwrap_or_else(|p| p.into_inner());
        if s.1 {
            return None;
        }
        s.0 += 1;
        Some(Running)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let gate = exit_gate();
        let mut s = gate.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 -= 1;
        if s.0 == 0 {
            gate.idle.notify_all();
        }
    }
}

/// The `atexit` handler: no compile starts any more, and those running finish (a compile takes a
/// few seconds at most; the wait is capped at 30 s, one deadline for every registration of the
/// handler).
extern "C" fn wait_for_compiles_at_exit() {
    static DEADLINE: OnceLock<std::time::Instant> = OnceLock::new();
    let deadline =
        *DEADLINE.get_or_init(|| std::time::Instant::now() + std::time::Duration::from_secs(30));
    let gate = exit_gate();
    let mut s = gate.state.lock().unwrap_or_else(|p| p.into_inner());
    s.1 = true;
    while s.0 > 0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        s = gate
            .idle
            .wait_timeout(s, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// An empty kernel, compiled before the first compile of each kind (see
/// [`wait_for_compiles_at_exit_registered_for`]).
const EMPTY_KERNEL: &str = "extern \"C\" __global__ void psg_exit_wait() {}\n";

/// Registers [`wait_for_compiles_at_exit`] before the first compile of each kind (CUBIN or PTX,
/// with one set of options), once an empty kernel of that kind has compiled. Exit handlers run
/// in the reverse order of their registration, and libnvrtc registers the destructors of its
/// statics lazily, during the first compile that uses them: a handler registered before such a
/// compile would run after those destructors, and wait for compiles inside a library already
/// torn down (SIGSEGV in 1 of 12 exits on an H200, where the handler was registered before the
/// first compile). The empty kernel's compile (27-35 ms on a 2-core machine, once a kind and
/// process) makes libnvrtc register them first; it is counted as running, so an exit during it
/// waits for it where a handler is registered already, and its result is not used (the real
/// compile reports what is wrong). Registering before the real compile, rather than after it,
/// covers an exit during a process's first compile of a kind (its first optimized build is
/// one): `tests/nvrtc_exit.rs`'s children, exiting 0.1 to 0.6 s into their first compile,
/// crashed in 4 to 10 of 24 in each of 6 runs with the handler registered after it, in none of
/// 24 in each of 12 runs with this (2-core machine, 2026-11-29). On an H200 host one child of
/// 168 crashed (the first child of the first run on a fresh machine, 100 ms into its compile:
/// maybe still in the empty kernel's compile, which a cold process takes longer over); a kernel
/// that calls the math library, shuffles and atomics as a warm-up instead took 80-150 ms where
/// the empty one takes 30, and 96 children of each crashed in none. So that the empty kernel
/// makes libnvrtc register every destructor a real compile would is what these counts
/// suggest, not what they prove: a destructor a real compile registers later would run before
/// the handler. The handler may so be registered a few times; it is idempotent, and its runs
/// share one 30 s deadline. Not covered: an exit during the empty kernel's compile itself, or
/// during the probe (`nvrtc_status`), before any handler is registered.
fn wait_for_compiles_at_exit_registered_for(cubin: bool, options: &[String]) {
    static KINDS: Mutex<Vec<(bool, Vec<String>)>> = Mutex::new(Vec::new());
    let mut kinds = KINDS.lock().unwrap_or_else(|p| p.into_inner());
    if kinds.iter().any(|(c, o)| *c == cubin && o == options) {
        return;
    }
    // Held while the empty kernel compiles: every compile meanwhile waits for it (once a kind
    // and process, some 30 ms).
    let Some(running) = Running::enter() else {
        return;
    };
    let warmed = compile_unchecked(EMPTY_KERNEL, "psg_exit_wait", options, cubin).is_ok();
    drop(running);
    if !warmed {
        // libnvrtc may not have set up what a compile does (out of memory, say): the next
        // compile of the kind tries again; this one runs without the handler.
        return;
    }
    kinds.push((cubin, options.to_vec()));
    extern "C" {
        fn atexit(f: extern "C" fn()) -> std::os::raw::c_int;
    }
    // SAFETY: `atexit` is the C library's; the handler is a plain `extern "C"` function that does
    // not unwind (it only locks and waits) and stays valid for the process's life.
    unsafe {
        atexit(wait_for_compiles_at_exit);
    }
}

/// Compiles `source` (named `<kernel>.cu` in logs) with `options`; returns the CUBIN when `cubin`,
/// else the PTX text's bytes (NUL-terminated, as the driver loads it).
pub(crate) fn compile_program(
    source: &str,
    kernel: &str,
    options: &[String],
    cubin: bool,
) -> Result<Vec<u8>> {
    nvrtc_status()?;
    wait_for_compiles_at_exit_registered_for(cubin, options);
    let Some(running) = Running::enter() else {
        return Err(Error::Compile {
            kernel: kernel.to_string(),
            log: "not compiled: the process is exiting".to_string(),
        });
    };
    let image = compile_unchecked(source, kernel, options, cubin);
    drop(running);
    image
}

/// [`compile_program`] once libnvrtc is known to load.
fn compile_unchecked(
    source: &str,
    kernel: &str,
    options: &[String],
    cubin: bool,
) -> Result<Vec<u8>> {
    let nul = |what: &str| {
        Error::InvalidParameter(format!(
            "the {what} of kernel `{kernel}` contains a NUL byte; CUDA sources and names are text"
        ))
    };
    let src = CString::new(source).map_err(|_| nul("source"))?;
    let name = CString::new(format!("{kernel}.cu")).map_err(|_| nul("name"))?;
    let opts: Vec<CString> = options
        .iter()
        .map(|o| CString::new(o.as_str()).map_err(|_| nul("options")))
        .collect::<Result<_>>()?;
    guarded(|| {
        let created = nvrtc_result::create_program(&src, Some(&name));
        let prog = Program(created.map_err(|e| Error::Compile {
            kernel: kernel.to_string(),
            log: format!("nvrtcCreateProgram failed: {e}"),
        })?);
        let ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
        let n = i32::try_from(ptrs.len()).unwrap_or(i32::MAX);
        // SAFETY: the program is live; `ptrs` holds `n` pointers to NUL-terminated strings in
        // `opts`, which outlives the call.
        let status = unsafe { sys::nvrtcCompileProgram(prog.0, n, ptrs.as_ptr()) };
        if status != sys::nvrtcResult::NVRTC_SUCCESS {
            let log = prog.log();
            let log = if log.is_empty() {
                format!("{status:?}")
            } else {
                log
            };
            if builtins_missing(status, &log) {
                return Err(Error::NvrtcBuiltinsMissing { log });
            }
            return Err(Error::Compile {
                kernel: kernel.to_string(),
                log,
            });
        }
        prog.image(cubin).map_err(|e| Error::Compile {
            kernel: kernel.to_string(),
            log: format!("compiled, but NVRTC could not return the image: {e}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_from_the_ptx_header() {
        let ptx = "//\n// Generated by NVIDIA NVVM Compiler\n//\n// Compiler Build ID: CL-36424714\n\
                   // Cuda compilation tools, release 13.0, V13.0.88\n// Based on NVVM 7.0.1\n//\n\n\
                   .version 9.0\n// Cuda compilation tools, not the header\n";
        assert_eq!(build_of_ptx(ptx), "release 13.0, V13.0.88; CL-36424714");
        assert_eq!(build_of_ptx(".version 9.0\n"), "");
    }

    #[test]
    fn builtins_failure_is_recognised() {
        use sys::nvrtcResult::*;
        assert!(builtins_missing(NVRTC_ERROR_BUILTIN_OPERATION_FAILURE, ""));
        assert!(builtins_missing(
            NVRTC_ERROR_COMPILATION,
            "could not open libnvrtc-builtins.so.13.0"
        ));
        assert!(!builtins_missing(NVRTC_ERROR_COMPILATION, "k.cu(3): error"));
    }

    #[test]
    fn c_chars_stop_at_nul() {
        let chars: Vec<c_char> = b"log\n\0junk".iter().map(|&b| b as c_char).collect();
        assert_eq!(c_chars_to_string(&chars), "log");
    }
}

#[cfg(test)]
mod exit_tests {
    use super::*;

    /// The exit handler waits for the compile running, then lets none start. It flips the
    /// process's exit flag for good, which would stop other tests' compiles: the test runs
    /// itself in a child process (`tests/nvrtc_exit.rs` checks the exit itself).
    #[test]
    fn at_exit_running_compiles_finish_and_no_new_one_starts() {
        if std::env::var_os("PSG_TEST_EXIT_GATE").is_none() {
            // Run in a child process: the flag would stop other tests' compiles.
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "nvrtc::exit_tests::at_exit_running_compiles_finish_and_no_new_one_starts",
                    "--exact",
                ])
                .env("PSG_TEST_EXIT_GATE", "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            // It ran this test (a renamed test would run none and pass).
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "{stdout}"
            );
            return;
        }
        let running = Running::enter().expect("not exiting yet");
        let (tx, rx) = std::sync::mpsc::channel();
        let compile = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            tx.send(()).unwrap();
            drop(running);
        });
        let t = std::time::Instant::now();
        wait_for_compiles_at_exit();
        assert!(
            rx.try_recv().is_ok(),
            "the handler returned before the compile finished"
        );
        assert!(t.elapsed() >= std::time::Duration::from_millis(250));
        assert!(
            Running::enter().is_none(),
            "a compile started after the exit began"
        );
        compile.join().unwrap();
    }
}
