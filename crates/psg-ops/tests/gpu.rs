//! The built-ins on CUDA against the CPU backend, on fresh random data at awkward sizes
//! (B = 1, 2, 33, 256, 1023, 4099; P = 1, 30, 31, 40000, 1000003), f32 and bf16, with f16 and
//! f64 for the order statistics and moments. Both backends run the same
//! schedule with the same arithmetic (no FMA contraction), so results are bit-identical except
//! where the GPU's exp and the CPU's libm differ (density weighting) or sums run in another order
//! (per-sample norms), which are compared to a tolerance.
//!
//! `#[ignore]`d where there is no GPU; on a GPU host: `cargo test -- --include-ignored`, with
//! `PSG_REQUIRE_GPU=1` to make a missing GPU a failure.

mod common;

use common::{assert_identical, Rng};
use psg_macros::batch_reduce;
use psg_ops as ops;
use psg_runtime::{DType, Device, Result, Tensor};

fn gpu() -> Option<Device> {
    common::cuda().map(Device::Cuda)
}

fn host(t: &Tensor) -> Vec<f32> {
    common::tensors::as_f32(t)
}

/// The same input on both devices.
struct Pair {
    cpu: Tensor,
    gpu: Tensor,
    label: String,
}

impl Pair {
    fn new(values: &[f32], shape: &[usize], dtype: DType, gpu: &Device) -> Pair {
        let cpu = common::tensors::of_dtype(values, shape, dtype, &Device::Cpu);
        let gpu = cpu.to_device(gpu).unwrap();
        Pair {
            cpu,
            gpu,
            label: format!("{dtype} {shape:?}"),
        }
    }

    /// Runs `op` on both devices and requires bit-identical results.
    fn same(&self, name: &str, op: impl Fn(&Tensor) -> Result<Tensor>) {
        let want = host(&op(&self.cpu).unwrap());
        let got = host(&op(&self.gpu).unwrap());
        assert_identical(&format!("{name} {}", self.label), &got, &want);
    }

    /// The density-weighted sum and mean, and the sum alone, within 1e-4 (the GPU's exp).
    fn density_weighted(&self) {
        self.close("gaussian weighted sum", 1e-4, |t| {
            Ok(ops::gaussian_weighted(t)?.0)
        });
        self.close("gaussian weighted mean", 1e-4, |t| {
            Ok(ops::gaussian_weighted(t)?.1)
        });
        self.close(
            "gaussian weighted sum alone",
            1e-4,
            ops::gaussian_weighted_sum,
        );
    }

    /// The built-ins of streaming passes (var, std, the z-score mean and count, the
    /// density-weighted sums), then the per-sample outputs after passes, whose per-sample input
    /// holds `weights`.
    fn streaming_passes(&self, weights: &[f32], dev: &Device) {
        self.same("var", |t| ops::var(t, 1.0));
        self.same("std", |t| ops::std(t, 0.0));
        let rule = ops::OutlierRule::ZScore { k: 2.0 };
        self.same("zscore mean", |t| Ok(ops::outlier_mean(t, rule)?.mean));
        self.same("zscore kept", |t| Ok(ops::outlier_mean(t, rule)?.kept));
        self.density_weighted();
        let w = Pair::new(weights, &[weights.len()], acc_of(self.cpu.dtype()), dev);
        self.per_sample_outputs(&w);
    }

    /// The selections of filtered keys: the MAD's distances (mean and cleaner) and the trimmed
    /// mean's bounds, bit for bit.
    fn filtered_selections(&self) {
        self.same("mad mean", |t| {
            Ok(ops::outlier_mean(t, ops::OutlierRule::Mad { k: 3.0 })?.mean)
        });
        self.same("trim mean", |t| {
            Ok(ops::outlier_mean(t, ops::OutlierRule::TrimFraction { alpha: 0.1 })?.mean)
        });
        self.same("mad clean", |t| {
            ops::remove_outliers(t, ops::OutlierRule::Mad { k: 3.0 }, ops::Removed::NaN)
        });
    }

    /// The per-sample outputs of streaming passes (the z-score cleaner, the relative clamp, a
    /// user's plan through the per-sample input `w`, a filtered one), bit for bit.
    fn per_sample_outputs(&self, w: &Pair) {
        self.same("zscore clean", |t| {
            ops::remove_outliers(t, ops::OutlierRule::ZScore { k: 1.5 }, ops::Removed::NaN)
        });
        self.same("clip_values_relative", |t| {
            ops::clip_values_relative(t, 0.25)
        });
        let want = common::weighted_deviations(&self.cpu, &w.cpu, 0.5).unwrap();
        let got = common::weighted_deviations(&self.gpu, &w.gpu, 0.5).unwrap();
        assert_identical(
            &format!("weighted_deviations {}", self.label),
            &host(&got),
            &host(&want),
        );
        self.same("near_the_mean", |t| common::near_the_mean(t, 0.01));
    }

    /// Runs `op` on both devices and requires results within `rel` (relative to max(1, |x|)),
    /// or within one unit in the last place of the output dtype (a last-bit difference of the
    /// f32 result can round a bf16 output either way).
    fn close(&self, name: &str, rel: f32, op: impl Fn(&Tensor) -> Result<Tensor>) {
        let rel = match self.cpu.dtype() {
            DType::BF16 => rel.max(1.0 / 128.0),
            DType::F16 => rel.max(1.0 / 1024.0),
            _ => rel,
        };
        let want = host(&op(&self.cpu).unwrap());
        let got = host(&op(&self.gpu).unwrap());
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let ok =
                (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= rel * w.abs().max(1.0);
            assert!(
                ok,
                "{name} {}: element {i}: GPU {g:e}, CPU {w:e}",
                self.label
            );
        }
    }
}

/// B <= 1023 runs the tiled kernels (one read of g); B = 4099 does not fit shared memory and runs
/// the thread-per-column kernels, so both shapes are checked. One-pass reductions (sums, sign
/// sums, scaled sums) run the streaming kernel at every B, B = 4099 included.
const BATCHES: [usize; 6] = [1, 2, 33, 256, 1023, 4099];
/// P = 40000 rows are 16-byte aligned in every dtype (the tiled kernels' vector loads); the
/// others are not (the kernels' second build, which gathers its loads: in bf16 and f16 from
/// words where P is even, from funnel-shifted words where it is odd). P = 1, 30 and 31 get the
/// nasty values.
const COLUMNS: [usize; 5] = [1, 30, 31, 40_000, 1_000_003];

