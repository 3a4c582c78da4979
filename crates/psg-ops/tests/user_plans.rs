//! Reductions a user might write with `#[batch_reduce]`, checked two ways: on the CPU against
//! plain references (sorts and loops, in f32 as the plans compute; proptest over columns full of
//! ties, +-0, subnormals, infinities and NaN), and on CUDA against the CPU backend, bit for bit.
//! The built-ins' own tests (`cpu_reference.rs`, `gpu.rs`) check a fixed set of plans in depth;
//! these plans combine the same parts the way a researcher's definitions would: selections on
//! keys computed from a streaming statistic, from parameters or from a per-sample input; a chain
//! of three selections; two quantiles of one column used inside a `map` and a filter; selections
//! of filtered columns (a count that differs by column); the median of signs; ranks; a
//! per-sample output after a selection.
//!
//! On the GPU each plan runs at the B where the kernels change their way (whole columns a
//! thread, 4 or 8 parts a column, the tile's bit-sliced selections up to 256, digit passes
//! above, a thread a column past shared memory), on both sides of those edges and at B = 0 and
//! P = 0, in f32 and bf16 (f16 and f64 at fewer B), on the nasty values in a partial slab, and
//! on many tiles of columns of gradient-like values, mostly zeros, one value among zeros, ties
//! at every rank, and the nasty values again (vector loads).
//!
//! The GPU tests are `#[ignore]`d where there is no GPU; on a GPU host: `cargo test --
//! --include-ignored`, with `PSG_REQUIRE_GPU=1` to make a missing GPU a failure.
// `!(a > b)` is how a rule keeps NaN; written as the user would.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

mod common;

use common::tensors::{as_f32, host, of_dtype};
use common::{assert_close, assert_identical, column, reference as r, same_bits, Rng};
use proptest::prelude::*;
use psg_macros::batch_reduce;
use psg_runtime::{DType, Device, Result, Tensor};

/// The README's robust mean (the values within `k` MADs of the median, kept with `<=` where the
/// built-in removes with `>`; an `f32` parameter), the MAD, and a third selection in the chain:
/// the median of the distances' own distances to the MAD.
#[batch_reduce(crate = "psg_runtime")]
fn robust_stats(g: Batch, k: f32) -> (f32, f32, f32) {
    let med = g.median();
    let d = g.map(|x| (x - med).abs());
    let mad = d.median();
    (
        g.filter(|x| (x - med).abs() <= k * mad).mean(),
        mad,
        d.map(|y| (y - mad).abs()).median(),
    )
}

/// Two quantiles of one column, their spread, the mean of the values clamped to them
/// (winsorized) and how many lie strictly inside.
#[batch_reduce(crate = "psg_runtime")]
fn quantile_band(g: Batch) -> (f32, f32, f32, f32, f32) {
    let (lo, hi) = (g.quantile(0.05), g.quantile(0.75));
    (
        lo,
        hi,
        hi - lo,
        g.map(|x| x.clamp(lo, hi)).mean(),
        g.filter(|x| x > lo && x < hi).count(),
    )
}

/// Selections on computed keys: from streaming statistics (the median and lower median of the
/// distances to the mean, the largest distance, the median of the z-scores) and from parameters,
/// keys that are not absolute values (an affine map whose order is reversed when `a < 0`, the
/// k-th smallest of the negated column, a quantile of the squares, where x and -x tie).
#[batch_reduce(crate = "psg_runtime")]
fn computed_keys(g: Batch, a: f64, c: f64, k: f64) -> (f32, f32, f32, f32, f32, f32, f32) {
    let (mu, sigma) = (g.mean(), g.std());
    let d = g.map(|x| (x - mu).abs());
    (
        d.median(),
        d.median_low(),
        d.max(),
        g.map(|x| (x - mu) / sigma).median(),
        g.map(|x| a * x + c).median(),
        g.map(|x| -x).kth(k),
        g.map(|x| x * x).quantile(0.6),
    )
}

