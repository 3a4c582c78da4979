//! The DP module on CUDA against the CPU: Philox's known answers computed by the GPU, noise
//! bit-identical to the CPU's (f32 and f64, standard and secure mode, awkward sizes and offsets),
//! and DP-SGD steps whose noise is bit-identical and whose clipped aggregates agree to rounding
//! (per-sample norms are summed in another order on the GPU).
//!
//! The `gpu_*` tests are `#[ignore]`d where there is no GPU; on a GPU host run them with
//! `cargo test -p psg-ops --test dp_gpu -- --include-ignored`, and set `PSG_REQUIRE_GPU=1` to make
//! a missing GPU a failure. The NVRTC test needs only libnvrtc.

mod common;

use common::tensors::{assert_same_bits, host};

use common::Rng;
use psg_ops::dp::{
    add_noise, dp_reductions, noise, noise_kernel_sources, Aggregation, Clipping, CustomOp, DpSgd,
    DpSgdConfig, DpStep, NoiseGenerator, NoiseKey, NoiseMode, RobustOp,
};
use psg_ops::OutlierRule;
use psg_privacy::normal::{MAX_ELEMENTS, NOISE_CUDA_SOURCE};
use psg_privacy::philox::{counter, key_from_seed, philox4x32_10};
use psg_runtime::{
    compile_cubin, nvrtc_status, CudaDevice, DType, Device, KernelArg, KernelSource, LaunchConfig,
    Tensor,
};

fn gpu() -> Option<CudaDevice> {
    common::cuda()
}

const MODES: [NoiseMode; 2] = [NoiseMode::Standard, NoiseMode::Secure];

/// A tensor's elements as raw bits (f32 widened), so comparisons are exact, NaN and -0 included.
/// Random data of `n` elements in `dtype` on the CPU.
fn random(rng: &mut Rng, shape: &[usize], dtype: DType) -> Tensor {
    let v = rng.gradients(shape.iter().product());
    match dtype {
        DType::F64 => {
            let v: Vec<f64> = v.into_iter().map(f64::from).collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        }
        _ => Tensor::from_vec(v, shape, &Device::Cpu).unwrap(),
    }
}

