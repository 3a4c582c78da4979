//! # psg-codegen
//!
//! The intermediate representation (IR) of psg's batch reductions, its validation, its schedule,
//! and the two emitters: CUDA C (compiled at run time by NVRTC) and Rust (the CPU backend). The
//! `#[batch_reduce]` macro lowers a Rust function to a [`Reduction`] and calls [`generate`]; this
//! crate never touches a device.
//!
//! ```
//! use psg_codegen::{generate, ir::{Column, Output, Reduction}, stats, DType};
//!
//! // fn mean(g: Batch) -> f32 { g.mean() }
//! let reduction = Reduction {
//!     name: "mean".into(),
//!     per_sample: vec![],
//!     scalars: vec![],
//!     lets: vec![],
//!     output: Output::Scalars(vec![stats::mean(Column::input())]),
//! };
//! let generated = generate(&reduction).unwrap();
//! assert_eq!(generated.kernel_names[DType::F32.index()], "mean_f32");
//! assert!(generated.cuda[DType::F32.index()].contains("extern \"C\" __global__ void mean_f32("));
//! assert!(generated.rust.contains("pub fn column"));
//! ```

#![deny(missing_docs)]

pub mod cuda;
pub mod cuda_spill;
pub mod cuda_stream;
pub mod cuda_tile;
pub mod expr;
pub mod ir;
pub mod rust;
pub mod schedule;
pub mod stats;
mod validate;

pub use validate::{validate, CodegenError};

use ir::Reduction;
use schedule::Plan;

/// Sums are accumulated in this many interleaved partials (sample `b` goes to partial `b % 8`,
/// each partial in sample order from +0), then combined in order: `((p0 + p1) + p2) + ...`. Every
/// backend and kernel shape uses this order, so their sums are bit-identical; it also lets the
/// tiled kernel split a column among 8 warps.
pub const SUM_PARTIALS: usize = 8;

/// Version of the code generator; part of every generated kernel's text (and so of its cache key).
pub const CODEGEN_VERSION: &str = concat!("psg-codegen ", env!("CARGO_PKG_VERSION"), "/2");

/// The input dtypes a reduction is generated for, in the runtime's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// IEEE half precision (accumulates in f32).
    F16,
    /// bfloat16 (accumulates in f32).
    BF16,
}

impl DType {
    /// Every dtype, in index order.
    pub const ALL: [DType; 4] = [DType::F32, DType::F64, DType::F16, DType::BF16];

    /// Position in [`DType::ALL`] (and in the runtime's per-dtype arrays).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name, used in kernel names.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    /// The accumulator type of this input dtype.
    pub fn acc(self) -> expr::Acc {
        match self {
            DType::F64 => expr::Acc::F64,
            _ => expr::Acc::F32,
        }
    }
}

/// Everything generated for one reduction.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The schedule the CPU code and the f32 and f64 kernels follow. The f16 and bf16 kernels
    /// follow the same schedule without the sums that take back a mean's rounding
    /// ([`stats::without_rounding_terms`]), which the CPU code leaves unused for them.
    pub plan: Plan,
    /// Kernel names, indexed by [`DType::index`].
    pub kernel_names: [String; 4],
    /// CUDA C sources (thread per column, any B), indexed by [`DType::index`].
    pub cuda: [String; 4],
    /// Tiled kernels' names, indexed by [`DType::index`].
    pub tile_kernel_names: [String; 4],
    /// Tiled CUDA C sources (one read of g, B limited by shared memory).
    pub cuda_tile: [String; 4],
    /// Shared-memory bytes per (sample, column) of the tiled kernel, per dtype.
    pub tile_bytes_per_element: [u32; 4],
    /// Fixed shared-memory bytes per block of the tiled kernel, per dtype, for B up to
    /// [`cuda_tile::PACKED_BINS_MAX_B`].
    pub tile_fixed_bytes: [u32; 4],
    /// The same above [`cuda_tile::PACKED_BINS_MAX_B`] (a selection's digit counts take twice the
    /// bytes there).
    pub tile_fixed_bytes_large: [u32; 4],
    /// The narrowest tile (log2 of its width) of the tiled kernel's fast path, per dtype: 6 where
    /// it computes two columns a thread, else 5.
    pub tile_min_log2: [u32; 4],
    /// Names of the tiled kernels for large B, indexed by [`DType::index`].
    pub tile_large_kernel_names: [String; 4],
    /// Tiled CUDA C sources for B above [`cuda_tile::PACKED_BINS_MAX_B`] (see
    /// [`cuda_tile::emit_large`]), if the reduction selects or pipelines its tile there (in a
    /// dtype where such a reduction does not, the tiled kernel, under its name).
    pub cuda_tile_large: Option<[String; 4]>,
    /// Names of the tiled kernels for B up to [`cuda_tile::MID_MAX_B`], indexed by
    /// [`DType::index`].
    pub tile_mid_kernel_names: [String; 4],
    /// Tiled CUDA C sources for B from [`cuda_tile::SMALL_MAX_B`] + 1 up to
    /// [`cuda_tile::MID_MAX_B`] (see [`cuda_tile::emit_mid`]), if the reduction selects.
    pub cuda_tile_mid: Option<[String; 4]>,
    /// Names of the tiled kernels for small B, indexed by [`DType::index`].
    pub tile_small_kernel_names: [String; 4],
    /// Tiled CUDA C sources for B up to [`cuda_tile::SMALL_MAX_B`] (see
    /// [`cuda_tile::emit_small`]), if the reduction selects.
    pub cuda_tile_small: Option<[String; 4]>,
    /// Spill kernels' names, indexed by [`DType::index`].
    pub spill_kernel_names: [String; 4],
    /// Spill CUDA C sources (plans of streaming passes at a B whose tile does not fit in shared
    /// memory; see [`cuda_spill`]), if the reduction has them.
    pub cuda_spill: Option<[String; 4]>,
    /// Fixed shared-memory bytes per block of the spill kernel, per dtype (see
    /// [`cuda_spill::spill_fixed_bytes`]).
    pub spill_fixed_bytes: [u32; 4],
    /// The spill kernel's passes over its tile (the plan's loops; a per-sample output's loop
    /// not counted).
    pub spill_passes: u32,
    /// Column-mode kernels' names, indexed by [`DType::index`].
    pub column_kernel_names: [String; 4],
    /// Column-mode CUDA C sources (whole columns a thread, for small B; see
    /// [`cuda_tile::has_column_mode`]), if the reduction has them.
    pub cuda_column: Option<[String; 4]>,
    /// Rust source of the CPU modules (`acc32`, `acc64`), naming the runtime as `runtime`.
    pub rust: String,
}