/// The median and MAD of the column scaled by a per-sample input (clip factors, say).
#[batch_reduce(crate = "psg_runtime")]
fn weighted_mad(g: Batch, f: PerSample) -> (f32, f32) {
    let c = g.zip(f).map(|x, s| x * s);
    let m = c.median();
    (m, c.map(|x| (x - m).abs()).median())
}

/// Selections of filtered columns, whose counts differ by column: the median of the positive
/// values and their count, a quantile of the values within a band, the lower median of the
/// values not above the mean; and of signs: the median of the signs (the order of -1, 0, +1 and
/// NaN) and the median of the values on the majority's side of zero.
#[batch_reduce(crate = "psg_runtime")]
fn filtered_selections(g: Batch, band: f64) -> (f32, f32, f32, f32, f32, f32) {
    let mu = g.mean();
    let vote = g.sign().sum();
    let pos = g.filter(|x| x > 0.0);
    (
        pos.median(),
        pos.count(),
        g.filter(|x| x.abs() <= band).quantile(0.3),
        g.filter(|x| !(x > mu)).median_low(),
        g.sign().median(),
        g.filter(|x| x * vote > 0.0).median(),
    )
}

/// The values minus their column's median: a per-sample output after a selection.
#[batch_reduce(crate = "psg_runtime")]
fn median_centred(g: Batch) -> Batch {
    let m = g.median();
    g.map(|x| x - m)
}

/// The middle half by rank, the rest zero (ties split by sample index).
#[batch_reduce(crate = "psg_runtime")]
fn middle_half(g: Batch) -> Batch {
    let n = g.count();
    g.with_rank().map(|x, r| {
        if r < n / 4.0 || r >= n - n / 4.0 {
            0.0
        } else {
            x
        }
    })
}

fn gpu() -> Option<Device> {
    common::cuda().map(Device::Cuda)
}

/// Every plan above on `g` (and the per-sample input `f`, of its accumulator type), as named
/// outputs.
fn plans(g: &Tensor, f: &Tensor, b: usize) -> Result<Vec<(&'static str, Tensor)>> {
    let (robust, mad, mad2) = robust_stats(g, 2.5)?;
    let mut out = vec![("robust mean", robust), ("mad", mad), ("mad of mad", mad2)];
    let (lo, hi, spread, wins, inside) = quantile_band(g)?;
    out.extend([
        ("quantile 0.05", lo),
        ("quantile 0.75", hi),
        ("spread", spread),
        ("winsorized mean", wins),
        ("inside", inside),
    ]);
    let (med, low, max, z, affine, neg, squares) = computed_keys(g, -0.75, 0.125, (b / 3) as f64)?;
    out.extend([
        ("distances median", med),
        ("distances median_low", low),
        ("distances max", max),
        ("z-score median", z),
        ("affine median", affine),
        ("kth of -x", neg),
        ("quantile of squares", squares),
    ]);
    let (wm, wmad) = weighted_mad(g, f)?;
    out.extend([("weighted median", wm), ("weighted mad", wmad)]);
    let (pos, npos, band, low, sign_med, side) = filtered_selections(g, 0.5)?;
    out.extend([
        ("positive median", pos),
        ("positive count", npos),
        ("band quantile", band),
        ("median_low not above the mean", low),
        ("sign median", sign_med),
        ("majority side median", side),
    ]);
    out.push(("median centred", median_centred(g)?));
    let (s0, s1, s2, s3, s4, s5) = rust_spellings(g)?;
    out.extend([
        ("spellings: std", s0),
        ("spellings: min with 1e300", s1),
        ("spellings: clamp to MIN, MAX", s2),
        ("spellings: EPSILON", s3),
        ("spellings: max with -1e39", s4),
        ("spellings: booleans ==", s5),
    ]);
    if b <= 300 {
        // Stable ranks cost O(B^2) a column on the CPU.
        out.push(("middle half", middle_half(g)?));
    }
    Ok(out)
}

