//! The DP module on the CPU: the noise's distribution, counters that never repeat, a DP-SGD step
//! recomputed from its parts, epsilon against the accountant run directly, robust aggregations
//! that refuse an epsilon, budgets, and every parameter error.

mod common;

use common::tensors::{assert_same_bits, host};

use common::Rng;
use psg_ops::dp::{
    add_noise, noise, Aggregation, Budget, Clipping, CustomOp, DpError, DpSgd, DpSgdConfig,
    EpochTracker, NoiseGenerator, NoiseKey, NoiseMode, RobustOp, SensitivityBasis, UserSensitivity,
};
use psg_ops::{Denominator, OutlierRule};
use psg_privacy::accountant::{PldAccountant, RdpAccountant};
use psg_privacy::normal::{gaussian_noise, gaussian_noise_f64};
use psg_runtime::{DType, Device, Tensor};

const MODES: [NoiseMode; 2] = [NoiseMode::Standard, NoiseMode::Secure];

/// Per-sample gradients of a small model: `[B, 3, 4]`, `[B, 4]` and `[B, 1]`, random, never zero.
fn model(rng: &mut Rng, b: usize, dtype: DType) -> Vec<Tensor> {
    [vec![3, 4], vec![4], vec![1]]
        .into_iter()
        .map(|dims| {
            let shape: Vec<usize> = std::iter::once(b).chain(dims).collect();
            let n: usize = shape.iter().product();
            let v = rng.gradients(n);
            match dtype {
                DType::F64 => {
                    let v: Vec<f64> = v.into_iter().map(f64::from).collect();
                    Tensor::from_vec(v, &shape, &Device::Cpu).unwrap()
                }
                _ => Tensor::from_vec(v, &shape, &Device::Cpu).unwrap(),
            }
        })
        .collect()
}

fn refs(grads: &[Tensor]) -> Vec<&Tensor> {
    grads.iter().collect()
}

/// The flat noise of one call on the CPU straight from psg-privacy, as f64.
fn raw_noise(dtype: DType, key: NoiseKey, n: usize, std: f64, mode: NoiseMode) -> Vec<f64> {
    let NoiseKey { seed, step, offset } = key;
    match dtype {
        DType::F64 => gaussian_noise_f64(seed, step, offset, n, std, mode).unwrap(),
        _ => gaussian_noise(seed, step, offset, n, std as f32, mode)
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect(),
    }
}

#[test]
fn noise_has_mean_0_and_the_asked_variance_over_a_million_draws() {
    let n = 1_000_000;
    let std = 2.0;
    for dtype in [DType::F32, DType::F64] {
        for mode in MODES {
            let key = NoiseKey {
                seed: 0xC0FF_EE00 + mode as u64,
                step: 3,
                offset: 17,
            };
            let z = host(&noise(dtype, &[n], &Device::Cpu, std, key, mode).unwrap());
            let mean = z.iter().sum::<f64>() / n as f64;
            let var = z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            let within_1_sd = z.iter().filter(|x| x.abs() <= std).count() as f64 / n as f64;
            // 5 standard errors: mean sd = std / 1000, variance sd = sqrt(2) std^2 / 1000.
            let what = format!("{dtype} {mode:?}");
            assert!(mean.abs() < 5.0 * std / 1000.0, "{what}: mean {mean}");
            let var_tol = 5.0 * 2f64.sqrt() * std * std / 1000.0;
            assert!((var - std * std).abs() < var_tol, "{what}: variance {var}");
            assert!(
                (within_1_sd - 0.682_689).abs() < 0.003,
                "{what}: P(|z| <= sd) = {within_1_sd}"
            );
        }
    }
}

#[test]
fn cpu_noise_is_psg_privacy_noise_for_the_same_key() {
    let mut rng = Rng::new(1);
    for dtype in [DType::F32, DType::F64] {
        for mode in MODES {
            for (n, offset) in [(1, 0), (3, 1), (5, 3), (1023, 1 << 40)] {
                let key = NoiseKey {
                    seed: 99,
                    step: 5,
                    offset,
                };
                let z = noise(dtype, &[n], &Device::Cpu, 0.75, key, mode).unwrap();
                assert_eq!(host(&z), raw_noise(dtype, key, n, 0.75, mode));
                let base = model(&mut rng, n, dtype).remove(1); // [n, 4]
                let noisy = add_noise(&base, 0.75, key, mode).unwrap();
                let z = raw_noise(dtype, key, base.len(), 0.75, mode);
                let want: Vec<f64> = match dtype {
                    DType::F64 => host(&base).iter().zip(&z).map(|(b, z)| b + z).collect(),
                    _ => {
                        let b32 = base.to_vec::<f32>().unwrap();
                        b32.iter()
                            .zip(&z)
                            .map(|(b, z)| f64::from(b + *z as f32))
                            .collect()
                    }
                };
                assert_eq!(host(&noisy), want, "{dtype} {mode:?} n = {n}");
                assert_eq!(noisy.shape(), base.shape());
            }
        }
    }
}