/// The dtype of a per-sample input for data of `dtype`: the accumulator's (f64 for f64 data).
fn acc_of(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

fn data(rng: &mut Rng, n: usize, p: usize) -> Vec<f32> {
    // Small tensors get the nasty values (ties, +-0, subnormals, inf, NaN); large ones realistic
    // gradients with outliers.
    if p <= 31 {
        rng.nasty(n, true)
    } else {
        rng.gradients(n)
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_moments_and_signs_match_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0001);
    for dtype in [DType::F32, DType::BF16] {
        for &b in &BATCHES {
            for &p in &COLUMNS {
                if b > 1023 && p > 31 {
                    continue;
                }
                let g = Pair::new(&data(&mut rng, b * p, p), &[b, p], dtype, &dev);
                g.same("sum", ops::sum);
                g.same("mean", ops::mean);
                g.same("var", |t| ops::var(t, 1.0));
                g.same("std", |t| ops::std(t, 1.0));
                g.same("std correction 0", |t| ops::std(t, 0.0));
                g.same("sign_sum", ops::sign_sum);
                g.same("majority_vote", ops::majority_vote);
                if b * p <= 300_000_000 {
                    g.same("sign", ops::sign);
                }
            }
        }
    }
    // f16 and f64 through the tiled kernels (P = 40000: 16-byte vectors; 30 and 31: element
    // loads, nasty values) and, at B = 1, the same.
    for dtype in [DType::F16, DType::F64] {
        for b in [1, 33, 256] {
            for p in [30, 31, 40_000] {
                let g = Pair::new(&data(&mut rng, b * p, p), &[b, p], dtype, &dev);
                // Maps: in f16 the streaming map kernel (its aligned build at P = 40000, the
                // builds that gather at 30 and 31), in f64 the tiled kernel.
                g.same("sign", ops::sign);
                g.same("clip_values", |t| ops::clip_values(t, 0.5));
                g.same("var", |t| ops::var(t, 1.0));
                g.same("std", |t| ops::std(t, 0.0));
                g.same("zscore mean", |t| {
                    Ok(ops::outlier_mean(t, ops::OutlierRule::ZScore { k: 2.0 })?.mean)
                });
                g.close("gaussian weighted mean", 1e-4, |t| {
                    Ok(ops::gaussian_weighted(t)?.1)
                });
                g.close("normal_kernel sum", 1e-4, |t| {
                    Ok(common::gaussian_sums(t, 0.1, 0.7)?.0)
                });
                g.close("normal_pdf sum", 1e-4, |t| {
                    Ok(common::gaussian_sums(t, 0.1, 0.7)?.1)
                });
                // NaN unless sigma > 0 (mu off the data: the guard, not 0 / 0).
                for sigma in [0.0, -0.0, -1.0, f64::NAN] {
                    let (k, pdf) = common::gaussian_sums(&g.gpu, 0.07, sigma).unwrap();
                    for v in host(&k).into_iter().chain(host(&pdf)) {
                        assert!(v.is_nan(), "sigma {sigma}: {v} {}", g.label);
                    }
                }
            }
        }
    }
}

/// Above 256 samples the var, std, z-score mean and Gaussian sums run a kernel whose tile is
/// pipelined into its first pass (f32, bf16 and f16): warp w copies rows w, w + 8, ..., and
/// waits for each chunk of them as it reaches it (no block barrier). A row read before its copy
/// landed would hold the tile before's value. B from 257 to 1500 (chunks of 256 rows, whole
/// and cut), P aligned (pipelined) and not (the build that gathers, with a barrier), many tiles
/// a block. 16-bit tiles run their path of two columns a thread here (64-column tiles, up to B
/// of about 1750 on an H200); their one-column path (32 columns) runs in
/// `gpu_two_columns_a_thread_match_cpu` at B = 2000. The per-sample outputs of streaming
/// passes pipeline in 16-bit tiles only; f32 runs them in the tiled kernel that waits.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_pipelined_tiles_match_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0007);
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        for b in [257, 300, 512, 513, 777, 1024, 1500] {
            for p in [40_000, 12_345, 65_536] {
                if dtype == DType::F16 && !matches!((b, p), (300 | 1024, _)) {
                    continue;
                }
                let g = Pair::new(&rng.gradients(b * p), &[b, p], dtype, &dev);
                g.streaming_passes(&rng.gradients(b), &dev);
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_equal_values_have_zero_std_and_infinite_quantiles_stay_infinite() {
    let Some(dev) = gpu() else { return };
    // Equal values whose mean rounds in f32 (0.1 x 7 sums to 0.70000005): a std of exactly 0,
    // density weights of 1, a z-score rule that removes nothing. Every kernel shape: the tiles
    // (B = 7, 256, 1023), the spill kernel and thread per column (4099); aligned and unaligned P.
    for dtype in [DType::F32, DType::F64, DType::BF16, DType::F16] {
        for b in [7, 256, 1023, 4099] {
            for p in [31, 40_000] {
                if b > 1023 && p > 31 {
                    continue;
                }
                let g = Pair::new(&vec![0.1; b * p], &[b, p], dtype, &dev);
                let std = host(&ops::std(&g.gpu, 1.0).unwrap());
                assert!(
                    std.iter().all(|&s| s == 0.0),
                    "std {}: {:?}",
                    g.label,
                    &std[..3]
                );
                let plain = host(&ops::sum(&g.gpu).unwrap());
                let weighted = host(&ops::gaussian_weighted_sum(&g.gpu).unwrap());
                assert_identical(&format!("weighted sum {}", g.label), &weighted, &plain);
                let rule = ops::OutlierRule::ZScore { k: 0.5 };
                let z = ops::outlier_mean(&g.gpu, rule).unwrap();
                assert!(host(&z.kept)
                    .iter()
                    .all(|&k| k == b as f32 || dtype != DType::F32));
                g.same("std", |t| ops::std(t, 1.0));
                g.same("zscore mean", |t| Ok(ops::outlier_mean(t, rule)?.mean));
                g.same("zscore kept", |t| Ok(ops::outlier_mean(t, rule)?.kept));
            }
        }
    }
    // Squared deviations that underflow: a std of 0 though the values differ, nothing removed.
    let g = Pair::new(&[1e-30, 2e-30, 4e-30], &[3, 1], DType::F32, &dev);
    let z = ops::outlier_mean(&g.gpu, ops::OutlierRule::ZScore { k: 0.5 }).unwrap();
    assert_eq!(host(&z.kept), vec![3.0]);
    // Quantiles that need no interpolation keep an infinite value (torch's lerp gives NaN).
    for (col, q, want) in common::quantiles_of_infinite_values() {
        let g = Pair::new(&col, &[col.len(), 1], DType::F32, &dev);
        assert_eq!(
            host(&ops::quantile(&g.gpu, q).unwrap()),
            vec![want],
            "{col:?}"
        );
        g.same("quantile", |t| ops::quantile(t, q));
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_order_statistics_and_outliers_match_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0002);
    for dtype in [DType::F32, DType::BF16] {
        for &b in &BATCHES {
            for &p in &COLUMNS {
                if b * p > 300_000_000 || (b > 1023 && p > 31) {
                    continue; // the CPU side of these sizes is too slow for a test
                }
                let g = Pair::new(&data(&mut rng, b * p, p), &[b, p], dtype, &dev);
                g.same("median", ops::median);
                g.same("median_low", ops::median_low);
                g.same("quantile", |t| ops::quantile(t, 0.3));
                g.same("kth", |t| ops::kth(t, b / 2));
                g.same("min", ops::min);
                g.same("max", ops::max);
                g.same("zscore mean", |t| {
                    Ok(ops::outlier_mean(t, ops::OutlierRule::ZScore { k: 2.0 })?.mean)
                });
                g.same("zscore kept", |t| {
                    Ok(ops::outlier_mean(t, ops::OutlierRule::ZScore { k: 2.0 })?.kept)
                });
                g.filtered_selections();
                g.same("zscore clean", |t| {
                    ops::remove_outliers(t, ops::OutlierRule::ZScore { k: 2.0 }, ops::Removed::Zero)
                });
                if b <= 256 && p <= 31 {
                    // Stable ranks cost O(B^2) per column.
                    g.same("trim clean", |t| {
                        ops::remove_outliers(
                            t,
                            ops::OutlierRule::TrimFraction { alpha: 0.1 },
                            ops::Removed::NaN,
                        )
                    });
                }
                g.same("clip_values", |t| ops::clip_values(t, 0.5));
                g.same("clip_values_relative", |t| {
                    ops::clip_values_relative(t, 0.25)
                });
                g.density_weighted();
            }
        }
    }
    // f16 order statistics (every digit is counted: the widening to f32 rewrites NaN payloads),
    // ties, negative values and specials included.
    for &b in &BATCHES[..5] {
        for p in [31, 40_000] {
            let g = Pair::new(&rng.nasty(b * p, true), &[b, p], DType::F16, &dev);
            g.same("median f16", ops::median);
            g.same("median_low f16", ops::median_low);
            g.same("kth f16", |t| ops::kth(t, b / 3));
        }
    }
}

/// Selections where no tile fits (B beyond about 1780 in f32, 3560 in bf16 and f16, 890 in
/// f64 on an H100 or H200): the thread-per-column kernel's selections, a 4-bit digit a pass
/// over 16 bins a thread (f64's 64-bit keys in 16 passes), bit for bit the CPU's. The nasty
/// values (ties, +-0, subnormals, infinities, NaN) at P = 31; gradients at P = 1000 (four
/// blocks, the last part idle); ranks at both ends; filtered selections (the MAD's distances,
/// the trimmed mean's bounds).
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_selections_beyond_the_tile_match_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0014);
    for (dtype, batches) in [
        (DType::F32, &[2_000usize, 4_099][..]),
        (DType::BF16, &[4_099][..]),
        (DType::F16, &[4_099][..]),
        (DType::F64, &[1_001, 2_048][..]),
    ] {
        for &b in batches {
            for p in [31, 1_000] {
                let g = Pair::new(&data(&mut rng, b * p, p), &[b, p], dtype, &dev);
                g.same("median", ops::median);
                g.same("median_low", ops::median_low);
                g.same("quantile", |t| ops::quantile(t, 0.3));
                g.same("kth 0", |t| ops::kth(t, 0));
                g.same("kth b / 2", |t| ops::kth(t, b / 2));
                g.same("kth b - 1", |t| ops::kth(t, b - 1));
                g.filtered_selections();
            }
        }
    }
}

/// Views at an offset (a slice of a PyTorch tensor, say): P a multiple of 8, but the buffer
/// starts one element past a 16-byte boundary, so the rows take the kernels' second build, for
/// 16-bit elements its funnel-shifted words though P is even. Column-mode, streaming (maps
/// too), tiled and digit-pass kernels, each dtype.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_views_at_an_offset_match_cpu() {
    let Some(cuda) = common::cuda() else { return };
    let dev = Device::Cuda(cuda.clone());
    let mut rng = Rng::new(0x5eed_0011);
    for dtype in [DType::BF16, DType::F16, DType::F32, DType::F64] {
        for (b, p) in [(33usize, 40_000usize), (256, 4096), (1023, 64)] {
            let values = rng.gradients(b * p + 1);
            // The owner holds one element more; the view starts one element in.
            let owner = common::tensors::of_dtype(&values, &[b * p + 1], dtype, &dev);
            let offset = dtype.size_in_bytes() as u64;
            // SAFETY: `owner` outlives the view and holds b * p elements past `offset`.
            let view = unsafe {
                Tensor::from_cuda_ptr(owner.cuda_ptr().unwrap() + offset, dtype, &[b, p], &cuda)
            };
            let g = Pair {
                cpu: common::tensors::of_dtype(&values[1..], &[b, p], dtype, &Device::Cpu),
                gpu: view,
                label: format!("{dtype} [{b}, {p}] at {offset} bytes in"),
            };
            g.same("mean", ops::mean);
            g.same("var", |t| ops::var(t, 1.0));
            g.same("median", ops::median);
            g.same("zscore mean", |t| {
                Ok(ops::outlier_mean(t, ops::OutlierRule::ZScore { k: 2.0 })?.mean)
            });
            g.same("mad mean", |t| {
                Ok(ops::outlier_mean(t, ops::OutlierRule::Mad { k: 3.0 })?.mean)
            });
            g.same("trim mean", |t| {
                Ok(ops::outlier_mean(t, ops::OutlierRule::TrimFraction { alpha: 0.1 })?.mean)
            });
            g.close("gaussian weighted sum", 1e-4, ops::gaussian_weighted_sum);
            g.same("sign", ops::sign);
            g.same("clip_values", |t| ops::clip_values(t, 0.5));
            // Per-sample outputs after passes: in 16-bit input, the word stores of the path of
            // two columns a thread (P even) under the build that gathers its loads.
            let w = Pair::new(&rng.gradients(b), &[b], acc_of(dtype), &dev);
            g.per_sample_outputs(&w);
        }
    }
}

