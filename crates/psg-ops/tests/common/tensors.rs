//! Whole-tensor helpers for tests of any dtype: tensors from f32 values, values as f32 or f64,
//! exact comparisons.

use psg_runtime::{DType, Device, Tensor};

/// `values` rounded to `dtype` (to nearest; exact for f32 and f64), as a tensor on `device`.
pub fn of_dtype(values: &[f32], shape: &[usize], dtype: DType, device: &Device) -> Tensor {
    let cpu = match dtype {
        DType::BF16 => Tensor::from_vec(
            values.iter().map(|&x| half::bf16::from_f32(x)).collect(),
            shape,
            &Device::Cpu,
        ),
        DType::F16 => Tensor::from_vec(
            values.iter().map(|&x| half::f16::from_f32(x)).collect(),
            shape,
            &Device::Cpu,
        ),
        DType::F64 => Tensor::from_vec(
            values.iter().map(|&x| f64::from(x)).collect(),
            shape,
            &Device::Cpu,
        ),
        DType::F32 => Tensor::from_slice(values, shape, &Device::Cpu),
    }
    .unwrap();
    assert_eq!(cpu.dtype(), dtype);
    cpu.to_device(device).unwrap()
}

/// A tensor's elements as raw bits (f32, f16 and bf16 widened to f32, which is exact), so
/// comparisons are exact, NaN and -0 included.
pub fn bits(t: &Tensor) -> Vec<u64> {
    match t.dtype() {
        DType::F64 => t
            .to_vec::<f64>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect(),
        _ => as_f32(t).iter().map(|x| u64::from(x.to_bits())).collect(),
    }
}

/// The elements of a 16-bit tensor as f32 (exact).
fn widened<T: psg_runtime::Element>(t: &Tensor) -> Vec<f32>
where
    f32: From<T>,
{
    t.to_vec::<T>()
        .unwrap()
        .into_iter()
        .map(f32::from)
        .collect()
}

/// A tensor's elements as f32 (exact but for f64, which is rounded).
pub fn as_f32(t: &Tensor) -> Vec<f32> {
    match t.dtype() {
        DType::BF16 => widened::<half::bf16>(t),
        DType::F16 => widened::<half::f16>(t),
        DType::F64 => t
            .to_vec::<f64>()
            .unwrap()
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        DType::F32 => t.to_vec::<f32>().unwrap(),
    }
}

/// A tensor's elements as f64.
pub fn host(t: &Tensor) -> Vec<f64> {
    match t.dtype() {
        DType::F64 => t.to_vec::<f64>().unwrap(),
        _ => as_f32(t).into_iter().map(f64::from).collect(),
    }
}

/// Asserts bit-identical tensors, naming the first differing element and `what` on failure.
pub fn assert_same_bits(what: &str, left: &Tensor, right: &Tensor) {
    assert_eq!(left.dtype(), right.dtype(), "{what}: dtypes differ");
    assert_eq!(left.shape(), right.shape(), "{what}: shapes differ");
    let (g, c) = (bits(left), bits(right));
    if let Some(i) = (0..g.len()).find(|&i| g[i] != c[i]) {
        let differing = (0..g.len()).filter(|&i| g[i] != c[i]).count();
        panic!(
            "{what}: {differing} of {} elements differ; first at {i}: left {} (bits {:#x}), right {} \
             (bits {:#x})",
            g.len(),
            host(left)[i],
            g[i],
            host(right)[i],
            c[i]
        );
    }
}
