//! JIT latency: for each built-in's kernel, the time `prepare` takes on a device handle with an
//! empty memory cache and a fresh, empty disk cache, as a quick build (the tiered JIT's first
//! use: an NVRTC compile with its fast-compile setting and the module load) and as the optimized
//! build (an NVRTC compile to CUBIN, the module load and the cache write: what the tiered JIT
//! does in the background, and `JitMode::Optimized` before the first launch), and the time it
//! takes again after the memory cache is cleared (a disk-cache read, check and load). All kernels are measured in [`ROUNDS`] rounds (or as many
//! as asked), each with a fresh cache directory; a kernel's figures are the medians of its
//! rounds, so that one stall of the machine (the disk, the scheduler) is not taken for the
//! kernel's latency. The largest single compile is reported beside them.
//!
//! NVRTC itself caches what it compiled (CUDA 12.9 and later: the "Caching" section of its
//! manual, and its `--no-cache` option), past the end of the process, and a comment does not
//! change what it caches by: on an H200 host, 83 f32 kernels whose sources differed only by an
//! appended comment compiled in 250 ms (median; up to 1.2 s) the first time and in 18 ms (up to
//! 38 ms) the second. So every round compiles its own program of each kernel, the source with
//! a device variable named after the process and the round appended ([`round_sources`]): each
//! compile is a cold one, of the same kernel.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use psg_runtime::{CudaDevice, DType, JitMode, KernelOrigin, KernelSource};

use crate::error::{BenchResult, Context};
use crate::timing::median;

/// Rounds over the kernel list, each into a fresh, empty cache.
pub const ROUNDS: usize = 3;

/// One kernel's preparations, every round.
#[derive(Debug, Clone)]
pub struct JitSample {
    /// The kernel's name.
    pub kernel: String,
    /// Median over the rounds of the quick build's `prepare` (empty caches), ms: a kernel's
    /// first use in the tiered JIT.
    pub quick_ms: f64,
    /// Each round's quick `prepare`, ms.
    pub quick_rounds_ms: Vec<f64>,
    /// Where it came from: Quick, unless something else answered in some round (then the first
    /// other origin, in round order).
    pub quick_origin: KernelOrigin,
    /// Median over the rounds of the optimized build's `prepare` (empty caches), ms.
    pub compile_ms: f64,
    /// Each round's first `prepare`, ms.
    pub compile_rounds_ms: Vec<f64>,
    /// Where it came from: Compiled, unless something else filled a fresh cache in some round
    /// (then the first other origin, in round order).
    pub compile_origin: KernelOrigin,
    /// Median over the rounds of the `prepare` after the memory cache was cleared, ms.
    pub disk_ms: f64,
    /// Where that came from: Disk, unless the disk cache could not be written in some round
    /// (then the first other origin, in round order).
    pub disk_origin: KernelOrigin,
}

/// All samples and their summary.
#[derive(Debug, Clone)]
pub struct JitReport {
    /// The kernels, in order.
    pub samples: Vec<JitSample>,
    /// Rounds each kernel was measured in.
    pub rounds: usize,
    /// Median over kernels of the per-kernel quick-build medians, ms.
    pub quick_median_ms: f64,
    /// Max over kernels of the per-kernel quick-build medians, ms.
    pub quick_max_ms: f64,
    /// Median over kernels of the per-kernel compile medians, ms.
    pub compile_median_ms: f64,
    /// Max over kernels of the per-kernel compile medians, ms.
    pub compile_max_ms: f64,
    /// The largest single compile of any round, ms.
    pub compile_worst_ms: f64,
    /// The kernel of `compile_worst_ms`.
    pub compile_worst_kernel: String,
    /// Median of the per-kernel disk-cache load medians, ms.
    pub disk_median_ms: f64,
    /// Max of the per-kernel disk-cache load medians, ms.
    pub disk_max_ms: f64,
    /// Whether every quick prepare made a quick build, every optimized one compiled and every
    /// later one read the disk, in every round.
    pub origins_as_expected: bool,
}