/// Every plan on one `g[b, p]` of `values`, both devices, identical results required.
fn same_plans(dev: &Device, values: &[f32], b: usize, p: usize, dtype: DType, what: &str) {
    let factors: Vec<f32> = (0..b).map(|i| 1.0 / (1.0 + (i % 7) as f32)).collect();
    let run = |dev: &Device| {
        let g = of_dtype(values, &[b, p], dtype, dev);
        plans(&g, &of_dtype(&factors, &[b], dtype.accumulator(), dev), b).unwrap()
    };
    let (want, got) = (run(&Device::Cpu), run(dev));
    assert_eq!(got.len(), want.len());
    for ((name, got), (_, want)) in got.iter().zip(&want) {
        let label = format!("{name}, {dtype} g[{b}, {p}], {what}");
        assert_eq!((got.dtype(), got.shape()), (dtype, want.shape()), "{label}");
        // Bit for bit (as f64, which holds every dtype exactly), but any NaN equals any NaN
        // (the GPU's NaN has another payload).
        let (got, want) = (host(got), host(want));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let same = (g.is_nan() && w.is_nan()) || g.to_bits() == w.to_bits();
            assert!(same, "{label}: element {i}: got {g:e}, want {w:e}");
        }
    }
}

/// Columns by kind, in turn: gradient-like; 90% zeros of either sign, the rest gradient-like;
/// all zeros but one value; gradient-like rounded to eighths (ties at every rank); the nasty
/// values (ties, +-0, subnormals, inf, NaN).
fn mixed(rng: &mut Rng, b: usize, p: usize) -> Vec<f32> {
    let dense = rng.gradients(b * p);
    let nasty = rng.nasty(b * p, true);
    (0..b * p)
        .map(|i| {
            let (r, c, x) = (i / p, i % p, dense[i]);
            let zero = if rng.below(2) == 0 { 0.0 } else { -0.0 };
            match c % 5 {
                1 if rng.below(10) != 0 => zero,
                2 if r != c % b => zero,
                3 => (x * 8.0).round() / 8.0,
                4 => nasty[i],
                _ => x,
            }
        })
        .collect()
}

/// Every plan on nasty values in a partial slab, on mixed columns in many tiles, and on no
/// columns, at each B; a seed for each dtype.
fn same_plans_at(dtype: DType, batches: &[usize], seed: u64) {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(seed);
    for &b in batches {
        // A partial slab of nasty values; several tiles, the last partial, 16-byte rows.
        same_plans(&dev, &rng.nasty(b * 37, true), b, 37, dtype, "nasty");
        let p = 4_160;
        same_plans(&dev, &mixed(&mut rng, b, p), b, p, dtype, "mixed");
        if b <= 3 {
            same_plans(&dev, &[], b, 0, dtype, "no columns");
        }
    }
}

/// Rust spellings a user may write: a qualified `Batch`, a non-ASCII and a raw `let` name (`r#hi`
/// is `hi`), float-suffixed integer tokens (`7f32 / 3.5_f64` is 2), the float constants, a
/// literal that is infinite in f32 (it used to generate `inf.0_f32`), and booleans compared with
/// `==`.
#[batch_reduce(crate = "psg_runtime")]
// `psg::prelude::Batch` as a user's crate would write it: the macro reads a parameter's type by
// its last segment and leaves no type of the signature in the code it generates.
fn rust_spellings(g: psg::prelude::Batch) -> (f32, f32, f32, f32, f32, f32) {
    let écart = g.std();
    let r#hi = g.map(|x| x.min(1e300)).max();
    (
        écart * (7f32 / 3.5_f64),
        hi,
        g.map(|x| x.clamp(f32::MIN, f32::MAX)).sum(),
        f32::EPSILON + f64::MIN_POSITIVE,
        g.map(|x| x.max(-1e39)).min(),
        g.filter(|x| (x > 0.0) == (x < 5.0)).count(),
    )
}