/// The spill kernels: plans of streaming passes at a B whose 32-column tile does not fit in the
/// shared memory a block may have (on an H100 or H200, B above about 1780 in f32, 3560 in bf16
/// and f16, 890 in f64), which keep the rows that fit and read the others from g again in each
/// pass: their results are the tiled kernel's and the CPU's, bit for bit. B not a multiple of 8
/// (a warp's last rows) and beyond twice the rows kept, P not a multiple of 32 (a tile's idle
/// lanes), rows not 16-byte aligned (P = 33 and 4001: every row through registers) and rows
/// that are (the kept rows copied by `cp.async`: at each tile's start, or, with a per-sample
/// output, as the tile before is written; P = 8008 ends in a part tile), per-column and
/// per-sample outputs.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_spilled_tiles_match_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0012);
    for (dtype, batches) in [
        (DType::F32, &[1_900usize, 2_048, 4_099][..]),
        (DType::BF16, &[3_700, 8_191][..]),
        (DType::F16, &[4_099][..]),
        (DType::F64, &[1_001][..]),
    ] {
        for &b in batches {
            for p in [33, 4_001, 8_008, 20_000, 40_000] {
                if b * p > 100_000_000 {
                    continue;
                }
                let g = Pair::new(&rng.gradients(b * p), &[b, p], dtype, &dev);
                g.streaming_passes(&rng.gradients(b), &dev);
            }
        }
    }
}

/// Where a 32-column tile does not fit and P fills the GPU (at least 1024 columns a
/// multiprocessor: 140000 columns on an H100 or H200), the spill kernel computes the plans of
/// streaming passes where it keeps at least 3/4 of the rows and makes two passes or more
/// (B = 1900 in f32, 3700 in bf16; about 33 tiles a block), the thread-per-column kernel where
/// it would keep fewer (2600 in f32, 5000 in bf16) and for the relative clamp (one pass and a
/// per-sample output): the same results, bit for bit. P = 140001: rows not 16-byte aligned.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_wide_batches_beyond_the_tile_match_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0013);
    for (dtype, b, p) in [
        (DType::F32, 1_900, 140_000),
        (DType::F32, 1_900, 140_001),
        (DType::F32, 2_600, 140_000),
        (DType::BF16, 3_700, 140_000),
        (DType::BF16, 5_000, 140_000),
    ] {
        let g = Pair::new(&rng.gradients(b * p), &[b, p], dtype, &dev);
        g.same("var", |t| ops::var(t, 1.0));
        let rule = ops::OutlierRule::ZScore { k: 2.0 };
        g.same("zscore mean", |t| Ok(ops::outlier_mean(t, rule)?.mean));
        g.same("zscore clean", |t| {
            ops::remove_outliers(t, ops::OutlierRule::ZScore { k: 1.5 }, ops::Removed::NaN)
        });
        g.same("clip_values_relative", |t| {
            ops::clip_values_relative(t, 0.25)
        });
    }
}

/// The column-mode kernels (small B: whole columns a thread), the tiled kernels'
/// two-columns-a-thread path (16-bit input, tiles of 64 columns or more: B up to 1700 or so in
/// bf16 and f16 on an H100 or H200, one block a multiprocessor at the top) beside its one-column
/// path (32-column tiles, B = 2000) and f32's (the spill kernel at B = 2000): a
/// plan with minima, maxima, a filtered count and a per-sample input (`centred_extremes`), the
/// built-ins that take the path, and per-sample outputs (the path writes a sample's two columns
/// as one word where P is even; odd P, and a last pair of one column, element by element), at
/// odd widths (a last pair with one column, a partial last slab
/// and tile, rows not 16-byte aligned) and batch sizes that end a loop mid-unroll.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_two_columns_a_thread_match_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0007);
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        // Column mode up to B = 72 in f32, 144 in bf16 and f16; then the tiled kernel.
        for b in [1, 7, 64, 65, 72, 73, 144, 145, 300, 512, 1023, 2000] {
            for p in [1, 31, 63, 65, 129, 4_000, 4_001, 40_000] {
                let values = if p <= 65 {
                    rng.nasty(b * p, true)
                } else {
                    rng.gradients(b * p)
                };
                let g = Pair::new(&values, &[b, p], dtype, &dev);
                let weights = rng.gradients(b);
                let w = Pair::new(&weights, &[b], DType::F32, &dev);
                let want = common::centred_extremes(&g.cpu, &w.cpu, 0.5).unwrap();
                let got = common::centred_extremes(&g.gpu, &w.gpu, 0.5).unwrap();
                for (what, got, want) in [
                    ("lo", &got.0, &want.0),
                    ("hi", &got.1, &want.1),
                    ("near", &got.2, &want.2),
                    ("spread / near", &got.3, &want.3),
                ] {
                    let what = format!("centred_extremes {what} {}", g.label);
                    assert_identical(&what, &host(got), &host(want));
                }
                g.same("var", |t| ops::var(t, 1.0));
                g.same("std", |t| ops::std(t, 0.0));
                g.same("zscore mean", |t| {
                    Ok(ops::outlier_mean(t, ops::OutlierRule::ZScore { k: 1.5 })?.mean)
                });
                g.same("zscore kept", |t| {
                    Ok(ops::outlier_mean(t, ops::OutlierRule::ZScore { k: 1.5 })?.kept)
                });
                g.close("gaussian weighted sum", 1e-4, ops::gaussian_weighted_sum);
                g.close("gaussian weighted mean", 1e-4, |t| {
                    Ok(ops::gaussian_weighted(t)?.1)
                });
                g.per_sample_outputs(&w);
            }
        }
    }
}

/// The value after a selected one (the median's upper middle, a quantile's upper neighbour),
/// which the tiled kernel takes from the gathered bucket where every column of the block
/// gathered: medians that are their bucket's greatest (the next value lies above the bucket),
/// ties at the median (values rounded to eighths), filtered columns whose removed values take
/// the largest key, computed keys (`filtered_order`, the MAD), odd and even B, and blocks that
/// count another digit or hold a NaN (the nasty values), where the pass that computes it runs.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_next_value_from_the_bucket_matches_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0009);
    for dtype in [DType::F32, DType::BF16, DType::F16, DType::F64] {
        for b in [1usize, 2, 3, 32, 33, 64, 65, 128, 129, 255, 256, 600, 1023] {
            for (p, kind) in [(31, 0), (4_001, 1), (40_000, 1), (40_000, 2)] {
                let values: Vec<f32> = match kind {
                    0 => rng.nasty(b * p, true),
                    1 => rng.gradients(b * p),
                    _ => rng
                        .gradients(b * p)
                        .into_iter()
                        .map(|x| (x * 8.0).round() / 8.0)
                        .collect(),
                };
                let g = Pair::new(&values, &[b, p], dtype, &dev);
                let want = common::filtered_order(&g.cpu, 0.1).unwrap();
                let got = common::filtered_order(&g.gpu, 0.1).unwrap();
                for (what, got, want) in [
                    ("filtered median", &got.0, &want.0),
                    ("quantile of distances", &got.1, &want.1),
                    ("median of squares", &got.2, &want.2),
                ] {
                    let what = format!("filtered_order {what} {} (kind {kind})", g.label);
                    assert_identical(&what, &host(got), &host(want));
                }
                g.same("median", ops::median);
                g.same("quantile 0.7", |t| ops::quantile(t, 0.7));
                g.same("quantile 0.5", |t| ops::quantile(t, 0.5));
                g.same("mad mean", |t| {
                    Ok(ops::outlier_mean(t, ops::OutlierRule::Mad { k: 2.0 })?.mean)
                });
            }
        }
    }
}

