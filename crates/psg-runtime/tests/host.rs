//! The CPU backend at the edges of the host: an empty batch over very many columns, and copies
//! the allocator refuses (an error, never an abort).

mod common;

use std::time::Instant;

use psg_runtime::{run_reduction, DType, Device, Error, Tensor};

#[test]
fn an_empty_batch_with_a_per_sample_output_does_no_work() {
    // [0, 2^30]: the output is empty, so no column may be visited (it took seconds a 2^26
    // columns, and never finished at 2^62).
    let p = 1usize << 30;
    let g = Tensor::from_slice::<f32>(&[], &[0, p], &Device::Cpu).unwrap();
    let w = Tensor::from_slice::<f32>(&[], &[0], &Device::Cpu).unwrap();
    let start = Instant::now();
    let out = run_reduction(&common::scale_def(), &g, &[&w], &[2.0]).unwrap();
    assert!(start.elapsed().as_secs_f64() < 5.0, "{:?}", start.elapsed());
    assert_eq!(out[0].shape(), &[0, p]);
    assert!(out[0].to_vec::<f32>().unwrap().is_empty());
}

/// In a child whose address space is capped at about 2 GB (`ulimit -v`, two rayon threads): g of
/// 1.2 GB, then a copy of it and a reduction that gathers it whole must be `HostMemory` errors.
#[cfg(target_os = "linux")]
#[test]
fn refused_host_copies_are_errors() {
    use std::process::Command;
    const CHILD: &str = "PSG_TEST_HOST_MEMORY_CHILD";
    const NAME: &str = "refused_host_copies_are_errors";
    if std::env::var_os(CHILD).is_some() {
        let g = Tensor::zeros(DType::F32, &[300_000_000, 1], &Device::Cpu).unwrap();
        match g.to_vec::<f32>() {
            Err(Error::HostMemory(msg)) => eprintln!("to_vec: {msg}"),
            other => panic!(
                "to_vec: expected HostMemory, got {:?}",
                other.map(|v| v.len())
            ),
        }
        match run_reduction(&common::sum_def(), &g, &[], &[]) {
            Err(Error::HostMemory(msg)) => eprintln!("sum: {msg}"),
            other => panic!("sum: expected HostMemory, got {other:?}"),
        }
        return;
    }
    let capped = Command::new("sh")
        .args(["-c", "ulimit -v 2000000"])
        .status();
    if !capped.is_ok_and(|s| s.success()) {
        eprintln!("skipped (not evidence): this shell cannot cap its address space (ulimit -v)");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 2000000 && exec \"$0\" \"$@\"")
        .arg(&exe)
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed ({}):\n{text}",
        out.status
    );
    assert!(text.contains("1 passed"), "{text}");
}
