use super::*;
use crate::dtype::DType;
use crate::element::Accumulator;
use crate::error::Error;

fn column_sum<T: Element>(col: &Column<'_, T>, out: &mut [T::Acc]) {
    for b in 0..col.len() {
        out[0] += col.load(b);
    }
}

/// out0 = sum(x), out1 = k * sum(x * w[b]).
fn sum_and_weighted<T: Element>(col: &Column<'_, T>, out: &mut [T::Acc]) {
    let mut weighted = T::Acc::ZERO;
    for b in 0..col.len() {
        out[0] += col.load(b);
        weighted += col.load(b) * col.per_sample(0, b);
    }
    out[1] = col.scalar(0) * weighted;
}

/// out[b] = x[b] * w[b] * k.
fn scale<T: Element>(col: &Column<'_, T>, out: &mut [T::Acc]) {
    for (b, o) in out.iter_mut().enumerate() {
        *o = col.load(b) * col.per_sample(0, b) * col.scalar(0);
    }
}

macro_rules! cpu_kernels {
    ($f:ident) => {
        CpuKernels {
            f32: $f::<f32>,
            f64: $f::<f64>,
            f16: $f::<half::f16>,
            bf16: $f::<half::bf16>,
        }
    };
}

fn def(name: &'static str, outputs: OutputKind, n: usize, cpu: CpuKernels) -> ReductionDef {
    let k = KernelSource::new_static("unused", "");
    ReductionDef {
        name,
        n_per_sample: n,
        n_scalars: n,
        scalar_names: &["k"],
        per_sample_names: &["w"],
        outputs,
        launch: LaunchShape::ThreadPerColumn { block: 128 },
        cuda: [k.clone(), k.clone(), k.clone(), k],
        tiled: None,
        cpu,
    }
}

fn sum_def() -> ReductionDef {
    def("sum", OutputKind::Scalars(1), 0, cpu_kernels!(column_sum))
}

fn weighted_def() -> ReductionDef {
    def(
        "sum_and_weighted",
        OutputKind::Scalars(2),
        1,
        cpu_kernels!(sum_and_weighted),
    )
}

fn scale_def() -> ReductionDef {
    def("scale", OutputKind::Batch, 1, cpu_kernels!(scale))
}

/// g[b, p] = a small exact value depending on b and p.
fn g_values(b: usize, p: usize) -> Vec<f64> {
    (0..b * p)
        .map(|i| ((i * 7919) % 97) as f64 / 8.0 - 6.0)
        .collect()
}

#[test]
fn column_sums_match_a_naive_reference_at_awkward_sizes() {
    for &(b, p) in &[(1, 1), (2, 3), (3, 64), (5, 65), (17, 130), (0, 5), (4, 0)] {
        let x = g_values(b, p);
        let g = Tensor::from_slice(&x, &[b, p], &Device::Cpu).unwrap();
        let out = run_reduction(&sum_def(), &g, &[], &[]).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].shape(), &[p]);
        let want: Vec<f64> = (0..p).map(|c| (0..b).map(|r| x[r * p + c]).sum()).collect();
        assert_eq!(out[0].to_vec::<f64>().unwrap(), want, "B={b} P={p}");
    }
}

#[test]
fn every_dtype_stores_in_its_own_type() {
    let x = g_values(3, 5);
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let want: Vec<f32> = (0..5)
        .map(|c| (0..3).map(|r| x32[r * 5 + c]).sum())
        .collect();
    let cases = [
        Tensor::from_slice(&x32, &[3, 5], &Device::Cpu).unwrap(),
        Tensor::from_slice(&x, &[3, 5], &Device::Cpu).unwrap(),
        Tensor::from_slice(
            &x32.iter()
                .map(|&v| half::f16::from_f32(v))
                .collect::<Vec<_>>(),
            &[3, 5],
            &Device::Cpu,
        )
        .unwrap(),
        Tensor::from_slice(
            &x32.iter()
                .map(|&v| half::bf16::from_f32(v))
                .collect::<Vec<_>>(),
            &[3, 5],
            &Device::Cpu,
        )
        .unwrap(),
    ];
    for g in &cases {
        let out = &run_reduction(&sum_def(), g, &[], &[]).unwrap()[0];
        assert_eq!(out.dtype(), g.dtype());
        let got: Vec<f32> = match g.dtype() {
            DType::F32 => out.to_vec::<f32>().unwrap(),
            DType::F64 => out
                .to_vec::<f64>()
                .unwrap()
                .iter()
                .map(|&v| v as f32)
                .collect(),
            DType::F16 => out
                .to_vec::<half::f16>()
                .unwrap()
                .iter()
                .map(|v| v.to_f32())
                .collect(),
            DType::BF16 => out
                .to_vec::<half::bf16>()
                .unwrap()
                .iter()
                .map(|v| v.to_f32())
                .collect(),
        };
        // Values are multiples of 1/8 below 2^5: exact in every dtype.
        assert_eq!(got, want, "{}", g.dtype());
    }
}