/// Columns whose median's first-digit bucket (keys in [2, 8), two binades) holds a chosen number
/// of keys: 1 to 90 across the columns of a slab, so that blocks gather lists of up to 16 keys
/// (ranked), 17 to 64 (sorted across a warp, four lists at once up to 32, alone above), or count
/// another digit (more than 64). Ties inside the bucket in some columns, a NaN or an infinity
/// outside it in others; rows shuffled.
fn bucket_columns(rng: &mut Rng, b: usize, p: usize) -> Vec<f32> {
    const SIZES: [usize; 14] = [1, 5, 16, 17, 24, 31, 32, 33, 40, 47, 63, 64, 65, 90];
    let mut v = vec![0.0f32; b * p];
    for c in 0..p {
        let m = SIZES[(c * 7 + c / 14) % SIZES.len()].min(b);
        let k = (b - 1) / 2;
        let below = k.saturating_sub(m / 2).min(b - m);
        let mut col: Vec<f32> = (0..b)
            .map(|r| {
                if r < below {
                    -50.0 - 10.0 * rng.uniform() as f32
                } else if r < below + m {
                    match c % 4 {
                        0 => 3.0,
                        1 => 2.0 + (rng.below(8) as f32) * 0.75,
                        _ => 2.0 + 6.0 * rng.uniform() as f32,
                    }
                } else {
                    1000.0 + 1000.0 * rng.uniform() as f32
                }
            })
            .collect();
        match c % 13 {
            0 => col[0] = f32::NAN,
            1 => col[b - 1] = f32::INFINITY,
            2 => col[0] = f32::NEG_INFINITY,
            _ => {}
        }
        for r in (1..b).rev() {
            col.swap(r, rng.below(r + 1));
        }
        for (r, x) in col.into_iter().enumerate() {
            v[r * p + c] = x;
        }
    }
    v
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_sorted_buckets_match_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_000b);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for b in [40usize, 100, 256, 600] {
            for p in [31usize, 40_000] {
                let g = Pair::new(&bucket_columns(&mut rng, b, p), &[b, p], dtype, &dev);
                g.same("median", ops::median);
                g.same("median_low", ops::median_low);
                g.same("quantile 0.5", |t| ops::quantile(t, 0.5));
                g.same("quantile 0.7", |t| ops::quantile(t, 0.7));
                g.same("kth", |t| ops::kth(t, (b - 1) / 2));
                // Clip factors in the accumulator dtype (f32 here), some rows left as they are.
                let factors: Vec<f32> = (0..b)
                    .map(|_| match rng.below(3) {
                        0 => 1.0,
                        _ => 0.2 + 0.8 * rng.uniform() as f32,
                    })
                    .collect();
                let factors = Tensor::from_vec(factors, &[b], &Device::Cpu).unwrap();
                same_clipped(&g, &factors, &dev, dtype.name());
            }
        }
    }
}

/// Columns that make the tiled selection narrow its range more than once: one value repeated,
/// a tight cluster far from 0 with huge outliers on both sides (the first buckets are wide),
/// neighbouring floats with many ties (buckets one key wide), a cluster crossing 0, zeros and
/// subnormals among normals, a column of NaN and infinities. Each 32-column slab mixes them, so
/// columns finish at different rounds.
fn hard_columns(rng: &mut Rng, b: usize, p: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; b * p];
    for c in 0..p {
        for r in 0..b {
            v[r * p + c] = match c % 7 {
                0 => 2.5,
                1 => match rng.below(40) {
                    0 => 1e30,
                    1 => -1e30,
                    _ => 3.0 + 1e-3 * rng.normal() as f32,
                },
                2 => f32::from_bits(1.0f32.to_bits() + rng.below(40) as u32),
                3 => 3.0 + rng.normal() as f32,
                4 => match rng.below(4) {
                    0 => 0.0,
                    1 => f32::from_bits(1 + rng.below(8) as u32),
                    _ => rng.normal() as f32,
                },
                5 => match rng.below(5) {
                    0 => f32::NAN,
                    1 => f32::INFINITY,
                    2 => f32::NEG_INFINITY,
                    _ => -1.0 - rng.below(3) as f32,
                },
                _ => f32::from_bits((-1.0f32).to_bits() + rng.below(3000) as u32),
            };
        }
    }
    v
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_selection_on_hard_columns_matches_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0007);
    for dtype in [DType::F32, DType::BF16, DType::F64] {
        for b in [5usize, 32, 33, 64, 65, 128, 129, 255, 1000] {
            for p in [31usize, 40_000] {
                let g = Pair::new(&hard_columns(&mut rng, b, p), &[b, p], dtype, &dev);
                same_selections(&g, b);
            }
        }
    }
}

/// Columns whose trimmed mean's bounds are zeros of either sign with zeros of the other sign
/// beside them (`x <= -0` counts +0, `x < +0` does not count -0, unlike the keys' order), tie
/// with many values, or sit among NaNs: the bounds' counts come from the bit-sliced selection
/// only where they are the values' (see `Settled::CountLe` in psg-codegen), and a block mixes
/// such columns with columns of normal values; bounds among subnormals (bf16's least, 2^-133,
/// and its multiples), and infinite ones.
fn zero_bound_columns(rng: &mut Rng, b: usize, p: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; b * p];
    for c in 0..p {
        let kind = (c / 3) % 9;
        for r in 0..b {
            let u = rng.below(100);
            v[r * p + c] = match kind {
                // Bounds -0 (rank b/10) and +0 (rank b - 1 - b/10), both zeros around them.
                0 => match u {
                    0..=4 => -1.0 - rng.below(4) as f32,
                    5..=49 => -0.0,
                    50..=94 => 0.0,
                    _ => 1.0 + rng.below(4) as f32,
                },
                // Only zeros of both signs: both bounds are zeros.
                1 => {
                    if u < 50 {
                        -0.0
                    } else {
                        0.0
                    }
                }
                // Every value +0 or every value -0: the bounds tie.
                2 => {
                    if c % 2 == 0 {
                        0.0
                    } else {
                        -0.0
                    }
                }
                // Three values, ties at both bounds.
                3 => rng.below(3) as f32 - 1.0,
                // Zeros inside, bounds away from them.
                4 => match u {
                    0..=19 => -2.0 - rng.normal().abs() as f32,
                    20..=49 => -0.0,
                    50..=79 => 0.0,
                    _ => 2.0 + rng.normal().abs() as f32,
                },
                // Subnormals of both signs (multiples of 2^-133, bf16's least), zeros and the
                // least normal: bounds that a comparison flushing subnormals would get wrong.
                6 => {
                    let m = match u {
                        0..=9 => 0.0,
                        10..=19 => 128.0,
                        _ => (1 + rng.below(6)) as f32,
                    };
                    // 2^-133: an f32 subnormal, whose bits hold it exactly.
                    let x = m * f32::from_bits(0x0001_0000);
                    if rng.below(2) == 0 {
                        -x
                    } else {
                        x
                    }
                }
                // Infinities of both signs at the bounds.
                7 => match u {
                    0..=19 => f32::NEG_INFINITY,
                    80..=99 => f32::INFINITY,
                    _ => rng.normal() as f32,
                },
                // A NaN now and then.
                5 => {
                    if rng.below(2 * b) == 0 {
                        f32::NAN
                    } else {
                        rng.normal() as f32
                    }
                }
                _ => rng.normal() as f32,
            };
        }
    }
    v
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_trimmed_mean_at_zero_and_tied_bounds_matches_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0010);
    for dtype in [DType::F32, DType::BF16] {
        for b in [5usize, 33, 64, 65, 128, 129, 200, 255, 256, 1000] {
            let p = 40_000;
            let g = Pair::new(&zero_bound_columns(&mut rng, b, p), &[b, p], dtype, &dev);
            for alpha in [0.0, 0.1, 0.3] {
                let rule = ops::OutlierRule::TrimFraction { alpha };
                g.same(&format!("trim mean {alpha}"), |t| {
                    Ok(ops::outlier_mean(t, rule)?.mean)
                });
            }
            g.same("trim mean m = 1", |t| {
                Ok(ops::outlier_mean(t, ops::OutlierRule::TrimCount { m: 1 })?.mean)
            });
        }
    }
}

