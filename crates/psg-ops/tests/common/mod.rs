//! Shared by the CPU and GPU tests: seeded data, plain references, and comparisons.
#![allow(dead_code)]
// `!(a > b)` is deliberate: it is how the rules treat NaN (not an outlier), as the kernels do.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod reference;
pub mod tensors;

/// Columns, q, and the q-quantile where it needs no interpolation but an end is infinite
/// (torch's `lerp` formula gives NaN there): `(column, q, quantile)`.
pub fn quantiles_of_infinite_values() -> Vec<(Vec<f32>, f64, f32)> {
    let inf = f32::INFINITY;
    vec![
        (vec![inf], 0.5, inf),
        (vec![-inf, 1.0], 0.0, -inf),
        (vec![1.0, inf], 1.0, inf),
        (vec![-inf, -inf, 1.0], 0.5, -inf),
        (vec![1.0, inf, inf], 0.75, inf),
    ]
}

/// CUDA device 0 for a `gpu_*` test, or `None` (the test says so and checks nothing) when there is
/// no usable GPU; with `PSG_REQUIRE_GPU=1` a missing GPU fails the test instead. It compiles
/// optimized builds only (`JitMode::Optimized`), so the tests check the kernels that run after
/// a kernel's first calls; `cuda_in` gives other modes.
pub fn cuda() -> Option<psg_runtime::CudaDevice> {
    cuda_in(psg_runtime::JitMode::Optimized)
}

/// Like [`cuda`], a fresh handle compiling in `mode`.
pub fn cuda_in(mode: psg_runtime::JitMode) -> Option<psg_runtime::CudaDevice> {
    match psg_runtime::cuda_device(0) {
        Ok(d) => {
            d.set_jit_mode(mode);
            Some(d)
        }
        Err(e) if std::env::var("PSG_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("PSG_REQUIRE_GPU=1 but no usable GPU: {e}")
        }
        Err(e) => {
            eprintln!("no GPU, test not run: {e}");
            None
        }
    }
}

/// SplitMix64: a small seeded generator, so tests need no extra crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly normal (sum of uniforms), scaled.
    pub fn normal(&mut self) -> f64 {
        (0..4).map(|_| self.uniform()).sum::<f64>() * 1.7320508 - 3.4641016
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `n` finite values, normal-ish with a few heavy outliers: random data, never zeros.
    pub fn gradients(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let x = self.normal() as f32;
                if self.below(50) == 0 {
                    x * 40.0
                } else {
                    x
                }
            })
            .collect()
    }

    /// Values that exercise the conventions: ties, +-0, subnormals, and (if `special`) +-inf and
    /// NaN.
    pub fn nasty(&mut self, n: usize, special: bool) -> Vec<f32> {
        (0..n)
            .map(|_| match self.below(if special { 12 } else { 9 }) {
                0 => 0.0,
                1 => -0.0,
                2 => f32::from_bits(1 + self.below(1000) as u32), // subnormal
                3 | 4 => (self.below(4) as f32) - 1.5,            // ties
                9 => f32::INFINITY,
                10 => f32::NEG_INFINITY,
                11 => f32::NAN,
                _ => self.normal() as f32,
            })
            .collect()
    }
}

