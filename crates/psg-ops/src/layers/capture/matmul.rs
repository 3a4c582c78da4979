//! The matrix product the capture layers' forward and backward passes use:
//! `C[M, N] = op(a) op(b) (+ bias)`, where `op` transposes or not, on the CPU or a GPU.

use psg_runtime::cpu_pool;
use psg_runtime::{DType, Device, Error, KernelArg, KernelSource, LaunchConfig, Result, Tensor};
use rayon::prelude::*;

use crate::layers::inputs::{
    check_f32, cpu_f32, grid_blocks, int_arg, long_arg, ptr_arg, same_device,
};

static KERNEL: KernelSource = KernelSource::new_static("psg_matmul_f32", include_str!("matmul.cu"));

pub(crate) fn kernel_sources() -> Vec<&'static KernelSource> {
    vec![&KERNEL]
}

/// A matrix operand: a 2-D tensor read as is or transposed.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    pub tensor: &'a Tensor,
    pub transposed: bool,
}

impl Operand<'_> {
    /// (rows, columns) after the optional transpose.
    fn dims(&self, op: &str) -> Result<(usize, usize)> {
        match *self.tensor.shape() {
            [r, c] if self.transposed => Ok((c, r)),
            [r, c] => Ok((r, c)),
            ref s => Err(Error::Shape(format!(
                "{op}: a matrix operand must be 2-D, got {s:?}"
            ))),
        }
    }

    /// Strides (row, column) of the operand as read.
    fn strides(&self) -> (usize, usize) {
        let cols = self.tensor.shape()[1];
        if self.transposed {
            (1, cols)
        } else {
            (cols, 1)
        }
    }
}

/// `op(a) op(b) (+ bias[n])`: `[M, K] x [K, N] -> [M, N]`, FP32, on the operands' device.
pub(crate) fn matmul(a: Operand<'_>, b: Operand<'_>, bias: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "matmul";
    check_f32(OP, "a", a.tensor)?;
    check_f32(OP, "b", b.tensor)?;
    let device = same_device(OP, ("a", a.tensor), ("b", b.tensor))?;
    let ((m, k), (k2, n)) = (a.dims(OP)?, b.dims(OP)?);
    if k != k2 {
        return Err(Error::Shape(format!(
            "{OP}: inner dimensions differ ({m}x{k} times {k2}x{n})"
        )));
    }
    if let Some(bias) = bias {
        check_f32(OP, "bias", bias)?;
        same_device(OP, ("a", a.tensor), ("bias", bias))?;
        if bias.shape() != [n] {
            return Err(Error::Shape(format!(
                "{OP}: bias must be [{n}], got {:?}",
                bias.shape()
            )));
        }
    }
    let ((a_m, a_k), (b_k, b_n)) = (a.strides(), b.strides());
    match &device {
        Device::Cpu => {
            let (av, bv) = (cpu_f32(a.tensor)?, cpu_f32(b.tensor)?);
            let bias = bias.map(cpu_f32).transpose()?;
            let mut c = psg_runtime::host_zeros::<f32>(&[m, n])?;
            if n > 0 {
                cpu_pool::install(|| {
                    c.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
                        if b_n == 1 {
                            // Rows of b are contiguous: accumulate scaled rows (sums still run in k order).
                            for kk in 0..k {
                                let x = av[i * a_m + kk * a_k];
                                for (cj, &bj) in row.iter_mut().zip(&bv[kk * b_k..kk * b_k + n]) {
                                    *cj += x * bj;
                                }
                            }
                        } else {
                            for (j, cj) in row.iter_mut().enumerate() {
                                let mut s = 0.0f32;
                                for kk in 0..k {
                                    s += av[i * a_m + kk * a_k] * bv[kk * b_k + j * b_n];
                                }
                                *cj = s;
                            }
                        }
                        if let Some(bias) = bias {
                            for (cj, &bj) in row.iter_mut().zip(bias) {
                                *cj += bj;
                            }
                        }
                    })
                })?;
            }
            Tensor::from_vec(c, &[m, n], &device)
        }
        Device::Cuda(dev) => {
            if m == 0 || n == 0 || k == 0 {
                return match bias {
                    // With k = 0 the product is zero and only the bias remains.
                    Some(bias) if m > 0 && n > 0 => {
                        let host = bias.to_vec::<f32>()?;
                        let rows: Vec<f32> = (0..m).flat_map(|_| host.iter().copied()).collect();
                        Tensor::from_vec(rows, &[m, n], &device)
                    }
                    _ => Tensor::zeros(DType::F32, &[m, n], &device),
                };
            }
            let c = Tensor::uninit(DType::F32, &[m, n], &device)?;
            let args = [
                ptr_arg(a.tensor)?,
                ptr_arg(b.tensor)?,
                bias.map_or(Ok(KernelArg::Ptr(0)), ptr_arg)?,
                ptr_arg(&c)?,
                int_arg(OP, "M", m)?,
                int_arg(OP, "N", n)?,
                int_arg(OP, "K", k)?,
                long_arg(OP, "stride", a_m)?,
                long_arg(OP, "stride", a_k)?,
                long_arg(OP, "stride", b_k)?,
                long_arg(OP, "stride", b_n)?,
            ];
            let blocks = m.div_ceil(64) * n.div_ceil(64);
            let cfg = LaunchConfig {
                grid: (grid_blocks(OP, blocks)?, 1, 1),
                block: (256, 1, 1),
                shared_bytes: 0,
            };
            dev.launch(&KERNEL, cfg, &args)?;
            Ok(c)
        }
    }
}
