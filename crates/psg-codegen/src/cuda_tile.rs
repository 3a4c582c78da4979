//! The tiled CUDA kernel: g is read from device memory once.
//!
//! A block of 32 x 8 threads owns `tile` consecutive columns (`tile` = 1 << `tile_log2`, 32 to
//! 128, chosen by the runtime so that a tile moves enough bytes and shared memory fits), kept in
//! 32-column slabs: element `(b, c)` of the tile is at `(c / 32) * B * 32 + b * 32 + c % 32`, so a
//! thread's column is at a fixed stride of 32 and every address of a pass is a register plus a
//! compile-time offset. The tile holds accumulators, or for bf16 and f16 (see `narrow_tile`) the
//! 16-bit elements themselves, widened where a pass reads them (`psg_tile_get`). It loads the
//! `B x tile` block of `g` into shared memory with all 256
//! threads (16-byte vectors stepping by whole rows; the next tile's first vectors are held in
//! registers while the current one is computed), then runs every pass of the schedule from
//! shared memory one slab at a time: thread `(lane, w)` works on column `lane` of the slab and
//! samples `b = w, w + 8, ...`, which is exactly the canonical partial `w` of a sum
//! ([`crate::SUM_PARTIALS`]), so sums are bit-identical to the CPU's and the fallback's. A
//! 16-bit tile of 64 columns or more, for a plan of streaming passes, sits in 64-column slabs
//! instead and each thread computes two neighbouring columns from one 32-bit load (see `pairs`).
//! Partials are combined through shared memory in order, consecutive passes in alternate halves.
//!
//! Selection (k-th smallest) is an exact radix select over the order-preserving keys of the
//! column. Up to [`PACKED_BINS_MAX_B`], on 32-bit keys, it goes a bit at a time over bit planes
//! (`sliced_select`: each thread transposes its 32 keys of a column in registers, and lanes
//! of four (two in the kernel for B up to [`MID_MAX_B`], [`emit_mid`]) count a column's keys
//! with a 0 in the next bit, `popc` and shuffles). Otherwise it counts 8-bit digits: each pass
//! counts, with shared-memory atomics, the digits of the keys that match the prefix found so
//! far (bin `d` of column `lane` in word `d * 32 + lane`, so a warp's columns hit distinct
//! banks; in the packed kernel (64-bit keys), 16-bit counts two a word, in half `d & 1` of word
//! `(d / 2) * 32 + lane`, and in a kernel of its own ([`emit_large`], for B above it) 32-bit
//! counts; a key off the prefix is counted in a row past the counts that nothing reads: cheaper than a branch); the
//! column's 8 threads total 32 digits each, then 4 digits each within the chunk that holds the
//! rank, and one thread picks the digit. Once every column's bucket is small (`GATHER` keys,
//! or `GATHER_SORTED` for a plan's only selection, see `sorts_lists`; 4 where one more digit
//! would finish), one more pass copies each bucket to a list of its column, which is ranked
//! against itself (a warp to a column for small B, a thread to a key from `WARP_RANK_BELOW`)
//! or, where some list of the block is longer than `SORT_ABOVE`, sorted across a warp; a
//! column is also done when every bit is fixed, or when its bucket's least and greatest key
//! are one (a repeated value, such as a gradient's zeros: see `TIED_SHARE`). The value after a
//! selected one (a median's upper middle) comes from the gathered bucket (the least key above
//! the selected one there, else the least above the bucket, which the gathering pass keeps),
//! or from the bit planes, and where some column of the block did not gather, from an integer
//! minimum of keys ([`ReduceOp::MinTotal`]) in the next streaming pass. An order statistic's
//! count of NaNs runs after its selection, and only in a block where some column's first digit
//! pass (or top 8 bit planes) saw a key in the lowest or highest digit, where every NaN is (see
//! `Settled`).
//!
//! Shared memory: `tile` (B x tile accumulators), `keys` (B x tile keys, when the plan selects
//! from a column other than `g` itself, whose keys are read from the tile directly),
//! and a scratch area for partials and histograms (see [`tile_smem`]). One-pass plans get the
//! streaming kernel of [`crate::cuda_stream`] instead (same name and parameters).

use std::fmt::Write;

use crate::cuda::{
    combine_partials, emit_let, header, kernel_name, kernel_params, loop_header_with, prelude,
    update_partial, Cuda, Printer,
};
use crate::expr::{names, print, Acc, Scope, Syntax};
use crate::ir::{BinOp, Column, Func, Output, ReduceOp, Scalar, UnOp};
use crate::schedule::{Plan, Step};
use crate::DType;

/// Warps per block (and partials per sum).
const WARPS: usize = crate::SUM_PARTIALS;
/// Histogram bins per radix pass (8-bit digits).
const BINS: usize = 256;
/// The most keys a selection gathers and ranks among themselves instead of counting another
/// digit (see `emit_select`): some 4 instructions a compare (a column of 32 keys costs each of
/// its threads about 130 where a thread ranks a key, see [`WARP_RANK_BELOW`]), against a digit
/// pass over the whole block of about 300 instructions a thread plus 9 for each of its B / 8
/// keys. The block gathers
/// only when every column can. Where one more digit pass would finish every column (bf16 after
/// its first digit), it gathers only buckets of at most 4 keys, and for B > 512 lets that last
/// digit pass finish instead (copying the keys costs as much as counting them, without the
/// search). The lists take `32 * (GATHER + 1)` keys of the digit counts' area.
const GATHER: usize = 32;
// A key to a lane; the lists (of 8-byte keys at most) fit in the digit counts.
const _: () = assert!(GATHER <= 32 && 32 * (GATHER + 1) * 8 <= BINS / 2 * 32 * 4);

/// The most keys a selection gathers where its lists may be sorted ([`sorts_lists`]): a
/// column's list is then sorted across a warp (bitonic, [`WARP_SORTS`]) when some list of the
/// block is longer than [`SORT_ABOVE`]. With normal data at B = 256 about one column in eight
/// has more than 32 keys in its median's first-digit bucket, and a block whose columns all
/// gather skips the second digit pass. On an H100, psg-bench against the kernels before, same
/// run: the f32 median 0.97 of the time at g[256, 4M] and 0.96 at g[1024, 1M], the quantile at
/// 0.9 0.79 and kth 0.84 at g[64, 16M], the clipped median 0.96-0.98; the lower median at
/// g[64, 16M] 1.03 and kth at g[256, 4M] 1.01. Plans of two selections keep [`GATHER`]: with
/// the sorts NVRTC spilled in the MAD's kernels (hand-edited, 1.02-1.10 of the time).
const GATHER_SORTED: usize = 64;
// 4-byte keys only (see `sorts_lists`): the lists fit in the packed digit counts.
const _: () = assert!(32 * (GATHER_SORTED + 1) * 4 <= BINS / 2 * 32 * 4);

/// Lists of at most this many keys are ranked as with [`GATHER`] (a compare a key of the list,
/// cheaper than a sort for short lists); longer ones, anywhere in the block, make the block
/// sort every list.
const SORT_ABOVE: usize = 16;

/// Bitonic sorts across a warp, ascending: four lists of up to 32 keys at once (a key of each to
/// a lane; their chains of shuffles overlap), and one list of up to 64 (positions `lane` and
/// `32 + lane`). Padding with the largest key sorts it to the end.
const WARP_SORTS: &str = r#"__device__ __forceinline__ void psg_warp_sort32x4(psg_key (&x)[4], int lane) {
    #pragma unroll
    for (int k = 2; k <= 32; k <<= 1) {
        #pragma unroll
        for (int j = k >> 1; j > 0; j >>= 1) {
            const bool keep_min = ((lane & j) == 0) == ((lane & k) == 0 || k == 32);
            #pragma unroll
            for (int i = 0; i < 4; ++i) {
                const psg_key y = __shfl_xor_sync(0xffffffffu, x[i], j);
                x[i] = keep_min ? min(x[i], y) : max(x[i], y);
            }
        }
    }
}
__device__ __forceinline__ void psg_warp_sort64(psg_key& a, psg_key& b, int lane) {
    // Each half sorted (a ascending, b descending), then merged.
    #pragma unroll
    for (int k = 2; k <= 32; k <<= 1) {
        #pragma unroll
        for (int j = k >> 1; j > 0; j >>= 1) {
            const psg_key ya = __shfl_xor_sync(0xffffffffu, a, j), yb = __shfl_xor_sync(0xffffffffu, b, j);
            const bool lo = (lane & j) == 0;
            const bool ka = lo == ((lane & k) == 0 || k == 32);
            const bool kb = k == 32 ? !lo : ka;
            a = ka ? min(a, ya) : max(a, ya);
            b = kb ? min(b, yb) : max(b, yb);
        }
    }
    const psg_key l = min(a, b), h = max(a, b);
    a = l;
    b = h;
    #pragma unroll
    for (int j = 16; j > 0; j >>= 1) {
        const psg_key ya = __shfl_xor_sync(0xffffffffu, a, j), yb = __shfl_xor_sync(0xffffffffu, b, j);
        const bool lo = (lane & j) == 0;
        a = lo ? min(a, ya) : max(a, ya);
        b = lo ? min(b, yb) : max(b, yb);
    }
}
"#;

/// Up to this B a selecting reduction runs a kernel of its own ([`emit_small`]): no digit passes,
/// each warp sorts four whole columns, 8 lanes a column (`SMALL_SORTS`), and reads the selected
/// key, the keys at or below it and the least above it off the sorted lists. The digit passes'
/// fixed work (clearing, totalling and searching 256 bins a column) is the same for 64 keys as
/// for 384, and the warp ranking of the gathered lists a column at a time took a quarter of the
/// f32 median's time at B = 64. In one kernel with the digit passes the sorts' registers made
/// NVRTC spill, and the B = 256 path slowed by 14-19%; hence a kernel of its own. Up to B = 128
/// (16 lanes a column) measured mixed against the digit passes (0.75-1.09), so 64. The runtime
/// launches it for B up to this (`TiledKernels::kernel_for`).
pub const SMALL_MAX_B: usize = 64;
// A column's keys in a list of its own, where the digit counts would be (8-byte keys too).
const _: () = assert!(32 * (SMALL_MAX_B + 1) * 8 <= (BINS / 2 + WARPS) * 32 * 4);

/// A list of `8 R` keys sorted ascending by 8 lanes of a warp (lanes `8g .. 8g + 7`, `q` the lane
/// among them), `R` keys a lane (positions `qR .. qR + R - 1` in `a`): a bitonic sort whose
/// merges start by pairing mirrored positions, so that every pair puts its minimum at the lower
/// position. Pairs within a lane (the first `log2 R` steps of every merge: 15 of 21 steps for 64
/// keys) cost two instructions and no shuffle; across lanes, a shuffle and a select of the
/// minimum or maximum. Against a key a lane (`psg_warp_sort32x4`, `psg_warp_sort64`): about 33
/// instructions a key instead of 63 for 64 keys, 27 instead of 45 for 32.
const SMALL_SORTS: &str = r#"template <int R>
__device__ __forceinline__ void psg_group_sort(psg_key (&a)[R], int q) {
    #pragma unroll
    for (int k = 2; k <= 8 * R; k <<= 1) {
        #pragma unroll
        for (int j = k >> 1; j > 0; j >>= 1) {
            // A merge's first step pairs mirrored positions, the others positions j apart; the
            // lower position of a pair takes the minimum.
            const int m = j == (k >> 1) ? k - 1 : j;
            if (m < R) {
                #pragma unroll
                for (int i = 0; i < R; ++i) {
                    if (i < (i ^ m)) {
                        const psg_key lo = min(a[i], a[i ^ m]), hi = max(a[i], a[i ^ m]);
                        a[i] = lo;
                        a[i ^ m] = hi;
                    }
                }
            } else {
                // Position qR + i pairs with position (q ^ m / R) R + (i ^ m % R) of another lane.
                const bool lower = (q & (j / R)) == 0;
                psg_key b[R];
                #pragma unroll
                for (int i = 0; i < R; ++i) b[i] = __shfl_xor_sync(0xffffffffu, a[i ^ (m % R)], m / R);
                #pragma unroll
                for (int i = 0; i < R; ++i) a[i] = lower ? min(a[i], b[i]) : max(a[i], b[i]);
            }
        }
    }
}
"#;

/// A bitonic list of `8 R` keys (falling, then rising: the MAD's distances along the median's
/// sorted list, [`merged_select`]) sorted ascending by 8 lanes as [`SMALL_SORTS`] holds them:
/// the half-cleaners of a bitonic merge, positions `j` apart paired from `j = 4R` down, so 6
/// steps for 64 keys (3 within a lane) where the sort takes 21.
const SMALL_MERGE: &str = r#"template <int R>
__device__ __forceinline__ void psg_group_merge(psg_key (&a)[R], int q) {
    #pragma unroll
    for (int j = 4 * R; j > 0; j >>= 1) {
        if (j < R) {
            #pragma unroll
            for (int i = 0; i < R; ++i) {
                if ((i & j) == 0) {
                    const psg_key lo = min(a[i], a[i | j]), hi = max(a[i], a[i | j]);
                    a[i] = lo;
                    a[i | j] = hi;
                }
            }
        } else {
            const bool lower = (q & (j / R)) == 0;
            #pragma unroll
            for (int i = 0; i < R; ++i) {
                const psg_key b = __shfl_xor_sync(0xffffffffu, a[i], j / R);
                a[i] = lower ? min(a[i], b) : max(a[i], b);
            }
        }
    }
}
"#;

/// Whether selection `t` gathers up to [`GATHER_SORTED`] keys and may sort its lists: the plan's
/// only selection, on 4-byte keys, and not a bf16 column's own keys (fixed after two digits, the
/// second of which it counts instead of gathering, see `emit_select`).
fn sorts_lists(plan: &Plan, t: usize, input: Option<DType>, key_bits: u32) -> bool {
    let selections = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Select(_)))
        .count();
    selections == 1 && key_bits == 32 && !bf16_own_keys(plan, t, input)
}

/// The largest B of the kernel for selecting plans that [`emit`] writes (the packed kernel);
/// above it, a kernel of its own counts 8-bit digits in 32-bit words ([`emit_large`]). Up to
/// it, a selection on 32-bit keys (f32 accumulators: f32, bf16 and f16 input) is bit-sliced
/// (`sliced_select`), a thread's part of a column being 32 samples (so B <= 8 * 32; up to
/// [`MID_MAX_B`] the kernel of [`emit_mid`] runs, four parts a column); on
/// 64-bit keys it counts digits in 16-bit halves, two bins a word: 16 KiB of counts instead of
/// 32, and the multiprocessor keeps the rest as L1 cache, which NVRTC's kernels use (the f32
/// median at B = 256 took 0.90 of the time of the same kernel given 16 KiB more shared
/// memory, on an H100, when it counted digits too). In the kernel for large B a key's count
/// costs 1 instruction instead of 6, which at B = 1024 outweighs the cache (the f32 median 0.93
/// of the packed kernel's time, the bf16 trimmed mean 0.90). One kernel choosing its layout at
/// run time measured 2-3% slower at B <= 256 (its code for both). The runtime launches the
/// matching kernel and shared memory (`TiledKernels::kernel_for`, `fixed_bytes_large`).
pub const PACKED_BINS_MAX_B: usize = 256;
// A thread's part of a column in a bit-sliced selection is 32 samples of a word's bits.
const _: () = assert!(PACKED_BINS_MAX_B <= 32 * WARPS);

/// The largest B of the kernel for selecting plans that [`emit_mid`] writes, which the runtime
/// runs from [`SMALL_MAX_B`] + 1 up to this (`TiledKernels::kernel_for`). Its bit-sliced
/// selections (`sliced_select`) cut a column into four parts of 32 samples instead of eight,
/// so that no word of a plane is half empty at B = 128: four warps transpose keys, and lanes
/// of two select a column (one shuffle a bit). On an H200 at g[128, 8M], the f32 median took
/// 0.93 of the time of the 8-bit digit passes and bf16 0.60 (hand-edited kernels, results bit
/// for bit the same), where the packed kernel's eight half-empty parts took 1.20 of it
/// (f32). At B = 96 the f32 median took 1.01 of the digit passes' time, bf16 0.66. On 64-bit
/// keys the kernel is the packed kernel's (digit counts).
pub const MID_MAX_B: usize = 128;
const _: () = assert!(MID_MAX_B <= 32 * 4 && SMALL_MAX_B < MID_MAX_B);

/// Below this B the gathered lists are ranked a warp to a column (see `emit_select`); from it, a
/// thread to a key. A thread's B / 8 keys make a digit or gathering pass cheap beside ranking
/// lists of up to `GATHER` keys at small B, where the lists' lengths vary most between columns;
/// a warp's work follows each list's length, a thread's the longest list of its warp's columns.
/// On an H100, the thread's way took 0.92 of the warp's time for the f32 median at B = 256 and
/// 0.95 at B = 1024; the warp's way 0.71 of the thread's at B = 128 and 0.92 at B = 64 (the
/// f32 median; the quantile and trimmed mean at B = 128 went the other way, 1.15 and 1.10).
const WARP_RANK_BELOW: usize = 192;

/// What a selection finds beyond its value, for the passes after it that it settles (see
/// [`Settled`]).
#[derive(Clone, Copy)]
struct SelectFlags {
    /// `{t}_clean`: no column of the block can hold a NaN ([`Settled::NoNan`]).
    clean: bool,
    /// `{t}_le` and `{t}_above`, the next value's reductions ([`Settled::AtOrBelow`],
    /// [`Settled::Above`]), and `{t}_next`: whether every column of the block has them (it
    /// gathered its bucket). Where no kept value lies above the selected one, `{t}_above` is the
    /// largest key, whose value is `psg_total_none()`: what the pass's minimum over nothing gives
    /// (a column whose selected value is its greatest, as where most of its values are one
    /// repeated maximum, made the whole block run the pass).
    next: bool,
    /// Whether the digit counts are 16-bit halves (the kernel for B up to
    /// [`PACKED_BINS_MAX_B`]) or 32-bit words.
    packed: bool,
    /// The kernel for B up to [`SMALL_MAX_B`]: whole columns sorted instead of digit passes.
    small: bool,
    /// A bit-sliced selection ([`sliced_select`]) instead of digit passes.
    sliced: bool,
    /// The plan's first bit-sliced selection: it issues the next tile's loads.
    fetch: bool,
    /// A bit-sliced selection's parts of 32 samples a column (log2): 3, or 2 in the kernel for
    /// B up to [`MID_MAX_B`].
    parts_log2: u32,
    /// The plan reads the next value only where it is not a tie (see [`tie_unread`]).
    tie_unread: bool,
    /// A bit-sliced selection may split its keys (see [`sliced_select`], 5.): the plan's only
    /// one (a paired selection's two count as one), or its first on a column's own keys.
    split: bool,
    /// The bit planes hold only the keys' top 16 (see [`half_planes`]).
    half_planes: bool,
    /// `{t}_lec`, `{t}_ltc` and `{t}_cnt`: the counts at or below and below the value
    /// ([`Settled::CountLe`], [`Settled::CountLt`]; which of them the plan reads), and whether
    /// every column of the block has them.
    counts: Counts,
}

/// Which of a selection's counts ([`Settled::CountLe`], [`Settled::CountLt`]) a plan reads.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    le: bool,
    lt: bool,
}

impl Counts {
    fn any(self) -> bool {
        self.le || self.lt
    }
}

/// A second selection that a bit-sliced one makes beside its own, on the same bit planes (in the
/// kernel for small B, off the same sorted list): its temporary and whether its NaN guard is
/// needed (as [`SelectFlags::clean`]).
#[derive(Clone, Copy)]
struct Paired {
    t: usize,
    clean: bool,
    counts: Counts,
}

/// Column `c`'s values and elements as a selecting lane reads them (`c`, the column it selects
/// in, is not its own `lane`): the per-column values printed with the suffix `_c` (see
/// [`OtherKey`]) and the tile's elements of column `c` (`tcc`).
struct OtherColumn<'a> {
    e: &'a dyn Fn(&Scalar) -> String,
    from_tile: &'a dyn Fn(&str) -> String,
}

/// The key of sample `b` of column `c` in a selecting lane of a bit-sliced selection on
/// computed keys, for its tie check (see [`TIE_AT`]) and a lone key's bits after an early stop
/// (see [`sliced_select`]): `shuffles` binds column `c`'s per-column values that the key
/// reads (named with `_c`) from lane `c`, where every warp holds them, and `key` binds `key` for
/// sample `b` of column `c` from the tile.
struct OtherKey {
    shuffles: String,
    key: String,
}

/// A [`Paired`] selection as `sliced_select` and `small_select` write it: its temporary's name,
/// whether its NaN guard is needed, and its rank's expression.
struct PairedCode {
    name: String,
    clean: bool,
    rank: String,
    counts: Counts,
}

/// A selection in the kernel for small B on the distances `|x - m|` of a column's values from a
/// per-column value `m` (the MAD's, `m` the median), where the selection before it sorted the
/// column's own keys into its lists and nothing has written them since: along that list the
/// distances fall, then rise, so [`small_select`] sorts them with one bitonic merge instead of
/// gathering and sorting them (see [`merged_runs`], [`merged_select`]). `intact` is the
/// block-wide condition under which the lists are still there and hold no NaN (the selection
/// before's NaN guard, and the flags of every pass since, each settled); `shuffles`
/// binds column `c`'s per-column values that the distance reads (named with `_c`, as
/// [`OtherKey`]'s); `key` is the distance's key of an element `x` of column `c`; `m` prints `m`
/// for the thread's own column.
struct MergeCode {
    intact: String,
    shuffles: String,
    key: String,
    m: String,
}

/// Where selection `t` selects among `|x - m|` of every value `x` of the column, `m` a
/// per-column value (no element, per-sample value or rank in it): `m`. Not where the plan
/// writes a batch (the MAD's cleaner): at its three blocks' 80 registers the merge made NVRTC
/// keep 4 bytes a thread in local memory (bf16 and f16), so it gathers and sorts.
fn merged_runs(plan: &Plan, t: usize) -> Option<&Scalar> {
    if matches!(plan.output, Output::Batch(_)) {
        return None;
    }
    let c = &plan.temps[t].reduce.column;
    let Scalar::Call(Func::Abs, args) = &c.value else {
        return None;
    };
    let [Scalar::Binary(BinOp::Sub, x, m)] = args.as_slice() else {
        return None;
    };
    fn per_column(e: &Scalar) -> bool {
        match e {
            Scalar::Load | Scalar::LoadPerSample(_) | Scalar::Rank(_) | Scalar::Reduce(_) => false,
            _ => e.children().into_iter().all(per_column),
        }
    }
    (c.keep.is_none() && **x == Scalar::Load && per_column(m)).then_some(&**m)
}

/// Shared-memory needs of the tiled kernel: bytes per (sample, column), and fixed bytes per block
/// for B up to [`PACKED_BINS_MAX_B`] and above it (a selection's digit counts take twice the
/// bytes there).
pub fn tile_smem(plan: &Plan, dtype: DType) -> (u32, u32, u32) {
    if crate::cuda_stream::streams_in(plan, dtype) {
        let fixed = crate::cuda_stream::stream_smem(plan, dtype);
        return (0, fixed, fixed);
    }
    let transformed = tile_transform(plan);
    let narrow = narrow_tile(dtype, transformed.is_some());
    let plan = transformed.as_ref().map_or(plan, |(p, _)| p);
    let acc = match dtype.acc() {
        Acc::F32 => 4u32,
        Acc::F64 => 8,
    };
    let selects = plan.steps.iter().any(|s| matches!(s, Step::Select(_)));
    let tile_bytes = if narrow { 2 } else { acc };
    let per_element = tile_bytes + if needs_key_array(plan) { acc } else { 0 };
    // Two halves of partials (see `emit_loop`), for 64 columns a slab where a thread computes
    // two (see `pairs`).
    let columns = if pairs(plan, dtype, transformed.is_some()) {
        64
    } else {
        32
    };
    let partials = 2 * partial_slots(plan) as u32 * (WARPS as u32) * columns * acc;
    // Chunk totals, the pick (3 rows), keys (the found ones and `over`'s two rows), digit counts
    // (16-bit counts two a word up to `PACKED_BINS_MAX_B`, 32-bit above), and a row a warp for
    // the keys off the prefix (see `emit`, `emit_select`).
    let histogram = |bins: usize| {
        if selects {
            ((WARPS + 3 + bins + WARPS) * 32 * 4) as u32 + 3 * 32 * acc
        } else {
            0
        }
    };
    let input = if transformed.is_some() {
        None
    } else {
        Some(dtype)
    };
    // Up to `PACKED_BINS_MAX_B`, 32-bit keys are bit-sliced: the same header, then the planes
    // (see `sliced_select`); half of them where `half_planes`, but not less than the sorted
    // lists of the kernel for small B, which take the same scratch (see `SMALL_MAX_B`).
    let plane_bytes = if half_planes(plan, input) {
        (PLANE_BYTES / 2).max((BINS / 2 + WARPS) * 32 * 4)
    } else {
        PLANE_BYTES
    };
    let packed = match dtype.acc() {
        Acc::F32 if selects => ((WARPS + 3) * 32 * 4 + plane_bytes) as u32 + 3 * 32 * acc,
        _ => histogram(BINS / 2),
    };
    (
        per_element,
        partials.max(packed),
        partials.max(histogram(BINS)),
    )
}

/// Whether the tile keeps a dtype's elements as they are in `g` (16 bits) and widens them where a
/// pass reads them (`psg_load`'s widening: one shift for bf16, one conversion for f16), for half
/// the shared memory (more blocks per multiprocessor) and a tile copied straight from `g`. Never
/// a transformed tile (it holds f32 products).
pub(crate) fn narrow_tile(dtype: DType, transformed: bool) -> bool {
    !transformed && matches!(dtype, DType::BF16 | DType::F16)
}

/// The column-mode kernel's tile: 256 columns.
pub const COLUMN_TILE_LOG2: u32 = 8;

/// Whether the plan has a column-mode kernel ([`emit_column`]): a plan of streaming passes (see
/// `streaming_passes`) whose tile holds the elements as loaded (no stored expression). Its tile
/// is 256 columns, row-major, and thread `tid` computes column `tid` over every sample, all 8
/// partials of each sum in registers: no partials in shared memory and no barrier between
/// passes, which dominate a slab's work at small B (bf16 var on an H200, hand-written form:
/// 2.00x -> 1.29x the floor at B = 64, 3.49x -> 1.18x at B = 32). The runtime takes it where its
/// tile fits the preferred shared memory (`TiledKernels::column_fits`: B up to 72 in f32, 144 in
/// bf16). Per-column outputs, or a per-sample one after at least one pass (`streaming_loops`;
/// the thread writes its column's every sample, the block 256 consecutive elements a sample):
/// z-score removal, H200, same run, against the tiled kernel, 0.34, 0.64 and 0.90 of the time
/// at B = 16, 32 and 64 in f32, 0.41, 0.48, 0.70 and 0.90 at B = 16, 32, 64 and 128 in bf16.
pub fn has_column_mode(plan: &Plan) -> bool {
    !crate::cuda_stream::streams(plan)
        && streaming_loops(plan)
        && (matches!(plan.output, Output::Scalars(_))
            || plan.steps.iter().any(|s| matches!(s, Step::Loop(_))))
        && tile_transform(plan).is_none()
}

/// The narrowest tile (log2 of its width) of the tiled kernel's fast path: 6 where it computes
/// two columns a thread (see `pairs`; 32-column tiles take its slower one-column path), else 5.
pub fn tile_min_log2(plan: &Plan, dtype: DType) -> u32 {
    if crate::cuda_stream::streams_in(plan, dtype) {
        return 5;
    }
    if pairs(plan, dtype, tile_transform(plan).is_some()) {
        6
    } else {
        5
    }
}

/// Whether the tiled kernel computes two neighbouring columns in each thread where the tile is
/// 64 columns or wider (`tile_log2 >= 6`, which the runtime gives it wherever the device grants
/// the shared memory, see [`tile_min_log2`]; narrower tiles, for B beyond that, take the
/// one-column path in the same kernel): a narrow tile's 16-bit elements are kept in 64-column slabs, so that one
/// 32-bit shared-memory load gives a thread both its columns' elements of a sample, each widened
/// from its half of the word (`psg_pair_get`). The loads, the loop's own instructions and the
/// per-slab costs (combining partials, barriers) per element halve; the arithmetic per element
/// does not change, nor does any result (each column's partials are the same sums in the same
/// order). On an H200 at g[256, 4M] bf16 (same run) this took var from 1.40x to 1.10x the floor,
/// the Gaussian-weighted sum from 2.22x to 1.79x (BENCHMARKS.md). Each path's loads keep
/// compile-time slab addresses (`tile_loop_start`): a slab width chosen at run time cost nearly
/// all of that. For plans of streaming passes, no selection and no ranks, with per-column
/// outputs or a per-sample one; the latter's two columns of a sample are one 32-bit store where
/// the output's rows are 4-byte aligned (see [`emit_pair_slabs`]).
fn pairs(plan: &Plan, dtype: DType, transformed: bool) -> bool {
    narrow_tile(dtype, transformed) && streaming_loops(plan)
}

/// A plan whose passes are all streaming reductions (sums, counts, minima, maxima) with
/// per-column outputs: no selection, no ranks, no per-sample output.
fn streaming_passes(plan: &Plan) -> bool {
    matches!(plan.output, Output::Scalars(_)) && streaming_loops(plan)
}

/// A plan whose passes are all streaming reductions (sums, counts, minima, maxima), whatever its
/// output: no selection, no ranks.
pub(crate) fn streaming_loops(plan: &Plan) -> bool {
    plan.ranks.is_empty()
        && plan.steps.iter().all(|step| match step {
            Step::Select(_) => false,
            Step::Loop(temps) => temps
                .iter()
                .all(|&t| plan.temps[t].reduce.op != ReduceOp::MinTotal),
            Step::Let(_) => true,
        })
}

/// Samples per iteration of a thread's loop in a pass over the tile. 8 for passes whose
/// instructions, not memory, bound them: every pass over a narrow tile (half the bytes of f32 for
/// the same work per element) and plans that evaluate `exp`, `ln` or the Gaussian per element;
/// there the loop's own instructions (index, address, compare, branch) per element halve (at
/// g[256, 4M] on an H200, same run: bf16 var 1.50x -> 1.42x the floor, the f32
/// Gaussian-weighted sum 1.21-1.27x -> 1.17-1.18x). 4 elsewhere: f32 var, bound by memory,
/// measured 0.99x -> 1.04x with 8.
pub(crate) fn pass_unroll(plan: &Plan, narrow: bool) -> usize {
    if narrow || per_element_transcendental(plan) {
        8
    } else {
        4
    }
}

/// Whether a pass of the plan (or its per-sample output) evaluates `exp`, `ln` or the Gaussian
/// per element.
fn per_element_transcendental(plan: &Plan) -> bool {
    let mut columns: Vec<&Column> = plan.temps.iter().map(|t| &t.reduce.column).collect();
    if let Output::Batch(c) = &plan.output {
        columns.push(c);
    }
    columns
        .iter()
        .any(|c| c.value_and_keep().any(transcendental))
}

/// Whether `node` evaluates `exp`, `ln` or the Gaussian.
fn transcendental(node: &Scalar) -> bool {
    matches!(
        node,
        Scalar::Call(
            Func::Exp | Func::Ln | Func::NormalPdf | Func::NormalKernel,
            _
        )
    ) || node.children().into_iter().any(transcendental)
}

/// Partial slots (accumulators per thread) the widest pass of the plan combines.
pub(crate) fn partial_slots(plan: &Plan) -> usize {
    plan.steps
        .iter()
        .map(|s| match s {
            Step::Loop(temps) => temps
                .iter()
                .map(|&t| slots_of(&plan.temps[t].reduce.op))
                .sum(),
            Step::Select(_) | Step::Let(_) => 0,
        })
        .max()
        .unwrap_or(0)
        .max(1)
}

/// Where a selection's keys come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keys {
    /// The column is `g` itself: keys are the tile's values, all B kept.
    Direct,
    /// The column is a cheap function of the element (no ranks): its keys are recomputed from
    /// the tile at every pass, so no key array is needed.
    Computed,
    /// The column uses ranks (an inner loop over the tile): its keys are computed once into the
    /// key array.
    Stored,
}

fn keys_of(plan: &Plan, t: usize) -> Keys {
    let c = &plan.temps[t].reduce.column;
    if c.value == Scalar::Load && c.keep.is_none() {
        Keys::Direct
    } else if crate::expr::rank_columns(c.value_and_keep()).is_empty() {
        Keys::Computed
    } else {
        Keys::Stored
    }
}

/// Whether selection `t` selects among a bf16 column's own keys (`input` is the tile's input
/// dtype, `None` for a transformed tile): fixed after two 8-bit digits, since a widened bf16
/// value has 16 clear mantissa bits (see `emit_select`), which decides how its selection ends.
fn bf16_own_keys(plan: &Plan, t: usize, input: Option<DType>) -> bool {
    keys_of(plan, t) == Keys::Direct && input == Some(DType::BF16)
}

/// Whether the plan selects, and every selection is on a bf16 column's own keys
/// ([`bf16_own_keys`]), so that a bit-sliced selection's planes hold only the keys' top 16
/// bits: half of [`PLANE_BYTES`], and the multiprocessor keeps the rest as L1 cache.
fn half_planes(plan: &Plan, input: Option<DType>) -> bool {
    let mut selects = plan.steps.iter().filter_map(|s| match s {
        Step::Select(t) => Some(*t),
        _ => None,
    });
    let first = selects.next();
    first.is_some_and(|t| bf16_own_keys(plan, t, input))
        && selects.all(|t| bf16_own_keys(plan, t, input))
}