/// Validates, schedules and emits a reduction; the CPU code names the runtime crate by the path
/// `::psg::runtime` (see [`generate_with_runtime`]).
pub fn generate(reduction: &Reduction) -> Result<Generated, CodegenError> {
    generate_with_runtime(reduction, "::psg::runtime")
}

/// As [`generate`], with the path by which the generated Rust code names the runtime crate.
pub fn generate_with_runtime(
    reduction: &Reduction,
    runtime: &str,
) -> Result<Generated, CodegenError> {
    validate(reduction)?;
    let plan = Plan::new(reduction);
    // 16-bit input's kernels come from a plan without the sums of deviations that take back a
    // mean's rounding (see `stats::var`): for such input the variance does without them, and
    // they would cost the kernels that read 16-bit tiles, bound by the instructions they
    // issue. The CPU code computes them and leaves them unused for 16-bit elements
    // (`psg_corrected_squares`), so both backends agree bit for bit.
    let without = stats::without_rounding_terms(reduction);
    let narrow = (without != *reduction).then(|| Plan::new(&without));
    let for_dtype = |d: DType| match (&narrow, d) {
        (Some(narrow), DType::F16 | DType::BF16) => narrow,
        _ => &plan,
    };
    let kernel_names = DType::ALL.map(|d| cuda::kernel_name(for_dtype(d), d));
    let sources = DType::ALL.map(|d| cuda::emit(for_dtype(d), d));
    let rust = rust::emit(&plan, runtime);
    let smem = DType::ALL.map(|d| cuda_tile::tile_smem(for_dtype(d), d));
    let tile_kernels = |has: fn(&Plan) -> bool, emit: fn(&Plan, DType) -> Option<String>| {
        (has(&plan) && has(for_dtype(DType::BF16)))
            .then(|| DType::ALL.map(|d| emit(for_dtype(d), d).unwrap_or_default()))
    };
    Ok(Generated {
        tile_kernel_names: DType::ALL.map(|d| cuda_tile::tile_kernel_name(for_dtype(d), d)),
        cuda_tile: DType::ALL.map(|d| cuda_tile::emit(for_dtype(d), d)),
        tile_bytes_per_element: smem.map(|s| s.0),
        tile_fixed_bytes: smem.map(|s| s.1),
        tile_fixed_bytes_large: smem.map(|s| s.2),
        tile_min_log2: DType::ALL.map(|d| cuda_tile::tile_min_log2(for_dtype(d), d)),
        tile_large_kernel_names: DType::ALL
            .map(|d| cuda_tile::tile_large_kernel_name(for_dtype(d), d)),
        cuda_tile_large: tile_kernels(cuda_tile::has_large_kernel, cuda_tile::emit_large),
        tile_mid_kernel_names: DType::ALL.map(|d| cuda_tile::tile_mid_kernel_name(for_dtype(d), d)),
        cuda_tile_mid: tile_kernels(cuda_tile::has_mid_kernel, cuda_tile::emit_mid),
        tile_small_kernel_names: DType::ALL
            .map(|d| cuda_tile::tile_small_kernel_name(for_dtype(d), d)),
        cuda_tile_small: tile_kernels(cuda_tile::has_small_kernel, cuda_tile::emit_small),
        spill_kernel_names: DType::ALL.map(|d| cuda_spill::spill_kernel_name(for_dtype(d), d)),
        cuda_spill: tile_kernels(cuda_spill::has_spill_kernel, cuda_spill::emit_spill),
        spill_fixed_bytes: DType::ALL.map(|d| cuda_spill::spill_fixed_bytes(for_dtype(d), d)),
        spill_passes: plan
            .steps
            .iter()
            .filter(|s| matches!(s, schedule::Step::Loop(_)))
            .count() as u32,
        column_kernel_names: DType::ALL.map(|d| cuda_tile::column_kernel_name(for_dtype(d), d)),
        cuda_column: tile_kernels(cuda_tile::has_column_mode, cuda_tile::emit_column),
        plan,
        kernel_names,
        cuda: sources,
        rust,
    })
}