#[test]
fn a_generator_never_repeats_a_counter_across_tensors_or_steps() {
    let mut gen = NoiseGenerator::new(5);
    let sizes = [3usize, 1000, 1, 17, 0, 4];
    let mut ranges = Vec::new(); // (step, start, end)
    for step in 0..3u64 {
        let keys: Vec<NoiseKey> = sizes
            .iter()
            .map(|&n| gen.next_key(n, DType::F32).unwrap())
            .collect();
        for (k, &n) in keys.iter().zip(&sizes) {
            assert_eq!((k.seed, k.step), (5, step));
            ranges.push((k.step, k.offset, k.offset + n as u64));
        }
        // The tensors of a step tile one range: their noise is one long draw, cut in pieces.
        let pieces: Vec<f64> = keys
            .iter()
            .zip(&sizes)
            .flat_map(|(k, &n)| raw_noise(DType::F32, *k, n, 1.0, NoiseMode::Standard))
            .collect();
        let total: usize = sizes.iter().sum();
        let whole = NoiseKey {
            seed: 5,
            step,
            offset: 0,
        };
        assert_eq!(
            pieces,
            raw_noise(DType::F32, whole, total, 1.0, NoiseMode::Standard)
        );
        gen.advance().unwrap();
    }
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            let overlap = a.0 == b.0 && a.1 < b.2 && b.1 < a.2;
            assert!(!overlap, "counter ranges {a:?} and {b:?} overlap");
        }
    }
    // Same offsets, next step: different noise.
    let k0 = NoiseKey {
        seed: 5,
        step: 0,
        offset: 0,
    };
    let k1 = NoiseKey { step: 1, ..k0 };
    let (z0, z1) = (
        raw_noise(DType::F64, k0, 64, 1.0, NoiseMode::Standard),
        raw_noise(DType::F64, k1, 64, 1.0, NoiseMode::Standard),
    );
    assert!(z0.iter().zip(&z1).all(|(a, b)| a != b));
}

/// The Philox blocks (and words) an f32 or f64 key of `n` elements reads.
fn words(key: NoiseKey, n: u64, dtype: DType) -> std::ops::Range<u64> {
    match dtype {
        // An f64 value reads all four words of its block.
        DType::F64 => (key.offset / 2) * 4..(key.offset + n).div_ceil(2) * 4,
        _ => key.offset..key.offset + n,
    }
}

/// Whether an f64 pair of `z64` and lanes 2 and 3 of an f32 block of `z32` (both r (cos, sin) of
/// one Box-Muller angle) have the same angle: the mark of two tensors reading one Philox block.
fn share_an_angle(z64: &[f64], z32: &[f32]) -> bool {
    let angle = |c: f64, s: f64| s.atan2(c);
    z64.chunks(2).any(|p| {
        z32.chunks(4)
            .any(|q| (angle(p[0], p[1]) - angle(f64::from(q[2]), f64::from(q[3]))).abs() < 1e-6)
    })
}

#[test]
fn f32_and_f64_tensors_of_a_step_never_share_a_philox_word() {
    let sizes = [
        (7u64, DType::F32),
        (100, DType::F64),
        (300, DType::F32),
        (3, DType::F64),
    ];
    let mut gen = NoiseGenerator::new(9);
    let mut seen: Vec<std::ops::Range<u64>> = Vec::new();
    for (n, dtype) in sizes {
        let key = gen.next_key(n as usize, dtype).unwrap();
        let w = words(key, n, dtype);
        for other in &seen {
            assert!(
                w.end <= other.start || other.end <= w.start,
                "{w:?} and {other:?} overlap"
            );
        }
        seen.push(w);
    }
    // Element ranges alone (f64 elements 0..100 = blocks 0..50, then f32 elements 100..400 =
    // blocks 25..100) made the two tensors read the same blocks: the check below sees it.
    let key = |offset| NoiseKey {
        seed: 9,
        step: 0,
        offset,
    };
    let z64 = raw_noise(DType::F64, key(0), 100, 1.0, NoiseMode::Standard);
    let z32: Vec<f32> = raw_noise(DType::F32, key(100), 300, 1.0, NoiseMode::Standard)
        .into_iter()
        .map(|z| z as f32)
        .collect();
    assert!(share_an_angle(&z64, &z32));
    // add_noise takes the key by the tensor's dtype: f64, then f32, share nothing.
    let mut gen = NoiseGenerator::new(9);
    let a = Tensor::from_slice(&[0.0f64; 100], &[100], &Device::Cpu).unwrap();
    let b = Tensor::from_slice(&[0.0f32; 300], &[300], &Device::Cpu).unwrap();
    let za = gen.add_noise(&a, 1.0).unwrap().to_vec::<f64>().unwrap();
    let zb = gen.add_noise(&b, 1.0).unwrap().to_vec::<f32>().unwrap();
    assert!(!share_an_angle(&za, &zb));
}

#[test]
fn generator_add_noise_uses_fresh_counters_each_call() {
    let t = Tensor::from_slice(&[1.0f32; 8], &[8], &Device::Cpu).unwrap();
    let mut gen = NoiseGenerator::new(11);
    let a = gen.add_noise(&t, 1.0).unwrap().to_vec::<f32>().unwrap();
    let b = gen.add_noise(&t, 1.0).unwrap().to_vec::<f32>().unwrap();
    assert!(a.iter().zip(&b).all(|(x, y)| x != y));
    assert_eq!(gen.next_key(1, DType::F32).unwrap().offset, 16);
    let resumed = NoiseGenerator::new(11).at_step(40);
    assert_eq!(resumed.step(), 40);
}