/// Whether some selection needs the key array.
fn needs_key_array(plan: &Plan) -> bool {
    plan.steps
        .iter()
        .any(|s| matches!(s, Step::Select(t) if keys_of(plan, *t) == Keys::Stored))
}

/// For a plan that reads the element `g[b]` only through one numeric expression `E` of it and of
/// per-sample values, parameters and literals (a clipped median reads `x * factor[b]` in every
/// pass), the plan with `E` replaced by the element, and `E`: the tiled kernel then stores `E` in
/// the tile once, right after loading it, instead of recomputing it (and reloading the per-sample
/// value) in every pass, and a selection reads its keys straight from the tile. `None` for any
/// other plan (one with ranks, or that reads the element bare or through different expressions).
/// `E` is evaluated in the accumulator type exactly as the passes would, so results do not change.
fn tile_transform(plan: &Plan) -> Option<(Plan, Scalar)> {
    if !plan.ranks.is_empty() {
        return None;
    }
    let mut columns: Vec<&Scalar> = plan
        .temps
        .iter()
        .flat_map(|t| t.reduce.column.value_and_keep())
        .collect();
    if let Output::Batch(c) = &plan.output {
        columns.extend(c.value_and_keep());
    }
    // The parent of every read of the element must be one and the same expression.
    let mut parent: Option<&Scalar> = None;
    for &root in &columns {
        if *root == Scalar::Load || !parents_of_load(root, &mut parent) {
            return None;
        }
    }
    let e = parent?.clone();
    if !element_only(&e) {
        return None;
    }
    // Worth a pass of its own only when at least two passes read it.
    let reads = |c: &Column| c.value_and_keep().any(|x| contains(x, &e));
    let mut passes = plan
        .steps
        .iter()
        .filter(|step| match step {
            Step::Loop(temps) => temps.iter().any(|&t| reads(&plan.temps[t].reduce.column)),
            Step::Select(t) => reads(&plan.temps[*t].reduce.column),
            Step::Let(_) => false,
        })
        .count();
    if let Output::Batch(c) = &plan.output {
        passes += usize::from(reads(c));
    }
    if passes < 2 {
        return None;
    }
    let mut out = plan.clone();
    let swap = |c: &mut Column| {
        c.value = replace(&c.value, &e);
        c.keep = c.keep.as_ref().map(|k| replace(k, &e));
    };
    for t in &mut out.temps {
        swap(&mut t.reduce.column);
    }
    if let Output::Batch(c) = &mut out.output {
        swap(c);
    }
    Some((out, e))
}

/// Records in `parent` the node above every `Load` under `node`; false when two differ.
fn parents_of_load<'a>(node: &'a Scalar, parent: &mut Option<&'a Scalar>) -> bool {
    for child in node.children() {
        if *child == Scalar::Load {
            match parent {
                Some(p) if *p != node => return false,
                _ => *parent = Some(node),
            }
        } else if !parents_of_load(child, parent) {
            return false;
        }
    }
    true
}

/// A numeric expression of the element, per-sample values, parameters and literals only.
fn element_only(e: &Scalar) -> bool {
    match e {
        Scalar::Load
        | Scalar::LoadPerSample(_)
        | Scalar::Param(_)
        | Scalar::Lit(_)
        | Scalar::BatchSize => true,
        Scalar::Unary(UnOp::Neg, a) => element_only(a),
        Scalar::Binary(BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div, a, b) => {
            element_only(a) && element_only(b)
        }
        Scalar::Call(f, args) => !f.is_boolean() && args.iter().all(element_only),
        _ => false,
    }
}

/// Whether `e` occurs in `node`.
fn contains(node: &Scalar, e: &Scalar) -> bool {
    node == e || node.children().into_iter().any(|c| contains(c, e))
}

/// `node` with every occurrence of `e` replaced by the element.
fn replace(node: &Scalar, e: &Scalar) -> Scalar {
    if node == e {
        return Scalar::Load;
    }
    node.map_operands(|a| replace(a, e))
}

/// A streaming reduction that an earlier selection's passes settle on their own, so that a pass
/// over the column holding only such reductions can be skipped (see [`tile_steps`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Settled {
    /// The count of NaNs among the kept values of selection `t`'s column (an order statistic's
    /// NaN guard): 0 when its first digit pass counted no kept key in the lowest or the highest
    /// digit (every NaN is there, with the infinities and the values of magnitude 2^127 and
    /// above in f32, 2^1009 in f64).
    NoNan(usize),
    /// The count of kept values of selection `t`'s column at or below its value in total order
    /// (the first half of [`crate::stats::next_in_order`]): the keys below the gathered bucket
    /// (`k` less the value's rank in it) plus the bucket's keys at or below the value's.
    AtOrBelow(usize),
    /// The least kept value of selection `t`'s column above its value in total order (the
    /// second half): the least key above the value's in its gathered bucket, else the least
    /// key above the bucket (which the gathering pass keeps). Only where that is a kept value
    /// (below the largest key, which removed values take).
    Above(usize),
    /// The count of selection `t`'s column at or below its value, `x <= v` (as the trimmed
    /// mean's `upto_lo` counts): `v` the selection's value behind its NaN guard
    /// ([`guarded_value`]). Where no value of the column is NaN, the count of keys at or below
    /// the value's (the selection's rank less its rank among equal keys, plus those), unless
    /// the value is -0 (`x <= -0` holds for +0, whose key is above): a bit-sliced paired
    /// selection counts them (see [`sliced_select`], 4.) and says where every column of the
    /// block has them (`{t}_cnt`). The trimmed mean's last pass then sums only: same run, H100,
    /// at g[256, 4M] the bf16 trimmed mean took 0.96 of the time, f32 0.99 (bf16 0.97 in an
    /// earlier run). Only in the kernel for B up to 256 ([`Shape::Packed`]): in the kernel for
    /// B up to 128 the f32 trimmed mean took 1.03 of the time at g[128, 8M] (twice), bf16 1.00.
    CountLe(usize),
    /// As [`Settled::CountLe`], the count below the value, `x < v` (the trimmed mean's
    /// `below_hi`): the keys below the value's, unless the value is +0 (-0 is not below it).
    CountLt(usize),
}

impl Settled {
    /// The selection that settles it.
    fn selection(self) -> usize {
        match self {
            Settled::NoNan(t)
            | Settled::AtOrBelow(t)
            | Settled::Above(t)
            | Settled::CountLe(t)
            | Settled::CountLt(t) => t,
        }
    }
}

/// The flag (a block-wide boolean of the kernel) under which the selection has `how`'s value
/// for every column of the block.
fn settled_flag(how: Settled) -> String {
    let flag = match how {
        Settled::NoNan(_) => "clean",
        Settled::AtOrBelow(_) | Settled::Above(_) => "next",
        Settled::CountLe(_) | Settled::CountLt(_) => "cnt",
    };
    format!("{}_{flag}", names::temp(how.selection()))
}

/// Whether `x` is selection `t`'s value behind its NaN guard, as [`crate::stats::kth`] gives it
/// a let: `select(nans > 0, NaN, t)`, `nans` the count of NaNs in `t`'s column.
fn guarded_value(plan: &Plan, x: &Scalar, t: usize) -> bool {
    let Scalar::Local(i) = x else {
        return false;
    };
    let Scalar::Select(guard, nan, value) = &plan.lets[*i].value else {
        return false;
    };
    let c = &plan.temps[t].reduce.column;
    let nans = Scalar::Call(Func::IsNan, vec![c.value.clone()]);
    let counts_nans = |n: &Scalar| {
        matches!(n, Scalar::Temp(u) if plan.temps[*u].reduce.op == ReduceOp::Count
            && plan.temps[*u].reduce.column == c.clone().filtered(nans.clone()))
    };
    **value == Scalar::Temp(t)
        && nan.as_lit().is_some_and(f64::is_nan)
        && matches!(&**guard, Scalar::Binary(BinOp::Gt, n, z)
            if counts_nans(n) && z.as_lit() == Some(0.0))
}

/// What selection among `selects` settles reduction `temp`, if one does (see [`Settled`]).
fn settled(plan: &Plan, temp: usize, selects: &[usize]) -> Option<Settled> {
    let r = &plan.temps[temp].reduce;
    selects.iter().find_map(|&t| {
        let c = &plan.temps[t].reduce.column;
        let nan = Scalar::Call(Func::IsNan, vec![c.value.clone()]);
        let at_or_below = Scalar::Call(Func::TotalLe, vec![c.value.clone(), Scalar::Temp(t)]);
        let above = Scalar::Unary(UnOp::Not, Box::new(at_or_below.clone()));
        match r.op {
            ReduceOp::Count if r.column == c.clone().filtered(nan) => Some(Settled::NoNan(t)),
            ReduceOp::Count if r.column == c.clone().filtered(at_or_below) => {
                Some(Settled::AtOrBelow(t))
            }
            ReduceOp::MinTotal if r.column == c.clone().filtered(above) => Some(Settled::Above(t)),
            ReduceOp::Count => {
                // `x <= v` or `x < v` of the column's own values, `v` the guarded selection.
                let keep = r.column.keep.as_ref()?;
                let Scalar::Binary(op @ (BinOp::Le | BinOp::Lt), x, v) = keep else {
                    return None;
                };
                let own = c.keep.is_none() && r.column.value == c.value && **x == c.value;
                match op {
                    BinOp::Le if own && guarded_value(plan, v, t) => Some(Settled::CountLe(t)),
                    BinOp::Lt if own && guarded_value(plan, v, t) => Some(Settled::CountLt(t)),
                    _ => None,
                }
            }
            _ => None,
        }
    })
}

/// Whether the plan reads selection `t`'s next value (its [`Settled::Above`] reduction) only
/// as [`crate::stats::next_in_order`] does, `select(count_le > k + 1, value, above)` with `k`
/// the selection's rank and `count_le` its [`Settled::AtOrBelow`] count: where the value after
/// it ties with it, `above` is not read, so rank `k + 1` may stand for it (the median's and
/// the quantile's upper value). A tie then needs no search for the least key above.
fn tie_unread(plan: &Plan, t: usize) -> bool {
    let ReduceOp::Kth(k) = &plan.temps[t].reduce.op else {
        return false;
    };
    let temp_of =
        |want: Settled| (0..plan.temps.len()).find(|&u| settled(plan, u, &[t]) == Some(want));
    let (Some(le), Some(above)) = (temp_of(Settled::AtOrBelow(t)), temp_of(Settled::Above(t)))
    else {
        return false;
    };
    let guard = Scalar::Binary(
        BinOp::Gt,
        Box::new(Scalar::Temp(le)),
        Box::new(Scalar::Binary(
            BinOp::Add,
            Box::new(k.clone()),
            Box::new(Scalar::lit(1.0)),
        )),
    );
    // Whether `e` reads `above` anywhere but as the untaken arm of that select.
    fn reads(e: &Scalar, above: usize, t: usize, guard: &Scalar) -> bool {
        match e {
            Scalar::Temp(u) => *u == above,
            Scalar::Select(c, a, b)
                if **c == *guard && **a == Scalar::Temp(t) && **b == Scalar::Temp(above) =>
            {
                false
            }
            Scalar::Unary(_, a) => reads(a, above, t, guard),
            Scalar::Binary(_, a, b) => reads(a, above, t, guard) || reads(b, above, t, guard),
            Scalar::Select(c, a, b) => {
                reads(c, above, t, guard) || reads(a, above, t, guard) || reads(b, above, t, guard)
            }
            Scalar::Call(_, args) => args.iter().any(|a| reads(a, above, t, guard)),
            Scalar::Reduce(r) => {
                reads(&r.column.value, above, t, guard)
                    || r.column
                        .keep
                        .as_ref()
                        .is_some_and(|k| reads(k, above, t, guard))
            }
            Scalar::Rank(c) => {
                reads(&c.value, above, t, guard)
                    || c.keep.as_ref().is_some_and(|k| reads(k, above, t, guard))
            }
            _ => false,
        }
    }
    let r = |e: &Scalar| reads(e, above, t, &guard);
    let column = |c: &Column| r(&c.value) || c.keep.as_ref().is_some_and(r);
    let in_temps = plan
        .temps
        .iter()
        .any(|u| column(&u.reduce.column) || matches!(&u.reduce.op, ReduceOp::Kth(k) if r(k)));
    let in_output = match &plan.output {
        Output::Scalars(v) => v.iter().any(r),
        Output::Batch(c) => column(c),
    };
    !(plan.lets.iter().any(|l| r(&l.value))
        || in_temps
        || in_output
        || plan.ranks.iter().any(column))
}

/// What settles each reduction of a pass (`None` for one that needs the pass), or `None` where
/// nothing does.
fn settle_loop(plan: &Plan, temps: &[usize], selects: &[usize]) -> Option<Vec<Option<Settled>>> {
    let v: Vec<Option<Settled>> = temps.iter().map(|&u| settled(plan, u, selects)).collect();
    v.iter().any(Option::is_some).then_some(v)
}

/// Whether a pass's every reduction is settled (see [`settle_loop`]): the pass is skipped where
/// every column of the block is.
fn all_settled(settle: &Option<Vec<Option<Settled>>>) -> bool {
    settle
        .as_ref()
        .is_some_and(|v| v.iter().all(Option::is_some))
}

/// The plan's steps as the tiled kernel runs them, each pass with what settles its reductions
/// (see [`settle_loop`]: where the selections before it settle every reduction it holds, the
/// kernel skips it where every column of the block is settled; where they settle some, it
/// computes only the others there, see [`Settled`]). A pass that the selections of its own
/// wave would settle runs after them (nothing of its wave reads its results): the count of
/// NaNs that guards an order statistic (`median_low`, `kth`, the trimmed mean) is such a pass.
fn tile_steps(plan: &Plan) -> Vec<(Step, Option<Vec<Option<Settled>>>)> {
    let mut steps = plan.steps.clone();
    let selects_in = |steps: &[Step]| -> Vec<usize> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Select(t) => Some(*t),
                _ => None,
            })
            .collect()
    };
    let mut i = 0;
    while i < steps.len() {
        if let Step::Loop(temps) = &steps[i] {
            let wave = plan.temps[temps[0]].wave;
            let mut j = i + 1;
            while j < steps.len()
                && matches!(steps[j], Step::Select(t) if plan.temps[t].wave == wave)
            {
                j += 1;
            }
            if j > i + 1 && all_settled(&settle_loop(plan, temps, &selects_in(&steps[..j]))) {
                steps[i..j].rotate_left(1);
                i = j;
                continue;
            }
        }
        i += 1;
    }
    (0..steps.len())
        .map(|i| {
            let settle = match &steps[i] {
                Step::Loop(temps) => settle_loop(plan, temps, &selects_in(&steps[..i])),
                _ => None,
            };
            (steps[i].clone(), settle)
        })
        .collect()
}

fn slots_of(op: &ReduceOp) -> usize {
    match op {
        ReduceOp::Min | ReduceOp::Max => 2,
        _ => 1,
    }
}

/// The tiled kernel's name: `{reduction}_{dtype}_tile`.
pub fn tile_kernel_name(plan: &Plan, dtype: DType) -> String {
    format!("{}_tile", kernel_name(plan, dtype))
}

/// The opening of a kernel launched as the tiled kernel (the streaming kernel is too): header,
/// prelude, the signature (the fallback's parameters, then `tile_log2` and `vec`) and the
/// dynamic shared memory.
pub(crate) fn kernel_head(plan: &Plan, dtype: DType, shape: &str) -> String {
    kernel_head_named(
        plan,
        dtype,
        shape,
        &tile_kernel_name(plan, dtype),
        Blocks::Three,
    )
}

/// [`kernel_head`] for a kernel named `name`, held to the registers of `blocks` blocks a
/// multiprocessor where it selects (see [`Blocks`]).
fn kernel_head_named(plan: &Plan, dtype: DType, shape: &str, name: &str, blocks: Blocks) -> String {
    kernel_head_with(
        plan,
        dtype,
        shape,
        name,
        blocks,
        &["int tile_log2", "int vec"],
    )
}

/// [`kernel_head_named`] with `extra` after the fallback's parameters.
pub(crate) fn kernel_head_with(
    plan: &Plan,
    dtype: DType,
    shape: &str,
    name: &str,
    blocks: Blocks,
    extra: &[&str],
) -> String {
    let mut s = header(plan, dtype, shape);
    s.push_str(prelude(dtype));
    let selects = plan.steps.iter().any(|s| matches!(s, Step::Select(_)));
    s.push_str(&gather(dtype, !selects));
    let mut params = kernel_params(plan);
    params.extend(extra.iter().map(|p| p.to_string()));
    let min_blocks = match (selects && dtype.acc() == Acc::F32, blocks) {
        (false, _) => "",
        (true, Blocks::Two) => ", 2",
        (true, Blocks::Three) => ", 3",
        (true, Blocks::Four) => ", 4",
    };
    writeln!(
        s,
        "\nextern \"C\" __global__ void __launch_bounds__(256{min_blocks}) {name}({}) {{",
        params.join(", ")
    )
    .ok();
    s.push_str("    extern __shared__ __align__(16) unsigned char psg_smem[];\n");
    s
}

/// Where a kernel's source from [`kernel_head_with`] (or [`kernel_head_named`]) declares the
/// kernel: the helpers a kernel needs are inserted there, after the preludes.
pub(crate) fn kernel_decl_at(s: &str) -> usize {
    s.find("\nextern \"C\"")
        .expect("kernel_head_with declares the kernel")
}

/// The loads of g in a kernel's two builds.
///
/// A kernel's source compiles two ways. As it is, for rows that start 16-byte aligned (P times
/// the element size a multiple of 16, g 16-byte aligned), `PSG_LOADV` is one 16-byte load. With
/// `PSG_GATHER` defined before it (the runtime prepends the define for other rows: `psg_runtime`'s
/// `reduce::gather`):
/// - 16-bit tiles and every streaming kernel take the same vectors from `psg_gather`, from
///   narrower loads: 4-byte words (`PSG_GATHER` 1: rows 4-byte aligned; f64's 8-byte elements),
///   or, for 16-bit elements in rows only 2-byte aligned, the five words around the vector
///   funnel-shifted by the row's misalignment (2);
/// - f32 and f64 tiles are filled an element a thread, a warp's loads whole row segments (see
///   [`scalar_gather`]);
/// - the rows that `cp.async` copies in the first build pass through registers, except in the
///   f32 and f64 tiles of kernels that do not load ahead (the selections), which `cp.async`
///   copies an element at a time, every copy in flight at once (see [`tile_loop_start`]).
///
/// The runtime launches both builds with `vec` = 1: unaligned rows are loaded as groups of
/// vectors (or elements) in flight, and, where `ahead` (kernels that do not select), the next
/// tile's while this one is computed (`PSG_GATHER_AHEAD`). In the selecting kernels loading ahead
/// cost registers and spills in this build (the f32 MAD mean: 80 bytes spilled at its cap of
/// 80 registers) and time (H200, same run, the loads ahead against none: the f32 median 1.26 of
/// the time at g[192, 5592405], the f32 MAD mean 1.09 at g[256, 4194301], the bf16 trimmed mean
/// 1.04-1.06); elsewhere it mostly saved time (f32 var 0.92 at g[256, 4194301], bf16 var 0.67
/// at g[1024, 1048573]; but the bf16 z-score mean 1.11 and 1.22 at g[256, 4194301] and
/// g[192, 5592405], against 0.71 at g[1024, 1048573]). (`vec` = 0, the tile filled element by element with nothing loaded ahead,
/// remains for a launch on unaligned rows without such a build.)
///
/// A build of its own keeps the aligned kernel's code and registers as they were (its SASS is
/// unchanged): one build choosing its load at run time took more (NVRTC 13.0, sm_90: the f32
/// streaming mean 32 -> 44 registers, the bf16 z-score mean 64 -> 107 or more).
///
/// Past P (the last tile's last columns) a load gives zeros, as a 16-byte load does, except the
/// funnel-shifted 16-bit vector (`PSG_GATHER` 2), which holds what the words it reads hold: the
/// next row's first elements, or, after g's last element, up to 2 bytes past the buffer, inside
/// the 4-byte word that holds that element (no fault, but `compute-sanitizer` may report it).
/// Such columns are computed and never written; every path a block may take for them gives the
/// other columns the same bits. Masking those lanes to zeros (one early return for whole
/// vectors, a mask for the last) cost time where the kernel loads ahead (H200, same run: the
/// bf16 var 2.3 and z-score mean 2.0 times the time at g[1024, 1048573], 1.4 and 1.5 at
/// g[256, 4194301]).
fn gather(dtype: DType, ahead: bool) -> String {
    let words = match dtype {
        DType::F32 => "    const unsigned int* s = (const unsigned int*)src;
    if (left >= 4) return make_uint4(s[0], s[1], s[2], s[3]);
    return make_uint4(s[0], left > 1 ? s[1] : 0u, left > 2 ? s[2] : 0u, 0u);"
            .to_string(),
        DType::F64 => "    const unsigned long long* s = (const unsigned long long*)src;
    const unsigned long long a = s[0], b = left > 1 ? s[1] : 0ull;
    return make_uint4((unsigned int)a, (unsigned int)(a >> 32), (unsigned int)b, (unsigned int)(b >> 32));"
            .to_string(),
        DType::BF16 | DType::F16 => "#if PSG_GATHER == 2
    // Word k of the vector is words k and k + 1 from the one holding src[0], shifted right by
    // 16 bits where src is not 4-byte aligned; the last word read is the one holding src[left - 1].
    const unsigned long long a = (unsigned long long)src;
    const unsigned int* s = (const unsigned int*)(a & ~3ull);
    const unsigned int sh = (unsigned int)(a & 2ull) << 3;
    unsigned int x[5];
    if (left >= 9) {
        #pragma unroll
        for (int k = 0; k < 5; ++k) x[k] = s[k];
    } else {
        const int last = (int)(left - 1 + (sh >> 4)) >> 1;
        #pragma unroll
        for (int k = 0; k < 5; ++k) x[k] = s[min(k, last)];
    }
    return make_uint4(__funnelshift_r(x[0], x[1], sh), __funnelshift_r(x[1], x[2], sh),
                      __funnelshift_r(x[2], x[3], sh), __funnelshift_r(x[3], x[4], sh));
#else
    const unsigned int* s = (const unsigned int*)src;
    if (left >= 8) return make_uint4(s[0], s[1], s[2], s[3]);
    return make_uint4(s[0], left > 2 ? s[1] : 0u, left > 4 ? s[2] : 0u, 0u);
#endif"
            .to_string(),
    };
    format!(
        "#ifndef PSG_GATHER
#define PSG_GATHER 0
#endif
#if PSG_GATHER
// The vector of elements src[0 ..] (16 bytes; the first `left` are the row's).
__device__ __forceinline__ uint4 psg_gather(const psg_elem* src, long long left) {{
{words}
}}
#define PSG_LOADV(SRC, COL) psg_gather((SRC), n_p - (COL))
#ifndef PSG_GATHER_AHEAD
#define PSG_GATHER_AHEAD {ahead}
#endif
#define PSG_AHEAD PSG_GATHER_AHEAD
#else
#define PSG_LOADV(SRC, COL) (*(const uint4*)(SRC))
#define PSG_AHEAD 1
#endif
",
        ahead = u8::from(ahead)
    )
}

/// The blocks a multiprocessor whose registers a selecting kernel (f32 accumulators) is held to
/// (`__launch_bounds__`). With digit passes (the kernel for large B; the packed kernel at
/// B = 256 before the bit-sliced selection) a selection's tile and scratch fit three blocks a
/// multiprocessor at B = 256 (f32 input, and bf16 or f16, whose tiles widen to the same bytes):
/// registers are held to three blocks' share (80) too, where NVRTC would take up to 95, or
/// spill; four blocks' share (64), where shared memory allows four (bf16 at B = 64), measured
/// slower at B = 256 (BENCHMARKS.md). The kernel for small B is held to four blocks'
/// share where [`four_blocks`] says. A bit-sliced selection (see [`sliced_select`]) holds a
/// thread's 32 keys and then its planes in registers. Before the split keys NVRTC spilled 176
/// bytes a thread at three blocks' share (the f32 median), and two blocks took 0.84 of the
/// time (H200, g[256, 4M]). With them (and a bf16 column's own keys, transposed 16 bits) it
/// keeps at most 72 bytes in a frame, and the kernels run three blocks, but for the
/// kernel for B up to 256 ([`PACKED_BINS_MAX_B`]) of a plan of one selection whose planes are
/// whole (not [`half_planes`]). Three blocks leave that kernel a third of the L1 cache of two
/// (shared memory: 66 KiB a block), and took 1.03-1.21 of the time (f32 median, quantile,
/// `kth`, clipped median; H100, same run, g[256, 4M]). Else three took, of two's time (same
/// run): at g[256, 4M] the trimmed mean 0.91 in f32 and 0.89 in bf16 (half planes), the MAD
/// mean 1.00 and 0.90, bf16 median, quantile and `kth` with half planes 0.90, 0.91 and 0.85
/// (whole planes: 1.02, 1.03, 0.98); at g[128, 8M] (the kernel for B up to [`MID_MAX_B`])
/// 0.76-0.96, every op.
///
/// Where every selection has half the planes ([`half_planes`]: bf16 columns' own keys), a
/// block's shared memory is about 50 KiB (a 32 KiB tile of 64 columns, 17 KiB of scratch), and
/// the bit-sliced kernels run four blocks a multiprocessor, at 64 registers with no frame
/// (their transpose is of 16-bit keys). The selections' chains of counts and shuffles wait on
/// latency (ncu: `short_sb` and `wait` stalls), which a fourth block's warps hide: against
/// three, same run, H100, the bf16 median took 0.94 of the time at g[256, 4M] and 0.89 at
/// g[128, 8M], the quantile 0.93 and 0.89, `kth` and `median_low` 0.91 and 0.87, the trimmed
/// mean 0.96 and 0.94. The MAD's distances (32-bit keys, whole planes: 66 KiB a block) fit
/// three; at 64 registers its kernel would keep 104 bytes in a frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocks {
    Two,
    Three,
    Four,
}

/// The tile's element, and how a pass reads one.
fn tile_types(narrow: bool) -> &'static str {
    if narrow {
        // Widened as the prelude's psg_load widens an element of g.
        "typedef psg_elem psg_tile;\n\
         __device__ __forceinline__ psg_acc psg_tile_get(psg_tile x) { return psg_load(&x, 0); }\n\
         __device__ __forceinline__ psg_tile psg_tile_of(const psg_elem* g, long long i) { return g[i]; }\n"
    } else {
        "typedef psg_acc psg_tile;\n\
         __device__ __forceinline__ psg_acc psg_tile_get(psg_tile x) { return x; }\n\
         __device__ __forceinline__ psg_tile psg_tile_of(const psg_elem* g, long long i) { return psg_load(g, i); }\n"
    }
}

/// The column-mode kernel's name: `{reduction}_{dtype}_cols`.
pub fn column_kernel_name(plan: &Plan, dtype: DType) -> String {
    format!("{}_cols", kernel_name(plan, dtype))
}

/// Emits the column-mode kernel (see [`has_column_mode`]) for one input dtype, if the plan has
/// one. It takes the tiled kernel's parameters (`tile_log2` is [`COLUMN_TILE_LOG2`]) and a
/// kernel of its own, so that its registers (8 partials a sum) do not bound the tiled kernel's
/// occupancy, nor the tiled kernel's (a prefetched tile) its own.
pub fn emit_column(plan: &Plan, dtype: DType) -> Option<String> {
    if !has_column_mode(plan) {
        return None;
    }
    let printer = Printer::new(plan, dtype);
    let syntax = printer.syntax();
    let locals = printer.locals();
    let narrow = narrow_tile(dtype, false);
    let mut s = kernel_head_named(
        plan,
        dtype,
        "column mode (one read of g, whole columns a thread)",
        &column_kernel_name(plan, dtype),
        Blocks::Three,
    );
    let at = kernel_decl_at(&s);
    s.insert_str(at, tile_types(narrow));
    s.push_str("    const int tile_w = 1 << tile_log2;\n");
    s.push_str("    psg_tile* const tile = (psg_tile*)psg_smem;\n");
    s.push_str("    const int lane = threadIdx.x, w = threadIdx.y;\n");
    s.push_str("    const int n_bi = (int)n_b;\n");
    writeln!(s, "    const psg_acc {} = (psg_acc)n_b;", names::BATCH).ok();
    s.push_str(&tile_loop_consts(dtype, 8, false));
    // No tile prefetched into registers: they would stay live through the passes, whose 8
    // partials a sum take the registers instead (other blocks load while one computes).
    s.push_str(&tile_loop_start(
        dtype,
        narrow,
        COLUMN_TILE_LOG2,
        false,
        8,
        false,
        false,
        false,
    ));
    let steps = tile_steps(plan);
    emit_column_tile(&mut s, plan, &steps, &syntax, locals);
    s.push_str("    }\n}\n");
    Some(s)
}

/// Emits the tiled kernel for one input dtype.
pub fn emit(plan: &Plan, dtype: DType) -> String {
    if crate::cuda_stream::streams_in(plan, dtype) {
        return crate::cuda_stream::emit(plan, dtype);
    }
    emit_tiled(plan, dtype, Shape::Packed)
}

/// The tiled kernel's counts and selection (see [`emit_tiled`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Bit planes of eight parts a column (32-bit keys), or digit counts in 16-bit halves: B up
    /// to [`PACKED_BINS_MAX_B`].
    Packed,
    /// As `Packed`, but bit planes of four parts a column: B up to [`MID_MAX_B`].
    Mid,
    /// Digit counts in 32-bit words: B above [`PACKED_BINS_MAX_B`].
    Large,
    /// Whole columns sorted, no digit counts: B up to [`SMALL_MAX_B`].
    Small,
}

/// Whether the plan has a tiled kernel for large B ([`emit_large`]): it selects, or it
/// pipelines its tile there (see `pipelines_large`).
pub fn has_large_kernel(plan: &Plan) -> bool {
    tiled_selection(plan) || DType::ALL.into_iter().any(|d| pipelines_large(plan, d))
}

/// Whether the plan runs a tiled kernel (not the streaming one) and selects.
fn tiled_selection(plan: &Plan) -> bool {
    !crate::cuda_stream::streams(plan) && plan.steps.iter().any(|s| matches!(s, Step::Select(_)))
}

/// Whether the kernel for large B of `dtype` is a kernel of its own (else it is [`emit`]'s, by
/// the same name): where the plan selects, or pipelines its tile in that dtype.
fn own_large_kernel(plan: &Plan, dtype: DType) -> bool {
    tiled_selection(plan) || pipelines_large(plan, dtype)
}

/// Whether the kernel for B above [`PACKED_BINS_MAX_B`] pipelines its tile: plans of streaming
/// passes ([`streaming_passes`]) over an untransformed tile, in f32, and in bf16 and f16 (whose
/// passes of two columns a thread, see [`emit_pair_slabs`], wait the same way) where no pass
/// evaluates `exp`, `ln` or the Gaussian per element; in bf16 and f16 also with a per-sample
/// output ([`streaming_loops`]: the z-score cleaner, the relative clamp), whose pipelined
/// kernel took 0.94-1.01 of the time of the same kernel waiting for its tile at B = 384 to 1024
/// (bf16 z-score removal, H200, same run), where in f32 it took 0.97-1.03: not there.
///
/// There a tile of up to 1024 rows (128 KiB at 32 f32 or 64 bf16 columns) leaves one block a
/// multiprocessor, and a block that waited for its whole tile before its first pass overlapped
/// nothing of the tile's copies but the rows loaded ahead. In the pipelined kernel warp w copies
/// rows w, w + 8, ... (the rows its passes read, see [`tile_loop_consts`]), the copies are
/// committed a group a chunk of rows, and the first pass waits for each chunk's group
/// (`psg_wait_groups`, `__syncwarp`) instead of the block waiting for the tile. The sums are the
/// same samples in the same order. H200, same run, at g[1024, 1M]: f32 var and std 1.24x ->
/// 1.12x the floor, bf16 1.28x -> 1.15-1.16x, the z-score mean 0.95-0.96 of its time
/// (BENCHMARKS.md); but the bf16 Gaussian sums, bound by their instructions, 1.01-1.03 (also at
/// g[512, 2M]), hence not those. Not f64, whose rows of a tile wider than 64 columns would take
/// more than a warp. Not in the kernel for B up to 256, which keeps its code as it was (NVRTC
/// gave a kernel that pipelined at every B 64 registers where it had 80, and it took 4-6% longer
/// at g[256, 4M]).
fn pipelines_large(plan: &Plan, dtype: DType) -> bool {
    let passes = match dtype {
        DType::F32 => streaming_passes(plan),
        DType::BF16 | DType::F16 => !per_element_transcendental(plan) && streaming_loops(plan),
        DType::F64 => false,
    };
    passes
        && !crate::cuda_stream::streams(plan)
        && plan.steps.iter().any(|s| matches!(s, Step::Loop(_)))
        && tile_transform(plan).is_none()
}

/// The name of the tiled kernel for large B: `{reduction}_{dtype}_tile_large` where it is a
/// kernel of its own, else the tiled kernel's (see [`emit_large`]).
pub fn tile_large_kernel_name(plan: &Plan, dtype: DType) -> String {
    if own_large_kernel(plan, dtype) {
        format!("{}_large", tile_kernel_name(plan, dtype))
    } else {
        tile_kernel_name(plan, dtype)
    }
}

