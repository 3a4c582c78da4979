//! The CPU path: rayon over chunks of consecutive columns, one call of the CPU function per
//! column.

use std::marker::PhantomData;

use half::{bf16, f16};
use rayon::prelude::*;

use crate::cpu_pool;

use super::validate::Plan;
use super::{Column, CpuColumnFn, OutputKind, ReductionDef};
use crate::dtype::DType;
use crate::element::{Accumulator, Element};
use crate::error::Result;
use crate::tensor::{host_filled, host_zeros, CpuData, Tensor};

/// Columns per rayon task for a batch of `batch`: each task first copies its columns out of `g`
/// (rows of that many consecutive values) into one contiguous column each. 256 (a KiB of f32 a
/// row) where the copy holds at most 64K values, down to 16 for large B, whose copy grows with B.
/// On two cores, 256 took 0.65 of the CPU time of 64 for the sum of g[256, 64K] f32.
fn chunk_columns(batch: usize) -> usize {
    (65_536 / batch.max(1)).clamp(16, 256)
}

pub(super) fn run(
    def: &ReductionDef,
    g: &Tensor,
    per_sample: &[&Tensor],
    scalars: &[f64],
    plan: &Plan,
) -> Result<Vec<Tensor>> {
    match g.dtype() {
        DType::F32 => run_typed::<f32>(def.cpu.f32, def, g, per_sample, scalars, plan),
        DType::F64 => run_typed::<f64>(def.cpu.f64, def, g, per_sample, scalars, plan),
        DType::F16 => run_typed::<f16>(def.cpu.f16, def, g, per_sample, scalars, plan),
        DType::BF16 => run_typed::<bf16>(def.cpu.bf16, def, g, per_sample, scalars, plan),
    }
}

fn run_typed<T: Element>(
    f: CpuColumnFn<T>,
    def: &ReductionDef,
    g: &Tensor,
    per_sample: &[&Tensor],
    scalars: &[f64],
    plan: &Plan,
) -> Result<Vec<Tensor>> {
    let g_values = g.as_cpu_slice::<T>()?;
    let per_sample: Vec<&[T::Acc]> = per_sample
        .iter()
        .map(|t| t.as_cpu_slice::<T::Acc>())
        .collect::<Result<_>>()?;
    let scalars: Vec<T::Acc> = scalars.iter().map(|&s| T::Acc::from_f64(s)).collect();
    let (batch, width) = (plan.batch, plan.width);
    let mut outputs: Vec<Vec<T>> = plan
        .output_shapes
        .iter()
        .map(|s| host_zeros(s))
        .collect::<Result<_>>()?;
    let writers: Vec<DisjointWriter<'_, T>> =
        outputs.iter_mut().map(|o| DisjointWriter::new(o)).collect();
    let kind = def.outputs;
    let per_column = match kind {
        OutputKind::Scalars(n) => n,
        OutputKind::Batch => batch,
    };
    // A Batch output of an empty batch is empty: no column has anything to write (and P may be
    // huge).
    let chunks = if kind == OutputKind::Batch && batch == 0 {
        0
    } else {
        width.div_ceil(chunk_columns(batch))
    };
    let chunk_width = chunk_columns(batch);
    cpu_pool::install(|| {
        (0..chunks)
            .into_par_iter()
            .try_for_each(|chunk| -> Result<()> {
                let first = chunk * chunk_width;
                let cols = chunk_width.min(width - first);
                // Transposed copy: column j of the chunk at gathered[j * batch ..][..batch]. With
                // a few columns and a huge B it is as large as g: an error, not an abort, where
                // the allocator refuses it.
                let mut gathered = host_filled(cols * batch, T::default())?;
                transpose_into(&mut gathered, g_values, width, first, cols, batch);
                let mut results = host_filled(per_column, T::Acc::default())?;
                for j in 0..cols {
                    let values = &gathered[j * batch..][..batch];
                    let column = Column {
                        values,
                        per_sample: &per_sample,
                        scalars: &scalars,
                    };
                    results.fill(T::Acc::default());
                    f(&column, &mut results);
                    let col = first + j;
                    match kind {
                        OutputKind::Scalars(_) => {
                            for (w, &r) in writers.iter().zip(&results) {
                                w.write(col, T::from_acc(r));
                            }
                        }
                        OutputKind::Batch => {
                            for (b, &r) in results.iter().enumerate() {
                                writers[0].write(b * width + col, T::from_acc(r));
                            }
                        }
                    }
                }
                Ok(())
            })
    })??;
    drop(writers);
    let dtype = g.dtype();
    outputs
        .into_iter()
        .zip(&plan.output_shapes)
        .map(|(o, shape)| Ok(Tensor::from_cpu_data(CpuData::from_vec(o)?, dtype, shape)))
        .collect()
}