#[test]
fn rust_spellings_read_as_rust() {
    let outputs = |g: Tensor| -> Vec<f64> {
        let (a, b, c, d, e, f) = rust_spellings(&g).unwrap();
        [a, b, c, d, e, f]
            .iter()
            .map(|t| match t.dtype() {
                DType::F64 => t.to_vec::<f64>().unwrap()[0],
                _ => f64::from(t.to_vec::<f32>().unwrap()[0]),
            })
            .collect()
    };
    // f32: the literals 1e300 and -1e39 are infinite, as `1e300_f64 as f32` is.
    let f32_in = [1.0f32, 2.0, -3.0, 1e30];
    let out = outputs(Tensor::from_slice(&f32_in, &[4, 1], &Device::Cpu).unwrap());
    let std = {
        let m = f32_in.iter().sum::<f32>() / 4.0;
        (f32_in.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / 3.0).sqrt()
    };
    assert_eq!(out[0], f64::from(std * 2.0), "{out:?}");
    assert_eq!(out[1], 1e30_f32 as f64);
    assert_eq!(out[2], f64::from(1.0f32 + 2.0 + -3.0 + 1e30));
    assert_eq!(out[3], f64::from(f32::EPSILON));
    assert_eq!(out[4], -3.0);
    // 1 and 2 lie in (0, 5); -3 and 1e30 on one side each.
    assert_eq!(out[5], 2.0);
    // f64: the same literals are finite.
    let f64_in = [1.0f64, 2.0, -3.0, 1e301];
    let out = outputs(Tensor::from_slice(&f64_in, &[4, 1], &Device::Cpu).unwrap());
    assert_eq!(out[1], 1e300);
    assert_eq!(out[3], f64::from(f32::EPSILON) + f64::MIN_POSITIVE);
    assert_eq!(out[4], -3.0);
    // The generated CUDA compiles (the literal is psg_inf(), the names ASCII); where NVRTC is
    // missing that is a failure if PSG_REQUIRE_NVRTC=1 (CI), else said and skipped.
    let nvrtc = psg_runtime::nvrtc_status();
    if let Err(e) = &nvrtc {
        assert!(
            std::env::var("PSG_REQUIRE_NVRTC").as_deref() != Ok("1"),
            "PSG_REQUIRE_NVRTC=1 but NVRTC is unusable: {e}"
        );
        eprintln!("skipped the NVRTC compile (not evidence): {e}");
    }
    if nvrtc.is_ok() {
        let def = &rust_spellings::DEF;
        let tiled = def.tiled.iter().flat_map(|t| t.cuda.iter());
        for k in def.cuda.iter().chain(tiled) {
            psg_runtime::compile_cubin(&k.source, &k.name, (9, 0))
                .unwrap_or_else(|e| panic!("{}: {e}", k.name));
        }
    }
}

