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
//! is as many as the device grants a block: the runtime passes it), and every pass reads them
//! from there and the others from `g`. At B = 2048 in f32, 1784 rows of 2048 are kept: a second
//! pass re-reads 13% of the tile.
//!
//! How the kept rows get there depends on the build (see `gather` in `cuda_tile`):
//! - rows that start 16-byte aligned, on sm_80 and later: copied by `cp.async` at the tile's
//!   start, 16 bytes a copy, every copy in flight at once, in up to [`SPILL_GROUPS`] groups that
//!   the first pass waits for one at a time (see `copy_kept`). A per-sample output's loop
//!   issues the next tile's copies as it writes (see `spill_pass`);
//! - other rows (`PSG_GATHER` defined): the first pass reads every row from `g`, [`SPILL_U`] at
//!   a time a thread, and stores the kept ones as they pass.
//!
//! A warp copies, and stores, only the rows its passes read, so no block barrier guards the
//! tile: a warp's `__syncwarp` orders its lanes' copies and reads. The rows past the kept ones
//! are loaded [`SPILL_U`] at a time before any is used.
//!
//! Where it runs (`psg_runtime::TiledKernels::spill_runs`): at every P below 1024 columns a
//! multiprocessor, and at wider P where it keeps at least 3/4 of the rows and makes two passes
//! or more; elsewhere the thread-per-column kernel. H200, same runs:
//! - at narrow P the first form (every row through registers, whatever the build) took
//!   0.06-0.21 of the thread-per-column kernel's time at g[2048, 16K] f32 and g[4096, 16K] bf16,
//!   0.26-0.83 at g[2048, 64K] f32 and g[8192, 64K] bf16; the copies then took 0.47-0.70 of the
//!   first form's time at P = 16K and g[2048, 64K], 0.81-1.04 at g[8192, 64K] bf16;
//! - at wide P, with the copies, 0.46-0.75 of the thread-per-column kernel's time at g[2048, 1M]
//!   and g[2300, 1M] f32 and g[4096, 512K] and g[4600, 512K] bf16 (the variance, z-score mean
//!   and removal, Gaussian-weighted sum), but 1.04-1.55 at g[4096, 256K] f32 (44% of the rows
//!   kept), and the relative clamp (one pass and a per-sample output) 1.02-1.20.

use std::fmt::Write;

