//! The non-finite policy: what the operations do with NaN and infinite per-sample values.
//!
//! - [`NonFinite::Propagate`] (the default of every operation): values flow through the
//!   arithmetic; a column holding a NaN gets a NaN mean, median, ... (PyTorch's behaviour).
//! - [`NonFinite::DropSamples`]: a sample that holds any non-finite value in any of the given
//!   tensors is removed from all of them before aggregating (a batch of B becomes B' <= B).
//! - [`NonFinite::Error`]: the first non-finite value is an error that names the tensor, the
//!   sample and the coordinate.
//!
//! The policy is applied once, before any operation, by [`apply_nonfinite_policy`]; its scan is
//! the same on the CPU and the GPU, so both backends keep the same samples.

use psg_codegen::DType as GenDType;
use psg_runtime::{
    CudaDevice, DType, Device, Element, Error, KernelArg, KernelSource, LaunchConfig, Result,
    Tensor,
};
use std::sync::OnceLock;

use crate::rows::{self, ALL_FINITE};

/// What to do with non-finite (NaN, +-inf) per-sample values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NonFinite {
    /// Let them flow through the arithmetic (NaN in, NaN out).
    #[default]
    Propagate,
    /// Remove every sample that holds one, from every tensor of the set.
    DropSamples,
    /// Fail, naming the first one.
    Error,
}

/// Applies `policy` to a set of per-sample tensors of one batch. Returns `None` when the tensors
/// can be used as they are, or the tensors with the offending samples removed.
pub fn apply_nonfinite_policy(grads: &[&Tensor], policy: NonFinite) -> Result<Option<Vec<Tensor>>> {
    if policy == NonFinite::Propagate {
        return Ok(None);
    }
    let b = match grads.first() {
        Some(g) => crate::as_op("apply_nonfinite_policy", g.batch_size())?,
        None => return Ok(None),
    };
    let mut bad_sample = psg_runtime::host_filled(b, false)?;
    for (t, g) in grads.iter().enumerate() {
        let first_bad = crate::as_op("apply_nonfinite_policy", rows::scan(g))?.first_bad;
        if first_bad.len() != b {
            return Err(Error::Shape(format!(
                "apply_nonfinite_policy: tensor #{t} has batch size {} but tensor #0 has {b}; \
                 pass the per-sample tensors of one batch, which share their first dimension",
                first_bad.len()
            )));
        }
        for (sample, &coord) in first_bad.iter().enumerate() {
            if coord == ALL_FINITE {
                continue;
            }
            if policy == NonFinite::Error {
                return Err(Error::NonFinite {
                    tensor: t,
                    sample,
                    coordinate: coord as usize,
                });
            }
            bad_sample[sample] = true;
        }
    }
    if !bad_sample.contains(&true) {
        return Ok(None);
    }
    let keep: Vec<usize> = (0..b).filter(|&s| !bad_sample[s]).collect();
    grads
        .iter()
        .map(|g| gather_rows(g, &keep))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// The rows `keep` of `g`, in that order.
pub fn gather_rows(g: &Tensor, keep: &[usize]) -> Result<Tensor> {
    let b = crate::as_op("gather_rows", g.batch_size())?;
    if let Some(&bad) = keep.iter().find(|&&i| i >= b) {
        return Err(Error::InvalidParameter(format!(
            "gather_rows: row {bad} is outside [0, {b})"
        )));
    }
    let mut shape = g.shape().to_vec();
    shape[0] = keep.len();
    match g.device() {
        Device::Cpu => match g.dtype() {
            DType::F32 => gather_cpu::<f32>(g, keep, &shape),
            DType::F64 => gather_cpu::<f64>(g, keep, &shape),
            DType::F16 => gather_cpu::<half::f16>(g, keep, &shape),
            DType::BF16 => gather_cpu::<half::bf16>(g, keep, &shape),
        },
        Device::Cuda(dev) => gather_cuda(&dev, g, keep, &shape),
    }
}

fn gather_cpu<T: Element>(g: &Tensor, keep: &[usize], shape: &[usize]) -> Result<Tensor> {
    let p = g.per_sample_len();
    let data = g.as_cpu_slice::<T>()?;
    // Rows may repeat: the output can be larger than g. Fallible, as any host allocation sized
    // by the caller.
    let mut out = psg_runtime::host_zeros::<T>(shape)?;
    if p > 0 {
        for (dst, &row) in out.chunks_exact_mut(p).zip(keep) {
            dst.copy_from_slice(&data[row * p..(row + 1) * p]);
        }
    }
    Tensor::from_vec(out, shape, &Device::Cpu)
}

fn gather_source(dtype: DType) -> &'static KernelSource {
    static SOURCES: OnceLock<Vec<KernelSource>> = OnceLock::new();
    let all = SOURCES.get_or_init(|| {
        GenDType::ALL
            .iter()
            .map(|&d| {
                let name = format!("psg_gather_rows_{}", d.name());
                let source = format!(
                    "// psg-ops row gather, input {}.\n{}\nextern \"C\" __global__ void {name}(const psg_elem* __restrict__ g, const long long* __restrict__ rows, long long n_rows, long long n_p, psg_elem* __restrict__ out) {{\n    const long long n = n_rows * n_p;\n    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {{\n        out[i] = g[rows[i / n_p] * n_p + i % n_p];\n    }}\n}}\n",
                    d.name(),
                    psg_codegen::cuda::prelude(d),
                );
                KernelSource::new_owned(name, source)
            })
            .collect()
    });
    &all[dtype.index()]
}

/// The CUDA sources of the gather kernels, for the NVRTC check.
pub fn gather_kernel_sources() -> Vec<&'static KernelSource> {
    DType::ALL.iter().map(|&d| gather_source(d)).collect()
}

fn gather_cuda(dev: &CudaDevice, g: &Tensor, keep: &[usize], shape: &[usize]) -> Result<Tensor> {
    let device = Device::Cuda(dev.clone());
    let out = Tensor::zeros(g.dtype(), shape, &device)?;
    let p = g.per_sample_len();
    let n = keep.len() * p;
    if n == 0 {
        return Ok(out);
    }
    let rows: Vec<u8> = keep
        .iter()
        .flat_map(|&r| (r as i64).to_le_bytes())
        .collect();
    let mut rows_dev = dev.alloc(rows.len())?;
    dev.htod(&rows, &mut rows_dev)?;
    let blocks = n.div_ceil(256).min(65_535 * 16);
    dev.launch(
        gather_source(g.dtype()),
        LaunchConfig {
            grid: (blocks as u32, 1, 1),
            block: (256, 1, 1),
            shared_bytes: 0,
        },
        &[
            KernelArg::Ptr(g.cuda_ptr()?),
            KernelArg::Ptr(rows_dev.ptr()),
            KernelArg::I64(keep.len() as i64),
            KernelArg::I64(p as i64),
            KernelArg::Ptr(out.cuda_ptr()?),
        ],
    )?;
    // The row indices must outlive the launch: wait before freeing them.
    dev.synchronize()?;
    Ok(out)
}
