//! Tests of the CPU noise: mapping, determinism, moments, validation, and the CUDA source's
//! agreement with the Rust constants.

use super::*;
use crate::philox::philox4x32_10;
use proptest::prelude::*;

const MODES: [NoiseMode; 2] = [NoiseMode::Standard, NoiseMode::Secure];

/// Mean, variance, and the fractions beyond 1 and 2 standard deviations.
fn moments(values: impl Iterator<Item = f64>) -> (f64, f64, f64, f64, usize) {
    let (mut n, mut sum, mut sum2, mut beyond1, mut beyond2) = (0usize, 0.0, 0.0, 0usize, 0usize);
    for v in values {
        n += 1;
        sum += v;
        sum2 += v * v;
        beyond1 += usize::from(v.abs() > 1.0);
        beyond2 += usize::from(v.abs() > 2.0);
    }
    let mean = sum / n as f64;
    let var = sum2 / n as f64 - mean * mean;
    (
        mean,
        var,
        beyond1 as f64 / n as f64,
        beyond2 as f64 / n as f64,
        n,
    )
}

fn assert_standard_normal(label: &str, values: impl Iterator<Item = f64>) {
    let (mean, var, p1, p2, n) = moments(values);
    let se = 1.0 / (n as f64).sqrt();
    assert!(mean.abs() < 5.0 * se, "{label}: mean {mean}");
    assert!((var - 1.0).abs() < 0.01, "{label}: variance {var}");
    // P(|Z| > 1) = 0.3173, P(|Z| > 2) = 0.0455; binomial standard errors.
    let (q1, q2) = (0.317_310_507_862_914_1, 0.045_500_263_896_358_4);
    assert!(
        (p1 - q1).abs() < 5.0 * (q1 * (1.0 - q1) / n as f64).sqrt(),
        "{label}: P(|z|>1) {p1}"
    );
    assert!(
        (p2 - q2).abs() < 5.0 * (q2 * (1.0 - q2) / n as f64).sqrt(),
        "{label}: P(|z|>2) {p2}"
    );
}

#[test]
fn f32_noise_is_standard_normal_over_a_million_draws() {
    for (mode, seed) in [(NoiseMode::Standard, 1), (NoiseMode::Secure, 2)] {
        let z = gaussian_noise(seed, 3, 0, 1_000_000, 1.0, mode).unwrap();
        assert_standard_normal(&format!("f32 {mode:?}"), z.iter().map(|&v| f64::from(v)));
    }
}

#[test]
fn f64_noise_is_standard_normal_over_a_million_draws() {
    for (mode, seed) in [(NoiseMode::Standard, 4), (NoiseMode::Secure, 5)] {
        let z = gaussian_noise_f64(seed, 6, 0, 1_000_000, 1.0, mode).unwrap();
        assert_standard_normal(&format!("f64 {mode:?}"), z.into_iter());
    }
}