/// The tiled kernel for B above [`PACKED_BINS_MAX_B`] (see [`has_large_kernel`]): for a plan
/// that selects, the same as [`emit`]'s but for its digit counts, 32-bit words; for a plan of
/// streaming passes, [`emit`]'s with its tile pipelined (`pipelines_large`), and [`emit`]'s
/// itself in a dtype where it does not pipeline (one source and name: one compile).
pub fn emit_large(plan: &Plan, dtype: DType) -> Option<String> {
    if !has_large_kernel(plan) {
        return None;
    }
    Some(if own_large_kernel(plan, dtype) {
        emit_tiled(plan, dtype, Shape::Large)
    } else {
        emit(plan, dtype)
    })
}

/// Whether the plan has a tiled kernel for B up to [`MID_MAX_B`] ([`emit_mid`]): it selects.
pub fn has_mid_kernel(plan: &Plan) -> bool {
    tiled_selection(plan)
}

/// The name of the tiled kernel for B up to [`MID_MAX_B`]: `{reduction}_{dtype}_tile_mid`.
pub fn tile_mid_kernel_name(plan: &Plan, dtype: DType) -> String {
    format!("{}_mid", tile_kernel_name(plan, dtype))
}

/// The tiled kernel for B from [`SMALL_MAX_B`] + 1 up to [`MID_MAX_B`], for a plan that selects
/// (see [`has_mid_kernel`]): the same as [`emit`]'s (and its shared memory) but a bit-sliced
/// selection cuts a column into four parts instead of eight.
pub fn emit_mid(plan: &Plan, dtype: DType) -> Option<String> {
    has_mid_kernel(plan).then(|| emit_tiled(plan, dtype, Shape::Mid))
}

/// Whether the plan has a tiled kernel for small B ([`emit_small`]): it selects.
pub fn has_small_kernel(plan: &Plan) -> bool {
    has_mid_kernel(plan)
}

/// The name of the tiled kernel for small B: `{reduction}_{dtype}_tile_small`.
pub fn tile_small_kernel_name(plan: &Plan, dtype: DType) -> String {
    format!("{}_small", tile_kernel_name(plan, dtype))
}

/// The tiled kernel for B up to [`SMALL_MAX_B`], for a plan that selects (see
/// [`has_small_kernel`]): the same as [`emit`]'s but each selection sorts whole columns across a
/// warp instead of counting digits.
pub fn emit_small(plan: &Plan, dtype: DType) -> Option<String> {
    has_small_kernel(plan).then(|| emit_tiled(plan, dtype, Shape::Small))
}

/// The tiled kernel of one shape (how a selection counts or sorts).
fn emit_tiled(plan: &Plan, dtype: DType, shape: Shape) -> String {
    let name = match shape {
        Shape::Packed => tile_kernel_name(plan, dtype),
        Shape::Mid => tile_mid_kernel_name(plan, dtype),
        Shape::Large => tile_large_kernel_name(plan, dtype),
        Shape::Small => tile_small_kernel_name(plan, dtype),
    };
    let packed = shape != Shape::Large;
    let small = shape == Shape::Small;
    // The tile's copies pipelined into the first pass (see `pipelines_large`).
    let pipelined = shape == Shape::Large && pipelines_large(plan, dtype);
    let transformed = tile_transform(plan);
    let (plan, transform) = match &transformed {
        Some((p, t)) => (p, Some(t)),
        None => (plan, None),
    };
    let printer = Printer::new(plan, dtype);
    let syntax = printer.syntax();
    let locals = printer.locals();
    let e = |expr: &Scalar| printer.e(expr);
    // Another column's values, named apart (`_c`): a selecting lane computes keys of the column
    // it selects in (see `OtherColumn`).
    let scope_c = printer.scope("_c");
    let e_c = |expr: &Scalar| print(expr, &syntax, &scope_c);
    // A streaming pass's filters, printed without short-circuits (see `Cuda::eager`).
    let keep = |expr: &Scalar| printer.keep(expr);
    let narrow = narrow_tile(dtype, transform.is_some());
    let pair = pairs(plan, dtype, transform.is_some());
    let unroll = pass_unroll(plan, narrow);
    let from_tile = |i: &str| format!("psg_tile_get(tc[({i}) << 5])");
    let other = OtherColumn {
        e: &e_c,
        from_tile: &|i: &str| format!("psg_tile_get(tcc[({i}) << 5])"),
    };
    let selects = plan.steps.iter().any(|s| matches!(s, Step::Select(_)));
    let key_bits = match syntax.acc {
        Acc::F32 => 32,
        Acc::F64 => 64,
    };
    // Selections on 32-bit keys in the kernels for B up to [`PACKED_BINS_MAX_B`] are bit-sliced
    // ([`sliced_select`]), in parts of 32 samples: 8 of them a column, or 4 in the kernel for B
    // up to [`MID_MAX_B`]; 64-bit keys count digits there.
    let sliced = matches!(shape, Shape::Packed | Shape::Mid) && selects && key_bits == 32;
    let parts_log2 = if shape == Shape::Mid { 2 } else { 3 };

    // A transformed tile holds full accumulators, not widened input elements.
    let input = if transform.is_some() {
        None
    } else {
        Some(dtype)
    };
    let mut steps = tile_steps(plan);
    // A bf16 column's own keys are fixed after two digits, and the block rarely gathers after
    // the first (see `GATHER`): the next value is not found there, so the pass that computes it
    // runs, and the selection does not pay for looking. (A sorted column has it, and so does a
    // bit-sliced selection.)
    let own = |t: usize| !small && !sliced && bf16_own_keys(plan, t, input);
    for (_, settle) in &mut steps {
        let finds_next =
            |x: &Settled| matches!(*x, Settled::AtOrBelow(t) | Settled::Above(t) if own(t));
        if settle
            .as_ref()
            .is_some_and(|v| v.iter().flatten().any(finds_next))
        {
            *settle = None;
        }
        // The counts at or below and below a value come from a bit-sliced paired selection
        // only (see `sliced_select`), in the kernel for B up to 256 (see `Settled::CountLe`).
        if let Some(v) = settle
            .as_mut()
            .filter(|_| shape != Shape::Packed || !sliced)
        {
            for x in v.iter_mut() {
                if matches!(x, Some(Settled::CountLe(_) | Settled::CountLt(_))) {
                    *x = None;
                }
            }
            if v.iter().all(Option::is_none) {
                *settle = None;
            }
        }
    }
    // A slab ends with a barrier only where something after its last pass's barrier reads shared
    // memory that the next slab or tile writes before a barrier of its own: a selection (its
    // scratch is `part`), a per-sample output (it reads the tile after the last pass), or an odd
    // number of passes (the next slab's first pass writes the half of `part` that this slab's
    // last one reads). Else every tile read of a slab precedes its last pass's barrier, and
    // consecutive passes, across slabs too, combine in alternate halves of `part`. (Flipping
    // the halves every other slab, so that odd counts need no barrier either, measured slower:
    // the z-score and Gaussian sums at B = 64, 4-6% on an H100.)
    let passes = steps
        .iter()
        .filter(|(s, _)| matches!(s, Step::Loop(_)))
        .count();
    let slab_barrier = plan.steps.iter().any(|s| matches!(s, Step::Select(_)))
        || matches!(plan.output, Output::Batch(_))
        || passes % 2 == 1;
    // Whether a pass is settled by something a selection finds.
    let settles = |f: &dyn Fn(&Settled) -> bool| {
        steps
            .iter()
            .any(|(_, settle)| settle.as_ref().is_some_and(|v| v.iter().flatten().any(f)))
    };
    let four = small && four_blocks(plan, dtype, transform.is_some());
    let half = half_planes(plan, input);
    let selections = steps
        .iter()
        .filter(|(s, _)| matches!(s, Step::Select(_)))
        .count();
    // Passes unrolled whole where B = 256 (see `Unroll`): in the packed kernel, for plans whose
    // selections are one wave (no pass between them). H100, same run, against the loop of 8 a
    // group: at g[256, 4M] the trimmed mean took 0.98 of the time in f32 and 0.97-0.99 in bf16,
    // `kth` 0.98 and the median and quantile 0.99 in f32, the bf16 median and quantile
    // 1.00-1.01; the MAD mean (two waves) 1.00 in f32 and 1.02 in bf16 (NVRTC kept 12 more bytes
    // a thread in a frame). In the kernel for B up to 128 (at B = 128) the f32 quantile took
    // 1.07 and the trimmed mean 1.04, the others 0.99-1.01: not there.
    let whole = sliced && shape == Shape::Packed && selection_waves(plan) == 1;
    let blocks = if four || (sliced && half) {
        // Half planes: the tile and scratch fit four blocks (see `Blocks`).
        Blocks::Four
    } else if sliced && shape == Shape::Packed && selections == 1 && !half {
        Blocks::Two
    } else {
        Blocks::Three
    };
    let mut s = kernel_head_named(plan, dtype, "tiled (one read of g)", &name, blocks);
    // The tile's element, and how a pass reads one.
    let at = kernel_decl_at(&s);
    s.insert_str(at, tile_types(narrow));
    // The path of two columns a thread hands a section's values on for a per-sample output too.
    if broadcasts(plan) || (pair && matches!(plan.output, Output::Batch(_))) {
        s.insert_str(at, SECTION_BROADCAST);
    }
    let sorts = plan.steps.iter().any(|step| match step {
        Step::Select(t) => sorts_lists(plan, *t, input, key_bits),
        _ => false,
    });
    if small {
        if plan.steps.iter().any(|step| match step {
            Step::Select(t) => merged_runs(plan, *t).is_some(),
            _ => false,
        }) {
            s.insert_str(at, SMALL_MERGE);
        }
        s.insert_str(at, SMALL_SORTS);
    }
    if sorts && !small && !sliced {
        s.insert_str(at, WARP_SORTS);
    }
    if sliced {
        s.insert_str(at, TRANSPOSE);
    }
    if pipelined {
        s.insert_str(at, WAIT_GROUPS);
    }
    if pair {
        let at = kernel_decl_at(&s);
        s.insert_str(
            at,
            "/* Element j (0 or 1) of a 32-bit word of the tile: two neighbouring columns of one sample. */\n\
             __device__ __forceinline__ psg_acc psg_pair_get(unsigned int v, int j) { return psg_tile_get((psg_tile)(j ? v >> 16 : v)); }\n",
        );
    }
    s.push_str("    const int tile_w = 1 << tile_log2;\n");
    s.push_str("    psg_tile* const tile = (psg_tile*)psg_smem;\n");
    if needs_key_array(plan) {
        s.push_str("    psg_key* const keys = (psg_key*)(tile + n_b * tile_w);\n");
        s.push_str("    psg_acc* const part = (psg_acc*)(keys + n_b * tile_w);\n");
    } else {
        s.push_str("    psg_acc* const part = (psg_acc*)(tile + n_b * tile_w);\n");
    }
    if selects {
        // Selection scratch: 8 rows of chunk totals, the pick (3 rows), keys (the found ones,
        // then `over`'s two rows), then the digit counts in the layout for B (see
        // `PACKED_BINS_MAX_B`), then 8 rows where a digit pass counts the keys off its prefix
        // (see `emit_select`). Everything but the counts' end is at a fixed offset, so it needs
        // no register.
        s.push_str("    int* const totals = (int*)part;\n");
        writeln!(s, "    int* const pick = totals + {WARPS} * 32;").ok();
        s.push_str("    psg_key* const found = (psg_key*)(pick + 3 * 32);\n");
        s.push_str("    int* const bins = (int*)(found + 3 * 32);\n");
        // A small bucket's keys, gathered where the digit counts were.
        s.push_str("    psg_key* const cand = (psg_key*)bins;\n");
        if settles(&|x| matches!(x, Settled::AtOrBelow(_) | Settled::Above(_))) {
            // Per column, the least key above its final bucket, then the least above the
            // selected key (see `emit_select`).
            s.push_str("    psg_key* const over = found + 32;\n");
        }
    }
    s.push_str("    const int lane = threadIdx.x, w = threadIdx.y;\n");

    // B is bounded by shared memory here, so 32-bit sample indices suffice.
    s.push_str("    const int n_bi = (int)n_b;\n");
    writeln!(s, "    const psg_acc {} = (psg_acc)n_b;", names::BATCH).ok();
    let prefetch_n = prefetch_vectors(
        plan,
        small,
        four,
        half,
        shape == Shape::Large && transform.is_some() && dtype == DType::F32,
    );
    s.push_str(&tile_loop_consts(dtype, prefetch_n, pipelined));
    // A selecting plan's lets and ranks of the parameters and B alone, computed once, here:
    // NVRTC computed them again for every slab, some 50 instructions a warp and slab (the
    // conversion of a rank to an integer, its checks), 5% of the bf16 trimmed mean's (ncu,
    // H100). See `Hoisted`; what it and the passes unrolled whole took together is in
    // BENCHMARKS.md.
    let hoisted = if selects {
        Hoisted::of(plan, &e)
    } else {
        Hoisted::default()
    };
    s.push_str(&hoisted.declarations);
    let hoisted_from = s.len();
    if pair || broadcasts(plan) {
        s.push_str(ONCE);
    }
    // Branches opened before the one-column path, each closed after it.
    let mut branches = 0;
    if pair {
        // Tiles of 64 columns or more: two columns a thread, in 64-column slabs. Narrower ones
        // (large B) take the one-column path below.
        s.push_str("    if (tile_log2 >= 6) {\n");
        s.push_str(&tile_loop_start(
            dtype, narrow, 6, true, prefetch_n, false, false, pipelined,
        ));
        emit_pair_slabs(
            &mut s,
            plan,
            &steps,
            Unroll {
                by: unroll,
                full: None,
                waits: pipelined,
                spill: None,
            },
            &syntax,
            locals,
            slab_barrier,
        );
        s.push_str("    }\n    } else {\n    #undef PSG_SLAB\n    #undef PSG_UNPACK\n");
        branches += 1;
    }
    if let Some(t) = transform {
        emit_transform_fn(&mut s, plan, t, &e, dtype, prefetch_n);
    }
    // A bit-sliced selection holds 32 keys a thread: the next tile's loads are issued after
    // the first one's planes are stored, their registers free again (see `sliced_select`).
    s.push_str(&tile_loop_start(
        dtype,
        narrow,
        5,
        true,
        prefetch_n,
        transform.is_some(),
        sliced,
        pipelined,
    ));
    // Tiles wider than a warp are computed 32 columns at a time.
    s.push_str("    for (int cs = 0; cs < tile_w; cs += 32) {\n");
    s.push_str("    const int col = lane + cs;\n");
    s.push_str("    const long long p = p0 + col;\n");
    s.push_str("    const bool active = col < tile_w && p < n_p;\n");
    // This thread's column in its 32-column slab (see the module docs).
    s.push_str("    const psg_tile* const tc = tile + cs * n_bi + lane;\n");

    if transform.is_some() && raw_rows_from(dtype, prefetch_n).is_some() {
        // Each thread rewrites exactly the elements its passes read (its column, samples
        // w, w + 8, ...), so no barrier is needed.
        s.push_str(
            "    // The tile holds the one expression of the element that every pass reads: rows copied\n    // straight to shared memory get it here.\n    for (int b = psg_raw_from + ((w - psg_raw_from) & 7); b < n_bi; b += 8)\n        tile[cs * n_bi + lane + (b << 5)] = psg_tf(psg_tile_get(tc[(b) << 5]), b);\n",
        );
    }
    if needs_key_array(plan) {
        s.push_str("    psg_key* const kc = keys + cs * n_bi + lane;\n");
    }

    let mut loops = 0;
    // Whether a bit-sliced selection has issued the next tile's loads.
    let mut fetched = false;
    // A selection fused into the one before it (see `Paired`).
    let mut fused = None;
    // In the kernel for small B, after a selection on a column's own keys: the flags under which
    // its sorted lists are still there and hold no NaN (a NaN guard of the column's own keys,
    // and every pass since settled; see `MergeCode`).
    let mut sorted_lists: Option<Vec<String>> = None;
    // The NaN guard of a selection on a column's own keys (the same for any such selection).
    let mut own_clean: Option<String> = None;
    // Sections computed once a block (see `emit_broadcast`): the lets they computed (steps
    // before `consumed`), and the lets' expressions that code after them reads by name, in the
    // code from `pending` on.
    let mut consumed = 0;
    let mut subs: Vec<(String, String)> = Vec::new();
    let mut pending = s.len();
    for (n, (step, settle)) in steps.iter().enumerate() {
        if fused == Some(n) || n < consumed {
            continue;
        }
        match step {
            Step::Let(i) if hoisted.lets.contains(i) => {}
            Step::Let(i) => emit_let(&mut s, plan, *i, &e),
            Step::Loop(temps)
                if broadcasts(plan)
                    && steps[n + 1..]
                        .iter()
                        .find(|(s, _)| !matches!(s, Step::Let(_)))
                        .is_some_and(|(s, _)| matches!(s, Step::Loop(_))) =>
            {
                // A section before another pass: the pass, then its combine and the lets up to
                // the next pass in warp 0, for the block.
                let lets: Vec<usize> = steps[n + 1..]
                    .iter()
                    .map_while(|(step, _)| match step {
                        Step::Let(l) => Some(*l),
                        _ => None,
                    })
                    .collect();
                let values = section_values(plan, temps, &lets, &[""], &|t, _| names::temp(t));
                let half = loops % 2;
                loops += 1;
                let mut pass = String::new();
                emit_loop(
                    &mut pass,
                    plan,
                    temps,
                    None,
                    half,
                    false,
                    false,
                    Unroll {
                        by: unroll,
                        full: whole.then_some(PACKED_BINS_MAX_B),
                        waits: pipelined && loops == 1,
                        spill: None,
                    },
                    &syntax,
                    &e,
                    &keep,
                    &from_tile,
                );
                const BARRIER: &str = "    __syncthreads();\n";
                let cut = pass
                    .rfind(BARRIER)
                    .expect("a pass's partials, then a barrier")
                    + BARRIER.len();
                let mut combine = pass.split_off(cut);
                s.push_str(&pass);
                let mut lines = String::new();
                for &l in &lets {
                    emit_let(&mut lines, plan, l, &e);
                }
                if !lets.is_empty() && values.len() <= broadcast_max(plan) {
                    // A sum's combined value: declared for the block, assigned by warp 0.
                    for &t in temps {
                        if plan.temps[t].reduce.op == ReduceOp::Sum {
                            let name = names::temp(t);
                            writeln!(s, "    psg_acc {name};").ok();
                            combine = combine.replace(
                                &format!("const psg_acc {name} = "),
                                &format!("{name} = "),
                            );
                        }
                    }
                    let tail = s.split_off(pending);
                    s.push_str(&substituted(&tail, &subs));
                    let read = emit_broadcast(
                        &mut s,
                        plan,
                        half,
                        1,
                        "part",
                        &substituted(&combine, &subs),
                        &substituted(&lines, &subs),
                        &values,
                    );
                    pending = s.len();
                    subs.extend(read);
                } else {
                    s.push_str(&combine);
                    s.push_str(&lines);
                }
                consumed = n + 1 + lets.len();
            }
            Step::Loop(temps) => {
                // A pass that runs writes `part`, over the lists; a settled one is skipped
                // under its flags.
                let skipped = settle.as_deref().and_then(|v| {
                    v.iter()
                        .map(|how| how.map(settled_flag))
                        .collect::<Option<Vec<_>>>()
                });
                sorted_lists = match (sorted_lists.take(), skipped) {
                    (Some(mut flags), Some(more)) => {
                        for f in more {
                            if !flags.contains(&f) {
                                flags.push(f);
                            }
                        }
                        Some(flags)
                    }
                    _ => None,
                };
                // Consecutive passes combine their partials in alternate halves of `part`, so a
                // pass need not wait for every thread to have read the previous one's; a
                // selection reuses the area, so the pass before one waits.
                let half = loops % 2;
                loops += 1;
                let select_next = steps[n + 1..]
                    .iter()
                    .find(|(s, _)| !matches!(s, Step::Let(_)))
                    .is_some_and(|(s, _)| matches!(s, Step::Select(_)));
                // Only the output, which warp 0 writes, reads this pass's results (see
                // `emit_pass`; in a plan that selects, but for large B).
                let last = selects
                    && shape != Shape::Large
                    && matches!(plan.output, Output::Scalars(_))
                    && steps[n + 1..]
                        .iter()
                        .all(|(s, _)| matches!(s, Step::Let(_)));
                emit_loop(
                    &mut s,
                    plan,
                    temps,
                    settle.as_deref(),
                    half,
                    select_next,
                    last,
                    Unroll {
                        by: unroll,
                        full: whole.then_some(PACKED_BINS_MAX_B),
                        waits: pipelined && loops == 1,
                        spill: None,
                    },
                    &syntax,
                    &e,
                    &keep,
                    &from_tile,
                )
            }
            Step::Select(t) => {
                let clean = settles(&|x| *x == Settled::NoNan(*t));
                let next_of = |t: usize| {
                    settles(&|x| matches!(*x, Settled::AtOrBelow(u) | Settled::Above(u) if u == t))
                };
                let next = next_of(*t);
                let counts_of = |t: usize| Counts {
                    le: settles(&|x| *x == Settled::CountLe(t)),
                    lt: settles(&|x| *x == Settled::CountLt(t)),
                };
                // Two selections of one wave (so neither reads the other) on the column's own
                // keys, neither needing the next value: one set of bit planes, and the second
                // group of warps selects the second (a trimmed mean's two bounds); in the kernel
                // for small B, one sort, and both keys read off the sorted list.
                let pair = match steps.get(n + 1) {
                    Some((Step::Select(u), _))
                        if (sliced || small)
                            && !next
                            && !next_of(*u)
                            && keys_of(plan, *t) == Keys::Direct
                            && keys_of(plan, *u) == Keys::Direct =>
                    {
                        fused = Some(n + 1);
                        Some(Paired {
                            t: *u,
                            clean: settles(&|x| *x == Settled::NoNan(*u)),
                            counts: counts_of(*u),
                        })
                    }
                    _ => None,
                };
                let flags = SelectFlags {
                    clean,
                    next,
                    packed,
                    small,
                    sliced,
                    fetch: sliced && !fetched,
                    parts_log2,
                    tie_unread: next && tie_unread(plan, *t),
                    half_planes: half,
                    split: selections == 1
                        || (selections == 2 && pair.is_some())
                        || (sliced && !fetched && keys_of(plan, *t) == Keys::Direct),
                    counts: counts_of(*t),
                };
                fetched = fetched || sliced;
                let intact = sorted_lists
                    .take()
                    .filter(|_| small && pair.is_none())
                    .map(|flags| flags.join(" && "));
                emit_select(
                    &mut s,
                    plan,
                    *t,
                    input,
                    key_bits,
                    flags,
                    pair,
                    intact.as_deref(),
                    &e,
                    &from_tile,
                    &other,
                );
                if keys_of(plan, *t) == Keys::Direct {
                    if clean {
                        own_clean = Some(format!("{}_clean", names::temp(*t)));
                    }
                    if small {
                        sorted_lists = own_clean.clone().map(|f| vec![f]);
                    }
                }
            }
        }
    }

    match &plan.output {
        Output::Scalars(values) => scalar_stores(&mut s, "active && w == 0", values, &e),
        Output::Batch(column) => {
            writeln!(
                s,
                "    if (active) {{\n        #pragma unroll {unroll}\n        for (int b = w; b < n_bi; b += 8) {{"
            )
            .ok();
            loop_header_with(
                &mut s,
                "            ",
                [column],
                &e,
                &plan.ranks,
                &from_tile,
            );
            let value = batch_value(column, &syntax, &e);
            writeln!(
                s,
                "            out0[b * n_p + p] = psg_store({value});\n        }}\n    }}"
            )
            .ok();
        }
    }
    let tail = s.split_off(pending);
    s.push_str(&substituted(&tail, &subs));
    if slab_barrier {
        // The last slab's barrier also guards the tile against the next tile's loads.
        s.push_str("    __syncthreads();\n");
    }
    s.push_str("    }\n");
    for _ in 0..branches {
        s.push_str("    }\n");
    }
    s.push_str("    }\n}\n");
    let mut body = s.split_off(hoisted_from);
    for (rank, name) in &hoisted.ranks {
        body = body.replace(rank, name);
    }
    s + &body
}

/// What [`emit_tiled`] computes before its persistent loop: the lets whose values depend on the
/// parameters and B alone (`lets`, by index), and the selections' ranks of those, as
/// `psg_index(rank)` (the text every selection prints) and the name that replaces it.
#[derive(Default)]
struct Hoisted {
    lets: Vec<usize>,
    ranks: Vec<(String, String)>,
    declarations: String,
}

impl Hoisted {
    fn of(plan: &Plan, e: &dyn Fn(&Scalar) -> String) -> Hoisted {
        let mut h = Hoisted::default();
        h.declarations
            .push_str("    // Of the parameters and B alone: once, not for every slab.\n");
        for step in &plan.steps {
            match step {
                Step::Let(i) if h.invariant(&plan.lets[*i].value) => {
                    emit_let(&mut h.declarations, plan, *i, e);
                    h.lets.push(*i);
                }
                Step::Select(t) => {
                    if let ReduceOp::Kth(k) = &plan.temps[*t].reduce.op {
                        let rank = format!("psg_index({})", e(k));
                        if h.invariant(k) && !h.ranks.iter().any(|(r, _)| *r == rank) {
                            let name = format!("psg_rank{t}");
                            writeln!(h.declarations, "    const long long {name} = {rank};").ok();
                            h.ranks.push((rank, name));
                        }
                    }
                }
                _ => {}
            }
        }
        if h.lets.is_empty() && h.ranks.is_empty() {
            h.declarations.clear();
        }
        h
    }

    /// Whether `x` depends on the parameters, B, literals and hoisted lets alone.
    fn invariant(&self, x: &Scalar) -> bool {
        match x {
            Scalar::Lit(_) | Scalar::Bool(_) | Scalar::Param(_) | Scalar::BatchSize => true,
            Scalar::Local(i) => self.lets.contains(i),
            Scalar::Unary(..) | Scalar::Binary(..) | Scalar::Select(..) | Scalar::Call(..) => {
                x.children().into_iter().all(|c| self.invariant(c))
            }
            Scalar::Load
            | Scalar::LoadPerSample(_)
            | Scalar::Reduce(_)
            | Scalar::Temp(_)
            | Scalar::Rank(_) => false,
        }
    }
}

/// The column mode's work on a tile (see [`has_column_mode`]): thread `tid` computes column `tid`
/// over every sample, each sum in its 8 canonical partials (sample `b` to partial `b % 8`, in
/// sample order), combined in order: the same sums as the tiled kernel's, with no shared memory
/// but the tile and no barrier but the one that frees the tile for the next. (Two columns a
/// thread from one 32-bit load of a 16-bit tile, as the tiled kernel does, kept twice the
/// accumulators live, and NVRTC spilled.)
fn emit_column_tile(
    s: &mut String,
    plan: &Plan,
    steps: &[(Step, Option<Vec<Option<Settled>>>)],
    syntax: &Cuda,
    locals: &[String],
) {
    let scope = Scope {
        locals,
        ranks: &plan.ranks,
        suffix: "",
    };
    let e = |expr: &Scalar| print(expr, syntax, &scope);
    s.push_str("    {\n");
    s.push_str("    // Column tid of the tile, every sample (rows of 256 elements).\n");
    s.push_str("    const long long p = p0 + tid;\n");
    s.push_str("    const bool active = p < n_p;\n");
    s.push_str("    const psg_tile* const tc = tile + tid;\n");
    for (step, _) in steps {
        match step {
            Step::Let(i) => emit_let(s, plan, *i, &e),
            Step::Loop(temps) => emit_column_pass(s, plan, temps, syntax, &e),
            Step::Select(_) => unreachable!("the column mode admits no selection"),
        }
    }
    match &plan.output {
        Output::Scalars(values) => scalar_stores(s, "active", values, &e),
        Output::Batch(column) => {
            // Every sample of column tid: the block writes 256 consecutive elements a sample.
            let mut body = String::new();
            let tile = |i: &str| format!("psg_tile_get(tc[({i}) << {COLUMN_TILE_LOG2}])");
            loop_header_with(&mut body, "            ", [column], &e, &plan.ranks, &tile);
            let value = batch_value(column, syntax, &e);
            writeln!(
                s,
                "    if (active) {{\n        #pragma unroll 8\n        for (int b = 0; b < n_bi; ++b) {{\n{body}            out0[(long long)b * n_p + p] = psg_store({value});\n        }}\n    }}"
            )
            .ok();
        }
    }
    s.push_str(
        "    }\n    // The tile is read: the next one may overwrite it.\n    __syncthreads();\n",
    );
}

/// One pass of [`emit_column_tile`]: the reductions of `temps` over samples `0 .. B` in groups of
/// 8 (sample `b0 + r` to partial `r`), then the partials of each sum combined in order.
fn emit_column_pass(
    s: &mut String,
    plan: &Plan,
    temps: &[usize],
    syntax: &Cuda,
    e: &dyn Fn(&Scalar) -> String,
) {
    let zero = syntax.literal(0.0);
    for &t in temps {
        let n = names::temp(t);
        match plan.temps[t].reduce.op {
            ReduceOp::Min | ReduceOp::Max => {
                writeln!(s, "    psg_acc {n} = psg_nan(); bool {n}_any = false;")
            }
            ReduceOp::Sum => writeln!(
                s,
                "    psg_acc {n}_p[{WARPS}] = {{{}}};",
                [zero.as_str(); WARPS].join(", ")
            ),
            _ => writeln!(s, "    psg_acc {n} = {zero};"),
        }
        .ok();
    }
    // The body for sample b (partial r).
    let mut body = String::new();
    let columns = temps.iter().map(|&t| &plan.temps[t].reduce.column);
    let tile = |i: &str| format!("psg_tile_get(tc[({i}) << {COLUMN_TILE_LOG2}])");
    loop_header_with(
        &mut body,
        "                ",
        columns,
        e,
        &plan.ranks,
        &tile,
    );
    for &t in temps {
        let r = &plan.temps[t].reduce;
        let update = update_partial(&r.op, t, &e(&r.column.value), "r", syntax);
        match r.column.keep.as_ref().map(e) {
            Some(k) => writeln!(body, "                if ({k}) {{ {update} }}"),
            None => writeln!(body, "                {update}"),
        }
        .ok();
    }
    writeln!(
        s,
        "    if (active) {{\n        int b0 = 0;\n        for (; b0 + 8 <= n_bi; b0 += 8) {{\n            #pragma unroll\n            for (int r = 0; r < 8; ++r) {{\n                const int b = b0 + r;\n{body}            }}\n        }}\n        // The last B % 8 samples.\n        #pragma unroll\n        for (int r = 0; r < 7; ++r) {{\n            const int b = b0 + r;\n            if (b < n_bi) {{\n{body}            }}\n        }}\n    }}"
    )
    .ok();
    for &t in temps {
        let op = &plan.temps[t].reduce.op;
        if let Some(line) = combine_partials(op, t, |r| format!("{}_p[{r}]", names::temp(t))) {
            writeln!(s, "    {line}").ok();
        }
    }
}

