//! The accountant against figures computed with Opacus' own code (`opacus/accountants/rdp.py` and
//! `analysis/rdp.py`, with NumPy and SciPy), to 1e-7 relative; in practice they agree to ~1e-13.

use proptest::prelude::*;
use psg_privacy::accountant::{
    calibrate_noise_multiplier, calibrate_noise_multiplier_for_epochs,
    calibrate_noise_multiplier_over, default_orders, HistoryEntry, RdpAccountant,
};
use psg_privacy::Error;

const DELTA: f64 = 1e-5;

fn assert_close(got: f64, want: f64, what: &str) {
    let rel = ((got - want) / want).abs();
    assert!(
        rel < 1e-7,
        "{what}: got {got}, Opacus {want} (relative error {rel:e})"
    );
}

fn epsilon_of(history: &[(f64, f64, u64)], delta: f64) -> (f64, Option<f64>) {
    let mut accountant = RdpAccountant::new();
    for &(sigma, q, n) in history {
        accountant.steps(sigma, q, n).unwrap();
    }
    let spent = accountant.epsilon(delta).unwrap();
    (spent.epsilon, spent.best_order)
}

#[test]
fn dp_sgd_case_matches_opacus() {
    // The first case of the privacy issue: noise 1.5, sample rate 0.04, 2250 steps.
    let mut accountant = RdpAccountant::new();
    for _ in 0..2250 {
        accountant.step(1.5, 0.04).unwrap();
    }
    let spent = accountant.epsilon(DELTA).unwrap();
    assert_close(spent.epsilon, 7.329_111_171_438_654_5, "epsilon");
    assert_eq!(spent.best_order, Some(3.9));
    assert_eq!(
        accountant.history(),
        [HistoryEntry {
            noise_multiplier: 1.5,
            sample_rate: 0.04,
            steps: 2250
        }]
    );
}

#[test]
fn two_mechanism_composition_matches_opacus() {
    let orders: Vec<f64> = (2..=32).map(f64::from).collect();
    let mut accountant = RdpAccountant::with_orders(orders).unwrap();
    accountant.steps(1.0, 1e-5, 10).unwrap();
    accountant.steps(3.0, 1e-4, 4).unwrap();
    let spent = accountant.epsilon(DELTA).unwrap();
    assert_close(spent.epsilon, 0.336_344_063_392_595_65, "epsilon");
    assert_eq!(spent.best_order, Some(23.0));
}

#[test]
fn changing_steps_compose_like_opacus() {
    let history = [(1.1, 0.01, 1000), (0.8, 0.02, 50), (1.1, 0.01, 300)];
    let (eps, order) = epsilon_of(&history, 1e-6);
    assert_close(eps, 3.876_201_608_403_028, "epsilon");
    assert_eq!(order, Some(4.9));
}

#[test]
fn one_step_matches_opacus() {
    let (eps, order) = epsilon_of(&[(1.5, 0.04, 1)], DELTA);
    assert_close(eps, 0.596_686_738_937_669_2, "epsilon");
    assert_eq!(order, Some(15.0));
}

#[test]
fn ten_million_steps_match_opacus() {
    let (eps, order) = epsilon_of(&[(1.5, 0.04, 10_000_000)], DELTA);
    assert_close(eps, 4_928.345_666_626_988_5, "epsilon");
    assert_eq!(order, Some(1.1)); // the smallest order: the orders should be widened downwards
    let (eps, order) = epsilon_of(&[(1.0, 1e-4, 10_000_000)], DELTA);
    assert_close(eps, 1.764_130_914_757_208_4, "epsilon");
    assert_eq!(order, Some(10.9));
}

#[test]
fn full_batch_sampling_is_the_plain_gaussian_mechanism() {
    // q = 1: RDP is alpha / (2 sigma^2) per step, as in Opacus.
    let (eps, order) = epsilon_of(&[(1.0, 1.0, 100)], DELTA);
    assert_close(eps, 96.116_308_425_056_02, "epsilon");
    assert_eq!(order, Some(1.5));
    let (eps, order) = epsilon_of(&[(2.0, 1.0, 1)], DELTA);
    assert_close(eps, 2.165_715_659_029_443_5, "epsilon");
    assert_eq!(order, Some(9.6));
}

