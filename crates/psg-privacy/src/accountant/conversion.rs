//! From RDP at several orders to an (epsilon, delta) guarantee.

use super::PrivacySpent;

/// Opacus' `get_privacy_spent`: Theorem 21 of Balle et al., "Hypothesis testing interpretations
/// and Renyi differential privacy" (arXiv:1905.09982), minimised over the orders.
///
/// `eps(a) = rdp(a) - (ln(delta) + ln(a)) / (a - 1) + ln((a - 1) / a)`, evaluated in that order.
/// NaN values are skipped; if every value is NaN the result is `epsilon = inf` with no order, as
/// in Opacus. Ties go to the first order, as `numpy.nanargmin` does. A negative minimum (delta
/// near 1, or a tiny RDP) is reported as 0, as TF-Privacy does and Opacus does not: an
/// (epsilon, delta) guarantee with epsilon < 0 implies (0, delta), and a negative epsilon is not
/// a meaningful privacy loss.
pub(super) fn privacy_spent(orders: &[f64], rdp: &[f64], delta: f64) -> PrivacySpent {
    let ln_delta = delta.ln();
    let mut best: Option<(f64, f64)> = None;
    for (&order, &rdp) in orders.iter().zip(rdp) {
        let eps = rdp - (ln_delta + order.ln()) / (order - 1.0) + ((order - 1.0) / order).ln();
        if eps.is_nan() {
            continue;
        }
        if best.is_none_or(|(best_eps, _)| eps < best_eps) {
            best = Some((eps, order));
        }
    }
    match best {
        Some((epsilon, order)) => {
            let least = orders.iter().copied().fold(f64::INFINITY, f64::min);
            let greatest = orders.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            PrivacySpent {
                epsilon: epsilon.max(0.0),
                delta,
                best_order: Some(order),
                order_at_edge: epsilon.is_finite()
                    && epsilon > 0.0
                    && orders.len() > 1
                    && (order == least || order == greatest),
            }
        }
        None => PrivacySpent {
            epsilon: f64::INFINITY,
            delta,
            best_order: None,
            order_at_edge: false,
        },
    }
}