#[test]
fn secure_mode_reseeds_from_the_os_every_step_and_says_so() {
    let mut gen = NoiseGenerator::secure().unwrap();
    assert!(gen.is_secure() && gen.is_os_seeded());
    assert_eq!(gen.mode(), NoiseMode::Secure);
    let text = gen.to_string();
    assert!(
        text.contains("OS CSPRNG") && text.contains("four normal draws"),
        "{text}"
    );
    assert!(format!("{gen:?}").contains("<secret>"));
    let s0 = gen.next_key(4, DType::F32).unwrap().seed;
    gen.advance().unwrap();
    let k1 = gen.next_key(4, DType::F32).unwrap();
    assert_eq!((k1.step, k1.offset), (1, 0));
    assert_ne!(
        s0, k1.seed,
        "secure mode must draw a new seed at every step"
    );

    let fixed = NoiseGenerator::with_mode(3, NoiseMode::Secure);
    assert!(!fixed.is_secure());
    assert!(fixed.to_string().contains("NOT secure"), "{fixed}");
    assert!(NoiseGenerator::new(3).to_string().contains("NOT secure"));

    // A run with secure noise reports its epsilon without the fixed seed's warning.
    let config = DpSgdConfig::new(1.0, Clipping::flat(1.0), 0.1, 5.0);
    let mut dp = DpSgd::new(config, NoiseGenerator::secure().unwrap()).unwrap();
    dp.step(&refs(&model(&mut Rng::new(1), 3, DType::F32)))
        .unwrap();
    let report = dp.epsilon(1e-5).unwrap();
    assert!(report.secure_noise, "{report}");
    assert!(!report.to_string().contains("NOT a guarantee"), "{report}");
}

/// Runs one step of `config` on fresh gradients and checks it against its parts.
fn check_step(config: DpSgdConfig, dtype: DType, b: usize) {
    let mut rng = Rng::new(0xD5 + b as u64);
    let grads = model(&mut rng, b, dtype);
    let grads = refs(&grads);
    let seed = 0x5EED;
    let mut dp = DpSgd::new(config.clone(), NoiseGenerator::new(seed)).unwrap();
    let step = dp.step(&grads).unwrap();
    let (sigma, e) = (config.noise_multiplier, config.expected_batch_size);
    let s = config.clipping.sensitivity();
    let factors: Vec<Tensor> = match &config.clipping {
        Clipping::Flat { max_norm } => {
            vec![psg_ops::flat_clip_factors(&grads, *max_norm).unwrap(); grads.len()]
        }
        Clipping::PerLayer { max_norms } => {
            psg_ops::per_layer_clip_factors(&grads, max_norms).unwrap()
        }
    };
    let what = format!(
        "{} {dtype} B = {b} {}",
        config.aggregation.name(),
        config.clipping
    );
    assert_eq!(step.batch_size, b);
    assert_eq!(step.noise_mode, NoiseMode::Standard);
    let mut offset = 0;
    for (i, (g, f)) in grads.iter().zip(&factors).enumerate() {
        let out = &step.gradients[i];
        assert_eq!(out.shape(), &g.shape()[1..], "{what}");
        assert_eq!(
            step.noise_keys[i],
            NoiseKey {
                seed,
                step: 0,
                offset
            },
            "{what}"
        );
        offset += out.len() as u64;
        let sum = psg_ops::clipped_sum(g, f).unwrap();
        let key = step.noise_keys[i];
        match config.aggregation {
            Aggregation::ClippedSum => {
                assert_eq!(step.noise_std, sigma * s);
                let want = add_noise(&sum, sigma * s, key, NoiseMode::Standard).unwrap();
                assert_same_bits(&what, out, &want);
            }
            Aggregation::ClippedMean => {
                assert_eq!(step.noise_std, sigma * s / e);
                // Exactly: psg divides the clipped sum, then adds the noise divided.
                let mean = psg_ops::clipped_mean(g, f, Denominator::Expected(e)).unwrap();
                let want = add_noise(&mean, sigma * s / e, key, NoiseMode::Standard).unwrap();
                assert_same_bits(&what, out, &want);
                // Up to rounding, Opacus' (clipped sum + noise of std sigma * S) / E, with the
                // noise recomputed from the key.
                let z = raw_noise(dtype, key, out.len(), sigma * s, NoiseMode::Standard);
                let rel = if dtype == DType::F64 { 1e-13 } else { 1e-5 };
                for (j, ((o, s), z)) in host(out).iter().zip(host(&sum)).zip(&z).enumerate() {
                    let opacus = (s + z) / e;
                    let tol = rel * (s.abs() + z.abs()) / e;
                    assert!(
                        (o - opacus).abs() <= tol,
                        "{what}: element {j}: {o} vs {opacus}"
                    );
                }
            }
            Aggregation::Robust { .. } => unreachable!("checked elsewhere"),
        }
    }
}

#[test]
fn a_dp_sgd_step_is_the_clipped_aggregate_plus_the_keys_noise() {
    let flat = Clipping::flat(1.5);
    let per_layer = Clipping::per_layer(vec![1.0, 0.5, 0.25]);
    for dtype in [DType::F32, DType::F64] {
        for clipping in [flat.clone(), per_layer.clone()] {
            for aggregation in [Aggregation::ClippedSum, Aggregation::ClippedMean] {
                for b in [1, 2, 33] {
                    let config = DpSgdConfig::new(1.1, clipping.clone(), 0.01, 25.0)
                        .with_aggregation(aggregation.clone());
                    check_step(config, dtype, b);
                }
            }
        }
    }
}