#[test]
fn several_scalar_outputs_with_per_sample_and_scalar_arguments() {
    let (b, p) = (4, 70);
    let x = g_values(b, p);
    let w = [0.5f64, -1.0, 2.0, 0.25];
    let g = Tensor::from_slice(&x, &[b, 2, 35], &Device::Cpu).unwrap();
    let wt = Tensor::from_slice(&w, &[b], &Device::Cpu).unwrap();
    let out = run_reduction(&weighted_def(), &g, &[&wt], &[3.0]).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].shape(), &[2, 35]);
    let sums = out[0].to_vec::<f64>().unwrap();
    let weighted = out[1].to_vec::<f64>().unwrap();
    for c in 0..p {
        let col: Vec<f64> = (0..b).map(|r| x[r * p + c]).collect();
        assert_eq!(sums[c], col.iter().sum::<f64>());
        let ws: f64 = col.iter().zip(&w).map(|(v, w)| v * w).sum();
        assert_eq!(weighted[c], 3.0 * ws);
    }
}

#[test]
fn batch_outputs_are_scattered_back_to_g_layout() {
    let (b, p) = (3, 131);
    let x: Vec<f32> = g_values(b, p).iter().map(|&v| v as f32).collect();
    let w = [1.5f32, -2.0, 0.5];
    let g = Tensor::from_slice(&x, &[b, p], &Device::Cpu).unwrap();
    let wt = Tensor::from_slice(&w, &[b], &Device::Cpu).unwrap();
    let out = run_reduction(&scale_def(), &g, &[&wt], &[2.0]).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].shape(), &[b, p]);
    let want: Vec<f32> = (0..b * p).map(|i| x[i] * w[i / p] * 2.0).collect();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), want);
}

#[test]
fn empty_batch_is_valid() {
    let g = Tensor::zeros(DType::F32, &[0, 3], &Device::Cpu).unwrap();
    let wt = Tensor::zeros(DType::F32, &[0], &Device::Cpu).unwrap();
    let out = run_reduction(&weighted_def(), &g, &[&wt], &[1.0]).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![0.0; 3]);
    let out = run_reduction(&scale_def(), &g, &[&wt], &[1.0]).unwrap();
    assert_eq!(out[0].shape(), &[0, 3]);
}

#[test]
fn rank_one_g_gives_scalar_outputs() {
    let g = Tensor::from_slice(&[1.0f32, 2.0, 4.0], &[3], &Device::Cpu).unwrap();
    let out = run_reduction(&sum_def(), &g, &[], &[]).unwrap();
    assert_eq!(out[0].shape(), &[] as &[usize]);
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![7.0]);
}

fn message(r: Result<Vec<Tensor>>) -> (Error, String) {
    let e = r.unwrap_err();
    let m = e.to_string();
    (e, m)
}