/// The slabs of a tile of 64 columns or more where each thread computes two neighbouring columns
/// (see [`pairs`]): thread `(lane, w)` takes columns `cs + 2 lane` and `cs + 2 lane + 1` of the
/// 64-column slab at `cs`, samples `w, w + 8, ...`, reading both elements of a sample with one
/// 32-bit load. Every statement about a column is written once for each of the two, their
/// values named apart by the suffixes `_0` and `_1`; the partials of both go to shared memory as
/// one `float2`.
fn emit_pair_slabs(
    s: &mut String,
    plan: &Plan,
    steps: &[(Step, Option<Vec<Option<Settled>>>)],
    unroll: Unroll,
    syntax: &Cuda,
    locals: &[String],
    slab_barrier: bool,
) {
    const SUFFIX: [&str; 2] = ["_0", "_1"];
    let scopes = SUFFIX.map(|suffix| Scope {
        locals,
        ranks: &plan.ranks,
        suffix,
    });
    let e = |j: usize, expr: &Scalar| print(expr, syntax, &scopes[j]);
    let name = |t: usize, j: usize| format!("{}{}", names::temp(t), SUFFIX[j]);
    s.push_str("    for (int cs = 0; cs < tile_w; cs += 64) {\n");
    s.push_str(
        "    // Columns cs + 2 lane and cs + 2 lane + 1: word `lane` of each row of the slab.\n",
    );
    s.push_str("    const int col = cs + 2 * lane;\n");
    s.push_str("    const long long p = p0 + col;\n");
    s.push_str("    const bool active = col < tile_w && p < n_p;\n");
    s.push_str("    const bool active1 = active && p + 1 < n_p;\n");
    s.push_str(
        "    const unsigned int* const tc = (const unsigned int*)(tile + cs * n_bi) + lane;\n",
    );
    s.push_str("    float2* const part2 = (float2*)part;\n");
    let let_lines = |i: usize| -> String {
        let l = &plan.lets[i];
        (0..2)
            .map(|j| {
                format!(
                    "    const auto {}{} = {};\n",
                    names::local(i, &l.name),
                    SUFFIX[j],
                    e(j, &l.value)
                )
            })
            .collect()
    };
    let last_loop = steps
        .iter()
        .rposition(|(step, _)| matches!(step, Step::Loop(_)));
    let batch = matches!(plan.output, Output::Batch(_));
    let mut loops = 0;
    // Whether the block of the last section, warps 0 and 1 alone, is open.
    let mut open = false;
    // Where a section's let is read from shared memory, later code reads it in place of its
    // expression (a pass would compute a mean's division again, every warp).
    let mut subs: Vec<(String, String)> = Vec::new();
    let out = s;
    let mut s = String::new();
    let mut i = 0;
    while i < steps.len() {
        out.push_str(&substituted(&std::mem::take(&mut s), &subs));
        let s = &mut s;
        match &steps[i].0 {
            Step::Let(l) => s.push_str(&let_lines(*l)),
            Step::Loop(temps) => {
                let half = loops % 2;
                loops += 1;
                // The first pass waits for a pipelined tile's copies (see `Unroll`).
                let unroll = Unroll {
                    waits: unroll.waits && loops == 1,
                    ..unroll
                };
                let combine = emit_pair_pass(s, plan, temps, half, unroll, syntax, &e, &name);
                let combine = substituted(&combine, &subs);
                // The pass's section: its combine and the lets up to the next pass.
                let lets: Vec<usize> = steps[i + 1..]
                    .iter()
                    .map_while(|(step, _)| match step {
                        Step::Let(l) => Some(*l),
                        _ => None,
                    })
                    .collect();
                let lines = substituted(
                    &lets.iter().map(|&l| let_lines(l)).collect::<String>(),
                    &subs,
                );
                if Some(i) == last_loop && !batch {
                    // Only the output reads it, and warp j stores column j (at the B where
                    // sections are computed once, see `ONCE`). A per-sample output reads it in
                    // every warp: a section as any other.
                    s.push_str("    if (w < 2 || !once) {\n");
                    s.push_str(&combine);
                    s.push_str(&lines);
                    open = true;
                } else {
                    let values = section_values(plan, temps, &lets, &SUFFIX, &name);
                    if !lets.is_empty() && values.len() <= broadcast_max(plan) {
                        let mut section = String::new();
                        let read = emit_broadcast(
                            &mut section,
                            plan,
                            half,
                            2,
                            "(psg_acc*)part2",
                            &combine,
                            &lines,
                            &values,
                        );
                        // The section itself is as substituted so far: push it past the
                        // substitution of the code before it.
                        out.push_str(&substituted(s, &subs));
                        s.clear();
                        out.push_str(&section);
                        subs.extend(read);
                    } else {
                        s.push_str(&combine);
                        s.push_str(&lines);
                    }
                }
                i += 1 + lets.len();
                continue;
            }
            Step::Select(_) => unreachable!("`pairs` admits no selection"),
        }
        i += 1;
    }
    match &plan.output {
        Output::Scalars(values) => {
            // Warp 0 stores the first column, warp 1 the second.
            for j in 0..2 {
                let (flag, at) = [("active", "p"), ("active1", "p + 1")][j];
                writeln!(s, "    if ({flag} && w == {j}) {{").ok();
                for (i, v) in values.iter().enumerate() {
                    writeln!(s, "        out{i}[{at}] = psg_store({});", e(j, v)).ok();
                }
                s.push_str("    }\n");
            }
        }
        Output::Batch(column) => emit_pair_batch(&mut s, column, unroll.by, syntax, &e),
    }
    if open {
        s.push_str("    }\n");
    }
    out.push_str(&substituted(&s, &subs));
    let s = out;
    if slab_barrier {
        s.push_str("    __syncthreads();\n");
    }
    s.push_str("    }\n");
}

/// The per-column outputs' stores of column `p`, under `cond`.
pub(crate) fn scalar_stores(
    s: &mut String,
    cond: &str,
    values: &[Scalar],
    e: &dyn Fn(&Scalar) -> String,
) {
    writeln!(s, "    if ({cond}) {{").ok();
    for (i, v) in values.iter().enumerate() {
        writeln!(s, "        out{i}[p] = psg_store({});", e(v)).ok();
    }
    s.push_str("    }\n");
}

/// A per-sample output's value of the element: its expression, or 0 where its filter drops it.
pub(crate) fn batch_value(column: &Column, syntax: &Cuda, e: &dyn Fn(&Scalar) -> String) -> String {
    let value = e(&column.value);
    match &column.keep {
        Some(k) => syntax.select(&e(k), &value, &syntax.literal(0.0)),
        None => value,
    }
}

/// The per-sample output of [`emit_pair_slabs`]: thread `(lane, w)` writes its two columns of
/// samples `w, w + 8, ...`, read from the tile as its passes read them, as one 32-bit store where
/// the output's rows are 4-byte aligned (`psg_words`: P even, `out0` 4-byte aligned; the pair's
/// first column is even), so a warp writes 128 contiguous bytes a sample; else, and where the
/// pair's second column is past P, one element at a time.
fn emit_pair_batch(
    s: &mut String,
    column: &Column,
    by: usize,
    syntax: &Cuda,
    e: &dyn Fn(usize, &Scalar) -> String,
) {
    s.push_str(
        "    const bool psg_words = (n_p & 1) == 0 && ((unsigned long long)out0 & 3ull) == 0;\n",
    );
    writeln!(
        s,
        "    if (active) {{\n        #pragma unroll {by}\n        for (int b = w; b < n_bi; b += 8) {{\n            const unsigned int pair = tc[(b) << 5];"
    )
    .ok();
    let reads_g = pair_sample_reads(s, column.value_and_keep());
    s.push_str("            psg_elem psg_o[2];\n");
    for j in 0..2 {
        open_pair_column(s, reads_g, j);
        let value = batch_value(column, syntax, &|x| e(j, x));
        writeln!(s, "                psg_o[{j}] = psg_store({value});").ok();
        s.push_str("            }\n");
    }
    s.push_str(
        "            psg_elem* const psg_dst = out0 + (long long)b * n_p + p;\n            if (psg_words && active1) {\n                *(unsigned int*)psg_dst = (unsigned int)psg_o[0] | ((unsigned int)psg_o[1] << 16);\n            } else {\n                psg_dst[0] = psg_o[0];\n                if (active1) psg_dst[1] = psg_o[1];\n            }\n        }\n    }\n",
    );
}

/// In a loop of [`emit_pair_slabs`] over the samples (the tile's word `pair` read), the
/// per-sample inputs that `exprs` read, loaded once for both columns; returns whether they read
/// the element.
fn pair_sample_reads<'a>(s: &mut String, exprs: impl IntoIterator<Item = &'a Scalar>) -> bool {
    let (reads_g, per_sample) = crate::expr::element_reads(exprs);
    for i in per_sample {
        writeln!(
            s,
            "            const psg_acc {} = ps{i}[b];",
            names::per_sample_element(i)
        )
        .ok();
    }
    reads_g
}

/// Opens the block of column `j` (0 or 1) of a sample in [`emit_pair_slabs`]: its element,
/// widened from its half of `pair`, where read.
fn open_pair_column(s: &mut String, reads_g: bool, j: usize) {
    s.push_str("            {\n");
    if reads_g {
        writeln!(
            s,
            "                const psg_acc {} = psg_pair_get(pair, {j});",
            names::ELEMENT
        )
        .ok();
    }
}

/// One pass of [`emit_pair_slabs`] computing `temps` for both columns of each thread, its
/// partials stored to half `half` of `part` (as `float2`: both columns at once) and a barrier;
/// returns the code that combines the 8 warps' partials, for the caller to place.
#[allow(clippy::too_many_arguments)]
fn emit_pair_pass(
    s: &mut String,
    plan: &Plan,
    temps: &[usize],
    half: usize,
    unroll: Unroll,
    syntax: &Cuda,
    e: &dyn Fn(usize, &Scalar) -> String,
    name: &dyn Fn(usize, usize) -> String,
) -> String {
    let zero = syntax.literal(0.0);
    for &t in temps {
        for j in 0..2 {
            let n = name(t, j);
            match plan.temps[t].reduce.op {
                ReduceOp::Min | ReduceOp::Max => {
                    writeln!(s, "    psg_acc {n} = psg_nan(); bool {n}_any = false;")
                }
                ReduceOp::Sum => writeln!(s, "    psg_acc {n}_p = {zero}, {n};"),
                _ => writeln!(s, "    psg_acc {n} = {zero};"),
            }
            .ok();
        }
    }
    let by = unroll.by;
    if unroll.waits {
        // A chunk of rows at a time, each once its copies have landed (see `Unroll`).
        writeln!(
            s,
            "    for (int psg_b0 = 0, psg_k = 0; psg_b0 < n_bi; psg_b0 += psg_chunk, ++psg_k) {{\n        if (psg_k > 0) psg_wait_groups(psg_groups - psg_k);\n        __syncwarp();\n    if (active) {{\n        const int psg_end = min(n_bi, psg_b0 + psg_chunk);\n        #pragma unroll {by}\n        for (int b = psg_b0 + w; b < psg_end; b += 8) {{\n            const unsigned int pair = tc[(b) << 5];"
        )
    } else {
        writeln!(
            s,
            "    if (active) {{\n        #pragma unroll {by}\n        for (int b = w; b < n_bi; b += 8) {{\n            const unsigned int pair = tc[(b) << 5];"
        )
    }
    .ok();
    let columns: Vec<&Column> = temps
        .iter()
        .map(|&t| &plan.temps[t].reduce.column)
        .collect();
    let reads_g = pair_sample_reads(s, columns.iter().flat_map(|c| c.value_and_keep()));
    for j in 0..2 {
        open_pair_column(s, reads_g, j);
        for &t in temps {
            let r = &plan.temps[t].reduce;
            let n = name(t, j);
            let value = e(j, &r.column.value);
            let update = match r.op {
                ReduceOp::Sum => format!("{n}_p += {value};"),
                ReduceOp::Count => format!("{n} += {};", syntax.literal(1.0)),
                ReduceOp::Min | ReduceOp::Max => {
                    let f = if r.op == ReduceOp::Min {
                        "psg_min"
                    } else {
                        "psg_max"
                    };
                    format!("{{ const psg_acc v = {value}; {n} = {n}_any ? {f}({n}, v) : v; {n}_any = true; }}")
                }
                ReduceOp::MinTotal | ReduceOp::Kth(_) => {
                    unreachable!("`pairs` admits only sums, counts, minima and maxima")
                }
            };
            match r.column.keep.as_ref().map(|k| e(j, k)) {
                Some(k) => writeln!(s, "                if ({k}) {{ {update} }}"),
                None => writeln!(s, "                {update}"),
            }
            .ok();
        }
        s.push_str("            }\n");
    }
    s.push_str("        }\n    }\n");
    if unroll.waits {
        s.push_str("    }\n");
    }
    // Both columns' partials of warp w, then the 8 warps' combined in warp order.
    let base = half * partial_slots(plan);
    let at = |slot: usize, r: &str| format!("part2[({} * 8 + {r}) * 32 + lane]", base + slot);
    let mut slot = 0;
    for &t in temps {
        let (a, b) = (name(t, 0), name(t, 1));
        match plan.temps[t].reduce.op {
            ReduceOp::Sum => writeln!(s, "    {} = make_float2({a}_p, {b}_p);", at(slot, "w")),
            ReduceOp::Count => writeln!(s, "    {} = make_float2({a}, {b});", at(slot, "w")),
            _ => writeln!(
                s,
                "    {} = make_float2({a}, {b}); {} = make_float2({a}_any ? 1.0f : 0.0f, {b}_any ? 1.0f : 0.0f);",
                at(slot, "w"),
                at(slot + 1, "w")
            ),
        }
        .ok();
        slot += slots_of(&plan.temps[t].reduce.op);
    }
    s.push_str("    __syncthreads();\n");
    let mut combine = String::new();
    let s = &mut combine;
    let mut slot = 0;
    for &t in temps {
        let op = &plan.temps[t].reduce.op;
        let (a, b) = (name(t, 0), name(t, 1));
        writeln!(s, "    {{\n        float2 q[8];").ok();
        writeln!(
            s,
            "        #pragma unroll\n        for (int r = 0; r < 8; ++r) q[r] = {};",
            at(slot, "r")
        )
        .ok();
        match op {
            ReduceOp::Sum | ReduceOp::Count => {
                for (n, c) in [(&a, 'x'), (&b, 'y')] {
                    let terms: Vec<String> = (0..WARPS).map(|r| format!("q[{r}].{c}")).collect();
                    // A sum's partials are combined in warp order, as `combine_partials` does.
                    writeln!(s, "        {n} = {};", terms.join(" + ")).ok();
                }
            }
            _ => {
                let f = if *op == ReduceOp::Min {
                    "psg_min"
                } else {
                    "psg_max"
                };
                writeln!(
                    s,
                    "        float2 f[8];\n        #pragma unroll\n        for (int r = 0; r < 8; ++r) f[r] = {};",
                    at(slot + 1, "r")
                )
                .ok();
                writeln!(
                    s,
                    "        {a} = psg_nan(); {a}_any = false; {b} = psg_nan(); {b}_any = false;"
                )
                .ok();
                for (n, c) in [(&a, 'x'), (&b, 'y')] {
                    writeln!(
                        s,
                        "        for (int r = 0; r < 8; ++r) {{ if (f[r].{c} != (psg_acc)0) {{ const psg_acc v = q[r].{c}; {n} = {n}_any ? {f}({n}, v) : v; {n}_any = true; }} }}"
                    )
                    .ok();
                }
            }
        }
        s.push_str("    }\n");
        slot += slots_of(op);
    }
    combine
}

/// The values a section (a pass's combine and the lets after it, see [`emit_broadcast`]) hands
/// to the passes after it: the pass's combined `temps` (and the flags of minima and maxima),
/// then `lets`; each a name for every column of the thread (two in [`emit_pair_slabs`], one
/// else). `name(t, j)` names temporary `t` of the thread's column `j`, `suffixes` the thread's
/// columns.
fn section_values(
    plan: &Plan,
    temps: &[usize],
    lets: &[usize],
    suffixes: &[&str],
    name: &dyn Fn(usize, usize) -> String,
) -> Vec<Vec<String>> {
    let columns = 0..suffixes.len();
    let mut values = Vec::new();
    for &t in temps {
        values.push(columns.clone().map(|j| name(t, j)).collect());
        if matches!(plan.temps[t].reduce.op, ReduceOp::Min | ReduceOp::Max) {
            values.push(
                columns
                    .clone()
                    .map(|j| format!("{}_any", name(t, j)))
                    .collect(),
            );
        }
    }
    for &l in lets {
        let local = names::local(l, &plan.lets[l].name);
        values.push(suffixes.iter().map(|x| format!("{local}{x}")).collect());
    }
    values
}

/// Whether the tiled kernel may compute a section before another pass once a block (see
/// [`emit_broadcast`]): in plans of streaming passes where a pass, lets and another pass follow
/// each other.
fn broadcasts(plan: &Plan) -> bool {
    streaming_passes(plan)
        && plan.steps.iter().enumerate().any(|(i, step)| {
            let mut after = plan.steps[i + 1..].iter();
            matches!(step, Step::Loop(_))
                && matches!(after.next(), Some(Step::Let(_)))
                && after
                    .find(|s| !matches!(s, Step::Let(_)))
                    .is_some_and(|s| matches!(s, Step::Loop(_)))
        })
}

/// The most values a section may hand on and still be computed once a block: what half of
/// `part` holds, and at most 4 a column, the most any built-in's section hands on (the z-score
/// mean's second: the two sums, the std, the spread). A user plan whose section handed on 11
/// (a minimum and a maximum with their flags, a sum, five lets) took NVRTC from 64 registers to
/// 116 in f32, where either form alone takes 64: fewer blocks a multiprocessor, at every B.
fn broadcast_max(plan: &Plan) -> usize {
    (WARPS * partial_slots(plan)).min(4)
}

/// Helpers of [`emit_broadcast`]: a value of up to an accumulator's size to and from an
/// accumulator's place in shared memory, bit for bit; the type of an expression without its
/// reference or const.
const SECTION_BROADCAST: &str = r#"/* A section's value, bit for bit, through an accumulator's place in shared memory. */
template <class T> struct psg_plain { typedef T type; };
template <class T> struct psg_plain<T&> { typedef T type; };
template <class T> struct psg_plain<const T> { typedef T type; };
template <class T> struct psg_plain<const T&> { typedef T type; };
template <class T> __device__ __forceinline__ void psg_put(psg_acc* at, const T& v) {
    static_assert(sizeof(T) <= sizeof(psg_acc), "a section's value fits an accumulator's place");
    memcpy(at, &v, sizeof(T));
}
template <class T> __device__ __forceinline__ T psg_get(const psg_acc* at) {
    static_assert(sizeof(T) <= sizeof(psg_acc), "a section's value fits an accumulator's place");
    T v;
    memcpy(&v, at, sizeof(T));
    return v;
}
"#;

/// The batch sizes where [`emit_broadcast`]'s sections run once a block, and where the last
/// section of [`emit_pair_slabs`] runs in the two warps that store alone. Same run, H200, the
/// flag's kernels against every warp computing them (BENCHMARKS.md, "Sections computed once a
/// block"): the z-score mean took 0.90-0.94 of the time at B = 160, 192 and 256 in f32 and bf16,
/// the density-weighted sum 0.87-1.00. Computed once at every B, the bf16 z-score mean took
/// 1.067 of the time at g[1024, 1M] and the f32 density-weighted sum 1.033 at g[64, 16M]:
/// where a slab's passes are long or short, warp 0's section and the barrier after it cost
/// more than the other warps' instructions they save. Outside the window every warp computes
/// each section, as before, in code laid out around the flag's branches: 0.985-1.042 of the
/// time at B = 512, 1024 and 64. B from 129 to 159 was not measured.
///
/// A quick build computes them once a warp at every B (`once` is a constant false there, so
/// NVRTC drops the other form before its slow stages: the quick build only bridges the
/// optimized one, and its compile time is the kernel's first-use latency).
const ONCE: &str = "    // Sections before a pass computed once a block at these B (see `ONCE`).\n#if defined(PSG_QUICK)\n    const bool once = false;\n#else\n    const bool once = n_bi > 128 && n_bi <= 256;\n#endif\n";

/// A section before another pass: where `once` (see [`ONCE`]), computed once a block, warp 0
/// combining the partials and computing the lets (`combine`, `lines`), then storing `values`
/// where the pass's partials were (`at`: the accumulators from the start of `part` to half
/// `half`'s first slot, `columns` a thread, 32 accumulators a value and column: column j of lane
/// l of value v at `32 (columns v + j) + l`) for every warp to read after a barrier; else
/// computed by every warp, as before. Each of the 8 warps computed the whole section, divisions
/// and square roots included: about 190 of the bf16 z-score mean's 1,300 instructions a warp and
/// slab. Every value is the one warp 0 computes, bit for bit. The values stay until the pass
/// after next stores its partials there, after the next pass's barrier: consecutive passes
/// alternate halves. The lets are declared before the branches, of their expressions' types.
/// Returns the lets' `(expression, name)`, for code after the section to read the name (see
/// [`substituted`]).
#[allow(clippy::too_many_arguments)]
fn emit_broadcast(
    s: &mut String,
    plan: &Plan,
    half: usize,
    columns: usize,
    part: &str,
    combine: &str,
    lines: &str,
    values: &[Vec<String>],
) -> Vec<(String, String)> {
    let base = half * partial_slots(plan) * WARPS * 32 * columns;
    let at = |v: usize, j: usize| format!("{part} + {} + lane", base + (columns * v + j) * 32);
    // The lets: declared here, assigned in either branch.
    let mut subs = Vec::new();
    let mut assigned = String::new();
    for line in lines.lines() {
        let (name, value) = line
            .trim()
            .strip_prefix("const auto ")
            .and_then(|rest| rest.strip_suffix(';'))
            .and_then(|rest| rest.split_once(" = "))
            .expect("a let's line");
        writeln!(s, "    psg_plain<decltype({value})>::type {name};").ok();
        writeln!(assigned, "    {name} = {value};").ok();
        if enclosed(value) {
            subs.push((value.to_string(), name.to_string()));
        }
    }
    s.push_str(
        "    if (once) {\n    // Warp 0 combines and computes for the block.\n    if (w == 0) {\n",
    );
    for line in combine.lines().chain(assigned.lines()) {
        writeln!(s, "    {line}").ok();
    }
    // Lanes of warp 0 read other lanes' partials where the values go.
    s.push_str("        __syncwarp();\n");
    for (v, names) in values.iter().enumerate() {
        for (j, name) in names.iter().enumerate() {
            writeln!(s, "        psg_put({}, {name});", at(v, j)).ok();
        }
    }
    s.push_str("    }\n    __syncthreads();\n");
    for (v, names) in values.iter().enumerate() {
        for (j, name) in names.iter().enumerate() {
            writeln!(s, "    {name} = psg_get<decltype({name})>({});", at(v, j)).ok();
        }
    }
    s.push_str("    } else {\n");
    s.push_str(combine);
    s.push_str(&assigned);
    s.push_str("    }\n");
    subs
}

/// `code` with each `(expression, name)` of `subs` replaced: the name of a let in place of its
/// expression.
fn substituted(code: &str, subs: &[(String, String)]) -> String {
    subs.iter().fold(code.to_string(), |c, (value, name)| {
        c.replace(value.as_str(), name)
    })
}

/// Whether printed expression `text` is one parenthesized whole, `(...)`: where it appears in
/// printed code, it is a whole subexpression (binary operations print in parentheses).
fn enclosed(text: &str) -> bool {
    let (mut depth, mut closes) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 && i + 1 != text.len() {
                    return false;
                }
                closes += 1;
            }
            _ if depth == 0 => return false,
            _ => {}
        }
    }
    depth == 0 && closes > 0
}

/// How [`emit_pass`] combines the warps' partials: `last`, only the output reads them (warp 0
/// alone combines them); `declared`, the caller declared the sums' combined values (the pass
/// assigns them).
#[derive(Clone, Copy)]
struct Combine {
    last: bool,
    declared: bool,
}

/// How [`emit_pass`] unrolls its loop over a thread's samples: `by` of them an iteration, and,
/// with `full` (the kernel's largest B, [`PACKED_BINS_MAX_B`] in the bit-sliced packed kernel),
/// where B is that: the pass unrolled whole, a fixed count of samples a thread, with no index,
/// compare or branch a group of them.
///
/// With `waits` (the first pass of a kernel whose tile is pipelined, see [`pipelines_large`]),
/// the loop runs a chunk of the tile's rows at a time, `psg_chunk` of them, and waits before
/// each chunk for its copies: the group of `cp.async` copies of chunk k > 0 is the thread's
/// (k - 1)-th of the tile's `psg_groups`; chunk 0 came from registers. Every lane waits (a
/// lane copies other lanes' columns), then the warp (`__syncwarp`): warp w copied the rows its
/// passes read, w, w + 8, ..., and no other warp's. The same samples in the same order.
///
/// With `spill` (a pass of the spill kernel, see [`crate::cuda_spill`]), the thread's samples
/// below `n_rb` (the rows the block keeps) come from the tile and the rest from `g`, `u` rows
/// loaded before any is used; on the first pass (`first`) every row comes from `g`,
/// and those below `n_rb` are stored into the tile as they pass. The same samples in the same
/// order.
#[derive(Clone, Copy)]
pub(crate) struct Unroll {
    pub(crate) by: usize,
    pub(crate) full: Option<usize>,
    pub(crate) waits: bool,
    pub(crate) spill: Option<crate::cuda_spill::SpillPass>,
}

/// A pass over the column (see [`emit_pass`]). Where selections before it settle some of its
/// reductions (`settle`, see [`Settled`]), a block whose every column has them computes only
/// the others (nothing, where they settle all); `last`: only the output reads its results.
#[allow(clippy::too_many_arguments)]
pub(crate) fn emit_loop(
    s: &mut String,
    plan: &Plan,
    temps: &[usize],
    settle: Option<&[Option<Settled>]>,
    half: usize,
    wait_after: bool,
    last: bool,
    unroll: Unroll,
    syntax: &Cuda,
    e: &dyn Fn(&Scalar) -> String,
    keep: &dyn Fn(&Scalar) -> String,
    from_tile: &dyn Fn(&str) -> String,
) {
    // Each thread's partial: for a sum, the canonical partial number w.
    for &t in temps {
        let name = names::temp(t);
        match plan.temps[t].reduce.op {
            ReduceOp::Min | ReduceOp::Max => {
                writeln!(
                    s,
                    "    psg_acc {name} = psg_nan(); bool {name}_any = false;"
                )
            }
            ReduceOp::Sum => writeln!(s, "    psg_acc {name}_p[1] = {{{}}};", syntax.literal(0.0)),
            // Kept as a key: one integer minimum an element.
            ReduceOp::MinTotal => {
                writeln!(s, "    psg_key {name}_k = ~(psg_key)0; psg_acc {name};")
            }
            _ => writeln!(s, "    psg_acc {name} = {};", syntax.literal(0.0)),
        }
        .ok();
    }
    match settle {
        Some(settle) => {
            // Reductions settled by a selection before the pass (see `Settled`) take its values
            // where every column of the block has them (the selection's flags are the block's:
            // the same in every thread); there the pass runs only for the others, if any.
            let mut known = Vec::new();
            let mut values = String::new();
            let mut rest = Vec::new();
            for (&t, how) in temps.iter().zip(settle) {
                let name = names::temp(t);
                let Some(how) = *how else {
                    rest.push(t);
                    continue;
                };
                // The selection's value for it, and the flag saying the block has that value.
                let flag = settled_flag(how);
                let u = names::temp(how.selection());
                let value = match how {
                    Settled::NoNan(_) => syntax.literal(0.0),
                    Settled::AtOrBelow(_) => format!("{u}_le"),
                    Settled::Above(_) => format!("psg_from_key({u}_above)"),
                    Settled::CountLe(_) => format!("{u}_lec"),
                    Settled::CountLt(_) => format!("{u}_ltc"),
                };
                writeln!(values, "        {name} = {value};").ok();
                if !known.contains(&flag) {
                    known.push(flag);
                }
            }
            // A sum's pass declares its combined value: here it is declared before the branches,
            // and each pass assigns it.
            for &t in temps {
                if plan.temps[t].reduce.op == ReduceOp::Sum {
                    let name = names::temp(t);
                    writeln!(s, "    psg_acc {name} = {};", syntax.literal(0.0)).ok();
                }
            }
            let combine = Combine {
                last,
                declared: true,
            };
            let pass = |temps: &[usize]| {
                let mut p = String::new();
                emit_pass(
                    &mut p, plan, temps, half, combine, unroll, syntax, e, keep, from_tile,
                );
                p
            };
            write!(s, "    if ({}) {{\n{values}", known.join(" && ")).ok();
            if !rest.is_empty() {
                s.push_str(&pass(&rest));
            }
            s.push_str("    } else {\n");
            s.push_str(&pass(temps));
            s.push_str("    }\n");
        }
        None => {
            let combine = Combine {
                last,
                declared: false,
            };
            emit_pass(
                s, plan, temps, half, combine, unroll, syntax, e, keep, from_tile,
            )
        }
    }
    if wait_after {
        s.push_str("    __syncthreads();\n");
    }
}

/// One pass over the column computing `temps` (declared before it): each thread's partials, then
/// the 8 warps' partials combined through half `half` of `part`. Where only the output reads
/// them (`last`: the last pass of a plan that selects, its results written by warp 0), warp 0
/// alone combines them: the other warps' 8 loads and 7 adds a result would go unread (the bf16
/// trimmed mean at g[256, 4M] spent 5% of its instructions there, ncu, H100). Same run, H100:
/// the trimmed mean took 0.96 of the time at g[256, 4M] and 0.95 at g[128, 8M] in bf16, 0.98
/// and 0.97 in f32, 0.96 at g[64, 16M]; the other selecting plans 0.99-1.02. Not in plans
/// without a selection, whose slabs are short: the bf16 Gaussian-weighted sum at g[1024, 1M]
/// took 1.05 of the time, the others 0.99-1.01. Nor in the kernel for large B (which took as
/// long either way, and the f32 clipped median's kept 16 bytes in a frame).
///
/// bf16 input's filtered sums with two columns a thread (`set.bf16x2` comparisons of both
/// columns' values at once, warps 0-3 each summing a pair's partial in the canonical order,
/// four instructions a value instead of five) took 1.01-1.02 of the time of the bf16 trimmed
/// mean (H100, same run): half the warps. A column's partial cannot be split over two
/// threads: sample b goes to partial b % 8, in order, as on the CPU, bit for bit.
#[allow(clippy::too_many_arguments)]
fn emit_pass(
    s: &mut String,
    plan: &Plan,
    temps: &[usize],
    half: usize,
    combine: Combine,
    unroll: Unroll,
    syntax: &Cuda,
    e: &dyn Fn(&Scalar) -> String,
    keep: &dyn Fn(&Scalar) -> String,
    from_tile: &dyn Fn(&str) -> String,
) {
    // The code for sample `b`, its element read as `from` reads it.
    let body_from = |from: &dyn Fn(&str) -> String| {
        let mut body = String::new();
        let columns = temps.iter().map(|&t| &plan.temps[t].reduce.column);
        loop_header_with(&mut body, "            ", columns, e, &plan.ranks, from);
        for &t in temps {
            let r = &plan.temps[t].reduce;
            let update = match r.op {
                ReduceOp::MinTotal => {
                    let name = names::temp(t);
                    format!(
                        "{name}_k = min({name}_k, psg_to_key({}));",
                        e(&r.column.value)
                    )
                }
                _ => update_partial(&r.op, t, &e(&r.column.value), "0", syntax),
            };
            match r.column.keep.as_ref().map(keep) {
                Some(k) => writeln!(body, "            if ({k}) {{ {update} }}"),
                None => writeln!(body, "            {update}"),
            }
            .ok();
        }
        body
    };
    let body = body_from(from_tile);
    let by = unroll.by;
    let looped = format!(
        "        #pragma unroll {by}\n        for (int b = w; b < n_bi; b += 8) {{\n{body}        }}\n"
    );
    match unroll.full {
        Some(_) if unroll.spill.is_some() => unreachable!("a spill pass is not unrolled whole"),
        None if unroll.spill.is_some() => {
            let pass = unroll.spill.expect("a spill pass");
            let g_body = body_from(&|_| "psg_load(psg_raw, u)".into());
            s.push_str(&crate::cuda_spill::spill_pass(&body, by, &g_body, pass));
        }
        _ if unroll.waits => {
            debug_assert!(
                unroll.full.is_none(),
                "a pipelined tile's pass is not unrolled whole"
            );
            write!(
            s,
            "    // The tile's rows a chunk at a time, each once its copies have landed (see `Unroll`).\n    for (int psg_b0 = 0, psg_k = 0; psg_b0 < n_bi; psg_b0 += psg_chunk, ++psg_k) {{\n        if (psg_k > 0) psg_wait_groups(psg_groups - psg_k);\n        __syncwarp();\n        if (active) {{\n        const int psg_end = min(n_bi, psg_b0 + psg_chunk);\n        #pragma unroll {by}\n        for (int b = psg_b0 + w; b < psg_end; b += 8) {{\n{body}        }}\n        }}\n    }}\n"
            )
            .ok();
        }
        Some(full) => {
            // The same samples in the same order: the sums do not change. Not in the quick
            // build, whose compile time follows the source's length (see `emit_select`).
            write!(
                s,
                "    if (active) {{\n#if defined(PSG_QUICK)\n    {{\n#else\n    if (n_bi == {full}) {{\n        // Every sample exists: {per} a thread, unrolled whole.\n        #pragma unroll\n        for (int m = 0; m < {per}; ++m) {{\n            const int b = w + 8 * m;\n{body}        }}\n    }} else {{\n#endif\n{looped}    }}\n    }}\n",
                per = full / WARPS,
            )
            .ok();
        }
        None => {
            write!(s, "    if (active) {{\n{looped}    }}\n").ok();
        }
    }
    // Combine the 8 warps' partials through shared memory, in warp order.
    let mut slot = 0;
    let base = half * partial_slots(plan);
    let at = move |slot: usize, r: &str| format!("part[({} * 8 + {r}) * 32 + lane]", base + slot);
    for &t in temps {
        let name = names::temp(t);
        match plan.temps[t].reduce.op {
            ReduceOp::Sum => writeln!(s, "    {} = {name}_p[0];", at(slot, "w")),
            ReduceOp::Count => writeln!(s, "    {} = {name};", at(slot, "w")),
            ReduceOp::MinTotal => writeln!(s, "    {} = psg_from_key({name}_k);", at(slot, "w")),
            _ => writeln!(
                s,
                "    {} = {name}; {} = {name}_any ? (psg_acc)1 : (psg_acc)0;",
                at(slot, "w"),
                at(slot + 1, "w")
            ),
        }
        .ok();
        slot += slots_of(&plan.temps[t].reduce.op);
    }
    s.push_str("    __syncthreads();\n");
    let mut combined = String::new();
    combine_warps(&mut combined, plan, temps, false, &at);
    if !combine.last && !combine.declared {
        s.push_str(&combined);
        return;
    }
    // A sum's combining line declares it: declared before (by the caller, or here before warp
    // 0's branch), assigned here.
    for &t in temps {
        if plan.temps[t].reduce.op == ReduceOp::Sum {
            let name = names::temp(t);
            if !combine.declared {
                writeln!(s, "    psg_acc {name} = {};", syntax.literal(0.0)).ok();
            }
            combined = combined.replace(&format!("const psg_acc {name} = "), &format!("{name} = "));
        }
    }
    if !combine.last {
        s.push_str(&combined);
        return;
    }
    s.push_str("    if (w == 0) {\n");
    for line in combined.lines() {
        writeln!(s, "    {line}").ok();
    }
    s.push_str("    }\n");
}

