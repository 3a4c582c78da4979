//! Clipping. DP-SGD clips each sample's gradient to L2 norm at most `C` before aggregating:
//! the norm is taken over *all* of a model's parameter tensors together (flat clipping) or per
//! tensor (per-layer clipping), the clip factor is `min(1, C / (norm + 1e-6))` as Opacus (NaN
//! where the norm is NaN, so that such a sample makes the aggregate NaN and never enters it
//! unclipped; 0 where it is infinite), and the factors then scale the per-sample gradients on load inside the aggregate (sum, mean, median,
//! or any user reduction that takes them as a `PerSample` input). Element-wise value clipping
//! (to `[-c, c]`, or to a fraction of each column's largest magnitude) is here too.

use psg_macros::batch_reduce;
use psg_runtime::{
    CudaDevice, DType, Device, Error, KernelArg, KernelSource, LaunchConfig, Result, Tensor,
};
use std::sync::OnceLock;

use crate::rows;

/// Checks that a set of per-sample tensors share their batch size, device and accumulator type.
fn check_set(op: &str, grads: &[&Tensor]) -> Result<(usize, Device, DType)> {
    let first = grads.first().ok_or_else(|| {
        Error::InvalidParameter(format!(
            "{op}: the set of per-sample gradient tensors is empty; pass at least one"
        ))
    })?;
    let b = crate::as_op(op, first.batch_size())?;
    let device = first.device();
    let acc = first.dtype().accumulator();
    for (i, t) in grads.iter().enumerate() {
        let bi = crate::as_op(op, t.batch_size())?;
        if bi != b {
            return Err(Error::Shape(format!(
                "{op}: tensor #{i} has batch size {bi} but tensor #0 has {b}; every per-sample tensor of one batch has the same first dimension"
            )));
        }
        if !t.device().same_memory_space(&device) {
            return Err(Error::DeviceMismatch(format!(
                "{op}: tensor #{i} is on {} but tensor #0 is on {}; move them to one device",
                t.device().short_name(),
                device.short_name()
            )));
        }
        if t.dtype().accumulator() != acc {
            return Err(Error::DType(format!(
                "{op}: tensor #{i} is {} but tensor #0 is {}; mix f64 with f64 only",
                t.dtype(),
                first.dtype()
            )));
        }
    }
    Ok((b, device, acc))
}

/// The per-tensor sums of squares of each sample, on the host, in f64 (the CPU path; the GPU's
/// stay on the device, see `norms_cuda`).
fn host_sums_of_squares(grads: &[&Tensor]) -> Result<Vec<Vec<f64>>> {
    grads
        .iter()
        .map(|g| host_f64(&rows::sums_of_squares(g)?))
        .collect()
}

fn host_f64(t: &Tensor) -> Result<Vec<f64>> {
    match t.dtype() {
        DType::F64 => t.to_vec::<f64>(),
        _ => Ok(t.to_vec::<f32>()?.into_iter().map(f64::from).collect()),
    }
}

fn to_tensor(values: &[f64], acc: DType, device: &Device) -> Result<Tensor> {
    let n = [values.len()];
    match acc {
        DType::F64 => Tensor::from_slice(values, &n, device),
        _ => Tensor::from_vec(
            values.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
            &n,
            device,
        ),
    }
}

/// The device-side clipping kernels (`clip.cu`) for an accumulator dtype: (add, sqrt, factors).
fn clip_kernels(acc: DType) -> [&'static KernelSource; 3] {
    static SOURCES: OnceLock<Vec<[KernelSource; 3]>> = OnceLock::new();
    let all = SOURCES.get_or_init(|| {
        [psg_codegen::DType::F32, psg_codegen::DType::F64]
            .iter()
            .map(|&d| {
                let names = ["norm_add", "norm_sqrt", "factors"]
                    .map(|k| format!("psg_clip_{k}_{}", d.name()));
                let source = format!(
                    "// psg-ops clipping, accumulator {}.\n{}{}",
                    d.name(),
                    psg_codegen::cuda::prelude(d),
                    include_str!("clip.cu")
                        .replace("CLIP_NORM_ADD", &names[0])
                        .replace("CLIP_NORM_SQRT", &names[1])
                        .replace("CLIP_FACTORS", &names[2])
                );
                names.map(|n| KernelSource::new_owned(n, source.clone()))
            })
            .collect()
    });
    let [a, s, f] = &all[usize::from(acc == DType::F64)];
    [a, s, f]
}

