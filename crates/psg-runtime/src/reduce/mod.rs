//! The generic runner of batch reductions. The runtime knows the *shape* of a reduction (its
//! inputs, outputs and launch geometry), never a particular one: those come as a [`ReductionDef`]
//! from the `#[batch_reduce]` macro or from hand-written operations.
//!
//! A reduction maps each column `g[:, p]` (the B values of coordinate p across the batch) to
//! `n` scalars ([`OutputKind::Scalars`]) or to B values ([`OutputKind::Batch`]).

mod column;
mod cpu;
mod cuda;
mod gather;
mod validate;

use half::{bf16, f16};

pub use column::Column;

use crate::device::Device;
use crate::element::Element;
use crate::error::Result;
use crate::jit::KernelSource;
use crate::tensor::Tensor;

/// What a reduction produces for each column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputKind {
    /// `n` values per column: `n` output tensors of shape `g.shape[1..]`.
    Scalars(usize),
    /// B values per column: one output tensor shaped like `g`.
    Batch,
}

/// How the generated kernel expects to be launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LaunchShape {
    /// One thread per column: grid `(ceil(P / block), 1, 1)`, block `(block, 1, 1)`, no dynamic
    /// shared memory.
    ThreadPerColumn {
        /// Threads per block (1 to 1024).
        block: u32,
    },
}

/// A faster kernel for batches whose tile fits in shared memory: a block loads the `B x tile`
/// block of `g` for `tile` consecutive columns once (coalesced), and every pass of the reduction
/// reads it from shared memory, so `g` is read from device memory exactly once.
///
/// Launch: a persistent grid of `min(ceil(P / tile), resident blocks)` blocks that walk the tiles,
/// block `(32, 8, 1)`, dynamic shared memory
/// `B * tile * bytes_per_element + fixed_bytes` (`fixed_bytes_large` where the kernel for large
/// B runs, see [`TiledKernels::kernel_for`]); the kernel takes the fallback's parameters
/// followed by `int tile_log2` (tile = 1 << tile_log2: 32 to 128 columns, as
/// [`TiledKernels::choose`] picks them, which a pipelined kernel for large B relies on; 256 in
/// column mode) and `int vec` (1 when
/// every row of `g` starts 16-byte aligned, so the kernel may load 16-byte vectors).
#[derive(Debug, Clone)]
pub struct TiledKernels {
    /// The kernels, indexed by [`DType::index`](crate::DType::index).
    pub cuda: [KernelSource; 4],
    /// Shared-memory bytes per (sample, column) of the tile, per dtype.
    pub bytes_per_element: [u32; 4],
    /// Shared-memory bytes per block independent of the tile's size, per dtype, for `cuda` and
    /// `small`.
    pub fixed_bytes: [u32; 4],
    /// The same for `large`, whose selections count digits in 32-bit words (where `cuda`'s hold
    /// bit planes, or for 64-bit keys 16-bit digit counts: half the bytes); equal to
    /// `fixed_bytes` for a kernel that does not select.
    pub fixed_bytes_large: [u32; 4],
    /// The narrowest tile (log2 of its width, 5 to 7) of the kernel's fast path, per dtype: 6
    /// where the kernel computes two columns a thread in tiles of 64 columns or more (16-bit
    /// input, plans of streaming passes), else 5. See [`TiledKernels::choose`].
    pub min_tile_log2: [u32; 4],
    /// Column-mode kernels, indexed by [`DType::index`](crate::DType::index), if the reduction has
    /// them: launched as the tiled kernels are, with `tile_log2` = [`COLUMN_TILE_LOG2`] (a
    /// row-major tile of 256 columns, `bytes_per_element` each, no fixed bytes), thread `tid`
    /// computes column `tid` over every sample with no partials in shared memory and no barrier
    /// between passes. See [`TiledKernels::column_fits`].
    pub column: Option<[KernelSource; 4]>,
    /// Kernels for B above [`PACKED_BINS_MAX_B`], indexed by
    /// [`DType::index`](crate::DType::index), if the reduction selects: the same as `cuda` but
    /// each selection counts 8-bit digits in 32-bit words (`fixed_bytes_large`) instead of
    /// selecting over bit planes; or, for a reduction of streaming passes, `cuda` with its tile
    /// pipelined into the first pass: the var, std and z-score mean in f32, bf16 and f16, the
    /// Gaussian sums in f32, those with a per-sample output (the z-score cleaner, the relative
    /// clamp) in bf16 and f16; and `cuda` itself (the same name and source) elsewhere. See
    /// [`TiledKernels::kernel_for`].
    pub large: Option<[KernelSource; 4]>,
    /// Kernels for B from [`SMALL_MAX_B`] + 1 up to [`MID_MAX_B`], indexed by
    /// [`DType::index`](crate::DType::index), if the reduction selects: the same as `cuda` (and
    /// its shared memory) but a bit-sliced selection cuts a column into four parts of 32
    /// samples instead of eight, so that no word of its bit planes is half empty. See
    /// [`TiledKernels::kernel_for`].
    pub mid: Option<[KernelSource; 4]>,
    /// Kernels for B up to [`SMALL_MAX_B`], indexed by [`DType::index`](crate::DType::index), if
    /// the reduction selects: the same as `cuda` but each selection sorts whole columns across
    /// a warp instead of counting digits (same shared memory as `cuda`). See
    /// [`TiledKernels::kernel_for`].
    pub small: Option<[KernelSource; 4]>,
    /// Spill kernels, indexed by [`DType::index`](crate::DType::index), if the reduction's passes
    /// all stream (no selection, no ranks): for a B whose 32-column tile does not fit in the
    /// shared memory the device grants a block, where [`TiledKernels::choose`] gives `None`.
    /// Launched as the tiled kernels are (block `(32, 8, 1)`, a persistent grid walking tiles of
    /// 32 columns), with dynamic shared memory `n_res * 32 * element size + spill_fixed_bytes`
    /// and the fallback's parameters followed by `int n_res` (the rows a block keeps in shared
    /// memory, a multiple of 8; the others are read from `g` again in each pass) and `int vec`
    /// (unused), in the build for how rows are read (see `gather`: with `PSG_GATHER` undefined
    /// the kept rows are copied as 16-byte vectors). The same results as the tiled kernel, bit
    /// for bit. See [`TiledKernels::spill_rows`]; where they run instead of the thread-per-column
    /// kernel, [`TiledKernels::spill_runs`].
    pub spill: Option<[KernelSource; 4]>,
    /// The spill kernels' shared-memory bytes besides their rows, per dtype.
    pub spill_fixed_bytes: [u32; 4],
    /// The spill kernels' passes over their tile (the plan's loops; a per-sample output's loop
    /// not counted): where P fills the GPU, a plan of one pass and a per-sample output runs
    /// thread per column (see [`SPILL_MIN_KEPT_QUARTERS`]).
    pub spill_passes: u32,
}