/// Combines the 8 warps' partials of `temps` in warp order; `at(slot, r)` is warp `r`'s value of
/// partial slot `slot`. `declare`: the temporaries are new names here (else they are assigned).
pub(crate) fn combine_warps(
    s: &mut String,
    plan: &Plan,
    temps: &[usize],
    declare: bool,
    at: &dyn Fn(usize, &str) -> String,
) {
    let (acc, flag) = if declare {
        ("psg_acc ", "bool ")
    } else {
        ("", "")
    };
    let mut slot = 0;
    for &t in temps {
        let name = names::temp(t);
        let op = &plan.temps[t].reduce.op;
        match op {
            ReduceOp::Sum => {
                let line = combine_partials(op, t, |r| at(slot, &r.to_string()));
                writeln!(s, "    {}", line.unwrap_or_default()).ok();
            }
            ReduceOp::Count => {
                let terms: Vec<String> = (0..WARPS).map(|r| at(slot, &r.to_string())).collect();
                writeln!(s, "    {acc}{name} = {};", terms.join(" + ")).ok();
            }
            ReduceOp::MinTotal => {
                writeln!(
                    s,
                    "    {acc}{name} = psg_total_none();\n    for (int r = 0; r < 8; ++r) {name} = psg_total_min({name}, {});",
                    at(slot, "r")
                )
                .ok();
            }
            _ => {
                let f = if *op == ReduceOp::Min {
                    "psg_min"
                } else {
                    "psg_max"
                };
                writeln!(s, "    {acc}{name} = psg_nan(); {flag}{name}_any = false;").ok();
                writeln!(
                    s,
                    "    for (int r = 0; r < 8; ++r) {{ if ({} != (psg_acc)0) {{ const psg_acc v = {}; {name} = {name}_any ? {f}({name}, v) : v; {name}_any = true; }} }}",
                    at(slot + 1, "r"),
                    at(slot, "r")
                )
                .ok();
            }
        }
        slot += slots_of(op);
    }
}

/// The gathered lists' ranking where they may be sorted ([`sorts_lists`]; lists of column `c` at
/// `cand[c * stride + i]`): the barrier after the gathering pass, and where some list of the
/// block is longer than [`SORT_ABOVE`], every list sorted across a warp; else the ranking of
/// short lists, which follows (closed by `rank_close`).
fn sorted_rank_open(stride: usize, next: bool) -> String {
    let store = if next {
        "if (lane == 0) { found[c] = v; pick[c] = le; over[32 + c] = min(above, over[c]); }"
    } else {
        "if (lane == 0) { found[c] = v; pick[c] = le; }"
    };
    format!(
        r#"        // Lists longer than {SORT_ABOVE} keys, anywhere in the block, are sorted; shorter ones ranked.
        if (__syncthreads_or(gather && pick[32 + lane] > {SORT_ABOVE})) {{
            // Warp w sorts the lists of columns w, w + 8, w + 16 and w + 24 across its lanes
            // (those of up to 32 keys all four at once): the key at position `rem` is the
            // answer, the keys at or below it end before the first position above it, and that
            // position holds the least key above it.
            psg_key a[4];
            #pragma unroll
            for (int i = 0; i < 4; ++i) {{
                const int c = w + 8 * i, n = totals[c];
                a[i] = lane < n && n <= 32 ? cand[c * {stride} + lane] : ~(psg_key)0;
            }}
            psg_warp_sort32x4(a, lane);
            #pragma unroll
            for (int i = 0; i < 4; ++i) {{
                const int c = w + 8 * i, n = totals[c];
                if (n == 0 || n > 32) continue;
                const psg_key v = __shfl_sync(0xffffffffu, a[i], pick[64 + c]);
                const int le = __popc(__ballot_sync(0xffffffffu, lane < n && a[i] <= v));
                psg_key above = __shfl_sync(0xffffffffu, a[i], le & 31);
                if (le >= n) above = ~(psg_key)0;
                {store}
            }}
            #pragma unroll 1
            for (int c = w; c < 32; c += 8) {{
                const int n = totals[c];
                if (n <= 32) continue;
                const int r = pick[64 + c];
                psg_key x = cand[c * {stride} + lane];
                psg_key y = lane + 32 < n ? cand[c * {stride} + 32 + lane] : ~(psg_key)0;
                psg_warp_sort64(x, y, lane);
                const psg_key v = __shfl_sync(0xffffffffu, r < 32 ? x : y, r & 31);
                const int le = __popc(__ballot_sync(0xffffffffu, x <= v)) + __popc(__ballot_sync(0xffffffffu, lane + 32 < n && y <= v));
                psg_key above = __shfl_sync(0xffffffffu, le < 32 ? x : y, le & 31);
                if (le >= n) above = ~(psg_key)0;
                {store}
            }}
        }} else {{
"#
    )
}

#[allow(clippy::too_many_arguments)]
fn emit_select(
    s: &mut String,
    plan: &Plan,
    t: usize,
    input: Option<DType>,
    key_bits: u32,
    flags: SelectFlags,
    pair: Option<Paired>,
    intact: Option<&str>,
    e: &dyn Fn(&Scalar) -> String,
    from_tile: &dyn Fn(&str) -> String,
    other: &OtherColumn,
) {
    let SelectFlags {
        clean,
        next,
        packed,
        small,
        sliced,
        fetch,
        parts_log2: _,
        tie_unread: _,
        split: _,
        half_planes: _,
        counts,
    } = flags;
    let r = &plan.temps[t].reduce;
    let ReduceOp::Kth(k) = &r.op else {
        unreachable!("only selection temporaries get a Select step")
    };
    let name = names::temp(t);
    let keep = r
        .column
        .keep
        .as_ref()
        .map(e)
        .unwrap_or_else(|| "true".into());
    writeln!(s, "    psg_acc {name};").ok();
    if clean {
        // Whether no column of the block holds a NaN (see `Settled::NoNan`).
        writeln!(s, "    bool {name}_clean = false;").ok();
    }
    if next {
        // The next value's reductions (see `Settled::AtOrBelow`, `Settled::Above`), and whether
        // every column of the block has them.
        writeln!(
            s,
            "    bool {name}_next = false; psg_acc {name}_le = (psg_acc)0; psg_key {name}_above = ~(psg_key)0;"
        )
        .ok();
    }
    // The counts at or below and below the value (see `Settled::CountLe`), and whether every
    // column of the block has them: a bit-sliced paired selection finds them, no other.
    let declare_counts = |s: &mut String, name: &str, counts: Counts| {
        if counts.any() {
            writeln!(
                s,
                "    bool {name}_cnt = false; psg_acc {name}_lec = (psg_acc)0, {name}_ltc = (psg_acc)0;"
            )
            .ok();
        }
    };
    declare_counts(s, &name, counts);
    // The paired selection's result and NaN guard, and its rank's expression.
    let paired = pair.map(
        |Paired {
             t: u,
             clean,
             counts,
         }| {
            let name = names::temp(u);
            writeln!(s, "    psg_acc {name};").ok();
            if clean {
                writeln!(s, "    bool {name}_clean = false;").ok();
            }
            declare_counts(s, &name, counts);
            let ReduceOp::Kth(k2) = &plan.temps[u].reduce.op else {
                unreachable!("only selection temporaries get a Select step")
            };
            PairedCode {
                name,
                clean,
                rank: e(k2),
                counts,
            }
        },
    );
    s.push_str("    {\n");
    let mode = keys_of(plan, t);
    let sorted = sorts_lists(plan, t, input, key_bits);
    let cap = if sorted { GATHER_SORTED } else { GATHER };
    // The low bits a key's sign decides: a bf16 value widened to f32 (a shift) has 16 clear
    // mantissa bits (set in the key of a negative value), so the counting stops once the digits
    // above them are fixed (ties need no more passes). Not f16: its widening turns every NaN
    // into 0x7fffffff, whose low bits are set.
    let zero_low_bits = if bf16_own_keys(plan, t, input) { 16 } else { 0 };
    // Computed keys, with the names and elements of `e` and `from_tile`. The key of an absolute
    // value (the MAD's distances) is `psg_abs_key` of its argument: one logic op, where NVRTC
    // kept the abs, a shift and a logic op of `psg_to_key(psg_abs(..))` (H100, same run: MAD
    // mean 0.98 of the time in f32, 0.97-0.98 in bf16, at g[256, 4M] and g[128, 8M]).
    let computed =
        |indent: &str, e: &dyn Fn(&Scalar) -> String, from_tile: &dyn Fn(&str) -> String| {
            let mut c = String::new();
            loop_header_with(&mut c, indent, [&r.column], e, &plan.ranks, from_tile);
            let key = match &r.column.value {
                Scalar::Call(Func::Abs, args) if args.len() == 1 => {
                    format!("psg_abs_key({})", e(&args[0]))
                }
                value => format!("psg_to_key({})", e(value)),
            };
            match &r.column.keep {
                Some(keep) => writeln!(
                    c,
                    "{indent}const psg_key key = ({}) ? {key} : ~(psg_key)0;",
                    e(keep)
                ),
                None => writeln!(c, "{indent}const psg_key key = {key};"),
            }
            .ok();
            c
        };
    // The statements that bind `key` for sample `b` (removed values get the largest key, which
    // ranks after every kept value and so never changes a rank below the count).
    let key_code = |indent: &str| -> String {
        match mode {
            Keys::Direct => format!(
                "{indent}const psg_key key = psg_to_key({});\n",
                from_tile("b")
            ),
            Keys::Stored => format!("{indent}const psg_key key = kc[b << 5];\n"),
            Keys::Computed => computed(indent, e, from_tile),
        }
    };
    if mode == Keys::Direct || (mode == Keys::Computed && r.column.keep.is_none()) {
        // Every sample is kept.
        s.push_str("        const long long total = n_b;\n");
    } else {
        if mode == Keys::Stored {
            s.push_str("        // Keys of this column, once.\n");
        }
        s.push_str("        int kept = 0;\n");
        s.push_str("        if (active) {\n            for (int b = w; b < n_bi; b += 8) {\n");
        loop_header_with(
            s,
            "                ",
            [&r.column],
            e,
            &plan.ranks,
            from_tile,
        );
        s.push_str("                const bool keep_b = ");
        s.push_str(&keep);
        s.push_str(";\n");
        if mode == Keys::Stored {
            writeln!(
                s,
                "                kc[b << 5] = keep_b ? psg_to_key({}) : ~(psg_key)0;",
                e(&r.column.value)
            )
            .ok();
        }
        s.push_str("                kept += keep_b ? 1 : 0;\n            }\n        }\n");
        s.push_str("        bins[w * 32 + lane] = kept;\n        __syncthreads();\n");
        s.push_str("        long long total = 0;\n");
        s.push_str("        for (int r = 0; r < 8; ++r) total += bins[r * 32 + lane];\n");
    }
    writeln!(s, "        const long long k = psg_index({});", e(k)).ok();
    // The quick build (`PSG_QUICK`, see `psg-runtime`'s `quick_options`) selects the same keys
    // by the shortest code: every digit counted, each found by one thread a column (see
    // `quick_digit_select`). NVRTC's quick builds of the MAD's kernels took up to 0.47 s (B up
    // to 256) and 0.57 s (above) on the H100 host, nearly all of it in ptxas, whose time
    // follows the kernel's length; with this form, at most 0.33 s (any kernel). The price: a
    // quick f32 selection runs 2-3 times as long as the unsplit bit-sliced one did (the f32
    // median at g[256, 4M]: 401 ms against 146 ms), for the second or so of the optimized
    // compile.
    s.push_str("#if defined(PSG_QUICK)\n");
    let quick_key = key_code("                        ");
    // 16-bit counts fit every kernel's scratch up to B = 256 (see `tile_smem`).
    let quick_packed = packed || sliced || small;
    let clean_flag = format!("{name}_clean");
    s.push_str(&quick_digit_select(
        "",
        key_bits,
        zero_low_bits,
        quick_packed,
        &quick_key,
        clean.then_some(clean_flag.as_str()),
        next.then_some(name.as_str()),
    ));
    if let Some(p) = &paired {
        if sliced || small {
            writeln!(s, "        const long long k2 = psg_index({});", p.rank).ok();
            let clean2 = format!("{}_clean", p.name);
            s.push_str(&quick_digit_select(
                "2",
                key_bits,
                zero_low_bits,
                quick_packed,
                &quick_key,
                p.clean.then_some(clean2.as_str()),
                None,
            ));
        }
    }
    if fetch {
        s.push_str(FETCH_NEXT);
    }
    s.push_str("#else\n");
    if sliced {
        // Keys of 16-bit input (a column's own, or a function of them such as the MAD's
        // distances) tie often: see `sliced_select`.
        let ties = matches!(input, Some(DType::BF16 | DType::F16));
        // A column's own keys are transposed as the tile's bits (16 of a bf16 value as loaded,
        // or an f32), mapped to keys on the planes (see `sliced_select`); not f16's, whose
        // widening is no mere shift.
        let raw = match (mode, input) {
            (Keys::Direct, Some(DType::BF16)) => Some(16),
            (Keys::Direct, Some(DType::F32) | None) => Some(32),
            _ => None,
        };
        debug_assert!(raw != Some(16) || zero_low_bits == 16);
        // The NaN check as a column's own keys are transposed (see `sliced_select`): bf16's;
        // f32's where the selection is the plan's only one. Same run, H100, against the check
        // in the selecting lanes: bf16 median, quantile, `kth` and trimmed mean 0.98-1.00 of
        // the time at g[256, 4M] and g[128, 8M]; f32 median 0.98 and 0.91, quantile 0.98 and
        // 0.92, `kth` 0.96 and 0.95. With the check for the f32 trimmed mean too (a paired
        // selection) and the MAD mean's both selections (its distances, computed keys, all
        // kept, checked the same way), another run: 1.02 and 0.99, 1.02 and 1.01.
        let own_check =
            raw == Some(16) || (raw.is_some() && paired.is_none() && selection_waves(plan) == 1);
        // Computed keys of another column, for the tie check (see `TIE_AT`; keys of 16-bit
        // input) and a lone key's bits after an early stop: the per-column values they read,
        // from that column's lane.
        let other_key = (mode == Keys::Computed).then(|| OtherKey {
            shuffles: column_shuffles(
                "                    ",
                r.column.value_and_keep(),
                e,
                other.e,
            ),
            key: computed("                            ", other.e, other.from_tile),
        });
        s.push_str(&sliced_select(
            &name,
            flags,
            &key_code("                    "),
            zero_low_bits,
            ties,
            raw,
            own_check,
            paired.as_ref(),
            other_key.as_ref(),
        ));
        s.push_str("#endif\n");
        if let Some(PairedCode { name: name2, .. }) = &paired {
            writeln!(
                s,
                "        {name2} = valid2 ? psg_from_key(prefix2) : psg_nan();"
            )
            .ok();
        }
        writeln!(
            s,
            "        {name} = valid ? psg_from_key(prefix) : psg_nan();\n    }}"
        )
        .ok();
        return;
    }
    if small {
        let merge = intact.zip(merged_runs(plan, t)).map(|(intact, m)| {
            let Scalar::Call(_, args) = &r.column.value else {
                unreachable!("merged_runs matched an absolute value")
            };
            MergeCode {
                intact: intact.to_string(),
                shuffles: column_shuffles("            ", [m], e, other.e),
                key: format!("psg_abs_key({})", (other.e)(&args[0])),
                m: e(m),
            }
        });
        s.push_str(&small_select(
            &name,
            clean,
            next,
            &key_code("            "),
            paired.as_ref(),
            merge.as_ref(),
        ));
        s.push_str("#endif\n");
        if let Some(PairedCode { name: name2, .. }) = &paired {
            writeln!(
                s,
                "        {name2} = valid2 ? psg_from_key(prefix2) : psg_nan();"
            )
            .ok();
        }
        writeln!(
            s,
            "        {name} = valid ? psg_from_key(prefix) : psg_nan();\n    }}"
        )
        .ok();
        return;
    }
    // 8-bit digits, most significant first. A column is done when its digit's bucket holds few
    // enough keys to gather (they are ranked among themselves), when every bit is fixed, or
    // when every key of its bucket is the same (keys of more than two digits, see
    // `TIED_SHARE`).
    let ties = key_bits - 16 > zero_low_bits;
    // A key's count in its digit's bin.
    let count = if packed {
        "atomicAdd((int*)(hist + ((int)(d >> 1) << 7)), 1 << (((int)d & 1) << 4));"
    } else {
        "atomicAdd((int*)(hist + ((int)d << 7)), 1);"
    };
    writeln!(
        s,
        r#"        const bool valid = k >= 0 && k < total;
        int rem = valid ? (int)k : 0;
        psg_key prefix = 0;
        bool done = !(valid && active), gather = false;
{tie_decl}        int shift = {top}, gshift = 0;
        // The largest bucket a column may gather (see `GATHER`): fewer when one more digit
        // would finish every column.
        const int cap = {cap}, cap_last = n_bi <= 512 ? 4 : 0;
{layout}        char* const hist = (char*)(bins + lane);
        // A key off the prefix is counted in digit {dummy}: in row w past the counts, which nothing
        // reads.
        const int dummy = {dummy};
        __syncthreads();
        for (;;) {{
            #pragma unroll
            for (int i = 0; i < {clear}; ++i) ((int4*)bins)[tid + i * 256] = make_int4(0, 0, 0, 0);
{tie_init}            __syncthreads();
            if (!done{untracked}) {{
                // A key matches the digits fixed so far when it and the prefix differ only in
                // this digit and below: its digit is then the difference shifted down.
                #pragma unroll 8
                for (int b = w; b < n_bi; b += 8) {{
{key_hist}                    // Others count in the dummy row: a branch around the atomic costs three
                    // instructions more.
                    const psg_key d = min((key ^ prefix) >> shift, (psg_key)dummy);
                    {count}
                }}
            }}{tracked}
            __syncthreads();
{clean_check}            // Thread (lane, w) totals digits 32w .. 32w + 31 of column lane.
            int sum = 0;
            #pragma unroll
{chunk_sum}            totals[w * 32 + lane] = sum;
{totals_barrier}            // The chunk holding rank `rem`, then its group of 4 digits (thread w totals digits
            // 4w .. 4w + 3 of the chunk), then the digit (found by that group's thread).
            int before = 0, owner = 7;
            #pragma unroll
            for (int r = 0; r < 7; ++r) {{
                const int c = totals[r * 32 + lane];
                if (owner == 7 && rem < before + c) owner = r; else if (owner == 7) before += c;
            }}
            int quad = 0;
{quad_sum}
            __syncthreads();
            totals[w * 32 + lane] = quad;
            __syncthreads();
            int group = 7;
            #pragma unroll
            for (int r = 0; r < 7; ++r) {{
                const int c = totals[r * 32 + lane];
                if (group == 7 && rem < before + c) group = r; else if (group == 7) before += c;
            }}
            if (!done && w == group) {{
                int r2 = rem - before, digit = 3, count = 0;
                #pragma unroll
                for (int d = 0; d < 4; ++d) {{
                    const int c = {digit_count};
                    if (count == 0 && r2 < c) {{ digit = d; count = c; }} else if (count == 0) r2 -= c;
                }}
                pick[lane] = owner * 32 + w * 4 + digit; pick[32 + lane] = count; pick[64 + lane] = r2;
            }}
            __syncthreads();
            // The gathered keys' count (the pick is read).
            if (w == 0) {{ totals[lane] = 0;{over_init} }}
            bool last = false, fits = true;
            if (!done) {{
                prefix |= ((psg_key)pick[lane]) << shift;
                rem = pick[64 + lane];
                last = shift <= {low};
                fits = pick[32 + lane] <= (shift - 8 <= {low} ? cap_last : cap);
                // Bits below a last digit above 0 are those of every key under the prefix: clear
                // for a positive value, set for a negative one (its key is complemented).
                if (last && shift > 0 && (prefix >> {sign_bit}) == 0) prefix |= (((psg_key)1) << shift) - 1;
{tie_check}            }}
            // The block gathers when every column can (a column that counts another digit
            // makes the whole block pay that pass), else every column counts another. `last`
            // is the same for every column not done (the digit is), so a last digit ends the
            // loop here too: the `done` update after the vote is a no-op that keeps `done`
            // right should the digits of columns ever differ.
            if (__syncthreads_and(last || fits)) {{
                gather = !done && !last;
                gshift = shift;
                break;
            }}
            done = done || last;
            shift -= 8;
{track_update}        }}
        // A small bucket: its keys are copied to a list of the column's (column c's at
        // cand[c * {cap_pad} + i], where the digit counts were), then the list is ranked against
        // itself: the key of rank `rem` (ties ranked by position) is the answer.
        if (gather{or_tied}) {{
{least_decl}            for (int b = w; b < n_bi; b += 8) {{
{key_find}{least_update}                if ({gathers}((key ^ prefix) >> gshift) == 0) cand[lane * {cap_pad} + atomicAdd(&totals[lane], 1)] = key;
            }}
{least_store}        }}
{rank_open}        if (n_bi < {warp_rank_below}) {{
            // Warp w ranks the lists of columns w, w + 8, w + 16 and w + 24, a key to a lane,
            // through shuffles: the work follows each list's length.
            #pragma unroll 1
            for (int c = w; c < 32; c += 8) {{
                const int n = totals[c];
                if (n == 0) continue;
                const psg_key mine = lane < n ? cand[c * {cap_pad} + lane] : ~(psg_key)0;
                int r = 0;
                for (int j = 0; j < n; ++j) {{
                    const psg_key kj = __shfl_sync(0xffffffffu, mine, j);
                    r += (kj < mine || (kj == mine && j < lane)) ? 1 : 0;
                }}
{warp_store}            }}
        }} else {{
            // Thread (lane, w) ranks keys w, w + 8, ... of column lane's list against the list:
            // the work follows the longest list of the warp's columns.
            const int n = gather ? totals[lane] : 0;
            const psg_key* const list = cand + lane * {cap_pad};
            #pragma unroll 1
            for (int i = w; i < n; i += 8) {{
                const psg_key mine = list[i];
                int r = 0;
                #pragma unroll 2
                for (int j = 0; j < n; ++j) {{
                    const psg_key kj = list[j];
                    r += (kj < mine || (kj == mine && j < i)) ? 1 : 0;
                }}
                if (r == rem) {{
                    found[lane] = mine;{thread_next}
                }}
            }}
        }}
{rank_close}        __syncthreads();
        if (gather) prefix = found[lane];
{finish}"#,
        top = key_bits - 8,
        low = zero_low_bits,
        sign_bit = key_bits - 1,
        cap_pad = cap + 1,
        rank_open = if sorted {
            sorted_rank_open(cap + 1, next)
        } else {
            "        __syncthreads();\n".to_string()
        },
        rank_close = if sorted { "        }\n" } else { "" },
        key_hist = key_code("                    "),
        key_find = key_code("                "),
        over_init = if next { " over[lane] = ~(psg_key)0;" } else { "" },
        least_decl = if next {
            format!(
                "            // This thread's least key above the bucket (the next value where the selected\n            \
                 // one is the bucket's greatest{or_tied_key}).\n            \
                 const psg_key hi = {tied_hi}prefix | ((((psg_key)1) << gshift) - 1);\n            \
                 psg_key least = ~(psg_key)0;\n",
                or_tied_key = if ties { ", or the tied key" } else { "" },
                tied_hi = if ties { "tied ? prefix : " } else { "" },
            )
        } else {
            String::new()
        },
        or_tied = if next && ties { " || tied" } else { "" },
        gathers = if next && ties { "gather && " } else { "" },
        tie_decl = if ties {
            "        // Where every key of a column's bucket is the same (see `TIED_SHARE`; its count\n        \
             // stays in the pick), and whether this pass looks for that.\n        \
             bool tied = false, track = false;\n"
        } else {
            ""
        },
        tie_init = if ties {
            "            if (w == 0) { found[lane] = ~(psg_key)0; found[64 + lane] = ~(psg_key)0; }\n"
        } else {
            ""
        },
        untracked = if ties { " && !track" } else { "" },
        tracked = if ties {
            format!(
                r#" else if (!done) {{
                // Also the least and the greatest key of the bucket, as their differences from
                // the prefix, the greatest's low bits flipped so that a minimum finds it too (a
                // key off the prefix differs above them either way).
                const psg_key low_bits = (((psg_key)1) << (shift + 8)) - 1;
                psg_key lo = ~(psg_key)0, hi = ~(psg_key)0;
                #pragma unroll 8
                for (int b = w; b < n_bi; b += 8) {{
{key_hist}                    const psg_key off = key ^ prefix;
                    const psg_key d = min(off >> shift, (psg_key)dummy);
                    {count}
                    lo = min(lo, off);
                    hi = min(hi, off ^ low_bits);
                }}
                atomicMin(&found[lane], lo);
                atomicMin(&found[64 + lane], hi);
            }}"#,
                key_hist = key_code("                    "),
            )
        } else {
            String::new()
        },
        tie_check = if ties {
            "                // The bucket's least key is its greatest: every key of it is the selected one.\n                \
             if (track && found[lane] == (found[64 + lane] ^ ((((psg_key)1) << (shift + 8)) - 1))) {\n                    \
             prefix |= found[lane];\n                    \
             tied = true;\n                    \
             done = true;\n                    \
             fits = true;\n                \
             }\n"
        } else {
            ""
        },
        track_update = if ties {
            format!(
                "            // The next pass also looks for a bucket of one repeated key, unless it is the\n            \
                 // last (which fixes every bit anyway): after the second digit, and after the first\n            \
                 // where some column's bucket holds more than {num}/{den} of its keys (every warp has the\n            \
                 // same columns, so the warp's vote is the block's).\n            \
                 track = shift > {low} && (shift < {top} - 8 || __any_sync(0xffffffffu, !done && {den} * pick[32 + lane] > {num} * n_bi));\n",
                low = zero_low_bits,
                top = key_bits - 8,
                num = TIED_SHARE.0,
                den = TIED_SHARE.1,
            )
        } else {
            String::new()
        },
        least_update = if next {
            "                least = min(least, key > hi ? key : ~(psg_key)0);\n"
        } else {
            ""
        },
        least_store = if next {
            "            atomicMin(&over[lane], least);\n"
        } else {
            ""
        },
        warp_rank_below = WARP_RANK_BELOW,
        layout = if packed {
            "        // Digit d of column lane is counted in half d & 1 of bins[(d / 2) * 32 + lane] (bytes:\n        \
             // hist + (d / 2) * 128): 16-bit counts, two a word (see `PACKED_BINS_MAX_B`).\n"
        } else {
            "        // Digit d of column lane is counted at bins[d * 32 + lane] (bytes: hist + d * 128).\n"
        },
        dummy = if packed {
            format!("{BINS} + 2 * w")
        } else {
            format!("{BINS} + w")
        },
        clear = if packed { 4 } else { 8 },
        chunk_sum = if packed {
            "            for (int d = 0; d < 16; ++d) sum += bins[(w * 16 + d) * 32 + lane];\n            \
             // Neither half's sum can carry.\n            \
             sum = (sum & 0xffff) + (sum >> 16);\n"
        } else {
            "            for (int d = 0; d < 32; ++d) sum += bins[(w * 32 + d) * 32 + lane];\n"
        },
        quad_sum = if packed {
            "            quad = bins[(owner * 16 + w * 2) * 32 + lane] + bins[(owner * 16 + w * 2 + 1) * 32 + lane];\n            \
             quad = (quad & 0xffff) + (quad >> 16);"
        } else {
            "            #pragma unroll\n            \
             for (int d = 0; d < 4; ++d) quad += bins[(owner * 32 + w * 4 + d) * 32 + lane];"
        },
        digit_count = if packed {
            "(bins[(owner * 16 + w * 2 + (d >> 1)) * 32 + lane] >> ((d & 1) << 4)) & 0xffff"
        } else {
            "bins[(owner * 32 + w * 4 + d) * 32 + lane]"
        },
        warp_store = if next {
            "                // The selected key (one lane's: ranks are distinct), the keys at or below it\n                \
             // and the least above it, across the warp.\n                \
             const unsigned int hit = __ballot_sync(0xffffffffu, lane < n && r == pick[64 + c]);\n                \
             const int src = __ffs(hit) - 1;\n                \
             const psg_key v = __shfl_sync(0xffffffffu, mine, src);\n                \
             const int le = __popc(__ballot_sync(0xffffffffu, mine <= v));\n                \
             psg_key above = mine > v ? mine : ~(psg_key)0;\n                \
             #pragma unroll\n                \
             for (int o = 16; o > 0; o >>= 1) above = min(above, __shfl_xor_sync(0xffffffffu, above, o));\n                \
             if (lane == src) { found[c] = v; pick[c] = le; over[32 + c] = min(above, over[c]); }\n"
        } else {
            "                if (lane < n && r == pick[64 + c]) found[c] = mine;\n"
        },
        thread_next = if next {
            "\n                    // The keys at or below it and the least above it.\n                    \
             int le = 0;\n                    \
             psg_key above = over[lane];\n                    \
             #pragma unroll 1\n                    \
             for (int j = 0; j < n; ++j) {\n                        \
             const psg_key kj = list[j];\n                        \
             le += kj <= mine ? 1 : 0;\n                        \
             above = kj > mine ? min(above, kj) : above;\n                    \
             }\n                    \
             pick[lane] = le; over[32 + lane] = above;"
        } else {
            ""
        },
        finish = if next {
            format!(
                "        // Kept values at or below the selected one: those below its bucket (k - rem), then\n        \
                 // the bucket's.\n        \
                 if (gather) {{ {name}_le = (psg_acc)(k - rem + pick[lane]); {name}_above = over[32 + lane]; }}\n{tied_finish}        \
                 {name}_next = __syncthreads_and(!active || {gathered});",
                tied_finish = if ties {
                    format!(
                        "        // A bucket of one repeated key: the least key above the bucket.\n        \
                         if (tied) {{ {name}_le = (psg_acc)(k - rem + pick[32 + lane]); {name}_above = over[lane]; }}\n"
                    )
                } else {
                    String::new()
                },
                gathered = if ties { "(gather || tied)" } else { "gather" },
            )
        } else {
            "        __syncthreads();".to_string()
        },
        totals_barrier = if clean {
            format!(
                "            // The block's word: no column can hold a NaN (a barrier it needs anyway).\n            \
                 if (shift == {top}) {name}_clean = __syncthreads_and(!active || {name}_clean); else __syncthreads();\n",
                top = key_bits - 8,
            )
        } else {
            "            __syncthreads();\n".to_string()
        },
        clean_check = if clean {
            format!(
                "            // Every NaN's key is in the first digit's lowest or highest bin, with those of\n            \
                 // removed values (the largest key), which `total` does not count.\n            \
                 if (shift == {top}) {name}_clean = !done && {lowest} == 0 && {highest} == n_bi - (int)total;\n",
                top = key_bits - 8,
                lowest = if packed { "(bins[lane] & 0xffff)" } else { "bins[lane]" },
                highest = if packed {
                    format!("(bins[{} * 32 + lane] >> 16)", BINS / 2 - 1)
                } else {
                    format!("bins[{} * 32 + lane]", BINS - 1)
                },
            )
        } else {
            String::new()
        },
    )
    .ok();
    s.push_str("#endif\n");
    writeln!(
        s,
        "        {name} = valid ? psg_from_key(prefix) : psg_nan();\n    }}"
    )
    .ok();
}

/// A pipelined tile's wait for a chunk's copies (see [`Unroll`]): `cp.async.wait_group` takes
/// its count as an immediate.
pub(crate) const WAIT_GROUPS: &str = r#"/* Waits until at most n of the thread's cp.async groups are in flight (at most 8 where n > 8). */
__device__ __forceinline__ void psg_wait_groups(int n) {
#if __CUDA_ARCH__ >= 800
    switch (n) {
    case 0: asm volatile("cp.async.wait_group 0;\n" ::: "memory"); break;
    case 1: asm volatile("cp.async.wait_group 1;\n" ::: "memory"); break;
    case 2: asm volatile("cp.async.wait_group 2;\n" ::: "memory"); break;
    case 3: asm volatile("cp.async.wait_group 3;\n" ::: "memory"); break;
    case 4: asm volatile("cp.async.wait_group 4;\n" ::: "memory"); break;
    case 5: asm volatile("cp.async.wait_group 5;\n" ::: "memory"); break;
    case 6: asm volatile("cp.async.wait_group 6;\n" ::: "memory"); break;
    case 7: asm volatile("cp.async.wait_group 7;\n" ::: "memory"); break;
    default: asm volatile("cp.async.wait_group 8;\n" ::: "memory"); break;
    }
#endif
}
"#;

/// The next tile's loads, issued in the first bit-sliced selection of a column loop (`fetch`, see
/// [`sliced_select`]) or in its quick form.
const FETCH_NEXT: &str = "        // The next tile's loads (the keys' registers are free).\n        if (cs == 0 && vec && PSG_AHEAD && t + gridDim.x < n_tiles) PSG_FETCH(t + gridDim.x, 0);\n";