#[test]
fn noise_is_deterministic_and_keyed_by_seed_and_step() {
    let a = gaussian_noise(7, 11, 13, 1000, 0.5, NoiseMode::Standard).unwrap();
    let b = gaussian_noise(7, 11, 13, 1000, 0.5, NoiseMode::Standard).unwrap();
    assert_eq!(
        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let other_step = gaussian_noise(7, 12, 13, 1000, 0.5, NoiseMode::Standard).unwrap();
    let other_seed = gaussian_noise(8, 11, 13, 1000, 0.5, NoiseMode::Standard).unwrap();
    assert!(a.iter().zip(&other_step).filter(|(x, y)| x == y).count() < 5);
    assert!(a.iter().zip(&other_seed).filter(|(x, y)| x == y).count() < 5);
}

/// The documented mapping, recomputed independently with f64 std maths from the Philox words.
#[test]
fn f32_elements_follow_the_documented_counter_mapping() {
    let (seed, step) = (0x0123_4567_89ab_cdef_u64, 99_u64);
    let z = gaussian_noise(seed, step, 0, 64, 1.0, NoiseMode::Standard).unwrap();
    for (e, &got) in z.iter().enumerate() {
        let block = e as u64 / 4;
        let lane = e % 4;
        let x = philox4x32_10(
            [
                block as u32,
                (block >> 32) as u32,
                step as u32,
                (step >> 32) as u32,
            ],
            [seed as u32, (seed >> 32) as u32],
        );
        let (radial, angle) = (x[lane / 2 * 2], x[lane / 2 * 2 + 1]);
        let u = (f64::from(radial) + 0.5) / 4_294_967_296.0;
        let r = (-2.0 * u.ln()).sqrt();
        let theta = f64::from(angle) / 4_294_967_296.0 * std::f64::consts::TAU;
        let want = if lane % 2 == 0 {
            r * theta.cos()
        } else {
            r * theta.sin()
        };
        assert!(
            (f64::from(got) - want).abs() < 4e-6,
            "element {e}: {got} vs {want}"
        );
    }
}

#[test]
fn f64_elements_follow_the_documented_counter_mapping() {
    let (seed, step) = (5_u64, 0x1_0000_0001_u64);
    let z = gaussian_noise_f64(seed, step, 0, 32, 1.0, NoiseMode::Standard).unwrap();
    for (e, &got) in z.iter().enumerate() {
        let block = e as u64 / 2;
        let x = philox4x32_10(
            crate::philox::counter(block, step),
            crate::philox::key_from_seed(seed),
        );
        let radial = u64::from(x[0]) | u64::from(x[1]) << 32;
        let angle = u64::from(x[2]) | u64::from(x[3]) << 32;
        let u = (radial as f64 + 0.5) / 18_446_744_073_709_551_616.0;
        let r = (-2.0 * u.ln()).sqrt();
        let theta = angle as f64 / 18_446_744_073_709_551_616.0 * std::f64::consts::TAU;
        let want = if e % 2 == 0 {
            r * theta.cos()
        } else {
            r * theta.sin()
        };
        assert!((got - want).abs() < 1e-13, "element {e}: {got} vs {want}");
    }
}

#[test]
fn secure_mode_sums_four_draws_and_halves() {
    let (seed, step) = (21, 34);
    for block in [0, 1, 1000, (MAX_ELEMENTS / 4) - 1] {
        let d = [0, 1, 2, 3].map(|draw| draw_f32(seed, step, block, draw));
        assert_eq!(
            draw_f32(seed, step, block, 0),
            block_f32(seed, step, block, NoiseMode::Standard)
        );
        let secure = block_f32(seed, step, block, NoiseMode::Secure);
        for lane in 0..4 {
            let want = (((d[0][lane] + d[1][lane]) + d[2][lane]) + d[3][lane]) * 0.5;
            assert_eq!(secure[lane].to_bits(), want.to_bits());
        }
        // Draw d really is counter block | d << 62.
        let x = philox4x32_10(counter(block | 3 << 62, step), key_from_seed(seed));
        assert_eq!(d[3][..2], math_f32::box_muller(x[0], x[1]));
    }
}

#[test]
fn adding_noise_equals_adding_generated_noise() {
    for mode in MODES {
        let base: Vec<f32> = (0..37).map(|i| i as f32 * 0.25 - 3.0).collect();
        let mut added = base.clone();
        add_gaussian_noise(&mut added, 1, 2, 3, 0.7, mode).unwrap();
        let noise = gaussian_noise(1, 2, 3, 37, 0.7, mode).unwrap();
        for i in 0..37 {
            assert_eq!(added[i].to_bits(), (base[i] + noise[i]).to_bits());
        }
        let base64: Vec<f64> = base.iter().map(|&v| f64::from(v)).collect();
        let mut added64 = base64.clone();
        add_gaussian_noise_f64(&mut added64, 1, 2, 3, 0.7, mode).unwrap();
        let noise64 = gaussian_noise_f64(1, 2, 3, 37, 0.7, mode).unwrap();
        for i in 0..37 {
            assert_eq!(added64[i].to_bits(), (base64[i] + noise64[i]).to_bits());
        }
    }
}

#[test]
fn invalid_std_and_ranges_are_errors() {
    for std in [f32::NAN, -1.0, f32::INFINITY] {
        let err = gaussian_noise(0, 0, 0, 4, std, NoiseMode::Standard).unwrap_err();
        assert!(matches!(err, Error::InvalidNoiseStd { .. }), "{err}");
    }
    let err = gaussian_noise(0, 0, MAX_ELEMENTS - 2, 3, 1.0, NoiseMode::Standard).unwrap_err();
    assert!(
        matches!(err, Error::ElementRangeOutOfBounds { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("2^62"));
    let err = gaussian_noise_f64(0, 0, u64::MAX, 1, 1.0, NoiseMode::Secure).unwrap_err();
    assert!(matches!(err, Error::ElementRangeOutOfBounds { .. }));
    // The last addressable element is fine; zero elements and std 0 are fine.
    assert_eq!(
        gaussian_noise(0, 0, MAX_ELEMENTS - 1, 1, 1.0, NoiseMode::Secure)
            .unwrap()
            .len(),
        1
    );
    assert!(gaussian_noise(0, 0, 5, 0, 1.0, NoiseMode::Standard)
        .unwrap()
        .is_empty());
    assert!(gaussian_noise(0, 0, 5, 9, 0.0, NoiseMode::Standard)
        .unwrap()
        .iter()
        .all(|&v| v == 0.0));
}

#[test]
fn secure_seeds_come_from_the_os_and_differ() {
    let a = secure_seed().unwrap();
    let b = secure_seed().unwrap();
    assert_ne!(a, b);
}

/// Pins the first values for seed 0, step 0 so that any change to the bits is noticed (the GPU
/// comparison relies on them staying put).
#[test]
fn first_values_are_pinned() {
    let f32_bits: Vec<u32> = gaussian_noise(0, 0, 0, 4, 1.0, NoiseMode::Standard)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let f64_bits: Vec<u64> = gaussian_noise_f64(0, 0, 0, 2, 1.0, NoiseMode::Standard)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let secure_bits: Vec<u32> = gaussian_noise(0, 0, 0, 4, 1.0, NoiseMode::Secure)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(f32_bits, PINNED_F32);
    assert_eq!(f64_bits, PINNED_F64);
    assert_eq!(secure_bits, PINNED_SECURE_F32);
}

/// 0.99113756, -0.9246626, -0.61760896, -0.4820686.
const PINNED_F32: [u32; 4] = [0x3F7D_BB31, 0xBF6C_B6B0, 0xBF1E_1B9F, 0xBEF6_D1B2];
/// -0.39766753844418223, -0.31039547880173834.
const PINNED_F64: [u64; 2] = [0xBFD9_7362_8C13_1C06, 0xBFD3_DD84_FF91_E70E];
/// 0.7131884, -0.1729148, -0.28766063, -0.79967535.
const PINNED_SECURE_F32: [u32; 4] = [0x3F36_9384, 0xBE31_1094, 0xBE93_4841, 0xBF4C_B786];

proptest! {
    /// A value depends only on (seed, step, global index): any split of a range agrees.
    #[test]
    fn values_do_not_depend_on_how_a_range_is_split(
        seed: u64, step: u64, offset in 0u64..1_000_000_000_000, n in 0usize..40, cut in 0usize..40,
        secure: bool,
    ) {
        let mode = if secure { NoiseMode::Secure } else { NoiseMode::Standard };
        let cut = cut.min(n);
        let whole = gaussian_noise(seed, step, offset, n, 1.5, mode).unwrap();
        let head = gaussian_noise(seed, step, offset, cut, 1.5, mode).unwrap();
        let tail = gaussian_noise(seed, step, offset + cut as u64, n - cut, 1.5, mode).unwrap();
        prop_assert_eq!(&whole[..cut], &head[..]);
        prop_assert_eq!(&whole[cut..], &tail[..]);
        let whole64 = gaussian_noise_f64(seed, step, offset, n, 1.5, mode).unwrap();
        let tail64 = gaussian_noise_f64(seed, step, offset + cut as u64, n - cut, 1.5, mode).unwrap();
        prop_assert_eq!(&whole64[cut..], &tail64[..]);
    }
}

mod cuda_source {
    use super::super::{math_f32 as m32, math_f64 as m64, NOISE_CUDA_SOURCE as SRC};

    #[test]
    fn needs_no_include_and_defines_every_kernel() {
        assert!(!SRC.contains("#include"));
        for kernel in [
            "psg_gaussian_noise_f32",
            "psg_add_gaussian_noise_f32",
            "psg_gaussian_noise_secure_f32",
            "psg_add_gaussian_noise_secure_f32",
            "psg_gaussian_noise_f64",
            "psg_add_gaussian_noise_f64",
            "psg_gaussian_noise_secure_f64",
            "psg_add_gaussian_noise_secure_f64",
        ] {
            let ty = if kernel.ends_with("f32") {
                "float"
            } else {
                "double"
            };
            let signature = format!(
                "extern \"C\" __global__ void {kernel}({ty}* out, unsigned long long n, unsigned long long seed,"
            );
            assert!(SRC.contains(&signature), "missing {kernel}");
        }
    }

    #[test]
    fn constants_match_the_rust_ones() {
        let f32s: Vec<(String, f32)> = [
            ("LN2_HI", m32::LN2_HI),
            ("LN2_LO", m32::LN2_LO),
            ("LN_C1", m32::LN_C1),
            ("LN_C2", m32::LN_C2),
            ("LN_C3", m32::LN_C3),
            ("LN_C4", m32::LN_C4),
            ("SIN_S0", m32::SIN_S0),
            ("SIN_S1", m32::SIN_S1),
            ("SIN_S2", m32::SIN_S2),
            ("SIN_S3", m32::SIN_S3),
            ("SIN_S4", m32::SIN_S4),
            ("COS_C1", m32::COS_C1),
            ("COS_C2", m32::COS_C2),
            ("COS_C3", m32::COS_C3),
            ("COS_C4", m32::COS_C4),
            ("COS_C5", m32::COS_C5),
            ("TWO_POW_M32", m32::TWO_POW_M32),
            ("TWO_POW_M30", m32::TWO_POW_M30),
        ]
        .into_iter()
        .map(|(name, v)| (name.to_string(), v))
        .collect();
        for (name, value) in &f32s {
            let line = format!("#define PSG_{name}_F32 {value:?}f\n");
            assert!(SRC.contains(&line), "missing `{}`", line.trim());
        }

        let mut f64s: Vec<(String, f64)> = vec![
            ("LN2_HI".into(), m64::LN2_HI),
            ("LN2_LO".into(), m64::LN2_LO),
            ("TWO_POW_M64".into(), m64::TWO_POW_M64),
            ("TWO_POW_M62".into(), m64::TWO_POW_M62),
        ];
        f64s.extend(
            m64::LN_C
                .iter()
                .enumerate()
                .map(|(j, &v)| (format!("LN_C{}", j + 1), v)),
        );
        f64s.extend(
            m64::SIN_S
                .iter()
                .enumerate()
                .map(|(j, &v)| (format!("SIN_S{j}"), v)),
        );
        f64s.extend(
            m64::COS_C
                .iter()
                .enumerate()
                .map(|(j, &v)| (format!("COS_C{}", j + 1), v)),
        );
        for (name, value) in &f64s {
            let line = format!("#define PSG_{name}_F64 {value:?}\n");
            assert!(SRC.contains(&line), "missing `{}`", line.trim());
        }
        // Every constant the source uses is one of these.
        let defined = SRC.matches("#define ").count();
        assert_eq!(defined, f32s.len() + f64s.len());
    }

    /// Every decimal literal in the f32 code carries the `f` suffix (a bare one is a double).
    #[test]
    fn f32_code_has_only_float_literals() {
        let start = SRC.find("// ---- f32").unwrap();
        let end = SRC.find("// ---- f64").unwrap();
        let f32_defines = SRC.lines().filter(|l| l.contains("_F32 "));
        let code = f32_defines.chain(SRC[start..end].lines());
        for line in code {
            let bytes = line.as_bytes();
            for (i, _) in line.match_indices('.') {
                let digit_before = i > 0 && bytes[i - 1].is_ascii_digit();
                let digit_after = bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
                if !(digit_before && digit_after) {
                    continue;
                }
                let rest = &line[i + 1..];
                let literal_end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '+'))
                    .unwrap_or(rest.len());
                assert!(
                    rest[..literal_end].ends_with('f'),
                    "double literal in f32 code: {line}"
                );
            }
        }
    }
}

/// More noise values than the host can hold: an error, not `vec!`'s panic or abort.
#[test]
fn noise_too_large_for_memory_is_an_error() {
    let n = 1usize << 61;
    assert!(matches!(
        gaussian_noise(1, 0, 0, n, 1.0, NoiseMode::Standard),
        Err(crate::Error::HostMemory { elements }) if elements == n
    ));
    assert!(matches!(
        gaussian_noise_f64(1, 0, 0, n, 1.0, NoiseMode::Standard),
        Err(crate::Error::HostMemory { .. })
    ));
}
