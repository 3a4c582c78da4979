//! Timing the selected ops for every selected shape and dtype, with inputs rotated among enough
//! copies of g that L2 cannot serve them.

use psg_runtime::{CudaDevice, DType, Tensor};

use crate::bandwidth::Bandwidth;
use crate::cli::{Options, Shape};
use crate::data;
use crate::gpu;
use crate::ops::{self, Op, Outputs, Params};
use crate::timing::{time_runs, RunPlan, Stats};

/// Bytes the rotation should span at least (L2 is 50-60 MB on H100/H200).
const ROTATION_BYTES: usize = 1 << 30;
const MIN_COPIES: usize = 3;
const MAX_COPIES: usize = 64;
/// Device memory left free beyond the inputs and the largest output.
const SLACK_BYTES: usize = 512 << 20;

/// One op timed on one shape and dtype.
#[derive(Debug, Clone)]
pub struct OpRow {
    /// The op's name.
    pub op: &'static str,
    /// g's shape.
    pub shape: Shape,
    /// g's dtype.
    pub dtype: DType,
    /// Copies of g the runs rotate among.
    pub copies: usize,
    /// The timings, or `None` when it failed.
    pub stats: Option<Stats>,
    /// Why it failed.
    pub error: Option<String>,
    /// Bytes the op must move.
    pub floor_bytes: u64,
    /// Those bytes over the copy bandwidth, ms.
    pub floor_ms: f64,
}

impl OpRow {
    /// Median time over the floor.
    pub fn x_floor(&self) -> Option<f64> {
        self.stats.map(|s| s.median_ms / self.floor_ms)
    }
}

/// How many copies of a g of `g_bytes` the runs rotate among.
pub fn rotation_copies(g_bytes: usize) -> usize {
    ROTATION_BYTES
        .div_ceil(g_bytes.max(1))
        .clamp(MIN_COPIES, MAX_COPIES)
}

fn output_bytes(op: &Op, shape: Shape, elem: usize) -> usize {
    match op.outputs {
        Outputs::Columns(n) => n * shape.p * elem,
        Outputs::Batch => shape.elements() * elem,
    }
}

/// Times every selected op on every selected shape and dtype. A configuration or op that fails
/// gives rows that say why; the others still run.
pub fn run(dev: &CudaDevice, opts: &Options, bw: &Bandwidth, plan: &RunPlan) -> Vec<OpRow> {
    let selected: Vec<&Op> = opts.ops.iter().filter_map(|n| ops::find(n)).collect();
    let mut rows = Vec::new();
    for &shape in &opts.shapes {
        for &dtype in &opts.dtypes {
            rows.extend(run_config(
                dev, &selected, shape, dtype, opts.data, bw, plan,
            ));
        }
    }
    rows
}

fn failed_rows(ops: &[&Op], shape: Shape, dtype: DType, bw: &Bandwidth, why: &str) -> Vec<OpRow> {
    ops.iter()
        .map(|op| {
            let floor_bytes = op.floor_bytes(shape.b, shape.p, dtype.size_in_bytes());
            OpRow {
                op: op.name,
                shape,
                dtype,
                copies: 0,
                stats: None,
                error: Some(why.to_string()),
                floor_bytes,
                floor_ms: bw.floor_ms(floor_bytes),
            }
        })
        .collect()
}

/// How many copies fit in free memory, or why none does.
fn copies_that_fit(dev: &CudaDevice, g_bytes: usize, reserve: usize) -> Result<usize, String> {
    let want = rotation_copies(g_bytes);
    if let Err(e) = gpu::trim_pool(dev) {
        eprintln!("  note: could not trim the memory pool ({e}); free memory may read low");
    }
    let Ok((free, _)) = gpu::mem_info(dev) else {
        return Ok(want);
    };
    let fit = free.saturating_sub(reserve + SLACK_BYTES) / g_bytes.max(1);
    let gib = |b: usize| b as f64 / f64::from(1u32 << 30);
    if fit == 0 {
        return Err(format!(
            "g ({:.2} GiB) and the outputs ({:.2} GiB) do not fit in the {:.2} GiB free",
            gib(g_bytes),
            gib(reserve),
            gib(free)
        ));
    }
    if fit < want {
        eprintln!(
            "  note: only {fit} copies of g fit in {:.1} GiB free (wanted {want})",
            gib(free)
        );
    }
    Ok(fit.min(want))
}

fn run_config(
    dev: &CudaDevice,
    ops: &[&Op],
    shape: Shape,
    dtype: DType,
    data: data::Data,
    bw: &Bandwidth,
    plan: &RunPlan,
) -> Vec<OpRow> {
    let elem = dtype.size_in_bytes();
    let g_bytes = shape.elements() * elem;
    let reserve = ops
        .iter()
        .map(|op| output_bytes(op, shape, elem))
        .max()
        .unwrap_or(0);
    let copies = match copies_that_fit(dev, g_bytes, reserve) {
        Ok(c) => c,
        Err(why) => {
            eprintln!("g[{shape}] {dtype}: skipped: {why}");
            return failed_rows(ops, shape, dtype, bw, &why);
        }
    };
    eprintln!(
        "g[{shape}] {dtype}: {:.2} GiB, inputs rotated among {copies} copies",
        g_bytes as f64 / f64::from(1u32 << 30)
    );
    let mut gs: Vec<Tensor> = Vec::with_capacity(copies);
    for i in 0..copies {
        match data::random_g(dev, dtype, shape.b, shape.p, 0x9e37_79b9 + i as u64, data) {
            Ok(g) => gs.push(g),
            Err(e) => {
                eprintln!("  generating copy {i} failed: {e}");
                if gs.is_empty() {
                    return failed_rows(ops, shape, dtype, bw, &e.to_string());
                }
                break;
            }
        }
    }
    if let Err(e) = data::check_random(dev, &gs[0]) {
        eprintln!("  {e}");
        return failed_rows(ops, shape, dtype, bw, &e.to_string());
    }
    let params = Params::for_shape(shape.b, shape.p);
    let n = gs.len();
    let mut rows = Vec::with_capacity(ops.len());
    for op in ops {
        let floor_bytes = op.floor_bytes(shape.b, shape.p, elem);
        let floor_ms = bw.floor_ms(floor_bytes);
        let result = time_runs(dev, plan, |i| (op.run)(&gs[i % n], &params));
        let row = OpRow {
            op: op.name,
            shape,
            dtype,
            copies: n,
            stats: result.as_ref().ok().copied(),
            error: result.as_ref().err().map(ToString::to_string),
            floor_bytes,
            floor_ms,
        };
        match (&row.stats, &row.error) {
            (Some(s), _) => eprintln!(
                "  {:<22} {:>10.3} ms {:>8.2}x floor ({} runs{})",
                op.name,
                s.median_ms,
                s.median_ms / floor_ms,
                s.runs,
                if s.capped {
                    ", capped by --op-budget-s"
                } else {
                    ""
                }
            ),
            (None, Some(e)) => eprintln!("  {:<22} FAILED: {e}", op.name),
            (None, None) => {}
        }
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_outgrows_l2() {
        assert_eq!(rotation_copies(4 << 30), MIN_COPIES);
        assert_eq!(rotation_copies(64 << 20), 16);
        assert_eq!(rotation_copies(1 << 20), MAX_COPIES);
        for g in [1usize << 20, 8 << 20, 64 << 20, 1 << 30] {
            assert!(rotation_copies(g) * g >= (64 << 20), "{g}");
        }
    }
}