/// Same value, NaN equal to NaN and +0 distinct from -0.
pub fn same_bits(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// Asserts two result vectors are identical (NaN == NaN, signed zeros distinct).
pub fn assert_identical(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            same_bits(*g, *w),
            "{what}: element {i}: got {g:e} ({:#x}), want {w:e} ({:#x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// Asserts `got` is within `rel` of `want` relative to `scale[i]` (NaN must match NaN, inf inf).
pub fn assert_close(what: &str, got: &[f32], want: &[f64], scale: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = f64::from(g);
        if w.is_nan() || g.is_nan() {
            assert!(
                w.is_nan() && g.is_nan(),
                "{what}: element {i}: got {g}, want {w}"
            );
        } else if w.is_infinite() || g.is_infinite() {
            assert_eq!(g, w, "{what}: element {i}");
        } else {
            let tol = rel * scale[i].max(w.abs()).max(1e-30);
            assert!(
                (g - w).abs() <= tol,
                "{what}: element {i}: got {g:e}, want {w:e} (tolerance {tol:e})"
            );
        }
    }
}

/// Column `p` of a row-major `g[B, P]`.
pub fn column(g: &[f32], b: usize, p: usize, col: usize) -> Vec<f32> {
    (0..b).map(|row| g[row * p + col]).collect()
}

/// The DSL's Gaussian functions at given mu and sigma: the kernel's sum and the density's sum.
#[allow(dead_code)]
#[psg_macros::batch_reduce(crate = "psg_runtime")]
pub fn gaussian_sums(g: Batch, mu: f64, sigma: f64) -> (f32, f32) {
    (
        g.map(|x| normal_kernel(x, mu, sigma)).sum(),
        g.map(|x| normal_pdf(x, mu, sigma)).sum(),
    )
}

/// Order statistics of filtered and computed columns: removed values take the largest key (a
/// bucket at the top of the order holds them), and the keys are computed from the element. The
/// median of the values above `lo`, a quantile of the distances to `lo` below 2, and the median
/// of the squares (ties between x and -x).
#[psg_macros::batch_reduce(crate = "psg_runtime")]
pub fn filtered_order(g: Batch, lo: f64) -> (f32, f32, f32) {
    (
        g.filter(|x| x > lo).median(),
        g.map(|x| (x - lo).abs()).filter(|d| d < 2.0).quantile(0.7),
        g.map(|x| x * x).median(),
    )
}

/// Two passes with every kind of streaming reduction after the first: a minimum and a maximum of
/// columns that depend on it (one through a per-sample input), a filtered count, a let of each
/// pass. Its tiled kernel computes two columns a thread for 16-bit input (tiles of 64 columns or
/// more), which the built-ins exercise only with sums and counts.
#[allow(dead_code)]
#[psg_macros::batch_reduce(crate = "psg_runtime")]
pub fn centred_extremes(g: Batch, weights: PerSample, k: f64) -> (f32, f32, f32, f32) {
    let mu = g.mean();
    let lo = g.map(|x| x - mu).min();
    let hi = g.zip(weights).map(|x, w| (x - mu) * w).max();
    let near = g.filter(|x| (x - mu).abs() <= k).count();
    let spread = hi - lo;
    (lo, hi, near, spread / near)
}

/// A per-sample output after two passes (a sum, then a maximum of a column that depends on it),
/// through a per-sample input: the tiled kernel's path of two columns a thread writes both
/// columns of a sample at once in 16-bit input.
#[allow(dead_code)]
#[psg_macros::batch_reduce(crate = "psg_runtime")]
pub fn weighted_deviations(g: Batch, weights: PerSample, k: f64) -> Batch {
    let mu = g.mean();
    let hi = g.map(|x| (x - mu).abs()).max();
    g.zip(weights).map(|x, w| {
        if (x - mu).abs() > k * hi {
            w
        } else {
            (x - mu) * w
        }
    })
}

/// A filtered per-sample output (removed values are 0) after one pass.
#[allow(dead_code)]
#[psg_macros::batch_reduce(crate = "psg_runtime")]
pub fn near_the_mean(g: Batch, k: f64) -> Batch {
    let mu = g.mean();
    g.filter(|x| (x - mu).abs() <= k)
}

/// A user's aggregation for the DP tests' `RobustOp::Custom`: each coordinate's mean after
/// clamping it to its q and 1 - q quantiles.
#[psg_macros::batch_reduce(crate = "psg_runtime")]
pub fn winsorized_mean(g: Batch, q: f64) -> f32 {
    let (lo, hi) = (g.quantile(q), g.quantile(1.0 - q));
    g.map(|x| x.clamp(lo, hi)).mean()
}

/// [`winsorized_mean`] at the 10% and 90% quantiles, as a `CustomOp` takes it.
pub fn winsorized_10(g: &psg_runtime::Tensor) -> psg_runtime::Result<psg_runtime::Tensor> {
    winsorized_mean(g, 0.1)
}

/// A DP-SGD step whose aggregation is the user's `op` (named `name`): noise multiplier 1, flat
/// clipping to 1, sample rate 0.1, expected batch size `expected`, no stated sensitivity, noise
/// from `seed`.
pub fn custom_dp(
    name: &'static str,
    op: fn(&psg_runtime::Tensor) -> psg_runtime::Result<psg_runtime::Tensor>,
    expected: f64,
    seed: u64,
) -> psg_ops::dp::DpSgd {
    use psg_ops::dp::{
        Aggregation, Clipping, CustomOp, DpSgd, DpSgdConfig, NoiseGenerator, RobustOp,
    };
    let config = DpSgdConfig::new(1.0, Clipping::flat(1.0), 0.1, expected).with_aggregation(
        Aggregation::Robust {
            op: RobustOp::Custom(CustomOp { name, op }),
            sensitivity: None,
        },
    );
    DpSgd::new(config, NoiseGenerator::new(seed)).unwrap()
}