/// A sample with a NaN in one tensor must not reach the release unclipped through the others:
/// with flat clipping its factor is NaN (Opacus' `clamp(max=1)`), so every noisy gradient of the
/// step is NaN; a factor of 1 would have released its bias gradient of 1000 whole, beside an
/// epsilon that assumes L2 sensitivity 1.
#[test]
fn a_sample_with_a_nan_is_never_released_unclipped() {
    let w = Tensor::from_slice(&[f32::NAN, 0.0, 0.0, 0.0], &[2, 2], &Device::Cpu).unwrap();
    let bias = Tensor::from_slice(&[1000.0f32, 0.5], &[2, 1], &Device::Cpu).unwrap();
    for aggregation in [Aggregation::ClippedSum, Aggregation::ClippedMean] {
        let config =
            DpSgdConfig::new(1.0, Clipping::flat(1.0), 0.01, 1.0).with_aggregation(aggregation);
        let mut dp = DpSgd::new(config, NoiseGenerator::new(0)).unwrap();
        let step = dp.step(&[&w, &bias]).unwrap();
        for out in &step.gradients {
            let v = host(out);
            assert!(v.iter().all(|x| x.is_nan()), "released {v:?}");
        }
    }
    // Per layer, the bias is clipped by its own norm: no NaN, and within its bound.
    let config = DpSgdConfig::new(1.0, Clipping::per_layer(vec![1.0, 1.0]), 0.01, 1.0)
        .with_aggregation(Aggregation::ClippedSum);
    let mut dp = DpSgd::new(config, NoiseGenerator::new(0)).unwrap();
    let step = dp.step(&[&w, &bias]).unwrap();
    assert!(host(&step.gradients[0]).iter().all(|x| x.is_nan()));
    let noise = raw_noise(
        DType::F32,
        step.noise_keys[1],
        1,
        1.0 * 2f64.sqrt(),
        NoiseMode::Standard,
    );
    let clipped = host(&step.gradients[1])[0] - noise[0];
    assert!(
        clipped.abs() <= 1.5 + 1e-3,
        "bias released as {clipped} + noise"
    );
}

#[test]
fn per_layer_sensitivity_is_the_root_sum_of_squares() {
    assert_eq!(Clipping::per_layer(vec![3.0, 4.0]).sensitivity(), 5.0);
    assert_eq!(Clipping::flat(2.5).sensitivity(), 2.5);
    // Norms whose squares overflow f64: a finite sensitivity, not inf.
    let s = Clipping::per_layer(vec![1e200, 1e200]).sensitivity();
    assert!((s / (1e200 * 2f64.sqrt()) - 1.0).abs() < 1e-15, "{s}");
}

#[test]
fn an_empty_poisson_batch_still_gets_noise_and_counts() {
    let grads = [
        Tensor::zeros(DType::F32, &[0, 3], &Device::Cpu).unwrap(),
        Tensor::zeros(DType::F32, &[0, 2], &Device::Cpu).unwrap(),
    ];
    let config = DpSgdConfig::new(2.0, Clipping::flat(1.0), 0.1, 8.0);
    let mut dp = DpSgd::new(config, NoiseGenerator::new(1)).unwrap();
    let step = dp.step(&refs(&grads)).unwrap();
    assert_eq!(step.batch_size, 0);
    for (out, key) in step.gradients.iter().zip(&step.noise_keys) {
        let want = raw_noise(DType::F32, *key, out.len(), 2.0 / 8.0, NoiseMode::Standard);
        assert_eq!(host(out), want, "0 + noise is the noise");
    }
    assert_eq!(dp.steps(), 1);
    assert!(dp.epsilon(1e-5).unwrap().epsilon() > 0.0);
}

#[test]
fn epsilon_after_n_steps_is_the_accountants() {
    let (sigma, q, n) = (1.5, 0.04, 20);
    let config = DpSgdConfig::new(sigma, Clipping::flat(1.0), q, 40.0);
    let mut dp = DpSgd::new(config, NoiseGenerator::new(2)).unwrap();
    assert_eq!(
        dp.epsilon(1e-5).unwrap().epsilon(),
        0.0,
        "no step, no privacy spent"
    );
    let g = model(&mut Rng::new(3), 4, DType::F32);
    for _ in 0..n {
        dp.step(&refs(&g)).unwrap();
    }
    let mut direct = RdpAccountant::new();
    direct.steps(sigma, q, n).unwrap();
    let want = direct.epsilon(1e-5).unwrap();
    let report = dp.epsilon(1e-5).unwrap();
    assert_eq!(report.spent, want);
    assert_eq!(dp.accountant().unwrap(), &direct);
    assert_eq!(
        (report.steps, report.sample_rate, report.sensitivity),
        (n, q, 1.0)
    );
    assert_eq!(
        report.basis,
        SensitivityBasis::Clipping(Clipping::flat(1.0))
    );
    let text = report.to_string();
    assert!(
        text.contains("Poisson sampling") && text.contains("rate 0.04"),
        "{text}"
    );
    // The noise came from a fixed seed: the report says the epsilon is no guarantee.
    assert!(
        !report.secure_noise && text.contains("NOT a guarantee"),
        "{text}"
    );
    // Looking ahead does not record anything.
    let ahead = dp.epsilon_after(5, 1e-5).unwrap();
    direct.steps(sigma, q, 5).unwrap();
    assert_eq!(ahead.spent, direct.epsilon(1e-5).unwrap());
    assert_eq!(dp.steps(), n);
    // The same steps through privacy loss distributions: a PldAccountant's epsilon, smaller.
    let mut pld = PldAccountant::new();
    pld.steps(sigma, q, n).unwrap();
    let tight = dp.epsilon_pld(1e-5).unwrap();
    assert_eq!(tight.spent, pld.epsilon(1e-5).unwrap());
    assert!(tight.epsilon() < report.epsilon(), "{tight} vs {report}");
    assert!(tight.pld && !report.pld);
    let text = tight.to_string();
    assert!(
        text.contains("(PLD accounting)") && !text.contains("RDP order"),
        "{text}"
    );
}