/// Runs Random123's known-answer vectors, and psg's (block, step, seed) layout, through the
/// Philox of `NOISE_CUDA_SOURCE` on the GPU.
const KAT_KERNEL: &str = r#"
extern "C" __global__ void psg_test_philox_kat(unsigned int* out, unsigned long long seed,
                                               unsigned long long step, unsigned long long block)
{
    const unsigned int counters[3][4] = {
        {0u, 0u, 0u, 0u},
        {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
        {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}};
    const unsigned int keys[3][2] = {{0u, 0u}, {0xffffffffu, 0xffffffffu}, {0xa4093822u, 0x299f31d0u}};
    for (int v = 0; v < 3; ++v) {
        unsigned int x[4] = {counters[v][0], counters[v][1], counters[v][2], counters[v][3]};
        psg_philox4x32_10(x, keys[v][0], keys[v][1]);
        for (int w = 0; w < 4; ++w) {
            out[4 * v + w] = x[w];
        }
    }
    unsigned int y[4];
    psg_philox_block(y, seed, step, block);
    for (int w = 0; w < 4; ++w) {
        out[12 + w] = y[w];
    }
}
"#;

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_philox_gives_the_known_answers() {
    let Some(dev) = gpu() else { return };
    let source = format!("{NOISE_CUDA_SOURCE}\n{KAT_KERNEL}");
    let kernel = KernelSource::new_owned("psg_test_philox_kat", source);
    let (seed, step, block) = (0x0123_4567_89ab_cdef_u64, 0xfedc_ba98_7654_3210_u64, 42_u64);
    let out = dev.alloc(16 * 4).unwrap();
    let u64_arg = |v: u64| KernelArg::I64(i64::from_ne_bytes(v.to_ne_bytes()));
    let one = LaunchConfig {
        grid: (1, 1, 1),
        block: (1, 1, 1),
        shared_bytes: 0,
    };
    let args = [
        KernelArg::Ptr(out.ptr()),
        u64_arg(seed),
        u64_arg(step),
        u64_arg(block),
    ];
    dev.launch(&kernel, one, &args).unwrap();
    let mut bytes = [0u8; 64];
    dev.dtoh(&out, &mut bytes).unwrap();
    let words: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let known = [
        [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8],
        [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd],
        [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
    ];
    for (v, want) in known.iter().enumerate() {
        assert_eq!(
            words[4 * v..4 * v + 4],
            want[..],
            "Random123 known-answer vector {v} of Philox4x32-10 on the GPU (got hex {:x?})",
            &words[4 * v..4 * v + 4]
        );
    }
    let cpu = philox4x32_10(counter(block, step), key_from_seed(seed));
    assert_eq!(
        words[12..16],
        cpu[..],
        "psg's counter layout (block, step) and key (seed) on the GPU differ from the CPU's"
    );
}

/// Offsets to try for `n` elements: every phase within a Philox block, one past 2^32 blocks, and
/// the last range below 2^62.
fn offsets(n: usize) -> Vec<u64> {
    let last = MAX_ELEMENTS - n as u64;
    if n > 100_000 {
        vec![0, 3, last]
    } else {
        vec![0, 1, 2, 3, 5, (1 << 34) + 1, last]
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_noise_is_bit_identical_to_the_cpu() {
    let Some(dev) = gpu() else { return };
    let gpu_dev = Device::Cuda(dev);
    let mut rng = Rng::new(0xD9_0001);
    let seed = 0x0123_4567_89ab_cdef;
    for dtype in [DType::F32, DType::F64] {
        for mode in MODES {
            for n in [1usize, 3, 4, 5, 1023, 1_000_003] {
                for (i, offset) in offsets(n).into_iter().enumerate() {
                    let step = if i % 2 == 0 { 7 } else { u64::MAX };
                    let key = NoiseKey { seed, step, offset };
                    let what = format!("{dtype} {mode:?} n = {n}, key {key:?}");
                    let std = 0.37;
                    let cpu = noise(dtype, &[n], &Device::Cpu, std, key, mode).unwrap();
                    let gpu = noise(dtype, &[n], &gpu_dev, std, key, mode).unwrap();
                    assert_same_bits(&format!("noise {what}"), &gpu, &cpu);

                    let base = random(&mut rng, &[n], dtype);
                    let base_gpu = base.to_device(&gpu_dev).unwrap();
                    let cpu = add_noise(&base, std, key, mode).unwrap();
                    let gpu = add_noise(&base_gpu, std, key, mode).unwrap();
                    assert_same_bits(&format!("add_noise {what}"), &gpu, &cpu);
                    assert_same_bits(
                        &format!("add_noise must not modify its input ({what})"),
                        &base_gpu,
                        &base,
                    );
                }
            }
        }
    }
}

/// Per-sample gradients `[B, 3, 4]`, `[B, 4]`, `[B, 1]` (and `[B, 1_000_003]` when `big`).
fn model(rng: &mut Rng, b: usize, dtype: DType, big: bool) -> Vec<Tensor> {
    let mut dims = vec![vec![3, 4], vec![4], vec![1]];
    if big {
        dims.push(vec![1_000_003]);
    }
    dims.into_iter()
        .map(|d| {
            let shape: Vec<usize> = std::iter::once(b).chain(d).collect();
            random(rng, &shape, dtype)
        })
        .collect()
}

/// The clip factors of each tensor, computed on the tensors' device.
fn factors(clipping: &Clipping, grads: &[&Tensor]) -> Vec<Tensor> {
    match clipping {
        Clipping::Flat { max_norm } => {
            vec![psg_ops::flat_clip_factors(grads, *max_norm).unwrap(); grads.len()]
        }
        Clipping::PerLayer { max_norms } => {
            psg_ops::per_layer_clip_factors(grads, max_norms).unwrap()
        }
    }
}

/// The aggregate before noise, computed with the public operations on the tensors' device.
fn aggregate(config: &DpSgdConfig, g: &Tensor, f: &Tensor) -> Tensor {
    let e = config.expected_batch_size;
    match config.aggregation {
        Aggregation::ClippedSum => psg_ops::clipped_sum(g, f).unwrap(),
        Aggregation::ClippedMean => {
            psg_ops::clipped_mean(g, f, psg_ops::Denominator::Expected(e)).unwrap()
        }
        Aggregation::Robust { op, .. } => {
            if op == RobustOp::Median {
                return psg_ops::clipped_median(g, f).unwrap();
            }
            // Clip the rows on the host (one product each, as the kernel), then run the op on
            // the tensors' device.
            let p = g.per_sample_len();
            let fs = host(f);
            let clipped: Vec<f32> = g
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .enumerate()
                .map(|(j, x)| x * fs[j / p] as f32)
                .collect();
            let clipped = Tensor::from_vec(clipped, g.shape(), &Device::Cpu)
                .unwrap()
                .to_device(&g.device())
                .unwrap();
            match op {
                RobustOp::OutlierMean(rule) => psg_ops::outlier_mean(&clipped, rule).unwrap().mean,
                RobustOp::GaussianWeightedSum => psg_ops::gaussian_weighted_sum(&clipped).unwrap(),
                RobustOp::SignSum => psg_ops::sign_sum(&clipped).unwrap(),
                RobustOp::MajorityVote => psg_ops::majority_vote(&clipped).unwrap(),
                RobustOp::Custom(c) => (c.op)(&clipped).unwrap(),
                RobustOp::Median => unreachable!(),
            }
        }
    }
}

/// One step of `config` on both devices; checks the GPU's noise bit for bit and its aggregate
/// against the CPU's to `rel` (of the aggregate's scale plus the noise's size).
fn check_step(config: &DpSgdConfig, mode: NoiseMode, cpu_grads: &[Tensor], dev: &Device, rel: f64) {
    let gpu_grads: Vec<Tensor> = cpu_grads
        .iter()
        .map(|g| g.to_device(dev).unwrap())
        .collect();
    let run = |grads: &[Tensor]| -> DpStep {
        let generator = NoiseGenerator::with_mode(0xABCD_0123, mode);
        let mut dp = DpSgd::new(config.clone(), generator).unwrap();
        dp.step(&grads.iter().collect::<Vec<_>>()).unwrap()
    };
    let (cpu, gpu) = (run(cpu_grads), run(&gpu_grads));
    let what = format!(
        "{} / {} / {mode:?} / {} B = {}",
        config.aggregation.name(),
        config.clipping,
        cpu_grads[0].dtype(),
        cpu.batch_size
    );
    assert_eq!(gpu.noise_keys, cpu.noise_keys, "{what}: noise keys");
    assert_eq!(gpu.noise_std, cpu.noise_std, "{what}: noise std");
    let gpu_refs: Vec<&Tensor> = gpu_grads.iter().collect();
    let gpu_factors = factors(&config.clipping, &gpu_refs);
    for (i, g) in gpu_grads.iter().enumerate() {
        let out = &gpu.gradients[i];
        assert!(
            out.device().is_cuda(),
            "{what}: the output stays on the GPU"
        );
        // The GPU's noise, bit for bit: its own aggregate plus the CPU's noise of the same key.
        let agg = aggregate(config, g, &gpu_factors[i])
            .to_device(&Device::Cpu)
            .unwrap();
        let want = add_noise(&agg, gpu.noise_std, gpu.noise_keys[i], mode).unwrap();
        assert_same_bits(
            &format!("{what}, tensor {i}: GPU noise vs CPU noise"),
            out,
            &want,
        );
        // The whole step, GPU against CPU, to rounding.
        let (o, c, a) = (host(out), host(&cpu.gradients[i]), host(&agg));
        for j in 0..o.len() {
            let noise = (c[j] - a[j]).abs();
            let tol = rel * (a[j].abs() + noise + gpu.noise_std);
            assert!(
                (o[j] - c[j]).abs() <= tol,
                "{what}, tensor {i}, element {j}: GPU {} vs CPU {} (tolerance {tol:e})",
                o[j],
                c[j]
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_dp_sgd_step_matches_the_cpu() {
    let Some(dev) = gpu() else { return };
    let dev = Device::Cuda(dev);
    let mut rng = Rng::new(0xD9_0002);
    for dtype in [DType::F32, DType::F64] {
        // Per-sample norms are summed in another order (over a million f32 squares for B = 2),
        // so clip factors, and the aggregates, differ by rounding.
        let rel = if dtype == DType::F64 { 1e-10 } else { 1e-4 };
        for b in [1usize, 2, 33, 1023] {
            let grads = model(&mut rng, b, dtype, b == 2);
            let per_layer = Clipping::per_layer(vec![1.0, 0.5, 0.25, 2.0][..grads.len()].to_vec());
            for clipping in [Clipping::flat(1.5), per_layer] {
                for aggregation in [Aggregation::ClippedMean, Aggregation::ClippedSum] {
                    for mode in MODES {
                        let config = DpSgdConfig::new(1.1, clipping.clone(), 0.01, 40.0)
                            .with_aggregation(aggregation.clone());
                        check_step(&config, mode, &grads, &dev, rel);
                    }
                }
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_robust_steps_match_the_cpu() {
    let Some(dev) = gpu() else { return };
    let dev = Device::Cuda(dev);
    let mut rng = Rng::new(0xD9_0003);
    let ops = [
        RobustOp::Median,
        RobustOp::OutlierMean(OutlierRule::TrimFraction { alpha: 0.1 }),
        RobustOp::GaussianWeightedSum,
        RobustOp::SignSum,
        RobustOp::MajorityVote,
        RobustOp::Custom(CustomOp {
            name: "winsorized mean",
            op: common::winsorized_10,
        }),
    ];
    for b in [1usize, 33] {
        let grads = model(&mut rng, b, DType::F32, false);
        for op in ops {
            let aggregation = Aggregation::Robust {
                op,
                sensitivity: None,
            };
            let config = DpSgdConfig::new(0.9, Clipping::flat(1.0), 0.05, 20.0)
                .with_aggregation(aggregation);
            // The density weighting uses exp, which differs slightly between GPU and CPU.
            check_step(&config, NoiseMode::Standard, &grads, &dev, 1e-3);
        }
    }
}

#[test]
fn nvrtc_compiles_the_noise_kernels() {
    match nvrtc_status() {
        Ok(()) => {}
        Err(e) if std::env::var("PSG_REQUIRE_NVRTC").as_deref() == Ok("1") => {
            panic!("PSG_REQUIRE_NVRTC=1 but NVRTC is unusable: {e}")
        }
        Err(e) => {
            eprintln!("skipping the NVRTC check (NOT evidence that kernels compile): {e}");
            return;
        }
    }
    // The known-answer kernel of `gpu_philox_gives_the_known_answers` too.
    let kat_source = format!("{NOISE_CUDA_SOURCE}\n{KAT_KERNEL}");
    let kat = KernelSource::new_owned("psg_test_philox_kat", kat_source);
    let mut kernels: Vec<&KernelSource> = noise_kernel_sources();
    assert_eq!(kernels.len(), 8, "standard/secure x write/add x f32/f64");
    kernels.extend(dp_reductions().into_iter().flat_map(|def| def.cuda.iter()));
    kernels.push(&kat);
    for arch in [(8, 0), (9, 0)] {
        for k in &kernels {
            let cubin = compile_cubin(&k.source, &k.name, arch)
                .unwrap_or_else(|e| panic!("{} for sm_{}{}: {e}", k.name, arch.0, arch.1));
            assert_eq!(&cubin[..4], b"\x7fELF", "{}: not a CUBIN", k.name);
        }
    }
}

/// The zeros a user's aggregation keeps and returns on every call (a cached tensor).
static KEPT: std::sync::OnceLock<Tensor> = std::sync::OnceLock::new();

fn kept_zeros(g: &Tensor) -> psg_runtime::Result<Tensor> {
    let kept = KEPT.get_or_init(|| Tensor::zeros(g.dtype(), &g.shape()[1..], &g.device()).unwrap());
    Ok(kept.clone())
}

/// A user's aggregation may return memory it keeps: the step's noise goes into a copy, so the
/// kept tensor stays zeros step after step (in place, the noise would have accumulated there).
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_noise_never_lands_in_a_custom_aggregations_memory() {
    let Some(dev) = gpu() else { return };
    let dev = Device::Cuda(dev);
    let grads = model(&mut Rng::new(0xD9_0004), 5, DType::F32, false);
    let grads: Vec<Tensor> = grads.iter().map(|g| g.to_device(&dev).unwrap()).collect();
    let mut dp = common::custom_dp("kept zeros", kept_zeros, 5.0, 5);
    let first = dp.step(&[&grads[0]]).unwrap();
    let second = dp.step(&[&grads[0]]).unwrap();
    let kept = host(KEPT.get().unwrap());
    assert!(
        kept.iter().all(|&x| x == 0.0),
        "the kept tensor became {kept:?}"
    );
    for step in [first, second] {
        assert!(
            host(&step.gradients[0]).iter().any(|&x| x != 0.0),
            "no noise"
        );
    }
}
