//! Scans along the parameter axis: for each sample (row of `g[B, P]`), the sum of squares of its
//! elements and the first coordinate holding a non-finite value. Per-sample norms (for clipping)
//! and the non-finite policy are built on it. Not a batch-axis reduction, so it is a hand-written
//! kernel; it reuses the generated kernels' dtype prelude.
//!
//! The sums are f64 for every dtype: a square of f32 data overflows f32 above 2^64 and
//! underflows it below 2^-75, where the norm is still an f32 number (a sample of norm 2e19 had
//! an infinite norm, so a clip factor of 0 instead of C / 2e19). The GPU sums each row in chunks
//! (one block per chunk and sample, a fixed-shape tree in shared memory), then adds the chunks'
//! partial sums in order: deterministic. A thread sums each 16-byte vector's squares in the
//! accumulator type and adds that in f64; a vector whose sum leaves [2^-100, 2^100] has its
//! squares taken in f64 instead. The CPU sums each row sequentially in f64; the two agree to
//! rounding (within 1e-5 relative).

use psg_codegen::DType as GenDType;
use psg_runtime::cpu_pool;
use psg_runtime::{
    Accumulator, CudaDevice, DType, Device, Element, Error, KernelArg, KernelSource, LaunchConfig,
    Result, Tensor,
};
use rayon::prelude::*;
use std::sync::OnceLock;

/// Elements of a row one block sums.
const CHUNK: usize = 1 << 16;
const BLOCK: u32 = 256;
/// No non-finite value in the row.
pub(crate) const ALL_FINITE: i64 = i64::MAX;

/// Per-sample sums of squares (f64, `[B]`) and first non-finite coordinate of each row
/// (`ALL_FINITE` when none).
pub(crate) struct RowScan {
    pub sum_sq: Tensor,
    pub first_bad: Vec<i64>,
}

fn kernel_source(dtype: DType) -> &'static KernelSource {
    static SOURCES: OnceLock<Vec<KernelSource>> = OnceLock::new();
    let all = SOURCES.get_or_init(|| {
        GenDType::ALL
            .iter()
            .map(|&d| {
                let name = format!("psg_row_scan_{}", d.name());
                let source = format!(
                    "// psg-ops row scan, input {}.\n{}{}",
                    d.name(),
                    psg_codegen::cuda::prelude(d),
                    include_str!("rows.cu").replace("ROW_SCAN", &name)
                );
                KernelSource::new_owned(name, source)
            })
            .collect()
    });
    &all[dtype.index()]
}

fn finish_source(dtype: DType) -> &'static KernelSource {
    static SOURCES: OnceLock<Vec<KernelSource>> = OnceLock::new();
    let all = SOURCES.get_or_init(|| {
        GenDType::ALL
            .iter()
            .map(|&d| {
                let name = format!("psg_row_finish_{}", d.name());
                let source = format!(
                    "// psg-ops row scan (finish), input {}.\n{}{}",
                    d.name(),
                    psg_codegen::cuda::prelude(d),
                    include_str!("rows_finish.cu").replace("ROW_FINISH", &name)
                );
                KernelSource::new_owned(name, source)
            })
            .collect()
    });
    &all[dtype.index()]
}

/// The CUDA sources of the row-scan kernels, for the NVRTC check.
pub fn row_kernel_sources() -> Vec<&'static KernelSource> {
    DType::ALL
        .iter()
        .flat_map(|&d| [kernel_source(d), finish_source(d)])
        .collect()
}

/// Scans the rows of `g` (rank >= 1; row b = sample b).
pub(crate) fn scan(g: &Tensor) -> Result<RowScan> {
    let b = g.batch_size()?;
    let p = g.per_sample_len();
    match g.device() {
        Device::Cpu => match g.dtype() {
            DType::F32 => scan_cpu::<f32>(g, b, p),
            DType::F64 => scan_cpu::<f64>(g, b, p),
            DType::F16 => scan_cpu::<half::f16>(g, b, p),
            DType::BF16 => scan_cpu::<half::bf16>(g, b, p),
        },
        Device::Cuda(dev) => scan_cuda(&dev, g, b, p),
    }
}

