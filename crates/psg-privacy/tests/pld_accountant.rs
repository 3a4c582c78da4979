//! The PLD accountant against dp_accounting 0.6.0's `PLDAccountant` (default discretization
//! 1e-4, ADD_OR_REMOVE_ONE), whose figures were computed with
//! `PLDAccountant().compose(PoissonSampledDpEvent(q, GaussianDpEvent(nm)), n)` and
//! `get_epsilon(delta)`, `get_delta(1.0)`.

use psg_privacy::accountant::{
    calibrate_noise_multiplier, calibrate_noise_multiplier_pld, PldAccountant, RdpAccountant,
    MAX_PLD_POINTS,
};
use psg_privacy::Error;

/// (runs of (noise multiplier, sample rate, steps), delta, dp_accounting's epsilon at delta,
/// dp_accounting's delta at epsilon 1).
type Case = (&'static [(f64, f64, u64)], f64, f64, f64);

const CASES: &[Case] = &[
    (
        &[(1.0, 0.01, 1000)],
        1e-5,
        1.8282436455855091,
        0.002612496806301316,
    ),
    (
        &[(1.5, 0.04, 2250)],
        1e-5,
        6.768787373891152,
        0.28136297000539623,
    ),
    (
        &[(0.8, 0.001, 10000)],
        1e-6,
        0.94732386397318,
        5.326861736992191e-07,
    ),
    (
        &[(1.0, 0.01, 500), (2.0, 0.02, 300)],
        1e-5,
        1.502258708832496,
        0.0006262658166161295,
    ),
    (
        &[(5.0, 1.0, 100)],
        1e-5,
        9.997256407509484,
        0.5098617491376479,
    ),
    (
        &[(1.1, 0.5, 3)],
        1e-3,
        3.3389310416252047,
        0.08849314518146106,
    ),
];

fn accountant(runs: &[(f64, f64, u64)]) -> PldAccountant {
    let mut acc = PldAccountant::new();
    for &(nm, q, n) in runs {
        acc.steps(nm, q, n).unwrap();
    }
    acc
}

#[test]
fn epsilon_and_delta_match_dp_accounting() {
    for &(runs, delta, want_eps, want_delta) in CASES {
        let acc = accountant(runs);
        let eps = acc.epsilon(delta).unwrap().epsilon;
        // Measured: within 3e-8 relative (the largest where epsilon is under 1).
        assert!(
            (eps - want_eps).abs() <= 1e-7 * want_eps,
            "{runs:?} at delta {delta}: epsilon {eps}, dp_accounting {want_eps}"
        );
        let d = acc.delta(1.0).unwrap();
        // Measured: within 3e-13 absolute (FFT noise against a delta of 5e-7), 9e-9 relative.
        assert!(
            (d - want_delta).abs() <= 1e-12 + 1e-7 * want_delta,
            "{runs:?}: delta at epsilon 1 {d}, dp_accounting {want_delta}"
        );
    }
}

#[test]
fn pld_is_tighter_than_rdp_and_both_grow_with_steps() {
    let mut last = 0.0;
    for n in [1u64, 10, 100, 1000] {
        let mut pld = PldAccountant::new();
        let mut rdp = RdpAccountant::new();
        pld.steps(1.0, 0.02, n).unwrap();
        rdp.steps(1.0, 0.02, n).unwrap();
        let (tight, loose) = (
            pld.epsilon(1e-5).unwrap().epsilon,
            rdp.epsilon(1e-5).unwrap().epsilon,
        );
        assert!(tight < loose, "{n} steps: PLD {tight} >= RDP {loose}");
        assert!(tight > last, "{n} steps: {tight} <= {last}");
        last = tight;
    }
}

#[test]
fn steps_recorded_one_by_one_or_at_once_agree() {
    let mut each = PldAccountant::new();
    for _ in 0..50 {
        each.step(1.2, 0.05).unwrap();
    }
    let mut once = PldAccountant::new();
    once.steps(1.2, 0.05, 50).unwrap();
    assert_eq!(each.history(), once.history());
    assert_eq!(each.total_steps(), 50);
    assert_eq!(
        each.epsilon(1e-5).unwrap().epsilon,
        once.epsilon(1e-5).unwrap().epsilon
    );
}

#[test]
fn a_coarser_grid_reports_more_never_less() {
    let mut fine = PldAccountant::new();
    let mut coarse = PldAccountant::with_discretization(1e-2).unwrap();
    fine.steps(1.0, 0.01, 1000).unwrap();
    coarse.steps(1.0, 0.01, 1000).unwrap();
    let (f, c) = (
        fine.epsilon(1e-5).unwrap().epsilon,
        coarse.epsilon(1e-5).unwrap().epsilon,
    );
    assert!(c >= f && c < f * 1.05, "coarse {c}, fine {f}");
    assert_eq!(coarse.discretization(), 1e-2);
}

#[test]
fn no_data_no_noise_and_tiny_deltas() {
    let acc = PldAccountant::new();
    let spent = acc.epsilon(1e-5).unwrap();
    assert_eq!((spent.epsilon, spent.best_order), (0.0, None));
    assert_eq!(acc.delta(0.0).unwrap(), 0.0);

    let mut zero_rate = PldAccountant::new();
    zero_rate.steps(0.0, 0.0, 10).unwrap();
    assert_eq!(zero_rate.epsilon(1e-5).unwrap().epsilon, 0.0);

    let mut no_noise = PldAccountant::new();
    no_noise.steps(1.0, 0.01, 10).unwrap();
    no_noise.step(0.0, 0.01).unwrap();
    assert_eq!(no_noise.epsilon(1e-5).unwrap().epsilon, f64::INFINITY);
    assert_eq!(no_noise.delta(5.0).unwrap(), 1.0);

    // A delta below the mass moved to infinite loss (1e-15 a run) has no finite epsilon.
    let mut acc = PldAccountant::new();
    acc.steps(1.0, 0.01, 100).unwrap();
    assert_eq!(acc.epsilon(1e-16).unwrap().epsilon, f64::INFINITY);
    assert!(acc.epsilon(1e-12).unwrap().epsilon.is_finite());
    // Delta falls with epsilon.
    let (a, b) = (acc.delta(0.1).unwrap(), acc.delta(0.5).unwrap());
    assert!(a > b && b > 0.0, "{a} {b}");
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let mut acc = PldAccountant::new();
    assert!(matches!(
        acc.step(-1.0, 0.01),
        Err(Error::InvalidNoiseMultiplier { .. })
    ));
    assert!(matches!(
        acc.step(1.0, 1.5),
        Err(Error::InvalidSampleRate { .. })
    ));
    assert!(acc.history().is_empty());
    assert!(matches!(acc.epsilon(0.0), Err(Error::InvalidDelta { .. })));
    assert!(matches!(
        acc.epsilon(f64::NAN),
        Err(Error::InvalidDelta { .. })
    ));
    assert!(matches!(acc.delta(-1.0), Err(Error::InvalidEpsilon { .. })));
    assert!(matches!(
        acc.delta(f64::INFINITY),
        Err(Error::InvalidEpsilon { .. })
    ));
    for interval in [0.0, -1e-4, 2.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            PldAccountant::with_discretization(interval),
            Err(Error::InvalidDiscretization { .. })
        ));
    }
}

