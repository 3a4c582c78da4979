//! Per-sample gradients and the batch gradient of layers, from one forward/backward pass.
//!
//! One forward and one backward pass capture, for each layer, its input activations `A` and the
//! gradient `G` of the summed loss with respect to its output. Everything about the layer's
//! parameter gradients follows from `(A, G)`: the kernels here take them and produce, in one
//! launch, both the per-sample gradients `[B, ...]` and the batch gradient (their sum, which is the
//! ordinary gradient of the summed loss), for
//!
//! - [`linear`]: `A` `[B, in]` or `[B, T, in]`, weight and optional bias;
//! - [`conv2d`]: stride, padding, dilation and groups (an implicit im2col);
//! - [`embedding`]: index input; per-sample gradients are sparse ([`SparseRows`]: the rows each
//!   sample touched), never a dense `[B, V, D]`;
//! - [`layer_norm`]: its affine weight and bias, from the normalized input `x̂`.
//!
//! Every entry point takes a [`Sink`]: keep the per-sample gradients, or hand them straight to a
//! batch reduction (`Sink::Reduce(&psg_ops::median)`), so "the median of the per-sample gradients
//! of this layer" is one call. All math is FP32 (no TF32); each op has a CPU implementation (rayon)
//! and a CUDA one, chosen by where the inputs live.
//!
//! [`capture`] is psg's own small layer set with hand-written forward and backward passes that
//! record `(A, G)` as they run (a general autograd is out of scope).
//!
//! ```
//! use psg_ops::layers::{capture::{Linear, Relu, Sequential, softmax_cross_entropy}, Sink};
//! use psg_runtime::{Device, Tensor};
//!
//! let dev = Device::Cpu;
//! let mut model = Sequential::new(vec![
//!     Box::new(Linear::init(4, 8, true, 1, &dev)?),
//!     Box::new(Relu::new()),
//!     Box::new(Linear::init(8, 3, true, 2, &dev)?),
//! ]);
//! let x = Tensor::from_slice(&[0.5f32; 2 * 4], &[2, 4], &dev)?;
//! let logits = model.forward(&x)?;
//! let loss = softmax_cross_entropy(&logits, &[0, 2])?;
//! model.backward(&loss.grad_logits)?;
//! // Per-sample and batch gradients of every parameter, from that one pass.
//! let grads = model.param_grads(Sink::Keep)?;
//! assert_eq!(grads.len(), 4); // two weights, two biases
//! assert_eq!(grads[0].per_sample.dense().unwrap().shape(), &[2, 8, 4]);
//! # Ok::<(), psg_runtime::Error>(())
//! ```

pub mod capture;
mod conv2d;
mod embedding;
mod embedding_plan;
mod grads;
mod inputs;
mod layer_norm;
mod linear;

use psg_runtime::KernelSource;

pub use conv2d::{conv2d, Conv2dSpec};
pub use embedding::embedding;
pub use grads::{LayerGrads, ParamGrad, PerSample, Sink, SparseRows};
pub use layer_norm::layer_norm;
pub use linear::{linear, linear_with, BatchSum, LinearSchedule};

/// The CUDA sources of every layer kernel (the one-pass gradient kernels and the capture layers'
/// forward and backward kernels), for the NVRTC check.
pub fn layer_kernel_sources() -> Vec<&'static KernelSource> {
    let mut all = linear::kernel_sources();
    all.extend(conv2d::kernel_sources());
    all.extend(embedding::kernel_sources());
    all.extend(layer_norm::kernel_sources());
    all.extend(capture::kernel_sources());
    all
}