/// Trimming a column that holds a NaN (of either sign) removes nothing from it, on both
/// devices: the cleaned tensor keeps the NaN, as the trimmed mean is NaN; columns without one are
/// trimmed as before. Every kernel the cleaner has (B up to 64, 128, 256 and above), f32 and bf16.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_trim_clean_of_columns_with_nan_matches_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0011);
    for dtype in [DType::F32, DType::BF16] {
        for b in [5usize, 64, 65, 128, 200, 300] {
            let p = 37;
            let mut v = rng.gradients(b * p);
            // Every third column gets a NaN in a random sample, of alternating sign.
            for c in (0..p).step_by(3) {
                let row = (rng.gradients(1)[0].abs() * 1e6) as usize % b;
                v[row * p + c] = if c % 2 == 0 { f32::NAN } else { -f32::NAN };
            }
            let g = Pair::new(&v, &[b, p], dtype, &dev);
            for m in [0usize, 1, 2] {
                let rule = ops::OutlierRule::TrimCount { m };
                g.same(&format!("trim clean m = {m}"), |t| {
                    ops::remove_outliers(t, rule, ops::Removed::Zero)
                });
                g.same(&format!("trim mean m = {m}"), |t| {
                    Ok(ops::outlier_mean(t, rule)?.mean)
                });
            }
            // On the CPU: a column with a NaN is unchanged; one without lost 2m values.
            let clean = host(
                &ops::remove_outliers(
                    &g.cpu,
                    ops::OutlierRule::TrimCount { m: 1 },
                    ops::Removed::Zero,
                )
                .unwrap(),
            );
            let orig = host(&g.cpu);
            for c in 0..p {
                let changed = (0..b)
                    .filter(|&r| clean[r * p + c].to_bits() != orig[r * p + c].to_bits())
                    .count();
                if c % 3 == 0 {
                    assert_eq!(changed, 0, "column {c} with a NaN, B = {b}");
                }
            }
        }
    }
}

/// Columns for the tie check of the MAD's distances in bf16 (whether the keys left tie after
/// bit 14, from keys computed again in the lane that selects): normal values, whose distances to
/// the median have few significant bits, so that every column's keys left tie there in most
/// warps; and in one column of every third 32-column slab, in random order, one of:
/// - pairs +-(1 + j/128), j distinct, around the middle values 0 and 2^-19 (a median of 2^-20,
///   or 2^-19 for odd B): a value's distance and its mirror's differ in their low bits only,
///   two keys left that do not tie;
/// - one value repeated: every key ties, more than two a lane;
/// - five values repeated: several keys a lane tie at the MAD's rank.
fn mad_tie_columns(rng: &mut Rng, b: usize, p: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; b * p];
    let mut order: Vec<usize> = (0..b).collect();
    for c in 0..p {
        let kind = if c % 32 == 13 && (c / 32) % 3 == 0 {
            1 + (c / 96) % 3
        } else {
            0
        };
        for i in (1..b).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for (r, &i) in order.iter().enumerate() {
            v[r * p + c] = match kind {
                1 => match i {
                    0 => 0.0,
                    1 => (2.0f32).powi(-19),
                    _ => {
                        let x = 1.0 + ((i - 2) / 2) as f32 / 128.0;
                        if i % 2 == 0 {
                            x
                        } else {
                            -x
                        }
                    }
                },
                2 => 0.25,
                3 => rng.below(5) as f32 - 2.0,
                _ => rng.normal() as f32,
            };
        }
    }
    v
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_mad_of_bf16_with_tied_distances_matches_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0011);
    for b in [65usize, 100, 128, 129, 200, 255, 256] {
        // Not a multiple of 32: the last tile has columns past P, whose ranks are invalid.
        let p = 20_011;
        let g = Pair::new(&mad_tie_columns(&mut rng, b, p), &[b, p], DType::BF16, &dev);
        for k in [1.0, 3.0] {
            let rule = ops::OutlierRule::Mad { k };
            g.same(&format!("mad mean {k}"), |t| {
                Ok(ops::outlier_mean(t, rule)?.mean)
            });
            g.same(&format!("mad kept {k}"), |t| {
                Ok(ops::outlier_mean(t, rule)?.kept)
            });
            g.same(&format!("mad clean {k}"), |t| {
                ops::remove_outliers(t, rule, ops::Removed::NaN)
            });
        }
    }
}

/// The order statistics and outlier means of `g` (B = `b`) on both sides.
fn same_selections(g: &Pair, b: usize) {
    g.same("median", ops::median);
    g.same("kth 0", |t| ops::kth(t, 0));
    g.same("kth b/3", |t| ops::kth(t, b / 3));
    g.same("kth b-1", |t| ops::kth(t, b - 1));
    g.same("quantile", |t| ops::quantile(t, 0.9));
    g.same("mad mean", |t| {
        Ok(ops::outlier_mean(t, ops::OutlierRule::Mad { k: 3.0 })?.mean)
    });
    g.same("trim mean", |t| {
        Ok(ops::outlier_mean(t, ops::OutlierRule::TrimFraction { alpha: 0.1 })?.mean)
    });
}

/// Columns of distinct values `base + i << s` ulps (`i` a permutation of the samples, `s` from 0
/// to 22 by column, `base` 2^-40 or -2^-40 by column: finite for every `i << s`), so that a
/// column's rank is down to one key from a bit that differs column by column; in every third
/// slab one column instead holds each value twice (a tie at every rank), so the bit-sliced
/// selection stops early in some warps, late in others, and not at all in those.
fn spread_columns(rng: &mut Rng, b: usize, p: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; b * p];
    let mut order: Vec<u32> = (0..b as u32).collect();
    for c in 0..p {
        for i in (1..b).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let shift = (c * 5) % 23;
        let base = if c % 3 == 1 {
            -(2.0f32).powi(-40)
        } else {
            (2.0f32).powi(-40)
        };
        let tied = c % 32 == 7 && (c / 32) % 3 == 0;
        for r in 0..b {
            let i = if tied { order[r] / 2 } else { order[r] };
            v[r * p + c] = f32::from_bits(base.to_bits() + (i << shift));
        }
    }
    v
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_selection_stopping_early_matches_cpu() {
    same_bit_sliced_selections(0x5eed_000b, spread_columns);
}

/// [`same_selections`], the lower median and the MAD cleaner on columns of `columns`, at every
/// B of the bit-sliced selections' kernels and around their edges, in f32 and bf16.
fn same_bit_sliced_selections(seed: u64, columns: fn(&mut Rng, usize, usize) -> Vec<f32>) {
    let bs: &[usize] = &[65, 100, 128, 129, 200, 256];
    same_selections_of(
        seed,
        columns,
        &[(DType::F32, bs), (DType::BF16, bs)],
        20_000,
        false,
    );
}

/// [`same_selections`], the lower median and the MAD cleaner (and where `clipped`, the clipped
/// aggregates) on `p` columns of `columns`, in each dtype at each of its B.
fn same_selections_of(
    seed: u64,
    columns: fn(&mut Rng, usize, usize) -> Vec<f32>,
    shapes: &[(DType, &[usize])],
    p: usize,
    clipped: bool,
) {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(seed);
    for &(dtype, bs) in shapes {
        for &b in bs {
            let g = Pair::new(&columns(&mut rng, b, p), &[b, p], dtype, &dev);
            same_selections(&g, b);
            g.same("median_low", ops::median_low);
            g.same("mad clean", |t| {
                ops::remove_outliers(t, ops::OutlierRule::Mad { k: 3.0 }, ops::Removed::NaN)
            });
            if clipped {
                let factors = ops::flat_clip_factors(&[&g.cpu], 1.0).unwrap();
                same_clipped(&g, &factors, &dev, dtype.name());
            }
        }
    }
}

/// Columns whose keys tie in their top 16 bits (the split of the bit-sliced selection finds the
/// low 16 among the keys left): distinct floats a few ulps apart near +-1.5 (many keys in one
/// bucket); the same on both sides of 0, so that rank k and k + 1 fall in buckets of either sign;
/// floats 2^13 to 2^15 ulps apart, 2B of them to draw from (a few keys a bucket); three neighbouring floats repeated
/// (ties among near ties); bf16 values (low halves clear: many keys, all tied); normal values.
/// Each 32-column slab mixes them, so that blocks find the low bits in every way at once; in
/// every fourth slab only normal and spaced columns, so that some blocks keep to the few keys'
/// way.
fn near_tie_columns(rng: &mut Rng, b: usize, p: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; b * p];
    for c in 0..p {
        let kind = if (c / 32) % 4 == 3 {
            [2, 5][c % 2]
        } else {
            c % 6
        };
        for r in 0..b {
            let ulps = rng.below(4000) as u32;
            v[r * p + c] = match kind {
                0 => f32::from_bits(1.5f32.to_bits() + ulps),
                1 => {
                    let x = f32::from_bits(1.5f32.to_bits() + ulps);
                    if rng.below(2) == 0 {
                        x
                    } else {
                        -x
                    }
                }
                2 => f32::from_bits(
                    (-0.75f32).to_bits() + (rng.below(2 * b) as u32) * (1u32 << (13 + c % 3)),
                ),
                3 => f32::from_bits(2.0f32.to_bits() + rng.below(3) as u32),
                4 => half::bf16::from_f32(rng.normal() as f32).to_f32(),
                _ => rng.normal() as f32,
            };
        }
    }
    v
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_selection_of_near_ties_matches_cpu() {
    same_bit_sliced_selections(0x5eed_000d, near_tie_columns);
}