#[test]
fn a_budget_says_when_it_is_spent() {
    let config = DpSgdConfig::new(1.5, Clipping::flat(1.0), 0.1, 4.0);
    let mut dp = DpSgd::new(config, NoiseGenerator::new(4)).unwrap();
    let budget = Budget::new(1.5, 1e-5).unwrap();
    let g = model(&mut Rng::new(5), 3, DType::F32);
    let mut steps = 0;
    while budget.allows_next_step(&dp).unwrap() {
        dp.step(&refs(&g)).unwrap();
        steps += 1;
        assert!(steps < 1000, "the budget never ran out");
    }
    let status = budget.status(&dp).unwrap();
    assert!(steps > 0 && !status.exhausted(), "{status}");
    assert!(status.spent.epsilon() <= 1.5 && status.remaining() > 0.0);
    println!("{steps} steps within the budget: {status}");
    dp.step(&refs(&g)).unwrap();
    let status = budget.status(&dp).unwrap();
    assert!(status.exhausted() && status.remaining() == 0.0, "{status}");
    assert!(status.to_string().contains("spent"), "{status}");
}

#[test]
fn epochs_report_epsilon_at_their_end() {
    let config = DpSgdConfig::new(1.0, Clipping::flat(1.0), 0.25, 2.0);
    let mut dp = DpSgd::new(config, NoiseGenerator::new(6)).unwrap();
    let tracker = EpochTracker::for_sample_rate(0.25, 1e-5).unwrap();
    assert_eq!(tracker.steps_per_epoch(), 4);
    let g = model(&mut Rng::new(7), 2, DType::F32);
    let mut reports = Vec::new();
    for _ in 0..9 {
        dp.step(&refs(&g)).unwrap();
        if let Some(r) = tracker.after_step(&dp).unwrap() {
            assert_eq!(r.epsilon, dp.epsilon(1e-5).unwrap());
            reports.push((dp.steps(), r.epoch));
        }
    }
    assert_eq!(reports, vec![(4, 1), (8, 2)]);
    assert_eq!(
        EpochTracker::for_sample_rate(0.3, 1e-5)
            .unwrap()
            .steps_per_epoch(),
        3
    );
}

const WINSORIZED: CustomOp = CustomOp {
    name: "winsorized mean",
    op: common::winsorized_10,
};

fn robust_ops() -> Vec<RobustOp> {
    vec![
        RobustOp::Median,
        RobustOp::OutlierMean(OutlierRule::TrimCount { m: 1 }),
        RobustOp::GaussianWeightedSum,
        RobustOp::SignSum,
        RobustOp::MajorityVote,
        RobustOp::Custom(WINSORIZED),
    ]
}

/// A custom aggregation must give one value per coordinate: anything else is an error naming it,
/// and nothing is recorded.
#[test]
fn a_custom_aggregation_of_the_wrong_shape_is_an_error() {
    fn per_sample(g: &Tensor) -> psg_runtime::Result<Tensor> {
        Ok(g.clone())
    }
    let g = model(&mut Rng::new(13), 4, DType::F32);
    let mut dp = common::custom_dp("identity", per_sample, 4.0, 3);
    let e = dp.step(&refs(&g)).unwrap_err().to_string();
    assert!(e.contains("`identity`") && e.contains("[3, 4]"), "{e}");
    assert_eq!(dp.steps(), 0);
    // Custom ops are equal by name, whatever their functions' addresses.
    let op = RobustOp::Custom(CustomOp {
        name: "identity",
        op: per_sample,
    });
    let named = |name, op| RobustOp::Custom(CustomOp { name, op });
    assert_eq!(op, named("identity", common::winsorized_10));
    assert_ne!(op, named("other", per_sample));
    assert_ne!(op, RobustOp::Custom(WINSORIZED));
    // The right shape in another dtype: a dtype error.
    fn in_f64(g: &Tensor) -> psg_runtime::Result<Tensor> {
        Tensor::zeros(DType::F64, &g.shape()[1..], &g.device())
    }
    let mut dp = common::custom_dp("f64 zeros", in_f64, 4.0, 3);
    let e = dp.step(&refs(&g)).unwrap_err();
    assert!(
        matches!(e, DpError::Runtime(psg_runtime::Error::DType(_))),
        "{e}"
    );
}

