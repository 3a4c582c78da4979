//! psg on the CPU in a process forked after psg ran on the CPU (PyTorch's DataLoader workers on
//! Linux fork by default): the child's parallel work must finish. Threads do not survive
//! `fork()`, so a pool started in the parent has no workers in the child, and work handed to
//! it there would wait forever.
//!
//! One test in its own binary: the fork happens with no other test's threads running.

#![cfg(unix)]

use std::time::{Duration, Instant};

use psg::ops;
use psg::ops::layers::{self, capture};
use psg::{Device, Result, Tensor};

/// g[8, 1000] on the CPU: 16 chunks of columns, so a reduction over it runs in parallel.
fn batch() -> Result<Tensor> {
    let values: Vec<f32> = (0..8 * 1000)
        .map(|i| ((i * 37) % 101) as f32 - 50.0)
        .collect();
    Tensor::from_slice(&values, &[8, 1000], &Device::Cpu)
}

/// A tensor on the CPU of `shape`, filled with small distinct values.
fn filled(shape: &[usize], seed: usize) -> Result<Tensor> {
    let n = shape.iter().product::<usize>();
    let values: Vec<f32> = (0..n)
        .map(|i| ((i * 7 + seed) % 13) as f32 * 0.25 - 1.5)
        .collect();
    Tensor::from_slice(&values, shape, &Device::Cpu)
}

/// Every CPU path that runs on psg's thread pool, each on enough rows or columns to run in
/// parallel: a batch reduction, the per-sample norms' row scan, the layers' per-sample and batch
/// gradients, and a capture model's forward and backward pass with its loss and SGD step.
/// Returns a fingerprint to compare processes by.
fn work() -> Result<Vec<f32>> {
    let g = batch()?;
    let mut out = ops::median(&g)?.to_vec::<f32>()?;
    out.extend(ops::per_sample_norms(&[&g])?.to_vec::<f32>()?);
    let weight_grads = |grads: layers::LayerGrads| -> Result<Vec<f32>> {
        let w = grads.weight().expect("every layer here has a weight");
        let mut v = w.batch.to_vec::<f32>()?;
        if let Some(dense) = w.per_sample.dense() {
            v.extend(dense.to_vec::<f32>()?);
        }
        Ok(v)
    };
    let (a, dz) = (filled(&[8, 300], 1)?, filled(&[8, 40], 2)?);
    out.extend(weight_grads(layers::linear(
        &a,
        &dz,
        true,
        layers::Sink::Keep,
    )?)?);
    let (x, gy) = (filled(&[8, 3, 6, 6], 3)?, filled(&[8, 4, 4, 4], 4)?);
    let spec = layers::Conv2dSpec::new(3, 3);
    out.extend(weight_grads(layers::conv2d(
        &x,
        &gy,
        &spec,
        layers::Sink::Keep,
    )?)?);
    let (x_hat, gy) = (filled(&[8, 5, 16], 5)?, filled(&[8, 5, 16], 6)?);
    out.extend(weight_grads(layers::layer_norm(
        &x_hat,
        &gy,
        layers::Sink::Keep,
    )?)?);
    let indices: Vec<u32> = (0..8 * 5).map(|i| (i * 3 % 11) as u32).collect();
    let ge = filled(&[8, 5, 16], 7)?;
    out.extend(weight_grads(layers::embedding(
        &indices,
        &ge,
        11,
        layers::Sink::Keep,
    )?)?);
    let mut model = capture::Sequential::new(vec![
        Box::new(capture::Linear::new(
            filled(&[32, 20], 8)?,
            Some(filled(&[32], 9)?),
        )?),
        Box::new(capture::Relu::new()),
        Box::new(capture::Linear::new(filled(&[10, 32], 10)?, None)?),
    ]);
    let logits = model.forward(&filled(&[64, 20], 11)?)?;
    let labels: Vec<u32> = (0..64).map(|i| i % 10).collect();
    let ce = capture::softmax_cross_entropy(&logits, &labels)?;
    model.backward(&ce.grad_logits)?;
    for grads in model.layer_grads(layers::Sink::Keep)? {
        out.extend(weight_grads(grads)?);
    }
    let params = model.params();
    out.extend(capture::sgd_step(params[0], params[0], 0.5)?.to_vec::<f32>()?);
    Ok(out)
}

#[test]
fn cpu_work_in_a_process_forked_after_cpu_work_finishes() -> Result<()> {
    let expected = work()?;
    // SAFETY: the child runs psg's CPU code and leaves with `_exit`, never returning into the
    // test harness; the parent only waits for it.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // A panic must not unwind into the copy of the test harness.
        let code = match std::panic::catch_unwind(work) {
            Ok(Ok(v)) if v == expected => 0,
            Ok(Ok(_)) => 2,
            Ok(Err(e)) => {
                eprintln!("the forked child's work failed: {e}");
                3
            }
            Err(_) => 4,
        };
        // SAFETY: ends the child without running the parent's destructors or atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let start = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child, without blocking.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(done >= 0, "waitpid failed");
        if done == pid {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            // SAFETY: our own child, which has hung.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("the forked child's CPU work did not finish in 60 s: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        libc::WIFEXITED(status),
        "the forked child did not exit normally (status {status:#x})"
    );
    let code = libc::WEXITSTATUS(status);
    assert_eq!(
        code, 0,
        "the forked child's work failed (2: other results than the parent's, 3: an error, \
         4: a panic)"
    );
    // And the parent's pool still works after the fork.
    assert_eq!(work()?, expected);
    Ok(())
}
