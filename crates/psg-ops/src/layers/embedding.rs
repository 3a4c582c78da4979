//! Embedding: `y[b, t] = W[idx[b, t]]` for a table `W` `[V, D]`. From the indices and the captured
//! output gradient `g` (`[B, T, D]`, or `[B, D]` for one lookup per sample), one launch gives the
//! batch gradient `[V, D]` and the per-sample gradients, which are sparse: sample b's gradient is
//! non-zero only in the rows it looked up ([`SparseRows`]), never a dense `[B, V, D]`.
//!
//! Handed to a reduction ([`Sink::Reduce`]), the per-sample gradients are laid out densely over the
//! union of touched rows only (`[B, U, D]`, U <= B * T), reduced to `[U, D]`, and spread to `[V, D]`:
//! every untouched row gets the reduction of an all-zero column (0 for a sum, mean or median).

use psg_runtime::cpu_pool;
use psg_runtime::{
    CudaDevice, DType, Device, Error, KernelArg, KernelSource, LaunchConfig, Result, Tensor,
};
use rayon::prelude::*;

use super::embedding_plan::Plan;
use super::grads::{LayerGrads, ParamGrad, PerSample, Sink, SparseRows};
use super::inputs::{check_f32, cpu_f32, grid_blocks, int_arg, long_arg, ptr_arg, upload_i32};

const OP: &str = "embedding";

static KERNEL: KernelSource =
    KernelSource::new_static("psg_embedding_f32", include_str!("embedding.cu"));
static SCATTER: KernelSource =
    KernelSource::new_static("psg_embedding_scatter_f32", include_str!("embedding.cu"));

/// The CUDA sources of the Embedding kernels, for the NVRTC check.
pub(crate) fn kernel_sources() -> Vec<&'static KernelSource> {
    vec![&KERNEL, &SCATTER]
}

/// Per-sample and batch gradients of an embedding table `[vocab, D]` from the looked-up `indices`
/// (`[B, T]` row-major on the host, each `< vocab`) and the captured output gradient `g`
/// (`[B, T, D]`, or `[B, D]` when T = 1), f32 on any device.
///
/// With [`Sink::Keep`] the per-sample gradients come back as [`PerSample::Sparse`].
///
/// ```
/// use psg_ops::layers::{embedding, Sink};
/// use psg_runtime::{Device, Tensor};
///
/// // B = 2, T = 2, D = 1, vocab = 4: sample 0 looks up rows 3 and 3, sample 1 rows 0 and 3.
/// let g = Tensor::from_slice(&[1.0f32, 2.0, 10.0, 20.0], &[2, 2, 1], &Device::Cpu)?;
/// let grads = embedding(&[3, 3, 0, 3], &g, 4, Sink::Keep)?;
/// let w = grads.weight().unwrap();
/// let sparse = w.per_sample.sparse().unwrap();
/// assert_eq!(sparse.rows_of(0), &[3]);
/// assert_eq!(sparse.rows_of(1), &[0, 3]);
/// assert_eq!(sparse.values.to_vec::<f32>()?, vec![3.0, 10.0, 20.0]);
/// assert_eq!(w.batch.to_vec::<f32>()?, vec![10.0, 0.0, 0.0, 23.0]);
/// # Ok::<(), psg_runtime::Error>(())
/// ```
pub fn embedding(indices: &[u32], g: &Tensor, vocab: usize, sink: Sink<'_>) -> Result<LayerGrads> {
    check_f32(OP, "the output gradient g", g)?;
    let (b, t, d) = match *g.shape() {
        [b, d] => (b, 1, d),
        [b, t, d] => (b, t, d),
        _ => {
            return Err(Error::Shape(format!(
                "{OP}: the output gradient g must be [B, T, D] or [B, D], got {:?}",
                g.shape()
            )))
        }
    };
    if indices.len() != b * t {
        return Err(Error::Shape(format!(
            "{OP}: {} indices for an output gradient of shape {:?}; give B * T = {} (row-major [B, T])",
            indices.len(),
            g.shape(),
            b * t
        )));
    }
    let plan = Plan::new(indices, b, t, vocab)?;
    let device = g.device();
    let dense = !sink.keeps();
    let (values, batch) = match &device {
        Device::Cpu => cpu(&plan, g, b, d, vocab, dense)?,
        Device::Cuda(dev) => cuda(dev, &plan, g, b, d, vocab, dense)?,
    };
    let per_sample = if dense {
        PerSample::Reduced(spread(&sink, &plan, &values, b, d, vocab)?)
    } else {
        PerSample::Sparse(SparseRows {
            offsets: plan.offsets,
            rows: plan.rows,
            values,
            vocab,
        })
    };
    Ok(LayerGrads {
        params: vec![ParamGrad {
            name: "weight",
            per_sample,
            batch,
        }],
    })
}