/// The CUDA sources of the clipping kernels, for the NVRTC check.
pub fn clip_kernel_sources() -> Vec<&'static KernelSource> {
    [DType::F32, DType::F64]
        .into_iter()
        .flat_map(clip_kernels)
        .collect()
}

/// Each sample's norm over `sums` (per-sample sums of squares, `[B]` each, on one CUDA device),
/// computed there: `sqrt` of their f64 sum in order, in `acc`. No host round trip.
fn norms_cuda(dev: &CudaDevice, sums: &[Tensor], b: usize, acc: DType) -> Result<Tensor> {
    // Each tensor's sums were computed on its own handle (stream).
    let _order = dev.order_with_others(&sums.iter().collect::<Vec<_>>())?;
    let device = Device::Cuda(dev.clone());
    let [add, sqrt, _] = clip_kernels(acc);
    let n_b = KernelArg::I64(b as i64);
    let cfg = LaunchConfig::for_items(b, 256)?;
    let total = Tensor::zeros(DType::F64, &[b], &device)?;
    for s in sums {
        let args = [
            KernelArg::Ptr(s.cuda_ptr()?),
            KernelArg::Ptr(total.cuda_ptr()?),
            n_b,
        ];
        dev.launch(add, cfg, &args)?;
    }
    let norms = Tensor::uninit(acc, &[b], &device)?;
    let args = [
        KernelArg::Ptr(total.cuda_ptr()?),
        KernelArg::Ptr(norms.cuda_ptr()?),
        n_b,
    ];
    dev.launch(sqrt, cfg, &args)?;
    Ok(norms)
}

/// Each sample's L2 norm over all the given tensors together (flat clipping): `[B]`, in the
/// accumulator dtype, on the tensors' device. On a GPU nothing waits for it (no host round trip).
pub fn per_sample_norms(grads: &[&Tensor]) -> Result<Tensor> {
    let (b, device, acc) = check_set("per_sample_norms", grads)?;
    if let Device::Cuda(dev) = &device {
        if b == 0 {
            return Tensor::zeros(acc, &[0], &device);
        }
        let sums = grads
            .iter()
            .map(|g| rows::sums_of_squares(g))
            .collect::<Result<Vec<_>>>()?;
        return norms_cuda(dev, &sums, b, acc);
    }
    let mut total = psg_runtime::host_filled(b, 0.0f64)?;
    for sums in host_sums_of_squares(grads)? {
        for (t, s) in total.iter_mut().zip(sums) {
            *t += s;
        }
    }
    let norms: Vec<f64> = total.into_iter().map(f64::sqrt).collect();
    to_tensor(&norms, acc, &device)
}

/// Each sample's L2 norm within each tensor (per-layer clipping): one `[B]` tensor per input.
pub fn per_layer_norms(grads: &[&Tensor]) -> Result<Vec<Tensor>> {
    let (b, device, acc) = check_set("per_layer_norms", grads)?;
    if let Device::Cuda(dev) = &device {
        return grads
            .iter()
            .map(|g| {
                if b == 0 {
                    return Tensor::zeros(acc, &[0], &device);
                }
                norms_cuda(dev, &[rows::sums_of_squares(g)?], b, acc)
            })
            .collect();
    }
    host_sums_of_squares(grads)?
        .into_iter()
        .map(|sums| {
            to_tensor(
                &sums.into_iter().map(f64::sqrt).collect::<Vec<_>>(),
                acc,
                &device,
            )
        })
        .collect()
}

fn check_max_norm(max_norm: f64) -> Result<()> {
    if max_norm.is_finite() && max_norm > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidParameter(format!(
            "clipping: the clip norm C must be a finite number > 0, got {max_norm:?}"
        )))
    }
}