/// No samples (a Poisson-sampled step may be empty: NaN, counts of 0); whole columns a thread up
/// to 64 (more for 16-bit input), 4 or 8 parts a column to 128, bit-sliced to 256, digit passes
/// above, a thread a column past shared memory.
const BATCHES: [usize; 13] = [0, 1, 3, 64, 65, 97, 128, 129, 256, 257, 513, 1023, 2100];

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_user_reductions_match_cpu_f32() {
    same_plans_at(DType::F32, &BATCHES, 0x5eed_0031);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_user_reductions_match_cpu_bf16() {
    same_plans_at(DType::BF16, &BATCHES, 0x5eed_0032);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_user_reductions_match_cpu_f16() {
    same_plans_at(DType::F16, &[0, 3, 65, 256, 1023], 0x5eed_0033);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_user_reductions_match_cpu_f64() {
    same_plans_at(DType::F64, &[0, 3, 65, 256, 1023], 0x5eed_0034);
}

/// Ranks on the GPU put every NaN after +inf whatever its sign bit, as on the CPU, in each kernel
/// that computes ranks (B from a thread's whole column to the digit passes' sizes).
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_ranks_put_nans_of_either_sign_last() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0035);
    for b in [3, 64, 65, 256, 257, 1023] {
        let p = 70;
        let mut values = rng.nasty(b * p, true);
        for (i, v) in values.iter_mut().enumerate() {
            if v.is_nan() && i % 2 == 0 {
                *v = f32::from_bits(0xffc0_0000);
            }
        }
        for dtype in [DType::F32, DType::BF16, DType::F64] {
            let run = |dev: &Device| host(&ranks(&of_dtype(&values, &[b, p], dtype, dev)).unwrap());
            let (want, got) = (run(&Device::Cpu), run(&dev));
            assert_eq!(got, want, "{dtype} g[{b}, {p}]");
            // The NaNs of a column hold its top ranks (exact in f32 and f64; bf16 rounds ranks
            // above 256).
            if dtype == DType::BF16 {
                continue;
            }
            for c in 0..p {
                let nans = (0..b).filter(|&r| values[r * p + c].is_nan()).count();
                for r in 0..b {
                    let top = want[r * p + c] >= (b - nans) as f64;
                    assert_eq!(top, values[r * p + c].is_nan(), "{dtype} b {b} column {c}");
                }
            }
        }
    }
}

/// A column's values, each mapped by `f`.
fn mapped(col: &[f32], f: impl Fn(f32) -> f32) -> Vec<f32> {
    col.iter().map(|&x| f(x)).collect()
}

/// A column's values that `keep` keeps.
fn kept(col: &[f32], keep: impl Fn(f32) -> bool) -> Vec<f32> {
    col.iter().copied().filter(|&x| keep(x)).collect()
}

/// Asserts one value per column, `want(c, column c)`, bit for bit (any NaN equals any NaN).
fn same_per_column(
    what: &str,
    got: &Tensor,
    g: &[f32],
    b: usize,
    p: usize,
    want: impl Fn(usize, &[f32]) -> f32,
) {
    let want: Vec<f32> = (0..p).map(|c| want(c, &column(g, b, p, c))).collect();
    assert_identical(what, &as_f32(got), &want);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every plan's selections, counts and per-sample outputs on the CPU against plain
    /// references (sorts, in f32 as the plans compute), exactly; the means to a tolerance. The
    /// mean and std that keys are computed from are the backend's own (`ops::mean`, `ops::std`),
    /// so that the references' keys are the plans' to the bit.
    #[test]
    fn user_plans_match_plain_references(
        seed: u64, b in 0usize..14, p in 1usize..4, k in 0.5f32..4.0,
    ) {
        let g = Rng::new(seed).nasty(b * p, true);
        let t = of_dtype(&g, &[b, p], DType::F32, &Device::Cpu);
        let mus = as_f32(&psg_ops::mean(&t).unwrap());
        let sigmas = as_f32(&psg_ops::std(&t, 1.0).unwrap());
        let scale: Vec<f64> = (0..p).map(|c| r::abs_sum(&column(&g, b, p, c))).collect();

        let (robust, mad, mad2) = robust_stats(&t, k).unwrap();
        let mad_of = |col: &[f32]| r::median(&mapped(col, |x| (x - r::median(col)).abs()));
        same_per_column("mad", &mad, &g, b, p, |_, col| mad_of(col));
        same_per_column("mad of mad", &mad2, &g, b, p, |_, col| {
            let (med, mad) = (r::median(col), mad_of(col));
            r::median(&mapped(col, |x| ((x - med).abs() - mad).abs()))
        });
        let want: Vec<f64> = (0..p).map(|c| {
            let col = column(&g, b, p, c);
            let (med, mad) = (r::median(&col), mad_of(&col));
            r::kept_mean(&col, |x| (x as f32 - med).abs() <= k * mad).0
        }).collect();
        assert_close("robust mean", &as_f32(&robust), &want, &scale, 1e-5);

        let (lo, hi, spread, wins, inside) = quantile_band(&t).unwrap();
        let q = |col: &[f32]| (r::quantile(col, 0.05), r::quantile(col, 0.75));
        same_per_column("quantile 0.05", &lo, &g, b, p, |_, col| q(col).0);
        same_per_column("quantile 0.75", &hi, &g, b, p, |_, col| q(col).1);
        same_per_column("spread", &spread, &g, b, p, |_, col| q(col).1 - q(col).0);
        same_per_column("inside", &inside, &g, b, p, |_, col| {
            let (lo, hi) = q(col);
            kept(col, |x| x > lo && x < hi).len() as f32
        });
        let want: Vec<f64> = (0..p).map(|c| {
            let col = column(&g, b, p, c);
            let (lo, hi) = q(&col);
            let clamped = mapped(&col, |x| if x.is_nan() || lo.is_nan() || hi.is_nan() {
                f32::NAN
            } else {
                x.max(lo).min(hi)
            });
            r::mean(&clamped)
        }).collect();
        assert_close("winsorized mean", &as_f32(&wins), &want, &scale, 1e-5);

        let (a, shift) = (-0.75f32, 0.125f32);
        let (med, low, max, z, affine, neg, squares) =
            computed_keys(&t, f64::from(a), f64::from(shift), (b / 3) as f64).unwrap();
        let dist = |c: usize, col: &[f32]| mapped(col, |x| (x - mus[c]).abs());
        same_per_column("distances median", &med, &g, b, p, |c, col| r::median(&dist(c, col)));
        same_per_column("distances median_low", &low, &g, b, p, |c, col| {
            r::median_low(&dist(c, col))
        });
        same_per_column("distances max", &max, &g, b, p, |c, col| r::max(&dist(c, col)));
        same_per_column("z-score median", &z, &g, b, p, |c, col| {
            r::median(&mapped(col, |x| (x - mus[c]) / sigmas[c]))
        });
        same_per_column("affine median", &affine, &g, b, p, |_, col| {
            r::median(&mapped(col, |x| a * x + shift))
        });
        same_per_column("kth of -x", &neg, &g, b, p, |_, col| r::kth(&mapped(col, |x| -x), b / 3));
        same_per_column("quantile of squares", &squares, &g, b, p, |_, col| {
            r::quantile(&mapped(col, |x| x * x), 0.6)
        });

        let factors: Vec<f32> = (0..b).map(|i| 1.0 / (1.0 + (i % 7) as f32)).collect();
        let f = of_dtype(&factors, &[b], DType::F32, &Device::Cpu);
        let (wm, wmad) = weighted_mad(&t, &f).unwrap();
        let scaled = |col: &[f32]| -> Vec<f32> {
            col.iter().zip(&factors).map(|(&x, &s)| x * s).collect()
        };
        same_per_column("weighted median", &wm, &g, b, p, |_, col| r::median(&scaled(col)));
        same_per_column("weighted mad", &wmad, &g, b, p, |_, col| mad_of(&scaled(col)));

        let (pos, npos, band, low, sign_med, side) = filtered_selections(&t, 0.5).unwrap();
        let positive = |col: &[f32]| kept(col, |x| x > 0.0);
        same_per_column("positive median", &pos, &g, b, p, |_, col| r::median(&positive(col)));
        same_per_column("positive count", &npos, &g, b, p, |_, col| positive(col).len() as f32);
        same_per_column("band quantile", &band, &g, b, p, |_, col| {
            r::quantile(&kept(col, |x| x.abs() <= 0.5), 0.3)
        });
        same_per_column("median_low not above the mean", &low, &g, b, p, |c, col| {
            r::median_low(&kept(col, |x| !(x > mus[c])))
        });
        same_per_column("sign median", &sign_med, &g, b, p, |_, col| {
            r::median(&mapped(col, r::sign))
        });
        same_per_column("majority side median", &side, &g, b, p, |_, col| {
            let vote: f32 = col.iter().map(|&x| r::sign(x)).sum();
            r::median(&kept(col, |x| x * vote > 0.0))
        });

        let centred = as_f32(&median_centred(&t).unwrap());
        let middle = as_f32(&middle_half(&t).unwrap());
        let n = b as f32;
        for c in 0..p {
            let col = column(&g, b, p, c);
            let (med, ranks) = (r::median(&col), r::stable_ranks(&col));
            for (row, &x) in col.iter().enumerate() {
                let at = row * p + c;
                prop_assert!(same_bits(centred[at], x - med), "median centred [{row}, {c}]");
                let rk = ranks[row] as f32;
                let want = if rk < n / 4.0 || rk >= n - n / 4.0 { 0.0 } else { x };
                prop_assert!(same_bits(middle[at], want), "middle half [{row}, {c}]");
            }
        }
    }
}

/// A per-sample input of the wrong length, dtype or device is an error that names the
/// reduction and the argument as the user wrote them (`f`, not its position).
#[test]
fn a_wrong_per_sample_input_is_named_in_the_error() {
    let g = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2], &Device::Cpu).unwrap();
    let short = Tensor::from_slice(&[1.0f32, 1.0], &[2], &Device::Cpu).unwrap();
    let f64s = Tensor::from_slice(&[1.0f64, 1.0, 1.0], &[3], &Device::Cpu).unwrap();
    for f in [&short, &f64s] {
        let e = weighted_mad(&g, f).unwrap_err().to_string();
        assert!(
            e.contains("`weighted_mad`") && e.contains("vector `f`"),
            "{e}"
        );
    }
}

