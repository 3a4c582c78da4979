//! Linear: `y = a W^T (+ bias)` with `a` of shape `[B, in]` or `[B, T, in]`. From the captured
//! input `a` and output gradient `g` (`[B, out]` or `[B, T, out]`), one launch gives the per-sample
//! weight gradients `W_b = sum_t g[b, t]^T a[b, t]` (`[B, out, in]`), their batch sum, and the same
//! for the bias (`sum_t g[b, t]`, `[B, out]`).
//!
//! On a GPU this is a tiled FP32 SGEMM (128 x 128 tiles, an 8 x 8 register block per thread,
//! 16-byte loads, double buffering) that loops over the samples inside each block, streams each
//! sample's tile out and keeps the running batch sum on chip; the blocks of the first column of
//! tiles also sum the rows of `g` they stage, for the bias (see `linear.cu`). On the CPU it is a
//! rayon loop over samples. The two agree to FP32 rounding (the GPU fuses multiply-adds).

use psg_runtime::cpu_pool;
use psg_runtime::{
    CudaDevice, DType, Device, Error, KernelArg, KernelSource, LaunchConfig, Result, Tensor,
};
use rayon::prelude::*;

use super::grads::{LayerGrads, ParamGrad, Sink};
use super::inputs::{
    aligned16, check_f32, cpu_f32, grid_blocks, int_arg, long_arg, ptr_arg, same_device, sm_count,
};

const OP: &str = "linear";
const TILE: usize = 128;
const THREADS: u32 = 256;
/// Output features per bias block.
const BIAS_COLUMNS: usize = 32;
/// Dynamic shared memory of the shared-batch variant: a 128 x 128 f32 tile.
const SHARED_BATCH_BYTES: u32 = (TILE * TILE * 4) as u32;
/// Dynamic shared memory of the 32-row k-tiles: two buffers of a 32 x 128 tile of each operand.
const K32_BYTES: u32 = (2 * 32 * 2 * TILE * 4) as u32;

/// Where a GPU block keeps its running batch sum while it loops over samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BatchSum {
    /// In registers (64 per thread besides the 64 accumulators): one block per SM.
    Registers,
    /// In shared memory (64 KiB per block): fewer registers, two blocks per SM.
    Shared,
}

/// How [`linear_with`] runs on a GPU. A tuning knob for benchmarks; [`linear`] uses
/// `LinearSchedule::default()`. Every schedule gives the same per-sample gradients; the batch
/// gradient's summation order depends on `splits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinearSchedule {
    /// Rows of `t` per shared-memory tile: 8, 16 or 32 (32 with the batch sum in registers).
    pub k_tile: usize,
    /// Where the running batch sum lives.
    pub batch_sum: BatchSum,
    /// Sample ranges per output tile (each a block; the last to finish adds the partial batch
    /// sums in order). `None`: enough to fill the GPU once.
    pub splits: Option<usize>,
}

impl Default for LinearSchedule {
    fn default() -> Self {
        LinearSchedule {
            k_tile: 16,
            batch_sum: BatchSum::Registers,
            splits: None,
        }
    }
}

macro_rules! linear_kernel {
    ($name:literal, $bias:literal, $bk:literal, $shared:literal, $min_blocks:literal) => {
        KernelSource::new_static(
            $name,
            concat!(
                "#define PSG_BIAS ",
                $bias,
                "\n#define PSG_BK ",
                $bk,
                "\n#define PSG_BATCH_IN_SHARED ",
                $shared,
                "\n#define PSG_MIN_BLOCKS ",
                $min_blocks,
                "\n#define PSG_LINEAR_NAME ",
                $name,
                "\n",
                include_str!("linear.cu")
            ),
        )
    };
}

/// Each schedule's kernel without and with the bias folded in.
static KERNELS: [[KernelSource; 2]; 5] = [
    [
        linear_kernel!("psg_linear_bk8_f32", "0", "8", "0", "1"),
        linear_kernel!("psg_linear_bk8_bias_f32", "1", "8", "0", "1"),
    ],
    [
        linear_kernel!("psg_linear_bk16_f32", "0", "16", "0", "1"),
        linear_kernel!("psg_linear_bk16_bias_f32", "1", "16", "0", "1"),
    ],
    [
        linear_kernel!("psg_linear_bk8_smem_f32", "0", "8", "1", "2"),
        linear_kernel!("psg_linear_bk8_smem_bias_f32", "1", "8", "1", "2"),
    ],
    [
        linear_kernel!("psg_linear_bk16_smem_f32", "0", "16", "1", "2"),
        linear_kernel!("psg_linear_bk16_smem_bias_f32", "1", "16", "1", "2"),
    ],
    [
        linear_kernel!("psg_linear_bk32_f32", "0", "32", "0", "1"),
        linear_kernel!("psg_linear_bk32_bias_f32", "1", "32", "0", "1"),
    ],
];

