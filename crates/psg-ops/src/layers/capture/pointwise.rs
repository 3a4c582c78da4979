//! Element-wise operations of the capture layers (ReLU and its backward) and the SGD step, on the
//! CPU or a GPU.

use psg_runtime::cpu_pool;
use psg_runtime::{
    CudaDevice, DType, Device, Error, KernelArg, KernelSource, LaunchConfig, Result, Tensor,
};
use rayon::prelude::*;

use crate::layers::inputs::{check_f32, cpu_f32, grid_blocks, long_arg, ptr_arg, same_device};

static RELU_FORWARD: KernelSource =
    KernelSource::new_static("psg_relu_forward_f32", include_str!("pointwise.cu"));
static RELU_BACKWARD: KernelSource =
    KernelSource::new_static("psg_relu_backward_f32", include_str!("pointwise.cu"));
static AXPY: KernelSource = KernelSource::new_static("psg_axpy_f32", include_str!("pointwise.cu"));

pub(crate) fn kernel_sources() -> Vec<&'static KernelSource> {
    vec![&RELU_FORWARD, &RELU_BACKWARD, &AXPY]
}

/// Launches an element-wise kernel over `n` elements; `args` precede the count.
fn launch(
    dev: &CudaDevice,
    kernel: &KernelSource,
    mut args: Vec<KernelArg>,
    n: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    args.push(long_arg(kernel.name.as_ref(), "n", n)?);
    let blocks = n.div_ceil(256).min(1 << 16);
    let cfg = LaunchConfig {
        grid: (grid_blocks(&kernel.name, blocks)?, 1, 1),
        block: (256, 1, 1),
        shared_bytes: 0,
    };
    dev.launch(kernel, cfg, &args)
}

fn same_shape(op: &str, a: &Tensor, b: &Tensor) -> Result<Device> {
    check_f32(op, "the first input", a)?;
    check_f32(op, "the second input", b)?;
    if a.shape() != b.shape() {
        return Err(Error::Shape(format!(
            "{op}: shapes {:?} and {:?} differ",
            a.shape(),
            b.shape()
        )));
    }
    same_device(op, ("the first input", a), ("the second input", b))
}

/// `max(x, 0)` element-wise (NaN propagates).
pub(crate) fn relu_forward(x: &Tensor) -> Result<Tensor> {
    check_f32("relu", "the input", x)?;
    let device = x.device();
    match &device {
        Device::Cpu => {
            let xv = cpu_f32(x)?;
            let y: Vec<f32> = cpu_pool::install(|| {
                xv.par_iter()
                    .map(|&v| if v < 0.0 { 0.0 } else { v })
                    .collect()
            })?;
            Tensor::from_vec(y, x.shape(), &device)
        }
        Device::Cuda(dev) => {
            let y = Tensor::uninit(DType::F32, x.shape(), &device)?;
            launch(dev, &RELU_FORWARD, vec![ptr_arg(x)?, ptr_arg(&y)?], x.len())?;
            Ok(y)
        }
    }
}

/// ReLU's backward: `gy` where the forward input `x` was positive, else 0.
pub(crate) fn relu_backward(x: &Tensor, gy: &Tensor) -> Result<Tensor> {
    let device = same_shape("relu backward", x, gy)?;
    match &device {
        Device::Cpu => {
            let (xv, gv) = (cpu_f32(x)?, cpu_f32(gy)?);
            let gx: Vec<f32> = cpu_pool::install(|| {
                xv.par_iter()
                    .zip(gv)
                    .map(|(&v, &g)| if v > 0.0 { g } else { 0.0 })
                    .collect()
            })?;
            Tensor::from_vec(gx, x.shape(), &device)
        }
        Device::Cuda(dev) => {
            let gx = Tensor::uninit(DType::F32, x.shape(), &device)?;
            launch(
                dev,
                &RELU_BACKWARD,
                vec![ptr_arg(x)?, ptr_arg(gy)?, ptr_arg(&gx)?],
                x.len(),
            )?;
            Ok(gx)
        }
    }
}

/// One SGD step: `param - lr * direction` (a new tensor; f32, same shape and device).
pub fn sgd_step(param: &Tensor, direction: &Tensor, lr: f32) -> Result<Tensor> {
    let device = same_shape("sgd_step", param, direction)?;
    if !lr.is_finite() {
        return Err(Error::InvalidParameter(format!(
            "sgd_step: the learning rate must be finite, got {lr}"
        )));
    }
    let alpha = -lr;
    match &device {
        Device::Cpu => {
            let (pv, dv) = (cpu_f32(param)?, cpu_f32(direction)?);
            let out: Vec<f32> = cpu_pool::install(|| {
                pv.par_iter()
                    .zip(dv)
                    .map(|(&p, &d)| p + alpha * d)
                    .collect()
            })?;
            Tensor::from_vec(out, param.shape(), &device)
        }
        Device::Cuda(dev) => {
            let out = Tensor::uninit(DType::F32, param.shape(), &device)?;
            let args = vec![
                ptr_arg(param)?,
                ptr_arg(direction)?,
                ptr_arg(&out)?,
                KernelArg::F32(alpha),
            ];
            launch(dev, &AXPY, args, param.len())?;
            Ok(out)
        }
    }
}
