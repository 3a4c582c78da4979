//! GPU tests: the CPU results again on CUDA, at awkward sizes, on fresh random inputs.
//! Run with `cargo test -- --include-ignored` on a GPU machine; `PSG_REQUIRE_GPU=1` makes a
//! missing GPU a failure instead of a printed skip.

mod common;

use half::{bf16, f16};
use psg_runtime::{
    cuda_device, run_reduction, CudaDevice, DType, Device, Element, Error, JitMode, KernelArg,
    KernelSource, LaunchConfig, Tensor,
};

/// CUDA device 0, or `None` (after saying why) when there is none and it is not required. It
/// compiles optimized builds only, so every test runs the kernels users run after the first
/// calls (`gpu_cache.rs` tests the tiered and quick modes).
fn gpu() -> Option<CudaDevice> {
    match cuda_device(0) {
        Ok(d) => {
            d.set_jit_mode(JitMode::Optimized);
            Some(d)
        }
        Err(e) => {
            if std::env::var("PSG_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("PSG_REQUIRE_GPU=1 but no usable GPU: {e}");
            }
            eprintln!("skipped (not evidence): {e}");
            None
        }
    }
}

/// Values as comparable bits: exact, with every NaN equal to every other.
fn bits(t: &Tensor) -> Vec<u64> {
    fn of<T: Element>(t: &Tensor) -> Vec<u64> {
        use psg_runtime::Accumulator;
        t.to_vec::<T>()
            .unwrap()
            .into_iter()
            .map(|v| {
                let x = v.to_acc().to_f64();
                if x.is_nan() {
                    u64::MAX
                } else {
                    x.to_bits()
                }
            })
            .collect()
    }
    match t.dtype() {
        DType::F32 => of::<f32>(t),
        DType::F64 => of::<f64>(t),
        DType::F16 => of::<f16>(t),
        DType::BF16 => of::<bf16>(t),
    }
}