/// The quick build's selection (see [`emit_select`]) of rank `k{v}` into `prefix{v}` (and
/// `valid{v}`), `v` = `suffix`: 8-bit digits, most significant first, each counted as the
/// digit selection counts them (the same bins and dummy rows, `packed`: 16-bit counts two a
/// word) and found by thread `lane` of warp 0, down to the last digit above `zero_low_bits`.
///
/// A quick build calls every helper (NVRTC inlines nothing at that level), so its time follows
/// the calls an element takes over all passes: the counts are `red.shared` instructions, and the
/// passes settle what they can of what a pass after them would compute. `clean` (the flag's
/// name): no NaN, from the first digit's lowest and highest bins (see the digit selection).
/// `next` (the selection's name): the keys at or below the value (those below its last digit's
/// bucket, `k - rem`, and the bucket's, all equal) and the least key above it (the next nonzero
/// digit of the last pass, else the least key above the last pass's bucket, which that pass
/// finds). Not a paired selection's counts (`Settled::CountLe`): a pass computes them.
fn quick_digit_select(
    suffix: &str,
    key_bits: u32,
    zero_low_bits: u32,
    packed: bool,
    key_code: &str,
    clean: Option<&str>,
    next: Option<&str>,
) -> String {
    let (dummy, clear, count) = if packed {
        (
            format!("{BINS} + 2 * w"),
            4,
            "asm volatile(\"red.shared.add.u32 [%0], %1;\" :: \"r\"(hist + ((d >> 1) << 7)), \"r\"(1u << ((d & 1) << 4)) : \"memory\");",
        )
    } else {
        (
            format!("{BINS} + w"),
            8,
            "asm volatile(\"red.shared.add.u32 [%0], %1;\" :: \"r\"(hist + (d << 7)), \"r\"(1u) : \"memory\");",
        )
    };
    let count_of = |d: &str| {
        if packed {
            format!("((bins[({d} >> 1) * 32 + lane] >> (({d} & 1) << 4)) & 0xffff)")
        } else {
            format!("bins[({d}) * 32 + lane]")
        }
    };
    // A key whose low bits the sign decides, from its top bits (see `zero_low_bits`).
    let fill = |key: &str| {
        if zero_low_bits > 0 {
            format!(
                "if (({key} >> {}) == 0) {key} |= (((psg_key)1) << {zero_low_bits}) - 1;",
                key_bits - 1
            )
        } else {
            String::new()
        }
    };
    let mut s = String::new();
    writeln!(
        s,
        r#"        const bool valid{suffix} = k{suffix} >= 0 && k{suffix} < total;
        psg_key prefix{suffix} = 0;
        {{
            const bool live = valid{suffix} && active;
            int rem = live ? (int)k{suffix} : 0;
            const unsigned int hist = (unsigned int)__cvta_generic_to_shared(bins + lane);
            const int dummy = {dummy};"#
    )
    .ok();
    if clean.is_some() {
        s.push_str("            bool no_nan = false;\n");
    }
    if next.is_some() {
        s.push_str(
            "            // This thread's least key above the last pass's bucket, that bucket's count\n            \
             // and next nonzero digit.\n            \
             psg_key least = ~(psg_key)0;\n            \
             int last_count = 0, next_digit = 256;\n            \
             if (w == 0) over[lane] = ~(psg_key)0;\n",
        );
    }
    write!(
        s,
        r#"            __syncthreads();
            #pragma unroll 1
            for (int shift = {top}; shift >= {low}; shift -= 8) {{
                for (int i = 0; i < {clear}; ++i) ((int4*)bins)[tid + i * 256] = make_int4(0, 0, 0, 0);
                __syncthreads();
"#,
        top = key_bits - 8,
        low = zero_low_bits,
    )
    .ok();
    if next.is_some() {
        // Shifts stop 8 bits short of the key's width at the last pass.
        writeln!(
            s,
            "                const bool last = shift == {zero_low_bits};\n                \
             const psg_key hi = last ? prefix{suffix} | ((((psg_key)1) << (shift + 8)) - 1) : ~(psg_key)0;"
        )
        .ok();
    }
    write!(
        s,
        r#"                if (live) {{
                    for (int b = w; b < n_bi; b += 8) {{
{key_code}                        const psg_key kd = (key ^ prefix{suffix}) >> shift;
                        const unsigned int d = kd < (psg_key)dummy ? (unsigned int)kd : (unsigned int)dummy;
                        {count}
{least}                    }}
                }}
                __syncthreads();
"#,
        least = if next.is_some() {
            "                        least = key > hi && key < least ? key : least;\n"
        } else {
            ""
        },
    )
    .ok();
    if clean.is_some() {
        writeln!(
            s,
            "                if (shift == {}) no_nan = live && {} == 0 && {} == n_bi - (int)total;",
            key_bits - 8,
            count_of("0"),
            count_of("255"),
        )
        .ok();
    }
    write!(
        s,
        r#"                if (w == 0 && live) {{
                    int digit = 0, c = 0;
                    for (; digit < {last_digit}; ++digit) {{
                        c = {digit_count};
                        if (rem < c) break;
                        rem -= c;
                    }}
                    pick[lane] = digit; pick[64 + lane] = rem;
"#,
        last_digit = BINS - 1,
        digit_count = count_of("digit"),
    )
    .ok();
    if next.is_some() {
        write!(
            s,
            r#"                    if (last) {{
                        c = {digit_count};
                        int nd = digit + 1;
                        while (nd < {bins} && {nd_count} == 0) ++nd;
                        pick[32 + lane] = c | (nd << 16);
                    }}
"#,
            digit_count = count_of("digit"),
            nd_count = count_of("nd"),
            bins = BINS,
        )
        .ok();
    }
    s.push_str("                }\n                __syncthreads();\n");
    writeln!(
        s,
        "                if (live) {{ prefix{suffix} |= ((psg_key)pick[lane]) << shift; rem = pick[64 + lane]; }}"
    )
    .ok();
    if next.is_some() {
        s.push_str(
            "                if (live && last) { last_count = pick[32 + lane] & 0xffff; next_digit = pick[32 + lane] >> 16; }\n",
        );
    }
    s.push_str("            }\n");
    if zero_low_bits > 0 {
        writeln!(
            s,
            "            if (live) {{ {} }}",
            fill(&format!("prefix{suffix}"))
        )
        .ok();
    }
    if next.is_some() {
        s.push_str("            atomicMin(&over[lane], least);\n");
    }
    s.push_str("            __syncthreads();\n");
    if let Some(name) = next {
        writeln!(
            s,
            r#"            if (live) {{
                // The next value: the last pass's next nonzero digit, else the least key above
                // that pass's bucket.
                psg_key above = over[lane];
                if (next_digit < {bins}) {{
                    above = (prefix{suffix} & ~((((psg_key)1) << {digit_top}) - 1)) | ((psg_key)next_digit << {zero_low_bits});{fill}
                }}
                {name}_le = (psg_acc)(k{suffix} - rem + last_count); {name}_above = above;
            }}
            {name}_next = __syncthreads_and(!active || valid{suffix});"#,
            bins = BINS,
            digit_top = zero_low_bits + 8,
            fill = if zero_low_bits > 0 {
                format!("\n                    {}", fill("above"))
            } else {
                String::new()
            },
        )
        .ok();
    }
    if let Some(flag) = clean {
        writeln!(
            s,
            "            {flag} = __syncthreads_and(!active || no_nan);"
        )
        .ok();
    }
    s.push_str("        }\n");
    s
}

/// Statements at `indent` that bind, in a lane selecting in column `c`, the per-column values
/// (lets and reductions) that `exprs` read, named as `other_e` prints them, from lane `c`,
/// where every warp holds them (`e` prints them as the thread's own).
fn column_shuffles<'a>(
    indent: &str,
    exprs: impl IntoIterator<Item = &'a Scalar>,
    e: &dyn Fn(&Scalar) -> String,
    other_e: &dyn Fn(&Scalar) -> String,
) -> String {
    let mut values: Vec<&Scalar> = Vec::new();
    let mut todo: Vec<&Scalar> = exprs.into_iter().collect();
    while let Some(x) = todo.pop() {
        match x {
            Scalar::Local(_) | Scalar::Temp(_) if !values.contains(&x) => values.push(x),
            _ => todo.extend(x.children()),
        }
    }
    values
        .iter()
        .map(|x| {
            format!(
                "{indent}const auto {} = __shfl_sync(0xffffffffu, {}, c);\n",
                other_e(x),
                e(x)
            )
        })
        .collect()
}