/// The widest P, in columns a multiprocessor, at which a spill kernel ([`TiledKernels::spill`])
/// always runs instead of the thread-per-column kernel (which then has fewer threads than half
/// of what the multiprocessors hold, 2048 each on an H100 or H200, and waits on its loads). At
/// a wider P it runs where it keeps enough of the rows ([`SPILL_MIN_KEPT_QUARTERS`]).
pub const SPILL_MAX_COLUMNS_PER_SM: usize = 1024;

/// At a P of [`SPILL_MAX_COLUMNS_PER_SM`] columns a multiprocessor or more, a spill kernel runs
/// where it keeps at least this many quarters of the batch's rows in shared memory and makes
/// two passes or more ([`TiledKernels::spill_passes`]); elsewhere the thread-per-column kernel.
/// The spill kernel re-reads the rows it does not keep in each pass, a few at a time a thread:
/// H200, same run, its time over the thread-per-column kernel's (var, z-score mean, z-score
/// removal, Gaussian-weighted sum; the relative clamp, one pass and a per-sample output):
/// - keeping 87% (f32 g[2048, 1M], bf16 g[4096, 512K]): 0.46-0.63; the clamp 1.02-1.09;
/// - keeping 78% (f32 g[2300, 1M], bf16 g[4600, 512K]): 0.56-0.75; the clamp 1.09-1.20;
/// - keeping 44% (f32 g[4096, 256K]): 1.04-1.55.
pub const SPILL_MIN_KEPT_QUARTERS: usize = 3;

