//! f32 Box-Muller from + - * / and sqrt only, so that the CUDA transliteration in
//! [`super::cuda`] gives the same bits.
//!
//! IEEE 754 rounds + - * / and sqrt correctly on both sides; libm's and CUDA's `logf`, `sinf`
//! and `cosf` do not agree in the last bits, so these are written out. Rust never fuses `a * b +
//! c` into an FMA, and the CUDA side uses `__fmul_rn` for every product, which the compiler never
//! fuses either. Keep each expression's shape identical in both files.

/// `ln(2)` rounded to 15 significant bits, so that `k * LN2_HI` is exact for any exponent `k`.
pub(crate) const LN2_HI: f32 = 0.69314575;
/// `ln(2) - LN2_HI`, rounded.
pub(crate) const LN2_LO: f32 = 1.4286068e-6;
/// `2 / 3`, `2 / 5`, `2 / 7`, `2 / 9`: `ln((1+s)/(1-s)) = 2s + s * (C1 s^2 + C2 s^4 + ...)`.
pub(crate) const LN_C1: f32 = 0.6666667;
/// See [`LN_C1`].
pub(crate) const LN_C2: f32 = 0.4;
/// See [`LN_C1`].
pub(crate) const LN_C3: f32 = 0.2857143;
/// See [`LN_C1`].
pub(crate) const LN_C4: f32 = 0.22222222;
/// Taylor coefficients of `sin(pi/2 * f) = f * (S0 + S1 f^2 + ... + S4 f^8)`, `|f| <= 1/2`.
pub(crate) const SIN_S0: f32 = std::f32::consts::FRAC_PI_2;
/// See [`SIN_S0`].
pub(crate) const SIN_S1: f32 = -0.6459641;
/// See [`SIN_S0`].
pub(crate) const SIN_S2: f32 = 0.079692625;
/// See [`SIN_S0`].
pub(crate) const SIN_S3: f32 = -0.004681754;
/// See [`SIN_S0`].
pub(crate) const SIN_S4: f32 = 0.00016044118;
/// Taylor coefficients of `cos(pi/2 * f) = 1 + C1 f^2 + ... + C5 f^10`, `|f| <= 1/2`.
pub(crate) const COS_C1: f32 = -1.2337005;
/// See [`COS_C1`].
pub(crate) const COS_C2: f32 = 0.2536695;
/// See [`COS_C1`].
pub(crate) const COS_C3: f32 = -0.02086348;
/// See [`COS_C1`].
pub(crate) const COS_C4: f32 = 0.00091926026;
/// See [`COS_C1`].
pub(crate) const COS_C5: f32 = -2.5202042e-5;
/// `2^-32`: a 32-bit word as a fraction of one.
pub(crate) const TWO_POW_M32: f32 = 2.3283064e-10;
/// `2^-30`: a 30-bit remainder as a fraction of a quarter turn.
pub(crate) const TWO_POW_M30: f32 = 9.313226e-10;
/// Bit pattern of `sqrt(2)`: mantissas above it are halved so that `m` lies in
/// `[sqrt(1/2), sqrt(2)]`.
const SQRT2_BITS: u32 = 0x3FB5_04F3;

/// Natural logarithm of a positive, finite, normal `x` (the only inputs Box-Muller makes).
///
/// `x = 2^k * m` with `m` in `[sqrt(1/2), sqrt(2)]`; with `f = m - 1` and `s = f / (2 + f)`,
/// `ln(m) = 2 atanh(s) = f - (f^2/2 - s (f^2/2 + R(s^2)))`, where `R` is the atanh series past its
/// first term. Error < 1 ulp (tested).
pub(crate) fn ln(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut k = (bits >> 23) as i32 - 127;
    let mut m_bits = (bits & 0x007F_FFFF) | 0x3F80_0000;
    if m_bits > SQRT2_BITS {
        m_bits -= 0x0080_0000;
        k += 1;
    }
    let f = f32::from_bits(m_bits) - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let r = z * (LN_C1 + z * (LN_C2 + z * (LN_C3 + z * LN_C4)));
    let hfsq = 0.5 * f * f;
    let kf = k as f32;
    kf * LN2_HI - ((hfsq - (s * (hfsq + r) + kf * LN2_LO)) - f)
}

