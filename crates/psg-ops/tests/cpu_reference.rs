//! Every built-in on the CPU backend against a plain reference, on random columns full of ties,
//! +-0, subnormals, infinities and NaN, for odd and even B, B = 1 and B = 0.

// `!(a > b)` is deliberate: it is how the rules treat NaN, as the kernels do.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

mod common;

use common::{assert_close, assert_identical, column, reference as r, Rng};
use proptest::prelude::*;
use psg_ops as ops;
use psg_runtime::{Device, Error, Tensor};

fn tensor(g: &[f32], b: usize, p: usize) -> Tensor {
    Tensor::from_slice(g, &[b, p], &Device::Cpu).unwrap()
}

fn values(t: Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

/// Applies `f` to each column.
fn per_column<T>(g: &[f32], b: usize, p: usize, f: impl Fn(&[f32]) -> T) -> Vec<T> {
    (0..p).map(|c| f(&column(g, b, p, c))).collect()
}

fn scales(g: &[f32], b: usize, p: usize) -> Vec<f64> {
    per_column(g, b, p, r::abs_sum)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn order_statistics_are_exact(seed: u64, b in 0usize..12, p in 1usize..5, q in 0.0f32..=1.0) {
        let g = Rng::new(seed).nasty(b * p, true);
        let t = tensor(&g, b, p);
        assert_identical("median", &values(ops::median(&t).unwrap()), &per_column(&g, b, p, r::median));
        assert_identical("median_low", &values(ops::median_low(&t).unwrap()), &per_column(&g, b, p, r::median_low));
        assert_identical("min", &values(ops::min(&t).unwrap()), &per_column(&g, b, p, r::min));
        assert_identical("max", &values(ops::max(&t).unwrap()), &per_column(&g, b, p, r::max));
        assert_identical("quantile", &values(ops::quantile(&t, f64::from(q)).unwrap()), &per_column(&g, b, p, |c| r::quantile(c, q)));
        for k in 0..b {
            assert_identical("kth", &values(ops::kth(&t, k).unwrap()), &per_column(&g, b, p, |c| r::kth(c, k)));
        }
    }

    #[test]
    fn moments_match_f64_references(seed: u64, b in 0usize..12, p in 1usize..5, special: bool) {
        let g = Rng::new(seed).nasty(b * p, special);
        let t = tensor(&g, b, p);
        let s = scales(&g, b, p);
        let rel = 1e-5;
        assert_close("sum", &values(ops::sum(&t).unwrap()), &per_column(&g, b, p, r::sum), &s, rel);
        let sb: Vec<f64> = s.iter().map(|x| x / b.max(1) as f64).collect();
        assert_close("mean", &values(ops::mean(&t).unwrap()), &per_column(&g, b, p, r::mean), &sb, rel);
        for corr in [0.0, 1.0] {
            let var_scale: Vec<f64> = per_column(&g, b, p, |c| c.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / (c.len() as f64 - corr).max(1.0));
            assert_close("var", &values(ops::var(&t, corr).unwrap()), &per_column(&g, b, p, |c| r::var(c, corr)), &var_scale, 1e-4);
            let sd: Vec<f64> = var_scale.iter().map(|v| v.sqrt()).collect();
            assert_close("std", &values(ops::std(&t, corr).unwrap()), &per_column(&g, b, p, |c| r::var(c, corr).sqrt()), &sd, 1e-3);
        }
    }

    #[test]
    fn signs_are_exact(seed: u64, b in 0usize..12, p in 1usize..5) {
        let g = Rng::new(seed).nasty(b * p, true);
        let t = tensor(&g, b, p);
        let signs: Vec<f32> = g.iter().map(|&x| r::sign(x)).collect();
        assert_identical("sign", &values(ops::sign(&t).unwrap()), &signs);
        // (Rust's f32 `Sum` starts from -0.0; sums here, as in torch, start from +0.0.)
        let sums = per_column(&signs, b, p, |c| c.iter().fold(0.0f32, |a, &x| a + x));
        assert_identical("sign_sum", &values(ops::sign_sum(&t).unwrap()), &sums);
        let votes: Vec<f32> = sums.iter().map(|&s| r::sign(s)).collect();
        assert_identical("majority_vote", &values(ops::majority_vote(&t).unwrap()), &votes);
    }

    #[test]
    fn trimming_removes_by_rank(seed: u64, b in 1usize..14, p in 1usize..4, m_frac in 0.0f64..0.5) {
        let g = Rng::new(seed).nasty(b * p, false);
        let t = tensor(&g, b, p);
        let m = ((m_frac * b as f64).floor() as usize).min((b - 1) / 2);
        let got = ops::outlier_mean(&t, ops::OutlierRule::TrimCount { m }).unwrap();
        let want = per_column(&g, b, p, |c| r::trim_mean(c, m));
        let kept: Vec<f32> = want.iter().map(|w| w.1 as f32).collect();
        assert_identical("trim kept", &values(got.kept), &kept);
        let means: Vec<f64> = want.iter().map(|w| w.0).collect();
        assert_close("trim mean", &values(got.mean), &means, &scales(&g, b, p), 1e-5);

        let cleaned = values(ops::remove_outliers(&t, ops::OutlierRule::TrimCount { m }, ops::Removed::NaN).unwrap());
        for c in 0..p {
            let col = column(&g, b, p, c);
            let ranks = r::stable_ranks(&col);
            for row in 0..b {
                let want = if ranks[row] < m || ranks[row] >= b - m { f32::NAN } else { col[row] };
                assert!(common::same_bits(cleaned[row * p + c], want), "row {row} col {c}: got {}, want {want}", cleaned[row * p + c]);
            }
        }
    }

    #[test]
    fn zscore_and_mad_keep_what_the_rule_keeps(seed: u64, b in 1usize..14, p in 1usize..4, k in 0.5f64..3.0) {
        let g = Rng::new(seed).gradients(b * p);
        let t = tensor(&g, b, p);
        let s = scales(&g, b, p);
        // The rule's decision, made in f32 as the kernels make it.
        let z_keep = |c: &[f32]| -> Vec<bool> {
            let n = c.len() as f32;
            let mu = c.iter().sum::<f32>() / n;
            let sd = (c.iter().map(|&x| (x - mu) * (x - mu)).sum::<f32>() / (n - 1.0).max(0.0)).sqrt();
            c.iter().map(|&x| !((x - mu).abs() > k as f32 * sd)).collect()
        };
        let mad_keep = |c: &[f32]| -> Vec<bool> {
            let med = r::median(c);
            let dev: Vec<f32> = c.iter().map(|&x| (x - med).abs()).collect();
            let mad = r::median(&dev);
            c.iter().map(|&x| !(mad > 0.0) || !((x - med).abs() > k as f32 * 1.4826 * mad)).collect()
        };
        for (rule, keep) in [
            (ops::OutlierRule::ZScore { k }, &z_keep as &dyn Fn(&[f32]) -> Vec<bool>),
            (ops::OutlierRule::Mad { k }, &mad_keep),
        ] {
            let got = ops::outlier_mean(&t, rule).unwrap();
            let want = per_column(&g, b, p, |c| {
                let kept: Vec<f64> = c.iter().zip(keep(c)).filter(|(_, k)| *k).map(|(&x, _)| f64::from(x)).collect();
                (kept.iter().sum::<f64>() / kept.len() as f64, kept.len() as f32)
            });
            assert_identical("kept", &values(got.kept), &want.iter().map(|w| w.1).collect::<Vec<_>>());
            assert_close("mean", &values(got.mean), &want.iter().map(|w| w.0).collect::<Vec<_>>(), &s, 1e-5);
            let cleaned = values(ops::remove_outliers(&t, rule, ops::Removed::Zero).unwrap());
            for c in 0..p {
                let col = column(&g, b, p, c);
                for (row, k) in keep(&col).into_iter().enumerate() {
                    let want = if k { col[row] } else { 0.0 };
                    prop_assert_eq!(cleaned[row * p + c], want);
                }
            }
        }
    }

    #[test]
    fn density_weighting_matches_f64(seed: u64, b in 1usize..14, p in 1usize..4) {
        let g = Rng::new(seed).gradients(b * p);
        let t = tensor(&g, b, p);
        let (sum, mean) = ops::gaussian_weighted(&t).unwrap();
        let want = per_column(&g, b, p, r::gaussian_weighted);
        let s = scales(&g, b, p);
        assert_close("weighted sum", &values(sum), &want.iter().map(|w| w.0).collect::<Vec<_>>(), &s, 1e-4);
        assert_close("weighted mean", &values(mean), &want.iter().map(|w| w.1).collect::<Vec<_>>(), &s, 1e-4);
    }

    #[test]
    fn clipping_scales_each_sample(seed: u64, b in 1usize..10, p in 1usize..6, c in 0.1f64..5.0) {
        let mut rng = Rng::new(seed);
        let (g1, g2) = (rng.gradients(b * p), rng.gradients(b * 3));
        let (t1, t2) = (tensor(&g1, b, p), Tensor::from_slice(&g2, &[b, 3, 1], &Device::Cpu).unwrap());
        let norms = values(ops::per_sample_norms(&[&t1, &t2]).unwrap());
        for row in 0..b {
            let want: f64 = g1[row * p..(row + 1) * p].iter().chain(&g2[row * 3..(row + 1) * 3]).map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            prop_assert!((f64::from(norms[row]) - want).abs() <= 1e-5 * want.max(1.0));
        }
        let factors = ops::flat_clip_factors(&[&t1, &t2], c).unwrap();
        let f = values(factors.clone());
        for (row, &n) in norms.iter().enumerate() {
            prop_assert_eq!(f[row], (c as f32 / (n + 1e-6)).min(1.0));
        }
        // Clipped gradients have norm <= C (to rounding).
        let clipped: f64 = (0..b).map(|row| {
            let n2: f64 = g1[row * p..(row + 1) * p].iter().chain(&g2[row * 3..(row + 1) * 3]).map(|&x| (f64::from(x) * f64::from(f[row])).powi(2)).sum();
            n2.sqrt()
        }).fold(0.0, f64::max);
        prop_assert!(clipped <= c * (1.0 + 1e-5));

        let scaled: Vec<f32> = (0..b * p).map(|i| g1[i] * f[i / p]).collect();
        let sums = per_column(&scaled, b, p, r::sum);
        assert_close("clipped sum", &values(ops::clipped_sum(&t1, &factors).unwrap()), &sums, &scales(&scaled, b, p), 1e-5);
        let means: Vec<f64> = sums.iter().map(|s| s / 7.5).collect();
        let sc: Vec<f64> = scales(&scaled, b, p).iter().map(|s| s / 7.5).collect();
        assert_close("clipped mean", &values(ops::clipped_mean(&t1, &factors, ops::Denominator::Expected(7.5)).unwrap()), &means, &sc, 1e-5);
        assert_identical("clipped median", &values(ops::clipped_median(&t1, &factors).unwrap()), &per_column(&scaled, b, p, r::median));

        let clamped: Vec<f32> = g1.iter().map(|&x| x.clamp(-c as f32, c as f32)).collect();
        assert_identical("clip_values", &values(ops::clip_values(&t1, c).unwrap()), &clamped);
    }
}

/// Norms whose squares leave f32's range: a sample of norm 2e19 (its square 4e38 overflows f32)
/// is clipped by C / 2e19, not zeroed by an infinite norm; one of norm 1.4e-30 (its squares
/// underflow f32) keeps its norm. The sums of squares are f64 whatever the data.
#[test]
fn norms_whose_squares_overflow_or_underflow_f32_are_exact() {
    // Samples: [2e19, 0], [1e20, 1e20], [1e-30, 1e-30], [3, 4].
    let t = tensor(&[2e19, 0.0, 1e20, 1e20, 1e-30, 1e-30, 3.0, 4.0], 4, 2);
    let want = [2e19f64, 1e20 * 2f64.sqrt(), 1e-30 * 2f64.sqrt(), 5.0];
    let flat = values(ops::per_sample_norms(&[&t]).unwrap());
    let per_layer = values(ops::per_layer_norms(&[&t]).unwrap().remove(0));
    for norms in [&flat, &per_layer] {
        for (n, w) in norms.iter().zip(want) {
            assert_eq!(*n, w as f32, "norms {norms:?}, want {want:?}");
        }
    }
    let f = values(ops::flat_clip_factors(&[&t], 1.0).unwrap());
    assert_eq!(f[0], 1.0 / (2e19f32 + 1e-6), "factors {f:?}");
    assert!(
        f[0] > 0.0 && f[1] > 0.0,
        "a finite norm is clipped, not zeroed: {f:?}"
    );
    assert_eq!((f[2], f[3]), (1.0, 1.0 / (5.0f32 + 1e-6)), "factors {f:?}");
}

/// A sample with a NaN anywhere has a NaN norm and so a NaN factor (Opacus' `clamp(max=1)`):
/// it makes every clipped aggregate NaN instead of entering it unclipped (a factor of 1, as
/// `f.min(1.0)` would give, let its finite values through whole). An infinite norm gives 0.
#[test]
fn a_nan_norm_gives_a_nan_factor_never_an_unclipped_sample() {
    // Sample 0: [NaN, 1000]; sample 1: [0.5, 0.5]; sample 2: [inf, 3].
    let g = [f32::NAN, 1000.0, 0.5, 0.5, f32::INFINITY, 3.0];
    let t = tensor(&g, 3, 2);
    let f = values(ops::flat_clip_factors(&[&t], 1.0).unwrap());
    assert!(f[0].is_nan(), "a NaN norm's factor is NaN, got {}", f[0]);
    assert_eq!(f[1], 1.0);
    assert_eq!(f[2], 0.0);
    let factors = ops::flat_clip_factors(&[&t], 1.0).unwrap();
    for (what, out) in [
        ("clipped sum", ops::clipped_sum(&t, &factors).unwrap()),
        (
            "clipped mean",
            ops::clipped_mean(&t, &factors, ops::Denominator::Expected(2.0)).unwrap(),
        ),
    ] {
        let v = values(out);
        assert!(
            v.iter().all(|x| x.is_nan()),
            "{what}: {v:?} holds sample 0 unclipped"
        );
    }
    // f64 norms, and the factors of given norms.
    let norms = Tensor::from_slice(
        &[f64::NAN, f64::INFINITY, 0.0, 0.5, 2.0],
        &[5],
        &Device::Cpu,
    )
    .unwrap();
    let f = ops::clip_factors(&norms, 1.0)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    assert!(f[0].is_nan());
    assert_eq!(&f[1..], &[0.0, 1.0, 1.0, 1.0 / (2.0 + 1e-6)]);
    // A C past f32's range is refused for f32 norms (an infinite norm would get inf / inf, a
    // NaN, not 0), and taken for f64 norms.
    let f32_norms = Tensor::from_slice(&[f32::INFINITY, 1.0], &[2], &Device::Cpu).unwrap();
    // One that underflows to 0 in f32 would zero every sample.
    for c in [1e300, 1e-50] {
        assert!(
            matches!(
                ops::clip_factors(&f32_norms, c),
                Err(psg_runtime::Error::InvalidParameter(ref m)) if m.contains("in f32")
            ),
            "C = {c}"
        );
    }
    let g = tensor(&[3.0, 4.0], 2, 1);
    let ones = Tensor::from_slice(&[1.0f32, 1.0], &[2], &Device::Cpu).unwrap();
    for d in [1e-50, 1e39] {
        let expected = ops::Denominator::Expected(d);
        assert!(
            matches!(ops::clipped_mean(&g, &ones, expected), Err(psg_runtime::Error::InvalidParameter(ref m)) if m.contains("in f32")),
            "expected batch size {d}"
        );
    }
    for fraction in [1e-50, 1e39] {
        assert!(
            matches!(ops::clip_values_relative(&g, fraction), Err(psg_runtime::Error::InvalidParameter(ref m)) if m.contains("in f32")),
            "fraction {fraction}"
        );
    }
    let f = ops::clip_factors(&norms, 1e300)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    assert_eq!(f[1], 0.0, "an infinite f64 norm's factor");
    // Per layer: only the layer holding the NaN gets a NaN factor.
    let w = tensor(&[f32::NAN, 0.0, 0.0, 0.0], 2, 2);
    let bias = tensor(&[1000.0, 0.5], 2, 1);
    let per_layer = ops::per_layer_clip_factors(&[&w, &bias], &[1.0, 1.0]).unwrap();
    assert!(values(per_layer[0].clone())[0].is_nan());
    assert_eq!(
        values(per_layer[1].clone()),
        vec![1.0 / (1000.0 + 1e-6), 1.0]
    );
}

/// Trimming keeps a column holding a NaN whole (its NaN of either sign reaches any sum, as the
/// trimmed mean is NaN), trims the others by rank; an empty batch keeps 0; an m so large that 2m
/// overflows is refused, not wrapped.
#[test]
fn trimming_keeps_a_column_with_a_nan_and_counts_nothing_in_an_empty_batch() {
    let rule = ops::OutlierRule::TrimCount { m: 1 };
    for nan in [f32::NAN, -f32::NAN] {
        let g = tensor(&[1.0, 2.0, 3.0, 4.0, nan], 5, 1);
        let clean = values(ops::remove_outliers(&g, rule, ops::Removed::Zero).unwrap());
        assert_identical("column with a NaN", &clean, &[1.0, 2.0, 3.0, 4.0, nan]);
        assert!(values(ops::outlier_mean(&g, rule).unwrap().mean)[0].is_nan());
    }
    let g = tensor(&[5.0, 2.0, 3.0, 4.0, 1.0], 5, 1);
    let clean = values(ops::remove_outliers(&g, rule, ops::Removed::Zero).unwrap());
    assert_eq!(clean, vec![0.0, 2.0, 3.0, 4.0, 0.0]);
    let empty = Tensor::from_slice::<f32>(&[], &[0, 2], &Device::Cpu).unwrap();
    for m in [1, usize::MAX] {
        let kept = values(
            ops::outlier_mean(&empty, ops::OutlierRule::TrimCount { m })
                .unwrap()
                .kept,
        );
        assert_eq!(kept, vec![0.0, 0.0], "m = {m}");
    }
    let huge = ops::OutlierRule::TrimCount {
        m: usize::MAX / 2 + 1,
    };
    assert!(matches!(
        ops::outlier_mean(&g, huge),
        Err(psg_runtime::Error::InvalidParameter(_))
    ));
}

/// A value-clipping bound that f32 cannot hold (infinite, or 0) is refused for f32 data, whose
/// arithmetic is f32, and taken for f64 data.
#[test]
fn value_clipping_bounds_must_fit_the_arithmetic() {
    let g = tensor(&[f32::INFINITY, -1e38], 2, 1);
    for c in [1e39, 1e-50] {
        assert!(
            matches!(ops::clip_values(&g, c), Err(psg_runtime::Error::InvalidParameter(ref m)) if m.contains("f32")),
            "c = {c}"
        );
    }
    let g64 = Tensor::from_slice(&[f64::INFINITY, -1e38], &[2, 1], &Device::Cpu).unwrap();
    let clipped = ops::clip_values(&g64, 1e39)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    assert_eq!(clipped, vec![1e39, -1e38]);
}

#[test]
fn relative_value_clipping_uses_each_columns_largest_magnitude() {
    let g = [1.0f32, -8.0, -4.0, 2.0, 2.0, 1.0];
    let t = tensor(&g, 3, 2);
    // Column 0: max |x| = 4, bound 2; column 1: max |x| = 8, bound 4.
    assert_eq!(
        values(ops::clip_values_relative(&t, 0.5).unwrap()),
        vec![1.0, -4.0, -2.0, 2.0, 2.0, 1.0]
    );
}

/// No samples but more columns than memory holds: the outputs cannot be allocated, and that is an
/// error saying so, not a panic.
/// Samples of no element, more than memory holds per-sample buffers for: the norms, clipping
/// factors and the non-finite scan need a value per sample, and say they cannot have them (they
/// aborted the process, or panicked on a capacity overflow).
#[test]
fn per_sample_buffers_too_large_for_memory_are_an_error() {
    for b in [1usize << 40, usize::MAX / 2] {
        let t = Tensor::from_slice::<f32>(&[], &[b, 0], &Device::Cpu).unwrap();
        let results = [
            ops::per_sample_norms(&[&t]).map(|_| ()),
            ops::per_layer_norms(&[&t]).map(|_| ()),
            ops::flat_clip_factors(&[&t], 1.0).map(|_| ()),
            ops::per_layer_clip_factors(&[&t], &[1.0]).map(|_| ()),
            ops::apply_nonfinite_policy(&[&t], ops::NonFinite::DropSamples).map(|_| ()),
        ];
        for (i, result) in results.into_iter().enumerate() {
            match result {
                Err(psg_runtime::Error::HostMemory(_) | psg_runtime::Error::Shape(_)) => {}
                other => panic!("B = {b}, call #{i}: {other:?}"),
            }
        }
    }
}

#[test]
fn outputs_too_large_for_memory_are_an_error() {
    let t = Tensor::from_slice::<f32>(&[], &[0, usize::MAX / 4], &Device::Cpu).unwrap();
    for result in [ops::mean(&t), ops::median(&t)] {
        match result {
            Err(psg_runtime::Error::HostMemory(msg)) => assert!(msg.contains("elements"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn an_empty_batch_sums_to_zero_and_has_no_mean() {
    let t = Tensor::from_slice::<f32>(&[], &[0, 3], &Device::Cpu).unwrap();
    assert_eq!(values(ops::sum(&t).unwrap()), vec![0.0; 3]);
    assert_eq!(values(ops::sign_sum(&t).unwrap()), vec![0.0; 3]);
    for v in values(ops::mean(&t).unwrap())
        .into_iter()
        .chain(values(ops::median(&t).unwrap()))
        .chain(values(ops::std(&t, 1.0).unwrap()))
    {
        assert!(v.is_nan());
    }
    assert_eq!(values(ops::sign(&t).unwrap()), Vec::<f32>::new());
}

#[test]
fn one_sample_has_nan_std_and_density_weights_of_one() {
    let t = tensor(&[3.0, -2.0], 1, 2);
    assert!(values(ops::std(&t, 1.0).unwrap())
        .iter()
        .all(|v| v.is_nan()));
    assert_eq!(values(ops::std(&t, 0.0).unwrap()), vec![0.0, 0.0]);
    let (sum, mean) = ops::gaussian_weighted(&t).unwrap();
    assert_eq!(values(sum), vec![3.0, -2.0]);
    assert_eq!(values(mean), vec![3.0, -2.0]);
    // A z-score rule on a column whose std is NaN removes nothing.
    let z = ops::outlier_mean(&t, ops::OutlierRule::ZScore { k: 1.0 }).unwrap();
    assert_eq!(values(z.kept), vec![1.0, 1.0]);
}

#[test]
fn equal_values_have_a_std_of_zero_and_lose_nothing() {
    // Seven f32 copies of 0.1 sum to 0.70000005: the mean rounds, and a plain sum of squared
    // deviations gave a std of 8e-9, density weights near 5e7 (a weighted sum of 2.3e7) and a
    // z-score rule with k < 1 that removed every value.
    // B not a power of two too (Poisson batches): 999 copies of 1.1 kept a std of 1.7e-10
    // against deviations of 6e-7 before the floor at the sum's rounding, and k = 3 removed them.
    for (value, b) in [
        (0.1f32, 7),
        (0.3, 100),
        (123.456, 33),
        (-3.7, 256),
        (1.1, 1000),
        (1.1, 999),
        (0.7, 1500),
        (-2.3, 3001),
        (5.5, 4051),
    ] {
        let t = tensor(&vec![value; b * 3], b, 3);
        assert_eq!(
            values(ops::std(&t, 1.0).unwrap()),
            vec![0.0; 3],
            "{value} x {b}"
        );
        assert_eq!(
            values(ops::var(&t, 0.0).unwrap()),
            vec![0.0; 3],
            "{value} x {b}"
        );
        let plain = values(ops::sum(&t).unwrap());
        assert_eq!(values(ops::gaussian_weighted_sum(&t).unwrap()), plain);
        for k in [0.5, 3.0] {
            let z = ops::outlier_mean(&t, ops::OutlierRule::ZScore { k }).unwrap();
            assert_eq!(values(z.kept), vec![b as f32; 3], "{value} x {b}, k = {k}");
            assert_eq!(values(z.mean), values(ops::mean(&t).unwrap()));
        }
        let cleaned =
            ops::remove_outliers(&t, ops::OutlierRule::ZScore { k: 0.5 }, ops::Removed::NaN);
        assert_eq!(values(cleaned.unwrap()), vec![value; b * 3]);
    }
    // f64 the same.
    let t = Tensor::from_slice(&[0.1f64; 7], &[7, 1], &Device::Cpu).unwrap();
    assert_eq!(
        ops::std(&t, 1.0).unwrap().to_vec::<f64>().unwrap(),
        vec![0.0]
    );
    let weighted = ops::gaussian_weighted_sum(&t)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    assert_eq!(weighted, ops::sum(&t).unwrap().to_vec::<f64>().unwrap());
}

#[test]
fn a_std_that_underflows_to_zero_removes_nothing() {
    // The squared deviations of 1e-30 values underflow f32: the std is 0 though the values
    // differ, and k * 0 would have removed them all.
    let t = tensor(&[1e-30, 2e-30, 4e-30], 3, 1);
    assert_eq!(values(ops::std(&t, 1.0).unwrap()), vec![0.0]);
    let z = ops::outlier_mean(&t, ops::OutlierRule::ZScore { k: 0.5 }).unwrap();
    assert_eq!(values(z.kept), vec![3.0]);
    assert_eq!(values(z.mean), values(ops::mean(&t).unwrap()));
}

#[test]
fn quantiles_that_need_no_interpolation_keep_infinite_values() {
    for (col, q, want) in common::quantiles_of_infinite_values() {
        let t = tensor(&col, col.len(), 1);
        assert_eq!(
            values(ops::quantile(&t, q).unwrap()),
            vec![want],
            "{col:?} at {q}"
        );
    }
}

#[test]
fn an_infinite_std_weights_every_sample_by_one() {
    // The squares overflow f32: mean 0, std +inf. The limit of an ever wider density.
    let t = tensor(&[1e20, -1e20, 3e19], 3, 1);
    assert_eq!(values(ops::std(&t, 1.0).unwrap()), vec![f32::INFINITY]);
    let (sum, mean) = ops::gaussian_weighted(&t).unwrap();
    let plain_sum = values(ops::sum(&t).unwrap());
    assert_eq!(values(sum), plain_sum);
    assert_eq!(values(mean), values(ops::mean(&t).unwrap()));
    assert_eq!(values(ops::gaussian_weighted_sum(&t).unwrap()), plain_sum);
}

#[test]
fn signed_zeros_follow_total_order() {
    let t = tensor(&[0.0, -0.0], 2, 1);
    assert_eq!(
        values(ops::median_low(&t).unwrap())[0].to_bits(),
        (-0.0f32).to_bits()
    );
    assert_eq!(
        values(ops::min(&t).unwrap())[0].to_bits(),
        (-0.0f32).to_bits()
    );
    assert_eq!(values(ops::max(&t).unwrap())[0].to_bits(), 0.0f32.to_bits());
    assert_eq!(values(ops::sign(&t).unwrap()), vec![0.0, 0.0]);
}

#[test]
fn f64_and_bf16_inputs_use_their_accumulators() {
    let g64 = [1.0f64, 1e-17, -1.0, 2.0];
    let t = Tensor::from_slice(&g64, &[4, 1], &Device::Cpu).unwrap();
    assert_eq!(
        ops::sum(&t).unwrap().to_vec::<f64>().unwrap(),
        vec![2.0 + 1e-17 - 0.0]
    );
    assert_eq!(
        ops::median(&t).unwrap().to_vec::<f64>().unwrap(),
        vec![0.5 + 0.5e-17]
    );

    let gb: Vec<half::bf16> = [1.5f32, -2.0, 3.25, 0.5]
        .iter()
        .map(|&x| half::bf16::from_f32(x))
        .collect();
    let t = Tensor::from_slice(&gb, &[4, 1], &Device::Cpu).unwrap();
    assert_eq!(
        ops::mean(&t).unwrap().to_vec::<half::bf16>().unwrap(),
        vec![half::bf16::from_f32(0.8125)]
    );
    assert_eq!(
        ops::median_low(&t).unwrap().to_vec::<half::bf16>().unwrap(),
        vec![half::bf16::from_f32(0.5)]
    );
}

#[test]
fn nonfinite_policies() {
    let g1 = [1.0f32, 2.0, f32::NAN, 4.0, 5.0, 6.0];
    let g2 = [1.0f32, f32::INFINITY, 3.0];
    let t1 = tensor(&g1, 3, 2);
    let t2 = tensor(&g2, 3, 1);
    assert!(
        ops::apply_nonfinite_policy(&[&t1, &t2], ops::NonFinite::Propagate)
            .unwrap()
            .is_none()
    );
    assert!(values(ops::mean(&t1).unwrap())[0].is_nan());

    let kept = ops::apply_nonfinite_policy(&[&t1, &t2], ops::NonFinite::DropSamples)
        .unwrap()
        .unwrap();
    // Sample 1 holds a NaN in the first tensor and an infinity in the second: it goes from both.
    assert_eq!(kept[0].shape(), &[2, 2]);
    assert_eq!(values(kept[0].clone()), vec![1.0, 2.0, 5.0, 6.0]);
    assert_eq!(values(kept[1].clone()), vec![1.0, 3.0]);

    match ops::apply_nonfinite_policy(&[&t1, &t2], ops::NonFinite::Error) {
        Err(Error::NonFinite {
            tensor: 0,
            sample: 1,
            coordinate: 0,
        }) => {}
        other => panic!("expected the first non-finite value to be named, got {other:?}"),
    }
    let clean = tensor(&[1.0, 2.0], 2, 1);
    assert!(
        ops::apply_nonfinite_policy(&[&clean], ops::NonFinite::Error)
            .unwrap()
            .is_none()
    );
}

#[test]
fn parameters_out_of_range_are_errors_that_say_so() {
    let t = tensor(&[1.0, 2.0, 3.0, 4.0], 4, 1);
    let msg = |e: Error| e.to_string();
    assert!(msg(ops::quantile(&t, 1.5).unwrap_err()).contains("q must lie in [0, 1]"));
    assert!(msg(ops::kth(&t, 4).unwrap_err()).contains("outside [0, 4)"));
    assert!(msg(ops::var(&t, -1.0).unwrap_err()).contains("correction"));
    assert!(
        msg(ops::outlier_mean(&t, ops::OutlierRule::ZScore { k: 0.0 }).unwrap_err())
            .contains("k must be")
    );
    assert!(
        msg(ops::outlier_mean(&t, ops::OutlierRule::TrimFraction { alpha: 0.5 }).unwrap_err())
            .contains("[0, 0.5)")
    );
    assert!(
        msg(ops::outlier_mean(&t, ops::OutlierRule::TrimCount { m: 2 }).unwrap_err())
            .contains("remove everything")
    );
    assert!(msg(ops::flat_clip_factors(&[&t], 0.0).unwrap_err()).contains("clip norm C"));
    assert!(msg(ops::per_sample_norms(&[]).unwrap_err()).contains("empty"));
    let other = tensor(&[1.0, 2.0], 2, 1);
    assert!(matches!(
        ops::per_sample_norms(&[&t, &other]),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        ops::clip_values(&t, -1.0),
        Err(Error::InvalidParameter(_))
    ));
    let wrong_len = Tensor::from_slice(&[1.0f32, 1.0], &[2], &Device::Cpu).unwrap();
    assert!(ops::clipped_sum(&t, &wrong_len).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Under each non-finite policy, on random columns full of NaN and infinities: `Propagate`
    /// leaves the tensors alone, `DropSamples` keeps exactly the samples that are finite in every
    /// tensor (and the statistics of what is left match the references), `Error` names the first
    /// bad value in tensor, sample, coordinate order.
    #[test]
    fn nonfinite_policies_match_a_plain_filter(seed: u64, b in 1usize..12, p in 1usize..5) {
        let mut rng = Rng::new(seed);
        let (g1, g2) = (rng.nasty(b * p, true), rng.nasty(b * 2, true));
        let (t1, t2) = (tensor(&g1, b, p), tensor(&g2, b, 2));
        prop_assert!(ops::apply_nonfinite_policy(&[&t1, &t2], ops::NonFinite::Propagate).unwrap().is_none());

        let finite_row = |g: &[f32], w: usize, row: usize| g[row * w..(row + 1) * w].iter().all(|x| x.is_finite());
        let keep: Vec<usize> = (0..b).filter(|&r| finite_row(&g1, p, r) && finite_row(&g2, 2, r)).collect();
        let dropped = ops::apply_nonfinite_policy(&[&t1, &t2], ops::NonFinite::DropSamples).unwrap();
        if keep.len() == b {
            prop_assert!(dropped.is_none());
        } else {
            let kept = dropped.unwrap();
            let want: Vec<f32> = keep.iter().flat_map(|&r| g1[r * p..(r + 1) * p].to_vec()).collect();
            assert_identical("kept rows", &values(kept[0].clone()), &want);
            prop_assert_eq!(kept[1].shape(), &[keep.len(), 2]);
            let (k, s) = (keep.len(), scales(&want, keep.len(), p));
            assert_identical("median after dropping", &values(ops::median(&kept[0]).unwrap()), &per_column(&want, k, p, r::median));
            assert_close("mean after dropping", &values(ops::mean(&kept[0]).unwrap()), &per_column(&want, k, p, r::mean), &s, 1e-5);
        }

        let first_bad = [(0usize, &g1, p), (1, &g2, 2)].iter().find_map(|&(t, g, w)| {
            (0..b * w).find(|&i| !g[i].is_finite()).map(|i| (t, i / w, i % w))
        });
        match (ops::apply_nonfinite_policy(&[&t1, &t2], ops::NonFinite::Error), first_bad) {
            (Ok(None), None) => {}
            (Err(Error::NonFinite { tensor, sample, coordinate }), Some(want)) => {
                prop_assert_eq!((tensor, sample, coordinate), want);
            }
            (got, want) => prop_assert!(false, "got {:?}, want first bad {:?}", got, want),
        }
    }
}

#[test]
fn normal_kernel_and_pdf_match_their_definitions_and_are_nan_unless_sigma_is_positive() {
    let col: Vec<f32> = (0..41).map(|i| -3.0 + 0.15 * i as f32).collect();
    let t = tensor(&col, col.len(), 1);
    for (mu, sigma) in [(0.0, 1.0), (0.5, 0.25), (-1.0, 3.0)] {
        let (kernel, pdf) = common::gaussian_sums(&t, mu, sigma).unwrap();
        let k: f64 = col
            .iter()
            .map(|&x| (-0.5 * ((f64::from(x) - mu) / sigma).powi(2)).exp())
            .sum();
        let norm = 1.0 / (sigma * (2.0 * std::f64::consts::PI).sqrt());
        assert_close("normal_kernel", &values(kernel), &[k], &[k], 1e-6);
        assert_close("normal_pdf", &values(pdf), &[k * norm], &[k * norm], 1e-6);
    }
    // mu off the grid of values: x - mu is never 0, so NaN here comes from the guard, not 0 / 0.
    for sigma in [0.0, -0.0, -1.0, f64::NAN] {
        let (kernel, pdf) = common::gaussian_sums(&t, 0.07, sigma).unwrap();
        assert!(
            values(kernel)[0].is_nan() && values(pdf)[0].is_nan(),
            "sigma {sigma}"
        );
    }
}

#[test]
fn outlier_thresholds_must_fit_the_arithmetic() {
    // k = 1e-50 is 0 in f32: every value off the mean would be an outlier.
    let g = tensor(&[1.0, 2.0, 3.0], 3, 1);
    for rule in [
        ops::OutlierRule::ZScore { k: 1e-50 },
        ops::OutlierRule::Mad { k: 1e-50 },
    ] {
        assert!(
            matches!(ops::outlier_mean(&g, rule), Err(Error::InvalidParameter(ref m)) if m.contains("in f32")),
            "{rule:?}"
        );
        assert!(
            ops::remove_outliers(&g, rule, ops::Removed::Zero).is_err(),
            "{rule:?}"
        );
    }
    // f64 data computes in f64, where 1e-50 is a number.
    let g64 = Tensor::from_slice(&[1.0f64, 2.0, 3.0], &[3, 1], &Device::Cpu).unwrap();
    assert!(ops::outlier_mean(&g64, ops::OutlierRule::ZScore { k: 1e-50 }).is_ok());
}
