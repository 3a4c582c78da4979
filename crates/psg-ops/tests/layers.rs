//! The one-pass layer kernels and the capture API: on the CPU against plain f64 references
//! (the batch gradient is the ordinary gradient of the summed loss; per-sample gradients match
//! finite differences of each sample's own loss and a loop over samples one at a time); on a GPU
//! (tests named `gpu_*`, `#[ignore]`d where there is none) against the CPU on fresh random data of
//! awkward sizes.
//!
//! On a GPU host: `cargo test -p psg-ops --test layers -- --include-ignored`, with
//! `PSG_REQUIRE_GPU=1` to make a missing GPU a failure.

mod common;

use psg_ops::layers::{
    capture::{predictions, sgd_step, softmax_cross_entropy, Layer, Linear, Relu, Sequential},
    conv2d, embedding, layer_kernel_sources, layer_norm, linear, linear_with, BatchSum, Conv2dSpec,
    LayerGrads, LinearSchedule, Sink,
};
use psg_runtime::{nvrtc_status, Device, Error, Tensor};

// ---------------------------------------------------------------------------------------------
// Helpers

/// SplitMix64, so the test needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), never exactly zero.
    fn value(&mut self) -> f32 {
        let u = ((self.next() >> 40) as f32 + 0.5) / (1u64 << 24) as f32;
        2.0 * u - 1.0
    }

    fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.value()).collect()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn cpu_tensor(values: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn random(rng: &mut Rng, shape: &[usize]) -> Tensor {
    cpu_tensor(rng.values(shape.iter().product()), shape)
}

fn host(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

fn abs(t: &Tensor) -> Tensor {
    cpu_tensor(host(t).iter().map(|v| v.abs()).collect(), t.shape())
}

fn dense(g: &LayerGrads, name: &str) -> Vec<f32> {
    host(g.get(name).unwrap().per_sample.dense().unwrap())
}

fn batch(g: &LayerGrads, name: &str) -> Vec<f32> {
    host(&g.get(name).unwrap().batch)
}

/// Two FP32 computations of the same sums of `terms` products in different orders differ by at
/// most about `2 * terms * eps` times the sum of the magnitudes (`bound`).
fn assert_rounding_close(what: &str, got: &[f32], want: &[f32], bound: &[f32], terms: usize) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    assert_eq!(bound.len(), want.len(), "{what}: bound length differs");
    let k = 2.0 * (terms as f32 + 2.0) * f32::EPSILON;
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(bound).enumerate() {
        assert!(
            (g - w).abs() <= k * s + 1e-30,
            "{what}: element {i}: got {g:e}, want {w:e} (bound {s:e})"
        );
    }
}

/// An FP32 result against an f64 reference: relative to the largest reference magnitude.
fn assert_near(what: &str, got: &[f32], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let scale = want.iter().fold(1e-12f64, |m, w| m.max(w.abs()));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= rel * scale,
            "{what}: element {i}: got {g:e}, want {w:e} (scale {scale:e})"
        );
    }
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// Central difference of `loss` in coordinate `i` of `params` (exact for a loss linear in them).
fn finite_difference(params: &[f64], i: usize, h: f64, loss: impl Fn(&[f64]) -> f64) -> f64 {
    let mut p = params.to_vec();
    p[i] = params[i] + h;
    let up = loss(&p);
    p[i] = params[i] - h;
    (up - loss(&p)) / (2.0 * h)
}

/// Sum over samples of per-sample rows `[B, P]`, in f64.
fn sum_rows(per_sample: &[f32], b: usize) -> Vec<f64> {
    let p = per_sample.len() / b.max(1);
    (0..p)
        .map(|j| (0..b).map(|s| f64::from(per_sample[s * p + j])).sum())
        .collect()
}

/// Row `b` of a `[B, ...]` CPU tensor as a `[1, ...]` tensor.
fn sample(t: &Tensor, b: usize) -> Tensor {
    let p = t.per_sample_len();
    let mut shape = t.shape().to_vec();
    shape[0] = 1;
    cpu_tensor(host(t)[b * p..(b + 1) * p].to_vec(), &shape)
}

// ---------------------------------------------------------------------------------------------
// Linear

/// sample b's loss `sum_t <r[b, t], a[b, t] W^T + bias>`, in f64.
#[allow(clippy::too_many_arguments)]
fn linear_loss(
    a: &[f64],
    r: &[f64],
    w: &[f64],
    bias: &[f64],
    t: usize,
    m: usize,
    n: usize,
    b: usize,
) -> f64 {
    let mut loss = 0.0;
    for tt in 0..t {
        let row = b * t + tt;
        for o in 0..m {
            let y: f64 = (0..n).map(|i| a[row * n + i] * w[o * n + i]).sum::<f64>()
                + bias.get(o).copied().unwrap_or(0.0);
            loss += r[row * m + o] * y;
        }
    }
    loss
}

#[test]
fn linear_per_sample_gradients_are_each_samples_own_gradient() {
    let mut rng = Rng(11);
    for (b, t, n, m, with_t) in [(3, 1, 5, 4, false), (2, 4, 3, 6, true), (1, 7, 9, 2, true)] {
        let a_shape: Vec<usize> = if with_t { vec![b, t, n] } else { vec![b, n] };
        let g_shape: Vec<usize> = if with_t { vec![b, t, m] } else { vec![b, m] };
        let (a, g) = (random(&mut rng, &a_shape), random(&mut rng, &g_shape));
        let grads = linear(&a, &g, true, Sink::Keep).unwrap();
        let (ps_w, ps_b) = (dense(&grads, "weight"), dense(&grads, "bias"));
        assert_eq!(
            grads.weight().unwrap().per_sample.dense().unwrap().shape(),
            &[b, m, n]
        );
        assert_eq!(
            grads.bias().unwrap().per_sample.dense().unwrap().shape(),
            &[b, m]
        );
        let (av, rv) = (f64s(&host(&a)), f64s(&host(&g)));
        // Finite differences of each sample's own loss: the loss is linear in W, so h = 1 is exact.
        let w0 = vec![0.25f64; m * n];
        let b0 = vec![0.5f64; m];
        for s in 0..b {
            let fd_w: Vec<f64> = (0..m * n)
                .map(|i| {
                    finite_difference(&w0, i, 1.0, |w| linear_loss(&av, &rv, w, &b0, t, m, n, s))
                })
                .collect();
            assert_near(
                "linear weight vs finite differences",
                &ps_w[s * m * n..(s + 1) * m * n],
                &fd_w,
                1e-6,
            );
            let fd_b: Vec<f64> = (0..m)
                .map(|i| {
                    finite_difference(&b0, i, 1.0, |bias| {
                        linear_loss(&av, &rv, &w0, bias, t, m, n, s)
                    })
                })
                .collect();
            assert_near(
                "linear bias vs finite differences",
                &ps_b[s * m..(s + 1) * m],
                &fd_b,
                1e-6,
            );
            // A loop over samples, one at a time, gives the same numbers bit for bit.
            let one = linear(&sample(&a, s), &sample(&g, s), true, Sink::Keep).unwrap();
            assert_eq!(dense(&one, "weight"), ps_w[s * m * n..(s + 1) * m * n]);
            assert_eq!(dense(&one, "bias"), ps_b[s * m..(s + 1) * m]);
        }
        // The batch gradient is the sum of the per-sample gradients and the ordinary gradient
        // G^T A over the flattened batch.
        let ordinary: Vec<f64> = (0..m * n)
            .map(|e| {
                (0..b * t)
                    .map(|r| rv[r * m + e / n] * av[r * n + e % n])
                    .sum()
            })
            .collect();
        assert_near(
            "linear batch vs G^T A",
            &batch(&grads, "weight"),
            &ordinary,
            1e-6,
        );
        assert_near(
            "linear batch vs sum",
            &batch(&grads, "weight"),
            &sum_rows(&ps_w, b),
            1e-6,
        );
        assert_near(
            "linear bias batch",
            &batch(&grads, "bias"),
            &sum_rows(&ps_b, b),
            1e-6,
        );
    }
}

