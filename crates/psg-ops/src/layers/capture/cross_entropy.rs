//! Softmax cross-entropy: the loss that starts the backward pass. Its gradient is that of the
//! *summed* loss, so the gradient each layer captures for sample b is the gradient of sample b's
//! own loss: what per-sample gradients are made of.

use psg_runtime::cpu_pool;
use psg_runtime::{DType, Device, Error, KernelArg, KernelSource, LaunchConfig, Result, Tensor};
use rayon::prelude::*;

use crate::layers::inputs::{
    check_f32, cpu_f32, grid_blocks, int_arg, long_arg, ptr_arg, upload_i32,
};

const OP: &str = "softmax_cross_entropy";

static KERNEL: KernelSource =
    KernelSource::new_static("psg_softmax_xent_f32", include_str!("cross_entropy.cu"));

pub(crate) fn kernel_sources() -> Vec<&'static KernelSource> {
    vec![&KERNEL]
}

/// The per-sample losses and the gradient of their sum with respect to the logits.
#[derive(Clone, Debug)]
pub struct CrossEntropy {
    /// `[B]`: sample b's loss `logsumexp(z_b) - z_b[label_b]`.
    pub losses: Tensor,
    /// `[B, C]`: `softmax(z_b) - onehot(label_b)`, the gradient of the summed loss.
    pub grad_logits: Tensor,
}

impl CrossEntropy {
    /// The mean loss over the batch (0 for an empty batch), on the host.
    pub fn mean_loss(&self) -> Result<f64> {
        let l = self.losses.to_vec::<f32>()?;
        Ok(if l.is_empty() {
            0.0
        } else {
            l.iter().map(|&v| f64::from(v)).sum::<f64>() / l.len() as f64
        })
    }
}

/// Softmax cross-entropy of `logits` `[B, C]` (f32, C >= 1) against `labels` (B class indices,
/// each `< C`, on the host).
pub fn softmax_cross_entropy(logits: &Tensor, labels: &[u32]) -> Result<CrossEntropy> {
    check_f32(OP, "the logits", logits)?;
    let (b, c) = match *logits.shape() {
        [b, c] if c > 0 => (b, c),
        ref s => {
            return Err(Error::Shape(format!(
                "{OP}: the logits must be [B, C] with C >= 1, got {s:?}"
            )))
        }
    };
    if labels.len() != b {
        return Err(Error::Shape(format!(
            "{OP}: {} labels for {b} samples",
            labels.len()
        )));
    }
    if let Some((i, &y)) = labels.iter().enumerate().find(|(_, &y)| y as usize >= c) {
        return Err(Error::InvalidParameter(format!(
            "{OP}: label {y} of sample {i} is not a class of {c}"
        )));
    }
    let device = logits.device();
    match &device {
        Device::Cpu => {
            let z = cpu_f32(logits)?;
            let mut grad = psg_runtime::host_zeros::<f32>(&[b, c])?;
            let losses: Vec<f32> = cpu_pool::install(|| {
                grad.par_chunks_mut(c)
                    .zip(z.par_chunks(c))
                    .zip(labels)
                    .map(|((gr, zr), &y)| {
                        let mx = zr[1..]
                            .iter()
                            .fold(zr[0], |m, &v| if v > m { v } else { m });
                        let sum: f32 = zr.iter().map(|&v| (v - mx).exp()).sum();
                        for (j, (gj, &v)) in gr.iter_mut().zip(zr).enumerate() {
                            *gj = (v - mx).exp() / sum - if j == y as usize { 1.0 } else { 0.0 };
                        }
                        (sum.ln() + mx) - zr[y as usize]
                    })
                    .collect()
            })?;
            Ok(CrossEntropy {
                losses: Tensor::from_vec(losses, &[b], &device)?,
                grad_logits: Tensor::from_vec(grad, &[b, c], &device)?,
            })
        }
        Device::Cuda(dev) => {
            let losses = Tensor::uninit(DType::F32, &[b], &device)?;
            let grad_logits = Tensor::uninit(DType::F32, &[b, c], &device)?;
            if b > 0 {
                let labels: Vec<i32> = labels.iter().map(|&y| y as i32).collect();
                let labels = upload_i32(dev, &labels)?;
                let args = [
                    ptr_arg(logits)?,
                    KernelArg::Ptr(labels.ptr()),
                    ptr_arg(&losses)?,
                    ptr_arg(&grad_logits)?,
                    long_arg(OP, "B", b)?,
                    int_arg(OP, "C", c)?,
                ];
                let cfg = LaunchConfig {
                    grid: (grid_blocks(OP, b.div_ceil(128))?, 1, 1),
                    block: (128, 1, 1),
                    shared_bytes: 0,
                };
                dev.launch(&KERNEL, cfg, &args)?;
            }
            Ok(CrossEntropy {
                losses,
                grad_logits,
            })
        }
    }
}

/// The predicted class of each row of `logits` `[B, C]` (the first maximum), on the host.
pub fn predictions(logits: &Tensor) -> Result<Vec<usize>> {
    check_f32("predictions", "the logits", logits)?;
    let c = match *logits.shape() {
        [_, c] if c > 0 => c,
        ref s => {
            return Err(Error::Shape(format!(
                "predictions: the logits must be [B, C] with C >= 1, got {s:?}"
            )))
        }
    };
    let z = logits.to_vec::<f32>()?;
    Ok(z.chunks_exact(c)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(0, |best, (j, &v)| if v > row[best] { j } else { best })
        })
        .collect())
}