/// A selection's body in the kernel for small B ([`SMALL_MAX_B`]), after `k`: every key of the
/// block's columns to a list of its column's (column c's at `cand[c * 65 + b]`, where the digit
/// counts would be), then lanes `8g .. 8g + 7` of warp `w` sort the list of column `4w + g`
/// ([`SMALL_SORTS`]), write it back sorted and read off it the key at position `rem` (the
/// selection; removed values' largest key sorts after every kept one), the keys at or below it
/// and the least above it (the next value, [`Settled::AtOrBelow`], [`Settled::Above`]), and
/// whether its least and greatest kept keys lie within the infinities' (no NaN,
/// [`Settled::NoNan`]). With `paired`, the key at the second rank too (`k2`, `prefix2`), and
/// one NaN check for both: the same keys (a trimmed mean's two bounds took 0.58-0.66 of the
/// time of a sort each at B = 32 and 64, H200, same run). With `merge` (the MAD's distances,
/// [`MergeCode`]), blocks whose lists the selection before left sorted merge the distances
/// along them instead ([`merged_select`]); the others gather and sort.
fn small_select(
    name: &str,
    clean: bool,
    next: bool,
    key_code: &str,
    paired: Option<&PairedCode>,
    merge: Option<&MergeCode>,
) -> String {
    // Whether either selection needs the NaN check: the same keys answer for both.
    let clean2 = paired.is_some_and(|p| p.clean);
    let check = clean || clean2;
    let mut s = String::new();
    s.push_str(
        r#"        const bool valid = k >= 0 && k < total;
        const int rem = valid ? (int)k : 0;
        const bool gather = valid && active;
"#,
    );
    if let Some(p) = paired {
        // The paired selection's rank, to pick's first row (where the next value's count goes,
        // which neither selection of a pair finds).
        writeln!(
            s,
            "        const long long k2 = psg_index({});\n        const bool valid2 = k2 >= 0 && k2 < total;",
            p.rank
        )
        .ok();
    }
    // What lane q = 0 of a column's lanes stores once `v` (the selected key), `le` and `above`
    // (the next value) and, for the NaN check, `lo` and `hi` (the least and greatest kept keys)
    // are known.
    let mut store = String::from("found[c] = v;");
    if paired.is_some() {
        store.push_str(" found[32 + c] = list[r2];");
    }
    if next {
        store.push_str(" pick[c] = le; over[32 + c] = above;");
    }
    if check {
        store.push_str(" totals[c] = n == 0 || (lo >= kmin && hi <= kmax);");
    }
    // The keys gathered and sorted.
    let mut t = String::new();
    t.push_str(
        r#"        __syncthreads();
        for (int b = w; b < n_bi; b += 8) {
"#,
    );
    t.push_str(key_code);
    let rank2 = if paired.is_some() {
        " pick[lane] = valid2 ? (int)k2 : 0;"
    } else {
        ""
    };
    writeln!(
        t,
        r#"            cand[lane * 65 + b] = key;
        }}
        if (w == 0) {{ pick[32 + lane] = (int)total; pick[64 + lane] = rem;{rank2} }}
        __syncthreads();
        {{
            // Lanes 8g .. 8g + 7 sort column 4w + g's list (position qR + i in a[i] of lane
            // 8g + q), write it back sorted, and read it.
            const int q = lane & 7, c = 4 * w + (lane >> 3);
            const int r = pick[64 + c], n = pick[32 + c];
            psg_key* const list = cand + c * 65;"#,
    )
    .ok();
    if paired.is_some() {
        t.push_str("            const int r2 = pick[c];\n");
    }
    if check {
        t.push_str(NAN_KEY_BOUNDS);
    }
    // Up to 32 keys, 4 a lane; up to 64, 8 a lane.
    for (cond, regs) in [("if (n_bi <= 32) {", 4), ("} else {", 8)] {
        writeln!(
            t,
            r#"            {cond}
                psg_key a[{regs}];
                #pragma unroll
                for (int i = 0; i < {regs}; ++i) a[i] = q * {regs} + i < n_bi ? list[q * {regs} + i] : ~(psg_key)0;
                psg_group_sort<{regs}>(a, q);"#
        )
        .ok();
        t.push_str(&sorted_tail(regs, next, check, &store));
    }
    t.push_str("            }\n        }\n");
    match merge {
        Some(m) => {
            s.push_str(&merged_select(m, next, check, &store));
            s.push_str("        } else {\n");
            for line in t.lines() {
                writeln!(s, "    {line}").ok();
            }
            s.push_str("        }\n");
        }
        None => s.push_str(&t),
    }
    if let Some(p) = paired {
        // Both keys, read after one barrier; the barrier of the vote (or its own) keeps them
        // until every thread has read them.
        s.push_str("        __syncthreads();\n        const psg_key prefix = found[lane], prefix2 = found[32 + lane];\n");
        if check {
            writeln!(
                s,
                "        // The block's word: no column holds a NaN.\n        const bool no_nan = __syncthreads_and({TOTALS_VOTE});"
            )
            .ok();
            if clean {
                writeln!(s, "        {name}_clean = no_nan;").ok();
            }
            if clean2 {
                writeln!(s, "        {}_clean = no_nan;", p.name).ok();
            }
        } else {
            s.push_str("        __syncthreads();\n");
        }
        return s;
    }
    let gathered = Gathered {
        taken: "gather",
        vote: "gather",
        above: "over[32 + lane]",
    };
    select_results(&mut s, name, clean, next, gathered, TOTALS_VOTE);
    s
}

/// The keys between which a column's kept keys lie where it holds no NaN, for the NaN check of
/// [`small_select`] and [`merged_select`].
const NAN_KEY_BOUNDS: &str = "            // A NaN's key lies below -inf's or above +inf's.
            const psg_key kmin = psg_to_key(-psg_inf()), kmax = psg_to_key(psg_inf());
";

/// The end of a selection of [`small_select`] once lanes `8g .. 8g + 7` hold column `c`'s list
/// sorted in `a` (`regs` keys a lane, position `q regs + i` in `a[i]`, past `n_bi` the largest
/// key): the list written back, the key at rank `r` read off it, and with `next` the keys at or
/// below it (`le`) and the least above it, with `check` its least and greatest kept keys (`n`
/// of them), for what lane `q = 0` stores (`store`).
fn sorted_tail(regs: usize, next: bool, check: bool, store: &str) -> String {
    let mut t = String::new();
    writeln!(
        t,
        r#"                #pragma unroll
                for (int i = 0; i < {regs}; ++i) list[q * {regs} + i] = a[i];
                __syncwarp();
                const psg_key v = list[r];"#
    )
    .ok();
    if next {
        // Padding (the largest key) sorts after the n_bi keys.
        writeln!(
            t,
            r#"                int le = 0;
                #pragma unroll
                for (int i = 0; i < {regs}; ++i) le += q * {regs} + i < n_bi && a[i] <= v ? 1 : 0;
                le += __shfl_xor_sync(0xffffffffu, le, 1);
                le += __shfl_xor_sync(0xffffffffu, le, 2);
                le += __shfl_xor_sync(0xffffffffu, le, 4);
                const psg_key above = le < n_bi ? list[le] : ~(psg_key)0;"#
        )
        .ok();
    }
    if check {
        t.push_str("                const psg_key lo = list[0], hi = list[n > 0 ? n - 1 : 0];\n");
    }
    writeln!(t, "                if (q == 0) {{ {store} }}").ok();
    t
}

/// The branch of [`small_select`] that finds a selection on distances `|x - m|` from the sorted
/// lists of the column's own keys that the selection before left ([`MergeCode`]), up to the
/// `} else {` before the gathering and sorting that it replaces; `store` is what lane q = 0 of
/// a column's lanes stores (as the sort's). Where `m` is finite and no value is NaN (the
/// selection before's NaN guard, within `intact`), `fl(x - m)` is monotone in `x`, so along the
/// list the distances fall up to `m` and rise from there: a bitonic sequence (the padding, the
/// largest key, at its end), which one merge sorts (`psg_group_merge`: 6 steps for 64 keys
/// where the sort takes 21). Each lane of a column's 8 computes the distances of its 4 or 8
/// places in the list (a column's own key is its value), the merge sorts them in registers, and
/// they are written back to the list, off which the key at the rank, `le` and `above` (the next
/// value) and the NaN check's least and greatest key are read as after the sort
/// ([`sorted_tail`]).
fn merged_select(m: &MergeCode, next: bool, check: bool, store: &str) -> String {
    let MergeCode {
        intact,
        shuffles,
        key,
        m: m_own,
    } = m;
    let mut s = String::new();
    writeln!(
        s,
        r#"        // The column's own keys, sorted by the selection before, are still in its lists
        // where ({intact}):
        // the distances are read off them (see `merged_select`), unless some column's
        // {m_own} is not finite (+inf - +inf is NaN)."#
    )
    .ok();
    writeln!(
        s,
        r#"        const bool merged = ({intact}) && __syncthreads_and(!active || psg_isfinite({m_own}));
        if (merged) {{
            const int q = lane & 7, c = 4 * w + (lane >> 3);
            // Column c's rank and count (every value kept).
            const int r = __shfl_sync(0xffffffffu, rem, c), n = n_bi;
            psg_key* const list = cand + c * 65;
{shuffles}"#
    )
    .ok();
    if check {
        s.push_str(NAN_KEY_BOUNDS);
    }
    for (cond, regs) in [("if (n_bi <= 32) {", 4), ("} else {", 8)] {
        writeln!(
            s,
            r#"            {cond}
                // The distances of places {regs}q .. {regs}q + {}, past n the largest key, merged.
                psg_key a[{regs}];
                #pragma unroll
                for (int i = 0; i < {regs}; ++i) {{
                    const psg_acc x = psg_from_key(list[q * {regs} + i]);
                    a[i] = q * {regs} + i < n ? {key} : ~(psg_key)0;
                }}
                psg_group_merge<{regs}>(a, q);"#,
            regs - 1,
        )
        .ok();
        s.push_str(&sorted_tail(regs, next, check, store));
    }
    s.push_str("            }\n");
    s
}

/// A thread's vote on the NaN guard where its column's selecting lanes left it in `totals`.
const TOTALS_VOTE: &str = "!active || totals[lane] != 0";

/// A thread's vote on the NaN guard where it checked its own samples as it transposed them
/// (a column's own keys, see `sliced_select`).
const OWN_VOTE: &str = "!nonfinite";

/// Where a selection that leaves its results in shared memory ([`select_results`]) has the next
/// value of a column: the condition under which a thread takes it, the condition its column
/// votes with (within `!active || ...`), and where the least key above the selected one is.
struct Gathered {
    taken: &'static str,
    vote: &'static str,
    above: &'static str,
}

/// The end of a selection that leaves its results in shared memory (`small_select`,
/// `sliced_select`): after a barrier every thread reads its column's key (`found[lane]`), the
/// block votes on the NaN guard (`totals[lane]`) and, where the column has it (see
/// [`Gathered`]), takes the next value's count (`pick[lane]`) and least key above.
fn select_results(
    s: &mut String,
    name: &str,
    clean: bool,
    next: bool,
    at: Gathered,
    clean_vote: &str,
) {
    let Gathered { taken, vote, above } = at;
    s.push_str("        __syncthreads();\n        const psg_key prefix = found[lane];\n");
    if clean {
        writeln!(
            s,
            "        // The block's word: no column holds a NaN.\n        {name}_clean = __syncthreads_and({clean_vote});"
        )
        .ok();
    }
    if next {
        writeln!(
            s,
            "        // Kept values at or below the selected one, and the least above it.\n        \
             if ({taken}) {{ {name}_le = (psg_acc)pick[lane]; {name}_above = {above}; }}\n        \
             {name}_next = __syncthreads_and(!active || {vote});"
        )
        .ok();
    } else {
        s.push_str("        __syncthreads();\n");
    }
}

/// A 32 x 32 bit transpose in registers, for [`sliced_select`]: afterwards bit `m` of `a[i]` is
/// bit `i` of the old `a[m]`. Five steps of swapping blocks: 16- and 8-bit ones by byte
/// permutes (a word of each pair in one instruction), 4-, 2- and 1-bit ones by masks: a shift
/// and a `lop3` selecting by the mask (NVRTC compiled the C form `(x & lo) | (y' & ~lo)` to two
/// `lop3`s and the shift). Outputs nothing reads (the low planes of a bf16 column's own keys)
/// are dropped by NVRTC.
const TRANSPOSE: &str = r#"/* Bits of a where m is set, of b where it is clear: one lop3. */
__device__ __forceinline__ unsigned int psg_pick_bits(unsigned int m, unsigned int a, unsigned int b) {
    unsigned int r;
    asm("lop3.b32 %0, %1, %2, %3, 0xe4;" : "=r"(r) : "r"(a), "r"(b), "r"(m));
    return r;
}
template <int S>
__device__ __forceinline__ void psg_swap_blocks(unsigned int (&a)[32], unsigned int lo) {
    #pragma unroll
    for (int r = 0; r < 32; ++r) {
        if ((r & S) == 0) {
            const unsigned int x = a[r], y = a[r + S];
            a[r] = psg_pick_bits(lo, x, y << S);
            a[r + S] = psg_pick_bits(lo, x >> S, y);
        }
    }
}
__device__ __forceinline__ void psg_transpose32(unsigned int (&a)[32]) {
    #pragma unroll
    for (int r = 0; r < 16; ++r) {
        const unsigned int x = a[r], y = a[r + 16];
        a[r] = __byte_perm(x, y, 0x5410);
        a[r + 16] = __byte_perm(x, y, 0x7632);
    }
    #pragma unroll
    for (int r = 0; r < 32; ++r) {
        if ((r & 8) == 0) {
            const unsigned int x = a[r], y = a[r + 8];
            a[r] = __byte_perm(x, y, 0x6240);
            a[r + 8] = __byte_perm(x, y, 0x7351);
        }
    }
    psg_swap_blocks<4>(a, 0x0f0f0f0fu);
    psg_swap_blocks<2>(a, 0x33333333u);
    psg_swap_blocks<1>(a, 0x55555555u);
}
"#;

/// Shared memory of a bit-sliced selection's planes ([`sliced_select`]): 32 planes of 8 parts
/// of 32 columns, a word each.
const PLANE_BYTES: usize = 32 * WARPS * 32 * 4;

/// A split selection's column whose keys left after the top 16 bits differ, and hold no rank
/// the cheap ways find, gathers each bit's plane words from the halves of its keys left where
/// it has at most this many (see [`split_low`]), else from every half of its parts.
const SPLIT_FEW: u32 = 8;

/// Where a lane of a split selection's warp holds more than this many keys left after the top 16
/// bits, in a column that holds more than the cheap ways settle ("hard", see [`split_low`]),
/// the hard columns' lanes check whether those keys tie by folding every word of their parts
/// (the halves kept by a mask of the keys left: 16 words a part, about seven instructions a
/// word) instead of a key at a time (about 17 instructions a key, for as many keys as the
/// warp's fullest lane holds). Columns of one repeated value (many zeros, a few distinct
/// values) leave dozens of keys a lane: on g[256, 4M] f32 with 90% zeros, the key-at-a-time
/// loops executed half the median's instructions (ncu, H100).
const SPLIT_FOLD: u32 = 16;

/// The share of a column's keys (`num / den`) above which a digit pass after the first looks for
/// a bucket of one repeated key, where the keys have more than two digits (f32, f64 and computed
/// keys; a bf16 column's own are fixed after two): every pass after the second looks, and the
/// second where some column of the block has more than this share of its keys in the first
/// digit's bucket. Each thread keeps the least and the greatest key of the bucket it counts
/// (three instructions a key, and two atomics a pass), and where they are equal the column is
/// done: its key is theirs, and with the next value, the pass that gathers the other columns'
/// buckets (or one of its own) finds the least key above it. Gradients full of zeros fill a
/// bucket with one key, which the passes counted down to its last bit: H100, same run, g[1024,
/// 1M] with 90% zeros, the f32 median took 0.76 of the time, `kth` 0.58, the trimmed mean 0.57,
/// the MAD mean 0.77 (bf16 0.86), the clipped median 0.83 (bf16 0.80); normal data 1.00-1.02.
/// Half instead of 3/4 had the MAD's distances look (57% of them in their first bucket, which
/// spans [0.5, 2)): 1.03-1.04 on normal data; every pass after the first, 1.02-1.05.
const TIED_SHARE: (u32, u32) = (3, 4);

/// How often (in bits) a bit-sliced selection checks whether every column of the warp is down
/// to one key (the early stop of [`sliced_select`]). Every bit took 1.02-1.07 of the time
/// (H100, same run, with the split keys: f32 and bf16 median, quantile, `kth`, MAD and trimmed
/// means, clipped median at g[256, 4M] and g[128, 8M]; bf16 columns' own keys 1.00); every 4
/// bits: see [`sliced_select`].
const EARLY_STOP: u32 = 2;

/// The bit after which a bit-sliced selection on computed keys of 16-bit input (the bf16 MAD's
/// distances) checks once whether every column's keys left tie, and if so stops (the tie check
/// of [`sliced_select`]). Such keys tie often: a distance `|x - median|` of bf16 values has few
/// significant bits, and equal values have equal distances, so the early stop (one key left)
/// came in 7% of warps (ncu, H200, g[256, 4M]) and the rest counted all 32 bits. With the
/// check, 90% of warps stop at it and 3% count on (ncu, same kernel): in a simulation of the
/// benchmark's data every column's keys left tied after bit 14, and in 11% of warps after 16.
/// Checked on the planes (both ways of every remaining bit, as the early stop reads them) it
/// cost nearly what it saved (0.996 and 1.007 of the time at g[256, 4M] and g[128, 8M], H200,
/// same run); with the keys computed again as below, 0.93 and 0.92 (H200), 0.94 and 0.92
/// (H100). Resolving any keys left that way (a lane's at most two, the rank among the
/// column's by their least above the last) at bit 16 or 14, for f32 distances too, took
/// 1.02-1.05 of the time.
const TIE_AT: u32 = 14;

/// The bit after which a bit-sliced selection on unsplit 32-bit keys checks, once, whether the
/// keys left that tie are +0 (a value equal to the median, for the MAD's distances): only where
/// some column of the warp has more than one key left and a selected key so far of +0 or a
/// subnormal (a clear exponent), so elsewhere it costs a vote. Where every such column's keys
/// left have no bit set below, the warp stops counting as at an early stop (2. in
/// [`sliced_select`]), which a column of mostly one value never reaches: a gradient's zeros
/// made the MAD's distances count all 32 bits. On 90% zeros the MAD mean took 0.94-0.96 of the
/// time in f32 and 0.91-0.95 in bf16 at g[256, 4M] and g[128, 8M], on normal data, heavy tails
/// and ties 0.99-1.00 (H100, same run). Its walk reads whether a key left has a bit set and,
/// for a lone key, which, in one go: a second walk for the lone keys' bits cost what the check
/// saved (1.01-1.07).
const ZERO_AT: u32 = 22;

/// `text`'s lines, each without its first `by` spaces where it starts with them (code written
/// for a deeper block).
fn outdented(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|l| format!("{}\n", l.strip_prefix(pad.as_str()).unwrap_or(l)))
        .collect()
}

/// A selection's body on 32-bit keys in the kernel for B up to [`PACKED_BINS_MAX_B`], after `k`:
/// an exact radix select one bit at a time over bit planes, instead of 8-bit digit passes.
///
/// 1. Thread `(lane, w)` computes the keys of column `lane` at samples `w + 8m` (`m < 32`, so B
///    is at most 256), transposes them in registers ([`TRANSPOSE`]) into 32 bit planes (bit
///    `m` of plane `i` is bit `i` of sample `w + 8m`'s key: "part" `w` of the column) and
///    stores them: plane `i` of part `p` of column `c` at `planes[i * 256 + c * 8 + (p ^ (c /
///    4 % 8))]` (the swizzle keeps both the stores, a column a lane, and the reads below off
///    each other's banks). The plan's first selection then issues the next tile's loads
///    (`fetch`): holding them through the keys and the transpose made NVRTC spill. Where
///    every sample of the part exists (B = 256 here, 128 in the kernel for middling B) the
///    keys are read with no check a sample (a compare and an add each, and the zeroing, which
///    the compiler could not drop: the f32 MAD mean took 0.95 of the time with them gone).
///    A column's own keys (`raw`: f32, bf16 as loaded, or a transformed tile's f32) are not
///    computed a sample at a time: the tile's bits are transposed (a bf16 value's 16, whose
///    transpose is half as long), and the planes mapped to the keys' as `psg_to_key` maps a
///    value (a key's bit is the value's flipped by the sign, its top bit the sign's
///    complement), one operation a plane instead of three a sample. Same run, `psg-bench`,
///    H200, bf16 at g[256, 4M]: median 0.98 of the time, `kth` 0.88, trimmed mean 0.85; at
///    g[128, 8M] `kth` 0.80; f32 0.97-1.00 (0.92 for the trimmed mean at g[128, 8M]).
/// 2. Lanes `4g .. 4g + 3` of warps 0-3 take column `8w + g`, two parts a lane. From the top
///    bit down, the keys still matching the selected bits (a mask a part) that have a 0 in
///    this bit are counted (`popc`, then two shuffles): where that count is at most the rank,
///    the selected bit is 1, the rank drops by the count and the mask keeps the keys with a 1;
///    else the bit is 0 and the mask keeps the keys with a 0. The selected key's count of
///    equal keys gives `le`. The NaN check reads the top 8 bits off the same planes: no key
///    whose top 8 bits are clear, and as many whose top 8 bits are set as there are removed
///    values (as the digit passes check; see `Settled`). A column's own keys (bf16's, and
///    f32's where the selection is its plan's only one: `own_check`) are checked instead as
///    they are transposed, every warp its samples: no value whose exponent's top 7 bits are all
///    set (the same keys), a few logic ops and the block's vote at the barrier after the loop.
///    A lane's two plane words as one 8-byte load (an aligned pair, the swizzle's low bit
///    ordering them) took 1.03 of the time for the bf16 median at g[256, 4M] and 1.05 for the
///    f32 quantile at g[128, 8M] (H100, same run), one instruction a bit fewer.
///    **Early stop**: every [`EARLY_STOP`] bits from bit 24 down (below the NaN check's bits),
///    a warp whose columns are each down to at most one key matching the selected bits (a
///    count `left` kept beside the rank) stops counting, and reads that key's remaining bits
///    off its part's planes, one independent load and test a bit instead of a chain of counts
///    and shuffles (the results are those of the full loop, bit for bit, also for a rank past
///    the keys). With distinct values that comes some bits into the significand (where the
///    selected key parts from its neighbours); where the rank's key ties, a warp holding that
///    column never stops early.
///    Same run, `psg-bench`, H200, g[256, 4M] (with the unchecked loads of step 1 where every
///    sample exists): f32 median 0.92 of the time, quantile 0.95, `kth` 0.94, MAD mean 0.90,
///    trimmed mean 0.97, clipped median 0.93; every 4 bits instead of 2 (another same run,
///    against its own baseline): 0.96, 0.98, 0.97, 0.89, 0.96, 0.93. Not for a bf16 column's
///    own keys (16 steps): the bf16 median took 1.03-1.05 of the time with it; the bf16
///    trimmed mean's paired bounds never stopped on normal data (ncu, H100) and took 0.95 of
///    the time without it (H100, same run, g[256, 4M]). A column's count summed with
///    `__reduce_add_sync` over its four lanes (one `redux` instead of two shuffles, sm_80 and
///    later) took 2.2-3.3 times as long (same run, H200, g[256, 4M]).
///    Computed keys (the MAD's distances) take a lone key's remaining bits from the key
///    computed again from the tile instead of the planes (`OtherKey`, as the tie check
///    does): on normal data the f32 MAD mean took 0.975 and 0.969 of the time at g[256, 4M]
///    and g[128, 8M], bf16 0.989 and 0.983; 90% zeros and ties 0.995-1.008 (H100, same run;
///    after a late stop the walk is short). With the column's address from `tile` rather
///    than from the lane's own `tc`, NVRTC spilled a prefetched vector in the f32 kernel for
///    B up to 256.
///    **Tie check**: computed keys of 16-bit input (`ties`, not split, no search; `other`)
///    check once, after bit [`TIE_AT`], whether every column's keys left tie: each lane with at
///    most two keys left computes them again from the tile (`OtherKey`: column `c`'s per-column
///    values by a shuffle from lane `c`, its elements from `tcc`), the column's least and
///    greatest are compared, and where the warp's columns all tie (or have at most one key, or
///    none) the remaining bits are the tied key's, as the loop would have found them.
///    **Zero check**: unsplit 32-bit keys (the MAD's distances, f16's own keys) check once,
///    after bit [`ZERO_AT`], where some column of the warp has more keys left than one and a
///    prefix of +0 or a subnormal: one walk of the remaining planes ORs each lane's keys left
///    (`some`) and sets the bits a key left has (`rest`, a lone key's bits), and where every
///    column has at most one key left, or keys left with no bit set below and the rank among
///    them, the count ends as after an early stop.
/// 3. The next value (`above`, the least key above the selected one), where the plan needs it:
///    warps 4-7 select rank `k + 1` beside warps 0-3 ("twin"; they would wait at the barrier
///    otherwise). Where the two tie, the least key above is among the keys that left the second
///    selection's masks upwards, found from the top bit down, a ballot a bit; a warp runs that
///    search only where one of its columns ties. Keys of 16-bit input (`ties`: a bf16 or f16
///    column's own, or a function of them such as the MAD's distances) tie often (8 or 11 bits
///    of significand), so there warps 0-3 run that search after their selection instead.
///    Where the plan reads the next value only where it is not a tie ([`tie_unread`]: the
///    median's and quantile's `select(count_le > k + 1, value, above)`), rank `k + 1` stands
///    for it, ties or not: the twin runs for every key and nothing searches (same run,
///    `psg-bench`, H200, g[256, 4M]: bf16 median 0.94 of the time, quantile 0.93, MAD mean
///    0.93, clipped median 0.94; at g[128, 8M] the bf16 median 0.88 and the f32 MAD mean 0.92;
///    f32 at g[256, 4M] 0.98-1.00).
///
/// 4. A paired selection (`pair`: a second selection of the same wave on the same keys, neither
///    needing the next value, as a trimmed mean's two bounds) is made on the same planes by
///    warps 4-7, its rank in `pick`'s first row, its key in `found[32 + c]`: one transpose
///    instead of two, and the two selections side by side (the trimmed mean at g[256, 4M] took
///    0.61 of the time in f32 and 0.77 in bf16, same run, H200). Where the plan counts the
///    column's values at or below or below either one ([`Settled::CountLe`]), its group also
///    counts the keys below the selected one and equal to it, into its rank's row of `pick`.
///
/// 5. **Split keys** (`split`, from [`SelectFlags::split`]: 32-bit keys of f32 input, its own
///    or computed, and a transformed tile's, where the selection is the plan's only one, a
///    paired one counting as one, or its first on a column's own keys; not where a tie
///    searches for the least key above, which walks every plane, nor on keys of 16-bit input,
///    whose low bits tie: the bf16 MAD mean took 1.6 times as long). Only the keys' top 16 bits
///    are transposed, into planes 16-31 (a transpose of 16-bit values is half as long, as for
///    a bf16 column's own keys), and their low 16 bits are stored as they are, two a word, in
///    planes 0-15, after every load (stored among the loads, with an earlier resolution: 1.015
///    of the time). The counting stops at bit 16, early as in 2, and [`split_low`] finds the
///    low 16 bits from the halves, the same key as the full loop.
///    Same run, `psg-bench`, H100, against the unsplit kernels: at g[256, 4M] the f32 median
///    took 0.90 of the time, `median_low` 0.89, quantile 0.96, `kth` 0.94, trimmed mean 0.94,
///    clipped median 0.94 (bf16 input, whose products are f32 keys: 0.89); at g[128, 8M]
///    0.93, 0.93, 0.98, 0.97, 0.99, 0.95 (0.90). The top 16 bits alone (a wrong result, as a
///    bound) took 0.75 and 0.83 with the stores: what is left is the low bits' resolution, at
///    the end of each warp's chain of steps and so on the block's critical path. Resolving
///    every column the way `split_low`'s "hard" case does took 0.90-1.05 of the time; reading
///    every half of the parts for each low bit, 1.15-1.60. Of a plan's two selections, only the
///    first on a column's own keys (the MAD's median): so the f32 MAD mean took 0.93 of the
///    time at g[256, 4M] and 0.96 at g[128, 8M]; with its distances split too, 0.98 and 1.02.
///    NVRTC's quick build of a split source took up to 1.7 times as long (0.61 s
///    for the f32 MAD mean on an H100 host); the quick build (`PSG_QUICK`) compiles neither
///    form, but the digit selection of `quick_digit_select`.
///
/// In the kernel for B up to [`MID_MAX_B`] (`parts_log2` = 2) a column has four parts: warps
/// 0-3 transpose, lanes of two select (warps 0-1, and 2-3 for rank `k + 1` or the paired
/// selection).
///
/// A bf16 column's own keys (`low` = 16) have 16 bits that the sign decides: only the top 16
/// planes are stored and searched. Where every selection of the plan is on such keys
/// ([`half_planes`]), the scratch holds only those (plane 16 first): 15 KiB less shared memory
/// a block, which the multiprocessor keeps as L1 cache. With three blocks a multiprocessor
/// (see [`Blocks`]) the bf16 median took 0.90 of the time of two blocks with whole planes,
/// `kth` 0.85 (H100, same run, g[256, 4M]); whole planes at three blocks, 1.02 and 0.98.
///
/// Against the 8-bit digit passes (H200, g[256, 4M], hand-edited kernels, results bit for bit
/// the same): the f32 median 0.86 of the time, bf16 0.57. A part a lane (8 lanes a column, every warp busy) took 0.91 and 0.61: a bit's count
/// costs a third shuffle; four parts a lane 1.21 and 0.74 (fewer threads for the same chain of
/// dependent steps); the next value found in the same pass as the selection 1.10 and 0.70; two
/// bits a step (three counts packed in a word, half the steps) 1.13-1.23 of the one-bit
/// kernel's time. The twin selection against the search after the selection (same run,
/// `psg-bench`, H200): the f32 median 0.92 of the time at g[256, 4M] and 0.86 at g[128, 8M], the
/// MAD mean 0.94, the clipped median (its keys are f32, bf16 input too) 0.95 and 0.91; for bf16
/// input's own keys it took 1.04-1.15 and for the bf16 MAD's distances 1.03-1.07 (ties), hence
/// not there.
#[allow(clippy::too_many_arguments)]
fn sliced_select(
    name: &str,
    flags: SelectFlags,
    key_code: &str,
    low: u32,
    ties: bool,
    raw: Option<u32>,
    own_check: bool,
    pair: Option<&PairedCode>,
    other: Option<&OtherKey>,
) -> String {
    let SelectFlags {
        clean,
        next,
        fetch,
        parts_log2,
        tie_unread,
        split,
        half_planes,
        ..
    } = flags;
    // P parts of 32 samples a column, L = P / 2 lanes a column, two parts a lane.
    let parts = 1usize << parts_log2;
    let lanes = parts / 2;
    let columns = 32 / lanes;
    // A lane's count plus its column's other lanes', and the column's lanes in a ballot.
    let sum = |v: &str| across_lanes(v, "+", "            ", parts_log2);
    let group = format!(">> (lane & {})) & {}u", 32 - lanes, (1u32 << lanes) - 1);
    let fetch = if fetch { FETCH_NEXT } else { "" };
    // With the next value, a second group of L warps selects rank k + 1 beside the first
    // ("twin"), but for keys that tie often (`ties`: of 16-bit input): there the first group
    // finds the least key above its own after its selection. Where the plan does not read the
    // next value of a tie (`tie_unread`), rank k + 1 stands for it, ties or not, and nothing
    // searches.
    let twin = next && (!ties || tie_unread);
    // Whether some group searches for the least key above (and tracks the keys that leave its
    // masks upwards).
    let search = next && !(twin && tie_unread);
    // A paired selection: the second group selects it.
    let clean2 = pair.is_some_and(|p| p.clean);
    // Where `own_check` (a column's own keys, all B kept; see `emit_select`), the values
    // are checked for NaN as they are transposed: none whose exponent's top 7 bits are all set
    // (the keys' top 8 bits all set or all clear), a few logic ops on the transposed registers
    // and the block's vote, instead of four a bit for the top 8 bits in every selecting lane
    // and the counts, shuffles and ballot after the loop (`guarded`, which also counts a
    // filtered column's removed values).
    let own_guard = own_check && (clean || clean2);
    let guarded = (clean || clean2) && !own_guard;
    let groups = if twin || pair.is_some() { 2 } else { 1 };
    let selecting = if groups * lanes < WARPS {
        format!("if (w < {}) ", groups * lanes)
    } else {
        String::new()
    };
    let raw_bits = if raw == Some(16) {
        "(psg_key)tc[(b) << 5]"
    } else {
        "__float_as_uint(tc[(b) << 5])"
    };
    // 32-bit keys are split (5. above): their top 16 bits go to planes, their low 16 to the
    // planes' lower half as they are, two a word.
    let split = split && low == 0 && !search && !ties;
    // The lowest plane the counting reads.
    let floor = if split { 16 } else { low };
    let full = 32 * parts;
    let load = match raw {
        Some(_) => format!("                    if (b < n_bi) pl[m] = {raw_bits};\n"),
        None => format!(
            "                    if (b < n_bi) {{\n{}                        pl[m] = key;\n                    }}\n",
            key_code
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        ),
    };
    let load_full = match raw {
        Some(_) => format!("                    pl[m] = {raw_bits};\n"),
        None => format!("{key_code}                    pl[m] = key;\n"),
    };
    let dst = "            psg_key* const dst = planes + (lane << 3) + (w ^ ((lane >> 2) & 7));\n";
    // The planes of a column's own keys from the values' `bits` top bits (the transpose's first
    // `bits - 1` words and its sign word).
    let value_planes = |bits: u32, dst: &str| {
        let check = if own_guard {
            format!(
                "            // The NaN check: a value whose exponent's top 7 bits are all set (inf, NaN or\n            // the top binade) makes the block count NaNs.\n            nonfinite = active && ({} & vm) != 0u;\n",
                (bits - 8..bits - 1)
                    .map(|i| format!("pl[{i}]"))
                    .collect::<Vec<_>>()
                    .join(" & ")
            )
        } else {
            String::new()
        };
        format!(
            r#"            // Planes of the values' bits: a key's bit is the value's flipped by the sign, and
            // its top bit the sign's complement (psg_to_key), a plane at a time; the planes of
            // samples past B stay clear, as their keys' would.
            const int nv = min(32, max(0, (n_bi - w + {}) >> {parts_log2}));
            const psg_key vm = nv >= 32 ? ~0u : ((1u << nv) - 1u);
            const psg_key sg = pl[{}];
{check}{dst}            #pragma unroll
            for (int i = 0; i < {}; ++i) dst[{}] = (pl[i] ^ sg) & vm;
            dst[31 << 8] = ~sg & vm;
"#,
            parts - 1,
            bits - 1,
            bits - 1,
            if bits == 32 {
                "i << 8".to_string()
            } else {
                format!("(i + {}) << 8", 32 - bits)
            }
        )
    };
    // After the keys' transpose, its words to the planes.
    let store = if split {
        // The low halves after every load (stored among the loads: 1.015 of the time), then
        // the top halves' transpose.
        let top = match raw {
            Some(_) => value_planes(16, ""),
            None => "            #pragma unroll\n            for (int i = 0; i < 16; ++i) dst[(i + 16) << 8] = pl[i];\n".to_string(),
        };
        format!(
            r#"{dst}            #pragma unroll
            for (int m = 0; m < 32; m += 2) dst[(m >> 1) << 8] = __byte_perm(pl[m], pl[m + 1], 0x5410);
            #pragma unroll
            for (int m = 0; m < 32; ++m) pl[m] >>= 16;
            psg_transpose32(pl);
{top}"#
        )
    } else {
        let planes = match raw {
            Some(bits) => value_planes(bits, dst),
            None => format!(
                "{dst}            #pragma unroll\n            for (int i = {low}; i < 32; ++i) dst[i << 8] = pl[i];\n"
            ),
        };
        format!("            psg_transpose32(pl);\n{planes}")
    };
    let to_planes = format!(
        r#"            // Thread (lane, w): the keys of column lane at samples w + {parts}m, to bit planes{what}.
            psg_key pl[32];
            if (n_bi >= {full}) {{
                // Every sample exists: no checks.
                #pragma unroll
                for (int m = 0; m < 32; ++m) {{
                    const int b = w + {parts} * m;
{load_full}                }}
            }} else {{
                #pragma unroll
                for (int m = 0; m < 32; ++m) {{
                    const int b = w + {parts} * m;
                    pl[m] = 0u;
{load}                }}
            }}
{store}"#,
        what = if split {
            ": their top 16 bits; the low 16\n            // as they are, two a word, to planes 0-15"
        } else {
            ""
        },
    );
    let mut s = String::new();
    // The selecting lanes' names must not hide the plan's (`s0`, `s1` are its parameters, `x` its
    // element), which the tie check's keys read: a lane's plane words are `o0` and `o1`.
    write!(
        s,
        r#"        const bool valid = k >= 0 && k < total;
{rank2}        psg_key* const planes = (psg_key*)bins{planes_at};
{nonfinite}        {open}{{
{to_planes}        }}
{fetch}        if (w == 0) {{ pick[32 + lane] = (int)total; pick[64 + lane] = valid && active ? (int)k : -1;{pick2} }}
        __syncthreads();
        {{
            // {lane_list} of warp w select in column {columns}(w % {lanes}) + g, parts 2q and 2q + 1
            // (q = lane % {lanes}; words o0, o1; masks v0, v1 of their samples below B).
            const int c = {columns} * (w & {lmask}) + (lane >> {lg}), q = lane & {lmask};
            const int sw = (c >> 2) & 7;
            const psg_key* const src = planes + (c << 3);
            const int o0 = (2 * q) ^ sw, o1 = (2 * q + 1) ^ sw;
            {kk}
            const int n0 = min(32, max(0, (n_bi - 2 * q + {r0}) >> {parts_log2})), n1 = min(32, max(0, (n_bi - 2 * q + {r1}) >> {parts_log2}));
            const psg_key v0 = n0 >= 32 ? ~0u : ((1u << n0) - 1u), v1 = n1 >= 32 ? ~0u : ((1u << n1) - 1u);
            psg_key m0 = v0, m1 = v1, sel = 0u;
"#,
        open = if parts_log2 == 3 {
            String::new()
        } else {
            format!("if (w < {parts}) ")
        },
        lane_list = if lanes == 4 {
            "Lanes 4g .. 4g + 3"
        } else {
            "Lanes 2g, 2g + 1"
        },
        lg = parts_log2 - 1,
        nonfinite = if own_guard {
            "        bool nonfinite = false;\n"
        } else {
            ""
        },
        lmask = lanes - 1,
        // With half the planes (keys' top 16 bits only), plane 16 is the scratch's first.
        planes_at = if half_planes { " - (16 << 8)" } else { "" },
        r0 = parts - 1,
        r1 = parts - 2,
        to_planes = to_planes,
        rank2 = pair.map_or(String::new(), |p| format!(
            "        // The paired selection's rank.\n        const long long k2 = psg_index({});\n        const bool valid2 = k2 >= 0 && k2 < total;\n",
            p.rank
        )),
        pick2 = if pair.is_some() {
            " pick[lane] = valid2 && active ? (int)k2 : -1;"
        } else {
            ""
        },
        kk = if pair.is_some() {
            format!(
                "// Warps {lanes} to {}: the paired selection (its rank in pick's first row).\n            const bool second = w >= {lanes};\n            const int kk = pick[(second ? 0 : 64) + c];",
                2 * lanes - 1
            )
        } else {
            "const int kk = pick[64 + c];".to_string()
        },
    )
    .ok();
    if twin {
        write!(
            s,
            r#"            // Warps {lanes} to {last} select rank k + 1, the next value where it is not a tie.
            const bool second = w >= {lanes};
            int rem = second ? kk + 1 : kk;
"#,
            last = 2 * lanes - 1
        )
        .ok();
    } else {
        s.push_str("            int rem = kk;\n");
    }
    if search {
        s.push_str("            psg_key g0 = 0u, g1 = 0u;\n");
    }
    if guarded {
        s.push_str("            psg_key h0 = ~0u, h1 = ~0u, l0 = 0u, l1 = 0u;\n");
    }
    let above_update = if search {
        "g0 |= m0 & a; g1 |= m1 & b; "
    } else {
        ""
    };
    let low_fill = if low > 0 {
        format!("{:#x}u", (1u64 << low) - 1)
    } else {
        String::new()
    };
    // The early stop (see `EARLY_STOP`): for 32-bit keys only. A bf16 column's own 16 steps
    // rarely stop early: the bf16 median took 1.03-1.05 of the time with it; the trimmed
    // mean's paired bounds, on normal data, never stopped (ncu: 52 of 1048576 warps, H100,
    // g[256, 4M]), and took 0.95 of the time at g[256, 4M] without it, 0.94 at g[128, 8M]
    // (H100, same run, four blocks a multiprocessor).
    let early_stop = low == 0;
    // The end of a count stopped after bit `stop` (early, or at the zero check) with a walk of
    // the remaining planes in `rest`: a lone key's bits over the column's lanes. With none left,
    // the count would have set every bit where the rank was past the keys (`rem` >= 0) and none
    // below them; with one left and `rem` < 0 (no rank), it would have dropped the key at its
    // first 1 and set nothing.
    let low_mask = if floor > 0 {
        format!("{:#x}u", (1u64 << floor) - 1)
    } else {
        "0u".to_string()
    };
    let rest_finish = |stop: &str, ind: &str| {
        let above_drop = if search { "g0 |= m0; g1 |= m1; " } else { "" };
        format!(
            "{}{ind}if (left == 0) rest = rem >= 0 ? ((1u << {stop}) - 1u) & ~{low_mask} : 0u;\n{ind}else if (rem < 0) {{ if (rest != 0u) {{ {above_drop}m0 = 0u; m1 = 0u; }} rest = 0u; }}\n{ind}sel |= rest;\n",
            across_lanes("rest", "|", ind, parts_log2),
        )
    };
    // The tie check (see `TIE_AT`): computed keys of 16-bit input, where the loop counts every
    // bit (keys not split) and no group searches for the least key above.
    let tie_check = other.filter(|_| early_stop && ties && !split && !search);
    let (left_decl, left_zeros, left_ones) = if early_stop {
        (
            format!(
                "            // `left`: the column's keys still matching the selected bits.\n            int left = n_bi, stop = {floor};{}\n",
                if tie_check.is_some() {
                    "\n            // The bits below `stop` where the keys left tie (see `TIE_AT`).\n            psg_key settled = 0u; bool tied = false;"
                } else {
                    ""
                }
            ),
            " left = c0;",
            " left -= c0;",
        )
    } else {
        (String::new(), "", "")
    };
    write!(
        s,
        r#"            {selecting}{{
{left_decl}            #pragma unroll
            for (int i = 31; i >= {floor}; --i) {{
                const psg_key a = src[(i << 8) + o0], b = src[(i << 8) + o1];
                const psg_key z0 = m0 & ~a, z1 = m1 & ~b;
                int c0 = __popc(z0) + __popc(z1);
{c0_sum}                if (rem < c0) {{ {above_update}m0 = z0; m1 = z1;{left_zeros} }}
                else {{ rem -= c0; m0 &= a; m1 &= b; sel |= 1u << i;{left_ones} }}
"#,
        c0_sum = across_lanes("c0", "+", "                ", parts_log2),
    )
    .ok();
    if guarded {
        s.push_str("                if (i >= 24) { h0 &= a; h1 &= b; l0 |= a; l1 |= b; }\n");
    }
    // Once no column of the warp has more than one key left, the counting stops: the
    // remaining bits are that key's (below). Not above bit 24, which the NaN check reads.
    if early_stop {
        writeln!(
            s,
            "                if (i <= 24 && i > {floor} && (i & {}) == 0 && __all_sync(0xffffffffu, left <= 1)) {{ stop = i; break; }}",
            EARLY_STOP - 1
        )
        .ok();
    }
    if let Some(o) = tie_check {
        let across = |v: &str, op: &str| across_lanes(v, op, "                    ", parts_log2);
        // The key of the lane's key left at bit `p` (0-63) of its two parts.
        let key_at = |var: &str, p: &str| {
            format!(
                "                        {{\n                            const int b = ({p} < 32 ? 2 * q : 2 * q + 1) + (({p} & 31) << {parts_log2});\n{}                            {var} = key;\n                        }}\n",
                o.key
            )
        };
        write!(
            s,
            r#"                if (i == {TIE_AT}) {{
                    // Where every column's keys left tie (see `TIE_AT`), the remaining bits are
                    // theirs: the keys of each lane's first and last, computed again.
                    const int nl = __popc(m0) + __popc(m1);
{shuffles}                    psg_key kf = 0u, kl = 0u;
                    if (nl > 0 && nl <= 2) {{
                        const psg_tile* const tcc = tile + cs * n_bi + c;
                        const int pf = m0 != 0u ? __ffs(m0) - 1 : 31 + __ffs(m1);
                        const int pl = m1 != 0u ? 63 - __clz(m1) : 31 - __clz(m0);
{kf}{kl}                    }}
                    psg_key lo = nl > 0 ? min(kf, kl) : ~0u, hi = nl > 0 ? max(kf, kl) : 0u;
{lo_min}{hi_max}                    if (__all_sync(0xffffffffu, nl <= 2 && (left == 0 || lo == hi))) {{ settled = lo & ((1u << i) - 1u); stop = i; tied = true; break; }}
                }}
"#,
            shuffles = o.shuffles,
            kf = key_at("kf", "pf"),
            kl = key_at("kl", "pl"),
            lo_min = across("lo", "min"),
            hi_max = across("hi", "max"),
        )
        .ok();
    }
    // The zero check (see `ZERO_AT`): unsplit 32-bit keys (split ones stop at bit 16 anyway).
    // One walk of the remaining planes finds whether the keys left have a bit set there and,
    // for a lone key, which: where every column passes, the count ends as after the walk that
    // follows an early stop (below).
    if early_stop && !split {
        write!(
            s,
            r#"                if (i == {ZERO_AT} && __any_sync(0xffffffffu, left > 1 && (sel >> 23) == 0x100u)) {{
                    // Keys left of +0 or subnormal (see `ZERO_AT`): the lane's keys left with a
                    // bit set below (`some`: a mask of samples) and the bits set (`rest`).
                    psg_key some = 0u, rest = 0u;
                    #pragma unroll 2
                    for (int j = i - 1; j >= {floor}; --j) {{
                        const psg_key o = (src[(j << 8) + o0] & m0) | (src[(j << 8) + o1] & m1);
                        some |= o;
                        if (o != 0u) rest |= 1u << j;
                    }}
                    if (__all_sync(0xffffffffu, left <= 1 || (some == 0u && rem < left))) {{
{finish}                        break;
                    }}
                }}
"#,
            finish = rest_finish("i", "                        "),
        )
        .ok();
    }
    s.push_str("            }\n");
    // The bits below `stop`: those of the one key left, from its part's planes, or for
    // computed keys from the key computed again (where the rank is valid: `rem` is then 0).
    // With none left, the loop would have set every bit where the rank was past the keys
    // (`rem` >= 0) and none below them; with one left and `rem` < 0 (no rank), it would have
    // dropped the key at its first 1 and set nothing.
    if early_stop {
        let rest_init = if tie_check.is_some() { "settled" } else { "0u" };
        let bits = if let Some(o) = other {
            // Computed keys: the lane that holds the lone key computes it again from the tile
            // (as the tie check does), one load and the key's arithmetic where the walk below
            // loads two plane words a bit.
            format!(
                "{shuffles}                if ({untied}__popc(m0) + __popc(m1) == 1) {{\n                    const psg_tile* const tcc = tc + (c - lane);\n                    const int pf = m0 != 0u ? __ffs(m0) - 1 : 31 + __ffs(m1);\n                    const int b = (pf < 32 ? 2 * q : 2 * q + 1) + ((pf & 31) << {parts_log2});\n{key}                    rest = key & ((1u << stop) - 1u) & ~{low_mask};\n                }}\n",
                shuffles = outdented(&o.shuffles, 4),
                untied = if tie_check.is_some() { "!tied && " } else { "" },
                key = outdented(&o.key, 8),
            )
        } else {
            format!(
                "                for (int i = stop - 1; i >= {floor}{rest_cond}; --i) {{\n                    if (((src[(i << 8) + o0] & m0) | (src[(i << 8) + o1] & m1)) != 0u) rest |= 1u << i;\n                }}\n",
                rest_cond = if tie_check.is_some() { " && !tied" } else { "" },
            )
        };
        write!(
            s,
            r#"            if (stop > {floor}) {{
                psg_key rest = {rest_init};
{bits}{finish}            }}
"#,
            finish = rest_finish("stop", "                "),
        )
        .ok();
    }
    if split {
        split_low(&mut s, parts_log2, raw.is_some());
    }
    if low > 0 {
        // The low bits of a negative value's key are set (it is complemented).
        writeln!(s, "            if ((sel >> 31) == 0u) sel |= {low_fill};").ok();
    }
    let mut store = String::from("found[c] = sel;");
    if twin {
        s.push_str("            if (!second) {\n");
    }
    let guard = "!lo && hi == n_bi - pick[32 + c]";
    if guarded {
        write!(
            s,
            r#"            // Keys whose top 8 bits are all clear (NaNs among them), and all set (NaNs and
            // removed values).
            int hi = __popc(h0 & v0) + __popc(h1 & v1);
{}            const bool lo = ((__ballot_sync(0xffffffffu, ((~l0 & v0) | (~l1 & v1)) != 0u) {group}) != 0u;
"#,
            sum("hi")
        )
        .ok();
    }
    if clean && guarded {
        write!(store, " totals[c] = {guard};").ok();
    }
    if let Some(p) = pair {
        let mut store2 = String::from("found[32 + c] = sel;");
        if clean2 && guarded {
            write!(store2, " totals[32 + c] = {guard};").ok();
        }
        // The counts below the selected key and equal to it (see `Settled::CountLe`), two
        // halves of a word (B <= 256), each group's in its own rank's row of `pick`, which only
        // the lanes that read that rank before the loop read.
        if flags.counts.any() || p.counts.any() {
            write!(
                s,
                "            int eq = __popc(m0) + __popc(m1);\n{}",
                sum("eq")
            )
            .ok();
            let counts = "(kk - rem) | (eq << 16)";
            if flags.counts.any() {
                write!(store, " pick[64 + c] = {counts};").ok();
            }
            if p.counts.any() {
                write!(store2, " pick[c] = {counts};").ok();
            }
        }
        store = format!("if (second) {{ {store2} }} else {{ {store} }}");
    }
    if next {
        write!(
            s,
            "            int eq = __popc(m0) + __popc(m1);\n{}",
            sum("eq")
        )
        .ok();
        store.push_str(" pick[c] = kk - rem + eq;");
    }
    // The least key among those that left the masks upwards (g0, g1), into `out`: from the
    // top bit down, keeping those with a 0 where there are any; `none` where there are none.
    let least_above = |ind: &str, out: &str| {
        let mut t = format!(
            "{ind}const bool none = ((__ballot_sync(0xffffffffu, (g0 | g1) != 0u) {group}) == 0u;\n\
             {ind}psg_key {out} = 0u;\n\
             {ind}#pragma unroll\n\
             {ind}for (int i = 31; i >= {low}; --i) {{\n\
             {ind}    const psg_key z0 = g0 & ~src[(i << 8) + o0], z1 = g1 & ~src[(i << 8) + o1];\n\
             {ind}    if ((__ballot_sync(0xffffffffu, (z0 | z1) != 0u) {group}) {{ g0 = z0; g1 = z1; }}\n\
             {ind}    else {out} |= 1u << i;\n\
             {ind}}}\n"
        );
        if low > 0 {
            writeln!(t, "{ind}if (({out} >> 31) == 0u) {out} |= {low_fill};").ok();
        }
        t
    };
    if next && !twin {
        s.push_str("            // The least key above the selected one.\n");
        s.push_str(&least_above("            ", "above"));
        s.push_str("            if (none) above = ~0u;\n");
        store.push_str(" found[32 + c] = above;");
    }
    writeln!(s, "            if (q == 0) {{ {store} }}").ok();
    if twin && tie_unread {
        s.push_str("            } else if (q == 0) {\n                // Rank k + 1: the least key above rank k's, or rank k's again where they tie\n                // (the plan then reads rank k's).\n                found[32 + c] = kk + 1 < pick[32 + c] ? sel : ~0u;\n            }\n");
    } else if twin {
        s.push_str("            }\n");
    }
    s.push_str("            }\n");
    if twin && !tie_unread {
        write!(
            s,
            r#"            __syncthreads();
            if ({second}) {{
                // Rank k + 1 is the least key above rank k's unless they tie: then the least
                // key above it is among the keys that left this selection's masks upwards.
                const bool more = kk + 1 < pick[32 + c];
                const bool tie = more && sel == found[c];
                psg_key above = more ? sel : ~0u;
                if (__any_sync(0xffffffffu, tie)) {{
{}"#,
            least_above("                    ", "least"),
            second = if 2 * lanes < WARPS {
                format!("second && w < {}", 2 * lanes)
            } else {
                "second".to_string()
            }
        )
        .ok();
        s.push_str(
            "                    if (tie) above = none ? ~0u : least;\n                }\n                if (q == 0) found[32 + c] = above;\n            }\n",
        );
    }
    s.push_str("        }\n");
    if let Some(PairedCode {
        name: name2,
        counts: counts2,
        ..
    }) = pair
    {
        // Both selections' results; the barriers keep them until every thread has read them.
        s.push_str("        __syncthreads();\n        const psg_key prefix = found[lane], prefix2 = found[32 + lane];\n");
        if flags.counts.any() {
            s.push_str("        const int cnt = pick[64 + lane];\n");
        }
        if counts2.any() {
            s.push_str("        const int cnt2 = pick[lane];\n");
        }
        if clean {
            let vote = if own_guard { OWN_VOTE } else { TOTALS_VOTE };
            writeln!(s, "        {name}_clean = __syncthreads_and({vote});").ok();
        }
        if clean2 && own_guard && clean {
            // The same keys, the same samples: the same vote.
            writeln!(s, "        {name2}_clean = {name}_clean;").ok();
        } else if clean2 {
            let vote = if own_guard {
                OWN_VOTE
            } else {
                "!active || totals[32 + lane] != 0"
            };
            writeln!(s, "        {name2}_clean = __syncthreads_and({vote});").ok();
        }
        if !clean && !clean2 {
            s.push_str("        __syncthreads();\n");
        }
        // Where no column of the block holds a NaN (the columns are the same), the counts are
        // the values' but where the value is a zero that the key order puts on the other side
        // of its twin (-0 for `x <= v`, +0 for `x < v`): a warp's lanes are the block's
        // columns, so its vote is the block's.
        let clean_flag = if clean {
            format!("{name}_clean")
        } else if clean2 {
            format!("{name2}_clean")
        } else {
            "false".to_string()
        };
        for (t, counts, cnt, prefix, valid) in [
            (name, flags.counts, "cnt", "prefix", "valid"),
            (name2.as_str(), *counts2, "cnt2", "prefix2", "valid2"),
        ] {
            if !counts.any() {
                continue;
            }
            let mut ok = valid.to_string();
            if counts.le {
                write!(ok, " && {prefix} != psg_to_key(-(psg_acc)0)").ok();
            }
            if counts.lt {
                write!(ok, " && {prefix} != psg_to_key((psg_acc)0)").ok();
            }
            writeln!(
                s,
                "        {t}_cnt = {clean_flag} && __all_sync(0xffffffffu, !active || ({ok}));\n        {t}_ltc = (psg_acc)({cnt} & 0xffff); {t}_lec = {t}_ltc + (psg_acc)({cnt} >> 16);"
            )
            .ok();
        }
        return s;
    }
    let found = Gathered {
        taken: "valid && active",
        vote: "valid",
        above: "found[32 + lane]",
    };
    let vote = if own_guard { OWN_VOTE } else { TOTALS_VOTE };
    select_results(&mut s, name, clean, next, found, vote);
    s
}

/// The source an optimized build compiles: `source` without what only the quick build reads
/// (the `#if defined(PSG_QUICK)` part of each `#if defined(PSG_QUICK)` / `#else` / `#endif`,
/// which `emit_select` writes around each selection, and `emit_pass` around a pass unrolled
/// whole). For tests that read the generated source.
pub fn optimized_source(source: &str) -> String {
    one_build(source, false)
}

/// The source a quick build compiles (`-DPSG_QUICK`): `source` without the `#else` part of each
/// `#if defined(PSG_QUICK)` / `#else` / `#endif`. For tests that read the generated source.
pub fn quick_source(source: &str) -> String {
    one_build(source, true)
}

fn one_build(source: &str, quick: bool) -> String {
    const IF: &str = "#if defined(PSG_QUICK)\n";
    let mut out = String::new();
    let mut rest = source;
    while let Some(i) = rest.find(IF) {
        out.push_str(&rest[..i]);
        let after = &rest[i + IF.len()..];
        let Some(j) = after.find("#else\n") else {
            break;
        };
        let tail = &after[j + "#else\n".len()..];
        let Some(k) = tail.find("#endif\n") else {
            break;
        };
        out.push_str(if quick { &after[..j] } else { &tail[..k] });
        rest = &tail[k + "#endif\n".len()..];
    }
    out.push_str(rest);
    out
}

/// `v` combined by `op` (`+`, `|`, `&`, `min`, `max`) over a column's lanes of a bit-sliced
/// selection (`2^(parts_log2 - 1)` neighbouring lanes), by butterfly shuffles, each line
/// indented by `ind`.
fn across_lanes(v: &str, op: &str, ind: &str, parts_log2: u32) -> String {
    (0..parts_log2 - 1)
        .map(|j| {
            let other = format!("__shfl_xor_sync(0xffffffffu, {v}, {})", 1 << j);
            match op {
                "min" | "max" => format!("{ind}{v} = {op}({v}, {other});\n"),
                _ => format!("{ind}{v} {op}= {other};\n"),
            }
        })
        .collect()
}

/// The low 16 bits of a split selection (see [`sliced_select`]), after its top 16: the keys
/// left in a column's masks share those, and their low halves are in planes 0-15, two a word
/// (`raw`: the values' bits, flipped here by the sign as `psg_to_key` does).
///
/// Where one key is left, its half: one load. Where more are, each lane reads the halves of its
/// first and last key left; where no lane has more than two, the column's least, greatest and
/// sum of halves settle ranks at either end, ties, and the middle of three. Else ("hard"): the
/// halves of every key left (a key at a time, or where a lane of the warp holds more than
/// [`SPLIT_FOLD`], every word of its parts, masked), and where they differ, their bits one at a
/// time as above, each plane word gathered from the halves of the part's keys left (at most
/// [`SPLIT_FEW`] a column) or from all of the part's.
fn split_low(s: &mut String, parts_log2: u32, raw: bool) {
    let across = |v: &str, op: &str, ind: &str| across_lanes(v, op, ind, parts_log2);
    // The half of the key at bit `p` (0-63) of the lane's two parts.
    let at_bit = |p: &str| {
        format!(
            "((src[((({p}) & 31) >> 1 << 8) + (({p}) < 32 ? o0 : o1)] >> ((({p}) & 1) << 4)) ^ fl) & 0xffffu"
        )
    };
    // Sample m's half of the column's part in word `o0` or `o1`.
    let half = |word: &str| format!("((src[((m >> 1) << 8) + {word}] >> ((m & 1) << 4)) ^ fl)");
    let (h0, h1) = (half("o0"), half("o1"));
    // A loop over the samples in mask `mask`.
    let each = |mask: &str, body: &str| {
        format!(
            "for (psg_key mm = {mask}; mm != 0u; mm &= mm - 1u) {{ const int m = __ffs(mm) - 1; {body} }}"
        )
    };
    // Bit i of every half of a part, as a plane word.
    let every = |word: &str, v: &str| {
        format!(
            "#pragma unroll 1\n                            for (int j = 0; j < 16; ++j) {{ const psg_key x = src[(j << 8) + {word}] ^ (fl * 0x10001u); {v} |= ((x >> i) & 1u) << (2 * j) | ((x >> (16 + i)) & 1u) << (2 * j + 1); }}"
        )
    };
    // The fold of every word (see `SPLIT_FOLD`). In the kernel for B up to 128 (`emit_mid`,
    // four parts) the first form (prmt, two words a step) changed NVRTC's registers in its other
    // paths (12 to 24 bytes spilled a thread where 8 were; the f32 median and quantile took
    // 1.05-1.09 of the time at g[128, 8M] on normal data); the second (masks by multiplication,
    // a word a step) leaves them as they were, and is the slower one for B up to 256 (its f32
    // median 0.625 of the time on 90% zeros there, the first 0.59).
    let step = if parts_log2 == 3 {
        r#"                            // Word j holds samples 2j and 2j + 1, from the top word down: each
                            // mask's bit 31 spread over the high half, bit 30 over the low (prmt
                            // replicating the sign of byte 3 of k and of k << 1).
                            psg_key k0 = m0, k1 = m1;
                            const psg_key* w0 = src + (15 << 8) + o0;
                            const psg_key* w1 = src + (15 << 8) + o1;
                            #pragma unroll 2
                            for (int j = 0; j < 16; ++j, k0 <<= 2, k1 <<= 2, w0 -= 256, w1 -= 256) {
                                psg_key e0, e1;
                                asm("prmt.b32 %0, %1, %2, 0xBBFF;" : "=r"(e0) : "r"(k0), "r"(k0 << 1));
                                asm("prmt.b32 %0, %1, %2, 0xBBFF;" : "=r"(e1) : "r"(k1), "r"(k1 << 1));
                                const psg_key x0 = *w0, x1 = *w1;"#
    } else {
        r#"                            // Word j holds samples 2j and 2j + 1: the masks' bits 2j and 2j + 1
                            // spread over its halves by a multiplication.
                            #pragma unroll 1
                            for (int j = 0; j < 16; ++j) {
                                const psg_key x0 = src[(j << 8) + o0], x1 = src[(j << 8) + o1];
                                const psg_key e0 = (((m0 >> (2 * j)) & 1u) | (((m0 >> (2 * j + 1)) & 1u) << 16)) * 0xffffu;
                                const psg_key e1 = (((m1 >> (2 * j)) & 1u) | (((m1 >> (2 * j + 1)) & 1u) << 16)) * 0xffffu;"#
    };
    let fold = format!(
        r#"if (__any_sync(0xffffffffu, hard && nl > {SPLIT_FOLD})) {{
                        // Many keys left in a lane: every word of its two parts, folded with the
                        // halves of its keys left kept by a mask (two halves a word), then the
                        // two halves of the fold folded.
                        psg_key wa = ~0u, wo = 0u;
                        if (hard) {{
{step}
                                wa &= (x0 | ~e0) & (x1 | ~e1);
                                wo |= (x0 & e0) | (x1 & e1);
                            }}
                            wa &= wa >> 16;
                            wo |= wo >> 16;
                            // Halves flipped by `fl` swap the AND and the OR (their complements).
                            an = (fl != 0u ? ~wo : wa) & 0xffffu;
                            orr = (fl != 0u ? ~wa : wo) & 0xffffu;
                        }}
                    }} else "#
    );
    write!(
        s,
        r#"            // The low 16 bits.
            const psg_key fl = {fl};
            const bool more = rem >= 0 && left >= 2;
            // The lane's first and last key left (bits f <= l of its two parts) and their halves.
            const int nl = __popc(m0) + __popc(m1);
            const int f = m0 != 0u ? __ffs(m0) - 1 : m1 != 0u ? 31 + __ffs(m1) : 0;
            const int l = m1 != 0u ? 63 - __clz(m1) : m0 != 0u ? 31 - __clz(m0) : 0;
            const psg_key hf = nl > 0 ? {hf} : 0u;
            const psg_key hl = nl > 1 ? {hl} : hf;
            {{
                // One key left: its half.
                psg_key h = hf;
{h_or}                if (rem >= 0 && left <= 1) sel |= left == 0 ? 0xffffu : h;
            }}
            if (__any_sync(0xffffffffu, more)) {{
                // More: the column's least and greatest half, their sum, and the lanes with
                // more than two keys left (above bit 24).
                psg_key lo = nl > 0 ? min(hf, hl) : 0xffffu, hi = max(hf, hl);
                unsigned int sv = hf + (nl > 1 ? hl : 0u) + (nl > 2 ? 1u << 24 : 0u);
{lo_min}{hi_max}{sv_sum}                bool hard = false;
                psg_key pick = 0u;
                if (more) {{
                    if ((sv >> 24) != 0u) hard = true;
                    else if (lo == hi || rem == 0) pick = lo;
                    else if (rem == left - 1) pick = hi;
                    else if (left == 3) pick = (sv & 0xffffffu) - lo - hi;
                    else hard = true;
                }}
                // The keys of the picked half stay in the masks, and the rank drops by the keys
                // below it.
                unsigned int below = 0u;
                if (more && !hard) {{
                    sel |= pick;
                    psg_key k0 = 0u, k1 = 0u;
                    if (nl > 0 && hf == pick) {{ if (f < 32) k0 |= 1u << f; else k1 |= 1u << (f - 32); }}
                    if (nl > 1 && hl == pick) {{ if (l < 32) k0 |= 1u << l; else k1 |= 1u << (l - 32); }}
                    m0 = k0; m1 = k1;
                    below = (nl > 0 && hf < pick ? 1u : 0u) + (nl > 1 && hl < pick ? 1u : 0u);
                }}
{below_sum}                if (more && !hard) rem -= (int)below;
                if (__any_sync(0xffffffffu, hard)) {{
                    // Hard: where every key left ties, theirs.
                    psg_key an = 0xffffu, orr = 0u;
                    {fold}if (hard) {{
                        {an0}
                        {an1}
                    }}
{an_and}{orr_or}                    const bool differ = hard && an != orr;
                    if (hard && !differ) sel |= an;
                    if (__any_sync(0xffffffffu, differ)) {{
                        // Else a bit at a time, until the warp's columns are down to a key each
                        // (not where every half is read).
                        const bool few = differ && left <= {SPLIT_FEW};
                        int lft = few ? left : differ ? 2 : 1, at = 0;
                        #pragma unroll 1
                        for (int i = 15; i >= 0; --i) {{
                            psg_key a = 0u, b = 0u;
                            if (few) {{
                                {ga}
                                {gb}
                            }} else if (differ) {{
                            {ea}
                            {eb}
                            }}
                            const psg_key z0 = m0 & ~a, z1 = m1 & ~b;
                            int c0 = __popc(z0) + __popc(z1);
{c0_sum}                            if (differ) {{
                                if (rem < c0) {{ m0 = z0; m1 = z1; lft = c0; }}
                                else {{ rem -= c0; m0 &= a; m1 &= b; sel |= 1u << i; lft -= c0; }}
                            }}
                            if (differ && !few) lft = 2;
                            if (__all_sync(0xffffffffu, lft <= 1)) {{ at = i; break; }}
                        }}
                        // The bits below `at`: the one key's left.
                        psg_key h = 0u;
                        if (few && m0 != 0u) {{ const int m = __ffs(m0) - 1; h = {h0}; }}
                        else if (few && m1 != 0u) {{ const int m = __ffs(m1) - 1; h = {h1}; }}
{h2_or}                        if (few) sel |= h & ((1u << at) - 1u);
                    }}
                }}
            }}
"#,
        fl = if raw {
            "(sel >> 31) != 0u ? 0u : 0xffffu"
        } else {
            "0u"
        },
        hf = at_bit("f"),
        hl = at_bit("l"),
        h_or = across("h", "|", "                "),
        lo_min = across("lo", "min", "                "),
        hi_max = across("hi", "max", "                "),
        sv_sum = across("sv", "+", "                "),
        below_sum = across("below", "+", "                "),
        fold = fold,
        an0 = each("m0", &format!("const psg_key h = {h0} & 0xffffu; an &= h; orr |= h;")),
        an1 = each("m1", &format!("const psg_key h = {h1} & 0xffffu; an &= h; orr |= h;")),
        an_and = across("an", "&", "                    "),
        orr_or = across("orr", "|", "                    "),
        ga = each("m0", &format!("a |= (({h0} >> i) & 1u) << m;")),
        gb = each("m1", &format!("b |= (({h1} >> i) & 1u) << m;")),
        ea = every("o0", "a"),
        eb = every("o1", "b"),
        c0_sum = across("c0", "+", "                            "),
        h2_or = across("h", "|", "                        "),
    )
    .ok();
}

/// The first row of a tile that reaches shared memory without passing through registers, when
/// the tile is filled from 16-byte vectors: the rows past the prefetched ones, which `cp.async`
/// copies on sm_80 and later, for dtypes whose vector is the tile's bytes (f32, f64; a
/// transformed tile is never narrow). `None` where every row passes through registers (bf16 and
/// f16 widen theirs).
fn raw_rows_from(dtype: DType, prefetch_n: usize) -> Option<String> {
    matches!(dtype, DType::F32 | DType::F64).then(|| format!("{prefetch_n} * rstep"))
}

/// `psg_tf(x, b)`, sample `b`'s stored expression of its element `x` (see [`tile_transform`]),
/// which the tile is filled with, and `psg_raw_from` (see [`raw_rows_from`]), from which rows of
/// a tile filled from vectors hold the bare element until the slab's first pass rewrites them.
fn emit_transform_fn(
    s: &mut String,
    plan: &Plan,
    t: &Scalar,
    e: &dyn Fn(&Scalar) -> String,
    dtype: DType,
    prefetch_n: usize,
) {
    s.push_str(
        "    // Sample b's stored expression of its element (see the tile's loads and the slab's first\n    // pass).\n    auto psg_tf = [&](psg_acc psg_x, int b) -> psg_acc {\n",
    );
    let column = Column {
        value: t.clone(),
        keep: None,
    };
    loop_header_with(s, "        ", [&column], e, &plan.ranks, &|_| {
        "psg_x".to_string()
    });
    writeln!(s, "        return {};\n    }};", e(t)).ok();
    if let Some(from) = raw_rows_from(dtype, prefetch_n) {
        writeln!(
            s,
            "#if __CUDA_ARCH__ >= 800 && !PSG_GATHER\n    const int psg_raw_from = vec ? {from} : n_bi;\n#elif __CUDA_ARCH__ >= 800 && !PSG_GATHER_AHEAD\n    const int psg_raw_from = 0;\n#else\n    const int psg_raw_from = n_bi;\n#endif"
        )
        .ok();
    }
}

/// Elements per 16-byte vector (log2) for a dtype, and how a vector `v` becomes accumulators at
/// `dst`.
pub(crate) fn vector_unpack(dtype: DType) -> (u32, String) {
    let v_log2 = match dtype {
        DType::F32 => 2,
        DType::F64 => 1,
        DType::BF16 | DType::F16 => 3,
    };
    (v_log2, unpack_stores(dtype, false))
}

/// The statements that store vector `v` at `dst` as accumulators. Where `transform`, each value
/// goes through `psg_tf(value, psg_b)`, sample `psg_b`'s stored expression (see
/// [`tile_transform`]), `psg_b` being the vector's row (`ROW` and `u` of `PSG_UNPACK`).
fn unpack_stores(dtype: DType, transform: bool) -> String {
    let w = |x: &str| {
        if transform {
            format!("psg_tf({x}, psg_b)")
        } else {
            x.to_string()
        }
    };
    let f4 = |dst: &str, xs: [&str; 4]| {
        format!(
            "*(float4*){dst} = make_float4({}, {}, {}, {});",
            w(xs[0]),
            w(xs[1]),
            w(xs[2]),
            w(xs[3])
        )
    };
    let stores = match dtype {
        DType::F32 => f4(
            "dst",
            [
                "__uint_as_float(v.x)",
                "__uint_as_float(v.y)",
                "__uint_as_float(v.z)",
                "__uint_as_float(v.w)",
            ],
        ),
        DType::F64 => format!(
            "dst[0] = {}; dst[1] = {};",
            w("__hiloint2double((int)v.y, (int)v.x)"),
            w("__hiloint2double((int)v.w, (int)v.z)")
        ),
        DType::BF16 => format!(
            "{} {}",
            f4(
                "dst",
                [
                    "__uint_as_float(v.x << 16)",
                    "__uint_as_float(v.x & 0xffff0000u)",
                    "__uint_as_float(v.y << 16)",
                    "__uint_as_float(v.y & 0xffff0000u)",
                ],
            ),
            f4(
                "(dst + 4)",
                [
                    "__uint_as_float(v.z << 16)",
                    "__uint_as_float(v.z & 0xffff0000u)",
                    "__uint_as_float(v.w << 16)",
                    "__uint_as_float(v.w & 0xffff0000u)",
                ],
            )
        ),
        DType::F16 => format!(
            "const unsigned int u[4] = {{v.x, v.y, v.z, v.w}}; \
             _Pragma(\"unroll\") for (int j = 0; j < 4; ++j) {{ \
                 float lo, hi; \
                 asm(\"cvt.f32.f16 %0, %1;\" : \"=f\"(lo) : \"h\"((unsigned short)(u[j] & 0xffffu))); \
                 asm(\"cvt.f32.f16 %0, %1;\" : \"=f\"(hi) : \"h\"((unsigned short)(u[j] >> 16))); \
                 dst[2 * j] = {}; dst[2 * j + 1] = {}; }}",
            w("lo"),
            w("hi")
        ),
    };
    if transform {
        format!("const int psg_b = r0 + (ROW) + u * rstep; {stores}")
    } else {
        stores
    }
}

/// Vectors each thread prefetches into registers (the rest of a large tile is loaded when the
/// tile is filled): 8, or 7 for a plan of two selections or more, whose state with 8 (32
/// registers held through the tile's passes) exceeds the 80 registers of three blocks a
/// multiprocessor in the MAD's kernels (NVRTC spilled a vector to local memory, which made the
/// thread wait for its load before storing it); 6 where the selections are in waves of their
/// own (the MAD's: the vectors are held through both), where 7 still kept 16-36 bytes a thread
/// in a frame and 6 none or 4 to 12 (`ptxas -v`). H100, same run, the MAD mean against 7: 0.91
/// of the time in f32 and 0.96 in bf16 at g[256, 4M], 0.95 and 0.98 at g[128, 8M], 0.99-1.00
/// at g[1024, 1M]; with 5, 0.90, 0.96, 0.95, 1.00, 1.00. The kernel for small B prefetches 4
/// where it runs four blocks a multiprocessor ([`four_blocks`]): with its sorts' keys (8 a
/// thread) they fit 64 registers (a tile of B <= 64 is at most 32 KiB, 8 vectors a thread; the
/// rest of an f32 tile is copied straight to shared memory, a 16-bit tile is 4 vectors a
/// thread). Else it prefetches 6 for two selections or more (7 spilled in the MAD's cleaner),
/// else 8, but 6 in the kernel for large B where the tile holds f32 products (`products`: the
/// clipped median): with the digit passes' tie check (see [`TIED_SHARE`]) NVRTC spilled one of
/// 8 (64 bytes, `ptxas -v`), and with the next value's vote as it is now, 88 bytes of 7.
///
/// A bit-sliced kernel with half the planes (`half`, see [`half_planes`]) prefetches 4. At three
/// blocks a multiprocessor (80 registers), with 8 NVRTC kept 40 bytes a thread in a frame (the
/// bf16 median) and with 6, 4; with 4, none, and the bf16 median took 0.95-0.96 of the time,
/// the quantile 0.95-0.96, `median_low` and `kth` 0.97-0.98, the trimmed mean 0.95 (H100, two
/// same runs, g[256, 4M] and g[128, 8M]); with 6, 0.98-1.03; with 2, 0.95-0.99. Those kernels
/// now run four blocks (see [`Blocks`]), where 4 still fit the 64 registers with no frame (6
/// kept 40-56 bytes in one).
fn prefetch_vectors(plan: &Plan, small: bool, four: bool, half: bool, products: bool) -> usize {
    let selects = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Select(_)))
        .count();
    let waves = selection_waves(plan);
    match (small, four, selects >= 2) {
        (true, true, _) => 4,
        (false, _, _) if half => 4,
        (true, false, true) => 6,
        (false, _, true) if waves >= 2 => 6,
        (false, _, true) => 7,
        _ if products => 6,
        _ => 8,
    }
}

/// The plan's waves of selections: groups with no pass between them (the trimmed mean's two
/// bounds are one; the MAD's median and then its distances' median, two).
fn selection_waves(plan: &Plan) -> usize {
    plan.steps
        .split(|s| matches!(s, Step::Loop(_)))
        .filter(|wave| wave.iter().any(|s| matches!(s, Step::Select(_))))
        .count()
}

/// Whether the kernel for small B runs four blocks a multiprocessor (held to 64 registers,
/// prefetching 4 vectors, see [`prefetch_vectors`]) instead of three: its tile is at most 32
/// KiB (four blocks' shared memory at B = 64 in f32), and four took 0.90-0.97 of the time of
/// three (H100, B = 32 and 64, the order statistics, MAD and trimmed means, f32 and bf16). Not
/// where it writes a batch (the MAD's cleaner spilled at 64 registers), nor where an f32 or f64
/// tile holds a transform of the element (the clipped median): the rows that `cp.async` copies
/// past the prefetched ones take a pass of their own for it, and with 4 vectors that is half
/// the tile (the f32 clipped median at g[64, 16M] took 5.67 ms, against 5.47 ms at three blocks
/// in a run before on another H100; bf16's, whose rows all pass through registers, gained).
fn four_blocks(plan: &Plan, dtype: DType, transformed: bool) -> bool {
    let batch = matches!(plan.output, Output::Batch(_));
    let rewritten_rows = transformed && raw_rows_from(dtype, 4).is_some();
    !batch && !rewritten_rows
}

/// The persistent loop's constants: which vectors of a tile's rows thread `tid` moves, and
/// `PSG_FETCH`, which loads a group of them into registers (see [`tile_loop_start`]). Where the
/// tile is `pipelined` (see [`pipelines_large`]) warp w moves rows w, w + 8, ... (the rows its
/// passes read), whole (rows of at most 32 vectors: 128 f32 or 256 16-bit columns), and the
/// first pass's chunks (`psg_chunk` rows, a group of loads) and the groups of copies a tile
/// (`psg_groups`) are defined.
fn tile_loop_consts(dtype: DType, prefetch_n: usize, pipelined: bool) -> String {
    let (v_log2, _) = vector_unpack(dtype);
    let elements = if scalar_gather(dtype) {
        let k = prefetch_n << v_log2;
        format!(
            r#"#if PSG_GATHER
    // Unaligned rows (see `psg_gather`): thread tid moves column ce of rows re, re + rse, ...,
    // {k} elements a group (as many as {prefetch_n} vectors), so that each warp's loads are whole
    // row segments.
    const int ce = tid & (tile_w - 1), re = tid >> tile_log2, rse = 256 >> tile_log2;
    const long long estep = (long long)rse * n_p;
    psg_elem pe[{k}];
    #undef PSG_FETCH
    #define PSG_FETCH(T, ROW) {{         const long long col = ((long long)(T) << tile_log2) + ce;         const psg_elem* src = g + (long long)(re + (ROW)) * n_p + col;         if (col < n_p && re + (ROW) + ({k} - 1) * rse < n_bi) {{             _Pragma("unroll") for (int u = 0; u < {k}; ++u) {{                 pe[u] = *src;                 src += estep;             }}         }} else {{             _Pragma("unroll") for (int u = 0; u < {k}; ++u) {{                 pe[u] = (psg_elem)0;                 if (col < n_p && re + (ROW) + u * rse < n_bi) pe[u] = *src;                 src += estep;             }}         }} }}
#endif
"#
        )
    } else {
        String::new()
    };
    // A row of at most 32 vectors: tiles of at most 128 f32 or 256 16-bit columns, which
    // `TiledKernels::choose` (at most 128 columns) keeps to.
    let rows = if pipelined {
        format!(
            r#"    // Warp w moves rows w, w + 8, ... (the rows its passes read): lane l row
    // w + 8 * (l / per_row), a tile of at most 128 columns being at most 32 vectors a row.
    const int r0 = w + 8 * (lane >> per_row_log2), rstep = 256 >> per_row_log2;
    const int c0 = (lane & ((1 << per_row_log2) - 1)) << {v_log2};
    // The first pass's chunks of rows: the first loaded ahead, each other one group of copies.
    const int psg_chunk = {prefetch_n} * rstep, psg_groups = (n_bi - 1) / psg_chunk;"#
        )
    } else {
        format!(
            r#"    const int r0 = tid >> per_row_log2, rstep = 256 >> per_row_log2;
    const int c0 = (tid & ((1 << per_row_log2) - 1)) << {v_log2};"#
        )
    };
    format!(
        r#"    const long long n_tiles = (n_p + tile_w - 1) >> tile_log2;
    const int tid = w * 32 + lane;
    const int per_row_log2 = tile_log2 - {v_log2};
    uint4 pf[{prefetch_n}];
    // Thread tid loads the vectors at column c0 of rows r0, r0 + rstep, ... (256 threads cover
    // rstep whole rows), {prefetch_n} at a time: pointers step by whole rows.
{rows}
    const long long gstep = (long long)rstep * n_p;
    // A group whose {prefetch_n} rows all exist (every group but a tile's last, and that one too when
    // B is a multiple of {prefetch_n} * rstep) is moved without per-vector checks: the checks and the
    // shared-memory addresses they force the compiler to recompute cost more than the moves.
    #define PSG_FETCH(T, ROW) {{         const long long col = ((long long)(T) << tile_log2) + c0;         const psg_elem* src = g + (long long)(r0 + (ROW)) * n_p + col;         if (col < n_p && r0 + (ROW) + ({prefetch_n} - 1) * rstep < n_bi) {{             _Pragma("unroll") for (int u = 0; u < {prefetch_n}; ++u) {{                 pf[u] = PSG_LOADV(src, col);                 src += gstep;             }}         }} else {{             _Pragma("unroll") for (int u = 0; u < {prefetch_n}; ++u) {{                 pf[u] = make_uint4(0u, 0u, 0u, 0u);                 if (col < n_p && r0 + (ROW) + u * rstep < n_bi) pf[u] = PSG_LOADV(src, col);                 src += gstep;             }}         }} }}
{elements}"#
    )
}

/// Whether a dtype's build for unaligned rows fills its tiles element by element (f32 and f64:
/// a warp's loads of one element each are whole row segments), where 16-bit dtypes gather
/// vectors (two elements a word, see [`gather`]). Gathered f32 vectors took 1.04-1.16 of the
/// time of the element loop they replaced in the f32 MAD and trimmed means at g[256, 4194301]
/// (H200, same run): a warp's 4-byte loads 16 bytes apart cost four times the L1 wavefronts,
/// which those kernels' shared memory traffic shares.
fn scalar_gather(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F64)
}