fn scan_cpu<T: Element>(g: &Tensor, b: usize, p: usize) -> Result<RowScan>
where
    T::Acc: Element,
{
    let data = g.as_cpu_slice::<T>()?;
    // Buffers of B entries through the fallible allocator: a [B, 0] tensor holds no element
    // whatever B, and its B may be past what memory holds (an error, not an abort).
    let mut sums = psg_runtime::host_filled(b, 0.0f64)?;
    let mut first_bad = psg_runtime::host_filled(b, ALL_FINITE)?;
    cpu_pool::install(|| {
        sums.par_iter_mut()
            .zip(first_bad.par_iter_mut())
            .enumerate()
            .for_each(|(row, (sum, first))| {
                let values = &data[row * p..(row + 1) * p];
                // f64 accumulation: a sequential f32 sum over a million elements would be the
                // least accurate of the two backends (the GPU sums in a tree).
                let mut acc = 0.0f64;
                let mut bad = ALL_FINITE;
                for (i, v) in values.iter().enumerate() {
                    let x = v.to_acc().to_f64();
                    acc += x * x;
                    if bad == ALL_FINITE && !x.is_finite() {
                        bad = i as i64;
                    }
                }
                (*sum, *first) = (acc, bad);
            })
    })?;
    Ok(RowScan {
        sum_sq: Tensor::from_vec(sums, &[b], &Device::Cpu)?,
        first_bad,
    })
}

/// Per-sample sums of squares of `g` (f64 whatever `g`'s dtype, `[B]`, on `g`'s device), without
/// waiting for the device: what clipping needs of the scan (the non-finite policy needs the rest).
/// f64 because a square of f32 data can overflow f32 (above 2^64) or underflow it (below 2^-75)
/// where the norm itself is an f32 number.
pub(crate) fn sums_of_squares(g: &Tensor) -> Result<Tensor> {
    match g.device() {
        Device::Cpu => Ok(scan(g)?.sum_sq),
        Device::Cuda(dev) => {
            let b = g.batch_size()?;
            Ok(scan_cuda_sums(&dev, g, b, g.per_sample_len())?.0)
        }
    }
}

fn scan_cuda(dev: &CudaDevice, g: &Tensor, b: usize, p: usize) -> Result<RowScan> {
    let (sum_sq, bad) = scan_cuda_sums(dev, g, b, p)?;
    let Some(bad) = bad else {
        return Ok(RowScan {
            sum_sq,
            first_bad: Vec::new(),
        });
    };
    let mut bytes = vec![0u8; b * 8];
    dev.dtoh(&bad, &mut bytes)?;
    let first_bad = bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    Ok(RowScan { sum_sq, first_bad })
}

/// The scan's kernels: the sums of squares, and each row's first non-finite coordinate left on
/// the device (`None` for an empty batch).
fn scan_cuda_sums(
    dev: &CudaDevice,
    g: &Tensor,
    b: usize,
    p: usize,
) -> Result<(Tensor, Option<psg_runtime::DeviceBuffer>)> {
    let chunks = p.div_ceil(CHUNK).max(1);
    let sum_sq = Tensor::zeros(DType::F64, &[b], &Device::Cuda(dev.clone()))?;
    if b == 0 {
        return Ok((sum_sq, None));
    }
    let partial = dev.alloc(b * chunks * 8)?;
    let partial_bad = dev.alloc(b * chunks * 8)?;
    let bad = dev.alloc(b * 8)?;
    // 16-byte vector loads where every row starts 16-byte aligned (CHUNK elements are a whole
    // number of vectors in every dtype).
    let vec =
        (p * g.dtype().size_in_bytes()).is_multiple_of(16) && g.cuda_ptr()?.is_multiple_of(16);
    let rows_y = b.min(65_535) as u32;
    let cfg = LaunchConfig {
        grid: (chunks as u32, rows_y, 1),
        block: (BLOCK, 1, 1),
        shared_bytes: 0,
    };
    let n_b = i64::try_from(b).map_err(|_| Error::Shape("batch too large".into()))?;
    let n_p = i64::try_from(p).map_err(|_| Error::Shape("row too large".into()))?;
    dev.launch(
        kernel_source(g.dtype()),
        cfg,
        &[
            KernelArg::Ptr(g.cuda_ptr()?),
            KernelArg::I64(n_b),
            KernelArg::I64(n_p),
            KernelArg::I64(CHUNK as i64),
            KernelArg::Ptr(partial.ptr()),
            KernelArg::Ptr(partial_bad.ptr()),
            KernelArg::I32(i32::from(vec)),
        ],
    )?;
    dev.launch(
        finish_source(g.dtype()),
        LaunchConfig::for_items(b, BLOCK)?,
        &[
            KernelArg::Ptr(partial.ptr()),
            KernelArg::Ptr(partial_bad.ptr()),
            KernelArg::I64(n_b),
            KernelArg::I64(chunks as i64),
            KernelArg::Ptr(sum_sq.cuda_ptr()?),
            KernelArg::Ptr(bad.ptr()),
        ],
    )?;
    Ok((sum_sq, Some(bad)))
}
