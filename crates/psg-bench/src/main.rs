//! `psg-bench`: times psg's built-in batch reductions on a CUDA GPU and reports each against the
//! copy-bandwidth floor, with the JIT's compile and disk-cache latency. `--help` lists the
//! options; `bench/run.sh` runs it beside the PyTorch baseline and prints one combined table.

#![deny(missing_docs)]

mod bandwidth;
mod cli;
mod data;
mod error;
mod gpu;
mod jit;
mod json;
mod ops;
mod report;
mod suite;
mod timing;

use std::process::ExitCode;

use cli::{Command, Options};
use error::{BenchError, BenchResult};
use report::Report;
use timing::RunPlan;

fn main() -> ExitCode {
    let result = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            println!("{}", cli::USAGE);
            Ok(())
        }
        Ok(Command::ListOps) => {
            print!("{}", ops::describe());
            Ok(())
        }
        Ok(Command::Run(opts)) => run(&opts),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("psg-bench: error: {e}");
            ExitCode::from(if matches!(e, BenchError::Usage(_)) {
                2
            } else {
                1
            })
        }
    }
}

fn run(opts: &Options) -> BenchResult<()> {
    let dev = gpu::open(opts.device)?;
    let mut device = match psg_runtime::nvrtc_version() {
        Ok((major, minor)) => format!("{dev}, NVRTC {major}.{minor}"),
        Err(_) => dev.to_string(),
    };
    if opts.time_quick_builds {
        // Without the disk cache: a quick handle would load the optimized builds found there.
        // Single-threaded here; the JIT measurement sets and restores the cache variables itself.
        std::env::set_var("PSG_CACHE", "off");
        dev.set_jit_mode(psg_runtime::JitMode::Quick);
        device.push_str("; timing the tiered JIT's quick builds, not the optimized ones");
    }
    eprintln!("psg-bench on {device}");
    if opts.keep_pool {
        if let Err(e) = gpu::keep_pool_memory(&dev) {
            eprintln!(
                "note: could not keep freed memory in the CUDA pool ({e}); timings include \
                       the driver's allocations"
            );
        }
    }
    let plan = RunPlan {
        warmup: opts.warmup,
        runs: opts.runs,
        budget_s: opts.op_budget_s,
    };
    let bandwidth = bandwidth::measure(&dev, opts.bandwidth_bytes, &plan)?;
    eprintln!(
        "copy bandwidth: kernel {:.1} GB/s, floors use {:.1} GB/s",
        bandwidth.kernel_gbps,
        bandwidth.floor_gbps()
    );
    let jit = if opts.jit {
        let kernels = jit::kernels(&opts.dtypes, opts.jit_limit);
        eprintln!(
            "JIT latency: compiling {} kernels into a fresh cache...",
            kernels.len()
        );
        jit::measure(opts.device, &kernels, opts.jit_rounds).map_err(|e| e.to_string())
    } else {
        Err("--no-jit".to_string())
    };
    let rows = if opts.time_ops {
        suite::run(&dev, opts, &bandwidth, &plan)
    } else {
        Vec::new()
    };
    let report = Report {
        device,
        opts,
        bandwidth,
        jit,
        rows,
    };
    let written = opts.json.as_deref().map(|path| {
        let r = report.write_json(path);
        if r.is_ok() {
            eprintln!("wrote {path}");
        }
        r
    });
    println!("\n{}", report.text());
    written.unwrap_or(Ok(()))
}
