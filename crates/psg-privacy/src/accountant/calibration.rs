//! Noise calibration: the smallest noise multiplier (to a tolerance) that meets a budget.

use super::rdp::compute_rdp;
use super::{conversion::privacy_spent, default_orders, PldAccountant};
use crate::error::{Error, Result};

/// Opacus' `MAX_SIGMA`: the doubling search gives up past this multiplier.
const MAX_SIGMA: f64 = 1e6;
/// Bisection steps before giving up; the search settles in well under 100.
const MAX_BISECTIONS: u32 = 1_000;

/// The noise multiplier that keeps `steps` steps at `sample_rate` within `(target_epsilon, delta)`.
///
/// This is Opacus' `get_noise_multiplier` (with `steps`) over the default orders: starting from
/// `sigma_low = 0, sigma_high = 10`, double `sigma_high` until its epsilon is at most the target,
/// then bisect until `target_epsilon - epsilon(sigma_high) <= epsilon_tolerance`, and return
/// `sigma_high` (or stop where the bisection's bounds are adjacent floats). The result therefore
/// always satisfies the budget: `epsilon(result) <= target_epsilon`, within `epsilon_tolerance`
/// of it or as close as a multiplier in f64 comes. Like Opacus, only the epsilon is pinned
/// down, not the multiplier's digits. The guarantee holds for Poisson sampling at `sample_rate`.
///
/// # Errors
///
/// [`Error::InvalidTargetEpsilon`], [`Error::InvalidDelta`], [`Error::InvalidSampleRate`] (here
/// it must be in (0, 1]), [`Error::ZeroSteps`], [`Error::InvalidTolerance`], and
/// [`Error::BelowOrdersFloor`] when the target is below what the RDP orders can show at any
/// noise, and [`Error::BudgetTooLow`] when a multiplier above 1e6 is still not enough.
///
/// # Example
///
/// ```
/// use psg_privacy::accountant::{calibrate_noise_multiplier, RdpAccountant};
///
/// let sigma = calibrate_noise_multiplier(8.0, 1e-5, 0.04, 2250, 0.01)?;
/// let mut accountant = RdpAccountant::new();
/// accountant.steps(sigma, 0.04, 2250)?;
/// let eps = accountant.epsilon(1e-5)?.epsilon;
/// assert!(eps <= 8.0 && eps >= 8.0 - 0.01);
/// # Ok::<(), psg_privacy::Error>(())
/// ```
pub fn calibrate_noise_multiplier(
    target_epsilon: f64,
    delta: f64,
    sample_rate: f64,
    steps: u64,
    epsilon_tolerance: f64,
) -> Result<f64> {
    calibrate_noise_multiplier_over(
        &default_orders(),
        target_epsilon,
        delta,
        sample_rate,
        steps,
        epsilon_tolerance,
    )
}

/// [`calibrate_noise_multiplier`] over the given RDP orders (those of an
/// [`RdpAccountant::with_orders`](super::RdpAccountant::with_orders), which then reports the
/// same epsilon): for targets below the default orders' floor (about 0.103 at delta = 1e-5),
/// or a tighter bound where the best default order is at the end of their range.
///
/// ```
/// use psg_privacy::accountant::{calibrate_noise_multiplier_over, RdpAccountant};
///
/// let orders: Vec<f64> = (2..=2000).map(f64::from).collect();
/// let sigma = calibrate_noise_multiplier_over(&orders, 0.05, 1e-5, 0.001, 100, 0.001)?;
/// let mut accountant = RdpAccountant::with_orders(orders)?;
/// accountant.steps(sigma, 0.001, 100)?;
/// assert!(accountant.epsilon(1e-5)?.epsilon <= 0.05);
/// # Ok::<(), psg_privacy::Error>(())
/// ```
///
/// # Errors
///
/// As [`calibrate_noise_multiplier`], and [`Error::EmptyOrders`] or [`Error::InvalidOrder`] as
/// [`RdpAccountant::with_orders`](super::RdpAccountant::with_orders).
pub fn calibrate_noise_multiplier_over(
    orders: &[f64],
    target_epsilon: f64,
    delta: f64,
    sample_rate: f64,
    steps: u64,
    epsilon_tolerance: f64,
) -> Result<f64> {
    let orders = super::RdpAccountant::with_orders(orders.to_vec())?
        .orders()
        .to_vec();
    check_inputs(target_epsilon, delta, sample_rate, steps, epsilon_tolerance)?;
    // With an RDP of 0 (infinite noise) the conversion still gives a positive epsilon at these
    // orders; no multiplier can go below it.
    let floor = privacy_spent(&orders, &vec![0.0; orders.len()], delta).epsilon;
    if target_epsilon < floor {
        return Err(Error::BelowOrdersFloor {
            target_epsilon,
            floor,
            delta,
            max_order: orders.iter().fold(0.0, |a: f64, &b| a.max(b)),
        });
    }
    search(target_epsilon, epsilon_tolerance, |sigma| {
        let rdp: Vec<f64> = orders
            .iter()
            .map(|&order| compute_rdp(sample_rate, sigma, order) * steps as f64)
            .collect();
        Ok(privacy_spent(&orders, &rdp, delta).epsilon)
    })
}