/// The kernels measured: every built-in reduction's kernel and the row-scan kernels (per-sample
/// norms) for each of `dtypes`, at most `limit`.
pub fn kernels(dtypes: &[DType], limit: Option<usize>) -> Vec<&'static KernelSource> {
    let defs = psg_ops::builtin_reductions();
    let rows = psg_ops::row_kernel_sources();
    let mut all = Vec::new();
    for d in dtypes {
        all.extend(defs.iter().map(|def| &def.cuda[d.index()]));
        // The tiled kernels are the ones that run for B up to about a thousand, the column-mode
        // ones (where a reduction has them) for B up to 128, the selections' kernels for large
        // B above 256, for middling B up to 128 and for small B up to 64.
        all.extend(
            defs.iter()
                .filter_map(|def| def.tiled.as_ref())
                .map(|t| &t.cuda[d.index()]),
        );
        all.extend(
            defs.iter()
                .filter_map(|def| def.tiled.as_ref()?.column.as_ref())
                .map(|c| &c[d.index()]),
        );
        all.extend(
            defs.iter()
                .filter_map(|def| def.tiled.as_ref()?.large.as_ref())
                .map(|c| &c[d.index()]),
        );
        all.extend(
            defs.iter()
                .filter_map(|def| def.tiled.as_ref()?.mid.as_ref())
                .map(|c| &c[d.index()]),
        );
        all.extend(
            defs.iter()
                .filter_map(|def| def.tiled.as_ref()?.small.as_ref())
                .map(|c| &c[d.index()]),
        );
        let suffix = format!("_{}", d.name());
        all.extend(rows.iter().copied().filter(|k| k.name.ends_with(&suffix)));
    }
    // A kernel for large B that is the tiled kernel itself (a plan without a selection, in a
    // dtype whose tile is not pipelined) is one compile, counted once.
    let mut seen = std::collections::HashSet::new();
    all.retain(|k| seen.insert(k.name.as_ref()));
    all.truncate(limit.unwrap_or(usize::MAX));
    all
}

/// Points `PSG_CACHE_DIR` at a fresh directory (and clears `PSG_CACHE`) while alive; restores
/// both and removes the directory when dropped.
struct FreshCache {
    dir: PathBuf,
    old_dir: Option<std::ffi::OsString>,
    old_switch: Option<std::ffi::OsString>,
}

impl FreshCache {
    fn new() -> std::io::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("psg-bench-jit-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let cache = FreshCache {
            old_dir: std::env::var_os("PSG_CACHE_DIR"),
            old_switch: std::env::var_os("PSG_CACHE"),
            dir,
        };
        // The benchmark is single-threaded here: nothing reads the environment concurrently.
        std::env::set_var("PSG_CACHE_DIR", &cache.dir);
        std::env::remove_var("PSG_CACHE");
        Ok(cache)
    }
}

