//! How a DP-SGD step clips each sample's gradient, and the L2 sensitivity that gives a sum.

use std::fmt;

use psg_runtime::Tensor;

use super::error::{DpError, DpResult};

/// Per-sample clipping before aggregation (Opacus' clip factor `min(1, C / (norm + 1e-6))`).
///
/// After clipping, adding or removing one sample moves the *sum* of the clipped gradients by at
/// most [`Clipping::sensitivity`] in L2 norm, which is what the Gaussian noise is scaled to.
#[derive(Debug, Clone, PartialEq)]
pub enum Clipping {
    /// One norm over all of a sample's parameter tensors together, clipped to `max_norm`.
    /// Sensitivity `max_norm`.
    Flat {
        /// The clip norm C (> 0).
        max_norm: f64,
    },
    /// Each tensor `l` clipped on its own to `max_norms[l]`. Sensitivity
    /// `sqrt(sum_l max_norms[l]^2)`: a sample's clipped gradient has at most that total norm.
    PerLayer {
        /// One clip norm C_l (> 0) per parameter tensor, in the order the step gets them.
        max_norms: Vec<f64>,
    },
}

impl Clipping {
    /// Flat clipping to `max_norm`.
    pub fn flat(max_norm: f64) -> Self {
        Clipping::Flat { max_norm }
    }

    /// Per-layer clipping, tensor `l` to `max_norms[l]`.
    pub fn per_layer(max_norms: Vec<f64>) -> Self {
        Clipping::PerLayer { max_norms }
    }

    /// The L2 sensitivity of the sum of clipped gradients: C, or `sqrt(sum_l C_l^2)` (by
    /// `hypot`, so that norms whose squares overflow f64 give a finite sensitivity).
    pub fn sensitivity(&self) -> f64 {
        match self {
            Clipping::Flat { max_norm } => *max_norm,
            Clipping::PerLayer { max_norms } => max_norms.iter().fold(0.0, |s, c| s.hypot(*c)),
        }
    }

    /// Checks every clip norm is a finite number > 0 (and that per-layer clipping has one).
    ///
    /// # Errors
    ///
    /// [`DpError::InvalidClipNorm`], or [`DpError::ClipNormCountMismatch`] for an empty per-layer
    /// list.
    pub fn validate(&self) -> DpResult<()> {
        let valid = |c: f64| c.is_finite() && c > 0.0;
        match self {
            Clipping::Flat { max_norm } if !valid(*max_norm) => Err(DpError::InvalidClipNorm {
                value: *max_norm,
                layer: None,
            }),
            Clipping::Flat { .. } => Ok(()),
            Clipping::PerLayer { max_norms } if max_norms.is_empty() => Err(DpError::NoClipNorms),
            Clipping::PerLayer { max_norms } => match max_norms.iter().position(|&c| !valid(c)) {
                Some(l) => Err(DpError::InvalidClipNorm {
                    value: max_norms[l],
                    layer: Some(l),
                }),
                None => Ok(()),
            },
        }
    }

    /// The clip factors `[B]` of each tensor (flat clipping: the same factors for all).
    pub(super) fn factors(&self, grads: &[&Tensor]) -> DpResult<Vec<Tensor>> {
        match self {
            Clipping::Flat { max_norm } => {
                let f = crate::flat_clip_factors(grads, *max_norm)?;
                Ok(vec![f; grads.len()])
            }
            Clipping::PerLayer { max_norms } => {
                if max_norms.len() != grads.len() {
                    return Err(DpError::ClipNormCountMismatch {
                        norms: max_norms.len(),
                        tensors: grads.len(),
                    });
                }
                Ok(crate::per_layer_clip_factors(grads, max_norms)?)
            }
        }
    }
}

impl fmt::Display for Clipping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Clipping::Flat { max_norm } => write!(f, "flat clipping to C = {max_norm}"),
            Clipping::PerLayer { max_norms } => {
                write!(f, "per-layer clipping to C_l = {max_norms:?}")
            }
        }
    }
}