/// The column-mode kernels' tile: 256 columns (log2).
pub const COLUMN_TILE_LOG2: u32 = 8;

/// The largest B for which a selecting reduction's tiled kernel ([`TiledKernels::cuda`]) runs;
/// above it, its kernel for large B ([`TiledKernels::large`], with
/// [`TiledKernels::fixed_bytes_large`]).
pub const PACKED_BINS_MAX_B: usize = 256;

/// The largest B for which a selecting reduction runs its kernel for middling B
/// ([`TiledKernels::mid`]), from [`SMALL_MAX_B`] + 1. The tiled kernel ([`TiledKernels::cuda`])
/// selects bit-sliced, a thread's part of a column being 32 of every 8th sample: at B = 128
/// those parts are half empty, and the f32 median took 1.20 of the time of the 8-bit digit
/// passes (H200, g[128, 8M]), where B = 256 took 0.85. The kernel for middling B cuts a column
/// into 4 parts instead: 0.83 of the digit passes' time at B = 128 (f32 median, same run).
pub const MID_MAX_B: usize = 128;

/// The largest B for which a selecting reduction runs its kernel for small B
/// ([`TiledKernels::small`]).
pub const SMALL_MAX_B: usize = 64;

/// The shared memory a tiled kernel prefers to stay within: small enough for three or more
/// blocks per multiprocessor (the kernels are built for four), so that some blocks load while
/// others compute; B = 512 f32 still gets 32-column tiles within it.
pub const TILE_SHARED_PREFERRED: u32 = 72 * 1024;

/// The bytes of `g` a tile should move from device memory: with a few blocks per
/// multiprocessor, enough to keep the memory system busy.
pub const TILE_TARGET_BYTES: u64 = 32 * 1024;

impl TiledKernels {
    /// The tiled kernel for a batch of `batch` samples of `dtype`: the one for small B where the
    /// reduction has one and B is at most [`SMALL_MAX_B`], else the one for middling B where it
    /// has one and B is at most [`MID_MAX_B`], else the one for large B where it has one of its
    /// own and B is above [`PACKED_BINS_MAX_B`], else [`TiledKernels::cuda`]'s (also where the
    /// kernel for large B is that one by name: the same kernel, loaded once).
    pub fn kernel_for(&self, dtype: crate::DType, batch: usize) -> &KernelSource {
        let i = dtype.index();
        match (&self.small, &self.mid, &self.large) {
            (Some(small), _, _) if batch <= SMALL_MAX_B => &small[i],
            (_, Some(mid), _) if batch <= MID_MAX_B => &mid[i],
            (_, _, Some(large)) if self.runs_large(batch) && large[i].name != self.cuda[i].name => {
                &large[i]
            }
            _ => &self.cuda[i],
        }
    }

    /// Whether a batch of `batch` samples runs the kernel for large B (see
    /// [`TiledKernels::kernel_for`]), with [`TiledKernels::fixed_bytes_large`].
    fn runs_large(&self, batch: usize) -> bool {
        self.large.is_some() && batch > PACKED_BINS_MAX_B
    }

    /// The shared memory of the column-mode kernel for a batch of `batch` samples of `dtype`,
    /// when the reduction has one and it should run: when its 256-column tile fits
    /// [`TILE_SHARED_PREFERRED`] (and `device_limit`), so that several blocks share a
    /// multiprocessor: B up to 72 in f32, 144 in bf16 and f16. Measured on an H200 against the
    /// tiled kernel's slabs, whose partials and barriers cost more than the passes themselves at
    /// small B: faster at B = 32 and 64 in f32 and bf16 and at B = 128 in bf16 (64 KiB); slower
    /// at B = 128 in f32, whose 128 KiB tile leaves one block a multiprocessor.
    pub fn column_fits(&self, dtype: crate::DType, batch: usize, device_limit: u32) -> Option<u32> {
        let per = u64::from(self.bytes_per_element[dtype.index()]);
        let bytes = batch as u64 * (1u64 << COLUMN_TILE_LOG2) * per;
        let limit = u64::from(TILE_SHARED_PREFERRED.min(device_limit));
        (self.column.is_some() && batch > 0 && per > 0 && bytes <= limit).then_some(bytes as u32)
    }

