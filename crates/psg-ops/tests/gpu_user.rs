//! Reductions a user might write with `#[batch_reduce]`, on CUDA against the CPU backend, bit for
//! bit. The built-ins' own tests (`gpu.rs`) check a fixed set of plans in depth; these plans
//! combine the same parts the way a researcher's definitions would: selections on keys computed
//! from a streaming statistic, from parameters or from a per-sample input; a chain of three
//! selections; two quantiles of one column used inside a `map` and a filter; selections of
//! filtered columns (a count that differs by column); the median of signs; ranks; a per-sample
//! output after a selection. Each runs at the B where the kernels change their way (whole
//! columns a thread, 4 or 8 parts a column, the tile's bit-sliced selections up to 256, digit
//! passes above, a thread a column past shared memory) and on both sides of those edges, in f32
//! and bf16 (f16 at fewer B), on the nasty values (ties, +-0, subnormals, inf, NaN) in a
//! partial slab, and on many tiles of columns of gradient-like values, mostly zeros, one value
//! among zeros, ties at every rank, and the nasty values again (vector loads).
//!
//! `#[ignore]`d where there is no GPU; on a GPU host: `cargo test -- --include-ignored`, with
//! `PSG_REQUIRE_GPU=1` to make a missing GPU a failure.
// `!(a > b)` is how a rule keeps NaN; written as the user would.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

mod common;

use common::tensors::{as_f32, of_dtype};
use common::{assert_identical, Rng};
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

/// Every plan above on `g` (and the per-sample input `f`, f32), as named outputs.
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
        plans(&g, &of_dtype(&factors, &[b], DType::F32, dev), b).unwrap()
    };
    let (want, got) = (run(&Device::Cpu), run(dev));
    assert_eq!(got.len(), want.len());
    for ((name, got), (_, want)) in got.iter().zip(&want) {
        let label = format!("{name}, {dtype} g[{b}, {p}], {what}");
        assert_eq!((got.dtype(), got.shape()), (dtype, want.shape()), "{label}");
        // Bit for bit, but any NaN equals any NaN (the GPU's NaN has another payload).
        assert_identical(&label, &as_f32(got), &as_f32(want));
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

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_user_reductions_match_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng::new(0x5eed_0031);
    // Whole columns a thread up to 64 (more for 16-bit input), 4 or 8 parts a column to 128,
    // bit-sliced to 256, digit passes above, a thread a column past shared memory.
    let all: &[usize] = &[1, 3, 64, 65, 97, 128, 129, 256, 257, 513, 1023, 2100];
    let some: &[usize] = &[3, 65, 256, 1023];
    for (dtype, batches) in [(DType::F32, all), (DType::BF16, all), (DType::F16, some)] {
        for &b in batches {
            // A partial slab of nasty values; several tiles, the last partial, 16-byte rows.
            same_plans(&dev, &rng.nasty(b * 37, true), b, 37, dtype, "nasty");
            let p = 4_160;
            same_plans(&dev, &mixed(&mut rng, b, p), b, p, dtype, "mixed");
        }
    }
}
