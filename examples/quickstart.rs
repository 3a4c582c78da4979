//! quickstart: every psg built-in on a seeded synthetic g[256, 1M] (f32; g[256, 64K] on the
//! CPU, where 1M columns take a minute or more), on the best backend (CUDA when usable, else the
//! CPU, with the reason), and a user-defined reduction in ten lines.
//!
//!     cargo run --release --example quickstart [-- --columns N]

use std::time::Instant;

use psg::ops::{self, Denominator, OutlierRule, Removed};
use psg::prelude::*;

/// A user-defined reduction: the mean of each column after dropping values more than `k`
/// median absolute deviations from the median (a robust aggregate no DP library ships).
#[batch_reduce]
fn robust_mean(g: Batch, k: f32) -> f32 {
    let med = g.median();
    let mad = g.map(|x| (x - med).abs()).median();
    g.filter(|x| (x - med).abs() <= k * mad).mean()
}

/// Fills a seeded g[b, p]: normal-ish per-sample gradients with a few heavy outliers.
fn synthetic(out: &mut [f32], seed: u64) {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32) / (1u64 << 24) as f32
    };
    for v in out {
        let x = next() + next() + next() - 1.5;
        *v = if next() < 0.01 { x * 30.0 } else { x };
    }
}

/// Sum of the finite outputs and the count of NaNs: a fingerprint to compare backends by.
fn checksum(t: &Tensor) -> Result<String> {
    let v: Vec<f32> = t.to_vec()?;
    let nans = v.iter().filter(|x| x.is_nan()).count();
    let sum: f64 = v
        .iter()
        .filter(|x| x.is_finite())
        .map(|&x| f64::from(x))
        .sum();
    Ok(if nans > 0 {
        format!("{sum:+.6e} ({nans} NaN)")
    } else {
        format!("{sum:+.6e}")
    })
}

const USAGE: &str =
    "usage: quickstart [--columns N]   (N >= 1; default 1M on a GPU, 64K on the CPU)";

/// `--columns N`, if given; a usage error for anything else.
fn columns_arg() -> std::result::Result<Option<usize>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(None),
        [flag, n] if flag == "--columns" => match n.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(format!("--columns takes a whole number >= 1, not {n:?}")),
        },
        [flag] if flag == "--help" || flag == "-h" => Err(String::new()),
        _ => Err(format!("unexpected arguments {args:?}")),
    }
}

