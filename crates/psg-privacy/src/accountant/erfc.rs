//! `ln(erfc(x))` in f64, accurate for every finite x (Opacus takes it from SciPy's `log_ndtr`).
//!
//! Rust's standard library has no `erfc`, and the crate takes no maths dependency, so it is
//! computed here from two classical expansions, each used where it converges fast and loses no
//! digits:
//! - `|x| < 2`: the Maclaurin series `erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n 2^n x^(2n+1) /
//!   (1 * 3 * ... * (2n+1))`, whose terms are all of one sign, then `erfc = 1 - erf`;
//! - `x >= 2`: Laplace's continued fraction `erfc(x) = exp(-x^2) / sqrt(pi) / (x + (1/2) / (x +
//!   1 / (x + (3/2) / (x + ...))))`, kept in log form so that it never underflows;
//! - `x <= -2`: `erfc(x) = 2 - erfc(-x)`.
//!
//! The relative error of `erfc` is below 1e-13 (tested), far finer than the accountant needs.

/// Where the series hands over to the continued fraction.
const SWITCH: f64 = 2.0;
/// `2 / sqrt(pi)`.
const TWO_OVER_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;
/// `ln(sqrt(pi))`.
const LN_SQRT_PI: f64 = 0.572_364_942_924_700_1;
/// Enough for the slowest case (the continued fraction at `x = 2`) with a wide margin.
const MAX_TERMS: u32 = 10_000;

/// `ln(erfc(x))`; NaN for NaN.
pub(super) fn log_erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x == f64::INFINITY {
        return f64::NEG_INFINITY;
    }
    if x == f64::NEG_INFINITY {
        return std::f64::consts::LN_2;
    }
    if x >= SWITCH {
        log_erfc_continued_fraction(x)
    } else if x <= -SWITCH {
        (2.0 - log_erfc_continued_fraction(-x).exp()).ln()
    } else {
        (1.0 - erf_series(x)).ln()
    }
}

/// `erf(x)` for `|x| < 2` from the positive-term Maclaurin series.
fn erf_series(x: f64) -> f64 {
    let two_x2 = 2.0 * x * x;
    let mut term = x;
    let mut sum = x;
    for n in 0..MAX_TERMS {
        term *= two_x2 / f64::from(2 * n + 3);
        sum += term;
        if term.abs() <= 1e-17 * sum.abs() {
            break;
        }
    }
    TWO_OVER_SQRT_PI * (-x * x).exp() * sum
}

/// `ln(erfc(x))` for `x >= 2` from Laplace's continued fraction, by the modified Lentz method.
fn log_erfc_continued_fraction(x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    // f = x + a1 / (x + a2 / (x + ...)) with a_n = n / 2.
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for n in 1..MAX_TERMS {
        let a = f64::from(n) * 0.5;
        d = x + a * d;
        if d.abs() < TINY {
            d = TINY;
        }
        d = 1.0 / d;
        c = x + a / c;
        if c.abs() < TINY {
            c = TINY;
        }
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    -x * x - LN_SQRT_PI - f.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erfc at a few points, from published tables (more digits than f64 holds).
    #[allow(clippy::excessive_precision)] // the tables' digits, as published
    const REFERENCE: [(f64, f64); 10] = [
        (0.0, 1.0),
        (0.5, 0.479_500_122_186_953_46),
        (1.0, 0.157_299_207_050_285_13),
        (1.5, 0.033_894_853_524_689_27),
        (2.0, 0.004_677_734_981_047_265_8),
        (3.0, 2.209_049_699_858_544_1e-5),
        (5.0, 1.537_459_794_428_034_9e-12),
        (10.0, 2.088_487_583_762_544_8e-45),
        (-1.0, 1.842_700_792_949_714_9),
        (-2.5, 1.999_593_047_982_555),
    ];

    #[test]
    fn log_erfc_matches_tables() {
        for (x, erfc) in REFERENCE {
            let got = log_erfc(x);
            let want = erfc.ln();
            let rel = ((got - want) / want.abs().max(1e-300)).abs();
            let err_in_erfc = (got - want).abs(); // = relative error of erfc itself
            assert!(
                err_in_erfc < 1e-13 || rel < 1e-15,
                "x = {x}: ln erfc = {got}, want {want}"
            );
        }
    }

    #[test]
    fn log_erfc_far_tail_follows_the_asymptote() {
        // erfc(x) ~ exp(-x^2) / (x sqrt(pi)) * (1 - 1/(2x^2) + 3/(4x^4)) for large x.
        for x in [30.0_f64, 100.0, 1e4] {
            let x2 = x * x;
            let series = 1.0 - 0.5 / x2 + 0.75 / (x2 * x2) - 1.875 / (x2 * x2 * x2);
            let want = -x2 - LN_SQRT_PI - x.ln() + series.ln();
            assert!((log_erfc(x) - want).abs() < 1e-12 * x2.max(1.0), "x = {x}");
        }
        assert!((log_erfc(-40.0) - std::f64::consts::LN_2).abs() < 1e-16);
    }

    #[test]
    fn log_erfc_is_continuous_at_the_switch() {
        for x in [SWITCH, -SWITCH] {
            let below = log_erfc(x - 1e-12);
            let above = log_erfc(x + 1e-12);
            assert!((below - above).abs() < 1e-11, "x = {x}: {below} vs {above}");
        }
    }
}
