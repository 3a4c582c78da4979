//! Times the one-launch Linear kernel: per-sample weight gradients `[B, out, in]` and their batch
//! sum from one forward/backward capture, at B = 64, T = 128, in = out = 1024 (the per-sample
//! GEMMs alone are 64 x (1024x128 @ 128x1024) = 17.2 GFLOP, FP32 without TF32).
//!
//! Each run is timed with CUDA events (`CudaDevice::time_ms`) after warm-up; the line per variant
//! gives the median of the runs. Before each timed call an untimed one keeps the GPU busy, so the
//! timed call's host work (its output allocations from the stream-ordered pool) overlaps with GPU
//! work and only device time is measured, as with PyTorch's caching allocator.
//! Compare with `python3 bench/linear_torch.py` on the same card.
//!
//! `cargo run --release -p psg-ops --example bench_linear [-- --runs N]`

use psg_ops::layers::{linear_with, BatchSum, LinearSchedule, Sink};
use psg_runtime::{cuda_device, Device, JitMode, Result, Tensor};

const B: usize = 64;
const T: usize = 128;
const IN: usize = 1024;
const OUT: usize = 1024;

/// Seeded uniform values in [-1, 1) (SplitMix64).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn median(mut v: Vec<f32>) -> f32 {
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut runs = 30usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--runs", Some(n)) if n >= 1 => runs = n,
            _ => {
                eprintln!("usage: bench_linear [--runs N]");
                std::process::exit(2);
            }
        }
    }
    let cuda = cuda_device(0)?;
    // Time optimized builds only, never a quick build of the tiered JIT.
    cuda.set_jit_mode(JitMode::Optimized);
    let dev = Device::Cuda(cuda.clone());
    println!("device: {cuda}");
    let a = Tensor::from_vec(values(1, B * T * IN), &[B, T, IN], &dev)?;
    let g = Tensor::from_vec(values(2, B * T * OUT), &[B, T, OUT], &dev)?;
    let flop = 2.0 * (B * T * IN * OUT) as f64;

    let regs = LinearSchedule::default();
    let variants: [(&str, LinearSchedule, bool); 9] = [
        ("regs k16 (default)", regs, false),
        ("regs k32", LinearSchedule { k_tile: 32, ..regs }, false),
        (
            "regs k32 splits=1",
            LinearSchedule {
                k_tile: 32,
                splits: Some(1),
                ..regs
            },
            false,
        ),
        ("regs k8", LinearSchedule { k_tile: 8, ..regs }, false),
        (
            "smem k16",
            LinearSchedule {
                batch_sum: BatchSum::Shared,
                ..regs
            },
            false,
        ),
        (
            "smem k8",
            LinearSchedule {
                k_tile: 8,
                batch_sum: BatchSum::Shared,
                ..regs
            },
            false,
        ),
        (
            "regs k16 splits=1",
            LinearSchedule {
                splits: Some(1),
                ..regs
            },
            false,
        ),
        (
            "regs k16 splits=4",
            LinearSchedule {
                splits: Some(4),
                ..regs
            },
            false,
        ),
        ("regs k16 + bias", regs, true),
    ];
    for (name, schedule, bias) in variants {
        let call = || linear_with(&a, &g, bias, Sink::Keep, schedule).map(drop);
        for _ in 0..5 {
            call()?;
        }
        cuda.synchronize()?;
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            call()?; // untimed: keeps the GPU busy while the timed call is enqueued
            times.push(cuda.time_ms(call)?);
        }
        let ms = median(times.clone());
        let (lo, hi) = times
            .iter()
            .fold((f32::MAX, 0.0f32), |(l, h), &t| (l.min(t), h.max(t)));
        println!(
            "psg linear one launch (per-sample + batch) B={B} T={T} in={IN} out={OUT} [{name}]: median {ms:.4} ms \
             (min {lo:.4}, max {hi:.4}, {runs} runs), {:.1} TFLOP/s",
            flop / (f64::from(ms) * 1e-3) / 1e12
        );
    }
    Ok(())
}