/// Columns of one value repeated in most samples, the ties that per-sample gradients hold
/// (parameters a sample does not touch, units it leaves off): +0 in 90% of the samples, -0.25
/// in 60% (the rest normal), multiples of 1/4 (a few dozen values of both signs), 1 or -1 in 70%
/// among their neighbours a few ulps away (keys that tie in their top 16 bits and differ in
/// their low 16), and normal columns, in every 32-column slab. A lane of a split selection's
/// kernel for B up to 256 that holds more than `SPLIT_FOLD` (psg-codegen) keys left folds every
/// word of its parts to find whether they tie.
fn repeated_value_columns(rng: &mut Rng, b: usize, p: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; b * p];
    for c in 0..p {
        for r in 0..b {
            let x = rng.normal() as f32;
            let u = rng.below(10);
            v[r * p + c] = match c % 6 {
                0 => {
                    if u < 9 {
                        0.0
                    } else {
                        x
                    }
                }
                1 => {
                    if u < 6 {
                        -0.25
                    } else {
                        x
                    }
                }
                2 => (x * 4.0).round() / 4.0,
                3 => {
                    if u < 7 {
                        f32::from_bits(1.0f32.to_bits() + rng.below(3) as u32)
                    } else {
                        x
                    }
                }
                4 => {
                    if u < 7 {
                        f32::from_bits((-1.0f32).to_bits() + rng.below(3) as u32)
                    } else {
                        x
                    }
                }
                _ => x,
            };
        }
    }
    v
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_selections_of_repeated_values_match_cpu() {
    same_bit_sliced_selections(0x5eed_0012, repeated_value_columns);
    // The clipped median's keys (x * factor, split in f32 and in bf16): the zeros still tie.
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0013);
    for dtype in [DType::F32, DType::BF16] {
        for b in [129usize, 200, 256] {
            let p = 20_000;
            let g = Pair::new(
                &repeated_value_columns(&mut rng, b, p),
                &[b, p],
                dtype,
                &dev,
            );
            let factors = ops::flat_clip_factors(&[&g.cpu], 1.0).unwrap();
            same_clipped(&g, &factors, &dev, dtype.name());
        }
    }
}