#[test]
fn robust_aggregations_refuse_an_epsilon_without_a_sensitivity() {
    let g = model(&mut Rng::new(8), 5, DType::F32);
    for op in robust_ops() {
        let aggregation = Aggregation::Robust {
            op,
            sensitivity: None,
        };
        assert!(aggregation.guarantee().is_err());
        assert_eq!(aggregation.sensitivity(&Clipping::flat(1.0)), None);
        let config =
            DpSgdConfig::new(1.0, Clipping::flat(1.0), 0.1, 5.0).with_aggregation(aggregation);
        let mut dp = DpSgd::new(config, NoiseGenerator::new(9)).unwrap();
        let step = dp.step(&refs(&g)).unwrap();
        assert_eq!(
            step.noise_std,
            1.0,
            "{}: noise at the clipped sum's scale",
            op.name()
        );
        let e = dp.epsilon(1e-5).unwrap_err();
        assert!(matches!(e, DpError::NoPrivacyGuarantee { .. }), "{e}");
        assert!(matches!(
            dp.epsilon_pld(1e-5),
            Err(DpError::NoPrivacyGuarantee { .. })
        ));
        // Nor through the accountant, whose epsilon would assume the clipping norm bounds it.
        assert!(matches!(
            dp.accountant(),
            Err(DpError::NoPrivacyGuarantee { .. })
        ));
        let msg = e.to_string();
        assert!(
            msg.contains(op.name()) && msg.contains(op.why_unbounded()),
            "{msg}"
        );
        assert!(Budget::new(1.0, 1e-5).unwrap().status(&dp).is_err());
        let tracker = EpochTracker::new(1, 1e-5).unwrap();
        assert!(tracker.after_step(&dp).is_err());
    }
}

#[test]
fn robust_aggregations_are_the_op_on_clipped_gradients_plus_noise() {
    let grads = model(&mut Rng::new(10), 7, DType::F32);
    let grads = refs(&grads);
    let factors = psg_ops::flat_clip_factors(&grads, 0.5).unwrap();
    for op in robust_ops() {
        let config = DpSgdConfig::new(0.7, Clipping::flat(0.5), 0.1, 5.0).with_aggregation(
            Aggregation::Robust {
                op,
                sensitivity: None,
            },
        );
        let mut dp = DpSgd::new(config, NoiseGenerator::new(12)).unwrap();
        let step = dp.step(&grads).unwrap();
        for (i, g) in grads.iter().enumerate() {
            // Reference: clip each row on the host, then the op.
            let p = g.per_sample_len();
            let f = factors.to_vec::<f32>().unwrap();
            let clipped: Vec<f32> = g
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .enumerate()
                .map(|(j, x)| x * f[j / p])
                .collect();
            let clipped = Tensor::from_vec(clipped, g.shape(), &Device::Cpu).unwrap();
            let aggregate = match op {
                RobustOp::Median => psg_ops::median(&clipped),
                RobustOp::OutlierMean(rule) => {
                    psg_ops::outlier_mean(&clipped, rule).map(|m| m.mean)
                }
                RobustOp::GaussianWeightedSum => psg_ops::gaussian_weighted_sum(&clipped),
                RobustOp::SignSum => psg_ops::sign_sum(&clipped),
                RobustOp::MajorityVote => psg_ops::majority_vote(&clipped),
                RobustOp::Custom(c) => (c.op)(&clipped),
            }
            .unwrap();
            let want =
                add_noise(&aggregate, 0.35, step.noise_keys[i], NoiseMode::Standard).unwrap();
            assert_same_bits(
                &format!("{} tensor {i}", op.name()),
                &step.gradients[i],
                &want,
            );
        }
    }
}

#[test]
fn a_supplied_sensitivity_gives_an_epsilon_that_states_it() {
    let s = UserSensitivity::new(
        2.0,
        "inputs are votes in {-1, 0, 1} over 4 coordinates: one sample moves the sum by at most 2",
    )
    .unwrap();
    let config = DpSgdConfig::new(1.2, Clipping::flat(1.0), 0.05, 10.0).with_aggregation(
        Aggregation::Robust {
            op: RobustOp::SignSum,
            sensitivity: Some(s.clone()),
        },
    );
    let mut dp = DpSgd::new(config, NoiseGenerator::new(13)).unwrap();
    let g = model(&mut Rng::new(14), 3, DType::F32);
    for _ in 0..3 {
        let step = dp.step(&refs(&g)).unwrap();
        assert_eq!(step.noise_std, 1.2 * 2.0);
    }
    let mut direct = RdpAccountant::new();
    direct.steps(1.2, 0.05, 3).unwrap();
    let report = dp.epsilon(1e-6).unwrap();
    assert_eq!(report.spent, direct.epsilon(1e-6).unwrap());
    assert_eq!(report.sensitivity, 2.0);
    assert_eq!(report.basis, SensitivityBasis::Caller(s));
    assert!(report
        .to_string()
        .contains("one sample moves the sum by at most 2"));
}