#[test]
fn zero_noise_gives_infinite_epsilon() {
    // As Opacus: RDP is inf at every order, epsilon inf, and the first order is reported.
    let (eps, order) = epsilon_of(&[(0.0, 0.04, 10)], DELTA);
    assert_eq!(eps, f64::INFINITY);
    assert_eq!(order, Some(1.1));
}

#[test]
fn sample_rate_zero_is_epsilon_zero() {
    // psg: no step reads data, so the outputs are (0, 0)-DP. Opacus reports 0.10286725121127971
    // (order 63) here, from the conversion term alone; see the accountant module docs.
    let (eps, order) = epsilon_of(&[(1.0, 0.0, 100)], DELTA);
    assert_eq!((eps, order), (0.0, None));
    let (eps, order) = epsilon_of(&[(0.0, 0.0, 100)], DELTA);
    assert_eq!((eps, order), (0.0, None));
    assert_eq!(RdpAccountant::new().epsilon(DELTA).unwrap().epsilon, 0.0);
    // Rate-0 steps among others add nothing, as in Opacus.
    let (eps, order) = epsilon_of(&[(1.0, 0.0, 100), (1.5, 0.04, 2250)], DELTA);
    assert_close(eps, 7.329_111_171_438_654_5, "epsilon");
    assert_eq!(order, Some(3.9));
}

#[test]
fn history_merges_consecutive_identical_steps() {
    let mut accountant = RdpAccountant::new();
    accountant.step(1.0, 0.1).unwrap();
    accountant.steps(1.0, 0.1, 4).unwrap();
    accountant.steps(1.0, 0.2, 0).unwrap();
    accountant.step(2.0, 0.1).unwrap();
    accountant.step(1.0, 0.1).unwrap();
    let history: Vec<_> = accountant
        .history()
        .iter()
        .map(|h| (h.noise_multiplier, h.sample_rate, h.steps))
        .collect();
    assert_eq!(history, [(1.0, 0.1, 5), (2.0, 0.1, 1), (1.0, 0.1, 1)]);
    assert_eq!(accountant.total_steps(), 7);
    assert_eq!(RdpAccountant::new().total_steps(), 0);
}

#[test]
fn default_orders_are_opacus_default_alphas() {
    let orders = default_orders();
    assert_eq!(orders.len(), 99 + 52);
    assert_eq!(
        (orders[0], orders[98], orders[99], orders[150]),
        (1.1, 10.9, 12.0, 63.0)
    );
    assert_eq!(orders[9], 2.0); // 1 + 10 / 10 is an integer order
}

#[test]
fn calibration_round_trips() {
    for (target, q, steps) in [
        (8.0, 0.04, 2250),
        (1.0, 256.0 / 60000.0, 2343),
        (0.5, 0.01, 100),
    ] {
        let sigma = calibrate_noise_multiplier(target, DELTA, q, steps, 0.01).unwrap();
        let (eps, _) = epsilon_of(&[(sigma, q, steps)], DELTA);
        assert!(
            eps <= target && target - eps <= 0.01,
            "target {target}: sigma {sigma} gives {eps}"
        );
    }
    // Opacus' get_noise_multiplier returns exactly these for the first two cases.
    assert_eq!(
        calibrate_noise_multiplier(8.0, DELTA, 0.04, 2250, 0.01).unwrap(),
        1.416_015_625
    );
    let sigma =
        calibrate_noise_multiplier_for_epochs(1.0, DELTA, 256.0 / 60000.0, 10, 0.01).unwrap();
    assert_eq!(sigma, 1.162_109_375);
}