#[test]
fn linear_without_bias_and_empty_batches() {
    let mut rng = Rng(12);
    let (a, g) = (random(&mut rng, &[2, 3]), random(&mut rng, &[2, 4]));
    let grads = linear(&a, &g, false, Sink::Keep).unwrap();
    assert_eq!(grads.params.len(), 1);
    assert!(grads.bias().is_none());
    let empty = linear(
        &cpu_tensor(vec![], &[0, 3]),
        &cpu_tensor(vec![], &[0, 4]),
        true,
        Sink::Keep,
    )
    .unwrap();
    assert_eq!(
        empty.weight().unwrap().per_sample.dense().unwrap().shape(),
        &[0, 4, 3]
    );
    assert_eq!(batch(&empty, "weight"), vec![0.0; 12]);
    assert_eq!(batch(&empty, "bias"), vec![0.0; 4]);
}

#[test]
fn sinks_hand_per_sample_gradients_to_reductions() {
    let mut rng = Rng(13);
    let (a, g) = (random(&mut rng, &[5, 3, 4]), random(&mut rng, &[5, 3, 6]));
    let kept = linear(&a, &g, true, Sink::Keep).unwrap();
    let median = linear(&a, &g, true, Sink::Reduce(&psg_ops::median)).unwrap();
    let by_def = linear(&a, &g, true, Sink::Reduction(&psg_ops::median::DEF)).unwrap();
    for name in ["weight", "bias"] {
        let want =
            host(&psg_ops::median(kept.get(name).unwrap().per_sample.dense().unwrap()).unwrap());
        for got in [&median, &by_def] {
            let p = got.get(name).unwrap();
            assert_eq!(host(p.per_sample.reduced().unwrap()), want, "{name}");
            assert_eq!(
                host(&p.batch),
                batch(&kept, name),
                "{name}: the batch gradient comes too"
            );
        }
    }
    let mean = linear(&a, &g, false, Sink::Reduce(&psg_ops::mean)).unwrap();
    let want: Vec<f64> = batch(&kept, "weight")
        .iter()
        .map(|&v| f64::from(v) / 5.0)
        .collect();
    assert_near(
        "mean sink",
        &host(mean.weight().unwrap().per_sample.reduced().unwrap()),
        &want,
        1e-6,
    );
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let a = cpu_tensor(vec![1.0; 6], &[2, 3]);
    let g = cpu_tensor(vec![1.0; 4], &[2, 2]);
    assert!(matches!(
        linear(&a, &cpu_tensor(vec![1.0; 6], &[3, 2]), true, Sink::Keep),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        linear(&a, &cpu_tensor(vec![1.0; 4], &[2, 1, 2]), true, Sink::Keep),
        Err(Error::Shape(_))
    ));
    let a64 = Tensor::from_vec(vec![1.0f64; 6], &[2, 3], &Device::Cpu).unwrap();
    assert!(matches!(
        linear(&a64, &g, true, Sink::Keep),
        Err(Error::DType(_))
    ));
    let bad_schedule = LinearSchedule {
        k_tile: 12,
        ..LinearSchedule::default()
    };
    // A schedule the GPU cannot run is refused on the CPU too, so code that passes here runs there.
    assert!(matches!(
        linear_with(&a, &g, true, Sink::Keep, bad_schedule),
        Err(Error::InvalidParameter(_))
    ));
    let k32_shared = LinearSchedule {
        k_tile: 32,
        batch_sum: BatchSum::Shared,
        splits: None,
    };
    assert!(matches!(
        linear_with(&a, &g, true, Sink::Keep, k32_shared),
        Err(Error::InvalidParameter(_))
    ));
    let no_splits = LinearSchedule {
        splits: Some(0),
        ..LinearSchedule::default()
    };
    assert!(matches!(
        linear_with(&a, &g, true, Sink::Keep, no_splits),
        Err(Error::InvalidParameter(_))
    ));
    // Embedding: out-of-range index, wrong count.
    let ge = cpu_tensor(vec![1.0; 4], &[2, 2]);
    assert!(matches!(
        embedding(&[0, 5], &ge, 5, Sink::Keep),
        Err(Error::InvalidParameter(_))
    ));
    assert!(matches!(
        embedding(&[0], &ge, 5, Sink::Keep),
        Err(Error::Shape(_))
    ));
    // Conv2d: groups that do not divide, a kernel that does not fit, a gy of the wrong size.
    let x = cpu_tensor(vec![1.0; 2 * 3 * 4 * 4], &[2, 3, 4, 4]);
    let gy = cpu_tensor(vec![1.0; 2 * 2 * 2 * 2], &[2, 2, 2, 2]);
    let spec = Conv2dSpec::new(3, 3);
    assert!(conv2d(&x, &gy, &spec, Sink::Keep).is_ok());
    assert!(matches!(
        conv2d(&x, &gy, &Conv2dSpec { groups: 2, ..spec }, Sink::Keep),
        Err(Error::InvalidParameter(_))
    ));
    assert!(matches!(
        conv2d(&x, &gy, &Conv2dSpec::new(5, 5), Sink::Keep),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        conv2d(
            &x,
            &gy,
            &Conv2dSpec {
                stride: (0, 1),
                ..spec
            },
            Sink::Keep
        ),
        Err(Error::InvalidParameter(_))
    ));
    assert!(matches!(
        conv2d(&x, &gy, &Conv2dSpec::new(2, 2), Sink::Keep),
        Err(Error::Shape(_))
    ));
    // Sizes past usize: said so, not "does not fit".
    for spec in [
        Conv2dSpec {
            padding: (usize::MAX, 0),
            ..spec
        },
        Conv2dSpec {
            dilation: (usize::MAX, 1),
            ..spec
        },
    ] {
        match conv2d(&x, &gy, &spec, Sink::Keep) {
            Err(Error::InvalidParameter(m)) => assert!(m.contains("does not fit in usize"), "{m}"),
            other => panic!("expected InvalidParameter, got {other:?}"),
        }
    }
    // LayerNorm: shapes differ.
    assert!(matches!(
        layer_norm(&a, &g, Sink::Keep),
        Err(Error::Shape(_))
    ));
    // Capture: backward before forward, labels out of range.
    let mut relu = Relu::new();
    assert!(relu.backward(&a).is_err());
    assert!(matches!(
        softmax_cross_entropy(&a, &[0, 3]),
        Err(Error::InvalidParameter(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Conv2d

/// Sample b's loss `<r[b], conv(x[b], w) + bias>` with a plain NCHW convolution, in f64.
#[allow(clippy::too_many_arguments)]
fn conv_loss(
    x: &[f64],
    r: &[f64],
    w: &[f64],
    bias: &[f64],
    dims: [usize; 4],
    c_out: usize,
    out: (usize, usize),
    spec: &Conv2dSpec,
    b: usize,
) -> f64 {
    let [_, c_in, h, wd] = dims;
    let (kh, kw) = spec.kernel;
    let cg = c_in / spec.groups;
    let cog = c_out / spec.groups;
    let mut loss = 0.0;
    for co in 0..c_out {
        let gr = co / cog;
        for oh in 0..out.0 {
            for ow in 0..out.1 {
                let mut y = bias.get(co).copied().unwrap_or(0.0);
                for ci in 0..cg {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let ih = (oh * spec.stride.0 + ky * spec.dilation.0) as isize
                                - spec.padding.0 as isize;
                            let iw = (ow * spec.stride.1 + kx * spec.dilation.1) as isize
                                - spec.padding.1 as isize;
                            if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                continue;
                            }
                            let xi =
                                ((b * c_in + gr * cg + ci) * h + ih as usize) * wd + iw as usize;
                            y += w[((co * cg + ci) * kh + ky) * kw + kx] * x[xi];
                        }
                    }
                }
                loss += r[((b * c_out + co) * out.0 + oh) * out.1 + ow] * y;
            }
        }
    }
    loss
}

fn conv_specs() -> Vec<(usize, usize, usize, usize, usize, Conv2dSpec)> {
    // (B, C_in, H, W, C_out, spec)
    let s = Conv2dSpec::new(3, 3);
    vec![
        (2, 3, 5, 6, 4, s),
        (
            3,
            4,
            7,
            5,
            6,
            Conv2dSpec {
                stride: (2, 1),
                padding: (1, 2),
                groups: 2,
                ..s
            },
        ),
        (
            2,
            2,
            9,
            8,
            3,
            Conv2dSpec {
                kernel: (2, 3),
                dilation: (2, 1),
                padding: (1, 0),
                bias: false,
                ..s
            },
        ),
        (
            1,
            6,
            6,
            6,
            6,
            Conv2dSpec {
                kernel: (1, 1),
                groups: 3,
                stride: (2, 2),
                ..s
            },
        ),
    ]
}

#[test]
fn conv2d_per_sample_gradients_are_each_samples_own_gradient() {
    let mut rng = Rng(21);
    for (b, c_in, h, w, c_out, spec) in conv_specs() {
        let (ho, wo) = spec.output_size(h, w).unwrap();
        let x = random(&mut rng, &[b, c_in, h, w]);
        let gy = random(&mut rng, &[b, c_out, ho, wo]);
        let grads = conv2d(&x, &gy, &spec, Sink::Keep).unwrap();
        let r = c_in / spec.groups * spec.kernel.0 * spec.kernel.1;
        assert_eq!(
            grads.weight().unwrap().per_sample.dense().unwrap().shape(),
            &[b, c_out, c_in / spec.groups, spec.kernel.0, spec.kernel.1]
        );
        let ps_w = dense(&grads, "weight");
        let (xv, rv) = (f64s(&host(&x)), f64s(&host(&gy)));
        let w0 = vec![0.1f64; c_out * r];
        let b0 = vec![0.2f64; c_out];
        let dims = [b, c_in, h, w];
        for s in 0..b {
            let fd: Vec<f64> = (0..c_out * r)
                .map(|i| {
                    finite_difference(&w0, i, 1.0, |wt| {
                        conv_loss(&xv, &rv, wt, &b0, dims, c_out, (ho, wo), &spec, s)
                    })
                })
                .collect();
            assert_near(
                &format!("conv2d weight {spec:?}"),
                &ps_w[s * c_out * r..(s + 1) * c_out * r],
                &fd,
                1e-6,
            );
            let one = conv2d(&sample(&x, s), &sample(&gy, s), &spec, Sink::Keep).unwrap();
            assert_eq!(
                dense(&one, "weight"),
                ps_w[s * c_out * r..(s + 1) * c_out * r]
            );
            if spec.bias {
                let fd: Vec<f64> = (0..c_out)
                    .map(|i| {
                        finite_difference(&b0, i, 1.0, |bias| {
                            conv_loss(&xv, &rv, &w0, bias, dims, c_out, (ho, wo), &spec, s)
                        })
                    })
                    .collect();
                assert_near(
                    "conv2d bias",
                    &dense(&grads, "bias")[s * c_out..(s + 1) * c_out],
                    &fd,
                    1e-6,
                );
            }
        }
        assert_near(
            "conv2d batch",
            &batch(&grads, "weight"),
            &sum_rows(&ps_w, b),
            1e-6,
        );
        assert_eq!(grads.bias().is_some(), spec.bias);
        if spec.bias {
            assert_near(
                "conv2d bias batch",
                &batch(&grads, "bias"),
                &sum_rows(&dense(&grads, "bias"), b),
                1e-6,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Embedding

/// Sample b's loss `sum_t <g[b, t], W[idx[b, t]]>`, in f64.
fn embedding_loss(idx: &[u32], g: &[f64], w: &[f64], t: usize, d: usize, b: usize) -> f64 {
    (0..t)
        .map(|tt| {
            let row = idx[b * t + tt] as usize;
            (0..d)
                .map(|j| g[(b * t + tt) * d + j] * w[row * d + j])
                .sum::<f64>()
        })
        .sum()
}

/// Dense `[B, V, D]` from sparse per-sample rows (for checks only).
fn densify(grads: &LayerGrads, b: usize, v: usize, d: usize) -> Vec<f32> {
    let sparse = grads.weight().unwrap().per_sample.sparse().unwrap();
    let values = host(&sparse.values);
    let mut out = vec![0.0f32; b * v * d];
    for s in 0..b {
        for (j, &row) in sparse.rows_of(s).iter().enumerate() {
            let slot = sparse.offsets[s] + j;
            out[(s * v + row as usize) * d..][..d]
                .copy_from_slice(&values[slot * d..(slot + 1) * d]);
        }
    }
    out
}

#[test]
fn embedding_per_sample_gradients_are_sparse_and_each_samples_own() {
    let mut rng = Rng(31);
    let (b, t, d, v) = (4, 6, 3, 9);
    // Repeats within a sample, rows shared between samples, and rows nobody touches.
    let idx: Vec<u32> = (0..b * t).map(|_| rng.below(v - 2) as u32).collect();
    let g = random(&mut rng, &[b, t, d]);
    let grads = embedding(&idx, &g, v, Sink::Keep).unwrap();
    let sparse = grads.weight().unwrap().per_sample.sparse().unwrap();
    assert_eq!(sparse.batch_size(), b);
    for s in 0..b {
        let mut want: Vec<u32> = idx[s * t..(s + 1) * t].to_vec();
        want.sort_unstable();
        want.dedup();
        assert_eq!(
            sparse.rows_of(s),
            want.as_slice(),
            "sample {s} touched these rows"
        );
    }
    let full = densify(&grads, b, v, d);
    // The sparse values are not a [B, ...] tensor: handing them on as one is an error, and
    // `to_dense` gives what clipping needs, whose norms are each sample's whole gradient's.
    let ps = &grads.weight().unwrap().per_sample;
    match ps.tensor() {
        Err(Error::InvalidParameter(m)) => assert!(m.contains("to_dense"), "{m}"),
        other => panic!("{other:?}"),
    }
    let dense = sparse.to_dense().unwrap();
    assert_eq!(dense.shape(), &[b, v, d]);
    // Hand-edited fields that do not fit together are an error, not a panic.
    let mut broken = sparse.clone();
    broken.vocab = 1;
    assert!(matches!(broken.to_dense(), Err(Error::Shape(_))));
    let mut broken = sparse.clone();
    broken.offsets[1] = broken.rows.len() + 5;
    assert!(matches!(broken.to_dense(), Err(Error::Shape(_))));
    assert_eq!(host(&dense), full);
    let norms = host(&psg_ops::per_sample_norms(&[&dense]).unwrap());
    for (s, norm) in norms.iter().enumerate() {
        let want = full[s * v * d..(s + 1) * v * d]
            .iter()
            .map(|&x| f64::from(x).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((f64::from(*norm) - want).abs() <= 1e-6 * want, "sample {s}");
    }
    let gv = f64s(&host(&g));
    let w0 = vec![0.3f64; v * d];
    for s in 0..b {
        let fd: Vec<f64> = (0..v * d)
            .map(|i| finite_difference(&w0, i, 1.0, |w| embedding_loss(&idx, &gv, w, t, d, s)))
            .collect();
        assert_near(
            "embedding vs finite differences",
            &full[s * v * d..(s + 1) * v * d],
            &fd,
            1e-6,
        );
        let one = embedding(&idx[s * t..(s + 1) * t], &sample(&g, s), v, Sink::Keep).unwrap();
        assert_eq!(densify(&one, 1, v, d), full[s * v * d..(s + 1) * v * d]);
    }
    assert_near(
        "embedding batch",
        &batch(&grads, "weight"),
        &sum_rows(&full, b),
        1e-6,
    );
    // Straight into a reduction: the median over samples of the dense per-sample gradients.
    let med = embedding(&idx, &g, v, Sink::Reduce(&psg_ops::median)).unwrap();
    let want = psg_ops::median(&cpu_tensor(full.clone(), &[b, v, d])).unwrap();
    assert_eq!(
        host(med.weight().unwrap().per_sample.reduced().unwrap()),
        host(&want)
    );
    // One lookup per sample ([B, D]).
    let g2 = random(&mut rng, &[3, d]);
    let one = embedding(&[2, 2, 5], &g2, v, Sink::Keep).unwrap();
    assert_eq!(
        one.weight().unwrap().per_sample.sparse().unwrap().rows,
        vec![2, 2, 5]
    );
}

// ---------------------------------------------------------------------------------------------
// LayerNorm

/// LayerNorm's normalized input over the last dimension, in f64.
fn normalize(x: &[f64], d: usize) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|row| {
            let mean = row.iter().sum::<f64>() / d as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
            row.iter()
                .map(move |v| (v - mean) / (var + 1e-5).sqrt())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn layer_norm_per_sample_gradients_are_each_samples_own_gradient() {
    let mut rng = Rng(41);
    for shape in [vec![3, 5], vec![2, 4, 7], vec![2, 2, 3, 6]] {
        let (b, d) = (shape[0], shape[shape.len() - 1]);
        let rows_per_sample: usize = shape[1..shape.len() - 1].iter().product();
        let x = f64s(&rng.values(shape.iter().product()));
        let x_hat = normalize(&x, d);
        let r = random(&mut rng, &shape);
        let xh = cpu_tensor(x_hat.iter().map(|&v| v as f32).collect(), &shape);
        let grads = layer_norm(&xh, &r, Sink::Keep).unwrap();
        let rv = f64s(&host(&r));
        let xh64 = f64s(&host(&xh));
        // Sample s's loss <r, x_hat * gamma + beta> over its rows.
        let loss = |gamma: &[f64], beta: &[f64], s: usize| -> f64 {
            (0..rows_per_sample * d)
                .map(|e| {
                    let i = s * rows_per_sample * d + e;
                    rv[i] * (xh64[i] * gamma[e % d] + beta[e % d])
                })
                .sum()
        };
        let (g0, b0) = (vec![1.0f64; d], vec![0.0f64; d]);
        let (pw, pb) = (dense(&grads, "weight"), dense(&grads, "bias"));
        for s in 0..b {
            let fd_w: Vec<f64> = (0..d)
                .map(|i| finite_difference(&g0, i, 1.0, |g| loss(g, &b0, s)))
                .collect();
            let fd_b: Vec<f64> = (0..d)
                .map(|i| finite_difference(&b0, i, 1.0, |bt| loss(&g0, bt, s)))
                .collect();
            assert_near("layer_norm weight", &pw[s * d..(s + 1) * d], &fd_w, 1e-6);
            assert_near("layer_norm bias", &pb[s * d..(s + 1) * d], &fd_b, 1e-6);
            let one = layer_norm(&sample(&xh, s), &sample(&r, s), Sink::Keep).unwrap();
            assert_eq!(dense(&one, "weight"), pw[s * d..(s + 1) * d]);
        }
        assert_near(
            "layer_norm batch",
            &batch(&grads, "weight"),
            &sum_rows(&pw, b),
            1e-6,
        );
        assert_near(
            "layer_norm bias batch",
            &batch(&grads, "bias"),
            &sum_rows(&pb, b),
            1e-6,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The capture API

/// A 2-layer MLP `in -> hidden -> classes` with ReLU, initialised from `seed`.
fn mlp(inp: usize, hidden: usize, classes: usize, seed: u64, device: &Device) -> Sequential {
    Sequential::new(vec![
        Box::new(Linear::init(inp, hidden, true, seed, device).unwrap()),
        Box::new(Relu::new()),
        Box::new(Linear::init(hidden, classes, true, seed + 1, device).unwrap()),
    ])
}

/// Sample b's loss of the MLP with parameters `p = [w1, b1, w2, b2]` (flattened), in f64.
fn mlp_loss(p: &[Vec<f64>], x: &[f64], label: usize, dims: (usize, usize, usize)) -> f64 {
    let (inp, hidden, classes) = dims;
    let h: Vec<f64> = (0..hidden)
        .map(|o| ((0..inp).map(|i| p[0][o * inp + i] * x[i]).sum::<f64>() + p[1][o]).max(0.0))
        .collect();
    let z: Vec<f64> = (0..classes)
        .map(|o| {
            (0..hidden)
                .map(|i| p[2][o * hidden + i] * h[i])
                .sum::<f64>()
                + p[3][o]
        })
        .collect();
    let mx = z.iter().cloned().fold(f64::MIN, f64::max);
    z.iter().map(|v| (v - mx).exp()).sum::<f64>().ln() + mx - z[label]
}

#[test]
fn capture_mlp_batch_is_the_ordinary_gradient_and_per_sample_match_finite_differences() {
    let dims = (5, 7, 4);
    let b = 6;
    let mut rng = Rng(51);
    let mut model = mlp(dims.0, dims.1, dims.2, 3, &Device::Cpu);
    let x = random(&mut rng, &[b, dims.0]);
    let labels: Vec<u32> = (0..b).map(|_| rng.below(dims.2) as u32).collect();
    let logits = model.forward(&x).unwrap();
    let loss = softmax_cross_entropy(&logits, &labels).unwrap();
    model.backward(&loss.grad_logits).unwrap();
    let grads = model.param_grads(Sink::Keep).unwrap();
    assert_eq!(grads.len(), 4);
    let params: Vec<Vec<f64>> = model.params().iter().map(|p| f64s(&host(p))).collect();
    let xv = f64s(&host(&x));
    let losses = host(&loss.losses);
    for s in 0..b {
        let xs = &xv[s * dims.0..(s + 1) * dims.0];
        let label = labels[s] as usize;
        assert!((f64::from(losses[s]) - mlp_loss(&params, xs, label, dims)).abs() < 1e-5);
        for (k, g) in grads.iter().enumerate() {
            let per = g.per_sample.dense().unwrap();
            let p = per.per_sample_len();
            let got = &host(per)[s * p..(s + 1) * p];
            let fd: Vec<f64> = (0..p)
                .map(|i| {
                    finite_difference(&params[k], i, 1e-6, |q| {
                        let mut all = params.clone();
                        all[k] = q.to_vec();
                        mlp_loss(&all, xs, label, dims)
                    })
                })
                .collect();
            assert_near(
                &format!("param {k} sample {s} vs finite differences"),
                got,
                &fd,
                1e-4,
            );
        }
    }
    // The batch gradient is the ordinary gradient of the summed loss.
    for (k, g) in grads.iter().enumerate() {
        let n = params[k].len();
        let ordinary: Vec<f64> = (0..n)
            .map(|i| {
                finite_difference(&params[k], i, 1e-6, |q| {
                    let mut all = params.clone();
                    all[k] = q.to_vec();
                    (0..b)
                        .map(|s| {
                            mlp_loss(
                                &all,
                                &xv[s * dims.0..(s + 1) * dims.0],
                                labels[s] as usize,
                                dims,
                            )
                        })
                        .sum()
                })
            })
            .collect();
        assert_near(
            &format!("param {k} batch vs gradient of the summed loss"),
            &host(&g.batch),
            &ordinary,
            1e-4,
        );
    }
    // A loop over samples, one at a time, gives the same per-sample gradients bit for bit.
    for s in 0..b {
        let logits = model.forward(&sample(&x, s)).unwrap();
        let loss = softmax_cross_entropy(&logits, &labels[s..s + 1]).unwrap();
        model.backward(&loss.grad_logits).unwrap();
        for (one, all) in model.param_grads(Sink::Keep).unwrap().iter().zip(&grads) {
            let per = all.per_sample.dense().unwrap();
            let p = per.per_sample_len();
            assert_eq!(
                host(one.per_sample.dense().unwrap()),
                host(per)[s * p..(s + 1) * p]
            );
        }
    }
}

#[test]
fn capture_mlp_learns_a_separable_problem() {
    let mut rng = Rng(61);
    let (b, inp, classes) = (32, 4, 3);
    let mut model = mlp(inp, 16, classes, 7, &Device::Cpu);
    let labels: Vec<u32> = (0..b).map(|s| (s % classes) as u32).collect();
    let x: Vec<f32> = labels
        .iter()
        .flat_map(|&y| {
            (0..inp)
                .map(|i| if i == y as usize { 2.0 } else { 0.0 })
                .collect::<Vec<f32>>()
        })
        .map(|v| v + 0.3 * rng.value())
        .collect();
    let x = cpu_tensor(x, &[b, inp]);
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..60 {
        let logits = model.forward(&x).unwrap();
        let loss = softmax_cross_entropy(&logits, &labels).unwrap();
        last = loss.mean_loss().unwrap();
        first.get_or_insert(last);
        model.backward(&loss.grad_logits).unwrap();
        let grads = model.param_grads(Sink::Reduce(&psg_ops::mean)).unwrap();
        let new: Vec<Tensor> = model
            .params()
            .iter()
            .zip(&grads)
            .map(|(p, g)| sgd_step(p, g.per_sample.reduced().unwrap(), 0.5).unwrap())
            .collect();
        model.set_params(new).unwrap();
    }
    assert!(
        last < 0.2 * first.unwrap(),
        "loss went from {first:?} to {last}"
    );
    let pred = predictions(&model.forward(&x).unwrap()).unwrap();
    assert!(pred.iter().zip(&labels).all(|(&p, &y)| p == y as usize));
}

#[test]
fn capture_linear_takes_sequences() {
    let mut rng = Rng(71);
    let mut layer = Linear::init(3, 5, true, 1, &Device::Cpu).unwrap();
    let x = random(&mut rng, &[2, 4, 3]);
    let y = layer.forward(&x).unwrap();
    assert_eq!(y.shape(), &[2, 4, 5]);
    let gy = random(&mut rng, &[2, 4, 5]);
    let gx = layer.backward(&gy).unwrap();
    assert_eq!(gx.shape(), &[2, 4, 3]);
    let grads = layer.grads(Sink::Keep).unwrap().unwrap();
    let direct = linear(&x, &gy, true, Sink::Keep).unwrap();
    assert_eq!(dense(&grads, "weight"), dense(&direct, "weight"));
    // gx = gy W, checked in f64.
    let (w, gv) = (f64s(&host(layer.weight())), f64s(&host(&gy)));
    let want: Vec<f64> = (0..8 * 3)
        .map(|e| (0..5).map(|o| gv[(e / 3) * 5 + o] * w[o * 3 + e % 3]).sum())
        .collect();
    assert_near("linear backward", &host(&gx), &want, 1e-6);
}

#[test]
fn layer_kernels_compile_with_nvrtc() {
    match nvrtc_status() {
        Ok(()) => {}
        Err(e) if std::env::var("PSG_REQUIRE_NVRTC").as_deref() == Ok("1") => {
            panic!("PSG_REQUIRE_NVRTC=1 but NVRTC is unusable: {e}")
        }
        Err(e) => {
            eprintln!("skipping the NVRTC check of the layer kernels (NOT evidence that they compile): {e}");
            return;
        }
    }
    for k in layer_kernel_sources() {
        let cubin = psg_runtime::compile_cubin(&k.source, &k.name, (9, 0))
            .unwrap_or_else(|e| panic!("{}: {e}", k.name));
        assert_eq!(&cubin[..4], b"\x7fELF", "{}", k.name);
    }
}

// ---------------------------------------------------------------------------------------------
// GPU against CPU

fn gpu() -> Option<Device> {
    common::cuda().map(Device::Cuda)
}

fn on(t: &Tensor, dev: &Device) -> Tensor {
    t.to_device(dev).unwrap()
}

/// Compares every parameter's per-sample (dense or reduced) and batch gradients of a GPU run with
/// the CPU's, within FP32 rounding of sums of `terms` products (`bound`: the same op on |inputs|).
fn same_grads(
    what: &str,
    gpu: &LayerGrads,
    cpu: &LayerGrads,
    bound: &LayerGrads,
    terms: usize,
    batch_terms: usize,
) {
    assert_eq!(gpu.params.len(), cpu.params.len());
    for ((g, c), s) in gpu.params.iter().zip(&cpu.params).zip(&bound.params) {
        assert_eq!(
            g.per_sample.tensor().unwrap().shape(),
            c.per_sample.tensor().unwrap().shape(),
            "{what} {}",
            g.name
        );
        assert_eq!(g.batch.shape(), c.batch.shape(), "{what} {}", g.name);
        let label = format!("{what} {} per-sample", g.name);
        assert_rounding_close(
            &label,
            &host(g.per_sample.tensor().unwrap()),
            &host(c.per_sample.tensor().unwrap()),
            &host(s.per_sample.tensor().unwrap()),
            terms,
        );
        let label = format!("{what} {} batch", g.name);
        assert_rounding_close(
            &label,
            &host(&g.batch),
            &host(&c.batch),
            &host(&s.batch),
            batch_terms,
        );
    }
}

fn linear_cases() -> Vec<(usize, usize, usize, usize)> {
    // (B, T, in, out): T = 1 means [B, in]; edge tiles, in % 4 != 0 (scalar loads), T % 16 != 0.
    vec![
        (1, 1, 1, 1),
        (2, 3, 5, 7),
        (3, 17, 130, 129),
        (5, 9, 256, 132),
        (33, 1, 64, 200),
        (4, 40, 300, 260),
        (2, 16, 128, 128),
        // T % 32 == 0 with 16-byte rows: the pointer-walking loads, with edge tiles on both sides
        // and a matrix narrower than a thread's four columns past the first.
        (3, 32, 260, 132),
        (2, 64, 4, 8),
        // Empty dimensions: no input features (the bias gets blocks of its own), no samples, no
        // positions.
        (3, 2, 0, 5),
        (0, 4, 8, 8),
        (2, 0, 4, 8),
    ]
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_linear_matches_cpu_for_every_schedule() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng(101);
    let schedules = [
        LinearSchedule::default(),
        LinearSchedule {
            k_tile: 8,
            ..LinearSchedule::default()
        },
        LinearSchedule {
            batch_sum: BatchSum::Shared,
            ..LinearSchedule::default()
        },
        LinearSchedule {
            k_tile: 8,
            batch_sum: BatchSum::Shared,
            splits: Some(3),
        },
        LinearSchedule {
            splits: Some(1),
            ..LinearSchedule::default()
        },
        LinearSchedule {
            splits: Some(5),
            ..LinearSchedule::default()
        },
        LinearSchedule {
            k_tile: 32,
            ..LinearSchedule::default()
        },
        LinearSchedule {
            k_tile: 32,
            splits: Some(2),
            ..LinearSchedule::default()
        },
    ];
    for (b, t, n, m) in linear_cases() {
        let (a_shape, g_shape) = if t == 1 {
            (vec![b, n], vec![b, m])
        } else {
            (vec![b, t, n], vec![b, t, m])
        };
        let (a, g) = (random(&mut rng, &a_shape), random(&mut rng, &g_shape));
        for bias in [true, false] {
            let cpu = linear(&a, &g, bias, Sink::Keep).unwrap();
            let bound = linear(&abs(&a), &abs(&g), bias, Sink::Keep).unwrap();
            for schedule in schedules {
                let got =
                    linear_with(&on(&a, &dev), &on(&g, &dev), bias, Sink::Keep, schedule).unwrap();
                same_grads(
                    &format!("linear B={b} T={t} in={n} out={m} bias={bias} {schedule:?}"),
                    &got,
                    &cpu,
                    &bound,
                    t,
                    t * b,
                );
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_linear_at_the_benchmark_width_matches_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng(102);
    // The benchmark's layer (in = out = 1024, T = 128) on fewer samples: the same tiles and splits.
    let (b, t, n, m) = (6, 128, 1024, 1024);
    let (a, g) = (random(&mut rng, &[b, t, n]), random(&mut rng, &[b, t, m]));
    let cpu = linear(&a, &g, true, Sink::Keep).unwrap();
    let bound = linear(&abs(&a), &abs(&g), true, Sink::Keep).unwrap();
    for schedule in [
        LinearSchedule::default(),
        LinearSchedule {
            k_tile: 8,
            batch_sum: BatchSum::Shared,
            splits: None,
        },
        LinearSchedule {
            k_tile: 32,
            ..LinearSchedule::default()
        },
    ] {
        let got = linear_with(&on(&a, &dev), &on(&g, &dev), true, Sink::Keep, schedule).unwrap();
        same_grads(
            &format!("linear bench width {schedule:?}"),
            &got,
            &cpu,
            &bound,
            t,
            t * b,
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_sinks_match_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng(103);
    let (a, g) = (random(&mut rng, &[7, 3, 33]), random(&mut rng, &[7, 3, 20]));
    for sink in [
        Sink::Reduce(&psg_ops::median),
        Sink::Reduction(&psg_ops::mean::DEF),
    ] {
        let cpu = linear(&a, &g, true, sink).unwrap();
        let got = linear(&on(&a, &dev), &on(&g, &dev), true, sink).unwrap();
        for (x, y) in got.params.iter().zip(&cpu.params) {
            let (gx, cy) = (
                host(x.per_sample.reduced().unwrap()),
                host(y.per_sample.reduced().unwrap()),
            );
            let want: Vec<f64> = f64s(&cy);
            assert_near(&format!("{sink:?} {}", x.name), &gx, &want, 1e-5);
        }
    }
    // `g` on another handle of the GPU (its own stream), and a set of tensors for the norms
    // split over the two handles: each launch waits for the other handle, the same results.
    let other = Device::Cuda(psg_runtime::CudaDevice::new(0).unwrap());
    let cpu = linear(&a, &g, true, Sink::Keep).unwrap();
    let got = linear(&on(&a, &dev), &on(&g, &other), true, Sink::Keep).unwrap();
    for (x, y) in got.params.iter().zip(&cpu.params) {
        for (gx, cy) in [
            (
                x.per_sample.tensor().unwrap(),
                y.per_sample.tensor().unwrap(),
            ),
            (&x.batch, &y.batch),
        ] {
            assert_near(
                &format!("two handles {}", x.name),
                &host(gx),
                &f64s(&host(cy)),
                1e-5,
            );
        }
    }
    let norms = psg_ops::per_sample_norms(&[&a, &g]).unwrap();
    let split = psg_ops::per_sample_norms(&[&on(&a, &dev), &on(&g, &other)]).unwrap();
    assert_near(
        "norms over two handles",
        &host(&split),
        &f64s(&host(&norms)),
        1e-5,
    );
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_conv2d_matches_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng(104);
    let mut cases = conv_specs();
    // Larger: several 64 x 64 tiles per group, an awkward image.
    let s = Conv2dSpec::new(3, 3);
    cases.push((
        5,
        12,
        19,
        17,
        70,
        Conv2dSpec {
            padding: (1, 1),
            ..s
        },
    ));
    cases.push((
        2,
        66,
        11,
        13,
        130,
        Conv2dSpec {
            stride: (2, 2),
            dilation: (1, 2),
            padding: (2, 1),
            groups: 2,
            ..s
        },
    ));
    for (b, c_in, h, w, c_out, spec) in cases {
        let (ho, wo) = spec.output_size(h, w).unwrap();
        let x = random(&mut rng, &[b, c_in, h, w]);
        let gy = random(&mut rng, &[b, c_out, ho, wo]);
        let cpu = conv2d(&x, &gy, &spec, Sink::Keep).unwrap();
        let bound = conv2d(&abs(&x), &abs(&gy), &spec, Sink::Keep).unwrap();
        let got = conv2d(&on(&x, &dev), &on(&gy, &dev), &spec, Sink::Keep).unwrap();
        same_grads(
            &format!("conv2d {spec:?}"),
            &got,
            &cpu,
            &bound,
            ho * wo,
            ho * wo * b,
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_embedding_matches_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng(105);
    for (b, t, d, v) in [
        (1, 1, 1, 1),
        (3, 5, 7, 11),
        (9, 33, 130, 500),
        (2, 1, 300, 40),
    ] {
        let idx: Vec<u32> = (0..b * t).map(|_| rng.below(v) as u32).collect();
        let g = random(&mut rng, &[b, t, d]);
        // Same order of sums on both backends: bit-identical.
        let cpu = embedding(&idx, &g, v, Sink::Keep).unwrap();
        let got = embedding(&idx, &on(&g, &dev), v, Sink::Keep).unwrap();
        let (cs, gs) = (cpu.weight().unwrap(), got.weight().unwrap());
        assert_eq!(
            gs.per_sample.sparse().unwrap().rows,
            cs.per_sample.sparse().unwrap().rows
        );
        assert_eq!(
            gs.per_sample.sparse().unwrap().offsets,
            cs.per_sample.sparse().unwrap().offsets
        );
        let (gsparse, csparse) = (
            gs.per_sample.sparse().unwrap(),
            cs.per_sample.sparse().unwrap(),
        );
        assert_eq!(host(&gsparse.values), host(&csparse.values));
        assert_eq!(host(&gs.batch), host(&cs.batch));
        // The dense [B, V, D] per-sample gradients, laid out on the host, come back on the GPU.
        let dense = gsparse.to_dense().unwrap();
        assert!(dense.device().is_cuda());
        assert_eq!(host(&dense), host(&csparse.to_dense().unwrap()));
        for sink in [Sink::Reduce(&psg_ops::median), Sink::Reduce(&psg_ops::sum)] {
            let cpu = embedding(&idx, &g, v, sink).unwrap();
            let got = embedding(&idx, &on(&g, &dev), v, sink).unwrap();
            let label = format!("embedding {sink:?} B={b} T={t} D={d}");
            assert_eq!(
                host(got.weight().unwrap().per_sample.tensor().unwrap()),
                host(cpu.weight().unwrap().per_sample.tensor().unwrap()),
                "{label}"
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_layer_norm_matches_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng(106);
    for shape in [
        vec![1, 1],
        vec![3, 129],
        vec![5, 37, 200],
        vec![2, 3, 4, 1030],
    ] {
        let (xh, gy) = (random(&mut rng, &shape), random(&mut rng, &shape));
        // Same order of sums and no fused multiply-add on either backend: bit-identical.
        let cpu = layer_norm(&xh, &gy, Sink::Keep).unwrap();
        let got = layer_norm(&on(&xh, &dev), &on(&gy, &dev), Sink::Keep).unwrap();
        for (g, c) in got.params.iter().zip(&cpu.params) {
            assert_eq!(
                host(g.per_sample.tensor().unwrap()),
                host(c.per_sample.tensor().unwrap()),
                "layer_norm {shape:?} {}",
                g.name
            );
            assert_eq!(
                host(&g.batch),
                host(&c.batch),
                "layer_norm {shape:?} {}",
                g.name
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_capture_mlp_matches_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = Rng(107);
    let (b, inp, hidden, classes) = (37, 19, 70, 10);
    let mut cpu_model = mlp(inp, hidden, classes, 9, &Device::Cpu);
    let mut gpu_model = mlp(inp, hidden, classes, 9, &dev);
    let x = random(&mut rng, &[b, inp]);
    let labels: Vec<u32> = (0..b).map(|_| rng.below(classes) as u32).collect();
    let run = |model: &mut Sequential, x: &Tensor| {
        let logits = model.forward(x).unwrap();
        let loss = softmax_cross_entropy(&logits, &labels).unwrap();
        let gx = model.backward(&loss.grad_logits).unwrap();
        (
            host(&logits),
            host(&loss.losses),
            host(&gx),
            model.param_grads(Sink::Keep).unwrap(),
        )
    };
    let (cl, closs, cgx, cg) = run(&mut cpu_model, &x);
    let (gl, gloss, ggx, gg) = run(&mut gpu_model, &on(&x, &dev));
    assert_near("logits", &gl, &f64s(&cl), 1e-5);
    assert_near("losses", &gloss, &f64s(&closs), 1e-5);
    assert_near("input gradient", &ggx, &f64s(&cgx), 1e-4);
    for (g, c) in gg.iter().zip(&cg) {
        assert_near(
            &format!("mlp {} per-sample", g.name),
            &host(g.per_sample.tensor().unwrap()),
            &f64s(&host(c.per_sample.tensor().unwrap())),
            1e-4,
        );
        assert_near(
            &format!("mlp {} batch", g.name),
            &host(&g.batch),
            &f64s(&host(&c.batch)),
            1e-4,
        );
    }
    // An SGD step on both.
    let step = |p: &Tensor, d: &Tensor| host(&sgd_step(p, d, 0.1).unwrap());
    assert_eq!(
        step(&on(&cg[0].batch, &dev), &on(&cg[0].batch, &dev)),
        step(&cg[0].batch, &cg[0].batch)
    );
    // The GPU model's parameters stayed on the GPU (nothing above fell back to the host).
    assert!(gpu_model.params().iter().all(|p| p.device().is_cuda()));
}

/// Outputs too large for the host (an embedding of a huge vocabulary on the CPU) are an error
/// saying so, not an aborted process.
#[test]
fn cpu_layer_outputs_too_large_for_memory_are_errors() {
    let g = Tensor::from_slice(&[0.5f32; 8], &[1, 8], &Device::Cpu).unwrap();
    for vocab in [usize::MAX / 4, 1 << 60] {
        match psg_ops::layers::embedding(&[0], &g, vocab, Sink::Keep) {
            Err(Error::HostMemory(_) | Error::Shape(_)) => {}
            other => panic!("vocab {vocab}: {:?}", other.map(|_| "Ok")),
        }
    }
    // A reducing sink on an embedding builds [B, U, D] (U: the rows the batch touched): at
    // B = U = 2^13 and D = 2^12 that is 1 TiB, which aborted the process before.
    let (b, d) = (1usize << 13, 1usize << 12);
    let g = Tensor::from_vec(vec![0.25f32; b * d], &[b, d], &Device::Cpu).unwrap();
    let rows: Vec<u32> = (0..b as u32).collect();
    match psg_ops::layers::embedding(&rows, &g, b, Sink::Reduce(&psg_ops::mean)) {
        Err(Error::HostMemory(m)) => assert!(m.contains("elements"), "{m}"),
        other => panic!("dense embedding sink: {:?}", other.map(|_| "Ok")),
    }
    drop(g);
    // An empty batch still has a parameter-sized batch gradient: a weight of 2^19 x 2^19 (1 TiB)
    // is an error, and one whose size overflows is too (it overflowed a multiplication before).
    for width in [1usize << 19, 1 << 40] {
        let a = Tensor::from_vec(Vec::<f32>::new(), &[0, width], &Device::Cpu).unwrap();
        match psg_ops::layers::linear(&a, &a, true, Sink::Keep) {
            Err(Error::HostMemory(_) | Error::Shape(_)) => {}
            other => panic!("linear of width {width}: {:?}", other.map(|_| "Ok")),
        }
    }
    // A kernel whose weight size overflows (a 2^33 x 2^33 kernel on a 1 x 1 input, padded to fit).
    let x = Tensor::from_slice(&[1.0f32], &[1, 1, 1, 1], &Device::Cpu).unwrap();
    let spec = psg_ops::layers::Conv2dSpec {
        stride: (1 << 40, 1 << 40),
        padding: (1 << 33, 1 << 33),
        ..psg_ops::layers::Conv2dSpec::new(1 << 33, 1 << 33)
    };
    match psg_ops::layers::conv2d(&x, &x, &spec, Sink::Keep) {
        Err(Error::Shape(m)) => assert!(m.contains("fit in memory"), "{m}"),
        other => panic!("huge kernel: {:?}", other.map(|_| "Ok")),
    }
}

/// A sink whose reduction gives a per-sample result (not one value per coordinate) is an error
/// naming the shapes, for every layer, as it already was for the embedding.
#[test]
fn a_sink_that_does_not_reduce_is_an_error() {
    let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, -1.0, 0.5, 0.0], &[2, 3], &Device::Cpu).unwrap();
    let g = Tensor::from_slice(&[0.1f32, -0.2, 0.3, 0.4], &[2, 2], &Device::Cpu).unwrap();
    let not_reducing: [Sink<'_>; 2] = [
        Sink::Reduce(&psg_ops::sign),
        Sink::Reduce(&|x: &Tensor| Ok(x.clone())),
    ];
    for sink in not_reducing {
        match psg_ops::layers::linear(&a, &g, true, sink) {
            Err(Error::Shape(m)) => assert!(m.contains("one value per coordinate"), "{m}"),
            other => panic!("{:?}", other.map(|_| "Ok")),
        }
    }
    let x_hat = Tensor::from_slice(&[0.5f32, -0.5, 1.0, -1.0], &[2, 2], &Device::Cpu).unwrap();
    assert!(matches!(
        psg_ops::layers::layer_norm(&x_hat, &g, Sink::Reduce(&psg_ops::sign)),
        Err(Error::Shape(_))
    ));
    // A reduction still works.
    assert!(psg_ops::layers::linear(&a, &g, true, Sink::Reduce(&psg_ops::median)).is_ok());
}

#[test]
fn host_allocations_sized_by_the_caller_are_errors_not_aborts() {
    // 2^23 x 2^23 f32 weights are 256 TiB, past the address space, so the allocator refuses
    // them whatever the overcommit policy: that aborted the process.
    let Err(err) = Linear::init(1 << 23, 1 << 23, true, 0, &Device::Cpu) else {
        panic!("256 TiB of weights allocated");
    };
    assert!(matches!(err, Error::HostMemory(_)), "{err}");
    let Err(err) = Linear::init(1 << 40, 1 << 40, false, 0, &Device::Cpu) else {
        panic!("2^80 weights allocated");
    };
    assert!(matches!(err, Error::Shape(_)), "{err}");
    // Repeated rows may make gather_rows' output larger than g: 2^24 copies of a 2^24 row, 1 PiB.
    let g = Tensor::zeros(psg_runtime::DType::F32, &[1, 1 << 24], &Device::Cpu).unwrap();
    let err = psg_ops::gather_rows(&g, &vec![0; 1 << 24]).unwrap_err();
    assert!(matches!(err, Error::HostMemory(_)), "{err}");
}

#[test]
fn a_linear_layer_without_inputs_has_a_row_per_input_row() {
    // in_features = 0: x is [2, 0]. Its rows were counted as x.len() / 1 = 0, and forward failed
    // with "cannot reshape [0, 3] (0 elements) to [2, 3]". The output has a row per input row.
    let mut layer = Linear::init(0, 3, true, 1, &Device::Cpu).unwrap();
    let x = Tensor::zeros(psg_runtime::DType::F32, &[2, 0], &Device::Cpu).unwrap();
    let y = layer.forward(&x).unwrap();
    assert_eq!(y.shape(), &[2, 3]);
}
