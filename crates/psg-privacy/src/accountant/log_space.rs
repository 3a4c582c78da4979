//! Arithmetic on numbers stored as their natural logarithms, as the RDP sums need it.
//!
//! These follow Opacus' `_log_add` and `_log_sub` step for step, so that the accountant's sums
//! round the way Opacus' do.

/// `ln(exp(x) + exp(y))` without overflow; `-inf` stands for 0.
pub(super) fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// `ln(exp(x) - exp(y))`, or `None` when the difference would be negative (Opacus raises there).
pub(super) fn log_sub(x: f64, y: f64) -> Option<f64> {
    if x < y {
        return None;
    }
    if y == f64::NEG_INFINITY {
        return Some(x);
    }
    if x == y {
        return Some(f64::NEG_INFINITY);
    }
    let gap = (x - y).exp_m1();
    // Python's math.expm1 raises OverflowError here and Opacus then returns x: same result.
    if gap.is_infinite() {
        return Some(x);
    }
    Some(gap.ln() + y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_add_matches_direct_sum() {
        let got = log_add(2.0_f64.ln(), 3.0_f64.ln());
        assert!((got - 5.0_f64.ln()).abs() < 1e-15);
        assert_eq!(log_add(f64::NEG_INFINITY, 1.5), 1.5);
        assert_eq!(log_add(1.5, f64::NEG_INFINITY), 1.5);
    }

    #[test]
    fn log_sub_matches_direct_difference() {
        let got = log_sub(5.0_f64.ln(), 3.0_f64.ln()).unwrap();
        assert!((got - 2.0_f64.ln()).abs() < 1e-15);
        assert_eq!(log_sub(1.0, f64::NEG_INFINITY), Some(1.0));
        assert_eq!(log_sub(1.0, 1.0), Some(f64::NEG_INFINITY));
        assert_eq!(log_sub(1.0, 2.0), None);
        assert_eq!(log_sub(1000.0, -1000.0), Some(1000.0));
    }
}