/// The CUDA sources of the Linear kernels, for the NVRTC check.
pub(crate) fn kernel_sources() -> Vec<&'static KernelSource> {
    KERNELS.iter().flatten().collect()
}

/// Per-sample and batch gradients of a Linear layer's weight (and bias, if `bias`) from its
/// captured input `a` (`[B, in]` or `[B, T, in]`) and output gradient `g` (`[B, out]` or
/// `[B, T, out]`), both f32 on one device; the per-sample gradients go where `sink` says.
///
/// Shapes: weight `[out, in]` (per-sample `[B, out, in]`), bias `[out]` (per-sample `[B, out]`).
///
/// ```
/// use psg_ops::layers::{linear, Sink};
/// use psg_runtime::{Device, Tensor};
///
/// // B = 2 samples, in = 2, out = 1.
/// let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2], &Device::Cpu)?;
/// let g = Tensor::from_slice(&[10.0f32, 100.0], &[2, 1], &Device::Cpu)?;
/// let grads = linear(&a, &g, true, Sink::Keep)?;
/// let w = grads.weight().unwrap();
/// assert_eq!(w.per_sample.dense().unwrap().to_vec::<f32>()?, vec![10.0, 20.0, 300.0, 400.0]);
/// assert_eq!(w.batch.to_vec::<f32>()?, vec![310.0, 420.0]);
/// assert_eq!(grads.bias().unwrap().batch.to_vec::<f32>()?, vec![110.0]);
///
/// // Straight into a reduction: the median of the per-sample weight gradients.
/// let med = linear(&a, &g, false, Sink::Reduce(&psg_ops::median))?;
/// assert_eq!(med.weight().unwrap().per_sample.reduced().unwrap().to_vec::<f32>()?, vec![155.0, 210.0]);
/// # Ok::<(), psg_runtime::Error>(())
/// ```
pub fn linear(a: &Tensor, g: &Tensor, bias: bool, sink: Sink<'_>) -> Result<LayerGrads> {
    linear_with(a, g, bias, sink, LinearSchedule::default())
}

/// [`linear`] with an explicit GPU schedule (checked everywhere, used on the GPU only).
pub fn linear_with(
    a: &Tensor,
    g: &Tensor,
    bias: bool,
    sink: Sink<'_>,
    schedule: LinearSchedule,
) -> Result<LayerGrads> {
    let dims = Dims::of(a, g)?;
    // The schedule is checked on every device, so that input accepted on the CPU is accepted on a
    // GPU too (the CPU itself ignores it).
    kernel_for(&schedule)?;
    if schedule.splits == Some(0) {
        return Err(Error::InvalidParameter(format!(
            "{OP}: LinearSchedule::splits must be at least 1 (or None to fill the GPU)"
        )));
    }
    let device = same_device(OP, ("the input a", a), ("the output gradient g", g))?;
    let raw = match &device {
        Device::Cpu => cpu(a, g, &dims, bias)?,
        Device::Cuda(dev) => {
            let _order = dev.order_with_others(&[a, g])?;
            cuda(dev, a, g, &dims, bias, schedule)?
        }
    };
    let mut params = vec![ParamGrad {
        name: "weight",
        per_sample: sink.finish_dense(raw.weight.0)?,
        batch: raw.weight.1,
    }];
    if let Some((per_sample, batch)) = raw.bias {
        params.push(ParamGrad {
            name: "bias",
            per_sample: sink.finish_dense(per_sample)?,
            batch,
        });
    }
    Ok(LayerGrads { params })
}

/// B, T, out (m) and in (n).
struct Dims {
    b: usize,
    t: usize,
    m: usize,
    n: usize,
}