use crate::cuda::{emit_let, kernel_name, loop_header_with, Printer};
use crate::cuda_tile::{
    batch_value, emit_loop, kernel_decl_at, kernel_head_with, narrow_tile, partial_slots,
    pass_unroll, scalar_stores, streaming_loops, Blocks, Unroll, WAIT_GROUPS,
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

/// A pass of the spill kernel: the first (every row from `g`), or a later one; or the loop of a
/// per-sample output (`output`), the last read of the kept rows, in which the next tile's copies
/// are issued (see [`spill_pass`]); and the rows loaded at a time ([`SPILL_U`]).
#[derive(Clone, Copy)]
pub(crate) struct SpillPass {
    pub(crate) first: bool,
    pub(crate) output: bool,
    pub(crate) u: usize,
}

/// A pass's (or the per-sample output's) loop over the thread's rows from `g`: from row `w`
/// on the first pass (every row, storing those below `n_rb` into the tile), else from
/// `n_rb + w`; `body` is the code for sample `b`, reading its element as `psg_load(psg_raw, u)`.
pub(crate) fn spill_rows(body: &str, pass: SpillPass) -> String {
    let SpillPass { first, u, .. } = pass;
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

/// Groups of `cp.async` copies that fill a tile's kept rows (see `copy_kept`): the first
/// pass computes a group's rows once they land, while the later groups are in flight. At most 8,
/// the most that `psg_wait_groups` tells apart.
pub const SPILL_GROUPS: usize = 8;

/// The device function that copies warp w's kept rows `c0 <= b < c1` (those with b = w mod 8)
/// of tile `tn` straight from `g` to shared memory, 16 bytes a copy (`cp.async`, zero-filled past
/// P), as one group of copies: the build for rows that start 16-byte aligned (`!PSG_GATHER`) on
/// sm_80 and later. A warp copies only the rows its passes read, so its `__syncwarp` after its
/// lanes' waits is all a pass needs before it reads them, and after its reads all the copies
/// of the next tile need before they overwrite them.
fn copy_kept(dtype: DType) -> String {
    // Elements a vector, and vectors a row of 32 elements.
    let per_vector = match dtype {
        DType::F64 => 2,
        DType::F32 => 4,
        DType::F16 | DType::BF16 => 8,
    };
    let vectors = 32 / per_vector;
    format!(
        r#"#if __CUDA_ARCH__ >= 800 && !PSG_GATHER
/* Warp w's kept rows c0 <= b < c1 of tile tn copied to shared memory, one group of cp.async copies. */
__device__ __forceinline__ void psg_copy_kept(psg_elem* tile, const psg_elem* g, long long n_p, long long tn, int c0, int c1) {{
    const int lane = threadIdx.x, w = threadIdx.y;
    const int j = lane % {vectors}, r = lane / {vectors};
    const long long col = (tn << 5) + j * {per_vector};
    const unsigned int bytes = col < n_p ? 16u : 0u;
    for (int b = c0 + w + 8 * r; b < c1; b += {step}) {{
        const psg_elem* src = g + (long long)b * n_p + col;
        const unsigned int dst = (unsigned int)__cvta_generic_to_shared(tile + (b << 5) + j * {per_vector});
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(dst), "l"(bytes ? src : g), "r"(bytes) : "memory");
    }}
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}}
#endif
"#,
        step = 8 * (32 / vectors),
    )
}

/// The chunks of kept rows (`psg_chunk` rows, a multiple of 64, at most [`SPILL_GROUPS`] of
/// them: `psg_groups`), in the copying build (see [`copy_kept`]).
const CHUNKS: &str = r#"#if __CUDA_ARCH__ >= 800 && !PSG_GATHER
    // The kept rows are copied straight to shared memory, every copy in flight at once, in
    // groups of `psg_chunk` rows that the first pass waits for one at a time.
    const int psg_chunk = max(64, ((n_rb + SPILL_GROUPS - 1) / SPILL_GROUPS + 63) & ~63);
    const int psg_groups = (n_rb + psg_chunk - 1) / psg_chunk;
#endif
"#;

/// The copies of a tile's kept rows at its start, in the copying build: every tile's, or, where
/// a per-sample output's loop copies the next tile's (`output`), the block's first.
fn tile_copies(output: bool) -> String {
    let which = if output {
        "    // The first tile's; each later tile's are copied as the output of the one before is written.
    if (t == blockIdx.x)
"
    } else {
        ""
    };
    format!(
        "#if __CUDA_ARCH__ >= 800 && !PSG_GATHER
{which}    for (int c0 = 0; c0 < n_rb; c0 += psg_chunk) psg_copy_kept(tile, g, n_p, t, c0, min(n_rb, c0 + psg_chunk));
#endif
"
    )
}

/// A spill pass's rows (or the per-sample output's), `tile_body` the code for sample `b` read
/// from the tile and `g_body` for sample `b` read from `g` (its element `psg_load(psg_raw, u)`).
///
/// In the build that copies the kept rows by `cp.async` (see [`copy_kept`]) the first pass
/// reads them a group at a time, each once its copies have landed, then the rows past them from
/// `g` ([`spill_rows`]), as later passes do. A per-sample output's loop (`output`), whose
/// samples may come in any order, reads the rows from `g` first, then the kept rows a group at
/// a time, issuing the next tile's copies of each group once the warp has read it: they land
/// while the output is written, and not ahead of this tile's loads from `g`. (Issued in the
/// last pass of sums, whose rows from `g` come after the kept ones, they delayed those loads:
/// H200, two calls beside the same reference binary, the f32 var at g[2048, 1M] took 3.94 ms
/// against 3.60 with the copies at the tile's start.) In the other build the first pass reads every row from `g` and stores the
/// kept ones as they pass.
pub(crate) fn spill_pass(tile_body: &str, by: usize, g_body: &str, pass: SpillPass) -> String {
    let later = spill_rows(
        g_body,
        SpillPass {
            first: false,
            ..pass
        },
    );
    let from_tile = |start: &str, end: &str| {
        format!(
            "        #pragma unroll {by}\n        for (int b = {start}; b < {end}; b += 8) {{\n{tile_body}        }}\n"
        )
    };
    let other = if pass.first {
        spill_rows(g_body, pass)
    } else {
        format!("{}{later}", from_tile("w", "n_rb"))
    };
    let copying = if pass.first {
        format!(
            r#"    for (int psg_b0 = 0, psg_k = 0; psg_b0 < n_rb; psg_b0 += psg_chunk, ++psg_k) {{
        psg_wait_groups(psg_groups - 1 - psg_k);
        __syncwarp();
        if (active) {{
        const int psg_end = min(n_rb, psg_b0 + psg_chunk);
{}        }}
    }}
"#,
            from_tile("psg_b0 + w", "psg_end")
        )
    } else if pass.output {
        format!(
            r#"    if (active) {{
{later}    }}
    for (int psg_b0 = 0; psg_b0 < n_rb; psg_b0 += psg_chunk) {{
        const int psg_end = min(n_rb, psg_b0 + psg_chunk);
        if (active) {{
{}        }}
        // The warp has read these rows: the next tile's copies of them go in flight.
        __syncwarp();
        if (t + gridDim.x < n_tiles) psg_copy_kept(tile, g, n_p, t + gridDim.x, psg_b0, psg_end);
    }}
