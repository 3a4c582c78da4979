//! psg's own small layer set with hand-written forward and backward passes (CPU and GPU) that
//! record, per layer, the input `A` and the output gradient `G`: one forward and backward pass of
//! a small model then gives every layer's per-sample and batch gradients through the one-pass
//! kernels of [`crate::layers`]. Layers: [`Linear`], [`Relu`]; loss: [`softmax_cross_entropy`].
//! A general autograd is out of scope.

mod cross_entropy;
mod init;
mod layer;
mod linear;
mod matmul;
mod pointwise;
mod relu;

use psg_runtime::KernelSource;

pub use cross_entropy::{predictions, softmax_cross_entropy, CrossEntropy};
pub use layer::{Layer, Sequential};
pub use linear::Linear;
pub use pointwise::sgd_step;
pub use relu::Relu;

/// The CUDA sources of the capture layers' kernels.
pub(crate) fn kernel_sources() -> Vec<&'static KernelSource> {
    let mut all = matmul::kernel_sources();
    all.extend(pointwise::kernel_sources());
    all.extend(cross_entropy::kernel_sources());
    all
}