#[test]
fn bad_arguments_name_the_reduction_and_the_argument() {
    let g = Tensor::zeros(DType::F32, &[4, 3], &Device::Cpu).unwrap();
    let w = Tensor::zeros(DType::F32, &[4], &Device::Cpu).unwrap();
    let d = weighted_def();

    let scalar = Tensor::from_slice(&[1.0f32], &[], &Device::Cpu).unwrap();
    let (e, m) = message(run_reduction(&d, &scalar, &[&w], &[1.0]));
    assert!(
        matches!(e, Error::Shape(_)) && m.contains("sum_and_weighted"),
        "{m}"
    );

    let (e, m) = message(run_reduction(&d, &g, &[], &[1.0]));
    assert!(
        matches!(e, Error::InvalidParameter(_)) && m.contains("per-sample"),
        "{m}"
    );

    let (e, m) = message(run_reduction(&d, &g, &[&w], &[]));
    assert!(
        matches!(e, Error::InvalidParameter(_)) && m.contains("`k`"),
        "{m}"
    );

    let short = Tensor::zeros(DType::F32, &[3], &Device::Cpu).unwrap();
    let (e, m) = message(run_reduction(&d, &g, &[&short], &[1.0]));
    assert!(
        matches!(e, Error::Shape(_)) && m.contains("[4]") && m.contains("vector `w`"),
        "{m}"
    );

    let wide = Tensor::zeros(DType::F32, &[4, 1], &Device::Cpu).unwrap();
    let (e, _) = message(run_reduction(&d, &g, &[&wide], &[1.0]));
    assert!(matches!(e, Error::Shape(_)));

    let w64 = Tensor::zeros(DType::F64, &[4], &Device::Cpu).unwrap();
    let (e, m) = message(run_reduction(&d, &g, &[&w64], &[1.0]));
    assert!(
        matches!(e, Error::DType(_)) && m.contains("f32") && m.contains("`w`"),
        "{m}"
    );

    // f16 data takes f32 per-sample vectors (its accumulator type).
    let g16 = Tensor::zeros(DType::F16, &[4, 3], &Device::Cpu).unwrap();
    assert!(run_reduction(&d, &g16, &[&w], &[1.0]).is_ok());
    let w16 = Tensor::zeros(DType::F16, &[4], &Device::Cpu).unwrap();
    assert!(matches!(
        run_reduction(&d, &g16, &[&w16], &[1.0]),
        Err(Error::DType(_))
    ));
}

#[test]
fn column_constructor_checks_lengths() {
    let v = [1.0f32, 2.0];
    let w = [1.0f32];
    let ps: [&[f32]; 1] = [&w];
    assert!(matches!(Column::new(&v, &ps, &[]), Err(Error::Shape(_))));
    let w2 = [3.0f32, 4.0];
    let ps2: [&[f32]; 1] = [&w2];
    let col = Column::new(&v, &ps2, &[5.0]).unwrap();
    assert_eq!(
        (col.len(), col.load(1), col.per_sample(0, 1), col.scalar(0)),
        (2, 2.0, 4.0, 5.0)
    );
}

/// Tiled kernels with the shared-memory needs of a one-pass f32/bf16 reduction (4 bytes per
/// element, 4 KiB of partials) and of a selection from a key array (8 bytes, 18 KiB of bins).
fn tiled(per: u32, fixed: u32) -> TiledKernels {
    let k = KernelSource::new_static("t", "");
    TiledKernels {
        cuda: [k.clone(), k.clone(), k.clone(), k],
        bytes_per_element: [per, per * 2, per, per],
        fixed_bytes: [fixed; 4],
        fixed_bytes_large: [fixed; 4],
        min_tile_log2: [5; 4],
        column: None,
        large: None,
        mid: None,
        small: None,
        spill: None,
        spill_fixed_bytes: [fixed; 4],
        spill_passes: 2,
    }
}

const H100_LIMIT: u32 = 227 * 1024;

