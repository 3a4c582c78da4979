//! The spill kernel: a plan of streaming passes (sums, counts, minima, maxima; no selection, no
//! ranks) at a B whose 32-column tile does not fit in shared memory (f32 beyond about 1780
//! samples on an H100 or H200, 16-bit input beyond about 3560, f64 beyond about 890), where the
//! tiled kernel cannot run, and at a P too narrow to fill the GPU with a thread a column.
//! There the thread-per-column kernel, with its few threads each walking every sample of a
//! column once a pass, waited on its loads: at g[2048, 16K] f32 the variance took 42x the copy
//! floor, PyTorch's 2.8x (H200).
//!
//! A block of 32 x 8 threads walks tiles of 32 columns as the tiled kernel does: thread
//! `(lane, w)` computes column `lane` over samples `w, w + 8, ...`, the canonical partial `w` of
//! each sum, and the 8 warps' partials are combined in warp order through shared memory, so
//! every result is the tiled kernel's, bit for bit. What differs is where the samples come from.
//! The block keeps the first `n_res` rows of its tile in shared memory (`n_res`, a multiple of 8,
//! is as many as the device grants a block: the runtime passes it); the first pass reads every
//! row from `g` and stores those rows as they pass, each thread its own elements, which are the
//! ones its later passes read, so no barrier guards the tile. Later passes read the kept rows
//! from shared memory and the others from `g` again. A pass's rows from `g` are loaded
//! [`SPILL_U`] at a time before any is used, so that each thread has that many loads in flight.
//! At B = 2048 in f32, 1784 rows of 2048 are kept: a second pass re-reads 13% of the tile.
//!
//! One block a multiprocessor, its first pass bound by its loads' latency, is not fast at wide
//! P: at g[2048, 1M] f32 the variance took 3.4x the floor against the thread-per-column
//! kernel's 3.0x (H200, same run), so the runtime runs it only where P is below 1024 columns a
//! multiprocessor (`psg_runtime::SPILL_MAX_COLUMNS_PER_SM`). There it took 0.06-0.21 of the
//! thread-per-column kernel's time at g[2048, 16K] f32 and g[4096, 16K] bf16, 0.26-0.83 at
//! g[2048, 64K] f32 and g[8192, 64K] bf16.

use std::fmt::Write;

use crate::cuda::{emit_let, kernel_name, loop_header_with, Printer};
use crate::cuda_tile::{
    batch_value, emit_loop, kernel_head_with, narrow_tile, partial_slots, pass_unroll,
    scalar_stores, streaming_loops, Blocks, Unroll,
};
use crate::expr::Acc;
use crate::ir::{Output, Scalar};
use crate::schedule::{Plan, Step};
use crate::DType;

/// Rows of `g` a thread loads before it uses any, in a pass's reads from `g`: 16 (2 KiB a warp in
/// f32, 16 KiB a multiprocessor at the one block a multiprocessor that its shared memory
/// leaves). 64 measured slower (H200, two runs: the f32 variance 0.172 against 0.122 ms at
/// g[2048, 16K], 10.0 against 7.0 ms at g[2048, 1M]).
pub const SPILL_U: usize = 16;

/// Whether the reduction has a spill kernel: a plan of at least one pass, every pass streaming
/// (no selection, no ranks), whatever its output; but not a plan of one pass with per-column
/// outputs, whose streaming kernel serves any B (see [`crate::cuda_stream::streams`]).
pub fn has_spill_kernel(plan: &Plan) -> bool {
    streaming_loops(plan)
        && plan.steps.iter().any(|s| matches!(s, Step::Loop(_)))
        && !crate::cuda_stream::streams(plan)
}

/// The spill kernel's name: `{reduction}_{dtype}_spill`.
pub fn spill_kernel_name(plan: &Plan, dtype: DType) -> String {
    format!("{}_spill", kernel_name(plan, dtype))
}

/// Shared memory of the spill kernel besides its rows (`n_res x 32` elements of the input
/// dtype): two halves of partials, 8 warps x 32 columns a slot.
pub fn spill_fixed_bytes(plan: &Plan, dtype: DType) -> u32 {
    let acc = match dtype.acc() {
        Acc::F32 => 4,
        Acc::F64 => 8,
    };
    (2 * partial_slots(plan) * crate::SUM_PARTIALS * 32 * acc) as u32
}

/// A pass of the spill kernel: the first (every row from `g`), or a later one; and the rows
/// loaded at a time ([`SPILL_U`]).
#[derive(Clone, Copy)]
pub(crate) struct SpillPass {
    pub(crate) first: bool,
    pub(crate) u: usize,
}