#[test]
fn calibration_reports_an_unreachable_budget() {
    // 10^15 unsampled steps: even a multiplier of 10^6 spends more than 1.
    let err = calibrate_noise_multiplier(1.0, DELTA, 1.0, 1_000_000_000_000_000, 0.01).unwrap_err();
    assert!(matches!(err, Error::BudgetTooLow { .. }), "{err}");
    // Below what orders up to 63 can show at any noise (0.1029 at delta = 1e-5): more noise
    // cannot help, and the message says so instead of advising fewer steps.
    let err = calibrate_noise_multiplier(0.09, DELTA, 1e-6, 1, 0.01).unwrap_err();
    match &err {
        Error::BelowOrdersFloor {
            floor, max_order, ..
        } => assert!(
            (floor - 0.102_87).abs() < 1e-4 && *max_order == 63.0,
            "{err}"
        ),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("more noise cannot help"), "{err}");
}

/// Where the conversion's minimum is negative (delta near 1, or little RDP), epsilon is 0: an
/// (epsilon < 0, delta) guarantee implies (0, delta). The minima were -0.693 and -3.249.
#[test]
fn epsilon_is_never_negative() {
    let mut one = RdpAccountant::new();
    one.step(10.0, 0.01).unwrap();
    assert_eq!(one.epsilon(0.5).unwrap().epsilon, 0.0);
    let mut many = RdpAccountant::new();
    many.steps(1.0, 0.01, 1000).unwrap();
    assert_eq!(many.epsilon(0.999).unwrap().epsilon, 0.0);
    assert!(many.epsilon(DELTA).unwrap().epsilon > 2.0);
}

#[test]
fn invalid_inputs_are_typed_errors() {
    let mut accountant = RdpAccountant::new();
    for delta in [0.0, 1.0, -1e-5, f64::NAN] {
        assert!(matches!(
            accountant.epsilon(delta),
            Err(Error::InvalidDelta { .. })
        ));
    }
    for q in [-0.1, 1.5, f64::NAN] {
        assert!(matches!(
            accountant.step(1.0, q),
            Err(Error::InvalidSampleRate { .. })
        ));
    }
    for sigma in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            accountant.step(sigma, 0.1),
            Err(Error::InvalidNoiseMultiplier { .. })
        ));
    }
    assert!(accountant.history().is_empty());
    assert!(matches!(
        RdpAccountant::with_orders(vec![]),
        Err(Error::EmptyOrders)
    ));
    for order in [1.0, 0.5, f64::INFINITY, f64::NAN, 1e5] {
        assert!(matches!(
            RdpAccountant::with_orders(vec![2.0, order]),
            Err(Error::InvalidOrder { .. })
        ));
    }
    let calibrate = |t, d, q, n, tol| calibrate_noise_multiplier(t, d, q, n, tol).unwrap_err();
    assert!(matches!(
        calibrate(0.0, DELTA, 0.1, 10, 0.01),
        Error::InvalidTargetEpsilon { .. }
    ));
    assert!(matches!(
        calibrate(f64::NAN, DELTA, 0.1, 10, 0.01),
        Error::InvalidTargetEpsilon { .. }
    ));
    assert!(matches!(
        calibrate(1.0, 2.0, 0.1, 10, 0.01),
        Error::InvalidDelta { .. }
    ));
    assert!(matches!(
        calibrate(1.0, DELTA, 0.0, 10, 0.01),
        Error::InvalidSampleRate { .. }
    ));
    assert!(matches!(
        calibrate(1.0, DELTA, 0.1, 0, 0.01),
        Error::ZeroSteps
    ));
    assert!(matches!(
        calibrate(1.0, DELTA, 0.1, 10, 0.0),
        Error::InvalidTolerance { .. }
    ));
    let err = calibrate_noise_multiplier_for_epochs(1.0, DELTA, 0.1, 0, 0.01).unwrap_err();
    assert!(matches!(err, Error::ZeroSteps));
    // Messages say what is wrong and what to do.
    let message = RdpAccountant::new().epsilon(2.0).unwrap_err().to_string();
    assert!(
        message.contains("delta 2") && message.contains("between 0 and 1"),
        "{message}"
    );
}