#[test]
fn tiles_move_about_32_kib_of_g_within_the_preferred_shared_memory() {
    let streaming = tiled(4, 4096);
    // B = 256 f32: 32 columns move 32 KiB.
    assert_eq!(
        streaming.choose(DType::F32, 256, H100_LIMIT),
        Some((5, 256 * 32 * 4 + 4096))
    );
    // B = 64: 128 columns are needed to move 32 KiB; bf16 at B = 256: 64 columns.
    assert_eq!(
        streaming.choose(DType::F32, 64, H100_LIMIT).map(|c| c.0),
        Some(7)
    );
    assert_eq!(
        streaming.choose(DType::BF16, 256, H100_LIMIT).map(|c| c.0),
        Some(6)
    );
    // B = 1024: 32 columns exceed the preferred 72 KiB but fit what the device grants.
    assert_eq!(
        streaming.choose(DType::F32, 1024, H100_LIMIT),
        Some((5, 1024 * 32 * 4 + 4096))
    );
    // B = 2000 does not fit 32 columns on the device: the spill kernel or thread per column.
    assert_eq!(streaming.choose(DType::F32, 2000, H100_LIMIT), None);
    // A selection from a key array at B = 256 takes 32 columns, past the preferred budget.
    assert_eq!(
        tiled(8, 18 * 1024)
            .choose(DType::F32, 256, H100_LIMIT)
            .map(|c| c.0),
        Some(5)
    );
}

#[test]
fn two_columns_a_thread_take_64_columns_wherever_the_device_grants_them() {
    // bf16 kernels whose fast path needs 64-column tiles (2 bytes an element, 4 KiB of partials).
    let mut paired = tiled(2, 4096);
    paired.min_tile_log2 = [5, 5, 6, 6];
    // B = 512: 32 columns would move 32 KiB; 64 fit the preferred 72 KiB.
    assert_eq!(
        paired.choose(DType::BF16, 512, H100_LIMIT),
        Some((6, 512 * 64 * 2 + 4096))
    );
    // B = 64 and 256 as before: 128 and 64 columns.
    assert_eq!(
        paired.choose(DType::BF16, 64, H100_LIMIT).map(|c| c.0),
        Some(7)
    );
    assert_eq!(
        paired.choose(DType::BF16, 256, H100_LIMIT).map(|c| c.0),
        Some(6)
    );
    // B = 1024: 64 columns (132 KiB) past the preferred budget, within the device's.
    assert_eq!(
        paired.choose(DType::BF16, 1024, H100_LIMIT),
        Some((6, 1024 * 64 * 2 + 4096))
    );
    // B = 2000: 64 columns exceed the device, 32 fit (the one-column path).
    assert_eq!(
        paired.choose(DType::BF16, 2000, H100_LIMIT),
        Some((5, 2000 * 32 * 2 + 4096))
    );
    // On a card that grants 64 KiB, B = 512 falls back to 32 columns.
    assert_eq!(
        paired.choose(DType::BF16, 512, 64 * 1024).map(|c| c.0),
        Some(5)
    );
    // Other dtypes keep their 32-column minimum.
    assert_eq!(
        paired.choose(DType::F32, 1024, H100_LIMIT).map(|c| c.0),
        Some(5)
    );
}

#[test]
fn column_mode_runs_where_its_256_column_tile_fits_the_preferred_shared_memory() {
    let k = KernelSource::new_static("c", "");
    let mut t = tiled(4, 4096);
    t.bytes_per_element = [4, 8, 2, 2];
    assert_eq!(
        t.column_fits(DType::F32, 64, H100_LIMIT),
        None,
        "no column kernels"
    );
    t.column = Some([k.clone(), k.clone(), k.clone(), k]);
    // f32: 1 KiB a sample (up to 72); bf16: 512 bytes (up to 144); no fixed bytes.
    assert_eq!(t.column_fits(DType::F32, 64, H100_LIMIT), Some(64 * 1024));
    assert_eq!(t.column_fits(DType::F32, 72, H100_LIMIT), Some(72 * 1024));
    assert_eq!(t.column_fits(DType::F32, 73, H100_LIMIT), None);
    assert_eq!(t.column_fits(DType::F32, 128, H100_LIMIT), None);
    assert_eq!(t.column_fits(DType::BF16, 128, H100_LIMIT), Some(64 * 1024));
    assert_eq!(t.column_fits(DType::BF16, 145, H100_LIMIT), None);
    assert_eq!(t.column_fits(DType::F64, 36, H100_LIMIT), Some(72 * 1024));
    // Never past what the device grants, and not for an empty batch.
    assert_eq!(t.column_fits(DType::F32, 64, 48 * 1024), None);
    assert_eq!(t.column_fits(DType::F32, 48, 48 * 1024), Some(48 * 1024));
    assert_eq!(t.column_fits(DType::F32, 0, H100_LIMIT), None);
}