/// `(sin, cos)` of the angle `2 pi * turns / 2^32`.
///
/// The reduction is exact integer arithmetic: `k` is the nearest quarter turn and the remainder
/// `f` (in quarter turns, `|f| <= 1/2`) is the signed 30-bit rest, converted once to f32. The
/// polynomials then only see `|pi/2 * f| <= pi/4`.
pub(crate) fn sincos_turns(turns: u32) -> (f32, f32) {
    let k = turns.wrapping_add(1 << 29) >> 30;
    let rest = turns.wrapping_sub(k << 30) as i32;
    let f = rest as f32 * TWO_POW_M30;
    let f2 = f * f;
    let s = f * (SIN_S0 + f2 * (SIN_S1 + f2 * (SIN_S2 + f2 * (SIN_S3 + f2 * SIN_S4))));
    let c = 1.0 + f2 * (COS_C1 + f2 * (COS_C2 + f2 * (COS_C3 + f2 * (COS_C4 + f2 * COS_C5))));
    match k {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

/// Box-Muller: two standard normals `[r cos(theta), r sin(theta)]` from two 32-bit words.
///
/// `u = (radial + 1/2) * 2^-32` rounded to f32 lies in `(0, 1]` (never 0), `r = sqrt(-2 ln u)`
/// (at most 6.76), and `theta = 2 pi * angle / 2^32`.
pub(crate) fn box_muller(radial: u32, angle: u32) -> [f32; 2] {
    let u = (radial as f32 + 0.5) * TWO_POW_M32;
    let r = (-2.0 * ln(u)).sqrt();
    let (s, c) = sincos_turns(angle);
    [r * c, r * s]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in f32 ulps between `got` and the f64 reference, measured at the reference.
    fn ulps(got: f32, want: f64) -> f64 {
        let ulp = f64::from(f32::EPSILON)
            * (want.abs().max(f64::from(f32::MIN_POSITIVE)))
                .log2()
                .floor()
                .exp2();
        (f64::from(got) - want).abs() / ulp
    }

    /// A cheap deterministic stream of words for sweeping inputs.
    fn words(n: u32) -> impl Iterator<Item = u32> {
        (0..n).map(|i| i.wrapping_mul(0x9E37_79B9).rotate_left(7) ^ (i >> 3))
    }

    #[test]
    fn ln_is_within_one_ulp_over_the_box_muller_domain() {
        let mut worst = 0.0_f64;
        for w in words(2_000_000).chain([0, 1, u32::MAX, u32::MAX - 1, 1 << 31]) {
            let u = (w as f32 + 0.5) * TWO_POW_M32;
            let e = ulps(ln(u), f64::from(u).ln());
            worst = worst.max(e);
        }
        assert!(worst <= 1.0, "worst ln error {worst} ulp");
    }

    #[test]
    fn ln_is_accurate_over_the_whole_normal_range() {
        let mut worst = 0.0_f64;
        for w in words(2_000_000) {
            let x = f32::from_bits(0x0080_0000 + w % (0x7F80_0000 - 0x0080_0000));
            let want = f64::from(x).ln();
            let got = ln(x);
            worst = worst.max(ulps(got, want));
        }
        assert!(worst <= 1.0, "worst ln error {worst} ulp");
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn sincos_is_within_two_ulps() {
        let mut worst = 0.0_f64;
        for t in words(2_000_000).chain([0, 1, 1 << 29, 1 << 30, 1 << 31, 3 << 30, u32::MAX]) {
            let (s, c) = sincos_turns(t);
            // The f32 result sees the angle rounded once (the 30-bit rest to 24 bits): measure
            // against that angle, as f64 sin/cos of the reduced angle rotated by quarter turns.
            let k = t.wrapping_add(1 << 29) >> 30;
            let f = f64::from(t.wrapping_sub(k << 30) as i32 as f32) / f64::from(1u32 << 30);
            let (rs, rc) = (f * std::f64::consts::FRAC_PI_2).sin_cos();
            let (want_s, want_c) = match k {
                0 => (rs, rc),
                1 => (rc, -rs),
                2 => (-rs, -rc),
                _ => (-rc, rs),
            };
            worst = worst.max(ulps(s, want_s)).max(ulps(c, want_c));
            // And against the exact angle of the word, in absolute terms.
            let exact = f64::from(t) / 4_294_967_296.0 * std::f64::consts::TAU;
            assert!((f64::from(s) - exact.sin()).abs() < 2e-7, "sin turns {t}");
            assert!((f64::from(c) - exact.cos()).abs() < 2e-7, "cos turns {t}");
        }
        assert!(worst <= 2.0, "worst sin/cos error {worst} ulp");
        assert_eq!(sincos_turns(0), (0.0, 1.0));
        assert_eq!(sincos_turns(1 << 30), (1.0, -0.0));
    }

    #[test]
    fn box_muller_radius_is_bounded_and_never_nan() {
        for radial in [0, 1, 12345, u32::MAX - 1, u32::MAX] {
            for angle in [0, 1 << 30, u32::MAX] {
                let [a, b] = box_muller(radial, angle);
                assert!(a.is_finite() && b.is_finite());
                assert!((a * a + b * b).sqrt() <= 6.8);
            }
        }
    }
}