fn main() -> Result<()> {
    let columns = match columns_arg() {
        Ok(columns) => columns,
        Err(message) => {
            if message.is_empty() {
                println!("{USAGE}");
                return Ok(());
            }
            eprintln!("{message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let start = Instant::now();
    let choice = psg::select_device();
    println!("backend: {}", choice.reason);
    let device = choice.device;
    // A GPU takes a million columns in milliseconds; two CPU cores take over a minute.
    let default_columns = if device.is_cpu() { 1 << 16 } else { 1 << 20 };
    let columns = columns.unwrap_or(default_columns);
    let b = 256;
    // Made on the host (an error, not an abort, when it cannot hold them), then moved to the
    // device: the CPU keeps this memory, a GPU gets a copy.
    let mut host = psg::runtime::host_zeros::<f32>(&[b, columns])?;
    synthetic(&mut host, 42);
    let g = Tensor::from_vec(host, &[b, columns], &device)?;

    let ready = start.elapsed();

    // The first result includes the kernel's JIT compile, or its load from the disk cache.
    let first = Instant::now();
    let mut origin = String::from("CPU: no kernel");
    if let Device::Cuda(cuda) = &device {
        let before = cuda.kernel_cache_stats();
        ops::mean(&g)?.to_vec::<f32>()?;
        let after = cuda.kernel_cache_stats();
        origin = format!(
            "{} compiled by NVRTC, {} as a quick build, {} loaded from the disk cache",
            after.compiles - before.compiles,
            after.quick_compiles - before.quick_compiles,
            after.disk_hits - before.disk_hits
        );
    } else {
        ops::mean(&g)?.to_vec::<f32>()?;
    }
    println!(
        "time to first result: {:.1} ms for the first call of `mean` ({origin}); data ready after {:.0} ms",
        first.elapsed().as_secs_f64() * 1e3,
        ready.as_secs_f64() * 1e3
    );

    let factors = ops::flat_clip_factors(&[&g], 1.0)?;
    type Op<'a> = Box<dyn Fn() -> Result<Tensor> + 'a>;
    let table: Vec<(&str, Op)> = vec![
        ("sum", Box::new(|| ops::sum(&g))),
        ("mean", Box::new(|| ops::mean(&g))),
        ("var", Box::new(|| ops::var(&g, 1.0))),
        ("std", Box::new(|| ops::std(&g, 1.0))),
        ("sign (per sample)", Box::new(|| ops::sign(&g))),
        ("sign sum", Box::new(|| ops::sign_sum(&g))),
        ("majority vote", Box::new(|| ops::majority_vote(&g))),
        ("median", Box::new(|| ops::median(&g))),
        ("median_low", Box::new(|| ops::median_low(&g))),
        ("quantile 0.9", Box::new(|| ops::quantile(&g, 0.9))),
        ("kth (k = B/2)", Box::new(|| ops::kth(&g, b / 2))),
        (
            "z-score mean (k=3)",
            Box::new(|| Ok(ops::outlier_mean(&g, OutlierRule::ZScore { k: 3.0 })?.mean)),
        ),
        (
            "MAD mean (k=3)",
            Box::new(|| Ok(ops::outlier_mean(&g, OutlierRule::Mad { k: 3.0 })?.mean)),
        ),
        (
            "trimmed mean (10%)",
            Box::new(|| Ok(ops::outlier_mean(&g, OutlierRule::TrimFraction { alpha: 0.1 })?.mean)),
        ),
        (
            "z-score cleaned",
            Box::new(|| ops::remove_outliers(&g, OutlierRule::ZScore { k: 3.0 }, Removed::Zero)),
        ),
        (
            "MAD cleaned (NaN-marked)",
            Box::new(|| ops::remove_outliers(&g, OutlierRule::Mad { k: 3.0 }, Removed::NaN)),
        ),
        (
            "gaussian-weighted sum",
            Box::new(|| Ok(ops::gaussian_weighted(&g)?.0)),
        ),
        (
            "gaussian-weighted mean",
            Box::new(|| Ok(ops::gaussian_weighted(&g)?.1)),
        ),
        (
            "clip factors (C=1)",
            Box::new(|| ops::flat_clip_factors(&[&g], 1.0)),
        ),
        (
            "clipped mean",
            Box::new(|| ops::clipped_mean(&g, &factors, Denominator::BatchSize)),
        ),
        (
            "clipped median",
            Box::new(|| ops::clipped_median(&g, &factors)),
        ),
        (
            "value clip (|x|<=1)",
            Box::new(|| ops::clip_values(&g, 1.0)),
        ),
        (
            "value clip (50% of max)",
            Box::new(|| ops::clip_values_relative(&g, 0.5)),
        ),
        ("robust_mean (user, k=3)", Box::new(|| robust_mean(&g, 3.0))),
    ];
    println!("\ng[{b}, {columns}] f32, {}", device.short_name());
    println!(
        "{:<26} {:>8} {:>12}  checksum",
        "operation", "backend", "time (ms)"
    );
    let sync = || match &device {
        Device::Cuda(cuda) => cuda.synchronize(),
        Device::Cpu => Ok(()),
    };
    for (name, op) in &table {
        // Warm-up, outside the timing: the JIT compile (a quick build first; the optimized
        // build compiles in the background, and this waits for it) or the disk cache's load.
        op()?;
        if let Device::Cuda(cuda) = &device {
            cuda.finish_compiles();
        }
        sync()?;
        let t = Instant::now();
        let out = op()?;
        sync()?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "{name:<26} {:>8} {ms:>12.2}  {}",
            device.short_name(),
            checksum(&out)?
        );
    }
    println!(
        "\n(wall-clock time of one call, synchronized; BENCHMARKS.md has event-timed medians)"
    );
    Ok(())
}
