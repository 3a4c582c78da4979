//! LayerNorm's affine part: `y = x̂ * weight + bias` over the last dimension D, where `x̂` is the
//! normalized input `(x - mean) / sqrt(var + eps)` the forward pass computes. From the captured `x̂`
//! and output gradient `gy` (both `[B, ..., D]`), one launch gives the per-sample gradients of the
//! weight and the bias (`[B, D]` each) and their batch sums. `x̂` is the activation the affine
//! parameters see, so it is what a LayerNorm captures (the normalization itself has no
//! parameters).

use psg_runtime::cpu_pool;
use psg_runtime::{CudaDevice, DType, Device, Error, KernelSource, LaunchConfig, Result, Tensor};
use rayon::prelude::*;

use super::grads::{LayerGrads, ParamGrad, Sink};
use super::inputs::{check_f32, cpu_f32, grid_blocks, int_arg, long_arg, ptr_arg, same_device};
use super::linear::batch_sum;

const OP: &str = "layer_norm";

static KERNEL: KernelSource =
    KernelSource::new_static("psg_layer_norm_f32", include_str!("layer_norm.cu"));

/// The CUDA source of the LayerNorm kernel, for the NVRTC check.
pub(crate) fn kernel_sources() -> Vec<&'static KernelSource> {
    vec![&KERNEL]
}

/// Per-sample and batch gradients of a LayerNorm's weight and bias (`[D]` each; per-sample
/// `[B, D]`) from the normalized input `x_hat` and the output gradient `gy`, both f32 of one shape
/// `[B, ..., D]` on one device.
///
/// ```
/// use psg_ops::layers::{layer_norm, Sink};
/// use psg_runtime::{Device, Tensor};
///
/// // B = 1, T = 2, D = 2.
/// let x_hat = Tensor::from_slice(&[1.0f32, -1.0, -1.0, 1.0], &[1, 2, 2], &Device::Cpu)?;
/// let gy = Tensor::from_slice(&[0.5f32, 2.0, 1.5, 3.0], &[1, 2, 2], &Device::Cpu)?;
/// let grads = layer_norm(&x_hat, &gy, Sink::Keep)?;
/// assert_eq!(grads.weight().unwrap().batch.to_vec::<f32>()?, vec![-1.0, 1.0]);
/// assert_eq!(grads.bias().unwrap().batch.to_vec::<f32>()?, vec![2.0, 5.0]);
/// # Ok::<(), psg_runtime::Error>(())
/// ```
pub fn layer_norm(x_hat: &Tensor, gy: &Tensor, sink: Sink<'_>) -> Result<LayerGrads> {
    check_f32(OP, "the normalized input x_hat", x_hat)?;
    check_f32(OP, "the output gradient gy", gy)?;
    let shape = x_hat.shape();
    if shape.len() < 2 || shape != gy.shape() {
        return Err(Error::Shape(format!(
            "{OP}: x_hat {shape:?} and gy {:?} must have one shape [B, ..., D]",
            gy.shape()
        )));
    }
    let device = same_device(OP, ("x_hat", x_hat), ("gy", gy))?;
    let (b, d) = (shape[0], shape[shape.len() - 1]);
    let t = shape[1..shape.len() - 1].iter().product::<usize>();
    let [w, wb, bi, bb] = match &device {
        Device::Cpu => cpu(x_hat, gy, b, t, d)?,
        Device::Cuda(dev) => {
            let _order = dev.order_with_others(&[x_hat, gy])?;
            cuda(dev, x_hat, gy, b, t, d)?
        }
    };
    Ok(LayerGrads {
        params: vec![
            ParamGrad {
                name: "weight",
                per_sample: sink.finish_dense(w)?,
                batch: wb,
            },
            ParamGrad {
                name: "bias",
                per_sample: sink.finish_dense(bi)?,
                batch: bb,
            },
        ],
    })
}

/// [per-sample weight, batch weight, per-sample bias, batch bias].
fn cpu(x_hat: &Tensor, gy: &Tensor, b: usize, t: usize, d: usize) -> Result<[Tensor; 4]> {
    let (xv, gv) = (cpu_f32(x_hat)?, cpu_f32(gy)?);
    let mut ps = psg_runtime::host_zeros::<f32>(&[b, 2, d])?;
    if d > 0 {
        cpu_pool::install(|| {
            ps.par_chunks_mut(2 * d).enumerate().for_each(|(s, out)| {
                let (w, bias) = out.split_at_mut(d);
                for tt in 0..t {
                    let r = (s * t + tt) * d;
                    for col in 0..d {
                        let g = gv[r + col];
                        w[col] += g * xv[r + col];
                        bias[col] += g;
                    }
                }
            })
        })?;
    }
    let (mut pw, mut pb) = (Vec::with_capacity(b * d), Vec::with_capacity(b * d));
    for row in ps.chunks_exact(2 * d.max(1)).take(b) {
        pw.extend_from_slice(&row[..d]);
        pb.extend_from_slice(&row[d..2 * d]);
    }
    let (bw, bb) = (batch_sum(&pw, b, d)?, batch_sum(&pb, b, d)?);
    let cpu = Device::Cpu;
    Ok([
        Tensor::from_vec(pw, &[b, d], &cpu)?,
        Tensor::from_vec(bw, &[d], &cpu)?,
        Tensor::from_vec(pb, &[b, d], &cpu)?,
        Tensor::from_vec(bb, &[d], &cpu)?,
    ])
}

fn cuda(
    dev: &CudaDevice,
    x_hat: &Tensor,
    gy: &Tensor,
    b: usize,
    t: usize,
    d: usize,
) -> Result<[Tensor; 4]> {
    let device = Device::Cuda(dev.clone());
    let work = b > 0 && d > 0;
    let make = |shape: &[usize]| {
        if work {
            Tensor::uninit(DType::F32, shape, &device)
        } else {
            Tensor::zeros(DType::F32, shape, &device)
        }
    };
    let out = [make(&[b, d])?, make(&[d])?, make(&[b, d])?, make(&[d])?];
    if !work {
        return Ok(out);
    }
    let args = [
        ptr_arg(x_hat)?,
        ptr_arg(gy)?,
        ptr_arg(&out[0])?,
        ptr_arg(&out[2])?,
        ptr_arg(&out[1])?,
        ptr_arg(&out[3])?,
        long_arg(OP, "B", b)?,
        long_arg(OP, "T", t)?,
        int_arg(OP, "D", d)?,
    ];
    let cfg = LaunchConfig {
        grid: (grid_blocks(OP, d.div_ceil(128))?, 1, 1),
        block: (128, 1, 1),
        shared_bytes: 0,
    };
    dev.launch(&KERNEL, cfg, &args)?;
    Ok(out)
}
