//! Convolutions of probability mass functions by FFT, for the PLD accountant ([`super::pld`]).
//!
//! An iterative radix-2 complex FFT in f64 (lengths are powers of two), with twiddle factors
//! computed from their exact angles rather than by recurrence, so that its error stays near
//! `log2(n)` roundings. The crate takes no maths dependency.

use std::f64::consts::PI;

/// A complex number as (real, imaginary).
#[derive(Debug, Clone, Copy, PartialEq)]
struct C(f64, f64);

impl C {
    fn mul(self, o: C) -> C {
        C(self.0 * o.0 - self.1 * o.1, self.0 * o.1 + self.1 * o.0)
    }
}

/// In-place FFT of `a` (length a power of two); `inverse` divides by the length too.
fn fft(a: &mut [C], inverse: bool) {
    let n = a.len();
    debug_assert!(n.is_power_of_two());
    if n <= 1 {
        return;
    }
    // Bit-reversal permutation.
    let bits = n.trailing_zeros();
    for i in 0..n {
        let j = i.reverse_bits() >> (usize::BITS - bits);
        if i < j {
            a.swap(i, j);
        }
    }
    // Twiddles w^k = exp(-+2 pi i k / n) for k < n / 2, each from its own angle.
    let sign = if inverse { 1.0 } else { -1.0 };
    let twiddles: Vec<C> = (0..n / 2)
        .map(|k| {
            let (s, c) = (sign * 2.0 * PI * k as f64 / n as f64).sin_cos();
            C(c, s)
        })
        .collect();
    let mut len = 2;
    while len <= n {
        let stride = n / len;
        for start in (0..n).step_by(len) {
            for k in 0..len / 2 {
                let w = twiddles[k * stride];
                let u = a[start + k];
                let v = a[start + k + len / 2].mul(w);
                a[start + k] = C(u.0 + v.0, u.1 + v.1);
                a[start + k + len / 2] = C(u.0 - v.0, u.1 - v.1);
            }
        }
        len <<= 1;
    }
    if inverse {
        let scale = 1.0 / n as f64;
        for x in a.iter_mut() {
            *x = C(x.0 * scale, x.1 * scale);
        }
    }
}

fn transform(values: &[f64], len: usize) -> Vec<C> {
    let mut a = vec![C(0.0, 0.0); len];
    for (slot, &v) in a.iter_mut().zip(values) {
        *slot = C(v, 0.0);
    }
    fft(&mut a, false);
    a
}

/// The full linear convolution of `a` and `b` (length `a.len() + b.len() - 1`).
pub(super) fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    // A point mass (the identity PLD) only scales: no FFT, no rounding but the product's.
    if b.len() == 1 {
        return a.iter().map(|x| x * b[0]).collect();
    }
    if a.len() == 1 {
        return b.iter().map(|y| a[0] * y).collect();
    }
    let out_len = a.len() + b.len() - 1;
    let len = out_len.next_power_of_two();
    let mut fa = transform(a, len);
    let fb = transform(b, len);
    for (x, y) in fa.iter_mut().zip(&fb) {
        *x = x.mul(*y);
    }
    fft(&mut fa, true);
    fa.truncate(out_len);
    fa.into_iter().map(|c| c.0).collect()
}

/// `p` convolved with itself `times` times (`times >= 1`), entries `lower ..= upper` of the
/// result only (entry `i` is the mass of index sums equal to `i`), by an FFT of a length that
/// holds that range: what lies outside wraps around onto it, which the caller bounds (a
/// Chernoff bound on the tails, see [`super::pld`]).
pub(super) fn self_convolve(p: &[f64], times: u64, lower: u64, upper: u64) -> Vec<f64> {
    debug_assert!(times >= 1 && lower <= upper);
    let out_len = (upper - lower + 1) as usize;
    if times == 1 {
        // The FFT's round trip would only add its rounding.
        return (0..out_len)
            .map(|i| p.get(lower as usize + i).copied().unwrap_or(0.0))
            .collect();
    }
    let len = out_len.max(p.len()).next_power_of_two();
    let mut f = transform(p, len);
    for x in f.iter_mut() {
        *x = pow(*x, times);
    }
    fft(&mut f, true);
    // Entry i of the result sits at (i + lower) mod len.
    let start = (lower % len as u64) as usize;
    (0..out_len).map(|i| f[(start + i) % len].0).collect()
}

/// `x^n` by repeated squaring (`log2(n)` products: fewer roundings than through `exp(n ln x)`).
fn pow(mut x: C, mut n: u64) -> C {
    let mut acc = C(1.0, 0.0);
    while n > 0 {
        if n & 1 == 1 {
            acc = acc.mul(x);
        }
        x = x.mul(x);
        n >>= 1;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; a.len() + b.len() - 1];
        for (i, x) in a.iter().enumerate() {
            for (j, y) in b.iter().enumerate() {
                out[i + j] += x * y;
            }
        }
        out
    }

    #[test]
    fn convolution_matches_the_direct_sum() {
        let a: Vec<f64> = (0..37).map(|i| ((i * 7919) % 101) as f64 / 101.0).collect();
        let b: Vec<f64> = (0..64)
            .map(|i| ((i * 104_729) % 97) as f64 / 97.0)
            .collect();
        let fast = convolve(&a, &b);
        let slow = direct(&a, &b);
        assert_eq!(fast.len(), slow.len());
        for (f, s) in fast.iter().zip(&slow) {
            assert!((f - s).abs() < 1e-12 * s.abs().max(1.0), "{f} vs {s}");
        }
        assert_eq!(convolve(&[2.0], &[3.0]), vec![6.0]);
        assert!(convolve(&[], &[1.0]).is_empty());
    }

    #[test]
    fn self_convolution_matches_repeated_convolution() {
        let p = [0.1, 0.2, 0.3, 0.4];
        let mut want = p.to_vec();
        for _ in 1..5 {
            want = direct(&want, &p);
        }
        // The whole range, then a window of it.
        let all = self_convolve(&p, 5, 0, 15);
        for (a, w) in all.iter().zip(&want) {
            assert!((a - w).abs() < 1e-14, "{a} vs {w}");
        }
        // Six times: indices 0 ..= 18 in a 16-long FFT. The window 3 ..= 15 is exact, for 16,
        // 17 and 18 wrap onto 0, 1 and 2, outside it; 2 ..= 15 is not, for 18 wraps onto 2.
        let six = direct(&want, &p);
        let window = self_convolve(&p, 6, 3, 15);
        assert_eq!(window.len(), 13);
        for (a, w) in window.iter().zip(&six[3..]) {
            assert!((a - w).abs() < 1e-14, "{a} vs {w}");
        }
        let wrapped = self_convolve(&p, 6, 2, 15);
        assert!((wrapped[0] - (six[2] + six[18])).abs() < 1e-14);
        let once = self_convolve(&p, 1, 0, 3);
        for (a, w) in once.iter().zip(&p) {
            assert!((a - w).abs() < 1e-15);
        }
    }
}
