//! f64 Box-Muller from + - * / and sqrt only; the same algorithm as [`super::math_f32`] with
//! longer series, transliterated in [`super::cuda`] (where every product is `__dmul_rn`).

/// `ln(2)` rounded to 32 significant bits, so that `k * LN2_HI` is exact for any exponent `k`.
pub(crate) const LN2_HI: f64 = 0.6931471803691238;
/// `ln(2) - LN2_HI`, rounded.
pub(crate) const LN2_LO: f64 = 1.9082149292705877e-10;
/// `2 / (2j + 1)` for j = 1..=11: the atanh series of `ln((1+s)/(1-s))` past `2s`.
pub(crate) const LN_C: [f64; 11] = [
    0.6666666666666666,
    0.4,
    0.2857142857142857,
    0.2222222222222222,
    0.18181818181818182,
    0.15384615384615385,
    0.13333333333333333,
    0.11764705882352941,
    0.10526315789473684,
    0.09523809523809523,
    0.08695652173913043,
];
/// Taylor coefficients of `sin(pi/2 * f) = f * (S[0] + S[1] f^2 + ... + S[8] f^16)`.
pub(crate) const SIN_S: [f64; 9] = [
    std::f64::consts::FRAC_PI_2,
    -0.6459640975062463,
    0.07969262624616705,
    -0.004681754135318688,
    0.00016044118478735983,
    -3.598843235212085e-6,
    5.692172921967927e-8,
    -6.688035109811468e-10,
    6.0669357311061955e-12,
];
/// Taylor coefficients of `cos(pi/2 * f) = 1 + C[0] f^2 + ... + C[7] f^16`.
pub(crate) const COS_C: [f64; 8] = [
    -1.2337005501361697,
    0.25366950790104803,
    -0.02086348076335296,
    0.0009192602748394266,
    -2.5202042373060607e-5,
    4.710874778818172e-7,
    -6.386603083791852e-9,
    6.565963114979473e-11,
];
/// `2^-64`: a 64-bit word as a fraction of one.
pub(crate) const TWO_POW_M64: f64 = 5.421010862427522e-20;
/// `2^-62`: a 62-bit remainder as a fraction of a quarter turn.
pub(crate) const TWO_POW_M62: f64 = 2.168404344971009e-19;
/// Bit pattern of `sqrt(2)`.
const SQRT2_BITS: u64 = 0x3FF6_A09E_667F_3BCD;

/// Horner's rule from the highest coefficient down: `c[0] + x (c[1] + x (c[2] + ...))`.
///
/// The CUDA side writes the same nesting out by hand.
fn horner(x: f64, coefficients: &[f64]) -> f64 {
    coefficients
        .iter()
        .rev()
        .copied()
        .reduce(|acc, c| c + x * acc)
        .unwrap_or(0.0)
}

/// Natural logarithm of a positive, finite, normal `x`; see [`super::math_f32::ln`].
pub(crate) fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut k = (bits >> 52) as i64 - 1023;
    let mut m_bits = (bits & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000;
    if m_bits > SQRT2_BITS {
        m_bits -= 1 << 52;
        k += 1;
    }
    let f = f64::from_bits(m_bits) - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let r = z * horner(z, &LN_C);
    let hfsq = 0.5 * f * f;
    let kf = k as f64;
    kf * LN2_HI - ((hfsq - (s * (hfsq + r) + kf * LN2_LO)) - f)
}

/// `(sin, cos)` of the angle `2 pi * turns / 2^64`; see [`super::math_f32::sincos_turns`].
pub(crate) fn sincos_turns(turns: u64) -> (f64, f64) {
    let k = turns.wrapping_add(1 << 61) >> 62;
    let rest = turns.wrapping_sub(k << 62) as i64;
    let f = rest as f64 * TWO_POW_M62;
    let f2 = f * f;
    let s = f * horner(f2, &SIN_S);
    let c = 1.0 + f2 * horner(f2, &COS_C);
    match k {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

/// Box-Muller from two 64-bit words: `u = (radial + 1/2) * 2^-64` in `(0, 1]` (so `r <= 9.5`),
/// `theta = 2 pi * angle / 2^64`.
pub(crate) fn box_muller(radial: u64, angle: u64) -> [f64; 2] {
    let u = (radial as f64 + 0.5) * TWO_POW_M64;
    let r = (-2.0 * ln(u)).sqrt();
    let (s, c) = sincos_turns(angle);
    [r * c, r * s]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in f64 ulps between `got` and `want`, measured at `want`.
    fn ulps(got: f64, want: f64) -> f64 {
        let ulp = f64::EPSILON * want.abs().max(f64::MIN_POSITIVE).log2().floor().exp2();
        (got - want).abs() / ulp
    }

    fn words(n: u64) -> impl Iterator<Item = u64> {
        (0..n).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ (i >> 3))
    }

    #[test]
    fn ln_is_within_two_ulps() {
        let mut worst = 0.0_f64;
        for w in words(1_000_000).chain([0, 1, u64::MAX, 1 << 63]) {
            let u = (w as f64 + 0.5) * TWO_POW_M64;
            worst = worst.max(ulps(ln(u), u.ln()));
            let x = f64::from_bits(0x0010_0000_0000_0000 + w % 0x7FE0_0000_0000_0000);
            worst = worst.max(ulps(ln(x), x.ln()));
        }
        // Near u = 1 the values are tiny and both sides are exact to the last bit or two.
        assert!(worst <= 2.0, "worst ln error {worst} ulp");
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn sincos_is_within_a_few_ulps_of_the_reduced_angle() {
        let mut worst = 0.0_f64;
        for t in words(1_000_000).chain([0, 1, 1 << 61, 1 << 62, 1 << 63, 3 << 62, u64::MAX]) {
            let (s, c) = sincos_turns(t);
            let k = t.wrapping_add(1 << 61) >> 62;
            let f = t.wrapping_sub(k << 62) as i64 as f64 * TWO_POW_M62;
            // std's sin and cos of the small reduced angle, rotated by the exact quarter turns;
            // the reference's own rounding of `f * pi/2` is half an ulp.
            let (rs, rc) = (f * std::f64::consts::FRAC_PI_2).sin_cos();
            let (want_s, want_c) = match k {
                0 => (rs, rc),
                1 => (rc, -rs),
                2 => (-rs, -rc),
                _ => (-rc, rs),
            };
            worst = worst.max(ulps(s, want_s)).max(ulps(c, want_c));
            // Against the unreduced angle only absolute error is meaningful (its own rounding).
            let exact = (t as f64) * TWO_POW_M64 * std::f64::consts::TAU;
            assert!((s - exact.sin()).abs() < 4e-15 && (c - exact.cos()).abs() < 4e-15);
        }
        // Measured worst: 2 ulps, of which the reference's own rounding can be 1.
        assert!(worst <= 3.0, "worst sin/cos error {worst} ulp");
        assert_eq!(sincos_turns(0), (0.0, 1.0));
    }
}
