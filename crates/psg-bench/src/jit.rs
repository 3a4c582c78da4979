//! JIT latency: for each built-in's kernel, the time `prepare` takes on a fresh device handle
//! with a fresh, empty disk cache (an NVRTC compile to CUBIN and the module load), and the time
//! it takes again after the memory cache is cleared (a disk-cache read, check and load).

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use psg_runtime::{CudaDevice, DType, KernelOrigin, KernelSource};

use crate::error::{BenchResult, Context};
use crate::timing::median;

/// One kernel's two preparations.
#[derive(Debug, Clone)]
pub struct JitSample {
    /// The kernel's name.
    pub kernel: String,
    /// Milliseconds of the first `prepare` (empty caches).
    pub compile_ms: f64,
    /// Where it came from (Compiled, unless something else filled the fresh cache).
    pub compile_origin: KernelOrigin,
    /// Milliseconds of the `prepare` after the memory cache was cleared.
    pub disk_ms: f64,
    /// Where that came from (Disk, unless the disk cache could not be written).
    pub disk_origin: KernelOrigin,
}

/// All samples and their summary.
#[derive(Debug, Clone)]
pub struct JitReport {
    /// The kernels, in order.
    pub samples: Vec<JitSample>,
    /// Median and max of the compile times, ms.
    pub compile_median_ms: f64,
    /// Max compile time, ms.
    pub compile_max_ms: f64,
    /// Median of the disk-cache loads, ms.
    pub disk_median_ms: f64,
    /// Max disk-cache load, ms.
    pub disk_max_ms: f64,
    /// Whether every first prepare compiled and every second one read the disk.
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
        // B above 384.
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
        let suffix = format!("_{}", d.name());
        all.extend(rows.iter().copied().filter(|k| k.name.ends_with(&suffix)));
    }
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

/// Measures the JIT latency of `kernels` on device `ordinal`.
pub fn measure(ordinal: usize, kernels: &[&KernelSource]) -> BenchResult<JitReport> {
    let _cache = FreshCache::new().map_err(|source| crate::error::BenchError::Io {
        path: std::env::temp_dir().display().to_string(),
        source,
    })?;
    // A fresh handle: its memory cache starts empty (cleared again to be explicit).
    let dev = CudaDevice::new(ordinal).context(|| "opening a fresh device handle".into())?;
    dev.clear_memory_cache();
    let mut first = Vec::with_capacity(kernels.len());
    for k in kernels {
        first.push(timed(&dev, k).context(|| format!("compiling {}", k.name))?);
    }
    dev.clear_memory_cache();
    let mut samples = Vec::with_capacity(kernels.len());
    for (k, (compile_ms, compile_origin)) in kernels.iter().zip(first) {
        let (disk_ms, disk_origin) =
            timed(&dev, k).context(|| format!("loading {} from the disk cache", k.name))?;
        samples.push(JitSample {
            kernel: k.name.to_string(),
            compile_ms,
            compile_origin,
            disk_ms,
            disk_origin,
        });
    }
    let compile: Vec<f64> = samples.iter().map(|s| s.compile_ms).collect();
    let disk: Vec<f64> = samples.iter().map(|s| s.disk_ms).collect();
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    Ok(JitReport {
        compile_median_ms: median(&compile),
        compile_max_ms: max(&compile),
        disk_median_ms: median(&disk),
        disk_max_ms: max(&disk),
        origins_as_expected: samples.iter().all(|s| {
            s.compile_origin == KernelOrigin::Compiled && s.disk_origin == KernelOrigin::Disk
        }),
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_list_covers_every_builtin_per_dtype() {
        // Each built-in's thread-per-column and tiled kernel, its column-mode and large-B kernels
        // where it has them, and the two row-scan kernels.
        let defs = psg_ops::builtin_reductions();
        let columns = defs
            .iter()
            .filter(|d| d.tiled.as_ref().is_some_and(|t| t.column.is_some()))
            .count();
        let larges = defs
            .iter()
            .filter(|d| d.tiled.as_ref().is_some_and(|t| t.large.is_some()))
            .count();
        assert!(
            larges >= 8,
            "every order statistic has a kernel for large B"
        );
        assert!(
            columns >= 4,
            "var, std, z-score and Gaussian sums have a column mode"
        );
        let n = 2 * defs.len() + columns + larges + 2;
        assert_eq!(kernels(&[DType::F32, DType::BF16], None).len(), 2 * n);
        assert_eq!(kernels(&[DType::F32], Some(3)).len(), 3);
        assert!(kernels(&[DType::BF16], None)
            .iter()
            .all(|k| k.name.ends_with("_bf16")
                || k.name.ends_with("_bf16_tile")
                || k.name.ends_with("_bf16_tile_large")
                || k.name.ends_with("_bf16_cols")));
    }
}
