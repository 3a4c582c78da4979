//! A process that exits while the tiered JIT's optimized builds compile in the background exits
//! cleanly: the runtime's exit handler waits for the running builds, and neither hangs nor
//! crashes. (An exit inside a libnvrtc compile crashed with SIGSEGV in 4 of 24 runs of a CPU-only
//! repro that called `compile_cubin` on a thread; this test's children, on an H200, did not
//! crash the runtime without the handler either, in 36 exits: it checks the exit path, it does
//! not reproduce that crash.) The test runs itself as child processes: each computes a MAD mean
//! with the disk cache off, so that every child compiles, then calls `std::process::exit(0)` at
//! once.
//!
//! Its own binary, as it starts processes of itself.

mod common;

use std::process::Command;

const CHILD: &str = "PSG_TEST_EXIT_CHILD";

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_a_process_exiting_during_background_builds_exits_cleanly() {
    if std::env::var_os(CHILD).is_some() {
        let Some(dev) = common::cuda_in(psg_runtime::JitMode::Tiered) else {
            std::process::exit(3);
        };
        let device = psg_runtime::Device::Cuda(dev.clone());
        let g = psg_runtime::Tensor::from_vec(
            (0..256 * 1000)
                .map(|i| (i % 97) as f32)
                .collect::<Vec<f32>>(),
            &[256, 1000],
            &device,
        )
        .unwrap();
        let m = psg_ops::outlier_mean(&g, psg_ops::OutlierRule::Mad { k: 3.0 }).unwrap();
        m.mean.to_vec::<f32>().unwrap();
        // The optimized builds are still compiling: exit now, without dropping the device.
        std::mem::forget(dev);
        std::process::exit(0);
    }
    if common::cuda().is_none() {
        return;
    }
    let me = std::env::current_exe().unwrap();
    let runs = 12;
    let mut failures = Vec::new();
    for i in 0..runs {
        let out = Command::new(&me)
            .args([
                "gpu_a_process_exiting_during_background_builds_exits_cleanly",
                "--exact",
                "--include-ignored",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("PSG_CACHE", "off")
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "run {i}: {:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