/// The per-sample values (`[E, D]` sparse, or `[B, U, D]` dense over the union) and the batch
/// gradient `[V, D]`.
fn cpu(
    plan: &Plan,
    g: &Tensor,
    b: usize,
    d: usize,
    vocab: usize,
    dense: bool,
) -> Result<(Tensor, Tensor)> {
    let gv = cpu_f32(g)?;
    let (n_union, n_entries) = (plan.n_union(), plan.n_entries());
    // Each entry's sum over its positions, in position order.
    let mut per_entry = psg_runtime::host_zeros::<f32>(&[n_entries, d])?;
    if d > 0 {
        cpu_pool::install(|| {
            per_entry
                .par_chunks_mut(d)
                .enumerate()
                .for_each(|(e, out)| {
                    for &pos in plan.positions(e) {
                        for (x, &v) in out
                            .iter_mut()
                            .zip(&gv[pos as usize * d..(pos as usize + 1) * d])
                        {
                            *x += v;
                        }
                    }
                })
        })?;
    }
    let mut batch = psg_runtime::host_zeros::<f32>(&[vocab, d])?;
    let mut values = if dense {
        psg_runtime::host_zeros::<f32>(&[b, n_union, d])?
    } else {
        psg_runtime::host_zeros::<f32>(&[n_entries, d])?
    };
    for u in 0..n_union {
        let row = plan.union_rows[u] as usize;
        for e in plan.entries(u) {
            let src = &per_entry[e * d..(e + 1) * d];
            let dst = if dense {
                plan.entry_sample[e] as usize * n_union + u
            } else {
                plan.entry_slot[e] as usize
            };
            values[dst * d..(dst + 1) * d].copy_from_slice(src);
            for (x, &v) in batch[row * d..(row + 1) * d].iter_mut().zip(src) {
                *x += v;
            }
        }
    }
    let shape: Vec<usize> = if dense {
        vec![b, n_union, d]
    } else {
        vec![n_entries, d]
    };
    Ok((
        Tensor::from_vec(values, &shape, &Device::Cpu)?,
        Tensor::from_vec(batch, &[vocab, d], &Device::Cpu)?,
    ))
}

