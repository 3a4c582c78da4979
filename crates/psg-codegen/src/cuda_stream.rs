//! The streaming CUDA kernel: for a reduction that is one pass over the column (its plan has a
//! single loop, no selection, no ranks, and per-column outputs: sums, means, sign sums, scaled
//! sums, minima, maxima, counts), `g` goes from device memory straight to registers.
//!
//! A block of 32 x 8 threads owns `32 * V` consecutive columns, where `V` is the number of
//! elements in 16 bytes (4 for f32, 8 for bf16 and f16, 2 for f64). Thread `(lane, w)` reads the
//! 16-byte vector of columns `lane * V .. lane * V + V` of rows `w, w + 8, ...` (each warp reads
//! whole 512-byte row segments: coalesced), so it holds, for each of its `V` columns, exactly the
//! canonical partial `w` of a sum ([`crate::SUM_PARTIALS`]); four rows are loaded before any is
//! used. For rows that do not start 16-byte aligned the runtime compiles the source's second
//! build, which gathers the same vectors from narrower loads (`PSG_LOADV`; see `cuda_tile.rs`'s
//! `gather`). The 8 warps' partials are combined through shared memory in warp order, so
//! results are bit-identical to the CPU's, the thread-per-column kernel's and the tiled
//! kernel's. Nothing of `g` is staged in shared memory, so the kernel serves every B.
//!
//! It is launched as the tiled kernel is (same parameters, block and persistent grid); it needs
//! no shared memory per element ([`crate::cuda_tile::tile_smem`] reports 0), and its tile is
//! `32 * V` columns, the width the runtime computes for such a kernel.
//!
//! A map of 16-bit input (a per-sample output of the element alone, no pass: [`maps`],
//! [`streams_in`]) runs the same shape of kernel with no partials at all: each vector read is
//! written back as the output's vector (`emit_map`).

use std::fmt::Write;

use crate::cuda::{emit_let, loop_header_with};
use crate::cuda_tile::{combine_warps, kernel_head, partial_slots, vector_unpack};
use crate::expr::{names, Acc, Syntax};
use crate::ir::{Output, ReduceOp, Scalar};
use crate::schedule::{Plan, Step};
use crate::DType;

/// Whether the plan is one pass that the streaming kernel computes: a single loop, no
/// selection, no ranks, per-column outputs.
pub fn streams(plan: &Plan) -> bool {
    let loops = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Loop(_)))
        .count();
    let selects = plan.steps.iter().any(|s| matches!(s, Step::Select(_)));
    loops == 1 && !selects && plan.ranks.is_empty() && matches!(plan.output, Output::Scalars(_))
}

/// Whether the plan is a map: a per-sample output of the element alone (and of per-sample
/// inputs and parameters), no pass over the column, no rank (`sign`, `clip_values`, a user's
/// `g.map(..)`).
pub fn maps(plan: &Plan) -> bool {
    plan.ranks.is_empty()
        && matches!(plan.output, Output::Batch(_))
        && plan.steps.iter().all(|s| matches!(s, Step::Let(_)))
}

/// Whether the streaming kernel computes the plan in `dtype`: a pass of [`streams`], in any
/// dtype, or a map ([`maps`]) of 16-bit input, which `emit_map` reads and writes a 16-byte
/// vector at a time with no shared memory. Against the tiled kernel (H200, same run, `sign`):
/// bf16 0.48 of the time at g[16, 64M], 0.88 at g[256, 4M], 0.58 at g[1024, 1M], 1.01 at
/// g[64, 16M]; but f32 0.88 at g[16, 64M] and 1.02-1.08 at the others, so f32 and f64 maps keep
/// the tiled kernel.
pub fn streams_in(plan: &Plan, dtype: DType) -> bool {
    streams(plan) || (maps(plan) && matches!(dtype, DType::BF16 | DType::F16))
}

/// Shared memory of the streaming kernel: the partials, `slots x 8 warps x 32 * V` accumulators
/// (a plan with one loop: its slots are the loop's); none for a map.
pub fn stream_smem(plan: &Plan, dtype: DType) -> u32 {
    if maps(plan) {
        return 0;
    }
    let (v_log2, _) = vector_unpack(dtype);
    let acc = match dtype.acc() {
        Acc::F32 => 4,
        Acc::F64 => 8,
    };
    (partial_slots(plan) * crate::SUM_PARTIALS * (32 << v_log2) * acc) as u32
}

