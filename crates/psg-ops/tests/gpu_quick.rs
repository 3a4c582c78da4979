//! The tiered JIT's quick builds (`JitMode::Quick`: NVRTC's fast-compile setting) compute the same
//! bits as the optimized builds, for every built-in kernel shape: the streaming and
//! thread-per-column and spill kernels (B = 4099), the column-mode kernels (B <= 128), the selections'
//! small-B (2, 40), middling-B (100), tiled (256) and large-B (1023) kernels, in f32 and bf16,
//! with vector (P = 40000, realistic gradients) and element loads (P = 31 and 33, nasty values:
//! ties, signed zeros, subnormals, and at P = 31 NaNs and infinities; the quick build's
//! selections count digits where the optimized ones slice bits, sort or gather).
//!
//! Its own test binary, with one test: the disk cache is turned off for the whole process
//! (`PSG_CACHE=off`), else a handle in quick mode loads the optimized builds that other tests
//! wrote there and the comparison would hold trivially. The test checks that the quick handle
//! compiled quick builds and read nothing from disk.

mod common;

use common::Rng;
use psg_ops as ops;
use psg_runtime::{DType, Device, JitMode, Result, Tensor};

fn tensor(values: &[f32], shape: &[usize], dtype: DType, dev: &Device) -> Tensor {
    match dtype {
        DType::BF16 => {
            let v: Vec<half::bf16> = values.iter().map(|&x| half::bf16::from_f32(x)).collect();
            Tensor::from_vec(v, shape, dev).unwrap()
        }
        _ => Tensor::from_slice(values, shape, dev).unwrap(),
    }
}

/// A tensor's elements as raw bits, in its own dtype (f32 or bf16).
fn bits(t: &Tensor) -> Vec<u32> {
    match t.dtype() {
        DType::BF16 => t
            .to_vec::<half::bf16>()
            .unwrap()
            .iter()
            .map(|x| u32::from(x.to_bits()))
            .collect(),
        _ => t
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect(),
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_quick_builds_compute_what_the_optimized_builds_do() {
    // SAFETY-free in edition 2021; this binary has a single test, so no thread reads it meanwhile.
    std::env::set_var("PSG_CACHE", "off");
    let Some(optimized) = common::cuda() else {
        return;
    };
    let Some(quick) = common::cuda_in(JitMode::Quick) else {
        return;
    };
    let (on_optimized, on_quick) = (Device::Cuda(optimized), Device::Cuda(quick.clone()));
    type Op = (&'static str, fn(&Tensor) -> Result<Tensor>);
    let ops: [Op; 17] = [
        ("sum", ops::sum),
        ("mean", ops::mean),
        ("var", |t| ops::var(t, 1.0)),
        ("std", |t| ops::std(t, 0.0)),
        ("sign_sum", ops::sign_sum),
        ("median", ops::median),
        ("median_low", ops::median_low),
        ("quantile", |t| ops::quantile(t, 0.3)),
        ("kth", |t| ops::kth(t, t.shape()[0] / 3)),
        ("min", ops::min),
        ("zscore mean", |t| {
            Ok(ops::outlier_mean(t, ops::OutlierRule::ZScore { k: 2.0 })?.mean)
        }),
        ("mad mean", |t| {
            Ok(ops::outlier_mean(t, ops::OutlierRule::Mad { k: 3.0 })?.mean)
        }),
        ("trim mean", |t| {
            Ok(ops::outlier_mean(t, ops::OutlierRule::TrimFraction { alpha: 0.1 })?.mean)
        }),
        ("mad clean", |t| {
            ops::remove_outliers(t, ops::OutlierRule::Mad { k: 3.0 }, ops::Removed::NaN)
        }),
        (
            "gaussian weighted sum",
            |t| Ok(ops::gaussian_weighted(t)?.0),
        ),
        ("clip_values_relative", |t| {
            ops::clip_values_relative(t, 0.25)
        }),
        ("scaled median", |t| {
            let f = ops::flat_clip_factors(&[t], 1.0)?;
            ops::clipped_median(t, &f)
        }),
    ];
    let mut rng = Rng::new(0x5eed_0009);
    for dtype in [DType::F32, DType::BF16] {
        for (b, p) in [
            (2, 40_000),
            (40, 40_000),
            (100, 40_000),
            (256, 40_000),
            (1023, 40_000),
            (2, 31),
            (40, 31),
            (100, 31),
            (256, 31),
            (1023, 31),
            (4099, 31),
            (40, 33),
            (100, 33),
            (256, 33),
            (1023, 33),
        ] {
            // Small tensors get the nasty values (P = 31 with NaNs and infinities, which most
            // columns then hold; P = 33 without, so the selections' ties and zeros decide),
            // large ones realistic gradients.
            let values = match p {
                31 => rng.nasty(b * p, true),
                33 => rng.nasty(b * p, false),
                _ => rng.gradients(b * p),
            };
            let g = tensor(&values, &[b, p], dtype, &on_optimized);
            let gq = tensor(&values, &[b, p], dtype, &on_quick);
            for (name, op) in &ops {
                let (got, want) = (bits(&op(&gq).unwrap()), bits(&op(&g).unwrap()));
                assert_eq!(got.len(), want.len());
                if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
                    panic!(
                        "quick {name} {dtype} [{b}, {p}]: element {i}: quick {:#x}, optimized {:#x}",
                        got[i], want[i]
                    );
                }
            }
        }
    }
    let stats = quick.kernel_cache_stats();
    assert_eq!(
        (stats.disk_hits, stats.compiles),
        (0, 0),
        "the quick handle loaded or compiled optimized builds: {stats:?}"
    );
    assert!(stats.quick_compiles >= 40, "only {stats:?}");
}