fn cuda(
    dev: &CudaDevice,
    plan: &Plan,
    g: &Tensor,
    b: usize,
    d: usize,
    vocab: usize,
    dense: bool,
) -> Result<(Tensor, Tensor)> {
    let device = Device::Cuda(dev.clone());
    let (n_union, n_entries) = (plan.n_union(), plan.n_entries());
    let batch = Tensor::zeros(DType::F32, &[vocab, d], &device)?;
    let values = if dense {
        Tensor::zeros(DType::F32, &[b, n_union, d], &device)?
    } else {
        Tensor::uninit(DType::F32, &[n_entries, d], &device)?
    };
    if n_union == 0 || d == 0 {
        return Ok((values, batch));
    }
    let tables = [
        &plan.union_rows,
        &plan.entry_off,
        &plan.entry_sample,
        &plan.entry_slot,
        &plan.tok_off,
        &plan.toks,
    ];
    let buffers = tables
        .iter()
        .map(|v| upload_i32(dev, v))
        .collect::<Result<Vec<_>>>()?;
    let mut args: Vec<KernelArg> = vec![ptr_arg(g)?];
    args.extend(buffers.iter().map(|buf| KernelArg::Ptr(buf.ptr())));
    args.extend([
        ptr_arg(&values)?,
        ptr_arg(&batch)?,
        int_arg(OP, "rows touched", n_union)?,
        int_arg(OP, "D", d)?,
        KernelArg::I32(i32::from(dense)),
    ]);
    let blocks = n_union
        .checked_mul(d.div_ceil(128))
        .ok_or_else(|| Error::Shape(format!("{OP}: too many blocks")))?;
    let cfg = LaunchConfig {
        grid: (grid_blocks(OP, blocks)?, 1, 1),
        block: (128, 1, 1),
        shared_bytes: 0,
    };
    dev.launch(&KERNEL, cfg, &args)?;
    Ok((values, batch))
}

/// Reduces the union-dense per-sample gradients `[B, U, D]` with the sink and spreads the result
/// to the whole table `[V, D]`.
fn spread(
    sink: &Sink<'_>,
    plan: &Plan,
    dense: &Tensor,
    b: usize,
    d: usize,
    vocab: usize,
) -> Result<Tensor> {
    let device = dense.device();
    let reduced = sink.reduce(dense)?;
    let n_union = plan.n_union();
    if reduced.shape() != [n_union, d] || reduced.dtype() != DType::F32 {
        return Err(Error::Shape(format!(
            "{OP}: the sink's reduction turned per-sample gradients [B, U, D] = {:?} into a {} tensor \
             of shape {:?}; a batch reduction must give f32 [U, D]",
            dense.shape(),
            reduced.dtype(),
            reduced.shape()
        )));
    }
    let zero_column = Tensor::zeros(DType::F32, &[b, 1], &device)?;
    let untouched = sink.reduce(&zero_column)?;
    if untouched.len() != 1 || untouched.dtype() != DType::F32 {
        return Err(Error::Shape(format!(
            "{OP}: the sink's reduction of a [B, 1] column gave {:?}; a batch reduction must give [1]",
            untouched.shape()
        )));
    }
    let mut union_of = psg_runtime::host_filled(vocab, -1i32)?;
    for (u, &row) in plan.union_rows.iter().enumerate() {
        union_of[row as usize] = u as i32;
    }
    match &device {
        Device::Cpu => {
            let (red, zero) = (cpu_f32(&reduced)?, cpu_f32(&untouched)?[0]);
            let mut out = psg_runtime::host_zeros::<f32>(&[vocab, d])?;
            if zero.to_bits() != 0 {
                out.fill(zero);
            }
            for (row, &u) in union_of.iter().enumerate() {
                if u >= 0 {
                    let u = u as usize;
                    out[row * d..(row + 1) * d].copy_from_slice(&red[u * d..(u + 1) * d]);
                }
            }
            Tensor::from_vec(out, &[vocab, d], &device)
        }
        Device::Cuda(dev) => {
            let out = Tensor::uninit(DType::F32, &[vocab, d], &device)?;
            let n = vocab * d;
            if n == 0 {
                return Ok(out);
            }
            let map = upload_i32(dev, &union_of)?;
            let blocks = n.div_ceil(256).min(65_536);
            let cfg = LaunchConfig {
                grid: (grid_blocks(OP, blocks)?, 1, 1),
                block: (256, 1, 1),
                shared_bytes: 0,
            };
            let args = [
                ptr_arg(&reduced)?,
                ptr_arg(&untouched)?,
                KernelArg::Ptr(map.ptr()),
                ptr_arg(&out)?,
                long_arg(OP, "V", vocab)?,
                int_arg(OP, "D", d)?,
            ];
            dev.launch(&SCATTER, cfg, &args)?;
            Ok(out)
        }
    }
}