/// A pass's (or the per-sample output's) loop over the thread's rows from `g`: from row `w`
/// on the first pass (every row, storing those below `n_rb` into the tile), else from
/// `n_rb + w`; `body` is the code for sample `b`, reading its element as `psg_load(psg_raw, u)`.
pub(crate) fn spill_rows(body: &str, pass: SpillPass) -> String {
    let SpillPass { first, u } = pass;
    let (start, stash) = if first {
        (
            "w",
            "            if (b < n_rb) tile[(b << 5) + lane] = psg_raw[u];\n",
        )
    } else {
        ("n_rb + w", "")
    };
    format!(
        "        for (int b0 = {start}; b0 < n_bi; b0 += {step}) {{\n            psg_elem psg_raw[{u}];\n            #pragma unroll\n            for (int u = 0; u < {u}; ++u) {{\n                const int b = b0 + 8 * u;\n                psg_raw[u] = b < n_bi ? g[(long long)b * n_p + p] : (psg_elem)0;\n            }}\n            #pragma unroll\n            for (int u = 0; u < {u}; ++u) {{\n            const int b = b0 + 8 * u;\n            if (b < n_bi) {{\n{stash}{body}            }}\n            }}\n        }}\n",
        step = 8 * u
    )
}

/// Emits the spill kernel (see the module docs) for one input dtype, if the plan has one.
///
/// Launch: block `(32, 8, 1)`, a persistent grid walking the tiles of 32 columns, dynamic shared
/// memory `n_res * 32 * sizeof(element) + spill_fixed_bytes`; parameters those of the
/// thread-per-column kernel, then `int n_res` (a multiple of 8) and `int vec` (unused: every
/// load is of one element).
pub fn emit_spill(plan: &Plan, dtype: DType) -> Option<String> {
    if !has_spill_kernel(plan) {
        return None;
    }
    let printer = Printer::new(plan, dtype);
    let syntax = printer.syntax();
    let e = |expr: &Scalar| printer.e(expr);
    let keep = |expr: &Scalar| printer.keep(expr);
    let from_tile = |i: &str| format!("psg_load(tile, ((long long)({i}) << 5) + lane)");
    // 16-bit elements as they are in g: the tiled kernel's narrow tile, and its unroll.
    let unroll = pass_unroll(plan, narrow_tile(dtype, false));
    let mut s = kernel_head_with(
        plan,
        dtype,
        "spill (kept rows in shared memory, the others read from g each pass)",
        &spill_kernel_name(plan, dtype),
        Blocks::Three,
        &["int n_res", "int vec"],
    );
    s.push_str("    psg_elem* const tile = (psg_elem*)psg_smem;\n");
    s.push_str("    psg_acc* const part = (psg_acc*)(tile + ((long long)n_res << 5));\n");
    s.push_str("    const int lane = threadIdx.x, w = threadIdx.y;\n");
    s.push_str(
        "    // B < 2^31: the runtime runs this kernel only where the tiled one does not fit.\n",
    );
    s.push_str("    const int n_bi = (int)n_b;\n");
    s.push_str("    const int n_rb = min(n_res, n_bi); // the rows kept\n");
    writeln!(
        s,
        "    const psg_acc {} = (psg_acc)n_b;",
        crate::expr::names::BATCH
    )
    .ok();
    s.push_str("    const long long n_tiles = (n_p + 31) >> 5;\n");
    s.push_str("    for (long long t = blockIdx.x; t < n_tiles; t += gridDim.x) {\n");
    s.push_str("    const long long p = (t << 5) + lane;\n");
    s.push_str("    const bool active = p < n_p;\n");
    let mut loops = 0;
    for step in &plan.steps {
        match step {
            Step::Let(i) => emit_let(&mut s, plan, *i, &e),
            Step::Loop(temps) => {
                emit_loop(
                    &mut s,
                    plan,
                    temps,
                    None,
                    loops % 2,
                    false,
                    false,
                    Unroll {
                        by: unroll,
                        full: None,
                        waits: false,
                        spill: Some(SpillPass {
                            first: loops == 0,
                            u: SPILL_U,
                        }),
                    },
                    &syntax,
                    &e,
                    &keep,
                    &from_tile,
                );
                loops += 1;
            }
            Step::Select(_) => unreachable!("a spill kernel's plan does not select"),
        }
    }
    match &plan.output {
        Output::Scalars(values) => scalar_stores(&mut s, "active && w == 0", values, &e),
        Output::Batch(column) => {
            let value = batch_value(column, &syntax, &e);
            let body = |from: &dyn Fn(&str) -> String| {
                let mut body = String::new();
                loop_header_with(&mut body, "            ", [column], &e, &plan.ranks, from);
                writeln!(
                    body,
                    "            out0[(long long)b * n_p + p] = psg_store({value});"
                )
                .ok();
                body
            };
            writeln!(
                s,
                "    if (active) {{\n        #pragma unroll {unroll}\n        for (int b = w; b < n_rb; b += 8) {{\n{}        }}\n{}    }}",
                body(&from_tile),
                spill_rows(
                    &body(&|_| "psg_load(psg_raw, u)".into()),
                    SpillPass {
                        first: false,
                        u: SPILL_U,
                    }
                )
            )
            .ok();
        }
    }
    // The next tile's first pass writes the half of `part` that this tile's passes may still
    // be reading.
    s.push_str("    __syncthreads();\n    }\n}\n");
    Some(s)
}