    /// The rows a spill kernel's block keeps (`n_res`, a multiple of 8) for a batch of `batch`
    /// samples of `dtype`, and the shared memory they and the partials take: as many rows of 32
    /// columns as `device_limit` (the most shared memory the device grants a block) holds, at
    /// most `batch` rounded up to 8. `None` where the reduction has no spill kernel, or where B
    /// does not fit the kernels' 32-bit sample indices.
    pub fn spill_rows(
        &self,
        dtype: crate::DType,
        batch: usize,
        device_limit: u32,
    ) -> Option<(u32, u32)> {
        if self.spill.is_none() || batch > i32::MAX as usize - 64 {
            return None;
        }
        let fixed = self.spill_fixed_bytes[dtype.index()];
        let row = 32 * dtype.size_in_bytes() as u32;
        let fit = (device_limit.checked_sub(fixed)? / row) & !7;
        let rows = fit.min(batch.next_multiple_of(8) as u32);
        Some((rows, rows * row + fixed))
    }

    /// Whether the spill kernel, keeping `rows` of a batch of `batch` samples (see
    /// [`TiledKernels::spill_rows`]), runs at a P of `width` columns on `multiprocessors`
    /// multiprocessors: always below [`SPILL_MAX_COLUMNS_PER_SM`] columns a multiprocessor;
    /// above, where it keeps [`SPILL_MIN_KEPT_QUARTERS`] of the rows and makes two passes or
    /// more. Elsewhere the thread-per-column kernel runs.
    pub fn spill_runs(&self, rows: u32, batch: usize, width: usize, multiprocessors: u32) -> bool {
        width < multiprocessors as usize * SPILL_MAX_COLUMNS_PER_SM
            || (self.spill_passes >= 2 && 4 * rows as usize >= SPILL_MIN_KEPT_QUARTERS * batch)
    }

    /// The tile (log2 of its width) for a batch of `batch` samples of `dtype`, and the shared
    /// memory it needs: the narrowest tile of 32 (or [`TiledKernels::min_tile_log2`]) to 128
    /// columns that moves at least [`TILE_TARGET_BYTES`] of `g` (enough bytes in flight per
    /// block), within [`TILE_SHARED_PREFERRED`]; for large B, the narrowest such tile within
    /// `device_limit`, the most shared memory the device grants one block (fewer blocks per
    /// multiprocessor, their next tile's loads in flight in registers), else 32 columns there
    /// (a two-columns-a-thread kernel's one-column path: its 64 columns at one block per
    /// multiprocessor still beat 32 at three, bf16 var at B = 1024 2.04x -> 1.40x the floor on an
    /// H200). `None` when 32 columns do not fit (the thread-per-column kernel then runs). Tiles
    /// are never narrower than 32 columns: the kernel keeps them in 32- (or 64-) column slabs, so
    /// that its shared-memory addresses are compile-time offsets. A kernel that keeps no
    /// element in shared memory (`bytes_per_element` 0: it streams `g` through registers) has
    /// a tile of 32 16-byte vectors of columns (128 for f32, 256 for bf16) and serves every B
    /// below 2^31 - 64 (the kernels count samples in 32-bit integers; beyond, thread per column).
    pub fn choose(
        &self,
        dtype: crate::DType,
        batch: usize,
        device_limit: u32,
    ) -> Option<(u32, u32)> {
        let preferred = u64::from(TILE_SHARED_PREFERRED.min(device_limit));
        let per = u64::from(self.bytes_per_element[dtype.index()]);
        let fixed = u64::from(if self.runs_large(batch) {
            self.fixed_bytes_large[dtype.index()]
        } else {
            self.fixed_bytes[dtype.index()]
        });
        let elem = dtype.size_in_bytes() as u64;
        let shared = |log2: u32| batch as u64 * (1u64 << log2) * per + fixed;
        // The kernels count samples in 32-bit integers.
        if batch > i32::MAX as usize - 64 {
            return None;
        }
        if per == 0 {
            // A streaming kernel: its tile is 32 16-byte vectors of columns, for any B.
            let log2 = 5 + (16 / elem).trailing_zeros();
            return (fixed <= u64::from(device_limit)).then_some((log2, fixed as u32));
        }
        let narrowest = self.min_tile_log2[dtype.index()].clamp(5, 7);
        let mut wide = None;
        for log2 in narrowest..=7 {
            if shared(log2) > preferred {
                break;
            }
            wide = Some(log2);
            if batch as u64 * (1u64 << log2) * elem >= TILE_TARGET_BYTES {
                break;
            }
        }
        if let Some(log2) = wide {
            return Some((log2, shared(log2) as u32));
        }
        [narrowest, 5]
            .into_iter()
            .find(|&log2| shared(log2) <= u64::from(device_limit))
            .map(|log2| (log2, shared(log2) as u32))
    }
}