/// Emits the streaming kernel (named as the tiled kernel) for one input dtype.
pub fn emit(plan: &Plan, dtype: DType) -> String {
    let printer = crate::cuda::Printer::new(plan, dtype);
    let syntax = printer.syntax();
    let e = |expr: &Scalar| printer.e(expr);
    if maps(plan) {
        return emit_map(plan, dtype, &syntax, &e);
    }
    let (v_log2, unpack) = vector_unpack(dtype);
    let v = 1usize << v_log2;
    let width = 32 * v;
    let Some(loop_at) = plan.steps.iter().position(|s| matches!(s, Step::Loop(_))) else {
        unreachable!("a streaming plan has one loop")
    };
    let Step::Loop(temps) = &plan.steps[loop_at] else {
        unreachable!()
    };

    let mut s = stream_head(
        plan,
        dtype,
        "streaming (one read of g, through registers)",
        "    psg_acc* const part = (psg_acc*)psg_smem;\n",
    );
    // Lets before the loop depend on no column.
    for step in &plan.steps[..loop_at] {
        if let Step::Let(i) = step {
            emit_let(&mut s, plan, *i, &e);
        }
    }
    s.push_str("    for (long long t = blockIdx.x; t < n_tiles; t += gridDim.x) {\n");
    writeln!(
        s,
        "    const long long pv = t * {width} + lane * {v}; // this thread's first column"
    )
    .ok();

    // Per-column accumulators, V of each.
    for &t in temps {
        let name = names::temp(t);
        let zero = syntax.literal(0.0);
        match plan.temps[t].reduce.op {
            ReduceOp::Min | ReduceOp::Max => writeln!(
                s,
                "    psg_acc {name}_a[{v}]; bool {name}_anya[{v}];\n    #pragma unroll\n    for (int c = 0; c < {v}; ++c) {{ {name}_a[c] = psg_nan(); {name}_anya[c] = false; }}"
            ),
            ReduceOp::MinTotal => writeln!(
                s,
                "    psg_acc {name}_a[{v}];\n    #pragma unroll\n    for (int c = 0; c < {v}; ++c) {name}_a[c] = psg_total_none();"
            ),
            _ => writeln!(
                s,
                "    psg_acc {name}_a[{v}];\n    #pragma unroll\n    for (int c = 0; c < {v}; ++c) {name}_a[c] = {zero};"
            ),
        }
        .ok();
    }
    // The body for one column c of one row b, from `vals[c]`.
    let mut body = String::new();
    for &t in temps {
        let name = names::temp(t);
        match plan.temps[t].reduce.op {
            ReduceOp::Sum => writeln!(
                body,
                "                psg_acc* const {name}_p = &{name}_a[c];"
            ),
            ReduceOp::Min | ReduceOp::Max => writeln!(
                body,
                "                psg_acc& {name} = {name}_a[c]; bool& {name}_any = {name}_anya[c];"
            ),
            _ => writeln!(body, "                psg_acc& {name} = {name}_a[c];"),
        }
        .ok();
    }
    let columns = temps.iter().map(|&t| &plan.temps[t].reduce.column);
    loop_header_with(
        &mut body,
        "                ",
        columns,
        &e,
        &plan.ranks,
        &|_| "vals[c]".to_string(),
    );
    for &t in temps {
        let r = &plan.temps[t].reduce;
        let update = crate::cuda::update_partial(&r.op, t, &e(&r.column.value), "0", &syntax);
        match r.column.keep.as_ref().map(&e) {
            Some(k) => writeln!(body, "                if ({k}) {{ {update} }}"),
            None => writeln!(body, "                {update}"),
        }
        .ok();
    }
    let column_loop = |s: &mut String| {
        writeln!(
            s,
            "            #pragma unroll\n            for (int c = 0; c < {v}; ++c) {{\n{body}            }}"
        )
        .ok();
    };

    // Rows w, w + 8, ... in order; four loaded before any is used.
    s.push_str("    const int n_bi = (int)n_b;\n");
    s.push_str("    if (vec) {\n");
    s.push_str("        const bool in = pv < n_p;\n");
    four_rows(&mut s, "in && ", "w", "32");
    writeln!(
        s,
        "            const uint4 v = raw[u];\n            __align__(16) psg_acc vals[{v}];\n            psg_acc* const dst = vals;\n            {unpack}"
    )
    .ok();
    column_loop(&mut s);
    s.push_str("            }\n            }\n        }\n");
    s.push_str("    } else {\n");
    s.push_str("        for (int b = w; b < n_bi; b += 8) {\n");
    writeln!(
        s,
        "            psg_acc vals[{v}];\n            #pragma unroll\n            for (int c = 0; c < {v}; ++c) vals[c] = pv + c < n_p ? psg_load(g, (long long)b * n_p + pv + c) : (psg_acc)0;"
    )
    .ok();
    column_loop(&mut s);
    s.push_str("        }\n    }\n");

    // This thread's column c in the partials.
    let mine = format!("lane * {v} + c");
    // Combine the 8 warps' partials in warp order; thread j of the block finishes column j.
    let at =
        |slot: usize, r: &str, col: &str| format!("part[({slot} * 8 + {r}) * {width} + {col}]");
    s.push_str("    #pragma unroll\n");
    writeln!(s, "    for (int c = 0; c < {v}; ++c) {{").ok();
    let mut slot = 0;
    for &t in temps {
        let name = names::temp(t);
        match plan.temps[t].reduce.op {
            ReduceOp::Min | ReduceOp::Max => {
                writeln!(
                    s,
                    "        {} = {name}_a[c]; {} = {name}_anya[c] ? (psg_acc)1 : (psg_acc)0;",
                    at(slot, "w", &mine),
                    at(slot + 1, "w", &mine)
                )
                .ok();
                slot += 2;
            }
            _ => {
                writeln!(s, "        {} = {name}_a[c];", at(slot, "w", &mine)).ok();
                slot += 1;
            }
        }
    }
    s.push_str("    }\n    __syncthreads();\n");
    writeln!(
        s,
        "    for (int j = w * 32 + lane; j < {width}; j += 256) {{\n    const long long p = t * {width} + j;\n    if (p < n_p) {{"
    )
    .ok();
    combine_warps(&mut s, plan, temps, true, &|slot, r| at(slot, r, "j"));
    for step in &plan.steps[loop_at + 1..] {
        if let Step::Let(i) = step {
            emit_let(&mut s, plan, *i, &e);
        }
    }
    if let Output::Scalars(values) = &plan.output {
        for (i, value) in values.iter().enumerate() {
            writeln!(s, "    out{i}[p] = psg_store({});", e(value)).ok();
        }
    }
    s.push_str("    }\n    }\n    __syncthreads();\n    }\n}\n");
    s
}