/// The columns of [`repeated_value_columns`], but in every third 32-column slab every column is
/// 90% zeros, and in every fifth one value throughout (+0, -0 or 1.5): blocks where the digit
/// passes find some columns' buckets one repeated key, and blocks where they find every one.
fn tied_slab_columns(rng: &mut Rng, b: usize, p: usize) -> Vec<f32> {
    let mut v = repeated_value_columns(rng, b, p);
    for c in 0..p {
        let slab = c / 32;
        for r in 0..b {
            if slab % 3 == 0 && rng.below(10) < 9 {
                v[r * p + c] = 0.0;
            } else if slab % 5 == 1 {
                v[r * p + c] = [0.0, -0.0, 1.5][c % 3];
            }
        }
    }
    v
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_digit_selections_of_repeated_values_match_cpu() {
    // The digit passes: B above 256, and f64 keys at any B.
    let shapes: [(DType, &[usize]); 3] = [
        (DType::F32, &[257, 512, 1000, 1024]),
        (DType::BF16, &[300, 1024]),
        (DType::F64, &[100, 256, 700]),
    ];
    same_selections_of(0x5eed_0014, tied_slab_columns, &shapes, 3000, true);
}

/// Columns of zeros and subnormals, where a MAD's distances are +0 or subnormal (keys with a
/// clear exponent, whose selection never stops early where they tie): 90% +0 and the rest
/// normal (MAD 0); 40% +0 and the rest subnormals of either sign (a subnormal MAD); 55% +0
/// among subnormals and normals (MAD 0, subnormal distances beside it); a lone subnormal among
/// zeros; and normal columns, in every 32-column slab.
fn zero_and_subnormal_columns(rng: &mut Rng, b: usize, p: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; b * p];
    for c in 0..p {
        let lone = rng.below(b);
        for r in 0..b {
            let x = rng.normal() as f32;
            let u = rng.below(20);
            // Subnormals that bf16 holds too (its 7 bits of significand), and low bits in f32.
            let sub = f32::from_bits((((1 + rng.below(127)) << 16) + rng.below(3000)) as u32);
            let sub = if rng.below(2) == 0 { sub } else { -sub };
            v[r * p + c] = match c % 5 {
                0 => [0.0, x][usize::from(u >= 18)],
                1 => [0.0, sub][usize::from(u >= 8)],
                2 => [0.0, sub, x][usize::from(u >= 11) + usize::from(u >= 16)],
                3 => [0.0, sub.abs()][usize::from(r == lone)],
                _ => x,
            };
        }
    }
    v
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_selections_of_zeros_and_subnormals_match_cpu() {
    same_bit_sliced_selections(0x5eed_0016, zero_and_subnormal_columns);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_selections_with_nothing_above_match_cpu() {
    // Whole columns sorted (B up to 64) and bit-sliced ones: in the slabs of one value
    // throughout (and in some 90%-zero columns) the selected value is the column's greatest,
    // so the next value is none, and the block settles it without a pass.
    let bs: &[usize] = &[20, 33, 64, 100, 256];
    let shapes = [(DType::F32, bs), (DType::BF16, bs)];
    same_selections_of(0x5eed_0015, tied_slab_columns, &shapes, 3000, true);
}

/// Normal columns, most of them clean; in one column of most 32-column slabs, one special value
/// at a random sample: a NaN, a NaN with the sign bit set, an infinity, or -3e38 (in f32 and
/// bf16 its key shares the lowest digit with the negative NaNs). The tiled kernel counts an order
/// statistic's NaNs only in blocks whose first digit pass saw a key in the lowest or highest
/// digit, so this mixes blocks that skip the count, count and find nothing, and find one.
fn lone_specials(rng: &mut Rng, b: usize, p: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..b * p).map(|_| rng.normal() as f32).collect();
    for slab in 0..p.div_ceil(32) {
        let c = slab * 32 + (slab * 7) % 32;
        if slab % 3 == 0 || c >= p {
            continue;
        }
        v[rng.below(b) * p + c] = match slab % 5 {
            0 => f32::NAN,
            1 => -f32::NAN,
            2 => f32::INFINITY,
            3 => -3e38,
            _ => f32::from_bits(0x7f80_0001),
        };
    }
    v
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_order_statistics_find_a_lone_nan() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0008);
    for dtype in [DType::F32, DType::BF16, DType::F64] {
        for b in [20usize, 33, 64, 129, 256, 1000] {
            let p = 40_000;
            let g = Pair::new(&lone_specials(&mut rng, b, p), &[b, p], dtype, &dev);
            g.same("median_low", ops::median_low);
            g.same("kth b/3", |t| ops::kth(t, b / 3));
            g.same("median", ops::median);
            g.same("trim mean", |t| {
                Ok(ops::outlier_mean(t, ops::OutlierRule::TrimFraction { alpha: 0.1 })?.mean)
            });
            // The NaNs are there to be found.
            let low = host(&ops::median_low(&g.gpu).unwrap());
            let nans = low.iter().filter(|x| x.is_nan()).count();
            assert!(nans > 100, "{dtype} B = {b}: {nans} NaN medians");
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_clipping_matches_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0003);
    for &b in &[1usize, 2, 33, 256] {
        for &p in &[31usize, 1_000_003] {
            let g1 = Pair::new(&rng.gradients(b * p), &[b, p], DType::F32, &dev);
            let g2 = Pair::new(&rng.gradients(b * 7), &[b, 7], DType::F32, &dev);
            same_norms(&[&g1, &g2], "f32");
            device_factors_as_host(&[&g1, &g2]);
            let factors = ops::flat_clip_factors(&[&g1.cpu, &g2.cpu], 1.0).unwrap();
            same_clipped(&g1, &factors, &dev, "f32");
        }
    }
    // Norms whose squares leave f32's range (sums of squares are f64): huge samples are clipped,
    // not zeroed; tiny ones keep their norm. Vectors whose f32 sum of squares leaves
    // [2^-100, 2^100] take the f64 path; 31 columns load one element at a time.
    for dtype in [DType::F32, DType::BF16] {
        for &p in &[1000usize, 31] {
            let mut v = rng.gradients(6 * p);
            v[..p].fill(2e19);
            v[p..2 * p].fill(0.0);
            v[p] = 3e19;
            v[2 * p..3 * p].fill(1e-30);
            v[3 * p + 7] = 1e25;
            v[4 * p..5 * p].fill(0.0);
            let g = Pair::new(&v, &[6, p], dtype, &dev);
            let cpu = host(&ops::per_sample_norms(&[&g.cpu]).unwrap());
            let gpu = host(&ops::per_sample_norms(&[&g.gpu]).unwrap());
            for (d, c) in gpu.iter().zip(&cpu) {
                assert!(
                    c.is_finite() && (d - c).abs() <= 1e-5 * c,
                    "{dtype} P = {p}: GPU {gpu:?}, CPU {cpu:?}"
                );
            }
            assert!(cpu[0] > 1e20 && cpu[2] > 0.0 && cpu[4] == 0.0, "{cpu:?}");
            let f = host(&ops::flat_clip_factors(&[&g.gpu], 1.0).unwrap());
            assert!(
                f[0] > 0.0 && f[1] > 0.0 && f[3] > 0.0 && f[2] == 1.0,
                "{f:?}"
            );
        }
    }
    // NaN and infinite norms: factor NaN (never 1: the sample would enter unclipped) and 0, as
    // on the host; then the device's flat factors of a set with such samples.
    for dtype in [DType::F32, DType::F64] {
        let wide = common::tensors::host;
        let specials = [f32::NAN, f32::INFINITY, 0.0, 1e-7, 0.5, 1.0, 2.0, 1e30];
        let norms = common::tensors::of_dtype(&specials, &[specials.len()], dtype, &Device::Cpu);
        let on_host = wide(&ops::clip_factors(&norms, 1.0).unwrap());
        let on_device = wide(&ops::clip_factors(&norms.to_device(&dev).unwrap(), 1.0).unwrap());
        assert!(on_host[0].is_nan() && on_host[1] == 0.0, "{on_host:?}");
        for (d, h) in on_device.iter().zip(&on_host) {
            assert!(
                d.to_bits() == h.to_bits() || (d.is_nan() && h.is_nan()),
                "{dtype} factors: device {on_device:?}, host {on_host:?}"
            );
        }
        let mut v = rng.gradients(4 * 9);
        v[2] = f32::NAN;
        v[9 + 4] = f32::INFINITY;
        let g = Pair::new(&v, &[4, 9], dtype, &dev);
        let factors = ops::flat_clip_factors(&[&g.gpu], 1.0).unwrap();
        let f = host(&factors);
        assert!(f[0].is_nan() && f[1] == 0.0, "{dtype}: {f:?}");
        let sums = host(&ops::clipped_sum(&g.gpu, &factors).unwrap());
        assert!(sums.iter().all(|x| x.is_nan()), "{dtype}: {sums:?}");
    }
    // f64: norms and factors in f64 on the device too.
    for &b in &[1usize, 33] {
        let g1 = Pair::new(&rng.gradients(b * 1000), &[b, 1000], DType::F64, &dev);
        let g2 = Pair::new(&rng.gradients(b * 5), &[b, 5], DType::BF16, &dev);
        device_factors_as_host(&[&g1]);
        device_factors_as_host(&[&g2, &g2]);
    }
    // The tile is filled with the products x * factor: rows that pass through registers get the
    // factor there, rows past the prefetched ones (16-byte rows, B above 256: copied straight to
    // shared memory) in the slab's first pass, elements loaded one by one (rows not 16-byte
    // aligned, above) as they are loaded. Both kernels (B up to 384 and above), f32 and f64.
    for (dtype, bs) in [(DType::F32, [300usize, 600]), (DType::F64, [33, 300])] {
        for b in bs {
            let g = Pair::new(&rng.gradients(b * 4000), &[b, 4000], dtype, &dev);
            let factors = ops::flat_clip_factors(&[&g.cpu], 1.0).unwrap();
            assert!(host(&factors).iter().all(|&f| f < 1.0));
            same_clipped(&g, &factors, &dev, dtype.name());
        }
    }
    // bf16 (its tile holds the f32 products x * factor), 16-byte rows and not.
    for &b in &[2usize, 33, 256] {
        for &p in &[31usize, 40_000] {
            let g = Pair::new(&rng.gradients(b * p), &[b, p], DType::BF16, &dev);
            let factors = ops::flat_clip_factors(&[&g.cpu], 1.0).unwrap();
            same_clipped(&g, &factors, &dev, "bf16");
        }
    }
}

/// The device computes norms and clip factors without a host round trip, with the host's
/// arithmetic: from its own per-tensor sums of squares (per-layer norms of each tensor), the flat
/// norms are `sqrt` of their f64 sum, and the factors `min(1, C / (norm + 1e-6))`, bit for bit.
fn device_factors_as_host(tensors: &[&Pair]) {
    use common::tensors::assert_same_bits;
    let gpu: Vec<&Tensor> = tensors.iter().map(|t| &t.gpu).collect();
    // A layer's norm is the flat norm of that tensor alone.
    for (t, layer) in gpu.iter().zip(ops::per_layer_norms(&gpu).unwrap()) {
        assert_same_bits("layer norm", &ops::per_sample_norms(&[t]).unwrap(), &layer);
    }
    let norms = ops::per_sample_norms(&gpu).unwrap();
    assert_eq!(norms.dtype(), gpu[0].dtype().accumulator());
    assert!(!norms.device().is_cpu());
    let host_norms = norms.to_device(&Device::Cpu).unwrap();
    for c in [0.5, 1.0, 3.0] {
        let want = ops::clip_factors(&host_norms, c).unwrap();
        let what = format!("factors, C = {c}");
        assert_same_bits(&what, &ops::clip_factors(&norms, c).unwrap(), &want);
        assert_same_bits(&what, &ops::flat_clip_factors(&gpu, c).unwrap(), &want);
    }
}

/// Per-sample norms over `tensors` agree within 1e-5 (relative; the GPU sums in another order).
fn same_norms(tensors: &[&Pair], what: &str) {
    let cpu: Vec<&Tensor> = tensors.iter().map(|t| &t.cpu).collect();
    let gpu: Vec<&Tensor> = tensors.iter().map(|t| &t.gpu).collect();
    let norms_cpu = host(&ops::per_sample_norms(&cpu).unwrap());
    let norms_gpu = host(&ops::per_sample_norms(&gpu).unwrap());
    assert_eq!(norms_gpu.len(), norms_cpu.len(), "{what}");
    for (g, c) in norms_gpu.iter().zip(&norms_cpu) {
        assert!(
            (g - c).abs() <= 1e-5 * c.max(1.0),
            "{what} norm: GPU {g}, CPU {c}"
        );
    }
}

/// The clipped aggregates of `g`, given the same factors on both devices, are bit-identical.
fn same_clipped(g: &Pair, factors: &Tensor, dev: &Device, what: &str) {
    let factors_gpu = factors.to_device(dev).unwrap();
    let pick = |t: &Tensor| {
        if t.device().is_cpu() {
            factors
        } else {
            &factors_gpu
        }
    };
    g.same(&format!("{what} clipped sum"), |t| {
        ops::clipped_sum(t, pick(t))
    });
    g.same(&format!("{what} clipped mean"), |t| {
        ops::clipped_mean(t, pick(t), ops::Denominator::Expected(100.0))
    });
    g.same(&format!("{what} clipped median"), |t| {
        ops::clipped_median(t, pick(t))
    });
}

/// Dropping the samples with a non-finite value keeps `kept` of them, identical on both devices,
/// and the error policy names the first bad (sample, coordinate).
fn same_nonfinite_policy(g: &Pair, what: &str, kept: usize, first: (usize, usize)) {
    let drop = |t: &Tensor| {
        ops::apply_nonfinite_policy(&[t], ops::NonFinite::DropSamples)
            .unwrap()
            .unwrap()
    };
    let (cpu, gpu) = (drop(&g.cpu), drop(&g.gpu));
    assert_eq!(gpu[0].shape()[0], kept, "{what}");
    assert_identical(&format!("{what} dropped"), &host(&gpu[0]), &host(&cpu[0]));
    let err = ops::apply_nonfinite_policy(&[&g.gpu], ops::NonFinite::Error).unwrap_err();
    assert!(
        matches!(
            err,
            psg_runtime::Error::NonFinite { tensor: 0, sample, coordinate }
                if (sample, coordinate) == first
        ),
        "{what}: {err}"
    );
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_row_scan_with_vector_loads_matches_cpu() {
    // P = 4096: every row 16-byte aligned in every dtype, so the row scan loads vectors.
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0005);
    let (b, p) = (40, 4096);
    for dtype in [DType::F32, DType::BF16, DType::F16, DType::F64] {
        let clean = Pair::new(&rng.gradients(b * p), &[b, p], dtype, &dev);
        same_norms(&[&clean], &dtype.to_string());
        let mut v = rng.gradients(b * p);
        // Row 5: two non-finite values; the first is reported.
        v[5 * p + 4000] = f32::NAN;
        v[5 * p + 2050] = f32::NEG_INFINITY;
        // Row 9: a square that overflows an f32 sum before the NaN (the sum is infinite early;
        // f16 cannot hold 1e30, and f64 sums do not overflow: large finite values there).
        let big = if dtype == DType::F16 { 6e4 } else { 1e30 };
        v[9 * p + 10] = big;
        v[9 * p + 3000] = f32::NAN;
        // Row 11: only an overflowing square: every value is finite.
        v[11 * p + 7] = big;
        let g = Pair::new(&v, &[b, p], dtype, &dev);
        same_nonfinite_policy(&g, &dtype.to_string(), b - 2, (5, 2050));
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_nonfinite_policy_matches_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0004);
    let (b, p) = (300, 4099);
    let mut v = rng.gradients(b * p);
    v[17 * p + 4000] = f32::NAN;
    v[250 * p + 3] = f32::NEG_INFINITY;
    let g = Pair::new(&v, &[b, p], DType::F32, &dev);
    same_nonfinite_policy(&g, "f32", 298, (17, 4000));
}

/// The bf16 prelude's software rounding (for GPUs before sm_80) against the hardware's
/// `cvt.rn.bf16.f32`, for all 2^32 f32 bit patterns: equal, and NaN where the input is NaN.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_software_bf16_rounding_matches_the_hardware_on_every_f32() {
    let Some(d) = common::cuda() else { return };
    if d.compute_capability() < (8, 0) {
        eprintln!("cvt.rn.bf16.f32 needs sm_80: nothing to compare the software rounding with");
        return;
    }
    let source = format!(
        "{}{}",
        psg_codegen::cuda::prelude(psg_codegen::DType::BF16),
        r#"
extern "C" __global__ void bf16_rne_check(unsigned int* out) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < (1ull << 32); i += stride) {
        const unsigned int u = (unsigned int)i;
        const float v = __uint_as_float(u);
        unsigned short hw;
        asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(hw) : "f"(v));
        const unsigned short sw = psg_bf16_rne(v);
        const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
        if (nan) atomicAdd(&out[2], 1u);
        if (nan ? (sw & 0x7fffu) <= 0x7f80u : sw != hw) {
            atomicAdd(&out[0], 1u);
            atomicMax(&out[1], u);
        }
    }
}
"#
    );
    let k = psg_runtime::KernelSource::new_owned("bf16_rne_check", source);
    // Mismatches, the largest mismatching input, NaN inputs seen (proof that every input ran).
    let out = Tensor::zeros(DType::F32, &[3], &Device::Cuda(d.clone())).unwrap();
    let cfg = psg_runtime::LaunchConfig {
        grid: (132 * 16, 1, 1),
        block: (256, 1, 1),
        shared_bytes: 0,
    };
    d.launch(
        &k,
        cfg,
        &[psg_runtime::KernelArg::Ptr(out.cuda_ptr().unwrap())],
    )
    .unwrap();
    let got: Vec<u32> = out
        .to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect();
    assert_eq!(
        got[0], 0,
        "{} inputs round differently, e.g. f32 bits {:#010x}",
        got[0], got[1]
    );
    assert_eq!(got[2], 2 * ((1 << 23) - 1), "NaN inputs seen");
}