/// The CPU implementation of a reduction for one element type: given one column, write the
/// column's results (n values for `Scalars(n)`, B for `Batch`) into the buffer, which the runtime
/// zeroes before each call.
pub type CpuColumnFn<T> = fn(&Column<'_, T>, &mut [<T as Element>::Acc]);

/// A reduction's CPU implementations, one per dtype.
#[derive(Debug, Clone, Copy)]
pub struct CpuKernels {
    /// For f32 data (f32 arithmetic).
    pub f32: CpuColumnFn<f32>,
    /// For f64 data (f64 arithmetic).
    pub f64: CpuColumnFn<f64>,
    /// For f16 data (f32 arithmetic).
    pub f16: CpuColumnFn<f16>,
    /// For bf16 data (f32 arithmetic).
    pub bf16: CpuColumnFn<bf16>,
}

/// Everything the runtime needs to run one batch reduction on any backend.
///
/// The CUDA kernel for dtype `d` is `cuda[d.index()]`; its parameters, in order, are:
/// `g`, the per-sample vectors, the outputs (all pointers), `B` and `P` (`long long`), then the
/// scalars (`float` when the accumulator is f32, `double` for f64).
#[derive(Debug, Clone)]
pub struct ReductionDef {
    /// The reduction's name, for messages.
    pub name: &'static str,
    /// How many per-sample vectors (shape `[B]`, accumulator dtype) it takes.
    pub n_per_sample: usize,
    /// How many scalar parameters it takes.
    pub n_scalars: usize,
    /// The scalar parameters' names, for messages.
    pub scalar_names: &'static [&'static str],
    /// The per-sample vectors' names, for messages (`#i` where one is missing).
    pub per_sample_names: &'static [&'static str],
    /// What it produces per column.
    pub outputs: OutputKind,
    /// How its kernels are launched.
    pub launch: LaunchShape,
    /// Its CUDA kernels, indexed by [`DType::index`](crate::DType::index): f32, f64, f16, bf16.
    /// They work for any B.
    pub cuda: [KernelSource; 4],
    /// Faster kernels for batches whose tile fits in shared memory, if the reduction has them.
    pub tiled: Option<TiledKernels>,
    /// Its CPU implementations.
    pub cpu: CpuKernels,
}

/// Runs `def` over every column of `g` (shape `[B, ...]`) on `g`'s device.
///
/// `per_sample` are `def.n_per_sample` tensors of shape `[B]` in `g`'s accumulator dtype on `g`'s
/// device; `scalars` are `def.n_scalars` values (converted to the accumulator type). Returns the
/// outputs in `g`'s dtype: `n` tensors of shape `g.shape[1..]` for `Scalars(n)`, one of `g`'s shape
/// for `Batch`.
///
/// On CUDA this returns once the kernel is enqueued; `to_vec` waits for it. Wrong counts, shapes,
/// dtypes or devices are errors naming the reduction and the argument.
pub fn run_reduction(
    def: &ReductionDef,
    g: &Tensor,
    per_sample: &[&Tensor],
    scalars: &[f64],
) -> Result<Vec<Tensor>> {
    let plan = validate::plan(def, g, per_sample, scalars)?;
    match g.device() {
        Device::Cpu => cpu::run(def, g, per_sample, scalars, &plan),
        Device::Cuda(device) => cuda::run(def, &device, g, per_sample, scalars, &plan),
    }
}

#[cfg(test)]
mod tests;