/// Rows of g a block of the transposed copy: each column's part of a block is a run of this many
/// consecutive values, and the block's rows stay in L1 while its columns are written (8 did better
/// than 4 and 16 here).
const BLOCK_ROWS: usize = 8;

/// Copies columns `first .. first + cols` of `g` (`batch` rows of `width`) into `out`, column
/// `j` at `out[j * batch ..][..batch]`, a block of rows at a time, where writing each row's values
/// straight to their columns touched another cache line with every value.
fn transpose_into<T: Copy>(
    out: &mut [T],
    g: &[T],
    width: usize,
    first: usize,
    cols: usize,
    batch: usize,
) {
    for b0 in (0..batch).step_by(BLOCK_ROWS) {
        let n = BLOCK_ROWS.min(batch - b0);
        let rows: [&[T]; BLOCK_ROWS] = std::array::from_fn(|r| {
            if r < n {
                &g[(b0 + r) * width + first..][..cols]
            } else {
                &[]
            }
        });
        for (j, column) in out.chunks_exact_mut(batch).take(cols).enumerate() {
            for (dst, row) in column[b0..b0 + n].iter_mut().zip(&rows) {
                *dst = row[j];
            }
        }
    }
}

/// Writes into one output from many rayon tasks, each task to its own columns.
struct DisjointWriter<'a, T> {
    ptr: *mut T,
    len: usize,
    _output: PhantomData<&'a mut [T]>,
}

// SAFETY: the writer only hands out element writes, and every element index is written by at
// most one task (tasks own disjoint column ranges, and an index belongs to exactly one column),
// so sharing it across threads creates no data race; T: Send moves values across threads.
unsafe impl<T: Send> Sync for DisjointWriter<'_, T> {}
// SAFETY: as above; the writer is a unique borrow of the output for its lifetime.
unsafe impl<T: Send> Send for DisjointWriter<'_, T> {}

impl<'a, T> DisjointWriter<'a, T> {
    fn new(output: &'a mut [T]) -> Self {
        DisjointWriter {
            ptr: output.as_mut_ptr(),
            len: output.len(),
            _output: PhantomData,
        }
    }

    /// Writes `v` at `i`. Callers write each index from at most one task.
    fn write(&self, i: usize, v: T) {
        assert!(i < self.len, "output index {i} out of {}", self.len);
        // SAFETY: `i` is in bounds (checked above) of the output this writer uniquely borrows,
        // and no other task writes index `i` (see the Sync impl).
        unsafe { self.ptr.add(i).write(v) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blocked_copy_is_a_transpose() {
        // Batches around the block's rows, chunks narrower than g and at its right edge.
        for batch in [0, 1, 7, 8, 9, 17, 64] {
            for (width, first, cols) in [(5, 0, 5), (70, 3, 64), (70, 64, 6), (1, 0, 1)] {
                let g: Vec<u32> = (0..(batch * width) as u32).collect();
                let mut out = vec![u32::MAX; cols * batch];
                transpose_into(&mut out, &g, width, first, cols, batch);
                for j in 0..cols {
                    for b in 0..batch {
                        assert_eq!(
                            out[j * batch + b],
                            g[b * width + first + j],
                            "{batch} {j} {b}"
                        );
                    }
                }
            }
        }
    }
}