impl Dims {
    fn of(a: &Tensor, g: &Tensor) -> Result<Dims> {
        check_f32(OP, "the input a", a)?;
        check_f32(OP, "the output gradient g", g)?;
        let (sa, sg) = (a.shape(), g.shape());
        let ok = match (sa.len(), sg.len()) {
            (2, 2) => sa[0] == sg[0],
            (3, 3) => sa[0] == sg[0] && sa[1] == sg[1],
            _ => false,
        };
        if !ok {
            return Err(Error::Shape(format!(
                "{OP}: the input a {sa:?} and output gradient g {sg:?} must be [B, in] and [B, out], \
                 or [B, T, in] and [B, T, out], with the same B (and T)"
            )));
        }
        let t = if sa.len() == 3 { sa[1] } else { 1 };
        let (m, n) = (sg[sg.len() - 1], sa[sa.len() - 1]);
        if m.checked_mul(n).is_none() {
            return Err(Error::Shape(format!(
                "{OP}: a weight of {m} x {n} has more elements than fit in memory"
            )));
        }
        Ok(Dims { b: sa[0], t, m, n })
    }
}

/// (per-sample, batch) of the weight and, if asked, the bias.
struct Raw {
    weight: (Tensor, Tensor),
    bias: Option<(Tensor, Tensor)>,
}

fn cpu(a: &Tensor, g: &Tensor, d: &Dims, bias: bool) -> Result<Raw> {
    let (av, gv) = (cpu_f32(a)?, cpu_f32(g)?);
    let (b, t, m, n) = (d.b, d.t, d.m, d.n);
    let mut ps = psg_runtime::host_zeros::<f32>(&[b, m, n])?;
    if m * n > 0 {
        cpu_pool::install(|| {
            ps.par_chunks_mut(m * n).enumerate().for_each(|(s, out)| {
                for tt in 0..t {
                    let r = s * t + tt;
                    let arow = &av[r * n..(r + 1) * n];
                    for (o, &go) in gv[r * m..(r + 1) * m].iter().enumerate() {
                        for (x, &ai) in out[o * n..(o + 1) * n].iter_mut().zip(arow) {
                            *x += go * ai;
                        }
                    }
                }
            })
        })?;
    }
    let batch = batch_sum(&ps, b, m * n)?;
    let cpu = Device::Cpu;
    let weight = (
        Tensor::from_vec(ps, &[b, m, n], &cpu)?,
        Tensor::from_vec(batch, &[m, n], &cpu)?,
    );
    let bias = if bias {
        let mut ps = psg_runtime::host_zeros::<f32>(&[b, m])?;
        if m > 0 {
            cpu_pool::install(|| {
                ps.par_chunks_mut(m).enumerate().for_each(|(s, out)| {
                    for tt in 0..t {
                        let r = s * t + tt;
                        for (x, &gi) in out.iter_mut().zip(&gv[r * m..(r + 1) * m]) {
                            *x += gi;
                        }
                    }
                })
            })?;
        }
        let batch = batch_sum(&ps, b, m)?;
        Some((
            Tensor::from_vec(ps, &[b, m], &cpu)?,
            Tensor::from_vec(batch, &[m], &cpu)?,
        ))
    } else {
        None
    };
    Ok(Raw { weight, bias })
}

/// The sum over samples (in sample order) of `per_sample[B, p]`, parallel over coordinates.
pub(crate) fn batch_sum(per_sample: &[f32], b: usize, p: usize) -> Result<Vec<f32>> {
    const CHUNK: usize = 4096;
    let mut out = psg_runtime::host_zeros::<f32>(&[p])?;
    cpu_pool::install(|| {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| {
                let lo = c * CHUNK;
                for s in 0..b {
                    let row = &per_sample[s * p + lo..s * p + lo + chunk.len()];
                    for (x, &v) in chunk.iter_mut().zip(row) {
                        *x += v;
                    }
                }
            })
    })?;
    Ok(out)
}

/// A schedule's kernels (without and with the bias), how many of its blocks share an SM, and its
/// dynamic shared memory.
struct Variant {
    kernels: &'static [KernelSource; 2],
    blocks_per_sm: usize,
    shared_bytes: u32,
}

fn kernel_for(schedule: &LinearSchedule) -> Result<Variant> {
    let (index, shared_bytes) = match (schedule.k_tile, schedule.batch_sum) {
        (8, BatchSum::Registers) => (0, 0),
        (16, BatchSum::Registers) => (1, 0),
        (8, BatchSum::Shared) => (2, SHARED_BATCH_BYTES),
        (16, BatchSum::Shared) => (3, SHARED_BATCH_BYTES),
        (32, BatchSum::Registers) => (4, K32_BYTES),
        (32, BatchSum::Shared) => {
            return Err(Error::InvalidParameter(format!(
                "{OP}: LinearSchedule::k_tile 32 keeps the batch sum in registers; \
                 use BatchSum::Registers, or k_tile 8 or 16 with BatchSum::Shared"
            )))
        }
        (k, _) => {
            return Err(Error::InvalidParameter(format!(
                "{OP}: LinearSchedule::k_tile must be 8, 16 or 32, got {k}"
            )))
        }
    };
    let blocks_per_sm = if schedule.batch_sum == BatchSum::Shared {
        2
    } else {
        1
    };
    Ok(Variant {
        kernels: &KERNELS[index],
        blocks_per_sm,
        shared_bytes,
    })
}