/// Distances to per-column values other than the median, selected at other ranks: the second
/// least distance to the lower quintile and the 90% quantile of those distances, and the lower
/// median of the distances to the median shifted by `s` (a value between the samples).
#[batch_reduce(crate = "psg_runtime")]
fn distance_ranks(g: Batch, s: f64) -> (f32, f32, f32) {
    let q = g.quantile(0.2);
    let m = g.median() + s;
    (
        g.map(|x| (x - q).abs()).kth(1.0),
        g.map(|x| (x - m).abs()).median_low(),
        g.map(|x| (x - q).abs()).quantile(0.9),
    )
}

/// Distances to the median shifted by `s`, a value past every sample of most columns, so that
/// along the sorted list they only rise (`s` below the samples) or only fall (above), then the
/// padding: the median of those distances is merged off the median's sorted lists, the least
/// but one sorted.
#[batch_reduce(crate = "psg_runtime")]
fn shifted_distances(g: Batch, s: f64) -> (f32, f32) {
    let m = g.median() + s;
    (
        g.map(|x| (x - m).abs()).median(),
        g.map(|x| (x - m).abs()).kth(1.0),
    )
}

/// Columns for the distances' selections at small B, by kind: gradient-like; ties (eighths);
/// 90% zeros of either sign; all positive; subnormal; huge (`x - m` overflows to inf); one value
/// repeated; two values. In every fifth block of 32 columns, column 7 holds +inf in every sample
/// (its median is inf, its distances NaN); in every fifth from the third, column 11 a NaN.
fn distance_columns(rng: &mut Rng, b: usize, p: usize) -> Vec<f32> {
    let dense = rng.gradients(b * p);
    (0..b * p)
        .map(|i| {
            let (r, c, x) = (i / p, i % p, dense[i]);
            let (block, within) = (c / 32, c % 32);
            if block % 5 == 4 && within == 7 {
                return f32::INFINITY;
            }
            if block % 5 == 2 && within == 11 && r == c % b {
                return f32::NAN;
            }
            match c % 8 {
                1 => (x * 8.0).round() / 8.0,
                2 if rng.below(10) != 0 => {
                    if rng.below(2) == 0 {
                        0.0
                    } else {
                        -0.0
                    }
                }
                3 => x.abs() + 1.0,
                4 => x * 1e-39,
                5 => x * 3e37,
                6 => 0.375,
                7 => {
                    if r % 2 == 0 {
                        -1.5
                    } else {
                        2.0
                    }
                }
                _ => x,
            }
        })
        .collect()
}

/// Selections on the distances `|x - m|` to a per-column `m` in the kernel for B up to 64 (the
/// MAD's, and others at other ranks) against the CPU, bit for bit, at odd and even B, with
/// ties, zeros of either sign, subnormal and overflowing distances, an infinite median, a NaN and
/// a median shifted past the samples, in every dtype.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_distances_of_small_batches_match_cpu() {
    // The shifted distances' kernel for small B merges its first selection.
    let small = shifted_distances::DEF
        .tiled
        .as_ref()
        .and_then(|t| t.small.as_ref());
    assert!(small.is_some_and(|k| k.iter().all(|k| k.source.contains("if (merged) {"))));
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0012);
    for dtype in DType::ALL {
        for b in [1usize, 2, 3, 4, 5, 8, 17, 31, 32, 33, 48, 63, 64] {
            let p = 32 * 10 + 5;
            let g = Pair::new(&distance_columns(&mut rng, b, p), &[b, p], dtype, &dev);
            g.same("mad mean", |t| {
                Ok(ops::outlier_mean(t, ops::OutlierRule::Mad { k: 2.0 })?.mean)
            });
            g.same("mad kept", |t| {
                Ok(ops::outlier_mean(t, ops::OutlierRule::Mad { k: 2.0 })?.kept)
            });
            g.same("mad clean", |t| {
                ops::remove_outliers(t, ops::OutlierRule::Mad { k: 2.0 }, ops::Removed::NaN)
            });
            for s in [-1e3, 1e3] {
                let outputs = |t: &Tensor| shifted_distances(t, s);
                let (want, got) = (outputs(&g.cpu).unwrap(), outputs(&g.gpu).unwrap());
                for (i, (w, o)) in [want.0, want.1]
                    .iter()
                    .zip([got.0, got.1].iter())
                    .enumerate()
                {
                    assert_identical(
                        &format!("shifted_distances s = {s}, output {i}, {}", g.label),
                        &host(o),
                        &host(w),
                    );
                }
            }
            for s in [0.0, 0.25] {
                let outputs = |t: &Tensor| distance_ranks(t, s);
                let (want, got) = (outputs(&g.cpu).unwrap(), outputs(&g.gpu).unwrap());
                for (i, (w, o)) in [want.0, want.1, want.2]
                    .iter()
                    .zip([got.0, got.1, got.2].iter())
                    .enumerate()
                {
                    assert_identical(
                        &format!("distance_ranks s = {s}, output {i}, {}", g.label),
                        &host(o),
                        &host(w),
                    );
                }
            }
        }
    }
}