#[test]
fn display_names_the_sampling_assumption() {
    let (mut accountant, delta) = (RdpAccountant::new(), DELTA);
    accountant.steps(1.5, 0.04, 2250).unwrap();
    let text = accountant.epsilon(delta).unwrap().to_string();
    assert!(
        text.contains("Poisson sampling") && text.contains("order 3.9"),
        "{text}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// More steps, a higher sample rate or less noise never lower epsilon.
    #[test]
    fn epsilon_is_monotone(sigma in 0.5f64..5.0, q in 0.001f64..0.5, steps in 1u64..5000) {
        let (base, _) = epsilon_of(&[(sigma, q, steps)], DELTA);
        let (more_steps, _) = epsilon_of(&[(sigma, q, steps + 100)], DELTA);
        let (more_rate, _) = epsilon_of(&[(sigma, (q * 1.5).min(1.0), steps)], DELTA);
        let (less_noise, _) = epsilon_of(&[(sigma * 0.9, q, steps)], DELTA);
        prop_assert!(base.is_finite() && base > 0.0);
        prop_assert!(more_steps >= base * (1.0 - 1e-12));
        prop_assert!(more_rate >= base * (1.0 - 1e-12));
        prop_assert!(less_noise >= base * (1.0 - 1e-12));
    }
}

#[test]
fn epsilon_never_falls_as_steps_grow_even_where_the_series_cancel() {
    // At sigma = 327680 the fractional orders' series cancel to a negative ln(A) (about -1e-12
    // at order 1.1); taken as it is, 1e14 steps reported epsilon = 0 where 1e13 gave 32.
    let mut last = 0.0;
    for steps in [10_000_000_000u64, 10_000_000_000_000, 100_000_000_000_000] {
        let mut accountant = RdpAccountant::new();
        accountant.steps(327_680.0, 0.5, steps).unwrap();
        let spent = accountant.epsilon(DELTA).unwrap();
        assert!(spent.epsilon > 0.0, "{steps} steps: {spent:?}");
        assert!(
            spent.epsilon >= last,
            "{steps} steps: {} < {last}",
            spent.epsilon
        );
        last = spent.epsilon;
    }
}

/// The docs' replay example (`sampling.rs`, the README): an example drawn in 21 of 512 batches
/// at q = 1/64 and replayed is protected by 21 unsubsampled steps, about 31 by this accounting
/// (noise multiplier 1, delta = 1e-5), where the subsampled run reports 2.5.
#[test]
fn replayed_batches_lose_the_subsampling() {
    let (subsampled, _) = epsilon_of(&[(1.0, 1.0 / 64.0, 512)], 1e-5);
    let (replayed, _) = epsilon_of(&[(1.0, 1.0, 21)], 1e-5);
    assert!((subsampled - 2.48).abs() < 0.01, "{subsampled}");
    assert!((replayed - 31.1).abs() < 0.1, "{replayed}");
}

/// A tolerance finer than f64 resolves epsilon, or a target no finite multiplier's epsilon
/// reaches, ends the bisection where its bounds are one float apart: the least multiplier whose
/// epsilon is within the target, where it used to give up and ask for a bug report.
#[test]
fn calibration_stops_at_adjacent_bounds() {
    let sigma = calibrate_noise_multiplier(3.0, 1e-5, 0.01, 10_000, 1e-300).unwrap();
    let coarse = calibrate_noise_multiplier(3.0, 1e-5, 0.01, 10_000, 0.01).unwrap();
    let (eps, _) = epsilon_of(&[(sigma, 0.01, 10_000)], 1e-5);
    assert!(eps <= 3.0 && sigma <= coarse, "{sigma} {eps} {coarse}");
    let below = f64::from_bits(sigma.to_bits() - 1);
    assert!(
        epsilon_of(&[(below, 0.01, 10_000)], 1e-5).0 > 3.0,
        "{below}"
    );
    let huge = calibrate_noise_multiplier(1e300, 1e-5, 0.01, 10_000, 0.01).unwrap();
    assert!(huge > 0.0 && epsilon_of(&[(huge, 0.01, 10_000)], 1e-5).0 <= 1e300);
}

/// Where the best order is the least or greatest of the accountant's, the result says so (as
/// Opacus warns): more orders may give a smaller epsilon. Figures from a reviewer's check
/// against Opacus.
#[test]
fn a_best_order_at_the_end_of_the_range_is_flagged() {
    let spent = |orders: Option<Vec<f64>>, sigma: f64, q: f64, n: u64| {
        let mut a = match orders {
            Some(o) => RdpAccountant::with_orders(o).unwrap(),
            None => RdpAccountant::new(),
        };
        a.steps(sigma, q, n).unwrap();
        a.epsilon(1e-5).unwrap()
    };
    // Much noise, few steps: the greatest default order (63); with orders to 256, 0.020 at
    // 256, still the end; with orders to 2000, 0.014 at order 345.
    let high = spent(None, 5.0, 0.001, 100);
    assert_eq!(high.best_order, Some(63.0));
    assert!(
        high.order_at_edge && high.to_string().contains("wider range of orders"),
        "{high}"
    );
    let wider = spent(Some((2..=256).map(f64::from).collect()), 5.0, 0.001, 100);
    assert!(wider.epsilon < 0.021 && wider.order_at_edge, "{wider}");
    let widest = spent(Some((2..=2000).map(f64::from).collect()), 5.0, 0.001, 100);
    assert!(
        widest.epsilon < wider.epsilon && !widest.order_at_edge,
        "{widest}"
    );
    // Many steps, little noise: the least default order (1.1).
    let low = spent(None, 1.5, 0.04, 10_000_000);
    assert_eq!(low.best_order, Some(1.1));
    assert!(low.order_at_edge, "{low}");
    // Typical runs, no noise (inf) and no data (0): not flagged.
    let typical = spent(None, 1.1, 0.01, 10_000);
    assert!(
        !typical.order_at_edge && !typical.to_string().contains("wider"),
        "{typical}"
    );
    assert!(!spent(None, 0.0, 0.01, 10).order_at_edge);
    assert!(!RdpAccountant::new().epsilon(1e-5).unwrap().order_at_edge);
}

/// Calibration over other orders: the default orders give the default calibration; larger ones
/// reach a target below the default orders' floor, which the floor's error now points to; bad
/// orders are refused as `with_orders` refuses them.
#[test]
fn calibration_over_other_orders() {
    let defaults = calibrate_noise_multiplier_over(&default_orders(), 8.0, 1e-5, 0.04, 2250, 0.01);
    assert_eq!(
        defaults.unwrap(),
        calibrate_noise_multiplier(8.0, 1e-5, 0.04, 2250, 0.01).unwrap()
    );
    let floor = calibrate_noise_multiplier(0.05, 1e-5, 0.001, 100, 0.001).unwrap_err();
    assert!(
        floor
            .to_string()
            .contains("calibrate_noise_multiplier_over"),
        "{floor}"
    );
    let orders: Vec<f64> = (2..=2000).map(f64::from).collect();
    let sigma = calibrate_noise_multiplier_over(&orders, 0.05, 1e-5, 0.001, 100, 0.001).unwrap();
    let mut accountant = RdpAccountant::with_orders(orders).unwrap();
    accountant.steps(sigma, 0.001, 100).unwrap();
    let eps = accountant.epsilon(1e-5).unwrap().epsilon;
    assert!((0.049..=0.05).contains(&eps), "{sigma} {eps}");
    assert!(calibrate_noise_multiplier_over(&[], 1.0, 1e-5, 0.01, 10, 0.01).is_err());
    assert!(calibrate_noise_multiplier_over(&[0.5], 1.0, 1e-5, 0.01, 10, 0.01).is_err());
}