fn cuda(
    dev: &CudaDevice,
    a: &Tensor,
    g: &Tensor,
    d: &Dims,
    bias: bool,
    schedule: LinearSchedule,
) -> Result<Raw> {
    let variant = kernel_for(&schedule)?;
    let device = Device::Cuda(dev.clone());
    let (b, t, m, n) = (d.b, d.t, d.m, d.n);
    let gemm = b > 0 && t > 0 && m > 0 && n > 0;
    let bias_work = bias && b > 0 && t > 0 && m > 0;
    let make = |shape: &[usize], written: bool| {
        if written {
            Tensor::uninit(DType::F32, shape, &device)
        } else {
            Tensor::zeros(DType::F32, shape, &device)
        }
    };
    let weight = (make(&[b, m, n], gemm)?, make(&[m, n], gemm)?);
    let bias_out = if bias {
        Some((make(&[b, m], bias_work)?, make(&[m], bias_work)?))
    } else {
        None
    };

    let tiles = m.div_ceil(TILE) * n.div_ceil(TILE);
    let splits = match schedule.splits {
        Some(s) => s.clamp(1, b.max(1)),
        None => (sm_count(dev)? * variant.blocks_per_sm / tiles.max(1)).clamp(1, b.max(1)),
    };
    // The bias rides on the first column of weight tiles; without a weight (in = 0) it gets blocks
    // of its own.
    let (blocks, bias_mode) = match (gemm, bias_work) {
        (true, _) => (tiles * splits, i32::from(bias_work)),
        (false, true) => (m.div_ceil(BIAS_COLUMNS), 2),
        (false, false) => (0, 0),
    };
    if blocks == 0 {
        return Ok(Raw {
            weight,
            bias: bias_out,
        });
    }
    let null = KernelArg::Ptr(0);
    // The workspace of partial batch sums (weight, then bias) and the per-tile arrival counters
    // (zeroed).
    let (partial, arrivals) = if gemm && splits > 1 {
        (
            Some(dev.alloc(splits * (m * n + m) * 4)?),
            Some(dev.alloc_zeros(tiles * 4)?),
        )
    } else {
        (None, None)
    };
    let bias_partial = partial.as_ref().map_or(null, |p| {
        KernelArg::Ptr(p.ptr() + (splits * m * n * 4) as u64)
    });
    let vec_ok =
        m.is_multiple_of(4) && n.is_multiple_of(4) && aligned16(&[a, g, &weight.0, &weight.1])?;
    let (bias_ps, bias_batch) = match (&bias_out, bias_work) {
        (Some((p, s)), true) => (ptr_arg(p)?, ptr_arg(s)?),
        _ => (null, null),
    };
    let args = [
        ptr_arg(a)?,
        ptr_arg(g)?,
        if gemm { ptr_arg(&weight.0)? } else { null },
        if gemm { ptr_arg(&weight.1)? } else { null },
        partial.as_ref().map_or(null, |p| KernelArg::Ptr(p.ptr())),
        arrivals.as_ref().map_or(null, |p| KernelArg::Ptr(p.ptr())),
        bias_ps,
        bias_batch,
        bias_partial,
        long_arg(OP, "B", b)?,
        int_arg(OP, "T", t)?,
        int_arg(OP, "out", m)?,
        int_arg(OP, "in", n)?,
        int_arg(OP, "splits", splits)?,
        KernelArg::I32(i32::from(vec_ok)),
        KernelArg::I32(bias_mode),
    ];
    let cfg = LaunchConfig {
        grid: (grid_blocks(OP, blocks)?, 1, 1),
        block: (THREADS, 1, 1),
        shared_bytes: variant.shared_bytes,
    };
    let kernel = &variant.kernels[usize::from(bias_mode == 1)];
    dev.launch(kernel, cfg, &args)?;
    Ok(Raw {
        weight,
        bias: bias_out,
    })
}
