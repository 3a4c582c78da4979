//! `Tensor::to_dtype` on the CPU: every narrowing is the value rounded once to nearest, ties to
//! even (checked against each result's neighbours in its format, on values of every class), and
//! conversions among the 16-bit types go through f32 as half computes them. `gpu.rs` checks the
//! device's conversions against these, bit for bit.

mod common;

use common::awkward_f64;
use half::{bf16, f16};
use psg_runtime::{DType, Device, Tensor};

/// A binary floating-point format, for checking roundings: its dtype, its bits' value, its sign
/// bit, the bits of +infinity, and a tensor's elements as bits.
struct Format {
    dtype: DType,
    value: fn(u64) -> f64,
    sign: u64,
    inf: u64,
    bits: fn(&Tensor) -> Vec<u64>,
}

/// A tensor's elements of type `T` as their bits.
fn bits_of<T: psg_runtime::Element>(t: &Tensor, to_bits: fn(T) -> u64) -> Vec<u64> {
    t.to_vec::<T>().unwrap().into_iter().map(to_bits).collect()
}

impl Format {
    /// Whether `r` (bits of this format) is `x` rounded to nearest, ties to even.
    fn is_nearest(&self, x: f64, r: u64) -> bool {
        let v = (self.value)(r);
        if x.is_nan() || v.is_nan() {
            return x.is_nan() && v.is_nan();
        }
        let negative = r & self.sign != 0;
        if negative != x.is_sign_negative() {
            return false;
        }
        let magnitude = r & !self.sign;
        let max = (self.value)(self.inf - 1);
        // Past the largest finite value by half its step or more, x rounds to infinity.
        let threshold = max + (max - (self.value)(self.inf - 2)) / 2.0;
        if magnitude == self.inf {
            return x.abs() >= threshold;
        }
        if x.is_infinite() || x.abs() >= threshold {
            return false;
        }
        // The values next to |r|: one step toward zero (none below zero) and away from it.
        let toward = if magnitude == 0 {
            f64::INFINITY
        } else {
            (self.value)(magnitude - 1)
        };
        let away = (self.value)(magnitude + 1);
        let (d, dt, da) = (
            (x.abs() - v.abs()).abs(),
            (x.abs() - toward).abs(),
            (x.abs() - away).abs(),
        );
        let even = r & 1 == 0;
        d <= dt && d <= da && ((d < dt && d < da) || even)
    }
}

#[test]
fn narrowing_rounds_to_nearest_even_once() {
    let mut xs = awkward_f64(20_000, 7);
    // The cases a double rounding gets wrong: just above a bf16 tie and an f16 tie, by less
    // than f32 holds.
    xs.push(1.0 + 2f64.powi(-8) + 2f64.powi(-40));
    xs.push(1.0 + 2f64.powi(-11) + 2f64.powi(-40));
    let wide = Tensor::from_slice(&xs, &[xs.len()], &Device::Cpu).unwrap();
    let formats = [
        Format {
            dtype: DType::F32,
            value: |b| f64::from(f32::from_bits(b as u32)),
            sign: 1 << 31,
            inf: 0x7f80_0000,
            bits: |t| bits_of::<f32>(t, |v| u64::from(v.to_bits())),
        },
        Format {
            dtype: DType::BF16,
            value: |b| bf16::from_bits(b as u16).to_f64(),
            sign: 1 << 15,
            inf: 0x7f80,
            bits: |t| bits_of::<bf16>(t, |v| u64::from(v.to_bits())),
        },
        Format {
            dtype: DType::F16,
            value: |b| f16::from_bits(b as u16).to_f64(),
            sign: 1 << 15,
            inf: 0x7c00,
            bits: |t| bits_of::<f16>(t, |v| u64::from(v.to_bits())),
        },
    ];
    // From f64, and from f32 (the values rounded to f32 first: the 16-bit formats from it).
    let narrow = wide.to_dtype(DType::F32).unwrap();
    let from_f32: Vec<f64> = narrow
        .to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    let sources = [(&wide, &xs), (&narrow, &from_f32)];
    for (format, &(g, xs)) in formats
        .iter()
        .flat_map(|f| sources.iter().map(move |s| (f, s)))
    {
        if g.dtype() == format.dtype {
            continue;
        }
        let t = g.to_dtype(format.dtype).unwrap();
        let bits = (format.bits)(&t);
        for (&x, &r) in xs.iter().zip(&bits) {
            assert!(
                format.is_nearest(x, r),
                "{x:e} ({:#x}) to {}: {:e} ({r:#x})",
                x.to_bits(),
                format.dtype,
                (format.value)(r)
            );
        }
        // Back to f64: exact, the same values.
        let back = t.to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap();
        for (&b, &r) in back.iter().zip(&bits) {
            let v = (format.value)(r);
            assert!(
                b == v || (b.is_nan() && v.is_nan()),
                "{v:e} widened to {b:e}"
            );
        }
    }
    let n = xs.len();
    let bf = wide
        .to_dtype(DType::BF16)
        .unwrap()
        .to_vec::<bf16>()
        .unwrap();
    assert_eq!(
        bf[n - 2].to_f64(),
        1.0 + 2f64.powi(-7),
        "one rounding to bf16, not two"
    );
    let h = wide.to_dtype(DType::F16).unwrap().to_vec::<f16>().unwrap();
    assert_eq!(
        h[n - 1].to_f64(),
        1.0 + 2f64.powi(-10),
        "one rounding to f16, not two"
    );
}

/// Between the 16-bit types and from f32: through f32, exactly what half computes.
#[test]
fn conversions_among_narrow_types_go_through_f32() {
    let xs = awkward_f64(4_000, 11);
    let g = Tensor::from_slice(&xs, &[xs.len()], &Device::Cpu).unwrap();
    let h = g.to_dtype(DType::F16).unwrap();
    let b = g.to_dtype(DType::BF16).unwrap();
    let f = g.to_dtype(DType::F32).unwrap();
    let same = |x: f32, y: f32| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
    let hb = h.to_dtype(DType::BF16).unwrap().to_vec::<bf16>().unwrap();
    for (x, r) in h.to_vec::<f16>().unwrap().iter().zip(&hb) {
        assert!(same(bf16::from_f32(x.to_f32()).to_f32(), r.to_f32()));
    }
    let bh = b.to_dtype(DType::F16).unwrap().to_vec::<f16>().unwrap();
    for (x, r) in b.to_vec::<bf16>().unwrap().iter().zip(&bh) {
        assert!(same(f16::from_f32(x.to_f32()).to_f32(), r.to_f32()));
    }
    let fh = f.to_dtype(DType::F16).unwrap().to_vec::<f16>().unwrap();
    for (x, r) in f.to_vec::<f32>().unwrap().iter().zip(&fh) {
        assert!(same(f16::from_f32(*x).to_f32(), r.to_f32()));
    }
    // The same dtype: the same tensor.
    let again = g.to_dtype(DType::F64).unwrap();
    assert_eq!(again.to_vec::<f64>().unwrap().len(), xs.len());
}