/// The README's DSL notes: ranks after `with_rank` (0-based; ties by sample index; a NaN after
/// +inf), `kth` rounding `k` down, NaN for an out-of-range `kth` or `quantile` inside a reduction,
/// and 0 where a `Batch` result's filter removed an element.
#[batch_reduce(crate = "psg_runtime")]
fn dsl_edges(g: Batch, k: f64, q: f64) -> (f32, f32, f32, f32) {
    (
        g.with_rank().filter(|x, r| r >= 1.0).map(|x, r| x).mean(),
        g.kth(k),
        g.quantile(q),
        g.with_rank().map(|x, r| r).max(),
    )
}

#[batch_reduce(crate = "psg_runtime")]
fn ranks(g: Batch) -> Batch {
    g.with_rank().map(|x, r| r)
}

#[batch_reduce(crate = "psg_runtime")]
fn filtered_batch(g: Batch) -> Batch {
    g.filter(|x| x < 3.0)
}

/// The Gaussian kernel and density of each value around 0.
#[batch_reduce(crate = "psg_runtime")]
fn densities(g: Batch, sigma: f32) -> (f32, f32) {
    (
        g.map(|x| normal_kernel(x, 0.0, sigma)).sum(),
        g.map(|x| normal_pdf(x, 0.0, sigma)).sum(),
    )
}