/// Clip factors `min(1, C / (norm + 1e-6))` (Opacus' formula) for per-sample norms `[B]`,
/// computed in the norms' dtype: `[B]`, same dtype and device.
///
/// A NaN norm (a sample with a NaN anywhere in the set) gives a NaN factor, as Opacus'
/// `clamp(max=1)` does: the sample then makes every aggregate it enters NaN instead of entering
/// it unclipped, which would break the sensitivity bound that DP-SGD's epsilon rests on. To drop
/// such samples instead, apply [`crate::apply_nonfinite_policy`] with
/// [`crate::NonFinite::DropSamples`] first. An infinite norm gives a factor of 0.
pub fn clip_factors(norms: &Tensor, max_norm: f64) -> Result<Tensor> {
    check_max_norm(max_norm)?;
    if norms.shape().len() != 1 {
        return Err(Error::Shape(format!(
            "clip_factors: norms must have shape [B], got {:?}",
            norms.shape()
        )));
    }
    // In f32 a C that overflows would make an infinite norm's factor inf / inf, a NaN; one that
    // underflows would zero every sample.
    fits_f32("clipping", "the clip norm C", max_norm, norms.dtype())?;
    let device = norms.device();
    if let (Device::Cuda(dev), DType::F32 | DType::F64) = (&device, norms.dtype()) {
        // The same arithmetic on the device: nothing waits for it.
        let b = norms.shape()[0];
        let factors = Tensor::uninit(norms.dtype(), norms.shape(), &device)?;
        if b > 0 {
            let [_, _, kernel] = clip_kernels(norms.dtype());
            let args = [
                KernelArg::Ptr(norms.cuda_ptr()?),
                KernelArg::Ptr(factors.cuda_ptr()?),
                KernelArg::I64(b as i64),
                KernelArg::F64(max_norm),
            ];
            dev.launch(kernel, LaunchConfig::for_items(b, 256)?, &args)?;
        }
        return Ok(factors);
    }
    match norms.dtype() {
        DType::F64 => {
            let f: Vec<f64> = norms
                .to_vec::<f64>()?
                .into_iter()
                .map(|n| clip_factor(max_norm, n))
                .collect();
            Tensor::from_vec(f, norms.shape(), &device)
        }
        DType::F32 => {
            let c = max_norm as f32;
            let f: Vec<f32> = norms
                .to_vec::<f32>()?
                .into_iter()
                .map(|n| clip_factor_f32(c, n))
                .collect();
            Tensor::from_vec(f, norms.shape(), &device)
        }
        other => Err(Error::DType(format!(
            "clip_factors: norms are {other}; norms come in the accumulator dtype (f32 or f64)"
        ))),
    }
}

/// `min(1, c / (norm + 1e-6))` in f64, NaN for a NaN norm (not `f.min(1.0)`, which is 1
/// there); the device's `CLIP_FACTORS` computes the same.
fn clip_factor(c: f64, norm: f64) -> f64 {
    let f = c / (norm + 1e-6);
    if f >= 1.0 {
        1.0
    } else {
        f
    }
}

/// [`clip_factor`] in f32.
fn clip_factor_f32(c: f32, norm: f32) -> f32 {
    let f = c / (norm + 1e-6);
    if f >= 1.0 {
        1.0
    } else {
        f
    }
}

/// Flat clipping of a set of per-sample tensors to norm `max_norm`: the clip factor of each
/// sample, `[B]`.
pub fn flat_clip_factors(grads: &[&Tensor], max_norm: f64) -> Result<Tensor> {
    check_max_norm(max_norm)?;
    clip_factors(&per_sample_norms(grads)?, max_norm)
}

/// Per-layer clipping: the clip factors of each tensor with its own clip norm `max_norms[i]`.
/// The sum-type aggregates of the clipped tensors then have L2 sensitivity
/// `sqrt(sum_i max_norms[i]^2)`.
pub fn per_layer_clip_factors(grads: &[&Tensor], max_norms: &[f64]) -> Result<Vec<Tensor>> {
    if grads.len() != max_norms.len() {
        return Err(Error::InvalidParameter(format!(
            "per_layer_clip_factors: {} tensors but {} clip norms; give one clip norm per tensor",
            grads.len(),
            max_norms.len()
        )));
    }
    max_norms.iter().try_for_each(|&c| check_max_norm(c))?;
    per_layer_norms(grads)?
        .iter()
        .zip(max_norms)
        .map(|(n, &c)| clip_factors(n, c))
        .collect()
}

/// What a clipped mean divides by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Denominator {
    /// The batch's own size B.
    BatchSize,
    /// An expected batch size (sample rate times dataset size), as Opacus does under Poisson
    /// sampling, where B varies from step to step.
    Expected(f64),
}

#[batch_reduce(crate = "psg_runtime")]
fn scaled_sum(g: Batch, factors: PerSample) -> f32 {
    g.zip(factors).map(|x, f| x * f).sum()
}