/// The persistent loop's head for slabs of `1 << slab_log2` columns (32, or 64 where a thread
/// computes two columns: see [`pairs`]; a compile-time width, so that every shared-memory address
/// of the loads is a register plus a constant): block `blockIdx.x` walks tiles `blockIdx.x,
/// + gridDim.x, ...`. With `vec` (the runtime's word that rows are 16-byte aligned: P * element
/// size is a multiple of 16 and g is 16-byte aligned; or that this is the build for unaligned
/// rows, see [`gather`]) each thread holds its share of the next tile in registers as 16-byte
/// vectors (or, in that build for f32 and f64, elements), loaded while the current tile is
/// computed, and unpacks them into shared memory at the top of the next iteration; otherwise
/// the tile is loaded element by element. Defines `PSG_SLAB` and `PSG_UNPACK` (a second head
/// first undefines them). With `transform`, every element that passes through registers (all
/// of them but the rows that `cp.async` copies, see [`raw_rows_from`]) is stored as
/// `psg_tf(element, sample)`. With `fetch_later` the caller issues the next tile's loads itself
/// (see [`sliced_select`]). With `pipelined` (see [`pipelines_large`]) the copies are committed
/// a group a chunk of rows and nothing waits for them here: the first pass does (see
/// [`Unroll`]); the tile filled another way (unaligned rows, before sm_80) waits at a barrier.
#[allow(clippy::too_many_arguments)]
fn tile_loop_start(
    dtype: DType,
    narrow: bool,
    slab_log2: u32,
    prefetch: bool,
    prefetch_n: usize,
    transform: bool,
    fetch_later: bool,
    pipelined: bool,
) -> String {
    let slab = slab_log2;
    let width = 1u32 << slab_log2;
    // A narrow tile holds the vector as it is.
    let unpack = if narrow {
        "*(uint4*)dst = v;".to_string()
    } else {
        unpack_stores(dtype, transform)
    };
    let element = if transform {
        "psg_tf(psg_tile_of(g, (long long)(i >> tile_log2) * n_p + col), i >> tile_log2)"
    } else {
        "psg_tile_of(g, (long long)(i >> tile_log2) * n_p + col)"
    };
    // The rest of a large tile (all of it without the prefetch) through registers, a group of
    // vectors at a time.
    let fetch = if prefetch {
        "if (row > 0 || !PSG_AHEAD) PSG_FETCH(t, row);"
    } else {
        "PSG_FETCH(t, row);"
    };
    let registers = format!(
        r#"        for (int row = 0; row < n_bi; row += {prefetch_n} * rstep) {{
            {fetch}
            PSG_UNPACK(row);
        }}
"#
    );
    // Without the prefetch every row is copied here.
    let (first, from_row) = if prefetch {
        (
            "        // The first rows come from the prefetch; the rest of a large tile is copied straight to\n        // shared memory, all of it in flight at once.\n        PSG_UNPACK(0);\n",
            format!("{prefetch_n} * rstep"),
        )
    } else {
        (
            "        // Every row is copied straight to shared memory, all of it in flight at once.\n",
            "0".to_string(),
        )
    };
    // Unaligned f32 and f64 rows (the second build, see [`gather`]) where the kernel does not
    // load ahead: the tile copied an element a thread, every copy in flight at once, as the
    // first build copies vectors. (Where it loads ahead, the rest of the tile goes through
    // registers: with copies NVRTC gave the f32 z-score mean 188 registers, 126 without.)
    let element_copies = if scalar_gather(dtype) && !narrow {
        let k = prefetch_n << vector_unpack(dtype).0;
        let size = if dtype == DType::F64 { 8 } else { 4 };
        format!(
            r#"#elif __CUDA_ARCH__ >= 800 && !PSG_GATHER_AHEAD
        // Unaligned rows: every element copied straight to shared memory ({size} bytes each), all
        // in flight at once.
        for (int row = 0; row < n_bi; row += {k} * rse) {{
            const long long col = p0 + ce;
            const psg_elem* src = g + (long long)(re + row) * n_p + col;
            unsigned int dst = (unsigned int)__cvta_generic_to_shared(edst + (row << {slab}));
            const unsigned int bytes = col < n_p ? {size}u : 0u;
            #pragma unroll 4
            for (int u = 0; u < {k}; ++u) {{
                if (re + row + u * rse < n_bi)
                    asm volatile("cp.async.ca.shared.global [%0], [%1], {size}, %2;\n" :: "r"(dst), "l"(bytes ? src : g), "r"(bytes) : "memory");
                src += estep;
                dst += (rse << {slab}) * (unsigned int)sizeof(psg_tile);
            }}
        }}
        asm volatile("cp.async.wait_all;\n" ::: "memory");
"#
        )
    } else {
        String::new()
    };
    let (commit, wait_all) = if pipelined {
        (
            "            asm volatile(\"cp.async.commit_group;\\n\" ::: \"memory\");\n",
            "        // No wait: the first pass waits for each chunk's group (see `Unroll`).\n",
        )
    } else {
        (
            "",
            "        asm volatile(\"cp.async.wait_all;\\n\" ::: \"memory\");\n",
        )
    };
    // The block waits for its tile, but where the first pass waits for the copies it reads.
    let barrier = if pipelined {
        "#if __CUDA_ARCH__ >= 800 && !PSG_GATHER\n    if (!vec) __syncthreads();\n#else\n    __syncthreads();\n#endif\n"
    } else {
        "    __syncthreads();\n"
    };
    let rest = if narrow || matches!(dtype, DType::F32 | DType::F64) {
        // A vector is the tile's bytes (f32, f64, or a narrow tile's 16-bit elements): the rest
        // of a large tile is copied straight into
        // shared memory, every copy in flight at once (cp.async, zero-filled past P).
        format!(
            r#"#if __CUDA_ARCH__ >= 800 && !PSG_GATHER
{first}        for (int row = {from_row}; row < n_bi; row += {prefetch_n} * rstep) {{
            const long long col = p0 + c0;
            const psg_elem* src = g + (long long)(r0 + row) * n_p + col;
            unsigned int dst = (unsigned int)__cvta_generic_to_shared(sdst + (row << {slab}));
            const unsigned int bytes = col < n_p ? 16u : 0u;
            #pragma unroll
            for (int u = 0; u < {prefetch_n}; ++u) {{
                if (r0 + row + u * rstep < n_bi)
                    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(dst), "l"(bytes ? src : g), "r"(bytes) : "memory");
                src += gstep;
                dst += (rstep << {slab}) * (unsigned int)sizeof(psg_tile);
            }}
{commit}        }}
{wait_all}{element_copies}#else
        // No cp.async before sm_80, nor for gathered vectors: {prefetch_n} vectors in flight per
        // thread at a time.
{registers}#endif
"#
        )
    } else {
        format!(
            r#"        // The first rows come from the prefetch; the rest of a large tile is loaded here,
        // {prefetch_n} vectors in flight per thread at a time.
{registers}"#
        )
    };
    let element_unpack = if scalar_gather(dtype) && !narrow {
        let k = prefetch_n << vector_unpack(dtype).0;
        let store = if transform {
            "{ const int psg_b = re + (ROW) + u * rse; *dst = psg_tf(pe[u], psg_b); }"
        } else {
            "*dst = pe[u];"
        };
        format!(
            r#"#if PSG_GATHER
    psg_tile* const edst = PSG_SLAB(re, ce);
    #undef PSG_UNPACK
    #define PSG_UNPACK(ROW) {{         psg_tile* dst = edst + ((ROW) << {slab});         if (re + (ROW) + ({k} - 1) * rse < n_bi) {{             _Pragma("unroll") for (int u = 0; u < {k}; ++u) {{                 {store}                 dst += rse << {slab};             }}         }} else {{             _Pragma("unroll") for (int u = 0; u < {k}; ++u) {{                 if (re + (ROW) + u * rse < n_bi) {store}                 dst += rse << {slab};             }}         }} }}
#endif
"#
        )
    } else {
        String::new()
    };
    let (prefetch_first, prefetch_next) = match (prefetch, fetch_later) {
        (true, false) => (
            "    if (vec && PSG_AHEAD) PSG_FETCH(blockIdx.x, 0);\n",
            "    // The next tile's loads are in flight while this one is computed.\n    if (vec && PSG_AHEAD && t + gridDim.x < n_tiles) PSG_FETCH(t + gridDim.x, 0);\n",
        ),
        (true, true) => ("    if (vec && PSG_AHEAD) PSG_FETCH(blockIdx.x, 0);\n", ""),
        (false, _) => ("", ""),
    };
    format!(
        r#"    // Element (row, column c of the tile) lives in slab c / {width}, at row * {width} + c % {width}.
    #define PSG_SLAB(ROW, C) (tile + ((((C) >> {slab}) * n_bi + (ROW)) << {slab}) + ((C) & {mask}))
    psg_tile* const sdst = PSG_SLAB(r0, c0);
    #define PSG_UNPACK(ROW) {{         psg_tile* dst = sdst + ((ROW) << {slab});         if (r0 + (ROW) + ({prefetch_n} - 1) * rstep < n_bi) {{             _Pragma("unroll") for (int u = 0; u < {prefetch_n}; ++u) {{                 {{ const uint4 v = pf[u];                 {unpack} }}                 dst += rstep << {slab};             }}         }} else {{             _Pragma("unroll") for (int u = 0; u < {prefetch_n}; ++u) {{                 if (r0 + (ROW) + u * rstep < n_bi) {{                     const uint4 v = pf[u];                     {unpack}                 }}                 dst += rstep << {slab};             }}         }} }}
{element_unpack}{prefetch_first}    for (long long t = blockIdx.x; t < n_tiles; t += gridDim.x) {{
    const long long p0 = t << tile_log2;
    if (vec) {{
{rest}    }} else {{
        const int n = n_bi << tile_log2;
        for (int i = tid; i < n; i += 256) {{
            const long long col = p0 + (i & (tile_w - 1));
            *PSG_SLAB(i >> tile_log2, i & (tile_w - 1)) = col < n_p ? {element} : (psg_tile)0;
        }}
    }}
{barrier}{prefetch_next}"#,
        mask = width - 1,
    )
}