/// `let` as Rust binds: a tuple's values are all computed before any of its names is bound.
#[batch_reduce(crate = "psg_runtime")]
fn lets_as_in_rust(g: Batch) -> (f32, f32, f32, f32, f32) {
    let (lo, hi) = (g.quantile(0.25), g.quantile(0.75));
    let (lo, hi) = (lo - 1.5 * (hi - lo), hi + 1.5 * (hi - lo));
    let (a, b) = (g.min(), g.max());
    let (a, b) = (b, a);
    let c = 1.0;
    let (c, d) = (g.max(), c);
    let finite = g.filter(|x| x < std::f32::INFINITY).count();
    (lo, hi, a - b, d + 0.0 * c, finite)
}

/// `_` in a tuple pattern skips a value, as in Rust.
#[batch_reduce(crate = "psg_runtime")]
fn skipped_in_tuple(g: Batch) -> f32 {
    let (mu, _, top) = (g.mean(), g.std(), g.max());
    mu + top
}

#[test]
fn an_underscore_in_a_tuple_pattern_skips_its_value() {
    let g = Tensor::from_slice(&[1.0f32, 2.0, 6.0], &[3, 1], &Device::Cpu).unwrap();
    let v = skipped_in_tuple(&g).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(v, vec![3.0 + 6.0]);
}