/// A streaming kernel's loop over rows `w, w + 8, ...` of its vector at `pv`, four loaded (under
/// `guard`, a condition and `&&`, or nothing) before any is used: opens the block of row `b`,
/// whose vector is `raw[u]`. The loop's groups of 32 rows start at row `from` (`w`, or a
/// later group's row `w`) and step by `step` rows (`32`, or a multiple).
fn four_rows(s: &mut String, guard: &str, from: &str, step: &str) {
    writeln!(
        s,
        "        for (int b0 = {from}; b0 < n_bi; b0 += {step}) {{"
    )
    .ok();
    s.push_str("            uint4 raw[4];\n            #pragma unroll\n            for (int u = 0; u < 4; ++u) {\n");
    s.push_str("                const int b = b0 + 8 * u;\n                raw[u] = make_uint4(0u, 0u, 0u, 0u);\n");
    // A 16-byte load, or in the build for unaligned rows the same vector gathered.
    writeln!(
        s,
        "                if ({guard}b < n_bi) raw[u] = PSG_LOADV(g + (long long)b * n_p + pv, pv);\n            }}"
    )
    .ok();
    s.push_str("            #pragma unroll\n            for (int u = 0; u < 4; ++u) {\n");
    s.push_str("            const int b = b0 + 8 * u;\n            if (b < n_bi) {\n");
}

/// A streaming kernel's head: its declaration, `first`, the thread's lane and warp, B, and its
/// tiles of 32 16-byte vectors of columns.
fn stream_head(plan: &Plan, dtype: DType, what: &str, first: &str) -> String {
    let (v_log2, _) = vector_unpack(dtype);
    let width = 32usize << v_log2;
    let mut s = kernel_head(plan, dtype, what);
    s.push_str(first);
    s.push_str("    const int lane = threadIdx.x, w = threadIdx.y;\n");
    writeln!(s, "    const psg_acc {} = (psg_acc)n_b;", names::BATCH).ok();
    writeln!(
        s,
        "    // This kernel's tile is {width} columns (tile_log2 = {}).",
        5 + v_log2
    )
    .ok();
    writeln!(
        s,
        "    const long long n_tiles = (n_p + {}) / {width};",
        width - 1
    )
    .ok();
    s
}