"#,
            from_tile("psg_b0 + w", "psg_end")
        )
    } else {
        return format!("    if (active) {{\n{other}    }}\n");
    };
    let copying = if pass.output {
        copying
    } else {
        format!("{copying}    if (active) {{\n{later}    }}\n")
    };
    format!(
        "#if __CUDA_ARCH__ >= 800 && !PSG_GATHER\n{copying}#else\n    if (active) {{\n{other}    }}\n#endif\n"
    )
}

/// Emits the spill kernel (see the module docs) for one input dtype, if the plan has one.
///
/// Launch: block `(32, 8, 1)`, a persistent grid walking the tiles of 32 columns, dynamic shared
/// memory `n_res * 32 * sizeof(element) + spill_fixed_bytes`; parameters those of the
/// thread-per-column kernel, then `int n_res` (a multiple of 8) and `int vec` (unused: the
/// build says how rows are read). Two builds, as the tiled kernel's (see the module docs):
/// for rows that start 16-byte aligned the kept rows are copied by `cp.async`; with
/// `PSG_GATHER` defined, and before sm_80, every load is of one element.
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
    let at = kernel_decl_at(&s);
    s.insert_str(at, &copy_kept(dtype));
    s.insert_str(at, WAIT_GROUPS);
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
    s.push_str(&CHUNKS.replace("SPILL_GROUPS", &SPILL_GROUPS.to_string()));
    s.push_str("    for (long long t = blockIdx.x; t < n_tiles; t += gridDim.x) {\n");
    s.push_str("    const long long p = (t << 5) + lane;\n");
    s.push_str("    const bool active = p < n_p;\n");
    s.push_str(&tile_copies(matches!(plan.output, Output::Batch(_))));
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
                            output: false,
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
            s.push_str(&spill_pass(
                &body(&from_tile),
                unroll,
                &body(&|_| "psg_load(psg_raw, u)".into()),
                SpillPass {
                    first: false,
                    output: true,
                    u: SPILL_U,
                },
            ));
        }
    }
    // The next tile's first pass writes the half of `part` that this tile's passes may still
    // be reading.
    s.push_str("    __syncthreads();\n    }\n}\n");
    Some(s)
}
