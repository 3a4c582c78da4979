//! Checking a reduction's arguments before anything runs, with messages that name the reduction
//! and the argument.

use super::{OutputKind, ReductionDef};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The sizes of one validated run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    /// B: samples.
    pub batch: usize,
    /// P: columns (elements per sample).
    pub width: usize,
    /// The shape of each output tensor.
    pub output_shapes: Vec<Vec<usize>>,
}

/// `` `name` `` of argument `i` among `names`, or `#i` where the definition gives no name.
fn arg_name(names: &[&str], i: usize) -> String {
    names
        .get(i)
        .map_or_else(|| format!("#{i}"), |n| format!("`{n}`"))
}

pub(super) fn plan(
    def: &ReductionDef,
    g: &Tensor,
    per_sample: &[&Tensor],
    scalars: &[f64],
) -> Result<Plan> {
    let name = def.name;
    let batch = g.batch_size().map_err(|_| {
        Error::Shape(format!(
            "reduction `{name}`: g must have shape [B, ...] (at least one dimension), got a scalar"
        ))
    })?;
    let width = g.per_sample_len();
    if per_sample.len() != def.n_per_sample {
        let names: Vec<String> = (0..def.n_per_sample)
            .map(|i| arg_name(def.per_sample_names, i))
            .collect();
        return Err(Error::InvalidParameter(format!(
            "reduction `{name}` takes {} per-sample vector(s) ({}), got {}",
            def.n_per_sample,
            names.join(", "),
            per_sample.len()
        )));
    }
    if scalars.len() != def.n_scalars {
        let names: Vec<String> = (0..def.n_scalars)
            .map(|i| arg_name(def.scalar_names, i))
            .collect();
        return Err(Error::InvalidParameter(format!(
            "reduction `{name}` takes {} scalar parameter(s) ({}), got {}",
            def.n_scalars,
            names.join(", "),
            scalars.len()
        )));
    }
    let acc = g.dtype().accumulator();
    let g_device = g.device();
    for (i, t) in per_sample.iter().enumerate() {
        let arg = arg_name(def.per_sample_names, i);
        if t.shape() != [batch] {
            return Err(Error::Shape(format!(
                "reduction `{name}`: per-sample vector {arg} must have shape [B] = [{batch}], got \
                 {:?}",
                t.shape()
            )));
        }
        if t.dtype() != acc {
            return Err(Error::DType(format!(
                "reduction `{name}`: per-sample vector {arg} must be {acc} (the accumulator type of \
                 {} data), got {}",
                g.dtype(),
                t.dtype()
            )));
        }
        if !t.device().same_memory_space(&g_device) {
            return Err(Error::DeviceMismatch(format!(
                "reduction `{name}`: per-sample vector {arg} is on {}, g is on {}; move it with \
                 to_device",
                t.device().short_name(),
                g_device.short_name()
            )));
        }
    }
    let output_shapes = match def.outputs {
        OutputKind::Scalars(n) => vec![g.shape()[1..].to_vec(); n],
        OutputKind::Batch => vec![g.shape().to_vec()],
    };
    Ok(Plan {
        batch,
        width,
        output_shapes,
    })
}