fn tensor(values: &[f64], dtype: DType, shape: &[usize], device: &Device) -> Tensor {
    use common::to_elements;
    match dtype {
        DType::F32 => Tensor::from_slice(&to_elements::<f32>(values), shape, device),
        DType::F64 => Tensor::from_slice(&to_elements::<f64>(values), shape, device),
        DType::F16 => Tensor::from_slice(&to_elements::<f16>(values), shape, device),
        DType::BF16 => Tensor::from_slice(&to_elements::<bf16>(values), shape, device),
    }
    .unwrap()
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_upload_download_round_trip() {
    let Some(d) = gpu() else { return };
    let dev = Device::Cuda(d.clone());
    for n in [0, 1, 2, 1023, 1 << 20] {
        let mut values = common::random_values(n, n as u64);
        if n > 3 {
            values[1] = f64::NAN;
            values[2] = -0.0;
            values[3] = f64::INFINITY;
        }
        for dtype in DType::ALL {
            let cpu = tensor(&values, dtype, &[n], &Device::Cpu);
            let on_gpu = cpu.to_device(&dev).unwrap();
            assert!(on_gpu.device().is_cuda());
            assert_eq!(bits(&on_gpu), bits(&cpu), "{dtype} n={n}");
            assert_eq!(bits(&on_gpu.to_device(&Device::Cpu).unwrap()), bits(&cpu));
            // Printed with its values (read through a conversion on the GPU) as on the CPU.
            assert_eq!(
                on_gpu.to_string(),
                cpu.to_string()
                    .replace(", cpu)", &format!(", {})", dev.short_name())),
                "{dtype} n={n}"
            );
            assert_eq!(on_gpu.device(), dev);
            assert_ne!(on_gpu.device(), Device::Cpu);
        }
    }
    let z = Tensor::zeros(DType::BF16, &[3, 5], &dev).unwrap();
    assert_eq!(z.to_vec::<bf16>().unwrap(), vec![bf16::ZERO; 15]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_select_device_chooses_cuda_and_says_why() {
    let Some(_) = gpu() else { return };
    let choice = psg_runtime::select_device();
    eprintln!("select_device: {}", choice.reason);
    if std::env::var_os("PSG_DEVICE").is_none() {
        assert!(choice.device.is_cuda(), "{}", choice.reason);
        assert!(
            choice.reason.starts_with("CUDA device 0: "),
            "{}",
            choice.reason
        );
        assert!(choice.reason.contains("NVRTC"), "{}", choice.reason);
    }
}

const AXPY: &str = r#"
extern "C" __global__ void gpu_test_axpy(float a, const float* x, float* y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}"#;

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_launch_of_a_hand_written_kernel() {
    let Some(d) = gpu() else { return };
    let dev = Device::Cuda(d.clone());
    let n = 1000;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let y: Vec<f32> = (0..n).map(|i| 1.0 - i as f32).collect();
    let xt = Tensor::from_slice(&x, &[n], &dev).unwrap();
    let yt = Tensor::from_slice(&y, &[n], &dev).unwrap();
    let k = KernelSource::new_static("gpu_test_axpy", AXPY);
    let args = [
        KernelArg::F32(2.0),
        KernelArg::Ptr(xt.cuda_ptr().unwrap()),
        KernelArg::Ptr(yt.cuda_ptr().unwrap()),
        KernelArg::I64(n as i64),
    ];
    d.launch(&k, LaunchConfig::for_items(n, 128).unwrap(), &args)
        .unwrap();
    let want: Vec<f32> = (0..n).map(|i| 2.0 * x[i] + y[i]).collect();
    assert_eq!(yt.to_vec::<f32>().unwrap(), want);
    let ms = d
        .time_ms(|| d.launch(&k, LaunchConfig::for_items(n, 128).unwrap(), &args))
        .unwrap();
    assert!((0.0..1000.0).contains(&ms), "{ms}");
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_run_reduction_matches_cpu_bit_for_bit() {
    let Some(d) = gpu() else { return };
    let dev = Device::Cuda(d);
    let sizes = [
        (1, 1),
        (2, 3),
        (1023, 5),
        (3, 1000),
        (0, 7),
        (5, 0),
        (4, 3_000_001),
    ];
    for def in common::all_defs() {
        for dtype in DType::ALL {
            for (i, &(b, p)) in sizes.iter().enumerate() {
                let g_vals = common::random_values(b * p, 7 + i as u64);
                let w_vals = common::random_values(b, 99 + i as u64);
                let g = tensor(&g_vals, dtype, &[b, p], &Device::Cpu);
                let w = tensor(&w_vals, dtype.accumulator(), &[b], &Device::Cpu);
                let per_sample: Vec<&Tensor> = (0..def.n_per_sample).map(|_| &w).collect();
                let scalars = vec![0.75; def.n_scalars];
                let cpu = run_reduction(&def, &g, &per_sample, &scalars).unwrap();
                let (gg, wg) = (g.to_device(&dev).unwrap(), w.to_device(&dev).unwrap());
                let per_sample: Vec<&Tensor> = (0..def.n_per_sample).map(|_| &wg).collect();
                let out = run_reduction(&def, &gg, &per_sample, &scalars).unwrap();
                assert_eq!(out.len(), cpu.len());
                for (o, c) in out.iter().zip(&cpu) {
                    assert_eq!(o.shape(), c.shape());
                    assert_eq!(o.dtype(), dtype);
                    assert!(bits(o) == bits(c), "{} {dtype} B={b} P={p}", def.name);
                }
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_mixed_devices_are_a_typed_error() {
    let Some(d) = gpu() else { return };
    let def = common::weighted_def();
    let g = Tensor::zeros(DType::F32, &[4, 3], &Device::Cuda(d)).unwrap();
    let w = Tensor::zeros(DType::F32, &[4], &Device::Cpu).unwrap();
    assert!(matches!(
        run_reduction(&def, &g, &[&w], &[1.0]),
        Err(Error::DeviceMismatch(_))
    ));
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_borrowed_pointer_view_and_borrowed_stream() {
    let Some(d) = gpu() else { return };
    let dev = Device::Cuda(d.clone());
    let (b, p) = (3, 257);
    let vals = common::random_values(b * p, 5);
    let owner = tensor(&vals, DType::F32, &[b, p], &dev);
    // SAFETY: `owner` keeps the memory alive for the whole test and holds b * p f32 values.
    let view = unsafe { Tensor::from_cuda_ptr(owner.cuda_ptr().unwrap(), DType::F32, &[b, p], &d) };
    assert!(view.is_borrowed());
    let cpu = run_reduction(
        &common::sum_def(),
        &owner.to_device(&Device::Cpu).unwrap(),
        &[],
        &[],
    )
    .unwrap();
    let out = run_reduction(&common::sum_def(), &view, &[], &[]).unwrap();
    assert_eq!(bits(&out[0]), bits(&cpu[0]));
    drop(view);
    assert_eq!(
        bits(&owner),
        bits(&tensor(&vals, DType::F32, &[b, p], &Device::Cpu))
    );

    // A stream someone else owns (here cudarc's, standing in for PyTorch's).
    let ctx = cudarc::driver::CudaContext::new(0).unwrap();
    let theirs = ctx.new_stream().unwrap();
    // SAFETY: `theirs` is a stream of device 0's primary context and outlives `borrowed`.
    let borrowed = unsafe { CudaDevice::with_borrowed_stream(0, theirs.cu_stream()) }.unwrap();
    assert!(borrowed.is_borrowed_stream());
    assert_eq!(borrowed.cu_stream(), theirs.cu_stream());
    let on_theirs = owner.to_device(&Device::Cuda(borrowed.clone())).unwrap();
    let out = run_reduction(&common::sum_def(), &on_theirs, &[], &[]).unwrap();
    assert_eq!(bits(&out[0]), bits(&cpu[0]));
    drop((out, on_theirs, borrowed));
    theirs.synchronize().unwrap(); // still alive: psg did not destroy it

    // A per-sample input written on another handle (its own stream), then freed: the launch on
    // `d` waits for that handle first and for `d`'s stream before the input can be freed.
    let other = CudaDevice::new(0).unwrap();
    assert!(!other.same_handle(&d));
    let w = common::random_values(b, 6);
    let want = run_reduction(
        &common::weighted_def(),
        &owner.to_device(&Device::Cpu).unwrap(),
        &[&tensor(&w, DType::F32, &[b], &Device::Cpu)],
        &[0.5],
    )
    .unwrap();
    for _ in 0..20 {
        let w_other = tensor(&w, DType::F32, &[b], &Device::Cuda(other.clone()));
        let got = run_reduction(&common::weighted_def(), &owner, &[&w_other], &[0.5]).unwrap();
        drop(w_other);
        assert_eq!(bits(&got[0]), bits(&want[0]));
        assert_eq!(bits(&got[1]), bits(&want[1]));
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_errors_are_typed() {
    let Some(d) = gpu() else { return };
    match d.alloc(1 << 52) {
        Err(Error::Driver { message, .. }) => {
            assert!(message.contains("OUT_OF_MEMORY"), "{message}")
        }
        other => panic!("expected an out-of-memory Driver error, got {other:?}"),
    }
    let broken = KernelSource::new_static(
        "gpu_test_broken",
        "extern \"C\" __global__ void gpu_test_broken( {",
    );
    let cfg = LaunchConfig::for_items(1, 1).unwrap();
    assert!(matches!(
        d.launch(&broken, cfg, &[]),
        Err(Error::Compile { .. })
    ));
    let misnamed = KernelSource::new_static("not_in_source", AXPY);
    assert!(matches!(d.prepare(&misnamed), Err(Error::Driver { .. })));
    assert!(matches!(
        psg_runtime::CudaDevice::new(1000),
        Err(Error::CudaUnavailable { .. })
    ));
}

const BIG_SHARED: &str = r#"
extern "C" __global__ void gpu_test_shared(float* out, int n) {
    extern __shared__ float buf[];
    for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = (float)i;
    __syncthreads();
    if (threadIdx.x == 0) { float s = 0; for (int i = 0; i < n; ++i) s += buf[i]; out[0] = s; }
}"#;

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_dynamic_shared_memory_above_48k_is_opted_in() {
    let Some(d) = gpu() else { return };
    let n: usize = 25_000; // 100 kB of floats
    let out = Tensor::zeros(DType::F32, &[1], &Device::Cuda(d.clone())).unwrap();
    let cfg = LaunchConfig {
        grid: (1, 1, 1),
        block: (256, 1, 1),
        shared_bytes: 4 * n as u32,
    };
    let k = KernelSource::new_static("gpu_test_shared", BIG_SHARED);
    d.launch(
        &k,
        cfg,
        &[
            KernelArg::Ptr(out.cuda_ptr().unwrap()),
            KernelArg::I32(n as i32),
        ],
    )
    .unwrap();
    let want: f32 = (0..n).map(|i| i as f32).sum();
    assert_eq!(out.to_vec::<f32>().unwrap(), vec![want]);
}

/// `Tensor::to_dtype` on the device: every pair of dtypes, the CPU's bits (NaN equal to NaN),
/// on values of every class (normals of many magnitudes, subnormals, ties of the 16-bit types,
/// overflow, zeros of both signs, infinities, NaN) at sizes that leave partial blocks.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_to_dtype_matches_cpu() {
    let Some(dev) = gpu() else { return };
    let device = Device::Cuda(dev);
    for n in [0usize, 1, 257, 1_000_003] {
        let values = common::awkward_f64(n, 0x5eed + n as u64);
        let wide = Tensor::from_slice(&values, &[n], &Device::Cpu).unwrap();
        for from in DType::ALL {
            let cpu = wide.to_dtype(from).unwrap();
            let gpu = cpu.to_device(&device).unwrap();
            for to in DType::ALL {
                let want = cpu.to_dtype(to).unwrap();
                let got = gpu.to_dtype(to).unwrap();
                assert_eq!(got.dtype(), to);
                assert!(!got.device().is_cpu());
                let (g, w) = (bits(&got), bits(&want));
                if let Some(i) = (0..n).find(|&i| g[i] != w[i]) {
                    panic!(
                        "{from} -> {to}, n = {n}: element {i} ({:e}): device {:#x}, CPU {:#x}",
                        values[i], g[i], w[i]
                    );
                }
            }
        }
    }
}