#[test]
fn too_fine_a_pld_is_an_error_not_an_allocation() {
    // Noise multiplier 0.01 without sampling: a step's losses span about +-2000, 4e7 points at
    // 1e-4, over MAX_PLD_POINTS.
    let mut acc = PldAccountant::new();
    acc.step(0.01, 1.0).unwrap();
    let err = acc.epsilon(1e-5).unwrap_err();
    assert!(matches!(err, Error::PldTooLarge { limit, .. } if limit == MAX_PLD_POINTS));
    assert!(err.to_string().contains("with_discretization"), "{err}");
    // A coarser grid takes it.
    let mut coarse = PldAccountant::with_discretization(0.01).unwrap();
    coarse.step(0.01, 1.0).unwrap();
    assert!(coarse.epsilon(1e-5).unwrap().epsilon > 100.0);
}

#[test]
fn small_deltas_agree_only_as_far_as_floating_point_noise_allows() {
    // dp_accounting 0.6.0: 3.2904601067135446. At delta 1e-10 connect-the-dots' noise shows in
    // both libraries (a review found up to 5e-3 relative, either way, over 114 settings).
    let acc = accountant(&[(1.0, 0.01, 1000)]);
    let eps = acc.epsilon(1e-10).unwrap().epsilon;
    assert!((eps - 3.290_460_106_713_544_6).abs() < 1e-3 * 3.29, "{eps}");
    // One step gives 1e-15 to infinite loss, as dp_accounting's dense PMFs do: no finite
    // epsilon at delta 1e-16 (dp_accounting: inf), and delta at least that at any epsilon.
    let one = accountant(&[(10.0, 1e-3, 1)]);
    assert_eq!(one.epsilon(1e-16).unwrap().epsilon, f64::INFINITY);
    assert!(one.delta(0.1).unwrap() >= 1e-15);
}

#[test]
fn pld_calibration_meets_the_budget_with_less_noise_than_rdp() {
    // Measured (release): 1.416015625 against RDP's 1.5234375.
    let (target, delta, q, steps) = (1.0, 1e-5, 0.01, 1000);
    let sigma = calibrate_noise_multiplier_pld(target, delta, q, steps, 0.01).unwrap();
    let mut acc = PldAccountant::new();
    acc.steps(sigma, q, steps).unwrap();
    let eps = acc.epsilon(delta).unwrap().epsilon;
    assert!(eps <= target && eps >= target - 0.01, "{sigma}: {eps}");
    let rdp_sigma = calibrate_noise_multiplier(target, delta, q, steps, 0.01).unwrap();
    assert!(sigma < 0.95 * rdp_sigma, "PLD {sigma}, RDP {rdp_sigma}");
}

#[test]
fn pld_calibration_refuses_what_it_cannot_do() {
    let cal =
        |t: f64, d: f64, q: f64, n: u64, tol: f64| calibrate_noise_multiplier_pld(t, d, q, n, tol);
    assert!(matches!(
        cal(0.0, 1e-5, 0.01, 10, 0.01),
        Err(Error::InvalidTargetEpsilon { .. })
    ));
    assert!(matches!(
        cal(1.0, 1.0, 0.01, 10, 0.01),
        Err(Error::InvalidDelta { .. })
    ));
    assert!(matches!(
        cal(1.0, 1e-5, 0.0, 10, 0.01),
        Err(Error::InvalidSampleRate { .. })
    ));
    assert!(matches!(
        cal(1.0, 1e-5, 0.01, 0, 0.01),
        Err(Error::ZeroSteps)
    ));
    assert!(matches!(
        cal(1.0, 1e-5, 0.01, 10, 0.0),
        Err(Error::InvalidTolerance { .. })
    ));
    // Steps no PLD can hold, even at noise 20: the size error, not a made-up multiplier.
    assert!(matches!(
        cal(1.0, 1e-5, 0.5, u64::MAX, 0.01),
        Err(Error::PldTooLarge { .. })
    ));
}