/// Raw identifiers, as Rust allows them: a reduction named `r#mean` with a parameter `r#type`.
#[batch_reduce(crate = "psg_runtime")]
fn r#mean(g: Batch, r#type: f32) -> f32 {
    g.mean() * r#type
}

#[test]
fn lets_bind_as_in_rust() {
    let g = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0], &[5, 1], &Device::Cpu).unwrap();
    let (lo, hi, swapped, d, finite) = lets_as_in_rust(&g).unwrap();
    let one = |t: Tensor| t.to_vec::<f32>().unwrap()[0];
    // Quartiles 2 and 4: the fences 2 - 3 and 4 + 3, each from the earlier pair.
    assert_eq!(
        (one(lo), one(hi), one(swapped), one(d), one(finite)),
        (-1.0, 7.0, 4.0, 1.0, 5.0)
    );
    assert_eq!(one(r#mean(&g, 2.0).unwrap()), 6.0);
}

#[test]
fn the_readmes_dsl_notes_hold() {
    let col = |v: &[f32]| Tensor::from_slice(v, &[v.len(), 1], &Device::Cpu).unwrap();
    let g = col(&[3.0, 1.0, 2.0, 1.0, 1.0]);
    let r = ranks(&g).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(
        r,
        vec![4.0, 0.0, 3.0, 1.0, 2.0],
        "ties ranked by sample index"
    );
    let with_nan = col(&[f32::NAN, f32::INFINITY, 0.0]);
    assert_eq!(
        ranks(&with_nan).unwrap().to_vec::<f32>().unwrap(),
        vec![2.0, 1.0, 0.0]
    );
    // A NaN with its sign bit set (what 0.0 / 0.0 gives on x86) ranks after +inf too, and NaNs
    // tie, split by sample index: it ranked first, below -inf, before.
    let negative_nan = f32::from_bits(0xffc0_0000);
    let nans = col(&[1.0, negative_nan, f32::NEG_INFINITY, f32::NAN, 2.0]);
    assert_eq!(
        ranks(&nans).unwrap().to_vec::<f32>().unwrap(),
        vec![1.0, 3.0, 0.0, 4.0, 2.0]
    );
    let one = |t: Tensor| t.to_vec::<f32>().unwrap()[0];
    // Rank >= 1 drops one of the three 1s: (3 + 2 + 1 + 1) / 4.
    let (mean, kth, quantile, top) = dsl_edges(&g, 1.5, 0.5).unwrap();
    assert_eq!(
        (one(mean), one(kth), one(quantile), one(top)),
        (1.75, 1.0, 1.0, 4.0)
    );
    // kth rounds k down: -0.5 is out of range.
    for (k, q) in [(-1.0, 1.5), (-0.5, 2.0), (5.0, -0.1), (0.0, f64::NAN)] {
        let (_, kth, quantile, _) = dsl_edges(&g, k, q).unwrap();
        let (kth, quantile) = (one(kth), one(quantile));
        assert!(k == 0.0 || kth.is_nan(), "kth({k}) = {kth}");
        assert!(quantile.is_nan(), "quantile({q}) = {quantile}");
    }
    let kept = filtered_batch(&g).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(kept, vec![0.0, 1.0, 2.0, 1.0, 1.0]);
    // Where 1 / sigma overflows f32: the kernel is NaN at mu and 0 elsewhere, the density NaN.
    for (v, kernel_nan) in [(0.0f32, true), (1.0, false), (1e-40, false)] {
        let (kernel, pdf) = densities(&col(&[v]), 1e-39).unwrap();
        let (kernel, pdf) = (one(kernel), one(pdf));
        assert!(pdf.is_nan(), "pdf({v}) = {pdf}");
        assert!(
            kernel.is_nan() == kernel_nan && (kernel_nan || kernel == 0.0),
            "kernel({v}) = {kernel}"
        );
    }
    for sigma in [0.0, -1.0, f32::NAN] {
        let (kernel, pdf) = densities(&col(&[0.5]), sigma).unwrap();
        assert!(one(kernel).is_nan() && one(pdf).is_nan(), "sigma {sigma}");
    }
}