/// The streaming kernel of a map (see [`maps`]): thread `(lane, w)` reads the 16-byte vector of
/// columns `lane * V .. lane * V + V` of rows `w, w + 8, ...` (four rows loaded before any is
/// used, as [`emit`] does), computes the output of each of its V elements, and writes them as one
/// 16-byte vector where the output's row is 16-byte aligned there and the vector lies within P
/// (`psg_vstore`: the output's buffer 16-byte aligned, in the build whose rows of g are, which
/// means P a multiple of V), else element by element. Each warp moves 512 contiguous bytes of a
/// row each way. No shared memory, no barrier. Rows go in groups of 32 (four a warp): block
/// `(x, y)` of a grid `Y` blocks high takes groups `y, y + Y, ...` of its tiles; the runtime
/// launches `Y > 1` where there are fewer tiles of columns than multiprocessors (narrow P): at
/// g[2048, 16K] bf16, 64 tiles, each block walked 2048 rows alone.
fn emit_map(
    plan: &Plan,
    dtype: DType,
    syntax: &crate::cuda::Cuda,
    e: &dyn Fn(&Scalar) -> String,
) -> String {
    let Output::Batch(column) = &plan.output else {
        unreachable!("a map writes a batch")
    };
    let (v_log2, unpack) = vector_unpack(dtype);
    let v = 1usize << v_log2;
    let width = 32 * v;
    let value = crate::cuda_tile::batch_value(column, syntax, e);
    // The loads that column c's output reads: its element `x` (from `load`), per-sample inputs.
    let element = |load: &str| {
        let mut body = String::new();
        crate::cuda::loop_header_with(
            &mut body,
            "                ",
            [column],
            &e,
            &plan.ranks,
            &|_| load.to_string(),
        );
        body
    };

    let mut s = stream_head(
        plan,
        dtype,
        "streaming map (one read of g, one write, through registers)",
        "",
    );
    for step in &plan.steps {
        if let Step::Let(i) = step {
            emit_let(&mut s, plan, *i, &e);
        }
    }
    s.push_str("    const int n_bi = (int)n_b;\n");
    // The row groups of this block: all rows (gridDim.y = 1), or every gridDim.y-th group of 32.
    s.push_str(
        "    const int psg_r0 = w + 32 * (int)blockIdx.y, psg_rstep = 32 * (int)gridDim.y;\n",
    );
    s.push_str(
        "#if PSG_GATHER\n    const bool psg_vstore = false;\n#else\n    const bool psg_vstore = ((unsigned long long)out0 & 15ull) == 0;\n#endif\n",
    );
    s.push_str("    for (long long t = blockIdx.x; t < n_tiles; t += gridDim.x) {\n");
    writeln!(
        s,
        "    const long long pv = t * {width} + lane * {v}; // this thread's first column"
    )
    .ok();
    s.push_str("    if (vec) {\n        if (pv < n_p) {\n");
    four_rows(&mut s, "", "psg_r0", "psg_rstep");
    writeln!(
        s,
        "            const uint4 v = raw[u];\n            __align__(16) psg_acc vals[{v}];\n            psg_acc* const dst = vals;\n            {unpack}\n            __align__(16) psg_elem o[{v}];\n            #pragma unroll\n            for (int c = 0; c < {v}; ++c) {{\n{}                o[c] = psg_store({value});\n            }}\n            psg_elem* const to = out0 + (long long)b * n_p + pv;\n            if (psg_vstore && pv + {v} <= n_p) {{\n                *(uint4*)to = *(const uint4*)o;\n            }} else {{\n                #pragma unroll\n                for (int c = 0; c < {v}; ++c) if (pv + c < n_p) to[c] = o[c];\n            }}",
        element("vals[c]")
    )
    .ok();
    s.push_str("            }\n            }\n        }\n        }\n");
    s.push_str("    } else {\n");
    s.push_str(
        "        for (int b0 = psg_r0; b0 < n_bi; b0 += psg_rstep) {\n        #pragma unroll\n        for (int u = 0; u < 4; ++u) {\n        const int b = b0 + 8 * u;\n        if (b < n_bi) {\n",
    );
    writeln!(
        s,
        "            #pragma unroll\n            for (int c = 0; c < {v}; ++c) {{\n            if (pv + c < n_p) {{\n{}                out0[(long long)b * n_p + pv + c] = psg_store({value});\n            }}\n            }}",
        element("psg_load(g, (long long)b * n_p + pv + c)")
    )
    .ok();
    s.push_str("        }\n        }\n        }\n    }\n    }\n}\n");
    s
}