#[test]
fn tiles_never_ask_for_more_shared_memory_than_the_device_grants() {
    let streaming = tiled(4, 4096);
    // A card granting 64 KiB per block (e.g. sm_75): never more than 64 KiB, and B = 500
    // (32 columns: 62.5 KiB + 4) fits there only on a larger card.
    for b in [1usize, 64, 256, 480, 500, 1024, 1500, 2000, 4000] {
        if let Some((_, bytes)) = streaming.choose(DType::F32, b, 64 * 1024) {
            assert!(bytes <= 64 * 1024, "B = {b}: {bytes} bytes");
        }
    }
    assert!(streaming.choose(DType::F32, 480, 64 * 1024).is_some());
    assert_eq!(streaming.choose(DType::F32, 500, 64 * 1024), None);
    assert!(streaming.choose(DType::F32, 500, H100_LIMIT).is_some());
}

#[test]
fn streaming_kernels_take_32_vectors_of_columns_for_any_batch() {
    let streaming = tiled(0, 8192);
    for b in [0usize, 1, 64, 1024, 100_000] {
        assert_eq!(streaming.choose(DType::F32, b, H100_LIMIT), Some((7, 8192)));
        assert_eq!(
            streaming.choose(DType::BF16, b, H100_LIMIT),
            Some((8, 8192))
        );
    }
    assert_eq!(
        streaming.choose(DType::F64, 256, H100_LIMIT),
        Some((6, 8192))
    );
    assert_eq!(streaming.choose(DType::F32, 256, 4096), None);
    // Beyond 32-bit sample counts: thread per column.
    assert_eq!(streaming.choose(DType::F32, 1 << 31, H100_LIMIT), None);
}

#[test]
fn spill_kernels_keep_the_rows_that_fit_in_multiples_of_8() {
    let mut t = tiled(4, 4096);
    // No spill kernel: nothing.
    assert_eq!(t.spill_rows(DType::F32, 4096, H100_LIMIT), None);
    let k = KernelSource::new_static("s", "");
    t.spill = Some([k.clone(), k.clone(), k.clone(), k]);
    // f32 at B = 2048 on an H100: no 32-column tile fits; 1784 rows of 128 bytes do.
    assert_eq!(t.choose(DType::F32, 2048, H100_LIMIT), None);
    assert_eq!(
        t.spill_rows(DType::F32, 2048, H100_LIMIT),
        Some((1784, 1784 * 128 + 4096))
    );
    // 16-bit rows take half the bytes; f64's twice.
    assert_eq!(
        t.spill_rows(DType::BF16, 5000, H100_LIMIT),
        Some((3568, 3568 * 64 + 4096))
    );
    assert_eq!(
        t.spill_rows(DType::F64, 5000, H100_LIMIT),
        Some((888, 888 * 256 + 4096))
    );
    // Never more rows than B rounded up to 8.
    assert_eq!(
        t.spill_rows(DType::F32, 13, H100_LIMIT),
        Some((16, 16 * 128 + 4096))
    );
    // Where it runs: at P below 1024 columns a multiprocessor, whatever it keeps; wider, where
    // it keeps 3/4 of the rows or more and makes two passes or more.
    let sms = 132;
    assert!(t.spill_runs(1784, 8192, 135_167, sms));
    assert!(!t.spill_runs(1784, 8192, 135_168, sms));
    assert!(t.spill_runs(1784, 2048, 1 << 20, sms));
    assert!(t.spill_runs(1784, 2378, 1 << 20, sms));
    assert!(!t.spill_runs(1784, 2379, 1 << 20, sms));
    t.spill_passes = 1;
    assert!(!t.spill_runs(1784, 2048, 1 << 20, sms));
    assert!(t.spill_runs(1784, 2048, 16_384, sms));
    // A device granting less than the partials: nothing; B beyond 32-bit indices: nothing.
    assert_eq!(t.spill_rows(DType::F32, 2048, 4000), None);
    assert_eq!(
        t.spill_rows(DType::F32, i32::MAX as usize, H100_LIMIT),
        None
    );
}