impl Drop for FreshCache {
    fn drop(&mut self) {
        match &self.old_dir {
            Some(v) => std::env::set_var("PSG_CACHE_DIR", v),
            None => std::env::remove_var("PSG_CACHE_DIR"),
        }
        if let Some(v) = &self.old_switch {
            std::env::set_var("PSG_CACHE", v);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn timed(dev: &CudaDevice, k: &KernelSource) -> psg_runtime::Result<(f64, KernelOrigin)> {
    let t = Instant::now();
    let origin = dev.prepare(k)?;
    Ok((t.elapsed().as_secs_f64() * 1e3, origin))
}

/// One kernel's preparations in one round: (ms, origin) of its quick build, its optimized build
/// and its load from the disk cache.
#[derive(Debug, Clone, Copy)]
struct Prepared {
    quick: (f64, KernelOrigin),
    compiled: (f64, KernelOrigin),
    disk: (f64, KernelOrigin),
}

/// One round: every kernel prepared as a quick build, then as the optimized build into a fresh
/// cache, then again from its disk entry.
type Round = Vec<Prepared>;

/// Each of `kernels` prepared on `dev` in `mode`, after the memory cache is cleared.
fn prepare_all(
    dev: &CudaDevice,
    kernels: &[&KernelSource],
    mode: JitMode,
    what: &str,
) -> BenchResult<Vec<(f64, KernelOrigin)>> {
    dev.set_jit_mode(mode);
    dev.clear_memory_cache();
    kernels
        .iter()
        .map(|k| timed(dev, k).context(|| format!("{what} {}", k.name)))
        .collect()
}

/// Each kernel's source with a device variable named after this process and `round` appended:
/// a program that no cache (NVRTC's, the disk cache's) has seen, its kernel compiled as before
/// (the variable is a word of global memory that nothing reads).
pub fn round_sources(kernels: &[&KernelSource], round: usize) -> Vec<KernelSource> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tag = format!("{}_{nanos}_{round}", std::process::id());
    kernels
        .iter()
        .map(|k| {
            KernelSource::new_owned(
                k.name.to_string(),
                format!(
                    "{}\n/* psg-bench: a program no cache has seen. */\n__device__ int psg_bench_jit_{tag};\n",
                    k.source
                ),
            )
        })
        .collect()
}

fn round(dev: &CudaDevice, kernels: &[&KernelSource], index: usize) -> BenchResult<Round> {
    let _cache = FreshCache::new().map_err(|source| crate::error::BenchError::Io {
        path: std::env::temp_dir().display().to_string(),
        source,
    })?;
    let sources = round_sources(kernels, index);
    let kernels: Vec<&KernelSource> = sources.iter().collect();
    let kernels = kernels.as_slice();
    // Quick builds are never written to the disk cache: the optimized compiles that follow
    // find it empty.
    let quick = prepare_all(dev, kernels, JitMode::Quick, "quick build of")?;
    let compiled = prepare_all(dev, kernels, JitMode::Optimized, "compiling")?;
    let disk = prepare_all(
        dev,
        kernels,
        JitMode::Optimized,
        "loading from the disk cache",
    )?;
    // Leave nothing of this round's cache in memory for the next one.
    dev.clear_memory_cache();
    Ok(quick
        .into_iter()
        .zip(compiled)
        .zip(disk)
        .map(|((quick, compiled), disk)| Prepared {
            quick,
            compiled,
            disk,
        })
        .collect())
}

/// Measures the JIT latency of `kernels` on device `ordinal`, `rounds` times (at least once).
pub fn measure(ordinal: usize, kernels: &[&KernelSource], rounds: usize) -> BenchResult<JitReport> {
    // A fresh handle: its memory cache starts empty (and is cleared before each round).
    let dev = CudaDevice::new(ordinal).context(|| "opening a fresh device handle".into())?;
    let count = rounds.max(1);
    let mut rounds = Vec::with_capacity(count);
    for i in 0..count {
        rounds.push(round(&dev, kernels, i)?);
    }
    Ok(summarize(kernels, &rounds))
}

/// Per-kernel medians over `rounds` (each in `kernels`' order) and the summary.
fn summarize(kernels: &[&KernelSource], rounds: &[Round]) -> JitReport {
    let mut samples = Vec::with_capacity(kernels.len());
    let mut as_expected = true;
    let (mut worst_ms, mut worst_kernel) = (f64::NAN, String::new());
    for (i, k) in kernels.iter().enumerate() {
        let quick: Vec<f64> = rounds.iter().map(|r| r[i].quick.0).collect();
        let compile: Vec<f64> = rounds.iter().map(|r| r[i].compiled.0).collect();
        let disk: Vec<f64> = rounds.iter().map(|r| r[i].disk.0).collect();
        let pick = |want: KernelOrigin, of: &dyn Fn(&Prepared) -> KernelOrigin| {
            rounds
                .iter()
                .map(|r| of(&r[i]))
                .find(|o| *o != want)
                .unwrap_or(want)
        };
        let quick_origin = pick(KernelOrigin::Quick, &|p| p.quick.1);
        let compile_origin = pick(KernelOrigin::Compiled, &|p| p.compiled.1);
        let disk_origin = pick(KernelOrigin::Disk, &|p| p.disk.1);
        as_expected &= quick_origin == KernelOrigin::Quick
            && compile_origin == KernelOrigin::Compiled
            && disk_origin == KernelOrigin::Disk;
        for &ms in &compile {
            if worst_ms.is_nan() || ms > worst_ms {
                (worst_ms, worst_kernel) = (ms, k.name.to_string());
            }
        }
        samples.push(JitSample {
            kernel: k.name.to_string(),
            quick_ms: median(&quick),
            quick_rounds_ms: quick,
            quick_origin,
            compile_ms: median(&compile),
            compile_rounds_ms: compile,
            compile_origin,
            disk_ms: median(&disk),
            disk_origin,
        });
    }
    let quick: Vec<f64> = samples.iter().map(|s| s.quick_ms).collect();
    let compile: Vec<f64> = samples.iter().map(|s| s.compile_ms).collect();
    let disk: Vec<f64> = samples.iter().map(|s| s.disk_ms).collect();
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    JitReport {
        rounds: rounds.len(),
        quick_median_ms: median(&quick),
        quick_max_ms: max(&quick),
        compile_median_ms: median(&compile),
        compile_max_ms: max(&compile),
        compile_worst_ms: worst_ms,
        compile_worst_kernel: worst_kernel,
        disk_median_ms: median(&disk),
        disk_max_ms: max(&disk),
        origins_as_expected: as_expected,
        samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every round compiles text no cache has seen, the kernel's source and name kept.
    #[test]
    fn each_round_compiles_its_own_text() {
        let a = KernelSource::new_static("a", "extern \"C\" __global__ void a() {}");
        let b = KernelSource::new_static("b", "extern \"C\" __global__ void b() {}");
        let first = round_sources(&[&a, &b], 0);
        let second = round_sources(&[&a, &b], 1);
        for (k, (x, y)) in [&a, &b].iter().zip(first.iter().zip(&second)) {
            assert_eq!((&x.name, &y.name), (&k.name, &k.name));
            assert!(x.source.starts_with(k.source.as_ref()));
            assert_ne!(x.source, y.source);
        }
        assert_ne!(first[0].source, first[1].source);
    }

    /// A kernel's figure is the median of its rounds; a stall in one round shows only as the
    /// largest single compile; an origin other than the expected one in any round is reported.
    #[test]
    fn rounds_are_summarized_per_kernel() {
        let a = KernelSource::new_static("a", "");
        let b = KernelSource::new_static("b", "");
        let (q, c, d) = (
            KernelOrigin::Quick,
            KernelOrigin::Compiled,
            KernelOrigin::Disk,
        );
        let p = |quick: f64, compiled: f64, disk: f64| Prepared {
            quick: (quick, q),
            compiled: (compiled, c),
            disk: (disk, d),
        };
        let rounds: Vec<Round> = vec![
            vec![p(5.0, 20.0, 0.2), p(9.0, 30.0, 0.1)],
            vec![p(6.0, 22.0, 0.3), p(8.0, 600.0, 0.1)],
            vec![p(7.0, 21.0, 0.1), p(10.0, 31.0, 0.5)],
        ];
        let r = summarize(&[&a, &b], &rounds);
        assert_eq!(r.rounds, 3);
        assert_eq!(
            (r.samples[0].compile_ms, r.samples[1].compile_ms),
            (21.0, 31.0)
        );
        assert_eq!(r.samples[1].compile_rounds_ms, vec![30.0, 600.0, 31.0]);
        assert_eq!((r.samples[0].quick_ms, r.samples[1].quick_ms), (6.0, 9.0));
        assert_eq!((r.quick_median_ms, r.quick_max_ms), (7.5, 9.0));
        assert_eq!((r.samples[0].disk_ms, r.samples[1].disk_ms), (0.2, 0.1));
        assert_eq!((r.compile_median_ms, r.compile_max_ms), (26.0, 31.0));
        assert_eq!(
            (r.compile_worst_ms, r.compile_worst_kernel.as_str()),
            (600.0, "b")
        );
        assert_eq!(
            (r.disk_median_ms, r.disk_max_ms),
            (0.15000000000000002, 0.2)
        );
        assert!(r.origins_as_expected);
        let mut off = rounds.clone();
        off[2][0].disk.1 = c;
        let r = summarize(&[&a, &b], &off);
        assert!(!r.origins_as_expected);
        assert_eq!(r.samples[0].disk_origin, c);
        assert_eq!(r.samples[1].disk_origin, d);
        // A quick prepare that compiled the optimized build (an NVRTC without the fast-compile
        // option) is reported too.
        let mut off = rounds.clone();
        off[1][1].quick.1 = c;
        let r = summarize(&[&a, &b], &off);
        assert!(!r.origins_as_expected);
        assert_eq!(r.samples[1].quick_origin, c);
    }

    #[test]
    fn kernel_list_covers_every_builtin_per_dtype() {
        // Each built-in's thread-per-column and tiled kernel, its column-mode, large-B and small-B
        // kernels where it has them, and the two row-scan kernels.
        let defs = psg_ops::builtin_reductions();
        let columns = defs
            .iter()
            .filter(|d| d.tiled.as_ref().is_some_and(|t| t.column.is_some()))
            .count();
        // Kernels for large B of their own, in a dtype (the others are the tiled kernel).
        let larges = |d: DType| {
            defs.iter()
                .filter_map(|def| def.tiled.as_ref())
                .filter(|t| {
                    t.large
                        .as_ref()
                        .is_some_and(|l| l[d.index()].name != t.cuda[d.index()].name)
                })
                .count()
        };
        let smalls = defs
            .iter()
            .filter(|d| d.tiled.as_ref().is_some_and(|t| t.small.is_some()))
            .count();
        let mids = defs
            .iter()
            .filter(|d| d.tiled.as_ref().is_some_and(|t| t.mid.is_some()))
            .count();
        assert_eq!(
            (smalls, larges(DType::F64)),
            (mids, mids),
            "every selection has kernels for small, middling and large B, and only a selection \
             has one for large B in f64"
        );
        assert!(
            larges(DType::F32) >= mids + 4,
            "the var, std, z-score mean and Gaussian sums pipeline their f32 tile for large B"
        );
        assert!(
            larges(DType::BF16) >= mids + 2,
            "the var and std pipeline their bf16 tile for large B"
        );
        assert!(mids >= 8, "every order statistic has a kernel for large B");
        assert!(
            columns >= 4,
            "var, std, z-score and Gaussian sums have a column mode"
        );
        let n = |d: DType| 2 * defs.len() + columns + larges(d) + mids + smalls + 2;
        assert_eq!(
            kernels(&[DType::F32, DType::BF16], None).len(),
            n(DType::F32) + n(DType::BF16)
        );
        assert_eq!(kernels(&[DType::F32], Some(3)).len(), 3);
        assert!(kernels(&[DType::BF16], None)
            .iter()
            .all(|k| k.name.ends_with("_bf16")
                || k.name.ends_with("_bf16_tile")
                || k.name.ends_with("_bf16_tile_large")
                || k.name.ends_with("_bf16_tile_mid")
                || k.name.ends_with("_bf16_tile_small")
                || k.name.ends_with("_bf16_cols")));
    }
}