#[batch_reduce(crate = "psg_runtime")]
fn scaled_sum_over(g: Batch, factors: PerSample, denominator: f64) -> f32 {
    g.zip(factors).map(|x, f| x * f).sum() / denominator
}

#[batch_reduce(crate = "psg_runtime")]
fn scaled_median(g: Batch, factors: PerSample) -> f32 {
    g.zip(factors).map(|x, f| x * f).median()
}

/// Sum over the batch axis of the clipped per-sample gradients `g[b] * factors[b]`.
pub fn clipped_sum(g: &Tensor, factors: &Tensor) -> Result<Tensor> {
    crate::as_op("clipped_sum", scaled_sum(g, factors))
}

/// Mean of the clipped per-sample gradients: their sum divided by B or an expected batch size.
pub fn clipped_mean(g: &Tensor, factors: &Tensor, denominator: Denominator) -> Result<Tensor> {
    let d = match denominator {
        Denominator::BatchSize => crate::as_op("clipped_mean", g.batch_size())? as f64,
        Denominator::Expected(d) if d.is_finite() && d > 0.0 => {
            fits_f32("clipped_mean", "the expected batch size", d, g.dtype())?;
            d
        }
        Denominator::Expected(d) => {
            return Err(Error::InvalidParameter(format!(
                "clipped_mean: the expected batch size must be a finite number > 0, got {d}"
            )))
        }
    };
    crate::as_op("clipped_mean", scaled_sum_over(g, factors, d))
}

/// Median over the batch axis of the clipped per-sample gradients.
pub fn clipped_median(g: &Tensor, factors: &Tensor) -> Result<Tensor> {
    crate::as_op("clipped_median", scaled_median(g, factors))
}

#[batch_reduce(crate = "psg_runtime")]
fn clamp_values(g: Batch, c: f64) -> Batch {
    g.map(|x| x.clamp(-c, c))
}

#[batch_reduce(crate = "psg_runtime")]
fn clamp_values_relative(g: Batch, fraction: f64) -> Batch {
    let bound = fraction * g.map(|x| x.abs()).max();
    g.map(|x| x.clamp(-bound, bound))
}

/// Element-wise value clipping of every per-sample gradient to `[-c, c]` (a tensor like `g`).
pub fn clip_values(g: &Tensor, c: f64) -> Result<Tensor> {
    if !(c.is_finite() && c > 0.0) {
        return Err(Error::InvalidParameter(format!(
            "clip_values: the bound c must be a finite number > 0, got {c:?}"
        )));
    }
    // In f32 the bound would be infinite (nothing clipped) or 0 (everything).
    fits_f32("clip_values", "the bound c", c, g.dtype())?;
    crate::as_op("clip_values", clamp_values(g, c))
}

/// Element-wise clipping relative to each column's largest magnitude: to
/// `[-fraction * max|x|, fraction * max|x|]` along the batch axis.
pub fn clip_values_relative(g: &Tensor, fraction: f64) -> Result<Tensor> {
    if !(fraction.is_finite() && fraction > 0.0) {
        return Err(Error::InvalidParameter(format!(
            "clip_values_relative: the fraction must be a finite number > 0 (1.0 changes nothing), got {fraction:?}"
        )));
    }
    fits_f32("clip_values_relative", "the fraction", fraction, g.dtype())?;
    crate::as_op("clip_values_relative", clamp_values_relative(g, fraction))
}

/// A positive parameter, checked in f64, must stay a positive finite number in f32 where data of
/// `dtype` computes in f32: otherwise it would silently become 0 or infinity.
pub(crate) fn fits_f32(op: &str, what: &str, value: f64, dtype: DType) -> Result<()> {
    let v32 = value as f32;
    // Normal f32 values only, as the message says: a subnormal one has lost its precision.
    if dtype.accumulator() == DType::F32 && !(v32.is_finite() && v32 >= f32::MIN_POSITIVE) {
        return Err(Error::InvalidParameter(format!(
            "{op}: {what} = {value:?} is {v32:?} in f32, the arithmetic of {dtype} data; give a value \
             between 1.2e-38 and 3.4e38, or f64 data"
        )));
    }
    Ok(())
}

pub(crate) fn defs() -> Vec<&'static psg_runtime::ReductionDef> {
    vec![
        &scaled_sum::DEF,
        &scaled_sum_over::DEF,
        &scaled_median::DEF,
        &clamp_values::DEF,
        &clamp_values_relative::DEF,
    ]
}