/// The error of building a run from `config`, or of its first step on `grads`.
fn step_error(config: DpSgdConfig, grads: &[Tensor]) -> DpError {
    match DpSgd::new(config, NoiseGenerator::new(0)) {
        Err(e) => e,
        Ok(mut dp) => dp.step(&refs(grads)).expect_err("the step should fail"),
    }
}

#[test]
fn invalid_parameters_are_typed_errors_that_say_what_to_do() {
    use psg_privacy::Error as P;
    let g = model(&mut Rng::new(15), 2, DType::F32);
    let ok = DpSgdConfig::new(1.0, Clipping::flat(1.0), 0.01, 10.0);
    let with = |f: &dyn Fn(&mut DpSgdConfig)| {
        let mut c = ok.clone();
        f(&mut c);
        step_error(c, &g)
    };
    for sigma in [-0.5, f64::NAN, f64::INFINITY] {
        let e = with(&|c| c.noise_multiplier = sigma);
        assert!(
            matches!(e, DpError::Privacy(P::InvalidNoiseMultiplier { .. })),
            "{e}"
        );
    }
    for q in [0.0, -0.1, 1.5, f64::NAN] {
        let e = with(&|c| c.sample_rate = q);
        assert!(
            matches!(e, DpError::Privacy(P::InvalidSampleRate { .. })),
            "{e}"
        );
        assert!(e.to_string().contains("(0, 1]"), "{e}");
    }
    for c_norm in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = with(&|c| c.clipping = Clipping::flat(c_norm));
        assert!(
            matches!(e, DpError::InvalidClipNorm { layer: None, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("max_grad_norm"), "{e}");
    }
    let e = with(&|c| c.clipping = Clipping::per_layer(vec![1.0, 0.0, 1.0]));
    assert!(
        matches!(e, DpError::InvalidClipNorm { layer: Some(1), .. }),
        "{e}"
    );
    let e = with(&|c| c.clipping = Clipping::per_layer(vec![1.0, 1.0]));
    assert!(
        matches!(
            e,
            DpError::ClipNormCountMismatch {
                norms: 2,
                tensors: 3
            }
        ),
        "{e}"
    );
    let e = with(&|c| c.clipping = Clipping::per_layer(vec![]));
    assert!(matches!(e, DpError::NoClipNorms), "{e}");
    assert!(e.to_string().contains("none was given"), "{e}");
    for e_size in [0.0, -3.0, f64::NAN] {
        let e = with(&|c| c.expected_batch_size = e_size);
        assert!(matches!(e, DpError::InvalidExpectedBatchSize { .. }), "{e}");
    }
    for (value, why) in [(0.0, "x"), (f64::NAN, "x"), (1.0, "  ")] {
        let e = with(&|c| {
            c.aggregation = Aggregation::Robust {
                op: RobustOp::Median,
                sensitivity: Some(UserSensitivity {
                    value,
                    justification: why.into(),
                }),
            }
        });
        assert!(
            matches!(
                e,
                DpError::InvalidSensitivity { .. } | DpError::MissingJustification { .. }
            ),
            "{e}"
        );
        assert!(UserSensitivity::new(value, why).is_err());
    }

    // Bad gradients.
    let mut mixed = model(&mut Rng::new(16), 2, DType::F32);
    mixed[1] = model(&mut Rng::new(17), 3, DType::F32).remove(1);
    let e = step_error(ok.clone(), &mixed);
    assert!(
        matches!(
            e,
            DpError::BatchSizeMismatch {
                tensor: 1,
                batch_size: 3,
                first: 2
            }
        ),
        "{e}"
    );
    let e = step_error(ok.clone(), &[]);
    assert!(matches!(e, DpError::NoGradients), "{e}");
    let half = vec![half::bf16::from_f32(1.0); 4];
    let half = Tensor::from_vec(half, &[2, 2], &Device::Cpu).unwrap();
    let e = step_error(ok.clone(), &[half]);
    assert!(
        matches!(
            e,
            DpError::UnsupportedDType {
                dtype: DType::BF16,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("f32"), "{e}");

    // A failed step records nothing.
    let mut dp = DpSgd::new(ok.clone(), NoiseGenerator::new(0)).unwrap();
    assert!(dp.step(&refs(&mixed)).is_err());
    assert_eq!(
        (dp.steps(), dp.accountant().unwrap().history().len()),
        (0, 0)
    );

    // Deltas and budgets.
    for delta in [0.0, 1.0, -1e-5, f64::NAN] {
        assert!(matches!(
            dp.epsilon(delta),
            Err(DpError::Privacy(P::InvalidDelta { .. }))
        ));
        assert!(Budget::new(1.0, delta).is_err());
        assert!(EpochTracker::new(10, delta).is_err());
    }
    for target in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = Budget::new(target, 1e-5).unwrap_err();
        assert!(
            matches!(e, DpError::Privacy(P::InvalidTargetEpsilon { .. })),
            "{e}"
        );
    }
    assert!(EpochTracker::new(0, 1e-5).is_err());
    assert!(EpochTracker::for_sample_rate(0.0, 1e-5).is_err());

    // Noise parameters.
    let t = Tensor::from_slice(&[1.0f32, 2.0], &[2], &Device::Cpu).unwrap();
    let key = NoiseKey {
        seed: 1,
        step: 0,
        offset: 0,
    };
    // 1e-46 rounds to 0 in f32: no noise at all, so it is refused for f32 (not for f64).
    for std in [-1.0, f64::NAN, f64::INFINITY, 1e300, 1e-46] {
        let e = add_noise(&t, std, key, NoiseMode::Standard).unwrap_err();
        assert!(
            matches!(e, DpError::Privacy(P::InvalidNoiseStd { .. })),
            "std {std}: {e}"
        );
    }
    let t64 = Tensor::from_slice(&[1.0f64, 2.0], &[2], &Device::Cpu).unwrap();
    assert!(add_noise(&t64, 1e-46, key, NoiseMode::Standard).is_ok());
    assert!(add_noise(&t, 0.0, key, NoiseMode::Standard).is_ok());
    assert!(add_noise(&t, 1e-45, key, NoiseMode::Standard).is_ok());
    let far = NoiseKey {
        offset: (1 << 62) - 1,
        ..key
    };
    let e = add_noise(&t, 1.0, far, NoiseMode::Standard).unwrap_err();
    assert!(
        matches!(e, DpError::Privacy(P::ElementRangeOutOfBounds { .. })),
        "{e}"
    );
    let mut gen = NoiseGenerator::new(0);
    gen.next_key((1 << 62) - 1, DType::F32).unwrap();
    assert!(
        gen.next_key(2, DType::F32).is_err(),
        "a step's counters end at 2^62"
    );
    assert_eq!(
        gen.next_key(1, DType::F32).unwrap().offset,
        (1 << 62) - 1,
        "a failed reservation takes nothing"
    );

    // Everything converts to the runtime's error type with its message.
    let e: psg_runtime::Error = DpError::NoGradients.into();
    assert!(
        matches!(e, psg_runtime::Error::InvalidParameter(ref m) if m.contains("no per-sample"))
    );
}

#[test]
fn noise_of_an_overflowing_shape_is_a_shape_error() {
    // It said "elements 0 .. 0 + 18446744073709551615 are out of range ... use a smaller offset".
    let key = NoiseKey {
        seed: 1,
        step: 0,
        offset: 0,
    };
    let err = noise(
        DType::F32,
        &[1 << 40, 1 << 40],
        &Device::Cpu,
        1.0,
        key,
        NoiseMode::Standard,
    )
    .unwrap_err();
    assert!(
        matches!(err, DpError::Runtime(psg_runtime::Error::Shape(_))),
        "{err}"
    );
}

/// A run resumed from a checkpoint (the generator at the step reached, the accountant of the
/// steps taken) continues the uninterrupted run: the same noise, the same gradients, the same
/// step count and epsilon. Without the accountant the steps before the checkpoint would go
/// uncounted (epsilon under-reported), and a generator behind them would repeat their noise:
/// both refused, saying how to resume.
#[test]
fn a_resumed_run_continues_the_uninterrupted_one_and_a_mismatch_is_refused() {
    let config = DpSgdConfig::new(1.1, Clipping::flat(1.0), 0.05, 8.0);
    let grads = model(&mut Rng::new(0x2E5), 8, DType::F32);
    let grads = refs(&grads);
    let (seed, before, after) = (0xC0FFEE, 6u64, 5u64);

    let mut whole = DpSgd::new(config.clone(), NoiseGenerator::new(seed)).unwrap();
    for _ in 0..before {
        whole.step(&grads).unwrap();
    }
    // The checkpoint: the step reached and the accountant of the steps taken.
    let saved = whole.accountant().unwrap().clone();
    assert_eq!(saved.total_steps(), before);
    let mut resumed = DpSgd::resume(
        config.clone(),
        NoiseGenerator::new(seed).at_step(before),
        saved,
    )
    .unwrap();
    assert_eq!(resumed.steps(), before);
    for _ in 0..after {
        let (a, b) = (whole.step(&grads).unwrap(), resumed.step(&grads).unwrap());
        assert_eq!(a.noise_keys, b.noise_keys);
        for (x, y) in a.gradients.iter().zip(&b.gradients) {
            assert_same_bits("a resumed step's gradients", x, y);
        }
    }
    assert_eq!(resumed.steps(), before + after);
    let (a, b) = (whole.epsilon(1e-5).unwrap(), resumed.epsilon(1e-5).unwrap());
    assert_eq!(a.epsilon(), b.epsilon());
    assert_eq!(a.to_string(), b.to_string());

    // A resumed generator with a fresh accountant, or with an accountant of fewer or more steps.
    let err = DpSgd::new(config.clone(), NoiseGenerator::new(seed).at_step(before)).err();
    assert!(
        matches!(
            err,
            Some(DpError::ResumeMismatch {
                generator_step: 6,
                accountant_steps: 0
            })
        ),
        "{err:?}"
    );
    let message = err.unwrap().to_string();
    assert!(
        message.contains("DpSgd::resume") && message.contains("at_step"),
        "{message}"
    );
    for recorded in [before - 1, before + 1] {
        let mut accountant = RdpAccountant::new();
        accountant.steps(1.1, 0.05, recorded).unwrap();
        let err = DpSgd::resume(
            config.clone(),
            NoiseGenerator::new(seed).at_step(before),
            accountant,
        )
        .err();
        assert!(
            matches!(err, Some(DpError::ResumeMismatch { accountant_steps, .. }) if accountant_steps == recorded),
            "{err:?}"
        );
    }
}