/// [`calibrate_noise_multiplier`] through privacy loss distributions: the smallest noise
/// multiplier (to the tolerance) whose [`PldAccountant`] epsilon for `steps` steps at
/// `sample_rate` is at most `target_epsilon`, by the same search. PLD accounting is tighter than
/// RDP, so the multiplier is smaller: less noise for the same budget (at delta 1e-5 and
/// tolerance 0.01: 1.42 against RDP's 1.50 for epsilon 7.33 at sample rate 0.04 over 2250
/// steps, 1.42 against 1.52 for epsilon 1 at sample rate 0.01 over 1000). It is also slower,
/// about a second or more rather than milliseconds: each of the search's steps composes a PLD.
/// The budget then holds as a [`PldAccountant`] reports it, and the guarantee for Poisson
/// sampling at `sample_rate`.
///
/// ```
/// use psg_privacy::accountant::{calibrate_noise_multiplier_pld, PldAccountant};
///
/// let sigma = calibrate_noise_multiplier_pld(1.0, 1e-5, 0.01, 1000, 0.01)?;
/// let mut accountant = PldAccountant::new();
/// accountant.steps(sigma, 0.01, 1000)?;
/// let eps = accountant.epsilon(1e-5)?.epsilon;
/// assert!(eps <= 1.0 && eps >= 1.0 - 0.01);
/// # Ok::<(), psg_privacy::Error>(())
/// ```
///
/// # Errors
///
/// As [`calibrate_noise_multiplier`] (but for the RDP orders' floor, which PLDs do not have),
/// and [`Error::PldTooLarge`] where a multiplier the search doubles to (from 20) gives too large
/// a PLD (absurd step counts). While it bisects, a multiplier whose PLD would be too large
/// counts as too little noise.
pub fn calibrate_noise_multiplier_pld(
    target_epsilon: f64,
    delta: f64,
    sample_rate: f64,
    steps: u64,
    epsilon_tolerance: f64,
) -> Result<f64> {
    check_inputs(target_epsilon, delta, sample_rate, steps, epsilon_tolerance)?;
    search(target_epsilon, epsilon_tolerance, |sigma| {
        let mut accountant = PldAccountant::new();
        accountant.steps(sigma, sample_rate, steps)?;
        Ok(accountant.epsilon(delta)?.epsilon)
    })
}

/// The checks every calibration makes of its arguments.
fn check_inputs(
    target_epsilon: f64,
    delta: f64,
    sample_rate: f64,
    steps: u64,
    epsilon_tolerance: f64,
) -> Result<()> {
    if !(target_epsilon.is_finite() && target_epsilon > 0.0) {
        return Err(Error::InvalidTargetEpsilon { target_epsilon });
    }
    super::check_delta(delta)?;
    if !(sample_rate > 0.0 && sample_rate <= 1.0) {
        return Err(Error::InvalidSampleRate {
            sample_rate,
            expected: "in (0, 1] for calibration (at rate 0 no noise is needed)",
        });
    }
    if steps == 0 {
        return Err(Error::ZeroSteps);
    }
    if !(epsilon_tolerance.is_finite() && epsilon_tolerance > 0.0) {
        return Err(Error::InvalidTolerance {
            tolerance: epsilon_tolerance,
        });
    }
    Ok(())
}

/// Opacus' search: from `sigma_low = 0, sigma_high = 10`, double `sigma_high` until its epsilon
/// is at most the target, then bisect until `target - epsilon(sigma_high) <= tolerance` (or the
/// bounds are adjacent floats), and return `sigma_high`. An error of `epsilon_at` while
/// doubling is returned; while bisecting, [`Error::PldTooLarge`] means too little noise (a PLD
/// grows as the noise shrinks), any other error is returned.
fn search(
    target_epsilon: f64,
    epsilon_tolerance: f64,
    mut epsilon_at: impl FnMut(f64) -> Result<f64>,
) -> Result<f64> {
    let mut sigma_low = 0.0;
    let mut sigma_high = 10.0;
    let mut eps_high = f64::INFINITY;
    while eps_high > target_epsilon {
        sigma_high *= 2.0;
        eps_high = epsilon_at(sigma_high)?;
        if sigma_high > MAX_SIGMA {
            return Err(Error::BudgetTooLow {
                target_epsilon,
                noise_multiplier: sigma_high,
                epsilon: eps_high,
            });
        }
    }

    let mut iterations = 0;
    while target_epsilon - eps_high > epsilon_tolerance {
        if iterations == MAX_BISECTIONS {
            return Err(Error::CalibrationDidNotConverge { iterations });
        }
        iterations += 1;
        let sigma = (sigma_low + sigma_high) / 2.0;
        // Bounds one float apart: epsilon cannot come closer to the target (a tolerance finer
        // than f64 resolves it, or a target no finite multiplier's epsilon reaches), and
        // `sigma_high` is the least multiplier within it.
        if !(sigma > sigma_low && sigma < sigma_high) {
            break;
        }
        let eps = match epsilon_at(sigma) {
            Err(Error::PldTooLarge { .. }) => f64::INFINITY,
            other => other?,
        };
        if eps < target_epsilon {
            sigma_high = sigma;
            eps_high = eps;
        } else {
            sigma_low = sigma;
        }
    }
    Ok(sigma_high)
}

/// [`calibrate_noise_multiplier`] for a number of epochs: `steps = int(epochs / sample_rate)`,
/// as Opacus computes it.
///
/// # Errors
///
/// As [`calibrate_noise_multiplier`]; `epochs == 0` gives [`Error::ZeroSteps`].
pub fn calibrate_noise_multiplier_for_epochs(
    target_epsilon: f64,
    delta: f64,
    sample_rate: f64,
    epochs: u64,
    epsilon_tolerance: f64,
) -> Result<f64> {
    if !(sample_rate > 0.0 && sample_rate <= 1.0) {
        return Err(Error::InvalidSampleRate {
            sample_rate,
            expected: "in (0, 1] for calibration (at rate 0 no noise is needed)",
        });
    }
    // Truncation toward zero, like Python's int(); the cast saturates instead of overflowing.
    let steps = (epochs as f64 / sample_rate) as u64;
    calibrate_noise_multiplier(target_epsilon, delta, sample_rate, steps, epsilon_tolerance)
}
